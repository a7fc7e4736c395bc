//! Resolution: what the config's secret sources and CA files hold, read once
//! at load and kept apart from the values written in the file.
//!
//! The API token and CA of each orchestrator are read here and kept in an
//! [`Access`]; database passwords are only checked readable here, and read
//! again where the database is resolved (`migrate_pg::Target`), since the
//! orchestrator's own `inmanta.cfg` may complete them.

use std::fmt;

use super::{Config, Invalid, Orchestrator, Side, invalid};
use crate::secret::Secret;

/// How the tool proves itself to one orchestrator's API and whom it trusts.
#[derive(Clone, Default)]
pub struct Access {
    pub token: Option<Secret>,
    /// The PEM bundle of `ca_file`: the only CAs trusted for this server.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// A config file loaded: its values, validated, and what its sources hold.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub old: Access,
    /// Also the intermediate servers' (they run on the new orchestrator).
    pub new: Access,
}

/// Reads every secret source and CA file of `config`; every one that cannot
/// be read is a problem of its key.
pub(super) fn resolve(config: Config) -> Result<Loaded, Vec<Invalid>> {
    let mut problems = Vec::new();
    let old = access(&config.old, Side::Old.key(), &mut problems);
    let new = access(&config.new, Side::New.key(), &mut problems);
    if problems.is_empty() { Ok(Loaded { config, old, new }) } else { Err(problems) }
}

fn access(o: &Orchestrator, side: &str, problems: &mut Vec<Invalid>) -> Access {
    let k = |rest: &str| format!("{side}.{rest}");
    let mut access = Access::default();
    if let Some(source) = &o.token {
        match source.read() {
            Ok(secret) => access.token = Some(secret),
            Err(m) => problems.push(invalid(k("token"), m)),
        }
    }
    if let Some(ca) = &o.ca_file {
        match std::fs::read(ca) {
            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => access.ca_pem = Some(pem),
            Ok(_) => problems.push(invalid(k("ca_file"), format!("{ca} holds no PEM certificate"))),
            Err(e) => problems.push(invalid(k("ca_file"), format!("cannot read {ca}: {e}"))),
        }
    }
    let db = &o.database;
    for (name, source) in [("password", &db.password), ("admin_password", &db.admin_password)] {
        if let Some(source) = source
            && let Err(m) = source.read()
        {
            problems.push(invalid(k(&format!("database.{name}")), m));
        }
    }
    access
}
