//! From a resolved pod to an ECS task definition (shared by every pod with the same shape) plus the
//! per-pod parts that go into RunTask overrides (plain environment, plain file contents) and into
//! Secrets Manager (everything sensitive).
//!
//! Plain pod-specific values stay out of the task definition, so the pods of a Deployment share
//! one. Sensitive values go nowhere ECS shows them (definitions, overrides and tags are readable by
//! anyone who may describe them): they are stored in the pod's own secrets, which the definition
//! references by ARN; such a pod gets a definition of its own.

use std::collections::BTreeMap;

use podprovider_proto::v1::{
    Container, ImagePullPolicy, Pod, Probe, RestartPolicy, probe::Handler, volume::Source,
};
use provider_common::{
    naming::short_hash,
    pod_spec::{self, EffectiveSecurity, NonRoot},
    resources,
};
use serde::Serialize;

use crate::sizes::{self, TaskSize};

/// Name of the helper container that writes file volumes before the pod's containers start.
pub const FILES_CONTAINER: &str = "vk-files";
/// Task definition families this provider registers start with this.
pub const FAMILY_PREFIX: &str = "vk-";

/// The families of one installation start with `vk-<hash of its ID>-`: a fixed-length part, so
/// that one installation's prefix is never the start of another's, and two installations with
/// pods of the same shape do not share (and deregister) each other's definitions.
pub fn family_prefix(installation: &str) -> String {
    format!("{FAMILY_PREFIX}{}-", short_hash(&[installation], 8))
}
/// ECS limits the JSON of RunTask overrides to 8 KiB.
const MAX_OVERRIDES_BYTES: usize = 8192;
/// Secrets Manager holds at most 64 KiB per secret value.
const MAX_SECRET_BYTES: usize = 65536;
/// Fargate gives every task 20 GiB of ephemeral storage, and up to 200 GiB when asked.
const DEFAULT_EPHEMERAL_GIB: u64 = 20;
const MAX_EPHEMERAL_GIB: u64 = 200;
/// The smallest memory ECS accepts for a container, MiB.
const MIN_CONTAINER_MIB: u64 = 6;
/// Fargate's stop timeout range: "The valid values for Fargate are 2-120 seconds" (ECS
/// ContainerDefinition `stopTimeout`).
const MIN_STOP_TIMEOUT: i64 = 2;
const MAX_STOP_TIMEOUT: i64 = 120;
/// ECS `restartPolicy.restartAttemptPeriod`: 60 to 1800 s (default 300). The shortest, so that a
/// container is restarted as often as ECS allows, closest to the kubelet's quick first restarts.
const RESTART_ATTEMPT_PERIOD: i32 = 60;
/// The annotation naming a pod's task role (an IAM role ARN, or a role name in the account of the
/// provider's roles), as kube2iam and the Go Fargate provider read it.
pub const TASK_ROLE_ANNOTATION: &str = "iam.amazonaws.com/role";
/// The annotation that runs a pod on Fargate Spot (`"true"`) through a capacity provider strategy.
pub const SPOT_ANNOTATION: &str = "virtual-kubelet.io/fargate-spot";
/// The capacity provider of Fargate Spot (it must be associated with the cluster).
pub const FARGATE_SPOT: &str = "FARGATE_SPOT";
/// The one capability Fargate lets a container add.
const FARGATE_ADDABLE_CAPABILITY: &str = "SYS_PTRACE";

/// Provider settings that shape task definitions.
#[derive(Clone, Debug, Default)]
pub struct DefSettings {
    /// Task execution role.
    pub execution_role_arn: Option<String>,
    /// Task role.
    pub task_role_arn: Option<String>,
    /// awslogs group, if logging is on.
    pub log_group: Option<String>,
    /// awslogs stream prefix.
    pub log_stream_prefix: String,
    /// Region for awslogs.
    pub region: String,
    /// Image of the files helper.
    pub files_image: String,
    /// `X86_64` or `ARM64`.
    pub cpu_architecture: String,
    /// The installation's identity (see [`family_prefix`]).
    pub installation: String,
}

/// One container of the definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Essential (app) or not (init containers, the files helper).
    pub essential: bool,
    /// ECS `entryPoint` (Kubernetes `command`).
    pub entry_point: Vec<String>,
    /// ECS `command` (Kubernetes `args`).
    pub command: Vec<String>,
    /// Working directory.
    pub working_directory: Option<String>,
    /// (port, "tcp"/"udp").
    pub ports: Vec<(i32, String)>,
    /// (volume, path, read-only).
    pub mounts: Vec<(String, String, bool)>,
    /// Containers that must have exited 0 first.
    pub depends_on_success: Vec<String>,
    /// Hard memory limit, MiB.
    pub memory_mib: u64,
    /// Soft memory reservation, MiB.
    pub memory_reservation_mib: Option<u64>,
    /// CPU units.
    pub cpu_units: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL.
    pub stop_timeout: Option<i64>,
    /// `user` (`uid[:gid]`).
    pub user: Option<String>,
    /// Read-only root file system.
    pub readonly_root_filesystem: Option<bool>,
    /// A TTY.
    pub tty: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// Names of the environment variables set through overrides (values are not here).
    pub env_names: Vec<String>,
    /// ECS `secrets`: (variable, JSON key in the pod's values secret). Left out of the family hash
    /// when empty, as `registry_secret`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<(String, String)>,
    /// `repositoryCredentials`: index into the pod's registry secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_secret: Option<usize>,
    /// `linuxParameters.capabilities.add`. Left out of the family hash when empty, as the next
    /// two, so that pods without them keep the definitions registered before they existed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities_add: Vec<String>,
    /// `linuxParameters.capabilities.drop`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities_drop: Vec<String>,
    /// `systemControls` (the pod's sysctls, name and value): Fargate applies them to the whole
    /// task, so every container carries the same list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system_controls: Vec<(String, String)>,
    /// ECS `restartPolicy` (from the pod's `restartPolicy`; app containers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartSpec>,
    /// ECS `healthCheck` (from an exec liveness probe, else an exec readiness probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

/// An ECS container `restartPolicy` that is enabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestartSpec {
    /// `ignoredExitCodes`: exits that end the container for good.
    pub ignored_exit_codes: Vec<i32>,
    /// `restartAttemptPeriod`, seconds.
    pub restart_attempt_period: i32,
}

/// An ECS container `healthCheck`, each value within ECS's range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthCheckSpec {
    /// `command`: `CMD` and the probe's command (run directly, as Kubernetes runs exec probes).
    pub command: Vec<String>,
    /// `interval` (5–300 s).
    pub interval: i32,
    /// `timeout` (2–60 s).
    pub timeout: i32,
    /// `retries` (1–10).
    pub retries: i32,
    /// `startPeriod` (0–300 s); `None` = off.
    pub start_period: Option<i32>,
}

/// The task definition's content; equal content means one shared definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskDefSpec {
    /// Task size.
    pub cpu: u64,
    /// Task memory, MiB.
    pub memory_mib: u64,
    /// Ephemeral storage in GiB when above the default 20.
    pub ephemeral_storage_gib: Option<u64>,
    /// Containers: files helper, init containers, then app containers.
    pub containers: Vec<ContainerSpec>,
    /// Task-scoped scratch volumes.
    pub volumes: Vec<String>,
    /// Execution role.
    pub execution_role_arn: Option<String>,
    /// Task role.
    pub task_role_arn: Option<String>,
    /// awslogs (group, region, prefix).
    pub awslogs: Option<(String, String, String)>,
    /// CPU architecture.
    pub cpu_architecture: String,
    /// ARN of the pod's values secret, once created (see [`Plan::bind`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values_secret_arn: Option<String>,
    /// ARNs of the pod's registry secrets, in [`Secrets::registries`] order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry_secret_arns: Vec<String>,
    /// The installation's family prefix (part of the name, not of the hashed content).
    #[serde(skip)]
    pub family_prefix: String,
}

impl TaskDefSpec {
    /// A hash of the content: the family name is `vk-<hash>`, so equal specs share a definition.
    pub fn family(&self) -> String {
        // Serializing plain owned data cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{}{}", self.family_prefix, short_hash(&[&json], 32))
    }
}

/// The pod's sensitive values, bound for Secrets Manager. Never log them: `Debug` shows counts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// The values secret: JSON key → sensitive env value or base64 of a sensitive file.
    pub values: BTreeMap<String, String>,
    /// Registry credentials (username, password) some container pulls with, one secret each.
    pub registries: Vec<(String, String)>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("values", &self.values.len())
            .field("registries", &self.registries.len())
            .finish()
    }
}

impl Secrets {
    /// No sensitive value at all.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.registries.is_empty()
    }

    /// The values secret's string (a JSON object; keys sorted, so equal values give equal text).
    pub fn values_json(&self) -> String {
        serde_json::to_string(&self.values).unwrap_or_default()
    }

    /// The `i`th registry secret's string, as ECS `repositoryCredentials` wants it.
    pub fn registry_json(&self, i: usize) -> String {
        self.registries
            .get(i)
            .map(|(u, p)| serde_json::json!({"username": u, "password": p}).to_string())
            .unwrap_or_default()
    }

    /// The secret strings in a fixed order: `None` for "no values secret".
    pub fn strings(&self) -> (Option<String>, Vec<String>) {
        (
            (!self.values.is_empty()).then(|| self.values_json()),
            (0..self.registries.len())
                .map(|i| self.registry_json(i))
                .collect(),
        )
    }

    /// Digest of the secret strings, for UpdatePod's comparison. Memory only: an unkeyed hash of
    /// a secret would confirm guesses, so it never goes into a tag, log or message.
    pub fn digest_of(values: Option<&str>, registries: &[String]) -> String {
        let mut parts = vec![values.unwrap_or("")];
        parts.extend(registries.iter().map(String::as_str));
        short_hash(&parts, 64)
    }

    /// [`Self::digest_of`] this plan's strings.
    pub fn digest(&self) -> String {
        let (v, r) = self.strings();
        Self::digest_of(v.as_deref(), &r)
    }
}

/// What a pod becomes on ECS.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The definition; shared unless the pod has secrets (then [`Plan::bind`] makes it the pod's).
    pub spec: TaskDefSpec,
    /// Per container: plain environment for RunTask overrides (nothing sensitive).
    pub overrides: Vec<(String, Vec<(String, String)>)>,
    /// Sensitive values, for the pod's secrets.
    pub secrets: Secrets,
    /// Settings ignored as best effort, one sentence each, for warning events.
    pub warnings: Vec<String>,
    /// Hash of the definition (before binding), the plain overrides and the per-task settings
    /// below: an UpdatePod with the same hash and the same secrets changes nothing. Covers no
    /// sensitive value, so it may be a tag.
    pub content_hash: String,
    /// RunTask `overrides.taskRoleArn`, from [`TASK_ROLE_ANNOTATION`]: per task, so pods with
    /// different roles still share a definition.
    pub task_role_arn: Option<String>,
    /// RunTask with the capacity provider strategy FARGATE_SPOT instead of launch type FARGATE
    /// ([`SPOT_ANNOTATION`]).
    pub spot: bool,
}

impl Plan {
    /// The definition referencing the created secrets by ARN.
    pub fn bind(&self, values_arn: Option<String>, registry_arns: Vec<String>) -> TaskDefSpec {
        let mut spec = self.spec.clone();
        spec.values_secret_arn = values_arn;
        spec.registry_secret_arns = registry_arns;
        spec
    }
}

pub use provider_common::Invalid;

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Maps a resolved pod.
pub fn plan(pod: &Pod, settings: &DefSettings) -> Result<Plan, Invalid> {
    let mut warnings = Vec::new();
    if !(pod.os.is_empty() || pod.os == "linux") {
        return Err(invalid(format!(
            "operating system {:?} is not supported by this Fargate provider (linux only)",
            pod.os
        )));
    }
    if pod.containers.is_empty() {
        return Err(invalid("the pod has no containers"));
    }
    let all: Vec<&Container> = pod.init_containers.iter().chain(&pod.containers).collect();
    for c in &all {
        if c.name.is_empty() || c.image.is_empty() {
            return Err(invalid("every container needs a name and an image"));
        }
        if c.name == FILES_CONTAINER {
            return Err(invalid(format!(
                "container name {FILES_CONTAINER} is reserved by the Fargate provider"
            )));
        }
        check_container(pod, c, &mut warnings)?;
    }
    if all.len() + 1 > 10 {
        return Err(invalid(format!(
            "the pod has {} containers; an ECS task definition holds at most 10 (one is used for files)",
            all.len()
        )));
    }
    let needs = resources::pod_resources(pod);
    let TaskSize { cpu, memory_mib } =
        sizes::round_up(needs).map_err(|e| invalid(e.to_string()))?;
    let ephemeral = ephemeral_gib(pod)?;

    // Volumes: emptyDir becomes a task-scoped bind volume; file volumes are filled by the helper.
    let mut volumes = Vec::new();
    let mut files: Vec<(String, &podprovider_proto::v1::FilesVolume)> = Vec::new();
    for v in &pod.volumes {
        match &v.source {
            Some(Source::EmptyDir(e)) => {
                if e.medium == "Memory" {
                    warnings.push(format!(
                        "volume {}: emptyDir medium Memory is not available on Fargate; it is disk-backed",
                        v.name
                    ));
                }
                volumes.push(v.name.clone());
            }
            Some(Source::Files(f)) => {
                volumes.push(v.name.clone());
                files.push((v.name.clone(), f));
            }
            Some(Source::Nfs(_)) => {
                return Err(invalid(format!(
                    "volume {}: volume type nfs is not supported by Fargate (use EFS)",
                    v.name
                )));
            }
            Some(Source::AzureFile(_)) => {
                return Err(invalid(format!(
                    "volume {}: volume type azureFile is not supported by Fargate",
                    v.name
                )));
            }
            Some(Source::GitRepo(_)) => {
                return Err(invalid(format!(
                    "volume {}: volume type gitRepo is not supported by Fargate",
                    v.name
                )));
            }
            Some(Source::Unsupported(u)) => {
                return Err(invalid(format!(
                    "volume {}: volume type {} is not supported by Fargate",
                    v.name, u.kind
                )));
            }
            None => return Err(invalid(format!("volume {} has no source", v.name))),
        }
    }
    for c in &all {
        for m in &c.volume_mounts {
            if !volumes.contains(&m.name) {
                return Err(invalid(format!(
                    "container {} mounts volume {}, which the pod does not define",
                    c.name, m.name
                )));
            }
            if !m.sub_path.is_empty() {
                return Err(invalid(format!(
                    "container {}: subPath mounts are not supported by Fargate (volume {})",
                    c.name, m.name
                )));
            }
        }
    }

    let awslogs = settings.log_group.as_ref().map(|g| {
        (
            g.clone(),
            settings.region.clone(),
            settings.log_stream_prefix.clone(),
        )
    });
    let grace = pod
        .termination_grace_period_seconds
        .map(|g| g.clamp(MIN_STOP_TIMEOUT, MAX_STOP_TIMEOUT));
    let mut containers = Vec::new();
    let mut overrides = Vec::new();
    let mut secrets = Secrets::default();

    // Each step waits for the previous one to exit 0: files helper, init 1..n, then the apps.
    let mut previous: Option<String> = None;
    if !files.is_empty() {
        let (spec, env) = files_helper(&files, settings, memory_mib, &mut secrets);
        previous = Some(spec.name.clone());
        overrides.push((spec.name.clone(), env));
        containers.push(spec);
    }
    let mut registries = Registries::new(pod, &mut warnings);
    for (i, c) in pod.init_containers.iter().enumerate() {
        let (mut spec, env) = container_spec(
            pod,
            c,
            false,
            previous.iter().cloned().collect(),
            memory_mib,
            grace,
            (&format!("i{i}"), &mut secrets),
        );
        spec.registry_secret = registries.for_image(&c.image, &mut secrets);
        previous = Some(c.name.clone());
        overrides.push((c.name.clone(), env));
        containers.push(spec);
    }
    let restart = restart_policy(pod);
    for (i, c) in pod.containers.iter().enumerate() {
        let (mut spec, env) = container_spec(
            pod,
            c,
            true,
            previous.iter().cloned().collect(),
            memory_mib,
            grace,
            (&format!("a{i}"), &mut secrets),
        );
        spec.registry_secret = registries.for_image(&c.image, &mut secrets);
        // Init containers run once (ECS restarting them would re-run what their dependants wait
        // on), so only app containers get the pod's restart policy and probes.
        spec.restart_policy = restart.clone();
        spec.health_check = health_check(c, &mut warnings);
        overrides.push((c.name.clone(), env));
        containers.push(spec);
    }
    fit_allocations(&mut containers, cpu, memory_mib);
    if !secrets.is_empty() && settings.execution_role_arn.is_none() {
        return Err(invalid(
            "the pod uses values from Secrets (environment, files or imagePullSecrets), which ECS reads from Secrets Manager with the task execution role; the provider runs without --execution-role-arn",
        ));
    }
    let secret_size = secrets.values_json().len();
    if secret_size > MAX_SECRET_BYTES {
        return Err(invalid(format!(
            "Secret-derived environment values and files take {secret_size} bytes; Secrets Manager holds at most 64 KiB per secret"
        )));
    }

    let spec = TaskDefSpec {
        cpu,
        memory_mib,
        ephemeral_storage_gib: ephemeral,
        containers,
        volumes,
        execution_role_arn: settings.execution_role_arn.clone(),
        task_role_arn: settings.task_role_arn.clone(),
        awslogs,
        cpu_architecture: settings.cpu_architecture.clone(),
        values_secret_arn: None,
        registry_secret_arns: Vec::new(),
        family_prefix: family_prefix(&settings.installation),
    };
    let size = overrides_size(&overrides);
    if size > MAX_OVERRIDES_BYTES {
        return Err(invalid(format!(
            "plain environment values and file contents take {size} bytes; ECS allows 8 KiB of RunTask overrides per task"
        )));
    }
    warnings.extend(pod_warnings(pod));
    let task_role_arn = task_role(pod, settings)?;
    let spot = spot(pod)?;
    let mut parts = vec![spec.family()];
    // Annotations can change on a running pod; a change must not look like "nothing changed".
    parts.push(format!("role={}", task_role_arn.as_deref().unwrap_or("")));
    parts.push(format!("spot={spot}"));
    for (name, env) in &overrides {
        parts.push(name.clone());
        for (k, v) in env {
            parts.push(k.clone());
            parts.push(v.clone());
        }
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let content_hash = short_hash(&refs, 32);
    Ok(Plan {
        spec,
        overrides,
        secrets,
        warnings,
        content_hash,
        task_role_arn,
        spot,
    })
}

/// A capability as ECS names it: upper case, without the `CAP_` prefix Kubernetes tolerates.
fn capability(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_owned()
}

fn check_container(pod: &Pod, c: &Container, warnings: &mut Vec<String>) -> Result<(), Invalid> {
    // Task definitions and overrides show commands to anyone who may describe them.
    if let Some(msg) = pod_spec::sensitive_command(c, "Fargate") {
        return Err(invalid(msg));
    }
    if let Some(r) = pod_spec::extended_resources(c).first() {
        return Err(invalid(format!(
            "container {}: resource {r} is not offered by Fargate",
            c.name
        )));
    }
    let res = c.resources.as_ref();
    for r in [
        res.and_then(|r| r.requests.as_ref()),
        res.and_then(|r| r.limits.as_ref()),
    ]
    .into_iter()
    .flatten()
    {
        if r.nvidia_gpu.unwrap_or(0) > 0 {
            return Err(invalid(format!(
                "container {}: GPUs (nvidia.com/gpu) are not available on Fargate",
                c.name
            )));
        }
    }
    let sec = EffectiveSecurity::of(pod.security_context.as_ref(), c.security_context.as_ref());
    if sec.privileged == Some(true) {
        return Err(invalid(format!(
            "container {}: privileged containers are not allowed on Fargate",
            c.name
        )));
    }
    match sec.non_root() {
        NonRoot::Violated => return Err(invalid(pod_spec::run_as_root_refused(c))),
        NonRoot::Unverifiable => warnings.push(format!(
            "container {}: runAsNonRoot is not checked on Fargate, which does not tell the image's user; set runAsUser to a non-zero UID",
            c.name
        )),
        NonRoot::Satisfied | NonRoot::NotAsked => {}
    }
    let refused: Vec<String> = sec
        .capabilities_add
        .iter()
        .map(|c| capability(c))
        .filter(|c| c != FARGATE_ADDABLE_CAPABILITY)
        .collect();
    if !refused.is_empty() {
        warnings.push(format!(
            "container {}: added capabilities {} are ignored: Fargate can add only {FARGATE_ADDABLE_CAPABILITY}",
            c.name,
            refused.join(", ")
        ));
    }
    if sec.run_as_group.is_some() && sec.run_as_user.is_none() {
        warnings.push(format!(
            "container {}: runAsGroup is ignored without runAsUser: ECS sets a group only with a user",
            c.name
        ));
    }
    if sec.allow_privilege_escalation == Some(false) {
        warnings.push(format!(
            "container {}: allowPrivilegeEscalation false is ignored: Fargate does not offer it",
            c.name
        ));
    }
    if let Some(profile) = &sec.seccomp {
        warnings.push(format!(
            "container {}: seccomp profile {profile} is ignored: Fargate does not offer seccomp settings",
            c.name
        ));
    }
    if matches!(
        ImagePullPolicy::try_from(c.image_pull_policy),
        Ok(ImagePullPolicy::Never)
    ) {
        warnings.push(format!(
            "container {}: imagePullPolicy Never is ignored: Fargate pulls every image when it starts the task",
            c.name
        ));
    }
    if c.stdin_once {
        warnings.push(format!(
            "container {}: stdinOnce is ignored on Fargate",
            c.name
        ));
    }
    // The last entry of a name is the one the container gets.
    for (i, e) in c.env.iter().enumerate() {
        if !e.pod_field.is_empty() && !c.env[i + 1..].iter().any(|later| later.name == e.name) {
            warnings.push(format!(
                "env {} of container {}: {} is not known before Fargate places the task; the variable is empty",
                e.name, c.name, e.pod_field
            ));
        }
    }
    // Exec liveness and readiness probes become the ECS health check (see `health_check`).
    for (what, probe) in [
        ("liveness", &c.liveness_probe),
        ("readiness", &c.readiness_probe),
    ] {
        if let Some(kind) = probe.as_ref().and_then(not_exec) {
            warnings.push(format!(
                "container {}: the {what} probe ({kind}) is not run on Fargate: ECS health checks run commands only",
                c.name
            ));
        }
    }
    if c.startup_probe.is_some() {
        warnings.push(format!(
            "container {}: the startup probe is not run on Fargate",
            c.name
        ));
    }
    if c.lifecycle.is_some() {
        warnings.push(format!(
            "container {}: lifecycle hooks are not run on Fargate (the stop timeout follows the grace period)",
            c.name
        ));
    }
    for p in &c.ports {
        if p.protocol.eq_ignore_ascii_case("SCTP") {
            return Err(invalid(format!(
                "container {}: SCTP ports are not supported by Fargate",
                c.name
            )));
        }
    }
    Ok(())
}

/// The kind of a probe that is not an exec probe, for warnings.
fn not_exec(p: &Probe) -> Option<&'static str> {
    match p.handler.as_ref()? {
        Handler::Exec(_) => None,
        Handler::HttpGet(_) => Some("httpGet"),
        Handler::TcpSocket(_) => Some("tcpSocket"),
        Handler::Grpc(_) => Some("grpc"),
    }
}

/// The pod's `restartPolicy` as an ECS container `restartPolicy`: Always restarts on any exit,
/// OnFailure ignores exit code 0, Never has none (ECS's default: the container is not restarted).
/// ECS restarts a container only if it ran `restartAttemptPeriod` seconds; one that exits sooner
/// stops the task, as a container in CrashLoopBackOff never would.
fn restart_policy(pod: &Pod) -> Option<RestartSpec> {
    let ignored_exit_codes = match RestartPolicy::try_from(pod.restart_policy) {
        Ok(RestartPolicy::Never) => return None,
        Ok(RestartPolicy::OnFailure) => vec![0],
        Ok(RestartPolicy::Always | RestartPolicy::Unspecified) | Err(_) => Vec::new(),
    };
    Some(RestartSpec {
        ignored_exit_codes,
        restart_attempt_period: RESTART_ATTEMPT_PERIOD,
    })
}

/// The ECS `healthCheck` of an app container: its exec liveness probe, else its exec readiness
/// probe (a container has one health check). ECS runs it and reports the container's
/// `healthStatus`, which is the container's readiness; for a task not started by a service ECS
/// does nothing else with it ("the task will continue its lifecycle regardless of its health
/// status"), so a failing liveness probe makes the container not ready but does not restart it.
fn health_check(c: &Container, warnings: &mut Vec<String>) -> Option<HealthCheckSpec> {
    let exec = |p: &Option<Probe>| {
        p.as_ref().and_then(|p| match &p.handler {
            Some(Handler::Exec(e)) if !e.command.is_empty() => Some((p.clone(), e.command.clone())),
            _ => None,
        })
    };
    let live = exec(&c.liveness_probe);
    let ready = exec(&c.readiness_probe);
    let (probe, command) = match (live, ready) {
        (Some(l), Some(_)) => {
            warnings.push(format!(
                "container {}: the readiness probe is not run on Fargate, which runs one health check per container (the liveness probe's); readiness follows it",
                c.name
            ));
            l
        }
        (Some(l), None) => l,
        (None, Some(r)) => r,
        (None, None) => return None,
    };
    // Kubernetes' defaults for unset (0) values, then ECS's ranges.
    let or = |v: i32, default: i32| if v > 0 { v } else { default };
    let spec = HealthCheckSpec {
        command: std::iter::once("CMD".to_owned()).chain(command).collect(),
        interval: or(probe.period_seconds, 10).clamp(5, 300),
        timeout: or(probe.timeout_seconds, 1).clamp(2, 60),
        retries: or(probe.failure_threshold, 3).clamp(1, 10),
        start_period: (probe.initial_delay_seconds > 0)
            .then(|| probe.initial_delay_seconds.min(300)),
    };
    let asked = (
        or(probe.period_seconds, 10),
        or(probe.timeout_seconds, 1),
        or(probe.failure_threshold, 3),
        probe.initial_delay_seconds.max(0),
    );
    let got = (
        spec.interval,
        spec.timeout,
        spec.retries,
        spec.start_period.unwrap_or(0),
    );
    if asked != got {
        warnings.push(format!(
            "container {}: the probe's timing is moved into ECS's health check ranges (interval 5-300 s, timeout 2-60 s, retries 1-10, start period 0-300 s)",
            c.name
        ));
    }
    Some(spec)
}

/// The task role of [`TASK_ROLE_ANNOTATION`]: an IAM role ARN, or a role name in the account (and
/// partition) of the provider's execution or task role.
fn task_role(pod: &Pod, settings: &DefSettings) -> Result<Option<String>, Invalid> {
    let Some(value) = pod.annotations.get(TASK_ROLE_ANNOTATION).map(|v| v.trim()) else {
        return Ok(None);
    };
    let bad = || {
        invalid(format!(
            "annotation {TASK_ROLE_ANNOTATION} must be an IAM role ARN (arn:aws:iam::<account>:role/<name>) or a role name, not {value:?}"
        ))
    };
    if value.starts_with("arn:") {
        return role_arn_parts(value)
            .map(|_| Some(value.to_owned()))
            .ok_or_else(bad);
    }
    let name = value.trim_start_matches('/');
    if name.is_empty() || name.len() > 512 || !name.chars().all(role_name_char) {
        return Err(bad());
    }
    let (partition, account) = [&settings.execution_role_arn, &settings.task_role_arn]
        .into_iter()
        .flatten()
        .find_map(|a| role_arn_parts(a))
        .ok_or_else(|| {
            invalid(format!(
                "annotation {TASK_ROLE_ANNOTATION} names role {value:?} without its account: give the role's ARN (the provider has no role ARN to take the account from)"
            ))
        })?;
    Ok(Some(format!("arn:{partition}:iam::{account}:role/{name}")))
}

/// Characters IAM allows in role names and paths.
fn role_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c)
}

/// (partition, account) of `arn:<partition>:iam::<12 digits>:role/<path/name>`.
fn role_arn_parts(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let name = resource.strip_prefix("role/")?;
    let ok = partition.starts_with("aws")
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && !name.is_empty()
        && arn.len() <= 2048
        && name.chars().all(role_name_char);
    ok.then_some((partition, account))
}

/// Whether [`SPOT_ANNOTATION`] asks for Fargate Spot.
fn spot(pod: &Pod) -> Result<bool, Invalid> {
    match pod.annotations.get(SPOT_ANNOTATION).map(|v| v.trim()) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(invalid(format!(
            "annotation {SPOT_ANNOTATION} must be \"true\" or \"false\", not {v:?}"
        ))),
    }
}

fn pod_warnings(pod: &Pod) -> Vec<String> {
    let mut w = Vec::new();
    if !pod.host_aliases.is_empty() {
        w.push("hostAliases are ignored: Fargate (awsvpc) has no extra /etc/hosts entries".into());
    }
    // The shim sends the pod's name when spec.hostname is unset; only a chosen one is news.
    let name = pod.pod_ref.as_ref().map_or("", |r| r.name.as_str());
    if !pod.hostname.is_empty() && pod.hostname != name {
        w.push("hostname is ignored: Fargate (awsvpc) does not offer it".into());
    }
    if !pod.subdomain.is_empty() {
        w.push("subdomain is ignored: Fargate (awsvpc) does not offer it".into());
    }
    if pod.dns_config.is_some() || pod.dns_policy == "None" {
        w.push("dnsConfig is ignored: Fargate tasks use the VPC resolver".into());
    }
    if let Some(sc) = &pod.security_context {
        // Pod-only settings; sysctls become every container's systemControls, and the rest
        // reaches each container's settings.
        if sc.fs_group.is_some() {
            w.push("fsGroup is ignored: Fargate does not offer it".into());
        }
        if !sc.supplemental_groups.is_empty() {
            w.push("supplementalGroups are ignored: Fargate does not offer them".into());
        }
    }
    w
}

/// The registry of an image as Docker names it (`docker.io` for Docker Hub images).
fn image_registry(image: &str) -> String {
    match image.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            normalize_registry(host)
        }
        _ => "docker.io".into(),
    }
}

/// A credential's `server` as a registry host: no scheme, no path, Docker Hub's aliases as one.
fn normalize_registry(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

/// ECR pulls with the execution role; `repositoryCredentials` is for other registries.
fn is_ecr(registry: &str) -> bool {
    registry.contains(".dkr.ecr.")
        && (registry.ends_with(".amazonaws.com") || registry.ends_with(".amazonaws.com.cn"))
}

/// The pod's registry credentials, each turned into a registry secret when a container uses it.
struct Registries<'a> {
    creds: Vec<(String, &'a podprovider_proto::v1::RegistryCredential)>,
    /// Credential index → registry secret index.
    used: BTreeMap<usize, usize>,
}

impl<'a> Registries<'a> {
    fn new(pod: &'a Pod, warnings: &mut Vec<String>) -> Self {
        let mut creds = Vec::new();
        for (i, c) in pod.registry_credentials.iter().enumerate() {
            // Every field is sensitive (server too): the warning names the entry by position.
            if c.password.is_empty() {
                warnings.push(format!(
                    "image pull credential {}: without a password it is ignored: ECS repositoryCredentials take a username and a password",
                    i + 1
                ));
                continue;
            }
            creds.push((normalize_registry(&c.server), c));
        }
        Self {
            creds,
            used: BTreeMap::new(),
        }
    }

    fn for_image(&mut self, image: &str, secrets: &mut Secrets) -> Option<usize> {
        let registry = image_registry(image);
        if is_ecr(&registry) {
            return None;
        }
        let i = self.creds.iter().position(|(r, _)| *r == registry)?;
        Some(*self.used.entry(i).or_insert_with(|| {
            let c = self.creds[i].1;
            secrets
                .registries
                .push((c.username.clone(), c.password.clone()));
            secrets.registries.len() - 1
        }))
    }
}

fn ephemeral_gib(pod: &Pod) -> Result<Option<u64>, Invalid> {
    let gib = 1024 * 1024 * 1024_u64;
    let total: u64 = pod
        .containers
        .iter()
        .filter_map(|c| {
            let r = c.resources.as_ref()?;
            r.limits
                .as_ref()
                .and_then(|l| l.ephemeral_storage_bytes)
                .or(r.requests.as_ref().and_then(|q| q.ephemeral_storage_bytes))
        })
        .map(|b| u64::try_from(b).unwrap_or(0))
        .sum();
    let total_gib = total.div_ceil(gib);
    if total_gib > MAX_EPHEMERAL_GIB {
        return Err(invalid(format!(
            "the pod asks for {total_gib} GiB of ephemeral storage; Fargate offers at most 200 GiB"
        )));
    }
    Ok((total_gib > DEFAULT_EPHEMERAL_GIB).then_some(total_gib.max(21)))
}

fn container_spec(
    pod: &Pod,
    c: &Container,
    essential: bool,
    depends_on_success: Vec<String>,
    task_memory_mib: u64,
    grace: Option<i64>,
    (key_prefix, secrets): (&str, &mut Secrets),
) -> (ContainerSpec, Vec<(String, String)>) {
    let res = c.resources.as_ref();
    let limit_mem = res
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.memory_bytes);
    let req_mem = res
        .and_then(|r| r.requests.as_ref())
        .and_then(|l| l.memory_bytes);
    let req_cpu = res
        .and_then(|r| r.requests.as_ref())
        .and_then(|l| l.cpu_millis);
    let mib = |b: i64| resources::bytes_to_mib_ceil(u64::try_from(b).unwrap_or(0));
    // Kubernetes order, later entries win; a sensitive final value goes to the values secret.
    let mut env: BTreeMap<String, &podprovider_proto::v1::EnvVar> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for e in &c.env {
        if env.insert(e.name.clone(), e).is_none() {
            order.push(e.name.clone());
        }
    }
    let mut env_pairs: Vec<(String, String)> = Vec::new();
    let mut env_secrets: Vec<(String, String)> = Vec::new();
    for (i, k) in order.iter().enumerate() {
        let Some(e) = env.get(k) else { continue };
        if e.sensitive {
            let key = format!("{key_prefix}_{i}");
            secrets.values.insert(key.clone(), e.value.clone());
            env_secrets.push((k.clone(), key));
        } else {
            env_pairs.push((k.clone(), e.value.clone()));
        }
    }
    let env_names: Vec<String> = env_pairs.iter().map(|(k, _)| k.clone()).collect();
    let sec = EffectiveSecurity::of(pod.security_context.as_ref(), c.security_context.as_ref());
    let user = sec.run_as_user.map(|u| match sec.run_as_group {
        Some(g) => format!("{u}:{g}"),
        None => u.to_string(),
    });
    let spec = ContainerSpec {
        name: c.name.clone(),
        image: c.image.clone(),
        essential,
        entry_point: c.command.clone(),
        command: c.args.clone(),
        working_directory: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
        ports: c
            .ports
            .iter()
            .map(|p| {
                let proto = if p.protocol.eq_ignore_ascii_case("UDP") {
                    "udp"
                } else {
                    "tcp"
                };
                (p.container_port, proto.to_owned())
            })
            .collect(),
        mounts: c
            .volume_mounts
            .iter()
            .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
            .collect(),
        depends_on_success,
        // ECS (and moto) want a hard limit on every container; the task size when the pod sets none.
        memory_mib: limit_mem.map_or(task_memory_mib, mib).min(task_memory_mib),
        memory_reservation_mib: req_mem.map(mib),
        cpu_units: req_cpu.map(|m| {
            u64::try_from(m)
                .unwrap_or(0)
                .saturating_mul(1024)
                .div_ceil(1000)
        }),
        stop_timeout: grace,
        user,
        readonly_root_filesystem: sec.read_only_root_filesystem,
        tty: c.tty,
        interactive: c.stdin,
        env_names,
        secrets: env_secrets,
        registry_secret: None,
        // Others were warned about in check_container.
        capabilities_add: sec
            .capabilities_add
            .iter()
            .map(|c| capability(c))
            .filter(|c| c == FARGATE_ADDABLE_CAPABILITY)
            .collect(),
        capabilities_drop: sec
            .capabilities_drop
            .iter()
            .map(|c| capability(c))
            .collect(),
        system_controls: pod
            .security_context
            .iter()
            .flat_map(|s| &s.sysctls)
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect(),
        restart_policy: None,
        health_check: None,
    };
    (spec, env_pairs)
}

/// Container CPU and memory that ECS accepts: it counts every container of the task, init
/// containers and the files helper included, so the containers' `cpu` must sum to at most the
/// task's CPU and their reservations (`memoryReservation`, else `memory`) to at most its memory.
/// The task is sized for max(largest init container, sum of app containers); init containers and
/// the helper run alone before the apps, so they get no CPU share (0: the whole task while alone)
/// and the smallest reservation, under a hard limit that still lets them use their memory.
fn fit_allocations(containers: &mut [ContainerSpec], task_cpu: u64, task_memory_mib: u64) {
    for c in containers.iter_mut().filter(|c| !c.essential) {
        c.cpu_units = None;
    }
    let cpu: Vec<u64> = containers
        .iter()
        .map(|c| c.cpu_units.unwrap_or(0))
        .collect();
    for (c, v) in containers.iter_mut().zip(fit(&cpu, task_cpu, 1)) {
        if c.cpu_units.is_some() {
            c.cpu_units = Some(v);
        }
    }

    // Apps keep their request; apps without one share what is left.
    let mut wants: Vec<Option<u64>> = containers
        .iter()
        .map(|c| {
            if c.essential {
                c.memory_reservation_mib.map(|r| r.min(c.memory_mib))
            } else {
                Some(MIN_CONTAINER_MIB)
            }
        })
        .collect();
    let fixed: u64 = wants.iter().flatten().sum();
    let open = wants.iter().filter(|w| w.is_none()).count() as u64;
    if let Some(share) = task_memory_mib.saturating_sub(fixed).checked_div(open) {
        for w in wants.iter_mut().filter(|w| w.is_none()) {
            *w = Some(share.max(MIN_CONTAINER_MIB));
        }
    }
    let wants: Vec<u64> = wants.into_iter().map(|w| w.unwrap_or(0)).collect();
    for (c, r) in containers
        .iter_mut()
        .zip(fit(&wants, task_memory_mib, MIN_CONTAINER_MIB))
    {
        c.memory_mib = c.memory_mib.max(MIN_CONTAINER_MIB);
        // A reservation equal to the hard limit says nothing more (ECS counts `memory` then).
        c.memory_reservation_mib = (r < c.memory_mib).then_some(r);
    }
}

/// `wants` scaled down to sum to at most `total`, none below `min` (zeros stay zero).
fn fit(wants: &[u64], total: u64, min: u64) -> Vec<u64> {
    let sum: u64 = wants.iter().sum();
    if sum <= total {
        return wants.to_vec();
    }
    let mut out: Vec<u64> = wants
        .iter()
        .map(|&w| {
            if w == 0 {
                0
            } else {
                (w * total / sum).max(min)
            }
        })
        .collect();
    // The minimums may push the sum over again: take the excess from the largest.
    loop {
        let sum: u64 = out.iter().sum();
        let Some(i) = (0..out.len()).max_by_key(|&i| out[i]) else {
            break;
        };
        if sum <= total || out[i] <= min {
            break;
        }
        out[i] -= (sum - total).min(out[i] - min);
    }
    out
}

/// Single-quotes `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The helper writes each file from a base64 environment variable into its volume, then exits 0.
fn files_helper(
    files: &[(String, &podprovider_proto::v1::FilesVolume)],
    settings: &DefSettings,
    task_memory_mib: u64,
    secrets: &mut Secrets,
) -> (ContainerSpec, Vec<(String, String)>) {
    use base64::Engine as _;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut script = vec!["set -e".to_owned()];
    let mut env = Vec::new();
    let mut mounts = Vec::new();
    let mut names = Vec::new();
    let mut file_secrets = Vec::new();
    for (i, (vol, f)) in files.iter().enumerate() {
        let root = format!("/vk/{i}");
        mounts.push((vol.clone(), root.clone(), false));
        for (j, file) in f.files.iter().enumerate() {
            let var = format!("VK_FILE_{i}_{j}");
            let path = format!("{root}/{}", file.path.trim_start_matches('/'));
            let mode = file.mode.or(f.default_mode).unwrap_or(0o644);
            script.push(format!(
                "mkdir -p \"$(dirname {p})\" && printf %s \"${var}\" | base64 -d > {p} && chmod {mode:o} {p}",
                p = sh_quote(&path)
            ));
            if file.sensitive {
                // Injected by ECS from the values secret under the same variable name.
                secrets.values.insert(var.clone(), encode(&file.content));
                file_secrets.push((var.clone(), var));
            } else {
                env.push((var.clone(), encode(&file.content)));
                names.push(var);
            }
        }
    }
    let spec = ContainerSpec {
        name: FILES_CONTAINER.to_owned(),
        image: settings.files_image.clone(),
        essential: false,
        entry_point: vec!["sh".into(), "-c".into()],
        command: vec![script.join("\n")],
        working_directory: None,
        ports: Vec::new(),
        mounts,
        depends_on_success: Vec::new(),
        memory_mib: task_memory_mib.min(128),
        memory_reservation_mib: None,
        cpu_units: None,
        stop_timeout: None,
        user: None,
        readonly_root_filesystem: None,
        tty: false,
        interactive: false,
        env_names: names,
        secrets: file_secrets,
        registry_secret: None,
        capabilities_add: Vec::new(),
        capabilities_drop: Vec::new(),
        system_controls: Vec::new(),
        restart_policy: None,
        health_check: None,
    };
    (spec, env)
}

fn overrides_size(overrides: &[(String, Vec<(String, String)>)]) -> usize {
    // JSON shape: {"containerOverrides":[{"name":..,"environment":[{"name":..,"value":..}]}]}
    overrides
        .iter()
        .map(|(n, env)| {
            40 + n.len()
                + env
                    .iter()
                    .map(|(k, v)| 28 + k.len() + v.len())
                    .sum::<usize>()
        })
        .sum::<usize>()
        + 30
}

#[cfg(test)]
mod tests {
    use podprovider_proto::v1::{
        ContainerPort, EnvVar, FileEntry, FilesVolume, PodRef, PodSecurityContext,
        ResourceRequirements, Resources, SecurityContext, Sysctl, UnsupportedVolume, Volume,
        VolumeMount,
    };

    use super::*;

    fn settings() -> DefSettings {
        DefSettings {
            execution_role_arn: Some("arn:aws:iam::123456789012:role/exec".into()),
            log_group: Some("vk".into()),
            log_stream_prefix: "vk".into(),
            region: "us-east-1".into(),
            files_image: "busybox".into(),
            cpu_architecture: "X86_64".into(),
            ..Default::default()
        }
    }

    fn pod(name: &str, uid: &str, secret: &str) -> Pod {
        Pod {
            pod_ref: Some(PodRef {
                namespace: "default".into(),
                name: name.into(),
                uid: uid.into(),
            }),
            node_name: "vk".into(),
            containers: vec![Container {
                name: "web".into(),
                image: "nginx:1.25".into(),
                env: vec![
                    EnvVar {
                        name: "POD_NAME".into(),
                        value: name.into(),
                        sensitive: false,
                        pod_field: String::new(),
                    },
                    EnvVar {
                        name: "PASSWORD".into(),
                        value: secret.into(),
                        sensitive: true,
                        pod_field: String::new(),
                    },
                ],
                ports: vec![ContainerPort {
                    container_port: 80,
                    ..Default::default()
                }],
                resources: Some(ResourceRequirements {
                    requests: Some(Resources {
                        cpu_millis: Some(500),
                        memory_bytes: Some(256 << 20),
                        ..Default::default()
                    }),
                    limits: None,
                }),
                volume_mounts: vec![VolumeMount {
                    name: "cfg".into(),
                    mount_path: "/etc/app".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            volumes: vec![Volume {
                name: "cfg".into(),
                source: Some(Source::Files(FilesVolume {
                    files: vec![FileEntry {
                        path: "app.properties".into(),
                        content: format!("name={name}").into_bytes(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn same_spec_means_one_definition_and_secrets_stay_out_of_it() {
        let a = plan(&pod("web-1", "u1", "hunter2"), &settings()).expect("valid");
        let b = plan(&pod("web-2", "u2", "other"), &settings()).expect("valid");
        assert_eq!(a.spec, b.spec);
        assert_eq!(a.spec.family(), b.spec.family());
        assert!(a.spec.family().starts_with(&family_prefix("")));
        let mut other = settings();
        other.installation = "other".into();
        let o = plan(&pod("web-1", "u1", "hunter2"), &other).expect("valid");
        assert_eq!(
            serde_json::to_string(&o.spec).expect("json"),
            serde_json::to_string(&a.spec).expect("json"),
            "the same content"
        );
        assert_ne!(
            o.spec.family(),
            a.spec.family(),
            "another installation's family"
        );
        assert!(!o.spec.family().starts_with(&family_prefix("")));
        assert_ne!(a.content_hash, b.content_hash, "overrides differ per pod");
        let def_json = serde_json::to_string(&a.spec).expect("json");
        assert!(
            !def_json.contains("hunter2") && !def_json.contains("web-1"),
            "{def_json}"
        );
        let web = a
            .overrides
            .iter()
            .find(|(n, _)| n == "web")
            .expect("web overrides");
        assert_eq!(web.1, [("POD_NAME".to_owned(), "web-1".to_owned())]);
        assert_eq!(
            a.secrets.values.values().collect::<Vec<_>>(),
            ["hunter2"],
            "the Secret value goes to Secrets Manager"
        );
        assert_eq!(
            a.content_hash,
            plan(&pod("web-1", "u1", "guess"), &settings())
                .expect("valid")
                .content_hash,
            "the content hash (a tag) confirms no guess of a secret"
        );

        let mut bigger = pod("web-3", "u3", "x");
        bigger.containers[0].image = "nginx:1.26".into();
        let c = plan(&bigger, &settings()).expect("valid");
        assert_ne!(
            a.spec.family(),
            c.spec.family(),
            "a different image is a different definition"
        );
    }

    #[test]
    fn sensitive_env_and_files_become_ecs_secrets_of_the_values_secret() {
        let mut p = pod("p", "u", "hunter2");
        if let Some(Source::Files(f)) = p.volumes[0].source.as_mut() {
            f.files.push(FileEntry {
                path: "token".into(),
                content: b"tok".to_vec(),
                sensitive: true,
                ..Default::default()
            });
        }
        // A later plain entry of the same name wins over a sensitive one, as in Kubernetes.
        p.containers[0].env.push(EnvVar {
            name: "POD_NAME".into(),
            value: "secret-name".into(),
            sensitive: true,
            pod_field: String::new(),
        });
        let plan = plan(&p, &settings()).expect("valid");
        let web = web(&plan);
        assert_eq!(
            web.secrets,
            [
                ("POD_NAME".to_owned(), "a0_0".to_owned()),
                ("PASSWORD".to_owned(), "a0_1".to_owned())
            ]
        );
        assert!(web.env_names.is_empty(), "{:?}", web.env_names);
        let helper = &plan.spec.containers[0];
        assert_eq!(helper.env_names, ["VK_FILE_0_0"]);
        assert_eq!(
            helper.secrets,
            [("VK_FILE_0_1".to_owned(), "VK_FILE_0_1".to_owned())]
        );
        assert_eq!(plan.secrets.values["VK_FILE_0_1"], "dG9r");
        assert_eq!(plan.secrets.values["a0_1"], "hunter2");
        let helper_env = &plan.overrides[0].1;
        assert!(helper_env.iter().all(|(k, _)| k == "VK_FILE_0_0"));
        // Binding gives the pod its own definition, referencing its secrets.
        let bound = plan.bind(Some("arn:aws:secretsmanager:r:1:secret:x".into()), vec![]);
        assert_ne!(bound.family(), plan.spec.family());
        assert!(
            !format!("{:?}", plan.secrets).contains("hunter2"),
            "Debug must not show values"
        );

        let mut no_role = settings();
        no_role.execution_role_arn = None;
        no_role.log_group = None;
        assert!(
            super::plan(&p, &no_role)
                .expect_err("no execution role")
                .0
                .contains("--execution-role-arn")
        );
    }

    #[test]
    fn registry_credentials_become_one_secret_per_registry_used_by_a_non_ecr_image() {
        use podprovider_proto::v1::RegistryCredential;
        let mut p = pod("p", "u", "s");
        p.registry_credentials = vec![
            RegistryCredential {
                server: "https://index.docker.io/v1/".into(),
                username: "hub".into(),
                password: "pw1".into(),
                ..Default::default()
            },
            RegistryCredential {
                server: "registry.example.com:5000".into(),
                username: "me".into(),
                password: "pw2".into(),
                ..Default::default()
            },
            RegistryCredential {
                server: "token.example.com".into(),
                identity_token: "t".into(),
                ..Default::default()
            },
            RegistryCredential {
                server: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
                username: "AWS".into(),
                password: "ecr".into(),
                ..Default::default()
            },
        ];
        p.containers[0].image = "registry.example.com:5000/team/app:1".into();
        p.init_containers = vec![
            Container {
                name: "hub".into(),
                image: "library/busybox".into(),
                ..Default::default()
            },
            Container {
                name: "ecr".into(),
                image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1".into(),
                ..Default::default()
            },
            Container {
                name: "again".into(),
                image: "busybox".into(),
                ..Default::default()
            },
        ];
        let plan = plan(&p, &settings()).expect("valid");
        let by_name = |n: &str| {
            plan.spec
                .containers
                .iter()
                .find(|c| c.name == n)
                .expect("container")
                .registry_secret
        };
        assert_eq!(by_name("hub"), Some(0));
        assert_eq!(by_name("again"), Some(0));
        assert_eq!(by_name("ecr"), None, "ECR pulls with the execution role");
        assert_eq!(by_name("web"), Some(1));
        assert_eq!(by_name(FILES_CONTAINER), None);
        assert_eq!(
            plan.secrets.registry_json(1),
            r#"{"password":"pw2","username":"me"}"#
        );
        assert_eq!(plan.secrets.registries.len(), 2);
        assert_eq!(
            plan.warnings,
            [
                "image pull credential 3: without a password it is ignored: ECS repositoryCredentials take a username and a password"
            ]
        );
    }

    fn sized(
        name: &str,
        cpu: Option<i64>,
        mem_mib: Option<i64>,
        limit_mib: Option<i64>,
    ) -> Container {
        Container {
            name: name.into(),
            image: "busybox".into(),
            resources: Some(ResourceRequirements {
                requests: Some(Resources {
                    cpu_millis: cpu,
                    memory_bytes: mem_mib.map(|m| m << 20),
                    ..Default::default()
                }),
                limits: limit_mib.map(|m| Resources {
                    memory_bytes: Some(m << 20),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_allocations_fit_the_task_for_every_shape() {
        let shapes: Vec<(&str, Vec<Container>, Vec<Container>, bool)> = vec![
            (
                "500m init + 500m app",
                vec![sized("init", Some(500), Some(512), None)],
                vec![sized("app", Some(500), Some(512), None)],
                false,
            ),
            (
                "three apps without requests",
                vec![],
                (0..3)
                    .map(|i| sized(&format!("a{i}"), None, None, None))
                    .collect(),
                false,
            ),
            (
                "an exact fit plus init and files",
                vec![sized("init", Some(1000), Some(2048), None)],
                vec![sized("app", Some(1000), Some(2048), None)],
                true,
            ),
            (
                "three 333m apps",
                vec![],
                (0..3)
                    .map(|i| sized(&format!("a{i}"), Some(333), Some(100), Some(100)))
                    .collect(),
                true,
            ),
            (
                "a big init before small apps",
                vec![sized("migrate", Some(4000), Some(8192), None)],
                vec![
                    sized("web", Some(250), Some(256), Some(512)),
                    sized("side", None, None, None),
                ],
                true,
            ),
            (
                "nine containers",
                (0..4)
                    .map(|i| sized(&format!("i{i}"), Some(2000), Some(4096), None))
                    .collect(),
                (0..4)
                    .map(|i| sized(&format!("a{i}"), Some(125), None, Some(64)))
                    .collect(),
                true,
            ),
        ];
        for (what, init, apps, files) in shapes {
            let mut p = pod("p", "u", "s");
            p.init_containers = init;
            p.containers = apps;
            if !files {
                p.volumes.clear();
            }
            let plan = plan(&p, &settings()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let spec = &plan.spec;
            let cpu: u64 = spec.containers.iter().filter_map(|c| c.cpu_units).sum();
            let reserved: u64 = spec
                .containers
                .iter()
                .map(|c| c.memory_reservation_mib.unwrap_or(c.memory_mib))
                .sum();
            assert!(cpu <= spec.cpu, "{what}: cpu {cpu} > task {}", spec.cpu);
            assert!(
                reserved <= spec.memory_mib,
                "{what}: reserved {reserved} MiB > task {}",
                spec.memory_mib
            );
            for c in &spec.containers {
                assert!(
                    c.memory_mib >= MIN_CONTAINER_MIB && c.memory_mib <= spec.memory_mib,
                    "{what}: {} memory {}",
                    c.name,
                    c.memory_mib
                );
                if let Some(r) = c.memory_reservation_mib {
                    assert!(
                        r < c.memory_mib && r >= MIN_CONTAINER_MIB,
                        "{what}: {}",
                        c.name
                    );
                }
            }
            assert!(
                sizes::valid_sizes().contains(&(spec.cpu, spec.memory_mib)),
                "{what}: not a Fargate size"
            );
        }
    }

    #[test]
    fn init_containers_run_alone_so_apps_keep_their_requests() {
        let mut p = pod("p", "u", "s");
        p.volumes.clear();
        p.containers = vec![sized("app", Some(500), Some(512), None)];
        p.init_containers = vec![sized("init", Some(500), Some(512), None)];
        let plan = plan(&p, &settings()).expect("valid");
        let by = |n: &str| {
            plan.spec
                .containers
                .iter()
                .find(|c| c.name == n)
                .expect("container")
        };
        assert_eq!((plan.spec.cpu, plan.spec.memory_mib), (512, 1024));
        assert_eq!(by("app").cpu_units, Some(512));
        assert_eq!(by("app").memory_reservation_mib, Some(512));
        assert_eq!(by("init").cpu_units, None);
        assert_eq!(by("init").memory_reservation_mib, Some(MIN_CONTAINER_MIB));
        assert_eq!(
            by("init").memory_mib,
            1024,
            "the hard limit still allows its memory"
        );
        assert_eq!(fit(&[600, 600, 0], 1000, 6), [500, 500, 0]);
        assert_eq!(fit(&[1000, 6, 6], 1000, 6), [988, 6, 6]);
    }

    #[test]
    fn files_helper_runs_first_and_init_containers_are_chained() {
        let mut p = pod("p", "u", "s");
        p.init_containers = vec![
            Container {
                name: "init-a".into(),
                image: "busybox".into(),
                ..Default::default()
            },
            Container {
                name: "init-b".into(),
                image: "busybox".into(),
                ..Default::default()
            },
        ];
        let plan = plan(&p, &settings()).expect("valid");
        let names: Vec<_> = plan
            .spec
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, [FILES_CONTAINER, "init-a", "init-b", "web"]);
        let deps: Vec<_> = plan
            .spec
            .containers
            .iter()
            .map(|c| (c.essential, c.depends_on_success.clone()))
            .collect();
        assert_eq!(
            deps,
            [
                (false, vec![]),
                (false, vec![FILES_CONTAINER.to_owned()]),
                (false, vec!["init-a".to_owned()]),
                (true, vec!["init-b".to_owned()]),
            ]
        );
        let helper = &plan.spec.containers[0];
        assert!(
            helper.command[0].contains("/vk/0/app.properties"),
            "{:?}",
            helper.command
        );
        assert_eq!((plan.spec.cpu, plan.spec.memory_mib), (512, 1024));
    }

    #[test]
    fn unsupported_settings_are_invalid_with_a_reason() {
        let mut p = pod("p", "u", "s");
        p.volumes.push(Volume {
            name: "host".into(),
            source: Some(Source::Unsupported(UnsupportedVolume {
                kind: "hostPath".into(),
            })),
        });
        let err = plan(&p, &settings()).expect_err("hostPath");
        assert!(
            err.0.contains("hostPath is not supported by Fargate"),
            "{err}"
        );

        let mut p = pod("p", "u", "s");
        p.containers[0].volume_mounts[0].sub_path = "x".into();
        assert!(
            plan(&p, &settings())
                .expect_err("subPath")
                .0
                .contains("subPath")
        );

        let mut p = pod("p", "u", "s");
        p.os = "windows".into();
        assert!(plan(&p, &settings()).is_err());

        let mut p = pod("p", "u", "s");
        p.containers[0].env.push(EnvVar {
            name: "BIG".into(),
            value: "x".repeat(9000),
            sensitive: false,
            pod_field: String::new(),
        });
        let err = plan(&p, &settings()).expect_err("too big");
        assert!(err.0.contains("8 KiB") && !err.0.contains("xxxx"), "{err}");

        let mut p = pod("p", "u", "s");
        p.containers[0].env.push(EnvVar {
            name: "HUGE".into(),
            value: "y".repeat(70_000),
            sensitive: true,
            pod_field: String::new(),
        });
        let err = plan(&p, &settings()).expect_err("too big for a secret");
        assert!(err.0.contains("64 KiB") && !err.0.contains("yyyy"), "{err}");
    }

    fn web(plan: &Plan) -> &ContainerSpec {
        plan.spec
            .containers
            .iter()
            .find(|c| c.name == "web")
            .expect("web")
    }

    #[test]
    fn a_command_built_from_a_secret_is_refused_without_naming_the_value() {
        let mut p = pod("p", "u", "s");
        p.containers[0].command = vec!["run".into(), "--token=hunter2".into()];
        p.containers[0].command_sensitive = true;
        let err = plan(&p, &settings()).expect_err("refused");
        assert_eq!(
            err.0,
            "container web: its command contains a value from a Secret, and Fargate has no secure field for commands"
        );
        assert!(!err.0.contains("hunter2"));
    }

    #[test]
    fn pod_ip_variables_stay_empty_with_a_warning_naming_each() {
        let mut p = pod("p", "u", "s");
        p.containers[0].env.push(EnvVar {
            name: "POD_IP".into(),
            pod_field: "status.podIP".into(),
            ..Default::default()
        });
        let plan = plan(&p, &settings()).expect("valid");
        assert_eq!(
            plan.warnings,
            [
                "env POD_IP of container web: status.podIP is not known before Fargate places the task; the variable is empty"
            ]
        );
        let env = &plan
            .overrides
            .iter()
            .find(|(n, _)| n == "web")
            .expect("web")
            .1;
        assert!(env.contains(&("POD_IP".into(), String::new())));
    }

    #[test]
    fn security_settings_map_to_ecs_with_pod_settings_filling_the_gaps() {
        let mut p = pod("p", "u", "s");
        p.security_context = Some(PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            fs_group: Some(2000),
            sysctls: vec![Sysctl {
                name: "net.core.somaxconn".into(),
                value: "1024".into(),
            }],
            ..Default::default()
        });
        p.containers[0].security_context = Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            capabilities_add: vec!["CAP_SYS_PTRACE".into(), "NET_ADMIN".into()],
            capabilities_drop: vec!["ALL".into()],
            ..Default::default()
        });
        let plan = plan(&p, &settings()).expect("valid");
        let c = web(&plan);
        assert_eq!(c.user.as_deref(), Some("1000:3000"));
        assert_eq!(c.readonly_root_filesystem, Some(true));
        assert_eq!(c.capabilities_add, ["SYS_PTRACE"]);
        assert_eq!(c.capabilities_drop, ["ALL"]);
        assert_eq!(
            c.system_controls,
            [("net.core.somaxconn".to_owned(), "1024".to_owned())]
        );
        assert_eq!(
            plan.warnings,
            [
                "container web: added capabilities NET_ADMIN are ignored: Fargate can add only SYS_PTRACE",
                "fsGroup is ignored: Fargate does not offer it",
            ]
        );
    }

    #[test]
    fn run_as_non_root_with_uid_0_is_refused_and_without_a_uid_is_warned() {
        let mut p = pod("p", "u", "s");
        p.containers[0].security_context = Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(0),
            ..Default::default()
        });
        assert_eq!(
            plan(&p, &settings()).expect_err("root").0,
            "container web: runAsNonRoot is set but runAsUser is 0, so Kubernetes would not start it"
        );
        p.containers[0].security_context = Some(SecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        });
        assert_eq!(
            plan(&p, &settings()).expect("valid").warnings,
            [
                "container web: runAsNonRoot is not checked on Fargate, which does not tell the image's user; set runAsUser to a non-zero UID"
            ]
        );
    }

    #[test]
    fn settings_fargate_lacks_are_each_warned() {
        let mut p = pod("p", "u", "s");
        p.security_context = Some(PodSecurityContext {
            run_as_group: Some(3000),
            seccomp_profile_type: "RuntimeDefault".into(),
            supplemental_groups: vec![4000],
            ..Default::default()
        });
        p.containers[0].security_context = Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            ..Default::default()
        });
        p.containers[0].image_pull_policy = ImagePullPolicy::Never as i32;
        p.containers[0].stdin_once = true;
        let plan = plan(&p, &settings()).expect("valid");
        assert_eq!(
            plan.warnings,
            [
                "container web: runAsGroup is ignored without runAsUser: ECS sets a group only with a user",
                "container web: allowPrivilegeEscalation false is ignored: Fargate does not offer it",
                "container web: seccomp profile RuntimeDefault is ignored: Fargate does not offer seccomp settings",
                "container web: imagePullPolicy Never is ignored: Fargate pulls every image when it starts the task",
                "container web: stdinOnce is ignored on Fargate",
                "supplementalGroups are ignored: Fargate does not offer them",
            ]
        );
        assert_eq!(web(&plan).user, None);
    }

    #[test]
    fn extended_resources_are_refused() {
        let mut p = pod("p", "u", "s");
        if let Some(r) = p.containers[0].resources.as_mut() {
            r.limits = Some(Resources {
                other: [("hugepages-2Mi".to_owned(), "64Mi".to_owned())].into(),
                ..Default::default()
            });
        }
        assert_eq!(
            plan(&p, &settings()).expect_err("refused").0,
            "container web: resource hugepages-2Mi is not offered by Fargate"
        );
    }

    #[test]
    fn pods_without_the_new_settings_keep_their_task_definition_family() {
        let plan = plan(&pod("p", "u", "s"), &settings()).expect("valid");
        let json = serde_json::to_string(&plan.spec).expect("json");
        for key in ["capabilities_add", "capabilities_drop", "system_controls"] {
            assert!(!json.contains(key), "{key} in {json}");
        }
    }

    #[test]
    fn a_chosen_hostname_and_a_subdomain_are_warned_but_the_pod_name_is_not() {
        let mut p = pod("web-1", "u", "s");
        p.hostname = "web-1".into();
        assert!(plan(&p, &settings()).expect("valid").warnings.is_empty());
        p.hostname = "db-0".into();
        p.subdomain = "db".into();
        assert_eq!(
            plan(&p, &settings()).expect("valid").warnings,
            [
                "hostname is ignored: Fargate (awsvpc) does not offer it",
                "subdomain is ignored: Fargate (awsvpc) does not offer it",
            ]
        );
    }

    #[test]
    fn informational_fields_change_nothing_and_warn_nothing() {
        let plain = plan(&pod("p", "u", "s"), &settings()).expect("valid");
        let mut p = pod("p", "u", "s");
        p.readiness_gates = vec!["example.com/ready".into()];
        p.containers[0].termination_message_policy = "FallbackToLogsOnError".into();
        p.containers[0].termination_message_path = "/tmp/msg".into();
        let informed = plan(&p, &settings()).expect("valid");
        assert!(informed.warnings.is_empty(), "{:?}", informed.warnings);
        assert_eq!(informed.content_hash, plain.content_hash);
    }

    /// Any pod gets a plan or an error (INVALID_ARGUMENT for the caller), never a panic, and an
    /// error never quotes a sensitive value.
    #[test]
    fn fuzz_any_pod_is_planned_or_refused() {
        provider_common::arbitrary::run_on_pods(|pod| {
            if let Err(e) = plan(&pod, &settings()) {
                provider_common::arbitrary::check_no_secret_quoted(&pod, &e.to_string())?;
            }
            Ok(())
        });
    }

    #[test]
    fn stop_timeout_is_the_grace_period_within_fargates_2_to_120_seconds() {
        // ECS `stopTimeout`: "The valid values for Fargate are 2-120 seconds"; unset = ECS's 30,
        // which is also Kubernetes' default grace period.
        for (grace, want) in [
            (None, None),
            (Some(0), Some(2)),
            (Some(1), Some(2)),
            (Some(45), Some(45)),
            (Some(600), Some(120)),
        ] {
            let mut p = pod("p", "u", "s");
            p.termination_grace_period_seconds = grace;
            let plan = plan(&p, &settings()).expect("valid");
            assert_eq!(web(&plan).stop_timeout, want, "{grace:?}");
        }
    }

    #[test]
    fn restart_policy_maps_to_the_ecs_container_restart_policy() {
        let restart = |policy: RestartPolicy| {
            let mut p = pod("p", "u", "s");
            p.restart_policy = policy as i32;
            p.init_containers = vec![Container {
                name: "init".into(),
                image: "busybox".into(),
                ..Default::default()
            }];
            let plan = plan(&p, &settings()).expect("valid");
            let init = plan
                .spec
                .containers
                .iter()
                .find(|c| c.name == "init")
                .expect("init");
            assert_eq!(init.restart_policy, None, "init containers run once");
            web(&plan).restart_policy.clone()
        };
        let always = Some(RestartSpec {
            ignored_exit_codes: vec![],
            restart_attempt_period: 60,
        });
        assert_eq!(restart(RestartPolicy::Always), always);
        assert_eq!(restart(RestartPolicy::Unspecified), always);
        assert_eq!(
            restart(RestartPolicy::OnFailure),
            Some(RestartSpec {
                ignored_exit_codes: vec![0],
                restart_attempt_period: 60,
            })
        );
        assert_eq!(restart(RestartPolicy::Never), None);
    }

    fn exec_probe(command: &[&str], period: i32, timeout: i32, failures: i32, delay: i32) -> Probe {
        Probe {
            handler: Some(Handler::Exec(podprovider_proto::v1::ExecAction {
                command: command.iter().map(|s| (*s).to_owned()).collect(),
            })),
            initial_delay_seconds: delay,
            timeout_seconds: timeout,
            period_seconds: period,
            success_threshold: 1,
            failure_threshold: failures,
        }
    }

    #[test]
    fn exec_probes_map_to_the_ecs_health_check() {
        // Liveness exec probe → healthCheck, CMD form, values as given when within ECS's ranges.
        let mut p = pod("p", "u", "s");
        p.containers[0].liveness_probe = Some(exec_probe(&["cat", "/tmp/ok"], 15, 3, 4, 20));
        let planned = super::plan(&p, &settings()).expect("valid");
        assert_eq!(
            web(&planned).health_check,
            Some(HealthCheckSpec {
                command: vec!["CMD".into(), "cat".into(), "/tmp/ok".into()],
                interval: 15,
                timeout: 3,
                retries: 4,
                start_period: Some(20),
            })
        );
        assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);

        // Kubernetes defaults (0 = unset) and out-of-range values clamped, with a warning.
        let mut p = pod("p", "u", "s");
        p.containers[0].readiness_probe = Some(exec_probe(&["true"], 1, 0, 0, 900));
        let planned = super::plan(&p, &settings()).expect("valid");
        assert_eq!(
            web(&planned).health_check,
            Some(HealthCheckSpec {
                command: vec!["CMD".into(), "true".into()],
                interval: 5,
                timeout: 2,
                retries: 3,
                start_period: Some(300),
            })
        );
        assert_eq!(
            planned.warnings,
            [
                "container web: the probe's timing is moved into ECS's health check ranges (interval 5-300 s, timeout 2-60 s, retries 1-10, start period 0-300 s)"
            ]
        );

        // Both: the liveness probe wins and the readiness probe is named; other kinds warned.
        let mut p = pod("p", "u", "s");
        p.containers[0].liveness_probe = Some(exec_probe(&["live"], 10, 1, 3, 0));
        p.containers[0].readiness_probe = Some(exec_probe(&["ready"], 10, 2, 3, 0));
        p.containers[0].startup_probe = Some(Probe {
            handler: Some(Handler::TcpSocket(podprovider_proto::v1::TcpSocketAction {
                port: 80,
                host: String::new(),
            })),
            ..Default::default()
        });
        let planned = super::plan(&p, &settings()).expect("valid");
        let hc = web(&planned).health_check.clone().expect("health check");
        assert_eq!(hc.command, ["CMD", "live"]);
        assert_eq!(hc.start_period, None);
        assert_eq!(
            planned.warnings,
            [
                "container web: the startup probe is not run on Fargate",
                "container web: the readiness probe is not run on Fargate, which runs one health check per container (the liveness probe's); readiness follows it",
                "container web: the probe's timing is moved into ECS's health check ranges (interval 5-300 s, timeout 2-60 s, retries 1-10, start period 0-300 s)",
            ]
        );

        let mut p = pod("p", "u", "s");
        p.containers[0].liveness_probe = Some(Probe {
            handler: Some(Handler::HttpGet(podprovider_proto::v1::HttpGetAction {
                path: "/healthz".into(),
                port: 80,
                ..Default::default()
            })),
            ..Default::default()
        });
        let planned = super::plan(&p, &settings()).expect("valid");
        assert_eq!(web(&planned).health_check, None);
        assert_eq!(
            planned.warnings,
            [
                "container web: the liveness probe (httpGet) is not run on Fargate: ECS health checks run commands only"
            ]
        );
    }

    #[test]
    fn task_role_annotation_becomes_the_run_task_task_role_override() {
        let with = |v: &str, s: &DefSettings| {
            let mut p = pod("p", "u", "s");
            p.annotations.insert(TASK_ROLE_ANNOTATION.into(), v.into());
            plan(&p, s)
        };
        let plain = plan(&pod("p", "u", "s"), &settings()).expect("valid");
        assert_eq!(plain.task_role_arn, None);
        let arn = "arn:aws:iam::210987654321:role/team/app-role";
        let p = with(arn, &settings()).expect("valid");
        assert_eq!(p.task_role_arn.as_deref(), Some(arn));
        // Per task (RunTask overrides.taskRoleArn): the definition stays shared.
        assert_eq!(p.spec, plain.spec);
        assert_ne!(
            p.content_hash, plain.content_hash,
            "a role change is a change"
        );
        // A bare name: the account and partition of the provider's own roles.
        assert_eq!(
            with("app-role", &settings())
                .expect("valid")
                .task_role_arn
                .as_deref(),
            Some("arn:aws:iam::123456789012:role/app-role")
        );
        let mut no_roles = settings();
        no_roles.execution_role_arn = None;
        no_roles.log_group = None;
        let mut p = pod("p", "u", "s");
        p.containers[0].env.retain(|e| !e.sensitive);
        p.annotations
            .insert(TASK_ROLE_ANNOTATION.into(), "app-role".into());
        assert!(
            plan(&p, &no_roles)
                .expect_err("no account")
                .0
                .contains("without its account")
        );
        for bad in [
            "arn:aws:iam::12345:role/x",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:user/x",
            "a role",
        ] {
            let err = with(bad, &settings()).expect_err(bad);
            assert!(err.0.contains(TASK_ROLE_ANNOTATION), "{err}");
        }
    }

    #[test]
    fn spot_annotation_selects_the_fargate_spot_capacity_provider() {
        let with = |v: &str| {
            let mut p = pod("p", "u", "s");
            p.annotations.insert(SPOT_ANNOTATION.into(), v.into());
            plan(&p, &settings())
        };
        let plain = plan(&pod("p", "u", "s"), &settings()).expect("valid");
        assert!(!plain.spot);
        let spot = with("true").expect("valid");
        assert!(spot.spot);
        assert_eq!(spot.spec, plain.spec, "the same definition");
        assert_ne!(spot.content_hash, plain.content_hash);
        assert!(!with("false").expect("valid").spot);
        assert_eq!(
            with("yes").expect_err("bad").0,
            "annotation virtual-kubelet.io/fargate-spot must be \"true\" or \"false\", not \"yes\""
        );
    }
}
