//! End-to-end tests of the emulator binary over HTTP, with V3-signed requests.

mod common;

use std::time::Duration;

use common::{Call, Emu, STS_AK, STS_SECRET, STS_TOKEN};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const R: (&str, &str) = ("RegionId", "cn-hangzhou");

fn code(v: &Value) -> &str {
    v["Code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn signature_checks_accept_good_requests_and_reject_bad_ones() -> anyhow::Result<()> {
    let emu = Emu::start(&[]).await?;
    let (s, v) = emu.call("DescribeContainerGroups", &[R]).await?;
    assert_eq!((s, &v["TotalCount"]), (200, &Value::from(0)), "{v}");
    assert!(v["RequestId"].is_string());

    // Parameters in the query string (GET) are signed through the canonical query string.
    let get = Call {
        in_query: true,
        ..Call::default()
    };
    let (s, v) = emu
        .call_with(
            &get,
            "DescribeContainerGroups",
            &[R, ("ContainerGroupName", "a b*c")],
        )
        .await?;
    assert_eq!(s, 200, "{v}");

    let wrong = Call {
        secret: "NotTheSecret".into(),
        ..Call::default()
    };
    let (s, v) = emu
        .call_with(&wrong, "DescribeContainerGroups", &[R])
        .await?;
    assert_eq!((s, code(&v)), (400, "SignatureDoesNotMatch"));
    assert!(v["HostId"].is_string() && v["Recommend"].is_string() && v["RequestId"].is_string());
    assert!(!v.to_string().contains("NotTheSecret") && !v.to_string().contains(common::SECRET));

    let unknown = Call {
        ak: "LTAI5tSomebodyElse".into(),
        ..Call::default()
    };
    let (s, v) = emu
        .call_with(&unknown, "DescribeContainerGroups", &[R])
        .await?;
    assert_eq!((s, code(&v)), (404, "InvalidAccessKeyId.NotFound"));

    let fixed = Call {
        nonce: Some("nonce-used-twice".into()),
        ..Call::default()
    };
    let (s, _) = emu
        .call_with(&fixed, "DescribeContainerGroups", &[R])
        .await?;
    assert_eq!(s, 200);
    let (s, v) = emu
        .call_with(&fixed, "DescribeContainerGroups", &[R])
        .await?;
    assert_eq!((s, code(&v)), (400, "SignatureNonceUsed"));

    let old = Call {
        date: Some("2023-10-26T10:22:32Z".into()),
        ..Call::default()
    };
    let (s, v) = emu.call_with(&old, "DescribeContainerGroups", &[R]).await?;
    assert_eq!((s, code(&v)), (400, "InvalidTimeStamp.Expired"));

    let sts = Call {
        ak: STS_AK.into(),
        secret: STS_SECRET.into(),
        token: Some(STS_TOKEN.into()),
        ..Call::default()
    };
    let (s, v) = emu.call_with(&sts, "DescribeContainerGroups", &[R]).await?;
    assert_eq!(s, 200, "{v}");
    let bad_token = Call {
        token: Some("forged".into()),
        ..sts.clone()
    };
    let (s, v) = emu
        .call_with(&bad_token, "DescribeContainerGroups", &[R])
        .await?;
    assert_eq!((s, code(&v)), (400, "InvalidSecurityToken.Malformed"));
    let no_token = Call {
        token: None,
        ..sts.clone()
    };
    let (s, v) = emu
        .call_with(&no_token, "DescribeContainerGroups", &[R])
        .await?;
    assert_eq!((s, code(&v)), (400, "InvalidSecurityToken.Malformed"));

    let (s, v) = emu.call("DescribeNothing", &[R]).await?;
    assert_eq!((s, code(&v)), (404, "InvalidAction.NotFound"));
    let old_version = Call {
        version: "2017-01-01".into(),
        ..Call::default()
    };
    let (s, v) = emu
        .call_with(&old_version, "DescribeContainerGroups", &[R])
        .await?;
    assert_eq!((s, code(&v)), (400, "InvalidVersion"));

    let (s, v) = emu.admin("POST", "/", "").await?;
    assert_eq!((s, code(&v)), (400, "MissingParameter"));

    let stats = emu.stats().await?;
    assert_eq!(stats["auth_failures"], 7, "{stats}");
    assert_eq!(stats["requests"], 13, "{stats}");
    Ok(())
}

/// The API reference's CreateContainerGroup example request (adapted to the emulator's network).
fn documented_example() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ContainerGroupName", "test"),
        ("SecurityGroupId", "sg-emulator0001"),
        ("VSwitchId", "vsw-emulator0001"),
        ("ZoneId", "cn-hangzhou-h"),
        ("RestartPolicy", "Always"),
        ("Cpu", "2.0"),
        ("Memory", "4.0"),
        ("Tag.1.Key", "name"),
        ("Tag.1.Value", "test"),
        ("Container.1.Name", "nginx"),
        ("Container.1.Image", "nginx:latest"),
        ("Container.1.Cpu", "1.0"),
        ("Container.1.Memory", "2.0"),
        ("Container.1.WorkingDir", "/usr/local/nginx"),
        ("Container.1.ImagePullPolicy", "Always"),
        ("Container.1.Command.1", "/bin/sh"),
        ("Container.1.Arg.1", "10"),
        ("Container.1.Port.1.Port", "80"),
        ("Container.1.Port.1.Protocol", "TCP"),
        ("Container.1.EnvironmentVar.1.Key", "PATH"),
        ("Container.1.EnvironmentVar.1.Value", "/usr/local/bin"),
        ("Container.1.VolumeMount.1.Name", "default-volume1"),
        ("Container.1.VolumeMount.1.MountPath", "/pod/data"),
        ("Container.1.ReadinessProbe.HttpGet.Path", "/usr/nginx/"),
        ("Container.1.ReadinessProbe.HttpGet.Port", "8080"),
        ("Container.1.LivenessProbe.TcpSocket.Port", "8000"),
        ("InitContainer.1.Name", "init"),
        ("InitContainer.1.Image", "nginx:latest"),
        ("Volume.1.Name", "default-volume1"),
        ("Volume.1.Type", "ConfigFileVolume"),
        (
            "Volume.1.ConfigFileVolume.ConfigFileToPath.1.Content",
            "bGl1bWk=",
        ),
        (
            "Volume.1.ConfigFileVolume.ConfigFileToPath.1.Path",
            "/usr/bin/",
        ),
        ("Volume.2.Name", "empty"),
        ("Volume.2.Type", "EmptyDirVolume"),
        ("DnsConfig.NameServer.1", "1.2.3.4"),
        ("DnsConfig.Option.1.Name", "ndots"),
        ("DnsConfig.Option.1.Value", "2"),
        ("HostAliase.1.Ip", "1.1.1.1"),
        ("HostAliase.1.Hostname.1", "hehe.com"),
        (
            "ImageRegistryCredential.1.Server",
            "registry-vpc.cn-hangzhou.aliyuncs.com",
        ),
        ("ImageRegistryCredential.1.UserName", "username"),
        ("ImageRegistryCredential.1.Password", "password"),
    ]
}

#[tokio::test]
async fn documented_create_example_goes_pending_then_running() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "400"]).await?;
    let id = emu.create(&documented_example()).await?;
    assert!(id.starts_with("eci-"), "{id}");
    let ids = format!("[\"{id}\"]");
    let (_, v) = emu
        .call("DescribeContainerGroups", &[R, ("ContainerGroupIds", &ids)])
        .await?;
    let g = &v["ContainerGroups"][0];
    assert_eq!(g["Status"], "Pending");
    assert_eq!(g["Containers"][0]["CurrentState"]["State"], "Waiting");

    let g = emu.wait_status(&id, "Running").await?;
    assert_eq!(g["ContainerGroupName"], "test");
    assert_eq!(g["ZoneId"], "cn-hangzhou-h");
    assert_eq!(g["Cpu"], 2.0);
    assert_eq!(g["Tags"][0]["Key"], "name");
    assert!(g["IntranetIp"].as_str().is_some_and(|ip| !ip.is_empty()));
    let c = &g["Containers"][0];
    assert_eq!(c["CurrentState"]["State"], "Running");
    assert!(
        c["CurrentState"]["StartTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(c["Commands"][0], "/bin/sh");
    assert_eq!(c["Args"][0], "10");
    assert_eq!(c["Ports"][0]["Port"], 80);
    assert_eq!(c["EnvironmentVars"][0]["Value"], "/usr/local/bin");
    assert_eq!(c["VolumeMounts"][0]["MountPath"], "/pod/data");
    assert_eq!(
        g["InitContainers"][0]["CurrentState"]["State"],
        "Terminated"
    );
    assert_eq!(g["InitContainers"][0]["CurrentState"]["ExitCode"], 0);
    assert_eq!(
        g["Volumes"][0]["ConfigFileVolumeConfigFileToPaths"][0]["Path"],
        "/usr/bin/"
    );
    assert_eq!(g["DnsConfig"]["NameServers"][0], "1.2.3.4");
    assert_eq!(g["HostAliases"][0]["Hostnames"][0], "hehe.com");
    assert!(
        !g.to_string().contains("\"password\""),
        "registry passwords are not echoed"
    );

    let (s, stored) = emu
        .admin("GET", &format!("/_emulator/groups/{id}"), "")
        .await?;
    assert_eq!(s, 200);
    assert_eq!(stored["params"]["Container.1.Image"], "nginx:latest");
    assert_eq!(
        stored["params"]["ImageRegistryCredential.1.Password"],
        "password"
    );
    let (s, _) = emu.admin("GET", "/_emulator/groups/test", "").await?;
    assert_eq!(s, 200, "lookup by name");

    let (s, v) = emu
        .call(
            "DescribeContainerGroupStatus",
            &[R, ("ContainerGroupIds", &ids)],
        )
        .await?;
    assert_eq!(s, 200);
    assert_eq!(v["Data"][0]["Status"], "Running");
    assert!(
        v["Data"][0]["PodStatus"]["ContainerStatuses"][0]["State"]["Running"]["StartedAtstartedAt"]
            .is_string()
    );

    let (s, _) = emu
        .call("DeleteContainerGroup", &[R, ("ContainerGroupId", &id)])
        .await?;
    assert_eq!(s, 200);
    let (_, v) = emu
        .call("DescribeContainerGroups", &[R, ("ContainerGroupIds", &ids)])
        .await?;
    assert_eq!(v["TotalCount"], 0);
    let (s, v) = emu
        .call("DeleteContainerGroup", &[R, ("ContainerGroupId", &id)])
        .await?;
    assert_eq!((s, code(&v)), (404, "InvalidContainerGroupId.NotFound"));
    let stats = emu.stats().await?;
    assert_eq!(
        (
            stats["created"].as_u64(),
            stats["deleted"].as_u64(),
            stats["live"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    Ok(())
}

#[tokio::test]
async fn create_validation_uses_documented_codes() -> anyhow::Result<()> {
    let emu = Emu::start(&[]).await?;
    let base = [
        ("RegionId", "cn-hangzhou"),
        ("ContainerGroupName", "ok-name"),
        ("Container.1.Name", "c1"),
        ("Container.1.Image", "busybox"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = base.to_vec();
        for (k, val) in extra {
            v.retain(|(bk, _)| bk != k);
            v.push((k, val));
        }
        v
    };
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            with(&[("VSwitchId", "vsw-other")]),
            404,
            "InvalidVSwitchId.NotFound",
        ),
        (
            with(&[("SecurityGroupId", "sg-other")]),
            404,
            "InvalidSecurityGroupId.NotFound",
        ),
        (
            with(&[("ContainerGroupName", "Bad_Name")]),
            400,
            "InvalidParameter",
        ),
        (
            with(&[("RestartPolicy", "Sometimes")]),
            400,
            "InvalidParameter",
        ),
        (with(&[("RegionId", "cn-beijing")]), 400, "InvalidRegionId"),
        (
            base.iter()
                .filter(|(k, _)| *k != "Container.1.Image")
                .copied()
                .collect(),
            400,
            "MissingContainer.1.Image",
        ),
        (
            base.iter()
                .filter(|(k, _)| *k != "ContainerGroupName")
                .copied()
                .collect(),
            400,
            "MissingContainerGroupName",
        ),
    ];
    for (params, status, expected) in cases {
        let (s, v) = emu.call("CreateContainerGroup", &params).await?;
        assert_eq!((s, code(&v)), (status, expected), "{params:?}");
    }
    assert_eq!(emu.stats().await?["created"], 0);
    Ok(())
}

#[tokio::test]
async fn client_token_returns_the_same_group() -> anyhow::Result<()> {
    let emu = Emu::start(&[]).await?;
    let p = [
        ("ContainerGroupName", "idem"),
        ("Container.1.Name", "c"),
        ("Container.1.Image", "busybox"),
        ("ClientToken", "tok-1"),
    ];
    let a = emu.create(&p).await?;
    let b = emu.create(&p).await?;
    assert_eq!(a, b);
    let stats = emu.stats().await?;
    assert_eq!(
        (stats["created"].as_u64(), stats["live"].as_u64()),
        (Some(1), Some(1))
    );
    let c = emu
        .create(&[
            ("ContainerGroupName", "idem"),
            ("Container.1.Name", "c"),
            ("Container.1.Image", "busybox"),
            ("ClientToken", "tok-2"),
        ])
        .await?;
    assert_ne!(a, c);
    Ok(())
}

#[tokio::test]
async fn tag_filter_and_paging_over_45_groups() -> anyhow::Result<()> {
    let emu = Emu::start(&[]).await?;
    for i in 0..50 {
        let name = format!("grp-{i:02}");
        let team = if i < 45 { "blue" } else { "red" };
        emu.create(&[
            ("ContainerGroupName", &name),
            ("Container.1.Name", "c"),
            ("Container.1.Image", "busybox"),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", team),
        ])
        .await?;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let mut p = vec![
            R,
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "blue"),
            ("Limit", "20"),
        ];
        if !token.is_empty() {
            p.push(("NextToken", &token));
        }
        let (s, v) = emu.call("DescribeContainerGroups", &p).await?;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["TotalCount"], 45);
        pages += 1;
        let groups = v["ContainerGroups"].as_array().cloned().unwrap_or_default();
        assert!(groups.len() <= 20);
        seen.extend(
            groups
                .iter()
                .map(|g| g["ContainerGroupName"].as_str().unwrap_or("").to_owned()),
        );
        token = v["NextToken"].as_str().unwrap_or("").to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 45);
    assert!(seen.iter().all(|n| n.as_str() < "grp-45"));
    let (_, v) = emu
        .call("DescribeContainerGroups", &[R, ("Limit", "100")])
        .await?;
    assert_eq!(
        v["ContainerGroups"].as_array().map(Vec::len),
        Some(20),
        "Limit is capped at 20"
    );
    Ok(())
}

#[tokio::test]
async fn since_second_returns_only_recent_changes() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let old = emu
        .create(&[
            ("ContainerGroupName", "old"),
            ("Container.1.Name", "c"),
            ("Container.1.Image", "busybox"),
        ])
        .await?;
    emu.wait_status(&old, "Running").await?;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let new = emu
        .create(&[
            ("ContainerGroupName", "new"),
            ("Container.1.Name", "c"),
            ("Container.1.Image", "busybox"),
        ])
        .await?;
    let (_, v) = emu
        .call("DescribeContainerGroupStatus", &[R, ("SinceSecond", "1")])
        .await?;
    let ids: Vec<&str> = v["Data"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|g| g["ContainerGroupId"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, vec![new.as_str()]);
    let (_, v) = emu
        .call("DescribeContainerGroupStatus", &[R, ("SinceSecond", "60")])
        .await?;
    assert_eq!(v["TotalCount"], 2);
    Ok(())
}

#[tokio::test]
async fn exits_follow_the_restart_policy() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let mk = |name: &'static str, policy: &'static str| {
        vec![
            ("ContainerGroupName", name),
            ("RestartPolicy", policy),
            ("Container.1.Name", "main"),
            ("Container.1.Image", "busybox"),
        ]
    };
    let never_ok = emu.create(&mk("never-ok", "Never")).await?;
    let never_bad = emu.create(&mk("never-bad", "Never")).await?;
    let on_failure = emu.create(&mk("on-failure", "OnFailure")).await?;
    for id in [&never_ok, &never_bad, &on_failure] {
        emu.wait_status(id, "Running").await?;
    }
    for (g, c) in [(&never_ok, 0), (&never_bad, 3), (&on_failure, 1)] {
        let path = format!("/_emulator/groups/{g}/containers/main/exit");
        let (s, _) = emu
            .admin("POST", &path, &format!("{{\"exit_code\": {c}}}"))
            .await?;
        assert_eq!(s, 204);
    }
    let g = emu.wait_status(&never_ok, "Succeeded").await?;
    assert_eq!(g["Containers"][0]["CurrentState"]["State"], "Terminated");
    assert_eq!(g["Containers"][0]["CurrentState"]["ExitCode"], 0);
    assert!(
        g["Containers"][0]["CurrentState"]["FinishTime"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let g = emu.wait_status(&never_bad, "Failed").await?;
    assert_eq!(g["Containers"][0]["CurrentState"]["ExitCode"], 3);
    assert_eq!(g["Containers"][0]["CurrentState"]["Reason"], "Error");
    let g = emu.wait_status(&on_failure, "Running").await?;
    assert_eq!(g["Containers"][0]["RestartCount"], 1);
    assert_eq!(g["Containers"][0]["PreviousState"]["State"], "Terminated");
    assert_eq!(g["Containers"][0]["PreviousState"]["ExitCode"], 1);
    let (s, _) = emu
        .admin(
            "POST",
            &format!("/_emulator/groups/{never_ok}/containers/main/exit"),
            "{\"exit_code\": 0}",
        )
        .await?;
    assert_eq!(s, 409, "a terminated container cannot exit again");
    Ok(())
}

#[tokio::test]
async fn logs_show_start_command_and_heartbeats_with_tail() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50", "--log-heartbeat-ms", "100"]).await?;
    let id = emu
        .create(&[
            ("ContainerGroupName", "logs"),
            ("Container.1.Name", "app"),
            ("Container.1.Image", "busybox:1"),
            ("Container.1.Command.1", "sleep"),
            ("Container.1.Arg.1", "3600"),
            ("Container.1.EnvironmentVar.1.Key", "TOKEN"),
            ("Container.1.EnvironmentVar.1.Value", "s3cret-value"),
        ])
        .await?;
    emu.wait_status(&id, "Running").await?;
    tokio::time::sleep(Duration::from_millis(650)).await;
    let (s, v) = emu
        .call(
            "DescribeContainerLog",
            &[R, ("ContainerGroupId", &id), ("ContainerName", "app")],
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ContainerName"], "app");
    let content = v["Content"].as_str().unwrap_or("");
    let lines: Vec<&str> = content.lines().collect();
    assert_eq!(
        lines[0],
        "Emulated container app started from image busybox:1"
    );
    assert_eq!(lines[1], "command: sleep 3600");
    assert_eq!(lines[2], "heartbeat 1");
    assert!(lines.len() >= 7, "{content}");
    assert!(!content.contains("s3cret-value"));
    let (_, v) = emu
        .call(
            "DescribeContainerLog",
            &[
                R,
                ("ContainerGroupId", &id),
                ("ContainerName", "app"),
                ("Tail", "2"),
            ],
        )
        .await?;
    let tail: Vec<&str> = v["Content"].as_str().unwrap_or("").lines().collect();
    assert_eq!(tail.len(), 2);
    assert!(tail.iter().all(|l| l.starts_with("heartbeat ")), "{tail:?}");
    let (s, v) = emu
        .call(
            "DescribeContainerLog",
            &[R, ("ContainerGroupId", &id), ("ContainerName", "nope")],
        )
        .await?;
    assert_eq!((s, code(&v)), (404, "InvalidContainerName.NotFound"));
    Ok(())
}

async fn running_group(emu: &Emu) -> anyhow::Result<String> {
    let id = emu
        .create(&[
            ("ContainerGroupName", "exec"),
            ("Container.1.Name", "app"),
            ("Container.1.Image", "busybox"),
            ("Container.1.EnvironmentVar.1.Key", "GREETING"),
            ("Container.1.EnvironmentVar.1.Value", "hello-from-env"),
        ])
        .await?;
    emu.wait_status(&id, "Running").await?;
    Ok(id)
}

#[tokio::test]
async fn exec_websocket_streams_output_and_exit_status() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let id = running_group(&emu).await?;
    let cmd = r#"["/bin/sh","-c","read line; echo \"out:$line:$GREETING\"; echo err >&2; exit 3"]"#;
    let (s, v) = emu
        .call(
            "ExecContainerCommand",
            &[
                R,
                ("ContainerGroupId", &id),
                ("ContainerName", "app"),
                ("Command", cmd),
            ],
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let uri = v["WebSocketUri"].as_str().unwrap_or("").to_owned();
    assert!(
        uri.starts_with(&format!("ws://127.0.0.1:{}/", emu.port)),
        "{uri}"
    );
    let mut request = uri.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse()?);
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v4.channel.k8s.io")
    );
    ws.send(Message::Binary([&[0u8][..], b"typed\n"].concat().into()))
        .await?;
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
        match msg? {
            Message::Binary(b) if !b.is_empty() => match b[0] {
                1 => stdout.extend_from_slice(&b[1..]),
                2 => stderr.extend_from_slice(&b[1..]),
                3 => status = Some(serde_json::from_slice::<Value>(&b[1..])?),
                _ => {}
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "out:typed:hello-from-env\n"
    );
    assert_eq!(String::from_utf8_lossy(&stderr), "err\n");
    let status = status.ok_or_else(|| anyhow::anyhow!("no status frame"))?;
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    // Single use.
    assert!(
        tokio_tungstenite::connect_async(uri.as_str())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn sync_exec_returns_the_output() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let id = running_group(&emu).await?;
    let cmd = r#"["/bin/sh","-c","echo $GREETING; pwd"]"#;
    let (s, v) = emu
        .call(
            "ExecContainerCommand",
            &[
                R,
                ("ContainerGroupId", &id),
                ("ContainerName", "app"),
                ("Command", cmd),
                ("Sync", "true"),
            ],
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let out = v["SyncResponse"].as_str().unwrap_or("");
    assert!(out.starts_with("hello-from-env\n"), "{out}");
    assert!(
        out.trim_end().ends_with(&id),
        "runs in the group's working directory: {out}"
    );
    let (s, v) = emu
        .call(
            "ExecContainerCommand",
            &[
                R,
                ("ContainerGroupId", &id),
                ("ContainerName", "app"),
                ("Command", cmd),
                ("Sync", "true"),
                ("TTY", "true"),
            ],
        )
        .await?;
    assert_eq!((s, code(&v)), (400, "InvalidParameter"));
    Ok(())
}

#[tokio::test]
async fn price_is_deterministic_and_documented_in_shape() -> anyhow::Result<()> {
    let emu = Emu::start(&[]).await?;
    let (s, v) = emu
        .call(
            "DescribeContainerGroupPrice",
            &[R, ("Cpu", "2"), ("Memory", "4")],
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let price = &v["PriceInfo"]["Price"];
    assert_eq!(price["Currency"], "CNY");
    assert_eq!(price["TradePrice"].as_f64(), Some(0.00012252));
    assert_eq!(price["DetailInfos"]["DetailInfo"][0]["Resource"], "cpu");
    let (_, v2) = emu
        .call(
            "DescribeContainerGroupPrice",
            &[R, ("Cpu", "4"), ("Memory", "8")],
        )
        .await?;
    assert_eq!(
        v2["PriceInfo"]["Price"]["TradePrice"].as_f64(),
        Some(0.00024504)
    );
    let (s, v) = emu
        .call("DescribeContainerGroupPrice", &[R, ("Memory", "4")])
        .await?;
    assert_eq!((s, code(&v)), (400, "MissingCpu"));
    Ok(())
}

#[tokio::test]
async fn throttling_at_rate_one_rejects_everything_without_effect() -> anyhow::Result<()> {
    let emu = Emu::start(&[]).await?;
    let (s, _) = emu
        .admin("PUT", "/_emulator/throttle", "{\"rate\": 1.0}")
        .await?;
    assert_eq!(s, 204);
    for _ in 0..5 {
        let (s, v) = emu
            .call(
                "CreateContainerGroup",
                &[
                    R,
                    ("ContainerGroupName", "t"),
                    ("Container.1.Name", "c"),
                    ("Container.1.Image", "busybox"),
                ],
            )
            .await?;
        assert_eq!((s, code(&v)), (400, "Throttling.User"));
    }
    let stats = emu.stats().await?;
    assert_eq!(
        (
            stats["throttled"].as_u64(),
            stats["created"].as_u64(),
            stats["live"].as_u64()
        ),
        (Some(5), Some(0), Some(0))
    );
    emu.admin("PUT", "/_emulator/throttle", "{\"rate\": 0}")
        .await?;
    let (s, v) = emu.call("DescribeContainerGroups", &[R]).await?;
    assert_eq!((s, &v["TotalCount"]), (200, &Value::from(0)));
    Ok(())
}

fn ids_of(v: &Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|g| g["ContainerGroupId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn lost_answers_apply_the_action_and_client_token_replays_find_it() -> anyhow::Result<()> {
    let emu = Emu::start(&["--lost-answer-rate", "1"]).await?;
    let p = [
        R,
        ("ContainerGroupName", "lost"),
        ("Container.1.Name", "c"),
        ("Container.1.Image", "busybox"),
        ("ClientToken", "tok-lost"),
    ];
    let (s, v) = emu.call("CreateContainerGroup", &p).await?;
    assert_eq!((s, code(&v)), (503, "ServiceUnavailable"), "{v}");
    assert_eq!(
        v["Message"],
        "The request has failed due to a temporary failure of the server."
    );
    assert!(v["RequestId"].is_string() && v["HostId"].is_string() && v["Recommend"].is_string());
    assert!(
        v.get("ContainerGroupId").is_none(),
        "the answer is lost: {v}"
    );
    let stats = emu.stats().await?;
    assert_eq!(
        (
            stats["created"].as_u64(),
            stats["live"].as_u64(),
            stats["lost_answers"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "the create was applied: {stats}"
    );
    let (_, v) = emu.call("DescribeContainerGroups", &[R]).await?;
    let ids = ids_of(&v, "ContainerGroups");
    assert_eq!(ids.len(), 1, "{v}");

    // Failed calls and other actions are never turned into lost answers.
    let (s, v) = emu
        .call(
            "DeleteContainerGroup",
            &[R, ("ContainerGroupId", "eci-doesnotexist")],
        )
        .await?;
    assert_eq!((s, code(&v)), (404, "InvalidContainerGroupId.NotFound"));

    let (s, _) = emu
        .admin("PUT", "/_emulator/faults", "{\"lost_answer_rate\": 0}")
        .await?;
    assert_eq!(s, 204);
    let (s, v) = emu.call("CreateContainerGroup", &p).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ContainerGroupId"].as_str(), Some(ids[0].as_str()));
    let stats = emu.stats().await?;
    assert_eq!(
        (stats["created"].as_u64(), stats["live"].as_u64()),
        (Some(1), Some(1)),
        "a replay is not a creation: {stats}"
    );

    let (s, _) = emu
        .admin("PUT", "/_emulator/faults", "{\"lost_answer_rate\": 1.0}")
        .await?;
    assert_eq!(s, 204);
    let del = [R, ("ContainerGroupId", ids[0].as_str())];
    let (s, v) = emu.call("DeleteContainerGroup", &del).await?;
    assert_eq!((s, code(&v)), (503, "ServiceUnavailable"), "{v}");
    let stats = emu.stats().await?;
    assert_eq!(
        (
            stats["deleted"].as_u64(),
            stats["live"].as_u64(),
            stats["lost_answers"].as_u64()
        ),
        (Some(1), Some(0), Some(2)),
        "the delete was applied: {stats}"
    );
    emu.admin("PUT", "/_emulator/faults", "{\"lost_answer_rate\": 0}")
        .await?;
    let (s, v) = emu.call("DeleteContainerGroup", &del).await?;
    assert_eq!((s, code(&v)), (404, "InvalidContainerGroupId.NotFound"));
    // The token stays spent: a replay still names the (now deleted) group, creating nothing.
    let (s, v) = emu.call("CreateContainerGroup", &p).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ContainerGroupId"].as_str(), Some(ids[0].as_str()));
    assert_eq!(emu.stats().await?["created"], 1);

    for bad in [
        "{\"lost_answer_rate\": 1.5}",
        "{\"rate\": 0.5}",
        "{\"lost_answer_rate\": 0.5, \"typo\": 1}",
        "",
    ] {
        let (s, _) = emu.admin("PUT", "/_emulator/faults", bad).await?;
        assert_eq!(s, 400, "{bad}");
    }
    Ok(())
}

#[tokio::test]
async fn since_second_sees_container_restarts() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let id = emu
        .create(&[
            ("ContainerGroupName", "restarts"),
            ("RestartPolicy", "Always"),
            ("Container.1.Name", "main"),
            ("Container.1.Image", "busybox"),
        ])
        .await?;
    emu.wait_status(&id, "Running").await?;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let recent = [R, ("SinceSecond", "1")];
    let (_, v) = emu.call("DescribeContainerGroupStatus", &recent).await?;
    assert_eq!(v["TotalCount"], 0, "nothing changed lately: {v}");

    let path = format!("/_emulator/groups/{id}/containers/main/exit");
    let (s, _) = emu.admin("POST", &path, "{\"exit_code\": 1}").await?;
    assert_eq!(s, 204);
    let (_, v) = emu.call("DescribeContainerGroupStatus", &recent).await?;
    assert_eq!(ids_of(&v, "Data"), vec![id.clone()], "{v}");
    let group = &v["Data"][0];
    assert_eq!(
        group["Status"], "Running",
        "the group status did not change"
    );
    let c = &group["PodStatus"]["ContainerStatuses"][0];
    assert_eq!(c["RestartCount"], 1);
    assert_eq!(c["LastState"]["Terminated"]["ExitCode"], 1);
    assert!(c["State"]["Running"].is_object(), "{c}");
    Ok(())
}

async fn log(emu: &Emu, id: &str, extra: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
    let mut p = vec![R, ("ContainerGroupId", id), ("ContainerName", "app")];
    p.extend_from_slice(extra);
    emu.call("DescribeContainerLog", &p).await
}

fn content(v: &Value) -> String {
    v["Content"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn container_log_last_time_is_the_previous_run() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50", "--log-heartbeat-ms", "100"]).await?;
    let id = emu
        .create(&[
            ("ContainerGroupName", "prev"),
            ("RestartPolicy", "OnFailure"),
            ("Container.1.Name", "app"),
            ("Container.1.Image", "busybox:1"),
        ])
        .await?;
    emu.wait_status(&id, "Running").await?;
    let (s, v) = log(&emu, &id, &[("LastTime", "true")]).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(content(&v), "", "no previous run yet");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let path = format!("/_emulator/groups/{id}/containers/app/exit");
    let (s, _) = emu.admin("POST", &path, "{\"exit_code\": 2}").await?;
    assert_eq!(s, 204);

    let (_, v) = log(&emu, &id, &[("LastTime", "true")]).await?;
    let previous = content(&v);
    let lines: Vec<&str> = previous.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("Emulated container app started from image busybox:1")
    );
    let beats = lines.iter().filter(|l| l.starts_with("heartbeat ")).count();
    assert!(beats >= 4, "the first run lasted over 400 ms: {previous}");
    let (_, v) = log(&emu, &id, &[("LastTime", "false")]).await?;
    let current = content(&v);
    assert!(current.starts_with("Emulated container app started"));
    assert!(
        current.lines().count() < lines.len(),
        "the current run has just begun: {current}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = log(&emu, &id, &[("LastTime", "true")]).await?;
    assert_eq!(
        content(&v),
        previous,
        "a finished run's log no longer grows"
    );
    let (_, v) = log(&emu, &id, &[("LastTime", "true"), ("Tail", "1")]).await?;
    assert_eq!(content(&v), format!("heartbeat {beats}\n"));
    let (s, v) = log(&emu, &id, &[("LastTime", "maybe")]).await?;
    assert_eq!((s, code(&v)), (400, "InvalidParameter"));
    Ok(())
}

#[tokio::test]
async fn container_log_start_time_and_limits() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50", "--log-heartbeat-ms", "300"]).await?;
    let id = emu
        .create(&[
            ("ContainerGroupName", "since"),
            ("Container.1.Name", "app"),
            ("Container.1.Image", "busybox"),
        ])
        .await?;
    emu.wait_status(&id, "Running").await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (_, v) = log(&emu, &id, &[("StartTime", "2018-08-02T15:00:00Z")]).await?;
    let all = content(&v);
    assert!(all.lines().count() >= 9, "{all}");
    let (_, v) = log(&emu, &id, &[("StartTime", "2999-01-01T08:00:00+08:00")]).await?;
    assert_eq!(
        content(&v),
        "",
        "nothing was written after a future StartTime"
    );

    // Lines at or after a whole second T are exactly those whose (second-precision) timestamp
    // is at least T.
    let (_, v) = log(&emu, &id, &[("Timestamps", "true")]).await?;
    let stamped = content(&v);
    let stamp = |l: &str| l.split(' ').next().unwrap_or_default().to_owned();
    let last = stamped.lines().last().map(stamp).unwrap_or_default();
    let (s, v) = log(&emu, &id, &[("Timestamps", "true"), ("StartTime", &last)]).await?;
    assert_eq!(s, 200, "{v}");
    let since = content(&v);
    let expected_first = stamped.lines().find(|l| stamp(l) >= last);
    assert_eq!(
        since.lines().next(),
        expected_first,
        "{stamped}\n--\n{since}"
    );
    assert!(since.lines().all(|l| stamp(l) >= last), "{since}");
    assert!(since.lines().count() < stamped.lines().count(), "{since}");

    let (_, v) = log(&emu, &id, &[("LimitBytes", "10")]).await?;
    assert_eq!(content(&v), "Emulated c");
    for (name, value) in [
        ("StartTime", "2018-08-02 15:00:00"),
        ("StartTime", "yesterday"),
        ("LimitBytes", "0"),
        ("LimitBytes", "1048577"),
    ] {
        let (s, v) = log(&emu, &id, &[(name, value)]).await?;
        assert_eq!((s, code(&v)), (400, "InvalidParameter"), "{name}={value}");
    }
    Ok(())
}

#[tokio::test]
async fn container_log_tail_defaults_to_500_and_stops_at_2000() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50", "--log-heartbeat-ms", "1"]).await?;
    let id = emu
        .create(&[
            ("ContainerGroupName", "tail"),
            ("Container.1.Name", "app"),
            ("Container.1.Image", "busybox"),
        ])
        .await?;
    emu.wait_status(&id, "Running").await?;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (_, v) = log(&emu, &id, &[]).await?;
    assert_eq!(content(&v).lines().count(), 500);
    let (_, v) = log(&emu, &id, &[("Tail", "5000")]).await?;
    assert_eq!(content(&v).lines().count(), 2000);
    let (_, v) = log(&emu, &id, &[("Tail", "3")]).await?;
    assert_eq!(content(&v).lines().count(), 3);
    Ok(())
}

#[tokio::test]
async fn stats_count_authenticated_calls_per_action() -> anyhow::Result<()> {
    let emu = Emu::start(&[]).await?;
    emu.call("DescribeContainerGroups", &[R]).await?;
    emu.call("DescribeContainerGroups", &[]).await?; // MissingRegionId, still counted
    let wrong = Call {
        secret: "NotTheSecret".into(),
        ..Call::default()
    };
    emu.call_with(&wrong, "DescribeContainerGroups", &[R])
        .await?;
    emu.call("DescribeNothing", &[R]).await?;
    let create = [
        R,
        ("ContainerGroupName", "count"),
        ("Container.1.Name", "c"),
        ("Container.1.Image", "busybox"),
    ];
    emu.create(&create[1..]).await?;
    emu.admin("PUT", "/_emulator/throttle", "{\"rate\": 1}")
        .await?;
    let (s, v) = emu.call("CreateContainerGroup", &create).await?;
    assert_eq!((s, code(&v)), (400, "Throttling.User"));
    let stats = emu.stats().await?;
    assert_eq!(
        stats["actions"],
        serde_json::json!({"CreateContainerGroup": 2, "DescribeContainerGroups": 2}),
        "{stats}"
    );
    assert_eq!(stats["requests"], 6, "{stats}");
    assert_eq!(stats["lost_answers"], 0, "{stats}");
    Ok(())
}

async fn describe(emu: &Emu, id: &str, with_event: bool) -> anyhow::Result<Value> {
    let ids = format!("[\"{id}\"]");
    let mut p = vec![R, ("ContainerGroupIds", ids.as_str())];
    if with_event {
        p.push(("WithEvent", "true"));
    }
    let (s, v) = emu.call("DescribeContainerGroups", &p).await?;
    anyhow::ensure!(s == 200, "{v}");
    Ok(v["ContainerGroups"][0].clone())
}

async fn status_entry(emu: &Emu, id: &str) -> anyhow::Result<Value> {
    let ids = format!("[\"{id}\"]");
    let (s, v) = emu
        .call(
            "DescribeContainerGroupStatus",
            &[R, ("ContainerGroupIds", ids.as_str())],
        )
        .await?;
    anyhow::ensure!(s == 200, "{v}");
    Ok(v["Data"][0].clone())
}

fn simple(name: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("ContainerGroupName", name),
        ("RestartPolicy", "Never"),
        ("Container.1.Name", "main"),
        ("Container.1.Image", "busybox"),
    ]
}

#[tokio::test]
async fn events_only_with_with_event() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let id = emu.create(&simple("events")).await?;
    emu.wait_status(&id, "Running").await?;
    let without = describe(&emu, &id, false).await?;
    assert!(without.get("Events").is_none(), "{without}");
    let with = describe(&emu, &id, true).await?;
    assert!(
        with["Events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["Reason"] == "Scheduled")),
        "{with}"
    );
    Ok(())
}

#[tokio::test]
async fn held_init_containers_run_in_order_and_a_failure_fails_the_group() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let (s, _) = emu
        .admin(
            "PUT",
            "/_emulator/knobs",
            "{\"hold_init_containers\": true}",
        )
        .await?;
    assert_eq!(s, 204);
    let mut p = simple("init-ok");
    p.extend([
        ("InitContainer.1.Name", "setup"),
        ("InitContainer.1.Image", "busybox"),
    ]);
    let ok = emu.create(&p).await?;
    let mut p = simple("init-bad");
    p.extend([
        ("InitContainer.1.Name", "setup"),
        ("InitContainer.1.Image", "busybox"),
    ]);
    let bad = emu.create(&p).await?;
    // The init container runs, the app container waits, the group is Pending.
    for id in [&ok, &bad] {
        let mut g = Value::Null;
        for _ in 0..100 {
            g = describe(&emu, id, false).await?;
            if g["InitContainers"][0]["CurrentState"]["State"] == "Running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            g["InitContainers"][0]["CurrentState"]["State"], "Running",
            "{g}"
        );
        assert_eq!(g["Containers"][0]["CurrentState"]["State"], "Waiting");
        assert_eq!(g["Status"], "Pending");
        let st = status_entry(&emu, id).await?;
        assert_eq!(st["PodStatus"]["Phase"], "Pending");
    }
    let exit = |id: &str, code: i32| {
        let path = format!("/_emulator/groups/{id}/containers/setup/exit");
        let body = format!("{{\"exit_code\": {code}}}");
        let emu = &emu;
        async move { emu.admin("POST", &path, &body).await }
    };
    assert_eq!(exit(&ok, 0).await?.0, 204);
    let g = emu.wait_status(&ok, "Running").await?;
    assert_eq!(
        g["InitContainers"][0]["CurrentState"]["State"],
        "Terminated"
    );
    assert_eq!(g["InitContainers"][0]["CurrentState"]["ExitCode"], 0);
    assert_eq!(g["Containers"][0]["CurrentState"]["State"], "Running");

    assert_eq!(exit(&bad, 2).await?.0, 204);
    let g = emu.wait_status(&bad, "Failed").await?;
    assert_eq!(g["InitContainers"][0]["CurrentState"]["ExitCode"], 2);
    // The reason is in the conditions, with the SDK's field names.
    let st = status_entry(&emu, &bad).await?;
    let conds = st["PodStatus"]["Conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conds.iter().any(|c| c["type"] == "Initialized"
            && c["status"] == "False"
            && c["Reason"] == "ContainersNotInitialized"
            && c["Message"].as_str().is_some_and(|m| m.contains("setup"))),
        "{st}"
    );
    Ok(())
}

#[tokio::test]
async fn fault_states_set_status_conditions_and_warning_events() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let id = emu.create(&simple("faulty")).await?;
    emu.wait_status(&id, "Running").await?;
    for status in [
        "Scheduling",
        "ScheduleFailed",
        "Restarting",
        "Updating",
        "Terminating",
        "Expired",
    ] {
        let body = format!(
            "{{\"status\": \"{status}\", \"reason\": \"R{status}\", \"message\": \"because {status}\"}}"
        );
        let (s, v) = emu
            .admin("POST", &format!("/_emulator/groups/{id}/state"), &body)
            .await?;
        assert_eq!(s, 204, "{v}");
        let g = describe(&emu, &id, true).await?;
        assert_eq!(g["Status"], status);
        assert!(
            g["Events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["Type"] == "Warning"
                    && e["Reason"] == format!("R{status}")
                    && e["Message"] == format!("because {status}"))),
            "{g}"
        );
        let st = status_entry(&emu, &id).await?;
        let last = st["PodStatus"]["Conditions"]
            .as_array()
            .and_then(|c| c.last().cloned())
            .unwrap_or_default();
        assert_eq!(last["Reason"], format!("R{status}"), "{st}");
        assert_eq!(last["status"], "False");
    }
    assert!(
        describe(&emu, &id, false).await?["ExpiredTime"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let (s, _) = emu
        .admin(
            "POST",
            &format!("/_emulator/groups/{id}/state"),
            "{\"status\": \"Sleeping\"}",
        )
        .await?;
    assert_eq!(s, 400);
    Ok(())
}

#[tokio::test]
async fn delete_with_a_pre_stop_hook_terminates_first_unless_forced() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let (s, _) = emu
        .admin("PUT", "/_emulator/knobs", "{\"terminating_ms\": 1500}")
        .await?;
    assert_eq!(s, 204);
    let hooked = |name: &'static str| {
        let mut p = simple(name);
        p.extend([
            ("Container.1.LifecyclePreStopHandlerExec.1", "sleep"),
            ("Container.1.LifecyclePreStopHandlerExec.2", "1"),
        ]);
        p
    };
    let graceful = emu.create(&hooked("graceful")).await?;
    let forced = emu.create(&hooked("forced")).await?;
    let plain = emu.create(&simple("plain")).await?;
    for id in [&graceful, &forced, &plain] {
        emu.wait_status(id, "Running").await?;
    }
    let delete = |id: &str, force: bool| {
        let id = id.to_owned();
        let emu = &emu;
        async move {
            let mut p = vec![R, ("ContainerGroupId", id.as_str())];
            if force {
                p.push(("Force", "true"));
            }
            emu.call("DeleteContainerGroup", &p).await
        }
    };
    assert_eq!(delete(&graceful, false).await?.0, 200);
    assert_eq!(
        describe(&emu, &graceful, false).await?["Status"],
        "Terminating"
    );
    // A second delete of a terminating group is accepted.
    assert_eq!(delete(&graceful, false).await?.0, 200);
    assert_eq!(delete(&forced, true).await?.0, 200);
    assert_eq!(delete(&plain, false).await?.0, 200);
    for id in [&forced, &plain] {
        assert!(
            describe(&emu, id, false).await?.is_null(),
            "{id} still listed"
        );
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(describe(&emu, &graceful, false).await?.is_null());
    assert_eq!(emu.stats().await?["deleted"], 3);
    Ok(())
}

#[tokio::test]
async fn finished_groups_are_retained_as_documented() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    // 1 h and 100 in the documentation; shortened here.
    let (s, _) = emu
        .admin(
            "PUT",
            "/_emulator/knobs",
            "{\"retention_ms\": 300, \"retained_finished\": 1, \"schedule_failed_ms\": 300}",
        )
        .await?;
    assert_eq!(s, 204);
    let names = ["done-a", "done-b", "done-c"];
    let mut ids = Vec::new();
    for n in names {
        let id = emu.create(&simple(n)).await?;
        emu.wait_status(&id, "Running").await?;
        ids.push(id);
    }
    let running = emu.create(&simple("still-running")).await?;
    let unschedulable = emu.create(&simple("never-scheduled")).await?;
    emu.wait_status(&running, "Running").await?;
    emu.admin(
        "POST",
        &format!("/_emulator/groups/{unschedulable}/state"),
        "{\"status\": \"ScheduleFailed\"}",
    )
    .await?;
    for id in &ids {
        let path = format!("/_emulator/groups/{id}/containers/main/exit");
        emu.admin("POST", &path, "{\"exit_code\": 0}").await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Only the most recently finished one is kept; running groups are never reaped.
    assert!(describe(&emu, &ids[0], false).await?.is_null());
    assert!(describe(&emu, &ids[1], false).await?.is_null());
    assert_eq!(describe(&emu, &ids[2], false).await?["Status"], "Succeeded");
    assert_eq!(describe(&emu, &running, false).await?["Status"], "Running");
    assert!(describe(&emu, &unschedulable, false).await?.is_null());
    Ok(())
}

#[tokio::test]
async fn documented_limits_are_enforced() -> anyhow::Result<()> {
    let emu = Emu::start(&[]).await?;
    let long_value = "v".repeat(257);
    let long_tag = "t".repeat(129);
    let args: Vec<String> = (1..=11).map(|i| format!("Container.1.Arg.{i}")).collect();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("Container.1.EnvironmentVar.1.Key", "my.var")],
            "Container.1.EnvironmentVar.1.Key",
        ),
        (
            vec![("Container.1.EnvironmentVar.1.Key", "1VAR")],
            "Container.1.EnvironmentVar.1.Key",
        ),
        (
            vec![
                ("Container.1.EnvironmentVar.1.Key", "V"),
                ("Container.1.EnvironmentVar.1.Value", &long_value),
            ],
            "Container.1.EnvironmentVar.1.Value",
        ),
        (
            args.iter().map(|a| (a.as_str(), "x")).collect(),
            "Container.1.Arg",
        ),
        (
            vec![("Tag.1.Key", "k"), ("Tag.1.Value", &long_tag)],
            "Tag.1.Value",
        ),
        (
            vec![("Tag.1.Key", "acs:k"), ("Tag.1.Value", "v")],
            "Tag.1.Key",
        ),
    ];
    for (extra, param) in cases {
        let mut p = vec![R];
        p.extend(simple("limits"));
        p.extend(extra);
        let (s, v) = emu.call("CreateContainerGroup", &p).await?;
        assert_eq!((s, code(&v)), (400, "InvalidParameter"), "{param}: {v}");
        assert!(
            v["Message"].as_str().is_some_and(|m| m.contains(param)),
            "{v}"
        );
    }
    let keys: Vec<String> = (1..=21).map(|i| format!("Tag.{i}.Key")).collect();
    let mut p = vec![R];
    p.extend(simple("limits"));
    p.extend(keys.iter().map(|k| (k.as_str(), "k")));
    let (s, v) = emu.call("CreateContainerGroup", &p).await?;
    assert_eq!((s, code(&v)), (400, "InvalidParameter"), "{v}");
    // At most 20 containers per instance (the limits page).
    let names: Vec<(String, String)> = (2..=21)
        .map(|i| (format!("Container.{i}.Name"), format!("c{i}")))
        .collect();
    let images: Vec<String> = (2..=21).map(|i| format!("Container.{i}.Image")).collect();
    let mut p = vec![R];
    p.extend(simple("limits"));
    p.extend(names.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    p.extend(images.iter().map(|k| (k.as_str(), "busybox")));
    let (s, v) = emu.call("CreateContainerGroup", &p).await?;
    assert_eq!((s, code(&v)), (400, "InvalidParameter"), "{v}");
    assert!(
        v["Message"]
            .as_str()
            .is_some_and(|m| m.contains("Container")),
        "{v}"
    );
    Ok(())
}

#[tokio::test]
async fn multi_container_group_metric_reports_running_containers() -> anyhow::Result<()> {
    let emu = Emu::start(&["--start-delay-ms", "50"]).await?;
    let mut p = simple("metered");
    p.extend([("Container.1.Cpu", "2"), ("Container.1.Memory", "4")]);
    let id = emu.create(&p).await?;
    emu.wait_status(&id, "Running").await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ids = format!("[\"{id}\", \"eci-nosuchgroup\"]");
    let (s, v) = emu
        .call(
            "DescribeMultiContainerGroupMetric",
            &[
                R,
                ("ContainerGroupIds", ids.as_str()),
                ("MetricType", "summary"),
            ],
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let datas = v["MonitorDatas"].as_array().cloned().unwrap_or_default();
    assert_eq!(datas.len(), 1, "{v}");
    assert_eq!(datas[0]["ContainerGroupId"], id.as_str());
    let r = &datas[0]["Records"][0];
    // 10 % of 2 vCPU; a quarter of 4 GiB.
    assert_eq!(r["CPU"]["UsageNanoCores"], 200_000_000u64);
    assert!(
        r["CPU"]["UsageCoreNanoSeconds"]
            .as_u64()
            .is_some_and(|n| n >= 200_000_000)
    );
    assert_eq!(r["Memory"]["WorkingSet"], 1u64 << 30);
    assert_eq!(r["Containers"][0]["Name"], "main");
    assert_eq!(r["Containers"][0]["CPU"]["Limit"], 2000);
    assert!(r["Timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let (s, v) = emu.call("DescribeMultiContainerGroupMetric", &[R]).await?;
    assert_eq!((s, code(&v)), (400, "MissingContainerGroupIds"));
    Ok(())
}

#[tokio::test]
async fn sts_and_metadata_keys_work_until_they_expire() -> anyhow::Result<()> {
    let emu = Emu::start(&[]).await?;
    let (s, _) = emu
        .admin(
            "PUT",
            "/_emulator/knobs",
            "{\"credential_ttl_ms\": 1500, \"ram_role\": \"r1\"}",
        )
        .await?;
    assert_eq!(s, 204);
    let (s, v) = emu
        .admin(
            "POST",
            "/?Action=AssumeRoleWithOIDC&Version=2015-04-01&Format=JSON&RoleArn=acs:ram::1:role/r\
             &OIDCProviderArn=acs:ram::1:oidc-provider/p&OIDCToken=tok&RoleSessionName=s",
            "",
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let c = &v["Credentials"];
    let sts = Call {
        ak: c["AccessKeyId"].as_str().unwrap_or_default().into(),
        secret: c["AccessKeySecret"].as_str().unwrap_or_default().into(),
        token: c["SecurityToken"].as_str().map(str::to_owned),
        ..Call::default()
    };
    assert!(sts.ak.starts_with("STS."));
    assert!(c["Expiration"].as_str().is_some_and(|e| e.ends_with('Z')));
    let (s, v) = emu.call_with(&sts, "DescribeContainerGroups", &[R]).await?;
    assert_eq!(s, 200, "{v}");
    // Without its token, or with another's, the key is refused.
    let no_token = Call {
        token: None,
        ..sts.clone()
    };
    let (s, v) = emu
        .call_with(&no_token, "DescribeContainerGroups", &[R])
        .await?;
    assert_eq!((s, code(&v)), (400, "InvalidSecurityToken.Malformed"));
    // Missing parameters use the documented codes; no signature is needed.
    let (s, v) = emu
        .admin("POST", "/?Action=AssumeRoleWithOIDC&Version=2015-04-01", "")
        .await?;
    assert_eq!((s, code(&v)), (400, "MissingRoleArn"), "{v}");

    // The metadata service: hardened-mode token, role list, credentials.
    let (s, _) = emu
        .admin(
            "GET",
            "/latest/meta-data/ram/security-credentials/other",
            "",
        )
        .await?;
    assert_eq!(s, 404);
    let (s, v) = emu
        .admin("GET", "/latest/meta-data/ram/security-credentials/r1", "")
        .await?;
    assert_eq!((s, &v["Code"]), (200, &Value::from("Success")), "{v}");
    let meta = Call {
        ak: v["AccessKeyId"].as_str().unwrap_or_default().into(),
        secret: v["AccessKeySecret"].as_str().unwrap_or_default().into(),
        token: v["SecurityToken"].as_str().map(str::to_owned),
        ..Call::default()
    };
    let (s, _) = emu
        .call_with(&meta, "DescribeContainerGroups", &[R])
        .await?;
    assert_eq!(s, 200);

    tokio::time::sleep(Duration::from_millis(1700)).await;
    for who in [&sts, &meta] {
        let (s, v) = emu.call_with(who, "DescribeContainerGroups", &[R]).await?;
        assert_eq!((s, code(&v)), (400, "InvalidSecurityToken.Expired"), "{v}");
    }
    let stats = emu.stats().await?;
    assert_eq!(stats["sts_issued"], 1);
    assert_eq!(stats["metadata_issued"], 1);
    assert_eq!(stats["expired_keys"], 2);
    Ok(())
}
