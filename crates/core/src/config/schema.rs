//! The config file's schema: what may be written in it, with its defaults.
//! Values as written (paths made absolute at load); nothing here reads a
//! secret or a file: that is [`super::resolve`]'s.

use std::{fmt, time::Duration};

use camino::Utf8PathBuf;
use serde::{Deserialize, Deserializer};

use crate::secret::SecretSource;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this was read from.
    #[serde(skip)]
    pub path: Utf8PathBuf,
    pub work_dir: Utf8PathBuf,
    pub old: Orchestrator,
    pub new: Orchestrator,
    #[serde(default)]
    pub pg: PgTools,
    #[serde(default)]
    pub copy: CopyOptions,
    #[serde(default)]
    pub dump: DumpOptions,
    #[serde(default)]
    pub restore: RestoreOptions,
    #[serde(default)]
    pub reconcile: ReconcileOptions,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub rehearsal: RehearsalOptions,
    #[serde(default)]
    pub carry: CarryOptions,
    /// Servers started in turn on the restored database before `new`, so
    /// that each runs its own schema migrations (one major at a time).
    #[serde(default)]
    pub intermediate: Vec<Intermediate>,
}

/// One server between old and new (`[[intermediate]]`): the new
/// orchestrator's database, token and CA, with a server of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intermediate {
    /// The inmanta-core version it must answer as, like "15.5.9".
    pub version: String,
    /// Default: `new.api_url` (it runs instead of the new server).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Default: `new.host`.
    #[serde(default)]
    pub host: Option<HostConfig>,
    pub service: ServiceConfig,
}

impl Intermediate {
    /// The new orchestrator as this server sees it.
    pub fn orchestrator(&self, new: &Orchestrator) -> Orchestrator {
        Orchestrator {
            api_url: self.api_url.clone().unwrap_or_else(|| new.api_url.clone()),
            host: self.host.clone().unwrap_or_else(|| new.host.clone()),
            service: self.service.clone(),
            version_command: None,
            ..new.clone()
        }
    }
}

/// Which orchestrator: the source or the target of the migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Old,
    New,
}

impl Side {
    pub fn key(self) -> &'static str {
        match self {
            Side::Old => "old",
            Side::New => "new",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Orchestrator {
    pub api_url: String,
    #[serde(default)]
    pub token: Option<SecretSource>,
    #[serde(default)]
    pub ca_file: Option<Utf8PathBuf>,
    #[serde(default = "yes")]
    pub tls_verify: bool,
    #[serde(default)]
    pub version_command: Option<Vec<String>>,
    #[serde(default)]
    pub host: HostConfig,
    pub service: ServiceConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default)]
    pub ssh: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub identity_file: Option<Utf8PathBuf>,
    #[serde(default)]
    pub known_hosts: Option<Utf8PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    Systemd,
    Command,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub manager: Manager,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub sudo: bool,
    #[serde(default)]
    pub user: bool,
    #[serde(default)]
    pub start: Option<Vec<String>>,
    #[serde(default)]
    pub stop: Option<Vec<String>>,
    #[serde(default)]
    pub status: Option<Vec<String>>,
    #[serde(default)]
    pub log_file: Option<Utf8PathBuf>,
}

impl ServiceConfig {
    pub fn unit(&self) -> &str {
        self.unit.as_deref().unwrap_or("inmanta-server.service")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(default)]
    pub inmanta_config: Option<Utf8PathBuf>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<SecretSource>,
    #[serde(default)]
    pub passfile: Option<Utf8PathBuf>,
    #[serde(default)]
    pub sslmode: Option<String>,
    #[serde(default)]
    pub admin_user: Option<String>,
    #[serde(default)]
    pub admin_password: Option<SecretSource>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgTools {
    #[serde(default)]
    pub bin_dir: Option<Utf8PathBuf>,
}

impl PgTools {
    /// The path of one PostgreSQL client program.
    pub fn tool(&self, name: &str) -> String {
        match &self.bin_dir {
            Some(dir) => dir.join(name).into_string(),
            None => name.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    Directory,
    Custom,
    Plain,
}

impl DumpFormat {
    /// As the config names it.
    pub fn name(self) -> &'static str {
        match self {
            DumpFormat::Directory => "directory",
            DumpFormat::Custom => "custom",
            DumpFormat::Plain => "plain",
        }
    }

    /// pg_dump's `--format` letter.
    pub fn flag(self) -> &'static str {
        match self {
            DumpFormat::Directory => "d",
            DumpFormat::Custom => "c",
            DumpFormat::Plain => "p",
        }
    }
}

/// How the database moves (`[copy]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyOptions {
    #[serde(default)]
    pub mode: CopyMode,
    /// Online: how long `cutover` waits for the new side to apply the old
    /// side's last changes.
    #[serde(default = "minutes::<10>", deserialize_with = "duration")]
    pub catch_up_timeout: Duration,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions { mode: CopyMode::Offline, catch_up_timeout: minutes::<10>() }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMode {
    /// `dump` and `restore` in the window.
    #[default]
    Offline,
    /// `precopy` before the window (logical replication), `cutover` in it.
    Online,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpOptions {
    #[serde(default)]
    pub dir: Option<Utf8PathBuf>,
    #[serde(default = "directory")]
    pub format: DumpFormat,
    #[serde(default = "two")]
    pub jobs: u32,
    #[serde(default)]
    pub compress: u32,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions { dir: None, format: DumpFormat::Directory, jobs: 2, compress: 0 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreOptions {
    #[serde(default = "two")]
    pub jobs: u32,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions { jobs: 2 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileOptions {
    #[serde(default = "four")]
    pub concurrency: u32,
    #[serde(default)]
    pub release: bool,
    #[serde(default = "minutes::<20>", deserialize_with = "duration")]
    pub compile_timeout: Duration,
    #[serde(default = "minutes::<10>", deserialize_with = "duration")]
    pub dryrun_timeout: Duration,
    /// Short: every wait ends this much after what it waits for at worst,
    /// and each environment waits three times (bench downtime).
    #[serde(default = "half_a_second", deserialize_with = "duration")]
    pub poll_interval: Duration,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            concurrency: 4,
            release: false,
            compile_timeout: minutes::<20>(),
            dryrun_timeout: minutes::<10>(),
            poll_interval: half_a_second(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "seconds::<30>", deserialize_with = "duration")]
    pub api: Duration,
    #[serde(default = "minutes::<3>", deserialize_with = "duration")]
    pub stop: Duration,
    #[serde(default = "minutes::<30>", deserialize_with = "duration")]
    pub start: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { api: seconds::<30>(), stop: minutes::<3>(), start: minutes::<30>() }
    }
}

/// What an orchestrator holds outside its database that `carry` copies
/// from the old machine to the new one (`[carry]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarryOptions {
    /// Files or directories (every file below), each to the same path on
    /// the new machine or to another one.
    #[serde(default)]
    pub files: Vec<CarryEntry>,
}

/// `"/etc/inmanta/inmanta.cfg"` or `{ from = "...", to = "..." }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum CarryEntry {
    Same(Utf8PathBuf),
    Moved { from: Utf8PathBuf, to: Utf8PathBuf },
}

impl CarryEntry {
    pub fn from(&self) -> &Utf8PathBuf {
        match self {
            CarryEntry::Same(path) | CarryEntry::Moved { from: path, .. } => path,
        }
    }

    pub fn to(&self) -> &Utf8PathBuf {
        match self {
            CarryEntry::Same(path) | CarryEntry::Moved { to: path, .. } => path,
        }
    }
}

/// Where `rehearse` runs its servers (`[rehearsal]`): the new side's own
/// service, on a copy, with a port, a state directory and a database that
/// are never the new server's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RehearsalOptions {
    /// The rehearsal server's API port on the new machine.
    #[serde(default = "rehearsal_port")]
    pub port: u16,
    /// Its state directory on the new machine (the server must be able to
    /// create it); removed when the rehearsal ends.
    #[serde(default = "rehearsal_state_dir")]
    pub state_dir: Utf8PathBuf,
    /// The scratch database on the new PostgreSQL. Default:
    /// `<new.database.name>_rehearsal`.
    #[serde(default)]
    pub database: Option<String>,
}

impl Default for RehearsalOptions {
    fn default() -> Self {
        RehearsalOptions { port: rehearsal_port(), state_dir: rehearsal_state_dir(), database: None }
    }
}

fn rehearsal_port() -> u16 {
    8889
}
fn rehearsal_state_dir() -> Utf8PathBuf {
    // Inside Inmanta's default state_dir, which its packages give to the
    // server's user: the server can create it there.
    Utf8PathBuf::from("/var/lib/inmanta/rehearsal")
}

fn yes() -> bool {
    true
}
fn two() -> u32 {
    2
}
fn four() -> u32 {
    4
}
fn directory() -> DumpFormat {
    DumpFormat::Directory
}
fn seconds<const N: u64>() -> Duration {
    Duration::from_secs(N)
}
fn half_a_second() -> Duration {
    Duration::from_millis(500)
}
fn minutes<const N: u64>() -> Duration {
    Duration::from_secs(N * 60)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like \"30s\" or \"10m\": {e}")))
}

impl DatabaseConfig {
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or("127.0.0.1")
    }
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(5432)
    }
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("inmanta")
    }
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("inmanta")
    }
}
