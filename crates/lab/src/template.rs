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
    /// The OLD cluster's PostgreSQL major when not the machine's own: a
    /// dump of a newer PostgreSQL is not for an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg: Option<u32>,
}

/// What a template is for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key<'a> {
    pub old: &'a str,
    /// The environment count asked for.
    pub envs: usize,
    pub secure: bool,
    pub pg: Option<u32>,
}

pub(crate) fn dir(root: &LabRoot, key: Key) -> Utf8PathBuf {
    let Key { old, envs, secure, pg } = key;
    let variant = if secure { "-secure" } else { "" };
    let pg = pg.map(|m| format!("-pg{m}")).unwrap_or_default();
    root.templates_dir().join(format!("inmanta-core-{old}-{envs}envs{variant}{pg}-v{FORMAT}"))
}

/// The template of one variant and its dump file, when a usable one exists.
fn load_variant(root: &LabRoot, key: Key) -> Option<(Template, Utf8PathBuf)> {
    let dir = dir(root, key);
    let dump = dir.join("old.dump");
    let t: Template = serde_json::from_str(&fs::read_to_string(dir.join("template.json")).ok()?).ok()?;
    (t.format == FORMAT
        && t.old_version == key.old
        && t.env_count == key.envs
        && t.secure == key.secure
        && t.pg == key.pg
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
pub(crate) fn load(root: &LabRoot, key: Key) -> Option<(Template, Utf8PathBuf)> {
    if key.secure
        && let Some(t) = load_variant(root, key)
    {
        return Some(t);
    }
    load_variant(root, Key { secure: false, ..key })
}

/// Dumps the seeded OLD database and records the environments seeded for
/// `key.envs` environments.
pub(crate) fn save(
    root: &LabRoot,
    key: Key,
    cluster: &Cluster,
    project_id: &str,
    envs: &[SeededEnv],
    code_files: &camino::Utf8Path,
) -> Result<Utf8PathBuf> {
    let _lock = lock_cache(root)?;
    let final_dir = dir(root, key);
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
        old_version: key.old.to_string(),
        env_count: key.envs,
        project_id: project_id.to_string(),
        envs: envs.to_vec(),
        created: jiff::Timestamp::now().to_string(),
        secure: key.secure,
        pg: key.pg,
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
