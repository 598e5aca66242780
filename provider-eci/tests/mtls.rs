//! Issue 25: the gRPC link over mutual TLS, with the real `provider-eci` (against the ECI emulator),
//! the real `grpcurl` and the real `node-shim`, certificates from a CA made here:
//! - a non-loopback listen without mutual TLS is refused with a clear message;
//! - grpcurl with a client certificate the CA signed (and an allowed name) is served; without one,
//!   with one from another CA, or with a name not allowed, the handshake fails;
//! - the shim over `https://` takes a pod to Running and `kubectl logs` works; the provider's
//!   CreatePod span is the child of the shim's (traces join across TLS);
//! - rotating to a new CA (the CA bundle both sides read, and both certificates re-issued by it)
//!   while `kubectl logs -f`, a `WatchPods` stream and an exec stream are open: all continue, new
//!   connections get the new server certificate, a client certificate from the new CA is served
//!   and one from the old CA refused, and the shim verifies the provider against the new CA and
//!   presents its new client certificate (the provider, restarted to allow only the new name,
//!   serves it).
//! - the shim here and the provider in another network namespace (a veth pair made by the test)
//!   run the ECI walk-through's manifest over mutual TLS on the provider's non-loopback address.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use podprovider_proto::v1::{
    ExecRequest, PodRef, StreamInput, exec_request, pod_provider_client::PodProviderClient,
    stream_input, stream_output, watch_pods_event::Event,
};
use support::{BIN, good_env, provider_args};
use vk_testkit::{
    ControlPlane,
    eci_emulator::{EciEmulator, EciEmulatorOptions},
    grpcurl::grpcurl_bin,
    otlp::{OtlpReceiver, RecordedSpan},
    pki::{CertFiles, Pki, Usage},
    ports::free_port,
    process::ManagedProcess,
    provider_calls::{self, exec_start},
    shim::shim_bin,
    wait::eventually,
};

const SVC: &str = "podprovider.v1.PodProvider";
const SHIM_V1: &str = "vk-shim-v1.example";
const SHIM_V2: &str = "vk-shim-v2.example";
const TEST_CLIENT: &str = "vk-test-client.example";

/// grpcurl over TLS against `addr` with `cert` as its client certificate (none when `None`).
async fn grpcurl_tls(
    ca: &Path,
    cert: Option<&CertFiles>,
    addr: &str,
    trailing: &[&str],
) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new(grpcurl_bin());
    cmd.arg("-cacert").arg(ca);
    if let Some(c) = cert {
        cmd.arg("-cert").arg(&c.cert).arg("-key").arg(&c.key);
    }
    cmd.args(["-max-time", "10"]).arg(addr).args(trailing);
    cmd.output().await.context("running grpcurl")
}

/// The provider with TLS, client CA and allowed client names, on `addr`; waits until grpcurl
/// with `probe` (a certificate it accepts) lists the service.
#[allow(clippy::too_many_arguments)] // a test helper; each argument is one of the provider's settings
async fn start_tls_provider(
    emu: &EciEmulator,
    dir: &Path,
    addr: &str,
    server: &CertFiles,
    ca: &Path,
    allowed: &[&str],
    probe: &CertFiles,
    otlp: &str,
) -> anyhow::Result<ManagedProcess> {
    let mut args = provider_args(emu, addr);
    args.extend([
        format!("--tls-cert-file={}", server.cert.display()),
        format!("--tls-private-key-file={}", server.key.display()),
        format!("--client-ca-file={}", ca.display()),
        format!("--allowed-client-names={}", allowed.join(",")),
    ]);
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(&args);
    for (k, v) in good_env() {
        cmd.env(k, v);
    }
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp);
    let mut p = ManagedProcess::spawn("provider-eci-tls", &mut cmd, dir)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        p.ensure_running()?;
        let out = grpcurl_tls(ca, Some(probe), addr, &["list"]).await?;
        if String::from_utf8_lossy(&out.stdout).contains(SVC) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the TLS provider is not serving: {out:?}\n{}",
                p.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(p)
}

/// A tonic client over mutual TLS, for the WatchPods stream the test holds open.
async fn tls_client(
    ca: &Path,
    client: &CertFiles,
    addr: &str,
) -> anyhow::Result<PodProviderClient<tonic::transport::Channel>> {
    let config = provider_common::tls::client_config(ca, Some((&client.cert, &client.key)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = addr.to_owned();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, addr) = (connector.clone(), addr.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    connector.connect(name, tcp).await?,
                ))
            }
        }))
        .await?;
    Ok(PodProviderClient::new(channel))
}

/// The end-entity certificate (DER) the server at `addr` presents to a new connection.
async fn served_cert(ca: &Path, client: &CertFiles, addr: &str) -> anyhow::Result<Vec<u8>> {
    let config = provider_common::tls::client_config(ca, Some((&client.cert, &client.key)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(rustls::pki_types::ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .context("no peer cert")?;
    Ok(certs.first().context("empty chain")?.to_vec())
}

fn pem_der(path: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    Ok(CertificateDer::from_pem_file(path)?.to_vec())
}

/// Replaces `to` with a copy of `from` as a Secret rotation would: written whole, then renamed.
fn replace_with(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

/// Issues `name`'s certificate under `stem`, then copies it to `dest` (the files a process
/// reads) with [`replace_with`].
fn issue_into(
    pki: &Pki,
    stem: &str,
    name: &str,
    usage: Usage,
    dest: &CertFiles,
) -> anyhow::Result<()> {
    let sans: Vec<&str> = match usage {
        Usage::Server => vec!["127.0.0.1", "localhost"],
        Usage::Client => vec![name],
    };
    let issued = pki.issue(stem, name, &[], &sans, usage)?;
    replace_with(&issued.cert, &dest.cert)?;
    replace_with(&issued.key, &dest.key)
}

fn files(dir: &Path, stem: &str) -> CertFiles {
    CertFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    }
}

#[tokio::test]
async fn non_loopback_listen_without_mutual_tls_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(&dir.path().join("pki"))?;
    let server = pki.issue("server", "provider", &[], &["127.0.0.1"], Usage::Server)?;
    let listen = format!("0.0.0.0:{}", free_port()?);
    let tls = [
        format!("--tls-cert-file={}", server.cert.display()),
        format!("--tls-private-key-file={}", server.key.display()),
    ];
    for (extra, why) in [
        (&[][..], "plaintext gRPC authenticates no client"),
        (
            &tls[..],
            "TLS without --client-ca-file authenticates no client",
        ),
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(BIN)
                .args(["--listen", &listen])
                .args(extra)
                .envs(good_env())
                .output(),
        )
        .await
        .context("the provider did not exit")??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "exited {}: {stderr}", out.status);
        for want in [
            format!("refusing to listen on {listen}"),
            why.to_owned(),
            "--client-ca-file".to_owned(),
            "--insecure-plaintext-listen".to_owned(),
        ] {
            ensure!(stderr.contains(&want), "{want:?} missing from: {stderr}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_grpcurl_shim_and_rotation() -> anyhow::Result<()> {
    let dir = vk_testkit::shim::prepare()?;
    let pki = Pki::new(&dir.path().join("pki"))?;
    let other = Pki::new(&dir.path().join("other-pki"))?;
    // The files the processes read, rewritten in place on rotation.
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live)?;
    let ca = live.join("ca.crt");
    std::fs::copy(&pki.ca_files.cert, &ca)?;
    let server = files(&live, "server");
    let shim_cert = files(&live, "shim");
    issue_into(&pki, "server-1", "provider", Usage::Server, &server)?;
    issue_into(&pki, "shim-1", SHIM_V1, Usage::Client, &shim_cert)?;
    let test_client = pki.issue("test", TEST_CLIENT, &[], &[TEST_CLIENT], Usage::Client)?;
    let unlisted = pki.issue(
        "unlisted",
        "x",
        &[],
        &["not-allowed.example"],
        Usage::Client,
    )?;
    let foreign = other.issue("foreign", TEST_CLIENT, &[], &[TEST_CLIENT], Usage::Client)?;

    let emu = EciEmulatorOptions::default()
        .log_heartbeat_ms(300)
        .start(dir.path())
        .await?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let receiver = OtlpReceiver::start().await?;
    let mut provider = start_tls_provider(
        &emu,
        dir.path(),
        &addr,
        &server,
        &ca,
        &[SHIM_V1, SHIM_V2, TEST_CLIENT],
        &test_client,
        &receiver.endpoint(),
    )
    .await?;

    // grpcurl: served with the right certificate, refused otherwise.
    let out = grpcurl_tls(&ca, Some(&test_client), &addr, &["list"]).await?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(SVC),
        "grpcurl with the right certificate: {out:?}"
    );
    let health = grpcurl_tls(
        &ca,
        Some(&test_client),
        &addr,
        &["grpc.health.v1.Health/Check"],
    )
    .await?;
    ensure!(
        String::from_utf8_lossy(&health.stdout).contains("SERVING"),
        "{health:?}"
    );
    for (what, cert) in [
        ("no client certificate", None),
        ("a certificate from another CA", Some(&foreign)),
        ("a name not allowed", Some(&unlisted)),
    ] {
        let out = grpcurl_tls(&ca, cert, &addr, &["list"]).await?;
        ensure!(
            !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains(SVC),
            "grpcurl with {what} was served: {out:?}"
        );
    }
    // Nor does a plaintext client get anything.
    let plain = tokio::process::Command::new(grpcurl_bin())
        .args(["-plaintext", "-max-time", "5", &addr, "list"])
        .output()
        .await?;
    ensure!(!plain.status.success(), "plaintext served: {plain:?}");

    let cp = ControlPlane::start().await?;
    let node = "vk-eci-tls";
    let spawn_tls_shim = || -> anyhow::Result<ManagedProcess> {
        ManagedProcess::spawn(
            "node-shim-tls",
            tokio::process::Command::new(shim_bin()?)
                .arg(format!("--node-name={node}"))
                .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
                .arg(format!("--provider-endpoint=https://{addr}"))
                .arg(format!("--provider-ca-file={}", ca.display()))
                .arg(format!("--provider-cert-file={}", shim_cert.cert.display()))
                .arg(format!("--provider-key-file={}", shim_cert.key.display()))
                .arg(format!(
                    "--client-ca-file={}",
                    cp.pki.ca_files.cert.display()
                ))
                .arg(format!("--kubelet-port={}", free_port()?))
                .arg("--metrics-address=off")
                .args(["--ping-interval=1s", "--resync-period=5s"])
                .env("RUST_LOG", "info,node_shim=debug")
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            dir.path(),
        )
    };
    let mut shim = spawn_tls_shim()?;
    let mut logs_f: Option<std::process::Child> = None;
    let result = scenario(
        &cp,
        &emu,
        &addr,
        &ca,
        &server,
        &shim_cert,
        &test_client,
        node,
        &mut shim,
        &mut provider,
        &mut logs_f,
        dir.path(),
        &receiver,
    )
    .await;
    if let Some(mut child) = logs_f {
        let _ = child.kill();
        let _ = child.wait();
    }
    vk_testkit::process::with_logs(result, &[&shim, &provider])
}

fn pod_yaml(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  \
         tolerations:\n  - key: virtual-kubelet.io/provider\n    operator: Exists\n  containers:\n  \
         - name: web\n    image: nginx:1.25\n"
    )
}

fn apply(cp: &ControlPlane, dir: &Path, name: &str, node: &str) -> anyhow::Result<()> {
    let path: PathBuf = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, pod_yaml(name, node))?;
    cp.run_kubectl(&["apply", "-f", &path.to_string_lossy()])?;
    Ok(())
}

async fn running(cp: &ControlPlane, name: &str) -> anyhow::Result<()> {
    eventually(
        Duration::from_secs(90),
        &format!("{name} Running"),
        || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let phase = cp
                .run_kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"])
                .unwrap_or_default();
            Ok((phase.trim() == "Running").then_some(()))
        },
    )
    .await
}

async fn logs_ok(cp: &ControlPlane, name: &str) -> anyhow::Result<String> {
    eventually(
        Duration::from_secs(60),
        &format!("kubectl logs {name}"),
        || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The kubelet API serves once its serving certificate is approved, as an admin would.
            if let Ok(out) = cp.run_kubectl(&["get", "csr", "-o", "name"]) {
                for n in out.lines() {
                    let _ = cp.run_kubectl(&["certificate", "approve", n]);
                }
            }
            Ok(cp
                .run_kubectl(&["logs", name])
                .ok()
                .filter(|o| o.contains("heartbeat")))
        },
    )
    .await
}

fn heartbeat_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().filter(|l| l.contains("heartbeat")).count())
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
async fn scenario(
    cp: &ControlPlane,
    emu: &EciEmulator,
    addr: &str,
    ca: &Path,
    server: &CertFiles,
    shim_cert: &CertFiles,
    test_client: &CertFiles,
    node: &str,
    shim: &mut ManagedProcess,
    provider: &mut ManagedProcess,
    logs_f: &mut Option<std::process::Child>,
    dir: &Path,
    receiver: &OtlpReceiver,
) -> anyhow::Result<()> {
    // A pod through the shim over mutual TLS, and its logs.
    apply(cp, dir, "tls-one", node)?;
    running(cp, "tls-one").await?;
    shim.ensure_running()?;
    logs_ok(cp, "tls-one").await?;

    // Traces join across the TLS link: the provider's CreatePod server span is the child of the
    // shim's CreatePod client span (traceparent travels in the gRPC metadata, inside TLS).
    eventually(
        Duration::from_secs(60),
        "CreatePod server span under the shim's client span",
        || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let spans = receiver.spans();
            let create = |service: &str| -> Vec<&RecordedSpan> {
                spans
                    .iter()
                    .filter(|s| {
                        s.service == service
                            && s.attributes.get("rpc.method").map(String::as_str)
                                == Some("CreatePod")
                    })
                    .collect()
            };
            let clients = create("node-shim");
            Ok(create("provider-eci")
                .into_iter()
                .any(|server| {
                    clients.iter().any(|c| {
                        c.trace_id == server.trace_id && c.span_id == server.parent_span_id
                    })
                })
                .then_some(()))
        },
    )
    .await?;

    // Streams held open across the rotation: kubectl logs -f (API server → shim → provider) and
    // a WatchPods of our own.
    let follow_out = dir.join("logs-f.out");
    *logs_f = Some(
        cp.kubectl()
            .args(["logs", "-f", "tls-one"])
            .stdout(std::fs::File::create(&follow_out)?)
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut client = tls_client(ca, test_client, addr).await?;
    let mut watch = provider_calls::watch(&client, node).await?;
    // Drain the snapshot.
    loop {
        match tokio::time::timeout(Duration::from_secs(20), watch.next()).await? {
            Some(ev) => {
                if matches!(ev?.event, Some(Event::Synced(_))) {
                    break;
                }
            }
            None => bail!("WatchPods ended before its snapshot"),
        }
    }
    // And an exec stream (`cat`): one line of stdin before the rotation, one after.
    let one_uid = cp.run_kubectl(&["get", "pod", "tls-one", "-o", "jsonpath={.metadata.uid}"])?;
    let (exec_in, exec_rx) = tokio::sync::mpsc::channel::<ExecRequest>(4);
    let stdin = |bytes: &[u8]| ExecRequest {
        request: Some(exec_request::Request::Input(StreamInput {
            input: Some(stream_input::Input::Stdin(bytes.to_vec())),
        })),
    };
    exec_in
        .send(exec_start(
            PodRef {
                namespace: "default".into(),
                name: "tls-one".into(),
                uid: one_uid.trim().to_owned(),
            },
            "web",
            &["cat"],
        ))
        .await?;
    exec_in.send(stdin(b"before rotation\n")).await?;
    let mut exec_out = client
        .exec(tokio_stream::wrappers::ReceiverStream::new(exec_rx))
        .await?
        .into_inner();

    eventually(
        Duration::from_secs(30),
        "kubectl logs -f streaming",
        || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok((heartbeat_lines(&follow_out) > 0).then_some(()))
        },
    )
    .await?;

    // Rotate to a new CA: the bundle both sides read now holds only it, and both certificates
    // are re-issued by it (the shim's now names SHIM_V2).
    let next = Pki::new(&dir.join("next-pki"))?;
    let next_client = next.issue("test-next", TEST_CLIENT, &[], &[TEST_CLIENT], Usage::Client)?;
    issue_into(&next, "server-2", "provider", Usage::Server, server)?;
    issue_into(&next, "shim-2", SHIM_V2, Usage::Client, shim_cert)?;
    replace_with(&next.ca_files.cert, ca)?;
    let new_server = pem_der(&server.cert)?;
    // A new connection with the new CA and a client certificate it signed is served: the
    // provider trusts the new CA for clients and presents the new certificate.
    eventually(
        Duration::from_secs(20),
        "new connections served under the new CA",
        || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let out = grpcurl_tls(ca, Some(&next_client), addr, &["list"]).await?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .contains(SVC)
                .then_some(()))
        },
    )
    .await?;
    ensure!(
        served_cert(ca, &next_client, addr).await? == new_server,
        "a new connection did not get the new certificate"
    );
    // The old CA's client certificate (still allowed by name) is refused on a new handshake,
    // while the WatchPods and exec streams this test opened with it go on below.
    let out = grpcurl_tls(ca, Some(test_client), addr, &["list"]).await?;
    ensure!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains(SVC),
        "a client certificate from the old CA was served after the rotation: {out:?}"
    );

    // The open streams go on: kubectl logs -f keeps receiving lines, and WatchPods reports a pod
    // created through the shim after the rotation.
    let before = heartbeat_lines(&follow_out);
    apply(cp, dir, "tls-two", node)?;
    let uid = eventually(Duration::from_secs(60), "tls-two's uid", || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(cp
            .run_kubectl(&["get", "pod", "tls-two", "-o", "jsonpath={.metadata.uid}"])
            .ok()
            .filter(|u| !u.trim().is_empty()))
    })
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, watch.next()).await {
            Err(_) => {
                bail!("the WatchPods stream opened before the rotation did not report tls-two")
            }
            Ok(None) => bail!("the WatchPods stream ended after the rotation"),
            Ok(Some(ev)) => {
                if let Some(Event::Status(s)) = ev?.event
                    && s.pod_ref.is_some_and(|r| r.uid == uid.trim())
                {
                    break;
                }
            }
        }
    }
    running(cp, "tls-two").await?;
    exec_in.send(stdin(b"after rotation\n")).await?;
    exec_in
        .send(ExecRequest {
            request: Some(exec_request::Request::Input(StreamInput {
                input: Some(stream_input::Input::StdinClosed(true)),
            })),
        })
        .await?;
    let (mut out, mut code) = (String::new(), None);
    while let Some(m) = tokio::time::timeout(Duration::from_secs(30), exec_out.next())
        .await
        .context("the exec stream opened before the rotation stalled")?
    {
        match m?.output {
            Some(stream_output::Output::Stdout(b)) => out.push_str(&String::from_utf8_lossy(&b)),
            Some(stream_output::Output::Exit(e)) => code = Some(e.code),
            _ => {}
        }
    }
    ensure!(
        out == "before rotation\nafter rotation\n" && code == Some(0),
        "exec across the rotation: {out:?}, exit {code:?}"
    );
    eventually(
        Duration::from_secs(20),
        "kubectl logs -f still streaming",
        || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok((heartbeat_lines(&follow_out) > before + 2).then_some(()))
        },
    )
    .await?;
    if let Some(child) = logs_f.as_mut() {
        ensure!(
            child.try_wait()?.is_none(),
            "kubectl logs -f ended after the rotation"
        );
    }

    // The shim verifies the provider against the new CA and presents its new certificate on new
    // connections: the provider, restarted to allow only SHIM_V2 (and this test), serves it.
    provider.stop(Duration::from_secs(10)).await?;
    std::fs::create_dir_all(dir.join("restarted"))?;
    *provider = start_tls_provider(
        emu,
        &dir.join("restarted"),
        addr,
        server,
        ca,
        &[SHIM_V2, TEST_CLIENT],
        &next_client,
        &receiver.endpoint(),
    )
    .await?;
    let before = cp.run_kubectl(&["logs", "tls-two"])?.lines().count();
    eventually(
        Duration::from_secs(60),
        "kubectl logs through the shim's new certificate",
        || async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(cp
                .run_kubectl(&["logs", "tls-two"])
                .ok()
                .filter(|o| o.lines().count() > before))
        },
    )
    .await?;
    shim.ensure_running()?;
    Ok(())
}

/// A network namespace with a veth pair to this one; deleted (with its end of the pair) on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `name` with `lo` up and a veth pair: `host_ip`/30 here, `ns_ip`/30 inside.
    fn create(name: &str, host_ip: &str, ns_ip: &str) -> anyhow::Result<Self> {
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let out = std::process::Command::new("ip").args(args).output()?;
            ensure!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        let (host_if, ns_if) = (format!("{name}h"), format!("{name}p"));
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        for args in [
            vec!["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if],
            vec!["link", "set", &ns_if, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["-n", name];
            full.extend(args.iter().map(|s| &**s));
            ip(&full)?;
        }
        Ok(ns)
    }

    /// A command run inside the namespace.
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The shim here and the provider (with its ECI emulator) in another network namespace, joined
/// by a veth pair: the provider listens on its non-loopback veth address with mutual TLS, the
/// shim dials `https://` it, and the ECI walk-through's manifest (examples/acceptance/
/// eci-nginx-pod.yaml, unchanged) is scheduled onto the node, runs, and `kubectl logs` shows its
/// container's log. No traffic leaves this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_manifest_across_network_namespaces_over_mutual_tls() -> anyhow::Result<()> {
    let dir = vk_testkit::shim::prepare()?;
    let id = std::process::id() % 250;
    let (host_ip, ns_ip) = (format!("10.251.{id}.1"), format!("10.251.{id}.2"));
    let ns = NetNs::create(&format!("vkm{}", std::process::id()), &host_ip, &ns_ip)?;

    let pki = Pki::new(&dir.path().join("pki"))?;
    let ca = pki.ca_files.cert.clone();
    let server = pki.issue("server", "provider", &[], &[&ns_ip], Usage::Server)?;
    let shim_cert = pki.issue("shim", SHIM_V1, &[], &[SHIM_V1], Usage::Client)?;

    // The emulator on the namespace's own loopback: only the provider reaches it.
    let emu_port = free_port()?;
    let _emu = ManagedProcess::spawn(
        "eci-emulator-netns",
        ns.command(&vk_testkit::bins::workspace_bin("eci-emulator")?.to_string_lossy())
            .args(["--listen", &format!("127.0.0.1:{emu_port}")])
            .args(["--log-heartbeat-ms", "500"]),
        dir.path(),
    )?;
    let addr = format!("{ns_ip}:50051");
    let mut cmd = ns.command(BIN);
    cmd.args(["--listen", &addr])
        .args(["--region", vk_testkit::eci_emulator::REGION])
        .args(["--endpoint", &format!("http://127.0.0.1:{emu_port}")])
        .args(["--vswitch-id", vk_testkit::eci_emulator::VSWITCH_ID])
        .args([
            "--security-group-id",
            vk_testkit::eci_emulator::SECURITY_GROUP_ID,
        ])
        .args(["--zone-id", vk_testkit::eci_emulator::ZONE_ID])
        .args(["--status-interval-seconds", "0.5"])
        .arg(format!("--tls-cert-file={}", server.cert.display()))
        .arg(format!("--tls-private-key-file={}", server.key.display()))
        .arg(format!("--client-ca-file={}", ca.display()))
        .arg(format!("--allowed-client-names={SHIM_V1}"))
        .envs(good_env());
    let mut provider = ManagedProcess::spawn("provider-eci-netns", &mut cmd, dir.path())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        provider.ensure_running()?;
        let out = grpcurl_tls(&ca, Some(&shim_cert), &addr, &["list"]).await?;
        if String::from_utf8_lossy(&out.stdout).contains(SVC) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "provider not serving across the veth: {out:?}\n{}",
                provider.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let cp = ControlPlane::start().await?;
    let mut shim = ManagedProcess::spawn(
        "node-shim-netns",
        tokio::process::Command::new(shim_bin()?)
            .arg("--node-name=vk-eci-netns")
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg(format!("--provider-endpoint=https://{addr}"))
            .arg(format!("--provider-ca-file={}", ca.display()))
            .arg(format!("--provider-cert-file={}", shim_cert.cert.display()))
            .arg(format!("--provider-key-file={}", shim_cert.key.display()))
            .arg("--taint-key=alibabacloud.com/eci")
            .arg(format!(
                "--client-ca-file={}",
                cp.pki.ca_files.cert.display()
            ))
            .arg(format!("--kubelet-port={}", free_port()?))
            .arg("--metrics-address=off")
            .args(["--ping-interval=1s", "--resync-period=5s"])
            .env("RUST_LOG", "info,node_shim=debug"),
        dir.path(),
    )?;
    let result = async {
        let manifest = vk_testkit::shim::example("eci-nginx-pod.yaml");
        cp.run_kubectl(&["apply", "-f", &manifest])?;
        running(&cp, "mypod").await?;
        let node = cp.run_kubectl(&["get", "pod", "mypod", "-o", "jsonpath={.spec.nodeName}"])?;
        ensure!(node.trim() == "vk-eci-netns", "scheduled on {node}");
        logs_ok(&cp, "mypod").await?;
        cp.run_kubectl(&["delete", "-f", &manifest, "--wait=true", "--timeout=60s"])?;
        shim.ensure_running()?;
        Ok(())
    }
    .await;
    vk_testkit::process::with_logs(result, &[&shim, &provider])
}
