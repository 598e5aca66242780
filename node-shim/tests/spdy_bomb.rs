//! The SPDY header bomb against a running shim: a SYN_STREAM of a few hundred bytes whose header
//! value is a run of NULs (it used to decode into ~1 GB), sent over an authenticated and
//! authorized exec upgrade to a real node-shim's kubelet port. The shim must refuse it (RST_STREAM
//! FRAME_TOO_LARGE, and GOAWAY for a block past the size cap), its peak resident set must stay
//! within a few MiB of where it was, and it must keep serving.

mod support;

use std::{sync::Arc, time::Duration};

use anyhow::{Context, ensure};
use bytes::BytesMut;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::{Api, ResourceExt, api::PostParams};
use spdy::{Codec, Frame, GoAwayStatus, RstStatus};
use support::{SLOW, approve_serving_cert, curl, kubectl, start_node, with_logs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;
use vk_testkit::{ControlPlane, wait::eventually};

const NAME_LEN: usize = 4096;
/// Past the 128 KiB decompressed cap: the session is ended.
const BIG_BOMB_NULS: usize = 250_000;
/// Under the cap: only the entry and byte limits stop it; the stream is refused.
const SMALL_BOMB_NULS: usize = 120_000;
const BOMBS: usize = 16;
/// The bomb used to cost ~1 GB; this is allocator and TLS noise for a few dozen connections.
const ALLOWED_GROWTH: u64 = 24 << 20;

/// One header pair: a 4 KiB name, a value of `nuls` NULs.
fn bomb_block(nuls: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity(12 + NAME_LEN + nuls);
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.extend_from_slice(&(NAME_LEN as u32).to_be_bytes());
    raw.resize(raw.len() + NAME_LEN, b'a');
    raw.extend_from_slice(&(nuls as u32).to_be_bytes());
    raw.resize(raw.len() + nuls, 0);
    raw
}

/// SYN_STREAM for stream 1 with `raw` compressed as a peer would (fresh zlib context).
fn bomb_frame(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let block = Codec::new().compress_header_block(raw)?;
    let mut wire = vec![0x80, 0x03, 0x00, 0x01];
    wire.extend_from_slice(&(10 + block.len() as u32).to_be_bytes());
    wire.extend_from_slice(&1u32.to_be_bytes());
    wire.extend_from_slice(&[0; 6]);
    wire.extend_from_slice(&block);
    Ok(wire)
}

/// (VmRSS, VmHWM) of process `pid` in bytes.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name}"))?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Accepts any server certificate: the test is about what comes after the handshake.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens an exec SPDY upgrade as `token`, sends `wire`, and returns the frames the shim answered
/// (up to `replies`, or until it closed).
async fn bomb(port: u16, token: &str, wire: &[u8], replies: usize) -> anyhow::Result<Vec<Frame>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut io = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(rustls::pki_types::ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let request = format!(
        "POST /exec/default/bomb/c?command=sh&stdin=1&stdout=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    io.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), io.read_buf(&mut buf)).await??;
        ensure!(n > 0, "closed before the upgrade answer");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    ensure!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    let _ = buf.split_to(head_end);
    io.write_all(wire).await?;
    let mut codec = Codec::new();
    let mut frames = Vec::new();
    while frames.len() < replies {
        if let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(10), io.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Closed (or reset, after the GOAWAY).
            Ok(_) => break,
            Err(_) => anyhow::bail!("no answer to the bomb; got {frames:?}"),
        }
    }
    Ok(frames)
}

/// A service account's token (its token Secret).
async fn token(cp: &ControlPlane, name: &str) -> anyhow::Result<String> {
    let client = cp.client().await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    kubectl(cp, &["create", "serviceaccount", name])?;
    eventually(SLOW, &format!("token of {name}"), || async {
        let Some(sa) = accounts.get_opt(name).await? else {
            return Ok(None);
        };
        let Some(secret) = sa
            .secrets
            .unwrap_or_default()
            .first()
            .and_then(|s| s.name.clone())
        else {
            return Ok(None);
        };
        Ok(secrets
            .get(&secret)
            .await?
            .data
            .and_then(|d| d.get("token").cloned())
            .map(|t| String::from_utf8_lossy(&t.0).into_owned()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_bomb_against_a_running_shim_is_refused_in_bounded_memory() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    let ca = format!("--client-ca-file={}", cp.pki.ca_files.cert.display());
    let node = start_node(&cp, dir.path(), "vk-bomb", &[&ca]).await?;
    let result = async {
        let (port, _) = approve_serving_cert(&cp, "vk-bomb").await?;
        // exec is authorized as `create nodes/proxy`.
        kubectl(
            &cp,
            &[
                "create",
                "clusterrole",
                "exec-nodes",
                "--verb=get,create",
                "--resource=nodes/proxy",
            ],
        )?;
        kubectl(
            &cp,
            &[
                "create",
                "clusterrolebinding",
                "exec-nodes",
                "--clusterrole=exec-nodes",
                "--serviceaccount=default:bomber",
            ],
        )?;
        let token = token(&cp, "bomber").await?;
        let pods: Api<Pod> = Api::namespaced(cp.client().await?, "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bomb"},
            "spec": {"nodeName": "vk-bomb", "containers": [{"name": "c", "image": "busybox"}],
                     "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]}
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        eventually(SLOW, "pod Running", || async {
            Ok(pods
                .get_opt("bomb")
                .await?
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .map(|p| p.name_any()))
        })
        .await?;

        let big = bomb_frame(&bomb_block(BIG_BOMB_NULS))?;
        let small = bomb_frame(&bomb_block(SMALL_BOMB_NULS))?;
        ensure!(
            big.len() < 1024 && small.len() < 1024,
            "bombs are small on the wire"
        );
        let pid = node.shim.pid().context("shim pid")?;
        // Warm up the paths a legitimate request uses (TLS, authentication cache), so only
        // what the bombs cost is measured.
        ensure!(
            curl(port, "/pods", Some(&token)).await?.0 == 200,
            "pods before"
        );
        let (rss_before, peak_before) = memory(pid)?;

        for _ in 0..BOMBS {
            let frames = bomb(port, &token, &big, 3).await?;
            ensure!(
                frames
                    == [
                        Frame::RstStream {
                            stream_id: 1,
                            status: RstStatus::FRAME_TOO_LARGE
                        },
                        Frame::GoAway {
                            last_good_stream_id: 0,
                            status: GoAwayStatus::PROTOCOL_ERROR
                        }
                    ],
                "big bomb answered {frames:?}"
            );
            let frames = bomb(port, &token, &small, 1).await?;
            ensure!(
                frames
                    == [Frame::RstStream {
                        stream_id: 1,
                        status: RstStatus::FRAME_TOO_LARGE
                    }],
                "small bomb answered {frames:?}"
            );
        }

        let (rss_after, peak_after) = memory(pid)?;
        let growth = peak_after.saturating_sub(rss_before);
        tracing::info!(
            rss_before_kib = rss_before >> 10,
            peak_before_kib = peak_before >> 10,
            rss_after_kib = rss_after >> 10,
            peak_after_kib = peak_after >> 10,
            growth_kib = growth >> 10,
            "shim memory around {} header bombs",
            2 * BOMBS
        );
        ensure!(
            growth < ALLOWED_GROWTH,
            "the shim's peak resident set grew by {} KiB",
            growth >> 10
        );
        // Still serving, same process.
        let (code, body) = curl(port, "/pods", Some(&token)).await?;
        ensure!(
            code == 200 && body.contains("\"bomb\""),
            "after the bombs: {code} {body}"
        );
        ensure!(node.shim.pid() == Some(pid), "the shim was restarted");
        Ok(())
    }
    .await;
    with_logs(result, &[&node])
}
