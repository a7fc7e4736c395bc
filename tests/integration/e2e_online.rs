//! The online copy end to end on the real lab: `check` names what the old
//! PostgreSQL lacks, the DBA's fix, `precopy` while the old orchestrator
//! compiles and deploys, `cutover` in the window, and the same assertions as
//! the offline migration.

use lab::{EnvRole, Security, Side, UpOptions};
use std::{collections::BTreeMap, time::Duration};

use crate::support::{check_items, set};
use crate::support::{
    lab::{Lab, assert_migrated, lab, lab_from, lab_pg, pg_majors, slot},
    process::{run_to_crash, sigkill, spawn, wait_for},
};

/// [`leftovers`] once the copy is cut off or abandoned.
const NOTHING_LEFT: &str = "0 publications, 0 subscriptions, 0 slots, 0 copy roles";

/// What of the copy exists on one side of the lab (superuser view).
fn leftovers(lab: &Lab, side: Side) -> String {
    let sql = "SELECT (SELECT count(*) FROM pg_publication) || ' publications, ' || \
               (SELECT count(*) FROM pg_subscription) || ' subscriptions, ' || \
               (SELECT count(*) FROM pg_replication_slots) || ' slots, ' || \
               (SELECT count(*) FROM pg_roles WHERE rolname = 'inmanta_migrate') || ' copy roles'";
    lab.psql(side, "inmanta", sql).unwrap().trim().to_owned()
}

/// The DBA's fix `check` asks for: wal_level = logical, which takes a
/// restart of the old PostgreSQL (the orchestrator stopped around it).
fn wal_level_logical(lab: &Lab) {
    lab.psql(Side::Old, "postgres", "ALTER SYSTEM SET wal_level = logical").unwrap();
    restart_old_postgres(lab);
}

fn restart_old_postgres(lab: &Lab) {
    lab.stop_server(Side::Old).unwrap();
    lab.stop_postgres(Side::Old).unwrap();
    lab.start_postgres(Side::Old).unwrap();
    lab.start_server(Side::Old).unwrap();
}

/// A lab in online mode, its old PostgreSQL brought up ready for it.
fn online_lab(name: &str) -> Lab {
    let options =
        UpOptions { name: name.into(), old: "8.7.6".into(), ports: None, logical: true, ..UpOptions::default() };
    let lab = lab_from(options, Security::Plain);
    let online = lab.config_variant("online", |c| set(c, "copy.mode", "online"));
    std::fs::copy(&online, lab.config_path()).unwrap();
    lab
}

/// One number a query on one side answers (None while it cannot answer,
/// e.g. before the new database exists).
fn count(lab: &Lab, side: Side, sql: &str) -> Option<i64> {
    lab.psql(side, "inmanta", sql).ok().and_then(|n| n.trim().parse().ok())
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_8_7_to_14_online_while_the_old_orchestrator_works() {
    let _slot = slot();
    migrates_online(lab("e2e-online", "8.7.6"));
}

/// PostgreSQL 13 (an ISO7 on RHEL 8) into PostgreSQL 17 (the lab's Debian
/// 13 root, where the tool runs too): the subscription crosses majors.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_11_5_to_15_5_online_across_postgresql_majors() {
    let _slot = slot();
    let lab = lab_pg("e2e-11to15-online", ("11.5.5", Some(13)), ("15.5.9", None));
    assert_eq!(pg_majors(&lab), (13, 17));
    migrates_online(lab);
}

/// PostgreSQL 12 cannot bound the WAL a slot keeps: `check` and `precopy`
/// refuse the online copy, say why and the way out, and leave the old side
/// untouched; the way out (offline) then migrates 8.7.6 on PostgreSQL 12 to
/// 14.0.0 on 15.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn refuses_an_online_copy_from_postgresql_12_and_migrates_offline() {
    let _slot = slot();
    let options = UpOptions {
        name: "e2e-pg12".into(),
        old: "8.7.6".into(),
        old_pg: Some(12),
        logical: true,
        ..UpOptions::default()
    };
    let lab = lab_from(options, Security::Plain);
    assert_eq!(pg_majors(&lab), (12, 15));
    let before = lab.environments(Side::Old);
    let online = lab.config_variant("online", |c| set(c, "copy.mode", "online"));
    let refusal = "PostgreSQL 12: a replication slot there keeps WAL without bound";
    let with_online = |args: &[&str]| crate::support::run(&mut lab.tool_at(&online, args, &[]));
    with_online(&["check"]).code(3).output_has(refusal).output_has("copy.mode = \"offline\"");
    with_online(&["precopy"]).code(3).output_has(refusal);
    assert_eq!(leftovers(&lab, Side::Old), NOTHING_LEFT, "the refused copy left nothing on the old side");
    assert!(lab.server_running(Side::Old), "nor stopped anything");
    // The databases the other way round: PostgreSQL 15 into 12.
    let downgrade = lab.config_variant("pg-downgrade", |c| {
        let table = |c: &mut toml::Table, side: &str| c[side].as_table_mut().unwrap().remove("database").unwrap();
        let (old, new) = (table(c, "old"), table(c, "new"));
        c["old"].as_table_mut().unwrap().insert("database".into(), new);
        c["new"].as_table_mut().unwrap().insert("database".into(), old);
    });
    let refused = crate::support::run(&mut lab.tool_at(&downgrade, &["check"], &[]));
    refused.code(3).output_has("the new PostgreSQL 12 is older than the old 15");

    lab.run(&["migrate", "--yes"]).success();
    assert_migrated(&lab, &before, &lab.reconciled(), false);
}

/// The way back from an online copy: after precopy (before the window: the
/// old orchestrator untouched but for the copy), then (a new attempt) after
/// cutover. Each leaves no slot, publication, subscription or copy role on
/// either side, and the old orchestrator as it was.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn rolls_back_an_online_copy_after_precopy_and_after_cutover() {
    let _slot = slot();
    let lab = online_lab("e2e-online-rollback");
    wal_level_logical(&lab);
    let before = lab.environments(Side::Old);
    let halted_before = |lab: &Lab| -> BTreeMap<String, serde_json::Value> {
        lab.environments(Side::Old).into_iter().map(|(name, e)| (name, e["halted"].clone())).collect()
    };
    let expected: BTreeMap<_, _> = before.iter().map(|(name, e)| (name.clone(), e["halted"].clone())).collect();

    let points: [(&str, &[&str]); 2] =
        [("precopy", &["precopy"]), ("cutover", &["precopy", "halt-all", "stop-server", "cutover"])];
    for (point, steps) in points {
        for step in steps {
            lab.run(&[step]).success();
        }
        let back = lab.run(&["rollback", "--json"]);
        back.success();
        assert_eq!(lab.journal()["rolled_back"]["from"], point);
        eprintln!("TIMING online rollback after {point}: {}", back.json()["summary"]);
        assert_eq!(leftovers(&lab, Side::Old), NOTHING_LEFT, "after {point}");
        assert_eq!(leftovers(&lab, Side::New), NOTHING_LEFT, "after {point}");
        assert!(lab.server_running(Side::Old), "after {point}: the old server runs again");
        assert_eq!(halted_before(&lab), expected, "after {point}: halted as before the migration");
    }
    assert_eq!(lab.journal()["earlier"].as_array().map(Vec::len), Some(1), "two attempts: one kept, one rolled back");
}

/// The old orchestrator keeps working during the copy (a compile, its
/// release and deploy write versions, resources and deploy history), then
/// the window opens: halt-all, stop-server. Returns the environments as the
/// old server listed them just before.
fn work_then_open_the_window(lab: &Lab) -> BTreeMap<String, serde_json::Value> {
    let api = lab.client(Side::Old).unwrap();
    let env = lab.envs().iter().find(|e| e.role == EnvRole::Plain).unwrap();
    api.notify(&env.id, "during the online copy", true).unwrap();
    let compiled = api.wait_compile(&env.id, "during the online copy", Duration::from_secs(600)).unwrap();
    assert!(compiled.success, "{}", compiled.failure);
    std::thread::sleep(Duration::from_secs(5));
    let before = lab.environments(Side::Old);
    lab.run(&["halt-all"]).success();
    lab.run(&["stop-server"]).success();
    before
}

/// `check` names what the old PostgreSQL lacks, the DBA's fix, `precopy`
/// while the old orchestrator compiles and deploys, `cutover` in the
/// window, then the offline e2e's assertions.
fn migrates_online(lab: Lab) {
    let online = lab.config_variant("online", |c| set(c, "copy.mode", "online"));
    std::fs::copy(&online, lab.config_path()).unwrap();

    // Debian's default wal_level is replica: check says so, and what to do.
    let refused = lab.run(&["check", "--json"]);
    refused.code(3);
    let wal = check_items(&refused).into_iter().find(|c| c["name"] == "wal_level").expect("a wal_level check");
    assert_eq!(wal["status"], "fail", "{wal}");
    assert!(wal["next_step"].as_str().unwrap().contains("ALTER SYSTEM SET wal_level = logical"), "{wal}");
    wal_level_logical(&lab);
    lab.run(&["check"]).success();

    let copied = lab.run(&["precopy", "--json"]);
    copied.success();
    assert!(copied.json()["figures"]["tables"].as_u64().unwrap() > 20, "{}", copied.stdout);
    let status = lab.run(&["status", "--json"]);
    status.success();
    let copy = &status.json()["details"]["online_copy"];
    assert_eq!(copy["old_side"], serde_json::json!(["publication", "role", "slot (reserved)"]), "{copy}");
    assert_eq!(copy["new_side"], serde_json::json!(["subscription"]), "{copy}");
    // A second precopy follows the running copy instead of starting over.
    lab.run(&["precopy"]).success().stderr_has("following it");
    // A rehearsal now copies the new side's copy, which replicates on: the
    // cutover below still finds every change of the old side.
    let rehearsed = lab.run(&["rehearse", "--json"]);
    rehearsed.success();
    let source = rehearsed.json()["details"]["copy"]["database"].as_str().unwrap().to_owned();
    assert!(source.ends_with(&format!(":{}/inmanta", lab.ports().pg_new)), "copied from the new side: {source}");
    assert_eq!(
        leftovers(&lab, Side::New),
        "0 publications, 1 subscriptions, 0 slots, 0 copy roles",
        "the online copy's subscription, and no other"
    );

    let before = work_then_open_the_window(&lab);
    let cut = lab.run(&["cutover", "--json"]);
    cut.success();
    let figures = &cut.json()["figures"];
    assert!(figures["hashed_tables"].as_u64().unwrap() > 10, "{figures}");
    assert!(figures["catch_up_seconds"].as_f64().unwrap() < 60.0, "{figures}");
    assert_eq!(leftovers(&lab, Side::Old), NOTHING_LEFT);
    assert_eq!(leftovers(&lab, Side::New), NOTHING_LEFT);
    // Before the new server starts and migrates the schema: the same data.
    assert_eq!(lab.fingerprints(Side::Old), lab.fingerprints(Side::New), "row counts and content equal");
    lab.run(&["cutover"]).success().stdout_has("nothing to do");

    lab.run(&["start-server"]).success();
    let reconciled = lab.run(&["env-reconcile", "--json"]);
    reconciled.success();
    assert_migrated(&lab, &before, &reconciled.json(), false);
    let status = lab.run(&["status", "--json"]);
    assert_eq!(status.json()["details"]["online_copy"]["old_side"], serde_json::json!([]));
}

/// The faults of an online copy, one after the other on one lab, each ending
/// with nothing lost: a lost slot (the old side untouched, the copy removed
/// and started again), the tool killed before the subscription and during
/// the initial copy, the old PostgreSQL restarted and the new one stopped
/// during the copy, a stalled catch-up timing out, the tool killed while
/// it waits for the fence. Then the migration ends as the offline one does.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn an_online_copy_survives_kills_restarts_and_a_lost_slot() {
    let _slot = slot();
    let lab = online_lab("e2e-online-faults");
    let stall = "ALTER SUBSCRIPTION inmanta_migrate DISABLE";
    let unstall = "ALTER SUBSCRIPTION inmanta_migrate ENABLE";

    // A lost slot: the new side stalls, the old side may keep 1 MB of WAL
    // for it and writes far more (in another database). The old server is
    // stopped meanwhile, so that what changes on the old side is the tool's.
    lab.stop_server(Side::Old).unwrap();
    let old_before = lab.fingerprints(Side::Old);
    lab.run(&["precopy"]).success();
    lab.psql(Side::New, "inmanta", stall).unwrap();
    lab.psql(Side::Old, "postgres", "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'; SELECT pg_reload_conf()")
        .unwrap();
    let lost = "SELECT count(*) FROM pg_replication_slots WHERE wal_status = 'lost'";
    for _ in 0..10 {
        lab.psql(
            Side::Old,
            "postgres",
            "DROP TABLE IF EXISTS burst; CREATE TABLE burst AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g; \
             SELECT pg_switch_wal(); CHECKPOINT",
        )
        .unwrap();
        if count(&lab, Side::Old, lost) == Some(1) {
            break;
        }
    }
    assert_eq!(count(&lab, Side::Old, lost), Some(1), "the slot is lost");
    lab.run(&["precopy"]).code(1).stderr_has("slot is lost").stderr_has("precopy --abandon");
    lab.run(&["status"]).success().stdout_has("slot on the old side: lost");
    lab.psql(Side::Old, "postgres", "ALTER SYSTEM RESET max_slot_wal_keep_size; SELECT pg_reload_conf()").unwrap();
    lab.run(&["precopy", "--abandon"]).success();
    assert_eq!(leftovers(&lab, Side::Old), NOTHING_LEFT);
    assert_eq!(leftovers(&lab, Side::New), NOTHING_LEFT);
    assert_eq!(lab.fingerprints(Side::Old), old_before, "the old database is untouched");
    lab.start_server(Side::Old).unwrap();

    // A table that takes a few seconds to copy (with a key, as online needs).
    lab.psql(
        Side::Old,
        "inmanta",
        "SET ROLE inmanta; CREATE TABLE public.ballast (id int PRIMARY KEY, v text); \
         INSERT INTO public.ballast SELECT g, md5(g::text) FROM generate_series(1, 1000000) g",
    )
    .unwrap();

    // Killed between the publication and the subscription: the next run
    // starts the copy again from a clean new database.
    let mut precopy = spawn(&lab, &["precopy"]);
    let published = wait_for(&mut precopy, "the publication", || {
        count(&lab, Side::Old, "SELECT count(*) FROM pg_publication") == Some(1)
    });
    assert!(published, "precopy ended before it published");
    sigkill(&mut precopy);

    // Killed during the initial copy, and the old PostgreSQL restarted
    // under it: PostgreSQL copies the interrupted table again.
    let mut precopy = spawn(&lab, &["precopy"]);
    let copying = "SELECT count(*) FROM pg_subscription_rel r JOIN pg_class c ON c.oid = r.srrelid \
                   WHERE c.relname = 'ballast' AND r.srsubstate = 'd'";
    let seen = wait_for(&mut precopy, "the ballast being copied", || count(&lab, Side::New, copying) == Some(1));
    assert!(seen, "precopy ended before the ballast was being copied");
    sigkill(&mut precopy);
    restart_old_postgres(&lab);

    // The new PostgreSQL stopped during the copy: status says what it
    // cannot read; started again, the subscription goes on.
    lab.stop_postgres(Side::New).unwrap();
    lab.run(&["status"]).success().stdout_has("could not read");
    lab.start_postgres(Side::New).unwrap();
    lab.run(&["precopy"]).success().stderr_has("following it");

    let before = work_then_open_the_window(&lab);

    // A catch-up that stalls ends at copy.catch_up_timeout, the copy kept.
    lab.psql(Side::New, "inmanta", stall).unwrap();
    let impatient = lab.config_variant("impatient", |c| set(c, "copy.catch_up_timeout", "3s"));
    crate::support::Test::new(lab.dir())
        .config(&impatient)
        .args(["cutover"])
        .run()
        .code(1)
        .stderr_has("gave up after 3s")
        .stderr_has("ALTER SUBSCRIPTION inmanta_migrate ENABLE");
    lab.run(&["status"]).success().stdout_has("the subscription is disabled");
    assert_eq!(leftovers(&lab, Side::New), "0 publications, 1 subscriptions, 0 slots, 0 copy roles");

    // Killed while it waits for the fence: the next run fences again.
    let fence = || lab.psql(Side::Old, "inmanta", "SELECT token FROM public.inmanta_migrate_fence").unwrap();
    let first_fence = fence();
    let mut cutover = spawn(&lab, &["cutover"]);
    let waiting = wait_for(&mut cutover, "a new fence", || fence() != first_fence);
    assert!(waiting, "cutover ended before it wrote its fence");
    sigkill(&mut cutover);
    lab.psql(Side::New, "inmanta", unstall).unwrap();

    // A table made by hand on the old side while the copy ran: found before
    // the cut, which waits for the operator with the copy still running.
    lab.psql(Side::Old, "inmanta", "SET ROLE inmanta; CREATE TABLE public.by_hand (id int PRIMARY KEY)").unwrap();
    let differs = lab.run(&["cutover", "--json"]);
    let failed = differs.code(3).json();
    assert_eq!(failed["kind"], "needs_operator", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("only on the old side: [\"public.by_hand\"]"), "{failed}");
    assert!(failed["advice"].as_str().unwrap().contains("precopy --abandon"), "{failed}");
    assert_eq!(leftovers(&lab, Side::New), "0 publications, 1 subscriptions, 0 slots, 0 copy roles", "not cut off");
    lab.psql(Side::Old, "inmanta", "DROP TABLE public.by_hand").unwrap();
    lab.run(&["cutover"]).success();
    cut_off_then_migrate(&lab, &before);
}

/// After a cutover: nothing of the copy left on either side, the same data
/// on both, and the rest of the migration as offline.
fn cut_off_then_migrate(lab: &Lab, before: &BTreeMap<String, serde_json::Value>) {
    assert_eq!(leftovers(lab, Side::Old), NOTHING_LEFT);
    assert_eq!(leftovers(lab, Side::New), NOTHING_LEFT);
    assert_eq!(lab.fingerprints(Side::Old), lab.fingerprints(Side::New), "row counts and content equal");
    lab.run(&["start-server"]).success();
    let reconciled = lab.run(&["env-reconcile", "--json"]);
    reconciled.success();
    assert_migrated(lab, before, &reconciled.json(), false);
}

/// Runs `args` killed at its `n`-th point of `kind` (issue 14's crash
/// points): `Some(point)` when it was killed there, `None` when it passed
/// fewer such points and finished.
fn crashed_at(lab: &Lab, args: &[&str], kind: &str, n: usize) -> Option<String> {
    let (run, passed) = run_to_crash(lab, args, &format!("{kind}:{n}"));
    if run.signal.is_none() {
        run.success();
        return None;
    }
    assert_eq!(run.signal, Some(9), "{kind}:{n}: {run:?}");
    let last = passed.lines().last().unwrap_or_default().to_owned();
    assert!(last.ends_with("(crash)"), "{kind}:{n}: the log ends with {last:?}");
    Some(last)
}

/// The online copy killed at its database changes (publication, role,
/// schema, subscription, fence, slot, and the drops of each): `precopy`
/// and then `cutover` are each killed at their first, second, ... change
/// (before it, then after it), and run again, until a run passes them all;
/// each next run takes up what the killed one left. Then the copy must be
/// whole and gone from both sides, and the migration ends as the offline
/// one does.
#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn an_online_copy_killed_at_each_database_change_finishes_on_the_next_run() {
    let _slot = slot();
    let lab = online_lab("e2e-online-crash");
    let mut killed = Vec::new();
    let mut before = BTreeMap::new();
    for step in ["precopy", "cutover"] {
        if step == "cutover" {
            before = work_then_open_the_window(&lab);
        }
        let mut n = 1;
        'points: loop {
            for kind in ["db-before", "db-after"] {
                match crashed_at(&lab, &[step], kind, n) {
                    Some(point) => killed.push(format!("{step} {point}")),
                    None => break 'points,
                }
            }
            n += 1;
        }
        assert!(n > 3, "{step} was killed at a few changes at least: {killed:?}");
    }
    eprintln!("killed at:\n{}", killed.join("\n"));
    for what in ["publication", "subscription", "fence", "copy's role", "schema"] {
        assert!(killed.iter().any(|k| k.contains(what)), "killed around a change of the {what}: {killed:?}");
    }
    cut_off_then_migrate(&lab, &before);
}
