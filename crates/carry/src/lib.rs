//! `carry`: what an orchestrator holds outside its database, copied from the
//! old machine to the new one: the files and directories `[carry] files`
//! names (the server's inmanta.cfg and inmanta.d/, the service's
//! environment file, the JWT signing key, the inmanta user's ssh keys, the
//! pip configuration), each with its mode, owner and group, over the same
//! ssh as the service commands. Every file is verified by its sha256 on the
//! new machine. A file already there with the same content is left alone
//! (so a re-run goes on where it stopped); a different one is never
//! overwritten without `--replace`, which keeps it as
//! `<file>.before-inmanta-migrate`. Contents travel on stdin, never on a
//! command line, and are never printed.

use anyhow::{Context as _, bail};
use camino::{Utf8Path, Utf8PathBuf};
use migrate_core::{
    Checks, Context, Figures, NeedsOperator, Outcome, Side, Step, StepId,
    runner::{CmdOutput, Runner},
};
use serde::Serialize;

/// New side: copies the files `[carry] files` names from the old machine,
/// with their modes and owners, verified by checksum.
#[derive(Debug, Default, clap::Args)]
pub struct Carry {
    /// Replace a file that differs on the new machine (the one there is
    /// kept as `<file>.before-inmanta-migrate`).
    #[arg(long)]
    pub replace: bool,
}

/// Bigger files are no configuration: refused, to be moved another way.
const LARGEST: u64 = 64 * 1024 * 1024;

/// One file on one machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct FileFacts {
    mode: String,
    owner: String,
    group: String,
    bytes: u64,
    sha256: String,
}

/// One file to carry: where from, where to.
#[derive(Clone, Debug)]
struct Planned {
    from: Utf8PathBuf,
    to: Utf8PathBuf,
    facts: FileFacts,
}

/// What became of one file, for `--json`.
#[derive(Debug, Serialize)]
struct Carried {
    from: Utf8PathBuf,
    to: Utf8PathBuf,
    /// copied, already there, replaced, or differs (refused).
    outcome: &'static str,
    mode: String,
    owner: String,
    bytes: u64,
}

impl Step for Carry {
    const ID: StepId = StepId::Carry;

    fn runs_when_done(&self) -> bool {
        // A file changed on the old side since is carried again.
        true
    }

    fn describe(&self, cx: &Context) -> String {
        let files = &cx.config.carry.files;
        if files.is_empty() {
            return "nothing: `[carry] files` names none (the server's config, keys and environment file must then \
                    be on the new machine already)"
                .into();
        }
        let names: Vec<String> = files.iter().map(|f| f.from().to_string()).collect();
        format!(
            "copy {} from the old machine ({}) to the new one ({}) with modes and owners, verified by sha256",
            names.join(", "),
            cx.runner(Side::Old).place(),
            cx.runner(Side::New).place()
        )
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        if cx.config.carry.files.is_empty() {
            return checks;
        }
        match plan(cx).await {
            Ok(planned) => {
                let bytes: u64 = planned.iter().map(|p| p.facts.bytes).sum();
                checks.pass(
                    "files to carry",
                    format!("{} file(s), {bytes} bytes, readable on the old machine", planned.len()),
                )
            }
            Err(e) => checks.fail_on("files to carry", &e, "fix `[carry] files` or the old machine's ssh access"),
        }
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        if cx.config.carry.files.is_empty() {
            return Ok(Outcome::nothing_to_do(Self::NAME, "`[carry] files` names none"));
        }
        let new = cx.runner(Side::New);
        let mut carried = Vec::new();
        let mut refused = Vec::new();
        for file in plan(cx).await? {
            let there = facts(&new, &file.to).await?;
            let outcome = match there {
                Some(there) if there == file.facts => "already there",
                Some(there) if there.sha256 == file.facts.sha256 => {
                    set_attributes(&new, &file).await?;
                    "mode or owner set"
                }
                Some(_) if !self.replace => {
                    refused.push(file.to.to_string());
                    "differs (refused)"
                }
                Some(_) => {
                    copy(cx, &file, true).await?;
                    "replaced"
                }
                None => {
                    copy(cx, &file, false).await?;
                    "copied"
                }
            };
            cx.ui.info(Self::NAME, format!("{} -> {}: {outcome}", file.from, file.to));
            carried.push(Carried {
                from: file.from.clone(),
                to: file.to.clone(),
                outcome,
                mode: file.facts.mode.clone(),
                owner: format!("{}:{}", file.facts.owner, file.facts.group),
                bytes: file.facts.bytes,
            });
        }
        if !refused.is_empty() {
            return Err(NeedsOperator(format!(
                "{} file(s) on the new machine differ from the old machine's and were left as they are: {}; \
                 compare them, then `inmanta-migrate carry --replace` (each is kept as <file>.before-inmanta-migrate)",
                refused.len(),
                refused.join(", ")
            ))
            .into());
        }
        let count = |what: &str| carried.iter().filter(|c| c.outcome == what).count();
        let bytes: u64 = carried.iter().map(|c| c.bytes).sum();
        Ok(Outcome::done(
            Self::NAME,
            format!(
                "{} file(s) on the new machine as on the old one ({} copied, {} replaced, {} already there), \
                 verified by sha256",
                carried.len(),
                count("copied"),
                count("replaced"),
                count("already there")
            ),
        )
        .figures(Figures { bytes: Some(bytes), ..Figures::default() })
        .details(carried))
    }
}

/// `check`'s item: which of the files `[carry] files` names the new machine
/// has as the old one does, and which it lacks (names only, never content).
pub async fn preflight(cx: &Context, checks: &mut Checks) {
    let name = "files outside the database";
    if cx.config.carry.files.is_empty() {
        checks.pass(
            name,
            "`[carry] files` names none: the new machine must have the server's config, JWT key and ssh keys already",
        );
        return;
    }
    let planned = match plan(cx).await {
        Ok(planned) => planned,
        Err(e) => return checks.fail_on(name, &e, "fix `[carry] files` or the old machine's ssh access"),
    };
    let new = cx.runner(Side::New);
    let (mut missing, mut differ) = (Vec::new(), Vec::new());
    for file in &planned {
        match facts(&new, &file.to).await {
            Ok(Some(there)) if there == file.facts => {}
            Ok(Some(_)) => differ.push(file.to.to_string()),
            Ok(None) => missing.push(file.to.to_string()),
            Err(e) => return checks.fail_on(name, &e, "fix `new.host`"),
        }
    }
    if missing.is_empty() && differ.is_empty() {
        checks.pass(name, format!("all {} file(s) on the new machine as on the old one", planned.len()));
    } else {
        let mut detail = Vec::new();
        if !missing.is_empty() {
            detail.push(format!("missing on the new machine: {}", missing.join(", ")));
        }
        if !differ.is_empty() {
            detail.push(format!("different there: {}", differ.join(", ")));
        }
        checks.warn(
            name,
            detail.join("; "),
            "`inmanta-migrate carry` copies them (`migrate` does, before start-server); a different file only with --replace",
        );
    }
}

/// Every file the entries name on the old machine, a directory's files
/// below it, each with where it goes and its facts.
async fn plan(cx: &Context) -> anyhow::Result<Vec<Planned>> {
    let old = cx.runner(Side::Old);
    let mut planned = Vec::new();
    for entry in &cx.config.carry.files {
        let (from, to) = (entry.from(), entry.to());
        let out = run(&old, &["find", from.as_str(), "-type", "f"]).await;
        let listed = match out {
            Ok(out) => out.stdout,
            Err(e) => bail!("cannot read {from} on {}: {e:#}", old.place()),
        };
        let mut files: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
        files.sort_unstable();
        if files.is_empty() {
            bail!("{from} on {} holds no file", old.place());
        }
        for file in files {
            let file = Utf8PathBuf::from(file);
            let below = file.strip_prefix(from).unwrap_or(Utf8Path::new(""));
            let target = if below.as_str().is_empty() { to.clone() } else { to.join(below) };
            let facts = facts(&old, &file).await?.with_context(|| format!("{file} vanished on {}", old.place()))?;
            if facts.bytes > LARGEST {
                bail!(
                    "{file} on {} has {} bytes: carry is for configuration, move it another way",
                    old.place(),
                    facts.bytes
                );
            }
            planned.push(Planned { from: file, to: target, facts });
        }
    }
    Ok(planned)
}

/// Runs a command and fails on a non-zero exit, with its stderr.
async fn run(runner: &Runner, argv: &[&str]) -> anyhow::Result<CmdOutput> {
    let out = runner.cmd(argv).output().await?;
    if !out.success() {
        bail!("`{}` exited {}: {}", argv.join(" "), out.code, out.stderr.trim());
    }
    Ok(out)
}

/// A file's mode, owner, group, size and sha256 on one machine; None when
/// it does not exist.
async fn facts(runner: &Runner, path: &Utf8Path) -> anyhow::Result<Option<FileFacts>> {
    let script = "[ -e \"$1\" ] || exit 3; stat -c '%a %U %G %s' -- \"$1\" && sha256sum -- \"$1\"";
    let out = runner.cmd(&["sh", "-c", script, "sh", path.as_str()]).output().await?;
    if out.code == 3 {
        return Ok(None);
    }
    if !out.success() {
        bail!("cannot read {path} on {}: {}", runner.place(), out.stderr.trim());
    }
    let mut lines = out.stdout.lines();
    let stat: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    let sha256 = lines.next().and_then(|l| l.split_whitespace().next()).unwrap_or_default().to_owned();
    let [mode, owner, group, bytes] = stat[..] else {
        bail!("cannot read the mode and owner of {path} on {}: {:?}", runner.place(), out.stdout);
    };
    Ok(Some(FileFacts {
        mode: mode.to_owned(),
        owner: owner.to_owned(),
        group: group.to_owned(),
        bytes: bytes.parse().unwrap_or(0),
        sha256,
    }))
}

/// Copies one file: read as base64 on the old machine, written next to its
/// place on the new one with its mode and owner, checked, then moved there
/// (with `keep`, the file there first kept as `<file>.before-inmanta-migrate`).
async fn copy(cx: &Context, file: &Planned, keep: bool) -> anyhow::Result<()> {
    let (old, new) = (cx.runner(Side::Old), cx.runner(Side::New));
    let content = run(&old, &["base64", "-w0", "--", file.from.as_str()]).await?.stdout;
    let script = "set -e; f=$1; t=\"$f.inmanta-migrate-part\"; mkdir -p -- \"$(dirname -- \"$f\")\"; \
                  base64 -d > \"$t\"; chmod \"$2\" -- \"$t\"; chown \"$3:$4\" -- \"$t\"; \
                  [ \"$(sha256sum -- \"$t\" | cut -d' ' -f1)\" = \"$5\" ] || { rm -f -- \"$t\"; echo 'checksum differs' >&2; exit 4; }; \
                  if [ \"$6\" = keep ] && [ -e \"$f\" ]; then mv -f -- \"$f\" \"$f.before-inmanta-migrate\"; fi; \
                  mv -f -- \"$t\" \"$f\"";
    let f = &file.facts;
    let keep = if keep { "keep" } else { "" };
    let argv = ["sh", "-c", script, "sh", file.to.as_str(), &f.mode, &f.owner, &f.group, &f.sha256, keep];
    let out = new.cmd(&argv).stdin(content.into_bytes()).output().await?;
    if !out.success() {
        let why = out.stderr.trim();
        let hint = if why.contains("invalid user") || why.contains("invalid group") {
            format!(
                "; create user {} and group {} on the new machine first (Inmanta's packages create them)",
                f.owner, f.group
            )
        } else {
            String::new()
        };
        bail!("cannot write {} on {}: {why}{hint}", file.to, new.place());
    }
    Ok(())
}

/// The same content already there: only its mode and owner are set.
async fn set_attributes(new: &Runner, file: &Planned) -> anyhow::Result<()> {
    let f = &file.facts;
    let owner = format!("{}:{}", f.owner, f.group);
    run(new, &["chmod", &f.mode, "--", file.to.as_str()]).await?;
    run(new, &["chown", &owner, "--", file.to.as_str()]).await.map(drop)
}
