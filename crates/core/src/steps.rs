//! The one list of the migration's steps (ripgrep's list of flags is the
//! model): each step's id, subcommand and journal key, the side it changes,
//! the copy modes it belongs to and its type, in the order a migration runs
//! them ([`the_steps!`]). This crate makes [`StepId`] and [`STEPS`] of it,
//! the CLI its subcommands; `plan`, `status`, `migrate`, the report, the
//! journal and the tidy tests read those. A new step is its crate and a
//! line in the list.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{CopyMode, Side};

/// Which migrations a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modes {
    Both,
    /// `copy.mode = "offline"`: the database moves by dump and restore.
    Offline,
    /// `copy.mode = "online"`: the database is copied before the window.
    Online,
    /// Not a step of the migration's sequence: the operator runs it before
    /// the window (`rehearse`) or to end the migration one way or the other
    /// (`rollback`, `finish`).
    Aside,
}

impl Modes {
    pub const fn has(self, mode: CopyMode) -> bool {
        matches!(
            (self, mode),
            (Modes::Both, _) | (Modes::Offline, CopyMode::Offline) | (Modes::Online, CopyMode::Online)
        )
    }
}

/// What the list knows of one step.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    pub id: StepId,
    /// The subcommand, also the journal key and the report's name.
    pub name: &'static str,
    /// The orchestrator it changes.
    pub side: Side,
    pub modes: Modes,
}

/// The one list of the steps: calls the macro `$then` with every step as
/// `Id "subcommand" Side Modes path::to::Type,`. The types live in the
/// step crates, which only the CLI depends on: this crate's own expansion
/// ignores them.
#[macro_export]
macro_rules! the_steps {
    ($then:ident) => {
        $then! {
        // id          subcommand       side  modes    type
                    Rehearse       "rehearse"       New   Aside    step_rehearse::Rehearse,
                    Precopy        "precopy"        New   Online   step_online::Precopy,
                    HaltAll        "halt-all"       Old   Both     step_halt_all::HaltAll,
                    StopServer     "stop-server"    Old   Both     step_stop_server::StopServer,
                    Dump           "dump"           Old   Offline  step_dump::Dump,
                    Restore        "restore"        New   Offline  step_restore::Restore,
                    Cutover        "cutover"        New   Online   step_online::Cutover,
            Carry          "carry"          New   Both     step_carry::Carry,
                    StartServer    "start-server"   New   Both     step_start_server::StartServer,
                    EnvReconcile   "env-reconcile"  New   Both     step_env_reconcile::EnvReconcile,
                    Rollback       "rollback"       Old   Aside    step_rollback::Rollback,
                    Finish         "finish"         Old   Aside    step_rollback::Finish,
                }
    };
}

macro_rules! steps {
    ($($id:ident $name:literal $side:ident $modes:ident $step:path,)*) => {
        /// A step of the migration. Ordered as a migration runs them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum StepId {
            $($id,)*
        }

        /// Every step, in the order a migration runs them.
        pub const STEPS: &[StepInfo] = &[
            $(StepInfo { id: StepId::$id, name: $name, side: Side::$side, modes: Modes::$modes },)*
        ];
    };
}

the_steps!(steps);

impl StepId {
    pub const fn info(self) -> &'static StepInfo {
        // STEPS is in declaration order (a test holds it).
        &STEPS[self as usize]
    }

    pub const fn name(self) -> &'static str {
        self.info().name
    }

    pub const fn side(self) -> Side {
        self.info().side
    }

    /// The steps of a migration in this copy mode, in order.
    pub fn in_mode(mode: CopyMode) -> impl Iterator<Item = StepId> {
        STEPS.iter().filter(move |s| s.modes.has(mode)).map(|s| s.id)
    }

    /// Whether it is a step of the migration's sequence (not `rollback` or
    /// `finish`).
    pub fn in_sequence(self) -> bool {
        self.info().modes != Modes::Aside
    }

    pub fn from_name(name: &str) -> Option<StepId> {
        STEPS.iter().find(|s| s.name == name).map(|s| s.id)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// By name, so that the journal, the report and `--json` say "halt-all".
impl Serialize for StepId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        StepId::from_name(&name).ok_or_else(|| {
            let known: Vec<_> = STEPS.iter().map(|s| s.name).collect();
            serde::de::Error::custom(format!("unknown step {name:?}: expected one of {}", known.join(", ")))
        })
    }
}

impl schemars::JsonSchema for StepId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StepId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_in_declaration_order_and_names_are_unique() {
        for (i, step) in STEPS.iter().enumerate() {
            assert_eq!(step.id as usize, i, "{} is out of place in STEPS", step.name);
            assert_eq!(StepId::from_name(step.name), Some(step.id));
        }
    }

    #[test]
    fn each_mode_has_its_steps_in_order() {
        let names = |mode| StepId::in_mode(mode).map(StepId::name).collect::<Vec<_>>();
        assert_eq!(
            names(CopyMode::Offline),
            ["halt-all", "stop-server", "dump", "restore", "carry", "start-server", "env-reconcile"]
        );
        assert_eq!(
            names(CopyMode::Online),
            ["precopy", "halt-all", "stop-server", "cutover", "carry", "start-server", "env-reconcile"]
        );
    }

    #[test]
    fn ids_read_and_write_as_their_names() {
        assert_eq!(serde_json::to_string(&StepId::StopServer).unwrap(), "\"stop-server\"");
        assert_eq!(serde_json::from_str::<StepId>("\"env-reconcile\"").unwrap(), StepId::EnvReconcile);
        let err = serde_json::from_str::<StepId>("\"stop\"").unwrap_err().to_string();
        assert!(err.contains("unknown step \"stop\"") && err.contains("halt-all"), "{err}");
    }
}
