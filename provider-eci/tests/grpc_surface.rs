//! provider-eci serves the PodProvider contract, health and reflection as a user sees them through
//! grpcurl, on TCP and unix sockets, and stops cleanly on SIGTERM.

use std::path::Path;

use vk_testkit::provider_checks;

const BIN: &str = env!("CARGO_BIN_EXE_provider-eci");

#[tokio::test]
async fn grpc_surface_health_reflection_and_shutdown() -> anyhow::Result<()> {
    provider_checks::check_provider_binary(Path::new(BIN)).await
}

#[tokio::test]
async fn rpcs_not_offered_yet_answer_unimplemented() -> anyhow::Result<()> {
    let rpcs = ["CreatePod", "DeletePod", "ListPods", "GetStats"];
    provider_checks::check_unimplemented_rpcs(Path::new(BIN), &rpcs).await
}
