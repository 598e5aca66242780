//! Shared set-up for the provider-aci tests: the ACI emulator and the provider binary against it.
#![allow(dead_code)] // each test file uses a part

use std::{path::Path, time::Duration};

use podprovider_proto::v1::Pod;
use vk_testkit::{
    aci_emulator::{self, AciEmulator, AciEmulatorOptions},
    grpcurl::Target,
    ports::free_port,
    process::ManagedProcess,
    provider_checks,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_provider-aci");
pub const NODE: &str = "vk-aci";

/// The provider's flags for `emu` (client-secret auth; the secret goes in the environment).
pub fn provider_args(emu: &AciEmulator, listen: &str) -> Vec<String> {
    let mut args = vec!["--listen".to_owned(), listen.to_owned()];
    args.extend(aci_emulator::provider_flags(&emu.endpoint, &emu.endpoint));
    args.extend(
        [
            "--status-interval-seconds",
            "0.5",
            "--instance-view-refresh-seconds",
            "2",
            "--log-filter",
            "info,provider_aci=debug,provider_common=debug",
        ]
        .map(str::to_owned),
    );
    args
}

/// The environment of the provider: the client secret (never a flag).
pub fn provider_env() -> Vec<(&'static str, String)> {
    aci_emulator::provider_env()
}

/// Starts the provider binary against `emu` with `extra` flags (`--flag`, `value` pairs replace
/// the defaults of [`provider_args`]).
pub async fn start_provider(
    emu: &AciEmulator,
    dir: &Path,
    extra: &[&str],
) -> anyhow::Result<(ManagedProcess, Target, String)> {
    start_provider_with_env(emu, dir, extra, &provider_env()).await
}

/// Starts the emulator with `opts`, then the provider against it with `extra` flags (as
/// [`start_provider`]), both logging into `dir`.
pub async fn start_with_emulator(
    dir: &Path,
    opts: AciEmulatorOptions,
    extra: &[&str],
) -> anyhow::Result<(AciEmulator, ManagedProcess, Target, String)> {
    let emu = opts.start(dir).await?;
    let (provider, target, addr) = start_provider(&emu, dir, extra).await?;
    Ok((emu, provider, target, addr))
}

/// [`start_provider`] with `env` instead of [`provider_env`] (e.g. none, for the other credentials).
pub async fn start_provider_with_env(
    emu: &AciEmulator,
    dir: &Path,
    extra: &[&str],
    env: &[(&'static str, String)],
) -> anyhow::Result<(ManagedProcess, Target, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let target = Target::Tcp(addr.clone());
    let mut args = provider_args(emu, &addr);
    for flag in extra.iter().filter(|a| a.starts_with("--")) {
        if let Some(i) = args.iter().position(|a| a == flag) {
            args.drain(i..(i + 2).min(args.len()));
        }
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let p = provider_checks::start_provider(Path::new(BIN), &args, env, &target, dir).await?;
    Ok((p, target, addr))
}

/// A small pod.
pub fn pod(name: &str, uid: &str) -> Pod {
    provider_checks::small_pod(NODE, name, uid)
}

/// Generous deadline for emulator-backed conditions.
pub const WAIT: Duration = Duration::from_secs(60);

/// `PUT` of a JSON body to the emulator's admin API (knobs the testkit launcher has no method
/// for); returns the status code.
pub async fn admin_put(
    emu: &AciEmulator,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<u16> {
    admin_request(emu, "PUT", path, body).await
}

/// A request with a JSON body to the emulator's admin API; returns the status code.
pub async fn admin_request(
    emu: &AciEmulator,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", emu.port)).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in the admin answer: {answer}"))
}
