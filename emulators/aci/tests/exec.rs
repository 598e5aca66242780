//! Exec: the ARM POST hands out a WebSocket URI and password; the WebSocket runs a real process.

mod common;

use common::{API, Emu, simple_group};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use vk_testkit::aci_emulator::AciEmulatorOptions;

async fn running_group(emu: &Emu) -> anyhow::Result<()> {
    let mut spec = simple_group("Always", &[("app", &[])]);
    spec["properties"]["containers"][0]["properties"]["environmentVariables"] =
        json!([{"name": "PLAIN", "value": "pv"}, {"name": "SECRET", "secureValue": "sv-123"}]);
    assert_eq!(emu.put_group("ex", &spec).await?.status, 201);
    emu.wait_group("ex", "running", |g| {
        g["properties"]["instanceView"]["state"] == "Running"
    })
    .await?;
    Ok(())
}

async fn exec(emu: &Emu, command: &str) -> anyhow::Result<(String, String)> {
    let r = emu
        .arm(
            "POST",
            &format!("{}/ex/containers/app/exec?{API}", Emu::groups_path()),
            Some(&json!({"command": command, "terminalSize": {"rows": 24, "cols": 80}})),
        )
        .await?;
    anyhow::ensure!(r.status == 200, "exec: {} {}", r.status, r.text);
    Ok((
        r.body["webSocketUri"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        r.body["password"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Everything the server sends until it closes.
async fn collect(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    let mut out = String::new();
    let read = async {
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(t) => out.push_str(t.as_str()),
                Message::Binary(b) => out.push_str(&String::from_utf8_lossy(&b)),
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    out
}

#[tokio::test]
async fn exec_runs_a_real_shell_after_the_password() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 50,
        ..Default::default()
    })
    .await?;
    running_group(&emu).await?;
    let (uri, password) = exec(&emu, "/bin/sh").await?;
    assert!(uri.starts_with("ws://127.0.0.1:"), "{uri}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&uri).await?;
    ws.send(Message::Text(password.clone().into())).await?;
    ws.send(Message::Text(
        "echo hi; echo \"$PLAIN $SECRET\"; pwd; exit 3\n".into(),
    ))
    .await?;
    let out = collect(&mut ws).await;
    // A terminal: the typed line is echoed (after the shell's prompt), then the output.
    let lines: Vec<&str> = out.lines().collect();
    let hi = lines.iter().position(|l| *l == "hi");
    assert!(
        hi.is_some_and(|i| i > 0 && lines[i - 1].contains("echo hi;")),
        "{out:?}"
    );
    let hi = hi.unwrap_or_default();
    assert_eq!(
        lines.get(hi + 1),
        Some(&"pv sv-123"),
        "container env, secure values included"
    );
    assert!(
        lines
            .get(hi + 2)
            .is_some_and(|d| d.contains("aci-emulator-ex-")),
        "{out}"
    );
    assert!(
        out.contains("hi\r\n"),
        "a terminal ends lines in CRLF: {out:?}"
    );

    // The URI works once.
    let again = tokio_tungstenite::connect_async(&uri).await;
    assert!(again.is_err(), "a used exec URI is refused");

    // A wrong password closes the socket without running anything.
    let (uri, _) = exec(&emu, "/bin/sh").await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(&uri).await?;
    ws.send(Message::Text("wrong".into())).await?;
    let _ = ws.send(Message::Text("echo should-not-run\n".into())).await;
    let out = collect(&mut ws).await;
    assert!(!out.contains("should-not-run"), "{out}");
    assert!(!emu.log().contains("sv-123") && !emu.log().contains(&password));
    emu.emu.stop().await
}

#[tokio::test]
async fn exec_command_with_arguments_fails_like_aci() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 50,
        ..Default::default()
    })
    .await?;
    running_group(&emu).await?;
    let (uri, password) = exec(&emu, "echo hello").await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(&uri).await?;
    ws.send(Message::Text(password.into())).await?;
    let out = collect(&mut ws).await;
    assert!(!out.contains("hello\n"), "{out}");
    assert!(out.contains("executable file not found"), "{out}");

    let r = emu
        .arm(
            "POST",
            &format!("{}/ex/containers/nope/exec?{API}", Emu::groups_path()),
            Some(&json!({"command": "/bin/sh"})),
        )
        .await?;
    assert_eq!(r.status, 404);
    emu.emu.stop().await
}

#[tokio::test]
async fn exec_is_a_terminal_of_the_requested_size_where_ctrl_d_ends_input() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 50,
        ..Default::default()
    })
    .await?;
    running_group(&emu).await?;
    let r = emu
        .arm(
            "POST",
            &format!("{}/ex/containers/app/exec?{API}", Emu::groups_path()),
            Some(&json!({"command": "/bin/sh", "terminalSize": {"rows": 33, "cols": 101}})),
        )
        .await?;
    anyhow::ensure!(r.status == 200, "exec: {} {}", r.status, r.text);
    let uri = r.body["webSocketUri"].as_str().unwrap_or_default();
    let (mut ws, _) = tokio_tungstenite::connect_async(uri).await?;
    let password = r.body["password"].as_str().unwrap_or_default();
    ws.send(Message::Text(password.into())).await?;
    // `cat` reads the terminal until ^D at the start of a line; then the shell goes on.
    ws.send(Message::Text(
        "stty size; cat; echo cat-ended-$?; exit 4\n".into(),
    ))
    .await?;
    ws.send(Message::Text("typed\n".into())).await?;
    ws.send(Message::Binary(vec![4u8].into())).await?;
    let out = collect(&mut ws).await;
    assert!(
        out.contains("33 101"),
        "terminalSize rows and cols: {out:?}"
    );
    assert!(out.contains("cat-ended-0"), "^D ended cat's input: {out:?}");
    assert!(
        out.matches("typed").count() >= 2,
        "echoed, then cat's copy: {out:?}"
    );
    emu.emu.stop().await
}

#[tokio::test]
async fn attach_streams_the_output_to_a_socket_opened_with_the_password_header()
-> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let emu = Emu::start(AciEmulatorOptions {
        provisioning_delay_ms: 50,
        log_heartbeat_ms: 100,
        ..Default::default()
    })
    .await?;
    running_group(&emu).await?;
    let attach = |container: &'static str| {
        let emu = &emu;
        async move {
            emu.arm(
                "POST",
                &format!(
                    "{}/ex/containers/{container}/attach?{API}",
                    Emu::groups_path()
                ),
                None,
            )
            .await
        }
    };
    let r = attach("app").await?;
    anyhow::ensure!(r.status == 200, "attach: {} {}", r.status, r.text);
    let uri = r.body["webSocketUri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let password = r.body["password"].as_str().unwrap_or_default().to_owned();
    assert!(uri.starts_with("ws://127.0.0.1:"), "{uri}");

    // Without the password in Authorization the upgrade is refused.
    assert!(tokio_tungstenite::connect_async(&uri).await.is_err());
    let mut req = uri.as_str().into_client_request()?;
    req.headers_mut().insert("authorization", password.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut out = String::new();
    let read = async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                out.push_str(t.as_str());
                if out.matches("heartbeat").count() >= 2 {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    assert!(out.matches("heartbeat").count() >= 2, "{out:?}");
    assert!(
        !out.contains("Emulated container"),
        "only output written after the attach: {out:?}"
    );
    assert_eq!(attach("nope").await?.status, 404);
    emu.emu.stop().await
}
