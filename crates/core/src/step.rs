//! The step contract.
//!
//! A step checks its preconditions (all of them, reporting every failure),
//! then runs. [`execute`] wraps both with the journal: a step the journal
//! records as done is not run again, a failed check changes nothing, and the
//! start and end of every run are written down before and after it.

use anyhow::Context as _;
use camino::Utf8PathBuf;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::{
    checks::Checks,
    config::Side,
    context::Context,
    error::{ChecksFailed, Exit, Failure},
    figures::Figures,
    inventory::Inventory,
    journal::{Journal, StepStatus},
    steps::StepId,
};

/// One step of the migration.
#[allow(async_fn_in_trait)] // used with static dispatch only
pub trait Step {
    /// Its entry in the step list.
    const ID: StepId;
    /// The subcommand, also the name in the journal and the output.
    const NAME: &'static str = Self::ID.name();
    /// Which orchestrator it changes.
    const SIDE: Side = Self::ID.side();

    /// What it would do, one line for `plan`.
    fn describe(&self, cx: &Context) -> String;

    /// Whether to run even though the journal records the step as done
    /// (`env-reconcile --env` reconciles an environment left halted).
    fn runs_when_done(&self) -> bool {
        false
    }

    /// Every precondition, all reported; changes nothing.
    async fn check(&self, cx: &Context) -> Checks;

    /// Does the work. Safe to run again after an interruption.
    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome>;
}

/// Runs a step under the journal's rules.
pub async fn execute<S: Step>(step: &S, cx: &Context) -> anyhow::Result<Outcome> {
    let work = cx.work()?;
    if S::ID.in_sequence() && work.journal().rolled_back.is_some() {
        new_attempt(cx)?;
    }
    let record = work.journal().step(S::ID);
    if record.status == StepStatus::Done && !step.runs_when_done() {
        let when =
            record.ended.map(|t| format!(" at {}", t.round(jiff::Unit::Second).unwrap_or(t))).unwrap_or_default();
        return Ok(Outcome::nothing_to_do(S::NAME, format!("already done{when}, says the journal")));
    }
    let checks = step.check(cx).await;
    checks.report(&cx.ui, S::NAME);
    if checks.failed() {
        return Err(ChecksFailed(checks).into());
    }
    work.update(|j| {
        let r = j.step_mut(S::ID);
        // A step done before that runs again (see `runs_when_done`) stays
        // done while it runs: an interruption takes nothing away from it.
        if r.status != StepStatus::Done {
            r.status = StepStatus::Running;
        }
        r.started = Some(Timestamp::now());
        r.ended = None;
        r.attempts += 1;
        r.error = None;
    })?;
    let result = step.run(cx).await;
    work.update(|j| {
        let r = j.step_mut(S::ID);
        r.ended = Some(Timestamp::now());
        match &result {
            Ok(outcome) => {
                r.status = match outcome.status {
                    OutcomeStatus::NeedsOperator => StepStatus::NeedsOperator,
                    OutcomeStatus::Partial => StepStatus::Pending,
                    // `rollback` with nothing to go back from yet must still
                    // be there when there is.
                    OutcomeStatus::NothingToDo if !S::ID.in_sequence() => StepStatus::Pending,
                    OutcomeStatus::Done | OutcomeStatus::NothingToDo => StepStatus::Done,
                };
                r.summary = Some(outcome.summary.clone());
                r.figures.merge(&outcome.figures);
            }
            Err(e) => {
                let failure = Failure::of(e);
                // A step that stopped for an operator did not fail.
                r.status = match failure.exit_code() {
                    Exit::Operator => StepStatus::NeedsOperator,
                    _ => StepStatus::Failed,
                };
                r.error = Some(failure.shown());
            }
        }
    })?;
    result
}

/// The first step after a rollback starts the migration again: the rolled
/// back attempt's inventory and dump are set aside (renamed, never deleted:
/// the operator removes them), its record kept in the journal.
pub fn new_attempt(cx: &Context) -> anyhow::Result<()> {
    let work = cx.work()?;
    let n = work.journal().earlier.len() + 1;
    let aside = |path: Utf8PathBuf| -> anyhow::Result<()> {
        if path.exists() {
            let to = Utf8PathBuf::from(format!("{path}.attempt-{n}"));
            std::fs::rename(&path, &to).with_context(|| format!("cannot set {path} aside as {to}"))?;
            cx.ui.info("migrate", format!("attempt {n} was rolled back: its {path} is kept as {to}"));
        }
        Ok(())
    };
    aside(work.path(Inventory::FILE))?;
    aside(work.path(Inventory::NEW_FILE))?;
    aside(cx.config.dump_dir())?;
    work.update(Journal::begin_new_attempt)?;
    let first = StepId::in_mode(cx.config.copy.mode).next().map_or("the start", StepId::name);
    cx.ui.info("migrate", format!("attempt {} starts from {first} (the report keeps attempt {n})", n + 1));
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Done,
    NothingToDo,
    /// Done for what was asked; other parts of the step remain.
    Partial,
    NeedsOperator,
}

/// What a step did, for the operator (stdout) and the journal.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Outcome {
    pub step: String,
    pub status: OutcomeStatus,
    pub summary: String,
    /// Measured figures, also kept in the journal.
    pub figures: Figures,
    /// Anything else a script may want (per-environment results, ...).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
    /// A table or text for a human, printed before the summary.
    #[serde(skip)]
    pub text: Option<String>,
}

impl Outcome {
    pub fn done(step: &str, summary: impl Into<String>) -> Self {
        Self::new(step, OutcomeStatus::Done, summary)
    }

    pub fn nothing_to_do(step: &str, summary: impl Into<String>) -> Self {
        Self::new(step, OutcomeStatus::NothingToDo, summary)
    }

    pub fn partial(step: &str, summary: impl Into<String>) -> Self {
        Self::new(step, OutcomeStatus::Partial, summary)
    }

    pub fn needs_operator(step: &str, summary: impl Into<String>) -> Self {
        Self::new(step, OutcomeStatus::NeedsOperator, summary)
    }

    fn new(step: &str, status: OutcomeStatus, summary: impl Into<String>) -> Self {
        Outcome {
            step: step.to_owned(),
            status,
            summary: summary.into(),
            figures: Figures::default(),
            details: Value::Null,
            text: None,
        }
    }

    pub fn figures(mut self, figures: Figures) -> Self {
        self.figures = figures;
        self
    }

    pub fn text(mut self, text: String) -> Self {
        self.text = Some(text);
        self
    }

    pub fn details(mut self, details: impl Serialize) -> Self {
        self.details = serde_json::to_value(details).unwrap_or(Value::Null);
        self
    }
}
