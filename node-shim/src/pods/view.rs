//! The provider view: what the shim knows of each pod in the provider, kept from the provider's
//! WatchPods stream (and from CreatePod answers), with reconnects and snapshot resyncs.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use podprovider_proto::v1::{self as pb, WatchPodsRequest, watch_pods_event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Context;

/// What the shim knows of one pod in the provider.
#[derive(Clone, Debug, Default)]
pub(super) struct Known {
    pub(super) status: Option<pb::PodStatus>,
    /// The provider reported it deleted, or it was missing from a snapshot.
    pub(super) gone: bool,
    pub(super) delete_requested: bool,
    /// The WatchPods connection that last saw it (or the create that made it).
    pub(super) epoch: u64,
    /// [`fingerprint`](super::reconcile::fingerprint) of the spec last sent to the provider; `None` for a pod adopted after a
    /// restart, until it is recorded.
    pub(super) sent: Option<u64>,
    /// When its service-account tokens must be refreshed with an UpdatePod.
    pub(super) refresh_at: Option<Instant>,
}

/// Every pod the provider reported, and whether its first snapshot has arrived.
#[derive(Default)]
pub(super) struct ProviderView {
    pub(super) synced: bool,
    pub(super) epoch: u64,
    pub(super) pods: HashMap<String, Known>,
}

/// The pod a provider's `PodRef` names.
pub(super) fn object_ref(r: &pb::PodRef) -> ObjectRef<Pod> {
    ObjectRef::new(&r.name).within(&r.namespace)
}

/// Consumes the provider's WatchPods stream into the view, reconnecting with backoff, and triggers
/// a reconcile of every pod it reports.
pub(super) async fn watch_provider(
    ctx: Arc<Context>,
    store: Store<Pod>,
    trigger: mpsc::UnboundedSender<ObjectRef<Pod>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let request = WatchPodsRequest {
            node_name: ctx.cfg.node_name.clone(),
        };
        let mut client = ctx.provider.clone();
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            r = client.watch_pods(request) => r,
        };
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(err) => {
                tracing::debug!(error = %err.message(), "WatchPods failed; retrying in {backoff:?}");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let epoch = {
            let mut view = ctx.view.lock();
            view.epoch += 1;
            view.epoch
        };
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                m = stream.message() => m,
            };
            let event = match message {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err.message(), "WatchPods stream broke; reconnecting");
                    break;
                }
            };
            backoff = Duration::from_millis(200);
            match event.event {
                Some(watch_pods_event::Event::Status(s)) => {
                    let Some(r) = s.pod_ref.clone() else { continue };
                    {
                        let mut view = ctx.view.lock();
                        let entry = view.pods.entry(r.uid.clone()).or_default();
                        entry.status = Some(s);
                        entry.gone = false;
                        entry.epoch = epoch;
                    }
                    let _ = trigger.send(object_ref(&r));
                }
                Some(watch_pods_event::Event::Deleted(r)) => {
                    tracing::debug!(pod = %format!("{}/{}", r.namespace, r.name), uid = %r.uid, "provider: deleted");
                    if let Some(entry) = ctx.view.lock().pods.get_mut(&r.uid) {
                        entry.gone = true;
                    }
                    let _ = trigger.send(object_ref(&r));
                }
                Some(watch_pods_event::Event::Synced(_)) => {
                    {
                        let mut view = ctx.view.lock();
                        for k in view.pods.values_mut() {
                            if k.epoch < epoch {
                                k.gone = true;
                            }
                        }
                        view.synced = true;
                    }
                    tracing::info!("provider status stream synced");
                    for pod in store.state() {
                        let _ = trigger.send(ObjectRef::from_obj(&*pod));
                    }
                }
                Some(watch_pods_event::Event::PodEvent(e)) => {
                    let Some(r) = e.pod_ref else { continue };
                    let pod = store
                        .get(&object_ref(&r))
                        .filter(|p| p.uid().as_deref() == Some(r.uid.as_str()));
                    if let Some(pod) = pod {
                        ctx.event(&pod, e.warning, &e.reason, e.message, "Provider")
                            .await;
                    }
                }
                None => {}
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
    }
}
