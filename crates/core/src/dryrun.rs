//! A dry-run of one version, and what its report says: the differences
//! that stop an environment and the notes that do not. `env-reconcile` asks
//! the new server for one; `rehearse --baseline` asks the old server (a
//! dry-run changes nothing on the managed infrastructure) for what is
//! already different before the migration.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use inmanta_api::{Client, DryRunReport, ResourceDiff};

use crate::{context::Context, inventory::EnvironmentRecord, wait};

/// Requests a dry-run and waits for its report (`reconcile.dryrun_timeout`).
/// A dry-run that meets resources whose agent is not up yet is asked again,
/// within the limit.
pub async fn dry_run(
    cx: &Context,
    api: &Client,
    env: &EnvironmentRecord,
    version: i64,
    step: &str,
) -> anyhow::Result<DryRunReport> {
    let options = &cx.config.reconcile;
    let deadline = Instant::now() + options.dryrun_timeout;
    let paused = paused_before(env);
    let what = format!("a dry-run of version {version} of {} (reconcile.dryrun_timeout)", env.name);
    // The probe decides by the deadline; the wait's own limit is a backstop.
    wait::until(options.poll_interval, options.dryrun_timeout + options.poll_interval, &what, async || {
        let id = match api.dryrun(env.id, version).await {
            Ok(id) => id,
            // 15+: the scheduler may still be starting.
            Err(e) if e.status() == Some(409) && Instant::now() < deadline => return Ok(None),
            Err(e) => return Err(e).context("cannot request the dry-run"),
        };
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let what = format!("the dry-run of version {version} of {} to finish (reconcile.dryrun_timeout)", env.name);
        let report = wait::until(options.poll_interval, left, &what, async || {
            let report = api.dryrun_report(env.id, version, id).await?;
            Ok(report.is_done().then_some(report))
        })
        .await?;
        let agent_down = report
            .diff
            .iter()
            .any(|d| d.status == "agent_down" && !paused.iter().any(|p| d.resource_id.contains(&format!("[{p},"))));
        if agent_down && Instant::now() + options.poll_interval < deadline {
            cx.ui.info(step, format!("{}: agents not up yet; asking for the dry-run again", env.name));
            return Ok(None);
        }
        Ok(Some(report))
    })
    .await
}

/// Splits a dry-run report of `env` into differences (that stop the
/// environment) and notes (reported only).
pub fn judge(report: &DryRunReport, env: &EnvironmentRecord) -> (Vec<String>, Vec<String>) {
    split(report, &paused_before(env))
}

/// Agents paused on purpose before the migration (halting pauses the others
/// too, but marks those to unpause on resume): they stay paused.
fn paused_before(env: &EnvironmentRecord) -> Vec<&str> {
    env.agents.iter().filter(|a| a.paused && a.unpause_on_resume != Some(true)).map(|a| a.name.as_str()).collect()
}

fn split(report: &DryRunReport, paused_agents: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut differences = Vec::new();
    let mut notes = Vec::new();
    let mut not_evaluated = BTreeMap::<&str, usize>::new();
    for diff in report.differences() {
        let agent = agent_of(&diff.resource_id);
        match diff.status.as_str() {
            "undefined" | "skipped_for_undefined" => *not_evaluated.entry(diff.status.as_str()).or_default() += 1,
            "agent_down" if agent.is_some_and(|a| paused_agents.contains(&a)) => {
                *not_evaluated.entry("agent paused before the migration").or_default() += 1
            }
            _ => differences.push(describe(diff)),
        }
    }
    if report.missing() > 0 {
        differences.push(format!("{} resource(s) did not report in the dry-run", report.missing()));
    }
    for (why, n) in not_evaluated {
        notes.push(format!("{n} resource(s) not evaluated ({why})"));
    }
    (differences, notes)
}

fn agent_of(resource_id: &str) -> Option<&str> {
    resource_id.split('[').nth(1)?.split(',').next()
}

/// "`<resource>`: modified: attr: from -> to, ..."
fn describe(diff: &ResourceDiff) -> String {
    let attributes: Vec<String> =
        diff.attributes.iter().map(|(name, a)| format!("{name}: {} -> {}", a.from_value, a.to_value)).collect();
    if attributes.is_empty() {
        format!("{}: {}", diff.resource_id, diff.status)
    } else {
        format!("{}: {}: {}", diff.resource_id, diff.status, attributes.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use inmanta_api::{AttributeDiff, DryRunSummary};
    use serde_json::Value;
    use uuid::Uuid;

    use super::*;

    fn report(diffs: &[(&str, &str)], total: i64) -> DryRunReport {
        DryRunReport {
            summary: DryRunSummary { id: Uuid::nil(), model: 2, total, todo: 0, date: None },
            diff: diffs
                .iter()
                .map(|(id, status)| ResourceDiff {
                    resource_id: id.to_string(),
                    status: status.to_string(),
                    attributes: if *status == "modified" {
                        [("purged".to_owned(), AttributeDiff { from_value: false.into(), to_value: Value::Null })]
                            .into()
                    } else {
                        BTreeMap::new()
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn clean_reports_have_no_differences() {
        let r = report(&[("std::testing::NullResource[internal,name=a]", "unmodified")], 1);
        assert_eq!(split(&r, &[]), (vec![], vec![]));
    }

    #[test]
    fn differences_name_resource_and_attribute() {
        let r = report(&[("R[internal,name=a]", "modified"), ("R[internal,name=b]", "unmodified")], 3);
        let (diffs, _) = split(&r, &[]);
        assert_eq!(
            diffs,
            vec!["R[internal,name=a]: modified: purged: false -> null", "1 resource(s) did not report in the dry-run"]
        );
    }

    #[test]
    fn paused_agents_and_unknowns_are_notes() {
        let r = report(
            &[("R[held,name=a]", "agent_down"), ("R[internal,name=b]", "undefined"), ("R[other,name=c]", "agent_down")],
            3,
        );
        let (diffs, notes) = split(&r, &["held"]);
        assert_eq!(diffs, vec!["R[other,name=c]: agent_down"]);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
