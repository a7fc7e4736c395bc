//! Building an instance: `lab up`.

use std::fs;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{
    CA_CERT, CA_KEY, Instance, JWT_KEY, LabState, SERVER_CERT, SERVER_KEY, SERVER_START_TIMEOUT, STATE_FORMAT,
    token_name,
};
use crate::config::{ConfigInputs, ServiceInputs, SideConfigInputs, render_tool_config};
use crate::containers;
use crate::machine::{SSHD_UNIT, sshd_unit};
use crate::net::Net;
use crate::prepare::{Toolchain, prepare_timed};
use crate::secure::{self, JwtClaims, TokenKind};
use crate::sshd::Sshd;
use crate::timing::Timings;
use crate::{LabRoot, Machine, Ports, Security, Side, UpOptions, procs, repo, seed, template, util};

impl Instance {
    fn write_config(&self) -> Result<()> {
        let ssh = |user: &str, sshd: &Sshd| crate::config::SshInputs {
            user: user.to_string(),
            port: sshd.port,
            identity_file: sshd.identity(),
            known_hosts: sshd.known_hosts(),
        };
        let side = |side: Side| SideConfigInputs {
            ssh: match (side, self.sshd(), self.sshd_new()) {
                (Side::Old, Some(sshd), _) => Some(ssh("root", &sshd)),
                // The user whose manager runs the containers, as its
                // operator would log in.
                (Side::New, _, Some(sshd)) => Some(ssh(containers::USER, &sshd)),
                _ => None,
            },
            api_url: self.api_url(side),
            version_command: match self.in_containers(side) {
                // The image's inmanta: no server installed on the machine.
                true => {
                    let image = containers::image(self.version(side));
                    ["podman", "run", "--rm", "--network=none", &image, "inmanta", "--version"].map(String::from).into()
                }
                false => vec![self.venv(side).join("bin/inmanta").into_string(), "--version".into()],
            },
            service: match self.machine(side) {
                Machine::Booted if self.in_containers(side) => ServiceInputs::SystemdUser,
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
            rehearsal_port: self.state.ports.rehearsal,
            rehearsal_state_dir: match self.machine(Side::New) {
                Machine::Booted => None,
                _ => Some(self.dir.join("new/rehearsal-state")),
            },
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
        if let Some(c) = self.containers(Side::New) {
            timings.time("image import (new)", || c.ensure_image(&self.root))?;
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
        if let (Some(sshd), Some(machine)) = (self.sshd_new(), self.booted(Side::New)) {
            timings.time("sshd (new)", || -> Result<()> {
                sshd.write_files()?;
                sshd.let_users_in()?;
                machine.write_unit(SSHD_UNIT, &sshd_unit(&sshd.config()))?;
                machine.systemctl(&["start", SSHD_UNIT])?;
                sshd.wait_listening()
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
        let key = template::Key { old: &self.state.old_version, envs, secure, pg: self.state.pg_old };
        let tpl = if fresh { None } else { template::load(&self.root, key) };
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
                template::save(&self.root, key, &old, &project, &self.state.envs, &code)
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
    if opts.new_containers && !opts.systemd {
        bail!("--new-containers needs --systemd: the container install's user units run on a booted machine");
    }
    // The tool runs on the NEW side's machine; it reaches another machine's
    // OLD side through an sshd.
    let ssh_to_old = (machine_old == Machine::Host && machine_new == Machine::Trixie) || machine_old == Machine::Booted;
    let sshd_port = ssh_to_old.then(|| procs::pick_free_ports(1).map(|p| p[0])).transpose()?;
    let sshd_new_port = opts.new_containers.then(|| procs::pick_free_ports(1).map(|p| p[0])).transpose()?;
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
    let mut other_pg = |machine: Machine, asked: Option<u32>| -> Result<Option<u32>> {
        let own = crate::prepare::own_pg_major(machine, &tc.pg_bin_dir);
        match asked.filter(|m| Some(*m) != own) {
            Some(major) => timings.time(&format!("PostgreSQL {major} server programs"), || {
                let _cache = crate::prepare::lock_cache(root)?;
                crate::pgdist::ensure(root, major).map(|_| Some(major))
            }),
            None => Ok(None),
        }
    };
    let (pg_old, pg_new) = (other_pg(machine_old, opts.old_pg)?, other_pg(machine_new, opts.new_pg)?);
    if opts.new_containers {
        if pg_new.is_some() {
            bail!(
                "--new-containers runs the PostgreSQL of the server's image ({}): no --new-pg",
                crate::rootfs::PG_MAJOR
            );
        }
        containers::ensure_root(root, &mut timings)?;
    }

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
            new_containers: opts.new_containers,
            sshd_new_port,
            via: opts.via.clone(),
            pg_bin_dir: tc.pg_bin_dir.clone(),
            pg_old,
            pg_new,
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
    use camino::Utf8PathBuf;

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
