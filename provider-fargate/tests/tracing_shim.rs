//! One trace from a Pod create to the cloud API request, across processes: the real API server,
//! the real `node-shim` and the real `provider-fargate` on moto, both exporting to a real OTLP/gRPC
//! receiver. The `RunTask` cloud span's ancestors are the provider's server span, the shim's client
//! span and the shim's reconcile span; the same for delete (`StopTask`). Both processes count the
//! calls on `/metrics`, and no span carries the pod's Secret value.

mod support;

use std::{path::Path, time::Duration};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use support::{BIN, CLUSTER, LOG_GROUP, provider_args};
use tokio::process::Command;
use vk_testkit::{
    ControlPlane,
    bins::workspace_bin,
    grpcurl::Target,
    moto::Moto,
    otlp::{OtlpReceiver, RecordedSpan},
    ports::free_port,
    process::ManagedProcess,
    provider_checks,
    wait::eventually,
};

const SLOW: Duration = Duration::from_secs(120);
const NODE: &str = "vk-fargate-traced";
const SECRET_VALUE: &str = "fargate-s3cr3t-91c2";

/// The cloud span of `operation` whose ancestors include the reconcile of `uid`; with its chain.
async fn cloud_span(
    receiver: &OtlpReceiver,
    uid: &str,
    operation: &str,
) -> anyhow::Result<(RecordedSpan, Vec<RecordedSpan>)> {
    eventually(
        SLOW,
        &format!("{operation} under the pod's reconcile"),
        || async {
            Ok(receiver
                .spans()
                .into_iter()
                .filter(|s| {
                    s.service == "provider-fargate"
                        && s.attributes.get("cloud.operation").map(String::as_str)
                            == Some(operation)
                })
                .map(|s| {
                    let chain = receiver.ancestors(&s);
                    (s, chain)
                })
                .find(|(_, chain)| {
                    chain
                        .iter()
                        .any(|a| a.attributes.get("k8s.pod.uid").map(String::as_str) == Some(uid))
                }))
        },
    )
    .await
}

/// Checks that `chain` (nearest first) runs provider server span → shim client span → shim
/// reconcile span, for provider RPC `method`.
fn assert_chain(chain: &[RecordedSpan], method: &str) {
    let position = |pred: &dyn Fn(&RecordedSpan) -> bool| chain.iter().position(pred);
    let server = position(&|s| {
        s.service == "provider-fargate"
            && s.attributes.get("rpc.method").map(String::as_str) == Some(method)
    });
    let client = position(&|s| {
        s.service == "node-shim"
            && s.attributes.get("rpc.method").map(String::as_str) == Some(method)
    });
    let reconcile =
        position(&|s| s.service == "node-shim" && s.attributes.contains_key("k8s.pod.uid"));
    let names: Vec<String> = chain
        .iter()
        .map(|s| format!("{}:{}", s.service, s.name))
        .collect();
    match (server, client, reconcile) {
        (Some(a), Some(b), Some(c)) => assert!(a < b && b < c, "order in {names:?}"),
        _ => panic!("chain for {method} incomplete: {names:?}"),
    }
}

async fn metrics(port: u16) -> anyhow::Result<String> {
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_create_and_delete_are_one_trace_down_to_the_cloud_call() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    vk_testkit::init_test_logging();
    let shim_bin = workspace_bin("node-shim")
        .context("this test runs the real node-shim binary: run `cargo test --workspace`")?;
    let receiver = OtlpReceiver::start().await?;
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;

    let addr = format!("127.0.0.1:{}", free_port()?);
    let provider_metrics = free_port()?;
    let mut args = provider_args(&moto, &addr);
    args.push(format!("--metrics-address=127.0.0.1:{provider_metrics}"));
    let mut env: Vec<(&str, String)> = Moto::aws_env(&moto.endpoint);
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()));
    let provider = provider_checks::start_provider(
        Path::new(BIN),
        &args,
        &env,
        &Target::Tcp(addr.clone()),
        dir.path(),
    )
    .await?;

    let cp = ControlPlane::start().await?;
    let shim_metrics = free_port()?;
    let shim = ManagedProcess::spawn(
        "node-shim",
        Command::new(&shim_bin)
            .arg(format!("--node-name={NODE}"))
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg(format!("--provider-endpoint=http://{addr}"))
            .arg(format!("--kubelet-port={}", free_port()?))
            .arg(format!("--metrics-address=127.0.0.1:{shim_metrics}"))
            .args(["--ping-interval=1s", "--resync-period=5s"])
            .env("RUST_LOG", "info,node_shim=debug")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        dir.path(),
    )?;

    let result = async {
        let pods: Api<Pod> = Api::namespaced(cp.client().await?, "default");
        cp.run_kubectl(&[
            "create",
            "secret",
            "generic",
            "db",
            &format!("--from-literal=password={SECRET_VALUE}"),
        ])?;
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

        let (run_task, chain) = cloud_span(&receiver, &uid, "RunTask").await?;
        assert_chain(&chain, "CreatePod");
        assert!(chain.iter().any(|s| s.service == "node-shim"));
        for key in ["http.request.method", "url.full", "http.response.status_code"] {
            assert!(
                run_task.attributes.contains_key(key),
                "RunTask span lacks {key}: {:?}",
                run_task.attributes
            );
        }
        assert_eq!(
            run_task.attributes.get("http.response.status_code").map(String::as_str),
            Some("200")
        );
        assert!(run_task.attributes.contains_key("retry.count"));

        eventually(SLOW, "traced Running", || async {
            Ok(pods.get_opt("traced").await?.filter(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            }))
        })
        .await?;
        pods.delete("traced", &DeleteParams::default()).await?;
        let (_, chain) = cloud_span(&receiver, &uid, "StopTask").await?;
        assert_chain(&chain, "DeletePod");

        let leaked: Vec<RecordedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| {
                s.name.contains(SECRET_VALUE)
                    || s.attributes.values().any(|v| v.contains(SECRET_VALUE))
            })
            .collect();
        assert!(leaked.is_empty(), "secret in spans: {leaked:?}");

        // Both processes count what happened.
        let provider_text = metrics(provider_metrics).await?;
        for line in [
            "grpc_server_calls_total{method=\"podprovider.v1.PodProvider/CreatePod\",code=\"Ok\"} 1",
            "cloud_api_calls_total{operation=\"RunTask\",outcome=\"success\"} 1",
        ] {
            assert!(provider_text.contains(line), "{line} missing:\n{provider_text}");
        }
        let shim_text = metrics(shim_metrics).await?;
        assert!(
            shim_text.contains(
                "grpc_client_calls_total{method=\"podprovider.v1.PodProvider/CreatePod\",code=\"Ok\"} 1"
            ),
            "{shim_text}"
        );
        anyhow::Ok(())
    }
    .await;
    vk_testkit::process::with_logs(result, &[&shim, &provider])
}
