//! The `[database]` section of an orchestrator's own configuration, read the
//! way the server reads it: `inmanta.cfg`, then `inmanta.d/*.cfg` in name
//! order, later files winning. (Environment variables such as
//! `INMANTA_DATABASE_PASSWORD` of the server's unit are not visible here;
//! set those keys in the tool's config instead.)

use anyhow::Context as _;
use camino::Utf8Path;
use migrate_core::{Secret, probe::Pools, runner::Runner};

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

/// Reads the files on the orchestrator's host (through `runner`): `dir`'s
/// inmanta.cfg and inmanta.d/*.cfg, or `dir` itself when it is a file (a
/// server started with `-c FILE`).
pub async fn read_inmanta_database(dir: &Utf8Path, runner: &Runner) -> anyhow::Result<InmantaDatabase> {
    if runner.cmd(&["test", "-f", dir.as_str()]).timeout(LIMIT).output().await?.success() {
        let out = runner.cmd(&["cat", dir.as_str()]).timeout(LIMIT).output().await?;
        anyhow::ensure!(out.success(), "cannot read {dir} (on {})", runner.place());
        let mut found = InmantaDatabase::default();
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
    let mut found = InmantaDatabase::default();
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

/// One file's `[database]` section alone (what `read_inmanta_database`
/// merges file by file); the fuzz target's entry.
pub fn parse_database_section(text: &str) -> anyhow::Result<InmantaDatabase> {
    let mut found = InmantaDatabase::default();
    apply(&mut found, text)?;
    Ok(found)
}

fn apply(found: &mut InmantaDatabase, text: &str) -> anyhow::Result<()> {
    let ini = ini::Ini::load_from_str(text)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win() {
        let mut found = InmantaDatabase::default();
        apply(&mut found, "[database]\nhost=db1\nport=5433\nname=inm\nusername=u\npassword=p1\n[server]\nauth=false\n")
            .unwrap();
        apply(&mut found, "[database]\npassword = p2\n").unwrap();
        assert_eq!(found.host.as_deref(), Some("db1"));
        assert_eq!(found.port, Some(5433));
        assert_eq!(found.user.as_deref(), Some("u"));
        assert_eq!(found.password.as_ref().unwrap().expose(), "p2");
        assert!(apply(&mut found, "[database]\nport=x\n").is_err());
    }

    #[test]
    fn pool_sizes_are_read_with_dashes_or_underscores() {
        let mut found = InmantaDatabase::default();
        apply(&mut found, "[database]\nconnection_pool_max_size=20\n[scheduler]\ndb-connection-pool-max-size = 3\n")
            .unwrap();
        apply(&mut found, "[server]\ndb_connection_pool_max_size=12\n").unwrap();
        assert_eq!(found.pools.database, (None, Some(20)));
        assert_eq!(found.pools.scheduler, (None, Some(3)));
        assert_eq!(found.pools.server, (None, Some(12)));
        assert!(apply(&mut found, "[scheduler]\ndb_connection_pool_max_size=lots\n").is_err());
    }
}
