//! `halt-all`: takes the inventory of the old orchestrator, then halts every
//! environment that runs, and waits until each reports halted and no compile
//! is still running (a compile that runs when its environment is halted still
//! finishes and exports; the dump must not race it).
//!
//! The inventory is written before the first halt and reused by a re-run, so
//! "halted before the migration" always means before *this tool* halted it.
//!
//! Run again after it is done, it takes in what changed on the old server
//! since (the advice of `stop-server` when an environment runs again): it
//! halts an environment resumed meanwhile (recorded as running before, as
//! the operator left it), inventories and halts a new one, and leaves a
//! deleted one out. Once the old server is stopped there is nothing to take
//! in and the inventory stands.

use std::time::Duration;

use anyhow::Context as _;
use migrate_core::{Checks, Context, Figures, Outcome, Side, Step, StepId, fsutil, inventory::Inventory, probe, wait};
use serde::Serialize;
use uuid::Uuid;

/// Old side: records the inventory, then halts every running environment
/// and waits for running compiles.
#[derive(Debug, Default, clap::Args)]
pub struct HaltAll {}

#[derive(Debug, Serialize)]
struct EnvResult {
    id: Uuid,
    name: String,
    action: &'static str,
    queued_compiles: usize,
}

impl Step for HaltAll {
    const ID: StepId = StepId::HaltAll;

    fn describe(&self, cx: &Context) -> String {
        format!(
            "record the inventory of the old orchestrator ({}) and halt every running environment",
            cx.config.old.api_url
        )
    }

    fn runs_when_done(&self) -> bool {
        true
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        if stopped_after_done(cx).await {
            checks.pass("old API", "silent: the old server is stopped and the inventory stands");
        } else {
            probe::api(cx, Side::Old, &mut checks).await;
        }
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let work = cx.work()?;
        if stopped_after_done(cx).await {
            return Ok(Outcome::nothing_to_do(Self::NAME, "the old server is stopped; the inventory stands"));
        }
        let done_before = work.journal().is_done(Self::ID);
        let api = cx.api(Side::Old);
        let (mut inventory, added) = take_or_extend_inventory(cx).await?;
        let poll = cx.config.reconcile.poll_interval;
        let mut resumed = Vec::new();

        let mut results = Vec::new();
        let mut deleted = Vec::new();
        for record in &inventory.environments {
            let live = match api.environment(record.id).await {
                Ok(env) => env,
                Err(e) if e.status() == Some(404) => {
                    cx.ui.warn(
                        Self::NAME,
                        format!(
                            "environment {} was deleted on the old server during the migration; it is left out",
                            record.label()
                        ),
                    );
                    deleted.push(record.id);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let action = if record.halted && !live.halted {
                // Resumed after the inventory: the operator's latest word is
                // "running", so it is resumed again on the new side.
                api.halt(record.id).await.with_context(|| format!("cannot halt {}", record.label()))?;
                cx.ui.warn(
                    Self::NAME,
                    format!(
                        "{} was halted before the migration but runs again: halted it; it is now recorded as \
                         running before, so env-reconcile resumes it on the new server",
                        record.label()
                    ),
                );
                resumed.push(record.id);
                "halted (resumed since the inventory)"
            } else if record.halted {
                "was halted before"
            } else if live.halted {
                "already halted by an earlier run"
            } else {
                api.halt(record.id).await.with_context(|| format!("cannot halt {}", record.label()))?;
                cx.ui.info(Self::NAME, format!("halted {}", record.label()));
                "halted"
            };
            results.push(EnvResult { id: record.id, name: record.name.clone(), action, queued_compiles: 0 });
        }

        if !deleted.is_empty() || !resumed.is_empty() {
            inventory.environments.retain(|e| !deleted.contains(&e.id));
            for record in inventory.environments.iter_mut().filter(|e| resumed.contains(&e.id)) {
                record.halted = false;
            }
            fsutil::write_json(&work.path(Inventory::FILE), &inventory)?;
        }

        // Halting is synchronous on the server, but check what it reports.
        for result in &results {
            let id = result.id;
            wait::until(
                Duration::from_millis(200),
                Duration::from_secs(60),
                &format!("environment {} to report halted", result.name),
                async || Ok(api.environment(id).await?.halted.then_some(())),
            )
            .await?;
        }

        let spinner = cx.ui.spinner(Self::NAME, "waiting for running compiles to finish");
        for result in &mut results {
            let id = result.id;
            let what = format!("the running compile of environment {} to finish", result.name);
            let queued = wait::until(poll, cx.config.reconcile.compile_timeout, &what, async || {
                let queue = api.compile_queue(id).await?;
                let running = queue.iter().any(|c| c.started.is_some());
                Ok((!running).then_some(queue.len()))
            })
            .await?;
            result.queued_compiles = queued;
            if queued > 0 {
                cx.ui.info(
                    Self::NAME,
                    format!(
                        "{}: {queued} compile(s) queued; they stay queued while halted and migrate with the database",
                        result.name
                    ),
                );
            }
        }
        drop(spinner);

        let halted_now = results.iter().filter(|r| r.action.starts_with("halted")).count();
        if done_before && added + deleted.len() + halted_now == 0 {
            return Ok(Outcome::nothing_to_do(
                Self::NAME,
                format!("every environment is halted and inventoried ({} in {})", results.len(), Inventory::FILE),
            ));
        }
        let summary = format!(
            "{} environment(s) halted: {halted_now} by this run, {} already halted; inventory in {}",
            results.len(),
            results.len() - halted_now,
            work.path(Inventory::FILE)
        );
        Ok(Outcome::done(Self::NAME, summary)
            .figures(Figures {
                environments: Some(results.len()),
                halted_by_this_run: Some(halted_now),
                halted_before: Some(inventory.environments.iter().filter(|e| e.halted).count()),
                ..Figures::default()
            })
            .details(results))
    }
}

/// Whether this step is done and the old server is stopped since: then
/// nothing on it can have changed.
async fn stopped_after_done(cx: &Context) -> bool {
    let done = cx.work().is_ok_and(|w| w.journal().is_done(HaltAll::ID));
    done && matches!(cx.api(Side::Old).probe().await, Ok(None))
}

/// The inventory of an earlier run of this step, completed with environments
/// created since (how many: the second value); or a new one.
async fn take_or_extend_inventory(cx: &Context) -> anyhow::Result<(Inventory, usize)> {
    let path = cx.work()?.path(Inventory::FILE);
    let fresh = Inventory::take(cx.api(Side::Old)).await?;
    let mut added = 0;
    let inventory = if path.exists() {
        let mut earlier: Inventory = fsutil::read_json(&path)?;
        for env in fresh.environments {
            if earlier.environment(env.id).is_none() {
                cx.ui.info(
                    HaltAll::NAME,
                    format!(
                        "environment {} is new since the inventory; adding it (running before: {})",
                        env.label(),
                        !env.halted
                    ),
                );
                earlier.environments.push(env);
                added += 1;
            }
        }
        earlier
    } else {
        let n = fresh.environments.len();
        cx.ui.info(HaltAll::NAME, format!("inventory: {n} environment(s) in {} project(s)", fresh.projects.len()));
        fresh
    };
    fsutil::write_json(&path, &inventory)?;
    Ok((inventory, added))
}
