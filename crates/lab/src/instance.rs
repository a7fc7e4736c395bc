//! One lab instance: `up`, `status`, `down` and what tests need in between.

use std::fmt;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::api::Client;
use crate::config::{ConfigInputs, ServiceInputs, SideConfigInputs, render_tool_config};
use crate::machine::{Booted, SSHD_UNIT, sshd_unit};
use crate::net::Net;
use crate::pg::Cluster;
use crate::prepare::{Exec, Toolchain, prepare_timed};
use crate::repo::{self, ModelVariant};
use crate::secure::{self, JwtClaims, TokenKind};
use crate::seed::{self, EnvRole, SeededEnv};
use crate::server::{Server, ServerSecurity};
use crate::sshd::Sshd;
use crate::timing::Timings;
use crate::{LabRoot, Machine, Ports, RootFs, Security, Side, UpOptions, procs, template, util};

const STATE_FORMAT: u32 = 1;
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(300);

/// `<instance>/lab.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LabState {
    format: u32,
    name: String,
    old_version: String,
    new_version: String,
    ports: Ports,
    /// Where each side runs (older lab.json files: both on this machine).
    #[serde(default)]
    machine_old: Machine,
    #[serde(default)]
    machine_new: Machine,
    /// The lab's sshd through which the tool reaches the OLD side: on this
    /// machine when the tool runs in the root and the OLD side here, a unit
    /// of the OLD machine when it is booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sshd_port: Option<u16>,
    /// Intermediate servers on the NEW side (`[[intermediate]]`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    via: Vec<String>,
    /// This machine's PostgreSQL programs.
    pg_bin_dir: Utf8PathBuf,
    venv_old: Utf8PathBuf,
    venv_new: Utf8PathBuf,
    index_url: String,
    project_id: Option<String>,
    envs: Vec<SeededEnv>,
    from_template: bool,
    created: String,
    timings: Timings,
    /// Secure instances (auth + TLS): the JWT claims both servers share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secure: Option<JwtClaims>,
    /// The network namespace of a side on a host of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    net_old: Option<Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    net_new: Option<Net>,
}

/// A lab instance (see the crate docs for its layout).
#[derive(Clone, Debug)]
pub struct Instance {
    root: LabRoot,
    dir: Utf8PathBuf,
    state: LabState,
}

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
            writeln!(f, "    postgres  {}  {pgstate}", pg.dsn)?;
            writeln!(f, "              admin {}  socket {}", pg.admin_dsn, pg.socket_dir)?;
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

fn secret_name(side: Side, role: &str) -> String {
    format!("{side}-{role}-password")
}

/// Files of a secure instance under `secrets/`.
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server-key.pem";
const JWT_KEY: &str = "jwt-key";

fn token_name(side: Side) -> String {
    format!("{side}-token")
}

impl Instance {
    /// Opens an instance from its `lab.json`.
    pub fn open(root: &LabRoot, name: &str) -> Result<Instance> {
        crate::validate_instance_name(name)?;
        let dir = root.instance_dir(name);
        let path = dir.join("lab.json");
        let text = fs::read_to_string(&path).with_context(|| format!("no lab instance {name:?} (reading {path})"))?;
        let state: LabState = serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
        if state.format != STATE_FORMAT {
            bail!("{path} has format {}, this lab writes {STATE_FORMAT}: `lab down --purge` it", state.format);
        }
        Ok(Instance { root: root.clone(), dir, state })
    }

    fn save(&self) -> Result<()> {
        util::write_atomic(&self.dir.join("lab.json"), &serde_json::to_string_pretty(&self.state)?, 0o644)
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }
    pub fn dir(&self) -> &Utf8Path {
        &self.dir
    }
    pub fn root(&self) -> &LabRoot {
        &self.root
    }
    /// The generated `inmanta-migrate.toml`.
    pub fn config_path(&self) -> Utf8PathBuf {
        self.dir.join("inmanta-migrate.toml")
    }
    /// The tool's work_dir.
    pub fn work_dir(&self) -> Utf8PathBuf {
        self.dir.join("work")
    }
    pub fn ports(&self) -> Ports {
        self.state.ports
    }
    /// The PostgreSQL client programs the tool uses (those of the NEW
    /// side's machine, as seen there).
    pub fn pg_bin_dir(&self) -> Utf8PathBuf {
        self.exec(Side::New).pg_bin_dir
    }
    /// Where one side's server and PostgreSQL run.
    pub fn machine(&self, side: Side) -> Machine {
        match side {
            Side::Old => self.state.machine_old,
            Side::New => self.state.machine_new,
        }
    }
    /// Where the tool runs: on the NEW side's machine, as operators run it.
    pub fn tool_machine(&self) -> Machine {
        self.machine(Side::New)
    }
    fn exec(&self, side: Side) -> Exec {
        let mut exec = Exec::of(&self.root, self.machine(side), &self.state.pg_bin_dir);
        if let Some(net) = self.net(side) {
            exec.enter.splice(0..0, net.enter());
        }
        exec
    }
    /// The network namespace of a side on a host of its own.
    pub fn net(&self, side: Side) -> Option<&Net> {
        match side {
            Side::Old => self.state.net_old.as_ref(),
            Side::New => self.state.net_new.as_ref(),
        }
    }
    /// Where the side's server and PostgreSQL are reached from here.
    pub fn address(&self, side: Side) -> String {
        crate::net::reach(self.net(side))
    }
    fn own_net(&self, side: Side) -> Result<&Net> {
        self.net(side)
            .with_context(|| format!("the {side} side has no network of its own (`lab up --own-network {side}`)"))
    }
    /// Cuts the link to a side on a host of its own: from now on every
    /// packet is dropped without a word, as on a pulled cable.
    pub fn cut(&self, side: Side) -> Result<()> {
        self.own_net(side)?.cut()
    }
    /// Restores the link [`Instance::cut`] cut.
    pub fn mend(&self, side: Side) -> Result<()> {
        self.own_net(side)?.mend()
    }
    /// Limits what a side on a host of its own sends to `kbit` kbit/s
    /// (`None`: no limit).
    pub fn throttle(&self, side: Side, kbit: Option<u32>) -> Result<()> {
        self.own_net(side)?.throttle(kbit)
    }
    /// The lab's sshd through which the tool (in the root) reaches the OLD
    /// side on this machine.
    fn sshd(&self) -> Option<Sshd> {
        self.state.sshd_port.map(|port| Sshd { dir: self.dir.join("ssh"), port })
    }
    /// A command that runs the tool's binary `bin` where the tool runs, in
    /// `cwd`, with only PATH and `envs` in its environment. In the root it
    /// runs a copy under `<instance>/tool/` (the instance dir is shared).
    pub fn tool_command(&self, bin: &Utf8Path, cwd: &Utf8Path, envs: &[(&str, &str)]) -> Result<std::process::Command> {
        match self.tool_machine() {
            Machine::Host => {
                let mut cmd = std::process::Command::new(bin);
                cmd.current_dir(cwd).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
                cmd.envs(envs.iter().copied());
                Ok(cmd)
            }
            machine @ (Machine::Trixie | Machine::Booted) => {
                let dir = self.dir.join("tool");
                util::mkdir_mode(&dir, 0o755)?;
                let copy = dir.join(bin.file_name().unwrap_or("inmanta-migrate"));
                let stale = |a: &Utf8Path, b: &Utf8Path| -> bool {
                    let (Ok(a), Ok(b)) = (fs::metadata(a), fs::metadata(b)) else { return true };
                    a.len() != b.len() || a.modified().ok() > b.modified().ok()
                };
                if stale(bin, &copy) {
                    let tmp = dir.join(".copy.tmp");
                    fs::copy(bin, &tmp).with_context(|| format!("copying {bin} into the root"))?;
                    fs::rename(&tmp, &copy)?;
                }
                self.ensure_machine(Side::New)?;
                let argv = match (machine, self.booted(Side::New)) {
                    (Machine::Booted, Some(booted)) => booted.enter(Some(cwd), envs)?,
                    _ => RootFs::of(&self.root).enter_at(Some(cwd), envs),
                };
                let mut cmd = std::process::Command::new(&argv[0]);
                cmd.args(&argv[1..]).arg(&copy).env_clear();
                Ok(cmd)
            }
        }
    }
    /// Mounts what the root of a side needs (gone after a reboot, or never
    /// made when an earlier session built the root) and boots a booted
    /// side's machine unless it runs.
    fn ensure_machine(&self, side: Side) -> Result<()> {
        match self.machine(side) {
            Machine::Host => Ok(()),
            Machine::Trixie => RootFs::of(&self.root).mount(),
            Machine::Booted => {
                RootFs::of(&self.root).mount()?;
                self.booted(side).context("a booted side has a machine")?.boot()
            }
        }
    }
    /// The machine of a booted side (`lab up --systemd`).
    fn booted(&self, side: Side) -> Option<Booted> {
        (self.machine(side) == Machine::Booted).then(|| Booted {
            name: self.machine_name(side),
            dir: self.side_dir(side).join("machine"),
            root: RootFs::of(&self.root).dir().to_path_buf(),
            binds: vec![self.root.cache_dir(), self.root.instances_dir()],
        })
    }
    /// The host name of a side's booted machine.
    pub fn machine_name(&self, side: Side) -> String {
        format!("imm-{}-{side}", self.state.name.replace('_', "-"))
    }
    /// Adds (`Some`) or removes (`None`) a drop-in `<name>.conf` of the
    /// unit `inmanta-server.service` on a booted side's machine, as an
    /// operator would (gone with the machine's next boot).
    pub fn set_server_dropin(&self, side: Side, name: &str, text: Option<&str>) -> Result<()> {
        let machine = self.booted(side).with_context(|| format!("the {side} side is not a booted machine"))?;
        machine.set_dropin(crate::machine::SERVER_UNIT, name, text)
    }
    pub fn version(&self, side: Side) -> &str {
        match side {
            Side::Old => &self.state.old_version,
            Side::New => &self.state.new_version,
        }
    }
    pub fn api_url(&self, side: Side) -> String {
        self.server(side).api_url()
    }
    /// A client of one side's API (with the CA and the token of a secure
    /// instance).
    pub fn client(&self, side: Side) -> Result<Client> {
        self.server(side).client(Duration::from_secs(30))
    }
    /// Whether the servers run with auth and TLS.
    pub fn is_secure(&self) -> bool {
        self.state.secure.is_some()
    }
    /// The JWT issuer and audience both servers share (secure instances).
    pub fn jwt_claims(&self) -> Option<&JwtClaims> {
        self.state.secure.as_ref()
    }
    /// The CA of the servers' certificate (secure instances).
    pub fn ca_file(&self) -> Option<Utf8PathBuf> {
        self.is_secure().then(|| self.secrets_dir().join(CA_CERT))
    }
    /// The API token file of one side (secure instances).
    pub fn token_file(&self, side: Side) -> Option<Utf8PathBuf> {
        self.is_secure().then(|| self.secrets_dir().join(token_name(side)))
    }
    /// The API token of one side (secure instances).
    pub fn token(&self, side: Side) -> Result<String> {
        let path = self.token_file(side).context("a plain instance has no token")?;
        Ok(fs::read_to_string(&path).with_context(|| format!("reading {path}"))?.trim().to_string())
    }
    /// A new token for either server of a secure instance (both share the
    /// signing key): valid, expired, or signed with another key.
    pub fn mint_token(&self, kind: TokenKind) -> Result<String> {
        let claims = self.state.secure.as_ref().context("a plain instance has no JWT signing key")?;
        let key = secure::decode_jwt_key(&self.read_secret_file(JWT_KEY)?)?;
        secure::mint(&key, claims, "inmanta-migrate-lab-test", kind)
    }
    /// The seeded environments (as they were before any migration).
    pub fn envs(&self) -> &[SeededEnv] {
        &self.state.envs
    }
    pub fn env(&self, name: &str) -> Option<&SeededEnv> {
        self.state.envs.iter().find(|e| e.name == name)
    }
    pub fn project_id(&self) -> Option<&str> {
        self.state.project_id.as_deref()
    }
    /// Whether the OLD database came from a template.
    pub fn from_template(&self) -> bool {
        self.state.from_template
    }
    /// Timings of the `up` that made this instance.
    pub fn timings(&self) -> &Timings {
        &self.state.timings
    }
    /// `file:///.../simple`: the package index the projects use.
    pub fn index_url(&self) -> &str {
        &self.state.index_url
    }
    pub fn venv(&self, side: Side) -> &Utf8Path {
        match side {
            Side::Old => &self.state.venv_old,
            Side::New => &self.state.venv_new,
        }
    }
    pub fn side_dir(&self, side: Side) -> Utf8PathBuf {
        self.dir.join(side.as_str())
    }
    /// The ctl script (start|stop|status) of one side's server.
    pub fn ctl_path(&self, side: Side) -> Utf8PathBuf {
        self.server(side).ctl()
    }
    pub fn server_log(&self, side: Side) -> Utf8PathBuf {
        self.server(side).log_file()
    }

    /// The intermediate servers: the NEW side's database, port and secrets,
    /// a directory `via-<version>` of their own.
    fn via_servers(&self) -> Vec<Server> {
        let new = self.server(Side::New);
        self.state
            .via
            .iter()
            .map(|v| Server {
                dir: self.dir.join(format!("via-{v}")),
                venv: self.root.venv_dir(v),
                version: v.clone(),
                root: self.root_dir(Machine::for_version(v)),
                ..new.clone()
            })
            .collect()
    }

    /// Every server of the instance: OLD, NEW and the intermediates.
    fn servers(&self) -> Vec<Server> {
        let mut all: Vec<Server> = Side::BOTH.into_iter().map(|side| self.server(side)).collect();
        all.extend(self.via_servers());
        all
    }

    /// The Debian root a server's ctl script enters (`None`: this machine,
    /// or a booted machine, whose ctl drives its unit).
    fn root_dir(&self, machine: Machine) -> Option<Utf8PathBuf> {
        (machine == Machine::Trixie).then(|| RootFs::of(&self.root).dir().to_path_buf())
    }

    fn server(&self, side: Side) -> Server {
        let security = self.state.secure.as_ref().map(|claims| ServerSecurity {
            ca_file: self.secrets_dir().join(CA_CERT),
            cert_file: self.secrets_dir().join(SERVER_CERT),
            key_file: self.secrets_dir().join(SERVER_KEY),
            jwt_key_file: self.secrets_dir().join(JWT_KEY),
            token_file: self.secrets_dir().join(token_name(side)),
            claims: claims.clone(),
        });
        Server {
            dir: self.side_dir(side),
            venv: self.venv(side).to_path_buf(),
            version: self.version(side).to_string(),
            port: self.state.ports.server(side),
            security,
            root: self.root_dir(self.machine(side)),
            machine: self.booted(side),
            net: self.net(side).cloned(),
        }
    }

    fn secrets_dir(&self) -> Utf8PathBuf {
        self.dir.join("secrets")
    }

    fn read_secret_file(&self, name: &str) -> Result<String> {
        let p = self.secrets_dir().join(name);
        Ok(fs::read_to_string(&p).with_context(|| format!("reading {p}"))?.trim().to_string())
    }

    fn cluster(&self, side: Side) -> Cluster {
        let exec = self.exec(side);
        Cluster {
            enter: exec.enter,
            bin_dir: exec.pg_bin_dir,
            data_dir: self.side_dir(side).join("pg"),
            port: self.state.ports.pg(side),
            machine: self.booted(side),
            net: self.net(side).cloned(),
        }
    }

    /// File holding a generated password (`role`: "db" for inmanta, "postgres").
    pub fn secret_file(&self, side: Side, role: &str) -> Utf8PathBuf {
        self.dir.join("secrets").join(secret_name(side, role))
    }

    fn read_secret(&self, side: Side, role: &str) -> Result<String> {
        let p = self.secret_file(side, role);
        Ok(fs::read_to_string(&p).with_context(|| format!("reading {p}"))?.trim().to_string())
    }

    /// Password of the `inmanta` role of one side's cluster.
    pub fn db_password(&self, side: Side) -> Result<String> {
        self.read_secret(side, "db")
    }

    /// Password of the `postgres` role of one side's cluster.
    pub fn admin_password(&self, side: Side) -> Result<String> {
        self.read_secret(side, "postgres")
    }

    /// Every generated secret, so tests can assert none leaks: passwords
    /// and, for a secure instance, both API tokens, the JWT signing key and
    /// the private keys.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        for side in Side::BOTH {
            for role in ["db", "postgres"] {
                if let Ok(s) = self.read_secret(side, role) {
                    out.push(s);
                }
            }
        }
        if self.is_secure() {
            let names =
                [token_name(Side::Old), token_name(Side::New), JWT_KEY.into(), SERVER_KEY.into(), CA_KEY.into()];
            for name in names {
                if let Ok(s) = self.read_secret_file(&name) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Admin SQL through the cluster's unix socket (as `postgres`), `-At` output.
    pub fn psql(&self, side: Side, db: &str, sql: &str) -> Result<String> {
        self.cluster(side).psql("postgres", db, sql)
    }

    pub fn server_running(&self, side: Side) -> bool {
        self.server(side).pid().is_some()
    }
    pub fn server_pid(&self, side: Side) -> Option<u32> {
        self.server(side).pid()
    }

    /// Starts one side's server through its ctl script and waits until it
    /// answers with its version. Refuses to start the NEW server on an empty
    /// database (it would create a fresh schema there).
    pub fn start_server(&self, side: Side) -> Result<()> {
        self.ensure_machine(side)?;
        let cluster = self.cluster(side);
        if !cluster.running() {
            bail!("the {side} PostgreSQL cluster is not running");
        }
        if side == Side::New {
            let tables = self.psql(
                side,
                "inmanta",
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            )?;
            if tables.trim() == "0" {
                bail!("refusing to start the NEW server on an empty database: restore a dump into it first");
            }
        }
        self.server(side).start(SERVER_START_TIMEOUT)
    }

    /// Stops one side's server (ctl stop) and what is left of its process group.
    pub fn stop_server(&self, side: Side) -> Result<()> {
        self.server(side).stop()
    }

    pub fn postgres_running(&self, side: Side) -> bool {
        self.cluster(side).running()
    }
    pub fn postgres_pid(&self, side: Side) -> Option<u32> {
        self.cluster(side).pid()
    }
    pub fn start_postgres(&self, side: Side) -> Result<()> {
        self.ensure_machine(side)?;
        self.cluster(side).start()
    }
    pub fn stop_postgres(&self, side: Side) -> Result<()> {
        self.cluster(side).stop()
    }

    /// The bare repo of an environment.
    pub fn repo_path(&self, env_name: &str) -> Utf8PathBuf {
        self.dir.join("repos").join(format!("{env_name}.git"))
    }
    pub fn repo_url(&self, env_name: &str) -> String {
        format!("file://{}", self.repo_path(env_name))
    }

    /// Pushes a new commit with the model `variant` to an environment's repo
    /// (the next compile with `update` picks it up).
    pub fn push_model(&self, env_name: &str, variant: ModelVariant) -> Result<()> {
        let bare = self.repo_path(env_name);
        if !bare.exists() {
            bail!("no repository for environment {env_name:?} ({bare})");
        }
        let role = self.env(env_name).map(|e| e.role);
        let project = self.project(role.is_some_and(EnvRole::protects_auto_deploy));
        repo::commit(&bare, &project, variant, &format!("{variant:?} model"), &self.dir.join("tmp"))
    }

    /// What the project.yml of an environment's repository says.
    fn project(&self, protect_auto_deploy: bool) -> repo::Project<'_> {
        repo::Project { index_url: &self.state.index_url, protect_auto_deploy }
    }

    /// Checks through the OLD server's API that the seeded variety is there
    /// (waits for deploys first). The OLD server must run.
    pub fn verify_seed(&self) -> Result<()> {
        seed::verify(&self.client(Side::Old)?, &self.state.envs, &mut Timings::default())
    }

    /// Every pid the lab started that still runs: servers and their process
    /// groups (autostarted agents, compilers), postmasters and their children.
    pub fn lab_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for server in self.servers() {
            if let Some(pid) = server.recorded_pid() {
                if procs::pid_alive(pid) {
                    pids.push(pid);
                }
                pids.extend(procs::group_members_of(pid, server.cfg().as_str()));
            }
            // A booted machine's server has no pid file.
            pids.extend(server.pid());
        }
        for side in Side::BOTH {
            if let Some(pm) = self.cluster(side).pid() {
                pids.push(pm);
                pids.extend(procs::children(pm));
            }
        }
        if let Some(pid) = self.sshd().and_then(|s| s.pid()) {
            pids.push(pid);
        }
        // Everything on a booted machine ends with it.
        for side in Side::BOTH {
            if let Some(pid) = self.booted(side).and_then(|m| m.nspawn_pid()) {
                pids.push(pid);
            }
        }
        pids.sort();
        pids.dedup();
        pids
    }

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

    /// Stops both servers (ctl stop, then their process groups) and both
    /// clusters (pg_ctl stop -m fast); with `purge`, removes the instance
    /// directory (the cache stays).
    pub fn down(&self, purge: bool) -> Result<()> {
        let mut errors = Vec::new();
        for server in self.servers() {
            if let Err(e) = server.stop() {
                errors.push(format!("{} server: {e:#}", server.dir.file_name().unwrap_or("?")));
            }
        }
        for side in Side::BOTH {
            if let Err(e) = self.stop_postgres(side) {
                errors.push(format!("{side} PostgreSQL: {e:#}"));
            }
        }
        if let Some(Err(e)) = self.sshd().map(|s| s.stop()) {
            errors.push(format!("sshd: {e:#}"));
        }
        for side in Side::BOTH {
            if let Some(Err(e)) = self.booted(side).map(|m| m.poweroff()) {
                errors.push(format!("{side} machine: {e:#}"));
            }
        }
        let left = self.lab_pids();
        if !left.is_empty() {
            errors.push(format!("processes still running: {left:?}"));
        }
        for net in Side::BOTH.into_iter().filter_map(|side| self.net(side)) {
            if let Err(e) = net.delete() {
                errors.push(format!("network namespace {}: {e:#}", net.ns));
            }
        }
        if !errors.is_empty() {
            bail!("lab down {}: {}", self.name(), errors.join("; "));
        }
        if purge && self.dir.exists() {
            fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir))?;
        }
        Ok(())
    }

    fn write_config(&self) -> Result<()> {
        let sshd = self.sshd();
        let side = |side: Side| SideConfigInputs {
            ssh: match (side, &sshd) {
                (Side::Old, Some(sshd)) => Some(crate::config::SshInputs {
                    port: sshd.port,
                    identity_file: sshd.identity(),
                    known_hosts: sshd.known_hosts(),
                }),
                _ => None,
            },
            api_url: self.api_url(side),
            inmanta: self.venv(side).join("bin/inmanta"),
            service: match self.machine(side) {
                Machine::Booted => ServiceInputs::Systemd,
                _ => ServiceInputs::Ctl { ctl: self.ctl_path(side), log_file: self.server_log(side) },
            },
            address: self.address(side),
            db_port: self.state.ports.pg(side),
            db_password_file: self.secret_file(side, "db"),
            admin_password_file: self.secret_file(side, "postgres"),
            token_file: self.token_file(side),
            ca_file: self.ca_file(),
        };
        let text = render_tool_config(&ConfigInputs {
            instance: self.state.name.clone(),
            work_dir: self.work_dir(),
            pg_bin_dir: self.pg_bin_dir(),
            old: side(Side::Old),
            new: side(Side::New),
            intermediates: self
                .via_servers()
                .iter()
                .map(|s| crate::config::IntermediateInputs {
                    version: s.version.clone(),
                    service: ServiceInputs::Ctl { ctl: s.ctl(), log_file: s.log_file() },
                })
                .collect(),
        });
        util::write_file_mode(&self.config_path(), &text, 0o644)
    }

    /// A CA, the servers' certificate and key, the JWT signing key and one
    /// API token per side, under `secrets/` (keys and tokens 0600).
    fn write_secure_files(&self, claims: &JwtClaims) -> Result<()> {
        let dir = self.secrets_dir();
        let pki = secure::generate_pki(&self.state.name)?;
        util::write_file_mode(&dir.join(CA_CERT), &pki.ca_cert, 0o644)?;
        util::write_file_mode(&dir.join(CA_KEY), &pki.ca_key, 0o600)?;
        util::write_file_mode(&dir.join(SERVER_CERT), &pki.server_cert, 0o644)?;
        util::write_file_mode(&dir.join(SERVER_KEY), &pki.server_key, 0o600)?;
        let key = secure::gen_jwt_key()?;
        util::write_file_mode(&dir.join(JWT_KEY), &key, 0o600)?;
        let key = secure::decode_jwt_key(&key)?;
        for side in Side::BOTH {
            let token = secure::mint(&key, claims, &format!("inmanta-migrate-lab-{side}"), TokenKind::Valid)?;
            util::write_file_mode(&dir.join(token_name(side)), &token, 0o600)?;
        }
        Ok(())
    }

    /// Everything of `up` after the instance directory exists.
    fn build(&mut self, opts: &UpOptions, timings: &mut Timings) -> Result<()> {
        let (fresh, envs) = (opts.fresh, opts.envs);
        for side in Side::BOTH {
            util::write_file_mode(&self.secret_file(side, "db"), &util::gen_secret(), 0o600)?;
            util::write_file_mode(&self.secret_file(side, "postgres"), &util::gen_secret(), 0o600)?;
        }
        if let Some(claims) = self.state.secure.clone() {
            timings.time("certificates + tokens", || self.write_secure_files(&claims))?;
        }
        if self.state.machine_old == Machine::Booted {
            timings.time("machines (boot, both)", || -> Result<()> {
                for side in Side::BOTH {
                    self.ensure_machine(side)?;
                }
                Ok(())
            })?;
        }
        timings.time("clusters (initdb + start, both)", || -> Result<()> {
            for side in Side::BOTH {
                util::mkdir_mode(&self.side_dir(side), 0o755)?;
                let c = self.cluster(side);
                c.init()?;
                c.start()?;
                c.create_roles_and_db(&self.admin_password(side)?, &self.db_password(side)?)?;
                if opts.logical && side == Side::Old {
                    // A restart, as the DBA's would be.
                    c.psql("postgres", "postgres", "ALTER SYSTEM SET wal_level = logical")?;
                    c.stop()?;
                    c.start()?;
                }
            }
            Ok(())
        })?;
        if let Some(sshd) = self.sshd() {
            timings.time("sshd", || -> Result<()> {
                sshd.write_files()?;
                match self.booted(Side::Old) {
                    // The OLD machine's own sshd, reached like another host's.
                    Some(machine) => {
                        machine.write_unit(SSHD_UNIT, &sshd_unit(&sshd.config()))?;
                        machine.systemctl(&["start", SSHD_UNIT])?;
                        sshd.wait_listening()
                    }
                    None => sshd.start(),
                }
            })?;
        }
        for side in Side::BOTH {
            let label =
                format!("{} server (inmanta-core {}), instance {}", side.upper(), self.version(side), self.state.name);
            self.server(side).write_files(
                self.state.ports.pg(side),
                &self.db_password(side)?,
                &label,
                self.index_url(),
            )?;
        }
        for server in self.via_servers() {
            let label = format!("intermediate server (inmanta-core {}), instance {}", server.version, self.state.name);
            server.write_files(
                self.state.ports.pg(Side::New),
                &self.db_password(Side::New)?,
                &label,
                self.index_url(),
            )?;
        }
        self.write_config()?;

        let old = self.cluster(Side::Old);
        let api = self.client(Side::Old)?;
        let tmp = self.dir.join("tmp");
        let secure = self.is_secure();
        let _templates = template::in_use();
        let tpl = if fresh { None } else { template::load(&self.root, &self.state.old_version, envs, secure) };
        if let Some((t, dump)) = tpl {
            eprintln!("lab: restoring the seeded template {dump}");
            timings.time("repos", || -> Result<()> {
                for e in &t.envs {
                    repo::create_repo(&self.repo_path(&e.name), &self.project(e.role.protects_auto_deploy()), &tmp)?;
                }
                Ok(())
            })?;
            timings.time("template restore", || -> Result<()> {
                old.restore("inmanta", "inmanta", &dump)?;
                let code = dump.with_file_name("files");
                template::copy_dir(&code, &self.side_dir(Side::Old).join("state/server/files"))?;
                let repos = self.dir.join("repos");
                self.psql(
                    Side::Old,
                    "inmanta",
                    &format!("UPDATE environment SET repo_url = 'file://{repos}/' || name || '.git';"),
                )?;
                Ok(())
            })?;
            self.state.project_id = Some(t.project_id.clone());
            self.state.envs = t.envs.clone();
            self.state.from_template = true;
            self.save()?;
            timings.time("server start (old)", || self.server(Side::Old).start(SERVER_START_TIMEOUT))?;
            seed::verify(&api, &t.envs, timings).with_context(|| {
                format!("the instance restored from the template {dump} is not as seeded (`lab up --fresh` re-seeds and replaces the template)")
            })?;
        } else {
            let plan = seed::plan(envs, &self.state.old_version);
            timings.time("repos", || -> Result<()> {
                for (name, role) in &plan {
                    repo::create_repo(&self.repo_path(name), &self.project(role.protects_auto_deploy()), &tmp)?;
                }
                Ok(())
            })?;
            timings.time("server start (old)", || self.server(Side::Old).start(SERVER_START_TIMEOUT))?;
            let (project, seeded) = seed::seed(&api, &plan, |n| self.repo_url(n), timings)?;
            self.state.project_id = Some(project.clone());
            self.state.envs = seeded;
            self.state.from_template = false;
            self.save()?;
            let saved = timings.time("template save", || {
                let code = self.side_dir(Side::Old).join("state/server/files");
                template::save(
                    &self.root,
                    &self.state.old_version,
                    envs,
                    &old,
                    &project,
                    &self.state.envs,
                    secure,
                    &code,
                )
            })?;
            eprintln!("lab: saved the seeded template {saved}");
        }
        Ok(())
    }
}

/// Builds an instance: installs what is missing, creates both clusters,
/// starts the OLD server with seeded environments (from a template when one
/// exists), leaves the NEW side with an empty database and a stopped server.
/// An instance of the same name is stopped and replaced. Prints timings.
pub fn up(root: &LabRoot, opts: &UpOptions) -> Result<Instance> {
    up_with(root, opts, Security::Plain)
}

/// [`up`], with both servers plain (HTTP, no auth) or secure (auth + TLS).
pub fn up_with(root: &LabRoot, opts: &UpOptions, security: Security) -> Result<Instance> {
    let t_total = Instant::now();
    crate::validate_instance_name(&opts.name)?;
    crate::validate_version(&opts.old)?;
    crate::validate_version(&opts.new)?;
    if opts.envs == 0 {
        bail!("at least one environment is needed");
    }
    root.ensure()?;
    let dir = root.instance_dir(&opts.name);
    if let Ok(prev) = Instance::open(root, &opts.name)
        && !prev.lab_pids().is_empty()
    {
        eprintln!("lab: instance {} is running: stopping it first", opts.name);
        prev.down(false)?;
    }
    let ports = match opts.ports {
        Some(p) => p,
        None => Ports::pick_free()?,
    };
    let (mut machine_old, mut machine_new) = (Machine::for_version(&opts.old), Machine::for_version(&opts.new));
    if opts.systemd {
        if !machine_old.in_root() || !machine_new.in_root() {
            bail!(
                "--systemd boots both sides from the lab's Debian 13 root, which runs inmanta-core 15.0 and later: \
                 {} -> {} has a side on {}",
                opts.old,
                opts.new,
                Machine::Host
            );
        }
        if !opts.via.is_empty() {
            bail!("--systemd with --via is not supported: intermediate servers run beside a chroot NEW server only");
        }
        (machine_old, machine_new) = (Machine::Booted, Machine::Booted);
    }
    // The tool runs on the NEW side's machine; it reaches another machine's
    // OLD side through an sshd.
    let ssh_to_old = (machine_old == Machine::Host && machine_new == Machine::Trixie) || machine_old == Machine::Booted;
    let sshd_port = ssh_to_old.then(|| procs::pick_free_ports(1).map(|p| p[0])).transpose()?;
    if !opts.own_network.is_empty()
        && (machine_old != Machine::Host
            || machine_new != Machine::Host
            || !opts.via.is_empty()
            || security == Security::Secure)
    {
        bail!(
            "a network of its own is made for sides on {} only (inmanta-core before 15.0), without --via and --secure \
             (the certificate names 127.0.0.1): {} -> {}",
            Machine::Host,
            opts.old,
            opts.new
        );
    }
    ports.check_distinct()?;
    for (what, port) in ports.named() {
        procs::check_port_free(
            what,
            port,
            "Stop what uses it, or choose other ports (see `cargo xtask lab up --help`).",
        )?;
    }

    let mut timings = Timings::default();
    for v in &opts.via {
        crate::validate_version(v)?;
        if Machine::for_version(v) != machine_new {
            bail!(
                "the intermediate inmanta-core {v} would run on {}, the new server on {machine_new}: the lab runs intermediates beside the new server only",
                Machine::for_version(v)
            );
        }
    }
    let mut versions: Vec<&str> = vec![&opts.old, &opts.new];
    versions.extend(opts.via.iter().map(String::as_str));
    let tc: Toolchain = prepare_timed(root, &versions, &mut timings)?;

    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing the previous instance {dir}"))?;
    }
    util::mkdir_mode(&dir, 0o755)?;
    util::mkdir_mode(&dir.join("secrets"), 0o700)?;
    util::mkdir_mode(&dir.join("repos"), 0o755)?;
    util::mkdir_mode(&dir.join("work"), 0o755)?;
    util::mkdir_mode(&dir.join("tmp"), 0o755)?;
    let mut nets = [None, None];
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        let ns = format!("imn-{}-{side}", opts.name);
        crate::net::delete_namespace(&ns)?;
        if opts.own_network.contains(&side) {
            nets[i] = Some(Net::pick_and_create(&ns)?);
        }
    }
    let mut inst = Instance {
        root: root.clone(),
        dir,
        state: LabState {
            format: STATE_FORMAT,
            name: opts.name.clone(),
            old_version: opts.old.clone(),
            new_version: opts.new.clone(),
            ports,
            machine_old,
            machine_new,
            sshd_port,
            via: opts.via.clone(),
            pg_bin_dir: tc.pg_bin_dir.clone(),
            venv_old: tc.venv(&opts.old).to_path_buf(),
            venv_new: tc.venv(&opts.new).to_path_buf(),
            index_url: tc.index_url.clone(),
            project_id: None,
            envs: Vec::new(),
            from_template: false,
            created: jiff::Timestamp::now().to_string(),
            timings: Timings::default(),
            secure: (security == Security::Secure).then(|| JwtClaims::for_instance(&opts.name)),
            net_old: nets[0].clone(),
            net_new: nets[1].clone(),
        },
    };
    // Written first, so `down` can clean up whatever a failed `up` started.
    inst.save()?;
    if let Err(e) = inst.build(opts, &mut timings) {
        eprintln!("lab: up failed; stopping what it started (logs stay in {})", inst.dir);
        if let Err(e2) = inst.down(false) {
            eprintln!("lab: {e2:#}");
        }
        return Err(e);
    }
    timings.add("total", t_total.elapsed());
    inst.state.timings = timings;
    inst.save()?;
    eprintln!("lab: timings of `up` ({}):\n{}", inst.name(), inst.state.timings.table());
    Ok(inst)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused before anything is installed or started.
    #[test]
    fn systemd_machines_need_both_sides_from_the_root_and_no_intermediates() {
        let tmp = tempfile::tempdir().unwrap();
        let root = LabRoot::new(Utf8PathBuf::from_path_buf(tmp.path().join("lab")).unwrap()).unwrap();
        let opts = |old: &str, new: &str, via: &[&str]| UpOptions {
            name: "sd".into(),
            old: old.into(),
            new: new.into(),
            via: via.iter().map(|v| v.to_string()).collect(),
            systemd: true,
            ..UpOptions::default()
        };
        let err = up(&root, &opts("14.0.0", "15.5.9", &[])).unwrap_err();
        assert!(format!("{err:#}").contains("--systemd boots both sides from the lab's Debian 13 root"), "{err:#}");
        let err = up(&root, &opts("15.5.9", "19.0.0", &["18.2.0"])).unwrap_err();
        assert!(format!("{err:#}").contains("--systemd with --via is not supported"), "{err:#}");
        assert!(!root.instance_dir("sd").exists(), "no instance was made");
    }

    #[test]
    fn own_networks_are_for_sides_on_this_machine_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = LabRoot::new(Utf8PathBuf::from_path_buf(tmp.path().join("lab")).unwrap()).unwrap();
        let opts = |new: &str| UpOptions {
            name: "net".into(),
            old: "14.0.0".into(),
            new: new.into(),
            own_network: vec![Side::Old],
            ..UpOptions::default()
        };
        let err = up(&root, &opts("15.5.9")).unwrap_err();
        assert!(format!("{err:#}").contains("a network of its own is made for sides on this machine"), "{err:#}");
        let err = up_with(&root, &opts("14.0.0"), Security::Secure).unwrap_err();
        assert!(format!("{err:#}").contains("--secure"), "{err:#}");
        assert!(!root.instance_dir("net").exists(), "no instance was made");
    }
}
