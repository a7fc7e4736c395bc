//! An in-memory Inmanta server for tests: the calls inmanta-migrate makes,
//! answered the way the real 8.7.6, 11.5.5, 14.0.0 (and, where they differ,
//! 19.x) servers answer in the lab captures (`shared/lab/captures`). It
//! records every request, with ids replaced by names and tokens redacted, so
//! tests can snapshot the exact request sequence; and it can inject faults.
//!
//! It is a test double for request sequences and fault injection. Real
//! behaviour is proven against real servers (`cargo xtask lab`).
//!
//! The server runs on its own thread and runtime, so sync and async tests can
//! use it alike. "Stopping" it (the `stop` control file, as a service
//! manager's stop command would) closes its port; "starting" reopens it.

mod handlers;

pub use handlers::FAKE_COMPILER_TOKEN;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Which server version to imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    V8,
    V11,
    V14,
    /// 19.0: health endpoint, 409 on dry-runs of halted environments, a
    /// "recovery" compile queued on resume, no `released` for <15.1 logic.
    V19,
}

impl Flavor {
    pub fn version(self) -> &'static str {
        match self {
            Flavor::V8 => "8.7.6",
            Flavor::V11 => "11.5.5",
            Flavor::V14 => "14.0.0",
            Flavor::V19 => "19.0.0",
        }
    }
}

/// What a compile of an environment's model does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// Compiles; dry-runs show no difference.
    Clean,
    /// Compiles; dry-runs show one modified resource.
    Differences,
    /// The compile fails.
    Broken,
}

#[derive(Clone, Debug)]
pub struct FakeEnv {
    pub id: Uuid,
    pub name: String,
    pub project_id: Uuid,
    pub halted: bool,
    pub settings: BTreeMap<String, Value>,
    pub agents: Vec<FakeAgent>,
    /// (version, released)
    pub versions: Vec<(i64, bool)>,
    pub compiles: Vec<Compile>,
    pub dryruns: Vec<DryRun>,
    pub resources: Vec<String>,
    pub model: Model,
    /// GETs of the compile queue a started compile takes to finish.
    pub compile_polls: u32,
}

#[derive(Clone, Debug)]
pub struct FakeAgent {
    pub name: String,
    pub paused: bool,
    pub unpause_on_resume: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct Compile {
    pub id: Uuid,
    pub message: String,
    pub kind: String,
    pub started: bool,
    pub completed: bool,
    pub success: Option<bool>,
    pub version: Option<i64>,
    pub polls_left: u32,
}

#[derive(Clone, Debug)]
pub struct DryRun {
    pub id: Uuid,
    pub version: i64,
    pub diff: Vec<(String, &'static str)>,
}

/// One recorded request, ids replaced by names.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub body: Value,
    pub status: u16,
}

impl Recorded {
    /// `METHOD path [body] -> status`, with `auth` when a token was sent.
    pub fn line(&self) -> String {
        let body = if self.body.is_null() { String::new() } else { format!(" {}", self.body) };
        let auth = if self.authorization.is_some() { " (auth)" } else { "" };
        format!("{} {}{body}{auth} -> {}", self.method, self.path, self.status)
    }
}

/// A fault to inject.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `status` to the next `times` requests whose path starts with `prefix`.
    Status { prefix: String, status: u16, times: u32 },
    /// Never answer requests whose path starts with `prefix`.
    Hang { prefix: String },
}

pub(crate) struct State {
    pub flavor: Flavor,
    pub token: Option<String>,
    pub project: (Uuid, String),
    pub envs: Vec<FakeEnv>,
    pub requests: Vec<Recorded>,
    pub faults: Vec<Fault>,
    ids: u128,
}

impl State {
    /// Deterministic ids, so that snapshots are stable.
    pub fn new_id(&mut self) -> Uuid {
        self.ids += 1;
        Uuid::from_u128(0xf000_0000_0000_0000_0000_0000_0000_0000 | self.ids)
    }

    pub fn env_mut(&mut self, id: Uuid) -> Option<&mut FakeEnv> {
        self.envs.iter_mut().find(|e| e.id == id)
    }

    /// Replaces every id this server handed out by a readable name.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for env in &self.envs {
            out = out.replace(&env.id.to_string(), &format!("{{env:{}}}", env.name));
            for c in &env.compiles {
                out = out.replace(&c.id.to_string(), "{compile}");
            }
            for d in &env.dryruns {
                out = out.replace(&d.id.to_string(), "{dryrun}");
            }
        }
        out.replace(&self.project.0.to_string(), "{project}")
    }
}

pub struct FakeInmanta {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    control: tempfile::TempDir,
    _thread: std::thread::JoinHandle<()>,
}

impl FakeInmanta {
    /// Starts a server imitating `flavor`, without environments.
    pub fn start(flavor: Flavor) -> FakeInmanta {
        let mut state = State {
            flavor,
            token: None,
            project: (Uuid::nil(), "migproj".into()),
            envs: Vec::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            ids: 0,
        };
        state.project.0 = state.new_id();
        let state = Arc::new(Mutex::new(state));
        let control = tempfile::tempdir().expect("a temp dir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("an address");
        let control_path = Utf8PathBuf::from_path_buf(control.path().to_owned()).expect("utf-8 temp dir");
        let thread = {
            let state = state.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(handlers::serve(listener, state, control_path));
            })
        };
        FakeInmanta { state, addr, control, _thread: thread }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requires `Authorization: Bearer <token>` from now on.
    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().token = Some(token.to_owned());
    }

    /// Adds an environment with two resources, one released version, a
    /// running agent and default settings.
    pub fn add_env(&self, name: &str) -> Uuid {
        let id = self.state.lock().unwrap().new_id();
        self.add_env_with_id(name, id)
    }

    /// [`Self::add_env`] with a given id (that of a real database's environment).
    pub fn add_env_with_id(&self, name: &str, id: Uuid) -> Uuid {
        let mut s = self.state.lock().unwrap();
        let project_id = s.project.0;
        let version = 1;
        s.envs.push(FakeEnv {
            id,
            name: name.to_owned(),
            project_id,
            halted: false,
            settings: BTreeMap::from([("auto_deploy".to_owned(), Value::Bool(true))]),
            agents: vec![FakeAgent { name: "internal".to_owned(), paused: false, unpause_on_resume: None }],
            versions: vec![(version, true)],
            compiles: Vec::new(),
            dryruns: Vec::new(),
            resources: vec![
                "std::testing::NullResource[internal,name=res-a]".to_owned(),
                "std::testing::NullResource[internal,name=res-b]".to_owned(),
            ],
            model: Model::Clean,
            compile_polls: 0,
        });
        id
    }

    /// Changes an environment.
    pub fn with_env(&self, id: Uuid, change: impl FnOnce(&mut FakeEnv)) {
        let mut s = self.state.lock().unwrap();
        change(s.env_mut(id).expect("a known environment"));
    }

    /// Adds a compile that is already running (it finishes after `polls`
    /// GETs of the compile queue).
    pub fn add_running_compile(&self, id: Uuid, polls: u32) {
        let mut s = self.state.lock().unwrap();
        let compile_id = s.new_id();
        s.env_mut(id).expect("a known environment").compiles.push(Compile {
            id: compile_id,
            message: "Recompile trigger through API call".into(),
            kind: "api".into(),
            started: true,
            completed: false,
            success: None,
            version: None,
            polls_left: polls,
        });
    }

    pub fn env(&self, id: Uuid) -> FakeEnv {
        self.state.lock().unwrap().envs.iter().find(|e| e.id == id).cloned().expect("a known environment")
    }

    /// Every environment, as it is now.
    pub fn envs(&self) -> Vec<FakeEnv> {
        self.state.lock().unwrap().envs.clone()
    }

    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests as lines, grouped by the environment they concern
    /// ("server" for the others): each environment's sequence is
    /// deterministic even when the client works on several at once.
    pub fn requests_by_env(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.requests() {
            let env = r
                .tid
                .clone()
                .or_else(|| {
                    r.path.split('{').nth(1).and_then(|rest| rest.split('}').next()).map(|e| format!("{{{e}}}"))
                })
                .filter(|e| e.starts_with("{env:"))
                .unwrap_or_else(|| "server".to_owned());
            groups.entry(env).or_default().push(r.line());
        }
        groups
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// The directory of the control files (`stop`, `start`, `stopped`).
    pub fn control_dir(&self) -> &Utf8Path {
        Utf8Path::from_path(self.control.path()).expect("utf-8 temp dir")
    }

    /// start, stop and status argv for a `command` service manager: they
    /// write control files the server watches, like a real service.
    pub fn service_commands(&self) -> [Vec<String>; 3] {
        let dir = self.control_dir().to_string();
        let sh = |script: &str| vec!["sh".to_owned(), "-c".to_owned(), script.to_owned(), "sh".to_owned(), dir.clone()];
        [
            // Like systemctl, start and stop return once the server has
            // reacted (at most 5 s): request sequences do not depend on timing.
            sh(
                r#"rm -f "$1/stop"; touch "$1/start"; i=0; while [ -e "$1/stopped" ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done"#,
            ),
            sh(
                r#"rm -f "$1/start"; touch "$1/stop"; i=0; while [ ! -e "$1/stopped" ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done"#,
            ),
            sh(r#"test ! -e "$1/stopped""#),
        ]
    }

    /// Waits until the server has reacted to its control files.
    pub fn wait_stopped(&self, stopped: bool) {
        let marker = self.control.path().join("stopped");
        for _ in 0..200 {
            if marker.exists() == stopped {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the fake server did not {}", if stopped { "stop" } else { "start" });
    }
}
