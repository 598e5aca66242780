//! Issue 18's lifecycle and usage figures, against moto through the real binary:
//! - a pod whose task stopped while the provider was down is reported after the restart with its
//!   terminal status; pods deleted before the restart (one stopped by the provider, one that had
//!   stopped by itself first) are not, nor is a finished pod whose task definition was deleted
//!   (and it does not stop the rebuild);
//! - the pod's restartPolicy, exec liveness probe and grace period reach the task definition as
//!   `restartPolicy`, `healthCheck` and `stopTimeout`, and a healthy container is ready;
//! - the Fargate Spot and task role annotations reach RunTask (capacity provider strategy,
//!   `overrides.taskRoleArn`);
//! - GetStats answers the Container Insights figures put into moto's CloudWatch.

mod support;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use aws_sdk_ecs::types::TaskField;
use podprovider_proto::v1::{
    CreatePodRequest, DeletePodRequest, ExecAction, Pod, PodPhase, PodRef, PodStatus, Probe,
    RestartPolicy, probe::Handler,
};
use support::*;
use vk_testkit::{
    moto::Moto,
    provider_calls,
    provider_calls::{Client, connect},
    wait::eventually,
};

async fn listed(c: &mut Client) -> anyhow::Result<Vec<PodStatus>> {
    provider_calls::listed(c, NODE).await
}

fn named<'a>(pods: &'a [PodStatus], name: &str) -> Option<&'a PodStatus> {
    pods.iter()
        .find(|p| p.pod_ref.as_ref().is_some_and(|r| r.name == name))
}

async fn create(c: &mut Client, p: Pod) -> anyhow::Result<()> {
    c.create_pod(CreatePodRequest { pod: Some(p) }).await?;
    Ok(())
}

async fn delete(c: &mut Client, r: Option<PodRef>) -> anyhow::Result<()> {
    c.delete_pod(DeletePodRequest {
        pod_ref: r,
        grace_period_seconds: None,
    })
    .await?;
    Ok(())
}

/// Waits until every pod named in `names` is Running; returns their task ARNs.
async fn running(c: &Client, names: &[&str]) -> anyhow::Result<Vec<String>> {
    eventually(WAIT, "pods Running", || {
        let mut c = c.clone();
        async move {
            let pods = listed(&mut c).await?;
            let arns: Option<Vec<String>> = names
                .iter()
                .map(|n| {
                    named(&pods, n)
                        .filter(|p| p.phase == PodPhase::Running as i32)
                        .map(|p| p.cloud_id.clone())
                })
                .collect();
            Ok(arns)
        }
    })
    .await
}

#[tokio::test]
async fn finished_pods_are_reported_after_a_restart_and_deleted_ones_are_not() -> anyhow::Result<()>
{
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let ecs = aws_sdk_ecs::Client::new(&sdk(&moto.endpoint).await);
    let (mut provider, _, addr) = start_provider(&moto, &moto.endpoint, dir.path()).await?;
    let mut c = connect(&addr).await?;
    for name in ["done", "live", "removed", "ended-removed"] {
        create(&mut c, pod(name, &format!("{name}-uid"))).await?;
    }
    // Another shape, so a task definition of its own.
    let mut orphan = pod("orphan", "orphan-uid");
    orphan.containers[0].image = "busybox:1.36".into();
    create(&mut c, orphan).await?;
    let arns = running(&c, &["done", "live", "removed", "ended-removed", "orphan"]).await?;

    // Deleted through the provider while it runs: its task is stopped with the provider's reason.
    delete(&mut c, pod("removed", "removed-uid").pod_ref).await?;
    // Stopped by itself (as an exiting container stops a task), seen, then deleted: the task
    // keeps its own reason, so only the provider's tag says the pod is gone.
    ecs.stop_task()
        .cluster(CLUSTER)
        .task(&arns[3])
        .reason("Essential container in task exited")
        .send()
        .await?;
    eventually(WAIT, "ended-removed terminal", || {
        let mut c = c.clone();
        async move {
            let pods = listed(&mut c).await?;
            Ok(named(&pods, "ended-removed")
                .is_some_and(|p| {
                    p.phase == PodPhase::Succeeded as i32 || p.phase == PodPhase::Failed as i32
                })
                .then_some(()))
        }
    })
    .await?;
    delete(&mut c, pod("ended-removed", "ended-removed-uid").pod_ref).await?;
    eventually(WAIT, "deleted pods gone", || {
        let mut c = c.clone();
        async move {
            let pods = listed(&mut c).await?;
            Ok(
                (named(&pods, "removed").is_none() && named(&pods, "ended-removed").is_none())
                    .then_some(()),
            )
        }
    })
    .await?;
    let status = provider.stop(Duration::from_secs(10)).await?;
    ensure!(status.success(), "provider exited with {status}");

    // While the provider is down, "done" finishes; so does "orphan", whose task definition an
    // operator then deregisters and deletes (DeleteTaskDefinitions).
    for arn in [&arns[0], &arns[4]] {
        ecs.stop_task()
            .cluster(CLUSTER)
            .task(arn)
            .reason("Essential container in task exited")
            .send()
            .await?;
    }
    let orphan_def = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&arns[4])
        .send()
        .await?
        .tasks()
        .first()
        .and_then(|t| t.task_definition_arn().map(str::to_owned))
        .context("orphan's definition")?;
    ecs.deregister_task_definition()
        .task_definition(&orphan_def)
        .send()
        .await?;
    let deleted = ecs
        .delete_task_definitions()
        .task_definitions(&orphan_def)
        .send()
        .await?;
    ensure!(deleted.failures().is_empty(), "{:?}", deleted.failures());

    let (_provider, _, addr) = start_provider(&moto, &moto.endpoint, dir.path()).await?;
    let mut c = connect(&addr).await?;
    // State is rebuilt before the provider serves: the first answer is complete.
    let pods = listed(&mut c).await?;
    let done = named(&pods, "done").context("the finished pod is not reported")?;
    ensure!(
        done.phase == PodPhase::Succeeded as i32 || done.phase == PodPhase::Failed as i32,
        "finished pod: {done:?}"
    );
    ensure!(
        done.message == "Essential container in task exited" && done.cloud_id == arns[0],
        "finished pod: {done:?}"
    );
    ensure!(
        named(&pods, "live").is_some_and(|p| p.phase == PodPhase::Running as i32),
        "{pods:?}"
    );
    for gone in ["removed", "ended-removed", "orphan"] {
        ensure!(
            named(&pods, gone).is_none(),
            "deleted pod {gone} reported again: {pods:?}"
        );
    }
    ensure!(pods.len() == 2, "{pods:?}");
    // Later polls keep it (it is not listed as RUNNING any more), until it is deleted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(named(&listed(&mut c).await?, "done").is_some());
    delete(&mut c, pod("done", "done-uid").pod_ref).await?;
    eventually(WAIT, "done gone", || {
        let mut c = c.clone();
        async move {
            Ok(named(&listed(&mut c).await?, "done")
                .is_none()
                .then_some(()))
        }
    })
    .await?;
    Ok(())
}

fn probed_pod() -> Pod {
    let mut p = pod("probed", "probed-uid");
    p.restart_policy = RestartPolicy::OnFailure as i32;
    p.termination_grace_period_seconds = Some(45);
    p.containers[0].liveness_probe = Some(Probe {
        handler: Some(Handler::Exec(ExecAction {
            command: vec!["cat".into(), "/tmp/healthy".into()],
        })),
        initial_delay_seconds: 5,
        timeout_seconds: 3,
        period_seconds: 20,
        success_threshold: 1,
        failure_threshold: 4,
    });
    p
}

#[tokio::test]
async fn restart_policy_probe_grace_and_annotations_reach_ecs() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let ecs = aws_sdk_ecs::Client::new(&sdk(&moto.endpoint).await);
    // Fargate Spot needs its capacity provider on the cluster (ECS refuses the strategy
    // otherwise; moto does not check, but the set-up is the documented one).
    ecs.put_cluster_capacity_providers()
        .cluster(CLUSTER)
        .capacity_providers("FARGATE")
        .capacity_providers("FARGATE_SPOT")
        .set_default_capacity_provider_strategy(Some(Vec::new()))
        .send()
        .await
        .context("PutClusterCapacityProviders")?;
    let (_provider, _, addr) = start_provider(&moto, &moto.endpoint, dir.path()).await?;
    let mut c = connect(&addr).await?;

    let role = "arn:aws:iam::123456789012:role/pod-role";
    let mut spot = pod("spot", "spot-uid");
    spot.annotations
        .insert("virtual-kubelet.io/fargate-spot".into(), "true".into());
    spot.annotations
        .insert("iam.amazonaws.com/role".into(), role.into());
    create(&mut c, probed_pod()).await?;
    create(&mut c, spot).await?;
    create(&mut c, pod("plain", "plain-uid")).await?;
    let arns = running(&c, &["probed", "spot", "plain"]).await?;

    let described = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .set_tasks(Some(arns.clone()))
        .include(TaskField::Tags)
        .send()
        .await?;
    let task = |arn: &str| {
        described
            .tasks()
            .iter()
            .find(|t| t.task_arn() == Some(arn))
            .cloned()
            .context("task not described")
    };

    // The probed pod's definition.
    let probed = task(&arns[0])?;
    let def = ecs
        .describe_task_definition()
        .task_definition(probed.task_definition_arn().unwrap_or_default())
        .send()
        .await?;
    let web = def
        .task_definition()
        .and_then(|d| {
            d.container_definitions()
                .iter()
                .find(|c| c.name() == Some("web"))
        })
        .context("container web")?;
    let restart = web.restart_policy().context("no restartPolicy")?;
    ensure!(
        restart.enabled()
            && restart.ignored_exit_codes() == [0]
            && restart.restart_attempt_period() == Some(60),
        "restartPolicy {restart:?}"
    );
    let hc = web.health_check().context("no healthCheck")?;
    ensure!(
        hc.command() == ["CMD", "cat", "/tmp/healthy"]
            && (hc.interval(), hc.timeout(), hc.retries(), hc.start_period())
                == (Some(20), Some(3), Some(4), Some(5)),
        "healthCheck {hc:?}"
    );
    ensure!(
        web.stop_timeout() == Some(45),
        "stopTimeout {:?}",
        web.stop_timeout()
    );
    // moto reports every container HEALTHY: the checked container is ready.
    let pods = listed(&mut c).await?;
    let probed_status = named(&pods, "probed").context("probed")?;
    ensure!(
        probed_status.container_statuses.iter().all(|s| s.ready),
        "{probed_status:?}"
    );

    // Spot and the task role: RunTask's capacity provider strategy and overrides.
    let spot = task(&arns[1])?;
    ensure!(
        spot.capacity_provider_name() == Some("FARGATE_SPOT"),
        "capacity provider {:?}",
        spot.capacity_provider_name()
    );
    ensure!(
        spot.overrides().and_then(|o| o.task_role_arn()) == Some(role),
        "overrides {:?}",
        spot.overrides()
    );
    let plain = task(&arns[2])?;
    ensure!(
        plain.launch_type().map(|l| l.as_str()) == Some("FARGATE")
            && plain.capacity_provider_name().is_none(),
        "plain task {plain:?}"
    );
    ensure!(plain.overrides().and_then(|o| o.task_role_arn()).is_none());
    // The role is per task: both pods of the same shape share one definition.
    ensure!(
        spot.task_definition_arn() == plain.task_definition_arn(),
        "{:?} vs {:?}",
        spot.task_definition_arn(),
        plain.task_definition_arn()
    );
    Ok(())
}

#[tokio::test]
async fn get_stats_answers_container_insights_figures() -> anyhow::Result<()> {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let config = sdk(&moto.endpoint).await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let cw = aws_sdk_cloudwatch::Client::new(&config);
    let (_provider, _, addr) =
        start_provider_with(&moto, &moto.endpoint, dir.path(), &["--container-insights"]).await?;
    let mut c = connect(&addr).await?;
    let mut two = pod("measured", "measured-uid");
    let mut side = two.containers[0].clone();
    side.name = "side".into();
    two.containers.push(side);
    create(&mut c, two).await?;
    create(&mut c, pod("quiet", "quiet-uid")).await?;
    let arns = running(&c, &["measured", "quiet"]).await?;
    let task = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&arns[0])
        .send()
        .await?
        .tasks()
        .first()
        .cloned()
        .context("measured task")?;
    let task_id = arns[0].rsplit('/').next().unwrap_or_default().to_owned();
    let family = task
        .task_definition_arn()
        .and_then(|a| a.rsplit_once("task-definition/"))
        .and_then(|(_, f)| f.rsplit_once(':'))
        .map(|(f, _)| f.to_owned())
        .context("family")?;

    // What Container Insights would publish for the task's two containers: 512 and 102.4 CPU
    // units (0.5 and 0.1 core), 64 and 32 MiB.
    let now = aws_sdk_cloudwatch::primitives::DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            .try_into()?,
    );
    let mut data = Vec::new();
    for (container, cpu, mib) in [("web", 512.0, 64.0), ("side", 102.4, 32.0)] {
        for (metric, value, unit) in [
            ("ContainerCpuUtilized", cpu, StandardUnit::None),
            ("ContainerMemoryUtilized", mib, StandardUnit::Megabytes),
        ] {
            let mut d = MetricDatum::builder()
                .metric_name(metric)
                .value(value)
                .unit(unit)
                .timestamp(now);
            for (name, value) in [
                ("ClusterName", CLUSTER),
                ("TaskDefinitionFamily", family.as_str()),
                ("TaskId", task_id.as_str()),
                ("ContainerName", container),
            ] {
                d = d.dimensions(Dimension::builder().name(name).value(value).build());
            }
            data.push(d.build());
        }
    }
    cw.put_metric_data()
        .namespace("ECS/ContainerInsights")
        .set_metric_data(Some(data))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("PutMetricData: {e:?}"))?;

    let stats = provider_calls::stats(&c, NODE).await?;
    // The quiet pod has no figures and is left out.
    let [pod] = stats.as_slice() else {
        bail!("one pod with figures expected: {stats:?}");
    };
    ensure!(
        pod.pod_ref.as_ref().map(|r| r.name.as_str()) == Some("measured"),
        "{pod:?}"
    );
    let cpu =
        |c: &podprovider_proto::v1::ContainerStats| c.cpu.as_ref().and_then(|u| u.usage_nano_cores);
    let mem = |c: &podprovider_proto::v1::ContainerStats| {
        c.memory.as_ref().and_then(|m| m.working_set_bytes)
    };
    let by: Vec<(&str, Option<u64>, Option<u64>)> = pod
        .containers
        .iter()
        .map(|c| (c.name.as_str(), cpu(c), mem(c)))
        .collect();
    ensure!(
        by == [
            ("web", Some(500_000_000), Some(64 << 20)),
            ("side", Some(100_000_000), Some(32 << 20)),
        ],
        "containers {by:?}"
    );
    ensure!(
        pod.cpu.as_ref().and_then(|u| u.usage_nano_cores) == Some(600_000_000)
            && pod.memory.as_ref().and_then(|m| m.working_set_bytes) == Some(96 << 20),
        "pod {pod:?}"
    );
    Ok(())
}
