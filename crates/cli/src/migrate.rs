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
    /// Refuse to open the window (run halt-all) when the latest `rehearse`
    /// predicts a longer one than this ("45m", "2h").
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_window: Option<std::time::Duration>,
}

/// `--max-window`: the latest rehearsal's estimate must fit.
fn fits_in(cx: &Context, limit: std::time::Duration) -> anyhow::Result<()> {
    let shown = humantime::format_duration(limit);
    let Some(r) = migrate_core::rehearsal::Rehearsal::latest(&cx.config.work_dir) else {
        return Err(NeedsOperator(format!(
            "--max-window {shown}: no rehearsal to estimate the window from; run `inmanta-migrate rehearse` first"
        ))
        .into());
    };
    if r.window.seconds > limit.as_secs_f64() {
        let parts: Vec<String> = r.window.parts.iter().map(|p| format!("{} {:.0} s", p.steps, p.seconds)).collect();
        return Err(NeedsOperator(format!(
            "the rehearsal of {} predicts a window of {:.0} s ({}), more than --max-window {shown}; nothing was \
             changed. Shorten what dominates (an online copy takes dump and restore out of the window; \
             reconcile.concurrency spreads the compiles), rehearse again, or give a longer window",
            r.started,
            r.window.seconds,
            parts.join(", ")
        ))
        .into());
    }
    cx.ui.info("migrate", format!("the window fits: about {:.0} s predicted, {shown} allowed", r.window.seconds));
    Ok(())
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
    // Fresh: no step of the sequence has started (a rehearsal does not count).
    let fresh = journal.reached().is_none();
    if fresh && let Some(limit) = args.max_window {
        fits_in(cx, limit)?;
    }
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
