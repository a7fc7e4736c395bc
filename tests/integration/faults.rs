//! Faults against the fake server: answers 500/503, a hanging API, and a
//! second run while one holds the lock.

use std::time::{Duration, Instant};

use fake_inmanta::{Fault, Flavor};

use crate::support::Fakes;

#[test]
fn idempotent_reads_are_retried_a_bounded_number_of_times() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("");
    f.old.inject(Fault::Status { prefix: "/api/v2/project".into(), status: 503, times: 2 });
    f.run(&["halt-all"]).success();
    let tries = f.old.requests().iter().filter(|r| r.path == "/api/v2/project").count();
    assert_eq!(tries, 3, "two 503s, then the answer");

    let g = Fakes::new(Flavor::V14, Flavor::V14);
    g.old.add_env("prod");
    g.config("");
    g.old.inject(Fault::Status { prefix: "/api/v2/project".into(), status: 500, times: 100 });
    g.run(&["halt-all"]).code(1).stderr_has("GET /api/v2/project answered HTTP 500");
    let tries = g.old.requests().iter().filter(|r| r.path == "/api/v2/project").count();
    assert_eq!(tries, 4, "one try and three retries, no more");
}

#[test]
fn changes_are_never_retried() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    let env = f.old.add_env("prod");
    f.config("");
    f.old.inject(Fault::Status { prefix: "/api/v2/actions/environment/halt".into(), status: 503, times: 1 });
    f.run(&["halt-all"]).code(1).stderr_has("cannot halt prod").stderr_has("HTTP 503");
    let halts = f.old.requests().iter().filter(|r| r.path.ends_with("/halt")).count();
    assert_eq!(halts, 1);
    assert!(!f.old.env(env).halted);
    // The journal says failed; a re-run finishes the job.
    f.run(&["halt-all"]).success();
    assert!(f.old.env(env).halted);
}

#[test]
fn a_hanging_api_times_out_with_the_call_named() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("[timeouts]\napi = \"300ms\"\n");
    f.old.inject(Fault::Hang { prefix: "/api/v2/agents".into() });
    let start = Instant::now();
    f.run(&["halt-all"]).code(1).stderr_has("GET /api/v2/agents").stderr_has("timed out");
    assert!(start.elapsed() < Duration::from_secs(20), "bounded: {:?}", start.elapsed());
}

#[test]
fn a_second_run_is_refused_by_the_lock() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("[timeouts]\napi = \"5s\"\n");
    f.old.inject(Fault::Hang { prefix: "/api/v2/agents".into() });
    let first = std::process::Command::new(crate::support::BIN)
        .args(["halt-all"])
        .current_dir(f.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = f.path().join("work/lock");
    for _ in 0..100 {
        if std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("pid")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = f.run(&["halt-all"]);
    second.code(1).stderr_has("another inmanta-migrate run holds the lock").stderr_has(&format!("pid {}", first.id()));
    let mut first = first;
    let _ = first.kill();
    let _ = first.wait();
}
