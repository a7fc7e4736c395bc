//! The one integration-test binary: runs the real `inmanta-migrate` against
//! fake servers (request sequences, faults, bad input) and, in the ignored
//! e2e tests, against the real lab.

mod config;
mod e2e;
mod env_reconcile;
mod faults;
mod halt_all;
mod stop_server;
mod support;
