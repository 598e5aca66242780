//! The pods-by-phase, backlog and queue-depth gauges, recomputed from the pod store.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{ResourceExt, runtime::reflector::Store};
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::status;

/// Keeps the pods-by-phase and backlog gauges current from the pod store.
pub(super) async fn count_pods(ctx: Arc<Context>, store: Store<Pod>, shutdown: CancellationToken) {
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
        let mut reconciled = ctx.reconciled.lock();
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
        let view = ctx.view.lock();
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
