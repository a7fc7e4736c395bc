//! What steps measure, for the report: one typed set of figures, each with its
//! unit in its name, published in the report's schema. A step fills the ones
//! it measures; a re-run's figures replace the earlier run's, one by one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Figures {
    /// Wall-clock time of the step's work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,

    // halt-all
    /// Environments on the old server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environments: Option<usize>,
    /// Environments this run halted (the others were halted already).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted_by_this_run: Option<usize>,
    /// Environments halted before the migration began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted_before: Option<usize>,

    // dump, restore, precopy, cutover
    /// Tables copied (the dump's, or the online copy's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<usize>,
    /// Rows copied, counted table by table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// Bytes written (the dump) or copied (precopy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The old database's size on disk, as PostgreSQL reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_bytes: Option<i64>,
    /// restore: time of pg_restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_seconds: Option<f64>,
    /// restore: time of ANALYZE on the restored database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analyze_seconds: Option<f64>,
    /// cutover: tables compared by content hash, beside their row counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashed_tables: Option<usize>,
    /// cutover: time for the copy to catch up with the stopped old server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_seconds: Option<f64>,

    // stop-server, start-server
    /// start-server: time until the new server answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_to_answer: Option<f64>,
    /// start-server: core schema versions the new server added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_migrations: Option<usize>,
    /// start-server: the new server's inmanta-core version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_version: Option<String>,
    /// start-server: the intermediate servers run, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermediates: Option<Vec<Intermediate>>,

    // env-reconcile
    /// Environments resumed with no difference and auto_deploy back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciled: Option<usize>,
    /// Environments halted before the migration, left halted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_halted: Option<usize>,
    /// Environments that need an operator's decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_operator: Option<usize>,

    // init, man-pages
    /// init: values it could not find and left for the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_found: Option<usize>,
    /// man-pages: pages written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<usize>,
}

/// One intermediate server's part of the schema path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Intermediate {
    pub version: String,
    pub schema_migrations: usize,
}

impl Figures {
    /// Every figure `newer` has replaces this one's; the others stay.
    pub fn merge(&mut self, newer: &Figures) {
        let (Ok(serde_json::Value::Object(mut all)), Ok(serde_json::Value::Object(newer))) =
            (serde_json::to_value(&*self), serde_json::to_value(newer))
        else {
            unreachable!("figures serialize to an object")
        };
        all.extend(newer);
        *self = serde_json::from_value(all.into()).expect("figures read back what they wrote");
    }

    pub fn is_empty(&self) -> bool {
        *self == Figures::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rerun_replaces_the_figures_it_measured_and_keeps_the_others() {
        let mut first = Figures { tables: Some(3), rows: Some(10), ..Figures::default() };
        first.merge(&Figures { rows: Some(12), seconds: Some(1.5), ..Figures::default() });
        assert_eq!(first, Figures { tables: Some(3), rows: Some(12), seconds: Some(1.5), ..Figures::default() });
    }

    #[test]
    fn unknown_figures_of_an_older_journal_are_dropped_not_fatal() {
        let read: Figures = serde_json::from_value(serde_json::json!({ "tables": 2, "gone": true })).unwrap();
        assert_eq!(read, Figures { tables: Some(2), ..Figures::default() });
    }
}
