//! Traces from the shim, received by a real OTLP/gRPC receiver: a pod's create and delete are each
//! a reconcile span with the pod's attributes whose child is the provider call's client span; the
//! create's trace id is in the pod's `ProviderCreated` event; `kubectl logs` and `kubectl exec`
//! are kubelet-request spans whose children are the provider calls; no span carries a Secret's
//! value.

mod support;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use support::{SLOW, approve_serving_cert, kubectl, start_node_with_env, with_logs};
use vk_testkit::{
    ControlPlane,
    otlp::{OtlpReceiver, RecordedSpan},
    wait::eventually,
};

const NODE: &str = "vk-trace";
const SECRET_VALUE: &str = "s3cr3t-value-4a7f";

/// The client span of `method` in the pod's traces, once its reconcile span has arrived too.
async fn provider_call(
    receiver: &OtlpReceiver,
    uid: &str,
    method: &str,
) -> anyhow::Result<(RecordedSpan, Vec<RecordedSpan>)> {
    eventually(
        SLOW,
        &format!("{method} span under the pod's reconcile"),
        || async {
            let found = receiver
                .spans()
                .into_iter()
                .filter(|s| {
                    s.attributes.get("rpc.method").map(String::as_str) == Some(method)
                        && s.service == "node-shim"
                })
                .map(|s| {
                    let chain = receiver.ancestors(&s);
                    (s, chain)
                })
                .find(|(_, chain)| {
                    chain
                        .iter()
                        .any(|a| a.attributes.get("k8s.pod.uid").map(String::as_str) == Some(uid))
                });
            Ok(found)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_delete_are_traced_without_secrets() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let receiver = OtlpReceiver::start().await?;
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    let endpoint = receiver.endpoint();
    let ca = format!("--client-ca-file={}", cp.pki.ca_files.cert.display());
    let node = start_node_with_env(
        &cp,
        dir.path(),
        NODE,
        &[&ca, "--log-format=json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
    )
    .await?;
    let result = async {
        let client = cp.client().await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let events: Api<Event> = Api::namespaced(client, "default");
        kubectl(
            &cp,
            &[
                "create",
                "secret",
                "generic",
                "db",
                &format!("--from-literal=password={SECRET_VALUE}"),
            ],
        )?;
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "traced"},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "nginx", "env": [
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
            ]}], "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]}
        }))?;
        let uid = pods
            .create(&PostParams::default(), &pod)
            .await?
            .uid()
            .unwrap_or_default();

        // The event names the trace; the trace holds reconcile → CreatePod.
        let note = eventually(SLOW, "ProviderCreated event", || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=traced"))
                .await?;
            Ok(list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("ProviderCreated"))
                .and_then(|e| e.message))
        })
        .await?;
        let trace_id = note
            .split("(trace ")
            .nth(1)
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(|| anyhow::anyhow!("no trace id in {note:?}"))?
            .to_owned();
        assert_eq!(trace_id.len(), 32, "{note}");
        let (create, chain) = provider_call(&receiver, &uid, "CreatePod").await?;
        assert_eq!(create.trace_id, trace_id, "the event names the create's trace");
        // JSON log lines written inside that reconcile carry its trace id.
        let log = std::fs::read_to_string(node.shim.log_path())?;
        assert!(
            log.lines().any(|l| l.starts_with('{')
                && l.contains(&format!("\"trace_id\":\"{trace_id}\""))),
            "no JSON log line with trace_id {trace_id}"
        );
        assert_eq!(create.name, "podprovider.v1.PodProvider/CreatePod");
        let reconcile = chain
            .iter()
            .find(|a| a.attributes.contains_key("k8s.pod.uid"))
            .ok_or_else(|| anyhow::anyhow!("no reconcile span"))?;
        assert_eq!(create.parent_span_id, reconcile.span_id, "client span's parent");
        for (key, want) in [
            ("k8s.namespace.name", "default"),
            ("k8s.pod.name", "traced"),
            ("k8s.node.name", NODE),
        ] {
            assert_eq!(reconcile.attributes.get(key).map(String::as_str), Some(want));
        }

        // kubectl logs and exec reach the provider under a kubelet-request span.
        approve_serving_cert(&cp, NODE).await?;
        eventually(SLOW, "traced Running", || async {
            Ok(pods.get_opt("traced").await?.filter(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            }))
        })
        .await?;
        kubectl(&cp, &["logs", "traced"])?;
        kubectl(&cp, &["exec", "traced", "--", "true"])?;
        for (method, route) in [("GetContainerLogs", "/containerLogs/"), ("Exec", "/exec/")] {
            eventually(SLOW, &format!("{method} under a kubelet request"), || async {
                Ok(receiver
                    .spans()
                    .into_iter()
                    .filter(|s| s.attributes.get("rpc.method").map(String::as_str) == Some(method))
                    .find(|s| {
                        receiver.ancestors(s).iter().any(|a| {
                            a.name.contains(route)
                                && a.attributes.get("url.path").is_some_and(|p| p.contains("traced"))
                        })
                    }))
            })
            .await?;
        }

        pods.delete("traced", &DeleteParams::default()).await?;
        let (delete, _) = provider_call(&receiver, &uid, "DeletePod").await?;
        assert_eq!(delete.attributes.get("rpc.grpc.status_code").map(String::as_str), Some("0"));

        // Nothing Secret-derived in any span.
        let leaked: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|s| {
                s.name.contains(SECRET_VALUE)
                    || s.attributes.values().any(|v| v.contains(SECRET_VALUE))
            })
            .collect();
        assert!(leaked.is_empty(), "secret in spans: {leaked:?}");
        assert!(!std::fs::read_to_string(node.shim.log_path())?.contains(SECRET_VALUE));
        anyhow::Ok(())
    }
    .await;
    with_logs(result, &[&node])
}
