//! The way back and the point of no return on the real lab (8.7.6 ->
//! 14.0.0): `rollback` after halt-all, stop-server, dump, restore and
//! start-server, in the middle of env-reconcile (refused without --force,
//! as status and plan said beforehand), with the new machine gone, the
//! split-brain guard of env-reconcile, after a finished migration (refused),
//! and `finish`.

use std::{collections::BTreeMap, time::Duration};

use lab::{EnvRole, Side};
use serde_json::Value;

use crate::support::{
    lab::{Lab, lab, slot},
    set,
};

/// The old side as the inventory had it: every environment there, halted
/// as before, its stored settings as before. A setting stored since may
/// only hold its default: 8.7.6 stores `autostart_on_start` when it starts.
fn assert_old_side_as_before(lab: &Lab, before: &BTreeMap<String, Value>) {
    let now = lab.environments(Side::Old);
    assert_eq!(before.keys().collect::<Vec<_>>(), now.keys().collect::<Vec<_>>(), "the same environments");
    let api = lab.client(Side::Old).unwrap();
    for (name, old) in before {
        assert_eq!(now[name]["id"], old["id"], "{name}: id");
        assert_eq!(now[name]["halted"], old["halted"], "{name}: halted as before the migration");
        let (was, is) = (old["settings"].as_object().unwrap(), now[name]["settings"].as_object().unwrap());
        let definitions = api.get("/api/v2/environment_settings", Some(old["id"].as_str().unwrap())).unwrap();
        for (key, value) in is {
            match was.get(key) {
                Some(before) => assert_eq!(value, before, "{name}: setting {key} as before the migration"),
                None => assert_eq!(
                    value, &definitions["data"]["definition"][key]["default"],
                    "{name}: setting {key}, stored since, holds its default"
                ),
            }
        }
        assert!(was.keys().all(|k| is.contains_key(k)), "{name}: no setting lost: {was:?} -> {is:?}");
    }
}

/// The new side can drive nothing: its server is down and every environment
/// in its database is halted.
fn assert_new_side_inert(lab: &Lab) {
    assert!(!lab.server_running(Side::New), "the new server is stopped");
    let restored = lab.psql(Side::New, "inmanta", "SELECT to_regclass('public.environment') IS NOT NULL").unwrap();
    if restored.trim() == "t" {
        let running = lab.psql(Side::New, "inmanta", "SELECT count(*) FROM environment WHERE NOT halted").unwrap();
        assert_eq!(running.trim(), "0", "every environment is halted in the new database");
    }
}

/// Runs `rollback` (with `args`), checks it went back from `point` and
/// that both sides are as they must be, and prints its time for the note.
fn roll_back(lab: &Lab, before: &BTreeMap<String, Value>, point: &str, args: &[&str]) {
    let mut all = vec!["rollback", "--json"];
    all.extend(args);
    let back = lab.run(&all);
    back.success();
    assert_eq!(back.json()["status"], "done", "{}", back.stdout);
    assert_eq!(lab.journal()["rolled_back"]["from"], point);
    eprintln!("TIMING rollback from {point} {args:?}: done in {:.1} s", back.json()["figures"]["seconds"]);
    assert_new_side_inert(lab);
    assert_old_side_as_before(lab, before);
    lab.run(&["status"]).success().stdout_has(&format!("rolled back from {point}"));
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn rolls_back_from_every_point_and_a_lost_new_machine_keeps_one_driver_and_finishes() {
    let _slot = slot();
    let lab = lab("e2e-rollback", "8.7.6");
    let before = lab.environments(Side::Old);

    // 1. After halt-all alone: the old server still runs; its environments
    // are resumed as they were.
    lab.run(&["halt-all"]).success();
    roll_back(&lab, &before, "halt-all", &[]);

    // 2. After stop-server: the old server is started again.
    for step in ["halt-all", "stop-server"] {
        lab.run(&[step]).success();
    }
    roll_back(&lab, &before, "stop-server", &[]);

    // 3. After dump: the old database is checked against the dump's counts.
    for step in ["halt-all", "stop-server", "dump"] {
        lab.run(&[step]).success();
    }
    roll_back(&lab, &before, "dump", &[]);
    lab.run(&["finish"]).code(3).output_has("it was rolled back");

    // 4. After restore: the new database is filled, but no server ran on it.
    for step in ["halt-all", "stop-server", "dump", "restore"] {
        lab.run(&[step]).success();
    }
    lab.run(&["status"]).success().stdout_lacks("What rollback would throw away");
    roll_back(&lab, &before, "restore", &[]);

    // 5. After start-server: a server ran on the new database, but did
    // nothing of its own, so no --force is needed (and status says so).
    for step in ["halt-all", "stop-server", "dump", "restore", "start-server"] {
        lab.run(&[step]).success();
    }
    assert!(lab.work_dir().join("inventory.json.attempt-1").exists(), "the first inventory set aside");
    lab.run(&["status"]).success().stdout_has("What rollback would throw away now: nothing");
    roll_back(&lab, &before, "start-server", &[]);

    // 6. In the middle of env-reconcile, one environment reconciled: going
    // back throws away the version compiled there, so only with --force.
    let plain = lab.envs().iter().find(|e| e.role == EnvRole::Plain).expect("a plain environment").clone();
    for step in ["halt-all", "stop-server", "dump", "restore", "start-server"] {
        lab.run(&[step]).success();
    }
    lab.run(&["env-reconcile", "--env", &plain.name]).success();
    let status = lab.run(&["status", "--json"]);
    let would_lose = status.success().json()["details"]["would_lose"]["items"].to_string();
    assert!(would_lose.contains(&format!("{}: version", plain.name)), "status lists the lost version: {would_lose}");
    lab.run(&["plan"]).success().stdout_has("compiled on the new server");
    let refused = lab.run(&["rollback"]);
    refused.code(3).output_has("compiled on the new server").output_has("rollback --force");
    assert!(lab.server_running(Side::New), "a refused rollback changes nothing");
    roll_back(&lab, &before, "env-reconcile", &["--force"]);
    assert_eq!(lab.journal()["earlier"].as_array().map(Vec::len), Some(5), "the earlier attempts are kept");

    // The old orchestrator works again: a compile there deploys.
    let old_api = lab.client(Side::Old).unwrap();
    let compiled = old_api.compile(&plain.id, false, Duration::from_secs(300)).unwrap();
    assert!(compiled.success, "a compile on the old server after the rollback: {}", compiled.failure);
    lab.wait_deployed_on(Side::Old, &plain.id, compiled.version);

    // 7. The new machine gone for good, one environment resumed there: its
    // service cannot be reached (ssh to a closed port stands for a machine
    // that is off), so rollback refuses until told the side is gone; then
    // its database is made inert and the old side comes back.
    for step in ["halt-all", "stop-server", "dump", "restore", "start-server"] {
        lab.run(&[step]).success();
    }
    lab.run(&["env-reconcile", "--env", &plain.name]).success();
    lab.stop_server(Side::New).unwrap();
    let gone = lab.config_variant("new-side-gone", |c| {
        set(c, "new.host.ssh", "root@127.0.0.1");
        set(c, "new.host.port", 9);
    });
    let with_gone = |args: &[&str]| crate::support::run(&mut lab.tool_at(&gone, args, &[]));
    with_gone(&["rollback", "--force"]).code(3).output_has("ssh failed").output_has("--new-side-gone");
    let back = with_gone(&["rollback", "--new-side-gone", "--json"]);
    let summary = back.success().json()["summary"].as_str().unwrap().to_owned();
    assert!(summary.contains("1 environment(s) halted in its database"), "{summary}");
    let sql = format!("SELECT halted FROM environment WHERE id = '{}'", plain.id);
    assert_eq!(lab.psql(Side::New, "inmanta", &sql).unwrap().trim(), "t", "the gone side's database is inert");
    let unpaused = lab.psql(Side::New, "inmanta", "SELECT count(*) FROM agent WHERE NOT paused").unwrap();
    assert_eq!(unpaused.trim(), "0", "every agent paused in the gone side's database");
    assert_old_side_as_before(&lab, &before);
    with_gone(&["status"]).success().stdout_has("rolled back from env-reconcile");
    assert_eq!(lab.journal()["rolled_back"]["new_side_gone"], true);

    // 8. The old server started by hand and running an environment stops
    // env-reconcile before it resumes that environment here.
    for step in ["halt-all", "stop-server", "dump", "restore", "start-server"] {
        lab.run(&[step]).success();
    }
    lab.start_server(Side::Old).unwrap();
    old_api.resume(&plain.id).unwrap();
    let guarded = lab.run(&["env-reconcile"]);
    guarded.code(3).output_has("two orchestrators").output_has("nothing was resumed");
    let sql = format!("SELECT halted FROM environment WHERE id = '{}'", plain.id);
    let halted = lab.psql(Side::New, "inmanta", &sql).unwrap();
    assert_eq!(halted.trim(), "t", "{} was not resumed on the new side while the old one drives it", plain.name);
    old_api.halt(&plain.id).unwrap();
    lab.stop_server(Side::Old).unwrap();
    lab.run(&["env-reconcile"]).success();
    let after = lab.environments(Side::New);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "every environment migrated");

    // 9. A finished migration: rollback lists what it would throw away and
    // refuses without --force; then finish: no way back.
    lab.run(&["rollback"]).code(3).output_has("compiled on the new server").output_has("rollback --force");
    lab.run(&["finish", "--remove-dump"]).success();
    assert!(!lab.server_running(Side::Old), "the old server stays down");
    let sql = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'inmanta'";
    let comment = lab.psql(Side::Old, "postgres", sql).unwrap();
    assert!(comment.contains("migrated by inmanta-migrate"), "the old database says it moved: {comment:?}");
    assert!(!lab.work_dir().join("dump").exists(), "--remove-dump deleted the dump");
    lab.run(&["rollback"]).code(3).output_has("no way back");
}
