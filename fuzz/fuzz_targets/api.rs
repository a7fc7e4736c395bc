//! Answers of an orchestrator's API: the body as JSON, decoded as each
//! shape the client reads, and the version strings it parses.
#![no_main]

use inmanta_api::*;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn decode<T: serde::de::DeserializeOwned>(body: &Value) {
    let _ = serde_json::from_value::<T>(body.clone());
    if let Some(data) = body.get("data") {
        let _ = serde_json::from_value::<T>(data.clone());
        let _ = serde_json::from_value::<Vec<T>>(data.clone());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<ServerVersion>();
        let _ = ServerVersion::find_in(text);
    }
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    decode::<Project>(&body);
    decode::<Environment>(&body);
    decode::<Settings>(&body);
    decode::<CompileReport>(&body);
    decode::<CompileDetails>(&body);
    decode::<DesiredState>(&body);
    decode::<DryRunReport>(&body);
    decode::<Agent>(&body);
    decode::<DeploySummary>(&body);
});
