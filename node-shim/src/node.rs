//! The virtual Node: registration, Lease heartbeat, and status with Ready tied to the provider's
//! Ping.
//!
//! The Node is created once and patched afterwards with strategic-merge patches, so fields other
//! writers own (taints the node lifecycle controller adds, labels users add) are left alone.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec,
            NodeStatus, NodeSystemInfo, Taint,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use podprovider_proto::v1::{self as pb, ConditionStatus, GetNodeInfoRequest, PingRequest};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, provider_client::ProviderClient};

/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Errors of the node manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A flag has an invalid value.
    #[error("{0}")]
    Config(String),
    /// Serializing a patch failed (a bug).
    #[error("serializing a patch: {0}")]
    Json(#[from] serde_json::Error),
}

/// What the provider said about its health at the last ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Ping succeeded and the provider said ready.
    pub ready: bool,
    /// CamelCase reason when not ready.
    pub reason: String,
    /// Sentence for people when not ready.
    pub message: String,
}

impl Health {
    fn unreachable(err: &str) -> Self {
        Self {
            ready: false,
            reason: "ProviderUnreachable".into(),
            message: format!("the provider does not answer: {err}"),
        }
    }
}

/// Keeps the Node, its Lease and its status.
pub struct NodeManager {
    api: Api<Node>,
    leases: Api<Lease>,
    provider: ProviderClient,
    cfg: Arc<Config>,
    kube_version: String,
    info: Option<pb::NodeInfo>,
    health: Health,
    /// When each condition type last changed status (Kubernetes `lastTransitionTime`).
    transitions: BTreeMap<String, (String, Timestamp)>,
    uid: Option<String>,
    /// With `--tls-bootstrap`, the starting credentials, which set on this Node what
    /// NodeRestriction keeps from the node itself (`kubernetes.io/role`, taints of an existing
    /// Node); `None` when the shim runs with one identity.
    owner: Option<Api<Node>>,
    /// What the metrics port's `/readyz` answers: whether the provider is ready.
    readiness: Option<vk_telemetry::metrics::Readiness>,
}

impl NodeManager {
    /// Reports the provider's readiness to `readiness` (the shim's `/readyz`).
    pub fn with_readiness(mut self, readiness: vk_telemetry::metrics::Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// A manager for the node named in `cfg`.
    pub async fn new(
        client: Client,
        owner: Option<Client>,
        provider: ProviderClient,
        cfg: Arc<Config>,
    ) -> Result<Self, Error> {
        let version = client.apiserver_version().await?;
        // "v1.20.2" from "v1.20.2+debian" or "v1.20.2-gke.1": the node claims the cluster's version.
        let kube_version = version
            .git_version
            .split(['+', '-'])
            .next()
            .unwrap_or("v0.0.0")
            .to_owned();
        Ok(Self {
            api: Api::all(client.clone()),
            leases: Api::namespaced(client, LEASE_NAMESPACE),
            provider,
            cfg,
            kube_version,
            info: None,
            health: Health::unreachable("not asked yet"),
            transitions: BTreeMap::new(),
            uid: None,
            owner: owner.map(Api::all),
            readiness: None,
        })
    }

    /// Registers the Node, then keeps the Lease and status fresh until `shutdown`.
    /// The Node is left in place on shutdown (pods keep running in the cloud).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        self.refresh_provider().await;
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.register().await {
                Ok(()) => break,
                Err(Error::Config(msg)) => return Err(Error::Config(msg)),
                Err(err) => {
                    tracing::warn!(%err, "registering the node failed; retrying in {backoff:?}");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }

        let mut lease_tick = tokio::time::interval(self.cfg.lease_renew_interval);
        let mut ping_tick = tokio::time::interval(self.cfg.ping_interval);
        let mut status_tick = tokio::time::interval(self.cfg.node_status_period);
        for tick in [&mut lease_tick, &mut ping_tick, &mut status_tick] {
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = lease_tick.tick() => {
                    if let Err(err) = self.renew_lease().await {
                        tracing::warn!(%err, "renewing the node lease failed");
                    }
                }
                _ = ping_tick.tick() => {
                    if self.refresh_provider().await {
                        self.write_status_logged().await;
                    }
                }
                _ = status_tick.tick() => self.write_status_logged().await,
            }
        }
    }

    /// Pings the provider and refetches node info when its revision changed. Returns whether
    /// anything the Node shows changed.
    async fn refresh_provider(&mut self) -> bool {
        let node_name = self.cfg.node_name.clone();
        let deadline = self
            .cfg
            .ping_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(5));
        let ping = tokio::time::timeout(
            deadline,
            self.provider.ping(PingRequest {
                node_name: node_name.clone(),
            }),
        )
        .await;
        let (health, revision) = match ping {
            Ok(Ok(resp)) => {
                let r = resp.into_inner();
                let health = if r.ready {
                    Health {
                        ready: true,
                        reason: String::new(),
                        message: String::new(),
                    }
                } else {
                    Health {
                        ready: false,
                        reason: if r.reason.is_empty() {
                            "ProviderNotReady".into()
                        } else {
                            r.reason
                        },
                        message: r.message,
                    }
                };
                (health, Some(r.node_info_revision))
            }
            Ok(Err(status)) => (Health::unreachable(status.message()), None),
            Err(_) => (
                Health::unreachable(&format!("no answer to ping within {deadline:?}")),
                None,
            ),
        };
        let mut changed = health != self.health;
        if changed {
            if health.ready {
                tracing::info!("provider ready");
            } else {
                tracing::warn!(reason = %health.reason, message = %health.message, "provider not ready");
            }
        }
        if let Some(readiness) = &self.readiness {
            readiness.set(health.ready);
        }
        self.health = health;

        let stale = match (&self.info, &revision) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(info), Some(rev)) => rev.is_empty() || *rev != info.revision,
        };
        if stale {
            match self
                .provider
                .get_node_info(GetNodeInfoRequest { node_name })
                .await
            {
                Ok(info) => {
                    let info = info.into_inner();
                    changed |= self.info.as_ref() != Some(&info);
                    self.info = Some(info);
                }
                Err(status) => tracing::warn!(error = %status.message(), "GetNodeInfo failed"),
            }
        }
        changed
    }

    fn provider_name(&self) -> &str {
        self.info
            .as_ref()
            .map_or("unknown", |i| i.provider_name.as_str())
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let os = self
            .info
            .as_ref()
            .map_or("linux", |i| non_empty(&i.operating_system, "linux"));
        let arch = self
            .info
            .as_ref()
            .map_or("amd64", |i| non_empty(&i.architecture, "amd64"));
        let mut labels: BTreeMap<String, String> = self
            .info
            .iter()
            .flat_map(|i| i.labels.clone())
            .filter(|(k, v)| {
                let allowed = provider_label_allowed(k, v);
                if !allowed {
                    tracing::warn!(label = %k, "ignoring a node label the provider suggested: reserved or invalid");
                }
                allowed
            })
            .collect();
        let name = self.cfg.node_name.as_str();
        for (k, v) in [
            ("type", "virtual-kubelet"),
            ("kubernetes.io/role", "agent"),
            ("kubernetes.io/hostname", name),
            ("kubernetes.io/os", os),
            ("beta.kubernetes.io/os", os),
            ("kubernetes.io/arch", arch),
            ("beta.kubernetes.io/arch", arch),
            (
                "node.kubernetes.io/exclude-from-external-load-balancers",
                "true",
            ),
        ] {
            labels.insert(k.to_owned(), v.to_owned());
        }
        for kv in &self.cfg.node_labels {
            if let Some((k, v)) = kv.split_once('=') {
                labels.insert(k.to_owned(), v.to_owned());
            }
        }
        labels
    }

    fn taints(&self) -> Result<Vec<Taint>, Error> {
        let mut taints = Vec::new();
        if !self.cfg.disable_taint {
            let value = self
                .cfg
                .taint_value
                .clone()
                .unwrap_or_else(|| self.provider_name().to_owned());
            taints.push(Taint {
                key: self.cfg.taint_key.clone(),
                value: Some(value),
                effect: check_effect(&self.cfg.taint_effect)?,
                time_added: None,
            });
        }
        for spec in &self.cfg.extra_taints {
            taints.push(parse_taint(spec)?);
        }
        for t in self.info.iter().flat_map(|i| &i.taints) {
            if taints.iter().any(|have| have.key == t.key) {
                continue;
            }
            // The provider's suggestions must never stop the node: a bad one is skipped.
            let effect = match check_effect(&t.effect) {
                Ok(e) if label_key_valid(&t.key) && label_value_valid(&t.value) => e,
                _ => {
                    tracing::warn!(key = %t.key, effect = %t.effect, "ignoring an invalid taint the provider suggested");
                    continue;
                }
            };
            taints.push(Taint {
                key: t.key.clone(),
                value: Some(t.value.clone()).filter(|v| !v.is_empty()),
                effect,
                time_added: None,
            });
        }
        Ok(taints)
    }

    fn kubelet_version(&self) -> String {
        let version = self
            .info
            .as_ref()
            .map_or("unknown", |i| i.provider_version.as_str());
        format!(
            "{}-vk-{}-{}",
            self.kube_version,
            self.provider_name(),
            version
        )
    }

    /// The status this shim owns.
    fn status(&mut self) -> NodeStatus {
        let now = Timestamp::now();
        let provider = self.provider_name().to_owned();
        let (ready_status, ready_reason, ready_message) = if self.health.ready {
            (
                "True",
                "KubeletReady".to_owned(),
                format!("provider {provider} is ready"),
            )
        } else {
            (
                "False",
                self.health.reason.clone(),
                self.health.message.clone(),
            )
        };
        let mut conditions = vec![
            (
                "Ready",
                ready_status.to_owned(),
                ready_reason,
                ready_message,
            ),
            (
                "MemoryPressure",
                "False".into(),
                "KubeletHasSufficientMemory".into(),
                String::new(),
            ),
            (
                "DiskPressure",
                "False".into(),
                "KubeletHasNoDiskPressure".into(),
                String::new(),
            ),
            (
                "PIDPressure",
                "False".into(),
                "KubeletHasSufficientPID".into(),
                String::new(),
            ),
            (
                "NetworkUnavailable",
                "False".into(),
                "RouteCreated".into(),
                String::new(),
            ),
        ]
        .into_iter()
        .map(|(t, s, r, m)| (t.to_owned(), s, r, m))
        .collect::<Vec<_>>();
        for c in self.info.iter().flat_map(|i| &i.conditions) {
            let status = match c.status() {
                ConditionStatus::True => "True",
                ConditionStatus::False => "False",
                _ => "Unknown",
            };
            conditions.push((
                c.r#type.clone(),
                status.to_owned(),
                c.reason.clone(),
                c.message.clone(),
            ));
        }
        let conditions = conditions
            .into_iter()
            .map(|(type_, status, reason, message)| {
                let since = match self.transitions.get(&type_) {
                    Some((prev, at)) if *prev == status => *at,
                    _ => {
                        self.transitions
                            .insert(type_.clone(), (status.clone(), now));
                        now
                    }
                };
                NodeCondition {
                    type_,
                    status,
                    reason: Some(reason).filter(|r| !r.is_empty()),
                    message: Some(message).filter(|m| !m.is_empty()),
                    last_heartbeat_time: Some(Time(now)),
                    last_transition_time: Some(Time(since)),
                }
            })
            .collect();

        let overrides = || {
            self.cfg
                .capacity
                .iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        };
        let capacity: BTreeMap<String, Quantity> = self
            .info
            .iter()
            .flat_map(|i| &i.capacity)
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .chain(overrides())
            .collect();
        let allocatable = match self.info.as_ref().map(|i| &i.allocatable) {
            Some(a) if !a.is_empty() => a
                .iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .chain(overrides())
                .collect(),
            _ => capacity.clone(),
        };
        let sys = self
            .info
            .as_ref()
            .and_then(|i| i.system_info.clone())
            .unwrap_or_default();
        let info = self.info.clone().unwrap_or_default();
        NodeStatus {
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            conditions: Some(conditions),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: self.cfg.pod_ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: self.cfg.node_name.clone(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(self.cfg.kubelet_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                kubelet_version: self.kubelet_version(),
                operating_system: non_empty(&info.operating_system, "linux").to_owned(),
                architecture: non_empty(&info.architecture, "amd64").to_owned(),
                os_image: sys.os_image,
                kernel_version: sys.kernel_version,
                container_runtime_version: sys.container_runtime_version,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates the Node, or patches our labels and taints onto an existing one; then writes status
    /// and the Lease. Running as the node, what NodeRestriction reserves (labels outside the
    /// kubelet's set; taints of an existing Node) is written with the owner's credentials.
    async fn register(&mut self) -> Result<(), Error> {
        let name = self.cfg.node_name.clone();
        let mut labels = self.labels();
        let reserved: BTreeMap<String, String> = match &self.owner {
            Some(_) => labels
                .extract_if(.., |k, _| !node_may_set_label(k))
                .collect(),
            None => BTreeMap::new(),
        };
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(self.taints()?),
                ..Default::default()
            }),
            status: None,
        };
        let created = match self.api.create(&PostParams::default(), &node).await {
            Ok(created) => {
                tracing::info!(node = %name, "node registered");
                created
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Strategic merge: labels merge by key, taints by key; others' entries survive.
                let patch = json!({
                    "metadata": {"labels": node.metadata.labels},
                    "spec": {"taints": node.spec.as_ref().and_then(|s| s.taints.clone())},
                });
                let patched = self
                    .owner
                    .as_ref()
                    .unwrap_or(&self.api)
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await?;
                tracing::info!(node = %name, "node already registered; labels and taints updated");
                patched
            }
            Err(err) => return Err(err.into()),
        };
        let created = match (&self.owner, reserved.is_empty()) {
            (Some(owner), false) => {
                let patch = json!({"metadata": {"labels": reserved}});
                owner
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?
            }
            _ => created,
        };
        self.uid = created.metadata.uid;
        self.write_status().await?;
        self.renew_lease().await
    }

    async fn write_status(&mut self) -> Result<(), Error> {
        let status = self.status();
        let patch = json!({ "status": status });
        self.api
            .patch_status(
                &self.cfg.node_name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await?;
        Ok(())
    }

    async fn write_status_logged(&mut self) {
        if let Err(err) = self.write_status().await {
            tracing::warn!(%err, "writing node status failed");
        }
    }

    async fn renew_lease(&mut self) -> Result<(), Error> {
        let name = self.cfg.node_name.clone();
        let owner = self.uid.clone().map(|uid| OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.clone(),
            uid,
            ..Default::default()
        });
        let spec = LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration_seconds),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        };
        let patch = json!({
            "metadata": {"ownerReferences": owner.as_ref().map(|o| vec![o.clone()])},
            "spec": spec,
        });
        match self
            .leases
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(LEASE_NAMESPACE.into()),
                        owner_references: owner.map(|o| vec![o]),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.leases.create(&PostParams::default(), &lease).await?;
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }
}

fn non_empty<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

/// Whether NodeRestriction lets a node set label `key` on itself (Kubernetes 1.20
/// `kubeletapis.IsKubeletLabel`): any label outside the `kubernetes.io` and `k8s.io` namespaces,
/// and of those only the kubelet's own (hostname, os, arch, zone, region, instance type) and the
/// `kubelet.kubernetes.io` / `node.kubernetes.io` namespaces.
pub fn node_may_set_label(key: &str) -> bool {
    const KUBELET_LABELS: [&str; 11] = [
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
    ];
    let Some((namespace, _)) = key.split_once('/') else {
        return true;
    };
    let within = |domain: &str| namespace == domain || namespace.ends_with(&format!(".{domain}"));
    if !within("kubernetes.io") && !within("k8s.io") {
        return true;
    }
    KUBELET_LABELS.contains(&key) || within("kubelet.kubernetes.io") || within("node.kubernetes.io")
}

/// Whether a label the provider suggests may go on the Node: a valid Kubernetes label, and not
/// in the namespaces a kubelet may not set (NodeRestriction: `kubernetes.io` and `k8s.io` except
/// the kubelet's own, and `node-restriction.kubernetes.io` in particular).
pub fn provider_label_allowed(key: &str, value: &str) -> bool {
    if !label_key_valid(key) || !label_value_valid(value) {
        return false;
    }
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    let in_ns = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    if !in_ns("kubernetes.io") && !in_ns("k8s.io") {
        return true;
    }
    const KUBELET_LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "node.kubernetes.io/instance-type",
    ];
    KUBELET_LABELS.contains(&key)
        || ["kubelet.kubernetes.io", "node.kubernetes.io"]
            .iter()
            .any(|ns| in_ns(ns))
}

fn label_name_valid(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A qualified name: `[DNS subdomain/]name`.
fn label_key_valid(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|part| {
                    !part.is_empty()
                        && part.len() <= 63
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
                && label_name_valid(name)
        }
        None => label_name_valid(key),
    }
}

fn label_value_valid(value: &str) -> bool {
    value.is_empty() || label_name_valid(value)
}

fn check_effect(effect: &str) -> Result<String, Error> {
    match effect {
        "NoSchedule" | "PreferNoSchedule" | "NoExecute" => Ok(effect.to_owned()),
        other => Err(Error::Config(format!(
            "invalid taint effect {other:?}: expected NoSchedule, PreferNoSchedule or NoExecute"
        ))),
    }
}

/// Parses `KEY[=VALUE]:EFFECT`.
pub fn parse_taint(spec: &str) -> Result<Taint, Error> {
    let (kv, effect) = spec.rsplit_once(':').ok_or_else(|| {
        Error::Config(format!(
            "invalid taint {spec:?}: expected KEY[=VALUE]:EFFECT"
        ))
    })?;
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(Error::Config(format!("invalid taint {spec:?}: empty key")));
    }
    Ok(Taint {
        key: key.to_owned(),
        value,
        effect: check_effect(effect)?,
        time_added: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_labels_are_filtered_as_node_restriction_would() {
        assert!(provider_label_allowed("alibabacloud.com/eci", "true"));
        assert!(provider_label_allowed(
            "topology.kubernetes.io/zone",
            "eu-1a"
        ));
        assert!(provider_label_allowed(
            "node.kubernetes.io/instance-type",
            "eci"
        ));
        assert!(!provider_label_allowed(
            "node-restriction.kubernetes.io/x",
            "y"
        ));
        assert!(!provider_label_allowed("kubernetes.io/role", "master"));
        for (key, node_may) in [
            ("type", true),
            ("example.com/tier", true),
            ("kubernetes.io/hostname", true),
            ("beta.kubernetes.io/os", true),
            (
                "node.kubernetes.io/exclude-from-external-load-balancers",
                true,
            ),
            ("kubernetes.io/role", false),
            ("node-role.kubernetes.io/agent", false),
            ("node-restriction.kubernetes.io/x", false),
            ("example.k8s.io/x", false),
        ] {
            assert_eq!(node_may_set_label(key), node_may, "{key}");
        }
        assert!(!provider_label_allowed("foo.k8s.io/x", "y"));
        assert!(!provider_label_allowed("ok", "a value with spaces"));
        assert!(!provider_label_allowed(&"k".repeat(64), "v"));
        assert!(!provider_label_allowed("", "v"));
    }

    #[test]
    fn taint_specs() {
        let t = parse_taint("azure.com/aci:NoSchedule").expect("valid");
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("azure.com/aci", None, "NoSchedule")
        );
        let t = parse_taint("a=b:NoExecute").expect("valid");
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("a", Some("b"), "NoExecute")
        );
        assert!(parse_taint("nokey").is_err());
        assert!(
            parse_taint("k:Sometimes")
                .expect_err("bad effect")
                .to_string()
                .contains("NoSchedule")
        );
        assert!(parse_taint(":NoSchedule").is_err());
    }
}
