//! `env-reconcile`: brings every environment back to work on the new
//! orchestrator, several at a time:
//!
//! 1. turn `auto_deploy` off, so the next compile is not released unseen;
//! 2. request "update project & recompile" (on a halted environment it only
//!    queues) with a marker in its metadata, since the call returns no id;
//! 3. resume; wait until the compile queue is empty (18.2+ adds a "recovery"
//!    compile of its own) and require the marked compile to have succeeded;
//! 4. dry-run the newest version and wait for its report;
//! 5. when it shows no difference: optionally release it, and put
//!    `auto_deploy` back as it was before the migration.
//!
//! Every phase is recorded in the journal before the next starts, so a re-run
//! continues where an interrupted one stopped. An environment halted before
//! the migration is left halted and untouched unless named with `--env`.
//! A dry-run with differences stops that environment only: it stays resumed
//! with `auto_deploy` off, and the step ends with "needs an operator".
//!
//! An environment whose project.yml protects `auto_deploy` (15.3+) cannot
//! have it turned off, so its recompile is released on export, before any
//! dry-run: it is left halted for an operator, and `--accept-protected`
//! reconciles it anyway (the dry-run then checks the released version).

use std::{collections::BTreeMap, fmt::Write as _, time::Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use inmanta_api::{Client, ServerVersion};
use migrate_core::{
    Checks, Config, Context, ErrorKind, Failure, Figures, Outcome, Side, Step, StepId, UsageError, dryrun,
    inventory::{EnvironmentRecord, Inventory},
    journal::{EnvPhase, EnvRecord, EnvStatus},
    one_driver, probe,
    rehearsal::{EnvOutcome, Rehearsal},
    service::Service,
    wait,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// New side: per environment, auto_deploy off, update & recompile,
/// resume, dry-run, auto_deploy back.
#[derive(Debug, Default, clap::Args)]
pub struct EnvReconcile {
    /// Only this environment (id or name; repeatable). A named environment
    /// is reconciled, and so resumed, even if it was halted before.
    #[arg(long = "env", value_name = "ID|NAME")]
    pub envs: Vec<String>,
    /// Release the dry-run-clean version of environments whose auto_deploy
    /// was on before the migration (turning auto_deploy on does not).
    #[arg(long)]
    pub release: bool,
    /// Also reconcile environments whose project.yml protects auto_deploy:
    /// their recompile is released on export, before the dry-run, which
    /// then checks the released version.
    #[arg(long)]
    pub accept_protected: bool,
}

/// PostgreSQL's words for a server out of connections.
const OUT_OF_CONNECTIONS: [&str; 3] =
    ["remaining connection slots are reserved", "too many clients already", "TooManyConnectionsError"];

/// Where the new side says its PostgreSQL ran out of connections, and the
/// line that says it: the server's recent log, or (15.0+, where each
/// environment's scheduler is a process of its own, measured failing with
/// "Could not start the scheduler" at 50 environments) the scheduler log of
/// an environment that failed.
async fn out_of_connections(cx: &Context, failed: &[Uuid]) -> Option<(String, String)> {
    let said = |log: &str| -> Option<String> {
        let line = log.lines().rev().find(|l| OUT_OF_CONNECTIONS.iter().any(|words| l.contains(words)))?;
        Some(line.trim().chars().take(200).collect())
    };
    let service = Service::new(&cx.config.new);
    if let Some(line) = said(&service.log_tail(400).await) {
        return Some(("its log".to_owned(), line));
    }
    for env in failed {
        if let Some(line) = service.scheduler_log_tail(*env, 400).await.as_deref().and_then(said) {
            return Some((format!("the scheduler log of environment {env}"), line));
        }
    }
    None
}

/// How one environment ended, for the outcome and the report.
#[derive(Clone, Debug, Serialize)]
pub struct EnvResult {
    pub id: Uuid,
    pub name: String,
    pub status: EnvStatus,
    pub message: String,
    /// What kind of failure, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
    pub seconds: f64,
    /// Whether the update & recompile succeeded, once it ran.
    #[serde(skip)]
    compiled: Option<bool>,
    /// How this compares with what `rehearse` found, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rehearsed: Option<String>,
    /// Settings it stored that the new version no longer has (dropped with
    /// the upgrade; said once for the run, as every environment shares them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub settings_gone: Vec<String>,
}

impl EnvResult {
    /// What the window made of it, in the rehearsal's terms (None when it
    /// did not get as far as a compile and a dry-run).
    fn outcome(&self) -> Option<EnvOutcome> {
        match self.compiled? {
            false => Some(EnvOutcome::Fails),
            true if !self.differences.is_empty() => Some(EnvOutcome::Differs),
            true if self.status == EnvStatus::Done => Some(EnvOutcome::Same),
            true => None,
        }
    }

    /// Says whether the window went as the rehearsal said it would, and
    /// which differences were already there before the migration (when
    /// the rehearsal dry-ran the old side: `rehearse --baseline`).
    fn hold_against(&mut self, rehearsal: &Rehearsal) {
        let Some(rehearsed) = rehearsal.environments.iter().find(|e| e.id == self.id) else { return };
        let Some(now) = self.outcome() else { return };
        let baseline = rehearsed.baseline.as_ref().filter(|b| b.error.is_none());
        let (before, made): (Vec<&String>, Vec<&String>) =
            self.differences.iter().partition(|d| baseline.is_some_and(|b| b.had(d)));
        // A dry-run of the old side that already differed: the window's
        // dry-run differs too, though the desired state compiled the same.
        let expected = match rehearsed.outcome {
            EnvOutcome::Same if baseline.is_some_and(|b| !b.differences.is_empty()) => EnvOutcome::Differs,
            outcome => outcome,
        };
        let explained = rehearsed.outcome != EnvOutcome::Same || baseline.is_none() || made.is_empty();
        let mut text = if now == expected && explained {
            format!("as rehearsed on {}: {}", rehearsal.started, rehearsed.outcome.words())
        } else {
            let why = match now {
                EnvOutcome::Differs if rehearsed.outcome == EnvOutcome::Same => {
                    "the desired state compiled the same, so these differences are in the managed state \
                     (drift, or changed since the rehearsal)"
                }
                _ => "the project or the old side changed since the rehearsal",
            };
            format!(
                "unlike the rehearsal of {}, which found \"{}\": {why}",
                rehearsal.started,
                rehearsed.outcome.words()
            )
        };
        let list = |d: &[&String]| d.iter().map(|d| d.as_str()).collect::<Vec<_>>().join("; ");
        if !before.is_empty() {
            text.push_str(&format!(
                "\nalready there before the migration (the old side's dry-run showed them): {}",
                list(&before)
            ));
        }
        if baseline.is_some() && !made.is_empty() {
            text.push_str(&format!("\nmade by the migration (a finding): {}", list(&made)));
        }
        self.rehearsed = Some(text);
    }
}

impl EnvReconcile {
    /// The environments this run is about, `--env` resolved.
    fn selection<'a>(&self, inventory: &'a Inventory) -> anyhow::Result<Vec<(&'a EnvironmentRecord, bool)>> {
        if self.envs.is_empty() {
            return Ok(inventory.environments.iter().map(|e| (e, false)).collect());
        }
        self.envs
            .iter()
            .map(|wanted| {
                let by_id = wanted.parse::<Uuid>().ok().and_then(|id| inventory.environment(id));
                let by_name: Vec<_> = inventory.environments.iter().filter(|e| &e.name == wanted).collect();
                match (by_id, by_name.as_slice()) {
                    (Some(env), _) => Ok((env, true)),
                    (None, [env]) => Ok((*env, true)),
                    (None, []) => Err(UsageError(format!(
                        "--env {wanted}: no such environment in the inventory (known: {})",
                        inventory.environments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                    .into()),
                    (None, _) => {
                        Err(UsageError(format!("--env {wanted}: several environments have that name; give the id"))
                            .into())
                    }
                }
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(|mut chosen| {
                chosen.sort_by_key(|(e, _)| e.id);
                chosen.dedup_by_key(|(e, _)| e.id);
                chosen
            })
    }
}

/// What a run does: the flags and the config merged, once.
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// `--release` or `reconcile.release`.
    release: bool,
    /// `--accept-protected`.
    accept_protected: bool,
    /// Environments at a time: `reconcile.concurrency`.
    concurrency: usize,
}

impl EnvReconcile {
    fn settings(&self, config: &Config) -> Settings {
        Settings {
            release: self.release || config.reconcile.release,
            accept_protected: self.accept_protected,
            concurrency: config.reconcile.concurrency as usize,
        }
    }
}

impl Step for EnvReconcile {
    const ID: StepId = StepId::EnvReconcile;

    fn runs_when_done(&self) -> bool {
        !self.envs.is_empty()
    }

    fn describe(&self, cx: &Context) -> String {
        let settings = self.settings(&cx.config);
        let release = if settings.release { ", release it" } else { "" };
        format!(
            "per environment ({} at a time): auto_deploy off, update & recompile, resume, dry-run{release}, auto_deploy back",
            settings.concurrency
        )
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        let inventory = match cx.inventory() {
            Ok(i) => i,
            Err(e) => {
                checks.fail_on("inventory", &e, "run `inmanta-migrate halt-all` on the old side first");
                return checks;
            }
        };
        if let Some((_, live)) = probe::api(cx, Side::New, &mut checks).await {
            let missing: Vec<String> = inventory
                .environments
                .iter()
                .filter(|e| !live.iter().any(|l| l.id == e.id))
                .map(|e| e.label())
                .collect();
            if missing.is_empty() {
                checks.pass(
                    "environments",
                    format!(
                        "all {} environment(s) of the inventory are on the new server",
                        inventory.environments.len()
                    ),
                );
            } else {
                checks.fail(
                    "environments",
                    format!("missing on the new server: {}", missing.join(", ")),
                    "run `inmanta-migrate start-server` (and restore) first",
                );
            }
        }
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let inventory = cx.inventory()?;
        let selection = self.selection(&inventory)?;
        let run = RunInfo {
            settings: self.settings(&cx.config),
            old: inventory.core_version,
            new: cx.api(Side::New).server_status().await?.core_version,
            id: Uuid::new_v4().simple().to_string()[..8].to_owned(),
        };
        let work = cx.work()?;
        let rehearsal = Rehearsal::latest(work.dir());
        let rehearsal = rehearsal.as_ref();

        let results: Vec<EnvResult> = futures::stream::iter(selection)
            .map(|(env, named)| {
                let run = &run;
                async move {
                    let start = Instant::now();
                    let mut result = reconcile(cx, env, named, run).await;
                    result.seconds = start.elapsed().as_secs_f64();
                    if let Some(rehearsal) = rehearsal {
                        result.hold_against(rehearsal);
                    }
                    if let Some(rehearsed) = &result.rehearsed {
                        result.message = format!("{}\n{rehearsed}", result.message);
                    }
                    let r = result.clone();
                    let record = work.update_env(env.id, |rec| {
                        rec.name = r.name.clone();
                        rec.status = r.status;
                        rec.message = Some(r.message.clone());
                        if r.status != EnvStatus::LeftHalted {
                            rec.seconds = Some(r.seconds);
                        }
                    });
                    if let Err(e) = record {
                        result.status = EnvStatus::Failed;
                        result.message = format!("cannot write the journal: {e:#}");
                    }
                    let line = format!("{}: {}", result.name, indented(&result.message));
                    match result.status {
                        EnvStatus::Done | EnvStatus::LeftHalted => cx.ui.info(Self::NAME, line),
                        _ => cx.ui.error(Self::NAME, line),
                    }
                    for diff in &result.differences {
                        cx.ui.warn(Self::NAME, format!("{}: {diff}", result.name));
                    }
                    result
                }
            })
            .buffer_unordered(run.settings.concurrency)
            .collect()
            .await;

        let mut sorted = results;
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let count = |s: EnvStatus| sorted.iter().filter(|r| r.status == s).count();
        let summary = format!(
            "{} reconciled, {} left halted, {} need an operator, {} failed",
            count(EnvStatus::Done),
            count(EnvStatus::LeftHalted),
            count(EnvStatus::NeedsOperator),
            count(EnvStatus::Failed)
        );
        let failed_ids: Vec<Uuid> = sorted.iter().filter(|r| r.status == EnvStatus::Failed).map(|r| r.id).collect();
        let failed: Vec<String> = sorted
            .iter()
            .filter(|r| r.status == EnvStatus::Failed)
            // The whole message was printed as the environment ended.
            .map(|r| format!("{}: {}", r.name, r.message.lines().next().unwrap_or_default()))
            .collect();
        if !failed.is_empty() {
            let message = format!("{summary}\n  {}", failed.join("\n  "));
            let again =
                "run `inmanta-migrate env-reconcile` again: each environment goes on from its last recorded phase";
            let unanswered = sorted.iter().any(|r| r.kind == Some(ErrorKind::ApiUnreachable));
            let two_drivers = sorted.iter().any(|r| r.kind == Some(ErrorKind::NeedsOperator));
            let failure = if two_drivers {
                Failure::new(ErrorKind::NeedsOperator, message).advise(format!(
                    "the old server runs again: decide which orchestrator drives these environments. To go on \
                     here: halt them on the old server and stop it (`inmanta-migrate halt-all`, `inmanta-migrate \
                     stop-server`), then {again}. To go back: `inmanta-migrate rollback`"
                ))
            } else if let Some((log, said)) = out_of_connections(cx, &failed_ids).await {
                // The server's answers (closed connections, errors, "Could not start the scheduler") hide it; the logs say it.
                Failure::new(ErrorKind::Database, message).advise(format!(
                    "the new server's PostgreSQL ran out of connections ({log}: \"{said}\"): raise the new \
                     PostgreSQL's `max_connections` (a restart), or lower `[scheduler] db_connection_pool_max_size` \
                     in the new server's inmanta.cfg and restart that server (`inmanta-migrate check` says by how \
                     much), then {again}"
                ))
            } else if unanswered {
                Failure::new(ErrorKind::ApiUnreachable, message).advise(format!(
                    "the new server did not answer: check that it runs and that this machine reaches `new.api_url`, \
                     then {again}"
                ))
            } else {
                Failure::new(ErrorKind::Failed, message).advise(format!("fix what the messages say, then {again}"))
            };
            return Err(failure.into());
        }
        // With --env, other environments may still wait for a run.
        let journal = work.journal();
        let waiting = inventory
            .environments
            .iter()
            .filter(|e| {
                let status = journal.environments.get(&e.id).map(|r| r.status).unwrap_or_default();
                !matches!(status, EnvStatus::Done | EnvStatus::LeftHalted)
            })
            .count();
        let mut gone: BTreeMap<&str, usize> = BTreeMap::new();
        for name in sorted.iter().flat_map(|r| &r.settings_gone) {
            *gone.entry(name).or_default() += 1;
        }
        if !gone.is_empty() {
            let names: Vec<String> = gone.iter().map(|(name, n)| format!("{name} ({n})")).collect();
            cx.ui.info(
                Self::NAME,
                format!(
                    "settings that inmanta-core {} no longer has, dropped with their stored values \
                     (environments that had them): {}",
                    run.new,
                    names.join(", ")
                ),
            );
        }
        let outcome = if count(EnvStatus::NeedsOperator) > 0 {
            Outcome::needs_operator(Self::NAME, summary)
        } else if waiting > 0 {
            Outcome::partial(Self::NAME, format!("{summary}; {waiting} environment(s) still to reconcile"))
        } else {
            Outcome::done(Self::NAME, summary)
        };
        Ok(outcome
            .figures(Figures {
                reconciled: Some(count(EnvStatus::Done)),
                left_halted: Some(count(EnvStatus::LeftHalted)),
                needs_operator: Some(count(EnvStatus::NeedsOperator)),
                ..Figures::default()
            })
            .details(sorted))
    }
}

/// What every environment of one run shares.
struct RunInfo {
    settings: Settings,
    /// inmanta-core of the old and the new server.
    old: ServerVersion,
    new: ServerVersion,
    /// Part of the compile marker.
    id: String,
}

/// The outcome of one environment; never an `Err`, so that one environment's
/// trouble does not stop the others.
async fn reconcile(cx: &Context, env: &EnvironmentRecord, named: bool, run: &RunInfo) -> EnvResult {
    let mut result = EnvResult {
        id: env.id,
        name: env.name.clone(),
        status: EnvStatus::Done,
        message: String::new(),
        kind: None,
        version: None,
        differences: Vec::new(),
        seconds: 0.0,
        compiled: None,
        rehearsed: None,
        settings_gone: Vec::new(),
    };
    let earlier =
        cx.work().map(|w| w.journal().environments.get(&env.id).cloned().unwrap_or_default()).unwrap_or_default();
    if earlier.status == EnvStatus::Done {
        result.message = earlier.message.unwrap_or_else(|| "already reconciled".into());
        result.version = earlier.version;
        return result;
    }
    // Only untouched ones: an environment a named run resumed is not "left halted".
    let untouched = matches!(earlier.status, EnvStatus::Pending | EnvStatus::LeftHalted);
    if (env.halted || env.marked_for_deletion) && !named && untouched {
        result.status = EnvStatus::LeftHalted;
        let why = if env.marked_for_deletion { "marked for deletion" } else { "halted before the migration" };
        result.message = format!(
            "{why}: left halted and untouched; to reconcile it later: inmanta-migrate env-reconcile --env {}",
            env.id
        );
        return result;
    }
    match reconcile_phases(cx, env, run, earlier, &mut result).await {
        Ok(()) => {}
        Err(e) => {
            result.status = EnvStatus::Failed;
            let failure = Failure::of(&e);
            result.message = failure.shown();
            result.kind = Some(failure.kind);
        }
    }
    result
}

async fn reconcile_phases(
    cx: &Context,
    env: &EnvironmentRecord,
    run: &RunInfo,
    earlier: EnvRecord,
    result: &mut EnvResult,
) -> anyhow::Result<()> {
    let (release, server) = (run.settings.release, run.new);
    let work = cx.work()?;
    let api = cx.api(Side::New);
    let options = &cx.config.reconcile;
    let id = env.id;
    let phase = |done: EnvPhase| {
        work.update_env(id, |r| {
            r.name = env.name.clone();
            r.status = EnvStatus::InProgress;
            r.phase = Some(done);
        })
    };
    let say = |text: String| cx.ui.info(EnvReconcile::NAME, format!("{}: {text}", env.name));

    // 1. auto_deploy off.
    let protected = match api.set_setting(id, "auto_deploy", Value::Bool(false)).await {
        Ok(_) => false,
        Err(e) if e.status() == Some(403) && run.settings.accept_protected => {
            say("auto_deploy is protected by the project's project.yml; going on (--accept-protected)".into());
            true
        }
        Err(e) if e.status() == Some(403) => {
            result.status = EnvStatus::NeedsOperator;
            result.message = format!(
                "auto_deploy is protected (set by the project's project.yml), so the recompile would be released before any dry-run; \
                 the environment is left halted. To reconcile it anyway (the dry-run then checks the released version): \
                 `inmanta-migrate env-reconcile --env {} --accept-protected`. The server said: {e}",
                env.name
            );
            return Ok(());
        }
        Err(e) => return Err(e).context("cannot turn auto_deploy off"),
    };
    phase(EnvPhase::AutoDeployOff)?;

    // 2. Update & recompile, queued while halted. The marker is written down
    // first: a run that was interrupted looks for it instead of asking twice;
    // a run after a failure or differences asks for a new compile.
    let resumable = earlier.status == EnvStatus::InProgress;
    let marker = match earlier.marker {
        Some(marker) if resumable && api.compile_with_marker(id, &marker).await?.is_some() => marker,
        _ => {
            let marker = format!("inmanta-migrate {}: update & recompile after the migration", run.id);
            work.update_env(id, |r| r.marker = Some(marker.clone()))?;
            let warnings = api.update_and_recompile(id, &marker).await.context("cannot request the recompile")?;
            if !warnings.is_empty() {
                result.status = EnvStatus::NeedsOperator;
                result.message = format!("the server did not queue the compile: {}", warnings.join("; "));
                return Ok(());
            }
            marker
        }
    };
    phase(EnvPhase::CompileRequested)?;

    // 3. Resume; the queued compile (and on 18.2+ a recovery compile) runs.
    // Asked right before: an old server started by hand meanwhile stops it.
    one_driver::old_side_lets_go(cx, id, &env.name).await?;
    api.resume(id).await.context("cannot resume")?;
    if api.environment(id).await?.halted {
        bail!("the environment still reports halted after resume");
    }
    phase(EnvPhase::Resumed)?;
    say("resumed; waiting for the compile".into());
    let what = format!("the compile queue of {} to drain (reconcile.compile_timeout)", env.name);
    wait::until(options.poll_interval, options.compile_timeout, &what, async || {
        Ok(api.compile_queue(id).await?.is_empty().then_some(()))
    })
    .await?;
    let compile = api
        .compile_with_marker(id, &marker)
        .await?
        .with_context(|| format!("no compile carries the marker {marker:?}"))?;
    if !compile.is_done() {
        bail!("the compile {} is not finished although the queue is empty", compile.id);
    }
    if compile.success != Some(true) {
        let details = api.compile_details(id, compile.id).await?;
        result.status = EnvStatus::Failed;
        result.compiled = Some(false);
        result.message = format!(
            "the update & recompile failed (compile {}); the environment is resumed with auto_deploy off and keeps its released version {}:\n{}",
            compile.id,
            env.latest_released_version.map_or("none".into(), |v| v.to_string()),
            details.failure_text()
        );
        return Ok(());
    }
    let compiled = compile.version.context("the compile succeeded but exported no version")?;
    // 18.2+ may have compiled again (recovery): dry-run the newest version.
    let newest = api.latest_version(id).await?.map(|v| v.version).unwrap_or(compiled).max(compiled);
    if newest != compiled && !server.queues_recovery_compile() {
        say(format!("a newer version {newest} than the compiled {compiled} appeared; dry-running the newest"));
    }
    result.version = Some(newest);
    work.update_env(id, |r| r.version = Some(newest))?;
    phase(EnvPhase::Compiled)?;
    result.compiled = Some(true);
    say(format!("compiled version {newest}; dry-running it"));

    // 4. Dry-run.
    let report = dryrun::dry_run(cx, api, env, newest, EnvReconcile::NAME).await?;
    work.update_env(id, |r| r.dryrun = Some(report.summary.id))?;
    let (differences, notes) = dryrun::judge(&report, env);
    if !differences.is_empty() {
        result.status = EnvStatus::NeedsOperator;
        result.differences = differences;
        result.message = if protected {
            format!(
                "the dry-run of version {newest} shows {} difference(s); left resumed, and version {newest} is released \
                 (auto_deploy is protected by the project's project.yml)",
                result.differences.len()
            )
        } else {
            format!(
                "the dry-run of version {newest} shows {} difference(s); left resumed with auto_deploy off, version {newest} not released",
                result.differences.len()
            )
        };
        return Ok(());
    }
    phase(EnvPhase::DryRunClean)?;

    // 5. Release, and auto_deploy back as it was.
    let auto_deploy_before = env.auto_deploy();
    if release && auto_deploy_before {
        // An interrupted run may have released it already (a second release is a 409).
        let released = api.latest_released_version(id, server).await?.is_some_and(|v| v.version >= newest);
        if !released {
            api.release(id, newest).await.with_context(|| format!("cannot release version {newest}"))?;
            say(format!("released version {newest}"));
        }
        work.update_env(id, |r| r.released = true)?;
    }
    if !protected {
        api.set_setting(id, "auto_deploy", Value::Bool(auto_deploy_before))
            .await
            .context("cannot restore auto_deploy")?;
    }
    phase(EnvPhase::AutoDeployRestored)?;

    // Across 10.0 the code files of versions exported by the old server are
    // gone (they lived in its state directory); agents that tried to deploy
    // the released version since the resume found none and marked its
    // resources unavailable. The recompile published the files again: deploy.
    let republished = !run.old.stores_code_in_database() && server.stores_code_in_database();
    let mut redeploy = republished && !(release && auto_deploy_before) && env.latest_released_version.is_some();
    if redeploy {
        // Only agents that run: a paused one stays paused, and asking it
        // (or only it) answers 404 "No agent could be reached".
        let agents = api.agents(id).await.context("cannot list the agents")?;
        let running: Vec<&str> = agents.iter().filter(|a| !a.paused).map(|a| a.name.as_str()).collect();
        if running.is_empty() {
            redeploy = false;
        } else {
            api.deploy(id, &running).await.context("cannot ask the agents to deploy the released version again")?;
        }
    }

    let released = match (protected, release && auto_deploy_before) {
        (true, _) => ", released on export (auto_deploy is protected by the project's project.yml)",
        (false, true) => ", released",
        (false, false) => ", not released",
    };
    let mut message = format!(
        "version {newest} compiled, dry-run clean ({} resource(s)){released}; auto_deploy {}",
        report.summary.total,
        if auto_deploy_before { "on" } else { "off" }
    );
    if redeploy {
        let _ = write!(
            message,
            "; released version {} redeployed (inmanta-core {} kept code files outside the database, the \
             recompile published them again; a resource whose code changed since needs a new release)",
            env.latest_released_version.unwrap_or_default(),
            run.old
        );
    }
    for note in &notes {
        let _ = write!(message, "; {note}");
    }
    work.update_env(id, |r| r.status = EnvStatus::Done)?;
    // Settings end as they were: the work is done either way, so a failed
    // read is a note, a changed value is for an operator.
    match compare_settings(api, env).await {
        Ok((changed, gone)) => {
            result.settings_gone = gone;
            if !changed.is_empty() {
                result.status = EnvStatus::NeedsOperator;
                let _ = write!(message, "; settings differ from before the migration: {}", changed.join(", "));
            }
        }
        Err(e) => {
            let _ = write!(message, "; the settings could not be compared: {e:#}");
        }
    }
    result.message = message;
    Ok(())
}

/// A message of several lines (a compiler's error) with its later lines
/// indented under the first, and no trailing blank line.
fn indented(message: &str) -> String {
    let mut lines = message.trim_end().lines();
    let first = lines.next().unwrap_or_default().to_owned();
    lines.fold(first, |all, line| format!("{all}\n    {line}"))
}

/// Settings stored before the migration that the new server defines must
/// have the same value now. Returns (those that changed, those the new
/// version no longer has).
async fn compare_settings(api: &Client, env: &EnvironmentRecord) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let now = api.settings(env.id).await?;
    let (mut changed, mut gone) = (Vec::new(), Vec::new());
    for (name, before) in &env.settings {
        if !now.definitions.contains_key(name) {
            gone.push(name.clone());
        } else if now.effective(name) != Some(before) {
            changed.push(format!("{name} was {before}, is now {}", now.effective(name).unwrap_or(&Value::Null)));
        }
    }
    Ok((changed, gone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_held_against_the_rehearsal() {
        let id = Uuid::new_v4();
        let env = |outcome: &str| {
            serde_json::json!({ "id": id, "name": "prod", "halted_before": false, "outcome": outcome,
                "compile_seconds": 1.0, "compared_with": 1, "version": 2, "differences": [], "notes": [],
                "error": null })
        };
        let rehearsal = |outcome: &str| -> Rehearsal {
            serde_json::from_value(serde_json::json!({
                "schema_version": 1, "tool_version": "0", "started": "T0", "seconds": 1.0, "old_version": "14.0.0",
                "copy": { "database": "d", "database_bytes": 0, "tables": 0, "dump_seconds": 0.0, "restore_seconds": 0.0 },
                "servers": [], "environments": [env(outcome)], "deploy_actions": [0, 0],
                "window": { "copy_mode": "offline", "parts": [], "seconds": 0.0 },
            }))
            .unwrap()
        };
        let result = |compiled: Option<bool>, differences: &[&str], status: EnvStatus| EnvResult {
            id,
            name: "prod".into(),
            status,
            message: String::new(),
            kind: None,
            version: None,
            differences: differences.iter().map(|d| d.to_string()).collect(),
            seconds: 0.0,
            compiled,
            rehearsed: None,
            settings_gone: Vec::new(),
        };
        let held = |mut r: EnvResult, outcome: &str| {
            r.hold_against(&rehearsal(outcome));
            r.rehearsed
        };
        assert_eq!(
            held(result(Some(true), &[], EnvStatus::Done), "same").as_deref(),
            Some("as rehearsed on T0: same desired state")
        );
        assert_eq!(
            held(result(Some(false), &[], EnvStatus::Failed), "fails").as_deref(),
            Some("as rehearsed on T0: does not compile")
        );
        let drift = held(result(Some(true), &["x: changed"], EnvStatus::NeedsOperator), "same").unwrap();
        assert!(drift.starts_with("unlike the rehearsal of T0") && drift.contains("drift"), "{drift}");
        let changed = held(result(Some(true), &[], EnvStatus::Done), "fails").unwrap();
        assert!(changed.contains("changed since the rehearsal"), "{changed}");
        assert_eq!(held(result(None, &[], EnvStatus::LeftHalted), "same"), None, "no compile, nothing to hold");

        // With the old side's dry-run (`rehearse --baseline`): which is which.
        let mut with_baseline = rehearsal("same");
        with_baseline.environments[0].baseline = Some(migrate_core::rehearsal::Baseline {
            differences: vec!["r[a,k=1],v=3: modified: x: 1 -> 2".into()],
            seconds: 1.0,
            error: None,
        });
        let mut r = result(Some(true), &["r[a,k=1],v=7: modified: x: 1 -> 2"], EnvStatus::NeedsOperator);
        r.hold_against(&with_baseline);
        let said = r.rehearsed.unwrap();
        assert!(
            said.starts_with("as rehearsed on T0: same desired state\nalready there before the migration"),
            "{said}"
        );
        assert!(!said.contains("made by the migration"), "{said}");
        let mut r =
            result(Some(true), &["r[a,k=1]: modified: x: 1 -> 2", "s[a,k=2]: deleted"], EnvStatus::NeedsOperator);
        r.hold_against(&with_baseline);
        let said = r.rehearsed.unwrap();
        assert!(said.starts_with("unlike the rehearsal of T0") && said.contains("drift"), "{said}");
        assert!(said.contains("showed them): r[a,k=1]: modified: x: 1 -> 2\n"), "{said}");
        assert!(said.ends_with("made by the migration (a finding): s[a,k=2]: deleted"), "{said}");
    }
}
