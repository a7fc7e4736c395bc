//! `cargo xtask bench dump-restore`: how much faster the tool moves a
//! database than Inmanta's documented manual procedure, on a lab database
//! grown to a chosen size. Prints the times of each run and the ratio of the
//! means (tool / manual), as `shared/perf.md` does.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use lab::{Instance, LabRoot, Side, UpOptions};
use xshell::{Shell, cmd};

#[derive(Args)]
pub struct Bench {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Dump + restore: `inmanta-migrate dump` + `restore` (directory format,
    /// parallel, with manifest, checksums and row-count verification) against
    /// `pg_dump -f x.sql` + `psql --single-transaction -f x.sql`.
    DumpRestore {
        /// Approximate size of the extra data, MiB.
        #[arg(long, default_value_t = 400)]
        size_mb: u64,
        /// Runs of each method (alternating).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Leave the bench lab instance running afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Downtime of a whole migration on a busy orchestrator's database:
    /// Inmanta's documented procedure, `inmanta-migrate migrate`, and the
    /// bare database move, side by side on the same data.
    Downtime(crate::downtime::Downtime),
}

impl Bench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        match self.what {
            What::DumpRestore { size_mb, runs, keep } => dump_restore(sh, size_mb, runs, keep),
            What::Downtime(downtime) => downtime.run(sh),
        }
    }
}

fn dump_restore(sh: &Shell, size_mb: u64, runs: usize, keep: bool) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let root = LabRoot::from_env()?;
    let instance = lab::up(&root, &UpOptions { name: "bench".into(), ports: None, ..UpOptions::default() })?;
    let result = measure(sh, &instance, size_mb, runs);
    if !keep {
        instance.down(true)?;
    }
    result
}

fn measure(sh: &Shell, instance: &Instance, size_mb: u64, runs: usize) -> Result<()> {
    let bin = crate::build_tool(sh, true)?;
    grow(instance, size_mb)?;
    let config = instance.config_path();
    cmd!(sh, "{bin} --config {config} halt-all").quiet().ignore_stdout().run()?;
    cmd!(sh, "{bin} --config {config} stop-server").quiet().ignore_stdout().run()?;
    let size = instance.psql(Side::Old, "inmanta", "SELECT pg_size_pretty(pg_database_size('inmanta'))")?;
    eprintln!("database: {} (of which about {size_mb} MiB extra data)", size.trim());

    let bench_dir = instance.dir().join("bench");
    sh.create_dir(&bench_dir)?;
    let pg = instance.pg_bin_dir().to_owned();
    let (old_port, new_port) = (instance.ports().pg(Side::Old).to_string(), instance.ports().pg(Side::New).to_string());
    let old_pw = instance.db_password(Side::Old)?;
    let new_pw = instance.db_password(Side::New)?;
    let (mut manual, mut tool) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        // The manual procedure (Inmanta's docs): plain pg_dump, psql load.
        reset_target(instance)?;
        let sql = bench_dir.join("manual.sql");
        let t = Instant::now();
        {
            let _pw = sh.push_env("PGPASSWORD", &old_pw);
            cmd!(sh, "{pg}/pg_dump -h 127.0.0.1 -p {old_port} -U inmanta -d inmanta -f {sql}").run()?;
        }
        {
            let _pw = sh.push_env("PGPASSWORD", &new_pw);
            cmd!(sh, "{pg}/psql -X -q -h 127.0.0.1 -p {new_port} -U inmanta -d inmanta -v ON_ERROR_STOP=1 --single-transaction -f {sql}")
                .ignore_stdout()
                .run()?;
            cmd!(sh, "{pg}/vacuumdb --analyze-only -q -h 127.0.0.1 -p {new_port} -U inmanta -d inmanta").run()?;
        }
        manual.push(t.elapsed().as_secs_f64());
        sh.remove_path(&sql)?;

        // The tool, in a work directory of its own per run.
        reset_target(instance)?;
        let work = bench_dir.join(format!("work-{run}"));
        sh.create_dir(&work)?;
        sh.copy_file(instance.work_dir().join("inventory.json"), &work)?;
        let text = sh.read_file(&config)?.replace(instance.work_dir().as_str(), work.as_str());
        let run_config = bench_dir.join(format!("run-{run}.toml"));
        sh.write_file(&run_config, text)?;
        let t = Instant::now();
        let dump = cmd!(sh, "{bin} --json --config {run_config} dump").quiet().ignore_stderr().read()?;
        let restore = cmd!(sh, "{bin} --json --config {run_config} restore").quiet().ignore_stderr().read()?;
        tool.push(t.elapsed().as_secs_f64());
        sh.remove_path(&work)?;
        let figure = |doc: &str, name: &str| -> f64 {
            serde_json::from_str::<serde_json::Value>(doc)
                .ok()
                .and_then(|d| d["figures"][name].as_f64())
                .unwrap_or(f64::NAN)
        };
        eprintln!(
            "run {run}: manual {:.1} s, inmanta-migrate {:.1} s (dump {:.1} s; restore {:.1} s: load {:.1} s, analyze {:.1} s)",
            manual[run - 1],
            tool[run - 1],
            figure(&dump, "seconds"),
            figure(&restore, "seconds"),
            figure(&restore, "load_seconds"),
            figure(&restore, "analyze_seconds"),
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("\n| method | runs, s | mean s | ratio to manual |\n|---|---|---|---|");
    let show = |v: &[f64]| v.iter().map(|s| format!("{s:.1}")).collect::<Vec<_>>().join(", ");
    println!(
        "| manual: pg_dump -f x.sql, psql --single-transaction, ANALYZE | {} | {:.1} | 1.00 |",
        show(&manual),
        mean(&manual)
    );
    println!(
        "| inmanta-migrate dump + restore (-Fd -j2 -Z0, checksums, row counts) | {} | {:.1} | {:.2} |",
        show(&tool),
        mean(&tool),
        mean(&tool) / mean(&manual)
    );
    Ok(())
}

/// Adds three tables shaped like the big ones of a busy Inmanta database
/// (`shared/perf.md`: resourceaction 47 %, resource 30 %,
/// resourceaction_resource 19 %): uuid keys, jsonb, a secondary index each.
fn grow(instance: &Instance, size_mb: u64) -> Result<()> {
    let t = Instant::now();
    for (table, share) in [("bench_resourceaction", 47), ("bench_resource", 30), ("bench_resourceaction_resource", 19)]
    {
        let rows = size_mb * 1024 * 1024 * share / 100 / 400;
        let sql = format!(
            "SET ROLE inmanta; CREATE TABLE public.{table} AS \
             SELECT md5(g::text)::uuid AS id, md5((g % 97)::text)::uuid AS environment, now() AS started, \
                    jsonb_build_object('msg', repeat(md5(g::text), 8), 'level', 'INFO', 'n', g) AS attributes \
             FROM generate_series(1, {rows}) g; \
             ALTER TABLE public.{table} ADD PRIMARY KEY (id); \
             CREATE INDEX ON public.{table} (environment, started);"
        );
        instance.psql(Side::Old, "inmanta", &sql).context("growing the bench database")?;
    }
    eprintln!("grew the old database by about {size_mb} MiB in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// An empty target database, and a checkpoint so runs start alike.
fn reset_target(instance: &Instance) -> Result<()> {
    instance.psql(Side::New, "postgres", "DROP DATABASE IF EXISTS inmanta WITH (FORCE)")?;
    instance.psql(Side::New, "postgres", "CREATE DATABASE inmanta OWNER inmanta")?;
    instance.psql(Side::New, "postgres", "CHECKPOINT")?;
    instance.psql(Side::Old, "postgres", "CHECKPOINT")?;
    Ok(())
}
