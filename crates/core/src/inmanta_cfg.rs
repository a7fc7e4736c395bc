//! An orchestrator's own configuration, read the way the server reads it:
//! `inmanta.cfg`, then `inmanta.d/*.cfg` in name order, later files
//! winning. What the tool needs of it: the `[database]` section and the pool
//! sizes, and the token configuration (`[server] auth`, `[auth_jwt_*]`) that
//! must match on both sides for the old server's tokens to stay valid.
//! (Environment variables such as `INMANTA_DATABASE_PASSWORD` of the
//! server's unit are not visible here; set those keys in the tool's config
//! instead.)

use std::collections::BTreeMap;

use anyhow::Context as _;
use camino::Utf8Path;
use sha2::{Digest, Sha256};

use crate::{Secret, probe::Pools, runner::Runner};

/// What the tool reads of an orchestrator's configuration.
#[derive(Debug, Default)]
pub struct ServerConfig {
    pub database: InmantaDatabase,
    pub auth: Auth,
}

#[derive(Debug, Default)]
pub struct InmantaDatabase {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub name: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// The database pool sizes it sets (the server's defaults elsewhere).
    pub pools: Pools,
}

/// One command on the orchestrator's host (over ssh, perhaps).
const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The token configuration: whether the API asks for tokens, and with
/// which keys it validates them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// `[server] auth`.
    pub enabled: Option<bool>,
    /// `[auth_jwt_<name>]`: name -> option -> value, with `key` replaced by
    /// its sha256 (a secret is compared, never kept or shown).
    pub jwt: BTreeMap<String, BTreeMap<String, String>>,
}

/// Reads the files on the orchestrator's host (through `runner`): `dir`'s
/// inmanta.cfg and inmanta.d/*.cfg, or `dir` itself when it is a file (a
/// server started with `-c FILE`).
pub async fn read(dir: &Utf8Path, runner: &Runner) -> anyhow::Result<ServerConfig> {
    if runner.cmd(&["test", "-f", dir.as_str()]).timeout(LIMIT).output().await?.success() {
        let out = runner.cmd(&["cat", dir.as_str()]).timeout(LIMIT).output().await?;
        anyhow::ensure!(out.success(), "cannot read {dir} (on {})", runner.place());
        let mut found = ServerConfig::default();
        apply(&mut found, &out.stdout).with_context(|| format!("cannot parse {dir} (on {})", runner.place()))?;
        return Ok(found);
    }
    let main = dir.join("inmanta.cfg");
    let listing = runner
        .cmd(&["find", dir.join("inmanta.d").as_str(), "-maxdepth", "1", "-type", "f", "-name", "*.cfg"])
        .timeout(LIMIT)
        .output()
        .await?;
    let mut files: Vec<String> = listing.stdout.lines().map(str::to_owned).collect();
    files.sort();
    files.insert(0, main.to_string());
    let mut found = ServerConfig::default();
    let mut read_any = false;
    for file in files {
        let out = runner.cmd(&["cat", file.as_str()]).timeout(LIMIT).output().await?;
        if !out.success() {
            continue;
        }
        read_any = true;
        apply(&mut found, &out.stdout).with_context(|| format!("cannot parse {file} (on {})", runner.place()))?;
    }
    if !read_any {
        anyhow::bail!(
            "found no inmanta.cfg in {dir} (on {}): `database.inmanta_config` names the server's config folder \
             (inmanta.cfg, inmanta.d/) or its config file",
            runner.place()
        );
    }
    Ok(found)
}

/// One file alone (what [`read`] merges file by file); the fuzz target's
/// entry.
pub fn parse(text: &str) -> anyhow::Result<ServerConfig> {
    let mut found = ServerConfig::default();
    apply(&mut found, text)?;
    Ok(found)
}

fn apply(config: &mut ServerConfig, text: &str) -> anyhow::Result<()> {
    let ini = ini::Ini::load_from_str(text)?;
    apply_auth(&mut config.auth, &ini)?;
    let found = &mut config.database;
    // Inmanta takes dashes and underscores alike in option names.
    let size = |section: &str, key: &str| -> anyhow::Result<Option<u32>> {
        let Some(section_values) = ini.section(Some(section)) else { return Ok(None) };
        let value = section_values.get(key).or_else(|| section_values.get(key.replace('_', "-")));
        value.map(|v| v.trim().parse().with_context(|| format!("[{section}] {key} {v:?}"))).transpose()
    };
    for (table, (section, prefix)) in [
        (&mut found.pools.database, ("database", "connection_pool")),
        (&mut found.pools.server, ("server", "db_connection_pool")),
        (&mut found.pools.scheduler, ("scheduler", "db_connection_pool")),
    ] {
        table.0 = size(section, &format!("{prefix}_min_size"))?.or(table.0);
        table.1 = size(section, &format!("{prefix}_max_size"))?.or(table.1);
    }
    let Some(section) = ini.section(Some("database")) else {
        return Ok(());
    };
    if let Some(v) = section.get("host") {
        found.host = Some(v.trim().to_owned());
    }
    if let Some(v) = section.get("port") {
        found.port = Some(v.trim().parse().with_context(|| format!("[database] port {v:?}"))?);
    }
    if let Some(v) = section.get("name") {
        found.name = Some(v.trim().to_owned());
    }
    if let Some(v) = section.get("username") {
        found.user = Some(v.trim().to_owned());
    }
    if let Some(v) = section.get("password") {
        found.password = Some(Secret::new(v.trim()));
    }
    Ok(())
}

fn apply_auth(auth: &mut Auth, ini: &ini::Ini) -> anyhow::Result<()> {
    if let Some(v) = ini.section(Some("server")).and_then(|s| s.get("auth")) {
        auth.enabled = Some(parse_bool(v).with_context(|| format!("[server] auth {v:?}"))?);
    }
    for (name, options) in ini.iter() {
        let Some(name) = name.and_then(|n| n.strip_prefix("auth_jwt_")) else { continue };
        let section = auth.jwt.entry(name.to_owned()).or_default();
        for (option, value) in options.iter() {
            let value = value.trim();
            let value = if option == "key" { hex::encode(Sha256::digest(value.as_bytes())) } else { value.to_owned() };
            section.insert(option.replace('-', "_"), value);
        }
    }
    Ok(())
}

/// Python's configparser booleans, as Inmanta reads them.
fn parse_bool(v: &str) -> anyhow::Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => anyhow::bail!("not a boolean"),
    }
}

/// Why tokens the old server accepts would not be accepted by the new one,
/// section by section; empty when they would (or the old server asks for
/// none). A token names its section by its issuer (`iss`), so sections are
/// matched by issuer, not by name.
pub fn tokens_refused_by_new(old: &Auth, new: &Auth) -> Vec<String> {
    if old.enabled != Some(true) {
        return Vec::new();
    }
    let mut why = Vec::new();
    if new.enabled != Some(true) {
        why.push("the old server has `[server] auth = true`, the new one does not: its API would take requests without a token".to_owned());
    }
    const DEFAULT_ISSUER: &str = "https://localhost:8888/";
    let issuer = |s: &BTreeMap<String, String>| s.get("issuer").cloned().unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
    for (name, section) in &old.jwt {
        let wanted = issuer(section);
        let Some((new_name, theirs)) = new.jwt.iter().find(|(_, s)| issuer(s) == wanted) else {
            why.push(format!("[auth_jwt_{name}] (issuer {wanted}): the new server has no section with that issuer"));
            continue;
        };
        let differs: Vec<&str> = ["algorithm", "key", "jwks_uri", "audience"]
            .into_iter()
            .filter(|option| section.get(*option) != theirs.get(*option))
            .collect();
        if !differs.is_empty() {
            let key_note = if differs.contains(&"key") { " (compared by sha256)" } else { "" };
            why.push(format!(
                "[auth_jwt_{name}] (issuer {wanted}): the new server's [auth_jwt_{new_name}] has another {}{key_note}",
                differs.join(", ")
            ));
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win() {
        let mut found = ServerConfig::default();
        apply(&mut found, "[database]\nhost=db1\nport=5433\nname=inm\nusername=u\npassword=p1\n[server]\nauth=false\n")
            .unwrap();
        apply(&mut found, "[database]\npassword = p2\n").unwrap();
        assert_eq!(found.auth.enabled, Some(false));
        let found = found.database;
        assert_eq!(found.host.as_deref(), Some("db1"));
        assert_eq!(found.port, Some(5433));
        assert_eq!(found.user.as_deref(), Some("u"));
        assert_eq!(found.password.as_ref().unwrap().expose(), "p2");
        assert!(parse("[database]\nport=x\n").is_err());
    }

    #[test]
    fn pool_sizes_are_read_with_dashes_or_underscores() {
        let mut config = ServerConfig::default();
        apply(&mut config, "[database]\nconnection_pool_max_size=20\n[scheduler]\ndb-connection-pool-max-size = 3\n")
            .unwrap();
        apply(&mut config, "[server]\ndb_connection_pool_max_size=12\n").unwrap();
        let found = &config.database;
        assert_eq!(found.pools.database, (None, Some(20)));
        assert_eq!(found.pools.scheduler, (None, Some(3)));
        assert_eq!(found.pools.server, (None, Some(12)));
        assert!(apply(&mut config, "[scheduler]\ndb_connection_pool_max_size=lots\n").is_err());
    }

    const SIGNING: &str = "[server]\nauth=true\n[auth_jwt_default]\nalgorithm=HS256\nsign=true\n\
                           client_types=agent,compiler,api\nkey=c2VjcmV0\nexpire=0\nissuer=https://orch/\naudience=https://orch/\n";

    #[test]
    fn the_same_signing_configuration_keeps_tokens_valid_and_the_key_is_never_kept() {
        let old = parse(SIGNING).unwrap().auth;
        assert!(!format!("{old:?}").contains("c2VjcmV0"), "only the key's digest is kept");
        // Another section name, options in another order, dashes: the same for tokens.
        let renamed = "[server]\nauth = yes\n[auth_jwt_main]\nissuer=https://orch/\nkey=c2VjcmV0\naudience=https://orch/\nalgorithm=HS256\n";
        assert!(tokens_refused_by_new(&old, &parse(renamed).unwrap().auth).is_empty());
        // Auth off on the old side: nothing to keep valid.
        let off = parse("[server]\nauth=false\n").unwrap().auth;
        assert!(tokens_refused_by_new(&off, &ServerConfig::default().auth).is_empty());
    }

    #[test]
    fn each_way_a_token_would_be_refused_is_named_without_the_key() {
        let old = parse(SIGNING).unwrap().auth;
        let other_key = SIGNING.replace("key=c2VjcmV0", "key=b3RoZXI=");
        let why = tokens_refused_by_new(&old, &parse(&other_key).unwrap().auth);
        assert_eq!(
            why,
            [
                "[auth_jwt_default] (issuer https://orch/): the new server's [auth_jwt_default] has another key (compared by sha256)"
            ]
        );
        let other_issuer = SIGNING.replace("issuer=https://orch/", "issuer=https://new/");
        let why = tokens_refused_by_new(&old, &parse(&other_issuer).unwrap().auth);
        assert_eq!(why, ["[auth_jwt_default] (issuer https://orch/): the new server has no section with that issuer"]);
        let why = tokens_refused_by_new(&old, &parse("[server]\nauth=false\n").unwrap().auth);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("`[server] auth = true`, the new one does not"), "{why:?}");
        let joined = why.join(" ");
        assert!(!joined.contains("c2VjcmV0") && !joined.contains("b3RoZXI"), "{joined}");
        assert!(parse("[server]\nauth=maybe\n").is_err());
    }
}
