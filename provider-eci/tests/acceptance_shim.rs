//! Issue 9's acceptance on ECI: acceptance manifests (examples/acceptance/), unchanged, through
//! kubectl, the real kube-scheduler and two real `node-shim` processes onto virtual nodes backed by
//! one real `provider-eci` against the ECI emulator:
//! - `eci-nginx-pod.yaml` runs on the node whose taint key is `alibabacloud.com/eci`, as a
//!   container group, and `kubectl logs` shows the container's log;
//! - `aks-sample-deployment.yaml` (which tolerates `virtual-kubelet.io/provider` + `azure.com/aci`)
//!   runs on the second node; scaled to 20 it has 20 groups, back to 3 exactly 3;
//! - deleting everything leaves no pod and no container group.

mod support;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, api::ListParams};
use podprovider_proto::v1::PodRef;
use provider_common::naming::{self, NameRules};
use support::start_with_emulator;
use vk_testkit::{
    ControlPlane,
    eci_emulator::{EciEmulator, EciEmulatorOptions},
    shim::{self, example},
    wait,
};

const MANIFESTS: [&str; 2] = ["aks-sample-deployment.yaml", "eci-nginx-pod.yaml"];
/// Deadline for each step.
const SLOW: Duration = Duration::from_secs(120);
/// The ACI walk-throughs' node: the default provider taint plus `azure.com/aci`.
const ACI_NODE: &str = "vk-eci-aci";
/// The ECI walk-through tolerates only `alibabacloud.com/eci`: that node's taint key.
const ECI_NODE: &str = "vk-eci";

/// The stored container group of a pod (by the group name the provider derives from the pod),
/// if the emulator has it with the pod's UID tag.
async fn group_of(emu: &EciEmulator, p: &Pod) -> anyhow::Result<Option<serde_json::Value>> {
    let r = PodRef {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
    };
    let name = naming::resource_name("vk", &r, &NameRules::dns_label(128));
    let Some(g) = emu.stored_group(&name).await? else {
        return Ok(None);
    };
    let params = &g["params"];
    let tagged = (1..=10).any(|i| {
        params[format!("Tag.{i}.Key")] == "vk-pod-uid"
            && params[format!("Tag.{i}.Value")] == r.uid.as_str()
    });
    Ok(tagged.then_some(g))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_manifests_run_scale_and_delete_on_eci() -> anyhow::Result<()> {
    let dir = shim::prepare()?;
    let opts = EciEmulatorOptions::default().log_heartbeat_ms(500);
    let (emu, provider, _, addr) = start_with_emulator(dir.path(), opts).await?;
    let cp = ControlPlane::start().await?;
    // The ECI node serves `kubectl logs`: it accepts the API server's kubelet client certificate.
    let client_ca = format!("--client-ca-file={}", cp.pki.ca_files.cert.display());
    let nodes = [ACI_NODE, ECI_NODE];
    let (mut aci, mut eci) =
        shim::spawn_acceptance_shims(&cp, dir.path(), &addr, nodes, &[&client_ca])?;
    let client = cp.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let result = async {
        let nodes: Api<Node> = Api::all(client);
        wait::nodes_ready(&nodes, &[ACI_NODE, ECI_NODE], &mut [&mut aci, &mut eci]).await?;
        // The node eci-nginx-pod.yaml tolerates: its provider taint's key is alibabacloud.com/eci.
        let taints = nodes
            .get(ECI_NODE)
            .await?
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default();
        ensure!(
            taints
                .iter()
                .any(|t| t.key == "alibabacloud.com/eci" && t.effect == "NoSchedule"),
            "the ECI node's taints: {taints:?}"
        );
        ensure!(
            !taints
                .iter()
                .any(|t| t.key == "virtual-kubelet.io/provider"),
            "the ECI node still has the default provider taint: {taints:?}"
        );
        scenario(&cp, &emu, &pods).await
    }
    .await;
    vk_testkit::process::with_logs(result, &[&aci, &eci, &provider])
}

/// `n` pods with `label`, Running and Ready on `node`, each with its container group (and, with
/// `exact`, no other pod of that label in the API).
async fn running_with_groups(
    emu: &EciEmulator,
    pods: &Api<Pod>,
    selector: &str,
    node: &str,
    n: usize,
    exact: bool,
) -> anyhow::Result<Vec<Pod>> {
    let what = format!("{n} pods {selector} Running on {node} with their groups");
    wait::slowly(SLOW, &what, || async {
        let all = pods
            .list(&ListParams::default().labels(selector))
            .await?
            .items;
        if let Some(failure) = wait::provider_failure(&all) {
            bail!("{failure}");
        }
        let running: Vec<Pod> = all
            .iter()
            .filter(|p| wait::running_and_ready(p) && p.metadata.deletion_timestamp.is_none())
            .filter(|p| wait::node_of(p) == node)
            .cloned()
            .collect();
        if running.len() != n || (exact && all.len() != n) {
            return Ok(None);
        }
        for p in &running {
            if group_of(emu, p).await?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(running))
    })
    .await
}

async fn scenario(cp: &ControlPlane, emu: &EciEmulator, pods: &Api<Pod>) -> anyhow::Result<()> {
    for file in MANIFESTS {
        cp.run_kubectl(&["apply", "-f", &example(file)])?;
    }
    // The ECI walk-through's pod: on the ECI node, as a group with the manifest's image.
    let mypod = wait::slowly(SLOW, "mypod Running and Ready on the ECI node", || async {
        let p = pods.get_opt("mypod").await?;
        if let Some(failure) = p
            .as_ref()
            .and_then(|p| wait::provider_failure(std::slice::from_ref(p)))
        {
            bail!("{failure}");
        }
        Ok(p.filter(|p| wait::running_and_ready(p) && wait::node_of(p) == ECI_NODE))
    })
    .await?;
    let group = group_of(emu, &mypod)
        .await?
        .context("mypod has no container group")?;
    ensure!(
        group["params"]["Container.1.Image"] == "nginx:latest",
        "{group}"
    );
    ensure!(
        group["params"]["Container.1.ImagePullPolicy"] == "Always",
        "{group}"
    );
    // kubectl logs goes API server → the shim's kubelet API, which serves once its
    // kubelet-serving certificate request is approved (as an admin or an approver would).
    wait::slowly(
        SLOW,
        "the ECI node's serving certificate approved",
        || async {
            let out = cp.run_kubectl(&["get", "csr", "-o", "name"])?;
            let names: Vec<&str> = out
                .lines()
                .map(|l| l.trim_start_matches("certificatesigningrequest.certificates.k8s.io/"))
                .filter(|n| n.starts_with(&format!("csr-{ECI_NODE}-")))
                .collect();
            for n in &names {
                cp.run_kubectl(&["certificate", "approve", n])?;
            }
            Ok((!names.is_empty()).then_some(()))
        },
    )
    .await?;
    let last_error = parking_lot::Mutex::new(String::new());
    let logs = wait::slowly(SLOW, "kubectl logs mypod", || async {
        match cp.run_kubectl(&["logs", "mypod"]) {
            Ok(out) => Ok(out.contains("heartbeat").then_some(out)),
            Err(e) => {
                *last_error.lock() = format!("{e:#}");
                Ok(None)
            }
        }
    })
    .await
    .with_context(|| format!("last kubectl error: {}", last_error.lock().clone()))?;
    ensure!(
        logs.contains("Emulated container nginx started from image nginx:latest"),
        "{logs}"
    );

    // aks-sample: 3 on the ACI node, then 20, then back to exactly 3.
    running_with_groups(emu, pods, "app=aks-sample", ACI_NODE, 3, true).await?;
    cp.run_kubectl(&["scale", "deployment/aks-sample", "--replicas=20"])?;
    running_with_groups(emu, pods, "app=aks-sample", ACI_NODE, 20, false).await?;
    wait::slowly(SLOW, "21 groups live", || async {
        Ok((emu.stats().await?.live == 21).then_some(()))
    })
    .await?;
    cp.run_kubectl(&["scale", "deployment/aks-sample", "--replicas=3"])?;
    running_with_groups(emu, pods, "app=aks-sample", ACI_NODE, 3, true).await?;
    wait::slowly(
        SLOW,
        "exactly 4 groups live (3 aks-sample + mypod)",
        || async { Ok((emu.stats().await?.live == 4).then_some(())) },
    )
    .await?;

    // Deleting everything leaves no pod and no group.
    for file in MANIFESTS {
        cp.run_kubectl(&["delete", "--wait=false", "-f", &example(file)])?;
    }
    wait::slowly(SLOW, "no pod in the API and no group in ECI", || async {
        let left = pods.list(&ListParams::default()).await?.items.len();
        let stats = emu.stats().await?;
        Ok((left == 0 && stats.live == 0).then_some(stats))
    })
    .await
    .and_then(|stats| {
        ensure!(
            stats.created == stats.deleted && stats.created >= 21,
            "{stats:?}"
        );
        Ok(())
    })?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        emu.stats().await?.live == 0,
        "a group came back after everything was deleted"
    );
    Ok(())
}
