//! The rule above every feature: never two orchestrators driving the same
//! environment at once. An environment is resumed on the new side only while
//! the old server is silent or has it halted, and on the old side only once
//! the new side is inert (its server silent and stopped). Both directions
//! ask here, just before each resume.

use anyhow::bail;
use uuid::Uuid;

use crate::{
    config::Side,
    context::Context,
    error::NeedsOperator,
    service::{ProcessState, Service},
};

/// Before the new side resumes `env`: the old server does not answer, or
/// has `env` halted. A server that answers with it running is driving it.
pub async fn old_side_lets_go(cx: &Context, env: Uuid, name: &str) -> anyhow::Result<()> {
    let api = cx.api(Side::Old);
    let service = Service::new(&cx.config.old);
    match api.probe().await {
        Ok(None) => return Ok(()),
        Err(e) if e.is_refused() => return Ok(()),
        // A timeout is no silence: a busy or cut-off server may still
        // drive it. Its service manager decides.
        Err(e) if e.is_unreachable() => {
            return match service.state().await {
                Ok(ProcessState::Running) => Err(NeedsOperator(format!(
                    "the old server does not answer ({e}) but {} reports it running: it may still drive \
                     environment {name} ({env}); nothing was resumed. Stop it ({}), then run \
                     `inmanta-migrate env-reconcile` again",
                    service.describe(),
                    service.describe()
                ))
                .into()),
                Ok(_) => Ok(()),
                Err(state) => bail!(
                    "cannot tell whether the old server drives environment {name} ({env}): its API does not \
                     answer ({e}) and its service cannot be asked: {state:#}"
                ),
            };
        }
        Err(e) => bail!("cannot tell whether the old server drives environment {name} ({env}): {e}"),
        Ok(Some(_)) => {}
    }
    match api.environment(env).await {
        Ok(old) if old.halted => Ok(()),
        Ok(_) => Err(NeedsOperator(format!(
            "the old server ({}) answers and runs environment {name} ({env}): resuming it here would let two \
             orchestrators drive it; nothing was resumed. Halt it there (`inmanta-migrate halt-all` halts every \
             environment again) and stop that server ({}), then run `inmanta-migrate env-reconcile` again; or go \
             back with `inmanta-migrate rollback`",
            cx.config.old.api_url,
            service.describe()
        ))
        .into()),
        // Not on the old server: nothing there can drive it.
        Err(e) if e.status() == Some(404) => Ok(()),
        Err(e) => bail!("cannot tell whether the old server drives environment {name} ({env}): {e}"),
    }
}

/// `rollback --new-side-gone`: the operator gave the new machine up, so its
/// service manager is not asked; its API must still be silent (refused, or
/// unreachable: a machine that is off answers nothing).
pub async fn new_side_is_silent(cx: &Context) -> anyhow::Result<()> {
    match cx.api(Side::New).probe().await {
        Ok(None) => Ok(()),
        Err(e) if e.is_unreachable() => Ok(()),
        Ok(Some(_)) => Err(NeedsOperator(format!(
            "the new server answers at {}: it is not gone, and resuming on the old side would let two \
             orchestrators drive the same environments; nothing was resumed. Run `inmanta-migrate rollback` \
             without --new-side-gone: it halts the new server's environments and stops it first",
            cx.config.new.api_url
        ))
        .into()),
        Err(e) => Err(NeedsOperator(format!(
            "something answers at {} ({e}): the new side does not look gone; nothing was resumed. Make sure \
             nothing runs there, or run `inmanta-migrate rollback` without --new-side-gone",
            cx.config.new.api_url
        ))
        .into()),
    }
}

/// Before the old side resumes anything: the new server does not answer and
/// its service manager reports it stopped.
pub async fn new_side_is_inert(cx: &Context) -> anyhow::Result<()> {
    let answers = !matches!(cx.api(Side::New).probe().await, Ok(None));
    let service = Service::new(&cx.config.new);
    let state = service.state().await?;
    if state == ProcessState::Running {
        return Err(NeedsOperator(format!(
            "the new server still runs ({}: {state}): resuming on the old side would let two orchestrators drive \
             the same environments; nothing was resumed. Run `inmanta-migrate rollback` again: it stops the new \
             server first",
            service.describe()
        ))
        .into());
    }
    if answers {
        return Err(NeedsOperator(format!(
            "something answers on {} though {} reports the new server stopped (a server started outside its \
             service?): resuming on the old side would let two orchestrators drive the same environments; nothing \
             was resumed. Stop that server by hand, then run `inmanta-migrate rollback` again",
            cx.config.new.api_url,
            service.describe()
        ))
        .into());
    }
    Ok(())
}
