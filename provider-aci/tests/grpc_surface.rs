//! provider-aci serves the PodProvider contract, health and reflection as a user sees them through
//! grpcurl, on TCP and unix sockets, and stops cleanly on SIGTERM; what ACI cannot offer answers
//! UNIMPLEMENTED; start fails with a clear message when required settings are missing.

mod support;

use std::path::PathBuf;

use anyhow::ensure;
use support::*;
use vk_testkit::{
    aci_emulator::{AciEmulator, AciEmulatorOptions},
    provider_checks,
};

/// A wrapper that runs the provider with the emulator's settings (the shared checks start the
/// binary with `--listen` only).
fn wrapper(emu: &AciEmulator, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let args: Vec<String> = provider_args(emu, "unused").into_iter().skip(2).collect();
    provider_checks::wrapper_script(dir, "provider-aci", BIN, &provider_env(), &args)
}

#[tokio::test]
async fn grpc_surface_health_reflection_and_shutdown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = AciEmulator::start(dir.path(), AciEmulatorOptions::default()).await?;
    let bin = wrapper(&emu, dir.path())?;
    provider_checks::check_provider_binary(&bin).await?;
    // Attach (output only) and GetStats (Azure Monitor) are offered; ACI has no port-forward.
    provider_checks::check_unimplemented_rpcs(&bin, &["PortForward"]).await
}

#[tokio::test]
async fn missing_settings_stop_the_start_with_a_clear_message() -> anyhow::Result<()> {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--resource-group",
        "rg",
        "--location",
        "westeurope",
    ];
    let message = "--subscription-id (AZURE_SUBSCRIPTION_ID) is required";
    let started = "started without a subscription";
    provider_checks::expect_refused_start(BIN, &args, &["AZURE_SUBSCRIPTION_ID"], started, message)
        .await?;
    let (_, stderr) = provider_checks::run_to_exit(
        BIN,
        &[
            "--subscription-id",
            "s",
            "--resource-group",
            "rg",
            "--location",
            "westeurope",
            "--auth-method",
            "client-secret",
            "--tenant-id",
            "t",
            "--client-id",
            "c",
        ],
        &["AZURE_CLIENT_SECRET"],
    )
    .await?;
    ensure!(stderr.contains("AZURE_CLIENT_SECRET"), "{stderr}");
    Ok(())
}
