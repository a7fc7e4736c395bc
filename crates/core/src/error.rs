//! The errors that decide the exit code, and the code of each (documented
//! in README.md and `--help`). A leaf: it names no other module of this
//! crate but `checks`, whose failures it carries.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done, or nothing to do |
//! | 1 | failed |
//! | 2 | bad usage or config |
//! | 3 | stopped for an operator: a check failed, or a dry-run showed differences |

use std::fmt;

use camino::Utf8PathBuf;

use crate::checks::Checks;

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
    /// The code for an error, by what it is.
    pub fn of(error: &anyhow::Error) -> Exit {
        for cause in error.chain() {
            if cause.is::<ConfigError>() || cause.is::<UsageError>() {
                return Exit::Usage;
            }
            if cause.is::<NeedsOperator>() || cause.is::<ChecksFailed>() {
                return Exit::Operator;
            }
        }
        Exit::Failed
    }
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
