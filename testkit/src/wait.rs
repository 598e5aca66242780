//! Polling for a condition with a deadline (the API server is eventually consistent by nature).

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Calls `check` every 100 ms until it returns `Ok(Some(value))`, and returns the value. Fails
/// after `timeout` with `what` and the last error or "condition not met".
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
