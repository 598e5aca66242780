//! Pod events written as the kubelet writes them: core/v1 Events (the only events API the Node
//! authorizer lets a node use), with a repeat of the same event folded into its `count` and
//! `lastTimestamp`, as the kubelet's event correlator does.

use parking_lot::Mutex;
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Semaphore, mpsc};
use tower::{Service, ServiceExt};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

/// The component named in every event's source.
const COMPONENT: &str = "virtual-kubelet";
/// Repeats within this window are folded into the first event.
const FOLD_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Bounds the memory of recent events.
const MAX_REMEMBERED: usize = 4096;

/// Whether the event reports a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct Key {
    namespace: String,
    uid: String,
    kind: &'static str,
    reason: String,
    message: String,
}

struct Seen {
    name: String,
    count: i32,
    first: Instant,
}

/// Events waiting to be written; past this, `Normal` events are dropped (as client-go's
/// broadcaster drops events when its 1,000-event queue is full) and warnings wait for room.
const QUEUE: usize = 1024;
/// Events written at the same time.
const WRITERS: usize = 4;

/// One event to write.
struct Pending {
    object: ObjectReference,
    kind: Kind,
    reason: String,
    message: String,
    action: String,
}

/// Queues events for one node; a task writes them at a bounded rate, as the kubelet does, so a
/// reconcile never waits for an event write and a burst of pods does not spend a third of the
/// API server's writes on events (one per pod in the pods-to-Running benchmark).
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
    dropped: Counter,
}

impl Recorder {
    /// A recorder whose events name `node_name` as their source host, writing at most `qps`
    /// events a second (0: no limit); its writer task runs until the recorder is dropped. Must
    /// be called within a Tokio runtime.
    pub fn new(client: Client, node_name: String, qps: u32, dropped: Counter) -> Self {
        let (queue, pending) = mpsc::channel::<Pending>(QUEUE);
        let writer = Arc::new(Writer {
            client,
            node_name,
            recent: Mutex::default(),
        });
        tokio::spawn(write_events(writer, pending, qps));
        Self { queue, dropped }
    }

    /// Queues an event about `object`. A warning waits for room in the queue (a rejected pod's
    /// reason must reach the user); a `Normal` event is dropped when the queue is full.
    pub async fn publish(
        &self,
        object: &ObjectReference,
        kind: Kind,
        reason: &str,
        message: &str,
        action: &str,
    ) {
        let pending = Pending {
            object: object.clone(),
            kind,
            reason: reason.to_owned(),
            message: message.to_owned(),
            action: action.to_owned(),
        };
        let sent = match kind {
            Kind::Warning => self.queue.send(pending).await.is_ok(),
            Kind::Normal => match self.queue.try_send(pending) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let n = self.dropped.inc() + 1;
                    if n == 1 || n.is_multiple_of(1000) {
                        tracing::warn!(
                            dropped = n,
                            "event queue full: dropping Normal events (warnings wait)"
                        );
                    }
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        };
        if !sent {
            tracing::warn!(reason, "event writer stopped; event not written");
        }
    }
}

/// Writes what arrives on `pending`, `WRITERS` at a time and at most `qps` a second, until every
/// sender is gone.
async fn write_events(writer: Arc<Writer>, mut pending: mpsc::Receiver<Pending>, qps: u32) {
    let write = tower::service_fn(move |p: Pending| {
        let writer = writer.clone();
        async move {
            if let Err(err) = writer
                .publish(&p.object, p.kind, &p.reason, &p.message, &p.action)
                .await
            {
                tracing::warn!(%err, reason = %p.reason, "publishing an event failed");
            }
            Ok::<(), std::convert::Infallible>(())
        }
    });
    // Without a limit the rate is one that is never reached.
    let per_second = if qps == 0 { u64::MAX } else { u64::from(qps) };
    let mut limited = tower::ServiceBuilder::new()
        .rate_limit(per_second, Duration::from_secs(1))
        .service(write);
    let writers = Arc::new(Semaphore::new(WRITERS));
    while let Some(p) = pending.recv().await {
        // Waits for the rate limit, then for a free writer.
        let (Ok(service), Ok(permit)) =
            (limited.ready().await, writers.clone().acquire_owned().await)
        else {
            return;
        };
        let call = service.call(p);
        tokio::spawn(async move {
            let _ = call.await;
            drop(permit);
        });
    }
}

/// Writes events, folding repeats.
struct Writer {
    client: Client,
    node_name: String,
    recent: Mutex<HashMap<Key, Seen>>,
}

impl Writer {
    /// Writes an event about `object`; a repeat of the same one within ten minutes raises its
    /// count instead of adding another.
    async fn publish(
        &self,
        object: &ObjectReference,
        kind: Kind,
        reason: &str,
        message: &str,
        action: &str,
    ) -> Result<(), kube::Error> {
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let kind_name = match kind {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        };
        let key = Key {
            namespace: namespace.clone(),
            uid: object.uid.clone().unwrap_or_default(),
            kind: kind_name,
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        let repeat = {
            let mut recent = self.recent.lock();
            match recent.get_mut(&key) {
                Some(seen) if seen.first.elapsed() < FOLD_WINDOW => {
                    seen.count = seen.count.saturating_add(1);
                    Some((seen.name.clone(), seen.count))
                }
                _ => None,
            }
        };
        if let Some((name, count)) = repeat {
            let patch = json!({"count": count, "lastTimestamp": Time(now)});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => return Ok(()),
                // Expired (events have a TTL) or deleted: write a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        let object_name = object.name.clone().unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                // As the kubelet names them: the object, then a unique suffix.
                name: Some(format!(
                    "{object_name}.{:x}",
                    now.as_nanosecond().unsigned_abs()
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(kind_name.to_owned()),
            action: Some(action.to_owned()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: Some(self.node_name.clone()),
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(self.node_name.clone()),
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        let mut recent = self.recent.lock();
        if recent.len() >= MAX_REMEMBERED {
            recent.retain(|_, seen| seen.first.elapsed() < FOLD_WINDOW);
            if recent.len() >= MAX_REMEMBERED {
                recent.clear();
            }
        }
        recent.insert(
            key,
            Seen {
                name: created.metadata.name.unwrap_or_default(),
                count: 1,
                first: Instant::now(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use tokio::sync::Notify;

    use super::*;

    /// A client whose API server holds every request until `release`, then answers with the
    /// event it was sent; `requests` counts what arrived.
    fn held_client(release: Arc<Notify>, requests: Arc<AtomicUsize>) -> Client {
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let (release, requests) = (release.clone(), requests.clone());
            async move {
                requests.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await?
                    .to_bytes();
                http::Response::builder()
                    .status(201)
                    .body(Full::new(body))
                    .map_err(kube::Error::HttpError)
            }
        });
        Client::new(service, "default")
    }

    fn object(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_normal_events_and_holds_warnings() {
        let release = Arc::new(Notify::new());
        let requests = Arc::new(AtomicUsize::new(0));
        let dropped = Counter::default();
        let recorder = Recorder::new(
            held_client(release.clone(), requests.clone()),
            "node".into(),
            0,
            dropped.clone(),
        );
        // WRITERS requests held at the API server, one in the writer waiting for a free writer,
        // QUEUE more queued, then 10 with no room.
        let total = WRITERS + 1 + QUEUE + 10;
        for i in 0..total {
            let o = object(&format!("p{i}"));
            // Never waits: a Normal event is queued or dropped.
            tokio::time::timeout(
                Duration::from_secs(5),
                recorder.publish(&o, Kind::Normal, "Created", "m", "Create"),
            )
            .await
            .expect("a Normal event never waits");
            // Let the writer take what it can, so the queue holds exactly what waits.
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(requests.load(Ordering::SeqCst), WRITERS, "writers at work");
        assert!(dropped.get() >= 10, "dropped {}", dropped.get());
        assert!(
            dropped.get() <= 11 + WRITERS as u64,
            "dropped {}",
            dropped.get()
        );

        // A warning waits for room instead of being dropped.
        let before = dropped.get();
        let bad = object("bad");
        let warning = recorder.publish(&bad, Kind::Warning, "Failed", "m", "Create");
        tokio::pin!(warning);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut warning)
                .await
                .is_err(),
            "the warning waits while the queue is full"
        );
        release.notify_waiters();
        // Every held request answers; keep releasing until the warning found room.
        let released = async {
            loop {
                release.notify_waiters();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            () = &mut warning => {}
            () = released => {}
            () = tokio::time::sleep(Duration::from_secs(10)) => panic!("the warning never got in"),
        }
        assert_eq!(dropped.get(), before, "the warning was not dropped");
    }
}
