//! RunTask failures as the ECS docs describe them, scripted at `vk_testkit::fault_proxy` in front
//! of moto, through the real binary:
//! - "Capacity is unavailable at this time" is retried with backoff and told to the user as a
//!   warning pod event, and the pod starts once capacity is back;
//! - "You've reached the limit on the number of tasks you can run concurrently" is a quota:
//!   RESOURCE_EXHAUSTED, not retried, not INVALID_ARGUMENT;
//! - a `ConflictException` (the client token already started a task, named in `resourceIds`)
//!   adopts that task instead of failing or running another.

mod support;

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, ensure};
use podprovider_proto::{
    PodProviderClient,
    v1::{CreatePodRequest, DeletePodRequest, watch_pods_event::Event},
};
use support::*;
use vk_testkit::{
    fault_proxy::{ECS_TARGET_PREFIX, FaultProxy},
    moto::Moto,
    provider_calls,
};

const CAPACITY: &str = "Capacity is unavailable at this time. Please try again later or in a different availability zone";
const QUOTA: &str = "You've reached the limit on the number of tasks you can run concurrently";

fn failed_run(reason: &str) -> String {
    serde_json::json!({"tasks": [], "failures": [{"reason": reason}]}).to_string()
}

#[tokio::test]
async fn capacity_is_retried_and_told_quota_is_exhausted_and_a_conflict_adopts_the_task()
-> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let upstream: SocketAddr = format!("127.0.0.1:{}", moto.port).parse()?;
    let proxy = FaultProxy::start(upstream, ECS_TARGET_PREFIX, 0.0, 1).await?;
    let (_provider, _, addr) = start_provider(&moto, &proxy.url(), dir.path()).await?;
    let mut c = PodProviderClient::connect(format!("http://{addr}")).await?;
    let ecs = aws_sdk_ecs::Client::new(&sdk(&moto.endpoint).await);
    let mut watch = provider_calls::watch(&c, NODE).await?;

    // Capacity: two refusals, then moto's answer.
    proxy.respond_next("RunTask", 200, &failed_run(CAPACITY));
    proxy.respond_next("RunTask", 200, &failed_run(CAPACITY));
    c.create_pod(CreatePodRequest {
        pod: Some(pod("cap", "uid-cap")),
    })
    .await
    .context("a create through two capacity refusals")?;
    ensure!(proxy.injected("RunTask") == 2 && proxy.forwarded("RunTask") == 1);
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = watch.message().await? {
            if let Some(Event::PodEvent(e)) = ev.event
                && e.reason == "FargateCapacityUnavailable"
            {
                return anyhow::Ok(e);
            }
        }
        anyhow::bail!("watch ended")
    })
    .await
    .context("no capacity event")??;
    ensure!(
        event.warning && event.message.contains("Capacity is unavailable"),
        "{event:?}"
    );
    ensure!(
        event.pod_ref.as_ref().map(|r| r.uid.as_str()) == Some("uid-cap"),
        "{event:?}"
    );

    // Quota: not retried, RESOURCE_EXHAUSTED with the reason.
    proxy.reset_counts();
    proxy.respond_next("RunTask", 200, &failed_run(QUOTA));
    let err = c
        .create_pod(CreatePodRequest {
            pod: Some(pod("quota", "uid-quota")),
        })
        .await
        .expect_err("quota");
    ensure!(
        err.code() == tonic::Code::ResourceExhausted && err.message().contains(QUOTA),
        "{err:?}"
    );
    ensure!(proxy.injected("RunTask") == 1 && proxy.forwarded("RunTask") == 0);

    // Conflict: a task already started for the token (here: run directly) is adopted.
    let def = ecs
        .register_task_definition()
        .family("elsewhere")
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .cpu("256")
        .memory("512")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("web")
                .image("nginx:1.25")
                .memory(512)
                .build(),
        )
        .send()
        .await?;
    let def_arn = def
        .task_definition()
        .and_then(|d| d.task_definition_arn())
        .context("definition")?;
    let run = ecs
        .run_task()
        .cluster(CLUSTER)
        .task_definition(def_arn)
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .started_by("earlier-attempt")
        .network_configuration(
            aws_sdk_ecs::types::NetworkConfiguration::builder()
                .awsvpc_configuration(
                    aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                        .subnets(&moto.subnet)
                        .security_groups(&moto.security_group)
                        .build()?,
                )
                .build(),
        )
        .send()
        .await?;
    let existing = run
        .tasks()
        .first()
        .and_then(|t| t.task_arn())
        .context("task")?
        .to_owned();
    proxy.reset_counts();
    proxy.respond_next(
        "RunTask",
        400,
        &serde_json::json!({
            "__type": "ConflictException",
            "message": "The clientToken is already in use with a different RunTask request",
            "resourceIds": [existing],
        })
        .to_string(),
    );
    let conflicted = pod("conflict", "uid-conflict");
    c.create_pod(CreatePodRequest {
        pod: Some(conflicted.clone()),
    })
    .await
    .context("a create answered with ConflictException")?;
    ensure!(proxy.injected("RunTask") == 1 && proxy.forwarded("RunTask") == 0);
    ensure!(
        tasks(&ecs, "RUNNING").await?.len() == 2,
        "a second task was started"
    );
    // Deleting the pod stops the adopted task.
    c.delete_pod(DeletePodRequest {
        pod_ref: conflicted.pod_ref.clone(),
        grace_period_seconds: None,
    })
    .await?;
    ensure!(
        tasks(&ecs, "STOPPED").await?.contains(&existing),
        "the adopted task was not stopped"
    );
    Ok(())
}
