//! The one integration-test binary: runs the real `inmanta-migrate` against
//! fake servers (request sequences, faults, bad input) and, in the ignored
//! e2e tests, against the real lab.

// Tests run the binary, sshd and servers themselves.
#![allow(clippy::disallowed_methods)]

mod ansible;
mod bad_input;
mod config;
mod contract;
mod crash;
mod database_steps;
mod e2e;
mod e2e_carry;
mod e2e_containers;
mod e2e_faults;
mod e2e_network;
mod e2e_online;
mod e2e_rehearse;
mod e2e_rollback;
mod e2e_secure;
mod e2e_versions;
mod env_reconcile;
mod faults;
mod halt_all;
mod human;
mod init;
mod intermediate;
mod online;
mod output;
mod rehearse;
mod secrets;
mod sequences;
mod ssh;
mod stop_server;
mod support;
