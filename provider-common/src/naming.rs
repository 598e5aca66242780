//! Deterministic names and tags for a pod's cloud resources.
//!
//! A pod's resources are named from its namespace, name and UID, so a retried create finds what an
//! earlier attempt made instead of making a second one, and tagged with the same identity plus the
//! node name, so a restarted provider rebuilds its state from the cloud alone.

use podprovider_proto::v1::PodRef;
use sha2::{Digest, Sha256};

/// Tag key holding the pod's namespace.
pub const TAG_NAMESPACE: &str = "vk-pod-namespace";
/// Tag key holding the pod's name.
pub const TAG_NAME: &str = "vk-pod-name";
/// Tag key holding the pod's UID.
pub const TAG_UID: &str = "vk-pod-uid";
/// Tag key holding the virtual node's name.
pub const TAG_NODE: &str = "vk-node";

/// What a cloud allows in a resource name.
#[derive(Clone, Copy, Debug)]
pub struct NameRules {
    /// Longest allowed name.
    pub max_len: usize,
    /// Whether a character may appear (others become `-`).
    pub allowed: fn(char) -> bool,
    /// Fold to lower case first.
    pub lowercase: bool,
}

impl NameRules {
    /// Letters, digits, `-` and `_`, up to `max_len` (ECS `startedBy`, task definition families).
    pub const fn alnum_dash_underscore(max_len: usize) -> Self {
        Self {
            max_len,
            allowed: |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
            lowercase: false,
        }
    }

    /// Lower-case letters, digits and `-`, up to `max_len` (ACI and ECI container groups).
    pub const fn dns_label(max_len: usize) -> Self {
        Self {
            max_len,
            allowed: |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            lowercase: true,
        }
    }
}

/// Hex digest (first `len` hex digits of SHA-256) of `parts`, each terminated so that
/// `["ab", "c"]` and `["a", "bc"]` differ.
pub fn short_hash(parts: &[&str], len: usize) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex[..len.min(hex.len())].to_owned()
}

/// The name of a pod's cloud resource: `<prefix>-<namespace>-<name>-<hash>`, with characters the
/// cloud does not allow replaced by `-`, shortened to fit, and an 8-digit hash of the full identity
/// (including the UID) at the end, so a re-created pod with the same name gets a different name.
pub fn resource_name(prefix: &str, pod: &PodRef, rules: &NameRules) -> String {
    let hash = short_hash(&[&pod.namespace, &pod.name, &pod.uid], 8);
    let readable = format!("{prefix}-{}-{}", pod.namespace, pod.name);
    let mut clean: String = readable
        .chars()
        .map(|c| {
            let c = if rules.lowercase {
                c.to_ascii_lowercase()
            } else {
                c
            };
            if (rules.allowed)(c) { c } else { '-' }
        })
        .collect();
    let room = rules.max_len.saturating_sub(hash.len() + 1);
    clean.truncate(room);
    let clean = clean.trim_end_matches('-');
    format!("{clean}-{hash}")
}

/// The identity tags every cloud resource of a pod carries.
pub fn pod_tags(pod: &PodRef, node_name: &str) -> Vec<(&'static str, String)> {
    vec![
        (TAG_NAMESPACE, pod.namespace.clone()),
        (TAG_NAME, pod.name.clone()),
        (TAG_UID, pod.uid.clone()),
        (TAG_NODE, node_name.to_owned()),
    ]
}

/// The pod and node a resource belongs to, from its tags; `None` unless namespace, name, UID and
/// node are all there (the resource is then not one of ours).
pub fn pod_from_tags<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<(PodRef, String)> {
    let (mut ns, mut name, mut uid, mut node) = (None, None, None, None);
    for (k, v) in tags {
        match k {
            TAG_NAMESPACE => ns = Some(v),
            TAG_NAME => name = Some(v),
            TAG_UID => uid = Some(v),
            TAG_NODE => node = Some(v),
            _ => {}
        }
    }
    Some((
        PodRef {
            namespace: ns?.to_owned(),
            name: name?.to_owned(),
            uid: uid?.to_owned(),
        },
        node?.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, uid: &str) -> PodRef {
        PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn names_are_deterministic_and_differ_by_uid() {
        let rules = NameRules::alnum_dash_underscore(128);
        let a = resource_name("vk", &pod("default", "web-1", "u1"), &rules);
        assert_eq!(
            a,
            resource_name("vk", &pod("default", "web-1", "u1"), &rules)
        );
        assert!(a.starts_with("vk-default-web-1-"), "{a}");
        assert_ne!(
            a,
            resource_name("vk", &pod("default", "web-1", "u2"), &rules)
        );
    }

    #[test]
    fn long_names_are_cut_to_fit_and_keep_the_hash() {
        let rules = NameRules::dns_label(63);
        let long = "x".repeat(300);
        let n1 = resource_name("vk", &pod("ns", &long, "u1"), &rules);
        let n2 = resource_name("vk", &pod("ns", &format!("{long}y"), "u1"), &rules);
        assert_eq!(n1.len(), 63, "{n1}");
        assert_ne!(n1, n2, "different pods must not collide after truncation");
    }

    #[test]
    fn disallowed_characters_are_replaced() {
        let rules = NameRules::dns_label(63);
        let n = resource_name("vk", &pod("My.NS", "a_b", "u"), &rules);
        assert!(n.starts_with("vk-my-ns-a-b-"), "{n}");
    }

    #[test]
    fn tags_round_trip() {
        let p = pod("ns", "name", "uid");
        let tags = pod_tags(&p, "node-1");
        let back = pod_from_tags(tags.iter().map(|(k, v)| (*k, v.as_str())));
        assert_eq!(back, Some((p, "node-1".to_owned())));
        assert_eq!(pod_from_tags([(TAG_UID, "x")]), None);
    }
}
