//! The lab's Debian 13 (trixie) root: Python 3.13 and PostgreSQL 17 for
//! inmanta-core 15.0 and later, which this Debian 12 host (Python 3.11,
//! PostgreSQL 15) cannot run. Built once with debootstrap from the host's own
//! Debian mirror and cached at `<lab>/roots/trixie`.
//!
//! The lab's `cache/` and `instances/` are bind-mounted at the same paths
//! inside it, so every path the lab writes (server configs, venvs, repos, the
//! package index, PostgreSQL data dirs, the tool's config) names the same file
//! inside and out. Processes inside share the host's network and pid
//! namespaces: loopback ports and pids are the same on both sides.

use std::fs;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use xshell::cmd;

use crate::util::{self, shell};
use crate::{LabRoot, Timings};

/// The Debian release of the root.
pub const SUITE: &str = "trixie";
/// The PostgreSQL major the root's Debian release ships.
pub const PG_MAJOR: u32 = 17;
/// A file that exists only inside a lab root: scripts that run both inside
/// and outside (the servers' ctl scripts) tell where they are by it.
pub const INSIDE_MARKER: &str = "/etc/inmanta-migrate-lab-root";
/// PATH inside the root.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// What debootstrap installs beyond minbase: Python with venv for the
/// servers, git for their compiles, the CA bundle for pip, ssh to reach a
/// host-side orchestrator like a remote one; systemd, dbus and sshd so the
/// same root also boots as a machine of its own ([`crate::machine`]).
const INCLUDE: &str =
    "python3,python3-venv,git,ca-certificates,openssh-client,systemd,systemd-sysv,dbus,openssh-server";
/// Units of the packages that a booted machine must not start: Debian's
/// sshd would take port 22 of the network every machine shares (a machine's
/// own sshd listens on a port of the lab's choosing).
const MASKED: &str = "ssh.service ssh.socket";

/// What a finished root was built with (`<root>/etc/inmanta-migrate-lab-root`).
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct Marker {
    suite: String,
    include: String,
    postgresql: u32,
}

impl Marker {
    fn wanted() -> Marker {
        Marker { suite: SUITE.into(), include: INCLUDE.into(), postgresql: PG_MAJOR }
    }
}

/// The trixie root of a lab.
#[derive(Clone, Debug)]
pub struct RootFs {
    dir: Utf8PathBuf,
    /// Host directories bind-mounted at the same path inside.
    shared: Vec<Utf8PathBuf>,
}

impl RootFs {
    pub fn of(lab: &LabRoot) -> RootFs {
        RootFs { dir: lab.roots_dir().join(SUITE), shared: vec![lab.cache_dir(), lab.instances_dir()] }
    }

    /// The root directory (`/` inside).
    pub fn dir(&self) -> &Utf8Path {
        &self.dir
    }

    /// `/usr/lib/postgresql/17/bin`, as seen inside.
    pub fn pg_bin_dir(&self) -> Utf8PathBuf {
        format!("/usr/lib/postgresql/{PG_MAJOR}/bin").into()
    }

    /// Whether a finished root is there.
    pub fn is_built(&self) -> bool {
        let text = fs::read_to_string(self.host_path(INSIDE_MARKER)).unwrap_or_default();
        serde_json::from_str::<Marker>(&text).ok() == Some(Marker::wanted())
    }

    /// A path inside the root, as the host sees it.
    fn host_path(&self, inside: &str) -> Utf8PathBuf {
        self.dir.join(inside.trim_start_matches('/'))
    }

    /// The argv prefix that runs a program inside the root, with a clean
    /// environment (the host's PIP_* and proxies mean nothing there) plus
    /// `env`.
    pub fn enter(&self, env: &[(&str, &str)]) -> Vec<String> {
        self.enter_at(None, env)
    }

    /// [`enter`](Self::enter), in the directory `cwd` (a path inside).
    pub fn enter_at(&self, cwd: Option<&Utf8Path>, env: &[(&str, &str)]) -> Vec<String> {
        let mut argv: Vec<String> = vec!["/usr/sbin/chroot".into(), self.dir.to_string()];
        argv.extend(clean_env(cwd, env));
        argv
    }

    /// Builds the root unless a finished one is there: debootstrap, the
    /// host's extra CA certificates (pip through a re-signing proxy needs
    /// them), no service starts from packages, PostgreSQL 17.
    pub fn ensure(&self, timings: &mut Timings) -> Result<()> {
        if self.is_built() {
            timings.add(&format!("{SUITE} root (cached)"), std::time::Duration::ZERO);
            return Ok(());
        }
        if util::which("debootstrap").is_none() {
            crate::prepare::apt_install(&["debootstrap"])?;
        }
        self.unmount()?;
        if self.dir.exists() {
            eprintln!("lab: removing the unfinished {SUITE} root {}", self.dir);
            fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir))?;
        }
        let parent = self.dir.parent().context("root dir has a parent")?;
        util::mkdir_mode(parent, 0o755)?;
        let mirror = host_debian_mirror()?;
        let sh = shell()?;
        let dir = &self.dir;
        let t0 = Instant::now();
        eprintln!("lab: building the Debian {SUITE} root {dir} from {mirror} (once; takes a minute or two)");
        let log = parent.join(format!("{SUITE}-debootstrap.log"));
        let out = cmd!(sh, "debootstrap --variant=minbase --include={INCLUDE} {SUITE} {dir} {mirror}")
            .quiet()
            .ignore_status()
            .output()?;
        fs::write(&log, [out.stdout.as_slice(), out.stderr.as_slice()].concat())?;
        if !out.status.success() {
            bail!("debootstrap of {SUITE} into {dir} failed (log {log}):\n{}", util::tail(&log, 20));
        }
        timings.add("debootstrap", t0.elapsed());

        let t0 = Instant::now();
        // The host trusts extra CAs (a TLS-re-signing proxy on some
        // networks): the root must trust them too, or pip fails there.
        let host_cas = Utf8Path::new("/usr/local/share/ca-certificates");
        if host_cas.is_dir() {
            let target = self.host_path("/usr/local/share/ca-certificates");
            util::mkdir_mode(&target, 0o755)?;
            for entry in host_cas.read_dir_utf8()? {
                let entry = entry?;
                if entry.file_name().ends_with(".crt") {
                    fs::copy(entry.path(), target.join(entry.file_name()))?;
                }
            }
        }
        // Packages must not start services here (no init runs them).
        util::write_file_mode(&self.host_path("/usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n", 0o755)?;
        let enter = self.enter(&[("DEBIAN_FRONTEND", "noninteractive")]);
        let pg = format!("postgresql-{PG_MAJOR}");
        let script = format!(
            "update-ca-certificates >/dev/null && apt-get update -q >/dev/null && \
             apt-get install -y -q --no-install-recommends {pg} >/dev/null && \
             systemctl mask --quiet {MASKED}"
        );
        let out = util::cmd_in(&sh, &enter, "sh").args(["-c", &script]).quiet().ignore_status().output()?;
        if !out.status.success() {
            bail!("installing {pg} in {dir} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        // Nothing the lab uses: the package's own cluster and apt's downloads.
        let tidy = format!("pg_dropcluster --stop {PG_MAJOR} main; apt-get clean");
        let _ = util::cmd_in(&sh, &enter, "sh").args(["-c", &tidy]).quiet().ignore_status().output();
        timings.add(&format!("{SUITE} packages ({pg})"), t0.elapsed());
        util::write_file_mode(&self.host_path(INSIDE_MARKER), &serde_json::to_string_pretty(&Marker::wanted())?, 0o644)
    }

    /// Mount points: (what, where, fstype or None for a bind mount).
    fn mounts(&self) -> Vec<(String, Utf8PathBuf, Option<&'static str>)> {
        let mut out = vec![
            ("proc".to_string(), self.host_path("/proc"), Some("proc")),
            ("shm".to_string(), self.host_path("/dev/shm"), Some("tmpfs")),
        ];
        for dir in &self.shared {
            out.push((dir.to_string(), self.host_path(dir.as_str()), None));
        }
        out
    }

    /// Mounts /proc, a /dev/shm (PostgreSQL's shared memory) and the lab's
    /// shared directories, each unless it already is.
    pub fn mount(&self) -> Result<()> {
        // Two instances at once (tests in two threads) must not stack mounts.
        static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
        let mounted = mount_points()?;
        let sh = shell()?;
        for (what, at, fstype) in self.mounts() {
            if mounted.contains(&at) {
                continue;
            }
            util::mkdir_mode(&at, 0o755)?;
            if let Some(dir) = self.shared.iter().find(|d| d.as_str() == what) {
                util::mkdir_mode(dir, 0o755)?;
            }
            let out = match fstype {
                Some("tmpfs") => cmd!(sh, "mount -t tmpfs -o mode=1777,size=512m {what} {at}"),
                Some(fstype) => cmd!(sh, "mount -t {fstype} {what} {at}"),
                None => cmd!(sh, "mount --bind {what} {at}"),
            }
            .quiet()
            .ignore_status()
            .output()?;
            if !out.status.success() {
                bail!("mounting {what} at {at} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        Ok(())
    }

    /// Unmounts everything mounted under the root (also what an earlier
    /// lab left), deepest first. Nothing may stay mounted before the root is
    /// removed: its bind mounts are the lab's own cache and instances.
    pub fn unmount(&self) -> Result<()> {
        unmount_under(&self.dir)
    }

    /// Unmounts and removes the root.
    pub fn purge(&self) -> Result<()> {
        self.unmount()?;
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir))?;
        }
        Ok(())
    }
}

/// `env -i` with the root's PATH, HOME and LANG plus `env`, in `cwd` if
/// given: how a program starts inside a lab root (chroot or booted).
pub(crate) fn clean_env(cwd: Option<&Utf8Path>, env: &[(&str, &str)]) -> Vec<String> {
    let mut argv: Vec<String> = vec!["/usr/bin/env".into(), "-i".into()];
    if let Some(cwd) = cwd {
        argv.extend(["-C".to_string(), cwd.to_string()]);
    }
    argv.extend([format!("PATH={PATH}"), "HOME=/root".into(), "LANG=C.UTF-8".into()]);
    argv.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    argv
}

/// Unmounts everything mounted under `dir`, deepest first (lazily when a
/// plain unmount is refused).
pub(crate) fn unmount_under(dir: &Utf8Path) -> Result<()> {
    let mut under: Vec<Utf8PathBuf> = mount_points()?.into_iter().filter(|p| p.starts_with(dir)).collect();
    under.sort_by_key(|p| std::cmp::Reverse(p.as_str().len()));
    let sh = shell()?;
    for at in &under {
        let out = cmd!(sh, "umount {at}").quiet().ignore_status().output()?;
        if !out.status.success() {
            cmd!(sh, "umount -l {at}").quiet().run().with_context(|| format!("unmounting {at}"))?;
        }
    }
    let left: Vec<_> = mount_points()?.into_iter().filter(|p| p.starts_with(dir)).collect();
    if !left.is_empty() {
        bail!("still mounted under {dir}: {left:?}");
    }
    Ok(())
}

/// Whether something is mounted at `dir` itself.
pub(crate) fn is_mount_point(dir: &Utf8Path) -> Result<bool> {
    Ok(mount_points()?.iter().any(|p| p == dir))
}

/// Mount points of this mount namespace (field 5 of /proc/self/mountinfo,
/// octal escapes decoded).
fn mount_points() -> Result<Vec<Utf8PathBuf>> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text.lines().filter_map(|l| l.split(' ').nth(4)).map(|p| unescape_mount_path(p).into()).collect())
}

fn unescape_mount_path(p: &str) -> String {
    let mut out = String::new();
    let mut rest = p;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The Debian mirror this host's apt uses (deb822 `URIs:` or a
/// sources.list `deb` line), so the root comes from the same place.
fn host_debian_mirror() -> Result<String> {
    let mut candidates = Vec::new();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        candidates.extend(files);
    }
    candidates.insert(0, "/etc/apt/sources.list".into());
    for path in candidates {
        let Ok(text) = fs::read_to_string(&path) else { continue };
        if let Some(uri) = first_debian_uri(&text) {
            return Ok(uri);
        }
    }
    bail!("no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d: debootstrap needs one")
}

/// The first URI of a main Debian archive (not -security) in an apt sources
/// file, either format.
fn first_debian_uri(text: &str) -> Option<String> {
    let is_archive = |uri: &str| uri.starts_with("http") && !uri.contains("security") && uri.contains("debian");
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("URIs:") {
            if let Some(uri) = rest.split_whitespace().find(|u| is_archive(u)) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        } else if let Some(rest) = line.strip_prefix("deb ") {
            let uri = rest.split_whitespace().find(|w| !w.starts_with('['))?;
            if is_archive(uri) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_either_sources_format() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(first_debian_uri(deb822).as_deref(), Some("http://mirror.example/debian"));
        let list = "deb [signed-by=/k.gpg] http://mirror.example/debian-security bookworm-security main\n\
                    deb http://mirror.example/debian/ bookworm main\n";
        assert_eq!(first_debian_uri(list).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(first_debian_uri("# nothing\n"), None);
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b/c\011d"), "/a b/c\td");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn enter_runs_env_in_the_root() {
        let lab = LabRoot::new("/var/tmp/x").unwrap();
        let root = RootFs::of(&lab);
        assert_eq!(root.dir(), "/var/tmp/x/roots/trixie");
        let argv = root.enter(&[("A", "b c")]);
        assert_eq!(&argv[..4], ["/usr/sbin/chroot", "/var/tmp/x/roots/trixie", "/usr/bin/env", "-i"]);
        assert_eq!(argv.last().map(String::as_str), Some("A=b c"));
        assert_eq!(root.host_path("/etc/x"), "/var/tmp/x/roots/trixie/etc/x");
    }
}
