//! The online copy: PostgreSQL's logical replication from the old database
//! (the publisher) into the new one (the subscriber), while the old
//! orchestrator keeps running.
//!
//! What it creates, all named [`NAME`], all removed by [`cut_off`] (which
//! `cutover` and `precopy --abandon` call): on the old side a publication
//! of every user table, a role that may only replicate and read (its password random, made here, sent
//! to PostgreSQL as a SCRAM verifier so that no log of the old side can show
//! it) and a one-row fence table; on the new side the subscription (and so
//! its slot on the old side). The schema is not replicated: the caller loads
//! a schema-only dump first.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow, bail};
use camino::Utf8Path;
use migrate_core::{Failure, Secret};

use crate::{As, Database, Target, conninfo_value, literal, strings};

/// The name of everything the copy creates on either side.
pub const NAME: &str = "inmanta_migrate";
/// The fence, a table of the old database replicated like Inmanta's own.
pub const FENCE: &str = "public.inmanta_migrate_fence";

/// What the old side offers an online copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublisherFacts {
    /// The old PostgreSQL's major version.
    pub server_major: u32,
    pub wal_level: String,
    pub max_replication_slots: i64,
    pub slots_used: i64,
    pub max_wal_senders: i64,
    pub senders_used: i64,
    /// `max_slot_wal_keep_size` in MB; -1: unlimited (the slot may fill the
    /// disk); `None`: PostgreSQL before 13 has no such bound.
    pub max_slot_wal_keep_mb: Option<i64>,
    pub tables_without_primary_key: Vec<String>,
    /// Tables the owner role does not own (it cannot publish them).
    pub tables_not_owned: Vec<String>,
    /// Whether the admin role may create a role with REPLICATION (superuser).
    pub admin_is_superuser: bool,
}

/// Where the subscription stands, from the new side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyProgress {
    /// Whether the subscription exists.
    pub exists: bool,
    pub enabled: bool,
    /// Tables by state: `init`, `copying`, `synced` (copied, catching up) and `ready`.
    pub tables: BTreeMap<String, &'static str>,
    /// Bytes of the tables on the new side so far.
    pub bytes: i64,
}

impl CopyProgress {
    /// Every table copied and followed by the one apply worker.
    pub fn initial_copy_done(&self) -> bool {
        self.exists && !self.tables.is_empty() && self.tables.values().all(|s| *s == "ready")
    }

    pub fn count(&self, state: &str) -> usize {
        self.tables.values().filter(|s| **s == state).count()
    }
}

/// The slot on the old side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    /// `reserved`, `extended`, `unreserved` or `lost` (lost: the copy cannot go on).
    pub wal_status: String,
    pub active: bool,
    /// Bytes of WAL written on the old side that the new side has not confirmed.
    pub lag_bytes: i64,
}

impl Database {
    /// What the old database offers a copy (owner role; the admin role for
    /// its superuser flag).
    pub async fn publisher_facts(&self) -> anyhow::Result<PublisherFacts> {
        let sql = "SELECT current_setting('wal_level'), \
                     current_setting('max_replication_slots')::bigint, \
                     (SELECT count(*) FROM pg_replication_slots), \
                     current_setting('max_wal_senders')::bigint, \
                     (SELECT count(*) FROM pg_stat_replication), \
                     (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'), \
                     current_setting('server_version_num')::int / 10000";
        let rows = self.rows(As::Owner, sql, &[]).await?;
        let row = rows.first().ok_or_else(|| anyhow!("no answer about the replication settings"))?;
        let without_pk = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
                          JOIN pg_namespace n ON n.oid = c.relnamespace \
                          WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                          AND n.nspname NOT LIKE 'pg\\_toast%' AND NOT c.relispartition \
                          AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p') \
                          ORDER BY 1";
        let not_owned = "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
                         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND tableowner <> current_user \
                         ORDER BY 1";
        let superuser = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user";
        let admin = self.rows(As::Admin, superuser, &[]).await?;
        Ok(PublisherFacts {
            server_major: row.try_get::<_, i32>(6)? as u32,
            wal_level: row.try_get(0)?,
            max_replication_slots: row.try_get(1)?,
            slots_used: row.try_get(2)?,
            max_wal_senders: row.try_get(3)?,
            senders_used: row.try_get(4)?,
            max_slot_wal_keep_mb: row.try_get(5)?,
            tables_without_primary_key: strings(&self.rows(As::Owner, without_pk, &[]).await?)?,
            tables_not_owned: strings(&self.rows(As::Owner, not_owned, &[]).await?)?,
            admin_is_superuser: admin.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(false),
        })
    }

    /// Whether the admin role of the new side may create a subscription.
    pub async fn may_subscribe(&self) -> anyhow::Result<bool> {
        // PostgreSQL 16 added pg_create_subscription; before, only superusers.
        let sql = "SELECT CASE WHEN rolsuper THEN true \
                     WHEN current_setting('server_version_num')::int < 160000 THEN false \
                     ELSE pg_has_role(current_user, 'pg_create_subscription', 'USAGE') \
                     AND has_database_privilege(current_database(), 'CREATE') END \
                   FROM pg_roles WHERE rolname = current_user";
        let rows = self.rows(As::AdminHere, sql, &[]).await?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(false))
    }

    /// Old side: the fence table, the publication of every user table and
    /// the copy's role (dropped first if a failed start left them). Returns
    /// the role's password, for [`Database::subscribe`] only.
    pub async fn publish(&self) -> anyhow::Result<Secret> {
        self.unpublish().await?;
        let fence = format!("CREATE TABLE {FENCE} (id int PRIMARY KEY, token text NOT NULL)");
        self.change(As::Owner, "create the fence", &fence).await?;
        let tables = self.tables().await?;
        let sql = format!("CREATE PUBLICATION {NAME} FOR TABLE {}", tables.join(", "));
        self.change(As::Owner, "create the publication", &sql).await.context("cannot create the publication")?;
        let password = Secret::new(random_hex()?);
        let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
        let role = format!(
            "CREATE ROLE {NAME} LOGIN REPLICATION PASSWORD {}; GRANT USAGE ON SCHEMA public TO {NAME}",
            literal(&verifier)
        );
        // In the target database: the grant on its schema belongs there.
        self.change(As::AdminHere, "create the copy's role", &role)
            .await
            .context("cannot create the copy's role (needs a superuser admin role)")?;
        let grant = format!("GRANT SELECT ON {} TO {NAME}", tables.join(", "));
        self.change(As::Owner, "grant the copy's role", &grant).await?;
        Ok(password)
    }

    /// Old side: drops the publication, the fence and the copy's role, if there.
    pub async fn unpublish(&self) -> anyhow::Result<()> {
        let drop = format!("DROP PUBLICATION IF EXISTS {NAME}; DROP TABLE IF EXISTS {FENCE}");
        self.change(As::Owner, "drop the publication and the fence", &drop).await?;
        let role_exists = self.rows(As::Admin, "SELECT FROM pg_roles WHERE rolname = $1", &[&NAME]).await?;
        if !role_exists.is_empty() {
            // Its grants live in the target database: drop them there, then the role.
            self.change(As::AdminHere, "drop the copy's role", &format!("DROP OWNED BY {NAME}; DROP ROLE {NAME}"))
                .await?;
        }
        Ok(())
    }

    /// New side: subscribes to `publisher` as the copy's role; the initial
    /// copy starts at once, in the background of the new PostgreSQL.
    pub async fn subscribe(&self, publisher: &Target, password: &Secret) -> anyhow::Result<()> {
        let conninfo = format!(
            "host={} port={} dbname={} user={NAME} password={}{}",
            conninfo_value(&publisher.host),
            publisher.port,
            conninfo_value(&publisher.name),
            conninfo_value(password.expose()),
            publisher.sslmode.as_deref().map(|m| format!(" sslmode={}", conninfo_value(m))).unwrap_or_default()
        );
        let sql = format!("CREATE SUBSCRIPTION {NAME} CONNECTION {} PUBLICATION {NAME}", literal(&conninfo));
        let client = crate::connect::connect(&self.target, As::AdminHere).await?;
        // The statement holds the password: the server must not log it (as
        // a statement, a failed statement or a slow one). Only a superuser
        // may say so; a non-superuser's statement follows the server's
        // settings (README: the online copy).
        let superuser = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user";
        let row = crate::answer(&self.target, As::AdminHere, client.query_one(superuser, &[])).await?;
        if row.try_get::<_, bool>(0)? {
            let quiet = "SET log_statement = 'none'; SET log_min_error_statement = 'panic'; \
                         SET log_min_duration_statement = -1";
            crate::answer(&self.target, As::AdminHere, client.batch_execute(quiet)).await?;
        }
        // An error is shown without the password too.
        let what = format!("create the subscription in {}", self.target);
        failpoint::before(failpoint::Area::Database, &what);
        crate::answer(&self.target, As::AdminHere, client.batch_execute(&sql)).await.map_err(|e| {
            let failure = Failure::of(&e);
            let message =
                format!("cannot create the subscription: {}", failure.message.replace(password.expose(), "<password>"));
            Failure { message, ..failure }
        })?;
        failpoint::after(failpoint::Area::Database, &what);
        Ok(())
    }

    /// New side: where the copy stands.
    pub async fn copy_progress(&self) -> anyhow::Result<CopyProgress> {
        let sub = self
            .rows(As::AdminHere, "SELECT oid, subenabled FROM pg_subscription WHERE subname = $1", &[&NAME])
            .await?;
        let Some(sub) = sub.first() else { return Ok(CopyProgress::default()) };
        let oid: tokio_postgres::types::Oid = sub.try_get(0)?;
        let sql = "SELECT format('%I.%I', n.nspname, c.relname), r.srsubstate::text, pg_total_relation_size(c.oid) \
                   FROM pg_subscription_rel r JOIN pg_class c ON c.oid = r.srrelid \
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.srsubid = $1";
        let mut progress = CopyProgress { exists: true, enabled: sub.try_get(1)?, ..CopyProgress::default() };
        for row in self.rows(As::AdminHere, sql, &[&oid]).await? {
            let state: String = row.try_get(1)?;
            let state = match state.as_str() {
                "i" => "init",
                "d" | "f" => "copying",
                "s" => "synced",
                "r" => "ready",
                other => bail!("unknown table state {other:?} in pg_subscription_rel"),
            };
            progress.tables.insert(row.try_get(0)?, state);
            progress.bytes += row.try_get::<_, i64>(2)?;
        }
        Ok(progress)
    }

    /// Old side: the copy's slot, if it exists.
    pub async fn slot(&self) -> anyhow::Result<Option<SlotState>> {
        let sql = "SELECT coalesce(wal_status, 'unknown'), active, \
                     coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint \
                   FROM pg_replication_slots WHERE slot_name = $1";
        let rows = self.rows(As::Owner, sql, &[&NAME]).await?;
        rows.first()
            .map(|r| Ok(SlotState { wal_status: r.try_get(0)?, active: r.try_get(1)?, lag_bytes: r.try_get(2)? }))
            .transpose()
    }

    /// Old side: writes a new fence token (commit order puts it after every
    /// change before it); returns the token.
    pub async fn write_fence(&self) -> anyhow::Result<String> {
        let token = random_hex()?;
        let sql = format!(
            "INSERT INTO {FENCE} VALUES (1, {}) ON CONFLICT (id) DO UPDATE SET token = excluded.token",
            literal(&token)
        );
        self.change(As::Owner, "write the fence", &sql).await?;
        Ok(token)
    }

    /// New side: whether the fence `token` arrived.
    pub async fn fence_seen(&self, token: &str) -> anyhow::Result<bool> {
        let rows = self.rows(As::Owner, &format!("SELECT FROM {FENCE} WHERE token = $1"), &[&token]).await?;
        Ok(!rows.is_empty())
    }

    /// New side: drops the subscription (and with it the slot on the old
    /// side) and the fence's copy; nothing replicates into it afterwards.
    pub async fn unsubscribe(&self) -> anyhow::Result<()> {
        if !self.exists().await? {
            return Ok(());
        }
        let exists =
            !self.rows(As::AdminHere, "SELECT FROM pg_subscription WHERE subname = $1", &[&NAME]).await?.is_empty();
        if exists {
            self.change(As::AdminHere, "drop the subscription", &format!("DROP SUBSCRIPTION {NAME}"))
                .await
                .context("cannot drop the subscription")?;
        }
        self.change(As::Owner, "drop the fence's copy", &format!("DROP TABLE IF EXISTS {FENCE}")).await
    }

    /// One change of the copy's objects, between two crash points.
    async fn change(&self, who: As, what: &str, sql: &str) -> anyhow::Result<()> {
        let what = format!("{what} in {}", self.target);
        failpoint::before(failpoint::Area::Database, &what);
        self.execute(who, sql).await?;
        failpoint::after(failpoint::Area::Database, &what);
        Ok(())
    }

    /// Sessions of the owner role on this database other than this one's:
    /// "application from address" each.
    pub async fn other_sessions(&self) -> anyhow::Result<Vec<String>> {
        let sql = "SELECT coalesce(nullif(application_name, ''), 'a client') || ' from ' || \
                     coalesce(host(client_addr), 'the local socket') || ' (pid ' || pid || ')' \
                   FROM pg_stat_activity WHERE usename = current_user AND datname = current_database() \
                   AND pid <> pg_backend_pid() ORDER BY pid";
        strings(&self.rows(As::Owner, sql, &[]).await?)
    }

    /// Each user table's size on disk, bytes.
    pub async fn table_sizes(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        let sql = "SELECT format('%I.%I', schemaname, tablename), pg_total_relation_size(format('%I.%I', schemaname, tablename)) \
                   FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')";
        crate::counts(&self.rows(As::Owner, sql, &[]).await?)
    }

    /// An md5 of each table's rows as text, sorted, in one session whose
    /// settings make the text the same on any server.
    pub async fn content_hashes(&self, tables: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
        let client = crate::connect::connect(&self.target, As::Owner).await?;
        let settings = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
                        SET extra_float_digits = 1; SET bytea_output = 'hex'";
        crate::answer(&self.target, As::Owner, client.batch_execute(settings)).await?;
        let mut hashes = BTreeMap::new();
        for table in tables {
            let sql = format!("SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t");
            let row = crate::answer(&self.target, As::Owner, client.query_one(&sql, &[])).await?;
            hashes.insert(table.clone(), row.try_get(0)?);
        }
        Ok(hashes)
    }

    /// What of the copy exists in this database's cluster, for `status`:
    /// "publication", "role", "slot (wal_status)", "subscription".
    pub async fn copy_leftovers(&self) -> anyhow::Result<Vec<String>> {
        let sql = "SELECT 'publication' FROM pg_publication WHERE pubname = $1 \
                   UNION ALL SELECT 'role' FROM pg_roles WHERE rolname = $1 \
                   UNION ALL SELECT 'slot (' || coalesce(wal_status, 'unknown') || ')' FROM pg_replication_slots WHERE slot_name = $1 \
                   UNION ALL SELECT 'subscription' FROM pg_subscription WHERE subname = $1";
        strings(&self.rows(As::AdminHere, sql, &[&NAME]).await?)
    }
}

/// The old database's schema (after [`Database::publish`], so with the
/// fence) into the empty new one, through a schema-only archive at `file`.
pub async fn copy_schema(publisher: &Database, subscriber: &Database, file: &Utf8Path) -> anyhow::Result<()> {
    publisher
        .tool("pg_dump")
        .connect(false)
        .args([
            "--schema-only",
            "--no-publications",
            "--no-subscriptions",
            "--format=custom",
            "-w",
            "-f",
            file.as_str(),
        ])
        .cmd()
        .run()
        .await?;
    let what = format!("load the schema into {}", subscriber.target);
    failpoint::before(failpoint::Area::Database, &what);
    subscriber
        .tool("pg_restore")
        .args(["--exit-on-error", "--no-owner", "--no-privileges", "-w"])
        .connect(false)
        .arg(file.as_str())
        .cmd()
        .run()
        .await?;
    failpoint::after(failpoint::Area::Database, &what);
    Ok(())
}

/// A slot left on the old side by a subscription that is gone (the new
/// database was dropped, say) holds WAL forever: drop it.
pub async fn drop_orphan_slot(publisher: &Database) -> anyhow::Result<bool> {
    let sql =
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active";
    let what = format!("drop an orphan slot of {}", publisher.target);
    failpoint::before(failpoint::Area::Database, &what);
    let dropped = !publisher.rows(As::Admin, sql, &[&NAME]).await?.is_empty();
    failpoint::after(failpoint::Area::Database, &what);
    Ok(dropped)
}

/// Cuts the copy off: the subscription (and its slot), then the
/// publication, the fence and the role.
pub async fn cut_off(publisher: &Database, subscriber: &Database) -> anyhow::Result<()> {
    subscriber.unsubscribe().await?;
    drop_orphan_slot(publisher).await?;
    publisher.unpublish().await
}

/// 32 random bytes as hex.
fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_differ() {
        let (a, b) = (random_hex().unwrap(), random_hex().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn the_copy_is_done_when_every_table_is_ready() {
        let mut p = CopyProgress { exists: true, enabled: true, ..CopyProgress::default() };
        assert!(!p.initial_copy_done(), "no table yet");
        p.tables.insert("public.a".into(), "ready");
        p.tables.insert("public.b".into(), "copying");
        assert!(!p.initial_copy_done());
        assert_eq!(p.count("copying"), 1);
        p.tables.insert("public.b".into(), "ready");
        assert!(p.initial_copy_done());
    }
}
