//! The three clouds of a soak, each behind a fault-injecting proxy, and what they hold now read
//! from their own state (the emulators' admin API, moto's ECS API called directly, not through the
//! proxy).

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use provider_common::naming::{TAG_NODE, TAG_UID};
use serde::Serialize;

use super::check::Workload;
use crate::{
    aci_emulator::{AciEmulator, AciEmulatorOptions},
    eci_emulator::{EciEmulator, EciEmulatorOptions},
    fault_proxy::{FaultConfig, FaultKind, FaultProxy, Flavor},
    moto::Moto,
};

/// The ECS cluster and log group the Fargate provider uses.
pub const CLUSTER: &str = "vk-soak";
/// See [`CLUSTER`].
pub const LOG_GROUP: &str = "vk-soak-logs";

/// One of the three clouds (and its provider, shim and virtual node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cloud {
    /// Alibaba Cloud ECI (eci-emulator, provider-eci).
    Eci,
    /// Azure Container Instances (aci-emulator, provider-aci).
    Aci,
    /// AWS ECS on Fargate (moto, provider-fargate).
    Fargate,
}

impl Cloud {
    /// All three, in a fixed order (seeded choices index into it).
    pub const ALL: [Cloud; 3] = [Cloud::Eci, Cloud::Aci, Cloud::Fargate];

    /// `eci`, `aci`, `fargate`.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Eci => "eci",
            Cloud::Aci => "aci",
            Cloud::Fargate => "fargate",
        }
    }

    /// The virtual node this cloud's shim registers.
    pub fn node(self) -> String {
        format!("vk-soak-{}", self.name())
    }

    /// The provider binary.
    pub fn provider_bin(self) -> String {
        format!("provider-{}", self.name())
    }

    /// Whether the driver can make a container exit in this cloud (moto has no such knob: its
    /// tasks run until stopped).
    pub fn can_exit(self) -> bool {
        self != Cloud::Fargate
    }

    /// Parses `eci`, `aci` or `fargate`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "eci" => Ok(Cloud::Eci),
            "aci" => Ok(Cloud::Aci),
            "fargate" => Ok(Cloud::Fargate),
            other => bail!("unknown provider {other:?}: eci, aci or fargate"),
        }
    }
}

/// The running clouds and their proxies.
#[derive(Default)]
pub struct Clouds {
    /// The ECI emulator, if the soak runs ECI.
    pub eci: Option<EciEmulator>,
    /// The ACI emulator, if the soak runs ACI.
    pub aci: Option<AciEmulator>,
    /// moto, if the soak runs Fargate.
    pub moto: Option<Moto>,
    /// The fault proxy in front of each cloud.
    pub proxies: BTreeMap<Cloud, FaultProxy>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Clouds {
    /// Starts `clouds`, each behind a proxy injecting nothing yet; `seed` seeds the proxies.
    pub async fn start(clouds: &[Cloud], log_dir: &Path, seed: u64) -> anyhow::Result<Self> {
        let mut out = Self::default();
        for (i, cloud) in clouds.iter().enumerate() {
            let (port, flavor, path_contains) = match cloud {
                Cloud::Eci => {
                    let emu = EciEmulator::start(log_dir, EciEmulatorOptions::default()).await?;
                    let port = emu.port;
                    out.eci = Some(emu);
                    (port, Flavor::Aliyun, "")
                }
                Cloud::Aci => {
                    let emu = AciEmulator::start(log_dir, AciEmulatorOptions::default()).await?;
                    let port = emu.port;
                    out.aci = Some(emu);
                    // ARM only: the token endpoint stays reachable (it is not the cloud's API).
                    (port, Flavor::Azure, "/subscriptions/")
                }
                Cloud::Fargate => {
                    let moto = Moto::start(log_dir, CLUSTER, LOG_GROUP).await?;
                    let port = moto.port;
                    out.moto = Some(moto);
                    (port, Flavor::Aws, "")
                }
            };
            let proxy = FaultProxy::start_with(
                loopback(port),
                FaultConfig {
                    flavor,
                    rate: 0.0,
                    kinds: FaultKind::ALL.to_vec(),
                    path_contains: path_contains.to_owned(),
                    max_delay: Duration::from_secs(3),
                    seed: seed.wrapping_add(1 + i as u64),
                },
            )
            .await?;
            out.proxies.insert(*cloud, proxy);
        }
        Ok(out)
    }

    /// Sets every proxy's fault rate.
    pub fn set_fault_rate(&self, rate: f64) {
        for p in self.proxies.values() {
            p.set_rate(rate);
        }
    }

    /// The proxy URL `cloud`'s provider talks to.
    pub fn proxy_url(&self, cloud: Cloud) -> anyhow::Result<String> {
        Ok(self
            .proxies
            .get(&cloud)
            .with_context(|| format!("no proxy for {}", cloud.name()))?
            .url())
    }

    /// Every workload `cloud` holds now.
    pub async fn workloads(&self, cloud: Cloud) -> anyhow::Result<Vec<Workload>> {
        let name = cloud.name().to_owned();
        match cloud {
            Cloud::Eci => {
                let emu = self.eci.as_ref().context("no ECI emulator")?;
                Ok(emu
                    .live_groups()
                    .await?
                    .into_iter()
                    .map(|g| Workload {
                        cloud: name.clone(),
                        pod_uid: g.tag(TAG_UID).map(str::to_owned),
                        node: g.tag(TAG_NODE).map(str::to_owned),
                        id: format!(
                            "{} ({}, {})",
                            g.container_group_name, g.container_group_id, g.status
                        ),
                    })
                    .collect())
            }
            Cloud::Aci => {
                let emu = self.aci.as_ref().context("no ACI emulator")?;
                Ok(emu
                    .live_groups()
                    .await?
                    .into_iter()
                    .map(|g| Workload {
                        cloud: name.clone(),
                        pod_uid: g.tags.get(TAG_UID).cloned(),
                        node: g.tags.get(TAG_NODE).cloned(),
                        id: g.name,
                    })
                    .collect())
            }
            Cloud::Fargate => {
                let moto = self.moto.as_ref().context("no moto")?;
                fargate_tasks(moto.port, "RUNNING").await
            }
        }
    }

    /// Every workload `cloud` ever created (those it holds now and those removed), each under an
    /// id that does not change when it is removed: what counts a duplicate that the provider
    /// cleaned up before the final look.
    pub async fn created(&self, cloud: Cloud) -> anyhow::Result<Vec<Workload>> {
        let name = cloud.name().to_owned();
        match cloud {
            Cloud::Eci => {
                let emu = self.eci.as_ref().context("no ECI emulator")?;
                let mut groups = emu.live_groups().await?;
                groups.extend(emu.deletions().await?);
                Ok(groups
                    .into_iter()
                    .map(|g| Workload {
                        cloud: name.clone(),
                        pod_uid: g.tag(TAG_UID).map(str::to_owned),
                        node: g.tag(TAG_NODE).map(str::to_owned),
                        id: format!("{} ({})", g.container_group_name, g.container_group_id),
                    })
                    .collect())
            }
            Cloud::Aci => {
                // ARM names a group by its name: a re-PUT of a name is the same group.
                let emu = self.aci.as_ref().context("no ACI emulator")?;
                let mut groups = emu.live_groups().await?;
                groups.extend(emu.deleted_groups().await?);
                Ok(groups
                    .into_iter()
                    .map(|g| Workload {
                        cloud: name.clone(),
                        pod_uid: g.tags.get(TAG_UID).cloned(),
                        node: g.tags.get(TAG_NODE).cloned(),
                        id: g.name,
                    })
                    .collect())
            }
            Cloud::Fargate => {
                // moto keeps stopped tasks.
                let moto = self.moto.as_ref().context("no moto")?;
                let mut tasks = fargate_tasks(moto.port, "RUNNING").await?;
                tasks.extend(fargate_tasks(moto.port, "STOPPED").await?);
                Ok(tasks)
            }
        }
    }

    /// Makes the container `container` of the pod with `uid` exit 0 in `cloud` (ECI, ACI).
    pub async fn exit_container(
        &self,
        cloud: Cloud,
        uid: &str,
        container: &str,
    ) -> anyhow::Result<()> {
        let group = self
            .workloads(cloud)
            .await?
            .into_iter()
            .find(|w| w.pod_uid.as_deref() == Some(uid))
            .with_context(|| format!("no {} workload for pod uid {uid}", cloud.name()))?;
        match cloud {
            Cloud::Eci => {
                // `id` is "name (id, status)": the name is enough for the admin API.
                let name = group.id.split(' ').next().unwrap_or_default();
                self.eci
                    .as_ref()
                    .context("no ECI emulator")?
                    .exit_container(name, container, 0)
                    .await
            }
            Cloud::Aci => {
                self.aci
                    .as_ref()
                    .context("no ACI emulator")?
                    .exit_container(&group.id, container, 0)
                    .await
            }
            Cloud::Fargate => bail!("moto tasks cannot exit by themselves"),
        }
    }
}

/// One awsJson ECS call straight to moto (not through the proxy).
async fn ecs_call(
    port: u16,
    op: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let stream = tokio::net::TcpStream::connect(loopback(port))
        .await
        .context("connecting to moto")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::post("/")
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/x-amz-json-1.1")
        .header(
            "x-amz-target",
            format!("AmazonEC2ContainerServiceV20141113.{op}"),
        )
        // moto takes the region from the credential scope; it checks no signature.
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ecs/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .context("moto call timed out")??;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{op}: {status} {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// The tasks moto holds with desired status `desired` (`RUNNING`, `STOPPED`), with their tags.
async fn fargate_tasks(port: u16, desired: &str) -> anyhow::Result<Vec<Workload>> {
    let mut arns: Vec<serde_json::Value> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = serde_json::json!({"cluster": CLUSTER, "desiredStatus": desired});
        if let Some(t) = &token {
            body["nextToken"] = t.clone().into();
        }
        let page = ecs_call(port, "ListTasks", body).await?;
        arns.extend(page["taskArns"].as_array().cloned().unwrap_or_default());
        token = page["nextToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let mut out = Vec::new();
    // DescribeTasks takes at most 100 tasks.
    for chunk in arns.chunks(100) {
        let page = ecs_call(
            port,
            "DescribeTasks",
            serde_json::json!({"cluster": CLUSTER, "tasks": chunk, "include": ["TAGS"]}),
        )
        .await?;
        for t in page["tasks"].as_array().cloned().unwrap_or_default() {
            let tag = |k: &str| {
                t["tags"].as_array().and_then(|tags| {
                    tags.iter()
                        .find(|x| x["key"] == k)
                        .and_then(|x| x["value"].as_str().map(str::to_owned))
                })
            };
            out.push(Workload {
                cloud: Cloud::Fargate.name().to_owned(),
                id: t["taskArn"].as_str().unwrap_or_default().to_owned(),
                pod_uid: tag(TAG_UID),
                node: tag(TAG_NODE),
            });
        }
    }
    Ok(out)
}
