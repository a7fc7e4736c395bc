//! The one TOML file that configures a migration (see `config/example.toml`).
//!
//! Loading parses, checks every rule that needs no network, reads the secrets
//! and the CA file, and turns relative paths into absolute ones. Any problem is
//! a [`ConfigError`] naming the file, the line and column where TOML knows
//! them, and the key.

use std::{fmt, time::Duration};

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Deserializer};

pub use crate::error::ConfigError;
use crate::secret::{Secret, SecretSource};

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
    pub dump: DumpOptions,
    #[serde(default)]
    pub restore: RestoreOptions,
    #[serde(default)]
    pub reconcile: ReconcileOptions,
    #[serde(default)]
    pub timeouts: Timeouts,
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
    /// Read at load time.
    #[serde(skip)]
    pub token_value: Option<Secret>,
    #[serde(skip)]
    pub ca_pem: Option<Vec<u8>>,
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
    /// pg_dump's `--format` letter.
    pub fn flag(self) -> &'static str {
        match self {
            DumpFormat::Directory => "d",
            DumpFormat::Custom => "c",
            DumpFormat::Plain => "p",
        }
    }
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
    #[serde(default = "seconds::<2>", deserialize_with = "duration")]
    pub poll_interval: Duration,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            concurrency: 4,
            release: false,
            compile_timeout: minutes::<20>(),
            dryrun_timeout: minutes::<10>(),
            poll_interval: seconds::<2>(),
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
fn minutes<const N: u64>() -> Duration {
    Duration::from_secs(N * 60)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like \"30s\" or \"10m\": {e}")))
}

/// A problem found after parsing, tied to a key.
struct Invalid {
    key: String,
    message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { key: key.into(), message: message.into() }
}

impl Config {
    /// Reads, parses and validates the file.
    pub fn load(path: &Utf8Path) -> Result<Config, ConfigError> {
        let plain =
            |key: Option<String>, message: String| ConfigError { file: path.to_owned(), location: None, key, message };
        let text = std::fs::read_to_string(path).map_err(|e| {
            plain(None, format!("cannot read it: {e} (give another file with --config or INMANTA_MIGRATE_CONFIG)"))
        })?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().map(Utf8Path::to_owned).unwrap_or_default();
        let base = if base.as_str().is_empty() { Utf8PathBuf::from(".") } else { base };
        let base = base.canonicalize_utf8().unwrap_or(base);
        config.path = path.to_owned();
        config.make_paths_absolute(&base);
        if let Err(problems) = config.validate() {
            let first = problems.into_iter().next().expect("validate returns at least one problem");
            return Err(ConfigError {
                file: path.to_owned(),
                location: locate_key(&text, &first.key),
                key: Some(first.key),
                message: first.message,
            });
        }
        Ok(config)
    }

    /// Parses TOML text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Utf8Path) -> Result<Config, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| {
            let span = e.span();
            ConfigError {
                file: path.to_owned(),
                location: span.as_ref().map(|s| line_col(text, s.start)),
                key: span.and_then(|s| key_at(text, s.start)),
                message: e.message().trim().to_owned(),
            }
        })
    }

    fn make_paths_absolute(&mut self, base: &Utf8Path) {
        let abs = |p: &mut Utf8PathBuf| *p = base.join(&*p);
        abs(&mut self.work_dir);
        for side in [&mut self.old, &mut self.new] {
            if let Some(p) = &mut side.ca_file {
                abs(p);
            }
            if let Some(t) = &mut side.token {
                t.make_paths_absolute(base);
            }
            for p in [&mut side.host.identity_file, &mut side.host.known_hosts].into_iter().flatten() {
                abs(p);
            }
            let db = &mut side.database;
            for s in [&mut db.password, &mut db.admin_password].into_iter().flatten() {
                s.make_paths_absolute(base);
            }
            if let Some(p) = &mut db.passfile {
                abs(p);
            }
        }
        for via in &mut self.intermediate {
            if let Some(host) = &mut via.host {
                for p in [&mut host.identity_file, &mut host.known_hosts].into_iter().flatten() {
                    abs(p);
                }
            }
        }
        if let Some(p) = &mut self.dump.dir {
            abs(p);
        }
        if let Some(p) = &mut self.pg.bin_dir {
            abs(p);
        }
    }

    pub fn side(&self, side: Side) -> &Orchestrator {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    /// The versions of the `[[intermediate]]` servers, in order.
    pub fn intermediate_versions(&self) -> Vec<&str> {
        self.intermediate.iter().map(|v| v.version.as_str()).collect()
    }

    /// Where the dump and its manifest live.
    pub fn dump_dir(&self) -> Utf8PathBuf {
        self.dump.dir.clone().unwrap_or_else(|| self.work_dir.join("dump"))
    }

    fn validate(&mut self) -> Result<(), Vec<Invalid>> {
        let mut problems = Vec::new();
        for side in [Side::Old, Side::New] {
            let key = side.key();
            let orch = match side {
                Side::Old => &mut self.old,
                Side::New => &mut self.new,
            };
            problems.extend(orch.validate(key));
        }
        let mut previous: Option<(usize, inmanta_api::ServerVersion)> = None;
        for (i, via) in self.intermediate.iter().enumerate() {
            let key = format!("intermediate[{i}]");
            match via.version.parse::<inmanta_api::ServerVersion>().ok() {
                None => problems.push(invalid(
                    format!("{key}.version"),
                    format!("{:?} is not a version like \"15.5.9\"", via.version),
                )),
                Some(v) => {
                    if let Some((j, prev)) = &previous
                        && v <= *prev
                    {
                        problems.push(invalid(
                            format!("{key}.version"),
                            format!(
                                "{} is not newer than intermediate[{j}] ({}): list them oldest first",
                                via.version, self.intermediate[*j].version
                            ),
                        ));
                    }
                    previous = Some((i, v));
                }
            }
            problems.extend(via.orchestrator(&self.new).validate(&key));
        }
        if same_url(&self.old.api_url, &self.new.api_url) {
            problems
                .push(invalid("new.api_url", "is the same as old.api_url: old and new must be two different servers"));
        }
        let (o, n) = (&self.old.database, &self.new.database);
        if o.inmanta_config.is_none()
            && n.inmanta_config.is_none()
            && o.host() == n.host()
            && o.port() == n.port()
            && o.name() == n.name()
        {
            problems.push(invalid(
                "new.database",
                format!(
                    "is the same database as old.database ({}:{}/{}): the restore would overwrite the source",
                    n.host(),
                    n.port(),
                    n.name()
                ),
            ));
        }
        let dump_dir = self.dump_dir();
        if self.work_dir.starts_with(&dump_dir) {
            problems.push(invalid("work_dir", format!("is inside the dump directory {dump_dir}; put the dump in the work directory, not the other way round")));
        }
        if self.dump.jobs == 0 {
            problems.push(invalid("dump.jobs", "must be at least 1"));
        }
        if self.dump.compress > 9 {
            problems.push(invalid("dump.compress", "must be a gzip level from 0 to 9"));
        } else if self.dump.compress > 0 && self.dump.format == DumpFormat::Plain {
            problems.push(invalid("dump.compress", "must be 0 with format = \"plain\" (psql reads plain SQL)"));
        }
        if self.restore.jobs == 0 {
            problems.push(invalid("restore.jobs", "must be at least 1"));
        }
        if self.reconcile.concurrency == 0 {
            problems.push(invalid("reconcile.concurrency", "must be at least 1"));
        }
        for (key, d) in [
            ("reconcile.compile_timeout", self.reconcile.compile_timeout),
            ("reconcile.dryrun_timeout", self.reconcile.dryrun_timeout),
            ("reconcile.poll_interval", self.reconcile.poll_interval),
            ("timeouts.api", self.timeouts.api),
            ("timeouts.stop", self.timeouts.stop),
            ("timeouts.start", self.timeouts.start),
        ] {
            if d.is_zero() {
                problems.push(invalid(key, "must be longer than 0s"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// Whether two API URLs name the same server: case, a trailing slash and a
/// default port do not count.
pub fn same_url(a: &str, b: &str) -> bool {
    normalize_url(a) == normalize_url(b)
}

fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/').to_ascii_lowercase();
    match url.strip_prefix("https://") {
        Some(rest) => format!("https://{}", strip_port(rest, ":443")),
        None => match url.strip_prefix("http://") {
            Some(rest) => format!("http://{}", strip_port(rest, ":80")),
            None => url,
        },
    }
}

fn strip_port(rest: &str, default: &str) -> String {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = authority.strip_suffix(default).unwrap_or(authority);
    if path.is_empty() { authority.to_owned() } else { format!("{authority}/{path}") }
}

impl Orchestrator {
    fn validate(&mut self, side: &str) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let k = |rest: &str| format!("{side}.{rest}");
        match check_api_url(&self.api_url) {
            Ok(()) => {}
            Err(m) => problems.push(invalid(k("api_url"), m)),
        }
        if let Some(source) = &self.token {
            match source.read() {
                Ok(secret) => self.token_value = Some(secret),
                Err(m) => problems.push(invalid(k("token"), m)),
            }
        }
        if let Some(ca) = &self.ca_file {
            match std::fs::read(ca) {
                Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => self.ca_pem = Some(pem),
                Ok(_) => problems.push(invalid(k("ca_file"), format!("{ca} holds no PEM certificate"))),
                Err(e) => problems.push(invalid(k("ca_file"), format!("cannot read {ca}: {e}"))),
            }
        }
        if let Some(cmd) = &self.version_command
            && cmd.is_empty()
        {
            problems.push(invalid(k("version_command"), "must name a program"));
        }
        if let Some(dest) = &self.host.ssh
            && (dest.trim().is_empty() || dest.starts_with('-'))
        {
            problems.push(invalid(k("host.ssh"), "must be `user@host` or `host`"));
        }
        let svc = &self.service;
        match svc.manager {
            Manager::Systemd => {
                for (name, v) in [("start", &svc.start), ("stop", &svc.stop), ("status", &svc.status)] {
                    if v.is_some() {
                        problems.push(invalid(k(&format!("service.{name}")), "only applies to manager = \"command\""));
                    }
                }
                if svc.unit().trim().is_empty() {
                    problems.push(invalid(k("service.unit"), "must not be empty"));
                }
            }
            Manager::Command => {
                for (name, v) in [("start", &svc.start), ("stop", &svc.stop), ("status", &svc.status)] {
                    match v {
                        None => problems.push(invalid(
                            k(&format!("service.{name}")),
                            "is required with manager = \"command\" (an argv, like [\"/usr/local/bin/ctl\", \"start\"])",
                        )),
                        Some(argv) if argv.is_empty() || argv[0].trim().is_empty() => {
                            problems.push(invalid(k(&format!("service.{name}")), "must name a program"));
                        }
                        Some(_) => {}
                    }
                }
                if svc.unit.is_some() || svc.sudo || svc.user {
                    problems
                        .push(invalid(k("service"), "`unit`, `sudo` and `user` only apply to manager = \"systemd\""));
                }
            }
        }
        let db = &mut self.database;
        if db.password.is_some() && db.passfile.is_some() {
            problems.push(invalid(k("database.passfile"), "give either `password` or `passfile`, not both"));
        }
        for (name, source) in [("password", &db.password), ("admin_password", &db.admin_password)] {
            if let Some(source) = source
                && let Err(m) = source.read()
            {
                problems.push(invalid(k(&format!("database.{name}")), m));
            }
        }
        if db.admin_password.is_some() && db.admin_user.is_none() {
            problems.push(invalid(k("database.admin_password"), "needs `admin_user`"));
        }
        if let Some(mode) = &db.sslmode
            && !["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].contains(&mode.as_str())
        {
            problems.push(invalid(k("database.sslmode"), format!("{mode:?} is not a libpq sslmode")));
        }
        if let Some(name) = &db.name
            && name.trim().is_empty()
        {
            problems.push(invalid(k("database.name"), "must not be empty"));
        }
        problems
    }
}

/// Checks a URL by hand: scheme, a host, no credentials, no query.
fn check_api_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if authority.contains('@') {
        return Err(format!("{url:?} must not carry credentials; use `token`"));
    }
    if rest.contains('?') || rest.contains('#') {
        return Err(format!("{url:?} must be a base URL without query or fragment"));
    }
    Ok(())
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

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Every key of the document with the byte offset where it is written.
fn all_keys(text: &str) -> Vec<(usize, String)> {
    fn walk(table: &toml::de::DeTable<'_>, prefix: &str, out: &mut Vec<(usize, String)>) {
        for (key, value) in table.iter() {
            let path =
                if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
            out.push((key.span().start, path.clone()));
            if let Some(inner) = value.get_ref().as_table() {
                walk(inner, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        walk(doc.get_ref(), "", &mut out);
    }
    out
}

/// The dotted key written at, or last before, `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    // An error about a whole table points at its header.
    if let Some(header) = text.get(offset..).and_then(|rest| rest.strip_prefix('[')) {
        let name = header.trim_start_matches('[').split(']').next().unwrap_or("").trim();
        if !name.is_empty() {
            return Some(name.to_owned());
        }
    }
    all_keys(text).into_iter().filter(|(start, _)| *start <= offset).max_by_key(|(start, _)| *start).map(|(_, k)| k)
}

/// Line and column of a dotted key, or of its nearest written parent.
fn locate_key(text: &str, dotted: &str) -> Option<(usize, usize)> {
    let keys = all_keys(text);
    let mut wanted = dotted;
    loop {
        if let Some((offset, _)) = keys.iter().filter(|(_, k)| k == wanted).min_by_key(|(o, _)| *o) {
            return Some(line_col(text, *offset));
        }
        wanted = &wanted[..wanted.rfind('.')?];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
work_dir = "/tmp/w"
[old]
api_url = "http://127.0.0.1:1"
[old.service]
manager = "systemd"
[old.database]
port = 5433
[new]
api_url = "http://127.0.0.1:2"
[new.service]
manager = "command"
start = ["ctl", "start"]
stop = ["ctl", "stop"]
status = ["ctl", "status"]
"#;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("c.toml")).unwrap();
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load_text(MINIMAL).unwrap();
        assert_eq!(c.dump.format, DumpFormat::Directory);
        assert_eq!(c.dump.jobs, 2);
        assert_eq!(c.reconcile.concurrency, 4);
        assert_eq!(c.timeouts.api, Duration::from_secs(30));
        assert_eq!(c.old.service.unit(), "inmanta-server.service");
        assert_eq!(c.dump_dir(), Utf8PathBuf::from("/tmp/w/dump"));
        assert!(c.old.tls_verify);
    }

    #[test]
    fn unknown_key_is_located() {
        let text = MINIMAL.replace("port = 5433", "port = 5433\nhots = \"x\"");
        let e = load_text(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("old.database.hots"), "{e}");
        assert_eq!(e.location, Some((9, 1)), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn semantic_errors_are_located_too() {
        let text = MINIMAL.replace("[old.database]\nport = 5433\n", "");
        let e = load_text(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("new.database"), "{e}");
        assert!(e.message.contains("same database"), "{e}");
    }

    #[test]
    fn urls_compare_without_default_ports_and_slashes() {
        assert!(same_url("https://Orch:443/", "https://orch"));
        assert!(same_url("http://orch:80", "HTTP://orch/"));
        assert!(!same_url("http://orch:8888", "http://orch"));
        assert!(!same_url("https://orch", "http://orch"));
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = load_text(&MINIMAL.replace("/tmp/w", "work")).unwrap();
        assert!(c.work_dir.is_absolute() && c.work_dir.ends_with("work"), "{}", c.work_dir);
    }
}
