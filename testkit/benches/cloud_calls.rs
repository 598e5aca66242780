//! Benchmark: cloud calls per pod, per provider. Each provider binary runs against its cloud
//! (ECI emulator, ACI emulator, moto for Fargate) through a counting proxy
//! ([`vk_testkit::fault_proxy`], faults off); pods are sent straight over gRPC (no Kubernetes).
//! For each pod count it measures, by cloud operation:
//! - create: calls from the first CreatePod until WatchPods shows every pod Running, per pod;
//! - idle: calls per status interval with every pod Running (after two quiet intervals), which
//!   should not grow with the pod count;
//! - delete: calls from the first DeletePod until WatchPods reported every pod deleted, plus two
//!   intervals for clean-up the poll does, per pod.
//!
//! `cargo bench -p vk-testkit --bench cloud_calls -- [PODS...] [--providers eci,aci,fargate]
//! [--interval SECS] [--idle-seconds SECS] [--plain] [--json FILE]` (default pods: 100 1000;
//! `--plain`: pods without a Secret-derived env value). Prints
//! Markdown tables and one JSON line (or writes it to `--json FILE`) to compare two revisions.
//!
//! The provider and emulator binaries come from `$VK_BIN_DIR`, else the profile directory of
//! this benchmark if they are built there, else `target/debug` (call counts do not depend on
//! optimisation): `cargo build -p provider-eci -p provider-aci -p provider-fargate
//! -p eci-emulator -p aci-emulator` first. moto comes from the project venv (scripts/setup.sh).

use parking_lot::Mutex;
use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use podprovider_proto::{
    MAX_MESSAGE_BYTES, PodProviderClient,
    v1::{self as pb, watch_pods_event::Event},
};
use serde::Serialize;
use tokio::process::Command;
use tonic::transport::{Channel, Endpoint};
use vk_testkit::{
    aci_emulator, eci_emulator,
    fault_proxy::{FaultConfig, FaultProxy, Flavor},
    moto::Moto,
    ports::free_port,
    process::ManagedProcess,
};

/// The virtual node every pod is sent for.
const NODE: &str = "vk-bench";
/// CreatePod / DeletePod calls in flight, like a shim's workers.
const IN_FLIGHT: usize = 32;
const CLUSTER: &str = "vk-bench";
const LOG_GROUP: &str = "vk-bench-logs";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Provider {
    Eci,
    Aci,
    Fargate,
}

impl Provider {
    fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "eci" => Ok(Self::Eci),
            "aci" => Ok(Self::Aci),
            "fargate" => Ok(Self::Fargate),
            other => bail!("unknown provider {other:?}: eci, aci or fargate"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Eci => "eci",
            Self::Aci => "aci",
            Self::Fargate => "fargate",
        }
    }
}

struct Opts {
    pods: Vec<usize>,
    providers: Vec<Provider>,
    interval: f64,
    idle_seconds: u64,
    json: Option<PathBuf>,
    /// Pods without a Secret-derived value.
    plain: bool,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut opts = Opts {
        pods: Vec::new(),
        providers: vec![Provider::Eci, Provider::Aci, Provider::Fargate],
        interval: 2.0,
        idle_seconds: 60,
        json: None,
        plain: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match a.as_str() {
            // cargo bench passes --bench to harness = false binaries.
            "--bench" => {}
            "--providers" => {
                opts.providers = value(&a)?
                    .split(',')
                    .map(Provider::parse)
                    .collect::<anyhow::Result<_>>()?;
            }
            "--interval" => opts.interval = value(&a)?.parse().context("--interval")?,
            "--idle-seconds" => opts.idle_seconds = value(&a)?.parse().context("--idle-seconds")?,
            "--json" => opts.json = Some(PathBuf::from(value(&a)?)),
            "--plain" => opts.plain = true,
            n => opts.pods.push(
                n.parse()
                    .with_context(|| format!("unknown argument {n:?}"))?,
            ),
        }
    }
    if opts.pods.is_empty() {
        opts.pods = vec![100, 1000];
    }
    Ok(opts)
}

/// A workspace binary: `$VK_BIN_DIR`, else this benchmark's profile directory, else
/// `target/debug`. testkit's launchers look only next to the running executable, which under
/// `cargo bench` is `target/release`, where the providers are usually not built.
fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("VK_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/<bench>
    if let Some(profile) = exe.parent().and_then(Path::parent) {
        dirs.push(profile.to_owned());
        if let Some(target) = profile.parent() {
            dirs.push(target.join("debug"));
        }
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} not found (VK_BIN_DIR, next to {}, target/debug): build it first",
                exe.display()
            )
        })
}

/// Calls forwarded during one phase, by operation.
#[derive(Clone, Debug, Default, Serialize)]
struct Phase {
    seconds: f64,
    calls: usize,
    by_op: BTreeMap<String, usize>,
}

/// Idle polling: calls per status interval.
#[derive(Clone, Debug, Default, Serialize)]
struct Idle {
    seconds: f64,
    intervals: f64,
    per_interval: f64,
    /// Most calls seen in one interval-long sample (full syncs, instance-view refreshes).
    max_in_interval: usize,
    by_op_per_interval: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
struct Run {
    provider: Provider,
    pods: usize,
    error: Option<String>,
    startup: Option<Phase>,
    create: Option<Phase>,
    idle: Option<Idle>,
    delete: Option<Phase>,
}

/// `AmazonEC2ContainerServiceV20141113.RunTask` → `ecs:RunTask`; other names as they are.
fn short_op(route: &str) -> String {
    let Some((service, op)) = route.split_once('.') else {
        return route.to_owned();
    };
    let service = match service {
        "AmazonEC2ContainerServiceV20141113" => "ecs",
        "Logs_20140328" => "logs",
        s if !s.contains(' ') => s,
        _ => return route.to_owned(),
    };
    format!("{service}:{op}")
}

fn snapshot(proxy: &FaultProxy) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (route, n) in proxy.forwarded_routes() {
        *out.entry(short_op(&route)).or_default() += n;
    }
    out
}

fn phase(proxy: &FaultProxy, started: Instant) -> Phase {
    let by_op = snapshot(proxy);
    Phase {
        seconds: started.elapsed().as_secs_f64(),
        calls: by_op.values().sum(),
        by_op,
    }
}

/// What the provider's WatchPods stream has shown so far.
#[derive(Default)]
struct Seen {
    running: HashSet<String>,
    deleted: HashSet<String>,
    failed: Vec<String>,
    ended: Option<String>,
}

fn watch(mut stream: tonic::Streaming<pb::WatchPodsEvent>) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        let lock = || shared.lock();
        loop {
            match stream.message().await {
                Ok(Some(ev)) => match ev.event {
                    Some(Event::Status(s)) => {
                        let uid = s
                            .pod_ref
                            .as_ref()
                            .map(|r| r.uid.clone())
                            .unwrap_or_default();
                        let mut seen = lock();
                        match s.phase() {
                            pb::PodPhase::Running => {
                                seen.running.insert(uid);
                            }
                            pb::PodPhase::Failed => {
                                seen.failed.push(format!("{uid}: {}", s.message))
                            }
                            _ => {}
                        }
                    }
                    Some(Event::Deleted(r)) => {
                        lock().deleted.insert(r.uid);
                    }
                    _ => {}
                },
                Ok(None) => {
                    lock().ended = Some("WatchPods ended".into());
                    return;
                }
                Err(e) => {
                    lock().ended = Some(format!("WatchPods failed: {e}"));
                    return;
                }
            }
        }
    });
    seen
}

/// Waits until `done(seen)` holds; fails when the stream ends, a pod fails or the provider exits.
async fn wait_for(
    seen: &Mutex<Seen>,
    provider: &mut ManagedProcess,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let s = seen.lock();
            if done(&s) {
                return Ok(());
            }
            if let Some(why) = &s.ended {
                bail!("{what}: {why}");
            }
            if let Some(f) = s.failed.first() {
                bail!("{what}: a pod failed: {f}");
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not within {timeout:?} ({} Running, {} deleted seen)",
                    s.running.len(),
                    s.deleted.len()
                );
            }
        }
        provider.ensure_running()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(run: u32, i: usize, plain: bool) -> pb::Pod {
    let mut env = vec![pb::EnvVar {
        name: "MODE".into(),
        value: "bench".into(),
        ..Default::default()
    }];
    // One Secret-derived value, as most real pods carry: it costs calls on some clouds (a
    // Secrets Manager secret per pod on Fargate).
    if !plain {
        env.push(pb::EnvVar {
            name: "TOKEN".into(),
            value: format!("token-{i}"),
            sensitive: true,
            ..Default::default()
        });
    }
    pb::Pod {
        pod_ref: Some(pb::PodRef {
            namespace: "bench".into(),
            name: format!("calls-{i}"),
            uid: format!("{run:08x}-0000-4000-8000-{i:012x}"),
        }),
        node_name: NODE.into(),
        containers: vec![pb::Container {
            name: "main".into(),
            image: "nginx:1.27".into(),
            env,
            resources: Some(pb::ResourceRequirements {
                requests: Some(pb::Resources {
                    cpu_millis: Some(250),
                    memory_bytes: Some(512 << 20),
                    ..Default::default()
                }),
                limits: None,
            }),
            ..Default::default()
        }],
        restart_policy: pb::RestartPolicy::Always as i32,
        termination_grace_period_seconds: Some(5),
        ..Default::default()
    }
}

/// The cloud of one run: an emulator or moto, and the counting proxy in front of it.
struct Cloud {
    _emulator: Option<ManagedProcess>,
    moto: Option<Moto>,
    proxy: FaultProxy,
    /// The emulator's own endpoint (ACI's token endpoint, not counted).
    endpoint: String,
}

async fn wait_listening(process: &mut ManagedProcess, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        process.ensure_running()?;
        if Instant::now() > deadline {
            bail!(
                "{} does not listen: {}",
                process.name(),
                process.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn start_cloud(provider: Provider, log_dir: &Path) -> anyhow::Result<Cloud> {
    let (emulator, moto, port, flavor, path_contains) = match provider {
        Provider::Eci | Provider::Aci => {
            let name = format!("{}-emulator", provider.name());
            let port = free_port()?;
            let mut cmd = Command::new(bin(&name)?);
            cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
            let mut process = ManagedProcess::spawn(&name, &mut cmd, log_dir)?;
            wait_listening(&mut process, port).await?;
            let (flavor, path) = if provider == Provider::Eci {
                (Flavor::Aliyun, "")
            } else {
                (Flavor::Azure, "/subscriptions/")
            };
            (Some(process), None, port, flavor, path)
        }
        Provider::Fargate => {
            let moto = Moto::start(log_dir, CLUSTER, LOG_GROUP).await?;
            let port = moto.port;
            (None, Some(moto), port, Flavor::Aws, "")
        }
    };
    let proxy = FaultProxy::start_with(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        FaultConfig {
            flavor,
            rate: 0.0,
            kinds: Vec::new(),
            path_contains: path_contains.to_owned(),
            max_delay: Duration::ZERO,
            seed: 1,
        },
    )
    .await?;
    Ok(Cloud {
        _emulator: emulator,
        moto,
        proxy,
        endpoint: format!("http://127.0.0.1:{port}"),
    })
}

/// The provider as the providers' own end-to-end tests configure it, with a short status
/// interval (ECI's full sync every ten intervals, so a one-minute idle window sees several).
fn provider_command(
    provider: Provider,
    cloud: &Cloud,
    listen: &str,
    interval: f64,
) -> anyhow::Result<Command> {
    let proxy = cloud.proxy.url();
    let mut cmd = Command::new(bin(&format!("provider-{}", provider.name()))?);
    let interval_arg = interval.to_string();
    cmd.args([
        "--listen",
        listen,
        "--status-interval-seconds",
        &interval_arg,
    ]);
    match provider {
        Provider::Eci => {
            cmd.args(eci_emulator::provider_flags(&proxy))
                .args(["--full-sync-seconds", &(interval * 10.0).to_string()])
                .envs(eci_emulator::provider_env());
        }
        Provider::Aci => {
            cmd.args(aci_emulator::provider_flags(&proxy, &cloud.endpoint))
                .envs(aci_emulator::provider_env());
        }
        Provider::Fargate => {
            let moto = cloud.moto.as_ref().context("no moto")?;
            cmd.args([
                "--cluster",
                CLUSTER,
                "--subnets",
                &moto.subnet,
                "--security-groups",
                &moto.security_group,
                "--log-group",
                LOG_GROUP,
                "--execution-role-arn",
                "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
            ])
            .envs(Moto::aws_env(&proxy));
        }
    }
    cmd.args(["--log-filter", "info"]);
    Ok(cmd)
}

async fn connect(
    process: &mut ManagedProcess,
    addr: &str,
) -> anyhow::Result<PodProviderClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut client = PodProviderClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // The provider rebuilds its state from the cloud before it serves.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        process.ensure_running()?;
        let ping = client.ping(pb::PingRequest {
            node_name: NODE.into(),
        });
        if let Ok(answer) = ping.await
            && answer.get_ref().ready
        {
            return Ok(client);
        }
        if Instant::now() > deadline {
            bail!("{} not ready: {}", process.name(), process.log_tail(20));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One provider at one pod count, on a fresh cloud; fills `run` phase by phase so a failure
/// still reports what was measured.
async fn measure(run: &mut Run, opts: &Opts, log_dir: &Path) -> anyhow::Result<()> {
    let n = run.pods;
    let interval = Duration::from_secs_f64(opts.interval);
    let cloud = start_cloud(run.provider, log_dir).await?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let started = Instant::now();
    let mut cmd = provider_command(run.provider, &cloud, &addr, opts.interval)?;
    let name = format!("provider-{}-{n}", run.provider.name());
    let mut process = ManagedProcess::spawn(&name, &mut cmd, log_dir)?;
    let client = connect(&mut process, &addr).await?;
    run.startup = Some(phase(&cloud.proxy, started));

    let seen = watch(
        client
            .clone()
            .watch_pods(pb::WatchPodsRequest {
                node_name: NODE.into(),
            })
            .await?
            .into_inner(),
    );
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let pods: Vec<pb::Pod> = (0..n).map(|i| pod(run_id, i, opts.plain)).collect();
    // Generous: moto answers a RunTask in tens of milliseconds, one at a time.
    let timeout = Duration::from_secs(60) + Duration::from_millis(500) * u32::try_from(n)?;

    cloud.proxy.reset_counts();
    let started = Instant::now();
    let created: Vec<Result<_, tonic::Status>> = stream::iter(pods.iter().cloned())
        .map(|p| {
            let mut c = client.clone();
            async move { c.create_pod(pb::CreatePodRequest { pod: Some(p) }).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    if let Some(Err(e)) = created.into_iter().find(Result::is_err) {
        bail!("CreatePod: {:?}: {}", e.code(), e.message());
    }
    wait_for(&seen, &mut process, timeout, "all Running", |s| {
        s.running.len() >= n
    })
    .await?;
    run.create = Some(phase(&cloud.proxy, started));

    // Two quiet intervals first: the polls that saw the last pods start are create's tail.
    tokio::time::sleep(interval * 2).await;
    cloud.proxy.reset_counts();
    let started = Instant::now();
    let samples = (Duration::from_secs(opts.idle_seconds).as_secs_f64() / opts.interval)
        .ceil()
        .max(1.0);
    let mut max_in_interval = 0;
    let mut before = 0;
    for _ in 0..(samples as usize) {
        tokio::time::sleep(interval).await;
        let total = cloud.proxy.forwarded_total();
        max_in_interval = max_in_interval.max(total - before);
        before = total;
    }
    let idle = phase(&cloud.proxy, started);
    let intervals = idle.seconds / opts.interval;
    run.idle = Some(Idle {
        seconds: idle.seconds,
        intervals,
        per_interval: idle.calls as f64 / intervals,
        max_in_interval,
        by_op_per_interval: idle
            .by_op
            .iter()
            .map(|(op, c)| (op.clone(), *c as f64 / intervals))
            .collect(),
    });

    cloud.proxy.reset_counts();
    let started = Instant::now();
    let deleted: Vec<Result<_, tonic::Status>> = stream::iter(pods.iter())
        .map(|p| {
            let mut c = client.clone();
            let pod_ref = p.pod_ref.clone();
            async move {
                c.delete_pod(pb::DeletePodRequest {
                    pod_ref,
                    grace_period_seconds: Some(0),
                })
                .await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    if let Some(Err(e)) = deleted.into_iter().find(Result::is_err) {
        bail!("DeletePod: {:?}: {}", e.code(), e.message());
    }
    wait_for(&seen, &mut process, timeout, "all deleted", |s| {
        s.deleted.len() >= n
    })
    .await?;
    // Clean-up some providers leave to the poll (task definitions, secrets) counts as delete's.
    tokio::time::sleep(interval * 2).await;
    run.delete = Some(phase(&cloud.proxy, started));

    process.stop(Duration::from_secs(10)).await?;
    if let Some(moto) = cloud.moto {
        moto.stop().await?;
    }
    Ok(())
}

fn per(calls: usize, n: usize) -> f64 {
    calls as f64 / n.max(1) as f64
}

/// Markdown tables: a summary, then each provider's operations per phase, pod counts as columns.
fn print_tables(runs: &[Run], providers: &[Provider], sizes: &[usize]) {
    let dash = || "—".to_owned();
    println!(
        "| provider | pods | create: calls/pod | idle: calls/interval (max) | delete: calls/pod | create s | delete s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in runs {
        let create = r.create.as_ref();
        let delete = r.delete.as_ref();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |{}",
            r.provider.name(),
            r.pods,
            create.map_or_else(dash, |p| format!("{:.2}", per(p.calls, r.pods))),
            r.idle.as_ref().map_or_else(dash, |i| format!(
                "{:.2} ({})",
                i.per_interval, i.max_in_interval
            )),
            delete.map_or_else(dash, |p| format!("{:.2}", per(p.calls, r.pods))),
            create.map_or_else(dash, |p| format!("{:.1}", p.seconds)),
            delete.map_or_else(dash, |p| format!("{:.1}", p.seconds)),
            r.error
                .as_ref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default(),
        );
    }
    for &p in providers {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.provider == p).collect();
        type Pick = fn(&Run) -> Option<BTreeMap<String, f64>>;
        let phases: [(&str, Pick); 3] = [
            ("create, calls per pod", |r| {
                r.create.as_ref().map(|c| {
                    c.by_op
                        .iter()
                        .map(|(k, v)| (k.clone(), per(*v, r.pods)))
                        .collect()
                })
            }),
            ("idle, calls per status interval", |r| {
                r.idle.as_ref().map(|i| i.by_op_per_interval.clone())
            }),
            ("delete, calls per pod", |r| {
                r.delete.as_ref().map(|c| {
                    c.by_op
                        .iter()
                        .map(|(k, v)| (k.clone(), per(*v, r.pods)))
                        .collect()
                })
            }),
        ];
        for (title, pick) in phases {
            let cols: Vec<Option<BTreeMap<String, f64>>> = sizes
                .iter()
                .map(|s| mine.iter().find(|r| r.pods == *s).and_then(|r| pick(r)))
                .collect();
            let ops: std::collections::BTreeSet<&String> =
                cols.iter().flatten().flat_map(BTreeMap::keys).collect();
            println!();
            print!("| {} {title} |", p.name());
            for s in sizes {
                print!(" {s} pods |");
            }
            println!();
            println!("|---|{}", "---|".repeat(sizes.len()));
            for op in ops {
                print!("| {op} |");
                for c in &cols {
                    match c {
                        Some(m) => print!(" {:.2} |", m.get(op).copied().unwrap_or(0.0)),
                        None => print!(" — |"),
                    }
                }
                println!();
            }
        }
    }
}

async fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().await.ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = parse_args()?;
    let log_dir = std::env::temp_dir().join(format!("vk-cloud-calls-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;
    eprintln!("logs in {}", log_dir.display());
    for name in ["provider-eci", "provider-aci", "provider-fargate"] {
        if let Ok(path) = bin(name) {
            eprintln!("using {}", path.display());
        }
    }
    let mut runs = Vec::new();
    for &provider in &opts.providers {
        for &pods in &opts.pods {
            eprintln!("{} with {pods} pods ...", provider.name());
            let mut run = Run {
                provider,
                pods,
                error: None,
                startup: None,
                create: None,
                idle: None,
                delete: None,
            };
            if let Err(e) = measure(&mut run, &opts, &log_dir).await {
                eprintln!("{} with {pods} pods failed: {e:#}", provider.name());
                run.error = Some(format!("{e:#}"));
            }
            runs.push(run);
        }
    }
    print_tables(&runs, &opts.providers, &opts.pods);
    let json = serde_json::json!({
        "benchmark": "cloud_calls",
        "date": command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).await,
        "commit": command_line("git", &["rev-parse", "--short", "HEAD"]).await,
        "status_interval_seconds": opts.interval,
        "idle_seconds": opts.idle_seconds,
        "plain_pods": opts.plain,
        "runs": runs,
    });
    match &opts.json {
        Some(path) => std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("\n{json}"),
    }
    if runs.iter().any(|r| r.error.is_some()) {
        bail!(
            "some runs failed (see above; logs in {})",
            log_dir.display()
        );
    }
    Ok(())
}
