//! Pod lifecycles driven through the API server: bare pods, pods whose container exits,
//! same-name re-creates and Deployment scaling, each choice from a seeded RNG.

use parking_lot::Mutex;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde::Serialize;

use super::{
    Rng,
    check::Expected,
    cloud::{Cloud, Clouds},
};

/// The soak's namespace.
pub const NAMESPACE: &str = "soak";
/// The container of every soak pod.
pub const CONTAINER: &str = "c";
/// Label on every Deployment pod: the Deployment's name.
pub const DEPLOYMENT_LABEL: &str = "soak-deployment";

/// The Deployment pinned to `cloud`'s node.
pub fn deployment_name(cloud: Cloud) -> String {
    format!("web-{}", cloud.name())
}

/// One kind of lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Create a pod, wait until it runs, delete it (or keep it).
    Bare,
    /// A restartPolicy Never pod whose container exits 0: it must end Succeeded.
    Exit,
    /// Create, run, delete, wait until gone, create again under the same name, run.
    Recreate,
    /// Scale a Deployment to 0..=3 replicas.
    Scale,
}

/// Shared between the lifecycle workers.
pub struct Driver {
    client: Client,
    clouds: Arc<Clouds>,
    nodes: Vec<Cloud>,
    /// What each bare pod should end as, by `namespace/name`.
    pub expected: Mutex<BTreeMap<String, Expected>>,
    /// Lifecycles run, by kind.
    pub ran: Mutex<BTreeMap<Lifecycle, usize>>,
    /// Waits that timed out during the run (not failures by themselves: the final check decides).
    pub slow: Mutex<Vec<String>>,
    kept: Mutex<BTreeMap<Cloud, usize>>,
    /// Waits end here whatever their own deadline: lifecycles still running when the drive time
    /// is up finish quickly (their deletes still go out), so the run's length stays bounded.
    hard_stop: tokio::time::Instant,
}

/// Pods a lifecycle may leave in place per node (kept pods are checked at the end; more would
/// only add load).
const MAX_KEPT: usize = 2;
/// How long a lifecycle waits for a pod to reach a phase before it moves on.
const PHASE_WAIT: Duration = Duration::from_secs(90);

fn pod_manifest(name: &str, cloud: Cloud, exits: bool) -> anyhow::Result<Pod> {
    let mut container = serde_json::json!({
        "name": CONTAINER,
        "image": "nginx:1.25",
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
    });
    if exits {
        // What the container would do in a real cloud; the emulators run nothing, so the
        // driver makes it exit through the emulator's admin API.
        container["command"] = serde_json::json!(["sh", "-c", "sleep 1; exit 0"]);
    }
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": cloud.node()},
            // Every taint: the provider taint, and the NotReady/unreachable ones a killed shim
            // brings (else pods would be evicted while it is down).
            "tolerations": [{"operator": "Exists"}],
            "restartPolicy": if exits { "Never" } else { "Always" },
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
        },
    }))?)
}

/// The Deployment pinned to `cloud`'s node, with `replicas`.
pub fn deployment_manifest(cloud: Cloud, replicas: i32) -> anyhow::Result<Deployment> {
    let name = deployment_name(cloud);
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {DEPLOYMENT_LABEL: name}},
            "template": {
                "metadata": {"labels": {DEPLOYMENT_LABEL: name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": cloud.node()},
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": CONTAINER,
                        "image": "nginx:1.25",
                        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
                    }],
                },
            },
        },
    }))?)
}

/// Retries `f` for up to a minute: the API server may be restarting.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e.context(format!("{what}: still failing after a minute")));
            }
            Err(e) => {
                tracing::debug!("{what}: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

impl Driver {
    /// A driver over `nodes`.
    pub fn new(
        client: Client,
        clouds: Arc<Clouds>,
        nodes: Vec<Cloud>,
        hard_stop: tokio::time::Instant,
    ) -> Self {
        Self {
            client,
            clouds,
            nodes,
            expected: Mutex::new(BTreeMap::new()),
            ran: Mutex::new(BTreeMap::new()),
            slow: Mutex::new(Vec::new()),
            kept: Mutex::new(BTreeMap::new()),
            hard_stop,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn expect(&self, name: &str, e: Expected) {
        self.expected
            .lock()
            .insert(format!("{NAMESPACE}/{name}"), e);
    }

    /// Creates a pod; its UID. A create whose answer was lost to an API server restart is
    /// found by name on the retry (409).
    async fn create(&self, name: &str, cloud: Cloud, exits: bool) -> anyhow::Result<String> {
        let pod = pod_manifest(name, cloud, exits)?;
        let api = self.pods();
        retry(&format!("create {name}"), || {
            let api = api.clone();
            let pod = pod.clone();
            async move {
                match api.create(&PostParams::default(), &pod).await {
                    Ok(p) => Ok(p.metadata.uid.unwrap_or_default()),
                    Err(e) if is_status(&e, 409) => {
                        Ok(api.get(name).await?.metadata.uid.unwrap_or_default())
                    }
                    Err(e) => Err(e.into()),
                }
            }
        })
        .await
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let api = self.pods();
        retry(&format!("delete {name}"), || {
            let api = api.clone();
            async move {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_status(&e, 404) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        })
        .await
    }

    /// Waits until pod `name` is in `want` (or gone, for `None`); notes a timeout as slow.
    async fn wait(&self, name: &str, want: Option<&str>) -> bool {
        let api = self.pods();
        let deadline = (tokio::time::Instant::now() + PHASE_WAIT).min(self.hard_stop);
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match api.get_opt(name).await {
                Ok(None) if want.is_none() => return true,
                Ok(Some(p)) if want.is_some_and(|w| phase(&p) == w) => return true,
                Ok(Some(p)) => last = phase(&p).to_owned(),
                Ok(None) => last = "gone".into(),
                Err(e) => last = format!("{e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.slow.lock().push(format!(
            "{name}: not {} in time (last: {last})",
            want.unwrap_or("gone")
        ));
        false
    }

    fn keep(&self, cloud: Cloud, rng: &mut Rng, chance: f64) -> bool {
        let mut kept = self.kept.lock();
        let n = kept.entry(cloud).or_default();
        if rng.unit() < chance && *n < MAX_KEPT {
            *n += 1;
            true
        } else {
            false
        }
    }

    /// Runs lifecycle number `index`, all its choices from `rng`.
    pub async fn run(&self, index: usize, rng: &mut Rng) -> anyhow::Result<()> {
        let cloud = self.nodes[rng.below(self.nodes.len())];
        let roll = rng.unit();
        let kind = if roll < 0.25 {
            Lifecycle::Scale
        } else if roll < 0.50 {
            Lifecycle::Recreate
        } else if roll < 0.75 && cloud.can_exit() {
            Lifecycle::Exit
        } else {
            Lifecycle::Bare
        };
        *self.ran.lock().entry(kind).or_default() += 1;
        let name = format!("{}-{}-{index}", kind_prefix(kind), cloud.name());
        tracing::info!(index, ?kind, cloud = cloud.name(), "lifecycle");
        match kind {
            Lifecycle::Scale => {
                let replicas = i32::try_from(rng.below(4)).unwrap_or(1);
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
                let dname = deployment_name(cloud);
                let patch = serde_json::json!({"spec": {"replicas": replicas}});
                retry(&format!("scale {dname}"), || {
                    let api = api.clone();
                    let patch = patch.clone();
                    let dname = dname.clone();
                    async move {
                        api.patch(&dname, &PatchParams::default(), &Patch::Merge(&patch))
                            .await?;
                        Ok(())
                    }
                })
                .await?;
                tokio::time::sleep(Duration::from_millis(rng.below(4000) as u64)).await;
            }
            Lifecycle::Bare => {
                self.expect(&name, Expected::Running);
                self.create(&name, cloud, false).await?;
                self.wait(&name, Some("Running")).await;
                tokio::time::sleep(Duration::from_millis(rng.below(3000) as u64)).await;
                if !self.keep(cloud, rng, 0.1) {
                    self.expect(&name, Expected::Gone);
                    self.delete(&name).await?;
                    self.wait(&name, None).await;
                }
            }
            Lifecycle::Exit => {
                self.expect(&name, Expected::Succeeded);
                let uid = self.create(&name, cloud, true).await?;
                if self.wait(&name, Some("Running")).await {
                    let exited = retry(&format!("exit {name}"), || {
                        let uid = uid.clone();
                        async move {
                            self.clouds
                                .exit_container(cloud, &uid, CONTAINER)
                                .await
                                .context("exiting the container")
                        }
                    })
                    .await;
                    if let Err(e) = exited {
                        // The pod cannot end Succeeded then: delete it instead.
                        self.slow.lock().push(format!("{name}: {e:#}"));
                        self.expect(&name, Expected::Gone);
                        return self.delete(&name).await;
                    }
                    self.wait(&name, Some("Succeeded")).await;
                } else {
                    self.expect(&name, Expected::Gone);
                    return self.delete(&name).await;
                }
                if !self.keep(cloud, rng, 0.2) {
                    self.expect(&name, Expected::Gone);
                    self.delete(&name).await?;
                    self.wait(&name, None).await;
                }
            }
            Lifecycle::Recreate => {
                self.expect(&name, Expected::Running);
                self.create(&name, cloud, false).await?;
                self.wait(&name, Some("Running")).await;
                self.expect(&name, Expected::Gone);
                self.delete(&name).await?;
                if !self.wait(&name, None).await {
                    // Still there: a re-create would be refused (409), nothing to re-create.
                    return Ok(());
                }
                self.expect(&name, Expected::Running);
                self.create(&name, cloud, false).await?;
                self.wait(&name, Some("Running")).await;
                tokio::time::sleep(Duration::from_millis(rng.below(2000) as u64)).await;
                if !self.keep(cloud, rng, 0.1) {
                    self.expect(&name, Expected::Gone);
                    self.delete(&name).await?;
                    self.wait(&name, None).await;
                }
            }
        }
        Ok(())
    }
}

fn kind_prefix(kind: Lifecycle) -> &'static str {
    match kind {
        Lifecycle::Bare => "bare",
        Lifecycle::Exit => "exit",
        Lifecycle::Recreate => "re",
        Lifecycle::Scale => "scale",
    }
}
