//! `stop-server`: stops the old orchestrator's server through its service
//! manager, and waits until its API is silent and its process gone.
//! Refuses while an environment still runs, unless `--force`.

use std::time::{Duration, Instant};

use anyhow::bail;
use migrate_core::{
    Checks, Context, Figures, Outcome, Side, Step, StepId,
    service::{ProcessState, Service},
    wait,
};

/// Old side: stops the server; refuses while an environment runs.
#[derive(Debug, Default, clap::Args)]
pub struct StopServer {
    /// Stop the server even if some environments are still running.
    #[arg(long)]
    pub force: bool,
}

impl Step for StopServer {
    const ID: StepId = StepId::StopServer;

    fn describe(&self, cx: &Context) -> String {
        format!("stop the old server ({})", Service::new(&cx.config.old).describe())
    }

    async fn check(&self, cx: &Context) -> Checks {
        let mut checks = Checks::default();
        let service = Service::new(&cx.config.old);
        match service.state().await {
            Ok(state) => checks.pass("old service", format!("{}: {state}", service.describe())),
            Err(e) => checks.fail_on("old service", &e, "fix `old.service` in the config"),
        }
        match cx.api(Side::Old).probe().await {
            Ok(None) => checks.pass("old API", "does not answer: the server is already stopped"),
            Ok(Some(_)) => match cx.api(Side::Old).environments().await {
                Ok(envs) => {
                    let running: Vec<String> =
                        envs.iter().filter(|e| !e.halted).map(|e| format!("{} ({})", e.name, e.id)).collect();
                    if running.is_empty() {
                        checks.pass("environments halted", format!("all {} halted", envs.len()));
                    } else if self.force {
                        checks.warn(
                            "environments halted",
                            format!("still running: {}", running.join(", ")),
                            "stopping anyway (--force)",
                        );
                    } else {
                        checks.fail(
                            "environments halted",
                            format!("still running: {}", running.join(", ")),
                            "run `inmanta-migrate halt-all` (again, if it ran: it halts them and takes in what changed), or pass --force",
                        );
                    }
                }
                Err(e) => checks.fail("old API", e.to_string(), "fix `old.token` or `old.api_url`"),
            },
            Err(e) => checks.fail("old API", e.to_string(), "fix `old.token` or `old.api_url`"),
        }
        checks
    }

    async fn run(&self, cx: &Context) -> anyhow::Result<Outcome> {
        let service = Service::new(&cx.config.old);
        let api = cx.api(Side::Old);
        let answering = api.probe().await?.is_some();
        let state = service.state().await?;
        if !answering && state != ProcessState::Running {
            return Ok(Outcome::nothing_to_do(Self::NAME, format!("the old server is already stopped ({state})")));
        }
        let start = Instant::now();
        cx.ui.info(Self::NAME, format!("stopping the old server ({})", service.describe()));
        service.stop().await?;
        let spinner = cx.ui.spinner(Self::NAME, "waiting until the API is silent and the process gone");
        let what =
            format!("the old server to stop (API {} silent and {} stopped)", cx.config.old.api_url, service.describe());
        let result = wait::until(Duration::from_millis(500), cx.config.timeouts.stop, &what, async || {
            // A timeout while it shuts down is not silence yet; a TLS failure
            // will not go away by waiting.
            let silent = match api.probe().await {
                Ok(answer) => answer.is_none(),
                Err(e) if e.is_tls() => return Err(e.into()),
                Err(_) => false,
            };
            let state = service.state().await?;
            match (silent, state) {
                (true, ProcessState::Running) => Ok(None),
                (true, _) => Ok(Some(())),
                (false, ProcessState::Running) => Ok(None),
                (false, _) if start.elapsed() > Duration::from_secs(10) => bail!(
                    "{} reports the server stopped, but {} still answers: is another server on that port?",
                    service.describe(),
                    cx.config.old.api_url
                ),
                (false, _) => Ok(None),
            }
        })
        .await;
        drop(spinner);
        result?;
        let seconds = start.elapsed().as_secs_f64();
        Ok(Outcome::done(Self::NAME, format!("the old server stopped in {seconds:.1} s"))
            .figures(Figures { seconds: Some(seconds), ..Figures::default() }))
    }
}
