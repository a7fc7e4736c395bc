//! End to end on a secure lab: both servers run with `[server] auth=true`
//! (one HS256 signing section, shared by old and new as a real migration
//! keeps it) and HTTPS with a certificate of a self-signed CA. The tool works
//! with a bearer token and the CA file, refuses a wrong CA and a bad token
//! with an error that says which, turns verification off only when told to
//! and says so loudly, and never prints a token.

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use camino::{Utf8Path, Utf8PathBuf};
use lab::{Security, Side, TokenKind};

use crate::support::lab::{Lab, assert_migrated, lab_with, slot};
use crate::support::{Run, Test, get, remove, set};

/// Writes a 0600 file in the instance's directory.
fn private_file(lab: &Lab, name: &str, text: &str) -> Utf8PathBuf {
    let dir = lab.dir().join("test-secrets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn run_with(lab: &Lab, config: &Utf8Path, args: &[&str]) -> Run {
    Test::new(lab.dir()).config(config).args(args.iter().copied()).run()
}

/// No secret value in what a run printed.
#[track_caller]
fn assert_no_secret(run: &Run, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !run.stdout.contains(secret.as_str()) && !run.stderr.contains(secret.as_str()),
            "{what}: a secret ({} characters) is in the output",
            secret.len()
        );
    }
}

/// No secret value in any file under `dir`.
#[track_caller]
fn assert_no_secret_in_files(dir: &Utf8Path, secrets: &[String]) {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in d.read_dir_utf8().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().to_owned();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for secret in secrets {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{path} holds a secret ({} characters)",
                    secret.len()
                );
            }
        }
    }
}

/// The generated config uses https, the token files and the CA, and the
/// servers refuse what has neither.
fn assert_secure_setup(lab: &Lab) {
    assert!(lab.is_secure());
    let config = std::fs::read_to_string(lab.config_path()).unwrap();
    for side in Side::BOTH {
        let url = lab.api_url(side);
        assert!(url.starts_with("https://127.0.0.1:"), "{side}: {url}");
        assert!(config.contains(&format!("api_url = \"{url}\"\n")), "{config}");
        let token = lab.token_file(side).unwrap();
        assert!(config.contains(&format!("token = {{ file = \"{token}\" }}\n")), "{config}");
    }
    let ca = lab.ca_file().unwrap();
    assert_eq!(config.matches(&format!("ca_file = \"{ca}\"\n")).count(), 2, "{config}");
    assert!(!config.contains("tls_verify"), "verification on (the default): {config}");
    let url = lab.api_url(Side::Old);
    let no_ca = lab::Client::new(&url).unwrap().server_version().unwrap_err();
    assert!(format!("{no_ca:#}").contains("certificate"), "{no_ca:#}");
    let ca = std::fs::read(lab.ca_file().unwrap()).unwrap();
    let no_token = lab::Access { ca_pem: Some(ca), token: None };
    let refused = lab::Client::with_access(&url, std::time::Duration::from_secs(10), &no_token)
        .unwrap()
        .server_version()
        .unwrap_err();
    assert!(format!("{refused:#}").contains("HTTP 401"), "{refused:#}");
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn migrates_a_secure_8_7_to_14_with_a_token_and_the_ca() {
    let _slot = slot();
    let t0 = Instant::now();
    let lab = lab_with("sec-e2e-migrate", "8.7.6", Security::Secure);
    eprintln!("secure lab up in {:.1} s", t0.elapsed().as_secs_f64());
    assert_secure_setup(&lab);
    let secrets = lab.secret_values();
    assert!(secrets.len() >= 9, "passwords, both tokens, the JWT key, the private keys");
    for side in Side::BOTH {
        assert!(secrets.contains(&lab.token(side).unwrap()));
    }
    let before = lab.environments(Side::Old);

    let t = Instant::now();
    let migrated = lab.run(&["migrate", "--yes", "--release", "--json"]);
    eprintln!("secure migration in {:.1} s", t.elapsed().as_secs_f64());
    migrated.success();
    assert!(!migrated.stderr.contains("verification is OFF"), "{}", migrated.stderr);
    assert_no_secret(&migrated, &secrets, "migrate");

    let outcome = lab.reconciled();
    assert_migrated(&lab, &before, &outcome, true);

    let status = lab.run(&["status"]);
    status.success();
    assert_no_secret(&status, &secrets, "status");
    assert_no_secret_in_files(&lab.work_dir(), &secrets);
}

#[test]
#[ignore = "needs the real lab: cargo xtask ci"]
fn a_wrong_ca_or_a_bad_token_is_refused_and_verification_is_off_only_loudly() {
    let _slot = slot();
    let lab = lab_with("sec-e2e-refuse", "8.7.6", Security::Secure);
    let mut secrets = lab.secret_values();
    // The generated config names the lab's CA and tokens, and passes.
    let config: toml::Table = std::fs::read_to_string(lab.config_path()).unwrap().parse().unwrap();
    for side in [Side::Old, Side::New] {
        assert_eq!(get(&config, &format!("{side}.ca_file")).as_str(), lab.ca_file().as_ref().map(|f| f.as_str()));
        let token = lab.token_file(side);
        assert_eq!(get(&config, &format!("{side}.token.file")).as_str(), token.as_ref().map(|f| f.as_str()));
    }
    let ok = lab.run(&["check"]);
    ok.success().output_has("tokens").output_has("not compared");
    assert_no_secret(&ok, &secrets, "check");

    // (a2) Each server's own config read: the same [auth_jwt_default] on
    // both sides; then a new server signing with another key.
    let server_configs = |name: &str, new_cfg: &camino::Utf8Path| {
        let (old_cfg, new_cfg) = (lab.server_config(Side::Old), new_cfg.to_owned());
        lab.config_variant(name, |c| {
            set(c, "old.database.inmanta_config", old_cfg.as_str());
            set(c, "new.database.inmanta_config", new_cfg.as_str());
        })
    };
    let same = run_with(&lab, &server_configs("same-jwt", &lab.server_config(Side::New)), &["check"]);
    same.success().output_has("the new server validates the old one's tokens: [auth_jwt_default] alike");
    let text = std::fs::read_to_string(lab.server_config(Side::New)).unwrap();
    let other_key = lab.dir().join("new-server-other-key.cfg");
    let rekeyed: Vec<String> = text
        .lines()
        .map(|l| if l.starts_with("key=") { "key=another-signing-key".to_owned() } else { l.to_owned() })
        .collect();
    assert_ne!(rekeyed.join("\n"), text.trim_end(), "the lab's server config has a `key=` line");
    std::fs::write(&other_key, rekeyed.join("\n")).unwrap();
    secrets.push("another-signing-key".into());
    let refused = run_with(&lab, &server_configs("other-jwt", &other_key), &["check"]);
    refused
        .code(3)
        .output_has("the new server would refuse the old one's tokens")
        .output_has("has another key (compared by sha256)");
    assert_no_secret(&refused, &secrets, "check with another JWT key");

    // (b) A CA that did not sign the servers' certificate.
    let other_ca = private_file(&lab, "other-ca.pem", &lab::unrelated_ca_pem("not the lab's CA").unwrap());
    let wrong_ca = lab.config_variant("wrong-ca", |c| {
        set(c, "old.ca_file", other_ca.as_str());
        set(c, "new.ca_file", other_ca.as_str());
    });
    let run = run_with(&lab, &wrong_ca, &["check"]);
    run.code(3)
        .output_has("old API")
        .output_has("TLS handshake")
        .output_has("invalid peer certificate")
        .output_has("UnknownIssuer")
        .output_has("`old.ca_file`");
    assert_no_secret(&run, &secrets, "check with a wrong CA");

    // (c) An expired token, and one signed with another key.
    for (kind, says) in [(TokenKind::Expired, "expired"), (TokenKind::WrongKey, "Signature verification failed")] {
        let token = lab.mint_token(kind).unwrap();
        secrets.push(token.clone());
        let file = private_file(&lab, &format!("{kind:?}-token"), &token);
        let config = lab.config_variant(&format!("{kind:?}-token"), |c| set(c, "old.token.file", file.as_str()));
        let run = run_with(&lab, &config, &["check"]);
        run.code(3).output_has("old API").output_has("HTTP 403").output_has(says).output_has("`old.token`");
        assert_no_secret(&run, &secrets, &format!("check with a {kind:?} token"));
    }
    // No token at all.
    let config = lab.config_variant("no-token", |c| {
        remove(c, "old.token");
        remove(c, "new.token");
    });
    let run = run_with(&lab, &config, &["check"]);
    run.code(3).output_has("HTTP 401").output_has("token");
    assert_no_secret(&run, &secrets, "check without a token");
    // A valid token minted now is accepted: the failures above are the tokens'.
    let fresh = lab.mint_token(TokenKind::Valid).unwrap();
    secrets.push(fresh.clone());
    let file = private_file(&lab, "fresh-token", &fresh);
    let config = lab.config_variant("fresh-token", |c| set(c, "old.token.file", file.as_str()));
    run_with(&lab, &config, &["check"]).success();

    // (d) The wrong CA with verification off: it works, and says so loudly.
    let no_verify = lab.config_variant("no-verify", |c| {
        for side in ["old", "new"] {
            set(c, &format!("{side}.ca_file"), other_ca.as_str());
            set(c, &format!("{side}.tls_verify"), false);
        }
    });
    let text = std::fs::read_to_string(&no_verify).unwrap();
    assert_eq!(text.matches("tls_verify = false").count(), 2, "both sides: {text}");
    let run = run_with(&lab, &no_verify, &["check"]);
    run.success()
        .stderr_has("TLS certificate verification is OFF for the old server")
        .stderr_has("TLS certificate verification is OFF for the new server");
    assert!(!run.stdout.contains("verification is OFF"), "warnings go to stderr");
    assert_no_secret(&run, &secrets, "check without verification");
    // Also in JSON mode, where progress goes to stderr as JSON lines.
    let run = run_with(&lab, &no_verify, &["check", "--json"]);
    run.success().stderr_has("verification is OFF");
    assert_no_secret(&run, &secrets, "check --json without verification");

    // A wrong CA for the NEW side only: `check` cannot see it while that
    // server is stopped, but start-server stops at once with the TLS error
    // (it does not wait its 30-minute limit for a server that "does not
    // answer").
    let new_wrong = lab.config_variant("new-wrong-ca", |c| set(c, "new.ca_file", other_ca.as_str()));
    run_with(&lab, &new_wrong, &["check"]).success();
    let t = Instant::now();
    let run = run_with(&lab, &new_wrong, &["migrate", "--yes"]);
    run.code(1).stderr_has("new server: the TLS handshake").stderr_has("UnknownIssuer").stderr_has("`new.ca_file`");
    assert!(t.elapsed().as_secs() < 180, "start-server gave up late: {:?}", t.elapsed());
    assert_eq!(lab.journal()["steps"]["start-server"]["status"], "failed", "{}", lab.journal());
    assert_no_secret(&run, &secrets, "migrate with a wrong CA for the new side");
}
