//! Retrying cloud calls: exponential backoff with jitter, honouring a server's Retry-After.
//!
//! Errors say whether they are worth retrying through [`Retryable`]; [`retry`] runs an operation
//! until it succeeds, fails permanently, or the policy's attempts are used up, and returns the last
//! error so the caller can map it (e.g. persistent throttling to `RESOURCE_EXHAUSTED`).

use std::{
    future::Future,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable as _};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tracing::{Instrument, field::Empty};

/// Whether an error is transient, and how long the server asked us to wait.
pub trait Retryable {
    /// True for throttling, 5xx, timeouts and connection failures.
    fn is_retryable(&self) -> bool;
    /// The server's Retry-After, if it sent one.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// True when the cloud throttled the call (counted apart from other failures).
    fn is_throttle(&self) -> bool {
        false
    }
}

/// Labels of a cloud call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The cloud operation, e.g. `RunTask`.
    pub operation: String,
    /// `success` or `error`.
    pub outcome: &'static str,
}

/// Labels of a retry or throttle.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The cloud operation.
    pub operation: String,
}

/// Cloud call metrics: calls by operation and outcome (after retries), retries, throttles.
#[derive(Clone, Default)]
pub struct CloudMetrics {
    calls: Family<CallLabels, Counter>,
    retries: Family<OperationLabels, Counter>,
    throttles: Family<OperationLabels, Counter>,
}

static METRICS: OnceLock<CloudMetrics> = OnceLock::new();

/// Registers the cloud call metrics in `registry`; [`retry`] counts into them from then on (once
/// per process; later calls register nothing).
pub fn register_metrics(registry: &mut Registry) {
    let metrics = CloudMetrics::default();
    if METRICS.set(metrics.clone()).is_ok() {
        registry.register(
            "cloud_api_calls",
            "Cloud API calls by operation and outcome (after retries)",
            metrics.calls,
        );
        registry.register(
            "cloud_api_retries",
            "Cloud API attempts that were retried",
            metrics.retries,
        );
        registry.register(
            "cloud_api_throttles",
            "Cloud API attempts the cloud throttled",
            metrics.throttles,
        );
    }
}

/// The longest Retry-After honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

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
/// `what` names the cloud operation. The whole call is one client span (`cloud.operation`,
/// `retry.count`, error status) under the caller's span, so the HTTP request the cloud SDK makes
/// inside it belongs to the pod's trace; calls, retries and throttles are counted.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, op: F) -> Result<T, E>
where
    E: Retryable + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let span = tracing::info_span!(
        "cloud.call",
        otel.name = %what,
        otel.kind = "client",
        otel.status_code = Empty,
        cloud.operation = %what,
        retry.count = Empty,
        error.type = Empty,
    );
    let retries = AtomicU32::new(0);
    let metrics = METRICS.get();
    let result = op
        .retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(|e: &E| e.is_retryable())
        // A Retry-After longer than our own delay wins, up to MAX_RETRY_AFTER (a server asking
        // for an hour must not park a create for an hour); `None` (retries used up) stays `None`.
        .adjust(|e: &E, delay| {
            delay.map(|d| {
                e.retry_after()
                    .map_or(d, |ra| ra.min(MAX_RETRY_AFTER).max(d))
            })
        })
        .notify(|e: &E, delay| {
            retries.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = metrics {
                let labels = OperationLabels {
                    operation: what.to_owned(),
                };
                m.retries.get_or_create(&labels).inc();
                if e.is_throttle() {
                    m.throttles.get_or_create(&labels).inc();
                }
            }
            tracing::debug!(call = what, error = %e, ?delay, "retrying");
        })
        .instrument(span.clone())
        .await;
    span.record("retry.count", retries.load(Ordering::Relaxed));
    let outcome = match &result {
        Ok(_) => "success",
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            span.record(
                "error.type",
                if e.is_throttle() {
                    "throttled"
                } else {
                    "error"
                },
            );
            if let Some(m) = metrics
                && e.is_throttle()
            {
                let labels = OperationLabels {
                    operation: what.to_owned(),
                };
                m.throttles.get_or_create(&labels).inc();
            }
            "error"
        }
    };
    if let Some(m) = metrics {
        m.calls
            .get_or_create(&CallLabels {
                operation: what.to_owned(),
                outcome,
            })
            .inc();
    }
    result
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

    /// How long a retried call waited when its first attempt asked for `after`.
    async fn waited_for_retry_after(after: Duration) -> Duration {
        let start = tokio::time::Instant::now();
        let calls = AtomicUsize::new(0);
        let out = retry(&RetryPolicy::default(), "t", || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(E {
                    transient: true,
                    after: Some(after),
                })
            } else {
                Ok(())
            }
        })
        .await;
        assert!(out.is_ok());
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let waited = waited_for_retry_after(Duration::from_secs(30)).await;
        assert!(waited >= Duration::from_secs(30), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_retry_after_is_capped() {
        let waited = waited_for_retry_after(Duration::from_secs(3600)).await;
        assert!(
            waited >= MAX_RETRY_AFTER && waited < MAX_RETRY_AFTER * 2,
            "{waited:?}"
        );
    }

    impl E {
        fn throttled() -> Self {
            Self {
                transient: true,
                after: None,
            }
        }
    }

    struct Throttle(E);
    impl std::fmt::Display for Throttle {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "throttled")
        }
    }
    impl Retryable for Throttle {
        fn is_retryable(&self) -> bool {
            self.0.transient
        }
        fn is_throttle(&self) -> bool {
            true
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_and_throttles_are_counted() {
        let mut registry = Registry::default();
        register_metrics(&mut registry);
        let attempts = AtomicUsize::new(0);
        let result: Result<u32, Throttle> = retry(&RetryPolicy::default(), "RunTask", || async {
            if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Throttle(E::throttled()))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.ok(), Some(7));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "cloud_api_calls_total{operation=\"RunTask\",outcome=\"success\"} 1",
            "cloud_api_retries_total{operation=\"RunTask\"} 2",
            "cloud_api_throttles_total{operation=\"RunTask\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
