//! The routes, answered from the in-memory state.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State as AxState,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use camino::Utf8PathBuf;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Compile, DryRun, Fault, Flavor, Model, Recorded, State};

type Shared = Arc<Mutex<State>>;

/// Serves until the process ends, closing and reopening the port as the
/// control files say.
pub async fn serve(listener: std::net::TcpListener, state: Shared, control: Utf8PathBuf) {
    let addr = listener.local_addr().expect("an address");
    listener.set_nonblocking(true).expect("non-blocking");
    let mut listener = Some(listener);
    loop {
        let std_listener = match listener.take() {
            Some(l) => l,
            None => loop {
                if control.join("start").exists() {
                    let _ = std::fs::remove_file(control.join("start"));
                    let l = std::net::TcpListener::bind(addr).expect("the same port again");
                    l.set_nonblocking(true).expect("non-blocking");
                    let _ = std::fs::remove_file(control.join("stopped"));
                    break l;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            },
        };
        let app = Router::new().fallback(handle).with_state(state.clone());
        let tokio_listener = tokio::net::TcpListener::from_std(std_listener).expect("a tokio listener");
        let server = tokio::spawn(async move { axum::serve(tokio_listener, app).await });
        while !control.join("stop").exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_file(control.join("stop"));
        server.abort();
        let _ = server.await;
        std::fs::write(control.join("stopped"), "").expect("the control dir");
    }
}

fn error(status: u16, message: &str) -> (u16, Value) {
    (status, json!({ "message": message }))
}

fn not_found(what: &str) -> (u16, Value) {
    error(404, &format!("Request or referenced resource does not exist: {what}"))
}

async fn handle(
    AxState(state): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let tid = headers.get("x-inmanta-tid").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);

    let hang = {
        let mut s = state.lock().unwrap();
        let mut fault_answer = None;
        let mut hang = false;
        for fault in s.faults.iter_mut() {
            match fault {
                Fault::Status { prefix, status, times } if path.starts_with(prefix.as_str()) && *times > 0 => {
                    *times -= 1;
                    fault_answer = Some(*status);
                    break;
                }
                Fault::Hang { prefix } if path.starts_with(prefix.as_str()) => hang = true,
                _ => {}
            }
        }
        let (status, answer) = if let Some(status) = fault_answer {
            error(status, "injected fault")
        } else if hang {
            (0, Value::Null)
        } else if let Some(token) = &s.token
            && path != "/api/v2/health"
            && auth.as_deref() != Some(&format!("Bearer {token}"))
        {
            error(401, "Access to this resource is unauthorized")
        } else {
            route(&mut s, &method, &path, &query, tid.as_deref(), &body)
        };
        let shown_query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"))
        };
        let recorded = Recorded {
            method: method.to_string(),
            path: s.redact(&format!("{path}{shown_query}")),
            tid: tid.as_deref().map(|t| s.redact(t)),
            authorization: auth
                .as_ref()
                .map(|a| if a.starts_with("Bearer ") { "Bearer <redacted>".into() } else { "<redacted>".into() }),
            body: serde_json::from_str(&s.redact(&body.to_string())).unwrap_or(Value::Null),
            status,
        };
        s.requests.push(recorded);
        if hang { None } else { Some((status, answer)) }
    };
    let Some((status, answer)) = hang else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if answer.is_null() {
        status.into_response()
    } else {
        (status, [("content-type", "application/json")], answer.to_string()).into_response()
    }
}

/// A JWT-shaped compiler token, as a server with auth puts in compile reports.
pub const FAKE_COMPILER_TOKEN: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJ1cm46aW5tYW50YTpjdCI6ImNvbXBpbGVyIn0.ZmFrZS1zaWduYXR1cmU";

fn time(flavor: Flavor) -> &'static str {
    if flavor == Flavor::V8 { "2026-11-25T16:35:24.098842" } else { "2026-11-25T16:35:24.098842+00:00" }
}

fn route(
    s: &mut State,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    tid: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let env_scoped = |s: &State| -> Result<Uuid, (u16, Value)> {
        let Some(tid) = tid else { return Err(error(400, "Invalid request: Field 'tid' is required.")) };
        let id = tid.parse::<Uuid>().map_err(|_| error(400, "Invalid request: bad tid"))?;
        if s.envs.iter().any(|e| e.id == id) {
            Ok(id)
        } else {
            Err(not_found("The given environment id does not exist!"))
        }
    };
    macro_rules! env_id {
        () => {
            match env_scoped(s) {
                Ok(id) => id,
                Err(e) => return e,
            }
        };
    }
    let flavor = s.flavor;
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["api", "v1", "serverstatus"]) => {
            let v = flavor.version();
            let mut data = json!({
                "product": "Inmanta Service Orchestrator", "edition": "Open Source Edition", "version": v,
                "license": "Apache Software License 2", "extensions": [{"name": "core", "version": v, "package": "core"}],
                "slices": [{"name": "core.database", "status": {"connected": true, "database": "inmanta"}}], "features": [],
            });
            if flavor == Flavor::V19 {
                data["status"] = json!("OK");
            }
            (200, json!({ "data": data }))
        }
        ("GET", ["api", "v2", "health"]) if flavor == Flavor::V19 => (200, json!({ "data": null })),
        ("GET", ["api", "v2", "project"]) => {
            let envs: Vec<Value> = s.envs.iter().map(env_json).collect();
            (200, json!({ "data": [{ "id": s.project.0, "name": s.project.1, "environments": envs }] }))
        }
        ("GET", ["api", "v2", "environment"]) => {
            (200, json!({ "data": s.envs.iter().map(env_json).collect::<Vec<_>>() }))
        }
        ("GET", ["api", "v2", "environment", id]) => match s.envs.iter().find(|e| e.id.to_string() == *id) {
            Some(e) => (200, json!({ "data": env_json(e) })),
            None => not_found("The environment id does not exist."),
        },
        ("POST", ["api", "v2", "actions", "environment", action @ ("halt" | "resume")]) => {
            let id = env_id!();
            let halt = *action == "halt";
            let recovery = flavor == Flavor::V19 && !halt;
            let recovery_id = s.new_id();
            let env = s.env_mut(id).expect("checked");
            if halt && !env.halted {
                for a in &mut env.agents {
                    a.unpause_on_resume = Some(!a.paused);
                    a.paused = true;
                }
            } else if !halt && env.halted {
                for a in &mut env.agents {
                    if a.unpause_on_resume == Some(true) {
                        a.paused = false;
                    }
                    a.unpause_on_resume = None;
                }
                let polls = env.compile_polls;
                for c in env.compiles.iter_mut().filter(|c| !c.started) {
                    c.started = true;
                    c.polls_left = polls;
                }
                if recovery && !env.compiles.iter().any(|c| c.kind == "recovery") {
                    env.compiles.push(Compile {
                        id: recovery_id,
                        message: "Recompile because the local project checkout does not match the latest compile"
                            .into(),
                        kind: "recovery".into(),
                        started: true,
                        completed: false,
                        success: None,
                        version: None,
                        polls_left: polls,
                    });
                }
            }
            env.halted = halt;
            (200, Value::Null)
        }
        ("GET", ["api", "v2", "environment_settings"]) => {
            let id = env_id!();
            let env = s.envs.iter().find(|e| e.id == id).expect("checked");
            (200, json!({ "data": { "settings": env.settings, "definition": definitions(flavor) } }))
        }
        ("POST", ["api", "v2", "environment_settings", name]) => {
            let id = env_id!();
            if definitions(flavor).get(*name).is_none() {
                return not_found(&format!("{name} is not a valid setting"));
            }
            let value = body.get("value").cloned().unwrap_or(Value::Null);
            s.env_mut(id).expect("checked").settings.insert(name.to_string(), value);
            (200, json!({ "data": null }))
        }
        ("POST", ["api", "v1", "notify", id]) => {
            let Some(env_id) = s.envs.iter().find(|e| e.id.to_string() == *id).map(|e| e.id) else {
                return not_found("The given environment id does not exist!");
            };
            let compile_id = s.new_id();
            let env = s.env_mut(env_id).expect("checked");
            if env.settings.get("server_compile") == Some(&Value::Bool(false)) {
                return (
                    200,
                    json!({ "metadata": { "warnings": ["Skipping compile because server compile not enabled for this environment."] } }),
                );
            }
            let message = body
                .pointer("/metadata/message")
                .and_then(Value::as_str)
                .unwrap_or("Recompile trigger through API call");
            env.compiles.push(Compile {
                id: compile_id,
                message: message.to_owned(),
                kind: body.pointer("/metadata/type").and_then(Value::as_str).unwrap_or("api").to_owned(),
                started: !env.halted,
                completed: false,
                success: None,
                version: None,
                polls_left: env.compile_polls,
            });
            (200, json!({}))
        }
        ("GET", ["api", "v1", "compilequeue"]) => {
            let id = env_id!();
            advance_compiles(s, id);
            let env = s.envs.iter().find(|e| e.id == id).expect("checked");
            let queue: Vec<Value> =
                env.compiles.iter().filter(|c| !c.completed).map(|c| compile_json(c, id, flavor)).collect();
            (200, json!({ "queue": queue }))
        }
        ("GET", ["api", "v2", "compilereport"]) => {
            let id = env_id!();
            let env = s.envs.iter().find(|e| e.id == id).expect("checked");
            let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(1000);
            let reports: Vec<Value> =
                env.compiles.iter().rev().take(limit).map(|c| compile_json(c, id, flavor)).collect();
            (200, json!({ "data": reports, "links": {}, "metadata": { "total": env.compiles.len() } }))
        }
        ("GET", ["api", "v2", "compilereport", cid]) => {
            let id = env_id!();
            let env = s.envs.iter().find(|e| e.id == id).expect("checked");
            match env.compiles.iter().find(|c| c.id.to_string() == *cid) {
                None => not_found("The given compile id does not exist"),
                Some(c) => {
                    let mut data = compile_json(c, id, flavor);
                    let failed = c.success == Some(false);
                    data["compile_data"] = json!({ "errors": if failed { json!([{"type": "inmanta.parser.ParserException", "message": "Syntax error at token }"}]) } else { json!([]) } });
                    data["reports"] = json!([
                        {"name": "Init", "command": "", "returncode": 0, "outstream": "", "errstream": ""},
                        // With auth on, the real server puts an environment token on this command line.
                        {"name": "Recompiling configuration model", "command": format!("python -m inmanta.app -vvv export --token {FAKE_COMPILER_TOKEN}"),
                         "returncode": if failed { 1 } else { 0 }, "outstream": "",
                         "errstream": if failed { format!("running export --token {FAKE_COMPILER_TOKEN}\ninmanta.parser.ParserException: Syntax error at token }} (main.cf:4)") } else { String::new() }},
                    ]);
                    (200, json!({ "data": data }))
                }
            }
        }
        ("GET", ["api", "v2", "desiredstate"]) => {
            let id = env_id!();
            let env = s.envs.iter().find(|e| e.id == id).expect("checked");
            let mut versions: Vec<Value> = desired_states(&env.versions, flavor);
            if let Some(status) = query.get("filter.status") {
                versions.retain(|v| v["status"] == json!(status));
            }
            if let Some(released) = query.get("filter.released") {
                versions.retain(|v| v["released"] == json!(released == "true"));
            }
            let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(1000);
            versions.truncate(limit);
            (200, json!({ "data": versions, "links": {}, "metadata": {} }))
        }
        ("POST", ["api", "v1", "version", v]) => {
            let id = env_id!();
            let env = s.env_mut(id).expect("checked");
            let Ok(v) = v.parse::<i64>() else { return error(400, "Invalid request: version") };
            match env.versions.iter_mut().find(|(n, _)| *n == v) {
                None => not_found(&format!("The version {v} does not exist")),
                Some((_, released)) if *released => error(
                    409,
                    "Request conflicts with the current state of the resource: The version is already released",
                ),
                Some((_, released)) => {
                    *released = true;
                    (200, json!({ "model": { "version": v, "released": true } }))
                }
            }
        }
        ("POST", ["api", "v2", "dryrun", v]) => {
            let id = env_id!();
            let dryrun_id = s.new_id();
            let env = s.env_mut(id).expect("checked");
            let Ok(v) = v.parse::<i64>() else { return error(400, "Invalid request: version") };
            if !env.versions.iter().any(|(n, _)| *n == v) {
                return not_found("The requested version does not exist.");
            }
            if flavor == Flavor::V19 && env.halted {
                return error(
                    409,
                    &format!(
                        "Request conflicts with the current state of the resource: The environment {}({id}) is halted",
                        env.name
                    ),
                );
            }
            let diff = env
                .resources
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let status = match (env.halted, env.model, i) {
                        (true, _, _) => "agent_down",
                        (false, Model::Differences, 0) => "modified",
                        _ => "unmodified",
                    };
                    (r.clone(), status)
                })
                .collect();
            env.dryruns.push(DryRun { id: dryrun_id, version: v, diff });
            (200, json!({ "data": dryrun_id }))
        }
        ("GET", ["api", "v2", "dryrun", v, did]) => {
            let id = env_id!();
            let env = s.envs.iter().find(|e| e.id == id).expect("checked");
            match env.dryruns.iter().find(|d| d.id.to_string() == *did && d.version.to_string() == *v) {
                None => not_found("The given dryrun does not exist"),
                Some(d) => {
                    let diff: Vec<Value> = d
                        .diff
                        .iter()
                        .map(|(r, status)| {
                            let attributes = if *status == "modified" {
                                json!({"purged": {"from_value": false, "to_value": true, "from_value_compare": "False", "to_value_compare": "True"}})
                            } else {
                                json!({})
                            };
                            json!({ "resource_id": r, "attributes": attributes, "status": status })
                        })
                        .collect();
                    let summary = json!({ "id": d.id, "environment": id, "model": d.version, "date": time(flavor), "total": d.diff.len(), "todo": 0 });
                    (200, json!({ "data": { "summary": summary, "diff": diff } }))
                }
            }
        }
        ("POST", ["api", "v1", "deploy"]) => {
            let id = env_id!();
            let env = s.envs.iter().find(|e| e.id == id).expect("checked");
            (200, json!({ "agents": env.agents.iter().map(|a| a.name.clone()).collect::<Vec<_>>() }))
        }
        ("GET", ["api", "v2", "agents"]) => {
            let id = env_id!();
            let env = s.envs.iter().find(|e| e.id == id).expect("checked");
            let agents: Vec<Value> = env
                .agents
                .iter()
                .map(|a| {
                    let status = if a.paused { "paused" } else { "up" };
                    json!({ "environment": id, "name": a.name, "paused": a.paused, "process_id": null, "process_name": null,
                            "unpause_on_resume": a.unpause_on_resume, "status": status })
                })
                .collect();
            (200, json!({ "data": agents, "links": {}, "metadata": {} }))
        }
        ("GET", ["api", "v2", "resource"]) => {
            let id = env_id!();
            let env = s.envs.iter().find(|e| e.id == id).expect("checked");
            let n = env.resources.len();
            (
                200,
                json!({ "data": [], "links": {}, "metadata": { "total": n, "deploy_summary": { "total": n, "by_state": { "deployed": n, "failed": 0, "skipped": 0, "unavailable": 0, "undefined": 0, "skipped_for_undefined": 0, "deploying": 0, "available": 0, "cancelled": 0 } } } }),
            )
        }
        _ => not_found(&format!("no route {method} {path}")),
    }
}

/// Started compiles advance by one queue poll; the ones done get a result.
fn advance_compiles(s: &mut State, id: Uuid) {
    let (model, auto_deploy, to_finish) = {
        let env = s.env_mut(id).expect("checked");
        let mut finished = Vec::new();
        for (i, c) in env.compiles.iter_mut().enumerate() {
            if c.started && !c.completed {
                if c.polls_left == 0 {
                    finished.push(i);
                } else {
                    c.polls_left -= 1;
                }
            }
        }
        (env.model, env.settings.get("auto_deploy") != Some(&Value::Bool(false)), finished)
    };
    let env = s.envs.iter_mut().find(|e| e.id == id).expect("checked");
    for i in to_finish {
        let next = env.versions.iter().map(|(v, _)| *v).max().unwrap_or(0) + 1;
        let version = if model == Model::Broken { None } else { Some(next) };
        let c = &mut env.compiles[i];
        c.completed = true;
        c.success = Some(model != Model::Broken);
        c.version = version;
        if let Some(v) = version {
            env.versions.push((v, auto_deploy));
        }
    }
}

fn env_json(e: &crate::FakeEnv) -> Value {
    json!({ "id": e.id, "name": e.name, "project_id": e.project_id, "repo_url": format!("file:///repos/{}.git", e.name),
            "repo_branch": "main", "settings": e.settings, "halted": e.halted, "is_marked_for_deletion": false,
            "description": "", "icon": "" })
}

fn compile_json(c: &Compile, env: Uuid, flavor: Flavor) -> Value {
    let t = time(flavor);
    json!({ "id": c.id, "remote_id": c.id, "environment": env, "requested": t,
            "started": if c.started { json!(t) } else { Value::Null },
            "completed": if c.completed { json!(t) } else { Value::Null },
            "do_export": true, "force_update": true, "metadata": { "type": c.kind, "message": c.message },
            "environment_variables": {}, "partial": false, "removed_resource_sets": [], "exporter_plugin": null,
            "notify_failed_compile": null, "failed_compile_message": null, "success": c.success, "version": c.version })
}

/// The desired-state list, newest first, with the status rules of the flavor.
fn desired_states(versions: &[(i64, bool)], flavor: Flavor) -> Vec<Value> {
    let mut sorted = versions.to_vec();
    sorted.sort_by_key(|v| std::cmp::Reverse(v.0));
    let active = sorted.iter().find(|(_, released)| *released).map(|(v, _)| *v);
    sorted
        .iter()
        .map(|(v, released)| {
            let status = match active {
                Some(a) if *v == a => "active",
                Some(a) if *v > a => "candidate",
                _ if *released => "retired",
                None => "candidate",
                _ => "skipped_candidate",
            };
            let mut value = json!({ "version": v, "date": time(flavor), "total": 2, "labels": [], "status": status });
            if flavor == Flavor::V19 {
                value["released"] = json!(released);
            }
            value
        })
        .collect()
}

/// Setting definitions as the 14.0.0 capture shows them (8.7.6 and 11.5.5
/// have the same names for what the tool touches).
fn definitions(flavor: Flavor) -> Value {
    let def = |kind: &str, default: Value| json!({ "type": kind, "default": default, "doc": "", "recompile": false, "update_model": false, "agent_restart": false, "allowed_values": null });
    let mut defs = json!({
        "auto_deploy": def("bool", json!(true)),
        "server_compile": def("bool", json!(true)),
        "recompile_backoff": def("positive_float", json!(0.1)),
        "resource_action_logs_retention": def("int", json!(7)),
        "autostart_agent_deploy_interval": def("str", json!("600")),
        "protected_environment": def("bool", json!(false)),
        "environment_metrics_retention": def("int", json!(336)),
    });
    if flavor != Flavor::V19 {
        defs["push_on_auto_deploy"] = def("bool", json!(true));
    }
    defs
}
