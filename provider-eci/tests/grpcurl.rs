//! provider-eci through grpcurl against the ECI emulator: a pod from a JSON request is created
//! (once, however often the create is retried), listed Running, its logs read, a command executed
//! in it, and it is deleted; the emulator holds no group afterwards. What reached ECI is checked
//! against the documented parameter names (a pod-IP variable as `EnvironmentVar.N.FieldRef`).

mod support;

use anyhow::{Context, ensure};
use base64::Engine as _;
use support::*;
use vk_testkit::{eci_emulator::EciEmulatorOptions, grpcurl, wait::eventually};

/// The grpcurl tests' pod, with the pod's IP as a third env variable.
fn pod_json(name: &str, uid: &str) -> String {
    let mut req = grpcurl::web_pod(NODE, name, uid);
    if let Some(env) = req["pod"]["containers"][0]["env"].as_array_mut() {
        env.push(serde_json::json!({"name": "POD_IP", "podField": "status.podIP"}));
    }
    req.to_string()
}

fn decode_chunks(out: &str) -> String {
    // grpcurl prints bytes fields as base64 in "data"/"stdout"/"stderr" members.
    let mut text = String::new();
    for line in out.lines() {
        let line = line.trim();
        for key in ["\"data\": \"", "\"stdout\": \"", "\"stderr\": \""] {
            if let Some(rest) = line.strip_prefix(key) {
                let b64 = rest.trim_end_matches(',').trim_end_matches('"');
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
    }
    text
}

#[tokio::test]
async fn create_list_logs_exec_delete_through_grpcurl() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = EciEmulatorOptions::default();
    let (emu, mut provider, target, _) = start_with_emulator(dir.path(), opts).await?;
    let result = async {
        let info = grpcurl::call(&target, "GetNodeInfo", r#"{"nodeName":"vk-eci"}"#)
        .await?;
        ensure!(info.contains(r#""providerName": "eci""#), "{info}");

        // A retried create is a success and creates nothing new (ClientToken from the UID).
        grpcurl::create_retried(&target, &pod_json("web-1", "uid-1")).await?;
        let stats = emu.stats().await?;
        ensure!(stats.created == 1 && stats.live == 1, "{stats:?}");

        // What ECI received, by the documented parameter names.
        let listed = grpcurl::listed_running(&target, NODE, WAIT).await?;
        ensure!(listed.contains("web-1") && listed.contains("eci-"), "{listed}");
        let group_id = listed
            .split('"')
            .find(|s| s.starts_with("eci-"))
            .context("no group id in the list")?
            .to_owned();
        let stored = emu
            .stored_group(&group_id)
            .await?
            .context("the emulator does not have the group")?;
        let params = &stored["params"];
        for (k, v) in [
            ("Container.1.Name", "web"),
            ("Container.1.Image", "nginx:1.25"),
            ("Container.1.Arg.2", "daemon off;"),
            ("Container.1.EnvironmentVar.1.Key", "MODE"),
            // The pod's IP through ECI's own field reference, filled in by ECI.
            ("Container.1.EnvironmentVar.3.Key", "POD_IP"),
            ("Container.1.EnvironmentVar.3.FieldRef.FieldPath", "status.podIP"),
            ("Container.1.Port.1.Port", "80"),
            ("RestartPolicy", "Always"),
            ("Tag.3.Key", "vk-pod-uid"),
            ("Tag.3.Value", "uid-1"),
        ] {
            ensure!(params[k] == v, "{k} = {} in {params}", params[k]);
        }
        ensure!(
            params["ClientToken"].as_str().is_some_and(|t| !t.is_empty()),
            "no ClientToken: {params}"
        );

        // Logs: what the emulated container wrote.
        let logs_req = |extra: &str| {
            format!(
                r#"{{"podRef": {{"namespace": "default", "name": "web-1", "uid": "uid-1"}}, "container": "web"{extra}}}"#
            )
        };
        let text = eventually(WAIT, "log lines", || async {
            let out = grpcurl::call(&target, "GetContainerLogs", &logs_req(""))
            .await?;
            let text = decode_chunks(&out);
            Ok(text.contains("heartbeat").then_some(text))
        })
        .await?;
        ensure!(
            text.contains("Emulated container web started from image nginx:1.25"),
            "{text}"
        );
        let tail = decode_chunks(
            &grpcurl::call(&target, "GetContainerLogs", &logs_req(r#", "tailLines": 1"#))
            .await?,
        );
        ensure!(tail.lines().count() == 1, "tail 1: {tail:?}");
        let missing = grpcurl::call_output(&target, "GetContainerLogs", &logs_req("").replace(r#""container": "web""#, r#""container": "nope""#))
        .await?;
        ensure!(
            String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
            "{missing:?}"
        );

        // Exec: a command's output and exit.
        let exec = grpcurl::call(&target, "Exec", r#"{"start": {"podRef": {"namespace": "default", "name": "web-1", "uid": "uid-1"}, "container": "web", "command": ["echo", "hello-from-exec"], "stdout": true, "stderr": true}}"#)
        .await?;
        ensure!(
            decode_chunks(&exec).contains("hello-from-exec") && exec.contains("\"exit\""),
            "{exec}"
        );
        // ... and a failing command's stderr and exit code.
        let failing = grpcurl::call(&target, "Exec", r#"{"start": {"podRef": {"namespace": "default", "name": "web-1", "uid": "uid-1"}, "container": "web", "command": ["sh", "-c", "echo oops >&2; exit 3"], "stdout": true, "stderr": true}}"#)
        .await?;
        ensure!(
            decode_chunks(&failing).contains("oops") && failing.contains(r#""code": 3"#),
            "stderr or exit code 3 missing: {failing}"
        );

        // Invalid pods are rejected with the reason.
        grpcurl::check_host_path_refused(&target, &pod_json("bad", "uid-bad"), "ECI").await?;

        // Delete: the group goes, the pod leaves the list; a second delete finds nothing.
        let body = r#"{"podRef": {"namespace": "default", "name": "web-1", "uid": "uid-1"}}"#;
        let out = grpcurl::call(&target, "DeletePod", body).await?;
        ensure!(out.contains(r#""found": true"#), "{out}");
        eventually(WAIT, "pod gone from the list", || async {
            let out = grpcurl::call(&target, "ListPods", r#"{"nodeName":"vk-eci"}"#)
            .await?;
            Ok((!out.contains("web-1")).then_some(()))
        })
        .await?;
        let again = grpcurl::call(&target, "DeletePod", body).await?;
        ensure!(!again.contains("found"), "a second delete must report found=false: {again}");
        let stats = emu.stats().await?;
        ensure!(stats.created == 1 && stats.deleted == 1 && stats.live == 0, "{stats:?}");

        let provider_log = std::fs::read_to_string(provider.log_path())?;
        ensure!(
            !provider_log.contains("s3cr3t-value")
                && !provider_log.contains(vk_testkit::eci_emulator::ACCESS_KEY_SECRET),
            "a secret reached the provider's log"
        );
        Ok(())
    }
    .await;
    let result = result.map_err(|e| {
        e.context(format!(
            "--- provider log ---\n{}",
            provider.log_excerpt(60)
        ))
    });
    let status = provider.stop(std::time::Duration::from_secs(10)).await?;
    result?;
    anyhow::ensure!(status.success(), "provider exited with {status}");
    Ok(())
}
