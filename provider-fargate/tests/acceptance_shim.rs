//! Issue 5's acceptance on Fargate: the acceptance manifests (examples/acceptance/), unchanged,
//! through kubectl, the real kube-scheduler and two real `node-shim` processes onto virtual nodes
//! backed by one real `provider-fargate` against `moto_server`:
//! - every manifest's pods reach Running with an IP and Ready, each on the node whose taints it
//!   tolerates (the ACI walk-throughs' `virtual-kubelet.io/provider` + `azure.com/aci`, the ECI
//!   walk-through's `alibabacloud.com/eci`), as ECS tasks;
//! - wordpress's ConfigMap value reaches ECS only in the task's overrides, its Secret value only
//!   through Secrets Manager (the definition's `secrets` name the pod's secret), and its grace
//!   period becomes the containers' `stopTimeout`;
//! - `aks-sample` scaled to 20 runs 20 pods and 20 tasks; scaled back to 3 leaves exactly 3 of each;
//! - deleting everything leaves no pod, no running task, no ACTIVE task definition and no secret.

mod support;

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, bail, ensure};
use aws_sdk_ecs::types::TaskField;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};
use support::{CLUSTER, LOG_GROUP, active_definitions, sdk, start_provider, tasks};
use vk_testkit::{
    ControlPlane,
    moto::Moto,
    shim::{self, example},
    wait,
};

const MANIFESTS: [&str; 4] = [
    "aci-helloworld-deployment.yaml",
    "aks-sample-deployment.yaml",
    "eci-nginx-pod.yaml",
    "wordpress-env-grace.yaml",
];

/// Deadline for each step (scheduling, RunTask, status polls, scale-out of 17 pods).
const SLOW: Duration = Duration::from_secs(120);

/// The ACI walk-throughs' node: the default provider taint plus `azure.com/aci`.
const ACI_NODE: &str = "vk-fargate-aci";
/// The ECI walk-through tolerates only `alibabacloud.com/eci`: that node's taint key.
const ECI_NODE: &str = "vk-fargate-eci";

fn kubectl(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    cp.run_kubectl(args)
}

/// One RUNNING ECS task with the pod identity from its tags.
#[derive(Debug)]
struct TaskInfo {
    pod_name: String,
    pod_uid: String,
    node: String,
    definition: String,
    /// The ENI's `privateIPv4Address`.
    ip: Option<String>,
    overrides: Option<aws_sdk_ecs::types::TaskOverride>,
}

/// Tasks whose desired and last status are RUNNING, described with their tags.
async fn running_tasks(ecs: &aws_sdk_ecs::Client) -> anyhow::Result<Vec<TaskInfo>> {
    let arns = tasks(ecs, "RUNNING").await?;
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let page = ecs
            .describe_tasks()
            .cluster(CLUSTER)
            .set_tasks(Some(chunk.to_vec()))
            .include(TaskField::Tags)
            .send()
            .await
            .context("DescribeTasks")?;
        for t in page.tasks() {
            if t.last_status() != Some("RUNNING") {
                continue;
            }
            let tag = |key: &str| {
                t.tags()
                    .iter()
                    .find(|tag| tag.key() == Some(key))
                    .and_then(|tag| tag.value())
                    .unwrap_or_default()
                    .to_owned()
            };
            out.push(TaskInfo {
                pod_name: tag("vk-pod-name"),
                pod_uid: tag("vk-pod-uid"),
                node: tag("vk-node"),
                definition: t.task_definition_arn().unwrap_or_default().to_owned(),
                ip: t
                    .attachments()
                    .iter()
                    .flat_map(|a| a.details())
                    .find(|d| d.name() == Some("privateIPv4Address"))
                    .and_then(|d| d.value())
                    .map(str::to_owned),
                overrides: t.overrides().cloned(),
            });
        }
    }
    Ok(out)
}

struct Rig {
    cp: ControlPlane,
    ecs: aws_sdk_ecs::Client,
    secrets: aws_sdk_secretsmanager::Client,
    pods: Api<Pod>,
}

#[tokio::test]
async fn acceptance_manifests_run_scale_and_delete_on_fargate() -> anyhow::Result<()> {
    let dir = shim::prepare()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let (provider, _, addr) = start_provider(&moto, &moto.endpoint, dir.path()).await?;
    let cp = ControlPlane::start().await?;
    let nodes = [ACI_NODE, ECI_NODE];
    let (mut aci, mut eci) = shim::spawn_acceptance_shims(&cp, dir.path(), &addr, nodes, &[])?;
    let client = cp.client().await?;
    let rig = Rig {
        ecs: aws_sdk_ecs::Client::new(&sdk(&moto.endpoint).await),
        secrets: aws_sdk_secretsmanager::Client::new(&sdk(&moto.endpoint).await),
        pods: Api::namespaced(client.clone(), "default"),
        cp,
    };
    let result = async {
        wait::nodes_ready(
            &Api::all(client),
            &[ACI_NODE, ECI_NODE],
            &mut [&mut aci, &mut eci],
        )
        .await?;
        scenario(&rig).await
    }
    .await;
    vk_testkit::process::with_logs(result, &[&aci, &eci, &provider])
}

async fn scenario(rig: &Rig) -> anyhow::Result<()> {
    let Rig {
        cp,
        ecs,
        secrets,
        pods,
    } = rig;
    for file in MANIFESTS {
        kubectl(cp, &["apply", "-f", &example(file)])?;
    }
    // Every manifest's pods run, each on the node whose taints it tolerates, as ECS tasks.
    let want: [(&str, Option<&str>, usize); 4] = [
        ("app=aci-helloworld", Some(ACI_NODE), 1),
        ("app=aks-sample", Some(ACI_NODE), 3),
        ("app=wordpress", None, 1),
        ("metadata.name=mypod", Some(ECI_NODE), 1),
    ];
    let running = wait::slowly(SLOW, "every manifest's pods Running and Ready", || async {
        let all = pods.list(&ListParams::default()).await?.items;
        if let Some(failure) = wait::provider_failure(&all) {
            return Ok(Some(Err(failure)));
        }
        let tasks = running_tasks(ecs).await?;
        for (selector, node, n) in want {
            let matching: Vec<&Pod> = all
                .iter()
                .filter(|p| selects(selector, p))
                .filter(|p| wait::running_and_ready(p) && p.metadata.deletion_timestamp.is_none())
                .filter(|p| node.is_none_or(|node| wait::node_of(p) == node))
                .collect();
            let with_task = matching
                .iter()
                .filter(|p| {
                    tasks.iter().any(|t| {
                        Some(t.pod_uid.as_str()) == p.metadata.uid.as_deref()
                            && t.node == wait::node_of(p)
                    })
                })
                .count();
            if matching.len() != n || with_task != n {
                return Ok(None);
            }
        }
        Ok(Some(Ok(tasks)))
    })
    .await?;
    let started = running.map_err(anyhow::Error::msg)?;
    ensure!(
        started.len() == 6,
        "{} tasks running: {started:?}",
        started.len()
    );
    // Each pod's IP is its task's ENI address (moto picks those at random in 10.0.0.0/8, not in
    // the subnet).
    for p in pods.list(&ListParams::default()).await?.items {
        let uid = p.metadata.uid.as_deref();
        let task = started.iter().find(|t| Some(t.pod_uid.as_str()) == uid);
        let ip = p.status.and_then(|s| s.pod_ip);
        ensure!(
            ip.is_some() && task.is_some_and(|t| t.ip == ip),
            "pod {:?} has IP {ip:?}, its task {:?}",
            p.metadata.name,
            task.map(|t| &t.ip)
        );
    }

    // wordpress: the ConfigMap value only in the task's overrides, not the definition (anyone
    // with DescribeTaskDefinition reads those); the Secret's value in neither, but in the pod's
    // secret that the definition references; grace period 40 s as stopTimeout.
    let wp = started
        .iter()
        .find(|t| t.pod_name.starts_with("wordpress-"))
        .context("no wordpress task")?;
    let env: BTreeMap<&str, &str> = wp
        .overrides
        .as_ref()
        .map(|o| o.container_overrides())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.name() == Some("wordpress"))
        .flat_map(|c| c.environment())
        .filter_map(|kv| Some((kv.name()?, kv.value()?)))
        .collect();
    ensure!(
        env.get("WORDPRESS_DB_USER") == Some(&"wordpress"),
        "wordpress overrides: {env:?}"
    );
    ensure!(
        !env.contains_key("WORDPRESS_DB_PASSWORD") && !env.values().any(|v| v.contains("s3cr3t")),
        "the Secret's value is in the task's overrides"
    );
    let def = ecs
        .describe_task_definition()
        .task_definition(&wp.definition)
        .send()
        .await?
        .task_definition
        .context("no task definition")?;
    let container = def
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some("wordpress"))
        .context("no wordpress container in the task definition")?;
    ensure!(
        container
            .environment()
            .iter()
            .all(|kv| kv.value() != Some("s3cr3t-pa55")),
        "the Secret's value is in the task definition"
    );
    let value_from = container
        .secrets()
        .iter()
        .find(|s| s.name() == "WORDPRESS_DB_PASSWORD")
        .map(|s| s.value_from().to_owned())
        .context("WORDPRESS_DB_PASSWORD is not an ECS secret of the definition")?;
    // `<secret ARN>:<json key>::`
    let (arn, key) = value_from
        .trim_end_matches("::")
        .rsplit_once(':')
        .context("valueFrom without a JSON key")?;
    let stored: serde_json::Value = serde_json::from_str(
        secrets
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await?
            .secret_string()
            .unwrap_or_default(),
    )?;
    ensure!(
        stored[key] == "s3cr3t-pa55",
        "the pod's secret lacks the Secret's value"
    );
    ensure!(
        container.stop_timeout() == Some(40),
        "wordpress stopTimeout {:?}",
        container.stop_timeout()
    );

    // Scale out to 20: 20 pods Running on the ACI node and 20 aks-sample tasks.
    kubectl(cp, &["scale", "deployment/aks-sample", "--replicas=20"])?;
    let aks = |n: usize, exact: bool| {
        let what = format!("{n} aks-sample pods Running and {n} tasks");
        async move {
            wait::slowly(SLOW, &what, || async {
                let all = pods
                    .list(&ListParams::default().labels("app=aks-sample"))
                    .await?
                    .items;
                if let Some(failure) = wait::provider_failure(&all) {
                    bail!("{failure}");
                }
                let running: Vec<&str> = all
                    .iter()
                    .filter(|p| {
                        wait::running_and_ready(p) && p.metadata.deletion_timestamp.is_none()
                    })
                    .filter(|p| wait::node_of(p) == ACI_NODE)
                    .filter_map(|p| p.metadata.uid.as_deref())
                    .collect();
                let mut task_uids: Vec<String> = running_tasks(ecs)
                    .await?
                    .into_iter()
                    .filter(|t| t.pod_name.starts_with("aks-sample-"))
                    .map(|t| t.pod_uid)
                    .collect();
                task_uids.sort();
                let mut pod_uids: Vec<String> = running.iter().map(|u| (*u).to_owned()).collect();
                pod_uids.sort();
                let done =
                    pod_uids.len() == n && task_uids == pod_uids && (!exact || all.len() == n);
                Ok(done.then_some(()))
            })
            .await
        }
    };
    aks(20, false).await?;
    // Back to 3: exactly 3 pods left in the API, and exactly their 3 tasks in ECS.
    kubectl(cp, &["scale", "deployment/aks-sample", "--replicas=3"])?;
    aks(3, true).await?;
    // Definitions are shared by shape and deregistered once unused: each ACTIVE one has a task.
    wait::slowly(
        SLOW,
        "every ACTIVE task definition used by a running task",
        || async {
            let used: Vec<String> = running_tasks(ecs)
                .await?
                .into_iter()
                .map(|t| t.definition)
                .collect();
            let active = active_definitions(ecs).await?;
            Ok(active.iter().all(|d| used.contains(d)).then_some(()))
        },
    )
    .await?;

    // Deleting everything leaves no pod, no running task and no ACTIVE definition.
    for file in MANIFESTS {
        kubectl(cp, &["delete", "--wait=false", "-f", &example(file)])?;
    }
    wait::slowly(SLOW, "no pod in the API and no task running", || async {
        let api_left = pods.list(&ListParams::default()).await?.items.len();
        let running = tasks(ecs, "RUNNING").await?.len();
        Ok((api_left == 0 && running == 0).then_some(()))
    })
    .await?;
    wait::slowly(SLOW, "no ACTIVE task definition", || async {
        Ok(active_definitions(ecs).await?.is_empty().then_some(()))
    })
    .await?;
    ensure!(
        running_tasks(ecs).await?.is_empty(),
        "a task runs again after everything was deleted"
    );
    let left = secrets.list_secrets().send().await?;
    ensure!(
        left.secret_list().is_empty(),
        "secrets left after everything was deleted: {:?}",
        left.secret_list()
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// `label=value` or `metadata.name=value`.
fn selects(selector: &str, p: &Pod) -> bool {
    let Some((key, value)) = selector.split_once('=') else {
        return false;
    };
    if key == "metadata.name" {
        return p.metadata.name.as_deref() == Some(value);
    }
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == value)
}
