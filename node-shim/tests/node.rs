//! The virtual Node, end to end: the real shim binary against the real control plane and the test
//! provider over a unix socket.

use std::{path::Path, time::Duration};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use kube::Api;
use provider_common::ListenAddr;
use tokio::process::Command;
use vk_testkit::{
    ControlPlane, ports::free_port, process::ManagedProcess, test_provider::Control,
    wait::eventually,
};

const NODE: &str = "vk-node";

fn ready(node: &Node) -> Option<(String, Option<String>)> {
    let c = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn wait_ready(nodes: &Api<Node>, want: &str, timeout: Duration) -> anyhow::Result<Node> {
    eventually(timeout, &format!("node Ready={want}"), || async {
        let node = nodes.get_opt(NODE).await?;
        Ok(node.filter(|n| ready(n).is_some_and(|(s, _)| s == want)))
    })
    .await
}

#[tokio::test]
async fn node_registers_heartbeats_and_follows_provider_health() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("provider.sock");
    let control = Control::new();
    // Suggestions a provider may get wrong: a reserved label, a bad taint effect.
    control.set_node_suggestions(
        &[
            ("node-restriction.kubernetes.io/x", "y"),
            ("example.com/tier", "virtual"),
        ],
        &[
            ("example.com/bad", "v", "Sometimes"),
            ("example.com/good", "v", "PreferNoSchedule"),
        ],
    );
    let server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let kubelet_port = free_port()?;

    let mut shim = ManagedProcess::spawn(
        "node-shim",
        Command::new(Path::new(env!("CARGO_BIN_EXE_node-shim")))
            .arg(format!("--node-name={NODE}"))
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg(format!("--provider-endpoint=unix:{}", socket.display()))
            .arg(format!("--kubelet-port={kubelet_port}"))
            .arg("--metrics-address=off")
            .args([
                "--lease-renew-interval=1s",
                "--ping-interval=1s",
                "--node-status-period=10s",
            ])
            .arg("--extra-taint=azure.com/aci:NoSchedule"),
        dir.path(),
    )?;

    let nodes: Api<Node> = Api::all(client.clone());
    let node = wait_ready(&nodes, "True", Duration::from_secs(30)).await?;

    // Labels, taints, capacity, addresses, kubelet endpoint and version, as SPEC §3 lists them.
    let labels = node.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [
        ("type", "virtual-kubelet"),
        ("kubernetes.io/role", "agent"),
        ("kubernetes.io/hostname", NODE),
        ("kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/os", "linux"),
        (
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "true",
        ),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    // The provider's suggestions are filtered: a reserved label never reaches the Node, a valid
    // one does; a bad taint is skipped (the shim runs on) and a good one is applied.
    assert!(
        !labels.contains_key("node-restriction.kubernetes.io/x"),
        "{labels:?}"
    );
    assert_eq!(
        labels.get("example.com/tier").map(String::as_str),
        Some("virtual")
    );
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(
        !taints.iter().any(|t| t.key == "example.com/bad"),
        "{taints:?}"
    );
    assert!(
        taints
            .iter()
            .any(|t| t.key == "example.com/good" && t.effect == "PreferNoSchedule"),
        "{taints:?}"
    );
    let provider_taint = taints
        .iter()
        .find(|t| t.key == "virtual-kubelet.io/provider")
        .expect("provider taint");
    assert_eq!(
        (
            provider_taint.value.as_deref(),
            provider_taint.effect.as_str()
        ),
        (Some("test"), "NoSchedule")
    );
    assert!(
        taints
            .iter()
            .any(|t| t.key == "azure.com/aci" && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    let status = node.status.clone().expect("status");
    let capacity = status.capacity.clone().unwrap_or_default();
    assert_eq!(capacity.get("cpu").map(|q| q.0.as_str()), Some("1k"));
    assert_eq!(capacity.get("memory").map(|q| q.0.as_str()), Some("4Ti"));
    assert_eq!(capacity.get("pods").map(|q| q.0.as_str()), Some("20k"));
    assert_eq!(
        status.allocatable, status.capacity,
        "allocatable defaults to capacity"
    );
    let info = status.node_info.clone().expect("nodeInfo");
    assert_eq!(info.kubelet_version, "v1.20.2-vk-test-0.0.1");
    let addresses = status.addresses.clone().unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1"),
        "{addresses:?}"
    );
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port);
    assert_eq!(port, Some(i32::from(kubelet_port)));

    // The Lease is owned by the Node and keeps renewing.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    // The Lease is written right after the Node's status; give it the moment it needs.
    let lease = eventually(Duration::from_secs(30), "node Lease", || async {
        Ok(leases.get_opt(NODE).await?)
    })
    .await?;
    let owner = lease.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].name.as_str()),
        ("Node", NODE)
    );
    assert_eq!(Some(&owner[0].uid), node.metadata.uid.as_ref());
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.lease_duration_seconds, Some(40));
    assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
    let first = spec.renew_time.expect("renewTime").0;
    eventually(Duration::from_secs(10), "a lease renewal", || async {
        let renewed = leases
            .get(NODE)
            .await?
            .spec
            .and_then(|s| s.renew_time)
            .map(|t| t.0);
        Ok(renewed.filter(|t| *t > first))
    })
    .await?;

    // Provider down ⇒ NotReady with a reason within 60 s; back ⇒ Ready.
    server.stop().await?;
    let down = tokio::time::Instant::now();
    let node = wait_ready(&nodes, "False", Duration::from_secs(60)).await?;
    assert_eq!(
        ready(&node).and_then(|(_, r)| r).as_deref(),
        Some("ProviderUnreachable")
    );
    tracing::info!("NotReady {:?} after the provider stopped", down.elapsed());
    let _server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    wait_ready(&nodes, "True", Duration::from_secs(60)).await?;

    // Not ready by the provider's own word, with its reason.
    control.set_not_ready(Some(("QuotaExhausted", "no vCPU quota left in the region")));
    let node = wait_ready(&nodes, "False", Duration::from_secs(30)).await?;
    assert_eq!(
        ready(&node).and_then(|(_, r)| r).as_deref(),
        Some("QuotaExhausted")
    );
    control.set_not_ready(None);
    wait_ready(&nodes, "True", Duration::from_secs(30)).await?;

    // Capacity changes at run time reach the Node.
    control.set_capacity(&[("cpu", "2000"), ("memory", "8Ti"), ("pods", "20000")]);
    eventually(Duration::from_secs(30), "capacity cpu=2k", || async {
        let node = nodes.get(NODE).await?;
        let cpu = node
            .status
            .and_then(|s| s.capacity)
            .and_then(|c| c.get("cpu").cloned());
        Ok(cpu.filter(|q| q.0 == "2k"))
    })
    .await?;

    // SIGTERM stops the shim cleanly and leaves the Node in place.
    let exit = shim.stop(Duration::from_secs(10)).await?;
    assert!(
        exit.success(),
        "shim exited with {exit}; log:\n{}",
        shim.log_tail(20)
    );
    assert!(nodes.get_opt(NODE).await?.is_some());
    Ok(())
}
