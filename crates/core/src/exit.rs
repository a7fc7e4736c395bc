//! The exit-code contract, documented in README.md and `--help`:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done, or nothing to do |
//! | 1 | failed |
//! | 2 | bad usage or config |
//! | 3 | stopped for an operator: a check failed, or a dry-run showed differences |

use crate::config::ConfigError;

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
            if cause.is::<NeedsOperator>() || cause.is::<crate::step::ChecksFailed>() {
                return Exit::Operator;
            }
        }
        Exit::Failed
    }
}
