//! Exec through provider-eci against the ECI emulator's exec WebSocket: stdin reaches the command
//! and its end is passed on, stdout and stderr come back apart, and the exit code is the
//! command's; exec into a missing container is NOT_FOUND.

mod support;

use anyhow::ensure;
use futures::StreamExt;
use podprovider_proto::v1::{
    CreatePodRequest, ExecRequest, ExecStart, PodPhase, StreamInput, exec_request,
    pod_provider_client::PodProviderClient, stream_input, stream_output,
};
use support::*;
use vk_testkit::{
    eci_emulator::EciEmulatorOptions,
    provider_calls::{self, Client},
};

/// Runs `command` with `stdin` in the pod's `web` container; returns stdout, stderr, exit code.
async fn exec(
    c: &mut Client,
    container: &str,
    command: &[&str],
    stdin: &[u8],
) -> Result<(String, String, i32), tonic::Status> {
    let mut msgs = vec![ExecRequest {
        request: Some(exec_request::Request::Start(ExecStart {
            pod_ref: pod("web", "uid-exec").pod_ref,
            container: container.into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            stdin: !stdin.is_empty(),
            stdout: true,
            stderr: true,
            ..Default::default()
        })),
    }];
    if !stdin.is_empty() {
        msgs.push(ExecRequest {
            request: Some(exec_request::Request::Input(StreamInput {
                input: Some(stream_input::Input::Stdin(stdin.to_vec())),
            })),
        });
        msgs.push(ExecRequest {
            request: Some(exec_request::Request::Input(StreamInput {
                input: Some(stream_input::Input::StdinClosed(true)),
            })),
        });
    }
    let mut out = c.exec(futures::stream::iter(msgs)).await?.into_inner();
    let (mut stdout, mut stderr, mut code) = (String::new(), String::new(), None);
    while let Some(m) = out.next().await {
        match m?.output {
            Some(stream_output::Output::Stdout(b)) => stdout.push_str(&String::from_utf8_lossy(&b)),
            Some(stream_output::Output::Stderr(b)) => stderr.push_str(&String::from_utf8_lossy(&b)),
            Some(stream_output::Output::Exit(e)) => code = Some(e.code),
            None => {}
        }
    }
    Ok((stdout, stderr, code.unwrap_or(-1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_stdin_output_and_exit_codes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = EciEmulatorOptions::default();
    let (_emu, provider, _, addr) = start_with_emulator(dir.path(), opts).await?;
    let result = async {
        let mut c = PodProviderClient::connect(format!("http://{addr}")).await?;
        c.create_pod(CreatePodRequest {
            pod: Some(pod("web", "uid-exec")),
        })
        .await?;
        let web = pod("web", "uid-exec").pod_ref;
        provider_calls::status_until(&c, &web, "pod Running", |s| {
            s.phase == PodPhase::Running as i32
        })
        .await?;
        let (out, _, code) = exec(&mut c, "web", &["cat"], b"through stdin\n").await?;
        ensure!(out == "through stdin\n" && code == 0, "{out:?} {code}");
        let (out, err, code) = exec(
            &mut c,
            "web",
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            b"",
        )
        .await?;
        ensure!(
            out == "out\n" && err == "err\n" && code == 3,
            "{out:?} {err:?} {code}"
        );
        let missing = exec(&mut c, "nope", &["true"], b"")
            .await
            .expect_err("no such container");
        ensure!(missing.code() == tonic::Code::NotFound, "{missing:?}");
        Ok(())
    }
    .await;
    result.map_err(|e| {
        e.context(format!(
            "--- provider log ---\n{}",
            provider.log_excerpt(40)
        ))
    })
}
