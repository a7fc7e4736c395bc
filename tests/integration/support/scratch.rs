//! Fake servers over a real PostgreSQL: a scratch cluster with a small
//! database shaped like Inmanta's, for the steps that move it.

use camino::Utf8PathBuf;
use fake_inmanta::Flavor;
use lab::ScratchCluster;
use uuid::Uuid;

use super::{Fakes, Test, config_variant, secret, set};

/// Core schema versions of the old database (an 11.5 server's newest, which
/// 14.0 knows).
const SCHEMA: &str = "{202311170,202409090}";

pub struct Setup {
    pub fakes: Fakes,
    pub pg: ScratchCluster,
    pub config: Utf8PathBuf,
    pub plain: Uuid,
    pub halted: Uuid,
}

impl Setup {
    /// An old 11.5.5 fake with two environments (one halted before), its
    /// database in `inmanta`, and a new 14.0.0 fake whose database
    /// `inmanta_new` does not exist yet; None (the test skips, saying so)
    /// where no PostgreSQL server is installed.
    pub fn new() -> Option<Setup> {
        ScratchCluster::available().then(|| Setup::on(ScratchCluster::start().expect("a scratch PostgreSQL cluster")))
    }

    /// The same on a cluster that held an earlier one: both databases are
    /// made again, the fakes are new.
    pub fn on(pg: ScratchCluster) -> Setup {
        pg.psql("postgres", "DROP DATABASE IF EXISTS inmanta_new WITH (FORCE)").unwrap();
        pg.psql("postgres", "DROP DATABASE inmanta WITH (FORCE)").unwrap();
        pg.psql("postgres", "CREATE DATABASE inmanta OWNER inmanta").unwrap();
        let fakes = Fakes::new(Flavor::V11, Flavor::V14);
        let plain = fakes.old.add_env("plain");
        let halted = fakes.old.add_env("halted");
        fakes.old.with_env(halted, |e| e.halted = true);
        for (name, id) in [("plain", plain), ("halted", halted)] {
            fakes.new.add_env_with_id(name, id);
            fakes.new.with_env(id, |e| e.halted = true);
        }
        std::fs::write(fakes.new.control_dir().join("stop"), "").unwrap();
        fakes.new.wait_stopped(true);
        pg.psql(
            "inmanta",
            &format!(
                "SET ROLE inmanta;\n\
                 CREATE TABLE public.schemamanager (name varchar PRIMARY KEY, installed_versions integer[]);\n\
                 INSERT INTO public.schemamanager VALUES ('core', '{SCHEMA}');\n\
                 CREATE TABLE public.environment (id uuid PRIMARY KEY, name varchar NOT NULL);\n\
                 INSERT INTO public.environment VALUES ('{plain}', 'plain'), ('{halted}', 'halted');\n\
                 CREATE TABLE public.resource (environment uuid REFERENCES public.environment, id int, attributes jsonb, \
                   PRIMARY KEY (environment, id));\n\
                 INSERT INTO public.resource SELECT '{plain}', n, jsonb_build_object('n', n) FROM generate_series(1, 5000) n;\n"
            ),
        )
        .unwrap();
        let dir = fakes.path().to_owned();
        std::fs::write(dir.join("new-db-password"), format!("{}\n", ScratchCluster::PASSWORD)).unwrap();
        std::fs::write(dir.join("admin-password"), format!("{}\n", ScratchCluster::ADMIN_PASSWORD)).unwrap();
        let config = config_variant(&fakes.config(""), "postgres", |c| {
            for side in ["old", "new"] {
                set(c, &format!("{side}.database.host"), "127.0.0.1");
                set(c, &format!("{side}.database.port"), i64::from(pg.port()));
                set(c, &format!("{side}.database.sslmode"), "disable");
            }
            set(c, "old.database.password", secret("env", "OLD_DB_PASSWORD"));
            set(c, "new.database.name", "inmanta_new");
            set(c, "new.database.password", secret("file", "new-db-password"));
            set(c, "new.database.admin_user", "postgres");
            set(c, "new.database.admin_password", secret("file", "admin-password"));
            set(c, "new.version_command", vec!["echo", "Inmanta Service Orchestrator: 14.0.0"]);
            set(c, "pg.bin_dir", pg.bin_dir().as_str());
        });
        Setup { fakes, pg, config, plain, halted }
    }

    pub fn test(&self) -> Test {
        self.fakes.test().config(&self.config).env("OLD_DB_PASSWORD", ScratchCluster::PASSWORD)
    }

    pub fn rows(&self, db: &str, sql: &str) -> String {
        self.pg.psql(db, sql).unwrap()
    }

    /// The content of every table of `db`, as one text per table.
    pub fn content(&self, db: &str) -> Vec<String> {
        ["schemamanager", "environment", "resource"]
            .iter()
            .map(|t| self.rows(db, &format!("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM public.{t} t")))
            .collect()
    }
}
