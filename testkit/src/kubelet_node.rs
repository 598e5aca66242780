//! A real node for the test cluster: a private containerd (Debian's, with runc and the CNI plugins)
//! and a kubelet built from the same Kubernetes 1.20 source as the control plane
//! (`scripts/k8s-build.sh`), registered as `system:node:<name>`.
//!
//! Everything is private to one [`KubeletNode`]: containerd's root, state and socket, the
//! kubelet's root directory, a cgroup root (cgroup v1, cgroupfs driver), a CNI bridge with its own
//! subnet and no gateway address on the host (pod traffic cannot leave the bridge), and the node's
//! address: the kubelet refuses a loopback node IP, so the node gets a private `10.249.x.y/32` on
//! a veth pair of its own, a local address that no packet leaves the machine for. Images come
//! from OCI tarballs built by `scripts/images.sh` and are imported with `ctr`; nothing is pulled.
//! Dropping the node stops the kubelet, every container it started, containerd, and removes the
//! bridge, cgroups, mounts and directory (`VK_KEEP_NODE=1` keeps the directory and its logs).
//!
//! Global state the kubelet touches anyway: its kernel tunables (`vm.overcommit_memory`,
//! `kernel.panic`, `kernel.panic_on_oops`, ...; restored on drop) and `/var/log/pods` (a
//! directory per pod, which the kubelet's garbage collection removes about a minute after the pod
//! is gone; those of the node's last minute stay). A test process killed outright leaves its node's
//! processes, mounts, cgroups and links behind (names `vk-node-*`, `vkbr*`, `vkn*`).

use std::{
    collections::BTreeMap,
    hash::{BuildHasher, RandomState},
    path::{Path, PathBuf},
    process::Command as StdCommand,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::process::Command;

use crate::{
    ControlPlane, bins, control_plane::write_kubeconfig, pki::Usage, ports::free_port,
    process::ManagedProcess,
};

/// The sandbox image containerd runs for each pod (built by `scripts/images.sh --node-images`).
pub const PAUSE_IMAGE: &str = "docker.io/vk-rs/pause:3.4";
/// A small image for test pods: Debian's busybox-static (`sh`, `sleep`, `cat`, ...).
pub const TEST_IMAGE: &str = "docker.io/vk-rs/busybox:test";
/// The namespace the CRI plugin keeps Kubernetes' images and containers in.
const K8S_NAMESPACE: &str = "k8s.io";
/// The kubelet's sysctls (set by its container manager at start), restored on drop.
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// The directory with the OCI image tarballs: `$VK_IMAGES_DIR`, else `$VK_CACHE/images`.
pub fn images_dir() -> PathBuf {
    std::env::var_os("VK_IMAGES_DIR")
        .map_or_else(|| bins::cache_dir().join("images"), PathBuf::from)
}

/// The OCI tarball of image `name` (`pause`, `busybox`, `node-shim`, `provider-eci`, ...).
pub fn image_tarball(name: &str) -> anyhow::Result<PathBuf> {
    let path = images_dir().join(format!("{name}.oci.tar"));
    if !path.is_file() {
        bail!(
            "{} is missing: run scripts/images.sh (or scripts/images.sh --node-images for pause \
             and busybox)",
            path.display()
        );
    }
    Ok(path)
}

/// A running node: containerd + kubelet, registered with a [`ControlPlane`].
pub struct KubeletNode {
    dir: tempfile::TempDir,
    /// The Node's name (also the kubelet's client certificate's `system:node:<name>`).
    pub name: String,
    /// The node's InternalIP: a local address on a veth pair the node created (see the module
    /// docs). The kubelet listens here; hostNetwork pods see it as their pod IP.
    pub node_ip: String,
    /// The kubelet's HTTPS port on [`node_ip`](Self::node_ip) (logs, exec, ...).
    pub kubelet_port: u16,
    /// containerd's socket (for `ctr --address`).
    pub containerd_socket: PathBuf,
    /// The CNI bridge's subnet (pod IPs).
    pub pod_subnet: String,
    bridge: String,
    node_link: String,
    cgroup_root: String,
    sysctls: Vec<(PathBuf, String)>,
    containerd: Option<ManagedProcess>,
    kubelet: Option<ManagedProcess>,
}

impl KubeletNode {
    /// Starts containerd and a kubelet for `cp`, imports the node images (pause, busybox) and
    /// `extra_images` (tarball paths), and waits until the Node is Ready.
    pub async fn start(cp: &ControlPlane, extra_images: &[PathBuf]) -> anyhow::Result<Self> {
        let k8s_bin = bins::k8s_bin_dir()?;
        let kubelet_bin = k8s_bin.join("kubelet");
        if !kubelet_bin.is_file() {
            bail!(
                "{} is missing: run scripts/k8s-build.sh",
                kubelet_bin.display()
            );
        }
        let cni_bin = cni_bin_dir()?;
        for tool in ["containerd", "ctr", "runc", "containerd-shim-runc-v2"] {
            which(tool).with_context(|| {
                format!("{tool} not on PATH: run scripts/setup.sh (installs containerd and runc)")
            })?;
        }
        let mut images = vec![image_tarball("pause")?, image_tarball("busybox")?];
        images.extend(extra_images.iter().cloned());

        let dir = tempfile::Builder::new().prefix("vk-node-").tempdir()?;
        let root = dir.path().to_owned();
        let id = format!(
            "{:08x}",
            RandomState::new().hash_one(root.as_os_str()) & 0xffff_ffff
        );
        let name = format!("vk-node-{id}");
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs)?;
        let subnet_octet = u8::try_from(u32::from_str_radix(&id[..2], 16)? % 250)?;
        let pod_subnet = format!("10.248.{subnet_octet}.0/24");
        let ip_bytes = u32::from_str_radix(&id[2..6], 16)?;
        let node_ip = format!(
            "10.249.{}.{}",
            (ip_bytes >> 8) & 0xff,
            (ip_bytes & 0xff) % 254 + 1
        );

        let mut node = Self {
            dir,
            name: name.clone(),
            node_ip,
            kubelet_port: free_port()?,
            containerd_socket: root.join("containerd/containerd.sock"),
            pod_subnet,
            bridge: format!("vkbr{id}"),
            node_link: format!("vkn{id}"),
            cgroup_root: format!("/vk-node-{id}"),
            sysctls: read_sysctls(),
            containerd: None,
            kubelet: None,
        };

        node.create_node_address()?;
        node.write_cni_config(&cni_bin)?;
        node.start_containerd(&cni_bin, &logs).await?;
        for image in &images {
            node.import_image(image)?;
        }
        node.create_cgroup_root()?;
        node.start_kubelet(cp, &kubelet_bin, &logs)?;
        node.wait_ready(cp, Duration::from_secs(120)).await?;
        tracing::info!(node = %node.name, dir = %root.display(), "kubelet node ready");
        Ok(node)
    }

    /// The node's directory (configs, logs, kubelet and containerd state).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `ctr` command against this node's containerd, in the Kubernetes namespace.
    pub fn ctr(&self) -> StdCommand {
        let mut cmd = StdCommand::new("ctr");
        cmd.arg("--address")
            .arg(&self.containerd_socket)
            .arg("--namespace")
            .arg(K8S_NAMESPACE);
        cmd
    }

    /// Imports an OCI image tarball; returns the image names it carried.
    pub fn import_image(&self, tarball: &Path) -> anyhow::Result<Vec<String>> {
        let out = run(self.ctr().arg("images").arg("import").arg(tarball))
            .with_context(|| format!("importing {}", tarball.display()))?;
        // ctr prints "unpacking <name> (sha256:...)...done" per image.
        let names = out
            .lines()
            .filter_map(|l| l.strip_prefix("unpacking "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        Ok(names)
    }

    /// The ids of every container (running or not) in this node's containerd.
    pub fn containers(&self) -> anyhow::Result<Vec<String>> {
        let out = run(self.ctr().args(["containers", "list", "--quiet"]))?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// The names of the images in this node's containerd.
    pub fn images(&self) -> anyhow::Result<Vec<String>> {
        let out = run(self.ctr().args(["images", "list", "--quiet"]))?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// The last lines of the kubelet's (`kubelet`) or containerd's (`containerd`) log.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        [&self.kubelet, &self.containerd]
            .into_iter()
            .flatten()
            .find(|p| p.name() == component)
            .map(|p| p.log_excerpt(lines))
            .unwrap_or_default()
    }

    /// Fails if containerd or the kubelet has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        for process in [&mut self.containerd, &mut self.kubelet]
            .into_iter()
            .flatten()
        {
            process.ensure_running()?;
        }
        Ok(())
    }

    /// Stops the kubelet, then every container, then containerd; cleans up as drop does.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut kubelet) = self.kubelet.take() {
            kubelet.stop(Duration::from_secs(10)).await?;
        }
        self.remove_containers();
        if let Some(mut containerd) = self.containerd.take() {
            containerd.stop(Duration::from_secs(10)).await?;
        }
        Ok(())
    }

    /// A veth pair with the node's address on one end, both ends up (a local address is usable
    /// only on an interface that is up). No route points anywhere through it.
    fn create_node_address(&self) -> anyhow::Result<()> {
        let peer = format!("{}p", self.node_link);
        run(StdCommand::new("ip").args([
            "link",
            "add",
            self.node_link.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            peer.as_str(),
        ]))?;
        run(StdCommand::new("ip").args([
            "address",
            "add",
            format!("{}/32", self.node_ip).as_str(),
            "dev",
            self.node_link.as_str(),
        ]))?;
        for link in [&self.node_link, &peer] {
            run(StdCommand::new("ip").args(["link", "set", link.as_str(), "up"]))?;
        }
        Ok(())
    }

    fn write_cni_config(&self, cni_bin: &Path) -> anyhow::Result<()> {
        let conf_dir = self.dir().join("cni/net.d");
        std::fs::create_dir_all(&conf_dir)?;
        // A bridge without an address on the host and without masquerading: pods reach each other
        // on it, and nothing else (no route leaves the bridge).
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.name,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": false,
                "ipMasq": false,
                "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.pod_subnet}]],
                    "dataDir": self.dir().join("cni/ipam"),
                },
            }],
        });
        std::fs::write(
            conf_dir.join("10-vk-bridge.conflist"),
            serde_json::to_vec_pretty(&conf)?,
        )?;
        anyhow::ensure!(
            cni_bin.join("bridge").is_file() && cni_bin.join("host-local").is_file(),
            "CNI plugins bridge and host-local missing in {}",
            cni_bin.display()
        );
        Ok(())
    }

    async fn start_containerd(&mut self, cni_bin: &Path, logs: &Path) -> anyhow::Result<()> {
        let root = self.dir().to_owned();
        let cd = root.join("containerd");
        std::fs::create_dir_all(&cd)?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
# Plugins this node does not use; some would otherwise write outside the node's directory.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE (these machines drop it) runc cannot give sandboxes the kubelet's
  # oom_score_adj -998; clamp pods' scores to containerd's own instead.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"#,
            root = cd.join("root").display(),
            state = cd.join("state").display(),
            socket = self.containerd_socket.display(),
            pause = PAUSE_IMAGE,
            runc_root = cd.join("runc").display(),
            cni_bin = cni_bin.display(),
            cni_conf = root.join("cni/net.d").display(),
        );
        let config_path = cd.join("config.toml");
        std::fs::write(&config_path, config)?;
        let containerd = ManagedProcess::spawn(
            "containerd",
            Command::new("containerd")
                .arg("--config")
                .arg(&config_path)
                .arg("--log-level=info"),
            logs,
        )?;
        self.containerd = Some(containerd);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.ensure_running()?;
            if self.containerd_socket.exists()
                && self
                    .ctr()
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer on {} within 30 s:\n{}",
                    self.containerd_socket.display(),
                    self.log_tail("containerd", 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The kubelet's cgroup root, in every mounted v1 hierarchy: the kubelet requires it to exist,
    /// and a private one keeps this node's pods apart from any other node's on the machine.
    fn create_cgroup_root(&self) -> anyhow::Result<()> {
        for hierarchy in cgroup_hierarchies()? {
            let dir = hierarchy.join(self.cgroup_root.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            // A new cpuset cgroup has no CPUs or memory nodes: inherit the parent's.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = hierarchy.join(file);
                if parent.is_file() {
                    let value = std::fs::read_to_string(&parent)?;
                    std::fs::write(dir.join(file), value.trim())
                        .with_context(|| format!("writing {}/{file}", dir.display()))?;
                }
            }
        }
        Ok(())
    }

    fn start_kubelet(
        &mut self,
        cp: &ControlPlane,
        kubelet_bin: &Path,
        logs: &Path,
    ) -> anyhow::Result<()> {
        let root = self.dir().to_owned();
        let kdir = root.join("kubelet");
        std::fs::create_dir_all(&kdir)?;
        // The Node authorizer and NodeRestriction know a node by this identity.
        let client = cp.pki.issue(
            &format!("{}-client", self.name),
            &format!("system:node:{}", self.name),
            &["system:nodes"],
            &[],
            Usage::Client,
        )?;
        let serving = cp.pki.issue(
            &format!("{}-serving", self.name),
            &self.name,
            &[],
            &[self.node_ip.as_str(), "127.0.0.1", self.name.as_str()],
            Usage::Server,
        )?;
        let kubeconfig = root.join("kubelet.kubeconfig");
        write_kubeconfig(&kubeconfig, &cp.server, &cp.pki.ca_pem(), &client)?;

        let config = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.node_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            // 0 disables the healthz endpoint, whose default port (10248) several nodes would share.
            "healthzPort": 0,
            "tlsCertFile": serving.cert,
            "tlsPrivateKeyFile": serving.key,
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": true},
                "x509": {"clientCAFile": cp.pki.ca_files.cert},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "cgroupsPerQOS": true,
            "failSwapOn": false,
            // No iptables on these machines, and no kube-proxy to need the chains.
            "makeIPTablesUtilChains": false,
            // The test machines' disks are often more than 99% full (CI's was): no hard eviction
            // thresholds at all (an empty map, not the defaults), so the node never reports
            // DiskPressure, never taints itself, and never reclaims the imported images (they
            // cannot be pulled again).
            "evictionHard": {},
            "evictionSoft": {},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "serializeImagePulls": false,
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
        });
        let config_path = kdir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

        let kubelet = ManagedProcess::spawn(
            "kubelet",
            Command::new(kubelet_bin)
                .arg(format!("--config={}", config_path.display()))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!("--root-dir={}", kdir.join("root").display()))
                .arg(format!("--cert-dir={}", kdir.join("pki").display()))
                .arg(format!(
                    "--volume-plugin-dir={}",
                    kdir.join("volume-plugins").display()
                ))
                .arg("--container-runtime=remote")
                .arg(format!(
                    "--container-runtime-endpoint=unix://{}",
                    self.containerd_socket.display()
                ))
                .arg("--runtime-request-timeout=2m")
                .arg(format!("--pod-infra-container-image={PAUSE_IMAGE}"))
                .arg(format!("--hostname-override={}", self.name))
                // The API server reaches the kubelet (logs, exec) at this address.
                .arg(format!("--node-ip={}", self.node_ip))
                .arg("--v=1"),
            logs,
        )?;
        self.kubelet = Some(kubelet);
        Ok(())
    }

    async fn wait_ready(&mut self, cp: &ControlPlane, timeout: Duration) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(cp.client().await?);
        let deadline = Instant::now() + timeout;
        let mut last = String::from("not registered");
        loop {
            self.ensure_running()?;
            if let Some(node) = nodes.get_opt(&self.name).await? {
                let ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
                match ready {
                    Some(c) if c.status == "True" => return Ok(()),
                    Some(c) => {
                        last = format!(
                            "Ready={} {}",
                            c.status,
                            c.message.as_deref().unwrap_or_default()
                        );
                    }
                    None => last = "no Ready condition".into(),
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} not Ready after {timeout:?} ({last}); kubelet log:\n{}\ncontainerd log:\n{}",
                    self.name,
                    self.log_tail("kubelet", 30),
                    self.log_tail("containerd", 10)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Kills and removes every task and container in containerd, and unmounts the network
    /// namespaces the CRI plugin made for them (best effort: used on stop and drop).
    fn remove_containers(&self) {
        let Ok(ids) = self.containers() else {
            return;
        };
        for id in &ids {
            let _ = self
                .ctr()
                .args(["tasks", "kill", "--signal", "SIGKILL", id.as_str()])
                .output();
        }
        for id in &ids {
            // `tasks delete --force` waits for the killed process and removes the task.
            let _ = self
                .ctr()
                .args(["tasks", "delete", "--force", id.as_str()])
                .output();
            let _ = self
                .ctr()
                .args(["containers", "delete", id.as_str()])
                .output();
        }
    }

    fn remove_cgroup_root(&self) {
        let Ok(hierarchies) = cgroup_hierarchies() else {
            return;
        };
        for hierarchy in hierarchies {
            let dir = hierarchy.join(self.cgroup_root.trim_start_matches('/'));
            remove_cgroup_tree(&dir);
        }
    }

    /// Unmounts whatever is still mounted under the node's directory (pods' secret and token
    /// volumes, network namespaces, container root filesystems), deepest first.
    fn unmount_all(&self) {
        let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let prefix = self.dir().to_string_lossy().into_owned();
        let mut points: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .map(unescape_mount_point)
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = StdCommand::new("umount").arg("--lazy").arg(&point).output();
        }
    }
}

impl Drop for KubeletNode {
    fn drop(&mut self) {
        // The kubelet first, so that it does not restart what is removed next.
        drop(self.kubelet.take());
        if self.containerd.is_some() {
            self.remove_containers();
        }
        drop(self.containerd.take());
        self.unmount_all();
        self.remove_cgroup_root();
        // Deleting one end of a veth pair deletes both.
        for link in [&self.bridge, &self.node_link] {
            let _ = StdCommand::new("ip")
                .args(["link", "delete", link.as_str()])
                .output();
        }
        for (path, value) in &self.sysctls {
            let _ = std::fs::write(path, value);
        }
        if std::env::var_os("VK_KEEP_NODE").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("node directory kept: {}", self.dir.path().display());
        }
    }
}

/// Where Debian's containernetworking-plugins puts the plugins (`$VK_CNI_BIN_DIR` overrides).
fn cni_bin_dir() -> anyhow::Result<PathBuf> {
    let candidates = std::env::var_os("VK_CNI_BIN_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]);
    for dir in candidates {
        if dir.join("bridge").is_file() {
            return Ok(dir);
        }
    }
    bail!(
        "CNI plugins not found in /usr/lib/cni: run scripts/setup.sh (containernetworking-plugins)"
    )
}

fn which(tool: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("{tool} not found"))
}

/// Runs `cmd`; its stdout, or an error with its output.
fn run(cmd: &mut StdCommand) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?} failed ({}): {}{}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The mounted cgroup v1 hierarchies (`/sys/fs/cgroup/<controller>`), one path each.
fn cgroup_hierarchies() -> anyhow::Result<Vec<PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let mut seen = BTreeMap::new();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 3 && fields[2] == "cgroup" {
            // Co-mounted controllers (cpu,cpuacct) appear once per mount point.
            seen.entry(fields[3].to_owned())
                .or_insert_with(|| PathBuf::from(fields[1]));
        }
    }
    if seen.is_empty() {
        bail!("no cgroup v1 hierarchy mounted: this node needs cgroup v1 (cgroupfs driver)");
    }
    Ok(seen.into_values().collect())
}

/// Removes a cgroup directory and its children (cgroupfs needs rmdir, children first).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn read_sysctls() -> Vec<(PathBuf, String)> {
    KUBELET_SYSCTLS
        .iter()
        .filter_map(|k| {
            let path = Path::new("/proc/sys").join(k);
            let value = std::fs::read_to_string(&path).ok()?;
            Some((path, value.trim().to_owned()))
        })
        .collect()
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_point(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(char::from(b)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount_point(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_point("/plain"), "/plain");
    }
}
