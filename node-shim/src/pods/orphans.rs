//! Garbage collection: provider pods whose API object is gone (force-deleted, or deleted while the
//! shim was down) are deleted from the provider.

use std::{collections::HashSet, sync::Arc};

use k8s_openapi::api::core::v1::Pod;
use kube::{ResourceExt, runtime::reflector::Store};
use podprovider_proto::v1::{self as pb, DeletePodRequest, ListPodsRequest};
use tokio_util::sync::CancellationToken;

use super::{Context, Error};

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
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "swept orphaned provider pods"),
            Err(err) => tracing::warn!(%err, "sweep failed"),
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
