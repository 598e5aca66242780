//! Retrying cloud calls: exponential backoff with jitter, honouring a server's Retry-After.
//!
//! Errors say whether they are worth retrying through [`Retryable`]; [`retry`] runs an operation
//! until it succeeds, fails permanently, or the policy's attempts are used up, and returns the last
//! error so the caller can map it (e.g. persistent throttling to `RESOURCE_EXHAUSTED`).

use std::{future::Future, time::Duration};

use backon::{ExponentialBuilder, Retryable as _};

/// Whether an error is transient, and how long the server asked us to wait.
pub trait Retryable {
    /// True for throttling, 5xx, timeouts and connection failures.
    fn is_retryable(&self) -> bool;
    /// The server's Retry-After, if it sent one.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// How hard to retry.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Largest delay between attempts (a longer Retry-After is still honoured).
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    /// 100 ms doubling to 5 s, 8 retries: about 15 s of trying, inside a shim's call deadline.
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_retries: 8,
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_factor(2.0)
            .with_jitter()
    }
}

/// Runs `op` until it succeeds or fails with a non-retryable error or the retries are used up;
/// `what` names the call in debug logs.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, op: F) -> Result<T, E>
where
    E: Retryable + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    op.retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(|e: &E| e.is_retryable())
        // A Retry-After longer than our own delay wins; `None` (retries used up) stays `None`.
        .adjust(|e: &E, delay| delay.map(|d| e.retry_after().map_or(d, |ra| ra.max(d))))
        .notify(|e: &E, delay| tracing::debug!(call = what, error = %e, ?delay, "retrying"))
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug)]
    struct E {
        transient: bool,
        after: Option<Duration>,
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "E")
        }
    }
    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            self.transient
        }
        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let calls = AtomicUsize::new(0);
        let out = retry(&RetryPolicy::default(), "t", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(E {
                    transient: true,
                    after: None,
                })
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(out.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried_and_attempts_are_bounded() {
        let calls = AtomicUsize::new(0);
        let out: Result<(), E> = retry(&RetryPolicy::default(), "t", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(E {
                transient: false,
                after: None,
            })
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy {
            max_retries: 3,
            ..Default::default()
        };
        let out: Result<(), E> = retry(&policy, "t", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(E {
                transient: true,
                after: None,
            })
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let start = tokio::time::Instant::now();
        let calls = AtomicUsize::new(0);
        let out = retry(&RetryPolicy::default(), "t", || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(E {
                    transient: true,
                    after: Some(Duration::from_secs(30)),
                })
            } else {
                Ok(())
            }
        })
        .await;
        assert!(out.is_ok());
        assert!(
            start.elapsed() >= Duration::from_secs(30),
            "{:?}",
            start.elapsed()
        );
    }
}
