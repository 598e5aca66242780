//! The test control plane is real: the controller-manager turns a Deployment into pods and the
//! scheduler, finding no node, leaves them Pending as Unschedulable.

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use vk_testkit::ControlPlane;

#[tokio::test]
async fn deployment_pods_are_created_and_stay_pending_without_nodes() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}
            }
        }
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        let unschedulable = list
            .items
            .iter()
            .filter(|pod| {
                let status = pod.status.as_ref();
                let phase = status.and_then(|s| s.phase.as_deref());
                let scheduled = status
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
                phase == Some("Pending")
                    && pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_none()
                    && scheduled.is_some_and(|c| {
                        c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
                    })
            })
            .count();
        if list.items.len() == 2 && unschedulable == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "want 2 unschedulable pods, have {} pods, {unschedulable} unschedulable; scheduler log:\n{}",
            list.items.len(),
            cp.log_tail("kube-scheduler", 20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The pods belong to the Deployment through its ReplicaSet (the controller-manager made them).
    let list = pods.list(&ListParams::default().labels("app=web")).await?;
    for pod in &list.items {
        let owner = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .expect("pod has an owner");
        assert_eq!(owner.kind, "ReplicaSet");
        assert!(owner.name.starts_with("web-"), "{}", owner.name);
    }
    cp.stop().await
}
