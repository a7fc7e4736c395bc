//! The migrations operators run today, on real servers: every pair ends on
//! an inmanta-core 15+ server, which runs in the lab's Debian 13 root
//! (Python 3.13, PostgreSQL 17) and so does the tool, as on a new machine;
//! an OLD server on this machine (Debian 12, PostgreSQL 15, or 13 as an
//! ISO7 on RHEL 8 has it) is reached over the lab's sshd. Two pairs run on
//! booted machines (`lab up --systemd`): both servers are
//! `inmanta-server.service` under a real systemd, managed with `manager =
//! "systemd"` (the OLD one over ssh), their journals the logs. Ignored by
//! plain `cargo test`; `cargo xtask ci` runs them.

use std::{collections::BTreeSet, time::Duration};

use lab::{EnvRole, Machine, ModelVariant, Security, Side, UpOptions};
use serde_json::Value;

use crate::support::lab::{
    Lab, alone, assert_migrated, lab_booted, lab_from, lab_pair, lab_pg, lab_via, pg_majors, slot,
};

/// The schema versions one side's database has installed.
fn schema_versions(lab: &Lab, side: Side) -> BTreeSet<String> {
    let sql = "SELECT unnest(installed_versions)::text FROM schemamanager WHERE name = 'core'";
    lab.psql(side, "inmanta", sql).unwrap().lines().map(str::to_owned).collect()
}

/// Step by step, with the assertions of the 8.7.6 -> 14.0.0 e2e test, and
/// a second run of every step that changes nothing; `before_start` runs
/// after the restore, before the NEW server's first start.
/// `rehearse` before the window: every server of `servers` (intermediates,
/// then the new one) started on the copy and migrating it, every
/// environment compiled by the new version to the same desired state, and
/// nothing left on the new side.
fn rehearses_the_same(lab: &Lab, servers: &[&str]) {
    let rehearsed = lab.run(&["rehearse", "--json"]);
    rehearsed.success();
    rehearsed_on(lab, servers, &rehearsed.json()["details"]);
}

/// What [`rehearses_the_same`] asserts of a rehearsal's details.
fn rehearsed_on(lab: &Lab, servers: &[&str], r: &Value) {
    let ran: Vec<&str> = r["servers"].as_array().unwrap().iter().map(|s| s["version"].as_str().unwrap()).collect();
    assert_eq!(ran, servers, "each server started on the copy");
    for server in r["servers"].as_array().unwrap() {
        assert!(server["schema_migrations"].as_u64().unwrap() > 0, "each one migrated the copy: {server}");
    }
    for env in r["environments"].as_array().unwrap() {
        assert_eq!(env["outcome"], "same", "{env:#}");
    }
    assert_eq!(r["deploy_actions"][0], r["deploy_actions"][1], "nothing deployed");
    let databases = lab.psql(Side::New, "postgres", "SELECT datname FROM pg_database").unwrap();
    assert!(!databases.lines().any(|d| d.ends_with("_rehearsal")), "the copy is dropped: {databases}");
    assert!(!lab.server_running(Side::New), "no server left running on the new side");
    eprintln!(
        "TIMING rehearse {} -> {}: {:.1} s, window predicted {:.1} s",
        lab.version(Side::Old),
        servers.join(" -> "),
        r["seconds"].as_f64().unwrap(),
        r["window"]["seconds"].as_f64().unwrap()
    );
}

fn migrates_step_by_step(lab: &Lab, before_start: fn(&Lab)) {
    let (old, new) = (lab.version(Side::Old).to_owned(), lab.version(Side::New).to_owned());
    assert!(lab.machine(Side::New).in_root(), "a 15+ server runs from the Debian 13 root");
    assert_eq!(lab.tool_machine(), lab.machine(Side::New), "the tool runs on the new machine");
    let before = lab.environments(Side::Old);

    lab.run(&["check"]).success();
    lab.run(&["halt-all"]).success();
    lab.run(&["stop-server"]).success();
    lab.run(&["dump"]).success();
    lab.run(&["restore"]).success();
    let old_schema = schema_versions(lab, Side::Old);
    assert_eq!(schema_versions(lab, Side::New), old_schema);
    assert_eq!(lab.fingerprints(Side::Old), lab.fingerprints(Side::New), "row counts and content equal");
    assert!(!lab.server_running(Side::Old), "stop-server stopped the old server");

    before_start(lab);
    let started = lab.run(&["start-server", "--json"]);
    started.success();
    let new_schema = schema_versions(lab, Side::New);
    assert!(new_schema.is_superset(&old_schema), "the new server keeps every applied version");
    let added = new_schema.len() - old_schema.len();
    assert!(added > 0, "{old} -> {new} migrates the schema");
    assert_eq!(started.json()["figures"]["schema_migrations"], added, "the figure counts the versions added");
    assert_eq!(started.json()["figures"]["core_version"], new);

    let reconciled = lab.run(&["env-reconcile", "--json"]);
    if let Some(protected) = lab.envs().iter().find(|e| e.role == EnvRole::Protected) {
        // Its auto_deploy cannot be turned off: left halted for an operator,
        // who goes on knowing the recompile is released before the dry-run.
        reconciled.code(3).stderr_has("auto_deploy is protected").stderr_has("--accept-protected");
        assert_eq!(lab.journal()["environments"][protected.id.as_str()]["status"], "needs_operator");
        assert_eq!(lab.environments(Side::New)[protected.name.as_str()]["halted"], true, "left halted");
        lab.run(&["env-reconcile", "--env", &protected.name, "--accept-protected"]).success();
    } else {
        reconciled.success();
    }
    // Settings the new version dropped are said once for the run, not per environment.
    let gone: BTreeSet<String> = reconciled.json()["details"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["settings_gone"].as_array().cloned().unwrap_or_default())
        .map(|name| name.as_str().unwrap().to_owned())
        .collect();
    let said: Vec<&str> = reconciled.stderr.lines().filter(|l| l.contains("no longer has, dropped")).collect();
    assert_eq!(said.len(), usize::from(!gone.is_empty()), "said once: {said:?}");
    assert!(gone.iter().all(|name| said[0].contains(name.as_str())), "{gone:?} in {said:?}");
    assert_migrated(lab, &before, &lab.reconciled(), false);

    for step in ["halt-all", "stop-server", "dump", "restore", "start-server", "env-reconcile"] {
        lab.run(&[step]).success().stdout_has("nothing to do");
    }
    eprintln!("{old} -> {new}: {added} schema migrations; lab timings:\n{}", lab.timings().table());
}

/// Nothing to do before the NEW server's first start.
fn nothing(_: &Lab) {}

/// On a booted NEW machine, before its server's first start: a unit that
/// fails to start, then one that restarts in a loop, each reported with
/// the unit's journal and the way on, which leads to the start that works.
fn unit_fails_to_start_then_restarts_in_a_loop(lab: &Lab) {
    assert_eq!(lab.machine(Side::New), Machine::Booted);
    // The operator's unit names a venv that was never installed.
    let wrong_venv = "[Service]\nExecStart=\nExecStart=/opt/inmanta/bin/inmanta -c /etc/inmanta/inmanta.cfg server\n";
    lab.set_server_dropin(Side::New, "wrong-venv", Some(wrong_venv)).unwrap();
    lab.run(&["start-server"])
        .code(1)
        .stderr_has("the new server did not start: `systemctl start inmanta-server.service` failed")
        .stderr_has("Unable to locate executable '/opt/inmanta/bin/inmanta'")
        .stderr_has("then run `inmanta-migrate start-server` again");
    assert!(lab.client(Side::New).unwrap().server_version().is_err(), "nothing answers");

    // Fixed, but now it points at a port where no database listens: the
    // server gives up, systemd starts it again, and again. (The loop's
    // drop-in comes first: systemd keeps restarting the unit meanwhile.)
    let wrong_port = "[Service]\nEnvironment=INMANTA_DATABASE_PORT=1 INMANTA_DATABASE_WAIT_TIME=1\n";
    lab.set_server_dropin(Side::New, "wrong-db-port", Some(wrong_port)).unwrap();
    lab.set_server_dropin(Side::New, "wrong-venv", None).unwrap();
    lab.run(&["start-server"])
        .code(1)
        .stderr_has("the new server restarts in a loop")
        .stderr_has("journalctl")
        .stderr_has("then run `inmanta-migrate start-server` again");
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'inmanta' AND usename = 'inmanta'";
    assert_eq!(lab.psql(Side::New, "postgres", sql).unwrap().trim(), "0", "no server reached the database");

    // Fixed for good: systemd's next restart brings it up, which the
    // re-run (the caller's start-server) waits for.
    lab.set_server_dropin(Side::New, "wrong-db-port", None).unwrap();
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_11_5_to_15_5_across_postgresql_majors() {
    let _slot = slot();
    // An ISO7 on RHEL 8 runs PostgreSQL 13; the new machine has 17.
    let lab = lab_pg("e2e-11to15", ("11.5.5", Some(13)), ("15.5.9", None));
    assert_eq!(pg_majors(&lab), (13, 17));
    migrates_step_by_step(&lab, nothing);
}

/// On booted machines: systemd and journald on both sides, the OLD one
/// over ssh.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_15_5_to_18_4_on_systemd_machines() {
    let _alone = alone();
    let lab = lab_booted("e2e-15to18", "15.5.9", "18.4.0");
    // The rehearsal's servers through the unit, with a runtime drop-in.
    rehearses_the_same(&lab, &["18.4.0"]);
    // One that a killed rehearsal left would put the real server on the
    // copy: start-server removes it first.
    let leftover = "[Service]\nEnvironment=\"INMANTA_DATABASE_NAME=inmanta_rehearsal\"\nEnvironment=\"INMANTA_SERVER_BIND_PORT=1\"\n";
    lab.set_server_runtime_dropin(Side::New, "50-inmanta-migrate-rehearsal", Some(leftover)).unwrap();
    migrates_step_by_step(&lab, nothing);

    // The way back on systemd machines: the new unit stopped and disabled
    // (a reboot would not bring it back), the old one running again.
    let unit = |side| lab.server_unit(side).unwrap();
    let old_enabled = unit(Side::Old).1;
    lab.run(&["rollback", "--force"]).success();
    assert_eq!(unit(Side::New), ("inactive".to_owned(), "disabled".to_owned()), "the new unit after rollback");
    assert_eq!(unit(Side::Old), ("active".to_owned(), old_enabled.clone()), "the old unit after rollback");
    // Again to the end (the protected environment, as the first time, with
    // the operator's --accept-protected): the new unit enabled again; then finish.
    let again = lab.run(&["migrate", "--yes"]);
    match lab.envs().iter().find(|e| e.role == EnvRole::Protected) {
        Some(protected) => {
            again.code(3);
            lab.run(&["env-reconcile", "--env", &protected.name, "--accept-protected"]).success();
        }
        None => {
            again.success();
        }
    }
    assert_eq!(unit(Side::New), ("active".to_owned(), "enabled".to_owned()), "the new unit after a new attempt");
    lab.run(&["finish"]).success();
    assert_eq!(unit(Side::Old), ("inactive".to_owned(), "disabled".to_owned()), "the old unit after finish");

    // Past the point of no return, a reboot of the old machine leaves its
    // server down, while what stays enabled there comes back with it (its
    // PostgreSQL answers: the reboot was a real one).
    lab.reboot(Side::Old).unwrap();
    assert_eq!(unit(Side::Old), ("inactive".to_owned(), "disabled".to_owned()), "the old unit after a reboot");
    let comment = lab.psql(
        Side::Old,
        "postgres",
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'inmanta'",
    );
    assert!(comment.unwrap().contains("migrated by inmanta-migrate"), "the old database still says it moved");
}

/// ISO9 -> ISO10 as open source has it: 19.0.0 is the only 19.x on PyPI,
/// and 18.3.0/18.4.0 carry schema versions (202610050, 202610150) that it
/// does not know, so 18.2.0 is the newest 18.x it can take.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_18_2_to_19_0() {
    let _slot = slot();
    migrates_step_by_step(&lab_pair("e2e-18to19", "18.2.0", "19.0.0"), nothing);
}

/// The latest ISO9 release, 18.4.0, goes to 20.1.0: 19.0.0 is refused by
/// restore (the dump's schema is newer than it knows), before anything
/// changes on the new side.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_18_4_to_20_1_and_refuses_19_0() {
    {
        let _slot = slot();
        let lab = lab_pair("e2e-18to19-refused", "18.4.0", "19.0.0");
        // The preflight says so before anything changes ...
        lab.run(&["check"])
            .code(3)
            .output_has("the old database has core schema version 202610150, newer than inmanta-core 19.0.0 knows");
        // ... and restore refuses the dump all the same.
        for step in ["halt-all", "stop-server", "dump"] {
            lab.run(&[step]).success();
        }
        let refused = lab.run(&["restore"]);
        refused.code(3).stderr_has("newer than inmanta-core 19.0.0 knows").stderr_has("install a newer inmanta-core");
        let tables = lab.psql(Side::New, "inmanta", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
        assert_eq!(tables.unwrap().trim(), "0", "nothing was restored");
    }
    let _slot = slot();
    migrates_step_by_step(&lab_pair("e2e-18to20", "18.4.0", "20.1.0"), nothing);
}

/// On booted machines, with a NEW unit that fails to start and then one
/// that restarts in a loop before it is right.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_19_0_to_20_1_on_systemd_machines_through_a_broken_unit() {
    let _alone = alone();
    // PostgreSQL 17 into 18, which 20.1.0 was adapted to (18.3.0, 19.1.0).
    let options = UpOptions {
        name: "e2e-19to20".into(),
        old: "19.0.0".into(),
        new: "20.1.0".into(),
        systemd: true,
        new_pg: Some(18),
        ..UpOptions::default()
    };
    let lab = lab_from(options, Security::Plain);
    assert_eq!(pg_majors(&lab), (17, 18));
    lab.run(&["check"]).success().output_has("PostgreSQL 18 serves inmanta-core 20.1.0");
    migrates_step_by_step(&lab, unit_fails_to_start_then_restarts_in_a_loop);
}

/// Inmanta's rule for several majors, automated: 11.5.5 (ISO7) -> 19.0.0
/// (ISO10) through 15.5.9 (ISO8) and 18.2.0 (ISO9; the newest 18.x whose
/// schema 19.0.0 knows), each intermediate started on the restored database
/// in turn, migrating it, and stopped.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_11_5_to_19_0_through_15_5_and_18_2() {
    let _slot = slot();
    let lab = lab_via("e2e-11to19", "11.5.5", &["15.5.9", "18.2.0"], "19.0.0");
    let before = lab.environments(Side::Old);
    // A project the upgrade itself breaks: a plugin importing `pipes`
    // compiles on 11.5.5 (Python 3.11; not released there) and not on
    // 19.0.0 (Python 3.13 removed it). The rehearsal names it; the project
    // is then fixed.
    let plain = lab.env("plain").unwrap().id.clone();
    lab.push_model("plain", ModelVariant::NeedsPython311).unwrap();
    let old_api = lab.client(Side::Old).unwrap();
    let compiled = old_api.compile(&plain, true, Duration::from_secs(600)).unwrap();
    assert!(compiled.success, "the plugin compiles on 11.5.5: {}", compiled.failure);
    let rehearsed = lab.run(&["rehearse", "--json"]);
    rehearsed.code(3).output_has("does not compile");
    let mut r = rehearsed.json()["details"].clone();
    let envs = r["environments"].as_array_mut().unwrap();
    let at = envs.iter().position(|e| e["id"] == plain.as_str()).expect("plain rehearsed");
    let broken = envs.remove(at);
    assert_eq!(broken["outcome"], "fails", "{broken:#}");
    let error = broken["error"].as_str().unwrap();
    assert!(error.contains("pipes"), "the compiler's error names the import: {error}");
    eprintln!("19.0.0 on a plugin importing pipes: {}", error.lines().next().unwrap_or(""));
    rehearsed_on(&lab, &["15.5.9", "18.2.0", "19.0.0"], &r);
    lab.push_model("plain", ModelVariant::Normal).unwrap();
    let check = lab.run(&["check", "--json"]);
    check.success();
    let versions =
        check.json()["details"]["items"].as_array().unwrap().iter().find(|i| i["name"] == "versions").cloned();
    let versions = versions.expect("a versions check");
    assert_eq!(versions["status"], "pass", "every product major in between has a server: {versions}");

    for step in ["halt-all", "stop-server", "dump", "restore"] {
        lab.run(&[step]).success();
    }
    let old_schema = schema_versions(&lab, Side::Old);
    let started = lab.run(&["start-server", "--json"]);
    started.success();
    let figures = &started.json()["figures"];
    let via = figures["intermediates"].as_array().unwrap_or_else(|| panic!("no intermediates in {figures}"));
    assert_eq!(via.iter().map(|v| v["version"].as_str().unwrap()).collect::<Vec<_>>(), ["15.5.9", "18.2.0"]);
    let by_each: Vec<u64> = via.iter().map(|v| v["schema_migrations"].as_u64().unwrap()).collect();
    assert!(by_each.iter().all(|n| *n > 0), "each intermediate migrated the schema: {via:?}");
    let added = (schema_versions(&lab, Side::New).len() - old_schema.len()) as u64;
    let last = figures["schema_migrations"].as_u64().unwrap();
    assert!(last > 0, "19.0.0 still had migrations of its own");
    assert_eq!(by_each.iter().sum::<u64>() + last, added, "every schema version added is counted once");
    assert_eq!(figures["core_version"], "19.0.0");
    assert!(!lab.server_running(Side::New) || lab.client(Side::New).unwrap().server_version().unwrap() == "19.0.0");

    let reconciled = lab.run(&["env-reconcile", "--json"]);
    reconciled.success();
    assert_migrated(&lab, &before, &reconciled.json(), false);
    lab.run(&["start-server"]).success().stdout_has("nothing to do");
    eprintln!("11.5.5 -> 15.5.9 ({}) -> 18.2.0 ({}) -> 19.0.0 ({last})", by_each[0], by_each[1]);
}
