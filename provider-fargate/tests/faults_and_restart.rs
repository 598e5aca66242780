//! Cloud faults and provider restarts, counted at a fault-injecting proxy in front of moto:
//! - with 20 % of ECS calls throttled or failing with 5xx, 50 creates and 50 deletes start exactly
//!   50 tasks and stop exactly 50;
//! - a provider restarted under 20 running pods issues no RunTask or StopTask and reports all 20.

mod support;

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use anyhow::ensure;
use podprovider_proto::v1::PodPhase;
use support::*;
use vk_testkit::{
    fault_proxy::{ECS_TARGET_PREFIX, FaultProxy},
    moto::Moto,
    provider_calls::{self, connect},
    provider_checks::numbered_pods,
    wait::eventually,
};

#[tokio::test]
async fn twenty_percent_faults_start_and_stop_exactly_fifty_tasks() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let upstream: SocketAddr = format!("127.0.0.1:{}", moto.port).parse()?;
    let proxy = FaultProxy::start(upstream, ECS_TARGET_PREFIX, 0.2, 42).await?;
    let (_provider, _, addr) = start_provider(&moto, &proxy.url(), dir.path()).await?;
    let c = connect(&addr).await?;
    let ecs = aws_sdk_ecs::Client::new(&sdk(&moto.endpoint).await);

    let pods = numbered_pods(NODE, 50, "t");
    provider_calls::create_all(&c, pods.clone()).await?;
    eventually(WAIT, "50 pods Running", || {
        let c = c.clone();
        async move {
            let pods = provider_calls::listed(&c, NODE).await?;
            let running = pods
                .iter()
                .filter(|p| p.phase == PodPhase::Running as i32)
                .count();
            Ok((running == 50).then_some(()))
        }
    })
    .await?;
    provider_calls::delete_all(&c, pods.into_iter().filter_map(|p| p.pod_ref)).await?;
    provider_calls::wait_none_listed(&c, NODE, WAIT).await?;

    let stopped: HashSet<String> = tasks(&ecs, "STOPPED").await?.into_iter().collect();
    ensure!(
        tasks(&ecs, "RUNNING").await?.is_empty(),
        "tasks left running"
    );
    ensure!(stopped.len() == 50, "{} tasks stopped", stopped.len());
    ensure!(
        proxy.forwarded("RunTask") == 50,
        "RunTask reached ECS {} times",
        proxy.forwarded("RunTask")
    );
    ensure!(
        proxy.forwarded("StopTask") == 50,
        "StopTask reached ECS {} times",
        proxy.forwarded("StopTask")
    );
    let injected =
        proxy.injected("RunTask") + proxy.injected("StopTask") + proxy.injected("DescribeTasks");
    ensure!(injected > 10, "only {injected} faults were injected");
    eventually(WAIT, "unused task definitions deregistered", || {
        let ecs = ecs.clone();
        async move { Ok(active_definitions(&ecs).await?.is_empty().then_some(())) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn restart_with_twenty_running_pods_runs_and_stops_nothing() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let upstream: SocketAddr = format!("127.0.0.1:{}", moto.port).parse()?;
    let proxy = FaultProxy::start(upstream, ECS_TARGET_PREFIX, 0.0, 7).await?;
    let (mut provider, _, addr) = start_provider(&moto, &proxy.url(), dir.path()).await?;
    let c = connect(&addr).await?;
    provider_calls::create_all(&c, numbered_pods(NODE, 20, "r")).await?;
    eventually(WAIT, "20 pods Running", || {
        let c = c.clone();
        async move {
            let pods = provider_calls::listed(&c, NODE).await?;
            Ok((pods
                .iter()
                .filter(|p| p.phase == PodPhase::Running as i32)
                .count()
                == 20)
                .then_some(()))
        }
    })
    .await?;
    let status = provider.stop(Duration::from_secs(10)).await?;
    ensure!(status.success(), "provider exited with {status}");

    proxy.reset_counts();
    let (_provider, _, addr) = start_provider(&moto, &proxy.url(), dir.path()).await?;
    let c = connect(&addr).await?;
    // State is rebuilt before the provider serves: the first answer is complete. The shim's
    // retried create of a running pod is answered from ECS, not a new task.
    provider_calls::check_rebuilt_then_create(&c, NODE, 20, pod("r-3", "r-uid-3")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(proxy.forwarded("RunTask") == 0, "RunTask after restart");
    ensure!(proxy.forwarded("StopTask") == 0, "StopTask after restart");
    ensure!(
        proxy.forwarded("DescribeTasks") > 0,
        "the status loop did not run"
    );
    Ok(())
}
