//! One lab instance: `up`, `status`, `down` and what tests need in between.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::api::Client;
use crate::containers::{self, Containers};
use crate::machine::Booted;
use crate::net::Net;
use crate::pg::Cluster;
use crate::prepare::Exec;
use crate::repo::{self, ModelVariant};
use crate::secure::{self, JwtClaims, TokenKind};
use crate::seed::{self, EnvRole, SeededEnv};
use crate::server::{Server, ServerSecurity};
use crate::sshd::Sshd;
use crate::timing::Timings;
use crate::{LabRoot, Machine, Ports, RootFs, Side, procs, util};

mod build;
mod status;

pub use build::{up, up_with};
pub use status::{PgStatus, SecureStatus, ServerStatus, SideStatus, Status};

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
    /// The NEW side as Inmanta's container install ([`containers`]); the
    /// tool reaches its user through the NEW machine's sshd on this port.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    new_containers: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sshd_new_port: Option<u16>,
    /// Intermediate servers on the NEW side (`[[intermediate]]`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    via: Vec<String>,
    /// This machine's PostgreSQL programs.
    pg_bin_dir: Utf8PathBuf,
    /// The PostgreSQL major of a side that runs another one than its
    /// machine's own ([`crate::pgdist`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pg_old: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pg_new: Option<u32>,
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
    /// The NEW machine's sshd, through which the tool reaches the user of
    /// a container install (its user manager and podman).
    fn sshd_new(&self) -> Option<Sshd> {
        self.state.sshd_new_port.map(|port| Sshd { dir: self.dir.join("ssh-new"), port })
    }
    /// Whether a side is installed as Inmanta's container install.
    pub fn in_containers(&self, side: Side) -> bool {
        side == Side::New && self.state.new_containers
    }
    /// The podman containers of a side installed as Inmanta's container install.
    fn containers(&self, side: Side) -> Option<Containers> {
        let machine = self.booted(side).filter(|_| self.in_containers(side))?;
        Some(Containers { machine, version: self.version(side).to_string() })
    }
    /// What the user manager of a container install says of its server's
    /// unit (`is-active`), and the containers podman runs (`podman ps`).
    pub fn container_state(&self, side: Side) -> Result<(String, String)> {
        let c = self.containers(side).with_context(|| format!("the {side} side is not a container install"))?;
        let active = c.run(&["systemctl", "--user", "is-active", containers::SERVER_UNIT], None)?.1;
        let (_, ps) = c.run(&["podman", "ps", "--format", "{{.Names}} {{.Ports}}"], None)?;
        Ok((active, ps))
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
        let containers = self.in_containers(side);
        (self.machine(side) == Machine::Booted).then(|| Booted {
            name: self.machine_name(side),
            dir: self.side_dir(side).join("machine"),
            root: match containers {
                true => containers::root_dir(&self.root),
                false => RootFs::of(&self.root).dir().to_path_buf(),
            },
            binds: vec![self.root.cache_dir(), self.root.instances_dir()],
            containers,
        })
    }
    /// Reboots a booted side's machine: what it had enabled comes back,
    /// what was disabled on it stays down.
    pub fn reboot(&self, side: Side) -> Result<()> {
        self.booted(side).context("the side does not run on a booted machine")?.reboot()
    }
    /// What systemd says of a booted side's server unit: `is-active` and
    /// `is-enabled` ("active", "enabled", ...).
    pub fn server_unit(&self, side: Side) -> Result<(String, String)> {
        let machine = self.booted(side).context("the side does not run on a booted machine")?;
        let ask = |verb: &str| -> Result<String> {
            Ok(machine.run(&["systemctl", verb, crate::machine::SERVER_UNIT])?.1.trim().to_owned())
        };
        Ok((ask("is-active")?, ask("is-enabled")?))
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
    /// A runtime drop-in (under /run) of a booted side's server unit.
    pub fn set_server_runtime_dropin(&self, side: Side, name: &str, text: Option<&str>) -> Result<()> {
        let machine = self.booted(side).with_context(|| format!("the {side} side is not a booted machine"))?;
        machine.set_runtime_dropin(crate::machine::SERVER_UNIT, name, text)
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

    /// The server's config file (`inmanta -c <it> server`).
    pub fn server_config(&self, side: Side) -> Utf8PathBuf {
        self.server(side).cfg()
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
            machine: self.booted(side).filter(|_| !self.in_containers(side)),
            net: self.net(side).cloned(),
            container: self.containers(side).map(|c| (c, vec![self.root.index_dir(), self.dir.join("repos")])),
        }
    }

    fn secrets_dir(&self) -> Utf8PathBuf {
        self.dir.join("secrets")
    }

    fn read_secret_file(&self, name: &str) -> Result<String> {
        let p = self.secrets_dir().join(name);
        Ok(fs::read_to_string(&p).with_context(|| format!("reading {p}"))?.trim().to_string())
    }

    /// The PostgreSQL major a side runs when it is not its machine's own.
    fn pg_major_of(&self, side: Side) -> Option<u32> {
        match side {
            Side::Old => self.state.pg_old,
            Side::New => self.state.pg_new,
        }
    }

    /// The PostgreSQL major a side's cluster runs.
    pub fn pg_major(&self, side: Side) -> Option<u32> {
        self.pg_major_of(side).or_else(|| crate::prepare::own_pg_major(self.machine(side), &self.state.pg_bin_dir))
    }

    fn cluster(&self, side: Side) -> Cluster {
        let exec = self.exec(side);
        Cluster {
            enter: exec.enter,
            bin_dir: exec.pg_bin_dir,
            server_bin_dir: self.pg_major_of(side).and_then(|m| crate::pgdist::bin_dir(&self.root, m).ok()),
            data_dir: self.side_dir(side).join("pg"),
            port: self.state.ports.pg(side),
            machine: self.booted(side),
            net: self.net(side).cloned(),
            container: self.containers(side),
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
        } else if let Err(e) = crate::rootfs::unmount_under(&self.dir) {
            // The machines' disks (their overlays), also a killed run's.
            errors.push(format!("{e:#}"));
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
}
