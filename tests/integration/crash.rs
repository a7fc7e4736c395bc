//! A crash at every point (issue 14): one whole `migrate --yes --release`
//! against fake servers and a real PostgreSQL logs every crash point it
//! passes (`failpoint`); then, for each of them in turn, a fresh migration
//! is killed (SIGKILL) at that point and `migrate` is run again. Each must
//! end where the uncrashed run ended: the same databases, environments,
//! settings and agents, every step and environment done, no version
//! released twice. The points come from the run, not from a list here.

use std::collections::BTreeMap;

use camino::Utf8Path;
use fake_inmanta::FakeInmanta;
use lab::ScratchCluster;
use serde_json::Value;

use crate::{
    support::scratch::Setup,
    support::{config_variant, set},
};

const MIGRATE: [&str; 3] = ["migrate", "--yes", "--release"];

/// One point a run passed: its kind, its count within the kind, and what it
/// guarded.
#[derive(Debug, Clone)]
struct Point {
    kind: String,
    n: u64,
    what: String,
}

fn points(log: &Utf8Path) -> Vec<Point> {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{log}: {e}"));
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (kind, n, what) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
            Point { kind: kind.to_owned(), n: n.parse().unwrap_or_else(|_| panic!("{line}")), what: what.to_owned() }
        })
        .collect()
}

fn journal(s: &Setup) -> Value {
    serde_json::from_str(&std::fs::read_to_string(s.fakes.path().join("work/journal.json")).unwrap()).unwrap()
}

/// What a finished migration left, by environment name (ids differ between
/// setups): each new environment's halted flag, settings, agents' paused
/// flags and whether its newest version is released; each old
/// environment's halted flag; the new database's content; each
/// environment's status in the journal.
fn outcome(s: &Setup) -> BTreeMap<String, Value> {
    let side = |fake: &FakeInmanta| -> Value {
        fake.envs()
            .iter()
            .map(|e| {
                let newest = e.versions.iter().max_by_key(|(v, _)| *v).map(|(_, released)| *released);
                let agents: BTreeMap<&str, bool> = e.agents.iter().map(|a| (a.name.as_str(), a.paused)).collect();
                let entry = serde_json::json!({
                    "halted": e.halted,
                    "settings": e.settings,
                    "agents_paused": agents,
                    "newest_released": newest,
                });
                (e.name.clone(), entry)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let journal = journal(s);
    let statuses: BTreeMap<&str, &Value> = journal["environments"]
        .as_object()
        .unwrap()
        .values()
        .map(|e| (e["name"].as_str().unwrap(), &e["status"]))
        .collect();
    BTreeMap::from([
        ("journal".to_owned(), serde_json::json!(statuses)),
        ("old".to_owned(), side(&s.fakes.old)),
        ("new".to_owned(), side(&s.fakes.new)),
        ("database".to_owned(), serde_json::json!(s.content("inmanta_new"))),
    ])
}

/// Every step of the journal done; no version released
/// twice (by the tool's requests to the new server).
fn assert_finished_once(s: &Setup, at: &str) {
    let journal = journal(s);
    for (name, step) in journal["steps"].as_object().unwrap() {
        assert_eq!(step["status"], "done", "{at}: step {name}: {journal}");
    }
    let mut releases = BTreeMap::new();
    for r in s.fakes.new.requests().iter().filter(|r| r.method == "POST" && r.path.starts_with("/api/v1/version/")) {
        *releases.entry((r.tid.clone(), r.path.clone())).or_insert(0) += 1;
    }
    for ((env, path), count) in releases {
        assert_eq!(count, 1, "{at}: {path} of environment {env:?} sent {count} times");
    }
}

/// A setup on `pg` whose environments are reconciled one at a time, so
/// that every run passes its points in the same order.
fn setup(pg: ScratchCluster) -> Setup {
    let mut s = Setup::on(pg);
    s.config = config_variant(&s.config, "one-at-a-time", |c| set(c, "reconcile.concurrency", 1));
    s
}

#[test]
#[ignore = "a few minutes (a migration per crash point): cargo xtask ci"]
fn a_migration_killed_at_any_point_finishes_on_the_next_run() {
    let s = setup(ScratchCluster::start().expect("a scratch PostgreSQL cluster"));
    let log = s.fakes.path().join("points.log");
    s.test().args(MIGRATE).env(failpoint::CRASH_LOG, log.as_str()).run().success();
    let all = points(&log);
    let reference = outcome(&s);
    assert_finished_once(&s, "the uncrashed run");
    for kind in failpoint::KINDS {
        assert!(all.iter().any(|p| p.kind == kind), "a migration passes no {kind} point: {all:#?}");
    }
    let mut pg: ScratchCluster = s.pg;
    drop(s.fakes);

    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for point in &all {
        let at = format!("{}:{} ({})", point.kind, point.n, point.what);
        let s = setup(pg);
        let log = s.fakes.path().join("points.log");
        let crashed = s
            .test()
            .args(MIGRATE)
            .env(failpoint::CRASH_AT, &format!("{}:{}", point.kind, point.n))
            .env(failpoint::CRASH_LOG, log.as_str())
            .run();
        assert_eq!(crashed.signal, Some(9), "{at}: not killed there\n{}", crashed.stderr);
        let last = points(&log).pop().unwrap();
        assert_eq!((last.kind.as_str(), last.n), (point.kind.as_str(), point.n), "{at}: the log's last point");
        assert!(last.what.ends_with("(crash)"), "{at}: {last:?}");

        s.test().args(MIGRATE).run().success();
        assert_eq!(outcome(&s), reference, "{at}: the migration after the crash ended elsewhere");
        assert_finished_once(&s, &at);
        *by_kind.entry(point.kind.as_str()).or_default() += 1;
        pg = s.pg;
    }
    eprintln!("crashed and recovered at {} points: {by_kind:?}", all.len());
}

/// The same for the two ends of a migration: after a whole migration,
/// `command` killed at each of its points, then run again, ends where an
/// uncrashed run ended, and the journal says so (`mark`).
fn sweep_after_migrate(command: &[&str], mark: &str) {
    let s = setup(ScratchCluster::start().expect("a scratch PostgreSQL cluster"));
    s.test().args(MIGRATE).run().success();
    let log = s.fakes.path().join("points.log");
    s.test().args(command.iter().copied()).env(failpoint::CRASH_LOG, log.as_str()).run().success();
    let all = points(&log);
    let reference = outcome(&s);
    assert!(!journal(&s)[mark].is_null(), "the journal records {mark}");
    let mut pg: ScratchCluster = s.pg;
    drop(s.fakes);

    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for point in &all {
        let at = format!("{}:{} ({})", point.kind, point.n, point.what);
        let s = setup(pg);
        s.test().args(MIGRATE).run().success();
        let crashed = s
            .test()
            .args(command.iter().copied())
            .env(failpoint::CRASH_AT, &format!("{}:{}", point.kind, point.n))
            .run();
        assert_eq!(crashed.signal, Some(9), "{at}: not killed there\n{}", crashed.stderr);
        s.test().args(command.iter().copied()).run().success();
        assert_eq!(outcome(&s), reference, "{at}: {command:?} after the crash ended elsewhere");
        assert!(!journal(&s)[mark].is_null(), "{at}: the journal records {mark}");
        *by_kind.entry(point.kind.as_str()).or_default() += 1;
        pg = s.pg;
    }
    eprintln!("{command:?} crashed and recovered at {} points: {by_kind:?}", all.len());
    assert!(by_kind.contains_key("journal"), "{command:?} passes journal points");
}

/// Killed anywhere in `rollback`, the next `rollback` finishes it: the old
/// side as before, the new side halted and stopped.
#[test]
#[ignore = "a few minutes (a migration per crash point): cargo xtask ci"]
fn a_rollback_killed_at_any_point_finishes_on_the_next_run() {
    sweep_after_migrate(&["rollback", "--force"], "rolled_back");
}

/// Killed anywhere in `finish`, the next `finish` finishes it.
#[test]
#[ignore = "a few minutes (a migration per crash point): cargo xtask ci"]
fn a_finish_killed_at_any_point_finishes_on_the_next_run() {
    sweep_after_migrate(&["finish"], "finished");
}

#[test]
fn a_bad_crash_switch_is_a_usage_error_before_anything_changes() {
    let fakes = crate::support::Fakes::new(fake_inmanta::Flavor::V11, fake_inmanta::Flavor::V14);
    fakes.old.add_env("plain");
    fakes.config("");
    for bad in ["journal", "journal:0", "disk:1"] {
        let run = fakes.test().arg("halt-all").env(failpoint::CRASH_AT, bad).run();
        run.code(2).stderr_has(failpoint::CRASH_AT).stderr_has("KIND:N");
    }
    let log = fakes.path().join("no-such-dir/points.log");
    fakes.test().arg("halt-all").env(failpoint::CRASH_LOG, log.as_str()).run().code(2).stderr_has("cannot open it");
    assert!(fakes.old.requests().iter().all(|r| r.method == "GET"), "nothing was asked to change");
}
