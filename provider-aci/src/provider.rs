//! The `PodProvider` implementation: pods as ACI container groups.

use parking_lot::Mutex;
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use podprovider_proto::v1::{
    AttachRequest, AttachStart, ExecRequest, ExecStart, GetContainerLogsRequest, GetStatsRequest,
    LogChunk, NodeInfo, Pod, PodEvent, PodPhase, PodRef, PodStats, PodStatus, StreamOutput, Taint,
    container_state::State as CState,
};
use provider_common::log_share::LogFollowers;
use provider_common::{
    Notice, Streamed, naming,
    rpc::{self, BoxStream},
    service,
    status_loop::StatusHub,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::{
    client::{Arm, Deletion},
    error::AzureError,
    exec::{self, Wrapper},
    logs,
    plan::{self, GroupSettings},
    status,
    wire::{ContainerGroup, TerminalSize},
};

/// How long a freshly created group may be missing from ARM's list (eventual consistency) before
/// the provider asks for it directly.
const LIST_GRACE: Duration = Duration::from_secs(60);
/// How often an accepted DELETE's operation is asked about, for how long, and how many DELETEs
/// of one group are sent when ACI reports the deletion failed.
const DELETE_POLL: Duration = Duration::from_secs(1);
const DELETE_FOLLOW_LIMIT: Duration = Duration::from_secs(600);
const DELETE_ATTEMPTS: u32 = 3;
/// How long a group's metrics answer is reused, and the window asked for (the latest minute
/// with a figure counts; Azure Monitor's lag is a few minutes at most).
const STATS_TTL: Duration = Duration::from_secs(30);
/// The metrics window: from the earliest container start (CPU time is summed over it), at
/// least 10 minutes, at most a day (a day of PT1M points is 1440 per series).
const STATS_MIN_WINDOW: Duration = Duration::from_secs(600);
const STATS_MAX_WINDOW: Duration = Duration::from_secs(86_400);

/// The metrics window for a group: since its earliest container start, within the bounds.
pub(crate) fn since_start(view: Option<&ContainerGroup>) -> Duration {
    let now = time::OffsetDateTime::now_utc();
    let earliest = view
        .into_iter()
        .flat_map(|g| g.properties.containers.iter())
        .filter_map(|c| c.properties.instance_view.as_ref())
        .filter_map(|v| v.current_state.as_ref())
        .filter_map(|s| s.start_time.as_deref())
        .filter_map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .min();
    let since = earliest.map_or(STATS_MIN_WINDOW, |t| {
        Duration::try_from(now - t).unwrap_or(STATS_MIN_WINDOW) + Duration::from_secs(60)
    });
    since.clamp(STATS_MIN_WINDOW, STATS_MAX_WINDOW)
}
/// GETs in flight at once during a poll.
const DETAIL_CONCURRENCY: usize = 8;

/// Provider settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What shapes groups.
    pub groups: GroupSettings,
    /// Node capacity.
    pub capacity: HashMap<String, String>,
    /// "linux" or "windows".
    pub operating_system: String,
    /// Re-fetch a group lacking an instance view in the list after this long.
    pub instance_view_refresh: Duration,
    /// At most this many such re-fetches per poll (stalest first).
    pub refreshes_per_poll: usize,
    /// The virtual nodes served; empty: any node of this cluster.
    pub node_names: Vec<String>,
}

/// A pod this provider runs.
#[derive(Clone, Debug)]
struct Tracked {
    pod_ref: PodRef,
    node: String,
    group: String,
    /// [`plan::Plan::public_hash`]: from the create, or the group's tag when adopted.
    public_hash: Option<String>,
    /// [`plan::Plan::content_hash`]: known only for groups this process created.
    content_hash: Option<String>,
    deleting: bool,
    created: Instant,
    /// The list entry last seen, serialized, to notice changes.
    entry_fingerprint: String,
    /// The most detailed view last seen (GET, or a list entry with instance views).
    last_view: Option<ContainerGroup>,
    last_detail: Option<Instant>,
    /// Container names (app and init), for logs and exec.
    containers: Vec<String>,
    /// ACI events already forwarded, by [`status::AciEvent::key`], with the count seen.
    forwarded: HashMap<String, i32>,
    /// Adopted after a restart: the events of the first view are taken as already forwarded
    /// (by the previous process), so a restart repeats none.
    seed_events: bool,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, Tracked>,
}

/// Pods on ACI.
#[derive(Clone)]
pub struct AciProvider {
    inner: Arc<Inner>,
}

struct Inner {
    arm: Arm,
    settings: Settings,
    hub: Arc<StatusHub>,
    state: Mutex<State>,
    /// One List Logs poll per followed container, however many follow it.
    log_followers: LogFollowers,
    /// GetStats answers per pod UID, with when they were fetched.
    stats_cache: Mutex<StatsCache>,
}

type StatsCache = HashMap<String, (Instant, Option<PodStats>)>;

fn container_names(g: &ContainerGroup) -> Vec<String> {
    g.properties
        .containers
        .iter()
        .map(|c| c.name.clone())
        .chain(g.properties.init_containers.iter().map(|c| c.name.clone()))
        .collect()
}

fn pod_of(g: &ContainerGroup) -> Option<(PodRef, String)> {
    naming::pod_from_tags(g.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The state of one container in a status, if known.
fn container_state<'a>(s: &'a PodStatus, name: &str) -> Option<&'a CState> {
    s.container_statuses
        .iter()
        .chain(&s.init_container_statuses)
        .find(|c| c.name == name)
        .and_then(|c| c.state.as_ref())
        .and_then(|st| st.state.as_ref())
}

impl AciProvider {
    /// A provider on `arm` with `settings`.
    pub fn new(arm: Arm, settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                arm,
                settings,
                hub: StatusHub::new(),
                state: Mutex::default(),
                log_followers: LogFollowers::default(),
                stats_cache: Mutex::default(),
            }),
        }
    }

    fn serves(&self, node: &str) -> bool {
        let nodes = &self.inner.settings.node_names;
        nodes.is_empty() || nodes.iter().any(|n| n == node)
    }

    /// The pod and node of a group this provider owns: tagged with a pod, with this cluster's
    /// identity and with a node it serves. Anything else in the resource group (another
    /// cluster's or another node's groups) is never adopted or deleted.
    fn ours(&self, g: &ContainerGroup) -> Option<(PodRef, String)> {
        let (pod_ref, node) = pod_of(g)?;
        let cluster = g.tags.get(plan::TAG_CLUSTER)?;
        (*cluster == self.inner.settings.groups.cluster_id && self.serves(&node))
            .then_some((pod_ref, node))
    }

    /// The status hub (for the poll loop).
    pub fn hub(&self) -> Arc<StatusHub> {
        self.inner.hub.clone()
    }

    /// One status poll: one List By Resource Group, then a GET for each group whose list entry
    /// changed or lacks a recent instance view; groups of ours we do not track are adopted (after
    /// a restart). Returns the complete (node, status) list for the hub.
    pub async fn poll(&self) -> Result<Vec<(String, PodStatus)>, AzureError> {
        let arm = &self.inner.arm;
        let listed = arm.list_groups().await?;
        let refresh = self.inner.settings.instance_view_refresh;
        let now = Instant::now();
        let mut to_get: Vec<String> = Vec::new();
        // Unchanged groups due for a refresh, with when they were last fetched.
        let mut due: Vec<(Option<Instant>, String)> = Vec::new();
        let mut listed_uids: HashSet<String> = HashSet::new();
        {
            let mut st = self.inner.state.lock();
            for g in listed {
                let Some((pod_ref, node)) = self.ours(&g) else {
                    continue;
                };
                let Some(name) = g.name.clone() else {
                    continue;
                };
                listed_uids.insert(pod_ref.uid.clone());
                let fp = serde_json::to_string(&g).unwrap_or_default();
                let has_view = g.properties.instance_view.is_some();
                let t = st.pods.entry(pod_ref.uid.clone()).or_insert_with(|| {
                    tracing::info!(pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name), group = %name, "adopted a container group from its tags");
                    Tracked {
                        pod_ref: pod_ref.clone(),
                        node: node.clone(),
                        group: name.clone(),
                        public_hash: g.tags.get(plan::TAG_SPEC_HASH).cloned(),
                        content_hash: None,
                        deleting: false,
                        created: now,
                        entry_fingerprint: String::new(),
                        last_view: None,
                        last_detail: None,
                        containers: container_names(&g),
                        forwarded: HashMap::new(),
                        seed_events: true,
                    }
                });
                let changed = t.entry_fingerprint != fp;
                t.entry_fingerprint = fp;
                if has_view {
                    t.last_view = Some(g);
                    t.last_detail = Some(now);
                } else if changed || t.last_view.is_none() {
                    to_get.push(pod_ref.uid.clone());
                } else {
                    if t.last_detail
                        .is_none_or(|d| now.duration_since(d) >= refresh)
                    {
                        due.push((t.last_detail, pod_ref.uid.clone()));
                    }
                    if let Some(v) = t.last_view.as_mut() {
                        // Keep the detailed view, but take the list's newer group-level fields.
                        v.properties.provisioning_state = g.properties.provisioning_state.clone();
                    }
                }
            }
            // Tracked groups missing from the list: gone if we deleted them; otherwise asked for
            // directly once the list has had time to show them.
            let mut gone = Vec::new();
            for (uid, t) in &st.pods {
                if listed_uids.contains(uid) {
                    continue;
                }
                if t.deleting {
                    gone.push(uid.clone());
                } else if now.duration_since(t.created) > LIST_GRACE {
                    to_get.push(uid.clone());
                }
            }
            for uid in gone {
                st.pods.remove(&uid);
            }
        }
        // ARM's list carries no instance views, so container exits and restarts show only in a
        // GET: refresh a bounded number per poll, stalest first, to keep the cost per interval
        // independent of the number of groups.
        due.sort();
        to_get.extend(
            due.into_iter()
                .take(self.inner.settings.refreshes_per_poll)
                .map(|(_, uid)| uid),
        );

        let targets: Vec<(String, String)> = {
            let st = self.inner.state.lock();
            to_get
                .into_iter()
                .filter_map(|uid| st.pods.get(&uid).map(|t| (uid, t.group.clone())))
                .collect()
        };
        let fetched: Vec<(String, Result<Option<ContainerGroup>, AzureError>)> =
            stream::iter(targets)
                .map(|(uid, name)| async move { (uid, arm.get_group(&name).await) })
                .buffer_unordered(DETAIL_CONCURRENCY)
                .collect()
                .await;
        {
            let mut st = self.inner.state.lock();
            for (uid, got) in fetched {
                match got {
                    Ok(Some(g)) => {
                        if let Some(t) = st.pods.get_mut(&uid) {
                            t.last_view = Some(g);
                            t.last_detail = Some(now);
                        }
                    }
                    // Not there: deleted behind our back (or by us).
                    Ok(None) => {
                        if !listed_uids.contains(&uid) {
                            tracing::info!(uid = %uid, "container group is gone");
                            st.pods.remove(&uid);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, uid = %uid, "cannot read a container group; keeping its last status")
                    }
                }
            }
        }

        let mut st = self.inner.state.lock();
        self.forward_events(&mut st);
        let mut out = Vec::new();
        for (uid, t) in &st.pods {
            let status = match &t.last_view {
                Some(g) => status::pod_status(&t.pod_ref, g),
                // Accepted, not seen yet: keep what the create reported.
                None => match self.inner.hub.get(uid) {
                    Some(s) => s,
                    None => continue,
                },
            };
            out.push((t.node.clone(), status));
        }
        Ok(out)
    }

    /// ACI's events (Pulling, Pulled, Started, BackOff, FailedMount, ...) as pod events, each
    /// occurrence once: an event is sent when first seen and again when ACI's `count` of it
    /// grows (a second Started after a restart).
    fn forward_events(&self, st: &mut State) {
        for t in st.pods.values_mut() {
            let Some(view) = &t.last_view else {
                continue;
            };
            for e in status::events(&t.pod_ref, view) {
                let seen = t.forwarded.get(&e.key).copied().unwrap_or(0);
                if e.count <= seen {
                    continue;
                }
                t.forwarded.insert(e.key, e.count);
                if !t.seed_events {
                    self.inner.hub.event(&t.node, e.event);
                }
            }
            t.seed_events = false;
        }
    }

    /// Follows an accepted (202) DELETE at its operation URL: a failed or canceled one is asked
    /// again, at most [`DELETE_ATTEMPTS`] times in all; then the pod is no longer treated as
    /// deleting (it shows its status again and a later DeletePod retries) and a Warning event
    /// says why.
    async fn follow_deletion(self, pod_ref: PodRef, group: String, mut url: String) {
        let arm = &self.inner.arm;
        let started = Instant::now();
        let mut attempts = 1;
        while started.elapsed() < DELETE_FOLLOW_LIMIT {
            tokio::time::sleep(DELETE_POLL).await;
            let status = match arm.operation_status(&url).await {
                Ok(s) => s,
                Err(e) if e.code == "ForeignNextLink" => {
                    tracing::warn!(group = %group, error = %e, "not following the deletion's operation URL");
                    return;
                }
                Err(e) => {
                    tracing::warn!(group = %group, error = %e, "cannot read the deletion's status; asking again");
                    continue;
                }
            };
            let failed = match status.status.as_str() {
                s if s.eq_ignore_ascii_case("Succeeded") => return,
                s if s.eq_ignore_ascii_case("Failed") || s.eq_ignore_ascii_case("Canceled") => {
                    status.error.map_or_else(
                        || format!("the deletion ended {s}"),
                        |e| format!("{}: {}", e.code, e.message),
                    )
                }
                _ => continue,
            };
            tracing::warn!(group = %group, attempts, reason = %failed, "ACI did not delete the container group");
            if attempts < DELETE_ATTEMPTS {
                attempts += 1;
                match arm.delete_group(&group).await {
                    Ok(Deletion::Accepted {
                        operation: Some(next),
                    }) => {
                        url = next;
                        continue;
                    }
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(group = %group, error = %e, "deleting the container group again failed")
                    }
                }
            }
            let node = {
                let mut st = self.inner.state.lock();
                st.pods.get_mut(&pod_ref.uid).map(|t| {
                    t.deleting = false;
                    t.node.clone()
                })
            };
            if let Some(node) = node {
                self.inner.hub.event(
                    &node,
                    PodEvent {
                        pod_ref: Some(pod_ref.clone()),
                        warning: true,
                        reason: "FailedDelete".into(),
                        message: format!("ACI did not delete container group {group}: {failed}"),
                        time: Some(rpc::now()),
                    },
                );
            }
            return;
        }
    }

    /// The group of a known pod and whether `container` is in it.
    fn locate(&self, pod_ref: &PodRef, container: &str) -> Result<String, Status> {
        let st = self.inner.state.lock();
        let t = st
            .pods
            .get(&pod_ref.uid)
            .ok_or_else(|| rpc::not_known(pod_ref))?;
        if !t.containers.iter().any(|c| c == container) {
            return Err(Status::not_found(format!(
                "container {container} is not in pod {}/{}",
                pod_ref.namespace, pod_ref.name
            )));
        }
        Ok(t.group.clone())
    }

    /// A pod's figures from Azure Monitor, asked at most once per [`STATS_TTL`] per group
    /// (metrics have a one-minute grain; every scrape asking again would cost one ARM read per
    /// pod).
    async fn stats_of(
        &self,
        pod_ref: &PodRef,
        group: &str,
        window: Duration,
    ) -> Result<Option<PodStats>, AzureError> {
        let cached = self
            .inner
            .stats_cache
            .lock()
            .get(&pod_ref.uid)
            .filter(|(at, _)| at.elapsed() < STATS_TTL)
            .map(|(_, s)| s.clone());
        if let Some(s) = cached {
            return Ok(s);
        }
        let m = self.inner.arm.metrics(group, window).await?;
        let stats = status::pod_stats(pod_ref, &m);
        let mut cache = self.inner.stats_cache.lock();
        // Forget pods that are gone, then remember this one.
        let live: HashSet<String> = self.inner.state.lock().pods.keys().cloned().collect();
        cache.retain(|uid, _| live.contains(uid));
        cache.insert(pod_ref.uid.clone(), (Instant::now(), stats.clone()));
        Ok(stats)
    }

    /// After an attach stream ended: the exit code of `container` if it has terminated, waiting
    /// a few status polls for the termination to show (the stream can end first).
    async fn exit_code_after_stream_end(&self, uid: &str, container: &str) -> Option<i32> {
        const CHECKS: u32 = 24;
        for _ in 0..CHECKS {
            if let Some(CState::Terminated(t)) = self
                .inner
                .hub
                .get(uid)
                .as_ref()
                .and_then(|s| container_state(s, container))
            {
                return Some(t.exit_code);
            }
            if self
                .inner
                .state
                .lock()
                .pods
                .get(uid)
                .is_none_or(|t| t.deleting)
            {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    fn is_running(&self, uid: &str, container: &str) -> bool {
        let deleting = self
            .inner
            .state
            .lock()
            .pods
            .get(uid)
            .is_none_or(|t| t.deleting);
        !deleting
            && self
                .inner
                .hub
                .get(uid)
                .as_ref()
                .and_then(|s| container_state(s, container))
                .is_some_and(|s| matches!(s, CState::Running(_)))
    }
}

#[tonic::async_trait]
impl provider_common::Cloud for AciProvider {
    const API: &'static str = "ACI";
    type Plan = plan::Plan;

    fn hub(&self) -> &StatusHub {
        &self.inner.hub
    }

    fn node_info(&self) -> NodeInfo {
        let s = &self.inner.settings;
        let labels = HashMap::from([(
            "topology.kubernetes.io/region".to_owned(),
            s.groups.location.clone(),
        )]);
        let runtime = format!("aci://{}", crate::client::API_VERSION);
        let image = "Azure Container Instances";
        NodeInfo {
            operating_system: s.operating_system.clone(),
            architecture: "amd64".into(),
            labels,
            // The taint AKS virtual nodes carry; pods opt in with a toleration.
            taints: vec![Taint {
                key: "azure.com/aci".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            }],
            ..service::node_info(
                "aci",
                env!("CARGO_PKG_VERSION"),
                &s.capacity,
                image,
                runtime,
            )
        }
    }

    fn plan(&self, pod: &Pod) -> Result<plan::Plan, plan::Invalid> {
        plan::plan(pod, &self.inner.settings.groups)
    }

    fn notices(&self, plan: &plan::Plan) -> Vec<Notice> {
        let mut notices = Notice::ignored(&plan.warnings);
        notices.extend(plan.no_ip.iter().map(|w| Notice {
            reason: "NoPodIP",
            message: w.clone(),
        }));
        notices
    }

    fn known(
        &self,
        pod_ref: &PodRef,
        pod: &Pod,
        plan: &plan::Plan,
    ) -> Result<Option<PodStatus>, Status> {
        let node = &pod.node_name;
        if !self.serves(node) {
            return Err(Status::invalid_argument(format!(
                "this provider serves nodes {}, not {node}",
                self.inner.settings.node_names.join(", ")
            )));
        }
        let known = self.inner.state.lock().pods.contains_key(&pod_ref.uid);
        Ok(known.then(|| status::accepted(pod_ref, &plan.group, "")))
    }

    async fn create(
        &self,
        pod_ref: &PodRef,
        pod: &Pod,
        plan: plan::Plan,
    ) -> Result<PodStatus, Status> {
        let node = pod.node_name.as_str();
        let uid = &pod_ref.uid;
        let created = self
            .inner
            .arm
            .put_group(&plan.name, &plan.group)
            .await
            .map_err(|e| e.to_status())?;
        let id = created.id.clone().unwrap_or_default();
        let status = status::accepted(pod_ref, &plan.group, &id);
        tracing::info!(pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name), uid = %uid, group = %plan.name, "container group created");
        self.inner.state.lock().pods.insert(
            uid.clone(),
            Tracked {
                pod_ref: pod_ref.clone(),
                node: node.to_owned(),
                group: plan.name.clone(),
                public_hash: Some(plan.public_hash.clone()),
                content_hash: Some(plan.content_hash.clone()),
                deleting: false,
                created: Instant::now(),
                entry_fingerprint: String::new(),
                last_view: None,
                last_detail: None,
                containers: container_names(&plan.group),
                forwarded: HashMap::new(),
                seed_events: false,
            },
        );
        self.inner.hub.upsert(node, status.clone());
        Ok(status)
    }

    async fn update(&self, pod_ref: &PodRef, plan: plan::Plan) -> Result<(), Status> {
        let unchanged = {
            let mut st = self.inner.state.lock();
            let t = st
                .pods
                .get_mut(&pod_ref.uid)
                .ok_or_else(|| rpc::not_known(pod_ref))?;
            let same_spec = t
                .public_hash
                .as_deref()
                .is_none_or(|h| h == plan.public_hash);
            // After a restart the secret values sent at create are unknown: only a pod without
            // any can be recognised as unchanged.
            let same_secrets = match t.content_hash.as_deref() {
                Some(h) => h == plan.content_hash,
                None => plan.public_hash == plan.content_hash,
            };
            if same_spec && same_secrets {
                t.public_hash = Some(plan.public_hash.clone());
                t.content_hash = Some(plan.content_hash.clone());
            }
            same_spec && same_secrets
        };
        if !unchanged {
            return Err(Status::unimplemented(
                "ACI cannot change a running container group in place (a changed group is redeployed, restarting its containers)",
            ));
        }
        Ok(())
    }

    async fn delete(&self, pod_ref: &PodRef, _grace: Option<i64>) -> Result<bool, Status> {
        let tracked = self
            .inner
            .state
            .lock()
            .pods
            .get(&pod_ref.uid)
            .map(|t| t.group.clone());
        // Names follow from the identity: an untracked pod's group can still be found, but is
        // deleted only if its tags say it is ours (not another cluster's or node's).
        let name = match &tracked {
            Some(name) => name.clone(),
            None => {
                let name = plan::group_name(pod_ref);
                let found = self
                    .inner
                    .arm
                    .get_group(&name)
                    .await
                    .map_err(|e| e.to_status())?;
                match found {
                    None => return Ok(false),
                    Some(g) if self.ours(&g).is_some_and(|(r, _)| r.uid == pod_ref.uid) => name,
                    Some(_) => {
                        tracing::warn!(pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name), uid = %pod_ref.uid, group = %name, "not deleting a container group of another cluster or node");
                        return Ok(false);
                    }
                }
            }
        };
        let deletion = self
            .inner
            .arm
            .delete_group(&name)
            .await
            .map_err(|e| e.to_status())?;
        tracing::info!(pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name), uid = %pod_ref.uid, group = %name, ?deletion, "container group deleted");
        {
            let mut st = self.inner.state.lock();
            if let Some(t) = st.pods.get_mut(&pod_ref.uid) {
                t.deleting = true;
            }
        }
        let existed = deletion != Deletion::NotFound;
        if let Deletion::Accepted {
            operation: Some(url),
        } = deletion
        {
            tokio::spawn(self.clone().follow_deletion(pod_ref.clone(), name, url));
        }
        Ok(existed || tracked.is_some())
    }

    async fn logs(
        &self,
        pod_ref: PodRef,
        req: GetContainerLogsRequest,
    ) -> Result<BoxStream<LogChunk>, Status> {
        let group = self.locate(&pod_ref, &req.container)?;
        if req.previous {
            return Err(Status::not_found(
                "there is no previous instance's log: ACI keeps only the current container's log",
            ));
        }
        if let Some(CState::Waiting(w)) = self
            .inner
            .hub
            .get(&pod_ref.uid)
            .as_ref()
            .and_then(|s| container_state(s, &req.container))
        {
            return Err(Status::failed_precondition(format!(
                "container {} is waiting to start ({})",
                req.container, w.reason
            )));
        }
        let me = self.clone();
        let (uid, container) = (pod_ref.uid.clone(), req.container.clone());
        let fetch = logs::fetcher(self.inner.arm.clone(), group, req.container.clone());
        Ok(self.inner.log_followers.spawn(
            &pod_ref.uid,
            &req.container,
            logs::options(&req),
            fetch,
            move || me.is_running(&uid, &container),
        ))
    }

    fn unsupported(&self, rpc: Streamed) -> Option<String> {
        (rpc == Streamed::PortForward)
            .then(|| "port-forward is not offered by ACI: it has no port-forwarding API".into())
    }

    async fn exec(
        &self,
        pod_ref: PodRef,
        start: ExecStart,
        input: Streaming<ExecRequest>,
    ) -> Result<BoxStream<StreamOutput>, Status> {
        let group = self.locate(&pod_ref, &start.container)?;
        if start.command.is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        if !self.is_running(&pod_ref.uid, &start.container) {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                start.container
            )));
        }
        // ACI runs one executable without arguments: a lone command in a terminal goes straight
        // through; anything else runs under /bin/sh, which reports the exit status.
        let (command, wrapper) = if start.tty && start.command.len() == 1 {
            (start.command[0].clone(), None)
        } else {
            let nonce: String = (0..12)
                .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
                .collect();
            (
                "/bin/sh".to_owned(),
                Some(Wrapper::new(&start.command, start.stdin, start.tty, &nonce)),
            )
        };
        let size = start.terminal_size.map_or(
            TerminalSize {
                rows: 40,
                cols: 120,
            },
            |s| TerminalSize {
                rows: s.height.max(1),
                cols: s.width.max(1),
            },
        );
        let session = self
            .inner
            .arm
            .exec(&group, &start.container, &command, size)
            .await
            .map_err(|e| e.to_status())?;
        let ws = exec::connect(
            &session.web_socket_uri,
            exec::Password::FirstMessage(&session.password),
            self.inner.arm.http().tls.clone(),
        )
        .await
        .map_err(Status::unavailable)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(exec::bridge(ws, input, wrapper, tx));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn attach(
        &self,
        pod_ref: PodRef,
        start: AttachStart,
        input: Streaming<AttachRequest>,
    ) -> Result<BoxStream<StreamOutput>, Status> {
        let group = self.locate(&pod_ref, &start.container)?;
        if !self.is_running(&pod_ref.uid, &start.container) {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                start.container
            )));
        }
        // Containers_Attach is "attach to the output stream" (2023-05-01): nothing reaches the
        // main process's stdin, so a caller that wants to send some is told rather than ignored.
        if start.stdin {
            return Err(Status::unimplemented(
                "ACI's attach carries only a container's output: stdin cannot be attached (attach without -i, or use exec)",
            ));
        }
        let session = self
            .inner
            .arm
            .attach(&group, &start.container)
            .await
            .map_err(|e| e.to_status())?;
        let ws = exec::connect(
            &session.web_socket_uri,
            exec::Password::Header(&session.password),
            self.inner.arm.http().tls.clone(),
        )
        .await
        .map_err(Status::unavailable)?;
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        let container = start.container.clone();
        tokio::spawn(exec::bridge_attach(ws, input, tx, move || async move {
            me.exit_code_after_stream_end(&pod_ref.uid, &container)
                .await
        }));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn stats(&self, req: GetStatsRequest) -> Result<Vec<PodStats>, Status> {
        let wanted: HashSet<String> = req.pods.iter().map(|r| r.uid.clone()).collect();
        // Running pods of the node (asked for, if a list was given), with their groups.
        let targets: Vec<(PodRef, String, Duration)> = {
            let st = self.inner.state.lock();
            st.pods
                .values()
                .filter(|t| t.node == req.node_name && !t.deleting)
                .filter(|t| wanted.is_empty() || wanted.contains(&t.pod_ref.uid))
                .filter(|t| {
                    self.inner
                        .hub
                        .get(&t.pod_ref.uid)
                        .is_some_and(|s| s.phase == PodPhase::Running as i32)
                })
                .map(|t| {
                    (
                        t.pod_ref.clone(),
                        t.group.clone(),
                        since_start(t.last_view.as_ref()),
                    )
                })
                .collect()
        };
        let me = self.clone();
        let results: Vec<Result<Option<PodStats>, AzureError>> = stream::iter(targets)
            .map(|(pod_ref, group, window)| {
                let me = me.clone();
                async move { me.stats_of(&pod_ref, &group, window).await }
            })
            .buffer_unordered(DETAIL_CONCURRENCY)
            .collect()
            .await;
        let mut pods = Vec::new();
        let mut first_error = None;
        let asked = results.len();
        for r in results {
            match r {
                Ok(Some(s)) => pods.push(s),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a container group's metrics");
                    first_error.get_or_insert(e);
                }
            }
        }
        // Only when no group could be asked does the call fail: one bad answer costs one pod.
        if let Some(e) = first_error
            && pods.is_empty()
            && asked > 0
        {
            return Err(e.to_status());
        }
        Ok(pods)
    }
}
