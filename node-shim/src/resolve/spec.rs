//! The parts of a container's spec that travel as they are, translated to the contract: probes,
//! lifecycle hooks and security contexts. Named ports are resolved to numbers here, as the kubelet
//! resolves them when it runs a probe or hook.

use k8s_openapi::{api::core::v1 as k8s, apimachinery::pkg::util::intstr::IntOrString};
use podprovider_proto::v1 as pb;

use super::Error;

/// A port of a probe or hook: a number, or the name of one of the container's ports (the kubelet
/// also accepts a number written as a string when no port has that name).
fn port(c: &k8s::Container, p: &IntOrString, what: &str) -> Result<i32, Error> {
    match p {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port)
            .or_else(|| name.parse().ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{what} of container {} refers to port {name:?}, which the container does not declare",
                    c.name
                ))
            }),
    }
}

fn exec(e: &k8s::ExecAction) -> pb::ExecAction {
    pb::ExecAction {
        command: e.command.clone().unwrap_or_default(),
    }
}

fn http_get(
    c: &k8s::Container,
    h: &k8s::HTTPGetAction,
    what: &str,
) -> Result<pb::HttpGetAction, Error> {
    Ok(pb::HttpGetAction {
        path: h.path.clone().unwrap_or_default(),
        port: port(c, &h.port, what)?,
        host: h.host.clone().unwrap_or_default(),
        scheme: h.scheme.clone().unwrap_or_else(|| "HTTP".into()),
        http_headers: h
            .http_headers
            .iter()
            .flatten()
            .map(|x| pb::HttpHeader {
                name: x.name.clone(),
                value: x.value.clone(),
            })
            .collect(),
    })
}

fn tcp_socket(
    c: &k8s::Container,
    t: &k8s::TCPSocketAction,
    what: &str,
) -> Result<pb::TcpSocketAction, Error> {
    Ok(pb::TcpSocketAction {
        port: port(c, &t.port, what)?,
        host: t.host.clone().unwrap_or_default(),
    })
}

/// A probe with Kubernetes' defaults filled in, so a provider never guesses them.
pub fn probe(
    c: &k8s::Container,
    p: Option<&k8s::Probe>,
    what: &str,
) -> Result<Option<pb::Probe>, Error> {
    use pb::probe::Handler;
    let Some(p) = p else { return Ok(None) };
    let handler = if let Some(e) = &p.exec {
        Some(Handler::Exec(exec(e)))
    } else if let Some(h) = &p.http_get {
        Some(Handler::HttpGet(http_get(c, h, what)?))
    } else if let Some(t) = &p.tcp_socket {
        Some(Handler::TcpSocket(tcp_socket(c, t, what)?))
    } else {
        p.grpc.as_ref().map(|g| {
            Handler::Grpc(pb::GrpcAction {
                port: g.port,
                service: g.service.clone().unwrap_or_default(),
            })
        })
    };
    Ok(Some(pb::Probe {
        handler,
        initial_delay_seconds: p.initial_delay_seconds.unwrap_or(0),
        timeout_seconds: p.timeout_seconds.unwrap_or(1),
        period_seconds: p.period_seconds.unwrap_or(10),
        success_threshold: p.success_threshold.unwrap_or(1),
        failure_threshold: p.failure_threshold.unwrap_or(3),
    }))
}

fn handler(
    c: &k8s::Container,
    h: Option<&k8s::LifecycleHandler>,
    what: &str,
) -> Result<Option<pb::LifecycleHandler>, Error> {
    use pb::lifecycle_handler::Action;
    let Some(h) = h else { return Ok(None) };
    let action = if let Some(e) = &h.exec {
        Some(Action::Exec(exec(e)))
    } else if let Some(g) = &h.http_get {
        Some(Action::HttpGet(http_get(c, g, what)?))
    } else if let Some(t) = &h.tcp_socket {
        Some(Action::TcpSocket(tcp_socket(c, t, what)?))
    } else {
        h.sleep.as_ref().map(|s| Action::SleepSeconds(s.seconds))
    };
    Ok(Some(pb::LifecycleHandler { action }))
}

/// postStart and preStop hooks.
pub fn lifecycle(c: &k8s::Container) -> Result<Option<pb::Lifecycle>, Error> {
    let Some(l) = &c.lifecycle else {
        return Ok(None);
    };
    Ok(Some(pb::Lifecycle {
        post_start: handler(c, l.post_start.as_ref(), "postStart hook")?,
        pre_stop: handler(c, l.pre_stop.as_ref(), "preStop hook")?,
    }))
}

fn seccomp(p: Option<&k8s::SeccompProfile>) -> (String, String) {
    p.map(|s| {
        (
            s.type_.clone(),
            s.localhost_profile.clone().unwrap_or_default(),
        )
    })
    .unwrap_or_default()
}

/// A container's own security settings, as written (the pod-level ones travel separately; the
/// provider applies them to containers that do not override them, as Kubernetes does).
pub fn security_context(s: Option<&k8s::SecurityContext>) -> Option<pb::SecurityContext> {
    let s = s?;
    let caps = s.capabilities.as_ref();
    let (seccomp_profile_type, seccomp_localhost_profile) = seccomp(s.seccomp_profile.as_ref());
    Some(pb::SecurityContext {
        privileged: s.privileged,
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        run_as_non_root: s.run_as_non_root,
        read_only_root_filesystem: s.read_only_root_filesystem,
        allow_privilege_escalation: s.allow_privilege_escalation,
        capabilities_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        capabilities_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        seccomp_profile_type,
        seccomp_localhost_profile,
    })
}

/// The pod-level security settings.
pub fn pod_security_context(s: Option<&k8s::PodSecurityContext>) -> Option<pb::PodSecurityContext> {
    let s = s?;
    let (seccomp_profile_type, seccomp_localhost_profile) = seccomp(s.seccomp_profile.as_ref());
    Some(pb::PodSecurityContext {
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        run_as_non_root: s.run_as_non_root,
        fs_group: s.fs_group,
        supplemental_groups: s.supplemental_groups.clone().unwrap_or_default(),
        sysctls: s
            .sysctls
            .iter()
            .flatten()
            .map(|x| pb::Sysctl {
                name: x.name.clone(),
                value: x.value.clone(),
            })
            .collect(),
        seccomp_profile_type,
        seccomp_localhost_profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: serde_json::Value) -> k8s::Container {
        serde_json::from_value(v).expect("container")
    }

    #[test]
    fn probes_get_kubernetes_defaults_and_named_ports() {
        let c = container(serde_json::json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http",
                "httpHeaders": [{"name": "X-A", "value": "b"}]}},
            "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 3},
        }));
        let live = probe(&c, c.liveness_probe.as_ref(), "livenessProbe")
            .unwrap()
            .unwrap();
        let Some(pb::probe::Handler::HttpGet(h)) = &live.handler else {
            panic!("httpGet expected: {live:?}")
        };
        assert_eq!(
            (h.port, h.path.as_str(), h.scheme.as_str()),
            (8080, "/healthz", "HTTP")
        );
        assert_eq!(h.http_headers[0].name, "X-A");
        assert_eq!(
            (
                live.timeout_seconds,
                live.period_seconds,
                live.success_threshold,
                live.failure_threshold
            ),
            (1, 10, 1, 3)
        );
        let ready = probe(&c, c.readiness_probe.as_ref(), "readinessProbe")
            .unwrap()
            .unwrap();
        assert!(
            matches!(ready.handler, Some(pb::probe::Handler::TcpSocket(ref t)) if t.port == 9000)
        );
        assert_eq!(ready.period_seconds, 3);
    }

    #[test]
    fn an_undeclared_named_port_is_invalid() {
        let c = container(serde_json::json!({
            "name": "app",
            "livenessProbe": {"tcpSocket": {"port": "metrics"}},
        }));
        let err = probe(&c, c.liveness_probe.as_ref(), "livenessProbe").unwrap_err();
        assert!(err.to_string().contains("\"metrics\""), "{err}");
    }

    #[test]
    fn hooks_of_every_kind() {
        let c = container(serde_json::json!({
            "name": "app",
            "lifecycle": {
                "postStart": {"exec": {"command": ["sh", "-c", "echo hi"]}},
                "preStop": {"sleep": {"seconds": 7}},
            },
        }));
        let l = lifecycle(&c).unwrap().unwrap();
        assert!(matches!(
            l.post_start.and_then(|h| h.action),
            Some(pb::lifecycle_handler::Action::Exec(ref e)) if e.command.len() == 3
        ));
        assert_eq!(
            l.pre_stop.and_then(|h| h.action),
            Some(pb::lifecycle_handler::Action::SleepSeconds(7))
        );
    }

    #[test]
    fn security_contexts_as_written() {
        let c = container(serde_json::json!({
            "name": "app",
            "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": true,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}},
        }));
        let s = security_context(c.security_context.as_ref()).unwrap();
        assert_eq!(s.run_as_user, Some(1000));
        assert_eq!(s.read_only_root_filesystem, Some(true));
        assert_eq!(s.privileged, None);
        assert_eq!(
            (s.capabilities_add.len(), s.capabilities_drop.len()),
            (1, 1)
        );
        assert_eq!(s.seccomp_profile_type, "RuntimeDefault");
        let p: k8s::PodSecurityContext = serde_json::from_value(serde_json::json!({
            "fsGroup": 2000, "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}],
        }))
        .unwrap();
        let p = pod_security_context(Some(&p)).unwrap();
        assert_eq!(p.fs_group, Some(2000));
        assert_eq!(p.sysctls[0].value, "1024");
    }
}
