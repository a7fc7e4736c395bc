//! Where the machine's CPU goes while a benchmark runs: a thread reads
//! /proc every 100 ms and adds up each process's CPU time by what the process
//! is (compiler, agent, server, PostgreSQL, ...). A process that ends between
//! two reads loses at most 100 ms of its time; the machine's own total (from
//! /proc/stat) is kept beside it, so the part no process was seen using
//! shows as "unseen".

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

/// What kind of process spent the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The server's compiles: `inmanta project update`, `inmanta export`
    /// (in the environment's compiler venv), and what they run (pip).
    Compile,
    /// Agents and their executors (dry-runs, deploys), and what they run
    /// (the venvs they make for the code they are sent).
    Agent,
    /// The orchestrator's server process.
    Server,
    Postgres,
    /// inmanta-migrate, its tools (pg_dump, ...) and the benchmark itself.
    Tool,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::Compile, Kind::Agent, Kind::Server, Kind::Postgres, Kind::Tool, Kind::Other];

    /// Sorts a process by its command line; `None` for a helper (python,
    /// pip, sh, ...) that counts for whatever started it.
    fn of(cmdline: &str) -> Option<Kind> {
        let words: Vec<&str> = cmdline.split_whitespace().collect();
        let has = |w: &str| words.contains(&w);
        let program = words.first().map_or("", |p| p.rsplit('/').next().unwrap_or(p));
        Some(if program.starts_with("postgres") || cmdline.starts_with("postgres:") {
            Kind::Postgres
        } else if ["inmanta-migrate", "pg_dump", "pg_restore", "psql", "vacuumdb"].contains(&program)
            || program.starts_with("xtask")
        {
            Kind::Tool
        } else if has("compile")
            || has("export")
            || has("project")
            || cmdline.contains("/environments/")
            || cmdline.contains("/compiler/")
        {
            Kind::Compile
        } else if has("agent") || has("scheduler") || cmdline.contains("executor") {
            Kind::Agent
        } else if has("server") {
            Kind::Server
        } else {
            return None;
        })
    }

    /// The kind of a process: its own, else its nearest ancestor's.
    fn of_process(pid: u32) -> Kind {
        let mut pid = pid;
        for _ in 0..32 {
            if let Some(kind) = Kind::of(&cmdline(pid)) {
                return kind;
            }
            match parent(pid) {
                Some(ppid) if ppid > 1 => pid = ppid,
                _ => break,
            }
        }
        Kind::Other
    }
}

/// CPU seconds spent in one window, by kind.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub by_kind: BTreeMap<Kind, f64>,
    /// The whole machine's busy time (all cores), seconds.
    pub busy: f64,
    pub wall: f64,
}

impl Usage {
    pub fn get(&self, kind: Kind) -> f64 {
        self.by_kind.get(&kind).copied().unwrap_or(0.0)
    }

    /// "compile 40.1, agent 80.3, ... (of 150.2 busy in 80.0 s)".
    pub fn summary(&self) -> String {
        let seen: f64 = self.by_kind.values().sum();
        let mut parts: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| self.get(**k) >= 0.05)
            .map(|k| format!("{} {:.1}", format!("{k:?}").to_lowercase(), self.get(*k)))
            .collect();
        parts.push(format!("unseen {:.1}", (self.busy - seen).max(0.0)));
        format!("{} (CPU s; machine busy {:.1} s in {:.1} s)", parts.join(", "), self.busy, self.wall)
    }
}

/// One reading: the time, each kind's CPU seconds so far, the machine's busy seconds so far.
type Reading = (Timestamp, BTreeMap<Kind, f64>, f64);

/// Samples until dropped; `between` answers for any window inside its life.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    readings: Arc<Mutex<Vec<Reading>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let readings = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, readings) = (stop.clone(), readings.clone());
            std::thread::spawn(move || sample(&stop, &readings))
        };
        Sampler { stop, readings, thread: Some(thread) }
    }

    /// The CPU spent from `from` to `to` (the nearest readings inside).
    pub fn between(&self, from: Timestamp, to: Timestamp) -> Usage {
        let readings = self.readings.lock().expect("the sampler does not panic");
        let inside: Vec<&Reading> = readings.iter().filter(|(t, _, _)| *t >= from && *t <= to).collect();
        let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
            return Usage::default();
        };
        let by_kind =
            Kind::ALL.iter().map(|k| (*k, last.1.get(k).unwrap_or(&0.0) - first.1.get(k).unwrap_or(&0.0))).collect();
        Usage { by_kind, busy: last.2 - first.2, wall: last.0.duration_since(first.0).as_secs_f64() }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sample(stop: &AtomicBool, readings: &Mutex<Vec<Reading>>) {
    // USER_HZ: 100 on every Linux this runs on.
    let tick = 100.0;
    // pid -> (kind, CPU seconds at the last read); a pid reused by a new
    // process shows a start time of its own.
    let mut seen: HashMap<(u32, u64), (Kind, f64)> = HashMap::new();
    let mut ended = BTreeMap::<Kind, f64>::new();
    let mut last_push = Timestamp::UNIX_EPOCH;
    while !stop.load(Ordering::Relaxed) {
        let mut now: HashMap<(u32, u64), (Kind, f64)> = HashMap::new();
        for pid in pids() {
            let Some((start, cpu)) = cpu_of(pid, tick) else { continue };
            let kind = match seen.get(&(pid, start)) {
                Some((kind, _)) => *kind,
                None => Kind::of_process(pid),
            };
            now.insert((pid, start), (kind, cpu));
        }
        for (key, (kind, cpu)) in &seen {
            if !now.contains_key(key) {
                *ended.entry(*kind).or_default() += cpu;
            }
        }
        seen = now;
        let at = Timestamp::now();
        // A reading every 100 ms is plenty for windows of seconds; keep one per 500 ms.
        if at.duration_since(last_push).as_secs_f64() >= 0.5 {
            let mut totals = ended.clone();
            for (kind, cpu) in seen.values() {
                *totals.entry(*kind).or_default() += cpu;
            }
            readings.lock().expect("the sampler does not panic").push((at, totals, busy_seconds(tick)));
            last_push = at;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// (start time in ticks, utime + stime in seconds) of a process.
fn cpu_of(pid: u32, tick: f64) -> Option<(u64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu(&text, tick)
}

/// Fields after the command name: state(3) ... utime(14) stime(15) ... starttime(22).
fn parse_cpu(text: &str, tick: f64) -> Option<(u64, f64)> {
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((ticks(22)?, (ticks(14)? + ticks(15)?) as f64 / tick))
}

fn parent(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
}

fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" ")
}

/// The machine's busy time so far: every core's time outside idle and iowait.
fn busy_seconds(tick: f64) -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let n: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let busy: u64 = n.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy as f64 / tick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_processes_by_command_line() {
        assert_eq!(Kind::of("postgres: inmanta inmanta 127.0.0.1(5432) idle"), Some(Kind::Postgres));
        assert_eq!(Kind::of("/usr/lib/postgresql/17/bin/postgres -D /x"), Some(Kind::Postgres));
        assert_eq!(Kind::of("/v/bin/python -m inmanta.app -vvv export -X -e abc"), Some(Kind::Compile));
        assert_eq!(
            Kind::of("/s/environments/e/.env/bin/python3 -m inmanta.app -vvv -X project update"),
            Some(Kind::Compile)
        );
        assert_eq!(Kind::of("/v/bin/python3 -m inmanta.app --config /s/agents/e/agent.cfg agent"), Some(Kind::Agent));
        assert_eq!(Kind::of("/v/bin/python /v/bin/inmanta --config-dir x server"), Some(Kind::Server));
        assert_eq!(Kind::of("/t/release/inmanta-migrate --json migrate --yes"), Some(Kind::Tool));
        assert_eq!(Kind::of("/v/bin/python -m pip install -r x"), None);
        // A helper counts for its parent: this test's own process is xtask's.
        assert_eq!(Kind::of_process(std::process::id()), Kind::Tool);
    }

    #[test]
    fn reads_cpu_and_start_after_an_odd_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let text = "7 (a) b) S 1 7 7 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0 12345 0 0";
        assert_eq!(parse_cpu(text, 100.0), Some((12345, 3.0)));
        assert_eq!(parse_cpu("garbage", 100.0), None);
    }

    #[test]
    fn this_process_uses_cpu() {
        let sampler = Sampler::start();
        let from = Timestamp::now();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(1200) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let usage = sampler.between(from, Timestamp::now());
        assert!(usage.busy > 0.5, "{usage:?}");
        assert!(usage.wall > 0.4, "{usage:?}");
    }
}
