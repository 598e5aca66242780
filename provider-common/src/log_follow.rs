//! Container logs for clouds whose log API answers "the log (or part of it) as text" but cannot
//! follow. The log is always fetched with the RFC 3339 timestamp the cloud prefixes to each line;
//! a [`Cursor`] tells lines apart by it, so a follow polls and emits only complete lines not sent
//! yet, whether the cloud answers the whole log, a trimmed head or a time window. Equal lines stay
//! distinct (their timestamps, and a count of lines sharing the last one). The prefix is stripped
//! again unless the caller asked for timestamps; `since*`, `tail` and `limit_bytes` are applied
//! here, so a cloud without those options still honours them.

use std::{future::Future, time::Duration};

use podprovider_proto::v1::{GetContainerLogsRequest, LogChunk};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::mpsc;

/// What the caller asked for, in the terms [`stream`] works with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Keep polling for new lines until the container ends or the receiver goes away.
    pub follow: bool,
    /// Keep the timestamp prefix in the output.
    pub keep_timestamps: bool,
    /// Drop lines stamped before this instant.
    pub since: Option<OffsetDateTime>,
    /// Only the last N lines of the first answer.
    pub tail_lines: Option<usize>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
    /// Time between polls while following.
    pub interval: Duration,
}

impl Options {
    /// From a kubelet request, at `now` (the reference for `since_seconds`).
    pub fn from_request(
        req: &GetContainerLogsRequest,
        now: OffsetDateTime,
        interval: Duration,
    ) -> Self {
        let since = match (req.since_seconds, req.since_time.as_ref()) {
            (Some(s), _) => now.checked_sub(time::Duration::seconds(s)),
            (None, Some(t)) => OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
            )
            .ok(),
            (None, None) => None,
        };
        // Negative counts are invalid in Kubernetes; read them as zero.
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        Self {
            follow: req.follow,
            keep_timestamps: req.timestamps,
            since,
            tail_lines: req.tail_lines.map(count),
            limit_bytes: req.limit_bytes.map(count),
            interval,
        }
    }
}

/// What a fetch must return: the log text with each line prefixed by its RFC 3339 timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// The first call, per the caller's options. `tail` is set only when not following: the cloud
    /// may then cut the log to that many last lines itself (a follow reads all it can, so the
    /// cursor knows every line before it starts polling).
    Start {
        /// Lines the cloud may cut the answer to.
        tail: Option<usize>,
    },
    /// A later poll: at least every line stamped at or after `since` (the last line seen), or the
    /// whole log if no line has been seen yet.
    After {
        /// Timestamp of the last line seen.
        since: Option<OffsetDateTime>,
    },
}

/// One line of a fetched log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The cloud's timestamp, if the line has one.
    pub stamp: Option<OffsetDateTime>,
    /// The line as fetched (timestamp included), without its line ending.
    pub raw: &'a str,
    /// The line without its timestamp.
    pub text: &'a str,
}

impl<'a> Line<'a> {
    /// Splits `raw` (without its line ending) into its leading RFC 3339 timestamp and the rest.
    pub fn parse(raw: &'a str) -> Self {
        let (ts, rest) = raw.split_once(' ').unwrap_or((raw, ""));
        match OffsetDateTime::parse(ts, &Rfc3339) {
            Ok(t) => Self {
                stamp: Some(t),
                raw,
                text: rest,
            },
            Err(_) => Self {
                stamp: None,
                raw,
                text: raw,
            },
        }
    }
}

/// Where a log stands: the timestamp of the last line seen and how many lines carried it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Timestamp of the last line seen.
    pub last: Option<OffsetDateTime>,
    /// Lines seen with exactly `last`.
    pub at_last: usize,
    /// Whether a text was taken yet: lines without a timestamp (a cloud that ignored the request
    /// for them) pass in the first answer only, as later polls cannot place them.
    pub started: bool,
}

impl Cursor {
    /// The lines of `text` not seen yet, in order, and marks them seen. A trailing line without
    /// its newline is taken only with `include_partial` (otherwise it is left for a later poll,
    /// which will have it whole).
    pub fn take_new<'a>(&mut self, text: &'a str, include_partial: bool) -> Vec<Line<'a>> {
        let mut segments: Vec<&str> = text.split('\n').collect();
        // The segment after the last '\n' is partial (or empty).
        let partial = segments.pop().filter(|p| include_partial && !p.is_empty());
        segments.extend(partial);
        let first = !self.started;
        self.started = true;
        let mut out = Vec::new();
        // Lines of this text stamped exactly `last`, to skip those counted before.
        let mut seen_at_last = 0usize;
        for raw in segments {
            let line = Line::parse(raw.strip_suffix('\r').unwrap_or(raw));
            let Some(t) = line.stamp else {
                if first {
                    out.push(line);
                }
                continue;
            };
            match self.last {
                Some(last) if t < last => continue,
                Some(last) if t == last => {
                    seen_at_last += 1;
                    if seen_at_last <= self.at_last {
                        continue;
                    }
                    self.at_last += 1;
                }
                _ => {
                    self.last = Some(t);
                    self.at_last = 1;
                    seen_at_last = 1;
                }
            }
            out.push(line);
        }
        out
    }
}

/// The output bytes of `lines`: those stamped before `since` dropped, timestamps stripped unless
/// `keep_timestamps`, each ending in "\n".
pub fn render(lines: &[Line<'_>], keep_timestamps: bool, since: Option<OffsetDateTime>) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        if let (Some(since), Some(t)) = (since, line.stamp)
            && t < since
        {
            continue;
        }
        let shown = if keep_timestamps { line.raw } else { line.text };
        out.extend_from_slice(shown.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Sends a container's log to `tx` per `opts`. `fetch` asks the cloud for the log text with
/// timestamps (see [`Fetch`]); `running()` says whether the container may still write. Ends when
/// not following after the first answer, when the receiver goes away, a fetch fails (the error is
/// sent), `limit_bytes` are sent, or the container has ended and a last poll found nothing new.
pub async fn stream<F, Fut, R>(
    opts: Options,
    mut fetch: F,
    mut running: R,
    tx: mpsc::Sender<Result<LogChunk, tonic::Status>>,
) where
    F: FnMut(Fetch) -> Fut,
    Fut: Future<Output = Result<String, tonic::Status>>,
    R: FnMut() -> bool,
{
    let mut budget = opts.limit_bytes;
    let mut cursor = Cursor::default();
    let mut first = true;
    loop {
        if tx.is_closed() || budget == Some(0) {
            return;
        }
        // Asked before the fetch: if the container had ended by then, the fetch saw its last line.
        let still_running = running();
        let what = if first {
            Fetch::Start {
                tail: if opts.follow { None } else { opts.tail_lines },
            }
        } else {
            Fetch::After { since: cursor.last }
        };
        let text = tokio::select! {
            r = fetch(what) => match r {
                Ok(t) => t,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            },
            () = tx.closed() => return,
        };
        let mut fresh = cursor.take_new(&text, !opts.follow || !still_running);
        let seen_new = !fresh.is_empty();
        if first && let Some(n) = opts.tail_lines {
            fresh.drain(..fresh.len().saturating_sub(n));
        }
        let mut data = render(&fresh, opts.keep_timestamps, opts.since);
        if let Some(left) = budget.as_mut() {
            data.truncate(*left);
            *left -= data.len();
        }
        if !data.is_empty() && tx.send(Ok(LogChunk { data })).await.is_err() {
            return;
        }
        first = false;
        if !opts.follow || (!still_running && !seen_new) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(opts.interval) => {}
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    fn texts(lines: &[Line<'_>]) -> Vec<String> {
        lines.iter().map(|l| l.text.to_owned()).collect()
    }

    async fn collect(mut rx: mpsc::Receiver<Result<LogChunk, tonic::Status>>) -> String {
        let mut got = Vec::new();
        while let Some(Ok(chunk)) = rx.recv().await {
            got.extend(chunk.data);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    fn opts(follow: bool) -> Options {
        Options {
            follow,
            keep_timestamps: false,
            since: None,
            tail_lines: None,
            limit_bytes: None,
            interval: Duration::from_millis(1),
        }
    }

    #[test]
    fn only_new_lines_are_taken_even_with_equal_timestamps() {
        let mut c = Cursor::default();
        let first = "2024-01-01T00:00:00Z a\n2024-01-01T00:00:01Z b\n2024-01-01T00:00:01Z c\n";
        assert_eq!(texts(&c.take_new(first, false)), ["a", "b", "c"]);
        // The next poll overlaps: b and c again, then a line with the same second, then d.
        let second = "2024-01-01T00:00:01Z b\n2024-01-01T00:00:01Z c\n2024-01-01T00:00:01Z c2\n2024-01-01T00:00:02.5Z d\n";
        let got = c.take_new(second, false);
        assert_eq!(texts(&got), ["c2", "d"]);
        assert_eq!(
            render(&got, true, None),
            b"2024-01-01T00:00:01Z c2\n2024-01-01T00:00:02.5Z d\n"
        );
        assert!(c.take_new(second, false).is_empty());
    }

    #[test]
    fn identical_repeated_lines_are_not_lost() {
        let mut c = Cursor::default();
        let one = "2024-01-01T00:00:01Z hb\n2024-01-01T00:00:02Z hb\n";
        assert_eq!(texts(&c.take_new(one, false)), ["hb", "hb"]);
        let two = "2024-01-01T00:00:01Z hb\n2024-01-01T00:00:02Z hb\n2024-01-01T00:00:03Z hb\n";
        assert_eq!(texts(&c.take_new(two, false)), ["hb"]);
    }

    #[test]
    fn only_complete_lines_and_a_trimmed_head_is_handled() {
        let mut c = Cursor::default();
        let t = "2024-01-01T00:00:01Z a\n2024-01-01T00:00:02Z b\n2024-01-01T00:00:03Z par";
        assert_eq!(texts(&c.take_new(t, false)), ["a", "b"]);
        let t = "2024-01-01T00:00:01Z a\n2024-01-01T00:00:02Z b\n2024-01-01T00:00:03Z partial\r\n2024-01-01T00:00:04Z c\n";
        assert_eq!(texts(&c.take_new(t, false)), ["partial", "c"]);
        // The cloud trimmed the head: resume after "c".
        let t = "2024-01-01T00:00:04Z c\n2024-01-01T00:00:05Z d\n";
        assert_eq!(texts(&c.take_new(t, false)), ["d"]);
        // Everything we knew is gone: the rest is new.
        let t = "2024-01-01T00:00:06Z x\n2024-01-01T00:00:07Z y\n";
        assert_eq!(texts(&c.take_new(t, false)), ["x", "y"]);
        // A last answer may end without a newline.
        let t = "2024-01-01T00:00:07Z y\n2024-01-01T00:00:08Z end";
        assert_eq!(texts(&c.take_new(t, true)), ["end"]);
    }

    #[test]
    fn lines_without_timestamps_pass_once() {
        let mut c = Cursor::default();
        assert_eq!(
            texts(&c.take_new("plain a\nplain b\n", false)),
            ["plain a", "plain b"]
        );
        assert!(c.take_new("plain a\nplain b\nplain c\n", false).is_empty());
    }

    #[test]
    fn timestamps_are_filtered_and_stripped() {
        let req = GetContainerLogsRequest {
            since_time: Some(prost_types::Timestamp {
                seconds: 1_704_164_645,
                nanos: 0,
            }),
            ..Default::default()
        };
        let o = Options::from_request(&req, OffsetDateTime::now_utc(), Duration::from_secs(1));
        assert!(!o.keep_timestamps);
        let lines: Vec<Line<'_>> = [
            "2024-01-02T03:04:04.9Z old",
            "2024-01-02T03:04:05.000000001Z new",
            "no stamp",
        ]
        .into_iter()
        .map(Line::parse)
        .collect();
        assert_eq!(
            render(&lines, o.keep_timestamps, o.since),
            b"new\nno stamp\n"
        );
        assert_eq!(
            render(&[Line::parse("2024-01-02T03:04:05Z x")], true, None),
            b"2024-01-02T03:04:05Z x\n"
        );
    }

    #[tokio::test]
    async fn follow_polls_and_stops_when_the_container_ends() {
        let (tx, rx) = mpsc::channel(16);
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        let fetch = move |_: Fetch| {
            let n = p.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut s = String::new();
                for i in 0..=n.min(2) {
                    s.push_str(&format!("2024-01-01T00:00:0{i}Z line {i}\n"));
                }
                Ok(s)
            }
        };
        let runs = AtomicUsize::new(0);
        stream(
            opts(true),
            fetch,
            move || runs.fetch_add(1, Ordering::SeqCst) < 3,
            tx,
        )
        .await;
        assert_eq!(collect(rx).await, "line 0\nline 1\nline 2\n");
        assert!(polls.load(Ordering::SeqCst) >= 4);
    }

    #[tokio::test]
    async fn a_follow_tails_the_first_answer_and_sends_only_growth() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let mut n = 0;
        let fetch = move |what: Fetch| {
            n += 1;
            if let Ok(mut v) = seen.lock() {
                v.push(what);
            }
            let mut s = String::new();
            for i in 0..n.min(3) + 1 {
                s.push_str(&format!("2024-01-01T00:00:0{i}Z hb\n"));
            }
            async move { Ok(s) }
        };
        let (tx, rx) = mpsc::channel(16);
        let mut runs = 0;
        stream(
            Options {
                tail_lines: Some(0),
                keep_timestamps: true,
                ..opts(true)
            },
            fetch,
            move || {
                runs += 1;
                runs < 3
            },
            tx,
        )
        .await;
        assert_eq!(
            collect(rx).await,
            "2024-01-01T00:00:02Z hb\n2024-01-01T00:00:03Z hb\n"
        );
        let calls = calls.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(calls.first(), Some(&Fetch::Start { tail: None }));
        assert!(
            calls
                .get(1)
                .is_some_and(|c| matches!(c, Fetch::After { since: Some(_) }))
        );
    }

    #[tokio::test]
    async fn without_follow_one_answer_is_tailed_and_limited() {
        let (tx, rx) = mpsc::channel(16);
        let mut asked = None;
        stream(
            Options {
                tail_lines: Some(2),
                limit_bytes: Some(5),
                ..opts(false)
            },
            |what| {
                asked = Some(what);
                async {
                    Ok(
                        "2024-01-01T00:00:00Z a\n2024-01-01T00:00:01Z bcd\n2024-01-01T00:00:02Z e"
                            .to_owned(),
                    )
                }
            },
            || true,
            tx,
        )
        .await;
        // The partial last line counts: a finished answer is all there is.
        assert_eq!(collect(rx).await, "bcd\ne");
        assert_eq!(asked, Some(Fetch::Start { tail: Some(2) }));
    }

    #[tokio::test]
    async fn a_fetch_error_is_sent_and_a_gone_receiver_stops_the_follow() {
        let (tx, mut rx) = mpsc::channel(16);
        stream(
            opts(true),
            |_| async { Err(tonic::Status::unavailable("down")) },
            || true,
            tx,
        )
        .await;
        assert!(matches!(rx.recv().await, Some(Err(s)) if s.code() == tonic::Code::Unavailable));

        let (tx, rx) = mpsc::channel(16);
        drop(rx);
        // Would poll forever if the closed receiver went unnoticed.
        stream(opts(true), |_| async { Ok(String::new()) }, || true, tx).await;
    }
}
