//! One exported snapshot of a database, held open by a psql session: pg_dump
//! reads in it (`pg_dump --snapshot`), and the row counts and the schema
//! versions are taken in it too, so the dump and what the manifest says of
//! it are the same moment of the database.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use migrate_core::runner::Session;

use crate::{Database, Row, SCHEMA_VERSIONS, SCHEMAMANAGER_EXISTS, TABLES, parse_counts, parse_schema_versions};

/// Marks the end of a query's rows in the session's output.
const END: &str = "--inmanta-migrate-end--";

/// A read-only repeatable-read transaction whose snapshot is exported.
pub struct Snapshot {
    session: Session,
    /// The id pg_dump's `--snapshot` takes.
    pub id: String,
    /// The user tables, `schema.table`, quoted where needed.
    pub tables: Vec<String>,
    /// How long one answer may take (a row count of a big table is slow).
    limit: Duration,
    counting: bool,
}

impl Database {
    /// Opens a transaction, exports its snapshot and lists the tables in it.
    /// `limit` bounds each answer in the session.
    pub async fn export_snapshot(&self, limit: Duration) -> anyhow::Result<Snapshot> {
        let mut session = self.session()?;
        session.send("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n").await?;
        let mut snapshot = Snapshot { session, id: String::new(), tables: Vec::new(), limit, counting: false };
        let id = snapshot.query("SELECT pg_export_snapshot()").await?;
        snapshot.id = id.first().map(|r| r[0].clone()).context("PostgreSQL exported no snapshot id")?;
        snapshot.tables = snapshot.query(TABLES).await?.into_iter().map(|r| r[0].clone()).collect();
        Ok(snapshot)
    }
}

impl Snapshot {
    /// Sends the exact row count of every table; the answer is read by
    /// [`counts`](Self::counts), so the counting runs meanwhile (while
    /// pg_dump reads, say).
    pub async fn start_counting(&mut self) -> anyhow::Result<()> {
        if !self.tables.is_empty() {
            self.send(&crate::row_count_sql(&self.tables)).await?;
            self.counting = true;
        }
        Ok(())
    }

    /// The row counts [`start_counting`](Self::start_counting) asked for.
    pub async fn counts(&mut self) -> anyhow::Result<BTreeMap<String, i64>> {
        if !std::mem::take(&mut self.counting) {
            return Ok(BTreeMap::new());
        }
        parse_counts(&self.rows().await?)
    }

    /// `schemamanager` in the snapshot (empty without an Inmanta schema).
    pub async fn schema_versions(&mut self) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
        // An error would end the transaction, so look before asking.
        let exists = self.query(SCHEMAMANAGER_EXISTS).await?;
        if exists.first().map(|r| r[0].as_str()) != Some("t") {
            return Ok(BTreeMap::new());
        }
        Ok(parse_schema_versions(self.query(SCHEMA_VERSIONS).await?))
    }

    /// Ends the transaction (the snapshot is gone with it).
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.session.send("COMMIT;\n").await?;
        self.session.finish().await
    }

    async fn query(&mut self, sql: &str) -> anyhow::Result<Vec<Row>> {
        self.send(sql).await?;
        self.rows().await
    }

    /// Sends SQL followed by a sentinel that marks the end of its rows.
    async fn send(&mut self, sql: &str) -> anyhow::Result<()> {
        self.session.send(&format!("{sql};\nSELECT '{END}';\n")).await
    }

    /// Reads the rows of the query sent last, up to the sentinel.
    async fn rows(&mut self) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        loop {
            let line = self.session.read_line(self.limit).await?;
            if line == END {
                return Ok(rows);
            }
            if !line.is_empty() {
                rows.push(crate::split_row(&line));
            }
        }
    }
}
