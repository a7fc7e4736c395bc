//! Inmanta's container install on a booted machine: user `inmanta`
//! (lingering) runs the server and PostgreSQL as podman containers, each a
//! quadlet in `~/.config/containers/systemd/` managed by `systemctl --user`,
//! on a quadlet network where the server reaches `inmanta-db` by name.
//!
//! Inmanta's images (ghcr.io, docker.io) are out of reach here, so the lab
//! builds its own: `podman import` of the lab's Debian 13 root (PostgreSQL
//! 17, Python) with the server's venv at its cache path. The machine boots
//! a root of its own, `roots/trixie-containers`: a copy of `roots/trixie`
//! with podman 5 (Debian 12's 4.3 has no quadlet) and the user.
//!
//! Beside the image, the lab's quadlets differ from Inmanta's in what a
//! lab needs: the server reads the lab's server.cfg, mounted at its
//! instance path (Inmanta's pass `INMANTA_DATABASE_*` and mount
//! `~/mount/orchestrator/{state,log,config}`), the database's command
//! initialises and starts PostgreSQL as its postgres user (theirs maps it
//! with `UIDMap`), and the database's port is published (theirs is not).
//!
//! What podman needs in a machine of this host (cgroup v1, no systemd on
//! the host), found by trying: all capabilities and writable API file
//! systems for nspawn, a `/dev/net/tun` others may open (a node of our own
//! bound over it: the host's stays 0600), `--cgroups=enabled` (podman's
//! `split` wants a writable cpuset hierarchy) and `keyring = false`
//! (session keyrings are refused in the machine).

use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::machine::Booted;
use crate::util::{self, shell};
use crate::{LabRoot, RootFs, Timings};

/// The user that owns the containers and its uid (fixed in the root, so
/// this machine can chown what the containers write).
pub(crate) const USER: &str = "inmanta";
pub(crate) const UID: u32 = 1000;
/// Quadlet names, as Inmanta's install names them (the server's unit is
/// named as its packages name it).
pub(crate) use crate::machine::SERVER_UNIT;
pub(crate) const DB_UNIT: &str = "inmanta-db.service";
const DB_CONTAINER: &str = "inmanta-db";
const SERVER_CONTAINER: &str = "inmanta-server";
/// The ports inside the containers (published on 127.0.0.1 at the lab's).
pub(crate) const SERVER_PORT: u16 = 8888;
pub(crate) const DB_PORT: u16 = 5432;
/// Where the database container keeps its data (the side's `pg/` bound there).
const DB_DATA: &str = "/var/lib/postgresql/data";
const ROOT_NAME: &str = "trixie-containers";
const PACKAGES: &str = "podman uidmap dbus-user-session passt slirp4netns catatonit";
const DB_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished root was built from (`<root>/etc/inmanta-migrate-lab-containers`).
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct Marker {
    packages: String,
    user: String,
    uid: u32,
}

const MARKER: &str = "etc/inmanta-migrate-lab-containers";

fn wanted() -> Marker {
    Marker { packages: PACKAGES.into(), user: USER.into(), uid: UID }
}

/// The root a containers machine boots.
pub(crate) fn root_dir(lab: &LabRoot) -> Utf8PathBuf {
    lab.roots_dir().join(ROOT_NAME)
}

/// Builds `roots/trixie-containers` unless a finished one is there: a copy
/// of the trixie root (never changed: other instances boot it), podman,
/// the user with its subordinate ids, lingering (its manager runs from
/// boot, as `loginctl enable-linger` would make it).
pub(crate) fn ensure_root(lab: &LabRoot, timings: &mut Timings) -> Result<()> {
    let dir = root_dir(lab);
    let marker = dir.join(MARKER);
    if serde_json::from_str::<Marker>(&fs::read_to_string(&marker).unwrap_or_default()).ok() == Some(wanted()) {
        timings.add(&format!("{ROOT_NAME} root (cached)"), Duration::ZERO);
        return Ok(());
    }
    let _cache = crate::prepare::lock_cache(lab)?;
    let t0 = Instant::now();
    let base = RootFs::of(lab);
    let tmp = lab.roots_dir().join(format!("{ROOT_NAME}.tmp"));
    for d in [&tmp, &dir] {
        crate::rootfs::unmount_under(d)?;
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {d}"))?;
        }
    }
    util::mkdir_mode(&tmp, 0o755)?;
    eprintln!("lab: building the {ROOT_NAME} root from {} (once; takes a minute)", base.dir());
    let sh = shell()?;
    // Bind mounts of the base (cache, instances, proc) are not its files.
    let copy = format!(
        "tar -C {base} {excl} -cf - . | tar -C {tmp} -xpf -",
        base = base.dir(),
        excl = tar_excludes().join(" "),
    );
    util::cmd_in(&sh, &[], "sh").args(["-c", &copy]).quiet().run().context("copying the trixie root")?;
    let script = format!(
        "set -e\n\
         mount -t proc proc /proc\n\
         trap 'umount -l /proc' EXIT\n\
         apt-get update -q >/dev/null\n\
         apt-get install -y -q {PACKAGES} >/dev/null\n\
         apt-get clean\n\
         useradd -m -u {UID} -s /bin/bash {USER}\n\
         usermod -p '*' {USER}\n\
         mkdir -p /var/lib/systemd/linger\n\
         touch /var/lib/systemd/linger/{USER}\n\
         ln -sf /dev/null /etc/systemd/user/podman-user-wait-network-online.service\n"
    );
    // The machine shares this host's network, online before it boots, and
    // nothing in it starts network-online.target: podman's wait for it would
    // delay every user unit by 90 s (hence the mask above).
    let enter = crate::rootfs::clean_env(None, &[("DEBIAN_FRONTEND", "noninteractive")]);
    let mut argv = vec!["/usr/sbin/chroot".to_string(), tmp.to_string()];
    argv.extend(enter);
    let out = util::cmd_in(&sh, &argv, "sh").args(["-c", &script]).quiet().ignore_status().output()?;
    if !out.status.success() {
        bail!(
            "installing podman into {tmp} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    util::write_file_mode(&tmp.join(MARKER), &serde_json::to_string_pretty(&wanted())?, 0o644)?;
    fs::rename(&tmp, &dir).with_context(|| format!("renaming {tmp} to {dir}"))?;
    timings.add(&format!("{ROOT_NAME} root"), t0.elapsed());
    Ok(())
}

/// What a tar of the base root leaves out: its mount points' contents.
fn tar_excludes() -> Vec<String> {
    ["./var/tmp/*", "./proc/*", "./dev/shm/*", "./sys/*"].iter().map(|p| format!("--exclude={p}")).collect()
}

/// The image of an inmanta-core version: `localhost/inmanta-lab-orchestrator:<version>`.
pub(crate) fn image(version: &str) -> String {
    format!("localhost/inmanta-lab-orchestrator:{version}")
}

/// Chowns a path (not recursive) to the containers' user.
pub(crate) fn give_to_user(path: &Utf8Path) -> Result<()> {
    std::os::unix::fs::chown(path, Some(UID), Some(UID)).with_context(|| format!("chown {path} to {USER}"))
}

/// The containers of one side: its booted machine's user manager and podman.
#[derive(Clone, Debug)]
pub(crate) struct Containers {
    pub machine: Booted,
    pub version: String,
}

impl Containers {
    /// The argv prefix that runs a program on the machine as the user, with
    /// what its user manager and podman need.
    fn enter(&self) -> Result<Vec<String>> {
        let mut argv = self.machine.enter(None, &[])?;
        // `env -i ...` of the machine's clean environment, then as the user:
        let at = argv.iter().position(|a| a == "/usr/bin/env").context("enter has env")?;
        let tail = argv.split_off(at);
        argv.extend(["runuser".into(), "-u".into(), USER.into(), "--".into()]);
        argv.extend(tail.into_iter().map(|a| if a == "HOME=/root" { format!("HOME=/home/{USER}") } else { a }));
        argv.extend([format!("XDG_RUNTIME_DIR=/run/user/{UID}"), "PODMAN_IGNORE_CGROUPSV1_WARNING=1".into()]);
        Ok(argv)
    }

    /// Runs a program as the user; (exit code, stdout + stderr).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<(i32, String)> {
        let argv = self.enter()?;
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("entering the machine")?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code().unwrap_or(-1), text.trim().to_string()))
    }

    /// `systemctl --user <args>`, which must succeed.
    pub fn systemctl(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["systemctl", "--user"];
        argv.extend(args);
        let (code, out) = self.run(&argv, None)?;
        if code != 0 {
            bail!(
                "`systemctl --user {}` of {USER} on {} failed (exit {code}): {out}",
                args.join(" "),
                self.machine.name
            );
        }
        Ok(out)
    }

    /// The main process of a running container, as this machine numbers it.
    pub fn container_pid(&self, name: &str) -> Option<u32> {
        if !self.machine.running() {
            return None;
        }
        let (code, out) = self.run(&["podman", "inspect", "--format", "{{.State.Pid}}", name], None).ok()?;
        let inner: u32 = out.trim().parse().ok().filter(|p| code == 0 && *p != 0)?;
        self.machine.host_pid(inner)
    }

    pub fn server_pid(&self) -> Option<u32> {
        self.container_pid(SERVER_CONTAINER)
    }

    pub fn db_pid(&self) -> Option<u32> {
        self.container_pid(DB_CONTAINER)
    }

    /// The user journal of a unit.
    pub fn journal_tail(&self, unit: &str, lines: usize) -> String {
        let n = lines.to_string();
        match self.run(&["journalctl", "--user", "-u", unit, "-n", &n, "--no-pager"], None) {
            Ok((_, out)) => out,
            Err(e) => format!("(cannot read the user journal of {unit}: {e:#})"),
        }
    }

    /// Imports the version's image unless the user's storage has it: the
    /// lab's trixie root and the version's venv, at its cache path.
    pub fn ensure_image(&self, lab: &LabRoot) -> Result<()> {
        let image = image(&self.version);
        if self.run(&["podman", "image", "exists", &image], None)?.0 == 0 {
            return Ok(());
        }
        let venv = lab.venv_dir(&self.version);
        let mut tar = std::process::Command::new("tar");
        tar.arg("-C").arg(RootFs::of(lab).dir().as_str()).args(tar_excludes()).args(["-cf", "-", "."]);
        tar.args(["-C", "/", venv.as_str().trim_start_matches('/')]);
        let mut tar = tar.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("running tar")?;
        let path = format!("ENV=PATH={venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let argv = self.enter()?;
        let import = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .args(["podman", "import", "--quiet", "--change", &path, "-", &image])
            .stdin(tar.stdout.take().context("tar's stdout")?)
            .output()
            .context("running podman import")?;
        let tar = tar.wait_with_output()?;
        if !import.status.success() || !tar.status.success() {
            bail!(
                "podman import of {image} on {} failed: {}{}",
                self.machine.name,
                String::from_utf8_lossy(&import.stderr).trim(),
                String::from_utf8_lossy(&tar.stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts the database's unit and waits until PostgreSQL accepts
    /// connections in its container (its first start runs initdb).
    pub fn start_db(&self) -> Result<()> {
        self.systemctl(&["start", DB_UNIT])
            .with_context(|| format!("the user journal of {DB_UNIT}:\n{}", self.journal_tail(DB_UNIT, 20)))?;
        let t0 = Instant::now();
        loop {
            let (code, out) = self.run(&["podman", "exec", DB_CONTAINER, "pg_isready", "-q", "-h", "/tmp"], None)?;
            if code == 0 {
                return Ok(());
            }
            if t0.elapsed() > DB_READY_TIMEOUT {
                bail!(
                    "PostgreSQL in {DB_CONTAINER} does not accept connections after {DB_READY_TIMEOUT:?} ({out}); the user journal of {DB_UNIT}:\n{}",
                    self.journal_tail(DB_UNIT, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// psql in the database container through its socket (trust), as
    /// `user`; the SQL through stdin, never the command line. `-At` output.
    pub fn psql(&self, user: &str, db: &str, sql: &str) -> Result<String> {
        let args = ["podman", "exec", "-i", DB_CONTAINER, "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"];
        let mut argv: Vec<&str> = args.into();
        argv.extend(["-h", "/tmp", "-U", user, "-d", db, "-f", "-"]);
        let (code, out) = self.run(&argv, Some(sql))?;
        if code != 0 {
            bail!("psql in {DB_CONTAINER} db {db} failed: {out}");
        }
        Ok(out)
    }
}

/// Where a machine's quadlets are kept (copied into the user's
/// `~/.config/containers/systemd/` at every boot and when one changes).
pub(crate) fn quadlets_dir(machine: &Booted) -> Utf8PathBuf {
    machine.dir.join("quadlets")
}

/// The user's storage (images, containers): under the machine's directory.
fn graphroot(machine: &Booted) -> Utf8PathBuf {
    machine.dir.join("storage")
}

/// Writes a quadlet (kept in `quadlets/`) and, if the machine runs,
/// installs it.
pub(crate) fn write_quadlet(machine: &Booted, name: &str, text: &str) -> Result<()> {
    util::mkdir_mode(&quadlets_dir(machine), 0o755)?;
    util::write_file_mode(&quadlets_dir(machine).join(name), text, 0o644)?;
    if machine.running() { install_user_files(machine) } else { Ok(()) }
}

/// Installs the user's podman settings and quadlets on a running machine
/// and reloads its user manager (which generates the units).
pub(crate) fn install_user_files(machine: &Booted) -> Result<()> {
    let leader = machine.leader().context("machine not running")?;
    let home = Utf8PathBuf::from(format!("/proc/{leader}/root/home/{USER}"));
    let config = home.join(".config/containers");
    let systemd = config.join("systemd");
    util::mkdir_mode(&systemd, 0o755)?;
    let store = graphroot(machine);
    util::mkdir_mode(&store, 0o700)?;
    give_to_user(&store)?;
    util::write_file_mode(&config.join("containers.conf"), CONTAINERS_CONF, 0o644)?;
    util::write_file_mode(&config.join("storage.conf"), &storage_conf(&store), 0o644)?;
    if quadlets_dir(machine).is_dir() {
        for entry in quadlets_dir(machine).read_dir_utf8()? {
            let entry = entry?;
            fs::copy(entry.path(), systemd.join(entry.file_name()))
                .with_context(|| format!("installing {} on {}", entry.file_name(), machine.name))?;
        }
    }
    for dir in [home.join(".config"), config.clone(), systemd.clone()] {
        give_to_user(&dir)?;
    }
    for entry in config.read_dir_utf8()?.chain(systemd.read_dir_utf8()?) {
        give_to_user(entry?.path())?;
    }
    Containers { machine: machine.clone(), version: String::new() }.systemctl(&["daemon-reload"]).map(drop)
}

/// The quadlet network both containers join.
pub(crate) fn network_quadlet() -> String {
    "# Written by the inmanta-migrate lab.\n[Network]\nNetworkName=inmanta\n".into()
}

/// How both containers end their quadlet: cgroups of their own (this
/// machine's hybrid hierarchy), a stop timeout, started with the user
/// manager.
const QUADLET_END: &str =
    "PodmanArgs=--cgroups=enabled\n\n[Service]\nTimeoutStopSec=60\n\n[Install]\nWantedBy=default.target\n";

/// The database container: PostgreSQL of the image, its data in the side's
/// `pg/`, started by [`db_entry_script`]. Its port is published on
/// 127.0.0.1 (Inmanta's install does not): the tool reaches PostgreSQL
/// over TCP for pg_dump, pg_restore and its own queries.
pub(crate) fn db_quadlet(version: &str, data_dir: &Utf8Path, entry: &Utf8Path, port: u16) -> String {
    format!(
        "# Written by the inmanta-migrate lab.\n\
         [Unit]\n\
         Description=Inmanta database (PostgreSQL in a container)\n\
         \n\
         [Container]\n\
         ContainerName={DB_CONTAINER}\n\
         Image={image}\n\
         Network=inmanta.network\n\
         Volume={data_dir}:{DB_DATA}\n\
         Volume={entry}:/usr/local/bin/inmanta-lab-db:ro\n\
         Exec=/bin/sh /usr/local/bin/inmanta-lab-db\n\
         PublishPort=127.0.0.1:{port}:{DB_PORT}\n\
         {QUADLET_END}",
        image = image(version),
    )
}

/// The database container's command, as the postgres image's entrypoint
/// does it: initdb on an empty data dir (trust on the socket, passwords
/// over TCP from anywhere on the container network), then postgres as
/// postgres.
pub(crate) fn db_entry_script(pg_major: u32) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by the inmanta-migrate lab: the inmanta-db container's command.\n\
         set -e\n\
         D={DB_DATA}\n\
         B=/usr/lib/postgresql/{pg_major}/bin\n\
         as_postgres() {{ setpriv --reuid=postgres --regid=postgres --init-groups \"$@\"; }}\n\
         chown postgres:postgres \"$D\"\n\
         chmod 700 \"$D\"\n\
         if [ ! -s \"$D/PG_VERSION\" ]; then\n\
         \x20 as_postgres \"$B/initdb\" -D \"$D\" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null\n\
         \x20 echo 'host all all 0.0.0.0/0 scram-sha-256' >> \"$D/pg_hba.conf\"\n\
         fi\n\
         exec setpriv --reuid=postgres --regid=postgres --init-groups \"$B/postgres\" -D \"$D\" -k /tmp \
         -c listen_addresses='*' -c fsync=off -c jit=off\n"
    )
}

/// The server container: the image's inmanta with the side's directory
/// (server.cfg, state, logs) at its own path, the lab's package index and
/// the environments' repositories read-only, the API published on the
/// lab's port.
pub(crate) fn server_quadlet(
    version: &str,
    dir: &Utf8Path,
    read_only: &[Utf8PathBuf],
    gitconfig: &Utf8Path,
    index_url: &str,
    port: u16,
) -> String {
    let read_only: String = read_only.iter().map(|d| format!("Volume={d}:{d}:ro\n")).collect();
    format!(
        "# Written by the inmanta-migrate lab.\n\
         [Unit]\n\
         Description=Inmanta server (in a container)\n\
         Requires={DB_UNIT}\n\
         After={DB_UNIT}\n\
         \n\
         [Container]\n\
         ContainerName={SERVER_CONTAINER}\n\
         Image={image}\n\
         Network=inmanta.network\n\
         PublishPort=127.0.0.1:{port}:{SERVER_PORT}\n\
         Volume={dir}:{dir}\n\
         {read_only}\
         WorkingDir={dir}\n\
         Environment=PIP_CACHE_DIR={dir}/state/pip-cache\n\
         Environment=PIP_INDEX_URL={index_url}\n\
         # The repositories belong to root of this machine, nobody in here.\n\
         Volume={gitconfig}:/etc/gitconfig:ro\n\
         Exec=inmanta -vv --timed-logs -c {dir}/server.cfg server\n\
         {QUADLET_END}",
        image = image(version),
    )
}

/// The user's podman settings: storage in the side's machine directory
/// (podman's overlay driver does not stack on the machine's overlay
/// root), no session keyring.
pub(crate) fn storage_conf(graphroot: &Utf8Path) -> String {
    format!("# Written by the inmanta-migrate lab.\n[storage]\ndriver = \"overlay\"\ngraphroot = \"{graphroot}\"\n")
}

/// The server container's git config: the environments' repositories
/// belong to root of this machine, to nobody in the container, and git
/// refuses to clone from a repository of another owner.
pub(crate) const GITCONFIG: &str = "# Written by the inmanta-migrate lab.\n[safe]\n\tdirectory = *\n";

pub(crate) const CONTAINERS_CONF: &str = "# Written by the inmanta-migrate lab.\n[containers]\nkeyring = false\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadlets_name_the_image_ports_and_mounts() {
        let db = db_quadlet("20.1.0", "/l/i/x/new/pg".into(), "/l/i/x/new/machine/db-entry.sh".into(), 15432);
        assert!(db.contains("Image=localhost/inmanta-lab-orchestrator:20.1.0\n"));
        assert!(db.contains("PublishPort=127.0.0.1:15432:5432\n"));
        assert!(db.contains("Volume=/l/i/x/new/pg:/var/lib/postgresql/data\n"));
        let ro = ["/c/index".into(), "/l/i/x/repos".into()];
        let git = "/l/i/x/new/machine/gitconfig".into();
        let server = server_quadlet("20.1.0", "/l/i/x/new".into(), &ro, git, "file:///c/index/simple", 18888);
        assert!(server.contains("PublishPort=127.0.0.1:18888:8888\n"));
        assert!(server.contains("Requires=inmanta-db.service\n"));
        assert!(server.contains("Exec=inmanta -vv --timed-logs -c /l/i/x/new/server.cfg server\n"));
        assert!(server.contains("Volume=/c/index:/c/index:ro\n"));
        for q in [&db, &server] {
            assert!(q.contains("Network=inmanta.network\n") && q.contains("PodmanArgs=--cgroups=enabled\n"), "{q}");
        }
        let entry = db_entry_script(17);
        assert!(entry.contains("B=/usr/lib/postgresql/17/bin\n") && entry.contains("exec setpriv"), "{entry}");
    }
}
