//! Shared set-up for the provider-eci tests: the ECI emulator and the provider binary against it.
#![allow(dead_code)] // each test file uses a part

use std::{path::Path, time::Duration};

use podprovider_proto::v1::Pod;
use vk_testkit::{
    eci_emulator::{self, EciEmulator, EciEmulatorOptions},
    grpcurl::Target,
    ports::free_port,
    process::ManagedProcess,
    provider_checks,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_provider-eci");
pub const NODE: &str = "vk-eci";
/// Generous deadline for emulator-backed conditions.
pub const WAIT: Duration = Duration::from_secs(60);

/// The provider's flags for the emulator.
pub fn provider_args(emu: &EciEmulator, listen: &str) -> Vec<String> {
    let mut args = vec!["--listen".to_owned(), listen.to_owned()];
    args.extend(eci_emulator::provider_flags(&emu.endpoint));
    args.extend(
        [
            "--status-interval-seconds",
            "0.5",
            "--full-sync-seconds",
            "3",
            "--log-filter",
            "info,provider_eci=debug,provider_common=debug",
        ]
        .map(str::to_owned),
    );
    args
}

/// The AccessKey pair the emulator accepts, as the provider reads it.
pub fn good_env() -> Vec<(&'static str, String)> {
    eci_emulator::provider_env()
}

/// Starts the provider binary against `emu` with `env` (credentials); returns it, its grpcurl
/// target and its address.
pub async fn start_provider_with(
    emu: &EciEmulator,
    env: &[(&str, String)],
    dir: &Path,
) -> anyhow::Result<(ManagedProcess, Target, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let target = Target::Tcp(addr.clone());
    let p = provider_checks::start_provider(
        Path::new(BIN),
        &provider_args(emu, &addr),
        env,
        &target,
        dir,
    )
    .await?;
    Ok((p, target, addr))
}

/// Starts the provider with the emulator's AccessKey pair.
pub async fn start_provider(
    emu: &EciEmulator,
    dir: &Path,
) -> anyhow::Result<(ManagedProcess, Target, String)> {
    start_provider_with(emu, &good_env(), dir).await
}

/// Starts the emulator with `opts`, then the provider against it (as [`start_provider`]), both
/// logging into `dir`.
pub async fn start_with_emulator(
    dir: &Path,
    opts: EciEmulatorOptions,
) -> anyhow::Result<(EciEmulator, ManagedProcess, Target, String)> {
    let emu = opts.start(dir).await?;
    let (provider, target, addr) = start_provider(&emu, dir).await?;
    Ok((emu, provider, target, addr))
}

/// A small pod.
pub fn pod(name: &str, uid: &str) -> Pod {
    provider_checks::small_pod(NODE, name, uid)
}

/// One call to the emulator's unsigned admin API (knobs and fault states the testkit client
/// does not wrap); returns the HTTP status and body.
pub async fn emulator_admin(
    emu: &EciEmulator,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", emu.port)).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .context("admin call timed out")??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("malformed answer")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, body.to_owned()))
}

/// Sets the emulator's run-time knobs (`PUT /_emulator/knobs`).
pub async fn set_knobs(emu: &EciEmulator, knobs: serde_json::Value) -> anyhow::Result<()> {
    let (s, body) = emulator_admin(emu, "PUT", "/_emulator/knobs", &knobs.to_string()).await?;
    anyhow::ensure!(s == 204, "knobs: {s} {body}");
    Ok(())
}

/// Puts a group in one of ECI's states (fault knob), with a reason and message if not empty.
pub async fn set_group_state(
    emu: &EciEmulator,
    group: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({"status": status, "reason": reason, "message": message});
    let (s, b) = emulator_admin(
        emu,
        "POST",
        &format!("/_emulator/groups/{group}/state"),
        &body.to_string(),
    )
    .await?;
    anyhow::ensure!(s == 204, "state {status}: {s} {b}");
    Ok(())
}
