//! dump, restore and start-server against fake servers and a real
//! PostgreSQL (a scratch cluster with a small database shaped like
//! Inmanta's): seconds, no inmanta-core server needed. What the lab's real
//! servers add is proven in the e2e tests.

use camino::Utf8PathBuf;
use lab::ScratchCluster;

use crate::support::{config_variant, scratch::Setup, set};

#[test]
fn dump_restore_and_start_server_move_the_database_and_verify_it() {
    let Some(s) = Setup::new() else { return };
    s.test().arg("halt-all").run().success();
    // The old server still answers: dump refuses to read a live database.
    s.test().arg("dump").run().code(3).stderr_has("stop-server");
    s.test().arg("stop-server").run().success();

    let before = s.content("inmanta");
    let dump = s.test().args(["--json", "dump"]).run();
    dump.success();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.fakes.path().join("work/dump/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["tables"]["public.resource"], 5000, "{manifest}");
    assert_eq!(manifest["tables"]["public.environment"], 2, "{manifest}");
    // What is written after the dump is not in it.
    s.rows("inmanta", &format!("INSERT INTO public.resource VALUES ('{}', 5001, '{{}}')", s.plain));

    s.test().arg("restore").run().success().stderr_has("verified");
    assert_eq!(s.content("inmanta_new"), before, "the new database holds what the dump took");
    assert_eq!(s.rows("inmanta_new", "SELECT tableowner FROM pg_tables WHERE tablename = 'resource'"), "inmanta");
    // Again: nothing to do, nothing loaded twice.
    s.test().arg("restore").run().success().stdout_has("nothing to do");

    let start = s.test().args(["--json", "start-server"]).run();
    start.success();
    assert!(
        s.fakes.new.env(s.plain).halted && s.fakes.new.env(s.halted).halted,
        "env-reconcile resumes them, not start-server"
    );
    let journal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.fakes.path().join("work/journal.json")).unwrap()).unwrap();
    for step in ["dump", "restore", "start-server"] {
        assert_eq!(journal["steps"][step]["status"], "done", "{step}: {journal}");
    }
}

/// A migration started with the previous binary (journal format 1, which
/// kept restore's resume state among its figures) and killed inside
/// `restore`, after it created the new database, finishes with this one:
/// restore still knows the half-loaded database as this migration's own.
#[test]
fn a_format_1_journal_killed_in_restore_finishes_with_this_binary() {
    let Some(s) = Setup::new() else { return };
    for step in ["halt-all", "stop-server", "dump"] {
        s.test().arg(step).run().success();
    }
    let before = s.content("inmanta");
    let killed = s.test().arg("restore").env(failpoint::CRASH_AT, "db-after:1").run();
    assert_eq!(killed.signal, Some(9), "killed after creating the new database: {}", killed.stderr);
    s.rows("inmanta_new", "CREATE TABLE public.half_loaded (n int)");

    // What the format-1 binary left: the same journal, the state among the figures.
    let path = s.fakes.path().join("work/journal.json");
    let mut journal: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(journal["format"], 2, "{journal}");
    let restore = journal["steps"]["restore"].as_object_mut().unwrap();
    let state = restore.remove("state").expect("restore recorded the database it touched");
    assert!(state["target_touched"].as_str().is_some_and(|t| t.ends_with("/inmanta_new")), "{state}");
    restore.insert("figures".into(), state);
    journal["format"] = 1.into();
    std::fs::write(&path, journal.to_string()).unwrap();

    s.test().args(["migrate", "--yes"]).run().success();
    assert_eq!(s.content("inmanta_new"), before, "the new database holds what the dump took");
    assert_eq!(s.rows("inmanta_new", "SELECT count(*) FROM pg_tables WHERE tablename = 'half_loaded'"), "0");
    let journal: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(journal["format"], 2, "written in the current format: {journal}");
    for step in ["halt-all", "stop-server", "dump", "restore", "start-server", "env-reconcile"] {
        assert_eq!(journal["steps"][step]["status"], "done", "{step}: {journal}");
    }
    assert_eq!(journal["steps"]["restore"]["figures"].get("target_touched"), None, "no state among the figures");
}

#[test]
fn restore_refuses_a_target_that_holds_data_and_a_damaged_dump() {
    let Some(s) = Setup::new() else { return };
    for step in ["halt-all", "stop-server", "dump"] {
        s.test().arg(step).run().success();
    }
    // A database someone else filled.
    s.rows("postgres", "CREATE DATABASE inmanta_new OWNER inmanta");
    s.rows("inmanta_new", "CREATE TABLE public.theirs (n int)");
    s.test().arg("restore").run().code(3).stderr_has("--replace");
    assert_eq!(s.rows("inmanta_new", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "1");

    // A dump file changed after the manifest was written.
    let data = s.fakes.path().join("work/dump/db");
    let file = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "dat"))
        .expect("a table data file");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&file, bytes).unwrap();
    s.test().args(["restore", "--replace"]).run().code(3).stderr_has("checksum mismatch");
    assert_eq!(s.rows("inmanta_new", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "1", "untouched");
}

#[test]
fn verify_full_moves_the_database_over_tls_and_refuses_a_wrong_ca_or_host_name() {
    if !ScratchCluster::available() {
        return;
    }
    let (pg, ca) = ScratchCluster::start_tls().expect("a scratch PostgreSQL cluster with TLS");
    let s = Setup::on(pg);
    let dir = s.fakes.path().to_owned();
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.join("other-ca.pem"), lab::unrelated_ca_pem("not the cluster's CA").unwrap()).unwrap();
    // The cluster's certificate names `localhost` only.
    let tls = |name: &str, host: &str| {
        config_variant(&s.config, name, |c| {
            for side in ["old", "new"] {
                set(c, &format!("{side}.database.host"), host);
                set(c, &format!("{side}.database.sslmode"), "verify-full");
            }
        })
    };
    let (good, wrong_name) = (tls("verify-full", "localhost"), tls("wrong-name", "127.0.0.1"));
    let run = |config: &Utf8PathBuf, ca: &str, step: &str| {
        let run = s
            .fakes
            .test()
            .config(config)
            .env("OLD_DB_PASSWORD", ScratchCluster::PASSWORD)
            .env("PGSSLROOTCERT", dir.join(ca).as_str())
            .arg(step)
            .run();
        assert!(
            !format!("{}{}", run.stdout, run.stderr).contains(ScratchCluster::PASSWORD),
            "a password in the output"
        );
        run
    };
    for step in ["halt-all", "stop-server"] {
        run(&good, "ca.pem", step).success();
    }
    let log_file = s.pg.log_file();
    let log_since = |from: usize| std::fs::read_to_string(&log_file).unwrap()[from..].to_owned();
    let start = log_since(0).len();

    let cases = [
        (&good, "other-ca.pem", "a CA that did not sign", "point PGSSLROOTCERT at the CA"),
        (&wrong_name, "ca.pem", "a wrong host name", "set `host` to a name in the certificate"),
    ];
    for (config, ca, what, advice) in cases {
        let refused = run(config, ca, "dump");
        assert_ne!(refused.code, 0, "{what}: dump went on\n{}", refused.stderr);
        refused.stderr_has("certificate").stderr_has(advice);
        for network_advice in ["reachable from here", "start PostgreSQL"] {
            assert!(!refused.stderr.contains(network_advice), "{what} is no network problem:\n{}", refused.stderr);
        }
        assert!(!dir.join("work/dump/manifest.json").exists(), "{what}: a dump under its final name");
    }
    assert!(!log_since(start).contains("no encryption"), "a refused TLS connection was retried in plain text");
    // That check can fail: a plain connection is refused, and logged so.
    assert_ne!(run(&s.config, "ca.pem", "dump").code, 0, "sslmode=disable got in");
    assert!(log_since(start).contains("no encryption"), "the plain attempt is in the log");

    let tls_start = log_since(0).len();
    let before = s.content("inmanta");
    for step in ["dump", "restore", "start-server"] {
        run(&good, "ca.pem", step).success();
    }
    assert_eq!(s.content("inmanta_new"), before, "the new database holds what the dump took");
    let log = log_since(tls_start);
    assert!(log.contains("SSL enabled"), "the tool's connections used TLS:\n{log}");
    assert!(!log.contains("no encryption"), "nothing tried plain text:\n{log}");
}
