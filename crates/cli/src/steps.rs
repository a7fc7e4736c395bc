//! The subcommand of each step of the one list of the steps
//! (`migrate_core::the_steps!`), with its options; `plan`, `status`,
//! `migrate` and the report walk the list through these.

use clap::Subcommand;
use migrate_core::{Context, Outcome, Step, StepId, config::CopyMode, execute};

use crate::migrate::MigrateArgs;

macro_rules! step_commands {
    ($($id:ident $name:literal $side:ident $modes:ident $step:ty,)*) => {
        /// One step with its options: a subcommand of its own.
        #[derive(Debug, Subcommand)]
        pub enum StepCommand {
            $($id($step),)*
        }

        impl StepCommand {
            /// The step with its default options.
            pub fn of(id: StepId) -> StepCommand {
                match id {
                    $(StepId::$id => StepCommand::$id(<$step>::default()),)*
                }
            }

            /// Its id, as its step type says.
            pub fn id(&self) -> StepId {
                fn id_of<S: Step>(_: &S) -> StepId {
                    S::ID
                }
                match self {
                    $(StepCommand::$id(step) => id_of(step),)*
                }
            }

            /// Which side it changes and what it would do, for `plan` and `migrate`.
            pub fn describe(&self, cx: &Context) -> String {
                fn line<S: Step>(step: &S, cx: &Context) -> String {
                    format!("[{}] {}", S::SIDE, step.describe(cx))
                }
                match self {
                    $(StepCommand::$id(step) => line(step, cx),)*
                }
            }

            /// Checks, runs and records it (see [`execute`]).
            pub async fn execute(&self, cx: &Context) -> anyhow::Result<Outcome> {
                match self {
                    $(StepCommand::$id(step) => execute(step, cx).await,)*
                }
            }
        }
    };
}

migrate_core::the_steps!(step_commands);

impl StepCommand {
    /// Every step in the order a migration with this copy mode runs them,
    /// with the options `migrate` passes on.
    pub fn all(args: &MigrateArgs, mode: CopyMode) -> Vec<StepCommand> {
        StepId::in_mode(mode)
            .map(|id| {
                let mut command = StepCommand::of(id);
                match &mut command {
                    StepCommand::Restore(restore) => restore.replace = args.replace,
                    StepCommand::EnvReconcile(reconcile) => reconcile.release = args.release,
                    _ => {}
                }
                command
            })
            .collect()
    }

    pub fn name(&self) -> &'static str {
        self.id().name()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use migrate_core::{Side, steps::STEPS};

    use super::*;

    /// Each command is the step its variant names.
    #[test]
    fn each_command_is_its_step() {
        for step in STEPS {
            assert_eq!(StepCommand::of(step.id).id(), step.id, "StepCommand::{:?} holds another step", step.id);
        }
    }

    /// A subcommand per step, named as its journal key, with the help text
    /// of its struct, which starts with its side.
    #[test]
    fn every_step_is_a_subcommand_with_its_help() {
        let cli = crate::Cli::command();
        for step in STEPS {
            let sub = cli.find_subcommand(step.name).unwrap_or_else(|| panic!("no subcommand {}", step.name));
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            let side = match step.side {
                Side::Old => "Old side: ",
                Side::New => "New side: ",
            };
            assert!(about.starts_with(side), "{}: {about:?}", step.name);
        }
    }

    /// A format-1 journal (every step's resume state among its figures)
    /// reads into each step's state type; the figures keep only figures.
    #[test]
    fn a_format_1_journal_reads_into_each_steps_state() {
        use migrate_core::journal::Journal;
        let dir = tempfile::tempdir().unwrap();
        let path = camino::Utf8PathBuf::from_path_buf(dir.path().join("journal.json")).unwrap();
        let format_1 = serde_json::json!({
            "format": 1, "tool_version": "0.1.0", "created": "2026-12-01T00:00:00Z",
            "migration": { "old_api": "http://old:8888", "new_api": "http://new:8888" },
            "steps": {
                "precopy": { "status": "done", "figures": { "subscribed_into": "inmanta@new:5432/inmanta",
                    "schema_versions": { "core": [1, 2] }, "tables": 3 } },
                "cutover": { "status": "running", "figures": { "caught_up": true } },
                "restore": { "status": "failed", "figures": { "target_touched": "inmanta@new:5432/inmanta" } },
                "start-server": { "status": "failed", "figures": { "intermediate 11.5.5": 4, "intermediate 14.0.0": 0 } },
            },
            "environments": {},
        });
        std::fs::write(&path, format_1.to_string()).unwrap();
        let journal = Journal::read(&path).unwrap();

        let precopy: step_online::PrecopyState = journal.state().unwrap();
        assert_eq!(precopy.subscribed_into.as_deref(), Some("inmanta@new:5432/inmanta"));
        assert_eq!(precopy.schema_versions.unwrap()["core"], [1, 2]);
        let cutover: step_online::CutoverState = journal.state().unwrap();
        assert!(cutover.caught_up && !cutover.cut_off);
        let restore: step_restore::RestoreState = journal.state().unwrap();
        assert_eq!(restore.target_touched.as_deref(), Some("inmanta@new:5432/inmanta"));
        let start: step_start_server::StartServerState = journal.state().unwrap();
        assert_eq!(start.intermediates_done, [("11.5.5".to_owned(), 4), ("14.0.0".to_owned(), 0)].into());
        let precopy_figures = &journal.step(migrate_core::StepId::Precopy).figures;
        assert_eq!(*precopy_figures, migrate_core::Figures { tables: Some(3), ..Default::default() });
        assert_eq!(journal.format, 2);
    }
}
