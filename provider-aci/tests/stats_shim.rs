//! Through kubectl, the API server and a real `node-shim`, on one running pod:
//! - usage figures from Azure Monitor (Metrics - List of `CpuUsage` and `MemoryUsage` per
//!   container, as the emulator implements it from the REST reference): the figures set for the
//!   pod's group come back from GetStats, and at the kubelet endpoint the API server proxies
//!   (`kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary` and `/metrics/resource`),
//!   which metrics-server (and so `kubectl top`) reads. metrics-server itself is not installed
//!   here;
//! - `echo x | kubectl exec -i measured -- sh -c 'cat; exit 3'` prints `x` and exits 3 within
//!   seconds; `kubectl attach` shows the container's output.
//!
//! Needs the `node-shim` binary in the same target directory (`cargo build -p node-shim`).

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use podprovider_proto::{PodProviderClient, v1::GetStatsRequest};
use serde_json::json;
use support::*;
use vk_testkit::{
    ControlPlane,
    aci_emulator::{AciEmulator, AciEmulatorOptions},
    shim::{
        measured_pod, metric_line, node_proxy, shim_bin, spawn_shim_with_kubelet_api, summary_of,
    },
    wait::{self, eventually},
};

const SHIM_NODE: &str = "vk-aci-stats";
const SLOW: Duration = Duration::from_secs(120);
/// Figures set in the emulator: 250 millicores, 48 MiB.
const MILLICORES: f64 = 250.0;
const MEMORY: u64 = 48 << 20;

#[tokio::test]
async fn stats_summary_and_kubectl_exec_and_attach_through_the_shim() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    shim_bin()?; // fail before starting anything
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let cp = ControlPlane::start().await?;
    let shim = spawn_shim_with_kubelet_api(&cp, dir.path(), SHIM_NODE, &addr, &[])?;
    let result = scenario(&cp, &emu, &addr).await;
    vk_testkit::process::with_logs(result, &[&shim, &provider])
}

async fn scenario(cp: &ControlPlane, emu: &AciEmulator, addr: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, "default");
    let pod = measured_pod(SHIM_NODE, "measured", "250m", "256Mi")?;
    pods.create(&PostParams::default(), &pod).await?;
    // The group's figures, set as soon as it exists (answers are reused for 30 s).
    let group = eventually(SLOW, "the pod's group", || async {
        Ok(emu.live_groups().await?.into_iter().next().map(|g| g.name))
    })
    .await?;
    let status = admin_put(
        emu,
        &format!("/_emulator/groups/{group}/metrics"),
        &json!({"app": {"cpu_millicores": MILLICORES, "memory_bytes": MEMORY}}),
    )
    .await?;
    ensure!(status == 204, "metrics knob: {status}");
    wait::pod_phase(&pods, "measured", "Running", SLOW).await?;

    // GetStats straight from the provider.
    let mut c = PodProviderClient::connect(format!("http://{addr}")).await?;
    let stats = c
        .get_stats(GetStatsRequest {
            node_name: SHIM_NODE.into(),
            pods: vec![],
        })
        .await?
        .into_inner();
    let p = stats.pods.first().context("no pod in GetStats")?;
    ensure!(
        p.cpu.and_then(|c| c.usage_nano_cores) == Some(250_000_000),
        "{p:?}"
    );
    ensure!(
        p.memory.and_then(|m| m.working_set_bytes) == Some(MEMORY),
        "{p:?}"
    );
    let app = p.containers.first().context("no container stats")?;
    ensure!(app.name == "app", "{app:?}");
    // CPU time: 250 millicores for each minute with a figure (15 core-seconds a minute).
    let used = app
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .context("no CPU time")?;
    ensure!(
        used > 0 && used % 15_000_000_000 == 0,
        "CPU time {used} is not whole minutes at 0.25 core"
    );

    // Through the shim's kubelet endpoint, as metrics-server reads it.
    let pod = summary_of(cp, SHIM_NODE, "measured")?;
    let app = &pod["containers"][0];
    ensure!(app["name"] == "app", "{pod}");
    ensure!(app["cpu"]["usageNanoCores"] == 250_000_000, "{app}");
    ensure!(app["memory"]["workingSetBytes"] == MEMORY, "{app}");
    ensure!(pod["cpu"]["usageNanoCores"] == 250_000_000, "{pod}");
    ensure!(pod["memory"]["workingSetBytes"] == MEMORY, "{pod}");
    ensure!(
        app["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .is_some_and(|n| n > 0 && n % 15_000_000_000 == 0),
        "{app}"
    );

    // /metrics/resource, metrics-server's source: the CPU counter and the working set.
    let metrics = node_proxy(cp, SHIM_NODE, "/metrics/resource")?;
    let value = |family: &str| {
        metric_line(&metrics, family, "measured", "app")
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let cpu_seconds =
        value("container_cpu_usage_seconds_total").with_context(|| metrics.clone())?;
    ensure!(
        cpu_seconds > 0.0 && (cpu_seconds % 15.0).abs() < 1e-6,
        "CPU seconds {cpu_seconds}: whole minutes at 0.25 core"
    );
    ensure!(
        value("container_memory_working_set_bytes") == Some(MEMORY as f64),
        "{metrics}"
    );

    // echo x | kubectl exec -i measured -- sh -c 'cat; exit 3'
    let started = std::time::Instant::now();
    let (code, out, err) = kubectl_with_stdin(
        cp,
        &["exec", "-i", "measured", "--", "sh", "-c", "cat; exit 3"],
        b"x\n",
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        code == Some(3) && out == "x\n",
        "kubectl exec: code {code:?}, stdout {out:?}, stderr {err:?}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "kubectl exec took {:?}",
        started.elapsed()
    );

    // kubectl attach (output only): the container's heartbeat lines, until we stop it.
    let (_, out, err) = kubectl_with_stdin(
        cp,
        &["attach", "measured", "-c", "app"],
        b"",
        Duration::from_secs(5),
    )
    .await?;
    ensure!(
        out.contains("heartbeat"),
        "kubectl attach: stdout {out:?}, stderr {err:?}"
    );
    Ok(())
}

/// Runs kubectl with `stdin` written and closed; stopped after `limit`. (exit code, stdout,
/// stderr); the code is `None` when it had to be stopped.
async fn kubectl_with_stdin(
    cp: &ControlPlane,
    args: &[&str],
    stdin: &[u8],
    limit: Duration,
) -> anyhow::Result<(Option<i32>, String, String)> {
    use std::{io::Write, process::Stdio};
    let mut child = cp
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin)?;
    }
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + limit;
        let mut stopped = false;
        while child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                child.kill()?;
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output()?;
        let code = if stopped { None } else { out.status.code() };
        anyhow::Ok((
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    })
    .await?
}
