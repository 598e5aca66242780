//! Pod → `CreateContainerGroup` request (as JSON, flattened by `params.rs`). Pure.
//!
//! What ECI cannot honour and would change the pod's meaning is rejected (`Invalid`, the shim fails
//! the pod with the reason); best-effort settings ECI lacks are dropped with a warning.

use base64::Engine as _;
use podprovider_proto::v1::{
    Container, EnvVar, HttpGetAction, ImagePullPolicy, LifecycleHandler, Pod, PodRef, Probe,
    RestartPolicy, lifecycle_handler, probe, volume,
};
use provider_common::{
    naming::{self, NameRules},
    pod_spec::{self, EffectiveSecurity, NonRoot},
    resources,
};
use serde_json::{Map, Value, json};

use crate::{client::MAX_QUERY_BYTES, params, sizes};

/// Tag marking every group this provider creates (the status poll filters on it).
pub const TAG_MANAGED: (&str, &str) = ("vk-managed-by", "virtual-kubelet");
/// Tag with the cluster identity (`--cluster-id`): a provider lists, adopts and deletes only
/// groups carrying its own, so clusters sharing an account and region leave each other alone.
pub const TAG_CLUSTER: &str = "vk-cluster";

/// Annotation: `"true"` creates an EIP for the group (`AutoCreateEip`).
pub const ANN_WITH_EIP: &str = "k8s.aliyun.com/eci-with-eip";
/// Annotation: bind this existing EIP (`EipInstanceId`).
pub const ANN_EIP_ID: &str = "k8s.aliyun.com/eci-eip-instanceid";
/// Annotation: bandwidth of an auto-created EIP in Mbit/s (`EipBandwidth`).
pub const ANN_EIP_BANDWIDTH: &str = "k8s.aliyun.com/eip-bandwidth";
/// Annotation: `SpotAsPriceGo` or `SpotWithPriceLimit` (`SpotStrategy`).
pub const ANN_SPOT_STRATEGY: &str = "k8s.aliyun.com/eci-spot-strategy";
/// Annotation: highest hourly price with `SpotWithPriceLimit` (`SpotPriceLimit`).
pub const ANN_SPOT_PRICE_LIMIT: &str = "k8s.aliyun.com/eci-spot-price-limit";
/// Annotation: ECS instance types or a `<cpu>-<mem>Gi` size for the group (`InstanceType`).
pub const ANN_USE_SPECS: &str = "k8s.aliyun.com/eci-use-specs";

/// Where groups go.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// `VSwitchId` (comma-separated list for several zones).
    pub vswitch_id: String,
    /// `SecurityGroupId`.
    pub security_group_id: String,
    /// `ZoneId`, if pinned.
    pub zone_id: Option<String>,
    /// The cluster identity tagged on every group ([`TAG_CLUSTER`]).
    pub cluster_id: String,
}

pub use provider_common::Invalid;

/// A create request and the settings that were dropped.
#[derive(Debug)]
pub struct Plan {
    /// `CreateContainerGroup` parameters (nested; flatten before sending).
    pub request: Value,
    /// One sentence per ignored setting (sent as warning events).
    pub warnings: Vec<String>,
    /// The group's name.
    pub name: String,
    /// Hash of everything sent (tagged as `vk-content-hash`), to tell an unchanged UpdatePod.
    pub content_hash: String,
}

/// Kubernetes' safe sysctls (the kubelet allows them without `--allowed-unsafe-sysctls`): sent
/// as `SecurityContext.Sysctl.N`; every other sysctl goes to `HostSecurityContext.Sysctl.N`.
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// CreateContainerGroup's documented limits (API reference, `Container.N.*`, `Tag.N.*`),
/// refused up front so a pod fails with the limit named instead of ECI's bare InvalidParameter.
/// `EnvironmentVar.N.Key`: 1 to 128 characters, letters, digits and `_`, not starting with a
/// digit.
pub const MAX_ENV_KEY: usize = 128;
/// `EnvironmentVar.N.Value`: 0 to 256 characters.
pub const MAX_ENV_VALUE: usize = 256;
/// `Container.N.Arg`: at most 10.
pub const MAX_ARGS: usize = 10;
/// `Tag.N.Value`: at most 128 characters.
pub const MAX_TAG_VALUE: usize = 128;
/// Containers per instance (ECI's limits page; `Container.N`).
pub const MAX_CONTAINERS: usize = 20;
/// Volumes per instance (ECI's limits page; `Volume.N`).
pub const MAX_VOLUMES: usize = 20;

/// Tag holding the hash of the create request, for UpdatePod after a restart.
pub const TAG_HASH: &str = "vk-content-hash";
/// Temporary storage every group gets free; `EphemeralStorage` asks for space beyond it.
const FREE_EPHEMERAL_GIB: u64 = 30;

/// The group name of a pod: `vk-<ns>-<name>-<hash>`, lower-case letters, digits and `-`, at most
/// 128 characters (ECI's rule for `ContainerGroupName`).
pub fn group_name(r: &PodRef) -> String {
    naming::resource_name("vk", r, &NameRules::dns_label(128))
}

/// The `ClientToken` of a pod's create: derived from the UID only (at most 64 ASCII characters),
/// so every retry of a create, from any provider process, is the same request to ECI.
pub fn client_token(r: &PodRef) -> String {
    naming::short_hash(&["eci-create", &r.uid], 40)
}

fn restart_policy(p: i32) -> &'static str {
    match RestartPolicy::try_from(p).unwrap_or(RestartPolicy::Unspecified) {
        RestartPolicy::OnFailure => "OnFailure",
        RestartPolicy::Never => "Never",
        RestartPolicy::Always | RestartPolicy::Unspecified => "Always",
    }
}

fn pull_policy(p: i32) -> Option<&'static str> {
    match ImagePullPolicy::try_from(p).unwrap_or(ImagePullPolicy::Unspecified) {
        ImagePullPolicy::Always => Some("Always"),
        ImagePullPolicy::IfNotPresent => Some("IfNotPresent"),
        ImagePullPolicy::Never => Some("Never"),
        ImagePullPolicy::Unspecified => None,
    }
}

fn http_get(h: &HttpGetAction, what: &str, warnings: &mut Vec<String>) -> Value {
    if !h.host.is_empty() {
        warnings.push(format!(
            "{what}: httpGet host is not supported by ECI; the pod IP is probed"
        ));
    }
    if !h.http_headers.is_empty() {
        warnings.push(format!(
            "{what}: httpGet headers are not supported by ECI and were dropped"
        ));
    }
    let mut v = json!({ "Port": h.port });
    if !h.path.is_empty() {
        v["Path"] = json!(h.path);
    }
    if !h.scheme.is_empty() {
        v["Scheme"] = json!(h.scheme.to_ascii_uppercase());
    }
    v
}

fn probe(p: &Probe, what: &str, warnings: &mut Vec<String>) -> Option<Value> {
    let mut v = Map::new();
    match p.handler.as_ref()? {
        probe::Handler::Exec(e) => {
            v.insert("Exec".into(), json!({ "Command": e.command }));
        }
        probe::Handler::HttpGet(h) => {
            v.insert("HttpGet".into(), http_get(h, what, warnings));
        }
        probe::Handler::TcpSocket(t) => {
            if !t.host.is_empty() {
                warnings.push(format!(
                    "{what}: tcpSocket host is not supported by ECI; the pod IP is probed"
                ));
            }
            v.insert("TcpSocket".into(), json!({ "Port": t.port }));
        }
        probe::Handler::Grpc(_) => {
            warnings.push(format!(
                "{what}: gRPC probes are not supported by ECI; the probe was dropped"
            ));
            return None;
        }
    }
    for (k, n) in [
        ("InitialDelaySeconds", p.initial_delay_seconds),
        ("TimeoutSeconds", p.timeout_seconds),
        ("PeriodSeconds", p.period_seconds),
        ("SuccessThreshold", p.success_threshold),
        ("FailureThreshold", p.failure_threshold),
    ] {
        if n > 0 {
            v.insert(k.into(), json!(n));
        }
    }
    Some(Value::Object(v))
}

fn lifecycle(
    h: &LifecycleHandler,
    prefix: &str,
    out: &mut Map<String, Value>,
    what: &str,
    warnings: &mut Vec<String>,
) {
    match &h.action {
        Some(lifecycle_handler::Action::Exec(e)) => {
            out.insert(format!("{prefix}Exec"), json!(e.command));
        }
        Some(lifecycle_handler::Action::HttpGet(g)) => {
            out.insert(format!("{prefix}HttpGetPort"), json!(g.port));
            if !g.path.is_empty() {
                out.insert(format!("{prefix}HttpGetPath"), json!(g.path));
            }
            if !g.scheme.is_empty() {
                out.insert(
                    format!("{prefix}HttpGetScheme"),
                    json!(g.scheme.to_ascii_uppercase()),
                );
            }
            if !g.host.is_empty() {
                out.insert(format!("{prefix}HttpGetHost"), json!(g.host));
            }
            let headers: Vec<Value> = g
                .http_headers
                .iter()
                .map(|h| json!({"Name": h.name, "Value": h.value}))
                .collect();
            if !headers.is_empty() {
                out.insert(format!("{prefix}HttpGetHttpHeader"), Value::Array(headers));
            }
        }
        Some(lifecycle_handler::Action::TcpSocket(t)) => {
            out.insert(format!("{prefix}TcpSocketPort"), json!(t.port));
            if !t.host.is_empty() {
                out.insert(format!("{prefix}TcpSocketHost"), json!(t.host));
            }
        }
        Some(lifecycle_handler::Action::SleepSeconds(_)) => {
            warnings.push(format!(
                "{what}: sleep hooks are not supported by ECI; the hook was dropped"
            ));
        }
        None => {}
    }
}

/// `EnvironmentVar` entries: later entries win (Kubernetes order) and ECI wants each name once.
/// Pod IPs come from ECI's own field reference, filled in once the group has its address.
fn env(c: &Container, what: &str, warnings: &mut Vec<String>) -> Vec<Value> {
    let mut env: Vec<(&str, &EnvVar)> = Vec::new();
    for e in &c.env {
        if let Some(slot) = env.iter_mut().find(|(n, _)| *n == e.name) {
            slot.1 = e;
        } else {
            env.push((&e.name, e));
        }
    }
    env.into_iter()
        .map(|(k, e)| match e.pod_field.as_str() {
            "" => json!({"Key": k, "Value": e.value}),
            field => {
                if field != "status.podIP" {
                    warnings.push(format!(
                        "env {k} of {what}: {field} is given as status.podIP, the only pod field ECI fills in (the group has one IP)"
                    ));
                }
                json!({"Key": k, "FieldRef": {"FieldPath": "status.podIP"}})
            }
        })
        .collect()
}

/// The container's security settings, with the pod's where the container has none: the nested
/// `SecurityContext` (RunAsUser, ReadOnlyRootFilesystem, Capability.Add) and, on app containers
/// only (InitContainer has no such parameters), the flat `SecurityContextPrivileged`,
/// `SecurityContextRunAsGroup` and `SecurityContextRunAsNonRoot` of CreateContainerGroup's
/// `Container.N` (eci-20180808 SDK: CreateContainerGroupRequestContainer).
fn security(
    pod: &Pod,
    c: &Container,
    init: bool,
    what: &str,
    out: &mut Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<(), Invalid> {
    let e = EffectiveSecurity::of(pod.security_context.as_ref(), c.security_context.as_ref());
    let mut ignored = Vec::new();
    if e.privileged == Some(true) {
        if init {
            return Err(Invalid(format!(
                "{what}: privileged init containers are not supported by ECI (SecurityContextPrivileged exists for app containers only)"
            )));
        }
        out.insert("SecurityContextPrivileged".into(), json!(true));
    }
    match e.non_root() {
        NonRoot::Violated => return Err(Invalid(pod_spec::run_as_root_refused(c))),
        // ECI checks it at start (SecurityContextRunAsNonRoot); an init container's cannot be
        // passed on and the image's user cannot be read here.
        NonRoot::Unverifiable if init => warnings.push(format!(
            "{what}: runAsNonRoot was not checked: ECI does not tell the image's user; set runAsUser to a non-zero UID"
        )),
        NonRoot::Unverifiable | NonRoot::Satisfied | NonRoot::NotAsked => {}
    }
    if !init && e.run_as_non_root == Some(true) {
        out.insert("SecurityContextRunAsNonRoot".into(), json!(true));
    }
    if let Some(g) = e.run_as_group {
        if init {
            ignored.push("runAsGroup".to_owned());
        } else {
            out.insert("SecurityContextRunAsGroup".into(), json!(g));
        }
    }
    let mut s = Map::new();
    if let Some(u) = e.run_as_user {
        s.insert("RunAsUser".into(), json!(u));
    }
    if let Some(ro) = e.read_only_root_filesystem {
        s.insert("ReadOnlyRootFilesystem".into(), json!(ro));
    }
    if !e.capabilities_add.is_empty() {
        s.insert("Capability".into(), json!({"Add": e.capabilities_add}));
    }
    if !e.capabilities_drop.is_empty() {
        ignored.push("capabilities.drop".to_owned());
    }
    // true is what a container gets anyway.
    if e.allow_privilege_escalation == Some(false) {
        ignored.push("allowPrivilegeEscalation".to_owned());
    }
    if let Some(profile) = &e.seccomp {
        ignored.push(format!("seccomp profile {profile}"));
    }
    if !ignored.is_empty() {
        warnings.push(format!(
            "{what}: securityContext {} not supported by ECI and dropped",
            match ignored.len() {
                1 => format!("{} is", ignored[0]),
                _ => format!("{} are", ignored.join(", ")),
            }
        ));
    }
    if !s.is_empty() {
        out.insert("SecurityContext".into(), Value::Object(s));
    }
    Ok(())
}

/// The documented per-container limits. Messages name the variable, never its value.
fn limits(c: &Container, what: &str) -> Result<(), Invalid> {
    for e in &c.env {
        let k = &e.name;
        let charset = k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            && !k.starts_with(|ch: char| ch.is_ascii_digit());
        if k.is_empty() || k.chars().count() > MAX_ENV_KEY || !charset {
            return Err(Invalid(format!(
                "{what}: env name {k:?} is not one ECI accepts (EnvironmentVar.N.Key: 1 to {MAX_ENV_KEY} letters, digits and '_', not starting with a digit)"
            )));
        }
        if e.pod_field.is_empty() && e.value.chars().count() > MAX_ENV_VALUE {
            return Err(Invalid(format!(
                "{what}: the value of env {k} is longer than ECI's limit of {MAX_ENV_VALUE} characters (EnvironmentVar.N.Value)"
            )));
        }
    }
    if c.args.len() > MAX_ARGS {
        return Err(Invalid(format!(
            "{what}: {} args; ECI takes at most {MAX_ARGS} (Container.N.Arg)",
            c.args.len()
        )));
    }
    Ok(())
}

fn container(
    pod: &Pod,
    c: &Container,
    init: bool,
    warnings: &mut Vec<String>,
) -> Result<Value, Invalid> {
    let what = format!("container {}", c.name);
    if c.name.is_empty() || c.image.is_empty() {
        return Err(Invalid(format!("{what}: name and image are required")));
    }
    // DescribeContainerGroups shows commands and arguments to anyone who may list groups.
    if let Some(msg) = pod_spec::sensitive_command(c, "ECI") {
        return Err(Invalid(msg));
    }
    // EnvironmentVarHide exists on Container only: a Secret value in an init container's env
    // would be shown by DescribeContainerGroups, so such a pod is refused rather than exposed.
    if init && let Some(e) = c.env.iter().find(|e| e.sensitive) {
        return Err(Invalid(format!(
            "{what}: env {} comes from a Secret, and ECI cannot hide an init container's \
             environment (EnvironmentVarHide exists for app containers only)",
            e.name
        )));
    }
    limits(c, &what)?;
    if let Some(r) = pod_spec::extended_resources(c).first() {
        return Err(Invalid(format!(
            "{what}: resource {r} is not offered by ECI"
        )));
    }
    let mut v = Map::new();
    v.insert("Name".into(), json!(c.name));
    v.insert("Image".into(), json!(c.image));
    if let Some(p) = pull_policy(c.image_pull_policy) {
        v.insert("ImagePullPolicy".into(), json!(p));
    }
    if !c.command.is_empty() {
        v.insert("Command".into(), json!(c.command));
    }
    if !c.args.is_empty() {
        v.insert("Arg".into(), json!(c.args));
    }
    if !c.working_dir.is_empty() {
        v.insert("WorkingDir".into(), json!(c.working_dir));
    }
    let env = env(c, &what, warnings);
    if !env.is_empty() {
        v.insert("EnvironmentVar".into(), Value::Array(env));
    }
    // ECI has no per-variable secure field; EnvironmentVarHide keeps the container's whole
    // environment out of DescribeContainerGroups. The API offers it on Container only, not on
    // InitContainer.
    if !init && c.env.iter().any(|e| e.sensitive) {
        v.insert("EnvironmentVarHide".into(), json!(true));
    }
    let mut ports = Vec::new();
    for p in &c.ports {
        let proto = if p.protocol.is_empty() {
            "TCP"
        } else {
            p.protocol.as_str()
        };
        if !matches!(proto, "TCP" | "UDP") {
            return Err(Invalid(format!(
                "{what}: port protocol {proto} is not supported by ECI (TCP and UDP only)"
            )));
        }
        ports.push(json!({"Port": p.container_port, "Protocol": proto}));
    }
    if !ports.is_empty() {
        v.insert("Port".into(), Value::Array(ports));
    }
    let r = resources::container_resources(c);
    if r.cpu_millis > 0 {
        v.insert("Cpu".into(), json!(r.cpu_millis as f64 / 1000.0));
    }
    if r.memory_bytes > 0 {
        v.insert("Memory".into(), json!(sizes::gib(r.memory_bytes)));
    }
    let reqs = c.resources.as_ref();
    let gpu = reqs
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.nvidia_gpu)
        .or_else(|| {
            reqs.and_then(|r| r.requests.as_ref())
                .and_then(|l| l.nvidia_gpu)
        });
    if let Some(g) = gpu.filter(|g| *g > 0) {
        v.insert("Gpu".into(), json!(g));
    }
    let mounts: Vec<Value> = c
        .volume_mounts
        .iter()
        .map(|m| {
            let mut mv =
                json!({"Name": m.name, "MountPath": m.mount_path, "ReadOnly": m.read_only});
            if !m.sub_path.is_empty() {
                mv["SubPath"] = json!(m.sub_path);
            }
            mv
        })
        .collect();
    if !mounts.is_empty() {
        v.insert("VolumeMount".into(), Value::Array(mounts));
    }
    if init {
        for (set, n) in [
            (c.liveness_probe.is_some(), "livenessProbe"),
            (c.readiness_probe.is_some(), "readinessProbe"),
            (c.startup_probe.is_some(), "startupProbe"),
            (c.lifecycle.is_some(), "lifecycle"),
            (c.stdin, "stdin"),
            (c.stdin_once, "stdinOnce"),
            (c.tty, "tty"),
        ] {
            if set {
                warnings.push(format!("{what}: {n} on an init container is ignored"));
            }
        }
    } else {
        if let Some(p) = c
            .liveness_probe
            .as_ref()
            .and_then(|p| probe(p, &format!("{what} livenessProbe"), warnings))
        {
            v.insert("LivenessProbe".into(), p);
        }
        if let Some(p) = c
            .readiness_probe
            .as_ref()
            .and_then(|p| probe(p, &format!("{what} readinessProbe"), warnings))
        {
            v.insert("ReadinessProbe".into(), p);
        }
        if c.startup_probe.is_some() {
            warnings.push(format!(
                "{what}: startupProbe is not supported by ECI and was dropped"
            ));
        }
        if let Some(l) = &c.lifecycle {
            if let Some(h) = &l.post_start {
                lifecycle(h, "LifecyclePostStartHandler", &mut v, &what, warnings);
            }
            if let Some(h) = &l.pre_stop {
                lifecycle(h, "LifecyclePreStopHandler", &mut v, &what, warnings);
            }
        }
        if c.stdin {
            v.insert("Stdin".into(), json!(true));
        }
        if c.stdin_once {
            v.insert("StdinOnce".into(), json!(true));
        }
        if c.tty {
            v.insert("Tty".into(), json!(true));
        }
    }
    security(pod, c, init, &what, &mut v, warnings)?;
    Ok(Value::Object(v))
}

fn volumes(pod: &Pod) -> Result<Vec<Value>, Invalid> {
    let mut out = Vec::new();
    for vol in &pod.volumes {
        let v = match &vol.source {
            Some(volume::Source::EmptyDir(e)) => {
                let mut ed = json!({});
                if !e.medium.is_empty() {
                    ed["Medium"] = json!(e.medium);
                }
                if let Some(limit) = e.size_limit_bytes.filter(|l| *l > 0) {
                    ed["SizeLimit"] = json!(format!(
                        "{}Mi",
                        resources::bytes_to_mib_ceil(u64::try_from(limit).unwrap_or(0))
                    ));
                }
                json!({"Name": vol.name, "Type": "EmptyDirVolume", "EmptyDirVolume": ed})
            }
            Some(volume::Source::Files(f)) => {
                let files: Vec<Value> = f
                    .files
                    .iter()
                    .map(|file| {
                        let mut fv = json!({
                            "Path": file.path,
                            // ECI takes file contents base64-encoded.
                            "Content": base64::engine::general_purpose::STANDARD.encode(&file.content),
                        });
                        if let Some(m) = file.mode {
                            fv["Mode"] = json!(m);
                        }
                        fv
                    })
                    .collect();
                let mut cf = json!({ "ConfigFileToPath": files });
                if let Some(m) = f.default_mode {
                    cf["DefaultMode"] = json!(m);
                }
                json!({"Name": vol.name, "Type": "ConfigFileVolume", "ConfigFileVolume": cf})
            }
            Some(volume::Source::Nfs(n)) => json!({
                "Name": vol.name,
                "Type": "NFSVolume",
                "NFSVolume": {"Server": n.server, "Path": n.path, "ReadOnly": n.read_only},
            }),
            Some(volume::Source::AzureFile(_)) => {
                return Err(Invalid(format!(
                    "volume {}: azureFile is not supported by ECI",
                    vol.name
                )));
            }
            Some(volume::Source::GitRepo(_)) => {
                return Err(Invalid(format!(
                    "volume {}: gitRepo is not supported by ECI",
                    vol.name
                )));
            }
            Some(volume::Source::Unsupported(u)) => {
                return Err(Invalid(format!(
                    "volume {}: volume type {} is not supported by ECI",
                    vol.name, u.kind
                )));
            }
            None => return Err(Invalid(format!("volume {} has no source", vol.name))),
        };
        out.push(v);
    }
    Ok(out)
}

/// GiB of temporary storage to ask for beyond the free 30: what the pod's containers ask for
/// (limit, else request) as Kubernetes adds it up, minus the free part.
fn extra_ephemeral_gib(pod: &Pod) -> Option<u64> {
    let of = |c: &Container| {
        let r = c.resources.as_ref()?;
        let bytes = r
            .limits
            .as_ref()
            .and_then(|l| l.ephemeral_storage_bytes)
            .or(r.requests.as_ref().and_then(|q| q.ephemeral_storage_bytes))?;
        u64::try_from(bytes).ok()
    };
    let apps: u64 = pod.containers.iter().filter_map(of).sum();
    let need = pod
        .init_containers
        .iter()
        .filter_map(of)
        .fold(apps, u64::max);
    let gib = need.div_ceil(1 << 30);
    (gib > FREE_EPHEMERAL_GIB).then(|| gib - FREE_EPHEMERAL_GIB)
}

/// The `CreateContainerGroup` request for `pod`.
pub fn plan(pod: &Pod, placement: &Placement) -> Result<Plan, Invalid> {
    let pod_ref = pod
        .pod_ref
        .as_ref()
        .ok_or_else(|| Invalid("pod_ref is required".into()))?;
    if !pod.os.is_empty() && pod.os != "linux" {
        return Err(Invalid(format!(
            "os {} is not supported by ECI (linux only)",
            pod.os
        )));
    }
    if pod.containers.is_empty() {
        return Err(Invalid("a pod needs at least one container".into()));
    }
    if pod.containers.len() > MAX_CONTAINERS {
        return Err(Invalid(format!(
            "{} containers; an ECI instance runs at most {MAX_CONTAINERS} (Container.N)",
            pod.containers.len()
        )));
    }
    if pod.volumes.len() > MAX_VOLUMES {
        return Err(Invalid(format!(
            "{} volumes; an ECI instance mounts at most {MAX_VOLUMES} (Volume.N)",
            pod.volumes.len()
        )));
    }
    let mut warnings = Vec::new();
    let name = group_name(pod_ref);
    let mut req = Map::new();
    req.insert("ContainerGroupName".into(), json!(name));
    req.insert("ClientToken".into(), json!(client_token(pod_ref)));
    req.insert(
        "RestartPolicy".into(),
        json!(restart_policy(pod.restart_policy)),
    );
    req.insert("VSwitchId".into(), json!(placement.vswitch_id));
    req.insert("SecurityGroupId".into(), json!(placement.security_group_id));
    if let Some(z) = &placement.zone_id {
        req.insert("ZoneId".into(), json!(z));
    }

    let need = resources::pod_resources(pod);
    if need.cpu_millis > 0 || need.memory_bytes > 0 {
        let (cpu, mem) = sizes::fit(need.cpu_millis, need.memory_bytes).ok_or_else(|| {
            Invalid(format!(
                "the pod needs {} mCPU and {} MiB; the largest ECI size is {} vCPU / {} GiB",
                need.cpu_millis,
                resources::bytes_to_mib_ceil(need.memory_bytes),
                sizes::LARGEST.0,
                sizes::LARGEST.1
            ))
        })?;
        req.insert("Cpu".into(), json!(cpu));
        req.insert("Memory".into(), json!(mem));
    }
    if let Some(extra) = extra_ephemeral_gib(pod) {
        req.insert("EphemeralStorage".into(), json!(extra));
    }

    let mut containers = Vec::new();
    for c in &pod.containers {
        containers.push(container(pod, c, false, &mut warnings)?);
    }
    req.insert("Container".into(), Value::Array(containers));
    let mut inits = Vec::new();
    for c in &pod.init_containers {
        inits.push(container(pod, c, true, &mut warnings)?);
    }
    if !inits.is_empty() {
        req.insert("InitContainer".into(), Value::Array(inits));
    }
    let vols = volumes(pod)?;
    if !vols.is_empty() {
        req.insert("Volume".into(), Value::Array(vols));
    }

    let creds: Vec<Value> = pod
        .registry_credentials
        .iter()
        .map(|c| {
            let password = if c.password.is_empty() {
                &c.identity_token
            } else {
                &c.password
            };
            let server = c
                .server
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            json!({"Server": server, "UserName": c.username, "Password": password})
        })
        .collect();
    if !creds.is_empty() {
        req.insert("ImageRegistryCredential".into(), Value::Array(creds));
    }

    // DNS: ECI knows "Default" (the VPC resolver) and "None" (only dnsConfig). The cluster's DNS is
    // not reachable from a group, so ClusterFirst falls back to ECI's default.
    match pod.dns_policy.as_str() {
        "None" => {
            req.insert("DnsPolicy".into(), json!("None"));
        }
        "Default" => {
            req.insert("DnsPolicy".into(), json!("Default"));
        }
        _ => {}
    }
    if let Some(d) = &pod.dns_config {
        let mut dc = Map::new();
        if !d.nameservers.is_empty() {
            dc.insert("NameServer".into(), json!(d.nameservers));
        }
        if !d.searches.is_empty() {
            dc.insert("Search".into(), json!(d.searches));
        }
        let opts: Vec<Value> = d
            .options
            .iter()
            .map(|o| {
                let mut ov = json!({"Name": o.name});
                if !o.value.is_empty() {
                    ov["Value"] = json!(o.value);
                }
                ov
            })
            .collect();
        if !opts.is_empty() {
            dc.insert("Option".into(), Value::Array(opts));
        }
        if !dc.is_empty() {
            req.insert("DnsConfig".into(), Value::Object(dc));
        }
    }
    let aliases: Vec<Value> = pod
        .host_aliases
        .iter()
        .map(|h| json!({"Ip": h.ip, "Hostname": h.hostnames}))
        .collect();
    if !aliases.is_empty() {
        // ECI's parameter name is "HostAliase".
        req.insert("HostAliase".into(), Value::Array(aliases));
    }
    if !pod.hostname.is_empty() {
        req.insert("HostName".into(), json!(pod.hostname));
    }
    if !pod.subdomain.is_empty() {
        warnings.push("subdomain is not supported by ECI and was dropped".into());
    }
    if let Some(g) = pod.termination_grace_period_seconds {
        req.insert("TerminationGracePeriodSeconds".into(), json!(g));
    }
    // ECI ends the group itself at the deadline (the shim enforces it too).
    if let Some(d) = pod.active_deadline_seconds.filter(|d| *d > 0) {
        req.insert("ActiveDeadlineSeconds".into(), json!(d));
    }
    if let Some(sc) = &pod.security_context {
        // SecurityContext.Sysctl takes safe sysctls, HostSecurityContext.Sysctl the others
        // (CreateContainerGroup; ECI's security-context guide maps them to Kubernetes' split).
        let (safe, unsafe_): (Vec<_>, Vec<_>) = sc
            .sysctls
            .iter()
            .partition(|s| SAFE_SYSCTLS.contains(&s.name.as_str()));
        let entries = |v: Vec<&podprovider_proto::v1::Sysctl>| -> Vec<Value> {
            v.into_iter()
                .map(|s| json!({"Name": s.name, "Value": s.value}))
                .collect()
        };
        if !safe.is_empty() {
            req.insert("SecurityContext".into(), json!({"Sysctl": entries(safe)}));
        }
        if !unsafe_.is_empty() {
            req.insert(
                "HostSecurityContext".into(),
                json!({"Sysctl": entries(unsafe_)}),
            );
        }
        // runAsUser, runAsGroup, runAsNonRoot and seccomp reach (or are warned about in) each
        // container's SecurityContext; these two exist only for the pod, which ECI lacks.
        if sc.fs_group.is_some() || !sc.supplemental_groups.is_empty() {
            warnings.push(
                "pod securityContext fsGroup and supplementalGroups are not supported by ECI and were dropped"
                    .into(),
            );
        }
    }

    annotations(pod, &mut req)?;

    // Hash before the tags (which will hold it); the ClientToken is per UID, not content.
    let mut hashed = req.clone();
    hashed.remove("ClientToken");
    let content_hash = naming::short_hash(&[&Value::Object(hashed).to_string()], 16);
    let pod_tags = naming::pod_tags(pod_ref, &pod.node_name);
    if let Some((k, v)) = pod_tags
        .iter()
        .find(|(_, v)| v.chars().count() > MAX_TAG_VALUE)
    {
        return Err(Invalid(format!(
            "tag {k} would be {} characters; ECI's limit for a tag value is {MAX_TAG_VALUE} (Tag.N.Value)",
            v.chars().count()
        )));
    }
    let mut tags: Vec<Value> = pod_tags
        .into_iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    tags.push(json!({"Key": TAG_MANAGED.0, "Value": TAG_MANAGED.1}));
    tags.push(json!({"Key": TAG_CLUSTER, "Value": placement.cluster_id}));
    tags.push(json!({"Key": TAG_HASH, "Value": content_hash}));
    req.insert("Tag".into(), Value::Array(tags));

    let request = Value::Object(req);
    // Checked here, so an oversized pod fails for good with a reason instead of being retried.
    let (size, largest) = params::query_size(&params::flatten(&request));
    if size > MAX_QUERY_BYTES {
        let largest: Vec<String> = largest
            .iter()
            .take(3)
            .map(|(group, n)| format!("{group} {n} bytes"))
            .collect();
        return Err(Invalid(format!(
            "the pod's CreateContainerGroup request would be {size} bytes URL-encoded; ECI's RPC \
             API carries every parameter in the request URI, which holds at most {MAX_QUERY_BYTES} \
             bytes of them: make environment values, files (ConfigMap, Secret, projected \
             volumes) or commands smaller (largest: {})",
            largest.join(", ")
        )));
    }

    Ok(Plan {
        request,
        warnings,
        name,
        content_hash,
    })
}

fn annotations(pod: &Pod, req: &mut Map<String, Value>) -> Result<(), Invalid> {
    let a = &pod.annotations;
    if a.get(ANN_WITH_EIP)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        req.insert("AutoCreateEip".into(), json!(true));
    }
    if let Some(id) = a.get(ANN_EIP_ID).filter(|v| !v.is_empty()) {
        req.insert("EipInstanceId".into(), json!(id));
    }
    if let Some(bw) = a.get(ANN_EIP_BANDWIDTH) {
        let n: u32 = bw.parse().map_err(|_| {
            Invalid(format!(
                "annotation {ANN_EIP_BANDWIDTH}={bw:?} is not a whole number of Mbit/s"
            ))
        })?;
        req.insert("EipBandwidth".into(), json!(n));
    }
    if let Some(s) = a.get(ANN_SPOT_STRATEGY) {
        if !matches!(
            s.as_str(),
            "SpotAsPriceGo" | "SpotWithPriceLimit" | "NoSpot"
        ) {
            return Err(Invalid(format!(
                "annotation {ANN_SPOT_STRATEGY}={s:?}: use SpotAsPriceGo, SpotWithPriceLimit or NoSpot"
            )));
        }
        req.insert("SpotStrategy".into(), json!(s));
    }
    if let Some(p) = a.get(ANN_SPOT_PRICE_LIMIT) {
        let n: f64 = p.parse().map_err(|_| {
            Invalid(format!(
                "annotation {ANN_SPOT_PRICE_LIMIT}={p:?} is not a number"
            ))
        })?;
        req.insert("SpotPriceLimit".into(), json!(n));
    }
    if let Some(s) = a.get(ANN_USE_SPECS).filter(|v| !v.is_empty()) {
        // "<vCPU>-<mem>Gi" names a size; anything else is a list of ECS instance types.
        let size = s.split_once('-').and_then(|(c, m)| {
            Some((
                c.parse::<f64>().ok()?,
                m.strip_suffix("Gi")?.parse::<f64>().ok()?,
            ))
        });
        match size {
            Some((cpu, mem)) => {
                req.insert("Cpu".into(), json!(cpu));
                req.insert("Memory".into(), json!(mem));
            }
            None => {
                req.insert("InstanceType".into(), json!(s));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use podprovider_proto::v1::{
        ContainerPort, DnsConfig, DnsOption, EmptyDirVolume, FileEntry, FilesVolume, HostAlias,
        Lifecycle, NfsVolume, PodSecurityContext, RegistryCredential, ResourceRequirements,
        Resources, SecurityContext, TcpSocketAction, UnsupportedVolume, Volume, VolumeMount,
    };

    use super::*;
    use crate::params::flatten;

    /// A pod whose parameters cannot fit in a request URI is refused with a reason before any
    /// call (it used to fail in the HTTP client with "uri too long", retried as UNAVAILABLE).
    #[test]
    fn a_pod_too_large_for_a_request_uri_is_refused() {
        let planned = plan(&pod(), &placement()).expect("planned");
        let (size, _) = params::query_size(&flatten(&planned.request));
        assert!(size < 4096, "{size}");

        // Many env values (sensitive: their content must not be quoted), each within ECI's
        // own limit of 256 characters.
        let mut big_env = pod();
        big_env.containers[0].env = (0..2_000)
            .map(|i| EnvVar {
                name: format!("V{i}"),
                value: "s3cr3t".repeat(40),
                sensitive: true,
                pod_field: String::new(),
            })
            .collect();
        let e = plan(&big_env, &placement()).expect_err("too large");
        assert!(
            e.0.contains("CreateContainerGroup request would be")
                && e.0.contains(&format!("at most {MAX_QUERY_BYTES}"))
                && e.0.contains("Container.1.EnvironmentVar"),
            "{}",
            e.0
        );
        assert!(!e.0.contains("s3cr3t"), "{}", e.0);
        assert!(
            tonic::Status::invalid_argument(e.0).code() == tonic::Code::InvalidArgument,
            "the provider's create answers it as INVALID_ARGUMENT"
        );

        // A big ConfigMap file, binary content (every byte counts once encoded).
        let mut big_file = pod();
        if let Some(volume::Source::Files(f)) = &mut big_file.volumes[0].source {
            f.files[0].content = (0..=255u8).cycle().take(4 << 20).collect();
        }
        let e = plan(&big_file, &placement()).expect_err("too large");
        assert!(e.0.contains("Volume."), "{}", e.0);

        // At the limit is planned; a byte over is not (each command byte here encodes as 1).
        let fits = |n: usize| {
            let mut p = pod();
            p.containers[0].command[0] = "a".repeat(n);
            plan(&p, &placement())
        };
        let base = size - "nginx".len();
        assert!(fits(MAX_QUERY_BYTES - base).is_ok());
        assert!(fits(MAX_QUERY_BYTES - base + 1).is_err());
    }

    fn placement() -> Placement {
        Placement {
            vswitch_id: "vsw-1".into(),
            security_group_id: "sg-1".into(),
            zone_id: Some("cn-hangzhou-k".into()),
            cluster_id: "eci-test".into(),
        }
    }

    fn pod() -> Pod {
        Pod {
            pod_ref: Some(PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "uid-1".into(),
            }),
            node_name: "vk-eci".into(),
            containers: vec![Container {
                name: "nginx".into(),
                image: "nginx:1.25".into(),
                command: vec!["nginx".into()],
                args: vec!["-g".into(), "daemon off;".into()],
                env: vec![
                    EnvVar {
                        name: "A".into(),
                        value: "1".into(),
                        sensitive: false,
                        pod_field: String::new(),
                    },
                    EnvVar {
                        name: "PW".into(),
                        value: "secret".into(),
                        sensitive: true,
                        pod_field: String::new(),
                    },
                    EnvVar {
                        name: "A".into(),
                        value: "2".into(),
                        sensitive: false,
                        pod_field: String::new(),
                    },
                ],
                ports: vec![ContainerPort {
                    name: "http".into(),
                    container_port: 80,
                    protocol: "TCP".into(),
                }],
                resources: Some(ResourceRequirements {
                    requests: Some(Resources {
                        cpu_millis: Some(500),
                        memory_bytes: Some(1536 << 20),
                        ..Default::default()
                    }),
                    limits: None,
                }),
                volume_mounts: vec![
                    VolumeMount {
                        name: "cfg".into(),
                        mount_path: "/etc/cfg".into(),
                        sub_path: String::new(),
                        read_only: true,
                    },
                    VolumeMount {
                        name: "scratch".into(),
                        mount_path: "/tmp/s".into(),
                        ..Default::default()
                    },
                ],
                liveness_probe: Some(Probe {
                    handler: Some(probe::Handler::TcpSocket(TcpSocketAction {
                        port: 80,
                        host: String::new(),
                    })),
                    period_seconds: 10,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            init_containers: vec![Container {
                name: "init".into(),
                image: "busybox".into(),
                command: vec!["true".into()],
                ..Default::default()
            }],
            volumes: vec![
                Volume {
                    name: "cfg".into(),
                    source: Some(volume::Source::Files(FilesVolume {
                        files: vec![FileEntry {
                            path: "app.conf".into(),
                            content: b"k=v\n".to_vec(),
                            mode: Some(0o600),
                            sensitive: false,
                        }],
                        default_mode: Some(0o644),
                        ..Default::default()
                    })),
                },
                Volume {
                    name: "scratch".into(),
                    source: Some(volume::Source::EmptyDir(EmptyDirVolume {
                        medium: "Memory".into(),
                        size_limit_bytes: None,
                    })),
                },
                Volume {
                    name: "share".into(),
                    source: Some(volume::Source::Nfs(NfsVolume {
                        server: "nas.example".into(),
                        path: "/x".into(),
                        read_only: false,
                    })),
                },
            ],
            restart_policy: RestartPolicy::OnFailure as i32,
            termination_grace_period_seconds: Some(15),
            dns_policy: "None".into(),
            dns_config: Some(DnsConfig {
                nameservers: vec!["1.1.1.1".into()],
                searches: vec!["svc.local".into()],
                options: vec![DnsOption {
                    name: "ndots".into(),
                    value: "2".into(),
                }],
            }),
            host_aliases: vec![HostAlias {
                ip: "10.0.0.1".into(),
                hostnames: vec!["a".into(), "b".into()],
            }],
            registry_credentials: vec![RegistryCredential {
                server: "https://registry.example.com/".into(),
                username: "u".into(),
                password: "p".into(),
                identity_token: String::new(),
            }],
            annotations: HashMap::from([
                (ANN_WITH_EIP.to_owned(), "true".to_owned()),
                (ANN_SPOT_STRATEGY.to_owned(), "SpotAsPriceGo".to_owned()),
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_becomes_the_documented_parameters() {
        let plan = plan(&pod(), &placement()).expect("valid");
        let p = flatten(&plan.request);
        let want = [
            ("ContainerGroupName", plan.name.as_str()),
            ("RestartPolicy", "OnFailure"),
            ("VSwitchId", "vsw-1"),
            ("SecurityGroupId", "sg-1"),
            ("ZoneId", "cn-hangzhou-k"),
            ("Cpu", "0.5"),
            ("Memory", "2.0"),
            ("Container.1.Name", "nginx"),
            ("Container.1.Image", "nginx:1.25"),
            ("Container.1.Command.1", "nginx"),
            ("Container.1.Arg.2", "daemon off;"),
            ("Container.1.EnvironmentVar.1.Key", "A"),
            ("Container.1.EnvironmentVar.1.Value", "2"),
            ("Container.1.EnvironmentVar.2.Key", "PW"),
            ("Container.1.Port.1.Port", "80"),
            ("Container.1.Port.1.Protocol", "TCP"),
            ("Container.1.Cpu", "0.5"),
            ("Container.1.Memory", "1.5"),
            ("Container.1.VolumeMount.1.Name", "cfg"),
            ("Container.1.VolumeMount.1.ReadOnly", "true"),
            ("Container.1.LivenessProbe.TcpSocket.Port", "80"),
            ("Container.1.LivenessProbe.PeriodSeconds", "10"),
            ("InitContainer.1.Name", "init"),
            ("InitContainer.1.Command.1", "true"),
            ("Volume.1.Type", "ConfigFileVolume"),
            (
                "Volume.1.ConfigFileVolume.ConfigFileToPath.1.Path",
                "app.conf",
            ),
            (
                "Volume.1.ConfigFileVolume.ConfigFileToPath.1.Content",
                "az12Cg==",
            ),
            ("Volume.1.ConfigFileVolume.ConfigFileToPath.1.Mode", "384"),
            ("Volume.1.ConfigFileVolume.DefaultMode", "420"),
            ("Volume.2.Type", "EmptyDirVolume"),
            ("Volume.2.EmptyDirVolume.Medium", "Memory"),
            ("Volume.3.NFSVolume.Server", "nas.example"),
            ("ImageRegistryCredential.1.Server", "registry.example.com"),
            ("ImageRegistryCredential.1.UserName", "u"),
            ("DnsPolicy", "None"),
            ("DnsConfig.NameServer.1", "1.1.1.1"),
            ("DnsConfig.Search.1", "svc.local"),
            ("DnsConfig.Option.1.Name", "ndots"),
            ("DnsConfig.Option.1.Value", "2"),
            ("HostAliase.1.Ip", "10.0.0.1"),
            ("HostAliase.1.Hostname.2", "b"),
            ("TerminationGracePeriodSeconds", "15"),
            ("AutoCreateEip", "true"),
            ("SpotStrategy", "SpotAsPriceGo"),
            ("Tag.1.Key", "vk-pod-namespace"),
            ("Tag.3.Value", "uid-1"),
            ("Tag.4.Value", "vk-eci"),
            ("Tag.5.Key", "vk-managed-by"),
            // Tag.N.Key/Value of CreateContainerGroup: the cluster identity on every group.
            ("Tag.6.Key", "vk-cluster"),
            ("Tag.6.Value", "eci-test"),
        ];
        for (k, v) in want {
            assert_eq!(p.get(k).map(String::as_str), Some(v), "{k} in {p:#?}");
        }
        assert_eq!(
            p["ClientToken"],
            client_token(pod().pod_ref.as_ref().expect("ref"))
        );
        assert!(p["ClientToken"].len() <= 64);
        assert!(
            !p.contains_key("Container.1.EnvironmentVar.3.Key"),
            "duplicate env name sent"
        );
        assert!(plan.name.starts_with("vk-default-web-"));
    }

    #[test]
    fn sensitive_env_sets_the_sdks_environment_var_hide_on_that_container_only() {
        // CreateContainerGroupRequest.Container.N.EnvironmentVarHide in the ECI SDKs; their
        // InitContainer has no such field, so it is never sent there.
        let mut p = pod();
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        assert_eq!(f["Container.1.EnvironmentVarHide"], "true");
        assert!(
            !f.contains_key("InitContainer.1.EnvironmentVarHide"),
            "{f:#?}"
        );
        // An init container cannot hide its environment: a Secret value there is refused, and
        // the refusal names the variable, not its value.
        p.init_containers[0].env = vec![EnvVar {
            name: "PW".into(),
            value: "hunter2-secret".into(),
            sensitive: true,
            ..Default::default()
        }];
        let refused = plan(&p, &placement()).expect_err("refused").to_string();
        assert!(
            refused.contains("env PW") && !refused.contains("hunter2"),
            "{refused}"
        );
        p.init_containers[0].env.clear();

        p.containers[0]
            .env
            .iter_mut()
            .for_each(|e| e.sensitive = false);
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        assert!(!f.contains_key("Container.1.EnvironmentVarHide"));
    }

    #[test]
    fn unsupported_settings_are_rejected_with_the_reason() {
        let mut p = pod();
        p.volumes.push(Volume {
            name: "h".into(),
            source: Some(volume::Source::Unsupported(UnsupportedVolume {
                kind: "hostPath".into(),
            })),
        });
        let e = plan(&p, &placement()).expect_err("hostPath");
        assert!(e.0.contains("hostPath is not supported by ECI"), "{e}");

        let mut p = pod();
        p.containers[0].ports[0].protocol = "SCTP".into();
        assert!(plan(&p, &placement()).expect_err("sctp").0.contains("SCTP"));

        let mut p = pod();
        p.containers[0].resources = Some(ResourceRequirements {
            requests: Some(Resources {
                cpu_millis: Some(128_000),
                ..Default::default()
            }),
            limits: None,
        });
        assert!(
            plan(&p, &placement())
                .expect_err("too big")
                .0
                .contains("largest ECI size")
        );

        let mut p = pod();
        p.annotations
            .insert(ANN_SPOT_STRATEGY.into(), "Cheap".into());
        assert!(plan(&p, &placement()).is_err());
    }

    #[test]
    fn use_specs_names_a_size_or_instance_types() {
        let mut p = pod();
        p.annotations.insert(ANN_USE_SPECS.into(), "4-8Gi".into());
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        assert_eq!((f["Cpu"].as_str(), f["Memory"].as_str()), ("4.0", "8.0"));
        assert!(!f.contains_key("InstanceType"));
        p.annotations
            .insert(ANN_USE_SPECS.into(), "ecs.c6.large,ecs.g6.large".into());
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        assert_eq!(f["InstanceType"], "ecs.c6.large,ecs.g6.large");
    }

    #[test]
    fn ignored_settings_are_warned_about() {
        let mut p = pod();
        p.containers[0].startup_probe = Some(Probe::default());
        let plan = plan(&p, &placement()).expect("valid");
        assert!(
            plan.warnings.iter().any(|w| w.contains("startupProbe")),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn a_command_built_from_a_secret_is_refused_without_naming_the_value() {
        let mut p = pod();
        p.containers[0].args = vec!["--password=secret".into()];
        p.containers[0].args_sensitive = true;
        let e = plan(&p, &placement()).expect_err("refused");
        assert_eq!(
            e.0,
            "container nginx: its args contain a value from a Secret, and ECI has no secure field for commands"
        );
        assert!(!e.0.contains("--password"));
        let mut p = pod();
        p.init_containers[0].command_sensitive = true;
        assert!(
            plan(&p, &placement())
                .expect_err("refused")
                .0
                .starts_with("container init: its command contains")
        );
    }

    #[test]
    fn pod_ip_variables_use_ecis_field_reference() {
        let mut p = pod();
        p.containers[0].env = vec![
            EnvVar {
                name: "POD_IP".into(),
                pod_field: "status.podIP".into(),
                ..Default::default()
            },
            EnvVar {
                name: "POD_IPS".into(),
                pod_field: "status.podIPs".into(),
                ..Default::default()
            },
        ];
        let plan = plan(&p, &placement()).expect("valid");
        let f = flatten(&plan.request);
        assert_eq!(f["Container.1.EnvironmentVar.1.Key"], "POD_IP");
        assert_eq!(
            f["Container.1.EnvironmentVar.1.FieldRef.FieldPath"],
            "status.podIP"
        );
        assert!(!f.contains_key("Container.1.EnvironmentVar.1.Value"));
        assert_eq!(
            f["Container.1.EnvironmentVar.2.FieldRef.FieldPath"],
            "status.podIP"
        );
        assert_eq!(
            plan.warnings
                .iter()
                .filter(|w| w.starts_with("env "))
                .collect::<Vec<_>>(),
            [
                "env POD_IPS of container nginx: status.podIPs is given as status.podIP, the only pod field ECI fills in (the group has one IP)"
            ]
        );
    }

    /// Safe sysctls go to CreateContainerGroup's `SecurityContext.Sysctl.N.Name/Value`, unsafe
    /// ones to `HostSecurityContext.Sysctl.N.Name/Value`, each list in the pod's order.
    #[test]
    fn sysctls_are_split_into_security_context_and_host_security_context() {
        let mut p = pod();
        let sysctl = |n: &str, v: &str| podprovider_proto::v1::Sysctl {
            name: n.into(),
            value: v.into(),
        };
        p.security_context = Some(PodSecurityContext {
            sysctls: vec![
                sysctl("net.core.somaxconn", "1024"),
                sysctl("net.ipv4.ping_group_range", "0 2147483647"),
                sysctl("kernel.msgmax", "65536"),
                sysctl("net.ipv4.tcp_keepalive_time", "600"),
            ],
            ..Default::default()
        });
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        let want = [
            ("SecurityContext.Sysctl.1.Name", "net.ipv4.ping_group_range"),
            ("SecurityContext.Sysctl.1.Value", "0 2147483647"),
            (
                "SecurityContext.Sysctl.2.Name",
                "net.ipv4.tcp_keepalive_time",
            ),
            ("SecurityContext.Sysctl.2.Value", "600"),
            ("HostSecurityContext.Sysctl.1.Name", "net.core.somaxconn"),
            ("HostSecurityContext.Sysctl.1.Value", "1024"),
            ("HostSecurityContext.Sysctl.2.Name", "kernel.msgmax"),
            ("HostSecurityContext.Sysctl.2.Value", "65536"),
        ];
        for (k, v) in want {
            assert_eq!(f.get(k).map(String::as_str), Some(v), "{k} in {f:#?}");
        }
        assert!(!f.contains_key("SecurityContext.Sysctl.3.Name"));
        assert!(!f.contains_key("HostSecurityContext.Sysctl.3.Name"));
        // Only safe ones: no HostSecurityContext at all.
        p.security_context = Some(PodSecurityContext {
            sysctls: vec![sysctl("kernel.shm_rmid_forced", "1")],
            ..Default::default()
        });
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        assert_eq!(f["SecurityContext.Sysctl.1.Name"], "kernel.shm_rmid_forced");
        assert!(f.keys().all(|k| !k.starts_with("HostSecurityContext")));
    }

    #[test]
    fn pod_security_settings_fill_each_containers_and_the_rest_is_warned() {
        let mut p = pod();
        p.security_context = Some(PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            fs_group: Some(2000),
            ..Default::default()
        });
        p.containers.push(Container {
            name: "side".into(),
            image: "busybox".into(),
            security_context: Some(SecurityContext {
                run_as_user: Some(2000),
                read_only_root_filesystem: Some(true),
                capabilities_add: vec!["NET_ADMIN".into()],
                capabilities_drop: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        });
        let plan = plan(&p, &placement()).expect("valid");
        let f = flatten(&plan.request);
        assert_eq!(f["Container.1.SecurityContext.RunAsUser"], "1000");
        assert_eq!(f["InitContainer.1.SecurityContext.RunAsUser"], "1000");
        assert_eq!(f["Container.2.SecurityContext.RunAsUser"], "2000");
        assert_eq!(
            f["Container.2.SecurityContext.ReadOnlyRootFilesystem"],
            "true"
        );
        assert_eq!(
            f["Container.2.SecurityContext.Capability.Add.1"],
            "NET_ADMIN"
        );
        // runAsGroup: CreateContainerGroupRequest.Container.N.SecurityContextRunAsGroup; the
        // SDK's InitContainer has no such parameter.
        assert_eq!(f["Container.1.SecurityContextRunAsGroup"], "3000");
        assert_eq!(f["Container.2.SecurityContextRunAsGroup"], "3000");
        assert!(
            !f.keys()
                .any(|k| k.starts_with("InitContainer.1.SecurityContextRunAsGroup"))
        );
        for w in [
            "container init: securityContext runAsGroup is not supported by ECI and dropped",
            "container side: securityContext capabilities.drop is not supported by ECI and dropped",
            "pod securityContext fsGroup and supplementalGroups are not supported by ECI and were dropped",
        ] {
            assert!(
                plan.warnings.iter().any(|x| x == w),
                "{w} missing from {:?}",
                plan.warnings
            );
        }
    }

    #[test]
    fn run_as_non_root_is_the_sdks_security_context_run_as_non_root() {
        let mut p = pod();
        p.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(0),
            ..Default::default()
        });
        assert_eq!(
            plan(&p, &placement()).expect_err("root").0,
            "container nginx: runAsNonRoot is set but runAsUser is 0, so Kubernetes would not start it"
        );
        // Without a UID: CreateContainerGroupRequest.Container.N.SecurityContextRunAsNonRoot,
        // which ECI checks against the image; no warning for the app container.
        p.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        });
        let planned = plan(&p, &placement()).expect("valid");
        let f = flatten(&planned.request);
        assert_eq!(f["Container.1.SecurityContextRunAsNonRoot"], "true");
        assert!(!f.contains_key("InitContainer.1.SecurityContextRunAsNonRoot"));
        // The init container (no such parameter) cannot be checked: warned.
        let nonroot: Vec<_> = planned
            .warnings
            .iter()
            .filter(|w| w.contains("runAsNonRoot"))
            .collect();
        assert_eq!(
            nonroot,
            [
                "container init: runAsNonRoot was not checked: ECI does not tell the image's user; set runAsUser to a non-zero UID"
            ]
        );
        // With a non-zero UID for it, nothing to warn about.
        p.init_containers[0].security_context = Some(SecurityContext {
            run_as_user: Some(65534),
            ..Default::default()
        });
        let planned = plan(&p, &placement()).expect("valid");
        assert!(!planned.warnings.iter().any(|w| w.contains("runAsNonRoot")));
    }

    #[test]
    fn privileged_is_the_sdks_security_context_privileged_on_app_containers() {
        let mut p = pod();
        p.containers[0].security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        // CreateContainerGroupRequest.Container.N.SecurityContextPrivileged.
        assert_eq!(f["Container.1.SecurityContextPrivileged"], "true");
        // InitContainer has no such parameter: refused rather than run unprivileged.
        p.containers[0].security_context = None;
        p.init_containers[0].security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let e = plan(&p, &placement()).expect_err("privileged init");
        assert!(e.0.contains("privileged init containers"), "{e}");
    }

    #[test]
    fn active_deadline_is_the_sdks_active_deadline_seconds() {
        let mut p = pod();
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        assert!(!f.contains_key("ActiveDeadlineSeconds"));
        p.active_deadline_seconds = Some(600);
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        // CreateContainerGroupRequest.ActiveDeadlineSeconds.
        assert_eq!(f["ActiveDeadlineSeconds"], "600");
    }

    #[test]
    fn documented_limits_are_refused_with_the_limit_named() {
        let env = |name: &str, value: String| EnvVar {
            name: name.into(),
            value,
            ..Default::default()
        };
        // EnvironmentVar.N.Key: letters, digits, '_', not starting with a digit, 1..=128.
        for bad in ["my.var", "my-var", "1VAR", &"K".repeat(129)] {
            let mut p = pod();
            p.containers[0].env.push(env(bad, "v".into()));
            let e = plan(&p, &placement()).expect_err(bad);
            assert!(
                e.0.contains("EnvironmentVar.N.Key") && e.0.contains("128"),
                "{e}"
            );
        }
        let mut p = pod();
        p.containers[0].env.push(env(&"K".repeat(128), "v".into()));
        p.containers[0].env.push(env("_ok_2", "v".into()));
        assert!(plan(&p, &placement()).is_ok());
        // EnvironmentVar.N.Value: at most 256 characters; a Secret's value is never quoted.
        let mut p = pod();
        p.containers[0].env.push(EnvVar {
            sensitive: true,
            ..env("LONG", "s".repeat(257))
        });
        let e = plan(&p, &placement()).expect_err("long value");
        assert!(e.0.contains("env LONG") && e.0.contains("256"), "{e}");
        assert!(!e.0.contains("sss"), "{e}");
        p.containers[0].env.last_mut().expect("pushed").value = "s".repeat(256);
        assert!(plan(&p, &placement()).is_ok());
        // Container.N.Arg: at most 10.
        let mut p = pod();
        p.containers[0].args = (0..11).map(|i| i.to_string()).collect();
        let e = plan(&p, &placement()).expect_err("11 args");
        assert!(e.0.contains("at most 10") && e.0.contains("Arg"), "{e}");
        p.containers[0].args.pop();
        assert!(plan(&p, &placement()).is_ok());
        // Tag.N.Value: at most 128 characters (the pod name is tagged).
        let mut p = pod();
        if let Some(r) = p.pod_ref.as_mut() {
            r.name = "n".repeat(129);
        }
        let e = plan(&p, &placement()).expect_err("long name");
        assert!(e.0.contains("128") && e.0.contains("Tag.N.Value"), "{e}");
        // At most 20 containers and 20 volumes per instance.
        let mut p = pod();
        let c = p.containers[0].clone();
        p.containers = (0..21)
            .map(|i| Container {
                name: format!("c{i}"),
                volume_mounts: Vec::new(),
                ..c.clone()
            })
            .collect();
        let e = plan(&p, &placement()).expect_err("21 containers");
        assert!(
            e.0.contains("at most 20") && e.0.contains("Container.N"),
            "{e}"
        );
        p.containers.pop();
        assert!(plan(&p, &placement()).is_ok());
        let mut p = pod();
        let v = p.volumes[0].clone();
        p.volumes.extend((0..19).map(|i| Volume {
            name: format!("v{i}"),
            ..v.clone()
        }));
        assert!(p.volumes.len() > 20);
        let e = plan(&p, &placement()).expect_err("too many volumes");
        assert!(
            e.0.contains("at most 20") && e.0.contains("Volume.N"),
            "{e}"
        );
    }

    #[test]
    fn unsafe_sysctl_run_as_group_and_a_hidden_secret_make_the_right_parameters() {
        let mut p = pod();
        p.security_context = Some(PodSecurityContext {
            run_as_group: Some(3000),
            sysctls: vec![podprovider_proto::v1::Sysctl {
                name: "net.core.somaxconn".into(),
                value: "1024".into(),
            }],
            ..Default::default()
        });
        let planned = plan(&p, &placement()).expect("valid");
        let f = flatten(&planned.request);
        assert_eq!(f["HostSecurityContext.Sysctl.1.Name"], "net.core.somaxconn");
        assert_eq!(f["HostSecurityContext.Sysctl.1.Value"], "1024");
        assert!(!f.keys().any(|k| k.starts_with("SecurityContext.Sysctl")));
        assert_eq!(f["Container.1.SecurityContextRunAsGroup"], "3000");
        // The Secret value (PW) is sent, and the container's environment hidden.
        assert_eq!(f["Container.1.EnvironmentVarHide"], "true");
        assert!(f.values().any(|v| v == "secret"));
    }

    #[test]
    fn seccomp_profiles_are_warned_as_ignored() {
        let mut p = pod();
        p.init_containers.clear();
        p.containers[0].security_context = Some(SecurityContext {
            seccomp_profile_type: "Localhost".into(),
            seccomp_localhost_profile: "profiles/audit.json".into(),
            ..Default::default()
        });
        let plan = plan(&p, &placement()).expect("valid");
        assert!(
            plan.warnings.iter().any(|w| w
                == "container nginx: securityContext seccomp profile Localhost (profiles/audit.json) is not supported by ECI and dropped"),
            "{:?}",
            plan.warnings
        );
        assert!(!flatten(&plan.request).contains_key("Container.1.SecurityContext.RunAsUser"));
    }

    #[test]
    fn ephemeral_storage_beyond_the_free_30_gib_is_asked_for() {
        let mut p = pod();
        let with = |gib: i64| {
            Some(ResourceRequirements {
                requests: Some(Resources {
                    ephemeral_storage_bytes: Some(gib << 30),
                    ..Default::default()
                }),
                limits: None,
            })
        };
        p.containers[0].resources = with(20);
        assert!(
            !flatten(&plan(&p, &placement()).expect("valid").request)
                .contains_key("EphemeralStorage")
        );
        p.containers.push(Container {
            name: "side".into(),
            image: "busybox".into(),
            resources: with(30),
            ..Default::default()
        });
        let f = flatten(&plan(&p, &placement()).expect("valid").request);
        assert_eq!(f["EphemeralStorage"], "20");
    }

    #[test]
    fn extended_resources_are_refused() {
        let mut p = pod();
        p.containers[0].resources = Some(ResourceRequirements {
            requests: Some(Resources {
                other: [("example.com/fpga".to_owned(), "1".to_owned())].into(),
                ..Default::default()
            }),
            limits: None,
        });
        assert_eq!(
            plan(&p, &placement()).expect_err("refused").0,
            "container nginx: resource example.com/fpga is not offered by ECI"
        );
    }

    #[test]
    fn init_container_hooks_terminals_and_probe_hosts_are_warned() {
        let mut p = pod();
        p.init_containers[0].lifecycle = Some(Lifecycle::default());
        p.init_containers[0].tty = true;
        p.containers[0].liveness_probe = Some(Probe {
            handler: Some(probe::Handler::TcpSocket(TcpSocketAction {
                port: 80,
                host: "db.example".into(),
            })),
            ..Default::default()
        });
        let plan = plan(&p, &placement()).expect("valid");
        for w in [
            "container init: lifecycle on an init container is ignored",
            "container init: tty on an init container is ignored",
            "container nginx livenessProbe: tcpSocket host is not supported by ECI; the pod IP is probed",
        ] {
            assert!(
                plan.warnings.iter().any(|x| x == w),
                "{w} missing from {:?}",
                plan.warnings
            );
        }
    }

    #[test]
    fn the_hostname_is_mapped_and_a_subdomain_is_warned() {
        let mut p = pod();
        p.hostname = "db-0".into();
        p.subdomain = "db".into();
        let plan = plan(&p, &placement()).expect("valid");
        assert_eq!(flatten(&plan.request)["HostName"], "db-0");
        assert!(
            plan.warnings
                .iter()
                .any(|w| w == "subdomain is not supported by ECI and was dropped"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn informational_fields_change_nothing_and_warn_nothing() {
        let plain = plan(&pod(), &placement()).expect("valid");
        let mut p = pod();
        p.readiness_gates = vec!["example.com/ready".into()];
        p.containers[0].termination_message_policy = "FallbackToLogsOnError".into();
        p.containers[0].termination_message_path = "/tmp/msg".into();
        let informed = plan(&p, &placement()).expect("valid");
        assert_eq!(informed.warnings, plain.warnings);
        assert_eq!(informed.content_hash, plain.content_hash);
    }

    #[test]
    fn names_and_tokens_are_stable_per_uid() {
        let r = PodRef {
            namespace: "Ns".into(),
            name: "A_b".into(),
            uid: "u".into(),
        };
        let other = PodRef {
            uid: "v".into(),
            ..r.clone()
        };
        assert_eq!(group_name(&r), group_name(&r.clone()));
        assert_ne!(group_name(&r), group_name(&other));
        assert_ne!(client_token(&r), client_token(&other));
        assert!(
            group_name(&r)
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    /// Any pod gets a plan or an error (INVALID_ARGUMENT for the caller), never a panic, and an
    /// error never quotes a sensitive value.
    #[test]
    fn fuzz_any_pod_is_planned_or_refused() {
        provider_common::arbitrary::run_on_pods(|pod| {
            if let Err(e) = plan(&pod, &placement()) {
                provider_common::arbitrary::check_no_secret_quoted(&pod, &e.to_string())?;
            }
            Ok(())
        });
    }
}
