//! The only place that starts processes: local ones, or over ssh on an
//! orchestrator's host.
//!
//! Commands are argv vectors, never shell strings, so names with spaces and
//! quotes stay intact. Over ssh the argv is shell-quoted into the one string
//! ssh hands to the remote shell. Secrets never go into an argv: local
//! programs get them through the environment (see `migrate-pg`), remote ones
//! never get them.
//!
//! Every child gets SIGKILL when this process dies (PR_SET_PDEATHSIG), so a
//! killed migration leaves no `pg_dump` writing into a dump that a re-run is
//! about to replace. That signal is tied to the spawning thread, which is why
//! the binary runs a single-threaded tokio runtime.

use std::{process::Stdio, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

use crate::config::HostConfig;

/// Where commands run.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    ssh: Option<HostConfig>,
}

/// What a finished command printed and how it ended.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    /// The exit code, or `-signal` when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// One command, built up and then run.
#[must_use]
pub struct Cmd {
    argv: Vec<String>,
    shown: String,
    remote: bool,
    envs: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    output_to_files: bool,
}

impl Runner {
    /// Runs commands on this machine.
    pub fn local() -> Self {
        Runner { ssh: None }
    }

    /// Runs commands where `host` says: over ssh when `host.ssh` is set.
    pub fn on(host: &HostConfig) -> Self {
        Runner { ssh: host.ssh.is_some().then(|| host.clone()) }
    }

    pub fn is_remote(&self) -> bool {
        self.ssh.is_some()
    }

    /// "this machine" or the ssh destination, for messages.
    pub fn place(&self) -> String {
        match &self.ssh {
            Some(h) => h.ssh.clone().unwrap_or_default(),
            None => "this machine".to_owned(),
        }
    }

    pub fn cmd<S: AsRef<str>>(&self, argv: &[S]) -> Cmd {
        let argv: Vec<String> = argv.iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = shell_words::join(&argv);
        match &self.ssh {
            None => {
                Cmd { argv, shown, remote: false, envs: Vec::new(), stdin: None, timeout: None, output_to_files: false }
            }
            Some(host) => {
                let mut ssh: Vec<String> =
                    ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"].map(String::from).into();
                if let Some(port) = host.port {
                    ssh.extend(["-p".to_owned(), port.to_string()]);
                }
                if let Some(key) = &host.identity_file {
                    ssh.extend(["-i".to_owned(), key.to_string(), "-o".to_owned(), "IdentitiesOnly=yes".to_owned()]);
                }
                if let Some(known) = &host.known_hosts {
                    ssh.extend(["-o".to_owned(), format!("UserKnownHostsFile={}", ssh_option_path(known.as_str()))]);
                }
                let dest = host.ssh.clone().unwrap_or_default();
                ssh.extend([dest.clone(), "--".to_owned(), remote_command(&argv)]);
                Cmd {
                    argv: ssh,
                    shown: format!("{shown} (on {dest})"),
                    remote: true,
                    envs: Vec::new(),
                    stdin: None,
                    timeout: None,
                    output_to_files: false,
                }
            }
        }
    }
}

impl Cmd {
    /// Sets an environment variable of a local command. Remote commands take
    /// none: nothing secret is ever sent to another host this way.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.envs.push((key.to_owned(), value.into()));
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Output to anonymous files instead of pipes, for a command that may
    /// leave a process behind (a start script that daemonizes a server):
    /// the wait then ends with the command, not when the daemon closes its
    /// inherited copy of a pipe. No streaming.
    pub fn output_to_files(mut self) -> Self {
        self.output_to_files = true;
        self
    }

    /// The command as an operator would type it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn command(&self) -> anyhow::Result<Command> {
        if self.remote && !self.envs.is_empty() {
            bail!("cannot pass environment variables to a remote command ({})", self.shown);
        }
        // The one place of the product that spawns a process (clippy.toml).
        #[allow(clippy::disallowed_methods)]
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut command);
        Ok(command)
    }

    fn spawn(&self, command: &mut Command) -> anyhow::Result<tokio::process::Child> {
        tracing::debug!(command = %self.shown, "running");
        command.spawn().map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound { " (is it installed and on PATH?)" } else { "" };
            anyhow!("cannot run `{}`: {e}{hint}", self.argv[0])
        })
    }

    /// `work` within the command's time limit, if it has one.
    async fn within<T>(&self, work: impl Future<Output = std::io::Result<T>>) -> anyhow::Result<T> {
        let result = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .map_err(|_| anyhow!("`{}` did not finish within {}", self.shown, humantime::format_duration(limit)))?,
            None => work.await,
        };
        result.with_context(|| format!("`{}` failed to run", self.shown))
    }

    /// Runs to the end and returns its output, whatever its exit code.
    pub async fn output(self) -> anyhow::Result<CmdOutput> {
        self.stream(|_| {}).await
    }

    /// Runs to the end; a non-zero exit is an error that shows stderr.
    pub async fn run(self) -> anyhow::Result<CmdOutput> {
        let shown = self.shown.clone();
        let out = self.output().await?;
        if !out.success() {
            bail!("`{shown}` failed ({}){}", describe_code(out.code), stderr_tail(&out.stderr));
        }
        Ok(out)
    }

    /// Runs to the end, handing every stderr line to `on_line` as it comes
    /// (progress of pg_dump and pg_restore), and returns the output.
    pub async fn stream(mut self, mut on_line: impl FnMut(&str)) -> anyhow::Result<CmdOutput> {
        if self.output_to_files {
            return self.run_with_files().await;
        }
        let mut child = self.spawn(&mut self.command()?)?;
        let stdin = child.stdin.take();
        let input = self.stdin.take().unwrap_or_default();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let work = async {
            // Written while the output is read, so a chatty child cannot block us.
            let write_in = async {
                if let Some(mut pipe) = stdin {
                    match pipe.write_all(&input).await {
                        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
                        _ => {}
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            let mut out = Vec::new();
            let read_out = stdout.read_to_end(&mut out);
            let mut err_text = String::new();
            let read_err = async {
                let mut lines = BufReader::new(stderr).lines();
                while let Some(line) = lines.next_line().await? {
                    on_line(&line);
                    err_text.push_str(&line);
                    err_text.push('\n');
                }
                Ok::<_, std::io::Error>(())
            };
            let (r0, r1, r2) = tokio::join!(write_in, read_out, read_err);
            r0?;
            r1?;
            r2?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err_text))
        };
        let (status, out, err) = self.within(work).await?;
        self.finished(status, String::from_utf8_lossy(&out).into_owned(), err)
    }

    async fn run_with_files(self) -> anyhow::Result<CmdOutput> {
        use std::io::{Read, Seek};
        let (mut out, mut err) = (tempfile::tempfile()?, tempfile::tempfile()?);
        let mut command = self.command()?;
        command.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(err.try_clone()?);
        let mut child = self.spawn(&mut command)?;
        let status = self.within(child.wait()).await?;
        let read = |file: &mut std::fs::File| -> std::io::Result<String> {
            let mut bytes = Vec::new();
            file.rewind()?;
            file.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        let (stdout, stderr) = (read(&mut out)?, read(&mut err)?);
        self.finished(status, stdout, stderr)
    }

    /// The output of a finished command. ssh exits 255 when it cannot run
    /// the command (connection, host key, authentication): that is no answer
    /// of the command, whose exit code callers read (a failing `status`
    /// means "stopped"), so it is an error.
    fn finished(&self, status: std::process::ExitStatus, stdout: String, stderr: String) -> anyhow::Result<CmdOutput> {
        use std::os::unix::process::ExitStatusExt;
        let code = status.code().unwrap_or_else(|| -status.signal().unwrap_or(0));
        if self.remote && code == 255 {
            bail!("`{}` could not run: ssh failed (exit code 255){}", self.shown, stderr_tail(&stderr));
        }
        Ok(CmdOutput { code, stdout, stderr })
    }
}

/// The one string ssh hands to the remote shell: every word single-quoted.
/// (`shell_words::join` leaves words such as `{a,b}` bare, which bash and zsh
/// brace-expand.)
fn remote_command(argv: &[String]) -> String {
    argv.iter().map(|word| format!("'{}'", word.replace('\'', r"'\''"))).collect::<Vec<_>>().join(" ")
}

/// A path as the value of an `ssh -o` option: ssh splits the value at
/// whitespace (several known_hosts files) unless it is double-quoted, takes
/// backslash escapes inside the quotes and expands `%` tokens.
fn ssh_option_path(path: &str) -> String {
    format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%"))
}

fn describe_code(code: i32) -> String {
    if code < 0 { format!("killed by signal {}", -code) } else { format!("exit code {code}") }
}

/// The last lines of stderr, indented, for an error message.
pub fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(15)..];
    format!(":\n  {}", tail.join("\n  "))
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes the
    // prctl(2) system call, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argv_is_not_split_by_a_shell() {
        let out = Runner::local().cmd(&["printf", "%s|", "two words", "it's \"quoted\""]).run().await.unwrap();
        assert_eq!(out.stdout, "two words|it's \"quoted\"|");
    }

    #[tokio::test]
    async fn failures_show_stderr_and_code() {
        let err = Runner::local().cmd(&["sh", "-c", "echo boom >&2; exit 7"]).run().await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("exit code 7") && text.contains("boom"), "{text}");
    }

    #[tokio::test]
    async fn timeouts_kill_the_command() {
        let err = Runner::local().cmd(&["sleep", "5"]).timeout(Duration::from_millis(100)).output().await.unwrap_err();
        assert!(format!("{err:#}").contains("did not finish within"), "{err:#}");
    }

    #[tokio::test]
    async fn a_daemonizing_command_does_not_hold_the_wait() {
        // The background child keeps the inherited stdout open for 5 s.
        let start = std::time::Instant::now();
        let out = Runner::local()
            .cmd(&["sh", "-c", "sleep 5 & echo started"])
            .timeout(Duration::from_secs(3))
            .output_to_files()
            .run()
            .await
            .unwrap();
        assert_eq!(out.stdout, "started\n");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn missing_programs_say_so() {
        let err = Runner::local().cmd(&["/nonexistent/prog"]).output().await.unwrap_err();
        assert!(format!("{err:#}").contains("is it installed"), "{err:#}");
    }

    #[test]
    fn ssh_commands_quote_the_remote_argv() {
        let host = HostConfig { ssh: Some("root@h".into()), port: Some(2222), ..Default::default() };
        let cmd = Runner::on(&host).cmd(&["systemctl", "stop", "my unit's name"]);
        assert_eq!(cmd.argv[0], "ssh");
        assert!(cmd.argv.contains(&"2222".to_owned()));
        assert_eq!(cmd.argv.last().unwrap(), "'systemctl' 'stop' 'my unit'\\''s name'");
        let cmd = Runner::on(&host).cmd(&["ls", "/opt/{a,b}"]);
        assert_eq!(cmd.argv.last().unwrap(), "'ls' '/opt/{a,b}'", "no brace expansion by the remote shell");
        assert_eq!(cmd.shown(), "ls /opt/{a,b} (on root@h)");
        assert!(cmd.env("X", "y").command().is_err(), "no environment for remote commands");
    }

    #[test]
    fn ssh_gets_the_known_hosts_path_quoted() {
        let host = HostConfig {
            ssh: Some("h".into()),
            known_hosts: Some(r#"/k/it's "a" dir\100%/known_hosts"#.into()),
            ..Default::default()
        };
        let cmd = Runner::on(&host).cmd(&["true"]);
        assert!(
            cmd.argv.contains(&r#"UserKnownHostsFile="/k/it's \"a\" dir\\100%%/known_hosts""#.to_owned()),
            "{:?}",
            cmd.argv
        );
    }

    #[tokio::test]
    async fn ssh_failures_are_errors_not_exit_codes() {
        // What ssh does when it cannot run the remote command.
        let script = "echo 'Host key verification failed.' >&2; exit 255";
        let cmd = Cmd {
            argv: ["sh", "-c", script].map(String::from).into(),
            shown: "ctl status (on h)".into(),
            remote: true,
            envs: Vec::new(),
            stdin: None,
            timeout: None,
            output_to_files: false,
        };
        let err = cmd.output().await.unwrap_err();
        assert!(format!("{err:#}").contains("ssh failed (exit code 255):\n  Host key verification failed."), "{err:#}");
    }
}
