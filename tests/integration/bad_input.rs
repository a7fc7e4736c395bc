//! Bad input on the real lab: damaged dumps, wrong versions, unusable
//! databases and directories. Each is refused with a clear message and exit
//! code 2 or 3, and changes nothing. (Bad config files are in config.rs, bad
//! URLs, tokens and --env values against the fake server elsewhere.)

use camino::{Utf8Path, Utf8PathBuf};
use lab::Side;

use crate::{
    support::lab::{Lab, lab, slot},
    support::{Run, Test, get, set, snapshot_human},
};

/// A copy of the lab's config with `edit` applied, and a run with it.
fn run_with(lab: &Lab, name: &str, edit: impl FnOnce(&mut toml::Table), args: &[&str]) -> Run {
    Test::new(lab.dir()).config(&lab.config_variant(name, edit)).args(args.iter().copied()).run()
}

fn user_objects(lab: &Lab, side: Side) -> i64 {
    lab.psql(
        side,
        "inmanta",
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

fn copy_dir(from: &Utf8Path, to: &Utf8Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in from.read_dir_utf8().unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A scratch copy of the good dump, damaged by `damage`, restored from.
fn restore_damaged(lab: &Lab, name: &str, damage: impl FnOnce(&Utf8Path)) -> Run {
    let dir = lab.dir().join(format!("dump-{name}"));
    copy_dir(&lab.work_dir().join("dump"), &dir);
    damage(&dir);
    run_with(lab, name, |c| set(c, "dump.dir", dir.as_str()), &["restore"])
}

fn largest_data_file(dump: &Utf8Path) -> Utf8PathBuf {
    let mut files: Vec<_> = dump.join("db").read_dir_utf8().unwrap().map(|e| e.unwrap().path().to_owned()).collect();
    files.retain(|f| f.extension() == Some("dat"));
    files.sort_by_key(|f| std::fs::metadata(f).unwrap().len());
    files.pop().unwrap()
}

fn rewrite_manifest(dir: &Utf8Path, change: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    change(&mut manifest);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// Rewrites the checksum file too, as a newer tool's honest dump would have it.
fn reseal_manifest(dir: &Utf8Path) {
    let out = std::process::Command::new("sha256sum").arg(dir.join("manifest.json")).output().unwrap();
    let sum = String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned();
    std::fs::write(dir.join("manifest.json.sha256"), format!("{sum}  manifest.json\n")).unwrap();
}

/// Each bad input on its own: one that is not refused as it should be does
/// not hide the others; the test fails at the end, naming every one.
#[derive(Default)]
struct Cases(Vec<String>);

impl Cases {
    fn case(&mut self, name: &str, check: impl FnOnce()) {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            self.0.push(format!("{name}: {message}"));
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} bad input(s) not refused as they should be:\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn bad_input_is_refused_and_changes_nothing() {
    let _slot = slot();
    let lab = lab("e2e-bad", "8.7.6");
    lab.run(&["halt-all"]).success();
    lab.run(&["stop-server"]).success();
    let dump_dir = lab.work_dir().join("dump");
    let mut cases = Cases::default();
    // The whole output of a run, in snapshots/integration__bad_input__<name>.snap.
    let snap = |name: &str, run: &Run| snapshot_human!(name, run, lab.dir());

    // --- the old database and the dump directory ---
    cases.case("foreign file in the dump directory", || {
        std::fs::create_dir_all(&dump_dir).unwrap();
        std::fs::write(dump_dir.join("notes.txt"), "not a dump").unwrap();
        let run = lab.run(&["dump"]);
        std::fs::remove_file(dump_dir.join("notes.txt")).unwrap();
        run.code(3);
        snap("foreign_file_in_dump_dir", &run);
    });
    cases.case("wrong database password", || {
        let wrong_password = lab.dir().join("wrong-password");
        std::fs::write(&wrong_password, "not-the-password\n").unwrap();
        let run = run_with(
            &lab,
            "wrong-password",
            |c| set(c, "old.database.password.file", wrong_password.as_str()),
            &["dump"],
        );
        run.code(3);
        snap("wrong_database_password", &run);
    });
    cases.case("no database there", || {
        let run = run_with(&lab, "no-database", |c| set(c, "old.database.port", 9), &["dump"]);
        run.code(3);
        snap("no_database_there", &run);
    });
    cases.case("no disk space", || {
        let tiny = lab.dir().join("tiny");
        std::fs::create_dir_all(&tiny).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", tiny.as_str()])
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a 1 MiB tmpfs (tests run as root)");
        let run = run_with(&lab, "no-space", |c| set(c, "dump.dir", format!("{tiny}/dump")), &["dump"]);
        let _ = std::process::Command::new("umount").arg(tiny.as_str()).status();
        run.code(3);
        snap("no_disk_space", &run);
    });
    cases.case("work directory not usable", || {
        let file = lab.dir().join("a-file");
        std::fs::write(&file, "").unwrap();
        let run = run_with(&lab, "bad-workdir", |c| set(c, "work_dir", format!("{file}/work")), &["dump"]);
        run.code(2);
        snap("work_dir_not_usable", &run);
    });
    assert!(!dump_dir.join("manifest.json").exists(), "nothing was dumped by the refused runs");

    lab.run(&["dump"]).success();
    assert_eq!(user_objects(&lab, Side::New), 0);

    // --- damaged dumps ---
    cases.case("manifest edited", || {
        let run =
            restore_damaged(&lab, "edited", |d| rewrite_manifest(d, |m| m["tables"]["public.environment"] = 99.into()));
        run.code(3);
        snap("manifest_edited", &run);
    });
    cases.case("data file truncated", || {
        let run = restore_damaged(&lab, "truncated", |d| {
            let f = largest_data_file(d);
            let len = std::fs::metadata(&f).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len / 2).unwrap();
        });
        run.code(3);
        snap("data_file_truncated", &run);
    });
    cases.case("data file changed", || {
        let run = restore_damaged(&lab, "flipped", |d| {
            let f = largest_data_file(d);
            let mut bytes = std::fs::read(&f).unwrap();
            bytes[0] ^= 0x20;
            std::fs::write(&f, bytes).unwrap();
        });
        run.code(3);
        snap("data_file_changed", &run);
    });
    cases.case("no manifest", || {
        let run = restore_damaged(&lab, "partial", |d| std::fs::remove_file(d.join("manifest.json")).unwrap());
        run.code(3);
        snap("no_manifest", &run);
    });
    cases.case("schema newer than the new server knows", || {
        let run = restore_damaged(&lab, "newer-schema", |d| {
            rewrite_manifest(d, |m| m["schema_versions"]["core"].as_array_mut().unwrap().push(299912310.into()));
            reseal_manifest(d);
        });
        run.code(3);
        snap("schema_newer_than_new_server", &run);
    });

    // --- versions and tools ---
    cases.case("downgrade", || {
        let says_8_0 = vec!["echo", "Inmanta Service Orchestrator: 8.0.0"];
        let run = run_with(&lab, "downgrade", |c| set(c, "new.version_command", says_8_0), &["restore"]);
        run.code(3);
        snap("downgrade", &run);
    });
    cases.case("pg_restore older than the archive", || {
        let old_tools = lab.dir().join("old-tools");
        std::fs::create_dir_all(&old_tools).unwrap();
        for tool in ["psql", "pg_dump", "vacuumdb"] {
            let _ = std::os::unix::fs::symlink(lab.pg_bin_dir().join(tool), old_tools.join(tool));
        }
        let fake_restore = old_tools.join("pg_restore");
        std::fs::write(&fake_restore, "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'pg_restore (PostgreSQL) 13.0'; exit 0; }\necho 'pg_restore: error: unsupported version (1.14) in file header' >&2; exit 1\n").unwrap();
        std::fs::set_permissions(&fake_restore, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let run = run_with(
            &lab,
            "old-pg-restore",
            |c| {
                let ours = lab.pg_bin_dir();
                assert_eq!(get(c, "pg.bin_dir").as_str(), Some(ours.as_str()), "the lab's config names its tools");
                set(c, "pg.bin_dir", old_tools.as_str())
            },
            &["restore"],
        );
        run.code(3);
        snap("pg_restore_older_than_archive", &run);
    });

    // --- a target database that holds data ---
    cases.case("target database holds data", || {
        lab.psql(
            Side::New,
            "inmanta",
            "SET ROLE inmanta; CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)",
        )
        .unwrap();
        let run = lab.run(&["restore"]);
        run.code(3);
        snap("target_database_holds_data", &run);
        assert_eq!(lab.psql(Side::New, "inmanta", "SELECT count(*) FROM precious").unwrap().trim(), "1", "untouched");
        assert_eq!(user_objects(&lab, Side::New), 1, "no refused run loaded anything");
        let run = lab.run(&["restore", "--replace"]);
        run.success();
        snap("restore_replace", &run);
        assert!(lab.psql(Side::New, "inmanta", "SELECT count(*) FROM precious").is_err(), "replaced, as asked");
    });
    cases.finish();
}
