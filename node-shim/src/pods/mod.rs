//! The pod controller: pods bound to this node are created in the provider, their status follows
//! the provider's WatchPods stream, and deletions wait for the provider before the API object goes.
//!
//! Reading order: [`run`] wires five futures around one [`Context`]:
//! - `kube::runtime::Controller` watches pods with `spec.nodeName=<node>` and runs
//!   [`reconcile::reconcile`] per pod (never concurrently for one pod), which carries out what
//!   [`decide::decide`] chose from the pod and the provider view;
//! - a reflector keeps the cluster's Services, for service-link environment variables;
//! - the same pod watch sends deleted pods (force-deleted ones too) straight to the provider;
//! - [`view::watch_provider`] consumes WatchPods into the provider view and triggers reconciles;
//! - [`orphans::sweep_periodically`] deletes provider pods whose API object is gone;
//! - [`gauges::count_pods`] keeps the pod gauges.

mod decide;
mod gauges;
mod orphans;
mod reconcile;
mod view;

use parking_lot::Mutex;
use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config, events, metrics::Metrics, provider_client::ProviderClient, resolve, status,
    volume_sources::VolumeSources,
};
use view::{Known, ProviderView};

/// Errors that make one reconcile retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod cannot be resolved yet (e.g. a mandatory ConfigMap is missing).
    #[error(transparent)]
    Resolve(#[from] resolve::Error),
    /// A provider call failed in a way worth retrying.
    #[error("provider {call}: {status}")]
    Provider {
        /// The RPC.
        call: &'static str,
        /// What the provider said.
        status: tonic::Status,
    },
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Serializing a status patch failed (a bug).
    #[error("serializing status: {0}")]
    Json(#[from] serde_json::Error),
}

/// What reconcile needs.
pub struct Context {
    client: Client,
    provider: ProviderClient,
    cfg: Arc<Config>,
    recorder: events::Recorder,
    view: Mutex<ProviderView>,
    failures: Mutex<HashMap<String, u32>>,
    /// The resourceVersion each pod had when it was last reconciled (for the queue-depth gauge).
    reconciled: Mutex<HashMap<String, String>>,
    host_ip: String,
    services: Store<Service>,
    metrics: Metrics,
    /// The ConfigMaps and Secrets running pods mount, watched for changes.
    volumes: VolumeSources,
}

impl Context {
    /// A context for the node in `cfg`; `services` is a reflector's store of the cluster's
    /// Services.
    fn new(
        client: Client,
        provider: ProviderClient,
        cfg: Arc<Config>,
        services: Store<Service>,
        metrics: Metrics,
        trigger: mpsc::UnboundedSender<ObjectRef<Pod>>,
    ) -> Arc<Self> {
        let recorder = events::Recorder::new(
            client.clone(),
            cfg.node_name.clone(),
            cfg.event_qps,
            metrics.events_dropped.clone(),
        );
        Arc::new(Self {
            volumes: VolumeSources::new(client.clone(), cfg.secret_sync_period, trigger),
            host_ip: cfg.pod_ip.to_string(),
            client,
            provider,
            cfg,
            recorder,
            view: Mutex::default(),
            failures: Mutex::default(),
            reconciled: Mutex::default(),
            services,
            metrics,
        })
    }

    async fn event(&self, pod: &Pod, warning: bool, reason: &str, note: String, action: &str) {
        let kind = if warning {
            events::Kind::Warning
        } else {
            events::Kind::Normal
        };
        self.recorder
            .publish(&pod.object_ref(&()), kind, reason, &note, action)
            .await;
    }

    fn known(&self, uid: &str) -> (bool, Option<Known>) {
        let view = self.view.lock();
        (view.synced, view.pods.get(uid).cloned())
    }

    /// Writes `new` unless it would move the pod backwards or changes nothing.
    async fn write_status(
        &self,
        pod: &Pod,
        new: k8s_openapi::api::core::v1::PodStatus,
    ) -> Result<(), Error> {
        if status::would_regress(pod.status.as_ref(), &new) {
            return Ok(());
        }
        let current = pod.status.as_ref();
        if current.map(serde_json::to_value).transpose()?
            == Some(serde_json::to_value(status::merged(current, &new))?)
        {
            return Ok(());
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        // Strategic merge: conditions merge by type, so those other controllers own survive.
        let patch = serde_json::json!({"status": new});
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await?;
        Ok(())
    }
}

fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<Context>) -> Action {
    let uid = pod.uid().unwrap_or_default();
    let mut failures = ctx.failures.lock();
    let n = failures.entry(uid).or_default();
    *n = n.saturating_add(1);
    let delay = Duration::from_millis(500)
        .saturating_mul(1 << (*n).min(7))
        .min(Duration::from_secs(60));
    tracing::warn!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), %err, "reconcile failed; retrying in {delay:?}");
    Action::requeue(delay)
}

/// Drops what the shim never reads before a pod enters the store: `managedFields` are most of a
/// small pod's bytes (at 10,000 pods the store held them all).
fn forget_unread_fields(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
}

/// Runs the pod controller until `shutdown`.
pub async fn run(
    client: Client,
    provider: ProviderClient,
    cfg: Arc<Config>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let (services, writer) = reflector::store();
    let service_watch = reflector::reflector(
        writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(|service: &mut Service| service.metadata.managed_fields = None),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|r| async move {
        if let Err(err) = r {
            tracing::warn!(%err, "service watch error");
        }
    });
    let service_watch = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = service_watch => tracing::warn!("service watch ended"),
            }
        }
    };
    let (trigger_tx, trigger_rx) = mpsc::unbounded_channel();
    let ctx = Context::new(client, provider, cfg, services, metrics, trigger_tx.clone());
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={}", ctx.cfg.node_name);
    let wc = watcher::Config::default().fields(&selector);
    // One watch feeds both the controller's store and the force-delete path: a second watch of
    // the same pods decoded every event twice.
    let (store, writer) = reflector::store();
    let (deleted_tx, deleted_rx) = mpsc::unbounded_channel::<Pod>();
    // No backoff here: the controller backs off its trigger stream after an error.
    let pod_events = watcher(api, wc)
        .modify(forget_unread_fields)
        .map(move |event| {
            match &event {
                Ok(watcher::Event::Delete(pod)) => {
                    // The receiver lives as long as `run`; a send fails only at shutdown.
                    let _ = deleted_tx.send(pod.clone());
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "pod watch error"),
            }
            event
        })
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(pod_events, store.clone());

    // Pods deleted from the API server (force-deleted ones too: gone before we could reconcile
    // their deletion) go straight to the provider.
    let watch_ctx = ctx.clone();
    let deletes =
        tokio_stream::wrappers::UnboundedReceiverStream::new(deleted_rx).for_each(move |pod| {
            let ctx = watch_ctx.clone();
            async move {
                let uid = pod.uid().unwrap_or_default();
                ctx.volumes.untrack(&uid);
                let (_, known) = ctx.known(&uid);
                if known.is_some_and(|k| !k.gone) {
                    orphans::delete_orphan(&ctx, resolve::pod_ref(&pod)).await;
                }
            }
        });

    let provider_watch =
        view::watch_provider(ctx.clone(), store.clone(), trigger_tx, shutdown.clone());

    let sweeper = orphans::sweep_periodically(ctx.clone(), store.clone(), shutdown.clone());

    let (ctx_for_gauges, store_for_gauges) = (ctx.clone(), store.clone());
    let controller = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.cfg.workers))
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(
            trigger_rx,
        ))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|_| async {});

    let deletes = async {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = deletes => tracing::warn!("pod delete watch ended"),
        }
    };
    let gauges = gauges::count_pods(ctx_for_gauges, store_for_gauges, shutdown.clone());
    // All run together; the controller drains in-flight reconciles on shutdown.
    tokio::join!(
        deletes,
        controller,
        provider_watch,
        sweeper,
        service_watch,
        gauges
    );
}
