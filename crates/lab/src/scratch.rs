//! A PostgreSQL cluster of its own for one test: this machine's newest
//! PostgreSQL (installed by `prepare`), a temporary data directory, a free
//! port, scram passwords over TCP; stopped and removed when dropped.

use anyhow::{Context, Result};
use camino::Utf8PathBuf;

use crate::pg::Cluster;
use crate::{prepare, procs};

/// One running scratch cluster: role `inmanta` (password [`Self::PASSWORD`])
/// owns database `inmanta`; `postgres` has [`Self::ADMIN_PASSWORD`].
pub struct ScratchCluster {
    cluster: Cluster,
    _dir: tempfile::TempDir,
}

/// Set (by `cargo xtask ci`) where a test that needs PostgreSQL must not
/// skip: a missing server then fails it.
pub const NEED_POSTGRES: &str = "INMANTA_MIGRATE_NEED_POSTGRES";

impl ScratchCluster {
    pub const PASSWORD: &str = "scratch-inmanta-password";
    pub const ADMIN_PASSWORD: &str = "scratch-postgres-password";

    /// Whether a test that needs only a PostgreSQL server can run here. If
    /// not, it says so on the terminal (past the test harness's capture)
    /// and the test returns early: plain `cargo test` runs these tests
    /// wherever PostgreSQL is installed and skips them visibly elsewhere.
    pub fn available() -> bool {
        if prepare::find_pg_bin_dir().is_some() {
            return true;
        }
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        assert!(
            std::env::var_os(NEED_POSTGRES).is_none(),
            "{test}: no PostgreSQL server on this machine, and {NEED_POSTGRES} is set"
        );
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: no PostgreSQL server on this machine (`cargo xtask lab prepare` installs it)"
        );
        false
    }

    /// initdb, start, roles `postgres` and `inmanta`, empty database `inmanta`.
    pub fn start() -> Result<ScratchCluster> {
        let bin_dir = prepare::find_pg_bin_dir()
            .context("no PostgreSQL server on this machine: `cargo xtask lab prepare` installs it")?;
        let dir = tempfile::Builder::new().prefix("scratch-pg-").tempdir_in("/var/tmp")?;
        let path = Utf8PathBuf::try_from(dir.path().to_path_buf())?;
        // The postgres user must reach the data directory inside.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let port = procs::pick_free_ports(1)?[0];
        let cluster = Cluster {
            enter: Vec::new(),
            bin_dir,
            server_bin_dir: None,
            data_dir: path.join("pg"),
            port,
            machine: None,
            net: None,
            container: None,
        };
        cluster.init()?;
        cluster.start()?;
        cluster.create_roles_and_db(Self::ADMIN_PASSWORD, Self::PASSWORD)?;
        Ok(ScratchCluster { cluster, _dir: dir })
    }

    /// The same with TLS on, its certificate for `localhost` only (so that
    /// `127.0.0.1` is a wrong host name for `verify-full`) and signed by a
    /// CA of its own, whose PEM it returns. TCP without TLS is refused
    /// (`hostnossl ... reject`, logged "no encryption"), and connections
    /// are logged, so a test can tell that nothing fell back to plain text.
    pub fn start_tls() -> Result<(ScratchCluster, String)> {
        let scratch = ScratchCluster::start()?;
        let pki = crate::secure::generate_pki_for("scratch", &["localhost"])?;
        let data = &scratch.cluster.data_dir;
        std::fs::write(data.join("server.crt"), &pki.server_cert)?;
        std::fs::write(data.join("server.key"), &pki.server_key)?;
        std::fs::set_permissions(data.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let sh = crate::util::shell()?;
        let (crt, key) = (data.join("server.crt"), data.join("server.key"));
        xshell::cmd!(sh, "chown postgres:postgres {crt} {key}").quiet().run()?;
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            format!(
                "hostnossl all all all reject
{rules}"
            ),
        )?;
        scratch.psql(
            "postgres",
            "ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET log_connections = on;
SELECT pg_reload_conf();
",
        )?;
        // The reload is asynchronous: wait until the server says TLS is on.
        for _ in 0..50 {
            if scratch.psql("postgres", "SHOW ssl")?.trim() == "on" {
                return Ok((scratch, pki.ca_cert));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        anyhow::bail!("the scratch cluster did not turn TLS on; its log: {}", scratch.log_file())
    }

    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// The client tools of the cluster's PostgreSQL (`pg.bin_dir` for the tool).
    pub fn bin_dir(&self) -> &camino::Utf8Path {
        &self.cluster.bin_dir
    }

    /// The server's log (its stderr, pg_ctl -l).
    pub fn log_file(&self) -> Utf8PathBuf {
        self.cluster.log_file()
    }

    /// The PostgreSQL major version of the cluster.
    pub fn major(&self) -> Result<u32> {
        let num: u32 = self.psql("postgres", "SHOW server_version_num")?.trim().parse()?;
        Ok(num / 10000)
    }

    /// Runs SQL as the superuser through the unix socket; `-At` output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        self.cluster.psql("postgres", db, sql)
    }

    pub fn stop(&self) -> Result<()> {
        self.cluster.stop()
    }

    pub fn restart(&self) -> Result<()> {
        self.cluster.start()
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
    }
}
