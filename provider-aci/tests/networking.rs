//! Pod IPs against the ACI emulator:
//! - on a VNet-mode provider (`--subnet-ids`) a pod that declares no ports is Running with a
//!   private IP, seen through GetPod and WatchPods;
//! - without a subnet a pod gets no IP and a `NoPodIP` warning event, ports or not: no pod is
//!   put on a public IP unless its annotation asks, and then it is.

mod support;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use podprovider_proto::v1::{
    ContainerPort, CreatePodRequest, Pod, PodEvent, PodPhase, PodStatus, watch_pods_event::Event,
};
use support::*;
use tokio_stream::StreamExt;
use vk_testkit::{
    aci_emulator::AciEmulatorOptions,
    provider_calls::{self, Client, connect},
};

type Events = tonic::Streaming<podprovider_proto::v1::WatchPodsEvent>;

const SUBNET: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/vk-rg/providers/Microsoft.Network/virtualNetworks/vk-vnet/subnets/aci";

async fn watch(c: &Client) -> anyhow::Result<Events> {
    provider_calls::watch(c, NODE).await
}

async fn running(c: &Client, p: &Pod) -> anyhow::Result<PodStatus> {
    provider_calls::status_until(c, &p.pod_ref, "pod Running", |s| {
        s.phase == PodPhase::Running as i32
    })
    .await
}

/// Reads `events` until a status of `uid` Running with an IP (`Ok(status)`), or `deadline`.
async fn watched_ip(events: &mut Events, uid: &str) -> anyhow::Result<PodStatus> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .context("no Running status with an IP on WatchPods")?;
        match next.context("WatchPods ended")??.event {
            Some(Event::Status(s))
                if s.pod_ref.as_ref().is_some_and(|r| r.uid == uid)
                    && s.phase == PodPhase::Running as i32
                    && !s.pod_ip.is_empty() =>
            {
                return Ok(s);
            }
            _ => {}
        }
    }
}

/// The pod events of `uid` seen on `events` within `wait`.
async fn pod_events(events: &mut Events, uid: &str, wait: Duration) -> Vec<PodEvent> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout_at(deadline, events.next()).await {
        if let Some(Event::PodEvent(e)) = e.event
            && e.pod_ref.as_ref().is_some_and(|r| r.uid == uid)
        {
            out.push(e);
        }
    }
    out
}

fn with_port(mut p: Pod, port: i32) -> Pod {
    p.containers[0].ports = vec![ContainerPort {
        name: "http".into(),
        container_port: port,
        protocol: "TCP".into(),
    }];
    p
}

#[tokio::test]
async fn vnet_pod_without_ports_runs_with_a_private_ip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, _provider, _, addr) =
        start_with_emulator(dir.path(), opts, &["--subnet-ids", SUBNET]).await?;
    let c = connect(&addr).await?;
    let mut events = watch(&c).await?;
    let p = pod("quiet", "quiet-uid");
    let mut cc = c.clone();
    cc.create_pod(CreatePodRequest {
        pod: Some(p.clone()),
    })
    .await?;

    let watched = watched_ip(&mut events, "quiet-uid").await?;
    let got = running(&c, &p).await?;
    for s in [&watched, &got] {
        ensure!(s.pod_ip.starts_with("10."), "not a private IP: {s:?}");
        ensure!(s.pod_ips == vec![s.pod_ip.clone()], "{s:?}");
    }
    ensure!(got.pod_ip == watched.pod_ip);

    let name = cloud_name(&got)?;
    let stored = emu.stored_group(&name).await?.context("group not stored")?;
    let ip = &stored["properties"]["ipAddress"];
    ensure!(ip["type"] == "Private", "{ip}");
    ensure!(ip["ports"][0]["port"] == 80, "placeholder port: {ip}");
    ensure!(
        stored["properties"]["subnetIds"][0]["id"] == SUBNET,
        "{stored}"
    );
    Ok(())
}

#[tokio::test]
async fn without_a_subnet_pods_get_no_ip_and_a_warning_unless_they_ask_for_a_public_one()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, _provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let c = connect(&addr).await?;

    // No ports, and ports without the annotation: Running, no IP, a warning saying so.
    for (p, uid) in [
        (pod("bare", "bare-uid"), "bare-uid"),
        (with_port(pod("web", "web-uid"), 8080), "web-uid"),
    ] {
        let mut events = watch(&c).await?;
        let mut cc = c.clone();
        cc.create_pod(CreatePodRequest {
            pod: Some(p.clone()),
        })
        .await?;
        let got = running(&c, &p).await?;
        ensure!(got.pod_ip.is_empty() && got.pod_ips.is_empty(), "{got:?}");
        let name = cloud_name(&got)?;
        let stored = emu.stored_group(&name).await?.context("group not stored")?;
        ensure!(
            stored["properties"]["ipAddress"].is_null(),
            "{uid}: an IP was asked for: {stored}"
        );
        let warned = pod_events(&mut events, uid, Duration::from_secs(2)).await;
        if !warned
            .iter()
            .any(|e| e.warning && e.reason == "NoPodIP" && e.message.contains("no IP"))
        {
            bail!("{uid}: no NoPodIP warning in {warned:?}");
        }
    }

    // The annotation asks for a public IP: it gets one, with its ports.
    let mut p = with_port(pod("public", "public-uid"), 8080);
    p.annotations
        .insert("virtual-kubelet.io/aci-public-ip".into(), "true".into());
    let mut cc = c.clone();
    cc.create_pod(CreatePodRequest {
        pod: Some(p.clone()),
    })
    .await?;
    let got = running(&c, &p).await?;
    ensure!(
        !got.pod_ip.is_empty() && !got.pod_ip.starts_with("10."),
        "{got:?}"
    );
    let stored = emu
        .stored_group(&cloud_name(&got)?)
        .await?
        .context("group not stored")?;
    let ip = &stored["properties"]["ipAddress"];
    ensure!(
        ip["type"] == "Public" && ip["ports"][0]["port"] == 8080,
        "{ip}"
    );
    Ok(())
}

/// The group name from a status's cloud id (`.../containerGroups/<name>`).
fn cloud_name(s: &PodStatus) -> anyhow::Result<String> {
    s.cloud_id
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .context("status without a cloud id")
}
