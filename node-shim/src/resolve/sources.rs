//! The ConfigMaps and Secrets a pod takes values from: read once per resolution, with their
//! resourceVersions recorded so running pods can follow changes ([`live_sources`]).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::{
    ByteString,
    api::core::v1::{self as k8s, ConfigMap, Secret},
};
use kube::{Api, Client};

use super::{Error, Warning};

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

pub(super) type Data = BTreeMap<String, Vec<u8>>;

impl Kind {
    /// "ConfigMap" or "Secret".
    pub fn label(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }

    /// Secret values must travel flagged so providers use the cloud's secure fields.
    pub(super) fn sensitive(self) -> bool {
        self == Self::Secret
    }

    pub(super) fn optional_reason(self) -> &'static str {
        match self {
            Self::ConfigMap => "OptionalConfigMapNotFound",
            Self::Secret => "OptionalSecretNotFound",
        }
    }

    pub(super) fn missing(self, message: String) -> Error {
        match self {
            Self::ConfigMap => Error::MandatoryConfigMapNotFound(message),
            Self::Secret => Error::MandatorySecretNotFound(message),
        }
    }
}

/// Reads ConfigMaps and Secrets once per resolution.
pub(super) struct Sources {
    pub(super) client: Client,
    pub(super) namespace: String,
    cache: HashMap<(Kind, String), Option<Data>>,
    pub(super) versions: HashMap<SourceRef, Option<String>>,
}

impl Sources {
    /// Reads from `namespace`.
    pub(super) fn new(client: Client, namespace: String) -> Self {
        Self {
            client,
            namespace,
            cache: HashMap::new(),
            versions: HashMap::new(),
        }
    }

    pub(super) fn describe(&self, kind: Kind, name: &str) -> String {
        format!("{} {}/{name}", kind.label(), self.namespace)
    }

    pub(super) async fn get(&mut self, kind: Kind, name: &str) -> Result<Option<&Data>, Error> {
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
    pub(super) async fn lookup(
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
