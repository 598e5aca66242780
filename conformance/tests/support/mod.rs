//! A deliberately broken provider for the kit's own tests: a gRPC proxy in front of testkit's
//! test provider that forwards every call and injects one [`Fault`]. The kit sees it over a real
//! socket, like any provider.
#![allow(dead_code)] // each test file uses a part

use std::{
    collections::HashSet,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt};
use podprovider_proto::{
    PodProvider, PodProviderClient, PodProviderServer,
    v1::{self as pb, PodPhase, watch_pods_event::Event},
};
use provider_common::ListenAddr;
use tonic::{Code, Request, Response, Status, Streaming, transport::Channel};
use vk_testkit::{ports::free_port, test_provider::Control};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What the proxy gets wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: a faithful proxy.
    None,
    /// No grpc.health.v1 service.
    NoHealth,
    /// No reflection service.
    NoReflection,
    /// GetNodeInfo without provider_name.
    BadNodeInfo,
    /// A second CreatePod of a UID answers ALREADY_EXISTS.
    NonIdempotentCreate,
    /// DeletePod of an unknown pod answers NOT_FOUND.
    DeleteUnknownFails,
    /// WatchPods never sends `synced`.
    NoSynced,
    /// WatchPods never sends `deleted`.
    NoDeleted,
    /// After each Running status, WatchPods sends the same status as Pending.
    RegressingStatus,
    /// Forgets every pod when the "restart" flag file appears (an in-memory provider restarted).
    ForgetsOnRestart,
    /// INVALID_ARGUMENT becomes INTERNAL.
    WrongErrorCode,
    /// gRPC's default 4 MiB message limit.
    SmallMessages,
    /// GetContainerLogs ignores tail_lines.
    IgnoresTail,
    /// Exec sends stderr as stdout.
    MergesStderr,
    /// Writes every env value of created pods to its log file.
    LeaksSecrets,
    /// PortForward answers UNIMPLEMENTED with the generated stub's generic message.
    GenericUnimplemented,
    /// CreatePod requests carrying fields it does not know are refused.
    RejectsUnknownFields,
}

/// The test provider behind the broken proxy.
pub struct Broken {
    /// `http://127.0.0.1:PORT` of the proxy.
    pub endpoint: String,
    /// The test provider's steering handle.
    pub control: Control,
    /// The proxy's log file (written by [`Fault::LeaksSecrets`]).
    pub log: PathBuf,
    /// Touching it "restarts" the proxy (see [`Fault::ForgetsOnRestart`]).
    pub restart_flag: PathBuf,
    _dir: tempfile::TempDir,
    _upstream: vk_testkit::test_provider::RunningServer,
    _task: tokio::task::JoinHandle<()>,
}

/// Starts the test provider and, in front of it, a proxy with `fault`.
pub async fn start(fault: Fault) -> Broken {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::new();
    let upstream_port = free_port().unwrap();
    let upstream = control
        .serve(ListenAddr::Tcp(([127, 0, 0, 1], upstream_port).into()))
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://127.0.0.1:{upstream_port}"))
        .unwrap()
        .connect_lazy();
    let log = dir.path().join("provider.log");
    std::fs::write(&log, b"").unwrap();
    let restart_flag = dir.path().join("restart");
    let proxy = Proxy {
        fault,
        upstream: PodProviderClient::new(channel)
            .max_decoding_message_size(podprovider_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(podprovider_proto::MAX_MESSAGE_BYTES),
        log: log.clone(),
        restart_flag: restart_flag.clone(),
        state: Arc::default(),
    };
    let port = free_port().unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let mut service = PodProviderServer::new(proxy);
    if fault != Fault::SmallMessages {
        service = service
            .max_decoding_message_size(podprovider_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(podprovider_proto::MAX_MESSAGE_BYTES);
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<PodProviderServer<Proxy>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(podprovider_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .unwrap();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(podprovider_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .unwrap();
    let mut routes = tonic::service::Routes::new(service);
    if fault != Fault::NoHealth {
        routes = routes.add_service(health);
    }
    if fault != Fault::NoReflection {
        routes = routes
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .layer(StrictLayer(fault == Fault::RejectsUnknownFields))
            .add_routes(routes)
            .serve_with_incoming(incoming)
            .await;
    });
    Broken {
        endpoint: format!("http://127.0.0.1:{port}"),
        control,
        log,
        restart_flag,
        _dir: dir,
        _upstream: upstream,
        _task: task,
    }
}

#[derive(Default)]
struct ProxyState {
    created: HashSet<String>,
    forgotten: HashSet<String>,
}

struct Proxy {
    fault: Fault,
    upstream: PodProviderClient<Channel>,
    log: PathBuf,
    restart_flag: PathBuf,
    state: Arc<Mutex<ProxyState>>,
}

impl Proxy {
    fn client(&self) -> PodProviderClient<Channel> {
        self.upstream.clone()
    }

    fn map_err(&self, s: Status) -> Status {
        if self.fault == Fault::WrongErrorCode && s.code() == Code::InvalidArgument {
            Status::internal(s.message().to_owned())
        } else {
            s
        }
    }

    /// The "restart": the flag file turns every known pod into a forgotten one.
    fn forgotten(&self) -> HashSet<String> {
        let mut state = self.state.lock().unwrap();
        if self.fault == Fault::ForgetsOnRestart && self.restart_flag.exists() {
            let _ = std::fs::remove_file(&self.restart_flag);
            let created: Vec<String> = state.created.drain().collect();
            state.forgotten.extend(created);
        }
        state.forgotten.clone()
    }
}

fn uid(s: &pb::PodStatus) -> String {
    s.pod_ref
        .as_ref()
        .map(|r| r.uid.clone())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl PodProvider for Proxy {
    async fn get_node_info(
        &self,
        request: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        let mut info = self
            .client()
            .get_node_info(request.into_inner())
            .await?
            .into_inner();
        if self.fault == Fault::BadNodeInfo {
            info.provider_name.clear();
        }
        Ok(Response::new(info))
    }

    async fn ping(
        &self,
        request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        self.client().ping(request.into_inner()).await
    }

    async fn create_pod(
        &self,
        request: Request<pb::CreatePodRequest>,
    ) -> Result<Response<pb::CreatePodResponse>, Status> {
        let req = request.into_inner();
        let uid = req
            .pod
            .as_ref()
            .and_then(|p| p.pod_ref.as_ref())
            .map(|r| r.uid.clone())
            .unwrap_or_default();
        if self.fault == Fault::LeaksSecrets {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.log)
                .unwrap();
            for c in req.pod.iter().flat_map(|p| &p.containers) {
                for e in &c.env {
                    writeln!(log, "creating pod {uid}: env {}={}", e.name, e.value).unwrap();
                }
            }
        }
        let known = self.state.lock().unwrap().created.contains(&uid);
        if self.fault == Fault::NonIdempotentCreate && known {
            return Err(Status::already_exists(format!("pod {uid} exists")));
        }
        let answer = self
            .client()
            .create_pod(req)
            .await
            .map_err(|s| self.map_err(s))?;
        self.state.lock().unwrap().created.insert(uid);
        Ok(answer)
    }

    async fn delete_pod(
        &self,
        request: Request<pb::DeletePodRequest>,
    ) -> Result<Response<pb::DeletePodResponse>, Status> {
        let answer = self
            .client()
            .delete_pod(request.into_inner())
            .await
            .map_err(|s| self.map_err(s))?;
        if self.fault == Fault::DeleteUnknownFails && !answer.get_ref().found {
            return Err(Status::not_found("no such pod"));
        }
        Ok(answer)
    }

    async fn get_pod(
        &self,
        request: Request<pb::GetPodRequest>,
    ) -> Result<Response<pb::GetPodResponse>, Status> {
        self.client()
            .get_pod(request.into_inner())
            .await
            .map_err(|s| self.map_err(s))
    }

    async fn list_pods(
        &self,
        request: Request<pb::ListPodsRequest>,
    ) -> Result<Response<pb::ListPodsResponse>, Status> {
        let forgotten = self.forgotten();
        let mut answer = self
            .client()
            .list_pods(request.into_inner())
            .await?
            .into_inner();
        answer.pods.retain(|p| !forgotten.contains(&uid(p)));
        Ok(Response::new(answer))
    }

    async fn watch_pods(
        &self,
        request: Request<pb::WatchPodsRequest>,
    ) -> Result<Response<BoxStream<pb::WatchPodsEvent>>, Status> {
        let forgotten = self.forgotten();
        let upstream = self
            .client()
            .watch_pods(request.into_inner())
            .await?
            .into_inner();
        let fault = self.fault;
        let out = upstream.flat_map(move |item| {
            let events: Vec<Result<pb::WatchPodsEvent, Status>> = match item {
                Err(s) => vec![Err(s)],
                Ok(event) => match &event.event {
                    Some(Event::Synced(_)) if fault == Fault::NoSynced => vec![],
                    Some(Event::Deleted(_)) if fault == Fault::NoDeleted => vec![],
                    Some(Event::Status(s)) if forgotten.contains(&uid(s)) => vec![],
                    Some(Event::Status(s))
                        if fault == Fault::RegressingStatus && s.phase() == PodPhase::Running =>
                    {
                        let mut back = s.clone();
                        back.phase = PodPhase::Pending as i32;
                        let back = pb::WatchPodsEvent {
                            event: Some(Event::Status(back)),
                        };
                        vec![Ok(event), Ok(back)]
                    }
                    _ => vec![Ok(event)],
                },
            };
            futures::stream::iter(events)
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_container_logs(
        &self,
        request: Request<pb::GetContainerLogsRequest>,
    ) -> Result<Response<BoxStream<pb::LogChunk>>, Status> {
        let mut req = request.into_inner();
        if self.fault == Fault::IgnoresTail {
            req.tail_lines = None;
        }
        let upstream = self.client().get_container_logs(req).await?.into_inner();
        Ok(Response::new(Box::pin(upstream)))
    }

    async fn exec(
        &self,
        request: Request<Streaming<pb::ExecRequest>>,
    ) -> Result<Response<BoxStream<pb::StreamOutput>>, Status> {
        // The client's stream ends where the caller's does (or fails): a half-close either way.
        let inbound = request
            .into_inner()
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(|r| futures::future::ready(r.ok()));
        let upstream = self.client().exec(inbound).await?.into_inner();
        let fault = self.fault;
        let out = upstream.map(move |item| {
            item.map(|mut msg| {
                if fault == Fault::MergesStderr
                    && let Some(pb::stream_output::Output::Stderr(b)) = msg.output
                {
                    msg.output = Some(pb::stream_output::Output::Stdout(b));
                }
                msg
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn update_pod(
        &self,
        request: Request<pb::UpdatePodRequest>,
    ) -> Result<Response<pb::UpdatePodResponse>, Status> {
        self.client().update_pod(request.into_inner()).await
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        self.client().get_stats(request.into_inner()).await
    }

    async fn attach(
        &self,
        request: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Response<BoxStream<pb::StreamOutput>>, Status> {
        let inbound = request
            .into_inner()
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(|r| futures::future::ready(r.ok()));
        let upstream = self.client().attach(inbound).await?.into_inner();
        Ok(Response::new(Box::pin(upstream)))
    }

    async fn port_forward(
        &self,
        request: Request<Streaming<pb::PortForwardRequest>>,
    ) -> Result<Response<BoxStream<pb::PortForwardResponse>>, Status> {
        if self.fault == Fault::GenericUnimplemented {
            return Err(Status::unimplemented("Not yet implemented"));
        }
        let inbound = request
            .into_inner()
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(|r| futures::future::ready(r.ok()));
        let upstream = self.client().port_forward(inbound).await?.into_inner();
        Ok(Response::new(Box::pin(upstream)))
    }
}

/// With `true`, refuses CreatePod requests whose bytes hold more than the fields this contract
/// knows: decoding and re-encoding them loses the unknown ones, so the length changes.
#[derive(Clone)]
struct StrictLayer(bool);

impl<S> tower::Layer<S> for StrictLayer {
    type Service = Strict<S>;
    fn layer(&self, inner: S) -> Strict<S> {
        Strict { inner, on: self.0 }
    }
}

#[derive(Clone)]
struct Strict<S> {
    inner: S,
    on: bool,
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S> tower::Service<HttpRequest> for Strict<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        use http_body_util::BodyExt;
        use prost::Message;
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let on = self.on;
        Box::pin(async move {
            if !on || req.uri().path() != "/podprovider.v1.PodProvider/CreatePod" {
                return inner.call(req).await;
            }
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            // One uncompressed gRPC frame: a flag byte, a 4-byte length, the message.
            let message = bytes.get(5..).unwrap_or_default();
            let known = pb::CreatePodRequest::decode(message)
                .map(|m| m.encoded_len())
                .unwrap_or(0);
            if known != message.len() {
                return Ok(Status::invalid_argument("unknown fields are not accepted").into_http());
            }
            let body = tonic::body::Body::new(http_body_util::Full::new(bytes));
            inner
                .call(tonic::codegen::http::Request::from_parts(parts, body))
                .await
        })
    }
}
