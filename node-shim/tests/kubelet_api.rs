//! The kubelet HTTPS API, reached the way users reach it: `kubectl` → the real kube-apiserver →
//! the shim's kubelet endpoint → gRPC → the test provider. Also the endpoint's security: a serving
//! certificate from an approved CSR, anonymous requests refused, tokens reviewed, every request
//! authorized with a SubjectAccessReview.

mod support;

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use kube::{Api, ResourceExt, api::PostParams};
use support::{
    SLOW, VirtualNode, approve_serving_cert, curl, grant_node_proxy, kubectl, kubelet_port,
    start_node, with_logs,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::Command,
};
use vk_testkit::{ControlPlane, wait::eventually};

/// Starts a shim that accepts the API server's client certificate, approves its serving
/// certificate request, and returns the node, its kubelet port and the issued certificate (PEM).
async fn node_with_approved_cert(
    cp: &ControlPlane,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<(VirtualNode, u16, String)> {
    let ca = format!("--client-ca-file={}", cp.pki.ca_files.cert.display());
    let node = start_node(cp, dir, name, &[&ca]).await?;
    let approved = approve_serving_cert(cp, name).await;
    let (port, pem) = with_logs(approved, &[&node])?;
    Ok((node, port, pem))
}

/// The certificate the kubelet port presents, as PEM.
async fn presented_certificate(port: u16) -> anyhow::Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509"
        ))
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pem_body(pem: &str) -> String {
    pem.lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect()
}

/// A service account's token (1.20 creates token Secrets for service accounts).
async fn service_account_token(cp: &ControlPlane, name: &str) -> anyhow::Result<String> {
    let client = cp.client().await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    if accounts.get_opt(name).await?.is_none() {
        kubectl(cp, &["create", "serviceaccount", name])?;
    }
    eventually(SLOW, &format!("token of {name}"), || async {
        let Some(sa) = accounts.get_opt(name).await? else {
            return Ok(None);
        };
        let Some(secret_name) = sa
            .secrets
            .unwrap_or_default()
            .first()
            .and_then(|s| s.name.clone())
        else {
            return Ok(None);
        };
        let secret = secrets.get(&secret_name).await?;
        Ok(secret
            .data
            .and_then(|d| d.get("token").cloned())
            .map(|t| String::from_utf8_lossy(&t.0).into_owned()))
    })
    .await
}

fn pod_manifest(name: &str, node: &str, containers: &[&str]) -> anyhow::Result<Pod> {
    let containers: Vec<serde_json::Value> = containers
        .iter()
        .map(|c| serde_json::json!({"name": c, "image": "busybox", "stdin": true}))
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": containers,
                 "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]}
    }))?)
}

async fn running_pod(cp: &ControlPlane, pod: Pod) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, "default");
    let name = pod.name_any();
    pods.create(&PostParams::default(), &pod).await?;
    eventually(SLOW, &format!("{name} Running"), || async {
        Ok(pods
            .get_opt(&name)
            .await?
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_certificate_authentication_authorization_and_stats() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    let (node, port, issued) = node_with_approved_cert(&cp, dir.path(), "vk-sec").await?;
    let result = async {
        // The certificate presented is the one the cluster issued for the CSR.
        let presented = presented_certificate(port).await?;
        assert!(!pem_body(&issued).is_empty());
        assert_eq!(pem_body(&presented), pem_body(&issued));

        // Anonymous: 401. A token without nodes/proxy: 403. With it: 200.
        assert_eq!(curl(port, "/pods", None).await?.0, 401);
        assert_eq!(curl(port, "/pods", Some("not-a-token")).await?.0, 401);
        let nobody = service_account_token(&cp, "nobody").await?;
        let (code, body) = curl(port, "/pods", Some(&nobody)).await?;
        assert_eq!(code, 403, "{body}");
        assert!(
            body.contains("user=system:serviceaccount:default:nobody")
                && body.contains("subresource=proxy"),
            "{body}"
        );
        grant_node_proxy(&cp, "node-proxy", "prober")?;
        let prober = service_account_token(&cp, "prober").await?;
        running_pod(&cp, pod_manifest("stats", "vk-sec", &["app", "sidecar"])?).await?;
        let (code, body) = curl(port, "/pods", Some(&prober)).await?;
        assert_eq!(code, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(list["kind"], "PodList");
        assert!(
            list["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|p| p["metadata"]["name"] == "stats"))
        );
        // nodes/proxy does not cover the stats subresource, as for the kubelet.
        assert_eq!(curl(port, "/stats/summary", Some(&prober)).await?.0, 403);
        // A WebSocket exec arrives as GET, but it is authorized as `create`: a principal that may
        // only read (get nodes/proxy) cannot exec into pods.
        let ws_exec = Command::new("curl")
            .args(["-k", "-s", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
            .args(["-H", "Sec-WebSocket-Version: 13"])
            .args(["-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
            .args(["-H", "Sec-WebSocket-Protocol: v5.channel.k8s.io"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {prober}"))
            .arg(format!(
                "https://127.0.0.1:{port}/exec/default/stats/app?command=id&stdout=1"
            ))
            .output()
            .await?;
        let text = String::from_utf8_lossy(&ws_exec.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        assert_eq!(code.trim(), "403", "{text}");
        assert!(body.contains("verb=create"), "{body}");

        // Through the API server (its client certificate is system:masters).
        let raw = |path: &str| {
            kubectl(
                &cp,
                &["get", "--raw", &format!("/api/v1/nodes/vk-sec/proxy{path}")],
            )
        };
        let summary: serde_json::Value = serde_json::from_str(&raw("/stats/summary")?)?;
        assert_eq!(summary["node"]["nodeName"], "vk-sec");
        let pod = summary["pods"]
            .as_array()
            .and_then(|pods| pods.iter().find(|p| p["podRef"]["name"] == "stats"))
            .ok_or_else(|| anyhow::anyhow!("pod missing from summary: {summary}"))?;
        let names: Vec<&str> = pod["containers"]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["app", "sidecar"]);
        assert!(pod["cpu"]["usageNanoCores"].as_u64().is_some_and(|n| n > 0));
        assert!(
            pod["memory"]["workingSetBytes"]
                .as_u64()
                .is_some_and(|n| n > 0)
        );
        assert!(pod["containers"][0]["startTime"].is_string());

        let metrics = raw("/metrics/resource")?;
        let samples = parse_prometheus(&metrics)?;
        for container in ["app", "sidecar"] {
            for family in [
                "container_cpu_usage_seconds_total",
                "container_memory_working_set_bytes",
            ] {
                assert!(
                    samples.iter().any(|(name, labels, _)| name == family
                        && labels.get("container").map(String::as_str) == Some(container)
                        && labels.get("pod").map(String::as_str) == Some("stats")
                        && labels.get("namespace").map(String::as_str) == Some("default")),
                    "{family} for {container} missing:\n{metrics}"
                );
            }
        }
        assert!(
            samples
                .iter()
                .any(|(n, _, v)| n == "scrape_error" && *v == 0.0)
        );
        assert!(
            samples
                .iter()
                .any(|(n, _, _)| n == "node_memory_working_set_bytes")
        );
        anyhow::Ok(())
    }
    .await;
    with_logs(result, &[&node])?;

    // A certificate from files, and anonymous requests let through to authorization (which
    // refuses them: system:anonymous has no nodes/proxy).
    let files = cp.pki.issue(
        "vk-files-serving",
        "system:node:vk-files",
        &["system:nodes"],
        &["vk-files", "127.0.0.1"],
        vk_testkit::pki::Usage::Server,
    )?;
    let node = start_node(
        &cp,
        dir.path(),
        "vk-files",
        &[
            &format!("--tls-cert-file={}", files.cert.display()),
            &format!("--tls-private-key-file={}", files.key.display()),
            "--anonymous-auth",
        ],
    )
    .await?;
    let result = async {
        let nodes: Api<Node> = Api::all(cp.client().await?);
        let port = kubelet_port(&nodes, "vk-files").await?;
        let (code, body) = eventually(SLOW, "vk-files serving", || async {
            let (code, body) = curl(port, "/pods", None).await?;
            Ok((code != 0).then_some((code, body)))
        })
        .await?;
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("user=system:anonymous"), "{body}");
        let presented = presented_certificate(port).await?;
        assert_eq!(
            pem_body(&presented),
            pem_body(&std::fs::read_to_string(&files.cert)?)
        );
        anyhow::Ok(())
    }
    .await;
    with_logs(result, &[&node])
}

type Sample = (String, std::collections::BTreeMap<String, String>, f64);

/// A strict-enough reader of the Prometheus text format: every sample line must parse.
fn parse_prometheus(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, rest) = match line.find('{') {
            Some(i) => line.split_at(i),
            None => line
                .split_once(' ')
                .ok_or_else(|| anyhow::anyhow!("bad line {line:?}"))?,
        };
        let mut labels = std::collections::BTreeMap::new();
        let values = if let Some(body) = rest.strip_prefix('{') {
            let end = body
                .find("} ")
                .ok_or_else(|| anyhow::anyhow!("unterminated labels in {line:?}"))?;
            for pair in body[..end].split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once("=\"")
                    .ok_or_else(|| anyhow::anyhow!("bad label {pair:?} in {line:?}"))?;
                labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
            }
            &body[end + 2..]
        } else {
            rest.trim_start()
        };
        let mut parts = values.split_whitespace();
        let value: f64 = parts
            .next()
            .ok_or_else(|| anyhow::anyhow!("no value in {line:?}"))?
            .parse()?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()?;
        }
        anyhow::ensure!(parts.next().is_none(), "trailing fields in {line:?}");
        anyhow::ensure!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name {name:?}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    Ok(samples)
}

/// The kubectl of another minor version, installed next to the default one.
fn kubectl_version(minor: &str) -> anyhow::Result<PathBuf> {
    let default = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join("kubectl"))
        .find(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("kubectl not on PATH"))?;
    let dir = std::fs::canonicalize(&default)?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let versioned = dir.join(format!("kubectl.{minor}"));
    anyhow::ensure!(
        versioned.exists(),
        "{} is missing (the machine's kubectl package provides it)",
        versioned.display()
    );
    Ok(versioned)
}

/// A kubectl command (`binary`, or the default) against the control plane.
fn kubectl_cmd(cp: &ControlPlane, binary: Option<&PathBuf>) -> Command {
    let mut cmd = Command::new(binary.map_or_else(|| PathBuf::from("kubectl"), PathBuf::clone));
    cmd.arg(format!("--kubeconfig={}", cp.kubeconfig.display()));
    cmd.kill_on_drop(true);
    cmd
}

/// Runs kubectl with `stdin`, returning (exit code, stdout, stderr).
async fn kubectl_with_input(
    cp: &ControlPlane,
    binary: Option<&PathBuf>,
    args: &[&str],
    stdin: &[u8],
) -> anyhow::Result<(i32, String, String)> {
    let mut child = kubectl_cmd(cp, binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).await?;
    }
    let out = tokio::time::timeout(SLOW, child.wait_with_output()).await??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Reads `reader` line by line until a line contains `needle`; returns everything read.
async fn read_until<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    needle: &str,
) -> anyhow::Result<String> {
    let mut seen = String::new();
    let deadline = Instant::now() + SLOW;
    loop {
        let mut line = String::new();
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, reader.read_line(&mut line))
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for {needle:?}; got {seen:?}"))??;
        anyhow::ensure!(n > 0, "output ended before {needle:?}; got {seen:?}");
        seen.push_str(&line);
        if line.contains(needle) {
            return Ok(seen);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exec_attach_and_port_forward_through_kubectl() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    let (node, _port, _) = node_with_approved_cert(&cp, dir.path(), "vk-stream").await?;
    let result = streaming(&cp, &node).await;
    with_logs(result, &[&node])
}

async fn streaming(cp: &ControlPlane, node: &VirtualNode) -> anyhow::Result<()> {
    let pod = running_pod(cp, pod_manifest("shell", "vk-stream", &["c"])?).await?;
    let uid = pod.uid().unwrap_or_default();

    // Logs: the first line is the provider's, then ours.
    assert!(node.control.append_log(&uid, "c", "one\ntwo\nthree"));
    let all = kubectl(cp, &["logs", "shell"])?;
    assert_eq!(all, "c started\none\ntwo\nthree\n");
    assert_eq!(kubectl(cp, &["logs", "shell", "--tail=2"])?, "two\nthree\n");
    assert_eq!(
        kubectl(cp, &["logs", "shell", "--limit-bytes=6"])?,
        "c star"
    );
    let stamped = kubectl(cp, &["logs", "shell", "--timestamps", "--tail=1"])?;
    let (stamp, line) = stamped
        .trim_end()
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("no timestamp in {stamped:?}"))?;
    assert_eq!(line, "three");
    assert!(
        stamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "bad timestamp {stamp:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(node.control.append_log(&uid, "c", "fresh"));
    assert_eq!(kubectl(cp, &["logs", "shell", "--since=1s"])?, "fresh\n");
    assert_eq!(
        kubectl(cp, &["logs", "shell", "--since=1h"])?
            .lines()
            .count(),
        5
    );

    // -f prints a line produced after it started.
    let mut follow = kubectl_cmd(cp, None)
        .args(["logs", "-f", "shell"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(
        follow
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    );
    read_until(&mut out, "fresh").await?;
    assert!(node.control.append_log(&uid, "c", "after follow started"));
    read_until(&mut out, "after follow started").await?;
    follow.kill().await?;

    // exec with stdin and a non-zero exit code: SPDY (kubectl 1.27) and WebSocket (default kubectl).
    let old = kubectl_version("1.27")?;
    for binary in [Some(&old), None] {
        let (code, stdout, stderr) = kubectl_with_input(
            cp,
            binary,
            &[
                "exec",
                "-i",
                "shell",
                "--",
                "sh",
                "-c",
                "cat; echo oops >&2; exit 3",
            ],
            b"hello from stdin\n",
        )
        .await?;
        assert_eq!(stdout, "hello from stdin\n", "{binary:?}: {stderr}");
        assert!(stderr.contains("oops"), "{binary:?}: {stderr}");
        assert_eq!(code, 3, "{binary:?}: {stderr}");
    }
    let log = std::fs::read_to_string(node.shim.log_path())?;
    let used = |transport: &str| {
        log.lines()
            .any(|l| l.contains("remote command") && l.contains(transport))
    };
    assert!(used("spdy"), "no SPDY exec in the shim log");
    assert!(
        used("websocket"),
        "the default kubectl did not use WebSocket"
    );

    // exec -it through a pseudo-terminal.
    let (mut pty, pts) = pty_process::open()?;
    pty.resize(pty_process::Size::new(33, 111))?;
    let kubeconfig = format!("--kubeconfig={}", cp.kubeconfig.display());
    let mut child = pty_process::Command::new("kubectl")
        .args([
            kubeconfig.as_str(),
            "exec",
            "-it",
            "shell",
            "--",
            "sh",
            "-c",
            "stty size; read x; echo got:$x",
        ])
        .kill_on_drop(true)
        .spawn(pts)?;
    let mut screen = String::new();
    let deadline = Instant::now() + SLOW;
    let mut sent = false;
    while !screen.contains("got:typed") {
        let mut buf = [0u8; 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, pty.read(&mut buf))
            .await
            .map_err(|_| anyhow::anyhow!("tty exec timed out; screen {screen:?}"))??;
        anyhow::ensure!(n > 0, "tty exec ended; screen {screen:?}");
        screen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if !sent && screen.contains("33 111") {
            pty.write_all(b"typed\r").await?;
            sent = true;
        }
    }
    let status = tokio::time::timeout(SLOW, child.wait()).await??;
    assert!(status.success(), "{status}; screen {screen:?}");

    // attach: the test provider's main process echoes stdin.
    let mut attach = kubectl_cmd(cp, None)
        .args(["attach", "-i", "shell", "-c", "c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = BufReader::new(
        attach
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    );
    let mut input = attach
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    // Lines are echoed once attached; repeat until one comes back.
    let deadline = Instant::now() + SLOW;
    loop {
        input.write_all(b"ping\n").await?;
        input.flush().await?;
        let echo = tokio::time::timeout(Duration::from_secs(2), read_until(&mut out, "ping"));
        match echo.await {
            Ok(result) => {
                result?;
                break;
            }
            Err(_) => anyhow::ensure!(Instant::now() < deadline, "attach never echoed"),
        }
    }
    attach.kill().await?;

    // port-forward: the provider cannot, and kubectl shows its message.
    let mut forward = kubectl_cmd(cp, None)
        .args(["port-forward", "pod/shell", ":80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(
        forward
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    );
    let mut err = BufReader::new(
        forward
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?,
    );
    let banner = read_until(&mut out, "Forwarding from 127.0.0.1:").await?;
    let local: u16 = banner
        .lines()
        .find_map(|l| l.strip_prefix("Forwarding from 127.0.0.1:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no local port in {banner:?}"))?;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local)).await?;
    let _ = conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    read_until(
        &mut err,
        "port-forward is not supported by the test provider",
    )
    .await?;
    forward.kill().await?;

    // --previous reads the log of the container's previous instance.
    assert!(node.control.restart_container(&uid, "c", 1));
    let previous = kubectl(cp, &["logs", "shell", "--previous"])?;
    assert!(previous.starts_with("c started\none\n"), "{previous:?}");
    assert!(previous.contains("after follow started"), "{previous:?}");
    assert_eq!(kubectl(cp, &["logs", "shell"])?, "c started\n");
    Ok(())
}

/// Hostile clients: ten thousand idle connections do not stop a real `kubectl logs`, and a client
/// that sends its headers slowly is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_do_not_stop_the_kubelet_api() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    let (node, port, _) = node_with_approved_cert(&cp, dir.path(), "vk-hostile").await?;
    let result = hostile(&cp, &node, port).await;
    with_logs(result, &[&node])
}

async fn hostile(cp: &ControlPlane, node: &VirtualNode, port: u16) -> anyhow::Result<()> {
    let pod = running_pod(cp, pod_manifest("target", "vk-hostile", &["c"])?).await?;
    assert!(
        node.control
            .append_log(&pod.uid().unwrap_or_default(), "c", "still served")
    );

    // 10,000 connections that never speak (no TLS handshake).
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await?);
    }
    let started = std::time::Instant::now();
    let mut logs = Command::from(cp.kubectl());
    logs.args(["logs", "target"]);
    let out = tokio::time::timeout(Duration::from_secs(30), logs.output()).await??;
    assert!(
        out.status.success(),
        "kubectl logs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("still served"));
    tracing::info!(took = ?started.elapsed(), "kubectl logs answered beside 10,000 idle connections");
    drop(idle);

    // Headers sent one line a second: the connection is closed by the header-read timeout.
    let mut slow = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut stdin = slow.stdin.take().expect("piped stdin");
    let sent = std::time::Instant::now();
    stdin
        .write_all(b"GET /pods HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let cut = loop {
        if let Some(status) = slow.try_wait()? {
            break Some((sent.elapsed(), status));
        }
        if sent.elapsed() > Duration::from_secs(40) {
            break None;
        }
        // Ignore write errors: the point is when the server closes.
        let _ = stdin.write_all(b"X-Slow: 1\r\n").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let _ = slow.kill().await;
    let (after, _) = cut.expect("a client sending headers slowly is cut off");
    assert!(after < Duration::from_secs(25), "cut off after {after:?}");
    tracing::info!(?after, "slow client cut off");
    Ok(())
}
