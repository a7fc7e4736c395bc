//! Secrets never leak: a whole migration on the real lab with auth and TLS
//! (known tokens, database passwords, the JWT key), watched from outside.

use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use camino::Utf8Path;

use crate::support::lab::{alone, lab_with};

/// Every command line seen in /proc until `stop` is set.
fn watch_command_lines(stop: Arc<AtomicBool>) -> (std::thread::JoinHandle<()>, Arc<Mutex<BTreeSet<String>>>) {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let out = seen.clone();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                if let Ok(bytes) = std::fs::read(entry.path().join("cmdline"))
                    && !bytes.is_empty()
                {
                    out.lock().unwrap().insert(String::from_utf8_lossy(&bytes).replace('\0', " "));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    (handle, seen)
}

fn files_under(dir: &Utf8Path, out: &mut Vec<camino::Utf8PathBuf>) {
    for entry in dir.read_dir_utf8().unwrap() {
        let entry = entry.unwrap();
        out.push(entry.path().to_owned());
        if entry.file_type().unwrap().is_dir() {
            files_under(entry.path(), out);
        }
    }
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn secrets_appear_nowhere() {
    let _alone = alone();
    let lab = lab_with("e2e-secrets", "8.7.6", lab::Security::Secure);
    let secrets = lab.secret_values();
    assert!(secrets.len() >= 9, "passwords, tokens, the JWT key, private keys: {}", secrets.len());

    let stop = Arc::new(AtomicBool::new(false));
    let (watcher, seen) = watch_command_lines(stop.clone());
    let run = lab.run(&["-vv", "migrate", "--yes", "--release"]);
    let status = lab.run(&["--json", "status"]);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    run.success();

    let seen = seen.lock().unwrap();
    assert!(seen.iter().any(|c| c.contains("pg_dump")), "the watcher saw the child processes");
    for secret in &secrets {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret), "a secret in the output");
        assert!(!status.stdout.contains(secret), "a secret in status");
        for cmdline in seen.iter() {
            assert!(!cmdline.contains(secret), "a secret on a command line: {cmdline}");
        }
    }
    let mut files = Vec::new();
    files_under(&lab.work_dir(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("manifest.json")) && files.iter().any(|f| f.ends_with("events.log")));
    for file in &files {
        let meta = std::fs::metadata(file).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{file}");
            continue;
        }
        assert_eq!(mode, 0o600, "{file}");
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret in {file}");
        }
    }
    // Nothing secret left in /tmp either (no password file on disk).
    for entry in std::fs::read_dir("/tmp").unwrap().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file())
            && let Ok(bytes) = std::fs::read(entry.path())
        {
            let text = String::from_utf8_lossy(&bytes);
            for secret in &secrets {
                assert!(!text.contains(secret.as_str()), "a secret in {}", entry.path().display());
            }
        }
    }
    let snapshots = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/integration/snapshots");
    for entry in snapshots.read_dir_utf8().unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "no secret in snapshots");
        }
        assert!(!text.contains("Bearer ey"), "no token in snapshots");
    }
}
