//! The online copy's PostgreSQL side against two real clusters (scratch
//! clusters of the lab): what `check` reads, the copy started, followed
//! while the old side writes, fenced, cut off, and nothing left behind.
//! They run in plain `cargo test` where a PostgreSQL server is installed and
//! skip themselves, saying so, where none is (`ScratchCluster::available`).

use std::time::{Duration, Instant};

use camino::Utf8PathBuf;
use lab::ScratchCluster;
use migrate_core::{config::DatabaseConfig, config::PgTools, runner::Runner, secret::SecretSource};
use migrate_pg::{Database, Target, replication};

struct Side {
    cluster: ScratchCluster,
    db: Database,
}

async fn side(dir: &tempfile::TempDir, name: &str, logical: bool) -> Side {
    let cluster = ScratchCluster::start().expect("a scratch cluster");
    if logical {
        cluster.psql("postgres", "ALTER SYSTEM SET wal_level = logical").unwrap();
        cluster.stop().unwrap();
        cluster.restart().unwrap();
    }
    let secret = |file: &str, text: &str| {
        let path = Utf8PathBuf::try_from(dir.path().join(format!("{name}-{file}"))).unwrap();
        std::fs::write(&path, format!("{text}\n")).unwrap();
        Some(SecretSource { env: None, file: Some(path) })
    };
    let config = DatabaseConfig {
        host: Some("127.0.0.1".into()),
        port: Some(cluster.port()),
        name: Some("inmanta".into()),
        user: Some("inmanta".into()),
        password: secret("password", ScratchCluster::PASSWORD),
        sslmode: Some("disable".into()),
        admin_user: Some("postgres".into()),
        admin_password: secret("admin", ScratchCluster::ADMIN_PASSWORD),
        ..Default::default()
    };
    let target = Target::resolve(&config, &Runner::local()).await.unwrap();
    let db = Database::with_target(target, PgTools { bin_dir: Some(cluster.bin_dir().to_owned()) }).unwrap();
    Side { cluster, db }
}

/// Tables like Inmanta's: uuid and composite keys, jsonb, bytea.
const SCHEMA: &str = "CREATE TABLE public.environment (id uuid PRIMARY KEY, name text NOT NULL, settings jsonb);\n\
    CREATE TABLE public.resourceaction (action_id uuid PRIMARY KEY, environment uuid REFERENCES public.environment, \
        messages jsonb, payload bytea);\n\
    CREATE TABLE public.resource (environment uuid, model int, resource_id text, attributes jsonb, \
        PRIMARY KEY (environment, model, resource_id));\n\
    ALTER TABLE public.environment OWNER TO inmanta; ALTER TABLE public.resourceaction OWNER TO inmanta;\n\
    ALTER TABLE public.resource OWNER TO inmanta;";

fn write_rows(side: &Side, from: i32, to: i32) {
    side.cluster
        .psql(
            "inmanta",
            &format!(
                "INSERT INTO public.environment SELECT md5(i::text)::uuid, 'env ' || i, jsonb_build_object('n', i) \
                   FROM generate_series({from}, {to}) i;\n\
                 INSERT INTO public.resourceaction SELECT md5('a' || i || '-' || j)::uuid, md5(i::text)::uuid, \
                   jsonb_build_array(repeat('log line ', 50)), decode(md5(j::text), 'hex') \
                   FROM generate_series({from}, {to}) i, generate_series(1, 50) j;\n\
                 INSERT INTO public.resource SELECT md5(i::text)::uuid, j, 'std::File[h,path=/' || j || ']', \
                   jsonb_build_object('content', repeat('x', 2000)) \
                   FROM generate_series({from}, {to}) i, generate_series(1, 20) j;"
            ),
        )
        .unwrap();
}

async fn leftovers(db: &Database) -> Vec<String> {
    db.copy_leftovers().await.unwrap()
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < Duration::from_secs(120), "{what} after 2 min");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn copies_while_the_old_side_writes_then_fences_and_cuts_off_cleanly() {
    if !ScratchCluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (side(&dir, "old", true).await, side(&dir, "new", false).await);
    old.cluster.psql("inmanta", SCHEMA).unwrap();
    write_rows(&old, 1, 200);

    let facts = old.db.publisher_facts().await.unwrap();
    assert_eq!(facts.wal_level, "logical");
    assert!(facts.tables_without_primary_key.is_empty(), "{facts:?}");
    assert!(facts.tables_not_owned.is_empty(), "{facts:?}");
    assert!(facts.admin_is_superuser && facts.max_replication_slots > facts.slots_used, "{facts:?}");
    assert_eq!(facts.max_slot_wal_keep_mb, Some(-1), "PostgreSQL's default: unlimited");
    assert!(new.db.may_subscribe().await.unwrap());

    let password = old.db.publish().await.unwrap();
    replication::copy_schema(&old.db, &new.db, &Utf8PathBuf::try_from(dir.path().join("schema.dump")).unwrap())
        .await
        .unwrap();
    // A new side that logs every statement, and every failed one, still
    // never writes the copy's password (a second subscribe fails).
    new.cluster.psql("postgres", "ALTER SYSTEM SET log_statement = 'all'").unwrap();
    new.cluster.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    new.db.subscribe(&old.db.target, &password).await.unwrap();
    let again = new.db.subscribe(&old.db.target, &password).await.unwrap_err();
    assert!(format!("{again:#}").contains("already exists"), "{again:#}");
    assert!(!format!("{again:#}").contains(password.expose()), "{again:#}");
    let log = std::fs::read_to_string(new.cluster.log_file()).unwrap();
    assert!(log.contains("SELECT rolsuper FROM pg_roles"), "statements are logged:\n{log}");
    assert!(!log.contains(password.expose()), "the password is in the new side's log:\n{log}");
    assert!(new.db.copy_progress().await.unwrap().exists);
    // The old orchestrator goes on writing during the initial copy.
    write_rows(&old, 201, 300);
    until("the initial copy", async || new.db.copy_progress().await.unwrap().initial_copy_done()).await;
    let progress = new.db.copy_progress().await.unwrap();
    assert_eq!(progress.count("ready"), 4, "three tables and the fence: {progress:?}");
    assert!(progress.bytes > 1_000_000, "{progress:?}");
    write_rows(&old, 301, 320);
    old.cluster
        .psql("inmanta", "UPDATE public.environment SET settings = '{\"changed\": true}' WHERE name = 'env 7'")
        .unwrap();
    old.cluster.psql("inmanta", "DELETE FROM public.resource WHERE model = 3").unwrap();

    let slot = old.db.slot().await.unwrap().expect("the subscription's slot");
    assert_eq!(slot.wal_status, "reserved");
    assert!(slot.active);
    let token = old.db.write_fence().await.unwrap();
    until("the fence", async || new.db.fence_seen(&token).await.unwrap()).await;
    // Everything written before the fence is there.
    let tables: Vec<String> =
        ["public.environment", "public.resource", "public.resourceaction"].map(String::from).to_vec();
    assert_eq!(old.db.row_counts(&tables).await.unwrap(), new.db.row_counts(&tables).await.unwrap());
    let changed = "SELECT settings::text FROM public.environment WHERE name = 'env 7'";
    assert_eq!(new.cluster.psql("inmanta", changed).unwrap().trim(), "{\"changed\": true}");

    assert_eq!(leftovers(&old.db).await, ["publication", "role", "slot (reserved)"]);
    assert_eq!(leftovers(&new.db).await, ["subscription"]);
    replication::cut_off(&old.db, &new.db).await.unwrap();
    assert!(leftovers(&old.db).await.is_empty());
    assert!(leftovers(&new.db).await.is_empty());
    assert!(!new.db.tables().await.unwrap().iter().any(|t| t.contains("fence")), "the fence is gone on the new side");
    assert!(!old.db.tables().await.unwrap().iter().any(|t| t.contains("fence")), "and on the old side");
    // Cut off means cut off: a later write on the old side stays there.
    write_rows(&old, 321, 321);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = (old.db.row_counts(&tables).await.unwrap(), new.db.row_counts(&tables).await.unwrap());
    assert_eq!(counts.0["public.environment"], counts.1["public.environment"] + 1);
}

#[tokio::test]
async fn check_sees_what_a_copy_lacks() {
    if !ScratchCluster::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let old = side(&dir, "old", false).await;
    old.cluster.psql("inmanta", SCHEMA).unwrap();
    old.cluster
        .psql(
            "inmanta",
            "CREATE TABLE public.lsm_extra (x int); CREATE TABLE public.someone_elses (id int PRIMARY KEY);",
        )
        .unwrap();
    old.cluster.psql("inmanta", "ALTER TABLE public.lsm_extra OWNER TO inmanta").unwrap();
    let facts = old.db.publisher_facts().await.unwrap();
    assert_eq!(facts.wal_level, "replica", "the default, which needs a restart to change");
    assert_eq!(facts.tables_without_primary_key, ["public.lsm_extra"]);
    assert_eq!(facts.tables_not_owned, ["public.someone_elses"]);
}
