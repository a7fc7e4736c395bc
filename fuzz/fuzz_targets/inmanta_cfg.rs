//! An orchestrator's own inmanta.cfg, its [database] section.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = migrate_core::inmanta_cfg::parse(text);
    }
});
