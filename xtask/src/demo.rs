//! `cargo xtask demo`: brings the lab up (old 8.7.6 with seeded environments,
//! new 14.0.0 empty) and migrates it end to end with the real binary, then
//! prints the report.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use lab::{LabRoot, Ports, UpOptions};
use xshell::Shell;

#[derive(Args)]
pub struct Demo {
    /// Leave the lab running afterwards (`cargo xtask lab status` / `down`).
    #[arg(long)]
    keep: bool,
    /// inmanta-core of the old server.
    #[arg(long, default_value = lab::DEFAULT_OLD_VERSION)]
    old: String,
    /// inmanta-core of the new server.
    #[arg(long, default_value = lab::DEFAULT_NEW_VERSION)]
    new: String,
    /// Number of seeded environments.
    #[arg(long, default_value_t = lab::DEFAULT_ENVS)]
    envs: usize,
}

impl Demo {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let start = Instant::now();
        let root = LabRoot::from_env()?;
        let options = UpOptions {
            name: lab::DEFAULT_INSTANCE.into(),
            old: self.old,
            new: self.new,
            envs: self.envs,
            ports: Some(Ports::DEFAULT),
            ..UpOptions::default()
        };
        let instance = lab::up(&root, &options)?;
        let bin = crate::build_tool(sh, false)?;
        let config = instance.config_path();
        eprintln!("\n== inmanta-migrate migrate --config {config} --yes --release (on {})\n", instance.tool_machine());
        // Where operators run it: on the new machine (the lab's Debian 13
        // root for a 15+ server).
        let migrated = instance
            .tool_command(&bin, instance.dir(), &[])?
            .args(["--config", config.as_str(), "migrate", "--yes", "--release"])
            .status()
            .map_err(anyhow::Error::from)
            .and_then(|s| if s.success() { Ok(()) } else { bail!("exit {s}") });
        let report = instance.work_dir().join("report.md");
        if let Ok(text) = sh.read_file(&report) {
            println!("\n{text}");
            println!("report: {report}");
        }
        if self.keep {
            println!("the lab keeps running: `cargo xtask lab status`, `cargo xtask lab down`");
        } else {
            instance.down(false)?;
            println!("the lab is stopped (`cargo xtask demo --keep` leaves it running)");
        }
        println!("demo took {:.0} s", start.elapsed().as_secs_f64());
        if migrated.is_err() {
            bail!("the migration did not finish: see the report above");
        }
        Ok(())
    }
}
