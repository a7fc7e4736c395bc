//! The tool's config (`inmanta-migrate.toml`, format of config/example.toml)
//! for one lab instance.

use camino::Utf8PathBuf;

/// How the tool reaches a side's machine over ssh (`[<side>.host]`).
#[derive(Clone, Debug)]
pub struct SshInputs {
    /// Who logs in: root, or the user whose manager runs the server.
    pub user: String,
    pub port: u16,
    pub identity_file: Utf8PathBuf,
    pub known_hosts: Utf8PathBuf,
}

/// What the config of one side needs.
#[derive(Clone, Debug)]
pub struct SideConfigInputs {
    /// `None`: the side's commands run where the tool runs.
    pub ssh: Option<SshInputs>,
    pub api_url: String,
    /// `version_command`: `<venv>/bin/inmanta --version`, or that of the
    /// server's image.
    pub version_command: Vec<String>,
    pub service: ServiceInputs,
    /// Where the side's PostgreSQL is reached (`127.0.0.1` unless the side
    /// is on a host of its own).
    pub address: String,
    pub db_port: u16,
    pub db_password_file: Utf8PathBuf,
    pub admin_password_file: Utf8PathBuf,
    /// The API token file (`token = { file = ... }`) of a secure instance.
    pub token_file: Option<Utf8PathBuf>,
    /// The CA of a secure instance's server certificate (`ca_file`).
    pub ca_file: Option<Utf8PathBuf>,
}

/// How a side's server is started and stopped.
#[derive(Clone, Debug)]
pub enum ServiceInputs {
    /// The lab's ctl script (start|stop|status) and the server's log file.
    Ctl { ctl: Utf8PathBuf, log_file: Utf8PathBuf },
    /// `inmanta-server.service` of the machine the side's commands run on,
    /// its journal as the log.
    Systemd,
    /// `inmanta-server.service` of the user manager of the user the side's
    /// commands run as (Inmanta's container install: a quadlet).
    SystemdUser,
}

impl ServiceInputs {
    fn toml(&self) -> String {
        match self {
            ServiceInputs::Ctl { ctl, log_file } => {
                let ctl = ctl.as_str();
                format!(
                    "manager = \"command\"\nstart = {}\nstop = {}\nstatus = {}\nlog_file = {}\n",
                    argv(&[ctl, "start"]),
                    argv(&[ctl, "stop"]),
                    argv(&[ctl, "status"]),
                    q(log_file.as_str())
                )
            }
            ServiceInputs::Systemd => "manager = \"systemd\"\nunit = \"inmanta-server.service\"\n".into(),
            ServiceInputs::SystemdUser => {
                "manager = \"systemd\"\nuser = true\nunit = \"inmanta-server.service\"\n".into()
            }
        }
    }
}

/// What one `[[intermediate]]` server needs (it runs where the NEW one does).
#[derive(Clone, Debug)]
pub struct IntermediateInputs {
    pub version: String,
    pub service: ServiceInputs,
}

/// What the whole config needs.
#[derive(Clone, Debug)]
pub struct ConfigInputs {
    pub intermediates: Vec<IntermediateInputs>,
    pub instance: String,
    pub work_dir: Utf8PathBuf,
    pub pg_bin_dir: Utf8PathBuf,
    pub old: SideConfigInputs,
    pub new: SideConfigInputs,
    /// `[rehearsal]`: the port (0: none given) and, where the server can
    /// create it, the state directory (default: the tool's).
    pub rehearsal_port: u16,
    pub rehearsal_state_dir: Option<Utf8PathBuf>,
}

/// A TOML basic string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn argv(items: &[&str]) -> String {
    let parts: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", parts.join(", "))
}

fn side(out: &mut String, name: &str, s: &SideConfigInputs) {
    let mut access = String::new();
    if let Some(token) = &s.token_file {
        access.push_str(&format!("token = {{ file = {} }}\n", q(token.as_str())));
    }
    if let Some(ca) = &s.ca_file {
        access.push_str(&format!("ca_file = {}\n", q(ca.as_str())));
    }
    out.push_str(&format!(
        "[{name}]\n\
         api_url = {api}\n\
         {access}\
         version_command = {version}\n\
         \n\
         {host}\
         [{name}.service]\n\
         {service}\
         \n\
         [{name}.database]\n\
         host = {address}\n\
         port = {port}\n\
         name = \"inmanta\"\n\
         user = \"inmanta\"\n\
         password = {{ file = {pw} }}\n\
         admin_user = \"postgres\"\n\
         admin_password = {{ file = {admin} }}\n\
         \n",
        api = q(&s.api_url),
        host = match &s.ssh {
            None => String::new(),
            Some(ssh) => format!(
                "[{name}.host]\nssh = {}\nport = {}\nidentity_file = {}\nknown_hosts = {}\n\n",
                q(&format!("{}@127.0.0.1", ssh.user)),
                ssh.port,
                q(ssh.identity_file.as_str()),
                q(ssh.known_hosts.as_str())
            ),
        },
        version = argv(&s.version_command.iter().map(String::as_str).collect::<Vec<_>>()),
        service = s.service.toml(),
        address = q(&s.address),
        port = s.db_port,
        pw = q(s.db_password_file.as_str()),
        admin = q(s.admin_password_file.as_str()),
    ));
}

/// The text of `inmanta-migrate.toml`.
pub fn render_tool_config(c: &ConfigInputs) -> String {
    let mut out = format!(
        "# inmanta-migrate configuration of the lab instance {instance}.\n\
         # Written by `cargo xtask lab up`; the OLD server runs with seeded\n\
         # environments, the NEW side has an empty database and a stopped server.\n\
         \n\
         work_dir = {work}\n\
         \n",
        instance = q(&c.instance),
        work = q(c.work_dir.as_str()),
    );
    side(&mut out, "old", &c.old);
    side(&mut out, "new", &c.new);
    for via in &c.intermediates {
        out.push_str(&format!(
            "[[intermediate]]\nversion = {}\n\n[intermediate.service]\n{}\n",
            q(&via.version),
            via.service.toml()
        ));
    }
    if c.rehearsal_port != 0 {
        out.push_str(&format!("[rehearsal]\nport = {}\n", c.rehearsal_port));
        if let Some(dir) = &c.rehearsal_state_dir {
            out.push_str(&format!("state_dir = {}\n", q(dir.as_str())));
        }
        out.push('\n');
    }
    out.push_str(&format!("[pg]\nbin_dir = {}\n", q(c.pg_bin_dir.as_str())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ConfigInputs {
        let s = |n: &str, port: u16| SideConfigInputs {
            ssh: None,
            api_url: format!("http://127.0.0.1:{}", port + 3000),
            version_command: vec![format!("/lab/cache/venvs/{n}/bin/inmanta"), "--version".into()],
            service: ServiceInputs::Ctl {
                ctl: format!("/lab/i/x/{n}/ctl").into(),
                log_file: format!("/lab/i/x/{n}/log/server.log").into(),
            },
            address: "127.0.0.1".into(),
            db_port: port,
            db_password_file: format!("/lab/i/x/secrets/{n}-db-password").into(),
            admin_password_file: format!("/lab/i/x/secrets/{n}-postgres-password").into(),
            token_file: None,
            ca_file: None,
        };
        ConfigInputs {
            intermediates: Vec::new(),
            instance: "x".into(),
            work_dir: "/lab/i/x/work".into(),
            pg_bin_dir: "/usr/lib/postgresql/15/bin".into(),
            old: s("old", 15431),
            new: s("new", 15432),
            rehearsal_port: 18883,
            rehearsal_state_dir: Some("/lab/i/x/new/rehearsal-state".into()),
        }
    }

    #[test]
    fn config_parses_with_the_expected_keys() {
        let text = render_tool_config(&inputs());
        let v: toml::Table = text.parse().unwrap();
        assert_eq!(v["work_dir"].as_str(), Some("/lab/i/x/work"));
        assert_eq!(v["pg"]["bin_dir"].as_str(), Some("/usr/lib/postgresql/15/bin"));
        assert_eq!(v["rehearsal"]["port"].as_integer(), Some(18883));
        assert_eq!(v["rehearsal"]["state_dir"].as_str(), Some("/lab/i/x/new/rehearsal-state"));
        for (side, port) in [("old", 15431), ("new", 15432)] {
            let s = &v[side];
            assert_eq!(s["api_url"].as_str(), Some(format!("http://127.0.0.1:{}", port + 3000).as_str()));
            assert_eq!(s["version_command"].as_array().unwrap()[1].as_str(), Some("--version"));
            let svc = &s["service"];
            assert_eq!(svc["manager"].as_str(), Some("command"));
            for action in ["start", "stop", "status"] {
                let a = svc[action].as_array().unwrap();
                assert_eq!(a[0].as_str(), Some(format!("/lab/i/x/{side}/ctl").as_str()));
                assert_eq!(a[1].as_str(), Some(action));
            }
            assert!(svc["log_file"].as_str().unwrap().ends_with("/log/server.log"));
            let db = &s["database"];
            assert_eq!(db["host"].as_str(), Some("127.0.0.1"));
            assert_eq!(db["port"].as_integer(), Some(port));
            assert_eq!(db["name"].as_str(), Some("inmanta"));
            assert_eq!(db["user"].as_str(), Some("inmanta"));
            assert_eq!(db["admin_user"].as_str(), Some("postgres"));
            assert!(db["password"]["file"].as_str().unwrap().ends_with("-db-password"));
            assert!(db["admin_password"]["file"].as_str().unwrap().ends_with("-postgres-password"));
        }
    }

    #[test]
    fn secure_config_has_token_file_and_ca_file() {
        let plain: toml::Table = render_tool_config(&inputs()).parse().unwrap();
        assert!(plain["old"].get("token").is_none() && plain["old"].get("ca_file").is_none());
        let mut i = inputs();
        for (n, s) in [("old", &mut i.old), ("new", &mut i.new)] {
            s.api_url = s.api_url.replace("http:", "https:");
            s.token_file = Some(format!("/lab/i/x/secrets/{n}-token").into());
            s.ca_file = Some("/lab/i/x/secrets/ca.pem".into());
        }
        let v: toml::Table = render_tool_config(&i).parse().unwrap();
        for side in ["old", "new"] {
            assert!(v[side]["api_url"].as_str().unwrap().starts_with("https://127.0.0.1:"));
            assert_eq!(v[side]["token"]["file"].as_str(), Some(format!("/lab/i/x/secrets/{side}-token").as_str()));
            assert_eq!(v[side]["ca_file"].as_str(), Some("/lab/i/x/secrets/ca.pem"));
            assert!(v[side].get("tls_verify").is_none(), "verification stays on (the default)");
        }
    }

    #[test]
    fn a_booted_side_is_managed_by_systemd_with_its_journal() {
        let mut i = inputs();
        i.old.service = ServiceInputs::Systemd;
        i.new.service = ServiceInputs::Systemd;
        let v: toml::Table = render_tool_config(&i).parse().unwrap();
        for side in ["old", "new"] {
            let svc = v[side]["service"].as_table().unwrap();
            assert_eq!(svc["manager"].as_str(), Some("systemd"));
            assert_eq!(svc["unit"].as_str(), Some("inmanta-server.service"));
            assert!(svc.get("log_file").is_none() && svc.get("start").is_none(), "the journal is the log: {svc:?}");
        }
    }

    #[test]
    fn a_container_side_is_a_user_unit_reached_as_its_user() {
        let mut i = inputs();
        i.new.service = ServiceInputs::SystemdUser;
        i.new.ssh = Some(SshInputs {
            user: "inmanta".into(),
            port: 2222,
            identity_file: "/lab/i/x/ssh-new/id_ed25519".into(),
            known_hosts: "/lab/i/x/ssh-new/known_hosts".into(),
        });
        let v: toml::Table = render_tool_config(&i).parse().unwrap();
        let svc = v["new"]["service"].as_table().unwrap();
        assert_eq!(svc["manager"].as_str(), Some("systemd"));
        assert_eq!(svc["user"].as_bool(), Some(true));
        assert_eq!(svc["unit"].as_str(), Some("inmanta-server.service"));
        assert_eq!(v["new"]["host"]["ssh"].as_str(), Some("inmanta@127.0.0.1"));
        assert_eq!(v["new"]["host"]["port"].as_integer(), Some(2222));
    }

    #[test]
    fn strings_are_escaped() {
        let mut i = inputs();
        i.work_dir = "/lab/with \"quote\" and \\".into();
        let v: toml::Table = render_tool_config(&i).parse().unwrap();
        assert_eq!(v["work_dir"].as_str(), Some("/lab/with \"quote\" and \\"));
    }
}
