//! The work directory's journal, as `status`, `plan` and every step read it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate_core::journal::Journal;

fuzz_target!(|data: &[u8]| {
    // As the tool reads it: any format it knows, upgraded.
    let Ok(value) = serde_json::from_slice(data) else { return };
    if let Ok(journal) = Journal::from_value(value, "journal.json") {
        for &id in journal.steps.keys() {
            let _ = journal.is_done(id);
            let _ = journal.step(id).seconds();
        }
        let _ = serde_json::to_vec(&journal);
    }
});
