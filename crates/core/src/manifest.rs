//! `manifest.json`: what `dump` wrote and what `restore` must verify before it
//! loads anything. It is written last, so a dump without a manifest is an
//! incomplete dump. A `manifest.json.sha256` beside it catches hand edits.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use camino::{Utf8Path, Utf8PathBuf};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{config::DumpFormat, fsutil, inventory::Inventory};

pub const FILE: &str = "manifest.json";
const FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub tool_version: String,
    pub created: Timestamp,
    pub dump_format: DumpFormat,
    pub compress: u32,
    /// What `pg_dump --version` said, e.g. "15.18".
    pub pg_dump_version: String,
    /// `server_version` of the source PostgreSQL.
    pub source_pg_version: String,
    pub database: String,
    pub database_bytes: i64,
    /// inmanta-core version of the old server.
    pub inmanta_version: String,
    /// `schemamanager`: name -> installed schema versions.
    pub schema_versions: BTreeMap<String, Vec<i64>>,
    /// Rows per table (`schema.table`), counted in the dump's own snapshot.
    pub tables: BTreeMap<String, i64>,
    pub inventory: Inventory,
    /// The dump itself: a directory or one file, relative to the dump dir.
    pub data: String,
    pub files: Vec<FileEntry>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the dump directory.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn new_format() -> u32 {
        FORMAT
    }

    /// Whether this dump was taken in the migration that took `inventory`
    /// (not in an earlier rehearsal that used the same directory).
    pub fn belongs_to(&self, inventory: &Inventory) -> bool {
        self.inventory.taken_at == inventory.taken_at
            && crate::config::same_url(&self.inventory.api_url, &inventory.api_url)
    }

    pub fn data_path(&self, dump_dir: &Utf8Path) -> Utf8PathBuf {
        dump_dir.join(&self.data)
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Writes `manifest.json` and its checksum file, atomically.
    pub fn write(&self, dump_dir: &Utf8Path) -> anyhow::Result<()> {
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        let path = dump_dir.join(FILE);
        fsutil::write_atomic(&path, &text)?;
        let (_, sum) = fsutil::sha256_file(&path)?;
        fsutil::write_atomic(&dump_dir.join(format!("{FILE}.sha256")), format!("{sum}  {FILE}\n").as_bytes())
    }

    /// Reads the manifest and checks it against its checksum file.
    pub fn read(dump_dir: &Utf8Path) -> anyhow::Result<Manifest> {
        let path = dump_dir.join(FILE);
        if !path.exists() {
            bail!("{path} does not exist: {dump_dir} holds no complete dump (an interrupted dump writes no manifest)");
        }
        let sum_path = dump_dir.join(format!("{FILE}.sha256"));
        let expected = std::fs::read_to_string(&sum_path).with_context(|| format!("cannot read {sum_path}"))?;
        let expected = expected.split_whitespace().next().unwrap_or("");
        let (_, actual) = fsutil::sha256_file(&path)?;
        if expected != actual {
            bail!("{path} does not match its checksum in {sum_path}: it was changed after the dump");
        }
        let manifest: Manifest = fsutil::read_json(&path)?;
        if manifest.format > FORMAT {
            bail!("{path} was written by a newer inmanta-migrate ({})", manifest.tool_version);
        }
        Ok(manifest)
    }

    /// Every file listed exists with its size and checksum, and nothing is
    /// missing: returns the problems, each naming its file.
    pub fn verify_files(&self, dump_dir: &Utf8Path) -> Vec<String> {
        let mut problems = Vec::new();
        let paths: Vec<Utf8PathBuf> = self.files.iter().map(|f| dump_dir.join(&f.path)).collect();
        let refs: Vec<&Utf8Path> = paths.iter().map(|p| p.as_path()).collect();
        for ((entry, path), hashed) in self.files.iter().zip(&paths).zip(fsutil::sha256_files(&refs)) {
            match hashed {
                Err(e) => problems.push(format!("{path}: {e:#}")),
                Ok((bytes, _)) if bytes != entry.bytes => problems.push(format!(
                    "{path}: {bytes} bytes, the manifest says {} bytes (truncated or replaced)",
                    entry.bytes
                )),
                Ok((_, sum)) if sum != entry.sha256 => {
                    problems.push(format!("{path}: checksum mismatch (corrupt or changed)"))
                }
                Ok(_) => {}
            }
        }
        problems
    }
}

/// Lists the files of `data` (a file, or a directory walked recursively)
/// with their size and sha256, paths relative to `dump_dir`.
pub fn file_entries(dump_dir: &Utf8Path, data: &Utf8Path) -> anyhow::Result<Vec<FileEntry>> {
    let mut paths = Vec::new();
    if data.is_dir() {
        let mut stack = vec![data.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in dir.read_dir_utf8().with_context(|| format!("cannot list {dir}"))? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    stack.push(entry.path().to_owned());
                } else {
                    paths.push(entry.path().to_owned());
                }
            }
        }
    } else {
        paths.push(data.to_owned());
    }
    paths.sort();
    let refs: Vec<&Utf8Path> = paths.iter().map(|p| p.as_path()).collect();
    paths
        .iter()
        .zip(fsutil::sha256_files(&refs))
        .map(|(path, hashed)| {
            let (bytes, sha256) = hashed?;
            let rel = path.strip_prefix(dump_dir).unwrap_or(path).to_string();
            Ok(FileEntry { path: rel, bytes, sha256 })
        })
        .collect()
}
