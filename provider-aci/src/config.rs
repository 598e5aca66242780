//! Flags (each with an environment fallback), the credential they select, and their validation.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::auth::{Credential, ImdsRetry, Secret};

/// How to authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthMethod {
    /// Client secret if AZURE_CLIENT_SECRET is set, else workload identity if
    /// AZURE_FEDERATED_TOKEN_FILE is set, else managed identity.
    Auto,
    /// Service principal with a client secret.
    ClientSecret,
    /// Workload identity (federated token file).
    WorkloadIdentity,
    /// Managed identity through IMDS.
    ManagedIdentity,
}

/// ACI settings.
#[derive(Args, Clone)]
pub struct AciArgs {
    /// Azure subscription of the container groups. Required.
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID")]
    pub subscription_id: Option<String>,

    /// Resource group of the container groups. Required.
    #[arg(long, env = "ACI_RESOURCE_GROUP")]
    pub resource_group: Option<String>,

    /// Azure region of the container groups, e.g. westeurope. Required.
    #[arg(long, env = "ACI_REGION")]
    pub location: Option<String>,

    /// ARM endpoint (sovereign clouds, tests).
    #[arg(
        long,
        env = "AZURE_RESOURCE_MANAGER_ENDPOINT",
        default_value = "https://management.azure.com"
    )]
    pub arm_endpoint: String,

    /// Token audience for ARM.
    #[arg(
        long,
        env = "AZURE_RESOURCE_MANAGER_AUDIENCE",
        default_value = "https://management.azure.com/"
    )]
    pub arm_audience: String,

    /// Azure AD authority host (sovereign clouds, tests).
    #[arg(
        long,
        env = "AZURE_AUTHORITY_HOST",
        default_value = "https://login.microsoftonline.com"
    )]
    pub authority_host: String,

    /// Instance metadata service base URL, for managed identity.
    #[arg(
        long,
        env = "AZURE_IMDS_ENDPOINT",
        default_value = "http://169.254.169.254"
    )]
    pub imds_endpoint: String,

    /// How to authenticate.
    #[arg(long, env = "ACI_AUTH_METHOD", value_enum, default_value_t = AuthMethod::Auto)]
    pub auth_method: AuthMethod,

    /// Tenant of the service principal or workload identity.
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub tenant_id: Option<String>,

    /// Client id of the service principal, workload identity or user-assigned managed identity.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub client_id: Option<String>,

    /// Federated token file (workload identity); re-read on every token request.
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub federated_token_file: Option<PathBuf>,

    /// This cluster's identity, tagged on every container group (vk-cluster): the provider
    /// adopts and deletes only groups carrying it. Letters, digits, '-', '_', '.'; at most 63.
    /// Default: `aci-<resource group>`, so providers of different clusters sharing one resource
    /// group must each set their own.
    #[arg(long, env = "ACI_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// Names of the virtual nodes this provider serves, comma-separated: pods of other nodes are
    /// refused, and only groups tagged with these nodes are adopted or deleted. Default: any
    /// node of this cluster.
    #[arg(long = "node-name", env = "ACI_NODE_NAME", value_delimiter = ',')]
    pub node_names: Vec<String>,

    /// Subnet resource ids the groups join (VNet), comma-separated. With subnets every pod gets
    /// a private IP; without, pods get no IP unless one asks for a public IP (annotation
    /// virtual-kubelet.io/aci-public-ip: "true").
    #[arg(long, env = "ACI_SUBNET_IDS", value_delimiter = ',')]
    pub subnet_ids: Vec<String>,

    /// The cluster DNS service's IPs (kube-dns), comma-separated: pods with dnsPolicy
    /// ClusterFirst in a VNet resolve through them (dnsConfig nameServers, search domains of
    /// the pod's namespace under --cluster-domain, ndots:5). Without it, ACI's resolver.
    #[arg(long, env = "ACI_CLUSTER_DNS", value_delimiter = ',')]
    pub cluster_dns: Vec<String>,

    /// The cluster's DNS domain, for ClusterFirst search domains.
    #[arg(long, env = "ACI_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Deprecated: only "Private" (with --subnet-ids) is accepted, which is what subnets imply.
    /// A node-wide Public would expose every pod with ports; pods ask for a public IP with the
    /// annotation virtual-kubelet.io/aci-public-ip: "true" instead.
    #[arg(long, env = "ACI_IP_ADDRESS_TYPE", hide = true)]
    pub ip_address_type: Option<String>,

    /// GPU SKUs on offer in the region, comma-separated; the first is the default.
    #[arg(
        long,
        env = "ACI_GPU_SKUS",
        value_delimiter = ',',
        default_value = "V100,P100,K80"
    )]
    pub gpu_skus: Vec<String>,

    /// Operating system of the node's pods: linux or windows.
    #[arg(long, env = "ACI_OS_TYPE", default_value = "linux")]
    pub os_type: String,

    /// CPU request of a container that asks for none, in millicores.
    #[arg(long, env = "ACI_DEFAULT_CPU_MILLIS", default_value_t = 1000)]
    pub default_cpu_millis: u64,

    /// Memory request of a container that asks for none, in MB (10^6 bytes).
    #[arg(long, env = "ACI_DEFAULT_MEMORY_MB", default_value_t = 1500)]
    pub default_memory_mb: u64,

    /// Node capacity: CPU.
    #[arg(long, env = "ACI_CAPACITY_CPU", default_value = "10000")]
    pub capacity_cpu: String,

    /// Node capacity: memory.
    #[arg(long, env = "ACI_CAPACITY_MEMORY", default_value = "4Ti")]
    pub capacity_memory: String,

    /// Node capacity: pods.
    #[arg(long, env = "ACI_CAPACITY_PODS", default_value = "5000")]
    pub capacity_pods: String,

    /// Node capacity: GPUs.
    #[arg(long, env = "ACI_CAPACITY_GPU", default_value = "100")]
    pub capacity_gpu: String,

    /// Seconds between two status polls (one List By Resource Group each).
    #[arg(long, env = "ACI_STATUS_INTERVAL_SECONDS", default_value_t = 5.0)]
    pub status_interval_seconds: f64,

    /// Seconds after which a group whose list entry lacks an instance view is fetched again even
    /// if the entry did not change (container restarts and exits show only there).
    #[arg(
        long,
        env = "ACI_INSTANCE_VIEW_REFRESH_SECONDS",
        default_value_t = 30.0
    )]
    pub instance_view_refresh_seconds: f64,

    /// First backoff of IMDS 404 retries, in milliseconds (doubled each retry; 3 retries).
    /// For tests.
    #[arg(
        long,
        env = "ACI_IMDS_RETRY_BASE_MS",
        default_value_t = 1000,
        hide = true
    )]
    pub imds_retry_base_ms: u64,

    /// How long IMDS 410s are retried, in seconds (documented: IMDS is back within 70 s).
    /// For tests.
    #[arg(
        long,
        env = "ACI_IMDS_GONE_RETRY_SECONDS",
        default_value_t = 70.0,
        hide = true
    )]
    pub imds_gone_retry_seconds: f64,

    /// At most this many GETs per poll refresh groups whose list entry did not change (stalest
    /// first), so the status loop's cost stays bounded however many groups there are; new groups
    /// and groups whose entry changed are always fetched.
    #[arg(
        long,
        env = "ACI_INSTANCE_VIEW_REFRESHES_PER_POLL",
        default_value_t = 10
    )]
    pub instance_view_refreshes_per_poll: usize,
}

impl std::fmt::Debug for AciArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AciArgs")
            .field("subscription_id", &self.subscription_id)
            .field("resource_group", &self.resource_group)
            .field("location", &self.location)
            .field("arm_endpoint", &self.arm_endpoint)
            .field("auth_method", &self.auth_method)
            .finish_non_exhaustive()
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required flag is missing.
    #[error("--{flag} ({env}) is required")]
    Missing {
        /// The flag.
        flag: &'static str,
        /// Its environment variable.
        env: &'static str,
    },
    /// A bad value.
    #[error("{0}")]
    Bad(String),
}

/// Validated required settings.
#[derive(Clone, Debug)]
pub struct Required {
    /// Subscription.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Region.
    pub location: String,
}

fn need(v: &Option<String>, flag: &'static str, env: &'static str) -> Result<String, ConfigError> {
    v.clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or(ConfigError::Missing { flag, env })
}

impl AciArgs {
    /// Checks what can be checked without calling Azure.
    pub fn validate(&self) -> Result<Required, ConfigError> {
        let out = Required {
            subscription: need(
                &self.subscription_id,
                "subscription-id",
                "AZURE_SUBSCRIPTION_ID",
            )?,
            resource_group: need(&self.resource_group, "resource-group", "ACI_RESOURCE_GROUP")?,
            location: need(&self.location, "location", "ACI_REGION")?,
        };
        if !matches!(
            self.os_type.to_ascii_lowercase().as_str(),
            "linux" | "windows"
        ) {
            return Err(ConfigError::Bad(
                "--os-type must be linux or windows".into(),
            ));
        }
        if let Some(id) = &self.cluster_id
            && !valid_cluster_id(id)
        {
            return Err(ConfigError::Bad(
                "--cluster-id (ACI_CLUSTER_ID) must be 1 to 63 letters, digits, '-', '_' or '.'"
                    .into(),
            ));
        }
        if let Some(bad) = self
            .cluster_dns
            .iter()
            .map(|s| s.trim())
            .find(|s| !s.is_empty() && s.parse::<std::net::IpAddr>().is_err())
        {
            return Err(ConfigError::Bad(format!(
                "--cluster-dns (ACI_CLUSTER_DNS) takes IP addresses; {bad} is not one"
            )));
        }
        if self.cluster_domain.trim().is_empty() {
            return Err(ConfigError::Bad(
                "--cluster-domain (ACI_CLUSTER_DOMAIN) must not be empty".into(),
            ));
        }
        if !(0.0..=600.0).contains(&self.imds_gone_retry_seconds)
            || !(1..=60_000).contains(&self.imds_retry_base_ms)
        {
            return Err(ConfigError::Bad(
                "--imds-gone-retry-seconds must be 0 to 600 and --imds-retry-base-ms 1 to 60000"
                    .into(),
            ));
        }
        match self.ip_address_type.as_deref().map(str::trim) {
            None | Some("") => {}
            Some(t) if t.eq_ignore_ascii_case("Private") => {
                if !self.subnet_ids.iter().any(|s| !s.trim().is_empty()) {
                    return Err(ConfigError::Bad(
                        "--ip-address-type Private needs --subnet-ids: ACI gives private IPs only in a virtual network".into(),
                    ));
                }
            }
            Some(t) if t.eq_ignore_ascii_case("Public") => {
                return Err(ConfigError::Bad(
                    "--ip-address-type Public is no longer supported: it exposed every pod with ports on the internet; a pod asks for a public IP with the annotation virtual-kubelet.io/aci-public-ip: \"true\"".into(),
                ));
            }
            Some(_) => {
                return Err(ConfigError::Bad(
                    "--ip-address-type is deprecated and only takes Private (with --subnet-ids)"
                        .into(),
                ));
            }
        }
        for v in [
            self.status_interval_seconds,
            self.instance_view_refresh_seconds,
        ] {
            if !(0.1..=3600.0).contains(&v) {
                return Err(ConfigError::Bad(
                    "intervals must be between 0.1 and 3600 seconds".into(),
                ));
            }
        }
        Ok(out)
    }

    /// The credential the flags and environment select. The client secret is read from the
    /// environment only (a flag would show in `ps`).
    pub fn credential(&self) -> Result<Credential, ConfigError> {
        let secret = std::env::var("AZURE_CLIENT_SECRET")
            .ok()
            .filter(|s| !s.is_empty());
        let method = match self.auth_method {
            AuthMethod::Auto if secret.is_some() => AuthMethod::ClientSecret,
            AuthMethod::Auto if self.federated_token_file.is_some() => AuthMethod::WorkloadIdentity,
            AuthMethod::Auto => AuthMethod::ManagedIdentity,
            m => m,
        };
        Ok(match method {
            AuthMethod::ClientSecret => Credential::ClientSecret {
                tenant: need(&self.tenant_id, "tenant-id", "AZURE_TENANT_ID")?,
                client_id: need(&self.client_id, "client-id", "AZURE_CLIENT_ID")?,
                secret: Secret::new(secret.ok_or(ConfigError::Missing {
                    flag: "(environment only)",
                    env: "AZURE_CLIENT_SECRET",
                })?),
            },
            AuthMethod::WorkloadIdentity => Credential::WorkloadIdentity {
                tenant: need(&self.tenant_id, "tenant-id", "AZURE_TENANT_ID")?,
                client_id: need(&self.client_id, "client-id", "AZURE_CLIENT_ID")?,
                token_file: self
                    .federated_token_file
                    .clone()
                    .ok_or(ConfigError::Missing {
                        flag: "federated-token-file",
                        env: "AZURE_FEDERATED_TOKEN_FILE",
                    })?,
            },
            AuthMethod::ManagedIdentity | AuthMethod::Auto => Credential::ManagedIdentity {
                client_id: self.client_id.clone().filter(|s| !s.is_empty()),
            },
        })
    }

    /// The cluster identity: the flag, else `aci-<resource group>` (lower-cased, cut to 63).
    pub fn cluster(&self, resource_group: &str) -> String {
        if let Some(id) = self.cluster_id.as_deref().filter(|s| !s.is_empty()) {
            return id.to_owned();
        }
        let derived: String = format!("aci-{}", resource_group.to_ascii_lowercase())
            .chars()
            .map(|c| if valid_cluster_char(c) { c } else { '-' })
            .take(63)
            .collect();
        derived
    }

    /// The node names served (empty: any).
    pub fn nodes(&self) -> Vec<String> {
        self.node_names
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// The IMDS retry schedule.
    pub fn imds_retry(&self) -> ImdsRetry {
        ImdsRetry {
            base: Duration::from_millis(self.imds_retry_base_ms),
            gone_for: Duration::from_secs_f64(self.imds_gone_retry_seconds),
            ..ImdsRetry::default()
        }
    }

    /// The status poll interval.
    pub fn status_interval(&self) -> Duration {
        Duration::from_secs_f64(self.status_interval_seconds)
    }

    /// The instance-view refresh interval.
    pub fn instance_view_refresh(&self) -> Duration {
        Duration::from_secs_f64(self.instance_view_refresh_seconds)
    }

    /// The node's capacity as these flags declare it: GPUs where GPU SKUs are configured.
    pub fn capacity(&self) -> HashMap<String, String> {
        let mut capacity = provider_common::service::capacity(
            &self.capacity_cpu,
            &self.capacity_memory,
            &self.capacity_pods,
            None,
        );
        if !self.gpu_skus.is_empty() {
            capacity.insert("nvidia.com/gpu".to_owned(), self.capacity_gpu.clone());
        }
        capacity
    }
}

fn valid_cluster_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn valid_cluster_id(id: &str) -> bool {
    (1..=63).contains(&id.len()) && id.chars().all(valid_cluster_char)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        aci: AciArgs,
    }

    fn args(extra: &[&str]) -> AciArgs {
        let base = [
            "provider-aci",
            "--subscription-id",
            "s",
            "--resource-group",
            "rg",
            "--location",
            "westeurope",
        ];
        Cli::parse_from(base.iter().chain(extra)).aci
    }

    #[test]
    fn a_node_wide_public_ip_type_is_refused_and_private_needs_subnets() {
        assert!(args(&[]).validate().is_ok());
        let e = args(&["--ip-address-type", "Public"])
            .validate()
            .expect_err("public refused");
        assert!(
            e.to_string().contains("virtual-kubelet.io/aci-public-ip"),
            "{e}"
        );
        assert!(args(&["--ip-address-type", "Private"]).validate().is_err());
        assert!(
            args(&["--ip-address-type", "Private", "--subnet-ids", "/s/sub"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn the_cluster_id_is_the_flag_or_derived_from_the_resource_group() {
        assert_eq!(args(&[]).cluster("My_RG(prod)"), "aci-my_rg-prod-");
        let own = args(&["--cluster-id", "team-a"]);
        assert!(own.validate().is_ok());
        assert_eq!(own.cluster("rg"), "team-a");
        assert!(args(&["--cluster-id", "a/b"]).validate().is_err());
        let long = "x".repeat(64);
        assert!(args(&["--cluster-id", &long]).validate().is_err());
        assert_eq!(args(&["--node-name", "a, b,"]).nodes(), vec!["a", "b"]);
    }
}
