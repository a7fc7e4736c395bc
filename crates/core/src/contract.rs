//! The JSON contract: every document a script reads from the tool, as
//! types. `--json` prints one [`Document`] on stdout and [`Event`] lines on
//! stderr (also the work directory's `events.log`); every command that
//! changed something rewrites `report.json`, a [`Report`]. Their JSON
//! Schemas under `schemas/v1/` are generated from these types by a test
//! (never edited by hand), and the integration tests validate every real
//! `--json` output against them. A change that breaks a script (a field
//! removed, renamed or retyped) makes `schemas/v2/`; adding a field does not.

use std::collections::BTreeMap;

use schemars::{JsonSchema, generate::SchemaSettings};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    Outcome,
    checks::Checks,
    error::ErrorKind,
    figures::Figures,
    journal::{EnvPhase, EnvStatus, StepStatus},
    steps::StepId,
};

/// The contract's version: the folder of its schemas and the
/// `schema_version` of the documents.
pub const VERSION: u32 = 1;

/// What `--json` prints on stdout at the end of every subcommand.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Document {
    /// The command ran to its end (exit code 0, or 3 when it stopped for an
    /// operator).
    Finished(Box<Finished>),
    /// It failed (exit code 1 or 2), or a check stopped it (3).
    Failed(Failed),
}

/// A step's or command's outcome, with the exit code.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Finished {
    pub schema_version: u32,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// 0 done or nothing to do, 3 stopped for an operator.
    pub exit_code: u8,
}

/// The error, with the exit code.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Failed {
    pub schema_version: u32,
    pub status: FailedStatus,
    /// What went wrong and, where the tool knows it, what to do.
    pub error: String,
    /// What kind of failure (a stable set: README lists it).
    pub kind: ErrorKind,
    /// What to do next.
    pub advice: String,
    /// The preconditions, when a check failed.
    pub checks: Option<Checks>,
    /// 1 failed, 2 bad usage or config, 3 a check failed.
    pub exit_code: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailedStatus {
    Failed,
    NeedsOperator,
}

/// One line of `--json`'s stderr and of `events.log`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Info(Message),
    Warning(Message),
    Error(Message),
    /// One more of a counted piece of work.
    Progress {
        /// RFC 3339, UTC.
        time: String,
        step: String,
        /// What is counted ("environments", "tables", ...).
        what: String,
        done: u64,
        /// 0 when the total is unknown.
        total: u64,
        detail: String,
    },
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Message {
    /// RFC 3339, UTC.
    pub time: String,
    /// The step or command that speaks.
    pub step: String,
    pub message: String,
}

/// `report.json` in the work directory: the migration as the journal and
/// the inventory tell it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Report {
    pub schema_version: u32,
    /// The old and new servers' API URLs.
    pub old: String,
    pub new: String,
    /// inmanta-core versions; null until known.
    pub old_version: Option<String>,
    pub new_version: Option<String>,
    /// Every step of the migration's copy mode, in order.
    pub steps: Vec<StepReport>,
    /// Every environment of the old server (empty before halt-all).
    pub environments: Vec<EnvReport>,
    /// What `rollback` would do and lose now, or why there is no way back.
    pub way_back: String,
    /// Set when `rollback` brought the old orchestrator back.
    pub rolled_back: Option<RolledBackReport>,
    /// When `finish` ran (RFC 3339, UTC): from then on there is no way back.
    pub finished: Option<String>,
    /// Attempts rolled back before this one, oldest first.
    pub earlier_attempts: Vec<EarlierReport>,
    /// What the latest `rehearse` found (`rehearsal.json`), when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rehearsal: Option<crate::rehearsal::Rehearsal>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RolledBackReport {
    /// The last step of the sequence that had started.
    pub from: Option<StepId>,
    /// RFC 3339, UTC.
    pub at: String,
    /// `rollback --new-side-gone`: the new machine was given up, not made
    /// inert (its database was, where it still answered).
    pub new_side_gone: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EarlierReport {
    pub rolled_back: RolledBackReport,
    pub steps: Vec<StepReport>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StepReport {
    pub step: StepId,
    pub status: StepStatus,
    /// RFC 3339, UTC.
    pub started: Option<String>,
    pub ended: Option<String>,
    pub seconds: Option<f64>,
    pub attempts: u32,
    pub summary: Option<String>,
    pub error: Option<String>,
    /// Measured figures: sizes, counts, durations, versions.
    pub figures: Figures,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EnvReport {
    pub id: Uuid,
    pub name: String,
    pub project: String,
    pub halted_before: bool,
    pub auto_deploy_before: bool,
    pub latest_released_version_before: Option<i64>,
    /// Null until env-reconcile reaches it.
    pub status: Option<EnvStatus>,
    /// The last phase of its reconcile that completed.
    pub phase: Option<EnvPhase>,
    pub version: Option<i64>,
    pub released: bool,
    pub seconds: Option<f64>,
    pub message: Option<String>,
}

/// Every schema of the contract, by file name under `schemas/v1/`.
pub fn schemas() -> BTreeMap<&'static str, Value> {
    // What the tool writes (a field it skips when empty is not required).
    fn schema<T: JsonSchema>() -> Value {
        SchemaSettings::draft2020_12().for_serialize().into_generator().into_root_schema_for::<T>().to_value()
    }
    BTreeMap::from([
        ("document.schema.json", schema::<Document>()),
        ("event.schema.json", schema::<Event>()),
        ("report.schema.json", schema::<Report>()),
        ("rehearsal.schema.json", schema::<crate::rehearsal::Rehearsal>()),
    ])
}

#[cfg(test)]
mod tests {
    use camino::Utf8Path;
    use serde_json::json;

    use super::*;

    fn validator(name: &str) -> jsonschema::Validator {
        jsonschema::validator_for(&schemas()[name]).expect("a valid schema")
    }

    /// rust-analyzer's way with generated files: a stale one is rewritten
    /// and the test fails, so that the change is seen and committed.
    #[test]
    fn the_published_schemas_are_generated_from_the_types() {
        let dir = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../schemas/v{VERSION}"));
        let mut stale = Vec::new();
        for (name, schema) in schemas() {
            let text = serde_json::to_string_pretty(&schema).expect("JSON") + "\n";
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                std::fs::create_dir_all(&dir).expect("the schemas folder");
                std::fs::write(&path, text).expect("a schema file");
                stale.push(path);
            }
        }
        assert!(stale.is_empty(), "regenerated from the types, review and commit: {stale:?}");
    }

    #[test]
    fn documents_of_the_types_validate_and_others_do_not() {
        let document = validator("document.schema.json");
        let done = Document::Finished(Box::new(Finished {
            schema_version: VERSION,
            outcome: Outcome::done("dump", "12 tables").figures(Figures { bytes: Some(42), ..Figures::default() }),
            exit_code: 0,
        }));
        let failed = Document::Failed(Failed {
            schema_version: VERSION,
            status: FailedStatus::Failed,
            error: "no".into(),
            kind: ErrorKind::Failed,
            advice: ErrorKind::Failed.advice().into(),
            checks: None,
            exit_code: 1,
        });
        for ok in [serde_json::to_value(done).unwrap(), serde_json::to_value(failed).unwrap()] {
            assert!(document.is_valid(&ok), "{ok}");
        }
        let unknown_status = json!({ "schema_version": 1, "step": "dump", "status": "fine", "summary": "",
                                     "figures": {}, "exit_code": 0 });
        let no_exit_code = json!({ "schema_version": 1, "status": "failed", "error": "x", "checks": null });
        for bad in [unknown_status, no_exit_code] {
            assert!(!document.is_valid(&bad), "{bad}");
        }

        let event = validator("event.schema.json");
        let line =
            Event::Warning(Message { time: "2026-12-02T00:00:00Z".into(), step: "dump".into(), message: "m".into() });
        assert!(event.is_valid(&serde_json::to_value(line).unwrap()));
        assert!(!event.is_valid(&json!({ "event": "shout", "time": "t", "step": "s", "message": "m" })));
        assert!(!event.is_valid(&json!({ "event": "progress", "time": "t", "step": "s" })));
    }
}
