//! Installation identity and paging, against moto through the real binary:
//! - two providers with different `--installation-id` share one account, cluster and node name;
//!   each creates and deletes 20 pods (with Secret values), and neither lists, stops, deregisters
//!   or deletes the other's tasks, task definitions or secrets, also across a restart;
//! - the task definition families are read to the last page (150 families, pages scripted at the
//!   fault proxy because moto does not page, one of them empty before the end): every unused one
//!   is deregistered.

mod support;

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use anyhow::{Context, ensure};
use futures::{StreamExt, stream};
use podprovider_proto::v1::{CreatePodRequest, DeletePodRequest, EnvVar, Pod};
use support::*;
use vk_testkit::{
    fault_proxy::{ECS_TARGET_PREFIX, FaultProxy},
    moto::Moto,
    provider_calls::{self, Client},
    wait::eventually,
};

const N: usize = 20;

fn family_prefix(installation: &str) -> String {
    format!(
        "vk-{}-",
        provider_common::naming::short_hash(&[installation], 8)
    )
}

fn secret_pod(who: &str, i: usize) -> Pod {
    let mut p = pod(&format!("{who}-{i}"), &format!("{who}-uid-{i}"));
    p.containers[0].env.push(EnvVar {
        name: "TOKEN".into(),
        value: format!("token-{who}-{i}"),
        sensitive: true,
        ..Default::default()
    });
    p
}

async fn each(c: &Client, who: &str, create: bool) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(0..N)
        .map(|i| {
            let mut c = c.clone();
            let p = secret_pod(who, i);
            async move {
                if create {
                    c.create_pod(CreatePodRequest { pod: Some(p) }).await?;
                } else {
                    c.delete_pod(DeletePodRequest {
                        pod_ref: p.pod_ref,
                        grace_period_seconds: None,
                    })
                    .await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn listed(c: &mut Client) -> anyhow::Result<HashSet<String>> {
    Ok(provider_calls::listed(c, NODE)
        .await?
        .into_iter()
        .filter_map(|p| p.pod_ref.map(|r| r.name))
        .collect())
}

/// (running tasks, ACTIVE definitions, secrets) tagged or named for `installation`.
async fn owned(
    ecs: &aws_sdk_ecs::Client,
    sm: &aws_sdk_secretsmanager::Client,
    installation: &str,
) -> anyhow::Result<(usize, usize, usize)> {
    let running = tasks(ecs, "RUNNING").await?;
    let mut ours = 0;
    for chunk in running.chunks(100) {
        let out = ecs
            .describe_tasks()
            .cluster(CLUSTER)
            .set_tasks(Some(chunk.to_vec()))
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await?;
        ours += out
            .tasks()
            .iter()
            .filter(|t| {
                t.tags().iter().any(|tag| {
                    tag.key() == Some("vk-installation") && tag.value() == Some(installation)
                })
            })
            .count();
    }
    let prefix = family_prefix(installation);
    let defs = active_definitions(ecs)
        .await?
        .into_iter()
        .filter(|d| d.contains(&format!("/{prefix}")))
        .count();
    let mut secrets = 0;
    let mut token = None;
    loop {
        let page = sm
            .list_secrets()
            .filters(
                aws_sdk_secretsmanager::types::Filter::builder()
                    .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                    .values(format!("vk/{installation}/"))
                    .build(),
            )
            .set_next_token(token)
            .send()
            .await?;
        secrets += page
            .secret_list()
            .iter()
            .filter(|s| {
                s.name()
                    .is_some_and(|n| n.starts_with(&format!("vk/{installation}/")))
            })
            .count();
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok((ours, defs, secrets))
}

#[tokio::test]
async fn two_installations_in_one_account_touch_only_their_own() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a)?;
    std::fs::create_dir_all(&dir_b)?;
    let (mut pa, _, addr_a) = start_provider_with(
        &moto,
        &moto.endpoint,
        &dir_a,
        &["--installation-id", "team-a"],
    )
    .await?;
    let (_pb, _, addr_b) = start_provider_with(
        &moto,
        &moto.endpoint,
        &dir_b,
        &["--installation-id", "team-b"],
    )
    .await?;
    let a = Client::connect(format!("http://{addr_a}")).await?;
    let b = Client::connect(format!("http://{addr_b}")).await?;
    let conf = sdk(&moto.endpoint).await;
    let ecs = aws_sdk_ecs::Client::new(&conf);
    let sm = aws_sdk_secretsmanager::Client::new(&conf);

    each(&a, "a", true).await?;
    each(&b, "b", true).await?;
    // Several polls later, each lists its own 20 pods on the shared node name, none of the other's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (c, who) in [(&a, "a-"), (&b, "b-")] {
        let names = listed(&mut c.clone()).await?;
        ensure!(
            names.len() == N && names.iter().all(|n| n.starts_with(who)),
            "{who}: {names:?}"
        );
    }
    ensure!(owned(&ecs, &sm, "team-a").await? == (N, N, N));
    ensure!(owned(&ecs, &sm, "team-b").await? == (N, N, N));

    // A deletes its pods and restarts (definitions reloaded, secrets swept): B keeps everything.
    each(&a, "a", false).await?;
    eventually(WAIT, "team-a's definitions deregistered", || async {
        Ok((owned(&ecs, &sm, "team-a").await? == (0, 0, 0)).then_some(()))
    })
    .await?;
    pa.stop(Duration::from_secs(5)).await?;
    let dir_a2 = dir.path().join("a2");
    std::fs::create_dir_all(&dir_a2)?;
    let (_pa, _, addr_a) = start_provider_with(
        &moto,
        &moto.endpoint,
        &dir_a2,
        &["--installation-id", "team-a"],
    )
    .await?;
    let mut a = Client::connect(format!("http://{addr_a}")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        listed(&mut a).await?.is_empty(),
        "team-a adopted team-b's pods"
    );
    let b_owns = owned(&ecs, &sm, "team-b").await?;
    ensure!(
        b_owns == (N, N, N),
        "team-b after team-a's work: {b_owns:?}"
    );

    each(&b, "b", false).await?;
    eventually(WAIT, "team-b clean", || async {
        Ok((owned(&ecs, &sm, "team-b").await? == (0, 0, 0)).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn task_definition_families_are_read_to_the_last_page() -> anyhow::Result<()> {
    vk_testkit::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), CLUSTER, LOG_GROUP).await?;
    let ecs = aws_sdk_ecs::Client::new(&sdk(&moto.endpoint).await);
    let prefix = family_prefix("paged");
    let mut families = Vec::new();
    for i in 0..150 {
        let family = format!("{prefix}{i:03}");
        ecs.register_task_definition()
            .family(&family)
            .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
            .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
            .cpu("256")
            .memory("512")
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name("c")
                    .image("busybox")
                    .memory(512)
                    .build(),
            )
            .send()
            .await?;
        families.push(family);
    }
    // Another installation's family, never listed under this prefix, stays.
    let foreign = format!("{}x", family_prefix("someone-else"));
    ecs.register_task_definition()
        .family(&foreign)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("c")
                .image("busybox")
                .memory(512)
                .build(),
        )
        .send()
        .await?;

    let upstream: SocketAddr = format!("127.0.0.1:{}", moto.port).parse()?;
    let proxy = FaultProxy::start(upstream, ECS_TARGET_PREFIX, 0.0, 1).await?;
    let page = |names: &[String], token: Option<&str>| {
        let mut v = serde_json::json!({ "families": names });
        if let Some(t) = token {
            v["nextToken"] = t.into();
        }
        v.to_string()
    };
    proxy.respond_next(
        "ListTaskDefinitionFamilies",
        200,
        &page(&families[..100], Some("p2")),
    );
    proxy.respond_next("ListTaskDefinitionFamilies", 200, &page(&[], Some("p3")));
    proxy.respond_next(
        "ListTaskDefinitionFamilies",
        200,
        &page(&families[100..], None),
    );
    let (_p, _, _) = start_provider_with(
        &moto,
        &proxy.url(),
        dir.path(),
        &["--installation-id", "paged"],
    )
    .await?;
    ensure!(proxy.injected("ListTaskDefinitionFamilies") == 3);
    eventually(WAIT, "150 unused definitions deregistered", || async {
        let active = active_definitions(&ecs).await?;
        let left = active.iter().filter(|d| d.contains(&prefix)).count();
        Ok((left == 0).then_some(active))
    })
    .await
    .and_then(|active| {
        ensure!(
            active.iter().any(|d| d.contains(&foreign)),
            "another installation's definition was deregistered: {active:?}"
        );
        Ok(())
    })
    .context("paging")
}
