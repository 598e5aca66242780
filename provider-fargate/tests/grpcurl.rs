//! provider-fargate through grpcurl against a real moto: a pod from a JSON request is created
//! (its security settings in the task definition), listed, its logs read from the exact awslogs
//! stream, deleted; the task is stopped in moto and
//! the pods' task definitions deregistered once unused. Health and reflection work.

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use support::*;
use vk_testkit::{grpcurl, moto::Moto, wait::eventually};

/// The grpcurl tests' pod, with the security settings ECS has names for.
fn pod_json(name: &str, uid: &str) -> String {
    let mut req = grpcurl::web_pod(NODE, name, uid);
    let pod = &mut req["pod"];
    pod["containers"][0]["securityContext"] =
        serde_json::json!({"capabilitiesAdd": ["SYS_PTRACE"], "capabilitiesDrop": ["ALL"]});
    pod["securityContext"] = serde_json::json!(
        {"runAsUser": 1000, "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}
    );
    req.to_string()
}

#[tokio::test]
async fn create_list_logs_delete_through_grpcurl() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let (mut provider, target, _) = start_provider(&moto, &moto.endpoint, dir.path()).await?;
    let sdk = sdk(&moto.endpoint).await;
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);

    // Health and reflection.
    let health = grpcurl::run_ok(
        &target,
        &["-d", r#"{"service":"podprovider.v1.PodProvider"}"#],
        &["grpc.health.v1.Health/Check"],
    )
    .await?;
    ensure!(health.contains("SERVING"), "{health}");
    let list = grpcurl::run_ok(&target, &[], &["list"]).await?;
    ensure!(list.contains(grpcurl::POD_PROVIDER), "{list}");

    let info = grpcurl::call(&target, "GetNodeInfo", r#"{"nodeName":"vk-fargate"}"#).await?;
    ensure!(
        info.contains(r#""providerName": "fargate""#) && info.contains(r#""cpu": "1000""#),
        "{info}"
    );

    // Create from JSON.
    // A retried create is a success and starts nothing new.
    let created = grpcurl::create_retried(&target, &pod_json("web-1", "uid-1")).await?;
    ensure!(created.contains("arn:aws:ecs"), "{created}");
    ensure!(
        tasks(&ecs, "RUNNING").await?.len() == 1,
        "a retried create started a second task"
    );
    let provider_log = std::fs::read_to_string(provider.log_path())?;
    ensure!(
        !provider_log.contains("s3cr3t-value"),
        "a secret reached the provider's log"
    );

    // Listed, and Running once the status loop has seen the task.
    let listed = grpcurl::listed_running(&target, NODE, WAIT).await?;
    ensure!(
        listed.contains("web-1") && listed.contains("10."),
        "{listed}"
    );

    // Same spec, but each pod with a Secret value has a definition of its own: it references the
    // pod's own secret in Secrets Manager.
    grpcurl::call(&target, "CreatePod", &pod_json("web-2", "uid-2")).await?;
    let running = tasks(&ecs, "RUNNING").await?;
    ensure!(running.len() == 2, "{running:?}");
    let described = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .set_tasks(Some(running.clone()))
        .include(aws_sdk_ecs::types::TaskField::Tags)
        .send()
        .await?;
    let defs: std::collections::HashSet<_> = described
        .tasks()
        .iter()
        .filter_map(|t| t.task_definition_arn())
        .collect();
    ensure!(defs.len() == 2, "two pods with secrets use {defs:?}");
    // The security settings as ECS names them: the pod's runAsUser as `user`, capabilities in
    // `linuxParameters`, the pod's sysctls as `systemControls`.
    let def_arn = defs
        .iter()
        .next()
        .context("no task definition")?
        .to_string();
    let def = ecs
        .describe_task_definition()
        .task_definition(&def_arn)
        .send()
        .await?;
    let web = def
        .task_definition()
        .map(|d| d.container_definitions())
        .unwrap_or_default()
        .iter()
        .find(|c| c.name() == Some("web"))
        .context("no web container in the definition")?;
    ensure!(web.user() == Some("1000"), "{web:?}");
    let caps = web
        .linux_parameters()
        .and_then(|l| l.capabilities())
        .context("no capabilities")?;
    ensure!(
        caps.add() == ["SYS_PTRACE"] && caps.drop() == ["ALL"],
        "{caps:?}"
    );
    ensure!(
        web.system_controls()
            .iter()
            .any(|s| s.namespace() == Some("net.core.somaxconn") && s.value() == Some("1024")),
        "{:?}",
        web.system_controls()
    );
    let task1 = described
        .tasks()
        .iter()
        .find(|t| t.tags().iter().any(|tag| tag.value() == Some("uid-1")))
        .and_then(|t| t.task_arn())
        .context("no task tagged with uid-1")?
        .to_owned();
    let task_id = task1.rsplit('/').next().unwrap_or_default();

    // Logs: what the awslogs driver would have written to <prefix>/<container>/<task-id>.
    let stream = format!("vk/web/{task_id}");
    logs.create_log_stream()
        .log_group_name(LOG_GROUP)
        .log_stream_name(&stream)
        .send()
        .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut put = logs
        .put_log_events()
        .log_group_name(LOG_GROUP)
        .log_stream_name(&stream);
    for (i, line) in ["first line", "second line", "third line"]
        .iter()
        .enumerate()
    {
        put = put.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now - 3000 + i as i64 * 1000)
                .message(*line)
                .build()?,
        );
    }
    put.send().await?;
    let logs_req = |extra: &str| {
        format!(
            r#"{{"podRef": {{"namespace": "default", "name": "web-1", "uid": "uid-1"}}, "container": "web"{extra}}}"#
        )
    };
    let all = grpcurl::call(&target, "GetContainerLogs", &logs_req("")).await?;
    // grpcurl shows bytes as base64: "first line\nsecond line\nthird line\n".
    ensure!(
        all.contains("Zmlyc3QgbGluZQpzZWNvbmQgbGluZQp0aGlyZCBsaW5lCg=="),
        "{all}"
    );
    let tail = grpcurl::call(
        &target,
        "GetContainerLogs",
        &logs_req(r#", "tailLines": 1"#),
    )
    .await?;
    ensure!(tail.contains("dGhpcmQgbGluZQo="), "tail 1: {tail}");
    let missing = grpcurl::call_output(
        &target,
        "GetContainerLogs",
        &logs_req(r#", "container": "nope""#).replace(r#""container": "web", "#, ""),
    )
    .await?;
    ensure!(
        String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
        "{missing:?}"
    );

    // Invalid pods are rejected with the reason.
    grpcurl::check_host_path_refused(&target, &pod_json("bad", "uid-bad"), "Fargate").await?;

    // Delete both: tasks stop in moto, pods leave the list, the definition is deregistered.
    for (name, uid) in [("web-1", "uid-1"), ("web-2", "uid-2")] {
        let body = format!(
            r#"{{"podRef": {{"namespace": "default", "name": "{name}", "uid": "{uid}"}}}}"#
        );
        let out = grpcurl::call(&target, "DeletePod", &body).await?;
        ensure!(out.contains(r#""found": true"#), "{out}");
    }
    ensure!(
        tasks(&ecs, "RUNNING").await?.is_empty(),
        "tasks still running after delete"
    );
    ensure!(
        tasks(&ecs, "STOPPED").await?.len() == 2,
        "tasks not stopped"
    );
    eventually(WAIT, "pods gone and definition deregistered", || async {
        let out = grpcurl::call(&target, "ListPods", r#"{"nodeName":"vk-fargate"}"#).await?;
        let defs = active_definitions(&ecs).await?;
        Ok((!out.contains("web-") && defs.is_empty()).then_some(()))
    })
    .await?;
    let again = grpcurl::call(
        &target,
        "DeletePod",
        r#"{"podRef": {"namespace": "default", "name": "web-1", "uid": "uid-1"}}"#,
    )
    .await?;
    ensure!(
        !again.contains("found"),
        "a second delete must report found=false: {again}"
    );

    let status = provider.stop(Duration::from_secs(10)).await?;
    ensure!(status.success(), "provider exited with {status}");
    Ok(())
}
