//! The client: one method per call a migration makes, with its retries,
//! timeouts, authentication and TLS.

use std::{collections::BTreeMap, time::Duration};

use reqwest::{
    Method, Url,
    header::{AUTHORIZATION, HeaderValue},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    Agent, CompileDetails, CompileReport, DeploySummary, DesiredState, DryRunReport, Environment, Error, Project,
    Result, ServerStatus, ServerVersion, SettingDefinition, Settings,
};

/// How to reach one server.
#[derive(Clone)]
pub struct ClientOptions {
    /// `http(s)://host:port`, without the `/api` prefix.
    pub base_url: String,
    /// Bearer token, sent as `Authorization: Bearer ...`.
    pub token: Option<String>,
    /// PEM bundle of the only CAs to trust; `None` trusts the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// `false` accepts any certificate. The caller must make that loud.
    pub tls_verify: bool,
    /// Limit for one request.
    pub timeout: Duration,
    /// Extra attempts for an idempotent GET after a transport error or a 5xx.
    pub retries: u32,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("tls_verify", &self.tls_verify)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// A client for one server ("old" or "new", used in every error message).
#[derive(Clone, Debug)]
pub struct Client {
    server: String,
    base: Url,
    http: reqwest::Client,
    auth: Option<HeaderValue>,
    retries: u32,
}

/// One call: method, path, environment header, query and body.
struct Call<'a> {
    method: Method,
    path: String,
    tid: Option<Uuid>,
    query: Vec<(&'a str, String)>,
    body: Option<Value>,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Call { method, path: path.into(), tid: None, query: Vec::new(), body: None }
    }
    fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }
    fn env(mut self, tid: Uuid) -> Self {
        self.tid = Some(tid);
        self
    }
    fn query(mut self, key: &'a str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }
    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    fn describe(&self) -> String {
        match self.tid {
            Some(tid) => format!("{} {} (environment {tid})", self.method, self.path),
            None => format!("{} {}", self.method, self.path),
        }
    }
}

impl Client {
    pub fn new(server: &str, options: ClientOptions) -> Result<Self> {
        let setup = |detail: String| Error::Setup { server: server.to_owned(), detail };
        let base =
            Url::parse(&options.base_url).map_err(|e| setup(format!("bad API URL {:?}: {e}", options.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(setup(format!("API URL {:?} must start with http:// or https://", options.base_url)));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("inmanta-migrate/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &options.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| setup(format!("CA file: {e}")))?;
            if certs.is_empty() {
                return Err(setup("CA file holds no PEM certificate".to_owned()));
            }
            builder = builder.tls_certs_only(certs);
        }
        if !options.tls_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| setup(format!("HTTP client: {e}")))?;
        let auth = match &options.token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| setup("the token contains characters that cannot go in an HTTP header".to_owned()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Client { server: server.to_owned(), base, http, auth, retries: options.retries })
    }

    /// "old" or "new".
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    async fn send(&self, call: &Call<'_>, attempts: u32) -> Result<Value> {
        let url = self.base.join(call.path.trim_start_matches('/')).map_err(|e| Error::Setup {
            server: self.server.clone(),
            detail: format!("bad path {}: {e}", call.path),
        })?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.send_once(call, url.clone()).await;
            let retryable = match &result {
                Err(Error::Unreachable { .. }) => true,
                Err(Error::Status { status, .. }) => *status >= 500,
                _ => false,
            };
            if !retryable || attempt >= attempts {
                return result;
            }
            let pause = Duration::from_millis(500 * (1 << (attempt - 1).min(4)));
            tracing::debug!(server = %self.server, call = %call.describe(), attempt, "retrying after {pause:?}");
            tokio::time::sleep(pause).await;
        }
    }

    async fn send_once(&self, call: &Call<'_>, url: Url) -> Result<Value> {
        let mut request = self.http.request(call.method.clone(), url);
        if let Some(tid) = call.tid {
            request = request.header("X-Inmanta-tid", tid.to_string());
        }
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let describe = || call.describe();
        let response = request.send().await.map_err(|e| {
            let (server, call, detail) = (self.server.clone(), describe(), transport_detail(&e));
            if is_tls_failure(&e) {
                Error::Tls { server, call, detail }
            } else {
                Error::Unreachable { server, call, detail, refused: is_refused(&e) }
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| Error::Unreachable {
            server: self.server.clone(),
            call: describe(),
            detail: transport_detail(&e),
            refused: false,
        })?;
        let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) if !status.is_success() => {
                    Value::String(String::from_utf8_lossy(&bytes).chars().take(500).collect())
                }
                Err(e) => {
                    return Err(Error::Decode {
                        server: self.server.clone(),
                        call: describe(),
                        detail: format!("not JSON: {e}"),
                    });
                }
            }
        };
        if !status.is_success() {
            let message = match &body {
                Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_owned),
                Value::String(s) => Some(s.clone()),
                _ => None,
            }
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned());
            return Err(Error::Status {
                server: self.server.clone(),
                call: describe(),
                status: status.as_u16(),
                message,
            });
        }
        Ok(body)
    }

    async fn get<T: DeserializeOwned>(&self, call: Call<'_>, pointer: &str) -> Result<T> {
        let body = self.send(&call, 1 + self.retries).await?;
        self.decode(&call, body, pointer)
    }

    /// Sends a call that changes something: never retried.
    async fn post(&self, call: &Call<'_>) -> Result<Value> {
        let what = format!("{} {}", self.server, call.describe());
        failpoint::before(failpoint::Area::Api, &what);
        let result = self.send(call, 1).await;
        failpoint::after(failpoint::Area::Api, &what);
        result
    }

    fn decode<T: DeserializeOwned>(&self, call: &Call<'_>, body: Value, pointer: &str) -> Result<T> {
        let value = if pointer.is_empty() { body } else { body.pointer(pointer).cloned().unwrap_or(Value::Null) };
        serde_json::from_value(value).map_err(|e| Error::Decode {
            server: self.server.clone(),
            call: call.describe(),
            detail: format!("{pointer}: {e}"),
        })
    }

    // ---- server ----------------------------------------------------------

    /// `GET /api/v1/serverstatus`. Every supported version has it.
    pub async fn server_status(&self) -> Result<ServerStatus> {
        let call = Call::get("/api/v1/serverstatus");
        let data: Value = self.get(call, "/data").await?;
        self.parse_status(data)
    }

    /// One `serverstatus` attempt without retries: `Ok(None)` when the
    /// connection is refused (the server is stopped, or still migrating its
    /// schema). A timeout is an error: it proves nothing.
    pub async fn probe(&self) -> Result<Option<ServerStatus>> {
        let call = Call::get("/api/v1/serverstatus");
        match self.send(&call, 1).await {
            Ok(body) => self.parse_status(body.get("data").cloned().unwrap_or(Value::Null)).map(Some),
            Err(e) if e.is_refused() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn parse_status(&self, data: Value) -> Result<ServerStatus> {
        let bad = |detail: &str| Error::Decode {
            server: self.server.clone(),
            call: "GET /api/v1/serverstatus".to_owned(),
            detail: detail.to_owned(),
        };
        let version = data.get("version").and_then(Value::as_str).ok_or_else(|| bad("no data.version"))?.to_owned();
        let core = data
            .get("extensions")
            .and_then(Value::as_array)
            .and_then(|exts| exts.iter().find(|e| e.get("name").and_then(Value::as_str) == Some("core")))
            .and_then(|e| e.get("version"))
            .and_then(Value::as_str)
            .unwrap_or(&version);
        let core_version = core.parse().map_err(|e: String| bad(&e))?;
        let database_connected = data
            .get("slices")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().find(|s| s.get("name").and_then(Value::as_str) == Some("core.database")))
            .and_then(|s| s.pointer("/status/connected"))
            .and_then(Value::as_bool);
        let status = data.get("status").and_then(Value::as_str).map(str::to_owned);
        Ok(ServerStatus { version, core_version, status, database_connected })
    }

    /// `GET /api/v2/health` (15.2+/16+): `true` on 200. Older servers answer
    /// 404; callers decide by [`ServerVersion::has_health_endpoint`].
    pub async fn healthy(&self) -> Result<bool> {
        match self.send(&Call::get("/api/v2/health"), 1).await {
            Ok(_) => Ok(true),
            Err(e) if e.status().is_some_and(|s| s != 404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- projects and environments ---------------------------------------

    pub async fn projects(&self) -> Result<Vec<Project>> {
        self.get(Call::get("/api/v2/project"), "/data").await
    }

    pub async fn environments(&self) -> Result<Vec<Environment>> {
        self.get(Call::get("/api/v2/environment"), "/data").await
    }

    pub async fn environment(&self, env: Uuid) -> Result<Environment> {
        self.get(Call::get(format!("/api/v2/environment/{env}")), "/data").await
    }

    /// Halts an environment; halting a halted one is accepted.
    pub async fn halt(&self, env: Uuid) -> Result<()> {
        self.post(&Call::post("/api/v2/actions/environment/halt").env(env)).await.map(drop)
    }

    /// Resumes an environment; resuming a running one is accepted.
    pub async fn resume(&self, env: Uuid) -> Result<()> {
        self.post(&Call::post("/api/v2/actions/environment/resume").env(env)).await.map(drop)
    }

    // ---- settings ----------------------------------------------------------

    /// Stored settings and definitions. Unlike "get one setting", listing
    /// writes no default into the database.
    pub async fn settings(&self, env: Uuid) -> Result<Settings> {
        let call = Call::get("/api/v2/environment_settings").env(env);
        let body = self.send(&call, 1 + self.retries).await?;
        let stored = self.decode(&call, body.clone(), "/data/settings")?;
        let definitions: BTreeMap<String, SettingDefinition> = self.decode(&call, body, "/data/definition")?;
        Ok(Settings { stored, definitions })
    }

    /// Sets one setting; returns the server's warnings.
    pub async fn set_setting(&self, env: Uuid, name: &str, value: Value) -> Result<Vec<String>> {
        let call = Call::post(format!("/api/v2/environment_settings/{name}")).env(env).body(json!({ "value": value }));
        let body = self.post(&call).await?;
        Ok(warnings(&body))
    }

    // ---- compiles -----------------------------------------------------------

    /// "Update project & recompile": `POST /api/v1/notify/<env>` with
    /// `update=true`. The answer holds no compile id, so `marker` goes into
    /// `metadata.message` to find the compile later. Returns warnings (for
    /// example when `server_compile` is off).
    pub async fn update_and_recompile(&self, env: Uuid, marker: &str) -> Result<Vec<String>> {
        let call = Call::post(format!("/api/v1/notify/{env}"))
            .body(json!({ "update": true, "metadata": { "type": "api", "message": marker } }));
        let body = self.post(&call).await?;
        Ok(warnings(&body))
    }

    /// Compiles queued or running: empty means nothing will still export.
    pub async fn compile_queue(&self, env: Uuid) -> Result<Vec<CompileReport>> {
        self.get(Call::get("/api/v1/compilequeue").env(env), "/queue").await
    }

    /// The newest compile reports, newest first.
    pub async fn compile_reports(&self, env: Uuid, limit: u32) -> Result<Vec<CompileReport>> {
        let call = Call::get("/api/v2/compilereport").env(env).query("limit", limit).query("sort", "requested.desc");
        self.get(call, "/data").await
    }

    /// The compile whose message is `marker` (see
    /// [`Self::update_and_recompile`]), among the newest hundred.
    pub async fn compile_with_marker(&self, env: Uuid, marker: &str) -> Result<Option<CompileReport>> {
        let reports = self.compile_reports(env, 100).await?;
        Ok(reports.into_iter().find(|r| r.message() == Some(marker)))
    }

    pub async fn compile_details(&self, env: Uuid, compile: Uuid) -> Result<CompileDetails> {
        self.get(Call::get(format!("/api/v2/compilereport/{compile}")).env(env), "/data").await
    }

    // ---- versions -------------------------------------------------------------

    /// The newest version of the model, released or not.
    pub async fn latest_version(&self, env: Uuid) -> Result<Option<DesiredState>> {
        let call = Call::get("/api/v2/desiredstate").env(env).query("limit", 1).query("sort", "version.desc");
        let versions: Vec<DesiredState> = self.get(call, "/data").await?;
        Ok(versions.into_iter().next())
    }

    /// The newest released version. Up to 15.0 that is the `active` one;
    /// from 15.1 versions carry a `released` flag (and `active` means
    /// "processed by the scheduler").
    pub async fn latest_released_version(&self, env: Uuid, server: ServerVersion) -> Result<Option<DesiredState>> {
        let call = Call::get("/api/v2/desiredstate").env(env).query("limit", 1).query("sort", "version.desc");
        let call = if server.has_released_flag() {
            call.query("filter.released", true)
        } else {
            call.query("filter.status", "active")
        };
        let versions: Vec<DesiredState> = self.get(call, "/data").await?;
        Ok(versions.into_iter().next())
    }

    /// The resources of one version with their attributes: its desired
    /// state, read on the server (`GET /api/v1/version/<v>`, 8.x to 20.x).
    pub async fn version_resources(&self, env: Uuid, version: i64) -> Result<Vec<crate::VersionedResource>> {
        let call = Call::get(format!("/api/v1/version/{version}")).env(env).query("include_logs", false);
        self.get(call, "/resources").await
    }

    /// Releases a version and pushes it to the agents
    /// (`POST /api/v1/version/<v>`, the same on 8.x to 20.x).
    pub async fn release(&self, env: Uuid, version: i64) -> Result<()> {
        let call = Call::post(format!("/api/v1/version/{version}"))
            .env(env)
            .body(json!({ "push": true, "agent_trigger_method": "push_incremental_deploy" }));
        self.post(&call).await.map(drop)
    }

    /// Asks the agents to deploy the released version again, every resource
    /// (`POST /api/v1/deploy`, `push_full_deploy`).
    pub async fn deploy(&self, env: Uuid, agents: &[&str]) -> Result<()> {
        let body = json!({ "agent_trigger_method": "push_full_deploy", "agents": agents });
        let call = Call::post("/api/v1/deploy").env(env).body(body);
        self.post(&call).await.map(drop)
    }

    // ---- dry-runs ---------------------------------------------------------------

    /// Requests a dry-run of `version`; returns its id.
    pub async fn dryrun(&self, env: Uuid, version: i64) -> Result<Uuid> {
        let call = Call::post(format!("/api/v2/dryrun/{version}")).env(env);
        let body = self.post(&call).await?;
        self.decode(&call, body, "/data")
    }

    pub async fn dryrun_report(&self, env: Uuid, version: i64, id: Uuid) -> Result<DryRunReport> {
        self.get(Call::get(format!("/api/v2/dryrun/{version}/{id}")).env(env), "/data").await
    }

    // ---- agents and resources ---------------------------------------------------

    pub async fn agents(&self, env: Uuid) -> Result<Vec<Agent>> {
        self.get(Call::get("/api/v2/agents").env(env).query("limit", 1000), "/data").await
    }

    /// Resources of the latest released version counted by deploy state.
    pub async fn deploy_summary(&self, env: Uuid) -> Result<DeploySummary> {
        let call = Call::get("/api/v2/resource").env(env).query("deploy_summary", true).query("limit", 1);
        self.get(call, "/metadata/deploy_summary").await
    }
}

fn warnings(body: &Value) -> Vec<String> {
    body.pointer("/metadata/warnings")
        .and_then(Value::as_array)
        .map(|w| w.iter().map(|w| w.as_str().map(str::to_owned).unwrap_or_else(|| w.to_string())).collect())
        .unwrap_or_default()
}

/// Whether a rustls error is in the error's chain: the TLS handshake failed,
/// so something answered. rustls errors hide inside (nested) `io::Error`s,
/// whose `source()` skips them: those are opened with `get_ref`.
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && is_tls_failure(inner)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Whether the connection was refused (ECONNREFUSED somewhere in the chain).
fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
            if let Some(inner) = io.get_ref()
                && is_refused(inner)
            {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// The useful part of a transport error: its innermost cause
/// ("Connection refused", "operation timed out", a TLS reason).
/// The outer layers ("error sending request for url (...)", "client error
/// (Connect)") repeat what the message already says.
fn transport_detail(error: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    let detail = innermost.to_string();
    if error.is_timeout() && !detail.contains("timed out") { format!("timed out ({detail})") } else { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_are_found_inside_nested_io_errors() {
        use std::io::{Error as IoError, ErrorKind};
        let certificate = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // As hyper-rustls hands it over: io::Error(Other, io::Error(InvalidData, rustls::Error)).
        let nested = IoError::other(IoError::new(ErrorKind::InvalidData, certificate));
        assert!(is_tls_failure(&nested));
        assert!(!is_tls_failure(&IoError::new(ErrorKind::ConnectionRefused, "connection refused")));
        assert!(!is_tls_failure(&IoError::other(IoError::new(ErrorKind::TimedOut, "timed out"))));
    }
}
