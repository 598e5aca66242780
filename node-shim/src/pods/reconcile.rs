//! Carrying out a reconcile: [`reconcile`] asks [`decide`] what to do with
//! one pod and does it — create it in the provider, mirror its status and follow spec changes,
//! fail it, or delete it from the provider and then from the API server.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use futures::FutureExt;
use k8s_openapi::{
    api::core::v1::{Pod, Service},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Preconditions},
    runtime::{controller::Action, reflector::ObjectRef},
};
use podprovider_proto::v1::{CreatePodRequest, DeletePodRequest, UpdatePodRequest};
use tonic::Code;
use tracing::{Instrument, field::Empty};

use super::{
    Context, Error,
    decide::{Deletion, Step, decide},
    view::Known,
};
use crate::{fields, resolve, status};

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
        ctx.reconciled.lock().insert(uid, rv);
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
    let uid = pod.uid().unwrap_or_default();
    let (synced, known) = ctx.known(&uid);
    let step = decide(&pod, synced, known.as_ref(), Timestamp::now());
    tracing::debug!(
        pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
        %uid,
        step = step.label(),
        "reconcile"
    );
    let result = match step {
        Step::WaitForProvider => return Ok(Action::requeue(Duration::from_millis(500))),
        Step::Delete(deletion) => {
            ctx.volumes.untrack(&uid);
            delete(&pod, ctx, &uid, deletion).await
        }
        Step::Finished => {
            ctx.volumes.untrack(&uid);
            Ok(Action::await_change())
        }
        Step::Lost => lost(&pod, ctx).await,
        Step::Create => create(&pod, ctx, &uid).await,
        Step::DeadlineExceeded => deadline_exceeded(&pod, ctx, &uid).await,
        Step::Follow { known, deadline } => follow(&pod, ctx, &uid, known, deadline).await,
    };
    if result.is_ok() {
        ctx.failures.lock().remove(&uid);
    }
    result
}

/// A pod running in the provider: its status is mirrored and its spec followed; the next run is
/// due at whichever comes first, a token refresh or the deadline.
async fn follow(
    pod: &Pod,
    ctx: &Context,
    uid: &str,
    known: &Known,
    deadline: Option<Duration>,
) -> Result<Action, Error> {
    for name in status::unreported_ephemeral(pod) {
        let note = format!("{name}: {}", status::EPHEMERAL_UNSUPPORTED);
        ctx.event(pod, true, "EphemeralContainerNotSupported", note, "Debug")
            .await;
    }
    if let Some(s) = &known.status {
        ctx.write_status(pod, status::to_kubernetes(pod, s, &ctx.host_ip))
            .await?;
    }
    let again = follow_spec(pod, ctx, uid, known).await?;
    Ok(match again.into_iter().chain(deadline).min() {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
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
                let mut view = ctx.view.lock();
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
pub(super) fn fingerprint(pod: &Pod) -> u64 {
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
    if let Some(entry) = ctx.view.lock().pods.get_mut(uid) {
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

const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// The kubelet's answer to an exceeded `activeDeadlineSeconds`: the workload is stopped (with the
/// pod's grace period), then the pod is Failed with reason `DeadlineExceeded`. Stopping first, so a
/// failed stop is retried rather than hidden behind a terminal phase.
async fn deadline_exceeded(pod: &Pod, ctx: &Context, uid: &str) -> Result<Action, Error> {
    let req = DeletePodRequest {
        pod_ref: Some(resolve::pod_ref(pod)),
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
    if let Some(entry) = ctx.view.lock().pods.get_mut(uid) {
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

/// A pod being deleted: the provider stops it (with the pod's grace period), its status is
/// mirrored until the provider reports it gone, then the API object is removed.
async fn delete(
    pod: &Pod,
    ctx: &Context,
    uid: &str,
    deletion: Deletion<'_>,
) -> Result<Action, Error> {
    match deletion {
        Deletion::StopInProvider => {
            let req = DeletePodRequest {
                pod_ref: Some(resolve::pod_ref(pod)),
                grace_period_seconds: pod.metadata.deletion_grace_period_seconds,
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
            {
                let mut view = ctx.view.lock();
                if let Some(entry) = view.pods.get_mut(uid) {
                    entry.delete_requested = true;
                    entry.gone |= !found;
                }
            }
            if found {
                // Re-run at once only when already gone; otherwise the watch stream will tell us.
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            finalize(pod, ctx, uid).await
        }
        Deletion::AwaitProvider { status: reported } => {
            if let Some(s) = reported {
                ctx.write_status(pod, status::to_kubernetes(pod, s, &ctx.host_ip))
                    .await?;
            }
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        Deletion::RemoveObject => finalize(pod, ctx, uid).await,
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
    ctx.view.lock().pods.remove(uid);
    Ok(Action::await_change())
}
