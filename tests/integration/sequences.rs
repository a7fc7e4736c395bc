//! Every step and `check` against fake Inmanta APIs backed by the lab's real
//! PostgreSQL databases: the exact request sequence of each step, snapshotted;
//! and `check` naming each failure it meets.

use camino::{Utf8Path, Utf8PathBuf};
use fake_inmanta::{FakeInmanta, Flavor};
use lab::Side;

use crate::{
    support::lab::{Lab, lab, slot},
    support::{Run, Test, config_variant, secret, set, snapshot},
};

/// The lab database's environments on both fakes (the dump checks that the
/// database holds the inventory's environments): the old running, apart
/// from the one halted before, the new as a restore leaves them, all halted.
/// Returns the ids of `plain` and `halted`.
fn environments(lab: &Lab, old: &FakeInmanta, new: &FakeInmanta) -> (uuid::Uuid, uuid::Uuid) {
    for seeded in lab.envs() {
        let id: uuid::Uuid = seeded.id.parse().unwrap();
        for fake in [old, new] {
            fake.add_env_with_id(&seeded.name, id);
        }
        old.with_env(id, |e| e.halted = seeded.halted);
        new.with_env(id, |e| e.halted = true);
    }
    let id = |name: &str| lab.env(name).unwrap().id.parse().unwrap();
    (id("plain"), id("halted"))
}

/// The lab's config with the APIs and services of the fakes, then `edit`.
fn config_for_fakes(
    lab: &Lab,
    old: &FakeInmanta,
    new: &FakeInmanta,
    name: &str,
    edit: impl FnOnce(&mut toml::Table),
) -> Utf8PathBuf {
    config_variant(&lab.config_path(), name, |c| {
        for (side, fake) in [("old", old), ("new", new)] {
            set(c, &format!("{side}.api_url"), fake.url());
            let [start, stop, status] = fake.service_commands();
            for (verb, argv) in [("start", start), ("stop", stop), ("status", status)] {
                set(c, &format!("{side}.service.{verb}"), argv);
            }
        }
        edit(c);
    })
}

fn run(lab: &Lab, config: &Utf8Path, args: &[&str]) -> Run {
    Test::new(lab.dir()).config(config).args(args.iter().copied()).run()
}

#[test]
#[ignore = "needs the lab's PostgreSQL: cargo xtask ci"]
fn every_step_against_fake_apis_and_real_databases() {
    let _slot = slot();
    let lab = lab("e2e-sequences", "8.7.6");
    // The fakes play the servers; the real old server must keep quiet.
    lab.stop_server(Side::Old).unwrap();
    let old = FakeInmanta::start(Flavor::V11);
    let new = FakeInmanta::start(Flavor::V14);
    let (plain, halted) = environments(&lab, &old, &new);
    std::fs::write(new.control_dir().join("stop"), "").unwrap();
    new.wait_stopped(true);
    let config = config_for_fakes(&lab, &old, &new, "fakes", |_| {});

    // Without a terminal, migrate refuses to start without --yes.
    run(&lab, &config, &["migrate"]).code(2).stderr_has("pass --yes");
    old.clear_requests();
    new.clear_requests();

    run(&lab, &config, &["check"]).success();
    snapshot!("sequence_check_old", old.requests_by_env());
    snapshot!("sequence_check_new", new.requests_by_env());
    for step in ["halt-all", "stop-server", "dump", "restore", "start-server", "env-reconcile"] {
        old.clear_requests();
        new.clear_requests();
        run(&lab, &config, &[step]).success();
        let fake = if ["halt-all", "stop-server", "dump"].contains(&step) { &old } else { &new };
        snapshot!(format!("sequence_{step}"), fake.requests_by_env());
    }
    assert!(old.env(plain).halted && old.env(halted).halted, "the old side is halted");
    assert!(!new.env(plain).halted, "plain was reconciled and resumed");
    assert!(new.env(halted).halted, "halted was halted before and stays so");

    // The way back: the new side halted and stopped before the old side
    // starts and resumes what ran; the calls in that order on each side.
    old.clear_requests();
    new.clear_requests();
    run(&lab, &config, &["rollback"]).code(3).output_has("compiled on the new server");
    assert!(!new.env(plain).halted, "a refused rollback changes nothing");
    run(&lab, &config, &["rollback", "--force"]).success();
    snapshot!("sequence_rollback_old", old.requests_by_env());
    snapshot!("sequence_rollback_new", new.requests_by_env());
    assert!(new.env(plain).halted && new.env(halted).halted, "the new side is halted");
    assert!(!old.env(plain).halted, "plain runs on the old side again");
    assert!(old.env(halted).halted, "halted stays halted");
    run(&lab, &config, &["finish"]).code(3).output_has("it was rolled back");
}

#[test]
#[ignore = "needs the lab's PostgreSQL: cargo xtask ci"]
fn check_names_each_failure() {
    let _slot = slot();
    let lab = lab("e2e-check", "8.7.6");
    lab.stop_server(Side::Old).unwrap();
    let old = FakeInmanta::start(Flavor::V14);
    let new = FakeInmanta::start(Flavor::V14);
    environments(&lab, &old, &new);
    std::fs::write(new.control_dir().join("stop"), "").unwrap();
    new.wait_stopped(true);

    let good = config_for_fakes(&lab, &old, &new, "good", |_| {});
    run(&lab, &good, &["check"]).success().stdout_has("checks passed");

    let wrong_url = config_for_fakes(&lab, &old, &new, "wrong-url", |c| set(c, "old.api_url", "http://127.0.0.1:9"));
    run(&lab, &wrong_url, &["check"]).code(3).output_has("old API").output_has("old server does not answer");

    old.require_token("the-right-token");
    let token = lab.dir().join("wrong-token");
    std::fs::write(&token, "a-wrong-token\n").unwrap();
    let wrong_token =
        config_for_fakes(&lab, &old, &new, "wrong-token", |c| set(c, "old.token", secret("file", token.as_str())));
    let run_wrong = run(&lab, &wrong_token, &["check"]);
    run_wrong.code(3).output_has("HTTP 401").output_has("fix `old.token`");
    assert!(!run_wrong.stderr.contains("a-wrong-token"));

    std::fs::write(&token, "the-right-token\n").unwrap();
    let older = config_for_fakes(&lab, &old, &new, "older", |c| {
        set(c, "old.token", secret("file", token.as_str()));
        set(c, "new.version_command", vec!["echo", "Inmanta Service Orchestrator: 11.0.0"]);
    });
    run(&lab, &older, &["check"])
        .code(3)
        .output_has("the new server (11.0.0) is older than the old one (14.0.0): a downgrade");

    // Several problems at once are all reported.
    let both = config_for_fakes(&lab, &old, &new, "both", |c| {
        set(c, "old.token", secret("file", "/nonexistent-token"));
        set(c, "old.api_url", "http://127.0.0.1:9");
    });
    run(&lab, &both, &["check"]).code(2).stderr_has("old.token");
    let two = config_for_fakes(&lab, &old, &new, "two", |c| {
        set(c, "old.api_url", "http://127.0.0.1:9");
        set(c, "new.version_command", vec!["false"]);
    });
    let out = run(&lab, &two, &["--json", "check"]);
    out.code(3);
    let failed: Vec<String> = out.json()["checks"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed, ["old API", "new server version"], "every failure, not just the first");
}
