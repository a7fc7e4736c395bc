//! Starting and stopping an orchestrator's server process: through systemd
//! (`systemctl`, optionally `--user` and `sudo -n`), or through the explicit
//! start/stop/status commands of the config.

use std::time::Duration;

use anyhow::bail;
use inmanta_api::{Client, ServerStatus};

use crate::{
    config::{Manager, Orchestrator},
    context::Context,
    runner::Runner,
    wait,
};

/// What the service manager says about the server process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    Stopped,
    /// systemd only: the unit failed (a crash or a failed start).
    Failed,
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProcessState::Running => "running",
            ProcessState::Stopped => "stopped",
            ProcessState::Failed => "failed",
        })
    }
}

pub struct Service<'a> {
    orch: &'a Orchestrator,
    runner: Runner,
    /// Settings the server takes from its environment for this start.
    overrides: Vec<(String, String)>,
}

/// A systemd drop-in of the rehearsal's overrides: runtime only (under
/// /run, gone at reboot), named so that nothing else writes it.
const DROP_IN: &str = "50-inmanta-migrate-rehearsal.conf";

const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// `sh -c` script that runs `"$0" "$@"` with the user's runtime directory.
pub const USER_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR=\"${XDG_RUNTIME_DIR:-/run/user/$(id -u)}\" exec \"$0\" \"$@\"";

impl<'a> Service<'a> {
    pub fn new(orch: &'a Orchestrator) -> Self {
        Service { orch, runner: Runner::on(&orch.host), overrides: Vec::new() }
    }

    /// The same service, its server started with these settings in its
    /// environment (`INMANTA_<SECTION>_<OPTION>`, read by inmanta-core 8.x
    /// to 20.x over its config files): with commands, `env K=V ... start`;
    /// with systemd, a runtime drop-in that [`Self::install_overrides`]
    /// writes and [`Self::remove_overrides`] removes. No secret goes there.
    pub fn with_overrides(mut self, overrides: Vec<(String, String)>) -> Self {
        self.overrides = overrides;
        self
    }

    /// The shell line that finds the drop-in directory of the unit.
    fn drop_in_dir(&self) -> String {
        let svc = &self.orch.service;
        let root = if svc.user { "${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/systemd/user" } else { "/run/systemd/system" };
        format!("{root}/{}.d", shell_words::quote(svc.unit()))
    }

    /// `[sudo -n] sh -c SCRIPT sh ARGS...` on the service's machine, with the
    /// rights its service commands have.
    pub fn shell(&self, script: &str, args: &[&str]) -> crate::runner::Cmd {
        let mut argv: Vec<&str> = Vec::new();
        if self.orch.service.sudo {
            argv.extend(["sudo", "-n"]);
        }
        argv.extend(["sh", "-c", script, "sh"]);
        argv.extend(args);
        self.runner.cmd(&argv)
    }

    /// systemd: writes the overrides' drop-in and reloads the manager.
    pub async fn install_overrides(&self) -> anyhow::Result<()> {
        if self.orch.service.manager != Manager::Systemd || self.overrides.is_empty() {
            return Ok(());
        }
        let mut text =
            String::from("# Written by inmanta-migrate rehearse; removed when the rehearsal ends.\n[Service]\n");
        for (key, value) in &self.overrides {
            text.push_str(&format!("Environment=\"{key}={value}\"\n"));
        }
        let script = format!("d={}; mkdir -p \"$d\" && cat > \"$d/{DROP_IN}\"", self.drop_in_dir());
        self.shell(&script, &[]).stdin(text).timeout(COMMAND_TIMEOUT).run().await?;
        self.daemon_reload().await
    }

    /// systemd: removes a rehearsal's drop-in when there is one, and
    /// reloads the manager then; true when it removed one.
    pub async fn remove_overrides(&self) -> anyhow::Result<bool> {
        if self.orch.service.manager != Manager::Systemd {
            return Ok(false);
        }
        let script =
            format!("f={}/{DROP_IN}; [ ! -e \"$f\" ] || {{ rm -f \"$f\" && echo removed; }}", self.drop_in_dir());
        let out = self.shell(&script, &[]).timeout(COMMAND_TIMEOUT).run().await?;
        let removed = out.stdout.trim() == "removed";
        if removed {
            self.daemon_reload().await?;
        }
        Ok(removed)
    }

    async fn daemon_reload(&self) -> anyhow::Result<()> {
        let mut argv = self.systemd_tool("systemctl");
        argv.push("daemon-reload".to_owned());
        self.runner.cmd(&argv).timeout(COMMAND_TIMEOUT).run().await.map(drop)
    }

    /// `[sudo -n] <program> [--user]`: systemctl or journalctl as the
    /// config says.
    fn systemd_tool(&self, program: &str) -> Vec<String> {
        let svc = &self.orch.service;
        let mut argv: Vec<String> = Vec::new();
        if svc.sudo {
            argv.extend(["sudo".to_owned(), "-n".to_owned()]);
        }
        if svc.user {
            // The user manager is found through XDG_RUNTIME_DIR, which only
            // a PAM login sets (pam_systemd): not ssh without PAM, su or
            // sudo -u. Its default is where systemd puts it.
            argv.extend(["sh", "-c", USER_RUNTIME_DIR].map(str::to_owned));
        }
        argv.push(program.to_owned());
        if svc.user {
            argv.push("--user".to_owned());
        }
        argv
    }

    fn systemctl(&self, args: &[&str]) -> Vec<String> {
        let mut argv = self.systemd_tool("systemctl");
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.push(self.orch.service.unit().to_owned());
        argv
    }

    /// How the server is run, for messages.
    pub fn describe(&self) -> String {
        let svc = &self.orch.service;
        match svc.manager {
            Manager::Systemd => {
                let kind = if svc.user { "systemd user unit" } else { "systemd unit" };
                format!("{kind} {} on {}", svc.unit(), self.runner.place())
            }
            Manager::Command => {
                let program = svc.status.as_ref().and_then(|argv| argv.first()).map(String::as_str).unwrap_or("?");
                format!("the server's start/stop/status commands ({program}) on {}", self.runner.place())
            }
        }
    }

    pub async fn start(&self) -> anyhow::Result<()> {
        let argv = match self.orch.service.manager {
            Manager::Systemd => self.systemctl(&["start"]),
            Manager::Command if self.overrides.is_empty() => self.orch.service.start.clone().unwrap_or_default(),
            Manager::Command => {
                let mut argv = vec!["env".to_owned()];
                argv.extend(self.overrides.iter().map(|(k, v)| format!("{k}={v}")));
                argv.extend(self.orch.service.start.clone().unwrap_or_default());
                argv
            }
        };
        let what = format!("start {}", self.describe());
        failpoint::before(failpoint::Area::Service, &what);
        let result = self.runner.cmd(&argv).timeout(COMMAND_TIMEOUT).output_to_files().run().await.map(drop);
        failpoint::after(failpoint::Area::Service, &what);
        result
    }

    pub async fn stop(&self) -> anyhow::Result<()> {
        let argv = match self.orch.service.manager {
            Manager::Systemd => self.systemctl(&["stop"]),
            Manager::Command => self.orch.service.stop.clone().unwrap_or_default(),
        };
        let what = format!("stop {}", self.describe());
        failpoint::before(failpoint::Area::Service, &what);
        let result = self.runner.cmd(&argv).timeout(COMMAND_TIMEOUT).output_to_files().run().await.map(drop);
        failpoint::after(failpoint::Area::Service, &what);
        result
    }

    /// systemd: whether the unit starts at boot, `enable` (true) or
    /// `disable` (false); true when this changed it. A unit that is neither
    /// enabled nor disabled (static, masked, generated) is left alone, and
    /// with commands there is no such thing: false, nothing was done.
    pub async fn set_enabled(&self, enabled: bool) -> anyhow::Result<bool> {
        if self.orch.service.manager != Manager::Systemd {
            return Ok(false);
        }
        let out = self.runner.cmd(&self.systemctl(&["is-enabled"])).timeout(COMMAND_TIMEOUT).output().await?;
        if out.stdout.trim() != if enabled { "disabled" } else { "enabled" } {
            return Ok(false);
        }
        let argv = self.systemctl(&[if enabled { "enable" } else { "disable" }]);
        let what = format!("{} {}", if enabled { "enable" } else { "disable" }, self.describe());
        failpoint::before(failpoint::Area::Service, &what);
        let result = self.runner.cmd(&argv).timeout(COMMAND_TIMEOUT).output_to_files().run().await.map(drop);
        failpoint::after(failpoint::Area::Service, &what);
        result.map(|()| true)
    }

    /// systemd: whether the unit is installed (`LoadState=loaded`), which
    /// `is-active` does not tell (a missing unit is just "inactive"). With
    /// commands: None, nothing to ask.
    pub async fn installed(&self) -> anyhow::Result<Option<bool>> {
        if self.orch.service.manager != Manager::Systemd {
            return Ok(None);
        }
        let argv = self.systemctl(&["show", "--property=LoadState", "--value"]);
        let out = self.runner.cmd(&argv).timeout(COMMAND_TIMEOUT).output().await?;
        Ok(Some(out.stdout.trim() == "loaded"))
    }

    /// systemd: whether the unit's ExecStart runs the server in a container
    /// (podman, as a quadlet of Inmanta's container install does, or docker):
    /// then settings given as the unit's environment stay outside the
    /// server's process. With commands: false, nothing to ask.
    pub async fn runs_in_container(&self) -> anyhow::Result<bool> {
        if self.orch.service.manager != Manager::Systemd {
            return Ok(false);
        }
        let argv = self.systemctl(&["show", "--property=ExecStart", "--value"]);
        let out = self.runner.cmd(&argv).timeout(COMMAND_TIMEOUT).run().await?;
        Ok(execs_a_container(&out.stdout))
    }

    pub async fn state(&self) -> anyhow::Result<ProcessState> {
        match self.orch.service.manager {
            Manager::Systemd => {
                let out = self.runner.cmd(&self.systemctl(&["is-active"])).timeout(COMMAND_TIMEOUT).output().await?;
                Ok(match out.stdout.trim() {
                    "active" | "activating" | "deactivating" | "reloading" | "refreshing" => ProcessState::Running,
                    "failed" => ProcessState::Failed,
                    "inactive" | "" if out.code == 3 || out.code == 0 => ProcessState::Stopped,
                    other => bail!(
                        "cannot tell the state of {}: `systemctl is-active` said {other:?} (exit code {}){}",
                        self.describe(),
                        out.code,
                        crate::runner::stderr_tail(&out.stderr)
                    ),
                })
            }
            Manager::Command => {
                let argv = self.orch.service.status.clone().unwrap_or_default();
                let out = self.runner.cmd(&argv).timeout(COMMAND_TIMEOUT).output().await?;
                Ok(if out.success() { ProcessState::Running } else { ProcessState::Stopped })
            }
        }
    }

    /// systemd's restart counter of the unit (a restart loop shows here).
    pub async fn restarts(&self) -> Option<u64> {
        if self.orch.service.manager != Manager::Systemd {
            return None;
        }
        let argv = self.systemctl(&["show", "--property=NRestarts", "--value"]);
        let out = self.runner.cmd(&argv).timeout(COMMAND_TIMEOUT).output().await.ok()?;
        out.stdout.trim().parse().ok()
    }

    /// Where [`log_tail`](Self::log_tail) reads, for messages.
    pub fn log_source(&self) -> String {
        let svc = &self.orch.service;
        match (&svc.log_file, svc.manager) {
            (Some(file), _) => format!("{file} on {}", self.runner.place()),
            (None, Manager::Systemd) => format!("`journalctl -u {}` on {}", svc.unit(), self.runner.place()),
            (None, Manager::Command) => "no log_file configured".to_owned(),
        }
    }

    /// The last lines the server logged: its log file, or the unit's journal.
    pub async fn log_tail(&self, lines: usize) -> String {
        let svc = &self.orch.service;
        let n = lines.to_string();
        let argv: Vec<String> = match (&svc.log_file, svc.manager) {
            (Some(file), _) => vec!["tail".into(), "-n".into(), n, file.to_string()],
            (None, Manager::Systemd) => {
                // journald may not have stored yet what a unit's process
                // wrote just before it died (systemd's "Unable to locate
                // executable", say); --sync waits until it has.
                let mut sync = self.systemd_tool("journalctl");
                sync.push("--sync".into());
                let _ = self.runner.cmd(&sync).timeout(COMMAND_TIMEOUT).output().await;
                let mut argv = self.systemd_tool("journalctl");
                argv.extend(["-u".into(), svc.unit().into(), "-n".into(), n, "--no-pager".into()]);
                argv
            }
            (None, Manager::Command) => {
                return "(no `log_file` configured for this server)".to_owned();
            }
        };
        self.read_log(&argv).await.unwrap_or_else(|why| format!("(cannot read the log: {why})"))
    }

    /// The end of the log of one environment's resource scheduler (15.0+:
    /// a process of its own, logging to `agent-<environment>.log` in the
    /// server's log directory: `log_file`'s, or Inmanta's default
    /// /var/log/inmanta). `None` when there is none to read.
    pub async fn scheduler_log_tail(&self, env: uuid::Uuid, lines: usize) -> Option<String> {
        let dir = match &self.orch.service.log_file {
            Some(file) => file.parent()?.to_owned(),
            None => camino::Utf8PathBuf::from("/var/log/inmanta"),
        };
        let file = dir.join(format!("agent-{env}.log"));
        self.read_log(&["tail".into(), "-n".into(), lines.to_string(), file.to_string()]).await.ok()
    }

    /// What a log-reading command prints, tokens masked (the server may log
    /// command lines with tokens on them), or why it could not.
    async fn read_log(&self, argv: &[String]) -> Result<String, String> {
        match self.runner.cmd(argv).timeout(COMMAND_TIMEOUT).output().await {
            Ok(out) if out.success() => Ok(inmanta_api::redact_tokens(&out.stdout)),
            Ok(out) => Err(out.stderr.trim().to_owned()),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// The server's version from `version_command`, when configured.
    pub async fn installed_version(&self) -> Option<anyhow::Result<inmanta_api::ServerVersion>> {
        let argv = self.orch.version_command.as_ref()?;
        Some(
            async {
                let out = self.runner.cmd(argv).timeout(COMMAND_TIMEOUT).run().await?;
                inmanta_api::ServerVersion::find_in(&out.stdout)
                    .or_else(|| inmanta_api::ServerVersion::find_in(&out.stderr))
                    .ok_or_else(|| anyhow::anyhow!("`{}` printed no version", shell_words::join(argv)))
            }
            .await,
        )
    }
}

/// Whether `systemctl show -p ExecStart` names a container engine as the
/// program (`{ path=/usr/bin/podman ; argv[]=/usr/bin/podman run ... }`).
fn execs_a_container(exec_start: &str) -> bool {
    exec_start.split(" ; ").filter_map(|field| field.trim_start_matches("{ ").strip_prefix("path=")).any(|path| {
        let program = path.trim().rsplit('/').next().unwrap_or_default();
        matches!(program, "podman" | "docker")
    })
}

/// Asks the service manager to start a server; a start that fails comes
/// with the end of the server's log and the way on.
pub async fn start_service(service: &Service<'_>, label: &str, again: &str) -> anyhow::Result<()> {
    if let Err(e) = service.start().await {
        bail!("the {label} server did not start: {e:#}\n{}\n{}", log_end(service, 20).await, way_on(service, again));
    }
    Ok(())
}

/// What to do after a server failed to come up.
fn way_on(service: &Service<'_>, again: &str) -> String {
    format!(
        "fix what the log names in {} (its config, unit or database), then run `inmanta-migrate {again}` \
         again: it waits for a server still (re)starting",
        service.describe()
    )
}

/// Polls the API; watches the process and its log meanwhile.
pub async fn wait_until_answering(
    cx: &Context,
    again: &str,
    api: &Client,
    service: &Service<'_>,
    label: &str,
) -> anyhow::Result<ServerStatus> {
    let limit = cx.config.timeouts.start;
    let restarts_at_start = service.restarts().await;
    let spinner = cx.ui.spinner(again, "waiting for the API (it opens after the schema migration)");
    let mut tick = 0u64;
    let what = format!("the {label} server to answer (timeouts.start)");
    // Polled often: the step is done as soon as the server answers (goal P4).
    let answered = wait::until(Duration::from_millis(200), limit, &what, async || {
        match api.probe().await {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) => {}
            // A server busy starting may accept and not answer in time.
            Err(e) if e.is_unreachable() => {}
            Err(e) => return Err(e.into()),
        }
        tick += 1;
        if tick.is_multiple_of(5) {
            match service.state().await? {
                ProcessState::Running => {}
                state => bail!(
                    "the {label} server stopped while starting ({state}); {}\n{}",
                    log_end(service, 40).await,
                    way_on(service, again)
                ),
            }
            if let (Some(before), Some(now)) = (restarts_at_start, service.restarts().await)
                && now > before + 1
            {
                bail!(
                    "the {label} server restarts in a loop ({} restarts); {}\n{}",
                    now - before,
                    log_end(service, 40).await,
                    way_on(service, again)
                );
            }
        }
        if tick.is_multiple_of(12)
            && let Some(line) =
                service.log_tail(200).await.lines().rev().find(|l| l.contains("Updating database schema to version"))
        {
            let version = line.rsplit(' ').next().unwrap_or("");
            spinner.set_message(format!("schema migration: at version {version}"));
        }
        Ok(None)
    })
    .await;
    match answered {
        Err(e) if e.is::<wait::GaveUp>() => bail!(
            "the {label} server did not answer within {} (timeouts.start); {}",
            humantime::format_duration(limit),
            log_end(service, 40).await
        ),
        answered => answered,
    }
}

/// Stops a server that runs and waits until its service reports it gone.
pub async fn stop_and_wait(cx: &Context, step: &str, service: &Service<'_>, label: &str) -> anyhow::Result<()> {
    if service.state().await? != ProcessState::Running {
        return Ok(());
    }
    cx.ui.info(step, format!("stopping the {label} server ({})", service.describe()));
    service.stop().await?;
    let what = format!("the {label} server to stop ({})", service.describe());
    wait::until(Duration::from_millis(500), cx.config.timeouts.stop, &what, async || {
        Ok((service.state().await? != ProcessState::Running).then_some(()))
    })
    .await
}

/// "the end of its log (<where>):" and the last `lines` lines, indented.
pub async fn log_end(service: &Service<'_>, lines: usize) -> String {
    format!("the end of its log ({}):\n{}", service.log_source(), indent(&service.log_tail(lines).await))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quadlets_exec_start_runs_a_container() {
        let quadlet = "{ path=/usr/bin/podman ; argv[]=/usr/bin/podman run --name inmanta-server --cidfile=/run/user/1000/inmanta-server.cid --replace --rm -d localhost/orchestrator inmanta -c /etc/inmanta/inmanta.cfg server ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }";
        assert!(execs_a_container(quadlet));
        assert!(execs_a_container("{ path=/usr/bin/docker ; argv[]=/usr/bin/docker run x ; }"));
        let venv =
            "{ path=/opt/inmanta/bin/inmanta ; argv[]=/opt/inmanta/bin/inmanta -c /etc/inmanta/inmanta.cfg server ; }";
        assert!(!execs_a_container(venv));
        assert!(!execs_a_container("{ path=/usr/bin/podman-lookalike ; argv[]=/srv/podmanager/bin/inmanta server ; }"));
    }
}
