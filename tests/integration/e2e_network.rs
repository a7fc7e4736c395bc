//! A cut network (issue 14): both orchestrators on hosts of their own (a
//! network namespace each, with its own address; the tool on this machine,
//! as on a jump host). The old one's link is cut while pg_dump copies a
//! table, the new one's while env-reconcile works through an environment.
//! A cut drops every packet without a word, so the tool finds out only by
//! its own limits: each time it must fail with an error that says what to
//! do, within those limits, leave nothing under a final name, and finish on
//! the next run once the link is back.

use std::{
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use lab::{Security, Side, UpOptions};

use crate::{
    support::lab::{Lab, alone, assert_migrated, lab_from},
    support::{self, Run},
};

/// Runs the tool in the background until `ready`, cuts `side`'s link, and
/// returns the finished run and how long after the cut it ended.
fn cut_while(lab: &Lab, args: &[&str], side: Side, what: &str, ready: impl Fn() -> bool) -> (Run, Duration) {
    let mut cmd = lab.tool(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let run = thread::spawn(move || support::run(&mut cmd));
    let start = Instant::now();
    while !ready() {
        assert!(!run.is_finished(), "`{}` ended before {what}: {:?}", args.join(" "), run.join().unwrap());
        assert!(start.elapsed() < Duration::from_secs(300), "never saw {what}");
        thread::sleep(Duration::from_millis(50));
    }
    lab.cut(side).unwrap();
    let cut = Instant::now();
    while !run.is_finished() {
        if cut.elapsed() > Duration::from_secs(300) {
            // A run that never notices the cut: end it, then fail.
            let config = lab.config_path();
            let _ = std::process::Command::new("pkill").args(["-KILL", "-f", config.as_str()]).status();
            panic!("`{}` still ran 5 minutes after the link was cut", args.join(" "));
        }
        thread::sleep(Duration::from_millis(50));
    }
    (run.join().unwrap(), cut.elapsed())
}

/// Whether the journal records an environment for which `holds`.
fn any_environment(lab: &Lab, holds: impl Fn(&serde_json::Value) -> bool) -> bool {
    lab.journal()["environments"].as_object().is_some_and(|envs| envs.values().any(holds))
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn a_cut_link_fails_the_step_within_its_limits_and_the_next_run_finishes() {
    let _alone = alone();
    let options = UpOptions {
        name: "e2e-netcut".into(),
        old: "8.7.6".into(),
        own_network: Side::BOTH.into(),
        ..UpOptions::default()
    };
    let lab = lab_from(options, Security::Plain);
    let old_host = lab.address(Side::Old);
    assert_ne!(old_host, "127.0.0.1", "the old side has an address of its own");
    // About 12 MB of rows; at 8 Mbit/s pg_dump copies them for about 12 s.
    lab.psql(
        Side::Old,
        "inmanta",
        "SET ROLE inmanta; CREATE TABLE public.ballast AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g",
    )
    .unwrap();
    let before = lab.environments(Side::Old);
    lab.run(&["halt-all"]).success();
    lab.run(&["stop-server"]).success();

    // The old link, cut while pg_dump copies the big table.
    lab.throttle(Side::Old, Some(8000)).unwrap();
    let copying = || {
        lab.psql(Side::Old, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY public.ballast%'")
            .is_ok_and(|n| n.trim() != "0")
    };
    let (run, noticed) = cut_while(&lab, &["dump"], Side::Old, "pg_dump copying public.ballast", copying);
    eprintln!("dump: the cut was noticed after {noticed:.1?}");
    run.code(1)
        .stderr_has("pg_dump failed")
        .stderr_has(&format!("the connection to PostgreSQL at {old_host}:"))
        .stderr_has("then run `inmanta-migrate dump` again");
    // Keepalives after 10 s idle, 3 probes 5 s apart: about 25 s.
    assert!(noticed < Duration::from_secs(60), "a dead link is noticed within a minute, not TCP's 15: {noticed:?}");
    let dump_dir = lab.work_dir().join("dump");
    for name in ["db", "manifest.json"] {
        assert!(!dump_dir.join(name).exists(), "nothing under the final name {name}");
    }
    assert_eq!(lab.journal()["steps"]["dump"]["status"], "failed");
    lab.mend(Side::Old).unwrap();
    lab.throttle(Side::Old, None).unwrap();
    lab.run(&["dump"]).success().stderr_has("removing the leftovers of an interrupted dump");

    // The new link, cut while env-reconcile works on an environment (just
    // after asking for its compile: the next call is a POST, which is never
    // retried, then come the GETs of the waits, which are).
    lab.run(&["restore"]).success();
    lab.run(&["start-server"]).success();
    let asked = || any_environment(&lab, |e| e["phase"] == "compile_requested");
    let (run, noticed) = cut_while(&lab, &["env-reconcile"], Side::New, "a compile requested", asked);
    eprintln!("env-reconcile: the cut was noticed after {noticed:.1?}");
    run.code(1).stderr_has("new server does not answer").stderr_has("then run `inmanta-migrate env-reconcile` again");
    // `timeouts.api` (30 s) for one call, four tries of a GET (with 0.5 + 1
    // + 2 s between them) at most.
    assert!(noticed < Duration::from_secs(4 * 30 + 10), "failed within the API limits: {noticed:?}");
    assert!(!any_environment(&lab, |e| e["released"] == true), "nothing released while cut off");
    lab.mend(Side::New).unwrap();

    // The next run finishes where it stopped, and the new side has it all.
    lab.run(&["migrate", "--yes", "--release"]).success();
    assert_eq!(lab.fingerprints(Side::Old)["public.ballast"], lab.fingerprints(Side::New)["public.ballast"]);
    assert_migrated(&lab, &before, &lab.reconciled(), true);
}
