//! The helm chart (`helm/`), checked the way a user meets it:
//! - `helm lint` and `helm template` for each provider; the rendered manifests pass
//!   `kubernetes-validate --strict`; the values schema (and the template's own checks) reject bad
//!   values;
//! - each real provider binary, started with its rendered sidecar arguments and environment
//!   against its cloud (the ACI and ECI emulators, moto), serves gRPC and its probe endpoint;
//! - the three renders apply to the real API server, and the node-shim, run with the
//!   Deployment's own arguments under the chart's ServiceAccount token, takes a pod through its
//!   whole life (Node, Lease, serving CSR, ConfigMap/Secret env, service links, a projected
//!   service-account token from the TokenRequest API, status, events, `kubectl logs` and a bearer
//!   token's request to the kubelet API through TokenReview + SubjectAccessReview, deletion)
//!   without a single "forbidden"; with one rule removed from the chart's ClusterRole the same
//!   run fails.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command as StdCommand,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use provider_common::ListenAddr;
use serde_json::{Value, json};
use support::{SLOW, approve_serving_cert, curl, grant_node_proxy, kubectl, scheduled_pod};
use tokio::process::Command;
use vk_testkit::{
    ControlPlane,
    aci_emulator::{self, AciEmulator, AciEmulatorOptions},
    bins::{cache_dir, workspace_bin},
    eci_emulator::{self, EciEmulator, EciEmulatorOptions},
    grpcurl::{self, Target},
    moto::Moto,
    ports::free_port,
    process::ManagedProcess,
    provider_checks,
    test_provider::Control,
    wait::eventually,
};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm");
const NAMESPACE: &str = "vk-system";

fn helm() -> anyhow::Result<PathBuf> {
    let helm = cache_dir().join("helm/helm");
    ensure!(
        helm.exists(),
        "{} is missing: run scripts/setup.sh",
        helm.display()
    );
    Ok(helm)
}

/// Runs a command; its stdout, or an error with its output.
fn run(cmd: &mut StdCommand) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

/// `helm template` of the chart with `values` (a YAML/JSON document) into a file.
fn render(dir: &Path, name: &str, values: &Value) -> anyhow::Result<(PathBuf, Vec<Value>)> {
    let values_file = dir.join(format!("{name}-values.json"));
    std::fs::write(&values_file, serde_json::to_vec(values)?)?;
    let yaml = run(StdCommand::new(helm()?)
        .args(["template", name, CHART, "--namespace", NAMESPACE, "-f"])
        .arg(&values_file))?;
    let rendered = dir.join(format!("{name}.yaml"));
    std::fs::write(&rendered, &yaml)?;
    Ok((rendered.clone(), yaml_documents(&rendered)?))
}

/// The YAML stream's documents as JSON (through the venv's PyYAML).
fn yaml_documents(file: &Path) -> anyhow::Result<Vec<Value>> {
    let json = run(StdCommand::new(cache_dir().join("venv/bin/python"))
        .args([
            "-c",
            "import sys, yaml, json; \
             json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(file))?;
    Ok(serde_json::from_str(&json)?)
}

/// Whether a rendered document is a helm hook (created only when its event comes, e.g. at
/// uninstall), not part of the installed release.
fn is_hook(doc: &Value) -> bool {
    doc["metadata"]["annotations"]["helm.sh/hook"].is_string()
}

/// Writes `docs` as one `v1/List` file for `kubectl apply -f`.
fn list_file(dir: &Path, name: &str, docs: &[&Value]) -> anyhow::Result<String> {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": docs}))?,
    )?;
    Ok(file.display().to_string())
}

fn find<'a>(docs: &'a [Value], kind: &str) -> anyhow::Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind} rendered"))
}

/// The Deployment's container called `name`.
fn container<'a>(docs: &'a [Value], name: &str) -> anyhow::Result<&'a Value> {
    find(docs, "Deployment")?["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .with_context(|| format!("no {name} container"))
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A provider's settings as a user writes them in `providerConfig` (its README's flags), and the
/// arguments they must become.
fn provider_config(provider: &str) -> (Value, Vec<&'static str>) {
    match provider {
        "eci" => (
            json!({"region": "cn-hangzhou", "vswitch-id": "vsw-1", "security-group-id": "sg-1", "vpc-endpoint": true}),
            vec![
                "--region=cn-hangzhou",
                "--vswitch-id=vsw-1",
                "--security-group-id=sg-1",
                "--vpc-endpoint",
            ],
        ),
        "aci" => (
            json!({"subscription-id": "sub", "resource-group": "rg", "location": "westeurope", "subnet-ids": ["s1", "s2"]}),
            vec![
                "--subscription-id=sub",
                "--resource-group=rg",
                "--location=westeurope",
                "--subnet-ids=s1,s2",
            ],
        ),
        _ => (
            json!({"region": "us-east-1", "subnets": ["a", "b"], "assign-public-ip": true, "capacity-pods": 2_000_000}),
            vec![
                "--region=us-east-1",
                "--subnets=a,b",
                "--assign-public-ip",
                "--capacity-pods=2000000",
            ],
        ),
    }
}

#[test]
fn chart_lints_renders_and_validates_for_each_provider() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let validate = cache_dir().join("venv/bin/kubernetes-validate");
    for (provider, taint_key) in [
        ("eci", "alibabacloud.com/eci"),
        ("aci", "virtual-kubelet.io/provider"),
        ("fargate", "virtual-kubelet.io/provider"),
    ] {
        run(StdCommand::new(helm()?)
            .args(["lint", "--strict", CHART, "--set"])
            .arg(format!(
                "provider={provider},credentials.existingSecret=cloud-creds"
            )))?;
        let (config, want_args) = provider_config(provider);
        let values = json!({
            "provider": provider,
            "nodeName": format!("vn-{provider}"),
            "extraTaints": ["azure.com/aci:NoSchedule"],
            // A big whole number must not render as 1e+06.
            "capacity": {"cpu": "100", "pods": 1_000_000},
            "providerConfig": {provider: config},
            "credentials": {"existingSecret": "cloud-creds"},
            "telemetry": {"jaeger": {"enabled": true}},
            "clusterId": "team-a",
            "networkPolicy": {"enabled": true, "apiServerCIDRs": ["10.0.0.10/32"],
                "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        });
        let (file, docs) = render(dir.path(), provider, &values)?;
        // Only the API server's address reaches the kubelet port.
        let policy = find(&docs, "NetworkPolicy")?;
        ensure!(
            policy["spec"]["ingress"][0]
                == json!({"from": [{"ipBlock": {"cidr": "10.0.0.10/32"}}],
                    "ports": [{"protocol": "TCP", "port": 10250}]}),
            "{provider}: {policy}"
        );
        for version in ["1.25.0", "1.33.0"] {
            run(StdCommand::new(&validate)
                .args(["--strict", "--quiet", "-k", version])
                .arg(&file))
            .with_context(|| format!("{provider} chart against Kubernetes {version}"))?;
        }

        let shim = args(container(&docs, "node-shim")?);
        for want in [
            format!("--node-name=vn-{provider}"),
            format!("--taint-key={taint_key}"),
            "--extra-taint=azure.com/aci:NoSchedule".into(),
            "--capacity=pods=1000000".into(),
            "--provider-endpoint=unix:/var/run/vk/provider.sock".into(),
        ] {
            ensure!(
                shim.contains(&want),
                "{provider}: shim args {shim:?} lack {want}"
            );
        }
        let sidecar = container(&docs, "provider")?;
        ensure!(
            sidecar["image"]
                .as_str()
                .is_some_and(|i| i.contains(&format!("provider-{provider}:"))),
            "{provider}: sidecar image {}",
            sidecar["image"]
        );
        let provider_args = args(sidecar);
        let identity = if provider == "fargate" {
            "--installation-id=team-a"
        } else {
            "--cluster-id=team-a"
        };
        for want in ["--listen=unix:/var/run/vk/provider.sock", identity]
            .into_iter()
            .chain(want_args)
        {
            ensure!(
                provider_args.iter().any(|a| a == want),
                "{provider}: provider args {provider_args:?} lack {want}"
            );
        }
        // Cloud credentials reach the provider only; traces go to the bundled Jaeger.
        ensure!(sidecar["envFrom"][0]["secretRef"]["name"] == "cloud-creds");
        ensure!(container(&docs, "node-shim")?.get("envFrom").is_none());
        ensure!(docs.iter().any(|d| d["kind"] == "Service"
            && d["metadata"]["name"] == format!("vk-vn-{provider}-jaeger")));
        for c in ["node-shim", "provider"] {
            let sc = &container(&docs, c)?["securityContext"];
            ensure!(sc["readOnlyRootFilesystem"] == true && sc["runAsNonRoot"] == true);
            ensure!(sc["capabilities"]["drop"] == json!(["ALL"]));
            ensure!(container(&docs, c)?["livenessProbe"]["httpGet"]["path"] == "/healthz");
        }
        // The shim is ready while its provider answers.
        ensure!(container(&docs, "node-shim")?["readinessProbe"]["httpGet"]["path"] == "/readyz");
        // The provider binds its probe port only after rebuilding its state from the cloud.
        ensure!(sidecar["startupProbe"]["httpGet"]["path"] == "/healthz");
        // The shim works as its node (TLS bootstrap): the ServiceAccount gets no role of the
        // chart's own, only the built-in bootstrap roles; the provider container gets no token.
        ensure!(shim.iter().any(|a| a == "--tls-bootstrap"));
        let rules: Vec<&Value> = docs
            .iter()
            .filter(|d| !is_hook(d))
            .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
            .flat_map(|d| d["rules"].as_array().into_iter().flatten())
            .collect();
        ensure!(
            rules
                == [&json!({"apiGroups": [""], "resources": ["nodes"],
                    "resourceNames": [format!("vn-{provider}")], "verbs": ["patch"]})],
            "{provider}: the chart's own rules in node-identity mode: {rules:?}"
        );
        let bound: Vec<&str> = docs
            .iter()
            .filter(|d| !is_hook(d))
            .filter(|d| d["kind"] == "ClusterRoleBinding")
            .filter_map(|d| d["roleRef"]["name"].as_str())
            .collect();
        ensure!(
            bound
                == [
                    "system:node-bootstrapper",
                    "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                    format!("vk-vn-{provider}-node-owner").as_str(),
                    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                ],
            "{provider}: bindings {bound:?}"
        );
        // Uninstall drains the node first: a pre-delete Job running the shim's --deregister.
        let hook_job = docs
            .iter()
            .find(|d| d["kind"] == "Job" && is_hook(d))
            .context("no deregister hook Job")?;
        ensure!(hook_job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete");
        let pod_spec = &find(&docs, "Deployment")?["spec"]["template"]["spec"];
        ensure!(pod_spec["automountServiceAccountToken"] == false);
        let mounts = |c: &Value| -> Vec<String> {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        };
        ensure!(mounts(container(&docs, "node-shim")?).contains(&"kube-api-access".to_owned()));
        ensure!(
            !mounts(sidecar).contains(&"kube-api-access".to_owned()),
            "{provider}: the provider container mounts the ServiceAccount token"
        );
    }

    // Without the Node authorizer (nodeIdentity.tlsBootstrap=false) the chart's own ClusterRole
    // is used; its patches are limited to this release's own Node and Lease.
    let (_, docs) = render(
        dir.path(),
        "sa-identity",
        &json!({"nodeName": "vn-sa", "nodeIdentity": {"tlsBootstrap": false}}),
    )?;
    ensure!(
        !args(container(&docs, "node-shim")?)
            .iter()
            .any(|a| a == "--tls-bootstrap")
    );
    let named: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .flat_map(|d| d["rules"].as_array().into_iter().flatten())
        .filter(|r| r["verbs"] == json!(["patch"]))
        .filter(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == "nodes" || x == "leases"))
        })
        .collect();
    ensure!(
        named.len() >= 2 && named.iter().all(|r| r["resourceNames"] == json!(["vn-sa"])),
        "patch rules not limited to the node: {named:?}"
    );

    // The values schema turns mistakes into clear errors before anything is applied.
    for (bad, message) in [
        (
            "provider=gce",
            "value must be one of 'eci', 'aci', 'fargate'",
        ),
        ("extraTaints[0]=no-effect", "/extraTaints/0"),
        ("kubelet.servingCert=maybe", "/kubelet/servingCert"),
        ("clusterId=a/b", "/clusterId"),
        (
            "networkPolicy.enabled=true",
            "networkPolicy.enabled needs networkPolicy.apiServerCIDRs",
        ),
    ] {
        let out = StdCommand::new(helm()?)
            .args(["template", "x", CHART, "--set", bad])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.contains(message),
            "{bad}: expected a schema error mentioning {message:?}, got: {stderr}"
        );
    }
    Ok(())
}

/// Runs the real provider binary with the rendered sidecar's arguments and environment plus
/// `secret_env` (what `credentials.existingSecret` would hold), changed only where a process on
/// loopback must differ from a pod (socket path, metrics port); waits until it serves gRPC and its
/// probe endpoint.
async fn run_chart_provider(
    docs: &[Value],
    provider: &str,
    secret_env: &[(&str, String)],
    dir: &Path,
) -> anyhow::Result<ManagedProcess> {
    let sidecar = container(docs, "provider")?;
    let socket = dir.join(format!("{provider}.sock"));
    let metrics = free_port()?;
    let mut argv = Vec::new();
    for arg in args(sidecar) {
        argv.push(match arg.split_once('=') {
            Some(("--listen", _)) => format!("--listen=unix:{}", socket.display()),
            Some(("--metrics-address", _)) => format!("--metrics-address=127.0.0.1:{metrics}"),
            _ => arg,
        });
    }
    let mut env: Vec<(&str, String)> = sidecar["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?.to_owned())))
        .collect();
    env.extend(secret_env.iter().cloned());
    let bin = workspace_bin(&format!("provider-{provider}"))?;
    let process =
        provider_checks::start_provider(&bin, &argv, &env, &Target::Unix(socket.clone()), dir)
            .await
            .with_context(|| format!("provider-{provider} with the chart's arguments {argv:?}"))?;
    let probe = sidecar["startupProbe"]["httpGet"]["path"]
        .as_str()
        .context("startupProbe path")?
        .to_owned();
    let url = format!("http://127.0.0.1:{metrics}{probe}");
    eventually(
        SLOW,
        &format!("provider-{provider} probe {url}"),
        || async {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .await?;
            Ok((String::from_utf8_lossy(&out.stdout) == "200").then_some(()))
        },
    )
    .await?;
    let info = grpcurl::run_ok(
        &Target::Unix(socket),
        &[],
        &["podprovider.v1.PodProvider/GetNodeInfo"],
    )
    .await?;
    ensure!(
        info.contains(&format!("\"providerName\": \"{provider}\"")),
        "provider-{provider} GetNodeInfo: {info}"
    );
    Ok(process)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_serves_with_the_charts_arguments() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let render_for = |provider: &str, config: Value| {
        render(
            dir.path(),
            &format!("real-{provider}"),
            &json!({
                "provider": provider,
                "nodeName": format!("vn-{provider}"),
                "providerConfig": {provider: config},
                "credentials": {"existingSecret": "cloud-creds"},
                "logging": {"format": "text", "level": "info"},
            }),
        )
    };

    let eci = EciEmulator::start(dir.path(), EciEmulatorOptions::default()).await?;
    let (_, docs) = render_for(
        "eci",
        json!({
            "region": eci_emulator::REGION,
            "endpoint": eci.endpoint,
            "vswitch-id": eci_emulator::VSWITCH_ID,
            "security-group-id": eci_emulator::SECURITY_GROUP_ID,
            "zone-id": eci_emulator::ZONE_ID,
        }),
    )?;
    let _eci_provider = run_chart_provider(
        &docs,
        "eci",
        &[
            (
                "ALIBABA_CLOUD_ACCESS_KEY_ID",
                eci_emulator::ACCESS_KEY_ID.to_owned(),
            ),
            (
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                eci_emulator::ACCESS_KEY_SECRET.to_owned(),
            ),
        ],
        dir.path(),
    )
    .await?;

    let aci = AciEmulator::start(dir.path(), AciEmulatorOptions::default()).await?;
    let (_, docs) = render_for(
        "aci",
        json!({
            "subscription-id": aci_emulator::SUBSCRIPTION_ID,
            "resource-group": aci_emulator::RESOURCE_GROUP,
            "location": aci_emulator::LOCATION,
            "arm-endpoint": aci.endpoint,
            "authority-host": aci.endpoint,
        }),
    )?;
    let _aci_provider = run_chart_provider(
        &docs,
        "aci",
        &[
            ("AZURE_TENANT_ID", aci_emulator::TENANT_ID.to_owned()),
            ("AZURE_CLIENT_ID", aci_emulator::CLIENT_ID.to_owned()),
            (
                "AZURE_CLIENT_SECRET",
                aci_emulator::CLIENT_SECRET.to_owned(),
            ),
        ],
        dir.path(),
    )
    .await?;

    let moto = Moto::start(dir.path(), "vk", "vk-logs").await?;
    let (_, docs) = render_for(
        "fargate",
        json!({
            "region": vk_testkit::moto::REGION,
            "endpoint-url": moto.endpoint,
            "cluster": "vk",
            "subnets": [moto.subnet],
            "security-groups": [moto.security_group],
            "log-group": "vk-logs",
            "execution-role-arn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        }),
    )?;
    let creds: Vec<(&str, String)> = Moto::aws_env(&moto.endpoint)
        .into_iter()
        .filter(|(k, _)| *k != "AWS_ENDPOINT_URL" && *k != "AWS_REGION")
        .collect();
    let _fargate_provider = run_chart_provider(&docs, "fargate", &creds, dir.path()).await?;
    Ok(())
}

/// A kubeconfig for the control plane that authenticates as the chart's ServiceAccount.
fn service_account_kubeconfig(cp: &ControlPlane, sa: &str, path: &Path) -> anyhow::Result<()> {
    let token = kubectl(
        cp,
        &["create", "token", sa, "-n", NAMESPACE, "--duration=1h"],
    )?;
    let ca = std::fs::read_to_string(&cp.pki.ca_files.cert)?;
    use base64::Engine;
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": cp.server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca),
        }}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa}}],
        "current-context": "c",
    });
    std::fs::write(path, serde_json::to_vec(&config)?)?;
    Ok(())
}

/// Starts the shim with the chart's arguments and environment, changed only where a process on
/// loopback must differ from a pod: the provider socket, ports, the client CA and the pod IP.
fn spawn_chart_shim(
    cp: &ControlPlane,
    docs: &[Value],
    kubeconfig: &Path,
    socket: &Path,
    dir: &Path,
) -> anyhow::Result<ManagedProcess> {
    let shim = container(docs, "node-shim")?;
    let mut cmd = Command::new(Path::new(env!("CARGO_BIN_EXE_node-shim")));
    for arg in args(shim) {
        let arg = match arg.split_once('=') {
            Some(("--provider-endpoint", _)) => {
                format!("--provider-endpoint=unix:{}", socket.display())
            }
            Some(("--kubelet-port", _)) => format!("--kubelet-port={}", free_port()?),
            Some(("--metrics-address", _)) => {
                format!("--metrics-address=127.0.0.1:{}", free_port()?)
            }
            Some(("--client-ca-file", _)) => {
                format!("--client-ca-file={}", cp.pki.ca_files.cert.display())
            }
            Some(("--cert-dir", _)) => format!("--cert-dir={}", dir.join("pki").display()),
            _ => arg,
        };
        cmd.arg(arg);
    }
    for env in shim["env"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (env["name"].as_str(), env["value"].as_str()) {
            cmd.env(name, value);
        }
    }
    cmd.env("VKUBELET_POD_IP", "127.0.0.1")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["--ping-interval=1s", "--resync-period=5s"]);
    ManagedProcess::spawn("node-shim-chart", &mut cmd, dir)
}

/// Log lines of the shim that show a request the API server refused for lack of permission.
fn forbidden_lines(shim: &ManagedProcess) -> Vec<String> {
    std::fs::read_to_string(shim.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
        .map(str::to_owned)
        .collect()
}

/// One pod's life on the chart's node: env from a ConfigMap and a Secret, a projected
/// service-account token (TokenRequest), service links, Running, `kubectl logs`, events, deletion.
async fn pod_lifecycle(
    cp: &ControlPlane,
    control: &Control,
    node: &str,
    name: &str,
) -> anyhow::Result<()> {
    let client = cp.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut pod = scheduled_pod(
        name,
        json!({"app": name}),
        json!({"containers": [{"name": "c", "image": "nginx", "env": [
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "chart-cm", "key": "k"}}},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "chart-secret", "key": "k"}}},
        ], "volumeMounts": [{"name": "api-token", "mountPath": "/var/run/api"}]}],
        "volumes": [{"name": "api-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600, "audience": "api"}}]}}]}),
    )?;
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_selector = Some([("kubernetes.io/hostname".to_owned(), node.to_owned())].into());
        spec.tolerations = Some(serde_json::from_value(json!([
            {"key": "virtual-kubelet.io/provider", "operator": "Exists"},
            {"key": "azure.com/aci", "operator": "Exists"},
        ]))?);
    }
    pods.create(&Default::default(), &pod).await?;
    eventually(SLOW, &format!("{name} Running"), || async {
        let p = pods.get(name).await?;
        Ok(p.status
            .and_then(|s| s.phase)
            .filter(|phase| phase == "Running"))
    })
    .await?;
    // The token came from the TokenRequest API (serviceaccounts/token): a JWT.
    let token = control
        .pods()
        .into_iter()
        .filter(|p| p.pod_ref.as_ref().is_some_and(|r| r.name == name))
        .flat_map(|p| p.volumes)
        .filter(|v| v.name == "api-token")
        .find_map(|v| match v.source {
            Some(podprovider_proto::v1::volume::Source::Files(f)) => f.files.into_iter().next(),
            _ => None,
        })
        .context("the projected token volume did not reach the provider")?;
    ensure!(
        token.sensitive && String::from_utf8_lossy(&token.content).split('.').count() == 3,
        "the projected token is not a JWT"
    );
    let logs = eventually(SLOW, &format!("kubectl logs {name}"), || async {
        Ok(kubectl(cp, &["logs", name]).ok().filter(|l| !l.is_empty()))
    })
    .await?;
    tracing::info!(%logs, "logs through the chart's kubelet API");
    let exec = kubectl(cp, &["exec", name, "--", "echo", "exec-ok"])?;
    ensure!(exec.trim() == "exec-ok", "kubectl exec {name}: {exec}");
    let events = kubectl(
        cp,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={.items[*].reason}",
        ],
    )?;
    ensure!(
        events.contains("ProviderCreated"),
        "events of {name}: {events}"
    );
    pods.delete(name, &Default::default()).await?;
    eventually(SLOW, &format!("{name} gone"), || async {
        Ok(pods.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// What the shim did ran as `system:node:<node>`, and that identity is confined as a kubelet's:
/// with the certificate the shim obtained, a Secret no pod on the node uses, a token for a
/// kube-system ServiceAccount and another Node are all refused.
async fn node_identity_is_confined(
    cp: &ControlPlane,
    sa: &str,
    node: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let user = format!("system:node:{node}");
    let requester = |signer: &str| -> anyhow::Result<Vec<String>> {
        let out = kubectl(
            cp,
            &[
                "get",
                "csr",
                "-o",
                &format!(
                    "jsonpath={{range .items[?(@.spec.signerName==\"{signer}\")]}}{{.spec.username}}{{\"\\n\"}}{{end}}"
                ),
            ],
        )?;
        Ok(out.lines().map(str::to_owned).collect())
    };
    let client_requesters = requester("kubernetes.io/kube-apiserver-client-kubelet")?;
    ensure!(
        client_requesters == [format!("system:serviceaccount:{NAMESPACE}:{sa}")],
        "node client certificate requested by {client_requesters:?}"
    );
    let serving_requesters = requester("kubernetes.io/kubelet-serving")?;
    ensure!(
        !serving_requesters.is_empty() && serving_requesters.iter().all(|u| *u == user),
        "serving certificate requested by {serving_requesters:?}, not by the node"
    );

    let pki = dir.join("pki");
    let as_node = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = StdCommand::new("kubectl")
            .arg(format!("--server={}", cp.server))
            .arg(format!(
                "--certificate-authority={}",
                cp.pki.ca_files.cert.display()
            ))
            .arg(format!(
                "--client-certificate={}",
                pki.join("node-client.crt").display()
            ))
            .arg(format!(
                "--client-key={}",
                pki.join("node-client.key").display()
            ))
            .args(args)
            .output()?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let (ok, who) = as_node(&["get", "node", node, "-o", "name"])?;
    ensure!(ok, "the node's certificate cannot read its own Node: {who}");
    kubectl(
        cp,
        &[
            "create",
            "secret",
            "generic",
            "unmounted",
            "--from-literal=k=v",
        ],
    )?;
    let other =
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "some-other-node"}});
    let other_file = dir.join("other-node.json");
    std::fs::write(&other_file, serde_json::to_vec(&other)?)?;
    kubectl(cp, &["create", "-f", &other_file.display().to_string()])?;
    for (what, args) in [
        (
            "read a Secret no pod on the node uses",
            vec!["get", "secret", "unmounted", "-n", "default"],
        ),
        (
            "mint a kube-system ServiceAccount token",
            vec!["create", "token", "default", "-n", "kube-system"],
        ),
        (
            "patch another Node",
            vec!["label", "node", "some-other-node", "stolen=yes"],
        ),
        ("list Secrets", vec!["get", "secrets", "-A"]),
    ] {
        let (ok, out) = as_node(&args)?;
        ensure!(
            !ok && out.contains("forbidden"),
            "as {user}, expected to be refused to {what}, got: {out}"
        );
    }
    Ok(())
}

/// `helm uninstall`'s pre-delete hook, run as the rendered Job would run it (its arguments, the
/// chart's ServiceAccount with the hook's permissions): the node's pod is deleted and its cloud
/// workload with it, the shim's Deployment scaled to zero (here the test then stops the shim
/// process, as the kubelet would stop its pod), and the Node and its Lease are gone.
async fn uninstall_drains_the_node(
    cp: &ControlPlane,
    docs: &[Value],
    control: &Control,
    shim: &mut ManagedProcess,
    kubeconfig: &Path,
    node: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let client = cp.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut pod = scheduled_pod("drained", json!({"app": "drained"}), json!({}))?;
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_selector = Some([("kubernetes.io/hostname".to_owned(), node.to_owned())].into());
        spec.tolerations = Some(serde_json::from_value(json!([
            {"key": "virtual-kubelet.io/provider", "operator": "Exists"},
            {"key": "azure.com/aci", "operator": "Exists"},
        ]))?);
    }
    pods.create(&Default::default(), &pod).await?;
    eventually(SLOW, "drained Running", || async {
        let p = pods.get("drained").await?;
        Ok(p.status.and_then(|s| s.phase).filter(|p| p == "Running"))
    })
    .await?;
    ensure!(
        !control.pods().is_empty(),
        "the provider runs no workload before uninstall"
    );

    // The hook's RBAC exists only during uninstall; the Job runs the shim image.
    let hook_rbac: Vec<&Value> = docs
        .iter()
        .filter(|d| is_hook(d) && d["kind"] != "Job")
        .collect();
    kubectl(
        cp,
        &["apply", "-f", &list_file(dir, "hook-rbac", &hook_rbac)?],
    )?;
    let job = docs
        .iter()
        .find(|d| d["kind"] == "Job" && is_hook(d))
        .context("no hook Job")?;
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let mut cmd = Command::new(Path::new(env!("CARGO_BIN_EXE_node-shim")));
    cmd.args(args(container))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--metrics-address=off");
    let mut hook = ManagedProcess::spawn("deregister-hook", &mut cmd, dir)?;

    // The kubelet stops the shim's pod once its Deployment is scaled to zero.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), NAMESPACE);
    let deployment = find(docs, "Deployment")?["metadata"]["name"]
        .as_str()
        .context("Deployment name")?
        .to_owned();
    eventually(SLOW, "the shim's Deployment scaled to zero", || async {
        let d = deployments.get(&deployment).await?;
        Ok((d.spec.replicas == Some(0)).then_some(()))
    })
    .await?;
    ensure!(
        pods.get_opt("drained").await?.is_none(),
        "the node's pod outlived the drain"
    );
    ensure!(
        control.pods().is_empty(),
        "cloud workloads left after the drain: {:?}",
        control
            .pods()
            .iter()
            .map(|p| p.pod_ref.clone())
            .collect::<Vec<_>>()
    );
    shim.stop(Duration::from_secs(10)).await?;
    let status = hook.wait(SLOW).await?;
    ensure!(
        status.success(),
        "the deregister hook failed: {}",
        hook.log_excerpt(40)
    );
    let nodes: Api<Node> = Api::all(client.clone());
    ensure!(nodes.get_opt(node).await?.is_none(), "the Node is left");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client, "kube-node-lease");
    eventually(SLOW, "the Lease collected with its Node", || async {
        Ok(leases.get_opt(node).await?.is_none().then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_applies_and_its_node_identity_is_enough_for_a_pod_lifecycle() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let cp = ControlPlane::start().await?;
    let dir = tempfile::tempdir()?;
    let node = "vn-chart";
    let values = json!({
        "provider": "fargate",
        "nodeName": node,
        "extraTaints": ["azure.com/aci:NoSchedule"],
        "capacity": {"pods": "123"},
        "providerConfig": {"fargate": {"region": "us-east-1", "cluster": "vk"}},
    });
    let (_, docs) = render(dir.path(), "chart", &values)?;
    kubectl(&cp, &["create", "namespace", NAMESPACE])?;
    // What `helm install` creates: everything but the hooks.
    let installed: Vec<&Value> = docs.iter().filter(|d| !is_hook(d)).collect();
    kubectl(
        &cp,
        &[
            "apply",
            "-f",
            &list_file(dir.path(), "installed", &installed)?,
        ],
    )?;
    // The other providers' renders are accepted by the API server too.
    for provider in ["eci", "aci"] {
        let (file, _) = render(
            dir.path(),
            &format!("apply-{provider}"),
            &json!({
                "provider": provider,
                "nodeName": format!("vn-apply-{provider}"),
                "providerConfig": {provider: provider_config(provider).0},
                "credentials": {"existingSecret": "cloud-creds"},
                "telemetry": {"jaeger": {"enabled": true}},
            }),
        )?;
        kubectl(&cp, &["apply", "-f", &file.display().to_string()])?;
        kubectl(
            &cp,
            &[
                "get",
                "deployment",
                "-n",
                NAMESPACE,
                &format!("vk-vn-apply-{provider}"),
            ],
        )?;
    }
    let sa = find(&docs, "ServiceAccount")?["metadata"]["name"]
        .as_str()
        .context("ServiceAccount name")?
        .to_owned();
    kubectl(
        &cp,
        &["get", "deployment", "-n", NAMESPACE, &format!("vk-{node}")],
    )?;
    kubectl(
        &cp,
        &[
            "get",
            "clusterrolebinding",
            &format!("vk-{node}-nodeclient"),
        ],
    )?;
    kubectl(
        &cp,
        &["create", "configmap", "chart-cm", "--from-literal=k=v"],
    )?;
    kubectl(
        &cp,
        &[
            "create",
            "secret",
            "generic",
            "chart-secret",
            "--from-literal=k=s3cr3t",
        ],
    )?;

    let kubeconfig = dir.path().join("sa.kubeconfig");
    service_account_kubeconfig(&cp, &sa, &kubeconfig)?;
    // The ServiceAccount may do what the shim does and no more (`can-i` answers "no" with exit 1).
    let can = |verb: &str, resource: &str| {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let out = cp
            .kubectl()
            .args(["auth", "can-i", verb, resource, "--subresource", sub])
            .arg(format!("--as=system:serviceaccount:{NAMESPACE}:{sa}"))
            .output();
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "yes")
    };
    // TLS bootstrap: the ServiceAccount may ask for a node client certificate and nothing else
    // (`can-i` answers "no" with exit 1).
    for allowed in [
        "create certificatesigningrequests.certificates.k8s.io",
        "create certificatesigningrequests.certificates.k8s.io/nodeclient",
    ] {
        let (verb, resource) = allowed.split_once(' ').context("verb resource")?;
        ensure!(
            can(verb, resource),
            "the chart's ServiceAccount cannot {allowed}"
        );
    }
    for denied in [
        "get secrets",
        "create serviceaccounts/token",
        "patch pods/status",
        "list pods",
        "delete pods",
        "create pods",
        "patch nodes",
        "create tokenreviews.authentication.k8s.io",
    ] {
        let (verb, resource) = denied.split_once(' ').context("verb resource")?;
        ensure!(
            !can(verb, resource),
            "the chart's ServiceAccount may {denied}"
        );
    }

    let socket = dir.path().join("provider.sock");
    let control = Control::new();
    let _server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let mut shim = spawn_chart_shim(&cp, &docs, &kubeconfig, &socket, dir.path())?;
    let result = async {
        let (kubelet_port, _) = approve_serving_cert(&cp, node).await?;
        let nodes: Api<Node> = Api::all(cp.client().await?);
        eventually(
            SLOW,
            "chart node Ready with the capacity override",
            || async {
                let n = nodes.get_opt(node).await?;
                let status = n.and_then(|n| n.status);
                let ready = status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let pods = status
                    .and_then(|s| s.capacity)
                    .and_then(|c| c.get("pods").cloned());
                Ok((ready && pods.is_some_and(|q| q.0 == "123")).then_some(()))
            },
        )
        .await?;
        kubectl(&cp, &["get", "lease", "-n", "kube-node-lease", node])?;
        // NodeRestriction keeps kubernetes.io/role from the node; the acceptance manifests
        // select on it, so the owner credentials set it.
        let role = kubectl(
            &cp,
            &[
                "get",
                "node",
                node,
                "-o",
                r"jsonpath={.metadata.labels.kubernetes\.io/role}",
            ],
        )?;
        ensure!(role == "agent", "kubernetes.io/role={role:?}");
        pod_lifecycle(&cp, &control, node, "chart-pod").await?;
        // A bearer token at the kubelet API: the shim asks TokenReview who it is and
        // SubjectAccessReview whether it may (tokenreviews, subjectaccessreviews).
        kubectl(&cp, &["create", "serviceaccount", "prober"])?;
        grant_node_proxy(&cp, "chart-node-proxy", "prober")?;
        let prober = kubectl(&cp, &["create", "token", "prober"])?;
        let (code, body) = curl(kubelet_port, "/pods", Some(prober.trim())).await?;
        ensure!(code == 200, "a token with nodes/proxy got {code}: {body}");
        let stranger = kubectl(&cp, &["create", "token", "default"])?;
        let (code, body) = curl(kubelet_port, "/pods", Some(stranger.trim())).await?;
        ensure!(
            code == 403,
            "a token without nodes/proxy got {code}: {body}"
        );
        let forbidden = forbidden_lines(&shim);
        ensure!(forbidden.is_empty(), "the shim was refused: {forbidden:#?}");
        node_identity_is_confined(&cp, &sa, node, dir.path()).await?;
        uninstall_drains_the_node(
            &cp,
            &docs,
            &control,
            &mut shim,
            &kubeconfig,
            node,
            dir.path(),
        )
        .await?;
        Ok(())
    }
    .await;
    result.map_err(|err: anyhow::Error| {
        err.context(format!("--- shim log ---\n{}", shim.log_excerpt(80)))
    })
}

/// `providerMode: remote` (issue 25): the provider as its own Deployment and Service over mutual
/// TLS. The render lints and validates; the shim's pod has no provider container and reaches the
/// provider's Service over https with the client Secret's files; the provider serves mutual TLS
/// from the server Secret with no Kubernetes token; the provider's NetworkPolicy admits exactly
/// the shim's pods on the gRPC port (and metricsFrom on the metrics port); RBAC is the sidecar
/// render's; the render applies to a real API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_provider_mode_renders_validates_and_applies() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let validate = cache_dir().join("venv/bin/kubernetes-validate");
    let metrics_from = json!([{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]);
    let base = json!({
        "provider": "eci",
        "nodeName": "vn-remote",
        "providerConfig": {"eci": provider_config("eci").0},
        "credentials": {"existingSecret": "cloud-creds"},
        "networkPolicy": {"enabled": true, "apiServerCIDRs": ["10.0.0.10/32"],
            "metricsFrom": metrics_from},
    });
    let mut values = base.clone();
    values["providerMode"] = json!("remote");
    values["remoteProvider"] = json!({"serverTLSSecret": "provider-tls",
        "clientTLSSecret": "shim-tls", "allowedClientNames": ["vk-shim", "vk-shim.vk-system.svc"]});
    run(StdCommand::new(helm()?)
        .args(["lint", "--strict", CHART, "--set"])
        .arg("provider=eci,providerMode=remote,remoteProvider.serverTLSSecret=a,remoteProvider.clientTLSSecret=b"))?;
    let (file, docs) = render(dir.path(), "remote", &values)?;
    for version in ["1.25.0", "1.33.0"] {
        run(StdCommand::new(&validate)
            .args(["--strict", "--quiet", "-k", version])
            .arg(&file))
        .with_context(|| format!("remote mode against Kubernetes {version}"))?;
    }
    let of_kind =
        |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    let named = |kind: &str, name: &str| -> anyhow::Result<&Value> {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .with_context(|| format!("no {kind} {name}"))
    };

    // The shim's pod: no provider container; https to the provider Service, files from shim-tls
    // mounted whole (a subPath mount would never see a renewed Secret).
    let shim_deploy = named("Deployment", "vk-vn-remote")?;
    let shim_pod = &shim_deploy["spec"]["template"];
    let containers = shim_pod["spec"]["containers"]
        .as_array()
        .context("containers")?;
    ensure!(
        containers.len() == 1 && containers[0]["name"] == "node-shim",
        "shim pod containers: {containers:?}"
    );
    let shim = args(&containers[0]);
    for want in [
        "--provider-endpoint=https://vk-vn-remote-provider.vk-system.svc:50051",
        "--provider-ca-file=/etc/vk/provider-tls/ca.crt",
        "--provider-cert-file=/etc/vk/provider-tls/tls.crt",
        "--provider-key-file=/etc/vk/provider-tls/tls.key",
    ] {
        ensure!(
            shim.iter().any(|a| a == want),
            "shim args {shim:?} lack {want}"
        );
    }
    let mount = containers[0]["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == "/etc/vk/provider-tls"))
        .context("the shim mounts no provider TLS")?;
    ensure!(mount.get("subPath").is_none(), "{mount}");
    let volume = shim_pod["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
        .context("provider TLS volume")?;
    ensure!(volume["secret"]["secretName"] == "shim-tls", "{volume}");

    // The provider's own Deployment: mutual TLS on the port, from provider-tls, no token.
    let prov_deploy = named("Deployment", "vk-vn-remote-provider")?;
    let prov_pod = &prov_deploy["spec"]["template"];
    ensure!(prov_pod["spec"]["automountServiceAccountToken"] == false);
    let prov = &prov_pod["spec"]["containers"][0];
    let prov_args = args(prov);
    for want in [
        "--listen=0.0.0.0:50051",
        "--tls-cert-file=/etc/vk/provider-tls/tls.crt",
        "--tls-private-key-file=/etc/vk/provider-tls/tls.key",
        "--client-ca-file=/etc/vk/provider-tls/ca.crt",
        "--allowed-client-names=vk-shim,vk-shim.vk-system.svc",
        "--region=cn-hangzhou",
    ] {
        ensure!(
            prov_args.iter().any(|a| a == want),
            "provider args {prov_args:?} lack {want}"
        );
    }
    ensure!(prov["envFrom"][0]["secretRef"]["name"] == "cloud-creds");
    ensure!(prov_pod["spec"]["volumes"].as_array().is_some_and(|v| {
        v.iter()
            .any(|v| v["secret"]["secretName"] == "provider-tls")
    }));
    let prov_labels = &prov_pod["metadata"]["labels"];
    let shim_labels = &shim_pod["metadata"]["labels"];
    let selects = |selector: &Value, labels: &Value| {
        selector["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
    };
    // Neither Deployment adopts the other's pods.
    ensure!(!selects(&shim_deploy["spec"]["selector"], prov_labels));
    ensure!(!selects(&prov_deploy["spec"]["selector"], shim_labels));
    let svc = named("Service", "vk-vn-remote-provider")?;
    ensure!(selects(
        &json!({"matchLabels": svc["spec"]["selector"]}),
        prov_labels
    ));
    ensure!(
        svc["spec"]["ports"][0]
            == json!({"name": "grpc", "port": 50051, "targetPort": "grpc", "protocol": "TCP"})
    );

    // The provider's NetworkPolicy: its pods; gRPC from the shim's pods only.
    let policy = named("NetworkPolicy", "vk-vn-remote-provider")?;
    ensure!(selects(&policy["spec"]["podSelector"], prov_labels));
    ensure!(!selects(&policy["spec"]["podSelector"], shim_labels));
    ensure!(policy["spec"]["policyTypes"] == json!(["Ingress"]));
    let ingress = policy["spec"]["ingress"].as_array().context("ingress")?;
    ensure!(ingress.len() == 2, "{ingress:?}");
    let grpc_from = ingress[0]["from"].as_array().context("from")?;
    ensure!(grpc_from.len() == 1, "{grpc_from:?}");
    ensure!(selects(&grpc_from[0]["podSelector"], shim_labels));
    ensure!(!selects(&grpc_from[0]["podSelector"], prov_labels));
    ensure!(
        grpc_from[0].get("namespaceSelector").is_none(),
        "same namespace only"
    );
    ensure!(ingress[0]["ports"] == json!([{"protocol": "TCP", "port": 50051}]));
    ensure!(ingress[1]["from"] == metrics_from);
    ensure!(ingress[1]["ports"] == json!([{"protocol": "TCP", "port": 9464}]));

    // RBAC is the sidecar mode's: the provider gets no Kubernetes rights of its own.
    // Same release name (it is in the labels), another directory.
    let sidecar_dir = dir.path().join("sidecar");
    std::fs::create_dir_all(&sidecar_dir)?;
    let (_, sidecar_docs) = render(&sidecar_dir, "remote", &base)?;
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        let sidecar: Vec<&Value> = sidecar_docs.iter().filter(|d| d["kind"] == kind).collect();
        ensure!(of_kind(kind) == sidecar, "{kind} differs between modes");
    }

    // Missing Secrets are reported by name.
    let mut missing = values.clone();
    missing["remoteProvider"]["serverTLSSecret"] = json!("");
    let err = render(dir.path(), "missing", &missing).expect_err("no server Secret");
    ensure!(
        format!("{err:#}").contains("remoteProvider.serverTLSSecret is required"),
        "{err:#}"
    );

    // The API server accepts what `helm install` would create.
    let cp = ControlPlane::start().await?;
    kubectl(&cp, &["create", "namespace", NAMESPACE])?;
    let installed: Vec<&Value> = docs.iter().filter(|d| !is_hook(d)).collect();
    kubectl(
        &cp,
        &[
            "apply",
            "-f",
            &list_file(dir.path(), "remote-installed", &installed)?,
        ],
    )?;
    for what in [
        "deployment/vk-vn-remote-provider",
        "service/vk-vn-remote-provider",
        "networkpolicy/vk-vn-remote-provider",
        "deployment/vk-vn-remote",
    ] {
        kubectl(&cp, &["get", "-n", NAMESPACE, what])?;
    }
    Ok(())
}
