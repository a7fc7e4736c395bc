//! Installs what the lab needs: Debian packages, the Debian 13 root when a
//! version needs it, one venv per inmanta-core version (in the root for
//! 15.0 and later), a local package index. Idempotent; cached under
//! `<root>/cache` and `<root>/roots`.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use crate::util::{self, shell};
use crate::{LabRoot, Machine, RootFs, STD_MODULE_VERSION, Timings, major};

/// What `prepare` found or installed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Toolchain {
    /// Directory of this machine's initdb, pg_ctl, psql, pg_dump, pg_restore.
    pub pg_bin_dir: Utf8PathBuf,
    /// The Debian 13 root, when a version needs it.
    pub root: Option<Utf8PathBuf>,
    /// version -> venv directory (the same path inside the root).
    pub venvs: BTreeMap<String, Utf8PathBuf>,
    /// `file:///.../simple`.
    pub index_url: String,
}

impl Toolchain {
    pub fn venv(&self, version: &str) -> &Utf8Path {
        &self.venvs[version]
    }
}

/// How to run programs on one machine of the lab: the argv prefix that gets
/// there (empty on this machine) and where PostgreSQL's programs are. A
/// booted machine's files are the root's: the lab's own one-shot programs
/// (initdb, psql through the shared socket dir) run there by chroot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exec {
    pub enter: Vec<String>,
    pub pg_bin_dir: Utf8PathBuf,
}

impl Exec {
    pub fn of(lab: &LabRoot, machine: Machine, host_pg_bin_dir: &Utf8Path) -> Exec {
        match machine {
            Machine::Host => Exec { enter: Vec::new(), pg_bin_dir: host_pg_bin_dir.to_path_buf() },
            Machine::Trixie | Machine::Booted => {
                let root = RootFs::of(lab);
                Exec { enter: root.enter(&[]), pg_bin_dir: root.pg_bin_dir() }
            }
        }
    }
}

/// The pip requirements of the venv of one inmanta-core version, with the
/// pins the rehearsal found necessary.
pub(crate) fn venv_requirements(version: &str) -> Vec<String> {
    let mut reqs = vec![format!("inmanta-core=={version}")];
    let m = major(version);
    if m <= 10 {
        // 8.7.6 + ruamel.yaml >= 0.18: the dist-info is named ruamel_yaml-*, which
        // 8.x's pkg_resources-based check does not match -> every server-side
        // compile fails with "Constraint ruamel.yaml~=0.17 is not installed".
        // (Verified for 8.7.6; 9.x/10.x assumed alike.)
        reqs.push("ruamel.yaml==0.17.21".to_string());
    }
    if m >= 12 {
        // 14.0.0 imports importlib_metadata without declaring it: the CLI does
        // not even start without it. (Verified for 14.0.0; harmless elsewhere.)
        reqs.push("importlib_metadata".to_string());
    }
    reqs
}

/// The PostgreSQL major a machine has of its own: the host's
/// (`host_pg_bin_dir` is `/usr/lib/postgresql/<major>/bin`), the root's.
pub(crate) fn own_pg_major(machine: Machine, host_pg_bin_dir: &Utf8Path) -> Option<u32> {
    match machine {
        Machine::Host => host_pg_bin_dir.parent()?.file_name()?.parse().ok(),
        Machine::Trixie | Machine::Booted => Some(crate::rootfs::PG_MAJOR),
    }
}

/// The newest `/usr/lib/postgresql/<major>/bin` that has initdb.
pub(crate) fn find_pg_bin_dir() -> Option<Utf8PathBuf> {
    let mut best: Option<(u32, Utf8PathBuf)> = None;
    for entry in fs::read_dir("/usr/lib/postgresql").ok()?.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(m) = name.parse::<u32>() else {
            continue;
        };
        let bin = Utf8PathBuf::from(format!("/usr/lib/postgresql/{name}/bin"));
        if bin.join("initdb").exists() && best.as_ref().is_none_or(|(b, _)| m > *b) {
            best = Some((m, bin));
        }
    }
    best.map(|(_, b)| b)
}

fn user_exists(name: &str) -> bool {
    fs::read_to_string("/etc/passwd").map(|p| p.lines().any(|l| l.split(':').next() == Some(name))).unwrap_or(false)
}

/// `apt-get update` and `apt-get install` of Debian packages on this machine.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    eprintln!("lab: apt-get install {}", packages.join(" "));
    let sh = shell()?;
    cmd!(sh, "apt-get update -q").quiet().ignore_stdout().run().context("apt-get update")?;
    cmd!(sh, "apt-get install -y -q --no-install-recommends {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .quiet()
        .ignore_stdout()
        .run()
        .context("apt-get install")
}

/// Installs Debian's `postgresql`, `git` (and, for a lab with a Debian 13
/// root, `debootstrap`, `openssh-server` and `systemd-container`) when absent.
fn ensure_apt(with_root: bool, timings: &mut Timings) -> Result<()> {
    let mut missing = Vec::new();
    if find_pg_bin_dir().is_none() || !user_exists("postgres") {
        missing.push("postgresql");
    }
    if util::which("git").is_none() {
        missing.push("git");
    }
    if with_root && util::which("debootstrap").is_none() {
        missing.push("debootstrap");
    }
    // A host-side server is reached from the root over ssh, as from another machine.
    if with_root && !Utf8Path::new("/usr/sbin/sshd").exists() {
        missing.push("openssh-server");
    }
    // The root also boots as machines of their own.
    if with_root && util::which("systemd-nspawn").is_none() {
        missing.push("systemd-container");
    }
    let t0 = Instant::now();
    if !missing.is_empty() {
        // postgresql creates cluster 15/main but cannot start it without
        // systemd ("policy-rc.d denied execution of start"); the lab ignores it.
        apt_install(&missing)?;
    }
    timings.add("apt", t0.elapsed());
    if find_pg_bin_dir().is_none() {
        bail!("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin after installing postgresql");
    }
    if util::which("runuser").is_none() || util::which("setsid").is_none() {
        bail!("runuser and setsid (util-linux) are needed");
    }
    Ok(())
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct VenvMarker {
    requirements: Vec<String>,
}

/// Creates (or reuses) the venv of one inmanta-core version, with `python`
/// run through `enter` (the machine the version runs on).
fn ensure_venv(
    enter: &[String],
    python: &Utf8Path,
    venv: &Utf8Path,
    version: &str,
    pip_cache: &Utf8Path,
) -> Result<Option<Duration>> {
    venv_of(enter, python, venv, venv_requirements(version), pip_cache, "bin/inmanta", |sh| {
        // A record of what got resolved, for reproducing a run.
        let pip = venv.join("bin/pip");
        if let Ok(freeze) = util::cmd_in(sh, enter, &pip).arg("freeze").quiet().read() {
            fs::write(venv.join("lab-freeze.txt"), freeze + "\n")?;
        }
        let ver = util::cmd_in(sh, enter, venv.join("bin/inmanta"))
            .arg("--version")
            .quiet()
            .ignore_stderr()
            .read()
            .with_context(|| format!("{venv}/bin/inmanta --version does not run"))?;
        if !ver.contains(version) {
            bail!("{venv}/bin/inmanta --version printed {ver:?}, expected version {version}");
        }
        Ok(())
    })
}

/// A venv of `requirements` at `venv`, reused while its marker names the
/// same requirements and `ready` (a file in it) exists, else made again:
/// `python -m venv`, `pip install`, then `verify`, and only then the marker.
/// `None` when it was reused, else how long it took.
fn venv_of(
    enter: &[String],
    python: &Utf8Path,
    venv: &Utf8Path,
    requirements: Vec<String>,
    pip_cache: &Utf8Path,
    ready: &str,
    verify: impl FnOnce(&Shell) -> Result<()>,
) -> Result<Option<Duration>> {
    let marker_path = venv.join(".lab-ready.json");
    let want = VenvMarker { requirements };
    if let Ok(text) = fs::read_to_string(&marker_path)
        && serde_json::from_str::<VenvMarker>(&text).ok().as_ref() == Some(&want)
        && venv.join(ready).exists()
    {
        return Ok(None);
    }
    let t0 = Instant::now();
    eprintln!("lab: creating venv {venv} ({})", want.requirements.join(" "));
    if venv.exists() {
        fs::remove_dir_all(venv).with_context(|| format!("removing the incomplete venv {venv}"))?;
    }
    if let Some(parent) = venv.parent() {
        util::mkdir_mode(parent, 0o755)?;
    }
    let sh = shell()?;
    util::cmd_in(&sh, enter, python)
        .args(["-m", "venv", venv.as_str()])
        .quiet()
        .run()
        .with_context(|| format!("creating the venv {venv}"))?;
    let pip = venv.join("bin/pip");
    let reqs = &want.requirements;
    let cache = format!("PIP_CACHE_DIR={pip_cache}");
    let out = util::cmd_in(&sh, enter, "env")
        .args([cache.as_str(), pip.as_str(), "install", "-q"])
        .args(reqs)
        .quiet()
        .ignore_status()
        .output()?;
    if !out.status.success() {
        bail!("pip install {} into {venv} failed:\n{}", reqs.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    verify(&sh)?;
    fs::write(&marker_path, serde_json::to_string_pretty(&want)?)?;
    Ok(Some(t0.elapsed()))
}

/// Downloads `inmanta-module-std` once and builds the local index from it.
fn ensure_index(root: &LabRoot, python: &Utf8Path) -> Result<()> {
    let dl = root.cache_dir().join("dl");
    util::mkdir_mode(&dl, 0o755)?;
    let find = |dir: &Utf8Path| -> Result<Vec<Utf8PathBuf>> {
        let prefix = format!("inmanta_module_std-{STD_MODULE_VERSION}-");
        let sdist = format!("inmanta-module-std-{STD_MODULE_VERSION}.tar.gz");
        let mut found = Vec::new();
        for e in dir.read_dir_utf8()? {
            let e = e?;
            let n = e.file_name();
            if (n.starts_with(&prefix) && n.ends_with(".whl")) || n == sdist {
                found.push(e.path().to_path_buf());
            }
        }
        Ok(found)
    };
    let mut dists = find(&dl)?;
    if dists.is_empty() {
        eprintln!("lab: downloading inmanta-module-std=={STD_MODULE_VERSION}");
        let sh = shell()?;
        let spec = format!("inmanta-module-std=={STD_MODULE_VERSION}");
        let out = cmd!(sh, "{python} -m pip download -q --no-deps {spec} -d {dl}")
            .env("PIP_CACHE_DIR", root.pip_cache_dir())
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() {
            bail!("pip download {spec} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        dists = find(&dl)?;
        if dists.is_empty() {
            bail!("pip download {spec} left no distribution file in {dl}");
        }
    }
    let index = root.index_dir();
    let ok =
        dists.iter().all(|d| index.join("simple/inmanta-module-std").join(d.file_name().unwrap_or_default()).exists())
            && index.join("simple/index.html").exists();
    if !ok {
        crate::index::build_simple_index(&index, &dists)?;
    }
    Ok(())
}

/// A held exclusive lock on `<cache>/.lock` (released on drop).
pub(crate) struct CacheLock {
    _file: fs::File,
}

pub(crate) fn lock_cache(root: &LabRoot) -> Result<CacheLock> {
    let path = root.cache_dir().join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {path}"))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).with_context(|| format!("locking {path}"))?;
    Ok(CacheLock { _file: file })
}

/// Installs what is missing: apt packages, one venv per version, the index.
pub fn prepare(root: &LabRoot, versions: &[&str]) -> Result<Toolchain> {
    prepare_timed(root, versions, &mut Timings::default())
}

/// [`prepare`], adding the time of each part to `timings`.
pub fn prepare_timed(root: &LabRoot, versions: &[&str], timings: &mut Timings) -> Result<Toolchain> {
    for v in versions {
        crate::validate_version(v)?;
    }
    root.ensure()?;
    let _lock = lock_cache(root)?;
    let with_root = versions.iter().any(|v| Machine::for_version(v).in_root());
    ensure_apt(with_root, timings)?;
    let pg_bin_dir = find_pg_bin_dir().context("no PostgreSQL installation")?;
    let python = util::which("python3").context("python3 not found on PATH")?;
    let rootfs = with_root.then(|| RootFs::of(root));
    if let Some(rootfs) = &rootfs {
        rootfs.ensure(timings)?;
        rootfs.mount()?;
    }

    let mut versions: Vec<&str> = versions.to_vec();
    versions.sort();
    versions.dedup();
    // The venvs are independent: build the missing ones at the same time.
    let results: Vec<(String, Result<Option<Duration>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = versions
            .iter()
            .map(|v| {
                let venv = root.venv_dir(v);
                let (enter, python) = match Machine::for_version(v) {
                    Machine::Host => (Vec::new(), python.clone()),
                    Machine::Trixie | Machine::Booted => (RootFs::of(root).enter(&[]), "/usr/bin/python3".into()),
                };
                let pip_cache = root.pip_cache_dir();
                let v = v.to_string();
                s.spawn(move || {
                    let r = ensure_venv(&enter, &python, &venv, &v, &pip_cache);
                    (v, r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("venv thread panicked")).collect()
    });
    let mut venvs = BTreeMap::new();
    for (v, r) in results {
        match r? {
            Some(d) => timings.add(&format!("venv {v}"), d),
            None => timings.add(&format!("venv {v} (cached)"), Duration::ZERO),
        }
        venvs.insert(v.clone(), root.venv_dir(&v));
    }
    timings.time("package index", || ensure_index(root, &python))?;
    Ok(Toolchain { pg_bin_dir, root: rootfs.map(|r| r.dir().to_path_buf()), venvs, index_url: root.index_url() })
}

/// A venv of tools from PyPI under the lab's cache (`venvs/<name>`), made
/// or remade when its requirements change; returns its folder.
pub fn tool_venv(root: &LabRoot, name: &str, requirements: &[&str]) -> Result<Utf8PathBuf> {
    let venv = root.cache_dir().join("venvs").join(name);
    let python = util::which("python3").context("python3 not found on PATH")?;
    let requirements = requirements.iter().map(|r| r.to_string()).collect();
    venv_of(&[], &python, &venv, requirements, &root.pip_cache_dir(), "bin/python", |_| Ok(()))?;
    Ok(venv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_per_version() {
        assert_eq!(venv_requirements("8.7.6"), vec!["inmanta-core==8.7.6", "ruamel.yaml==0.17.21"]);
        assert_eq!(venv_requirements("11.5.5"), vec!["inmanta-core==11.5.5"]);
        assert_eq!(venv_requirements("14.0.0"), vec!["inmanta-core==14.0.0", "importlib_metadata"]);
    }
}
