//! A small blocking client of the inmanta REST API, for seeding and checking
//! the lab (the product's own client lives elsewhere).
//!
//! Paths, bodies and answers are those of the rehearsal's captures; they are
//! the same on 8.7.6, 11.5.5 and 14.0.0 for everything used here.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::Method;
use reqwest::blocking::Client as HttpClient;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// How the lab reaches a secure server: the only CA to trust and a bearer
/// token. `Default` is a plain server (HTTP, no auth).
#[derive(Clone, Default)]
pub struct Access {
    /// PEM of the CA that signed the server's certificate (trusted alone).
    pub ca_pem: Option<Vec<u8>>,
    /// Sent as `Authorization: Bearer ...`.
    pub token: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Blocking client bound to one server's base URL (`http://127.0.0.1:PORT`,
/// or `https://` for a secure instance).
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: HttpClient,
}

impl Client {
    pub fn new(base: &str) -> Result<Client> {
        Client::with_timeout(base, Duration::from_secs(30))
    }

    /// A client whose requests give up after `timeout`.
    pub fn with_timeout(base: &str, timeout: Duration) -> Result<Client> {
        Client::with_access(base, timeout, &Access::default())
    }

    /// A client of a server that may need a CA and a token.
    pub fn with_access(base: &str, timeout: Duration, access: &Access) -> Result<Client> {
        let mut builder = HttpClient::builder().timeout(timeout).connect_timeout(Duration::from_secs(5));
        if let Some(pem) = &access.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).context("parsing the lab's CA certificate")?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some(token) = &access.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| anyhow::anyhow!("the token cannot go in an HTTP header"))?;
            value.set_sensitive(true);
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client { base: base.trim_end_matches('/').to_string(), http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request; `tid` goes into `X-Inmanta-tid`. Answers >= 400 are
    /// errors. An empty body (halt/resume answer with one) is `Value::Null`.
    pub fn request(&self, method: Method, path: &str, tid: Option<&str>, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(tid) = tid {
            req = req.header("X-Inmanta-tid", tid);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().with_context(|| format!("{method} {url}: reading the body"))?;
        if !status.is_success() {
            bail!("{method} {url}: HTTP {status}: {}", text.trim());
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: not JSON: {text}"))
    }

    pub fn get(&self, path: &str, tid: Option<&str>) -> Result<Value> {
        self.request(Method::GET, path, tid, None)
    }

    pub fn post(&self, path: &str, tid: Option<&str>, body: Option<&Value>) -> Result<Value> {
        self.request(Method::POST, path, tid, body)
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.request(Method::PUT, path, None, Some(body))
    }

    /// `data.version` of `GET /api/v1/serverstatus`.
    pub fn server_version(&self) -> Result<String> {
        let v = self.get("/api/v1/serverstatus", None)?;
        str_at(&v, "/data/version")
    }

    /// `PUT /api/v2/project` -> project id.
    pub fn create_project(&self, name: &str) -> Result<String> {
        let v = self.put("/api/v2/project", &json!({ "name": name }))?;
        str_at(&v, "/data/id")
    }

    /// `PUT /api/v2/environment` -> environment id.
    pub fn create_environment(&self, project_id: &str, name: &str, repository: &str, branch: &str) -> Result<String> {
        let v = self.put(
            "/api/v2/environment",
            &json!({ "project_id": project_id, "name": name, "repository": repository, "branch": branch }),
        )?;
        str_at(&v, "/data/id")
    }

    /// `GET /api/v2/environment` -> `data` (a list).
    pub fn environments(&self) -> Result<Vec<Value>> {
        let v = self.get("/api/v2/environment", None)?;
        Ok(v["data"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /api/v2/environment/<id>` -> `data`.
    pub fn environment(&self, env: &str) -> Result<Value> {
        let v = self.get(&format!("/api/v2/environment/{env}"), None)?;
        Ok(v["data"].clone())
    }

    /// `halted` of one environment.
    pub fn halted(&self, env: &str) -> Result<bool> {
        self.environment(env)?["halted"].as_bool().context("environment without `halted`")
    }

    /// Effective value of a setting (`GET /api/v2/environment_settings/<name>`
    /// also answers the default when the setting was never stored).
    pub fn setting(&self, env: &str, name: &str) -> Result<Value> {
        let v = self.get(&format!("/api/v2/environment_settings/{name}"), Some(env))?;
        Ok(v["data"]["settings"][name].clone())
    }

    pub fn set_setting(&self, env: &str, name: &str, value: &Value) -> Result<()> {
        self.post(&format!("/api/v2/environment_settings/{name}"), Some(env), Some(&json!({ "value": value })))?;
        Ok(())
    }

    /// `POST /api/v1/notify/<env>`: requests a compile, with `update` (git
    /// pull + module update) or not. `message` lands in the compile report's
    /// metadata, to find that compile again (use a unique one).
    pub fn notify(&self, env: &str, message: &str, update: bool) -> Result<()> {
        self.post(
            &format!("/api/v1/notify/{env}"),
            None,
            Some(&json!({ "update": update, "metadata": { "type": "api", "message": message } })),
        )?;
        Ok(())
    }

    /// The outcome of the compile whose metadata message is `message`, once
    /// it completed; `None` while it is queued or running (or not listed yet).
    pub fn compile_outcome(&self, env: &str, message: &str) -> Result<Option<CompileOutcome>> {
        let reports = self.compile_reports(env, 20)?;
        let Some(r) = reports.iter().find(|r| r["metadata"]["message"].as_str() == Some(message)) else {
            return Ok(None);
        };
        if r["completed"].is_null() {
            return Ok(None);
        }
        let id = r["id"].as_str().unwrap_or_default().to_string();
        let success = r["success"].as_bool() == Some(true);
        let mut failure = String::new();
        if !success {
            let details = self.compile_details(env, &id).unwrap_or(Value::Null);
            for step in details["reports"].as_array().into_iter().flatten() {
                if step["returncode"].as_i64().unwrap_or(0) != 0 {
                    let err = step["errstream"].as_str().unwrap_or_default();
                    let lines: Vec<&str> = err.lines().collect();
                    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                    failure.push_str(&format!("step {:?} failed:\n{tail}\n", step["name"].as_str().unwrap_or("?")));
                }
            }
        }
        Ok(Some(CompileOutcome { id, success, version: r["version"].as_i64(), failure }))
    }

    /// Waits for the compile whose metadata message is `message`.
    pub fn wait_compile(&self, env: &str, message: &str, timeout: Duration) -> Result<CompileOutcome> {
        let t0 = Instant::now();
        loop {
            if let Some(o) = self.compile_outcome(env, message)? {
                return Ok(o);
            }
            if t0.elapsed() > timeout {
                bail!("compile {message:?} of {env} not done after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Requests a compile (with a unique message) and waits for it.
    pub fn compile(&self, env: &str, update: bool, timeout: Duration) -> Result<CompileOutcome> {
        let message = format!("lab compile {}", uuid::Uuid::new_v4());
        self.notify(env, &message, update)?;
        self.wait_compile(env, &message, timeout)
    }

    /// Triggers a dry-run of `version` and waits until it is done
    /// (`summary.todo == 0`); returns the report (`summary`, `diff[]`).
    pub fn dryrun_and_wait(&self, env: &str, version: i64, timeout: Duration) -> Result<Value> {
        let id = self.dryrun(env, version)?;
        let t0 = Instant::now();
        loop {
            let report = self.dryrun_report(env, version, &id)?;
            if report["summary"]["todo"].as_i64() == Some(0) {
                return Ok(report);
            }
            if t0.elapsed() > timeout {
                bail!("dry-run {id} of version {version} not done after {timeout:?}: {report}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Newest compile reports first.
    pub fn compile_reports(&self, env: &str, limit: usize) -> Result<Vec<Value>> {
        let v = self.get(&format!("/api/v2/compilereport?limit={limit}&sort=requested.desc"), Some(env))?;
        Ok(v["data"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /api/v2/compilereport/<id>` -> `data` (with `reports[]`).
    pub fn compile_details(&self, env: &str, id: &str) -> Result<Value> {
        Ok(self.get(&format!("/api/v2/compilereport/{id}"), Some(env))?["data"].clone())
    }

    /// `GET /api/v1/version` -> `versions` (newest first).
    pub fn versions(&self, env: &str) -> Result<Vec<Value>> {
        let v = self.get("/api/v1/version", Some(env))?;
        Ok(v["versions"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /api/v2/resource` -> `data`.
    pub fn resources(&self, env: &str) -> Result<Vec<Value>> {
        let v = self.get("/api/v2/resource?limit=1000", Some(env))?;
        Ok(v["data"].as_array().cloned().unwrap_or_default())
    }

    /// Pauses one agent of an environment, as an operator does by hand.
    pub fn pause_agent(&self, env: &str, agent: &str) -> Result<()> {
        self.post(&format!("/api/v2/agent/{agent}/pause"), Some(env), None)?;
        Ok(())
    }

    /// Names of the agents paused by hand (not those a halt paused and a
    /// resume unpauses), sorted.
    pub fn paused_agents(&self, env: &str) -> Result<Vec<String>> {
        let agents = self.get("/api/v2/agents", Some(env))?;
        let mut names: Vec<String> = agents["data"]
            .as_array()
            .context("GET /api/v2/agents: no data list")?
            .iter()
            .filter(|a| a["paused"] == true && a["unpause_on_resume"] != true)
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn halt(&self, env: &str) -> Result<()> {
        self.post("/api/v2/actions/environment/halt", Some(env), None)?;
        Ok(())
    }

    pub fn resume(&self, env: &str) -> Result<()> {
        self.post("/api/v2/actions/environment/resume", Some(env), None)?;
        Ok(())
    }

    /// `POST /api/v1/version/<v>`: release (and push) a version.
    pub fn release(&self, env: &str, version: i64) -> Result<()> {
        self.post(
            &format!("/api/v1/version/{version}"),
            Some(env),
            Some(&json!({ "push": true, "agent_trigger_method": "push_incremental_deploy" })),
        )?;
        Ok(())
    }

    /// `POST /api/v2/dryrun/<v>` -> report id.
    pub fn dryrun(&self, env: &str, version: i64) -> Result<String> {
        let v = self.post(&format!("/api/v2/dryrun/{version}"), Some(env), None)?;
        str_at(&v, "/data")
    }

    /// `GET /api/v2/dryrun/<v>/<id>` -> `data` (`summary`, `diff[]`).
    pub fn dryrun_report(&self, env: &str, version: i64, id: &str) -> Result<Value> {
        Ok(self.get(&format!("/api/v2/dryrun/{version}/{id}"), Some(env))?["data"].clone())
    }
}

/// A completed compile.
#[derive(Clone, Debug)]
pub struct CompileOutcome {
    /// Compile report id.
    pub id: String,
    pub success: bool,
    /// The exported version (successful compiles).
    pub version: Option<i64>,
    /// The tails of the failed steps' error output.
    pub failure: String,
}

fn str_at(v: &Value, pointer: &str) -> Result<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("no string at {pointer} in {v}"))
}
