//! End to end on the real lab: real PostgreSQL clusters, real inmanta-core
//! servers from PyPI, the real binary. Ignored by plain `cargo test`;
//! `cargo xtask ci` runs them (`-- --ignored`), one at a time.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use lab::{ModelVariant, Side};
use serde_json::Value;

use crate::support::lab::{assert_migrated, lab, slot};

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_8_7_to_14_step_by_step() {
    let _slot = slot();
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
    let _slot = slot();
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
    let _slot = slot();
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
    let _slot = slot();
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
    let _slot = slot();
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
