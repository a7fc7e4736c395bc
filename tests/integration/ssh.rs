//! The ssh runner against a real `sshd` on loopback: Debian's openssh-server,
//! started by the test on a free port with its own config, host key, client
//! key and known_hosts (the machine's own ssh setup is neither used nor
//! touched). Ignored by plain `cargo test`; `cargo xtask ci` installs
//! openssh-server and runs them.
//!
//! What they prove, on the real lab where a server is involved: the service
//! commands, `version_command` and the read of a server's inmanta.cfg really
//! run over ssh (a wrapper logs `$SSH_CONNECTION` and its argv), argv
//! elements with spaces, both quote kinds and shell syntax arrive intact and
//! uninterpreted, and host keys are checked strictly.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use camino::{Utf8Path, Utf8PathBuf};
use fake_inmanta::Flavor;
use lab::Side;
use serde_json::Value;

use crate::{
    support::lab::{lab, slot},
    support::{Fakes, Run, check_items, item},
};

const SSHD: &str = "/usr/sbin/sshd";
const NEEDS: &str = "run `cargo xtask ci`, which installs openssh-server (apt-get install openssh-server)";

/// A real sshd on 127.0.0.1, as root, on a port of its own; killed on drop.
pub struct Sshd {
    child: Child,
    /// Everything of the fixture; removed on drop, after sshd is gone.
    tmp: tempfile::TempDir,
    pub port: u16,
    /// The client's private key and known_hosts, in a directory whose name
    /// has a space and both quote kinds.
    pub identity: Utf8PathBuf,
    pub known_hosts: Utf8PathBuf,
    log: Utf8PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Single-quotes a string for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A TOML basic string (a JSON string is one) or inline array.
fn toml<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn utf8(path: &Path) -> Utf8PathBuf {
    Utf8PathBuf::from_path_buf(path.to_path_buf()).unwrap()
}

fn keygen(path: &Utf8Path, comment: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path.as_str()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen ({e}): {NEEDS}"));
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    // "<type> <base64>", without the comment.
    let public = fs::read_to_string(format!("{path}.pub")).unwrap();
    public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Sshd {
    /// Starts sshd. Fails (never skips) when openssh-server is missing.
    pub fn start() -> Sshd {
        assert!(Path::new(SSHD).exists(), "{SSHD} is missing: openssh-server is not installed; {NEEDS}");
        assert!(
            Command::new("ssh").arg("-V").stderr(Stdio::null()).status().is_ok(),
            "the ssh client is not installed; {NEEDS}"
        );
        assert!(rustix::process::geteuid().is_root(), "the sshd fixture logs in as root: run the tests as root");
        // sshd's privilege separation directory (the package's unit creates it).
        fs::create_dir_all("/run/sshd").unwrap();
        fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755)).unwrap();

        let tmp = tempfile::Builder::new().prefix("inmanta-migrate-sshd-").tempdir().unwrap();
        let base = utf8(tmp.path());
        let server = base.join("sshd");
        let client = base.join(r#"client it's "keys""#);
        fs::create_dir(&server).unwrap();
        fs::create_dir(&client).unwrap();
        let host_key = server.join("host_ed25519");
        let host_pub = keygen(&host_key, "inmanta-migrate test sshd");
        let identity = client.join("id_ed25519");
        let client_pub = keygen(&identity, "inmanta-migrate test client");
        let authorized = server.join("authorized_keys");
        fs::write(&authorized, format!("{client_pub}\n")).unwrap();
        let log = server.join("sshd.log");
        let config = server.join("sshd_config");

        // OpenSSH 9.8+ blocks a source address after failed or unauthenticated
        // connections (the wrong-host-key test makes some); older ones do not
        // know the option.
        let mut penalties = "PerSourcePenalties no\n";
        for attempt in 0..5 {
            let port = free_port();
            let text = format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {authorized}\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PrintMotd no\n\
                 LogLevel VERBOSE\n\
                 {penalties}",
                pid = server.join("sshd.pid"),
            );
            fs::write(&config, text).unwrap();
            let test = Command::new(SSHD).args(["-t", "-f", config.as_str()]).output().unwrap();
            if !test.status.success() {
                let err = String::from_utf8_lossy(&test.stderr);
                if !penalties.is_empty() && err.contains("PerSourcePenalties") {
                    penalties = "";
                    fs::write(&config, fs::read_to_string(&config).unwrap().replace("PerSourcePenalties no\n", ""))
                        .unwrap();
                } else {
                    panic!("sshd -t -f {config}: {err}");
                }
            }
            let mut command = Command::new(SSHD);
            command
                .args(["-D", "-e", "-f", config.as_str()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap());
            die_with_this_thread(&mut command);
            let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
            let started = Instant::now();
            loop {
                let text = fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Server listening on 127.0.0.1") {
                    let known_hosts = client.join("known_hosts");
                    fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}\n")).unwrap();
                    return Sshd { child, tmp, port, identity, known_hosts, log };
                }
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(
                        text.contains("Address already in use") && attempt < 4,
                        "sshd exited ({status}) before listening:\n{text}"
                    );
                    break;
                }
                if started.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    panic!("sshd did not listen within 20 s:\n{text}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!()
    }

    /// The fixture's directory: files of a test go here too.
    pub fn dir(&self) -> Utf8PathBuf {
        utf8(self.tmp.path())
    }

    /// The `[<side>.host]` table that runs that side's commands through this
    /// sshd, checking its host key against `known_hosts`.
    pub fn host_table(&self, side: &str, known_hosts: &Utf8Path) -> String {
        format!(
            "\n[{side}.host]\nssh = \"root@127.0.0.1\"\nport = {}\nidentity_file = {}\nknown_hosts = {}\n",
            self.port,
            toml(&self.identity),
            toml(known_hosts)
        )
    }

    /// A known_hosts that names another key for this sshd's address.
    pub fn wrong_known_hosts(&self) -> Utf8PathBuf {
        let dir = self.identity.parent().unwrap();
        let other = keygen(&dir.join("other_host_key"), "not the sshd's key");
        let path = dir.join("known_hosts (wrong)");
        fs::write(&path, format!("[127.0.0.1]:{} {other}\n", self.port)).unwrap();
        path
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sessions sshd accepted (one per command run over ssh).
    pub fn sessions(&self) -> usize {
        self.log().matches("Accepted publickey for root from 127.0.0.1").count()
    }
}

/// SIGKILL for the child when the thread that started it ends (a killed
/// test run leaves no sshd behind).
#[allow(unsafe_code)]
fn die_with_this_thread(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes the
    // prctl(2) system call, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// Writes a bash script at `path` that appends one record to `log` per call
/// (`$SSH_CONNECTION`, `$0` and every argument, NUL-separated, records
/// separated by RS) and then runs `target` with the same arguments.
fn wrapper(path: &Utf8Path, target: &str, log: &Utf8Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let script = format!(
        "#!/bin/bash\n\
         {{ printf '%s\\0' \"${{SSH_CONNECTION:-local}}\" \"$0\" \"$@\"; printf '\\036'; }} >> {log}\n\
         exec {target} \"$@\"\n",
        log = sh_quote(log.as_str()),
        target = sh_quote(target),
    );
    fs::write(path, script).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// One call a wrapper logged.
#[derive(Debug)]
struct Call {
    /// `$SSH_CONNECTION`, or "local".
    connection: String,
    /// `$0` and the arguments.
    argv: Vec<String>,
}

impl Call {
    /// The sshd port the call came through, if it came through sshd.
    fn sshd_port(&self) -> Option<u16> {
        let fields: Vec<&str> = self.connection.split(' ').collect();
        (fields.len() == 4 && fields[0] == "127.0.0.1").then(|| fields[3].parse().ok()).flatten()
    }
}

fn calls(log: &Utf8Path) -> Vec<Call> {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.split('\u{1e}')
        .filter(|r| !r.is_empty())
        .map(|record| {
            let mut fields: Vec<String> = record.split('\0').map(str::to_owned).collect();
            assert_eq!(fields.pop().as_deref(), Some(""), "a record ends with NUL: {record:?}");
            let connection = fields.remove(0);
            Call { connection, argv: fields }
        })
        .collect()
}

/// Sets (`Some`) or removes (`None`) `key` in `[table]` of a config as the
/// lab writes it (one key per line, tables in `[...]` header lines).
fn set(text: &str, table: &str, key: &str, value: Option<&str>) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let header = lines
        .iter()
        .position(|l| l.trim() == format!("[{table}]"))
        .unwrap_or_else(|| panic!("no [{table}] in the config:\n{text}"));
    let end = lines[header + 1..].iter().position(|l| l.starts_with('[')).map_or(lines.len(), |i| header + 1 + i);
    let found = (header + 1..end).find(|&i| lines[i].split('=').next().is_some_and(|k| k.trim() == key));
    match (found, value) {
        (Some(i), Some(v)) => lines[i] = format!("{key} = {v}"),
        (Some(i), None) => {
            lines.remove(i);
        }
        (None, Some(v)) => lines.insert(header + 1, format!("{key} = {v}")),
        (None, None) => {}
    }
    lines.join("\n") + "\n"
}

/// stdout and stderr of a run, for searching.
fn output(run: &Run) -> String {
    format!("{}\n{}", run.stdout, run.stderr)
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn the_old_server_stops_over_ssh_through_a_quoted_path() {
    let _slot = slot();
    let t0 = Instant::now();
    let sshd = Sshd::start();
    let lab = lab("ssh-stop", "8.7.6");
    let t_up = t0.elapsed();

    // The old ctl script and both servers' `inmanta` reached through wrappers
    // in a directory whose name has a space and both quote kinds.
    let dir = sshd.dir().join(r#"it's a "dir""#);
    let log = sshd.dir().join("argv.log");
    let ctl = dir.join("old ctl");
    let old_inmanta = dir.join("old inmanta");
    let new_inmanta = dir.join("new inmanta");
    wrapper(&ctl, lab.ctl_path(Side::Old).as_str(), &log);
    wrapper(&old_inmanta, lab.venv(Side::Old).join("bin/inmanta").as_str(), &log);
    wrapper(&new_inmanta, lab.venv(Side::New).join("bin/inmanta").as_str(), &log);
    // ctl looks at its first argument only; this one must arrive as it is.
    let odd = r#"it's "odd"; $(echo not run) `echo not run` * ~ $HOME"#;

    let mut text = fs::read_to_string(lab.config_path()).unwrap();
    text = set(&text, "old", "version_command", Some(&toml(&[old_inmanta.as_str(), "--version"])));
    text = set(&text, "old.service", "start", Some(&toml(&[ctl.as_str(), "start"])));
    text = set(&text, "old.service", "stop", Some(&toml(&[ctl.as_str(), "stop"])));
    text = set(&text, "old.service", "status", Some(&toml(&[ctl.as_str(), "status", odd])));
    // No step runs the old side's version_command (the old API answers until
    // stop-server); `check` runs the new side's, whose server is stopped: over
    // ssh as well, so a version_command through the quoted path really runs.
    text = set(&text, "new", "version_command", Some(&toml(&[new_inmanta.as_str(), "--version"])));
    text += &sshd.host_table("old", &sshd.known_hosts);
    text += &sshd.host_table("new", &sshd.known_hosts);
    fs::write(lab.config_path(), text).unwrap();

    let t1 = Instant::now();
    let check = lab.run(&["check", "--json"]);
    check.success();
    let items = check_items(&check);
    let service = item(&items, "old service");
    assert_eq!(service["status"], "pass", "{service}");
    assert!(service["detail"].as_str().unwrap().ends_with("on root@127.0.0.1: running"), "{service}");
    let version = item(&items, "new server version");
    assert_eq!(version["detail"], "inmanta-core 14.0.0 installed", "{version}");

    lab.run(&["halt-all"]).success();
    assert!(lab.server_running(Side::Old), "halt-all leaves the server running");
    let sessions_before_stop = sshd.sessions();
    lab.run(&["stop-server"]).success().stdout_has("the old server stopped");
    assert!(!lab.server_running(Side::Old), "the old server process is gone");
    assert!(lab.client(Side::Old).unwrap().server_version().is_err(), "the old API is silent");
    assert!(sshd.sessions() > sessions_before_stop, "stop-server went through sshd:\n{}", sshd.log());
    lab.run(&["stop-server"]).success().stdout_has("nothing to do");
    let t_tool = t1.elapsed();

    // Every call came through this sshd, with its argv intact.
    let calls = calls(&log);
    let argv = |program: &Utf8Path, args: &[&str]| -> Vec<String> {
        std::iter::once(program.as_str()).chain(args.iter().copied()).map(str::to_owned).collect()
    };
    let status = argv(&ctl, &["status", odd]);
    let stop = argv(&ctl, &["stop"]);
    let new_version = argv(&new_inmanta, &["--version"]);
    for call in &calls {
        assert_eq!(call.sshd_port(), Some(sshd.port), "called through sshd: {call:?}");
        assert!([&status, &stop, &new_version].contains(&&call.argv), "an unexpected or mangled call: {call:?}");
    }
    let count = |argv: &Vec<String>| calls.iter().filter(|c| &c.argv == argv).count();
    assert_eq!(count(&stop), 1, "{calls:#?}");
    assert!(count(&status) >= 4, "check, stop-server's check, its run and its wait: {calls:#?}");
    assert_eq!(count(&new_version), 1, "{calls:#?}");
    assert!(sshd.sessions() >= calls.len(), "{}", sshd.log());
    eprintln!(
        "timings: sshd + lab up {:.1} s, check + halt-all + stop-server x2 {:.1} s ({} ssh sessions, {} wrapped calls)",
        t_up.as_secs_f64(),
        t_tool.as_secs_f64(),
        sshd.sessions(),
        calls.len()
    );
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn a_wrong_host_key_is_refused_and_nothing_changes() {
    let _slot = slot();
    let sshd = Sshd::start();
    let lab = lab("ssh-hostkey", "8.7.6");
    let wrong = sshd.wrong_known_hosts();
    let mut text = fs::read_to_string(lab.config_path()).unwrap();
    text += &sshd.host_table("old", &wrong);
    fs::write(lab.config_path(), text).unwrap();
    let halted = |lab: &crate::support::lab::Lab| -> Vec<(String, Value)> {
        lab.environments(Side::Old).into_iter().map(|(name, e)| (name, e["halted"].clone())).collect()
    };
    let before = halted(&lab);

    let check = lab.run(&["check"]);
    check.code(3).output_has("Host key verification failed");
    let text = output(&check);
    let at = text.find("old service").unwrap_or_else(|| panic!("no old service check:\n{text}"));
    assert!(text[at..].contains("Host key verification failed"), "the old service check names it:\n{text}");
    assert!(text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{text}");

    let stop = lab.run(&["stop-server", "--force"]);
    stop.code(3).stderr_has("Host key verification failed");

    assert!(lab.server_running(Side::Old), "the old server still runs");
    assert_eq!(halted(&lab), before, "no environment changed");
    assert_eq!(sshd.sessions(), 0, "no session was opened:\n{}", sshd.log());
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn the_database_settings_are_read_from_inmanta_cfg_over_ssh() {
    let _slot = slot();
    let sshd = Sshd::start();
    let lab = lab("ssh-cfg", "8.7.6");

    // The server's config dir, with a space and both quote kinds in its name;
    // the password in inmanta.d (in a file whose name needs quoting) wins
    // over the one in inmanta.cfg, as it does for the server.
    let etc = sshd.dir().join(r#"etc it's "inmanta""#);
    fs::create_dir_all(etc.join("inmanta.d")).unwrap();
    let password = lab.db_password(Side::Old).unwrap();
    let decoy = "decoy-password-from-inmanta.cfg";
    fs::write(
        etc.join("inmanta.cfg"),
        format!(
            "[config]\nstate_dir=/nonexistent\n\n[database]\nhost=127.0.0.1\nport={}\nname=inmanta\nusername=inmanta\npassword={decoy}\n",
            lab.ports().pg_old
        ),
    )
    .unwrap();
    fs::write(etc.join("inmanta.d").join("10 it's \"secret\".cfg"), format!("[database]\npassword={password}\n"))
        .unwrap();
    fs::write(etc.join("inmanta.d").join("README"), "[database]\npassword=not-a-cfg-file\n").unwrap();

    let mut text = fs::read_to_string(lab.config_path()).unwrap();
    for key in ["host", "port", "name", "user", "password"] {
        text = set(&text, "old.database", key, None);
    }
    text = set(&text, "old.database", "inmanta_config", Some(&toml(&etc)));
    text += &sshd.host_table("old", &sshd.known_hosts);
    fs::write(lab.config_path(), &text).unwrap();

    // "127.0.0.1" in a remote server's file is that server's own machine, not
    // this one, where the PostgreSQL tools run: refused, with the way out.
    let loopback = lab.run(&["check"]);
    loopback.code(3).output_has("puts the database on 127.0.0.1").output_has("set `database.host`");
    // Here the "remote" host is this machine, so saying so is right; the
    // other keys still come from the server's files.
    text = set(&text, "old.database", "host", Some("\"127.0.0.1\""));
    fs::write(lab.config_path(), text).unwrap();

    let check = lab.run(&["check", "--json"]);
    check.success();
    let items = check_items(&check);
    let db = item(&items, "old database");
    assert_eq!(db["status"], "pass", "{db}");
    let expected = format!("inmanta@127.0.0.1:{}/inmanta answers: PostgreSQL", lab.ports().pg_old);
    assert!(db["detail"].as_str().unwrap().starts_with(&expected), "{db}");
    let human = lab.run(&["check"]);
    human.success().stdout_has("old database");
    for run in [&check, &human] {
        let text = output(run);
        for secret in [password.as_str(), decoy, "not-a-cfg-file"] {
            assert!(!text.contains(secret), "{secret:?} appears in the output:\n{text}");
        }
    }
    // test -f, find, two cat and the service status, per run.
    assert!(sshd.sessions() >= 8, "read over ssh:\n{}", sshd.log());
}

#[test]
#[ignore = "needs sshd: cargo xtask ci"]
fn remote_argv_arrives_literally() {
    let sshd = Sshd::start();
    let fakes = Fakes::new(Flavor::V8, Flavor::V14);
    let marker = format!("/tmp/inmanta-migrate-pwned-{}-{}", std::process::id(), sshd.port);
    let _ = fs::remove_file(&marker);
    let log = sshd.dir().join("argv.log");
    let status = sshd.dir().join(r#"it's a "dir""#).join("status ctl");
    wrapper(&status, "/bin/true", &log);
    let odd: Vec<String> = vec![
        format!("weird; touch {marker}"),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("' ; touch {marker}; echo '"),
        format!("\" ; touch {marker}; echo \""),
        format!("| touch {marker}"),
        format!("&& touch {marker} &"),
        format!("> {marker}"),
        format!("a\ntouch {marker}"),
        String::new(),
        "*".into(),
        "~".into(),
        "$HOME ${HOME}".into(),
        "FOO=bar".into(),
        "--".into(),
        "-x".into(),
        "back\\slash\\".into(),
        "# not a comment".into(),
        "tab\there".into(),
        "!".into(),
        "{a,b}".into(),
        "naïve ünïcode".into(),
    ];
    let mut expected = vec![status.to_string()];
    expected.extend(odd.iter().cloned());
    let mut argv = vec![status.to_string()];
    argv.extend(odd.iter().cloned());

    let config = fakes.config("");
    let base = set(&fs::read_to_string(&config).unwrap(), "old.service", "status", Some(&toml(&argv)));
    // Locally first (the reference), then the same argv over ssh.
    for (i, host) in [String::new(), sshd.host_table("old", &sshd.known_hosts)].iter().enumerate() {
        fs::write(&config, format!("{base}{host}")).unwrap();
        let run = fakes.test().config(&config).args(["check", "--json"]).run();
        let items = check_items(&run);
        let service = item(&items, "old service");
        assert_eq!(service["status"], "pass", "{service}");
        assert!(
            service["detail"].as_str().unwrap().ends_with("running"),
            "the wrapper's exit code came back: {service}"
        );
        let calls = calls(&log);
        assert_eq!(calls.len(), i + 1, "{calls:#?}");
        let call = calls.last().unwrap();
        assert_eq!(call.argv, expected, "the argv arrives literally ({})", if i == 0 { "locally" } else { "over ssh" });
        if i == 0 {
            assert_eq!(call.connection, "local");
        } else {
            assert_eq!(call.sshd_port(), Some(sshd.port), "{call:?}");
        }
        assert!(!Path::new(&marker).exists(), "{marker} was created: the remote shell interpreted an argument");
    }
}
