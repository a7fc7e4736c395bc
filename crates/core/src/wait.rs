//! Polling with a limit: every wait in the tool ends, with a message that
//! says what it waited for.

use std::time::{Duration, Instant};

/// The limit of a wait passed: callers that have more to say (the end of a
/// log) find it in the error chain.
#[derive(Debug, thiserror::Error)]
#[error("gave up after {limit}: {what}")]
pub struct GaveUp {
    pub limit: String,
    pub what: String,
}

/// Calls `probe` every `every` until it returns `Some`, or fails after
/// `limit` with [`GaveUp`] saying that `what` did not happen. An error of
/// `probe` ends the wait at once.
pub async fn until<T>(
    every: Duration,
    limit: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if start.elapsed() >= limit {
            return Err(GaveUp { limit: shown(limit), what: what.to_owned() }.into());
        }
        tokio::time::sleep(every.min(limit.saturating_sub(start.elapsed())).max(Duration::from_millis(10))).await;
    }
}

/// Awaits `work` for at most `limit`, or fails with [`GaveUp`] saying that
/// `what` did not come.
pub async fn within<T>(limit: Duration, what: &str, work: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(limit, work).await.map_err(|_| GaveUp { limit: shown(limit), what: what.to_owned() }.into())
}

fn shown(limit: Duration) -> String {
    humantime::format_duration(Duration::from_secs(limit.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_up_with_the_reason() {
        let mut n = 0;
        let err = until(Duration::from_millis(5), Duration::from_millis(30), "the answer to appear", async || {
            n += 1;
            Ok(None::<()>)
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("the answer to appear"), "{err}");
        assert!(err.is::<GaveUp>());
        assert!(n >= 2);
        let v = until(Duration::from_millis(1), Duration::from_secs(1), "x", async || Ok(Some(42))).await.unwrap();
        assert_eq!(v, 42);
    }

    #[tokio::test]
    async fn within_bounds_one_answer() {
        let err = within(Duration::from_millis(20), "an answer", std::future::pending::<()>()).await.unwrap_err();
        assert!(err.to_string().contains("an answer"), "{err}");
        assert_eq!(within(Duration::from_secs(1), "x", async { 7 }).await.unwrap(), 7);
    }
}
