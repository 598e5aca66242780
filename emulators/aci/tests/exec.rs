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
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"hi"), "{out}");
    assert_eq!(
        lines.get(1),
        Some(&"pv sv-123"),
        "container env, secure values included"
    );
    assert!(
        lines.get(2).is_some_and(|d| d.contains("aci-emulator-ex-")),
        "{out}"
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
