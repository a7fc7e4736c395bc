//! `init`: a first config for the migration at hand, written from what the
//! tool finds (each API and its version, each server's `inmanta.cfg` and
//! service unit, locally or over ssh, the `inmanta` command of the new
//! machine, the PostgreSQL client tools), commented, with what it could not
//! find marked `NOT FOUND`. It never writes a secret's value, only where to
//! read it from, and never replaces a file without `--force`.

use std::{fmt::Write as _, time::Duration};

use anyhow::Context as _;
use camino::{Utf8Path, Utf8PathBuf};
use inmanta_api::{Client, ClientOptions};
use migrate_core::{Config, Figures, Outcome, UsageError, config::HostConfig, fsutil, runner::Runner};

/// Writes a commented config for two orchestrators to the config path
/// (`--config`), from what it finds on both sides; then run `check`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The old orchestrator's API, `http(s)://host:port`.
    #[arg(long, value_name = "URL")]
    pub old_api: String,
    /// The new orchestrator's API, `http(s)://host:port`.
    #[arg(long, value_name = "URL")]
    pub new_api: String,
    /// The old orchestrator's machine, `user@host`, when it is not this one
    /// (its service and inmanta.cfg are read over ssh).
    #[arg(long, value_name = "USER@HOST")]
    pub old_ssh: Option<String>,
    /// Each server's config: the folder of its inmanta.cfg, or the file its
    /// server is started with (`-c FILE`).
    #[arg(long, value_name = "DIR", default_value = "/etc/inmanta")]
    pub inmanta_config: Utf8PathBuf,
    /// Replace an existing config file.
    #[arg(long)]
    pub force: bool,
}

/// What one side has, as found.
struct Side {
    key: &'static str,
    api: String,
    /// "answers: inmanta-core X", or why not.
    api_says: String,
    needs_token: bool,
    ssh: Option<String>,
    runner: Runner,
    /// Keys found in inmanta.cfg, or why it was not read.
    database: Result<Vec<&'static str>, String>,
    /// The unit's manager: (user manager?) or why none was found.
    unit: Result<bool, String>,
}

const UNIT: &str = "inmanta-server.service";
/// Where inmanta-core's packages put the command.
const INMANTA_COMMANDS: [&str; 2] = ["/opt/inmanta/bin/inmanta", "inmanta"];

pub async fn run(args: &InitArgs, path: &Utf8Path) -> anyhow::Result<Outcome> {
    if path.exists() && !args.force {
        return Err(UsageError(format!(
            "{path} exists: nothing was written. Pass --force to replace it, or --config to write another file"
        ))
        .into());
    }
    let old = side("old", &args.old_api, args.old_ssh.clone(), &args.inmanta_config).await;
    let new = side("new", &args.new_api, None, &args.inmanta_config).await;
    let inmanta = inmanta_command(&new.runner).await;
    let pg_dump = Runner::local().cmd(&["pg_dump", "--version"]).timeout(LIMIT).output().await.ok();
    let pg_dump = pg_dump.filter(|o| o.success()).map(|o| o.stdout.trim().to_owned());

    let mut out = Writer::default();
    let work = std::env::current_dir()
        .ok()
        .and_then(|d| Utf8PathBuf::from_path_buf(d).ok())
        .unwrap_or_else(|| Utf8PathBuf::from("/var/lib"))
        .join("inmanta-migrate-work");
    out.line(format!(
        "# The migration {} -> {}, written by `inmanta-migrate init`.\n\
         # Every key: config/example.toml (also /usr/share/doc/inmanta-migrate/).\n\
         # Fill in what is marked NOT FOUND, then run `inmanta-migrate check`.\n\n\
         # Journal, inventory, dump and report of this migration.\n\
         work_dir = {}\n",
        old.api,
        new.api,
        quoted(work.as_str())
    ));
    for side in [&old, &new] {
        out.orchestrator(side, side.key == "new", inmanta.as_deref());
        out.service(side);
        out.database(side, &args.inmanta_config);
    }
    out.line("[pg]".into());
    match &pg_dump {
        Some(version) => out.found(format!("{version} on PATH (it must be as new as both servers)")),
        None => out.not_found(
            "pg_dump on PATH: install the PostgreSQL client tools, or set `bin_dir = \"/usr/pgsql-17/bin\"`".into(),
        ),
    }
    // What it wrote must be a config the tool reads.
    Config::parse(&out.text, path).context("init wrote a config the tool does not read (a bug: please report it)")?;
    fsutil::write_atomic(path, out.text.as_bytes())?;
    let summary = match out.missing.len() {
        0 => format!("wrote {path}: everything was found; next: inmanta-migrate check"),
        n => format!("wrote {path}: {n} thing(s) marked NOT FOUND to fill in; then: inmanta-migrate check"),
    };
    let outcome =
        Outcome::done("init", summary).figures(Figures { not_found: Some(out.missing.len()), ..Figures::default() });
    if out.missing.is_empty() {
        return Ok(outcome);
    }
    // What to fill in, a line each, before the summary.
    Ok(outcome.text(out.missing.iter().map(|what| format!("NOT FOUND: {what}")).collect::<Vec<_>>().join("\n")))
}

/// The config as it is written, and what was not found.
#[derive(Default)]
struct Writer {
    text: String,
    missing: Vec<String>,
}

impl Writer {
    fn line(&mut self, line: String) {
        let _ = writeln!(self.text, "{line}");
    }

    fn found(&mut self, what: String) {
        self.line(format!("# {what}"));
    }

    fn not_found(&mut self, what: String) {
        self.line(format!("# NOT FOUND: {what}"));
        self.missing.push(what);
    }

    /// `[old]` or `[new]`: the API, a token where it asks for one, and the
    /// new side's `version_command`.
    fn orchestrator(&mut self, side: &Side, is_new: bool, inmanta: Option<&str>) {
        self.line(format!("[{}]", side.key));
        // The old server must answer (halt-all talks to it); the new one is
        // rightly stopped until start-server.
        let what = format!("{}: {}", side.api, side.api_says);
        if side.api_says.starts_with("answers") || is_new {
            self.found(what)
        } else {
            self.not_found(what)
        }
        self.line(format!("api_url = {}", quoted(&side.api)));
        if side.needs_token {
            let file = format!("/etc/inmanta-migrate/{}-token", side.key);
            self.not_found(format!("a token: the API asks for one; write an unscoped `api` token to {file}"));
            self.line(format!("token = {{ file = {} }}", quoted(&file)));
        }
        if is_new {
            match inmanta {
                Some(command) => {
                    self.found(format!("the installed inmanta-core, read while the server is stopped: {command}"));
                    self.line(format!("version_command = [{}, \"--version\"]", quoted(command)));
                }
                None => self.not_found(format!(
                    "the `inmanta` command (looked for {} on {}): set `version_command = \
                     [\"/path/to/inmanta\", \"--version\"]`",
                    INMANTA_COMMANDS.join(" and, on the PATH, "),
                    side.runner.place()
                )),
            }
        }
        if let Some(ssh) = &side.ssh {
            self.line(format!("\n[{}.host]\nssh = {}", side.key, quoted(ssh)));
        }
    }

    /// `[<side>.service]`: the unit where systemd shows it.
    fn service(&mut self, side: &Side) {
        self.line(format!("\n[{}.service]", side.key));
        let place = side.runner.place();
        match &side.unit {
            Ok(_) => {
                self.found(format!("{UNIT} on {place}"));
                self.line(format!("manager = \"systemd\"\nunit = \"{UNIT}\""));
            }
            // The config needs a manager: systemd, the usual one, with the
            // other way beside it to choose instead.
            Err(why) => {
                self.not_found(format!(
                    "{UNIT} on {place} ({why}): fix `unit`, or use the commands below instead (an argv each)"
                ));
                self.line(format!("manager = \"systemd\"\nunit = \"{UNIT}\""));
                self.line(
                    "# manager = \"command\"\n# start = [\"...\"]\n# stop = [\"...\"]\n# status = [\"...\"]".into(),
                );
            }
        }
        if side.unit == Ok(true) {
            self.line("user = true".into());
        }
    }

    /// `[<side>.database]`: the server's own inmanta.cfg where it is read,
    /// else the keys to fill in; never a password.
    fn database(&mut self, side: &Side, inmanta_config: &Utf8Path) {
        self.line(format!("\n[{}.database]", side.key));
        let place = side.runner.place();
        match &side.database {
            Ok(keys) => {
                self.found(format!(
                    "{} in {inmanta_config} on {place}, read at every run (the password too: it is \
                     never copied here)",
                    keys.join(", ")
                ));
                self.line(format!("inmanta_config = {}", quoted(inmanta_config.as_str())));
            }
            Err(why) => {
                self.not_found(format!(
                    "the server's database settings ({why}): set host, port, name, user and password"
                ));
                self.line(format!(
                    "# host = \"127.0.0.1\"\n# port = 5432\n# name = \"inmanta\"\n# user = \"inmanta\"\n\
                     # password = {{ file = \"/etc/inmanta-migrate/{}-db-password\" }}",
                    side.key
                ));
            }
        }
        if side.key == "new" {
            self.line(
                "# `restore` creates the new database: when `user` may not, a role that may\n\
                 # (its password in a file of its own):\n\
                 # admin_user = \"postgres\"\n\
                 # admin_password = { file = \"/etc/inmanta-migrate/postgres-password\" }"
                    .into(),
            );
        }
        self.line(String::new());
    }
}

/// One command on a side's machine.
const LIMIT: Duration = Duration::from_secs(30);

async fn side(key: &'static str, api: &str, ssh: Option<String>, inmanta_config: &Utf8Path) -> Side {
    let runner = Runner::on(&HostConfig { ssh: ssh.clone(), ..HostConfig::default() });
    let (api_says, needs_token) = probe_api(key, api).await;
    let database = match migrate_core::inmanta_cfg::read(inmanta_config, &runner).await {
        Ok(config) => {
            let db = config.database;
            let keys = [
                ("host", db.host.is_some()),
                ("port", db.port.is_some()),
                ("name", db.name.is_some()),
                ("user", db.user.is_some()),
                ("password", db.password.is_some()),
            ];
            Ok(keys.iter().filter(|(_, found)| *found).map(|(k, _)| *k).collect())
        }
        Err(e) => Err(format!("{e:#}")),
    };
    let unit = unit(&runner).await;
    Side { key, api: api.to_owned(), api_says, needs_token, ssh, runner, database, unit }
}

/// What the API says without a token: (text, whether it wants one).
async fn probe_api(key: &str, api: &str) -> (String, bool) {
    let options = ClientOptions {
        base_url: api.trim_end_matches('/').to_owned(),
        token: None,
        ca_pem: None,
        tls_verify: true,
        timeout: Duration::from_secs(10),
        retries: 0,
    };
    let client = match Client::new(key, options) {
        Ok(c) => c,
        Err(e) => return (format!("{e}"), false),
    };
    match client.server_status().await {
        Ok(status) => (format!("answers: inmanta-core {}", status.core_version), false),
        Err(e) if matches!(e.status(), Some(401 | 403)) => ("answers, and asks for a token".into(), true),
        Err(e) if e.is_unreachable() && key == "old" => {
            ("does not answer: start the old server before `halt-all`".into(), false)
        }
        Err(e) if e.is_unreachable() => {
            ("does not answer (it stays stopped until start-server; check reads its version_command)".into(), false)
        }
        Err(e) => (format!("{e}"), false),
    }
}

/// Whether the server's unit is there: under the system manager (false) or
/// the user manager (true, Inmanta's container install).
async fn unit(runner: &Runner) -> Result<bool, String> {
    for user in [false, true] {
        let mut argv = vec![];
        if user {
            // As the tool's service commands find the user manager.
            argv.extend(["sh", "-c", migrate_core::service::USER_RUNTIME_DIR, "systemctl", "--user"]);
        } else {
            argv.push("systemctl");
        }
        argv.extend(["cat", UNIT]);
        if runner.cmd(&argv).timeout(LIMIT).output().await.is_ok_and(|o| o.success()) {
            return Ok(user);
        }
    }
    Err("`systemctl cat` does not show it".into())
}

/// The `inmanta` command of the new machine, where one is installed.
async fn inmanta_command(runner: &Runner) -> Option<String> {
    for command in INMANTA_COMMANDS {
        let out = runner.cmd(&["sh", "-c", &format!("command -v {command}")]).timeout(LIMIT).output().await.ok()?;
        if out.success() && !out.stdout.trim().is_empty() {
            return Some(out.stdout.trim().to_owned());
        }
    }
    None
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}
