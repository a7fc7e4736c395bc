//! migrate-pg against a real PostgreSQL (a scratch cluster of the lab): the
//! queries, the exported snapshot, and the errors an operator meets.
//! They run in plain `cargo test` where a PostgreSQL server is installed and
//! skip themselves, saying so, where none is (`ScratchCluster::available`).

use camino::Utf8PathBuf;
use lab::ScratchCluster;
use migrate_core::{ErrorKind, Failure, config::DatabaseConfig, config::PgTools, runner::Runner, secret::SecretSource};
use migrate_pg::{Database, Target};

/// A failure's kind, and its text with the way on, as an operator sees it.
fn failure(error: &anyhow::Error) -> (ErrorKind, String) {
    let failure = Failure::of(error);
    (failure.kind, failure.shown())
}

struct Fixture {
    cluster: ScratchCluster,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { cluster: ScratchCluster::start().expect("a scratch cluster"), dir: tempfile::tempdir().unwrap() }
    }

    /// A secret file holding `text`.
    fn secret(&self, name: &str, text: &str) -> SecretSource {
        let path = Utf8PathBuf::try_from(self.dir.path().join(name)).unwrap();
        std::fs::write(&path, format!("{text}\n")).unwrap();
        SecretSource { env: None, file: Some(path) }
    }

    fn config(&self, password: &str) -> DatabaseConfig {
        DatabaseConfig {
            host: Some("127.0.0.1".into()),
            port: Some(self.cluster.port()),
            name: Some("inmanta".into()),
            user: Some("inmanta".into()),
            password: Some(self.secret("password", password)),
            sslmode: Some("disable".into()),
            ..Default::default()
        }
    }

    async fn database(&self, config: DatabaseConfig) -> Database {
        let target = Target::resolve(&config, &Runner::local()).await.unwrap();
        Database::with_target(target, PgTools { bin_dir: Some(self.cluster.bin_dir().to_owned()) }).unwrap()
    }
}

#[tokio::test]
async fn queries_return_typed_answers_and_the_snapshot_holds_its_moment() {
    if !ScratchCluster::available() {
        return;
    }
    let f = Fixture::new();
    f.cluster
        .psql(
            "inmanta",
            "CREATE TABLE public.schemamanager (name varchar PRIMARY KEY, installed_versions integer[]);\n\
             INSERT INTO public.schemamanager VALUES ('core', '{202301010,202402020}');\n\
             CREATE TABLE public.environment (id uuid PRIMARY KEY);\n\
             INSERT INTO public.environment VALUES ('6f4e1d2c-0000-4000-8000-000000000002'), ('6f4e1d2c-0000-4000-8000-000000000001');\n\
             CREATE TABLE public.\"Odd Name\" (n int PRIMARY KEY);\n\
             INSERT INTO public.\"Odd Name\" SELECT generate_series(1, 1000);\n\
             ALTER TABLE public.schemamanager OWNER TO inmanta; ALTER TABLE public.environment OWNER TO inmanta;\n\
             ALTER TABLE public.\"Odd Name\" OWNER TO inmanta;",
        )
        .unwrap();
    let db = f.database(f.config(ScratchCluster::PASSWORD)).await;

    let (version, major) = db.server_version(false).await.unwrap();
    assert_eq!(major, f.cluster.major().unwrap());
    assert!(version.starts_with(&major.to_string()), "{version}");
    assert_eq!(db.tables().await.unwrap(), ["public.\"Odd Name\"", "public.environment", "public.schemamanager"]);
    assert_eq!(
        db.environment_ids().await.unwrap(),
        ["6f4e1d2c-0000-4000-8000-000000000001", "6f4e1d2c-0000-4000-8000-000000000002"]
    );
    assert_eq!(db.schema_versions().await.unwrap()["core"], [202301010, 202402020]);
    let tables = db.tables().await.unwrap();
    let counts = db.row_counts_parallel(&tables, 2).await.unwrap();
    assert_eq!(counts["public.\"Odd Name\""], 1000);
    assert_eq!(counts["public.environment"], 2);
    assert!(db.user_object_count().await.unwrap() >= 3);
    assert!(db.size_bytes().await.unwrap() > 0);

    // The snapshot sees the database as it was when exported, whatever
    // happens afterwards.
    let mut snapshot = db.export_snapshot().await.unwrap();
    assert!(!snapshot.id.is_empty());
    f.cluster
        .psql(
            "inmanta",
            "DELETE FROM public.\"Odd Name\" WHERE n > 10; UPDATE public.schemamanager SET installed_versions = '{1}';",
        )
        .unwrap();
    snapshot.start_counting();
    let counts = snapshot.counts().await.unwrap();
    assert_eq!(counts["public.\"Odd Name\""], 1000, "counted in the snapshot");
    assert_eq!(snapshot.schema_versions().await.unwrap()["core"], [202301010, 202402020]);
    snapshot.close().await.unwrap();
    assert_eq!(db.row_counts(&["public.\"Odd Name\"".to_owned()]).await.unwrap()["public.\"Odd Name\""], 10);

    // No Inmanta schema: no versions, not an error.
    f.cluster.psql("inmanta", "DROP TABLE public.schemamanager").unwrap();
    assert!(db.schema_versions().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_admin_role_creates_and_drops_the_target_database() {
    if !ScratchCluster::available() {
        return;
    }
    let f = Fixture::new();
    let mut config = f.config(ScratchCluster::PASSWORD);
    config.name = Some("restored".into());
    config.admin_user = Some("postgres".into());
    config.admin_password = Some(f.secret("admin", ScratchCluster::ADMIN_PASSWORD));
    let db = f.database(config.clone()).await;
    assert!(!db.exists().await.unwrap());
    db.create().await.unwrap();
    assert!(db.exists().await.unwrap());
    assert_eq!(db.user_object_count().await.unwrap(), 0, "the owner reaches the new, empty database");
    db.drop_database().await.unwrap();
    assert!(!db.exists().await.unwrap());

    // Without an admin role the owner may not create databases: the error
    // says which role to give.
    config.admin_user = None;
    config.admin_password = None;
    let err = f.database(config).await.create().await.unwrap_err();
    let (kind, err) = failure(&err);
    assert!(err.contains("permission denied to create database"), "{err}");
    assert!(err.contains("SQLSTATE 42501") && err.contains("set `admin_user`"), "{err}");
    assert_eq!(kind, ErrorKind::Database);
}

#[tokio::test]
async fn bad_connections_are_explained_and_name_no_password() {
    if !ScratchCluster::available() {
        return;
    }
    let f = Fixture::new();
    let err = f.database(f.config("not-the-password")).await.tables().await.unwrap_err();
    let (kind, err) = failure(&err);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("check the database password") && err.contains("inmanta@127.0.0.1"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert_eq!(kind, ErrorKind::DatabaseLogin);

    let mut config = f.config(ScratchCluster::PASSWORD);
    config.name = Some("nosuchdb".into());
    let err = f.database(config).await.tables().await.unwrap_err();
    let (kind, err) = failure(&err);
    assert!(err.contains("nosuchdb") && err.contains("check the database name"), "{err}");
    assert_eq!(kind, ErrorKind::DatabaseLogin);

    let mut config = f.config(ScratchCluster::PASSWORD);
    config.port = Some(lab_free_port());
    let err = f.database(config).await.tables().await.unwrap_err();
    let (kind, err) = failure(&err);
    assert!(err.contains("is PostgreSQL running and reachable from here?"), "{err}");
    assert_eq!(kind, ErrorKind::DatabaseUnreachable);

    let mut config = f.config(ScratchCluster::PASSWORD);
    config.password = None;
    let err = f.database(config).await.tables().await.unwrap_err();
    let (kind, err) = failure(&err);
    assert!(err.contains("give the database password"), "{err}");
    assert_eq!(kind, ErrorKind::DatabaseLogin);

    // A libpq passfile works for the driver as for the tools.
    let mut config = f.config(ScratchCluster::PASSWORD);
    config.password = None;
    let passfile = Utf8PathBuf::try_from(f.dir.path().join("pgpass")).unwrap();
    std::fs::write(&passfile, format!("other:*:*:*:wrong\n127.0.0.1:*:inmanta:inmanta:{}\n", ScratchCluster::PASSWORD))
        .unwrap();
    config.passfile = Some(passfile);
    assert_eq!(f.database(config).await.tables().await.unwrap(), Vec::<String>::new());

    // The cluster has no TLS: `require` is refused, never retried in plain text.
    let mut config = f.config(ScratchCluster::PASSWORD);
    config.sslmode = Some("require".into());
    let err = f.database(config).await.tables().await.unwrap_err();
    let (kind, err) = failure(&err);
    assert!(err.contains("server does not support TLS") && err.contains("check `sslmode`"), "{err}");
    assert_eq!(kind, ErrorKind::DatabaseTls);
    // `prefer` falls back to plain text, as libpq does.
    let mut config = f.config(ScratchCluster::PASSWORD);
    config.sslmode = Some("prefer".into());
    assert!(f.database(config).await.tables().await.is_ok());
}

fn lab_free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}
