//! Small file-system and process helpers.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use anyhow::{Context, Result, bail};
use camino::Utf8Path;
use xshell::Shell;

/// A fresh xshell shell (commands are echoed by callers, not by xshell).
pub(crate) fn shell() -> Result<Shell> {
    Shell::new().context("creating a shell")
}

/// `mkdir -p` plus `chmod mode` of the last component.
pub(crate) fn mkdir_mode(dir: &Utf8Path, mode: u32) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {mode:o} {dir}"))
}

/// Writes a file with the given mode (the mode is set before any byte is written).
pub(crate) fn write_file_mode(path: &Utf8Path, contents: &str, mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {path}"))?;
    // The file may have existed with another mode.
    f.set_permissions(fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {mode:o} {path}"))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {path}"))
}

/// Writes a file atomically (temp file + rename) with the given mode.
pub(crate) fn write_atomic(path: &Utf8Path, contents: &str, mode: u32) -> Result<()> {
    let tmp = path.with_file_name(format!(".{}.tmp-{}", path.file_name().unwrap_or("file"), std::process::id()));
    write_file_mode(&tmp, contents, mode)?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {tmp} to {path}"))
}

/// Fails when a directory on the way to `dir` is not traversable by "others"
/// (the postgres user must reach the clusters' data directories).
pub(crate) fn check_traversable_by_others(dir: &Utf8Path) -> Result<()> {
    for anc in dir.ancestors() {
        if anc.as_str().is_empty() {
            continue;
        }
        let meta = fs::metadata(anc).with_context(|| format!("stat {anc}"))?;
        if meta.permissions().mode() & 0o001 == 0 {
            bail!(
                "{anc} is not traversable by other users (mode {:o}); the postgres user must reach \
                 the lab directory {dir}: choose another lab directory (--dir / {})",
                meta.permissions().mode() & 0o7777,
                crate::LAB_DIR_ENV
            );
        }
    }
    Ok(())
}

/// A generated password: 32 hex digits from a v4 UUID behind a fixed prefix.
/// Only `[a-z0-9-]`, so it needs no quoting in SQL, INI or TOML.
pub(crate) fn gen_secret() -> String {
    format!("lab-{}", uuid::Uuid::new_v4().simple())
}

/// The last `n` lines of a file, or a note that it cannot be read.
pub(crate) fn tail(path: &Utf8Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("({path}: {e})"),
    }
}

/// Finds an executable on PATH.
pub(crate) fn which(name: &str) -> Option<camino::Utf8PathBuf> {
    let path = std::env::var("PATH").ok()?;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Utf8Path::new(dir).join(name);
        if let Ok(meta) = fs::metadata(&cand)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Some(cand);
        }
    }
    None
}

/// Formats a duration as seconds with one decimal.
pub(crate) fn secs(d: std::time::Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `program` run through `enter`, an argv prefix that reaches another
/// machine of the lab (empty: this one). xshell's `cmd!` cannot splat a
/// program name, hence this.
pub(crate) fn cmd_in<'a>(sh: &'a Shell, enter: &[String], program: impl AsRef<std::path::Path>) -> xshell::Cmd<'a> {
    match enter.split_first() {
        None => sh.cmd(program.as_ref()),
        Some((first, rest)) => sh.cmd(first).args(rest).arg(program.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_plain() {
        let a = gen_secret();
        let b = gen_secret();
        assert_ne!(a, b);
        assert!(a.len() >= 32);
        assert_ne!(a, "inmanta");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn file_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = camino::Utf8PathBuf::from_path_buf(dir.path().join("s")).unwrap();
        write_file_mode(&p, "x", 0o600).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        write_atomic(&p, "y", 0o640).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "y");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
    }
}
