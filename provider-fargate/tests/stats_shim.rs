//! Usage figures end to end: a pod on a virtual node backed by `provider-fargate
//! --container-insights` against moto; Container Insights figures put into moto's CloudWatch for
//! the pod's task reach the kubelet endpoints the API server proxies (`kubectl get --raw
//! /api/v1/nodes/<node>/proxy/stats/summary` and `/metrics/resource`), which is what
//! metrics-server (and so `kubectl top`) reads. metrics-server itself is not installed here.
//!
//! Needs the `node-shim` binary in the same target directory (`cargo build -p node-shim`).

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_ecs::types::TaskField;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use support::{CLUSTER, LOG_GROUP, sdk, start_provider_with, tasks};
use vk_testkit::{
    ControlPlane,
    moto::Moto,
    shim::{self, measured_pod, metric_line, node_proxy, spawn_shim_with_kubelet_api, summary_of},
    wait,
};

const NODE: &str = "vk-fargate-stats";
const SLOW: Duration = Duration::from_secs(120);

#[tokio::test]
async fn stats_summary_and_metrics_resource_carry_container_insights_figures() -> anyhow::Result<()>
{
    let dir = shim::prepare()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let (provider, _, addr) =
        start_provider_with(&moto, &moto.endpoint, dir.path(), &["--container-insights"]).await?;
    let cp = ControlPlane::start().await?;
    let shim = spawn_shim_with_kubelet_api(&cp, dir.path(), NODE, &addr, &[])?;
    let result = scenario(&cp, &moto).await;
    vk_testkit::process::with_logs(result, &[&shim, &provider])
}

async fn scenario(cp: &ControlPlane, moto: &Moto) -> anyhow::Result<()> {
    let config = sdk(&moto.endpoint).await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let cw = aws_sdk_cloudwatch::Client::new(&config);
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, "default");
    let pod = measured_pod(NODE, "measured", "250m", "256Mi")?;
    pods.create(&PostParams::default(), &pod).await?;
    wait::pod_phase(&pods, "measured", "Running", SLOW).await?;

    // The pod's task, as Container Insights names it.
    let arns = tasks(&ecs, "RUNNING").await?;
    let described = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .set_tasks(Some(arns))
        .include(TaskField::Tags)
        .send()
        .await?;
    let task = described
        .tasks()
        .iter()
        .find(|t| {
            t.tags()
                .iter()
                .any(|tag| tag.key() == Some("vk-pod-name") && tag.value() == Some("measured"))
        })
        .context("the pod's task")?;
    let task_id = task
        .task_arn()
        .and_then(|a| a.rsplit('/').next())
        .context("task id")?;
    let family = task
        .task_definition_arn()
        .and_then(|a| a.rsplit_once("task-definition/"))
        .and_then(|(_, f)| f.rsplit_once(':'))
        .map(|(f, _)| f)
        .context("family")?;
    // Two minutes of figures: 1024 then 256 CPU units (1 core, then 0.25), 48 MiB.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let now = i64::try_from(now)?;
    let mut data = Vec::new();
    for (metric, value, unit, ago) in [
        ("ContainerCpuUtilized", 1024.0, StandardUnit::None, 120),
        ("ContainerCpuUtilized", 256.0, StandardUnit::None, 60),
        ("ContainerMemoryUtilized", 48.0, StandardUnit::Megabytes, 60),
    ] {
        let mut d = MetricDatum::builder()
            .metric_name(metric)
            .value(value)
            .unit(unit)
            .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                now - ago,
            ));
        for (name, v) in [
            ("ClusterName", CLUSTER),
            ("TaskDefinitionFamily", family),
            ("TaskId", task_id),
            ("ContainerName", "app"),
        ] {
            d = d.dimensions(Dimension::builder().name(name).value(v).build());
        }
        data.push(d.build());
    }
    cw.put_metric_data()
        .namespace("ECS/ContainerInsights")
        .set_metric_data(Some(data))
        .send()
        .await
        .context("PutMetricData")?;

    let pod = summary_of(cp, NODE, "measured")?;
    let app = &pod["containers"][0];
    ensure!(app["name"] == "app", "{pod}");
    ensure!(
        app["cpu"]["usageNanoCores"] == 250_000_000,
        "the newest figure, 0.25 core: {app}"
    );
    // 1 core × 60 s + 0.25 core × 60 s.
    ensure!(
        app["cpu"]["usageCoreNanoSeconds"] == 75_000_000_000_u64,
        "{app}"
    );
    ensure!(app["memory"]["workingSetBytes"] == 48 << 20, "{app}");
    ensure!(pod["cpu"]["usageNanoCores"] == 250_000_000, "{pod}");
    ensure!(pod["memory"]["workingSetBytes"] == 48 << 20, "{pod}");

    let metrics = node_proxy(cp, NODE, "/metrics/resource")?;
    let line = |family: &str| metric_line(&metrics, family, "measured", "app").map(str::to_owned);
    let cpu = line("container_cpu_usage_seconds_total").with_context(|| metrics.clone())?;
    ensure!(
        cpu.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
            == Some(75.0),
        "{cpu}"
    );
    let mem = line("container_memory_working_set_bytes").with_context(|| metrics.clone())?;
    ensure!(
        mem.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
            == Some(f64::from(48_u32 << 20)),
        "{mem}"
    );
    Ok(())
}
