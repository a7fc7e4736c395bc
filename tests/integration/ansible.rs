//! The Ansible role on a fleet of two: ansible-core from PyPI drives two lab
//! instances at once (8.7.6 -> 14.0.0 each) as two inventory hosts reached
//! over a real sshd, with the .deb that `cargo xtask dist` built. One host's
//! model has a dry-run difference: that host ends "needs an operator" with
//! the difference in the play's output, the other finishes, the summary
//! names both, and both reports land on the controller. The new database's
//! password reaches the host from an Ansible Vault file, never the output.

use std::{fs, process::Command};

use camino::{Utf8Path, Utf8PathBuf};
use lab::{LabRoot, ModelVariant, Side};
use serde_json::{Value, json};

use crate::{
    ssh::Sshd,
    support::contract,
    support::lab::{Lab, alone, lab},
};

const ANSIBLE: &str = "ansible-core>=2.17,<2.19";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Removes the package the play installed, also when the test fails.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-r", "inmanta-migrate"]).output();
    }
}

fn workspace() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One host's variables: the lab's own config as a mapping (the role writes
/// it back as TOML), with the new database's password taken from the role's
/// secrets instead of the lab's file; and that password.
fn host_vars(lab: &Lab, dir: &Utf8Path, package: &Utf8Path) -> (Value, String) {
    let text = fs::read_to_string(lab.config_path()).unwrap();
    let mut config = serde_json::to_value(text.parse::<toml::Table>().unwrap()).unwrap();
    let file = config["new"]["database"]["password"]["file"].as_str().expect("the lab's password is a file").to_owned();
    let password = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}")).trim().to_owned();
    config["new"]["database"]["password"] = json!({ "file": "secrets/new-db" });
    let vars = json!({
        "inmanta_migrate_dir": dir,
        "inmanta_migrate_package": package,
        "inmanta_migrate_config": config,
    });
    (vars, password)
}

#[test]
#[ignore = "needs the real lab, an sshd and the .deb: cargo xtask ci"]
fn the_role_migrates_a_fleet_and_names_each_outcome() {
    let _alone = alone();
    let package = workspace().join(format!("target/dist/inmanta-migrate_{VERSION}_amd64.deb"));
    assert!(package.exists(), "{package} is missing: run `cargo xtask dist` (cargo xtask ci does, before this test)");
    let status = Command::new("dpkg-query").args(["-W", "-f", "${Status}", "inmanta-migrate"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.contains(" installed"),
        "inmanta-migrate is installed on this machine already ({status}): dpkg -r it"
    );
    let root = LabRoot::from_env().unwrap();
    let venv = lab::tool_venv(&root, "ansible-core", &[ANSIBLE]).unwrap();

    let a = lab("ansible-a", "8.7.6");
    let b = lab("ansible-b", "8.7.6");
    b.push_model("plain", ModelVariant::WithDifferences).unwrap();
    let sshd = Sshd::start();
    let _installed = Installed;

    let tmp = tempfile::tempdir().unwrap();
    let controller = Utf8Path::from_path(tmp.path()).unwrap();
    let hosts = [("orch-a", &a), ("orch-b", &b)];
    let host_vars_dir = controller.join("host_vars");
    fs::create_dir(&host_vars_dir).unwrap();
    let vault_pass = controller.join("vault-pass");
    fs::write(&vault_pass, "the vault's own password\n").unwrap();
    // The sshd's own folder has quotes and spaces in its name, for the
    // tool's ssh quoting; the inventory gets plain copies.
    let (identity, known_hosts) = (controller.join("id_ed25519"), controller.join("known_hosts"));
    fs::copy(&sshd.identity, &identity).unwrap();
    fs::copy(&sshd.known_hosts, &known_hosts).unwrap();
    let mut passwords = Vec::new();
    let mut inventory = String::from("[orchestrators]\n");
    for (name, lab) in hosts {
        let (vars, password) = host_vars(lab, &controller.join(name), &package);
        let vars_dir = host_vars_dir.join(name);
        fs::create_dir(&vars_dir).unwrap();
        fs::write(vars_dir.join("main.json"), vars.to_string()).unwrap();
        // The password in a vault only the play opens.
        let vault = vars_dir.join("vault.yml");
        fs::write(&vault, format!("inmanta_migrate_secrets:\n  new-db: {}\n", json!(password))).unwrap();
        let encrypt = Command::new(venv.join("bin/ansible-vault"))
            .args(["encrypt", "--vault-password-file", vault_pass.as_str(), vault.as_str()])
            .output()
            .unwrap();
        assert!(encrypt.status.success(), "ansible-vault: {}", String::from_utf8_lossy(&encrypt.stderr));
        assert!(!fs::read_to_string(&vault).unwrap().contains(&password), "the vault file is encrypted");
        passwords.push(password);
        inventory.push_str(&format!(
            "{name} ansible_host=127.0.0.1 ansible_port={port} ansible_user=root \
             ansible_ssh_private_key_file='{key}' ansible_python_interpreter=/usr/bin/python3 \
             ansible_ssh_common_args='-o UserKnownHostsFile=\"{known}\" -o StrictHostKeyChecking=yes'\n",
            port = sshd.port,
            key = identity,
            known = known_hosts,
        ));
    }
    fs::write(controller.join("inventory.ini"), inventory).unwrap();

    let reports = controller.join("reports");
    let play = Command::new(venv.join("bin/ansible-playbook"))
        .current_dir(controller)
        .env("ANSIBLE_ROLES_PATH", workspace().join("ansible/roles"))
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .env("ANSIBLE_NOCOLOR", "1")
        // The test sshd has no sftp subsystem.
        .env("ANSIBLE_SSH_TRANSFER_METHOD", "piped")
        .env("INMANTA_MIGRATE_SERIAL", "2")
        .args(["-i", "inventory.ini", "--vault-password-file", vault_pass.as_str()])
        .arg("-e")
        .arg(format!("inmanta_migrate_reports_dir={reports}"))
        .arg(workspace().join("ansible/migrate.yml"))
        .output()
        .unwrap();
    let output = format!("{}{}", String::from_utf8_lossy(&play.stdout), String::from_utf8_lossy(&play.stderr));
    assert!(play.status.success(), "ansible-playbook failed:\n{output}");

    for password in &passwords {
        assert!(!output.contains(password.as_str()), "a database password is in the play's output");
    }
    assert!(output.contains("orch-a: done;"), "the summary names orch-a's outcome:\n{output}");
    assert!(output.contains("orch-b: needs an operator;"), "the summary names orch-b's outcome:\n{output}");
    assert!(output.contains("orch-b needs an operator") && output.contains("res-purged"), "the differences:\n{output}");
    for (name, lab) in hosts {
        let report: Value =
            serde_json::from_str(&fs::read_to_string(reports.join(format!("{name}.json"))).unwrap()).unwrap();
        contract::conforms("report", &report, name);
        let config: toml::Table = fs::read_to_string(lab.config_path()).unwrap().parse().unwrap();
        assert_eq!(report["new"].as_str(), config["new"]["api_url"].as_str(), "{name}'s own report");
        let written = fs::metadata(controller.join(name).join("secrets/new-db")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&written.permissions()) & 0o777,
            0o600,
            "{name}'s secret file"
        );
    }
    let status = |lab: &Lab, env: &str| {
        let journal = lab.journal();
        journal["environments"].as_object().unwrap().values().find(|e| e["name"] == env).unwrap()["status"].clone()
    };
    assert_eq!(status(&a, "plain"), "done");
    assert_eq!(status(&b, "plain"), "needs_operator", "stopped at its difference");
    assert_eq!(status(&b, "manual"), "done", "the rest of orch-b goes on");
    assert_eq!(a.environments(Side::New)["plain"]["halted"], false, "orch-a runs on its new server");
}
