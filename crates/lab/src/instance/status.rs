//! What an instance runs where: `lab status`, for a person and as JSON.

use std::fmt;
use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use super::{CA_CERT, Instance, token_name};
use crate::seed::SeededEnv;
use crate::{Machine, Side};

/// What runs where; serializable for `lab status --json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub dir: Utf8PathBuf,
    pub config: Utf8PathBuf,
    pub old: SideStatus,
    pub new: SideStatus,
    pub envs: Vec<SeededEnv>,
    /// Auth and TLS of a secure instance (`None`: HTTP without auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<SecureStatus>,
}

/// Where a secure instance keeps what a client needs (never the values).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecureStatus {
    /// The self-signed CA of both servers' certificate.
    pub ca_file: Utf8PathBuf,
    /// API tokens (unscoped, client type `api`) for the OLD and NEW server.
    pub old_token_file: Utf8PathBuf,
    pub new_token_file: Utf8PathBuf,
    pub jwt_issuer: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SideStatus {
    pub side: Side,
    pub version: String,
    pub machine: Machine,
    /// The host name of a booted machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_name: Option<String>,
    /// The network namespace of a side on a host of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespace: Option<String>,
    /// Installed as Inmanta's container install (quadlets of user inmanta).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub containers: bool,
    pub venv: Utf8PathBuf,
    pub server: ServerStatus,
    pub postgres: PgStatus,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerStatus {
    pub api_url: String,
    pub port: u16,
    pub running: bool,
    pub pid: Option<u32>,
    /// `serverstatus.data.version` when it answers.
    pub answers_version: Option<String>,
    pub ctl: Utf8PathBuf,
    pub config: Utf8PathBuf,
    pub log_file: Utf8PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PgStatus {
    /// The PostgreSQL major the cluster runs.
    pub major: Option<u32>,
    pub port: u16,
    pub running: bool,
    pub pid: Option<u32>,
    /// libpq URL of the inmanta database, without password.
    pub dsn: String,
    /// libpq URL for the admin role, without password.
    pub admin_dsn: String,
    pub data_dir: Utf8PathBuf,
    pub socket_dir: Utf8PathBuf,
    pub log_file: Utf8PathBuf,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "instance {} ({})", self.name, self.dir)?;
        writeln!(f, "  config  {}", self.config)?;
        if let Some(sec) = &self.secure {
            writeln!(f, "  secure  auth=true (JWT issuer {}), TLS with CA {}", sec.jwt_issuer, sec.ca_file)?;
            writeln!(f, "          tokens {}  {}", sec.old_token_file, sec.new_token_file)?;
        }
        for s in [&self.old, &self.new] {
            let srv = &s.server;
            let state = match (srv.running, &srv.answers_version) {
                (true, Some(v)) => format!("running, pid {}, answers {v}", srv.pid.unwrap_or(0)),
                (true, None) => format!("running, pid {}, not answering", srv.pid.unwrap_or(0)),
                (false, _) => "stopped".to_string(),
            };
            writeln!(f, "  {} inmanta-core {} on {}", s.side.upper(), s.version, s.machine)?;
            writeln!(f, "    server    {}  {state}", srv.api_url)?;
            if let Some(ns) = &s.network_namespace {
                writeln!(f, "              on a host of its own: network namespace {ns} (`cargo xtask lab link`)")?;
            }
            match &s.machine_name {
                Some(name) if s.containers => writeln!(
                    f,
                    "              user unit {} of {} on machine {name} (a quadlet; `journalctl --user` is the log), ctl {}",
                    crate::containers::SERVER_UNIT,
                    crate::containers::USER,
                    srv.ctl
                )?,
                Some(name) => writeln!(
                    f,
                    "              unit {} of machine {name} (its journal is the log), ctl {}",
                    crate::machine::SERVER_UNIT,
                    srv.ctl
                )?,
                None => writeln!(f, "              ctl {}  log {}", srv.ctl, srv.log_file)?,
            }
            let pg = &s.postgres;
            let pgstate = match pg.pid {
                Some(pid) if pg.running => format!("running, pid {pid}"),
                _ => "stopped".to_string(),
            };
            let major = pg.major.map(|m| format!("PostgreSQL {m}, ")).unwrap_or_default();
            writeln!(f, "    postgres  {}  {major}{pgstate}", pg.dsn)?;
            match s.containers {
                true => writeln!(
                    f,
                    "              admin {}  in the container inmanta-db, data {}",
                    pg.admin_dsn, pg.data_dir
                )?,
                false => writeln!(f, "              admin {}  socket {}", pg.admin_dsn, pg.socket_dir)?,
            }
        }
        if !self.envs.is_empty() {
            writeln!(f, "  environments (as seeded on the OLD server):")?;
            for e in &self.envs {
                writeln!(
                    f,
                    "    {:<10} {}  {:?}{}{} released {:?}{}",
                    e.name,
                    e.id,
                    e.role,
                    if e.halted { " halted" } else { "" },
                    if e.auto_deploy { "" } else { " auto_deploy=false" },
                    e.released_versions,
                    if e.unreleased_versions.is_empty() {
                        String::new()
                    } else {
                        format!(" unreleased {:?}", e.unreleased_versions)
                    }
                )?;
            }
        }
        Ok(())
    }
}

impl Instance {
    /// What runs where.
    pub fn status(&self) -> Status {
        let side_status = |side: Side| {
            let server = self.server(side);
            let pid = server.pid();
            let answers_version = pid.and_then(|_| server.client(Duration::from_secs(2)).ok()?.server_version().ok());
            let cluster = self.cluster(side);
            let pg_pid = cluster.pid();
            let (port, address) = (self.state.ports.pg(side), self.address(side));
            SideStatus {
                side,
                version: self.version(side).to_string(),
                machine: self.machine(side),
                machine_name: self.booted(side).map(|m| m.name),
                network_namespace: self.net(side).map(|n| n.ns.clone()),
                containers: self.in_containers(side),
                venv: self.venv(side).to_path_buf(),
                server: ServerStatus {
                    api_url: server.api_url(),
                    port: server.port,
                    running: pid.is_some(),
                    pid,
                    answers_version,
                    ctl: server.ctl(),
                    config: server.cfg(),
                    log_file: server.log_file(),
                },
                postgres: PgStatus {
                    major: self.pg_major(side),
                    port,
                    running: pg_pid.is_some(),
                    pid: pg_pid,
                    dsn: format!("postgresql://inmanta@{address}:{port}/inmanta"),
                    admin_dsn: format!("postgresql://postgres@{address}:{port}/postgres"),
                    data_dir: cluster.data_dir.clone(),
                    socket_dir: cluster.socket_dir().to_path_buf(),
                    log_file: cluster.log_file(),
                },
            }
        };
        Status {
            name: self.state.name.clone(),
            dir: self.dir.clone(),
            config: self.config_path(),
            old: side_status(Side::Old),
            new: side_status(Side::New),
            envs: self.state.envs.clone(),
            secure: self.state.secure.as_ref().map(|claims| SecureStatus {
                ca_file: self.secrets_dir().join(CA_CERT),
                old_token_file: self.secrets_dir().join(token_name(Side::Old)),
                new_token_file: self.secrets_dir().join(token_name(Side::New)),
                jwt_issuer: claims.issuer.clone(),
            }),
        }
    }
}
