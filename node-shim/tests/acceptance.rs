//! The acceptance manifests from users' walk-throughs, unchanged, through kubectl, the real
//! scheduler and the shim, onto virtual nodes backed by the test provider.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};
use support::{SLOW, example, kubectl, start_node};
use vk_testkit::{
    ControlPlane,
    wait::{self, eventually},
};

/// Pods per node name, counting only those Running with an IP and Ready.
async fn running(pods: &Api<Pod>, selector: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut by_node = BTreeMap::new();
    for p in pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
    {
        if wait::running_and_ready(&p) && p.metadata.deletion_timestamp.is_none() {
            let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
            *by_node.entry(node).or_default() += 1;
        }
    }
    Ok(by_node)
}

#[tokio::test]
async fn acceptance_manifests_run_scale_and_delete() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    // The AKS/ACI walk-throughs' node: the provider taint plus azure.com/aci.
    let aci = start_node(
        &cp,
        dir.path(),
        "vk-aci",
        &["--extra-taint=azure.com/aci:NoSchedule"],
    )
    .await?;
    // The ACK/ECI walk-through tolerates only alibabacloud.com/eci: that node's taint key.
    let eci = start_node(
        &cp,
        dir.path(),
        "vk-eci",
        &["--taint-key=alibabacloud.com/eci"],
    )
    .await?;
    let result = scenario(&cp, &aci, &eci).await;
    support::with_logs(result, &[&aci, &eci])
}

async fn scenario(
    cp: &ControlPlane,
    aci: &support::VirtualNode,
    eci: &support::VirtualNode,
) -> anyhow::Result<()> {
    let client = cp.client().await?;

    for file in [
        "aci-helloworld-deployment.yaml",
        "aks-sample-deployment.yaml",
        "eci-nginx-pod.yaml",
        "wordpress-env-grace.yaml",
    ] {
        kubectl(cp, &["apply", "-f", &example(file)])?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let want = |sel: &'static str, node: Option<&'static str>, n: usize| {
        let pods = pods.clone();
        async move {
            eventually(SLOW, &format!("{n} {sel} pods running"), || async {
                let by_node = running(&pods, sel).await?;
                let count = match node {
                    Some(node) => by_node.get(node).copied().unwrap_or(0),
                    None => by_node.values().sum(),
                };
                Ok((count == n).then_some(()))
            })
            .await
        }
    };
    want("app=aci-helloworld", Some("vk-aci"), 1).await?;
    want("app=aks-sample", Some("vk-aci"), 3).await?;
    want("app=wordpress", None, 1).await?;
    let mypod = eventually(SLOW, "mypod running", || async {
        Ok(pods.get_opt("mypod").await?.filter(wait::running_and_ready))
    })
    .await?;
    assert_eq!(
        mypod.spec.and_then(|s| s.node_name).as_deref(),
        Some("vk-eci")
    );

    // wordpress's env arrived resolved, the Secret's value flagged sensitive.
    let wp = aci
        .control
        .pods()
        .into_iter()
        .chain(eci.control.pods())
        .find(|p| {
            p.pod_ref
                .as_ref()
                .is_some_and(|r| r.name.starts_with("wordpress-"))
        });
    let wp = wp.expect("wordpress reached a provider");
    let env: BTreeMap<_, _> = wp.containers[0]
        .env
        .iter()
        .map(|e| (e.name.as_str(), (e.value.as_str(), e.sensitive)))
        .collect();
    assert_eq!(env.get("WORDPRESS_DB_USER"), Some(&("wordpress", false)));
    assert_eq!(
        env.get("WORDPRESS_DB_PASSWORD"),
        Some(&("s3cr3t-pa55", true))
    );
    assert_eq!(wp.termination_grace_period_seconds, Some(40));
    // ... and its preStop hook, exactly as written.
    let pre_stop = wp.containers[0]
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.action.as_ref());
    assert_eq!(
        pre_stop,
        Some(&podprovider_proto::v1::lifecycle_handler::Action::Exec(
            podprovider_proto::v1::ExecAction {
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "sleep 3; apachectl -k graceful-stop; sleep 30".into()
                ]
            }
        )),
        "the preStop hook reaches the provider"
    );

    // Scale to 100 and back to 3: exactly 3 left in the provider.
    kubectl(cp, &["scale", "deployment/aks-sample", "--replicas=100"])?;
    want("app=aks-sample", Some("vk-aci"), 100).await?;
    kubectl(cp, &["scale", "deployment/aks-sample", "--replicas=3"])?;
    want("app=aks-sample", Some("vk-aci"), 3).await?;
    eventually(SLOW, "3 aks-sample pods in the provider", || async {
        let n = aci
            .control
            .pods()
            .iter()
            .filter(|p| p.labels.get("app").map(String::as_str) == Some("aks-sample"))
            .count();
        Ok((n == 3).then_some(()))
    })
    .await?;

    // Deleting everything leaves nothing in the providers or the API.
    for file in [
        "aci-helloworld-deployment.yaml",
        "aks-sample-deployment.yaml",
        "eci-nginx-pod.yaml",
        "wordpress-env-grace.yaml",
    ] {
        kubectl(cp, &["delete", "--wait=false", "-f", &example(file)])?;
    }
    eventually(SLOW, "providers and API empty", || async {
        let api_left = pods.list(&ListParams::default()).await?.items.len();
        let provider_left = aci.control.pods().len() + eci.control.pods().len();
        Ok((api_left == 0 && provider_left == 0).then_some(()))
    })
    .await
    .map_err(|e| {
        let left: Vec<_> = pods_left(&aci.control)
            .into_iter()
            .chain(pods_left(&eci.control))
            .collect();
        e.context(format!("provider pods left: {left:?}"))
    })?;
    Ok(())
}

fn pods_left(control: &vk_testkit::test_provider::Control) -> Vec<String> {
    control
        .pods()
        .into_iter()
        .filter_map(|p| p.pod_ref.map(|r| r.name))
        .collect()
}
