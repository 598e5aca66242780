//! Container logs from CloudWatch Logs (the awslogs driver's streams), with the kubelet's options;
//! follow is emulated by polling.

use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::OutputLogEvent;
use podprovider_proto::v1::{GetContainerLogsRequest, LogChunk};
use provider_common::retry::{RetryPolicy, retry};
use tokio::sync::mpsc;

use crate::error::{AwsError, Kind};

/// How often a follow polls for new events.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// GetLogEvents returns at most 10,000 events per call.
const MAX_PAGE: i64 = 10_000;
/// A safety stop for a stream that never repeats its token.
const MAX_PAGES: usize = 10_000;

/// One page of a stream.
#[derive(Debug, Default)]
pub struct Page {
    events: Vec<OutputLogEvent>,
    /// `nextForwardToken`.
    next: Option<String>,
    /// `nextBackwardToken`.
    back: Option<String>,
}

/// Where a container's log is.
pub struct Source {
    /// CloudWatch Logs client.
    pub client: aws_sdk_cloudwatchlogs::Client,
    /// Log group.
    pub group: String,
    /// Stream.
    pub stream: String,
    /// Retry policy.
    pub policy: RetryPolicy,
}

impl Source {
    async fn page(
        &self,
        token: Option<String>,
        start_ms: Option<i64>,
        from_head: bool,
        limit: Option<i32>,
    ) -> Result<Page, AwsError> {
        retry(&self.policy, "GetLogEvents", || async {
            match self
                .client
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&self.stream)
                .start_from_head(from_head)
                .set_start_time(start_ms)
                .set_next_token(token.clone())
                .set_limit(limit)
                .send()
                .await
            {
                Ok(out) => Ok(Page {
                    events: out.events().to_vec(),
                    next: out.next_forward_token().map(str::to_owned),
                    back: out.next_backward_token().map(str::to_owned),
                }),
                Err(e) => {
                    let e = crate::error::from_sdk("GetLogEvents", e);
                    // No stream yet: the container has not written anything.
                    if e.kind == Kind::NotFound {
                        Ok(Page {
                            events: Vec::new(),
                            next: token.clone(),
                            back: token.clone(),
                        })
                    } else {
                        Err(e)
                    }
                }
            }
        })
        .await
    }
}

/// Every event from `token` on, forward. CloudWatch Logs may answer empty pages before the end;
/// the end is the page whose `nextForwardToken` is the token that was sent. Returns the events and
/// the token to continue from (for follow).
pub async fn read_forward<F, Fut>(
    mut fetch: F,
    mut token: Option<String>,
) -> Result<(Vec<OutputLogEvent>, Option<String>), AwsError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page, AwsError>>,
{
    let mut events = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = fetch(token.clone()).await?;
        events.extend(page.events);
        if page.next.is_none() || page.next == token {
            return Ok((events, token.or(page.next)));
        }
        token = page.next;
    }
    Ok((events, token))
}

/// The last `n` events (none for 0, still learning where the stream ends), read backwards from the end (`startFromHead=false`) a page of at most `n`
/// at a time, until there are `n` or `nextBackwardToken` repeats (the start). Returns them in
/// order with the forward token of the newest page (for follow).
pub async fn read_tail<F, Fut>(
    mut fetch: F,
    n: usize,
) -> Result<(Vec<OutputLogEvent>, Option<String>), AwsError>
where
    F: FnMut(Option<String>, i32) -> Fut,
    Fut: std::future::Future<Output = Result<Page, AwsError>>,
{
    let mut pages: Vec<Vec<OutputLogEvent>> = Vec::new();
    let mut have = 0;
    let mut token: Option<String> = None;
    let mut forward: Option<String> = None;
    // The first page is always read: its forward token is where a follow goes on.
    for i in 0..MAX_PAGES {
        if have >= n && i > 0 {
            break;
        }
        let limit = i32::try_from((n - have).min(MAX_PAGE as usize))
            .unwrap_or(1)
            .max(1);
        let page = fetch(token.clone(), limit).await?;
        if i == 0 {
            forward = page.next.clone();
        }
        have += page.events.len();
        pages.push(page.events);
        if page.back.is_none() || page.back == token {
            break;
        }
        token = page.back;
    }
    let mut events: Vec<OutputLogEvent> = pages.into_iter().rev().flatten().collect();
    events.drain(..events.len().saturating_sub(n));
    Ok((events, forward))
}

/// Formats events as log lines, with RFC 3339 timestamps when asked.
pub fn format_events(events: &[OutputLogEvent], timestamps: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if timestamps {
            let ms = e.timestamp().unwrap_or(0);
            let t = aws_sdk_ecs::primitives::DateTime::from_millis(ms);
            let s = t
                .fmt(aws_sdk_ecs::primitives::DateTimeFormat::DateTime)
                .unwrap_or_default();
            out.extend_from_slice(s.as_bytes());
            out.push(b' ');
        }
        let msg = e.message().unwrap_or_default();
        out.extend_from_slice(msg.as_bytes());
        if !msg.ends_with('\n') {
            out.push(b'\n');
        }
    }
    out
}

/// Streams the log into `tx` per the request's options. `running` says whether the container may
/// still write (follow stops once it returns false).
pub async fn stream_logs<F>(
    src: Source,
    req: GetContainerLogsRequest,
    now_ms: i64,
    tx: mpsc::Sender<Result<LogChunk, tonic::Status>>,
    mut running: F,
) where
    F: FnMut() -> bool + Send,
{
    let start_ms = match (req.since_seconds, req.since_time.as_ref()) {
        (Some(s), _) => Some(now_ms.saturating_sub(s.saturating_mul(1000))),
        (None, Some(t)) => Some(
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos) / 1_000_000),
        ),
        (None, None) => None,
    };
    let mut budget = req.limit_bytes.map(|b| usize::try_from(b).unwrap_or(0));
    let send = |budget: &mut Option<usize>, mut data: Vec<u8>| {
        if let Some(left) = budget.as_mut() {
            data.truncate(*left);
            *left -= data.len();
        }
        data
    };

    // First the existing events: a tail is read backwards from the end, everything else forward.
    let src = &src;
    let read =
        match req.tail_lines.map(|n| usize::try_from(n).unwrap_or(0)) {
            Some(n) => read_tail(
                |token, limit| async move { src.page(token, start_ms, false, Some(limit)).await },
                n,
            )
            .await,
            None => {
                read_forward(
                    |token| async move { src.page(token, start_ms, true, None).await },
                    None,
                )
                .await
            }
        };
    let (events, mut token) = match read {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(e.to_status())).await;
            return;
        }
    };
    let data = send(&mut budget, format_events(&events, req.timestamps));
    if !data.is_empty() && tx.send(Ok(LogChunk { data })).await.is_err() {
        return;
    }
    if !req.follow {
        return;
    }
    // Follow: poll from the forward token until the container ends or the caller goes away.
    loop {
        if budget == Some(0) || tx.is_closed() {
            return;
        }
        let still_running = running();
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        match src.page(token.clone(), None, true, None).await {
            Ok(page) => {
                token = page.next.or(token);
                let data = send(&mut budget, format_events(&page.events, req.timestamps));
                if !data.is_empty() && tx.send(Ok(LogChunk { data })).await.is_err() {
                    return;
                }
                if !still_running && page.events.is_empty() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_status())).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn ev(i: usize) -> OutputLogEvent {
        OutputLogEvent::builder()
            .timestamp(i as i64)
            .message(format!("line {i}"))
            .build()
    }

    /// A stream of `n` events served in pages of `size`, as CloudWatch Logs does: tokens are
    /// positions ("f<pos>" forward, "b<pos>" backward), every forward page with events comes
    /// after an empty one (token "f<pos>e"), and the end repeats the token sent.
    struct Fake {
        n: usize,
        size: usize,
        calls: Mutex<Vec<String>>,
    }

    impl Fake {
        fn new(n: usize, size: usize) -> Self {
            Self {
                n,
                size,
                calls: Mutex::new(Vec::new()),
            }
        }

        fn pos(token: &Option<String>, default: usize) -> usize {
            token
                .as_deref()
                .and_then(|t| t[1..].trim_end_matches('e').parse().ok())
                .unwrap_or(default)
        }

        fn forward(&self, token: Option<String>) -> Page {
            self.calls.lock().expect("lock").push(format!("F{token:?}"));
            let pos = Self::pos(&token, 0);
            let after_empty = token.as_deref().is_some_and(|t| t.ends_with('e'));
            if !after_empty && pos < self.n {
                // An empty page before the end: no events, but a new token.
                return Page {
                    events: Vec::new(),
                    next: Some(format!("f{pos}e")),
                    back: None,
                };
            }
            let end = (pos + self.size).min(self.n);
            Page {
                events: (pos..end).map(ev).collect(),
                next: Some(format!("f{end}")),
                back: Some(format!("b{pos}")),
            }
        }

        fn backward(&self, token: Option<String>, limit: i32) -> Page {
            self.calls
                .lock()
                .expect("lock")
                .push(format!("B{token:?}/{limit}"));
            let end = Self::pos(&token, self.n);
            let start = end.saturating_sub(self.size.min(limit as usize));
            Page {
                events: (start..end).map(ev).collect(),
                next: Some(format!("f{}", self.n)),
                back: Some(format!("b{start}")),
            }
        }
    }

    fn lines(events: &[OutputLogEvent]) -> Vec<i64> {
        events.iter().filter_map(|e| e.timestamp()).collect()
    }

    #[tokio::test]
    async fn forward_reading_goes_past_empty_pages_until_the_token_repeats() {
        let fake = Fake::new(25, 10);
        let (events, token) = read_forward(
            |t| {
                let p = fake.forward(t);
                async move { Ok(p) }
            },
            None,
        )
        .await
        .expect("read");
        assert_eq!(
            lines(&events),
            (0..25).map(|i| i as i64).collect::<Vec<_>>()
        );
        assert_eq!(token.as_deref(), Some("f25"));
        let calls = fake.calls.lock().expect("lock").len();
        assert_eq!(calls, 7, "3 empty pages, 3 with events, the end");
    }

    #[tokio::test]
    async fn a_tail_is_read_backwards_with_a_limit() {
        let fake = Fake::new(95, 10);
        let (events, forward) = read_tail(
            |t, l| {
                let p = fake.backward(t, l);
                async move { Ok(p) }
            },
            23,
        )
        .await
        .expect("tail");
        assert_eq!(lines(&events), (72..95).collect::<Vec<_>>());
        assert_eq!(forward.as_deref(), Some("f95"), "follow goes on at the end");
        let calls = fake.calls.lock().expect("lock").clone();
        assert_eq!(calls, ["BNone/23", "BSome(\"b85\")/13", "BSome(\"b75\")/3"]);

        // Fewer events than asked: stops where the backward token repeats.
        let short = Fake::new(5, 10);
        let (events, _) = read_tail(
            |t, l| {
                let p = short.backward(t, l);
                async move { Ok(p) }
            },
            50,
        )
        .await
        .expect("tail");
        assert_eq!(lines(&events), [0, 1, 2, 3, 4]);

        // tail 0: no line, but the end is known for a follow.
        let zero = Fake::new(5, 10);
        let (events, forward) = read_tail(
            |t, l| {
                let p = zero.backward(t, l);
                async move { Ok(p) }
            },
            0,
        )
        .await
        .expect("tail");
        assert!(events.is_empty());
        assert_eq!(forward.as_deref(), Some("f5"));
    }

    #[test]
    fn lines_and_timestamps() {
        let ev = |ms, m: &str| OutputLogEvent::builder().timestamp(ms).message(m).build();
        let events = [
            ev(1_700_000_000_123, "hello"),
            ev(1_700_000_001_000, "world\n"),
        ];
        assert_eq!(format_events(&events, false), b"hello\nworld\n");
        let with = String::from_utf8(format_events(&events, true)).expect("utf8");
        assert_eq!(
            with,
            "2023-11-14T22:13:20.123Z hello\n2023-11-14T22:13:21Z world\n"
        );
    }
}
