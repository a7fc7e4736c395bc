//! The report: `report.md` and `report.json` in the work directory, made from
//! the journal and the inventory after every command that changed something.

use std::fmt::Write as _;

use camino::Utf8PathBuf;
use migrate_core::{
    Context,
    config::CopyMode,
    contract::{self, EarlierReport, EnvReport, Report, RolledBackReport, StepReport},
    fsutil,
    inventory::Inventory,
    journal::{EnvPhase, EnvStatus, Journal, RolledBack, StepRecord},
    rehearsal::Rehearsal,
    steps::{STEPS, StepId},
};

/// Rewrites the report if this run worked in the work directory; returns the
/// Markdown report's path.
pub fn refresh(cx: &Context) -> Option<Utf8PathBuf> {
    let work = cx.opened_work()?;
    let journal = work.journal();
    let inventory: Option<Inventory> = fsutil::read_json(&work.path(Inventory::FILE)).ok();
    let rehearsal = Rehearsal::latest(work.dir());
    let (inventory, rehearsal, mode) = (inventory.as_ref(), rehearsal.as_ref(), cx.config.copy.mode);
    let md = work.path("report.md");
    let written = fsutil::write_atomic(&md, markdown(&journal, inventory, rehearsal, mode).as_bytes())
        .and_then(|()| fsutil::write_json(&work.path("report.json"), &document(&journal, inventory, rehearsal, mode)));
    match written {
        Ok(()) => Some(md),
        Err(e) => {
            cx.ui.warn("report", format!("{e:#}"));
            None
        }
    }
}

fn step_report(step: StepId, r: &StepRecord) -> StepReport {
    StepReport {
        step,
        status: r.status,
        started: r.started.map(|t| t.to_string()),
        ended: r.ended.map(|t| t.to_string()),
        seconds: r.seconds(),
        attempts: r.attempts,
        summary: r.summary.clone(),
        error: r.error.clone(),
        figures: r.figures.clone(),
    }
}

/// The steps of the sequence, then `rollback` and `finish` once they ran.
fn steps_shown(journal: &Journal, mode: CopyMode) -> impl Iterator<Item = StepId> + '_ {
    let aside = STEPS.iter().map(|s| s.id).filter(|id| !id.in_sequence() && journal.step(*id).attempts > 0);
    StepId::in_mode(mode).chain(aside)
}

fn rolled_back_report(back: &RolledBack) -> RolledBackReport {
    RolledBackReport { from: back.from, at: back.at.to_string(), new_side_gone: back.new_side_gone }
}

pub fn document(
    journal: &Journal,
    inventory: Option<&Inventory>,
    rehearsal: Option<&Rehearsal>,
    mode: CopyMode,
) -> Report {
    let steps = steps_shown(journal, mode).map(|id| step_report(id, &journal.step(id))).collect();
    let earlier_attempts = journal
        .earlier
        .iter()
        .map(|a| EarlierReport {
            rolled_back: rolled_back_report(&a.rolled_back),
            steps: a.steps.iter().map(|(id, r)| step_report(*id, r)).collect(),
        })
        .collect();
    let environments = inventory
        .map(|inv| {
            inv.environments
                .iter()
                .map(|e| {
                    let r = journal.environments.get(&e.id);
                    EnvReport {
                        id: e.id,
                        name: e.name.clone(),
                        project: e.project_name.clone(),
                        halted_before: e.halted,
                        auto_deploy_before: e.auto_deploy(),
                        latest_released_version_before: e.latest_released_version,
                        status: r.map(|r| r.status),
                        phase: r.and_then(|r| r.phase),
                        version: r.and_then(|r| r.version),
                        released: r.is_some_and(|r| r.released),
                        seconds: r.and_then(|r| r.seconds),
                        message: r.and_then(|r| r.message.clone()),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Report {
        schema_version: contract::VERSION,
        old: journal.migration.old_api.clone(),
        new: journal.migration.new_api.clone(),
        old_version: inventory.map(|i| i.core_version.to_string()),
        new_version: new_version(journal),
        steps,
        environments,
        way_back: crate::plan::way_back_now(Some(journal)),
        rolled_back: journal.rolled_back.as_ref().map(rolled_back_report),
        finished: journal.finished.map(|t| t.to_string()),
        earlier_attempts,
        rehearsal: rehearsal.cloned(),
    }
}

/// The new server's inmanta-core version, once start-server saw it.
fn new_version(journal: &Journal) -> Option<String> {
    journal.step(StepId::StartServer).figures.core_version.clone()
}

/// A text as one cell of a Markdown table.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

pub fn markdown(
    journal: &Journal,
    inventory: Option<&Inventory>,
    rehearsal: Option<&Rehearsal>,
    mode: CopyMode,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Inmanta orchestrator migration\n");
    let old_version = inventory.map(|i| i.core_version.to_string()).unwrap_or_else(|| "?".into());
    let new_version = new_version(journal).unwrap_or_else(|| "version read by start-server".into());
    let _ = writeln!(md, "- from: {} (inmanta-core {old_version})", journal.migration.old_api);
    let _ = writeln!(md, "- to: {} (inmanta-core {new_version})", journal.migration.new_api);
    let _ = writeln!(md, "- started: {}", journal.created);
    if let Some(at) = journal.finished {
        let _ = writeln!(md, "- finished: {at}");
    }
    let _ = writeln!(md, "- the way back: {}\n", crate::plan::way_back_now(Some(journal)));
    let _ = writeln!(md, "## Steps\n\n| step | status | seconds | attempts | summary |\n|---|---|---|---|---|");
    for id in steps_shown(journal, mode) {
        let r = journal.step(id);
        let seconds = r.seconds().map(|s| format!("{s:.1}")).unwrap_or_default();
        let summary = cell(r.error.as_deref().or(r.summary.as_deref()).unwrap_or(""));
        let _ = writeln!(md, "| {id} | {} | {seconds} | {} | {summary} |", r.status.words(), r.attempts);
    }
    if let Some(inv) = inventory {
        let _ = writeln!(
            md,
            "\n## Environments\n\n| environment | before | status | version | seconds | outcome |\n|---|---|---|---|---|---|"
        );
        for e in &inv.environments {
            let r = journal.environments.get(&e.id);
            let before = format!(
                "{}, auto_deploy {}",
                if e.halted { "halted" } else { "running" },
                if e.auto_deploy() { "on" } else { "off" }
            );
            // An interrupted reconcile: how far it got.
            let status = match r {
                Some(r) if r.status == EnvStatus::InProgress => {
                    format!("in progress (last: {})", r.phase.map_or("started", EnvPhase::words))
                }
                Some(r) => r.status.words().to_owned(),
                None => EnvStatus::Pending.words().to_owned(),
            };
            let version = r.and_then(|r| r.version).map(|v| v.to_string()).unwrap_or_default();
            let seconds = r.and_then(|r| r.seconds).map(|s| format!("{s:.1}")).unwrap_or_default();
            let message = cell(r.and_then(|r| r.message.as_deref()).unwrap_or(""));
            let _ =
                writeln!(md, "| {} (`{}`) | {before} | {status} | {version} | {seconds} | {message} |", e.name, e.id);
        }
    }
    for (n, attempt) in journal.earlier.iter().enumerate() {
        let from = attempt.rolled_back.from.map_or("the start", StepId::name);
        let _ = writeln!(
            md,
            "\n## Attempt {}: rolled back from {from} at {}\n\n| step | status | seconds | summary |\n|---|---|---|---|",
            n + 1,
            attempt.rolled_back.at
        );
        for (id, r) in &attempt.steps {
            let seconds = r.seconds().map(|s| format!("{s:.1}")).unwrap_or_default();
            let summary = cell(r.error.as_deref().or(r.summary.as_deref()).unwrap_or(""));
            let _ = writeln!(md, "| {id} | {} | {seconds} | {summary} |", r.status.words());
        }
    }
    if let Some(r) = rehearsal {
        rehearsal_section(&mut md, r);
    }
    md
}

/// What the latest rehearsal found, and the window it predicted.
fn rehearsal_section(md: &mut String, r: &Rehearsal) {
    let servers: Vec<String> =
        r.servers.iter().map(|s| format!("{} ({} schema migration(s))", s.version, s.schema_migrations)).collect();
    let _ = writeln!(
        md,
        "\n## Rehearsal\n\n- started: {} ({:.0} s), inmanta-core {} on a copy through {}\n",
        r.started,
        r.seconds,
        r.old_version,
        servers.join(", then ")
    );
    let _ = writeln!(md, "| environment | outcome | compile seconds | detail |\n|---|---|---|---|");
    for e in &r.environments {
        let before = if e.halted_before { " (halted before)" } else { "" };
        let seconds = e.compile_seconds.map(|s| format!("{s:.1}")).unwrap_or_default();
        let detail: Vec<&str> = e.differences.iter().chain(&e.error).map(String::as_str).collect();
        let _ =
            writeln!(md, "| {}{before} | {} | {seconds} | {} |", e.name, e.outcome.words(), cell(&detail.join("; ")));
    }
    let _ = writeln!(
        md,
        "\n### Predicted window ({} copy): {:.0} s\n\n| steps | seconds | based on |\n|---|---|---|",
        r.window.copy_mode, r.window.seconds
    );
    for p in &r.window.parts {
        let _ = writeln!(md, "| {} | {:.1} | {} |", p.steps, p.seconds, cell(&p.basis));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An environment whose reconcile was interrupted shows how far it got.
    #[test]
    fn an_interrupted_reconcile_shows_its_last_phase() {
        let id = "6c1f2a9e-0d7b-4f53-9a8e-2b1c3d4e5f60";
        let inventory: Inventory = serde_json::from_value(json!({
            "taken_at": "2026-12-01T00:00:00Z", "api_url": "http://old:8888", "server_version": "19.0.0",
            "core_version": "19.0.0", "projects": [],
            "environments": [{ "id": id, "name": "prod", "project_id": id, "project_name": "p", "repo_url": "",
                "repo_branch": "main", "halted": false, "settings": {}, "effective_settings": {},
                "latest_version": 3, "latest_released_version": 3,
                "resources": { "total": 0, "by_state": {} }, "agents": [] }],
        }))
        .unwrap();
        let journal: Journal = serde_json::from_value(json!({
            "format": 1, "tool_version": "0", "created": "2026-12-01T00:00:00Z",
            "migration": { "old_api": "http://old:8888", "new_api": "http://new:8888" },
            "steps": {}, "environments": { id: { "name": "prod", "status": "in_progress", "phase": "resumed" } },
        }))
        .unwrap();
        assert!(
            markdown(&journal, Some(&inventory), None, CopyMode::Offline).contains("| in progress (last: resumed) |")
        );
        let report = document(&journal, Some(&inventory), None, CopyMode::Offline);
        assert_eq!(report.environments[0].phase, Some(EnvPhase::Resumed));
    }
}
