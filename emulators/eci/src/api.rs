//! The ECI actions. Parameter names, response fields and validation follow the ECI API
//! reference (2018-08-08).

use axum::http::StatusCode;
use rand::Rng;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    SECURITY_GROUP_ID, VSWITCH_ID, ZONE_ID,
    errors::ApiError,
    exec::{self, ExecSession},
    lifecycle::{self, LogOptions},
    model::{Container, ContainerSpec, Event, Group, RunState, parse_containers, valid_name},
    rpc::Params,
    server::{EmulatorState, Shared},
};

/// The actions served.
pub const ACTIONS: &[&str] = &[
    "CreateContainerGroup",
    "DeleteContainerGroup",
    "DescribeContainerGroups",
    "DescribeContainerGroupStatus",
    "DescribeContainerLog",
    "ExecContainerCommand",
    "DescribeContainerGroupPrice",
    "DescribeMultiContainerGroupMetric",
];

pub async fn dispatch(emu: &Shared, action: &str, p: &Params) -> Result<Value, ApiError> {
    let region = p.required("RegionId")?;
    if region != emu.config.region {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRegionId",
            "The specified region does not exist.",
        ));
    }
    match action {
        "CreateContainerGroup" => create(emu, p),
        "DeleteContainerGroup" => delete(emu, p),
        "DescribeContainerGroups" => describe(emu, p),
        "DescribeContainerGroupStatus" => status(emu, p),
        "DescribeContainerLog" => logs(emu, p),
        "ExecContainerCommand" => exec_command(emu, p).await,
        "DescribeContainerGroupPrice" => price(p),
        "DescribeMultiContainerGroupMetric" => metrics(emu, p),
        _ => Err(ApiError::action_not_found()),
    }
}

fn random_id(prefix: &str) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..20)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

const VOLUME_TYPES: &[&str] = &[
    "EmptyDirVolume",
    "NFSVolume",
    "ConfigFileVolume",
    "DiskVolume",
    "FlexVolume",
    "HostPathVolume",
];

/// Volume and registry-credential checks; returns the declared volume names.
fn validate_volumes_and_credentials(p: &Params) -> Result<Vec<String>, ApiError> {
    let mut names = Vec::new();
    for n in p.indices("Volume") {
        let f = |s: &str| format!("Volume.{n}.{s}");
        let name = p.required(&f("Name"))?;
        let kind = p.required(&f("Type"))?;
        if !VOLUME_TYPES.contains(&kind) {
            return Err(ApiError::invalid(&f("Type")));
        }
        match kind {
            "NFSVolume" => {
                p.required(&f("NFSVolume.Server"))?;
                p.required(&f("NFSVolume.Path"))?;
            }
            "ConfigFileVolume" => {
                for m in p.indices(&f("ConfigFileVolume.ConfigFileToPath")) {
                    p.required(&f(&format!("ConfigFileVolume.ConfigFileToPath.{m}.Path")))?;
                }
            }
            _ => {}
        }
        names.push(name.to_owned());
    }
    for n in p.indices("ImageRegistryCredential") {
        for field in ["Server", "UserName", "Password"] {
            p.required(&format!("ImageRegistryCredential.{n}.{field}"))?;
        }
    }
    Ok(names)
}

fn new_container(spec: ContainerSpec) -> Container {
    Container {
        spec,
        state: RunState::Waiting,
        previous: None,
        restart_count: 0,
    }
}

fn create(emu: &Shared, p: &Params) -> Result<Value, ApiError> {
    let name = p.required("ContainerGroupName")?;
    if !valid_name(name) {
        return Err(ApiError::invalid("ContainerGroupName"));
    }
    if p.indices("Container").is_empty() {
        return Err(ApiError::missing("Container.1.Image"));
    }
    // ECI's limits page: at most 20 containers and 20 volumes per instance.
    if p.indices("Container").len() > 20 {
        return Err(ApiError::invalid("Container"));
    }
    if p.indices("Volume").len() > 20 {
        return Err(ApiError::invalid("Volume"));
    }
    let containers = parse_containers(p, "Container")?;
    let init_containers = parse_containers(p, "InitContainer")?;
    let mut seen = std::collections::HashSet::new();
    for c in containers.iter().chain(init_containers.iter()) {
        if !seen.insert(c.name.clone()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                format!("Duplicate container name {}.", c.name),
            ));
        }
    }
    let volumes = validate_volumes_and_credentials(p)?;
    for c in containers.iter().chain(init_containers.iter()) {
        if let Some((v, _, _)) = c.mounts.iter().find(|(v, _, _)| !volumes.contains(v)) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                format!(
                    "VolumeMount {v} of container {} refers to no volume.",
                    c.name
                ),
            ));
        }
    }
    let restart_policy = p.non_empty("RestartPolicy").unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&restart_policy) {
        return Err(ApiError::invalid("RestartPolicy"));
    }
    let spot = p.non_empty("SpotStrategy").unwrap_or("NoSpot");
    if !["NoSpot", "SpotWithPriceLimit", "SpotAsPriceGo"].contains(&spot) {
        return Err(ApiError::invalid("SpotStrategy"));
    }
    if let Some(vsw) = p.non_empty("VSwitchId")
        && vsw.split(',').any(|v| v.trim() != VSWITCH_ID)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "InvalidVSwitchId.NotFound",
            "The specified VSwitchId does not exist.",
        ));
    }
    if let Some(sg) = p.non_empty("SecurityGroupId")
        && sg != SECURITY_GROUP_ID
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "InvalidSecurityGroupId.NotFound",
            "The specified SecurityGroupId does not exist.",
        ));
    }
    if let Some(zone) = p.non_empty("ZoneId")
        && zone != ZONE_ID
    {
        return Err(ApiError::invalid("ZoneId"));
    }
    let summed = |f: fn(&ContainerSpec) -> f64| containers.iter().map(f).sum::<f64>();
    // Without group or container resources ECI uses 2 vCPU and 4 GiB.
    let cpu = p.float("Cpu")?.unwrap_or_else(|| match summed(|c| c.cpu) {
        0.0 => 2.0,
        s => s,
    });
    let memory = p
        .float("Memory")?
        .unwrap_or_else(|| match summed(|c| c.memory) {
            0.0 => 4.0,
            s => s,
        });
    let tags = p.tags()?;
    let eip = p.non_empty("EipInstanceId").is_some() || p.bool("AutoCreateEip", false)?;

    let mut st = emu.lock();
    if let Some(token) = p.non_empty("ClientToken")
        && let Some(id) = st.client_tokens.get(token).cloned()
    {
        if let Some(g) = st.groups.iter().find(|g| g.id == id)
            && g.params != *p
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "IdempotentParameterMismatch",
                "Request uses a client token in a previous request but is not identical to that request.",
            ));
        }
        return Ok(json!({ "ContainerGroupId": id }));
    }
    let now = OffsetDateTime::now_utc();
    let seq = st.next_seq;
    st.next_seq += 1;
    let id = random_id("eci-");
    let group = Group {
        seq,
        id: id.clone(),
        uuid: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        region: emu.config.region.clone(),
        zone: ZONE_ID.to_owned(),
        vswitch: VSWITCH_ID.to_owned(),
        security_group: SECURITY_GROUP_ID.to_owned(),
        restart_policy: restart_policy.to_owned(),
        spot_strategy: spot.to_owned(),
        cpu,
        memory,
        ip: format!("172.16.{}.{}", (seq / 250) % 250, seq % 250 + 2),
        eip: if eip {
            format!("47.96.{}.{}", (seq / 250) % 250, seq % 250 + 2)
        } else {
            String::new()
        },
        tags,
        containers: containers.into_iter().map(new_container).collect(),
        init_containers: init_containers.into_iter().map(new_container).collect(),
        status: "Pending",
        status_changed: now,
        created: now,
        succeeded: None,
        failed: None,
        expired: None,
        fault: None,
        deleting_until: None,
        events: vec![Event {
            kind: "Normal",
            reason: "Scheduled",
            message: format!("Successfully assigned {name} to {ZONE_ID}"),
            at: now,
        }],
        client_token: p.non_empty("ClientToken").map(str::to_owned),
        params: p.clone(),
    };
    if let Some(token) = &group.client_token {
        st.client_tokens.insert(token.clone(), id.clone());
    }
    st.groups.push(group);
    st.stats.created += 1;
    st.stats.live = st.groups.len() as u64;
    Ok(json!({ "ContainerGroupId": id }))
}

/// DeleteContainerGroup. A running group with a preStop hook is `Terminating` for its grace
/// period (capped by the `terminating_ms` knob) before it goes, as ECI's lifecycle guide says;
/// `Force=true` skips the wait. Deleting a group already terminating is accepted again.
fn delete(emu: &Shared, p: &Params) -> Result<Value, ApiError> {
    let id = p.required("ContainerGroupId")?;
    let force = p.bool("Force", false)?;
    let mut st = emu.lock();
    let idx = st
        .groups
        .iter()
        .position(|g| g.id == id)
        .ok_or_else(ApiError::group_not_found)?;
    let now = OffsetDateTime::now_utc();
    let g = &st.groups[idx];
    if g.deleting_until.is_some() && !force {
        return Ok(json!({}));
    }
    let pre_stop = g
        .params
        .0
        .keys()
        .any(|k| k.starts_with("Container.") && k.contains(".LifecyclePreStopHandler"));
    let grace_ms = g
        .params
        .int("TerminationGracePeriodSeconds")
        .ok()
        .flatten()
        .map_or(30_000, |s| s.max(0) * 1000);
    let wait = grace_ms.min(st.knobs.terminating_ms as i64);
    let first = g.deleting_until.is_none();
    let running = g.status == "Running";
    let st = &mut *st;
    if first {
        st.deletions.push(st.groups[idx].clone());
        st.stats.deleted += 1;
    }
    if force || !pre_stop || !running || wait <= 0 {
        st.groups.remove(idx);
    } else {
        let g = &mut st.groups[idx];
        crate::lifecycle::tracked(g, now, |g| {
            g.status = "Terminating";
            g.deleting_until = Some(now + Duration::milliseconds(wait));
        });
    }
    st.stats.live = st.groups.len() as u64;
    Ok(json!({}))
}

/// Filters shared by DescribeContainerGroups and DescribeContainerGroupStatus.
struct Filter {
    ids: Option<Vec<String>>,
    name: Option<String>,
    status: Option<String>,
    zone: Option<String>,
    vswitch: Option<String>,
    tags: Vec<(String, String)>,
    since: Option<OffsetDateTime>,
}

impl Filter {
    fn from_params(p: &Params, with_since: bool) -> Result<Self, ApiError> {
        let ids = p.json_strings("ContainerGroupIds")?;
        if ids.as_ref().is_some_and(|ids| ids.len() > 20) {
            return Err(ApiError::invalid("ContainerGroupIds"));
        }
        let since = if with_since {
            match p.int("SinceSecond")? {
                Some(s) if s < 0 => return Err(ApiError::invalid("SinceSecond")),
                Some(s) => Some(OffsetDateTime::now_utc() - Duration::seconds(s)),
                None => None,
            }
        } else {
            None
        };
        Ok(Self {
            ids,
            name: p.non_empty("ContainerGroupName").map(str::to_owned),
            status: p.non_empty("Status").map(str::to_owned),
            zone: p.non_empty("ZoneId").map(str::to_owned),
            vswitch: p.non_empty("VSwitchId").map(str::to_owned),
            tags: p.tags()?,
            since,
        })
    }

    fn matches(&self, g: &Group) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&g.id))
            && self.name.as_ref().is_none_or(|n| *n == g.name)
            && self.status.as_ref().is_none_or(|s| s == g.status)
            && self.zone.as_ref().is_none_or(|z| *z == g.zone)
            && self.vswitch.as_ref().is_none_or(|v| *v == g.vswitch)
            && self.since.is_none_or(|t| g.status_changed >= t)
            && self.tags.iter().all(|t| g.tags.contains(t))
    }
}

/// One page of matching groups: `(page, total, next_token)`. NextToken is the creation sequence
/// number of the next group, so it stays valid when groups are deleted between pages.
fn page<'a>(
    st: &'a EmulatorState,
    p: &Params,
    filter: &Filter,
    max_limit: i64,
) -> Result<(Vec<&'a Group>, usize, String), ApiError> {
    let limit = match p.int("Limit")? {
        Some(l) if l < 1 => return Err(ApiError::invalid("Limit")),
        Some(l) => l.min(max_limit),
        None => max_limit,
    } as usize;
    let from = match p.non_empty("NextToken") {
        Some(t) => u64::from_str_radix(t, 16).map_err(|_| ApiError::invalid("NextToken"))?,
        None => 0,
    };
    let matching: Vec<&Group> = st.groups.iter().filter(|g| filter.matches(g)).collect();
    let total = matching.len();
    let mut rest = matching.into_iter().filter(|g| g.seq >= from);
    let page: Vec<&Group> = rest.by_ref().take(limit).collect();
    let next = rest
        .next()
        .map(|g| format!("{:016x}", g.seq))
        .unwrap_or_default();
    Ok((page, total, next))
}

fn describe(emu: &Shared, p: &Params) -> Result<Value, ApiError> {
    let filter = Filter::from_params(p, false)?;
    let st = emu.lock();
    let with_events = p.bool("WithEvent", false)?;
    let (groups, total, next) = page(&st, p, &filter, 20)?;
    Ok(json!({
        "TotalCount": total,
        "NextToken": next,
        "ContainerGroups": groups.iter().map(|g| g.describe_json_with(with_events)).collect::<Vec<_>>(),
    }))
}

fn status(emu: &Shared, p: &Params) -> Result<Value, ApiError> {
    let filter = Filter::from_params(p, true)?;
    let st = emu.lock();
    let (groups, total, next) = page(&st, p, &filter, 200)?;
    Ok(json!({
        "TotalCount": total,
        "NextToken": next,
        "Data": groups.iter().map(|g| g.status_json()).collect::<Vec<_>>(),
    }))
}

/// DescribeContainerLog. Documented: `StartTime` (UTC, RFC 3339), `Tail` (default 500, at most
/// 2000), `LastTime` (the previous container of one that exited and restarted), `SinceSeconds`,
/// `LimitBytes` (1..=1048576), `Timestamps`; at most 1 MB of content.
fn logs(emu: &Shared, p: &Params) -> Result<Value, ApiError> {
    let id = p.required("ContainerGroupId")?;
    let name = p.required("ContainerName")?;
    let start_time = p
        .non_empty("StartTime")
        .map(|t| OffsetDateTime::parse(t, &Rfc3339).map_err(|_| ApiError::invalid("StartTime")))
        .transpose()?;
    let limit_bytes = match p.int("LimitBytes")? {
        Some(b) if !(1..=lifecycle::CONTENT_MAX_BYTES as i64).contains(&b) => {
            return Err(ApiError::invalid("LimitBytes"));
        }
        b => b.map(|b| b as usize),
    };
    let opts = LogOptions {
        // Capped like `Limit` elsewhere: the reference gives a maximum, not an error.
        tail: p
            .int("Tail")?
            .map_or(lifecycle::TAIL_DEFAULT, |t| t.max(0) as usize)
            .min(lifecycle::TAIL_MAX),
        start_time,
        since_seconds: p.int("SinceSeconds")?,
        limit_bytes,
        timestamps: p.bool("Timestamps", false)?,
        previous: p.bool("LastTime", false)?,
    };
    let st = emu.lock();
    let g = st
        .groups
        .iter()
        .find(|g| g.id == id)
        .ok_or_else(ApiError::group_not_found)?;
    let heartbeat = Duration::milliseconds(emu.config.log_heartbeat_ms as i64);
    let content = lifecycle::log_content(g, name, OffsetDateTime::now_utc(), heartbeat, &opts)
        .ok_or_else(ApiError::container_not_found)?;
    Ok(json!({ "ContainerName": name, "Content": content }))
}

async fn exec_command(emu: &Shared, p: &Params) -> Result<Value, ApiError> {
    let id = p.required("ContainerGroupId")?;
    let name = p.required("ContainerName")?;
    p.required("Command")?;
    let argv = p.json_strings("Command")?.unwrap_or_default();
    if argv.is_empty() || argv.len() > 20 || argv.iter().any(|a| a.len() > 256) {
        return Err(ApiError::invalid("Command"));
    }
    let tty = p.bool("TTY", false)?;
    let stdin = p.bool("Stdin", true)?;
    let sync = p.bool("Sync", false)?;
    if sync && tty {
        return Err(ApiError::invalid("TTY"));
    }
    let session = {
        let st = emu.lock();
        let g = st
            .groups
            .iter()
            .find(|g| g.id == id)
            .ok_or_else(ApiError::group_not_found)?;
        let c = g
            .containers
            .iter()
            .find(|c| c.spec.name == name)
            .ok_or_else(ApiError::container_not_found)?;
        if !matches!(c.state, RunState::Running { .. }) {
            return Err(ApiError::incorrect_status(
                "The current status of the resource does not support this operation.",
            ));
        }
        ExecSession {
            argv,
            env: c.spec.env.clone(),
            workdir: exec::group_workdir(&g.id),
            stdin: stdin && !sync,
            tty,
        }
    };
    if sync {
        let output = exec::run_sync(&session)
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e))?;
        return Ok(json!({ "SyncResponse": output, "WebSocketUri": "", "HttpUrl": "" }));
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    emu.lock().exec_sessions.insert(token.clone(), session);
    Ok(json!({
        "WebSocketUri": format!("ws://{}/exec/?s={token}", emu.addr),
        "HttpUrl": "",
    }))
}

/// A made-up, deterministic pay-as-you-go price per second: 0.000049 per vCPU and 0.00000613 per
/// GiB (2 vCPU + 4 GiB gives the reference's example total, 0.00012252).
fn price(p: &Params) -> Result<Value, ApiError> {
    let cpu = p.float("Cpu")?.ok_or_else(|| ApiError::missing("Cpu"))?;
    let memory = p
        .float("Memory")?
        .ok_or_else(|| ApiError::missing("Memory"))?;
    let round = |x: f64| (x * 1e8).round() / 1e8;
    let cpu_price = round(cpu * 0.000049);
    let mem_price = round(memory * 0.00000613);
    let total = round(cpu_price + mem_price);
    let detail = |resource: &str, price: f64| {
        json!({
            "Resource": resource, "OriginalPrice": price, "DiscountPrice": 0,
            "TradePrice": price, "Rules": {"Rule": []},
        })
    };
    Ok(json!({
        "PriceInfo": {
            "Price": {
                "Currency": "CNY",
                "OriginalPrice": total,
                "DiscountPrice": 0,
                "TradePrice": total,
                "DetailInfos": {"DetailInfo": [detail("cpu", cpu_price), detail("memory", mem_price)]},
            },
            "Rules": {"Rule": []},
            "SpotPrices": {"SpotPrice": []},
        }
    }))
}

/// DescribeMultiContainerGroupMetric: `ContainerGroupIds` (JSON array, required, at most 20),
/// `MetricType` (`summary`, the only documented value). One record per group, sampled now, with
/// made-up but consistent figures: each running container uses 10 % of its vCPU (of 0.25 vCPU
/// when it asked for none) and a quarter of its memory (of 0.5 GiB); CPU time accumulates since
/// its start. Groups that do not exist are left out.
fn metrics(emu: &Shared, p: &Params) -> Result<Value, ApiError> {
    p.required("ContainerGroupIds")?;
    let ids = p.json_strings("ContainerGroupIds")?.unwrap_or_default();
    if ids.is_empty() || ids.len() > 20 {
        return Err(ApiError::invalid("ContainerGroupIds"));
    }
    if let Some(t) = p.non_empty("MetricType")
        && t != "summary"
    {
        return Err(ApiError::invalid("MetricType"));
    }
    let now = OffsetDateTime::now_utc();
    let st = emu.lock();
    let datas: Vec<Value> = st
        .groups
        .iter()
        .filter(|g| ids.contains(&g.id))
        .map(|g| {
            let containers: Vec<(String, u64, u64, u64)> = g
                .containers
                .iter()
                .filter_map(|c| {
                    let RunState::Running { start } = c.state else {
                        return None;
                    };
                    let vcpu = if c.spec.cpu > 0.0 { c.spec.cpu } else { 0.25 };
                    let gib = if c.spec.memory > 0.0 { c.spec.memory } else { 0.5 };
                    let nano_cores = (vcpu * 0.1 * 1e9) as u64;
                    let secs = (now - start).as_seconds_f64().max(0.0);
                    let core_nanos = (nano_cores as f64 * secs) as u64;
                    let bytes = (gib * 0.25 * (1u64 << 30) as f64) as u64;
                    Some((c.spec.name.clone(), nano_cores, core_nanos, bytes))
                })
                .collect();
            let cpu = |nano: u64, total: u64, limit: f64| {
                json!({"Limit": (limit * 1000.0) as u64, "Load": 0, "UsageNanoCores": nano,
                       "UsageCoreNanoSeconds": total})
            };
            let mem = |bytes: u64, limit_gib: f64| {
                json!({"UsageBytes": bytes, "WorkingSet": bytes, "Rss": bytes * 3 / 4,
                       "Cache": bytes / 4,
                       "AvailableBytes": ((limit_gib * (1u64 << 30) as f64) as u64).saturating_sub(bytes)})
            };
            let sum = |f: fn(&(String, u64, u64, u64)) -> u64| containers.iter().map(f).sum::<u64>();
            json!({
                "ContainerGroupId": g.id,
                "Records": [{
                    "Timestamp": crate::model::format_time(now),
                    "CPU": cpu(sum(|c| c.1), sum(|c| c.2), g.cpu),
                    "Memory": mem(sum(|c| c.3), g.memory),
                    "Containers": containers.iter().map(|(name, nano, total, bytes)| {
                        let spec = g.containers.iter().find(|c| c.spec.name == *name).map(|c| &c.spec);
                        json!({
                            "Name": name,
                            "CPU": cpu(*nano, *total, spec.map_or(0.0, |s| s.cpu)),
                            "Memory": mem(*bytes, spec.map_or(0.0, |s| s.memory)),
                        })
                    }).collect::<Vec<_>>(),
                    "Disk": [],
                    "Filesystem": [],
                    "Network": {"Interfaces": []},
                }],
            })
        })
        .collect();
    Ok(json!({ "MonitorDatas": datas }))
}
