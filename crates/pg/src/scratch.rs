//! The rehearsal's scratch database: a copy of the old database on the new
//! PostgreSQL in which nothing can deploy. What makes it so lives here, in
//! SQL, because it must hold before any server opens the database.

use anyhow::Context as _;

use crate::{As, Database};

/// What in a scratch database could still deploy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unsafe {
    /// Environments not halted, by name.
    pub running: Vec<String>,
    /// Agents not paused, as `environment/agent`.
    pub unpaused: Vec<String>,
}

impl Unsafe {
    pub fn is_empty(&self) -> bool {
        self.running.is_empty() && self.unpaused.is_empty()
    }
}

impl std::fmt::Display for Unsafe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.running.is_empty() {
            parts.push(format!("environment(s) not halted: {}", self.running.join(", ")));
        }
        if !self.unpaused.is_empty() {
            parts.push(format!("agent(s) not paused: {}", self.unpaused.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

impl Database {
    /// The same server and roles, another database.
    pub fn named(&self, name: &str) -> anyhow::Result<Database> {
        let mut target = self.target.clone();
        target.name = name.to_owned();
        Database::with_target(target, self.tools.clone())
    }

    /// Halts every environment and pauses every agent, in one transaction,
    /// so that a server started on this database starts no agent, no
    /// scheduler and no deploy, and a later resume would unpause nothing.
    pub async fn make_inert(&self) -> anyhow::Result<()> {
        let what = format!("halt every environment and pause every agent in {}", self.target);
        failpoint::before(failpoint::Area::Database, &what);
        let result = self
            .execute(
                As::Owner,
                "BEGIN; \
                 UPDATE public.environment SET halted = true WHERE NOT halted; \
                 UPDATE public.agent SET paused = true, unpause_on_resume = false; \
                 COMMIT;",
            )
            .await
            .with_context(|| format!("cannot {what}"));
        failpoint::after(failpoint::Area::Database, &what);
        result
    }

    /// What could still deploy (empty when the database is inert).
    pub async fn not_inert(&self) -> anyhow::Result<Unsafe> {
        let running = "SELECT name::text FROM public.environment WHERE NOT halted ORDER BY name";
        let unpaused = "SELECT e.name::text || '/' || a.name::text FROM public.agent a \
                        JOIN public.environment e ON e.id = a.environment WHERE NOT a.paused ORDER BY 1";
        Ok(Unsafe {
            running: crate::strings(&self.rows(As::Owner, running, &[]).await?)?,
            unpaused: crate::strings(&self.rows(As::Owner, unpaused, &[]).await?)?,
        })
    }

    /// Un-halts one environment behind the server's back. The server's
    /// compiler reads the flag from the database for each compile (8.x to
    /// 20.x), but only the resume API starts agents and schedulers: so its
    /// compile runs, and nothing else does. Its agents stay paused.
    pub async fn let_compile(&self, env: &str) -> anyhow::Result<()> {
        let sql = "UPDATE public.environment SET halted = false WHERE id::text = $1";
        self.rows(As::Owner, sql, &[&env]).await.map(drop)
    }

    /// Halts one environment again and pauses its agents, those its compile
    /// registered too (15+ registers a `$__scheduler` agent, unpaused, with
    /// the first version it exports).
    pub async fn halt_again(&self, env: &str) -> anyhow::Result<()> {
        let client = crate::connect::connect(&self.target, As::Owner).await?;
        let work = async {
            client.execute("BEGIN", &[]).await?;
            client.execute("UPDATE public.environment SET halted = true WHERE id::text = $1", &[&env]).await?;
            let agents =
                "UPDATE public.agent SET paused = true, unpause_on_resume = false WHERE environment::text = $1";
            client.execute(agents, &[&env]).await?;
            client.execute("COMMIT", &[]).await
        };
        crate::answer(&self.target, As::Owner, work).await.map(drop)
    }

    /// Deploy actions the database records (the `resourceaction` log).
    pub async fn deploy_actions(&self) -> anyhow::Result<i64> {
        let sql = "SELECT count(*) FROM public.resourceaction WHERE action = 'deploy'";
        let rows = self.rows(As::Owner, sql, &[]).await?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }
}
