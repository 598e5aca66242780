//! The parts of a `PodProvider` implementation that no cloud changes: checking a request's pod
//! reference, and the RPCs answered from the [`StatusHub`] alone (`GetPod`, `ListPods`,
//! `WatchPods`), so each provider's trait impl delegates them in one line.

use std::pin::Pin;

use futures::Stream;
use podprovider_proto::v1::{
    GetPodRequest, GetPodResponse, ListPodsRequest, ListPodsResponse, PingResponse, PodRef,
    WatchPodsRequest,
};
use tonic::{Request, Response, Status};

use crate::status_loop::{PollHealth, StatusHub, WatchStream};

/// A server-streaming RPC's response stream, as tonic serves it.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The request's pod reference; `INVALID_ARGUMENT` unless it names namespace, name and UID
/// (the UID is the pod's identity in the contract).
pub fn pod_ref(r: Option<&PodRef>) -> Result<PodRef, Status> {
    match r {
        Some(r) if !r.namespace.is_empty() && !r.name.is_empty() && !r.uid.is_empty() => {
            Ok(r.clone())
        }
        _ => Err(Status::invalid_argument(
            "pod_ref needs namespace, name and uid",
        )),
    }
}

/// `NOT_FOUND` for a pod the provider does not know.
pub fn not_known(r: &PodRef) -> Status {
    Status::not_found(format!("pod {}/{} is not known", r.namespace, r.name))
}

/// `GetPod` from the hub.
pub fn get_pod(
    hub: &StatusHub,
    req: &Request<GetPodRequest>,
) -> Result<Response<GetPodResponse>, Status> {
    let pod_ref = pod_ref(req.get_ref().pod_ref.as_ref())?;
    let status = hub.get(&pod_ref.uid).ok_or_else(|| not_known(&pod_ref))?;
    Ok(Response::new(GetPodResponse {
        status: Some(status),
    }))
}

/// `ListPods` from the hub: every known pod of the requested node.
pub fn list_pods(hub: &StatusHub, req: &Request<ListPodsRequest>) -> Response<ListPodsResponse> {
    Response::new(ListPodsResponse {
        pods: hub.list(&req.get_ref().node_name),
    })
}

/// `WatchPods` from the hub: snapshot, `synced`, then changes.
pub fn watch_pods(hub: &StatusHub, req: &Request<WatchPodsRequest>) -> Response<WatchStream> {
    Response::new(hub.watch(&req.get_ref().node_name))
}

/// `Ping` from the status poll's health: Ready unless the last poll of `cloud` (e.g. "ECS")
/// failed, with reason `CloudAPIUnreachable` and the (secret-free) failure as message.
pub fn ping(hub: &StatusHub, cloud: &str, node_info_revision: &str) -> Response<PingResponse> {
    let (ready, reason, message) = match hub.health() {
        PollHealth::Ok | PollHealth::Starting => (true, String::new(), String::new()),
        PollHealth::Failed(msg) => (
            false,
            "CloudAPIUnreachable".to_owned(),
            format!("The last {cloud} status poll failed: {msg}"),
        ),
    };
    Response::new(PingResponse {
        ready,
        reason,
        message,
        node_info_revision: node_info_revision.to_owned(),
    })
}

/// Now, as a protobuf timestamp (for pod events).
pub fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(0),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_ref_needs_namespace_name_and_uid() {
        let full = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        };
        assert_eq!(pod_ref(Some(&full)).ok(), Some(full.clone()));
        for broken in [
            PodRef {
                uid: String::new(),
                ..full.clone()
            },
            PodRef {
                name: String::new(),
                ..full.clone()
            },
        ] {
            let err = pod_ref(Some(&broken)).err().map(|s| s.code());
            assert_eq!(err, Some(tonic::Code::InvalidArgument));
        }
        assert!(pod_ref(None).is_err());
    }

    #[test]
    fn ping_follows_the_last_poll() {
        let hub = StatusHub::new();
        assert!(ping(&hub, "ECS", "1").get_ref().ready);
        hub.set_health(PollHealth::Failed("connection refused".into()));
        let answer = ping(&hub, "ECS", "1").into_inner();
        assert!(!answer.ready);
        assert_eq!(answer.reason, "CloudAPIUnreachable");
        assert_eq!(
            answer.message,
            "The last ECS status poll failed: connection refused"
        );
    }

    #[test]
    fn get_pod_of_an_unknown_pod_is_not_found() {
        let hub = StatusHub::new();
        let req = Request::new(GetPodRequest {
            pod_ref: Some(PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
            }),
        });
        let err = get_pod(&hub, &req).err().map(|s| s.code());
        assert_eq!(err, Some(tonic::Code::NotFound));
    }
}
