//! The one list of the migration's steps (ripgrep's list of flags is the
//! model): their order, their subcommands and help (each step struct's own
//! doc), what `plan`, `status`, `migrate` and the report walk through, and
//! their journal keys (each step's `NAME`). Adding a step touches this file
//! and its crate.

use clap::Subcommand;
use migrate_core::{Context, Outcome, Step, config::CopyMode, execute};
use step_dump::Dump;
use step_env_reconcile::EnvReconcile;
use step_halt_all::HaltAll;
use step_online::{Cutover, Precopy};
use step_restore::Restore;
use step_start_server::StartServer;
use step_stop_server::StopServer;

use crate::migrate::MigrateArgs;

/// One step with its options: a subcommand of its own.
#[derive(Debug, Subcommand)]
pub enum StepCommand {
    Precopy(Precopy),
    HaltAll(HaltAll),
    StopServer(StopServer),
    Dump(Dump),
    Restore(Restore),
    Cutover(Cutover),
    StartServer(StartServer),
    EnvReconcile(EnvReconcile),
}

/// Calls `$body` with `$step` bound to the step of any variant.
macro_rules! with_step {
    ($command:expr, $step:ident => $body:expr) => {
        match $command {
            StepCommand::Precopy($step) => $body,
            StepCommand::HaltAll($step) => $body,
            StepCommand::StopServer($step) => $body,
            StepCommand::Dump($step) => $body,
            StepCommand::Restore($step) => $body,
            StepCommand::Cutover($step) => $body,
            StepCommand::StartServer($step) => $body,
            StepCommand::EnvReconcile($step) => $body,
        }
    };
}

impl StepCommand {
    /// Every step in the order a migration with this copy mode runs them,
    /// with the options `migrate` passes on: offline moves the database by
    /// dump and restore in the window, online copies it before (precopy)
    /// and only cuts the copy over in the window.
    pub fn all(args: &MigrateArgs, mode: CopyMode) -> Vec<StepCommand> {
        let moving = match mode {
            CopyMode::Offline => {
                vec![StepCommand::Dump(Dump::default()), StepCommand::Restore(Restore { replace: args.replace })]
            }
            CopyMode::Online => vec![StepCommand::Cutover(Cutover::default())],
        };
        let before = match mode {
            CopyMode::Offline => vec![],
            CopyMode::Online => vec![StepCommand::Precopy(Precopy::default())],
        };
        before
            .into_iter()
            .chain([StepCommand::HaltAll(HaltAll::default()), StepCommand::StopServer(StopServer::default())])
            .chain(moving)
            .chain([
                StepCommand::StartServer(StartServer::default()),
                StepCommand::EnvReconcile(EnvReconcile { release: args.release, ..Default::default() }),
            ])
            .collect()
    }

    /// The subcommand, also the journal key.
    pub fn name(&self) -> &'static str {
        fn name_of<S: Step>(_: &S) -> &'static str {
            S::NAME
        }
        with_step!(self, step => name_of(step))
    }

    /// Which side it changes and what it would do, for `plan` and `migrate`.
    pub fn describe(&self, cx: &Context) -> String {
        fn line<S: Step>(step: &S, cx: &Context) -> String {
            format!("[{}] {}", S::SIDE, step.describe(cx))
        }
        with_step!(self, step => line(step, cx))
    }

    /// Checks, runs and records it (see [`execute`]).
    pub async fn execute(&self, cx: &Context) -> anyhow::Result<Outcome> {
        with_step!(self, step => execute(step, cx).await)
    }
}

/// The journal keys of every step of a migration in this mode, in order.
pub fn names(mode: CopyMode) -> Vec<&'static str> {
    StepCommand::all(&MigrateArgs::default(), mode).iter().map(|s| s.name()).collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_steps_in_order() {
        assert_eq!(
            names(CopyMode::Offline),
            ["halt-all", "stop-server", "dump", "restore", "start-server", "env-reconcile"]
        );
        assert_eq!(
            names(CopyMode::Online),
            ["precopy", "halt-all", "stop-server", "cutover", "start-server", "env-reconcile"]
        );
    }

    /// A subcommand per step, named as its journal key, with the help text
    /// of its struct.
    #[test]
    fn every_step_is_a_subcommand_with_its_help() {
        let cli = crate::Cli::command();
        for name in names(CopyMode::Offline).into_iter().chain(names(CopyMode::Online)) {
            let sub = cli.find_subcommand(name).unwrap_or_else(|| panic!("no subcommand {name}"));
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            let side = if ["halt-all", "stop-server", "dump"].contains(&name) { "Old side: " } else { "New side: " };
            assert!(about.starts_with(side), "{name}: {about:?}");
        }
    }
}
