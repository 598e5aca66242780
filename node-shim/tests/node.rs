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
    let metrics_port = free_port()?;
    let readyz = || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{metrics_port}/readyz"))
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };

    let mut shim = ManagedProcess::spawn(
        "node-shim",
        Command::new(Path::new(env!("CARGO_BIN_EXE_node-shim")))
            .arg(format!("--node-name={NODE}"))
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg(format!("--provider-endpoint=unix:{}", socket.display()))
            .arg(format!("--kubelet-port={kubelet_port}"))
            .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"))
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
    // The shim's readiness probe (the chart's) follows the provider.
    assert_eq!(readyz(), "503");
    let _server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    wait_ready(&nodes, "True", Duration::from_secs(60)).await?;
    assert_eq!(readyz(), "200");

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

/// `--tls-bootstrap` with certificates that live seven minutes, five of them backdated by the
/// 1.20 signer (so two minutes from now, renewal due in about 36 s): the shim renews its client
/// certificate as the node (a second CSR requested by `system:node:<name>`, auto-approved through
/// selfnodeclient), swaps it in without a restart, and keeps the Lease renewed past the first
/// certificate's expiry; a restart reuses the kept certificate instead of bootstrapping again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_certificate_is_renewed_as_the_node() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = vk_testkit::ControlPlane::start_with(vk_testkit::control_plane::Options {
        cluster_signing_duration: Some(Duration::from_secs(7 * 60)),
    })
    .await?;
    let client = cp.client().await?;
    let node = "vk-renew";
    // As the chart binds it: renewal requests by the node itself are auto-approved.
    cp.run_kubectl(&[
        "create",
        "clusterrolebinding",
        "vk-renew-selfnodeclient",
        "--clusterrole=system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        &format!("--user=system:node:{node}"),
    ])?;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("provider.sock");
    let control = Control::new();
    let _server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let spawn = || {
        ManagedProcess::spawn(
            "node-shim-renew",
            Command::new(Path::new(env!("CARGO_BIN_EXE_node-shim")))
                .arg(format!("--node-name={node}"))
                .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
                .arg(format!("--provider-endpoint=unix:{}", socket.display()))
                .arg(format!("--kubelet-port={}", free_port()?))
                .arg("--metrics-address=off")
                .arg("--serving-cert=self-signed")
                .arg("--tls-bootstrap")
                .arg(format!("--cert-dir={}", dir.path().join("pki").display()))
                .args(["--lease-renew-interval=2s", "--ping-interval=1s"]),
            dir.path(),
        )
    };
    let mut shim = spawn()?;
    let requesters = || -> anyhow::Result<Vec<String>> {
        let out = cp.run_kubectl(&[
            "get",
            "csr",
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            r#"jsonpath={range .items[?(@.spec.signerName=="kubernetes.io/kube-apiserver-client-kubelet")]}{.spec.username}{"\n"}{end}"#,
        ])?;
        Ok(out.lines().map(str::to_owned).collect())
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let result = async {
        eventually(Duration::from_secs(60), "node registered", || async {
            Ok(nodes.get_opt(node).await?)
        })
        .await?;
        let first_cert = std::fs::read(dir.path().join("pki/node-client.crt"))?;
        // The bootstrap request came from the starting (admin) credentials; the renewal from the
        // node itself.
        eventually(
            Duration::from_secs(200),
            "a renewal requested by the node",
            || async {
                let who = requesters()?;
                Ok((who.len() >= 2 && who[1] == format!("system:node:{node}")).then_some(who))
            },
        )
        .await?;
        eventually(
            Duration::from_secs(60),
            "the renewed certificate kept",
            || async {
                let now = std::fs::read(dir.path().join("pki/node-client.crt"))?;
                Ok((now != first_cert).then_some(()))
            },
        )
        .await?;
        // Past the first certificate's expiry the node still heartbeats: the renewed one is in use.
        let first_expiry = first_expiry(&first_cert)?;
        let until_expired = first_expiry
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        tracing::info!(
            ?until_expired,
            "waiting past the first certificate's expiry"
        );
        tokio::time::sleep(until_expired + Duration::from_secs(5)).await;
        let renewed_at = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0);
        let before = leases.get(node).await.map(renewed_at)?;
        let after = eventually(Duration::from_secs(30), "lease renewed again", || async {
            let now = leases.get(node).await.map(renewed_at)?;
            Ok((now > before).then_some(now))
        })
        .await?;
        tracing::info!(
            ?before,
            ?after,
            "lease renewed with the renewed certificate"
        );
        let log = std::fs::read_to_string(shim.log_path())?;
        anyhow::ensure!(
            !log.contains("Unauthorized") && !log.contains("forbidden"),
            "the shim was refused"
        );

        // A restart uses the kept certificate: no new bootstrap request from the admin.
        let count = requesters()?.len();
        shim.stop(Duration::from_secs(10)).await?;
        shim = spawn()?;
        eventually(Duration::from_secs(30), "reuse logged", || async {
            let log = std::fs::read_to_string(shim.log_path())?;
            Ok(log
                .contains("using the node client certificate kept from before")
                .then_some(()))
        })
        .await?;
        let before = leases.get(node).await.map(renewed_at)?;
        eventually(
            Duration::from_secs(30),
            "lease renewed after restart",
            || async {
                let now = leases.get(node).await.map(renewed_at)?;
                Ok((now > before).then_some(()))
            },
        )
        .await?;
        let who = requesters()?;
        anyhow::ensure!(
            who.iter()
                .skip(count)
                .all(|u| *u == format!("system:node:{node}")),
            "a restart bootstrapped again: {who:?}"
        );
        Ok(())
    }
    .await;
    result.map_err(|err: anyhow::Error| {
        err.context(format!("--- shim log ---\n{}", shim.log_excerpt(60)))
    })
}

/// The `notAfter` of the first certificate in a PEM file.
fn first_expiry(pem: &[u8]) -> anyhow::Result<std::time::SystemTime> {
    let text = String::from_utf8_lossy(pem);
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)?;
    let secs = u64::try_from(cert.validity().not_after.timestamp())?;
    Ok(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A TCP relay to the API server that can be cut (listener closed, every relayed connection
/// dropped) and restored on the same port: an API server outage as the shim sees it.
struct Relay {
    port: u16,
    upstream: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(upstream: &str) -> anyhow::Result<Self> {
        let mut relay = Self {
            port: free_port()?,
            upstream: upstream.to_owned(),
            task: None,
        };
        relay.restore().await?;
        Ok(relay)
    }

    async fn restore(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await?;
        let upstream = self.upstream.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        }));
        Ok(())
    }

    /// Dropping the task drops the listener and the JoinSet, which aborts every relayed
    /// connection.
    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_serving_certificate_request_outlives_an_api_server_outage() -> anyhow::Result<()>
{
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let node = "vk-csr-outage";
    let upstream = cp
        .server
        .strip_prefix("https://")
        .unwrap_or(&cp.server)
        .to_owned();
    let mut relay = Relay::start(&upstream).await?;
    let dir = tempfile::tempdir()?;
    // The admin kubeconfig, through the relay (its address is 127.0.0.1 too, which the API
    // server's certificate names).
    let kubeconfig = dir.path().join("relayed.kubeconfig");
    std::fs::write(
        &kubeconfig,
        std::fs::read_to_string(&cp.kubeconfig)?
            .replace(&cp.server, &format!("https://127.0.0.1:{}", relay.port)),
    )?;
    let socket = dir.path().join("provider.sock");
    let control = Control::new();
    let _server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let kubelet_port = free_port()?;
    let mut shim = ManagedProcess::spawn(
        "node-shim-csr-outage",
        Command::new(Path::new(env!("CARGO_BIN_EXE_node-shim")))
            .arg(format!("--node-name={node}"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--provider-endpoint=unix:{}", socket.display()))
            .arg(format!("--kubelet-port={kubelet_port}"))
            .arg("--metrics-address=off")
            .arg("--serving-cert=csr")
            .arg("--ping-interval=1s"),
        dir.path(),
    )?;
    let result = async {
        let csr = eventually(Duration::from_secs(60), "the serving CSR", || async {
            let out = cp.run_kubectl(&["get", "csr", "-o", "name"])?;
            Ok(out
                .lines()
                .map(|l| l.trim_start_matches("certificatesigningrequest.certificates.k8s.io/"))
                .find(|n| n.starts_with(&format!("csr-{node}-")))
                .map(str::to_owned))
        })
        .await?;
        // The outage while the request waits for an approver: the shim keeps waiting.
        relay.cut().await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        anyhow::ensure!(
            shim.exited().is_none(),
            "the shim exited during the outage: {}",
            shim.log_tail(10)
        );
        relay.restore().await?;
        cp.run_kubectl(&["certificate", "approve", &csr])?;
        eventually(
            Duration::from_secs(60),
            "the kubelet API serving with the signed certificate",
            || async {
                Ok(tokio::net::TcpStream::connect(("127.0.0.1", kubelet_port))
                    .await
                    .ok()
                    .map(drop))
            },
        )
        .await?;
        anyhow::ensure!(shim.exited().is_none(), "{}", shim.log_tail(10));
        Ok(())
    }
    .await;
    shim.stop(Duration::from_secs(5)).await?;
    result
}
