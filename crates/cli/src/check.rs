//! `check`: the preflight. Everything that can be verified before anything
//! changes, every failure reported with the next step to take.

use inmanta_api::ServerVersion;
use migrate_core::{Checks, ChecksFailed, Context, Outcome, Side, config::CopyMode, probe, service::Service};
use migrate_pg::Database;

#[derive(Debug, Default, clap::Args)]
pub struct CheckArgs {
    /// Accept a new database that already holds data (restore will be run
    /// with --replace and drop it).
    #[arg(long)]
    pub replace: bool,
}

pub async fn run(cx: &Context, args: &CheckArgs) -> anyhow::Result<Outcome> {
    let checks = preflight(cx, args.replace).await;
    // The checks are check's result: stdout for a person (`check > file`
    // keeps them), JSON events and the document's items for a script.
    if cx.ui.is_json() {
        checks.report(&cx.ui, "check");
    } else {
        print!("{}", checks.lines());
    }
    if checks.failed() {
        return Err(ChecksFailed(checks).into());
    }
    let warnings = checks.items.iter().filter(|c| c.status == migrate_core::CheckStatus::Warn).count();
    Ok(Outcome::done("check", format!("{} checks passed, {warnings} warning(s)", checks.items.len())).details(checks))
}

pub async fn preflight(cx: &Context, replace: bool) -> Checks {
    let mut checks = Checks::default();
    checks.pass("config", format!("{} is valid", cx.config.path));

    // APIs and versions.
    let old_api = probe::api(cx, Side::Old, &mut checks).await;
    let old = old_api.as_ref().map(|(s, _)| s.core_version);
    // The environments that will run on the new server (halted ones stay halted).
    let running = old_api.as_ref().map(|(_, envs)| envs.iter().filter(|e| !e.halted).count() as u32);
    let new = new_server(cx, &mut checks).await;
    if let (Some(old), Some(new)) = (old, new) {
        probe::versions(old, new, &cx.config.intermediate_versions(), true, &mut checks);
    }

    // Services.
    for side in [Side::Old, Side::New] {
        let service = Service::new(cx.config.side(side));
        match service.state().await {
            Ok(state) => checks.pass(format!("{side} service"), format!("{}: {state}", service.describe())),
            Err(e) => {
                let fix = if cx.config.side(side).host.ssh.is_some() {
                    format!("fix `{side}.host` (ssh) or `{side}.service`")
                } else {
                    format!("fix `{side}.service`")
                };
                checks.fail_on(format!("{side} service"), &e, fix)
            }
        }
    }
    // The way back starts the old server again through the same unit.
    let old_service = Service::new(&cx.config.old);
    match old_service.installed().await {
        Ok(Some(true)) => {
            checks.pass("way back", format!("{} is installed: rollback can start it", old_service.describe()))
        }
        Ok(Some(false)) => checks.fail(
            "way back",
            format!("{} is not installed", old_service.describe()),
            "fix `old.service.unit`: stop-server and rollback stop and start the old server through it",
        ),
        Ok(None) => checks.pass("way back", "rollback starts the old server with `old.service.start`"),
        Err(e) => checks.fail_on("way back", &e, "fix `old.service`"),
    }

    step_carry::preflight(cx, &mut checks).await;
    tokens(cx, &mut checks).await;

    // Databases and tools.
    let old_db = database(cx, Side::Old, &mut checks).await;
    let new_db = database(cx, Side::New, &mut checks).await;
    if let (Some((odb, _)), Some((ndb, _))) = (&old_db, &new_db)
        && odb.target.same_database(&ndb.target)
    {
        checks.fail(
            "databases",
            format!("old and new are the same database {}", odb.target),
            "point `new.database` at the new one",
        );
    }
    if let Some((db, old_pg)) = &old_db {
        // Before anything changes: would the new server (and each
        // intermediate) know the old database's schema? (restore checks
        // the dump again.)
        match db.schema_versions().await {
            Ok(versions) => match versions.get("core").and_then(|v| v.iter().max().copied()) {
                Some(newest) => probe::schema_chain(cx, newest, "the old database", new, &mut checks),
                None => checks.fail(
                    "database schema",
                    format!("{} holds no Inmanta schema", db.target),
                    "check `old.database`: is this the orchestrator's database?",
                ),
            },
            Err(e) => checks.fail_on("database schema", &e, "check `old.database`"),
        }
        let floor = Some((*old_pg, format!("the old PostgreSQL {old_pg}")));
        db.check_tools(&["pg_dump", "pg_restore", "psql", "vacuumdb"], floor, &mut checks).await;
        if cx.config.copy.mode == CopyMode::Offline {
            step_dump::check_space(cx, db, &mut checks).await;
        }
    }
    if let (Some((_, old_pg)), Some((_, new_pg))) = (&old_db, &new_db) {
        if new_pg < old_pg {
            checks.fail(
                "PostgreSQL versions",
                format!("the new PostgreSQL {new_pg} is older than the old {old_pg}"),
                "use a PostgreSQL of the same or a newer major version on the new side",
            );
        }
        probe::postgres_for(new, *new_pg, &mut checks);
    }
    if let (Some(version), Some(running), Some((db, _))) = (new, running, &new_db) {
        match db.connection_slots().await {
            Ok(slots) => probe::new_connections(version, &db.target.pools, running, slots, &mut checks),
            Err(e) => checks.fail_on("PostgreSQL connections", &e, "check `new.database.admin_user`"),
        }
    }
    match (cx.config.copy.mode, &old_db, &new_db) {
        (CopyMode::Offline, _, Some((new, _))) => step_restore::check_target(cx, new, replace, &mut checks).await,
        (CopyMode::Online, Some((old, _)), Some((new, _))) => {
            step_online::check_online(cx, old, new, &mut checks).await
        }
        _ => {}
    }

    // Work and dump directories.
    let mut probe_dir = cx.config.work_dir.clone();
    while !probe_dir.exists() {
        match probe_dir.parent() {
            Some(p) => probe_dir = p.to_owned(),
            None => break,
        }
    }
    match tempfile::tempfile_in(&probe_dir) {
        Ok(_) => checks.pass("work directory", format!("{} is writable", cx.config.work_dir)),
        Err(e) => checks.fail(
            "work directory",
            format!("cannot write in {probe_dir}: {e}"),
            "fix `work_dir` or its permissions",
        ),
    }
    if cx.config.copy.mode == CopyMode::Offline {
        step_dump::check_dir(cx, &mut checks);
    }
    checks
}

/// The new server: stopped (as it must be before restore), and its version
/// from `version_command` (or from its API if it runs after all).
async fn new_server(cx: &Context, checks: &mut Checks) -> Option<ServerVersion> {
    if let Some(answering) = probe::new_server_stopped(cx, checks).await {
        return Some(answering);
    }
    probe::installed_new_version(cx, checks).await
}

/// Connects to one side's database (the admin role for the new side, whose
/// database may not exist yet) and reads the PostgreSQL major version.
/// Whether the new server will accept the tokens the old one accepts
/// (agents', scripts' and this tool's): the same `[auth_jwt_*]` keys and
/// issuers, read from each server's own config.
async fn tokens(cx: &Context, checks: &mut Checks) {
    let name = "tokens";
    let config = |side: Side| cx.config.side(side).database.inmanta_config.clone();
    let (Some(old_dir), Some(new_dir)) = (config(Side::Old), config(Side::New)) else {
        if cx.config.old.token.is_some() {
            checks.warn(
                name,
                "not compared: the old server asks for tokens, and the tool reads no server config on both sides",
                "set `old.database.inmanta_config` and `new.database.inmanta_config` to each server's config folder, \
                 so check compares their [auth_jwt_*] sections",
            );
        }
        return;
    };
    let read = |side: Side, dir: camino::Utf8PathBuf| async move {
        migrate_core::inmanta_cfg::read(&dir, &cx.runner(side)).await.map(|c| c.auth)
    };
    let (old, new) = match (read(Side::Old, old_dir).await, read(Side::New, new_dir).await) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(e), _) => return checks.fail_on(name, &e, "fix `old.database.inmanta_config`"),
        (_, Err(e)) => return checks.fail_on(name, &e, "fix `new.database.inmanta_config`"),
    };
    let refused = migrate_core::inmanta_cfg::tokens_refused_by_new(&old, &new);
    if old.enabled != Some(true) {
        checks.pass(name, "the old server asks for no token");
    } else if refused.is_empty() {
        let sections: Vec<String> = old.jwt.keys().map(|s| format!("[auth_jwt_{s}]")).collect();
        checks.pass(name, format!("the new server validates the old one's tokens: {} alike", sections.join(", ")));
    } else {
        checks.fail(
            name,
            format!("the new server would refuse the old one's tokens: {}", refused.join("; ")),
            "give the new server the old one's [auth_jwt_*] sections (issuer, algorithm, key): `[carry] files` \
             copies its inmanta.d/ file",
        );
    }
}

async fn database(cx: &Context, side: Side, checks: &mut Checks) -> Option<(Database, u32)> {
    let name = format!("{side} database");
    let db = match Database::open(&cx.config, side).await {
        Ok(db) => db,
        Err(e) => {
            checks.fail_on(name, &e, format!("fix `{side}.database`"));
            return None;
        }
    };
    match db.server_version(side == Side::New).await {
        Ok((v, major)) => {
            checks.pass(name, format!("{} answers: PostgreSQL {v}", db.target));
            Some((db, major))
        }
        Err(e) => {
            let failure = migrate_core::Failure::of(&e);
            if side == Side::New
                && cx.config.new.service.user
                && failure.kind == migrate_core::ErrorKind::DatabaseUnreachable
            {
                // Inmanta's container install reaches its database by
                // `podman exec` only: no port for this tool to connect to.
                let port = db.target.port;
                checks.fail(
                    name,
                    failure.message,
                    format!(
                        "start PostgreSQL; on Inmanta's container install, publish its port for the migration: \
                         add `PublishPort=127.0.0.1:{port}:5432` to the [Container] section of inmanta-db.container, \
                         then `systemctl --user daemon-reload` and `systemctl --user restart inmanta-db.service`"
                    ),
                );
                return None;
            }
            checks.fail_on(name, &e, migrate_pg::unreachable_next_step(&side.to_string(), &e));
            None
        }
    }
}
