//! What a failure is: its [`ErrorKind`] (a stable set that `--json` reports
//! and that decides the exit code), its message and the way on
//! ([`Failure::of`] reads all three from an error chain, the one place that
//! does). The exit codes are documented in README.md and `--help`. A leaf:
//! it names no other module of this crate but `checks` and `wait`.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done, or nothing to do |
//! | 1 | failed |
//! | 2 | bad usage or config |
//! | 3 | stopped for an operator: a check failed, or a dry-run showed differences |

use std::fmt;

use camino::Utf8PathBuf;
use schemars::JsonSchema;
use serde::Serialize;

use crate::{checks::Checks, wait::GaveUp};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Failed = 1,
    Usage = 2,
    Operator = 3,
}

/// A usage problem found after argument parsing (a bad `--env` id, an option
/// that contradicts the config): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Stopped on purpose so that an operator can decide: exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NeedsOperator(pub String);

impl Exit {
    /// The code for an error, by its kind.
    pub fn of(error: &anyhow::Error) -> Exit {
        Failure::of(error).kind.exit()
    }
}

/// What kind of failure: `--json` reports it as `kind`, for scripts to
/// branch on instead of the text. The set only grows (README lists it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The config file, or a secret it names, is wrong (exit 2).
    Config,
    /// A bad argument or option (exit 2).
    Usage,
    /// A precondition failed; nothing was changed (exit 3).
    ChecksFailed,
    /// Stopped for an operator to decide (exit 3).
    NeedsOperator,
    /// An orchestrator's API did not answer.
    ApiUnreachable,
    /// The TLS handshake with an orchestrator's API failed.
    ApiTls,
    /// An orchestrator's API answered with an error status.
    ApiRefused,
    /// An orchestrator's API answered what this tool does not understand.
    ApiAnswer,
    /// PostgreSQL could not be reached, or the connection was lost.
    DatabaseUnreachable,
    /// PostgreSQL refused the login: password, role or database name.
    DatabaseLogin,
    /// TLS with PostgreSQL failed: the certificate, its name or `sslmode`.
    DatabaseTls,
    /// PostgreSQL refused a statement (its SQLSTATE is in the message).
    Database,
    /// A wait passed its limit.
    Timeout,
    /// Anything else: the message says what.
    Failed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::Config,
        ErrorKind::Usage,
        ErrorKind::ChecksFailed,
        ErrorKind::NeedsOperator,
        ErrorKind::ApiUnreachable,
        ErrorKind::ApiTls,
        ErrorKind::ApiRefused,
        ErrorKind::ApiAnswer,
        ErrorKind::DatabaseUnreachable,
        ErrorKind::DatabaseLogin,
        ErrorKind::DatabaseTls,
        ErrorKind::Database,
        ErrorKind::Timeout,
        ErrorKind::Failed,
    ];

    pub fn exit(self) -> Exit {
        match self {
            ErrorKind::Config | ErrorKind::Usage => Exit::Usage,
            ErrorKind::ChecksFailed | ErrorKind::NeedsOperator => Exit::Operator,
            _ => Exit::Failed,
        }
    }

    /// The way on where the failure itself says no more.
    pub fn advice(self) -> &'static str {
        match self {
            ErrorKind::Config => "fix the config where the message points; `inmanta-migrate check` validates it",
            ErrorKind::Usage => "see `inmanta-migrate help` and the subcommand's `--help`",
            ErrorKind::ChecksFailed => "each failed check names its next step; nothing was changed",
            ErrorKind::NeedsOperator => {
                "decide as the message says; `inmanta-migrate status` shows where the migration stands"
            }
            ErrorKind::ApiUnreachable => {
                "check that the server runs and that this machine reaches its `api_url`, then run the command again: \
                 it goes on from the journal"
            }
            ErrorKind::ApiTls => "check `api_url` (https?) and `ca_file`, the CA that signed the server's certificate",
            ErrorKind::ApiRefused => "the server's message says why; with HTTP 401 or 403, check `token`",
            ErrorKind::ApiAnswer => {
                "check that `api_url` points at an inmanta server of a version this tool supports \
                 (`inmanta-migrate check` reads its version)"
            }
            ErrorKind::DatabaseUnreachable => {
                "check that PostgreSQL runs and that this machine reaches its `host` and `port`, then run the \
                 command again: it goes on from the journal"
            }
            ErrorKind::DatabaseLogin => "check the database's `user`, `password` and `name` in the config",
            ErrorKind::DatabaseTls => "check `sslmode` and the root certificates (PGSSLROOTCERT)",
            ErrorKind::Database => {
                "PostgreSQL's message and SQLSTATE say why; once that is fixed, run the command again: it goes on \
                 from the journal"
            }
            ErrorKind::Timeout => {
                "if the work is only slow, raise its limit (`[timeouts]`); else look at the log of what it waited \
                 for. Running the command again goes on from the journal"
            }
            ErrorKind::Failed => {
                "once the message's cause is fixed, run the command again: it goes on from the journal \
                 (`inmanta-migrate status` shows where)"
            }
        }
    }
}

/// A failure whose kind the code that met it knows, with the way on where
/// it knows one; [`Failure::of`] finds it in an error chain.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
    /// What to do next, where the code that failed knows better than its kind.
    pub advice: Option<String>,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into(), advice: None }
    }

    pub fn advise(mut self, advice: impl Into<String>) -> Failure {
        self.advice = Some(advice.into());
        self
    }

    /// What an error chain says: the kind of its outermost cause that has
    /// one, the whole chain as the message, and the way on of the innermost
    /// cause that knows one (else its kind's).
    pub fn of(error: &anyhow::Error) -> Failure {
        let kind = error.chain().find_map(kind_of).unwrap_or(ErrorKind::Failed);
        let advice = error
            .chain()
            .filter_map(|c| match c.downcast_ref::<Failure>() {
                Some(failure) => failure.advice.clone(),
                None => c.downcast_ref::<inmanta_api::Error>()?.advice(),
            })
            .last();
        Failure { kind, message: format!("{error:#}"), advice }
    }

    /// The message, and on a line of its own the way on where the code that
    /// failed gave one (a message made elsewhere says it in its own words).
    pub fn shown(&self) -> String {
        match &self.advice {
            Some(advice) => format!("{}\n-> {advice}", self.message),
            None => self.message.clone(),
        }
    }

    /// The way on: its own, else its kind's.
    pub fn way_on(&self) -> &str {
        self.advice.as_deref().unwrap_or(self.kind.advice())
    }

    pub fn exit_code(&self) -> Exit {
        self.kind.exit()
    }
}

/// The kind of one cause of an error chain, if it has one.
fn kind_of(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    if let Some(failure) = cause.downcast_ref::<Failure>() {
        return Some(failure.kind);
    }
    if cause.is::<ConfigError>() {
        return Some(ErrorKind::Config);
    }
    if cause.is::<UsageError>() {
        return Some(ErrorKind::Usage);
    }
    if cause.is::<ChecksFailed>() {
        return Some(ErrorKind::ChecksFailed);
    }
    if cause.is::<NeedsOperator>() {
        return Some(ErrorKind::NeedsOperator);
    }
    if cause.is::<GaveUp>() {
        return Some(ErrorKind::Timeout);
    }
    cause.downcast_ref::<inmanta_api::Error>().map(|e| match e {
        inmanta_api::Error::Unreachable { .. } => ErrorKind::ApiUnreachable,
        inmanta_api::Error::Tls { .. } => ErrorKind::ApiTls,
        inmanta_api::Error::Status { .. } => ErrorKind::ApiRefused,
        inmanta_api::Error::Decode { .. } => ErrorKind::ApiAnswer,
        inmanta_api::Error::Setup { .. } => ErrorKind::Config,
    })
}

/// A config problem: exit code 2.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: Utf8PathBuf,
    /// 1-based line and column, where known.
    pub location: Option<(usize, usize)>,
    /// Dotted key, such as `old.service.manager`, where known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}", self.file)?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Preconditions failed: nothing was changed. Exit code 3.
#[derive(Debug)]
pub struct ChecksFailed(pub Checks);

impl fmt::Display for ChecksFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: Vec<&str> = self.0.failures().map(|c| c.name.as_str()).collect();
        write!(f, "{} check(s) failed, nothing was changed: {}", failed.len(), failed.join(", "))
    }
}

impl std::error::Error for ChecksFailed {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind says how to go on, and its exit code is the documented one.
    #[test]
    fn every_kind_has_a_way_on_and_its_exit_code() {
        for kind in ErrorKind::ALL {
            let advice = kind.advice();
            assert!(advice.split_whitespace().count() >= 6, "{kind:?}: {advice:?} leads nowhere");
            let expected = match kind {
                ErrorKind::Config | ErrorKind::Usage => 2,
                ErrorKind::ChecksFailed | ErrorKind::NeedsOperator => 3,
                _ => 1,
            };
            assert_eq!(kind.exit() as i32, expected, "{kind:?}");
            let name = serde_json::to_value(kind).unwrap();
            assert!(name.as_str().is_some_and(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')), "{name}");
        }
    }

    #[test]
    fn the_kind_is_the_outermost_and_the_advice_the_innermost() {
        let inner = anyhow::Error::new(
            Failure::new(ErrorKind::DatabaseLogin, "PostgreSQL: password authentication failed")
                .advise("check `new.database.password`"),
        );
        let failure = Failure::of(&inner.context("restore"));
        assert_eq!(failure.kind, ErrorKind::DatabaseLogin);
        assert_eq!(failure.way_on(), "check `new.database.password`");
        assert_eq!(failure.message, "restore: PostgreSQL: password authentication failed");

        let usage = anyhow::Error::new(UsageError("bad --env".into())).context("migrate");
        assert_eq!(Failure::of(&usage).kind, ErrorKind::Usage);
        assert_eq!(Exit::of(&usage), Exit::Usage);

        let plain = anyhow::anyhow!("something odd");
        assert_eq!(Failure::of(&plain).kind, ErrorKind::Failed);
        assert_eq!(Failure::of(&plain).way_on(), ErrorKind::Failed.advice());
        let waited = anyhow::Error::new(GaveUp { limit: "1s".into(), what: "x".into() });
        assert_eq!(Failure::of(&waited).kind, ErrorKind::Timeout);
    }
}
