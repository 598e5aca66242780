//! Calls tests make to a provider in bulk, a few at a time as a busy shim would.

use anyhow::ensure;
use futures::{StreamExt, stream};
use podprovider_proto::v1::{
    CreatePodRequest, DeletePodRequest, Pod, PodRef, pod_provider_client::PodProviderClient,
};
use tonic::transport::Channel;

/// How many calls are in flight at once.
const CONCURRENCY: usize = 8;

/// Creates every pod, up to eight at a time; fails with the first error.
pub async fn create_all(
    c: &PodProviderClient<Channel>,
    pods: impl IntoIterator<Item = Pod>,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(pods)
        .map(|p| {
            let mut c = c.clone();
            async move {
                c.create_pod(CreatePodRequest { pod: Some(p) }).await?;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Deletes every pod (default grace), up to eight at a time; each must be found.
pub async fn delete_all(
    c: &PodProviderClient<Channel>,
    refs: impl IntoIterator<Item = PodRef>,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(refs)
        .map(|r| {
            let mut c = c.clone();
            async move {
                let name = r.name.clone();
                let found = c
                    .delete_pod(DeletePodRequest {
                        pod_ref: Some(r),
                        grace_period_seconds: None,
                    })
                    .await?
                    .into_inner()
                    .found;
                ensure!(found, "delete {name}: not found");
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The provider's ListPods answer for `node`.
pub async fn listed(
    c: &PodProviderClient<Channel>,
    node: &str,
) -> anyhow::Result<Vec<podprovider_proto::v1::PodStatus>> {
    Ok(c.clone()
        .list_pods(podprovider_proto::v1::ListPodsRequest {
            node_name: node.to_owned(),
        })
        .await?
        .into_inner()
        .pods)
}
