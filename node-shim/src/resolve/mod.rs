//! Resolution: a Kubernetes Pod becomes the contract's self-contained `Pod`, with env values,
//! ConfigMap and Secret contents substituted, so the provider never talks to Kubernetes.
//!
//! Missing mandatory ConfigMaps/Secrets (or keys) are errors that keep the pod Pending; missing
//! optional ones are reported as warnings and skipped, as the kubelet does.
//!
//! [`resolve`] assembles the pod; each part has its module: [`sources`] reads ConfigMaps and
//! Secrets, [`env`](mod@env) builds container environments, [`downward`] answers the downward API,
//! [`volumes`] and [`tokens`] turn volumes into files, [`registry`] reads image pull Secrets, and
//! [`spec`] carries probes, lifecycle hooks and security contexts.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::api::core::v1::{self as k8s, Service};
use kube::Client;
use podprovider_proto::v1 as pb;

use crate::quantity;

mod downward;
mod env;
mod registry;
mod sources;
mod spec;
mod tokens;
mod volumes;

pub use env::{expand, expand_tracked};
pub use registry::registry_credentials_from;
pub use sources::{Kind, SourceRef, live_sources};
pub use tokens::token_expiry;

use env::{env, service_env};
use sources::Sources;
use volumes::volume;

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
    let mut sources = Sources::new(client.clone(), namespace.clone());
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

#[cfg(test)]
mod tests {
    use super::{downward::*, env::*, *};

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
        let mut sources = Sources::new(client, "default".into());
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
