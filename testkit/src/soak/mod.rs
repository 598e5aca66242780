//! A soak: one control plane, the three clouds (ECI emulator, ACI emulator, moto) each behind a
//! fault-injecting proxy, the three providers and three shims (one virtual node each), pod
//! lifecycles driven across the nodes from a seeded RNG while faults are injected from the same
//! seed, then a check of the settled state.
//!
//! Faults: `kill -9` of a shim, of a provider, of both (then restarted); kube-apiserver and etcd
//! killed and restarted; a provider stopped (SIGSTOP) longer than the shim's provider timeout,
//! then continued; and at the proxies, for a share of the cloud calls, throttling, 5xx, lost
//! answers (forwarded, answer dropped) and slow answers.
//!
//! The check ([`check`]): no leaked cloud workload, no duplicate, no phase regression in the
//! history a watch recorded for the whole run, every pod in the state its spec implies, none
//! stuck Terminating, shim and provider resident sets within 20 % (+4 MiB) of the baseline taken
//! after the quiet warm-up (the first incarnation's; a restarted process is compared with it).
//!
//! The run is deterministic in its choices (which lifecycle, which node, which fault, when), not
//! in timing: the processes race as they would in production.

pub mod check;
pub mod cloud;
pub mod driver;
pub mod history;
pub mod procs;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod},
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::{ControlPlane, fault_proxy::FaultKind};
use check::{Expected, FinalState, Findings, PodState, RssSample};
use cloud::{Cloud, Clouds};
use driver::{DEPLOYMENT_LABEL, Driver, NAMESPACE, deployment_manifest, deployment_name};
use procs::{PROVIDER_TIMEOUT, Procs};

/// xorshift64*: deterministic per seed, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds (seed, seed + 1) start far apart.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)).max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((self.unit() * n as f64) as usize).min(n - 1)
    }
}

/// What a soak runs.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// Seeds every choice.
    pub seed: u64,
    /// Lifecycles to run (the run stops earlier when `duration` is up).
    pub lifecycles: usize,
    /// Longest time lifecycles are started for (faults run as long).
    pub duration: Duration,
    /// The clouds (and their providers, shims and nodes).
    pub providers: Vec<Cloud>,
    /// Lifecycles run at the same time.
    pub workers: usize,
    /// Share of cloud calls the proxies disturb while faults are on.
    pub cloud_fault_rate: f64,
    /// Pause between two process faults: uniform in this range.
    pub fault_interval: (Duration, Duration),
    /// How long the settled state may take to converge before it is checked anyway.
    pub settle_timeout: Duration,
    /// Where logs go (kept); `None`: a temporary directory removed at the end.
    pub log_dir: Option<PathBuf>,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            lifecycles: 500,
            duration: Duration::from_secs(3600),
            providers: Cloud::ALL.to_vec(),
            workers: 4,
            cloud_fault_rate: 0.2,
            fault_interval: (Duration::from_secs(6), Duration::from_secs(15)),
            settle_timeout: Duration::from_secs(180),
            log_dir: None,
        }
    }
}

/// One process fault the injector can choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessFault {
    /// SIGKILL a shim, restart it.
    KillShim,
    /// SIGKILL a provider, restart it.
    KillProvider,
    /// SIGKILL a shim and its provider, restart both.
    KillBoth,
    /// SIGSTOP a provider for longer than the shim's provider timeout, then SIGCONT.
    HangProvider,
    /// SIGKILL kube-apiserver, restart it.
    RestartApiServer,
    /// SIGKILL etcd, restart it (the API server reconnects).
    RestartEtcd,
}

impl ProcessFault {
    /// Every kind, in a fixed order.
    pub const ALL: [ProcessFault; 6] = [
        ProcessFault::KillShim,
        ProcessFault::KillProvider,
        ProcessFault::KillBoth,
        ProcessFault::HangProvider,
        ProcessFault::RestartApiServer,
        ProcessFault::RestartEtcd,
    ];
}

/// Process faults in rounds: each round is every kind once, in a seeded order, so a run of `n`
/// faults injects each kind `n / 6` times or one more (a weighted draw left etcd restarts at 5 of
/// 72 in a long run).
struct FaultRounds {
    round: Vec<ProcessFault>,
}

impl FaultRounds {
    fn next(&mut self, rng: &mut Rng) -> ProcessFault {
        if self.round.is_empty() {
            self.round = ProcessFault::ALL.to_vec();
            // Fisher–Yates; popped from the end.
            for i in (1..self.round.len()).rev() {
                self.round.swap(i, rng.below(i + 1));
            }
        }
        self.round.pop().unwrap_or(ProcessFault::KillShim)
    }
}

/// The soak's result.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Clouds run.
    pub providers: Vec<Cloud>,
    /// Lifecycles run.
    pub lifecycles: usize,
    /// By kind.
    pub lifecycles_by_kind: BTreeMap<String, usize>,
    /// Seconds lifecycles were driven with faults on.
    pub drive_secs: f64,
    /// Seconds the state took to settle (until the check passed, or the settle timeout).
    pub settle_secs: f64,
    /// Process faults injected, by kind.
    pub process_faults: BTreeMap<String, usize>,
    /// Cloud faults injected, by cloud then kind.
    pub cloud_faults: BTreeMap<String, BTreeMap<String, usize>>,
    /// Cloud calls forwarded by each proxy.
    pub cloud_calls_forwarded: BTreeMap<String, usize>,
    /// Incarnations of each provider and shim.
    pub starts: BTreeMap<String, u32>,
    /// Providers and shims that exited by themselves during the run (restarted at once): not a
    /// check failure (nothing is lost if the restart recovers), but each is worth a look.
    pub unexpected_exits: Vec<String>,
    /// Full lists the pod watch made (1 + re-lists after API server or etcd restarts).
    pub watch_lists: usize,
    /// Errors the pod watch saw (and retried).
    pub watch_errors: usize,
    /// Pods in the final state, cloud workloads in the final state.
    pub final_pods: usize,
    /// See `final_pods`.
    pub final_workloads: usize,
    /// Workloads the clouds created over the run (removed ones included).
    pub workloads_created: usize,
    /// Findings by kind (all zero: passed).
    pub counts: BTreeMap<&'static str, usize>,
    /// What was found.
    pub findings: Findings,
    /// Resident sets, baseline and final.
    pub rss: Vec<RssSample>,
    /// Waits that timed out and injected faults that failed during the run (context for
    /// findings; not failures by themselves).
    pub notes: Vec<String>,
    /// Where the logs are.
    pub log_dir: String,
}

impl Report {
    /// Passed: every finding count is zero.
    pub fn passed(&self) -> bool {
        self.findings.is_clean()
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "soak seed={} providers={:?} lifecycles={} {:?} drive={:.0}s settle={:.0}s",
            self.seed,
            self.providers,
            self.lifecycles,
            self.lifecycles_by_kind,
            self.drive_secs,
            self.settle_secs
        );
        let _ = writeln!(s, "process faults: {:?}", self.process_faults);
        let _ = writeln!(s, "cloud faults: {:?}", self.cloud_faults);
        let _ = writeln!(s, "cloud calls forwarded: {:?}", self.cloud_calls_forwarded);
        let _ = writeln!(
            s,
            "starts: {:?}; watch lists {} errors {}",
            self.starts, self.watch_lists, self.watch_errors
        );
        let _ = writeln!(
            s,
            "final: {} pods, {} workloads ({} created over the run); findings {:?} => {}",
            self.final_pods,
            self.final_workloads,
            self.workloads_created,
            self.counts,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        for r in &self.rss {
            let _ = writeln!(
                s,
                "rss {}: baseline {} KiB, final {} KiB",
                r.process, r.baseline_kib, r.final_kib
            );
        }
        for (kind, list) in [
            ("leaked", &self.findings.leaked),
            ("duplicated", &self.findings.duplicated),
            ("regression", &self.findings.regressions),
            ("unmet", &self.findings.unmet),
            ("stuck", &self.findings.stuck_terminating),
            ("rss", &self.findings.rss_growth),
        ] {
            for item in list {
                let _ = writeln!(s, "  {kind}: {item}");
            }
        }
        let _ = writeln!(
            s,
            "providers and shims that exited by themselves: {}",
            self.unexpected_exits.len()
        );
        for e in &self.unexpected_exits {
            let _ = writeln!(s, "  exit: {e}");
        }
        let _ = writeln!(s, "logs: {}", self.log_dir);
        s
    }
}

/// Runs a soak.
pub async fn run(config: SoakConfig) -> anyhow::Result<Report> {
    crate::install_crypto_provider();
    let temp;
    let log_dir = match &config.log_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("vk-soak-").tempdir()?;
            temp.path().to_owned()
        }
    };
    tracing::info!(seed = config.seed, dir = %log_dir.display(), "soak starting");
    let mut cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    cp.wait_for_service_account(NAMESPACE, "default", Duration::from_secs(60))
        .await?;
    let recorder = history::Recorder::start(client.clone(), NAMESPACE);

    let clouds = Arc::new(Clouds::start(&config.providers, &log_dir, config.seed).await?);
    let mut procs = Procs::new(&log_dir, &config.providers)?;
    for c in &config.providers {
        procs.start_provider(*c, &clouds).await?;
        procs.start_shim(*c, &cp)?;
    }
    // Shared with the fault injector's task (restarts, shim restarts).
    let cp = Arc::new(cp);
    let result = drive_and_check(
        &config,
        &cp,
        client,
        clouds.clone(),
        procs,
        &recorder,
        &log_dir,
    )
    .await;
    drop(recorder);
    // The injector has ended (drive_and_check waits for it), so this is the last reference
    // unless drive_and_check failed early; then the control plane goes with the Arc.
    if let Ok(mut cp) = Arc::try_unwrap(cp) {
        if result.as_ref().map_or(true, |r| !r.passed()) {
            // A failure's logs are worth keeping.
            let kept = cp.keep_dir();
            eprintln!("soak: control plane directory kept in {}", kept.display());
        }
        cp.stop().await.ok();
    }
    result
}

async fn drive_and_check(
    config: &SoakConfig,
    cp: &Arc<ControlPlane>,
    client: kube::Client,
    clouds: Arc<Clouds>,
    procs: Procs,
    recorder: &history::Recorder,
    log_dir: &Path,
) -> anyhow::Result<Report> {
    let nodes = config.providers.clone();
    // Warm-up, faults off: each node's Deployment at one replica, running.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    for c in &nodes {
        deployments
            .create(&PostParams::default(), &deployment_manifest(*c, 1)?)
            .await?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    crate::wait::eventually(Duration::from_secs(120), "warm-up pods Running", || {
        let pods = pods.clone();
        let want = nodes.len();
        async move {
            let list = pods.list(&ListParams::default()).await?;
            let running = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            Ok((running == want).then_some(()))
        }
    })
    .await?;
    let mut procs = procs;
    procs.record_baseline();
    let procs = Arc::new(Mutex::new(procs));

    // Faults on.
    clouds.set_fault_rate(config.cloud_fault_rate);
    let stop = Arc::new(AtomicBool::new(false));
    let mut injector = AbortOnDrop(tokio::spawn(inject(
        config.clone(),
        cp.clone(),
        clouds.clone(),
        procs.clone(),
        stop.clone(),
    )));

    let started = tokio::time::Instant::now();
    let deadline = started + config.duration;
    let driver = Arc::new(Driver::new(
        client.clone(),
        clouds.clone(),
        nodes.clone(),
        deadline + Duration::from_secs(20),
    ));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..config.workers.max(1) {
        let driver = driver.clone();
        let next = next.clone();
        let lifecycles = config.lifecycles;
        let seed = config.seed;
        workers.push(tokio::spawn(async move {
            loop {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= lifecycles {
                    break;
                }
                // Each lifecycle's choices depend only on the seed and its index, not on which
                // worker ran it or when.
                let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                if let Err(e) = driver.run(i, &mut rng).await {
                    tracing::warn!("lifecycle {i}: {e:#}");
                    driver.slow.lock().push(format!("lifecycle {i}: {e:#}"));
                }
            }
        }));
    }
    for w in workers {
        w.await.context("lifecycle worker panicked")?;
    }
    let drive_secs = started.elapsed().as_secs_f64();
    let ran = next.load(Ordering::SeqCst).min(config.lifecycles);

    // Settle: faults off, everything up.
    stop.store(true, Ordering::SeqCst);
    let (process_faults, injector_notes) =
        (&mut injector.0).await.context("fault injector panicked")?;
    let mut notes = injector_notes.other;
    let unexpected_exits = injector_notes.exits;
    clouds.set_fault_rate(0.0);
    let settle_start = tokio::time::Instant::now();
    procs.lock().await.revive_control(cp).await?;
    procs::wait_api_ready(cp, Duration::from_secs(90)).await?;
    procs.lock().await.revive(cp, &clouds).await?;

    let expected = driver.expected.lock().clone();
    let settle_deadline = settle_start + config.settle_timeout;
    let mut state;
    loop {
        state = gather(&client, &clouds, &nodes, &expected).await;
        match &state {
            Ok(s) if check::check(s).is_clean() => break,
            Ok(_) | Err(_) if tokio::time::Instant::now() > settle_deadline => break,
            Ok(_) => {}
            Err(e) => tracing::info!("gathering the final state: {e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let settle_secs = settle_start.elapsed().as_secs_f64();
    let mut state = state?;
    state.history = recorder.phases();
    // Read once, after settling: a duplicate stays in it for ever, so the settle loop above
    // (which waits for a clean check) must not see it.
    for c in &nodes {
        state.created.extend(clouds.created(*c).await?);
    }
    let procs = procs.lock().await;
    let now = procs.rss();
    for (kind, slots) in [("provider", &procs.providers), ("node-shim", &procs.shims)] {
        for (c, slot) in slots {
            let label = format!("{kind}-{}", c.name());
            if let (Some(b), Some(f)) = (slot.baseline_kib, now.get(&label)) {
                state.rss.push(RssSample {
                    process: label,
                    baseline_kib: b,
                    final_kib: *f,
                });
            }
        }
    }
    let findings = check::check(&state);

    let mut cloud_faults = BTreeMap::new();
    let mut forwarded = BTreeMap::new();
    for (c, p) in &clouds.proxies {
        let by_kind: BTreeMap<String, usize> = FaultKind::ALL
            .iter()
            .map(|k| (format!("{k:?}"), p.injected_kind(*k)))
            .collect();
        cloud_faults.insert(c.name().to_owned(), by_kind);
        forwarded.insert(c.name().to_owned(), p.forwarded_total());
    }
    let mut starts = BTreeMap::new();
    for (kind, slots) in [("provider", &procs.providers), ("node-shim", &procs.shims)] {
        for (c, slot) in slots {
            starts.insert(format!("{kind}-{}", c.name()), slot.starts);
        }
    }
    let (watch_lists, watch_errors) = recorder.counts();
    notes.extend(driver.slow.lock().iter().cloned());
    let lifecycles_by_kind = driver
        .ran
        .lock()
        .iter()
        .map(|(k, v)| (format!("{k:?}"), *v))
        .collect();
    Ok(Report {
        seed: config.seed,
        providers: config.providers.clone(),
        lifecycles: ran,
        lifecycles_by_kind,
        drive_secs,
        settle_secs,
        process_faults: process_faults
            .into_iter()
            .map(|(k, v)| (format!("{k:?}"), v))
            .collect(),
        cloud_faults,
        cloud_calls_forwarded: forwarded,
        starts,
        unexpected_exits,
        watch_lists,
        watch_errors,
        final_pods: state.pods.len(),
        final_workloads: state.workloads.len(),
        workloads_created: state.created.len(),
        counts: findings.counts(),
        findings,
        rss: state.rss.clone(),
        notes,
        log_dir: log_dir.display().to_string(),
    })
}

/// A task aborted when dropped: an early error must not leave the injector killing processes.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the injector saw besides its own faults.
#[derive(Debug, Default)]
struct InjectorNotes {
    /// Providers and shims that exited by themselves (then restarted).
    exits: Vec<String>,
    /// Faults that could not be applied, restarts that failed.
    other: Vec<String>,
}

/// Injects process faults until `stop`, from the seed; returns the counts and notes.
async fn inject(
    config: SoakConfig,
    cp: Arc<ControlPlane>,
    clouds: Arc<Clouds>,
    procs: Arc<Mutex<Procs>>,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<ProcessFault, usize>, InjectorNotes) {
    let mut rng = Rng::new(config.seed ^ 0xfa17_fa17);
    let mut counts = BTreeMap::new();
    let mut notes = InjectorNotes::default();
    let mut rounds = FaultRounds { round: Vec::new() };
    let (lo, hi) = config.fault_interval;
    loop {
        let pause = lo + (hi.saturating_sub(lo)).mul_f64(rng.unit());
        // Sleep in short steps so the end of the drive is not delayed by a long pause; meanwhile
        // restart what exited by itself, as a real installation's supervisor would.
        let until = tokio::time::Instant::now() + pause;
        while tokio::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match procs.lock().await.supervise(&cp, &clouds).await {
                Ok(exits) => {
                    for e in &exits {
                        tracing::warn!("{e}");
                    }
                    notes.exits.extend(exits);
                }
                Err(e) => notes
                    .other
                    .push(format!("restarting an exited process: {e:#}")),
            }
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let fault = rounds.next(&mut rng);
        let cloud = config.providers[rng.below(config.providers.len())];
        let down = Duration::from_millis(500 + rng.below(2500) as u64);
        tracing::info!(?fault, cloud = cloud.name(), "injecting");
        *counts.entry(fault).or_insert(0) += 1;
        if let Err(e) = apply(fault, cloud, down, &cp, &clouds, &procs).await {
            tracing::warn!(?fault, "fault injection: {e:#}");
            notes
                .other
                .push(format!("{fault:?} on {}: {e:#}", cloud.name()));
        }
    }
    (counts, notes)
}

async fn apply(
    fault: ProcessFault,
    cloud: Cloud,
    down: Duration,
    cp: &ControlPlane,
    clouds: &Clouds,
    procs: &Mutex<Procs>,
) -> anyhow::Result<()> {
    match fault {
        ProcessFault::KillShim | ProcessFault::KillProvider | ProcessFault::KillBoth => {
            let mut p = procs.lock().await;
            let (shim, provider) = match fault {
                ProcessFault::KillShim => (true, false),
                ProcessFault::KillProvider => (false, true),
                _ => (true, true),
            };
            if shim {
                p.kill(cloud, true).await?;
            }
            if provider {
                p.kill(cloud, false).await?;
            }
            drop(p);
            tokio::time::sleep(down).await;
            let mut p = procs.lock().await;
            if provider {
                p.start_provider(cloud, clouds).await?;
            }
            if shim {
                p.start_shim(cloud, cp)?;
            }
        }
        ProcessFault::HangProvider => {
            procs.lock().await.signal_provider(cloud, Signal::SIGSTOP)?;
            tokio::time::sleep(PROVIDER_TIMEOUT + Duration::from_secs(3)).await;
            procs.lock().await.signal_provider(cloud, Signal::SIGCONT)?;
        }
        ProcessFault::RestartApiServer => {
            procs
                .lock()
                .await
                .restart_control("kube-apiserver", cp)
                .await?;
        }
        ProcessFault::RestartEtcd => {
            procs.lock().await.restart_control("etcd", cp).await?;
        }
    }
    Ok(())
}

/// Reads the final state: the soak's pods, every node's cloud workloads, the expectations.
async fn gather(
    client: &kube::Client,
    clouds: &Clouds,
    nodes: &[Cloud],
    expected: &BTreeMap<String, Expected>,
) -> anyhow::Result<FinalState> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let mut state = FinalState {
        expected: expected.clone(),
        ..Default::default()
    };
    for p in pods.list(&ListParams::default()).await?.items {
        let status = p.status.as_ref();
        state.pods.push(PodState {
            name: format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            ),
            uid: p.metadata.uid.clone().unwrap_or_default(),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            terminating: p.metadata.deletion_timestamp.is_some(),
            deployment: p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(DEPLOYMENT_LABEL))
                .map(|d| format!("{NAMESPACE}/{d}")),
        });
    }
    for c in nodes {
        let d = deployments.get(&deployment_name(*c)).await?;
        let replicas = d.spec.replicas.unwrap_or(1);
        state.deployments.insert(
            format!("{NAMESPACE}/{}", deployment_name(*c)),
            (c.node(), replicas),
        );
        state.workloads.extend(clouds.workloads(*c).await?);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_rounds_inject_every_kind_equally_often_in_a_seeded_order() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            let mut rounds = FaultRounds { round: Vec::new() };
            (0..60).map(|_| rounds.next(&mut rng)).collect::<Vec<_>>()
        };
        let faults = draw(777);
        for kind in ProcessFault::ALL {
            assert_eq!(
                faults.iter().filter(|f| **f == kind).count(),
                10,
                "{kind:?}"
            );
        }
        // Each round of six holds every kind once.
        for round in faults.chunks(6) {
            let kinds: std::collections::BTreeSet<_> = round.iter().collect();
            assert_eq!(kinds.len(), 6, "{round:?}");
        }
        assert_eq!(faults, draw(777), "the same seed, the same schedule");
        assert_ne!(faults, draw(778), "another seed, another order");
    }
}
