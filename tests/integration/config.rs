//! Bad configs: each exits 2, names the file, the line and column where TOML
//! knows them, and the key; and changes nothing (no work directory appears).

use crate::support::{Test, snapshot_human};

const GOOD: &str = r#"work_dir = "work"

[old]
api_url = "http://127.0.0.1:1"

[old.service]
manager = "systemd"

[old.database]
port = 5433

[new]
api_url = "http://127.0.0.1:2"

[new.service]
manager = "systemd"
"#;

/// (what, edit of GOOD, expected fragments of the message)
fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        ("syntax error", GOOD.replace("port = 5433", "port = = 5433"), vec!["inmanta-migrate.toml:10:"]),
        (
            "wrong type",
            GOOD.replace("port = 5433", "port = \"five\""),
            vec![":10:8", "old.database.port", "expected u16"],
        ),
        (
            "unknown key",
            GOOD.replace("port = 5433", "port = 5433\nprot = 1"),
            vec![":11:1", "old.database.prot", "unknown field"],
        ),
        (
            "missing key",
            GOOD.replace("api_url = \"http://127.0.0.1:2\"\n", ""),
            vec![":12:1", "key `new`", "missing field `api_url`"],
        ),
        (
            "missing section",
            GOOD.replace("[new.service]\nmanager = \"systemd\"\n", ""),
            vec!["missing field `service`"],
        ),
        (
            "url without scheme",
            GOOD.replace("http://127.0.0.1:1", "127.0.0.1:1"),
            vec![":4:1", "old.api_url", "http://"],
        ),
        (
            "same url",
            GOOD.replace("http://127.0.0.1:2", "http://127.0.0.1:1/"),
            vec!["new.api_url", "same as old.api_url"],
        ),
        ("same database", GOOD.replace("port = 5433\n", ""), vec!["new.database", "same database"]),
        (
            "intermediate without a version",
            format!("{GOOD}\n[[intermediate]]\nversion = \"fifteen\"\n[intermediate.service]\nmanager = \"systemd\"\n"),
            vec!["intermediate[0].version", "\"fifteen\" is not a version"],
        ),
        (
            "intermediates out of order",
            format!(
                "{GOOD}\n[[intermediate]]\nversion = \"18.2.0\"\n[intermediate.service]\nmanager = \"systemd\"\n\
                 [[intermediate]]\nversion = \"15.5.9\"\n[intermediate.service]\nmanager = \"systemd\"\n"
            ),
            vec!["intermediate[1].version", "not newer than intermediate[0]", "oldest first"],
        ),
        (
            "intermediate with commands missing",
            format!("{GOOD}\n[[intermediate]]\nversion = \"15.5.9\"\n[intermediate.service]\nmanager = \"command\"\n"),
            vec!["intermediate[0].service.start", "is required with manager = \"command\""],
        ),
        (
            "concurrency 0",
            format!("{GOOD}\n[reconcile]\nconcurrency = 0\n"),
            vec!["reconcile.concurrency", "at least 1"],
        ),
        ("timeout 0", format!("{GOOD}\n[timeouts]\nstop = \"0s\"\n"), vec!["timeouts.stop", "longer than 0s"]),
        ("bad duration", format!("{GOOD}\n[timeouts]\nstop = \"soon\"\n"), vec!["timeouts.stop", "not a duration"]),
        (
            "inline secret",
            GOOD.replace("api_url = \"http://127.0.0.1:1\"", "api_url = \"http://127.0.0.1:1\"\ntoken = \"abc\""),
            vec!["old.token"],
        ),
        (
            "empty token file",
            GOOD.replace(
                "api_url = \"http://127.0.0.1:1\"",
                "api_url = \"http://127.0.0.1:1\"\ntoken = { file = \"empty-token\" }",
            ),
            vec!["old.token", "is empty"],
        ),
        (
            "missing token env",
            GOOD.replace(
                "api_url = \"http://127.0.0.1:1\"",
                "api_url = \"http://127.0.0.1:1\"\ntoken = { env = \"NOPE_NOT_SET\" }",
            ),
            vec!["old.token", "NOPE_NOT_SET is not set"],
        ),
        (
            "unreadable CA file",
            GOOD.replace(
                "api_url = \"http://127.0.0.1:1\"",
                "api_url = \"http://127.0.0.1:1\"\nca_file = \"no-such-ca.pem\"",
            ),
            vec!["old.ca_file", "cannot read"],
        ),
        (
            "CA file without certificate",
            GOOD.replace(
                "api_url = \"http://127.0.0.1:1\"",
                "api_url = \"http://127.0.0.1:1\"\nca_file = \"empty-token\"",
            ),
            vec!["old.ca_file", "no PEM certificate"],
        ),
        (
            "command manager without commands",
            GOOD.replacen("manager = \"systemd\"", "manager = \"command\"", 1),
            vec!["old.service.start", "required"],
        ),
        (
            "unknown manager",
            GOOD.replacen("manager = \"systemd\"", "manager = \"upstart\"", 1),
            vec!["old.service.manager", "unknown variant"],
        ),
        (
            "work dir inside dump dir",
            format!("{GOOD}\n[dump]\ndir = \".\"\n"),
            vec!["work_dir", "inside the dump directory"],
        ),
        ("compression out of range", format!("{GOOD}\n[dump]\ncompress = 12\n"), vec!["dump.compress"]),
        (
            "plain dump compressed",
            format!("{GOOD}\n[dump]\nformat = \"plain\"\ncompress = 1\n"),
            vec!["dump.compress", "plain"],
        ),
        ("bad sslmode", GOOD.replace("port = 5433", "port = 5433\nsslmode = \"maybe\""), vec!["old.database.sslmode"]),
    ]
}

#[test]
fn every_bad_config_exits_2_naming_the_place_and_key() {
    for (what, text, expected) in cases() {
        let dir = tempfile::tempdir().unwrap();
        let path = camino::Utf8Path::from_path(dir.path()).unwrap();
        std::fs::write(path.join("empty-token"), "\n").unwrap();
        std::fs::write(path.join("inmanta-migrate.toml"), &text).unwrap();
        let run = Test::new(path).arg("check").run();
        assert_eq!(run.code, 2, "{what}: exit code; stderr:\n{}", run.stderr);
        assert!(run.stderr.contains("inmanta-migrate.toml"), "{what}: names the file:\n{}", run.stderr);
        for fragment in expected {
            assert!(run.stderr.contains(fragment), "{what}: lacks {fragment:?}:\n{}", run.stderr);
        }
        assert!(!path.join("work").exists(), "{what}: nothing is created");
    }
}

#[test]
fn a_missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let dir = camino::Utf8Path::from_path(dir.path()).unwrap();
    let run = Test::new(dir).arg("status").run();
    run.code(2);
    snapshot_human!("missing_config", &run, dir);
}

#[test]
fn help_lists_every_subcommand_and_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let run = Test::new(camino::Utf8Path::from_path(dir.path()).unwrap()).arg("--help").run();
    run.success();
    for sub in [
        "check",
        "plan",
        "status",
        "migrate",
        "halt-all",
        "stop-server",
        "dump",
        "restore",
        "start-server",
        "env-reconcile",
    ] {
        assert!(run.stdout.contains(&format!("  {sub} ")), "--help lists {sub}:\n{}", run.stdout);
        let sub_help = Test::new(camino::Utf8Path::from_path(dir.path()).unwrap()).args([sub, "--help"]).run();
        sub_help.success();
        assert!(sub_help.stdout.lines().next().is_some_and(|l| l.len() > 20), "{sub} --help says what it does");
    }
    run.stdout_has("Exit codes:").stdout_has("3  stopped for an operator");
}

#[test]
fn the_shipped_configs_use_only_known_keys() {
    let root = camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    for name in ["example.toml", "lab.toml"] {
        let path = root.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        // Parsing checks keys and types; secrets are only read by `load`.
        migrate_core::Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    }
    // And the config README.md starts an operator with.
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let block = readme.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a toml block in README");
    migrate_core::Config::parse(block, camino::Utf8Path::new("README.md")).unwrap_or_else(|e| panic!("{e}"));
}

/// config/example.toml documents every key the tool reads, and no key it
/// does not: for each table, the keys the tool expects (from its own
/// refusal of an unknown key) against the keys written there, set or
/// commented out. Tables documented once for several ("the same keys as
/// [old]") share their keys.
#[test]
fn the_reference_config_documents_every_key_and_no_other() {
    const SHARED: [(&str, &str); 4] = [
        ("new", "old"),
        ("new.service", "old.service"),
        ("new.database", "old.database"),
        ("intermediate.service", "old.service"),
    ];
    let path = camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Table -> documented keys (a table's own tables count as its keys).
    let mut documented: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let mut table = String::new();
    for line in text.lines() {
        // "# [intermediate.host]: like [new.host]" documents a table in prose.
        if let Some(prose) = line.strip_prefix("# [")
            && let Some((named, _)) = prose.split_once(']')
            && let Some((parent, own)) = named.rsplit_once('.')
        {
            documented.entry(parent.to_owned()).or_default().insert(own.to_owned());
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            table = header.trim_matches(|c| c == '[' || c == ']').to_owned();
            let (parent, own) = table.rsplit_once('.').unwrap_or(("", &table));
            documented.entry(parent.to_owned()).or_default().insert(own.to_owned());
            continue;
        }
        let key = line.trim_start_matches("# ");
        if let Some((key, _)) = key.split_once(" = ")
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            documented.entry(table.clone()).or_default().insert(key.to_owned());
        }
    }
    let tables: Vec<String> = documented.keys().cloned().collect();
    let mut problems = Vec::new();
    for table in tables {
        // The tool names what it expects when it meets a key it does not know.
        let probe = if table.is_empty() {
            format!("zz_unknown = 1\n{text}")
        } else {
            let header = if table == "intermediate" { "[[intermediate]]".to_owned() } else { format!("[{table}]") };
            text.replacen(&format!("{header}\n"), &format!("{header}\nzz_unknown = 1\n"), 1)
        };
        let err = migrate_core::Config::parse(&probe, &path).expect_err("an unknown key is refused").to_string();
        // "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`".
        let listed = err.split("expected ").nth(1).unwrap_or_else(|| panic!("[{table}]: {err}"));
        let expected: std::collections::BTreeSet<String> =
            listed.split('`').skip(1).step_by(2).map(str::to_owned).collect();
        let mut have = documented[&table].clone();
        if let Some((_, from)) = SHARED.iter().find(|(t, _)| *t == table) {
            have.extend(documented[*from].iter().cloned());
        }
        for key in expected.difference(&have) {
            problems.push(format!("[{table}] {key}: read by the tool, not documented in config/example.toml"));
        }
        for key in have.difference(&expected) {
            problems.push(format!("[{table}] {key}: documented in config/example.toml, unknown to the tool"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The tests' typed config edits write a config the tool reads as edited.
#[test]
fn typed_config_edits_change_what_the_tool_reads() {
    let dir = tempfile::tempdir().unwrap();
    let dir = camino::Utf8Path::from_path(dir.path()).unwrap();
    let path = dir.join("inmanta-migrate.toml");
    std::fs::write(&path, GOOD).unwrap();
    let edited = crate::support::config_variant(&path, "edited", |c| {
        crate::support::set(c, "old.database.port", 9);
        crate::support::set(c, "dump.dir", "/elsewhere");
        crate::support::remove(c, "new.service");
    });
    let text = std::fs::read_to_string(&edited).unwrap();
    let table: toml::Table = text.parse().unwrap();
    assert_eq!(crate::support::get(&table, "old.database.port").as_integer(), Some(9));
    assert_eq!(crate::support::get(&table, "dump.dir").as_str(), Some("/elsewhere"));
    assert!(table["new"].get("service").is_none());
    // Without [new.service] the tool names the missing key.
    let run = Test::new(dir).config(&edited).arg("plan").run();
    run.code(2);
    snapshot_human!("without_new_service", &run, dir);
}
