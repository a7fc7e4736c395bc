//! `cargo xtask fuzz`: runs each cargo-fuzz (libFuzzer) target of `fuzz/`
//! for a set time, from the seeds in `fuzz/seeds/<target>` (real files the
//! lab produced; the config target also reads `config/`) and a growing
//! corpus kept in the lab cache, outside the repo. A crash stops it with the
//! input's path; its regression test then goes next to the code it broke.
//!
//! cargo-fuzz is installed into the lab cache. It wants a nightly compiler
//! for its `-Z` flags and this machine has only stable (no toolchain can be
//! fetched), so it runs with `RUSTC_BOOTSTRAP=1` and no sanitizer: safe Rust
//! needs no AddressSanitizer to show a panic, and a panic is what we look for.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use lab::LabRoot;
use xshell::{Shell, cmd};

const CARGO_FUZZ: &str = "0.13.2";
/// Every target of `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: [&str; 6] = ["config", "journal", "inventory", "manifest", "inmanta_cfg", "api"];

#[derive(Args)]
pub struct Fuzz {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The targets to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
}

impl Fuzz {
    /// What CI runs: every target, briefly, from its corpus.
    pub fn short() -> Fuzz {
        Fuzz { seconds: 10, targets: Vec::new() }
    }

    pub fn run(self, sh: &Shell) -> Result<()> {
        let lab = LabRoot::from_env()?;
        let root = lab.cache_dir().join("cargo-fuzz");
        let cargo_fuzz = root.join("bin/cargo-fuzz");
        if !sh.path_exists(&cargo_fuzz) {
            cmd!(sh, "cargo install --quiet --locked cargo-fuzz --version {CARGO_FUZZ} --root {root}")
                .run()
                .context("installing cargo-fuzz")?;
        }
        let path = format!("{}:{}", root.join("bin"), std::env::var("PATH").unwrap_or_default());
        let _path = sh.push_env("PATH", path);
        let _bootstrap = sh.push_env("RUSTC_BOOTSTRAP", "1");
        let targets: Vec<&str> =
            if self.targets.is_empty() { TARGETS.to_vec() } else { self.targets.iter().map(String::as_str).collect() };
        let seconds = self.seconds.to_string();
        let build = Instant::now();
        let target_dir = lab.build_dir("fuzz");
        cmd!(sh, "cargo fuzz build --fuzz-dir fuzz --sanitizer none --target-dir {target_dir}")
            .run()
            .context("building the fuzz targets")?;
        let mut table = vec![format!("  {:<12} {:>6.1} s", "(build)", build.elapsed().as_secs_f64())];
        for target in targets {
            let corpus = lab.cache_dir().join("fuzz/corpus").join(target);
            let artifacts = lab.cache_dir().join("fuzz/artifacts").join(target);
            sh.create_dir(&corpus)?;
            sh.create_dir(&artifacts)?;
            let mut seeds = vec![format!("fuzz/seeds/{target}")];
            if target == "config" {
                seeds.push("config".to_owned());
            }
            let log = lab.cache_dir().join("fuzz").join(format!("{target}.log"));
            let artifact_prefix = format!("-artifact_prefix={artifacts}/");
            let max_time = format!("-max_total_time={seconds}");
            let start = Instant::now();
            eprintln!("fuzz: {target} for {seconds} s");
            let run = cmd!(
                sh,
                "cargo fuzz run --fuzz-dir fuzz --sanitizer none --target-dir {target_dir} {target} {corpus} {seeds...} -- {max_time} {artifact_prefix} -print_final_stats=1"
            )
            .quiet()
            .ignore_status()
            .output()?;
            let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
            sh.write_file(&log, &stderr)?;
            if !run.status.success() {
                let crash = stderr.lines().rfind(|l| l.contains("Test unit written to")).unwrap_or("");
                bail!("fuzz target {target} failed: {crash}\nits log: {log}");
            }
            let stat = |name: &str| {
                stderr
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("stat::{name}:")).map(|v| v.trim().to_owned()))
                    .unwrap_or_else(|| "?".to_owned())
            };
            let files = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
            table.push(format!(
                "  {target:<12} {:>6.1} s  {:>10} runs  corpus {files:>5}  crashes 0",
                start.elapsed().as_secs_f64(),
                stat("number_of_executed_units"),
            ));
        }
        eprintln!("fuzz: every target ran without a crash\n{}", table.join("\n"));
        Ok(())
    }
}
