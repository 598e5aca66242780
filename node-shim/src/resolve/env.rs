//! Container environment: `env` and `envFrom` with `$(VAR)` expansion as Kubernetes does it,
//! the kubelet's service-link variables, and Secret-derived values flagged sensitive.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::api::core::v1::{self as k8s, Service};
use podprovider_proto::v1 as pb;

use super::{
    ContainerContext, Error, Warning,
    downward::{field_value, resource_field_value},
    sources::{Kind, Sources},
};

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

pub(super) fn push_env(env: &mut Vec<pb::EnvVar>, name: String, value: String, sensitive: bool) {
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

pub(super) fn push_var(env: &mut Vec<pb::EnvVar>, var: pb::EnvVar) {
    // Later definitions win, as in Kubernetes; keep the first position for stable ordering.
    if let Some(existing) = env.iter_mut().find(|e| e.name == var.name) {
        *existing = var;
    } else {
        env.push(var);
    }
}

pub(super) fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(super) async fn env(
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
