//! Issue 8's acceptance on ACI: the AKS walk-throughs' manifests (examples/acceptance/), unchanged,
//! through kubectl, the real kube-scheduler and a real `node-shim` onto a virtual node tainted
//! `azure.com/aci`, backed by a real `provider-aci` against the ACI emulator:
//! - aci-helloworld and aks-sample run as container groups, `kubectl logs` answers the emulator's
//!   lines; aks-sample scaled to 20 and back to 3 leaves exactly 3 groups; deleting everything
//!   leaves none;
//! - a Secret-derived env value reaches ACI only as `secureValue` and no log file of any process;
//! - a pod whose limit exceeds its request fails with ProviderFailed and ACI's message.

mod support;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, api::ListParams};
use support::start_with_emulator;
use vk_testkit::{
    ControlPlane,
    aci_emulator::{AciEmulator, AciEmulatorOptions},
    process::ManagedProcess,
    shim::{example, spawn_shim_with_kubelet_api},
    wait,
};

const MANIFESTS: [&str; 2] = [
    "aci-helloworld-deployment.yaml",
    "aks-sample-deployment.yaml",
];
const SLOW: Duration = Duration::from_secs(120);
const NODE: &str = "vk-aci";
const SECRET_VALUE: &str = "pa55-from-a-k8s-secret";

const SECRET_POD: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: pa55-from-a-k8s-secret
---
apiVersion: v1
kind: Pod
metadata:
  name: with-secret
spec:
  containers:
  - name: app
    image: busybox:1.36
    env:
    - name: DB_PASSWORD
      valueFrom:
        secretKeyRef: {name: db, key: password}
  nodeSelector:
    type: virtual-kubelet
  tolerations:
  - key: virtual-kubelet.io/provider
    operator: Exists
  - key: azure.com/aci
    effect: NoSchedule
---
apiVersion: v1
kind: Pod
metadata:
  name: too-big
spec:
  containers:
  - name: app
    image: busybox:1.36
    resources:
      requests: {cpu: 500m, memory: 1G}
      limits: {cpu: "2", memory: 1G}
  nodeSelector:
    type: virtual-kubelet
  tolerations:
  - key: virtual-kubelet.io/provider
    operator: Exists
  - key: azure.com/aci
    effect: NoSchedule
"#;

/// The VNet subnet the provider runs groups in, as AKS virtual nodes do: every pod gets an IP.
const SUBNET: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/vk-rg/providers/Microsoft.Network/virtualNetworks/vk-vnet/subnets/aci";

/// Running and Ready with a pod IP (VNet mode), and not being deleted.
fn running_and_ready(p: &Pod) -> bool {
    wait::running_and_ready(p) && p.metadata.deletion_timestamp.is_none()
}

fn has_label(p: &Pod, value: &str) -> bool {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app"))
        .is_some_and(|v| v == value)
}

/// Names of the container groups in the emulator's resource group whose pod has label `app`.
async fn live_groups(emu: &AciEmulator) -> anyhow::Result<u64> {
    Ok(emu.stats().await?.live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_manifests_run_scale_and_delete_on_aci() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default().log_heartbeat_ms(500);
    let (emu, provider, _, addr) =
        start_with_emulator(dir.path(), opts, &["--subnet-ids", SUBNET]).await?;
    let cp = ControlPlane::start().await?;
    // kubectl logs goes API server → kubelet port: serve TLS at once, accept the API server's
    // client certificate.
    let mut shim = spawn_shim_with_kubelet_api(
        &cp,
        dir.path(),
        NODE,
        &addr,
        &["--extra-taint=azure.com/aci:NoSchedule"],
    )?;
    let client = cp.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let result = async {
        node_ready(&Api::all(client), &mut shim).await?;
        scenario(&cp, &emu, &pods, dir.path()).await
    }
    .await;
    let result = result.and_then(|()| {
        // No process wrote the Secret's value to its log.
        let mut files = vec![
            provider.log_path().to_owned(),
            shim.log_path().to_owned(),
            emu.process.log_path().to_owned(),
        ];
        for entry in walk(cp.dir()) {
            if entry.extension().is_some_and(|e| e == "log") {
                files.push(entry);
            }
        }
        ensure!(
            files.len() > 3,
            "no control plane log files found in {:?}",
            cp.dir()
        );
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            ensure!(
                !text.contains(SECRET_VALUE),
                "the Secret's value is in {}",
                f.display()
            );
        }
        Ok(())
    });
    vk_testkit::process::with_logs(result, &[&shim, &provider])
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn node_ready(nodes: &Api<Node>, shim: &mut ManagedProcess) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        shim.ensure_running()?;
        let node = nodes.get_opt(NODE).await?;
        let ready = node.as_ref().is_some_and(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if ready {
            let taints = node
                .and_then(|n| n.spec)
                .and_then(|s| s.taints)
                .unwrap_or_default();
            ensure!(
                taints.iter().any(|t| t.key == "azure.com/aci"),
                "node lacks the azure.com/aci taint: {taints:?}"
            );
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "node {NODE} not Ready after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scenario(
    cp: &ControlPlane,
    emu: &AciEmulator,
    pods: &Api<Pod>,
    dir: &Path,
) -> anyhow::Result<()> {
    for file in MANIFESTS {
        cp.run_kubectl(&["apply", "-f", &example(file)])?;
    }
    let extra = dir.join("secret-and-invalid.yaml");
    std::fs::write(&extra, SECRET_POD)?;
    cp.run_kubectl(&["apply", "-f", &extra.display().to_string()])?;

    wait::slowly(
        SLOW,
        "aci-helloworld 1, aks-sample 3 and with-secret Running",
        || async {
            let all = pods.list(&ListParams::default()).await?.items;
            let n = |app: &str| {
                all.iter()
                    .filter(|p| has_label(p, app) && running_and_ready(p))
                    .count()
            };
            let secret_pod = all
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some("with-secret") && running_and_ready(p));
            Ok((n("aci-helloworld") == 1 && n("aks-sample") == 3 && secret_pod).then_some(()))
        },
    )
    .await?;
    ensure!(live_groups(emu).await? == 5, "{:?}", emu.stats().await?);

    // The invalid pod failed with ACI's message.
    let too_big = wait::slowly(SLOW, "too-big failed", || async {
        let p = pods.get("too-big").await?;
        let s = p.status.unwrap_or_default();
        Ok((s.phase.as_deref() == Some("Failed")).then_some(s))
    })
    .await?;
    ensure!(
        too_big.reason.as_deref() == Some("ProviderFailed"),
        "{too_big:?}"
    );
    ensure!(
        too_big.message.as_deref().is_some_and(|m| m.contains(
            "The 'Cpu' limit '2' in container 'app' is greater than the total request '0.5'"
        )),
        "{too_big:?}"
    );

    // The Secret's value went to ACI as secureValue only.
    let secret_pod = pods.get("with-secret").await?;
    let uid = secret_pod.metadata.uid.clone().context("no uid")?;
    let group = format!(
        "vk-default-with-secret-{}",
        provider_common_hash(&["default", "with-secret", &uid])
    );
    let stored = emu
        .stored_group(&group)
        .await?
        .with_context(|| format!("group {group} not stored"))?;
    let env = &stored["properties"]["containers"][0]["properties"]["environmentVariables"];
    ensure!(
        env.as_array()
            .is_some_and(|v| v.iter().any(|e| e["name"] == "DB_PASSWORD"
                && e["secureValue"] == SECRET_VALUE
                && e.get("value").is_none())),
        "DB_PASSWORD not a secureValue: {env}"
    );

    // kubectl logs answers the emulator's lines.
    let hello = pods
        .list(&ListParams::default().labels("app=aci-helloworld"))
        .await?
        .items
        .into_iter()
        .next()
        .and_then(|p| p.metadata.name)
        .context("no aci-helloworld pod")?;
    let logs = wait::slowly(SLOW, "kubectl logs shows a heartbeat", || async {
        let out = cp.run_kubectl(&["logs", &hello])?;
        Ok(out.contains("heartbeat 1").then_some(out))
    })
    .await?;
    ensure!(
        logs.starts_with(
            "Emulated container aci-helloworld started from image microsoft/aci-helloworld"
        ),
        "{logs}"
    );

    // Scale out to 20 and back to 3: exactly as many groups as pods.
    cp.run_kubectl(&["scale", "deployment/aks-sample", "--replicas=20"])?;
    let aks = |n: usize| {
        let what = format!("{n} aks-sample pods Running and {} groups", n + 2);
        async move {
            wait::slowly(SLOW, &what, || async {
                let all = pods
                    .list(&ListParams::default().labels("app=aks-sample"))
                    .await?
                    .items;
                let ready = all.iter().filter(|p| running_and_ready(p)).count();
                let live = live_groups(emu).await?;
                Ok((ready == n && all.len() == n && live == (n + 2) as u64).then_some(()))
            })
            .await
        }
    };
    aks(20).await?;
    cp.run_kubectl(&["scale", "deployment/aks-sample", "--replicas=3"])?;
    aks(3).await?;

    // Deleting everything leaves no pod and no container group.
    for file in MANIFESTS {
        cp.run_kubectl(&["delete", "--wait=false", "-f", &example(file)])?;
    }
    cp.run_kubectl(&["delete", "--wait=false", "-f", &extra.display().to_string()])?;
    wait::slowly(SLOW, "no pod in the API and no container group", || async {
        let left = pods.list(&ListParams::default()).await?.items.len();
        let live = live_groups(emu).await?;
        Ok((left == 0 && live == 0).then_some(()))
    })
    .await?;
    let stats = emu.stats().await?;
    if stats.created != stats.deleted {
        bail!(
            "groups created {} but deleted {}: {stats:?}",
            stats.created,
            stats.deleted
        );
    }
    Ok(())
}

/// `provider_common::naming::short_hash(parts, 8)`, recomputed here from its definition
/// (SHA-256 over NUL-terminated parts).
fn provider_common_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}
