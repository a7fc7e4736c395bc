//! The migrations operators run today, on real servers: every pair ends on
//! an inmanta-core 15+ server, which runs in the lab's Debian 13 root
//! (Python 3.13, PostgreSQL 17) and so does the tool, as on a new machine;
//! an OLD server on this machine (Debian 12, PostgreSQL 15) is reached over
//! the lab's sshd. Ignored by plain `cargo test`; `cargo xtask ci` runs them.

use std::collections::BTreeSet;

use lab::{Instance, LabRoot, Machine, Security, Side, UpOptions};

use crate::e2e::{Lab, SERIAL, assert_migrated};

/// A lab instance migrating `old` to `new`.
pub fn lab_pair(name: &str, old: &str, new: &str) -> Lab {
    let root = LabRoot::from_env().unwrap();
    if let Ok(previous) = Instance::open(&root, name) {
        previous.down(true).unwrap();
    }
    let options = UpOptions { name: name.into(), old: old.into(), new: new.into(), ..UpOptions::default() };
    Lab::new(lab::up_with(&root, &options, Security::Plain).expect("the lab comes up"))
}

/// The schema versions one side's database has installed.
fn schema_versions(lab: &Lab, side: Side) -> BTreeSet<String> {
    let sql = "SELECT unnest(installed_versions)::text FROM schemamanager WHERE name = 'core'";
    lab.psql(side, "inmanta", sql).unwrap().lines().map(str::to_owned).collect()
}

/// Step by step, with the assertions of the 8.7.6 -> 14.0.0 e2e test, and
/// a second run of every step that changes nothing.
fn migrates_step_by_step(name: &str, old: &str, new: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab_pair(name, old, new);
    assert_eq!(lab.machine(Side::New), Machine::Trixie, "a 15+ server runs in the Debian 13 root");
    assert_eq!(lab.tool_machine(), Machine::Trixie, "the tool runs on the new machine");
    let before = lab.environments(Side::Old);

    lab.run(&["check"]).success();
    lab.run(&["halt-all"]).success();
    lab.run(&["stop-server"]).success();
    lab.run(&["dump"]).success();
    lab.run(&["restore"]).success();
    let old_schema = schema_versions(&lab, Side::Old);
    assert_eq!(schema_versions(&lab, Side::New), old_schema);
    assert_eq!(lab.fingerprints(Side::Old), lab.fingerprints(Side::New), "row counts and content equal");

    let started = lab.run(&["start-server", "--json"]);
    started.success();
    let new_schema = schema_versions(&lab, Side::New);
    assert!(new_schema.is_superset(&old_schema), "the new server keeps every applied version");
    let added = new_schema.len() - old_schema.len();
    assert!(added > 0, "{old} -> {new} migrates the schema");
    assert_eq!(started.json()["figures"]["schema_migrations"], added, "the figure counts the versions added");
    assert_eq!(started.json()["figures"]["core_version"], new);

    let reconciled = lab.run(&["env-reconcile", "--json"]);
    reconciled.success();
    assert_migrated(&lab, &before, &reconciled.json(), false);

    for step in ["halt-all", "stop-server", "dump", "restore", "start-server", "env-reconcile"] {
        lab.run(&[step]).success().stdout_has("nothing to do");
    }
    eprintln!("{old} -> {new}: {added} schema migrations; lab timings:\n{}", lab.timings().table());
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_11_5_to_15_5_across_postgresql_majors() {
    migrates_step_by_step("e2e-11to15", "11.5.5", "15.5.9");
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_15_5_to_18_4() {
    migrates_step_by_step("e2e-15to18", "15.5.9", "18.4.0");
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_18_4_to_19_0() {
    migrates_step_by_step("e2e-18to19", "18.4.0", "19.0.0");
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_19_0_to_20_1() {
    migrates_step_by_step("e2e-19to20", "19.0.0", "20.1.0");
}
