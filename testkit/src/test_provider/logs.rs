//! Container logs: each container instance keeps its lines with their timestamps, and
//! GetContainerLogs renders them with the options of the kubelet's containerLogs endpoint.

use std::time::{Duration, SystemTime};

use k8s_openapi::jiff;
use podprovider_proto::v1::{ExitStatus, GetContainerLogsRequest, LogChunk};
use tokio::sync::watch;
use tonic::Status;

use super::BoxStream;

/// Largest chunk sent at once; lines are not split across chunks unless `limit_bytes` cuts one.
const CHUNK_BYTES: usize = 32 * 1024;

/// One log line, without its newline.
#[derive(Clone)]
pub(super) struct LogLine {
    pub(super) time: SystemTime,
    pub(super) text: String,
}

/// One run of a container's main process: what it wrote, and how it ended.
#[derive(Default)]
pub(super) struct Instance {
    pub(super) lines: Vec<LogLine>,
    /// Set once the main process ended; followers end and attached clients get it as `exit`.
    pub(super) exit: Option<ExitStatus>,
}

impl Instance {
    /// A freshly started instance, whose log starts with `"<container> started"`.
    pub(super) fn started(container: &str) -> Self {
        let mut instance = Self::default();
        instance.push(&format!("{container} started"));
        instance
    }

    /// Appends `text` as lines: "a\nb" is two lines; one trailing newline ends the last line
    /// rather than starting an empty one.
    pub(super) fn push(&mut self, text: &str) {
        let text = text.strip_suffix('\n').unwrap_or(text);
        for line in text.split('\n') {
            // Times never go backwards, so time filters select a suffix of the log.
            let now = SystemTime::now();
            let time = self.lines.last().map_or(now, |last| last.time.max(now));
            self.lines.push(LogLine {
                time,
                text: line.to_owned(),
            });
        }
    }
}

/// The request's options, validated.
pub(super) struct Query {
    /// Only the last N lines; `None` = all.
    tail: Option<usize>,
    /// Only lines at or after this time.
    since: Option<SystemTime>,
    timestamps: bool,
    /// Stop after this many bytes.
    limit: Option<u64>,
    follow: bool,
}

impl Query {
    pub(super) fn from_request(req: &GetContainerLogsRequest) -> Result<Self, Status> {
        let since = match (req.since_seconds, req.since_time) {
            (Some(secs), _) => {
                let secs = u64::try_from(secs)
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| Status::invalid_argument("since_seconds must be at least 1"))?;
                // Further back than the clock goes: every line qualifies.
                SystemTime::now().checked_sub(Duration::from_secs(secs))
            }
            (None, Some(time)) => Some(
                SystemTime::try_from(time)
                    .map_err(|_| Status::invalid_argument("since_time is not a valid time"))?,
            ),
            (None, None) => None,
        };
        let limit = match req.limit_bytes {
            Some(n) => Some(
                u64::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| Status::invalid_argument("limit_bytes must be at least 1"))?,
            ),
            None => None,
        };
        Ok(Self {
            // Negative means all lines, like the kubelet's internal -1.
            tail: req.tail_lines.and_then(|n| usize::try_from(n).ok()),
            since,
            timestamps: req.timestamps,
            limit,
            follow: req.follow,
        })
    }

    /// Index of the first line to send.
    fn first_line(&self, lines: &[LogLine]) -> usize {
        let mut start = self.tail.map_or(0, |n| lines.len().saturating_sub(n));
        if let Some(since) = self.since {
            start = start.max(lines.partition_point(|l| l.time < since));
        }
        start
    }
}

/// Which log a request reads.
pub(super) enum Source {
    /// The current instance, which may still grow.
    Current(watch::Receiver<Instance>),
    /// The instance before the last restart, which is complete.
    Previous(Vec<LogLine>),
}

/// RFC 3339 with nanoseconds, as the kubelet prefixes log lines: `2026-11-23T10:00:00.123456789Z`.
pub(super) fn rfc3339_nanos(time: SystemTime) -> String {
    match jiff::Timestamp::try_from(time) {
        Ok(ts) => format!("{ts:.9}"),
        // Outside jiff's range (years beyond ±9999): cannot come from a clock in a test.
        Err(_) => format!("{time:?}"),
    }
}

struct Reader {
    rx: watch::Receiver<Instance>,
    query: Query,
    /// Next line to send; `None` until the first look at the log.
    next: Option<usize>,
    /// Without `follow`, the log's end at the first look.
    end: Option<usize>,
    remaining: Option<u64>,
    /// The instance is gone (its pod was removed): send what is left, then end.
    closed: bool,
    done: bool,
}

impl Reader {
    /// The next chunk, if a line is ready, and whether the stream is over after it.
    fn poll_lines(&mut self) -> (Vec<u8>, bool) {
        let instance = self.rx.borrow_and_update();
        let lines = &instance.lines;
        let next = *self
            .next
            .get_or_insert_with(|| self.query.first_line(lines));
        if !self.query.follow && self.end.is_none() {
            self.end = Some(lines.len());
        }
        let end = self.end.unwrap_or(lines.len()).min(lines.len());
        let mut data = Vec::new();
        let mut index = next;
        let mut limit_hit = false;
        while index < end && data.len() < CHUNK_BYTES {
            let line = &lines[index];
            let mut rendered = Vec::with_capacity(line.text.len() + 32);
            if self.query.timestamps {
                rendered.extend_from_slice(rfc3339_nanos(line.time).as_bytes());
                rendered.push(b' ');
            }
            rendered.extend_from_slice(line.text.as_bytes());
            rendered.push(b'\n');
            index += 1;
            if let Some(remaining) = &mut self.remaining {
                let len = u64::try_from(rendered.len()).unwrap_or(u64::MAX);
                if len >= *remaining {
                    // Fits in usize: it is smaller than the rendered line.
                    rendered.truncate(usize::try_from(*remaining).unwrap_or(rendered.len()));
                    data.extend_from_slice(&rendered);
                    limit_hit = true;
                    break;
                }
                *remaining -= len;
            }
            data.extend_from_slice(&rendered);
        }
        self.next = Some(index);
        let caught_up = index >= end;
        let over = limit_hit
            || (caught_up && (!self.query.follow || instance.exit.is_some() || self.closed));
        (data, over)
    }
}

/// The log as a stream of chunks of whole lines. Dropping the stream (the caller went away) stops
/// all work at once: there is no task behind it.
pub(super) fn stream(source: Source, query: Query) -> BoxStream<LogChunk> {
    let rx = match source {
        Source::Current(rx) => rx,
        Source::Previous(lines) => {
            // A complete log in the same shape; its sender is gone, so nothing more can arrive.
            let (_, rx) = watch::channel(Instance {
                lines,
                exit: Some(ExitStatus::default()),
            });
            rx
        }
    };
    let reader = Reader {
        rx,
        remaining: query.limit,
        query,
        next: None,
        end: None,
        closed: false,
        done: false,
    };
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        loop {
            if reader.done {
                return None;
            }
            let (data, over) = reader.poll_lines();
            reader.done = over;
            if !data.is_empty() {
                return Some((Ok(LogChunk { data }), reader));
            }
            if over {
                return None;
            }
            if reader.rx.changed().await.is_err() {
                reader.closed = true;
            }
        }
    }))
}
