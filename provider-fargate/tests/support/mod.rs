//! Shared set-up for the provider-fargate tests: moto, the provider binary, AWS SDK clients for
//! assertions.
#![allow(dead_code)] // each test file uses a part

use std::{path::Path, time::Duration};

use anyhow::Context;
use podprovider_proto::v1::Pod;
use vk_testkit::{
    grpcurl::Target, moto::Moto, ports::free_port, process::ManagedProcess, provider_checks,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_provider-fargate");
pub const CLUSTER: &str = "vk";
pub const LOG_GROUP: &str = "vk-logs";
pub const NODE: &str = "vk-fargate";

/// The provider's flags for `moto`.
pub fn provider_args(moto: &Moto, listen: &str) -> Vec<String> {
    [
        "--listen",
        listen,
        "--cluster",
        CLUSTER,
        "--subnets",
        &moto.subnet,
        "--security-groups",
        &moto.security_group,
        "--log-group",
        LOG_GROUP,
        "--execution-role-arn",
        "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "--status-interval-seconds",
        "0.5",
        "--log-filter",
        "info,provider_fargate=debug,provider_common=debug",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Starts the provider binary against `endpoint` (moto or a proxy in front of it).
pub async fn start_provider(
    moto: &Moto,
    endpoint: &str,
    dir: &Path,
) -> anyhow::Result<(ManagedProcess, Target, String)> {
    start_provider_with(moto, endpoint, dir, &[]).await
}

/// [`start_provider`] with more flags (e.g. `--installation-id`).
pub async fn start_provider_with(
    moto: &Moto,
    endpoint: &str,
    dir: &Path,
    extra: &[&str],
) -> anyhow::Result<(ManagedProcess, Target, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let target = Target::Tcp(addr.clone());
    let env = Moto::aws_env(endpoint);
    let env: Vec<(&str, String)> = env.into_iter().collect();
    let mut args = provider_args(moto, &addr);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let p = provider_checks::start_provider(Path::new(BIN), &args, &env, &target, dir).await?;
    Ok((p, target, addr))
}

/// AWS SDK config for direct assertions against moto.
pub async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(vk_testkit::moto::REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

/// Task ARNs in the cluster with the given desired status.
pub async fn tasks(ecs: &aws_sdk_ecs::Client, desired: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = ecs
            .list_tasks()
            .cluster(CLUSTER)
            .desired_status(desired.into())
            .set_next_token(token)
            .send()
            .await
            .context("ListTasks")?;
        out.extend(page.task_arns().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// ACTIVE task definitions of the provider's families.
pub async fn active_definitions(ecs: &aws_sdk_ecs::Client) -> anyhow::Result<Vec<String>> {
    let fams = ecs
        .list_task_definition_families()
        .family_prefix("vk-")
        .status("ACTIVE".into())
        .send()
        .await?;
    let mut out = Vec::new();
    for f in fams.families() {
        let defs = ecs
            .list_task_definitions()
            .family_prefix(f)
            .status("ACTIVE".into())
            .send()
            .await?;
        out.extend(defs.task_definition_arns().iter().cloned());
    }
    Ok(out)
}

/// A small pod.
pub fn pod(name: &str, uid: &str) -> Pod {
    provider_checks::small_pod(NODE, name, uid)
}

/// Generous deadline for moto-backed conditions.
pub const WAIT: Duration = Duration::from_secs(60);
