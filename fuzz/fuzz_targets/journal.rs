//! The work directory's journal, as `status`, `plan` and every step read it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate_core::journal::Journal;

fuzz_target!(|data: &[u8]| {
    if let Ok(journal) = serde_json::from_slice::<Journal>(data) {
        for name in journal.steps.keys() {
            let _ = journal.is_done(name);
            let _ = journal.step(name).seconds();
        }
        let _ = serde_json::to_vec(&journal);
    }
});
