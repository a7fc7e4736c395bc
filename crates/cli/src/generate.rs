//! What is generated from the CLI definition and never written by hand:
//! shell completions and the man pages (one per subcommand). The packages
//! that `cargo xtask dist` builds carry both.

use std::io::Write;

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;
use clap::{Args, CommandFactory};
use migrate_core::{Figures, Outcome};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManPagesArgs {
    /// The folder to write them to (made if absent); its inmanta-migrate*.1
    /// files are replaced.
    dir: Utf8PathBuf,
}

/// The completion script for one shell.
pub fn completions(args: &CompletionsArgs) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut crate::Cli::command(), "inmanta-migrate", &mut script);
    script
}

/// Writes it to stdout; a reader that went away early (`| head`) is not an
/// error.
pub fn print(bytes: &[u8]) -> Result<()> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// `inmanta-migrate.1` and `inmanta-migrate-SUBCOMMAND.1` for every visible
/// subcommand.
pub fn man_pages(args: &ManPagesArgs) -> Result<Outcome> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {dir}"))?;
    clap_mangen::generate_to(crate::Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages to {dir}"))?;
    let pages = crate::Cli::command().get_subcommands().filter(|s| !s.is_hide_set()).count() + 1;
    Ok(Outcome::done("man-pages", format!("{pages} man pages in {dir}"))
        .figures(Figures { pages: Some(pages), ..Figures::default() }))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every visible subcommand with its long flags: what the completions
    /// and man pages must name.
    fn surface() -> Vec<(String, Vec<String>)> {
        let mut cli = crate::Cli::command();
        cli.build();
        let flags = |c: &clap::Command| -> Vec<String> {
            c.get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect()
        };
        let mut all = vec![("inmanta-migrate".to_owned(), flags(&cli))];
        for sub in cli.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            all.push((sub.get_name().to_owned(), flags(sub)));
        }
        all
    }

    #[test]
    fn the_surface_is_what_the_cli_has() {
        let surface = surface();
        let names: Vec<&str> = surface.iter().map(|(n, _)| n.as_str()).collect();
        // man-pages too: an operator who installs from a checkout needs it.
        for expected in ["check", "migrate", "precopy", "env-reconcile", "completions", "man-pages"] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
        let migrate = &surface.iter().find(|(n, _)| n == "migrate").unwrap().1;
        assert!(migrate.contains(&"--yes".to_owned()) && migrate.contains(&"--config".to_owned()), "{migrate:?}");
    }

    #[test]
    fn completions_name_every_subcommand_and_flag() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let script = String::from_utf8(completions(&CompletionsArgs { shell })).unwrap();
            for (sub, flags) in surface() {
                assert!(script.contains(&sub), "{shell}: no {sub}");
                for flag in flags {
                    // fish writes `-l yes` for `--yes`.
                    let fish = format!("-l {}", &flag[2..]);
                    assert!(script.contains(&flag) || script.contains(&fish), "{shell}: {sub} without {flag}");
                }
            }
        }
    }

    #[test]
    fn a_man_page_per_subcommand_with_its_flags() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::from_path_buf(tmp.path().join("man1")).unwrap();
        let outcome = man_pages(&ManPagesArgs { dir: dir.clone() }).unwrap();
        let surface = surface();
        assert_eq!(outcome.figures.pages, Some(surface.len()));
        for (sub, flags) in surface {
            let file = if sub == "inmanta-migrate" {
                dir.join("inmanta-migrate.1")
            } else {
                dir.join(format!("inmanta-migrate-{sub}.1"))
            };
            let page = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
            for flag in flags {
                // roff escapes each '-' as '\-'.
                assert!(page.contains(&flag.replace('-', r"\-")), "{file} without {flag}");
            }
        }
    }
}
