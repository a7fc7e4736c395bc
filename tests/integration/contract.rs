//! The JSON contract on real outputs: every subcommand run with `--json`
//! against fake servers, its document, event lines and report.json checked
//! against the published schemas by `support::run` (the lab e2e tests go
//! through the same check on real servers). The subcommands come from the
//! CLI itself (its man pages), not from a list here.

use fake_inmanta::Flavor;
use serde_json::Value;

use crate::support::{Fakes, Test};

/// Every visible subcommand, from the man pages the binary writes.
fn subcommands(f: &Fakes) -> Vec<String> {
    let dir = f.path().join("man");
    Test::new(f.path()).args(["man-pages", dir.as_str()]).run().success();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("inmanta-migrate-")?.strip_suffix(".1").map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn every_subcommand_speaks_the_published_contract_done_or_failed() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("");
    let mut seen_status = Vec::new();
    let mut seen_codes = Vec::new();
    let mut names = subcommands(&f);
    // Last: they end the migration, and the steps after a rollback start a new one.
    names.sort_by_key(|n| matches!(n.as_str(), "rollback" | "finish"));
    assert!(names.len() >= 12 && names.iter().any(|n| n == "env-reconcile"), "{names:?}");
    for name in names.iter().filter(|n| *n != "completions") {
        let mut args = vec!["--json", name.as_str()];
        if name == "man-pages" {
            args.push("man");
        }
        // The config exists: init refuses to replace it (a document too).
        let (old, new) = (f.old.url(), f.new.url());
        if name == "init" {
            args.extend(["--old-api", old.as_str(), "--new-api", new.as_str()]);
        }
        // Validated against the schemas inside `run`.
        let run = f.test().args(args).run();
        let document: Value = run.json();
        assert_eq!(document["exit_code"], run.code, "{name}: {document}");
        assert_eq!(document["schema_version"], 1, "{name}");
        seen_status.push(document["status"].as_str().unwrap().to_owned());
        seen_codes.push(run.code);
    }
    // A bad config is a document too (exit 2).
    let bad = f.path().join("bad.toml");
    std::fs::write(&bad, "work_dir = 3\n").unwrap();
    let run = f.test().args(["--json", "--config", bad.as_str(), "plan"]).run();
    assert_eq!(run.json()["status"], "failed");
    seen_codes.push(run.code);

    for status in ["done", "failed"] {
        assert!(seen_status.iter().any(|s| s == status), "no {status} among {seen_status:?}");
    }
    for code in [0, 1, 2, 3] {
        assert!(seen_codes.contains(&code), "no exit {code} among {seen_codes:?}");
    }
    // halt-all ran, so the work directory holds the report and the event
    // log that `run` checked.
    for file in ["report.json", "events.log"] {
        assert!(f.path().join("work").join(file).exists(), "no {file}");
    }
}
