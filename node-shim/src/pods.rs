//! The pod controller: pods bound to this node are created in the provider, their status follows
//! the provider's WatchPods stream, and deletions wait for the provider before the API object goes.
//!
//! Five futures share one [`Context`]:
//! - `kube::runtime::Controller` watches pods with `spec.nodeName=<node>` and runs [`reconcile`]
//!   per pod (never concurrently for one pod);
//! - a reflector keeps the cluster's Services, for service-link environment variables;
//! - the same pod watch sends deleted pods (force-deleted ones too) straight to the provider;
//! - [`watch_provider`] consumes WatchPods into the provider view and triggers reconciles;
//! - a periodic sweep deletes provider pods whose API object is gone.

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use podprovider_proto::v1::{
    self as pb, CreatePodRequest, DeletePodRequest, ListPodsRequest, UpdatePodRequest,
    WatchPodsRequest, watch_pods_event,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use tracing::{Instrument, field::Empty};

use crate::{
    config::Config, events, fields, metrics::Metrics, provider_client::ProviderClient, resolve,
    status, volume_sources::VolumeSources,
};

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

/// What the shim knows of one pod in the provider.
#[derive(Clone, Debug, Default)]
struct Known {
    status: Option<pb::PodStatus>,
    /// The provider reported it deleted, or it was missing from a snapshot.
    gone: bool,
    delete_requested: bool,
    /// The WatchPods connection that last saw it (or the create that made it).
    epoch: u64,
    /// [`fingerprint`] of the spec last sent to the provider; `None` for a pod adopted after a
    /// restart, until it is recorded.
    sent: Option<u64>,
    /// When its service-account tokens must be refreshed with an UpdatePod.
    refresh_at: Option<Instant>,
}

#[derive(Default)]
struct ProviderView {
    synced: bool,
    epoch: u64,
    pods: HashMap<String, Known>,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let view = lock(&self.view);
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

/// Whether the pod was running in the provider before (so a provider that does not know it lost it,
/// rather than never having been asked).
fn was_started(pod: &Pod) -> bool {
    let s = pod.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        || s.and_then(|s| s.pod_ip.as_ref()).is_some()
}

/// Reconciles one pod: create, follow status, delete. Each run is one span with the pod's
/// OpenTelemetry attributes; provider calls made in it are its children.
pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        otel.name = "reconcile pod",
        otel.status_code = Empty,
        k8s.namespace.name = %pod.namespace().unwrap_or_default(),
        k8s.pod.name = %pod.name_any(),
        k8s.pod.uid = %pod.uid().unwrap_or_default(),
        k8s.node.name = %ctx.cfg.node_name,
        trace_id = Empty,
    );
    if let Some(id) = vk_telemetry::propagation::trace_id(&span) {
        span.record("trace_id", id);
    }
    let started = Instant::now();
    ctx.metrics.in_flight.inc();
    let seen = (pod.uid(), pod.resource_version());
    let result = reconcile_pod(pod, &ctx).instrument(span.clone()).await;
    if let (Some(uid), Some(rv)) = seen {
        lock(&ctx.reconciled).insert(uid, rv);
    }
    ctx.metrics.in_flight.dec();
    let outcome = if result.is_ok() { "ok" } else { "error" };
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    ctx.metrics
        .reconcile
        .get_or_create(&crate::metrics::OutcomeLabels { outcome })
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_pod(pod: Arc<Pod>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let ctx = ctx.clone();
    let uid = pod.uid().unwrap_or_default();
    let (synced, known) = ctx.known(&uid);
    if !synced {
        // Deciding before the provider's snapshot could re-create pods that already run.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    tracing::debug!(
        pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
        %uid,
        deleting = pod.metadata.deletion_timestamp.is_some(),
        known = ?known.as_ref().map(|k| (k.gone, k.delete_requested)),
        "reconcile"
    );
    let pod_ref = resolve::pod_ref(&pod);
    let result = if pod.metadata.deletion_timestamp.is_some() {
        ctx.volumes.untrack(&uid);
        delete(&pod, &ctx, &uid, pod_ref, known).await
    } else if status::is_terminal(pod.status.as_ref().and_then(|s| s.phase.as_deref())) {
        ctx.volumes.untrack(&uid);
        Ok(Action::await_change())
    } else {
        match known {
            None if was_started(&pod) => lost(&pod, &ctx).await,
            None => create(&pod, &ctx, &uid).await,
            Some(k) if k.gone => lost(&pod, &ctx).await,
            Some(k) => {
                let deadline = deadline_left(&pod);
                if deadline.is_some_and(|d| d.is_zero()) {
                    deadline_exceeded(&pod, &ctx, &uid, pod_ref).await
                } else {
                    for name in status::unreported_ephemeral(&pod) {
                        let note = format!("{name}: {}", status::EPHEMERAL_UNSUPPORTED);
                        ctx.event(&pod, true, "EphemeralContainerNotSupported", note, "Debug")
                            .await;
                    }
                    if let Some(s) = &k.status {
                        ctx.write_status(&pod, status::to_kubernetes(&pod, s, &ctx.host_ip))
                            .await?;
                    }
                    let again = follow_spec(&pod, &ctx, &uid, &k).await?;
                    // Come back for whichever is due first: a token refresh or the deadline.
                    Ok(match again.into_iter().chain(deadline).min() {
                        Some(d) => Action::requeue(d),
                        None => Action::await_change(),
                    })
                }
            }
        }
    };
    if result.is_ok() {
        lock(&ctx.failures).remove(&uid);
    }
    result
}

/// The Services whose links `pod` gets, once the Service reflector has its first list.
fn services_for(ctx: &Context, pod: &Pod) -> Option<Vec<Arc<Service>>> {
    ctx.services.wait_until_ready().now_or_never()?.ok()?;
    let namespace = pod.namespace().unwrap_or_default();
    Some(ctx.services.state_filter(|s| {
        let ns = s.namespace().unwrap_or_default();
        ns == namespace || (ns == "default" && s.name_any() == "kubernetes")
    }))
}

async fn create(pod: &Pod, ctx: &Context, uid: &str) -> Result<Action, Error> {
    let Some(services) = services_for(ctx, pod) else {
        return Ok(Action::requeue(Duration::from_millis(500)));
    };
    // What the user wrote that a virtual node cannot honour: refused fields fail the pod, ignored
    // ones are said once, before anything reaches the provider.
    let verdict = fields::check(pod);
    if !verdict.refused.is_empty() {
        let message = verdict.refused.join("; ");
        return fail(pod, ctx, fields::REFUSED_REASON, &message).await;
    }
    if let Some(w) = verdict.ignored_event() {
        ctx.event(pod, true, w.reason, w.message, "Create").await;
    }
    let print = fingerprint(pod);
    let resolved = match resolve::resolve(&ctx.client, pod, &ctx.host_ip, &services).await {
        Ok(r) => r,
        Err(resolve::Error::Invalid(msg)) => return fail(pod, ctx, "ProviderFailed", &msg).await,
        Err(err) => {
            ctx.event(pod, true, err.reason(), err.to_string(), "Create")
                .await;
            return Err(err.into());
        }
    };
    for w in &resolved.warnings {
        ctx.event(pod, true, w.reason, w.message.clone(), "Create")
            .await;
    }
    let refresh_at = resolve::token_expiry(&resolved.pod).map(refresh_time);
    let versions = resolved.source_versions;
    let response = ctx
        .provider
        .clone()
        .create_pod(CreatePodRequest {
            pod: Some(resolved.pod),
        })
        .await;
    match response {
        Ok(resp) => {
            let s = resp.into_inner().status.unwrap_or_default();
            {
                let mut view = lock(&ctx.view);
                let epoch = view.epoch;
                let entry = view.pods.entry(uid.to_owned()).or_default();
                // The watch stream may already have delivered a newer status; keep it.
                if entry.status.is_none() {
                    entry.status = Some(s.clone());
                }
                entry.epoch = epoch;
                entry.sent = Some(print);
                entry.refresh_at = refresh_at;
            }
            let live = resolve::live_sources(pod);
            ctx.volumes
                .track(uid, ObjectRef::from_obj(pod), live, &versions);
            let cloud_id = if s.cloud_id.is_empty() {
                String::new()
            } else {
                format!(" as {}", s.cloud_id)
            };
            // The trace id lets a user find this create in the tracing backend.
            let trace = vk_telemetry::propagation::trace_id(&tracing::Span::current())
                .map(|id| format!(" (trace {id})"))
                .unwrap_or_default();
            ctx.event(
                pod,
                false,
                "ProviderCreated",
                format!("created in the provider{cloud_id}{trace}"),
                "Create",
            )
            .await;
            // No status write here: the provider pushes the new pod's status on WatchPods, which
            // triggers the next reconcile; writing now would cost a second API write per pod.
            Ok(next_action(refresh_at))
        }
        Err(st) if st.code() == Code::InvalidArgument => {
            fail(pod, ctx, "ProviderFailed", st.message()).await
        }
        Err(status) => Err(Error::Provider {
            call: "CreatePod",
            status,
        }),
    }
}

/// What of a pod's spec the provider must follow while it runs: the fields Kubernetes lets users
/// change in place (container images, labels and annotations, activeDeadlineSeconds).
fn fingerprint(pod: &Pod) -> u64 {
    let mut h = DefaultHasher::new();
    if let Some(spec) = &pod.spec {
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            c.name.hash(&mut h);
            c.image.hash(&mut h);
        }
        spec.active_deadline_seconds.hash(&mut h);
    }
    pod.metadata.labels.hash(&mut h);
    pod.metadata.annotations.hash(&mut h);
    h.finish()
}

fn has_service_account_token(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .any(|s| s.service_account_token.is_some())
}

/// Tokens are refreshed at 80% of their remaining lifetime, as the kubelet does.
fn refresh_time(expiry: SystemTime) -> Instant {
    let left = expiry.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now() + left.mul_f64(0.8)
}

/// How long until `at`, if anything is due then.
fn after(at: Option<Instant>) -> Option<Duration> {
    at.map(|at| at.saturating_duration_since(Instant::now()))
}

fn next_action(refresh_at: Option<Instant>) -> Action {
    match refresh_at {
        Some(at) => Action::requeue(at.saturating_duration_since(Instant::now())),
        None => Action::await_change(),
    }
}

fn record_sent(ctx: &Context, uid: &str, print: u64, refresh_at: Option<Instant>) {
    if let Some(entry) = lock(&ctx.view).pods.get_mut(uid) {
        entry.sent = Some(print);
        entry.refresh_at = refresh_at;
    }
}

/// Keeps a running pod's provider copy current: an UpdatePod when its in-place-changeable spec
/// changed or its service-account tokens are due. A pod adopted after a restart gets fresh tokens
/// at once (their age is unknown, as for the kubelet after a restart); otherwise its spec is taken
/// as what the provider runs.
async fn follow_spec(
    pod: &Pod,
    ctx: &Context,
    uid: &str,
    k: &Known,
) -> Result<Option<Duration>, Error> {
    let print = fingerprint(pod);
    let spec_changed = k.sent.is_some_and(|sent| sent != print);
    let refresh = match k.sent {
        None => has_service_account_token(pod),
        Some(_) => k.refresh_at.is_some_and(|at| at <= Instant::now()),
    };
    let volumes_changed = ctx.volumes.is_stale(uid);
    if !spec_changed && !refresh && !volumes_changed {
        if k.sent.is_none() {
            record_sent(ctx, uid, print, None);
        }
        if !ctx.volumes.is_tracked(uid) {
            // Adopted after a restart: the provider's copy is taken as current from here on.
            ctx.volumes
                .adopt(uid, ObjectRef::from_obj(pod), resolve::live_sources(pod));
        }
        return Ok(after(k.refresh_at));
    }
    let Some(services) = services_for(ctx, pod) else {
        return Ok(Some(Duration::from_millis(500)));
    };
    let resolved = match resolve::resolve(&ctx.client, pod, &ctx.host_ip, &services).await {
        Ok(r) => r,
        Err(resolve::Error::Invalid(msg)) => {
            ctx.event(pod, true, "ProviderUpdateFailed", msg, "Update")
                .await;
            record_sent(ctx, uid, print, None);
            return Ok(None);
        }
        Err(err) => {
            ctx.event(pod, true, err.reason(), err.to_string(), "Update")
                .await;
            return Err(err.into());
        }
    };
    for w in &resolved.warnings {
        ctx.event(pod, true, w.reason, w.message.clone(), "Update")
            .await;
    }
    let refresh_at = resolve::token_expiry(&resolved.pod).map(refresh_time);
    let request = UpdatePodRequest {
        pod: Some(resolved.pod),
    };
    // Whatever the answer, the pod is now resolved against these versions: a provider that
    // cannot update in place is not asked again until the next change.
    let live = resolve::live_sources(pod);
    ctx.volumes.track(
        uid,
        ObjectRef::from_obj(pod),
        live,
        &resolved.source_versions,
    );
    match ctx.provider.clone().update_pod(request).await {
        Ok(_) => {
            record_sent(ctx, uid, print, refresh_at);
            if spec_changed || volumes_changed {
                let note = if spec_changed {
                    "updated in the provider"
                } else {
                    "mounted ConfigMap or Secret contents updated in the provider"
                }
                .to_owned();
                ctx.event(pod, false, "ProviderUpdated", note, "Update")
                    .await;
            }
            Ok(after(refresh_at))
        }
        // The provider cannot apply this in place; the pod keeps running as it is.
        Err(st) if is_final_update_error(st.code()) => {
            let mut note = st.message().to_owned();
            if refresh_at.is_some() {
                note.push_str("; the pod's service-account token will not be refreshed");
            }
            ctx.event(pod, true, "ProviderUpdateFailed", note, "Update")
                .await;
            record_sent(ctx, uid, print, None);
            Ok(None)
        }
        Err(status) => Err(Error::Provider {
            call: "UpdatePod",
            status,
        }),
    }
}

fn is_final_update_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unimplemented | Code::InvalidArgument | Code::FailedPrecondition
    )
}

/// Time left before `spec.activeDeadlineSeconds` runs out, counted from `status.startTime` as the
/// kubelet counts it; `None` without a deadline or a start time.
fn deadline_left(pod: &Pod) -> Option<Duration> {
    let limit = pod.spec.as_ref()?.active_deadline_seconds?;
    let started = pod.status.as_ref()?.start_time.as_ref()?.0;
    let limit = Duration::from_secs(u64::try_from(limit).unwrap_or(0));
    let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(started);
    let elapsed = Duration::try_from(elapsed).unwrap_or_default();
    Some(limit.saturating_sub(elapsed))
}

const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// The kubelet's answer to an exceeded `activeDeadlineSeconds`: the workload is stopped (with the
/// pod's grace period), then the pod is Failed with reason `DeadlineExceeded`. Stopping first, so a
/// failed stop is retried rather than hidden behind a terminal phase.
async fn deadline_exceeded(
    pod: &Pod,
    ctx: &Context,
    uid: &str,
    pod_ref: pb::PodRef,
) -> Result<Action, Error> {
    let req = DeletePodRequest {
        pod_ref: Some(pod_ref),
        grace_period_seconds: pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds),
    };
    match ctx.provider.clone().delete_pod(req).await {
        Ok(_) => {}
        Err(st) if st.code() == Code::NotFound => {}
        Err(status) => {
            return Err(Error::Provider {
                call: "DeletePod",
                status,
            });
        }
    }
    if let Some(entry) = lock(&ctx.view).pods.get_mut(uid) {
        entry.delete_requested = true;
    }
    fail(pod, ctx, "DeadlineExceeded", DEADLINE_MESSAGE).await
}

/// The pod cannot run: a Warning event and a terminal Failed status with `reason` and `message`.
async fn fail(pod: &Pod, ctx: &Context, reason: &str, message: &str) -> Result<Action, Error> {
    ctx.event(pod, true, reason, message.to_owned(), "Create")
        .await;
    ctx.write_status(pod, status::failed(pod, reason, message, &ctx.host_ip))
        .await?;
    Ok(Action::await_change())
}

async fn lost(pod: &Pod, ctx: &Context) -> Result<Action, Error> {
    fail(
        pod,
        ctx,
        "ProviderLost",
        "the provider no longer runs this pod",
    )
    .await
}

async fn delete(
    pod: &Pod,
    ctx: &Context,
    uid: &str,
    pod_ref: pb::PodRef,
    known: Option<Known>,
) -> Result<Action, Error> {
    match known {
        Some(k) if !k.gone => {
            if !k.delete_requested {
                let grace = pod.metadata.deletion_grace_period_seconds;
                let req = DeletePodRequest {
                    pod_ref: Some(pod_ref),
                    grace_period_seconds: grace,
                };
                let found = match ctx.provider.clone().delete_pod(req).await {
                    Ok(resp) => resp.into_inner().found,
                    Err(st) if st.code() == Code::NotFound => false,
                    Err(status) => {
                        return Err(Error::Provider {
                            call: "DeletePod",
                            status,
                        });
                    }
                };
                let mut view = lock(&ctx.view);
                if let Some(entry) = view.pods.get_mut(uid) {
                    entry.delete_requested = true;
                    entry.gone |= !found;
                }
                if found {
                    // Re-run at once only when already gone; otherwise the watch stream will tell us.
                    return Ok(Action::requeue(Duration::from_secs(5)));
                }
            } else {
                if let Some(s) = &k.status {
                    ctx.write_status(pod, status::to_kubernetes(pod, s, &ctx.host_ip))
                        .await?;
                }
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            finalize(pod, ctx, uid).await
        }
        _ => finalize(pod, ctx, uid).await,
    }
}

/// The provider is done with the pod: remove the API object (grace 0, only this UID).
async fn finalize(pod: &Pod, ctx: &Context, uid: &str) -> Result<Action, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(err) => return Err(err.into()),
    }
    lock(&ctx.view).pods.remove(uid);
    Ok(Action::await_change())
}

fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<Context>) -> Action {
    let uid = pod.uid().unwrap_or_default();
    let mut failures = lock(&ctx.failures);
    let n = failures.entry(uid).or_default();
    *n = n.saturating_add(1);
    let delay = Duration::from_millis(500)
        .saturating_mul(1 << (*n).min(7))
        .min(Duration::from_secs(60));
    tracing::warn!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), %err, "reconcile failed; retrying in {delay:?}");
    Action::requeue(delay)
}

fn object_ref(r: &pb::PodRef) -> ObjectRef<Pod> {
    ObjectRef::new(&r.name).within(&r.namespace)
}

/// Consumes the provider's WatchPods stream into the view, reconnecting with backoff, and triggers
/// a reconcile of every pod it reports.
async fn watch_provider(
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
            let mut view = lock(&ctx.view);
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
                        let mut view = lock(&ctx.view);
                        let entry = view.pods.entry(r.uid.clone()).or_default();
                        entry.status = Some(s);
                        entry.gone = false;
                        entry.epoch = epoch;
                    }
                    let _ = trigger.send(object_ref(&r));
                }
                Some(watch_pods_event::Event::Deleted(r)) => {
                    tracing::debug!(pod = %format!("{}/{}", r.namespace, r.name), uid = %r.uid, "provider: deleted");
                    if let Some(entry) = lock(&ctx.view).pods.get_mut(&r.uid) {
                        entry.gone = true;
                    }
                    let _ = trigger.send(object_ref(&r));
                }
                Some(watch_pods_event::Event::Synced(_)) => {
                    {
                        let mut view = lock(&ctx.view);
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

/// Deletes provider pods whose Kubernetes object no longer exists (force-deleted, or deleted while
/// the shim was down). Only runs once the pod store has synced, so nothing is deleted by mistake.
async fn sweep(ctx: &Context, store: &Store<Pod>) -> Result<usize, Error> {
    let live: HashSet<String> = store.state().iter().filter_map(|p| p.uid()).collect();
    let request = ListPodsRequest {
        node_name: ctx.cfg.node_name.clone(),
    };
    let listed = ctx
        .provider
        .clone()
        .list_pods(request)
        .await
        .map_err(|status| Error::Provider {
            call: "ListPods",
            status,
        })?
        .into_inner();
    let mut deleted = 0;
    for s in listed.pods {
        let Some(r) = s.pod_ref else { continue };
        if !live.contains(&r.uid) {
            delete_orphan(ctx, r).await;
            deleted += 1;
        }
    }
    Ok(deleted)
}

async fn delete_orphan(ctx: &Context, r: pb::PodRef) {
    let uid = r.uid.clone();
    tracing::info!(pod = %format!("{}/{}", r.namespace, r.name), %uid, "deleting provider pod whose API object is gone");
    let req = DeletePodRequest {
        pod_ref: Some(r),
        grace_period_seconds: Some(0),
    };
    match ctx.provider.clone().delete_pod(req).await {
        Ok(_) => {
            lock(&ctx.view).pods.remove(&uid);
        }
        Err(err) => {
            tracing::warn!(error = %err.message(), %uid, "deleting an orphaned provider pod failed")
        }
    }
}

/// Keeps the pods-by-phase and backlog gauges current from the pod store.
async fn count_pods(ctx: Arc<Context>, store: Store<Pod>, shutdown: CancellationToken) {
    const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut counts: HashMap<&str, i64> = PHASES.iter().map(|p| (*p, 0)).collect();
        let mut backlog = 0;
        let mut queued = 0;
        let mut reconciled = lock(&ctx.reconciled);
        let pods = store.state();
        // Forget pods that left the store, so the map stays the store's size.
        let live: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        reconciled.retain(|uid, _| live.contains(uid));
        for pod in &pods {
            let done = pod.uid().and_then(|u| reconciled.get(&u).cloned());
            if done.is_none() || done != pod.resource_version() {
                queued += 1;
            }
        }
        drop(reconciled);
        let view = lock(&ctx.view);
        for pod in &pods {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let phase = PHASES
                .iter()
                .find(|p| Some(**p) == phase)
                .copied()
                .unwrap_or("Pending");
            *counts.entry(phase).or_default() += 1;
            let known = pod.uid().is_some_and(|u| view.pods.contains_key(&u));
            if !known
                && !status::is_terminal(Some(phase))
                && pod.metadata.deletion_timestamp.is_none()
            {
                backlog += 1;
            }
        }
        drop(view);
        for (phase, n) in counts {
            ctx.metrics
                .pods
                .get_or_create(&crate::metrics::PhaseLabels {
                    phase: phase.to_owned(),
                })
                .set(n);
        }
        ctx.metrics.backlog.set(backlog);
        ctx.metrics.queue_depth.set(queued);
    }
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
                    delete_orphan(&ctx, resolve::pod_ref(&pod)).await;
                }
            }
        });

    let provider_watch = watch_provider(ctx.clone(), store.clone(), trigger_tx, shutdown.clone());

    let sweeper = {
        let ctx = ctx.clone();
        let store = store.clone();
        let shutdown = shutdown.clone();
        async move {
            if store.wait_until_ready().await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(ctx.cfg.resync_period);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if !lock(&ctx.view).synced {
                    continue;
                }
                match sweep(&ctx, &store).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "swept orphaned provider pods"),
                    Err(err) => tracing::warn!(%err, "sweep failed"),
                }
            }
        }
    };

    let (ctx_for_gauges, store_for_gauges) = (ctx.clone(), store.clone());
    let controller = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.cfg.workers))
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(
            trigger_rx,
        ))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});

    let deletes = async {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = deletes => tracing::warn!("pod delete watch ended"),
        }
    };
    let gauges = count_pods(ctx_for_gauges, store_for_gauges, shutdown.clone());
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
