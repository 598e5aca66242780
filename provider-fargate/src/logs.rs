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

/// One page of a stream.
struct Page {
    events: Vec<OutputLogEvent>,
    next: Option<String>,
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
                }),
                Err(e) => {
                    let e = AwsError::from_sdk("GetLogEvents", e);
                    // No stream yet: the container has not written anything.
                    if e.kind == Kind::NotFound {
                        Ok(Page {
                            events: Vec::new(),
                            next: token.clone(),
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
        (Some(s), _) => Some(now_ms - s * 1000),
        (None, Some(t)) => Some(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
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

    // First the existing events (all pages from the start time, then the tail cut).
    let mut events: Vec<OutputLogEvent> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        match src.page(token.clone(), start_ms, true, None).await {
            Ok(page) => {
                let done = page.events.is_empty() || page.next == token;
                events.extend(page.events);
                token = page.next;
                if done {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_status())).await;
                return;
            }
        }
    }
    if let Some(n) = req.tail_lines {
        let n = usize::try_from(n).unwrap_or(0);
        events.drain(..events.len().saturating_sub(n));
    }
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
    use super::*;

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
