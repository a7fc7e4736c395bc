//! Processes (through /proc) and loopback ports.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rustix::process::{Pid, Signal};

/// Fields of /proc/<pid>/stat that the lab needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
}

/// Parses the text of /proc/<pid>/stat. The command name (2nd field) is in
/// parentheses and may contain spaces and parentheses: parse after the last ')'.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp })
}

pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// True while the process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    matches!(stat(pid), Some(s) if s.state != 'Z' && s.state != 'X')
}

/// Every live (non-zombie) process.
fn all_procs() -> Vec<(u32, ProcStat)> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .filter(|(_, s)| s.state != 'Z' && s.state != 'X')
        .collect()
}

/// Live members of a process group.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    all_procs().into_iter().filter(|(_, s)| s.pgrp == pgid).map(|(p, _)| p).collect()
}

/// The members of the process group of a process we started, whose command
/// line named `leader`: none when a process of another command leads it now
/// (a stale pid file; the pid went to another instance's server, say).
/// While any member lives, the kernel gives the group's id to no one else.
pub(crate) fn group_members_of(pgid: u32, leader: &str) -> Vec<u32> {
    if pid_alive(pgid) && !cmdline(pgid).is_some_and(|c| c.contains(leader)) {
        return Vec::new();
    }
    group_members(pgid)
}

/// Live direct children of a process.
pub(crate) fn children(ppid: u32) -> Vec<u32> {
    all_procs().into_iter().filter(|(_, s)| s.ppid == ppid).map(|(p, _)| p).collect()
}

/// The command line of a process, arguments joined by spaces.
pub(crate) fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Sends a signal to one process; a process that is gone is not an error.
pub(crate) fn signal(pid: u32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Waits until none of `pids` is alive; true when they all went.
pub(crate) fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if pids.iter().all(|p| !pid_alive(*p)) {
            return true;
        }
        if t0.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Terminates the live members of the group of a process we started whose
/// command line named `leader` (see [`group_members_of`]): SIGTERM, wait,
/// SIGKILL.
/// Returns the pids it had to signal.
pub(crate) fn kill_group_leftovers(pgid: u32, leader: &str, grace: Duration) -> Vec<u32> {
    let left = group_members_of(pgid, leader);
    if left.is_empty() {
        return left;
    }
    for p in &left {
        signal(*p, Signal::TERM);
    }
    if !wait_gone(&left, grace) {
        for p in &left {
            if pid_alive(*p) {
                signal(*p, Signal::KILL);
            }
        }
        wait_gone(&left, Duration::from_secs(5));
    }
    left
}

/// True when nothing listens on 127.0.0.1:`port` (we can bind it).
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Fails with a clear message when a port is taken.
pub(crate) fn check_port_free(what: &str, port: u16, hint: &str) -> Result<()> {
    if let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        bail!("port {port} on 127.0.0.1 (for the {what}) is not free: {e}. {hint}");
    }
    Ok(())
}

/// Where lab ports come from: below the kernel's range for outgoing
/// connections (32768 and up), so that no client connection of another
/// instance takes one between its choice and its server's bind.
const LAB_PORTS: std::ops::Range<u16> = 20000..32768;

/// `n` distinct free loopback ports, none handed out before by this
/// process: two instances coming up at once (tests in two threads) never
/// get the same port, although a server binds its port long after.
pub(crate) fn pick_free_ports(n: usize) -> Result<Vec<u16>> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Start where the process id says, so that two processes rarely probe
    // the same ports first.
    let span = LAB_PORTS.end - LAB_PORTS.start;
    let start = (std::process::id() % u32::from(span)) as u16;
    let mut ports = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    for offset in 0..span {
        if ports.len() == n {
            break;
        }
        let port = LAB_PORTS.start + (start + offset) % span;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            held.push(listener);
            ports.push(port);
        }
    }
    anyhow::ensure!(ports.len() == n, "no {n} free ports on 127.0.0.1 in {LAB_PORTS:?}");
    handed_out.extend(&ports);
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let s = parse_stat("1234 (python3) S 1 1234 1234 0 -1 4194560 1000").unwrap();
        assert_eq!(s, ProcStat { state: 'S', ppid: 1, pgrp: 1234 });
        let s = parse_stat("77 (a) b (c)) Z 5 6 7 0").unwrap();
        assert_eq!(s.state, 'Z');
        assert_eq!(s.ppid, 5);
        assert_eq!(s.pgrp, 6);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn self_is_alive_and_ports() {
        assert!(pid_alive(std::process::id()));
        let ports = pick_free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = l.local_addr().unwrap().port();
        assert!(!port_is_free(taken));
        let err = check_port_free("test", taken, "pick another").unwrap_err();
        assert!(err.to_string().contains(&taken.to_string()));
    }
}
