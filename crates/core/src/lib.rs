//! The ground every step stands on: the config, the work directory with its
//! journal and lock, the inventory and the dump manifest, the command runner,
//! the output, and the step contract.

pub mod checks;
pub mod config;
pub mod context;
pub mod contract;
pub mod dryrun;
pub mod error;
pub mod figures;
pub mod fsutil;
pub mod inmanta_cfg;
pub mod inventory;
pub mod journal;
pub mod manifest;
pub mod one_driver;
pub mod probe;
pub mod rehearsal;
pub mod runner;
pub mod secret;
pub mod service;
pub mod step;
pub mod steps;
pub mod ui;
pub mod wait;

pub use checks::{Check, CheckStatus, Checks};
pub use config::{Config, Side};
pub use context::Context;
pub use error::{ChecksFailed, ConfigError, ErrorKind, Exit, Failure, NeedsOperator, UsageError};
pub use figures::Figures;
pub use secret::Secret;
pub use step::{Outcome, OutcomeStatus, Step, execute};
pub use steps::StepId;
