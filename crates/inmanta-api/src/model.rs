//! The shapes the server answers with, reduced to the fields a migration
//! reads. Unknown fields are ignored so that newer servers still parse;
//! fields missing in older servers are optional.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ServerVersion;

/// `GET /api/v1/serverstatus`, the fields that matter.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The product version (may be the ISO product, not core).
    pub version: String,
    /// `extensions[name == "core"].version`, the version that decides the API.
    pub core_version: ServerVersion,
    /// "OK", "Warning" or "Error" on 15.1+; absent before.
    pub status: Option<String>,
    /// `core.database` slice: is the server connected to its database.
    pub database_connected: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
}

/// `GET /api/v2/environment[/<id>]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Environment {
    pub id: Uuid,
    pub name: String,
    pub project_id: Uuid,
    #[serde(default)]
    pub repo_url: String,
    #[serde(default)]
    pub repo_branch: String,
    pub halted: bool,
    /// Only the settings stored in the database; see [`Settings`] for the
    /// effective values.
    #[serde(default)]
    pub settings: BTreeMap<String, Value>,
    #[serde(default)]
    pub is_marked_for_deletion: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// One setting's definition from `GET /api/v2/environment_settings`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SettingDefinition {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub default: Value,
    /// 15.3+/17+: managed by project.yml and refused by the settings API.
    #[serde(default)]
    pub protected: bool,
}

/// All settings of an environment: what is stored and what is defined.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Settings {
    pub stored: BTreeMap<String, Value>,
    pub definitions: BTreeMap<String, SettingDefinition>,
}

impl Settings {
    /// The value in force: the stored one, else the definition's default.
    pub fn effective(&self, name: &str) -> Option<&Value> {
        self.stored.get(name).or_else(|| self.definitions.get(name).map(|d| &d.default))
    }

    /// Every defined setting with its value in force.
    pub fn all_effective(&self) -> BTreeMap<String, Value> {
        let mut all: BTreeMap<String, Value> =
            self.definitions.iter().map(|(k, d)| (k.clone(), d.default.clone())).collect();
        all.extend(self.stored.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }
}

/// A compile request as the queue and the reports show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompileReport {
    pub id: Uuid,
    #[serde(default)]
    pub requested: Option<String>,
    #[serde(default)]
    pub started: Option<String>,
    #[serde(default)]
    pub completed: Option<String>,
    #[serde(default)]
    pub success: Option<bool>,
    /// The version the export produced; null when nothing was exported.
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub force_update: bool,
    #[serde(default)]
    pub metadata: Value,
}

impl CompileReport {
    pub fn is_done(&self) -> bool {
        self.completed.is_some()
    }

    /// `metadata.message`, where the tool puts its marker.
    pub fn message(&self) -> Option<&str> {
        self.metadata.get("message").and_then(Value::as_str)
    }
}

/// `GET /api/v2/compilereport/<id>`: the report and its stages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompileDetails {
    #[serde(flatten)]
    pub report: CompileReport,
    #[serde(default)]
    pub compile_data: Option<Value>,
    #[serde(default)]
    pub reports: Vec<CompileStage>,
}

impl CompileDetails {
    /// The stages that failed and what they printed, for an operator.
    /// With `auth=true` the server puts an environment token on the
    /// compiler's command line: the stage commands are left out and the rest
    /// goes through [`redact_tokens`].
    pub fn failure_text(&self) -> String {
        let mut out = String::new();
        for stage in self.reports.iter().filter(|s| s.returncode.is_some_and(|rc| rc != 0)) {
            out.push_str(&format!("stage {:?} exited {}:\n", stage.name, stage.returncode.unwrap_or(-1)));
            let text = if stage.errstream.trim().is_empty() { &stage.outstream } else { &stage.errstream };
            out.push_str(&tail(text, 40));
            out.push('\n');
        }
        if let Some(errors) = self.compile_data.as_ref().and_then(|d| d.get("errors")).and_then(Value::as_array) {
            for e in errors {
                let msg = e.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| e.to_string());
                out.push_str(&format!("compile error: {msg}\n"));
            }
        }
        if out.is_empty() { "no failing stage was reported".to_owned() } else { redact_tokens(&out) }
    }
}

/// Masks what looks like a credential in text a server wrote (compile
/// output, log lines): the word after `--token` or `Bearer`, `--token=...`,
/// and anything shaped like a JWT.
pub fn redact_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hide_next = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String, hide_next: &mut bool| {
        if word.is_empty() {
            return;
        }
        let jwt =
            word.trim_matches(|c: char| "\"',;()[]{}".contains(c)).starts_with("eyJ") && word.matches('.').count() >= 2;
        if *hide_next || jwt {
            out.push_str("<redacted>");
        } else if let Some((flag, _)) = word.split_once('=').filter(|(f, _)| *f == "--token") {
            out.push_str(flag);
            out.push_str("=<redacted>");
        } else {
            out.push_str(word);
        }
        *hide_next = matches!(word.as_str(), "--token" | "Bearer" | "bearer");
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut out, &mut hide_next);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out, &mut hide_next);
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompileStage {
    pub name: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub returncode: Option<i64>,
    #[serde(default)]
    pub outstream: String,
    #[serde(default)]
    pub errstream: String,
}

/// `GET /api/v1/version/<v>`: one resource of a version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionedResource {
    /// `std::File[host,path=/x],v=3`: the id with its version.
    #[serde(default)]
    pub resource_version_id: Option<String>,
    /// Without the version (newer servers say it).
    #[serde(default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub attributes: serde_json::Map<String, Value>,
}

impl VersionedResource {
    /// The resource's id without its version.
    pub fn id(&self) -> String {
        let id = self.resource_id.as_deref().or(self.resource_version_id.as_deref()).unwrap_or("?");
        strip_version(id).to_owned()
    }
}

/// `X,v=N` -> `X`: a resource id without the version it is part of.
pub fn strip_version(id: &str) -> &str {
    match id.rfind(",v=") {
        Some(i) if id[i + 3..].bytes().all(|b| b.is_ascii_digit()) => &id[..i],
        _ => id,
    }
}

/// `GET /api/v2/desiredstate`: one version of an environment's model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DesiredState {
    pub version: i64,
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub total: i64,
    /// active, candidate, retired, skipped_candidate
    pub status: String,
    /// 15.1+ only.
    #[serde(default)]
    pub released: Option<bool>,
}

/// `GET /api/v2/dryrun/<version>` entries and the report's summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DryRunSummary {
    pub id: Uuid,
    #[serde(default)]
    pub model: i64,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub todo: i64,
    #[serde(default)]
    pub date: Option<String>,
}

/// `GET /api/v2/dryrun/<version>/<id>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DryRunReport {
    pub summary: DryRunSummary,
    #[serde(default)]
    pub diff: Vec<ResourceDiff>,
}

impl DryRunReport {
    /// Finished: every resource has reported.
    pub fn is_done(&self) -> bool {
        self.summary.todo == 0
    }

    /// The resources that are not `unmodified`. A resource that has not
    /// reported at all counts too, as a difference we could not rule out.
    pub fn differences(&self) -> Vec<&ResourceDiff> {
        self.diff.iter().filter(|d| d.status != "unmodified").collect()
    }

    pub fn missing(&self) -> i64 {
        (self.summary.total - self.diff.len() as i64).max(0)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResourceDiff {
    pub resource_id: String,
    /// added, modified, deleted, unmodified, agent_down, undefined, skipped_for_undefined
    pub status: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeDiff>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttributeDiff {
    #[serde(default)]
    pub from_value: Value,
    #[serde(default)]
    pub to_value: Value,
}

/// `GET /api/v2/agents`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Agent {
    pub name: String,
    pub paused: bool,
    #[serde(default)]
    pub unpause_on_resume: Option<bool>,
    #[serde(default)]
    pub status: Option<String>,
}

/// `metadata.deploy_summary` of `GET /api/v2/resource?deploy_summary=true`:
/// resources of the latest released version by state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeploySummary {
    pub total: i64,
    pub by_state: BTreeMap<String, i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let text = format!(
            "python -m inmanta.app export --token {jwt} -e x\nAuthorization: Bearer abc.def\nx --token=secret y\nsaw '{jwt}'"
        );
        let masked = redact_tokens(&text);
        assert!(!masked.contains(jwt) && !masked.contains("abc.def") && !masked.contains("secret"), "{masked}");
        assert!(masked.contains("--token <redacted> -e x\n") && masked.contains("--token=<redacted>"), "{masked}");
        assert_eq!(redact_tokens("plain words stay, even e.g. v1.2.3"), "plain words stay, even e.g. v1.2.3");
    }
}
