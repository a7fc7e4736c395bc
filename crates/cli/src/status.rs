//! `status`: where the migration stands, from the journal (without locking
//! it, so it works while another run is busy).

use migrate_core::{Context, Outcome, fsutil, inventory::Inventory, journal::WorkDir};

pub fn run(cx: &Context) -> anyhow::Result<Outcome> {
    let Some(journal) = WorkDir::peek(&cx.config)? else {
        return Ok(Outcome::nothing_to_do("status", format!("no migration has started in {}", cx.config.work_dir)));
    };
    let inventory: Option<Inventory> = fsutil::read_json(&cx.config.work_dir.join(Inventory::FILE)).ok();
    let text = crate::report::markdown(&journal, inventory.as_ref());
    let steps = crate::steps::names();
    let done = steps.iter().filter(|s| journal.is_done(s)).count();
    let summary = format!("{done} of {} steps done; journal: {}", steps.len(), cx.config.work_dir.join("journal.json"));
    Ok(Outcome::done("status", summary).text(text).details(crate::report::document(&journal, inventory.as_ref())))
}
