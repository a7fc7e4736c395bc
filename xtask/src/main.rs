//! Developer tasks of inmanta-migrate: `cargo xtask <command>`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod ci;
mod cpu;
mod demo;
mod dist;
mod downtime;
mod fuzz;
mod lab;
#[cfg(test)]
mod tidy;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks of inmanta-migrate")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The lab of real inmanta servers and PostgreSQL clusters on this machine.
    Lab(lab::Lab),
    /// Brings the lab up and migrates it end to end, printing the report.
    Demo(demo::Demo),
    /// Everything CI runs: fmt, clippy, tests, tests with real servers.
    Ci(ci::Ci),
    /// Benchmarks that print ratios against the manual procedure.
    Bench(bench::Bench),
    /// The portable binary (glibc 2.28), its man pages and completions, and
    /// the .deb and .rpm, in one folder.
    Dist(dist::Dist),
    /// Runs each fuzz target of `fuzz/` (cargo-fuzz, libFuzzer) for a set
    /// time from its seeds and corpus.
    Fuzz(fuzz::Fuzz),
}

fn main() -> ExitCode {
    let result = xshell::Shell::new().map_err(anyhow::Error::from).and_then(|sh| {
        // Run from the workspace root, wherever cargo was called.
        sh.change_dir(env!("CARGO_MANIFEST_DIR"));
        sh.change_dir("..");
        match Cli::parse().command {
            Command::Lab(cmd) => cmd.run(),
            Command::Demo(cmd) => cmd.run(&sh),
            Command::Ci(cmd) => cmd.run(&sh),
            Command::Bench(cmd) => cmd.run(&sh),
            Command::Dist(cmd) => cmd.run(&sh),
            Command::Fuzz(cmd) => cmd.run(&sh),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the tool (release or debug) and returns where cargo put it: the
/// shell's `CARGO_TARGET_DIR` (`ci` sets one in the lab cache), else
/// `target/`.
fn build_tool(sh: &xshell::Shell, release: bool) -> anyhow::Result<camino::Utf8PathBuf> {
    let flag = release.then_some("--release");
    xshell::cmd!(sh, "cargo build --quiet {flag...} --bin inmanta-migrate").run()?;
    let target = sh.var("CARGO_TARGET_DIR").map_or_else(|_| sh.current_dir().join("target"), Into::into);
    let profile = if release { "release" } else { "debug" };
    Ok(camino::Utf8PathBuf::try_from(target.join(profile).join("inmanta-migrate"))?)
}
