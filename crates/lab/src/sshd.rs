//! An sshd for instances whose tool reaches the OLD side as another
//! machine: on this machine when the tool runs in the Debian 13 root and the
//! OLD server here, or as a unit of the OLD side's booted machine. Debian's
//! openssh-server with a config of its own, on 127.0.0.1 only, public-key
//! login for root with a key of the instance, strict host keys.
//!
//! Files under `<instance>/ssh/`: `sshd_config`, `host_ed25519`,
//! `authorized_keys`, `sshd.pid`, `sshd.log`, and the client side:
//! `id_ed25519` (0600) and `known_hosts`.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::cmd;

use crate::procs;
use crate::util::{self, shell};

const SSHD: &str = "/usr/sbin/sshd";

#[derive(Clone, Debug)]
pub(crate) struct Sshd {
    pub dir: Utf8PathBuf,
    pub port: u16,
}

impl Sshd {
    pub fn identity(&self) -> Utf8PathBuf {
        self.dir.join("id_ed25519")
    }
    pub fn known_hosts(&self) -> Utf8PathBuf {
        self.dir.join("known_hosts")
    }
    pub fn config(&self) -> Utf8PathBuf {
        self.dir.join("sshd_config")
    }
    fn pid_file(&self) -> Utf8PathBuf {
        self.dir.join("sshd.pid")
    }
    fn log(&self) -> Utf8PathBuf {
        self.dir.join("sshd.log")
    }

    /// Keys, authorized_keys, known_hosts and the config.
    pub fn write_files(&self) -> Result<()> {
        util::mkdir_mode(&self.dir, 0o700)?;
        let host_key = self.dir.join("host_ed25519");
        let host_pub = keygen(&host_key, "inmanta-migrate lab sshd")?;
        let client_pub = keygen(&self.identity(), "inmanta-migrate lab tool")?;
        let authorized = self.dir.join("authorized_keys");
        util::write_file_mode(&authorized, &format!("{client_pub}\n"), 0o600)?;
        util::write_file_mode(&self.known_hosts(), &format!("[127.0.0.1]:{} {host_pub}\n", self.port), 0o644)?;
        let text = format!(
            "# Written by the inmanta-migrate lab.\n\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized}\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PrintMotd no\n",
            port = self.port,
            pid = self.pid_file(),
        );
        util::write_file_mode(&self.config(), &text, 0o600)
    }

    /// Lets users other than root log in with the instance's key: sshd
    /// reads `AuthorizedKeysFile` as the user (no secret in it).
    pub fn let_users_in(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o711))?;
        fs::set_permissions(self.dir.join("authorized_keys"), fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()?;
        let cmd = procs::cmdline(pid)?;
        (procs::pid_alive(pid) && cmd.contains("sshd")).then_some(pid)
    }

    /// Starts the daemon (it detaches and writes its pid file) and waits
    /// until it listens. No-op when it runs.
    pub fn start(&self) -> Result<()> {
        if self.pid().is_some() {
            return Ok(());
        }
        procs::check_port_free("lab sshd", self.port, "Stop what uses it.")?;
        // The privilege separation directory (the package's unit makes it).
        util::mkdir_mode(Utf8Path::new("/run/sshd"), 0o755)?;
        let sh = shell()?;
        let (config, log) = (self.config(), self.log());
        let out = cmd!(sh, "{SSHD} -f {config} -E {log}").quiet().ignore_status().output()?;
        if !out.status.success() {
            bail!(
                "{SSHD} -f {config} failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                util::tail(&log, 10)
            );
        }
        self.wait_listening().with_context(|| util::tail(&log, 10))
    }

    /// Waits until the daemon accepts connections on its port.
    pub fn wait_listening(&self) -> Result<()> {
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("the lab's sshd does not listen on port {} after 20 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn stop(&self) -> Result<()> {
        if let Some(pid) = self.pid() {
            procs::signal(pid, rustix::process::Signal::TERM);
            if !procs::wait_gone(&[pid], Duration::from_secs(10)) {
                bail!("the lab's sshd (pid {pid}) does not stop");
            }
            // Sessions it forked (the daemon leads their process group).
            procs::kill_group_leftovers(pid, "sshd", Duration::from_secs(2));
        }
        Ok(())
    }
}

/// An ed25519 key pair without passphrase; returns "<type> <base64>".
fn keygen(path: &Utf8Path, comment: &str) -> Result<String> {
    for p in [path.to_path_buf(), Utf8PathBuf::from(format!("{path}.pub"))] {
        if p.exists() {
            fs::remove_file(&p).with_context(|| format!("removing {p}"))?;
        }
    }
    let sh = shell()?;
    cmd!(sh, "ssh-keygen -q -t ed25519 -N '' -C {comment} -f {path}").quiet().run().context("ssh-keygen")?;
    let public = fs::read_to_string(format!("{path}.pub"))?;
    Ok(public.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
}
