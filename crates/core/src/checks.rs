//! Preconditions: what a step (or `check`) needs before it changes
//! anything, each with its detail and, when it is not met, the next step.

use serde::Serialize;

use crate::{
    error::Failure,
    ui::{Level, Ui},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

/// One precondition and what to do about it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
}

/// The preconditions of a step or of `check`, all of them.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Checks {
    pub items: Vec<Check>,
}

impl Checks {
    pub fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, CheckStatus::Pass, detail, None::<String>);
    }

    pub fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>, next: impl Into<String>) {
        self.push(name, CheckStatus::Warn, detail, Some(next));
    }

    pub fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, next: impl Into<String>) {
        self.push(name, CheckStatus::Fail, detail, Some(next));
    }

    /// A check failed on `error`: its message, and its own way on where it
    /// knows one (a refused certificate, a wrong password), else `next`.
    pub fn fail_on(&mut self, name: impl Into<String>, error: &anyhow::Error, next: impl Into<String>) {
        let failure = Failure::of(error);
        let next = failure.advice.unwrap_or_else(|| next.into());
        self.push(name, CheckStatus::Fail, failure.message, Some(next));
    }

    /// A check whose outcome is an error or not.
    pub fn result(&mut self, name: &str, result: Result<String, (String, String)>) {
        match result {
            Ok(detail) => self.pass(name, detail),
            Err((detail, next)) => self.fail(name, detail, next),
        }
    }

    fn push(
        &mut self,
        name: impl Into<String>,
        status: CheckStatus,
        detail: impl Into<String>,
        next: Option<impl Into<String>>,
    ) {
        self.items.push(Check { name: name.into(), status, detail: detail.into(), next_step: next.map(Into::into) });
    }

    pub fn extend(&mut self, other: Checks) {
        self.items.extend(other.items);
    }

    pub fn failed(&self) -> bool {
        self.items.iter().any(|c| c.status == CheckStatus::Fail)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.items.iter().filter(|c| c.status == CheckStatus::Fail)
    }

    /// Every check, a line each, for a person: what `check` prints on
    /// stdout, since the checks are its result.
    pub fn lines(&self) -> String {
        self.items
            .iter()
            .map(|check| {
                let next = check.next_step.as_deref().map(|n| format!("\n           next: {n}")).unwrap_or_default();
                let mark = match check.status {
                    CheckStatus::Pass => "ok",
                    CheckStatus::Warn => "warning",
                    CheckStatus::Fail => "FAILED",
                };
                format!("  {mark:<8} {}: {}{next}\n", check.name, check.detail)
            })
            .collect()
    }

    /// Shows the warnings and failures (and, with `--json`, everything).
    pub fn report(&self, ui: &Ui, step: &str) {
        for check in &self.items {
            let next = check.next_step.as_deref().map(|n| format!(" -> {n}")).unwrap_or_default();
            match check.status {
                CheckStatus::Pass => ui.event(Level::Info, step, format_args!("ok: {}: {}", check.name, check.detail)),
                CheckStatus::Warn => {
                    ui.event(Level::Warn, step, format_args!("{}: {}{next}", check.name, check.detail))
                }
                CheckStatus::Fail => {
                    ui.event(Level::Error, step, format_args!("failed: {}: {}{next}", check.name, check.detail))
                }
            }
        }
    }
}
