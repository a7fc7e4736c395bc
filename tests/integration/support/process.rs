//! The tool as a process a test can stop: spawned, waited for, killed,
//! or killed by itself at one of its crash points.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{BIN, Run, lab::Lab};

pub fn spawn(lab: &Lab, args: &[&str]) -> Child {
    let config = lab.config_path();
    Command::new(BIN)
        .args(["--config", config.as_str()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `ready` holds (true) or the child ends (false).
pub fn wait_for(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "never saw {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn sigkill(child: &mut Child) {
    let _ = child.kill();
    child.wait().unwrap();
}

/// SIGKILL to a whole process group (a server and its agents).
pub fn kill_group(pid: u32) {
    let status = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().unwrap();
    assert!(status.success(), "kill -KILL -{pid}");
}

/// Runs the tool with `args`, to be killed (SIGKILL) at the crash point
/// `target` (`KIND:N`): the run, and the points it passed (its crash log,
/// whose last line ends with "(crash)" when it was killed there).
pub fn run_to_crash(lab: &Lab, args: &[&str], target: &str) -> (Run, String) {
    let log = lab.dir().join("points.log");
    let _ = std::fs::remove_file(&log);
    let mut cmd = lab.tool_with(args, &[(failpoint::CRASH_AT, target), (failpoint::CRASH_LOG, log.as_str())]);
    let run = super::run(&mut cmd);
    (run, std::fs::read_to_string(&log).unwrap_or_default())
}
