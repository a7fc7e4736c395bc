//! Tidy tests (rust-analyzer's `tidy.rs` is the model): invariants of the
//! workspace that hold because a test fails when they break, not by habit.
//! ARCHITECTURE.md lists them under "Invariants"; each failure names the
//! file and the way back.
//!
//! Product crates are what ships in the binary; the lab, the fake server
//! and xtask are tooling and may spawn processes, speak HTTP and hold SQL.

use std::{
    fs,
    path::{Path, PathBuf},
};

const TOOLING: [&str; 3] = ["lab", "fake-inmanta", "xtask"];

/// Packages whose library has another name than the package.
const LIB_NAMES: [(&str, &str); 1] = [("rust-ini", "ini")];

/// Crates that are HTTP clients or servers.
const HTTP_CRATES: [&str; 5] = ["reqwest", "hyper", "hyper-util", "axum", "ureq"];

struct Package {
    name: String,
    dir: PathBuf,
    manifest: toml::Table,
}

impl Package {
    fn is_product(&self) -> bool {
        !TOOLING.contains(&self.name.as_str())
    }

    /// Every Rust file of the package: its sources, tests and benches (the
    /// CLI's integration tests live in the workspace's `tests/`).
    fn rust_files(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.dir.join("src"), self.dir.join("tests"), self.dir.join("benches")];
        if self.name == "inmanta-migrate" {
            dirs.push(workspace().join("tests"));
        }
        let mut files = Vec::new();
        for dir in dirs {
            collect_rust_files(&dir, &mut files);
        }
        if self.name == "inmanta-migrate" {
            // It expands migrate_core::the_steps!, which names the step crates.
            files.push(workspace().join("crates/core/src/steps.rs"));
        }
        files
    }

    fn source_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        collect_rust_files(&self.dir.join("src"), &mut files);
        files
    }

    /// (table, dependency name) of every dependency it declares.
    fn dependencies(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(deps) = self.manifest.get(table).and_then(|t| t.as_table()) {
                out.extend(deps.keys().map(|k| (table, k.clone())));
            }
        }
        out
    }

    /// `[package.metadata.cargo-machete] ignored`: dependencies used
    /// without a path in the code (a feature switched on, say).
    fn ignored_unused(&self) -> Vec<String> {
        let ignored = self.manifest["package"]
            .get("metadata")
            .and_then(|m| m.get("cargo-machete"))
            .and_then(|m| m.get("ignored"))
            .and_then(|i| i.as_array());
        ignored.into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

fn packages() -> Vec<Package> {
    let root = workspace();
    let mut dirs: Vec<PathBuf> =
        fs::read_dir(root.join("crates")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.push(root.join("xtask"));
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let manifest: toml::Table = fs::read_to_string(dir.join("Cargo.toml")).unwrap().parse().unwrap();
            let name = manifest["package"]["name"].as_str().unwrap().to_owned();
            Package { name, dir, manifest }
        })
        .collect()
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace()).unwrap_or(path).display().to_string()
}

/// Whether Rust source names the crate `name` (as `name::…`, a macro
/// `name!`, `use name` or `extern crate name`).
fn names_crate(text: &str, name: &str) -> bool {
    let lib = LIB_NAMES.iter().find(|(package, _)| *package == name).map_or(name, |(_, lib)| lib);
    let ident = lib.replace('-', "_");
    let word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(&ident).any(|(at, _)| {
        let (before, after) = (&text[..at], &text[at + ident.len()..]);
        let whole = !before.ends_with(word) && !after.starts_with(word);
        whole
            && (after.starts_with("::")
                || after.starts_with('!')
                || before.ends_with("use ")
                || before.ends_with("extern crate "))
    })
}

/// The first word of every kind of SQL statement the tool could send.
const SQL_STATEMENTS: [&str; 20] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "BEGIN", "COMMIT", "ROLLBACK", "GRANT",
    "REVOKE", "COMMENT", "TRUNCATE", "ANALYZE", "VACUUM", "COPY", "WITH", "SET", "SHOW",
];

/// SQL a product crate would hold: a string that starts with a statement
/// keyword followed by a space (or that is the keyword alone).
fn holds_sql(line: &str) -> bool {
    let quoted = line.split('"').skip(1).step_by(2);
    quoted.into_iter().any(|s| {
        let s = s.trim_start();
        SQL_STATEMENTS.iter().any(|kw| s.starts_with(kw) && s[kw.len()..].starts_with([' ', ';']) || s == *kw)
    })
}

#[test]
fn every_crate_says_what_it_is() {
    let mut problems = Vec::new();
    for p in packages() {
        let description = p.manifest["package"].get("description").and_then(|d| d.as_str()).unwrap_or("");
        // "inmanta-migrate dump" repeats the name; say what it does.
        if description.split_whitespace().count() < 5 {
            problems.push(format!("{}/Cargo.toml: `description = {description:?}` does not say what it does", p.name));
        }
        let root = ["src/lib.rs", "src/main.rs"].map(|f| p.dir.join(f)).into_iter().find(|f| f.exists());
        match root.map(|f| (fs::read_to_string(&f).unwrap(), f)) {
            Some((text, _)) if text.starts_with("//!") => {}
            Some((_, f)) => {
                problems.push(format!("{}: start with a `//!` doc that says what the crate is", relative(&f)))
            }
            None => problems.push(format!("{}: no src/lib.rs or src/main.rs", p.name)),
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn no_crate_declares_a_dependency_it_does_not_use() {
    let mut problems = Vec::new();
    for p in packages() {
        let text: String = p.rust_files().iter().map(|f| fs::read_to_string(f).unwrap()).collect();
        let ignored = p.ignored_unused();
        for (table, dep) in p.dependencies() {
            if !ignored.contains(&dep) && !names_crate(&text, &dep) {
                problems.push(format!(
                    "{}/Cargo.toml [{table}] declares `{dep}`, which no file of it uses: remove it \
                     (or list it in [package.metadata.cargo-machete] ignored, saying why)",
                    p.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn only_inmanta_api_speaks_http() {
    let mut problems = Vec::new();
    for p in packages().into_iter().filter(|p| p.is_product() && p.name != "inmanta-api") {
        let deps = p.manifest.get("dependencies").and_then(|d| d.as_table());
        for http in HTTP_CRATES {
            if deps.is_some_and(|d| d.contains_key(http)) {
                problems.push(format!("{}/Cargo.toml depends on `{http}`: go through inmanta-api's client", p.name));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn only_migrate_pg_holds_sql() {
    let mut problems = Vec::new();
    for p in packages().into_iter().filter(|p| p.is_product() && p.name != "migrate-pg") {
        for file in p.source_files() {
            for (i, line) in fs::read_to_string(&file).unwrap().lines().enumerate() {
                if holds_sql(line) {
                    problems.push(format!(
                        "{}:{}: SQL outside migrate-pg: give migrate-pg a method",
                        relative(&file),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// clippy's `disallowed-methods` (clippy.toml) refuses `Command::new`
/// everywhere; only the runner and the tooling say they may.
#[test]
fn only_the_runner_spawns_processes() {
    let clippy = fs::read_to_string(workspace().join("clippy.toml")).unwrap();
    for method in ["std::process::Command::new", "tokio::process::Command::new"] {
        assert!(clippy.contains(&format!("\"{method}\"")), "clippy.toml must disallow {method}");
    }
    let mut allowed = Vec::new();
    for p in packages() {
        for file in p.rust_files() {
            let text = fs::read_to_string(&file).unwrap();
            if ["allow", "expect"].iter().any(|a| text.contains(&format!("{a}(clippy::disallowed_methods)"))) {
                allowed.push((p.name.clone(), relative(&file)));
            }
        }
    }
    let product: Vec<_> = allowed
        .iter()
        .filter(|(name, file)| !TOOLING.contains(&name.as_str()) && file != "crates/core/src/runner.rs")
        .filter(|(_, file)| !file.starts_with("tests/"))
        .collect();
    assert!(product.is_empty(), "only core::runner may spawn processes; also allowed in: {product:?}");
}

#[test]
fn the_checks_see_what_they_should() {
    assert!(names_crate("use serde::Serialize;", "serde"));
    assert!(names_crate("#[tokio::main]", "tokio"));
    assert!(names_crate("let v = serde_json::json!({});", "serde_json"));
    assert!(names_crate("use migrate_core::{a, b};", "migrate-core"));
    assert!(!names_crate("use my_serde::X;", "serde"));
    assert!(!names_crate("// futures are nice", "futures"));
    assert!(names_crate("let ini = ini::Ini::load_from_str(text)?;", "rust-ini"));
    assert!(holds_sql(r#"db.query("SELECT id FROM public.environment")"#));
    assert!(!holds_sql(r#"println!("selected {n} environments")"#));
    assert!(holds_sql(r#"format!("CREATE ROLE {role} LOGIN")"#));
    assert!(holds_sql(r#"client.execute("GRANT SELECT ON ALL TABLES", &[])"#));
    assert!(holds_sql(r#"client.batch_execute("ANALYZE")"#));
    assert!(!holds_sql(r#"bail!("Create the role first")"#));
    assert!(!holds_sql(r#"checks.fail("SETTINGS differ")"#));
}

/// The text of a source file before its test module: what ships.
fn shipped(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// Product source files, with their text before any test module.
fn product_sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for p in packages().into_iter().filter(Package::is_product) {
        for file in p.source_files() {
            let text = fs::read_to_string(&file).unwrap();
            out.push((file, shipped(&text).to_owned()));
        }
    }
    out
}

#[test]
fn every_product_file_says_what_it_holds() {
    let problems: Vec<_> = product_sources()
        .into_iter()
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(file, _)| format!("{}: start with a `//!` line that says what the file holds", relative(&file)))
        .collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Steps talk to each other only through the journal and the config.
#[test]
fn no_step_crate_depends_on_another() {
    let mut problems = Vec::new();
    for p in packages().into_iter().filter(|p| p.name.starts_with("step-")) {
        for (table, dep) in p.dependencies() {
            if dep.starts_with("step-") && dep != p.name {
                problems.push(format!(
                    "{}/Cargo.toml [{table}] depends on `{dep}`: steps share the journal and the config, not code; \
                     move what both need to migrate-core",
                    p.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Where product code may sleep besides `core::wait` (every other wait has
/// a limit and says what it waited for), and why.
const SLEEPS_ALLOWED: [(&str, &str); 2] = [
    ("crates/core/src/journal.rs", "the lock's grace for a forking holder: ten tries of 100 ms, synchronous"),
    ("crates/inmanta-api/src/client.rs", "the pause between a GET's bounded retries"),
];

#[test]
fn product_code_waits_through_core_wait() {
    let problems: Vec<_> = product_sources()
        .into_iter()
        .map(|(file, text)| (relative(&file), text))
        .filter(|(file, text)| {
            text.contains("sleep(")
                && file != "crates/core/src/wait.rs"
                && !SLEEPS_ALLOWED.iter().any(|(allowed, _)| file == allowed)
        })
        .map(|(file, _)| format!("{file}: sleeps outside core::wait; wait with `wait::until` (a limit, and what for)"))
        .collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// What the tool prints is `core::contract`'s types (their schema is
/// published), not `json!` literals; inmanta-api's request bodies are the
/// server's format, not output.
#[test]
fn product_output_is_typed() {
    let problems: Vec<_> = product_sources()
        .into_iter()
        .map(|(file, text)| (relative(&file), text))
        .filter(|(file, text)| !file.starts_with("crates/inmanta-api/") && text.contains("json!("))
        .map(|(file, _)| format!("{file}: a `json!` literal in product output: give it a Serialize type"))
        .collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// A step's resume state reads journals written before one of its fields
/// existed: each `StepState` type takes `#[serde(default)]`.
#[test]
fn step_states_read_older_journals() {
    let mut problems = Vec::new();
    let mut found = 0;
    for (file, text) in product_sources() {
        for (at, _) in text.match_indices("impl StepState for ") {
            found += 1;
            let name: String =
                text[at + "impl StepState for ".len()..].chars().take_while(|c| c.is_alphanumeric()).collect();
            let defined = text.find(&format!("pub struct {name} ")).or_else(|| text.find(&format!("struct {name} ")));
            let attributes = defined.map(|d| {
                let before = &text[..d];
                before.lines().rev().take_while(|l| l.trim_start().starts_with(['#', '/'])).collect::<Vec<_>>()
            });
            if !attributes.is_some_and(|a| a.iter().any(|l| l.trim() == "#[serde(default)]")) {
                problems.push(format!("{}: {name} needs `#[serde(default)]` on the struct", relative(&file)));
            }
        }
    }
    assert!(found >= 4, "found only {found} StepState types: has the trait been renamed?");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// README's step table and the justfile follow the one step list.
#[test]
fn readme_and_justfile_follow_the_step_list() {
    use migrate_core::{Side, StepId, config::CopyMode, steps::STEPS};

    let readme = fs::read_to_string(workspace().join("README.md")).unwrap();
    let table: Vec<(String, String)> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| step | side |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect();
    let listed: Vec<(String, String)> = STEPS.iter().map(|s| (s.name.to_owned(), s.side.to_string())).collect();
    assert_eq!(table, listed, "README.md's step table (step, side) differs from core::steps::STEPS");

    // Recipe name -> the subcommands its lines run.
    let justfile = fs::read_to_string(workspace().join("justfile")).unwrap();
    let mut recipes: Vec<(String, Vec<String>)> = Vec::new();
    for line in justfile.lines() {
        if let Some(body) = line.strip_prefix("    ") {
            if let (Some(recipe), Some(command)) = (recipes.last_mut(), body.split("{{config}} ").nth(1)) {
                recipe.1.extend(command.split_whitespace().next().map(str::to_owned));
            }
        } else if !line.starts_with('#') && !line.contains(":=") && line.contains(':') {
            recipes.push((line.split([' ', ':']).next().unwrap().to_owned(), Vec::new()));
        }
    }
    let runs = |name: &str| recipes.iter().find(|(r, _)| r == name).map(|(_, c)| c.clone()).unwrap_or_default();
    let offline = |side: Side| -> Vec<String> {
        StepId::in_mode(CopyMode::Offline).filter(|s| s.side() == side).map(|s| s.name().to_owned()).collect()
    };
    assert_eq!(runs("old-side"), offline(Side::Old), "justfile: old-side runs the old side's offline steps");
    assert_eq!(runs("new-side"), offline(Side::New), "justfile: new-side runs the new side's offline steps");
    for step in STEPS {
        assert!(
            recipes.iter().any(|(_, commands)| commands.iter().any(|c| c == step.name)),
            "justfile: no recipe runs `{}`",
            step.name
        );
    }
}
