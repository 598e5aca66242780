//! One field table, enforced: every field of `PodSpec`, `Container`, `PodSecurityContext` and
//! `SecurityContext` is classified here, once, and [`check`] applies the table to a pod.
//!
//! The tests keep the table honest: it must name every field of the k8s-openapi types and nothing
//! else, and `docs/POD-FIELDS.md` must be exactly [`markdown`]'s output. So a k8s-openapi upgrade
//! that adds a field fails the build until someone decides what a virtual node does with it.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::resolve::Warning;

/// Event reason of the warning for a set field the virtual node ignores.
pub const IGNORED_REASON: &str = "PodFieldIgnored";
/// Event reason suggested for failing a pod that sets a refused field.
pub const REFUSED_REASON: &str = "PodFieldRefused";

/// The Kubernetes type a field belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// `spec`.
    PodSpec,
    /// Each of `spec.initContainers` and `spec.containers`.
    Container,
    /// `spec.securityContext`.
    PodSecurityContext,
    /// `securityContext` of each container.
    SecurityContext,
}

impl Owner {
    /// Every owner, in the order of the documentation.
    pub const ALL: [Owner; 4] = [
        Owner::PodSpec,
        Owner::Container,
        Owner::PodSecurityContext,
        Owner::SecurityContext,
    ];

    /// The k8s-openapi type name.
    pub fn type_name(self) -> &'static str {
        match self {
            Owner::PodSpec => "PodSpec",
            Owner::Container => "Container",
            Owner::PodSecurityContext => "PodSecurityContext",
            Owner::SecurityContext => "SecurityContext",
        }
    }

    /// Where the type sits in a pod, for people.
    pub fn path(self) -> &'static str {
        match self {
            Owner::PodSpec => "spec",
            Owner::Container => "spec.initContainers[*], spec.containers[*]",
            Owner::PodSecurityContext => "spec.securityContext",
            Owner::SecurityContext => {
                "spec.initContainers[*].securityContext, spec.containers[*].securityContext"
            }
        }
    }
}

/// What the virtual node does with a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Sent to the provider in the contract's `Pod`, possibly transformed.
    Carried,
    /// Acted on by the shim itself (turned into other contract fields, or handled in Kubernetes).
    Resolved,
    /// Acted on by the scheduler or control plane; a kubelet ignores it too.
    Scheduling,
    /// When set, the pod is failed: running it without the field would change its meaning.
    Refused,
    /// When set, the pod runs without it and gets a `PodFieldIgnored` Warning event.
    Ignored,
}

impl Class {
    /// Every class, in the order of the documentation.
    pub const ALL: [Class; 5] = [
        Class::Carried,
        Class::Resolved,
        Class::Scheduling,
        Class::Refused,
        Class::Ignored,
    ];

    /// The class's name.
    pub fn label(self) -> &'static str {
        match self {
            Class::Carried => "Carried",
            Class::Resolved => "Resolved",
            Class::Scheduling => "Scheduling",
            Class::Refused => "Refused",
            Class::Ignored => "Ignored",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Class::Carried => {
                "sent to the provider in the contract's `Pod` (possibly transformed: values resolved, \
                 named ports made numbers, defaults filled in). The provider columns say what each \
                 cloud does with it."
            }
            Class::Resolved => {
                "acted on by the shim (or by Kubernetes admission) before the provider is called; \
                 its effect reaches the provider through other contract fields."
            }
            Class::Scheduling => {
                "acted on by the scheduler or another control-plane component before (or around) \
                 the pod's binding to the virtual node; a kubelet ignores it too."
            }
            Class::Refused => {
                "when set to a value that changes the pod's meaning, the pod is failed with a \
                 Warning event naming the field."
            }
            Class::Ignored => {
                "when set to a non-default value, the pod runs without it and gets a Warning event \
                 (reason `PodFieldIgnored`) naming the field, once per container for container \
                 fields."
            }
        }
    }
}

/// One field of one Kubernetes type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The type it belongs to.
    pub owner: Owner,
    /// Its JSON name, e.g. `activeDeadlineSeconds`.
    pub name: &'static str,
    /// What the virtual node does with it.
    pub class: Class,
    /// Why, or how, in a sentence or two. For refused fields, the reason shown to users (after
    /// the field's path, so it starts lower-case there).
    pub note: &'static str,
    /// What `provider-aci` does with it (carried fields); "—" otherwise.
    pub aci: &'static str,
    /// What `provider-eci` does with it (carried fields); "—" otherwise.
    pub eci: &'static str,
    /// What `provider-fargate` does with it (carried fields); "—" otherwise.
    pub fargate: &'static str,
}

const NONE: &str = "—";

const fn carried(
    owner: Owner,
    name: &'static str,
    note: &'static str,
    aci: &'static str,
    eci: &'static str,
    fargate: &'static str,
) -> Field {
    Field {
        owner,
        name,
        class: Class::Carried,
        note,
        aci,
        eci,
        fargate,
    }
}

/// A field providers never see as itself.
const fn kept(owner: Owner, name: &'static str, class: Class, note: &'static str) -> Field {
    Field {
        owner,
        name,
        class,
        note,
        aci: NONE,
        eci: NONE,
        fargate: NONE,
    }
}

use Class::{Ignored, Refused, Resolved, Scheduling};
use Owner::{Container as C, PodSecurityContext as PSC, PodSpec as P, SecurityContext as SC};

/// The table. The provider columns follow the providers' mapping code; keep them in step.
pub static FIELDS: &[Field] = &[
    // PodSpec.
    carried(
        P,
        "activeDeadlineSeconds",
        "Also enforced by the shim, which deletes the pod once the deadline has passed, so providers need not.",
        "not used (the shim enforces it)",
        "ActiveDeadlineSeconds (the shim enforces it too)",
        "not used (the shim enforces it)",
    ),
    kept(
        P,
        "affinity",
        Scheduling,
        "Node affinity and pod (anti-)affinity: the scheduler chose this node.",
    ),
    kept(
        P,
        "automountServiceAccountToken",
        Resolved,
        "The ServiceAccount admission plugin adds (or, when false, omits) the `kube-api-access-*` projected volume; the shim requests its token, sends it as file contents and refreshes it before it expires.",
    ),
    carried(
        P,
        "containers",
        "Each becomes a contract `Container`; see the Container table.",
        "containers (at most 60 with init containers)",
        "Container",
        "task definition containers (at most 9 with init containers: one is the files helper)",
    ),
    carried(
        P,
        "dnsConfig",
        "Nameservers, searches and options as written.",
        "dnsConfig (needs nameservers; otherwise warning: ignored)",
        "DnsConfig",
        "warning: ignored (VPC resolver)",
    ),
    carried(
        P,
        "dnsPolicy",
        "As written; the cluster's DNS is usually not reachable from the cloud.",
        "ClusterFirst in a VNet with --cluster-dns: the cluster DNS and search domains; without a subnet: warning (ACI's resolver)",
        "None and Default mapped; otherwise ECI's default",
        "None: warning (VPC resolver)",
    ),
    kept(
        P,
        "enableServiceLinks",
        Resolved,
        "Unless false, the shim adds the service-link variables of the namespace's Services to every container's env (those of the `kubernetes` Service always).",
    ),
    kept(
        P,
        "ephemeralContainers",
        Ignored,
        "Ephemeral containers (`kubectl debug`) are not run; adding one gets this event instead.",
    ),
    kept(
        P,
        "evictionResponders",
        Scheduling,
        "Control plane: responders of the Eviction API, which a controller drives; nothing for the node to do.",
    ),
    carried(
        P,
        "hostAliases",
        "Extra /etc/hosts entries.",
        "warning: ignored",
        "HostAliase",
        "warning: ignored",
    ),
    kept(
        P,
        "hostIPC",
        Refused,
        "The pod would share the IPC namespace of a host, and a virtual node has none.",
    ),
    kept(
        P,
        "hostNetwork",
        Refused,
        "The pod would use the network of a host (its IP and ports), and a virtual node has none.",
    ),
    kept(
        P,
        "hostPID",
        Refused,
        "The pod would see the processes of a host, and a virtual node has none.",
    ),
    kept(
        P,
        "hostUsers",
        Ignored,
        "false (a user namespace) is not offered; the cloud's own isolation applies. true is the default and is not reported.",
    ),
    carried(
        P,
        "hostname",
        "The pod name when unset.",
        "warning unless it is the pod name",
        "HostName",
        "warning unless it is the pod name",
    ),
    kept(
        P,
        "hostnameOverride",
        Ignored,
        "The cloud sets the pod's hostname.",
    ),
    kept(
        P,
        "imagePullSecrets",
        Resolved,
        "The shim reads each Secret (`.dockerconfigjson` or `.dockercfg`) into the contract's registry credentials; a missing one is a `FailedToRetrieveImagePullSecret` warning. ACI: imageRegistryCredentials; ECI: ImageRegistryCredential; Fargate: a per-pod Secrets Manager secret referenced by repositoryCredentials (non-ECR images).",
    ),
    carried(
        P,
        "initContainers",
        "Each becomes a contract `Container`, run in order before the app containers.",
        "initContainers (resources, probes, ports: warning)",
        "InitContainer (probes, hooks, stdin, tty: warning)",
        "containers chained by dependsOn SUCCESS",
    ),
    carried(
        P,
        "nodeName",
        "The virtual node the pod is bound to.",
        "tag",
        "tag",
        "tag",
    ),
    kept(
        P,
        "nodeSelector",
        Scheduling,
        "Matched by the scheduler against the virtual node's labels.",
    ),
    carried(
        P,
        "os",
        "`linux` when unset.",
        "osType (Linux or Windows)",
        "linux only; otherwise refused",
        "linux only; otherwise refused",
    ),
    kept(
        P,
        "overhead",
        Scheduling,
        "Set by RuntimeClass admission and counted by the scheduler.",
    ),
    kept(P, "preemptionPolicy", Scheduling, "Scheduler preemption."),
    kept(
        P,
        "priority",
        Scheduling,
        "Set by admission from priorityClassName; scheduler preemption (a virtual node does not evict under pressure).",
    ),
    kept(
        P,
        "priorityClassName",
        Scheduling,
        "Resolved into priority by admission.",
    ),
    carried(
        P,
        "readinessGates",
        "Condition types, informational: the shim keeps the pod not Ready until each gate's condition is True.",
        "not used (the shim handles it)",
        "not used (the shim handles it)",
        "not used (the shim handles it)",
    ),
    kept(
        P,
        "resourceClaims",
        Refused,
        "Dynamically allocated devices (DRA) cannot be attached to a cloud pod. Containers' `resources.claims` can only name these claims.",
    ),
    kept(
        P,
        "resources",
        Ignored,
        "Pod-level requests and limits are not carried; the containers' resources size the cloud pod.",
    ),
    carried(
        P,
        "restartPolicy",
        "Always when unset.",
        "restartPolicy",
        "RestartPolicy",
        "not mapped: ECS never restarts a task's containers",
    ),
    kept(
        P,
        "runtimeClassName",
        Ignored,
        "The cloud chooses the container runtime (a RuntimeClass's scheduling and overhead still applied before binding).",
    ),
    kept(
        P,
        "schedulerName",
        Scheduling,
        "The scheduler that bound the pod.",
    ),
    kept(
        P,
        "schedulingGates",
        Scheduling,
        "A gated pod is not bound until the gates are removed.",
    ),
    kept(
        P,
        "schedulingGroup",
        Scheduling,
        "The scheduler's group (gang) scheduling.",
    ),
    carried(
        P,
        "securityContext",
        "Per field: see the PodSecurityContext table.",
        "see PodSecurityContext",
        "see PodSecurityContext",
        "see PodSecurityContext",
    ),
    carried(
        P,
        "serviceAccount",
        "Deprecated alias: the API server keeps it equal to serviceAccountName, which the shim reads.",
        "not used",
        "not used",
        "not used",
    ),
    carried(
        P,
        "serviceAccountName",
        "Informational in the contract; the shim uses it for token requests and `spec.serviceAccountName` env fieldRefs.",
        "not used",
        "not used",
        "not used",
    ),
    kept(
        P,
        "setHostnameAsFQDN",
        Ignored,
        "The cloud sets the pod's hostname.",
    ),
    kept(
        P,
        "shareProcessNamespace",
        Ignored,
        "The containers keep their own process namespaces, as the cloud runs them.",
    ),
    carried(
        P,
        "subdomain",
        "Informational: DNS names come from a headless Service, if the cluster can reach the pod.",
        "warning: ignored",
        "warning: ignored",
        "warning: ignored",
    ),
    carried(
        P,
        "terminationGracePeriodSeconds",
        "30 when unset; also the default of DeletePod.",
        "tag, used on delete",
        "TerminationGracePeriodSeconds",
        "stopTimeout (at most 120 s)",
    ),
    kept(
        P,
        "tolerations",
        Scheduling,
        "Tolerate the virtual node's taints.",
    ),
    kept(
        P,
        "topologySpreadConstraints",
        Scheduling,
        "Spreading across nodes and zones.",
    ),
    carried(
        P,
        "volumes",
        "ConfigMap, Secret, downwardAPI, projected and service-account-token volumes arrive as file contents; emptyDir, nfs, azureFile and gitRepo as themselves; any other type as `unsupported`, which providers refuse.",
        "emptyDir, files (top level only), azureFile, gitRepo; others refused",
        "emptyDir, files, nfs; others refused",
        "emptyDir, files (written by a helper container); others refused",
    ),
    // Container.
    carried(
        C,
        "args",
        "`$(VAR)` expanded; `args_sensitive` when a Secret's value was substituted.",
        "appended to command (args without command refused); refused when sensitive",
        "Arg; refused when sensitive",
        "command; refused when sensitive",
    ),
    carried(
        C,
        "command",
        "`$(VAR)` expanded; `command_sensitive` when a Secret's value was substituted.",
        "command; refused when sensitive",
        "Command; refused when sensitive",
        "entryPoint; refused when sensitive",
    ),
    carried(
        C,
        "env",
        "Every value resolved (ConfigMap, Secret, downward API, resource fields, `$(VAR)`, service links); Secret values marked sensitive; `status.podIP(s)` fieldRefs sent as `pod_field` for the provider to fill.",
        "environmentVariables (secureValue when sensitive); empty values and pod IP fields: warning, left out",
        "EnvironmentVar (EnvironmentVarHide on a container with sensitive values; an init container with one is refused); pod IP fields as FieldRef status.podIP",
        "RunTask environment overrides; sensitive values through a per-pod Secrets Manager secret (container secrets); pod IP fields: warning, left empty",
    ),
    kept(
        C,
        "envFrom",
        Resolved,
        "Expanded into env by the shim, with the prefix; missing optional sources are warnings.",
    ),
    carried(C, "image", "As written.", "image", "Image", "image"),
    carried(
        C,
        "imagePullPolicy",
        "IfNotPresent when unset.",
        "Never: warning (ACI always pulls)",
        "ImagePullPolicy",
        "Never: warning (Fargate always pulls)",
    ),
    carried(
        C,
        "lifecycle",
        "postStart and preStop; named ports resolved.",
        "warning: ignored",
        "exec, httpGet, tcpSocket (sleep, init containers: warning)",
        "warning: not run",
    ),
    carried(
        C,
        "livenessProbe",
        "Kubernetes defaults filled in; named ports resolved.",
        "exec, httpGet (tcpSocket, grpc, httpGet host, init containers: warning)",
        "exec, httpGet, tcpSocket (grpc, hosts, headers, init containers: warning)",
        "warning: not run",
    ),
    carried(
        C,
        "name",
        "As written.",
        "name",
        "Name",
        "name (vk-files is reserved)",
    ),
    carried(
        C,
        "ports",
        "Numbers and protocols; names kept for probes, which are already resolved.",
        "ports and group IP ports (TCP, UDP; SCTP refused; init containers: warning)",
        "Port (TCP, UDP; others refused)",
        "portMappings (TCP, UDP; SCTP refused)",
    ),
    carried(
        C,
        "readinessProbe",
        "Kubernetes defaults filled in; named ports resolved.",
        "exec, httpGet (tcpSocket, grpc, httpGet host, init containers: warning)",
        "exec, httpGet, tcpSocket (grpc, hosts, headers, init containers: warning)",
        "warning: not run",
    ),
    kept(
        C,
        "resizePolicy",
        Ignored,
        "Resources cannot be resized in place on a cloud pod.",
    ),
    carried(
        C,
        "resources",
        "Requests and limits parsed (millicores, bytes, GPUs, others by name). `resources.claims` can only name the pod's resourceClaims, which are refused.",
        "requests and limits in cores and GB; GPUs by SKU; ephemeral storage: warning; extended resources refused",
        "fitted to an ECI size; Gpu; EphemeralStorage beyond the free 30 GiB; extended resources refused",
        "fitted to a Fargate task size; ephemeral storage; GPUs and extended resources refused",
    ),
    kept(
        C,
        "restartPolicy",
        Ignored,
        "Per-container restart policies are not offered: a sidecar init container (Always) runs as an ordinary init container, which must exit before the next one starts.",
    ),
    kept(
        C,
        "restartPolicyRules",
        Ignored,
        "Per-container restart rules are not offered; the pod's restartPolicy applies.",
    ),
    carried(
        C,
        "securityContext",
        "Per field: see the SecurityContext table.",
        "see SecurityContext",
        "see SecurityContext",
        "see SecurityContext",
    ),
    carried(
        C,
        "startupProbe",
        "Kubernetes defaults filled in; named ports resolved.",
        "warning: ignored",
        "warning: ignored",
        "warning: not run",
    ),
    carried(
        C,
        "stdin",
        "For attach.",
        "warning: ignored",
        "Stdin (init containers: warning)",
        "interactive",
    ),
    carried(
        C,
        "stdinOnce",
        "For attach.",
        "warning: ignored",
        "StdinOnce (init containers: warning)",
        "warning: ignored",
    ),
    carried(
        C,
        "terminationMessagePath",
        "Informational; /dev/termination-log when unset.",
        "not used",
        "not used",
        "not used",
    ),
    carried(
        C,
        "terminationMessagePolicy",
        "Informational; File when unset.",
        "not used",
        "not used",
        "not used",
    ),
    carried(
        C,
        "tty",
        "For attach and exec.",
        "warning: ignored",
        "Tty (init containers: warning)",
        "pseudoTerminal",
    ),
    kept(
        C,
        "volumeDevices",
        Refused,
        "Raw block devices of PersistentVolumeClaims cannot be attached to a cloud pod.",
    ),
    carried(
        C,
        "volumeMounts",
        "Name, path, subPath, read-only.",
        "volumeMounts (subPath refused)",
        "VolumeMount (with SubPath)",
        "mountPoints (subPath refused)",
    ),
    carried(
        C,
        "workingDir",
        "As written.",
        "warning: ignored",
        "WorkingDir",
        "workingDirectory",
    ),
    // PodSecurityContext.
    kept(
        PSC,
        "appArmorProfile",
        Ignored,
        "The cloud's own confinement applies.",
    ),
    carried(
        PSC,
        "fsGroup",
        "As written.",
        "warning: ignored",
        "warning: dropped",
        "warning: ignored",
    ),
    kept(
        PSC,
        "fsGroupChangePolicy",
        Ignored,
        "Volume ownership is not changed by the node.",
    ),
    carried(
        PSC,
        "runAsGroup",
        "Containers that do not set their own inherit it (the providers merge it, as the kubelet does).",
        "per container: runAsGroup",
        "per container: SecurityContextRunAsGroup (init containers: warning, dropped)",
        "per container: user uid:gid",
    ),
    carried(
        PSC,
        "runAsNonRoot",
        "Containers that do not set their own inherit it (the providers merge it, as the kubelet does).",
        "per container: checked",
        "per container: checked",
        "per container: checked",
    ),
    carried(
        PSC,
        "runAsUser",
        "Containers that do not set their own inherit it (the providers merge it, as the kubelet does).",
        "per container: runAsUser",
        "per container: RunAsUser",
        "per container: user",
    ),
    kept(
        PSC,
        "seLinuxChangePolicy",
        Ignored,
        "SELinux labels are not offered.",
    ),
    kept(
        PSC,
        "seLinuxOptions",
        Ignored,
        "SELinux labels are not offered.",
    ),
    carried(
        PSC,
        "seccompProfile",
        "Type and Localhost path; containers that do not set their own inherit it.",
        "per container: as in SecurityContext",
        "per container: warning, dropped",
        "per container: warning, ignored",
    ),
    carried(
        PSC,
        "supplementalGroups",
        "As written.",
        "warning: ignored",
        "warning: dropped",
        "warning: ignored",
    ),
    kept(
        PSC,
        "supplementalGroupsPolicy",
        Ignored,
        "The image's groups are merged as the cloud's runtime does.",
    ),
    carried(
        PSC,
        "sysctls",
        "Namespaced kernel parameters.",
        "warning: ignored",
        "SecurityContext.Sysctl",
        "systemControls of every container",
    ),
    kept(
        PSC,
        "windowsOptions",
        Ignored,
        "Windows options (gMSA, host process, user name) are not offered.",
    ),
    // SecurityContext.
    carried(
        SC,
        "allowPrivilegeEscalation",
        "As written.",
        "allowPrivilegeEscalation",
        "false: warning, dropped",
        "false: warning, ignored",
    ),
    kept(
        SC,
        "appArmorProfile",
        Ignored,
        "The cloud's own confinement applies.",
    ),
    carried(
        SC,
        "capabilities",
        "add and drop lists.",
        "capabilities (add, drop)",
        "add mapped; drop: warning",
        "drop mapped; add: SYS_PTRACE only, others warning",
    ),
    carried(
        SC,
        "privileged",
        "As written.",
        "privileged",
        "SecurityContextPrivileged (app containers; an init container's true refused)",
        "true refused",
    ),
    kept(
        SC,
        "procMount",
        Ignored,
        "An unmasked /proc is not offered.",
    ),
    carried(
        SC,
        "readOnlyRootFilesystem",
        "As written.",
        "true: warning, ignored",
        "ReadOnlyRootFilesystem",
        "readonlyRootFilesystem",
    ),
    carried(
        SC,
        "runAsGroup",
        "As written.",
        "runAsGroup",
        "SecurityContextRunAsGroup (init containers: warning, dropped)",
        "user uid:gid (without runAsUser: warning)",
    ),
    carried(
        SC,
        "runAsNonRoot",
        "Checked by the providers, which cannot see the image's user: runAsUser 0 is refused, an unset runAsUser is a warning.",
        "checked",
        "checked; SecurityContextRunAsNonRoot on app containers",
        "checked",
    ),
    carried(
        SC,
        "runAsUser",
        "As written.",
        "runAsUser",
        "RunAsUser",
        "user",
    ),
    kept(
        SC,
        "seLinuxOptions",
        Ignored,
        "SELinux labels are not offered.",
    ),
    carried(
        SC,
        "seccompProfile",
        "Type and Localhost path.",
        "Unconfined as an allow-all profile; RuntimeDefault, Localhost: warning",
        "warning: dropped",
        "warning: ignored",
    ),
    kept(
        SC,
        "windowsOptions",
        Ignored,
        "Windows options (gMSA, host process, user name) are not offered.",
    ),
];

/// Fields whose default is `true`, so only `false` is worth reporting.
const TRUE_BY_DEFAULT: &[(Owner, &str)] = &[(Owner::PodSpec, "hostUsers")];

/// The table's entry for a field.
pub fn field(owner: Owner, name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.owner == owner && f.name == name)
}

/// What a pod sets that the virtual node does not do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// One message per refused field that is set; non-empty means the pod must be failed.
    pub refused: Vec<String>,
    /// One `PodFieldIgnored` warning per ignored field that is set (per container for container
    /// fields).
    pub ignored: Vec<Warning>,
    /// The paths of the ignored fields, in the order of `ignored`.
    pub ignored_paths: Vec<String>,
}

/// Kubernetes caps an event's note at 1 kB.
const NOTE_LIMIT: usize = 1000;

impl Verdict {
    /// All ignored fields in one `PodFieldIgnored` Warning event: the event recorder folds events
    /// of one reason into one series, so separate events would show only the first field.
    pub fn ignored_event(&self) -> Option<Warning> {
        if self.ignored_paths.is_empty() {
            return None;
        }
        let mut message =
            String::from("not supported on a virtual node and ignored (see POD-FIELDS.md):");
        for (i, path) in self.ignored_paths.iter().enumerate() {
            let left = self.ignored_paths.len() - i;
            if message.len() + path.len() + 30 > NOTE_LIMIT {
                message.push_str(&format!(" and {left} more"));
                break;
            }
            message.push_str(if i == 0 { " " } else { ", " });
            message.push_str(path);
        }
        Some(Warning {
            reason: IGNORED_REASON,
            message,
        })
    }
}

/// Applies [`FIELDS`] to `pod`: reports every Refused or Ignored field set to a non-default value.
/// Null, false, empty strings, empty lists and objects with nothing set count as not set.
pub fn check(pod: &Pod) -> Verdict {
    let mut verdict = Verdict::default();
    let Some(spec) = &pod.spec else {
        return verdict;
    };
    // The k8s-openapi types always serialize (string keys only); a failure would mean nothing to
    // inspect, not a broken pod.
    let spec = serde_json::to_value(spec).unwrap_or(Value::Null);
    inspect(&mut verdict, Owner::PodSpec, &spec, "spec");
    inspect(
        &mut verdict,
        Owner::PodSecurityContext,
        &spec["securityContext"],
        "spec.securityContext",
    );
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            let path = format!("spec.{list}[{}]", c["name"].as_str().unwrap_or_default());
            inspect(&mut verdict, Owner::Container, c, &path);
            inspect(
                &mut verdict,
                Owner::SecurityContext,
                &c["securityContext"],
                &format!("{path}.securityContext"),
            );
        }
    }
    verdict
}

fn inspect(verdict: &mut Verdict, owner: Owner, object: &Value, path: &str) {
    for f in FIELDS.iter().filter(|f| f.owner == owner) {
        if !counts(f, &object[f.name]) {
            continue;
        }
        let at = format!("{path}.{}", f.name);
        match f.class {
            Class::Refused => verdict.refused.push(format!(
                "{at} is not supported on a virtual node: {}",
                lower_first(f.note)
            )),
            Class::Ignored => {
                verdict.ignored.push(Warning {
                    reason: IGNORED_REASON,
                    message: format!("{at} is not supported on a virtual node and is ignored"),
                });
                verdict.ignored_paths.push(at);
            }
            Class::Carried | Class::Resolved | Class::Scheduling => {}
        }
    }
}

/// The note continues a sentence in a message.
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Whether `value` of field `f` differs from the field's default.
fn counts(f: &Field, value: &Value) -> bool {
    if TRUE_BY_DEFAULT.contains(&(f.owner, f.name)) {
        return *value == Value::Bool(false);
    }
    is_set(value)
}

fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(_) => true,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => o.values().any(is_set),
    }
}

/// Table cells must not break the Markdown table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The whole of `docs/POD-FIELDS.md`.
pub fn markdown() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        out,
        "<!-- Generated from node-shim/src/fields.rs (`fields::markdown`); do not edit by hand.\n     \
         Regenerate: UPDATE_POD_FIELDS=1 cargo test -p node-shim --lib fields -->\n"
    );
    out.push_str("# Pod fields on a virtual node\n\n");
    out.push_str(
        "Every field of `PodSpec`, `Container`, `PodSecurityContext` and `SecurityContext` \
         (k8s-openapi, `core/v1`) is classified once, in the table `FIELDS` of \
         `node-shim/src/fields.rs`, and this page is generated from it. Tests fail when the table \
         misses a field of the Kubernetes types (for instance after a k8s-openapi upgrade), names a \
         field they do not have, or disagrees with this page. `fields::check` applies the table to a \
         pod: the refused fields it finds fail the pod, the ignored ones become Warning events.\n\n",
    );
    out.push_str("## Classes\n\n");
    for class in Class::ALL {
        let _ = writeln!(out, "- **{}**: {}", class.label(), class.meaning());
    }
    out.push_str(
        "\nA field counts as set when it is not null, not false, not an empty string or list, and \
         not an object with nothing set (`hostUsers` counts only when false, its default being \
         true). Unset fields are never reported.\n\n\
         The ACI, ECI and Fargate columns say what `provider-aci`, `provider-eci` and \
         `provider-fargate` (each in `src/plan.rs`) do with a carried field: the \
         cloud field it becomes, \"warning\" when the provider drops it with a warning event, \"not \
         mapped\" or \"not used\" when it drops it silently (or it needs nothing), \"refused\" when the \
         pod is rejected, \"checked\" when the provider verifies it.\n\n",
    );
    out.push_str("## Summary\n\n| Type |");
    for class in Class::ALL {
        let _ = write!(out, " {} |", class.label());
    }
    out.push_str(" Total |\n|---|");
    out.push_str(&"---:|".repeat(Class::ALL.len() + 1));
    out.push('\n');
    for owner in Owner::ALL {
        let _ = write!(out, "| `{}` |", owner.type_name());
        for class in Class::ALL {
            let n = FIELDS
                .iter()
                .filter(|f| f.owner == owner && f.class == class)
                .count();
            let _ = write!(out, " {n} |");
        }
        let total = FIELDS.iter().filter(|f| f.owner == owner).count();
        let _ = writeln!(out, " {total} |");
    }
    for owner in Owner::ALL {
        let _ = writeln!(
            out,
            "\n## `{}`\n\nAt `{}`.\n",
            owner.type_name(),
            owner.path()
        );
        out.push_str("| Field | Class | Note | ACI | ECI | Fargate |\n|---|---|---|---|---|---|\n");
        for f in FIELDS.iter().filter(|f| f.owner == owner) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                f.name,
                f.class.label(),
                cell(f.note),
                cell(f.aci),
                cell(f.eci),
                cell(f.fargate)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::api::core::v1 as k8s;
    use serde::de::{self, DeserializeOwned, Visitor};
    use serde_json::json;

    use super::*;

    /// A deserializer that only records the field list a `Deserialize` impl passes to
    /// `deserialize_struct` (k8s-openapi passes all of its fields there) and then gives up.
    struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> de::Deserializer<'de> for FieldNames<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs are recorded"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(de::Error::custom("recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    fn names_of<T: DeserializeOwned>() -> BTreeSet<&'static str> {
        let mut fields = None;
        let _ = T::deserialize(FieldNames(&mut fields));
        fields
            .expect("the type deserializes as a struct")
            .iter()
            .copied()
            .collect()
    }

    fn real_fields(owner: Owner) -> BTreeSet<&'static str> {
        match owner {
            Owner::PodSpec => names_of::<k8s::PodSpec>(),
            Owner::Container => names_of::<k8s::Container>(),
            Owner::PodSecurityContext => names_of::<k8s::PodSecurityContext>(),
            Owner::SecurityContext => names_of::<k8s::SecurityContext>(),
        }
    }

    fn table_fields(owner: Owner) -> Vec<&'static str> {
        FIELDS
            .iter()
            .filter(|f| f.owner == owner)
            .map(|f| f.name)
            .collect()
    }

    #[test]
    fn the_table_names_every_field_of_the_kubernetes_types_and_no_other() {
        let mut problems = Vec::new();
        for owner in Owner::ALL {
            let real = real_fields(owner);
            let listed = table_fields(owner);
            let listed_set: BTreeSet<&str> = listed.iter().copied().collect();
            let missing: Vec<_> = real.difference(&listed_set).collect();
            let unknown: Vec<_> = listed_set.difference(&real).collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "{} fields missing from FIELDS: {missing:?}",
                    owner.type_name()
                ));
            }
            if !unknown.is_empty() {
                problems.push(format!(
                    "FIELDS names {} fields that do not exist: {unknown:?}",
                    owner.type_name()
                ));
            }
            if listed.len() != listed_set.len() {
                problems.push(format!("{} has duplicate entries", owner.type_name()));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn only_carried_fields_have_provider_columns() {
        for f in FIELDS {
            let columns = [f.aci, f.eci, f.fargate];
            if f.class == Class::Carried {
                assert!(columns.iter().all(|c| !c.is_empty() && *c != NONE), "{f:?}");
            } else {
                assert!(columns.iter().all(|c| *c == NONE), "{f:?}");
            }
            assert!(!f.note.is_empty(), "{f:?}");
        }
    }

    fn container(name: &str, restart_policy: &str) -> Value {
        let probe = json!({"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5});
        json!({
            "args": ["--port", "$(PORT)"],
            "command": ["/bin/server"],
            "env": [{"name": "PORT", "value": "8080"}],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "APP_"}],
            "image": "registry.example.com/app:1",
            "imagePullPolicy": "Always",
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
            "livenessProbe": probe,
            "name": name,
            "ports": [{"containerPort": 8080, "name": "http"}],
            "readinessProbe": probe,
            "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
            "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
            "restartPolicy": restart_policy,
            "restartPolicyRules": [{"action": "Restart",
                "exitCodes": {"operator": "In", "values": [42]}}],
            "securityContext": {
                "allowPrivilegeEscalation": true,
                "appArmorProfile": {"type": "RuntimeDefault"},
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                "privileged": true,
                "procMount": "Unmasked",
                "readOnlyRootFilesystem": true,
                "runAsGroup": 3000,
                "runAsNonRoot": true,
                "runAsUser": 1000,
                "seLinuxOptions": {"level": "s0:c123,c456"},
                "seccompProfile": {"type": "RuntimeDefault"},
                "windowsOptions": {"runAsUserName": "ContainerUser"},
            },
            "startupProbe": probe,
            "stdin": true,
            "stdinOnce": true,
            "terminationMessagePath": "/tmp/done",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "tty": true,
            "volumeDevices": [{"name": "raw", "devicePath": "/dev/xvda"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "workingDir": "/srv",
        })
    }

    /// Every field of the four types set to a non-default value (in parts: `json!` recurses per
    /// token, and the whole spec at once exceeds the compiler's recursion limit).
    fn kitchen_sink() -> Value {
        let mut spec = json!({
            "activeDeadlineSeconds": 600,
            "automountServiceAccountToken": true,
            "containers": [container("app", "Never")],
            "dnsConfig": {"nameservers": ["10.0.0.10"]},
            "dnsPolicy": "None",
            "enableServiceLinks": true,
            "ephemeralContainers": [{"name": "debugger", "image": "busybox",
                "targetContainerName": "app"}],
            "evictionResponders": [{"name": "example.com/drain", "priority": 10000}],
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["db"]}],
            "hostIPC": true,
            "hostNetwork": true,
            "hostPID": true,
            "hostUsers": false,
            "hostname": "web",
            "hostnameOverride": "web.example.com",
            "imagePullSecrets": [{"name": "registry"}],
            "initContainers": [container("sidecar", "Always")],
            "nodeName": "vk",
            "nodeSelector": {"type": "virtual-kubelet"},
            "os": {"name": "linux"},
            "overhead": {"cpu": "10m"},
        });
        let rest = json!({
            "preemptionPolicy": "Never",
            "priority": 1000,
            "priorityClassName": "high",
            "readinessGates": [{"conditionType": "example.com/ready"}],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu-claim"}],
            "resources": {"limits": {"cpu": "2"}},
            "restartPolicy": "OnFailure",
            "runtimeClassName": "kata",
            "schedulerName": "custom",
            "schedulingGates": [{"name": "example.com/wait"}],
            "schedulingGroup": {"podGroupName": "gang"},
            "serviceAccount": "app",
            "serviceAccountName": "app",
            "setHostnameAsFQDN": true,
            "shareProcessNamespace": true,
            "subdomain": "web",
            "terminationGracePeriodSeconds": 45,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                "whenUnsatisfiable": "DoNotSchedule"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        });
        spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions":
                [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]}]}}});
        spec["securityContext"] = json!({
            "appArmorProfile": {"type": "RuntimeDefault"},
            "fsGroup": 2000,
            "fsGroupChangePolicy": "OnRootMismatch",
            "runAsGroup": 3000,
            "runAsNonRoot": true,
            "runAsUser": 1000,
            "seLinuxChangePolicy": "Recursive",
            "seLinuxOptions": {"level": "s0:c123,c456"},
            "seccompProfile": {"type": "RuntimeDefault"},
            "supplementalGroups": [4000],
            "supplementalGroupsPolicy": "Strict",
            "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}],
            "windowsOptions": {"runAsUserName": "ContainerUser"},
        });
        if let (Some(spec), Value::Object(rest)) = (spec.as_object_mut(), rest) {
            spec.extend(rest);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "everything", "namespace": "default"},
            "spec": spec,
        })
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The objects of the fixture that each owner type describes.
    fn objects(spec: &Value) -> Vec<(Owner, &Value)> {
        let mut out = vec![
            (Owner::PodSpec, spec),
            (Owner::PodSecurityContext, &spec["securityContext"]),
        ];
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                out.push((Owner::Container, c));
                out.push((Owner::SecurityContext, &c["securityContext"]));
            }
        }
        out
    }

    #[test]
    fn the_kitchen_sink_pod_sets_every_field_and_gets_every_refusal_and_warning_once() {
        let fixture = kitchen_sink();
        let pod: k8s::Pod = serde_json::from_value(fixture.clone()).expect("a valid pod");
        let round_trip = serde_json::to_value(&pod).expect("serializes");
        let (spec, again) = (&fixture["spec"], &round_trip["spec"]);
        for ((owner, object), (_, kept)) in objects(spec).into_iter().zip(objects(again)) {
            let real: BTreeSet<String> = real_fields(owner).iter().map(|s| s.to_string()).collect();
            assert_eq!(
                keys(object),
                real,
                "the fixture's {owner:?} sets every field"
            );
            assert_eq!(
                keys(kept),
                real,
                "{owner:?} keeps every key through k8s-openapi"
            );
            for f in FIELDS.iter().filter(|f| f.owner == owner) {
                assert!(
                    counts(f, &kept[f.name]),
                    "{owner:?}.{} is non-default",
                    f.name
                );
            }
        }

        let verdict = check(&pod);
        let containers = ["spec.initContainers[sidecar]", "spec.containers[app]"];
        let mut expected: Vec<(Class, String)> = Vec::new();
        for f in FIELDS {
            let paths: Vec<String> = match f.owner {
                Owner::PodSpec => vec![format!("spec.{}", f.name)],
                Owner::PodSecurityContext => vec![format!("spec.securityContext.{}", f.name)],
                Owner::Container => containers
                    .iter()
                    .map(|c| format!("{c}.{}", f.name))
                    .collect(),
                Owner::SecurityContext => containers
                    .iter()
                    .map(|c| format!("{c}.securityContext.{}", f.name))
                    .collect(),
            };
            expected.extend(paths.into_iter().map(|p| (f.class, p)));
        }
        let occurrences = |messages: &[String], path: &str| {
            messages
                .iter()
                .filter(|m| m.starts_with(&format!("{path} ")))
                .count()
        };
        let ignored: Vec<String> = verdict.ignored.iter().map(|w| w.message.clone()).collect();
        for (class, path) in &expected {
            let (want_ignored, want_refused) = match class {
                Class::Ignored => (1, 0),
                Class::Refused => (0, 1),
                _ => (0, 0),
            };
            assert_eq!(
                occurrences(&ignored, path),
                want_ignored,
                "ignored {path}: {ignored:#?}"
            );
            assert_eq!(
                occurrences(&verdict.refused, path),
                want_refused,
                "refused {path}: {:#?}",
                verdict.refused
            );
        }
        let count = |c: Class| expected.iter().filter(|(class, _)| *class == c).count();
        assert_eq!(verdict.ignored.len(), count(Class::Ignored));
        let event = verdict
            .ignored_event()
            .expect("one event for all ignored fields");
        assert!(event.message.len() <= NOTE_LIMIT, "{}", event.message);
        assert!(
            event.message.contains("spec.shareProcessNamespace"),
            "{}",
            event.message
        );
        assert_eq!(verdict.refused.len(), count(Class::Refused));
        assert!(verdict.ignored.iter().all(|w| w.reason == IGNORED_REASON));
        assert!(ignored.contains(
            &"spec.shareProcessNamespace is not supported on a virtual node and is ignored".into()
        ));
        assert!(ignored.contains(
            &"spec.initContainers[sidecar].restartPolicy is not supported on a virtual node and is ignored"
                .into()
        ));
        assert!(
            verdict
                .refused
                .iter()
                .any(|m| m.starts_with("spec.hostNetwork is not supported on a virtual node: ")),
            "{:#?}",
            verdict.refused
        );
    }

    #[test]
    fn a_plain_pod_gets_nothing() {
        let pod: k8s::Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "containers": [{"name": "nginx", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}]}],
                "nodeSelector": {"type": "virtual-kubelet"},
                "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists",
                    "effect": "NoSchedule"}],
            },
        }))
        .expect("pod");
        assert_eq!(check(&pod), Verdict::default());
    }

    #[test]
    fn defaults_and_empty_values_are_not_reported() {
        let pod: k8s::Pod = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {
                "containers": [{"name": "app", "image": "app", "resizePolicy": [],
                    "volumeDevices": [], "restartPolicy": "",
                    "securityContext": {"procMount": "", "seLinuxOptions": {},
                        "windowsOptions": {"hostProcess": false}}}],
                "ephemeralContainers": [],
                "hostIPC": false,
                "hostNetwork": false,
                "hostPID": false,
                "hostUsers": true,
                "resourceClaims": [],
                "resources": {"limits": {}, "requests": {}},
                "securityContext": {"seLinuxOptions": {"user": ""}, "sysctls": []},
                "setHostnameAsFQDN": false,
                "shareProcessNamespace": false,
            },
        }))
        .expect("pod");
        assert_eq!(check(&pod), Verdict::default());
        assert_eq!(check(&k8s::Pod::default()), Verdict::default());
    }

    #[test]
    fn the_documentation_is_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/POD-FIELDS.md");
        let want = markdown();
        if std::env::var("UPDATE_POD_FIELDS").as_deref() == Ok("1") {
            std::fs::write(&path, &want).expect("writing docs/POD-FIELDS.md");
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/POD-FIELDS.md is not markdown()'s output; regenerate it with \
             UPDATE_POD_FIELDS=1 cargo test -p node-shim --lib fields"
        );
    }
}
