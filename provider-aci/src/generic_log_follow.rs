//! Log follow by polling, for clouds whose log API returns the whole (or the tail of the) log on
//! every call: each poll's text is compared with what was already sent, and only new complete
//! lines go out. Cloud-neutral (ACI, ECI); candidate for provider-common.

use std::{future::Future, time::Duration};

use podprovider_proto::v1::LogChunk;
use tokio::sync::mpsc;

/// Remembers how far a log has been sent.
#[derive(Clone, Debug, Default)]
pub struct LineTracker {
    /// Complete lines seen in the last text.
    seen: usize,
    /// The last complete line sent, to find our place when the cloud trims the log's head.
    last: Option<String>,
}

/// The complete lines of `text` (a trailing partial line is left for the next poll).
pub fn complete_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The segment after the last '\n' is partial (or empty).
    lines.pop();
    lines
}

impl LineTracker {
    /// A tracker that has already sent every complete line of `text`.
    pub fn after(text: &str) -> Self {
        let lines = complete_lines(text);
        Self {
            seen: lines.len(),
            last: lines.last().map(|l| (*l).to_owned()),
        }
    }

    /// The complete lines of `text` not sent yet, and marks them sent.
    pub fn new_lines<'a>(&mut self, text: &'a str) -> Vec<&'a str> {
        let lines = complete_lines(text);
        let start = match &self.last {
            None => 0,
            // The usual case: the log grew at the end.
            Some(last)
                if lines.len() >= self.seen
                    && lines.get(self.seen.wrapping_sub(1)) == Some(&last.as_str()) =>
            {
                self.seen
            }
            // The head was trimmed (size cap, tail window): resume after the last line we sent;
            // if it is gone too, everything is new.
            Some(last) => lines.iter().rposition(|l| l == last).map_or(0, |i| i + 1),
        };
        let fresh = lines[start.min(lines.len())..].to_vec();
        self.seen = lines.len();
        if let Some(l) = lines.last() {
            self.last = Some((*l).to_owned());
        }
        fresh
    }
}

/// Follows a log: every `interval`, `fetch` returns the current text; new complete lines pass
/// through `render` (filtering, timestamps) and go to `tx`. Ends when the caller goes away, a
/// fetch fails (the error is sent), `budget` bytes are sent, or `running` turns false and a last
/// poll brought nothing new.
pub async fn follow<F, Fut, R, Run>(
    mut tracker: LineTracker,
    interval: Duration,
    mut fetch: F,
    mut render: R,
    mut running: Run,
    mut budget: Option<usize>,
    tx: mpsc::Sender<Result<LogChunk, tonic::Status>>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<String, tonic::Status>>,
    R: FnMut(&[&str]) -> Vec<u8>,
    Run: FnMut() -> bool,
{
    loop {
        if budget == Some(0) || tx.is_closed() {
            return;
        }
        let still_running = running();
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = tx.closed() => return,
        }
        let text = match fetch().await {
            Ok(t) => t,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let fresh = tracker.new_lines(&text);
        let mut data = render(&fresh);
        if let Some(left) = budget.as_mut() {
            data.truncate(*left);
            *left -= data.len();
        }
        if !data.is_empty() && tx.send(Ok(LogChunk { data })).await.is_err() {
            return;
        }
        if !still_running && fresh.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_complete_lines_are_returned() {
        let mut t = LineTracker::default();
        assert_eq!(t.new_lines("a\nb\npart"), vec!["a", "b"]);
        assert_eq!(t.new_lines("a\nb\npartial\nc\n"), vec!["partial", "c"]);
        assert!(t.new_lines("a\nb\npartial\nc\n").is_empty());
        // The cloud trimmed the head: resume after "c".
        assert_eq!(t.new_lines("c\nd\n"), vec!["d"]);
        // Everything we knew is gone: all lines are new.
        assert_eq!(t.new_lines("x\ny\n"), vec!["x", "y"]);
    }

    #[test]
    fn a_tracker_can_start_after_existing_text() {
        let mut t = LineTracker::after("a\nb\n");
        assert_eq!(t.new_lines("a\nb\nc\n"), vec!["c"]);
        // Repeated identical lines are counted, not matched by content alone.
        let mut t = LineTracker::after("hb\nhb\n");
        assert_eq!(t.new_lines("hb\nhb\nhb\n"), vec!["hb"]);
    }

    #[tokio::test]
    async fn follow_streams_growth_and_stops_when_the_container_ends() {
        let texts = std::sync::Mutex::new(vec!["a\nb\nc\n", "a\nb\n", "a\n"]);
        let (tx, mut rx) = mpsc::channel(8);
        let mut polls = 0;
        follow(
            LineTracker::after("a\n"),
            Duration::from_millis(1),
            || {
                let t = texts.lock().map(|mut v| v.pop()).ok().flatten();
                async move { Ok(t.unwrap_or("a\nb\nc\n").to_owned()) }
            },
            |lines| {
                lines
                    .iter()
                    .flat_map(|l| format!("{l}\n").into_bytes())
                    .collect()
            },
            || {
                polls += 1;
                polls < 3
            },
            None,
            tx,
        )
        .await;
        let mut got = Vec::new();
        while let Some(Ok(chunk)) = rx.recv().await {
            got.extend(chunk.data);
        }
        assert_eq!(String::from_utf8_lossy(&got), "b\nc\n");
    }
}
