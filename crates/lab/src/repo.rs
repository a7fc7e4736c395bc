//! The environments' project repositories: bare git repos made by the lab.

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use crate::util::{self, shell};

/// Which model a commit carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelVariant {
    /// Two NullResources (`res-a`, `res-b`): compiles, deploys, dry-runs clean.
    Normal,
    /// Normal plus `NullResource(name="res-purged", purged=true)`: compiles,
    /// and every dry-run of it reports `res-purged` as "deleted".
    WithDifferences,
    /// A syntax error in main.cf: the compile fails.
    Broken,
    /// `n` NullResources (`res-1` ...): a busy environment's model, for the
    /// downtime benchmark.
    Resources(u32),
    /// Normal plus a module (`labv1`, a v1 module in the project's own
    /// `v1libs/`) whose plugin imports `pipes`, which Python 3.13 removed:
    /// compiles on the host's Python 3.11 (8.x to 14.x here), not on the
    /// Python 3.13 that 15.0 and later run on in the lab's Debian 13 root.
    /// A project the upgrade itself breaks, as a new Python often does.
    NeedsPython311,
}

/// Where [`ModelVariant::NeedsPython311`] keeps its module in the project.
const V1_MODULES: &str = "v1libs";

/// project.yml: both the 8.x-style `repo: type package` entry and the
/// 11.x/14.x `pip.index_url` (each version ignores the other one). With
/// `protect_auto_deploy`, `environment_settings` (15.3+) sets and protects
/// `auto_deploy: true` on every export.
pub(crate) fn project_yml(index_url: &str, protect_auto_deploy: bool, variant: ModelVariant) -> String {
    let settings = if protect_auto_deploy { "environment_settings:\n  auto_deploy: true\n" } else { "" };
    let modulepath = match variant {
        ModelVariant::NeedsPython311 => format!("\n  - libs\n  - {V1_MODULES}"),
        _ => " libs".to_owned(),
    };
    format!(
        "name: labproject\n\
         description: inmanta-migrate lab project (std::testing::NullResource only)\n\
         modulepath:{modulepath}\n\
         downloadpath: libs\n\
         repo:\n\
         \x20 - type: package\n\
         \x20   url: {index_url}\n\
         pip:\n\
         \x20 index_url: {index_url}\n\
         {settings}"
    )
}

pub(crate) const REQUIREMENTS: &str = "inmanta-module-std>=7.0.0,<8\n";

/// main.cf of a variant.
pub(crate) fn main_cf(variant: ModelVariant) -> String {
    let normal = "import std::testing\n\n\
                  std::testing::NullResource(name=\"res-a\")\n\
                  std::testing::NullResource(name=\"res-b\")\n";
    match variant {
        ModelVariant::Normal => normal.to_string(),
        ModelVariant::WithDifferences => {
            format!("{normal}std::testing::NullResource(name=\"res-purged\", purged=true)\n")
        }
        ModelVariant::Broken => format!("{normal}std::testing::NullResource(name=\"res-c\"\n"),
        ModelVariant::Resources(n) => (1..=n).fold("import std::testing\n\n".to_string(), |model, i| {
            model + &format!("std::testing::NullResource(name=\"res-{i}\")\n")
        }),
        ModelVariant::NeedsPython311 => format!("{normal}import labv1\n"),
    }
}

fn git(sh: &Shell) -> xshell::Cmd<'_> {
    cmd!(
        sh,
        "git -c user.name=inmanta-migrate-lab -c user.email=lab@localhost -c commit.gpgsign=false -c init.defaultBranch=main"
    )
    .quiet()
}

fn write_model(work: &Utf8Path, project: &Project, variant: ModelVariant) -> Result<()> {
    std::fs::write(work.join("project.yml"), project_yml(project.index_url, project.protect_auto_deploy, variant))?;
    let v1 = work.join(V1_MODULES);
    if v1.exists() {
        std::fs::remove_dir_all(&v1)?;
    }
    if variant == ModelVariant::NeedsPython311 {
        let module = v1.join("labv1");
        std::fs::create_dir_all(module.join("model"))?;
        std::fs::write(module.join("module.yml"), "name: labv1\nlicense: Apache 2.0\nversion: 1.0.0\n")?;
        std::fs::write(module.join("model/_init.cf"), "entity Nothing:\nend\n")?;
        std::fs::create_dir_all(module.join("plugins"))?;
        std::fs::write(
            module.join("plugins/__init__.py"),
            "import pipes  # removed from Python in 3.13 (PEP 594)\n\n\
             from inmanta.plugins import plugin\n\n\n\
             @plugin\n\
             def quoted(value: \"string\") -> \"string\":\n    return pipes.quote(value)\n",
        )?;
    }
    std::fs::write(work.join("requirements.txt"), REQUIREMENTS)?;
    std::fs::write(work.join("main.cf"), main_cf(variant))?;
    std::fs::write(work.join(".gitignore"), "libs/\n.env/\n")?;
    Ok(())
}

/// What an environment's project.yml says beyond its model.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Project<'a> {
    pub index_url: &'a str,
    pub protect_auto_deploy: bool,
}

/// Creates the bare repo `bare` (branch main) with one Normal commit.
pub(crate) fn create_repo(bare: &Utf8Path, project: &Project, tmp_dir: &Utf8Path) -> Result<()> {
    if bare.exists() {
        std::fs::remove_dir_all(bare).with_context(|| format!("removing {bare}"))?;
    }
    let sh = shell()?;
    git(&sh)
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(bare)
        .run()
        .with_context(|| format!("git init --bare {bare}"))?;
    commit(bare, project, ModelVariant::Normal, "initial model", tmp_dir)
}

/// Clones `bare`, writes the model of `variant`, commits and pushes to main.
pub(crate) fn commit(
    bare: &Utf8Path,
    project: &Project,
    variant: ModelVariant,
    message: &str,
    tmp_dir: &Utf8Path,
) -> Result<()> {
    util::mkdir_mode(tmp_dir, 0o755)?;
    let tmp = tempfile::Builder::new().prefix("repo-").tempdir_in(tmp_dir).context("creating a temporary work tree")?;
    let work = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf())
        .map_err(|p| anyhow::anyhow!("non UTF-8 path {}", p.display()))?;
    let sh = shell()?;
    sh.change_dir(&work);
    git(&sh).args(["init", "-q", "-b", "main", "."]).run()?;
    let url = format!("file://{bare}");
    git(&sh).args(["remote", "add", "origin"]).arg(&url).run()?;
    // An empty bare repo has no main yet: fetch only when it has.
    let has_main = git(&sh).args(["ls-remote", "--heads", "origin", "main"]).read()?.contains("refs/heads/main");
    if has_main {
        git(&sh).args(["fetch", "-q", "origin", "main"]).run()?;
        git(&sh).args(["reset", "-q", "--hard", "FETCH_HEAD"]).run()?;
    }
    write_model(&work, project, variant)?;
    git(&sh).args(["add", "-A"]).run()?;
    git(&sh).args(["commit", "-q", "--allow-empty", "-m", message]).run()?;
    git(&sh)
        .args(["push", "-q", "origin", "HEAD:refs/heads/main"])
        .run()
        .with_context(|| format!("pushing to {bare}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_files() {
        let y = project_yml("file:///lab/cache/index/simple", false, ModelVariant::Normal);
        assert!(y.contains("modulepath: libs\n"), "{y}");
        assert!(y.contains("repo:\n  - type: package\n    url: file:///lab/cache/index/simple\n"));
        assert!(y.contains("pip:\n  index_url: file:///lab/cache/index/simple\n"));
        assert!(!y.contains("environment_settings"));
        let y = project_yml("file:///lab/cache/index/simple", true, ModelVariant::Normal);
        assert!(y.ends_with("environment_settings:\n  auto_deploy: true\n"), "{y}");
        let y = project_yml("file:///idx/simple", false, ModelVariant::NeedsPython311);
        assert!(y.contains("modulepath:\n  - libs\n  - v1libs\n"), "{y}");
        assert!(main_cf(ModelVariant::NeedsPython311).contains("import labv1"));
        assert!(main_cf(ModelVariant::Normal).contains("import std::testing"));
        assert!(main_cf(ModelVariant::WithDifferences).contains("purged=true"));
        assert!(!main_cf(ModelVariant::Normal).contains("purged"));
        assert_ne!(main_cf(ModelVariant::Broken), main_cf(ModelVariant::Normal));
    }

    #[test]
    fn creates_and_updates_a_bare_repo() {
        assert!(util::which("git").is_some(), "git is needed: `cargo xtask lab prepare` installs it");
        let tmp = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf()).unwrap();
        let bare = dir.join("e.git");
        let project = Project { index_url: "file:///idx/simple", protect_auto_deploy: false };
        create_repo(&bare, &project, &dir.join("tmp")).unwrap();
        commit(&bare, &project, ModelVariant::WithDifferences, "diff", &dir.join("tmp")).unwrap();
        let sh = shell().unwrap();
        let log = cmd!(sh, "git --git-dir {bare} log --format=%s main").read().unwrap();
        assert_eq!(log, "diff\ninitial model");
        let cf = cmd!(sh, "git --git-dir {bare} show main:main.cf").read().unwrap();
        assert!(cf.contains("res-purged"));
        // The v1 module comes with its variant and goes with the next one.
        commit(&bare, &project, ModelVariant::NeedsPython311, "v1", &dir.join("tmp")).unwrap();
        let files = cmd!(sh, "git --git-dir {bare} ls-tree -r --name-only main").read().unwrap();
        for file in ["module.yml", "model/_init.cf", "plugins/__init__.py"] {
            assert!(files.contains(&format!("v1libs/labv1/{file}")), "{file}: {files}");
        }
        commit(&bare, &project, ModelVariant::Normal, "back", &dir.join("tmp")).unwrap();
        let files = cmd!(sh, "git --git-dir {bare} ls-tree -r --name-only main").read().unwrap();
        assert!(!files.contains("v1libs"), "{files}");
    }
}
