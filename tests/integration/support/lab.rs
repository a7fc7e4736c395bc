//! The real lab for a test: an instance brought up for it and purged when
//! it ends, the tool run in it, and what a migration must keep.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::{Condvar, Mutex},
    time::{Duration, Instant},
};

use lab::{EnvRole, Instance, LabRoot, Security, Side, UpOptions};
use serde_json::Value;

use super::{BIN, Run};

/// How many lab tests run at once, whatever the harness's thread count:
/// `INMANTA_MIGRATE_LAB_SLOTS` (default 1; `cargo xtask ci` sets 2, the
/// machine's cores, which one lab test leaves partly idle).
static SLOTS: Slots = Slots { taken: Mutex::new(0), freed: Condvar::new() };

/// The slot of a lab test that may run beside another one.
pub fn slot() -> Slot {
    SLOTS.take(1)
}

/// Every slot: for a test that must be alone on the machine (it installs a
/// package, boots machines, measures how fast a failure is noticed, or
/// looks at every process).
pub fn alone() -> Slot {
    SLOTS.take(SLOTS.size())
}

struct Slots {
    taken: Mutex<u32>,
    freed: Condvar,
}

impl Slots {
    fn size(&self) -> u32 {
        std::env::var("INMANTA_MIGRATE_LAB_SLOTS").ok().and_then(|n| n.parse().ok()).unwrap_or(1).max(1)
    }

    fn take(&'static self, n: u32) -> Slot {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        while *taken + n > self.size() {
            taken = self.freed.wait(taken).unwrap_or_else(|e| e.into_inner());
        }
        *taken += n;
        Slot { slots: self, n }
    }
}

/// Held for the test's life; given back when dropped, also on panic.
pub struct Slot {
    slots: &'static Slots,
    n: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.slots.taken.lock().unwrap_or_else(|e| e.into_inner()) -= self.n;
        self.slots.freed.notify_all();
    }
}

/// A lab instance that is purged when the test ends, also on panic.
pub struct Lab(Option<Instance>);

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(instance) = self.0.take()
            && let Err(e) = instance.down(true)
        {
            eprintln!("cleanup of lab instance {}: {e:#}", instance.name());
        }
    }
}

impl std::ops::Deref for Lab {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        self.0.as_ref().expect("up")
    }
}

pub fn lab(name: &str, old: &str) -> Lab {
    lab_with(name, old, Security::Plain)
}

/// [`lab`], with plain or secure (auth + TLS) servers.
pub fn lab_with(name: &str, old: &str, security: Security) -> Lab {
    lab_from(UpOptions { name: name.into(), old: old.into(), ports: None, ..UpOptions::default() }, security)
}

/// A lab instance as `options` say, replacing one of the same name.
pub fn lab_from(options: UpOptions, security: Security) -> Lab {
    let root = LabRoot::from_env().unwrap();
    if let Ok(previous) = Instance::open(&root, &options.name) {
        previous.down(true).unwrap();
    }
    Lab(Some(lab::up_with(&root, &options, security).expect("the lab comes up")))
}

impl Lab {
    /// Runs the tool with this lab's config where the lab says it runs
    /// (on the NEW side's machine).
    pub fn run(&self, args: &[&str]) -> Run {
        super::run(self.tool(args).stdout(Stdio::piped()).stderr(Stdio::piped()))
    }

    /// The tool's command with this lab's config, not started.
    pub fn tool(&self, args: &[&str]) -> Command {
        self.tool_with(args, &[])
    }

    /// [`Self::tool`] with environment variables, which reach the tool also
    /// where it runs in a Debian root (with a clean environment).
    pub fn tool_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        self.tool_at(&self.config_path(), args, envs)
    }

    /// [`Self::tool_with`] with another config (a [`Self::config_variant`]).
    pub fn tool_at(&self, config: &camino::Utf8Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = self.tool_command(BIN.into(), self.dir(), envs).expect("the tool can run in the lab");
        cmd.arg("--config").arg(config.as_str()).args(args);
        cmd
    }

    /// A copy of this lab's config with `edit` applied (see
    /// [`super::config_variant`]).
    pub fn config_variant(&self, name: &str, edit: impl FnOnce(&mut toml::Table)) -> camino::Utf8PathBuf {
        super::config_variant(&self.config_path(), name, edit)
    }

    /// Row count and content digest of every table of one side's database.
    pub fn fingerprints(&self, side: Side) -> BTreeMap<String, String> {
        let tables = self
            .psql(
                side,
                "inmanta",
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public'",
            )
            .unwrap();
        tables
            .lines()
            .filter(|t| !t.is_empty())
            .map(|table| {
                let sql = format!(
                    "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t"
                );
                (table.to_owned(), self.psql(side, "inmanta", &sql).unwrap().trim().to_owned())
            })
            .collect()
    }

    /// The migration's journal (null before the first run).
    pub fn journal(&self) -> Value {
        std::fs::read_to_string(self.work_dir().join("journal.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// The journal's environment records, shaped like `env-reconcile --json`.
    pub fn reconciled(&self) -> Value {
        serde_json::json!({ "details": self.journal()["environments"].as_object().unwrap().values().collect::<Vec<_>>() })
    }

    /// The environments of one side as its API lists them, by name.
    pub fn environments(&self, side: Side) -> BTreeMap<String, Value> {
        let api = self.client(side).unwrap();
        api.environments().unwrap().into_iter().map(|e| (e["name"].as_str().unwrap().to_owned(), e)).collect()
    }

    pub fn wait_deployed(&self, env: &str, version: Option<i64>) {
        self.wait_deployed_on(Side::New, env, version)
    }

    /// Every resource of `env` deployed on one side (at `version`, if given).
    pub fn wait_deployed_on(&self, side: Side, env: &str, version: Option<i64>) {
        let api = self.client(side).unwrap();
        let start = Instant::now();
        loop {
            let resources = api.resources(env).unwrap();
            let done = !resources.is_empty()
                && resources.iter().all(|r| {
                    r["status"] == "deployed"
                        && version
                            .is_none_or(|v| r["resource_version_id"].as_str().unwrap().ends_with(&format!(",v={v}")))
                });
            if done {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(180), "resources of {env} not deployed: {resources:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Everything a migration must keep, checked through the new server's API
/// against what the old one said before.
pub fn assert_migrated(lab: &Lab, before: &BTreeMap<String, Value>, outcome: &Value, released: bool) {
    let after = lab.environments(Side::New);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "the same environments");
    let api = lab.client(Side::New).unwrap();
    for (name, old) in before {
        let new = &after[name];
        let seeded = lab.env(name).unwrap();
        assert_eq!(new["id"], old["id"], "{name}: id");
        assert_eq!(new["project_id"], old["project_id"], "{name}: project");
        assert_eq!(new["halted"], old["halted"], "{name}: halted as before");
        // Settings the new version removed (14.0 drops purge_on_delete) are
        // the upgrade's doing; every other one must be as before.
        let settings = api.get("/api/v2/environment_settings", Some(old["id"].as_str().unwrap())).unwrap();
        let defined = settings["data"]["definition"].as_object().unwrap();
        for (key, value) in old["settings"].as_object().unwrap().iter().filter(|(k, _)| defined.contains_key(*k)) {
            assert_eq!(&new["settings"][key], value, "{name}: setting {key} as before");
        }
        let result = outcome["details"].as_array().unwrap().iter().find(|e| e["name"] == name.as_str()).unwrap();
        if seeded.halted {
            assert_eq!(result["status"], "left_halted", "{name}");
            continue;
        }
        assert_eq!(result["status"], "done", "{name}: {result}");
        let version = result["version"].as_i64().unwrap();
        let newest = seeded.released_versions.iter().chain(&seeded.unreleased_versions).max().copied().unwrap();
        assert!(version > newest, "{name}: a new version {version} was compiled (before: {newest})");
        assert!(result["message"].as_str().unwrap().contains("dry-run clean"), "{name}: {result}");
        let versions = api.versions(&seeded.id).unwrap();
        let is_released = versions.iter().find(|v| v["version"] == version).unwrap()["released"] == true;
        // A project.yml that protects auto_deploy releases every export.
        let protected = seeded.role == EnvRole::Protected;
        assert_eq!(
            is_released,
            (released && seeded.auto_deploy) || protected,
            "{name}: released only when asked and auto_deploy was on, or by its protected auto_deploy"
        );
        if seeded.role == EnvRole::PausedAgent {
            assert_eq!(api.paused_agents(&seeded.id).unwrap(), [lab::AGENT], "{name}: still paused");
            assert!(
                result["message"].as_str().unwrap().contains("agent paused before the migration"),
                "{name}: the paused agent's resources are named: {result}"
            );
            continue;
        }
        // A full deploy now: the agents of the new server must load the code
        // of the released version, also one exported by the old server (its
        // code files are outside the database: dump and restore carry them).
        let deploy = serde_json::json!({ "agent_trigger_method": "push_full_deploy" });
        api.post("/api/v1/deploy", Some(&seeded.id), Some(&deploy)).unwrap();
        std::thread::sleep(Duration::from_secs(5));
        lab.wait_deployed(&seeded.id, if is_released { Some(version) } else { None });
    }
}

/// A lab instance migrating `old` to `new`.
pub fn lab_pair(name: &str, old: &str, new: &str) -> Lab {
    lab_via(name, old, &[], new)
}

/// A lab instance migrating `old` to `new`, each (version, PostgreSQL major
/// when not its machine's own).
pub fn lab_pg(name: &str, old: (&str, Option<u32>), new: (&str, Option<u32>)) -> Lab {
    let options = UpOptions {
        name: name.into(),
        old: old.0.into(),
        old_pg: old.1,
        new: new.0.into(),
        new_pg: new.1,
        ..UpOptions::default()
    };
    lab_from(options, Security::Plain)
}

/// The PostgreSQL majors the OLD and NEW clusters run, as they say.
pub fn pg_majors(lab: &Lab) -> (u32, u32) {
    let major = |side| {
        let num = lab.psql(side, "postgres", "SHOW server_version_num").unwrap();
        num.trim().parse::<u32>().unwrap() / 10000
    };
    (major(Side::Old), major(Side::New))
}

/// A lab instance migrating `old` to `new`, each side a booted machine.
pub fn lab_booted(name: &str, old: &str, new: &str) -> Lab {
    lab_from(
        UpOptions { name: name.into(), old: old.into(), new: new.into(), systemd: true, ..UpOptions::default() },
        Security::Plain,
    )
}

/// A lab instance migrating `old` to `new` through intermediate servers.
pub fn lab_via(name: &str, old: &str, via: &[&str], new: &str) -> Lab {
    let via = via.iter().map(|v| v.to_string()).collect();
    lab_from(
        UpOptions { name: name.into(), old: old.into(), new: new.into(), via, ..UpOptions::default() },
        Security::Plain,
    )
}
