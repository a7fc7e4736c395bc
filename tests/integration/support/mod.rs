//! Helpers: a temp dir with a config pointing at fake servers, a builder of
//! runs of the real `inmanta-migrate` binary in the style of just's tests,
//! and typed edits of config files.

pub mod lab;
pub mod process;
pub mod scratch;

use std::process::Command;

use camino::{Utf8Path, Utf8PathBuf};
use fake_inmanta::{FakeInmanta, Flavor};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_inmanta-migrate");

/// A finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, expected, "exit code\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.code(0)
    }

    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}:\n{}", self.stderr);
        self
    }

    /// In stdout or stderr: `check`'s items are on stdout, its failure on
    /// stderr.
    #[track_caller]
    pub fn output_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text) || self.stderr.contains(text),
            "the output lacks {text:?}:\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}:\n{}", self.stdout);
        self
    }

    #[track_caller]
    pub fn stdout_lacks(&self, text: &str) -> &Self {
        assert!(!self.stdout.contains(text), "stdout has {text:?}:\n{}", self.stdout);
        self
    }

    /// stdout as the JSON document of `--json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// One run of the binary, built like just's tests: where it runs, its config,
/// its arguments and environment; [`run`](Test::run) gives the [`Run`] to
/// assert on: `Test::new(dir).config(&path).args(["dump"]).run().code(2)`.
#[must_use]
pub struct Test {
    dir: Utf8PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Test {
    /// A run in `dir` (where `inmanta-migrate.toml` is looked for first),
    /// with a clean environment but for PATH.
    pub fn new(dir: &Utf8Path) -> Test {
        Test { dir: dir.to_owned(), args: Vec::new(), envs: Vec::new() }
    }

    pub fn config(self, path: &Utf8Path) -> Test {
        self.args(["--config", path.as_str()])
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Test {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Test {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Test {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The command, for a test that starts it itself (to kill it, say).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&self.dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v))).args(&self.args);
        cmd
    }

    /// Runs it to its end.
    pub fn run(self) -> Run {
        run(&mut self.command())
    }
}

/// Runs a prepared command of the binary to its end, and holds what it
/// wrote to the JSON contract: with `--json`, its document and event lines;
/// always, the work directory's report.json.
pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("the binary runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if cmd.get_args().any(|a| a == "--json") && !cmd.get_args().any(|a| a == "completions") {
        contract::conforms("document", &run.json(), &run.stdout);
        for line in run.stderr.lines().filter(|l| l.starts_with('{')) {
            let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("a bad event line ({e}): {line}"));
            contract::conforms("event", &event, line);
        }
    }
    if let Some(work) = contract::work_dir_of(cmd) {
        contract::work_dir_conforms(&work);
    }
    run
}

/// The published schemas (`schemas/v1/`), read as a script would.
pub mod contract {
    use std::{collections::BTreeMap, process::Command, sync::LazyLock};

    use camino::{Utf8Path, Utf8PathBuf};
    use serde_json::Value;

    static SCHEMAS: LazyLock<BTreeMap<&str, jsonschema::Validator>> = LazyLock::new(|| {
        let dir = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/v1");
        ["document", "event", "report", "rehearsal"]
            .into_iter()
            .map(|name| {
                let path = dir.join(format!("{name}.schema.json"));
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                let schema: Value = serde_json::from_str(&text).unwrap();
                (name, jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{path}: {e}")))
            })
            .collect()
    });

    /// Panics with every violation when `value` is not a valid `schema`.
    #[track_caller]
    pub fn conforms(schema: &str, value: &Value, shown: &str) {
        let errors: Vec<String> =
            SCHEMAS[schema].iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "not a valid {schema} ({}):\n{shown}", errors.join("; "));
    }

    /// The run's work directory, from its config.
    pub fn work_dir_of(cmd: &Command) -> Option<Utf8PathBuf> {
        let args: Vec<&str> = cmd.get_args().filter_map(|a| a.to_str()).collect();
        let cwd = Utf8PathBuf::from_path_buf(cmd.get_current_dir()?.to_path_buf()).ok()?;
        let config = args
            .iter()
            .position(|a| *a == "--config" || *a == "-c")
            .and_then(|i| args.get(i + 1))
            .map(|c| cwd.join(c))
            .unwrap_or_else(|| cwd.join("inmanta-migrate.toml"));
        let table: toml::Table = std::fs::read_to_string(&config).ok()?.parse().ok()?;
        Some(config.parent()?.join(table.get("work_dir")?.as_str()?))
    }

    /// Its report.json and every line of its events.log, where they exist.
    #[track_caller]
    pub fn work_dir_conforms(work: &Utf8Path) {
        if let Ok(text) = std::fs::read_to_string(work.join("report.json")) {
            let report =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("report.json is not JSON ({e}): {text}"));
            conforms("report", &report, "report.json");
        }
        for line in std::fs::read_to_string(work.join("events.log")).unwrap_or_default().lines() {
            let event = serde_json::from_str(line).unwrap_or_else(|e| panic!("events.log: not JSON ({e}): {line}"));
            conforms("event", &event, line);
        }
    }
}

/// A temp dir with two fake servers and a config for them.
pub struct Fakes {
    pub dir: tempfile::TempDir,
    pub old: FakeInmanta,
    pub new: FakeInmanta,
}

impl Fakes {
    pub fn new(old: Flavor, new: Flavor) -> Fakes {
        Fakes { dir: tempfile::tempdir().unwrap(), old: FakeInmanta::start(old), new: FakeInmanta::start(new) }
    }

    pub fn path(&self) -> &Utf8Path {
        Utf8Path::from_path(self.dir.path()).unwrap()
    }

    /// The config for both fakes; `extra` is appended (TOML tables).
    pub fn config(&self, extra: &str) -> Utf8PathBuf {
        let side = |name: &str, fake: &FakeInmanta, port: u16| {
            let [start, stop, status] = fake.service_commands();
            let q = |v: &[String]| format!("{v:?}");
            format!(
                "[{name}]\napi_url = \"{}\"\n\n[{name}.service]\nmanager = \"command\"\nstart = {}\nstop = {}\nstatus = {}\n\n\
                 [{name}.database]\nport = {port}\n\n",
                fake.url(),
                q(&start),
                q(&stop),
                q(&status)
            )
        };
        let text = format!(
            "work_dir = \"work\"\n\n{}{}[reconcile]\npoll_interval = \"20ms\"\ncompile_timeout = \"5s\"\ndryrun_timeout = \"5s\"\n\n{extra}",
            side("old", &self.old, 1),
            side("new", &self.new, 2),
        );
        let path = self.path().join("inmanta-migrate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A run in the temp dir (whose `inmanta-migrate.toml` [`config`](Self::config) writes).
    pub fn test(&self) -> Test {
        Test::new(self.path())
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.test().args(args.iter().copied()).run()
    }
}

/// The `check` items of a `--json` run (`details` when it passed, `checks`
/// when it failed).
pub fn check_items(run: &Run) -> Vec<Value> {
    let json = run.json();
    let items = if json["details"]["items"].is_array() { &json["details"]["items"] } else { &json["checks"]["items"] };
    items.as_array().unwrap_or_else(|| panic!("no check items in {json}")).clone()
}

pub fn item<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items.iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("no check {name:?} in {items:?}"))
}

/// A JSON snapshot with the per-run parts masked (the run id in compile
/// markers).
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({ filters => vec![(r"inmanta-migrate [0-9a-f]{8}:", "inmanta-migrate {run}:")] }, {
            insta::assert_json_snapshot!($name, $value);
        })
    };
}
pub(crate) use snapshot;

/// A run's whole human output, stdout then stderr, with its directory
/// shown as `[dir]`, for [`snapshot_human!`].
pub fn human(run: &Run, dir: &Utf8Path) -> String {
    format!("--- exit code {}\n--- stdout\n{}--- stderr\n{}", run.code, run.stdout, run.stderr)
        .replace(dir.as_str(), "[dir]")
}

/// A snapshot of a run's whole human output ([`human`]), with what differs
/// from run to run masked: times, ids, ports, durations, sizes, pids, dump
/// data file names (pg_dump's ids), the sizes a manifest records and row
/// counts (a lab's servers write rows until they stop). It fails on any line
/// added, lost or changed, where `stderr_has` sees one fragment.
macro_rules! snapshot_human {
    ($name:expr, $run:expr, $dir:expr) => {
        insta::with_settings!({ filters => vec![
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "[time]"),
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[uuid]"),
            (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
            (r"\bport \d+", "port [port]"),
            (r"\d+(\.\d+)? s\b", "[n] s"),
            (r"\| \d+\.\d \|", "| [n] |"),
            (r"(PostgreSQL|pg_dump|pg_restore|psql|vacuumdb) \d+\.\d+", "$1 [version]"),
            (r"\d+(\.\d+)? (MB|MiB|GB|GiB|kB|KiB|bytes)\b", "[size]"),
            (r"\bpid \d+", "pid [pid]"),
            (r#""seconds": [0-9.eE+-]+"#, r#""seconds": [n]"#),
            (r"\b\d+\.dat\b", "[n].dat"),
            (r"the manifest says \d+", "the manifest says [size]"),
            (r"\b\d+ rows\b", "[n] rows"),
            (r"inmanta-migrate [0-9a-f]{8}:", "inmanta-migrate [run]:"),
        ]}, {
            insta::assert_snapshot!($name, $crate::support::human($run, $dir));
        })
    };
}
pub(crate) use snapshot_human;

/// A copy of the tool config `config` with `edit` applied to its TOML tree,
/// written beside it as `<name>.toml`. The edit must change something.
pub fn config_variant(config: &Utf8Path, name: &str, edit: impl FnOnce(&mut toml::Table)) -> Utf8PathBuf {
    let mut table: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    let before = table.clone();
    edit(&mut table);
    assert_ne!(table, before, "{name}: the edit changed nothing");
    let path = config.with_file_name(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    path
}

/// Sets the dotted key (`old.database.port`) of a config, making the tables
/// on the way.
pub fn set(table: &mut toml::Table, dotted: &str, value: impl Into<toml::Value>) {
    let (parents, key) = dotted.rsplit_once('.').map_or(("", dotted), |(p, k)| (p, k));
    let mut at = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        at = at
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{dotted}: {part} is not a table"));
    }
    at.insert(key.to_owned(), value.into());
}

/// `{ <kind> = value }`: a secret source (`kind` is `file` or `env`).
pub fn secret(kind: &str, value: &str) -> toml::Table {
    toml::Table::from_iter([(kind.to_owned(), toml::Value::from(value))])
}

/// Removes the dotted key of a config; it must be there.
pub fn remove(table: &mut toml::Table, dotted: &str) {
    let (parents, key) = dotted.rsplit_once('.').map_or(("", dotted), |(p, k)| (p, k));
    let mut at = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        at = at.get_mut(part).and_then(toml::Value::as_table_mut).unwrap_or_else(|| panic!("no table {part}"));
    }
    assert!(at.remove(key).is_some(), "{dotted} is not in the config");
}

/// The value of a dotted key of a config.
pub fn get<'a>(table: &'a toml::Table, dotted: &str) -> &'a toml::Value {
    let mut parts = dotted.split('.');
    let first = parts.next().unwrap();
    parts.fold(&table[first], |v, part| &v[part])
}
