//! Small file-system helpers with the guarantees the journal relies on.

use std::{
    fs::{self, File},
    io::{Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
};

use anyhow::Context as _;
use camino::Utf8Path;
use sha2::{Digest, Sha256};

/// Creates a directory (and its parents) with mode 0700.
pub fn create_private_dir(path: &Utf8Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create directory {path}"))
}

/// Writes a file so that readers see either the old or the new content, never
/// a half-written one: temp file in the same directory, fsync, rename, fsync
/// of the directory. Mode 0600.
pub fn write_atomic(path: &Utf8Path, content: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_str().is_empty()).unwrap_or(Utf8Path::new("."));
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().unwrap_or("file"), std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {path}"))
}

/// Writes JSON atomically, pretty-printed for operators who read it.
pub fn write_json(path: &Utf8Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write_atomic(path, &text)
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Utf8Path) -> anyhow::Result<T> {
    let text = fs::read(path).with_context(|| format!("cannot read {path}"))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{path} is not valid (edited by hand, or from another tool version?)"))
}

/// The size and the hex sha256 of a file, streamed.
pub fn sha256_file(path: &Utf8Path) -> anyhow::Result<(u64, String)> {
    let mut file = File::open(path).with_context(|| format!("cannot open {path}"))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).with_context(|| format!("cannot read {path}"))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// [`sha256_file`] of many files, on every core: a dump directory is read
/// twice as fast on two.
pub fn sha256_files(paths: &[&Utf8Path]) -> Vec<anyhow::Result<(u64, String)>> {
    type Slot = std::sync::Mutex<Option<anyhow::Result<(u64, String)>>>;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Slot> = paths.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(paths.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    *results[i].lock().expect("no poisoning") = Some(sha256_file(path));
                }
            });
        }
    });
    results.into_iter().map(|r| r.into_inner().expect("no poisoning").expect("every file hashed")).collect()
}

/// Bytes available to an unprivileged writer in the file system of `path`
/// (or of its nearest existing parent).
pub fn available_space(path: &Utf8Path) -> anyhow::Result<u64> {
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Utf8Path::new("/"));
    }
    let stat =
        rustix::fs::statvfs(probe.as_std_path()).with_context(|| format!("cannot stat the file system of {probe}"))?;
    Ok(stat.f_bavail * stat.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = camino::Utf8PathBuf::from_path_buf(dir.path().join("j.json")).unwrap();
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let (size, sum) = sha256_file(&path).unwrap();
        assert_eq!(size, 3);
        assert_eq!(sum, "3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }
}
