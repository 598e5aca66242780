//! Benchmark: N pods bound to the virtual node through the real API server, to Running, with the
//! test provider answering at once. Prints, from the same run and the same API server:
//! - the ceiling: pod create + status patch per second from a plain client;
//! - pods/s through the shim (first create → last Running seen);
//! - p50/p99 latency from create (bound at creation) to Running seen on a watch;
//! - the shim's peak RSS and CPU seconds (user + system) per 1,000 pods;
//! - with `--restart`: the shim restarted with N Running pods: CreatePod calls, pod status writes
//!   (new resourceVersions) and status PATCH requests (the API server's count, no-ops included),
//!   time to Node Ready and to every pod reconciled.
//!
//! ```text
//! cargo bench -p node-shim --bench pods_to_running -- [PODS] [--rate-of-ceiling F | --rate R]
//!     [--restart] [--json FILE] [--plots DIR]
//! ```
//! PODS defaults to 1000. Closed loop by default (64 creates in flight, as fast as the API server
//! takes them); `--rate-of-ceiling 0.5` or `--rate 300` creates pods at a fixed rate instead (open
//! loop), so the latency is what the shim adds rather than queueing. The figures are printed as a
//! table and as one JSON line (`--json` also writes it to a file); `--plots` draws PNG plots.

#[path = "support/plots.rs"]
mod plots;

use parking_lot::Mutex;
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use provider_common::ListenAddr;
use serde_json::json;
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, process::Command};
use vk_testkit::{
    ControlPlane, ports::free_port, process::ManagedProcess, prometheus, test_provider::Control,
    test_provider::rpc, wait::eventually,
};

/// Creates in flight in the closed loop (and in the ceiling run).
const CONCURRENCY: usize = 64;
/// How often the sampler reads the shim's resident set and the Running count.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Command-line options.
#[derive(Debug, Default)]
struct Options {
    pods: usize,
    /// Open loop at this many pods/s.
    rate: Option<f64>,
    /// Open loop at this share of the measured ceiling.
    rate_of_ceiling: Option<f64>,
    restart: bool,
    json: Option<PathBuf>,
    plots: Option<PathBuf>,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut o = Options {
            pods: 1000,
            ..Default::default()
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))
            };
            match a.as_str() {
                "--rate" => o.rate = Some(value("--rate")?.parse()?),
                "--rate-of-ceiling" => {
                    o.rate_of_ceiling = Some(value("--rate-of-ceiling")?.parse()?);
                }
                "--restart" => o.restart = true,
                "--json" => o.json = Some(value("--json")?.into()),
                "--plots" => o.plots = Some(value("--plots")?.into()),
                // cargo bench passes `--bench`.
                "--bench" => {}
                other => match other.parse() {
                    Ok(n) => o.pods = n,
                    Err(_) => anyhow::bail!("unknown argument {other:?}"),
                },
            }
        }
        Ok(o)
    }
}

fn pod(name: &str, node: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
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

/// A `/proc/<pid>/status` figure in MB (`VmHWM`: peak, `VmRSS`: now).
fn proc_status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// User + system CPU seconds of `pid` so far (`/proc/<pid>/stat` fields 14 and 15, in USER_HZ,
/// which Linux fixes at 100 for user space).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[allow(clippy::cast_precision_loss)]
fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

type Times = Arc<Mutex<HashMap<String, Instant>>>;

fn snapshot(t: &Times) -> HashMap<String, Instant> {
    t.lock().clone()
}

fn record(t: &Times, name: String, at: Instant) {
    t.lock().entry(name).or_insert(at);
}

/// The plain-client ceiling: creates `n` pods bound to a node nobody serves and patches each
/// one's status; returns pods/s and the API requests it took, after deleting them again.
async fn ceiling(
    cp: &ControlPlane,
    pods: &Api<Pod>,
    n: usize,
) -> anyhow::Result<(f64, BTreeMap<String, u64>)> {
    let requests_before = prometheus::api_requests_by_kind(cp)?;
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let name = format!("ceiling-{i}");
                pods.create(&PostParams::default(), &pod(&name, "nobody")?)
                    .await?;
                let status = json!({"status": {"phase": "Running", "podIP": "10.1.0.1"}});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let ceiling = rate(n, started.elapsed());
    let requests = since(&requests_before, prometheus::api_requests_by_kind(cp)?);
    // One DeleteCollection of 10,000 pods can outlast the API server's 60 s request timeout on a
    // busy machine; what it deleted stays deleted, so repeat until none is left.
    eventually(Duration::from_secs(600), "ceiling pods gone", || async {
        let delete = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        if let Err(e) = pods
            .delete_collection(&delete, &ListParams::default())
            .await
        {
            eprintln!("deleting the ceiling pods: {e} (repeating)");
        }
        Ok(pods
            .list(&ListParams::default().limit(1))
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok((ceiling, requests))
}

/// The requests of each kind in `now` that were not yet in `before`.
fn since(before: &BTreeMap<String, u64>, now: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.into_iter()
        .map(|(kind, n)| {
            let d = n.saturating_sub(before.get(&kind).copied().unwrap_or(0));
            (kind, d)
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}

fn spawn_shim(
    cp: &ControlPlane,
    node: &str,
    socket: &Path,
    metrics_port: u16,
    dir: &Path,
) -> anyhow::Result<ManagedProcess> {
    ManagedProcess::spawn(
        "node-shim",
        Command::new(Path::new(env!("CARGO_BIN_EXE_node-shim")))
            .arg(format!("--node-name={node}"))
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg(format!("--provider-endpoint=unix:{}", socket.display()))
            .arg(format!("--kubelet-port={}", free_port()?))
            .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"))
            // VK_BENCH_SHIM_LOG (e.g. `info`) to see where a run's time goes; the log is kept.
            .env(
                "RUST_LOG",
                std::env::var("VK_BENCH_SHIM_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        dir,
    )
}

/// Reconciles the shim has finished (every outcome), from its metrics.
async fn reconciles_done(metrics_port: u16) -> anyhow::Result<u64> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port)).await?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await?;
    let total = prometheus::sum(&body, "vk_reconcile_duration_seconds_count", &[]);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(total as u64)
}

/// Pod status PATCH requests the API server has answered, from its own metrics: unlike new
/// resourceVersions, these include patches that changed nothing.
fn status_patches(cp: &ControlPlane) -> anyhow::Result<u64> {
    prometheus::api_requests(cp, STATUS_PATCH)
}

/// Pod status patches, as [`prometheus::api_requests_by_kind`] names them.
const STATUS_PATCH: &str = "PATCH pods/status";

/// What the restart measured.
struct Restart {
    create_calls: usize,
    status_writes: usize,
    /// Status PATCH requests the API server answered, no-ops included.
    status_patches: u64,
    node_ready: Duration,
    all_reconciled: Duration,
}

/// Stops the shim with `n` Running pods, starts it again, and measures what the new one does.
#[allow(clippy::too_many_arguments)]
async fn restart(
    cp: &ControlPlane,
    shim: &mut ManagedProcess,
    control: &Control,
    spawn: impl Fn() -> anyhow::Result<ManagedProcess>,
    metrics_port: u16,
    pods: &Api<Pod>,
    node: &str,
    n: usize,
) -> anyhow::Result<Restart> {
    let client = cp.client().await?;
    let nodes: Api<Node> = Api::all(client);
    shim.stop(Duration::from_secs(30)).await?;
    control.reset_calls();
    // Every write to a bench pod from now on shows as a new resourceVersion on this watch.
    let baseline: HashMap<String, String> = pods
        .list(&ListParams::default().labels("bench=1"))
        .await?
        .items
        .into_iter()
        .filter_map(|p| Some((p.metadata.name?, p.metadata.resource_version?)))
        .collect();
    let writes = Arc::new(Mutex::new(0usize));
    let seen = writes.clone();
    let rv = watcher::Config::default().labels("bench=1");
    let watch = tokio::spawn(
        watcher(pods.clone(), rv)
            .applied_objects()
            .for_each(move |p| {
                let seen = seen.clone();
                let changed = p.ok().is_some_and(|p| {
                    let name = p.metadata.name.unwrap_or_default();
                    baseline.get(&name) != p.metadata.resource_version.as_ref()
                });
                async move {
                    if changed {
                        *seen.lock() += 1;
                    }
                }
            }),
    );
    // Heartbeats have second granularity: wait for one strictly after the restart.
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let patches_before = status_patches(cp)?;
    let started = Instant::now();
    *shim = spawn()?;
    let mut node_ready = None;
    let mut all_reconciled = None;
    while node_ready.is_none() || all_reconciled.is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "restart did not settle in 300 s"
        );
        if node_ready.is_none()
            && let Some(n) = nodes.get_opt(node).await?
            && let Some(ready) = n
                .status
                .and_then(|s| s.conditions)
                .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
            && ready.status == "True"
            && ready
                .last_heartbeat_time
                .is_some_and(|t| t.0.as_second() > i64::try_from(wall).unwrap_or(i64::MAX))
        {
            node_ready = Some(started.elapsed());
        }
        if all_reconciled.is_none()
            && reconciles_done(metrics_port)
                .await
                .is_ok_and(|d| d >= n as u64)
        {
            all_reconciled = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Late writes count too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    watch.abort();
    let status_writes = *writes.lock();
    Ok(Restart {
        create_calls: control.calls(rpc::CREATE),
        status_writes,
        status_patches: status_patches(cp)? - patches_before,
        node_ready: node_ready.unwrap_or_default(),
        all_reconciled: all_reconciled.unwrap_or_default(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Options::parse()?;
    let n = opts.pods;
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let (ceiling, ceiling_requests) = ceiling(&cp, &pods, n).await?;
    let open_rate = opts
        .rate
        .or(opts.rate_of_ceiling.map(|f| f * ceiling))
        .filter(|r| *r > 0.0);

    // The shim with an instant provider.
    let mut dir = tempfile::tempdir()?;
    if std::env::var_os("VK_BENCH_SHIM_LOG").is_some() {
        dir.disable_cleanup(true);
        eprintln!("shim log: {}", dir.path().join("node-shim.log").display());
    }
    let socket = dir.path().join("bench.sock");
    let control = Control::new();
    let _server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let node = "vk-bench";
    let metrics_port = free_port()?;
    let spawn = || spawn_shim(&cp, node, &socket, metrics_port, dir.path());
    let mut shim = spawn()?;
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(Duration::from_secs(60), "node registered", || async {
        Ok(nodes.get_opt(node).await?)
    })
    .await?;
    let pid = shim.pid().ok_or_else(|| anyhow::anyhow!("shim exited"))?;
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let requests_before = prometheus::api_requests_by_kind(&cp)?;

    // Watch for Running before creating anything, so no transition is missed. Every write to a
    // pod is one watch event: the events after the first (the create) are the shim's writes.
    let running_at: Times = Arc::default();
    let versions: Arc<Mutex<usize>> = Arc::default();
    let (seen, seen_versions) = (running_at.clone(), versions.clone());
    let watch = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default().labels("bench=1"))
            .applied_objects()
            .for_each(move |pod| {
                let (seen, seen_versions) = (seen.clone(), seen_versions.clone());
                async move {
                    let Ok(p) = pod else { return };
                    *seen_versions.lock() += 1;
                    if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && let Some(name) = p.metadata.name
                    {
                        record(&seen, name, Instant::now());
                    }
                }
            }),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Resident set and Running count over time, for the RSS-over-pods plot.
    let samples: Arc<Mutex<Vec<(f64, usize, f64)>>> = Arc::default();
    let start = Instant::now();
    let sampler = {
        let (samples, running_at) = (samples.clone(), running_at.clone());
        tokio::spawn(async move {
            loop {
                let running = running_at.lock().len();
                if let Some(rss) = proc_status_mb(pid, "VmRSS:") {
                    samples
                        .lock()
                        .push((start.elapsed().as_secs_f64(), running, rss));
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    };

    let created_at: Times = Arc::default();
    let create = |i: usize| {
        let pods = pods.clone();
        let created_at = created_at.clone();
        async move {
            let name = format!("bench-{i}");
            let t = Instant::now();
            pods.create(&PostParams::default(), &pod(&name, node)?)
                .await?;
            record(&created_at, name, t);
            anyhow::Ok(())
        }
    };
    match open_rate {
        None => {
            stream::iter(0..n)
                .map(create)
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await?;
        }
        Some(r) => {
            // Open loop: pod i is created at start + i / r, whatever the earlier ones do.
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..n {
                #[allow(clippy::cast_precision_loss)]
                let at = start + Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until(at.into()).await;
                tasks.spawn(create(i));
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
        }
    }
    eventually(
        Duration::from_secs(900),
        &format!("{n} pods Running"),
        || async { Ok((snapshot(&running_at).len() >= n).then_some(())) },
    )
    .await?;
    watch.abort();
    sampler.abort();
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    // Reconciles that the last Running status itself triggers may still be under way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shim_requests = since(&requests_before, prometheus::api_requests_by_kind(&cp)?);
    #[allow(clippy::cast_precision_loss)]
    let patches_per_pod = shim_requests.get(STATUS_PATCH).copied().unwrap_or(0) as f64 / n as f64;
    let peak_rss = proc_status_mb(pid, "VmHWM:");
    let create_calls = control.calls(rpc::CREATE);
    #[allow(clippy::cast_precision_loss)]
    let shim_writes_per_pod = (*versions.lock() as f64 - n as f64) / n as f64;

    let running = snapshot(&running_at);
    let created = snapshot(&created_at);
    let last = running.values().max().copied().unwrap_or(start);
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, t)| running.get(name).map(|r| r.saturating_duration_since(*t)))
        .collect();
    latencies.sort();
    let through = rate(n, last.duration_since(start));
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    #[allow(clippy::cast_precision_loss)]
    let cpu_per_1000 = cpu * 1000.0 / n as f64;

    let restarted = if opts.restart {
        let spawn = || spawn_shim(&cp, node, &socket, metrics_port, dir.path());
        Some(
            restart(
                &cp,
                &mut shim,
                &control,
                spawn,
                metrics_port,
                &pods,
                node,
                n,
            )
            .await?,
        )
    } else {
        None
    };

    let mode = match open_rate {
        None => format!("closed loop, {CONCURRENCY} creates in flight"),
        Some(r) => format!("open loop, {r:.0} pods/s"),
    };
    println!("pods:                                   {n} ({mode})");
    println!("ceiling (plain client create+status):   {ceiling:.0} pods/s");
    println!(
        "through the shim (create → Running):    {through:.0} pods/s ({:.0} % of the ceiling)",
        100.0 * through / ceiling
    );
    println!("latency create → Running  p50:          {p50:?}");
    println!("latency create → Running  p99:          {p99:?}");
    println!(
        "shim peak RSS:                          {}",
        peak_rss.map_or("unknown".into(), |m| format!("{m:.1} MB"))
    );
    println!(
        "shim CPU (user+system):                 {cpu:.1} s, {cpu_per_1000:.2} s per 1,000 pods"
    );
    println!("provider CreatePod calls:               {create_calls}");
    println!("shim writes per pod (watch events - 1): {shim_writes_per_pod:.2}");
    println!("status PATCH requests per pod:          {patches_per_pod:.2}");
    // Every client's requests (the shim's, the benchmark's, the control plane's) while each ran.
    println!("API requests per pod (all clients):     ceiling | through the shim");
    let per_pod = |m: &BTreeMap<String, u64>, k: &str| {
        #[allow(clippy::cast_precision_loss)]
        let v = m.get(k).copied().unwrap_or(0) as f64 / n as f64;
        v
    };
    let kinds: std::collections::BTreeSet<&String> = ceiling_requests
        .keys()
        .chain(shim_requests.keys())
        .collect();
    for kind in &kinds {
        let (c, t) = (
            per_pod(&ceiling_requests, kind),
            per_pod(&shim_requests, kind),
        );
        if c >= 0.01 || t >= 0.01 {
            println!("  {kind:<36}  {c:>7.2} | {t:.2}");
        }
    }
    if let Some(r) = &restarted {
        println!(
            "restart: Node Ready after {:?}, every pod reconciled after {:?}, {} CreatePod, {} pod writes, {} status PATCH requests",
            r.node_ready, r.all_reconciled, r.create_calls, r.status_writes, r.status_patches
        );
    }
    let report = json!({
        "pods": n,
        "mode": if open_rate.is_some() { "open" } else { "closed" },
        "open_loop_rate_pods_per_s": open_rate,
        "ceiling_pods_per_s": ceiling,
        "through_shim_pods_per_s": through,
        "share_of_ceiling": through / ceiling,
        "latency_p50_ms": ms(p50),
        "latency_p99_ms": ms(p99),
        "shim_peak_rss_mb": peak_rss,
        "shim_cpu_s": cpu,
        "shim_cpu_s_per_1000_pods": cpu_per_1000,
        "create_pod_calls": create_calls,
        "shim_pod_writes_per_pod": shim_writes_per_pod,
        "status_patch_requests_per_pod": patches_per_pod,
        "api_requests": {"ceiling": ceiling_requests, "through_shim": shim_requests},
        "restart": restarted.as_ref().map(|r| json!({
            "node_ready_s": r.node_ready.as_secs_f64(),
            "all_reconciled_s": r.all_reconciled.as_secs_f64(),
            "create_pod_calls": r.create_calls,
            "pod_writes": r.status_writes,
            "status_patch_requests": r.status_patches,
        })),
    });
    println!("{report}");
    if let Some(path) = &opts.json {
        std::fs::write(path, format!("{report}\n"))?;
    }
    if let Some(dir) = &opts.plots {
        std::fs::create_dir_all(dir)?;
        let mut running_times: Vec<f64> = running
            .values()
            .map(|t| t.saturating_duration_since(start).as_secs_f64())
            .collect();
        running_times.sort_by(f64::total_cmp);
        let samples = samples.lock().clone();
        let tag = format!(
            "{n}-{}",
            if open_rate.is_some() {
                "open"
            } else {
                "closed"
            }
        );
        plots::latency_histogram(
            &dir.join(format!("latency-{tag}.png")),
            &latencies.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            &format!("create → Running, {n} pods ({mode})"),
        )?;
        plots::running_over_time(
            &dir.join(format!("running-{tag}.png")),
            &running_times,
            &format!("pods Running over time, {n} pods ({mode})"),
        )?;
        plots::rss_over_pods(
            &dir.join(format!("rss-{tag}.png")),
            &samples
                .iter()
                .map(|(_, running, rss)| (*running, *rss))
                .collect::<Vec<_>>(),
            &format!("shim RSS over pods Running, {n} pods ({mode})"),
        )?;
        println!("plots in {}", dir.display());
    }
    shim.stop(Duration::from_secs(10)).await?;
    cp.stop().await
}
