//! The work directory of one migration: a lock so that only one run works in
//! it, and `journal.json`, the record of every step and environment that lets
//! a later run resume where an earlier one stopped.
//!
//! The journal is rewritten atomically after every change, before the next
//! change starts. Nothing in it names a secret.
//!
//! Each step keeps two things apart: its figures (measurements, for the
//! report only) and its [`StepState`] (a type of its own crate: what a
//! re-run resumes from). Journals of an earlier format are read by
//! upgrading them here, so that a migration started with an older binary
//! finishes with this one.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, Write},
    os::unix::fs::OpenOptionsExt,
    sync::Mutex,
};

use anyhow::{Context as _, bail};
use camino::{Utf8Path, Utf8PathBuf};
use jiff::Timestamp;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{config::Config, error::UsageError, figures::Figures, fsutil, steps::StepId};

/// 2: resume state apart from figures, environment phases as names of [`EnvPhase`].
const FORMAT: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    pub tool_version: String,
    pub created: Timestamp,
    pub migration: MigrationKey,
    #[serde(default)]
    pub steps: BTreeMap<StepId, StepRecord>,
    #[serde(default)]
    pub environments: BTreeMap<Uuid, EnvRecord>,
    /// Set when `rollback` brought the old orchestrator back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
    /// Set when `finish` made the new orchestrator the only one: from then
    /// on there is no way back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// Attempts rolled back before this one, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<EarlierAttempt>,
}

/// When a rollback ended an attempt, and from which point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolledBack {
    /// The last step of the sequence that had started.
    pub from: Option<StepId>,
    pub at: Timestamp,
    /// It disabled the new server's systemd unit: the next start-server
    /// enables it again.
    #[serde(default)]
    pub disabled_new_unit: bool,
    /// `--new-side-gone`: the new machine was given up, not made inert by
    /// this tool (its database was, where it still answered).
    #[serde(default)]
    pub new_side_gone: bool,
}

/// An attempt that `rollback` ended, kept for the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EarlierAttempt {
    pub rolled_back: RolledBack,
    pub steps: BTreeMap<StepId, StepRecord>,
    pub environments: BTreeMap<Uuid, EnvRecord>,
}

/// What makes a work directory belong to one migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationKey {
    pub old_api: String,
    pub new_api: String,
}

impl MigrationKey {
    pub fn of(config: &Config) -> Self {
        MigrationKey { old_api: config.old.api_url.clone(), new_api: config.new.api_url.clone() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    #[default]
    Pending,
    Running,
    Done,
    Failed,
    NeedsOperator,
}

impl StepStatus {
    /// As a person reads it.
    pub fn words(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
            StepStatus::NeedsOperator => "needs an operator",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepRecord {
    pub status: StepStatus,
    pub started: Option<Timestamp>,
    pub ended: Option<Timestamp>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// Measured figures: sizes, counts, durations. Only the report reads them.
    #[serde(default, skip_serializing_if = "Figures::is_empty")]
    pub figures: Figures,
    /// What a re-run resumes from: the step's [`StepState`], null if it
    /// needs none.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub state: Value,
}

/// What a re-run of one step resumes from: a type of the step's own crate,
/// kept in its journal record (read with [`Journal::state`], changed with
/// [`WorkDir::update_state`]). It takes `#[serde(default)]`, so that a
/// journal written before one of its fields existed still reads (a tidy test
/// holds it).
pub trait StepState: Serialize + DeserializeOwned + Default {
    const STEP: StepId;
}

impl StepRecord {
    pub fn seconds(&self) -> Option<f64> {
        Some(self.ended?.duration_since(self.started?).as_secs_f64())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EnvStatus {
    #[default]
    Pending,
    InProgress,
    Done,
    /// Halted before the migration: left halted and untouched.
    LeftHalted,
    NeedsOperator,
    Failed,
}

impl EnvStatus {
    /// As a person reads it.
    pub fn words(self) -> &'static str {
        match self {
            EnvStatus::Pending => "pending",
            EnvStatus::InProgress => "in progress",
            EnvStatus::Done => "done",
            EnvStatus::LeftHalted => "left halted",
            EnvStatus::NeedsOperator => "needs an operator",
            EnvStatus::Failed => "failed",
        }
    }
}

/// Where `env-reconcile` stands with one environment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EnvRecord {
    pub name: String,
    pub status: EnvStatus,
    /// The last phase that completed: what `status` and the report show of
    /// an interrupted reconcile. A re-run resumes from what the server says
    /// (the compile marker, the released version), not from this.
    #[serde(default)]
    pub phase: Option<EnvPhase>,
    /// The `metadata.message` of the tool's compile request.
    #[serde(default)]
    pub marker: Option<String>,
    /// The version compiled on the new server and dry-run.
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub dryrun: Option<Uuid>,
    #[serde(default)]
    pub released: bool,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub seconds: Option<f64>,
    #[serde(default)]
    pub updated: Option<Timestamp>,
}

/// The phases of one environment's reconcile, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvPhase {
    AutoDeployOff,
    CompileRequested,
    Resumed,
    Compiled,
    DryRunClean,
    AutoDeployRestored,
}

impl EnvPhase {
    /// As a person reads it.
    pub fn words(self) -> &'static str {
        match self {
            EnvPhase::AutoDeployOff => "auto_deploy turned off",
            EnvPhase::CompileRequested => "compile requested",
            EnvPhase::Resumed => "resumed",
            EnvPhase::Compiled => "compiled",
            EnvPhase::DryRunClean => "dry-run clean",
            EnvPhase::AutoDeployRestored => "auto_deploy put back",
        }
    }
}

impl Journal {
    fn new(key: MigrationKey) -> Self {
        Journal {
            format: FORMAT,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            created: Timestamp::now(),
            migration: key,
            steps: BTreeMap::new(),
            environments: BTreeMap::new(),
            rolled_back: None,
            finished: None,
            earlier: Vec::new(),
        }
    }

    pub fn step(&self, id: StepId) -> StepRecord {
        self.steps.get(&id).cloned().unwrap_or_default()
    }

    pub fn step_mut(&mut self, id: StepId) -> &mut StepRecord {
        self.steps.entry(id).or_default()
    }

    /// The last step of the sequence that has started, in sequence order:
    /// the point a rollback now goes back from.
    pub fn reached(&self) -> Option<StepId> {
        self.steps.iter().filter(|(id, r)| id.in_sequence() && r.attempts > 0).map(|(id, _)| *id).max()
    }

    /// Ends a rolled-back attempt: its record moves to [`Journal::earlier`]
    /// and the sequence starts again. The states of the steps that fill the
    /// new database stay: they know it is this migration's to replace.
    pub fn begin_new_attempt(&mut self) {
        const FILLERS: [StepId; 2] = [StepId::Restore, StepId::Precopy];
        let Some(rolled_back) = self.rolled_back.take() else { return };
        let kept: Vec<(StepId, Value)> =
            FILLERS.iter().filter_map(|id| Some((*id, self.steps.get(id)?.state.clone()))).collect();
        self.earlier.push(EarlierAttempt {
            rolled_back,
            steps: std::mem::take(&mut self.steps),
            environments: std::mem::take(&mut self.environments),
        });
        for (id, state) in kept.into_iter().filter(|(_, state)| !state.is_null()) {
            self.step_mut(id).state = state;
        }
    }

    pub fn is_done(&self, id: StepId) -> bool {
        self.step(id).status == StepStatus::Done
    }

    /// A step's resume state; its default before the step recorded any.
    pub fn state<T: StepState>(&self) -> anyhow::Result<T> {
        match self.steps.get(&T::STEP).map(|r| &r.state) {
            None | Some(Value::Null) => Ok(T::default()),
            Some(state) => T::deserialize(state).with_context(|| {
                format!(
                    "journal.json: the state of {} cannot be read; was the journal edited by hand? \
                     Move the work directory aside to start the migration over",
                    T::STEP
                )
            }),
        }
    }

    /// Replaces a step's resume state.
    pub fn set_state<T: StepState>(&mut self, state: &T) -> anyhow::Result<()> {
        self.step_mut(T::STEP).state = serde_json::to_value(state)?;
        Ok(())
    }

    /// Reads `journal.json` of any format this binary knows, upgraded to
    /// the current one.
    pub fn read(path: &Utf8Path) -> anyhow::Result<Journal> {
        Journal::from_value(fsutil::read_json(path)?, path.as_str())
    }

    /// A journal of any format this binary knows, as JSON (`shown`: where
    /// it comes from, for errors).
    pub fn from_value(mut value: Value, shown: &str) -> anyhow::Result<Journal> {
        let format = value.get("format").and_then(Value::as_u64).unwrap_or(0);
        if format > u64::from(FORMAT) {
            bail!(
                "{shown} was written by a newer inmanta-migrate ({}); use that version",
                value.get("tool_version").and_then(Value::as_str).unwrap_or("?")
            );
        }
        if format == 1 {
            upgrade_from_1(&mut value);
        }
        serde_json::from_value(value).with_context(|| format!("{shown} is not a journal this version can read"))
    }
}

/// Format 1 kept each step's resume state among its figures; format 2 keeps
/// it apart, under the names of the steps' state types.
fn upgrade_from_1(journal: &mut Value) {
    journal["format"] = 2.into();
    let Some(steps) = journal.get_mut("steps").and_then(Value::as_object_mut) else { return };
    for (step, record) in steps {
        let Some(figures) = record.get_mut("figures").and_then(Value::as_object_mut) else { continue };
        let moved: &[&str] = match step.as_str() {
            "restore" => &["target_touched"],
            "precopy" => &["subscribed_into", "schema_versions"],
            "cutover" => &["caught_up", "cut_off"],
            _ => &[],
        };
        let mut state: Map<String, Value> =
            moved.iter().filter_map(|&key| Some((key.to_owned(), figures.remove(key)?))).collect();
        // start-server: one figure "intermediate VERSION" per intermediate server done.
        let intermediates: Vec<String> = figures.keys().filter(|k| k.starts_with("intermediate ")).cloned().collect();
        if !intermediates.is_empty() {
            let done = intermediates
                .into_iter()
                .filter_map(|key| Some((key["intermediate ".len()..].to_owned(), figures.remove(&key)?)))
                .collect();
            state.insert("intermediates_done".to_owned(), Value::Object(done));
        }
        if !state.is_empty() {
            record["state"] = Value::Object(state);
        }
    }
}

/// An open work directory, locked for this process.
pub struct WorkDir {
    dir: Utf8PathBuf,
    journal: Mutex<Journal>,
    /// Held for the life of the run; the OS releases it if the process dies.
    _lock: File,
    /// Set when an earlier run ended without finishing its step.
    pub recovered_from: Option<String>,
}

impl WorkDir {
    /// Creates or opens the work directory of `config` and locks it.
    pub fn open(config: &Config) -> anyhow::Result<WorkDir> {
        let dir = config.work_dir.clone();
        if let Err(e) = fsutil::create_private_dir(&dir) {
            return Err(UsageError(format!(
                "work directory {dir} is not usable: {e:#} (check `work_dir` in the config)"
            ))
            .into());
        }
        let lock_path = dir.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("cannot open the lock file {lock_path}"))?;
        let mut previous = String::new();
        let _ = lock.read_to_string(&mut previous);
        // A short grace: a process that forks while holding the lock keeps
        // it in the child until that child execs.
        let mut tries = 0;
        let acquired = loop {
            match lock.try_lock() {
                Err(TryLockError::WouldBlock) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => break other,
            }
        };
        match acquired {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "another inmanta-migrate run holds the lock on {dir} ({}); wait for it to finish",
                previous.trim()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).context(format!("cannot lock {lock_path}"));
            }
        }
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(lock, "pid {} since {}", std::process::id(), Timestamp::now())?;
        lock.sync_all()?;

        let journal_path = dir.join("journal.json");
        let key = MigrationKey::of(config);
        let journal = if journal_path.exists() {
            let journal = Journal::read(&journal_path)?;
            if journal.migration != key {
                return Err(UsageError(format!(
                    "work directory {dir} belongs to the migration {} -> {}, not {} -> {}; \
                     give this migration its own `work_dir`",
                    journal.migration.old_api, journal.migration.new_api, key.old_api, key.new_api
                ))
                .into());
            }
            journal
        } else {
            let journal = Journal::new(key);
            fsutil::write_json(&journal_path, &journal)?;
            journal
        };
        let recovered_from = journal
            .steps
            .iter()
            .find(|(_, r)| r.status == StepStatus::Running)
            .map(|(name, _)| format!("an earlier run stopped during {name} ({})", previous.trim()));
        Ok(WorkDir { dir, journal: Mutex::new(journal), _lock: lock, recovered_from })
    }

    /// Reads the journal without locking, for `status` and `plan`.
    pub fn peek(config: &Config) -> anyhow::Result<Option<Journal>> {
        let path = config.work_dir.join("journal.json");
        if !path.exists() {
            return Ok(None);
        }
        Journal::read(&path).map(Some)
    }

    pub fn dir(&self) -> &Utf8Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> Utf8PathBuf {
        self.dir.join(name)
    }

    /// A copy of the journal as it is now.
    pub fn journal(&self) -> Journal {
        self.journal.lock().expect("journal lock poisoned").clone()
    }

    /// Changes the journal and writes it before returning.
    pub fn update<R>(&self, change: impl FnOnce(&mut Journal) -> R) -> anyhow::Result<R> {
        let mut journal = self.journal.lock().expect("journal lock poisoned");
        let result = change(&mut journal);
        fsutil::write_json(&self.dir.join("journal.json"), &*journal)?;
        failpoint::after(failpoint::Area::Journal, "journal.json");
        Ok(result)
    }

    /// Changes a step's resume state and writes the journal.
    pub fn update_state<T: StepState, R>(&self, change: impl FnOnce(&mut T) -> R) -> anyhow::Result<R> {
        self.update(|j| {
            let mut state = j.state::<T>()?;
            let result = change(&mut state);
            j.set_state(&state)?;
            anyhow::Ok(result)
        })?
    }

    /// Records one environment's progress.
    pub fn update_env(&self, env: Uuid, change: impl FnOnce(&mut EnvRecord)) -> anyhow::Result<()> {
        self.update(|j| {
            let record = j.environments.entry(env).or_default();
            change(record);
            record.updated = Some(Timestamp::now());
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Utf8Path) -> Config {
        let text = format!(
            "work_dir = \"{dir}/work\"\n[old]\napi_url = \"http://127.0.0.1:1\"\n[old.service]\nmanager = \"systemd\"\n\
             [old.database]\nport = 1\n[new]\napi_url = \"http://127.0.0.1:2\"\n[new.service]\nmanager = \"systemd\"\n"
        );
        Config::parse(&text, Utf8Path::new("t.toml")).unwrap()
    }

    /// A rolled-back attempt moves to `earlier`; the new one starts empty
    /// but for the states that know which new database is ours.
    #[test]
    fn a_new_attempt_keeps_the_earlier_one_and_which_database_is_ours() {
        let mut journal = Journal::new(MigrationKey { old_api: "o".into(), new_api: "n".into() });
        for id in [StepId::HaltAll, StepId::StopServer, StepId::Dump, StepId::Restore, StepId::StartServer] {
            journal.step_mut(id).status = StepStatus::Done;
            journal.step_mut(id).attempts = 1;
        }
        journal.step_mut(StepId::Restore).state = serde_json::json!({ "target_touched": "inmanta@new/inmanta" });
        assert_eq!(journal.reached(), Some(StepId::StartServer));
        journal.begin_new_attempt();
        assert!(journal.earlier.is_empty(), "nothing to begin before a rollback");

        journal.rolled_back = Some(RolledBack {
            from: journal.reached(),
            at: Timestamp::now(),
            disabled_new_unit: true,
            new_side_gone: false,
        });
        journal.begin_new_attempt();
        assert_eq!(journal.earlier.len(), 1);
        assert_eq!(journal.earlier[0].rolled_back.from, Some(StepId::StartServer));
        assert_eq!(journal.earlier[0].steps.len(), 5, "the earlier attempt's record is kept whole");
        assert!(journal.rolled_back.is_none() && journal.reached().is_none(), "the new attempt starts from the start");
        assert_eq!(journal.steps.keys().collect::<Vec<_>>(), [&StepId::Restore]);
        assert_eq!(journal.step(StepId::Restore).status, StepStatus::Pending);
        assert_eq!(journal.step(StepId::Restore).state["target_touched"], "inmanta@new/inmanta");
    }

    fn temp() -> (tempfile::TempDir, Utf8PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
        (dir, path)
    }

    #[test]
    fn a_second_run_is_refused_while_the_first_holds_the_lock() {
        let (_t, dir) = temp();
        let cfg = config(&dir);
        let first = WorkDir::open(&cfg).unwrap();
        let err = WorkDir::open(&cfg).err().expect("refused");
        assert!(err.to_string().contains("another inmanta-migrate run holds the lock"), "{err}");
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "names the holder: {err}");
        drop(first);
        WorkDir::open(&cfg).expect("free again");
    }

    #[test]
    fn an_abandoned_run_is_noticed_and_its_journal_kept() {
        let (_t, dir) = temp();
        let cfg = config(&dir);
        {
            let work = WorkDir::open(&cfg).unwrap();
            work.update(|j| j.step_mut(StepId::Dump).status = StepStatus::Running).unwrap();
            // Dropped without finishing, as a killed process would leave it;
            // the lock file stays behind.
        }
        assert!(dir.join("work/lock").exists());
        let work = WorkDir::open(&cfg).unwrap();
        assert!(work.recovered_from.as_deref().unwrap().contains("stopped during dump"));
        assert_eq!(work.journal().step(StepId::Dump).status, StepStatus::Running);
    }

    #[test]
    fn a_work_directory_of_another_migration_is_refused() {
        let (_t, dir) = temp();
        let cfg = config(&dir);
        drop(WorkDir::open(&cfg).unwrap());
        let mut other = cfg.clone();
        other.new.api_url = "http://127.0.0.1:3".into();
        let err = WorkDir::open(&other).err().expect("refused");
        assert!(err.to_string().contains("belongs to the migration"), "{err}");
        assert_eq!(crate::Exit::of(&err), crate::Exit::Usage);
    }

    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_t, dir) = temp();
        let work = WorkDir::open(&config(&dir)).unwrap();
        let mode = |p: &Utf8Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(work.dir()), 0o700);
        assert_eq!(mode(&work.path("journal.json")), 0o600);
        assert_eq!(mode(&work.path("lock")), 0o600);
    }
}
