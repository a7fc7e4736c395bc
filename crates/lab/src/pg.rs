//! Throw-away PostgreSQL clusters run as user `postgres` with pg_ctl, on
//! this machine or in the lab's Debian 13 root, or as a systemd unit of a
//! booted machine.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use crate::containers::{self, Containers};
use crate::machine::{Booted, POSTGRES_UNIT, postgres_unit};
use crate::net::Net;
use crate::procs;
use crate::util::{self, shell};

/// Unix socket paths are limited to 107 bytes (sun_path).
const MAX_SOCKET_PATH: usize = 107;

/// One cluster: data directory (also its socket directory), port, binaries.
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    /// Argv prefix of the machine it runs on (empty: this one).
    pub enter: Vec<String>,
    /// Client programs (psql, pg_dump, pg_restore), as seen on that machine.
    pub bin_dir: Utf8PathBuf,
    /// Server programs (initdb, pg_ctl, postgres) of another major than the
    /// machine's own ([`crate::pgdist`]); `None`: the machine's, in `bin_dir`.
    pub server_bin_dir: Option<Utf8PathBuf>,
    pub data_dir: Utf8PathBuf,
    pub port: u16,
    /// The booted machine whose unit runs the cluster (`None`: pg_ctl).
    pub machine: Option<Booted>,
    /// The network namespace it runs in, on a host of its own: it listens
    /// on its address there too, for clients from this machine's end.
    pub net: Option<Net>,
    /// PostgreSQL in the `inmanta-db` container of the machine's user
    /// (Inmanta's container install); `port` is where it is published.
    pub container: Option<Containers>,
}

impl Cluster {
    pub fn log_file(&self) -> Utf8PathBuf {
        self.data_dir.join("postgresql.log")
    }

    /// The socket directory (`psql -h <it>`).
    pub fn socket_dir(&self) -> &Utf8Path {
        &self.data_dir
    }

    /// A program of the cluster's machine: `name` in its bin dir, or a plain
    /// command such as `runuser`.
    fn cmd<'a>(&self, sh: &'a xshell::Shell, program: &str) -> xshell::Cmd<'a> {
        util::cmd_in(sh, &self.enter, program)
    }

    fn bin(&self, name: &str) -> String {
        self.bin_dir.join(name).into_string()
    }

    fn server_bins(&self) -> &Utf8Path {
        self.server_bin_dir.as_deref().unwrap_or(&self.bin_dir)
    }

    fn server_bin(&self, name: &str) -> String {
        self.server_bins().join(name).into_string()
    }

    /// initdb as postgres: trust on the unix socket (the lab administers
    /// through it), scram-sha-256 over TCP (passwords are really checked).
    pub fn init(&self) -> Result<()> {
        if let Some(c) = &self.container {
            return self.init_container(c);
        }
        let sock = self.data_dir.join(format!(".s.PGSQL.{}.lock", self.port));
        if sock.as_str().len() > MAX_SOCKET_PATH {
            bail!("the socket path {sock} is longer than {MAX_SOCKET_PATH} bytes: use a shorter lab directory");
        }
        if self.data_dir.exists() {
            fs::remove_dir_all(&self.data_dir).with_context(|| format!("removing {}", self.data_dir))?;
        }
        util::mkdir_mode(&self.data_dir, 0o700)?;
        let sh = shell()?;
        let data = &self.data_dir;
        // The postgres user of the cluster's machine (its uid differs between
        // this machine and the root).
        self.cmd(&sh, "chown").args(["postgres:postgres", data.as_str()]).quiet().run()?;
        let initdb = self.server_bin("initdb");
        let out = self
            .cmd(&sh, "runuser")
            .args(["-u", "postgres", "--", &initdb, "-D", data.as_str(), "-U", "postgres"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() {
            bail!(
                "initdb {data} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(net) = &self.net {
            let hba = data.join("pg_hba.conf");
            let line = format!("host all all {}/32 scram-sha-256\n", net.near_address());
            fs::OpenOptions::new()
                .append(true)
                .open(&hba)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
                .with_context(|| format!("adding this machine's end of the link to {hba}"))?;
        }
        if let Some(machine) = &self.machine {
            let wait_with = self.server_bin_dir.as_ref().map(|_| self.bin_dir.as_path());
            let unit = postgres_unit(&machine.name, self.server_bins(), wait_with, &self.data_dir, self.port);
            machine.write_unit(POSTGRES_UNIT, &unit)?;
        }
        Ok(())
    }

    /// An empty data directory the container's user owns, the container's
    /// command and quadlets: the container's first start runs initdb.
    fn init_container(&self, c: &Containers) -> Result<()> {
        if self.data_dir.exists() {
            fs::remove_dir_all(&self.data_dir).with_context(|| format!("removing {}", self.data_dir))?;
        }
        util::mkdir_mode(&self.data_dir, 0o700)?;
        containers::give_to_user(&self.data_dir)?;
        let entry = c.machine.dir.join("db-entry.sh");
        util::write_file_mode(&entry, &containers::db_entry_script(crate::rootfs::PG_MAJOR), 0o755)?;
        containers::write_quadlet(&c.machine, "inmanta.network", &containers::network_quadlet())?;
        let quadlet = containers::db_quadlet(&c.version, &self.data_dir, &entry, self.port);
        containers::write_quadlet(&c.machine, "inmanta-db.container", &quadlet)
    }

    /// The postmaster's pid while it runs (first line of postmaster.pid;
    /// the unit's main process on a booted machine; the container's).
    pub fn pid(&self) -> Option<u32> {
        if let Some(c) = &self.container {
            return c.db_pid();
        }
        if let Some(machine) = &self.machine {
            return machine.main_pid(POSTGRES_UNIT);
        }
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        procs::pid_alive(pid).then_some(pid)
    }

    pub fn running(&self) -> bool {
        self.pid().is_some()
    }

    /// pg_ctl start, or the unit's (waits until it accepts connections).
    /// No-op when running.
    pub fn start(&self) -> Result<()> {
        if self.running() {
            return Ok(());
        }
        procs::check_port_free("PostgreSQL cluster", self.port, "Stop what uses it or choose other ports.")?;
        if let Some(c) = &self.container {
            return c.start_db();
        }
        if let Some(machine) = &self.machine {
            return machine.systemctl(&["start", POSTGRES_UNIT]).map(drop).with_context(|| {
                format!("the journal of {POSTGRES_UNIT}:\n{}", machine.journal_tail(POSTGRES_UNIT, 20))
            });
        }
        let sh = shell()?;
        let (pg_ctl, data, log) = (self.server_bin("pg_ctl"), &self.data_dir, self.log_file());
        let listen = crate::net::listen(self.net.as_ref());
        let opts =
            format!("-p {} -k {} -c listen_addresses={listen} -c fsync=off -c jit=off", self.port, self.data_dir);
        let out = self
            .cmd(&sh, "runuser")
            .args(["-u", "postgres", "--", &pg_ctl, "-D", data.as_str(), "-l", log.as_str()])
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl start of {data} failed: {}\n--- {log} ---\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                util::tail(&log, 20)
            );
        }
        Ok(())
    }

    /// pg_ctl stop -m fast (the unit's stop, SIGINT, on a booted machine).
    /// No-op when not running.
    pub fn stop(&self) -> Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        if let Some(c) = &self.container {
            return c.systemctl(&["stop", containers::DB_UNIT]).map(drop);
        }
        if let Some(machine) = &self.machine {
            return machine.systemctl(&["stop", POSTGRES_UNIT]).map(drop);
        }
        let sh = shell()?;
        let (pg_ctl, data) = (self.server_bin("pg_ctl"), &self.data_dir);
        let out = self
            .cmd(&sh, "runuser")
            .args(["-u", "postgres", "--", &pg_ctl, "-D", data.as_str(), "-m", "fast", "-w", "-t", "60", "stop"])
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() && procs::pid_alive(pid) {
            bail!("pg_ctl stop of {data} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        procs::wait_gone(&[pid], Duration::from_secs(10));
        Ok(())
    }

    /// Runs SQL through the unix socket (trust auth) as `user`; `-At` output.
    /// The SQL goes through stdin, never the command line.
    pub fn psql(&self, user: &str, db: &str, sql: &str) -> Result<String> {
        if let Some(c) = &self.container {
            return c.psql(user, db, sql);
        }
        let sh = shell()?;
        let (psql, sock, port) = (self.bin("psql"), self.socket_dir(), self.port.to_string());
        let out = self
            .cmd(&sh, &psql)
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", sock.as_str(), "-p", &port])
            .args(["-U", user, "-d", db, "-f", "-"])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stdin(sql)
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() {
            bail!("psql on port {} db {db} failed: {}", self.port, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Sets the passwords of `postgres` and `inmanta` and creates the empty
    /// database `inmanta` owned by `inmanta`.
    pub fn create_roles_and_db(&self, postgres_pw: &str, inmanta_pw: &str) -> Result<()> {
        self.psql(
            "postgres",
            "postgres",
            &format!(
                "ALTER ROLE postgres PASSWORD '{postgres_pw}';\n\
                 CREATE ROLE inmanta LOGIN PASSWORD '{inmanta_pw}';\n\
                 CREATE DATABASE inmanta OWNER inmanta;\n"
            ),
        )?;
        Ok(())
    }

    /// pg_dump -Fc of a database, through the socket.
    pub fn dump(&self, db: &str, file: &Utf8Path) -> Result<()> {
        let sh = shell()?;
        let (pg_dump, sock, port) = (self.bin("pg_dump"), self.socket_dir(), self.port.to_string());
        self.cmd(&sh, &pg_dump)
            .args(["-h", sock.as_str(), "-p", &port, "-U", "postgres", "-d", db])
            .args(["-Fc", "--no-owner", "--no-privileges", "-f", file.as_str()])
            .quiet()
            .run()
            .with_context(|| format!("pg_dump of {db} on port {port}"))
    }

    /// pg_restore of a custom-format dump into `db`, as `user`.
    pub fn restore(&self, db: &str, user: &str, file: &Utf8Path) -> Result<()> {
        let sh = shell()?;
        let (pg_restore, sock, port) = (self.bin("pg_restore"), self.socket_dir(), self.port.to_string());
        self.cmd(&sh, &pg_restore)
            .args(["-h", sock.as_str(), "-p", &port, "-U", user, "-d", db])
            .args(["--no-owner", "--no-privileges", "--exit-on-error", file.as_str()])
            .quiet()
            .run()
            .with_context(|| format!("pg_restore of {file} into {db} on port {port}"))
    }
}
