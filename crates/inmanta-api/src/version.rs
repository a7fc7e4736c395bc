//! inmanta-core versions and what each one answers differently.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// An inmanta-core release, `major.minor.patch`; suffixes such as `.dev3` or
/// `rc1` are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl ServerVersion {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self { major, minor, patch }
    }

    /// Finds the first `N.N[.N]` in free text, such as the output of
    /// `inmanta --version` ("Inmanta Service Orchestrator (...): 19.0.0").
    pub fn find_in(text: &str) -> Option<Self> {
        text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|word| word.contains('.'))
            .find_map(|word| word.parse().ok())
    }

    /// `GET /api/v2/health` exists from 15.2 (15.x line) and 16.0.
    pub fn has_health_endpoint(self) -> bool {
        self >= Self::new(16, 0, 0) || (self.major == 15 && self.minor >= 2)
    }

    /// From 18.2 (and 19.0) a resume queues a "recovery" compile of its own
    /// when the server's project checkout does not match the last compile,
    /// which is always the case right after a migration.
    pub fn queues_recovery_compile(self) -> bool {
        self >= Self::new(18, 2, 0)
    }

    /// Up to 9.x the server keeps the code files of exported versions in its
    /// state directory; from 10.0 in the database. Files of versions exported
    /// before 10.0 do not survive an upgrade across it (Inmanta 10's upgrade
    /// note: a recompile publishes them again).
    pub fn stores_code_in_database(self) -> bool {
        self.major >= 10
    }

    /// From 15.1 desired-state versions carry a `released` flag and `active`
    /// means "processed by the scheduler" rather than "latest released".
    pub fn has_released_flag(self) -> bool {
        self >= Self::new(15, 1, 0)
    }
}

impl FromStr for ServerVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().trim_start_matches('v').split('.');
        let mut number = |required: bool| -> Result<u64, String> {
            match parts.next() {
                Some(p) => {
                    let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().map_err(|_| format!("not a version: {s:?}"))
                }
                None if required => Err(format!("not a version: {s:?}")),
                None => Ok(0),
            }
        };
        Ok(Self { major: number(true)?, minor: number(true)?, patch: number(false)? })
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for ServerVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServerVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_releases_and_dev_versions() {
        assert_eq!("14.0.0".parse::<ServerVersion>().unwrap(), ServerVersion::new(14, 0, 0));
        assert_eq!("19.1.0.dev3".parse::<ServerVersion>().unwrap(), ServerVersion::new(19, 1, 0));
        assert_eq!("8.7".parse::<ServerVersion>().unwrap(), ServerVersion::new(8, 7, 0));
        assert!("".parse::<ServerVersion>().is_err());
        assert!("fourteen".parse::<ServerVersion>().is_err());
    }

    #[test]
    fn finds_the_version_in_cli_output() {
        let out = "Inmanta Service Orchestrator (Open Source Edition): 19.0.0\n";
        assert_eq!(ServerVersion::find_in(out), Some(ServerVersion::new(19, 0, 0)));
        assert_eq!(ServerVersion::find_in("no version here"), None);
    }

    #[test]
    fn orders_and_gates_features() {
        let v = |s: &str| s.parse::<ServerVersion>().unwrap();
        assert!(v("8.7.6") < v("11.5.5") && v("11.5.5") < v("14.0.0"));
        assert!(!v("14.0.0").has_health_endpoint());
        assert!(v("15.2.0").has_health_endpoint() && !v("15.1.0").has_health_endpoint());
        assert!(v("16.0.0").has_health_endpoint());
        assert!(!v("18.1.1").queues_recovery_compile() && v("18.2.0").queues_recovery_compile());
        assert!(v("19.0.0").queues_recovery_compile());
    }
}
