//! The inmanta server of one side: its config, its control script, start/stop.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::cmd;

use crate::api::{Access, Client};
use crate::containers::{self, Containers};
use crate::machine::{Booted, SERVER_UNIT, server_unit};
use crate::net::Net;
use crate::secure::JwtClaims;
use crate::util::{self, shell};
use crate::{major, procs};

/// Auth and TLS of a secure side's server: files under the instance's
/// `secrets/` (the JWT key is read only to write server.cfg).
#[derive(Clone, Debug)]
pub(crate) struct ServerSecurity {
    /// The CA that signed `cert_file`.
    pub ca_file: Utf8PathBuf,
    pub cert_file: Utf8PathBuf,
    pub key_file: Utf8PathBuf,
    /// The `[auth_jwt_default]` key (base64url).
    pub jwt_key_file: Utf8PathBuf,
    /// The API token the lab's own client (and the tool) uses for this side.
    pub token_file: Utf8PathBuf,
    pub claims: JwtClaims,
}

/// What the secure parts of server.cfg need.
pub(crate) struct SecureCfg<'a> {
    pub ca_file: &'a Utf8Path,
    pub cert_file: &'a Utf8Path,
    pub key_file: &'a Utf8Path,
    pub jwt_key: &'a str,
    pub claims: &'a JwtClaims,
}

/// Paths and settings of one side's server.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    /// `<instance>/<old|new>`.
    pub dir: Utf8PathBuf,
    pub venv: Utf8PathBuf,
    pub version: String,
    pub port: u16,
    /// `None`: HTTP without auth.
    pub security: Option<ServerSecurity>,
    /// The lab's Debian 13 root the server runs in (`None`: this machine).
    pub root: Option<Utf8PathBuf>,
    /// The booted machine whose `inmanta-server.service` it is (then the
    /// ctl script drives the unit, and the log is the unit's journal).
    pub machine: Option<Booted>,
    /// The network namespace it runs in, on a host of its own (it listens
    /// on its address there too).
    pub net: Option<Net>,
    /// The `inmanta-server` container of a machine's user (Inmanta's
    /// container install), with the directories it reads (index, repos).
    pub container: Option<(Containers, Vec<Utf8PathBuf>)>,
}

impl Server {
    pub fn ctl(&self) -> Utf8PathBuf {
        self.dir.join("ctl")
    }
    pub fn cfg(&self) -> Utf8PathBuf {
        self.dir.join("server.cfg")
    }
    pub fn pid_file(&self) -> Utf8PathBuf {
        self.dir.join("server.pid")
    }
    pub fn log_file(&self) -> Utf8PathBuf {
        self.dir.join("log/server.log")
    }
    pub fn stdout_file(&self) -> Utf8PathBuf {
        self.dir.join("log/stdout.log")
    }
    pub fn inmanta(&self) -> Utf8PathBuf {
        self.venv.join("bin/inmanta")
    }
    pub fn api_url(&self) -> String {
        let scheme = if self.security.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", crate::net::reach(self.net.as_ref()), self.port)
    }

    /// The CA and token this server wants (nothing for a plain one).
    pub fn access(&self) -> Result<Access> {
        let Some(sec) = &self.security else {
            return Ok(Access::default());
        };
        let ca_pem = fs::read(&sec.ca_file).with_context(|| format!("reading {}", sec.ca_file))?;
        let token = fs::read_to_string(&sec.token_file).with_context(|| format!("reading {}", sec.token_file))?;
        Ok(Access { ca_pem: Some(ca_pem), token: Some(token.trim().to_string()) })
    }

    /// A client of this server's API.
    pub fn client(&self, timeout: Duration) -> Result<Client> {
        Client::with_access(&self.api_url(), timeout, &self.access()?)
    }

    /// The pid in the pid file, alive or not (none on a booted machine,
    /// whose systemd ends what the server leaves).
    pub fn recorded_pid(&self) -> Option<u32> {
        if self.machine.is_some() {
            return None;
        }
        fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        let pid = match (&self.machine, &self.container) {
            (_, Some((c, _))) => c.server_pid()?,
            (Some(machine), None) => machine.main_pid(SERVER_UNIT)?,
            (None, None) => self.recorded_pid()?,
        };
        let cmd = procs::cmdline(pid)?;
        (procs::pid_alive(pid) && cmd.contains(self.cfg().as_str())).then_some(pid)
    }

    /// Writes server.cfg (0600: it holds the DB password and, when secure,
    /// the JWT key) and the ctl script.
    pub fn write_files(&self, pg_port: u16, db_password: &str, label: &str, index_url: &str) -> Result<()> {
        util::mkdir_mode(&self.dir, 0o755)?;
        util::mkdir_mode(&self.dir.join("log"), 0o755)?;
        util::mkdir_mode(&self.dir.join("state"), 0o755)?;
        let jwt_key = match &self.security {
            Some(sec) => Some(
                fs::read_to_string(&sec.jwt_key_file)
                    .with_context(|| format!("reading {}", sec.jwt_key_file))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let secure = match (&self.security, &jwt_key) {
            (Some(sec), Some(key)) => Some(SecureCfg {
                ca_file: &sec.ca_file,
                cert_file: &sec.cert_file,
                key_file: &sec.key_file,
                jwt_key: key,
                claims: &sec.claims,
            }),
            _ => None,
        };
        if let Some((c, read_only)) = &self.container {
            // Inside its container: the database by name, the API on the
            // port the quadlet publishes.
            let db = ("inmanta-db", containers::DB_PORT);
            let port = containers::SERVER_PORT;
            let text = server_cfg(&self.dir, db, db_password, "0.0.0.0", port, &self.version, secure.as_ref());
            util::write_file_mode(&self.cfg(), &text, 0o600)?;
            // The container's root is the user: what the server writes is its.
            for path in [self.dir.clone(), self.dir.join("log"), self.dir.join("state"), self.cfg()] {
                containers::give_to_user(&path)?;
            }
            let gitconfig = c.machine.dir.join("gitconfig");
            util::write_file_mode(&gitconfig, containers::GITCONFIG, 0o644)?;
            let quadlet =
                containers::server_quadlet(&self.version, &self.dir, read_only, &gitconfig, index_url, self.port);
            containers::write_quadlet(&c.machine, "inmanta-server.container", &quadlet)?;
            return util::write_file_mode(&self.ctl(), &user_unit_ctl_script(label, &c.machine), 0o755);
        }
        let listen = crate::net::listen(self.net.as_ref());
        let db = ("127.0.0.1", pg_port);
        let text = server_cfg(&self.dir, db, db_password, &listen, self.port, &self.version, secure.as_ref());
        util::write_file_mode(&self.cfg(), &text, 0o600)?;
        let ctl = match &self.machine {
            Some(machine) => {
                machine.write_unit(SERVER_UNIT, &server_unit(label, &self.dir, &self.inmanta(), index_url))?;
                unit_ctl_script(label, machine)
            }
            None => {
                let netns = self.net.as_ref().map(|n| n.ns.as_str());
                ctl_script(&self.dir, &self.inmanta(), label, index_url, self.root.as_deref(), netns)
            }
        };
        util::write_file_mode(&self.ctl(), &ctl, 0o755)
    }

    /// The end of what the server logged: its unit's journal on a booted
    /// machine, its stdout and log file elsewhere.
    pub fn log_tail(&self) -> String {
        if let Some((c, _)) = &self.container {
            let unit = containers::SERVER_UNIT;
            return format!("--- journalctl --user -u {unit} ---\n{}", c.journal_tail(unit, 25));
        }
        match &self.machine {
            Some(machine) => {
                format!("--- journalctl -u {SERVER_UNIT} ---\n{}", machine.journal_tail(SERVER_UNIT, 25))
            }
            None => format!(
                "--- {} ---\n{}\n--- {} ---\n{}",
                self.stdout_file(),
                util::tail(&self.stdout_file(), 15),
                self.log_file(),
                util::tail(&self.log_file(), 25)
            ),
        }
    }

    /// Runs `ctl <action>`; returns its exit code and output.
    pub fn run_ctl(&self, action: &str) -> Result<(i32, String)> {
        let sh = shell()?;
        let ctl = self.ctl();
        // Read by bash rather than executed: a script just written may still
        // be open for writing in a child another thread forked (ETXTBSY).
        let out = cmd!(sh, "bash {ctl} {action}").quiet().ignore_status().output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code().unwrap_or(-1), text.trim().to_string()))
    }

    /// `ctl start`, then waits until this very process answers
    /// `/api/v1/serverstatus` with the expected version.
    pub fn start(&self, timeout: Duration) -> Result<()> {
        if self.pid().is_some() {
            bail!("the {} server is already running", self.dir);
        }
        procs::check_port_free(
            "inmanta server",
            self.port,
            "Another server may be running there; stop it or choose other ports.",
        )?;
        let (code, out) = self.run_ctl("start")?;
        if code != 0 {
            bail!("{} start failed (exit {code}): {out}", self.ctl());
        }
        self.wait_ready(timeout)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let client = self.client(Duration::from_secs(30))?;
        let t0 = Instant::now();
        loop {
            let Some(_pid) = self.pid() else {
                bail!("the server of {} exited during startup\n{}", self.dir, self.log_tail());
            };
            let last_error = match client.server_version() {
                Ok(v) if v == self.version => return Ok(()),
                Ok(v) => bail!(
                    "{} answers with version {v}, expected {}: another server holds the port?",
                    self.api_url(),
                    self.version
                ),
                Err(e) => format!("{e:#}"),
            };
            if t0.elapsed() > timeout {
                bail!(
                    "the server of {} did not answer within {timeout:?} (last error: {last_error})\n{}",
                    self.dir,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ctl stop` (SIGTERM, wait, SIGKILL the group; idempotent), then makes
    /// sure nothing of its process group is left.
    pub fn stop(&self) -> Result<()> {
        let pgid = self.recorded_pid();
        if self.ctl().exists() {
            let (code, out) = self.run_ctl("stop")?;
            if code != 0 {
                bail!("{} stop failed (exit {code}): {out}", self.ctl());
            }
        }
        if let Some(pgid) = pgid {
            let left = procs::kill_group_leftovers(pgid, self.cfg().as_str(), Duration::from_secs(5));
            if !left.is_empty() {
                eprintln!("lab: killed leftovers of process group {pgid}: {left:?}");
            }
        }
        Ok(())
    }
}

/// The server's own config file. With `secure`: `[server] auth=true`
/// (`auth_method=jwt` from 11.x on, where that value exists), one HS256
/// signing section, HTTPS with the lab's certificate, and `ssl=true` with the
/// CA for the transports the server hands to its agents and compiles.
pub(crate) fn server_cfg(
    dir: &Utf8Path,
    (db_host, pg_port): (&str, u16),
    db_password: &str,
    listen: &str,
    port: u16,
    version: &str,
    secure: Option<&SecureCfg<'_>>,
) -> String {
    let mut out = format!(
        "# Written by the inmanta-migrate lab.\n\
         [config]\n\
         state_dir={dir}/state\n\
         log_dir={dir}/log\n\
         \n\
         [database]\n\
         host={db_host}\n\
         port={pg_port}\n\
         name=inmanta\n\
         username=inmanta\n\
         password={db_password}\n\
         wait_time=30\n\
         connection_pool_min_size=2\n\
         connection_pool_max_size=10\n\
         \n\
         [server]\n\
         bind-address={listen}\n\
         bind-port={port}\n\
         server_address=127.0.0.1\n"
    );
    match secure {
        None => out.push_str("auth=false\n"),
        Some(s) => {
            out.push_str("auth=true\n");
            if major(version) >= 11 {
                // 11.x added `jwt` to oidc/database; 8.x has no such value
                // (and needs none: JWT sections work with any auth_method).
                out.push_str("auth_method=jwt\n");
            }
            out.push_str(&format!(
                "ssl_cert_file={}\n\
                 ssl_key_file={}\n\
                 ssl_ca_cert_file={}\n\
                 \n\
                 [auth_jwt_default]\n\
                 algorithm=HS256\n\
                 sign=true\n\
                 client_types=agent,compiler,api\n\
                 key={}\n\
                 issuer={}\n\
                 audience={}\n",
                s.cert_file, s.key_file, s.ca_file, s.jwt_key, s.claims.issuer, s.claims.audience
            ));
        }
    }
    for section in ["agent_rest_transport", "compiler_rest_transport", "client_rest_transport"] {
        out.push_str(&format!("\n[{section}]\nhost=127.0.0.1\nport={port}\n"));
        if let Some(s) = secure {
            out.push_str(&format!("ssl=true\nssl_ca_cert_file={}\n", s.ca_file));
        }
    }
    out
}

/// Single-quotes a string for bash.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `start|stop|status` control script of one side's server. With a
/// `root`, the server runs in that Debian root, whether the script is run
/// from this machine or from inside the root (as the tool does there).
pub(crate) fn ctl_script(
    dir: &Utf8Path,
    inmanta: &Utf8Path,
    label: &str,
    index_url: &str,
    root: Option<&Utf8Path>,
    netns: Option<&str>,
) -> String {
    let template = r#"#!/bin/bash
# Control script of the inmanta-migrate lab's @LABEL@.
# Usage: ctl start|stop|status
#   start   starts the server in its own session and returns at once (like
#           systemctl start); refuses when it already runs
#   stop    SIGTERM, waits up to 60 s, then SIGKILL of its process group;
#           also ends what is left of the group (autostarted agents);
#           exit 0 when it was not running
#   status  exit 0 while the server process lives, 3 when it does not
set -u
DIR=@DIR@
INMANTA=@INMANTA@
INDEX=@INDEX@
ROOT=@ROOT@
NETNS=@NETNS@
PIDFILE="$DIR/server.pid"

# The server's machine: its Debian root (entered with a clean environment)
# unless this script already runs there, or this machine when ROOT is empty.
if [ -n "$ROOT" ] && [ ! -e @MARKER@ ]; then
  ENTER=(chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
else
  ENTER=(/usr/bin/env)
fi
# A host of its own: the server runs in that network namespace.
if [ -n "$NETNS" ]; then
  ENTER=(nsenter "--net=/run/netns/$NETNS" "${ENTER[@]}")
fi

# state of a pid ("" when gone)
proc_state() {
  local line
  read -r line 2>/dev/null < "/proc/$1/stat" || return 0
  line=${line##*) }
  echo "${line%% *}"
}

alive() {
  local s
  s=$(proc_state "$1")
  [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]
}

# sets $pid; true while the server of this side runs
running() {
  pid=""
  [ -s "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  alive "$pid" || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/server.cfg"
}

# live members of process group $1; none when its leader lives but is not
# this side's server (a stale pid file: the pid is another's by now)
group_members() {
  local want=$1 p line st ppid pgrp rest
  if alive "$want" && ! tr '\0' ' ' < "/proc/$want/cmdline" 2>/dev/null | grep -qF -- "$DIR/server.cfg"; then
    return 0
  fi
  for p in /proc/[0-9]*; do
    read -r line 2>/dev/null < "$p/stat" || continue
    read -r st ppid pgrp rest <<< "${line##*) }"
    if [ "$pgrp" = "$want" ] && [ "$st" != Z ] && [ "$st" != X ]; then
      echo "${p#/proc/}"
    fi
  done
}

start() {
  if running; then
    echo "already running (pid $pid)" >&2
    exit 1
  fi
  mkdir -p "$DIR/log" "$DIR/state"
  cd "$DIR" || exit 1
  # Settings given to this start as INMANTA_* variables (as `inmanta-migrate
  # rehearse` gives its port, state dir and database) reach the server, also
  # through the clean environment of a Debian root.
  local name settings=()
  for name in $(compgen -e); do
    case "$name" in INMANTA_*) settings+=("$name=${!name}") ;; esac
  done
  # PIP_CACHE_DIR: pip of the server-side compiles keeps its cache in the lab.
  # PIP_INDEX_URL: versions exported by 8.x carry no pip config, their agents
  # install code from pip's default index, which is this one (offline).
  setsid "${ENTER[@]}" "${settings[@]}" PIP_CACHE_DIR="$DIR/state/pip-cache" PIP_INDEX_URL="$INDEX" \
    "$INMANTA" -vv --timed-logs -c "$DIR/server.cfg" \
    --log-file "$DIR/log/server.log" --log-file-level DEBUG server \
    > "$DIR/log/stdout.log" 2>&1 < /dev/null &
  local child=$! i
  echo "$child" > "$PIDFILE"
  # Return once the child has exec'd the server (its command line names
  # server.cfg): until then `status` would call it stopped.
  for i in $(seq 1 100); do
    alive "$child" || break
    tr '\0' ' ' < "/proc/$child/cmdline" 2>/dev/null | grep -qF -- "$DIR/server.cfg" && break
    sleep 0.05
  done
  # A server gone at once says nothing itself: say how it ended.
  if ! alive "$child"; then
    wait "$child"
    echo "ctl: the server process ended at once, status $? (over 128: killed by signal status-128)" >> "$DIR/log/stdout.log"
  fi
  echo "started (pid $child)"
}

stop() {
  if [ ! -s "$PIDFILE" ]; then
    echo "not running"
    exit 0
  fi
  local pgid i left
  pgid=$(cat "$PIDFILE")
  if running; then
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 600); do
      running || break
      sleep 0.1
    done
    if running; then
      echo "still running after 60 s: SIGKILL of process group $pgid" >&2
      kill -KILL -- "-$pgid" 2>/dev/null
    fi
  fi
  left=$(group_members "$pgid")
  if [ -n "$left" ]; then
    kill -TERM $left 2>/dev/null
    for i in $(seq 1 50); do
      left=$(group_members "$pgid")
      [ -z "$left" ] && break
      sleep 0.1
    done
    [ -n "$left" ] && kill -KILL $left 2>/dev/null
  fi
  rm -f "$PIDFILE"
  echo "stopped"
}

status() {
  if running; then
    echo "running (pid $pid)"
    exit 0
  fi
  echo "stopped"
  exit 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
"#;
    template
        .replace("@LABEL@", label)
        .replace("@DIR@", &sh_quote(dir.as_str()))
        .replace("@INMANTA@", &sh_quote(inmanta.as_str()))
        .replace("@INDEX@", &sh_quote(index_url))
        .replace("@ROOT@", &sh_quote(root.map_or("", |r| r.as_str())))
        .replace("@MARKER@", crate::rootfs::INSIDE_MARKER)
        .replace("@NETNS@", &sh_quote(netns.unwrap_or("")))
}

/// The `start|stop|status` control script of a server that is the unit
/// `inmanta-server.service` of a booted machine: systemctl there, entered
/// from this machine through the machine's PID 1 (recorded at boot).
pub(crate) fn unit_ctl_script(label: &str, machine: &Booted) -> String {
    let template = r#"#!/bin/bash
# Control script of the inmanta-migrate lab's @LABEL@: the unit @UNIT@
# of the booted machine @NAME@. Usage: ctl start|stop|status (systemctl's
# exit codes; stop and status also work while the machine is down).
set -u
UNIT=@UNIT@
if [ -e @MARKER@ ]; then
  ENTER=()
else
  leader=$(cat @LEADER@ 2>/dev/null)
  if [ -z "$leader" ] || [ "$(cat "/proc/$leader/comm" 2>/dev/null)" != systemd ]; then
    case "${1:-}" in
      stop) echo "not running (the machine @NAME@ is down)"; exit 0 ;;
      status) echo "stopped (the machine @NAME@ is down)"; exit 3 ;;
      *) echo "the machine @NAME@ is not running" >&2; exit 1 ;;
    esac
  fi
  ENTER=(nsenter -t "$leader" -a)
fi
case "${1:-}" in
  start|stop) exec "${ENTER[@]}" systemctl "$1" "$UNIT" ;;
  status)
    if "${ENTER[@]}" systemctl is-active --quiet "$UNIT"; then echo running; exit 0; fi
    echo stopped; exit 3 ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
"#;
    template
        .replace("@LABEL@", label)
        .replace("@UNIT@", SERVER_UNIT)
        .replace("@NAME@", &machine.name)
        .replace("@LEADER@", &sh_quote(machine.leader_file().as_str()))
        .replace("@MARKER@", crate::rootfs::INSIDE_MARKER)
}

/// The `start|stop|status` control script of a server that is the user
/// unit `inmanta-server.service` (a quadlet) of a booted machine's user:
/// `systemctl --user` as that user, entered as [`unit_ctl_script`] does.
pub(crate) fn user_unit_ctl_script(label: &str, machine: &Booted) -> String {
    let as_user = format!(
        "runuser -u {user} -- env XDG_RUNTIME_DIR=/run/user/{uid} systemctl --user",
        user = containers::USER,
        uid = containers::UID
    );
    unit_ctl_script(label, machine)
        .replace("\"${ENTER[@]}\" systemctl", &format!("\"${{ENTER[@]}}\" {as_user}"))
        .replace(": the unit ", &format!(": the user ({}) unit ", containers::USER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_has_ports_and_password() {
        let cfg = server_cfg(
            Utf8Path::new("/lab/i/old"),
            ("127.0.0.1", 15431),
            "lab-secret",
            "127.0.0.1",
            18881,
            "8.7.6",
            None,
        );
        assert!(cfg.contains("state_dir=/lab/i/old/state\n"));
        assert!(cfg.contains("port=15431\n"));
        assert!(cfg.contains("password=lab-secret\n"));
        assert!(cfg.contains("bind-port=18881\n"));
        assert!(cfg.contains("auth=false\n"));
        assert!(!cfg.contains("ssl"));
        assert_eq!(cfg.matches("port=18881\n").count(), 4);
    }

    #[test]
    fn secure_cfg_has_auth_tls_and_the_signing_section() {
        let claims = JwtClaims { issuer: "https://iss/".into(), audience: "aud".into() };
        let secure = SecureCfg {
            ca_file: Utf8Path::new("/s/ca.pem"),
            cert_file: Utf8Path::new("/s/server.pem"),
            key_file: Utf8Path::new("/s/server-key.pem"),
            jwt_key: "k3y",
            claims: &claims,
        };
        let parse = |version: &str| {
            let text =
                server_cfg(Utf8Path::new("/lab/i/old"), ("127.0.0.1", 1), "pw", "127.0.0.1", 2, version, Some(&secure));
            let mut sections: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
                Default::default();
            let mut current = String::new();
            for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
                if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    current = name.to_string();
                    continue;
                }
                let (k, v) = line.split_once('=').unwrap();
                assert!(
                    sections.entry(current.clone()).or_default().insert(k.into(), v.into()).is_none(),
                    "{k} twice in [{current}]"
                );
            }
            sections
        };
        for version in ["8.7.6", "11.5.5", "14.0.0"] {
            let cfg = parse(version);
            let server = &cfg["server"];
            assert_eq!(server["auth"], "true");
            assert_eq!(server.get("auth_method").map(String::as_str), (version != "8.7.6").then_some("jwt"));
            assert_eq!(server["ssl_cert_file"], "/s/server.pem");
            assert_eq!(server["ssl_key_file"], "/s/server-key.pem");
            assert_eq!(server["ssl_ca_cert_file"], "/s/ca.pem");
            let jwt = &cfg["auth_jwt_default"];
            assert_eq!(jwt["algorithm"], "HS256");
            assert_eq!(jwt["sign"], "true");
            assert_eq!(jwt["client_types"], "agent,compiler,api");
            assert_eq!(jwt["key"], "k3y");
            assert_eq!(jwt["issuer"], "https://iss/");
            assert_eq!(jwt["audience"], "aud");
            for t in ["agent_rest_transport", "compiler_rest_transport", "client_rest_transport"] {
                assert_eq!(cfg[t]["ssl"], "true", "{t}");
                assert_eq!(cfg[t]["ssl_ca_cert_file"], "/s/ca.pem", "{t}");
                assert_eq!(cfg[t]["port"], "2", "{t}");
            }
        }
    }

    #[test]
    fn ctl_script_quotes_paths() {
        let s = ctl_script(
            Utf8Path::new("/lab/it's/old"),
            Utf8Path::new("/v/bin/inmanta"),
            "OLD server",
            "file:///i/simple",
            None,
            None,
        );
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains(r"DIR='/lab/it'\''s/old'"));
        assert!(s.contains("INMANTA='/v/bin/inmanta'"));
        assert!(s.contains("ROOT=''\n"));
        assert!(s.contains("NETNS=''\n"));
        for placeholder in ["@LABEL@", "@DIR@", "@INMANTA@", "@INDEX@", "@ROOT@", "@MARKER@", "@NETNS@"] {
            assert!(!s.contains(placeholder), "{placeholder} left");
        }
        let s = ctl_script(
            Utf8Path::new("/l"),
            Utf8Path::new("/v"),
            "x",
            "file:///i",
            Some(Utf8Path::new("/r t")),
            Some("imn-a-old"),
        );
        assert!(s.contains("ROOT='/r t'\n"));
        assert!(s.contains("NETNS='imn-a-old'\n"));
    }

    #[test]
    fn ctl_script_status_and_stop_without_server() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf()).unwrap();
        let server = Server {
            dir: dir.clone(),
            venv: dir.join("venv"),
            version: "0.0.0".into(),
            port: 1,
            security: None,
            root: None,
            machine: None,
            net: None,
            container: None,
        };
        server.write_files(2, "pw", "test server", "file:///nonexistent/simple").unwrap();
        assert_eq!(server.run_ctl("status").unwrap().0, 3);
        assert_eq!(server.run_ctl("stop").unwrap().0, 0);
        // A stale pid file (our own pid is no inmanta server) is not "running".
        fs::write(server.pid_file(), std::process::id().to_string()).unwrap();
        assert_eq!(server.run_ctl("status").unwrap().0, 3);
        assert_eq!(server.run_ctl("bogus").unwrap().0, 2);
    }

    #[test]
    fn ctl_script_starts_and_stops_a_process_group() {
        // A fake "inmanta" that starts a child in its group and ignores nothing.
        let tmp = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf()).unwrap();
        let venv = dir.join("venv");
        fs::create_dir_all(venv.join("bin")).unwrap();
        util::write_file_mode(
            &venv.join("bin/inmanta"),
            "#!/bin/bash\nsleep 300 &\nwhile true; do sleep 1; done\n",
            0o755,
        )
        .unwrap();
        let server = Server {
            dir: dir.clone(),
            venv,
            version: "0.0.0".into(),
            port: 1,
            security: None,
            root: None,
            machine: None,
            net: None,
            container: None,
        };
        server.write_files(2, "pw", "test server", "file:///nonexistent/simple").unwrap();
        let (code, out) = server.run_ctl("start").unwrap();
        assert_eq!(code, 0, "{out}");
        let pid = server.recorded_pid().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(procs::pid_alive(pid));
        assert_eq!(server.run_ctl("status").unwrap().0, 0);
        assert_eq!(server.run_ctl("start").unwrap().0, 1, "second start refused");
        let members = procs::group_members(pid);
        assert!(members.len() >= 2, "{members:?}");
        let (code, out) = server.run_ctl("stop").unwrap();
        assert_eq!(code, 0, "{out}");
        assert!(procs::wait_gone(&members, Duration::from_secs(5)));
        assert_eq!(server.run_ctl("status").unwrap().0, 3);
        assert_eq!(server.run_ctl("stop").unwrap().0, 0, "stop is idempotent");
    }
}
