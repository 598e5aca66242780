//! A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler (1.20, built from Debian's source package by `scripts/k8s-build.sh`).
//!
//! Each [`ControlPlane`] has its own directory, CA, certificates, ports and etcd data, so tests can
//! run side by side. Dropping it kills the processes and removes the directory (set
//! `VK_KEEP_CONTROL_PLANE=1` to keep the directory and its logs).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::process::Command;

use crate::{
    bins,
    pki::{CertFiles, Pki, Usage},
    ports::free_port,
    process::ManagedProcess,
};

/// The service CIDR the API server allocates ClusterIPs from.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";

/// A running control plane.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    etcd_dir: tempfile::TempDir,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// The API server's secure port.
    pub port: u16,
    /// An admin (system:masters) kubeconfig.
    pub kubeconfig: PathBuf,
    /// The cluster CA.
    pub pki: Pki,
    /// The client certificate the API server presents to kubelets (CN kube-apiserver-kubelet-client).
    pub kubelet_client: CertFiles,
    processes: Vec<ManagedProcess>,
}

/// What differs from the default control plane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// How long certificates the controller-manager signs are valid (default: a year).
    pub cluster_signing_duration: Option<Duration>,
}

impl ControlPlane {
    /// Starts etcd, the API server, the controller-manager and the scheduler, and waits until the
    /// API server is ready and the `default` namespace has its service account (so pods can be
    /// created at once).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// [`ControlPlane::start`] with `options`.
    pub async fn start_with(options: Options) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let bin = bins::k8s_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("vk-cp-").tempdir()?;
        // etcd fsyncs a lot; keep its data in memory when /dev/shm exists.
        let shm = Path::new("/dev/shm");
        let etcd_dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("vk-etcd-")
                .tempdir_in(shm)?
        } else {
            tempfile::Builder::new().prefix("vk-etcd-").tempdir()?
        };
        let root = dir.path().to_owned();
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs)?;

        let pki = Pki::new(&root.join("pki"))?;
        let serving = pki.issue(
            "apiserver",
            "kube-apiserver",
            &[],
            &[
                "127.0.0.1",
                "localhost",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            Usage::Server,
        )?;
        let admin = pki.issue("admin", "admin", &["system:masters"], &[], Usage::Client)?;
        let kubelet_client = pki.issue(
            "kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
            &[],
            Usage::Client,
        )?;
        let (sa_key, sa_pub) = pki.new_key_pair("service-account")?;

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = root.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki.ca_pem(), &admin)?;

        let mut cp = Self {
            dir,
            etcd_dir,
            server,
            port,
            kubeconfig,
            pki,
            kubelet_client,
            processes: Vec::new(),
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = ManagedProcess::spawn(
            "etcd",
            Command::new(bin.join("etcd"))
                .arg("--name=vk")
                .arg(format!(
                    "--data-dir={}",
                    cp.etcd_dir.path().join("data").display()
                ))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=vk={peer_url}"))
                .arg("--logger=zap")
                .arg("--log-level=warn"),
            &logs,
        )?;
        cp.processes.push(etcd);
        cp.wait_for_tcp(etcd_client, Duration::from_secs(30))
            .await?;

        let ca = cp.pki.ca_files.cert.display().to_string();
        let sa_key = sa_key.display().to_string();
        let sa_pub = sa_pub.display().to_string();
        let apiserver = ManagedProcess::spawn(
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver"))
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg("--insecure-port=0")
                .arg(format!("--tls-cert-file={}", serving.cert.display()))
                .arg(format!("--tls-private-key-file={}", serving.key.display()))
                .arg(format!("--client-ca-file={ca}"))
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(format!("--service-account-key-file={sa_pub}"))
                .arg(format!("--service-account-signing-key-file={sa_key}"))
                .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
                .arg("--authorization-mode=Node,RBAC")
                // As in a real cluster: a node identity may touch only its own Node, Lease and pods.
                .arg("--enable-admission-plugins=NodeRestriction")
                .arg("--allow-privileged=true")
                .arg(format!(
                    "--kubelet-client-certificate={}",
                    cp.kubelet_client.cert.display()
                ))
                .arg(format!(
                    "--kubelet-client-key={}",
                    cp.kubelet_client.key.display()
                ))
                .arg("--kubelet-preferred-address-types=InternalIP,Hostname")
                .arg("--profiling=false")
                // Benchmarks push thousands of pods; don't let the API server's own limits dominate.
                .arg("--max-requests-inflight=2000")
                .arg("--max-mutating-requests-inflight=1000")
                // Alpha in 1.20 (on by default from 1.23): lets tests add ephemeral containers
                // as `kubectl debug` does.
                .arg("--feature-gates=EphemeralContainers=true")
                .arg("--v=1"),
            &logs,
        )?;
        cp.processes.push(apiserver);
        cp.wait_ready(Duration::from_secs(90)).await?;

        let kubeconfig_arg = format!("--kubeconfig={}", cp.kubeconfig.display());
        let controller_manager = ManagedProcess::spawn(
            "kube-controller-manager",
            Command::new(bin.join("kube-controller-manager"))
                .arg(&kubeconfig_arg)
                .arg("--port=0")
                .arg("--secure-port=0")
                .arg("--leader-elect=false")
                .arg(format!("--service-account-private-key-file={sa_key}"))
                .arg(format!("--root-ca-file={ca}"))
                .arg(format!("--cluster-signing-cert-file={ca}"))
                .arg(format!(
                    "--cluster-signing-key-file={}",
                    cp.pki.ca_files.key.display()
                ))
                .args(
                    options
                        .cluster_signing_duration
                        .map(|d| format!("--cluster-signing-duration={}s", d.as_secs())),
                )
                .arg("--use-service-account-credentials=false")
                .arg("--kube-api-qps=500")
                .arg("--kube-api-burst=1000")
                .arg("--concurrent-replicaset-syncs=10")
                .arg("--v=1"),
            &logs,
        )?;
        cp.processes.push(controller_manager);
        let scheduler = ManagedProcess::spawn(
            "kube-scheduler",
            Command::new(bin.join("kube-scheduler"))
                .arg(&kubeconfig_arg)
                .arg("--port=0")
                .arg("--secure-port=0")
                .arg("--leader-elect=false")
                .arg("--kube-api-qps=500")
                .arg("--kube-api-burst=1000")
                .arg("--v=1"),
            &logs,
        )?;
        cp.processes.push(scheduler);

        cp.wait_for_service_account("default", "default", Duration::from_secs(60))
            .await?;
        tracing::info!(server = %cp.server, dir = %cp.dir.path().display(), "control plane ready");
        Ok(cp)
    }

    /// An admin client.
    pub async fn client(&self) -> anyhow::Result<Client> {
        crate::install_crypto_provider();
        let config = self.kube_config().await?;
        Client::try_from(config).context("building kube client")
    }

    /// The admin client configuration (for callers that tune timeouts or rate limits).
    pub async fn kube_config(&self) -> anyhow::Result<Config> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// The control plane's directory (certificates, kubeconfig, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `kubectl` command using the admin kubeconfig (`$KUBECTL` or `kubectl` on PATH).
    pub fn kubectl(&self) -> std::process::Command {
        let kubectl = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
        let mut cmd = std::process::Command::new(kubectl);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        cmd
    }

    /// Runs kubectl with `args`; its stdout, or an error with its output when it fails.
    pub fn run_kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl().args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of one component's log (`etcd`, `kube-apiserver`, ...), for failure messages.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        self.processes
            .iter()
            .find(|p| p.name() == component)
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }

    /// Fails if any component has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.processes
            .iter_mut()
            .try_for_each(ManagedProcess::ensure_running)
    }

    /// Stops every component (scheduler and controllers first, etcd last).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        while let Some(mut process) = self.processes.pop() {
            process.stop(Duration::from_secs(10)).await?;
        }
        Ok(())
    }

    /// Keeps the directory after drop (for debugging); returns its path.
    pub fn keep_dir(&mut self) -> PathBuf {
        self.dir.disable_cleanup(true);
        self.dir.path().to_owned()
    }

    async fn wait_for_tcp(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = self.client().await?;
        let deadline = Instant::now() + timeout;
        let mut last_err;
        loop {
            self.ensure_running()?;
            let req = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last_err = body,
                Err(err) => last_err = err.to_string(),
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after {timeout:?} ({last_err}); log tail:\n{}",
                    self.log_tail("kube-apiserver", 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until `namespace/name` exists with a token secret (the 1.20 ServiceAccount admission
    /// plugin rejects pods until then).
    pub async fn wait_for_service_account(
        &mut self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if let Some(sa) = api.get_opt(name).await?
                && sa.secrets.is_some_and(|s| !s.is_empty())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "service account {namespace}/{name} has no token after {timeout:?}; \
                     controller-manager log tail:\n{}",
                    self.log_tail("kube-controller-manager", 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::env::var_os("VK_KEEP_CONTROL_PLANE").is_some() {
            let dir = self.keep_dir();
            eprintln!("control plane directory kept: {}", dir.display());
        }
        // ManagedProcess kills its child on drop; etcd last.
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
    }
}

/// Writes a kubeconfig with embedded CA and client certificate.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    client: &CertFiles,
) -> anyhow::Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "vk-test", "cluster": {
            "server": server,
            "certificate-authority-data": B64.encode(ca_pem),
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": B64.encode(client.cert_pem()?),
            "client-key-data": B64.encode(client.key_pem()?),
        }}],
        "contexts": [{"name": "vk-test", "context": {"cluster": "vk-test", "user": "admin"}}],
        "current-context": "vk-test",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}
