//! The online copy's commands without a database: what `plan` shows, and
//! what `precopy` and `cutover` refuse before anything changes (the real
//! copy: `e2e_online` and migrate-pg's replication tests).

use fake_inmanta::Flavor;

use crate::support::{Fakes, check_items, snapshot_human};

#[test]
fn plan_shows_the_online_steps_in_their_order() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.config("[copy]\nmode = \"online\"\n");
    let plan = f.run(&["plan", "--json"]);
    plan.success();
    let steps: Vec<String> =
        plan.json()["details"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_owned()).collect();
    assert_eq!(steps, ["precopy", "halt-all", "stop-server", "cutover", "carry", "start-server", "env-reconcile"]);
    f.run(&["plan"]).success().stdout_has("database online: copied before the window, cut over in it");
    // Offline, the default, keeps dump and restore.
    f.config("");
    f.run(&["plan"]).success().stdout_has("dump").stdout_has("database offline");
}

#[test]
fn precopy_refuses_an_offline_config_and_says_how_to_go_online() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.config("");
    let refused = f.run(&["precopy", "--json"]);
    refused.code(3);
    let mode = check_items(&refused).into_iter().find(|c| c["name"] == "copy mode").unwrap();
    assert!(mode["next_step"].as_str().unwrap().contains("copy.mode = \"online\""), "{mode}");
}

#[test]
fn cutover_refuses_to_run_before_precopy_and_stop_server() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.config("[copy]\nmode = \"online\"\n");
    let refused = f.run(&["cutover", "--json"]);
    refused.code(3);
    let items = check_items(&refused);
    for step in ["precopy", "stop-server"] {
        let item = items.iter().find(|c| c["name"] == step).unwrap_or_else(|| panic!("no {step} check: {items:?}"));
        assert_eq!(item["status"], "fail", "{item}");
    }
    assert!(!f.path().join("work/journal.json").exists() || f.run(&["status"]).stdout.contains("0 of 7"));
}

#[test]
fn a_bad_copy_mode_is_a_config_error() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.config("[copy]\nmode = \"sideways\"\n");
    let run = f.run(&["plan"]);
    run.code(2);
    snapshot_human!("bad_copy_mode", &run, f.path());
}
