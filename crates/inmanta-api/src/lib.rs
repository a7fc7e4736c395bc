//! A typed async client for the parts of the Inmanta REST API that an
//! orchestrator migration needs: environments and projects, halt and resume,
//! settings, compiles, desired-state versions, dry-runs, agents and resources.
//!
//! This is the only crate of the workspace that speaks HTTP. It knows the
//! differences between server versions (see [`ServerVersion`]) and turns every
//! non-2xx answer into an [`Error`] that names the call, the status and the
//! server's message. Idempotent GETs are retried a bounded number of times;
//! nothing else is.

mod client;
mod error;
mod model;
mod version;

pub use client::{Client, ClientOptions};
pub use error::Error;
pub use model::*;
pub use version::ServerVersion;

pub type Result<T, E = Error> = std::result::Result<T, E>;
