//! Checks every provider binary must pass, run against the real binary with the real grpcurl: the
//! gRPC surface a user sees (`list`, `describe`, health), UNIMPLEMENTED for RPCs it does not offer,
//! unix sockets, flag/env configuration and graceful shutdown on SIGTERM.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail, ensure};
use tokio::process::Command;

use crate::{
    grpcurl::{self, Target},
    ports::free_port,
    process::ManagedProcess,
};

/// Every RPC of `podprovider.v1.PodProvider`, as `describe` must show them.
pub const POD_PROVIDER_RPCS: &[&str] = &[
    "GetNodeInfo",
    "Ping",
    "CreatePod",
    "UpdatePod",
    "DeletePod",
    "GetPod",
    "ListPods",
    "WatchPods",
    "GetContainerLogs",
    "Exec",
    "Attach",
    "PortForward",
    "GetStats",
];

/// Starts `bin` with `args` and `env`, waits until grpcurl can list its services, and returns it.
pub async fn start_provider(
    bin: &Path,
    args: &[String],
    env: &[(&str, String)],
    target: &Target,
    log_dir: &Path,
) -> anyhow::Result<ManagedProcess> {
    let name = bin
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("provider");
    let mut cmd = Command::new(bin);
    cmd.args(args).envs(env.iter().map(|(k, v)| (*k, v)));
    let mut process = ManagedProcess::spawn(name, &mut cmd, log_dir)?;
    for _ in 0..100 {
        process.ensure_running()?;
        if grpcurl::run(target, &[], &["list"]).await?.status.success() {
            return Ok(process);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{name} did not answer grpcurl within 10 s; log:\n{}",
        process.log_tail(20)
    )
}

/// The whole surface check for one provider binary.
pub async fn check_provider_binary(bin: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    check_tcp_surface(bin, dir.path())
        .await
        .context("TCP surface")?;
    check_unix_socket_and_sigterm(bin, dir.path())
        .await
        .context("unix socket and SIGTERM")?;
    check_bad_listen_flag(bin).await.context("bad --listen")?;
    Ok(())
}

async fn check_tcp_surface(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let target = Target::Tcp(addr.clone());
    let mut provider = start_provider(bin, &["--listen".into(), addr], &[], &target, dir).await?;

    let services = grpcurl::run_ok(&target, &[], &["list"]).await?;
    for svc in [
        "podprovider.v1.PodProvider",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    ] {
        ensure!(
            services.lines().any(|l| l.trim() == svc),
            "`list` lacks {svc}:\n{services}"
        );
    }

    let described =
        grpcurl::run_ok(&target, &[], &["describe", "podprovider.v1.PodProvider"]).await?;
    for rpc in POD_PROVIDER_RPCS {
        ensure!(
            described.contains(&format!("rpc {rpc} (")),
            "`describe` lacks {rpc}:\n{described}"
        );
    }
    // Message descriptors travel too, so `describe` of a message works (grpcurl needs it for -d).
    let pod = grpcurl::run_ok(&target, &[], &["describe", "podprovider.v1.Pod"]).await?;
    ensure!(pod.contains("registry_credentials"), "describe Pod:\n{pod}");

    let health = grpcurl::run_ok(
        &target,
        &["-d", r#"{"service":"podprovider.v1.PodProvider"}"#],
        &["grpc.health.v1.Health/Check"],
    )
    .await?;
    ensure!(health.contains("SERVING"), "health: {health}");

    let status = provider.stop(Duration::from_secs(10)).await?;
    ensure!(
        status.success(),
        "provider exited with {status} after SIGTERM"
    );
    Ok(())
}

/// Starts `bin` and asserts that each of `rpcs` (PodProvider method names) answers UNIMPLEMENTED.
pub async fn check_unimplemented_rpcs(bin: &Path, rpcs: &[&str]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let target = Target::Tcp(addr.clone());
    let _provider =
        start_provider(bin, &["--listen".into(), addr], &[], &target, dir.path()).await?;
    for rpc in rpcs {
        expect_unimplemented(&target, &format!("podprovider.v1.PodProvider/{rpc}"), "{}").await?;
    }
    Ok(())
}

/// Asserts that calling `method` with `body` answers UNIMPLEMENTED.
pub async fn expect_unimplemented(target: &Target, method: &str, body: &str) -> anyhow::Result<()> {
    let out = grpcurl::run(target, &["-d", body], &[method]).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("Code: Unimplemented"),
        "{method} should be UNIMPLEMENTED; got {}: {stderr}",
        out.status
    );
    Ok(())
}

async fn check_unix_socket_and_sigterm(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let socket = dir.join("provider.sock");
    // A stale socket from a killed predecessor (bound, never removed) must not stop the provider
    // from starting.
    drop(std::os::unix::net::UnixListener::bind(&socket)?);
    ensure!(socket.exists(), "the stale socket is there");
    let target = Target::Unix(socket.clone());
    // Configured through the environment fallback rather than the flag.
    let env = [("PROVIDER_LISTEN", format!("unix:{}", socket.display()))];
    let mut provider = start_provider(bin, &[], &env, &target, dir).await?;
    let services = grpcurl::run_ok(&target, &[], &["list"]).await?;
    ensure!(
        services.contains("podprovider.v1.PodProvider"),
        "{services}"
    );

    let status = provider.stop(Duration::from_secs(10)).await?;
    ensure!(
        status.success(),
        "provider exited with {status} after SIGTERM"
    );
    ensure!(!socket.exists(), "socket file left behind after shutdown");

    // A path that is not a socket is never removed to make room: the provider refuses to start.
    std::fs::write(&socket, b"someone's file")?;
    let out = Command::new(bin)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .output()
        .await?;
    ensure!(
        !out.status.success(),
        "provider started over a regular file"
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("not a socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        std::fs::read(&socket)? == b"someone's file",
        "the file was touched"
    );
    Ok(())
}

async fn check_bad_listen_flag(bin: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .args(["--listen", "nowhere"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "provider accepted --listen nowhere");
    ensure!(
        stderr.contains("expected HOST:PORT"),
        "unclear error: {stderr}"
    );
    Ok(())
}

/// A small pod on `node` (one nginx container asking for 250m and 512 MiB, a 30 s grace
/// period): the pod the providers' tests start from.
pub fn small_pod(node: &str, name: &str, uid: &str) -> podprovider_proto::v1::Pod {
    use podprovider_proto::v1::{Container, Pod, PodRef, ResourceRequirements, Resources};
    Pod {
        pod_ref: Some(PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
        }),
        node_name: node.into(),
        containers: vec![Container {
            name: "web".into(),
            image: "nginx:1.25".into(),
            resources: Some(ResourceRequirements {
                requests: Some(Resources {
                    cpu_millis: Some(250),
                    memory_bytes: Some(512 << 20),
                    ..Default::default()
                }),
                limits: None,
            }),
            ..Default::default()
        }],
        termination_grace_period_seconds: Some(30),
        ..Default::default()
    }
}

/// An executable script `dir/name` that runs `bin` with `env` exported and `args` before the
/// caller's own: a provider binary with its cloud's settings, for the shared checks that start a
/// binary with `--listen` only.
pub fn wrapper_script(
    dir: &Path,
    name: &str,
    bin: &str,
    env: &[(&str, String)],
    args: &[String],
) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in env {
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    let args: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    script.push_str(&format!("exec {bin} {} \"$@\"\n", args.join(" ")));
    let path = dir.join(name);
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Runs `bin` with `args` and without the environment variables `unset`, to its exit (a start
/// that must stop at its checks); whether it exited successfully, and its stderr.
pub async fn run_to_exit(
    bin: &str,
    args: &[&str],
    unset: &[&str],
) -> anyhow::Result<(bool, String)> {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for name in unset {
        cmd.env_remove(name);
    }
    let out = cmd.output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Ok((out.status.success(), stderr))
}

/// Checks that `bin` with `args` and without `unset` refuses to start (else fails with
/// `started`) and says `message` on stderr.
pub async fn expect_refused_start(
    bin: &str,
    args: &[&str],
    unset: &[&str],
    started: &str,
    message: &str,
) -> anyhow::Result<()> {
    let (success, stderr) = run_to_exit(bin, args, unset).await?;
    ensure!(!success, "{started}");
    ensure!(stderr.contains(message), "{stderr}");
    Ok(())
}

/// `n` [`small_pod`]s on `node`, `<prefix>-<i>` with UID `<prefix>-uid-<i>`: the pods a test
/// creates and deletes in bulk.
pub fn numbered_pods(node: &str, n: usize, prefix: &str) -> Vec<podprovider_proto::v1::Pod> {
    (0..n)
        .map(|i| small_pod(node, &format!("{prefix}-{i}"), &format!("{prefix}-uid-{i}")))
        .collect()
}
