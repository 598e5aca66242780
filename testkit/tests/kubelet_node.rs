//! The test cluster's real node: a kubelet 1.20 on a private containerd runs a pod from a locally
//! built image (nothing is pulled), serves its logs and exec through the API server, and leaves no
//! container behind once the pod is deleted.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use vk_testkit::{
    ControlPlane,
    kubelet_node::{KubeletNode, TEST_IMAGE, image_tarball},
};

#[tokio::test]
async fn busybox_pod_runs_on_the_real_node_with_logs_exec_and_cleanup() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let node = KubeletNode::start(&cp, &[]).await?;
    let client = cp.client().await?;

    // The kubelet registered itself under its node identity, at the address the API server uses.
    let registered = Api::<Node>::all(client.clone()).get(&node.name).await?;
    let addresses = registered
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == node.node_ip),
        "node addresses: {addresses:?}"
    );
    assert!(
        node.images()?.iter().any(|i| i == TEST_IMAGE),
        "test image not imported: {:?}",
        node.images()?
    );

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node.name},
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "main",
                "image": TEST_IMAGE,
                // Only the imported image may be used: a pull would fail here anyway.
                "imagePullPolicy": "Never",
                "command": ["sh", "-c",
                    "trap 'echo bye; exit 0' TERM; echo hello from $(hostname); \
                     sleep 3600 & wait"],
            }],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    wait_running(&pods, "hello", &node, Duration::from_secs(90)).await?;

    let logs = cp.run_kubectl(&["logs", "hello"])?;
    assert_eq!(logs.trim(), "hello from hello");

    // exec runs in the container: its hostname, its own filesystem, and stdin goes through.
    let out = cp.run_kubectl(&[
        "exec",
        "hello",
        "--",
        "sh",
        "-c",
        "echo $((6 * 7)) $(hostname); test -x /bin/busybox && echo busybox",
    ])?;
    assert_eq!(out.trim(), "42 hello\nbusybox");
    let mut child = cp
        .kubectl()
        .args(["exec", "-i", "hello", "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(b"through stdin\n")?;
    }
    let out = child.wait_with_output()?;
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");

    // The pod's sandbox and container exist in containerd while it runs...
    let running = node.containers()?;
    assert!(running.len() >= 2, "containers: {running:?}");

    // ...and are gone after the pod is deleted (the kubelet stops them, its container GC removes
    // them, at most a minute later).
    pods.delete("hello", &DeleteParams::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pods.get_opt("hello").await?.is_some() {
        anyhow::ensure!(Instant::now() < deadline, "pod hello not deleted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = node.containers()?;
        if left.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "containers left after the pod's deletion: {left:?}\nkubelet log:\n{}",
            node.log_tail("kubelet", 30)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    node.stop().await?;
    cp.stop().await?;
    Ok(())
}

/// The app images (`scripts/images.sh`) run on the real node as a non-root user (the kubelet
/// refuses `runAsNonRoot` pods whose image user is root) and answer `--version`.
#[tokio::test]
#[ignore = "needs the app images: run by scripts/images.sh --check"]
async fn app_images_run_as_non_root_and_answer_version() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let apps = [
        "node-shim",
        "provider-eci",
        "provider-aci",
        "provider-fargate",
    ];
    let tarballs = apps
        .iter()
        .map(|a| image_tarball(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cp = ControlPlane::start().await?;
    let node = KubeletNode::start(&cp, &tarballs).await?;
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, "default");
    let version = env!("CARGO_PKG_VERSION");
    for app in apps {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": app},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node.name},
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "securityContext": {"runAsNonRoot": true},
                "containers": [{
                    "name": "main",
                    "image": format!("docker.io/vk-rs/{app}:{version}"),
                    "imagePullPolicy": "Never",
                    "args": ["--version"],
                }],
            },
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    for app in apps {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let pod = pods.get(app).await?;
            let status = pod.status.unwrap_or_default();
            match status.phase.as_deref() {
                Some("Succeeded") => break,
                Some("Failed") => anyhow::bail!("{app} failed: {status:?}"),
                _ => {}
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{app} did not finish: {status:?}\nkubelet log:\n{}",
                node.log_tail("kubelet", 20)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let logs = cp.run_kubectl(&["logs", app])?;
        assert_eq!(logs.trim(), format!("{app} {version}"));
    }
    node.stop().await?;
    cp.stop().await?;
    Ok(())
}

async fn wait_running(
    pods: &Api<Pod>,
    name: &str,
    node: &KubeletNode,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pods.get(name).await?;
        let status = pod.status.clone().unwrap_or_default();
        if status.phase.as_deref() == Some("Running") {
            assert_eq!(
                pod.spec.and_then(|s| s.node_name).as_deref(),
                Some(node.name.as_str())
            );
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pod {name} not Running after {timeout:?}: {status:?}\nkubelet log:\n{}",
            node.log_tail("kubelet", 30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
