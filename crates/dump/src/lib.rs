//! `dump`: `pg_dump` of the old orchestrator's database, and `manifest.json`
//! beside it: versions, schema versions, the inventory, per-table row counts
//! and every file's size and sha256.
//!
//! The row counts come from the very snapshot `pg_dump` reads (a psql session
//! exports it and holds it open), so they are exact even if something writes
//! to the database meanwhile. The dump is written under a `.partial-` name and
//! renamed when `pg_restore --list` reads it; the manifest is written last. A
//! dump without a manifest is incomplete and is never restored.

use std::time::Instant;

use anyhow::{Context as _, bail};
use camino::{Utf8Path, Utf8PathBuf};
use jiff::Timestamp;
use migrate_core::{
    Checks, Context, Figures, Outcome, Side, Step, StepId,
    config::DumpFormat,
    fsutil,
    manifest::{self, Manifest},
};
use migrate_pg::Database;

/// Old side: pg_dump of the database, with a manifest of versions, row
/// counts and checksums.
#[derive(Debug, Default, clap::Args)]
pub struct Dump {
    /// Dump even though the old server still answers (the dump is still
    /// consistent, but changes made after it are lost).
    #[arg(long)]
    pub allow_running: bool,
}

/// The name of the dump inside the dump directory.
pub fn data_name(format: DumpFormat) -> &'static str {
    match format {
        DumpFormat::Directory => "db",
        DumpFormat::Custom => "db.dump",
        DumpFormat::Plain => "db.sql",
    }
}

const PARTIAL: &str = ".partial-";

/// What the dump directory holds now.
enum DumpDir {
    Empty,
    Complete(Box<Manifest>),
    /// Leftovers of an interrupted dump of ours.
    Partial(Vec<Utf8PathBuf>),
    /// Files that are not ours.
    Foreign(Vec<String>),
}

fn inspect(dir: &Utf8Path) -> anyhow::Result<DumpDir> {
    if !dir.exists() {
        return Ok(DumpDir::Empty);
    }
    let mut ours = Vec::new();
    let mut foreign = Vec::new();
    for entry in dir.read_dir_utf8().with_context(|| format!("cannot list the dump directory {dir}"))? {
        let entry = entry?;
        let name = entry.file_name();
        let known = name.starts_with(PARTIAL)
            || name.starts_with(&format!(".{}", manifest::FILE))
            || [manifest::FILE, "manifest.json.sha256", "db", "db.dump", "db.sql"].contains(&name);
        if known { ours.push(entry.path().to_owned()) } else { foreign.push(name.to_owned()) }
    }
    if !foreign.is_empty() {
        return Ok(DumpDir::Foreign(foreign));
    }
    if ours.is_empty() {
        return Ok(DumpDir::Empty);
    }
    if dir.join(manifest::FILE).exists() {
        return Ok(DumpDir::Complete(Box::new(Manifest::read(dir)?)));
    }
    Ok(DumpDir::Partial(ours))
}

impl Step for Dump {
    const ID: StepId = StepId::Dump;

    fn describe(&self, cx: &Context) -> String {
        let d = &cx.config.dump;
        format!(
            "pg_dump the old database into {} ({} format, {} job(s), compression {}), with a manifest",
            cx.config.dump_dir(),
            d.format.name(),
            d.jobs,
            d.compress
        )
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        if let Err(e) = cx.inventory() {
            checks.fail_on("inventory", &e, "run `inmanta-migrate halt-all` first");
        }
        match cx.api(Side::Old).probe().await {
            Ok(None) => checks.pass("old server stopped", "its API does not answer"),
            Ok(Some(_)) if self.allow_running => {
                checks.warn("old server stopped", "the old server still answers", "dumping anyway (--allow-running)")
            }
            Ok(Some(_)) => checks.fail(
                "old server stopped",
                format!("{} still answers", cx.config.old.api_url),
                "run `inmanta-migrate stop-server` first (or --allow-running)",
            ),
            Err(e) => checks.fail("old server stopped", e.to_string(), "check `old.api_url`"),
        }
        let db = match Database::open(&cx.config, Side::Old).await {
            Ok(db) => db,
            Err(e) => {
                checks.fail_on("old database", &e, "fix `old.database` in the config");
                return checks;
            }
        };
        let server_major = match db.server_version(false).await {
            Ok((version, major)) => {
                checks.pass("old database", format!("{} answers: PostgreSQL {version}", db.target));
                Some(major)
            }
            Err(e) => {
                let next = migrate_pg::unreachable_next_step("old", &e);
                checks.fail_on("old database", &e, next);
                None
            }
        };
        // The database is the one whose environments the inventory lists
        // (asked only of a database that answers: its failure is said once).
        if let (Some(_), Ok(inventory)) = (server_major, cx.inventory()) {
            match db.environment_ids().await {
                Ok(stored) => {
                    let mut listed: Vec<String> = inventory.environments.iter().map(|e| e.id.to_string()).collect();
                    listed.sort();
                    if stored == listed {
                        checks.pass(
                            "old database content",
                            format!("holds the {} environment(s) of the inventory", listed.len()),
                        );
                    } else {
                        checks.fail(
                            "old database content",
                            format!("holds {} environment(s), not the {} of the inventory", stored.len(), listed.len()),
                            "is `old.database` the old orchestrator's database?",
                        );
                    }
                }
                Err(e) => {
                    checks.fail_on("old database content", &e, "is `old.database` the old orchestrator's database?")
                }
            }
        }
        let floor = server_major.map(|m| (m, format!("the old PostgreSQL {m}")));
        db.check_tools(&["pg_dump"], floor, &mut checks).await;
        check_dir(cx, &mut checks);
        if server_major.is_some() {
            check_space(cx, &db, &mut checks).await;
        }
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let dir = cx.config.dump_dir();
        let options = cx.config.dump.clone();
        match inspect(&dir)? {
            DumpDir::Complete(m) => {
                if !m.belongs_to(&cx.inventory()?) {
                    bail!("{dir} holds a dump of another run ({}); remove it, or set another `dump.dir`", m.created);
                }
                let problems = m.verify_files(&dir);
                if problems.is_empty() {
                    return Ok(Outcome::nothing_to_do(
                        Self::NAME,
                        format!("{dir} already holds a verified dump ({})", m.created),
                    ));
                }
                bail!("the dump in {dir} is damaged: {}; remove it to dump again", problems.join("; "));
            }
            DumpDir::Partial(leftovers) => {
                cx.ui.info(Self::NAME, "removing the leftovers of an interrupted dump");
                for path in leftovers {
                    remove(&path)?;
                }
            }
            DumpDir::Foreign(files) => bail!("{dir} holds files that are not ours: {}", files.join(", ")),
            DumpDir::Empty => {}
        }
        fsutil::create_private_dir(&dir)?;
        let inventory = cx.inventory()?;
        let db = Database::open(&cx.config, Side::Old).await?;
        let (pg_dump_version, _) = db.tool_major("pg_dump").await?;
        let (source_version, _) = db.server_version(false).await?;
        let start = Instant::now();

        // One snapshot for the dump, the row counts and the schema versions.
        let mut snapshot = db.export_snapshot().await?;

        let name = data_name(options.format);
        let partial = dir.join(format!("{PARTIAL}{name}"));
        let dump = db.dump_command(&options, Some(&snapshot.id), &partial);
        // The row counts run in the snapshot while pg_dump reads: both
        // finish sooner than one after the other.
        snapshot.start_counting();
        let progress = cx.ui.progress(Self::NAME, "tables", snapshot.tables.len() as u64);
        let out = dump
            .cmd()
            .stream(|line| Database::dumped_table(line).into_iter().for_each(|table| progress.inc(table)))
            .await?;
        drop(progress);
        if !out.success() {
            let failed = format!("pg_dump failed (exit code {})", out.code);
            let again = "run `inmanta-migrate dump` again (it starts the dump over)";
            return Err(db.tool_failure(failed, &out.stderr, again).into());
        }

        let counts = snapshot.counts().await?;
        let schema_versions = snapshot.schema_versions().await?;
        snapshot.close().await?;

        if options.format == DumpFormat::Plain {
            let text = std::fs::read_to_string(&partial).with_context(|| format!("cannot read {partial}"))?;
            if !text.contains("PostgreSQL database dump complete") {
                bail!("{partial} is incomplete: it lacks pg_dump's end marker");
            }
        } else {
            db.restore_list(&partial).await.context("the new dump does not read back")?;
        }
        let data = dir.join(name);
        std::fs::rename(&partial, &data).with_context(|| format!("cannot rename {partial} to {data}"))?;
        let files = manifest::file_entries(&dir, &data)?;
        let seconds = start.elapsed().as_secs_f64();
        let manifest = Manifest {
            format: Manifest::new_format(),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            created: Timestamp::now(),
            dump_format: options.format,
            compress: options.compress,
            pg_dump_version,
            source_pg_version: source_version,
            database: db.target.name.clone(),
            database_bytes: db.size_bytes().await.unwrap_or(0),
            inmanta_version: inventory.core_version.to_string(),
            schema_versions,
            tables: counts,
            inventory,
            data: name.to_owned(),
            files,
            seconds,
        };
        manifest.write(&dir)?;
        let bytes = manifest.total_bytes();
        let rows: i64 = manifest.tables.values().sum();
        Ok(Outcome::done(
            Self::NAME,
            format!("{} tables, {rows} rows, {} in {seconds:.1} s -> {data}", manifest.tables.len(), mib(bytes)),
        )
        .figures(Figures {
            tables: Some(manifest.tables.len()),
            rows: Some(rows),
            bytes: Some(bytes),
            database_bytes: Some(manifest.database_bytes),
            seconds: Some(seconds),
            ..Figures::default()
        }))
    }
}

fn remove(path: &Utf8Path) -> anyhow::Result<()> {
    if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) }
        .with_context(|| format!("cannot remove {path}"))
}

/// The dump directory: empty, leftovers of ours, or the complete dump of
/// this migration (`check` runs it too, before there is an inventory: then
/// no complete dump is this migration's).
pub fn check_dir(cx: &Context, checks: &mut Checks) {
    let dir = cx.config.dump_dir();
    match inspect(&dir) {
        Ok(DumpDir::Foreign(files)) => checks.fail(
            "dump directory",
            format!("{dir} holds files that are not a dump of this tool: {}", files.join(", ")),
            "empty it or set another `dump.dir`",
        ),
        Ok(DumpDir::Complete(m)) => {
            if cx.inventory().is_ok_and(|i| m.belongs_to(&i)) {
                checks.pass("dump directory", format!("{dir} holds the dump of this migration ({})", m.created));
            } else {
                checks.fail(
                    "dump directory",
                    format!(
                        "{dir} holds a dump of another run ({} of {}), not of this migration",
                        m.created, m.inventory.api_url
                    ),
                    "remove it, or set another `dump.dir`",
                );
            }
        }
        Ok(_) => checks.pass("dump directory", format!("{dir} is ready")),
        Err(e) => checks.fail_on("dump directory", &e, "fix `dump.dir`"),
    }
}

/// Room for the dump of the old database in the dump directory.
pub async fn check_space(cx: &Context, db: &Database, checks: &mut Checks) {
    let dir = cx.config.dump_dir();
    match (db.size_bytes().await, fsutil::available_space(&dir)) {
        (Ok(size), Ok(free)) => {
            let needed = estimate(size, cx.config.dump.compress);
            if free < needed {
                checks.fail(
                    "disk space",
                    format!("the dump needs about {} and {dir} has {} free", mib(needed), mib(free)),
                    "free space, set another `dump.dir`, or raise `dump.compress`",
                );
            } else {
                checks.pass("disk space", format!("about {} needed, {} free", mib(needed), mib(free)));
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            checks.warn("disk space", format!("{e:#}"), "check the space for the dump by hand")
        }
    }
}

/// Bytes a dump needs: up to the database size uncompressed (indexes are not
/// dumped, so that is an upper bound), about a third compressed.
fn estimate(database_bytes: i64, compress: u32) -> u64 {
    let size = database_bytes.max(0) as u64;
    let data = if compress == 0 { size } else { size / 3 };
    data + 64 * 1024 * 1024
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
