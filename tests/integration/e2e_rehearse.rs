//! `rehearse` on the real lab (11.5.5 -> 15.5.9, the first target with a
//! scheduler per environment): each environment's outcome on the new
//! version named, nothing deployed (the copy inspected after a rehearsal
//! killed right after its compiles), the old side untouched, and nothing
//! left behind, also after a kill during the schema migration.

use std::{collections::BTreeMap, process::Stdio};

use lab::{ModelVariant, Side};
use serde_json::Value;

use crate::support::{
    contract,
    lab::{Lab, lab_pair, slot},
    process::{run_to_crash, wait_for},
};

const SCRATCH: &str = "inmanta_rehearsal";

/// The first crash point of `kind` whose description starts with `what`,
/// from a crash log (`KIND N WHAT` lines) of an uncrashed run.
fn point(log: &str, kind: &str, what: &str) -> String {
    log.lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (k, n, w) = (parts.next()?, parts.next()?, parts.next()?);
            (k == kind && w.starts_with(what)).then(|| format!("{k}:{n}"))
        })
        .unwrap_or_else(|| panic!("no {kind} point {what:?} in:\n{log}"))
}

/// Nothing of a rehearsal is left: no scratch database, no server, no
/// state directory; the new database still empty.
fn assert_nothing_left(lab: &Lab, state_dir: &str) {
    assert_nothing_left_but_the_schema(lab, state_dir);
    let tables = lab.psql(Side::New, "inmanta", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").unwrap();
    assert_eq!(tables.trim(), "0", "the new database is never touched");
}

/// Nothing of a rehearsal is left (the new database aside: a server may have
/// started on it by mistake).
fn assert_nothing_left_but_the_schema(lab: &Lab, state_dir: &str) {
    let databases = lab.psql(Side::New, "postgres", "SELECT datname FROM pg_database").unwrap();
    assert!(!databases.lines().any(|d| d == SCRATCH), "the scratch database is dropped: {databases}");
    assert!(!lab.server_running(Side::New), "no server runs on the new side");
    assert!(!camino::Utf8Path::new(state_dir).exists(), "{state_dir} is removed");
}

/// The old side's environments as they were: the same ids, halted flags
/// and stored settings (the old server itself may store a default since).
fn assert_old_side_as_before(lab: &Lab, before: &BTreeMap<String, Value>) {
    let now = lab.environments(Side::Old);
    assert_eq!(before.keys().collect::<Vec<_>>(), now.keys().collect::<Vec<_>>(), "the same environments");
    for (name, was) in before {
        assert_eq!(now[name]["id"], was["id"], "{name}: id");
        assert_eq!(now[name]["halted"], was["halted"], "{name}: halted");
        for (key, value) in was["settings"].as_object().unwrap() {
            assert_eq!(&now[name]["settings"][key], value, "{name}: setting {key}");
        }
    }
}

fn deploys(lab: &Lab, side: Side, db: &str) -> i64 {
    let sql = "SELECT count(*) FROM resourceaction WHERE action = 'deploy'";
    lab.psql(side, db, sql).unwrap().trim().parse().unwrap()
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn rehearses_on_a_copy_names_each_outcome_deploys_nothing_and_leaves_nothing() {
    let _slot = slot();
    let lab = lab_pair("e2e-rehearse", "11.5.5", "15.5.9");
    let state_dir = lab.dir().join("new/rehearsal-state").to_string();
    // What the new version will compile: one project changed its desired
    // state since its last release, one no longer compiles there (its
    // plugin imports `pipes`, which the new side's Python 3.13 removed).
    lab.push_model("plain", ModelVariant::WithDifferences).unwrap();
    lab.push_model("tuned", ModelVariant::NeedsPython311).unwrap();
    // One already differs on the old side before any migration: its
    // released version holds a resource that every dry-run reports.
    lab.push_model("manual", ModelVariant::WithDifferences).unwrap();
    let old = lab.client(Side::Old).unwrap();
    let manual = lab.env("manual").unwrap().id.clone();
    let compiled = old.compile(&manual, true, std::time::Duration::from_secs(600)).unwrap();
    assert!(compiled.success, "{}", compiled.failure);
    old.release(&manual, compiled.version.unwrap()).unwrap();
    let before = lab.environments(Side::Old);

    // 1. A whole rehearsal: each outcome named, the window predicted.
    let log = lab.dir().join("rehearse-points.log");
    let mut cmd = lab.tool_with(&["rehearse", "--baseline", "--json"], &[(failpoint::CRASH_LOG, log.as_str())]);
    let run = crate::support::run(&mut cmd);
    run.code(3);
    let points = std::fs::read_to_string(&log).unwrap();
    let document = run.json();
    assert_eq!(document["status"], "needs_operator", "{}", run.stdout);
    let rehearsal: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.work_dir().join("rehearsal.json")).unwrap()).unwrap();
    contract::conforms("rehearsal", &rehearsal, "rehearsal.json");
    assert_eq!(document["details"], rehearsal, "--json carries what rehearsal.json keeps");
    let envs: BTreeMap<&str, &Value> =
        rehearsal["environments"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
    assert_eq!(envs.len(), 4, "every environment rehearsed: {envs:#?}");
    assert_eq!(envs["plain"]["outcome"], "differs");
    let differences = envs["plain"]["differences"].as_array().unwrap();
    assert!(
        differences.iter().any(|d| d.as_str().unwrap().contains("name=res-purged]: added")),
        "the new resource is named: {differences:?}"
    );
    assert_eq!(envs["tuned"]["outcome"], "fails");
    let error = envs["tuned"]["error"].as_str().unwrap();
    assert!(error.contains("No module named 'pipes'"), "the compiler's error says what: {error}");
    for name in ["manual", "halted"] {
        assert_eq!(envs[name]["outcome"], "same", "{name}: {:#}", envs[name]);
    }
    assert_eq!(envs["halted"]["halted_before"], true);
    // --baseline: the old side's dry-runs, of the running environments.
    let baseline = |name: &str| envs[name]["baseline"]["differences"].as_array().cloned();
    assert!(
        baseline("manual").unwrap().iter().any(|d| d.as_str().unwrap().contains("name=res-purged]")),
        "the old side already differs: {:#}",
        envs["manual"]
    );
    assert_eq!(baseline("plain"), Some(vec![]), "{:#}", envs["plain"]);
    assert_eq!(baseline("halted"), None, "a halted environment is not dry-run");
    let servers = rehearsal["servers"].as_array().unwrap();
    assert_eq!(servers.last().unwrap()["version"], "15.5.9");
    assert!(servers[0]["schema_migrations"].as_u64().unwrap() > 0, "the schema path ran: {servers:?}");
    let parts: Vec<&str> =
        rehearsal["window"]["parts"].as_array().unwrap().iter().map(|p| p["steps"].as_str().unwrap()).collect();
    assert_eq!(parts, ["halt-all", "stop-server", "dump", "restore", "start-server", "env-reconcile"]);
    assert!(rehearsal["window"]["seconds"].as_f64().unwrap() > 0.0);
    // The new machine's CPU, read while it compiled, and the resources the
    // agents will handle: the window's CPU bound.
    let cpu = &rehearsal["compile_cpu"];
    assert!(cpu["cores"].as_u64().unwrap() >= 1 && cpu["busy_seconds"].as_f64().unwrap() > 0.0, "{cpu}");
    assert!(envs["plain"]["resources"].as_u64().unwrap() > 0, "{:#}", envs["plain"]);
    let reconcile = rehearsal["window"]["parts"].as_array().unwrap().last().unwrap()["basis"].to_string();
    assert!(reconcile.contains("s of compiles measured on the new machine"), "{reconcile}");
    eprintln!(
        "TIMING rehearse: {:.1} s, window predicted {:.1} s",
        rehearsal["seconds"], rehearsal["window"]["seconds"]
    );
    assert_nothing_left(&lab, &state_dir);
    assert_old_side_as_before(&lab, &before);
    assert!(lab.server_running(Side::Old), "the old orchestrator runs on");
    lab.run(&["plan"]).success().stdout_has("The window: about ");
    let report = std::fs::read_to_string(lab.work_dir().join("report.md")).unwrap();
    assert!(report.contains("## Rehearsal") && report.contains("| tuned | does not compile |"), "{report}");
    lab.run(&["migrate", "--yes", "--max-window", "1s"]).code(3).output_has("more than --max-window 1s");
    assert_old_side_as_before(&lab, &before);

    // The old orchestrator works on while a rehearsal runs: a compile and a
    // deploy there, in the middle of it, succeed.
    let mut rehearsing =
        lab.tool(&["rehearse", "--baseline"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let events = lab.work_dir().join("events.log");
    let seen =
        std::fs::read_to_string(&events).unwrap_or_default().matches("starting the rehearsal new server").count();
    let midway = wait_for(&mut rehearsing, "the rehearsal's server starting", || {
        std::fs::read_to_string(&events).unwrap_or_default().matches("starting the rehearsal new server").count() > seen
    });
    assert!(midway, "the rehearsal ended before its server started");
    let compiled = old.compile(&manual, false, std::time::Duration::from_secs(600)).unwrap();
    assert!(compiled.success, "a compile on the old side during the rehearsal: {}", compiled.failure);
    let deploys_before = deploys(&lab, Side::Old, "inmanta");
    let plain = lab.env("plain").unwrap().id.clone();
    old.post("/api/v1/deploy", Some(&plain), Some(&serde_json::json!({ "agent_trigger_method": "push_full_deploy" })))
        .unwrap();
    let deployed = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        deploys(&lab, Side::Old, "inmanta") > deploys_before
    });
    assert!(deployed, "a deploy on the old side during the rehearsal");
    let ended = rehearsing.wait().unwrap();
    assert_eq!(ended.code(), Some(3), "the rehearsal during the old side's work");
    assert_nothing_left(&lab, &state_dir);

    // 2. Killed right after the compiles, before its server stops: the copy
    // shows what the rehearsal server did. It compiled, and deployed nothing.
    let old_deploys = deploys(&lab, Side::Old, "inmanta");
    let stop = point(&points, "service-before", "stop ");
    let (crashed, _) = run_to_crash(&lab, &["rehearse"], &stop);
    assert_eq!(crashed.signal, Some(9), "killed at {stop}\n{}", crashed.stderr);
    let compiles = lab
        .psql(
            Side::New,
            SCRATCH,
            "SELECT count(*) FROM compile WHERE metadata->>'message' LIKE 'inmanta-migrate rehearse %'",
        )
        .unwrap();
    assert_eq!(compiles.trim(), "4", "each environment compiled on the copy");
    let copied = deploys(&lab, Side::New, SCRATCH);
    assert!(
        (old_deploys..=deploys(&lab, Side::Old, "inmanta")).contains(&copied),
        "the copy records no deploy of its own: {copied} deploy actions, the old side {old_deploys}"
    );
    let unsafe_ = "SELECT 'environment ' || name FROM environment WHERE NOT halted \
                   UNION ALL SELECT 'agent ' || name FROM agent WHERE NOT paused";
    assert_eq!(lab.psql(Side::New, SCRATCH, unsafe_).unwrap().trim(), "", "halted and paused throughout");
    assert!(lab.server_running(Side::New), "the rehearsal server was left running by the kill");
    lab.run(&["status"]).success().stdout_has("A rehearsal did not finish");

    // 3. `--clean` removes what the kill left.
    let clean = lab.run(&["rehearse", "--clean", "--json"]);
    clean.success();
    let summary = clean.json()["summary"].as_str().unwrap().to_owned();
    for what in ["server", SCRATCH, "rehearsal-state"] {
        assert!(summary.contains(what), "--clean says it removed {what}: {summary}");
    }
    assert_nothing_left(&lab, &state_dir);
    lab.run(&["rehearse", "--clean"]).success().output_has("nothing was left to remove");
    lab.run(&["status"]).success().stdout_lacks("A rehearsal did not finish");

    // 4. Killed while the server migrates the schema: the next rehearsal
    // cleans up and finishes with the same outcomes.
    let started = point(&points, "service-after", "start ");
    let (crashed, _) = run_to_crash(&lab, &["rehearse"], &started);
    assert_eq!(crashed.signal, Some(9), "killed at {started}\n{}", crashed.stderr);
    let again = lab.run(&["rehearse", "--baseline", "--json"]);
    again.code(3);
    let outcomes = |r: &Value| -> Vec<(String, String)> {
        r["details"]["environments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["outcome"].as_str().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(outcomes(&again.json()), outcomes(&document), "the same outcomes after a kill");
    assert_nothing_left(&lab, &state_dir);
    assert_old_side_as_before(&lab, &before);

    // A start command that drops the environment brings the server up on
    // the new server's own port: stopped at once, and said.
    let ctl = lab.dir().join("new/ctl");
    let dropping = lab.config_variant("rehearse-env-dropped", |t| {
        let start = vec![
            "env".into(),
            "-i".into(),
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ctl.to_string().into(),
            "start".into(),
        ];
        crate::support::set(t, "new.service.start", toml::Value::Array(start));
    });
    let wrong = crate::support::run(&mut lab.tool_at(&dropping, &["rehearse"], &[]));
    wrong.code(1).stderr_has("the new server's own port, not on the rehearsal's").stderr_has("INMANTA_*");
    assert_nothing_left_but_the_schema(&lab, &state_dir);

    // 5. The window, held against the rehearsal, environment by environment
    // (restore replaces the schema the wrong start made).
    for step in [&["halt-all"][..], &["stop-server"], &["dump"], &["restore", "--replace"], &["start-server"]] {
        lab.run(step).success();
    }
    let reconciled = lab.run(&["env-reconcile"]);
    // An environment's result: its last line but the differences (warnings
    // after it), with its indented continuation lines.
    let said = |name: &str| -> String {
        let lines: Vec<&str> = reconciled.stderr.lines().collect();
        let at = lines
            .iter()
            .rposition(|l| l.contains(&format!("env-reconcile {name}: ")) && !l.starts_with("warning:"))
            .unwrap_or_else(|| panic!("no line of {name}:\n{}", reconciled.stderr));
        let rest = lines[at + 1..].iter().take_while(|l| l.starts_with(' ')).copied();
        std::iter::once(lines[at]).chain(rest).collect::<Vec<_>>().join("\n")
    };
    for (name, outcome) in
        [("plain", "compiles, desired state differs"), ("tuned", "does not compile"), ("manual", "same desired state")]
    {
        let said = said(name);
        assert!(
            said.contains(&format!(
                "as rehearsed on {}: {outcome}",
                again.json()["details"]["started"].as_str().unwrap()
            )),
            "{name}: {said}"
        );
    }
    assert!(!reconciled.stderr.contains("unlike the rehearsal"), "{}", reconciled.stderr);
    // Which difference is which: the project's change is the migration's
    // (its update came with it); the other was there before.
    assert!(
        said("plain")
            .contains("made by the migration (a finding): std::testing::NullResource[internal,name=res-purged]"),
        "{}",
        said("plain")
    );
    let manual = said("manual");
    assert!(
        manual.contains("already there before the migration") && !manual.contains("made by the migration"),
        "{manual}"
    );
}
