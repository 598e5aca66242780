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

    /// Validates and translates a pod; `Err` is the reason it cannot run here (`INVALID_ARGUMENT`).
    fn plan(&self, pod: &Pod) -> Result<Self::Plan, String>;

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

/// The first message of an Exec stream, which must be `start`.
async fn exec_start(input: &mut Streaming<ExecRequest>) -> Result<ExecStart, Status> {
    match input.message().await? {
        Some(ExecRequest {
            request: Some(exec_request::Request::Start(s)),
        }) => Ok(s),
        _ => Err(Status::invalid_argument(
            "the first Exec message must be start",
        )),
    }
}

/// The first message of an Attach stream, which must be `start`.
async fn attach_start(input: &mut Streaming<AttachRequest>) -> Result<AttachStart, Status> {
    match input.message().await? {
        Some(AttachRequest {
            request: Some(attach_request::Request::Start(s)),
        }) => Ok(s),
        _ => Err(Status::invalid_argument(
            "the first Attach message must be start",
        )),
    }
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
        let plan = self.cloud.plan(&pod).map_err(Status::invalid_argument)?;
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
        let plan = self.cloud.plan(&pod).map_err(Status::invalid_argument)?;
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
        let start = exec_start(&mut input).await?;
        let pod_ref = rpc::pod_ref(start.pod_ref.as_ref())?;
        Ok(Response::new(self.cloud.exec(pod_ref, start, input).await?))
    }

    async fn attach(
        &self,
        req: Request<Streaming<AttachRequest>>,
    ) -> Result<Response<BoxStream<StreamOutput>>, Status> {
        self.refuse(Streamed::Attach)?;
        let mut input = req.into_inner();
        let start = attach_start(&mut input).await?;
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
