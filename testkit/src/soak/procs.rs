//! The soak's processes: a provider and a shim per cloud, and the control plane's etcd and
//! kube-apiserver once the soak has restarted them. Killing and restarting them is the process
//! half of the fault injection.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::Command;

use super::cloud::{Cloud, Clouds};
use crate::{
    ControlPlane, aci_emulator, bins::workspace_bin, eci_emulator, moto::Moto, ports::free_port,
    process::ManagedProcess, shim::spawn_shim,
};

/// The shim's deadline for each provider call: short, so a provider stopped for longer than it
/// (the hang fault) really times calls out.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);

/// One restartable process (a provider or a shim) and how many times it was started.
pub struct Slot {
    /// The running incarnation (`None` between a kill and the restart).
    pub process: Option<ManagedProcess>,
    /// Incarnations so far.
    pub starts: u32,
    /// Resident set of the first incarnation at the baseline, KiB.
    pub baseline_kib: Option<u64>,
}

/// Every process the soak starts and restarts.
pub struct Procs {
    log_dir: PathBuf,
    /// Provider listen addresses (kept across restarts: the shim is configured with it).
    pub provider_addr: BTreeMap<Cloud, String>,
    /// Providers by cloud.
    pub providers: BTreeMap<Cloud, Slot>,
    /// Shims by cloud.
    pub shims: BTreeMap<Cloud, Slot>,
    /// Control-plane components the soak restarted (by component name): the new incarnations
    /// are the soak's children, no longer the [`ControlPlane`]'s.
    pub control: BTreeMap<String, ManagedProcess>,
    /// Command lines of the control-plane components, read before their first restart.
    argv: BTreeMap<String, Vec<String>>,
    restarts: u32,
}

impl Procs {
    /// No process yet; logs go under `log_dir`.
    pub fn new(log_dir: &Path, clouds: &[Cloud]) -> anyhow::Result<Self> {
        let mut provider_addr = BTreeMap::new();
        for c in clouds {
            provider_addr.insert(*c, format!("127.0.0.1:{}", free_port()?));
        }
        Ok(Self {
            log_dir: log_dir.to_owned(),
            provider_addr,
            providers: BTreeMap::new(),
            shims: BTreeMap::new(),
            control: BTreeMap::new(),
            argv: BTreeMap::new(),
            restarts: 0,
        })
    }

    /// Starts (or restarts) `cloud`'s provider on its fixed address and waits until it listens.
    pub async fn start_provider(&mut self, cloud: Cloud, clouds: &Clouds) -> anyhow::Result<()> {
        let addr = self
            .provider_addr
            .get(&cloud)
            .context("unknown cloud")?
            .clone();
        let slot = self.providers.entry(cloud).or_insert(Slot {
            process: None,
            starts: 0,
            baseline_kib: None,
        });
        let mut cmd = provider_command(cloud, clouds, &addr)?;
        let name = format!("{}-{}", cloud.provider_bin(), slot.starts);
        let mut process = ManagedProcess::spawn(&name, &mut cmd, &self.log_dir)?;
        slot.starts += 1;
        // The provider rebuilds its state from the cloud before it listens; through a faulty
        // proxy that can take a while.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            process.ensure_running()?;
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{name} does not listen on {addr}: {}", process.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slot.process = Some(process);
        Ok(())
    }

    /// Starts (or restarts) `cloud`'s shim; each incarnation logs to its own file.
    pub fn start_shim(&mut self, cloud: Cloud, cp: &ControlPlane) -> anyhow::Result<()> {
        let addr = self
            .provider_addr
            .get(&cloud)
            .context("unknown cloud")?
            .clone();
        let slot = self.shims.entry(cloud).or_insert(Slot {
            process: None,
            starts: 0,
            baseline_kib: None,
        });
        let dir = self
            .log_dir
            .join(format!("shim-{}-{}", cloud.name(), slot.starts));
        std::fs::create_dir_all(&dir)?;
        let timeout = format!("--provider-timeout={}s", PROVIDER_TIMEOUT.as_secs());
        let process = spawn_shim(cp, &dir, &cloud.node(), &addr, &[&timeout])?;
        slot.starts += 1;
        slot.process = Some(process);
        Ok(())
    }

    /// SIGKILLs `cloud`'s provider (or shim) and reaps it.
    pub async fn kill(&mut self, cloud: Cloud, shim: bool) -> anyhow::Result<()> {
        let slots = if shim {
            &mut self.shims
        } else {
            &mut self.providers
        };
        if let Some(mut p) = slots.get_mut(&cloud).and_then(|s| s.process.take()) {
            let _ = p.signal(Signal::SIGKILL);
            p.stop(Duration::from_secs(5)).await?;
        }
        Ok(())
    }

    /// Sends `signal` to `cloud`'s provider (SIGSTOP / SIGCONT for the hang fault).
    pub fn signal_provider(&self, cloud: Cloud, signal: Signal) -> anyhow::Result<()> {
        self.providers
            .get(&cloud)
            .and_then(|s| s.process.as_ref())
            .context("provider not running")?
            .signal(signal)
    }

    /// Restarts whatever is not running (after a failed restart, or one that exited).
    pub async fn revive(&mut self, cp: &ControlPlane, clouds: &Clouds) -> anyhow::Result<()> {
        let all: Vec<Cloud> = self.provider_addr.keys().copied().collect();
        for cloud in all {
            let dead = |s: Option<&mut Slot>| {
                s.and_then(|s| s.process.as_mut())
                    .is_none_or(|p| p.exited().is_some())
            };
            if dead(self.providers.get_mut(&cloud)) {
                tracing::warn!(cloud = cloud.name(), "provider not running: restarting it");
                self.start_provider(cloud, clouds).await?;
            }
            if dead(self.shims.get_mut(&cloud)) {
                tracing::warn!(cloud = cloud.name(), "shim not running: restarting it");
                self.start_shim(cloud, cp)?;
            }
        }
        Ok(())
    }

    /// Restarts every provider or shim that exited by itself (not one the injector killed: that
    /// one's slot is empty until the injector restarts it), as the Deployment or service manager
    /// of a real installation would; returns what exited and why.
    pub async fn supervise(
        &mut self,
        cp: &ControlPlane,
        clouds: &Clouds,
    ) -> anyhow::Result<Vec<String>> {
        let mut exits = Vec::new();
        let all: Vec<Cloud> = self.provider_addr.keys().copied().collect();
        for cloud in all {
            for shim in [false, true] {
                let slots = if shim {
                    &mut self.shims
                } else {
                    &mut self.providers
                };
                let Some(slot) = slots.get_mut(&cloud) else {
                    continue;
                };
                let Some(status) = slot.process.as_mut().and_then(ManagedProcess::exited) else {
                    continue;
                };
                let Some(process) = slot.process.take() else {
                    continue;
                };
                let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
                // The shim prints `Error: ...` on its way out; else the last line says most.
                let why = log
                    .lines()
                    .find(|l| l.starts_with("Error:"))
                    .or_else(|| log.lines().last())
                    .unwrap_or_default()
                    .chars()
                    .take(400)
                    .collect::<String>();
                exits.push(format!(
                    "{} (start {}) exited by itself ({status}): {why} [{}]",
                    process.name(),
                    slot.starts,
                    process.log_path().display()
                ));
                if shim {
                    self.start_shim(cloud, cp)?;
                } else {
                    self.start_provider(cloud, clouds).await?;
                }
            }
        }
        Ok(exits)
    }

    /// Resident sets now, KiB, by process label.
    pub fn rss(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (kind, slots) in [("provider", &self.providers), ("node-shim", &self.shims)] {
            for (cloud, slot) in slots {
                if let Some(kib) = slot
                    .process
                    .as_ref()
                    .and_then(ManagedProcess::pid)
                    .and_then(rss_kib)
                {
                    out.insert(format!("{kind}-{}", cloud.name()), kib);
                }
            }
        }
        out
    }

    /// Records the baseline resident set of every process.
    pub fn record_baseline(&mut self) {
        for slots in [&mut self.providers, &mut self.shims] {
            for slot in slots.values_mut() {
                slot.baseline_kib = slot
                    .process
                    .as_ref()
                    .and_then(ManagedProcess::pid)
                    .and_then(rss_kib);
            }
        }
    }

    /// Kills the running `component` of the control plane (`kube-apiserver` or `etcd`) and
    /// starts it again with the same command line (same ports, certificates and etcd data).
    /// [`ControlPlane`] offers no restart and is not the soak's to change, so the process is
    /// found among this process's children by name and its command line read from `/proc`.
    pub async fn restart_control(
        &mut self,
        component: &str,
        cp: &ControlPlane,
    ) -> anyhow::Result<()> {
        match find_child(component) {
            Some((pid, argv)) => {
                self.argv.insert(component.to_owned(), argv);
                nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL)?;
                if let Some(mut old) = self.control.remove(component) {
                    old.stop(Duration::from_secs(5)).await?;
                } else {
                    // The ControlPlane's child: it is reaped when the ControlPlane drops; wait
                    // until it is a zombie (its ports are free then).
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while find_child(component).is_some_and(|(p, _)| p == pid) {
                        if tokio::time::Instant::now() > deadline {
                            bail!("{component} ({pid}) survived SIGKILL");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            // Not running (an earlier restart failed): start it from the command line kept then.
            None => {
                self.control.remove(component);
            }
        }
        let argv = self
            .argv
            .get(component)
            .with_context(|| format!("no running {component} and no command line kept"))?
            .clone();
        let (bin, args) = argv.split_first().context("empty command line")?;
        let logs = cp.dir().join("logs");
        // etcd refuses to bind its ports while connections to them linger (`address already in
        // use`, seen after SIGKILL): start again until it stays up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            self.restarts += 1;
            let name = format!("{component}-restart-{}", self.restarts);
            let mut cmd = Command::new(bin);
            cmd.args(args);
            let mut process = ManagedProcess::spawn(&name, &mut cmd, &logs)?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            if process.exited().is_none() {
                self.control.insert(component.to_owned(), process);
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{component} does not stay up: {}", process.log_tail(5));
            }
            tracing::info!("{name} exited at once; starting it again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        wait_api_ready(cp, Duration::from_secs(90)).await
    }

    /// Starts again whichever control-plane component the soak restarted and is not running
    /// (for the settle phase).
    pub async fn revive_control(&mut self, cp: &ControlPlane) -> anyhow::Result<()> {
        let components: Vec<String> = self.argv.keys().cloned().collect();
        for c in components {
            if find_child(&c).is_none() {
                tracing::warn!("{c} not running: starting it again");
                self.restart_control(&c, cp).await?;
            }
        }
        Ok(())
    }
}

/// Waits until the API server answers `/readyz` with `ok` (which includes etcd).
pub async fn wait_api_ready(cp: &ControlPlane, timeout: Duration) -> anyhow::Result<()> {
    let client = cp.client().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let req = http::Request::get("/readyz").body(Vec::new())?;
        match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            _ if tokio::time::Instant::now() > deadline => {
                bail!("API server not ready {timeout:?} after a restart")
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// `VmRSS` of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A live (not zombie) child of this process whose command name is `comm`: its pid and argv.
fn find_child(comm: &str) -> Option<(i32, Vec<String>)> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses: split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let (Some(state), Some(ppid)) = (rest.next(), rest.next()) else {
            continue;
        };
        if name != comm || state == "Z" || ppid.parse::<u32>().ok() != Some(me) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        return Some((pid, argv));
    }
    None
}

/// `cloud`'s provider command, talking to the cloud through its proxy, as the providers' own
/// end-to-end tests configure it.
fn provider_command(cloud: Cloud, clouds: &Clouds, listen: &str) -> anyhow::Result<Command> {
    let proxy = clouds.proxy_url(cloud)?;
    let mut cmd = Command::new(workspace_bin(&cloud.provider_bin())?);
    cmd.args(["--listen", listen, "--status-interval-seconds", "0.5"]);
    match cloud {
        Cloud::Eci => {
            cmd.args(eci_emulator::provider_flags(&proxy))
                .args([
                    "--full-sync-seconds",
                    "3",
                    "--log-filter",
                    "info,provider_eci=debug,provider_common=debug",
                ])
                .envs(eci_emulator::provider_env());
        }
        Cloud::Aci => {
            let emu = clouds.aci.as_ref().context("no ACI emulator")?;
            cmd.args(aci_emulator::provider_flags(&proxy, &emu.endpoint))
                .args([
                    "--instance-view-refresh-seconds",
                    "2",
                    "--log-filter",
                    "info,provider_aci=debug,provider_common=debug",
                ])
                .envs(aci_emulator::provider_env());
        }
        Cloud::Fargate => {
            let moto = clouds.moto.as_ref().context("no moto")?;
            cmd.args([
                "--cluster",
                super::cloud::CLUSTER,
                "--subnets",
                &moto.subnet,
                "--security-groups",
                &moto.security_group,
                "--log-group",
                super::cloud::LOG_GROUP,
                "--execution-role-arn",
                "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
                "--log-filter",
                "info,provider_fargate=debug,provider_common=debug",
            ])
            .envs(Moto::aws_env(&proxy));
        }
    }
    Ok(cmd)
}
