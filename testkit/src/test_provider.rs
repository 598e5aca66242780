//! A PodProvider for tests: it speaks the real gRPC contract over a real socket (served by
//! `provider_common::serve`, like the cloud providers), keeps pods in memory, and lets a test steer
//! it through [`Control`]: start delay, create failures, transient errors, losing a pod, readiness,
//! and counting the calls it received.
//!
//! Beyond the pod lifecycle it serves the streaming and stats RPCs for real:
//! - Logs: every app container instance keeps a growing log of timestamped lines; the first line,
//!   written when the pod starts running, is `"<container> started"`. [`Control::append_log`] adds
//!   lines. Every `GetContainerLogs` option is honoured, `follow` included. `previous` serves the
//!   log of the instance before the last [`Control::restart_container`], and is NOT_FOUND when the
//!   container never restarted.
//! - Exec runs a real local process (argv as given, no shell added) in a per-container temporary
//!   directory with the container's environment, with pipes or, with `tty`, a pseudo-terminal whose
//!   session leader it is. It is killed (its whole process group) when the caller goes away or the
//!   container stops.
//! - Attach talks to an emulated `cat`-like main process: stdin lines from attached clients are
//!   appended to the container's log, and every line appended to the log (by stdin or
//!   [`Control::append_log`]) reaches the attached clients' stdout.
//! - PortForward answers UNIMPLEMENTED.
//! - GetStats reports synthetic, steerable figures ([`Control::set_usage`]).

mod attach;
mod exec;
mod logs;
mod stats;

use parking_lot::Mutex;
use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use podprovider_proto::v1::{
    self as pb, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, CreatePodRequest, CreatePodResponse, DeletePodRequest,
    DeletePodResponse, GetNodeInfoRequest, GetPodRequest, GetPodResponse, ListPodsRequest,
    ListPodsResponse, NodeInfo, Pod, PodPhase, PodRef, PodStatus, WatchPodsEvent, WatchPodsRequest,
    container_state, watch_pods_event,
};
use provider_common::ListenAddr;
use tokio::sync::{broadcast, oneshot, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub use self::stats::{
    CACHE_BYTES, DEFAULT_NANO_CORES, DEFAULT_WORKING_SET_BYTES, rss_bytes, usage_bytes,
};
use self::{
    logs::{Instance, LogLine},
    stats::Usage,
};

/// RPC names as counted by [`Control::calls`].
pub mod rpc {
    /// `CreatePod`.
    pub const CREATE: &str = "CreatePod";
    /// `DeletePod`.
    pub const DELETE: &str = "DeletePod";
    /// `UpdatePod`.
    pub const UPDATE: &str = "UpdatePod";
    /// `GetPod`.
    pub const GET: &str = "GetPod";
    /// `ListPods`.
    pub const LIST: &str = "ListPods";
    /// `WatchPods`.
    pub const WATCH: &str = "WatchPods";
    /// `Ping`.
    pub const PING: &str = "Ping";
    /// `GetNodeInfo`.
    pub const NODE_INFO: &str = "GetNodeInfo";
    /// `GetContainerLogs`.
    pub const LOGS: &str = "GetContainerLogs";
    /// `Exec`.
    pub const EXEC: &str = "Exec";
    /// `Attach`.
    pub const ATTACH: &str = "Attach";
    /// `PortForward`.
    pub const PORT_FORWARD: &str = "PortForward";
    /// `GetStats`.
    pub const STATS: &str = "GetStats";
}

struct StoredPod {
    pod: Pod,
    status: PodStatus,
    /// Per app container, keyed by name.
    containers: HashMap<String, ContainerRuntime>,
}

/// What the provider keeps per app container beyond its status.
#[derive(Default)]
struct ContainerRuntime {
    /// The current (or last) instance: its log and, once ended, its exit. `None` until the
    /// container first starts. Shared (weakly) with attach sessions, which write stdin into it.
    current: Option<Arc<watch::Sender<Instance>>>,
    /// The log of the instance before the last restart.
    previous: Option<Vec<LogLine>>,
    usage: Usage,
    /// Working directory of exec'd processes, made on the first exec; removed with the pod once
    /// no exec uses it any more.
    workdir: Option<Arc<tempfile::TempDir>>,
}

impl StoredPod {
    fn new(pod: Pod, status: PodStatus) -> Self {
        let containers = pod
            .containers
            .iter()
            .map(|c| (c.name.clone(), ContainerRuntime::default()))
            .collect();
        Self {
            pod,
            status,
            containers,
        }
    }

    fn describe(&self) -> String {
        self.status
            .pod_ref
            .as_ref()
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .unwrap_or_default()
    }

    /// Starts a new instance of every app container (their "main processes").
    fn start_containers(&mut self) {
        for (name, rt) in &mut self.containers {
            rt.current = Some(Arc::new(watch::Sender::new(Instance::started(name))));
            rt.usage.start();
        }
    }

    /// Ends the main process of every running app container: followers and attached clients see
    /// the exit.
    fn stop_containers(&mut self, code: i32, message: &str) {
        for rt in self.containers.values_mut() {
            rt.usage.stop();
            if let Some(current) = &rt.current {
                end_instance(current, code, message);
            }
        }
    }

    /// The container named `name`; an empty name means the only one, as the API server defaults.
    fn container_name(&self, name: &str) -> Result<String, Status> {
        if name.is_empty() {
            return match self.pod.containers.as_slice() {
                [only] => Ok(only.name.clone()),
                _ => Err(Status::invalid_argument(format!(
                    "a container name is required: pod {} has several containers",
                    self.describe()
                ))),
            };
        }
        if self.containers.contains_key(name) {
            Ok(name.to_owned())
        } else {
            Err(Status::not_found(format!(
                "container {name:?} is not in pod {}",
                self.describe()
            )))
        }
    }

    /// The running instance of container `name`, for exec and attach.
    fn running_instance(&self, name: &str) -> Result<Arc<watch::Sender<Instance>>, Status> {
        let current = self.containers.get(name).and_then(|rt| rt.current.as_ref());
        match current {
            Some(current)
                if self.status.phase == PodPhase::Running as i32
                    && current.borrow().exit.is_none() =>
            {
                Ok(current.clone())
            }
            _ => Err(Status::failed_precondition(format!(
                "container {name:?} of pod {} is not running (pod phase {})",
                self.describe(),
                self.status.phase().as_str_name()
            ))),
        }
    }
}

/// An env value as the container sees it: pod-IP fields (`EnvVar.pod_field`) are filled in with the
/// address this provider gave the pod, as a cloud fills in its own.
fn pod_field_value(e: &pb::EnvVar, status: &PodStatus) -> String {
    match e.pod_field.as_str() {
        "status.podIP" => status.pod_ip.clone(),
        "status.podIPs" => status.pod_ips.join(","),
        _ => e.value.clone(),
    }
}

fn end_instance(instance: &watch::Sender<Instance>, code: i32, message: &str) {
    instance.send_if_modified(|i| {
        if i.exit.is_some() {
            return false;
        }
        i.exit = Some(pb::ExitStatus {
            code,
            message: message.to_owned(),
        });
        true
    });
}

struct Settings {
    start_delay: Duration,
    stop_delay: Duration,
    create_failure: Option<String>,
    ready: Option<(String, String)>,
}

struct State {
    pods: Mutex<HashMap<String, StoredPod>>,
    settings: Mutex<Settings>,
    transient_failures: AtomicU32,
    calls: Mutex<HashMap<&'static str, usize>>,
    delete_graces: Mutex<HashMap<String, Option<i64>>>,
    next_ip: AtomicUsize,
    events: broadcast::Sender<WatchPodsEvent>,
    node_info: Mutex<NodeInfo>,
}

/// The steering handle; clones share one provider state.
#[derive(Clone)]
pub struct Control {
    state: Arc<State>,
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    /// A provider with no pods, ready, starting pods at once.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(65_536);
        let node_info = NodeInfo {
            provider_name: "test".into(),
            provider_version: "0.0.1".into(),
            capacity: [
                ("cpu", "1000"),
                ("memory", "4Ti"),
                ("pods", "20000"),
                ("ephemeral-storage", "10Ti"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            operating_system: "linux".into(),
            architecture: "amd64".into(),
            revision: "1".into(),
            system_info: Some(pb::NodeSystemInfo {
                os_image: "test provider".into(),
                kernel_version: String::new(),
                container_runtime_version: "test://0.0.1".into(),
            }),
            ..Default::default()
        };
        Self {
            state: Arc::new(State {
                pods: Mutex::default(),
                settings: Mutex::new(Settings {
                    start_delay: Duration::ZERO,
                    stop_delay: Duration::ZERO,
                    create_failure: None,
                    ready: None,
                }),
                transient_failures: AtomicU32::new(0),
                calls: Mutex::default(),
                delete_graces: Mutex::default(),
                next_ip: AtomicUsize::new(1),
                events,
                node_info: Mutex::new(node_info),
            }),
        }
    }

    /// Serves the provider on `addr` until the returned server is stopped or dropped.
    pub async fn serve(&self, addr: ListenAddr) -> anyhow::Result<RunningServer> {
        let (stop, stopped) = oneshot::channel::<()>();
        let provider = TestProvider {
            state: self.state.clone(),
        };
        let serve_addr = addr.clone();
        let task = tokio::spawn(async move {
            provider_common::serve(provider, &serve_addr, None, async {
                let _ = stopped.await;
            })
            .await
        });
        // Wait until it accepts connections, so callers can connect at once.
        for _ in 0..100 {
            let up = match &addr {
                ListenAddr::Tcp(sock) => tokio::net::TcpStream::connect(sock).await.is_ok(),
                ListenAddr::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
            };
            if up {
                return Ok(RunningServer {
                    stop: Some(stop),
                    task: Some(task),
                });
            }
            if task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match task.await {
            Ok(Err(err)) => Err(err.into()),
            _ => anyhow::bail!("test provider did not start on {addr}"),
        }
    }

    /// Pods take this long from create to Running.
    pub fn set_start_delay(&self, delay: Duration) {
        self.state.settings.lock().start_delay = delay;
    }

    /// Containers take this long to stop after a graceful delete (capped at the grace period).
    pub fn set_stop_delay(&self, delay: Duration) {
        self.state.settings.lock().stop_delay = delay;
    }

    /// Every create fails with INVALID_ARGUMENT and this message (None: creates succeed).
    pub fn fail_creates(&self, message: Option<&str>) {
        self.state.settings.lock().create_failure = message.map(str::to_owned);
    }

    /// The next `n` calls of any pod lifecycle RPC (create, update, delete, get, list, watch) fail
    /// with UNAVAILABLE. Logs, exec, attach, port-forward and stats are not affected, so that a
    /// shim polling stats cannot use up failures meant for the lifecycle.
    pub fn fail_next_calls(&self, n: u32) {
        self.state.transient_failures.store(n, Ordering::SeqCst);
    }

    /// Ping answers not ready with this reason and message (None: ready).
    pub fn set_not_ready(&self, reason: Option<(&str, &str)>) {
        self.state.settings.lock().ready = reason.map(|(r, m)| (r.to_owned(), m.to_owned()));
    }

    /// Replaces the node capacity and bumps the node-info revision.
    pub fn set_capacity(&self, capacity: &[(&str, &str)]) {
        let mut info = self.state.node_info.lock();
        info.capacity = capacity
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let revision: u64 = info.revision.parse().unwrap_or(0);
        info.revision = (revision + 1).to_string();
    }

    /// The node labels and taints (key, value, effect) the provider suggests, as a provider
    /// might get them wrong.
    pub fn set_node_suggestions(&self, labels: &[(&str, &str)], taints: &[(&str, &str, &str)]) {
        let mut info = self.state.node_info.lock();
        info.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        info.taints = taints
            .iter()
            .map(|(key, value, effect)| pb::Taint {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
                effect: (*effect).to_owned(),
            })
            .collect();
        let revision: u64 = info.revision.parse().unwrap_or(0);
        info.revision = (revision + 1).to_string();
    }

    /// Forgets a pod as a cloud might lose it, and reports it deleted on the watch stream.
    pub fn lose_pod(&self, uid: &str) -> bool {
        let removed = self.state.pods.lock().remove(uid);
        if let Some(mut stored) = removed {
            stored.stop_containers(137, "killed: pod lost");
            let _ = self.state.events.send(deleted_event(&stored.status));
            return true;
        }
        false
    }

    /// Terminates every container of a pod with `exit_code` (restartPolicy Never semantics): log
    /// followers end, attached clients receive `exit` with this code, exec'd processes are killed.
    pub fn finish_pod(&self, uid: &str, exit_code: i32) -> bool {
        let mut pods = self.state.pods.lock();
        let Some(stored) = pods.get_mut(uid) else {
            return false;
        };
        stored.stop_containers(exit_code, "");
        terminate(
            &mut stored.status,
            exit_code,
            if exit_code == 0 { "Completed" } else { "Error" },
        );
        stored.status.phase = if exit_code == 0 {
            PodPhase::Succeeded
        } else {
            PodPhase::Failed
        } as i32;
        let _ = self.state.events.send(status_event(&stored.status));
        true
    }

    /// Reports `phase` for a pod as if the cloud said so (e.g. a bogus Pending for a running pod, to
    /// check that the shim never moves status backwards).
    pub fn report_phase(&self, uid: &str, phase: PodPhase) -> bool {
        let mut pods = self.state.pods.lock();
        let Some(stored) = pods.get_mut(uid) else {
            return false;
        };
        stored.status.phase = phase as i32;
        if phase == PodPhase::Pending {
            for c in &mut stored.status.container_statuses {
                c.ready = false;
            }
        }
        let _ = self.state.events.send(status_event(&stored.status));
        true
    }

    /// Appends `text` to the log of the container's current (or, once terminated, last) instance,
    /// one line per `\n`-separated part, each stamped with the current time; one trailing newline
    /// ends the last line rather than adding an empty one. Followers (`logs -f`) and attached
    /// clients receive the lines. False if the pod or container is unknown or the container never
    /// started.
    pub fn append_log(&self, uid: &str, container: &str, text: &str) -> bool {
        let pods = self.state.pods.lock();
        let current = pods
            .get(uid)
            .and_then(|s| s.containers.get(container))
            .and_then(|rt| rt.current.as_ref());
        match current {
            Some(current) => {
                current.send_modify(|i| i.push(text));
                true
            }
            None => false,
        }
    }

    /// The lines (without timestamps) of the container's current (or last) instance's log; `None`
    /// if the pod or container is unknown or the container never started.
    pub fn log_lines(&self, uid: &str, container: &str) -> Option<Vec<String>> {
        let pods = self.state.pods.lock();
        let current = pods.get(uid)?.containers.get(container)?.current.as_ref()?;
        let lines = current
            .borrow()
            .lines
            .iter()
            .map(|l| l.text.clone())
            .collect();
        Some(lines)
    }

    /// Restarts one running container as if its main process exited with `exit_code` and the
    /// cloud started it again: its log becomes the `previous` log, a new instance starts with a
    /// fresh log (`"<container> started"`), attached clients get `exit`, followers end, exec'd
    /// processes are killed; the status shows `restart_count` + 1 and the terminated `last_state`.
    /// False if the pod or container is unknown or not running.
    pub fn restart_container(&self, uid: &str, container: &str, exit_code: i32) -> bool {
        let mut pods = self.state.pods.lock();
        let Some(stored) = pods.get_mut(uid) else {
            return false;
        };
        let Ok(current) = stored.running_instance(container) else {
            return false;
        };
        end_instance(&current, exit_code, "");
        let Some(rt) = stored.containers.get_mut(container) else {
            return false;
        };
        // A copy: followers of the ended instance may still be sending its last lines.
        rt.previous = Some(current.borrow().lines.clone());
        rt.current = Some(Arc::new(watch::Sender::new(Instance::started(container))));
        if let Some(c) = stored
            .status
            .container_statuses
            .iter_mut()
            .find(|c| c.name == container)
        {
            let started_at = match c.state.as_ref().and_then(|s| s.state.as_ref()) {
                Some(container_state::State::Running(r)) => r.started_at,
                _ => None,
            };
            c.restart_count += 1;
            c.last_state = state(container_state::State::Terminated(
                ContainerStateTerminated {
                    exit_code,
                    reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                    started_at,
                    finished_at: Some(now()),
                    ..Default::default()
                },
            ));
            c.state = state_running();
        }
        let _ = self.state.events.send(status_event(&stored.status));
        true
    }

    /// Sets the CPU rate (nanocores; 1 core = 1e9) and working set a container reports in
    /// GetStats from now on. Cumulative CPU time accrues at the rate in force while the container
    /// runs, so it never decreases. Memory figures derive from the working set: `usage_bytes` =
    /// [`usage_bytes`]`(ws)` and `rss_bytes` = [`rss_bytes`]`(ws)`. Containers never set report
    /// [`DEFAULT_NANO_CORES`] and [`DEFAULT_WORKING_SET_BYTES`]. False if the pod or container is
    /// unknown.
    pub fn set_usage(
        &self,
        uid: &str,
        container: &str,
        nano_cores: u64,
        working_set_bytes: u64,
    ) -> bool {
        let mut pods = self.state.pods.lock();
        match pods
            .get_mut(uid)
            .and_then(|s| s.containers.get_mut(container))
        {
            Some(rt) => {
                rt.usage.set(nano_cores, working_set_bytes);
                true
            }
            None => false,
        }
    }

    /// The grace period of the last DeletePod for `uid` (`None` if never deleted or not given).
    pub fn last_delete_grace(&self, uid: &str) -> Option<i64> {
        self.state.delete_graces.lock().get(uid).copied().flatten()
    }

    /// How many times `rpc` (see [`rpc`]) was called.
    pub fn calls(&self, rpc: &str) -> usize {
        self.state.calls.lock().get(rpc).copied().unwrap_or(0)
    }

    /// Resets every call counter to zero.
    pub fn reset_calls(&self) {
        self.state.calls.lock().clear();
    }

    /// The pods the provider runs, as received (resolved by the shim).
    pub fn pods(&self) -> Vec<Pod> {
        self.state
            .pods
            .lock()
            .values()
            .map(|s| s.pod.clone())
            .collect()
    }

    /// One pod's current status.
    pub fn status(&self, uid: &str) -> Option<PodStatus> {
        self.state.pods.lock().get(uid).map(|s| s.status.clone())
    }
}

/// A test provider being served; stops when [`stop`](Self::stop)ped or dropped.
pub struct RunningServer {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), provider_common::server::Error>>>,
}

impl RunningServer {
    /// Stops serving (open streams end) and waits until the socket is closed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // Open WatchPods streams would hold a graceful shutdown forever; don't wait on them.
            match tokio::time::timeout(Duration::from_secs(2), task).await {
                Ok(joined) => joined??,
                Err(_) => tracing::debug!("test provider shutdown timed out; streams were open"),
            }
        }
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct TestProvider {
    state: Arc<State>,
}

fn status_event(status: &PodStatus) -> WatchPodsEvent {
    WatchPodsEvent {
        event: Some(watch_pods_event::Event::Status(status.clone())),
    }
}

fn deleted_event(status: &PodStatus) -> WatchPodsEvent {
    WatchPodsEvent {
        event: Some(watch_pods_event::Event::Deleted(
            status.pod_ref.clone().unwrap_or_default(),
        )),
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn state(s: container_state::State) -> Option<ContainerState> {
    Some(ContainerState { state: Some(s) })
}

fn terminate(status: &mut PodStatus, exit_code: i32, reason: &str) {
    for c in &mut status.container_statuses {
        let started_at = match c.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(container_state::State::Running(r)) => r.started_at,
            _ => None,
        };
        c.ready = false;
        c.state = state(container_state::State::Terminated(
            ContainerStateTerminated {
                exit_code,
                reason: reason.into(),
                started_at,
                finished_at: Some(now()),
                ..Default::default()
            },
        ));
    }
}

impl TestProvider {
    fn count(&self, rpc: &'static str) {
        *self.state.calls.lock().entry(rpc).or_default() += 1;
    }

    fn transient_failure(&self) -> Result<(), Status> {
        let failed = self
            .state
            .transient_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            Err(Status::unavailable("injected transient failure"))
        } else {
            Ok(())
        }
    }

    fn start_later(&self, uid: String, delay: Duration) {
        let state = self.state.clone();
        let run = move || {
            let mut pods = state.pods.lock();
            let Some(stored) = pods.get_mut(&uid) else {
                return;
            };
            if stored.status.phase != PodPhase::Pending as i32 {
                return;
            }
            stored.status.phase = PodPhase::Running as i32;
            stored.status.start_time = Some(now());
            for c in &mut stored.status.container_statuses {
                c.ready = true;
                c.started = true;
                c.state = state_running();
            }
            stored.start_containers();
            let _ = state.events.send(status_event(&stored.status));
        };
        if delay.is_zero() {
            run();
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                run();
            });
        }
    }
}

fn state_running() -> Option<ContainerState> {
    state(container_state::State::Running(ContainerStateRunning {
        started_at: Some(now()),
    }))
}

fn require_ref(r: Option<&PodRef>) -> Result<&PodRef, Status> {
    match r {
        Some(r) if !r.uid.is_empty() && !r.name.is_empty() && !r.namespace.is_empty() => Ok(r),
        _ => Err(Status::invalid_argument(
            "pod ref needs namespace, name and uid",
        )),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl podprovider_proto::PodProvider for TestProvider {
    async fn get_node_info(
        &self,
        _request: Request<GetNodeInfoRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        self.count(rpc::NODE_INFO);
        Ok(Response::new(self.state.node_info.lock().clone()))
    }

    async fn ping(
        &self,
        _request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        self.count(rpc::PING);
        let revision = self.state.node_info.lock().revision.clone();
        let ready = self.state.settings.lock().ready.clone();
        Ok(Response::new(match ready {
            None => pb::PingResponse {
                ready: true,
                node_info_revision: revision,
                ..Default::default()
            },
            Some((reason, message)) => pb::PingResponse {
                ready: false,
                reason,
                message,
                node_info_revision: revision,
            },
        }))
    }

    async fn create_pod(
        &self,
        request: Request<CreatePodRequest>,
    ) -> Result<Response<CreatePodResponse>, Status> {
        self.count(rpc::CREATE);
        self.transient_failure()?;
        let pod = request
            .into_inner()
            .pod
            .ok_or_else(|| Status::invalid_argument("pod is required"))?;
        let pod_ref = require_ref(pod.pod_ref.as_ref())?.clone();
        let (delay, failure) = {
            let s = self.state.settings.lock();
            (s.start_delay, s.create_failure.clone())
        };
        if let Some(message) = failure {
            return Err(Status::invalid_argument(message));
        }
        let status = {
            let mut pods = self.state.pods.lock();
            if let Some(existing) = pods.get(&pod_ref.uid) {
                return Ok(Response::new(CreatePodResponse {
                    status: Some(existing.status.clone()),
                }));
            }
            let n = self.state.next_ip.fetch_add(1, Ordering::SeqCst);
            let ip = format!("10.{}.{}.{}", 200 + (n >> 16) % 50, (n >> 8) % 256, n % 256);
            let status = PodStatus {
                pod_ref: Some(pod_ref.clone()),
                phase: PodPhase::Pending as i32,
                pod_ip: ip.clone(),
                pod_ips: vec![ip],
                container_statuses: pod
                    .containers
                    .iter()
                    .map(|c| ContainerStatus {
                        name: c.name.clone(),
                        image: c.image.clone(),
                        state: state(container_state::State::Waiting(ContainerStateWaiting {
                            reason: "ContainerCreating".into(),
                            message: String::new(),
                        })),
                        ..Default::default()
                    })
                    .collect(),
                cloud_id: format!("test://{}", pod_ref.uid),
                ..Default::default()
            };
            pods.insert(pod_ref.uid.clone(), StoredPod::new(pod, status.clone()));
            let _ = self.state.events.send(status_event(&status));
            status
        };
        self.start_later(pod_ref.uid, delay);
        Ok(Response::new(CreatePodResponse {
            status: Some(status),
        }))
    }

    async fn update_pod(
        &self,
        request: Request<pb::UpdatePodRequest>,
    ) -> Result<Response<pb::UpdatePodResponse>, Status> {
        self.count(rpc::UPDATE);
        self.transient_failure()?;
        let pod = request
            .into_inner()
            .pod
            .ok_or_else(|| Status::invalid_argument("pod is required"))?;
        let uid = require_ref(pod.pod_ref.as_ref())?.uid.clone();
        let mut pods = self.state.pods.lock();
        let stored = pods
            .get_mut(&uid)
            .ok_or_else(|| Status::not_found(format!("pod {uid} is not known")))?;
        // Applied in place, like a cloud that can swap images: reported images follow the spec.
        for c in &mut stored.status.container_statuses {
            if let Some(spec) = pod.containers.iter().find(|s| s.name == c.name) {
                c.image.clone_from(&spec.image);
            }
        }
        stored.pod = pod;
        let _ = self.state.events.send(status_event(&stored.status));
        Ok(Response::new(pb::UpdatePodResponse {
            status: Some(stored.status.clone()),
        }))
    }

    async fn delete_pod(
        &self,
        request: Request<DeletePodRequest>,
    ) -> Result<Response<DeletePodResponse>, Status> {
        self.count(rpc::DELETE);
        self.transient_failure()?;
        let req = request.into_inner();
        let uid = require_ref(req.pod_ref.as_ref())?.uid.clone();
        self.state
            .delete_graces
            .lock()
            .insert(uid.clone(), req.grace_period_seconds);
        let stop_delay = self.state.settings.lock().stop_delay;
        let grace = {
            let pods = self.state.pods.lock();
            let Some(stored) = pods.get(&uid) else {
                return Ok(Response::new(DeletePodResponse { found: false }));
            };
            req.grace_period_seconds
                .or(stored.pod.termination_grace_period_seconds)
                .unwrap_or(30)
        };
        let wait = stop_delay.min(Duration::from_secs(u64::try_from(grace).unwrap_or(0)));
        let state = self.state.clone();
        let finish = move || {
            let removed = state.pods.lock().remove(&uid);
            if let Some(mut stored) = removed {
                stored.stop_containers(0, "killed: pod deleted");
                terminate(&mut stored.status, 0, "Completed");
                let _ = state.events.send(status_event(&stored.status));
                let _ = state.events.send(deleted_event(&stored.status));
            }
        };
        if wait.is_zero() {
            finish();
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                finish();
            });
        }
        Ok(Response::new(DeletePodResponse { found: true }))
    }

    async fn get_pod(
        &self,
        request: Request<GetPodRequest>,
    ) -> Result<Response<GetPodResponse>, Status> {
        self.count(rpc::GET);
        self.transient_failure()?;
        let req = request.into_inner();
        let uid = &require_ref(req.pod_ref.as_ref())?.uid;
        let status = self.state.pods.lock().get(uid).map(|s| s.status.clone());
        match status {
            Some(status) => Ok(Response::new(GetPodResponse {
                status: Some(status),
            })),
            None => Err(Status::not_found(format!("pod {uid} is not known"))),
        }
    }

    async fn list_pods(
        &self,
        request: Request<ListPodsRequest>,
    ) -> Result<Response<ListPodsResponse>, Status> {
        self.count(rpc::LIST);
        self.transient_failure()?;
        let node = request.into_inner().node_name;
        let pods = self
            .state
            .pods
            .lock()
            .values()
            .filter(|s| node.is_empty() || s.pod.node_name == node)
            .map(|s| s.status.clone())
            .collect();
        Ok(Response::new(ListPodsResponse { pods }))
    }

    async fn watch_pods(
        &self,
        _request: Request<WatchPodsRequest>,
    ) -> Result<Response<BoxStream<WatchPodsEvent>>, Status> {
        self.count(rpc::WATCH);
        self.transient_failure()?;
        // Subscribe before taking the snapshot so that no change falls between the two.
        let changes = self.state.events.subscribe();
        let snapshot: Vec<WatchPodsEvent> = self
            .state
            .pods
            .lock()
            .values()
            .map(|s| status_event(&s.status))
            .collect();
        let stream = watch_stream(snapshot, changes);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_container_logs(
        &self,
        request: Request<pb::GetContainerLogsRequest>,
    ) -> Result<Response<BoxStream<pb::LogChunk>>, Status> {
        self.count(rpc::LOGS);
        let req = request.into_inner();
        let query = logs::Query::from_request(&req)?;
        let source = {
            let pods = self.state.pods.lock();
            let stored = find_pod(&pods, req.pod_ref.as_ref())?;
            let name = stored.container_name(&req.container)?;
            let rt = stored.containers.get(&name);
            if req.previous {
                let previous = rt.and_then(|rt| rt.previous.clone()).ok_or_else(|| {
                    Status::not_found(format!(
                        "previous terminated container {name:?} in pod {} not found",
                        stored.describe()
                    ))
                })?;
                logs::Source::Previous(previous)
            } else {
                let current = rt.and_then(|rt| rt.current.as_ref()).ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "container {name:?} in pod {} is waiting to start",
                        stored.describe()
                    ))
                })?;
                logs::Source::Current(current.subscribe())
            }
        };
        Ok(Response::new(logs::stream(source, query)))
    }

    async fn exec(
        &self,
        request: Request<Streaming<pb::ExecRequest>>,
    ) -> Result<Response<BoxStream<pb::StreamOutput>>, Status> {
        self.count(rpc::EXEC);
        let mut input = request.into_inner();
        let start = match input.message().await? {
            Some(pb::ExecRequest {
                request: Some(pb::exec_request::Request::Start(start)),
            }) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "the first exec message must be start",
                ));
            }
        };
        if start.command.is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        let target = {
            let mut pods = self.state.pods.lock();
            let stored = find_pod_mut(&mut pods, start.pod_ref.as_ref())?;
            let name = stored.container_name(&start.container)?;
            let instance = stored.running_instance(&name)?;
            let env = stored
                .pod
                .containers
                .iter()
                .find(|c| c.name == name)
                .map(|c| {
                    c.env
                        .iter()
                        .map(|e| (e.name.clone(), pod_field_value(e, &stored.status)))
                        .collect()
                })
                .unwrap_or_default();
            let workdir = match stored.containers.get_mut(&name) {
                Some(rt) => match &rt.workdir {
                    Some(dir) => dir.clone(),
                    None => {
                        let dir = Arc::new(
                            tempfile::Builder::new()
                                .prefix("vk-test-exec-")
                                .tempdir()
                                .map_err(|e| {
                                    Status::internal(format!(
                                        "cannot make the exec working directory: {e}"
                                    ))
                                })?,
                        );
                        rt.workdir = Some(dir.clone());
                        dir
                    }
                },
                None => return Err(Status::internal("container runtime state is missing")),
            };
            exec::Target {
                container: instance.subscribe(),
                workdir,
                env,
            }
        };
        Ok(Response::new(exec::start(start, target, input)))
    }

    async fn attach(
        &self,
        request: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Response<BoxStream<pb::StreamOutput>>, Status> {
        self.count(rpc::ATTACH);
        let mut input = request.into_inner();
        let start = match input.message().await? {
            Some(pb::AttachRequest {
                request: Some(pb::attach_request::Request::Start(start)),
            }) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "the first attach message must be start",
                ));
            }
        };
        let instance = {
            let pods = self.state.pods.lock();
            let stored = find_pod(&pods, start.pod_ref.as_ref())?;
            let name = stored.container_name(&start.container)?;
            stored.running_instance(&name)?
        };
        Ok(Response::new(attach::start(&start, &instance, input)))
    }

    async fn port_forward(
        &self,
        _request: Request<Streaming<pb::PortForwardRequest>>,
    ) -> Result<Response<BoxStream<pb::PortForwardResponse>>, Status> {
        self.count(rpc::PORT_FORWARD);
        Err(Status::unimplemented(
            "port-forward is not supported by the test provider",
        ))
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        self.count(rpc::STATS);
        let req = request.into_inner();
        let mut pods = self.state.pods.lock();
        let stats = pods
            .values_mut()
            .filter(|s| s.status.phase == PodPhase::Running as i32)
            .filter(|s| req.node_name.is_empty() || s.pod.node_name == req.node_name)
            .filter(|s| {
                req.pods.is_empty()
                    || s.status
                        .pod_ref
                        .as_ref()
                        .is_some_and(|r| req.pods.iter().any(|p| p.uid == r.uid))
            })
            .map(stats::pod_stats)
            .collect();
        Ok(Response::new(pb::GetStatsResponse { pods: stats }))
    }
}

fn find_pod<'a>(
    pods: &'a HashMap<String, StoredPod>,
    pod_ref: Option<&PodRef>,
) -> Result<&'a StoredPod, Status> {
    let uid = &require_ref(pod_ref)?.uid;
    pods.get(uid)
        .ok_or_else(|| Status::not_found(format!("pod {uid} is not known")))
}

fn find_pod_mut<'a>(
    pods: &'a mut HashMap<String, StoredPod>,
    pod_ref: Option<&PodRef>,
) -> Result<&'a mut StoredPod, Status> {
    let uid = &require_ref(pod_ref)?.uid;
    pods.get_mut(uid)
        .ok_or_else(|| Status::not_found(format!("pod {uid} is not known")))
}

/// Snapshot, `synced`, then changes; a lagging subscriber gets an error and must reconnect (and so
/// receives a fresh snapshot), exactly as the contract allows.
fn watch_stream(
    snapshot: Vec<WatchPodsEvent>,
    changes: broadcast::Receiver<WatchPodsEvent>,
) -> impl Stream<Item = Result<WatchPodsEvent, Status>> + Send {
    let synced = WatchPodsEvent {
        event: Some(watch_pods_event::Event::Synced(pb::Synced {})),
    };
    let head = tokio_stream::iter(snapshot.into_iter().chain([synced]).map(Ok));
    let tail = futures::stream::unfold(Some(changes), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(event) => Some((Ok(event), Some(rx))),
            Err(broadcast::error::RecvError::Lagged(n)) => Some((
                Err(Status::aborted(format!(
                    "watcher lagged by {n} events; reconnect"
                ))),
                None,
            )),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    futures::StreamExt::chain(head, tail)
}
