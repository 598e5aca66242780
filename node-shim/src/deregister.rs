//! `--deregister`: the virtual node leaves the cluster without leaking cloud workloads (the
//! chart's pre-delete hook). As `kubectl drain` then a Node delete: the Node is cordoned, every
//! pod bound to it deleted with its own grace period (the still-running shim stops each cloud
//! workload and removes the pod, as for any deletion), the shim's Deployment scaled to zero so it
//! cannot register the Node again, and the Node deleted (the Lease, owned by the Node, goes with
//! it through garbage collection).

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::config::Config;

/// Deregistration failed or timed out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--deregister-deployment` is missing or not `NAMESPACE/NAME`.
    #[error("--deregister needs --deregister-deployment=NAMESPACE/NAME, got {0:?}")]
    Deployment(Option<String>),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Something did not happen within `--deregister-timeout`.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline.
        timeout: Duration,
    },
}

/// Runs the deregistration with `client` (the hook's ServiceAccount).
pub async fn run(client: Client, cfg: &Config) -> Result<(), Error> {
    let (namespace, deployment) = cfg
        .deregister_deployment
        .as_deref()
        .and_then(|d| d.split_once('/'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .ok_or_else(|| Error::Deployment(cfg.deregister_deployment.clone()))?;
    let node_name = cfg.node_name.as_str();
    let deadline = tokio::time::Instant::now() + cfg.deregister_timeout;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());

    if nodes.get_opt(node_name).await?.is_none() {
        tracing::info!(node = %node_name, "no such Node; stopping the shim only");
    } else {
        nodes
            .patch(
                node_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await?;
        tracing::info!(node = %node_name, "cordoned; deleting its pods");
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node_name}"));
        for pod in pods.list(&on_node).await? {
            let (Some(ns), Some(name)) = (pod.metadata.namespace, pod.metadata.name) else {
                continue;
            };
            match Api::<Pod>::namespaced(client.clone(), &ns)
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "deleting"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
        }
        wait(
            deadline,
            cfg.deregister_timeout,
            "the node's pods to be gone",
            || async { Ok(pods.list(&on_node.clone().limit(1)).await?.items.is_empty()) },
        )
        .await?;
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    deployments
        .patch_scale(
            deployment,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await?;
    tracing::info!(%deployment, "shim scaled to zero; waiting for its pod to stop");
    let selector = deployments
        .get(deployment)
        .await?
        .spec
        .selector
        .match_labels
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let shim_pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait(
        deadline,
        cfg.deregister_timeout,
        "the shim's pod to stop",
        || async {
            // This hook's own pod carries the release's labels too: only the Deployment's count.
            Ok(!shim_pods
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .iter()
                .any(|p| {
                    p.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.kind == "ReplicaSet")
                }))
        },
    )
    .await?;

    match nodes.delete(node_name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(node = %node_name, "Node deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

async fn wait<F, Fut>(
    deadline: tokio::time::Instant,
    timeout: Duration,
    what: &str,
    done: F,
) -> Result<(), Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>>,
{
    loop {
        if done().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
