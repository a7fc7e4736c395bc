//! `cargo xtask bench downtime`: how long an orchestrator is down, on a lab
//! whose old database holds a busy orchestrator's history in Inmanta's own
//! tables. On the same data, one after the other: (a) Inmanta's documented
//! procedure scripted as written, (b) `inmanta-migrate migrate --yes`, (c)
//! the same with the online copy (`copy.mode = "online"`: precopy before
//! the window, cutover in it), (d) the bare database move (`pg_dump -Fd -Z0
//! -j` + `pg_restore -j`, no verification), to show what the tool's
//! verification costs. Prints each method's downtime (first halt to last
//! environment back) by phase, the tool's peak memory, and the ratios of
//! the issues' goals.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use camino::Utf8Path;
use clap::{Args, ValueEnum};
use lab::{EnvRole, Instance, LabRoot, ModelVariant, Side, UpOptions};

use crate::cpu;
use serde_json::{Value, json};
use xshell::{Shell, cmd};

#[derive(Args)]
pub struct Downtime {
    /// Sizes the old database is grown to, GB (history is added in rounds
    /// until it is reached; 0 = the lab's seeded rows only). A list measures
    /// each size in turn.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    size_gb: Vec<f64>,
    /// Environments of the old orchestrator (a list: each count in turn).
    #[arg(long, value_delimiter = ',', default_value = "20")]
    envs: Vec<usize>,
    /// Resources in each environment's model, so in every version.
    #[arg(long, default_value_t = 300)]
    resources: u32,
    /// The methods to measure, in this order.
    #[arg(long, value_delimiter = ',', default_value = "documented,tool,online,raw")]
    methods: Vec<Method>,
    /// inmanta-core version of the old orchestrator (8.x to 14.x; with a
    /// 15+ `--new`, e.g. `--old 11.5.5 --new 15.5.9`, the new side and the
    /// tool run in the lab's Debian 13 root).
    #[arg(long, default_value = "8.7.6")]
    old: String,
    /// inmanta-core version of the new orchestrator.
    #[arg(long, default_value = "14.0.0")]
    new: String,
    /// How downtime grows: 0.25, 1 and 3 GB at 20 environments, then 4, 20
    /// and 50 environments at 1 GB (each point a lab of its own); with the
    /// online method also the empty database (P5's baseline).
    #[arg(long)]
    sizes: bool,
    /// Leave the bench lab instance running afterwards.
    #[arg(long)]
    keep: bool,
    /// Measure the debug build (already there after `cargo test`; for runs
    /// that only check the benchmark works).
    #[arg(long)]
    debug_build: bool,
    /// The tool's `reconcile.concurrency` (default: the config's, 4).
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// The new PostgreSQL's `max_connections` (a restart before the
    /// methods run): what `check` asks for many environments on a 15+
    /// server, whose schedulers open a database pool each.
    #[arg(long, value_name = "N")]
    new_max_connections: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Method {
    /// Inmanta's documented procedure, one environment at a time.
    Documented,
    /// `inmanta-migrate migrate --yes`.
    Tool,
    /// `inmanta-migrate migrate --yes` with `copy.mode = "online"`.
    Online,
    /// The database move alone: `pg_dump -Fd -Z0 -j2` + `pg_restore -j2`.
    Raw,
}

/// One point of a run: GB, environments, and what each method took there.
type Point = (f64, usize, Vec<(Method, Measured)>);

/// The phases of a migration, in order.
const PHASES: [&str; 6] = ["halt", "stop", "dump", "restore", "start", "reconcile"];

/// What one method took.
#[derive(Default)]
struct Measured {
    phases: BTreeMap<&'static str, f64>,
    downtime: f64,
    /// Peak RSS of inmanta-migrate itself, bytes (the tool only).
    peak_rss: Option<u64>,
    /// From the new server's API first answering (polled every 50 ms) to
    /// start-server done, seconds (the tool only).
    ready_noticed: Option<f64>,
    /// Seconds of the online copy before the window (not downtime).
    precopy: Option<f64>,
    /// Seconds of each environment's reconcile (the documented procedure,
    /// which does one at a time).
    per_env: Vec<f64>,
    /// The machine's CPU during the reconcile phase, by kind of process.
    reconcile_cpu: Option<cpu::Usage>,
    /// What `rehearse --baseline` predicted just before (the tool only):
    /// the window and its phases, seconds.
    predicted: Option<(f64, BTreeMap<&'static str, f64>)>,
}

impl Measured {
    /// The downtime and phase cells of a table row (the bare move has no downtime).
    fn cells(&self, method: Method) -> String {
        let downtime = if method == Method::Raw { "-".into() } else { format!("{:.1}", self.downtime) };
        let phases = PHASES.iter().map(|p| self.phases.get(p).map_or("-".into(), |s| format!("{s:.1}")));
        std::iter::once(downtime).chain(phases).collect::<Vec<_>>().join(" | ")
    }
}

impl Downtime {
    /// The small run CI makes so that the benchmark cannot rot: every
    /// method on a small database, timings printed, none asserted.
    pub fn smoke() -> Downtime {
        Downtime {
            size_gb: vec![0.03],
            envs: vec![2],
            resources: 10,
            methods: vec![Method::Documented, Method::Tool, Method::Online, Method::Raw],
            old: lab::DEFAULT_OLD_VERSION.into(),
            new: lab::DEFAULT_NEW_VERSION.into(),
            sizes: false,
            keep: false,
            debug_build: true,
            concurrency: None,
            new_max_connections: None,
        }
    }

    pub fn run(self, sh: &Shell) -> Result<()> {
        if self.size_gb.iter().any(|s| !(0.0..=100.0).contains(s)) || self.envs.contains(&0) {
            bail!("--size-gb takes sizes of 0 to 100 GB and --envs counts above 0");
        }
        if self.methods.is_empty() {
            bail!("--methods names none");
        }
        // The methods run this machine's PostgreSQL tools against the old
        // cluster, and the history SQL knows the 8.x-14.x schema.
        if self.old.split('.').next().and_then(|m| m.parse::<u32>().ok()).is_none_or(|major| major >= 15) {
            bail!("--old {}: the downtime bench measures old servers of 8.x to 14.x for now", self.old);
        }
        let bin = crate::build_tool(sh, !self.debug_build)?;
        // The points the goals need first: a run cut short keeps them.
        let grid: Vec<(f64, usize)> = if self.sizes {
            let mut grid = vec![(1.0, 20), (3.0, 20), (0.25, 20), (1.0, 4), (1.0, 50)];
            if self.methods.contains(&Method::Online) {
                // P5's baseline: the online downtime of an empty database.
                grid.insert(1, (0.0, 20));
            }
            grid
        } else {
            self.size_gb.iter().flat_map(|&gb| self.envs.iter().map(move |&n| (gb, n))).collect()
        };
        let mut points = Vec::new();
        for point in grid {
            if !points.contains(&point) {
                points.push(point);
            }
        }
        let mut rows: Vec<Point> = Vec::new();
        for (size_gb, envs) in points {
            eprintln!("\n== bench downtime: {size_gb} GB, {envs} environments, {} resources each", self.resources);
            let measured = self.point(sh, &bin, size_gb, envs)?;
            rows.push((size_gb, envs, measured));
        }
        if rows.len() > 1 {
            rows.sort_by(|a, b| (a.0, a.1).partial_cmp(&(b.0, b.1)).expect("sizes are numbers"));
            println!("\n## How downtime grows (seconds)\n");
            println!("| GB | envs | method | downtime | {} | precopy |", PHASES.join(" | "));
            println!("|---|---|---|---|{}---|", "---|".repeat(PHASES.len()));
            for (size_gb, envs, measured) in &rows {
                for (method, m) in measured {
                    let precopy = m.precopy.map_or("-".into(), |s| format!("{s:.1}"));
                    println!("| {size_gb} | {envs} | {method:?} | {} | {precopy} |", m.cells(*method));
                }
            }
            p5(&rows);
        }
        Ok(())
    }

    /// One lab at one size: every method on the same data.
    fn point(&self, sh: &Shell, bin: &Utf8Path, size_gb: f64, envs: usize) -> Result<Vec<(Method, Measured)>> {
        let root = LabRoot::from_env()?;
        let options = UpOptions {
            name: format!("bench-{envs}"),
            old: self.old.clone(),
            new: self.new.clone(),
            envs,
            ports: None,
            // What online needs of the old PostgreSQL, for every method alike.
            logical: self.methods.contains(&Method::Online),
            ..UpOptions::default()
        };
        let instance = lab::up(&root, &options)?;
        let result = self.measure(sh, bin, &instance, size_gb);
        if !self.keep {
            instance.down(true)?;
        }
        result
    }

    fn measure(
        &self,
        sh: &Shell,
        bin: &Utf8Path,
        instance: &Instance,
        size_gb: f64,
    ) -> Result<Vec<(Method, Measured)>> {
        if let Some(n) = self.new_max_connections {
            instance.psql(Side::New, "postgres", &format!("ALTER SYSTEM SET max_connections = {n}"))?;
            instance.stop_postgres(Side::New)?;
            instance.start_postgres(Side::New)?;
        }
        busy_models(instance, self.resources)?;
        instance.stop_server(Side::Old)?;
        let history = instance.grow_history((size_gb * 1e9) as u64)?;
        let shares: Vec<String> = history.shares.iter().map(|(t, s)| format!("{t} {:.0} %", s * 100.0)).collect();
        eprintln!(
            "old database: {:.2} GB in {:.0} s: {} versions per environment of {} resources; {}",
            history.bytes as f64 / 1e9,
            history.seconds,
            history.versions_per_env,
            history.resources_per_version,
            shares.join(", ")
        );
        // Every method starts from this copy of the old database.
        instance.psql(Side::Old, "postgres", "DROP DATABASE IF EXISTS bench_pristine")?;
        instance.psql(Side::Old, "postgres", "CREATE DATABASE bench_pristine TEMPLATE inmanta")?;

        let mut results = Vec::new();
        for method in &self.methods {
            reset(sh, instance)?;
            eprintln!("-- {method:?}");
            let sampler = cpu::Sampler::start();
            let m = match method {
                Method::Documented => documented(sh, instance, &sampler)?,
                Method::Tool | Method::Online => tool(bin, instance, *method, self.concurrency, &sampler)?,
                Method::Raw => raw(sh, instance)?,
            };
            let phases: Vec<String> = m.phases.iter().map(|(p, s)| format!("{p} {s:.1}")).collect();
            eprintln!("{method:?}: downtime {:.1} s ({})", m.downtime, phases.join(", "));
            if let Some(precopy) = m.precopy {
                eprintln!("{method:?}: precopy {precopy:.1} s before the window");
            }
            if let Some(usage) = &m.reconcile_cpu {
                eprintln!("{method:?}: reconcile CPU: {}", usage.summary());
            }
            results.push((*method, m));
        }
        report(&results, size_gb, instance.envs().len(), &history);
        Ok(results)
    }
}

/// Every environment that deploys gets a model of `resources` resources,
/// compiled, released and deployed: its newest version is what the history
/// copies.
fn busy_models(instance: &Instance, resources: u32) -> Result<()> {
    let t = Instant::now();
    let api = instance.client(Side::Old)?;
    let deploying: Vec<&lab::SeededEnv> =
        instance.envs().iter().filter(|e| matches!(e.role, EnvRole::Plain | EnvRole::Tuned)).collect();
    for env in &deploying {
        instance.push_model(&env.name, ModelVariant::Resources(resources))?;
    }
    // A few compiles at a time, as the lab's seed does.
    for batch in deploying.chunks(4) {
        for env in batch {
            api.notify(&env.id, &format!("bench model {}", env.name), true)?;
        }
        for env in batch {
            let outcome = api.wait_compile(&env.id, &format!("bench model {}", env.name), Duration::from_secs(1800))?;
            if !outcome.success {
                bail!("the bench model of {} does not compile:\n{}", env.name, outcome.failure);
            }
        }
    }
    for env in &deploying {
        wait_deployed(&api, &env.id, resources as usize)?;
    }
    eprintln!(
        "{} environments with {resources} resources deployed in {:.0} s",
        deploying.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until the environment's newest version has `n` resources, all
/// deployed (those of older models are listed too, as orphaned).
fn wait_deployed(api: &lab::Client, env: &str, n: usize) -> Result<()> {
    let start = Instant::now();
    loop {
        let mut resources = api.resources(env)?;
        resources.retain(|r| r["status"] != "orphaned");
        let deployed = resources.iter().filter(|r| r["status"] == "deployed").count();
        if resources.len() >= n && deployed == resources.len() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(1800) {
            bail!("{env}: {deployed} of {} resources deployed after 30 min", resources.len());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Both sides as before a migration: the old database from its pristine
/// copy with its server running, the new database empty, the new server
/// stopped with no state, no work directory.
fn reset(sh: &Shell, instance: &Instance) -> Result<()> {
    instance.stop_server(Side::New)?;
    instance.stop_server(Side::Old)?;
    // An online run that failed may have left its copy: without it the
    // databases can be dropped.
    let subscriptions = instance.psql(Side::New, "inmanta", "SELECT subname FROM pg_subscription").unwrap_or_default();
    for name in subscriptions.lines().filter(|n| !n.is_empty()) {
        instance.psql(
            Side::New,
            "inmanta",
            &format!(
                "ALTER SUBSCRIPTION {name} DISABLE; ALTER SUBSCRIPTION {name} SET (slot_name = NONE); DROP SUBSCRIPTION {name}"
            ),
        )?;
    }
    instance.psql(
        Side::Old,
        "postgres",
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'inmanta'",
    )?;
    instance.psql(Side::Old, "postgres", "DROP DATABASE IF EXISTS inmanta WITH (FORCE)")?;
    instance.psql(Side::Old, "postgres", "CREATE DATABASE inmanta TEMPLATE bench_pristine OWNER inmanta")?;
    instance.psql(Side::New, "postgres", "DROP DATABASE IF EXISTS inmanta WITH (FORCE)")?;
    instance.psql(Side::New, "postgres", "CREATE DATABASE inmanta OWNER inmanta")?;
    for dir in [instance.side_dir(Side::New).join("state"), instance.work_dir(), instance.dir().join("bench")] {
        if dir.exists() {
            sh.remove_path(&dir)?;
        }
    }
    sh.create_dir(instance.dir().join("bench"))?;
    for side in [Side::Old, Side::New] {
        instance.psql(side, "postgres", "CHECKPOINT")?;
    }
    instance.start_server(Side::Old)?;
    settle(instance)
}

/// Waits until the agents of every running environment are up, as on an
/// orchestrator in service (a halt right after a start waits for them).
fn settle(instance: &Instance) -> Result<()> {
    let api = instance.client(Side::Old)?;
    let start = Instant::now();
    for env in instance.envs().iter().filter(|e| !e.halted) {
        loop {
            let agents = api.get("/api/v2/agents?limit=1000", Some(&env.id))?;
            let agents = agents["data"].as_array().cloned().unwrap_or_default();
            if !agents.is_empty() && agents.iter().all(|a| a["status"] == "up" || a["paused"] == true) {
                break;
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("the agents of {} are not up after 5 min: {agents:?}", env.name);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

/// A timer of consecutive phases.
struct Phases {
    start: Instant,
    last: Instant,
    measured: Measured,
}

impl Phases {
    fn new() -> Phases {
        let now = Instant::now();
        Phases { start: now, last: now, measured: Measured::default() }
    }

    fn done(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.measured.phases.insert(phase, (now - self.last).as_secs_f64());
        self.last = now;
    }

    fn finish(mut self) -> Measured {
        self.measured.downtime = self.start.elapsed().as_secs_f64();
        self.measured
    }
}

/// Inmanta's procedure as the docs write it: halt each environment, stop,
/// `pg_dump -f`, `psql -f`, start, then one environment at a time: auto_deploy
/// off, update & recompile (queued while halted), resume (the compile runs),
/// dry-run, auto_deploy back.
fn documented(sh: &Shell, instance: &Instance, sampler: &cpu::Sampler) -> Result<Measured> {
    let old = instance.client(Side::Old)?;
    let envs: Vec<(String, bool, Value)> = old
        .environments()?
        .iter()
        .filter_map(|e| Some(e["id"].as_str()?.to_owned()))
        .map(|id| Ok((id.clone(), old.halted(&id)?, old.setting(&id, "auto_deploy")?)))
        .collect::<Result<_>>()?;
    let mut phases = Phases::new();
    for (id, halted, _) in &envs {
        if !halted {
            old.halt(id)?;
        }
    }
    phases.done("halt");
    instance.stop_server(Side::Old)?;
    phases.done("stop");
    let (pg, sql) = (instance.pg_bin_dir(), instance.dir().join("bench/documented.sql"));
    let (old_port, new_port) = (instance.ports().pg(Side::Old).to_string(), instance.ports().pg(Side::New).to_string());
    {
        let _pw = sh.push_env("PGPASSWORD", instance.db_password(Side::Old)?);
        cmd!(sh, "{pg}/pg_dump -h 127.0.0.1 -p {old_port} -U inmanta -d inmanta -f {sql}").run()?;
    }
    phases.done("dump");
    {
        let _pw = sh.push_env("PGPASSWORD", instance.db_password(Side::New)?);
        cmd!(sh, "{pg}/psql -X -q -h 127.0.0.1 -p {new_port} -U inmanta -d inmanta -v ON_ERROR_STOP=1 -f {sql}")
            .ignore_stdout()
            .run()?;
    }
    phases.done("restore");
    instance.start_server(Side::New)?;
    phases.done("start");
    let new = instance.client(Side::New)?;
    let reconcile_start = jiff::Timestamp::now();
    for (id, halted, auto_deploy) in &envs {
        if *halted {
            continue;
        }
        let t = Instant::now();
        new.set_setting(id, "auto_deploy", &json!(false))?;
        // A halted environment queues the compile; it runs once resumed.
        let message = format!("bench recompile {id}");
        new.notify(id, &message, true)?;
        new.resume(id)?;
        let outcome = new.wait_compile(id, &message, Duration::from_secs(1800))?;
        let version = match (outcome.success, outcome.version) {
            (true, Some(version)) => version,
            _ => bail!("documented procedure: the recompile of {id} failed:\n{}", outcome.failure),
        };
        let report = new.dryrun_and_wait(id, version, Duration::from_secs(1800))?;
        let differences =
            report["diff"].as_array().map_or(0, |d| d.iter().filter(|r| r["status"] != "unmodified").count());
        if differences > 0 {
            eprintln!("documented procedure: {id}: the dry-run shows {differences} differences");
        }
        new.set_setting(id, "auto_deploy", auto_deploy)?;
        phases.measured.per_env.push(t.elapsed().as_secs_f64());
    }
    phases.done("reconcile");
    phases.measured.reconcile_cpu = Some(sampler.between(reconcile_start, jiff::Timestamp::now()));
    Ok(phases.finish())
}

/// `inmanta-migrate migrate --yes` (online: with `copy.mode = "online"`),
/// its phases from its own journal.
fn tool(
    bin: &Utf8Path,
    instance: &Instance,
    method: Method,
    concurrency: Option<u32>,
    sampler: &cpu::Sampler,
) -> Result<Measured> {
    let mut table: toml::Table = std::fs::read_to_string(instance.config_path())?.parse()?;
    let mut set = |section: &str, key: &str, value: toml::Value| -> Result<()> {
        let entry = table.entry(section).or_insert_with(|| toml::Table::new().into());
        entry.as_table_mut().with_context(|| format!("[{section}] is not a table"))?.insert(key.into(), value);
        Ok(())
    };
    if let Some(n) = concurrency {
        set("reconcile", "concurrency", i64::from(n).into())?;
    }
    let online = method == Method::Online;
    if online {
        set("copy", "mode", "online".into())?;
    }
    let config = instance.dir().join("bench/inmanta-migrate.toml");
    std::fs::write(&config, toml::to_string(&table)?)?;
    let predicted = predict(bin, instance, &config)?;
    let mut command = instance.tool_command(bin, instance.dir(), &[])?;
    command.args(["--config", config.as_str(), "--json", "migrate", "--yes"]);
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = command.spawn().context("running inmanta-migrate")?;
    let pid = child.id();
    let watcher = std::thread::spawn(move || peak_rss(pid));
    let new_api = instance.client(Side::New)?;
    let answering = std::thread::spawn(move || first_answer(&new_api, pid));
    let out = child.wait_with_output()?;
    let peak = watcher.join().unwrap_or(None);
    let first_answer = answering.join().unwrap_or(None);
    if !out.status.success() {
        bail!(
            "inmanta-migrate migrate failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let journal: Value = serde_json::from_str(&std::fs::read_to_string(instance.work_dir().join("journal.json"))?)?;
    let step = |name: &str, what: &str| -> Result<jiff::Timestamp> {
        let text = journal["steps"][name][what].as_str().with_context(|| format!("journal: {name}.{what}"))?;
        Ok(text.parse()?)
    };
    let mut measured = Measured { peak_rss: peak, predicted: Some(predicted), ..Measured::default() };
    let (dump, restore) = if online { (None, "cutover") } else { (Some("dump"), "restore") };
    let steps = [
        ("halt", Some("halt-all")),
        ("stop", Some("stop-server")),
        ("dump", dump),
        ("restore", Some(restore)),
        ("start", Some("start-server")),
        ("reconcile", Some("env-reconcile")),
    ];
    for (phase, name) in steps.into_iter().filter_map(|(phase, name)| Some((phase, name?))) {
        let seconds = step(name, "ended")?.duration_since(step(name, "started")?).as_secs_f64();
        measured.phases.insert(phase, seconds);
    }
    measured.downtime = step("env-reconcile", "ended")?.duration_since(step("halt-all", "started")?).as_secs_f64();
    if online {
        measured.precopy = Some(step("precopy", "ended")?.duration_since(step("precopy", "started")?).as_secs_f64());
    }
    measured.reconcile_cpu = Some(sampler.between(step("env-reconcile", "started")?, step("env-reconcile", "ended")?));
    measured.ready_noticed = match first_answer {
        Some(at) => Some(step("start-server", "ended")?.duration_since(at).as_secs_f64()),
        None => None,
    };
    Ok(measured)
}

/// `rehearse --baseline` with the migration's config, right before it:
/// the window it predicts, in the bench's phases.
fn predict(bin: &Utf8Path, instance: &Instance, config: &Utf8Path) -> Result<(f64, BTreeMap<&'static str, f64>)> {
    let mut command = instance.tool_command(bin, instance.dir(), &[])?;
    command.args(["--config", config.as_str(), "--json", "rehearse", "--baseline"]);
    let out = command.output().context("running inmanta-migrate rehearse")?;
    // Exit 3 is a rehearsal that found something to look at: still a prediction.
    if !matches!(out.status.code(), Some(0 | 3)) {
        bail!("inmanta-migrate rehearse failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let doc: Value = serde_json::from_slice(&out.stdout).context("rehearse --json")?;
    let window = &doc["details"]["window"];
    let mut phases = BTreeMap::new();
    for part in window["parts"].as_array().context("the window's parts")? {
        let phase = match part["steps"].as_str().unwrap_or("") {
            "halt-all" => "halt",
            "stop-server" => "stop",
            "dump" => "dump",
            "restore" | "cutover" => "restore",
            "start-server" => "start",
            "env-reconcile" => {
                eprintln!("rehearse: env-reconcile {}", part["basis"].as_str().unwrap_or(""));
                "reconcile"
            }
            other => bail!("the rehearsal predicts an unknown part {other:?}"),
        };
        phases.insert(phase, part["seconds"].as_f64().unwrap_or(0.0));
    }
    let total = window["seconds"].as_f64().context("the window's seconds")?;
    eprintln!("rehearse: predicts {total:.1} s");
    Ok((total, phases))
}

/// When the new server's API first answered while process `pid` runs.
fn first_answer(api: &lab::Client, pid: u32) -> Option<jiff::Timestamp> {
    while lab::pid_alive(pid) {
        if api.server_version().is_ok() {
            return Some(jiff::Timestamp::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The highest resident set of a running process (VmHWM), read until it ends.
fn peak_rss(pid: u32) -> Option<u64> {
    let mut peak = None;
    while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        if status.lines().any(|l| l.starts_with("State:") && l.contains("zombie")) {
            break;
        }
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        if let Some(kib) = hwm {
            peak = Some(kib * 1024);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    peak
}

/// The bare database move: the old server stopped, `pg_dump -Fd -Z0 -j2`,
/// `pg_restore -j2` and ANALYZE (as the tool does), nothing verified.
fn raw(sh: &Shell, instance: &Instance) -> Result<Measured> {
    instance.stop_server(Side::Old)?;
    let (pg, dir) = (instance.pg_bin_dir(), instance.dir().join("bench/raw"));
    let (old_port, new_port) = (instance.ports().pg(Side::Old).to_string(), instance.ports().pg(Side::New).to_string());
    let mut phases = Phases::new();
    {
        let _pw = sh.push_env("PGPASSWORD", instance.db_password(Side::Old)?);
        cmd!(sh, "{pg}/pg_dump -h 127.0.0.1 -p {old_port} -U inmanta -d inmanta -Fd -Z0 -j2 -f {dir}").run()?;
    }
    phases.done("dump");
    {
        let _pw = sh.push_env("PGPASSWORD", instance.db_password(Side::New)?);
        cmd!(sh, "{pg}/pg_restore -h 127.0.0.1 -p {new_port} -U inmanta -d inmanta -j2 --no-owner --no-privileges --exit-on-error {dir}")
            .run()?;
        // Its WARNINGs about system catalogs the owner may not analyze are noise.
        cmd!(sh, "{pg}/vacuumdb --analyze-only -q -j2 -h 127.0.0.1 -p {new_port} -U inmanta -d inmanta")
            .ignore_stderr()
            .run()?;
    }
    phases.done("restore");
    Ok(phases.finish())
}

/// The table of one point and the goals' ratios.
fn report(results: &[(Method, Measured)], size_gb: f64, envs: usize, history: &lab::HistoryFigures) {
    println!(
        "\n## Downtime: {:.2} GB, {envs} environments, {} versions of {} resources each\n",
        history.bytes as f64 / 1e9,
        history.versions_per_env,
        history.resources_per_version
    );
    println!("| method | downtime s | {} | peak RSS |", PHASES.join(" | "));
    println!("|---|---|{}---|", "---|".repeat(PHASES.len()));
    for (method, m) in results {
        let rss = m.peak_rss.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        println!("| {method:?} | {} | {rss} |", m.cells(*method));
    }
    let get = |method: Method| results.iter().find(|(m, _)| *m == method).map(|(_, m)| m);
    let moved =
        |m: &Measured| m.phases.get("dump").copied().unwrap_or(0.0) + m.phases.get("restore").copied().unwrap_or(0.0);
    println!("\nsize asked: {size_gb} GB");
    if let (Some(doc), Some(tool)) = (get(Method::Documented), get(Method::Tool)) {
        println!("P1 downtime, tool / documented: {:.2} (goal <= 0.5)", tool.downtime / doc.downtime);
        println!("P2 database move, tool / documented: {:.2} (goal <= 0.6)", moved(tool) / moved(doc));
        let slowest = doc.per_env.iter().copied().fold(0.0, f64::max);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if let (Some(reconcile), Some(usage)) = (tool.phases.get("reconcile"), &tool.reconcile_cpu) {
            // The floor counts the compiles' CPU only; the dry-runs and
            // deploys of the agents share the same cores, so the busy time of
            // the whole machine is the floor of the work as it is.
            let compile = usage.get(cpu::Kind::Compile);
            let floor = slowest.max(compile / cores);
            println!(
                "P3 reconcile, tool / floor: {:.2} (goal <= 1.2; floor {floor:.1} s = max(slowest environment {slowest:.1} s, \
                 compiles' CPU {compile:.1} s / {cores} cores))",
                reconcile / floor
            );
            println!(
                "   reconcile / (all its CPU / cores): {:.2} ({:.1} s / ({:.1} s / {cores})); by kind: {}",
                reconcile / (usage.busy / cores),
                reconcile,
                usage.busy,
                usage.summary()
            );
        }
    }
    if let (Some(tool), Some(raw)) = (get(Method::Tool), get(Method::Raw)) {
        println!("P2 database move, tool / raw: {:.2} (goal <= 1.1)", moved(tool) / moved(raw));
    }
    if let (Some(tool), Some(online)) = (get(Method::Tool), get(Method::Online)) {
        println!(
            "online: downtime {:.1} s against offline {:.1} s ({:.2}x); the database move in the window {:.1} s \
             (cutover) against {:.1} s (dump + restore); the copy ran {:.1} s before the window",
            online.downtime,
            tool.downtime,
            online.downtime / tool.downtime,
            moved(online),
            moved(tool),
            online.precopy.unwrap_or(0.0)
        );
    }
    for method in [Method::Tool, Method::Online] {
        let Some((m, (total, phases))) = get(method).and_then(|m| Some((m, m.predicted.as_ref()?))) else { continue };
        let by_phase: Vec<String> = PHASES
            .iter()
            .filter_map(|p| Some(format!("{p} {:.1}/{:.1}", phases.get(p)?, m.phases.get(p).copied().unwrap_or(0.0))))
            .collect();
        println!(
            "{method:?}: predicted window {total:.1} s, measured {:.1} s: {:.2} (goal within 0.8-1.2); by phase, predicted/measured: {}",
            m.downtime,
            total / m.downtime,
            by_phase.join(", ")
        );
    }
    if let Some(noticed) = get(Method::Tool).and_then(|m| m.ready_noticed) {
        println!(
            "P4 start-server done {noticed:.2} s after the new API first answered (goal: notices within 1 s; \
             this includes its version and environment checks)"
        );
    }
    if let Some(rss) = get(Method::Tool).and_then(|m| m.peak_rss) {
        println!("memory: the tool's peak RSS {:.1} MiB (goal < 64 MiB)", rss as f64 / 1048576.0);
    }
}

/// Goal P5 across points: online downtime at the largest size within 1.5x
/// the empty database's, at the same number of environments.
fn p5(rows: &[Point]) {
    let online = |gb: f64, envs: usize| {
        rows.iter()
            .find(|(g, n, _)| *g == gb && *n == envs)
            .and_then(|(_, _, m)| m.iter().find(|(method, _)| *method == Method::Online))
            .map(|(_, m)| m.downtime)
    };
    for &(gb, envs, _) in rows.iter().filter(|(gb, _, _)| *gb > 0.0) {
        if let (Some(empty), Some(full)) = (online(0.0, envs), online(gb, envs))
            && rows.iter().all(|(g, n, _)| *n != envs || *g <= gb)
        {
            println!(
                "P5 online downtime at {gb} GB / empty database, {envs} environments: {:.2} ({full:.1} s / {empty:.1} s; goal <= 1.5)",
                full / empty
            );
        }
    }
}
