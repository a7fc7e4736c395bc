//! `plan`: what each remaining step would do, without doing it.

use std::fmt::Write as _;

use migrate_core::{
    Context, Outcome, StepId,
    config::CopyMode,
    journal::{Journal, StepStatus, WorkDir},
    rehearsal::Rehearsal,
};
use serde::Serialize;

use crate::{migrate::MigrateArgs, steps::StepCommand};

/// What the steps do not say by themselves: what ends unreleased, and
/// what going back takes at this point.
fn notes(cx: &Context, journal: Option<&Journal>) -> String {
    let mut notes = String::from("Good to know:\n");
    if !cx.config.reconcile.release {
        notes.push_str(
            "  - Environments whose auto_deploy was on end with their new version compiled and dry-run clean, but \
             not released: pass --release to migrate or env-reconcile (or set reconcile.release = true) to release \
             it.\n",
        );
    }
    let old_side = match cx.config.copy.mode {
        CopyMode::Offline => {
            "the tool changes nothing on the old side but halting its environments and stopping its server"
        }
        CopyMode::Online => {
            "the tool changes nothing on the old side but halting its environments and stopping its server, and the \
             online copy's publication, role and fence table in its database (`precopy --abandon` removes them)"
        }
    };
    let _ = writeln!(notes, "  - The window: {}", window_now(cx));
    let _ = writeln!(
        notes,
        "  - The way back: {old_side}. `inmanta-migrate rollback` goes back from any point before `finish`: it \
         halts every environment on the new server and stops it first, then starts the old server and resumes \
         the environments that ran before, with their settings. Now: {}",
        way_back_now(journal)
    );
    notes
}

/// The latest rehearsal's estimate of the window, or how to get one.
fn window_now(cx: &Context) -> String {
    match Rehearsal::latest(&cx.config.work_dir) {
        None => "not estimated yet: `inmanta-migrate rehearse` runs the migration on a copy before the window and \
                 predicts it."
            .into(),
        Some(r) => {
            let parts: Vec<String> = r.window.parts.iter().map(|p| format!("{} {:.0} s", p.steps, p.seconds)).collect();
            format!(
                "about {:.0} s ({}), as the rehearsal of {} predicted; its report is in the status.",
                r.window.seconds,
                parts.join(", "),
                r.started
            )
        }
    }
}

/// What `rollback` would do and lose at this point of the journal.
pub fn way_back_now(journal: Option<&Journal>) -> String {
    let Some(journal) = journal else { return "nothing to go back from yet.".into() };
    if let Some(at) = journal.finished {
        return format!("no way back: `finish` ran at {at}.");
    }
    if let Some(back) = &journal.rolled_back {
        return format!(
            "rolled back at {} (from {}); `migrate` starts a new attempt.",
            back.at,
            back.from.map_or("the start", StepId::name)
        );
    }
    match journal.reached() {
        None => "nothing to go back from yet.".into(),
        Some(s) if s < StepId::StartServer => format!(
            "after {s}: rollback loses nothing (no server ran on the new database); it starts the old server and \
             resumes what ran."
        ),
        Some(s) => format!(
            "after {s}: a server ran on the new database; rollback lists what it did there (versions compiled or \
             released, settings changed) and goes back only with --force if there is any."
        ),
    }
}

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
        // After a rollback the next run starts a new attempt: all to do.
        let status =
            journal.as_ref().filter(|j| j.rolled_back.is_none()).map(|j| j.step(step.id()).status).unwrap_or_default();
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
    let _ = write!(text, "\n{}", notes(cx, journal.as_ref()));
    let summary = if remaining == 0 {
        "every step is done".to_owned()
    } else {
        format!("{remaining} step(s) to run: inmanta-migrate migrate")
    };
    Ok(Outcome::done("plan", summary).text(text).details(steps))
}
