//! Brings real lab instances up and down. Needs root, PostgreSQL and the
//! network to PyPI the first time (venvs); run with
//! `cargo test -p lab -- --ignored`.

// Tooling: the tests run psql and the lab's scripts themselves.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lab::{
    Access, Client, EnvRole, Instance, LabRoot, ModelVariant, Security, Side, TokenKind, UpOptions, pid_alive,
    port_is_free,
};
use serde_json::json;

/// One instance at a time: the machine has 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Purges the instance when the test ends, also on panic.
struct Cleanup(Option<Instance>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(inst) = self.0.take()
            && let Err(e) = inst.down(true)
        {
            eprintln!("cleanup of {}: {e:#}", inst.name());
        }
    }
}

fn fresh_instance(name: &str, old: &str) -> Cleanup {
    let options = UpOptions { name: name.to_string(), old: old.to_string(), ports: None, ..UpOptions::default() };
    replace_instance(&options, Security::Plain)
}

/// The instance `options` say, replacing one of the same name.
fn replace_instance(options: &UpOptions, security: Security) -> Cleanup {
    let root = LabRoot::from_env().unwrap();
    if let Ok(prev) = Instance::open(&root, &options.name) {
        prev.down(true).unwrap();
    }
    Cleanup(Some(lab::up_with(&root, options, security).unwrap()))
}

fn wait_all_deployed(api: &Client, env: &str) {
    let t0 = Instant::now();
    loop {
        let res = api.resources(env).unwrap();
        let statuses: Vec<&str> = res.iter().map(|r| r["status"].as_str().unwrap_or("")).collect();
        if !statuses.is_empty() && statuses.iter().all(|s| *s == "deployed") {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(180), "resources of {env} not deployed: {statuses:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The seeded variety, read through the real API of the OLD server.
fn check_seeded_variety(inst: &Instance) {
    let api = inst.client(Side::Old).unwrap();
    assert_eq!(api.server_version().unwrap(), inst.version(Side::Old));
    let listed: BTreeSet<String> =
        api.environments().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    let recorded: BTreeSet<String> = inst.envs().iter().map(|e| e.id.clone()).collect();
    assert_eq!(listed, recorded);
    assert_eq!(inst.envs().len(), lab::DEFAULT_ENVS);
    let roles: BTreeSet<String> = inst.envs().iter().map(|e| format!("{:?}", e.role)).collect();
    assert_eq!(roles.len(), 4, "every role is seeded: {roles:?}");

    for e in inst.envs() {
        let versions = api.versions(&e.id).unwrap();
        let released: Vec<i64> =
            versions.iter().filter(|v| v["released"] == json!(true)).map(|v| v["version"].as_i64().unwrap()).collect();
        let unreleased: Vec<i64> =
            versions.iter().filter(|v| v["released"] == json!(false)).map(|v| v["version"].as_i64().unwrap()).collect();
        assert!(released.len() >= 2, "{}: released {released:?}", e.name);
        let halted = api.halted(&e.id).unwrap();
        let auto_deploy = api.setting(&e.id, "auto_deploy").unwrap();
        match e.role {
            EnvRole::Halted => assert!(halted, "{} is halted", e.name),
            EnvRole::ManualDeploy => {
                assert!(!halted);
                assert_eq!(auto_deploy, json!(false), "{}: auto_deploy", e.name);
                let newest = released.iter().max().unwrap();
                assert!(
                    unreleased.iter().any(|v| v > newest),
                    "{}: an unreleased candidate newer than {newest}: {unreleased:?}",
                    e.name
                );
            }
            EnvRole::Tuned => {
                assert!(!halted);
                assert_eq!(auto_deploy, json!(true));
                assert_eq!(api.setting(&e.id, "resource_action_logs_retention").unwrap(), json!(30));
                assert_eq!(api.setting(&e.id, "autostart_agent_deploy_interval").unwrap(), json!("300"));
            }
            EnvRole::Plain => {
                assert!(!halted);
                assert_eq!(auto_deploy, json!(true));
            }
            EnvRole::Protected | EnvRole::PausedAgent => {
                panic!("{}: {:?} is seeded on 15.3+ only, this lab runs {}", e.name, e.role, inst.version(Side::Old))
            }
        }
        assert_eq!(halted, e.halted);
        if !halted {
            wait_all_deployed(&api, &e.id);
        }
        assert!(api.resources(&e.id).unwrap().len() >= 2);
    }
    // Deploys left resource action logs.
    let actions: i64 = inst.psql(Side::Old, "inmanta", "SELECT count(*) FROM resourceaction").unwrap().parse().unwrap();
    assert!(actions > 0, "resource action logs");
    // The library's own check agrees.
    inst.verify_seed().unwrap();
}

fn mode(path: &camino::Utf8Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn check_config(inst: &Instance) {
    let text = std::fs::read_to_string(inst.config_path()).unwrap();
    let cfg: toml::Table = text.parse().unwrap();
    assert_eq!(cfg["work_dir"].as_str(), Some(inst.work_dir().as_str()));
    assert_eq!(cfg["pg"]["bin_dir"].as_str(), Some(inst.pg_bin_dir().as_str()));
    assert!(inst.pg_bin_dir().join("pg_dump").exists());
    for side in Side::BOTH {
        let s = &cfg[side.as_str()];
        assert_eq!(s["api_url"].as_str(), Some(inst.api_url(side).as_str()));
        let vc = s["version_command"].as_array().unwrap();
        assert!(vc[0].as_str().unwrap().ends_with("/bin/inmanta"));
        let svc = &s["service"];
        assert_eq!(svc["manager"].as_str(), Some("command"));
        for action in ["start", "stop", "status"] {
            let argv = svc[action].as_array().unwrap();
            assert_eq!(argv[0].as_str(), Some(inst.ctl_path(side).as_str()));
            assert_eq!(argv[1].as_str(), Some(action));
        }
        assert_eq!(svc["log_file"].as_str(), Some(inst.server_log(side).as_str()));
        let db = &s["database"];
        assert_eq!(db["host"].as_str(), Some("127.0.0.1"));
        assert_eq!(db["port"].as_integer(), Some(i64::from(inst.ports().pg(side))));
        assert_eq!(db["name"].as_str(), Some("inmanta"));
        assert_eq!(db["user"].as_str(), Some("inmanta"));
        assert_eq!(db["admin_user"].as_str(), Some("postgres"));
        let pw_file = camino::Utf8PathBuf::from(db["password"]["file"].as_str().unwrap());
        let admin_file = camino::Utf8PathBuf::from(db["admin_password"]["file"].as_str().unwrap());
        assert_eq!(mode(&pw_file), 0o600);
        assert_eq!(mode(&admin_file), 0o600);
        assert_eq!(std::fs::read_to_string(&pw_file).unwrap().trim(), inst.db_password(side).unwrap());
        assert_eq!(mode(&inst.side_dir(side).join("server.cfg")), 0o600);
    }
    let secrets = inst.secret_values();
    assert_eq!(secrets.len(), 4);
    for s in &secrets {
        assert_ne!(s, "inmanta");
        assert!(!text.contains(s.as_str()), "a secret is in the tool config");
    }
    let status = serde_json::to_string(&inst.status()).unwrap();
    for s in &secrets {
        assert!(!status.contains(s.as_str()), "a secret is in the status");
    }
}

/// PostgreSQL over TCP really checks passwords.
fn psql_tcp(inst: &Instance, port: u16, user: &str, password: &str) -> bool {
    std::process::Command::new(inst.pg_bin_dir().join("psql"))
        .args(["-X", "-At", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", "postgres", "-c", "select 1"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap()
        .status
        .success()
}

fn check_new_side(inst: &Instance) {
    assert!(inst.postgres_running(Side::New));
    assert!(!inst.server_running(Side::New));
    assert!(port_is_free(inst.ports().server_new));
    let tables = inst
        .psql(Side::New, "inmanta", "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        .unwrap();
    assert_eq!(tables, "0", "the NEW database is empty");
    let err = inst.start_server(Side::New).unwrap_err();
    assert!(err.to_string().contains("empty database"), "{err:#}");
    assert!(!inst.server_running(Side::New));

    for side in Side::BOTH {
        let port = inst.ports().pg(side);
        assert!(psql_tcp(inst, port, "postgres", &inst.admin_password(side).unwrap()));
        assert!(!psql_tcp(inst, port, "postgres", "wrong-password"));
        assert!(!psql_tcp(inst, port, "inmanta", "inmanta"));
    }
    // The ctl scripts answer like the config promises.
    let ctl =
        |side: Side| std::process::Command::new(inst.ctl_path(side)).arg("status").output().unwrap().status.code();
    assert_eq!(ctl(Side::Old), Some(0));
    assert_eq!(ctl(Side::New), Some(3));
}

/// push_model variants behave as documented, on the OLD server.
fn check_model_variants(inst: &Instance) {
    let api = inst.client(Side::Old).unwrap();
    let env = inst.env("plain").unwrap().id.clone();
    let timeout = Duration::from_secs(600);

    inst.push_model("plain", ModelVariant::WithDifferences).unwrap();
    let o = api.compile(&env, true, timeout).unwrap();
    assert!(o.success, "{}", o.failure);
    let v = o.version.unwrap();
    let report = api.dryrun_and_wait(&env, v, Duration::from_secs(120)).unwrap();
    let purged = report["diff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["resource_id"].as_str().unwrap().contains("res-purged"))
        .unwrap_or_else(|| panic!("no res-purged in {report}"));
    assert_eq!(purged["status"], json!("deleted"), "{report}");

    inst.push_model("plain", ModelVariant::Broken).unwrap();
    let o = api.compile(&env, true, timeout).unwrap();
    assert!(!o.success, "a broken model must not compile");
    assert!(!o.failure.is_empty());

    inst.push_model("plain", ModelVariant::Normal).unwrap();
    let o = api.compile(&env, true, timeout).unwrap();
    assert!(o.success, "{}", o.failure);

    assert!(inst.push_model("no-such-env", ModelVariant::Normal).is_err());
}

fn check_down(mut cleanup: Cleanup) {
    let inst = cleanup.0.take().unwrap();
    let pids = inst.lab_pids();
    assert!(pids.len() >= 3, "servers and postmasters: {pids:?}");
    for side in Side::BOTH {
        assert!(pids.contains(&inst.postgres_pid(side).unwrap()));
    }
    assert!(pids.contains(&inst.server_pid(Side::Old).unwrap()));
    let ports = inst.ports();
    inst.down(false).unwrap();
    for p in &pids {
        assert!(!pid_alive(*p), "pid {p} still runs after down");
    }
    assert!(inst.lab_pids().is_empty());
    for (what, port) in ports.named() {
        assert!(port_is_free(port), "{what} port {port} still held");
    }
    let status = inst.status();
    assert!(!status.old.server.running && !status.old.postgres.running);
    assert!(!status.new.server.running && !status.new.postgres.running);
    // down is idempotent; purge removes the instance but not the cache.
    inst.down(true).unwrap();
    assert!(!inst.dir().exists());
    assert!(inst.root().venv_dir(inst.version(Side::Old)).exists());
}

#[test]
#[ignore = "needs real PostgreSQL and inmanta servers; run by cargo xtask ci"]
fn up_8_7_6_seeds_variety_and_down_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cleanup = fresh_instance("test-up-8", "8.7.6");
    let inst = cleanup.0.as_ref().unwrap();
    check_seeded_variety(inst);
    check_config(inst);
    check_new_side(inst);
    // Stopping and starting the pieces, as fault-injection tests will.
    inst.stop_server(Side::Old).unwrap();
    assert!(!inst.server_running(Side::Old));
    inst.stop_postgres(Side::New).unwrap();
    assert!(!inst.postgres_running(Side::New));
    inst.start_postgres(Side::New).unwrap();
    inst.start_server(Side::Old).unwrap();
    check_model_variants(inst);
    check_down(cleanup);
}

#[test]
#[ignore = "needs real PostgreSQL and inmanta servers; run by cargo xtask ci"]
fn up_11_5_5_seeds_variety() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cleanup = fresh_instance("test-up-11", "11.5.5");
    let inst = cleanup.0.as_ref().unwrap();
    check_seeded_variety(inst);
    check_config(inst);
    check_new_side(inst);
    check_down(cleanup);
}

#[test]
#[ignore = "needs real PostgreSQL and inmanta servers; run by cargo xtask ci"]
fn secure_8_7_6_seeds_under_auth_and_tls() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = "test-up-secure";
    // Fresh, so the compiles (the server hands them --ssl, its CA and a
    // token) and the deploys of autostarted agents run under auth and TLS.
    // One environment keeps it short.
    let options = UpOptions { name: name.into(), old: "8.7.6".into(), envs: 1, fresh: true, ..UpOptions::default() };
    let cleanup = replace_instance(&options, Security::Secure);
    let inst = cleanup.0.as_ref().unwrap();
    assert!(inst.is_secure() && !inst.from_template());
    let env = &inst.envs()[0];
    assert_eq!(env.role, EnvRole::Plain);
    assert!(env.released_versions.len() >= 2, "{env:?}");
    inst.verify_seed().unwrap();

    // Keys and tokens are private; the server config holds the signing key.
    let secrets_dir = inst.dir().join("secrets");
    assert_eq!(mode(&secrets_dir), 0o700);
    for f in ["ca-key.pem", "server-key.pem", "jwt-key", "old-token", "new-token"] {
        assert_eq!(mode(&secrets_dir.join(f)), 0o600, "{f}");
    }
    let secrets = inst.secret_values();
    assert_eq!(secrets.len(), 9, "4 passwords, 2 tokens, the JWT key, 2 private keys");
    let jwt_key = std::fs::read_to_string(secrets_dir.join("jwt-key")).unwrap();
    for side in Side::BOTH {
        let cfg = std::fs::read_to_string(inst.side_dir(side).join("server.cfg")).unwrap();
        assert!(cfg.contains(&format!("key={}\n", jwt_key.trim())), "the same signing key on both sides");
        assert!(cfg.contains("auth=true\n"));
        assert_eq!(cfg.contains("auth_method=jwt\n"), side == Side::New, "{side}: only 11+ knows jwt");
    }
    let config = std::fs::read_to_string(inst.config_path()).unwrap();
    let status = serde_json::to_string(&inst.status()).unwrap();
    for s in &secrets {
        assert!(!config.contains(s.as_str()), "a secret is in the tool config");
        assert!(!status.contains(s.as_str()), "a secret is in the status");
    }

    // The server takes the lab's tokens and refuses bad ones.
    let url = inst.api_url(Side::Old);
    let ca = std::fs::read(inst.ca_file().unwrap()).unwrap();
    let with = |token: Option<String>| {
        Client::with_access(&url, Duration::from_secs(10), &Access { ca_pem: Some(ca.clone()), token })
            .unwrap()
            .environments()
    };
    assert_eq!(with(Some(inst.token(Side::Old).unwrap())).unwrap().len(), 1);
    assert_eq!(with(Some(inst.token(Side::New).unwrap())).unwrap().len(), 1, "one key for both sides");
    assert_eq!(with(Some(inst.mint_token(TokenKind::Valid).unwrap())).unwrap().len(), 1);
    for kind in [TokenKind::Expired, TokenKind::WrongKey] {
        let err = format!("{:#}", with(Some(inst.mint_token(kind).unwrap())).unwrap_err());
        assert!(err.contains("HTTP 403"), "{kind:?}: {err}");
    }
    let err = format!("{:#}", with(None).unwrap_err());
    assert!(err.contains("HTTP 401"), "{err}");
    let err = format!("{:#}", Client::new(&url).unwrap().environments().unwrap_err());
    assert!(err.contains("certificate"), "no CA: {err}");

    check_down(cleanup);
}

/// Each side a booted machine: its PostgreSQL and server are units there,
/// seen from here with this machine's pids; stopping and starting them goes
/// through systemd; `down` powers the machines off and leaves nothing.
#[test]
#[ignore = "needs real PostgreSQL and inmanta servers; run by cargo xtask ci"]
fn systemd_machines_run_the_sides_as_units_and_down_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = "test-up-systemd";
    let opts = UpOptions {
        name: name.into(),
        old: "19.0.0".into(),
        new: "20.1.0".into(),
        systemd: true,
        ..UpOptions::default()
    };
    let cleanup = replace_instance(&opts, Security::Plain);
    let inst = cleanup.0.as_ref().unwrap();
    let status = inst.status();
    assert_eq!(status.old.machine, lab::Machine::Booted);
    assert_eq!(status.old.machine_name.as_deref(), Some("imm-test-up-systemd-old"));
    let config = std::fs::read_to_string(inst.config_path()).unwrap();
    assert_eq!(config.matches("manager = \"systemd\"").count(), 2, "both sides are systemd units:\n{config}");

    // The OLD server is the unit's main process, in the machine's own pid
    // namespace, known here by this machine's pid.
    let pid = inst.server_pid(Side::Old).expect("the OLD server runs");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap().replace('\0', " ");
    assert!(cmdline.contains(inst.side_dir(Side::Old).join("server.cfg").as_str()), "{cmdline}");
    let ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_ne!(ns(pid), ns(std::process::id()), "it runs in the machine's pid namespace");
    assert_eq!(inst.client(Side::Old).unwrap().server_version().unwrap(), "19.0.0");

    inst.stop_server(Side::Old).unwrap();
    assert!(!inst.server_running(Side::Old));
    assert!(!pid_alive(pid));
    inst.stop_postgres(Side::New).unwrap();
    assert!(!inst.postgres_running(Side::New));
    assert!(port_is_free(inst.ports().pg_new), "the unit's stop ended the postmaster");
    inst.start_postgres(Side::New).unwrap();
    assert!(inst.psql(Side::New, "inmanta", "SELECT 1").is_ok());
    inst.start_server(Side::Old).unwrap();
    check_down(cleanup);
}
