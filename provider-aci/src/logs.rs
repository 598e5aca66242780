//! Container logs from Containers - List Logs, with the kubelet's options. ACI returns text (with
//! `tail` and `timestamps`); `since*` filters on the timestamps ACI prefixes, and follow polls.

use std::time::Duration;

use podprovider_proto::v1::{GetContainerLogsRequest, LogChunk};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::mpsc;

use crate::{
    arm::Arm,
    generic_log_follow::{self, LineTracker, complete_lines},
};

/// How often a follow polls.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// What to do with each line.
#[derive(Clone, Copy, Debug)]
pub struct Render {
    /// Lines carry ACI's timestamp prefix (fetched with `timestamps=true`).
    pub fetched_with_timestamps: bool,
    /// Keep the prefix in the output.
    pub keep_timestamps: bool,
    /// Drop lines before this instant (Unix nanoseconds).
    pub since_nanos: Option<i128>,
}

impl Render {
    /// From a request, at `now`.
    pub fn for_request(req: &GetContainerLogsRequest, now: OffsetDateTime) -> Self {
        let since_nanos = match (req.since_seconds, req.since_time.as_ref()) {
            (Some(s), _) => Some(now.unix_timestamp_nanos() - i128::from(s) * 1_000_000_000),
            (None, Some(t)) => Some(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)),
            (None, None) => None,
        };
        Self {
            fetched_with_timestamps: req.timestamps || since_nanos.is_some(),
            keep_timestamps: req.timestamps,
            since_nanos,
        }
    }

    /// The output bytes of `lines`.
    pub fn render(&self, lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let (stamp, rest) = if self.fetched_with_timestamps {
                match line.split_once(' ') {
                    Some((t, rest)) => match OffsetDateTime::parse(t, &Rfc3339) {
                        Ok(ts) => (Some(ts), rest),
                        Err(_) => (None, line),
                    },
                    None => (None, line),
                }
            } else {
                (None, line)
            };
            if let (Some(since), Some(ts)) = (self.since_nanos, stamp)
                && ts.unix_timestamp_nanos() < since
            {
                continue;
            }
            let shown = if self.keep_timestamps || stamp.is_none() {
                line
            } else {
                rest
            };
            out.extend_from_slice(shown.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

/// Streams one container's log per `req` into `tx`; `running` says whether it may still write.
pub async fn stream_logs<Run>(
    arm: Arm,
    group: String,
    req: GetContainerLogsRequest,
    tx: mpsc::Sender<Result<LogChunk, tonic::Status>>,
    running: Run,
) where
    Run: FnMut() -> bool + Send,
{
    let render = Render::for_request(&req, OffsetDateTime::now_utc());
    let ts = render.fetched_with_timestamps;
    // A follow reads the whole log so later polls can find their place in it.
    let tail = if req.follow { None } else { req.tail_lines };
    let text = match arm.logs(&group, &req.container, tail, ts).await {
        Ok(t) => t,
        Err(e) => {
            let _ = tx.send(Err(e.to_status())).await;
            return;
        }
    };
    let mut lines = complete_lines(&text);
    if let Some(n) = req.tail_lines {
        let n = usize::try_from(n).unwrap_or(0);
        lines.drain(..lines.len().saturating_sub(n));
    }
    // Without follow a trailing partial line is still part of the answer.
    let partial = text.rsplit_once('\n').map_or(text.as_str(), |(_, p)| p);
    if !req.follow && !partial.is_empty() {
        lines.push(partial);
    }
    let mut data = render.render(&lines);
    let mut budget = req.limit_bytes.map(|b| usize::try_from(b).unwrap_or(0));
    if let Some(left) = budget.as_mut() {
        data.truncate(*left);
        *left -= data.len();
    }
    if !data.is_empty() && tx.send(Ok(LogChunk { data })).await.is_err() {
        return;
    }
    if !req.follow {
        return;
    }
    let container = req.container.clone();
    generic_log_follow::follow(
        LineTracker::after(&text),
        FOLLOW_INTERVAL,
        || {
            let arm = arm.clone();
            let group = group.clone();
            let container = container.clone();
            async move {
                arm.logs(&group, &container, None, ts)
                    .await
                    .map_err(|e| e.to_status())
            }
        },
        |lines| render.render(lines),
        running,
        budget,
        tx,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_filtered_and_stripped() {
        let req = GetContainerLogsRequest {
            since_time: Some(prost_types::Timestamp {
                seconds: 1_704_164_645,
                nanos: 0,
            }),
            ..Default::default()
        };
        let r = Render::for_request(&req, OffsetDateTime::now_utc());
        assert!(r.fetched_with_timestamps && !r.keep_timestamps);
        let out = r.render(&[
            "2024-01-02T03:04:04.9Z old",
            "2024-01-02T03:04:05.000000001Z new",
            "no stamp",
        ]);
        assert_eq!(String::from_utf8_lossy(&out), "new\nno stamp\n");
        let keep = Render {
            fetched_with_timestamps: true,
            keep_timestamps: true,
            since_nanos: None,
        };
        assert_eq!(
            String::from_utf8_lossy(&keep.render(&["2024-01-02T03:04:05Z x"])),
            "2024-01-02T03:04:05Z x\n"
        );
    }
}
