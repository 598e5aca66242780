//! Flags (each with an environment fallback) and their validation at start.

use std::{collections::HashMap, time::Duration};

use clap::{Args, ValueEnum};

/// CPU architecture of the Fargate tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// x86-64 (`X86_64`).
    Amd64,
    /// Graviton (`ARM64`).
    Arm64,
}

impl Arch {
    /// The Kubernetes name.
    pub fn k8s(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }
}

/// Fargate settings.
#[derive(Args, Clone, Debug)]
pub struct FargateArgs {
    /// ECS cluster the tasks run in (name or ARN).
    #[arg(long, env = "FARGATE_CLUSTER", default_value = "default")]
    pub cluster: String,

    /// AWS region; default: the AWS SDK's chain (AWS_REGION, profile).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// Override of the AWS endpoint for ECS and CloudWatch Logs (tests, moto, VPC endpoints).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,

    /// Subnets for the tasks' network interfaces (awsvpc), comma-separated. Required.
    #[arg(long, env = "FARGATE_SUBNETS", value_delimiter = ',')]
    pub subnets: Vec<String>,

    /// Security groups for the tasks' network interfaces, comma-separated. Required.
    #[arg(long, env = "FARGATE_SECURITY_GROUPS", value_delimiter = ',')]
    pub security_groups: Vec<String>,

    /// Give each task a public IP (needed in public subnets without a NAT gateway to pull images).
    #[arg(long, env = "FARGATE_ASSIGN_PUBLIC_IP", default_value_t = false)]
    pub assign_public_ip: bool,

    /// Task execution role ARN: pulls from ECR, writes awslogs and reads the pods' secrets from
    /// Secrets Manager (values from Kubernetes Secrets, imagePullSecrets). Required with
    /// --log-group and for pods with such values.
    #[arg(long, env = "FARGATE_EXECUTION_ROLE_ARN")]
    pub execution_role_arn: Option<String>,

    /// Task role ARN: the AWS identity of the pods' containers.
    #[arg(long, env = "FARGATE_TASK_ROLE_ARN")]
    pub task_role_arn: Option<String>,

    /// CloudWatch Logs group for container logs (awslogs driver); unset = no logs.
    #[arg(long, env = "FARGATE_LOG_GROUP")]
    pub log_group: Option<String>,

    /// awslogs stream prefix: streams are named `<prefix>/<container>/<task-id>`.
    #[arg(long, env = "FARGATE_LOG_STREAM_PREFIX", default_value = "vk")]
    pub log_stream_prefix: String,

    /// Fargate platform version, e.g. 1.4.0; default: LATEST.
    #[arg(long, env = "FARGATE_PLATFORM_VERSION")]
    pub platform_version: Option<String>,

    /// Start tasks with ECS Exec enabled (`aws ecs execute-command`); needs a task role with SSM
    /// permissions.
    #[arg(long, env = "FARGATE_ENABLE_EXECUTE_COMMAND", default_value_t = false)]
    pub enable_execute_command: bool,

    /// Image of the helper container that writes ConfigMap/Secret/token files into the pod's
    /// volumes before the app containers start.
    #[arg(
        long,
        env = "FARGATE_FILES_IMAGE",
        default_value = "public.ecr.aws/docker/library/busybox:stable"
    )]
    pub files_image: String,

    /// CPU architecture of the tasks.
    #[arg(long, env = "FARGATE_ARCHITECTURE", value_enum, default_value_t = Arch::Amd64)]
    pub architecture: Arch,

    /// Node capacity: CPU (Kubernetes quantity).
    #[arg(long, env = "FARGATE_CAPACITY_CPU", default_value = "1000")]
    pub capacity_cpu: String,

    /// Node capacity: memory (Kubernetes quantity).
    #[arg(long, env = "FARGATE_CAPACITY_MEMORY", default_value = "4Ti")]
    pub capacity_memory: String,

    /// Node capacity: pods.
    #[arg(long, env = "FARGATE_CAPACITY_PODS", default_value = "1000")]
    pub capacity_pods: String,

    /// Node capacity: ephemeral storage (Kubernetes quantity).
    #[arg(
        long,
        env = "FARGATE_CAPACITY_EPHEMERAL_STORAGE",
        default_value = "10Ti"
    )]
    pub capacity_ephemeral_storage: String,

    /// Seconds between two status polls of ECS (one ListTasks + batched DescribeTasks).
    #[arg(long, env = "FARGATE_STATUS_INTERVAL_SECONDS", default_value_t = 5.0)]
    pub status_interval_seconds: f64,

    /// This installation's identity (letters, digits, `-`, `_`; at most 64): tagged on every
    /// task, task definition and secret it creates, and the only ones it adopts or cleans up.
    /// Default: derived from the cluster. Give each provider sharing an account and cluster its own.
    #[arg(long, env = "FARGATE_INSTALLATION_ID")]
    pub installation_id: Option<String>,

    /// Answer usage queries (`kubectl top`, /stats/summary) from CloudWatch Container Insights
    /// with enhanced observability, which must be on for the cluster. Each answer costs
    /// GetMetricData calls (figures are reused for a minute).
    #[arg(long, env = "FARGATE_CONTAINER_INSIGHTS", default_value_t = false)]
    pub container_insights: bool,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No subnet.
    #[error("--subnets (FARGATE_SUBNETS) is required: Fargate tasks use awsvpc networking")]
    NoSubnets,
    /// No security group.
    #[error(
        "--security-groups (FARGATE_SECURITY_GROUPS) is required: Fargate tasks use awsvpc networking"
    )]
    NoSecurityGroups,
    /// awslogs without an execution role.
    #[error(
        "--log-group needs --execution-role-arn (FARGATE_EXECUTION_ROLE_ARN): the awslogs driver writes with the task execution role"
    )]
    LogsNeedExecutionRole,
    /// A bad capacity quantity.
    #[error("--capacity-{name} {value:?} is not a Kubernetes quantity")]
    BadQuantity {
        /// Which capacity flag.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A bad interval.
    #[error("--status-interval-seconds must be between 0.1 and 3600")]
    BadInterval,
    /// A bad installation ID.
    #[error(
        "--installation-id (FARGATE_INSTALLATION_ID) must be 1 to 64 letters, digits, '-' or '_'"
    )]
    BadInstallationId,
}

impl FargateArgs {
    /// Checks what can be checked without calling AWS.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.subnets.iter().all(|s| s.trim().is_empty()) {
            return Err(ConfigError::NoSubnets);
        }
        if self.security_groups.iter().all(|s| s.trim().is_empty()) {
            return Err(ConfigError::NoSecurityGroups);
        }
        if self.log_group.is_some() && self.execution_role_arn.is_none() {
            return Err(ConfigError::LogsNeedExecutionRole);
        }
        for (name, value) in [
            ("cpu", &self.capacity_cpu),
            ("memory", &self.capacity_memory),
            ("pods", &self.capacity_pods),
            ("ephemeral-storage", &self.capacity_ephemeral_storage),
        ] {
            if !is_quantity(value) {
                return Err(ConfigError::BadQuantity {
                    name,
                    value: value.clone(),
                });
            }
        }
        if !(0.1..=3600.0).contains(&self.status_interval_seconds) {
            return Err(ConfigError::BadInterval);
        }
        if let Some(id) = &self.installation_id
            && !valid_installation_id(id)
        {
            return Err(ConfigError::BadInstallationId);
        }
        Ok(())
    }

    /// The installation ID: the flag, else `ecs-<cluster name>` (from a name or an ARN), cut to
    /// what tags and secret names allow.
    pub fn installation(&self) -> String {
        if let Some(id) = &self.installation_id {
            return id.clone();
        }
        let cluster = self.cluster.rsplit('/').next().unwrap_or(&self.cluster);
        let clean: String = format!("ecs-{cluster}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        clean
    }

    /// The status poll interval.
    pub fn status_interval(&self) -> Duration {
        Duration::from_secs_f64(self.status_interval_seconds)
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

fn valid_installation_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A plain Kubernetes quantity: digits with an optional fraction and suffix.
fn is_quantity(s: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    !num.is_empty() && num.parse::<f64>().is_ok() && SUFFIXES.contains(&suffix)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: FargateArgs,
    }

    fn parse(args: &[&str]) -> FargateArgs {
        let mut all = vec!["t"];
        all.extend_from_slice(args);
        T::try_parse_from(all).expect("flags parse").a
    }

    #[test]
    fn validation_names_what_is_missing() {
        let ok = [
            "--subnets",
            "subnet-1,subnet-2",
            "--security-groups",
            "sg-1",
        ];
        assert_eq!(parse(&ok).validate(), Ok(()));
        assert_eq!(parse(&ok).subnets, vec!["subnet-1", "subnet-2"]);
        assert_eq!(
            parse(&["--security-groups", "sg-1"]).validate(),
            Err(ConfigError::NoSubnets)
        );
        assert_eq!(
            parse(&["--subnets", "s"]).validate(),
            Err(ConfigError::NoSecurityGroups)
        );
        let mut logs = ok.to_vec();
        logs.extend(["--log-group", "g"]);
        assert_eq!(
            parse(&logs).validate(),
            Err(ConfigError::LogsNeedExecutionRole)
        );
        let mut cap = ok.to_vec();
        cap.extend(["--capacity-memory", "lots"]);
        assert!(matches!(
            parse(&cap).validate(),
            Err(ConfigError::BadQuantity { name: "memory", .. })
        ));
    }

    #[test]
    fn installation_id_is_the_flag_or_derived_from_the_cluster() {
        let ok = ["--subnets", "s", "--security-groups", "g"];
        assert_eq!(parse(&ok).installation(), "ecs-default");
        let mut arn = ok.to_vec();
        arn.extend(["--cluster", "arn:aws:ecs:us-east-1:1:cluster/prod.eu"]);
        assert_eq!(parse(&arn).installation(), "ecs-prod-eu");
        let mut own = ok.to_vec();
        own.extend(["--installation-id", "team-a"]);
        assert_eq!(parse(&own).installation(), "team-a");
        assert_eq!(parse(&own).validate(), Ok(()));
        let mut bad = ok.to_vec();
        bad.extend(["--installation-id", "a/b"]);
        assert_eq!(parse(&bad).validate(), Err(ConfigError::BadInstallationId));
    }

    #[test]
    fn quantities() {
        for q in ["1000", "4Ti", "0.5", "500m", "10Gi"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "Gi", "1X", "ten"] {
            assert!(!is_quantity(q), "{q}");
        }
    }
}
