//! `restore`: loads the dump into the new orchestrator's database.
//!
//! Before it touches anything it verifies the manifest and every checksum,
//! that the new server is silent, that the tools and the target PostgreSQL
//! can take this archive, that the new server is not older than the old one,
//! and that the target database is empty (or `--replace` says to drop it).
//! After loading it runs ANALYZE and compares every table's row count with
//! the manifest.

use std::{collections::HashSet, time::Instant};

use anyhow::{Context as _, bail};
use migrate_core::{
    Checks, Context, Figures, Outcome, Side, Step, StepId,
    config::{DumpFormat, same_url},
    journal::{StepState, WorkDir},
    manifest::Manifest,
    probe,
};
use migrate_pg::Database;
use serde::{Deserialize, Serialize};

/// New side: verifies the dump and loads it into an empty database, then
/// compares row counts.
#[derive(Debug, Default, clap::Args)]
pub struct Restore {
    /// Drop and recreate the target database if it already holds data.
    #[arg(long)]
    pub replace: bool,
}

/// What a re-run of restore resumes from.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreState {
    /// The target's `user@host:port/name`, once this migration may have
    /// changed that database (so a re-run may empty it again).
    pub target_touched: Option<String>,
}

impl StepState for RestoreState {
    const STEP: StepId = StepId::Restore;
}

impl Step for Restore {
    const ID: StepId = StepId::Restore;

    fn describe(&self, cx: &Context) -> String {
        format!(
            "verify the dump in {} and load it into the new database with {} job(s), then ANALYZE and compare row counts",
            cx.config.dump_dir(),
            cx.config.restore.jobs
        )
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        let dir = cx.config.dump_dir();
        let manifest = match Manifest::read(&dir) {
            Ok(m) => m,
            Err(e) => {
                checks.fail_on("manifest", &e, "run `inmanta-migrate dump` (again)");
                return checks;
            }
        };
        let problems = manifest.verify_files(&dir);
        if problems.is_empty() {
            checks.pass(
                "dump files",
                format!("{} file(s), {} bytes, checksums verified", manifest.files.len(), manifest.total_bytes()),
            );
        } else {
            checks.fail("dump files", problems.join("; "), "the dump is damaged: run `inmanta-migrate dump` again");
        }
        // With the work directory at hand, the dump must be this migration's;
        // without it (only the dump was copied over), at least its server's.
        match cx.inventory() {
            Ok(inventory) if !manifest.belongs_to(&inventory) => checks.fail(
                "dump origin",
                format!(
                    "the dump ({}) was taken in another run than this migration's inventory ({})",
                    manifest.created, inventory.taken_at
                ),
                "point `dump.dir` at the dump of this migration, or dump again",
            ),
            Err(_) if !same_url(&manifest.inventory.api_url, &cx.config.old.api_url) => checks.fail(
                "dump origin",
                format!("the dump is of {}, not of old.api_url {}", manifest.inventory.api_url, cx.config.old.api_url),
                "point `dump.dir` at the dump of this migration",
            ),
            _ => {}
        }
        migrate_core::probe::new_server_stopped(cx, &mut checks).await;

        let dump_major = major(&manifest.pg_dump_version);
        let db = match Database::open(&cx.config, Side::New).await {
            Ok(db) => db,
            Err(e) => {
                checks.fail_on("new database", &e, "fix `new.database`");
                return checks;
            }
        };
        let tool = if manifest.dump_format == DumpFormat::Plain { "psql" } else { "pg_restore" };
        let writer = format!("the pg_dump {} that wrote the archive", manifest.pg_dump_version);
        db.check_tools(&[tool], Some((dump_major, writer)), &mut checks).await;
        if manifest.dump_format != DumpFormat::Plain {
            match db.restore_list(&manifest.data_path(&dir)).await {
                Ok(toc) => checks.pass("archive readable", format!("pg_restore --list: {} entries", toc.len())),
                Err(e) => checks.fail_on("archive readable", &e, "use a pg_restore at least as new as pg_dump"),
            }
        }
        let target_major = match db.server_version(true).await {
            Ok((_, target)) => {
                let source = major(&manifest.source_pg_version);
                if target < source {
                    checks.fail(
                        "target PostgreSQL",
                        format!(
                            "PostgreSQL {target} is older than the source PostgreSQL {}",
                            manifest.source_pg_version
                        ),
                        "restore into PostgreSQL of the same or a newer major version",
                    );
                } else {
                    checks.pass(
                        "target PostgreSQL",
                        format!("PostgreSQL {target} at {}:{}", db.target.host, db.target.port),
                    );
                }
                Some(target)
            }
            Err(e) => {
                checks.fail_on(
                    "target PostgreSQL",
                    &e,
                    "fix `new.database` (admin_user needs to reach the `postgres` database)",
                );
                None
            }
        };
        version_gates(cx, &manifest, target_major, &mut checks).await;
        check_target(cx, &db, self.replace, &mut checks).await;
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let work = cx.work()?;
        let dir = cx.config.dump_dir();
        let manifest = Manifest::read(&dir)?;
        let db = Database::open(&cx.config, Side::New).await?;
        let start = Instant::now();

        let exists = db.exists().await?;
        let objects = if exists { db.user_object_count().await? } else { 0 };
        let target = db.target.to_string();
        work.update_state(|s: &mut RestoreState| s.target_touched = Some(target))?;
        if !exists {
            cx.ui.info(Self::NAME, format!("creating database {}", db.target));
            db.create().await?;
        } else if objects > 0 {
            cx.ui.warn(
                Self::NAME,
                format!("dropping and recreating database {} ({objects} object(s) in it)", db.target),
            );
            db.drop_database().await?;
            db.create().await?;
        }

        let data = manifest.data_path(&dir);
        let jobs = cx.config.restore.jobs;
        let load_start = Instant::now();
        failpoint::before(failpoint::Area::Database, format_args!("load the dump into {}", db.target));
        let out = if manifest.dump_format == DumpFormat::Plain {
            let _spinner = cx.ui.spinner(Self::NAME, "psql is loading the plain dump");
            db.tool("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-w", "-f", data.as_str()])
                .connect(false)
                .cmd()
                .output()
                .await?
        } else {
            let toc: HashSet<String> =
                db.restore_list(&data).await?.iter().filter_map(|l| l.split(';').next()).map(str::to_owned).collect();
            let progress = cx.ui.progress(Self::NAME, "archive items", toc.len() as u64);
            let mut seen = HashSet::new();
            let out = db
                .restore_command(jobs, &data)
                .cmd()
                .stream(|line| {
                    let item = line.split("processing item ").nth(1).or_else(|| line.split("finished item ").nth(1));
                    if let Some(id) = item.and_then(|rest| rest.split_whitespace().next())
                        && toc.contains(id)
                        && seen.insert(id.to_owned())
                    {
                        progress.inc(line.split_whitespace().skip(4).collect::<Vec<_>>().join(" ").as_str());
                    }
                })
                .await?;
            drop(progress);
            out
        };
        if !out.success() {
            let failed =
                format!("loading the dump failed (exit code {}); the target database is left partly loaded", out.code);
            let again = "run `inmanta-migrate restore` again (it starts over)";
            return Err(db.tool_failure(failed, &out.stderr, again).into());
        }
        failpoint::after(failpoint::Area::Database, format_args!("load the dump into {}", db.target));
        let load_seconds = load_start.elapsed().as_secs_f64();

        let analyze_start = Instant::now();
        db.analyze(jobs).await?;
        let analyze_seconds = analyze_start.elapsed().as_secs_f64();

        let tables: Vec<String> = manifest.tables.keys().cloned().collect();
        let restored = db
            .row_counts_parallel(&tables, jobs as usize)
            .await
            .context("cannot count the rows of the restored tables")?;
        let mut differences = Vec::new();
        for (table, expected) in &manifest.tables {
            let got = restored.get(table).copied().unwrap_or(-1);
            if got != *expected {
                differences.push(format!("{table}: {expected} rows in the dump, {got} restored"));
            }
        }
        let extra: Vec<String> = db.tables().await?.into_iter().filter(|t| !manifest.tables.contains_key(t)).collect();
        if !extra.is_empty() {
            differences.push(format!("tables not in the dump: {}", extra.join(", ")));
        }
        if !differences.is_empty() {
            bail!("the restored database does not match the dump:\n  {}", differences.join("\n  "));
        }
        let rows: i64 = manifest.tables.values().sum();
        let seconds = start.elapsed().as_secs_f64();
        Ok(Outcome::done(
            Self::NAME,
            format!(
                "{} tables and {rows} rows restored into {} and verified, in {seconds:.1} s",
                manifest.tables.len(),
                db.target
            ),
        )
        .figures(Figures {
            tables: Some(manifest.tables.len()),
            rows: Some(rows),
            load_seconds: Some(load_seconds),
            analyze_seconds: Some(analyze_seconds),
            seconds: Some(seconds),
            ..Figures::default()
        }))
    }
}

fn major(version: &str) -> u32 {
    version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0)
}

/// The new server's version against the old one, the dump's schema and the
/// target PostgreSQL.
async fn version_gates(cx: &Context, manifest: &Manifest, target_pg: Option<u32>, checks: &mut Checks) {
    let new = probe::installed_new_version(cx, checks).await;
    if let Some(new) = new {
        probe::versions(manifest.inventory.core_version, new, &cx.config.intermediate_versions(), false, checks);
    }
    match manifest.schema_versions.get("core").and_then(|v| v.iter().max().copied()) {
        Some(dump) => probe::schema_chain(cx, dump, "the dump", new, checks),
        None => checks.fail(
            "database schema",
            "the dump holds no Inmanta schema (no schemamanager table)",
            "check `old.database`: is this the orchestrator's database?",
        ),
    }
    if let Some(pg) = target_pg {
        probe::postgres_for(new, pg, checks);
    }
}

/// The target database: missing, empty, ours half-loaded, or someone's data
/// (`check` runs it too).
pub async fn check_target(cx: &Context, db: &Database, replace: bool, checks: &mut Checks) {
    let name = "target database";
    let exists = match db.exists().await {
        Ok(e) => e,
        Err(e) => {
            checks.fail_on(name, &e, "check `new.database.admin_user`");
            return;
        }
    };
    if !exists {
        checks.pass(name, format!("{} does not exist yet; it will be created", db.target));
        return;
    }
    let objects = match db.user_object_count().await {
        Ok(n) => n,
        Err(e) => {
            checks.fail_on(name, &e, "check `new.database`");
            return;
        }
    };
    let journal = WorkDir::peek(&cx.config).ok().flatten();
    let ours = journal
        .as_ref()
        .and_then(|j| j.state::<RestoreState>().ok())
        .is_some_and(|state| state.target_touched == Some(db.target.to_string()));
    let restored = journal.is_some_and(|j| j.is_done(StepId::Restore));
    if objects == 0 {
        checks.pass(name, format!("{} exists and is empty", db.target));
    } else if ours && restored {
        checks.pass(name, format!("{} holds this migration's restore", db.target));
    } else if ours {
        checks.pass(name, format!("{} holds an interrupted restore of this migration; it will be redone", db.target));
    } else if replace {
        checks.warn(name, format!("{} holds {objects} object(s)", db.target), "they will be DROPPED (--replace)");
    } else {
        let schema = db.schema_versions().await.ok().and_then(|s| s.get("core").map(|v| v.len()));
        let what = schema.map(|n| format!(", an Inmanta schema with {n} versions")).unwrap_or_default();
        checks.fail(
            name,
            format!("{} is not empty: {objects} object(s){what}", db.target),
            "refusing to overwrite it: give `--replace` to drop and recreate it, or point `new.database` elsewhere",
        );
    }
}
