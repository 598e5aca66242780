//! Resolution: a Kubernetes Pod becomes the contract's self-contained `Pod`, with env values,
//! ConfigMap and Secret contents substituted, so the provider never talks to Kubernetes.
//!
//! Missing mandatory ConfigMaps/Secrets (or keys) are errors that keep the pod Pending; missing
//! optional ones are reported as warnings and skipped, as the kubelet does.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::SystemTime,
};

use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{self as k8s, ConfigMap, Secret, Service, ServiceAccount},
    },
};
use kube::{Api, Client, api::PostParams};
use podprovider_proto::v1 as pb;

use crate::quantity;

mod spec;

/// Why a pod cannot be resolved yet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A ConfigMap the pod needs does not exist (or lacks the key).
    #[error("{0}")]
    MandatoryConfigMapNotFound(String),
    /// A Secret the pod needs does not exist (or lacks the key).
    #[error("{0}")]
    MandatorySecretNotFound(String),
    /// The pod spec uses something this shim cannot resolve.
    #[error("{0}")]
    Invalid(String),
    /// Reading a ConfigMap or Secret, or requesting a service-account token, failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was read.
        what: String,
        /// Why it failed.
        source: kube::Error,
    },
}

impl Error {
    /// The Kubernetes Event reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MandatoryConfigMapNotFound(_) => "MandatoryConfigMapNotFound",
            Self::MandatorySecretNotFound(_) => "MandatorySecretNotFound",
            Self::Invalid(_) => "InvalidPodSpec",
            Self::Kube { .. } => "ResolveFailed",
        }
    }
}

/// A non-fatal problem to report as a Warning event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Event reason, e.g. `OptionalConfigMapNotFound`.
    pub reason: &'static str,
    /// Event message.
    pub message: String,
}

/// A resolved pod and the warnings met on the way.
#[derive(Debug)]
pub struct Resolved {
    /// The contract's pod.
    pub pod: pb::Pod,
    /// Optional sources that were missing.
    pub warnings: Vec<Warning>,
    /// The `resourceVersion` of every ConfigMap and Secret read (`None`: it did not exist), so a
    /// later change to one the pod mounts can be told apart from what the provider already has.
    pub source_versions: HashMap<SourceRef, Option<String>>,
}

/// A ConfigMap or Secret a pod refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRef {
    /// Which of the two.
    pub kind: Kind,
    /// Its namespace (the pod's).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The two Kubernetes objects pods take values from; they differ only in these respects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

type Data = BTreeMap<String, Vec<u8>>;

impl Kind {
    /// "ConfigMap" or "Secret".
    pub fn label(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }

    /// Secret values must travel flagged so providers use the cloud's secure fields.
    fn sensitive(self) -> bool {
        self == Self::Secret
    }

    fn optional_reason(self) -> &'static str {
        match self {
            Self::ConfigMap => "OptionalConfigMapNotFound",
            Self::Secret => "OptionalSecretNotFound",
        }
    }

    fn missing(self, message: String) -> Error {
        match self {
            Self::ConfigMap => Error::MandatoryConfigMapNotFound(message),
            Self::Secret => Error::MandatorySecretNotFound(message),
        }
    }
}

/// Reads ConfigMaps and Secrets once per resolution.
struct Sources {
    client: Client,
    namespace: String,
    cache: HashMap<(Kind, String), Option<Data>>,
    versions: HashMap<SourceRef, Option<String>>,
}

impl Sources {
    fn describe(&self, kind: Kind, name: &str) -> String {
        format!("{} {}/{name}", kind.label(), self.namespace)
    }

    async fn get(&mut self, kind: Kind, name: &str) -> Result<Option<&Data>, Error> {
        let key = (kind, name.to_owned());
        if !self.cache.contains_key(&key) {
            let what = format!("reading {}", self.describe(kind, name));
            let fail = |source| Error::Kube { what, source };
            let ns = &self.namespace;
            let (data, version) = match kind {
                Kind::ConfigMap => {
                    let cm = Api::<ConfigMap>::namespaced(self.client.clone(), ns)
                        .get_opt(name)
                        .await
                        .map_err(fail)?;
                    let version = cm
                        .as_ref()
                        .and_then(|o| o.metadata.resource_version.clone());
                    (
                        cm.map(|cm| {
                            let text = cm
                                .data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.into_bytes()));
                            let binary = cm
                                .binary_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, ByteString(v))| (k, v));
                            text.chain(binary).collect()
                        }),
                        version,
                    )
                }
                Kind::Secret => {
                    let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
                        .get_opt(name)
                        .await
                        .map_err(fail)?;
                    let version = secret
                        .as_ref()
                        .and_then(|o| o.metadata.resource_version.clone());
                    (
                        secret.map(|s| {
                            let data = s
                                .data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, ByteString(v))| (k, v));
                            let text = s
                                .string_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.into_bytes()));
                            data.chain(text).collect()
                        }),
                        version,
                    )
                }
            };
            let source = SourceRef {
                kind,
                namespace: ns.clone(),
                name: name.to_owned(),
            };
            self.versions.insert(source, version);
            self.cache.insert(key.clone(), data);
        }
        Ok(self.cache.get(&key).and_then(Option::as_ref))
    }

    /// The object's data; a missing optional object is a warning and `None`, a missing mandatory
    /// one an error. `what` says who refers to it, e.g. "env X of container c".
    async fn lookup(
        &mut self,
        kind: Kind,
        name: &str,
        optional: bool,
        what: &str,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<Data>, Error> {
        let described = self.describe(kind, name);
        match self.get(kind, name).await?.cloned() {
            Some(data) => Ok(Some(data)),
            None if optional => {
                warnings.push(Warning {
                    reason: kind.optional_reason(),
                    message: format!("optional {described} ({what}) was not found"),
                });
                Ok(None)
            }
            None => Err(kind.missing(format!("{described} ({what}) not found"))),
        }
    }
}

/// Resolves `pod`, bound to this node whose address is `host_ip`; `services` are the cluster's
/// Services, for the service-link environment variables.
pub async fn resolve(
    client: &Client,
    pod: &k8s::Pod,
    host_ip: &str,
    services: &[Arc<Service>],
) -> Result<Resolved, Error> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut sources = Sources {
        client: client.clone(),
        namespace: namespace.clone(),
        cache: HashMap::new(),
        versions: HashMap::new(),
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let mut warnings = Vec::new();
    let links = service_env(pod, services);
    let ctx = ContainerContext {
        pod,
        host_ip,
        service_env: &links,
    };

    let mut init_containers = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        init_containers.push(container(&mut sources, &ctx, c, &mut warnings).await?);
    }
    let mut containers = Vec::new();
    for c in &spec.containers {
        containers.push(container(&mut sources, &ctx, c, &mut warnings).await?);
    }
    let mut volumes = Vec::new();
    for v in spec.volumes.iter().flatten() {
        volumes.push(volume(&mut sources, pod, v, &mut warnings).await?);
    }

    let mut registry_credentials = Vec::new();
    for r in spec.image_pull_secrets.iter().flatten() {
        match sources.get(Kind::Secret, &r.name).await? {
            Some(data) => registry_credentials.extend(registry_credentials_from(data)),
            // As the kubelet: pulling may still work (public image), so warn and go on.
            None => warnings.push(Warning {
                reason: "FailedToRetrieveImagePullSecret",
                message: format!(
                    "image pull secret {ns}/{} was not found",
                    r.name,
                    ns = namespace
                ),
            }),
        }
    }

    let meta = &pod.metadata;
    let resolved = pb::Pod {
        pod_ref: Some(pod_ref(pod)),
        node_name: spec.node_name.clone().unwrap_or_default(),
        labels: meta
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        annotations: meta
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        init_containers,
        containers,
        volumes,
        restart_policy: match spec.restart_policy.as_deref() {
            Some("OnFailure") => pb::RestartPolicy::OnFailure,
            Some("Never") => pb::RestartPolicy::Never,
            _ => pb::RestartPolicy::Always,
        } as i32,
        termination_grace_period_seconds: spec.termination_grace_period_seconds,
        active_deadline_seconds: spec.active_deadline_seconds,
        dns_policy: spec.dns_policy.clone().unwrap_or_default(),
        dns_config: spec.dns_config.as_ref().map(|d| pb::DnsConfig {
            nameservers: d.nameservers.clone().unwrap_or_default(),
            searches: d.searches.clone().unwrap_or_default(),
            options: d
                .options
                .iter()
                .flatten()
                .map(|o| pb::DnsOption {
                    name: o.name.clone().unwrap_or_default(),
                    value: o.value.clone().unwrap_or_default(),
                })
                .collect(),
        }),
        host_aliases: spec
            .host_aliases
            .iter()
            .flatten()
            .map(|h| pb::HostAlias {
                ip: h.ip.clone(),
                hostnames: h.hostnames.clone().unwrap_or_default(),
            })
            .collect(),
        hostname: spec
            .hostname
            .clone()
            .unwrap_or_else(|| meta.name.clone().unwrap_or_default()),
        subdomain: spec.subdomain.clone().unwrap_or_default(),
        registry_credentials,
        security_context: spec::pod_security_context(spec.security_context.as_ref()),
        os: spec
            .os
            .as_ref()
            .map(|o| o.name.clone())
            .unwrap_or_else(|| "linux".into()),
        service_account_name: spec.service_account_name.clone().unwrap_or_default(),
        creation_time: meta
            .creation_timestamp
            .as_ref()
            .map(|t| prost_timestamp(t.0)),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        readiness_gates: spec
            .readiness_gates
            .iter()
            .flatten()
            .map(|g| g.condition_type.clone())
            .collect(),
    };
    Ok(Resolved {
        pod: resolved,
        warnings,
        source_versions: sources.versions,
    })
}

/// The ConfigMaps and Secrets whose contents a running pod follows, as with the kubelet: those of
/// configMap, secret and projected volumes mounted at least once without `subPath` (a `subPath`
/// mount is a copy taken at start; env values never change either).
pub fn live_sources(pod: &k8s::Pod) -> Vec<SourceRef> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let live = |volume: &str| {
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .any(|m| m.name == volume && m.sub_path.as_deref().unwrap_or_default().is_empty())
    };
    let mut out = std::collections::BTreeSet::new();
    for v in spec.volumes.iter().flatten().filter(|v| live(&v.name)) {
        let mut add = |kind, name: &str| {
            out.insert(SourceRef {
                kind,
                namespace: namespace.clone(),
                name: name.to_owned(),
            });
        };
        if let Some(cm) = &v.config_map {
            add(Kind::ConfigMap, &cm.name);
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            add(Kind::Secret, name);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &p.config_map {
                add(Kind::ConfigMap, &cm.name);
            }
            if let Some(sv) = &p.secret {
                add(Kind::Secret, &sv.name);
            }
        }
    }
    out.into_iter().collect()
}

/// Registry credentials from a `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`) or
/// `kubernetes.io/dockercfg` (`.dockercfg`) Secret's data; entries without usable credentials are
/// skipped. Malformed JSON yields nothing (the pull may still work for public images).
pub fn registry_credentials_from(data: &BTreeMap<String, Vec<u8>>) -> Vec<pb::RegistryCredential> {
    use base64::Engine;
    let auths = if let Some(raw) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<serde_json::Value>(raw)
            .ok()
            .and_then(|v| v.get("auths").cloned())
    } else if let Some(raw) = data.get(".dockercfg") {
        serde_json::from_slice::<serde_json::Value>(raw).ok()
    } else {
        None
    };
    let Some(serde_json::Value::Object(auths)) = auths else {
        return Vec::new();
    };
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    auths
        .iter()
        .filter_map(|(server, entry)| {
            let (mut username, mut password) = (field(entry, "username"), field(entry, "password"));
            if username.is_empty() {
                // `auth` is base64("user:password").
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(field(entry, "auth"))
                    .ok()?;
                let text = String::from_utf8(decoded).ok()?;
                let (u, p) = text.split_once(':')?;
                (username, password) = (u.to_owned(), p.to_owned());
            }
            let identity_token = field(entry, "identitytoken");
            (!username.is_empty() || !identity_token.is_empty()).then(|| pb::RegistryCredential {
                server: server.clone(),
                username,
                password,
                identity_token,
            })
        })
        .collect()
}

/// The contract's identity of a Kubernetes pod.
pub fn pod_ref(pod: &k8s::Pod) -> pb::PodRef {
    pb::PodRef {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

fn prost_timestamp(t: k8s_openapi::jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

/// What every container of one pod resolves against.
struct ContainerContext<'a> {
    pod: &'a k8s::Pod,
    host_ip: &'a str,
    service_env: &'a [(String, String)],
}

async fn container(
    sources: &mut Sources,
    ctx: &ContainerContext<'_>,
    c: &k8s::Container,
    warnings: &mut Vec<Warning>,
) -> Result<pb::Container, Error> {
    let env = env(sources, ctx, c, warnings).await?;
    let lookup: HashMap<&str, &str> = env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    let is_sensitive = |name: &str| env.iter().any(|e| e.name == name && e.sensitive);
    let expand_all = |v: &Option<Vec<String>>| -> (Vec<String>, bool) {
        let mut sensitive = false;
        let out = v
            .iter()
            .flatten()
            .map(|s| {
                let (value, secret) = expand_tracked(s, &lookup, is_sensitive);
                sensitive |= secret;
                value
            })
            .collect();
        (out, sensitive)
    };
    let (command, command_sensitive) = expand_all(&c.command);
    let (args, args_sensitive) = expand_all(&c.args);
    Ok(pb::Container {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_pull_policy: match c.image_pull_policy.as_deref() {
            Some("Always") => pb::ImagePullPolicy::Always,
            Some("Never") => pb::ImagePullPolicy::Never,
            _ => pb::ImagePullPolicy::IfNotPresent,
        } as i32,
        command,
        args,
        command_sensitive,
        args_sensitive,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        ports: c
            .ports
            .iter()
            .flatten()
            .map(|p| pb::ContainerPort {
                name: p.name.clone().unwrap_or_default(),
                container_port: p.container_port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
            .collect(),
        resources: c.resources.as_ref().map(|r| pb::ResourceRequirements {
            requests: r.requests.as_ref().map(resources),
            limits: r.limits.as_ref().map(resources),
        }),
        volume_mounts: c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| pb::VolumeMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                sub_path: m.sub_path.clone().unwrap_or_default(),
                read_only: m.read_only.unwrap_or(false),
            })
            .collect(),
        liveness_probe: spec::probe(c, c.liveness_probe.as_ref(), "livenessProbe")?,
        readiness_probe: spec::probe(c, c.readiness_probe.as_ref(), "readinessProbe")?,
        startup_probe: spec::probe(c, c.startup_probe.as_ref(), "startupProbe")?,
        lifecycle: spec::lifecycle(c)?,
        security_context: spec::security_context(c.security_context.as_ref()),
        env,
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        termination_message_policy: c
            .termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
        termination_message_path: c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into()),
    })
}

fn resources(
    list: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> pb::Resources {
    let mut out = pb::Resources::default();
    for (name, q) in list {
        match name.as_str() {
            "cpu" => out.cpu_millis = quantity::to_millis(&q.0).ok(),
            "memory" => out.memory_bytes = quantity::to_units(&q.0).ok(),
            "ephemeral-storage" => out.ephemeral_storage_bytes = quantity::to_units(&q.0).ok(),
            "nvidia.com/gpu" => out.nvidia_gpu = quantity::to_units(&q.0).ok(),
            other => {
                out.other.insert(other.to_owned(), q.0.clone());
            }
        }
    }
    out
}

/// `$(VAR)` expansion as Kubernetes does it: defined variables are substituted, `$$` escapes a
/// dollar, and references to undefined variables are left as written.
pub fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    expand_tracked(input, vars, |_| false).0
}

/// [`expand`], also telling whether any substituted variable is one `is_sensitive` names: a value
/// built from a Secret's value is as secret as the Secret.
pub fn expand_tracked(
    input: &str,
    vars: &HashMap<&str, &str>,
    is_sensitive: impl Fn(&str) -> bool,
) -> (String, bool) {
    let mut sensitive = false;
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => {
                            sensitive |= is_sensitive(name);
                            out.push_str(value);
                        }
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    (out, sensitive)
}

fn push_env(env: &mut Vec<pb::EnvVar>, name: String, value: String, sensitive: bool) {
    push_var(
        env,
        pb::EnvVar {
            name,
            value,
            sensitive,
            pod_field: String::new(),
        },
    );
}

fn push_var(env: &mut Vec<pb::EnvVar>, var: pb::EnvVar) {
    // Later definitions win, as in Kubernetes; keep the first position for stable ordering.
    if let Some(existing) = env.iter_mut().find(|e| e.name == var.name) {
        *existing = var;
    } else {
        env.push(var);
    }
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn env(
    sources: &mut Sources,
    ctx: &ContainerContext<'_>,
    c: &k8s::Container,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<pb::EnvVar>, Error> {
    let (pod, host_ip) = (ctx.pod, ctx.host_ip);
    let mut env: Vec<pb::EnvVar> = Vec::new();

    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let refs = [
            from.config_map_ref
                .as_ref()
                .map(|r| (Kind::ConfigMap, &r.name, r.optional)),
            from.secret_ref
                .as_ref()
                .map(|r| (Kind::Secret, &r.name, r.optional)),
        ];
        for (kind, name, optional) in refs.into_iter().flatten() {
            let what = format!("envFrom of container {}", c.name);
            let data = sources
                .lookup(kind, name, optional.unwrap_or(false), &what, warnings)
                .await?;
            for (k, v) in data.into_iter().flatten() {
                push_env(&mut env, format!("{prefix}{k}"), utf8(&v), kind.sensitive());
            }
        }
    }

    for var in c.env.iter().flatten() {
        let Some(source) = &var.value_from else {
            // As the kubelet: the container's own variables first, then the service links.
            let links = ctx
                .service_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()));
            let own = env.iter().map(|e| (e.name.as_str(), e.value.as_str()));
            let vars: HashMap<&str, &str> = links.chain(own).collect();
            let (value, sensitive) =
                expand_tracked(var.value.as_deref().unwrap_or_default(), &vars, |name| {
                    env.iter().any(|e| e.name == name && e.sensitive)
                });
            push_env(&mut env, var.name.clone(), value, sensitive);
            continue;
        };
        let key_ref = source
            .config_map_key_ref
            .as_ref()
            .map(|r| (Kind::ConfigMap, &r.name, &r.key, r.optional))
            .or_else(|| {
                source
                    .secret_key_ref
                    .as_ref()
                    .map(|r| (Kind::Secret, &r.name, &r.key, r.optional))
            });
        if let Some((kind, name, key, optional)) = key_ref {
            let optional = optional.unwrap_or(false);
            let what = format!("env {} of container {}", var.name, c.name);
            let Some(data) = sources
                .lookup(kind, name, optional, &what, warnings)
                .await?
            else {
                continue;
            };
            match data.get(key) {
                Some(v) => push_env(&mut env, var.name.clone(), utf8(v), kind.sensitive()),
                None if optional => warnings.push(Warning {
                    reason: kind.optional_reason(),
                    message: format!(
                        "key {key} not found in optional {} ({what})",
                        sources.describe(kind, name)
                    ),
                }),
                None => {
                    return Err(kind.missing(format!(
                        "key {key} not found in {} ({what})",
                        sources.describe(kind, name)
                    )));
                }
            }
        } else if let Some(f) = &source.field_ref {
            let path = f.field_path.as_str();
            // The cloud assigns the pod IP only once it places the pod: the provider fills it in.
            let pod_field = if matches!(path, "status.podIP" | "status.podIPs") {
                path.to_owned()
            } else {
                String::new()
            };
            push_var(
                &mut env,
                pb::EnvVar {
                    name: var.name.clone(),
                    value: field_value(pod, path, host_ip)?,
                    sensitive: false,
                    pod_field,
                },
            );
        } else if let Some(r) = &source.resource_field_ref {
            push_env(
                &mut env,
                var.name.clone(),
                resource_field_value(pod, c, r)?,
                false,
            );
        }
    }
    for (name, value) in ctx.service_env {
        if !env.iter().any(|e| &e.name == name) {
            push_env(&mut env, name.clone(), value.clone(), false);
        }
    }
    Ok(env)
}

/// The service-link variables the kubelet injects: those of the `kubernetes` Service in `default`
/// always, and of every Service in the pod's namespace unless `enableServiceLinks` is false.
/// Services without a cluster IP are skipped. Ordered by Service name.
pub fn service_env(pod: &k8s::Pod, services: &[Arc<Service>]) -> Vec<(String, String)> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    let is = |s: &Service, ns: &str| s.metadata.namespace.as_deref() == Some(ns);
    for s in services {
        if is(s, "default") && s.metadata.name.as_deref() == Some("kubernetes") {
            chosen.entry("kubernetes").or_insert(s);
        }
    }
    if links {
        for s in services.iter().filter(|s| is(s, namespace)) {
            // A namespace's own Service wins over the master Service of the same name.
            chosen.insert(s.metadata.name.as_deref().unwrap_or_default(), s);
        }
    }
    let mut out = Vec::new();
    for (name, s) in chosen {
        let Some(spec) = &s.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" || ports.is_empty() {
            continue;
        }
        let prefix = name.to_uppercase().replace('-', "_");
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
        out.push((format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string()));
        for p in ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let port_name = port_name.to_uppercase().replace('-', "_");
                out.push((
                    format!("{prefix}_SERVICE_PORT_{port_name}"),
                    p.port.to_string(),
                ));
            }
        }
        // Docker link variables.
        let host_port = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let (lower, upper) = (proto.to_lowercase(), proto.to_uppercase());
            let url = format!("{lower}://{host_port}:{}", p.port);
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{upper}", p.port);
            out.push((format!("{port_prefix}_PROTO"), lower));
            out.push((format!("{port_prefix}_PORT"), p.port.to_string()));
            out.push((format!("{port_prefix}_ADDR"), ip.to_owned()));
            out.push((port_prefix, url));
        }
    }
    out
}

/// The downward API's `fieldRef` paths.
pub fn field_value(pod: &k8s::Pod, path: &str, host_ip: &str) -> Result<String, Error> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_owned)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        // The cloud assigns the pod IP after the create; it is not known yet.
        "status.podIP" | "status.podIPs" => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        _ => {
            if let Some(k) = map_key("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(Error::Invalid(format!(
                    "unsupported fieldRef path {path:?}"
                )));
            }
        }
    })
}

/// The downward API's `resourceFieldRef`: the container's limit (or request), divided by the
/// divisor and rounded up; CPU limits default to 1 core per container when unset.
pub fn resource_field_value(
    pod: &k8s::Pod,
    c: &k8s::Container,
    r: &k8s::ResourceFieldSelector,
) -> Result<String, Error> {
    let container = match r.container_name.as_deref() {
        Some(name) if !name.is_empty() && name != c.name => named_container(pod, name)?,
        _ => c,
    };
    let (kind, resource) = r
        .resource
        .split_once('.')
        .ok_or_else(|| Error::Invalid(format!("unsupported resourceFieldRef {:?}", r.resource)))?;
    let res = container.resources.as_ref();
    let list = match kind {
        "limits" => res.and_then(|x| x.limits.as_ref()),
        "requests" => res.and_then(|x| x.requests.as_ref()),
        _ => {
            return Err(Error::Invalid(format!(
                "unsupported resourceFieldRef {:?}",
                r.resource
            )));
        }
    };
    let is_cpu = resource == "cpu";
    let default = if is_cpu { "1" } else { "0" };
    let raw = list
        .and_then(|l| l.get(resource))
        .map_or(default, |q| q.0.as_str());
    let divisor = r.divisor.as_ref().map_or("1", |d| d.0.as_str());
    let bad = |e: quantity::InvalidQuantity| {
        Error::Invalid(format!("resourceFieldRef {}: {e}", r.resource))
    };
    let (value, div) = if is_cpu {
        (
            quantity::to_millis(raw).map_err(bad)?,
            quantity::to_millis(divisor).map_err(bad)?,
        )
    } else {
        (
            quantity::to_units(raw).map_err(bad)?,
            quantity::to_units(divisor).map_err(bad)?,
        )
    };
    if div <= 0 {
        return Err(Error::Invalid(format!(
            "resourceFieldRef {} has divisor {divisor}",
            r.resource
        )));
    }
    Ok(((value + div - 1) / div).to_string())
}

async fn volume(
    sources: &mut Sources,
    pod: &k8s::Pod,
    v: &k8s::Volume,
    warnings: &mut Vec<Warning>,
) -> Result<pb::Volume, Error> {
    use pb::volume::Source;
    let what = format!("volume {}", v.name);
    let files = |source: pb::FilesSource, files, default_mode, token_expiration| {
        Source::Files(pb::FilesVolume {
            source: source as i32,
            files,
            default_mode,
            token_expiration,
        })
    };
    let source = if let Some(e) = &v.empty_dir {
        Source::EmptyDir(pb::EmptyDirVolume {
            medium: e.medium.clone().unwrap_or_default(),
            size_limit_bytes: e
                .size_limit
                .as_ref()
                .and_then(|q| quantity::to_units(&q.0).ok()),
        })
    } else if let Some(cm) = &v.config_map {
        let key_source = (
            Kind::ConfigMap,
            cm.name.as_str(),
            cm.items.as_deref(),
            cm.optional,
        );
        let entries = key_files(sources, key_source, &what, warnings).await?;
        files(pb::FilesSource::ConfigMap, entries, cm.default_mode, None)
    } else if let Some(sv) = &v.secret {
        let name = sv.secret_name.as_deref().unwrap_or_default();
        let key_source = (Kind::Secret, name, sv.items.as_deref(), sv.optional);
        let entries = key_files(sources, key_source, &what, warnings).await?;
        files(pb::FilesSource::Secret, entries, sv.default_mode, None)
    } else if let Some(d) = &v.downward_api {
        let entries = downward_files(pod, d.items.as_deref().unwrap_or_default())?;
        files(pb::FilesSource::DownwardApi, entries, d.default_mode, None)
    } else if let Some(p) = &v.projected {
        let (entries, expiry) = projected_files(sources, pod, p, &what, warnings).await?;
        let expiry = expiry.map(prost_types::Timestamp::from);
        files(pb::FilesSource::Projected, entries, p.default_mode, expiry)
    } else if let Some(n) = &v.nfs {
        Source::Nfs(pb::NfsVolume {
            server: n.server.clone(),
            path: n.path.clone(),
            read_only: n.read_only.unwrap_or(false),
        })
    } else if let Some(a) = &v.azure_file {
        let data = sources
            .lookup(Kind::Secret, &a.secret_name, false, &what, warnings)
            .await?
            .unwrap_or_default();
        let field = |key: &str| {
            data.get(key).map(|v| utf8(v)).ok_or_else(|| {
                Error::MandatorySecretNotFound(format!(
                    "key {key} not found in {} ({what})",
                    sources.describe(Kind::Secret, &a.secret_name)
                ))
            })
        };
        Source::AzureFile(pb::AzureFileVolume {
            share_name: a.share_name.clone(),
            storage_account_name: field("azurestorageaccountname")?,
            storage_account_key: field("azurestorageaccountkey")?,
            read_only: a.read_only.unwrap_or(false),
        })
    } else if let Some(g) = &v.git_repo {
        Source::GitRepo(pb::GitRepoVolume {
            repository: g.repository.clone(),
            revision: g.revision.clone().unwrap_or_default(),
            directory: g.directory.clone().unwrap_or_default(),
        })
    } else {
        Source::Unsupported(pb::UnsupportedVolume {
            kind: volume_kind(v).to_owned(),
        })
    };
    Ok(pb::Volume {
        name: v.name.clone(),
        source: Some(source),
    })
}

/// A ConfigMap or Secret as files: `(kind, name, items, optional)`.
type KeySource<'a> = (Kind, &'a str, Option<&'a [k8s::KeyToPath]>, Option<bool>);

/// A ConfigMap's or Secret's files: all keys, or the listed `items` (a missing listed key is an
/// error naming it). A missing optional object gives no files.
async fn key_files(
    sources: &mut Sources,
    (kind, name, items, optional): KeySource<'_>,
    what: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<pb::FileEntry>, Error> {
    let data = sources
        .lookup(kind, name, optional.unwrap_or(false), what, warnings)
        .await?;
    let sensitive = kind.sensitive();
    Ok(match (data, items) {
        (None, _) => Vec::new(),
        (Some(data), Some(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                let content = data.get(&item.key).ok_or_else(|| {
                    kind.missing(format!(
                        "key {} not found in {} ({what})",
                        item.key,
                        sources.describe(kind, name)
                    ))
                })?;
                Ok(pb::FileEntry {
                    path: item.path.clone(),
                    content: content.clone(),
                    mode: item.mode,
                    sensitive,
                })
            })
            .collect::<Result<_, Error>>()?,
        (Some(data), _) => data
            .into_iter()
            .map(|(path, content)| pb::FileEntry {
                path,
                content,
                mode: None,
                sensitive,
            })
            .collect(),
    })
}

/// A downwardAPI volume's files. Whole label and annotation maps are written as the kubelet
/// writes them: sorted `key="value"` lines.
fn downward_files(
    pod: &k8s::Pod,
    items: &[k8s::DownwardAPIVolumeFile],
) -> Result<Vec<pb::FileEntry>, Error> {
    items
        .iter()
        .map(|item| {
            let content = if let Some(f) = &item.field_ref {
                let meta = &pod.metadata;
                match f.field_path.as_str() {
                    "metadata.labels" => format_map(meta.labels.as_ref()),
                    "metadata.annotations" => format_map(meta.annotations.as_ref()),
                    // Status fields are not known before the cloud starts the pod.
                    path if path.starts_with("status.") || path.starts_with("spec.") => {
                        return Err(Error::Invalid(format!(
                            "downwardAPI volume file {}: fieldRef {path:?} is only supported in env",
                            item.path
                        )));
                    }
                    path => field_value(pod, path, "")?,
                }
            } else if let Some(r) = &item.resource_field_ref {
                let name = r.container_name.as_deref().unwrap_or_default();
                let c = named_container(pod, name)?;
                resource_field_value(pod, c, r)?
            } else {
                return Err(Error::Invalid(format!(
                    "downwardAPI volume file {} has neither fieldRef nor resourceFieldRef",
                    item.path
                )));
            };
            Ok(pb::FileEntry {
                path: item.path.clone(),
                content: content.into_bytes(),
                mode: item.mode,
                sensitive: false,
            })
        })
        .collect()
}

/// `key="value"` lines, sorted, with Go's `%q` quoting (the kubelet's `fieldpath.FormatMap`).
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let n = u32::from(c);
                if n < 0x80 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn named_container<'a>(pod: &'a k8s::Pod, name: &str) -> Result<&'a k8s::Container, Error> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .ok_or_else(|| Error::Invalid(format!("resourceFieldRef names unknown container {name:?}")))
}

/// A projected volume's files, and the earliest expiry of its service-account tokens.
async fn projected_files(
    sources: &mut Sources,
    pod: &k8s::Pod,
    p: &k8s::ProjectedVolumeSource,
    what: &str,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<pb::FileEntry>, Option<SystemTime>), Error> {
    let mut files = Vec::new();
    let mut expiry: Option<SystemTime> = None;
    for source in p.sources.iter().flatten() {
        if let Some(cm) = &source.config_map {
            let key_source = (
                Kind::ConfigMap,
                cm.name.as_str(),
                cm.items.as_deref(),
                cm.optional,
            );
            files.extend(key_files(sources, key_source, what, warnings).await?);
        }
        if let Some(sv) = &source.secret {
            let key_source = (
                Kind::Secret,
                sv.name.as_str(),
                sv.items.as_deref(),
                sv.optional,
            );
            files.extend(key_files(sources, key_source, what, warnings).await?);
        }
        if let Some(d) = &source.downward_api {
            files.extend(downward_files(pod, d.items.as_deref().unwrap_or_default())?);
        }
        if let Some(t) = &source.service_account_token {
            let (token, expires) = service_account_token(sources, pod, t).await?;
            expiry = Some(expiry.map_or(expires, |e| e.min(expires)));
            files.push(pb::FileEntry {
                path: t.path.clone(),
                content: token.into_bytes(),
                mode: None,
                sensitive: true,
            });
        }
    }
    Ok((files, expiry))
}

/// A token for the pod's service account, bound to the pod, through the TokenRequest API (as the
/// kubelet gets them), and when it expires.
async fn service_account_token(
    sources: &Sources,
    pod: &k8s::Pod,
    t: &k8s::ServiceAccountTokenProjection,
) -> Result<(String, SystemTime), Error> {
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let audiences: Vec<String> = t
        .audience
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // None means the API server's own audiences, as for the kubelet.
            audiences: (!audiences.is_empty()).then_some(audiences),
            expiration_seconds: Some(t.expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let what = || format!("service account {}/{account}", sources.namespace);
    let api: Api<ServiceAccount> = Api::namespaced(sources.client.clone(), &sources.namespace);
    let issued = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|source| Error::Kube {
            what: format!("requesting a token for {}", what()),
            source,
        })?;
    let status = issued.status.unwrap_or_default();
    match (status.token, status.expiration_timestamp) {
        (Some(token), Some(expires)) => Ok((token, SystemTime::from(expires.0))),
        _ => Err(Error::Invalid(format!(
            "the API server returned no token for {}",
            what()
        ))),
    }
}

/// The earliest expiry of the service-account tokens in a resolved pod.
pub fn token_expiry(pod: &pb::Pod) -> Option<SystemTime> {
    pod.volumes
        .iter()
        .filter_map(|v| match &v.source {
            Some(pb::volume::Source::Files(f)) => f.token_expiration,
            _ => None,
        })
        .filter_map(|t| SystemTime::try_from(t).ok())
        .min()
}

fn volume_kind(v: &k8s::Volume) -> &'static str {
    if v.host_path.is_some() {
        "hostPath"
    } else if v.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if v.projected.is_some() {
        "projected"
    } else if v.downward_api.is_some() {
        "downwardAPI"
    } else if v.csi.is_some() {
        "csi"
    } else if v.azure_file.is_some() {
        "azureFile"
    } else if v.ephemeral.is_some() {
        "ephemeral"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars: HashMap<&str, &str> = [("A", "1"), ("B", "two")].into_iter().collect();
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$(MISSING)", &vars), "$(MISSING)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost: $5 $(A", &vars), "cost: $5 $(A");
        assert_eq!(expand("plain", &vars), "plain");
    }

    #[test]
    fn registry_credentials_from_docker_configs() {
        let json = br#"{"auths": {"reg.example.com": {"username": "u", "password": "p"},
            "other.io": {"auth": "YWxpY2U6czNjcjN0"}, "empty.io": {}}}"#;
        let data: BTreeMap<String, Vec<u8>> =
            [(".dockerconfigjson".to_owned(), json.to_vec())].into();
        let mut creds = registry_credentials_from(&data);
        creds.sort_by(|a, b| a.server.cmp(&b.server));
        let got: Vec<_> = creds
            .iter()
            .map(|c| (c.server.as_str(), c.username.as_str(), c.password.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("other.io", "alice", "s3cr3t"),
                ("reg.example.com", "u", "p")
            ]
        );
        let legacy: BTreeMap<String, Vec<u8>> = [(
            ".dockercfg".to_owned(),
            br#"{"r.io": {"username": "x", "password": "y"}}"#.to_vec(),
        )]
        .into();
        assert_eq!(registry_credentials_from(&legacy).len(), 1);
        let garbage: BTreeMap<String, Vec<u8>> =
            [(".dockerconfigjson".to_owned(), b"{".to_vec())].into();
        assert!(registry_credentials_from(&garbage).is_empty());
    }

    #[test]
    fn later_env_definitions_win() {
        let mut env = Vec::new();
        push_env(&mut env, "X".into(), "1".into(), true);
        push_env(&mut env, "Y".into(), "2".into(), false);
        push_env(&mut env, "X".into(), "3".into(), false);
        assert_eq!(env.len(), 2);
        assert_eq!((env[0].value.as_str(), env[0].sensitive), ("3", false));
    }

    #[test]
    fn resource_field_refs() {
        let pod: k8s::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "labels": {"app": "x"}},
            "spec": {"nodeName": "vk", "containers": [{"name": "c", "resources": {
                "limits": {"cpu": "1500m", "memory": "256Mi"}, "requests": {"cpu": "250m"}}}]}
        }))
        .expect("pod");
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let sel = |resource: &str, divisor: Option<&str>| k8s::ResourceFieldSelector {
            container_name: None,
            divisor: divisor
                .map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
            resource: resource.into(),
        };
        assert_eq!(
            resource_field_value(&pod, c, &sel("limits.cpu", None))
                .ok()
                .as_deref(),
            Some("2")
        );
        assert_eq!(
            resource_field_value(&pod, c, &sel("limits.cpu", Some("1m")))
                .ok()
                .as_deref(),
            Some("1500")
        );
        assert_eq!(
            resource_field_value(&pod, c, &sel("requests.cpu", Some("1m")))
                .ok()
                .as_deref(),
            Some("250")
        );
        assert_eq!(
            resource_field_value(&pod, c, &sel("limits.memory", Some("1Mi")))
                .ok()
                .as_deref(),
            Some("256")
        );
        assert_eq!(
            field_value(&pod, "metadata.labels['app']", "1.2.3.4")
                .ok()
                .as_deref(),
            Some("x")
        );
        assert_eq!(
            field_value(&pod, "status.hostIP", "1.2.3.4")
                .ok()
                .as_deref(),
            Some("1.2.3.4")
        );
        assert!(field_value(&pod, "spec.bogus", "").is_err());
    }

    fn service(namespace: &str, name: &str, ip: &str, ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"clusterIP": ip, "ports": ports}
            }))
            .expect("service"),
        )
    }

    fn pod_in(namespace: &str, links: Option<bool>) -> k8s::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"containers": [{"name": "c"}], "enableServiceLinks": links}
        }))
        .expect("pod")
    }

    #[test]
    fn service_links_match_the_kubelet() {
        let services = [
            service(
                "default",
                "kubernetes",
                "10.0.0.1",
                serde_json::json!([
                {"name": "https", "port": 443, "protocol": "TCP"}]),
            ),
            service(
                "shop",
                "my-svc",
                "10.0.0.11",
                serde_json::json!([
                {"name": "http", "port": 80}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
            ),
            service(
                "shop",
                "headless",
                "None",
                serde_json::json!([{"port": 80}]),
            ),
            service(
                "other",
                "elsewhere",
                "10.0.0.12",
                serde_json::json!([{"port": 81}]),
            ),
        ];
        let env: BTreeMap<String, String> = service_env(&pod_in("shop", None), &services)
            .into_iter()
            .collect();
        let expected: BTreeMap<String, String> = [
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.0.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.0.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.0.0.1"),
            ("MY_SVC_SERVICE_HOST", "10.0.0.11"),
            ("MY_SVC_SERVICE_PORT", "80"),
            ("MY_SVC_SERVICE_PORT_HTTP", "80"),
            ("MY_SVC_SERVICE_PORT_DNS_UDP", "53"),
            ("MY_SVC_PORT", "tcp://10.0.0.11:80"),
            ("MY_SVC_PORT_80_TCP", "tcp://10.0.0.11:80"),
            ("MY_SVC_PORT_80_TCP_PROTO", "tcp"),
            ("MY_SVC_PORT_80_TCP_PORT", "80"),
            ("MY_SVC_PORT_80_TCP_ADDR", "10.0.0.11"),
            ("MY_SVC_PORT_53_UDP", "udp://10.0.0.11:53"),
            ("MY_SVC_PORT_53_UDP_PROTO", "udp"),
            ("MY_SVC_PORT_53_UDP_PORT", "53"),
            ("MY_SVC_PORT_53_UDP_ADDR", "10.0.0.11"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(env, expected);

        // enableServiceLinks: false keeps only the master service.
        let env = service_env(&pod_in("shop", Some(false)), &services);
        assert!(
            env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")),
            "{env:?}"
        );
        assert_eq!(env.len(), 8);
    }

    #[tokio::test]
    async fn service_links_expand_but_never_override_own_env() {
        let services = [service(
            "default",
            "kubernetes",
            "10.0.0.1",
            serde_json::json!([
            {"port": 443}]),
        )];
        let pod = pod_in("default", None);
        let links = service_env(&pod, &services);
        let ctx = ContainerContext {
            pod: &pod,
            host_ip: "1.2.3.4",
            service_env: &links,
        };
        let c: k8s::Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "mine"},
                    {"name": "URL", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"}]
        }))
        .expect("container");
        // No ConfigMap or Secret is read, so an unreachable client is never used.
        let client = Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("url"),
        ))
        .expect("client");
        let mut sources = Sources {
            client,
            namespace: "default".into(),
            cache: HashMap::new(),
            versions: HashMap::new(),
        };
        let mut warnings = Vec::new();
        let env = env(&mut sources, &ctx, &c, &mut warnings)
            .await
            .expect("env");
        let get = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .map(|e| e.value.as_str())
        };
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("mine"));
        assert_eq!(get("URL"), Some("https://mine:443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.0.0.1:443"));
        assert_eq!(
            env.iter()
                .filter(|e| e.name == "KUBERNETES_SERVICE_HOST")
                .count(),
            1
        );
    }

    #[test]
    fn downward_api_files_as_the_kubelet_writes_them() {
        let pod: k8s::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u-1",
                "labels": {"tier": "web", "app": "shop"},
                "annotations": {"note": "say \"hi\"\n\tbye\\"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}
        }))
        .expect("pod");
        let items: Vec<k8s::DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}, "mode": 0o400},
            {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
        ]))
        .expect("items");
        let files = downward_files(&pod, &items).expect("files");
        let text = |i: usize| String::from_utf8(files[i].content.clone()).expect("utf8");
        assert_eq!(text(0), "app=\"shop\"\ntier=\"web\"");
        assert_eq!(text(1), r#"note="say \"hi\"\n\tbye\\""#);
        assert_eq!(files[1].mode, Some(0o400));
        assert_eq!(text(2), "u-1");
        assert_eq!(text(3), "64");
        assert!(files.iter().all(|f| !f.sensitive));

        let status: Vec<k8s::DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]))
        .expect("items");
        assert!(matches!(
            downward_files(&pod, &status),
            Err(Error::Invalid(_))
        ));
        assert_eq!(go_quote("\u{7f}é"), "\"\\x7fé\"");
    }
}

/// `$(VAR)` expansion of arbitrary strings and variable maps against a direct port of
/// Kubernetes' `third_party/forked/golang/expansion.Expand`.
#[cfg(test)]
mod fuzz {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// Kubernetes' algorithm, byte by byte as in Go.
    fn model(input: &str, vars: &HashMap<&str, &str>) -> String {
        let b = input.as_bytes();
        let mut out = Vec::new();
        let mut checkpoint = 0;
        let mut cursor = 0;
        while cursor < b.len() {
            if b[cursor] == b'$' && cursor + 1 < b.len() {
                out.extend_from_slice(&b[checkpoint..cursor]);
                let rest = &b[cursor + 1..];
                let advance = match rest[0] {
                    b'$' => {
                        out.push(b'$');
                        1
                    }
                    b'(' => match rest.iter().position(|&c| c == b')') {
                        Some(end) => {
                            let name = std::str::from_utf8(&rest[1..end]).unwrap_or_default();
                            match vars.get(name) {
                                Some(v) => out.extend_from_slice(v.as_bytes()),
                                None => out.extend_from_slice(format!("$({name})").as_bytes()),
                            }
                            end + 1
                        }
                        None => {
                            out.extend_from_slice(b"$(");
                            1
                        }
                    },
                    c => {
                        out.push(b'$');
                        out.push(c);
                        1
                    }
                };
                cursor += advance;
                checkpoint = cursor + 1;
            }
            cursor += 1;
        }
        out.extend_from_slice(&b[checkpoint.min(b.len())..]);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Inputs dense in `$`, parentheses and the variables' names.
    fn template() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("$".to_owned()),
                Just("$$".to_owned()),
                Just("(".to_owned()),
                Just(")".to_owned()),
                Just("$(".to_owned()),
                Just("A".to_owned()),
                Just("B_1".to_owned()),
                Just("é".to_owned()),
                ".{0,3}",
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    fn vars() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(
            (
                prop_oneof![
                    Just("A".to_owned()),
                    Just("B_1".to_owned()),
                    Just(String::new()),
                    ".{0,4}"
                ],
                prop_oneof![Just("$(A)".to_owned()), Just("$$".to_owned()), ".{0,6}"],
            ),
            0..4,
        )
    }

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        #[test]
        fn fuzz_expand_matches_kubernetes(
            input in prop_oneof![template(), any::<String>()],
            vars in vars(),
            sensitive in any::<Option<prop::sample::Index>>(),
        ) {
            let map: HashMap<&str, &str> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let secret = sensitive.map(|i| vars.get(i.index(vars.len().max(1))).map(|(k, _)| k.as_str()));
            let secret = secret.flatten();
            let (out, tainted) = expand_tracked(&input, &map, |name| Some(name) == secret);
            prop_assert_eq!(&out, &model(&input, &map));
            prop_assert_eq!(expand(&input, &map), out);
            // The secret variable tainted the result iff a `$(name)` reference to it was expanded:
            // replacing its value with a marker shows whether it was.
            if let Some(name) = secret {
                let marker = "\u{1}MARK\u{1}";
                let mut marked = map.clone();
                marked.insert(name, marker);
                let used = model(&input, &marked).contains(marker) && !input.contains(marker);
                prop_assert_eq!(tainted, used);
            } else {
                prop_assert!(!tainted);
            }
        }

        #[test]
        fn fuzz_expand_escaped_is_literal(text in any::<String>(), vars in vars()) {
            // `$$` is a literal `$`, so escaping every `$` gives the text back unexpanded.
            let map: HashMap<&str, &str> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(expand(&text.replace('$', "$$"), &map), text.clone());
            // With no variables, nothing that is not an escape changes.
            if !text.contains('$') {
                prop_assert_eq!(expand(&text, &map), text);
            }
        }
    }
}
