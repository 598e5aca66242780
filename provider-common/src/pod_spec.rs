//! Rules of the resolved pod that every provider's mapping applies alike: a container's effective
//! security settings (the pod's under the container's own, as the kubelet merges them), commands
//! built from Secret values, and extended resources, which none of the clouds here sells.

use std::collections::BTreeSet;

use podprovider_proto::v1::{Container, PodSecurityContext, SecurityContext};

/// A seccomp profile as Kubernetes names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seccomp {
    /// The container runtime's default profile.
    RuntimeDefault,
    /// No seccomp filtering.
    Unconfined,
    /// A profile file on the node, by its path.
    Localhost(String),
    /// A type this provider does not know, as given.
    Other(String),
}

impl Seccomp {
    fn parse(kind: &str, localhost: &str) -> Option<Self> {
        match kind {
            "" => None,
            "RuntimeDefault" => Some(Self::RuntimeDefault),
            "Unconfined" => Some(Self::Unconfined),
            "Localhost" => Some(Self::Localhost(localhost.to_owned())),
            other => Some(Self::Other(other.to_owned())),
        }
    }
}

impl std::fmt::Display for Seccomp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RuntimeDefault => f.write_str("RuntimeDefault"),
            Self::Unconfined => f.write_str("Unconfined"),
            Self::Localhost(path) => write!(f, "Localhost ({path})"),
            Self::Other(kind) => f.write_str(kind),
        }
    }
}

/// One container's security settings once the pod-level ones fill what the container leaves
/// unset (runAsUser, runAsGroup, runAsNonRoot, seccompProfile; the rest exist only per container).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EffectiveSecurity {
    /// Run privileged.
    pub privileged: Option<bool>,
    /// UID of the process.
    pub run_as_user: Option<i64>,
    /// GID of the process.
    pub run_as_group: Option<i64>,
    /// Refuse to run as UID 0.
    pub run_as_non_root: Option<bool>,
    /// Root filesystem read-only.
    pub read_only_root_filesystem: Option<bool>,
    /// Allow gaining more privileges than the parent.
    pub allow_privilege_escalation: Option<bool>,
    /// Capabilities to add.
    pub capabilities_add: Vec<String>,
    /// Capabilities to drop.
    pub capabilities_drop: Vec<String>,
    /// Seccomp profile.
    pub seccomp: Option<Seccomp>,
}

/// What `runAsNonRoot` means for a container whose image the provider cannot inspect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonRoot {
    /// Not asked for.
    NotAsked,
    /// Asked for, and runAsUser is a non-zero UID: nothing to check.
    Satisfied,
    /// Asked for without runAsUser: the kubelet would check the image's user, which the provider
    /// cannot do.
    Unverifiable,
    /// Asked for with runAsUser 0: the kubelet would not start the container.
    Violated,
}

impl EffectiveSecurity {
    /// Merges the pod's security context under the container's.
    pub fn of(pod: Option<&PodSecurityContext>, container: Option<&SecurityContext>) -> Self {
        let c = container.cloned().unwrap_or_default();
        let pod_seccomp =
            pod.and_then(|p| Seccomp::parse(&p.seccomp_profile_type, &p.seccomp_localhost_profile));
        Self {
            privileged: c.privileged,
            run_as_user: c.run_as_user.or(pod.and_then(|p| p.run_as_user)),
            run_as_group: c.run_as_group.or(pod.and_then(|p| p.run_as_group)),
            run_as_non_root: c.run_as_non_root.or(pod.and_then(|p| p.run_as_non_root)),
            read_only_root_filesystem: c.read_only_root_filesystem,
            allow_privilege_escalation: c.allow_privilege_escalation,
            capabilities_add: c.capabilities_add,
            capabilities_drop: c.capabilities_drop,
            seccomp: Seccomp::parse(&c.seccomp_profile_type, &c.seccomp_localhost_profile)
                .or(pod_seccomp),
        }
    }

    /// How `runAsNonRoot` stands.
    pub fn non_root(&self) -> NonRoot {
        match (self.run_as_non_root, self.run_as_user) {
            (Some(true), Some(0)) => NonRoot::Violated,
            (Some(true), Some(_)) => NonRoot::Satisfied,
            (Some(true), None) => NonRoot::Unverifiable,
            _ => NonRoot::NotAsked,
        }
    }
}

/// The refusal for a container whose command or args were expanded from a Secret value, on a
/// cloud that shows commands to anyone who may read the resource. Names neither the value nor
/// the variable it came from.
pub fn sensitive_command(c: &Container, cloud: &str) -> Option<String> {
    let what = match (c.command_sensitive, c.args_sensitive) {
        (true, true) => "its command and args contain",
        (true, false) => "its command contains",
        (false, true) => "its args contain",
        (false, false) => return None,
    };
    Some(format!(
        "container {}: {what} a value from a Secret, and {cloud} has no secure field for commands",
        c.name
    ))
}

/// The refusal for a container with `runAsNonRoot` and runAsUser 0, which the kubelet would not
/// start either.
pub fn run_as_root_refused(c: &Container) -> String {
    format!(
        "container {}: runAsNonRoot is set but runAsUser is 0, so Kubernetes would not start it",
        c.name
    )
}

/// Resource names a container requests or limits beyond CPU, memory, ephemeral storage and
/// NVIDIA GPUs (hugepages, device plugins' resources, ...).
pub fn extended_resources(c: &Container) -> BTreeSet<&str> {
    let r = c.resources.as_ref();
    [
        r.and_then(|r| r.requests.as_ref()),
        r.and_then(|r| r.limits.as_ref()),
    ]
    .into_iter()
    .flatten()
    .flat_map(|x| x.other.keys().map(String::as_str))
    .collect()
}

#[cfg(test)]
mod tests {
    use podprovider_proto::v1::{ResourceRequirements, Resources};

    use super::*;

    #[test]
    fn container_settings_win_and_pod_settings_fill_the_gaps() {
        let pod = PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            run_as_non_root: Some(true),
            fs_group: Some(2000),
            seccomp_profile_type: "RuntimeDefault".into(),
            ..Default::default()
        };
        let c = SecurityContext {
            run_as_user: Some(2000),
            capabilities_drop: vec!["ALL".into()],
            seccomp_profile_type: "Localhost".into(),
            seccomp_localhost_profile: "profiles/app.json".into(),
            ..Default::default()
        };
        let e = EffectiveSecurity::of(Some(&pod), Some(&c));
        assert_eq!(e.run_as_user, Some(2000));
        assert_eq!(e.run_as_group, Some(3000));
        assert_eq!(e.run_as_non_root, Some(true));
        assert_eq!(e.capabilities_drop, ["ALL"]);
        assert_eq!(
            e.seccomp,
            Some(Seccomp::Localhost("profiles/app.json".into()))
        );
        let only_pod = EffectiveSecurity::of(Some(&pod), None);
        assert_eq!(only_pod.run_as_user, Some(1000));
        assert_eq!(only_pod.seccomp, Some(Seccomp::RuntimeDefault));
        assert_eq!(
            EffectiveSecurity::of(None, None),
            EffectiveSecurity::default()
        );
    }

    #[test]
    fn run_as_non_root_is_satisfied_violated_or_unverifiable() {
        let with = |user: Option<i64>| EffectiveSecurity {
            run_as_non_root: Some(true),
            run_as_user: user,
            ..Default::default()
        };
        assert_eq!(with(Some(1000)).non_root(), NonRoot::Satisfied);
        assert_eq!(with(Some(0)).non_root(), NonRoot::Violated);
        assert_eq!(with(None).non_root(), NonRoot::Unverifiable);
        assert_eq!(EffectiveSecurity::default().non_root(), NonRoot::NotAsked);
    }

    #[test]
    fn a_sensitive_command_is_refused_without_naming_its_value() {
        let c = Container {
            name: "app".into(),
            command: vec!["run".into(), "--token=hunter2".into()],
            command_sensitive: true,
            ..Default::default()
        };
        let msg = sensitive_command(&c, "ACI").expect("refused");
        assert_eq!(
            msg,
            "container app: its command contains a value from a Secret, and ACI has no secure field for commands"
        );
        assert!(!msg.contains("hunter2"));
        let args = Container {
            args_sensitive: true,
            ..c.clone()
        };
        assert!(
            sensitive_command(&args, "ECI")
                .expect("refused")
                .contains("its command and args contain")
        );
        assert!(sensitive_command(&Container::default(), "ECI").is_none());
    }

    #[test]
    fn extended_resources_are_named_once() {
        let res = |k: &str| Resources {
            other: [(k.to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        let c = Container {
            resources: Some(ResourceRequirements {
                requests: Some(res("hugepages-2Mi")),
                limits: Some(res("hugepages-2Mi")),
            }),
            ..Default::default()
        };
        assert_eq!(
            extended_resources(&c).into_iter().collect::<Vec<_>>(),
            ["hugepages-2Mi"]
        );
    }
}
