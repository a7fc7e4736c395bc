//! Checks that several steps (and `check`) share.

use inmanta_api::{Environment, ServerStatus, ServerVersion};

use crate::{
    checks::Checks,
    config::Side,
    context::Context,
    service::{ProcessState, Service},
};

/// The API of `side` answers, accepts our token and lists environments.
/// Records the outcome in `checks`; returns what it learned.
pub async fn api(cx: &Context, side: Side, checks: &mut Checks) -> Option<(ServerStatus, Vec<Environment>)> {
    let client = cx.api(side);
    let name = format!("{side} API");
    let url = &cx.config.side(side).api_url;
    let status = match client.server_status().await {
        Ok(status) => status,
        Err(e) => {
            let next = match e.status() {
                Some(401 | 403) => format!("fix `{side}.token`"),
                Some(_) => format!("check `{side}.api_url`: is this an Inmanta server?"),
                None if e.is_tls() => format!("fix `{side}.ca_file` (or `{side}.api_url`)"),
                None => format!("start the {side} server or fix `{side}.api_url`"),
            };
            checks.fail(name, e.to_string(), next);
            return None;
        }
    };
    // serverstatus may answer without auth on some setups; listing
    // environments proves the token is accepted.
    match client.environments().await {
        Ok(envs) => {
            checks.pass(
                name,
                format!("{url} answers: inmanta-core {}, {} environment(s)", status.core_version, envs.len()),
            );
            Some((status, envs))
        }
        Err(e) => {
            checks.fail(name, e.to_string(), format!("use an unscoped token of client type `api` in `{side}.token`"));
            None
        }
    }
}

/// The new server is stopped: its API refuses connections and its service
/// manager does not report it running (a server migrating a schema has no
/// API yet, and must not see its database replaced either). Returns the
/// version of a server that answers.
pub async fn new_server_stopped(cx: &Context, checks: &mut Checks) -> Option<inmanta_api::ServerVersion> {
    let answering = new_server_alone_stopped(cx, checks).await;
    intermediates_stopped(cx, checks).await;
    answering
}

async fn new_server_alone_stopped(cx: &Context, checks: &mut Checks) -> Option<inmanta_api::ServerVersion> {
    let name = "new server stopped";
    let service = Service::new(&cx.config.new);
    let stop_it = format!("stop it first: {}", service.describe());
    match cx.api(Side::New).probe().await {
        Ok(Some(status)) => {
            checks.fail(
                name,
                format!(
                    "{} answers (inmanta-core {}): its database must not be replaced under it",
                    cx.config.new.api_url, status.core_version
                ),
                stop_it,
            );
            return Some(status.core_version);
        }
        Ok(None) => {}
        Err(e) => {
            checks.fail(name, format!("cannot tell whether it runs: {e}"), "check `new.api_url` and the new server");
            return None;
        }
    }
    match service.state().await {
        Ok(ProcessState::Running) => checks.fail(
            name,
            format!("its API is closed, but {} reports it running (migrating a schema?)", service.describe()),
            stop_it,
        ),
        Ok(state) => checks.pass(name, format!("its API does not answer and its service is {state}")),
        Err(e) => checks.fail_on(name, &e, "fix `new.service`"),
    }
    None
}

/// Every `[[intermediate]]` server is stopped too: they use the new
/// database (their API is the new one's unless they name their own).
async fn intermediates_stopped(cx: &Context, checks: &mut Checks) {
    for (i, via) in cx.config.intermediate.iter().enumerate() {
        let name = format!("intermediate {} stopped", via.version);
        let orch = via.orchestrator(&cx.config.new);
        let service = Service::new(&orch);
        match service.state().await {
            Ok(ProcessState::Running) => checks.fail(
                name,
                format!("{} reports it running: the new database must not be replaced under it", service.describe()),
                format!("stop it first: {}", service.describe()),
            ),
            Ok(state) => checks.pass(name, format!("its service is {state}")),
            Err(e) => checks.fail_on(name, &e, format!("fix `intermediate[{i}].service`")),
        }
    }
}

/// Jumps over a product major that this tool's end-to-end tests make
/// without an intermediate server (README's Versions table says which).
const PROVEN_SKIPS: [(&str, &str); 1] = [("8.7.6", "14.0.0")];

/// Inmanta's product releases and the inmanta-core major each ships
/// (shared/versions.md: each product branch's setup.py).
const PRODUCT_RELEASES: [(&str, u64); 4] = [("ISO7", 11), ("ISO8", 15), ("ISO9", 18), ("ISO10", 19)];

/// The new server's version against the old one's: a downgrade fails. A jump
/// over a product release is against Inmanta's rule (one product major at a
/// time): a warning naming the releases in between, unless `via` (the
/// `[[intermediate]]` versions) has a server of each.
/// `explain`: the whole reason of a skip warning (`check`), or one line
/// that points there (the steps that check it again).
pub fn versions(
    old: inmanta_api::ServerVersion,
    new: inmanta_api::ServerVersion,
    via: &[&str],
    explain: bool,
    checks: &mut Checks,
) {
    let name = "versions";
    let via_versions: Vec<inmanta_api::ServerVersion> = via.iter().filter_map(|v| v.parse().ok()).collect();
    let via_majors: Vec<u64> = via_versions.iter().map(|v| v.major).collect();
    // The server that would come right before a release of `major`.
    let before =
        |major: u64| std::iter::once(old).chain(via_versions.iter().copied()).filter(|v| v.major < major).max();
    // A major none of whose releases knows the schema of the server before
    // it cannot be gone through (open-source 19.0.0 predates 18.3's schema).
    let no_release_can_follow = |major: u64| {
        let newest_of_major = KNOWN_SCHEMA_MAX.iter().filter(|((m, _), _)| *m == major).map(|(_, s)| *s).max();
        match (before(major).and_then(known_schema_max), newest_of_major) {
            (Some(needed), Some(known)) => known < needed,
            _ => false,
        }
    };
    let skipped: Vec<String> = PRODUCT_RELEASES
        .iter()
        .filter(|(_, major)| old.major < *major && *major < new.major && !via_majors.contains(major))
        .filter(|(_, major)| !no_release_can_follow(*major))
        .map(|(product, major)| format!("{major}.x ({product})"))
        .collect();
    let through = if via.is_empty() { String::new() } else { format!(" through {}", via.join(", ")) };
    let out_of_order: Vec<&str> = via
        .iter()
        .copied()
        .filter(|v| v.parse::<inmanta_api::ServerVersion>().is_ok_and(|v| v < old || v > new))
        .collect();
    if !out_of_order.is_empty() {
        checks.fail(
            name,
            format!("intermediate server(s) {} not between the old {old} and the new {new}", out_of_order.join(", ")),
            "give [[intermediate]] servers newer than the old one and older than the new one, oldest first",
        );
    } else if new < old {
        checks.fail(
            name,
            format!("the new server ({new}) is older than the old one ({old}): a downgrade"),
            "install an inmanta-core at least as new as the old server's on the new machine",
        );
    } else if !skipped.is_empty() && !explain {
        checks.warn(
            name,
            format!("inmanta-core {old} -> {new}{through} skips {}", skipped.join(" and ")),
            "`inmanta-migrate check` says why that matters and what to do",
        );
    } else if !skipped.is_empty() {
        let pair = (old.to_string(), new.to_string());
        let proven = via.is_empty() && PROVEN_SKIPS.iter().any(|(o, n)| (*o, *n) == (pair.0.as_str(), pair.1.as_str()));
        let evidence = if proven {
            "this tool's tests migrate this exact pair end to end without one (README, Versions)"
        } else {
            "this tool has not proven this pair without one"
        };
        checks.warn(
            name,
            format!(
                "inmanta-core {old} -> {new}{through} skips {}. Inmanta's rule is one product major at a time, each \
                 on its latest release, because each major's schema migrations and upgrade notes start from the \
                 previous major's latest release: skipped, they run from a version they were not tested from; \
                 {evidence}",
                skipped.join(" and ")
            ),
            format!(
                "to follow the rule, add an [[intermediate]] server of {} (see config/example.toml); to skip, read \
                 the skipped majors' upgrade notes first",
                skipped.join(" and of ")
            ),
        );
    } else {
        checks.pass(name, format!("inmanta-core {old} -> {new}{through}"));
    }
}

/// What the new server needs of its PostgreSQL, from Inmanta's install docs
/// and CI (read in inmanta-core's sources; Inmanta declares minimums only):
/// 13 up to 14.x, 16 from 15.0 on (measured: 19.x and 20.x migrate their
/// schema on PostgreSQL 15, but their scheduler's SQL needs 16,
/// shared/lab-latest.md). Its CI tests 15+ on 16 and 17; PostgreSQL 18
/// changed an error class that 18.3.0 and 19.1.0 adapted to ("Fix
/// compatibility with PostgreSQL 18").
pub fn postgres_for(new: Option<inmanta_api::ServerVersion>, pg_major: u32, checks: &mut Checks) {
    use inmanta_api::ServerVersion as V;
    let name = "PostgreSQL for the new server";
    let adapted_to_18 = |v: V| v >= V::new(19, 1, 0) || (V::new(18, 3, 0)..V::new(19, 0, 0)).contains(&v);
    match new {
        Some(v) if v.major >= 15 && pg_major < 16 => checks.fail(
            name,
            format!("inmanta-core {v} needs PostgreSQL 16 or newer; the new database runs {pg_major}"),
            "upgrade the new PostgreSQL first",
        ),
        Some(v) if v.major < 15 && pg_major < 13 => checks.warn(
            name,
            format!("Inmanta's install docs for inmanta-core {v} ask for PostgreSQL 13 or newer; the new database runs {pg_major}"),
            "use PostgreSQL 13 or newer on the new side",
        ),
        Some(v) if pg_major >= 18 && v.major >= 15 && !adapted_to_18(v) => checks.warn(
            name,
            format!(
                "PostgreSQL {pg_major}: inmanta-core {v} predates Inmanta's fix for PostgreSQL 18 \
                 (in 18.3.0 and 19.1.0); Inmanta tests it on 16 and 17"
            ),
            "use PostgreSQL 17 on the new side, or a new version with the fix",
        ),
        Some(v) => checks.pass(name, format!("PostgreSQL {pg_major} serves inmanta-core {v}")),
        None if pg_major < 16 => checks.warn(
            name,
            format!("PostgreSQL {pg_major}: fine up to inmanta-core 14, too old for 15+; the new version is unknown"),
            "set `new.version_command` so this is checked",
        ),
        None => checks.pass(name, format!("PostgreSQL {pg_major}")),
    }
}

/// The inmanta-core the new machine has installed, from `version_command`
/// (the new server is stopped until start-server). Recorded in `checks`.
pub async fn installed_new_version(cx: &Context, checks: &mut Checks) -> Option<inmanta_api::ServerVersion> {
    let name = "new server version";
    match Service::new(&cx.config.new).installed_version().await {
        Some(Ok(v)) => {
            checks.pass(name, format!("inmanta-core {v} installed"));
            Some(v)
        }
        Some(Err(e)) => {
            checks.fail_on(name, &e, "fix `new.version_command`");
            None
        }
        None => {
            checks.warn(
                name,
                "unknown while the new server is stopped",
                "set `new.version_command` so a downgrade is refused before anything changes",
            );
            None
        }
    }
}

/// The highest core schema version each release line ships (from
/// `src/inmanta/db/versions` at each tag; 15.5 and 18.1-20.0 from the
/// newest patch's wheel on PyPI). Lines of maintenance releases get
/// backports, so a later release of an older line can be ahead of a newer
/// line: 15.5.9 of 16.0, 18.3/18.4 of 19.0.
const KNOWN_SCHEMA_MAX: &[((u64, u64), i64)] = &[
    ((8, 7), 202403220),
    ((11, 0), 202311170),
    ((11, 1), 202403220),
    ((11, 2), 202403220),
    ((11, 3), 202403280),
    ((11, 4), 202409090),
    ((11, 5), 202409090),
    ((12, 0), 202403220),
    ((13, 0), 202403280),
    ((14, 0), 202409090),
    ((15, 0), 202501140),
    ((15, 5), 202601080),
    ((16, 0), 202506160),
    ((17, 0), 202510150),
    ((18, 0), 202601270),
    ((18, 1), 202603040),
    ((18, 2), 202607130),
    ((18, 3), 202610050),
    ((18, 4), 202610150),
    ((19, 0), 202607130),
    ((20, 0), 202610050),
    ((20, 1), 202610150),
];

/// The newest core schema version a release knows, where the table says.
fn known_schema_max(v: ServerVersion) -> Option<i64> {
    KNOWN_SCHEMA_MAX.iter().find(|((ma, mi), _)| *ma == v.major && *mi == v.minor).map(|(_, m)| *m)
}

/// Walks the servers that start in turn on a database's schema: Err names the
/// first that would meet a schema version it does not know (that server,
/// the version, what it knows, and what left the version there).
fn walk_schema_chain(
    dump: i64,
    source: &str,
    chain: &[ServerVersion],
) -> Result<(), (ServerVersion, i64, i64, String)> {
    let (mut newest, mut left_by) = (dump, source.to_string());
    for &server in chain {
        let Some(max) = known_schema_max(server) else { continue };
        if newest > max {
            return Err((server, newest, max, left_by));
        }
        if max > newest {
            (newest, left_by) = (max, format!("the database after inmanta-core {server}"));
        }
    }
    Ok(())
}

/// Every server that starts in turn on a database whose newest core schema
/// version is `newest` (`source`: "the dump", "the old database"), the
/// `[[intermediate]]` servers then `new`, knows the schema the one before
/// leaves: Inmanta has no downgrade check, so a server that meets a newer
/// schema starts on it all the same.
pub fn schema_chain(cx: &Context, newest: i64, source: &str, new: Option<ServerVersion>, checks: &mut Checks) {
    let name = "database schema";
    let via = cx.config.intermediate_versions().into_iter().filter_map(|v| v.parse::<ServerVersion>().ok());
    let chain: Vec<ServerVersion> = via.chain(new).collect();
    match walk_schema_chain(newest, source, &chain) {
        Err((server, version, max, left_by)) => checks.fail(
            name,
            format!("{left_by} has core schema version {version}, newer than inmanta-core {server} knows ({max})"),
            if chain.last() == Some(&server) {
                "install a newer inmanta-core on the new machine".to_string()
            } else {
                format!("pick an intermediate of that line that knows {version}, or leave inmanta-core {server} out")
            },
        ),
        Ok(()) => checks.pass(name, format!("{source} has core schema version {newest}")),
    }
}

/// The database pool sizes an orchestrator's inmanta.cfg sets, each `None`
/// when left to the server's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pools {
    /// `[database] connection_pool_min_size` / `_max_size` (deprecated from 15.0).
    pub database: (Option<u32>, Option<u32>),
    /// `[server] db_connection_pool_min_size` / `_max_size` (15.0+).
    pub server: (Option<u32>, Option<u32>),
    /// `[scheduler] db_connection_pool_min_size` / `_max_size` (15.0+): each
    /// running environment's scheduler has a pool of its own.
    pub scheduler: (Option<u32>, Option<u32>),
}

/// The PostgreSQL connections a server opens, at start and at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections {
    pub at_start: u32,
    pub at_most: u32,
    /// Of `at_most`, what does not grow with the environments: the server's
    /// own pool and its singleton lock.
    pub server: u32,
}

/// The connections a server of `version` opens with `pools` and `running`
/// environments. Read in inmanta-core (server/config.py, agent/config.py,
/// agentmanager.py): up to 14.x one pool (`[database]`, 10..70); from 15.0
/// the server's pool (half the old one, 5..35, or the old key's value itself
/// where only that is set) and one per running environment's scheduler, in
/// a process of its own (1..7; a halted environment has none); from 18.2
/// one more for the singleton lock. A scheduler's pool is a tenth of the
/// `[database]` defaults whatever the server's `[database]` says: the
/// server passes the scheduler its `[scheduler]` keys, not the `[database]`
/// ones they default from (agentmanager.py, 15.5.9 to 20.1.0; measured:
/// with `[database] connection_pool_max_size = 10`, 50 environments of
/// 15.5.9 filled 98 connections and schedulers failed to start).
pub fn connections(version: inmanta_api::ServerVersion, pools: &Pools, running: u32) -> Connections {
    let (old_min, old_max) = pools.database;
    if version.major < 15 {
        let (at_start, at_most) = (old_min.unwrap_or(10), old_max.unwrap_or(70));
        return Connections { at_start, at_most, server: at_most };
    }
    let lock = u32::from(version >= inmanta_api::ServerVersion::new(18, 2, 0));
    let server_min = pools.server.0.or(old_min).unwrap_or(5) + lock;
    let server_max = pools.server.1.or(old_max).unwrap_or(35) + lock;
    let scheduler_min = pools.scheduler.0.unwrap_or(1);
    let scheduler_max = pools.scheduler.1.unwrap_or(7);
    Connections {
        at_start: server_min + running * scheduler_min,
        at_most: server_max + running * scheduler_max,
        server: server_max,
    }
}

/// Whether the new PostgreSQL has the connections the new server will open
/// (`slots`: what `max_connections` leaves to roles that are not
/// superusers). Measured: 50 environments of 11.5.5 on 15.5.9 ran out of
/// 100 slots; 20 used 54. A scheduler pool is never advised below
/// [`MIN_SCHEDULER_POOL`].
/// The smallest scheduler pool to advise. Measured on 15.5.9: with
/// `[scheduler] db_connection_pool_max_size = 1` a scheduler took the
/// dry-run request and never finished it (its one connection held).
pub const MIN_SCHEDULER_POOL: u32 = 2;

pub fn new_connections(
    version: inmanta_api::ServerVersion,
    pools: &Pools,
    running: u32,
    slots: u32,
    checks: &mut Checks,
) {
    let name = "PostgreSQL connections";
    let needs = connections(version, pools, running);
    // Room for the tool, psql and a DBA.
    let spare = 10;
    let pools_said = if version.major < 15 {
        "in one pool".to_owned()
    } else {
        format!("its own pool (up to {}) and one per running environment's scheduler", needs.server)
    };
    let said = format!(
        "inmanta-core {version} with {running} running environment(s) opens {} connection(s) at start, up to {} \
         under load ({pools_said}); the new PostgreSQL allows {slots}",
        needs.at_start, needs.at_most
    );
    let mut next = format!("set `max_connections` to {} or more (a PostgreSQL restart)", needs.at_most + spare);
    if version.major >= 15 && running > 0 {
        let per_scheduler = slots.saturating_sub(spare + needs.server) / running;
        if per_scheduler >= MIN_SCHEDULER_POOL {
            next.push_str(&format!(
                ", or `[scheduler] db_connection_pool_max_size = {per_scheduler}` in the new server's inmanta.cfg"
            ));
        }
    }
    if needs.at_start > slots {
        checks.fail(name, said, next);
    } else if needs.at_most > slots {
        checks.warn(name, said, next);
    } else {
        checks.pass(name, said);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(old: &str, new: &str, via: &[&str]) -> (String, String) {
        let mut checks = Checks::default();
        versions(old.parse().unwrap(), new.parse().unwrap(), via, true, &mut checks);
        let item = checks.items.pop().unwrap();
        (format!("{:?}", item.status).to_lowercase(), item.detail)
    }

    #[test]
    fn jumps_over_a_product_major_need_an_intermediate() {
        assert_eq!(verdict("11.5.5", "15.5.9", &[]).0, "pass", "ISO7 -> ISO8 is one step");
        assert_eq!(verdict("18.2.0", "19.0.0", &[]).0, "pass");
        let (status, detail) = verdict("11.5.5", "19.0.0", &[]);
        assert_eq!(status, "warn");
        assert!(detail.contains("skips 15.x (ISO8) and 18.x (ISO9)"), "{detail}");
        let (status, detail) = verdict("11.5.5", "19.0.0", &["15.5.9"]);
        assert_eq!(status, "warn");
        assert!(detail.contains("through 15.5.9 skips 18.x (ISO9)"), "{detail}");
        assert!(detail.contains("has not proven this pair"), "{detail}");
        let (status, detail) = verdict("8.7.6", "14.0.0", &[]);
        assert_eq!(status, "warn", "against the rule, though proven");
        assert!(detail.contains("skips 11.x (ISO7)") && detail.contains("migrate this exact pair"), "{detail}");
        assert_eq!(verdict("11.5.5", "19.0.0", &["15.5.9", "18.2.0"]).0, "pass");
        // No 19.x takes 18.3+'s schema: nothing to go through, nothing skipped.
        assert_eq!(verdict("11.5.5", "20.1.0", &["15.5.9", "18.4.0"]).0, "pass");
        assert_eq!(verdict("18.4.0", "20.1.0", &[]).0, "pass");
        let (status, detail) = verdict("18.2.0", "20.1.0", &[]);
        assert_eq!(status, "warn", "18.2.0 can go through 19.0.0");
        assert!(detail.contains("skips 19.x (ISO10)"), "{detail}");
        assert_eq!(verdict("14.0.0", "11.5.5", &[]).0, "fail", "a downgrade");
        let (status, detail) = verdict("15.5.9", "19.0.0", &["11.5.5"]);
        assert_eq!(status, "fail", "an intermediate older than the old server");
        assert!(detail.contains("11.5.5 not between"), "{detail}");
    }

    #[test]
    fn servers_from_15_on_need_postgresql_16() {
        let status = |v: &str, pg: u32| {
            let mut checks = Checks::default();
            postgres_for(Some(v.parse().unwrap()), pg, &mut checks);
            format!("{:?}", checks.items.pop().unwrap().status).to_lowercase()
        };
        assert_eq!(status("14.0.0", 15), "pass");
        assert_eq!(status("15.5.9", 15), "fail");
        assert_eq!(status("15.5.9", 16), "pass");
        assert_eq!(status("20.1.0", 17), "pass");
        assert_eq!(status("8.7.6", 12), "warn", "Inmanta's docs ask for 13+");
        assert_eq!(status("20.1.0", 18), "pass", "adapted to 18");
        assert_eq!(status("18.4.0", 18), "pass", "adapted to 18 in 18.3.0");
        assert_eq!(status("19.0.0", 18), "warn", "19.0.0 predates the fix");
        assert_eq!(status("15.5.9", 18), "warn");
    }

    fn chain(dump: i64, servers: &[&str]) -> Result<(), String> {
        let servers: Vec<ServerVersion> = servers.iter().map(|v| v.parse().unwrap()).collect();
        walk_schema_chain(dump, "the dump", &servers)
            .map_err(|(server, version, max, by)| format!("{server} {version} {max} {by}"))
    }

    #[test]
    fn every_server_of_the_chain_knows_what_the_one_before_left() {
        // 11.5.5's schema, straight to 19.0 or through 15.5 and 18.2: fine.
        assert_eq!(chain(202409090, &["19.0.0"]), Ok(()));
        assert_eq!(chain(202409090, &["15.5.9", "18.2.0", "19.0.0"]), Ok(()));
        // 18.4.0's dump (measured on the real servers) into 19.0.0.
        assert_eq!(chain(202610150, &["19.0.0"]), Err("19.0.0 202610150 202607130 the dump".into()));
        // Through 18.4.0, 19.0.0 meets what 18.4.0 added.
        assert_eq!(
            chain(202409090, &["15.5.9", "18.4.0", "19.0.0"]),
            Err("19.0.0 202610150 202607130 the database after inmanta-core 18.4.0".into())
        );
        // 15.5.9 carries a backport 16.0 does not know.
        assert!(chain(202409090, &["15.5.9", "16.0.0"]).is_err());
        // A release the table does not know is not judged.
        assert_eq!(chain(202409090, &["21.0.0"]), Ok(()));
    }

    #[test]
    fn connections_follow_the_version_and_the_pools() {
        let v = |s: &str| s.parse::<inmanta_api::ServerVersion>().unwrap();
        let default = Pools::default();
        assert_eq!(connections(v("14.0.0"), &default, 50), Connections { at_start: 10, at_most: 70, server: 70 });
        // Measured on 15.5.9: 20 environments used 54 connections (at most 175).
        assert_eq!(connections(v("15.5.9"), &default, 20), Connections { at_start: 25, at_most: 175, server: 35 });
        assert_eq!(connections(v("20.1.0"), &default, 50).at_most, 36 + 50 * 7, "the singleton lock from 18.2");
        let old_key = Pools { database: (None, Some(20)), ..Pools::default() };
        assert_eq!(
            connections(v("19.0.0"), &old_key, 10).at_most,
            21 + 10 * 7,
            "the old key itself; not the schedulers'"
        );
        let tuned = Pools { scheduler: (Some(1), Some(2)), ..Pools::default() };
        assert_eq!(connections(v("15.5.9"), &tuned, 50).at_most, 35 + 100);
    }

    #[test]
    fn check_says_what_to_set_when_the_connections_do_not_fit() {
        let v = "15.5.9".parse().unwrap();
        let verdict = |running: u32, slots: u32| {
            let mut checks = Checks::default();
            new_connections(v, &Pools::default(), running, slots, &mut checks);
            let item = checks.items.pop().unwrap();
            (format!("{:?}", item.status).to_lowercase(), item.detail, item.next_step.unwrap_or_default())
        };
        assert_eq!(verdict(5, 97).0, "pass");
        let (status, detail, next) = verdict(50, 97);
        assert_eq!(status, "warn", "{detail}");
        assert!(detail.contains("up to 385") && detail.contains("allows 97"), "{detail}");
        assert!(next.contains("`max_connections` to 395"), "{next}");
        assert!(!next.contains("db_connection_pool_max_size"), "a pool of 1 hangs dry-runs: {next}");
        let (_, _, next) = verdict(20, 97);
        assert!(next.contains("db_connection_pool_max_size = 2"), "{next}");
        assert_eq!(verdict(100, 97).0, "fail", "105 at start");
    }
}
