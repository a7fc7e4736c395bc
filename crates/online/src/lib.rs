//! The online copy (`copy.mode = "online"`): instead of `dump` and `restore`
//! in the window, `precopy` copies the old database into the new one before
//! it, while the old orchestrator runs, and PostgreSQL's logical replication
//! keeps the copy current; in the window, after `halt-all` and
//! `stop-server`, `cutover` proves the copy caught up (no session of
//! Inmanta left on the old database, its schema unchanged, a fence written
//! there seen here), cuts it off, and verifies it as `restore` does.
//!
//! Nothing of Inmanta may connect to the new database before the cut: a
//! server (or, from 15.0, a scheduler) migrates the schema when it opens it,
//! and the replication would then fail or, worse, mix two schemas.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use migrate_core::{
    Checks, Context, ErrorKind, Failure, Figures, Outcome, Side, Step, StepId,
    config::CopyMode,
    journal::{StepState, StepStatus},
    probe, wait,
};
use migrate_pg::{Database, replication};
use serde::{Deserialize, Serialize};

/// What a re-run of `precopy` (and `cutover`) resumes from.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PrecopyState {
    /// The new database the copy goes into; kept by `--abandon`, so that a
    /// new precopy may empty it (and nothing else).
    pub subscribed_into: Option<String>,
    /// The old database's schema versions when the copy started.
    pub schema_versions: Option<BTreeMap<String, Vec<i64>>>,
}

impl StepState for PrecopyState {
    const STEP: StepId = StepId::Precopy;
}

/// What a re-run of `cutover` resumes from. A new copy starts it afresh.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CutoverState {
    /// The copy caught up with the stopped old side (a re-run killed while
    /// cutting it off goes on cutting it off: the fence it would write
    /// again can no longer arrive).
    pub caught_up: bool,
    /// The copy is cut off (a re-run only verifies).
    pub cut_off: bool,
}

impl StepState for CutoverState {
    const STEP: StepId = StepId::Cutover;
}
/// Tables up to this size get a content hash besides their row count.
const HASHED_TABLE_BYTES: i64 = 16 << 20;
/// `precopy` stops following an initial copy that shows no progress (no
/// table changed state, no byte more on the new side) for this long.
const COPY_STALL: Duration = Duration::from_secs(30 * 60);

/// New side: before the window (`copy.mode = "online"`): copies the old
/// database into the new one while the old orchestrator runs, and leaves
/// PostgreSQL keeping it current until `cutover`.
#[derive(Debug, Default, clap::Args)]
pub struct Precopy {
    /// Remove the copy from both sides (subscription, slot, publication,
    /// role, fence) and forget it; the new database keeps what was copied.
    #[arg(long)]
    pub abandon: bool,
}

impl Step for Precopy {
    const ID: StepId = StepId::Precopy;

    fn runs_when_done(&self) -> bool {
        // Watching a running copy changes nothing; abandoning must be possible.
        true
    }

    fn describe(&self, cx: &Context) -> String {
        if self.abandon {
            return "remove the online copy from both databases (subscription, slot, publication, role, fence)".into();
        }
        format!(
            "copy the old database into {} while the old orchestrator runs (logical replication), then keep it current until cutover",
            cx.config.new.database.name()
        )
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        if !self.abandon && cx.config.copy.mode != CopyMode::Online {
            checks.fail(
                "copy mode",
                "copy.mode is \"offline\": the database moves by dump and restore",
                "set `copy.mode = \"online\"` in the config to copy it before the window",
            );
            return checks;
        }
        let (old, new) =
            match (Database::open(&cx.config, Side::Old).await, Database::open(&cx.config, Side::New).await) {
                (Ok(old), Ok(new)) => (old, new),
                (Err(e), _) | (_, Err(e)) => {
                    checks.fail_on("databases", &e, "fix `old.database` and `new.database`");
                    return checks;
                }
            };
        // After the cut the new database is the orchestrator's: a new copy
        // would replace it.
        if cx.work().is_ok_and(|w| w.journal().step(StepId::Cutover).attempts > 0) {
            checks.fail(
                Cutover::NAME,
                "cutover has run: the new database is no longer a copy in progress",
                "go on with `inmanta-migrate migrate` (or start-server, env-reconcile); see `inmanta-migrate status`",
            );
            return checks;
        }
        if self.abandon {
            return checks;
        }
        probe::new_server_stopped(cx, &mut checks).await;
        check_online(cx, &old, &new, &mut checks).await;
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let work = cx.work()?;
        let (old, new) = (Database::open(&cx.config, Side::Old).await?, Database::open(&cx.config, Side::New).await?);
        if self.abandon {
            replication::cut_off(&old, &new).await?;
            work.update(|j| {
                let subscribed_into = j.state::<PrecopyState>()?.subscribed_into;
                *j.step_mut(Self::ID) = Default::default();
                j.set_state(&PrecopyState { subscribed_into, schema_versions: None })?;
                j.set_state(&CutoverState::default())
            })??;
            // Partial: the journal keeps precopy to do.
            return Ok(Outcome::partial(
                Self::NAME,
                format!(
                    "the online copy is removed from both sides; {} keeps the rows copied so far: \
                     `inmanta-migrate precopy` empties it and starts over, or with `copy.mode = \"offline\"` \
                     `restore --replace` replaces them",
                    new.target
                ),
            ));
        }
        let start = Instant::now();
        let ours = work.journal().state::<PrecopyState>()?.subscribed_into == Some(new.target.to_string());
        let running = ours && new.copy_progress().await?.exists;
        if running {
            cx.ui.info(Self::NAME, "the copy of an earlier run is there: following it");
        } else {
            start_copy(cx, &old, &new).await?;
        }
        let progress = follow(cx, &old, &new).await?;
        let lag = old.slot().await?.map_or(0, |s| s.lag_bytes);
        Ok(Outcome::done(
            Self::NAME,
            format!(
                "initial copy of {} tables ({:.1} MB) done in {:.1} s; PostgreSQL keeps {} current ({lag} bytes behind now) \
                 until `cutover`, which runs after `halt-all` and `stop-server`",
                progress.tables.len(),
                progress.bytes as f64 / 1e6,
                start.elapsed().as_secs_f64(),
                new.target
            ),
        )
        .figures(Figures {
            tables: Some(progress.tables.len()),
            bytes: u64::try_from(progress.bytes).ok(),
            seconds: Some(start.elapsed().as_secs_f64()),
            ..Figures::default()
        }))
    }
}

/// Publication, schema, subscription: the initial copy starts in the new
/// PostgreSQL's background.
async fn start_copy(cx: &Context, old: &Database, new: &Database) -> anyhow::Result<()> {
    let work = cx.work()?;
    // A failed start may have left parts: none survive into this one.
    new.unsubscribe().await?;
    replication::drop_orphan_slot(old).await?;
    if new.exists().await? {
        if new.user_object_count().await? > 0 {
            cx.ui.warn(Precopy::NAME, format!("emptying {}: it holds an earlier copy of this migration", new.target));
            new.drop_database().await?;
            new.create().await?;
        }
    } else {
        new.create().await?;
    }
    let state = PrecopyState {
        subscribed_into: Some(new.target.to_string()),
        schema_versions: Some(old.schema_versions().await?),
    };
    // What a cutover recorded of an earlier copy says nothing of this one.
    work.update(|j| {
        j.set_state(&state)?;
        j.set_state(&CutoverState::default())
    })??;
    let password = old.publish().await?;
    replication::copy_schema(old, new, &work.path("schema.dump")).await?;
    new.subscribe(&old.target, &password).await?;
    cx.ui.info(Precopy::NAME, format!("copying {} into {} (logical replication)", old.target, new.target));
    Ok(())
}

/// Shows the initial copy until every table is ready; fails on a lost slot,
/// and gives up following a copy that makes no progress for [`COPY_STALL`].
async fn follow(cx: &Context, old: &Database, new: &Database) -> anyhow::Result<replication::CopyProgress> {
    let first = new.copy_progress().await?;
    let bar = cx.ui.progress(Precopy::NAME, "tables copied", first.tables.len() as u64);
    let (mut shown, mut last) = (0, (first.tables.clone(), first.bytes));
    loop {
        let moved = wait::until(Duration::from_secs(1), COPY_STALL, "the initial copy to make progress", async || {
            let progress = new.copy_progress().await?;
            if !progress.exists {
                bail!(
                    "the subscription on {} is gone: run `inmanta-migrate precopy` to start the copy again",
                    new.target
                );
            }
            lost_slot(old).await?;
            let now = (progress.tables.clone(), progress.bytes);
            Ok((progress.initial_copy_done() || now != last).then_some((progress, now)))
        })
        .await;
        let (progress, now) = moved.map_err(|e| match e.downcast::<wait::GaveUp>() {
            Ok(gave_up) => Failure::new(
                ErrorKind::Timeout,
                format!("{gave_up}: neither a table's state nor the bytes on the new side changed"),
            )
            .advise(
                "the copy goes on in PostgreSQL's background if it still runs: `inmanta-migrate status` shows it, \
                 `precopy` follows it again; both PostgreSQL logs say why it stalls",
            )
            .into(),
            Err(e) => e,
        })?;
        last = now;
        let ready = progress.count("ready");
        for _ in shown..ready {
            bar.inc(&format!("{:.1} MB on the new side", progress.bytes as f64 / 1e6));
        }
        shown = shown.max(ready);
        if progress.initial_copy_done() {
            return Ok(progress);
        }
    }
}

/// A lost slot (the old side dropped WAL the copy still needed) voids the copy.
async fn lost_slot(old: &Database) -> anyhow::Result<()> {
    match old.slot().await? {
        Some(slot) if slot.wal_status == "lost" => bail!(
            "the old side dropped WAL the copy still needed (its slot is lost, max_slot_wal_keep_size): the copy cannot \
             catch up. Nothing of the old side changed: `inmanta-migrate precopy --abandon`, then `precopy` to start over \
             (raise max_slot_wal_keep_size first), or move offline (`copy.mode = \"offline\"`)"
        ),
        Some(_) => Ok(()),
        None => bail!(
            "the copy's replication slot is gone from {}: `inmanta-migrate precopy --abandon`, then `precopy` to start over",
            old.target
        ),
    }
}

/// What online mode needs of both databases (`check` runs it too).
pub async fn check_online(cx: &Context, old: &Database, new: &Database, checks: &mut Checks) {
    match old.publisher_facts().await {
        Ok(f) => {
            if f.wal_level == "logical" {
                checks.pass("wal_level", format!("{}: wal_level = logical", old.target));
            } else {
                checks.fail(
                    "wal_level",
                    format!("the old PostgreSQL has wal_level = {}; logical replication needs logical", f.wal_level),
                    "as its DBA: `ALTER SYSTEM SET wal_level = logical`, then restart the old PostgreSQL \
                     (inmanta-migrate never restarts it; the orchestrator reconnects), or use copy.mode = \"offline\"",
                );
            }
            let free = |max: i64, used: i64, what: &str, setting: &str, checks: &mut Checks| {
                if max > used {
                    checks.pass(what.to_owned(), format!("{} of {max} used", used));
                } else {
                    checks.fail(
                        what.to_owned(),
                        format!("all {max} in use"),
                        format!("raise {setting} on the old PostgreSQL (a restart), or free one"),
                    );
                }
            };
            free(f.max_replication_slots, f.slots_used, "replication slots", "max_replication_slots", checks);
            free(f.max_wal_senders, f.senders_used, "WAL senders", "max_wal_senders", checks);
            match f.max_slot_wal_keep_mb {
                // Before 13, a slot keeps WAL without bound and says nothing of
                // it (no max_slot_wal_keep_size, no wal_status): a stalled copy
                // would fill the old disk unseen, under the running orchestrator.
                None => checks.fail(
                    "old PostgreSQL",
                    format!(
                        "PostgreSQL {}: a replication slot there keeps WAL without bound and reports no wal_status \
                         (both came with 13), so a stalled copy could fill the old disk unseen",
                        f.server_major
                    ),
                    "use copy.mode = \"offline\" (dump and restore read PostgreSQL 9.2 and newer), \
                     or upgrade the old PostgreSQL to 13 or newer first",
                ),
                Some(mb) if mb < 0 => checks.warn(
                    "WAL kept for the copy",
                    "max_slot_wal_keep_size = -1: if the copy stalls, the old side keeps WAL until its disk is full",
                    "set max_slot_wal_keep_size on the old PostgreSQL (a reload) to what its disk can spare",
                ),
                Some(mb) => checks.pass("WAL kept for the copy", format!("at most {mb} MB (max_slot_wal_keep_size)")),
            }
            if f.tables_without_primary_key.is_empty() && f.tables_not_owned.is_empty() {
                checks.pass("tables", "every table has a primary key and belongs to the database's role");
            } else {
                let mut why = Vec::new();
                if !f.tables_without_primary_key.is_empty() {
                    why.push(format!("without a primary key: {}", f.tables_without_primary_key.join(", ")));
                }
                if !f.tables_not_owned.is_empty() {
                    why.push(format!("owned by another role: {}", f.tables_not_owned.join(", ")));
                }
                checks.fail(
                    "tables",
                    format!("logical replication cannot copy every table ({})", why.join("; ")),
                    "use copy.mode = \"offline\" (dump and restore copy them), or add the keys / fix the owners",
                );
            }
            if f.admin_is_superuser {
                checks.pass("old admin role", "a superuser: it may create the copy's replication role");
            } else {
                checks.fail(
                    "old admin role",
                    "old.database.admin_user is not a superuser, so it cannot create a role that may replicate",
                    "set `old.database.admin_user` (and `admin_password`) to a superuser such as postgres",
                );
            }
        }
        Err(e) => checks.fail_on("old database", &e, "fix `old.database`"),
    }
    let recorded = cx.work().ok().and_then(|w| w.journal().state::<PrecopyState>().ok());
    let ours = recorded.and_then(|s| s.subscribed_into) == Some(new.target.to_string());
    match new.may_subscribe().await {
        Ok(true) => checks.pass("new admin role", "may create the subscription"),
        Ok(false) => checks.fail(
            "new admin role",
            "new.database.admin_user may not create a subscription",
            "use a superuser (PostgreSQL 15), or grant it pg_create_subscription and CREATE on the database (16+)",
        ),
        // The new database may not exist before the first precopy.
        Err(_) if !new.exists().await.unwrap_or(true) => {}
        Err(e) => checks.fail_on("new admin role", &e, "fix `new.database.admin_user`"),
    }
    match new.exists().await {
        Ok(false) => checks.pass("target database", format!("{} does not exist yet; it will be created", new.target)),
        Ok(true) if ours => checks.pass("target database", format!("{} holds this migration's copy", new.target)),
        Ok(true) => match new.user_object_count().await {
            Ok(0) => checks.pass("target database", format!("{} exists and is empty", new.target)),
            Ok(n) => checks.fail(
                "target database",
                format!("{} is not empty: {n} object(s)", new.target),
                "point `new.database` at an empty database, or drop this one",
            ),
            Err(e) => checks.fail_on("target database", &e, "check `new.database`"),
        },
        Err(e) => checks.fail_on("target database", &e, "check `new.database.admin_user`"),
    }
}

/// New side: in the window after `stop-server` (`copy.mode = "online"`):
/// proves the copy caught up, cuts it off, verifies it as `restore` does.
#[derive(Debug, Default, clap::Args)]
pub struct Cutover {}

impl Step for Cutover {
    const ID: StepId = StepId::Cutover;

    fn describe(&self, _cx: &Context) -> String {
        "wait until the copy has the old side's last change (a fence), cut it off, compare every table's row count \
         and the small tables' content, ANALYZE"
            .into()
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        let journal = match cx.work() {
            Ok(w) => w.journal(),
            Err(e) => {
                checks.fail_on("journal", &e, "run `inmanta-migrate precopy` first");
                return checks;
            }
        };
        for (step, run) in [(StepId::Precopy, "precopy"), (StepId::StopServer, "halt-all, then stop-server")] {
            if journal.step(step).status == StepStatus::Done {
                checks.pass(step.name(), "done");
            } else {
                checks.fail(step.name(), "not done", format!("run `inmanta-migrate {run}` first"));
            }
        }
        probe::new_server_stopped(cx, &mut checks).await;
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let work = cx.work()?;
        let (old, new) = (Database::open(&cx.config, Side::Old).await?, Database::open(&cx.config, Side::New).await?);
        let start = Instant::now();
        let recorded = work.journal().state::<CutoverState>()?;
        let mut caught_up = None;
        if !recorded.cut_off {
            // A connection closed a moment ago may still be listed: give it a few seconds.
            let closed = wait::until(
                Duration::from_millis(500),
                Duration::from_secs(10),
                "the old database's last sessions to close",
                async || Ok(old.other_sessions().await?.is_empty().then_some(())),
            )
            .await;
            if let Err(e) = closed {
                if !e.is::<wait::GaveUp>() {
                    return Err(e);
                }
                let left = old.other_sessions().await?;
                if !left.is_empty() {
                    bail!(
                        "{} session(s) of {} still use the old database ({}): something of the old orchestrator still \
                         runs (a scheduler, an agent, a script). Stop it, then run `inmanta-migrate cutover` again; \
                         nothing was changed",
                        left.len(),
                        old.target.user,
                        left.join(", ")
                    );
                }
            }
            let then = work.journal().state::<PrecopyState>()?.schema_versions;
            let now = old.schema_versions().await?;
            if then.as_ref() != Some(&now) {
                let then = then.map_or_else(|| "not recorded".to_owned(), |t| format!("{t:?}"));
                bail!(
                    "the old database's schema changed since the copy started ({then} then, {now:?} now): the copy is void. \
                     Nothing of the old side changed: `inmanta-migrate precopy --abandon`, then `precopy` again, or move \
                     offline (`copy.mode = \"offline\"`, then dump and restore --replace)"
                );
            }
            if recorded.caught_up {
                cx.ui.info(Self::NAME, "the copy caught up in an earlier run, which was stopped while cutting it off");
            } else {
                same_tables(&old, &new).await?;
                caught_up = Some(catch_up(cx, &old, &new).await?);
                work.update_state(|s: &mut CutoverState| s.caught_up = true)?;
            }
            replication::cut_off(&old, &new).await?;
            work.update_state(|s: &mut CutoverState| s.cut_off = true)?;
            cx.ui.info(Self::NAME, "caught up and cut off: nothing replicates into the new database any more");
        }
        let verified = verify(cx, &old, &new).await?;
        new.analyze(cx.config.restore.jobs).await?;
        let seconds = start.elapsed().as_secs_f64();
        let caught = caught_up.map(|s| format!("caught up {s:.1} s after the fence, ")).unwrap_or_default();
        Ok(Outcome::done(
            Self::NAME,
            format!(
                "{caught}copy cut off; {} tables and {} rows equal on both sides, {} small tables' content equal, in {seconds:.1} s",
                verified.tables, verified.rows, verified.hashed
            ),
        )
        .figures(Figures {
            tables: Some(verified.tables),
            rows: Some(verified.rows),
            hashed_tables: Some(verified.hashed),
            catch_up_seconds: caught_up,
            seconds: Some(seconds),
            ..Figures::default()
        }))
    }
}

/// Writes a fence on the old side and waits until the new side has it:
/// then it holds every change before it. Returns the seconds it took.
async fn catch_up(cx: &Context, old: &Database, new: &Database) -> anyhow::Result<f64> {
    lost_slot(old).await?;
    let fenced = Instant::now();
    let token = old.write_fence().await?;
    let what = "the new side to apply the old side's last change (copy.catch_up_timeout)";
    let caught = wait::until(Duration::from_millis(200), cx.config.copy.catch_up_timeout, what, async || {
        lost_slot(old).await?;
        Ok(new.fence_seen(&token).await?.then_some(()))
    })
    .await;
    // A lost slot says its own way on; a wait that gave up gets one here.
    if let Err(e) = caught {
        if !e.is::<wait::GaveUp>() {
            return Err(e);
        }
        let disabled = new.copy_progress().await.is_ok_and(|p| p.exists && !p.enabled);
        let how = if disabled {
            format!(
                "the subscription on {} is disabled: enable it (as a superuser there: \
                 `ALTER SUBSCRIPTION {} ENABLE`), then",
                new.target,
                replication::NAME
            )
        } else {
            "`inmanta-migrate status` shows the copy's state and lag; once it moves,".to_owned()
        };
        bail!(
            "{e:#}. Nothing was cut off and Inmanta's data on the old side is unchanged: {how} run \
             `inmanta-migrate cutover` again (or raise copy.catch_up_timeout)"
        );
    }
    Ok(fenced.elapsed().as_secs_f64())
}

struct Verified {
    tables: usize,
    rows: i64,
    hashed: usize,
}

/// Every table on both sides with the same rows count, and the small ones
/// with the same content.
/// The tables only the old side has, and those only the new side has.
fn one_side_only<'a>(old: &'a [String], new: &'a [String]) -> (Vec<&'a String>, Vec<&'a String>) {
    (old.iter().filter(|t| !new.contains(t)).collect(), new.iter().filter(|t| !old.contains(t)).collect())
}

/// Before the cut: a table on one side only (made by hand on the old side
/// while the copy ran, say) stops the cutover while the copy still runs and
/// every way is still open.
async fn same_tables(old: &Database, new: &Database) -> anyhow::Result<()> {
    // The copy's own fence is on both sides until the cut, and goes with it.
    let inmanta_tables = async |db: &Database| -> anyhow::Result<Vec<String>> {
        Ok(db.tables().await?.into_iter().filter(|t| t != replication::FENCE).collect())
    };
    let (old_tables, new_tables) = (inmanta_tables(old).await?, inmanta_tables(new).await?);
    if old_tables == new_tables {
        return Ok(());
    }
    let (only_old, only_new) = one_side_only(&old_tables, &new_tables);
    Err(Failure::new(
        ErrorKind::NeedsOperator,
        format!(
            "the old database's tables differ from the copy's (only on the old side: {only_old:?}; only on the new \
             side: {only_new:?}); nothing was cut off, the copy still runs"
        ),
    )
    .advise(
        "a table someone made by hand on the old side after precopy started: drop it there if nothing needs it, \
         then run `inmanta-migrate cutover` again; to take it along, copy again (`inmanta-migrate precopy --abandon`, \
         then `precopy`, then `cutover`) or move offline (`copy.mode = \"offline\"`, then `dump` and \
         `restore --replace`). The old side is untouched: starting its server takes you back",
    )
    .into())
}

async fn verify(cx: &Context, old: &Database, new: &Database) -> anyhow::Result<Verified> {
    let _spinner = cx.ui.spinner(Cutover::NAME, "comparing both databases");
    let (old_tables, new_tables) = (old.tables().await?, new.tables().await?);
    if old_tables != new_tables {
        let (missing, extra) = one_side_only(&old_tables, &new_tables);
        bail!(
            "after the cut, the new database's tables differ from the old one's: missing {missing:?}, extra {extra:?}. \
             The old side is untouched: start its server again to go back, or move offline (`copy.mode = \"offline\"`, \
             dump, restore --replace)"
        );
    }
    let jobs = cx.config.restore.jobs as usize;
    let (old_counts, new_counts) =
        futures::try_join!(old.row_counts_parallel(&old_tables, jobs), new.row_counts_parallel(&new_tables, jobs))
            .context("cannot count the rows")?;
    let mut differences: Vec<String> = old_counts
        .iter()
        .filter(|(t, n)| new_counts.get(*t) != Some(n))
        .map(|(t, n)| format!("{t}: {n} rows on the old side, {} on the new", new_counts.get(t).copied().unwrap_or(-1)))
        .collect();
    let small: Vec<String> =
        old.table_sizes().await?.into_iter().filter(|(_, b)| *b <= HASHED_TABLE_BYTES).map(|(t, _)| t).collect();
    let (old_hashes, new_hashes) = futures::try_join!(old.content_hashes(&small), new.content_hashes(&small))?;
    differences.extend(
        old_hashes
            .iter()
            .filter(|(t, h)| new_hashes.get(*t) != Some(h))
            .map(|(t, _)| format!("{t}: the content differs")),
    );
    if !differences.is_empty() {
        bail!(
            "the copy does not match the old database:\n  {}\nThe old side is untouched: start it again to go back, or move \
             offline (`copy.mode = \"offline\"`, dump, restore --replace)",
            differences.join("\n  ")
        );
    }
    Ok(Verified { tables: old_tables.len(), rows: old_counts.values().sum(), hashed: small.len() })
}

/// The online copy as it stands, for `status`: read from both databases.
#[derive(Debug, Default, serde::Serialize)]
pub struct CopyStatus {
    /// Tables of the subscription by state (`init`, `copying`, `synced`, `ready`).
    pub tables: std::collections::BTreeMap<&'static str, usize>,
    /// Bytes of the copied tables on the new side.
    pub bytes: i64,
    /// Whether the subscription on the new side applies changes (None: none there).
    pub subscription_enabled: Option<bool>,
    /// The slot on the old side: `reserved` ... `lost`.
    pub wal_status: Option<String>,
    /// WAL of the old side the new side has not confirmed yet, bytes.
    pub lag_bytes: Option<i64>,
    /// What of the copy exists on each side (removed by cutover or `precopy --abandon`).
    pub old_side: Vec<String>,
    pub new_side: Vec<String>,
    /// What could not be read.
    pub errors: Vec<String>,
}

impl CopyStatus {
    pub async fn read(cx: &Context) -> CopyStatus {
        let mut status = CopyStatus::default();
        match Database::open(&cx.config, Side::Old).await {
            Ok(old) => {
                match old.slot().await {
                    Ok(Some(slot)) => {
                        status.wal_status = Some(slot.wal_status);
                        status.lag_bytes = Some(slot.lag_bytes);
                    }
                    Ok(None) => {}
                    Err(e) => status.errors.push(Failure::of(&e).shown()),
                }
                match old.copy_leftovers().await {
                    Ok(l) => status.old_side = l,
                    Err(e) => status.errors.push(Failure::of(&e).shown()),
                }
            }
            Err(e) => status.errors.push(Failure::of(&e).shown()),
        }
        match Database::open(&cx.config, Side::New).await {
            Ok(new) => {
                match new.copy_progress().await {
                    Ok(p) => {
                        status.subscription_enabled = p.exists.then_some(p.enabled);
                        for state in p.tables.values() {
                            *status.tables.entry(state).or_default() += 1;
                        }
                        status.bytes = p.bytes;
                    }
                    Err(e) => status.errors.push(Failure::of(&e).shown()),
                }
                match new.copy_leftovers().await {
                    Ok(l) => status.new_side = l,
                    Err(e) => status.errors.push(Failure::of(&e).shown()),
                }
            }
            Err(e) => status.errors.push(Failure::of(&e).shown()),
        }
        status
    }

    /// Lines for the status text.
    pub fn text(&self) -> String {
        let mut text = String::from("\n## Online copy\n\n");
        if self.old_side.is_empty() && self.new_side.is_empty() && self.errors.is_empty() {
            text.push_str("- nothing of the copy exists on either side\n");
            return text;
        }
        let tables: Vec<String> = self.tables.iter().map(|(s, n)| format!("{n} {s}")).collect();
        text.push_str(&format!(
            "- tables: {} ({:.1} MB on the new side)\n",
            tables.join(", "),
            self.bytes as f64 / 1e6
        ));
        if self.subscription_enabled == Some(false) {
            text.push_str("- the subscription is disabled: nothing is applied on the new side\n");
        }
        if let (Some(wal), Some(lag)) = (&self.wal_status, self.lag_bytes) {
            text.push_str(&format!(
                "- slot on the old side: {wal}, {lag} bytes of WAL not yet confirmed by the new side\n"
            ));
        }
        text.push_str(&format!(
            "- on the old side: {}; on the new side: {} (cutover or `precopy --abandon` removes them)\n",
            list(&self.old_side),
            list(&self.new_side)
        ));
        for e in &self.errors {
            text.push_str(&format!("- could not read: {e}\n"));
        }
        text
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "nothing".into() } else { items.join(", ") }
}
