//! The developer lab: real inmanta-core servers and PostgreSQL clusters on this
//! machine, to migrate from and to.
//!
//! A lab *root* (default `/var/tmp/inmanta-migrate-lab`, or
//! `$INMANTA_MIGRATE_LAB_DIR`) holds a `cache/` (one Python venv per
//! inmanta-core version, a local PEP 503 package index with
//! `inmanta-module-std`, seeded database templates) and `instances/<name>/`.
//! An instance is one OLD side (PostgreSQL cluster + running inmanta server
//! with seeded environments) and one NEW side (PostgreSQL cluster with an empty
//! database, server configured but stopped), plus a generated
//! `inmanta-migrate.toml` that points the tool at both.
//!
//! Everything is blocking; callers need no async runtime.
//!
//! A *secure* instance ([`up_with`] and [`Security::Secure`], `lab up
//! --secure`) runs both servers with `[server] auth=true`, one HS256
//! `[auth_jwt_default]` signing section shared by OLD and NEW, and HTTPS with
//! a certificate of a self-signed CA; the tool's config then uses `https://`,
//! `token = { file = ... }` and `ca_file`.
//!
//! Layout of an instance directory:
//! ```text
//! lab.json                 state of the instance (ports, versions, seeded environments)
//! inmanta-migrate.toml     the tool's config for this instance
//! secrets/                 0700; generated passwords, one file each (0600);
//!                          secure instances also: ca.pem, server.pem (0644),
//!                          ca-key.pem, server-key.pem, jwt-key, old-token,
//!                          new-token (0600)
//! repos/<env>.git          bare git repo of each environment's project
//! work/                    the tool's work_dir
//! old/ new/                per side:
//!   ctl                      start|stop|status control script of the server
//!   server.cfg               the server's own config (0600, holds the DB password)
//!   server.pid state/ log/   the server's pid file, state dir, logs
//!   pg/                      PostgreSQL data dir (owned by postgres), also its unix socket dir
//! ```

// Tooling: the lab starts servers, clusters and machines itself.
#![allow(clippy::disallowed_methods)]

mod api;
mod config;
mod containers;
mod history;
mod index;
mod instance;
mod machine;
mod net;
mod pg;
pub mod pgdist;
mod prepare;
mod procs;
mod repo;
mod rootfs;
mod scratch;
mod secure;
mod seed;
mod server;
mod sshd;
mod template;
mod timing;
mod util;

use std::fmt;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

pub use api::{Access, Client, CompileOutcome};
pub use config::{ConfigInputs, ServiceInputs, SideConfigInputs, SshInputs, render_tool_config};
pub use history::HistoryFigures;
pub use index::{build_simple_index, normalize_project_name, project_name_of_dist};
pub use instance::{Instance, PgStatus, SecureStatus, ServerStatus, SideStatus, Status, up, up_with};
pub use net::Net;
pub use prepare::{Toolchain, apt_install, prepare, prepare_timed, tool_venv};
pub use procs::{pid_alive, port_is_free};
pub use repo::ModelVariant;
pub use rootfs::RootFs;
pub use scratch::{NEED_POSTGRES, ScratchCluster};
pub use secure::{JwtClaims, TokenKind, unrelated_ca_pem};
pub use seed::{AGENT, EnvRole, SeededEnv};
pub use timing::Timings;

/// Default OLD inmanta-core version (runs 13 schema migrations when moved to 14.0.0).
pub const DEFAULT_OLD_VERSION: &str = "8.7.6";
/// Default NEW inmanta-core version.
pub const DEFAULT_NEW_VERSION: &str = "14.0.0";
/// Default number of seeded environments (enough for every kind of variety).
pub const DEFAULT_ENVS: usize = 4;
/// Default instance name.
pub const DEFAULT_INSTANCE: &str = "default";
/// Environment variable overriding the lab root.
pub const LAB_DIR_ENV: &str = "INMANTA_MIGRATE_LAB_DIR";
/// Default lab root. Not under /root: the `postgres` user must be able to
/// traverse every parent directory of the clusters' data directories.
pub const DEFAULT_LAB_DIR: &str = "/var/tmp/inmanta-migrate-lab";
/// The version of `inmanta-module-std` the lab's package index serves
/// (8.x needs Python 3.12 and newer inmanta-core).
pub const STD_MODULE_VERSION: &str = "7.0.0";

/// One side of a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Old,
    New,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Old, Side::New];

    /// "old" or "new": also the name of the side's directory in an instance.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Old => "old",
            Side::New => "new",
        }
    }

    pub fn upper(self) -> &'static str {
        match self {
            Side::Old => "OLD",
            Side::New => "NEW",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one side's server and PostgreSQL run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    /// This Debian 12 machine: Python 3.11, PostgreSQL 15.
    #[default]
    Host,
    /// The lab's Debian 13 root ([`RootFs`]): Python 3.13, PostgreSQL 17.
    Trixie,
    /// That root booted as a machine of its own, systemd as its PID 1
    /// (`lab up --systemd`): PostgreSQL, the server and an sshd are units.
    Booted,
}

impl Machine {
    /// inmanta-core 15.0 and later need Python 3.12+ (and PostgreSQL 16+).
    pub fn for_version(version: &str) -> Machine {
        if major(version) >= 15 { Machine::Trixie } else { Machine::Host }
    }

    /// Whether it runs from the lab's Debian 13 root (chroot or booted).
    pub fn in_root(self) -> bool {
        self != Machine::Host
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Machine::Host => "this machine (Debian 12)",
            Machine::Trixie => "the lab's Debian 13 root",
            Machine::Booted => "a Debian 13 machine of its own (systemd)",
        })
    }
}

/// Loopback ports of one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub pg_old: u16,
    pub pg_new: u16,
    pub server_old: u16,
    pub server_new: u16,
    /// The NEW side's rehearsal server (`[rehearsal] port`). Instances made
    /// before it existed read 0: their config then says no port.
    #[serde(default)]
    pub rehearsal: u16,
}

impl Ports {
    /// The ports of the default instance.
    pub const DEFAULT: Ports =
        Ports { pg_old: 15431, pg_new: 15432, server_old: 18881, server_new: 18882, rehearsal: 18883 };

    pub fn pg(&self, side: Side) -> u16 {
        match side {
            Side::Old => self.pg_old,
            Side::New => self.pg_new,
        }
    }

    pub fn server(&self, side: Side) -> u16 {
        match side {
            Side::Old => self.server_old,
            Side::New => self.server_new,
        }
    }

    /// (what, port) pairs, for messages.
    pub fn named(&self) -> [(&'static str, u16); 5] {
        [
            ("OLD PostgreSQL cluster", self.pg_old),
            ("NEW PostgreSQL cluster", self.pg_new),
            ("OLD inmanta server", self.server_old),
            ("NEW inmanta server", self.server_new),
            ("NEW rehearsal server", self.rehearsal),
        ]
    }

    /// Five distinct free loopback ports, chosen by the kernel.
    pub fn pick_free() -> Result<Ports> {
        let p = procs::pick_free_ports(5)?;
        Ok(Ports { pg_old: p[0], pg_new: p[1], server_old: p[2], server_new: p[3], rehearsal: p[4] })
    }

    fn check_distinct(&self) -> Result<()> {
        let all = self.named();
        for (i, (a, pa)) in all.iter().enumerate() {
            for (b, pb) in &all[i + 1..] {
                if pa == pb {
                    bail!("the {a} and {b} ports are both {pa}: every port must be different");
                }
            }
        }
        Ok(())
    }
}

/// How the servers of an instance are reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// HTTP, `[server] auth=false`.
    #[default]
    Plain,
    /// HTTPS with a self-signed CA, `[server] auth=true` with a JWT signing
    /// section shared by OLD and NEW, an API token per side.
    Secure,
}

/// What `up` builds.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Instance name (a directory name under `<root>/instances`).
    pub name: String,
    /// inmanta-core version of the OLD server.
    pub old: String,
    /// inmanta-core version of the NEW server.
    pub new: String,
    /// Number of seeded environments.
    pub envs: usize,
    /// `None`: pick free ports.
    pub ports: Option<Ports>,
    /// Seed from scratch even when a template for (old, envs) exists.
    pub fresh: bool,
    /// inmanta-core versions of intermediate servers on the NEW side, in
    /// order (each migrates the NEW database before the next one starts).
    pub via: Vec<String>,
    /// Boot each side as a machine of its own with systemd (both 15.0+):
    /// the tool then manages both servers with `manager = "systemd"`.
    pub systemd: bool,
    /// With `systemd`: the NEW side as Inmanta's container install
    /// (module `containers`): the server and PostgreSQL in podman containers,
    /// quadlets of the machine's user `inmanta`.
    pub new_containers: bool,
    /// The OLD PostgreSQL with `wal_level = logical`, ready for the online
    /// copy (`copy.mode = "online"`); Debian's default is `replica`.
    pub logical: bool,
    /// These sides on a host of their own: a network namespace with an
    /// address of its own, whose link tests can cut ([`Instance::cut`]).
    pub own_network: Vec<Side>,
    /// PostgreSQL majors other than the machines' own (15 on this Debian
    /// 12, 17 in the root) for the OLD and NEW clusters ([`pgdist`]).
    pub old_pg: Option<u32>,
    pub new_pg: Option<u32>,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            name: DEFAULT_INSTANCE.to_string(),
            old: DEFAULT_OLD_VERSION.to_string(),
            new: DEFAULT_NEW_VERSION.to_string(),
            envs: DEFAULT_ENVS,
            ports: None,
            fresh: false,
            via: Vec::new(),
            systemd: false,
            new_containers: false,
            logical: false,
            own_network: Vec::new(),
            old_pg: None,
            new_pg: None,
        }
    }
}

/// The lab's root directory.
#[derive(Clone, Debug)]
pub struct LabRoot {
    dir: Utf8PathBuf,
}

impl LabRoot {
    /// A lab root at `dir` (must be absolute and not under /root).
    pub fn new(dir: impl Into<Utf8PathBuf>) -> Result<LabRoot> {
        let dir: Utf8PathBuf = dir.into();
        if !dir.is_absolute() {
            bail!("the lab directory must be an absolute path, got {dir}");
        }
        if !dir.as_str().chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)) {
            bail!("the lab directory {dir} may only contain [A-Za-z0-9/._-]");
        }
        if dir.starts_with("/root") {
            bail!(
                "the lab directory {dir} is under /root, which the postgres user cannot traverse; \
                 use e.g. {DEFAULT_LAB_DIR} (set {LAB_DIR_ENV} or --dir)"
            );
        }
        Ok(LabRoot { dir })
    }

    /// `$INMANTA_MIGRATE_LAB_DIR`, or `/var/tmp/inmanta-migrate-lab`.
    pub fn from_env() -> Result<LabRoot> {
        match std::env::var(LAB_DIR_ENV) {
            Ok(d) if !d.is_empty() => LabRoot::new(d),
            _ => LabRoot::new(DEFAULT_LAB_DIR),
        }
    }

    pub fn dir(&self) -> &Utf8Path {
        &self.dir
    }

    /// Downloads, venvs, the package index and templates: kept by `down --purge`.
    pub fn cache_dir(&self) -> Utf8PathBuf {
        self.dir.join("cache")
    }

    /// A cargo target folder of `cargo xtask ci`'s builds (`kind`: the
    /// workspace's, the fuzz targets', the portable binary's), outside the
    /// checkout: a clean clone's run reuses what the dependencies built.
    pub fn build_dir(&self, kind: &str) -> Utf8PathBuf {
        self.cache_dir().join("build").join(kind)
    }

    pub fn instances_dir(&self) -> Utf8PathBuf {
        self.dir.join("instances")
    }

    pub fn instance_dir(&self, name: &str) -> Utf8PathBuf {
        self.instances_dir().join(name)
    }

    /// The venv of one inmanta-core version.
    pub fn venv_dir(&self, version: &str) -> Utf8PathBuf {
        self.cache_dir().join("venvs").join(format!("inmanta-core-{version}"))
    }

    /// Directory of the local PEP 503 index (`<it>/simple` is the index URL's path).
    pub fn index_dir(&self) -> Utf8PathBuf {
        self.cache_dir().join("index")
    }

    /// `file:///.../simple`: what compiles use as their package index.
    pub fn index_url(&self) -> String {
        format!("file://{}/simple", self.index_dir())
    }

    /// pip's cache for the lab's own pip runs (nothing outside the lab dir).
    pub fn pip_cache_dir(&self) -> Utf8PathBuf {
        self.cache_dir().join("pip")
    }

    /// Debian roots of other releases (see [`RootFs`]): kept by `down --purge`.
    pub fn roots_dir(&self) -> Utf8PathBuf {
        self.dir.join("roots")
    }

    pub fn templates_dir(&self) -> Utf8PathBuf {
        self.cache_dir().join("templates")
    }

    /// Names of the instances that have a `lab.json`.
    pub fn instance_names(&self) -> Result<Vec<String>> {
        let dir = self.instances_dir();
        let mut names = Vec::new();
        if !dir.exists() {
            return Ok(names);
        }
        for entry in dir.read_dir_utf8().with_context(|| format!("reading {dir}"))? {
            let entry = entry?;
            if entry.path().join("lab.json").exists() {
                names.push(entry.file_name().to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes the cache (venvs, downloads, index, templates) and the
    /// Debian roots (unmounted first: their bind mounts are the cache).
    pub fn purge_cache(&self) -> Result<()> {
        RootFs::of(self).purge()?;
        let roots = self.roots_dir();
        if roots.exists() {
            std::fs::remove_dir_all(&roots).with_context(|| format!("removing {roots}"))?;
        }
        let cache = self.cache_dir();
        if cache.exists() {
            std::fs::remove_dir_all(&cache).with_context(|| format!("removing {cache}"))?;
        }
        Ok(())
    }

    /// Creates the root (mode 0755) and checks that `postgres` can traverse
    /// every parent.
    pub(crate) fn ensure(&self) -> Result<()> {
        util::mkdir_mode(&self.dir, 0o755)?;
        util::mkdir_mode(&self.instances_dir(), 0o755)?;
        util::mkdir_mode(&self.cache_dir(), 0o755)?;
        util::check_traversable_by_others(&self.dir)
    }
}

/// Checks an instance name: a plain directory name.
pub fn validate_instance_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if !ok {
        bail!("invalid instance name {name:?}: use 1-32 characters of [A-Za-z0-9_-], not starting with '-'");
    }
    Ok(())
}

/// Checks a version string like `8.7.6`.
pub fn validate_version(version: &str) -> Result<()> {
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        bail!("invalid inmanta-core version {version:?}: expected something like 8.7.6");
    }
    Ok(())
}

/// Major version number of `8.7.6` -> 8.
pub(crate) fn major(version: &str) -> u32 {
    major_minor(version).0
}

/// `15.5.9` -> (15, 5); a missing or odd part is 0.
pub(crate) fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_under_slash_root_is_refused() {
        assert!(LabRoot::new("/root/lab").is_err());
        assert!(LabRoot::new("relative/lab").is_err());
        let root = LabRoot::new("/var/tmp/x").unwrap();
        assert_eq!(root.index_url(), "file:///var/tmp/x/cache/index/simple");
        assert_eq!(root.venv_dir("8.7.6"), Utf8PathBuf::from("/var/tmp/x/cache/venvs/inmanta-core-8.7.6"));
    }

    #[test]
    fn names_and_versions() {
        assert!(validate_instance_name("default").is_ok());
        assert!(validate_instance_name("l11").is_ok());
        assert!(validate_instance_name("a/b").is_err());
        assert!(validate_instance_name("..").is_err());
        assert!(validate_instance_name("").is_err());
        assert!(validate_version("8.7.6").is_ok());
        assert!(validate_version("14.0.0").is_ok());
        assert!(validate_version("14").is_err());
        assert!(validate_version("14.0.0; rm").is_err());
        assert_eq!(major("11.5.5"), 11);
        assert_eq!(Machine::for_version("14.0.0"), Machine::Host);
        assert_eq!(Machine::for_version("15.5.9"), Machine::Trixie);
        assert_eq!(Machine::for_version("20.1.0"), Machine::Trixie);
    }

    #[test]
    fn duplicate_ports_are_refused() {
        assert!(Ports::DEFAULT.check_distinct().is_ok());
        let p = Ports { pg_new: 15431, ..Ports::DEFAULT };
        assert!(p.check_distinct().is_err());
    }
}
