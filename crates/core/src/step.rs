//! The step contract and the shared context every step runs in.
//!
//! A step checks its preconditions (all of them, reporting every failure),
//! then runs. [`execute`] wraps both with the journal: a step the journal
//! records as done is not run again, a failed check changes nothing, and the
//! start and end of every run are written down before and after it.

use std::{fmt, sync::OnceLock};

use anyhow::Context as _;
use inmanta_api::{Client, ClientOptions};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    config::{Config, Orchestrator, Side},
    inventory::Inventory,
    journal::{StepStatus, WorkDir},
    runner::Runner,
    ui::{Level, Ui},
};

/// One step of the migration.
#[allow(async_fn_in_trait)] // used with static dispatch only
pub trait Step {
    /// The subcommand name, also the journal key.
    const NAME: &'static str;
    /// Which orchestrator it changes.
    const SIDE: Side;

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
    let record = work.journal().step(S::NAME);
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
        let r = j.step_mut(S::NAME);
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
        let r = j.step_mut(S::NAME);
        r.ended = Some(Timestamp::now());
        match &result {
            Ok(outcome) => {
                r.status = match outcome.status {
                    OutcomeStatus::NeedsOperator => StepStatus::NeedsOperator,
                    OutcomeStatus::Partial => StepStatus::Pending,
                    OutcomeStatus::Done | OutcomeStatus::NothingToDo => StepStatus::Done,
                };
                r.summary = Some(outcome.summary.clone());
                r.figures.extend(outcome.figures.clone());
            }
            Err(e) => {
                r.status = StepStatus::Failed;
                r.error = Some(format!("{e:#}"));
            }
        }
    })?;
    result
}

/// The API client of one orchestrator of the config (`key`: its table).
fn client(config: &Config, ui: &Ui, key: &str, o: &Orchestrator) -> anyhow::Result<Client> {
    if !o.tls_verify {
        ui.warn(
            "config",
            format!(
                "TLS certificate verification is OFF for the {key} server ({}): anyone on the path can read its token",
                o.api_url
            ),
        );
    }
    let options = ClientOptions {
        base_url: o.api_url.clone(),
        token: o.token_value.as_ref().map(|t| t.expose().to_owned()),
        ca_pem: o.ca_pem.clone(),
        tls_verify: o.tls_verify,
        timeout: config.timeouts.api,
        retries: 3,
    };
    Client::new(key, options).map_err(|e| {
        anyhow::Error::new(crate::config::ConfigError {
            file: config.path.clone(),
            location: None,
            key: Some(format!("{key}.api_url")),
            message: e.to_string(),
        })
    })
}

/// The shared state of one invocation.
pub struct Context {
    pub config: Config,
    pub ui: Ui,
    old: Client,
    new: Client,
    work: OnceLock<WorkDir>,
}

impl Context {
    pub fn new(config: Config, ui: Ui) -> anyhow::Result<Self> {
        let old = client(&config, &ui, "old", &config.old)?;
        let new = client(&config, &ui, "new", &config.new)?;
        Ok(Context { config, ui, old, new, work: OnceLock::new() })
    }

    /// A client of the `index`th `[[intermediate]]` server.
    pub fn intermediate_api(&self, index: usize) -> anyhow::Result<Client> {
        let orch = self.config.intermediate[index].orchestrator(&self.config.new);
        client(&self.config, &self.ui, &format!("intermediate[{index}]"), &orch)
    }

    pub fn api(&self, side: Side) -> &Client {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    /// Runs commands on the host of one orchestrator.
    pub fn runner(&self, side: Side) -> Runner {
        Runner::on(&self.config.side(side).host)
    }

    /// The locked work directory, opened on first use.
    pub fn work(&self) -> anyhow::Result<&WorkDir> {
        if let Some(work) = self.work.get() {
            return Ok(work);
        }
        let work = WorkDir::open(&self.config)?;
        self.ui.attach_log(&work.path("events.log"));
        if let Some(note) = &work.recovered_from {
            self.ui.warn("journal", format!("{note}; continuing from the journal"));
        }
        Ok(self.work.get_or_init(|| work))
    }

    /// The work directory if this run has opened (and locked) it.
    pub fn opened_work(&self) -> Option<&WorkDir> {
        self.work.get()
    }

    /// The inventory `halt-all` took of the old orchestrator.
    pub fn inventory(&self) -> anyhow::Result<Inventory> {
        let path = self.config.work_dir.join(Inventory::FILE);
        crate::fsutil::read_json(&path)
            .context("no inventory of the old orchestrator: run `inmanta-migrate halt-all` first")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

/// One precondition and what to do about it.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
}

/// The preconditions of a step or of `check`, all of them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Checks {
    pub items: Vec<Check>,
}

impl Checks {
    pub fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, CheckStatus::Pass, detail, None::<String>);
    }

    pub fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>, next: impl Into<String>) {
        self.push(name, CheckStatus::Warn, detail, Some(next));
    }

    pub fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, next: impl Into<String>) {
        self.push(name, CheckStatus::Fail, detail, Some(next));
    }

    /// A check whose outcome is an error or not.
    pub fn result(&mut self, name: &str, result: Result<String, (String, String)>) {
        match result {
            Ok(detail) => self.pass(name, detail),
            Err((detail, next)) => self.fail(name, detail, next),
        }
    }

    fn push(
        &mut self,
        name: impl Into<String>,
        status: CheckStatus,
        detail: impl Into<String>,
        next: Option<impl Into<String>>,
    ) {
        self.items.push(Check { name: name.into(), status, detail: detail.into(), next_step: next.map(Into::into) });
    }

    pub fn extend(&mut self, other: Checks) {
        self.items.extend(other.items);
    }

    pub fn failed(&self) -> bool {
        self.items.iter().any(|c| c.status == CheckStatus::Fail)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.items.iter().filter(|c| c.status == CheckStatus::Fail)
    }

    /// Shows the warnings and failures (and, with `--json`, everything).
    pub fn report(&self, ui: &Ui, step: &str) {
        for check in &self.items {
            let next = check.next_step.as_deref().map(|n| format!(" -> {n}")).unwrap_or_default();
            match check.status {
                CheckStatus::Pass => ui.event(Level::Info, step, format_args!("ok: {}: {}", check.name, check.detail)),
                CheckStatus::Warn => {
                    ui.event(Level::Warn, step, format_args!("{}: {}{next}", check.name, check.detail))
                }
                CheckStatus::Fail => {
                    ui.event(Level::Error, step, format_args!("{}: {}{next}", check.name, check.detail))
                }
            }
        }
    }
}

/// Preconditions failed: nothing was changed. Exit code 3.
#[derive(Debug)]
pub struct ChecksFailed(pub Checks);

impl fmt::Display for ChecksFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: Vec<&str> = self.0.failures().map(|c| c.name.as_str()).collect();
        write!(f, "{} check(s) failed, nothing was changed: {}", failed.len(), failed.join(", "))
    }
}

impl std::error::Error for ChecksFailed {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Done,
    NothingToDo,
    /// Done for what was asked; other parts of the step remain.
    Partial,
    NeedsOperator,
}

/// What a step did, for the operator (stdout) and the journal.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub step: String,
    pub status: OutcomeStatus,
    pub summary: String,
    /// Measured figures, also kept in the journal.
    pub figures: Map<String, Value>,
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
            figures: Map::new(),
            details: Value::Null,
            text: None,
        }
    }

    pub fn figure(mut self, name: &str, value: impl Serialize) -> Self {
        self.figures.insert(name.to_owned(), serde_json::to_value(value).unwrap_or(Value::Null));
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
