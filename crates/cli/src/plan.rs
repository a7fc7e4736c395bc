//! `plan`: what each remaining step would do, without doing it.

use std::fmt::Write as _;

use migrate_core::{
    Context, Outcome, StepId,
    config::CopyMode,
    journal::{StepStatus, WorkDir},
};
use serde::Serialize;

use crate::{migrate::MigrateArgs, steps::StepCommand};

/// One step of the plan, in `--json`'s details.
#[derive(Serialize)]
struct PlannedStep {
    step: StepId,
    status: StepStatus,
    /// What it would do.
    would: String,
}

pub async fn run(cx: &Context) -> anyhow::Result<Outcome> {
    let journal = WorkDir::peek(&cx.config)?;
    let copy = match cx.config.copy.mode {
        CopyMode::Offline => "offline: dump and restore in the window",
        CopyMode::Online => "online: copied before the window, cut over in it",
    };
    let mut text = format!("Migration {} -> {} (database {copy})\n", cx.config.old.api_url, cx.config.new.api_url);
    let mut steps = Vec::new();
    let mut remaining = 0;
    for (i, step) in StepCommand::all(&MigrateArgs::default(), cx.config.copy.mode).iter().enumerate() {
        let name = step.name();
        let status = journal.as_ref().map(|j| j.step(step.id()).status).unwrap_or_default();
        let what = step.describe(cx);
        let mark = if status == StepStatus::Done {
            "done"
        } else {
            remaining += 1;
            "todo"
        };
        let _ = writeln!(text, "  {}. [{mark}] {name}: {what}", i + 1);
        steps.push(PlannedStep { step: step.id(), status, would: what });
    }
    let summary = if remaining == 0 {
        "every step is done".to_owned()
    } else {
        format!("{remaining} step(s) to run: inmanta-migrate migrate")
    };
    Ok(Outcome::done("plan", summary).text(text).details(steps))
}
