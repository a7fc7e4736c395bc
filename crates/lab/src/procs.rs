//! Processes (through /proc) and loopback ports.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
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

/// Terminates the live members of a process group: SIGTERM, wait, SIGKILL.
/// Returns the pids it had to signal.
pub(crate) fn kill_group_leftovers(pgid: u32, grace: Duration) -> Vec<u32> {
    let left = group_members(pgid);
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

/// `n` distinct free loopback ports (all held at once while choosing).
pub(crate) fn pick_free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<_>>()
        .context("binding a free port on 127.0.0.1")?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
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
