//! `migrate`: the remaining steps in order, under one lock. A fresh migration
//! starts with the preflight; an interrupted one resumes at the first step
//! the journal does not record as done.

use std::io::{BufRead, Write};

use migrate_core::{ChecksFailed, Context, NeedsOperator, Outcome, OutcomeStatus, UsageError};

use crate::steps::StepCommand;

#[derive(Debug, Default, clap::Args)]
pub struct MigrateArgs {
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short)]
    pub yes: bool,
    /// Release the dry-run-clean versions (see `env-reconcile --release`).
    #[arg(long)]
    pub release: bool,
    /// Let restore drop a new database that already holds data.
    #[arg(long)]
    pub replace: bool,
}

pub async fn run(cx: &Context, args: &MigrateArgs) -> anyhow::Result<Outcome> {
    let work = cx.work()?;
    if work.journal().rolled_back.is_some() {
        migrate_core::step::new_attempt(cx)?;
    }
    let journal = work.journal();
    let remaining: Vec<StepCommand> =
        StepCommand::all(args, cx.config.copy.mode).into_iter().filter(|s| !journal.is_done(s.id())).collect();
    if remaining.is_empty() {
        return Ok(Outcome::nothing_to_do("migrate", "every step is done; see `inmanta-migrate status`"));
    }
    let fresh = journal.steps.values().all(|r| r.attempts == 0);
    if fresh {
        let checks = crate::check::preflight(cx, args.replace).await;
        checks.report(&cx.ui, "check");
        if checks.failed() {
            return Err(ChecksFailed(checks).into());
        }
    }
    cx.ui.info("migrate", format!("{} -> {}", cx.config.old.api_url, cx.config.new.api_url));
    for (i, step) in remaining.iter().enumerate() {
        cx.ui.info("migrate", format!("{}. {}: {}", i + 1, step.name(), step.describe(cx)));
    }
    if !args.yes {
        if !cx.ui.can_ask() {
            return Err(UsageError(
                "migrate changes both orchestrators: pass --yes to run without a terminal to confirm on".into(),
            )
            .into());
        }
        eprint!("Run these {} step(s)? [y/N] ", remaining.len());
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(NeedsOperator("not confirmed; nothing was changed".into()).into());
        }
    }
    let mut outcomes = Vec::new();
    for step in remaining {
        let outcome = step.execute(cx).await?;
        let step = step.name();
        cx.ui.info("migrate", format!("{step}: {}", outcome.summary));
        let stop = outcome.status == OutcomeStatus::NeedsOperator;
        outcomes.push(outcome);
        if stop {
            let last = outcomes.pop().expect("just pushed");
            return Ok(Outcome::needs_operator("migrate", format!("stopped at {step}: {}", last.summary))
                .details(last.details));
        }
    }
    let report = crate::report::refresh(cx).map(|p| format!("; report: {p}")).unwrap_or_default();
    Ok(Outcome::done("migrate", format!("migration complete{report}")).details(outcomes))
}
