//! Calls tests make to a provider: one at a time, answered as the test needs them, and in bulk,
//! a few at a time as a busy shim would.

use anyhow::ensure;
use futures::{StreamExt, stream};
use podprovider_proto::v1::{
    CreatePodRequest, DeletePodRequest, ExecRequest, ExecStart, GetPodRequest, GetStatsRequest,
    PingRequest, PingResponse, Pod, PodRef, PodStats, PodStatus, WatchPodsEvent, WatchPodsRequest,
    exec_request, pod_provider_client::PodProviderClient,
};
use tonic::{Streaming, transport::Channel};

/// A PodProvider client over a plaintext channel, as the tests hold one.
pub type Client = PodProviderClient<Channel>;

/// Connects to the provider listening at `addr` (`host:port`, plaintext).
pub async fn connect(addr: &str) -> anyhow::Result<Client> {
    Ok(PodProviderClient::connect(format!("http://{addr}")).await?)
}

/// The provider's Ping answer for `node`.
pub async fn ping(c: &Client, node: &str) -> anyhow::Result<PingResponse> {
    let req = PingRequest {
        node_name: node.to_owned(),
    };
    Ok(c.clone().ping(req).await?.into_inner())
}

/// The provider's GetPod status of the pod of `pod_ref`.
pub async fn status(c: &Client, pod_ref: Option<PodRef>) -> anyhow::Result<PodStatus> {
    let answer = c.clone().get_pod(GetPodRequest { pod_ref }).await?;
    answer
        .into_inner()
        .status
        .ok_or_else(|| anyhow::anyhow!("GetPod without a status"))
}

/// How long [`status_until`] waits: generous, for emulator- and moto-backed conditions.
pub const STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Asks GetPod for the pod of `pod_ref` until its status satisfies `until` (at most
/// [`STATUS_WAIT`], then fails naming `what`); returns that status.
pub async fn status_until(
    c: &Client,
    pod_ref: &Option<PodRef>,
    what: &str,
    until: impl Fn(&PodStatus) -> bool,
) -> anyhow::Result<PodStatus> {
    crate::wait::eventually(STATUS_WAIT, what, || async {
        let s = status(c, pod_ref.clone()).await?;
        Ok(until(&s).then_some(s))
    })
    .await
}

/// The provider's WatchPods stream for `node`.
pub async fn watch(c: &Client, node: &str) -> anyhow::Result<Streaming<WatchPodsEvent>> {
    let req = WatchPodsRequest {
        node_name: node.to_owned(),
    };
    Ok(c.clone().watch_pods(req).await?.into_inner())
}

/// The provider's GetStats figures of every running pod of `node`.
pub async fn stats(c: &Client, node: &str) -> anyhow::Result<Vec<PodStats>> {
    let req = GetStatsRequest {
        node_name: node.to_owned(),
        pods: Vec::new(),
    };
    Ok(c.clone().get_stats(req).await?.into_inner().pods)
}

/// The first message of an Exec: `command` in `container` of the pod of `pod_ref`, with stdin,
/// stdout and stderr, no TTY.
pub fn exec_start(pod_ref: PodRef, container: &str, command: &[&str]) -> ExecRequest {
    ExecRequest {
        request: Some(exec_request::Request::Start(ExecStart {
            pod_ref: Some(pod_ref),
            container: container.to_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        })),
    }
}

/// Deletes the pod of `pod_ref` with `grace` (`None`: the pod's own); whether the provider
/// found it.
pub async fn delete(
    c: &Client,
    pod_ref: Option<PodRef>,
    grace: Option<i64>,
) -> anyhow::Result<bool> {
    let req = DeletePodRequest {
        pod_ref,
        grace_period_seconds: grace,
    };
    Ok(c.clone().delete_pod(req).await?.into_inner().found)
}

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

/// Checks a provider's first answer after a restart: ListPods of `node` has all `n` pods,
/// Running (its state is rebuilt before it serves); then creates `retried` again, as the shim
/// retries a create whose answer was lost.
pub async fn check_rebuilt_then_create(
    c: &Client,
    node: &str,
    n: usize,
    retried: Pod,
) -> anyhow::Result<()> {
    let pods = listed(c, node).await?;
    ensure!(pods.len() == n, "{} pods after restart", pods.len());
    ensure!(
        pods.iter()
            .all(|p| p.phase == podprovider_proto::v1::PodPhase::Running as i32),
        "{pods:?}"
    );
    c.clone()
        .create_pod(CreatePodRequest { pod: Some(retried) })
        .await?;
    Ok(())
}

/// Waits (at most `timeout`) until ListPods of `node` is empty: every deleted pod gone.
pub async fn wait_none_listed(
    c: &Client,
    node: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    crate::wait::eventually(timeout, "all pods gone", || async {
        Ok(listed(c, node).await?.is_empty().then_some(()))
    })
    .await
}
