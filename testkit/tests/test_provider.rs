//! The steerable test provider behaves as the contract says, over a real unix socket.

use std::time::Duration;

use podprovider_proto::{
    PodProviderClient,
    v1::{
        Container, CreatePodRequest, DeletePodRequest, ListPodsRequest, Pod, PodPhase, PodRef,
        WatchPodsRequest, watch_pods_event::Event,
    },
};
use provider_common::ListenAddr;
use tokio_stream::StreamExt;
use tonic::{Code, transport::Endpoint};
use vk_testkit::test_provider::{Control, rpc};

fn pod(uid: &str) -> Pod {
    Pod {
        pod_ref: Some(PodRef {
            namespace: "default".into(),
            name: format!("p-{uid}"),
            uid: uid.into(),
        }),
        node_name: "vk".into(),
        containers: vec![Container {
            name: "c".into(),
            image: "nginx".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn client(
    path: std::path::PathBuf,
) -> anyhow::Result<PodProviderClient<tonic::transport::Channel>> {
    let channel = Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await?;
    Ok(PodProviderClient::new(channel))
}

#[tokio::test]
async fn create_watch_fail_lose_and_delete() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("p.sock");
    let control = Control::new();
    control.set_start_delay(Duration::from_millis(200));
    let server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let mut client = client(socket).await?;

    let mut watch = client
        .watch_pods(WatchPodsRequest {
            node_name: "vk".into(),
        })
        .await?
        .into_inner();
    let first = watch.next().await.transpose()?.and_then(|e| e.event);
    assert!(
        matches!(first, Some(Event::Synced(_))),
        "empty snapshot then synced: {first:?}"
    );

    // Create is idempotent on UID.
    let created = client
        .create_pod(CreatePodRequest {
            pod: Some(pod("u1")),
        })
        .await?
        .into_inner();
    let again = client
        .create_pod(CreatePodRequest {
            pod: Some(pod("u1")),
        })
        .await?
        .into_inner();
    assert_eq!(
        created.status.as_ref().map(|s| &s.pod_ip),
        again.status.as_ref().map(|s| &s.pod_ip)
    );
    assert_eq!(control.pods().len(), 1);
    assert_eq!(control.calls(rpc::CREATE), 2);

    // Pending, then Running after the start delay, on the stream.
    let mut phases = Vec::new();
    while phases.last() != Some(&PodPhase::Running) {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next()).await?;
        if let Some(Event::Status(s)) = event.transpose()?.and_then(|e| e.event) {
            phases.push(s.phase());
        }
    }
    assert_eq!(phases, [PodPhase::Pending, PodPhase::Running]);

    // Steered failures.
    control.fail_creates(Some("no capacity for you"));
    let err = client
        .create_pod(CreatePodRequest {
            pod: Some(pod("u2")),
        })
        .await
        .expect_err("fails");
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "no capacity for you")
    );
    control.fail_creates(None);
    control.fail_next_calls(1);
    let err = client
        .list_pods(ListPodsRequest {
            node_name: "vk".into(),
        })
        .await
        .expect_err("fails");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        client
            .list_pods(ListPodsRequest {
                node_name: "vk".into()
            })
            .await?
            .into_inner()
            .pods
            .len(),
        1
    );

    // A lost pod is reported deleted.
    assert!(control.lose_pod("u1"));
    let deleted = loop {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next()).await?;
        if let Some(Event::Deleted(r)) = event.transpose()?.and_then(|e| e.event) {
            break r;
        }
    };
    assert_eq!(deleted.uid, "u1");

    // Delete of an unknown pod succeeds with found = false.
    let gone = client
        .delete_pod(DeletePodRequest {
            pod_ref: pod("u1").pod_ref,
            grace_period_seconds: Some(0),
        })
        .await?
        .into_inner();
    assert!(!gone.found);
    server.stop().await
}
