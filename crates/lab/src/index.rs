//! A PEP 503 "simple" package index on disk, usable as `file:///<dir>/simple`.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

/// PEP 503 normalisation: runs of `-`, `_` and `.` become one `-`, lower case.
pub fn normalize_project_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.extend(c.to_lowercase());
            in_sep = false;
        }
    }
    out
}

/// The (unnormalised) project name of a distribution file name:
/// `inmanta_module_std-7.0.0-py3-none-any.whl` -> `inmanta_module_std`,
/// `inmanta-module-std-7.0.0.tar.gz` -> `inmanta-module-std`.
pub fn project_name_of_dist(file_name: &str) -> Option<&str> {
    if let Some(stem) = file_name.strip_suffix(".whl") {
        // Wheel names escape '-' in the name as '_': the name is the first field.
        let name = stem.split('-').next()?;
        return (!name.is_empty() && stem.contains('-')).then_some(name);
    }
    let stem = file_name.strip_suffix(".tar.gz").or_else(|| file_name.strip_suffix(".zip"))?;
    let (name, version) = stem.rsplit_once('-')?;
    (!name.is_empty() && version.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
}

fn html_page(title: &str, links: &[(String, String)]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>{title}</title></head>\n<body>\n"
    );
    for (href, text) in links {
        s.push_str(&format!("<a href=\"{href}\">{text}</a><br/>\n"));
    }
    s.push_str("</body>\n</html>\n");
    s
}

/// (Re)builds `<dir>/simple` from distribution files: copies each into
/// `simple/<normalised-name>/` and writes the index pages. Returns the index
/// directory (`<dir>/simple`).
pub fn build_simple_index(dir: &Utf8Path, dists: &[Utf8PathBuf]) -> Result<Utf8PathBuf> {
    let simple = dir.join("simple");
    if simple.exists() {
        fs::remove_dir_all(&simple).with_context(|| format!("removing {simple}"))?;
    }
    fs::create_dir_all(&simple).with_context(|| format!("creating {simple}"))?;
    let mut projects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for dist in dists {
        let file = dist.file_name().with_context(|| format!("{dist} has no file name"))?;
        let Some(name) = project_name_of_dist(file) else {
            bail!("{dist}: not a wheel or sdist file name");
        };
        let project = normalize_project_name(name);
        let pdir = simple.join(&project);
        fs::create_dir_all(&pdir).with_context(|| format!("creating {pdir}"))?;
        fs::copy(dist, pdir.join(file)).with_context(|| format!("copying {dist} to {pdir}"))?;
        projects.entry(project).or_default().push(file.to_string());
    }
    for (project, files) in &projects {
        let links: Vec<(String, String)> = files.iter().map(|f| (f.clone(), f.clone())).collect();
        let page = html_page(&format!("Links for {project}"), &links);
        fs::write(simple.join(project).join("index.html"), page)?;
    }
    let links: Vec<(String, String)> = projects.keys().map(|p| (format!("{p}/"), p.clone())).collect();
    fs::write(simple.join("index.html"), html_page("Simple index", &links))?;
    Ok(simple)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_pep_503() {
        assert_eq!(normalize_project_name("inmanta_module_std"), "inmanta-module-std");
        assert_eq!(normalize_project_name("Inmanta.Module__Std"), "inmanta-module-std");
        assert_eq!(normalize_project_name("ruamel.yaml"), "ruamel-yaml");
        assert_eq!(normalize_project_name("a-_.-b"), "a-b");
        assert_eq!(normalize_project_name("Jinja2"), "jinja2");
    }

    #[test]
    fn project_names_of_dists() {
        assert_eq!(project_name_of_dist("inmanta_module_std-7.0.0-py3-none-any.whl"), Some("inmanta_module_std"));
        assert_eq!(project_name_of_dist("inmanta-module-std-7.0.0.tar.gz"), Some("inmanta-module-std"));
        assert_eq!(project_name_of_dist("README.md"), None);
        assert_eq!(project_name_of_dist("x.whl"), None);
    }

    #[test]
    fn builds_an_index() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf()).unwrap();
        let whl = root.join("inmanta_module_std-7.0.0-py3-none-any.whl");
        fs::write(&whl, b"PK").unwrap();
        let simple = build_simple_index(&root.join("idx"), std::slice::from_ref(&whl)).unwrap();
        let top = fs::read_to_string(simple.join("index.html")).unwrap();
        assert!(top.contains("<a href=\"inmanta-module-std/\">inmanta-module-std</a>"));
        let page = fs::read_to_string(simple.join("inmanta-module-std/index.html")).unwrap();
        assert!(page.contains("href=\"inmanta_module_std-7.0.0-py3-none-any.whl\""));
        assert!(simple.join("inmanta-module-std/inmanta_module_std-7.0.0-py3-none-any.whl").exists());
        // Rebuilding replaces the old content.
        build_simple_index(&root.join("idx"), &[]).unwrap();
        assert!(!simple.join("inmanta-module-std").exists());
    }
}
