//! Polling for a condition with a deadline (the API server is eventually consistent by nature).

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Calls `check` every 100 ms until it returns `Ok(Some(value))`, and returns the value. Fails
/// after `timeout` with `what` and the last error or "condition not met".
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Like [`eventually`], but for checks that list from the API server or a cloud: it waits 400 ms
/// before each check, so a slow condition does not hammer either.
pub async fn slowly<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    eventually(timeout, what, || {
        let fut = check();
        async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            fut.await
        }
    })
    .await
}

/// A pod the kubelet would call up: phase Running, a pod IP, and the Ready condition True.
pub fn running_and_ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    let s = p.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        && s.and_then(|s| s.pod_ip.as_deref())
            .is_some_and(|ip| !ip.is_empty())
        && s.and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits up to 60 s until every node in `names` is Ready; fails at once if one of `shims` exits.
pub async fn nodes_ready(
    nodes: &kube::Api<k8s_openapi::api::core::v1::Node>,
    names: &[&str],
    shims: &mut [&mut crate::process::ManagedProcess],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in names {
        loop {
            for shim in shims.iter_mut() {
                shim.ensure_running()?;
            }
            let ready = nodes.get_opt(name).await?.is_some_and(|n| {
                n.status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            if ready {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {name} not Ready after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Waits until pod `name` reports `phase`.
pub async fn pod_phase(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    phase: &str,
    timeout: Duration,
) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
    eventually(timeout, &format!("pod {name} {phase}"), || async {
        Ok(pods
            .get_opt(name)
            .await?
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase)))
    })
    .await
}

/// The node a pod is bound to ("" when none).
pub fn node_of(p: &k8s_openapi::api::core::v1::Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// A pod the shim failed because the provider refused it (INVALID_ARGUMENT): a finding, reported
/// at once instead of after the deadline.
pub fn provider_failure(pods: &[k8s_openapi::api::core::v1::Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        let s = p.status.as_ref()?;
        (s.reason.as_deref() == Some("ProviderFailed")).then(|| {
            format!(
                "pod {} failed with ProviderFailed: {}",
                p.metadata.name.as_deref().unwrap_or_default(),
                s.message.as_deref().unwrap_or_default()
            )
        })
    })
}
