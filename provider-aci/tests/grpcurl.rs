//! provider-aci through grpcurl against the ACI emulator: a pod from a JSON request is created as
//! a container group (its Secret-derived env value as `secureValue`, the pod's runAsUser in the
//! container's `securityContext`), listed Running, its logs
//! read (tail, follow), a command with arguments exec'd with its output and exit code, an invalid
//! pod refused with ACI's wording, and deleted; the group is gone and no secret reached a log.

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use base64::Engine as _;
use support::*;
use vk_testkit::{
    aci_emulator::{AciEmulator, AciEmulatorOptions},
    grpcurl::{self, Target, call},
    wait::eventually,
};

const SECRET: &str = "s3cr3t-aci-value";

/// The grpcurl tests' pod with a public IP, ACI's own secret value, 1 GB (ACI's sizes are
/// tenths of a GB) and security settings.
fn pod_value(name: &str, uid: &str) -> serde_json::Value {
    let mut req = grpcurl::web_pod(NODE, name, uid);
    let pod = &mut req["pod"];
    pod["annotations"] = serde_json::json!({"virtual-kubelet.io/aci-public-ip": "true"});
    let web = &mut pod["containers"][0];
    web["env"][1]["value"] = SECRET.into();
    web["resources"]["requests"]["memoryBytes"] = 1_000_000_000.into();
    web["securityContext"] = serde_json::json!({"capabilitiesDrop": ["ALL"]});
    pod["securityContext"] = serde_json::json!({"runAsUser": 1000, "runAsNonRoot": true});
    req
}

fn pod_json(name: &str, uid: &str) -> String {
    pod_value(name, uid).to_string()
}

fn ref_json(name: &str, uid: &str) -> String {
    format!(r#"{{"namespace": "default", "name": "{name}", "uid": "{uid}"}}"#)
}

/// Decodes the base64 `data` fields grpcurl prints for LogChunk messages.
fn log_text(out: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("\"data\": \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter_map(|d| b64.decode(d).ok())
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .collect()
}

#[tokio::test]
async fn create_list_logs_exec_delete_through_grpcurl() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default().log_heartbeat_ms(300);
    let (emu, mut provider, target, _) = start_with_emulator(dir.path(), opts, &[]).await?;
    let result = scenario(&emu, &target).await;
    let provider_log = std::fs::read_to_string(provider.log_path())?;
    let status = provider.stop(Duration::from_secs(10)).await?;
    result.with_context(|| format!("provider log:\n{}", provider.log_tail(40)))?;
    ensure!(status.success(), "provider exited with {status}");
    ensure!(
        !provider_log.contains(SECRET) && !provider_log.contains("vk-client-secret"),
        "a secret reached the provider's log"
    );
    let emu_log = std::fs::read_to_string(emu.process.log_path())?;
    ensure!(
        !emu_log.contains(SECRET),
        "a secret reached the emulator's log"
    );
    Ok(())
}

async fn scenario(emu: &AciEmulator, target: &Target) -> anyhow::Result<()> {
    let info = call(target, "GetNodeInfo", r#"{"nodeName":"vk-aci"}"#).await?;
    ensure!(
        info.contains(r#""providerName": "aci""#) && info.contains("azure.com/aci"),
        "{info}"
    );

    // A retried create is a success and creates nothing new.
    let created = grpcurl::create_retried(target, &pod_json("web-1", "uid-1")).await?;
    ensure!(
        created.contains("containerGroups/vk-default-web-1-"),
        "{created}"
    );
    ensure!(
        emu.stats().await?.created == 1,
        "a retried create made a second group"
    );

    // The Secret-derived value travels only as secureValue.
    let group = created
        .split("containerGroups/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("no group name in the create answer")?
        .to_owned();
    let stored = emu
        .stored_group(&group)
        .await?
        .context("group not stored")?;
    let env = &stored["properties"]["containers"][0]["properties"]["environmentVariables"];
    ensure!(
        env[1]["name"] == "DB_PASSWORD"
            && env[1]["secureValue"] == SECRET
            && env[1].get("value").is_none(),
        "DB_PASSWORD is not a secureValue: {env}"
    );
    ensure!(env[0]["value"] == "demo", "{env}");
    // The container's securityContext with the pod's runAsUser under it, as ARM names them.
    let sc = &stored["properties"]["containers"][0]["properties"]["securityContext"];
    ensure!(
        *sc == serde_json::json!({"capabilities": {"drop": ["ALL"]}, "runAsUser": 1000}),
        "{sc}"
    );
    ensure!(
        stored["tags"]["vk-pod-uid"] == "uid-1",
        "{}",
        stored["tags"]
    );

    let listed = grpcurl::listed_running(target, NODE, WAIT).await?;
    ensure!(
        listed.contains("web-1") && listed.contains("podIp"),
        "{listed}"
    );

    // Logs: the emulator's lines, whole and tailed.
    let logs_req = |extra: &str| {
        format!(
            r#"{{"podRef": {}, "container": "web"{extra}}}"#,
            ref_json("web-1", "uid-1")
        )
    };
    let all = eventually(WAIT, "two heartbeats logged", || async {
        let text = log_text(&call(target, "GetContainerLogs", &logs_req("")).await?);
        Ok(text.contains("heartbeat 2").then_some(text))
    })
    .await?;
    ensure!(
        all.starts_with(
            "Emulated container web started from image nginx:1.25\ncommand: nginx -g daemon off;\n"
        ),
        "{all}"
    );
    let tail = log_text(&call(target, "GetContainerLogs", &logs_req(r#", "tailLines": 1"#)).await?);
    ensure!(
        tail.lines().count() == 1 && tail.starts_with("heartbeat "),
        "tail 1: {tail:?}"
    );
    // Follow with a byte limit: new heartbeats arrive by polling, then the limit ends the stream.
    let followed = log_text(
        &call(
            target,
            "GetContainerLogs",
            &logs_req(r#", "follow": true, "tailLines": 0, "limitBytes": 40"#),
        )
        .await?,
    );
    ensure!(followed.starts_with("heartbeat "), "follow: {followed:?}");
    let nope = format!(
        r#"{{"podRef": {}, "container": "nope"}}"#,
        ref_json("web-1", "uid-1")
    );
    let missing = grpcurl::call_output(target, "GetContainerLogs", &nope).await?;
    ensure!(
        String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
        "{missing:?}"
    );

    // Exec: a command with arguments, its output and its exit code (through /bin/sh).
    let exec = |cmd: &str| {
        format!(
            r#"{{"start": {{"podRef": {}, "container": "web", "command": {cmd}, "stdout": true, "stderr": true}}}}"#,
            ref_json("web-1", "uid-1")
        )
    };
    let out = call(
        target,
        "Exec",
        &exec(r#"["sh", "-c", "echo hello from $MODE; exit 3"]"#),
    )
    .await?;
    let text = log_text(&out.replace("\"stdout\"", "\"data\""));
    ensure!(text == "hello from demo\n", "exec output {text:?} in {out}");
    ensure!(out.contains(r#""code": 3"#), "exit code 3 missing: {out}");
    let out = call(target, "Exec", &exec(r#"["echo", "it's", "fine"]"#)).await?;
    ensure!(
        log_text(&out.replace("\"stdout\"", "\"data\"")) == "it's fine\n"
            && out.contains("\"exit\""),
        "{out}"
    );
    ensure!(
        !out.contains("\"code\""),
        "a zero exit code is the proto default: {out}"
    );

    // A limit above the group's request is refused before Azure is called, in ACI's words.
    let mut bad = pod_value("bad", "uid-bad");
    bad["pod"]["containers"][0]["resources"]["limits"] = serde_json::json!({"cpuMillis": 2000});
    let bad = bad.to_string();
    let puts = |s: &vk_testkit::aci_emulator::EmulatorStats| s.ops.get("put").copied();
    let before = puts(&emu.stats().await?);
    let out = grpcurl::call_output(target, "CreatePod", &bad).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains("InvalidArgument")
            && err.contains(
                "The 'Cpu' limit '2' in container 'web' is greater than the total request '0.5'"
            ),
        "{err}"
    );
    // No PUT at all: the provider refused it, not ARM.
    ensure!(
        before.is_some() && puts(&emu.stats().await?) == before,
        "the invalid pod reached ARM"
    );

    // Delete: the group goes, the pod leaves the list, a second delete finds nothing.
    let out = call(
        target,
        "DeletePod",
        &format!(r#"{{"podRef": {}}}"#, ref_json("web-1", "uid-1")),
    )
    .await?;
    ensure!(out.contains(r#""found": true"#), "{out}");
    eventually(WAIT, "pod gone", || async {
        let out = call(target, "ListPods", r#"{"nodeName":"vk-aci"}"#).await?;
        Ok((!out.contains("web-1")).then_some(()))
    })
    .await?;
    let stats = emu.stats().await?;
    ensure!(stats.live == 0 && stats.deleted == 1, "{stats:?}");
    ensure!(stats.auth_failures == 0, "{stats:?}");
    let again = call(
        target,
        "DeletePod",
        &format!(r#"{{"podRef": {}}}"#, ref_json("web-1", "uid-1")),
    )
    .await?;
    ensure!(
        !again.contains("found"),
        "a second delete must report found=false: {again}"
    );
    Ok(())
}
