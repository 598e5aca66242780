//! The ARM containerGroups API of the emulator, driven over HTTP like a client would.

mod common;

use common::{API, Emu, container, current_state, simple_group};
use serde_json::{Value, json};
use vk_testkit::aci_emulator::AciEmulatorOptions;

/// The request of the REST reference's "ContainerGroupsCreateOrUpdate" example (2023-05-01,
/// tests/fixtures/), with `zones` moved into the body where the documented response has it.
fn documented_example() -> Value {
    let ex: Value =
        serde_json::from_str(include_str!("fixtures/ContainerGroupsCreateOrUpdate.json"))
            .expect("fixture is JSON");
    let mut body = ex["parameters"]["containerGroup"].clone();
    body["zones"] = ex["parameters"]["zones"].clone();
    body
}

#[tokio::test]
async fn documented_example_put_answers_like_the_documented_response() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions::default()).await?;
    let r = emu.put_group("demo1", &documented_example()).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let b = &r.body;
    assert_eq!(b["name"], "demo1");
    assert_eq!(b["type"], "Microsoft.ContainerInstance/containerGroups");
    assert_eq!(
        b["id"],
        format!("{}/demo1", Emu::groups_path()).as_str(),
        "id is the resource path"
    );
    assert_eq!(b["zones"], json!(["1"]));
    let p = &b["properties"];
    assert_eq!(p["provisioningState"], "Creating");
    assert_eq!(p["osType"], "Linux");
    let c = container(b, "demo1");
    assert_eq!(c["properties"]["image"], "nginx");
    assert_eq!(c["properties"]["ports"], json!([{"port": 80}]));
    assert_eq!(c["properties"]["resources"]["requests"]["memoryInGB"], 1.5);
    assert_eq!(
        c["properties"]["volumeMounts"].as_array().map(Vec::len),
        Some(3)
    );
    // As in the documented response: an IP and an FQDN are assigned, write-only secrets vanish.
    assert!(
        p["ipAddress"]["ip"]
            .as_str()
            .is_some_and(|ip| ip.split('.').count() == 4)
    );
    assert!(
        p["ipAddress"]["fqdn"]
            .as_str()
            .is_some_and(|f| f.starts_with("dnsnamelabel1."))
    );
    assert_eq!(
        p["ipAddress"]["ports"],
        json!([{"port": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        p["volumes"][0]["azureFile"],
        json!({"shareName": "shareName", "storageAccountName": "accountName"})
    );
    assert_eq!(p["volumes"][1], json!({"name": "volume2", "emptyDir": {}}));
    assert_eq!(p["volumes"][2], json!({"name": "volume3", "secret": {}}));
    assert_eq!(
        p["diagnostics"]["logAnalytics"]["workspaceId"],
        "workspaceid"
    );
    assert!(
        p["diagnostics"]["logAnalytics"]
            .get("workspaceKey")
            .is_none()
    );
    assert!(!r.text.contains("accountKey") && !r.text.contains("SecretValue1InBase64"));

    let done = emu
        .wait_group("demo1", "Succeeded and Running", |g| {
            g["properties"]["provisioningState"] == "Succeeded"
                && g["properties"]["instanceView"]["state"] == "Running"
        })
        .await?;
    assert_eq!(current_state(&done, "demo1")["state"], "Running");
    assert!(current_state(&done, "demo1")["startTime"].is_string());
    emu.emu.stop().await
}

#[tokio::test]
async fn provisioning_moves_creating_to_succeeded_and_waiting_to_running() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 700,
        ..Default::default()
    })
    .await?;
    let mut spec = simple_group("Always", &[("app", &[])]);
    spec["properties"]["initContainers"] = json!([
        {"name": "init-a", "properties": {"image": "busybox", "command": ["true"]}},
        {"name": "init-b", "properties": {"image": "busybox"}}
    ]);
    let r = emu.put_group("prov", &spec).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let g = emu.get_group("prov").await?.body;
    assert_eq!(g["properties"]["provisioningState"], "Creating");
    assert_eq!(g["properties"]["instanceView"]["state"], "Pending");
    assert_eq!(current_state(&g, "app")["state"], "Waiting");

    let g = emu
        .wait_group("prov", "app running", |g| {
            current_state(g, "app")["state"] == "Running"
        })
        .await?;
    assert_eq!(g["properties"]["provisioningState"], "Succeeded");
    assert_eq!(g["properties"]["instanceView"]["state"], "Running");
    // Init containers ran to completion first, in order.
    let inits = g["properties"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(inits.len(), 2);
    let app_start = current_state(&g, "app")["startTime"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut previous_finish = String::new();
    for i in &inits {
        let s = &i["properties"]["instanceView"]["currentState"];
        assert_eq!(s["state"], "Terminated", "{i}");
        assert_eq!(s["exitCode"], 0);
        let finish = s["finishTime"].as_str().unwrap_or_default().to_owned();
        assert!(
            finish >= previous_finish && finish <= app_start,
            "{finish} vs {app_start}"
        );
        previous_finish = finish;
    }
    emu.emu.stop().await
}

#[tokio::test]
async fn exits_follow_the_restart_policy() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 50,
        ..Default::default()
    })
    .await?;
    for (name, policy) in [
        ("never", "Never"),
        ("onfailure", "OnFailure"),
        ("always", "Always"),
    ] {
        let r = emu
            .put_group(name, &simple_group(policy, &[("a", &[]), ("b", &[])]))
            .await?;
        assert_eq!(r.status, 201, "{}", r.text);
        emu.wait_group(name, "running", |g| {
            g["properties"]["instanceView"]["state"] == "Running"
        })
        .await?;
    }
    // Never: a 3 stays Terminated with exit code 3; the group fails once all have ended.
    emu.emu.exit_container("never", "a", 3).await?;
    let g = emu.get_group("never").await?.body;
    let a = current_state(&g, "a");
    assert_eq!(a["state"], "Terminated");
    assert_eq!(a["exitCode"], 3);
    assert!(a["finishTime"].is_string());
    assert_eq!(
        g["properties"]["instanceView"]["state"], "Running",
        "b still runs"
    );
    emu.emu.exit_container("never", "b", 0).await?;
    let g = emu.get_group("never").await?.body;
    assert_eq!(g["properties"]["instanceView"]["state"], "Failed");

    // OnFailure: a failure restarts, a success ends.
    emu.emu.exit_container("onfailure", "a", 2).await?;
    let g = emu.get_group("onfailure").await?.body;
    let view = &container(&g, "a")["properties"]["instanceView"];
    assert_eq!(view["currentState"]["state"], "Running");
    assert_eq!(view["restartCount"], 1);
    assert_eq!(view["previousState"]["state"], "Terminated");
    assert_eq!(view["previousState"]["exitCode"], 2);
    emu.emu.exit_container("onfailure", "a", 0).await?;
    emu.emu.exit_container("onfailure", "b", 0).await?;
    let g = emu.get_group("onfailure").await?.body;
    assert_eq!(current_state(&g, "a")["exitCode"], 0);
    assert_eq!(g["properties"]["instanceView"]["state"], "Succeeded");

    // Always: even exit 0 restarts.
    emu.emu.exit_container("always", "a", 0).await?;
    emu.emu.exit_container("always", "a", 1).await?;
    let g = emu.get_group("always").await?.body;
    let view = &container(&g, "a")["properties"]["instanceView"];
    assert_eq!(view["currentState"]["state"], "Running");
    assert_eq!(view["restartCount"], 2);
    assert_eq!(view["previousState"]["exitCode"], 1);
    let started = view["events"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["name"] == "Started"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(started["count"], 3);
    assert_eq!(g["properties"]["instanceView"]["state"], "Running");
    emu.emu.stop().await
}

#[tokio::test]
async fn invalid_groups_are_rejected_with_aci_error_codes() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions::default()).await?;
    let ok = || simple_group("Never", &[("a", &[])]);
    let mut cases: Vec<(String, Value, &str)> = Vec::new();
    cases.push(("Bad_Name".to_owned(), ok(), "InvalidContainerGroupName"));
    cases.push(("-lead".to_owned(), ok(), "InvalidContainerGroupName"));
    cases.push(("a".repeat(64), ok(), "InvalidContainerGroupName"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]
        .as_object_mut()
        .map(|o| o.remove("image"));
    cases.push(("noimage".to_owned(), v, "InvalidRequestContent"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]
        .as_object_mut()
        .map(|o| o.remove("resources"));
    cases.push(("nores".to_owned(), v, "InvalidRequestContent"));
    let mut v = simple_group("Never", &[("a", &[]), ("b", &[])]);
    v["properties"]["containers"][0]["properties"]["resources"]["limits"] = json!({"cpu": 1.5});
    cases.push((
        "limit".to_owned(),
        v,
        "ContainerLimitGreaterThanContainerGroupTotalRequest",
    ));
    cases.push((
        "dup".to_owned(),
        simple_group("Never", &[("a", &[]), ("a", &[])]),
        "DuplicateContainerName",
    ));
    cases.push((
        "badc".to_owned(),
        simple_group("Never", &[("A_b", &[])]),
        "InvalidContainerName",
    ));
    let mut v = ok();
    v["properties"]["ipAddress"] = json!({"type": "Public", "ports": [{"port": 8080}]});
    cases.push(("ports".to_owned(), v, "InvalidIpAddressPorts"));
    let mut v = ok();
    v["properties"]["ipAddress"] = json!({"type": "Public", "ports": []});
    cases.push(("noports".to_owned(), v, "MissingIpAddressPorts"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]["volumeMounts"] =
        json!([{"name": "nope", "mountPath": "/x"}]);
    cases.push(("vol".to_owned(), v, "InvalidVolumeMount"));
    let mut v = ok();
    v["properties"]["restartPolicy"] = json!("Sometimes");
    cases.push(("policy".to_owned(), v, "InvalidRequestContent"));
    // As strict as the 2023-05-01 definition: osType and ipAddress.type are required, enums
    // are enums, an environment variable has exactly one of value and secureValue.
    let mut v = ok();
    v["properties"].as_object_mut().map(|o| o.remove("osType"));
    cases.push(("noostype".to_owned(), v, "InvalidRequestContent"));
    let mut v = ok();
    v["properties"]["osType"] = json!("Plan9");
    cases.push(("badostype".to_owned(), v, "InvalidRequestContent"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]["ports"] = json!([{"port": 80}]);
    v["properties"]["ipAddress"] = json!({"ports": [{"port": 80}]});
    cases.push(("noiptype".to_owned(), v, "InvalidRequestContent"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]["ports"] = json!([{"port": 80}]);
    v["properties"]["ipAddress"] = json!({"type": "Elastic", "ports": [{"port": 80}]});
    cases.push(("badiptype".to_owned(), v, "InvalidRequestContent"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]["ports"] =
        json!([{"port": 80, "protocol": "SCTP"}]);
    cases.push(("badproto".to_owned(), v, "InvalidRequestContent"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]["environmentVariables"] =
        json!([{"name": "EMPTY"}]);
    cases.push(("noenvvalue".to_owned(), v, "InvalidEnvironmentVariable"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]["environmentVariables"] =
        json!([{"name": "BOTH", "value": "a", "secureValue": "b"}]);
    cases.push(("bothenv".to_owned(), v, "InvalidEnvironmentVariable"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]["securityContext"] =
        json!({"runAsUser": 4_294_967_295_u64});
    cases.push(("uid".to_owned(), v, "InvalidRequestContent"));
    let mut v = ok();
    v["properties"]["containers"][0]["properties"]["securityContext"] =
        json!({"capabilities": {"add": "NET_ADMIN"}});
    cases.push(("caps".to_owned(), v, "InvalidRequestContent"));

    for (name, body, code) in &cases {
        let r = emu.put_group(name, body).await?;
        assert_eq!(r.status, 400, "{name}: {}", r.text);
        assert_eq!(r.body["error"]["code"], *code, "{name}: {}", r.text);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let limit = emu.put_group("limit", &cases[5].1).await?;
    let no_os = emu.put_group("noostype", &cases[12].1).await?;
    assert!(
        no_os.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'osType'")),
        "{}",
        no_os.text
    );
    assert_eq!(
        limit.body["error"]["message"],
        "The 'Cpu' limit '1.5' in container 'a' is greater than the total request '1' of container group 'limit'."
    );
    let s = emu.emu.stats().await?;
    assert_eq!((s.created, s.live), (0, 0), "nothing invalid was stored");
    // A limit within the group's total (two containers of 0.5) is fine.
    let mut v = simple_group("Never", &[("a", &[]), ("b", &[])]);
    v["properties"]["containers"][0]["properties"]["resources"]["limits"] = json!({"cpu": 1.0});
    assert_eq!(emu.put_group("limit-ok", &v).await?.status, 201);
    emu.emu.stop().await
}

#[tokio::test]
async fn secure_values_are_hidden_from_get_but_stored() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions::default()).await?;
    let mut spec = simple_group("Always", &[("a", &[])]);
    spec["properties"]["containers"][0]["properties"]["environmentVariables"] = json!([
        {"name": "PLAIN", "value": "visible-value"},
        {"name": "SECRET", "secureValue": "s3cr3t-value"}
    ]);
    let put = emu.put_group("sec", &spec).await?;
    assert_eq!(put.status, 201);
    let get = emu.get_group("sec").await?;
    let list = emu
        .arm("GET", &format!("{}?{API}", Emu::groups_path()), None)
        .await?;
    for r in [&put, &get, &list] {
        assert!(!r.text.contains("s3cr3t-value"), "{}", r.text);
        assert!(r.text.contains("visible-value"));
    }
    let env = &container(&get.body, "a")["properties"]["environmentVariables"];
    assert_eq!(
        env,
        &json!([{"name": "PLAIN", "value": "visible-value"}, {"name": "SECRET"}])
    );
    let stored = emu.emu.stored_group("sec").await?;
    assert_eq!(
        stored.as_ref(),
        Some(&spec),
        "the admin API returns exactly the PUT body"
    );
    assert_eq!(emu.emu.stored_group("missing").await?, None);
    assert!(!emu.log().contains("s3cr3t-value"));
    emu.emu.stop().await
}

#[tokio::test]
async fn put_is_idempotent_list_and_delete_work() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions::default()).await?;
    let spec = simple_group("Never", &[("a", &[])]);
    assert_eq!(emu.put_group("one", &spec).await?.status, 201);
    assert_eq!(
        emu.put_group("one", &spec).await?.status,
        200,
        "same content again"
    );
    assert_eq!(emu.put_group("two", &spec).await?.status, 201);
    let s = emu.emu.stats().await?;
    assert_eq!((s.created, s.live, s.deleted), (2, 2, 0));

    let list = emu
        .arm("GET", &format!("{}?{API}", Emu::groups_path()), None)
        .await?;
    assert_eq!(list.status, 200);
    let names: Vec<&str> = list.body["value"]
        .as_array()
        .map(|v| v.iter().filter_map(|g| g["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["one", "two"]);

    let del = emu.arm("DELETE", &Emu::group_path("one"), None).await?;
    assert_eq!(del.status, 200, "{}", del.text);
    assert_eq!(del.body["name"], "one");
    let gone = emu.get_group("one").await?;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.body["error"]["code"], "ResourceNotFound");
    assert_eq!(
        emu.arm("DELETE", &Emu::group_path("one"), None)
            .await?
            .status,
        204
    );
    let s = emu.emu.stats().await?;
    assert_eq!((s.created, s.live, s.deleted), (2, 1, 1));
    emu.emu.stop().await
}

#[tokio::test]
async fn logs_show_start_command_and_heartbeats_with_tail() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 50,
        log_heartbeat_ms: 100,
        ..Default::default()
    })
    .await?;
    let mut spec = simple_group("Always", &[("web", &["nginx", "-g", "daemon off;"])]);
    spec["properties"]["containers"][0]["properties"]["environmentVariables"] = json!([{"name": "TOKEN", "secureValue": "never-print-me"}, {"name": "V", "value": "plain-env"}]);
    emu.put_group("logs", &spec).await?;
    let base = format!("{}/logs/containers/web/logs", Emu::groups_path());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let content = loop {
        let r = emu.arm("GET", &format!("{base}?{API}"), None).await?;
        assert_eq!(r.status, 200, "{}", r.text);
        let content = r.body["content"].as_str().unwrap_or_default().to_owned();
        if content.contains("heartbeat 4") || tokio::time::Instant::now() > deadline {
            break content;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = content.lines().collect();
    assert_eq!(
        lines[0],
        "Emulated container web started from image busybox:1.36"
    );
    assert_eq!(lines[1], "command: nginx -g daemon off;");
    assert_eq!(lines[2], "heartbeat 1");
    assert!(lines.contains(&"heartbeat 4"), "{content}");
    assert!(!content.contains("never-print-me") && !content.contains("plain-env"));

    let r = emu
        .arm("GET", &format!("{base}?{API}&tail=2"), None)
        .await?;
    let tail: Vec<&str> = r.body["content"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .collect();
    assert_eq!(tail.len(), 2);
    assert!(tail.iter().all(|l| l.starts_with("heartbeat ")), "{tail:?}");

    let r = emu
        .arm("GET", &format!("{base}?{API}&tail=1&timestamps=true"), None)
        .await?;
    let line = r.body["content"]
        .as_str()
        .unwrap_or_default()
        .trim_end()
        .to_owned();
    let (ts, text) = line.split_once(' ').unwrap_or_default();
    assert!(ts.ends_with('Z') && ts.contains('T'), "{line}");
    assert!(text.starts_with("heartbeat "));

    let missing = emu
        .arm(
            "GET",
            &format!("{}/logs/containers/nope/logs?{API}", Emu::groups_path()),
            None,
        )
        .await?;
    assert_eq!(missing.status, 404);
    emu.emu.stop().await
}

#[tokio::test]
async fn throttled_requests_get_429_with_retry_after_and_have_no_effect() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        retry_after_secs: 7,
        ..Default::default()
    })
    .await?;
    emu.emu.set_throttle_rate(1.0).await?;
    let spec = simple_group("Never", &[("a", &[])]);
    for _ in 0..3 {
        let r = emu.put_group("thr", &spec).await?;
        assert_eq!(r.status, 429);
        assert_eq!(
            r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("7")
        );
        assert!(
            r.body["error"]["code"]
                .as_str()
                .is_some_and(|c| c.contains("Throttled"))
        );
    }
    assert_eq!(emu.emu.stored_group("thr").await?, None);
    let s = emu.emu.stats().await?;
    assert_eq!((s.throttled, s.created, s.requests), (3, 0, 3));
    emu.emu.set_throttle_rate(0.0).await?;
    assert_eq!(emu.put_group("thr", &spec).await?.status, 201);

    // Part-way: some requests are throttled, some not.
    emu.emu.set_throttle_rate(0.5).await?;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        seen.insert(emu.get_group("thr").await?.status);
    }
    assert_eq!(seen, [200, 429].into_iter().collect());
    emu.emu.stop().await
}

#[tokio::test]
async fn api_version_and_resource_group_are_checked() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions::default()).await?;
    let base = format!("{}/x", Emu::groups_path());
    let r = emu.arm("GET", &base, None).await?;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("MissingApiVersionParameter"))
    );
    let r = emu
        .arm("GET", &format!("{base}?api-version=1999-01-01"), None)
        .await?;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("NoRegisteredProviderFound"))
    );
    let other_rg = Emu::groups_path().replace("/vk-rg/", "/other-rg/");
    let r = emu.arm("GET", &format!("{other_rg}/x?{API}"), None).await?;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("ResourceGroupNotFound"))
    );
    // ARM paths are case-insensitive.
    let r = emu
        .arm(
            "GET",
            &format!("{}?{API}", Emu::groups_path().to_lowercase()),
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text);
    emu.emu.stop().await
}

/// Removes the group's and every (init) container's `instanceView`.
fn without_instance_views(mut g: Value) -> Value {
    let props = &mut g["properties"];
    props.as_object_mut().map(|o| o.remove("instanceView"));
    for key in ["initContainers", "containers"] {
        for c in props[key].as_array_mut().into_iter().flatten() {
            c["properties"]
                .as_object_mut()
                .map(|o| o.remove("instanceView"));
        }
    }
    g
}

#[tokio::test]
async fn list_omits_the_instance_views_get_put_and_delete_return() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 50,
        ..Default::default()
    })
    .await?;
    let mut spec = simple_group("Always", &[("app", &[]), ("side", &["sleep", "1d"])]);
    spec["tags"] = json!({"team": "vk"});
    spec["identity"] = json!({"type": "SystemAssigned"});
    spec["properties"]["initContainers"] =
        json!([{"name": "init", "properties": {"image": "busybox"}}]);
    spec["properties"]["containers"][0]["properties"]["ports"] = json!([{"port": 80}]);
    spec["properties"]["ipAddress"] =
        json!({"type": "Public", "ports": [{"port": 80, "protocol": "TCP"}]});
    assert_eq!(emu.put_group("lv", &spec).await?.status, 201);
    let got = emu
        .wait_group("lv", "running", |g| {
            g["properties"]["instanceView"]["state"] == "Running"
        })
        .await?;
    let has_views = |g: &Value| {
        g["properties"]["instanceView"]["state"].is_string()
            && ["initContainers", "containers"].iter().all(|k| {
                g["properties"][k].as_array().is_some_and(|cs| {
                    cs.iter()
                        .all(|c| c["properties"]["instanceView"]["currentState"].is_object())
                })
            })
    };
    assert!(has_views(&got), "GET: {got}");

    let list = emu
        .arm("GET", &format!("{}?{API}", Emu::groups_path()), None)
        .await?;
    assert_eq!(list.status, 200, "{}", list.text);
    let entry = &list.body["value"][0];
    assert!(!list.text.contains("instanceView"), "{}", list.text);
    // Everything else is there, exactly as GET returns it.
    assert_eq!(entry, &without_instance_views(got.clone()));
    assert_eq!(entry["properties"]["provisioningState"], "Succeeded");
    assert_eq!(entry["tags"], json!({"team": "vk"}));
    assert!(entry["properties"]["ipAddress"]["ip"].is_string());
    assert_eq!(
        container(entry, "side")["properties"]["command"],
        json!(["sleep", "1d"])
    );
    assert_eq!(
        entry["identity"]["principalId"], got["identity"]["principalId"],
        "the identity's principal id is stable"
    );

    let mut changed = spec.clone();
    changed["tags"] = json!({"team": "other"});
    let put = emu.put_group("lv", &changed).await?;
    assert_eq!(put.status, 200, "{}", put.text);
    assert!(
        put.body["properties"]["instanceView"].is_object(),
        "PUT: {}",
        put.text
    );
    let running = emu
        .wait_group("lv", "running again", |g| {
            g["properties"]["instanceView"]["state"] == "Running"
        })
        .await?;
    assert_eq!(
        running["identity"]["principalId"],
        got["identity"]["principalId"]
    );
    let del = emu.arm("DELETE", &Emu::group_path("lv"), None).await?;
    assert_eq!(del.status, 200, "{}", del.text);
    assert!(has_views(&del.body), "DELETE: {}", del.text);
    emu.emu.stop().await
}

#[tokio::test]
async fn stats_count_arm_requests_per_operation() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions::default()).await?;
    let ops = |pairs: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    let zero = ops(&[
        ("put", 0),
        ("get", 0),
        ("list", 0),
        ("delete", 0),
        ("logs", 0),
        ("exec", 0),
        ("attach", 0),
        ("operation", 0),
        ("metrics", 0),
    ]);
    assert_eq!(emu.emu.stats().await?.ops, zero, "all nine, zeros included");

    let spec = simple_group("Always", &[("a", &[])]);
    assert_eq!(emu.put_group("ops", &spec).await?.status, 201);
    assert_eq!(emu.put_group("ops", &spec).await?.status, 200);
    assert_eq!(emu.put_group("Bad_Name", &spec).await?.status, 400);
    assert_eq!(emu.get_group("ops").await?.status, 200);
    assert_eq!(emu.get_group("missing").await?.status, 404);
    let list = format!("{}?{API}", Emu::groups_path());
    assert_eq!(emu.arm("GET", &list, None).await?.status, 200);
    let no_version = Emu::groups_path();
    assert_eq!(emu.arm("GET", &no_version, None).await?.status, 400);
    let logs = format!("{}/ops/containers/nope/logs?{API}", Emu::groups_path());
    assert_eq!(emu.arm("GET", &logs, None).await?.status, 404);
    let exec = format!("{}/missing/containers/a/exec?{API}", Emu::groups_path());
    let exec_body = json!({"command": "/bin/sh"});
    assert_eq!(emu.arm("POST", &exec, Some(&exec_body)).await?.status, 404);
    // Not counted operations: group actions, other methods, unauthenticated requests.
    let stop = format!("{}/ops/stop?{API}", Emu::groups_path());
    assert_eq!(emu.arm("POST", &stop, None).await?.status, 204);
    assert_eq!(
        emu.arm("POST", &Emu::group_path("ops"), None).await?.status,
        405
    );
    let unauth = emu
        .raw("GET", &Emu::group_path("ops"), &[], String::new())
        .await?;
    assert_eq!(unauth.status, 401);
    assert_eq!(
        emu.arm("DELETE", &Emu::group_path("ops"), None)
            .await?
            .status,
        200
    );
    // Throttled requests count too.
    emu.emu.set_throttle_rate(1.0).await?;
    assert_eq!(emu.get_group("ops").await?.status, 429);

    let s = emu.emu.stats().await?;
    assert_eq!(
        s.ops,
        ops(&[
            ("put", 3),
            ("get", 3),
            ("list", 2),
            ("delete", 1),
            ("logs", 1),
            ("exec", 1),
            ("attach", 0),
            ("operation", 0),
            ("metrics", 0),
        ])
    );
    // The older counters keep their meaning.
    assert_eq!(
        (
            s.requests,
            s.throttled,
            s.auth_failures,
            s.created,
            s.deleted,
            s.live
        ),
        (14, 1, 1, 1, 1, 0)
    );
    emu.emu.stop().await
}

#[tokio::test]
async fn metrics_list_answers_cpu_and_memory_per_container() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 50,
        ..Default::default()
    })
    .await?;
    let spec = simple_group("Always", &[("a", &[])]);
    assert_eq!(emu.put_group("m", &spec).await?.status, 201);
    emu.wait_group("m", "running", |g| {
        g["properties"]["instanceView"]["state"] == "Running"
    })
    .await?;
    let base = format!(
        "{}/m/providers/Microsoft.Insights/metrics",
        Emu::groups_path()
    );
    let r = emu
        .arm(
            "GET",
            &format!(
                "{base}?api-version=2018-01-01&metricnames=CpuUsage,MemoryUsage&aggregation=Average&interval=PT1M&$filter=containerName%20eq%20%27*%27"
            ),
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = &r.body["value"];
    assert_eq!(v[0]["name"]["value"], "CpuUsage");
    assert_eq!(v[1]["name"]["value"], "MemoryUsage");
    assert_eq!(v[1]["unit"], "Bytes");
    let series = &v[0]["timeseries"][0];
    assert_eq!(series["metadatavalues"][0]["value"], "a");
    let points = series["data"].as_array().cloned().unwrap_or_default();
    assert!(
        points
            .last()
            .is_some_and(|p| p["average"].as_f64() == Some(5.0)),
        "the running container's current minute: {points:?}"
    );
    // Metric names outside the reference's list, and ACI's api-version, are refused.
    let bad = emu
        .arm(
            "GET",
            &format!("{base}?api-version=2018-01-01&metricnames=Nope"),
            None,
        )
        .await?;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let wrong_version = emu
        .arm("GET", &format!("{base}?api-version=2023-05-01"), None)
        .await?;
    assert_eq!(wrong_version.status, 400);
    emu.emu.stop().await
}
