//! env-reconcile against fake servers: request sequences per environment for
//! each server generation, and what happens on differences, failed compiles
//! and bad --env values.

use fake_inmanta::{FakeInmanta, Flavor, Model};
use uuid::Uuid;

use crate::support::{Fakes, config_variant, set, snapshot, snapshot_human};

/// Three environments on the old server, halted by halt-all, and the same
/// three on the new one as a restore leaves them: all halted.
struct Setup {
    f: Fakes,
    prod: Uuid,
    staging: Uuid,
    manual: Uuid,
}

fn add_envs(fake: &FakeInmanta) -> (Uuid, Uuid, Uuid) {
    let prod = fake.add_env("prod");
    let staging = fake.add_env("staging");
    let manual = fake.add_env("manual");
    fake.with_env(manual, |e| {
        e.settings.insert("auto_deploy".into(), false.into());
        e.settings.insert("resource_action_logs_retention".into(), 30.into());
    });
    (prod, staging, manual)
}

fn setup(new: Flavor) -> Setup {
    setup_from(Flavor::V14, new)
}

fn setup_from(old: Flavor, new: Flavor) -> Setup {
    let f = Fakes::new(old, new);
    let (prod, staging, manual) = add_envs(&f.old);
    f.old.with_env(staging, |e| e.halted = true);
    let ids = add_envs(&f.new);
    assert_eq!(ids, (prod, staging, manual), "the fakes hand out the same ids");
    for id in [prod, staging, manual] {
        f.new.with_env(id, |e| {
            e.halted = true;
            for a in &mut e.agents {
                a.paused = true;
                a.unpause_on_resume = Some(true);
            }
        });
    }
    f.config("");
    f.run(&["halt-all"]).success();
    Setup { f, prod, staging, manual }
}

/// Its config with one environment reconciled at a time, for a snapshot of
/// the output: concurrent environments interleave their lines.
fn sequential(s: &Setup) -> camino::Utf8PathBuf {
    config_variant(&s.f.path().join("inmanta-migrate.toml"), "sequential", |c| set(c, "reconcile.concurrency", 1))
}

fn by_name(out: &serde_json::Value, name: &str) -> serde_json::Value {
    out["details"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap().clone()
}

#[test]
fn reconciles_every_environment_of_a_14_server() {
    let s = setup(Flavor::V14);
    let run = s.f.run(&["env-reconcile", "--json"]);
    run.success();
    let out = run.json();
    assert_eq!(out["figures"]["reconciled"], 2);
    assert_eq!(out["figures"]["left_halted"], 1);
    assert_eq!(by_name(&out, "prod")["status"], "done");
    assert_eq!(by_name(&out, "staging")["status"], "left_halted");
    assert!(
        by_name(&out, "staging")["message"].as_str().unwrap().contains(&format!("env-reconcile --env {}", s.staging))
    );

    let prod = s.f.new.env(s.prod);
    assert!(!prod.halted);
    assert_eq!(prod.settings["auto_deploy"], true, "auto_deploy back on");
    assert_eq!(prod.versions.last().unwrap(), &(2, false), "compiled, dry-run, not released");
    let manual = s.f.new.env(s.manual);
    assert!(!manual.halted);
    assert_eq!(manual.settings["auto_deploy"], false, "auto_deploy stays off as before");
    assert!(s.f.new.env(s.staging).halted, "halted before: untouched");
    snapshot!("reconcile_14", s.f.new.requests_by_env());

    // Nothing left to do: the journal says so, the server is not asked.
    s.f.new.clear_requests();
    s.f.run(&["env-reconcile"]).success().stdout_has("nothing to do");
    assert!(s.f.new.requests().is_empty());
}

#[test]
fn release_releases_only_what_auto_deploy_would_have() {
    let s = setup(Flavor::V11);
    s.f.run(&["env-reconcile", "--release"]).success();
    assert_eq!(s.f.new.env(s.prod).versions.last().unwrap(), &(2, true), "released");
    assert!(
        s.f.new.env(s.manual).versions.iter().all(|(v, released)| *v == 1 || !released),
        "auto_deploy was off: not released"
    );
}

#[test]
fn a_19_server_adds_a_recovery_compile_and_the_newest_version_is_checked() {
    let s = setup(Flavor::V19);
    let run = s.f.run(&["env-reconcile", "--json"]);
    run.success();
    let out = run.json();
    // Two compiles ran (ours and the recovery one): versions 2 and 3.
    assert_eq!(by_name(&out, "prod")["version"], 3);
    snapshot!("reconcile_19", s.f.new.requests_by_env());
}

#[test]
fn differences_stop_that_environment_only() {
    let s = setup(Flavor::V14);
    s.f.new.with_env(s.prod, |e| e.model = Model::Differences);
    let run = s.f.test().config(&sequential(&s)).args(["env-reconcile", "--json"]).run();
    run.code(3);
    let out = run.json();
    assert_eq!(out["status"], "needs_operator");
    let prod = by_name(&out, "prod");
    assert_eq!(prod["status"], "needs_operator");
    assert_eq!(
        prod["differences"][0],
        "std::testing::NullResource[internal,name=res-a]: modified: purged: false -> true"
    );
    assert_eq!(by_name(&out, "manual")["status"], "done", "the others go on");
    let env = s.f.new.env(s.prod);
    assert!(!env.halted, "left resumed");
    assert_eq!(env.settings["auto_deploy"], false, "with auto_deploy off");
    snapshot_human!("differences", &run, s.f.path());
    snapshot!("reconcile_differences", s.f.new.requests_by_env()["{env:prod}"]);
}

#[test]
fn a_failed_compile_is_shown_with_its_error() {
    let s = setup(Flavor::V14);
    s.f.new.with_env(s.prod, |e| e.model = Model::Broken);
    let run = s.f.test().config(&sequential(&s)).arg("env-reconcile").run();
    run.code(1);
    snapshot_human!("broken_compile", &run, s.f.path());
    // The compiler's token (on its command line and in its output) is masked everywhere.
    let journal = std::fs::read_to_string(s.f.path().join("work/journal.json")).unwrap();
    let report = std::fs::read_to_string(s.f.path().join("work/report.md")).unwrap();
    let events = std::fs::read_to_string(s.f.path().join("work/events.log")).unwrap();
    for text in [&run.stdout, &run.stderr, &journal, &report, &events] {
        assert!(!text.contains(fake_inmanta::FAKE_COMPILER_TOKEN), "a compiler token leaked:\n{text}");
    }
    assert!(journal.contains("--token <redacted>"), "{journal}");
    let env = s.f.new.env(s.prod);
    assert_eq!(env.settings["auto_deploy"], false, "auto_deploy stays off");
    assert_eq!(env.versions.len(), 1, "nothing new was exported");
    snapshot!("reconcile_broken", s.f.new.requests_by_env()["{env:prod}"]);
}

/// A server whose PostgreSQL ran out of connections answers with errors
/// and closed connections; its log says why, and so does the tool.
#[test]
fn a_server_out_of_database_connections_is_named_with_what_to_set() {
    let s = setup(Flavor::V14);
    s.f.new.with_env(s.prod, |e| e.model = Model::Broken);
    let log = s.f.path().join("new-server.log");
    std::fs::write(
        &log,
        "2026-12-06 02:00:00 inmanta.server ERROR asyncpg.exceptions.TooManyConnectionsError: remaining connection \
         slots are reserved for roles with the SUPERUSER attribute\n",
    )
    .unwrap();
    let config = config_variant(&s.f.path().join("inmanta-migrate.toml"), "logged", |c| {
        set(c, "new.service.log_file", log.as_str());
    });
    let run = s.f.test().config(&config).args(["env-reconcile", "--json"]).run();
    let failed = run.code(1).json();
    assert_eq!(failed["kind"], "database", "{failed}");
    let advice = failed["advice"].as_str().unwrap();
    assert!(advice.contains("ran out of connections") && advice.contains("`max_connections`"), "{advice}");
    assert!(advice.contains("remaining connection slots are reserved"), "quotes the log: {advice}");
    assert!(advice.contains("(its log: "), "{advice}");

    // 15.0+: the server's log is clean, the failed environment's scheduler
    // (a process of its own, logging beside it) could not connect.
    std::fs::write(&log, "2026-12-06 02:00:00 inmanta.server WARNING Could not start the scheduler\n").unwrap();
    let scheduler_log = s.f.path().join(format!("agent-{}.log", s.prod));
    std::fs::write(
        &scheduler_log,
        "asyncpg.exceptions.TooManyConnectionsError: remaining connection slots are reserved for roles with the \
         SUPERUSER attribute\n",
    )
    .unwrap();
    let run = s.f.test().config(&config).args(["env-reconcile", "--json"]).run();
    let failed = run.code(1).json();
    assert_eq!(failed["kind"], "database", "{failed}");
    let advice = failed["advice"].as_str().unwrap();
    assert!(advice.contains(&format!("(the scheduler log of environment {}: ", s.prod)), "{advice}");
    std::fs::remove_file(&scheduler_log).unwrap();
    let run = s.f.test().config(&config).args(["env-reconcile", "--json"]).run();
    assert_ne!(run.code(1).json()["kind"], "database", "no log says it: not said");
}

#[test]
fn a_named_halted_environment_is_reconciled_and_resumed() {
    let s = setup(Flavor::V14);
    s.f.run(&["env-reconcile", "--env", "staging"]).success();
    assert!(!s.f.new.env(s.staging).halted);
    assert!(s.f.new.env(s.prod).halted, "not named: not touched");
}

#[test]
fn an_unknown_environment_is_a_usage_error() {
    let s = setup(Flavor::V14);
    let run = s.f.run(&["env-reconcile", "--env", "nope"]);
    run.code(2);
    snapshot_human!("unknown_env", &run, s.f.path());
    s.f.run(&["env-reconcile", "--env", &Uuid::nil().to_string()]).code(2);
    assert!(s.f.new.requests().iter().all(|r| r.method == "GET"), "nothing changed");
}

#[test]
fn from_8_x_the_released_version_is_deployed_again() {
    // 8.x kept code files outside the database: after the recompile has
    // published them again, the agents must deploy the released version anew.
    let s = setup_from(Flavor::V8, Flavor::V14);
    s.f.run(&["env-reconcile", "--release"]).success();
    let requests = s.f.new.requests_by_env();
    let deploys = |env: &str| requests[env].iter().filter(|r| r.starts_with("POST /api/v1/deploy")).count();
    assert_eq!(deploys("{env:manual}"), 1, "not released: its old version is deployed again");
    assert_eq!(deploys("{env:prod}"), 0, "released: the new version is deployed anyway");
    assert!(!requests.contains_key("{env:staging}") || deploys("{env:staging}") == 0, "left halted");
    let journal = std::fs::read_to_string(s.f.path().join("work/journal.json")).unwrap();
    assert!(journal.contains("released version 1 redeployed"), "{journal}");
}
