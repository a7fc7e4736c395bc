//! The `inmanta-migrate` binary: argument parsing, the commands around the
//! steps (whose one list is `steps`), and the output and exit-code contract.

mod check;
mod generate;
mod init;
mod migrate;
mod plan;
mod report;
mod status;
mod steps;

use std::process::ExitCode;

use camino::Utf8PathBuf;
use clap::{Parser, Subcommand};
use migrate_core::{
    ChecksFailed, Config, Context, Exit, Failure, Outcome, OutcomeStatus,
    contract::{self, Document, Failed, FailedStatus, Finished},
    ui::Ui,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  done, or nothing to do
  1  failed
  2  bad usage or config
  3  stopped for an operator: a check failed, a dry-run showed differences, rollback would
     lose work (without --force), or the old server drives an environment";

/// Moves a running Inmanta orchestrator (server and PostgreSQL database) to
/// another machine or major version, one resumable step at a time.
#[derive(Debug, Parser)]
#[command(name = "inmanta-migrate", version, after_help = EXIT_CODES, max_term_width = 100)]
struct Cli {
    /// The migration's config file.
    #[arg(long, short, global = true, env = "INMANTA_MIGRATE_CONFIG", default_value = "inmanta-migrate.toml")]
    config: Utf8PathBuf,

    /// Machine-readable output: one JSON document on stdout, events as JSON
    /// lines on stderr.
    #[arg(long, global = true)]
    json: bool,

    /// More detail on stderr (-v: debug, -vv: trace).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a first config for two orchestrators from what it finds on
    /// both sides, marking what it could not find; then run `check`.
    Init(init::InitArgs),
    /// Preflight: checks everything that can be checked before anything
    /// changes (config, APIs, tokens, versions, databases, tools, disk,
    /// target database, new server stopped) and reports every failure.
    Check(check::CheckArgs),
    /// Prints what each remaining step would do, without doing it.
    Plan,
    /// Shows where the migration stands, from the journal.
    Status,
    /// Runs the remaining steps in order (after a preflight); resumable.
    Migrate(migrate::MigrateArgs),
    #[command(flatten)]
    Step(steps::StepCommand),
    /// Prints the completion script for a shell (bash: save it as
    /// /etc/bash_completion.d/inmanta-migrate).
    Completions(generate::CompletionsArgs),
    /// Writes the man pages, one per subcommand, into a folder (after
    /// `cargo install`: /usr/local/share/man/man1).
    ManPages(generate::ManPagesArgs),
}

fn main() -> ExitCode {
    // Everything this process and its children create is private (0600/0700).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let ui = Ui::new(cli.json);
    // Generated from the CLI definition alone: no config is read.
    match &cli.command {
        Command::Completions(args) => match generate::print(&generate::completions(args)) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) => return finish(&ui, Err(e)),
        },
        Command::ManPages(args) => return finish(&ui, generate::man_pages(args)),
        _ => {}
    }
    // Single-threaded on purpose: see migrate_core::runner (PR_SET_PDEATHSIG).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    // It writes the config, so it reads none.
    if let Command::Init(args) = &cli.command {
        return finish(&ui, runtime.block_on(init::run(args, &cli.config)));
    }
    let result = runtime.block_on(run(cli.command, cli.config, &ui));
    finish(&ui, result)
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("INMANTA_MIGRATE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "warn,inmanta_migrate={level},migrate_core={level},inmanta_api={level}"
        ))
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

async fn run(command: Command, config_path: Utf8PathBuf, ui: &Ui) -> anyhow::Result<Outcome> {
    // The crash tests' switches: a bad value stops here, before anything changes.
    failpoint::init().map_err(migrate_core::error::UsageError)?;
    let cx = Context::new(Config::load(&config_path)?, ui.clone())?;
    let result = match command {
        Command::Check(args) => check::run(&cx, &args).await,
        Command::Plan => plan::run(&cx).await,
        Command::Status => status::run(&cx).await,
        Command::Migrate(args) => migrate::run(&cx, &args).await,
        Command::Step(step) => step.execute(&cx).await,
        Command::Completions(_) | Command::ManPages(_) | Command::Init(_) => {
            unreachable!("handled before the config is read")
        }
    };
    report::refresh(&cx);
    result
}

/// Prints the outcome (or the error) and turns it into the exit code.
fn finish(ui: &Ui, result: anyhow::Result<Outcome>) -> ExitCode {
    // What the error is, read once: its exit code, kind, text and advice.
    let result = result.map_err(|e| {
        let failure = Failure::of(&e);
        (e, failure)
    });
    let code = match &result {
        Ok(outcome) if outcome.status == OutcomeStatus::NeedsOperator => Exit::Operator,
        Ok(_) => Exit::Done,
        Err((_, failure)) => failure.exit_code(),
    };
    if ui.is_json() {
        let exit_code = code as u8;
        let document = match result {
            Ok(outcome) => {
                Document::Finished(Box::new(Finished { schema_version: contract::VERSION, outcome, exit_code }))
            }
            Err((e, failure)) => Document::Failed(Failed {
                schema_version: contract::VERSION,
                status: if code == Exit::Operator { FailedStatus::NeedsOperator } else { FailedStatus::Failed },
                error: failure.shown(),
                kind: failure.kind,
                advice: failure.way_on().to_owned(),
                checks: e.downcast_ref::<ChecksFailed>().map(|c| c.0.clone()),
                exit_code,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&document).expect("JSON"));
        return ExitCode::from(exit_code);
    }
    match &result {
        Ok(outcome) => {
            if let Some(text) = &outcome.text {
                println!("{text}");
            }
            let mark = match outcome.status {
                OutcomeStatus::Done => ui.paint_stdout("32", "done:"),
                OutcomeStatus::NothingToDo => ui.paint_stdout("32", "nothing to do:"),
                OutcomeStatus::Partial => ui.paint_stdout("32", "done (in part):"),
                OutcomeStatus::NeedsOperator => ui.paint_stdout("33", "needs an operator:"),
            };
            println!("{} {mark} {}", ui.paint_stdout("1", &outcome.step), outcome.summary);
        }
        Err((_, failure)) => eprintln!("{} {}", ui.paint("31", "error:"), failure.shown()),
    }
    ExitCode::from(code as u8)
}
