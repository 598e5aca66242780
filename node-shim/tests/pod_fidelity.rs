//! The pod the user wrote is the pod the provider gets, end to end against the real control plane
//! (API server, scheduler, controller-manager): every carried field of a kitchen-sink pod (against
//! a checked-in golden), Warning events for ignored fields, no Secret-derived value unflagged,
//! `status.podIP` in env, readiness gates and foreign conditions, `activeDeadlineSeconds`, and
//! mounted ConfigMaps that follow their source.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use podprovider_proto::v1 as pb;
use support::{SLOW, approve_serving_cert, kubectl, scheduled_pod, start_node, with_logs};
use vk_testkit::{ControlPlane, test_provider::Control, wait::eventually};

const CANARY: &str = "canary-7f3a9c1e-secret";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn provider_pod(control: &Control, uid: &str) -> Option<pb::Pod> {
    control
        .pods()
        .into_iter()
        .find(|p| p.pod_ref.as_ref().is_some_and(|r| r.uid == uid))
}

async fn phase(pods: &Api<Pod>, name: &str, want: &str) -> anyhow::Result<Pod> {
    eventually(SLOW, &format!("{name} {want}"), || async {
        Ok(pods
            .get_opt(name)
            .await?
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(want)))
    })
    .await
}

/// The text of file `path` in files volume `volume` of `p`, and whether it is flagged sensitive.
fn file_in(p: &pb::Pod, volume: &str, path: &str) -> Option<(String, bool)> {
    let v = p.volumes.iter().find(|v| v.name == volume)?;
    let Some(pb::volume::Source::Files(f)) = &v.source else {
        return None;
    };
    let e = f.files.iter().find(|e| e.path == path)?;
    Some((
        String::from_utf8_lossy(&e.content).into_owned(),
        e.sensitive,
    ))
}

fn condition<'a>(p: &'a Pod, type_: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

async fn events(events: &Api<Event>, name: &str) -> anyhow::Result<Vec<Event>> {
    Ok(events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?
        .items)
}

/// The received pod with what changes from run to run blanked, as the golden file holds it.
fn normalized(mut p: pb::Pod) -> String {
    if let Some(r) = &mut p.pod_ref {
        r.uid = "<uid>".into();
    }
    p.creation_time = None;
    p.resource_version = "<rv>".into();
    // prost maps are HashMaps: printed sorted, apart from the rest.
    let labels: std::collections::BTreeMap<_, _> =
        std::mem::take(&mut p.labels).into_iter().collect();
    let annotations: std::collections::BTreeMap<_, _> =
        std::mem::take(&mut p.annotations).into_iter().collect();
    format!("labels: {labels:#?}\nannotations: {annotations:#?}\n{p:#?}\n")
}

#[tokio::test]
async fn what_the_user_wrote_reaches_the_provider() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    // The API server's client certificate is accepted, for `kubectl exec`.
    let ca = format!("--client-ca-file={}", cp.pki.ca_files.cert.display());
    let node = start_node(&cp, dir.path(), "vk-fidelity", &[&ca]).await?;
    let result = kitchen_sink_and_secrets(&cp, &node).await;
    with_logs(result, &[&node])
}

async fn kitchen_sink_and_secrets(
    cp: &ControlPlane,
    node: &support::VirtualNode,
) -> anyhow::Result<()> {
    let client = cp.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let event_api: Api<Event> = Api::namespaced(client.clone(), "default");
    approve_serving_cert(cp, &node.name).await?;

    // 1. The kitchen sink: every carried field arrives as the golden file says.
    let path = fixture("kitchen-sink.yaml");
    kubectl(cp, &["apply", "-f", &path.to_string_lossy()])?;
    let sink = phase(&pods, "kitchen-sink", "Running").await?;
    let uid = sink.uid().unwrap_or_default();
    let received = provider_pod(&node.control, &uid).expect("the provider has the kitchen sink");
    let got = normalized(received.clone());
    let golden = fixture("kitchen-sink.golden");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got)?;
    }
    let want = std::fs::read_to_string(&golden)?;
    assert!(
        got == want,
        "the provider received a different pod than {} (UPDATE_GOLDEN=1 rewrites it):\n{}",
        golden.display(),
        diff(&want, &got)
    );

    // 2. Every ignored field produced its Warning event, naming it.
    let ignored = [
        "shareProcessNamespace",
        "setHostnameAsFQDN",
        "fsGroupChangePolicy",
        "seLinuxOptions",
    ];
    let notes = eventually(SLOW, "PodFieldIgnored events", || async {
        let notes: Vec<String> = events(&event_api, "kitchen-sink")
            .await?
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("PodFieldIgnored"))
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.message)
            .collect();
        Ok(ignored
            .iter()
            .all(|f| notes.iter().any(|n| n.contains(f)))
            .then_some(notes))
    })
    .await?;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("spec.securityContext.seLinuxOptions")
                && n.contains("spec.containers[app].securityContext.seLinuxOptions")),
        "pod-level and container-level seLinuxOptions are reported apart: {notes:?}"
    );

    // 3. status.podIP in env reaches the container as the pod's IP.
    let ip = sink
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("the running pod has an IP");
    // Not a blocking kubectl: the test provider serves the exec on this test's runtime.
    let mut exec = tokio::process::Command::from(cp.kubectl());
    exec.args([
        "exec",
        "kitchen-sink",
        "-c",
        "app",
        "--",
        "printenv",
        "POD_IP",
    ]);
    let out = exec.output().await?;
    assert!(
        out.status.success(),
        "kubectl exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ip);

    // 4. A canary Secret value appears in no field the provider receives unflagged.
    kubectl(
        cp,
        &[
            "create",
            "secret",
            "generic",
            "canary",
            &format!("--from-literal=value={CANARY}"),
        ],
    )?;
    let canary = scheduled_pod(
        "canary",
        serde_json::json!({"app": "canary"}),
        serde_json::json!({
            "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", "echo $(SECRET) > /tmp/x"],
                "args": ["--token=$(SECRET)", "--plain"],
                "env": [
                    {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "canary", "key": "value"}}},
                    {"name": "DERIVED", "value": "prefix-$(SECRET)-suffix"},
                    {"name": "PLAIN", "value": "nothing-secret"},
                ],
                "volumeMounts": [
                    {"name": "s", "mountPath": "/s"},
                    {"name": "p", "mountPath": "/p"},
                ],
            }],
            "volumes": [
                {"name": "s", "secret": {"secretName": "canary"}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "canary"}}]}},
            ],
        }),
    )?;
    pods.create(&Default::default(), &canary).await?;
    let running = phase(&pods, "canary", "Running").await?;
    let got = provider_pod(&node.control, &running.uid().unwrap_or_default())
        .expect("the provider has the canary pod");
    let c = &got.containers[0];
    let flag = |name: &str| c.env.iter().find(|e| e.name == name).map(|e| e.sensitive);
    assert_eq!(flag("SECRET"), Some(true));
    assert_eq!(
        flag("DERIVED"),
        Some(true),
        "a value expanded from a Secret is sensitive"
    );
    assert_eq!(flag("PLAIN"), Some(false));
    assert!(c.command_sensitive && c.args_sensitive, "{c:#?}");
    assert_unflagged_free_of(&got, CANARY);
    Ok(())
}

/// Fails if `secret` appears anywhere in `p` outside the places flagged sensitive.
fn assert_unflagged_free_of(p: &pb::Pod, secret: &str) {
    let mut open = p.clone();
    open.registry_credentials.clear();
    for c in open.init_containers.iter_mut().chain(&mut open.containers) {
        c.env.retain(|e| !e.sensitive);
        if c.command_sensitive {
            c.command.clear();
        }
        if c.args_sensitive {
            c.args.clear();
        }
    }
    for v in &mut open.volumes {
        match &mut v.source {
            Some(pb::volume::Source::Files(f)) => {
                f.files.retain(|e| !e.sensitive);
                for e in &f.files {
                    assert!(
                        !e.content
                            .windows(secret.len())
                            .any(|w| w == secret.as_bytes()),
                        "unflagged file {} of volume {} holds the secret",
                        e.path,
                        v.name
                    );
                }
            }
            Some(pb::volume::Source::AzureFile(a)) => a.storage_account_key.clear(),
            _ => {}
        }
    }
    let text = format!("{open:?}");
    assert!(
        !text.contains(secret),
        "an unflagged field holds the secret: {text}"
    );
}

fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<_>, Vec<_>) = (want.lines().collect(), got.lines().collect());
    let mut out = String::new();
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (w.get(i).copied(), g.get(i).copied());
        if a != b {
            out.push_str(&format!(
                "line {}: want {:?}\n         got  {:?}\n",
                i + 1,
                a,
                b
            ));
        }
    }
    out
}

#[tokio::test]
async fn conditions_deadlines_and_live_volumes() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    let node = start_node(
        &cp,
        dir.path(),
        "vk-conditions",
        &["--secret-sync-period=2s"],
    )
    .await?;
    let result = conditions_scenario(&cp, &node).await;
    with_logs(result, &[&node])
}

async fn conditions_scenario(cp: &ControlPlane, node: &support::VirtualNode) -> anyhow::Result<()> {
    let client = cp.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // 1. Readiness gates: not Ready until another client sets the gate True.
    let gated = scheduled_pod(
        "gated",
        serde_json::json!({"app": "gated"}),
        serde_json::json!({"readinessGates": [{"conditionType": "example.com/gate"}]}),
    )?;
    pods.create(&Default::default(), &gated).await?;
    let running = phase(&pods, "gated", "Running").await?;
    let uid = running.uid().unwrap_or_default();
    let not_ready = eventually(SLOW, "gated pod reported not Ready", || async {
        let p = pods.get("gated").await?;
        Ok(condition(&p, "ContainersReady")
            .is_some_and(|c| c.status == "True")
            .then_some(p))
    })
    .await?;
    let ready = condition(&not_ready, "Ready").expect("Ready condition");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));

    // A separate client (as a load balancer controller would) sets the gate and a condition of
    // its own.
    let gate_patch = serde_json::json!({"status": {"conditions": [
        {"type": "example.com/gate", "status": "True"},
        {"type": "example.com/foreign", "status": "True", "reason": "SetByAnother"},
    ]}});
    pods.patch_status(
        "gated",
        &PatchParams::default(),
        &Patch::Strategic(gate_patch),
    )
    .await?;
    eventually(SLOW, "gated pod Ready", || async {
        let p = pods.get("gated").await?;
        Ok(condition(&p, "Ready")
            .is_some_and(|c| c.status == "True")
            .then_some(()))
    })
    .await?;
    // Ten later status writes by the shim (each restart changes the restart count).
    for n in 1..=10 {
        assert!(node.control.restart_container(&uid, "c", 1), "restart {n}");
        eventually(SLOW, &format!("restart count {n} written"), || async {
            let p = pods.get("gated").await?;
            let count = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .map(|c| c.restart_count);
            Ok((count == Some(n)).then_some(()))
        })
        .await?;
    }
    // An ephemeral container (what `kubectl debug` adds; 1.20's legacy subresource) gets an
    // event and a terminated status saying why, rather than silence.
    let debug = serde_json::json!({
        "apiVersion": "v1", "kind": "EphemeralContainers",
        "metadata": {"name": "gated", "namespace": "default"},
        "ephemeralContainers": [{"name": "debugger", "image": "busybox",
            "imagePullPolicy": "IfNotPresent", "terminationMessagePolicy": "File"}],
    });
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), debug.to_string())?;
    kubectl(
        cp,
        &[
            "replace",
            "--raw",
            "/api/v1/namespaces/default/pods/gated/ephemeralcontainers",
            "-f",
            &file.path().to_string_lossy(),
        ],
    )?;
    let event_api: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually(SLOW, "ephemeral container reported", || async {
        let p = pods.get("gated").await?;
        let reported = p
            .status
            .as_ref()
            .and_then(|s| s.ephemeral_container_statuses.as_ref())
            .and_then(|e| e.first())
            .and_then(|e| e.state.as_ref())
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some("NotSupported"));
        let evented = events(&event_api, "gated")
            .await?
            .iter()
            .any(|e| e.reason.as_deref() == Some("EphemeralContainerNotSupported"));
        Ok((reported && evented).then_some(()))
    })
    .await?;

    let after = pods.get("gated").await?;
    let foreign = condition(&after, "example.com/foreign").expect("the foreign condition survives");
    assert_eq!(foreign.reason.as_deref(), Some("SetByAnother"));
    assert_eq!(
        condition(&after, "example.com/gate").map(|c| c.status.as_str()),
        Some("True")
    );
    assert_eq!(
        condition(&after, "Ready").map(|c| c.status.as_str()),
        Some("True")
    );

    // 2. activeDeadlineSeconds: Failed/DeadlineExceeded, and the provider was asked to stop.
    let deadline = scheduled_pod(
        "deadline",
        serde_json::json!({"app": "deadline"}),
        serde_json::json!({"activeDeadlineSeconds": 5}),
    )?;
    let created = Instant::now();
    pods.create(&Default::default(), &deadline).await?;
    let failed = eventually(Duration::from_secs(30), "deadline pod Failed", || async {
        let p = pods.get("deadline").await?;
        Ok((p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")).then_some(p))
    })
    .await?;
    let took = created.elapsed();
    let status = failed.status.clone().unwrap_or_default();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let start = status.start_time.expect("start time").0;
    let failed_after = k8s_openapi::jiff::Timestamp::now().duration_since(start);
    assert!(
        failed_after.as_secs() <= 10,
        "failed {failed_after:?} after start"
    );
    let deadline_uid = failed.uid().unwrap_or_default();
    assert_eq!(
        node.control.last_delete_grace(&deadline_uid),
        Some(30),
        "the provider got the stop with the pod's grace period"
    );

    // 3. A mounted ConfigMap follows its source while the pod runs.
    kubectl(
        cp,
        &["create", "configmap", "live", "--from-literal=mode=first"],
    )?;
    kubectl(
        cp,
        &[
            "create",
            "secret",
            "generic",
            "live-secret",
            "--from-literal=key=one",
        ],
    )?;
    let live = scheduled_pod(
        "live",
        serde_json::json!({"app": "live"}),
        serde_json::json!({
            "containers": [{"name": "c", "image": "nginx",
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"},
                                 {"name": "sec", "mountPath": "/sec"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "live"}},
                        {"name": "sec", "secret": {"secretName": "live-secret"}}],
        }),
    )?;
    pods.create(&Default::default(), &live).await?;
    let running = phase(&pods, "live", "Running").await?;
    let live_uid = running.uid().unwrap_or_default();
    let mode = |p: &pb::Pod| file_in(p, "cfg", "mode").map(|(text, _)| text);
    let first = provider_pod(&node.control, &live_uid).and_then(|p| mode(&p));
    assert_eq!(first.as_deref(), Some("first"));
    let edited = Instant::now();
    kubectl(
        cp,
        &[
            "patch",
            "configmap",
            "live",
            "-p",
            r#"{"data":{"mode":"second"}}"#,
        ],
    )?;
    eventually(
        Duration::from_secs(15),
        "the provider has the new content",
        || async {
            let got = provider_pod(&node.control, &live_uid).and_then(|p| mode(&p));
            Ok((got.as_deref() == Some("second")).then_some(()))
        },
    )
    .await?;
    tracing::info!(took = ?edited.elapsed(), "ConfigMap change reached the provider");

    // A mounted Secret follows too (polled every --secret-sync-period, here 2 s).
    let key = |p: &pb::Pod| file_in(p, "sec", "key");
    let first = provider_pod(&node.control, &live_uid).and_then(|p| key(&p));
    assert_eq!(first, Some(("one".to_owned(), true)));
    kubectl(
        cp,
        &[
            "patch",
            "secret",
            "live-secret",
            "-p",
            r#"{"stringData":{"key":"two"}}"#,
        ],
    )?;
    eventually(
        Duration::from_secs(15),
        "the provider has the new Secret content",
        || async {
            let got = provider_pod(&node.control, &live_uid).and_then(|p| key(&p));
            Ok((got == Some(("two".to_owned(), true))).then_some(()))
        },
    )
    .await?;
    Ok(())
}
