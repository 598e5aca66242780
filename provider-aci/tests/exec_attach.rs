//! Exec and attach through the provider binary against the emulator, whose exec runs on a real
//! pseudo-terminal as ACI's does:
//! - `echo x | kubectl exec -i POD -- sh -c 'cat; exit 3'`: the end of stdin (a half-closed
//!   request stream, or `stdin_closed` after a partial line) reaches the command, which prints
//!   what it read and exits with its own code, within seconds;
//! - attach streams the container's output through Containers_Attach and ends with the exit code
//!   when the main process ends; attach with stdin is refused (ACI's attach is output only).

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use podprovider_proto::{
    PodProviderClient,
    v1::{
        AttachRequest, AttachStart, ExecRequest, ExecStart, PodPhase, PodRef, RestartPolicy,
        StreamInput, StreamOutput, attach_request, exec_request, stream_input, stream_output,
    },
};
use support::*;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use vk_testkit::{
    aci_emulator::{AciEmulator, AciEmulatorOptions},
    provider_calls::{self, Client, exec_start},
    wait::eventually,
};

fn pod_ref(name: &str, uid: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: name.into(),
        uid: uid.into(),
    }
}

async fn wait_running(c: &Client, uid: &str) -> anyhow::Result<()> {
    eventually(WAIT, "the pod Running", || async {
        let pods = provider_calls::listed(c, NODE).await?;
        Ok(pods
            .iter()
            .any(|p| {
                p.pod_ref.as_ref().is_some_and(|r| r.uid == uid)
                    && p.phase == PodPhase::Running as i32
            })
            .then_some(()))
    })
    .await
}

fn stdin(data: &[u8]) -> ExecRequest {
    ExecRequest {
        request: Some(exec_request::Request::Input(StreamInput {
            input: Some(stream_input::Input::Stdin(data.to_vec())),
        })),
    }
}

/// Everything the stream sends until it ends: (stdout, exit code), within `limit`.
async fn drain(
    mut out: tonic::Streaming<StreamOutput>,
    limit: Duration,
) -> anyhow::Result<(String, Option<i32>)> {
    let mut text = String::new();
    let mut code = None;
    let read = async {
        while let Some(msg) = out.next().await {
            match msg?.output {
                Some(stream_output::Output::Stdout(b) | stream_output::Output::Stderr(b)) => {
                    text.push_str(&String::from_utf8_lossy(&b))
                }
                Some(stream_output::Output::Exit(e)) => code = Some(e.code),
                None => {}
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(limit, read)
        .await
        .with_context(|| format!("the stream did not end within {limit:?}: {text:?}"))??;
    Ok((text, code))
}

#[tokio::test]
async fn end_of_stdin_reaches_the_command_and_attach_streams_output() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default().log_heartbeat_ms(200);
    let (emu, mut provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let result = scenario(&emu, &addr).await;
    provider.stop(Duration::from_secs(10)).await?;
    result.with_context(|| format!("provider log:\n{}", provider.log_tail(40)))
}

async fn scenario(emu: &AciEmulator, addr: &str) -> anyhow::Result<()> {
    let c: Client = PodProviderClient::connect(format!("http://{addr}")).await?;
    let mut p = pod("ex", "ex-uid");
    p.restart_policy = RestartPolicy::Never as i32;
    c.clone()
        .create_pod(podprovider_proto::v1::CreatePodRequest { pod: Some(p) })
        .await?;
    wait_running(&c, "ex-uid").await?;

    // echo x | kubectl exec -i ex -- sh -c 'cat; exit 3': stdin then a half-close.
    let (tx, rx) = mpsc::channel(4);
    let command = ["sh", "-c", "cat; exit 3"];
    tx.send(exec_start(pod_ref("ex", "ex-uid"), "web", &command))
        .await?;
    tx.send(stdin(b"x\n")).await?;
    drop(tx);
    let out = c.clone().exec(ReceiverStream::new(rx)).await?.into_inner();
    let (text, code) = drain(out, Duration::from_secs(10)).await?;
    ensure!(text == "x\n", "the command's output, unchanged: {text:?}");
    ensure!(code == Some(3), "exit code {code:?}");

    // A partial line, then stdin_closed while the stream stays open.
    let (tx, rx) = mpsc::channel(4);
    tx.send(ExecRequest {
        request: Some(exec_request::Request::Start(ExecStart {
            pod_ref: Some(pod_ref("ex", "ex-uid")),
            container: "web".into(),
            command: vec!["sh".into(), "-c".into(), "cat; echo; exit 5".into()],
            stdin: true,
            stdout: true,
            ..Default::default()
        })),
    })
    .await?;
    tx.send(stdin(b"no newline")).await?;
    tx.send(ExecRequest {
        request: Some(exec_request::Request::Input(StreamInput {
            input: Some(stream_input::Input::StdinClosed(true)),
        })),
    })
    .await?;
    let out = c.clone().exec(ReceiverStream::new(rx)).await?.into_inner();
    let (text, code) = drain(out, Duration::from_secs(10)).await?;
    drop(tx);
    ensure!(text == "no newline\n", "{text:?}");
    ensure!(code == Some(5), "exit code {code:?}");

    // Attach with stdin: refused, ACI's attach is output only.
    let attach = |stdin: bool| {
        let c = c.clone();
        async move {
            let (tx, rx) = mpsc::channel(4);
            tx.send(AttachRequest {
                request: Some(attach_request::Request::Start(AttachStart {
                    pod_ref: Some(pod_ref("ex", "ex-uid")),
                    container: "web".into(),
                    stdin,
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                })),
            })
            .await?;
            let r = c.clone().attach(ReceiverStream::new(rx)).await;
            anyhow::Ok((tx, r))
        }
    };
    let (_tx, refused) = attach(true).await?;
    let status = refused.err().context("attach with stdin was accepted")?;
    ensure!(
        status.code() == tonic::Code::Unimplemented && status.message().contains("stdin"),
        "{status:?}"
    );

    // Attach: the heartbeat lines written from now on, then the exit code when the main
    // process ends.
    let (_tx, out) = attach(false).await?;
    let mut out = out?.into_inner();
    let mut text = String::new();
    while text.matches("heartbeat").count() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), out.next())
            .await
            .context("no attach output")?
            .context("attach ended early")??;
        if let Some(stream_output::Output::Stdout(b)) = msg.output {
            text.push_str(&String::from_utf8_lossy(&b));
        }
    }
    let group = emu
        .live_groups()
        .await?
        .into_iter()
        .next()
        .context("no group in the emulator")?
        .name;
    emu.exit_container(&group, "web", 7).await?;
    let (_, code) = drain(out, Duration::from_secs(15)).await?;
    ensure!(code == Some(7), "attach ended with {code:?}");
    Ok(())
}
