//! The cases. Each one talks to the provider over gRPC only, creates its own pods (unique UIDs,
//! every one carrying the canary secret) and leaves none behind.

mod util;

use std::{
    collections::HashSet,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use podprovider_proto::{
    PodProviderClient,
    v1::{
        self as pb, Container, CreatePodRequest, DeletePodRequest, EnvVar, GetPodRequest, Pod,
        PodPhase, PodRef, PodStatus, WatchPodsEvent, watch_pods_event::Event,
    },
};
use tokio::sync::Mutex as AsyncMutex;
use tonic::{Code, Status, transport::Channel};

use self::util::{phase_rank, regression, rfc3339_seconds, valid_quantity};
use crate::{CaseReport, Config, Error, Outcome, Report, connect, provider};

/// A case's name, what it checks, and the RPCs it needs (it is skipped when the provider declares
/// one of them unimplemented).
#[derive(Clone, Copy, Debug)]
pub struct CaseInfo {
    /// Name for `--case` and `--skip`.
    pub name: &'static str,
    /// One line on what it checks.
    pub about: &'static str,
    /// RPCs it calls.
    pub needs: &'static [&'static str],
}

const LIFECYCLE: &[&str] = &["CreatePod", "DeletePod", "ListPods"];

/// Every case, in run order (the canary case last, so it covers the pods of all the others).
pub const CASES: &[CaseInfo] = &[
    CaseInfo {
        name: "health",
        about: "grpc.health.v1 answers SERVING for \"\" and podprovider.v1.PodProvider",
        needs: &[],
    },
    CaseInfo {
        name: "reflection",
        about: "server reflection v1 and v1alpha list and describe podprovider.v1.PodProvider",
        needs: &[],
    },
    CaseInfo {
        name: "node-info",
        about: "GetNodeInfo: names, capacity quantities, OS, architecture, taints; Ping is ready and echoes the revision",
        needs: &["GetNodeInfo", "Ping"],
    },
    CaseInfo {
        name: "create-idempotent",
        about: "CreatePod twice with one UID makes one pod; a second UID with the same name is a second pod",
        needs: LIFECYCLE,
    },
    CaseInfo {
        name: "delete-unknown",
        about: "DeletePod of an unknown UID succeeds with found=false; GetPod of it is NOT_FOUND",
        needs: &["DeletePod", "GetPod"],
    },
    CaseInfo {
        name: "watch-snapshot",
        about: "every new WatchPods stream sends the existing pods, then exactly one synced",
        needs: &["CreatePod", "DeletePod", "WatchPods"],
    },
    CaseInfo {
        name: "watch-changes",
        about: "after synced, a created pod's statuses arrive, then deleted after DeletePod, nothing after",
        needs: &["CreatePod", "DeletePod", "WatchPods"],
    },
    CaseInfo {
        name: "status-monotonic",
        about: "a pod's statuses (stream and GetPod) go Pending -> Running -> terminated, never back",
        needs: &["CreatePod", "DeletePod", "WatchPods", "GetPod"],
    },
    CaseInfo {
        name: "restart",
        about: "after a provider restart, ListPods and the WatchPods snapshot still hold a running pod",
        needs: &["CreatePod", "DeletePod", "ListPods", "WatchPods"],
    },
    CaseInfo {
        name: "invalid-pod-ref",
        about: "a PodRef without namespace, name or uid is INVALID_ARGUMENT with a message",
        needs: &["CreatePod", "DeletePod", "GetPod"],
    },
    CaseInfo {
        name: "invalid-volume",
        about: "a pod with an unsupported (hostPath) volume is INVALID_ARGUMENT naming it; no pod is left",
        needs: LIFECYCLE,
    },
    CaseInfo {
        name: "large-message",
        about: "a CreatePod of more than 4 MiB (ConfigMap files) is accepted",
        needs: LIFECYCLE,
    },
    CaseInfo {
        name: "logs",
        about: "GetContainerLogs honours tail_lines, timestamps, since_seconds and follow",
        needs: &["CreatePod", "DeletePod", "GetPod", "GetContainerLogs"],
    },
    CaseInfo {
        name: "exec",
        about: "Exec returns stdout and stderr separately and ends with the exit code",
        needs: &["CreatePod", "DeletePod", "GetPod", "Exec"],
    },
    CaseInfo {
        name: "unknown-fields",
        about: "requests carrying fields from a newer contract are accepted",
        needs: &["CreatePod", "DeletePod", "ListPods", "Ping"],
    },
    CaseInfo {
        name: "unimplemented",
        about: "each RPC declared unimplemented answers UNIMPLEMENTED with a message",
        needs: &[],
    },
    CaseInfo {
        name: "canary",
        about: "the sensitive canary value every kit pod carries never appears in the provider's output or errors",
        needs: &["CreatePod", "DeletePod"],
    },
];

/// Why a case did not pass.
enum Verdict {
    Fail(String),
    Skip(String),
}

type CaseResult = Result<(), Verdict>;

impl From<Status> for Verdict {
    fn from(s: Status) -> Self {
        Verdict::Fail(format!("unexpected {:?}: {}", s.code(), s.message()))
    }
}

fn fail<T>(why: impl Into<String>) -> Result<T, Verdict> {
    Err(Verdict::Fail(why.into()))
}

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return fail(format!($($why)+));
        }
    };
}

struct Ctx {
    config: Config,
    channel: Channel,
    provider: Option<AsyncMutex<provider::ManagedProvider>>,
    run_id: String,
    canary: String,
    seq: AtomicU32,
    created: Mutex<Vec<PodRef>>,
    /// Error messages the provider sent, searched for the canary.
    messages: Mutex<Vec<String>>,
}

pub(crate) async fn run_all(
    config: Config,
    mut on_case: impl FnMut(&CaseReport),
) -> Result<Report, Error> {
    let channel = connect::channel(&config.endpoint)?;
    let provider = match &config.provider_command {
        Some(command) => Some(AsyncMutex::new(provider::ManagedProvider::start(command)?)),
        None => None,
    };
    let ctx = Ctx {
        channel,
        provider,
        run_id: util::random_hex(4),
        canary: format!("conformance-canary-{}", util::random_hex(8)),
        seq: AtomicU32::new(0),
        created: Mutex::default(),
        messages: Mutex::default(),
        config,
    };
    let reachable = ctx.wait_reachable().await;
    let mut report = Report::default();
    if let Err(e) = reachable {
        ctx.stop_provider().await;
        return Err(e);
    }
    for case in CASES {
        let selected =
            ctx.config.cases.is_empty() || ctx.config.cases.iter().any(|c| c == case.name);
        if !selected {
            continue;
        }
        let started = Instant::now();
        let outcome = if ctx.config.skip.iter().any(|c| c == case.name) {
            Outcome::Skip("skipped with --skip".into())
        } else if let Some(rpc) = case
            .needs
            .iter()
            .find(|rpc| ctx.config.unimplemented.contains(**rpc))
        {
            Outcome::Skip(format!("needs {rpc}, declared unimplemented"))
        } else {
            // A hung provider fails the case instead of hanging the kit.
            let limit = ctx.config.timeout * 4 + Duration::from_secs(30);
            let result = match tokio::time::timeout(limit, ctx.run_case(case.name)).await {
                Ok(result) => result,
                Err(_) => fail(format!("did not finish within {} s", limit.as_secs())),
            };
            ctx.cleanup().await;
            match result {
                Ok(()) => Outcome::Pass,
                Err(Verdict::Fail(why)) => Outcome::Fail(why),
                Err(Verdict::Skip(why)) => Outcome::Skip(why),
            }
        };
        let case_report = CaseReport {
            name: case.name,
            outcome,
            elapsed: started.elapsed(),
        };
        on_case(&case_report);
        report.cases.push(case_report);
    }
    ctx.stop_provider().await;
    Ok(report)
}

impl Ctx {
    async fn run_case(&self, name: &str) -> CaseResult {
        match name {
            "health" => self.health().await,
            "reflection" => self.reflection().await,
            "node-info" => self.node_info().await,
            "create-idempotent" => self.create_idempotent().await,
            "delete-unknown" => self.delete_unknown().await,
            "watch-snapshot" => self.watch_snapshot().await,
            "watch-changes" => self.watch_changes().await,
            "status-monotonic" => self.status_monotonic().await,
            "restart" => self.restart().await,
            "invalid-pod-ref" => self.invalid_pod_ref().await,
            "invalid-volume" => self.invalid_volume().await,
            "large-message" => self.large_message().await,
            "logs" => self.logs().await,
            "exec" => self.exec().await,
            "unknown-fields" => self.unknown_fields().await,
            "unimplemented" => self.unimplemented().await,
            "canary" => self.canary().await,
            other => fail(format!("case {other} has no implementation")),
        }
    }

    fn client(&self) -> PodProviderClient<Channel> {
        connect::client(&self.channel)
    }

    fn node(&self) -> String {
        self.config.node_name.clone()
    }

    /// Any answer to Ping (even an error other than UNAVAILABLE) means the server is up.
    async fn wait_reachable(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            let mut client = self.client();
            let ping = client.ping(pb::PingRequest {
                node_name: self.node(),
            });
            match tokio::time::timeout(Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(s)) if s.code() != Code::Unavailable && s.code() != Code::Unknown => {
                    return Ok(());
                }
                _ => {}
            }
            if let Some(provider) = &self.provider {
                let mut provider = provider.lock().await;
                if let Some(status) = provider.exited() {
                    return Err(self.unreachable(format!(
                        "; it exited with {status}; output:\n{}",
                        util::tail(&provider.output(), 20)
                    )));
                }
            }
            if Instant::now() > deadline {
                let detail = match &self.provider {
                    Some(p) => format!("; output:\n{}", util::tail(&p.lock().await.output(), 20)),
                    None => String::new(),
                };
                return Err(self.unreachable(detail));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn unreachable(&self, detail: String) -> Error {
        Error::NotReachable {
            endpoint: self.config.endpoint.clone(),
            secs: self.config.timeout.as_secs(),
            detail,
        }
    }

    async fn stop_provider(&self) {
        if let Some(provider) = &self.provider {
            provider.lock().await.stop(Duration::from_secs(10)).await;
        }
    }

    /// A fresh pod for `case`: one container running a shell loop that prints a line a second,
    /// and the canary as a sensitive env value.
    fn pod(&self, case: &str) -> Pod {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("conformance-{case}-{}-{n}", self.run_id);
        self.pod_named(&name)
    }

    fn pod_named(&self, name: &str) -> Pod {
        Pod {
            pod_ref: Some(PodRef {
                namespace: "default".into(),
                name: name.to_owned(),
                uid: util::uuid(),
            }),
            node_name: self.node(),
            containers: vec![Container {
                name: "main".into(),
                image: self.config.image.clone(),
                command: vec!["sh".into(), "-c".into(), util::LOOP_SCRIPT.into()],
                env: vec![
                    EnvVar {
                        name: "CONFORMANCE".into(),
                        value: "1".into(),
                        ..Default::default()
                    },
                    EnvVar {
                        name: "CONFORMANCE_CANARY".into(),
                        value: self.canary.clone(),
                        sensitive: true,
                        ..Default::default()
                    },
                ],
                resources: Some(pb::ResourceRequirements {
                    requests: Some(pb::Resources {
                        cpu_millis: Some(250),
                        memory_bytes: Some(512 << 20),
                        ..Default::default()
                    }),
                    limits: None,
                }),
                ..Default::default()
            }],
            restart_policy: pb::RestartPolicy::Always as i32,
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        }
    }

    fn note_message(&self, message: &str) {
        if let Ok(mut m) = self.messages.lock() {
            m.push(message.to_owned());
        }
    }

    async fn create(&self, pod: Pod) -> Result<PodStatus, Verdict> {
        if let Some(r) = &pod.pod_ref {
            self.remember(r);
        }
        let status = self.create_raw(pod).await.map_err(|s| {
            Verdict::Fail(format!("CreatePod failed: {:?}: {}", s.code(), s.message()))
        })?;
        Ok(status)
    }

    async fn create_raw(&self, pod: Pod) -> Result<PodStatus, Status> {
        let mut client = self.client();
        let call = client.create_pod(CreatePodRequest { pod: Some(pod) });
        let answer = self.timed(call).await?;
        Ok(answer.into_inner().status.unwrap_or_default())
    }

    /// `f` with the kit's timeout; a timeout is DEADLINE_EXCEEDED. Error messages are kept for the
    /// canary check.
    async fn timed<T>(&self, f: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        let result = match tokio::time::timeout(self.config.timeout, f).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {} s",
                self.config.timeout.as_secs()
            ))),
        };
        if let Err(s) = &result {
            self.note_message(s.message());
        }
        result
    }

    async fn delete(&self, r: &PodRef) -> Result<bool, Status> {
        let mut client = self.client();
        let call = client.delete_pod(DeletePodRequest {
            pod_ref: Some(r.clone()),
            grace_period_seconds: Some(0),
        });
        Ok(self.timed(call).await?.into_inner().found)
    }

    /// Deleted after the case, whatever happens in it.
    fn remember(&self, r: &PodRef) {
        if let Ok(mut created) = self.created.lock() {
            created.push(r.clone());
        }
    }

    async fn cleanup(&self) {
        let created = match self.created.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        for r in created {
            let _ = self.delete(&r).await;
        }
    }

    async fn list_uids(&self) -> Result<Vec<PodStatus>, Verdict> {
        let mut client = self.client();
        let call = client.list_pods(pb::ListPodsRequest {
            node_name: self.node(),
        });
        Ok(self.timed(call).await?.into_inner().pods)
    }

    async fn get(&self, r: &PodRef) -> Result<PodStatus, Status> {
        let mut client = self.client();
        let call = client.get_pod(GetPodRequest {
            pod_ref: Some(r.clone()),
        });
        Ok(self
            .timed(call)
            .await?
            .into_inner()
            .status
            .unwrap_or_default())
    }

    /// Polls GetPod until the pod runs; fails on a terminal phase or after the timeout.
    async fn wait_running(&self, r: &PodRef) -> CaseResult {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            let status = self.get(r).await?;
            match status.phase() {
                PodPhase::Running => return Ok(()),
                PodPhase::Failed | PodPhase::Succeeded => {
                    return fail(format!(
                        "pod {} ended ({:?}: {} {}) instead of running",
                        r.name,
                        status.phase(),
                        status.reason,
                        status.message
                    ));
                }
                _ => {}
            }
            ensure!(
                Instant::now() < deadline,
                "pod {} not Running within {} s (phase {:?})",
                r.name,
                self.config.timeout.as_secs(),
                status.phase()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn watch(&self) -> Result<Watch, Verdict> {
        let mut client = self.client();
        let call = client.watch_pods(pb::WatchPodsRequest {
            node_name: self.node(),
        });
        let stream = self.timed(call).await?.into_inner();
        Ok(Watch {
            stream,
            timeout: self.config.timeout,
        })
    }

    // ----- cases -----

    async fn health(&self) -> CaseResult {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let mut health = HealthClient::new(self.channel.clone());
        for service in ["", "podprovider.v1.PodProvider"] {
            let answer = self
                .timed(health.check(HealthCheckRequest {
                    service: service.into(),
                }))
                .await
                .map_err(|s| {
                    Verdict::Fail(format!(
                        "Health/Check {service:?}: {:?}: {}",
                        s.code(),
                        s.message()
                    ))
                })?
                .into_inner();
            ensure!(
                answer.status() == ServingStatus::Serving,
                "Health/Check {service:?} answered {:?}, not SERVING",
                answer.status()
            );
        }
        Ok(())
    }

    async fn reflection(&self) -> CaseResult {
        let service = "podprovider.v1.PodProvider";
        let (services, files) = util::reflect_v1(&self.channel, service, self.config.timeout)
            .await
            .map_err(|s| {
                Verdict::Fail(format!("reflection v1: {:?}: {}", s.code(), s.message()))
            })?;
        ensure!(
            services.iter().any(|s| s == service),
            "reflection v1 lists {services:?}, not {service}"
        );
        ensure!(files > 0, "reflection v1 has no file for {service}");
        let (services, files) = util::reflect_v1alpha(&self.channel, service, self.config.timeout)
            .await
            .map_err(|s| {
                Verdict::Fail(format!(
                    "reflection v1alpha: {:?}: {}",
                    s.code(),
                    s.message()
                ))
            })?;
        ensure!(
            services.iter().any(|s| s == service),
            "reflection v1alpha lists {services:?}, not {service}"
        );
        ensure!(files > 0, "reflection v1alpha has no file for {service}");
        Ok(())
    }

    async fn node_info(&self) -> CaseResult {
        let info = self
            .timed(self.client().get_node_info(pb::GetNodeInfoRequest {
                node_name: self.node(),
            }))
            .await?
            .into_inner();
        ensure!(
            !info.provider_name.is_empty() && !info.provider_name.contains(char::is_whitespace),
            "provider_name {:?} is empty or has spaces",
            info.provider_name
        );
        ensure!(
            !info.provider_version.is_empty(),
            "provider_version is empty"
        );
        for key in ["cpu", "memory", "pods"] {
            ensure!(
                info.capacity.contains_key(key),
                "capacity lacks {key}: {:?}",
                info.capacity
            );
        }
        for (key, value) in info.capacity.iter().chain(&info.allocatable) {
            ensure!(
                valid_quantity(value),
                "{key} = {value:?} is not a Kubernetes quantity"
            );
        }
        let pods = info.capacity.get("pods").map(String::as_str).unwrap_or("");
        ensure!(
            pods.parse::<u64>().is_ok_and(|n| n > 0),
            "capacity pods = {pods:?} is not a positive integer"
        );
        for key in info.allocatable.keys() {
            ensure!(
                info.capacity.contains_key(key),
                "allocatable {key} is not in capacity"
            );
        }
        ensure!(
            ["linux", "windows"].contains(&info.operating_system.as_str()),
            "operating_system {:?} is not linux or windows",
            info.operating_system
        );
        ensure!(
            ["amd64", "arm64"].contains(&info.architecture.as_str()),
            "architecture {:?} is not amd64 or arm64",
            info.architecture
        );
        for t in &info.taints {
            ensure!(!t.key.is_empty(), "a taint has no key");
            ensure!(
                ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()),
                "taint {} has effect {:?}",
                t.key,
                t.effect
            );
        }
        for c in &info.conditions {
            ensure!(
                !c.r#type.is_empty() && c.r#type != "Ready",
                "condition type {:?}: empty or Ready (Ready is the shim's)",
                c.r#type
            );
        }
        let ping = self
            .timed(self.client().ping(pb::PingRequest {
                node_name: self.node(),
            }))
            .await?
            .into_inner();
        ensure!(
            ping.ready,
            "Ping is not ready: {} {}",
            ping.reason,
            ping.message
        );
        ensure!(
            ping.node_info_revision == info.revision,
            "Ping's node_info_revision {:?} differs from NodeInfo.revision {:?}",
            ping.node_info_revision,
            info.revision
        );
        Ok(())
    }

    async fn create_idempotent(&self) -> CaseResult {
        let pod = self.pod("idem");
        let r = pod.pod_ref.clone().unwrap_or_default();
        self.create(pod.clone()).await?;
        let again = self.create_raw(pod.clone()).await.map_err(|s| {
            Verdict::Fail(format!(
                "the second CreatePod of the same UID failed with {:?}: {} (it must succeed)",
                s.code(),
                s.message()
            ))
        })?;
        if let Some(got) = &again.pod_ref {
            ensure!(
                got.uid == r.uid,
                "the retried CreatePod answered the status of UID {:?}, not {:?}",
                got.uid,
                r.uid
            );
        }
        let pods = self.list_uids().await?;
        let same = pods.iter().filter(|p| uid_of(p) == r.uid).count();
        ensure!(
            same == 1,
            "ListPods shows {same} pods with UID {} after two creates (want 1)",
            r.uid
        );
        // Same namespace and name, new UID: a different pod (a re-created pod while the old one
        // terminates).
        let mut twin = pod;
        let twin_ref = PodRef {
            uid: util::uuid(),
            ..r.clone()
        };
        twin.pod_ref = Some(twin_ref.clone());
        self.create(twin).await?;
        let pods = self.list_uids().await?;
        for want in [&r, &twin_ref] {
            ensure!(
                pods.iter().any(|p| uid_of(p) == want.uid),
                "ListPods lacks UID {} after two pods named {} were created",
                want.uid,
                want.name
            );
        }
        Ok(())
    }

    async fn delete_unknown(&self) -> CaseResult {
        let r = PodRef {
            namespace: "default".into(),
            name: format!("conformance-never-created-{}", self.run_id),
            uid: util::uuid(),
        };
        let found = self.delete(&r).await.map_err(|s| {
            Verdict::Fail(format!(
                "DeletePod of an unknown UID failed with {:?}: {} (it must succeed)",
                s.code(),
                s.message()
            ))
        })?;
        ensure!(!found, "DeletePod of an unknown UID answered found=true");
        match self.get(&r).await {
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => fail(format!(
                "GetPod of an unknown UID answered {:?} ({}), not NOT_FOUND",
                s.code(),
                s.message()
            )),
            Ok(_) => fail("GetPod of an unknown UID answered a status, not NOT_FOUND"),
        }
    }

    async fn watch_snapshot(&self) -> CaseResult {
        let pod = self.pod("snap");
        let r = pod.pod_ref.clone().unwrap_or_default();
        self.create(pod).await?;
        // Two streams at once: each gets the whole snapshot.
        let mut first = self.watch().await?;
        let mut second = self.watch().await?;
        for (which, w) in [("first", &mut first), ("second", &mut second)] {
            let snapshot = w.snapshot().await?;
            ensure!(
                snapshot
                    .iter()
                    .any(|e| matches!(e, Event::Status(s) if uid_of(s) == r.uid)),
                "the {which} stream's snapshot lacks the pod created before it opened"
            );
        }
        // Exactly one synced per stream.
        let quiet = Duration::from_secs(2);
        for (which, w) in [("first", &mut first), ("second", &mut second)] {
            let until = Instant::now() + quiet;
            while let Some(event) = w.next_before(until).await? {
                ensure!(
                    !matches!(event, Event::Synced(_)),
                    "the {which} stream sent a second synced"
                );
            }
        }
        Ok(())
    }

    async fn watch_changes(&self) -> CaseResult {
        let mut w = self.watch().await?;
        w.snapshot().await?;
        let pod = self.pod("changes");
        let r = pod.pod_ref.clone().unwrap_or_default();
        self.create(pod).await?;
        let mut statuses = Vec::new();
        let deadline = Instant::now() + self.config.timeout;
        while statuses.is_empty() {
            match w.next_before(deadline).await? {
                Some(Event::Status(s)) if uid_of(&s) == r.uid => statuses.push(s),
                Some(Event::Deleted(d)) if d.uid == r.uid => {
                    return fail("deleted arrived for a pod that was never deleted");
                }
                Some(Event::Synced(_)) => return fail("a second synced arrived after changes"),
                Some(_) => {}
                None => {
                    return fail(format!(
                        "no status for the created pod within {} s",
                        self.config.timeout.as_secs()
                    ));
                }
            }
        }
        let found = self.delete(&r).await?;
        ensure!(found, "DeletePod of a created pod answered found=false");
        let deadline = Instant::now() + self.config.timeout;
        loop {
            match w.next_before(deadline).await? {
                Some(Event::Status(s)) if uid_of(&s) == r.uid => statuses.push(s),
                Some(Event::Deleted(d)) if d.uid == r.uid => break,
                Some(Event::Synced(_)) => return fail("a second synced arrived after changes"),
                Some(_) => {}
                None => {
                    return fail(format!(
                        "no deleted event within {} s of DeletePod",
                        self.config.timeout.as_secs()
                    ));
                }
            }
        }
        for pair in statuses.windows(2) {
            if let Some(why) = regression(&pair[0], &pair[1]) {
                return fail(format!("status moved backwards on the stream: {why}"));
            }
        }
        let until = Instant::now() + Duration::from_secs(2);
        while let Some(event) = w.next_before(until).await? {
            ensure!(
                !matches!(&event, Event::Status(s) if uid_of(s) == r.uid),
                "a status arrived after deleted"
            );
        }
        Ok(())
    }

    async fn status_monotonic(&self) -> CaseResult {
        let mut w = self.watch().await?;
        w.snapshot().await?;
        let pod = self.pod("mono");
        let r = pod.pod_ref.clone().unwrap_or_default();
        let first = self.create(pod).await?;
        let mut last: Option<PodStatus> = None;
        let mut best_rank = phase_rank(first.phase()).unwrap_or(0);
        let deadline = Instant::now() + self.config.timeout;
        // Until Running, watching for regressions; GetPod in between must not lag behind the
        // stream's answer by a phase.
        while best_rank < 2 {
            match w.next_before(deadline).await? {
                Some(Event::Status(s)) if uid_of(&s) == r.uid => {
                    if let Some(prev) = &last
                        && let Some(why) = regression(prev, &s)
                    {
                        return fail(format!("status moved backwards: {why}"));
                    }
                    best_rank = best_rank.max(phase_rank(s.phase()).unwrap_or(0));
                    last = Some(s);
                }
                Some(Event::Deleted(d)) if d.uid == r.uid => {
                    return fail("the pod was reported deleted without a DeletePod");
                }
                Some(_) => {}
                None => {
                    return fail(format!(
                        "the pod did not reach Running on the stream within {} s",
                        self.config.timeout.as_secs()
                    ));
                }
            }
        }
        // Watch a little longer: a running pod must stay running.
        let until = Instant::now() + Duration::from_secs(3);
        while let Some(event) = w.next_before(until).await? {
            if let Event::Status(s) = event
                && uid_of(&s) == r.uid
            {
                if let Some(prev) = &last
                    && let Some(why) = regression(prev, &s)
                {
                    return fail(format!("status moved backwards after Running: {why}"));
                }
                last = Some(s);
            }
        }
        let now = self.get(&r).await?;
        if let Some(prev) = &last
            && let Some(why) = regression(prev, &now)
        {
            return fail(format!("GetPod is behind the stream: {why}"));
        }
        Ok(())
    }

    async fn restart(&self) -> CaseResult {
        if self.provider.is_none() && self.config.restart_command.is_none() {
            return Err(Verdict::Skip(
                "no --restart-command or --provider-command given".into(),
            ));
        }
        let pod = self.pod("restart");
        let r = pod.pod_ref.clone().unwrap_or_default();
        self.create(pod).await?;
        self.wait_running(&r).await?;
        let restarted = match (&self.provider, &self.config.restart_command) {
            (_, Some(command)) => provider::run_restart_command(command).await,
            (Some(provider), None) => provider.lock().await.restart().await,
            (None, None) => Ok(()),
        };
        restarted.map_err(|e| Verdict::Fail(e.to_string()))?;
        self.wait_reachable()
            .await
            .map_err(|e| Verdict::Fail(format!("after the restart: {e}")))?;
        let pods = self.list_uids().await?;
        ensure!(
            pods.iter().any(|p| uid_of(p) == r.uid),
            "after the restart, ListPods lacks the running pod {} ({} pods listed)",
            r.name,
            pods.len()
        );
        let mut w = self.watch().await?;
        let snapshot = w.snapshot().await?;
        let Some(Event::Status(s)) = snapshot
            .iter()
            .find(|e| matches!(e, Event::Status(s) if uid_of(s) == r.uid))
        else {
            return fail("after the restart, the WatchPods snapshot lacks the running pod");
        };
        ensure!(
            phase_rank(s.phase()).unwrap_or(0) >= 2,
            "after the restart the running pod is reported {:?}",
            s.phase()
        );
        let found = self.delete(&r).await?;
        ensure!(
            found,
            "after the restart, DeletePod of the pod answered found=false"
        );
        Ok(())
    }

    async fn invalid_pod_ref(&self) -> CaseResult {
        let full = self.pod("badref");
        let r = full.pod_ref.clone().unwrap_or_default();
        let variants = [
            (
                "uid",
                PodRef {
                    uid: String::new(),
                    ..r.clone()
                },
            ),
            (
                "name",
                PodRef {
                    name: String::new(),
                    ..r.clone()
                },
            ),
            (
                "namespace",
                PodRef {
                    namespace: String::new(),
                    ..r.clone()
                },
            ),
        ];
        for (missing, bad) in variants {
            let mut pod = full.clone();
            pod.pod_ref = Some(bad.clone());
            let created = self.create_raw(pod).await;
            if created.is_ok() {
                // Leave nothing behind, whatever the provider did with it.
                let _ = self.delete(&r).await;
            }
            expect_invalid(&format!("CreatePod without {missing}"), created)?;
            expect_invalid(&format!("GetPod without {missing}"), self.get(&bad).await)?;
            expect_invalid(
                &format!("DeletePod without {missing}"),
                self.delete(&bad).await,
            )?;
        }
        let mut pod = full;
        pod.pod_ref = None;
        expect_invalid("CreatePod without pod_ref", self.create_raw(pod).await)?;
        Ok(())
    }

    async fn invalid_volume(&self) -> CaseResult {
        let mut pod = self.pod("badvol");
        let r = pod.pod_ref.clone().unwrap_or_default();
        pod.volumes.push(pb::Volume {
            name: "host".into(),
            source: Some(pb::volume::Source::Unsupported(pb::UnsupportedVolume {
                kind: "hostPath".into(),
            })),
        });
        if let Some(c) = pod.containers.first_mut() {
            c.volume_mounts.push(pb::VolumeMount {
                name: "host".into(),
                mount_path: "/host".into(),
                ..Default::default()
            });
        }
        self.remember(&r);
        let message = expect_invalid(
            "CreatePod with a hostPath volume",
            self.create_raw(pod).await,
        )?;
        ensure!(
            message.contains("hostPath"),
            "the INVALID_ARGUMENT message does not name the volume type hostPath: {message:?}"
        );
        let pods = self.list_uids().await?;
        ensure!(
            !pods.iter().any(|p| uid_of(p) == r.uid),
            "the rejected pod is listed by ListPods"
        );
        Ok(())
    }

    async fn large_message(&self) -> CaseResult {
        let mut pod = self.pod("large");
        // Five ConfigMap-sized files: 5 MiB, above gRPC's 4 MiB default limit.
        let files = (0..5)
            .map(|i| pb::FileEntry {
                path: format!("part-{i}"),
                content: vec![b'a' + i as u8; 1 << 20],
                mode: None,
                sensitive: false,
            })
            .collect();
        pod.volumes.push(pb::Volume {
            name: "big".into(),
            source: Some(pb::volume::Source::Files(pb::FilesVolume {
                source: pb::FilesSource::ConfigMap as i32,
                files,
                default_mode: None,
                token_expiration: None,
            })),
        });
        if let Some(c) = pod.containers.first_mut() {
            c.volume_mounts.push(pb::VolumeMount {
                name: "big".into(),
                mount_path: "/big".into(),
                read_only: true,
                ..Default::default()
            });
        }
        let r = pod.pod_ref.clone().unwrap_or_default();
        self.remember(&r);
        match self.create_raw(pod).await {
            Ok(_) => {}
            // The provider read the pod and judged it too big for its cloud: that is §8's answer.
            Err(s) if s.code() == Code::InvalidArgument => return Ok(()),
            // gRPC libraries refuse oversized messages with these codes before the handler runs.
            Err(s) if matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted) => {
                return fail(format!(
                    "the 5 MiB CreatePod was refused, probably by the gRPC server's message size limit: {:?}: {}",
                    s.code(),
                    s.message()
                ));
            }
            Err(s) => {
                return fail(format!(
                    "the 5 MiB CreatePod answered {:?}: {} (a pod too large for the cloud is INVALID_ARGUMENT, §8)",
                    s.code(),
                    s.message()
                ));
            }
        }
        let pods = self.list_uids().await?;
        ensure!(
            pods.iter().any(|p| uid_of(p) == r.uid),
            "the large pod was accepted but ListPods lacks it"
        );
        Ok(())
    }

    async fn logs(&self) -> CaseResult {
        let pod = self.pod("logs");
        let r = pod.pod_ref.clone().unwrap_or_default();
        self.create(pod).await?;
        self.wait_running(&r).await?;
        let base = pb::GetContainerLogsRequest {
            pod_ref: Some(r.clone()),
            container: "main".into(),
            ..Default::default()
        };
        // Wait for a first line, and until it is old enough for since_seconds to exclude it.
        let deadline = Instant::now() + self.config.timeout;
        let first_at = loop {
            let stamped = self
                .log_text(pb::GetContainerLogsRequest {
                    timestamps: true,
                    ..base.clone()
                })
                .await?;
            let first = stamped.lines().next().map(str::to_owned);
            if let Some(line) = first {
                let Some(at) = line.split(' ').next().and_then(rfc3339_seconds) else {
                    return fail(format!(
                        "with timestamps, the line {line:?} does not start with an RFC 3339 time and a space"
                    ));
                };
                break at;
            }
            ensure!(
                Instant::now() < deadline,
                "the running container logged nothing within {} s",
                self.config.timeout.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let wait = first_at + 3.5 - util::now_seconds();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }

        let full = self.log_text(base.clone()).await?;
        ensure!(!full.is_empty(), "the log is empty now");
        let stamped = self
            .log_text(pb::GetContainerLogsRequest {
                timestamps: true,
                ..base.clone()
            })
            .await?;
        for line in stamped.lines() {
            ensure!(
                line.split(' ').next().and_then(rfc3339_seconds).is_some(),
                "with timestamps, the line {line:?} does not start with an RFC 3339 time and a space"
            );
        }

        let none = self
            .log_text(pb::GetContainerLogsRequest {
                tail_lines: Some(0),
                ..base.clone()
            })
            .await?;
        ensure!(none.is_empty(), "tail_lines=0 returned {none:?}");
        let tail = self
            .log_text(pb::GetContainerLogsRequest {
                tail_lines: Some(1),
                ..base.clone()
            })
            .await?;
        let after = self.log_text(base.clone()).await?;
        ensure!(
            tail.lines().count() == 1,
            "tail_lines=1 returned {} lines: {tail:?}",
            tail.lines().count()
        );
        ensure!(
            tail.lines().all(|l| after.lines().any(|a| a == l)),
            "tail_lines=1 returned a line that is not in the log: {tail:?}"
        );

        let asked = util::now_seconds();
        let recent = self
            .log_text(pb::GetContainerLogsRequest {
                since_seconds: Some(1),
                timestamps: true,
                ..base.clone()
            })
            .await?;
        for line in recent.lines() {
            let at = line.split(' ').next().and_then(rfc3339_seconds);
            ensure!(
                at.is_some_and(|at| at >= asked - 2.5),
                "since_seconds=1 returned an older line: {line:?}"
            );
        }

        // follow: the stream delivers the log and stays open while the container runs.
        let mut follow = self
            .timed(
                self.client()
                    .get_container_logs(pb::GetContainerLogsRequest {
                        follow: true,
                        ..base.clone()
                    }),
            )
            .await?
            .into_inner();
        let first = tokio::time::timeout(self.config.timeout, follow.next()).await;
        match first {
            Ok(Some(Ok(chunk))) => ensure!(!chunk.data.is_empty(), "follow sent an empty chunk"),
            Ok(Some(Err(s))) => return Err(s.into()),
            Ok(None) => return fail("follow ended at once while the container runs"),
            Err(_) => return fail("follow sent nothing although the log has lines"),
        }
        let until = Instant::now() + Duration::from_secs(3);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, follow.next()).await {
                Err(_) => break,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(s))) => return Err(s.into()),
                Ok(None) => return fail("follow ended while the container was running"),
            }
        }
        Ok(())
    }

    async fn log_text(&self, req: pb::GetContainerLogsRequest) -> Result<String, Verdict> {
        let mut stream = self
            .timed(self.client().get_container_logs(req))
            .await?
            .into_inner();
        let mut out = Vec::new();
        let collect = async {
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?.data);
            }
            Ok::<_, Status>(())
        };
        self.timed(collect).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn exec(&self) -> CaseResult {
        let pod = self.pod("exec");
        let r = pod.pod_ref.clone().unwrap_or_default();
        self.create(pod).await?;
        self.wait_running(&r).await?;
        let start = pb::ExecRequest {
            request: Some(pb::exec_request::Request::Start(pb::ExecStart {
                pod_ref: Some(r.clone()),
                container: "main".into(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo conformance-out; echo conformance-err >&2; exit 3".into(),
                ],
                stdin: false,
                stdout: true,
                stderr: true,
                tty: false,
                terminal_size: None,
            })),
        };
        // The request stream ends after `start`: a half-close, i.e. no stdin.
        let mut client = self.client();
        let call = client.exec(tokio_stream::iter(vec![start]));
        let mut stream = self.timed(call).await?.into_inner();
        let (mut stdout, mut stderr, mut exit) = (Vec::new(), Vec::new(), None);
        let collect = async {
            while let Some(msg) = stream.next().await {
                let msg = msg?;
                if exit.is_some() {
                    return Err(Status::internal("a message followed exit"));
                }
                match msg.output {
                    Some(pb::stream_output::Output::Stdout(b)) => stdout.extend_from_slice(&b),
                    Some(pb::stream_output::Output::Stderr(b)) => stderr.extend_from_slice(&b),
                    Some(pb::stream_output::Output::Exit(e)) => exit = Some(e),
                    None => {}
                }
            }
            Ok(())
        };
        self.timed(collect).await?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        );
        ensure!(
            stdout.contains("conformance-out") && !stdout.contains("conformance-err"),
            "stdout is {stdout:?} (want conformance-out only)"
        );
        ensure!(
            stderr.contains("conformance-err") && !stderr.contains("conformance-out"),
            "stderr is {stderr:?} (want conformance-err only)"
        );
        let Some(exit) = exit else {
            return fail("the stream ended without exit");
        };
        ensure!(exit.code == 3, "exit code {} (want 3)", exit.code);
        Ok(())
    }

    async fn unknown_fields(&self) -> CaseResult {
        let pod = self.pod("unknown");
        let r = pod.pod_ref.clone().unwrap_or_default();
        self.remember(&r);
        util::create_with_unknown_fields(&self.channel, pod, self.config.timeout)
            .await
            .map_err(|s| {
                Verdict::Fail(format!(
                    "CreatePod with unknown fields failed: {:?}: {}",
                    s.code(),
                    s.message()
                ))
            })?;
        let pods = self.list_uids().await?;
        ensure!(
            pods.iter().any(|p| uid_of(p) == r.uid),
            "the pod created with unknown fields is not listed"
        );
        util::ping_with_unknown_fields(&self.channel, &self.node(), self.config.timeout)
            .await
            .map_err(|s| {
                Verdict::Fail(format!(
                    "Ping with unknown fields failed: {:?}: {}",
                    s.code(),
                    s.message()
                ))
            })?;
        Ok(())
    }

    async fn unimplemented(&self) -> CaseResult {
        if self.config.unimplemented.is_empty() {
            return Err(Verdict::Skip("no RPC declared unimplemented".into()));
        }
        for rpc in &self.config.unimplemented {
            let answer = self.probe(rpc).await;
            match answer {
                Err(s) if s.code() == Code::Unimplemented => {
                    // PROTOCOL.md §8: users see this message, so it says what is not offered
                    // rather than a generated stub's generic text.
                    let generic = ["", "Not yet implemented", "Method not implemented!"];
                    ensure!(
                        !generic.contains(&s.message().trim()),
                        "{rpc} answers UNIMPLEMENTED with the generic stub message {:?}, not one saying what is not offered",
                        s.message()
                    );
                }
                Err(s) => {
                    return fail(format!(
                        "{rpc} is declared unimplemented but answers {:?}: {}",
                        s.code(),
                        s.message()
                    ));
                }
                Ok(()) => return fail(format!("{rpc} is declared unimplemented but succeeds")),
            }
        }
        Ok(())
    }

    /// Calls `rpc` once with a plausible request; streams are read to their first message.
    async fn probe(&self, rpc: &str) -> Result<(), Status> {
        let mut c = self.client();
        let node = self.node();
        let pod = self.pod("probe");
        let r = pod.pod_ref.clone().unwrap_or_default();
        match rpc {
            "GetNodeInfo" => {
                self.timed(c.get_node_info(pb::GetNodeInfoRequest { node_name: node }))
                    .await?;
            }
            "Ping" => {
                self.timed(c.ping(pb::PingRequest { node_name: node }))
                    .await?;
            }
            "CreatePod" => {
                self.remember(&r);
                self.create_raw(pod).await?;
            }
            "UpdatePod" => {
                self.timed(c.update_pod(pb::UpdatePodRequest { pod: Some(pod) }))
                    .await?;
            }
            "DeletePod" => {
                self.delete(&r).await?;
            }
            "GetPod" => {
                self.get(&r).await?;
            }
            "ListPods" => {
                self.timed(c.list_pods(pb::ListPodsRequest { node_name: node }))
                    .await?;
            }
            "GetStats" => {
                self.timed(c.get_stats(pb::GetStatsRequest {
                    node_name: node,
                    pods: Vec::new(),
                }))
                .await?;
            }
            "WatchPods" => {
                let s = self
                    .timed(c.watch_pods(pb::WatchPodsRequest { node_name: node }))
                    .await?;
                first_item(s.into_inner(), self.config.timeout).await?;
            }
            "GetContainerLogs" => {
                let s = self
                    .timed(c.get_container_logs(pb::GetContainerLogsRequest {
                        pod_ref: Some(r),
                        container: "main".into(),
                        ..Default::default()
                    }))
                    .await?;
                first_item(s.into_inner(), self.config.timeout).await?;
            }
            "Exec" => {
                let start = pb::ExecRequest {
                    request: Some(pb::exec_request::Request::Start(pb::ExecStart {
                        pod_ref: Some(r),
                        container: "main".into(),
                        command: vec!["true".into()],
                        stdout: true,
                        ..Default::default()
                    })),
                };
                let s = self.timed(c.exec(tokio_stream::iter(vec![start]))).await?;
                first_item(s.into_inner(), self.config.timeout).await?;
            }
            "Attach" => {
                let start = pb::AttachRequest {
                    request: Some(pb::attach_request::Request::Start(pb::AttachStart {
                        pod_ref: Some(r),
                        container: "main".into(),
                        stdout: true,
                        ..Default::default()
                    })),
                };
                let s = self
                    .timed(c.attach(tokio_stream::iter(vec![start])))
                    .await?;
                first_item(s.into_inner(), self.config.timeout).await?;
            }
            "PortForward" => {
                let start = pb::PortForwardRequest {
                    request: Some(pb::port_forward_request::Request::Start(
                        pb::PortForwardStart {
                            pod_ref: Some(r),
                            port: 80,
                        },
                    )),
                };
                let s = self
                    .timed(c.port_forward(tokio_stream::iter(vec![start])))
                    .await?;
                first_item(s.into_inner(), self.config.timeout).await?;
            }
            other => return Err(Status::invalid_argument(format!("no probe for {other}"))),
        }
        Ok(())
    }

    async fn canary(&self) -> CaseResult {
        if self.provider.is_none() && self.config.provider_log.is_none() {
            return Err(Verdict::Skip(
                "the kit sees no provider output: give --provider-command or --provider-log".into(),
            ));
        }
        // One more pod through its whole life, and a rejected one, so that even a run of only
        // this case exercises the paths that log pods and errors.
        let pod = self.pod("canary");
        let r = pod.pod_ref.clone().unwrap_or_default();
        self.create(pod).await?;
        let _ = self.get(&r).await;
        let mut bad = self.pod("canary-bad");
        bad.volumes.push(pb::Volume {
            name: "host".into(),
            source: Some(pb::volume::Source::Unsupported(pb::UnsupportedVolume {
                kind: "hostPath".into(),
            })),
        });
        if let Some(bad_ref) = &bad.pod_ref {
            self.remember(bad_ref);
        }
        let _ = self.create_raw(bad).await;
        self.delete(&r).await?;
        // Give buffered log lines time to arrive.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(provider) = &self.provider {
            seen.push(("its output".into(), provider.lock().await.output()));
        }
        if let Some(path) = &self.config.provider_log {
            let log = tokio::fs::read(path).await.map_err(|e| {
                Verdict::Fail(format!(
                    "cannot read the provider log {}: {e}",
                    path.display()
                ))
            })?;
            seen.push((path.display().to_string(), log));
        }
        let messages = self
            .messages
            .lock()
            .map(|m| m.join("\n"))
            .unwrap_or_default();
        seen.push(("an error message".into(), messages.into_bytes()));
        let needle = self.canary.as_bytes();
        for (place, text) in &seen {
            if let Some(at) = text.windows(needle.len()).position(|w| w == needle) {
                let line_start = text[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let line_end = text[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(text.len(), |i| at + i);
                let line = String::from_utf8_lossy(&text[line_start..line_end]);
                let line: String = line.chars().take(300).collect();
                return fail(format!(
                    "the sensitive canary value appears in {place}: {line}"
                ));
            }
        }
        Ok(())
    }
}

fn uid_of(s: &PodStatus) -> &str {
    s.pod_ref.as_ref().map_or("", |r| r.uid.as_str())
}

/// INVALID_ARGUMENT with a non-empty message, which is returned.
fn expect_invalid<T>(what: &str, answer: Result<T, Status>) -> Result<String, Verdict> {
    match answer {
        Err(s) if s.code() == Code::InvalidArgument => {
            ensure!(
                !s.message().trim().is_empty(),
                "{what}: INVALID_ARGUMENT without a message saying why"
            );
            Ok(s.message().to_owned())
        }
        Err(s) => fail(format!(
            "{what}: answered {:?} ({}), want INVALID_ARGUMENT",
            s.code(),
            s.message()
        )),
        Ok(_) => fail(format!("{what}: succeeded, want INVALID_ARGUMENT")),
    }
}

/// The first message of a response stream, or its error; a stream that ends or idles is fine.
async fn first_item<T>(mut s: tonic::Streaming<T>, timeout: Duration) -> Result<(), Status> {
    match tokio::time::timeout(timeout, s.next()).await {
        Ok(Some(Err(status))) => Err(status),
        _ => Ok(()),
    }
}

/// A WatchPods stream being read.
struct Watch {
    stream: tonic::Streaming<WatchPodsEvent>,
    timeout: Duration,
}

impl Watch {
    /// The next event before `deadline`; `None` when none came. A stream that ends or fails is a
    /// failure: WatchPods streams are meant to stay open.
    async fn next_before(&mut self, deadline: Instant) -> Result<Option<Event>, Verdict> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.stream.next()).await {
            Err(_) => Ok(None),
            Ok(None) => fail("the WatchPods stream ended"),
            Ok(Some(Err(s))) => fail(format!(
                "the WatchPods stream failed: {:?}: {}",
                s.code(),
                s.message()
            )),
            Ok(Some(Ok(WatchPodsEvent { event: Some(e) }))) => Ok(Some(e)),
            Ok(Some(Ok(WatchPodsEvent { event: None }))) => {
                fail("the WatchPods stream sent an event with nothing set")
            }
        }
    }

    /// The events before `synced`; fails without a `synced` within the timeout.
    async fn snapshot(&mut self) -> Result<Vec<Event>, Verdict> {
        let deadline = Instant::now() + self.timeout;
        let mut events = Vec::new();
        let mut seen = HashSet::new();
        loop {
            match self.next_before(deadline).await? {
                Some(Event::Synced(_)) => return Ok(events),
                Some(e) => {
                    if let Event::Status(s) = &e {
                        seen.insert(uid_of(s).to_owned());
                    }
                    events.push(e);
                }
                None => {
                    return fail(format!(
                        "no synced within {} s of opening WatchPods ({} events, {} pods before)",
                        self.timeout.as_secs(),
                        events.len(),
                        seen.len()
                    ));
                }
            }
        }
    }
}
