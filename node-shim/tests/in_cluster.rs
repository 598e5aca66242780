//! The chart as users install it: `helm install` with the locally built images (scripts/images.sh)
//! onto a real kubelet node (containerd + runc, testkit's `KubeletNode`) of the test cluster; the
//! shim + provider-eci pod Running there against the ECI emulator on loopback; the virtual node
//! Ready; the ECI acceptance manifest Running on it with `kubectl logs` and `kubectl exec` through
//! the in-cluster shim; `helm upgrade` to another image tag replaces the shim pod while the virtual
//! pod keeps running with no cloud create or delete; `helm uninstall` drains the node (its pod and
//! container group gone) and leaves no Node or Lease.

mod support;

use std::{path::PathBuf, process::Command as StdCommand, time::Duration};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{Api, api::ListParams};
use serde_json::json;
use support::kubectl;
use vk_testkit::{
    ControlPlane,
    bins::cache_dir,
    eci_emulator::{self, EciEmulator, EciEmulatorOptions},
    kubelet_node::{KubeletNode, image_tarball},
    ports::free_port,
    wait::eventually,
};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm");
const NAMESPACE: &str = "vk-system";
const RELEASE: &str = "vn";
const VIRTUAL_NODE: &str = "vk-in-cluster";
const SLOW: Duration = Duration::from_secs(180);

fn helm(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let out = StdCommand::new(cache_dir().join("helm/helm"))
        .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
        .args(args)
        .output()
        .context("running helm")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("helm {args:?} failed: {text}");
    }
    Ok(text)
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && p.metadata.deletion_timestamp.is_none()
}

/// The shim pod of the release (there is one at a time: the Deployment recreates it).
async fn shim_pod(pods: &Api<Pod>) -> anyhow::Result<Option<Pod>> {
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await?;
    Ok(list.items.into_iter().find(|p| {
        running(p)
            && p.metadata.labels.as_ref().is_some_and(|l| {
                !l.contains_key("batch.kubernetes.io/job-name") && !l.contains_key("job-name")
            })
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the images: scripts/test.sh runs it after scripts/images.sh"]
async fn chart_installs_upgrades_and_uninstalls_on_a_real_node() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let dir = tempfile::tempdir()?;
    let cp = ControlPlane::start().await?;
    let emu = EciEmulator::start(
        dir.path(),
        EciEmulatorOptions {
            log_heartbeat_ms: 500,
            ..Default::default()
        },
    )
    .await?;
    let images: Vec<PathBuf> = ["node-shim", "provider-eci"]
        .iter()
        .map(|n| image_tarball(n))
        .collect::<anyhow::Result<_>>()?;
    let node = KubeletNode::start(&cp, &images).await?;
    let result = scenario(&cp, &emu, &node, dir.path()).await;
    let result = result.map_err(|err| {
        err.context(format!(
            "--- kubelet log (tail) ---\n{}\n--- shim pod log ---\n{}",
            node.log_tail("kubelet", 40),
            kubectl(
                &cp,
                &[
                    "logs",
                    "-n",
                    NAMESPACE,
                    "-l",
                    &format!("app.kubernetes.io/instance={RELEASE}"),
                    "-c",
                    "node-shim",
                    "--tail=40"
                ],
            )
            .unwrap_or_default()
        ))
    });
    node.stop().await?;
    result
}

async fn scenario(
    cp: &ControlPlane,
    emu: &EciEmulator,
    node: &KubeletNode,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let client = cp.client().await?;
    let version = env!("CARGO_PKG_VERSION");
    // The other tag of the same images: `<version>-<git rev>`, as scripts/images.sh tags them.
    let rev_tag = node
        .images()?
        .into_iter()
        .find_map(|i| {
            i.strip_prefix("docker.io/vk-rs/node-shim:")
                .filter(|t| t.starts_with(&format!("{version}-")))
                .map(str::to_owned)
        })
        .context("no node-shim:<version>-<rev> image imported")?;

    kubectl(cp, &["create", "namespace", NAMESPACE])?;
    kubectl(
        cp,
        &[
            "create",
            "secret",
            "generic",
            "eci-credentials",
            "-n",
            NAMESPACE,
            &format!(
                "--from-literal=ALIBABA_CLOUD_ACCESS_KEY_ID={}",
                eci_emulator::ACCESS_KEY_ID
            ),
            &format!(
                "--from-literal=ALIBABA_CLOUD_ACCESS_KEY_SECRET={}",
                eci_emulator::ACCESS_KEY_SECRET
            ),
        ],
    )?;
    let (kubelet_port, shim_metrics, provider_metrics) = (free_port()?, free_port()?, free_port()?);
    let values = |tag: &str| {
        json!({
            "provider": "eci",
            "nodeName": VIRTUAL_NODE,
            "clusterId": "in-cluster-test",
            "image": {"registry": "docker.io/vk-rs", "tag": tag, "pullPolicy": "Never"},
            // No kube-proxy here: the pod shares the host's network and reaches the API server
            // on loopback, as the kubelet does.
            "hostNetwork": true,
            "apiServer": {"host": "127.0.0.1", "port": cp.port},
            "kubelet": {"port": kubelet_port},
            "metrics": {"shimPort": shim_metrics, "providerPort": provider_metrics},
            "credentials": {"existingSecret": "eci-credentials"},
            "providerConfig": {"eci": {
                "region": eci_emulator::REGION,
                "endpoint": emu.endpoint,
                "vswitch-id": eci_emulator::VSWITCH_ID,
                "security-group-id": eci_emulator::SECURITY_GROUP_ID,
                "zone-id": eci_emulator::ZONE_ID,
                "status-interval-seconds": 1,
            }},
            "nodeSelector": {"kubernetes.io/hostname": node.name},
        })
    };
    let write_values = |name: &str, tag: &str| -> anyhow::Result<String> {
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_vec(&values(tag))?)?;
        Ok(file.display().to_string())
    };

    helm(
        cp,
        &[
            "install",
            RELEASE,
            CHART,
            "-n",
            NAMESPACE,
            "-f",
            &write_values("install", version)?,
        ],
    )?;
    let ns_pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let first = eventually(
        SLOW,
        "the shim + provider pod Running on the real node",
        || async {
            Ok(shim_pod(&ns_pods).await?.filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.name.as_str())
            }))
        },
    )
    .await?;
    // The node's serving certificate, requested as the node; an approver would do this.
    let csr = eventually(SLOW, "the virtual node's serving CSR", || async {
        let out = kubectl(cp, &["get", "csr", "-o", "name"])?;
        Ok(out
            .lines()
            .map(|l| l.trim_start_matches("certificatesigningrequest.certificates.k8s.io/"))
            .find(|n| n.starts_with(&format!("csr-{VIRTUAL_NODE}-")))
            .map(str::to_owned))
    })
    .await?;
    kubectl(cp, &["certificate", "approve", &csr])?;
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(SLOW, "the virtual node Ready", || async {
        let n = nodes.get_opt(VIRTUAL_NODE).await?;
        Ok(n.and_then(|n| n.status?.conditions)
            .filter(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            .map(|_| ()))
    })
    .await?;

    // The ECI walk-through's pod, unchanged.
    kubectl(
        cp,
        &["apply", "-f", &support::example("eci-nginx-pod.yaml")],
    )?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mypod = eventually(SLOW, "mypod Running on the virtual node", || async {
        Ok(pods.get_opt("mypod").await?.filter(|p| {
            running(p) && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(VIRTUAL_NODE)
        }))
    })
    .await?;
    let logs = eventually(SLOW, "kubectl logs mypod", || async {
        Ok(kubectl(cp, &["logs", "mypod"])
            .ok()
            .filter(|l| !l.is_empty()))
    })
    .await?;
    ensure!(
        logs.contains("heartbeat") || !logs.is_empty(),
        "logs: {logs}"
    );
    let exec = kubectl(cp, &["exec", "mypod", "--", "echo", "in-cluster-exec"])?;
    ensure!(exec.contains("in-cluster-exec"), "exec: {exec}");

    // Upgrade to the other tag: a new shim pod, the virtual pod untouched, no cloud call that
    // creates or deletes.
    let before = emu.stats().await?;
    helm(
        cp,
        &[
            "upgrade",
            RELEASE,
            CHART,
            "-n",
            NAMESPACE,
            "-f",
            &write_values("upgrade", &rev_tag)?,
        ],
    )?;
    let first_uid = first.metadata.uid.clone();
    eventually(SLOW, "a new shim pod on the new tag", || async {
        Ok(shim_pod(&ns_pods).await?.filter(|p| {
            p.metadata.uid != first_uid
                && p.spec.as_ref().is_some_and(|s| {
                    s.containers
                        .iter()
                        .any(|c| c.image.as_deref().is_some_and(|i| i.ends_with(&rev_tag)))
                })
        }))
    })
    .await?;
    eventually(SLOW, "the virtual node Ready again", || async {
        let n = nodes.get_opt(VIRTUAL_NODE).await?;
        Ok(n.and_then(|n| n.status?.conditions)
            .filter(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            .map(|_| ()))
    })
    .await?;
    // Give the new shim time to reconcile what runs.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = emu.stats().await?;
    let still = pods.get("mypod").await?;
    ensure!(
        still.metadata.uid == mypod.metadata.uid && running(&still),
        "mypod did not survive the upgrade"
    );
    ensure!(
        after.created == before.created && after.deleted == before.deleted,
        "the upgrade created or deleted cloud workloads: {before:?} -> {after:?}"
    );

    // Uninstall: the pre-delete hook drains the node.
    helm(
        cp,
        &["uninstall", RELEASE, "-n", NAMESPACE, "--timeout", "5m"],
    )
    .map_err(|err| {
        let hook = kubectl(
            cp,
            &[
                "logs",
                "-n",
                NAMESPACE,
                "-l",
                "job-name",
                "--tail=30",
                "--prefix",
            ],
        )
        .unwrap_or_else(|e| e.to_string());
        err.context(format!("--- deregister hook log ---\n{hook}"))
    })?;
    ensure!(
        pods.get_opt("mypod").await?.is_none(),
        "mypod outlived the uninstall"
    );
    eventually(SLOW, "no container group left", || async {
        Ok((emu.stats().await?.live == 0).then_some(()))
    })
    .await?;
    ensure!(
        nodes.get_opt(VIRTUAL_NODE).await?.is_none(),
        "the virtual Node is left"
    );
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    eventually(SLOW, "the virtual node's Lease collected", || async {
        Ok(leases.get_opt(VIRTUAL_NODE).await?.is_none().then_some(()))
    })
    .await
}
