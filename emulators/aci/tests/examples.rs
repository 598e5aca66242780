//! The REST reference's 2023-05-01 examples (tests/fixtures/, see its README.md for where each
//! came from), sent to the emulator: each answer must have the documented status and the key
//! paths and JSON types of the documented response body. Values differ by nature (ids, IPs,
//! times); documented keys the emulator does not produce are listed per test with the reason.
//!
//! Adaptation common to all: the examples' subscription `subid` and resource group `demo` become
//! the emulator's single subscription and resource group (it knows no others).

mod common;
#[path = "common/shape.rs"]
mod shape;

use common::{Emu, container};
use serde_json::{Value, json};
use shape::assert_same_shape;
use vk_testkit::aci_emulator::AciEmulatorOptions;

const CREATE: &str = include_str!("fixtures/ContainerGroupsCreateOrUpdate.json");
const GET_SUCCEEDED: &str = include_str!("fixtures/ContainerGroupsGet_Succeeded.json");
const GET_FAILED: &str = include_str!("fixtures/ContainerGroupsGet_Failed.json");
const LIST_BY_RG: &str = include_str!("fixtures/ContainerGroupsListByResourceGroup.json");
const DELETE: &str = include_str!("fixtures/ContainerGroupsDelete.json");
const LOGS: &str = include_str!("fixtures/ContainerListLogs.json");
const EXEC: &str = include_str!("fixtures/ContainerExec.json");
const STOP: &str = include_str!("fixtures/ContainerGroupsStop.json");
const RESTART: &str = include_str!("fixtures/ContainerGroupsRestart.json");
const START: &str = include_str!("fixtures/ContainerGroupsStart.json");

fn example(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

/// The documented response body for `status`.
fn documented(ex: &Value, status: u16) -> &Value {
    let body = &ex["responses"][status.to_string()]["body"];
    assert!(body.is_object(), "the example documents a {status} body");
    body
}

/// Asserts `status` is one the example documents.
#[track_caller]
fn assert_documented_status(ex: &Value, status: u16, text: &str) {
    assert!(
        ex["responses"].get(status.to_string()).is_some(),
        "status {status} is not among the documented {:?}: {text}",
        ex["responses"]
            .as_object()
            .map(|r| r.keys().cloned().collect::<Vec<_>>())
    );
}

/// The example's URL: its group (and container) and api-version, under the emulator's
/// subscription and resource group; `suffix` is the part after the group name.
fn example_url(ex: &Value, suffix: &str, extra_query: &str) -> String {
    let p = &ex["parameters"];
    let group = p["containerGroupName"]
        .as_str()
        .expect("containerGroupName");
    let api = p["api-version"].as_str().expect("api-version");
    let suffix = suffix.replace(
        "{containerName}",
        p["containerName"].as_str().unwrap_or_default(),
    );
    format!(
        "{}/{group}{suffix}?api-version={api}{extra_query}",
        Emu::groups_path()
    )
}

/// The group the GET, list and delete examples describe, as the PUT body that creates it: their
/// response body without the read-only fields (`id`, `name`, `type`, `provisioningState`,
/// `ipAddress.ip`), plus the write-only values a real PUT needs and the response omits (registry
/// password, storage account key).
fn documented_group() -> Value {
    let mut g = documented(&example(GET_SUCCEEDED), 200).clone();
    if let Some(o) = g.as_object_mut() {
        for k in ["id", "name", "type"] {
            o.remove(k);
        }
    }
    let p = &mut g["properties"];
    p.as_object_mut().map(|o| o.remove("provisioningState"));
    p["ipAddress"].as_object_mut().map(|o| o.remove("ip"));
    p["imageRegistryCredentials"][0]["password"] = json!("registry-password");
    p["volumes"][0]["azureFile"]["storageAccountKey"] = json!("storage-key");
    g
}

/// `documented_group` with its container named `container`: the logs and exec examples name
/// container `container1` of group `demo1`, which the other examples show with one container
/// `demo1` only.
fn documented_group_with_container(name: &str) -> Value {
    let mut g = documented_group();
    g["properties"]["containers"][0]["name"] = json!(name);
    g
}

async fn start() -> anyhow::Result<Emu> {
    Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 50,
        log_heartbeat_ms: 100,
        ..Default::default()
    })
    .await
}

async fn put_running(emu: &Emu, name: &str, body: &Value) -> anyhow::Result<Value> {
    let r = emu.put_group(name, body).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    emu.wait_group(name, "running", |g| {
        g["properties"]["instanceView"]["state"] == "Running"
    })
    .await
}

#[tokio::test]
async fn create_or_update_example_answers_201_then_200_as_documented() -> anyhow::Result<()> {
    let emu = start().await?;
    let ex = example(CREATE);
    let mut body = ex["parameters"]["containerGroup"].clone();
    // Adaptation: the example puts `zones` next to `containerGroup` in its parameters (not a
    // parameter of the operation), yet both documented responses carry it: it belongs in the body.
    body["zones"] = ex["parameters"]["zones"].clone();
    let url = example_url(&ex, "", "");

    let created = emu.arm("PUT", &url, Some(&body)).await?;
    assert_documented_status(&ex, created.status, &created.text);
    assert_eq!(created.status, 201, "a new group: {}", created.text);
    assert_same_shape("PUT (new)", documented(&ex, 201), &created.body, &[]);
    let again = emu.arm("PUT", &url, Some(&body)).await?;
    assert_eq!(again.status, 200, "the same body again: {}", again.text);
    assert_same_shape("PUT (again)", documented(&ex, 200), &again.body, &[]);

    // The values the emulator derives the way the documented response shows them.
    let ip = &again.body["properties"]["ipAddress"];
    assert_eq!(ip["fqdn"], "dnsnamelabel1.westus.azurecontainer.io");
    assert!(!again.text.contains("accountKey") && !again.text.contains("workspaceKey"));
    assert_eq!(again.body["properties"]["volumes"][2]["secret"], json!({}));
    emu.emu.stop().await
}

#[tokio::test]
async fn get_examples_answer_as_documented() -> anyhow::Result<()> {
    let emu = start().await?;
    put_running(&emu, "demo1", &documented_group()).await?;

    let ex = example(GET_SUCCEEDED);
    let r = emu.arm("GET", &example_url(&ex, "", ""), None).await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_same_shape("GET (Succeeded)", documented(&ex, 200), &r.body, &[]);

    // The "Failed" example is the one showing instance views; the emulator's group is healthy,
    // but the structure (names, nesting, types) must be the same.
    let ex = example(GET_FAILED);
    let r = emu.arm("GET", &example_url(&ex, "", ""), None).await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_same_shape(
        "GET (Failed)",
        documented(&ex, 200),
        &r.body,
        &[(
            "$.properties.instanceView.events[]",
            "the emulator records container events only; group-level events such as \
             FailedMount come from real volume and network failures it does not simulate",
        )],
    );
    emu.emu.stop().await
}

#[tokio::test]
async fn list_by_resource_group_example_answers_as_documented() -> anyhow::Result<()> {
    let emu = start().await?;
    put_running(&emu, "demo1", &documented_group()).await?;
    let ex = example(LIST_BY_RG);
    // Adaptation: the list URL has no group name; the emulator's resource group.
    let url = format!(
        "{}?api-version={}",
        Emu::groups_path(),
        ex["parameters"]["api-version"].as_str().unwrap_or_default()
    );
    let r = emu.arm("GET", &url, None).await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_same_shape("list", documented(&ex, 200), &r.body, &[]);
    // As documented (and as real ARM does): no instance views in a list.
    let entry = &r.body["value"][0];
    assert!(entry["properties"].get("instanceView").is_none(), "{entry}");
    assert!(
        container(entry, "demo1")["properties"]
            .get("instanceView")
            .is_none(),
        "{entry}"
    );
    emu.emu.stop().await
}

#[tokio::test]
async fn delete_example_answers_200_then_204_as_documented() -> anyhow::Result<()> {
    let emu = start().await?;
    put_running(&emu, "demo1", &documented_group()).await?;
    let ex = example(DELETE);
    let url = example_url(&ex, "", "");
    let r = emu.arm("DELETE", &url, None).await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_eq!(r.status, 200);
    assert_same_shape("DELETE", documented(&ex, 200), &r.body, &[]);
    // Not produced: the documented 202 (asynchronous delete with Azure-AsyncOperation); the
    // emulator deletes synchronously (README.md, deviations).
    let r = emu.arm("DELETE", &url, None).await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_eq!((r.status, r.text.as_str()), (204, ""), "already gone");
    emu.emu.stop().await
}

#[tokio::test]
async fn logs_example_answers_as_documented() -> anyhow::Result<()> {
    let emu = start().await?;
    let ex = example(LOGS);
    let group = ex["parameters"]["containerGroupName"]
        .as_str()
        .unwrap_or_default();
    let cname = ex["parameters"]["containerName"]
        .as_str()
        .unwrap_or_default();
    put_running(&emu, group, &documented_group_with_container(cname)).await?;
    let tail = format!("&tail={}", ex["parameters"]["tail"]);
    let r = emu
        .arm(
            "GET",
            &example_url(&ex, "/containers/{containerName}/logs", &tail),
            None,
        )
        .await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_same_shape("logs", documented(&ex, 200), &r.body, &[]);
    assert!(
        r.body["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("Emulated container container1 ")),
        "{}",
        r.text
    );
    emu.emu.stop().await
}

#[tokio::test]
async fn exec_example_answers_as_documented() -> anyhow::Result<()> {
    let emu = start().await?;
    let ex = example(EXEC);
    let group = ex["parameters"]["containerGroupName"]
        .as_str()
        .unwrap_or_default();
    let cname = ex["parameters"]["containerName"]
        .as_str()
        .unwrap_or_default();
    put_running(&emu, group, &documented_group_with_container(cname)).await?;
    let r = emu
        .arm(
            "POST",
            &example_url(&ex, "/containers/{containerName}/exec", ""),
            Some(&ex["parameters"]["containerExecRequest"]),
        )
        .await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_same_shape("exec", documented(&ex, 200), &r.body, &[]);
    // Values: plain ws:// on loopback instead of the documented wss:// (README.md, deviations).
    assert!(
        r.body["webSocketUri"]
            .as_str()
            .is_some_and(|u| u.starts_with("ws://127.0.0.1:")),
        "{}",
        r.text
    );
    emu.emu.stop().await
}

#[tokio::test]
async fn stop_restart_start_examples_answer_as_documented() -> anyhow::Result<()> {
    let emu = start().await?;
    put_running(&emu, "demo1", &documented_group()).await?;
    let state = |g: &Value| g["properties"]["instanceView"]["state"].clone();

    let ex = example(RESTART);
    let r = emu
        .arm("POST", &example_url(&ex, "/restart", ""), None)
        .await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    emu.wait_group("demo1", "running after restart", |g| state(g) == "Running")
        .await?;

    let ex = example(STOP);
    let r = emu
        .arm("POST", &example_url(&ex, "/stop", ""), None)
        .await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_eq!(state(&emu.get_group("demo1").await?.body), "Stopped");

    // Start: 202 for a stopped group ("is starting"), 204 once it is starting or running.
    // Not produced: the 202's Azure-AsyncOperation header (README.md, deviations).
    let ex = example(START);
    let url = example_url(&ex, "/start", "");
    let r = emu.arm("POST", &url, None).await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_eq!((r.status, r.text.as_str()), (202, ""));
    let r = emu.arm("POST", &url, None).await?;
    assert_documented_status(&ex, r.status, &r.text);
    assert_eq!(r.status, 204, "already starting");
    emu.wait_group("demo1", "running after start", |g| state(g) == "Running")
        .await?;
    emu.emu.stop().await
}
