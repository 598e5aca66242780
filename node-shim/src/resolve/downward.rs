//! The downward API: `fieldRef` and `resourceFieldRef` values, and downwardAPI volume files
//! written as the kubelet writes them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use podprovider_proto::v1 as pb;

use super::Error;
use crate::quantity;

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

/// A downwardAPI volume's files. Whole label and annotation maps are written as the kubelet
/// writes them: sorted `key="value"` lines.
pub(super) fn downward_files(
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
pub(super) fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn go_quote(s: &str) -> String {
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

pub(super) fn named_container<'a>(
    pod: &'a k8s::Pod,
    name: &str,
) -> Result<&'a k8s::Container, Error> {
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
