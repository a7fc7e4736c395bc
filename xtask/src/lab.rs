//! `cargo xtask lab up|status|down|prepare|link`.

use anyhow::{Result, bail};
use camino::Utf8PathBuf;
use clap::{Args, Subcommand, ValueEnum};
use lab::{Instance, LabRoot, Ports, Security, UpOptions};

#[derive(Args)]
pub struct Lab {
    /// The lab directory [default: $INMANTA_MIGRATE_LAB_DIR or /var/tmp/inmanta-migrate-lab].
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<Utf8PathBuf>,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Install what is missing, create both clusters, start the OLD server with seeded environments.
    Up(Up),
    /// Show what runs where.
    Status(Status),
    /// Stop everything the lab started.
    Down(Down),
    /// Only install what is missing (apt packages, venvs, package index).
    Prepare(Prepare),
    /// Cut, mend or slow down the link to a side on a host of its own (`up --own-network`).
    Link(Link),
}

impl Lab {
    pub fn run(self) -> Result<()> {
        let root = match self.dir {
            Some(d) => LabRoot::new(d)?,
            None => LabRoot::from_env()?,
        };
        match self.command {
            LabCommand::Up(c) => c.run(&root),
            LabCommand::Status(c) => c.run(&root),
            LabCommand::Down(c) => c.run(&root),
            LabCommand::Prepare(c) => c.run(&root),
            LabCommand::Link(c) => c.run(&root),
        }
    }
}

#[derive(Args)]
struct Up {
    /// inmanta-core version of the OLD server.
    #[arg(long, default_value = lab::DEFAULT_OLD_VERSION)]
    old: String,
    /// inmanta-core version of the NEW server.
    #[arg(long, default_value = lab::DEFAULT_NEW_VERSION)]
    new: String,
    /// Number of seeded environments.
    #[arg(long, default_value_t = lab::DEFAULT_ENVS)]
    envs: usize,
    /// Instance name; an instance of that name is stopped and replaced.
    #[arg(long, default_value = lab::DEFAULT_INSTANCE)]
    name: String,
    /// Seed from scratch, ignoring a cached template.
    #[arg(long)]
    fresh: bool,
    /// An intermediate NEW-side server (repeat, oldest first): each migrates the NEW database in turn.
    #[arg(long, value_name = "VERSION")]
    via: Vec<String>,
    /// Boot each side as a machine of its own (systemd-nspawn, systemd as PID 1; both 15.0+):
    /// PostgreSQL, inmanta-server.service and the OLD side's sshd are units, and the tool's config
    /// uses manager = "systemd" on both sides (the OLD one over ssh).
    #[arg(long)]
    systemd: bool,
    /// With --systemd: the NEW side installed as Inmanta's container install (both 15.0+): user
    /// `inmanta` of its machine runs the server and PostgreSQL as podman quadlets (`systemctl --user`),
    /// PostgreSQL published on 127.0.0.1 for the tool; the tool reaches the machine as `inmanta` by ssh.
    #[arg(long, requires = "systemd")]
    new_containers: bool,
    /// The OLD PostgreSQL with wal_level = logical, ready for `copy.mode = "online"` (the tool's config
    /// stays offline; set `[copy] mode = "online"` in it to try the online copy).
    #[arg(long)]
    logical: bool,
    /// Run both servers with auth (a JWT signing section shared by OLD and NEW) and TLS (a self-signed
    /// CA); the tool's config then uses https://, `token = { file = ... }` and `ca_file`.
    #[arg(long)]
    secure: bool,
    /// Put these sides (old, new, or both: `old,new`) on a host of their own: a network namespace
    /// with an address of its own, which `lab link cut` cuts (sides on this machine only).
    #[arg(long, value_delimiter = ',', value_parser = parse_side)]
    own_network: Vec<lab::Side>,
    /// Run the OLD cluster on this PostgreSQL major (12, 13, 14, 16 or 18) instead of its machine's own
    /// (15 on this host, 17 in the Debian 13 root): server programs from npm's @embedded-postgres.
    #[arg(long, value_name = "MAJOR")]
    old_pg: Option<u32>,
    /// The NEW cluster's PostgreSQL major, as `--old-pg`.
    #[arg(long, value_name = "MAJOR")]
    new_pg: Option<u32>,
    /// Port of the OLD PostgreSQL cluster [default instance: 15431; others: a free port].
    #[arg(long)]
    pg_old_port: Option<u16>,
    /// Port of the NEW PostgreSQL cluster [default instance: 15432; others: a free port].
    #[arg(long)]
    pg_new_port: Option<u16>,
    /// Port of the OLD server [default instance: 18881; others: a free port].
    #[arg(long)]
    server_old_port: Option<u16>,
    /// Port of the NEW server [default instance: 18882; others: a free port].
    #[arg(long)]
    server_new_port: Option<u16>,
}

impl Up {
    fn run(self, root: &LabRoot) -> Result<()> {
        let mut ports = if self.name == lab::DEFAULT_INSTANCE { Ports::DEFAULT } else { Ports::pick_free()? };
        if let Some(p) = self.pg_old_port {
            ports.pg_old = p;
        }
        if let Some(p) = self.pg_new_port {
            ports.pg_new = p;
        }
        if let Some(p) = self.server_old_port {
            ports.server_old = p;
        }
        if let Some(p) = self.server_new_port {
            ports.server_new = p;
        }
        let inst = lab::up_with(
            root,
            &UpOptions {
                name: self.name,
                old: self.old,
                new: self.new,
                envs: self.envs,
                ports: Some(ports),
                fresh: self.fresh,
                via: self.via,
                systemd: self.systemd,
                new_containers: self.new_containers,
                logical: self.logical,
                own_network: self.own_network,
                old_pg: self.old_pg,
                new_pg: self.new_pg,
            },
            if self.secure { Security::Secure } else { Security::Plain },
        )?;
        println!("{}", inst.status());
        println!(
            "The NEW side has an empty database and a stopped server: restore into it before `{} start`.",
            inst.ctl_path(lab::Side::New)
        );
        Ok(())
    }
}

#[derive(Args)]
struct Status {
    /// Only this instance [default: all].
    #[arg(long)]
    name: Option<String>,
    /// Print JSON: {"root": ..., "instances": [...]}.
    #[arg(long)]
    json: bool,
}

fn instances(root: &LabRoot, name: Option<&str>) -> Result<Vec<Instance>> {
    match name {
        Some(n) => Ok(vec![Instance::open(root, n)?]),
        None => root.instance_names()?.iter().map(|n| Instance::open(root, n)).collect(),
    }
}

impl Status {
    fn run(self, root: &LabRoot) -> Result<()> {
        let statuses: Vec<lab::Status> = instances(root, self.name.as_deref())?.iter().map(Instance::status).collect();
        if self.json {
            let out = serde_json::json!({ "root": root.dir(), "instances": statuses });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else if statuses.is_empty() {
            println!("no lab instances under {}", root.dir());
        } else {
            for s in statuses {
                println!("{s}");
            }
        }
        Ok(())
    }
}

#[derive(Args)]
struct Down {
    /// Only this instance [default: all].
    #[arg(long)]
    name: Option<String>,
    /// Also remove the instances' data (the cache of venvs, index and templates stays).
    #[arg(long)]
    purge: bool,
    /// Also remove the cache (implies --purge).
    #[arg(long)]
    purge_cache: bool,
}

impl Down {
    fn run(self, root: &LabRoot) -> Result<()> {
        let purge = self.purge || self.purge_cache;
        let mut failed = Vec::new();
        for inst in instances(root, self.name.as_deref())? {
            let t0 = std::time::Instant::now();
            match inst.down(purge) {
                Ok(()) => println!(
                    "{}: stopped{} in {:.1} s",
                    inst.name(),
                    if purge { " and purged" } else { "" },
                    t0.elapsed().as_secs_f64()
                ),
                Err(e) => {
                    eprintln!("{}: {e:#}", inst.name());
                    failed.push(inst.name().to_string());
                }
            }
        }
        if self.purge_cache {
            root.purge_cache()?;
            println!("removed the cache {}", root.cache_dir());
        }
        if !failed.is_empty() {
            bail!("lab down failed for {}", failed.join(", "));
        }
        Ok(())
    }
}

#[derive(Args)]
struct Prepare {
    /// inmanta-core versions to make venvs for.
    #[arg(default_values = [lab::DEFAULT_OLD_VERSION, lab::DEFAULT_NEW_VERSION])]
    versions: Vec<String>,
}

impl Prepare {
    fn run(self, root: &LabRoot) -> Result<()> {
        let versions: Vec<&str> = self.versions.iter().map(String::as_str).collect();
        let tc = lab::prepare(root, &versions)?;
        println!("{}", serde_json::to_string_pretty(&tc)?);
        Ok(())
    }
}

fn parse_side(text: &str) -> Result<lab::Side, String> {
    match text {
        "old" => Ok(lab::Side::Old),
        "new" => Ok(lab::Side::New),
        _ => Err(format!("{text:?} is not a side: old or new")),
    }
}

#[derive(Args)]
struct Link {
    action: LinkAction,
    /// The side whose link it is.
    #[arg(value_parser = parse_side)]
    side: lab::Side,
    /// With `slow`: what the side may send, in kbit/s.
    #[arg(long)]
    kbit: Option<u32>,
    /// Instance name.
    #[arg(long, default_value = lab::DEFAULT_INSTANCE)]
    name: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LinkAction {
    /// Drop every packet, as a pulled cable.
    Cut,
    /// Restore a cut link.
    Mend,
    /// Limit what the side sends to --kbit (without it: full speed again).
    Slow,
}

impl Link {
    fn run(self, root: &LabRoot) -> Result<()> {
        let inst = Instance::open(root, &self.name)?;
        match self.action {
            LinkAction::Cut => inst.cut(self.side)?,
            LinkAction::Mend => inst.mend(self.side)?,
            LinkAction::Slow => inst.throttle(self.side, self.kbit)?,
        }
        println!("{} link of {}: {:?}", self.side.upper(), self.name, self.action);
        Ok(())
    }
}
