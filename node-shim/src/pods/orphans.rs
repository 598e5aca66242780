//! Garbage collection: provider pods whose API object is gone (force-deleted, or deleted while the
//! shim was down) are deleted from the provider.

use std::{collections::HashSet, sync::Arc};

use k8s_openapi::api::core::v1::Pod;
use kube::{ResourceExt, runtime::reflector::Store};
use podprovider_proto::v1::{self as pb, DeletePodRequest};
use tokio_util::sync::CancellationToken;

use super::{Context, view::ProviderView};

/// Sweeps every resync period, once the pod store and the provider view have synced.
pub(super) async fn sweep_periodically(
    ctx: Arc<Context>,
    store: Store<Pod>,
    shutdown: CancellationToken,
) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(ctx.cfg.resync_period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !ctx.view.lock().synced {
            continue;
        }
        match sweep(&ctx, &store).await {
            0 => {}
            n => tracing::info!(deleted = n, "swept orphaned provider pods"),
        }
    }
}

/// Deletes provider pods whose Kubernetes object no longer exists (force-deleted, or deleted while
/// the shim was down). Only runs once the pod store and the provider view have synced, so nothing
/// is deleted by mistake. The provider view (kept from WatchPods) is what the provider has: listing
/// it again with ListPods would cost one message with every pod's status (17 MB at 10,000 pods).
async fn sweep(ctx: &Context, store: &Store<Pod>) -> usize {
    let live: HashSet<String> = store.state().iter().filter_map(|p| p.uid()).collect();
    let orphans = orphans(&ctx.view.lock(), &live);
    let deleted = orphans.len();
    for r in orphans {
        delete_orphan(ctx, r).await;
    }
    deleted
}

/// The provider's pods, as the view has them, whose UID is not in `live`.
fn orphans(view: &ProviderView, live: &HashSet<String>) -> Vec<pb::PodRef> {
    view.pods
        .iter()
        .filter(|(uid, known)| !known.gone && !live.contains(*uid))
        .filter_map(|(_, known)| known.status.as_ref()?.pod_ref.clone())
        .collect()
}

pub(super) async fn delete_orphan(ctx: &Context, r: pb::PodRef) {
    let uid = r.uid.clone();
    tracing::info!(pod = %format!("{}/{}", r.namespace, r.name), %uid, "deleting provider pod whose API object is gone");
    let req = DeletePodRequest {
        pod_ref: Some(r),
        grace_period_seconds: Some(0),
    };
    match ctx.provider.clone().delete_pod(req).await {
        Ok(_) => {
            ctx.view.lock().pods.remove(&uid);
        }
        Err(err) => {
            tracing::warn!(error = %err.message(), %uid, "deleting an orphaned provider pod failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::view::Known;

    fn known(uid: &str, gone: bool) -> (String, Known) {
        let status = pb::PodStatus {
            pod_ref: Some(pb::PodRef {
                namespace: "default".into(),
                name: format!("pod-{uid}"),
                uid: uid.into(),
            }),
            ..Default::default()
        };
        let k = Known {
            status: Some(status),
            gone,
            ..Default::default()
        };
        (uid.to_owned(), k)
    }

    #[test]
    fn orphans_are_the_provider_pods_without_an_api_object() {
        let view = ProviderView {
            synced: true,
            epoch: 1,
            pods: [
                known("live", false),
                known("orphan", false),
                known("gone", true),
            ]
            .into_iter()
            .collect(),
        };
        let live: HashSet<String> = ["live".to_owned()].into_iter().collect();
        let found: Vec<String> = orphans(&view, &live).into_iter().map(|r| r.uid).collect();
        assert_eq!(found, ["orphan"]);
    }
}
