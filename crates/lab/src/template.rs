//! Seeded-database templates: a `pg_dump -Fc` of a freshly seeded OLD
//! database, the OLD server's code files (`state/server/files`: the database
//! only references them) and what was seeded, keyed by (old version, the
//! environment count asked for, plain or secure): 15.3+ seeds add
//! environments of their own to that count (`seed::plan`). Restoring one takes seconds where seeding takes a minute.
//!
//! A secure instance's database holds the compile reports of a server with
//! auth on, whose command lines carry environment-scoped compiler tokens
//! signed with that instance's key: it is saved apart, so plain templates
//! never hold a token. A secure instance may restore a plain template (the
//! database holds nothing about auth or TLS; agents get their config anew).

use std::fs;

use anyhow::{Context, Result};
use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use crate::pg::Cluster;
use crate::prepare::lock_cache;
use crate::seed::SeededEnv;
use crate::{LabRoot, util};

/// Bump when seeding changes, so old templates are not used.
const FORMAT: u32 = 4;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Template {
    pub format: u32,
    pub old_version: String,
    pub env_count: usize,
    pub project_id: String,
    pub envs: Vec<SeededEnv>,
    pub created: String,
    /// Seeded by a server with auth and TLS.
    #[serde(default)]
    pub secure: bool,
}

pub(crate) fn dir(root: &LabRoot, old: &str, n: usize, secure: bool) -> Utf8PathBuf {
    let variant = if secure { "-secure" } else { "" };
    root.templates_dir().join(format!("inmanta-core-{old}-{n}envs{variant}-v{FORMAT}"))
}

/// The template of one variant and its dump file, when a usable one exists.
fn load_variant(root: &LabRoot, old: &str, n: usize, secure: bool) -> Option<(Template, Utf8PathBuf)> {
    let dir = dir(root, old, n, secure);
    let dump = dir.join("old.dump");
    let t: Template = serde_json::from_str(&fs::read_to_string(dir.join("template.json")).ok()?).ok()?;
    (t.format == FORMAT
        && t.old_version == old
        && t.env_count == n
        && t.secure == secure
        && dump.exists()
        && dir.join("files").is_dir())
    .then_some((t, dump))
}

/// Held while an instance restores a template, or seeds and saves one:
/// two instances coming up at once (tests in two threads) neither seed the
/// same template twice nor read one that the other replaces.
pub(crate) fn in_use() -> std::sync::MutexGuard<'static, ()> {
    static TEMPLATES: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TEMPLATES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The template for an instance: a plain one for a plain instance; for a
/// secure one, a secure template, or else a plain one.
pub(crate) fn load(root: &LabRoot, old: &str, n: usize, secure: bool) -> Option<(Template, Utf8PathBuf)> {
    if secure && let Some(t) = load_variant(root, old, n, true) {
        return Some(t);
    }
    load_variant(root, old, n, false)
}

/// Dumps the seeded OLD database and records the environments seeded for
/// `asked` environments.
#[allow(clippy::too_many_arguments)]
pub(crate) fn save(
    root: &LabRoot,
    old: &str,
    asked: usize,
    cluster: &Cluster,
    project_id: &str,
    envs: &[SeededEnv],
    secure: bool,
    code_files: &camino::Utf8Path,
) -> Result<Utf8PathBuf> {
    let _lock = lock_cache(root)?;
    let final_dir = dir(root, old, asked, secure);
    let tmp = final_dir.with_file_name(format!(".{}.tmp-{}", final_dir.file_name().unwrap_or("t"), std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    util::mkdir_mode(&tmp, 0o755)?;
    cluster.dump("inmanta", &tmp.join("old.dump"))?;
    // Servers before 10.0 keep code files outside the database; 10.0+ have none there.
    if code_files.is_dir() {
        copy_dir(code_files, &tmp.join("files"))?;
    } else {
        util::mkdir_mode(&tmp.join("files"), 0o755)?;
    }
    let t = Template {
        format: FORMAT,
        old_version: old.to_string(),
        env_count: asked,
        project_id: project_id.to_string(),
        envs: envs.to_vec(),
        created: jiff::Timestamp::now().to_string(),
        secure,
    };
    fs::write(tmp.join("template.json"), serde_json::to_string_pretty(&t)?)?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).with_context(|| format!("removing {final_dir}"))?;
    }
    fs::rename(&tmp, &final_dir).with_context(|| format!("renaming {tmp} to {final_dir}"))?;
    Ok(final_dir)
}

/// Copies the files of `from` into `to` (created).
pub(crate) fn copy_dir(from: &camino::Utf8Path, to: &camino::Utf8Path) -> Result<()> {
    util::mkdir_mode(to, 0o755)?;
    for entry in from.read_dir_utf8().with_context(|| format!("reading {from}"))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).with_context(|| format!("copying {} to {target}", entry.path()))?;
        }
    }
    Ok(())
}
