//! Cloud-neutral log streaming for clouds whose log API answers "the log (or its tail) as text"
//! but cannot follow: the first answer is sent as it is, then, for `follow`, the log is polled
//! and only lines not sent yet are emitted. Lines are told apart by the RFC 3339 timestamp each
//! poll asks the cloud to prefix (a line with the same timestamp as the last one sent counts as
//! new only beyond the number already sent with that timestamp); the prefix is stripped again
//! unless the caller asked for timestamps.

use std::{future::Future, time::Duration};

use podprovider_proto::v1::LogChunk;
use tokio::sync::mpsc;

/// Where a follow stands: the timestamp of the last line sent and how many lines carried it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Timestamp text of the last line sent (RFC 3339 compares in order when formats agree;
    /// compared as parsed times).
    pub last: Option<time::OffsetDateTime>,
    /// Lines sent with exactly `last`.
    pub at_last: usize,
    /// Whether anything was taken yet: a cloud that ignores the timestamp request still gets its
    /// first answer through whole (later polls cannot tell its lines apart and skip them).
    pub started: bool,
}

/// Splits `line` into its leading RFC 3339 timestamp and the rest.
pub fn split_timestamp(line: &str) -> Option<(time::OffsetDateTime, &str)> {
    let (ts, rest) = line.split_once(' ').unwrap_or((line, ""));
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t, rest))
}

impl Cursor {
    /// The lines of `text` (each with a timestamp prefix) not sent yet, advancing the cursor.
    /// Returns them with or without their timestamps.
    pub fn take_new(&mut self, text: &str, keep_timestamps: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seen_at_last = 0usize;
        let first = !self.started;
        self.started = true;
        for line in text.lines() {
            let Some((t, rest)) = split_timestamp(line) else {
                if first {
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                continue;
            };
            let new = match self.last {
                None => true,
                Some(last) if t > last => true,
                Some(last) if t == last => {
                    seen_at_last += 1;
                    seen_at_last > self.at_last
                }
                Some(_) => false,
            };
            if !new {
                continue;
            }
            if self.last == Some(t) {
                self.at_last += 1;
                seen_at_last = self.at_last;
            } else {
                self.last = Some(t);
                self.at_last = 1;
                seen_at_last = 1;
            }
            out.extend_from_slice(if keep_timestamps { line } else { rest }.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

/// Sends the log to `tx`. `fetch(since)` asks the cloud for the log with timestamps, from `since`
/// (seconds ago, a little before the last line sent) or, on the first call, per the caller's own
/// options. `running()` says whether the container may still write; following stops when it
/// returns false after a poll found nothing new, or when the receiver goes away.
pub async fn stream<F, Fut, R, E>(
    tx: mpsc::Sender<Result<LogChunk, tonic::Status>>,
    keep_timestamps: bool,
    follow: bool,
    limit_bytes: Option<usize>,
    interval: Duration,
    mut fetch: F,
    mut running: R,
) where
    F: FnMut(Option<i64>) -> Fut,
    Fut: Future<Output = Result<String, E>>,
    R: FnMut() -> bool,
    E: Into<tonic::Status>,
{
    let mut budget = limit_bytes;
    let mut cursor = Cursor::default();
    let mut first = true;
    loop {
        if tx.is_closed() || budget == Some(0) {
            return;
        }
        let still_running = running();
        let since = cursor.last.map(|t| {
            let ago = (time::OffsetDateTime::now_utc() - t).whole_seconds();
            ago.max(0) + 2
        });
        let text = match fetch(if first { None } else { since }).await {
            Ok(t) => t,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let mut data = cursor.take_new(&text, keep_timestamps);
        if let Some(left) = budget.as_mut() {
            data.truncate(*left);
            *left -= data.len();
        }
        let empty = data.is_empty();
        if !empty && tx.send(Ok(LogChunk { data })).await.is_err() {
            return;
        }
        first = false;
        if !follow || (!still_running && empty) {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_lines_are_taken_even_with_equal_timestamps() {
        let mut c = Cursor::default();
        let first = "2024-01-01T00:00:00Z a\n2024-01-01T00:00:01Z b\n2024-01-01T00:00:01Z c\n";
        assert_eq!(c.take_new(first, false), b"a\nb\nc\n");
        // The next poll overlaps: b and c again, then a fourth line with the same second, then d.
        let second = "2024-01-01T00:00:01Z b\n2024-01-01T00:00:01Z c\n2024-01-01T00:00:01Z c2\n2024-01-01T00:00:02.5Z d\n";
        assert_eq!(
            c.take_new(second, true),
            b"2024-01-01T00:00:01Z c2\n2024-01-01T00:00:02.5Z d\n"
        );
        assert_eq!(c.take_new(second, false), b"");
    }

    #[test]
    fn lines_without_timestamps_pass_once() {
        let mut c = Cursor::default();
        assert_eq!(
            c.take_new("plain a\nplain b\n", false),
            b"plain a\nplain b\n"
        );
        assert_eq!(c.take_new("plain a\nplain b\nplain c\n", false), b"");
    }

    #[tokio::test]
    async fn follow_polls_and_stops_when_the_container_ends() {
        let (tx, mut rx) = mpsc::channel(16);
        let polls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = polls.clone();
        let fetch = move |_since: Option<i64>| {
            let n = p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                let mut s = String::new();
                for i in 0..=n.min(2) {
                    s.push_str(&format!("2024-01-01T00:00:0{i}Z line {i}\n"));
                }
                Ok::<_, tonic::Status>(s)
            }
        };
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = runs.clone();
        stream(
            tx,
            false,
            true,
            None,
            Duration::from_millis(1),
            fetch,
            move || r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3,
        )
        .await;
        let mut got = Vec::new();
        while let Some(Ok(c)) = rx.recv().await {
            got.extend(c.data);
        }
        assert_eq!(String::from_utf8_lossy(&got), "line 0\nline 1\nline 2\n");
        assert!(polls.load(std::sync::atomic::Ordering::SeqCst) >= 4);
    }
}
