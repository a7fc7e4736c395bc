//! `start-server`: starts the new orchestrator's server on the restored
//! database and waits while it migrates the schema (its API only opens
//! afterwards). A server that exits or restarts in a loop is reported with
//! the end of its log instead of being waited for. Done when the server
//! answers and every environment of the inventory is there and halted,
//! nothing missing, nothing extra.
//!
//! With `[[intermediate]]` servers (Inmanta's rule: one major at a time),
//! each is started first on the same database, in order, waited for while
//! it runs its own schema migrations, checked to be the version it says, and
//! stopped; the journal records each one done (a re-run goes on with the
//! next), and the figures say how many schema versions each added.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use migrate_core::{
    Checks, Context, Figures, Outcome, Side, Step, StepId,
    figures::Intermediate,
    fsutil,
    inventory::Inventory,
    journal::StepState,
    service::{ProcessState, Service, start_service, wait_until_answering},
    wait,
};
use migrate_pg::Database;
use serde::{Deserialize, Serialize};

/// New side: starts the server, waits for its schema migration, checks
/// every environment is there and halted.
#[derive(Debug, Default, clap::Args)]
pub struct StartServer {}

impl Step for StartServer {
    const ID: StepId = StepId::StartServer;

    fn describe(&self, cx: &Context) -> String {
        let via = cx.config.intermediate_versions();
        let through = if via.is_empty() {
            String::new()
        } else {
            format!("start, let migrate and stop inmanta-core {} in turn, then ", via.join(", then "))
        };
        format!(
            "{through}start the new server ({}), wait up to {} for its schema migration, and check every environment is there, halted",
            Service::new(&cx.config.new).describe(),
            humantime::format_duration(cx.config.timeouts.start)
        )
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        if let Err(e) = cx.inventory() {
            checks.fail_on("inventory", &e, "run `inmanta-migrate halt-all` on the old side first");
        }
        let service = Service::new(&cx.config.new);
        match service.state().await {
            Ok(state) => checks.pass("new service", format!("{}: {state}", service.describe())),
            Err(e) => checks.fail_on("new service", &e, "fix `new.service`"),
        }
        if cx.api(Side::New).probe().await.ok().flatten().is_none() {
            // Never let a server create a fresh schema in an empty database:
            // a restore afterwards would then have to replace it.
            match Database::open(&cx.config, Side::New).await {
                Ok(db) => match db.schema_versions().await {
                    Ok(s) if s.contains_key("core") => {
                        checks.pass("new database", format!("{} holds an Inmanta schema", db.target))
                    }
                    Ok(_) => checks.fail(
                        "new database",
                        format!("{} holds no Inmanta schema", db.target),
                        "run `inmanta-migrate restore` first",
                    ),
                    Err(e) => {
                        let next = migrate_pg::unreachable_next_step("new", &e);
                        checks.fail_on("new database", &e, next)
                    }
                },
                Err(e) => checks.fail_on("new database", &e, "fix `new.database`"),
            }
        }
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let inventory = cx.inventory()?;
        let service = Service::new(&cx.config.new);
        let api = cx.api(Side::New);
        let db = Database::open(&cx.config, Side::New).await?;
        let intermediates = walk_intermediates(cx, &db).await?;
        let schema_before = core_schema_count(&db).await?;
        let start = Instant::now();

        // The installed version (`inmanta --version`, a second of Python)
        // is read while the server starts, not after it answers.
        let answering = async {
            let status = match api.probe().await? {
                Some(status) => {
                    cx.ui.info(Self::NAME, "the new server already answers");
                    status
                }
                None => {
                    // An interrupted run may have started it already: it then
                    // runs but does not answer while it migrates the schema.
                    if service.state().await? == ProcessState::Running {
                        cx.ui.info(Self::NAME, "the new server runs already; waiting for it to answer");
                    } else {
                        // A rehearsal killed before it cleaned up must never put
                        // the real server on its copy.
                        if service.remove_overrides().await? {
                            cx.ui.warn(Self::NAME, "removed a rehearsal's leftover drop-in from the new unit");
                        }
                        cx.ui.info(Self::NAME, format!("starting the new server ({})", service.describe()));
                        start_service(&service, "new", Self::NAME).await?;
                    }
                    wait_until_answering(cx, Self::NAME, api, &service, "new").await?
                }
            };
            anyhow::Ok((status, start.elapsed().as_secs_f64()))
        };
        let (answering, installed) = futures::join!(answering, service.installed_version());
        let (status, answered) = answering?;
        if service.state().await? != ProcessState::Running {
            bail!(
                "{} answers, but {} does not report the server running: is another server on that port?",
                cx.config.new.api_url,
                service.describe()
            );
        }
        if let Some(Ok(expected)) = installed
            && expected != status.core_version
        {
            bail!(
                "{} answers as inmanta-core {}, but the installed server is {expected}: is another server on that port?",
                cx.config.new.api_url,
                status.core_version
            );
        }
        if status.core_version.has_health_endpoint() {
            migrate_core::wait::until(
                Duration::from_secs(1),
                Duration::from_secs(120),
                "GET /api/v2/health to answer 200",
                async || match api.healthy().await {
                    Ok(healthy) => Ok(healthy.then_some(())),
                    Err(e) if e.is_unreachable() => Ok(None),
                    Err(e) => Err(e.into()),
                },
            )
            .await?;
        }
        if status.database_connected == Some(false) {
            bail!("the new server answers but says it is not connected to its database; see its log");
        }
        let schema_after = core_schema_count(&db).await?;
        let migrations = schema_after.saturating_sub(schema_before);
        verify_environments(cx, &inventory).await?;
        let upgraded = Inventory::take(api).await.context("cannot take the new server's inventory")?;
        fsutil::write_json(&cx.work()?.path(Inventory::NEW_FILE), &upgraded)?;
        // A rollback disabled the unit so that a reboot would not bring it
        // back; this attempt's server starts at boot again.
        if cx.work()?.journal().earlier.iter().any(|a| a.rolled_back.disabled_new_unit)
            && service.set_enabled(true).await?
        {
            cx.ui.info(Self::NAME, format!("enabled {} again (a rollback had disabled it)", service.describe()));
        }
        let via: String = intermediates.iter().map(|(v, n)| format!("{v} ({n}), ")).collect();
        let intermediates = (!intermediates.is_empty()).then(|| {
            intermediates
                .iter()
                .map(|(version, schema_migrations)| Intermediate {
                    version: version.clone(),
                    schema_migrations: *schema_migrations,
                })
                .collect()
        });
        Ok(Outcome::done(
            Self::NAME,
            format!(
                "inmanta-core {} answers after {answered:.1} s ({via}{migrations} schema migration(s)); all {} environment(s) present and halted",
                status.core_version,
                inventory.environments.len()
            ),
        )
        .figures(Figures {
            seconds_to_answer: Some(answered),
            schema_migrations: Some(migrations),
            core_version: Some(status.core_version.to_string()),
            intermediates,
            ..Figures::default()
        }))
    }
}

/// How many core schema versions the database has installed.
async fn core_schema_count(db: &Database) -> anyhow::Result<usize> {
    Ok(db.schema_versions().await?.get("core").map_or(0, Vec::len))
}

/// What a re-run of start-server resumes from.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StartServerState {
    /// Each intermediate server done (by version): the schema versions it added.
    pub intermediates_done: BTreeMap<String, usize>,
}

impl StepState for StartServerState {
    const STEP: StepId = StepId::StartServer;
}

/// Starts each `[[intermediate]]` server not yet done, waits until it
/// answers (its schema migrations ran), checks its version and stops it.
/// Returns (version, schema versions it added) of every intermediate.
async fn walk_intermediates(cx: &Context, db: &Database) -> anyhow::Result<Vec<(String, usize)>> {
    let work = cx.work()?;
    let mut done = Vec::new();
    for (i, via) in cx.config.intermediate.iter().enumerate() {
        if let Some(&n) = work.journal().state::<StartServerState>()?.intermediates_done.get(&via.version) {
            done.push((via.version.clone(), n));
            continue;
        }
        let label = format!("intermediate inmanta-core {}", via.version);
        let orch = via.orchestrator(&cx.config.new);
        let service = Service::new(&orch);
        let api = cx.intermediate_api(i)?;
        let before = core_schema_count(db).await?;
        let status = match api.probe().await? {
            Some(status) => status,
            None => {
                if service.state().await? != ProcessState::Running {
                    if service.remove_overrides().await? {
                        cx.ui.warn(
                            StartServer::NAME,
                            format!("removed a rehearsal's leftover drop-in from the {label}'s unit"),
                        );
                    }
                    cx.ui.info(StartServer::NAME, format!("starting the {label} ({})", service.describe()));
                    start_service(&service, &label, StartServer::NAME).await?;
                }
                wait_until_answering(cx, StartServer::NAME, &api, &service, &label).await?
            }
        };
        if status.core_version.to_string() != via.version {
            bail!(
                "{} answers as inmanta-core {}, not {}: is another server on that port? (intermediate[{i}])",
                orch.api_url,
                status.core_version,
                via.version
            );
        }
        let added = core_schema_count(db).await?.saturating_sub(before);
        cx.ui.info(StartServer::NAME, format!("the {label} ran {added} schema migration(s); stopping it"));
        service.stop().await?;
        wait::until(Duration::from_millis(500), cx.config.timeouts.stop, &format!("the {label} to stop"), async || {
            let silent = matches!(api.probe().await, Ok(None));
            Ok((silent && service.state().await? != ProcessState::Running).then_some(()))
        })
        .await?;
        work.update_state(|s: &mut StartServerState| s.intermediates_done.insert(via.version.clone(), added))?;
        done.push((via.version.clone(), added));
    }
    Ok(done)
}

/// Every environment of the inventory is on the new server and halted, and
/// there is no other.
pub async fn verify_environments(cx: &Context, inventory: &Inventory) -> anyhow::Result<()> {
    let live = cx.api(Side::New).environments().await.context("cannot list the environments of the new server")?;
    let mut problems = Vec::new();
    for record in &inventory.environments {
        match live.iter().find(|e| e.id == record.id) {
            None => problems.push(format!("{} is missing", record.label())),
            Some(env) if !env.halted => problems.push(format!("{} is not halted", record.label())),
            Some(env) if env.name != record.name || env.project_id != record.project_id => {
                problems.push(format!("{} changed name or project (now {:?})", record.label(), env.name))
            }
            Some(_) => {}
        }
    }
    for env in &live {
        if inventory.environment(env.id).is_none() {
            problems.push(format!("{} ({}) was not on the old server", env.name, env.id));
        }
    }
    if !problems.is_empty() {
        bail!("the new server's environments do not match the inventory:\n  {}", problems.join("\n  "));
    }
    Ok(())
}
