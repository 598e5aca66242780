//! The ECI (2018-08-08) responses this provider reads, as documented. Every field is optional and
//! unknown fields are ignored, so a newer API version still parses.

use serde::Deserialize;

/// `CreateContainerGroup` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateResponse {
    /// The new (or, for a repeated ClientToken, the existing) group's id.
    pub container_group_id: String,
}

/// A tag.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// A container's state in `DescribeContainerGroups` (`CurrentState` / `PreviousState`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct GroupContainerState {
    /// `Waiting`, `Running` or `Terminated`; empty when ECI has none.
    pub state: String,
    /// Details of the state.
    pub detail_status: String,
    /// Exit code (Terminated).
    pub exit_code: i32,
    /// Signal (Terminated).
    pub signal: i32,
    /// Reason, e.g. `Completed`, `Error`, `ContainerCreating`.
    pub reason: String,
    /// Message.
    pub message: String,
    /// Start (RFC 3339).
    pub start_time: String,
    /// End (RFC 3339).
    pub finish_time: String,
}

/// A container of a group in `DescribeContainerGroups`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct GroupContainer {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Restarts.
    pub restart_count: i32,
    /// Ready.
    pub ready: bool,
    /// Current state.
    pub current_state: GroupContainerState,
    /// State before the last restart.
    pub previous_state: GroupContainerState,
}

/// An event of a group in `DescribeContainerGroups`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GroupEvent {
    /// `Normal` or `Warning`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// CamelCase reason.
    pub reason: String,
    /// Text.
    pub message: String,
    /// RFC 3339.
    pub last_timestamp: String,
}

/// A group in `DescribeContainerGroups`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Group {
    /// `eci-…`.
    pub container_group_id: String,
    /// Name.
    pub container_group_name: String,
    /// Pending, Scheduling, Running, Succeeded, Failed, ScheduleFailed, Restarting, Updating,
    /// Terminating, Expired.
    pub status: String,
    /// Tags.
    pub tags: Vec<Tag>,
    /// App containers.
    pub containers: Vec<GroupContainer>,
    /// Init containers.
    pub init_containers: Vec<GroupContainer>,
    /// Events (scheduling failures, pulls, …).
    pub events: Vec<GroupEvent>,
    /// Private IP.
    pub intranet_ip: String,
    /// Creation time (RFC 3339).
    pub creation_time: String,
}

/// `DescribeContainerGroups` answer (one page).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GroupsPage {
    /// Groups.
    pub container_groups: Vec<Group>,
    /// Next page; empty = last page.
    pub next_token: String,
}

/// A running container.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct StateRunning {
    /// Start time (RFC 3339). The API reference spells it `StartedAtstartedAt` in one place;
    /// both spellings are read.
    #[serde(
        rename = "StartedAt",
        alias = "StartedAtstartedAt",
        alias = "startedAt"
    )]
    pub started_at: String,
}

/// A terminated container.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct StateTerminated {
    /// Exit code.
    pub exit_code: i32,
    /// Signal.
    pub signal: i32,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
    /// `containerd://…`.
    #[serde(rename = "ContainerID")]
    pub container_id: String,
}

/// A waiting container.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct StateWaiting {
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// A container state: at most one field set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct State {
    /// Running.
    pub running: Option<StateRunning>,
    /// Terminated.
    pub terminated: Option<StateTerminated>,
    /// Waiting.
    pub waiting: Option<StateWaiting>,
}

/// A container's status in `DescribeContainerGroupStatus`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerStatus {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Image digest.
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// Ready.
    pub ready: bool,
    /// Started.
    pub started: Option<bool>,
    /// Restarts.
    pub restart_count: i32,
    /// Current state.
    pub state: State,
    /// Previous state.
    pub last_state: State,
}

/// A pod IP.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PodIp {
    /// The address.
    pub ip: String,
}

/// A group's Kubernetes-style status in `DescribeContainerGroupStatus`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PodStatus {
    /// Pending, Running, Succeeded, Failed.
    pub phase: String,
    /// Private IP.
    pub pod_ip: String,
    /// All IPs.
    pub pod_ips: Vec<PodIp>,
    /// Start time (RFC 3339).
    pub start_time: String,
    /// App containers (the answer has none for init containers: `DescribeContainerGroups`'
    /// `InitContainers[].CurrentState` has their states).
    pub container_statuses: Vec<ContainerStatus>,
    /// Conditions: where ECI puts the reasons and messages of a group's trouble.
    pub conditions: Vec<Condition>,
}

/// A condition of a group's `PodStatus`. The SDK's names are `Message`, `Reason`,
/// `lastTransitionTime`, `status` and `type` (mixed case); both casings are read.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Condition {
    /// PodScheduled, Initialized, Ready, ContainersReady, Unschedulable, ...
    #[serde(rename = "type", alias = "Type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    #[serde(rename = "status", alias = "Status")]
    pub status: String,
    /// Reason.
    #[serde(rename = "Reason", alias = "reason")]
    pub reason: String,
    /// Message.
    #[serde(rename = "Message", alias = "message")]
    pub message: String,
    /// RFC 3339.
    #[serde(rename = "lastTransitionTime", alias = "LastTransitionTime")]
    pub last_transition_time: String,
}

/// One group in `DescribeContainerGroupStatus`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct GroupStatus {
    /// `eci-…`.
    pub container_group_id: String,
    /// Name.
    pub name: String,
    /// Group status (as in `DescribeContainerGroups`).
    pub status: String,
    /// Kubernetes-style status.
    pub pod_status: PodStatus,
}

/// `DescribeContainerGroupStatus` answer (one page).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct StatusPage {
    /// Statuses.
    pub data: Vec<GroupStatus>,
    /// Next page; empty = last page.
    pub next_token: String,
}

/// `DescribeContainerLog` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogResponse {
    /// The log text.
    pub content: String,
}

/// `ExecContainerCommand` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecResponse {
    /// WebSocket to stream the command over (valid for a short time).
    pub web_socket_uri: String,
    /// Output of a synchronous (`Sync=true`) exec.
    pub sync_response: String,
}

/// vCPU figures of `DescribeMultiContainerGroupMetric` (group or container).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MetricCpu {
    /// Usage in the sampling window, in nanocores.
    pub usage_nano_cores: Option<u64>,
    /// Cumulative usage, in core-nanoseconds.
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory figures of `DescribeMultiContainerGroupMetric` (group or container), in bytes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MetricMemory {
    /// Working set.
    pub working_set: Option<u64>,
    /// Used memory.
    pub usage_bytes: Option<u64>,
    /// Resident set.
    pub rss: Option<u64>,
}

/// One container's figures in a metric record.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MetricContainer {
    /// Container name.
    pub name: String,
    /// vCPU.
    #[serde(rename = "CPU")]
    pub cpu: Option<MetricCpu>,
    /// Memory.
    pub memory: Option<MetricMemory>,
}

/// One sample of a group's figures.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MetricRecord {
    /// When it was sampled (RFC 3339).
    pub timestamp: String,
    /// Whole-group vCPU.
    #[serde(rename = "CPU")]
    pub cpu: Option<MetricCpu>,
    /// Whole-group memory.
    pub memory: Option<MetricMemory>,
    /// Per container.
    pub containers: Vec<MetricContainer>,
}

/// One group's samples.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MonitorData {
    /// `eci-…`.
    pub container_group_id: String,
    /// Samples.
    pub records: Vec<MetricRecord>,
}

/// `DescribeMultiContainerGroupMetric` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MetricsResponse {
    /// Per group.
    pub monitor_datas: Vec<MonitorData>,
}
