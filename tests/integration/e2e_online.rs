//! The online copy end to end on the real lab: `check` names what the old
//! PostgreSQL lacks, the DBA's fix, `precopy` while the old orchestrator
//! compiles and deploys, `cutover` in the window, and the same assertions as
//! the offline migration.

use lab::{EnvRole, Side};
use std::time::Duration;

use crate::e2e::{SERIAL, assert_migrated, lab};
use crate::support::{check_items, set};

/// What of the copy exists on one side of the lab (superuser view).
fn leftovers(lab: &crate::e2e::Lab, side: Side) -> String {
    let sql = "SELECT (SELECT count(*) FROM pg_publication) || ' publications, ' || \
               (SELECT count(*) FROM pg_subscription) || ' subscriptions, ' || \
               (SELECT count(*) FROM pg_replication_slots) || ' slots, ' || \
               (SELECT count(*) FROM pg_roles WHERE rolname = 'inmanta_migrate') || ' copy roles'";
    lab.psql(side, "inmanta", sql).unwrap().trim().to_owned()
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_8_7_to_14_online_while_the_old_orchestrator_works() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab("e2e-online", "8.7.6");
    let online = lab.config_variant("online", |c| set(c, "copy.mode", "online"));
    std::fs::copy(&online, lab.config_path()).unwrap();

    // Debian's default wal_level is replica: check says so, and what to do.
    let refused = lab.run(&["check", "--json"]);
    refused.code(3);
    let wal = check_items(&refused).into_iter().find(|c| c["name"] == "wal_level").expect("a wal_level check");
    assert_eq!(wal["status"], "fail", "{wal}");
    assert!(wal["next_step"].as_str().unwrap().contains("ALTER SYSTEM SET wal_level = logical"), "{wal}");
    // The DBA's fix: a restart of the old PostgreSQL (the orchestrator with it).
    lab.psql(Side::Old, "postgres", "ALTER SYSTEM SET wal_level = logical").unwrap();
    lab.stop_server(Side::Old).unwrap();
    lab.stop_postgres(Side::Old).unwrap();
    lab.start_postgres(Side::Old).unwrap();
    lab.start_server(Side::Old).unwrap();
    lab.run(&["check"]).success();

    let copied = lab.run(&["precopy", "--json"]);
    copied.success();
    assert!(copied.json()["figures"]["tables"].as_u64().unwrap() > 20, "{}", copied.stdout);
    let status = lab.run(&["status", "--json"]);
    status.success();
    let copy = &status.json()["details"]["online_copy"];
    assert_eq!(copy["old_side"], serde_json::json!(["publication", "role", "slot (reserved)"]), "{copy}");
    assert_eq!(copy["new_side"], serde_json::json!(["subscription"]), "{copy}");
    // A second precopy follows the running copy instead of starting over.
    lab.run(&["precopy"]).success().stderr_has("following it");

    // The old orchestrator keeps working during the copy: a compile, its
    // release and deploy write versions, resources and deploy history.
    let api = lab.client(Side::Old).unwrap();
    let env = lab.envs().iter().find(|e| e.role == EnvRole::Plain).unwrap();
    api.notify(&env.id, "during the online copy", true).unwrap();
    let compiled = api.wait_compile(&env.id, "during the online copy", Duration::from_secs(600)).unwrap();
    assert!(compiled.success, "{}", compiled.failure);
    std::thread::sleep(Duration::from_secs(5));
    let before = lab.environments(Side::Old);

    lab.run(&["halt-all"]).success();
    lab.run(&["stop-server"]).success();
    let cut = lab.run(&["cutover", "--json"]);
    cut.success();
    let figures = &cut.json()["figures"];
    assert!(figures["hashed_tables"].as_u64().unwrap() > 10, "{figures}");
    assert!(figures["catch_up_seconds"].as_f64().unwrap() < 60.0, "{figures}");
    assert_eq!(leftovers(&lab, Side::Old), "0 publications, 0 subscriptions, 0 slots, 0 copy roles");
    assert_eq!(leftovers(&lab, Side::New), "0 publications, 0 subscriptions, 0 slots, 0 copy roles");
    // Before the new server starts and migrates the schema: the same data.
    assert_eq!(lab.fingerprints(Side::Old), lab.fingerprints(Side::New), "row counts and content equal");
    lab.run(&["cutover"]).success().stdout_has("nothing to do");

    lab.run(&["start-server"]).success();
    let reconciled = lab.run(&["env-reconcile", "--json"]);
    reconciled.success();
    assert_migrated(&lab, &before, &reconciled.json(), false);
    let status = lab.run(&["status", "--json"]);
    assert_eq!(status.json()["details"]["online_copy"]["old_side"], serde_json::json!([]));
}
