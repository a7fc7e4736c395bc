//! Orchestrators as machines of their own: the lab's Debian 13 root booted
//! by systemd-nspawn with systemd as PID 1, one machine per side, managed
//! the way Inmanta's procedure says (`systemctl stop inmanta-server.service`).
//!
//! Both machines boot the same root, read-only under an overlay of their
//! own that lasts as long as the instance (`<side>/machine/upper`), so a
//! machine keeps what happened on it across a reboot (a unit disabled stays
//! disabled), as a real one does; the lab's `cache/` and `instances/` are
//! bound at the same paths, so every file the lab writes means the same
//! inside.
//! They share this machine's network (each service on a port of the lab's
//! choosing) but have a pid namespace of their own: pids inside are mapped
//! back to this machine's through `/proc/<pid>/status` (`NSpid`).
//!
//! A machine's units live in `<side>/machine/units/` and are copied into
//! its `/etc/systemd/system` at every boot; a unit is enabled when it is
//! first installed, as an operator's install does, and never again by the
//! lab.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use crate::procs;
use crate::util::{self, shell};

/// The inmanta server, named as Inmanta's packages name it.
pub(crate) const SERVER_UNIT: &str = "inmanta-server.service";
/// The machine's PostgreSQL cluster.
pub(crate) const POSTGRES_UNIT: &str = "inmanta-lab-postgresql.service";
/// The machine's sshd, on the lab's port (Debian's own is masked).
pub(crate) const SSHD_UNIT: &str = "inmanta-lab-sshd.service";
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(60);

/// One booted machine.
#[derive(Clone, Debug)]
pub(crate) struct Booted {
    /// Machine (and host) name.
    pub name: String,
    /// `<instance>/<side>/machine`: pid file, boot log, units.
    pub dir: Utf8PathBuf,
    /// The root it boots (read-only lower layer).
    pub root: Utf8PathBuf,
    /// This machine's directories bound at the same path inside.
    pub binds: Vec<Utf8PathBuf>,
    /// Its user `inmanta` runs podman containers ([`crate::containers`]).
    pub containers: bool,
}

impl Booted {
    fn pid_file(&self) -> Utf8PathBuf {
        self.dir.join("nspawn.pid")
    }
    pub fn boot_log(&self) -> Utf8PathBuf {
        self.dir.join("nspawn.log")
    }
    /// PID 1 of the running machine, for the ctl scripts.
    pub fn leader_file(&self) -> Utf8PathBuf {
        self.dir.join("leader.pid")
    }
    fn units_dir(&self) -> Utf8PathBuf {
        self.dir.join("units")
    }
    /// Where the machine's root is mounted: its overlay over [`Self::root`].
    fn mounted_root(&self) -> Utf8PathBuf {
        self.dir.join("root")
    }

    /// The systemd-nspawn process while the machine runs.
    pub fn nspawn_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()?;
        let cmd = procs::cmdline(pid)?;
        (procs::pid_alive(pid) && cmd.contains("systemd-nspawn") && cmd.contains(&self.name)).then_some(pid)
    }

    /// The machine's PID 1, as this machine numbers it.
    pub fn leader(&self) -> Option<u32> {
        let nspawn = self.nspawn_pid()?;
        let ours = pid_namespace(std::process::id())?;
        procs::children(nspawn).into_iter().find(|c| pid_namespace(*c).is_some_and(|ns| ns != ours))
    }

    pub fn running(&self) -> bool {
        self.leader().is_some()
    }

    /// The argv prefix that runs a program on the machine (all its
    /// namespaces, a clean environment plus `env`), in `cwd` if given.
    pub fn enter(&self, cwd: Option<&Utf8Path>, env: &[(&str, &str)]) -> Result<Vec<String>> {
        let leader = self.leader().with_context(|| format!("the machine {} is not running", self.name))?;
        let mut argv: Vec<String> = ["nsenter", "-t", &leader.to_string(), "-a"].map(String::from).into();
        argv.extend(crate::rootfs::clean_env(cwd, env));
        Ok(argv)
    }

    /// Runs a program on the machine; (exit code, stdout + stderr).
    pub fn run(&self, args: &[&str]) -> Result<(i32, String)> {
        let sh = shell()?;
        let enter = self.enter(None, &[])?;
        let out = util::cmd_in(&sh, &enter, args[0]).args(&args[1..]).quiet().ignore_status().output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code().unwrap_or(-1), text.trim().to_string()))
    }

    /// `systemctl <args>` on the machine, which must succeed.
    pub fn systemctl(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["systemctl"];
        argv.extend(args);
        let (code, out) = self.run(&argv)?;
        if code != 0 {
            bail!("`systemctl {}` on the machine {} failed (exit {code}): {out}", args.join(" "), self.name);
        }
        Ok(out)
    }

    /// Boots the machine unless it runs, and waits until systemd says the
    /// system is up; then installs its units.
    pub fn boot(&self) -> Result<()> {
        if self.running() {
            return Ok(());
        }
        if util::which("systemd-nspawn").is_none() {
            crate::prepare::apt_install(&["systemd-container"])?;
        }
        util::mkdir_mode(&self.dir, 0o755)?;
        util::mkdir_mode(&self.units_dir(), 0o755)?;
        self.mount_root()?;
        let log = fs::File::create(self.boot_log()).with_context(|| format!("creating {}", self.boot_log()))?;
        let mut cmd = std::process::Command::new("setsid");
        cmd.args(["systemd-nspawn", "--quiet", "-D", self.mounted_root().as_str(), "-M", &self.name]).args([
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=passive",
        ]);
        for dir in &self.binds {
            cmd.arg(format!("--bind={dir}"));
        }
        if self.containers {
            // Rootless podman's networks: netlink, mounts and cgroups of its
            // own, and a tun device the user may open (our node, 0666).
            let tun = self.dir.join("tun");
            if !tun.exists() {
                let sh = shell()?;
                util::cmd_in(&sh, &[], "mknod").args(["-m", "666", tun.as_str(), "c", "10", "200"]).quiet().run()?;
            }
            cmd.env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "1");
            cmd.args(["--capability=all".to_string(), format!("--bind={tun}:/dev/net/tun")]);
        }
        let mut child =
            cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn().context("starting systemd-nspawn")?;
        util::write_file_mode(&self.pid_file(), &child.id().to_string(), 0o644)?;
        let t0 = Instant::now();
        let state = loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "systemd-nspawn of the machine {} exited ({status}):\n{}",
                    self.name,
                    util::tail(&self.boot_log(), 20)
                );
            }
            if self.leader().is_some() {
                let (_, out) = self.run(&["systemctl", "is-system-running"])?;
                match out.lines().last().unwrap_or("") {
                    "running" => break "running",
                    "degraded" => break "degraded",
                    _ => {}
                }
            }
            if t0.elapsed() > BOOT_TIMEOUT {
                bail!(
                    "the machine {} did not finish booting within {BOOT_TIMEOUT:?}:\n{}",
                    self.name,
                    util::tail(&self.boot_log(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        // Not waited for any longer: it lives as long as the machine.
        drop(child);
        let leader = self.leader().context("machine not running")?;
        util::write_file_mode(&self.leader_file(), &leader.to_string(), 0o644)?;
        if state == "degraded" {
            let (_, failed) = self.run(&["systemctl", "--failed", "--no-legend"])?;
            eprintln!("lab: the machine {} booted degraded; failed units:\n{failed}", self.name);
        }
        self.install_units()?;
        if self.containers {
            crate::containers::install_user_files(self)?;
        }
        Ok(())
    }

    /// The machine's own overlay over the shared root (mounted once; kept
    /// across reboots, unmounted by `lab down`).
    fn mount_root(&self) -> Result<()> {
        let merged = self.mounted_root();
        if crate::rootfs::is_mount_point(&merged)? {
            return Ok(());
        }
        let (upper, work) = (self.dir.join("upper"), self.dir.join("work"));
        for dir in [&merged, &upper, &work] {
            util::mkdir_mode(dir, 0o755)?;
        }
        let options = format!("lowerdir={},upperdir={upper},workdir={work}", self.root);
        let sh = shell()?;
        util::cmd_in(&sh, &[], "mount")
            .args(["-t", "overlay", "overlay", "-o", &options, merged.as_str()])
            .quiet()
            .run()
            .with_context(|| format!("mounting the root of the machine {}", self.name))?;
        Ok(())
    }

    /// Copies every unit of `units/` into the machine and reloads systemd.
    fn install_units(&self) -> Result<()> {
        let leader = self.leader().context("machine not running")?;
        let target = Utf8PathBuf::from(format!("/proc/{leader}/root/etc/systemd/system"));
        let mut first_installed = Vec::new();
        for entry in self.units_dir().read_dir_utf8()? {
            let entry = entry?;
            let installed = target.join(entry.file_name());
            if !installed.exists() && fs::read_to_string(entry.path())?.contains("[Install]") {
                first_installed.push(entry.file_name().to_owned());
            }
            fs::copy(entry.path(), &installed)
                .with_context(|| format!("installing {} on {}", entry.file_name(), self.name))?;
        }
        self.systemctl(&["daemon-reload"])?;
        // As an operator's install does (`systemctl enable`, once): started
        // at boot until someone disables it.
        for unit in first_installed {
            self.systemctl(&["enable", &unit])?;
        }
        Ok(())
    }

    /// Writes a unit (kept in `units/`) and installs it if the machine runs.
    pub fn write_unit(&self, name: &str, text: &str) -> Result<()> {
        util::mkdir_mode(&self.units_dir(), 0o755)?;
        util::write_file_mode(&self.units_dir().join(name), text, 0o644)?;
        if self.running() { self.install_units() } else { Ok(()) }
    }

    /// Adds (`Some`) or removes (`None`) the drop-in `<name>.conf` of a
    /// unit, as an operator would in `/etc/systemd/system/<unit>.d/`, and
    /// reloads systemd.
    pub fn set_dropin(&self, unit: &str, name: &str, text: Option<&str>) -> Result<()> {
        self.set_dropin_under("/etc/systemd/system", unit, name, text)
    }

    /// [`Self::set_dropin`] in systemd's runtime directory (/run: gone at
    /// reboot), where a rehearsal puts its overrides.
    pub fn set_runtime_dropin(&self, unit: &str, name: &str, text: Option<&str>) -> Result<()> {
        self.set_dropin_under("/run/systemd/system", unit, name, text)
    }

    fn set_dropin_under(&self, base: &str, unit: &str, name: &str, text: Option<&str>) -> Result<()> {
        let leader = self.leader().with_context(|| format!("the machine {} is not running", self.name))?;
        let dir = Utf8PathBuf::from(format!("/proc/{leader}/root{base}/{unit}.d"));
        let file = dir.join(format!("{name}.conf"));
        match text {
            Some(text) => {
                util::mkdir_mode(&dir, 0o755)?;
                util::write_file_mode(&file, text, 0o644)?;
            }
            None if file.exists() => fs::remove_file(&file).with_context(|| format!("removing {file}"))?,
            None => {}
        }
        self.systemctl(&["daemon-reload"]).map(drop)
    }

    /// The main process of a unit, as this machine numbers it.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        if !self.running() {
            return None;
        }
        let (code, out) = self.run(&["systemctl", "show", "--property=MainPID", "--value", unit]).ok()?;
        let inner: u32 = out.trim().parse().ok().filter(|p| code == 0 && *p != 0)?;
        self.host_pid(inner)
    }

    /// This machine's pid of the machine's pid `inner`: a process of the
    /// machine's pid namespace, or of one nested in it (a container's,
    /// whose pid as the machine numbers it is the second of its `NSpid`).
    pub(crate) fn host_pid(&self, inner: u32) -> Option<u32> {
        let leader = self.leader()?;
        let ns = pid_namespace(leader)?;
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
            let nspid: Vec<u32> = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|l| l.split_whitespace().filter_map(|p| p.parse().ok()).collect())
                .unwrap_or_default();
            let ours = match nspid.len() {
                2 => nspid[1] == inner && pid_namespace(pid).as_ref() == Some(&ns),
                3.. => nspid[1] == inner && descends_from(pid, leader),
                _ => false,
            };
            if ours {
                return Some(pid);
            }
        }
        None
    }

    /// The last lines of a unit's journal.
    pub fn journal_tail(&self, unit: &str, lines: usize) -> String {
        let n = lines.to_string();
        match self.run(&["journalctl", "-u", unit, "-n", &n, "--no-pager"]) {
            Ok((_, out)) => out,
            Err(e) => format!("(cannot read the journal of {unit}: {e:#})"),
        }
    }

    /// A reboot: powered off, then booted again on the same disk and
    /// waited for (nspawn ends on `systemctl reboot` unless a supervisor
    /// restarts it: the lab is that supervisor).
    pub fn reboot(&self) -> Result<()> {
        self.poweroff()?;
        self.boot()
    }

    /// `systemctl poweroff` and a wait until the machine is gone (its PID 1
    /// killed if it does not go). Its disk (the overlay) stays.
    pub fn poweroff(&self) -> Result<()> {
        let Some(nspawn) = self.nspawn_pid() else { return Ok(()) };
        let leader = self.leader();
        let _ = self.run(&["systemctl", "poweroff"]);
        if procs::wait_gone(&[nspawn], POWEROFF_TIMEOUT) {
            return Ok(());
        }
        eprintln!("lab: the machine {} does not power off; killing it", self.name);
        if let Some(leader) = leader {
            procs::signal(leader, rustix::process::Signal::KILL);
        }
        procs::signal(nspawn, rustix::process::Signal::KILL);
        if !procs::wait_gone(&[nspawn], Duration::from_secs(10)) {
            bail!("the machine {} (systemd-nspawn pid {nspawn}) does not stop", self.name);
        }
        Ok(())
    }
}

/// Whether `ancestor` is among a process's parents.
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        match procs::stat(at).map(|s| s.ppid) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) if parent > 1 => at = parent,
            _ => return false,
        }
    }
    false
}

/// The pid namespace of a process (the target of `/proc/<pid>/ns/pid`).
fn pid_namespace(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok().map(|p| p.to_string_lossy().into_owned())
}

/// The unit of a machine's PostgreSQL cluster, enabled as a packaged one
/// is (it comes back with a reboot): started means it accepts
/// connections (`Type=notify`; a server built without systemd's notify,
/// as [`crate::pgdist`]'s are, is waited for with `wait_with`'s pg_isready).
pub(crate) fn postgres_unit(
    label: &str,
    bin_dir: &Utf8Path,
    wait_with: Option<&Utf8Path>,
    data_dir: &Utf8Path,
    port: u16,
) -> String {
    let started = match wait_with {
        None => "Type=notify\n".to_string(),
        Some(client_bin_dir) => format!(
            "Type=exec\n\
             ExecStartPost=/bin/sh -c 'until {client_bin_dir}/pg_isready -q -h {data_dir} -p {port}; do sleep 0.2; done'\n"
        ),
    };
    format!(
        "# Written by the inmanta-migrate lab.\n\
         [Unit]\n\
         Description=PostgreSQL of the inmanta-migrate lab's {label}\n\
         \n\
         [Service]\n\
         {started}\
         User=postgres\n\
         ExecStart={bin_dir}/postgres -D {data_dir} -p {port} -k {data_dir} -c listen_addresses=127.0.0.1 \
         -c fsync=off -c jit=off\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         KillMode=mixed\n\
         KillSignal=SIGINT\n\
         TimeoutSec=120\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// The unit of a machine's inmanta server, logging to the journal.
/// `Type=exec`: `systemctl start` fails when the server cannot even be run.
pub(crate) fn server_unit(label: &str, dir: &Utf8Path, inmanta: &Utf8Path, index_url: &str) -> String {
    format!(
        "# Written by the inmanta-migrate lab.\n\
         [Unit]\n\
         Description=The {label}\n\
         After={POSTGRES_UNIT}\n\
         \n\
         [Service]\n\
         Type=exec\n\
         WorkingDirectory={dir}\n\
         Environment=PIP_CACHE_DIR={dir}/state/pip-cache\n\
         Environment=PIP_INDEX_URL={index_url}\n\
         ExecStart={inmanta} -vv --timed-logs -c {dir}/server.cfg server\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         TimeoutStopSec=60\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// The unit of a machine's sshd, on the config's port.
pub(crate) fn sshd_unit(config: &Utf8Path) -> String {
    format!(
        "# Written by the inmanta-migrate lab.\n\
         [Unit]\n\
         Description=sshd of the inmanta-migrate lab\n\
         \n\
         [Service]\n\
         RuntimeDirectory=sshd\n\
         ExecStart=/usr/sbin/sshd -D -e -f {config} -o PidFile=none\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_name_their_files() {
        let pg = postgres_unit("OLD side", "/usr/lib/postgresql/17/bin".into(), None, "/lab/i/x/old/pg".into(), 5);
        assert!(
            pg.contains("ExecStart=/usr/lib/postgresql/17/bin/postgres -D /lab/i/x/old/pg -p 5 -k /lab/i/x/old/pg")
        );
        assert!(pg.contains("Type=notify") && pg.contains("User=postgres"));
        let other =
            postgres_unit("NEW side", "/c/pg18/bin".into(), Some("/usr/lib/postgresql/17/bin".into()), "/d".into(), 5);
        assert!(other.contains("ExecStart=/c/pg18/bin/postgres -D /d") && other.contains("Type=exec"));
        assert!(other.contains("until /usr/lib/postgresql/17/bin/pg_isready -q -h /d -p 5;"));
        let srv = server_unit("NEW server", "/lab/i/x/new".into(), "/v/bin/inmanta".into(), "file:///idx/simple");
        assert!(srv.contains("ExecStart=/v/bin/inmanta -vv --timed-logs -c /lab/i/x/new/server.cfg server"));
        assert!(srv.contains("Restart=on-failure") && srv.contains(&format!("After={POSTGRES_UNIT}")));
        assert!(sshd_unit("/lab/i/x/ssh/sshd_config".into()).contains("-f /lab/i/x/ssh/sshd_config"));
    }

    #[test]
    fn enter_needs_a_running_machine() {
        let m = Booted {
            name: "imm-nothing-here".into(),
            dir: "/nonexistent/machine".into(),
            root: "/nonexistent/root".into(),
            binds: Vec::new(),
            containers: false,
        };
        assert!(!m.running());
        assert!(m.enter(None, &[]).is_err());
        assert_eq!(m.main_pid(SERVER_UNIT), None);
    }
}
