//! Sensitive values through Secrets Manager, against moto and the real binary:
//! - a pod with a Secret-derived variable, a Secret file and an imagePullSecret runs with ECS
//!   `secrets` and `repositoryCredentials` pointing at its own secrets, and the canary value (and
//!   its base64) appears in no DescribeTasks, DescribeTaskDefinition or ListTagsForResource
//!   answer, nor in the provider's log;
//! - deleting the pods leaves no secret of ours;
//! - secrets of a pod whose task went away while the provider was down are swept at start.

mod support;

use anyhow::{Context, ensure};
use base64::Engine as _;
use podprovider_proto::v1::{
    CreatePodRequest, DeletePodRequest, EnvVar, FileEntry, FilesSource, FilesVolume, Pod,
    RegistryCredential, Volume, VolumeMount, volume::Source,
};
use support::*;
use vk_testkit::moto::Moto;
use vk_testkit::provider_calls::Client;

const CANARY: &str = "canary-7f3a9c-do-not-leak";
const INSTALLATION: &str = "secrets-test";

fn secret_pod(name: &str, uid: &str) -> Pod {
    let mut p = pod(name, uid);
    let c = &mut p.containers[0];
    c.image = "registry.example.com/team/app:1".into();
    c.env = vec![
        EnvVar {
            name: "PLAIN".into(),
            value: "visible".into(),
            ..Default::default()
        },
        EnvVar {
            name: "PASSWORD".into(),
            value: CANARY.into(),
            sensitive: true,
            ..Default::default()
        },
    ];
    c.volume_mounts = vec![VolumeMount {
        name: "creds".into(),
        mount_path: "/etc/creds".into(),
        read_only: true,
        ..Default::default()
    }];
    p.volumes = vec![Volume {
        name: "creds".into(),
        source: Some(Source::Files(FilesVolume {
            source: FilesSource::Secret as i32,
            files: vec![FileEntry {
                path: "token".into(),
                content: CANARY.as_bytes().to_vec(),
                sensitive: true,
                ..Default::default()
            }],
            ..Default::default()
        })),
    }];
    p.registry_credentials = vec![RegistryCredential {
        server: "https://registry.example.com".into(),
        username: "robot".into(),
        password: CANARY.into(),
        ..Default::default()
    }];
    p
}

async fn our_secrets(sm: &aws_sdk_secretsmanager::Client, id: &str) -> anyhow::Result<Vec<String>> {
    let out = sm
        .list_secrets()
        .filters(
            aws_sdk_secretsmanager::types::Filter::builder()
                .key(aws_sdk_secretsmanager::types::FilterNameStringType::TagValue)
                .values(id)
                .build(),
        )
        .send()
        .await
        .context("ListSecrets")?;
    Ok(out
        .secret_list()
        .iter()
        .filter(|s| {
            s.tags()
                .iter()
                .any(|t| t.key() == Some("vk-installation") && t.value() == Some(id))
        })
        .filter_map(|s| s.name().map(str::to_owned))
        .collect())
}

/// An ECS call's raw JSON answer from moto: the SDK's `Debug` redacts environment values, so it
/// would hide a leak.
async fn raw_ecs(endpoint: &str, op: &str, body: serde_json::Value) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/x-amz-json-1.1",
            "-H",
            &format!("X-Amz-Target: AmazonEC2ContainerServiceV20141113.{op}"),
            "-H",
            "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=0",
            "--data",
            &body.to_string(),
            endpoint,
        ])
        .output()
        .await?;
    ensure!(out.status.success(), "curl {op}");
    let text = String::from_utf8(out.stdout)?;
    ensure!(!text.contains("__type"), "{op}: {text}");
    Ok(text)
}

fn leaks(text: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    text.contains(CANARY) || text.contains(&b64)
}

async fn delete(c: &mut Client, p: &Pod) -> anyhow::Result<()> {
    c.delete_pod(DeletePodRequest {
        pod_ref: p.pod_ref.clone(),
        grace_period_seconds: None,
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn sensitive_values_live_in_secrets_manager_only_and_go_with_the_pod() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let (provider, _, addr) = start_provider_with(
        &moto,
        &moto.endpoint,
        dir.path(),
        &["--installation-id", INSTALLATION],
    )
    .await?;
    let mut c = Client::connect(format!("http://{addr}")).await?;
    let conf = sdk(&moto.endpoint).await;
    let ecs = aws_sdk_ecs::Client::new(&conf);
    let sm = aws_sdk_secretsmanager::Client::new(&conf);

    let pods = [secret_pod("s-1", "uid-s-1"), secret_pod("s-2", "uid-s-2")];
    for p in &pods {
        c.create_pod(CreatePodRequest {
            pod: Some(p.clone()),
        })
        .await?;
    }
    let arns = tasks(&ecs, "RUNNING").await?;
    ensure!(arns.len() == 2, "{} tasks", arns.len());
    let described = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .set_tasks(Some(arns.clone()))
        .include(aws_sdk_ecs::types::TaskField::Tags)
        .send()
        .await?;
    let text = raw_ecs(
        &moto.endpoint,
        "DescribeTasks",
        serde_json::json!({"cluster": CLUSTER, "tasks": arns, "include": ["TAGS"]}),
    )
    .await?;
    ensure!(!leaks(&text), "canary in DescribeTasks: {text}");
    ensure!(
        text.contains("visible"),
        "plain env not in overrides: {text}"
    );
    for task in described.tasks() {
        let def = task.task_definition_arn().context("definition")?;
        let text = raw_ecs(
            &moto.endpoint,
            "DescribeTaskDefinition",
            serde_json::json!({"taskDefinition": def, "include": ["TAGS"]}),
        )
        .await?;
        ensure!(!leaks(&text), "canary in DescribeTaskDefinition: {text}");
        let d = ecs
            .describe_task_definition()
            .task_definition(def)
            .send()
            .await?;
        let td = d.task_definition().context("definition")?;
        let web = td
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some("web"))
            .context("web")?;
        let secret = web
            .secrets()
            .iter()
            .find(|s| s.name() == "PASSWORD")
            .context("PASSWORD is not an ECS secret")?;
        ensure!(
            secret.value_from().starts_with("arn:aws:secretsmanager:")
                && secret.value_from().contains(&format!("vk/{INSTALLATION}/")),
            "{secret:?}"
        );
        ensure!(
            web.repository_credentials()
                .is_some_and(|r| r.credentials_parameter().contains("registry-0")),
            "{web:?}"
        );
        let files = td
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some("vk-files"))
            .context("files helper")?;
        ensure!(!files.secrets().is_empty(), "{files:?}");
        ensure!(
            td.execution_role_arn().is_some(),
            "no execution role to read the secrets"
        );
        for arn in [task.task_arn().context("arn")?, def] {
            let text = raw_ecs(
                &moto.endpoint,
                "ListTagsForResource",
                serde_json::json!({"resourceArn": arn}),
            )
            .await?;
            ensure!(!leaks(&text), "canary in tags: {text}");
            ensure!(text.contains(INSTALLATION), "identity tag missing: {text}");
        }
    }
    // The secrets hold the values ECS injects.
    let names = our_secrets(&sm, INSTALLATION).await?;
    ensure!(names.len() == 4, "secrets: {names:?}");
    let values = sm
        .get_secret_value()
        .secret_id(format!("vk/{INSTALLATION}/uid-s-1/values"))
        .send()
        .await?;
    ensure!(
        values.secret_string().is_some_and(|s| s.contains(CANARY)),
        "values secret lacks the env value"
    );
    let registry = sm
        .get_secret_value()
        .secret_id(format!("vk/{INSTALLATION}/uid-s-1/registry-0"))
        .send()
        .await?;
    let creds: serde_json::Value =
        serde_json::from_str(registry.secret_string().unwrap_or_default())?;
    ensure!(
        creds["username"] == "robot" && creds["password"] == CANARY,
        "registry secret shape"
    );

    for p in &pods {
        delete(&mut c, p).await?;
    }
    let left = our_secrets(&sm, INSTALLATION).await?;
    ensure!(left.is_empty(), "secrets left after delete: {left:?}");
    let log = std::fs::read_to_string(provider.log_path())?;
    ensure!(!leaks(&log), "canary in the provider's log");
    Ok(())
}

#[tokio::test]
async fn secrets_of_pods_gone_while_the_provider_was_down_are_swept_at_start() -> anyhow::Result<()>
{
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let args = ["--installation-id", INSTALLATION];
    let (mut provider, _, addr) =
        start_provider_with(&moto, &moto.endpoint, dir.path(), &args).await?;
    let mut c = Client::connect(format!("http://{addr}")).await?;
    let conf = sdk(&moto.endpoint).await;
    let ecs = aws_sdk_ecs::Client::new(&conf);
    let sm = aws_sdk_secretsmanager::Client::new(&conf);
    let (keep, gone) = (
        secret_pod("keep", "uid-keep"),
        secret_pod("gone", "uid-gone"),
    );
    for p in [&keep, &gone] {
        c.create_pod(CreatePodRequest {
            pod: Some(p.clone()),
        })
        .await?;
    }
    // Another installation's secret must survive the sweep.
    sm.create_secret()
        .name("vk/someone-else/uid-x/values")
        .secret_string("{}")
        .tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key("vk-installation")
                .value("someone-else")
                .build(),
        )
        .tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key("vk-pod-uid")
                .value("uid-x")
                .build(),
        )
        .send()
        .await?;
    provider.stop(std::time::Duration::from_secs(5)).await?;

    // While the provider is down, the "gone" pod's task is stopped by someone else.
    let described = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .set_tasks(Some(tasks(&ecs, "RUNNING").await?))
        .include(aws_sdk_ecs::types::TaskField::Tags)
        .send()
        .await?;
    let gone_task = described
        .tasks()
        .iter()
        .find(|t| {
            t.tags()
                .iter()
                .any(|tag| tag.key() == Some("vk-pod-uid") && tag.value() == Some("uid-gone"))
        })
        .and_then(|t| t.task_arn())
        .context("task of the gone pod")?;
    ecs.stop_task()
        .cluster(CLUSTER)
        .task(gone_task)
        .reason("operator")
        .send()
        .await?;
    ensure!(our_secrets(&sm, INSTALLATION).await?.len() == 4);

    let restart = dir.path().join("restart");
    std::fs::create_dir_all(&restart)?;
    let (_provider, _, addr) = start_provider_with(&moto, &moto.endpoint, &restart, &args).await?;
    let mut names = our_secrets(&sm, INSTALLATION).await?;
    names.sort();
    ensure!(
        names
            == [
                format!("vk/{INSTALLATION}/uid-keep/registry-0"),
                format!("vk/{INSTALLATION}/uid-keep/values"),
            ],
        "after the sweep: {names:?}"
    );
    ensure!(
        our_secrets(&sm, "someone-else").await?.len() == 1,
        "another installation's secret was touched"
    );
    // The kept pod's secrets go with it, also after the restart.
    let mut c = Client::connect(format!("http://{addr}")).await?;
    delete(&mut c, &keep).await?;
    let left = our_secrets(&sm, INSTALLATION).await?;
    ensure!(left.is_empty(), "left: {left:?}");
    Ok(())
}
