//! stop-server against a fake server whose service commands really stop it.

use fake_inmanta::Flavor;

use crate::support::Fakes;

#[test]
fn refuses_while_an_environment_runs_then_stops_after_halt_all() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("");
    f.run(&["stop-server"]).code(3).stderr_has("still running: prod").stderr_has("halt-all");
    assert!(reqwest_free_probe(&f.old.url()), "still up");

    f.run(&["halt-all"]).success();
    f.run(&["stop-server"]).success().stdout_has("the old server stopped");
    assert!(!reqwest_free_probe(&f.old.url()), "stopped");
    f.run(&["stop-server"]).success().stdout_has("nothing to do");
}

#[test]
fn force_stops_with_running_environments() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("");
    f.run(&["stop-server", "--force"]).success().stderr_has("stopping anyway (--force)");
    f.old.wait_stopped(true);
}

#[test]
fn a_failing_stop_command_is_reported() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    let path = f.config("");
    let [_, stop, _] = f.old.service_commands();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("stop = {stop:?}"), r#"stop = ["sh", "-c", "echo permission denied >&2; exit 4"]"#);
    std::fs::write(&path, text).unwrap();
    f.run(&["stop-server"]).code(1).stderr_has("exit code 4").stderr_has("permission denied");
    assert!(reqwest_free_probe(&f.old.url()), "still up");
}

/// Whether something accepts connections at the URL's port.
fn reqwest_free_probe(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    std::net::TcpStream::connect(addr).is_ok()
}
