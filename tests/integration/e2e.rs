//! End to end on the real lab: real PostgreSQL clusters, real inmanta-core
//! servers from PyPI, the real binary. Ignored by plain `cargo test`;
//! `cargo xtask ci` runs them (`-- --ignored`), one at a time.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use lab::{EnvRole, Instance, LabRoot, ModelVariant, Security, Side, UpOptions};
use serde_json::Value;

use crate::support::{self, BIN, Run};

/// One lab instance at a time, also if the harness runs tests in parallel.
pub static SERIAL: Mutex<()> = Mutex::new(());

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
        support::run(self.tool(args).stdout(Stdio::piped()).stderr(Stdio::piped()))
    }

    /// The tool's command with this lab's config, not started.
    pub fn tool(&self, args: &[&str]) -> Command {
        let mut cmd = self.tool_command(BIN.into(), self.dir(), &[]).expect("the tool can run in the lab");
        cmd.arg("--config").arg(self.config_path().as_str()).args(args);
        cmd
    }

    /// A copy of this lab's config with `edit` applied (see
    /// [`support::config_variant`]).
    pub fn config_variant(&self, name: &str, edit: impl FnOnce(&mut toml::Table)) -> camino::Utf8PathBuf {
        support::config_variant(&self.config_path(), name, edit)
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
        let api = self.client(Side::New).unwrap();
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

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_8_7_to_14_step_by_step() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab("e2e-8to14", "8.7.6");
    let before = lab.environments(Side::Old);

    lab.run(&["check"]).success();
    lab.run(&["halt-all"]).success();
    lab.run(&["stop-server"]).success();
    lab.run(&["dump"]).success();
    lab.run(&["restore"]).success();
    // Before the new server starts and migrates (and cleans up) the data:
    assert_eq!(lab.fingerprints(Side::Old), lab.fingerprints(Side::New), "row counts and content equal");
    let started = lab.run(&["start-server", "--json"]);
    started.success();
    assert_eq!(started.json()["figures"]["schema_migrations"], 13, "8.7.6 -> 14.0.0 runs 13 schema migrations");
    let reconciled = lab.run(&["env-reconcile", "--json"]);
    reconciled.success();
    assert_migrated(&lab, &before, &reconciled.json(), false);

    // Every step a second time: nothing to do.
    for step in ["halt-all", "stop-server", "dump", "restore", "start-server", "env-reconcile"] {
        lab.run(&[step]).success().stdout_has("nothing to do");
    }
    let report = std::fs::read_to_string(lab.work_dir().join("report.md")).unwrap();
    for env in before.keys() {
        assert!(report.contains(env.as_str()), "the report names {env}");
    }
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrate_resumes_after_being_killed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab("e2e-11to14", "11.5.5");
    let before = lab.environments(Side::Old);
    let mut first =
        lab.tool(&["migrate", "--yes", "--release"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill it as soon as the old side is stopped, between or in steps.
    let start = Instant::now();
    loop {
        if lab.journal()["steps"]["stop-server"]["status"] == "done" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "migrate never got past stop-server");
        assert!(first.try_wait().unwrap().is_none(), "migrate ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let again = lab.run(&["migrate", "--yes", "--release", "--json"]);
    again.success();
    let status = lab.run(&["status", "--json"]);
    status.success();
    let steps = status.json()["details"]["steps"].clone();
    assert!(steps.as_array().unwrap().iter().all(|s| s["status"] == "done"), "{steps}");
    let reconcile = lab.run(&["env-reconcile", "--json"]);
    assert_eq!(reconcile.success().json()["status"], "nothing_to_do");
    let outcome = lab.reconciled();
    assert_migrated(&lab, &before, &outcome, true);
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn differences_and_failed_compiles_stop_only_their_environment() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab("e2e-faults", "8.7.6");
    lab.push_model("plain", ModelVariant::WithDifferences).unwrap();
    lab.push_model("tuned", ModelVariant::Broken).unwrap();
    let run = lab.run(&["migrate", "--yes", "--json"]);
    run.code(1).stderr_has("tuned: the update & recompile failed").stderr_has("plain: std::testing::NullResource");
    let new = lab.environments(Side::New);
    assert_eq!(new["plain"]["halted"], false, "left resumed");
    assert_eq!(new["plain"]["settings"]["auto_deploy"], false, "with auto_deploy off");
    assert_eq!(new["tuned"]["settings"]["auto_deploy"], false);
    let journal = lab.journal();
    let env =
        |name: &str| journal["environments"].as_object().unwrap().values().find(|e| e["name"] == name).unwrap().clone();
    assert_eq!(env("plain")["status"], "needs_operator");
    assert_eq!(env("tuned")["status"], "failed");
    assert_eq!(env("manual")["status"], "done", "the others go on");

    // The operator fixes the models; reconciling those two again finishes.
    lab.push_model("plain", ModelVariant::Normal).unwrap();
    lab.push_model("tuned", ModelVariant::Normal).unwrap();
    lab.run(&["env-reconcile", "--env", "plain", "--env", "tuned"]).success();
    let new = lab.environments(Side::New);
    assert_eq!(new["plain"]["settings"]["auto_deploy"], true, "back as before");
    lab.run(&["migrate", "--yes"]).success();
}

/// The old orchestrator changes after `halt-all` (an environment resumed by
/// hand, one created in the window): `stop-server` refuses and says to run
/// `halt-all` again, which takes the changes in, and the migration goes on
/// to the end with both environments as the operator left them.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn halt_all_again_takes_in_what_changed_after_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab("e2e-changed", "8.7.6");
    let old = lab.client(Side::Old).unwrap();
    lab.run(&["halt-all"]).success();

    // In the maintenance window: the operator resumes the environment that
    // was halted before and creates one.
    let halted = lab.env("halted").unwrap().id.clone();
    old.resume(&halted).unwrap();
    let project = lab.project_id().unwrap();
    let late = old.create_environment(project, "late", &lab.repo_url("plain"), "main").unwrap();

    let stop = lab.run(&["stop-server"]);
    stop.code(3).stderr_has("run `inmanta-migrate halt-all` (again");
    assert!(lab.server_running(Side::Old), "nothing stopped");

    let again = lab.run(&["halt-all", "--json"]);
    again.success();
    assert_eq!(again.json()["status"], "done", "{}", again.stdout);
    assert!(old.halted(&halted).unwrap() && old.halted(&late).unwrap(), "both halted now");
    let inventory: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.work_dir().join("inventory.json")).unwrap()).unwrap();
    let record = |id: &str| inventory["environments"].as_array().unwrap().iter().find(|e| e["id"] == id).cloned();
    assert_eq!(record(&halted).unwrap()["halted"], false, "resumed by the operator: running before now");
    assert_eq!(record(&late).expect("the new environment is inventoried")["halted"], false);
    lab.run(&["halt-all"]).success().stdout_has("nothing to do");

    lab.run(&["migrate", "--yes"]).success();
    let new = lab.environments(Side::New);
    assert_eq!(new["halted"]["halted"], false, "resumed on the new server, as the operator left it");
    assert_eq!(new["late"]["halted"], false, "the late environment migrated and runs");
    let journal = lab.journal();
    let status = |id: &str| journal["environments"][id]["status"].clone();
    assert_eq!(status(&halted), "done");
    assert_eq!(status(&late), "done");
}

/// An agent paused by hand before the migration stays paused, and its
/// environment still ends done: the redeploy after the recompile (8.x ->
/// 10.0+ lost the code files) asks only running agents, and the dry-run
/// names the paused agent's resources as not evaluated.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn an_agent_paused_before_stays_paused_and_its_environment_ends_done() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab("e2e-paused", "8.7.6");
    let plain = lab.env("plain").unwrap().id.clone();
    let agent_paused = |side: Side| -> bool {
        let agents = lab.client(side).unwrap().get("/api/v2/agents", Some(&plain)).unwrap();
        let internal = agents["data"].as_array().unwrap().iter().find(|a| a["name"] == "internal").cloned();
        internal.unwrap_or_else(|| panic!("no agent `internal` on the {side} server: {agents}"))["paused"] == true
    };
    lab.client(Side::Old).unwrap().post("/api/v2/agent/internal/pause", Some(&plain), None).unwrap();
    assert!(agent_paused(Side::Old));

    let run = lab.run(&["migrate", "--yes", "--json"]);
    run.success();
    let journal = lab.journal();
    let record = &journal["environments"][plain.as_str()];
    assert_eq!(record["status"], "done", "{record}");
    assert!(record["message"].as_str().unwrap().contains("agent paused before the migration"), "{record}");
    assert!(agent_paused(Side::New), "still paused on the new server");
    assert_eq!(lab.environments(Side::New)["plain"]["halted"], false, "the environment itself runs");
    lab.run(&["env-reconcile"]).success().stdout_has("nothing to do");
}
