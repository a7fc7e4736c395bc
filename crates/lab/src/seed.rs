//! Seeding the OLD server with environments whose variety a migration must
//! keep, and checking that it is there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::Client;
use crate::timing::Timings;

/// What kind of environment a seeded environment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvRole {
    /// Defaults, deployed, running.
    Plain,
    /// Deployed, then halted (the last seeding step).
    Halted,
    /// `auto_deploy` off: released versions, then a newer unreleased candidate.
    ManualDeploy,
    /// Non-default settings of two kinds (an int and a string).
    Tuned,
    /// 15.3+: its project.yml sets and protects `auto_deploy: true`
    /// (`environment_settings`), so the API cannot turn it off.
    Protected,
    /// 15+: its agent `internal` paused by hand after its deploys.
    PausedAgent,
}

impl EnvRole {
    /// Whether the environment's project.yml protects `auto_deploy`.
    pub fn protects_auto_deploy(self) -> bool {
        self == EnvRole::Protected
    }
}

/// The agent the lab's resources use (std::testing::NullResource's default).
pub const AGENT: &str = "internal";

/// One seeded environment and what it looked like before any migration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeededEnv {
    pub id: String,
    pub name: String,
    pub role: EnvRole,
    /// Halted before the migration.
    pub halted: bool,
    /// Effective `auto_deploy` before the migration.
    pub auto_deploy: bool,
    /// Settings the lab set to non-default values.
    pub settings: BTreeMap<String, Value>,
    /// Released model versions, ascending.
    pub released_versions: Vec<i64>,
    /// Compiled but unreleased versions, ascending (the ManualDeploy env's candidate).
    pub unreleased_versions: Vec<i64>,
    /// Resource ids of the latest released version, sorted.
    pub resources: Vec<String>,
    /// Agents paused by hand (a halt's pause excluded), sorted.
    #[serde(default)]
    pub paused_agents: Vec<String>,
}

impl SeededEnv {
    pub fn latest_released(&self) -> Option<i64> {
        self.released_versions.iter().copied().max()
    }
}

/// The non-default settings of the Tuned environment.
pub(crate) fn tuned_settings() -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("resource_action_logs_retention".to_string(), json!(30)),
        ("autostart_agent_deploy_interval".to_string(), json!("300")),
    ])
}

/// Names and roles of `n` environments on inmanta-core `version`: every
/// kind of variety from n = 4 on, and on 15.3+ also the two that only
/// those servers have (a protected setting, an agent paused by hand).
pub(crate) fn plan(n: usize, version: &str) -> Vec<(String, EnvRole)> {
    let mut plan: Vec<(String, EnvRole)> = (0..n)
        .map(|i| match i {
            0 => ("plain".to_string(), EnvRole::Plain),
            1 => ("halted".to_string(), EnvRole::Halted),
            2 => ("manual".to_string(), EnvRole::ManualDeploy),
            3 => ("tuned".to_string(), EnvRole::Tuned),
            _ => (format!("plain-{}", i + 1), EnvRole::Plain),
        })
        .collect();
    if has_protected_settings(version) {
        plan.push(("protected".to_string(), EnvRole::Protected));
        plan.push(("paused".to_string(), EnvRole::PausedAgent));
    }
    plan
}

/// `environment_settings` in project.yml exist from 15.3 (PR #9355).
fn has_protected_settings(version: &str) -> bool {
    crate::major_minor(version) >= (15, 3)
}

pub(crate) const PROJECT_NAME: &str = "lab";
/// Compiles the seed runs at the same time.
const SEED_COMPILES_AT_ONCE: usize = 4;
const COMPILE_TIMEOUT: Duration = Duration::from_secs(600);
pub(crate) const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

/// Waits for the compiles whose metadata message is `message` in each of
/// `envs` (id, name); returns the exported version per env id.
fn wait_compiles(api: &Client, envs: &[(String, String)], message: &str) -> Result<BTreeMap<String, i64>> {
    let t0 = Instant::now();
    let mut done = BTreeMap::new();
    loop {
        for (id, name) in envs {
            if done.contains_key(id) {
                continue;
            }
            let Some(o) = api.compile_outcome(id, message)? else {
                continue;
            };
            if !o.success {
                bail!("compile {message:?} of environment {name} ({id}) failed (report {}):\n{}", o.id, o.failure);
            }
            let version = o.version.with_context(|| format!("compile report {} without version", o.id))?;
            done.insert(id.clone(), version);
        }
        if done.len() == envs.len() {
            return Ok(done);
        }
        if t0.elapsed() > COMPILE_TIMEOUT {
            bail!("compiles {message:?} not done after {COMPILE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Released and unreleased versions (ascending) of an environment.
fn versions(api: &Client, env: &str) -> Result<(Vec<i64>, Vec<i64>)> {
    let mut released = Vec::new();
    let mut unreleased = Vec::new();
    for v in api.versions(env)? {
        let n = v["version"].as_i64().context("version without number")?;
        if v["released"].as_bool() == Some(true) {
            released.push(n);
        } else {
            unreleased.push(n);
        }
    }
    released.sort();
    unreleased.sort();
    Ok((released, unreleased))
}

/// Resource ids whose status is not yet "deployed" in the latest released
/// version, or an explanation; `Ok(ids)` when all are deployed.
fn deployed_resources(api: &Client, env: &str) -> Result<std::result::Result<Vec<String>, String>> {
    let (released, _) = versions(api, env)?;
    let Some(latest) = released.last() else {
        return Ok(Err("no released version".into()));
    };
    let resources = api.resources(env)?;
    if resources.is_empty() {
        return Ok(Err("no resources".into()));
    }
    let suffix = format!(",v={latest}");
    let mut ids = Vec::new();
    let mut not_yet = Vec::new();
    for r in &resources {
        let id = r["resource_id"].as_str().unwrap_or_default().to_string();
        let rvid = r["resource_version_id"].as_str().unwrap_or_default();
        let status = r["status"].as_str().unwrap_or_default();
        if status != "deployed" || !rvid.ends_with(&suffix) {
            not_yet.push(format!("{rvid}: {status}"));
        }
        ids.push(id);
    }
    if not_yet.is_empty() {
        ids.sort();
        Ok(Ok(ids))
    } else {
        Ok(Err(not_yet.join(", ")))
    }
}

/// Waits until every resource of each env's latest released version is deployed.
pub(crate) fn wait_deployed(
    api: &Client,
    envs: &[(String, String)],
    timeout: Duration,
) -> Result<BTreeMap<String, Vec<String>>> {
    let t0 = Instant::now();
    let mut done = BTreeMap::new();
    loop {
        let mut last = String::new();
        for (id, name) in envs {
            if done.contains_key(id) {
                continue;
            }
            match deployed_resources(api, id)? {
                Ok(ids) => {
                    done.insert(id.clone(), ids);
                }
                Err(why) => last = format!("{name}: {why}"),
            }
        }
        if done.len() == envs.len() {
            return Ok(done);
        }
        if t0.elapsed() > timeout {
            bail!("resources not deployed after {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reads what an environment looks like now.
pub(crate) fn observe(
    api: &Client,
    id: &str,
    name: &str,
    role: EnvRole,
    settings: &BTreeMap<String, Value>,
) -> Result<SeededEnv> {
    let halted = api.halted(id)?;
    let auto_deploy = api.setting(id, "auto_deploy")?.as_bool().context("auto_deploy is not a bool")?;
    let mut seen = BTreeMap::new();
    for name in settings.keys() {
        seen.insert(name.clone(), api.setting(id, name)?);
    }
    let (released_versions, unreleased_versions) = versions(api, id)?;
    let paused_agents = api.paused_agents(id)?;
    let mut resources: Vec<String> =
        api.resources(id)?.iter().filter_map(|r| r["resource_id"].as_str().map(str::to_string)).collect();
    resources.sort();
    Ok(SeededEnv {
        id: id.to_string(),
        name: name.to_string(),
        role,
        halted,
        auto_deploy,
        settings: seen,
        released_versions,
        unreleased_versions,
        resources,
        paused_agents,
    })
}

/// Checks that the recorded environments have the variety their roles promise.
pub(crate) fn check_variety(envs: &[SeededEnv]) -> Result<()> {
    for e in envs {
        let ctx = || format!("seeded environment {} ({:?})", e.name, e.role);
        ensure!(e.released_versions.len() >= 2, "{}: fewer than 2 released versions: {:?}", ctx(), e.released_versions);
        ensure!(e.resources.len() >= 2, "{}: fewer than 2 resources", ctx());
        match e.role {
            EnvRole::Halted => ensure!(e.halted, "{}: not halted", ctx()),
            EnvRole::ManualDeploy => {
                ensure!(!e.halted && !e.auto_deploy, "{}: auto_deploy should be off", ctx());
                let newest_released = e.latest_released().unwrap_or(0);
                ensure!(
                    e.unreleased_versions.iter().any(|v| *v > newest_released),
                    "{}: no unreleased version newer than {newest_released}",
                    ctx()
                );
            }
            EnvRole::Tuned => {
                ensure!(!e.halted && e.auto_deploy, "{}: should run with auto_deploy", ctx());
                ensure!(e.settings == tuned_settings(), "{}: settings {:?}", ctx(), e.settings);
            }
            EnvRole::Plain | EnvRole::Protected => {
                ensure!(!e.halted && e.auto_deploy, "{}: should run with auto_deploy", ctx())
            }
            EnvRole::PausedAgent => {
                ensure!(!e.halted && e.auto_deploy, "{}: should run with auto_deploy", ctx());
                ensure!(e.paused_agents == [AGENT], "{}: paused agents {:?}", ctx(), e.paused_agents);
            }
        }
        if e.role != EnvRole::PausedAgent {
            ensure!(e.paused_agents.is_empty(), "{}: agents paused by hand: {:?}", ctx(), e.paused_agents);
        }
    }
    Ok(())
}

/// Creates the project and the environments and brings them into their
/// seeded state. `repo_url(name)` is the repository of environment `name`.
pub(crate) fn seed(
    api: &Client,
    plan: &[(String, EnvRole)],
    repo_url: impl Fn(&str) -> String,
    timings: &mut Timings,
) -> Result<(String, Vec<SeededEnv>)> {
    let t0 = Instant::now();
    let n = plan.len();
    let project = api.create_project(PROJECT_NAME)?;
    let mut envs: Vec<(String, String, EnvRole)> = Vec::new();
    for (name, role) in plan {
        let id = api.create_environment(&project, name, &repo_url(name), "main")?;
        if *role == EnvRole::Tuned {
            for (k, v) in tuned_settings() {
                api.set_setting(&id, &k, &v)?;
            }
        }
        envs.push((id, name.clone(), *role));
    }
    timings.add("project + environments", t0.elapsed());
    let all: Vec<(String, String)> = envs.iter().map(|(i, n, _)| (i.clone(), n.clone())).collect();

    // Two released versions everywhere (auto_deploy is on by default). The
    // first compile clones and installs the project; the second one skips the
    // update (git pull + pip upgrade of every module: slow and not needed).
    // A few at a time: twenty first compiles at once (each a venv and pip)
    // starve the server on two cores until its API times out.
    for round in 1..=2 {
        let message = format!("lab seed compile {round}");
        let t = Instant::now();
        for batch in all.chunks(SEED_COMPILES_AT_ONCE) {
            for (id, _) in batch {
                api.notify(id, &message, round == 1)?;
            }
            wait_compiles(api, batch, &message)?;
        }
        timings.add(&format!("compiles round {round} ({n} envs)"), t.elapsed());
    }
    timings.time("deploy wait", || wait_deployed(api, &all, DEPLOY_TIMEOUT))?;

    // The ManualDeploy env: auto_deploy off, then a newer unreleased candidate.
    let t = Instant::now();
    let manual: Vec<(String, String)> =
        envs.iter().filter(|(_, _, r)| *r == EnvRole::ManualDeploy).map(|(i, n, _)| (i.clone(), n.clone())).collect();
    if !manual.is_empty() {
        let message = "lab seed candidate (auto_deploy off)";
        for (id, _) in &manual {
            api.set_setting(id, "auto_deploy", &json!(false))?;
            api.notify(id, message, false)?;
        }
        wait_compiles(api, &manual, message)?;
        timings.add("candidate compile (auto_deploy off)", t.elapsed());
    }

    // Pause and halt last, after the resources are deployed.
    for (id, _, role) in &envs {
        match role {
            EnvRole::Halted => api.halt(id)?,
            EnvRole::PausedAgent => api.pause_agent(id, AGENT)?,
            _ => {}
        }
    }

    let mut seeded = Vec::new();
    for (id, name, role) in &envs {
        let settings = if *role == EnvRole::Tuned { tuned_settings() } else { BTreeMap::new() };
        seeded.push(observe(api, id, name, *role, &settings)?);
    }
    check_variety(&seeded)?;
    Ok((project, seeded))
}

/// Checks that a server holds exactly the recorded environments (after a
/// template restore): waits for deploys first, as agents may redeploy.
pub(crate) fn verify(api: &Client, expected: &[SeededEnv], timings: &mut Timings) -> Result<()> {
    let listed: BTreeSet<String> =
        api.environments()?.iter().filter_map(|e| e["id"].as_str().map(str::to_string)).collect();
    let want: BTreeSet<String> = expected.iter().map(|e| e.id.clone()).collect();
    ensure!(listed == want, "the server lists environments {listed:?}, expected {want:?}");
    let all: Vec<(String, String)> = expected.iter().map(|e| (e.id.clone(), e.name.clone())).collect();
    timings.time("verify (deploy wait)", || wait_deployed(api, &all, DEPLOY_TIMEOUT))?;
    for e in expected {
        let seen = observe(api, &e.id, &e.name, e.role, &e.settings)?;
        if &seen != e {
            bail!(
                "environment {} differs from its seeded state:\n  expected {}\n  found    {}",
                e.name,
                serde_json::to_string(e)?,
                serde_json::to_string(&seen)?
            );
        }
    }
    check_variety(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(role: EnvRole) -> SeededEnv {
        SeededEnv {
            id: "i".into(),
            name: "n".into(),
            role,
            halted: role == EnvRole::Halted,
            auto_deploy: role != EnvRole::ManualDeploy,
            settings: if role == EnvRole::Tuned { tuned_settings() } else { BTreeMap::new() },
            released_versions: vec![1, 2],
            unreleased_versions: if role == EnvRole::ManualDeploy { vec![3] } else { vec![] },
            resources: vec!["a".into(), "b".into()],
            paused_agents: if role == EnvRole::PausedAgent { vec![AGENT.into()] } else { vec![] },
        }
    }

    #[test]
    fn plan_covers_every_role_from_four_envs() {
        let roles: Vec<EnvRole> = plan(4, "14.0.0").into_iter().map(|(_, r)| r).collect();
        assert_eq!(roles, [EnvRole::Plain, EnvRole::Halted, EnvRole::ManualDeploy, EnvRole::Tuned]);
        let names: Vec<String> = plan(6, "8.7.6").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[4], "plain-5");
        assert_eq!(names.len(), names.iter().collect::<BTreeSet<_>>().len());
        let roles: Vec<EnvRole> = plan(4, "15.5.9").into_iter().map(|(_, r)| r).collect();
        assert_eq!(roles[4..], [EnvRole::Protected, EnvRole::PausedAgent], "what only 15.3+ has");
        assert_eq!(plan(4, "15.2.0").len(), 4);
    }

    #[test]
    fn variety_checks() {
        let good: Vec<SeededEnv> = [
            EnvRole::Plain,
            EnvRole::Halted,
            EnvRole::ManualDeploy,
            EnvRole::Tuned,
            EnvRole::Protected,
            EnvRole::PausedAgent,
        ]
        .into_iter()
        .map(env)
        .collect();
        check_variety(&good).unwrap();
        let mut bad = env(EnvRole::PausedAgent);
        bad.paused_agents = vec![];
        assert!(check_variety(&[bad]).is_err());
        let mut bad = env(EnvRole::Plain);
        bad.paused_agents = vec![AGENT.into()];
        assert!(check_variety(&[bad]).is_err());
        let mut bad = env(EnvRole::ManualDeploy);
        bad.unreleased_versions = vec![];
        assert!(check_variety(&[bad]).is_err());
        let mut bad = env(EnvRole::Halted);
        bad.halted = false;
        assert!(check_variety(&[bad]).is_err());
        let mut bad = env(EnvRole::Plain);
        bad.released_versions = vec![1];
        assert!(check_variety(&[bad]).is_err());
    }
}
