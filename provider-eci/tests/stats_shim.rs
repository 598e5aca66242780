//! `kubectl top`'s data path end to end: a pod on a virtual node backed by `provider-eci` against
//! the ECI emulator; the figures of DescribeMultiContainerGroupMetric reach the kubelet endpoints
//! the API server proxies (`kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary` and
//! `/metrics/resource`), which is what metrics-server reads. metrics-server itself is not
//! installed here.
//!
//! Needs the `node-shim` and `eci-emulator` binaries in the same target directory
//! (`cargo build -p node-shim -p eci-emulator`).

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use support::start_with_emulator;
use vk_testkit::{
    ControlPlane,
    eci_emulator::EciEmulatorOptions,
    shim::{self, measured_pod, metric_line, node_proxy, spawn_shim_with_kubelet_api, summary_of},
    wait,
};

const NODE: &str = "vk-eci-stats";
const SLOW: Duration = Duration::from_secs(120);

#[tokio::test]
async fn stats_summary_and_metrics_resource_carry_eci_metrics() -> anyhow::Result<()> {
    let dir = shim::prepare()?;
    let opts = EciEmulatorOptions::default();
    let (_emu, provider, _, addr) = start_with_emulator(dir.path(), opts).await?;
    let cp = ControlPlane::start().await?;
    let shim = spawn_shim_with_kubelet_api(&cp, dir.path(), NODE, &addr, &[])?;
    let result = scenario(&cp).await;
    vk_testkit::process::with_logs(result, &[&shim, &provider])
}

async fn scenario(cp: &ControlPlane) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, "default");
    let pod = measured_pod(NODE, "measured", "500m", "1Gi")?;
    pods.create(&PostParams::default(), &pod).await?;
    wait::pod_phase(&pods, "measured", "Running", SLOW).await?;
    // The emulator's figures: 10 % of the container's 0.5 vCPU, a quarter of its 1 GiB.
    let pod = summary_of(cp, NODE, "measured")?;
    let app = &pod["containers"][0];
    ensure!(app["name"] == "app", "{pod}");
    ensure!(app["cpu"]["usageNanoCores"] == 50_000_000, "{app}");
    ensure!(app["memory"]["workingSetBytes"] == 256 << 20, "{app}");
    ensure!(pod["cpu"]["usageNanoCores"] == 50_000_000, "{pod}");
    ensure!(pod["memory"]["workingSetBytes"] == 256 << 20, "{pod}");
    let metrics = node_proxy(cp, NODE, "/metrics/resource")?;
    let mem = metric_line(
        &metrics,
        "container_memory_working_set_bytes",
        "measured",
        "app",
    )
    .with_context(|| metrics.clone())?;
    ensure!(
        mem.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
            == Some(f64::from(256_u32 << 20)),
        "{mem}"
    );
    Ok(())
}
