//! Resolution: a Kubernetes Pod becomes the contract's self-contained `Pod`, with env values,
//! ConfigMap and Secret contents substituted, so the provider never talks to Kubernetes.
//!
//! Missing mandatory ConfigMaps/Secrets (or keys) are errors that keep the pod Pending; missing
//! optional ones are reported as warnings and skipped, as the kubelet does.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::{
    ByteString,
    api::core::v1::{self as k8s, ConfigMap, Secret},
};
use kube::{Api, Client};
use podprovider_proto::v1 as pb;

use crate::quantity;

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
    /// Reading a ConfigMap or Secret failed.
    #[error("reading {what}: {source}")]
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
}

/// The two Kubernetes objects pods take values from; they differ only in these respects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    ConfigMap,
    Secret,
}

type Data = BTreeMap<String, Vec<u8>>;

impl Kind {
    fn label(self) -> &'static str {
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
}

impl Sources {
    fn describe(&self, kind: Kind, name: &str) -> String {
        format!("{} {}/{name}", kind.label(), self.namespace)
    }

    async fn get(&mut self, kind: Kind, name: &str) -> Result<Option<&Data>, Error> {
        let key = (kind, name.to_owned());
        if !self.cache.contains_key(&key) {
            let what = self.describe(kind, name);
            let fail = |source| Error::Kube { what, source };
            let ns = &self.namespace;
            let data = match kind {
                Kind::ConfigMap => Api::<ConfigMap>::namespaced(self.client.clone(), ns)
                    .get_opt(name)
                    .await
                    .map_err(fail)?
                    .map(|cm| {
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
                Kind::Secret => Api::<Secret>::namespaced(self.client.clone(), ns)
                    .get_opt(name)
                    .await
                    .map_err(fail)?
                    .map(|s| {
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
            };
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

/// Resolves `pod` (bound to `node_name`, whose address is `host_ip`).
pub async fn resolve(client: &Client, pod: &k8s::Pod, host_ip: &str) -> Result<Resolved, Error> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut sources = Sources {
        client: client.clone(),
        namespace: namespace.clone(),
        cache: HashMap::new(),
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let mut warnings = Vec::new();

    let mut init_containers = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        init_containers.push(container(&mut sources, pod, c, host_ip, &mut warnings).await?);
    }
    let mut containers = Vec::new();
    for c in &spec.containers {
        containers.push(container(&mut sources, pod, c, host_ip, &mut warnings).await?);
    }
    let mut volumes = Vec::new();
    for v in spec.volumes.iter().flatten() {
        volumes.push(volume(&mut sources, v, &mut warnings).await?);
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
        security_context: None,
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
    };
    Ok(Resolved {
        pod: resolved,
        warnings,
    })
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

async fn container(
    sources: &mut Sources,
    pod: &k8s::Pod,
    c: &k8s::Container,
    host_ip: &str,
    warnings: &mut Vec<Warning>,
) -> Result<pb::Container, Error> {
    let env = env(sources, pod, c, host_ip, warnings).await?;
    let lookup: HashMap<&str, &str> = env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| expand(s, &lookup)).collect()
    };
    Ok(pb::Container {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_pull_policy: match c.image_pull_policy.as_deref() {
            Some("Always") => pb::ImagePullPolicy::Always,
            Some("Never") => pb::ImagePullPolicy::Never,
            _ => pb::ImagePullPolicy::IfNotPresent,
        } as i32,
        command: expand_all(&c.command),
        args: expand_all(&c.args),
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
        env,
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        ..Default::default()
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
                        Some(value) => out.push_str(value),
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
    out
}

fn push_env(env: &mut Vec<pb::EnvVar>, name: String, value: String, sensitive: bool) {
    // Later definitions win, as in Kubernetes; keep the first position for stable ordering.
    if let Some(existing) = env.iter_mut().find(|e| e.name == name) {
        existing.value = value;
        existing.sensitive = sensitive;
    } else {
        env.push(pb::EnvVar {
            name,
            value,
            sensitive,
        });
    }
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn env(
    sources: &mut Sources,
    pod: &k8s::Pod,
    c: &k8s::Container,
    host_ip: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<pb::EnvVar>, Error> {
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
            let vars: HashMap<&str, &str> = env
                .iter()
                .map(|e| (e.name.as_str(), e.value.as_str()))
                .collect();
            let value = expand(var.value.as_deref().unwrap_or_default(), &vars);
            push_env(&mut env, var.name.clone(), value, false);
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
            push_env(
                &mut env,
                var.name.clone(),
                field_value(pod, &f.field_path, host_ip)?,
                false,
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
    Ok(env)
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
        Some(name) if !name.is_empty() && name != c.name => pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .find(|x| x.name == name)
            .ok_or_else(|| {
                Error::Invalid(format!("resourceFieldRef names unknown container {name:?}"))
            })?,
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
    v: &k8s::Volume,
    warnings: &mut Vec<Warning>,
) -> Result<pb::Volume, Error> {
    use pb::volume::Source;
    let source = if let Some(e) = &v.empty_dir {
        Source::EmptyDir(pb::EmptyDirVolume {
            medium: e.medium.clone().unwrap_or_default(),
            size_limit_bytes: e
                .size_limit
                .as_ref()
                .and_then(|q| quantity::to_units(&q.0).ok()),
        })
    } else if let Some(cm) = &v.config_map {
        let source = (
            Kind::ConfigMap,
            cm.name.as_str(),
            cm.items.as_deref(),
            cm.default_mode,
            cm.optional,
        );
        files_volume(sources, v, source, warnings).await?
    } else if let Some(sv) = &v.secret {
        let name = sv.secret_name.as_deref().unwrap_or_default();
        let source = (
            Kind::Secret,
            name,
            sv.items.as_deref(),
            sv.default_mode,
            sv.optional,
        );
        files_volume(sources, v, source, warnings).await?
    } else if let Some(n) = &v.nfs {
        Source::Nfs(pb::NfsVolume {
            server: n.server.clone(),
            path: n.path.clone(),
            read_only: n.read_only.unwrap_or(false),
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

/// A ConfigMap or Secret volume: `(kind, name, items, default mode, optional)`.
type KeySource<'a> = (
    Kind,
    &'a str,
    Option<&'a [k8s::KeyToPath]>,
    Option<i32>,
    Option<bool>,
);

/// A ConfigMap/Secret volume's files: all keys, or the listed `items` (a missing listed key is an
/// error naming it). A missing optional object gives an empty volume.
async fn files_volume(
    sources: &mut Sources,
    v: &k8s::Volume,
    (kind, name, items, default_mode, optional): KeySource<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<pb::volume::Source, Error> {
    let what = format!("volume {}", v.name);
    let data = sources
        .lookup(kind, name, optional.unwrap_or(false), &what, warnings)
        .await?;
    let sensitive = kind.sensitive();
    let files = match (data, items) {
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
    };
    let source = match kind {
        Kind::ConfigMap => pb::FilesSource::ConfigMap,
        Kind::Secret => pb::FilesSource::Secret,
    };
    Ok(pb::volume::Source::Files(pb::FilesVolume {
        source: source as i32,
        files,
        default_mode,
        token_expiration: None,
    }))
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
}
