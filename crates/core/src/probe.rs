//! Checks that several steps (and `check`) share.

use inmanta_api::{Environment, ServerStatus};

use crate::{
    config::Side,
    step::{Checks, Context},
};

/// The API of `side` answers, accepts our token and lists environments.
/// Records the outcome in `checks`; returns what it learned.
pub async fn api(cx: &Context, side: Side, checks: &mut Checks) -> Option<(ServerStatus, Vec<Environment>)> {
    let client = cx.api(side);
    let name = format!("{side} API");
    let url = &cx.config.side(side).api_url;
    let status = match client.server_status().await {
        Ok(status) => status,
        Err(e) => {
            let next = match e.status() {
                Some(401 | 403) => format!("fix `{side}.token`"),
                Some(_) => format!("check `{side}.api_url`: is this an Inmanta server?"),
                None if e.is_tls() => format!("fix `{side}.ca_file` (or `{side}.api_url`)"),
                None => format!("start the {side} server or fix `{side}.api_url`"),
            };
            checks.fail(name, e.to_string(), next);
            return None;
        }
    };
    // serverstatus may answer without auth on some setups; listing
    // environments proves the token is accepted.
    match client.environments().await {
        Ok(envs) => {
            checks.pass(
                name,
                format!("{url} answers: inmanta-core {}, {} environment(s)", status.core_version, envs.len()),
            );
            Some((status, envs))
        }
        Err(e) => {
            checks.fail(name, e.to_string(), format!("use an unscoped token of client type `api` in `{side}.token`"));
            None
        }
    }
}
