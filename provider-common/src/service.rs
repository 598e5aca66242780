//! The one `PodProvider` implementation, generic over a [`Cloud`].
//!
//! Everything the contract decides the same way for every cloud lives here: pod-reference checks
//! (`INVALID_ARGUMENT` with the reason), a plan refused as `INVALID_ARGUMENT`, one create or
//! delete per UID at a time ([`UidLocks`]), `GetPod`/`ListPods`/`WatchPods`/`Ping` from the
//! [`StatusHub`], a plan's warnings told as pod events after a create, and `UNIMPLEMENTED` for
//! what a cloud does not offer. A provider crate implements [`Cloud`] with its cloud's decisions
//! only, and [`crate::run`] serves it as a [`PodService`].

use podprovider_proto::{
    PodProvider,
    v1::{
        AttachRequest, AttachStart, CreatePodRequest, CreatePodResponse, DeletePodRequest,
        DeletePodResponse, ExecRequest, ExecStart, GetContainerLogsRequest, GetNodeInfoRequest,
        GetPodRequest, GetPodResponse, GetStatsRequest, GetStatsResponse, ListPodsRequest,
        ListPodsResponse, LogChunk, NodeInfo, PingRequest, PingResponse, Pod, PodEvent, PodRef,
        PodStats, PodStatus, PortForwardRequest, PortForwardResponse, StreamOutput,
        UpdatePodRequest, UpdatePodResponse, WatchPodsEvent, WatchPodsRequest, attach_request,
        exec_request,
    },
};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    rpc::{self, BoxStream},
    status_loop::StatusHub,
    uid_lock::UidLocks,
};

/// A streaming RPC a cloud may not offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streamed {
    /// `Exec`.
    Exec,
    /// `Attach`.
    Attach,
    /// `PortForward`.
    PortForward,
}

/// A warning about a created pod, told as a Warning pod event (e.g. a setting the cloud ignores).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The event's reason, e.g. `ProviderIgnoredSetting`.
    pub reason: &'static str,
    /// What the user reads.
    pub message: String,
}

impl Notice {
    /// A setting the cloud ignores, one per warning of a plan.
    pub fn ignored(warnings: &[String]) -> Vec<Notice> {
        let reason = "ProviderIgnoredSetting";
        warnings
            .iter()
            .map(|w| Notice {
                reason,
                message: w.clone(),
            })
            .collect()
    }
}

/// A pod that cannot run on this cloud; the message is for users (`INVALID_ARGUMENT`) and holds
/// no secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A node's capacity in the resources every provider reports (Kubernetes quantities, from its
/// `--capacity-*` flags), with `ephemeral-storage` where the cloud gives pods disk of their own;
/// a provider adds its cloud's own resources (GPUs).
pub fn capacity(
    cpu: &str,
    memory: &str,
    pods: &str,
    ephemeral_storage: Option<&str>,
) -> std::collections::HashMap<String, String> {
    let mut capacity = std::collections::HashMap::from([
        ("cpu".to_owned(), cpu.to_owned()),
        ("memory".to_owned(), memory.to_owned()),
        ("pods".to_owned(), pods.to_owned()),
    ]);
    if let Some(storage) = ephemeral_storage {
        capacity.insert("ephemeral-storage".to_owned(), storage.to_owned());
    }
    capacity
}

/// What every provider answers in `GetNodeInfo` besides what its cloud decides: `provider` and
/// its `version`, the node's `capacity` (allocatable is left to the shim), the cloud as
/// `os_image` and `runtime`, revision 1; no labels, taints, conditions or kernel.
pub fn node_info(
    provider: &str,
    version: &str,
    capacity: &std::collections::HashMap<String, String>,
    os_image: &str,
    runtime: String,
) -> NodeInfo {
    NodeInfo {
        provider_name: provider.into(),
        provider_version: version.into(),
        capacity: capacity.clone(),
        system_info: Some(podprovider_proto::v1::NodeSystemInfo {
            os_image: os_image.into(),
            container_runtime_version: runtime,
            ..Default::default()
        }),
        revision: "1".into(),
        ..Default::default()
    }
}

/// What one cloud decides; [`PodService`] does the rest of the contract.
///
/// Create and delete are called with the pod's UID held, so a cloud never sees two of them for
/// one pod at once. Every method answers a gRPC [`Status`] on failure: the cloud's own error
/// classification (`cloud_error::Kind::to_status`) is the provider's to apply.
#[tonic::async_trait]
pub trait Cloud: Send + Sync + 'static {
    /// The cloud's API in Ping's message when a status poll failed ("ECS", "ACI", "ECI").
    const API: &'static str;

    /// A pod translated for the cloud, every rule of the cloud checked.
    type Plan: Send + Sync + 'static;

    /// The statuses of the pods this cloud runs, fed by its poll loop.
    fn hub(&self) -> &StatusHub;

    /// `GetNodeInfo`: capacity, labels, taints, system info.
    fn node_info(&self) -> NodeInfo;

    /// Validates and translates a pod; `Err` is why it cannot run here (`INVALID_ARGUMENT`).
    fn plan(&self, pod: &Pod) -> Result<Self::Plan, Invalid>;

    /// The warnings a create of this plan tells as pod events once it succeeded.
    fn notices(&self, plan: &Self::Plan) -> Vec<Notice>;

    /// For a pod already known (a retried create): the status to answer when the hub has none
    /// yet. `None` when the pod is new. Called with the UID held, before [`Cloud::create`].
    fn known(
        &self,
        pod_ref: &PodRef,
        pod: &Pod,
        plan: &Self::Plan,
    ) -> Result<Option<PodStatus>, Status>;

    /// Creates the pod (idempotently) and records it in the hub; answers its first status.
    async fn create(
        &self,
        pod_ref: &PodRef,
        pod: &Pod,
        plan: Self::Plan,
    ) -> Result<PodStatus, Status>;

    /// `UpdatePod`: `Ok` when the running pod already matches the plan (the hub's status is
    /// answered), else why not (`UNIMPLEMENTED` for what the cloud cannot change in place).
    async fn update(&self, pod_ref: &PodRef, plan: Self::Plan) -> Result<(), Status>;

    /// Deletes the pod (idempotently); whether it existed.
    async fn delete(
        &self,
        pod_ref: &PodRef,
        grace_period_seconds: Option<i64>,
    ) -> Result<bool, Status>;

    /// `GetContainerLogs` of a checked pod reference.
    async fn logs(
        &self,
        pod_ref: PodRef,
        req: GetContainerLogsRequest,
    ) -> Result<BoxStream<LogChunk>, Status>;

    /// Why a streaming RPC is not offered (answered `UNIMPLEMENTED` before its stream is read),
    /// or `None` when it is.
    fn unsupported(&self, rpc: Streamed) -> Option<String> {
        match rpc {
            Streamed::Exec | Streamed::Attach => None,
            Streamed::PortForward => Some("port-forward is not offered by this provider".into()),
        }
    }

    /// `Exec` after its `start` message, with a checked pod reference.
    async fn exec(
        &self,
        _pod_ref: PodRef,
        _start: ExecStart,
        _input: Streaming<ExecRequest>,
    ) -> Result<BoxStream<StreamOutput>, Status> {
        Err(Status::unimplemented(
            "exec is not offered by this provider",
        ))
    }

    /// `Attach` after its `start` message, with a checked pod reference.
    async fn attach(
        &self,
        _pod_ref: PodRef,
        _start: AttachStart,
        _input: Streaming<AttachRequest>,
    ) -> Result<BoxStream<StreamOutput>, Status> {
        Err(Status::unimplemented(
            "attach is not offered by this provider",
        ))
    }

    /// `GetStats`: figures of the running pods asked for.
    async fn stats(&self, _req: GetStatsRequest) -> Result<Vec<PodStats>, Status> {
        Err(Status::unimplemented(
            "stats are not offered by this provider",
        ))
    }
}

/// The `PodProvider` gRPC service of a [`Cloud`].
pub struct PodService<C> {
    cloud: C,
    uid_locks: UidLocks,
}

impl<C: Cloud> PodService<C> {
    /// Serves `cloud`.
    pub fn new(cloud: C) -> Self {
        Self {
            cloud,
            uid_locks: UidLocks::default(),
        }
    }

    /// The cloud served.
    pub fn cloud(&self) -> &C {
        &self.cloud
    }

    fn refuse(&self, rpc: Streamed) -> Result<(), Status> {
        self.cloud
            .unsupported(rpc)
            .map_or(Ok(()), |why| Err(Status::unimplemented(why)))
    }
}

/// The pod of a CreatePod or UpdatePod request, its reference checked.
fn pod_of(pod: Option<Pod>, rpc: &str) -> Result<(Pod, PodRef), Status> {
    let pod = pod.ok_or_else(|| Status::invalid_argument(format!("{rpc} needs a pod")))?;
    let pod_ref = rpc::pod_ref(pod.pod_ref.as_ref())?;
    Ok((pod, pod_ref))
}

/// The first message of an Exec or Attach stream, which must be `start` (`start_of` finds it).
async fn first_start<M, S>(
    input: &mut Streaming<M>,
    start_of: impl FnOnce(M) -> Option<S>,
    rpc: &str,
) -> Result<S, Status>
where
    M: Send + 'static,
{
    input
        .message()
        .await?
        .and_then(start_of)
        .ok_or_else(|| Status::invalid_argument(format!("the first {rpc} message must be start")))
}

#[tonic::async_trait]
impl<C: Cloud> PodProvider for PodService<C> {
    async fn get_node_info(
        &self,
        _req: Request<GetNodeInfoRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        Ok(Response::new(self.cloud.node_info()))
    }

    async fn ping(&self, _req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(rpc::ping(self.cloud.hub(), C::API, "1"))
    }

    async fn create_pod(
        &self,
        req: Request<CreatePodRequest>,
    ) -> Result<Response<CreatePodResponse>, Status> {
        let (pod, pod_ref) = pod_of(req.into_inner().pod, "CreatePod")?;
        let plan = self
            .cloud
            .plan(&pod)
            .map_err(|e| Status::invalid_argument(e.0))?;
        let notices = self.cloud.notices(&plan);
        let uid = pod_ref.uid.clone();
        // A retry while the first create runs waits for its outcome, then finds the pod.
        let held = self.uid_locks.acquire(&uid).await;
        if let Some(accepted) = self.cloud.known(&pod_ref, &pod, &plan)? {
            let status = self.cloud.hub().get(&uid).unwrap_or(accepted);
            return Ok(Response::new(CreatePodResponse {
                status: Some(status),
            }));
        }
        let status = self.cloud.create(&pod_ref, &pod, plan).await;
        drop(held);
        let status = status?;
        for n in notices {
            self.cloud.hub().event(
                &pod.node_name,
                PodEvent {
                    pod_ref: Some(pod_ref.clone()),
                    warning: true,
                    reason: n.reason.into(),
                    message: n.message,
                    time: Some(rpc::now()),
                },
            );
        }
        Ok(Response::new(CreatePodResponse {
            status: Some(status),
        }))
    }

    async fn update_pod(
        &self,
        req: Request<UpdatePodRequest>,
    ) -> Result<Response<UpdatePodResponse>, Status> {
        let (pod, pod_ref) = pod_of(req.into_inner().pod, "UpdatePod")?;
        let plan = self
            .cloud
            .plan(&pod)
            .map_err(|e| Status::invalid_argument(e.0))?;
        self.cloud.update(&pod_ref, plan).await?;
        Ok(Response::new(UpdatePodResponse {
            status: self.cloud.hub().get(&pod_ref.uid),
        }))
    }

    async fn delete_pod(
        &self,
        req: Request<DeletePodRequest>,
    ) -> Result<Response<DeletePodResponse>, Status> {
        let req = req.into_inner();
        let pod_ref = rpc::pod_ref(req.pod_ref.as_ref())?;
        // A create still under way (the shim gave up waiting for it) would otherwise finish
        // after this delete and leave a cloud resource behind: wait for its outcome first.
        let _held = self.uid_locks.acquire(&pod_ref.uid).await;
        let found = self
            .cloud
            .delete(&pod_ref, req.grace_period_seconds)
            .await?;
        Ok(Response::new(DeletePodResponse { found }))
    }

    async fn get_pod(
        &self,
        req: Request<GetPodRequest>,
    ) -> Result<Response<GetPodResponse>, Status> {
        rpc::get_pod(self.cloud.hub(), &req)
    }

    async fn list_pods(
        &self,
        req: Request<ListPodsRequest>,
    ) -> Result<Response<ListPodsResponse>, Status> {
        Ok(rpc::list_pods(self.cloud.hub(), &req))
    }

    async fn watch_pods(
        &self,
        req: Request<WatchPodsRequest>,
    ) -> Result<Response<BoxStream<WatchPodsEvent>>, Status> {
        Ok(rpc::watch_pods(self.cloud.hub(), &req))
    }

    async fn get_container_logs(
        &self,
        req: Request<GetContainerLogsRequest>,
    ) -> Result<Response<BoxStream<LogChunk>>, Status> {
        let req = req.into_inner();
        let pod_ref = rpc::pod_ref(req.pod_ref.as_ref())?;
        Ok(Response::new(self.cloud.logs(pod_ref, req).await?))
    }

    async fn exec(
        &self,
        req: Request<Streaming<ExecRequest>>,
    ) -> Result<Response<BoxStream<StreamOutput>>, Status> {
        self.refuse(Streamed::Exec)?;
        let mut input = req.into_inner();
        let start = first_start(
            &mut input,
            |m: ExecRequest| match m.request {
                Some(exec_request::Request::Start(s)) => Some(s),
                _ => None,
            },
            "Exec",
        )
        .await?;
        let pod_ref = rpc::pod_ref(start.pod_ref.as_ref())?;
        Ok(Response::new(self.cloud.exec(pod_ref, start, input).await?))
    }

    async fn attach(
        &self,
        req: Request<Streaming<AttachRequest>>,
    ) -> Result<Response<BoxStream<StreamOutput>>, Status> {
        self.refuse(Streamed::Attach)?;
        let mut input = req.into_inner();
        let start = first_start(
            &mut input,
            |m: AttachRequest| match m.request {
                Some(attach_request::Request::Start(s)) => Some(s),
                _ => None,
            },
            "Attach",
        )
        .await?;
        let pod_ref = rpc::pod_ref(start.pod_ref.as_ref())?;
        Ok(Response::new(
            self.cloud.attach(pod_ref, start, input).await?,
        ))
    }

    async fn port_forward(
        &self,
        _req: Request<Streaming<PortForwardRequest>>,
    ) -> Result<Response<BoxStream<PortForwardResponse>>, Status> {
        self.refuse(Streamed::PortForward)?;
        Err(Status::unimplemented(
            "port-forward is not offered by this provider",
        ))
    }

    async fn get_stats(
        &self,
        req: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        let pods = self.cloud.stats(req.into_inner()).await?;
        Ok(Response::new(GetStatsResponse { pods }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use futures::StreamExt;
    use podprovider_proto::v1::{PodPhase, watch_pods_event::Event};

    use super::*;

    /// A cloud that refuses pods named `bad`, warns about every pod, and counts creates.
    struct Fake {
        hub: Arc<StatusHub>,
        creates: AtomicUsize,
    }

    #[tonic::async_trait]
    impl Cloud for Fake {
        const API: &'static str = "Fake";
        type Plan = String;

        fn hub(&self) -> &StatusHub {
            &self.hub
        }
        fn node_info(&self) -> NodeInfo {
            NodeInfo::default()
        }
        fn plan(&self, pod: &Pod) -> Result<String, Invalid> {
            let name = pod.pod_ref.as_ref().map_or("", |r| r.name.as_str());
            if name == "bad" {
                Err(Invalid("bad pods cannot run here".into()))
            } else {
                Ok(name.to_owned())
            }
        }
        fn notices(&self, plan: &String) -> Vec<Notice> {
            Notice::ignored(&[format!("{plan}: a setting was ignored")])
        }
        fn known(
            &self,
            pod_ref: &PodRef,
            _: &Pod,
            _: &String,
        ) -> Result<Option<PodStatus>, Status> {
            Ok(self.hub.get(&pod_ref.uid))
        }
        async fn create(
            &self,
            pod_ref: &PodRef,
            pod: &Pod,
            _: String,
        ) -> Result<PodStatus, Status> {
            self.creates.fetch_add(1, Ordering::SeqCst);
            let status = PodStatus {
                pod_ref: Some(pod_ref.clone()),
                phase: PodPhase::Pending as i32,
                ..Default::default()
            };
            self.hub.upsert(&pod.node_name, status.clone());
            Ok(status)
        }
        async fn update(&self, _: &PodRef, _: String) -> Result<(), Status> {
            Ok(())
        }
        async fn delete(&self, pod_ref: &PodRef, _: Option<i64>) -> Result<bool, Status> {
            Ok(self.hub.get(&pod_ref.uid).is_some())
        }
        async fn logs(
            &self,
            _: PodRef,
            _: GetContainerLogsRequest,
        ) -> Result<BoxStream<LogChunk>, Status> {
            Err(Status::not_found("no logs"))
        }
    }

    fn service() -> PodService<Fake> {
        PodService::new(Fake {
            hub: StatusHub::new(),
            creates: AtomicUsize::new(0),
        })
    }

    fn pod(name: &str, uid: &str) -> Pod {
        Pod {
            pod_ref: Some(PodRef {
                namespace: "ns".into(),
                name: name.into(),
                uid: uid.into(),
            }),
            node_name: "vk".into(),
            ..Default::default()
        }
    }

    async fn create(s: &PodService<Fake>, pod: Option<Pod>) -> Result<PodStatus, Status> {
        let answer = s.create_pod(Request::new(CreatePodRequest { pod })).await?;
        Ok(answer.into_inner().status.unwrap_or_default())
    }

    #[tokio::test]
    async fn requests_are_checked_before_the_cloud_sees_them() {
        let s = service();
        let no_pod = create(&s, None).await.err().map(|e| e.message().to_owned());
        assert_eq!(no_pod.as_deref(), Some("CreatePod needs a pod"));
        let no_uid = create(&s, Some(pod("p", ""))).await.err().map(|e| e.code());
        assert_eq!(no_uid, Some(tonic::Code::InvalidArgument));
        let refused = create(&s, Some(pod("bad", "u"))).await.err();
        assert_eq!(
            refused.as_ref().map(Status::code),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            refused.as_ref().map(Status::message),
            Some("bad pods cannot run here")
        );
        assert_eq!(s.cloud().creates.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_create_tells_its_notices_once_and_a_retry_finds_the_pod() {
        let s = service();
        let mut watch = s.cloud().hub().watch("vk");
        create(&s, Some(pod("p", "u"))).await.expect("created");
        create(&s, Some(pod("p", "u"))).await.expect("found");
        assert_eq!(s.cloud().creates.load(Ordering::SeqCst), 1);
        let mut events = Vec::new();
        while let Ok(Some(Ok(e))) =
            tokio::time::timeout(std::time::Duration::from_millis(200), watch.next()).await
        {
            if let Some(Event::PodEvent(e)) = e.event {
                events.push((e.reason, e.message, e.warning));
            }
        }
        assert_eq!(
            events,
            vec![(
                "ProviderIgnoredSetting".to_owned(),
                "p: a setting was ignored".to_owned(),
                true
            )]
        );
    }

    #[tokio::test]
    async fn what_a_cloud_does_not_offer_is_unimplemented() {
        let s = service();
        let stats = s
            .get_stats(Request::new(GetStatsRequest::default()))
            .await
            .err()
            .map(|e| e.code());
        assert_eq!(stats, Some(tonic::Code::Unimplemented));
        assert!(s.refuse(Streamed::PortForward).is_err());
        assert!(s.refuse(Streamed::Exec).is_ok());
        let ping = s.ping(Request::new(PingRequest::default())).await;
        assert!(ping.is_ok_and(|p| p.get_ref().ready));
    }
}
