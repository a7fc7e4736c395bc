//! The config file: TOML, then every rule of its validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = migrate_core::Config::parse(text, camino::Utf8Path::new("/etc/inmanta-migrate/fuzz.toml")) {
            // What a run derives from a valid config at once.
            let _ = migrate_core::journal::MigrationKey::of(&config);
        }
    }
});
