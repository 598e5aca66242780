//! The `PodProvider` implementation: pods as ECS tasks on Fargate.

use parking_lot::Mutex;
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aws_sdk_ecs::types::Task;
use podprovider_proto::v1::{
    GetContainerLogsRequest, GetStatsRequest, LogChunk, NodeInfo, Pod, PodEvent, PodPhase, PodRef,
    PodStats, PodStatus,
};
use provider_common::{
    Notice, Streamed,
    naming::{self, NameRules},
    rpc::{self, BoxStream},
    service,
    status_loop::StatusHub,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::{
    client::{Cloud, Network, RunSpec, STOP_REASON, TAG_DELETED, TAG_INSTALLATION, log_stream},
    error::AwsError,
    logs,
    plan::{self, DefSettings},
    stats,
    status::{self, Shape},
};

/// Tag with the pod's grace period (for deletes after a restart) and one with its content hash
/// (for UpdatePod after a restart).
const TAG_GRACE: &str = "vk-grace-seconds";
const TAG_HASH: &str = "vk-content-hash";

/// Provider settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What shapes task definitions.
    pub defs: DefSettings,
    /// Network of every task.
    pub network: Network,
    /// Platform version.
    pub platform_version: Option<String>,
    /// ECS Exec on tasks.
    pub enable_execute_command: bool,
    /// Node capacity.
    pub capacity: HashMap<String, String>,
    /// Kubernetes architecture name.
    pub architecture: String,
    /// This installation's identity: tagged on what it creates, and the limit of what it touches.
    pub installation: String,
    /// Answer GetStats from CloudWatch Container Insights (each answer costs GetMetricData
    /// calls, so it is opt-in, like Container Insights itself).
    pub container_insights: bool,
}

/// Container Insights has one data point a minute: figures younger than this are answered again
/// instead of asked for (and paid for) again.
const STATS_TTL: Duration = Duration::from_secs(60);

/// A pod this provider runs.
#[derive(Clone, Debug)]
struct Tracked {
    pod_ref: PodRef,
    node: String,
    task_arn: String,
    def_arn: String,
    shape: Shape,
    content_hash: String,
    /// Digest of the pod's secret strings (memory only); `None` after a restart until needed.
    secrets_digest: Option<String>,
    /// Names of the pod's secrets; `None` when not known (adopted and not swept yet).
    secret_names: Option<Vec<String>>,
    deleting: bool,
    /// Last status ECS reported, for logs (follow ends when terminated).
    last_status: String,
    /// Containers whose health check ECS last reported UNHEALTHY (told once per episode).
    unhealthy: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, Tracked>,
    /// Creates in progress per task definition family: GC leaves those definitions alone.
    in_flight: HashMap<String, usize>,
    /// Definitions this provider registered or found, ACTIVE as far as it knows.
    definitions: HashSet<String>,
    shapes: HashMap<String, Shape>,
}

/// Pods on Fargate.
#[derive(Clone)]
pub struct FargateProvider {
    inner: Arc<Inner>,
}

struct Inner {
    cloud: Cloud,
    settings: Settings,
    hub: Arc<StatusHub>,
    state: Mutex<State>,
    /// Set after the first complete poll: until then polls also list stopped tasks, so pods that
    /// finished while the provider was down are reported with their terminal status.
    rebuilt: AtomicBool,
    /// GetStats answers and CPU counters.
    stats: Mutex<StatsState>,
}

#[derive(Default)]
struct StatsState {
    /// Answers per pod UID, with when they were fetched (`None`: no figures).
    answers: HashMap<String, (Instant, Option<PodStats>)>,
    /// Cumulative CPU per (pod UID, container).
    counters: HashMap<(String, String), stats::CpuCounter>,
}

fn started_by(r: &PodRef) -> String {
    // startedBy: up to 128 letters, digits, hyphens and underscores.
    naming::resource_name("vk", r, &NameRules::alnum_dash_underscore(128))
}

/// Every secret name of this installation starts with this.
fn secrets_root(installation: &str) -> String {
    format!("vk/{installation}/")
}

/// A pod's secret names start with this (UIDs are letters, digits and hyphens).
fn secrets_prefix(installation: &str, uid: &str) -> String {
    format!("{}{uid}/", secrets_root(installation))
}

fn tag_map(task: &Task) -> HashMap<&str, &str> {
    task.tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect()
}

impl FargateProvider {
    /// A provider for `cloud` with `settings`.
    pub fn new(cloud: Cloud, settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                cloud,
                settings,
                hub: StatusHub::new(),
                state: Mutex::default(),
                rebuilt: AtomicBool::new(false),
                stats: Mutex::default(),
            }),
        }
    }

    /// The status hub (for the poll loop).
    pub fn hub(&self) -> Arc<StatusHub> {
        self.inner.hub.clone()
    }

    /// Learns the definitions this provider registered earlier, so unused ones are deregistered.
    pub async fn load_definitions(&self) -> Result<(), AwsError> {
        let prefix = plan::family_prefix(&self.inner.settings.installation);
        let defs = self.inner.cloud.our_definitions(&prefix).await?;
        self.inner.state.lock().definitions.extend(defs);
        Ok(())
    }

    async fn shape_of(&self, def_arn: &str) -> Result<Shape, AwsError> {
        if let Some(s) = self.inner.state.lock().shapes.get(def_arn) {
            return Ok(s.clone());
        }
        let shape = self.inner.cloud.shape(def_arn).await?;
        self.inner
            .state
            .lock()
            .shapes
            .insert(def_arn.to_owned(), shape.clone());
        Ok(shape)
    }

    /// One status poll: every running task of the cluster and every task we track, described in
    /// batches; returns the complete (node, status) list for the hub and deregisters definitions
    /// no task uses any more.
    pub async fn poll(&self) -> Result<Vec<(String, PodStatus)>, AwsError> {
        let cloud = &self.inner.cloud;
        let rebuilding = !self.inner.rebuilt.load(Ordering::Acquire);
        let mut arns: Vec<String> = cloud.list_running().await?;
        let known: Vec<String> = self
            .inner
            .state
            .lock()
            .pods
            .values()
            .map(|t| t.task_arn.clone())
            .collect();
        let mut listed: HashSet<String> = arns.iter().cloned().collect();
        arns.extend(known.into_iter().filter(|a| listed.insert(a.clone())));
        // After a restart: finished pods too (running tasks first, so a pod's live task wins).
        if rebuilding {
            let stopped = cloud.list_stopped().await?;
            arns.extend(stopped.into_iter().filter(|a| listed.insert(a.clone())));
        }
        let (tasks, missing) = cloud.describe(&arns).await?;

        // Adopt tasks of ours that we do not track (after a restart); their shapes need a lookup.
        let mut adopt = Vec::new();
        for task in &tasks {
            let tags = tag_map(task);
            // Another installation's task (or one from before installations were tagged).
            if tags.get(TAG_INSTALLATION) != Some(&self.inner.settings.installation.as_str()) {
                continue;
            }
            let Some((pod_ref, node)) = naming::pod_from_tags(tags.iter().map(|(k, v)| (*k, *v)))
            else {
                continue;
            };
            let tracked = self.inner.state.lock().pods.contains_key(&pod_ref.uid);
            let stopped =
                task.last_status() == Some("STOPPED") || task.desired_status() == Some("STOPPED");
            // A stopped task is a finished pod unless the pod was deleted (by us, or tagged so
            // when its task had already stopped by itself).
            let deleted = task
                .stopped_reason()
                .is_some_and(|r| r.starts_with(STOP_REASON))
                || tags.contains_key(TAG_DELETED);
            let adopt_it = if stopped {
                rebuilding && !deleted
            } else {
                true
            };
            if !tracked
                && adopt_it
                && !adopt
                    .iter()
                    .any(|(r, ..): &(PodRef, _, _, _)| r.uid == pod_ref.uid)
            {
                adopt.push((
                    pod_ref,
                    node,
                    task.clone(),
                    tags.get(TAG_HASH).map(|s| s.to_string()),
                ));
            }
        }
        for (pod_ref, node, task, hash) in adopt {
            let def_arn = task.task_definition_arn().unwrap_or_default().to_owned();
            let shape = match self.shape_of(&def_arn).await {
                Ok(shape) => shape,
                // A finished pod whose definition is gone (DeleteTaskDefinitions) must not stop
                // every poll: it is not reported.
                Err(e) if task.last_status() == Some("STOPPED") => {
                    tracing::warn!(error = %e, task = ?task.task_arn(), "cannot read the definition of a stopped task; its pod is not reported");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut st = self.inner.state.lock();
            st.definitions.insert(def_arn.clone());
            st.pods.entry(pod_ref.uid.clone()).or_insert(Tracked {
                pod_ref,
                node,
                task_arn: task.task_arn().unwrap_or_default().to_owned(),
                def_arn,
                shape,
                content_hash: hash.unwrap_or_default(),
                secrets_digest: None,
                secret_names: None,
                deleting: false,
                last_status: String::new(),
                unhealthy: Vec::new(),
            });
        }

        let by_arn: HashMap<&str, &Task> = tasks
            .iter()
            .filter_map(|t| Some((t.task_arn()?, t)))
            .collect();
        let missing: HashSet<&str> = missing.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        let mut unused_defs = Vec::new();
        // (node, pod, container) newly unhealthy, told after the state lock is released.
        let mut events = Vec::new();
        {
            let mut st = self.inner.state.lock();
            let mut gone = Vec::new();
            for (uid, t) in st.pods.iter_mut() {
                match by_arn.get(t.task_arn.as_str()) {
                    Some(task) => {
                        let stopped = task.last_status() == Some("STOPPED");
                        let deleted_by_us = stopped
                            && (t.deleting
                                || task
                                    .stopped_reason()
                                    .is_some_and(|r| r.starts_with(STOP_REASON)));
                        if deleted_by_us {
                            gone.push(uid.clone());
                            continue;
                        }
                        t.last_status = task.last_status().unwrap_or_default().to_owned();
                        let unhealthy = status::unhealthy(task, &t.shape);
                        for name in unhealthy.iter().filter(|n| !t.unhealthy.contains(n)) {
                            events.push((t.node.clone(), t.pod_ref.clone(), name.clone()));
                        }
                        t.unhealthy = unhealthy;
                        out.push((
                            t.node.clone(),
                            status::pod_status(&t.pod_ref, task, &t.shape),
                        ));
                    }
                    None if missing.contains(t.task_arn.as_str()) || t.deleting => {
                        gone.push(uid.clone());
                    }
                    // Accepted, not described yet (eventual consistency): keep what we know.
                    None => {
                        if let Some(s) = self.inner.hub.get(uid) {
                            out.push((t.node.clone(), s));
                        }
                    }
                }
            }
            for uid in gone {
                st.pods.remove(&uid);
            }
            self.inner.rebuilt.store(true, Ordering::Release);
            // A definition is used while a tracked task has not stopped or a create is in flight.
            let used: HashSet<String> = st
                .pods
                .values()
                .filter(|t| t.last_status != "STOPPED")
                .map(|t| t.def_arn.clone())
                .collect();
            let in_flight: HashSet<&String> = st
                .in_flight
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(f, _)| f)
                .collect();
            for arn in &st.definitions {
                let family_busy = in_flight.iter().any(|f| arn.contains(&format!("/{f}:")));
                if !used.contains(arn) && !family_busy {
                    unused_defs.push(arn.clone());
                }
            }
        }
        for (node, pod_ref, container) in events {
            // The kubelet tells failing probes as Unhealthy events; ECS only reports the health of
            // a task it did not start for a service, so this is all that happens.
            self.inner.hub.event(
                &node,
                PodEvent {
                    pod_ref: Some(pod_ref),
                    warning: true,
                    reason: "Unhealthy".into(),
                    message: format!(
                        "container {container}: its ECS health check (from its probe) fails; it is not ready, and Fargate does not restart it for that"
                    ),
                    time: Some(rpc::now()),
                },
            );
        }
        for arn in unused_defs {
            match cloud.deregister(&arn).await {
                Ok(()) => {
                    tracing::info!(task_definition = %arn, "deregistered unused task definition");
                    let mut st = self.inner.state.lock();
                    st.definitions.remove(&arn);
                    st.shapes.remove(&arn);
                }
                Err(e) => tracing::warn!(error = %e, "cannot deregister an unused task definition"),
            }
        }
        Ok(out)
    }

    async fn create_task(
        &self,
        pod_ref: &PodRef,
        node: &str,
        pod: &podprovider_proto::v1::Pod,
        plan: &plan::Plan,
    ) -> Result<PodStatus, AwsError> {
        let installation = &self.inner.settings.installation;
        let mut tags: Vec<(String, String)> = naming::pod_tags(pod_ref, node)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        tags.push((TAG_INSTALLATION.into(), installation.clone()));
        let (spec, secret_names) = if plan.secrets.is_empty() {
            (plan.spec.clone(), Vec::new())
        } else {
            let (values_arn, registry_arns, names) =
                self.put_secrets(pod_ref, &plan.secrets, &tags).await?;
            (plan.bind(values_arn, registry_arns), names)
        };
        // A definition of the pod's own (it references its secrets) is protected from GC by its
        // own in-flight count; the shared family is counted by the caller.
        let own_family = (spec.family() != plan.spec.family()).then(|| spec.family());
        if let Some(f) = &own_family {
            *self
                .inner
                .state
                .lock()
                .in_flight
                .entry(f.clone())
                .or_default() += 1;
        }
        let result = self
            .run_task(pod_ref, node, pod, plan, &spec, tags, secret_names)
            .await;
        if let Some(f) = &own_family
            && let Some(n) = self.inner.state.lock().in_flight.get_mut(f)
        {
            *n = n.saturating_sub(1);
        }
        result
    }

    /// The pod's secrets, created or updated: (values ARN, registry ARNs, every name).
    async fn put_secrets(
        &self,
        pod_ref: &PodRef,
        secrets: &plan::Secrets,
        tags: &[(String, String)],
    ) -> Result<(Option<String>, Vec<String>, Vec<String>), AwsError> {
        let prefix = secrets_prefix(&self.inner.settings.installation, &pod_ref.uid);
        let (values, registries) = secrets.strings();
        let mut names = Vec::new();
        let mut values_arn = None;
        if let Some(v) = values {
            let name = format!("{prefix}values");
            let token = naming::short_hash(&[&pod_ref.uid, &name], 32);
            values_arn = Some(self.inner.cloud.put_secret(&name, &v, &token, tags).await?);
            names.push(name);
        }
        let mut registry_arns = Vec::new();
        for (i, v) in registries.iter().enumerate() {
            let name = format!("{prefix}registry-{i}");
            let token = naming::short_hash(&[&pod_ref.uid, &name], 32);
            registry_arns.push(self.inner.cloud.put_secret(&name, v, &token, tags).await?);
            names.push(name);
        }
        Ok((values_arn, registry_arns, names))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_task(
        &self,
        pod_ref: &PodRef,
        node: &str,
        pod: &podprovider_proto::v1::Pod,
        plan: &plan::Plan,
        spec: &plan::TaskDefSpec,
        mut tags: Vec<(String, String)>,
        secret_names: Vec<String>,
    ) -> Result<PodStatus, AwsError> {
        let cloud = &self.inner.cloud;
        let def_tags = vec![
            ("vk-managed-by".to_owned(), "virtual-kubelet".to_owned()),
            (
                TAG_INSTALLATION.to_owned(),
                self.inner.settings.installation.clone(),
            ),
        ];
        let def_arn = cloud.ensure_definition(spec, &def_tags).await?;
        self.inner.state.lock().definitions.insert(def_arn.clone());
        tags.push((
            TAG_GRACE.into(),
            pod.termination_grace_period_seconds
                .unwrap_or(30)
                .to_string(),
        ));
        tags.push((TAG_HASH.into(), plan.content_hash.clone()));
        let sb = started_by(pod_ref);
        // clientToken: up to 64 ASCII characters, unique per pod.
        let token = naming::short_hash(&[&pod_ref.uid], 32);
        let run = RunSpec {
            task_definition: &def_arn,
            started_by: &sb,
            client_token: &token,
            tags: &tags,
            overrides: &plan.overrides,
            network: &self.inner.settings.network,
            platform_version: self.inner.settings.platform_version.as_deref(),
            enable_execute_command: self.inner.settings.enable_execute_command,
            installation: &self.inner.settings.installation,
            task_role_arn: plan.task_role_arn.as_deref(),
            spot: plan.spot,
        };
        // Fargate capacity comes and goes: retried, and told to the user once per create.
        let told = std::sync::atomic::AtomicBool::new(false);
        let on_capacity = |e: &AwsError| {
            if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                self.inner.hub.event(
                    node,
                    PodEvent {
                        pod_ref: Some(pod_ref.clone()),
                        warning: true,
                        reason: "FargateCapacityUnavailable".into(),
                        message: format!("RunTask: {}; retrying", e.message),
                        time: Some(rpc::now()),
                    },
                );
            }
        };
        let task = cloud.find_or_run(&run, &on_capacity).await?;
        let task_arn = task.task_arn().unwrap_or_default().to_owned();
        let shape = Shape {
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
            health_checked: spec
                .containers
                .iter()
                .filter(|c| c.health_check.is_some())
                .map(|c| c.name.clone())
                .collect(),
        };
        // Not the moto-lagged container view: a fresh task is Pending until the next poll.
        let status = status::accepted(pod_ref, &shape, &task_arn);
        tracing::info!(pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name), uid = %pod_ref.uid, task = %task_arn, "task started");
        {
            let mut st = self.inner.state.lock();
            st.shapes.insert(def_arn.clone(), shape.clone());
            st.pods.insert(
                pod_ref.uid.clone(),
                Tracked {
                    pod_ref: pod_ref.clone(),
                    node: node.to_owned(),
                    task_arn,
                    def_arn,
                    shape,
                    content_hash: plan.content_hash.clone(),
                    secrets_digest: Some(plan.secrets.digest()),
                    secret_names: Some(secret_names),
                    deleting: false,
                    last_status: String::new(),
                    unhealthy: Vec::new(),
                },
            );
        }
        self.inner.hub.upsert(node, status.clone());
        Ok(status)
    }

    /// Deletes the pod's secrets: `names` when known, else whatever ListSecrets finds for it.
    async fn delete_secrets(&self, uid: &str, names: Option<Vec<String>>) -> Result<(), AwsError> {
        let installation = &self.inner.settings.installation;
        let names = match names {
            Some(n) => n,
            None => self
                .inner
                .cloud
                .list_secrets(
                    &secrets_prefix(installation, uid),
                    TAG_INSTALLATION,
                    installation,
                )
                .await?
                .into_iter()
                .filter(|s| s.pod_uid == uid)
                .map(|s| s.name)
                .collect(),
        };
        for name in names {
            self.inner.cloud.delete_secret(&name).await?;
            tracing::debug!(uid = %uid, secret = %name, "secret deleted");
        }
        Ok(())
    }

    /// After a restart (state rebuilt, not serving yet): deletes this installation's secrets whose
    /// pod is not running any more (gone, or finished: a stopped task needs its secrets no more,
    /// ECS read them when the containers started), and learns the names of the others.
    pub async fn sweep_secrets(&self) -> Result<usize, AwsError> {
        let installation = &self.inner.settings.installation;
        let ours = self
            .inner
            .cloud
            .list_secrets(&secrets_root(installation), TAG_INSTALLATION, installation)
            .await?;
        let mut by_pod: HashMap<String, Vec<String>> = HashMap::new();
        for s in ours {
            by_pod.entry(s.pod_uid).or_default().push(s.name);
        }
        let mut deleted = 0;
        for (uid, names) in by_pod {
            let live = {
                let mut st = self.inner.state.lock();
                match st.pods.get_mut(&uid) {
                    Some(t) if !t.deleting && t.last_status != "STOPPED" => {
                        t.secret_names = Some(names.clone());
                        true
                    }
                    Some(t) => {
                        t.secret_names = Some(Vec::new());
                        false
                    }
                    None => false,
                }
            };
            if !live {
                deleted += names.len();
                self.delete_secrets(&uid, Some(names)).await?;
            }
        }
        Ok(deleted)
    }
}

impl FargateProvider {
    /// Digest of the secret strings stored for the pod, in the shape of `like`.
    async fn stored_digest(&self, uid: &str, like: &plan::Secrets) -> Result<String, AwsError> {
        let prefix = secrets_prefix(&self.inner.settings.installation, uid);
        let cloud = &self.inner.cloud;
        let values = cloud.secret_string(&format!("{prefix}values")).await?;
        let mut registries = Vec::new();
        for i in 0..like.registries.len() {
            registries.push(
                cloud
                    .secret_string(&format!("{prefix}registry-{i}"))
                    .await?
                    .unwrap_or_default(),
            );
        }
        Ok(plan::Secrets::digest_of(values.as_deref(), &registries))
    }
}

impl FargateProvider {
    /// Figures for the running pods the request asks for, from Container Insights; fresh cached
    /// answers are reused.
    async fn insights(&self, req: &GetStatsRequest) -> Result<Vec<PodStats>, AwsError> {
        let wanted: Option<HashSet<&str>> =
            (!req.pods.is_empty()).then(|| req.pods.iter().map(|r| r.uid.as_str()).collect());
        let running: Vec<(String, stats::TaskRef)> = self
            .inner
            .state
            .lock()
            .pods
            .iter()
            .filter(|(uid, t)| {
                !t.deleting
                    && t.last_status == "RUNNING"
                    && (req.node_name.is_empty() || t.node == req.node_name)
                    && wanted.as_ref().is_none_or(|w| w.contains(uid.as_str()))
            })
            .map(|(uid, t)| {
                let containers = t.shape.app.iter().map(|(n, _)| n.clone()).collect();
                (
                    uid.clone(),
                    stats::TaskRef::new(t.pod_ref.clone(), &t.task_arn, &t.def_arn, containers),
                )
            })
            .collect();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut ask = Vec::new();
        {
            let mut st = self.inner.stats.lock();
            // Forget pods that no longer run (all of them only when every pod was asked about).
            if wanted.is_none() {
                let live: HashSet<&str> = running.iter().map(|(u, _)| u.as_str()).collect();
                st.answers.retain(|uid, _| live.contains(uid.as_str()));
                st.counters
                    .retain(|(uid, _), _| live.contains(uid.as_str()));
            }
            for (uid, task) in running {
                match st.answers.get(&uid) {
                    Some((at, figures)) if now.duration_since(*at) < STATS_TTL => {
                        out.extend(figures.clone());
                    }
                    _ => ask.push((uid, task)),
                }
            }
        }
        if ask.is_empty() {
            return Ok(out);
        }
        let tasks: Vec<stats::TaskRef> = ask.iter().map(|(_, t)| t.clone()).collect();
        let cluster = self
            .inner
            .cloud
            .cluster
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let queries = stats::queries(cluster, &tasks);
        let values = self
            .inner
            .cloud
            .metric_data(&queries, rpc::now().seconds)
            .await?;
        let mut st = self.inner.stats.lock();
        let figures = stats::assemble(&tasks, &queries, &values, &mut st.counters);
        for ((uid, _), f) in ask.into_iter().zip(figures) {
            out.extend(f.clone());
            st.answers.insert(uid, (now, f));
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl provider_common::Cloud for FargateProvider {
    const API: &'static str = "ECS";
    type Plan = plan::Plan;

    fn hub(&self) -> &StatusHub {
        &self.inner.hub
    }

    fn node_info(&self) -> NodeInfo {
        let s = &self.inner.settings;
        let mut labels = HashMap::new();
        if !s.defs.region.is_empty() {
            labels.insert(
                "topology.kubernetes.io/region".to_owned(),
                s.defs.region.clone(),
            );
        }
        let runtime = format!(
            "fargate://{}",
            s.platform_version.as_deref().unwrap_or("LATEST")
        );
        let version = env!("CARGO_PKG_VERSION");
        NodeInfo {
            operating_system: "linux".into(),
            architecture: s.architecture.clone(),
            labels,
            ..service::node_info("fargate", version, &s.capacity, "AWS Fargate", runtime)
        }
    }

    fn plan(&self, pod: &Pod) -> Result<plan::Plan, plan::Invalid> {
        plan::plan(pod, &self.inner.settings.defs)
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
        let known = self.inner.state.lock().pods.contains_key(&pod_ref.uid);
        Ok(known.then(|| PodStatus {
            pod_ref: Some(pod_ref.clone()),
            phase: PodPhase::Pending as i32,
            ..Default::default()
        }))
    }

    async fn create(
        &self,
        pod_ref: &PodRef,
        pod: &Pod,
        plan: plan::Plan,
    ) -> Result<PodStatus, Status> {
        // Starts the pod's task: its family counted as in flight meanwhile, so a poll's GC leaves
        // the definition alone.
        let plan = &plan;
        *self
            .inner
            .state
            .lock()
            .in_flight
            .entry(plan.spec.family())
            .or_default() += 1;
        let result = self.create_task(pod_ref, &pod.node_name, pod, plan).await;
        {
            let mut st = self.inner.state.lock();
            if let Some(n) = st.in_flight.get_mut(&plan.spec.family()) {
                *n = n.saturating_sub(1);
            }
        }
        result.map_err(|e| e.to_status())
    }

    async fn update(&self, pod_ref: &PodRef, plan: plan::Plan) -> Result<(), Status> {
        let (hash, digest) = self
            .inner
            .state
            .lock()
            .pods
            .get(&pod_ref.uid)
            .map(|t| (t.content_hash.clone(), t.secrets_digest.clone()))
            .ok_or_else(|| Status::not_found(format!("pod {} is not known", pod_ref.uid)))?;
        if hash != plan.content_hash {
            return Err(Status::unimplemented(
                "ECS cannot change a running task in place (images, environment and files are fixed at RunTask)",
            ));
        }
        if !plan.secrets.is_empty() {
            let digest = match digest {
                Some(d) => d,
                // After a restart: the pod's secrets say what the task was started with.
                None => {
                    let d = self
                        .stored_digest(&pod_ref.uid, &plan.secrets)
                        .await
                        .map_err(|e| e.to_status())?;
                    if let Some(t) = self.inner.state.lock().pods.get_mut(&pod_ref.uid) {
                        t.secrets_digest = Some(d.clone());
                    }
                    d
                }
            };
            if digest != plan.secrets.digest() {
                return Err(Status::unimplemented(
                    "ECS cannot change a running task in place: values from Secrets are read once, when the task starts",
                ));
            }
        }
        Ok(())
    }

    async fn delete(&self, pod_ref: &PodRef, _grace: Option<i64>) -> Result<bool, Status> {
        let tracked = self.inner.state.lock().pods.get(&pod_ref.uid).map(|t| {
            (
                t.task_arn.clone(),
                t.secret_names.clone(),
                t.last_status == "STOPPED",
            )
        });
        let mut finished = false;
        let (arn, secret_names) = match tracked {
            Some((arn, names, stopped)) => {
                finished = stopped;
                (Some(arn), names)
            }
            None => (
                self.inner
                    .cloud
                    .find_task(&started_by(pod_ref), &self.inner.settings.installation)
                    .await
                    .map_err(|e| e.to_status())?,
                None,
            ),
        };
        let Some(arn) = arn else {
            // A create that failed after making the pod's secrets leaves them behind.
            self.delete_secrets(&pod_ref.uid, secret_names)
                .await
                .map_err(|e| e.to_status())?;
            return Ok(false);
        };
        // A finished pod's task has stopped already (and keeps its own stoppedReason).
        if !finished {
            self.inner
                .cloud
                .stop(&arn)
                .await
                .map_err(|e| e.to_status())?;
            tracing::info!(pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name), uid = %pod_ref.uid, task = %arn, "task stopped");
        }
        if let Some(t) = self.inner.state.lock().pods.get_mut(&pod_ref.uid) {
            t.deleting = true;
        }
        // A task that had stopped by itself keeps its own stoppedReason: the tag tells a
        // restarted provider the pod is gone. Best effort: at worst a restarted provider reports
        // the finished pod again until the shim deletes it again.
        if let Err(e) = self.inner.cloud.mark_deleted(&arn).await {
            tracing::warn!(error = %e, task = %arn, "cannot tag the task of a deleted pod");
        }
        // ECS read the secrets when the containers started; a stopped task needs them no more.
        self.delete_secrets(&pod_ref.uid, secret_names)
            .await
            .map_err(|e| e.to_status())?;
        if let Some(t) = self.inner.state.lock().pods.get_mut(&pod_ref.uid) {
            t.secret_names = Some(Vec::new());
        }
        Ok(true)
    }

    async fn logs(
        &self,
        pod_ref: PodRef,
        req: GetContainerLogsRequest,
    ) -> Result<BoxStream<LogChunk>, Status> {
        let group = self.inner.settings.defs.log_group.clone().ok_or_else(|| {
            Status::unimplemented("container logs are off: the provider runs without --log-group")
        })?;
        let (task_arn, known) = {
            let st = self.inner.state.lock();
            let t = st.pods.get(&pod_ref.uid).ok_or_else(|| {
                Status::not_found(format!(
                    "pod {}/{} is not known",
                    pod_ref.namespace, pod_ref.name
                ))
            })?;
            let known = t
                .shape
                .app
                .iter()
                .chain(&t.shape.init)
                .any(|(n, _)| *n == req.container);
            (t.task_arn.clone(), known)
        };
        if !known {
            return Err(Status::not_found(format!(
                "container {} is not in pod {}/{}",
                req.container, pod_ref.namespace, pod_ref.name
            )));
        }
        if req.previous {
            return Err(Status::not_found(
                "there is no previous instance: ECS does not restart containers in place",
            ));
        }
        let src = logs::Source {
            client: self.inner.cloud.logs.clone(),
            group,
            stream: log_stream(
                &self.inner.settings.defs.log_stream_prefix,
                &req.container,
                &task_arn,
            ),
            policy: self.inner.cloud.policy,
        };
        let (tx, rx) = mpsc::channel(16);
        let me = self.clone();
        let uid = pod_ref.uid.clone();
        let now_ms = rpc::now().seconds * 1000;
        tokio::spawn(logs::stream_logs(src, req, now_ms, tx, move || {
            me.inner
                .state
                .lock()
                .pods
                .get(&uid)
                .is_some_and(|t| t.last_status != "STOPPED" && !t.deleting)
        }));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    fn unsupported(&self, rpc: Streamed) -> Option<String> {
        Some(match rpc {
            Streamed::Exec => {
                let how = if self.inner.settings.enable_execute_command {
                    "tasks run with ECS Exec enabled: use `aws ecs execute-command`; bridging its SSM session is not implemented"
                } else {
                    "ECS Exec is off (start the provider with --enable-execute-command to use `aws ecs execute-command`)"
                };
                format!("exec is not offered by the Fargate provider: {how}")
            }
            Streamed::Attach => "attach is not offered by Fargate: ECS has no way to attach to a container's main process".into(),
            Streamed::PortForward => "port-forward is not offered by Fargate: ECS has no port-forwarding API".into(),
        })
    }

    async fn stats(&self, req: GetStatsRequest) -> Result<Vec<PodStats>, Status> {
        // ECS has no usage API of its own; without Container Insights no figures is the answer.
        if !self.inner.settings.container_insights {
            return Ok(Vec::new());
        }
        self.insights(&req).await.map_err(|e| e.to_status())
    }
}
