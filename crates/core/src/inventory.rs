//! The inventory of an orchestrator: every project and environment with what
//! a migration must keep (halted or not, settings, versions, resource states,
//! paused agents). `halt-all` takes it on the old server before halting
//! anything; the new side is compared against it.

use std::collections::BTreeMap;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use inmanta_api::{Agent, Client, DeploySummary, Project, ServerVersion};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Inventory {
    pub taken_at: Timestamp,
    pub api_url: String,
    pub server_version: String,
    pub core_version: ServerVersion,
    pub projects: Vec<Project>,
    pub environments: Vec<EnvironmentRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    pub id: Uuid,
    pub name: String,
    pub project_id: Uuid,
    pub project_name: String,
    pub repo_url: String,
    pub repo_branch: String,
    /// Halted before the migration touched anything.
    pub halted: bool,
    #[serde(default)]
    pub marked_for_deletion: bool,
    /// Settings stored in the database.
    pub settings: BTreeMap<String, Value>,
    /// Every defined setting with the value in force (stored or default).
    pub effective_settings: BTreeMap<String, Value>,
    pub latest_version: Option<i64>,
    pub latest_released_version: Option<i64>,
    pub resources: DeploySummary,
    pub agents: Vec<Agent>,
}

impl EnvironmentRecord {
    /// `auto_deploy` in force; true, its default, when unknown.
    pub fn auto_deploy(&self) -> bool {
        self.effective_settings.get("auto_deploy").and_then(Value::as_bool).unwrap_or(true)
    }

    /// "name (id)", how environments are named in messages.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.id)
    }
}

/// A repository URL without `user:password@`, which must not be written down.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") }
        }
        None => url.to_owned(),
    }
}

impl Inventory {
    pub const FILE: &'static str = "inventory.json";
    /// The new server's environments right after its schema migration (as
    /// `start-server` saw them): what `rollback` holds the new side against
    /// to tell its own work from the upgrade's.
    pub const NEW_FILE: &'static str = "inventory-new.json";

    pub fn environment(&self, id: Uuid) -> Option<&EnvironmentRecord> {
        self.environments.iter().find(|e| e.id == id)
    }

    /// Takes the inventory of the server behind `client`.
    pub async fn take(client: &Client) -> anyhow::Result<Inventory> {
        let status = client.server_status().await?;
        let projects = client.projects().await?;
        let environments = client.environments().await?;
        let project_name = |id: Uuid| projects.iter().find(|p| p.id == id).map(|p| p.name.clone()).unwrap_or_default();
        let core = status.core_version;
        let records: Vec<EnvironmentRecord> = futures::stream::iter(environments)
            .map(|env| {
                let project_name = project_name(env.project_id);
                async move {
                    let settings = client.settings(env.id).await?;
                    let latest = client.latest_version(env.id).await?;
                    let released = client.latest_released_version(env.id, core).await?;
                    let resources = client.deploy_summary(env.id).await?;
                    let agents = client.agents(env.id).await?;
                    anyhow::Ok(EnvironmentRecord {
                        id: env.id,
                        name: env.name,
                        project_id: env.project_id,
                        project_name,
                        repo_url: without_credentials(&env.repo_url),
                        repo_branch: env.repo_branch,
                        halted: env.halted,
                        marked_for_deletion: env.is_marked_for_deletion,
                        effective_settings: settings.all_effective(),
                        settings: settings.stored,
                        latest_version: latest.map(|v| v.version),
                        latest_released_version: released.map(|v| v.version),
                        resources,
                        agents,
                    })
                }
            })
            .buffered(8)
            .try_collect()
            .await
            .with_context(|| format!("cannot take the inventory of the {} server", client.server()))?;
        Ok(Inventory {
            taken_at: Timestamp::now(),
            api_url: client.base_url().to_owned(),
            server_version: status.version,
            core_version: core,
            projects,
            environments: records,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_credentials_are_dropped() {
        use super::without_credentials as strip;
        assert_eq!(strip("https://user:tok3n@git.example/p.git"), "https://git.example/p.git");
        assert_eq!(strip("file:///var/repos/p.git"), "file:///var/repos/p.git");
        assert_eq!(strip("ssh://git@host:22/p"), "ssh://host:22/p");
        assert_eq!(strip("git@host:p.git"), "git@host:p.git");
    }
}
