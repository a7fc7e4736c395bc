//! A busy orchestrator's history in the OLD database, in Inmanta's own
//! tables: released versions copied from each environment's newest one
//! (`configurationmodel`, `resource`, `code`), each with its deploy history (a store
//! action for the version and a deploy action with log lines for every
//! resource: `resourceaction`, `resourceaction_resource`) and a compile
//! report. Rows are copied through `jsonb_populate_record`, so every column
//! of the server's own schema is kept and only the keys change: the same SQL
//! fits 8.x to 14.x. The old server must be stopped.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::{Instance, Side};

/// Versions added to every environment per round (the size is checked
/// between rounds).
const VERSIONS_PER_ROUND: u32 = 4;

/// What was added, and the share of the database each big table has.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryFigures {
    pub versions_per_env: u32,
    /// Resources of an environment's newest version, on average.
    pub resources_per_version: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// (table, share of the database's bytes), biggest first.
    pub shares: Vec<(String, f64)>,
}

impl Instance {
    /// Grows the OLD database until it holds about `target_bytes`: every
    /// environment gets the same number of released versions on top of its
    /// newest released one, each an exact copy of it (so what the agents
    /// see stays what they deployed).
    pub fn grow_history(&self, target_bytes: u64) -> Result<HistoryFigures> {
        if self.server_running(Side::Old) {
            bail!("stop the old server before growing its database");
        }
        let start = Instant::now();
        let envs: Vec<String> = self.envs().iter().map(|e| e.id.clone()).collect();
        let resources = self.sql_i64(
            "SELECT count(*) FROM public.resource r JOIN (SELECT environment, max(model) m \
             FROM public.resource GROUP BY environment) l ON l.environment = r.environment AND l.m = r.model",
        )?;
        let mut added = 0;
        let mut shown = Instant::now();
        while self.size()? < target_bytes {
            for env in &envs {
                self.psql(Side::Old, "inmanta", &round_sql(env, VERSIONS_PER_ROUND))
                    .with_context(|| format!("growing the history of environment {env}"))?;
            }
            added += VERSIONS_PER_ROUND;
            if shown.elapsed().as_secs() >= 10 {
                shown = Instant::now();
                eprintln!("lab: history: {added} versions per environment, {} MiB", self.size()? / (1024 * 1024));
            }
        }
        self.psql(Side::Old, "inmanta", "VACUUM ANALYZE")?;
        let bytes = self.size()?;
        let shares = self
            .psql(
                Side::Old,
                "inmanta",
                "SELECT c.relname, pg_total_relation_size(c.oid)::float8 / pg_database_size(current_database()) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC LIMIT 6",
            )?
            .lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(t, s)| (t.to_owned(), s.parse().unwrap_or(0.0)))
            .collect();
        Ok(HistoryFigures {
            versions_per_env: added,
            resources_per_version: (resources as u64) / envs.len().max(1) as u64,
            bytes,
            seconds: start.elapsed().as_secs_f64(),
            shares,
        })
    }

    fn size(&self) -> Result<u64> {
        Ok(self.sql_i64("SELECT pg_database_size('inmanta')")? as u64)
    }

    fn sql_i64(&self, sql: &str) -> Result<i64> {
        let out = self.psql(Side::Old, "inmanta", sql)?;
        out.trim().parse().with_context(|| format!("not a number: {out:?}"))
    }
}

/// One round for one environment: `n` new released versions above its
/// newest, each with its resources, actions and compile report, in one
/// transaction; `environment.last_version` follows, so the server's next
/// version does not collide.
fn round_sql(env: &str, n: u32) -> String {
    format!(
        "BEGIN;
SET ROLE inmanta;
CREATE TEMP TABLE newest ON COMMIT DROP AS
  SELECT max(version) AS v FROM public.configurationmodel WHERE environment = '{env}' AND released;
CREATE TEMP TABLE added ON COMMIT DROP AS
  SELECT (SELECT greatest(max(version), (SELECT coalesce(last_version, 0) FROM public.environment WHERE id = '{env}'))
          FROM public.configurationmodel WHERE environment = '{env}') + k AS version, k
  FROM generate_series(1, {n}) k;
INSERT INTO public.configurationmodel
  SELECT (jsonb_populate_record(NULL::public.configurationmodel, to_jsonb(m)
          || jsonb_build_object('version', a.version, 'date', m.date + a.k * interval '1 minute'))).*
  FROM public.configurationmodel m, added a
  WHERE m.environment = '{env}' AND m.version = (SELECT v FROM newest);
INSERT INTO public.resource
  SELECT (jsonb_populate_record(NULL::public.resource, to_jsonb(r) || jsonb_build_object('model', a.version))).*
  FROM public.resource r, added a
  WHERE r.environment = '{env}' AND r.model = (SELECT v FROM newest);
-- The agents fetch each version's handler code by version.
INSERT INTO public.code
  SELECT (jsonb_populate_record(NULL::public.code, to_jsonb(c) || jsonb_build_object('version', a.version))).*
  FROM public.code c, added a
  WHERE c.environment = '{env}' AND c.version = (SELECT v FROM newest);
WITH store AS (
  INSERT INTO public.resourceaction (action_id, action, started, finished, messages, status, changes, change,
                                     environment, version, resource_version_ids)
  SELECT gen_random_uuid(), 'store', now(), now(), ARRAY[]::jsonb[], 'available', '{{}}', 'nochange', '{env}', a.version,
         array_agg(r.resource_id || ',v=' || a.version)
  FROM public.resource r JOIN added a ON r.model = a.version WHERE r.environment = '{env}'
  GROUP BY a.version
  RETURNING action_id, version, resource_version_ids)
INSERT INTO public.resourceaction_resource (environment, resource_action_id, resource_id, resource_version)
  SELECT '{env}', s.action_id, split_part(rvid, ',v=', 1), s.version FROM store s, unnest(s.resource_version_ids) rvid;
WITH deploy AS (
  INSERT INTO public.resourceaction (action_id, action, started, finished, messages, status, changes, change,
                                     environment, version, resource_version_ids)
  SELECT gen_random_uuid(), 'deploy', now(), now() + interval '2 seconds',
         ARRAY[jsonb_build_object('level', 'INFO', 'timestamp', now(), 'msg',
                 'Start run for resource ' || r.resource_id || ',v=' || a.version, 'args', '[]'::jsonb,
                 'kwargs', jsonb_build_object('resource', r.resource_id, 'deploy_id', gen_random_uuid())),
               jsonb_build_object('level', 'DEBUG', 'timestamp', now(), 'msg',
                 'Calling read_resource for ' || r.resource_id || ': ' || repeat('state ', 12), 'args', '[]'::jsonb,
                 'kwargs', '{{}}'::jsonb),
               jsonb_build_object('level', 'INFO', 'timestamp', now(), 'msg',
                 'End run for resource ' || r.resource_id || ' in deploy ' || gen_random_uuid(), 'args', '[]'::jsonb,
                 'kwargs', jsonb_build_object('status', 'deployed', 'change', 'nochange'))],
         'deployed', '{{}}', 'nochange', '{env}', a.version, ARRAY[r.resource_id || ',v=' || a.version]
  FROM public.resource r JOIN added a ON r.model = a.version WHERE r.environment = '{env}'
  RETURNING action_id, version, resource_version_ids)
INSERT INTO public.resourceaction_resource (environment, resource_action_id, resource_id, resource_version)
  SELECT '{env}', d.action_id, split_part(d.resource_version_ids[1], ',v=', 1), d.version FROM deploy d;
CREATE TEMP TABLE compiles ON COMMIT DROP AS
  SELECT c.id AS old_id, gen_random_uuid() AS id, a.version, a.k
  FROM added a, LATERAL (SELECT id FROM public.compile WHERE environment = '{env}' AND success
                         ORDER BY completed DESC LIMIT 1) c;
INSERT INTO public.compile
  SELECT (jsonb_populate_record(NULL::public.compile, to_jsonb(c) || jsonb_build_object('id', n.id, 'version',
          n.version, 'substitute_compile_id', NULL,
          -- a day before the one copied: the newest compile stays the server's own
          'requested', c.requested - interval '1 day', 'started', c.started - interval '1 day',
          'completed', c.completed - interval '1 day'))).*
  FROM public.compile c JOIN compiles n ON n.old_id = c.id;
INSERT INTO public.report
  SELECT (jsonb_populate_record(NULL::public.report, to_jsonb(r) || jsonb_build_object('id', gen_random_uuid(),
          'compile', n.id))).*
  FROM public.report r JOIN compiles n ON n.old_id = r.compile;
UPDATE public.environment SET last_version = (SELECT max(version) FROM added) WHERE id = '{env}';
COMMIT;"
    )
}
