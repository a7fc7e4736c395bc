//! What a person reads: the whole human output of `check`, `plan` and
//! `status` at three points of a migration (before it, after the old
//! side's steps, at its end), against fake servers and a scratch
//! PostgreSQL. A snapshot holds every line, so a line added, lost or
//! reworded shows in review (`cargo insta review`).

use crate::support::{scratch::Setup, snapshot_human};

#[test]
fn check_plan_and_status_at_three_points_of_a_migration() {
    let Some(s) = Setup::new() else { return };
    let dir = s.fakes.path().to_owned();
    let show = |point: &str| {
        for command in ["check", "plan", "status"] {
            let run = s.test().arg(command).run();
            snapshot_human!(format!("{point}_{command}"), &run, &dir);
        }
    };
    show("1_before");
    for step in ["halt-all", "stop-server", "dump"] {
        s.test().arg(step).run().success();
    }
    show("2_old_side_done");
    s.test().args(["migrate", "--yes"]).run().success();
    show("3_migrated");
}
