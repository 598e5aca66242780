//! What the provider receives for a pod beyond env, end to end against the real control plane:
//! projected service-account tokens from the TokenRequest API, downwardAPI files, service-link
//! variables, and running pods following `kubectl set image` and token refresh through UpdatePod.

mod support;

use std::time::{Duration, SystemTime};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    core::v1::{Event, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use podprovider_proto::v1 as pb;
use support::{SLOW, kubectl, scheduled_pod as pod, start_node, with_logs};
use vk_testkit::{ControlPlane, test_provider::rpc, wait::eventually};

const NODE: &str = "vk-spec";
const AUDIENCE: &str = "vk-spec-test";

/// A pod with a projected volume (token, ConfigMap key, labels) and a downwardAPI volume.
fn token_pod(name: &str) -> anyhow::Result<Pod> {
    pod(
        name,
        serde_json::json!({"app": "web", "tier": "front"}),
        serde_json::json!({
            "volumes": [
                {"name": "bundle", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "audience": AUDIENCE,
                                             "expirationSeconds": 3600}},
                    {"configMap": {"name": "settings", "items": [{"key": "mode", "path": "mode"}]}},
                    {"downwardAPI": {"items": [
                        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}},
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
            ]
        }),
    )
}

fn provider_pod(node: &support::VirtualNode, uid: &str) -> Option<pb::Pod> {
    node.control
        .pods()
        .into_iter()
        .find(|p| p.pod_ref.as_ref().is_some_and(|r| r.uid == uid))
}

fn files<'a>(p: &'a pb::Pod, volume: &str) -> &'a pb::FilesVolume {
    let v = p.volumes.iter().find(|v| v.name == volume);
    match v.and_then(|v| v.source.as_ref()) {
        Some(pb::volume::Source::Files(f)) => f,
        other => panic!("volume {volume} is not files: {other:?}"),
    }
}

fn file<'a>(f: &'a pb::FilesVolume, path: &str) -> &'a pb::FileEntry {
    f.files
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no file {path} in {:?}", f.files))
}

fn token(p: &pb::Pod) -> String {
    String::from_utf8_lossy(&file(files(p, "bundle"), "token").content).into_owned()
}

fn env_value<'a>(p: &'a pb::Pod, name: &str) -> Option<&'a str> {
    p.containers[0]
        .env
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.value.as_str())
}

async fn running(pods: &Api<Pod>, name: &str) -> anyhow::Result<Pod> {
    eventually(SLOW, &format!("{name} Running"), || async {
        Ok(pods
            .get_opt(name)
            .await?
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
    })
    .await
}

async fn has_event(events: &Api<Event>, name: &str, reason: &str) -> anyhow::Result<bool> {
    let list = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?;
    Ok(list
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some(reason)))
}

#[tokio::test]
async fn tokens_files_links_and_in_place_updates() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    let mut node = start_node(&cp, dir.path(), NODE, &[]).await?;
    let result = scenario(&cp, &mut node, dir.path()).await;
    with_logs(result, &[&node])
}

async fn scenario(
    cp: &ControlPlane,
    node: &mut support::VirtualNode,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let client = cp.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    kubectl(
        cp,
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
        ],
    )?;
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-api"},
        "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 80}]}
    });
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "default");
    let service_ip = services
        .create(&PostParams::default(), &serde_json::from_value(service)?)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_default();

    let with_token = pods
        .create(&PostParams::default(), &token_pod("tokened")?)
        .await?;
    let no_links = pods
        .create(
            &PostParams::default(),
            &pod(
                "no-links",
                serde_json::json!({}),
                serde_json::json!({"enableServiceLinks": false}),
            )?,
        )
        .await?;
    running(&pods, "tokened").await?;
    running(&pods, "no-links").await?;
    let uid = with_token.uid().unwrap_or_default();
    let sent =
        provider_pod(node, &uid).ok_or_else(|| anyhow::anyhow!("tokened not in provider"))?;

    // The projected token: issued by the API server for this pod, flagged sensitive, with expiry.
    let bundle = files(&sent, "bundle");
    let token_file = file(bundle, "token");
    assert!(token_file.sensitive, "token file not sensitive");
    let expiry = bundle
        .token_expiration
        .and_then(|t| SystemTime::try_from(t).ok())
        .ok_or_else(|| anyhow::anyhow!("no token_expiration"))?;
    let left = expiry.duration_since(SystemTime::now())?;
    assert!(
        left > Duration::from_secs(3300) && left <= Duration::from_secs(3600),
        "token expires in {left:?}"
    );
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token(&sent),
            audiences: Some(vec![AUDIENCE.into()]),
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?
        .status
        .unwrap_or_default();
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    let user = reviewed.user.unwrap_or_default();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:default")
    );
    let bound_to = user
        .extra
        .unwrap_or_default()
        .get("authentication.kubernetes.io/pod-uid")
        .cloned();
    assert_eq!(
        bound_to,
        Some(vec![uid.clone()]),
        "token not bound to the pod"
    );

    // The rest of the projected volume and the downwardAPI volume.
    assert_eq!(file(bundle, "mode").content, b"fast");
    assert!(!file(bundle, "mode").sensitive);
    assert_eq!(file(bundle, "name").content, b"tokened");
    let labels = &file(files(&sent, "podinfo"), "labels").content;
    assert_eq!(
        String::from_utf8_lossy(labels),
        "app=\"web\"\ntier=\"front\""
    );

    // Service links: on by default, only the master service's when disabled.
    assert_eq!(
        env_value(&sent, "WEB_API_SERVICE_HOST"),
        Some(service_ip.as_str())
    );
    assert_eq!(env_value(&sent, "WEB_API_SERVICE_PORT_HTTP"), Some("8080"));
    assert_eq!(
        env_value(&sent, "WEB_API_PORT"),
        Some(format!("tcp://{service_ip}:8080").as_str())
    );
    let plain = provider_pod(node, &no_links.uid().unwrap_or_default())
        .ok_or_else(|| anyhow::anyhow!("no-links not in provider"))?;
    assert!(env_value(&plain, "KUBERNETES_SERVICE_HOST").is_some());
    assert_eq!(env_value(&plain, "WEB_API_SERVICE_HOST"), None);

    // `kubectl set image` on a running pod reaches the provider as an UpdatePod.
    node.control.reset_calls();
    kubectl(cp, &["set", "image", "pod/tokened", "c=nginx:1.25"])?;
    eventually(SLOW, "new image at the provider", || async {
        Ok(provider_pod(node, &uid)
            .filter(|p| p.containers[0].image == "nginx:1.25")
            .map(|_| ()))
    })
    .await?;
    eventually(SLOW, "ProviderUpdated event", || async {
        Ok(has_event(&events, "tokened", "ProviderUpdated")
            .await?
            .then_some(()))
    })
    .await?;
    eventually(SLOW, "status shows the new image", || async {
        let p = pods.get("tokened").await?;
        let image = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.first().map(|c| c.image.clone()));
        Ok((image.as_deref() == Some("nginx:1.25")).then_some(()))
    })
    .await?;
    assert_eq!(
        node.control.calls(rpc::UPDATE),
        1,
        "one update for one change"
    );
    assert_eq!(node.control.calls(rpc::CREATE), 0);
    assert_eq!(node.control.calls(rpc::DELETE), 0);

    // The shim's /metrics counts the provider calls this test caused.
    let metrics = eventually(SLOW, "pods gauge", || async {
        let text = node.shim_metrics().await?;
        // The gauges are refreshed every few seconds; wait for a settled sample.
        let settled = [
            "vk_pods{phase=\"Running\"} 2",
            "vk_pods_awaiting_provider 0",
            "vk_reconcile_queue_depth 0",
        ];
        Ok(settled.iter().all(|l| text.contains(l)).then_some(text))
    })
    .await?;
    for line in [
        "grpc_client_calls_total{method=\"podprovider.v1.PodProvider/CreatePod\",code=\"Ok\"} 2",
        "grpc_client_calls_total{method=\"podprovider.v1.PodProvider/UpdatePod\",code=\"Ok\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(metrics.contains("vk_reconcile_duration_seconds_count{outcome=\"ok\"}"));

    // A restarted shim refreshes tokens of the pods it adopts (their age is unknown), and
    // leaves every other pod alone.
    let before = token(
        &provider_pod(node, &uid).ok_or_else(|| anyhow::anyhow!("tokened left the provider"))?,
    );
    let exit = node.shim.stop(Duration::from_secs(10)).await?;
    assert!(exit.success(), "shim exited with {exit}");
    // Token timestamps have one-second resolution; make sure the new one differs.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    node.control.reset_calls();
    node.restart_shim(cp, dir)?;
    eventually(SLOW, "token refreshed after restart", || async {
        Ok(provider_pod(node, &uid)
            .filter(|p| token(p) != before)
            .map(|_| ()))
    })
    .await?;
    // Give the shim time to (wrongly) touch the other pod before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        node.control.calls(rpc::UPDATE),
        1,
        "only the token pod is updated"
    );
    assert_eq!(node.control.calls(rpc::CREATE), 0);
    assert_eq!(node.control.calls(rpc::DELETE), 0);
    assert_eq!(
        provider_pod(node, &uid).map(|p| p.containers[0].image.clone()),
        Some("nginx:1.25".into())
    );
    Ok(())
}
