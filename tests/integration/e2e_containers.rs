//! Inmanta's container install as the NEW side (`lab up --systemd
//! --new-containers`): on its booted machine, user `inmanta` (lingering)
//! runs the 20.1.0 server and PostgreSQL 17 as podman quadlets, managed by
//! `systemctl --user`; the tool reaches that user by ssh (`[new.host]`,
//! `[new.service] user = true`) and PostgreSQL on the port the database's
//! quadlet publishes on 127.0.0.1. The OLD side is a booted machine with
//! the system unit `inmanta-server.service`. The images are the lab's own
//! (its Debian 13 root and venv): Inmanta's registries are out of reach.
//! Ignored by plain `cargo test`; `cargo xtask ci` runs it.

use lab::{EnvRole, Security, Side, UpOptions};

use crate::support::lab::{alone, assert_migrated, lab_from, pg_majors};

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_19_0_on_a_machine_into_20_1_in_containers() {
    let _alone = alone();
    let options = UpOptions {
        name: "e2e-containers".into(),
        old: "19.0.0".into(),
        new: "20.1.0".into(),
        systemd: true,
        new_containers: true,
        ..UpOptions::default()
    };
    let lab = lab_from(options, Security::Plain);
    assert!(lab.in_containers(Side::New));
    assert_eq!(pg_majors(&lab), (17, 17));
    let before = lab.environments(Side::Old);

    // The version from the image (podman run over ssh as inmanta), the
    // stopped quadlet from inmanta's user manager.
    lab.run(&["check"])
        .success()
        .output_has("new server version: inmanta-core 20.1.0 installed")
        .output_has("new server stopped: its API does not answer and its service is stopped");
    // Without the published port (here: a port nothing listens on), check
    // says which line publishes it.
    let closed = lab.ports().rehearsal;
    let unpublished =
        lab.config_variant("db-unpublished", |t| crate::support::set(t, "new.database.port", closed as i64));
    crate::support::run(&mut lab.tool_at(&unpublished, &["check"], &[])).code(3).output_has(&format!(
        "add `PublishPort=127.0.0.1:{closed}:5432` to the [Container] section of inmanta-db.container"
    ));
    // The rehearsal's settings would stay with podman, outside the server.
    lab.run(&["rehearse"])
        .code(3)
        .output_has("runs the server in a container")
        .output_has("systemd user unit inmanta-server.service on inmanta@127.0.0.1");
    assert_eq!(
        lab.psql(Side::New, "inmanta", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").unwrap(),
        "0"
    );

    for step in ["halt-all", "stop-server", "dump", "restore"] {
        lab.run(&[step]).success();
    }
    assert!(!lab.server_running(Side::Old), "stop-server stopped the old system unit");
    assert_eq!(lab.fingerprints(Side::Old), lab.fingerprints(Side::New), "restored through the published port");
    let (active, _) = lab.container_state(Side::New).unwrap();
    assert_eq!(active, "inactive", "the new server's quadlet is not started before start-server");

    let started = lab.run(&["start-server", "--json"]);
    started.success().output_has("systemd user unit inmanta-server.service on inmanta@127.0.0.1");
    assert_eq!(started.json()["figures"]["core_version"], "20.1.0");
    assert!(started.json()["figures"]["schema_migrations"].as_u64().unwrap() > 0, "19.0 -> 20.1 migrates the schema");
    let (active, ps) = lab.container_state(Side::New).unwrap();
    assert_eq!(active, "active", "started through inmanta's user manager");
    let published = format!("inmanta-server 127.0.0.1:{}->8888/tcp", lab.ports().server(Side::New));
    assert!(ps.lines().any(|l| l == published), "{published} in:\n{ps}");
    assert!(ps.lines().any(|l| l.starts_with("inmanta-db ")), "{ps}");

    let reconciled = lab.run(&["env-reconcile", "--json"]);
    match lab.envs().iter().find(|e| e.role == EnvRole::Protected) {
        // Left halted for an operator, as on any install.
        Some(protected) => {
            reconciled.code(3).stderr_has("--accept-protected");
            lab.run(&["env-reconcile", "--env", &protected.name, "--accept-protected"]).success();
        }
        None => {
            reconciled.success();
        }
    }
    assert_migrated(&lab, &before, &lab.reconciled(), false);
    assert_eq!(lab.client(Side::New).unwrap().server_version().unwrap(), "20.1.0", "the container's API answers");
    for step in ["start-server", "env-reconcile"] {
        lab.run(&[step]).success().stdout_has("nothing to do");
    }
    // As an operator would after the window: the quadlet stopped and
    // started again through inmanta's user manager, the container gone and
    // back, the API answering.
    lab.stop_server(Side::New).unwrap();
    assert!(!lab.server_running(Side::New), "no server container left");
    let (active, ps) = lab.container_state(Side::New).unwrap();
    assert_eq!(active, "inactive");
    assert!(!ps.contains("inmanta-server"), "{ps}");
    lab.start_server(Side::New).unwrap();
    assert_eq!(lab.container_state(Side::New).unwrap().0, "active");
    assert_eq!(lab.client(Side::New).unwrap().server_version().unwrap(), "20.1.0");
    eprintln!("19.0.0 (system unit) -> 20.1.0 (containers); lab timings:\n{}", lab.timings().table());
}
