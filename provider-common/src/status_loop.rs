//! The poll-diff-push status machinery behind `WatchPods`, `GetPod` and `ListPods`.
//!
//! A provider polls its cloud with list/batch calls once per interval and hands the complete
//! result to [`StatusHub::replace_all`]; the hub compares it with what it last knew and pushes only
//! the differences (changed statuses, `deleted` for pods that went away) to every open `WatchPods`
//! stream. [`StatusHub::watch`] gives a new stream the snapshot, `synced`, then changes, as the
//! contract requires. Pods that a create just accepted are [`upsert`](StatusHub::upsert)ed at once,
//! so they are listed before the cloud's own list shows them.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

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
    pods: Mutex<HashMap<String, Entry>>,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let mut pods = lock(&self.pods);
        if pods.get(&uid).is_some_and(|e| e.status == status) {
            return;
        }
        pods.insert(
            uid,
            Entry {
                node: node.to_owned(),
                status: status.clone(),
            },
        );
        self.send(node, Event::Status(status));
    }

    /// Forgets a pod and pushes `deleted`; does nothing for an unknown UID.
    pub fn remove(&self, uid: &str) {
        let mut pods = lock(&self.pods);
        if let Some(entry) = pods.remove(uid) {
            let pod_ref = entry.status.pod_ref.unwrap_or_default();
            self.send(&entry.node, Event::Deleted(pod_ref));
        }
    }

    /// Makes the hub hold exactly `pods` (node, status): pushes changed and new statuses and
    /// `deleted` for pods no longer present. The result of one complete poll.
    pub fn replace_all(&self, pods: Vec<(String, PodStatus)>) {
        let mut fresh: HashMap<String, (String, PodStatus)> = HashMap::new();
        for (node, status) in pods {
            if let Some(uid) = status.pod_ref.as_ref().map(|r| r.uid.clone()) {
                fresh.insert(uid, (node, status));
            }
        }
        let gone: Vec<String> = lock(&self.pods)
            .keys()
            .filter(|uid| !fresh.contains_key(*uid))
            .cloned()
            .collect();
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
        lock(&self.pods).get(uid).map(|e| e.status.clone())
    }

    /// The node a known pod belongs to.
    pub fn node_of(&self, uid: &str) -> Option<String> {
        lock(&self.pods).get(uid).map(|e| e.node.clone())
    }

    /// Every known pod of `node`.
    pub fn list(&self, node: &str) -> Vec<PodStatus> {
        lock(&self.pods)
            .values()
            .filter(|e| e.node == node)
            .map(|e| e.status.clone())
            .collect()
    }

    /// Every known pod, of every node.
    pub fn all(&self) -> Vec<(String, PodStatus)> {
        lock(&self.pods)
            .values()
            .map(|e| (e.node.clone(), e.status.clone()))
            .collect()
    }

    /// Records the outcome of a poll.
    pub fn set_health(&self, health: PollHealth) {
        *lock(&self.health) = health;
    }

    /// The outcome of the most recent poll.
    pub fn health(&self) -> PollHealth {
        lock(&self.health).clone()
    }

    /// A `WatchPods` stream for `node`: the snapshot, `synced`, then changes as they happen.
    pub fn watch(&self, node: &str) -> WatchStream {
        // Subscribe while holding the pods lock, so no change falls between snapshot and stream.
        let (snapshot, rx) = {
            let pods = lock(&self.pods);
            let rx = self.tx.subscribe();
            let snapshot: Vec<WatchPodsEvent> = pods
                .values()
                .filter(|e| e.node == node)
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
                    Ok(routed) if routed.node == node => Some(Ok(WatchPodsEvent {
                        event: Some(routed.event),
                    })),
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
    loop {
        ticker.tick().await;
        match poll().await {
            Ok(pods) => {
                hub.replace_all(pods);
                hub.set_health(PollHealth::Ok);
            }
            Err(err) => {
                tracing::warn!(error = %err, "status poll failed; keeping the last known statuses");
                hub.set_health(PollHealth::Failed(err.to_string()));
            }
        }
    }
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
        assert!(hub.get("a").is_none());
        assert!(
            tokio::time::timeout(Duration::from_millis(100), w.next())
                .await
                .is_err(),
            "nothing else may be pushed"
        );
    }
}
