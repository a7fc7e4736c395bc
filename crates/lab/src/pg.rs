//! Throw-away PostgreSQL clusters run as user `postgres` with pg_ctl (no systemd).

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::cmd;

use crate::procs;
use crate::util::{self, shell};

/// Unix socket paths are limited to 107 bytes (sun_path).
const MAX_SOCKET_PATH: usize = 107;

/// One cluster: data directory (also its socket directory), port, binaries.
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    pub bin_dir: Utf8PathBuf,
    pub data_dir: Utf8PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn log_file(&self) -> Utf8PathBuf {
        self.data_dir.join("postgresql.log")
    }

    /// The socket directory (`psql -h <it>`).
    pub fn socket_dir(&self) -> &Utf8Path {
        &self.data_dir
    }

    fn bin(&self, name: &str) -> Utf8PathBuf {
        self.bin_dir.join(name)
    }

    /// initdb as postgres: trust on the unix socket (the lab administers
    /// through it), scram-sha-256 over TCP (passwords are really checked).
    pub fn init(&self) -> Result<()> {
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
        cmd!(sh, "chown postgres:postgres {data}").quiet().run()?;
        let initdb = self.bin("initdb");
        let out = cmd!(
            sh,
            "runuser -u postgres -- {initdb} -D {data} -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8"
        )
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
        Ok(())
    }

    /// The postmaster's pid while it runs (first line of postmaster.pid).
    pub fn pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        procs::pid_alive(pid).then_some(pid)
    }

    pub fn running(&self) -> bool {
        self.pid().is_some()
    }

    /// pg_ctl start (waits until it accepts connections). No-op when running.
    pub fn start(&self) -> Result<()> {
        if self.running() {
            return Ok(());
        }
        procs::check_port_free("PostgreSQL cluster", self.port, "Stop what uses it or choose other ports.")?;
        let sh = shell()?;
        let (pg_ctl, data, log) = (self.bin("pg_ctl"), &self.data_dir, self.log_file());
        let opts =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c jit=off", self.port, self.data_dir);
        let out = cmd!(sh, "runuser -u postgres -- {pg_ctl} -D {data} -l {log} -w -t 60 -o {opts} start")
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

    /// pg_ctl stop -m fast. No-op when not running.
    pub fn stop(&self) -> Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let sh = shell()?;
        let (pg_ctl, data) = (self.bin("pg_ctl"), &self.data_dir);
        let out = cmd!(sh, "runuser -u postgres -- {pg_ctl} -D {data} -m fast -w -t 60 stop")
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
        let sh = shell()?;
        let (psql, sock, port) = (self.bin("psql"), self.socket_dir(), self.port.to_string());
        let out = cmd!(sh, "{psql} -X -q -At -v ON_ERROR_STOP=1 -h {sock} -p {port} -U {user} -d {db} -f -")
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
        cmd!(sh, "{pg_dump} -h {sock} -p {port} -U postgres -d {db} -Fc --no-owner --no-privileges -f {file}")
            .quiet()
            .run()
            .with_context(|| format!("pg_dump of {db} on port {port}"))
    }

    /// pg_restore of a custom-format dump into `db`, as `user`.
    pub fn restore(&self, db: &str, user: &str, file: &Utf8Path) -> Result<()> {
        let sh = shell()?;
        let (pg_restore, sock, port) = (self.bin("pg_restore"), self.socket_dir(), self.port.to_string());
        cmd!(sh, "{pg_restore} -h {sock} -p {port} -U {user} -d {db} --no-owner --no-privileges --exit-on-error {file}")
            .quiet()
            .run()
            .with_context(|| format!("pg_restore of {file} into {db} on port {port}"))
    }
}
