//! Human output: colour only where a terminal reads it. `script` gives the
//! binary a terminal on stderr while stdout goes to a file, as in
//! `inmanta-migrate halt-all > result.txt` run by hand.

use std::process::Command;

use fake_inmanta::Flavor;

use crate::support::{BIN, Fakes};

/// Runs `halt-all` with stderr on a terminal and stdout in a file; returns
/// (what the terminal showed, the file).
fn halt_all_on_a_terminal(no_color: bool) -> (String, String) {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("");
    let shell = format!("'{BIN}' halt-all > stdout.txt");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &shell, "/dev/null"]).current_dir(f.path()).env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().expect("script(1) of util-linux runs");
    let terminal = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "halt-all failed:\n{terminal}");
    let stdout = std::fs::read_to_string(f.path().join("stdout.txt")).unwrap();
    (terminal, stdout)
}

#[test]
fn colour_goes_to_the_terminal_and_never_into_a_redirected_stdout() {
    let (terminal, stdout) = halt_all_on_a_terminal(false);
    assert!(terminal.contains("\x1b["), "progress on the terminal is coloured:\n{terminal}");
    assert!(stdout.contains("done:"), "the result is on stdout:\n{stdout}");
    assert!(!stdout.contains('\x1b'), "no escape codes in a file:\n{stdout:?}");
}

#[test]
fn no_color_turns_colour_off_on_the_terminal_too() {
    let (terminal, stdout) = halt_all_on_a_terminal(true);
    assert!(terminal.contains("halt-all"), "the terminal shows progress:\n{terminal}");
    assert!(!terminal.contains("\x1b[3"), "no colour with NO_COLOR:\n{terminal:?}");
    assert!(!stdout.contains('\x1b'));
}
