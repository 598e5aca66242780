//! `provider-fargate`: the PodProvider gRPC service for AWS Fargate (through ECS).
//!
//! Pods become ECS tasks (launch type FARGATE, awsvpc networking) started from task definitions
//! shared by content hash; statuses come from one ListTasks + batched DescribeTasks per interval;
//! logs from CloudWatch Logs (awslogs driver); usage figures from CloudWatch Container Insights.
//! See README.md for the flags.
#![forbid(unsafe_code)]

provider_common::provider_main!(
    "PodProvider gRPC service for AWS Fargate (through ECS)",
    FargateArgs,
    provider
);

mod client;
mod config;
mod error;
mod logs;
mod plan;
mod provider;
mod sizes;
mod stats;
mod status;
mod telemetry;

use anyhow::Context;
use provider_common::{PollTask, retry::RetryPolicy, status_loop};

use crate::{
    client::{Cloud, Network},
    config::{Arch, FargateArgs},
    plan::DefSettings,
    provider::{FargateProvider, Settings},
};

/// The Fargate provider from its flags, its state rebuilt from ECS, and its poll loop.
async fn provider(args: &FargateArgs) -> anyhow::Result<(FargateProvider, PollTask)> {
    args.validate()?;

    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        // Our own retry loop (backoff with jitter, Retry-After) replaces the SDK's.
        .retry_config(aws_config::retry::RetryConfig::disabled())
        // Every call, body included, has a deadline: an endpoint that accepts a connection and
        // then stalls must not hold a create, a delete or the status poll for ever.
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .read_timeout(std::time::Duration::from_secs(30))
                .operation_attempt_timeout(std::time::Duration::from_secs(30))
                .operation_timeout(std::time::Duration::from_secs(60))
                .build(),
        );
    if let Some(region) = &args.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &args.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let region = sdk
        .region()
        .map(ToString::to_string)
        .context("no AWS region: set --region or AWS_REGION")?;
    let cloud = Cloud {
        ecs: aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::config::Builder::from(&sdk)
                .interceptor(telemetry::TraceContext)
                .build(),
        ),
        logs: aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
                .interceptor(telemetry::TraceContext)
                .build(),
        ),
        secrets: aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&sdk)
                .interceptor(telemetry::TraceContext)
                .build(),
        ),
        metrics: aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&sdk)
                .interceptor(telemetry::TraceContext)
                .build(),
        ),
        cluster: args.cluster.clone(),
        policy: RetryPolicy::default(),
    };
    let settings = Settings {
        defs: DefSettings {
            execution_role_arn: args.execution_role_arn.clone(),
            task_role_arn: args.task_role_arn.clone(),
            log_group: args.log_group.clone(),
            log_stream_prefix: args.log_stream_prefix.clone(),
            region,
            files_image: args.files_image.clone(),
            cpu_architecture: match args.architecture {
                Arch::Amd64 => "X86_64".into(),
                Arch::Arm64 => "ARM64".into(),
            },
            installation: args.installation(),
        },
        network: Network {
            subnets: args.subnets.clone(),
            security_groups: args.security_groups.clone(),
            assign_public_ip: args.assign_public_ip,
        },
        platform_version: args.platform_version.clone(),
        enable_execute_command: args.enable_execute_command,
        capacity: args.capacity(),
        architecture: args.architecture.k8s().to_owned(),
        installation: args.installation(),
        container_insights: args.container_insights,
    };
    let provider = FargateProvider::new(cloud, settings);

    if let Err(e) = provider.load_definitions().await {
        tracing::warn!(error = %e, "cannot list task definitions; unused ones stay registered for now");
    }
    let hub = provider.hub();
    let poller = provider.clone();
    let poll_loop =
        status_loop::rebuild_then_poll(hub.clone(), args.status_interval(), "ECS", move || {
            let p = poller.clone();
            async move { p.poll().await }
        })
        .await;
    // Secrets of pods deleted while the provider was down; only once the pods are known.
    if matches!(hub.health(), status_loop::PollHealth::Ok) {
        match provider.sweep_secrets().await {
            Ok(n) => tracing::info!(deleted = n, "secrets of gone pods swept"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep secrets of gone pods"),
        }
    }
    Ok((provider, Box::pin(poll_loop)))
}
