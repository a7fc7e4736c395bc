//! The one TOML file that configures a migration (see `config/example.toml`).
//!
//! Loading parses it against the [schema](schema) (unknown keys refused),
//! makes relative paths absolute, checks every rule that needs no network
//! ([validate]), then reads the secrets and the CA files ([resolve]) into a
//! [`Loaded`], which keeps them apart from the values. Any problem is a
//! [`ConfigError`] naming the file, the line and column where TOML knows
//! them ([locate]), and the key.

mod locate;
mod resolve;
mod schema;
mod validate;

use camino::{Utf8Path, Utf8PathBuf};

pub use crate::error::ConfigError;
pub use resolve::{Access, Loaded};
pub use schema::*;
pub use validate::same_url;

/// A problem found after parsing, tied to a key.
struct Invalid {
    key: String,
    message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { key: key.into(), message: message.into() }
}

impl Config {
    /// Reads, parses, validates and resolves the file.
    pub fn load(path: &Utf8Path) -> Result<Loaded, ConfigError> {
        let plain =
            |key: Option<String>, message: String| ConfigError { file: path.to_owned(), location: None, key, message };
        let text = std::fs::read_to_string(path).map_err(|e| {
            plain(None, format!("cannot read it: {e} (give another file with --config or INMANTA_MIGRATE_CONFIG)"))
        })?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().map(Utf8Path::to_owned).unwrap_or_default();
        let base = if base.as_str().is_empty() { Utf8PathBuf::from(".") } else { base };
        let base = base.canonicalize_utf8().unwrap_or(base);
        config.path = path.to_owned();
        config.make_paths_absolute(&base);
        let problems = config.validate();
        let problems = if problems.is_empty() {
            match resolve::resolve(config) {
                Ok(loaded) => return Ok(loaded),
                Err(problems) => problems,
            }
        } else {
            problems
        };
        let first = problems.into_iter().next().expect("at least one problem");
        Err(ConfigError {
            file: path.to_owned(),
            location: locate::locate_key(&text, &first.key),
            key: Some(first.key),
            message: first.message,
        })
    }

    /// Parses TOML text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Utf8Path) -> Result<Config, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| {
            let span = e.span();
            ConfigError {
                file: path.to_owned(),
                location: span.as_ref().map(|s| locate::line_col(text, s.start)),
                key: span.and_then(|s| locate::key_at(text, s.start)),
                message: e.message().trim().to_owned(),
            }
        })
    }

    fn make_paths_absolute(&mut self, base: &Utf8Path) {
        let abs = |p: &mut Utf8PathBuf| *p = base.join(&*p);
        abs(&mut self.work_dir);
        for side in [&mut self.old, &mut self.new] {
            if let Some(p) = &mut side.ca_file {
                abs(p);
            }
            if let Some(t) = &mut side.token {
                t.make_paths_absolute(base);
            }
            for p in [&mut side.host.identity_file, &mut side.host.known_hosts].into_iter().flatten() {
                abs(p);
            }
            let db = &mut side.database;
            for s in [&mut db.password, &mut db.admin_password].into_iter().flatten() {
                s.make_paths_absolute(base);
            }
            if let Some(p) = &mut db.passfile {
                abs(p);
            }
        }
        for via in &mut self.intermediate {
            if let Some(host) = &mut via.host {
                for p in [&mut host.identity_file, &mut host.known_hosts].into_iter().flatten() {
                    abs(p);
                }
            }
        }
        if let Some(p) = &mut self.dump.dir {
            abs(p);
        }
        if let Some(p) = &mut self.pg.bin_dir {
            abs(p);
        }
    }

    pub fn side(&self, side: Side) -> &Orchestrator {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    /// The versions of the `[[intermediate]]` servers, in order.
    pub fn intermediate_versions(&self) -> Vec<&str> {
        self.intermediate.iter().map(|v| v.version.as_str()).collect()
    }

    /// The scratch database `rehearse` copies the old one into.
    pub fn rehearsal_database(&self) -> String {
        self.rehearsal.database.clone().unwrap_or_else(|| format!("{}_rehearsal", self.new.database.name()))
    }

    /// The rehearsal server's API: the new server's URL on the rehearsal port.
    pub fn rehearsal_api_url(&self) -> String {
        with_port(&self.new.api_url, self.rehearsal.port)
    }

    /// Where the dump and its manifest live.
    pub fn dump_dir(&self) -> Utf8PathBuf {
        self.dump.dir.clone().unwrap_or_else(|| self.work_dir.join("dump"))
    }
}

/// `scheme://host[:port][/path]` with another port (IPv6 hosts in brackets).
pub fn with_port(url: &str, port: u16) -> String {
    let url = url.trim().trim_end_matches('/');
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let host = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    };
    format!("{scheme}://{host}:{port}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rehearsal_url_is_the_new_one_on_its_port() {
        assert_eq!(with_port("https://new.example.com:8888/", 8889), "https://new.example.com:8889");
        assert_eq!(with_port("http://new.example.com", 18889), "http://new.example.com:18889");
        assert_eq!(with_port("http://[::1]:8888/base", 9), "http://[::1]:9/base");
        assert_eq!(with_port("http://[::1]", 9), "http://[::1]:9");
    }

    const MINIMAL: &str = r#"
work_dir = "/tmp/w"
[old]
api_url = "http://127.0.0.1:1"
[old.service]
manager = "systemd"
[old.database]
port = 5433
[new]
api_url = "http://127.0.0.1:2"
[new.service]
manager = "command"
start = ["ctl", "start"]
stop = ["ctl", "stop"]
status = ["ctl", "status"]
"#;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("c.toml")).unwrap();
        std::fs::write(&path, text).unwrap();
        Config::load(&path).map(|loaded| loaded.config)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load_text(MINIMAL).unwrap();
        assert_eq!(c.dump.format, DumpFormat::Directory);
        assert_eq!(c.dump.jobs, 2);
        assert_eq!(c.reconcile.concurrency, 4);
        assert_eq!(c.timeouts.api, Duration::from_secs(30));
        assert_eq!(c.old.service.unit(), "inmanta-server.service");
        assert_eq!(c.dump_dir(), Utf8PathBuf::from("/tmp/w/dump"));
        assert!(c.old.tls_verify);
    }

    #[test]
    fn unknown_key_is_located() {
        let text = MINIMAL.replace("port = 5433", "port = 5433\nhots = \"x\"");
        let e = load_text(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("old.database.hots"), "{e}");
        assert_eq!(e.location, Some((9, 1)), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn semantic_errors_are_located_too() {
        let text = MINIMAL.replace("[old.database]\nport = 5433\n", "");
        let e = load_text(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("new.database"), "{e}");
        assert!(e.message.contains("same database"), "{e}");
    }

    #[test]
    fn urls_compare_without_default_ports_and_slashes() {
        assert!(same_url("https://Orch:443/", "https://orch"));
        assert!(same_url("http://orch:80", "HTTP://orch/"));
        assert!(!same_url("http://orch:8888", "http://orch"));
        assert!(!same_url("https://orch", "http://orch"));
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = load_text(&MINIMAL.replace("/tmp/w", "work")).unwrap();
        assert!(c.work_dir.is_absolute() && c.work_dir.ends_with("work"), "{}", c.work_dir);
    }
}
