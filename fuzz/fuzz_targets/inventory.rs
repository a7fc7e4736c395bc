//! halt-all's inventory of the old environments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate_core::inventory::Inventory;

fuzz_target!(|data: &[u8]| {
    if let Ok(inventory) = serde_json::from_slice::<Inventory>(data) {
        for env in &inventory.environments {
            let _ = (env.auto_deploy(), env.label(), inventory.environment(env.id));
        }
    }
});
