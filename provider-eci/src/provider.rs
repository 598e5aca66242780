//! The `PodProvider` implementation: pods as ECI container groups.

use parking_lot::Mutex;
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use podprovider_proto::v1::{
    ExecRequest, ExecStart, GetContainerLogsRequest, GetStatsRequest, LogChunk, NodeInfo, Pod,
    PodEvent, PodPhase, PodRef, PodStats, PodStatus, StreamOutput, container_state,
};
use provider_common::{
    Notice, Streamed,
    log_share::LogFollowers,
    naming,
    rpc::{self, BoxStream},
    service,
    status_loop::{self, PollHealth, StatusHub},
};
use tonic::{Status, Streaming};

use crate::{
    client::{Cloud, GroupFilter},
    error::EciError,
    logs,
    plan::{self, Placement, TAG_CLUSTER, TAG_HASH, TAG_MANAGED},
    status::{self, Shape},
    wire,
};

/// How long a group ECI accepted may be missing from a full list before it counts as gone
/// (eventual consistency of the list after a create).
const LIST_GRACE: Duration = Duration::from_secs(30);
/// The most ids one DescribeContainerGroups takes (`ContainerGroupIds`, documented: 20).
const GROUP_IDS_PER_CALL: usize = 20;

/// Provider settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where groups go.
    pub placement: Placement,
    /// Node capacity.
    pub capacity: HashMap<String, String>,
    /// A full list (DescribeContainerGroups + full DescribeContainerGroupStatus) at least this often.
    pub full_sync: Duration,
}

/// A pod this provider runs.
#[derive(Clone, Debug)]
struct Tracked {
    pod_ref: PodRef,
    node: String,
    group_id: String,
    shape: Shape,
    content_hash: String,
    /// When this provider learned of it (created or adopted).
    since: Instant,
    /// Its init containers as DescribeContainerGroups last described them (their states are
    /// not in DescribeContainerGroupStatus).
    init: Vec<wire::GroupContainer>,
}

impl Tracked {
    /// Whether its init containers may still change: it has some, and not all of them are
    /// known to have terminated.
    fn initializing(&self) -> bool {
        !self.shape.init.is_empty()
            && (self.init.len() < self.shape.init.len()
                || self
                    .init
                    .iter()
                    .any(|c| c.current_state.state != "Terminated"))
    }
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, Tracked>,
    /// Group events already forwarded: (uid, reason, message, last timestamp).
    events_seen: HashSet<(String, String, String, String)>,
    /// Pods deleted lately: a full list fetched before a delete still shows its group, and
    /// must not adopt it again once the delete has removed it from `pods`.
    deleted: HashMap<String, Instant>,
}

#[derive(Debug, Default)]
struct SyncState {
    last_full: Option<Instant>,
    last_poll: Option<Instant>,
}

/// Pods on ECI.
#[derive(Clone)]
pub struct EciProvider {
    inner: Arc<Inner>,
}

struct Inner {
    cloud: Cloud,
    settings: Settings,
    hub: Arc<StatusHub>,
    state: Mutex<State>,
    sync: Mutex<SyncState>,
    /// One DescribeContainerLog poll per followed container, however many follow it.
    log_followers: LogFollowers,
}

/// The tags of every group this provider owns: managed by a virtual kubelet and of this cluster
/// (`Tag.N.Key/Value` filters of DescribeContainerGroups and DescribeContainerGroupStatus).
fn owned_tags(cluster: &str) -> Vec<(String, String)> {
    vec![
        (TAG_MANAGED.0.to_owned(), TAG_MANAGED.1.to_owned()),
        (TAG_CLUSTER.to_owned(), cluster.to_owned()),
    ]
}

/// Whether a listed group carries this cluster's tags. Checked on every answer as well as sent
/// as a filter, so a gateway that ignored the filter still never hands us another cluster's group.
fn is_ours(g: &wire::Group, cluster: &str) -> bool {
    owned_tags(cluster)
        .iter()
        .all(|(k, v)| g.tags.iter().any(|t| t.key == *k && t.value == *v))
}

fn shape_of(pod: &Pod) -> Shape {
    Shape {
        init: pod
            .init_containers
            .iter()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect(),
        app: pod
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect(),
    }
}

fn group_shape(g: &wire::Group) -> Shape {
    Shape {
        init: g
            .init_containers
            .iter()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect(),
        app: g
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect(),
    }
}

/// Adopts tagged groups this provider does not track and forgets tracked groups the full list
/// no longer has.
/// The group events (from a full list) not forwarded yet, as pod events for the pods' nodes.
fn new_events(st: &mut State, groups: &[wire::Group]) -> Vec<(String, PodEvent)> {
    let mut out = Vec::new();
    let by_group: HashMap<&str, &Tracked> =
        st.pods.values().map(|t| (t.group_id.as_str(), t)).collect();
    let mut fresh = Vec::new();
    for g in groups {
        let Some(t) = by_group.get(g.container_group_id.as_str()) else {
            continue;
        };
        for e in &g.events {
            let key = (
                t.pod_ref.uid.clone(),
                e.reason.clone(),
                e.message.clone(),
                e.last_timestamp.clone(),
            );
            if st.events_seen.contains(&key) {
                continue;
            }
            fresh.push(key);
            out.push((
                t.node.clone(),
                PodEvent {
                    pod_ref: Some(t.pod_ref.clone()),
                    warning: e.kind == "Warning",
                    reason: if e.reason.is_empty() {
                        "ECIEvent".into()
                    } else {
                        e.reason.clone()
                    },
                    message: e.message.clone(),
                    time: status::ts(&e.last_timestamp).or_else(|| Some(rpc::now())),
                },
            ));
        }
    }
    let live: HashSet<&str> = st.pods.keys().map(String::as_str).collect();
    let mut kept: HashSet<(String, String, String, String)> = st
        .events_seen
        .iter()
        .filter(|k| live.contains(k.0.as_str()))
        .cloned()
        .collect();
    kept.extend(fresh);
    st.events_seen = kept;
    out
}

fn reconcile_membership(st: &mut State, groups: &[wire::Group], cluster: &str) {
    st.deleted.retain(|_, at| at.elapsed() < LIST_GRACE);
    let mut listed = HashSet::new();
    for g in groups.iter().filter(|g| is_ours(g, cluster)) {
        listed.insert(g.container_group_id.clone());
        let tags = g.tags.iter().map(|t| (t.key.as_str(), t.value.as_str()));
        let Some((pod_ref, node)) = naming::pod_from_tags(tags) else {
            continue;
        };
        // A group on its way out is not adopted: its pod is being deleted.
        if g.status == "Terminating" {
            continue;
        }
        if !st.pods.contains_key(&pod_ref.uid) && !st.deleted.contains_key(&pod_ref.uid) {
            let hash = g
                .tags
                .iter()
                .find(|t| t.key == TAG_HASH)
                .map(|t| t.value.clone())
                .unwrap_or_default();
            tracing::info!(pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name), uid = %pod_ref.uid, group = %g.container_group_id, "adopted container group");
            st.pods.insert(
                pod_ref.uid.clone(),
                Tracked {
                    pod_ref,
                    node,
                    group_id: g.container_group_id.clone(),
                    shape: group_shape(g),
                    content_hash: hash,
                    since: Instant::now(),
                    init: g.init_containers.clone(),
                },
            );
        }
    }
    st.pods.retain(|_, t| {
        let keep = listed.contains(&t.group_id) || t.since.elapsed() < LIST_GRACE;
        if !keep {
            tracing::warn!(uid = %t.pod_ref.uid, group = %t.group_id, "container group is gone from ECI");
        }
        keep
    });
}

impl EciProvider {
    /// A provider for `cloud` with `settings`.
    pub fn new(cloud: Cloud, settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                cloud,
                settings,
                hub: StatusHub::new(),
                state: Mutex::default(),
                sync: Mutex::default(),
                log_followers: LogFollowers::default(),
            }),
        }
    }

    fn cluster(&self) -> &str {
        &self.inner.settings.placement.cluster_id
    }

    /// The status hub (for the poll loop).
    pub fn hub(&self) -> Arc<StatusHub> {
        self.inner.hub.clone()
    }

    /// One status poll, published to the hub. Every interval: `DescribeContainerGroupStatus` by
    /// the provider's tag, with `SinceSecond` (only groups that changed) after a full sync. At
    /// start and every `full_sync`: `DescribeContainerGroups` by tag (all pages) to adopt groups
    /// after a restart and notice groups deleted behind our back, plus a full status list.
    ///
    /// The hub is replaced while the pod table is locked, so a create that finishes during the
    /// poll is never dropped from the hub by a result computed before it (the contract wants an
    /// accepted pod in every later snapshot). Returns the number of pods.
    pub async fn poll(&self) -> Result<usize, EciError> {
        let started = Instant::now();
        let (full, since) = {
            let s = self.inner.sync.lock();
            let full = s
                .last_full
                .is_none_or(|t| t.elapsed() >= self.inner.settings.full_sync);
            // Since the last successful poll, with a margin for clock and call latency.
            let since = s.last_poll.map(|t| t.elapsed().as_secs() + 3).unwrap_or(60);
            (full, since)
        };
        let cloud = &self.inner.cloud;
        let owned = owned_tags(self.cluster());
        let groups = if full {
            Some(
                cloud
                    .groups(&GroupFilter {
                        tags: &owned,
                        name: None,
                        ids: None,
                        with_events: true,
                    })
                    .await?,
            )
        } else {
            None
        };
        let statuses = cloud
            .statuses(&owned, if full { None } else { Some(since) })
            .await?;
        let by_id: HashMap<&str, &wire::GroupStatus> = statuses
            .iter()
            .map(|g| (g.container_group_id.as_str(), g))
            .collect();
        // Init container states are only in DescribeContainerGroups: between full lists, the
        // groups that changed or are still initializing are described by id.
        let describe: Vec<String> = if full {
            Vec::new()
        } else {
            self.inner
                .state
                .lock()
                .pods
                .values()
                .filter(|t| {
                    // A finished pod's init containers will not change any more.
                    let finished = self.inner.hub.get(&t.pod_ref.uid).is_some_and(|s| {
                        s.phase == PodPhase::Succeeded as i32 || s.phase == PodPhase::Failed as i32
                    });
                    !t.shape.init.is_empty()
                        && (by_id.contains_key(t.group_id.as_str())
                            || (t.initializing() && !finished))
                })
                .map(|t| t.group_id.clone())
                .collect()
        };
        let mut described = Vec::new();
        for ids in describe.chunks(GROUP_IDS_PER_CALL) {
            described.extend(
                cloud
                    .groups(&GroupFilter {
                        tags: &owned,
                        name: None,
                        ids: Some(ids),
                        with_events: false,
                    })
                    .await?,
            );
        }
        let mut st = self.inner.state.lock();
        if let Some(groups) = &groups {
            reconcile_membership(&mut st, groups, self.cluster());
            for (node, ev) in new_events(&mut st, groups) {
                self.inner.hub.event(&node, ev);
            }
        }
        let fresh = groups.iter().flatten().chain(&described);
        let init_by_group: HashMap<&str, &Vec<wire::GroupContainer>> = fresh
            .filter(|g| is_ours(g, self.cluster()))
            .map(|g| (g.container_group_id.as_str(), &g.init_containers))
            .collect();
        for t in st.pods.values_mut() {
            if let Some(init) = init_by_group.get(t.group_id.as_str()) {
                t.init = (*init).clone();
            }
        }
        let mut out = Vec::new();
        for t in st.pods.values() {
            let status = match by_id.get(t.group_id.as_str()) {
                Some(g) => status::pod_status(&t.pod_ref, &t.shape, g, &t.init),
                None => self
                    .inner
                    .hub
                    .get(&t.pod_ref.uid)
                    .unwrap_or_else(|| status::accepted(&t.pod_ref, &t.shape, &t.group_id)),
            };
            out.push((t.node.clone(), status));
        }
        let n = out.len();
        self.inner.hub.replace_all(out);
        self.inner.hub.set_health(PollHealth::Ok);
        drop(st);
        let mut s = self.inner.sync.lock();
        s.last_poll = Some(started);
        if full {
            s.last_full = Some(started);
        }
        Ok(n)
    }

    /// Polls every `interval` until the task is aborted; a failed poll keeps the last statuses
    /// and is reported by `Ping`.
    pub async fn poll_forever(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = status_loop::poll_deadline(interval);
        loop {
            ticker.tick().await;
            match tokio::time::timeout(deadline, self.poll()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "status poll failed; keeping the last known statuses");
                    self.inner.hub.set_health(PollHealth::Failed(e.to_string()));
                }
                // A stalled cloud must not freeze every pod's status.
                Err(_) => {
                    let message = format!("status poll did not finish within {deadline:?}");
                    tracing::warn!("{message}; keeping the last known statuses");
                    self.inner.hub.set_health(PollHealth::Failed(message));
                }
            }
        }
    }

    /// The group of a pod: tracked, else looked up by its deterministic name, UID tag and this
    /// cluster's tags (another cluster's group of the same name and UID is never ours to delete).
    async fn find_group(&self, pod_ref: &PodRef) -> Result<Option<String>, EciError> {
        if let Some(t) = self.inner.state.lock().pods.get(&pod_ref.uid) {
            return Ok(Some(t.group_id.clone()));
        }
        let name = plan::group_name(pod_ref);
        let mut tags = owned_tags(self.cluster());
        tags.push((naming::TAG_UID.to_owned(), pod_ref.uid.clone()));
        let groups = self
            .inner
            .cloud
            .groups(&GroupFilter {
                tags: &tags,
                name: Some(&name),
                ids: None,
                with_events: false,
            })
            .await?;
        Ok(groups
            .into_iter()
            .find(|g| {
                is_ours(g, self.cluster())
                    && g.tags
                        .iter()
                        .any(|t| t.key == naming::TAG_UID && t.value == pod_ref.uid)
            })
            .map(|g| g.container_group_id))
    }

    fn tracked(&self, pod_ref: &PodRef) -> Result<Tracked, Status> {
        self.inner
            .state
            .lock()
            .pods
            .get(&pod_ref.uid)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "pod {}/{} is not known",
                    pod_ref.namespace, pod_ref.name
                ))
            })
    }

    /// The current state of a container, from the last status.
    fn container_state(&self, uid: &str, container: &str) -> Option<container_state::State> {
        let s = self.inner.hub.get(uid)?;
        s.container_statuses
            .iter()
            .chain(&s.init_container_statuses)
            .find(|c| c.name == container)
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.state.clone())
    }
}

#[tonic::async_trait]
impl provider_common::Cloud for EciProvider {
    const API: &'static str = "ECI";
    type Plan = plan::Plan;

    fn hub(&self) -> &StatusHub {
        &self.inner.hub
    }

    fn node_info(&self) -> NodeInfo {
        let s = &self.inner.settings;
        let mut labels = HashMap::from([(
            "topology.kubernetes.io/region".to_owned(),
            self.inner.cloud.region.clone(),
        )]);
        if let Some(z) = &s.placement.zone_id {
            labels.insert("topology.kubernetes.io/zone".to_owned(), z.clone());
        }
        let runtime = format!("eci://{}", crate::client::API_VERSION);
        let image = "Alibaba Cloud Elastic Container Instance";
        NodeInfo {
            operating_system: "linux".into(),
            architecture: "amd64".into(),
            labels,
            ..service::node_info(
                "eci",
                env!("CARGO_PKG_VERSION"),
                &s.capacity,
                image,
                runtime,
            )
        }
    }

    fn plan(&self, pod: &Pod) -> Result<plan::Plan, plan::Invalid> {
        plan::plan(pod, &self.inner.settings.placement)
    }

    fn notices(&self, plan: &plan::Plan) -> Vec<Notice> {
        Notice::ignored(&plan.warnings)
    }

    fn known(
        &self,
        pod_ref: &PodRef,
        _pod: &Pod,
        _plan: &plan::Plan,
    ) -> Result<Option<PodStatus>, Status> {
        Ok(self
            .inner
            .state
            .lock()
            .pods
            .get(&pod_ref.uid)
            .map(|t| status::accepted(&t.pod_ref, &t.shape, &t.group_id)))
    }

    async fn create(
        &self,
        pod_ref: &PodRef,
        pod: &Pod,
        plan: plan::Plan,
    ) -> Result<PodStatus, Status> {
        // Creates the pod's group. The ClientToken (from the UID) makes ECI return the existing
        // group for a repeated create, so a retry after a lost answer or a restart never makes a
        // second group.
        let uid = &pod_ref.uid;
        let node = &pod.node_name;
        let result = self.inner.cloud.create(plan.request).await;
        let shape = shape_of(pod);
        match result {
            Ok(id) => {
                tracing::info!(pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name), uid = %uid, group = %id, name = %plan.name, "container group created");
                let status = status::accepted(pod_ref, &shape, &id);
                let mut st = self.inner.state.lock();
                st.deleted.remove(uid);
                st.pods.insert(
                    uid.clone(),
                    Tracked {
                        pod_ref: pod_ref.clone(),
                        node: node.clone(),
                        group_id: id,
                        shape,
                        content_hash: plan.content_hash.clone(),
                        since: Instant::now(),
                        init: Vec::new(),
                    },
                );
                self.inner.hub.upsert(node, status.clone());
                Ok(status)
            }
            Err(e) => {
                tracing::warn!(uid = %uid, error = %e, "CreateContainerGroup failed");
                Err(e.to_status())
            }
        }
    }

    async fn update(&self, pod_ref: &PodRef, plan: plan::Plan) -> Result<(), Status> {
        let t = self.tracked(pod_ref)?;
        if t.content_hash != plan.content_hash {
            return Err(Status::unimplemented(
                "this provider does not change a running ECI container group in place (images, environment and files are fixed at CreateContainerGroup)",
            ));
        }
        Ok(())
    }

    /// A grace period of 0 ("kill now") is ECI's `Force=true`, any other is left to the
    /// group's own TerminationGracePeriodSeconds.
    async fn delete(&self, pod_ref: &PodRef, grace: Option<i64>) -> Result<bool, Status> {
        let tracked = self.inner.state.lock().pods.contains_key(&pod_ref.uid);
        let Some(id) = self.find_group(pod_ref).await.map_err(|e| e.to_status())? else {
            return Ok(false);
        };
        // NotFound on a retry whose first answer was lost still means we had it.
        let found = self
            .inner
            .cloud
            .delete(&id, grace == Some(0))
            .await
            .map_err(|e| e.to_status())?;
        tracing::info!(pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name), uid = %pod_ref.uid, group = %id, "container group deleted");
        {
            let mut st = self.inner.state.lock();
            st.pods.remove(&pod_ref.uid);
            st.deleted.insert(pod_ref.uid.clone(), Instant::now());
        }
        self.inner.hub.remove(&pod_ref.uid);
        Ok(found || tracked)
    }

    async fn logs(
        &self,
        pod_ref: PodRef,
        req: GetContainerLogsRequest,
    ) -> Result<BoxStream<LogChunk>, Status> {
        let t = self.tracked(&pod_ref)?;
        let known = t
            .shape
            .app
            .iter()
            .chain(&t.shape.init)
            .any(|(n, _)| *n == req.container);
        if !known {
            return Err(Status::not_found(format!(
                "container {} is not in pod {}/{}",
                req.container, pod_ref.namespace, pod_ref.name
            )));
        }
        if matches!(
            self.container_state(&pod_ref.uid, &req.container),
            Some(container_state::State::Waiting(_)) | None
        ) && self
            .inner
            .hub
            .get(&pod_ref.uid)
            .is_some_and(|s| s.phase == PodPhase::Pending as i32)
        {
            return Err(Status::failed_precondition(format!(
                "container {} is waiting to start",
                req.container
            )));
        }
        let me = self.clone();
        let uid = pod_ref.uid.clone();
        let running = move || {
            me.inner.hub.get(&uid).is_some_and(|s| {
                s.phase == PodPhase::Running as i32 || s.phase == PodPhase::Pending as i32
            })
        };
        let fetch = logs::fetcher(self.inner.cloud.clone(), t.group_id.clone(), &req);
        Ok(self.inner.log_followers.spawn(
            &pod_ref.uid,
            &req.container,
            logs::options(&req),
            fetch,
            running,
        ))
    }

    fn unsupported(&self, rpc: Streamed) -> Option<String> {
        match rpc {
            Streamed::Exec => None,
            Streamed::Attach => Some("attach is not offered by ECI: its API can exec a new command but cannot attach to a container's main process".into()),
            Streamed::PortForward => Some("port-forward is not offered by ECI: its API has no port-forwarding operation".into()),
        }
    }

    async fn exec(
        &self,
        pod_ref: PodRef,
        start: ExecStart,
        input: Streaming<ExecRequest>,
    ) -> Result<BoxStream<StreamOutput>, Status> {
        let t = self.tracked(&pod_ref)?;
        if !t
            .shape
            .app
            .iter()
            .chain(&t.shape.init)
            .any(|(n, _)| *n == start.container)
        {
            return Err(Status::not_found(format!(
                "container {} is not in pod {}/{}",
                start.container, pod_ref.namespace, pod_ref.name
            )));
        }
        if !matches!(
            self.container_state(&pod_ref.uid, &start.container),
            Some(container_state::State::Running(_))
        ) {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                start.container
            )));
        }
        if start.command.is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        // ExecContainerCommand's documented limits.
        if start.command.len() > 20 || start.command.iter().any(|a| a.chars().count() > 256) {
            return Err(Status::invalid_argument(
                "ECI runs commands of at most 20 words of at most 256 characters each",
            ));
        }
        let uri = self
            .inner
            .cloud
            .exec(
                &t.group_id,
                &start.container,
                &start.command,
                start.tty,
                start.stdin,
            )
            .await
            .map_err(|e| e.to_status())?;
        crate::exec::bridge(&uri, input, start.tty)
            .await
            .map_err(|e| Status::unavailable(format!("cannot open the exec WebSocket: {e}")))
    }

    async fn stats(&self, req: GetStatsRequest) -> Result<Vec<PodStats>, Status> {
        // Running pods of the node (or the ones asked for): ECI has figures only for those.
        let wanted: Vec<(PodRef, String)> = {
            let st = self.inner.state.lock();
            st.pods
                .values()
                .filter(|t| req.node_name.is_empty() || t.node == req.node_name)
                .filter(|t| req.pods.is_empty() || req.pods.iter().any(|p| p.uid == t.pod_ref.uid))
                .filter(|t| {
                    self.inner
                        .hub
                        .get(&t.pod_ref.uid)
                        .is_some_and(|s| s.phase == PodPhase::Running as i32)
                })
                .map(|t| (t.pod_ref.clone(), t.group_id.clone()))
                .collect()
        };
        let mut pods = Vec::new();
        for chunk in wanted.chunks(GROUP_IDS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
            let datas = self
                .inner
                .cloud
                .metrics(&ids)
                .await
                .map_err(|e| e.to_status())?;
            for (pod_ref, id) in chunk {
                if let Some(s) = datas
                    .iter()
                    .find(|d| d.container_group_id == *id)
                    .and_then(|d| status::pod_stats(pod_ref, d))
                {
                    pods.push(s);
                }
            }
        }
        Ok(pods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_groups_tagged_with_this_cluster_are_adopted() {
        let group = |id: &str, uid: &str, cluster: Option<&str>| {
            let pod_ref = PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: uid.into(),
            };
            let mut tags: Vec<(String, String)> = naming::pod_tags(&pod_ref, "vk")
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            tags.push((TAG_MANAGED.0.into(), TAG_MANAGED.1.into()));
            if let Some(c) = cluster {
                tags.push((TAG_CLUSTER.into(), c.into()));
            }
            wire::Group {
                container_group_id: id.into(),
                status: "Running".into(),
                tags: tags
                    .into_iter()
                    .map(|(key, value)| wire::Tag { key, value })
                    .collect(),
                ..Default::default()
            }
        };
        let groups = vec![
            group("eci-a", "ua", Some("a")),
            group("eci-b", "ub", Some("b")),
            // Created before cluster identities existed: nobody's.
            group("eci-old", "uo", None),
        ];
        let mut st = State::default();
        reconcile_membership(&mut st, &groups, "a");
        assert_eq!(st.pods.keys().collect::<Vec<_>>(), vec!["ua"]);
        // A list fetched before a delete does not bring the deleted pod back.
        st.pods.clear();
        st.deleted.insert("ua".into(), Instant::now());
        reconcile_membership(&mut st, &groups, "a");
        assert!(st.pods.is_empty());
        assert_eq!(owned_tags("a")[1], ("vk-cluster".into(), "a".into()));
    }

    #[test]
    fn group_events_are_forwarded_once_per_pod() {
        let pod_ref = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u1".into(),
        };
        let mut st = State::default();
        st.pods.insert(
            "u1".into(),
            Tracked {
                pod_ref: pod_ref.clone(),
                node: "vk".into(),
                group_id: "eci-1".into(),
                shape: Shape::default(),
                content_hash: String::new(),
                since: Instant::now(),
                init: Vec::new(),
            },
        );
        let event = |reason: &str, at: &str| wire::GroupEvent {
            kind: "Warning".into(),
            reason: reason.into(),
            message: "could not pull".into(),
            last_timestamp: at.into(),
        };
        let groups = vec![
            wire::Group {
                container_group_id: "eci-1".into(),
                events: vec![event("Failed", "2024-01-01T00:00:00Z")],
                ..Default::default()
            },
            wire::Group {
                container_group_id: "eci-unknown".into(),
                events: vec![event("Failed", "2024-01-01T00:00:00Z")],
                ..Default::default()
            },
        ];
        let first = new_events(&mut st, &groups);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, "vk");
        assert!(first[0].1.warning && first[0].1.reason == "Failed");
        assert_eq!(first[0].1.pod_ref.as_ref(), Some(&pod_ref));
        assert!(new_events(&mut st, &groups).is_empty(), "forwarded twice");
        let mut again = groups.clone();
        again[0]
            .events
            .push(event("Failed", "2024-01-01T00:01:00Z"));
        assert_eq!(new_events(&mut st, &again).len(), 1);
        st.pods.clear();
        assert!(new_events(&mut st, &again).is_empty());
        assert!(st.events_seen.is_empty(), "memory of gone pods is dropped");
    }
}

/// Fuzzing what ECI answers: any bytes as the answer of every call, and realistic
/// DescribeContainerGroups, DescribeContainerGroupStatus, DescribeMultiContainerGroupMetric and
/// error answers with random parts replaced, through what a poll does with them. An answer is
/// read or refused as `UnreadableResponse` (serde reads a page whole, so one wrong-typed field
/// fails that poll, as for Fargate), and whatever is read never makes the provider panic.
#[cfg(test)]
mod fuzz {
    use proptest::{prelude::*, test_runner::TestCaseError};
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        client::{parse_answer, read_answer},
        exec,
    };

    use provider_common::arbitrary::{self, Vocabulary, run};

    const CLUSTER: &str = "c";
    const OP: &str = "op";

    /// ECI's words, so arbitrary objects often hit real fields.
    const ECI: Vocabulary = Vocabulary {
        keys: &[
            "ContainerGroups",
            "ContainerGroupId",
            "ContainerGroupName",
            "NextToken",
            "Status",
            "Tags",
            "Key",
            "Value",
            "Containers",
            "InitContainers",
            "Name",
            "Image",
            "RestartCount",
            "Ready",
            "CurrentState",
            "PreviousState",
            "State",
            "ExitCode",
            "Signal",
            "StartTime",
            "FinishTime",
            "Events",
            "Type",
            "Reason",
            "Message",
            "LastTimestamp",
            "IntranetIp",
            "Data",
            "PodStatus",
            "Phase",
            "PodIp",
            "PodIps",
            "Ip",
            "ContainerStatuses",
            "LastState",
            "Running",
            "Terminated",
            "Waiting",
            "StartedAt",
            "FinishedAt",
            "ContainerID",
            "Conditions",
            "MonitorDatas",
            "Records",
            "Timestamp",
            "CPU",
            "Memory",
            "UsageNanoCores",
            "WorkingSet",
            "Code",
            "RequestId",
            "WebSocketUri",
            "Content",
        ],
        strings: &[
            "Pending",
            "Scheduling",
            "Running",
            "Restarting",
            "Terminating",
            "Succeeded",
            "Failed",
            "ScheduleFailed",
            "Expired",
            "Terminated",
            "Waiting",
            "Warning",
            "True",
            "False",
            "Throttling.User",
            "InvalidParameter",
            "ServiceUnavailable",
            "web",
            "init",
            "eci-0",
        ],
    };

    /// The tags of a group of this cluster, pod `p{i}`.
    fn tags(i: usize) -> Value {
        json!([
            {"Key": "vk-pod-namespace", "Value": "ns"}, {"Key": "vk-pod-name", "Value": format!("p{i}")},
            {"Key": "vk-pod-uid", "Value": format!("u{i}")}, {"Key": "vk-node", "Value": "vk"},
            {"Key": TAG_MANAGED.0, "Value": TAG_MANAGED.1}, {"Key": TAG_CLUSTER, "Value": CLUSTER},
            {"Key": TAG_HASH, "Value": "h"}
        ])
    }

    fn group_state(s: &str, exit: i32) -> Value {
        json!({"State": s, "ExitCode": exit, "Signal": 9, "Reason": "Completed", "Message": "m",
               "StartTime": "2024-01-01T00:00:00Z", "FinishTime": "2024-01-01T00:05:00.5Z",
               "DetailStatus": "d"})
    }

    /// A DescribeContainerGroups page of two groups, with everything a poll reads.
    fn groups_template() -> Value {
        let group = |i: usize| {
            json!({
                "ContainerGroupId": format!("eci-{i}"), "ContainerGroupName": format!("g{i}"),
                "Status": "Running", "Tags": tags(i), "IntranetIp": "192.168.0.7",
                "CreationTime": "2024-01-01T00:00:00Z",
                "InitContainers": [{"Name": "init", "Image": "busybox", "RestartCount": 0,
                    "CurrentState": group_state("Terminated", 0),
                    "PreviousState": group_state("Terminated", 1)}],
                "Containers": [{"Name": "web", "Image": "nginx", "Ready": true, "RestartCount": 2,
                    "CurrentState": group_state("Running", 0),
                    "PreviousState": group_state("Terminated", 137)}],
                "Events": [{"Type": "Warning", "Reason": "Failed", "Message": "pull",
                            "LastTimestamp": "2024-01-01T00:01:00Z"},
                           {"Type": "Normal", "Reason": "", "Message": "", "LastTimestamp": ""}]
            })
        };
        json!({"ContainerGroups": [group(0), group(1)], "NextToken": "", "TotalCount": 2})
    }

    /// A DescribeContainerGroupStatus page for the groups of [`groups_template`].
    fn statuses_template() -> Value {
        let status = |i: usize| {
            json!({
                "ContainerGroupId": format!("eci-{i}"), "Name": format!("g{i}"), "Status": "Running",
                "PodStatus": {
                    "Phase": "Running", "PodIp": "192.168.0.7", "PodIps": [{"Ip": "192.168.0.7"}],
                    "StartTime": "2024-01-01T00:00:00Z",
                    "ContainerStatuses": [{"Name": "web", "Image": "nginx", "ImageID": "sha256:1",
                        "Ready": true, "Started": true, "RestartCount": 1,
                        "State": {"Running": {"StartedAt": "2024-01-01T00:00:05Z"}},
                        "LastState": {"Terminated": {"ExitCode": 137, "Signal": 9, "Reason": "OOMKilled",
                            "StartedAt": "2024-01-01T00:00:00Z", "FinishedAt": "2024-01-01T00:00:04Z",
                            "ContainerID": "containerd://abc"}}}],
                    "Conditions": [{"type": "Ready", "status": "False", "Reason": "r", "Message": "m",
                                    "lastTransitionTime": "2024-01-01T00:00:00Z"}]
                }
            })
        };
        json!({"Data": [status(0), status(1)], "NextToken": ""})
    }

    fn metrics_template() -> Value {
        let usage = json!({"CPU": {"UsageNanoCores": 1000, "UsageCoreNanoSeconds": 5_000_000},
                           "Memory": {"WorkingSet": 1 << 20, "UsageBytes": 2 << 20, "Rss": 1 << 19}});
        let mut record = usage.clone();
        record["Timestamp"] = json!("2024-01-01T00:00:00Z");
        let mut container = usage;
        container["Name"] = json!("web");
        record["Containers"] = json!([container]);
        let mut older = record.clone();
        older["Timestamp"] = json!("2023-12-31T23:59:00Z");
        json!({"MonitorDatas": [{"ContainerGroupId": "eci-0", "Records": [older, record]}]})
    }

    /// A refusal as `once` would make it: only ever "unreadable".
    fn unreadable<T>(r: Result<T, EciError>) -> Result<Option<T>, TestCaseError> {
        match r {
            Ok(t) => Ok(Some(t)),
            Err(e) => {
                prop_assert_eq!(e.code.as_str(), "UnreadableResponse");
                prop_assert_eq!(e.kind, crate::error::Kind::Other);
                Ok(None)
            }
        }
    }

    /// What a full poll does with the groups and statuses it has read: adoption, events (each
    /// forwarded once), every tracked pod's status.
    fn use_answers(
        groups: &[wire::Group],
        statuses: &[wire::GroupStatus],
    ) -> Result<(), TestCaseError> {
        let mut st = State::default();
        reconcile_membership(&mut st, groups, CLUSTER);
        for (_, e) in new_events(&mut st, groups) {
            prop_assert!(!e.reason.is_empty());
            prop_assert!(e.time.is_some());
        }
        prop_assert!(
            new_events(&mut st, groups).is_empty(),
            "an event came twice"
        );
        let by_id: HashMap<&str, &wire::GroupStatus> = statuses
            .iter()
            .map(|g| (g.container_group_id.as_str(), g))
            .collect();
        for t in st.pods.values() {
            let _ = t.initializing();
            let s = match by_id.get(t.group_id.as_str()) {
                Some(g) => status::pod_status(&t.pod_ref, &t.shape, g, &t.init),
                None => status::accepted(&t.pod_ref, &t.shape, &t.group_id),
            };
            check_status(&t.shape, &s)?;
        }
        // Statuses of groups nobody tracks go through the mapping too.
        let shape = Shape {
            init: vec![("init".into(), "busybox".into())],
            app: vec![("web".into(), "nginx".into()), ("x".into(), "y".into())],
        };
        let init = groups.first().map_or(&[][..], |g| &g.init_containers[..]);
        for g in statuses {
            let s = status::pod_status(&pod_ref(), &shape, g, init);
            check_status(&shape, &s)?;
        }
        Ok(())
    }

    fn pod_ref() -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        }
    }

    /// One status per container of the pod, and only addresses the API server accepts.
    fn check_status(shape: &Shape, s: &PodStatus) -> Result<(), TestCaseError> {
        prop_assert_eq!(s.container_statuses.len(), shape.app.len());
        prop_assert_eq!(s.init_container_statuses.len(), shape.init.len());
        prop_assert_eq!(
            s.pod_ip.as_str(),
            s.pod_ips.first().map_or("", |i| i.as_str())
        );
        for ip in &s.pod_ips {
            prop_assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{:?}", ip);
        }
        Ok(())
    }

    /// Any bytes as the answer of every call: read or refused as unreadable, never a panic; as an
    /// error body, classified.
    #[test]
    fn fuzz_answers_arbitrary_bytes() {
        run(
            || arbitrary::answer_bytes(ECI),
            |body| {
                if let Some(v) = unreadable(parse_answer(OP, &body))? {
                    let groups = unreadable(read_answer::<wire::GroupsPage>(OP, v.clone()))?
                        .map(|p| p.container_groups)
                        .unwrap_or_default();
                    let statuses = unreadable(read_answer::<wire::StatusPage>(OP, v.clone()))?
                        .map(|p| p.data)
                        .unwrap_or_default();
                    use_answers(&groups, &statuses)?;
                    if let Some(m) =
                        unreadable(read_answer::<wire::MetricsResponse>(OP, v.clone()))?
                    {
                        for d in &m.monitor_datas {
                            let _ = status::pod_stats(&pod_ref(), d);
                        }
                    }
                    unreadable(read_answer::<wire::CreateResponse>(OP, v.clone()))?;
                    unreadable(read_answer::<wire::LogResponse>(OP, v.clone()))?;
                    unreadable(read_answer::<wire::ExecResponse>(OP, v))?;
                }
                for code in [400, 403, 404, 409, 429, 500, 503] {
                    let e = crate::error::from_response(OP, code, &body, None);
                    prop_assert!(!e.code.is_empty());
                    prop_assert!(e.to_status().code() != tonic::Code::Ok);
                }
                let _ = exec::exit_code_of_status(&body);
                Ok(())
            },
        );
    }

    /// A full poll's DescribeContainerGroups and DescribeContainerGroupStatus answers, each with
    /// up to 6 places replaced, removed or nulled.
    #[test]
    fn fuzz_poll_answers_never_panic() {
        // Addresses good and bad, set after the mutations so every case has some: random
        // mutations alone reach them too rarely for 256 cases.
        let ip = || {
            prop_oneof![
                Just("192.168.0.7".to_owned()),
                Just("fd00::7".to_owned()),
                Just(String::new()),
                "[0-9a-f.:% ]{0,16}",
                any::<String>(),
            ]
        };
        let answers = move || {
            (
                arbitrary::mutated(groups_template(), 6, ECI),
                arbitrary::mutated(statuses_template(), 6, ECI),
                proptest::collection::vec(ip(), 0..3),
                ip(),
            )
        };
        run(answers, |(groups, mut statuses, ips, ip)| {
            if let Some(Value::Object(ps)) = statuses.pointer_mut("/Data/0/PodStatus") {
                let ips: Vec<Value> = ips.into_iter().map(|i| json!({ "Ip": i })).collect();
                ps.insert("PodIps".into(), json!(ips));
                ps.insert("PodIp".into(), json!(ip));
            }
            let read = |v: &Value| parse_answer(OP, &serde_json::to_vec(v).unwrap_or_default());
            let groups = match unreadable(read(&groups))? {
                Some(v) => unreadable(read_answer::<wire::GroupsPage>(OP, v))?
                    .map(|p| p.container_groups)
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let statuses = match unreadable(read(&statuses))? {
                Some(v) => unreadable(read_answer::<wire::StatusPage>(OP, v))?
                    .map(|p| p.data)
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            use_answers(&groups, &statuses)
        });
    }

    /// DescribeMultiContainerGroupMetric's answer and error bodies with random parts replaced.
    #[test]
    fn fuzz_metrics_and_error_answers_never_panic() {
        let error = json!({"Code": "Throttling.User", "Message": "Request was denied due to user flow control.",
                           "RequestId": "r", "HostId": "eci.aliyuncs.com", "Recommend": "https://x"});
        let answers = move || {
            (
                arbitrary::mutated(metrics_template(), 6, ECI),
                arbitrary::mutated(error.clone(), 4, ECI),
            )
        };
        run(answers, |(metrics, error)| {
            if let Some(m) = unreadable(read_answer::<wire::MetricsResponse>(OP, metrics))? {
                for d in &m.monitor_datas {
                    if let Some(s) = status::pod_stats(&pod_ref(), d) {
                        let latest = d.records.iter().map(|r| &r.timestamp).max();
                        prop_assert_eq!(s.time, latest.and_then(|t| status::ts(t)));
                    }
                }
            }
            let body = serde_json::to_vec(&error).unwrap_or_default();
            for code in [400, 404, 429, 500, 503] {
                let e = crate::error::from_response(OP, code, &body, None);
                prop_assert!(!e.code.is_empty() && !e.message.is_empty());
                prop_assert!(e.to_status().code() != tonic::Code::Ok);
            }
            Ok(())
        });
    }
}
