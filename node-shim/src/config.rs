//! The shim's flags, each with an environment fallback (names compatible with the Go Virtual
//! Kubelet where it has one).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the kubelet API's serving certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServingCertMode {
    /// `--tls-cert-file` and `--tls-private-key-file`.
    Files,
    /// A `kubernetes.io/kubelet-serving` CertificateSigningRequest, renewed before expiry; someone
    /// (an approver controller or an administrator) must approve it.
    Csr,
    /// A self-signed certificate; only for trials, since nothing can verify it.
    SelfSigned,
}

/// A Kubernetes virtual node backed by a PodProvider gRPC service.
#[derive(Parser, Clone, Debug)]
#[command(name = "node-shim", version, about)]
pub struct Config {
    /// Name of the virtual Node.
    #[arg(long, env = "NODE_NAME", default_value = "virtual-kubelet")]
    pub node_name: String,

    /// The provider's gRPC endpoint: unix:/PATH or http://127.0.0.1:PORT (the provider is a
    /// sidecar), or https://HOST:PORT (a provider deployed on its own; see `--provider-ca-file`).
    #[arg(
        long,
        env = "PROVIDER_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub provider_endpoint: String,

    /// With an https:// provider endpoint: the CA bundle that signed the provider's certificate.
    #[arg(long, env = "VK_PROVIDER_CA_FILE")]
    pub provider_ca_file: Option<PathBuf>,

    /// With an https:// provider endpoint: the client certificate presented to the provider
    /// (mutual TLS); re-read when the file changes.
    #[arg(long, env = "VK_PROVIDER_CERT_FILE", requires = "provider_key_file")]
    pub provider_cert_file: Option<PathBuf>,

    /// Private key of `--provider-cert-file`; re-read when the file changes.
    #[arg(long, env = "VK_PROVIDER_KEY_FILE", requires = "provider_cert_file")]
    pub provider_key_file: Option<PathBuf>,

    /// Kubeconfig file; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Run as the node (`system:node:<node-name>`), as the kubelet does: the `--kubeconfig` or
    /// in-cluster credentials only request a client certificate from the
    /// `kubernetes.io/kube-apiserver-client-kubelet` signer (TLS bootstrap); everything else is
    /// done as the node, so the Node authorizer and NodeRestriction confine the shim to its own
    /// Node, Lease and pods. The certificate is kept in `--cert-dir` and renewed before expiry.
    #[arg(long, env = "VK_TLS_BOOTSTRAP")]
    pub tls_bootstrap: bool,

    /// Where `--tls-bootstrap` keeps the node's client certificate and key across restarts.
    #[arg(long, env = "VK_CERT_DIR", default_value = "/var/lib/node-shim/pki")]
    pub cert_dir: PathBuf,

    /// Port of the kubelet HTTPS API, published as the Node's kubelet endpoint.
    #[arg(long, env = "KUBELET_PORT", default_value_t = 10250)]
    pub kubelet_port: u16,

    /// Address the kubelet API listens on.
    #[arg(long, env = "VK_KUBELET_ADDRESS", default_value = "0.0.0.0")]
    pub kubelet_address: IpAddr,

    /// PEM certificate (chain) the kubelet API serves.
    #[arg(long, env = "APISERVER_CERT_LOCATION")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of `--tls-cert-file`.
    #[arg(long, env = "APISERVER_KEY_LOCATION")]
    pub tls_private_key_file: Option<PathBuf>,

    /// Where the serving certificate comes from; default: `files` when `--tls-cert-file` is set,
    /// otherwise `csr`.
    #[arg(long, env = "VK_SERVING_CERT", value_enum)]
    pub serving_cert: Option<ServingCertMode>,

    /// CA bundle that signs client certificates the kubelet API accepts (the API server's
    /// kubelet client certificate).
    #[arg(long, env = "APISERVER_CA_CERT_LOCATION")]
    pub client_ca_file: Option<PathBuf>,

    /// Let requests without credentials through to authorization as `system:anonymous`.
    #[arg(long, env = "VK_ANONYMOUS_AUTH")]
    pub anonymous_auth: bool,

    /// The Node's InternalIP: the shim's pod IP, where the API server reaches the kubelet API.
    #[arg(long, env = "VKUBELET_POD_IP", default_value = "127.0.0.1")]
    pub pod_ip: IpAddr,

    /// Key of the Node's provider taint.
    #[arg(
        long,
        env = "VKUBELET_TAINT_KEY",
        default_value = "virtual-kubelet.io/provider"
    )]
    pub taint_key: String,

    /// Value of the provider taint; the provider's name when unset.
    #[arg(long, env = "VKUBELET_TAINT_VALUE")]
    pub taint_value: Option<String>,

    /// Effect of the provider taint: NoSchedule, PreferNoSchedule or NoExecute.
    #[arg(long, env = "VKUBELET_TAINT_EFFECT", default_value = "NoSchedule")]
    pub taint_effect: String,

    /// Do not add the provider taint at all.
    #[arg(long, env = "VKUBELET_DISABLE_TAINT")]
    pub disable_taint: bool,

    /// Extra taints, KEY[=VALUE]:EFFECT, e.g. `azure.com/aci:NoSchedule` (repeatable; comma-separated in env).
    #[arg(long = "extra-taint", env = "VK_EXTRA_TAINTS", value_delimiter = ',')]
    pub extra_taints: Vec<String>,

    /// Extra Node labels, KEY=VALUE (repeatable; comma-separated in env).
    #[arg(long = "node-label", env = "VK_NODE_LABELS", value_delimiter = ',')]
    pub node_labels: Vec<String>,

    /// Node capacity overrides, RESOURCE=QUANTITY (e.g. `cpu=20`, `memory=100Gi`, `pods=500`;
    /// repeatable; comma-separated in env). They replace what the provider reports, in both
    /// capacity and allocatable, so a cluster admin can cap what the scheduler places here.
    #[arg(long = "capacity", env = "VK_NODE_CAPACITY", value_delimiter = ',', value_parser = parse_capacity)]
    pub capacity: Vec<(String, String)>,

    /// How often to renew the node Lease.
    #[arg(long, env = "VK_LEASE_RENEW_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub lease_renew_interval: Duration,

    /// Lease duration published on the Lease, in seconds.
    #[arg(long, env = "VK_LEASE_DURATION_SECONDS", default_value_t = 40,
          value_parser = clap::value_parser!(i32).range(1..=3600))]
    pub lease_duration_seconds: i32,

    /// How often to ping the provider (Ready follows the answer).
    #[arg(long, env = "VK_PING_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub ping_interval: Duration,

    /// Node status is written at least this often, and at once when it changes.
    #[arg(long, env = "VK_NODE_STATUS_PERIOD", value_parser = parse_duration, default_value = "60s")]
    pub node_status_period: Duration,

    /// Pods reconciled at the same time.
    #[arg(long, env = "VK_WORKERS", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,

    /// Events written per second at most (the kubelet's `eventRecordQPS`, default 50); 0: no
    /// limit. Events beyond it wait in a queue of 1,024; when that is full, Normal events are
    /// dropped (counted in `vk_events_dropped`) and warnings wait.
    #[arg(long, env = "VK_EVENT_QPS", default_value_t = 50)]
    pub event_qps: u32,

    /// How often provider pods are compared with the API to delete orphans.
    #[arg(long, env = "VK_RESYNC_PERIOD", value_parser = parse_duration, default_value = "60s")]
    pub resync_period: Duration,

    /// How often the Secrets that running pods mount are re-read for changes (ConfigMaps are
    /// watched; Secrets are polled with `get`, so the shim needs no right to list Secrets).
    #[arg(long, env = "VK_SECRET_SYNC_PERIOD", value_parser = parse_duration, default_value = "60s")]
    pub secret_sync_period: Duration,

    /// Deadline of each provider call.
    #[arg(long, env = "VK_PROVIDER_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub provider_timeout: Duration,

    /// Where Prometheus metrics are served (`GET /metrics`); `off` disables them.
    #[arg(long, env = "VK_METRICS_ADDRESS", default_value = "0.0.0.0:10255")]
    pub metrics_address: MetricsAddress,

    /// Instead of running the node, take it out of the cluster and exit (the chart's pre-delete
    /// hook): cordon the Node, delete the pods bound to it and wait until the running shim has
    /// removed their cloud workloads, scale the shim's Deployment (`--deregister-deployment`) to
    /// zero and wait for its pod to go, then delete the Node (its Lease follows by owner reference).
    #[arg(long, env = "VK_DEREGISTER")]
    pub deregister: bool,

    /// With `--deregister`: the shim's Deployment, `NAMESPACE/NAME`.
    #[arg(long, env = "VK_DEREGISTER_DEPLOYMENT")]
    pub deregister_deployment: Option<String>,

    /// With `--deregister`: how long to wait for the pods and the shim to go.
    #[arg(long, env = "VK_DEREGISTER_TIMEOUT", value_parser = parse_duration, default_value = "5m")]
    pub deregister_timeout: Duration,

    /// Log format (JSON lines carry the current span's fields, including the trace id).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// `RESOURCE=QUANTITY` for `--capacity`.
fn parse_capacity(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        }
        _ => Err(format!(
            "expected RESOURCE=QUANTITY (e.g. cpu=20), got {s:?}"
        )),
    }
}

impl Config {
    /// The serving certificate source in effect.
    pub fn serving_cert_mode(&self) -> ServingCertMode {
        match self.serving_cert {
            Some(mode) => mode,
            None if self.tls_cert_file.is_some() => ServingCertMode::Files,
            None => ServingCertMode::Csr,
        }
    }

    /// The TLS files for an https:// provider endpoint.
    pub fn provider_tls(&self) -> crate::provider_client::ProviderTls {
        crate::provider_client::ProviderTls {
            ca_file: self.provider_ca_file.clone(),
            cert_file: self.provider_cert_file.clone(),
            key_file: self.provider_key_file.clone(),
        }
    }

    /// `--tls-cert-file` and `--tls-private-key-file`, when both are set.
    pub fn tls_files(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        Some((
            self.tls_cert_file.as_deref()?,
            self.tls_private_key_file.as_deref()?,
        ))
    }
}

/// Where metrics are served: `HOST:PORT`, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddress(pub Option<std::net::SocketAddr>);

impl std::str::FromStr for MetricsAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.parse().map(|a| Self(Some(a))).map_err(|_| {
            format!("invalid address {s:?}: expected HOST:PORT (e.g. 0.0.0.0:10255) or off")
        })
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 500ms, 2m"))?;
    // Every duration here is a period or a deadline: zero would spin or panic, and more than a
    // day is a typo.
    const MAX: Duration = Duration::from_secs(24 * 3600);
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be ms, s, m or h"
            ));
        }
    };
    if d.is_zero() || d > MAX {
        return Err(format!(
            "invalid duration {s:?}: must be more than 0 and at most 24h"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_metrics_can_be_off() {
        let cfg = Config::try_parse_from(["node-shim"]).expect("defaults");
        assert_eq!(
            cfg.metrics_address.0,
            Some("0.0.0.0:10255".parse().expect("addr"))
        );
        let cfg = Config::try_parse_from(["node-shim", "--metrics-address=off"]).expect("off");
        assert_eq!(cfg.metrics_address.0, None);
        assert!(Config::try_parse_from(["node-shim", "--metrics-address=nowhere"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        assert!(
            parse_duration("0s").is_err(),
            "zero periods would spin or panic"
        );
        assert!(
            parse_duration("18446744073709551615m").is_err(),
            "no overflow"
        );
        assert!(Config::try_parse_from(["node-shim", "--workers=0"]).is_err());
        assert!(Config::try_parse_from(["node-shim", "--lease-duration-seconds=0"]).is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn go_vk_environment_names_are_honoured() {
        // clap reads env at parse time; these names are the Go Virtual Kubelet's.
        let cmd = <Config as clap::CommandFactory>::command();
        let envs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        for name in [
            "KUBELET_PORT",
            "VKUBELET_POD_IP",
            "VKUBELET_TAINT_KEY",
            "VKUBELET_TAINT_VALUE",
            "VKUBELET_TAINT_EFFECT",
            "APISERVER_CERT_LOCATION",
            "APISERVER_KEY_LOCATION",
            "APISERVER_CA_CERT_LOCATION",
        ] {
            assert!(
                envs.iter().any(|e| e == name),
                "{name} missing from {envs:?}"
            );
        }
    }
}
