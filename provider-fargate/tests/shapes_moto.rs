//! A pod with a 500m init container and a 500m app container runs, with a task definition whose
//! container CPU and memory reservations fit the task size (ECS counts init containers too; moto
//! does not check, so the registered values are checked here).

mod support;

use anyhow::{Context, ensure};
use podprovider_proto::{
    PodProviderClient,
    v1::{Container, CreatePodRequest},
};
use support::*;
use vk_testkit::moto::Moto;

#[tokio::test]
async fn an_init_and_an_app_container_of_500m_each_fit_one_half_vcpu_task() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let (_provider, _, addr) = start_provider(&moto, &moto.endpoint, dir.path()).await?;
    let mut c = PodProviderClient::connect(format!("http://{addr}")).await?;
    let ecs = aws_sdk_ecs::Client::new(&sdk(&moto.endpoint).await);

    let mut p = pod("shaped", "uid-shaped");
    let mut app = p.containers[0].clone();
    if let Some(r) = app.resources.as_mut().and_then(|r| r.requests.as_mut()) {
        r.cpu_millis = Some(500);
    }
    let init = Container {
        name: "init".into(),
        image: "busybox:1.36".into(),
        ..app.clone()
    };
    p.containers = vec![app];
    p.init_containers = vec![init];
    c.create_pod(CreatePodRequest { pod: Some(p) }).await?;

    let arns = tasks(&ecs, "RUNNING").await?;
    ensure!(arns.len() == 1, "{arns:?}");
    let task = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .set_tasks(Some(arns))
        .send()
        .await?;
    let def_arn = task
        .tasks()
        .first()
        .and_then(|t| t.task_definition_arn())
        .context("task definition")?;
    let def = ecs
        .describe_task_definition()
        .task_definition(def_arn)
        .send()
        .await?;
    let def = def.task_definition().context("definition")?;
    let task_cpu: i32 = def.cpu().context("task cpu")?.parse()?;
    let task_mem: i32 = def.memory().context("task memory")?.parse()?;
    ensure!((task_cpu, task_mem) == (512, 1024), "{task_cpu} {task_mem}");
    let cpu: i32 = def.container_definitions().iter().map(|c| c.cpu()).sum();
    let reserved: i32 = def
        .container_definitions()
        .iter()
        .map(|c| c.memory_reservation().or(c.memory()).unwrap_or(0))
        .sum();
    ensure!(
        cpu <= task_cpu,
        "containers ask for {cpu} CPU units of {task_cpu}"
    );
    ensure!(
        reserved <= task_mem,
        "containers reserve {reserved} MiB of {task_mem}"
    );
    Ok(())
}
