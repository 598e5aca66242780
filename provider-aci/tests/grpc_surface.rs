//! provider-aci serves the PodProvider contract, health and reflection as a user sees them through
//! grpcurl, on TCP and unix sockets, and stops cleanly on SIGTERM.

use std::path::Path;

use vk_testkit::{grpcurl::Target, ports::free_port, provider_checks};

#[tokio::test]
async fn grpc_surface_health_reflection_and_shutdown() -> anyhow::Result<()> {
    provider_checks::check_provider_binary(Path::new(env!("CARGO_BIN_EXE_provider-aci"))).await
}

#[tokio::test]
async fn rpcs_not_offered_yet_answer_unimplemented() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let target = Target::Tcp(addr.clone());
    let bin = Path::new(env!("CARGO_BIN_EXE_provider-aci"));
    let _provider =
        provider_checks::start_provider(bin, &["--listen".into(), addr], &[], &target, dir.path())
            .await?;
    for method in ["CreatePod", "DeletePod", "ListPods", "GetStats"] {
        let method = format!("podprovider.v1.PodProvider/{method}");
        provider_checks::expect_unimplemented(&target, &method, "{}").await?;
    }
    Ok(())
}
