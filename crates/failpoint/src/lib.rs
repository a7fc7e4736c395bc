//! Crash points, for the tests that crash a migration at every point it
//! passes and run it again (SQLite's crash tests, etcd's failpoints).
//!
//! The product marks each point where a crash would leave something half
//! done: after each journal write, and before and after each state-changing
//! API call, database change and service start or stop. Two environment
//! variables, read once, turn them on:
//!
//! - `INMANTA_MIGRATE_CRASH_LOG=FILE` appends `KIND N WHAT` for every point
//!   passed (N counts the points of that kind), so that a test learns the
//!   points of a whole run from the run itself;
//! - `INMANTA_MIGRATE_CRASH_AT=KIND:N` kills the process with SIGKILL at the
//!   N-th point of KIND, as `kill -9` or a lost machine would: no destructor,
//!   no flush, no cleanup.
//!
//! With neither set (every normal run) a point costs one load of an
//! initialised `OnceLock`.

use std::{
    fmt::Display,
    fs::File,
    io::Write as _,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

pub const CRASH_AT: &str = "INMANTA_MIGRATE_CRASH_AT";
pub const CRASH_LOG: &str = "INMANTA_MIGRATE_CRASH_LOG";

/// What a point guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// The journal (`journal.json`), after each write.
    Journal,
    /// A state-changing call to an orchestrator's API.
    Api,
    /// A change to a database: create, drop, load, ANALYZE, and the online
    /// copy's objects (publication, subscription, role, fence, slot).
    Database,
    /// A start or stop of an orchestrator's server.
    Service,
}

/// Every kind of point, as `INMANTA_MIGRATE_CRASH_AT` names it.
pub const KINDS: [&str; 7] =
    ["journal", "api-before", "api-after", "db-before", "db-after", "service-before", "service-after"];

fn kind_index(area: Area, before: bool) -> usize {
    match (area, before) {
        (Area::Journal, _) => 0,
        (Area::Api, true) => 1,
        (Area::Api, false) => 2,
        (Area::Database, true) => 3,
        (Area::Database, false) => 4,
        (Area::Service, true) => 5,
        (Area::Service, false) => 6,
    }
}

struct Plan {
    crash_at: Option<(usize, u64)>,
    log: Option<Mutex<File>>,
}

static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
static PASSED: [AtomicU64; KINDS.len()] = [const { AtomicU64::new(0) }; KINDS.len()];

/// Parses `KIND:N` (N from 1).
fn parse_crash_at(value: &str) -> Result<(usize, u64), String> {
    let bad = || format!("{CRASH_AT}={value:?}: expected KIND:N with KIND one of {} and N from 1", KINDS.join(", "));
    let (kind, n) = value.rsplit_once(':').ok_or_else(bad)?;
    let kind = KINDS.iter().position(|k| *k == kind).ok_or_else(bad)?;
    match n.parse::<u64>() {
        Ok(n) if n >= 1 => Ok((kind, n)),
        _ => Err(bad()),
    }
}

fn load() -> Result<Option<Plan>, String> {
    let crash_at = match std::env::var(CRASH_AT) {
        Ok(v) if !v.is_empty() => Some(parse_crash_at(&v)?),
        _ => None,
    };
    let log = match std::env::var(CRASH_LOG) {
        Ok(path) if !path.is_empty() => {
            let file = File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("{CRASH_LOG}={path:?}: cannot open it: {e}"))?;
            Some(Mutex::new(file))
        }
        _ => None,
    };
    Ok((crash_at.is_some() || log.is_some()).then_some(Plan { crash_at, log }))
}

/// Reads the two variables; an error names the bad one. Call it once at
/// start, so that a bad value stops the run before it changes anything.
pub fn init() -> Result<(), String> {
    let mut error = None;
    PLAN.get_or_init(|| {
        load().unwrap_or_else(|e| {
            error = Some(e);
            None
        })
    });
    error.map_or(Ok(()), Err)
}

/// The point just before `what` changes something in `area`.
pub fn before(area: Area, what: impl Display) {
    point(kind_index(area, true), &what);
}

/// The point just after `what` changed something in `area`.
pub fn after(area: Area, what: impl Display) {
    point(kind_index(area, false), &what);
}

fn point(kind: usize, what: &dyn Display) {
    let Some(plan) = PLAN.get_or_init(|| load().ok().flatten()) else { return };
    let n = PASSED[kind].fetch_add(1, Ordering::SeqCst) + 1;
    let crash = plan.crash_at == Some((kind, n));
    if let Some(log) = &plan.log {
        // One write(2) per line, on an O_APPEND file: it is the kernel's
        // before the kill, so the log survives the crash.
        let line = format!("{} {n} {what}{}\n", KINDS[kind], if crash { " (crash)" } else { "" });
        let _ = log.lock().unwrap_or_else(|e| e.into_inner()).write_all(line.as_bytes());
    }
    if crash {
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; should it fail, still never go on.
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_at_names_a_kind_and_a_count_from_one() {
        assert_eq!(parse_crash_at("journal:3"), Ok((0, 3)));
        assert_eq!(parse_crash_at("service-after:1"), Ok((6, 1)));
        for bad in ["journal", "journal:0", "journal:x", "disk:1", ":1", "api-before:-1"] {
            let error = parse_crash_at(bad).unwrap_err();
            assert!(error.contains(CRASH_AT) && error.contains("api-before"), "{bad}: {error}");
        }
    }

    #[test]
    fn every_area_has_a_before_and_an_after_kind() {
        let mut seen: Vec<usize> = [Area::Journal, Area::Api, Area::Database, Area::Service]
            .into_iter()
            .flat_map(|a| [kind_index(a, true), kind_index(a, false)])
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, (0..KINDS.len()).collect::<Vec<_>>(), "each kind is reached, none twice by mistake");
    }
}
