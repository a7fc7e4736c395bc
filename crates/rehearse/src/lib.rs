//! `rehearse`: the whole migration on a copy, before the window, while the
//! old orchestrator runs on. Only reads the old side: `pg_dump` of its
//! running database into a scratch database on the NEW PostgreSQL. There,
//! before any server opens it, every environment is halted and every agent
//! paused (the rule of [`nothing_can_deploy`]); then each intermediate
//! server and the new one start on it through the new side's own service,
//! with the port, state directory and database of `[rehearsal]` (settings
//! the server reads from its environment), and their schema migrations are
//! timed. Each environment is then compiled by the new version, its agents
//! still paused and no version released, and its desired state compared
//! with the old side's released one. At the end nothing is left: server
//! stopped, scratch database dropped, state directory removed. What it
//! found goes to `rehearsal.json`, with the window it predicts.

use std::time::Instant;

use anyhow::{Context as _, bail};
use futures::{StreamExt, future::Either};
use inmanta_api::{Client, ServerVersion, VersionedResource, strip_version};
use jiff::Timestamp;
use migrate_core::{
    Checks, Context, Figures, Outcome, Side, Step, StepId,
    config::{CopyMode, DumpFormat, DumpOptions, Orchestrator},
    dryrun, fsutil,
    inventory::{EnvironmentRecord, Inventory},
    journal::StepState,
    probe,
    rehearsal::{
        Baseline, CopyRun, EnvOutcome, EnvRehearsal, MachineCpu, Rehearsal, ServerRun, Window, WindowPart, makespan,
    },
    service::{ProcessState, Service, start_service, stop_and_wait, wait_until_answering},
    wait,
};
use migrate_pg::Database;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// New side: before the window, the whole migration on a copy of the
/// running old database, with nothing touched and nothing deployed.
#[derive(Debug, Default, clap::Args)]
pub struct Rehearse {
    /// Only remove what an earlier rehearsal left behind (its server, the
    /// scratch database, the state directory, the copy of the dump).
    #[arg(long)]
    pub clean: bool,
    /// Also dry-run every running environment on the OLD server (a dry-run
    /// changes nothing on the managed infrastructure): what already differs
    /// before the migration, which `env-reconcile` then tells from what the
    /// migration changed, and each dry-run's time for the window estimate.
    #[arg(long, conflicts_with = "clean")]
    pub baseline: bool,
}

/// What a rehearsal killed anywhere left, for the next one to clean up.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RehearseState {
    /// A rehearsal began and has not cleaned up yet: its scratch database,
    /// server or state directory may be there.
    pub began: bool,
    /// It asked the new side's service to start a rehearsal server: the
    /// service may run one now, and its overrides may be installed.
    pub server_started: bool,
}

impl StepState for RehearseState {
    const STEP: StepId = StepId::Rehearse;
}

impl Step for Rehearse {
    const ID: StepId = StepId::Rehearse;

    fn runs_when_done(&self) -> bool {
        true
    }

    fn describe(&self, cx: &Context) -> String {
        let r = &cx.config.rehearsal;
        if self.clean {
            return format!(
                "remove what a rehearsal left: its server, database {}, state directory {}",
                cx.config.rehearsal_database(),
                r.state_dir
            );
        }
        format!(
            "copy the running old database into {} on the new PostgreSQL, halt and pause everything in it, start each \
             server on it (port {}, state {}), compile every environment on the new version, compare, clean up",
            cx.config.rehearsal_database(),
            r.port,
            r.state_dir
        )
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        if let Ok(work) = cx.work() {
            let journal = work.journal();
            if let Some(reached) = journal.reached().filter(|s| *s >= StepId::HaltAll)
                && journal.rolled_back.is_none()
                && journal.finished.is_none()
            {
                checks.fail(
                    "before the window",
                    format!("this migration is at {reached}: a rehearsal comes before `halt-all`"),
                    "rehearse with another work_dir, or after `rollback`",
                );
            }
        }
        if self.clean {
            return checks;
        }
        let old = probe::api(cx, Side::Old, &mut checks).await;
        // The rehearsal runs the new side's service: the real new server
        // (and every intermediate) must be stopped.
        let ours = cx.work().map(|w| w.journal().state::<RehearseState>().unwrap_or_default().server_started);
        if !matches!(ours, Ok(true)) {
            probe::new_server_stopped(cx, &mut checks).await;
        }
        let service = Service::new(&cx.config.new);
        if let Ok(true) = service.runs_in_container().await {
            checks.fail("server in a container", in_a_container(&service), CONTAINER_WAY_OUT);
        }
        match cx.rehearsal_api(None) {
            Ok(api) => match api.probe().await {
                Ok(Some(status)) if !matches!(ours, Ok(true)) => checks.fail(
                    "rehearsal port",
                    format!(
                        "a server (inmanta-core {}) answers on port {}",
                        status.core_version, cx.config.rehearsal.port
                    ),
                    "stop it, or give `rehearsal.port` a free port",
                ),
                _ => checks.pass("rehearsal port", format!("{} is free", cx.config.rehearsal_api_url())),
            },
            Err(e) => checks.fail_on("rehearsal port", &e, "fix `rehearsal.port`"),
        }
        let new = probe::installed_new_version(cx, &mut checks).await;
        match Database::open(&cx.config, Side::New).await {
            Ok(db) => {
                db.check_tools(&["pg_dump", "pg_restore"], None, &mut checks).await;
                // What the window's new server will open, for this inventory.
                if let (Some(version), Some((_, envs))) = (new, &old) {
                    let running = envs.iter().filter(|e| !e.halted).count() as u32;
                    match db.connection_slots().await {
                        Ok(slots) => probe::new_connections(version, &db.target.pools, running, slots, &mut checks),
                        Err(e) => checks.fail_on("PostgreSQL connections", &e, "check `new.database.admin_user`"),
                    }
                }
                match db.named(&cx.config.rehearsal_database()) {
                    Ok(scratch) => match scratch.exists().await {
                        Ok(_) => checks
                            .pass("scratch database", format!("{} can be created by the admin role", scratch.target)),
                        Err(e) => checks.fail_on("scratch database", &e, "fix `new.database.admin_user`"),
                    },
                    Err(e) => checks.fail_on("scratch database", &e, "fix `new.database`"),
                }
            }
            Err(e) => checks.fail_on("new database", &e, "fix `new.database`"),
        }
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let removed = clean_up(cx).await?;
        if self.clean {
            let summary = if removed.is_empty() {
                "nothing was left to remove".to_owned()
            } else {
                format!("removed {}", removed.join(", "))
            };
            return Ok(Outcome::done(Self::NAME, summary));
        }
        cx.work()?.update_state(|s: &mut RehearseState| s.began = true)?;
        let result = rehearse(cx, self.baseline).await;
        // Killed or failed anywhere, nothing stays behind; a failure to
        // clean up is said, never hidden behind the first error.
        let clean = "run `inmanta-migrate rehearse --clean`";
        let rehearsal = match (result, clean_up(cx).await) {
            (Ok(rehearsal), Ok(_)) => rehearsal,
            (Ok(_), Err(e)) => {
                return Err(e.context(format!("the rehearsal ran, but what it started is not all removed: {clean}")));
            }
            (Err(e), Ok(_)) => return Err(e),
            (Err(e), Err(left)) => {
                return Err(e.context(format!(
                    "the rehearsal failed, and what it started is not all removed ({left:#}): {clean}"
                )));
            }
        };
        fsutil::write_json(&cx.work()?.path(Rehearsal::FILE), &rehearsal)?;
        Ok(outcome(cx, &rehearsal))
    }
}

/// The settings that put a server on the copy, never on the new server's
/// port, state directory or database.
fn overrides(cx: &Context, scratch: &Database) -> Vec<(String, String)> {
    let port = cx.config.rehearsal.port.to_string();
    let mut all = vec![
        ("INMANTA_DATABASE_NAME".to_owned(), scratch.target.name.clone()),
        ("INMANTA_SERVER_BIND_PORT".to_owned(), port.clone()),
        ("INMANTA_CONFIG_STATE_DIR".to_owned(), cx.config.rehearsal.state_dir.to_string()),
    ];
    // What the server hands to its compiles to reach it.
    for section in ["AGENT", "COMPILER", "CLIENT"] {
        all.push((format!("INMANTA_{section}_REST_TRANSPORT_PORT"), port.clone()));
    }
    all
}

/// What to do when the new server runs in a container.
const CONTAINER_WAY_OUT: &str = "rehearse on a copy of the machine whose server config names the rehearsal's \
     database and port, or go without a rehearsal: `check` and the window's steps do not need one";

/// Why a rehearsal cannot start a server run by a container engine: its
/// settings go into the unit's environment (a runtime drop-in), which is
/// podman's, not the server's in the container; the server would start on
/// the new server's own database and port.
fn in_a_container(service: &Service<'_>) -> String {
    format!(
        "{} runs the server in a container (its ExecStart is podman or docker): the rehearsal's settings, given as \
         the unit's environment, would not reach the server, which would start on the new server's own database",
        service.describe()
    )
}

/// The rule: nothing a rehearsal starts may deploy. Asked before any
/// server opens the copy: every environment halted, every agent paused.
async fn nothing_can_deploy(scratch: &Database) -> anyhow::Result<()> {
    let left = scratch.not_inert().await?;
    if !left.is_empty() {
        bail!("refusing to start a server on {}: {left}; nothing a rehearsal starts may deploy", scratch.target);
    }
    Ok(())
}

async fn rehearse(cx: &Context, baseline: bool) -> anyhow::Result<Rehearsal> {
    let started = Timestamp::now();
    let clock = Instant::now();
    let inventory = Inventory::take(cx.api(Side::Old)).await.context("cannot take the old server's inventory")?;
    let inventory_seconds = clock.elapsed().as_secs_f64();
    let baselines: Vec<Option<Baseline>> = if baseline {
        let concurrency = cx.config.reconcile.concurrency as usize;
        futures::stream::iter(inventory.environments.iter().map(|env| baseline_of(cx, env)))
            .buffered(concurrency)
            .collect()
            .await
    } else {
        vec![None; inventory.environments.len()]
    };
    let new_db = Database::open(&cx.config, Side::New).await?;
    let scratch = new_db.named(&cx.config.rehearsal_database())?;

    // 1. The copy, as `dump` and `restore` would make it (timed).
    let copy = copy_into(cx, &scratch).await?;
    scratch.make_inert().await?;
    let deploys_in_copy = scratch.deploy_actions().await?;

    // 2. Each server on the copy, intermediates first.
    make_state_dir(cx).await?;
    let mut servers = Vec::new();
    for (i, via) in cx.config.intermediate.iter().enumerate() {
        let orch = via.orchestrator(&cx.config.new);
        let label = format!("rehearsal intermediate inmanta-core {}", via.version);
        let mut run = start_on_copy(cx, Some(i), &orch, &scratch, &label, Some(&via.version)).await?;
        run.stop_seconds = Some(stop(cx, &orch, &label).await?);
        servers.push(run);
    }
    let label = "rehearsal new";
    let mut last = start_on_copy(cx, None, &cx.config.new, &scratch, label, None).await?;

    // 3. Every environment compiled by the new version.
    let api = cx.rehearsal_api(None)?;
    let run_id = started.strftime("%Y%m%dT%H%M%S").to_string();
    let concurrency = cx.config.reconcile.concurrency as usize;
    let cpu_before = machine_cpu(cx).await;
    let mut environments: Vec<EnvRehearsal> =
        futures::stream::iter(inventory.environments.iter().map(|env| rehearse_env(cx, &api, &scratch, env, &run_id)))
            .buffered(concurrency)
            .collect()
            .await;
    let compile_cpu = match (cpu_before, machine_cpu(cx).await) {
        (Ok(before), Ok(after)) => Some(after.since(&before)),
        (Err(e), _) | (_, Err(e)) => {
            cx.ui.warn(
                Rehearse::NAME,
                format!("the new machine's CPU time could not be read (the window is predicted without it): {e:#}"),
            );
            None
        }
    };
    for (env, baseline) in environments.iter_mut().zip(baselines) {
        env.baseline = baseline;
    }
    last.stop_seconds = Some(stop(cx, &cx.config.new, label).await?);
    servers.push(last);
    let deploys_after = scratch.deploy_actions().await?;
    if deploys_after != deploys_in_copy {
        bail!(
            "the copy records {} deploy action(s) more than when it was made: something the rehearsal started deployed; \
             look at the managed infrastructure now, and report this",
            deploys_after - deploys_in_copy
        );
    }
    let window = predict(cx, inventory_seconds, &copy, &servers, &environments, compile_cpu.as_ref());
    Ok(Rehearsal {
        schema_version: migrate_core::contract::VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        started: started.to_string(),
        seconds: clock.elapsed().as_secs_f64(),
        old_version: inventory.core_version.to_string(),
        copy,
        servers,
        environments,
        compile_cpu,
        deploy_actions: [deploys_in_copy, deploys_after],
        window,
    })
}

/// `pg_dump` of the running old database (its own consistent snapshot),
/// or in online mode once `precopy` is done of the new side's copy (which
/// spares the old side the read and goes on replicating meanwhile), into
/// the work directory; loaded into the scratch database, the archive
/// removed at once (it holds the database's secrets).
async fn copy_into(cx: &Context, scratch: &Database) -> anyhow::Result<CopyRun> {
    let dir = cx.work()?.path("rehearsal");
    fsutil::create_private_dir(&dir)?;
    let archive = dir.join("copy");
    let from_copy = cx.config.copy.mode == CopyMode::Online && cx.work()?.journal().is_done(StepId::Precopy);
    let source = Database::open(&cx.config, if from_copy { Side::New } else { Side::Old }).await?;
    let what = if from_copy { "the new side's online copy" } else { "the old database" };
    let options = DumpOptions { format: DumpFormat::Directory, ..cx.config.dump.clone() };
    let tables = source.tables().await?.len();
    cx.ui.info(Rehearse::NAME, format!("copying {what} ({}) with pg_dump", source.target));
    let clock = Instant::now();
    let progress = cx.ui.progress(Rehearse::NAME, "tables copied", tables as u64);
    let out = source
        .dump_command(&options, None, &archive)
        // The online copy's own objects are not the orchestrator's.
        .args(["--no-publications", "--no-subscriptions"])
        .cmd()
        .stream(|line| Database::dumped_table(line).into_iter().for_each(|table| progress.inc(table)))
        .await?;
    drop(progress);
    if !out.success() {
        let failed = format!("pg_dump of {what} failed (exit code {})", out.code);
        return Err(source.tool_failure(failed, &out.stderr, "run `inmanta-migrate rehearse` again").into());
    }
    let dump_seconds = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    cx.ui.info(Rehearse::NAME, format!("loading the copy into {}", scratch.target));
    scratch.create().await?;
    let out = {
        let _spinner = cx.ui.spinner(Rehearse::NAME, "pg_restore is loading the copy");
        scratch.restore_command(cx.config.restore.jobs, &archive).cmd().output().await?
    };
    if !out.success() {
        let failed = format!("loading the copy failed (exit code {})", out.code);
        return Err(scratch.tool_failure(failed, &out.stderr, "run `inmanta-migrate rehearse` again").into());
    }
    scratch.analyze(cx.config.restore.jobs).await?;
    let restore_seconds = clock.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&archive).with_context(|| format!("cannot remove {archive}"))?;
    Ok(CopyRun {
        database: source.target.to_string(),
        database_bytes: source.size_bytes().await.unwrap_or(0),
        tables,
        dump_seconds,
        restore_seconds,
    })
}

/// Starts one server on the copy through the new side's service, as
/// `start-server` does, and times it until its API answers.
async fn start_on_copy(
    cx: &Context,
    index: Option<usize>,
    orch: &Orchestrator,
    scratch: &Database,
    label: &str,
    expected: Option<&str>,
) -> anyhow::Result<ServerRun> {
    nothing_can_deploy(scratch).await?;
    let service = Service::new(orch).with_overrides(overrides(cx, scratch));
    if service.runs_in_container().await? {
        bail!("{}; {CONTAINER_WAY_OUT}", in_a_container(&service));
    }
    let before = schema_count(scratch).await?;
    // Written down first: a kill right after leaves a drop-in to remove.
    cx.work()?.update_state(|s: &mut RehearseState| s.server_started = true)?;
    service.install_overrides().await?;
    cx.ui.info(Rehearse::NAME, format!("starting the {label} server on the copy ({})", service.describe()));
    let clock = Instant::now();
    start_service(&service, label, Rehearse::NAME).await?;
    let api = cx.rehearsal_api(index)?;
    // A start command that drops the environment starts the server on
    // the new server's own port and database: stop it at once.
    let real = cx.api(Side::New);
    let elsewhere = async {
        // Longer than the wait for the rehearsal's port, which ends first.
        let limit = cx.config.timeouts.start + std::time::Duration::from_secs(60);
        wait::until(std::time::Duration::from_secs(1), limit, "the new server's own port to stay silent", async || {
            Ok(real.probe().await.ok().flatten())
        })
        .await
    };
    let answering = std::pin::pin!(wait_until_answering(cx, Rehearse::NAME, &api, &service, label));
    let status = match futures::future::select(answering, std::pin::pin!(elsewhere)).await {
        Either::Left((status, _)) => status?,
        Either::Right((Err(e), _)) => return Err(e),
        Either::Right((Ok(_), _)) => {
            let _ = stop_and_wait(cx, Rehearse::NAME, &service, label).await;
            bail!(
                "the {label} server answers on {}, the new server's own port, not on the rehearsal's: its service does \
                 not pass the INMANTA_* environment on to the server (with commands, `start` must keep the environment \
                 it is given); it is stopped again. The new database may now hold a schema: `restore --replace` \
                 replaces it in the window",
                cx.config.new.api_url
            );
        }
    };
    let seconds_to_answer = clock.elapsed().as_secs_f64();
    if let Some(expected) = expected
        && status.core_version.to_string() != expected
    {
        bail!("the {label} server answers as inmanta-core {}, not {expected}", status.core_version);
    }
    let schema_migrations = schema_count(scratch).await?.saturating_sub(before);
    cx.ui.info(
        Rehearse::NAME,
        format!(
            "inmanta-core {} answers after {seconds_to_answer:.1} s ({schema_migrations} schema migration(s))",
            status.core_version
        ),
    );
    Ok(ServerRun { version: status.core_version.to_string(), seconds_to_answer, schema_migrations, stop_seconds: None })
}

/// Stops a rehearsal server; returns how long it took.
async fn stop(cx: &Context, orch: &Orchestrator, label: &str) -> anyhow::Result<f64> {
    let service = Service::new(orch);
    let clock = Instant::now();
    stop_and_wait(cx, Rehearse::NAME, &service, label).await?;
    service.remove_overrides().await?;
    Ok(clock.elapsed().as_secs_f64())
}

async fn schema_count(db: &Database) -> anyhow::Result<usize> {
    Ok(db.schema_versions().await?.get("core").map_or(0, Vec::len))
}

/// The old server's dry-run of a running environment's released version.
async fn baseline_of(cx: &Context, env: &EnvironmentRecord) -> Option<Baseline> {
    let version = env.latest_released_version.filter(|_| !env.halted)?;
    let clock = Instant::now();
    let baseline = match dryrun::dry_run(cx, cx.api(Side::Old), env, version, Rehearse::NAME).await {
        Ok(report) => {
            let (differences, _) = dryrun::judge(&report, env);
            Baseline { differences, seconds: clock.elapsed().as_secs_f64(), error: None }
        }
        Err(e) => {
            Baseline { differences: Vec::new(), seconds: clock.elapsed().as_secs_f64(), error: Some(format!("{e:#}")) }
        }
    };
    let said = match (&baseline.error, baseline.differences.len()) {
        (Some(e), _) => format!("no dry-run on the old side: {e}"),
        (None, 0) => format!("the old side's dry-run of version {version} shows no difference"),
        (None, n) => format!("the old side's dry-run of version {version} shows {n} difference(s) already"),
    };
    cx.ui.info(Rehearse::NAME, format!("{}: {said}", env.name));
    Some(baseline)
}

/// One environment on the new version: auto_deploy off, its compile let
/// through (the environment un-halted in the database for just that
/// compile, its agents paused throughout), then its desired state held
/// against the old side's released version.
async fn rehearse_env(
    cx: &Context,
    api: &Client,
    scratch: &Database,
    env: &EnvironmentRecord,
    run_id: &str,
) -> EnvRehearsal {
    let mut result = EnvRehearsal {
        id: env.id,
        name: env.name.clone(),
        halted_before: env.halted,
        outcome: EnvOutcome::Fails,
        compile_seconds: None,
        compared_with: env.latest_released_version,
        version: None,
        resources: None,
        differences: Vec::new(),
        notes: Vec::new(),
        error: None,
        baseline: None,
    };
    if let Err(e) = compile_and_compare(cx, api, scratch, env, run_id, &mut result).await {
        result.outcome = EnvOutcome::Fails;
        result.error = Some(format!("{e:#}"));
    }
    let said = match result.outcome {
        EnvOutcome::Differs => format!("{} ({} difference(s))", result.outcome.words(), result.differences.len()),
        outcome => outcome.words().to_owned(),
    };
    cx.ui.info(Rehearse::NAME, format!("{}: {said}", env.name));
    result
}

async fn compile_and_compare(
    cx: &Context,
    api: &Client,
    scratch: &Database,
    env: &EnvironmentRecord,
    run_id: &str,
    result: &mut EnvRehearsal,
) -> anyhow::Result<()> {
    let id = env.id;
    match api.set_setting(id, "auto_deploy", Value::Bool(false)).await {
        Ok(_) => {}
        // 15.3+ projects may protect it: the export then releases the
        // version, to agents that are paused in a halted environment.
        Err(e) if e.status() == Some(403) => {}
        Err(e) => return Err(e).context("cannot turn auto_deploy off"),
    }
    let marker = format!("inmanta-migrate rehearse {run_id}: update & recompile on the new version");
    let clock = Instant::now();
    let compiled = async {
        scratch.let_compile(&id.to_string()).await?;
        let warnings = api.update_and_recompile(id, &marker).await.context("cannot request the compile")?;
        if !warnings.is_empty() {
            bail!("the server did not queue the compile: {}", warnings.join("; "));
        }
        let options = &cx.config.reconcile;
        let what = format!("the compile of {} (reconcile.compile_timeout)", env.name);
        wait::until(options.poll_interval, options.compile_timeout, &what, async || {
            Ok(api.compile_with_marker(id, &marker).await?.filter(|c| c.is_done()))
        })
        .await
    }
    .await;
    // Halted and paused again whatever happened: only that compile was
    // let through.
    scratch.halt_again(&id.to_string()).await?;
    let compile = compiled?;
    result.compile_seconds = Some(clock.elapsed().as_secs_f64());
    if compile.success != Some(true) {
        let details = api.compile_details(id, compile.id).await?;
        result.outcome = EnvOutcome::Fails;
        result.error = Some(details.failure_text());
        return Ok(());
    }
    let version = compile.version.context("the compile succeeded but exported no version")?;
    result.version = Some(version);
    let before = match env.latest_released_version {
        Some(old) => api.version_resources(id, old).await.with_context(|| format!("cannot read version {old}"))?,
        None => Vec::new(),
    };
    let after = api.version_resources(id, version).await.with_context(|| format!("cannot read version {version}"))?;
    result.resources = Some(after.len());
    (result.differences, result.notes) = differences(&before, &after);
    result.outcome = if result.differences.is_empty() { EnvOutcome::Same } else { EnvOutcome::Differs };
    Ok(())
}

/// Resource by resource, attribute by attribute, what changed between two
/// desired states; version numbers inside ids do not count. An attribute
/// that only one side has (a new version of a module exports a new one with
/// its default, say) is no difference of desired state: it is a note,
/// one per attribute name.
pub fn differences(before: &[VersionedResource], after: &[VersionedResource]) -> (Vec<String>, Vec<String>) {
    use std::collections::{BTreeMap, BTreeSet};
    let index = |resources: &[VersionedResource]| -> BTreeMap<String, serde_json::Map<String, Value>> {
        resources
            .iter()
            .map(|r| {
                let mut attributes = r.attributes.clone();
                attributes.remove("version");
                attributes.values_mut().for_each(unversion);
                (r.id(), attributes)
            })
            .collect()
    };
    let (old, new) = (index(before), index(after));
    let mut out = Vec::new();
    let (mut added, mut dropped) = (BTreeSet::new(), BTreeSet::new());
    for (id, was) in &old {
        let Some(is) = new.get(id) else {
            out.push(format!("{id}: removed"));
            continue;
        };
        for (key, a) in was {
            match is.get(key) {
                None => _ = dropped.insert(key.clone()),
                Some(b) if a != b => out.push(format!("{id}: {key}: {} -> {}", shown(a), shown(b))),
                Some(_) => {}
            }
        }
        added.extend(is.keys().filter(|k| !was.contains_key(*k)).cloned());
    }
    out.extend(new.keys().filter(|id| !old.contains_key(*id)).map(|id| format!("{id}: added")));
    let mut notes = Vec::new();
    let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
    if !added.is_empty() {
        notes.push(format!("attributes only the new version exports (not compared): {}", list(&added)));
    }
    if !dropped.is_empty() {
        notes.push(format!("attributes the new version no longer exports (not compared): {}", list(&dropped)));
    }
    (out, notes)
}

fn unversion(value: &mut Value) {
    match value {
        Value::String(s) => *s = strip_version(s).to_owned(),
        Value::Array(items) => items.iter_mut().for_each(unversion),
        Value::Object(map) => map.values_mut().for_each(unversion),
        _ => {}
    }
}

fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// What one environment's halt call costs the old server (it stops the
/// environment's agents). A rehearsal halts nothing on the old side, so it
/// comes from `cargo xtask bench downtime`: 20 environments halted in 6.6 s
/// on 8.7.6 and in 5.3 s on 11.5.5.
const HALT_SECONDS_PER_ENVIRONMENT: f64 = 0.3;

/// [`agent_cpu_seconds`]'s figures. The bench's agent CPU during the
/// reconcile, 20 environments of 9 and of 90 resources: 39.0 and 41.6 s on
/// 15.5.9 (50 environments of 96: 132.6 s), 48.0 and 75.7 s on 14.0.0.
const AGENT_CPU_PER_ENV_SCHEDULER: f64 = 2.2;
const AGENT_CPU_PER_RESOURCE_SCHEDULER: f64 = 0.002;
const AGENT_CPU_PER_ENV_BEFORE_15: f64 = 2.3;
const AGENT_CPU_PER_RESOURCE_BEFORE_15: f64 = 0.017;

/// The window from what this rehearsal measured, part by part.
fn predict(
    cx: &Context,
    inventory_seconds: f64,
    copy: &CopyRun,
    servers: &[ServerRun],
    environments: &[EnvRehearsal],
    compile_cpu: Option<&MachineCpu>,
) -> Window {
    let part = |steps: &str, seconds: f64, basis: String| WindowPart { steps: steps.to_owned(), seconds, basis };
    let new_stop = servers.last().and_then(|s| s.stop_seconds).unwrap_or(0.0);
    let halts = environments.iter().filter(|e| !e.halted_before).count();
    let mut parts = vec![
        part(
            "halt-all",
            inventory_seconds + halts as f64 * HALT_SECONDS_PER_ENVIRONMENT,
            format!(
                "the old server's inventory, read just now, and {halts} halt call(s) at \
                 {HALT_SECONDS_PER_ENVIRONMENT} s each (not made: measured by this project's bench)"
            ),
        ),
        part("stop-server", new_stop, "the rehearsal's new server stopping (the old one was not stopped)".into()),
    ];
    match cx.config.copy.mode {
        CopyMode::Offline => {
            parts.push(part("dump", copy.dump_seconds, "pg_dump of the running old database, just now".into()));
            parts.push(part("restore", copy.restore_seconds, "its load and ANALYZE on the new PostgreSQL".into()));
        }
        CopyMode::Online => parts.push(part(
            "cutover",
            0.0,
            "not measured: the copy is made before the window; cutover waits for the last changes only".into(),
        )),
    }
    let starts: f64 = servers.iter().map(|s| s.seconds_to_answer).sum();
    let migrations: usize = servers.iter().map(|s| s.schema_migrations).sum();
    parts.push(part(
        "start-server",
        starts,
        format!("{} server(s) started on the copy, {migrations} schema migration(s)", servers.len()),
    ));
    let concurrency = cx.config.reconcile.concurrency as usize;
    let running: Vec<&EnvRehearsal> = environments.iter().filter(|e| !e.halted_before).collect();
    let dry_runs = running.iter().filter(|e| e.baseline.as_ref().is_some_and(|b| b.error.is_none())).count();
    let each: Vec<f64> = running
        .iter()
        .map(|e| e.compile_seconds.unwrap_or(0.0) + e.baseline.as_ref().map_or(0.0, |b| b.seconds))
        .collect();
    let dry_runs = if dry_runs == running.len() {
        "and their dry-runs on the old side".to_owned()
    } else {
        format!("and {dry_runs} of {} dry-runs (`rehearse --baseline` measures them on the old side)", running.len())
    };
    let new_version = servers.last().and_then(|s| s.version.parse::<ServerVersion>().ok());
    let (seconds, bound) = reconcile_seconds(each, concurrency, &running, environments.len(), new_version, compile_cpu);
    parts.push(part(
        "env-reconcile",
        seconds,
        format!("{} compile(s) on the new version {dry_runs}, {concurrency} at a time; {bound}", running.len()),
    ));
    let mode = match cx.config.copy.mode {
        CopyMode::Offline => "offline",
        CopyMode::Online => "online",
    };
    Window::new(mode, parts)
}

/// The CPU time, in seconds, one environment's agents take on the new
/// machine when env-reconcile resumes it and dry-runs it (a rehearsal starts
/// no agent): (per environment, per resource of its model), by the kind of
/// agent the new version has. Measured with `cargo xtask bench downtime`
/// (the agent processes' CPU during the reconcile, at 10 and 100 resources
/// per environment): for 15.0+ the resource scheduler and its executors,
/// before 15.0 the agent processes the server starts per environment.
fn agent_cpu_seconds(new_version: Option<ServerVersion>) -> (f64, f64) {
    match new_version {
        Some(v) if v.major < 15 => (AGENT_CPU_PER_ENV_BEFORE_15, AGENT_CPU_PER_RESOURCE_BEFORE_15),
        _ => (AGENT_CPU_PER_ENV_SCHEDULER, AGENT_CPU_PER_RESOURCE_SCHEDULER),
    }
}

/// env-reconcile's time: the compiles and dry-runs spread over
/// `reconcile.concurrency`, or, when the new machine's CPUs cannot keep up
/// with that, the CPU time the compiles took in the rehearsal plus what the
/// agents will take, over its cores. Which bound decided is said.
fn reconcile_seconds(
    each: Vec<f64>,
    concurrency: usize,
    running: &[&EnvRehearsal],
    rehearsed: usize,
    new_version: Option<ServerVersion>,
    compile_cpu: Option<&MachineCpu>,
) -> (f64, String) {
    let spread = makespan(each, concurrency);
    let Some(cpu) = compile_cpu.filter(|c| c.cores > 0) else {
        return (
            spread,
            "not measured: the new machine's CPU time (unreadable there) and each environment's agents starting \
             on the new server (a rehearsal starts none)"
                .into(),
        );
    };
    // The rehearsal compiled the halted environments too; the window does not.
    let compiles = cpu.busy_seconds * running.len() as f64 / rehearsed.max(1) as f64;
    let resources: usize = running.iter().filter_map(|e| e.resources).sum();
    let (per_env, per_resource) = agent_cpu_seconds(new_version);
    let agents = running.len() as f64 * per_env + resources as f64 * per_resource;
    let busy = (compiles + agents) / f64::from(cpu.cores);
    let figures = format!(
        "CPU: {compiles:.0} s of compiles measured on the new machine and {agents:.0} s estimated for the agents \
         ({} environment(s), {resources} resource(s), from this project's bench) over {} core(s) = {busy:.0} s",
        running.len(),
        cpu.cores
    );
    if busy > spread {
        (
            busy,
            format!("bound by the new machine's CPU: {figures} (more than the {spread:.0} s the spread alone takes)"),
        )
    } else {
        (spread, format!("{figures}, less than the spread"))
    }
}

/// A reading of a machine's `/proc/stat` and core count.
struct CpuSample {
    at: Instant,
    cores: u32,
    busy_seconds: f64,
}

impl CpuSample {
    fn since(&self, before: &CpuSample) -> MachineCpu {
        MachineCpu {
            cores: self.cores,
            busy_seconds: (self.busy_seconds - before.busy_seconds).max(0.0),
            wall_seconds: self.at.duration_since(before.at).as_secs_f64(),
        }
    }

    /// From `getconf _NPROCESSORS_ONLN; getconf CLK_TCK; head -n1 /proc/stat`.
    fn parse(text: &str, at: Instant) -> anyhow::Result<CpuSample> {
        let mut lines = text.lines().map(str::trim);
        let mut number = |what: &str| -> anyhow::Result<u32> {
            let line = lines.next().unwrap_or_default();
            line.parse().with_context(|| format!("{what}: {line:?} is no number"))
        };
        let (cores, ticks) = (number("the core count")?, number("the clock ticks")?);
        let line = lines.next().unwrap_or_default();
        let fields: Vec<f64> = match line.strip_prefix("cpu ") {
            Some(rest) => rest.split_whitespace().map(str::parse).collect::<Result<_, _>>()?,
            None => bail!("/proc/stat begins with {line:?}, not the cpu line"),
        };
        // user nice system idle iowait irq softirq steal: all but idle and
        // iowait are work (guest time is inside user already).
        let busy: f64 = fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
        if fields.len() < 8 || ticks == 0 {
            bail!("unexpected /proc/stat cpu line {line:?}");
        }
        Ok(CpuSample { at, cores, busy_seconds: busy / f64::from(ticks) })
    }
}

/// The new machine's CPU time so far, read there (over ssh when it is remote).
async fn machine_cpu(cx: &Context) -> anyhow::Result<CpuSample> {
    let out = Service::new(&cx.config.new)
        .shell("getconf _NPROCESSORS_ONLN && getconf CLK_TCK && head -n1 /proc/stat", &[])
        .run()
        .await?;
    CpuSample::parse(&out.stdout, Instant::now())
}

/// Removes whatever a rehearsal left: the rehearsal server (stopped only
/// when it is the rehearsal's), its overrides, the scratch database, the
/// state directory, the copy of the dump. Says what it removed.
async fn clean_up(cx: &Context) -> anyhow::Result<Vec<String>> {
    let work = cx.work()?;
    let mut removed = Vec::new();
    let new_db = Database::open(&cx.config, Side::New).await?;
    let scratch = new_db.named(&cx.config.rehearsal_database())?;
    if work.journal().state::<RehearseState>()?.server_started {
        let orchestrators: Vec<(Orchestrator, String)> = cx
            .config
            .intermediate
            .iter()
            .map(|v| (v.orchestrator(&cx.config.new), format!("rehearsal intermediate {}", v.version)))
            .chain([(cx.config.new.clone(), "rehearsal new".to_owned())])
            .collect();
        for (orch, label) in &orchestrators {
            let service = Service::new(orch);
            if service.state().await? == ProcessState::Running {
                stop(cx, orch, label).await?;
                removed.push(format!("the {label} server"));
            } else {
                service.remove_overrides().await?;
            }
        }
        work.update_state(|s: &mut RehearseState| s.server_started = false)?;
    }
    if scratch.exists().await? {
        scratch.drop_database().await?;
        removed.push(format!("database {}", scratch.target.name));
    }
    let state_dir = &cx.config.rehearsal.state_dir;
    let out = on_new_machine(cx, "[ ! -e \"$1\" ] || { rm -rf -- \"$1\" && echo removed; }")
        .await
        .with_context(|| format!("cannot remove {state_dir}"))?;
    if out.stdout.trim() == "removed" {
        removed.push(format!("{state_dir} on {}", cx.runner(Side::New).place()));
    }
    let copy = work.path("rehearsal");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).with_context(|| format!("cannot remove {copy}"))?;
        removed.push(copy.to_string());
    }
    work.update_state(|s: &mut RehearseState| s.began = false)?;
    Ok(removed)
}

/// Runs a shell line on the new machine, with the new service's rights and
/// the rehearsal's state directory as `$1`.
async fn on_new_machine(cx: &Context, script: &str) -> anyhow::Result<migrate_core::runner::CmdOutput> {
    Service::new(&cx.config.new).shell(script, &[cx.config.rehearsal.state_dir.as_str()]).run().await
}

/// The server makes what it needs inside its state directory, not the
/// directory itself: made here, owned as its parent is (Inmanta's packages
/// give /var/lib/inmanta to the server's user).
async fn make_state_dir(cx: &Context) -> anyhow::Result<()> {
    let script = "mkdir -p -- \"$1\" && chown -- \"$(stat -c %u:%g -- \"$(dirname -- \"$1\")\")\" \"$1\" && chmod 0750 -- \"$1\"";
    on_new_machine(cx, script).await.map(drop).with_context(|| {
        format!(
            "cannot create the rehearsal's state directory {} (`rehearsal.state_dir`)",
            cx.config.rehearsal.state_dir
        )
    })
}

/// What the operator reads: each environment's outcome, then the window.
fn outcome(cx: &Context, r: &Rehearsal) -> Outcome {
    // A note every environment has (a module's new attribute, say) is said once.
    let shared: Vec<&String> = match r.environments.split_first() {
        Some((first, rest)) if !rest.is_empty() => {
            first.notes.iter().filter(|n| rest.iter().all(|e| e.notes.contains(n))).collect()
        }
        _ => Vec::new(),
    };
    let mut text = String::from("Environment outcomes on the new version:\n");
    for env in &r.environments {
        let before = if env.halted_before { " (halted before the migration)" } else { "" };
        let compile = env.compile_seconds.map(|s| format!(", compiled in {s:.1} s")).unwrap_or_default();
        text.push_str(&format!("  {}{before}: {}{compile}\n", env.name, env.outcome.words()));
        for line in env.differences.iter().chain(env.notes.iter().filter(|n| !shared.contains(n))) {
            text.push_str(&format!("      {line}\n"));
        }
        if let Some(b) = &env.baseline {
            match &b.error {
                Some(e) => {
                    text.push_str(&format!("      no dry-run on the old side: {}\n", e.lines().next().unwrap_or("")))
                }
                None if b.differences.is_empty() => text.push_str("      the old side's dry-run: no difference\n"),
                None => {
                    text.push_str("      already different on the old side (its dry-run):\n");
                    for d in &b.differences {
                        text.push_str(&format!("        {d}\n"));
                    }
                }
            }
        }
        if let Some(error) = &env.error {
            for line in error.lines().take(12) {
                text.push_str(&format!("      {line}\n"));
            }
        }
    }
    for note in &shared {
        text.push_str(&format!("  every environment: {note}\n"));
    }
    text.push_str(&format!("The window, predicted ({} copy):\n", r.window.copy_mode));
    for part in &r.window.parts {
        text.push_str(&format!("  {:<14} {:>8.1} s  {}\n", part.steps, part.seconds, part.basis));
    }
    text.push_str(&format!("  {:<14} {:>8.1} s\n", "total", r.window.seconds));
    let count = |o: EnvOutcome| r.environments.iter().filter(|e| e.outcome == o).count();
    let (same, differ, fail) = (count(EnvOutcome::Same), count(EnvOutcome::Differs), count(EnvOutcome::Fails));
    let summary = format!(
        "{} environment(s): {same} the same, {differ} with differences, {fail} not compiling on inmanta-core {}; \
         window about {:.0} s; nothing deployed, nothing left (details in {})",
        r.environments.len(),
        r.servers.last().map_or("?", |s| s.version.as_str()),
        r.window.seconds,
        cx.config.work_dir.join(Rehearsal::FILE)
    );
    let outcome = if differ + fail > 0 {
        Outcome::needs_operator(Rehearse::NAME, summary)
    } else {
        Outcome::done(Rehearse::NAME, summary)
    };
    outcome.text(text).figures(Figures { seconds: Some(r.seconds), ..Figures::default() }).details(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, resources: usize) -> EnvRehearsal {
        EnvRehearsal {
            id: Default::default(),
            name: name.into(),
            halted_before: false,
            outcome: EnvOutcome::Same,
            compile_seconds: Some(10.0),
            compared_with: Some(1),
            version: Some(2),
            resources: Some(resources),
            differences: Vec::new(),
            notes: Vec::new(),
            error: None,
            baseline: None,
        }
    }

    #[test]
    fn the_cpu_line_counts_work_but_not_idle_or_io_wait() {
        let at = Instant::now();
        let text = "2\n100\ncpu  1000 50 250 9000 700 10 40 0 0 0\n";
        let sample = CpuSample::parse(text, at).unwrap();
        assert_eq!(sample.cores, 2);
        assert!((sample.busy_seconds - 13.5).abs() < 1e-9, "{}", sample.busy_seconds);
        let later = CpuSample::parse("2\n100\ncpu  2000 50 250 9000 700 10 40 0 0 0\n", at).unwrap();
        assert!((later.since(&sample).busy_seconds - 10.0).abs() < 1e-9);
        for bad in [
            "",
            "x\n100\ncpu 1 2 3 4 5 6 7 8",
            "2\n100\ncpu0 1 2 3 4 5 6 7 8",
            "2\n100\ncpu 1 2 3",
            "2\n0\ncpu 1 2 3 4 5 6 7 8",
        ] {
            assert!(CpuSample::parse(bad, at).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn the_reconcile_is_bound_by_the_spread_or_by_the_cpu() {
        let envs: Vec<EnvRehearsal> = (0..20).map(|i| env(&format!("e{i}"), 100)).collect();
        let running: Vec<&EnvRehearsal> = envs.iter().collect();
        let each = vec![10.0; 20];
        let v15 = Some(ServerVersion::new(15, 5, 9));
        // Unreadable CPU: the spread alone, and says what it misses.
        let (s, basis) = reconcile_seconds(each.clone(), 4, &running, 20, v15, None);
        assert_eq!(s, 50.0);
        assert!(basis.contains("not measured"), "{basis}");
        // Plenty of cores: still the spread.
        let idle = MachineCpu { cores: 64, busy_seconds: 40.0, wall_seconds: 50.0 };
        let (s, basis) = reconcile_seconds(each.clone(), 4, &running, 20, v15, Some(&idle));
        assert_eq!(s, 50.0);
        assert!(basis.contains("less than the spread"), "{basis}");
        // Two cores busy with the compiles and the agents: the CPU bound.
        let busy = MachineCpu { cores: 2, busy_seconds: 100.0, wall_seconds: 50.0 };
        let (s, basis) = reconcile_seconds(each.clone(), 4, &running, 20, v15, Some(&busy));
        let (per_env, per_resource) = agent_cpu_seconds(v15);
        let expected = (100.0 + 20.0 * per_env + 2000.0 * per_resource) / 2.0;
        assert!((s - expected).abs() < 1e-9 && s > 50.0, "{s} vs {expected}");
        assert!(basis.contains("bound by the new machine's CPU") && basis.contains("2000 resource(s)"), "{basis}");
        // Halted environments were compiled in the rehearsal, not in the window.
        let (half, _) = reconcile_seconds(each[..10].to_vec(), 4, &running[..10], 20, v15, Some(&busy));
        let expected = (50.0 + 10.0 * per_env + 1000.0 * per_resource) / 2.0;
        assert!((half - expected).abs() < 1e-9, "{half} vs {expected}");
    }
}
