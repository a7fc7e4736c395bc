//! Developer tasks of inmanta-migrate: `cargo xtask <command>`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod lab;

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
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Lab(cmd) => cmd.run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
