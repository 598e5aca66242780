//! Benchmark: N pods bound to the virtual node through the real API server, to Running, with the
//! test provider answering at once. Prints, from the same run and the same API server:
//! - the ceiling: pod create + status patch per second from a plain client;
//! - pods/s through the shim (first create → last Running seen);
//! - p50/p99 latency from create (bound at creation) to Running seen on a watch;
//! - the shim's peak RSS.
//!
//! `cargo bench -p node-shim --bench pods_to_running -- [PODS]` (default 1000).

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use provider_common::ListenAddr;
use tokio::process::Command;
use vk_testkit::{
    ControlPlane, ports::free_port, process::ManagedProcess, test_provider::Control,
    wait::eventually,
};

const CONCURRENCY: usize = 64;

fn pod(name: &str, node: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "1"}},
        "spec": {"nodeName": node, "automountServiceAccountToken": false,
                 "containers": [{"name": "c", "image": "nginx"}]}
    }))?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest-rank percentile; the index is within bounds by construction.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[allow(clippy::cast_precision_loss)]
fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Ceiling: a plain client creating pods bound to a node nobody serves, and patching status.
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let name = format!("ceiling-{i}");
                pods.create(&PostParams::default(), &pod(&name, "nobody")?)
                    .await?;
                let status =
                    serde_json::json!({"status": {"phase": "Running", "podIP": "10.1.0.1"}});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let ceiling = rate(n, started.elapsed());
    pods.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
        &ListParams::default(),
    )
    .await?;
    eventually(Duration::from_secs(120), "ceiling pods gone", || async {
        Ok(pods
            .list(&ListParams::default().limit(1))
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await?;

    // The shim with an instant provider.
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("bench.sock");
    let control = Control::new();
    let _server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let node = "vk-bench";
    let mut shim = ManagedProcess::spawn(
        "node-shim",
        Command::new(Path::new(env!("CARGO_BIN_EXE_node-shim")))
            .arg(format!("--node-name={node}"))
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg(format!("--provider-endpoint=unix:{}", socket.display()))
            .arg(format!("--kubelet-port={}", free_port()?))
            .arg("--metrics-address=off")
            .env("RUST_LOG", "warn"),
        dir.path(),
    )?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    eventually(Duration::from_secs(60), "node registered", || async {
        Ok(nodes.get_opt(node).await?)
    })
    .await?;

    // Watch for Running before creating anything, so no transition is missed.
    let running_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = running_at.clone();
    let watch = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default().labels("bench=1"))
            .applied_objects()
            .for_each(move |pod| {
                let seen = seen.clone();
                async move {
                    if let Ok(p) = pod
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && let Some(name) = p.metadata.name
                    {
                        let mut seen = seen
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        seen.entry(name).or_insert_with(Instant::now);
                    }
                }
            }),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let created_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            let created_at = created_at.clone();
            async move {
                let name = format!("bench-{i}");
                let t = Instant::now();
                pods.create(&PostParams::default(), &pod(&name, node)?)
                    .await?;
                created_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(name, t);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    eventually(
        Duration::from_secs(600),
        &format!("{n} pods Running"),
        || async {
            let len = running_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len();
            Ok((len >= n).then_some(()))
        },
    )
    .await?;
    watch.abort();

    let running = running_at
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let created = created_at
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let last = running.values().max().copied().unwrap_or(start);
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, t)| running.get(name).map(|r| r.saturating_duration_since(*t)))
        .collect();
    latencies.sort();
    let rss = shim.pid().and_then(peak_rss_mb);

    println!("pods:                                   {n}");
    println!("ceiling (plain client create+status):   {ceiling:.0} pods/s");
    println!(
        "through the shim (create → Running):    {:.0} pods/s",
        rate(n, last.duration_since(start))
    );
    println!(
        "latency create → Running  p50:          {:?}",
        percentile(&latencies, 50.0)
    );
    println!(
        "latency create → Running  p99:          {:?}",
        percentile(&latencies, 99.0)
    );
    println!(
        "shim peak RSS:                          {}",
        rss.map_or("unknown".into(), |m| format!("{m:.1} MB"))
    );
    println!(
        "provider CreatePod calls:               {}",
        control.calls(vk_testkit::test_provider::rpc::CREATE)
    );
    shim.stop(Duration::from_secs(10)).await?;
    cp.stop().await
}
