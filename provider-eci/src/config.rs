//! Flags (each with an environment fallback) and their validation at start. Credentials come
//! from the environment only (never flags, which `ps` shows).

use std::{collections::HashMap, time::Duration};

use clap::Args;

use crate::{credentials::Source, signing::Credentials};

/// ECI settings.
#[derive(Args, Clone, Debug)]
pub struct EciArgs {
    /// Region, e.g. cn-hangzhou (`RegionId` of every call; picks the endpoint).
    #[arg(long, env = "ALIBABA_CLOUD_REGION_ID")]
    pub region: Option<String>,

    /// Use the VPC endpoint `eci-vpc.<region>.aliyuncs.com` instead of `eci.<region>.aliyuncs.com`.
    #[arg(long, env = "ECI_VPC_ENDPOINT", default_value_t = false)]
    pub vpc_endpoint: bool,

    /// Endpoint override with scheme (`https://…` or, for tests, `http://127.0.0.1:PORT`).
    #[arg(long, env = "ECI_ENDPOINT")]
    pub endpoint: Option<String>,

    /// vSwitch(es) of the groups (`VSwitchId`; several, comma-separated, for several zones). Required.
    #[arg(long, env = "ECI_VSWITCH_ID")]
    pub vswitch_id: Option<String>,

    /// Security group of the groups (`SecurityGroupId`). Required.
    #[arg(long, env = "ECI_SECURITY_GROUP_ID")]
    pub security_group_id: Option<String>,

    /// Zone to pin groups to (`ZoneId`); default: the vSwitch's.
    #[arg(long, env = "ECI_ZONE_ID")]
    pub zone_id: Option<String>,

    /// This cluster's identity, tagged on every container group (`vk-cluster`): the provider
    /// lists, adopts and deletes only groups carrying it. Letters, digits, '-', '_', '.'; at most
    /// 63. Default: `eci-<region>-<vSwitch ids>`, so clusters sharing a region and vSwitch must
    /// each set their own.
    #[arg(long, env = "ECI_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// Node capacity: CPU (Kubernetes quantity).
    #[arg(long, env = "ECI_CAPACITY_CPU", default_value = "1000")]
    pub capacity_cpu: String,

    /// Node capacity: memory (Kubernetes quantity).
    #[arg(long, env = "ECI_CAPACITY_MEMORY", default_value = "4Ti")]
    pub capacity_memory: String,

    /// Node capacity: pods.
    #[arg(long, env = "ECI_CAPACITY_PODS", default_value = "1000")]
    pub capacity_pods: String,

    /// Node capacity: ephemeral storage (Kubernetes quantity).
    #[arg(long, env = "ECI_CAPACITY_EPHEMERAL_STORAGE", default_value = "10Ti")]
    pub capacity_ephemeral_storage: String,

    /// Seconds between two status polls (DescribeContainerGroupStatus with SinceSecond).
    #[arg(long, env = "ECI_STATUS_INTERVAL_SECONDS", default_value_t = 5.0)]
    pub status_interval_seconds: f64,

    /// Seconds between two full syncs (DescribeContainerGroups + full status list).
    #[arg(long, env = "ECI_FULL_SYNC_SECONDS", default_value_t = 60.0)]
    pub full_sync_seconds: f64,

    /// STS endpoint for RRSA (`AssumeRoleWithOIDC`), with scheme.
    #[arg(long, env = "ALIBABA_CLOUD_STS_ENDPOINT", default_value = crate::credentials::DEFAULT_STS_ENDPOINT)]
    pub sts_endpoint: String,

    /// Instance metadata service for a RAM role (`ALIBABA_CLOUD_ECS_METADATA`), with scheme.
    #[arg(long, env = "ECI_METADATA_ENDPOINT", default_value = crate::credentials::DEFAULT_METADATA_ENDPOINT)]
    pub metadata_endpoint: String,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Something required is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A bad value.
    #[error("{0}")]
    Bad(String),
}

impl EciArgs {
    /// Checks what can be checked without calling ECI.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        if !set(&self.region) {
            return Err(ConfigError::Missing("--region (ALIBABA_CLOUD_REGION_ID)"));
        }
        if !set(&self.vswitch_id) {
            return Err(ConfigError::Missing("--vswitch-id (ECI_VSWITCH_ID)"));
        }
        if !set(&self.security_group_id) {
            return Err(ConfigError::Missing(
                "--security-group-id (ECI_SECURITY_GROUP_ID)",
            ));
        }
        if let Some(id) = &self.cluster_id
            && !valid_cluster_id(id)
        {
            return Err(ConfigError::Bad(
                "--cluster-id (ECI_CLUSTER_ID) must be 1 to 63 letters, digits, '-', '_' or '.'"
                    .into(),
            ));
        }
        if !(0.1..=3600.0).contains(&self.status_interval_seconds) {
            return Err(ConfigError::Bad(
                "--status-interval-seconds must be between 0.1 and 3600".into(),
            ));
        }
        if self.full_sync_seconds < self.status_interval_seconds {
            return Err(ConfigError::Bad(
                "--full-sync-seconds must be at least --status-interval-seconds".into(),
            ));
        }
        Ok(())
    }

    /// The cluster identity: the flag, else `eci-<region>-<vSwitch ids>` (lower-cased, other
    /// characters as '-', cut to 63), stable across restarts of one deployment.
    pub fn cluster(&self) -> String {
        if let Some(id) = self.cluster_id.as_deref().filter(|s| !s.is_empty()) {
            return id.to_owned();
        }
        let region = self.region.as_deref().unwrap_or_default().trim();
        let vswitch = self.vswitch_id.as_deref().unwrap_or_default().trim();
        format!("eci-{region}-{vswitch}")
            .to_ascii_lowercase()
            .chars()
            .map(|c| if valid_cluster_char(c) { c } else { '-' })
            .take(63)
            .collect()
    }

    /// The status poll interval.
    pub fn status_interval(&self) -> Duration {
        Duration::from_secs_f64(self.status_interval_seconds)
    }

    /// The full sync interval.
    pub fn full_sync(&self) -> Duration {
        Duration::from_secs_f64(self.full_sync_seconds)
    }

    /// The node's capacity as these flags declare it.
    pub fn capacity(&self) -> HashMap<String, String> {
        provider_common::service::capacity(
            &self.capacity_cpu,
            &self.capacity_memory,
            &self.capacity_pods,
            Some(&self.capacity_ephemeral_storage),
        )
    }
}

fn valid_cluster_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn valid_cluster_id(id: &str) -> bool {
    (1..=63).contains(&id.len()) && id.chars().all(valid_cluster_char)
}

/// Where the credentials come from, by the environment variables Alibaba Cloud's credential
/// tools use, first match wins:
/// 1. `ALIBABA_CLOUD_ACCESS_KEY_ID` + `ALIBABA_CLOUD_ACCESS_KEY_SECRET` (+
///    `ALIBABA_CLOUD_SECURITY_TOKEN` for an STS key);
/// 2. RRSA: `ALIBABA_CLOUD_ROLE_ARN` + `ALIBABA_CLOUD_OIDC_PROVIDER_ARN` +
///    `ALIBABA_CLOUD_OIDC_TOKEN_FILE` (+ `ALIBABA_CLOUD_ROLE_SESSION_NAME`), as ACK injects them;
/// 3. `ALIBABA_CLOUD_ECS_METADATA`: the instance's RAM role name.
pub fn credentials_from_env(args: &EciArgs) -> Result<Source, ConfigError> {
    credentials_from(args, |k| std::env::var(k).ok())
}

fn credentials_from(
    args: &EciArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Source, ConfigError> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(id) = get("ALIBABA_CLOUD_ACCESS_KEY_ID") {
        return Ok(Source::Static(Credentials {
            access_key_id: id,
            access_key_secret: get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
                .ok_or(ConfigError::Missing("ALIBABA_CLOUD_ACCESS_KEY_SECRET"))?,
            security_token: get("ALIBABA_CLOUD_SECURITY_TOKEN"),
        }));
    }
    if let Some(role_arn) = get("ALIBABA_CLOUD_ROLE_ARN") {
        return Ok(Source::Oidc {
            sts: args.sts_endpoint.clone(),
            role_arn,
            provider_arn: get("ALIBABA_CLOUD_OIDC_PROVIDER_ARN")
                .ok_or(ConfigError::Missing("ALIBABA_CLOUD_OIDC_PROVIDER_ARN"))?,
            token_file: get("ALIBABA_CLOUD_OIDC_TOKEN_FILE")
                .ok_or(ConfigError::Missing("ALIBABA_CLOUD_OIDC_TOKEN_FILE"))?
                .into(),
            session: get("ALIBABA_CLOUD_ROLE_SESSION_NAME")
                .unwrap_or_else(|| "provider-eci".into()),
        });
    }
    if let Some(role) = get("ALIBABA_CLOUD_ECS_METADATA") {
        return Ok(Source::Metadata {
            endpoint: args.metadata_endpoint.clone(),
            role,
        });
    }
    Err(ConfigError::Missing(
        "credentials: ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN and ALIBABA_CLOUD_OIDC_TOKEN_FILE (RRSA), or ALIBABA_CLOUD_ECS_METADATA (RAM role)",
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        eci: EciArgs,
    }

    fn args_with(vswitch: &str, extra: &[&str]) -> EciArgs {
        let base = [
            "x",
            "--region",
            "cn-hangzhou",
            "--vswitch-id",
            vswitch,
            "--security-group-id",
            "sg-1",
        ];
        Cli::parse_from(base.iter().chain(extra)).eci
    }

    fn args(extra: &[&str]) -> EciArgs {
        args_with("vsw-a,vsw-B", extra)
    }

    #[test]
    fn the_cluster_id_is_the_flag_or_derived_from_region_and_vswitch() {
        assert_eq!(args(&[]).cluster(), "eci-cn-hangzhou-vsw-a-vsw-b");
        let own = args(&["--cluster-id", "team-a"]);
        assert!(own.validate().is_ok());
        assert_eq!(own.cluster(), "team-a");
        assert!(args(&["--cluster-id", "a/b"]).validate().is_err());
        let long = "x".repeat(64);
        assert!(args(&["--cluster-id", &long]).validate().is_err());
        let many = "vsw-0123456789abcdefghij,".repeat(4);
        assert_eq!(args_with(&many, &[]).cluster().len(), 63);
    }

    #[test]
    fn credentials_come_from_access_keys_rrsa_or_a_ram_role() {
        let a = args(&[]);
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let s = credentials_from(
            &a,
            env(&[
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI"),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s"),
                ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/r"),
            ]),
        );
        assert!(matches!(s, Ok(Source::Static(c)) if c.access_key_id == "LTAI"));
        let s = credentials_from(
            &a,
            env(&[
                ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/r"),
                (
                    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                    "acs:ram::1:oidc-provider/p",
                ),
                (
                    "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
                    "/var/run/secrets/tokens/oidc-token",
                ),
            ]),
        );
        assert!(
            matches!(&s, Ok(Source::Oidc { sts, session, .. }) if sts == "https://sts.aliyuncs.com" && session == "provider-eci"),
            "{s:?}"
        );
        let s = credentials_from(&a, env(&[("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/r")]));
        assert_eq!(
            s.err(),
            Some(ConfigError::Missing("ALIBABA_CLOUD_OIDC_PROVIDER_ARN"))
        );
        let s = credentials_from(&a, env(&[("ALIBABA_CLOUD_ECS_METADATA", "eci-role")]));
        assert!(
            matches!(&s, Ok(Source::Metadata { endpoint, role }) if endpoint == "http://100.100.100.200" && role == "eci-role"),
            "{s:?}"
        );
        assert!(credentials_from(&a, env(&[])).is_err());
    }
}
