//! Shared set-up for the provider-eci tests: the ECI emulator and the provider binary against it.
#![allow(dead_code)] // each test file uses a part

use std::{path::Path, time::Duration};

use podprovider_proto::v1::{Container, Pod, PodRef, ResourceRequirements, Resources};
use vk_testkit::{
    eci_emulator::{self, EciEmulator},
    grpcurl::Target,
    ports::free_port,
    process::ManagedProcess,
    provider_checks,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_provider-eci");
pub const NODE: &str = "vk-eci";
pub const SVC: &str = "podprovider.v1.PodProvider";
/// Generous deadline for emulator-backed conditions.
pub const WAIT: Duration = Duration::from_secs(60);

/// The provider's flags for the emulator.
pub fn provider_args(emu: &EciEmulator, listen: &str) -> Vec<String> {
    [
        "--listen",
        listen,
        "--region",
        eci_emulator::REGION,
        "--endpoint",
        &emu.endpoint,
        "--vswitch-id",
        eci_emulator::VSWITCH_ID,
        "--security-group-id",
        eci_emulator::SECURITY_GROUP_ID,
        "--zone-id",
        eci_emulator::ZONE_ID,
        "--status-interval-seconds",
        "0.5",
        "--full-sync-seconds",
        "3",
        "--log-filter",
        "info,provider_eci=debug,provider_common=debug",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The AccessKey pair the emulator accepts, as the provider reads it.
pub fn good_env() -> Vec<(&'static str, String)> {
    vec![
        (
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            eci_emulator::ACCESS_KEY_ID.to_owned(),
        ),
        (
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            eci_emulator::ACCESS_KEY_SECRET.to_owned(),
        ),
    ]
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

/// A small pod.
pub fn pod(name: &str, uid: &str) -> Pod {
    Pod {
        pod_ref: Some(PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
        }),
        node_name: NODE.into(),
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
