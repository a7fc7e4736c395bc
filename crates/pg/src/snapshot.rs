//! One exported snapshot of a database, held open by a driver transaction:
//! pg_dump reads in it (`pg_dump --snapshot`), and the row counts and the
//! schema versions are taken in it too, so the dump and what the manifest
//! says of it are the same moment of the database.

use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::{As, Database, TABLES, Target, answer, connect, counts, row_count_sql, strings};

/// A read-only repeatable-read transaction whose snapshot is exported; it
/// ends (and the snapshot with it) when this is closed or dropped.
pub struct Snapshot {
    client: Arc<Client>,
    target: Target,
    /// The id pg_dump's `--snapshot` takes.
    pub id: String,
    /// The user tables, `schema.table`, quoted where needed.
    pub tables: Vec<String>,
    counting: Option<JoinHandle<anyhow::Result<BTreeMap<String, i64>>>>,
}

impl Database {
    /// Opens a transaction, exports its snapshot and lists the tables in it.
    pub async fn export_snapshot(&self) -> anyhow::Result<Snapshot> {
        let client = connect::connect(&self.target, As::Owner).await?;
        let target = &self.target;
        answer(target, As::Owner, client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")).await?;
        let row = answer(target, As::Owner, client.query_one("SELECT pg_export_snapshot()", &[])).await?;
        let id: String = row.try_get(0).context("PostgreSQL exported no snapshot id")?;
        let tables = strings(&answer(target, As::Owner, client.query(TABLES, &[])).await?)?;
        Ok(Snapshot { client: Arc::new(client), target: target.clone(), id, tables, counting: None })
    }
}

impl Snapshot {
    /// Starts the exact row count of every table in the snapshot; the answer
    /// is read by [`counts`](Self::counts), so the counting runs meanwhile
    /// (while pg_dump reads, say).
    pub fn start_counting(&mut self) {
        if self.tables.is_empty() {
            return;
        }
        let (client, target) = (self.client.clone(), self.target.clone());
        let sql = row_count_sql(&self.tables);
        self.counting =
            Some(tokio::spawn(async move { counts(&answer(&target, As::Owner, client.query(&sql, &[])).await?) }));
    }

    /// The row counts [`start_counting`](Self::start_counting) asked for.
    pub async fn counts(&mut self) -> anyhow::Result<BTreeMap<String, i64>> {
        match self.counting.take() {
            Some(counting) => counting.await.context("the row count task ended")?,
            None => Ok(BTreeMap::new()),
        }
    }

    /// `schemamanager` in the snapshot (empty without an Inmanta schema).
    pub async fn schema_versions(&mut self) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
        crate::schema_versions(&self.target, &self.client).await
    }

    /// Ends the transaction (the snapshot is gone with it).
    pub async fn close(self) -> anyhow::Result<()> {
        answer(&self.target, As::Owner, self.client.batch_execute("COMMIT")).await
    }
}
