//! `rehearse` and `migrate --max-window` against the fakes: what refuses
//! before anything changes. The rehearsal itself runs on the real lab
//! (`e2e_rehearse`).

use fake_inmanta::Flavor;
use serde_json::json;

use crate::support::Fakes;

/// A rehearsal.json predicting a window of `seconds`.
fn rehearsal(f: &Fakes, seconds: f64) {
    let part = |steps: &str, s: f64| json!({ "steps": steps, "seconds": s, "basis": "measured" });
    let doc = json!({
        "schema_version": 1, "tool_version": "0", "started": "2026-12-01T00:00:00Z", "seconds": 60.0,
        "old_version": "14.0.0",
        "copy": { "database": "inmanta@old/inmanta", "database_bytes": 1, "tables": 1, "dump_seconds": 1.0,
                  "restore_seconds": 1.0 },
        "servers": [], "environments": [], "deploy_actions": [0, 0],
        "window": { "copy_mode": "offline", "seconds": seconds,
                    "parts": [part("dump", seconds / 2.0), part("env-reconcile", seconds / 2.0)] },
    });
    crate::support::contract::conforms("rehearsal", &doc, "the test's rehearsal.json");
    std::fs::create_dir_all(f.path().join("work")).unwrap();
    std::fs::write(f.path().join("work/rehearsal.json"), doc.to_string()).unwrap();
}

fn halts(f: &Fakes) -> usize {
    f.old.requests().iter().filter(|r| r.path.contains("halt")).count()
}

#[test]
fn max_window_refuses_a_window_no_rehearsal_estimated_or_too_long() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("");
    f.run(&["migrate", "--yes", "--max-window", "10m"]).code(3).stderr_has("no rehearsal to estimate the window from");
    rehearsal(&f, 900.0);
    f.run(&["migrate", "--yes", "--max-window", "10m"])
        .code(3)
        .stderr_has("predicts a window of 900 s (dump 450 s, env-reconcile 450 s), more than --max-window 10m");
    assert_eq!(halts(&f), 0, "nothing was halted");
    f.run(&["migrate", "--yes", "--max-window", "bogus"]).code(2).stderr_has("--max-window");
    f.run(&["plan"]).success().stdout_has("The window: about 900 s (dump 450 s, env-reconcile 450 s)");
    let fits = f.run(&["migrate", "--yes", "--max-window", "20m"]);
    fits.stderr_has("the window fits: about 900 s predicted, 20m allowed");
}

#[test]
fn rehearse_refuses_while_the_new_server_runs() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("");
    // The fake new server answers: its service runs the real new server.
    let run = f.run(&["rehearse"]);
    run.code(3).stderr_has("failed: new server stopped");
    assert_eq!(halts(&f), 0);
}
