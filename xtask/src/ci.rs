//! `cargo xtask ci`: everything CI checks, in the order that fails fastest:
//! formatting, lints, the lab's prerequisites (PostgreSQL, venvs), the tests
//! of `cargo test` (fakes, and a scratch PostgreSQL, which may not skip
//! here), the packages and their checks, a short fuzz of each target, the
//! tests against real inmanta-core servers, and a small bench.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use lab::LabRoot;
use xshell::{Shell, cmd};

#[derive(Args)]
pub struct Ci {
    /// Skip the tests that need real servers.
    #[arg(long)]
    fast: bool,
}

/// Lab tests at a time in CI.
const LAB_SLOTS: u32 = 2;

/// The versions the end-to-end tests use (15.0 and later run in the lab's
/// Debian 13 root, which `prepare` builds for them).
pub const E2E_VERSIONS: [&str; 8] = ["8.7.6", "11.5.5", "14.0.0", "15.5.9", "18.2.0", "18.4.0", "19.0.0", "20.1.0"];

impl Ci {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let start = Instant::now();
        // The workspace's builds outside the checkout, as the lab's other
        // caches: a re-run on a clean clone rebuilds only the workspace.
        let lab = LabRoot::from_env()?;
        trim_builds(&lab)?;
        let _target = sh.push_env("CARGO_TARGET_DIR", lab.build_dir("workspace"));
        let mut times = Vec::new();
        let mut lab_parts = lab::Timings::default();
        let mut part = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            eprintln!("\n== {name}");
            let t = Instant::now();
            f()?;
            times.push((name.to_owned(), t.elapsed().as_secs_f64()));
            Ok(())
        };
        part("rustfmt", &mut || Ok(cmd!(sh, "cargo fmt --all -- --check").run()?))?;
        part("clippy", &mut || Ok(cmd!(sh, "cargo clippy --workspace --all-targets --quiet -- -D warnings").run()?))?;
        if !self.fast {
            part("lab prerequisites", &mut || {
                lab::prepare_timed(&LabRoot::from_env()?, &E2E_VERSIONS, &mut lab_parts)?;
                // The ssh runner is tested against a real sshd.
                if !sh.path_exists("/usr/sbin/sshd") {
                    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
                    cmd!(sh, "apt-get update -q").run()?;
                    cmd!(sh, "apt-get install -y -q openssh-server").run()?;
                }
                Ok(())
            })?;
        }
        // With the prerequisites installed, the tests that need only a
        // PostgreSQL server run here and may not skip themselves.
        part("tests", &mut || {
            let _need = (!self.fast).then(|| sh.push_env(lab::NEED_POSTGRES, "1"));
            Ok(cmd!(sh, "cargo test --workspace --quiet").run()?)
        })?;
        if !self.fast {
            part("dist: portable binary, packages, their checks", &mut || crate::dist::Dist::checked().run(sh))?;
            part("fuzz, each target briefly", &mut || crate::fuzz::Fuzz::short().run(sh))?;
            // Two lab tests at a time (a test that must be alone takes both
            // slots, see tests/integration/support/lab.rs): one leaves the
            // two cores partly idle.
            part("tests with real servers", &mut || {
                let _slots = sh.push_env("INMANTA_MIGRATE_LAB_SLOTS", LAB_SLOTS.to_string());
                let threads = format!("--test-threads={LAB_SLOTS}");
                Ok(cmd!(sh, "cargo test --workspace --quiet -- --ignored {threads}").run()?)
            })?;
            part("bench downtime, small", &mut || crate::downtime::Downtime::smoke().run(sh))?;
        }
        eprintln!("\n== timings");
        for (name, seconds) in &times {
            eprintln!("  {name:<26} {seconds:>7.1} s");
        }
        eprintln!("  {:<26} {:>7.1} s", "total", start.elapsed().as_secs_f64());
        if !lab_parts.parts.is_empty() {
            eprintln!("  lab prerequisites, by part:\n{}", lab_parts.table());
        }
        Ok(())
    }
}

/// Each clone builds the workspace's own crates anew beside the earlier
/// clones' (cargo keys them by path), so the build folders only grow:
/// past this size they are removed and built again once.
const BUILDS_MAX_BYTES: u64 = 30 << 30;

fn trim_builds(lab: &LabRoot) -> Result<()> {
    let dir = lab.build_dir("");
    let bytes = size_of(dir.as_std_path());
    if bytes > BUILDS_MAX_BYTES {
        eprintln!(
            "ci: the build folders {dir} hold {} GiB (more than {}): removing them",
            bytes >> 30,
            BUILDS_MAX_BYTES >> 30
        );
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// Bytes of the files under `path` (0 where there is nothing to read).
fn size_of(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map_or(0, |entries| entries.flatten().map(|e| size_of(&e.path())).sum())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_count_every_file_below() {
        let dir = std::env::temp_dir().join(format!("xtask-size-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("one"), "abc").unwrap();
        std::fs::write(dir.join("a/b/two"), "defgh").unwrap();
        let bytes = super::size_of(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(bytes, 8);
        assert_eq!(super::size_of(&dir), 0, "nothing there");
    }
}
