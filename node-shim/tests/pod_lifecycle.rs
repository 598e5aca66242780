//! Pod behaviour of the shim, end to end against the real control plane: env resolution and its
//! events, provider rejection, graceful and force deletion, restarts, same-name re-creation, and
//! status that never goes backwards.

mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use podprovider_proto::v1::PodPhase;
use support::{SLOW, VirtualNode, start_node};
use vk_testkit::{
    ControlPlane,
    prometheus::{self, api_requests},
    test_provider::rpc,
    wait::eventually,
};

const NODE: &str = "vk-life";

fn pod(name: &str, spec: serde_json::Value) -> anyhow::Result<Pod> {
    support::scheduled_pod(name, serde_json::json!({}), spec)
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

async fn wait_phase(pods: &Api<Pod>, name: &str, want: &'static str) -> anyhow::Result<Pod> {
    eventually(SLOW, &format!("{name} {want}"), || async {
        Ok(pods.get_opt(name).await?.filter(|p| phase(p) == Some(want)))
    })
    .await
}

/// Events about `name`, as (reason, message).
async fn events(events: &Api<Event>, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let list = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect())
}

async fn wait_event(api: &Api<Event>, name: &str, reason: &str) -> anyhow::Result<String> {
    eventually(SLOW, &format!("{reason} event for {name}"), || async {
        Ok(events(api, name)
            .await?
            .into_iter()
            .find(|(r, _)| r == reason)
            .map(|(_, m)| m))
    })
    .await
}

struct Env {
    cp: ControlPlane,
    node: VirtualNode,
    pods: Api<Pod>,
    events: Api<Event>,
    _dir: tempfile::TempDir,
}

async fn env() -> anyhow::Result<Env> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let dir = tempfile::tempdir()?;
    let node = start_node(&cp, dir.path(), NODE, &[]).await?;
    Ok(Env {
        pods: Api::namespaced(client.clone(), "default"),
        events: Api::namespaced(client, "default"),
        cp,
        node,
        _dir: dir,
    })
}

fn uid(p: &Pod) -> String {
    p.uid().unwrap_or_default()
}

#[tokio::test]
async fn env_is_resolved_and_missing_sources_become_events() -> anyhow::Result<()> {
    let Env {
        cp,
        node,
        pods,
        events,
        _dir,
    } = env().await?;
    let client = cp.client().await?;
    support::kubectl(
        &cp,
        &[
            "create",
            "configmap",
            "cfg",
            "--from-literal=A=1",
            "--from-literal=B=2",
        ],
    )?;
    support::kubectl(
        &cp,
        &[
            "create",
            "secret",
            "generic",
            "sec",
            "--from-literal=PASS=hunter2",
        ],
    )?;

    support::kubectl(
        &cp,
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "--docker-server=reg.example.com",
            "--docker-username=robot",
            "--docker-password=pull-token",
        ],
    )?;
    let spec = serde_json::json!({"imagePullSecrets": [{"name": "regcred"}, {"name": "no-such-secret"}], "containers": [{
        "name": "c", "image": "busybox",
        "command": ["echo", "$(GREETING)", "$(MISSING)"],
        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}, {"secretRef": {"name": "sec"}, "prefix": "S_"}],
        "env": [
            {"name": "PLAIN", "value": "v"},
            {"name": "GREETING", "value": "hello-$(CM_A)"},
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASS"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "MEM_MB", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": true}}}
        ]
    }]});
    let created = pods
        .create(&PostParams::default(), &pod("env-full", spec)?)
        .await?;
    wait_phase(&pods, "env-full", "Running").await?;
    let got = node
        .control
        .pods()
        .into_iter()
        .find(|p| p.pod_ref.as_ref().map(|r| r.uid.clone()) == Some(uid(&created)));
    let got = got.expect("pod reached the provider");
    let c = &got.containers[0];
    let env: BTreeMap<&str, (&str, bool)> = c
        .env
        .iter()
        .map(|e| (e.name.as_str(), (e.value.as_str(), e.sensitive)))
        .collect();
    for (k, v, sensitive) in [
        ("CM_A", "1", false),
        ("CM_B", "2", false),
        ("S_PASS", "hunter2", true),
        ("PLAIN", "v", false),
        ("GREETING", "hello-1", false),
        ("FROM_CM", "2", false),
        ("FROM_SECRET", "hunter2", true),
        ("POD_NAME", "env-full", false),
        ("NODE", NODE, false),
        ("HOST_IP", "127.0.0.1", false),
        ("MEM_MB", "64", false),
        ("CPU_M", "500", false),
    ] {
        assert_eq!(env.get(k), Some(&(v, sensitive)), "env {k}");
    }
    assert!(!env.contains_key("OPT"));
    let creds: Vec<_> = got
        .registry_credentials
        .iter()
        .map(|c| (c.server.as_str(), c.username.as_str(), c.password.as_str()))
        .collect();
    assert_eq!(creds, [("reg.example.com", "robot", "pull-token")]);
    wait_event(&events, "env-full", "FailedToRetrieveImagePullSecret").await?;
    assert_eq!(c.command, ["echo", "hello-1", "$(MISSING)"]);
    wait_event(&events, "env-full", "OptionalConfigMapNotFound").await?;

    // Mandatory sources missing: Warning event, Pending, never sent to the provider; then fixed.
    let spec = serde_json::json!({"containers": [{"name": "c", "image": "busybox",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "k"}}}]}]});
    let needs_cm = pods
        .create(&PostParams::default(), &pod("needs-cm", spec)?)
        .await?;
    let spec = serde_json::json!({"containers": [{"name": "c", "image": "busybox",
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nowhere", "key": "k"}}}]}]});
    pods.create(&PostParams::default(), &pod("needs-secret", spec)?)
        .await?;
    let msg = wait_event(&events, "needs-cm", "MandatoryConfigMapNotFound").await?;
    assert!(msg.contains("later"), "{msg}");
    wait_event(&events, "needs-secret", "MandatorySecretNotFound").await?;
    assert_eq!(phase(&pods.get("needs-cm").await?), Some("Pending"));
    let in_provider = |u: String| {
        node.control
            .pods()
            .iter()
            .any(|p| p.pod_ref.as_ref().is_some_and(|r| r.uid == u))
    };
    assert!(!in_provider(uid(&needs_cm)));
    let cm: ConfigMap = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "later"}, "data": {"k": "now"}}),
    )?;
    Api::<ConfigMap>::namespaced(client, "default")
        .create(&PostParams::default(), &cm)
        .await?;
    wait_phase(&pods, "needs-cm", "Running").await?;

    // No Secret value in any event.
    let all = events.list(&ListParams::default()).await?;
    for e in all.items {
        assert!(
            !e.message.unwrap_or_default().contains("hunter2"),
            "secret value in an event"
        );
    }
    Ok(())
}

#[tokio::test]
async fn rejection_graceful_and_force_delete() -> anyhow::Result<()> {
    let Env {
        cp,
        node,
        pods,
        events,
        _dir,
    } = env().await?;

    // Provider rejection: Failed with ProviderFailed and the provider's message, and an event.
    node.control
        .fail_creates(Some("volume type hostPath is not supported by test"));
    pods.create(
        &PostParams::default(),
        &pod("rejected", serde_json::json!({}))?,
    )
    .await?;
    let failed = support::with_logs(wait_phase(&pods, "rejected", "Failed").await, &[&node])?;
    let status = failed.status.expect("status");
    assert_eq!(status.reason.as_deref(), Some("ProviderFailed"));
    assert_eq!(
        status.message.as_deref(),
        Some("volume type hostPath is not supported by test")
    );
    let msg = wait_event(&events, "rejected", "ProviderFailed").await?;
    assert!(msg.contains("hostPath"));
    node.control.fail_creates(None);

    // Graceful delete waits for the provider, and the pod's grace period reaches it: containers
    // that would take 30 s stop after the 3 s grace period.
    node.control.set_stop_delay(Duration::from_secs(30));
    let p = pods
        .create(
            &PostParams::default(),
            &pod(
                "graceful",
                serde_json::json!({"terminationGracePeriodSeconds": 3}),
            )?,
        )
        .await?;
    wait_phase(&pods, "graceful", "Running").await?;
    let started = Instant::now();
    pods.delete("graceful", &DeleteParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        pods.get_opt("graceful").await?.is_some(),
        "API object removed before the provider finished"
    );
    eventually(SLOW, "graceful pod gone", || async {
        Ok(pods.get_opt("graceful").await?.is_none().then_some(()))
    })
    .await?;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(20),
        "graceful delete took {took:?}"
    );
    assert_eq!(node.control.last_delete_grace(&uid(&p)), Some(3));
    node.control.set_stop_delay(Duration::ZERO);

    // Force delete reaches the provider within 2 s.
    let p = pods
        .create(
            &PostParams::default(),
            &pod("forced", serde_json::json!({}))?,
        )
        .await?;
    wait_phase(&pods, "forced", "Running").await?;
    support::kubectl(
        &cp,
        &["delete", "pod", "forced", "--grace-period=0", "--force"],
    )?;
    let started = Instant::now();
    eventually(
        Duration::from_secs(2),
        "forced pod gone from the provider",
        || async { Ok(node.control.status(&uid(&p)).is_none().then_some(())) },
    )
    .await?;
    tracing::info!(
        "force delete reached the provider in {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn restart_recreate_and_no_regression() -> anyhow::Result<()> {
    let Env {
        cp,
        mut node,
        pods,
        events,
        _dir,
    } = env().await?;
    let client = cp.client().await?;

    // 50 running pods, plus two bare pods for the restart cases.
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fifty"},
        "spec": {"replicas": 50, "selector": {"matchLabels": {"app": "fifty"}}, "template": {
            "metadata": {"labels": {"app": "fifty"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}],
                     "nodeSelector": {"type": "virtual-kubelet"},
                     "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]}}}
    });
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client, "default");
    deployments
        .create(&PostParams::default(), &serde_json::from_value(deployment)?)
        .await?;
    let lonely = pods
        .create(
            &PostParams::default(),
            &pod("lonely", serde_json::json!({}))?,
        )
        .await?;
    let lost = pods
        .create(&PostParams::default(), &pod("lost", serde_json::json!({}))?)
        .await?;
    let running = |pods: Api<Pod>| async move {
        let list = pods
            .list(&ListParams::default().labels("app=fifty"))
            .await?;
        let ips: BTreeMap<String, String> = list
            .items
            .iter()
            .filter(|p| phase(p) == Some("Running"))
            .map(|p| {
                (
                    p.name_any(),
                    p.status
                        .as_ref()
                        .and_then(|s| s.pod_ip.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        anyhow::Ok(ips)
    };
    let before = eventually(SLOW, "50 running", || async {
        let ips = running(pods.clone()).await?;
        Ok((ips.len() == 50).then_some(ips))
    })
    .await?;
    wait_phase(&pods, "lonely", "Running").await?;
    wait_phase(&pods, "lost", "Running").await?;

    // Shim down: one pod force-deleted, one lost by the provider.
    let exit = node.shim.stop(Duration::from_secs(10)).await?;
    assert!(exit.success(), "shim exited with {exit}");
    support::kubectl(
        &cp,
        &["delete", "pod", "lonely", "--grace-period=0", "--force"],
    )?;
    assert!(node.control.lose_pod(&uid(&lost)));
    node.control.reset_calls();
    let patches = || api_requests(&cp, "PATCH pods/status");
    let patches_before = patches()?;
    node.restart_shim(&cp, _dir.path())?;

    // After restart: the orphan is deleted, the lost pod is reported, nothing is created.
    eventually(SLOW, "lonely deleted in the provider", || async {
        Ok(node.control.status(&uid(&lonely)).is_none().then_some(()))
    })
    .await?;
    let lost_now = wait_phase(&pods, "lost", "Failed").await?;
    assert_eq!(
        lost_now.status.and_then(|s| s.reason).as_deref(),
        Some("ProviderLost")
    );
    wait_event(&events, "lost", "ProviderLost").await?;
    assert_eq!(
        running(pods.clone()).await?,
        before,
        "statuses changed across the restart"
    );
    assert_eq!(node.control.calls(rpc::CREATE), 0, "creates after restart");
    assert_eq!(
        node.control.calls(rpc::DELETE),
        1,
        "only the orphan is deleted"
    );
    // Every pod reconciled once since the restart, and the one status patch is the lost pod's:
    // the Running pods' stored statuses compare equal to what the provider reports, so not even
    // a patch that changes nothing (invisible to resourceVersions) is sent.
    eventually(SLOW, "every pod reconciled after the restart", || async {
        let text = node.shim_metrics().await?;
        let done = prometheus::sum(&text, "vk_reconcile_duration_seconds_count", &[]);
        Ok((done >= 51.0).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        patches()? - patches_before,
        1,
        "status patches after the restart (only the lost pod's Failed)"
    );

    // Deleted and re-created under the same name: the new one runs, the old is gone.
    let old = pods
        .create(&PostParams::default(), &pod("same", serde_json::json!({}))?)
        .await?;
    wait_phase(&pods, "same", "Running").await?;
    pods.delete("same", &DeleteParams::default()).await?;
    let new = eventually(SLOW, "same re-created", || async {
        match pods
            .create(&PostParams::default(), &pod("same", serde_json::json!({}))?)
            .await
        {
            Ok(p) => Ok(Some(p)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    assert_ne!(uid(&old), uid(&new));
    let running_new = wait_phase(&pods, "same", "Running").await?;
    assert_eq!(uid(&running_new), uid(&new));
    eventually(SLOW, "old 'same' gone from the provider", || async {
        Ok(node.control.status(&uid(&old)).is_none().then_some(()))
    })
    .await?;
    assert!(node.control.status(&uid(&new)).is_some());

    // A bogus Pending from the provider and transient errors never move Running back.
    let target = pods.get("same").await?;
    node.control.fail_next_calls(3);
    assert!(node.control.report_phase(&uid(&target), PodPhase::Pending));
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            phase(&pods.get("same").await?),
            Some("Running"),
            "status went backwards"
        );
    }
    Ok(())
}
