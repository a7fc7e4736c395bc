//! halt-all against the fake server: the exact request sequence, the
//! inventory, re-runs, a compile still running, and bad URLs and tokens.

use fake_inmanta::{Flavor, Recorded};

use crate::support::{Fakes, config_variant, secret, set, snapshot, snapshot_human};

#[test]
fn halts_running_environments_after_taking_the_inventory() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    let prod = f.old.add_env("prod");
    let staging = f.old.add_env("staging");
    f.old.with_env(staging, |e| e.halted = true);
    let manual = f.old.add_env("manual");
    f.old.with_env(manual, |e| {
        e.settings.insert("auto_deploy".into(), false.into());
    });
    f.config("");

    let run = f.run(&["halt-all", "--json"]);
    run.success();
    let out = run.json();
    assert_eq!(out["status"], "done");
    assert_eq!(out["figures"]["halted_by_this_run"], 2);
    assert_eq!(out["figures"]["halted_before"], 1);
    assert!(f.old.env(prod).halted && f.old.env(manual).halted);
    snapshot!("halt_all_requests", f.old.requests_by_env());

    let inventory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.path().join("work/inventory.json")).unwrap()).unwrap();
    let envs = inventory["environments"].as_array().unwrap();
    assert_eq!(envs.len(), 3);
    let by_name = |n: &str| envs.iter().find(|e| e["name"] == n).unwrap().clone();
    assert_eq!(by_name("prod")["halted"], false, "halted *before* the migration");
    assert_eq!(by_name("staging")["halted"], true);
    assert_eq!(by_name("manual")["effective_settings"]["auto_deploy"], false);
    assert_eq!(by_name("prod")["latest_released_version"], 1);
    assert_eq!(by_name("prod")["resources"]["total"], 2);

    // A second run looks for what changed since (nothing) and changes nothing.
    f.old.clear_requests();
    let again = f.run(&["halt-all"]);
    again.success().stdout_has("nothing to do");
    let changes: Vec<Recorded> = f.old.requests().into_iter().filter(|r| r.method != "GET").collect();
    assert!(changes.is_empty(), "{changes:?}");
}

#[test]
fn waits_for_a_compile_that_still_runs() {
    let f = Fakes::new(Flavor::V11, Flavor::V14);
    let env = f.old.add_env("busy");
    f.old.add_running_compile(env, 2);
    f.config("");
    f.run(&["halt-all"]).success();
    let polls: Vec<Recorded> = f.old.requests().into_iter().filter(|r| r.path == "/api/v1/compilequeue").collect();
    assert_eq!(polls.len(), 3, "polled until the running compile finished");
    snapshot!("halt_all_running_compile", f.old.requests_by_env());
}

#[test]
fn an_interrupted_run_keeps_the_first_inventory() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    let a = f.old.add_env("a");
    f.config("");
    // The first run is killed after halting: simulate with an inventory
    // taken before, and the environment halted since.
    f.run(&["halt-all"]).success();
    let journal = f.path().join("work/journal.json");
    let text = std::fs::read_to_string(&journal).unwrap().replace("\"done\"", "\"running\"");
    std::fs::write(&journal, text).unwrap();
    let b = f.old.add_env("b");
    let run = f.run(&["halt-all", "--json"]);
    run.success();
    assert_eq!(run.json()["figures"]["halted_by_this_run"], 1, "only b");
    let inventory = std::fs::read_to_string(f.path().join("work/inventory.json")).unwrap();
    let inventory: serde_json::Value = serde_json::from_str(&inventory).unwrap();
    let halted_before = |id: uuid::Uuid| {
        inventory["environments"].as_array().unwrap().iter().find(|e| e["id"] == id.to_string()).unwrap()["halted"]
            .clone()
    };
    assert_eq!(halted_before(a), false, "a stays 'running before the migration'");
    assert_eq!(halted_before(b), false);
    snapshot_human!("after_interruption", &run, f.path());
}

#[test]
fn a_wrong_token_is_named_and_changes_nothing() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    let env = f.old.add_env("prod");
    f.old.require_token("right-token");
    std::fs::write(f.path().join("token"), "wrong-token\n").unwrap();
    let path = config_variant(&f.config(""), "with-token", |c| set(c, "old.token", secret("file", "token")));
    let run = f.test().config(&path).arg("halt-all").run();
    run.code(3);
    snapshot_human!("wrong_token", &run, f.path());
    assert!(!f.old.env(env).halted);
    assert!(!run.stderr.contains("wrong-token") && !run.stdout.contains("wrong-token"));
    assert!(f.old.requests().iter().all(|r| r.method == "GET"), "nothing but reads");
}

#[test]
fn an_unreachable_server_is_named() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    let path = config_variant(&f.config(""), "unreachable", |c| set(c, "old.api_url", "http://127.0.0.1:9"));
    let run = f.test().config(&path).arg("halt-all").run();
    run.code(3);
    snapshot_human!("unreachable", &run, f.path());
}
