//! stop-server against a fake server whose service commands really stop it.

use fake_inmanta::Flavor;

use crate::support::{Fakes, snapshot_human};

#[test]
fn refuses_while_an_environment_runs_then_stops_after_halt_all() {
    let f = Fakes::new(Flavor::V14, Flavor::V14);
    f.old.add_env("prod");
    f.config("");
    let refused = f.run(&["stop-server"]);
    refused.code(3);
    snapshot_human!("refused_while_running", &refused, f.path());
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
    let run = f.run(&["stop-server", "--force"]);
    run.success();
    snapshot_human!("forced", &run, f.path());
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
    let run = f.run(&["stop-server"]);
    run.code(1);
    snapshot_human!("stop_command_fails", &run, f.path());
    assert!(reqwest_free_probe(&f.old.url()), "still up");
}

/// Whether something accepts connections at the URL's port.
fn reqwest_free_probe(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    std::net::TcpStream::connect(addr).is_ok()
}
