//! `init` against fake servers: a config from what it finds, what it could
//! not find marked, no secret value in it, a config the tool reads, and an
//! existing file never replaced without --force.

use camino::Utf8Path;
use fake_inmanta::Flavor;

use crate::support::{Fakes, Test, snapshot_human};

fn init(f: &Fakes, config: &Utf8Path, inmanta_config: &Utf8Path, extra: &[&str]) -> crate::support::Run {
    let mut args = vec!["--config", config.as_str(), "init", "--old-api"];
    let (old, new) = (f.old.url(), f.new.url());
    args.extend([old.as_str(), "--new-api", new.as_str(), "--inmanta-config", inmanta_config.as_str()]);
    args.extend(extra);
    Test::new(f.path()).args(args).run()
}

#[test]
fn init_writes_what_it_finds_marks_the_rest_and_keeps_secrets_out() {
    let f = Fakes::new(Flavor::V11, Flavor::V14);
    let etc = f.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("inmanta.cfg"),
        "[database]\nhost=db.example.com\nusername=inmanta\npassword=SeCrEt-VaLuE\n",
    )
    .unwrap();
    let config = f.path().join("first.toml");

    init(&f, &config, &etc, &[])
        .success()
        .stdout_has("NOT FOUND to fill in")
        .stdout_has("NOT FOUND: inmanta-server.service on this machine");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("answers: inmanta-core 11.5.5"), "{text}");
    assert!(text.contains(&format!("inmanta_config = \"{etc}\"")), "{text}");
    assert!(text.contains("# host, user, password in"), "names what inmanta.cfg holds:\n{text}");
    assert!(!text.contains("SeCrEt-VaLuE"), "no secret value:\n{text}");
    assert!(text.contains("# NOT FOUND: inmanta-server.service"), "no systemd here:\n{text}");
    // The tool reads it: `check` gets past the config (its other checks may fail).
    let check = Test::new(f.path()).config(&config).args(["check", "--json"]).run();
    assert_ne!(check.code, 2, "init's config is valid:\n{}", check.stderr);

    // Never replaced without --force.
    let again = init(&f, &config, &etc, &[]);
    again.code(2);
    snapshot_human!("config_exists", &again, f.path());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

    // A token the API asks for, and an inmanta.cfg that is not there.
    f.old.require_token("t");
    init(&f, &config, &f.path().join("nowhere"), &["--force"]).success();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("token = { file = \"/etc/inmanta-migrate/old-token\" }"), "{text}");
    assert!(text.contains("# NOT FOUND: the server's database settings"), "{text}");
    assert!(text.contains("# password = { file ="), "where a password goes, commented:\n{text}");
    migrate_core::Config::parse(&text, &config).unwrap_or_else(|e| panic!("{e}\n{text}"));

    // A server started with `-c FILE`: the file itself.
    let file = etc.join("inmanta.cfg");
    init(&f, &config, &file, &["--force"]).success();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("inmanta_config = \"{file}\"")) && text.contains("# host, user, password in"),
        "{text}"
    );
}
