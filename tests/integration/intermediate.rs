//! `[[intermediate]]` servers against fakes: the preflight names one that
//! runs (it shares the new database, which restore would replace) and the
//! jump it covers. The walk itself is proven on real servers
//! (`e2e_versions::migrates_11_5_to_19_0_through_15_5_and_18_2`).

use fake_inmanta::Flavor;

use crate::support::{Fakes, check_items, item};

fn intermediate(version: &str, status: &str) -> String {
    format!(
        "[[intermediate]]\nversion = \"{version}\"\n\n[intermediate.service]\nmanager = \"command\"\n\
         start = [\"true\"]\nstop = [\"true\"]\nstatus = [\"{status}\"]\n\n"
    )
}

#[test]
fn check_refuses_a_running_intermediate_and_names_it() {
    let f = Fakes::new(Flavor::V11, Flavor::V19);
    std::fs::write(f.new.control_dir().join("stop"), "").unwrap();
    f.new.wait_stopped(true);
    f.config(&intermediate("15.5.9", "true"));
    let run = f.run(&["check", "--json"]);
    run.code(3);
    let items = check_items(&run);
    let running = item(&items, "intermediate 15.5.9 stopped");
    assert_eq!(running["status"], "fail", "{running}");
    assert!(running["next_step"].as_str().unwrap().starts_with("stop it first"), "{running}");

    f.config(&intermediate("15.5.9", "false"));
    let items = check_items(&f.run(&["check", "--json"]));
    assert_eq!(item(&items, "intermediate 15.5.9 stopped")["status"], "pass");
    assert_eq!(item(&items, "new server stopped")["status"], "pass", "the new server is checked as before");
}
