//! The dump's manifest, as restore reads it (checksum, then JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile_dir() else { return };
    let path = dir.join("manifest.json");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok((_, sum)) = migrate_core::fsutil::sha256_file(&path) else { return };
    let _ = std::fs::write(dir.join("manifest.json.sha256"), format!("{sum}  manifest.json\n"));
    if let Ok(manifest) = migrate_core::manifest::Manifest::read(&dir) {
        let _ = manifest.verify_files(&dir);
    }
});

/// One directory per process, reused by every input.
fn tempfile_dir() -> std::io::Result<camino::Utf8PathBuf> {
    let dir = camino::Utf8PathBuf::from(format!("/tmp/inmanta-migrate-fuzz-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
