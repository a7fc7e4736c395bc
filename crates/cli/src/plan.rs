//! `plan`: what each remaining step would do, without doing it.

use std::fmt::Write as _;
use std::time::Duration;

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
async fn notes(cx: &Context, journal: Option<&Journal>) -> String {
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
    if let Some(lost) = would_lose_now(cx, journal).await {
        let _ = writeln!(notes, "  - {}", lost.text());
    }
    notes
}

/// How long `plan` and `status` wait for the new server to list what a
/// rollback would throw away.
const LOSSES_TIMEOUT: Duration = Duration::from_secs(30);

/// What `rollback` would throw away if run now, as it would list it.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WouldLose {
    /// Each piece of the new side's own work (none: nothing is lost).
    Items(Vec<String>),
    /// Why it cannot be told (rollback then needs --force).
    Unknown(String),
}

impl WouldLose {
    pub fn text(&self) -> String {
        match self {
            WouldLose::Items(items) if items.is_empty() => {
                "What rollback would throw away now: nothing (the new side did no work of its own yet).".into()
            }
            WouldLose::Items(items) => {
                format!("What rollback would throw away now (it goes back only with --force): {}.", items.join("; "))
            }
            WouldLose::Unknown(why) => {
                format!("What rollback would throw away now: cannot tell ({why}); it would need --force.")
            }
        }
    }
}

/// Asked of the new server only while going back can still lose something:
/// a server ran on the new database, and no rollback or finish ended it.
pub async fn would_lose_now(cx: &Context, journal: Option<&Journal>) -> Option<WouldLose> {
    let journal = journal?;
    if journal.finished.is_some() || journal.rolled_back.is_some() || journal.step(StepId::StartServer).attempts == 0 {
        return None;
    }
    Some(match tokio::time::timeout(LOSSES_TIMEOUT, step_rollback::losses(cx, journal)).await {
        Ok(Ok(items)) => WouldLose::Items(items),
        Ok(Err(e)) => WouldLose::Unknown(format!("{e:#}")),
        Err(_) => WouldLose::Unknown(format!("the new server did not list it within {LOSSES_TIMEOUT:?}")),
    })
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
        let gone = if back.new_side_gone { ", the new side given up as gone" } else { "" };
        return format!(
            "rolled back at {} (from {}{gone}); `migrate` starts a new attempt.",
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
    let _ = write!(text, "\n{}", notes(cx, journal.as_ref()).await);
    let summary = if remaining == 0 {
        "every step is done".to_owned()
    } else {
        format!("{remaining} step(s) to run: inmanta-migrate migrate")
    };
    Ok(Outcome::done("plan", summary).text(text).details(steps))
}
