//! provider-eci serves the PodProvider contract, health and reflection as a user sees them through
//! grpcurl, on TCP and unix sockets, and stops cleanly on SIGTERM; RPCs ECI cannot offer answer
//! UNIMPLEMENTED; start fails with a clear message when a required setting is missing.

mod support;

use std::path::PathBuf;

use anyhow::ensure;
use support::*;
use vk_testkit::{
    eci_emulator::{self, EciEmulator, EciEmulatorOptions},
    provider_checks,
};

/// A wrapper that runs the provider with the emulator's settings and credentials in its
/// environment (the shared checks start the binary with `--listen` only).
fn wrapper(emu: &EciEmulator, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let mut env = good_env();
    env.extend([
        ("ALIBABA_CLOUD_REGION_ID", eci_emulator::REGION.to_owned()),
        ("ECI_ENDPOINT", emu.endpoint.clone()),
        ("ECI_VSWITCH_ID", eci_emulator::VSWITCH_ID.to_owned()),
        (
            "ECI_SECURITY_GROUP_ID",
            eci_emulator::SECURITY_GROUP_ID.to_owned(),
        ),
    ]);
    provider_checks::wrapper_script(dir, "provider-eci", BIN, &env, &[])
}

#[tokio::test]
async fn grpc_surface_health_reflection_and_shutdown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = EciEmulator::start(dir.path(), EciEmulatorOptions::default()).await?;
    let bin = wrapper(&emu, dir.path())?;
    provider_checks::check_provider_binary(&bin).await?;
    provider_checks::check_unimplemented_rpcs(&bin, &["Attach", "PortForward"]).await
}

#[tokio::test]
async fn missing_settings_stop_the_start_with_a_clear_message() -> anyhow::Result<()> {
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--region",
        "cn-hangzhou",
        "--security-group-id",
        "sg-1",
    ];
    let message = "--vswitch-id (ECI_VSWITCH_ID) is required";
    let started = "started without a vSwitch";
    provider_checks::expect_refused_start(BIN, &base, &["ECI_VSWITCH_ID"], started, message)
        .await?;

    let args = [&base[..], &["--vswitch-id", "vsw-1"]].concat();
    let unset = [
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_ROLE_ARN",
        "ALIBABA_CLOUD_ECS_METADATA",
    ];
    let (success, stderr) = provider_checks::run_to_exit(BIN, &args, &unset).await?;
    ensure!(!success, "started without credentials");
    // Every way to give credentials is named.
    for way in [
        "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE (RRSA)",
        "ALIBABA_CLOUD_ECS_METADATA (RAM role)",
    ] {
        ensure!(stderr.contains(way), "{way} not in {stderr}");
    }
    Ok(())
}
