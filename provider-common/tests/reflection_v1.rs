//! Reflection v1 (what grpcurl ≥1.8.7 and most tools speak) describes the contract; grpcurl 1.8.6's
//! v1alpha is covered by each provider's grpcurl test.

use std::time::Duration;

use provider_common::ListenAddr;
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[derive(Default)]
struct NothingProvider;

#[tonic::async_trait]
impl podprovider_proto::PodProvider for NothingProvider {}

#[tokio::test]
async fn reflection_v1_lists_and_describes_the_contract() -> Result<(), Box<dyn std::error::Error>>
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        provider_common::serve(NothingProvider, &ListenAddr::Tcp(addr), None, async {
            let _ = stopped.await;
        })
        .await
    });

    let mut client = None;
    for _ in 0..50 {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
        match endpoint.connect().await {
            Ok(channel) => {
                client = Some(ServerReflectionClient::new(channel));
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut client = client.ok_or("server did not start")?;

    let requests = tokio_stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "podprovider.v1.PodProvider".into(),
            )),
        },
    ]);
    let mut responses = client.server_reflection_info(requests).await?.into_inner();

    let listed = responses.next().await.ok_or("no list response")??;
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        return Err("first answer is not a service list".into());
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"podprovider.v1.PodProvider"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let file = responses.next().await.ok_or("no file response")??;
    let Some(MessageResponse::FileDescriptorResponse(fd)) = file.message_response else {
        return Err("second answer is not a file descriptor".into());
    };
    assert!(!fd.file_descriptor_proto.is_empty());

    let _ = stop.send(());
    server.await??;
    Ok(())
}
