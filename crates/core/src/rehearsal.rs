//! What `rehearse` found, kept as `rehearsal.json` in the work directory
//! (its JSON Schema is `schemas/v1/rehearsal.schema.json`): how the copy,
//! each server's schema migrations and each environment's compile went on
//! the new version, and the window predicted from those measurements.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One rehearsal.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Rehearsal {
    pub schema_version: u32,
    pub tool_version: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// How long it took, seconds.
    pub seconds: f64,
    /// The old server's inmanta-core version, as its API said.
    pub old_version: String,
    /// The old database copied into the scratch database.
    pub copy: CopyRun,
    /// Each server started on the copy, intermediates first, the new one last.
    pub servers: Vec<ServerRun>,
    /// Each environment of the old server, as the new version compiled it.
    pub environments: Vec<EnvRehearsal>,
    /// The new machine's CPU while the environments compiled (none when it
    /// could not be read there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_cpu: Option<MachineCpu>,
    /// Deploy actions the copy recorded when it was made and when the
    /// rehearsal ended: equal, or something deployed (never expected).
    pub deploy_actions: [i64; 2],
    /// The maintenance window predicted from these measurements.
    pub window: Window,
}

impl Rehearsal {
    pub const FILE: &'static str = "rehearsal.json";

    /// The latest rehearsal of this work directory, when one ran.
    pub fn latest(work_dir: &camino::Utf8Path) -> Option<Rehearsal> {
        crate::fsutil::read_json(&work_dir.join(Self::FILE)).ok()
    }
}

/// pg_dump of the running old database (or, online, of the new side's
/// copy), loaded into the scratch database.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct CopyRun {
    /// The database copied, `user@host:port/name`.
    pub database: String,
    pub database_bytes: i64,
    pub tables: usize,
    pub dump_seconds: f64,
    /// Load and ANALYZE.
    pub restore_seconds: f64,
}

/// One server started on the copy: its schema migrations, timed.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ServerRun {
    pub version: String,
    /// From the start request until its API answered (the schema migration
    /// runs before the API opens).
    pub seconds_to_answer: f64,
    pub schema_migrations: usize,
    /// From the stop request until the service reported it gone.
    pub stop_seconds: Option<f64>,
}

/// How busy a machine's CPUs were over a stretch of time (`/proc/stat`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct MachineCpu {
    pub cores: u32,
    /// CPU time spent by every process of the machine (user, system,
    /// interrupts; not waiting on I/O), seconds.
    pub busy_seconds: f64,
    pub wall_seconds: f64,
}

/// What the new version made of one environment.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct EnvRehearsal {
    pub id: Uuid,
    pub name: String,
    /// Halted before the migration (the window leaves it halted).
    pub halted_before: bool,
    pub outcome: EnvOutcome,
    /// The update & recompile on the new version, seconds.
    pub compile_seconds: Option<f64>,
    /// The old side's latest released version, compared with.
    pub compared_with: Option<i64>,
    /// The version the new version's compile exported.
    pub version: Option<i64>,
    /// How many resources that version holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<usize>,
    /// Resource by resource, attribute by attribute.
    pub differences: Vec<String>,
    /// What was not compared, and why.
    pub notes: Vec<String>,
    /// Why it does not compile: the compiler's error, or what failed.
    pub error: Option<String>,
    /// `--baseline`: the old server's dry-run of its released version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

/// What was already different on the old side before the migration.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Baseline {
    /// The dry-run's differences, as `env-reconcile` words them.
    pub differences: Vec<String>,
    pub seconds: f64,
    /// Why there is no dry-run (an agent down, a timeout).
    pub error: Option<String>,
}

impl Baseline {
    /// Whether the old side's dry-run showed this difference already
    /// (version numbers in resource ids do not count).
    pub fn had(&self, difference: &str) -> bool {
        let key = unversioned(difference);
        self.differences.iter().any(|d| unversioned(d) == key)
    }
}

/// A difference's text without `,v=N` in the resource id before its first colon.
fn unversioned(difference: &str) -> String {
    let (id, rest) = difference.split_once(": ").unwrap_or((difference, ""));
    format!("{}: {rest}", inmanta_api::strip_version(id))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvOutcome {
    /// Compiles; the same desired state as the old side's released version.
    Same,
    /// Compiles; its desired state differs (see `differences`).
    Differs,
    /// Does not compile on the new version (see `error`).
    Fails,
}

impl EnvOutcome {
    pub fn words(self) -> &'static str {
        match self {
            EnvOutcome::Same => "same desired state",
            EnvOutcome::Differs => "compiles, desired state differs",
            EnvOutcome::Fails => "does not compile",
        }
    }
}

/// The window, part by part, each with what it is based on.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Window {
    /// offline or online.
    pub copy_mode: String,
    pub parts: Vec<WindowPart>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct WindowPart {
    /// The step or steps.
    pub steps: String,
    pub seconds: f64,
    /// What the figure comes from.
    pub basis: String,
}

impl Window {
    pub fn new(copy_mode: &str, parts: Vec<WindowPart>) -> Window {
        let seconds = parts.iter().map(|p| p.seconds).sum();
        Window { copy_mode: copy_mode.to_owned(), parts, seconds }
    }
}

/// When `jobs` workers take the longest task first, each the next free
/// one: how long until all are done (what `reconcile.concurrency` does
/// with the environments, up to the order it takes them in).
pub fn makespan(mut tasks: Vec<f64>, jobs: usize) -> f64 {
    tasks.sort_by(|a, b| b.total_cmp(a));
    let mut workers = vec![0.0_f64; jobs.max(1)];
    for task in tasks {
        let free = workers.iter_mut().min_by(|a, b| a.total_cmp(b)).expect("one worker at least");
        *free += task;
    }
    workers.into_iter().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makespan_spreads_the_longest_first() {
        assert_eq!(makespan(vec![], 4), 0.0);
        assert_eq!(makespan(vec![3.0, 1.0, 2.0], 1), 6.0);
        assert_eq!(makespan(vec![3.0, 1.0, 2.0], 2), 3.0);
        assert_eq!(makespan(vec![5.0, 4.0, 3.0, 3.0], 2), 8.0);
        assert_eq!(makespan(vec![2.0, 2.0], 0), 4.0, "no worker counts as one");
    }

    #[test]
    fn a_baseline_knows_a_difference_whatever_the_version() {
        let b = Baseline {
            differences: vec!["std::File[h,path=/x],v=3: modified: mode: 644 -> 600".into()],
            seconds: 1.0,
            error: None,
        };
        assert!(b.had("std::File[h,path=/x],v=9: modified: mode: 644 -> 600"));
        assert!(b.had("std::File[h,path=/x]: modified: mode: 644 -> 600"));
        assert!(!b.had("std::File[h,path=/x]: modified: mode: 644 -> 640"));
    }

    #[test]
    fn a_window_is_the_sum_of_its_parts() {
        let part = |s| WindowPart { steps: "x".into(), seconds: s, basis: "y".into() };
        assert_eq!(Window::new("offline", vec![part(1.5), part(2.0)]).seconds, 3.5);
    }
}
