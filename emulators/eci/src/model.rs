//! Container groups: what CreateContainerGroup stores and how DescribeContainerGroups /
//! DescribeContainerGroupStatus show them (field names as in the API reference).

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{errors::ApiError, rpc::Params};

/// `yyyy-MM-ddTHH:mm:ssZ`, the format ECI uses for times.
pub fn format_time(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

/// One container as requested.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub cpu: f64,
    pub memory: f64,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<(i64, String)>,
    pub mounts: Vec<(String, String, bool)>,
    pub working_dir: String,
    pub image_pull_policy: String,
    pub stdin: bool,
    pub tty: bool,
}

/// A container's state (`CurrentState` / `PreviousState`).
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Waiting,
    Running {
        start: OffsetDateTime,
    },
    Terminated {
        start: OffsetDateTime,
        finish: OffsetDateTime,
        exit_code: i32,
        reason: String,
    },
}

/// A container with its run-time state.
#[derive(Debug, Clone)]
pub struct Container {
    pub spec: ContainerSpec,
    pub state: RunState,
    pub previous: Option<RunState>,
    pub restart_count: u32,
}

/// A group event (`Events[]`).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub reason: &'static str,
    pub message: String,
    pub at: OffsetDateTime,
}

/// Why a group is in trouble: a condition of its `PodStatus` (and a Warning event when set
/// by the fault API).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Condition type, e.g. `PodScheduled`, `Ready`.
    pub kind: String,
    pub reason: String,
    pub message: String,
    pub at: OffsetDateTime,
}

/// A stored container group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Creation order; NextToken paging is by this.
    pub seq: u64,
    pub id: String,
    pub uuid: String,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub vswitch: String,
    pub security_group: String,
    pub restart_policy: String,
    pub spot_strategy: String,
    pub cpu: f64,
    pub memory: f64,
    pub ip: String,
    pub eip: String,
    pub tags: Vec<(String, String)>,
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub status: &'static str,
    pub status_changed: OffsetDateTime,
    pub created: OffsetDateTime,
    pub succeeded: Option<OffsetDateTime>,
    pub failed: Option<OffsetDateTime>,
    pub expired: Option<OffsetDateTime>,
    /// Set by the fault API: shown as the last of the `PodStatus.Conditions`.
    pub fault: Option<Fault>,
    /// A DeleteContainerGroup put it in Terminating; it goes at this time.
    pub deleting_until: Option<OffsetDateTime>,
    pub events: Vec<Event>,
    pub client_token: Option<String>,
    /// Every request parameter exactly as received (shown only by the admin API).
    pub params: Params,
}

/// ECI's name rule for groups and containers: lower-case letters, digits and hyphens, 2..=128
/// characters, not starting or ending with a hyphen.
pub fn valid_name(name: &str) -> bool {
    (2..=128).contains(&name.len()) && valid_label(name)
}

/// Container names: the same characters, any length from 1 (Kubernetes allows one-letter names).
pub fn valid_container_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && valid_label(name)
}

fn valid_label(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `EnvironmentVar.N.Value`: 0 to 256 characters (API reference).
pub const MAX_ENV_VALUE: usize = 256;
/// `Container.N.Arg`: at most 10 (API reference).
pub const MAX_ARGS: usize = 10;

/// `EnvironmentVar.N.Key`: 1 to 128 characters, `[0-9a-zA-Z_]`, not starting with a digit.
pub fn valid_env_key(k: &str) -> bool {
    (1..=128).contains(&k.chars().count())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

fn parse_container(p: &Params, prefix: &str) -> Result<ContainerSpec, ApiError> {
    let field = |f: &str| format!("{prefix}.{f}");
    let name = p.required(&field("Name"))?.to_owned();
    if !valid_container_name(&name) {
        return Err(ApiError::invalid(&field("Name")));
    }
    let image = p.required(&field("Image"))?.to_owned();
    let env = p
        .indices(&field("EnvironmentVar"))
        .into_iter()
        .map(|n| {
            let key_name = field(&format!("EnvironmentVar.{n}.Key"));
            let key = p.required(&key_name)?;
            if !valid_env_key(key) {
                return Err(ApiError::invalid(&key_name));
            }
            let value_name = field(&format!("EnvironmentVar.{n}.Value"));
            let value = p.get(&value_name).unwrap_or("");
            if value.chars().count() > MAX_ENV_VALUE {
                return Err(ApiError::invalid(&value_name));
            }
            Ok((key.to_owned(), value.to_owned()))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let ports = p
        .indices(&field("Port"))
        .into_iter()
        .map(|n| {
            let name = field(&format!("Port.{n}.Port"));
            let port = p.int(&name)?.ok_or_else(|| ApiError::missing(&name))?;
            if !(1..=65535).contains(&port) {
                return Err(ApiError::invalid(&name));
            }
            let proto = p
                .non_empty(&field(&format!("Port.{n}.Protocol")))
                .unwrap_or("TCP")
                .to_owned();
            Ok((port, proto))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mounts = p
        .indices(&field("VolumeMount"))
        .into_iter()
        .map(|n| {
            let name = p.required(&field(&format!("VolumeMount.{n}.Name")))?;
            let path = p.required(&field(&format!("VolumeMount.{n}.MountPath")))?;
            let ro = p.bool(&field(&format!("VolumeMount.{n}.ReadOnly")), false)?;
            Ok((name.to_owned(), path.to_owned(), ro))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let args = p.list(&field("Arg"));
    if args.len() > MAX_ARGS {
        return Err(ApiError::invalid(&field("Arg")));
    }
    Ok(ContainerSpec {
        name,
        image,
        cpu: p.float(&field("Cpu"))?.unwrap_or(0.0),
        memory: p.float(&field("Memory"))?.unwrap_or(0.0),
        command: p.list(&field("Command")),
        args,
        env,
        ports,
        mounts,
        working_dir: p.get(&field("WorkingDir")).unwrap_or("").to_owned(),
        image_pull_policy: p
            .non_empty(&field("ImagePullPolicy"))
            .unwrap_or("IfNotPresent")
            .to_owned(),
        stdin: p.bool(&field("Stdin"), false)?,
        tty: p.bool(&field("Tty"), false)?,
    })
}

/// Validates and reads the containers under `prefix` (`Container` or `InitContainer`).
pub fn parse_containers(p: &Params, prefix: &str) -> Result<Vec<ContainerSpec>, ApiError> {
    p.indices(prefix)
        .into_iter()
        .map(|n| parse_container(p, &format!("{prefix}.{n}")))
        .collect()
}

/// A stable, made-up container id for one run of a container (`containerd://<64 hex>`).
pub fn container_id(group: &str, container: &str, start: OffsetDateTime) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!(
        "{group}/{container}/{}",
        start.unix_timestamp_nanos()
    ));
    format!("containerd://{}", hex::encode(digest))
}

fn state_json(state: &RunState) -> Value {
    match state {
        RunState::Waiting => json!({
            "State": "Waiting", "DetailStatus": "", "Reason": "ContainerCreating",
            "Message": "", "ExitCode": 0, "Signal": 0, "StartTime": "", "FinishTime": "",
        }),
        RunState::Running { start } => json!({
            "State": "Running", "DetailStatus": "", "Reason": "", "Message": "",
            "ExitCode": 0, "Signal": 0, "StartTime": format_time(*start), "FinishTime": "",
        }),
        RunState::Terminated {
            start,
            finish,
            exit_code,
            reason,
        } => json!({
            "State": "Terminated", "DetailStatus": "", "Reason": reason, "Message": "",
            "ExitCode": exit_code, "Signal": 0, "StartTime": format_time(*start),
            "FinishTime": format_time(*finish),
        }),
    }
}

fn container_json(c: &Container) -> Value {
    let s = &c.spec;
    json!({
        "Name": s.name,
        "Image": s.image,
        "Cpu": s.cpu,
        "Memory": s.memory,
        "Commands": s.command,
        "Args": s.args,
        "WorkingDir": s.working_dir,
        "ImagePullPolicy": s.image_pull_policy,
        "Stdin": s.stdin,
        "Tty": s.tty,
        "RestartCount": c.restart_count,
        "Ready": matches!(c.state, RunState::Running { .. }),
        "EnvironmentVars": s.env.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
        "Ports": s.ports.iter().map(|(p, proto)| json!({"Port": p, "Protocol": proto})).collect::<Vec<_>>(),
        "VolumeMounts": s.mounts.iter().map(|(n, path, ro)| json!({"Name": n, "MountPath": path, "ReadOnly": ro})).collect::<Vec<_>>(),
        "CurrentState": state_json(&c.state),
        "PreviousState": c.previous.as_ref().map(state_json).unwrap_or_else(|| json!({})),
    })
}

fn volumes_json(p: &Params) -> Vec<Value> {
    p.indices("Volume")
        .into_iter()
        .map(|n| {
            let f = |s: &str| p.get(&format!("Volume.{n}.{s}")).unwrap_or("").to_owned();
            let files: Vec<Value> = p
                .indices(&format!("Volume.{n}.ConfigFileVolume.ConfigFileToPath"))
                .into_iter()
                .map(|m| {
                    let g = |s: &str| f(&format!("ConfigFileVolume.ConfigFileToPath.{m}.{s}"));
                    json!({"Content": g("Content"), "Path": g("Path")})
                })
                .collect();
            json!({
                "Name": f("Name"),
                "Type": f("Type"),
                "NFSVolumeServer": f("NFSVolume.Server"),
                "NFSVolumePath": f("NFSVolume.Path"),
                "NFSVolumeReadOnly": f("NFSVolume.ReadOnly") == "true",
                "EmptyDirVolumeMedium": f("EmptyDirVolume.Medium"),
                "ConfigFileVolumeConfigFileToPaths": files,
            })
        })
        .collect()
}

fn dns_json(p: &Params) -> Value {
    let options: Vec<Value> = p
        .indices("DnsConfig.Option")
        .into_iter()
        .map(|n| {
            json!({
                "Name": p.get(&format!("DnsConfig.Option.{n}.Name")).unwrap_or(""),
                "Value": p.get(&format!("DnsConfig.Option.{n}.Value")).unwrap_or(""),
            })
        })
        .collect();
    json!({
        "NameServers": p.list("DnsConfig.NameServer"),
        "Searches": p.list("DnsConfig.Search"),
        "Options": options,
    })
}

fn host_aliases_json(p: &Params) -> Vec<Value> {
    p.indices("HostAliase")
        .into_iter()
        .map(|n| {
            json!({
                "Ip": p.get(&format!("HostAliase.{n}.Ip")).unwrap_or(""),
                "Hostnames": p.list(&format!("HostAliase.{n}.Hostname")),
            })
        })
        .collect()
}

impl Group {
    /// The Kubernetes phase of `PodStatus.Phase`.
    pub fn phase(&self) -> &'static str {
        match self.status {
            "Scheduling" | "Pending" => "Pending",
            "Succeeded" => "Succeeded",
            "Failed" | "ScheduleFailed" | "Expired" => "Failed",
            _ => "Running",
        }
    }

    pub fn container_mut(&mut self, name: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|c| c.spec.name == name)
    }

    pub fn find_container(&self, name: &str) -> Option<&Container> {
        self.containers
            .iter()
            .chain(self.init_containers.iter())
            .find(|c| c.spec.name == name)
    }

    /// The init containers as DescribeContainerGroups shows them.
    pub fn init_states_json(&self) -> Value {
        Value::Array(self.init_containers.iter().map(container_json).collect())
    }

    /// `PodStatus.Conditions`, as a kubelet computes them, with the SDK's field names
    /// (`Message`, `Reason`, `lastTransitionTime`, `status`, `type`); a fault goes last.
    fn conditions_json(&self) -> Vec<Value> {
        let at = format_time(self.status_changed);
        let cond = |kind: &str, ok: bool, reason: &str, message: String| {
            json!({"type": kind, "status": if ok { "True" } else { "False" },
                   "Reason": if ok { "" } else { reason }, "Message": if ok { String::new() } else { message },
                   "lastTransitionTime": at})
        };
        let scheduled = !matches!(self.status, "Scheduling" | "ScheduleFailed");
        let incomplete: Vec<&str> = self
            .init_containers
            .iter()
            .filter(|c| !matches!(c.state, RunState::Terminated { exit_code: 0, .. }))
            .map(|c| c.spec.name.as_str())
            .collect();
        let unready: Vec<&str> = self
            .containers
            .iter()
            .filter(|c| !matches!(c.state, RunState::Running { .. }))
            .map(|c| c.spec.name.as_str())
            .collect();
        let mut out = vec![
            cond(
                "PodScheduled",
                scheduled,
                "Unschedulable",
                "the instance is not scheduled yet".into(),
            ),
            cond(
                "Initialized",
                incomplete.is_empty(),
                "ContainersNotInitialized",
                format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                ),
            ),
            cond(
                "ContainersReady",
                unready.is_empty(),
                "ContainersNotReady",
                format!("containers with unready status: [{}]", unready.join(" ")),
            ),
            cond(
                "Ready",
                unready.is_empty(),
                "ContainersNotReady",
                format!("containers with unready status: [{}]", unready.join(" ")),
            ),
        ];
        if let Some(f) = &self.fault {
            out.push(
                json!({"type": f.kind, "status": "False", "Reason": f.reason,
                            "Message": f.message, "lastTransitionTime": format_time(f.at)}),
            );
        }
        out
    }

    /// A `ContainerGroups[]` entry of DescribeContainerGroups; `Events` only when asked for
    /// (`WithEvent`).
    pub fn describe_json_with(&self, with_events: bool) -> Value {
        let mut v = self.describe_json();
        if !with_events && let Some(m) = v.as_object_mut() {
            m.remove("Events");
        }
        v
    }

    /// A `ContainerGroups[]` entry of DescribeContainerGroups, events included.
    pub fn describe_json(&self) -> Value {
        let opt_time = |t: Option<OffsetDateTime>| t.map(format_time).unwrap_or_default();
        json!({
            "ContainerGroupId": self.id,
            "ContainerGroupName": self.name,
            "RegionId": self.region,
            "ZoneId": self.zone,
            "VSwitchId": self.vswitch,
            "SecurityGroupId": self.security_group,
            "RestartPolicy": self.restart_policy,
            "SpotStrategy": self.spot_strategy,
            "Cpu": self.cpu,
            "Memory": self.memory,
            "IntranetIp": self.ip,
            "InternetIp": self.eip,
            "Status": self.status,
            "CreationTime": format_time(self.created),
            "SucceededTime": opt_time(self.succeeded),
            "FailedTime": opt_time(self.failed),
            "ExpiredTime": opt_time(self.expired),
            "EniInstanceId": format!("eni-{}", &self.id[4..]),
            "InstanceType": "",
            "Tags": self.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
            "Events": self.events.iter().map(|e| json!({
                "Count": 1, "Type": e.kind, "Name": self.name, "Reason": e.reason,
                "Message": e.message, "FirstTimestamp": format_time(e.at),
                "LastTimestamp": format_time(e.at),
            })).collect::<Vec<_>>(),
            "Containers": self.containers.iter().map(container_json).collect::<Vec<_>>(),
            "InitContainers": self.init_containers.iter().map(container_json).collect::<Vec<_>>(),
            "Volumes": volumes_json(&self.params),
            "DnsConfig": dns_json(&self.params),
            "HostAliases": host_aliases_json(&self.params),
        })
    }

    /// A `Data[]` entry of DescribeContainerGroupStatus (Kubernetes-like `PodStatus`).
    pub fn status_json(&self) -> Value {
        let k8s_state = |name: &str, s: &RunState| match s {
            RunState::Waiting => json!({"Waiting": {"Reason": "ContainerCreating", "Message": ""}}),
            RunState::Running { start } => {
                json!({"Running": {"StartedAtstartedAt": format_time(*start)}})
            }
            RunState::Terminated {
                start,
                finish,
                exit_code,
                reason,
            } => json!({"Terminated": {
                "ContainerID": container_id(&self.id, name, *start), "ExitCode": exit_code, "FinishedAt": format_time(*finish),
                "Message": "", "Reason": reason, "Signal": 0, "StartedAt": format_time(*start),
            }}),
        };
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                json!({
                    "Name": c.spec.name,
                    "Image": c.spec.image,
                    "ImageID": "",
                    "Ready": matches!(c.state, RunState::Running { .. }),
                    "Started": matches!(c.state, RunState::Running { .. }),
                    "RestartCount": c.restart_count,
                    "State": k8s_state(&c.spec.name, &c.state),
                    "LastState": c.previous.as_ref().map(|s| k8s_state(&c.spec.name, s)).unwrap_or_else(|| json!({})),
                })
            })
            .collect();
        let start = self
            .containers
            .iter()
            .find_map(|c| match &c.state {
                RunState::Running { start } | RunState::Terminated { start, .. } => Some(*start),
                RunState::Waiting => None,
            })
            .map(format_time)
            .unwrap_or_default();
        json!({
            "ContainerGroupId": self.id,
            "Name": self.name,
            "Namespace": "",
            "Annotations": "",
            "Status": self.status,
            "uuid": self.uuid,
            "PodStatus": {
                "Phase": self.phase(),
                "HostIp": "",
                "PodIp": self.ip,
                "PodIps": [{"Ip": self.ip}],
                "QosClass": "Guaranteed",
                "StartTime": start,
                "Conditions": self.conditions_json(),
                "ContainerStatuses": statuses,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_name_rules() {
        assert!(valid_name("nginx-test"));
        assert!(!valid_name("Nginx"));
        assert!(!valid_name("-abc"));
        assert!(!valid_name("abc-"));
        assert!(!valid_name("a"));
        assert!(!valid_name("a_b"));
    }
}
