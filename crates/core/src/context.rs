//! The shared state of one invocation: the config, the output, the API
//! clients of both orchestrators, the work directory (locked on first use).

use std::sync::OnceLock;

use anyhow::Context as _;
use inmanta_api::{Client, ClientOptions};

use crate::{
    config::{Access, Config, Loaded, Orchestrator, Side},
    error::ConfigError,
    inventory::Inventory,
    journal::WorkDir,
    runner::Runner,
    ui::Ui,
};

/// The API client of one orchestrator of the config (`key`: its table).
fn client(config: &Config, ui: &Ui, key: &str, o: &Orchestrator, access: &Access) -> anyhow::Result<Client> {
    if !o.tls_verify {
        ui.warn(
            "config",
            format!(
                "TLS certificate verification is OFF for the {key} server ({}): anyone on the path can read its token",
                o.api_url
            ),
        );
    }
    let options = ClientOptions {
        base_url: o.api_url.clone(),
        token: access.token.as_ref().map(|t| t.expose().to_owned()),
        ca_pem: access.ca_pem.clone(),
        tls_verify: o.tls_verify,
        timeout: config.timeouts.api,
        retries: 3,
    };
    Client::new(key, options).map_err(|e| {
        anyhow::Error::new(ConfigError {
            file: config.path.clone(),
            location: None,
            key: Some(format!("{key}.api_url")),
            message: e.to_string(),
        })
    })
}

/// The shared state of one invocation.
pub struct Context {
    pub config: Config,
    pub ui: Ui,
    old: Client,
    new: Client,
    /// The new orchestrator's token and CA, for its intermediate servers.
    new_access: Access,
    work: OnceLock<WorkDir>,
}

impl Context {
    pub fn new(loaded: Loaded, ui: Ui) -> anyhow::Result<Self> {
        let Loaded { config, old: old_access, new: new_access } = loaded;
        let old = client(&config, &ui, "old", &config.old, &old_access)?;
        let new = client(&config, &ui, "new", &config.new, &new_access)?;
        Ok(Context { config, ui, old, new, new_access, work: OnceLock::new() })
    }

    /// A client of the `index`th `[[intermediate]]` server.
    pub fn intermediate_api(&self, index: usize) -> anyhow::Result<Client> {
        let orch = self.config.intermediate[index].orchestrator(&self.config.new);
        client(&self.config, &self.ui, &format!("intermediate[{index}]"), &orch, &self.new_access)
    }

    /// A client of a rehearsal server: the new server (`None`) or the
    /// `index`th intermediate, answering on `rehearsal.port`.
    pub fn rehearsal_api(&self, index: Option<usize>) -> anyhow::Result<Client> {
        let mut orch = match index {
            Some(i) => self.config.intermediate[i].orchestrator(&self.config.new),
            None => self.config.new.clone(),
        };
        orch.api_url = crate::config::with_port(&orch.api_url, self.config.rehearsal.port);
        client(&self.config, &self.ui, "rehearsal", &orch, &self.new_access)
    }

    pub fn api(&self, side: Side) -> &Client {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    /// Runs commands on the host of one orchestrator.
    pub fn runner(&self, side: Side) -> Runner {
        Runner::on(&self.config.side(side).host)
    }

    /// The locked work directory, opened on first use.
    pub fn work(&self) -> anyhow::Result<&WorkDir> {
        if let Some(work) = self.work.get() {
            return Ok(work);
        }
        let work = WorkDir::open(&self.config)?;
        self.ui.attach_log(&work.path("events.log"));
        if let Some(note) = &work.recovered_from {
            self.ui.warn("journal", format!("{note}; continuing from the journal"));
        }
        Ok(self.work.get_or_init(|| work))
    }

    /// The work directory if this run has opened (and locked) it.
    pub fn opened_work(&self) -> Option<&WorkDir> {
        self.work.get()
    }

    /// The inventory `halt-all` took of the old orchestrator.
    pub fn inventory(&self) -> anyhow::Result<Inventory> {
        let path = self.config.work_dir.join(Inventory::FILE);
        crate::fsutil::read_json(&path)
            .context("no inventory of the old orchestrator: run `inmanta-migrate halt-all` first")
    }
}
