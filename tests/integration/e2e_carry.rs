//! `carry` on the real lab: files of the old machine, reached over the lab's
//! real sshd, copied to the new machine's paths with their modes and
//! owners; a re-run leaves them; a file changed on the new side is refused,
//! then replaced with `--replace` and kept aside; contents never printed.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use camino::{Utf8Path, Utf8PathBuf};

use crate::support::{
    Test,
    lab::{Lab, lab, slot},
};

const SECRET: &str = "jwt-key-that-must-never-be-printed";

fn write(path: &Utf8Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// (mode, uid, gid, content) of a file.
fn facts(path: &Utf8Path) -> (u32, u32, u32, String) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.mode() & 0o7777, meta.uid(), meta.gid(), std::fs::read_to_string(path).unwrap())
}

fn carry(lab: &Lab, config: &Utf8Path, args: &[&str]) -> crate::support::Run {
    let run = Test::new(lab.dir()).config(config).arg("carry").args(args.iter().copied()).run();
    let events = std::fs::read_to_string(lab.work_dir().join("events.log")).unwrap_or_default();
    for text in [&run.stdout, &run.stderr, &events] {
        assert!(!text.contains(SECRET), "a carried file's content was printed:\n{text}");
    }
    run
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn carries_files_with_modes_and_owners_and_never_overwrites_silently() {
    let _slot = slot();
    let lab = lab("e2e-carry", "8.7.6");
    let (old, new) = (lab.dir().join("old/carry"), lab.dir().join("new/carry"));
    write(&old.join("etc/inmanta.cfg"), "[server]\nauth=true\n", 0o644);
    write(&old.join("etc/inmanta.d/10-jwt.cfg"), &format!("[auth_jwt_default]\nkey={SECRET}\n"), 0o640);
    write(&old.join("ssh/id_ed25519"), "PRIVATE KEY\n", 0o600);
    // An owner other than the tool's: the lab machine's postgres user.
    let status = std::process::Command::new("chown")
        .args(["postgres:postgres", old.join("ssh/id_ed25519").as_str()])
        .status()
        .unwrap();
    assert!(status.success());
    let config = lab.config_variant("carry", |t| {
        let entry = |from: Utf8PathBuf, to: Utf8PathBuf| {
            toml::Value::Table(toml::toml! { from = (from.to_string()) to = (to.to_string()) })
        };
        let files = vec![
            entry(old.join("etc"), new.join("etc")),
            entry(old.join("ssh/id_ed25519"), new.join("home/.ssh/id_ed25519")),
        ];
        crate::support::set(t, "carry.files", toml::Value::Array(files));
    });
    let carried = [
        (old.join("etc/inmanta.cfg"), new.join("etc/inmanta.cfg")),
        (old.join("etc/inmanta.d/10-jwt.cfg"), new.join("etc/inmanta.d/10-jwt.cfg")),
        (old.join("ssh/id_ed25519"), new.join("home/.ssh/id_ed25519")),
    ];

    // check names what the new machine lacks.
    let check = Test::new(lab.dir()).config(&config).args(["check", "--json"]).run();
    let item = crate::support::item(&crate::support::check_items(&check), "files outside the database").clone();
    assert_eq!(item["status"], "warn", "{item}");
    assert!(item["detail"].as_str().unwrap().contains(new.join("etc/inmanta.cfg").as_str()), "{item}");

    // Over ssh from the old machine: content, mode, owner and group.
    let first = carry(&lab, &config, &["--json"]);
    first.success();
    assert!(first.json()["summary"].as_str().unwrap().contains("3 file(s)"), "{}", first.stdout);
    for (from, to) in &carried {
        assert_eq!(facts(to), facts(from), "{to} as {from}");
    }
    // Again: nothing to copy.
    carry(&lab, &config, &[]).success().stderr_has("already there");
    let check = Test::new(lab.dir()).config(&config).args(["check", "--json"]).run();
    assert_eq!(
        crate::support::item(&crate::support::check_items(&check), "files outside the database")["status"],
        "pass"
    );

    // Changed on the new machine: refused, left as it is.
    let changed = new.join("etc/inmanta.cfg");
    write(&changed, "[server]\nauth=false\n", 0o644);
    carry(&lab, &config, &[]).code(3).stderr_has("differ").stderr_has("carry --replace");
    assert_eq!(std::fs::read_to_string(&changed).unwrap(), "[server]\nauth=false\n");
    // --replace: replaced, the one there kept aside.
    carry(&lab, &config, &["--replace"]).success().stderr_has("replaced");
    assert_eq!(facts(&changed), facts(&old.join("etc/inmanta.cfg")));
    let kept = Utf8PathBuf::from(format!("{changed}.before-inmanta-migrate"));
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "[server]\nauth=false\n", "never lost");

    // A source that is not there: the check says so, nothing is copied.
    let missing = lab.config_variant("carry-missing", |t| {
        crate::support::set(t, "carry.files", toml::Value::Array(vec![old.join("nothing-here").to_string().into()]));
    });
    carry(&lab, &missing, &[]).code(3).output_has("nothing-here");
}
