//! Pod → container group: the whole mapping, pure and unit-tested. Anything ACI would reject, or
//! that would change the pod's meaning if dropped, is refused here (INVALID_ARGUMENT) before Azure
//! is called; best-effort settings ACI lacks become warnings.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use podprovider_proto::v1::{
    self as pb, Container, ImagePullPolicy, Pod, PodRef, RestartPolicy, probe::Handler,
    volume::Source,
};
use provider_common::{
    naming::{self, NameRules},
    pod_spec::{self, EffectiveSecurity, NonRoot, Seccomp},
};
use sha2::{Digest, Sha256};

use crate::wire::{
    AzureFileVolume, ContainerDef, ContainerGroup, ContainerProps, DnsConfig, EnvVar,
    GitRepoVolume, GpuResource, GroupProperties, HttpHeader, InitContainerDef, InitContainerProps,
    IpAddress, Port, Probe, ProbeExec, ProbeHttpGet, RegistryCredential, ResourceAmounts,
    ResourceRequirements, SecurityContextDef, SubnetId, VolumeDef, VolumeMount,
};

/// Annotation naming the GPU SKU (as the Go provider reads it).
pub const GPU_SKU_ANNOTATION: &str = "virtual-kubelet.io/gpu-type";
/// Annotation asking for a public IP (`"true"`): the only way a pod gets one.
pub const PUBLIC_IP_ANNOTATION: &str = "virtual-kubelet.io/aci-public-ip";
/// The port a private IP opens for a pod that declares none: ACI requires `ipAddress.ports`
/// (REST reference: `IpAddress` requires `ports` and `type`), and `az container create` opens
/// this one (TCP) when given no `--ports`.
pub const PLACEHOLDER_PORT: i32 = 80;
/// Tag with the pod's grace period, for deletes after a restart.
pub const TAG_GRACE: &str = "vk-grace-seconds";
/// Tag with [`Plan::public_hash`].
pub const TAG_SPEC_HASH: &str = "vk-spec-hash";
/// Tag with the cluster identity (`--cluster-id`): a provider adopts and deletes only groups
/// carrying its own.
pub const TAG_CLUSTER: &str = "vk-cluster";
/// Keys of the PUT body whose values are secrets.
const SECRET_KEYS: [&str; 3] = ["secureValue", "password", "storageAccountKey"];
/// A seccomp profile (Docker's JSON format) that allows every system call: Kubernetes'
/// `Unconfined` said in the only form ACI's `seccompProfile` takes, a profile's contents.
const UNCONFINED_SECCOMP: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;

/// What shapes every group, from the provider's flags.
#[derive(Clone, Debug, Default)]
pub struct GroupSettings {
    /// Azure region.
    pub location: String,
    /// The cluster identity tagged on every group ([`TAG_CLUSTER`]).
    pub cluster_id: String,
    /// Subnet resource ids (VNet injection); empty = no VNet. With subnets every group gets a
    /// private IP.
    pub subnet_ids: Vec<String>,
    /// GPU SKUs on offer in the region; the first is the default.
    pub gpu_skus: Vec<String>,
    /// CPU request of a container that asks for none, in millicores.
    pub default_cpu_millis: u64,
    /// Memory request of a container that asks for none, in bytes.
    pub default_memory_bytes: u64,
    /// The cluster DNS service's IPs: ClusterFirst pods in a VNet resolve through them.
    pub cluster_dns: Vec<String>,
    /// The cluster's DNS domain (e.g. `cluster.local`).
    pub cluster_domain: String,
}

pub use provider_common::Invalid;

/// The outcome of mapping a pod.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Group name (deterministic from the pod's identity).
    pub name: String,
    /// The PUT body.
    pub group: ContainerGroup,
    /// Settings ACI lacks that were ignored, one sentence each.
    pub warnings: Vec<String>,
    /// Why the pod will have no IP, when it will not (a warning event for users).
    pub no_ip: Option<String>,
    /// Digest of the whole body, secrets included, to recognise an unchanged pod in UpdatePod.
    /// Kept in memory only.
    pub content_hash: String,
    /// Digest of the body without its secret values (the group's [`TAG_SPEC_HASH`] tag), so a
    /// restarted provider still recognises an unchanged pod. Secrets stay out of it: tags are
    /// readable by anyone who may read the resource group, and a digest of a short secret could
    /// be guessed offline.
    pub public_hash: String,
}

/// The group name of a pod: `vk-<ns>-<name>-<hash>`, at most 63 lower-case letters, digits and
/// hyphens (ACI's rule for container group names).
pub fn group_name(pod: &PodRef) -> String {
    naming::resource_name("vk", pod, &NameRules::dns_label(63))
}

/// CPU in hundredths of a core (ACI takes multiples of 0.01), rounded up.
fn centicores(millis: u64) -> u64 {
    millis.div_ceil(10).max(1)
}

/// Memory in tenths of a GB (ACI takes multiples of 0.1 GB; GB = 10^9 bytes as the Go provider
/// counts), rounded up so a container gets at least what it asked for.
fn decigb(bytes: u64) -> u64 {
    bytes.div_ceil(100_000_000).max(1)
}

/// A fixed-point amount as ACI prints it: `1.5`, `3`, `0.25`.
fn fixed(value: u64, scale: u64) -> String {
    let (int, frac) = (value / scale, value % scale);
    if frac == 0 {
        return int.to_string();
    }
    let digits = scale.to_string().len() - 1;
    let s = format!("{int}.{frac:0digits$}");
    s.trim_end_matches('0').to_owned()
}

fn to_f64(value: u64, scale: u64) -> f64 {
    // Values are small (cores, GB); the division is exact enough for two decimals.
    value as f64 / scale as f64
}

fn nonneg(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

/// Requests and limits of one container in ACI units.
struct Sized {
    cpu_req: u64,
    mem_req: u64,
    cpu_lim: Option<u64>,
    mem_lim: Option<u64>,
    gpu: Option<i64>,
}

fn size(c: &Container, s: &GroupSettings) -> Sized {
    let reqs = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let lims = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    // Kubernetes defaults a missing request to the limit.
    let cpu_req = nonneg(reqs.and_then(|r| r.cpu_millis))
        .or(nonneg(lims.and_then(|l| l.cpu_millis)))
        .unwrap_or(s.default_cpu_millis);
    let mem_req = nonneg(reqs.and_then(|r| r.memory_bytes))
        .or(nonneg(lims.and_then(|l| l.memory_bytes)))
        .unwrap_or(s.default_memory_bytes);
    Sized {
        cpu_req: centicores(cpu_req),
        mem_req: decigb(mem_req),
        cpu_lim: nonneg(lims.and_then(|l| l.cpu_millis)).map(centicores),
        mem_lim: nonneg(lims.and_then(|l| l.memory_bytes)).map(decigb),
        gpu: lims
            .and_then(|l| l.nvidia_gpu)
            .or(reqs.and_then(|r| r.nvidia_gpu))
            .filter(|g| *g > 0),
    }
}

fn env(c: &Container, warnings: &mut Vec<String>) -> Vec<EnvVar> {
    // Later entries win over earlier ones with the same name, as in Kubernetes.
    let mut out: Vec<(EnvVar, &str)> = Vec::new();
    for e in &c.env {
        let var = if e.sensitive {
            EnvVar {
                name: e.name.clone(),
                value: None,
                secure_value: Some(e.value.clone()),
            }
        } else {
            EnvVar {
                name: e.name.clone(),
                value: Some(e.value.clone()),
                secure_value: None,
            }
        };
        match out.iter_mut().find(|(v, _)| v.name == e.name) {
            Some(slot) => *slot = (var, e.pod_field.as_str()),
            None => out.push((var, e.pod_field.as_str())),
        }
    }
    // ACI refuses a variable without a value ("One and only one property of 'value' and
    // 'secureValue' can be specified in an environment variable", InvalidEnvironmentVariable;
    // virtual-kubelet#296), and an empty one reads as none: the variable is left out, so the
    // container sees it unset rather than empty, and users are told.
    out.into_iter()
        .filter_map(|(var, pod_field)| {
            let empty = var.value.as_deref().or(var.secure_value.as_deref()) == Some("");
            if !pod_field.is_empty() {
                // ACI has no reference to the group's own IP, and the IP exists only once the
                // group is placed.
                warnings.push(format!(
                    "env {} of container {}: {pod_field} is not known before ACI places the group; the variable is not set",
                    var.name, c.name
                ));
            } else if empty {
                warnings.push(format!(
                    "env {} of container {}: ACI refuses environment variables with an empty value; the variable is not set",
                    var.name, c.name
                ));
            }
            (!empty).then_some(var)
        })
        .collect()
}

fn command(c: &Container) -> Result<Vec<String>, Invalid> {
    // ACI shows a container's command to anyone who may read the group.
    if let Some(msg) = pod_spec::sensitive_command(c, "ACI") {
        return Err(Invalid(msg));
    }
    if c.command.is_empty() && !c.args.is_empty() {
        return Err(Invalid(format!(
            "container {}: ACI cannot override only the arguments of an image's entrypoint; give both command and args",
            c.name
        )));
    }
    Ok(c.command.iter().chain(&c.args).cloned().collect())
}

fn mounts(c: &Container, volumes: &BTreeSet<&str>) -> Result<Vec<VolumeMount>, Invalid> {
    c.volume_mounts
        .iter()
        .map(|m| {
            if !m.sub_path.is_empty() {
                return Err(Invalid(format!(
                    "container {}: volume mount {} uses subPath, which ACI does not support",
                    c.name, m.name
                )));
            }
            if !volumes.contains(m.name.as_str()) {
                return Err(Invalid(format!(
                    "container {}: volume mount {} names no volume of the pod",
                    c.name, m.name
                )));
            }
            Ok(VolumeMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: m.read_only,
            })
        })
        .collect()
}

fn probe(
    p: Option<&pb::Probe>,
    what: &str,
    c: &Container,
    warnings: &mut Vec<String>,
) -> Option<Probe> {
    let p = p?;
    let positive = |v: i32| (v > 0).then_some(v);
    let mut out = Probe {
        initial_delay_seconds: positive(p.initial_delay_seconds),
        period_seconds: positive(p.period_seconds),
        failure_threshold: positive(p.failure_threshold),
        success_threshold: positive(p.success_threshold),
        timeout_seconds: positive(p.timeout_seconds),
        ..Default::default()
    };
    match p.handler.as_ref()? {
        Handler::Exec(e) => {
            out.exec = Some(ProbeExec {
                command: e.command.clone(),
            })
        }
        Handler::HttpGet(h) => {
            if !h.host.is_empty() {
                warnings.push(format!(
                    "container {}: the {what} probe's httpGet host was ignored: ACI probes the container itself",
                    c.name
                ));
            }
            out.http_get = Some(ProbeHttpGet {
                path: (!h.path.is_empty()).then(|| h.path.clone()),
                port: h.port,
                scheme: (!h.scheme.is_empty()).then(|| h.scheme.to_ascii_lowercase()),
                http_headers: h
                    .http_headers
                    .iter()
                    .map(|x| HttpHeader {
                        name: x.name.clone(),
                        value: x.value.clone(),
                    })
                    .collect(),
            })
        }
        Handler::TcpSocket(_) | Handler::Grpc(_) => {
            warnings.push(format!(
                "container {}: the {what} probe was ignored: ACI runs only exec and httpGet probes",
                c.name
            ));
            return None;
        }
    }
    Some(out)
}

fn best_effort_warnings(c: &Container, init: bool, warnings: &mut Vec<String>) {
    let mut ignored = Vec::new();
    if !c.working_dir.is_empty() {
        ignored.push("workingDir");
    }
    if c.startup_probe.is_some() {
        ignored.push("startupProbe");
    }
    if c.lifecycle.is_some() {
        ignored.push("lifecycle hooks");
    }
    for (set, what) in [
        (c.stdin, "stdin"),
        (c.stdin_once, "stdinOnce"),
        (c.tty, "tty"),
    ] {
        if set {
            ignored.push(what);
        }
    }
    let res = c.resources.as_ref();
    if [
        res.and_then(|r| r.requests.as_ref()),
        res.and_then(|r| r.limits.as_ref()),
    ]
    .into_iter()
    .flatten()
    .any(|r| r.ephemeral_storage_bytes.is_some())
    {
        ignored.push("the ephemeral-storage amount");
    }
    for what in ignored {
        warnings.push(format!(
            "container {}: {what} was ignored: ACI does not offer it",
            c.name
        ));
    }
    if matches!(
        ImagePullPolicy::try_from(c.image_pull_policy),
        Ok(ImagePullPolicy::Never)
    ) {
        warnings.push(format!(
            "container {}: imagePullPolicy Never was ignored: ACI pulls every image when it creates the group",
            c.name
        ));
    }
    if init {
        for (p, what) in [
            (&c.liveness_probe, "liveness"),
            (&c.readiness_probe, "readiness"),
        ] {
            if p.is_some() {
                warnings.push(format!(
                    "init container {}: the {what} probe was ignored: ACI runs no probes in init containers",
                    c.name
                ));
            }
        }
        if !c.ports.is_empty() {
            warnings.push(format!(
                "init container {}: ports were ignored: ACI init containers expose none",
                c.name
            ));
        }
    }
}

/// The container's `securityContext`, with the pod's settings where the container has none.
fn security(
    pod: &Pod,
    c: &Container,
    warnings: &mut Vec<String>,
) -> Result<Option<SecurityContextDef>, Invalid> {
    let e = EffectiveSecurity::of(pod.security_context.as_ref(), c.security_context.as_ref());
    match e.non_root() {
        NonRoot::Violated => return Err(Invalid(pod_spec::run_as_root_refused(c))),
        NonRoot::Unverifiable => warnings.push(format!(
            "container {}: runAsNonRoot was not checked: ACI does not tell the image's user; set runAsUser to a non-zero UID",
            c.name
        )),
        NonRoot::Satisfied | NonRoot::NotAsked => {}
    }
    if e.read_only_root_filesystem == Some(true) {
        warnings.push(format!(
            "container {}: readOnlyRootFilesystem was ignored: ACI does not offer it",
            c.name
        ));
    }
    // ARM declares both ids as int32.
    let id = |what: &str, v: Option<i64>| {
        v.map(|v| {
            i32::try_from(v).map_err(|_| {
                Invalid(format!(
                    "container {}: {what} {v} is beyond ACI's limit of 2147483647",
                    c.name
                ))
            })
        })
        .transpose()
    };
    let seccomp_profile = match &e.seccomp {
        None => None,
        Some(Seccomp::Unconfined) => {
            Some(base64::engine::general_purpose::STANDARD.encode(UNCONFINED_SECCOMP))
        }
        Some(Seccomp::RuntimeDefault) => {
            warnings.push(format!(
                "container {}: seccomp profile RuntimeDefault was not sent: ACI takes only a profile's contents, so ACI's own default applies",
                c.name
            ));
            None
        }
        Some(other) => {
            warnings.push(format!(
                "container {}: seccomp profile {other} was ignored: ACI takes a profile's contents, and a virtual node has no profile files",
                c.name
            ));
            None
        }
    };
    let capabilities =
        (!e.capabilities_add.is_empty() || !e.capabilities_drop.is_empty()).then(|| {
            crate::wire::Capabilities {
                add: e.capabilities_add.clone(),
                drop: e.capabilities_drop.clone(),
            }
        });
    let def = SecurityContextDef {
        privileged: e.privileged,
        allow_privilege_escalation: e.allow_privilege_escalation,
        capabilities,
        run_as_group: id("runAsGroup", e.run_as_group)?,
        run_as_user: id("runAsUser", e.run_as_user)?,
        seccomp_profile,
    };
    Ok((def != SecurityContextDef::default()).then_some(def))
}

fn protocol(p: &str, c: &Container) -> Result<String, Invalid> {
    match p.to_ascii_uppercase().as_str() {
        "" | "TCP" => Ok("TCP".into()),
        "UDP" => Ok("UDP".into()),
        other => Err(Invalid(format!(
            "container {}: port protocol {other} is not supported by ACI (TCP and UDP only)",
            c.name
        ))),
    }
}

fn volumes(pod: &Pod, warnings: &mut Vec<String>) -> Result<Vec<VolumeDef>, Invalid> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for v in &pod.volumes {
        let mut def = VolumeDef {
            name: v.name.clone(),
            ..Default::default()
        };
        match v.source.as_ref() {
            Some(Source::EmptyDir(e)) => {
                if e.medium.eq_ignore_ascii_case("memory") {
                    warnings.push(format!(
                        "volume {}: medium Memory was ignored: ACI emptyDir volumes are on disk",
                        v.name
                    ));
                }
                def.empty_dir = Some(serde_json::Map::new());
            }
            Some(Source::Files(f)) => {
                let mut files = BTreeMap::new();
                for file in &f.files {
                    if file.path.contains('/') {
                        return Err(Invalid(format!(
                            "volume {}: file {} is in a subdirectory; ACI secret volumes hold only top-level files",
                            v.name, file.path
                        )));
                    }
                    files.insert(file.path.clone(), b64.encode(&file.content));
                }
                def.secret = Some(files);
            }
            Some(Source::AzureFile(a)) => {
                def.azure_file = Some(AzureFileVolume {
                    share_name: a.share_name.clone(),
                    read_only: a.read_only,
                    storage_account_name: a.storage_account_name.clone(),
                    storage_account_key: (!a.storage_account_key.is_empty())
                        .then(|| a.storage_account_key.clone()),
                })
            }
            Some(Source::GitRepo(g)) => {
                def.git_repo = Some(GitRepoVolume {
                    directory: (!g.directory.is_empty()).then(|| g.directory.clone()),
                    repository: g.repository.clone(),
                    revision: (!g.revision.is_empty()).then(|| g.revision.clone()),
                })
            }
            Some(Source::Nfs(_)) => {
                return Err(Invalid(format!(
                    "volume {}: volume type nfs is not supported by ACI",
                    v.name
                )));
            }
            Some(Source::Unsupported(u)) => {
                return Err(Invalid(format!(
                    "volume {}: volume type {} is not supported by ACI",
                    v.name, u.kind
                )));
            }
            None => {
                return Err(Invalid(format!("volume {} has no source", v.name)));
            }
        }
        out.push(def);
    }
    Ok(out)
}

fn registry_server(server: &str) -> String {
    // ACI wants the host: "https://index.docker.io/v1/" → "index.docker.io".
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    s.split('/').next().unwrap_or(s).to_owned()
}

fn credentials(pod: &Pod) -> Vec<RegistryCredential> {
    pod.registry_credentials
        .iter()
        .map(|c| {
            let (username, password) = if c.password.is_empty() && !c.identity_token.is_empty() {
                // A registry identity (refresh) token goes in as the password of the null GUID
                // user, the convention Azure Container Registry uses.
                (
                    "00000000-0000-0000-0000-000000000000".to_owned(),
                    c.identity_token.clone(),
                )
            } else {
                (c.username.clone(), c.password.clone())
            };
            RegistryCredential {
                server: registry_server(&c.server),
                username: Some(username),
                password: Some(password),
            }
        })
        .collect()
}

/// Kubernetes' limits on a pod's resolver (the kubelet's validation): nameservers and search
/// domains.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The group's `dnsConfig`: for dnsPolicy ClusterFirst (the default) in a VNet with the cluster
/// DNS known, the kubelet's ClusterFirst resolver — the cluster DNS first, the search domains
/// `<ns>.svc.<domain> svc.<domain> <domain>`, `ndots:5` — with the pod's dnsConfig appended (its
/// options override by name); otherwise the pod's dnsConfig alone (dnsPolicy None, or no
/// cluster DNS reachable).
fn dns(pod: &Pod, s: &GroupSettings, warnings: &mut Vec<String>) -> Option<DnsConfig> {
    let pod_ref = pod.pod_ref.as_ref()?;
    let policy = if pod.dns_policy.is_empty() {
        "ClusterFirst"
    } else {
        pod.dns_policy.as_str()
    };
    let cluster_first = matches!(policy, "ClusterFirst" | "ClusterFirstWithHostNet");
    let empty = pb::DnsConfig::default();
    let d = pod.dns_config.as_ref().unwrap_or(&empty);
    let mut servers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<(String, String)> = Vec::new();
    if cluster_first && !s.cluster_dns.is_empty() {
        if s.subnet_ids.is_empty() {
            warnings.push(
                "dnsPolicy ClusterFirst: the cluster DNS is reachable only from groups in a virtual network (--subnet-ids); ACI's resolver is used".into(),
            );
        } else {
            servers.extend(s.cluster_dns.iter().cloned());
            let domain = &s.cluster_domain;
            searches.extend([
                format!("{}.svc.{domain}", pod_ref.namespace),
                format!("svc.{domain}"),
                domain.clone(),
            ]);
            options.push(("ndots".into(), "5".into()));
        }
    }
    for n in &d.nameservers {
        if !servers.contains(n) {
            servers.push(n.clone());
        }
    }
    for d in &d.searches {
        if !searches.contains(d) {
            searches.push(d.clone());
        }
    }
    for o in &d.options {
        match options.iter_mut().find(|(name, _)| *name == o.name) {
            Some(slot) => slot.1.clone_from(&o.value),
            None => options.push((o.name.clone(), o.value.clone())),
        }
    }
    if servers.is_empty() {
        if !searches.is_empty() || !options.is_empty() {
            warnings.push(
                "dnsConfig searches/options were ignored: ACI needs nameservers in a dnsConfig"
                    .into(),
            );
        }
        return None;
    }
    if servers.len() > MAX_NAMESERVERS || searches.len() > MAX_SEARCHES {
        warnings.push(format!(
            "dnsConfig: only the first {MAX_NAMESERVERS} nameservers and {MAX_SEARCHES} search domains are used, as by the kubelet"
        ));
        servers.truncate(MAX_NAMESERVERS);
        searches.truncate(MAX_SEARCHES);
    }
    let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join(" "));
    Some(DnsConfig {
        name_servers: servers,
        search_domains: join(searches),
        options: join(
            options
                .into_iter()
                .map(|(name, value)| {
                    if value.is_empty() {
                        name
                    } else {
                        format!("{name}:{value}")
                    }
                })
                .collect(),
        ),
    })
}

/// Maps a pod to its container group.
pub fn plan(pod: &Pod, s: &GroupSettings) -> Result<Plan, Invalid> {
    let pod_ref = pod
        .pod_ref
        .as_ref()
        .ok_or_else(|| Invalid("the pod has no pod_ref".into()))?;
    let name = group_name(pod_ref);
    let mut warnings = Vec::new();
    if pod.containers.is_empty() {
        return Err(Invalid("the pod has no containers".into()));
    }
    if pod.containers.len() + pod.init_containers.len() > 60 {
        return Err(Invalid(
            "ACI allows at most 60 containers in a container group".into(),
        ));
    }
    let os_type = match pod.os.to_ascii_lowercase().as_str() {
        "" | "linux" => "Linux",
        "windows" => "Windows",
        other => {
            return Err(Invalid(format!(
                "operating system {other} is not offered by ACI (linux or windows)"
            )));
        }
    };
    for c in pod.init_containers.iter().chain(&pod.containers) {
        if let Some(r) = pod_spec::extended_resources(c).first() {
            return Err(Invalid(format!(
                "container {}: resource {r} is not offered by ACI",
                c.name
            )));
        }
    }
    let vols = volumes(pod, &mut warnings)?;
    let vol_names: BTreeSet<&str> = pod.volumes.iter().map(|v| v.name.as_str()).collect();

    // Sizes first: ACI caps every limit at the group's total request.
    let sized: Vec<Sized> = pod.containers.iter().map(|c| size(c, s)).collect();
    let total_cpu: u64 = sized.iter().map(|z| z.cpu_req).sum();
    let total_mem: u64 = sized.iter().map(|z| z.mem_req).sum();
    for (c, z) in pod.containers.iter().zip(&sized) {
        // ACI's own error (ContainerLimitGreaterThanContainerGroupTotalRequest), word for word.
        if let Some(l) = z.cpu_lim.filter(|l| *l > total_cpu) {
            return Err(Invalid(format!(
                "The 'Cpu' limit '{}' in container '{}' is greater than the total request '{}' of container group '{name}'.",
                fixed(l, 100),
                c.name,
                fixed(total_cpu, 100)
            )));
        }
        if let Some(l) = z.mem_lim.filter(|l| *l > total_mem) {
            return Err(Invalid(format!(
                "The 'MemoryInGB' limit '{}' in container '{}' is greater than the total request '{}' of container group '{name}'.",
                fixed(l, 10),
                c.name,
                fixed(total_mem, 10)
            )));
        }
    }

    let gpu_sku = |c: &Container| -> Result<String, Invalid> {
        let default = s.gpu_skus.first().ok_or_else(|| {
            Invalid(format!(
                "container {}: the pod asks for nvidia.com/gpu, but ACI offers no GPU SKU in {}",
                c.name, s.location
            ))
        })?;
        match pod.annotations.get(GPU_SKU_ANNOTATION) {
            None => Ok(default.clone()),
            Some(want) => s
                .gpu_skus
                .iter()
                .find(|k| k.eq_ignore_ascii_case(want))
                .cloned()
                .ok_or_else(|| {
                    Invalid(format!(
                        "the pod asks for GPU SKU {want}, but ACI offers {} in {}",
                        s.gpu_skus.join(", "),
                        s.location
                    ))
                }),
        }
    };

    let mut containers = Vec::new();
    let mut group_ports: BTreeSet<Port> = BTreeSet::new();
    for (c, z) in pod.containers.iter().zip(&sized) {
        best_effort_warnings(c, false, &mut warnings);
        let gpu = match z.gpu {
            Some(count) => Some(GpuResource {
                count,
                sku: gpu_sku(c)?,
            }),
            None => None,
        };
        let limits = (z.cpu_lim.is_some() || z.mem_lim.is_some() || gpu.is_some()).then(|| {
            ResourceAmounts {
                memory_in_gb: to_f64(z.mem_lim.unwrap_or(z.mem_req), 10),
                cpu: to_f64(z.cpu_lim.unwrap_or(z.cpu_req), 100),
                gpu: gpu.clone(),
            }
        });
        let mut ports = Vec::new();
        for p in &c.ports {
            let port = Port {
                protocol: Some(protocol(&p.protocol, c)?),
                port: p.container_port,
            };
            group_ports.insert(port.clone());
            ports.push(port);
        }
        containers.push(ContainerDef {
            name: c.name.clone(),
            properties: ContainerProps {
                image: c.image.clone(),
                command: command(c)?,
                ports,
                environment_variables: env(c, &mut warnings),
                resources: ResourceRequirements {
                    requests: ResourceAmounts {
                        memory_in_gb: to_f64(z.mem_req, 10),
                        cpu: to_f64(z.cpu_req, 100),
                        gpu,
                    },
                    limits,
                },
                volume_mounts: mounts(c, &vol_names)?,
                liveness_probe: probe(c.liveness_probe.as_ref(), "liveness", c, &mut warnings),
                readiness_probe: probe(c.readiness_probe.as_ref(), "readiness", c, &mut warnings),
                security_context: security(pod, c, &mut warnings)?,
                instance_view: None,
            },
        });
    }
    let mut init_containers = Vec::new();
    for c in &pod.init_containers {
        best_effort_warnings(c, true, &mut warnings);
        if c.resources
            .as_ref()
            .is_some_and(|r| r.requests.is_some() || r.limits.is_some())
        {
            warnings.push(format!(
                "init container {}: resources were ignored: ACI init containers share the group's resources",
                c.name
            ));
        }
        init_containers.push(InitContainerDef {
            name: c.name.clone(),
            properties: InitContainerProps {
                image: c.image.clone(),
                command: command(c)?,
                environment_variables: env(c, &mut warnings),
                volume_mounts: mounts(c, &vol_names)?,
                security_context: security(pod, c, &mut warnings)?,
                instance_view: None,
            },
        });
    }
    if !pod.host_aliases.is_empty() {
        warnings.push("hostAliases were ignored: ACI does not offer them".into());
    }
    // The shim sends the pod's name when spec.hostname is unset; only a chosen one is news.
    if !pod.hostname.is_empty() && pod.hostname != pod_ref.name {
        warnings.push("hostname was ignored: ACI does not offer it".into());
    }
    if !pod.subdomain.is_empty() {
        warnings.push("subdomain was ignored: ACI does not offer it".into());
    }
    if let Some(sc) = &pod.security_context {
        if !sc.sysctls.is_empty() {
            warnings.push("sysctls were ignored: ACI does not offer them".into());
        }
        // Pod-only settings; runAsUser, runAsGroup, runAsNonRoot and seccomp reach each
        // container's securityContext above.
        if sc.fs_group.is_some() {
            warnings.push("fsGroup was ignored: ACI does not offer it".into());
        }
        if !sc.supplemental_groups.is_empty() {
            warnings.push("supplementalGroups were ignored: ACI does not offer them".into());
        }
    }

    let (ip_address, no_ip) = ip_address(pod, s, group_ports, &mut containers)?;
    let restart_policy = match RestartPolicy::try_from(pod.restart_policy) {
        Ok(RestartPolicy::OnFailure) => "OnFailure",
        Ok(RestartPolicy::Never) => "Never",
        _ => "Always",
    };
    let mut tags: BTreeMap<String, String> = naming::pod_tags(pod_ref, &pod.node_name)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    tags.insert(TAG_CLUSTER.into(), s.cluster_id.clone());
    tags.insert(
        TAG_GRACE.into(),
        pod.termination_grace_period_seconds
            .unwrap_or(30)
            .to_string(),
    );
    let group = ContainerGroup {
        id: None,
        name: None,
        location: Some(s.location.clone()),
        tags,
        properties: GroupProperties {
            provisioning_state: None,
            containers,
            init_containers,
            image_registry_credentials: credentials(pod),
            restart_policy: Some(restart_policy.into()),
            ip_address,
            os_type: Some(os_type.into()),
            volumes: vols,
            subnet_ids: s
                .subnet_ids
                .iter()
                .map(|id| SubnetId { id: id.clone() })
                .collect(),
            dns_config: dns(pod, s, &mut warnings),
            instance_view: None,
        },
    };
    let mut value =
        serde_json::to_value(&group).map_err(|e| Invalid(format!("cannot encode: {e}")))?;
    let content_hash = digest(&value);
    strip_secrets(&mut value);
    let public_hash = digest(&value);
    let mut group = group;
    group.tags.insert(TAG_SPEC_HASH.into(), public_hash.clone());
    Ok(Plan {
        name,
        group,
        warnings,
        no_ip,
        content_hash,
        public_hash,
    })
}

/// Whether the pod asks for a public IP through [`PUBLIC_IP_ANNOTATION`].
fn wants_public_ip(pod: &Pod) -> Result<bool, Invalid> {
    match pod.annotations.get(PUBLIC_IP_ANNOTATION).map(|v| v.trim()) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v.is_empty() => Ok(false),
        Some(v) => Err(Invalid(format!(
            "annotation {PUBLIC_IP_ANNOTATION} must be \"true\" or \"false\", not {v:?}"
        ))),
    }
}

/// The group's `ipAddress`, and why the pod has none when it has none. Public only when the pod
/// asks (annotation); Private for every group in a VNet, with a placeholder port when the pod
/// declares none (added to the first container too, as `az container create` does); else none.
fn ip_address(
    pod: &Pod,
    s: &GroupSettings,
    ports: BTreeSet<Port>,
    containers: &mut [ContainerDef],
) -> Result<(Option<IpAddress>, Option<String>), Invalid> {
    let vnet = !s.subnet_ids.is_empty();
    if wants_public_ip(pod)? {
        if vnet {
            // ACI: groups in a virtual network have private IPs only.
            return Err(Invalid(format!(
                "annotation {PUBLIC_IP_ANNOTATION} asks for a public IP, but this node runs pods in a virtual network, where ACI offers only private IPs"
            )));
        }
        if ports.is_empty() {
            return Err(Invalid(format!(
                "annotation {PUBLIC_IP_ANNOTATION} asks for a public IP, but no container declares a port to open on it"
            )));
        }
        let ip = IpAddress {
            ports: ports.into_iter().collect(),
            kind: Some("Public".into()),
            ip: None,
        };
        return Ok((Some(ip), None));
    }
    if vnet {
        let ports: Vec<Port> = if ports.is_empty() {
            let placeholder = Port {
                protocol: Some("TCP".into()),
                port: PLACEHOLDER_PORT,
            };
            if let Some(first) = containers.first_mut() {
                first.properties.ports.push(placeholder.clone());
            }
            vec![placeholder]
        } else {
            ports.into_iter().collect()
        };
        let ip = IpAddress {
            ports,
            kind: Some("Private".into()),
            ip: None,
        };
        return Ok((Some(ip), None));
    }
    let why = if ports.is_empty() {
        format!(
            "the pod has no IP: ACI gives a container group an IP only in a virtual network (the provider's --subnet-ids) or, for a pod with ports, a public one on request (annotation {PUBLIC_IP_ANNOTATION}: \"true\")"
        )
    } else {
        format!(
            "the pod has no IP, so its ports are reachable only from its own containers: this node has no virtual network (the provider's --subnet-ids), and ACI's other choice, a public IP, is made only on request (annotation {PUBLIC_IP_ANNOTATION}: \"true\")"
        )
    };
    Ok((None, Some(why)))
}

fn digest(v: &serde_json::Value) -> String {
    Sha256::digest(v.to_string().as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Removes secret values (secure env values, registry passwords, storage keys, secret volume
/// contents) from a PUT body, keeping their names.
fn strip_secrets(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for key in SECRET_KEYS {
                map.remove(key);
            }
            for (key, child) in map.iter_mut() {
                match child {
                    serde_json::Value::Object(files) if key == "secret" => {
                        for content in files.values_mut() {
                            *content = serde_json::Value::Null;
                        }
                    }
                    _ => strip_secrets(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use podprovider_proto::v1::{
        AzureFileVolume as PbAzureFile, ContainerPort, EmptyDirVolume, EnvVar as PbEnv, ExecAction,
        FileEntry, FilesVolume, GitRepoVolume as PbGit, HttpGetAction,
        RegistryCredential as PbCred, ResourceRequirements as PbReq, Resources, TcpSocketAction,
        UnsupportedVolume, Volume, VolumeMount as PbMount,
    };

    use super::*;

    fn settings() -> GroupSettings {
        GroupSettings {
            location: "westeurope".into(),
            cluster_id: "aci-rg".into(),
            subnet_ids: vec![],
            gpu_skus: vec!["V100".into(), "K80".into()],
            default_cpu_millis: 1000,
            default_memory_bytes: 1_500_000_000,
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
        }
    }

    fn res(cpu: i64, mem: i64) -> Resources {
        Resources {
            cpu_millis: Some(cpu),
            memory_bytes: Some(mem),
            ..Default::default()
        }
    }

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: "nginx:1.25".into(),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            pod_ref: Some(PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "uid-1".into(),
            }),
            node_name: "vk-aci".into(),
            containers,
            termination_grace_period_seconds: Some(40),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_pod_gets_defaults_tags_and_a_deterministic_name() {
        let p = plan(&pod(vec![container("web")]), &settings()).expect("valid");
        assert_eq!(p.name, group_name(p_ref_plain()));
        assert!(p.name.starts_with("vk-default-web-"), "{}", p.name);
        let c = &p.group.properties.containers[0];
        assert_eq!(c.properties.resources.requests.cpu, 1.0);
        assert_eq!(c.properties.resources.requests.memory_in_gb, 1.5);
        assert!(c.properties.resources.limits.is_none());
        assert_eq!(p.group.tags["vk-pod-uid"], "uid-1");
        assert_eq!(p.group.tags["vk-node"], "vk-aci");
        assert_eq!(p.group.tags[TAG_GRACE], "40");
        assert_eq!(p.group.tags[TAG_CLUSTER], "aci-rg");
        assert_eq!(p.group.properties.os_type.as_deref(), Some("Linux"));
        assert_eq!(p.group.properties.restart_policy.as_deref(), Some("Always"));
        assert!(p.group.properties.ip_address.is_none());
        assert_eq!(p.group.location.as_deref(), Some("westeurope"));
        // Same pod, same body; a new UID is a new group.
        let again = plan(&pod(vec![container("web")]), &settings()).expect("valid");
        assert_eq!(again.content_hash, p.content_hash);
        let mut other = pod(vec![container("web")]);
        if let Some(r) = other.pod_ref.as_mut() {
            r.uid = "uid-2".into();
        }
        assert_ne!(plan(&other, &settings()).expect("valid").name, p.name);
    }

    #[test]
    fn requests_round_up_to_aci_steps_and_limits_are_kept() {
        let mut c = container("web");
        c.resources = Some(PbReq {
            requests: Some(res(255, 256 << 20)),
            limits: Some(res(500, 512 << 20)),
        });
        let mut side = container("side");
        side.resources = Some(PbReq {
            requests: Some(res(500, 1 << 30)),
            limits: None,
        });
        let p = plan(&pod(vec![c, side]), &settings()).expect("valid");
        let r = &p.group.properties.containers[0].properties.resources;
        assert_eq!(r.requests.cpu, 0.26);
        assert_eq!(r.requests.memory_in_gb, 0.3);
        let l = r.limits.as_ref().expect("limits");
        assert_eq!(l.cpu, 0.5);
        assert_eq!(l.memory_in_gb, 0.6);
    }

    #[test]
    fn a_limit_above_the_group_request_is_refused_with_acis_wording() {
        let mut c = container("test");
        c.resources = Some(PbReq {
            requests: Some(res(300, 1_000_000_000)),
            limits: Some(res(1500, 1_000_000_000)),
        });
        let err = plan(&pod(vec![c]), &settings()).expect_err("invalid");
        let want = format!(
            "The 'Cpu' limit '1.5' in container 'test' is greater than the total request '0.3' of container group '{}'.",
            group_name(p_ref_plain())
        );
        assert_eq!(err.0, want);

        let mut c = container("m");
        c.resources = Some(PbReq {
            requests: Some(res(1000, 2_000_000_000)),
            limits: Some(res(1000, 3_000_000_000)),
        });
        let err = plan(&pod(vec![c]), &settings()).expect_err("invalid");
        assert!(
            err.0.starts_with(
                "The 'MemoryInGB' limit '3' in container 'm' is greater than the total request '2'"
            ),
            "{}",
            err.0
        );
        // Two containers: a limit up to the sum of both requests is fine.
        let mut a = container("a");
        a.resources = Some(PbReq {
            requests: Some(res(1000, 1_000_000_000)),
            limits: Some(res(2000, 1_000_000_000)),
        });
        let mut b = container("b");
        b.resources = Some(PbReq {
            requests: Some(res(1000, 1_000_000_000)),
            limits: None,
        });
        assert!(plan(&pod(vec![a, b]), &settings()).is_ok());
    }

    fn p_ref_plain() -> &'static PodRef {
        static REF: std::sync::OnceLock<PodRef> = std::sync::OnceLock::new();
        REF.get_or_init(|| PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-1".into(),
        })
    }

    #[test]
    fn the_tagged_spec_hash_ignores_secret_values_and_the_full_hash_does_not() {
        let with_secret = |value: &str| {
            let mut c = container("web");
            c.env = vec![PbEnv {
                name: "PASSWORD".into(),
                value: value.into(),
                sensitive: true,
                pod_field: String::new(),
            }];
            plan(&pod(vec![c]), &settings()).expect("valid")
        };
        let a = with_secret("s3cr3t");
        let b = with_secret("other");
        assert_eq!(a.public_hash, b.public_hash);
        assert_ne!(a.content_hash, b.content_hash);
        assert_eq!(a.group.tags[TAG_SPEC_HASH], a.public_hash);
        // An image change is a spec change either way.
        let mut c = container("web");
        c.image = "nginx:1.26".into();
        let moved = plan(&pod(vec![c]), &settings()).expect("valid");
        assert_ne!(
            moved.public_hash,
            plan(&pod(vec![container("web")]), &settings())
                .expect("valid")
                .public_hash
        );
    }

    #[test]
    fn env_uses_secure_value_for_secrets() {
        let mut c = container("web");
        c.env = vec![
            PbEnv {
                name: "MODE".into(),
                value: "demo".into(),
                sensitive: false,
                pod_field: String::new(),
            },
            PbEnv {
                name: "PASSWORD".into(),
                value: "s3cr3t".into(),
                sensitive: true,
                pod_field: String::new(),
            },
            PbEnv {
                name: "MODE".into(),
                value: "prod".into(),
                sensitive: false,
                pod_field: String::new(),
            },
        ];
        let p = plan(&pod(vec![c]), &settings()).expect("valid");
        let json = serde_json::to_value(&p.group).expect("json");
        let env = &json["properties"]["containers"][0]["properties"]["environmentVariables"];
        assert_eq!(env[0], serde_json::json!({"name": "MODE", "value": "prod"}));
        assert_eq!(
            env[1],
            serde_json::json!({"name": "PASSWORD", "secureValue": "s3cr3t"})
        );
        // Debug output never shows the secret.
        assert!(!format!("{:?}", p.group).contains("s3cr3t"));
    }

    fn web_with_ports() -> Container {
        let mut c = container("web");
        c.ports = vec![
            ContainerPort {
                name: "http".into(),
                container_port: 8080,
                protocol: "TCP".into(),
            },
            ContainerPort {
                name: "dns".into(),
                container_port: 53,
                protocol: "UDP".into(),
            },
        ];
        c
    }

    fn vnet() -> GroupSettings {
        let mut s = settings();
        s.subnet_ids = vec!["/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/aci".into()];
        s
    }

    fn public(mut p: Pod, value: &str) -> Pod {
        p.annotations
            .insert(PUBLIC_IP_ANNOTATION.into(), value.into());
        p
    }

    #[test]
    fn without_a_subnet_no_pod_gets_an_ip_unless_it_asks_for_a_public_one() {
        // No ports: no IP, and users are told why.
        let p = plan(&pod(vec![container("web")]), &settings()).expect("valid");
        assert!(p.group.properties.ip_address.is_none());
        assert!(p.no_ip.as_deref().is_some_and(|m| m.contains("no IP")));
        // Ports alone never make a public IP: they stay on the container.
        let p = plan(&pod(vec![web_with_ports()]), &settings()).expect("valid");
        assert!(p.group.properties.ip_address.is_none());
        assert_eq!(p.group.properties.containers[0].properties.ports.len(), 2);
        assert!(
            p.no_ip
                .as_deref()
                .is_some_and(|m| m.contains(PUBLIC_IP_ANNOTATION))
        );
        // The annotation asks for one, with the declared ports.
        let p = plan(&public(pod(vec![web_with_ports()]), "true"), &settings()).expect("valid");
        let json = serde_json::to_value(&p.group).expect("json");
        let ip = &json["properties"]["ipAddress"];
        assert_eq!(ip["type"], "Public");
        assert_eq!(
            ip["ports"],
            serde_json::json!([{"protocol": "TCP", "port": 8080}, {"protocol": "UDP", "port": 53}])
        );
        assert!(p.no_ip.is_none());
        let p = plan(&public(pod(vec![web_with_ports()]), "false"), &settings()).expect("valid");
        assert!(p.group.properties.ip_address.is_none());
        // A public IP needs a port; a value other than true/false is a mistake.
        assert!(plan(&public(pod(vec![container("web")]), "true"), &settings()).is_err());
        let e = plan(&public(pod(vec![web_with_ports()]), "yes"), &settings()).expect_err("bad");
        assert!(e.0.contains(PUBLIC_IP_ANNOTATION), "{e}");
    }

    #[test]
    fn in_a_vnet_every_group_gets_a_private_ip() {
        let s = vnet();
        let p = plan(&pod(vec![web_with_ports()]), &s).expect("valid");
        let json = serde_json::to_value(&p.group).expect("json");
        assert_eq!(json["properties"]["ipAddress"]["type"], "Private");
        assert_eq!(
            json["properties"]["ipAddress"]["ports"],
            serde_json::json!([{"protocol": "TCP", "port": 8080}, {"protocol": "UDP", "port": 53}])
        );
        assert_eq!(json["properties"]["subnetIds"][0]["id"], s.subnet_ids[0]);
        assert!(p.no_ip.is_none());
        // No ports: ACI requires some, so the placeholder opens on the private IP and on the
        // first container, as `az container create` does without --ports.
        let p = plan(&pod(vec![container("web"), container("side")]), &s).expect("valid");
        let json = serde_json::to_value(&p.group).expect("json");
        let placeholder = serde_json::json!([{"protocol": "TCP", "port": PLACEHOLDER_PORT}]);
        assert_eq!(json["properties"]["ipAddress"]["type"], "Private");
        assert_eq!(json["properties"]["ipAddress"]["ports"], placeholder);
        assert_eq!(
            json["properties"]["containers"][0]["properties"]["ports"],
            placeholder
        );
        assert!(json["properties"]["containers"][1]["properties"]["ports"].is_null());
        assert!(p.no_ip.is_none());
        // Public IPs do not exist in a VNet: asking for one is refused, not silently dropped.
        let e = plan(&public(pod(vec![web_with_ports()]), "true"), &s).expect_err("refused");
        assert!(e.0.contains("virtual network"), "{e}");
    }

    #[test]
    fn volumes_map_to_aci_volume_kinds() {
        let mut c = container("web");
        c.volume_mounts = ["scratch", "cfg", "share", "repo"]
            .iter()
            .map(|n| PbMount {
                name: (*n).into(),
                mount_path: format!("/mnt/{n}"),
                sub_path: String::new(),
                read_only: *n == "cfg",
            })
            .collect();
        let mut p = pod(vec![c]);
        p.volumes = vec![
            Volume {
                name: "scratch".into(),
                source: Some(Source::EmptyDir(EmptyDirVolume::default())),
            },
            Volume {
                name: "cfg".into(),
                source: Some(Source::Files(FilesVolume {
                    files: vec![FileEntry {
                        path: "app.conf".into(),
                        content: b"hello".to_vec(),
                        mode: None,
                        sensitive: false,
                    }],
                    ..Default::default()
                })),
            },
            Volume {
                name: "share".into(),
                source: Some(Source::AzureFile(PbAzureFile {
                    share_name: "s".into(),
                    storage_account_name: "acct".into(),
                    storage_account_key: "key==".into(),
                    read_only: false,
                })),
            },
            Volume {
                name: "repo".into(),
                source: Some(Source::GitRepo(PbGit {
                    repository: "https://github.com/x/y".into(),
                    revision: String::new(),
                    directory: ".".into(),
                })),
            },
        ];
        let plan = plan(&p, &settings()).expect("valid");
        let json = serde_json::to_value(&plan.group).expect("json");
        let v = &json["properties"]["volumes"];
        assert_eq!(v[0], serde_json::json!({"name": "scratch", "emptyDir": {}}));
        assert_eq!(
            v[1],
            serde_json::json!({"name": "cfg", "secret": {"app.conf": "aGVsbG8="}})
        );
        assert_eq!(
            v[2]["azureFile"],
            serde_json::json!({"shareName": "s", "storageAccountName": "acct", "storageAccountKey": "key=="})
        );
        assert_eq!(
            v[3]["gitRepo"],
            serde_json::json!({"repository": "https://github.com/x/y", "directory": "."})
        );
        let mounts = &json["properties"]["containers"][0]["properties"]["volumeMounts"];
        assert_eq!(
            mounts[1],
            serde_json::json!({"name": "cfg", "mountPath": "/mnt/cfg", "readOnly": true})
        );
        assert!(!format!("{:?}", plan.group).contains("key=="));
    }

    #[test]
    fn unsupported_things_are_refused_or_warned() {
        let mut p = pod(vec![container("web")]);
        p.volumes = vec![Volume {
            name: "h".into(),
            source: Some(Source::Unsupported(UnsupportedVolume {
                kind: "hostPath".into(),
            })),
        }];
        assert_eq!(
            plan(&p, &settings()).expect_err("hostPath").0,
            "volume h: volume type hostPath is not supported by ACI"
        );
        let mut c = container("web");
        c.args = vec!["-x".into()];
        assert!(plan(&pod(vec![c]), &settings()).is_err());
        let mut c = container("web");
        c.ports = vec![ContainerPort {
            name: String::new(),
            container_port: 9,
            protocol: "SCTP".into(),
        }];
        assert!(plan(&pod(vec![c]), &settings()).is_err());

        let mut c = container("web");
        c.working_dir = "/srv".into();
        c.liveness_probe = Some(pb::Probe {
            handler: Some(Handler::TcpSocket(TcpSocketAction {
                port: 80,
                host: String::new(),
            })),
            ..Default::default()
        });
        let p = plan(&pod(vec![c]), &settings()).expect("valid");
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(
            p.group.properties.containers[0]
                .properties
                .liveness_probe
                .is_none()
        );
    }

    #[test]
    fn probes_init_containers_credentials_dns_gpu_and_restart_policy() {
        let mut c = container("web");
        c.liveness_probe = Some(pb::Probe {
            handler: Some(Handler::HttpGet(HttpGetAction {
                path: "/healthz".into(),
                port: 8080,
                host: String::new(),
                scheme: "HTTP".into(),
                http_headers: vec![],
            })),
            period_seconds: 5,
            ..Default::default()
        });
        c.readiness_probe = Some(pb::Probe {
            handler: Some(Handler::Exec(ExecAction {
                command: vec!["cat".into(), "/tmp/ready".into()],
            })),
            ..Default::default()
        });
        c.resources = Some(PbReq {
            requests: Some(res(1000, 1_000_000_000)),
            limits: Some(Resources {
                nvidia_gpu: Some(2),
                ..Default::default()
            }),
        });
        let mut p = pod(vec![c]);
        p.init_containers = vec![Container {
            command: vec!["sh".into()],
            args: vec!["-c".into(), "echo init".into()],
            ..container("init")
        }];
        p.registry_credentials = vec![PbCred {
            server: "https://index.docker.io/v1/".into(),
            username: "u".into(),
            password: "pw".into(),
            identity_token: String::new(),
        }];
        p.dns_config = Some(pb::DnsConfig {
            nameservers: vec!["10.0.0.10".into()],
            searches: vec!["a.svc".into(), "svc".into()],
            options: vec![pb::DnsOption {
                name: "ndots".into(),
                value: "2".into(),
            }],
        });
        p.restart_policy = RestartPolicy::Never as i32;
        p.os = "windows".into();
        p.annotations
            .insert(GPU_SKU_ANNOTATION.into(), "k80".into());
        let plan = plan(&p, &settings()).expect("valid");
        let json = serde_json::to_value(&plan.group).expect("json");
        let props = &json["properties"];
        let cp = &props["containers"][0]["properties"];
        assert_eq!(
            cp["livenessProbe"],
            serde_json::json!({"httpGet": {"path": "/healthz", "port": 8080, "scheme": "http"}, "periodSeconds": 5})
        );
        assert_eq!(
            cp["readinessProbe"]["exec"]["command"],
            serde_json::json!(["cat", "/tmp/ready"])
        );
        assert_eq!(cp["resources"]["requests"]["memoryInGB"], 1.0);
        assert_eq!(
            cp["resources"]["requests"]["gpu"],
            serde_json::json!({"count": 2, "sku": "K80"})
        );
        assert_eq!(
            props["initContainers"][0]["properties"]["command"],
            serde_json::json!(["sh", "-c", "echo init"])
        );
        assert_eq!(
            props["imageRegistryCredentials"][0],
            serde_json::json!({"server": "index.docker.io", "username": "u", "password": "pw"})
        );
        assert_eq!(
            props["dnsConfig"],
            serde_json::json!({"nameServers": ["10.0.0.10"], "searchDomains": "a.svc svc", "options": "ndots:2"})
        );
        assert_eq!(props["restartPolicy"], "Never");
        assert_eq!(props["osType"], "Windows");

        let mut bad = p.clone();
        bad.annotations
            .insert(GPU_SKU_ANNOTATION.into(), "H100".into());
        assert!(self::plan(&bad, &settings()).is_err());
    }

    fn plan_of(p: &Pod, s: &GroupSettings) -> serde_json::Value {
        json_of(&plan(p, s).expect("valid"))
    }

    fn json_of(p: &Plan) -> serde_json::Value {
        serde_json::to_value(&p.group).expect("json")
    }

    #[test]
    fn a_command_built_from_a_secret_is_refused_without_naming_the_value() {
        let mut c = container("app");
        c.command = vec!["run".into(), "--token=hunter2".into()];
        c.command_sensitive = true;
        let err = plan(&pod(vec![c.clone()]), &settings()).expect_err("refused");
        assert_eq!(
            err.0,
            "container app: its command contains a value from a Secret, and ACI has no secure field for commands"
        );
        c.command_sensitive = false;
        c.args = vec!["hunter2".into()];
        c.args_sensitive = true;
        let mut p = pod(vec![container("web")]);
        p.init_containers = vec![c];
        let err = plan(&p, &settings()).expect_err("refused");
        assert!(
            err.0.contains("its args contain a value from a Secret"),
            "{err}"
        );
        assert!(!err.0.contains("hunter2"));
    }

    #[test]
    fn pod_ip_variables_stay_empty_with_a_warning_naming_each() {
        let mut c = container("app");
        c.env = vec![
            PbEnv {
                name: "POD_IP".into(),
                pod_field: "status.podIP".into(),
                ..Default::default()
            },
            PbEnv {
                name: "POD_IPS".into(),
                pod_field: "status.podIPs".into(),
                ..Default::default()
            },
            // Overridden by a later plain value: nothing to warn about.
            PbEnv {
                name: "OVERRIDDEN".into(),
                pod_field: "status.podIP".into(),
                ..Default::default()
            },
            PbEnv {
                name: "OVERRIDDEN".into(),
                value: "x".into(),
                ..Default::default()
            },
        ];
        let p = plan(&pod(vec![c]), &settings()).expect("valid");
        assert_eq!(
            p.warnings,
            [
                "env POD_IP of container app: status.podIP is not known before ACI places the group; the variable is not set",
                "env POD_IPS of container app: status.podIPs is not known before ACI places the group; the variable is not set",
            ]
        );
        // environmentVariables: the empty pod-IP variables are left out (ACI refuses them).
        let env = &json_of(&p)["properties"]["containers"][0]["properties"]["environmentVariables"];
        assert_eq!(
            env,
            &serde_json::json!([{"name": "OVERRIDDEN", "value": "x"}])
        );
    }

    #[test]
    fn cluster_first_dns_in_a_vnet_uses_the_cluster_dns_and_search_domains() {
        // properties.dnsConfig {nameServers, searchDomains, options}.
        let mut s = vnet();
        s.cluster_dns = vec!["10.0.0.10".into()];
        let mut p = pod(vec![container("app")]);
        p.dns_policy = "ClusterFirst".into();
        p.dns_config = Some(pb::DnsConfig {
            nameservers: vec!["1.1.1.1".into()],
            searches: vec!["corp.example".into()],
            options: vec![pb::DnsOption {
                name: "ndots".into(),
                value: "2".into(),
            }],
        });
        let planned = plan(&p, &s).expect("valid");
        assert_eq!(
            json_of(&planned)["properties"]["dnsConfig"],
            serde_json::json!({
                "nameServers": ["10.0.0.10", "1.1.1.1"],
                "searchDomains": "default.svc.cluster.local svc.cluster.local cluster.local corp.example",
                "options": "ndots:2"
            })
        );
        // dnsPolicy None: the pod's own settings only.
        p.dns_policy = "None".into();
        let none = plan_of(&p, &s);
        assert_eq!(
            none["properties"]["dnsConfig"]["nameServers"],
            serde_json::json!(["1.1.1.1"])
        );
        // Without a VNet the cluster DNS is out of reach: ACI's resolver, and a warning.
        p.dns_policy = "ClusterFirst".into();
        p.dns_config = None;
        let mut public = settings();
        public.cluster_dns = vec!["10.0.0.10".into()];
        let planned = plan(&p, &public).expect("valid");
        assert!(json_of(&planned)["properties"].get("dnsConfig").is_none());
        assert!(
            planned.warnings.iter().any(|w| w.contains("ClusterFirst")),
            "{:?}",
            planned.warnings
        );
        // No cluster DNS configured: nothing sent, nothing to say.
        let planned = plan(&p, &vnet()).expect("valid");
        assert!(json_of(&planned)["properties"].get("dnsConfig").is_none());
    }

    #[test]
    fn environment_variables_with_an_empty_value_are_left_out_with_a_warning() {
        // ACI's EnvironmentVariable needs exactly one of `value` and `secureValue`, non-empty.
        let mut c = container("web");
        c.env = vec![
            PbEnv {
                name: "EMPTY".into(),
                ..Default::default()
            },
            PbEnv {
                name: "EMPTY_SECRET".into(),
                sensitive: true,
                ..Default::default()
            },
            PbEnv {
                name: "SET".into(),
                value: "v".into(),
                ..Default::default()
            },
        ];
        let p = plan(&pod(vec![c]), &settings()).expect("valid");
        let env = &json_of(&p)["properties"]["containers"][0]["properties"]["environmentVariables"];
        assert_eq!(env, &serde_json::json!([{"name": "SET", "value": "v"}]));
        assert_eq!(
            p.warnings,
            [
                "env EMPTY of container web: ACI refuses environment variables with an empty value; the variable is not set",
                "env EMPTY_SECRET of container web: ACI refuses environment variables with an empty value; the variable is not set",
            ]
        );
    }

    #[test]
    fn security_context_maps_to_acis_and_pod_settings_fill_what_a_container_leaves_unset() {
        let mut app = container("app");
        app.security_context = Some(pb::SecurityContext {
            privileged: Some(false),
            run_as_user: Some(2000),
            allow_privilege_escalation: Some(false),
            capabilities_add: vec!["NET_ADMIN".into()],
            capabilities_drop: vec!["ALL".into()],
            ..Default::default()
        });
        let mut p = pod(vec![app, container("side")]);
        p.init_containers = vec![Container {
            command: vec!["true".into()],
            ..container("init")
        }];
        p.security_context = Some(pb::PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            run_as_non_root: Some(true),
            ..Default::default()
        });
        let plan = plan(&p, &settings()).expect("valid");
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        let json = json_of(&plan);
        let props = &json["properties"];
        assert_eq!(
            props["containers"][0]["properties"]["securityContext"],
            serde_json::json!({
                "privileged": false,
                "allowPrivilegeEscalation": false,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                "runAsGroup": 3000,
                "runAsUser": 2000,
            })
        );
        let pod_level = serde_json::json!({"runAsGroup": 3000, "runAsUser": 1000});
        assert_eq!(
            props["containers"][1]["properties"]["securityContext"],
            pod_level
        );
        assert_eq!(
            props["initContainers"][0]["properties"]["securityContext"],
            pod_level
        );
        // Nothing set, nothing sent.
        let plain = plan_json(&pod(vec![container("web")]));
        assert!(plain["properties"]["containers"][0]["properties"]["securityContext"].is_null());
    }

    fn plan_json(p: &Pod) -> serde_json::Value {
        json_of(&plan(p, &settings()).expect("valid"))
    }

    #[test]
    fn run_as_non_root_with_uid_0_is_refused_and_without_a_uid_is_warned() {
        let mut c = container("app");
        c.security_context = Some(pb::SecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        });
        let mut p = pod(vec![c]);
        p.security_context = Some(pb::PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        });
        assert_eq!(
            plan(&p, &settings()).expect_err("root").0,
            "container app: runAsNonRoot is set but runAsUser is 0, so Kubernetes would not start it"
        );
        p.containers[0].security_context = None;
        let warned = plan(&p, &settings()).expect("valid");
        assert_eq!(
            warned.warnings,
            [
                "container app: runAsNonRoot was not checked: ACI does not tell the image's user; set runAsUser to a non-zero UID"
            ]
        );
    }

    #[test]
    fn seccomp_unconfined_becomes_an_allow_all_profile_and_other_types_are_warned() {
        let with = |kind: &str, path: &str| {
            let mut c = container("app");
            c.security_context = Some(pb::SecurityContext {
                seccomp_profile_type: kind.into(),
                seccomp_localhost_profile: path.into(),
                ..Default::default()
            });
            plan(&pod(vec![c]), &settings()).expect("valid")
        };
        let unconfined = with("Unconfined", "");
        assert!(unconfined.warnings.is_empty());
        let sent = json_of(&unconfined)["properties"]["containers"][0]["properties"]
            ["securityContext"]["seccompProfile"]
            .as_str()
            .map(str::to_owned)
            .expect("profile");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(sent)
            .expect("base64");
        let profile: serde_json::Value = serde_json::from_slice(&decoded).expect("json");
        assert_eq!(
            profile,
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"})
        );

        let default = with("RuntimeDefault", "");
        assert_eq!(
            default.warnings,
            [
                "container app: seccomp profile RuntimeDefault was not sent: ACI takes only a profile's contents, so ACI's own default applies"
            ]
        );
        assert!(
            json_of(&default)["properties"]["containers"][0]["properties"]["securityContext"]
                .is_null()
        );
        let local = with("Localhost", "profiles/audit.json");
        assert_eq!(
            local.warnings,
            [
                "container app: seccomp profile Localhost (profiles/audit.json) was ignored: ACI takes a profile's contents, and a virtual node has no profile files"
            ]
        );
        // A pod-level profile reaches every container.
        let mut p = pod(vec![container("a"), container("b")]);
        p.security_context = Some(pb::PodSecurityContext {
            seccomp_profile_type: "Unconfined".into(),
            ..Default::default()
        });
        let json = plan_json(&p);
        for i in 0..2 {
            assert!(
                json["properties"]["containers"][i]["properties"]["securityContext"]["seccompProfile"]
                    .is_string()
            );
        }
    }

    #[test]
    fn best_effort_settings_aci_lacks_are_each_warned() {
        let mut c = container("app");
        c.security_context = Some(pb::SecurityContext {
            read_only_root_filesystem: Some(true),
            ..Default::default()
        });
        c.stdin = true;
        c.tty = true;
        c.image_pull_policy = ImagePullPolicy::Never as i32;
        c.readiness_probe = Some(pb::Probe {
            handler: Some(Handler::HttpGet(HttpGetAction {
                path: "/".into(),
                port: 80,
                host: "example.com".into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        c.resources = Some(PbReq {
            requests: Some(Resources {
                ephemeral_storage_bytes: Some(1 << 30),
                ..Default::default()
            }),
            limits: None,
        });
        let mut p = pod(vec![c]);
        p.init_containers = vec![Container {
            command: vec!["true".into()],
            liveness_probe: Some(pb::Probe::default()),
            ports: vec![ContainerPort {
                container_port: 80,
                ..Default::default()
            }],
            ..container("init")
        }];
        p.security_context = Some(pb::PodSecurityContext {
            fs_group: Some(2000),
            supplemental_groups: vec![4000],
            ..Default::default()
        });
        let plan = plan(&p, &settings()).expect("valid");
        let want = [
            "container app: stdin was ignored",
            "container app: tty was ignored",
            "container app: the ephemeral-storage amount was ignored",
            "container app: imagePullPolicy Never was ignored",
            "container app: the readiness probe's httpGet host was ignored",
            "container app: readOnlyRootFilesystem was ignored",
            "init container init: the liveness probe was ignored",
            "init container init: ports were ignored",
            "fsGroup was ignored",
            "supplementalGroups were ignored",
        ];
        for w in want {
            assert!(
                plan.warnings.iter().any(|x| x.starts_with(w)),
                "{w} missing from {:?}",
                plan.warnings
            );
        }
        assert_eq!(plan.warnings.len(), want.len(), "{:?}", plan.warnings);
        // The probe still runs, against the container.
        assert!(
            json_of(&plan)["properties"]["containers"][0]["properties"]["readinessProbe"]
                ["httpGet"]
                .is_object()
        );
    }

    #[test]
    fn extended_resources_are_refused() {
        let mut c = container("app");
        c.resources = Some(PbReq {
            requests: None,
            limits: Some(Resources {
                other: [("hugepages-2Mi".to_owned(), "64Mi".to_owned())].into(),
                ..Default::default()
            }),
        });
        assert_eq!(
            plan(&pod(vec![c]), &settings()).expect_err("refused").0,
            "container app: resource hugepages-2Mi is not offered by ACI"
        );
    }

    #[test]
    fn informational_fields_change_nothing_and_warn_nothing() {
        let plain = plan(&pod(vec![container("app")]), &settings()).expect("valid");
        let mut c = container("app");
        c.termination_message_policy = "FallbackToLogsOnError".into();
        c.termination_message_path = "/tmp/msg".into();
        let mut p = pod(vec![c]);
        p.readiness_gates = vec!["example.com/ready".into()];
        let informed = plan(&p, &settings()).expect("valid");
        assert!(informed.warnings.is_empty(), "{:?}", informed.warnings);
        assert_eq!(informed.content_hash, plain.content_hash);
    }

    #[test]
    fn a_chosen_hostname_and_a_subdomain_are_warned_but_the_pod_name_is_not() {
        let mut p = pod(vec![container("web")]);
        p.hostname = "web".into();
        assert!(plan(&p, &settings()).expect("valid").warnings.is_empty());
        p.hostname = "db-0".into();
        p.subdomain = "db".into();
        assert_eq!(
            plan(&p, &settings()).expect("valid").warnings,
            [
                "hostname was ignored: ACI does not offer it",
                "subdomain was ignored: ACI does not offer it",
            ]
        );
    }

    #[test]
    fn fixed_point_formatting() {
        assert_eq!(fixed(150, 100), "1.5");
        assert_eq!(fixed(300, 100), "3");
        assert_eq!(fixed(25, 100), "0.25");
        assert_eq!(fixed(3, 10), "0.3");
    }

    /// Any pod gets a plan or an error (INVALID_ARGUMENT for the caller), never a panic, and an
    /// error never quotes a sensitive value; in both network modes.
    #[test]
    fn fuzz_any_pod_is_planned_or_refused() {
        provider_common::arbitrary::run_on_pods(|pod| {
            for s in [settings(), vnet()] {
                if let Err(e) = plan(&pod, &s) {
                    provider_common::arbitrary::check_no_secret_quoted(&pod, &e.to_string())?;
                }
            }
            Ok(())
        });
    }
}
