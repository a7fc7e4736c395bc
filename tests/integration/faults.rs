//! Faults against the fake server: answers 500/503, a hanging API, and a
//! second run while one holds the lock.

use std::time::{Duration, Instant};

use fake_inmanta::{Fault, Flavor};

use crate::support::{Fakes, snapshot_human};

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
    let run = g.run(&["halt-all"]);
    run.code(1);
    snapshot_human!("http_500_after_retries", &run, g.path());
    let tries = g.old.requests().iter().filter(|r| r.path == "/api/v2/project").count();
    assert_eq!(tries, 4, "one try and three retries, no more");
}

#[test]
fn changes_are_never_retried() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    let env = f.old.add_env("prod");
    f.config("");
    f.old.inject(Fault::Status { prefix: "/api/v2/actions/environment/halt".into(), status: 503, times: 1 });
    let run = f.run(&["halt-all"]);
    run.code(1);
    snapshot_human!("halt_not_retried", &run, f.path());
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
    let run = f.run(&["halt-all"]);
    run.code(1);
    assert!(start.elapsed() < Duration::from_secs(20), "bounded: {:?}", start.elapsed());
    snapshot_human!("api_timeout", &run, f.path());
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
    second.code(1);
    assert!(second.stderr.contains(&format!("pid {}", first.id())), "names the holder's pid:\n{}", second.stderr);
    snapshot_human!("lock_held", &second, f.path());
    let mut first = first;
    let _ = first.kill();
    let _ = first.wait();
}
