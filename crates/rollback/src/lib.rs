//! The two ways a migration ends.
//!
//! `rollback`: back to the old orchestrator, from any point before `finish`.
//! Inmanta's schema migrations only go forward, so the way back is the old
//! server on its untouched database. In this order: the new side is made
//! inert (its environments halted, its server stopped and, with systemd,
//! disabled; an online copy removed); the old database is checked against
//! what the dump counted; the old server is started and checked against the
//! inventory; then the environments that ran before are resumed and their
//! settings put back. What the new side did that going back throws away is
//! listed first, and refused without `--force`.
//!
//! `finish`: the point of no return once the new side is accepted. The old
//! server is stopped and disabled, its database marked as migrated, and from
//! then on `rollback` refuses.

use std::time::Instant;

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use migrate_core::{
    Checks, Context, Figures, NeedsOperator, Outcome, Side, Step, StepId,
    config::{CopyMode, Manager, Orchestrator},
    fsutil,
    inventory::{EnvironmentRecord, Inventory},
    journal::{EnvPhase, Journal, RolledBack, StepState},
    manifest::Manifest,
    one_driver,
    service::{ProcessState, Service, start_service, stop_and_wait, wait_until_answering},
};
use migrate_pg::{Database, replication};
use serde::{Deserialize, Serialize};

/// Old side: back to the old orchestrator (the new side made inert first).
#[derive(Debug, Default, clap::Args)]
pub struct Rollback {
    /// Go back even though the new side did work that is then lost
    /// (rollback lists it first).
    #[arg(long)]
    pub force: bool,
    /// The new machine is gone for good (destroyed, its disk lost): go back
    /// without stopping its server, once its API is silent. Whatever it did
    /// is lost with it; its database, if it still answers, has every
    /// environment halted so that nothing started on it later deploys.
    #[arg(long)]
    pub new_side_gone: bool,
}

/// What a re-run of rollback resumes from.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RollbackState {
    /// It disabled the new server's unit (a re-run finds it disabled and
    /// could no longer tell that it did).
    pub disabled_new_unit: bool,
    /// What the new side's work going back throws away, listed while the
    /// new server still answered (a re-run finds it stopped).
    pub lost: Option<Vec<String>>,
    /// It asked for the old server's start: from here on the old database
    /// is the old server's again, not what the dump left.
    pub started_old: bool,
}

impl StepState for RollbackState {
    const STEP: StepId = StepId::Rollback;
}

/// What rollback did, for `--json` and the report.
#[derive(Debug, Serialize)]
struct RolledBackDetails {
    /// What the new side had done that going back threw away.
    lost: Vec<String>,
    environments: Vec<EnvBack>,
}

/// What rollback did to one environment on the old side.
#[derive(Debug, Serialize)]
struct EnvBack {
    id: uuid::Uuid,
    name: String,
    action: String,
}

impl Rollback {
    /// The rule before anything is resumed on the old side: the new server
    /// stopped and silent, or, given up as gone, at least silent.
    async fn new_side_lets_go(&self, cx: &Context) -> anyhow::Result<()> {
        if self.new_side_gone {
            one_driver::new_side_is_silent(cx).await
        } else {
            one_driver::new_side_is_inert(cx).await
        }
    }
}

impl Step for Rollback {
    const ID: StepId = StepId::Rollback;

    fn describe(&self, cx: &Context) -> String {
        let online = if cx.config.copy.mode == CopyMode::Online { ", remove the online copy" } else { "" };
        format!(
            "halt every environment on the new server, stop it ({}){online}; start the old server ({}) and resume \
             the environments that ran before, with their settings",
            Service::new(&cx.config.new).describe(),
            Service::new(&cx.config.old).describe()
        )
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        let Some(journal) = journal(cx, &mut checks) else { return checks };
        if let Some(at) = journal.finished {
            checks.fail(
                "way back",
                format!("`finish` ran at {at}: the new orchestrator is the only one"),
                "there is no way back through this tool after finish: the old server is disabled and its \
                 database marked as migrated. Migrate again in the other direction if you must",
            );
            return checks;
        }
        if cx.inventory().is_err() {
            let what = if journal.step(StepId::Precopy).attempts > 0 {
                "none: halt-all never ran; rollback only removes the online copy"
            } else {
                "none: halt-all never ran, nothing to roll back"
            };
            checks.pass("inventory", what);
            return checks;
        }
        let sides: &[(&str, &Orchestrator)] = if self.new_side_gone {
            &[("old", &cx.config.old)]
        } else {
            &[("old", &cx.config.old), ("new", &cx.config.new)]
        };
        for (side, orch) in sides {
            let service = Service::new(orch);
            match service.state().await {
                Ok(state) => checks.pass(format!("{side} service"), format!("{}: {state}", service.describe())),
                Err(e) => checks.fail_on(
                    format!("{side} service"),
                    &e,
                    if *side == "new" {
                        "fix `new.service`; if the new machine is gone for good: `inmanta-migrate rollback \
                         --new-side-gone`"
                    } else {
                        "fix `old.service`"
                    },
                ),
            }
        }
        if self.new_side_gone {
            // The rule rollback asks before each resume, asked up front.
            match one_driver::new_side_is_silent(cx).await {
                Ok(()) => checks.warn(
                    "new side gone",
                    format!("nothing answers at {}", cx.config.new.api_url),
                    "going back without stopping it: whatever the new side did is lost with it, and if that machine \
                     ever comes back its server must not be started",
                ),
                Err(e) => checks.fail_on(
                    "new side gone",
                    &e,
                    "run `inmanta-migrate rollback` without --new-side-gone, which halts the new server's \
                     environments and stops it first",
                ),
            }
            return checks;
        }
        match losses(cx, &journal).await {
            Ok(lost) if lost.is_empty() => {
                checks.pass("what is lost", "nothing: the new side did no work of its own yet")
            }
            Ok(lost) if self.force => {
                checks.warn("what is lost", lost.join("; "), "going back anyway (--force): this is thrown away")
            }
            Ok(lost) => checks.fail(
                "what is lost",
                lost.join("; "),
                "to go back anyway and lose it: `inmanta-migrate rollback --force`; to keep the new side: \
                 `inmanta-migrate finish`",
            ),
            Err(e) if self.force => checks.warn(
                "what is lost",
                format!("cannot tell: {e:#}"),
                "going back anyway (--force): whatever the new side did is thrown away",
            ),
            Err(e) => checks.fail_on(
                "what is lost",
                &e,
                "make the new server answer so that rollback can list what it would throw away, or go back \
                 without the list: `inmanta-migrate rollback --force`",
            ),
        }
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let start = Instant::now();
        let work = cx.work()?;
        let journal = work.journal();
        let from = journal.reached();
        // Listed while the new server still answers (the check listed it
        // too), kept for a re-run: the report says what going back threw away.
        let lost = match work.journal().state::<RollbackState>()?.lost {
            Some(lost) => lost,
            None => {
                let lost = if self.new_side_gone {
                    vec!["whatever the new side did: it is gone (--new-side-gone)".to_owned()]
                } else {
                    losses(cx, &journal).await.unwrap_or_else(|e| vec![format!("cannot tell: {e:#}")])
                };
                work.update_state(|s: &mut RollbackState| s.lost = Some(lost.clone()))?;
                lost
            }
        };

        // 1. Nothing on the new side may drive anything from here on. An
        // online copy goes first: it runs before halt-all.
        if journal.step(StepId::Precopy).attempts > 0 {
            let old = Database::open(&cx.config, Side::Old).await?;
            if self.new_side_gone {
                // The subscription went with the new side: its slot is an orphan.
                replication::drop_orphan_slot(&old).await.context("cannot drop the online copy's slot")?;
                old.unpublish().await.context("cannot remove the online copy's publication")?;
                cx.ui.info(Self::NAME, "the online copy is removed from the old side (no slot or publication)");
            } else {
                let new = Database::open(&cx.config, Side::New).await?;
                replication::cut_off(&old, &new).await.context("cannot remove the online copy")?;
                cx.ui.info(
                    Self::NAME,
                    "the online copy is removed from both sides (no slot, publication or subscription)",
                );
            }
        }
        let Ok(inventory) = cx.inventory() else {
            if from.is_none() {
                return Ok(Outcome::nothing_to_do(Self::NAME, "no step ran: there is nothing to go back from"));
            }
            let new_side_gone = self.new_side_gone;
            work.update(|j| {
                j.rolled_back = Some(RolledBack { from, at: Timestamp::now(), disabled_new_unit: false, new_side_gone })
            })?;
            return Ok(Outcome::done(
                Self::NAME,
                "rolled back: the online copy is removed; halt-all never ran, so the old orchestrator was not touched",
            ));
        };
        let new_halted = if self.new_side_gone {
            one_driver::new_side_is_silent(cx).await?;
            give_up_new_side(cx).await
        } else {
            make_new_side_inert(cx).await?
        };
        self.new_side_lets_go(cx).await?;

        // 2. The old database as the dump left it, then the old server.
        let old_service = Service::new(&cx.config.old);
        let old_api = cx.api(Side::Old);
        if old_api.probe().await?.is_none() {
            if !work.journal().state::<RollbackState>()?.started_old {
                compare_with_dump(cx, &journal).await?;
            }
            work.update_state(|s: &mut RollbackState| s.started_old = true)?;
            if old_service.state().await? != ProcessState::Running {
                cx.ui.info(Self::NAME, format!("starting the old server ({})", old_service.describe()));
                start_service(&old_service, "old", Self::NAME).await?;
            }
            wait_until_answering(cx, Self::NAME, old_api, &old_service, "old").await?;
        }
        verify_old_environments(cx, &inventory).await?;

        // 3. Each environment as it was: resumed if it ran, its settings back.
        let mut results = Vec::new();
        for record in &inventory.environments {
            results.push(put_back(cx, record, self).await?);
        }
        verify_as_inventoried(cx, &inventory).await?;

        let at = Timestamp::now();
        let disabled_new_unit = work.journal().state::<RollbackState>()?.disabled_new_unit;
        let new_side_gone = self.new_side_gone;
        work.update(|j| j.rolled_back = Some(RolledBack { from, at, disabled_new_unit, new_side_gone }))?;
        let seconds = start.elapsed().as_secs_f64();
        let resumed = results.iter().filter(|r| r.action.starts_with("resumed")).count();
        let point = from.map_or_else(|| "the start".to_owned(), |s| s.to_string());
        let thrown_away = match lost.len() {
            0 => "nothing of the new side's work was lost".to_owned(),
            n => format!("{n} piece(s) of the new side's work thrown away: {}", lost.join("; ")),
        };
        let new_side = if self.new_side_gone {
            format!(
                "the new side was given up ({new_halted} environment(s) halted in its database by this run; if that \
                 machine comes back, do not start its server)"
            )
        } else {
            format!("the new server is stopped ({new_halted} environment(s) halted there by this run)")
        };
        Ok(Outcome::done(
            Self::NAME,
            format!(
                "rolled back from {point} in {seconds:.1} s: {new_side}; the old server runs with {resumed} environment(s) resumed and {} left \
                 halted as before; {thrown_away}. `inmanta-migrate migrate` starts a new attempt",
                results.len() - resumed
            ),
        )
        .figures(Figures { seconds: Some(seconds), environments: Some(results.len()), ..Figures::default() })
        .details(RolledBackDetails { lost, environments: results }))
    }
}

/// The journal, or a failed check that says why not.
fn journal(cx: &Context, checks: &mut Checks) -> Option<Journal> {
    match cx.work() {
        Ok(work) => Some(work.journal()),
        Err(e) => {
            checks.fail_on("work directory", &e, "fix `work_dir`");
            None
        }
    }
}

/// What going back would throw away of the new side's own work (`plan`
/// and `status` say it at every point too).
pub async fn losses(cx: &Context, journal: &Journal) -> anyhow::Result<Vec<String>> {
    // Before a server ran on the new database, nothing was done there.
    if journal.step(StepId::StartServer).attempts == 0 {
        return Ok(Vec::new());
    }
    // Held against the new side as its schema migration left it (which may
    // add settings), or as the old side had it when start-server could not
    // take that.
    // Read without opening (locking) the work directory: `status` asks too.
    let upgraded: Option<Inventory> = fsutil::read_json(&cx.config.work_dir.join(Inventory::NEW_FILE)).ok();
    // Without it, settings cannot be told apart: the upgrade sets some.
    let compare_settings = upgraded.is_some();
    let inventory = match upgraded {
        Some(upgraded) => upgraded,
        None => cx.inventory()?,
    };
    let api = cx.api(Side::New);
    let Some(status) = api.probe().await? else {
        let touched: Vec<&str> = journal
            .environments
            .values()
            .filter(|r| matches!(r.phase, Some(p) if p >= EnvPhase::Resumed))
            .map(|r| r.name.as_str())
            .collect();
        if touched.is_empty() {
            return Ok(Vec::new());
        }
        bail!(
            "the new server does not answer, and env-reconcile resumed {} there: what it did cannot be listed",
            touched.join(", ")
        );
    };
    let mut lost = Vec::new();
    for env in api.environments().await.context("cannot list the new server's environments")? {
        if inventory.environment(env.id).is_none() {
            lost.push(format!("{}: an environment created on the new server", env.name));
        }
    }
    for record in &inventory.environments {
        let live = match api.environment(record.id).await {
            Ok(live) => live,
            // Deleted there: nothing of it to lose.
            Err(e) if e.status() == Some(404) => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {} on the new server", record.label())),
        };
        let name = &record.name;
        let latest = api.latest_version(record.id).await?.map(|v| v.version);
        if latest > record.latest_version
            && let Some(latest) = latest
        {
            lost.push(format!("{name}: version {latest} compiled on the new server"));
        }
        let released = api.latest_released_version(record.id, status.core_version).await?.map(|v| v.version);
        if released > record.latest_released_version
            && let Some(released) = released
        {
            lost.push(format!("{name}: version {released} released on the new server (it may have deployed)"));
        }
        // auto_deploy is the migration's own to change and put back.
        for (key, value) in live.settings.iter().filter(|_| compare_settings) {
            if key != "auto_deploy" && record.settings.get(key) != Some(value) {
                lost.push(format!("{name}: setting {key} changed on the new server to {value}"));
            }
        }
    }
    Ok(lost)
}

/// Halts every environment the new server runs (while it answers), then
/// stops it and, with systemd, disables it; intermediate servers left
/// running by an interrupted start-server are stopped too. How many
/// environments it halted.
async fn make_new_side_inert(cx: &Context) -> anyhow::Result<usize> {
    let api = cx.api(Side::New);
    let mut halted = 0;
    if api.probe().await?.is_some() {
        for env in api.environments().await.context("cannot list the new server's environments")? {
            if !env.halted {
                api.halt(env.id).await.with_context(|| format!("cannot halt {} on the new server", env.name))?;
                cx.ui.info(Rollback::NAME, format!("halted {} ({}) on the new server", env.name, env.id));
                halted += 1;
            }
        }
    }
    let intermediates: Vec<_> = cx.config.intermediate.iter().map(|i| i.orchestrator(&cx.config.new)).collect();
    let servers = intermediates.iter().map(|orch| ("intermediate", orch)).chain([("new", &cx.config.new)]);
    for (label, orch) in servers {
        let service = Service::new(orch);
        stop_and_wait(cx, Rollback::NAME, &service, label).await?;
        if label == "new" && service.set_enabled(false).await? {
            cx.ui.info(Rollback::NAME, format!("disabled {}: a reboot does not bring it back", service.describe()));
            cx.work()?.update_state(|s: &mut RollbackState| s.disabled_new_unit = true)?;
        }
    }
    Ok(halted)
}

/// `--new-side-gone`: the new server cannot be reached to stop it, so its
/// database, where it still answers, is made inert (every environment
/// halted, every agent paused) so that a server that comes back with it
/// starts nothing. How many environments that halted; a database that does
/// not answer is gone with the machine, and said so.
async fn give_up_new_side(cx: &Context) -> usize {
    let inert = async {
        let new = Database::open(&cx.config, Side::New).await?;
        let running = new.not_inert().await?.running.len();
        new.make_inert().await?;
        anyhow::Ok(running)
    };
    match inert.await {
        Ok(halted) => {
            cx.ui.info(Rollback::NAME, "every environment in the new database is halted and every agent paused");
            halted
        }
        Err(e) => {
            cx.ui.warn(Rollback::NAME, format!("the new database could not be made inert (gone too?): {e:#}"));
            0
        }
    }
}

/// While it was down nothing may have changed the old database: the rows of
/// every table the dump counted are still there, table by table.
async fn compare_with_dump(cx: &Context, journal: &Journal) -> anyhow::Result<()> {
    if !journal.is_done(StepId::Dump) {
        return Ok(());
    }
    let manifest = Manifest::read(&cx.config.dump_dir()).context("cannot read the dump's manifest")?;
    let db = Database::open(&cx.config, Side::Old).await?;
    let tables: Vec<String> = manifest.tables.keys().cloned().collect();
    let now = db.row_counts(&tables).await?;
    let changed: Vec<String> = manifest
        .tables
        .iter()
        .filter(|(table, rows)| now.get(*table) != Some(rows))
        .map(|(table, rows)| format!("{table}: {rows} rows at the dump, {} now", now.get(table).copied().unwrap_or(0)))
        .collect();
    if !changed.is_empty() {
        return Err(NeedsOperator(format!(
            "the old database changed since the dump, while its server was down; the old server is not started:\n  \
             {}\nfind out what wrote to {} (another server on that database?) before going back",
            changed.join("\n  "),
            db.target
        ))
        .into());
    }
    cx.ui.info(Rollback::NAME, format!("the old database is as the dump counted it ({} tables)", tables.len()));
    Ok(())
}

/// The old server holds the inventory's environments, with the same names,
/// projects and latest versions.
async fn verify_old_environments(cx: &Context, inventory: &Inventory) -> anyhow::Result<()> {
    let api = cx.api(Side::Old);
    let live = api.environments().await.context("cannot list the old server's environments")?;
    let mut problems = Vec::new();
    for record in &inventory.environments {
        match live.iter().find(|e| e.id == record.id) {
            None => problems.push(format!("{} is missing", record.label())),
            Some(env) if env.name != record.name || env.project_id != record.project_id => {
                problems.push(format!("{} changed name or project (now {:?})", record.label(), env.name))
            }
            // One resumed by an interrupted run of rollback may have moved on.
            Some(env) if !env.halted => {}
            Some(_) => {
                let latest = api.latest_version(record.id).await?.map(|v| v.version);
                if latest != record.latest_version {
                    problems.push(format!(
                        "{} has latest version {latest:?}, the inventory {:?}",
                        record.label(),
                        record.latest_version
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(NeedsOperator(format!(
            "the old server does not hold what the inventory recorded; nothing was resumed:\n  {}",
            problems.join("\n  ")
        ))
        .into());
    }
    Ok(())
}

/// One environment back as the inventory has it: its stored settings, then
/// resumed if it ran before (halting paused its agents and marked the
/// others to unpause on resume: agents paused before stay paused).
async fn put_back(cx: &Context, record: &EnvironmentRecord, rollback: &Rollback) -> anyhow::Result<EnvBack> {
    let api = cx.api(Side::Old);
    let live = api.environment(record.id).await?;
    let mut changed = Vec::new();
    for (key, value) in &record.settings {
        if live.settings.get(key) != Some(value) {
            api.set_setting(record.id, key, value.clone())
                .await
                .with_context(|| format!("cannot put setting {key} of {} back", record.label()))?;
            changed.push(key.clone());
        }
    }
    let action = if record.halted {
        "left halted, as before".to_owned()
    } else if live.halted {
        rollback.new_side_lets_go(cx).await?;
        api.resume(record.id).await.with_context(|| format!("cannot resume {}", record.label()))?;
        "resumed".to_owned()
    } else {
        "resumed already".to_owned()
    };
    let action =
        if changed.is_empty() { action } else { format!("{action}; settings put back: {}", changed.join(", ")) };
    cx.ui.info(Rollback::NAME, format!("{}: {action}", record.label()));
    Ok(EnvBack { id: record.id, name: record.name.clone(), action })
}

/// After: halted flags and stored settings equal the inventory's.
async fn verify_as_inventoried(cx: &Context, inventory: &Inventory) -> anyhow::Result<()> {
    let api = cx.api(Side::Old);
    let mut problems = Vec::new();
    for record in &inventory.environments {
        let live = api.environment(record.id).await?;
        if live.halted != record.halted {
            problems.push(format!("{} is {}", record.label(), if live.halted { "halted" } else { "running" }));
        }
        for (key, value) in &record.settings {
            if live.settings.get(key) != Some(value) {
                problems.push(format!("{}: setting {key} is {:?}", record.label(), live.settings.get(key)));
            }
        }
    }
    if !problems.is_empty() {
        bail!("the old side is not as the inventory recorded it:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// Old side: the point of no return, once the new side is accepted.
#[derive(Debug, Default, clap::Args)]
pub struct Finish {
    /// Also delete the dump (it holds the database's secrets).
    #[arg(long)]
    pub remove_dump: bool,
    /// Finish although env-reconcile is not done.
    #[arg(long)]
    pub force: bool,
}

impl Step for Finish {
    const ID: StepId = StepId::Finish;

    fn describe(&self, cx: &Context) -> String {
        let dump = if self.remove_dump { ", delete the dump" } else { "" };
        format!(
            "stop and disable the old server ({}), mark the old database as migrated{dump}: no way back after this",
            Service::new(&cx.config.old).describe()
        )
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        let Some(journal) = journal(cx, &mut checks) else { return checks };
        if journal.rolled_back.is_some() {
            checks.fail(
                "migration",
                "it was rolled back: the old orchestrator is the one in use",
                "run `inmanta-migrate migrate` for a new attempt first",
            );
        } else if journal.is_done(StepId::EnvReconcile) {
            checks.pass("migration", "env-reconcile is done: the new side runs every environment");
        } else if self.force {
            checks.warn("migration", "env-reconcile is not done", "finishing anyway (--force)");
        } else {
            checks.fail(
                "migration",
                "env-reconcile is not done: the new side does not run every environment yet",
                "finish the migration first (`inmanta-migrate migrate`), or pass --force",
            );
        }
        let service = Service::new(&cx.config.old);
        match service.state().await {
            Ok(state) => checks.pass("old service", format!("{}: {state}", service.describe())),
            Err(e) => checks.fail_on("old service", &e, "fix `old.service`"),
        }
        if matches!(cx.api(Side::Old).probe().await, Ok(Some(_))) {
            checks.warn(
                "old API",
                format!("{} answers: the old server runs again", cx.config.old.api_url),
                "finish stops it; find out who started it: two orchestrators must not drive the same environments",
            );
        }
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let work = cx.work()?;
        let service = Service::new(&cx.config.old);
        stop_and_wait(cx, Self::NAME, &service, "old").await?;
        let disabled = service.set_enabled(false).await?;
        let at = Timestamp::now();
        let marked = mark_old_database(cx, at).await;
        if let Err(e) = &marked {
            cx.ui.warn(Self::NAME, format!("the old database could not be marked as migrated: {e:#}"));
        }
        // The dumps of rolled-back attempts hold the same secrets.
        let mut removed = Vec::new();
        if self.remove_dump {
            let dir = cx.config.dump_dir();
            let attempts = (1..=work.journal().earlier.len()).map(|n| format!("{dir}.attempt-{n}").into());
            for dump in std::iter::once(dir.clone()).chain(attempts) {
                if dump.exists() {
                    std::fs::remove_dir_all(&dump).with_context(|| format!("cannot delete the dump in {dump}"))?;
                    removed.push(dump.to_string());
                }
            }
        }
        work.update(|j| j.finished = Some(at))?;
        let mut said = vec![match (disabled, cx.config.old.service.manager) {
            (true, _) => format!("{} stopped and disabled", service.describe()),
            (false, Manager::Systemd) => format!("{} stopped; it was not enabled", service.describe()),
            (false, Manager::Command) => format!(
                "{} stopped (commands cannot disable it: make sure nothing starts it again)",
                service.describe()
            ),
        }];
        if marked.is_ok() {
            said.push("the old database is marked as migrated".to_owned());
        }
        if !removed.is_empty() {
            said.push(format!("deleted the dump(s) {}", removed.join(", ")));
        }
        Ok(Outcome::done(Self::NAME, format!("finished: {}; rollback is no longer possible", said.join("; "))))
    }
}

/// A comment on the old database that tells whoever looks that it moved.
async fn mark_old_database(cx: &Context, at: Timestamp) -> anyhow::Result<()> {
    let db = Database::open(&cx.config, Side::Old).await?;
    let text = format!(
        "migrated by inmanta-migrate to {} at {at}; no orchestrator should start on this database",
        cx.config.new.api_url
    );
    db.comment_on_database(&text).await
}
