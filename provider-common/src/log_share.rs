//! One cloud poll per container however many `kubectl logs -f` follow it. Without this, every
//! follower polls the cloud every interval, and one user allowed `pods/log` could spend the
//! account's API quota (and get everyone's creates throttled) by opening followers.
//!
//! A follower makes its own first fetch (its `tail`, `since` and byte limit are its own), then
//! takes every later poll from the container's shared poller, keeping its own [`Cursor`]; the
//! poller runs while anyone follows. Followers are capped per pod and per process
//! ([`MAX_FOLLOWERS_PER_POD`], [`MAX_FOLLOWERS`]); one more is refused with RESOURCE_EXHAUSTED.

use parking_lot::Mutex;
use std::{collections::HashMap, future::Future, sync::Arc};

use podprovider_proto::v1::LogChunk;
use tokio::sync::{broadcast, mpsc};

use crate::log_follow::{Cursor, Fetch, Options, render};

/// Followers of one pod's containers at once.
pub const MAX_FOLLOWERS_PER_POD: usize = 64;
/// Followers in this process at once.
pub const MAX_FOLLOWERS: usize = 1024;
/// Polls a follower may fall behind before it misses one (a poll holds the lines since the last
/// one, or the whole log on clouds that always answer it, so a miss loses at most those lines).
const BACKLOG: usize = 64;

/// What the poller saw.
#[derive(Clone)]
enum Polled {
    /// A poll's text; `last` when the container had ended before it was fetched.
    Text { text: Arc<str>, last: bool },
    /// The poll failed; followers end with this.
    Failed(tonic::Status),
    /// The container ended and nothing new came.
    Ended,
}

type Key = (String, String);

struct Poller {
    tx: broadcast::Sender<Polled>,
    followers: usize,
}

/// The shared pollers of one provider, keyed by pod UID and container.
#[derive(Clone, Default)]
pub struct LogFollowers {
    pollers: Arc<Mutex<HashMap<Key, Poller>>>,
}

impl LogFollowers {
    /// Followers of `uid` now.
    pub fn following(&self, uid: &str) -> usize {
        self.pollers
            .lock()
            .iter()
            .filter(|((u, _), _)| u == uid)
            .map(|(_, p)| p.followers)
            .sum()
    }

    /// [`stream`](Self::stream) in a task of its own, answered as a gRPC response stream.
    pub fn spawn<F, Fut, R>(
        &self,
        uid: &str,
        container: &str,
        opts: Options,
        fetch: F,
        running: R,
    ) -> crate::rpc::BoxStream<LogChunk>
    where
        F: FnMut(Fetch) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<String, tonic::Status>> + Send + 'static,
        R: FnMut() -> bool + Clone + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        let (me, uid, container) = (self.clone(), uid.to_owned(), container.to_owned());
        tokio::spawn(async move {
            me.stream(&uid, &container, opts, fetch, running, tx).await;
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// Sends container `container` of pod `uid`'s log to `tx` per `opts`, as
    /// [`crate::log_follow::stream`] does; a follow shares the container's poller.
    pub async fn stream<F, Fut, R>(
        &self,
        uid: &str,
        container: &str,
        opts: Options,
        mut fetch: F,
        mut running: R,
        tx: mpsc::Sender<Result<LogChunk, tonic::Status>>,
    ) where
        F: FnMut(Fetch) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<String, tonic::Status>> + Send + 'static,
        R: FnMut() -> bool + Clone + Send + 'static,
    {
        if !opts.follow {
            crate::log_follow::stream(opts, fetch, running, tx).await;
            return;
        }
        let key = (uid.to_owned(), container.to_owned());
        let mut polls = match self.join(&key, &opts, &fetch, &running) {
            Ok(rx) => rx,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let _leave = Leave {
            followers: self.clone(),
            key,
        };
        // Subscribed before this first fetch, so no line falls between the two.
        let mut budget = opts.limit_bytes;
        let mut cursor = Cursor::default();
        let still_running = running();
        let first = tokio::select! {
            r = fetch(Fetch::Start { tail: None }) => r,
            () = tx.closed() => return,
        };
        let text = match first {
            Ok(t) => t,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let mut fresh = cursor.take_new(&text, !still_running);
        if let Some(n) = opts.tail_lines {
            fresh.drain(..fresh.len().saturating_sub(n));
        }
        if !send(&tx, &fresh, &opts, &mut budget).await {
            return;
        }
        loop {
            let polled = tokio::select! {
                p = polls.recv() => p,
                () = tx.closed() => return,
            };
            match polled {
                Ok(Polled::Text { text, last }) => {
                    let fresh = cursor.take_new(&text, last);
                    if !send(&tx, &fresh, &opts, &mut budget).await {
                        return;
                    }
                }
                Ok(Polled::Failed(status)) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                Ok(Polled::Ended) | Err(broadcast::error::RecvError::Closed) => return,
                // Fell behind: later polls still carry what the cursor has not seen on clouds that
                // answer whole logs; elsewhere those lines are lost to this follower only.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "a log follower fell behind the shared poller");
                }
            }
        }
    }

    /// Counts a follower in (refusing one over the caps) and subscribes it to the container's
    /// poller, starting one with `fetch` and `running` if there is none.
    fn join<F, Fut, R>(
        &self,
        key: &Key,
        opts: &Options,
        fetch: &F,
        running: &R,
    ) -> Result<broadcast::Receiver<Polled>, tonic::Status>
    where
        F: FnMut(Fetch) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<String, tonic::Status>> + Send + 'static,
        R: FnMut() -> bool + Clone + Send + 'static,
    {
        let mut pollers = self.pollers.lock();
        let total: usize = pollers.values().map(|p| p.followers).sum();
        let of_pod: usize = pollers
            .iter()
            .filter(|((u, _), _)| *u == key.0)
            .map(|(_, p)| p.followers)
            .sum();
        if of_pod >= MAX_FOLLOWERS_PER_POD {
            return Err(tonic::Status::resource_exhausted(format!(
                "this pod's logs are followed {of_pod} times already (at most {MAX_FOLLOWERS_PER_POD})"
            )));
        }
        if total >= MAX_FOLLOWERS {
            return Err(tonic::Status::resource_exhausted(format!(
                "the provider follows {total} logs already (at most {MAX_FOLLOWERS})"
            )));
        }
        if let Some(p) = pollers.get_mut(key) {
            p.followers += 1;
            return Ok(p.tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(BACKLOG);
        pollers.insert(
            key.clone(),
            Poller {
                tx: tx.clone(),
                followers: 1,
            },
        );
        let task = poll(
            self.clone(),
            key.clone(),
            tx,
            opts.interval,
            fetch.clone(),
            running.clone(),
        );
        tokio::spawn(task);
        Ok(rx)
    }

    /// Removes the poller of `key` if `tx` is still its sender and nobody follows; true if gone.
    fn retire(&self, key: &Key, tx: &broadcast::Sender<Polled>) -> bool {
        let mut pollers = self.pollers.lock();
        match pollers.get(key) {
            Some(p) if p.tx.same_channel(tx) => {
                if p.followers == 0 {
                    pollers.remove(key);
                    true
                } else {
                    false
                }
            }
            _ => true,
        }
    }

    /// Ends the poller of `key` for good (its container ended or a poll failed).
    fn close(&self, key: &Key, tx: &broadcast::Sender<Polled>) {
        let mut pollers = self.pollers.lock();
        if pollers.get(key).is_some_and(|p| p.tx.same_channel(tx)) {
            pollers.remove(key);
        }
    }
}

/// Counts a follower out when it ends, however it ends.
struct Leave {
    followers: LogFollowers,
    key: Key,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let mut pollers = self.followers.pollers.lock();
        if let Some(p) = pollers.get_mut(&self.key) {
            p.followers = p.followers.saturating_sub(1);
        }
    }
}

/// The shared poll of one container: every interval while anyone follows, one fetch of what came
/// after the last line it saw, sent to every follower.
async fn poll<F, Fut, R>(
    followers: LogFollowers,
    key: Key,
    tx: broadcast::Sender<Polled>,
    interval: std::time::Duration,
    mut fetch: F,
    mut running: R,
) where
    F: FnMut(Fetch) -> Fut,
    Fut: Future<Output = Result<String, tonic::Status>>,
    R: FnMut() -> bool,
{
    let mut cursor = Cursor::default();
    loop {
        tokio::time::sleep(interval).await;
        if followers.retire(&key, &tx) {
            return;
        }
        let still_running = running();
        match fetch(Fetch::After { since: cursor.last }).await {
            Ok(text) => {
                let seen_new = !cursor.take_new(&text, !still_running).is_empty();
                let _ = tx.send(Polled::Text {
                    text: text.into(),
                    last: !still_running,
                });
                if !still_running && !seen_new {
                    followers.close(&key, &tx);
                    let _ = tx.send(Polled::Ended);
                    return;
                }
            }
            Err(status) => {
                followers.close(&key, &tx);
                let _ = tx.send(Polled::Failed(status));
                return;
            }
        }
    }
}

/// Sends `lines` as one chunk within the byte budget; false when the follower is done.
async fn send(
    tx: &mpsc::Sender<Result<LogChunk, tonic::Status>>,
    lines: &[crate::log_follow::Line<'_>],
    opts: &Options,
    budget: &mut Option<usize>,
) -> bool {
    let mut data = render(lines, opts.keep_timestamps, opts.since);
    if let Some(left) = budget.as_mut() {
        data.truncate(*left);
        *left -= data.len();
    }
    if !data.is_empty() && tx.send(Ok(LogChunk { data })).await.is_err() {
        return false;
    }
    *budget != Some(0)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicBool, AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    fn follow_opts() -> Options {
        Options {
            follow: true,
            keep_timestamps: false,
            since: None,
            tail_lines: None,
            limit_bytes: None,
            interval: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn fifty_followers_share_one_poll_per_interval() {
        let log = Arc::new(Mutex::new(String::from("2024-01-01T00:00:00Z first\n")));
        let (starts, polls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let alive = Arc::new(AtomicBool::new(true));
        let fetch = {
            let (log, starts, polls) = (log.clone(), starts.clone(), polls.clone());
            move |what: Fetch| {
                match what {
                    Fetch::Start { .. } => starts.fetch_add(1, Ordering::SeqCst),
                    Fetch::After { .. } => polls.fetch_add(1, Ordering::SeqCst),
                };
                let text = log.lock().clone();
                async move { Ok(text) }
            }
        };
        let running = {
            let alive = alive.clone();
            move || alive.load(Ordering::SeqCst)
        };
        let followers = LogFollowers::default();
        let mut outputs = Vec::new();
        for _ in 0..50 {
            let (tx, mut rx) = mpsc::channel(64);
            let (f, fetch, running) = (followers.clone(), fetch.clone(), running.clone());
            tokio::spawn(async move {
                f.stream("pod", "c", follow_opts(), fetch, running, tx)
                    .await;
            });
            outputs.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(Ok(chunk)) = rx.recv().await {
                    got.extend(chunk.data);
                }
                String::from_utf8_lossy(&got).into_owned()
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(followers.following("pod"), 50);
        log.lock().push_str("2024-01-01T00:00:01Z second\n");
        let polls_before = polls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let polled = polls.load(Ordering::SeqCst) - polls_before;
        // 200 ms at one poll per 20 ms: about 10 polls for all fifty followers together.
        assert!((5..=14).contains(&polled), "{polled} polls in 200 ms");
        alive.store(false, Ordering::SeqCst);
        for out in outputs {
            let text = tokio::time::timeout(Duration::from_secs(5), out)
                .await
                .expect("followers end when the container ends")
                .expect("follower task");
            assert_eq!(text, "first\nsecond\n");
        }
        assert_eq!(
            starts.load(Ordering::SeqCst),
            50,
            "each follower's own first fetch"
        );
        assert_eq!(followers.following("pod"), 0);
    }

    #[tokio::test]
    async fn followers_over_the_pod_cap_are_refused() {
        let fetch = |_: Fetch| async { Ok(String::new()) };
        let running = || true;
        let followers = LogFollowers::default();
        let mut keep = Vec::new();
        for _ in 0..MAX_FOLLOWERS_PER_POD {
            let (tx, rx) = mpsc::channel(4);
            let f = followers.clone();
            tokio::spawn(
                async move { f.stream("p", "c", follow_opts(), fetch, running, tx).await },
            );
            keep.push(rx);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (tx, mut rx) = mpsc::channel(4);
        followers
            .stream("p", "c", follow_opts(), fetch, running, tx)
            .await;
        let refused = rx.recv().await.expect("an answer");
        assert_eq!(
            refused.err().map(|s| s.code()),
            Some(tonic::Code::ResourceExhausted)
        );
        drop(keep);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            followers.following("p"),
            0,
            "followers leave when their client goes"
        );
    }
}
