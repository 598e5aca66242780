//! provider-fargate serves the PodProvider contract, health and reflection as a user sees them through
//! grpcurl, on TCP and unix sockets, and stops cleanly on SIGTERM; RPCs ECS cannot offer answer
//! UNIMPLEMENTED; start fails with a clear message when the network settings are missing.

mod support;

use std::path::PathBuf;

use anyhow::ensure;
use support::*;
use vk_testkit::{moto::Moto, provider_checks};

/// A wrapper that runs the provider with moto's AWS settings in its environment (the shared
/// checks start the binary with `--listen` only).
fn wrapper(moto: &Moto, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let mut env = Moto::aws_env(&moto.endpoint);
    env.extend([
        ("FARGATE_CLUSTER", CLUSTER.to_owned()),
        ("FARGATE_SUBNETS", moto.subnet.clone()),
        ("FARGATE_SECURITY_GROUPS", moto.security_group.clone()),
    ]);
    provider_checks::wrapper_script(dir, "provider-fargate", BIN, &env, &[])
}

#[tokio::test]
async fn grpc_surface_health_reflection_and_shutdown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let bin = wrapper(&moto, dir.path())?;
    provider_checks::check_provider_binary(&bin).await?;
    provider_checks::check_unimplemented_rpcs(&bin, &["Exec", "Attach", "PortForward"]).await
}

#[tokio::test]
async fn missing_network_settings_stop_the_start_with_a_clear_message() -> anyhow::Result<()> {
    let args = ["--listen", "127.0.0.1:0", "--security-groups", "sg-1"];
    let message = "--subnets (FARGATE_SUBNETS) is required";
    let started = "started without subnets";
    provider_checks::expect_refused_start(BIN, &args, &["FARGATE_SUBNETS"], started, message)
        .await?;
    let args = [
        "--subnets",
        "s",
        "--security-groups",
        "sg",
        "--log-group",
        "g",
    ];
    let (_, stderr) =
        provider_checks::run_to_exit(BIN, &args, &["FARGATE_EXECUTION_ROLE_ARN"]).await?;
    ensure!(stderr.contains("needs --execution-role-arn"), "{stderr}");
    Ok(())
}
