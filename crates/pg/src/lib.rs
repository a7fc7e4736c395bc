//! PostgreSQL for inmanta-migrate: every query through a driver
//! (tokio-postgres, typed rows, SQLSTATE errors), the bulk work through the
//! client tools (`pg_dump`, `pg_restore`, `psql -f`, `vacuumdb`) run by
//! core's runner on this machine. All SQL of the product lives here.
//!
//! Passwords reach the driver in memory and the tools only through
//! PGPASSFILE pointing at an anonymous in-memory file of this process
//! (`memfd`, 0600, reached as `/proc/<pid>/fd/<n>`): never on a command
//! line, in an error, a log line, or on disk, and gone with the process even
//! when it is killed.

mod connect;
pub mod replication;
pub mod scratch;
mod snapshot;

use std::{collections::BTreeMap, fmt, io::Write, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use camino::Utf8Path;
use connect::As;
use migrate_core::{
    Checks, ErrorKind, Failure, Secret, Side,
    config::{Config, DatabaseConfig, PgTools},
    probe::Pools,
    runner::{Cmd, Runner},
};
use tokio_postgres::{Row, types::ToSql};

/// The next step of a check whose database did not answer: a refused
/// certificate is fixed in the config, not by starting PostgreSQL.
pub fn unreachable_next_step(side: &str, error: &anyhow::Error) -> String {
    match Failure::of(error).kind {
        ErrorKind::DatabaseTls => {
            format!("fix `{side}.database` (`host`, `sslmode`) or the root certificates it is verified with")
        }
        _ => format!("fix `{side}.database` or start PostgreSQL"),
    }
}
pub use snapshot::Snapshot;

/// libpq's words for a connection that was lost or never made.
const NETWORK_FAILURES: [&str; 9] = [
    "timeout expired",
    "could not receive data from server",
    "could not send data to server",
    "server closed the connection unexpectedly",
    "Connection timed out",
    "No route to host",
    "Network is unreachable",
    "Connection refused",
    "connection to server was lost",
];

impl Database {
    /// The failure of a PostgreSQL tool (pg_dump, pg_restore) that ended
    /// with `stderr`: what `failed` says, the end of stderr, and, when that
    /// says the connection was lost or never made, which host to check;
    /// `again` is what running the step again does.
    pub fn tool_failure(&self, failed: String, stderr: &str, again: &str) -> Failure {
        let message = format!("{failed}{}", migrate_core::runner::stderr_tail(stderr));
        if NETWORK_FAILURES.iter().any(|words| stderr.contains(words)) {
            let (host, port) = (&self.target.host, self.target.port);
            return Failure::new(ErrorKind::DatabaseUnreachable, message).advise(format!(
                "the connection to PostgreSQL at {host}:{port} was lost or could not be made: check the network \
                 between this machine and {host} and that PostgreSQL runs there, then {again}"
            ));
        }
        Failure::new(ErrorKind::Failed, message).advise(again)
    }
}

/// The user tables, `schema.table`, quoted where needed.
const TABLES: &str = "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
     WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1";
/// Whether the database holds Inmanta's schema bookkeeping.
const SCHEMAMANAGER_EXISTS: &str = "SELECT to_regclass('public.schemamanager') IS NOT NULL";
/// Inmanta's schema bookkeeping: name, installed versions.
const SCHEMA_VERSIONS: &str = "SELECT name::text, installed_versions::bigint[] FROM public.schemamanager";
/// How long one answer may take (an exact row count of a big table is slow).
const ANSWER_LIMIT: Duration = Duration::from_secs(3600);

/// Where a database is and who connects to it.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    password: Option<Secret>,
    passfile: Option<camino::Utf8PathBuf>,
    sslmode: Option<String>,
    admin_user: Option<String>,
    admin_password: Option<Secret>,
    /// The server's database pools, as its inmanta.cfg sets them.
    pub pools: Pools,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}/{}", self.user, self.host, self.port, self.name)
    }
}

impl Target {
    /// The database of one side: the config's keys, completed from the
    /// orchestrator's own inmanta.cfg when `inmanta_config` is set.
    pub async fn resolve(cfg: &DatabaseConfig, runner: &Runner) -> anyhow::Result<Target> {
        let from_server = match &cfg.inmanta_config {
            Some(dir) => migrate_core::inmanta_cfg::read(dir, runner).await?.database,
            None => Default::default(),
        };
        // The PostgreSQL tools run here: "localhost" in a remote server's
        // file would mean this machine's database.
        if let Some(dir) = &cfg.inmanta_config
            && runner.is_remote()
            && cfg.host.is_none()
        {
            let host = from_server.host.as_deref().unwrap_or("localhost");
            if ["localhost", "::1"].contains(&host) || host.starts_with("127.") {
                bail!(
                    "{dir}/inmanta.cfg on {} puts the database on {host}, the server's own machine, but this tool runs \
                     elsewhere: set `database.host` to the address this machine reaches that database at",
                    runner.place()
                );
            }
        }
        let read = |source: &Option<migrate_core::secret::SecretSource>| -> anyhow::Result<Option<Secret>> {
            source.as_ref().map(|s| s.read().map_err(|e| anyhow!(e))).transpose()
        };
        Ok(Target {
            host: cfg.host.clone().or(from_server.host).unwrap_or_else(|| "127.0.0.1".to_owned()),
            port: cfg.port.or(from_server.port).unwrap_or(5432),
            name: cfg.name.clone().or(from_server.name).unwrap_or_else(|| "inmanta".to_owned()),
            user: cfg.user.clone().or(from_server.user).unwrap_or_else(|| "inmanta".to_owned()),
            password: read(&cfg.password)?.or(from_server.password),
            pools: from_server.pools,
            passfile: cfg.passfile.clone(),
            sslmode: cfg.sslmode.clone(),
            admin_user: cfg.admin_user.clone(),
            admin_password: read(&cfg.admin_password)?,
        })
    }

    /// Same server and database name (so a restore would hit the source).
    pub fn same_database(&self, other: &Target) -> bool {
        self.host == other.host && self.port == other.port && self.name == other.name
    }
}

/// A connection recipe for one database, with its private password file.
pub struct Database {
    pub target: Target,
    tools: PgTools,
    /// The in-memory password file; closed (and gone) with the `Database`.
    passfile: Option<PassFile>,
}

/// A libpq password file that exists only in this process's memory.
struct PassFile {
    _file: std::fs::File,
    path: String,
}

impl PassFile {
    fn new(content: &str) -> anyhow::Result<PassFile> {
        use std::os::fd::AsRawFd;
        let fd = rustix::fs::memfd_create("inmanta-migrate-pgpass", rustix::fs::MemfdFlags::CLOEXEC)
            .context("cannot create the in-memory password file")?;
        // libpq ignores a password file that group or others may read.
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o600))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(content.as_bytes())?;
        let path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
        Ok(PassFile { _file: file, path })
    }
}

impl Database {
    /// Resolves the database of `side` and prepares its password file.
    pub async fn open(config: &Config, side: Side) -> anyhow::Result<Database> {
        let runner = Runner::on(&config.side(side).host);
        let target =
            Target::resolve(&config.side(side).database, &runner).await.with_context(|| format!("{side} database"))?;
        Self::with_target(target, config.pg.clone())
    }

    pub fn with_target(target: Target, tools: PgTools) -> anyhow::Result<Database> {
        let mut lines = String::new();
        let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        if let Some(password) = &target.password {
            lines.push_str(&format!("*:*:*:{}:{}\n", escape(&target.user), escape(password.expose())));
        }
        if let (Some(user), Some(password)) = (&target.admin_user, &target.admin_password) {
            lines.push_str(&format!("*:*:*:{}:{}\n", escape(user), escape(password.expose())));
        }
        let passfile = if lines.is_empty() { None } else { Some(PassFile::new(&lines)?) };
        Ok(Database { target, tools, passfile })
    }

    /// A command of one PostgreSQL tool with the connection environment.
    pub fn tool(&self, program: &str) -> ToolCmd<'_> {
        ToolCmd { db: self, argv: vec![self.tools.tool(program)] }
    }

    /// `pg_dump` of this database into `file` as `options` say (`--verbose`:
    /// a line per table, for progress), reading the exported `snapshot`
    /// when one is given.
    pub fn dump_command(
        &self,
        options: &migrate_core::config::DumpOptions,
        snapshot: Option<&str>,
        file: &camino::Utf8Path,
    ) -> ToolCmd<'_> {
        let mut dump = self
            .tool("pg_dump")
            .connect(false)
            .arg(format!("--format={}", options.format.flag()))
            .arg("--verbose")
            // Never wait forever for a lock (a running server holds some).
            .arg("--lock-wait-timeout=300s")
            .arg(format!("--file={file}"));
        if let Some(id) = snapshot {
            dump = dump.arg(format!("--snapshot={id}"));
        }
        match options.format {
            migrate_core::config::DumpFormat::Directory => {
                dump.arg(format!("--jobs={}", options.jobs)).arg(format!("--compress={}", options.compress))
            }
            migrate_core::config::DumpFormat::Custom => dump.arg(format!("--compress={}", options.compress)),
            migrate_core::config::DumpFormat::Plain => dump.args(["--no-owner", "--no-privileges"]),
        }
    }

    /// The table a line of `pg_dump --verbose` says it dumps now, if any:
    /// what a progress bar counts.
    pub fn dumped_table(line: &str) -> Option<&str> {
        line.split("dumping contents of table ").nth(1).map(|table| table.trim_matches('"'))
    }

    /// `pg_restore` of an archive (directory or custom format) into this
    /// database, `jobs` at a time, stopping at the first error (`--verbose`:
    /// a line per archive item, for progress).
    pub fn restore_command(&self, jobs: u32, archive: &camino::Utf8Path) -> ToolCmd<'_> {
        self.tool("pg_restore")
            .args(["--exit-on-error", "--no-owner", "--no-privileges", "--verbose", "-w"])
            .arg(format!("--jobs={jobs}"))
            .connect(false)
            .arg(archive.as_str())
    }

    /// ANALYZE of the whole database (`vacuumdb --analyze-only`), `jobs`
    /// tables at a time: the planner's statistics, which no dump carries.
    pub async fn analyze(&self, jobs: u32) -> anyhow::Result<()> {
        let what = format!("ANALYZE {}", self.target);
        failpoint::before(failpoint::Area::Database, &what);
        self.tool("vacuumdb")
            .args(["--analyze-only", "--quiet", "-w", &format!("--jobs={}", jobs.max(1))])
            .connect(false)
            .cmd()
            .run()
            .await?;
        failpoint::after(failpoint::Area::Database, &what);
        Ok(())
    }

    fn env(&self, cmd: Cmd) -> Cmd {
        let timeout = connect::CONNECT_TIMEOUT.as_secs().to_string();
        let mut cmd = cmd.env("PGCONNECT_TIMEOUT", timeout).env("PGAPPNAME", "inmanta-migrate");
        if let Some(passfile) = &self.passfile {
            cmd = cmd.env("PGPASSFILE", passfile.path.as_str());
        } else if let Some(path) = &self.target.passfile {
            cmd = cmd.env("PGPASSFILE", path.as_str());
        }
        if let Some(mode) = &self.target.sslmode {
            cmd = cmd.env("PGSSLMODE", mode);
        }
        cmd
    }

    fn connection(&self, who: As) -> Vec<String> {
        vec![
            "-h".into(),
            self.target.host.clone(),
            "-p".into(),
            self.target.port.to_string(),
            "-U".into(),
            self.target.role(who).to_owned(),
            "-d".into(),
            // A connection string, for what only it can say (a database
            // name that looks like one is quoted, so it stays a name).
            format!("dbname={} {}", conninfo_value(self.target.database(who)), connect::libpq_keepalives()),
        ]
    }

    /// The rows of one statement on a connection of its own.
    async fn rows(&self, who: As, sql: &str, params: &[&(dyn ToSql + Sync)]) -> anyhow::Result<Vec<Row>> {
        let client = connect::connect(&self.target, who).await?;
        answer(&self.target, who, client.query(sql, params)).await
    }

    async fn execute(&self, who: As, sql: &str) -> anyhow::Result<()> {
        let client = connect::connect(&self.target, who).await?;
        answer(&self.target, who, client.batch_execute(sql)).await
    }

    /// The server's version ("15.18") and major version (15), asked in the
    /// target database, or with `admin` as the admin role in the maintenance
    /// database (when the target database may not exist yet).
    pub async fn server_version(&self, admin: bool) -> anyhow::Result<(String, u32)> {
        let who = if admin { As::Admin } else { As::Owner };
        let sql = "SELECT current_setting('server_version'), current_setting('server_version_num')::int";
        let rows = self.rows(who, sql, &[]).await?;
        let row = rows.first().ok_or_else(|| anyhow!("no answer to SHOW server_version"))?;
        let version: String = row.try_get(0)?;
        let num: i32 = row.try_get(1)?;
        Ok((version.split_whitespace().next().unwrap_or("").to_owned(), num as u32 / 10000))
    }

    /// The connections PostgreSQL leaves to roles that are not superusers:
    /// `max_connections` less `superuser_reserved_connections` and (16+)
    /// `reserved_connections`. Asked as the admin role.
    pub async fn connection_slots(&self) -> anyhow::Result<u32> {
        let sql = "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int \
                   - coalesce(current_setting('reserved_connections', true)::int, 0)";
        let rows = self.rows(As::Admin, sql, &[]).await?;
        let slots: i32 = rows.first().ok_or_else(|| anyhow!("no answer to max_connections"))?.try_get(0)?;
        Ok(slots.max(0) as u32)
    }

    pub async fn size_bytes(&self) -> anyhow::Result<i64> {
        let rows = self.rows(As::Owner, "SELECT pg_database_size(current_database())", &[]).await?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }

    /// The user tables, `schema.table`, quoted where needed.
    pub async fn tables(&self) -> anyhow::Result<Vec<String>> {
        strings(&self.rows(As::Owner, TABLES, &[]).await?)
    }

    /// The ids of the environments an Inmanta database holds.
    pub async fn environment_ids(&self) -> anyhow::Result<Vec<String>> {
        let mut ids = strings(&self.rows(As::Owner, "SELECT id::text FROM public.environment", &[]).await?)?;
        ids.sort();
        Ok(ids)
    }

    /// Exact row counts of `tables`, in one statement (one snapshot).
    pub async fn row_counts(&self, tables: &[String]) -> anyhow::Result<BTreeMap<String, i64>> {
        if tables.is_empty() {
            return Ok(BTreeMap::new());
        }
        counts(&self.rows(As::Owner, &row_count_sql(tables), &[]).await?)
    }

    /// [`Self::row_counts`] over `jobs` connections at once, the biggest
    /// tables spread first.
    pub async fn row_counts_parallel(&self, tables: &[String], jobs: usize) -> anyhow::Result<BTreeMap<String, i64>> {
        let sql = "SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid) FROM pg_class c \
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')";
        let sizes = counts(&self.rows(As::Owner, sql, &[]).await?)?;
        let mut by_size: Vec<&String> = tables.iter().collect();
        by_size.sort_by_key(|t| std::cmp::Reverse(sizes.get(*t).copied().unwrap_or(0)));
        let mut groups: Vec<(i64, Vec<String>)> = vec![(0, Vec::new()); jobs.max(1)];
        for table in by_size {
            let lightest = groups.iter_mut().min_by_key(|(bytes, _)| *bytes).expect("at least one group");
            lightest.0 += sizes.get(table).copied().unwrap_or(0);
            lightest.1.push(table.clone());
        }
        let counts = futures::future::try_join_all(groups.iter().map(|(_, group)| self.row_counts(group))).await?;
        Ok(counts.into_iter().flatten().collect())
    }

    /// Objects in the database outside the system schemas.
    pub async fn user_object_count(&self) -> anyhow::Result<i64> {
        let sql = "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%') \
                 + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND t.typtype IN ('e', 'd')) \
                 + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))";
        let rows = self.rows(As::Owner, sql, &[]).await?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }

    /// `schemamanager`: name -> installed schema versions (empty when the
    /// database holds no Inmanta schema).
    pub async fn schema_versions(&self) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
        let client = connect::connect(&self.target, As::Owner).await?;
        schema_versions(&self.target, &client).await
    }

    /// Whether the target database exists (asked as the admin role).
    pub async fn exists(&self) -> anyhow::Result<bool> {
        let sql = "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)";
        let rows = self.rows(As::Admin, sql, &[&self.target.name]).await?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(false))
    }

    pub async fn create(&self) -> anyhow::Result<()> {
        let sql = format!(
            "CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0",
            ident(&self.target.name),
            ident(&self.target.user)
        );
        let what = format!("create database {}", self.target);
        failpoint::before(failpoint::Area::Database, &what);
        let result = self.execute(As::Admin, &sql).await;
        failpoint::after(failpoint::Area::Database, &what);
        result
    }

    /// A comment on the database (its owner may set it), for whoever lists
    /// databases later: `\l+` in psql shows it.
    pub async fn comment_on_database(&self, text: &str) -> anyhow::Result<()> {
        let sql = format!("COMMENT ON DATABASE {} IS {}", ident(&self.target.name), literal(text));
        let what = format!("comment on database {}", self.target);
        failpoint::before(failpoint::Area::Database, &what);
        let result = self.execute(As::Owner, &sql).await;
        failpoint::after(failpoint::Area::Database, &what);
        result
    }

    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let what = format!("drop database {}", self.target);
        failpoint::before(failpoint::Area::Database, &what);
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&self.target.name));
        let result = self.execute(As::Admin, &sql).await;
        failpoint::after(failpoint::Area::Database, &what);
        result
    }

    /// Checks that each client tool runs and is at least as new as `floor`
    /// (its major version, and what has it: "the old PostgreSQL 15").
    pub async fn check_tools(&self, tools: &[&str], floor: Option<(u32, String)>, checks: &mut Checks) {
        for tool in tools {
            let name = format!("{tool} version");
            match (self.tool_major(tool).await, &floor) {
                (Ok((version, major)), Some((min, what))) if major < *min => checks.fail(
                    name,
                    format!("{tool} {version} is older than {what}"),
                    "install PostgreSQL client tools at least that new and set `pg.bin_dir`",
                ),
                (Ok((version, _)), _) => checks.pass(name, format!("{tool} {version}")),
                (Err(e), _) => checks.fail_on(name, &e, "install the PostgreSQL client tools or set `pg.bin_dir`"),
            }
        }
    }

    /// The major version of a client tool, from `<tool> --version`.
    pub async fn tool_major(&self, program: &str) -> anyhow::Result<(String, u32)> {
        let out = Runner::local().cmd(&[self.tools.tool(program), "--version".into()]).run().await?;
        parse_tool_version(&out.stdout)
            .ok_or_else(|| anyhow!("cannot read the version of {program} from {:?}", out.stdout.trim()))
    }

    /// `pg_restore --list`: the archive's table of contents, or the reason
    /// it cannot be read.
    pub async fn restore_list(&self, archive: &Utf8Path) -> anyhow::Result<Vec<String>> {
        let argv = [self.tools.tool("pg_restore"), "--list".into(), archive.to_string()];
        let out = Runner::local().cmd(&argv).output().await?;
        if !out.success() {
            bail!("pg_restore cannot read {archive}{}", migrate_core::runner::stderr_tail(&out.stderr));
        }
        Ok(out.stdout.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).map(str::to_owned).collect())
    }
}

/// Builder for one tool invocation against a [`Database`].
pub struct ToolCmd<'a> {
    db: &'a Database,
    argv: Vec<String>,
}

impl ToolCmd<'_> {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.argv.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds `-h -p -U -d` for the target database (or the maintenance
    /// database as the admin role).
    pub fn connect(mut self, admin: bool) -> Self {
        self.argv.extend(self.db.connection(if admin { As::Admin } else { As::Owner }));
        self
    }

    pub fn cmd(self) -> Cmd {
        self.db.env(Runner::local().cmd(&self.argv))
    }
}

/// A value of a libpq connection string, single-quoted (libpq's rules: a
/// backslash escapes a quote or a backslash).
pub(crate) fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The answer of one statement within [`ANSWER_LIMIT`], or an error naming the
/// database and what to do.
async fn answer<T>(
    target: &Target,
    who: As,
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> anyhow::Result<T> {
    let what = format!("an answer of PostgreSQL {}", target.shown(who));
    migrate_core::wait::within(ANSWER_LIMIT, &what, statement)
        .await?
        .map_err(|e| connect::explain(target, who, &e).into())
}

/// The first column of each row, as text.
fn strings(rows: &[Row]) -> anyhow::Result<Vec<String>> {
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Rows of (name, bigint) as a map.
fn counts(rows: &[Row]) -> anyhow::Result<BTreeMap<String, i64>> {
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// `schemamanager` as name -> installed versions, asked on `client` (in its
/// transaction, if one is open); empty without an Inmanta schema.
async fn schema_versions(
    target: &Target,
    client: &tokio_postgres::Client,
) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
    // An error would end a transaction, so look before asking.
    let exists = answer(target, As::Owner, client.query_one(SCHEMAMANAGER_EXISTS, &[])).await?;
    if !exists.try_get::<_, bool>(0)? {
        return Ok(BTreeMap::new());
    }
    let rows = answer(target, As::Owner, client.query(SCHEMA_VERSIONS, &[])).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get::<_, Option<Vec<i64>>>(1)?.unwrap_or_default()))).collect()
}

fn row_count_sql(tables: &[String]) -> String {
    tables.iter().map(|t| format!("SELECT {}, count(*) FROM {t}", literal(t))).collect::<Vec<_>>().join(" UNION ALL ")
}

/// `"pg_dump (PostgreSQL) 15.18 (Debian ...)"` -> ("15.18", 15).
pub fn parse_tool_version(text: &str) -> Option<(String, u32)> {
    let version = text.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let major = version.split('.').next()?.parse().ok()?;
    Some((version.to_owned(), major))
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_versions() {
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(("15.18".into(), 15))
        );
        assert_eq!(parse_tool_version("pg_restore (PostgreSQL) 17.2\n"), Some(("17.2".into(), 17)));
        assert_eq!(parse_tool_version("garbage"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(ident("my \"db\""), "\"my \"\"db\"\"\"");
        assert_eq!(
            row_count_sql(&["public.a".into(), "public.b".into()]),
            "SELECT 'public.a', count(*) FROM public.a UNION ALL SELECT 'public.b', count(*) FROM public.b"
        );
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value(r"it's a\b"), r"'it\'s a\\b'");
        assert_eq!(conninfo_value("host=evil"), "'host=evil'");
    }
}
