//! The ARM JSON shapes of `Microsoft.ContainerInstance/containerGroups` (api-version 2023-05-01),
//! as the REST reference names them. Requests are serialized from these types; responses are read
//! leniently (every field optional), so fields ACI adds later do not break the provider.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A container group resource (request body of Create Or Update, and Get/List responses).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerGroup {
    /// ARM resource id (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Group name (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Azure region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Resource tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The group's properties.
    #[serde(default)]
    pub properties: GroupProperties,
}

/// `properties` of a container group.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupProperties {
    /// Pending, Creating, Succeeded, Failed, Canceled, Deleting, ... (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// App containers.
    #[serde(default)]
    pub containers: Vec<ContainerDef>,
    /// Init containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<InitContainerDef>,
    /// Registry credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_registry_credentials: Vec<RegistryCredential>,
    /// Always, OnFailure or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// The group's IP address and exposed ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddress>,
    /// Linux or Windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeDef>,
    /// Virtual network subnets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet_ids: Vec<SubnetId>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    /// Group-level runtime view (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_view: Option<GroupInstanceView>,
}

/// An app container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDef {
    /// Container name.
    pub name: String,
    /// Its properties.
    pub properties: ContainerProps,
}

/// `properties` of an app container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProps {
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// Command and arguments (ACI has no separate args).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Exposed ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_variables: Vec<EnvVar>,
    /// Requests and limits.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Liveness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Security settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContextDef>,
    /// Runtime view (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_view: Option<ContainerInstanceView>,
}

/// An init container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InitContainerDef {
    /// Container name.
    pub name: String,
    /// Its properties.
    pub properties: InitContainerProps,
}

/// `properties` of an init container (no resources, ports or probes in ACI).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InitContainerProps {
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// Command and arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_variables: Vec<EnvVar>,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Security settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContextDef>,
    /// Runtime view (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_view: Option<ContainerInstanceView>,
}

/// `securityContext` of a container or init container (`SecurityContextDefinition`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContextDef {
    /// Run privileged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Whether the process may gain more privileges than its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    /// Capabilities to add or drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// GID of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i32>,
    /// UID of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i32>,
    /// A seccomp profile's JSON, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<String>,
}

/// `capabilities` of a security context.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Capabilities {
    /// Capabilities to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Capabilities to drop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// A container port.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// TCP or UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port number.
    pub port: i32,
}

/// An environment variable: `value` or, for secrets, `secureValue` (never returned by ARM).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Plain value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Secure value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_value: Option<String>,
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("value", &self.value)
            .field(
                "secure_value",
                &self.secure_value.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Requests and limits of one container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// What the container reserves (required by ACI).
    #[serde(default)]
    pub requests: ResourceAmounts,
    /// The most it may use (at most the group's total request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
}

/// CPU cores, memory in GB and GPUs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    /// Memory in GB (multiples of 0.1).
    #[serde(rename = "memoryInGB", default)]
    pub memory_in_gb: f64,
    /// CPU cores (multiples of 0.01).
    #[serde(default)]
    pub cpu: f64,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuResource>,
}

/// GPUs of one container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuResource {
    /// How many.
    pub count: i64,
    /// K80, P100 or V100.
    pub sku: String,
}

/// A volume mount.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// Volume name.
    pub name: String,
    /// Where.
    pub mount_path: String,
    /// Read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A liveness or readiness probe (ACI runs exec and httpGet probes).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Command probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ProbeExec>,
    /// HTTP probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<ProbeHttpGet>,
    /// Seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    /// Successes before healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Probe timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// `exec` of a probe (`ContainerExec`: nothing required).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProbeExec {
    /// Command and arguments.
    #[serde(default)]
    pub command: Vec<String>,
}

/// `httpGet` of a probe.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeHttpGet {
    /// Path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port.
    pub port: i32,
    /// http or https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// One probe header (`HttpHeader`: nothing required).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HttpHeader {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// Registry credentials (the password is a secret).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredential {
    /// Registry host without scheme.
    pub server: String,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password or token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("server", &self.server)
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The group's IP address.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    /// Ports open on the group's address.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Public or Private.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The address (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// A volume: exactly one source.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDef {
    /// Name.
    pub name: String,
    /// Azure Files share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_file: Option<AzureFileVolume>,
    /// Scratch space (an empty object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<serde_json::Map<String, serde_json::Value>>,
    /// Files: name → base64 content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<BTreeMap<String, String>>,
    /// Git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repo: Option<GitRepoVolume>,
}

impl std::fmt::Debug for VolumeDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeDef")
            .field("name", &self.name)
            .field("azure_file", &self.azure_file)
            .field("empty_dir", &self.empty_dir)
            .field(
                "secret",
                &self.secret.as_ref().map(|s| s.keys().collect::<Vec<_>>()),
            )
            .field("git_repo", &self.git_repo)
            .finish()
    }
}

/// An Azure Files share (the key is a secret).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AzureFileVolume {
    /// Share.
    pub share_name: String,
    /// Read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Storage account.
    pub storage_account_name: String,
    /// Storage account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account_key: Option<String>,
}

impl std::fmt::Debug for AzureFileVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureFileVolume")
            .field("share_name", &self.share_name)
            .field("read_only", &self.read_only)
            .field("storage_account_name", &self.storage_account_name)
            .field("storage_account_key", &"<redacted>")
            .finish()
    }
}

/// A git repository volume.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitRepoVolume {
    /// Target directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// Repository URL.
    pub repository: String,
    /// Commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A subnet the group joins.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SubnetId {
    /// ARM id of the subnet.
    pub id: String,
}

/// DNS settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsConfig {
    /// Name servers.
    pub name_servers: Vec<String>,
    /// Search domains, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_domains: Option<String>,
    /// Resolver options, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

/// Group-level runtime view.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupInstanceView {
    /// Pending, Running, Succeeded, Failed, Stopped.
    #[serde(default)]
    pub state: Option<String>,
    /// Events.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// A container's runtime view.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceView {
    /// Restarts so far.
    #[serde(default)]
    pub restart_count: Option<i32>,
    /// Current state.
    #[serde(default)]
    pub current_state: Option<ContainerState>,
    /// State before the last restart.
    #[serde(default)]
    pub previous_state: Option<ContainerState>,
    /// Events (pulling, pulled, started, ...).
    #[serde(default)]
    pub events: Vec<Event>,
}

/// A container state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// Waiting, Running or Terminated.
    #[serde(default)]
    pub state: Option<String>,
    /// When it started.
    #[serde(default)]
    pub start_time: Option<String>,
    /// Exit code, once terminated.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// When it finished.
    #[serde(default)]
    pub finish_time: Option<String>,
    /// Details, e.g. "Completed" or an error.
    #[serde(default)]
    pub detail_status: Option<String>,
}

/// An ACI event.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Occurrences.
    #[serde(default)]
    pub count: Option<i32>,
    /// First seen.
    #[serde(default)]
    pub first_timestamp: Option<String>,
    /// Last seen.
    #[serde(default)]
    pub last_timestamp: Option<String>,
    /// Short name, e.g. "Pulling".
    #[serde(default)]
    pub name: Option<String>,
    /// A sentence.
    #[serde(default)]
    pub message: Option<String>,
    /// Normal or Warning.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// A page of Container Groups - List By Resource Group. Entries stay raw JSON until read one by
/// one, so a group this provider cannot read (someone else's, or a newer shape) costs only itself.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupList {
    /// Groups.
    #[serde(default)]
    pub value: Vec<serde_json::Value>,
    /// The next page, if any.
    #[serde(default)]
    pub next_link: Option<String>,
}

/// Body of Containers - Execute Command.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    /// One executable (ACI passes no arguments).
    pub command: String,
    /// Terminal size.
    pub terminal_size: TerminalSize,
}

/// Terminal size of an exec.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TerminalSize {
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub cols: u32,
}

/// Response of Containers - Execute Command, and of Containers - Attach (ContainerAttachResponse
/// has the same two fields). The password is a secret.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResponse {
    /// `wss://` URI of the session.
    #[serde(default)]
    pub web_socket_uri: String,
    /// Exec: sent as the first message; attach: the `Authorization` header's value.
    #[serde(default)]
    pub password: String,
}

impl std::fmt::Debug for ExecResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecResponse")
            .field("web_socket_uri", &"<redacted>")
            .field("password", &"<redacted>")
            .finish()
    }
}

/// An asynchronous operation's status (the body at an `Azure-AsyncOperation` URL).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OperationStatus {
    /// `InProgress`, `Succeeded`, `Failed`, `Canceled`.
    #[serde(default)]
    pub status: String,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<ErrorDetail>,
}

/// Response of Containers - List Logs.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Logs {
    /// The log text.
    #[serde(default)]
    pub content: Option<String>,
}

/// An ARM error body: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorBody {
    /// The error.
    #[serde(default)]
    pub error: ErrorDetail,
}

/// The error inside an ARM error body.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorDetail {
    /// e.g. "ContainerGroupQuotaReached".
    #[serde(default)]
    pub code: String,
    /// A sentence.
    #[serde(default)]
    pub message: String,
}

/// Metrics - List's answer (Microsoft.Insights): one entry per metric asked for.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MetricsResponse {
    /// The metrics.
    #[serde(default)]
    pub value: Vec<Metric>,
}

/// One metric's time series.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Metric {
    /// `name.value`: `CpuUsage`, `MemoryUsage`.
    #[serde(default)]
    pub name: LocalizableString,
    /// One series per dimension value (`containerName`), or one for the resource.
    #[serde(default)]
    pub timeseries: Vec<TimeSeries>,
}

/// `{"value", "localizedValue"}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LocalizableString {
    /// The invariant value.
    #[serde(default)]
    pub value: String,
}

/// A time series and the dimension values it is for.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TimeSeries {
    /// Dimension values, e.g. `containername` = `web`.
    #[serde(default)]
    pub metadatavalues: Vec<MetadataValue>,
    /// The points, oldest first.
    #[serde(default)]
    pub data: Vec<MetricValue>,
}

/// One dimension value.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MetadataValue {
    /// The dimension's name.
    #[serde(default)]
    pub name: LocalizableString,
    /// Its value.
    #[serde(default)]
    pub value: String,
}

/// One point: `timeStamp` and the requested aggregation (absent when there was no data).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// When.
    #[serde(default)]
    pub time_stamp: String,
    /// The `Average` aggregation.
    #[serde(default)]
    pub average: Option<f64>,
}
