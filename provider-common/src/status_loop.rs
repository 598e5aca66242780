//! The poll-diff-push status machinery behind `WatchPods`, `GetPod` and `ListPods`.
//!
//! A provider polls its cloud with list/batch calls once per interval and hands the complete
//! result to [`StatusHub::replace_all`]; the hub compares it with what it last knew and pushes only
//! the differences (changed statuses, `deleted` for pods that went away) to every open `WatchPods`
//! stream. [`StatusHub::watch`] gives a new stream the snapshot, `synced`, then changes, as the
//! contract requires. Pods that a create just accepted are [`upsert`](StatusHub::upsert)ed at once,
//! so they are listed before the cloud's own list shows them.

use parking_lot::Mutex;
use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt, stream};
use podprovider_proto::v1::{
    PodEvent, PodRef, PodStatus, Synced, WatchPodsEvent, watch_pods_event::Event,
};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

/// Events buffered per stream; a stream that falls further behind is ended so its client
/// reconnects and gets a fresh snapshot.
const CHANNEL_CAPACITY: usize = 16 * 1024;

/// A `WatchPods` stream as tonic serves it.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<WatchPodsEvent, tonic::Status>> + Send + 'static>>;

#[derive(Clone, Debug)]
struct Entry {
    node: String,
    status: PodStatus,
    /// The hub's change counter when this entry last changed.
    seq: u64,
}

/// The pods the hub knows, and when each last changed.
#[derive(Debug, Default)]
struct Known {
    pods: HashMap<String, Entry>,
    /// UIDs removed, with the change counter at removal: a poll that began before the removal
    /// must not bring them back.
    removed: HashMap<String, u64>,
    /// Bumped on every change; a poll remembers it when it begins.
    seq: u64,
}

#[derive(Clone, Debug)]
struct Routed {
    node: String,
    event: Event,
}

/// The outcome of the most recent poll, for `Ping`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PollHealth {
    /// No poll has finished yet.
    #[default]
    Starting,
    /// The last poll succeeded.
    Ok,
    /// The last poll failed with this (secret-free) message.
    Failed(String),
}

/// Known pod statuses, keyed by UID, and the streams watching them.
#[derive(Debug)]
pub struct StatusHub {
    pods: Mutex<Known>,
    health: Mutex<PollHealth>,
    tx: broadcast::Sender<Routed>,
}

impl Default for StatusHub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            pods: Mutex::default(),
            health: Mutex::default(),
            tx,
        }
    }
}

impl StatusHub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn send(&self, node: &str, event: Event) {
        // No receivers is fine: nobody watches yet.
        let _ = self.tx.send(Routed {
            node: node.to_owned(),
            event,
        });
    }

    /// Records `status` for a pod of `node`; pushes it if it differs from what was known.
    pub fn upsert(&self, node: &str, status: PodStatus) {
        let Some(uid) = status.pod_ref.as_ref().map(|r| r.uid.clone()) else {
            return;
        };
        let mut known = self.pods.lock();
        if known.pods.get(&uid).is_some_and(|e| e.status == status) {
            return;
        }
        known.seq += 1;
        let seq = known.seq;
        known.removed.remove(&uid);
        known.pods.insert(
            uid,
            Entry {
                node: node.to_owned(),
                status: status.clone(),
                seq,
            },
        );
        self.send(node, Event::Status(status));
    }

    /// Forgets a pod and pushes `deleted`; does nothing for an unknown UID.
    pub fn remove(&self, uid: &str) {
        let mut known = self.pods.lock();
        if let Some(entry) = known.pods.remove(uid) {
            known.seq += 1;
            let seq = known.seq;
            known.removed.insert(uid.to_owned(), seq);
            let pod_ref = entry.status.pod_ref.unwrap_or_default();
            self.send(&entry.node, Event::Deleted(pod_ref));
        }
    }

    /// The change counter, for [`replace_all_since`](Self::replace_all_since): read it before a
    /// poll begins.
    pub fn generation(&self) -> u64 {
        self.pods.lock().seq
    }

    /// Makes the hub hold exactly `pods` (node, status): pushes changed and new statuses and
    /// `deleted` for pods no longer present. The result of one complete poll that no create or
    /// delete can overlap (e.g. computed and applied under the provider's own lock).
    pub fn replace_all(&self, pods: Vec<(String, PodStatus)>) {
        let since = self.generation();
        self.replace_all_since(since, pods);
    }

    /// [`replace_all`](Self::replace_all) for a poll that began at generation `since`: pods
    /// upserted or removed after that (a create or delete that finished while the poll ran) keep
    /// their newer state, so a create racing a poll is never reported deleted.
    pub fn replace_all_since(&self, since: u64, pods: Vec<(String, PodStatus)>) {
        let mut fresh: HashMap<String, (String, PodStatus)> = HashMap::new();
        for (node, status) in pods {
            if let Some(uid) = status.pod_ref.as_ref().map(|r| r.uid.clone()) {
                fresh.insert(uid, (node, status));
            }
        }
        let gone: Vec<String> = {
            let mut known = self.pods.lock();
            for (uid, seq) in &known.removed {
                if *seq > since {
                    fresh.remove(uid);
                }
            }
            known.removed.retain(|_, seq| *seq > since);
            let newer: Vec<String> = known
                .pods
                .iter()
                .filter(|(_, e)| e.seq > since)
                .map(|(uid, _)| uid.clone())
                .collect();
            for uid in &newer {
                fresh.remove(uid);
            }
            known
                .pods
                .iter()
                .filter(|(uid, e)| e.seq <= since && !fresh.contains_key(*uid))
                .map(|(uid, _)| uid.clone())
                .collect()
        };
        for uid in gone {
            self.remove(&uid);
        }
        for (_, (node, status)) in fresh {
            self.upsert(&node, status);
        }
    }

    /// Pushes a cloud event about a pod to the streams of `node` (events are not part of
    /// snapshots).
    pub fn event(&self, node: &str, event: PodEvent) {
        self.send(node, Event::PodEvent(event));
    }

    /// The known status of a pod.
    pub fn get(&self, uid: &str) -> Option<PodStatus> {
        self.pods.lock().pods.get(uid).map(|e| e.status.clone())
    }

    /// The node a known pod belongs to.
    pub fn node_of(&self, uid: &str) -> Option<String> {
        self.pods.lock().pods.get(uid).map(|e| e.node.clone())
    }

    /// Every known pod of `node`.
    pub fn list(&self, node: &str) -> Vec<PodStatus> {
        self.pods
            .lock()
            .pods
            .values()
            .filter(|e| node.is_empty() || e.node == node)
            .map(|e| e.status.clone())
            .collect()
    }

    /// Every known pod, of every node.
    pub fn all(&self) -> Vec<(String, PodStatus)> {
        self.pods
            .lock()
            .pods
            .values()
            .map(|e| (e.node.clone(), e.status.clone()))
            .collect()
    }

    /// Records the outcome of a poll.
    pub fn set_health(&self, health: PollHealth) {
        *self.health.lock() = health;
    }

    /// The outcome of the most recent poll.
    pub fn health(&self) -> PollHealth {
        self.health.lock().clone()
    }

    /// A `WatchPods` stream for `node`: the snapshot, `synced`, then changes as they happen.
    pub fn watch(&self, node: &str) -> WatchStream {
        // Subscribe while holding the pods lock, so no change falls between snapshot and stream.
        let (snapshot, rx) = {
            let pods = self.pods.lock();
            let rx = self.tx.subscribe();
            let snapshot: Vec<WatchPodsEvent> = pods
                .pods
                .values()
                .filter(|e| node.is_empty() || e.node == node)
                .map(|e| WatchPodsEvent {
                    event: Some(Event::Status(e.status.clone())),
                })
                .collect();
            (snapshot, rx)
        };
        let synced = WatchPodsEvent {
            event: Some(Event::Synced(Synced {})),
        };
        let node = node.to_owned();
        let changes = BroadcastStream::new(rx)
            .take_while(|item| {
                std::future::ready(!matches!(item, Err(BroadcastStreamRecvError::Lagged(_))))
            })
            .filter_map(move |item| {
                let out = match item {
                    Ok(routed) if node.is_empty() || routed.node == node => {
                        Some(Ok(WatchPodsEvent {
                            event: Some(routed.event),
                        }))
                    }
                    _ => None,
                };
                std::future::ready(out)
            })
            .chain(stream::once(async {
                // Reached only when the stream fell behind (or the hub went away).
                Err(tonic::Status::unavailable(
                    "the status stream fell behind; reconnect for a fresh snapshot",
                ))
            }));
        Box::pin(
            stream::iter(snapshot.into_iter().map(Ok))
                .chain(stream::once(async { Ok(synced) }))
                .chain(changes),
        )
    }
}

/// Rebuilds `hub` with a first poll before the provider serves, so the first `WatchPods` snapshot
/// is complete (a failed one is logged and reported by `Ping`: the provider serves anyway), then
/// returns [`run_poll_loop`] with the same `poll`, for the caller to run in the background.
/// `cloud` names where the state comes from in the log.
pub async fn rebuild_then_poll<F, Fut, E>(
    hub: Arc<StatusHub>,
    interval: Duration,
    cloud: &'static str,
    mut poll: F,
) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<(String, PodStatus)>, E>>,
    E: std::fmt::Display,
{
    match poll().await {
        Ok(pods) => {
            tracing::info!(pods = pods.len(), "state rebuilt from {cloud}");
            hub.replace_all(pods);
            hub.set_health(PollHealth::Ok);
        }
        Err(e) => {
            tracing::warn!(error = %e, "first status poll failed; serving anyway, reporting NotReady");
            hub.set_health(PollHealth::Failed(e.to_string()));
        }
    }
    run_poll_loop(hub, interval, poll)
}

/// Polls forever: every `interval`, calls `poll` and hands a successful result to
/// [`StatusHub::replace_all`]; a failed poll keeps the last known statuses and is recorded in
/// [`StatusHub::health`]. Spawn it; it ends when the task is aborted.
pub async fn run_poll_loop<F, Fut, E>(hub: Arc<StatusHub>, interval: Duration, mut poll: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<(String, PodStatus)>, E>>,
    E: std::fmt::Display,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = poll_deadline(interval);
    loop {
        ticker.tick().await;
        let since = hub.generation();
        match tokio::time::timeout(deadline, poll()).await {
            Ok(Ok(pods)) => {
                hub.replace_all_since(since, pods);
                hub.set_health(PollHealth::Ok);
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "status poll failed; keeping the last known statuses");
                hub.set_health(PollHealth::Failed(err.to_string()));
            }
            Err(_) => {
                let message = format!("status poll did not finish within {deadline:?}");
                tracing::warn!("{message}; keeping the last known statuses");
                hub.set_health(PollHealth::Failed(message));
            }
        }
    }
}

/// How long one status poll may take before it is abandoned, so a cloud that answers headers and
/// then stalls cannot freeze every pod's status: six intervals, at least a minute.
pub fn poll_deadline(interval: Duration) -> Duration {
    interval.saturating_mul(6).max(Duration::from_secs(60))
}

/// A `PodRef` with only the UID, for messages keyed by UID.
pub fn uid_ref(uid: &str) -> PodRef {
    PodRef {
        uid: uid.to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use podprovider_proto::v1::PodPhase;

    use super::*;

    fn status(uid: &str, phase: PodPhase) -> PodStatus {
        PodStatus {
            pod_ref: Some(PodRef {
                namespace: "ns".into(),
                name: format!("p-{uid}"),
                uid: uid.into(),
            }),
            phase: phase as i32,
            ..Default::default()
        }
    }

    async fn next(s: &mut WatchStream) -> Event {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("ok event")
            .event
            .expect("event set")
    }

    #[tokio::test]
    async fn snapshot_then_synced_then_only_changes() {
        let hub = StatusHub::new();
        hub.upsert("n1", status("a", PodPhase::Pending));
        hub.upsert("n2", status("other-node", PodPhase::Pending));
        let mut w = hub.watch("n1");
        assert!(
            matches!(next(&mut w).await, Event::Status(s) if s.pod_ref.as_ref().map(|r| r.uid.as_str()) == Some("a"))
        );
        assert!(matches!(next(&mut w).await, Event::Synced(_)));

        // Same status again: nothing pushed. Changed and new: pushed. Missing: deleted.
        hub.replace_all(vec![
            ("n1".into(), status("a", PodPhase::Pending)),
            ("n2".into(), status("other-node", PodPhase::Pending)),
        ]);
        hub.replace_all(vec![
            ("n1".into(), status("a", PodPhase::Running)),
            ("n1".into(), status("b", PodPhase::Pending)),
            ("n2".into(), status("other-node", PodPhase::Running)),
        ]);
        let mut seen = vec![next(&mut w).await, next(&mut w).await];
        seen.sort_by_key(|e| format!("{e:?}"));
        assert!(
            seen.iter().all(|e| matches!(e, Event::Status(_))),
            "{seen:?}"
        );
        hub.replace_all(vec![("n1".into(), status("b", PodPhase::Pending))]);
        assert!(matches!(next(&mut w).await, Event::Deleted(r) if r.uid == "a"));
        assert_eq!(hub.list("n1").len(), 1);
        // An empty node name is every node's pods (the proto's rule for operators).
        hub.replace_all(vec![
            ("n1".into(), status("b", PodPhase::Pending)),
            ("n2".into(), status("other-node", PodPhase::Running)),
        ]);
        assert_eq!(hub.list("").len(), 2);
        assert_eq!(hub.list("n2").len(), 1);
        hub.replace_all(vec![("n1".into(), status("b", PodPhase::Pending))]);
        assert!(hub.get("a").is_none());
        assert!(
            tokio::time::timeout(Duration::from_millis(100), w.next())
                .await
                .is_err(),
            "nothing else may be pushed"
        );
    }

    #[test]
    fn a_poll_never_undoes_a_create_or_delete_that_finished_while_it_ran() {
        let hub = StatusHub::new();
        hub.upsert("n1", status("old", PodPhase::Running));
        hub.upsert("n1", status("leaving", PodPhase::Running));

        // The poll begins; meanwhile a create and a delete finish.
        let since = hub.generation();
        hub.upsert("n1", status("new", PodPhase::Pending));
        hub.remove("leaving");
        // What the poll saw before them: "old" and "leaving", not "new".
        hub.replace_all_since(
            since,
            vec![
                ("n1".into(), status("old", PodPhase::Running)),
                ("n1".into(), status("leaving", PodPhase::Running)),
            ],
        );
        assert!(
            hub.get("new").is_some(),
            "the racing create was reported deleted"
        );
        assert!(hub.get("leaving").is_none(), "the racing delete was undone");
        assert!(hub.get("old").is_some());

        // The next poll, begun after both, is authoritative again.
        let since = hub.generation();
        hub.replace_all_since(since, vec![("n1".into(), status("old", PodPhase::Running))]);
        assert!(hub.get("new").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_poll_is_abandoned_and_reported() {
        let hub = StatusHub::new();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let task = tokio::spawn(run_poll_loop(
            hub.clone(),
            Duration::from_secs(5),
            move || {
                let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < 2 {
                        // The first polls hang, like a cloud that sent headers and stalled.
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, String>(vec![("u1".to_owned(), status("u1", PodPhase::Running))])
                }
            },
        ));
        tokio::time::sleep(poll_deadline(Duration::from_secs(5)) + Duration::from_secs(1)).await;
        assert!(matches!(hub.health(), PollHealth::Failed(m) if m.contains("did not finish")));
        tokio::time::sleep(poll_deadline(Duration::from_secs(5)) * 2).await;
        assert_eq!(hub.health(), PollHealth::Ok);
        assert!(
            calls.load(std::sync::atomic::Ordering::SeqCst) >= 3,
            "polling went on"
        );
        assert!(
            hub.get("u1").is_some(),
            "later polls still publish statuses"
        );
        task.abort();
    }

    /// The first poll is published before `rebuild_then_poll` returns (the provider serves only
    /// then); a failed one is reported and the loop still polls.
    #[tokio::test(start_paused = true)]
    async fn the_first_poll_rebuilds_state_before_the_loop_runs() {
        let hub = StatusHub::new();
        let polled = rebuild_then_poll(hub.clone(), Duration::from_secs(5), "test", || async {
            Ok::<_, String>(vec![("u1".to_owned(), status("u1", PodPhase::Running))])
        })
        .await;
        assert!(hub.get("u1").is_some());
        assert_eq!(hub.health(), PollHealth::Ok);
        drop(polled);

        let hub = StatusHub::new();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let polled = rebuild_then_poll(hub.clone(), Duration::from_secs(5), "test", move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 0 {
                    return Err("cloud down".to_owned());
                }
                Ok(vec![("u1".to_owned(), status("u1", PodPhase::Running))])
            }
        })
        .await;
        assert_eq!(hub.health(), PollHealth::Failed("cloud down".into()));
        let task = tokio::spawn(polled);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(hub.health(), PollHealth::Ok);
        assert!(hub.get("u1").is_some());
        task.abort();
    }
}
