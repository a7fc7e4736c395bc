//! The rules a config must follow beyond its schema, all checked at once and
//! each tied to the key it is about. Pure: nothing here reads a file.

use super::{Config, DumpFormat, Invalid, Manager, Orchestrator, Side, invalid};

impl Config {
    /// Every rule broken, in the order of the file's tables.
    pub(super) fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        for side in [Side::Old, Side::New] {
            let key = side.key();
            problems.extend(self.side(side).validate(key));
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
        // The rehearsal never touches what the migration moves.
        let scratch = self.rehearsal_database();
        if scratch == self.new.database.name()
            || (scratch == self.old.database.name() && o.host() == n.host() && o.port() == n.port())
        {
            problems.push(invalid(
                "rehearsal.database",
                format!(
                    "{scratch:?} is a database of the migration: the rehearsal needs a scratch database of its own"
                ),
            ));
        }
        if same_url(&self.rehearsal_api_url(), &self.new.api_url)
            || same_url(&self.rehearsal_api_url(), &self.old.api_url)
        {
            problems.push(invalid(
                "rehearsal.port",
                format!(
                    "{} is where the old or new server answers: give the rehearsal a port of its own",
                    self.rehearsal.port
                ),
            ));
        }
        for (i, entry) in self.carry.files.iter().enumerate() {
            for path in [entry.from(), entry.to()] {
                if !path.is_absolute() || path.components().any(|c| c.as_str() == "..") || path == "/" {
                    problems.push(invalid(
                        format!("carry.files[{i}]"),
                        format!("{path:?} must be an absolute path below /, without `..`"),
                    ));
                }
            }
        }
        if !self.rehearsal.state_dir.is_absolute() || self.rehearsal.state_dir.parent().is_none() {
            problems.push(invalid("rehearsal.state_dir", "must be an absolute path below /, on the new machine"));
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
        problems
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
    /// The rules of one orchestrator's table (`side`: its key).
    fn validate(&self, side: &str) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let k = |rest: &str| format!("{side}.{rest}");
        match check_api_url(&self.api_url) {
            Ok(()) => {}
            Err(m) => problems.push(invalid(k("api_url"), m)),
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
        let db = &self.database;
        if db.password.is_some() && db.passfile.is_some() {
            problems.push(invalid(k("database.passfile"), "give either `password` or `passfile`, not both"));
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
