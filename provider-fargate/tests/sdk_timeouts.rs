//! The AWS SDK deadlines main.rs sets (10 s connect, 30 s per attempt and per read, 60 s per
//! operation), against the real binary and moto behind a proxy that can hold an answer back:
//! - a RunTask that ECS carried out but whose answer never comes fails after the attempt
//!   deadline, and the retry adopts the task it started: CreatePod answers in bounded time, one
//!   task runs, the pod is reported Running;
//! - a DescribeTasks answer that stalls after its headers is ended by the SDK's stalled-stream
//!   protection (5 s without a byte), one that never comes by the 30 s attempt deadline; the
//!   pod stays listed meanwhile, and the next attempt brings the status back.

mod support;

use parking_lot::Mutex;
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use podprovider_proto::{
    PodProviderClient,
    v1::{CreatePodRequest, PodPhase},
};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use vk_testkit::{moto::Moto, provider_calls, wait::eventually};

/// How the proxy treats the next call of an operation.
#[derive(Clone, Copy, Debug)]
enum Stall {
    /// Forward it, then never answer.
    Silence,
    /// Forward it, send the answer's head and a few body bytes, then nothing more.
    AfterHeaders,
}

#[derive(Default)]
struct State {
    stalls: HashMap<String, VecDeque<Stall>>,
    /// Per operation, when each request arrived and whether it was stalled.
    seen: HashMap<String, Vec<(Instant, bool)>>,
}

/// A proxy in front of moto, one request per connection.
struct StallProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP message head and the body its Content-Length declares.
async fn read_request(sock: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if seen.len() >= i + 4 + length {
                return Ok(seen);
            }
        }
        let n = sock.read(&mut buf).await?;
        ensure!(n > 0, "connection closed mid-request");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// `message` with `Connection: close` after its first line, so each side ends after one message.
fn with_close(message: &[u8]) -> Vec<u8> {
    let first = message
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(message.len());
    let mut out = message[..first].to_vec();
    out.extend_from_slice(b"\r\nConnection: close");
    out.extend_from_slice(&message[first..]);
    out
}

async fn handle(
    mut sock: TcpStream,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
) -> anyhow::Result<()> {
    let request = read_request(&mut sock).await?;
    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
    let op = head
        .lines()
        .find_map(|l| l.strip_prefix("x-amz-target:"))
        .and_then(|t| t.trim().rsplit('.').next())
        .unwrap_or_default()
        .to_owned();
    let stall = {
        let mut s = state.lock();
        // The target is lower-cased above; stalls are keyed the same way.
        let stall = s.stalls.get_mut(&op).and_then(VecDeque::pop_front);
        s.seen
            .entry(op)
            .or_default()
            .push((Instant::now(), stall.is_some()));
        stall
    };
    let mut up = TcpStream::connect(upstream).await.context("moto")?;
    up.write_all(&with_close(&request)).await?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await?;
    match stall {
        None => sock.write_all(&with_close(&answer)).await?,
        Some(Stall::Silence) => tokio::time::sleep(Duration::from_secs(300)).await,
        Some(Stall::AfterHeaders) => {
            let end = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(answer.len(), |i| (i + 6).min(answer.len()));
            sock.write_all(&answer[..end]).await?;
            tokio::time::sleep(Duration::from_secs(300)).await;
        }
    }
    Ok(())
}

impl StallProxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = handle(sock, upstream, state).await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stalls the next call of `op` (e.g. "RunTask").
    fn stall_next(&self, op: &str, how: Stall) {
        self.state
            .lock()
            .stalls
            .entry(op.to_ascii_lowercase())
            .or_default()
            .push_back(how);
    }

    /// When each call of `op` arrived, and whether it was stalled.
    fn seen(&self, op: &str) -> Vec<(Instant, bool)> {
        self.state
            .lock()
            .seen
            .get(&op.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn stalled_answers_end_at_the_sdk_deadlines_and_no_pod_is_lost() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let upstream: SocketAddr = format!("127.0.0.1:{}", moto.port).parse()?;
    let proxy = StallProxy::start(upstream).await?;
    let (_provider, _, addr) = start_provider(&moto, &proxy.url(), dir.path()).await?;
    let mut c = PodProviderClient::connect(format!("http://{addr}")).await?;
    let ecs = aws_sdk_ecs::Client::new(&sdk(&moto.endpoint).await);

    // RunTask reaches ECS (the task starts) but its answer never comes.
    proxy.stall_next("RunTask", Stall::Silence);
    let started = Instant::now();
    let created = tokio::time::timeout(
        Duration::from_secs(120),
        c.create_pod(CreatePodRequest {
            pod: Some(pod("stalled", "stalled-uid")),
        }),
    )
    .await
    .context("CreatePod did not answer within 120 s")?;
    let took = started.elapsed();
    created.context("CreatePod after a stalled RunTask")?;
    // Ended by the 30 s attempt deadline (not sooner: the answer never came), with room for
    // the retry's calls.
    ensure!(
        took >= Duration::from_secs(25) && took < Duration::from_secs(75),
        "CreatePod took {took:?}"
    );
    let runs = proxy.seen("RunTask");
    ensure!(
        runs.len() == 1 && runs[0].1,
        "RunTask calls (when, stalled): {} (the retry must adopt the started task, not run another)",
        runs.len()
    );
    let running = tasks(&ecs, "RUNNING").await?;
    ensure!(running.len() == 1, "{} tasks running", running.len());
    eventually(WAIT, "the pod Running", || {
        let c = c.clone();
        async move {
            let pods = provider_calls::listed(&c, NODE).await?;
            Ok(pods
                .iter()
                .any(|p| p.phase == PodPhase::Running as i32)
                .then_some(()))
        }
    })
    .await?;

    // The next DescribeTasks answer stops after its headers: the SDK's stalled-stream
    // protection (on by default: no body byte for 5 s) ends it. Then one that never answers at
    // all: the 30 s attempt deadline ends it. Either way the poll is held only that long.
    for (how, bounds) in [
        (
            Stall::AfterHeaders,
            Duration::from_secs(3)..Duration::from_secs(20),
        ),
        (
            Stall::Silence,
            Duration::from_secs(25)..Duration::from_secs(65),
        ),
    ] {
        let before = Instant::now();
        proxy.stall_next("DescribeTasks", how);
        let stalled_at = eventually(Duration::from_secs(10), "a stalled DescribeTasks", || {
            let seen = proxy.seen("DescribeTasks");
            async move {
                Ok(seen
                    .iter()
                    .find(|(t, s)| *s && *t > before)
                    .map(|(t, _)| *t))
            }
        })
        .await?;
        // Meanwhile the pod is still listed, with its last status.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pods = provider_calls::listed(&c, NODE).await?;
        ensure!(
            pods.len() == 1 && pods[0].phase == PodPhase::Running as i32,
            "pods during the {how:?} stall: {pods:?}"
        );
        let next = eventually(
            Duration::from_secs(90),
            "a DescribeTasks after the stalled one",
            || {
                let seen = proxy.seen("DescribeTasks");
                async move {
                    Ok(seen
                        .iter()
                        .find(|(t, s)| !*s && *t > stalled_at)
                        .map(|(t, _)| *t))
                }
            },
        )
        .await?;
        let gap = next.duration_since(stalled_at);
        ensure!(
            bounds.contains(&gap),
            "the {how:?} DescribeTasks held the poll {gap:?}, expected {bounds:?}"
        );
        eventually(WAIT, "statuses flowing again", || {
            let seen = proxy.seen("DescribeTasks");
            async move { Ok((seen.iter().filter(|(t, _)| *t > next).count() >= 2).then_some(())) }
        })
        .await?;
    }
    let pods = provider_calls::listed(&c, NODE).await?;
    ensure!(
        pods.len() == 1 && pods[0].phase == PodPhase::Running as i32,
        "pods after the stall: {pods:?}"
    );
    Ok(())
}
