//! `status`: where the migration stands, from the journal (without locking
//! it, so it works while another run is busy).

use migrate_core::{
    Context, Outcome, StepId, config::CopyMode, fsutil, inventory::Inventory, journal::WorkDir, rehearsal::Rehearsal,
};

pub async fn run(cx: &Context) -> anyhow::Result<Outcome> {
    let Some(journal) = WorkDir::peek(&cx.config)? else {
        return Ok(Outcome::nothing_to_do("status", format!("no migration has started in {}", cx.config.work_dir)));
    };
    let inventory: Option<Inventory> = fsutil::read_json(&cx.config.work_dir.join(Inventory::FILE)).ok();
    let rehearsal = Rehearsal::latest(&cx.config.work_dir);
    let (inventory, rehearsal, mode) = (inventory.as_ref(), rehearsal.as_ref(), cx.config.copy.mode);
    let mut text = crate::report::markdown(&journal, inventory, rehearsal, mode);
    let mut details = serde_json::to_value(crate::report::document(&journal, inventory, rehearsal, mode))?;
    // A rehearsal killed before it cleaned up: its copy, server or state
    // directory may still be there.
    if journal.state::<step_rehearse::RehearseState>()?.began {
        text.push_str(&format!(
            "\nA rehearsal did not finish: its scratch database {}, server (port {}) or state directory {} may be left; \
             `inmanta-migrate rehearse --clean` removes them.\n",
            cx.config.rehearsal_database(),
            cx.config.rehearsal.port,
            cx.config.rehearsal.state_dir
        ));
    }
    // The online copy lives in the databases, not the journal: read it there.
    if cx.config.copy.mode == CopyMode::Online || journal.step(StepId::Precopy).attempts > 0 {
        let copy = step_online::CopyStatus::read(cx).await;
        text.push_str(&copy.text());
        details["online_copy"] = serde_json::to_value(&copy)?;
    }
    // What a rollback would throw away now, asked of the new server.
    if let Some(lost) = crate::plan::would_lose_now(cx, Some(&journal)).await {
        text.push_str(&format!("\n{}\n", lost.text()));
        details["would_lose"] = serde_json::to_value(&lost)?;
    }
    let steps: Vec<_> = StepId::in_mode(cx.config.copy.mode).collect();
    let done = steps.iter().filter(|&&s| journal.is_done(s)).count();
    let journal_path = cx.config.work_dir.join("journal.json");
    let summary = match (&journal.rolled_back, journal.finished) {
        (_, Some(at)) => format!("finished at {at}: the new orchestrator is the only one; journal: {journal_path}"),
        (Some(back), _) => format!(
            "rolled back from {} at {}: the old orchestrator runs; `migrate` starts a new attempt; journal: {journal_path}",
            back.from.map_or("the start", StepId::name),
            back.at
        ),
        _ => format!("{done} of {} steps done; journal: {journal_path}", steps.len()),
    };
    Ok(Outcome::done("status", summary).text(text).details(details))
}
