//! Azure Monitor metrics of container groups (Metrics - List,
//! `GET {group id}/providers/Microsoft.Insights/metrics`): `CpuUsage` (millicores) and
//! `MemoryUsage` (bytes), the two metrics the supported-metrics reference lists with the
//! `containerName` dimension, at the `PT1M` grain, aggregation `Average`. Figures come from
//! `/_emulator/groups/{name}/metrics` (else small fixed ones) for containers while they run.

use std::collections::BTreeMap;

use axum::{http::StatusCode, response::Response};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    arm::{arm_error, json_response},
    model::Group,
    state::{AppState, lock, rfc3339},
};

/// Metrics API versions accepted (Microsoft.Insights, not Microsoft.ContainerInstance).
pub const API_VERSIONS: &[&str] = &["2018-01-01", "2019-07-01", "2021-05-01", "2023-10-01"];

/// Reported when a test set nothing: 5 millicores, 32 MiB per running container.
const DEFAULT_CPU_MILLICORES: f64 = 5.0;
const DEFAULT_MEMORY_BYTES: f64 = 33_554_432.0;
/// At most this many one-minute points per answer (a day).
const MAX_POINTS: i64 = 1440;

/// A container's figures set by a test.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
pub struct Figures {
    pub cpu_millicores: f64,
    pub memory_bytes: f64,
}

fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name || k.eq_ignore_ascii_case(name))
        .map(|(_, v)| percent_decode(v))
}

/// `%XX` and `+` decoding of a query value.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad_request(message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// Metrics - List for group `name`.
pub fn list(st: &AppState, name: &str, path: &str, query: &str) -> Response {
    let version = param(query, "api-version").unwrap_or_default();
    if !API_VERSIONS.contains(&version.as_str()) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            &format!(
                "No registered resource provider found for API version '{version}' and type \
                 'metrics'. The supported api-versions are '{}'.",
                API_VERSIONS.join(", ")
            ),
        );
    }
    let names: Vec<String> = param(query, "metricnames")
        .unwrap_or_else(|| "CpuUsage".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = names.iter().find(|n| {
        !["CpuUsage", "MemoryUsage"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(n))
    }) {
        return bad_request(&format!(
            "Failed to find metric configuration for provider: Microsoft.ContainerInstance, \
             resource Type: containerGroups, metric: {bad}, Valid metrics: CpuUsage,MemoryUsage,\
             NetworkBytesReceivedPerSecond,NetworkBytesTransmittedPerSecond"
        ));
    }
    if let Some(a) = param(query, "aggregation")
        && !a
            .split(',')
            .all(|a| a.trim().eq_ignore_ascii_case("Average"))
    {
        return bad_request("Only the Average aggregation is emulated.");
    }
    let interval = param(query, "interval").unwrap_or_else(|| "PT1M".into());
    if !interval.eq_ignore_ascii_case("PT1M") {
        return bad_request("Only the PT1M interval is emulated.");
    }
    let now = OffsetDateTime::now_utc();
    let (start, end) = match param(query, "timespan") {
        None => (now - Duration::hours(1), now),
        Some(t) => {
            let parsed = t.split_once('/').and_then(|(a, b)| {
                Some((
                    OffsetDateTime::parse(a, &Rfc3339).ok()?,
                    OffsetDateTime::parse(b, &Rfc3339).ok()?,
                ))
            });
            match parsed {
                Some((a, b)) if a < b => (a, b),
                _ => {
                    return bad_request(&format!(
                        "Invalid timespan '{t}': expected 'startDateTime_ISO/endDateTime_ISO'."
                    ));
                }
            }
        }
    };
    // `$filter=containerName eq '*'`: one series per container; none: the group's total.
    let per_container = param(query, "$filter")
        .or_else(|| param(query, "%24filter"))
        .is_some_and(|f| f.to_ascii_lowercase().contains("containername eq '*'"));
    let groups = lock(&st.groups);
    let Some(g) = groups.get(name) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.ContainerInstance/containerGroups/{name}' under resource \
                 group '{}' was not found.",
                st.config.resource_group
            ),
        );
    };
    let figures = lock(&st.metrics).get(name).cloned().unwrap_or_default();
    let value: Vec<Value> = names
        .iter()
        .map(|metric| metric_json(g, path, metric, &figures, start, end, now, per_container))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "cost": 0,
            "timespan": format!("{}/{}", rfc3339(start), rfc3339(end)),
            "interval": "PT1M",
            "namespace": "Microsoft.ContainerInstance/containerGroups",
            "resourceregion": st.config.location,
            "value": value,
        }),
    )
}

#[allow(clippy::too_many_arguments)]
fn metric_json(
    g: &Group,
    path: &str,
    metric: &str,
    figures: &BTreeMap<String, Figures>,
    start: OffsetDateTime,
    end: OffsetDateTime,
    now: OffsetDateTime,
    per_container: bool,
) -> Value {
    let cpu = metric.eq_ignore_ascii_case("CpuUsage");
    let (canonical, localized, unit) = if cpu {
        ("CpuUsage", "CPU Usage", "Count")
    } else {
        ("MemoryUsage", "Memory Usage", "Bytes")
    };
    // Minutes of the timespan up to now, at most MAX_POINTS (the latest ones).
    let first = start
        .replace_second(0)
        .unwrap_or(start)
        .replace_nanosecond(0)
        .unwrap_or(start);
    let last = end.min(now);
    let minutes = ((last - first).whole_minutes()).clamp(0, MAX_POINTS - 1);
    let stamps: Vec<OffsetDateTime> = (0..=minutes)
        .rev()
        .map(|back| {
            let t = last - Duration::minutes(back);
            t.replace_second(0)
                .unwrap_or(t)
                .replace_nanosecond(0)
                .unwrap_or(t)
        })
        .collect();
    let running: Vec<(&str, Option<OffsetDateTime>, f64)> = g
        .containers
        .iter()
        .filter(|c| !c.init)
        .map(|c| {
            let since = match c.state {
                crate::model::RunState::Running { start } => Some(start),
                _ => None,
            };
            let f = figures.get(&c.name);
            let v = if cpu {
                f.map_or(DEFAULT_CPU_MILLICORES, |f| f.cpu_millicores)
            } else {
                f.map_or(DEFAULT_MEMORY_BYTES, |f| f.memory_bytes)
            };
            (c.name.as_str(), since, v)
        })
        .collect();
    // A point has an average when the container ran during that minute.
    let point = |t: OffsetDateTime, series: &[&(&str, Option<OffsetDateTime>, f64)]| {
        let ran: Vec<f64> = series
            .iter()
            .filter(|(_, since, _)| since.is_some_and(|s| s < t + Duration::minutes(1)))
            .map(|(_, _, v)| *v)
            .collect();
        if ran.is_empty() {
            json!({"timeStamp": rfc3339(t)})
        } else {
            json!({"timeStamp": rfc3339(t), "average": ran.iter().sum::<f64>()})
        }
    };
    let timeseries: Vec<Value> = if per_container {
        running
            .iter()
            .map(|c| {
                json!({
                    "metadatavalues": [{"name": {"value": "containername", "localizedValue": "containername"}, "value": c.0}],
                    "data": stamps.iter().map(|t| point(*t, &[c])).collect::<Vec<_>>(),
                })
            })
            .collect()
    } else {
        let all: Vec<&(&str, Option<OffsetDateTime>, f64)> = running.iter().collect();
        vec![json!({
            "metadatavalues": [],
            "data": stamps.iter().map(|t| point(*t, &all)).collect::<Vec<_>>(),
        })]
    };
    json!({
        "id": format!("{path}/{canonical}"),
        "type": "Microsoft.Insights/metrics",
        "name": {"value": canonical, "localizedValue": localized},
        "displayDescription": if cpu { "CPU usage on all cores in millicores." } else { "Total memory usage in byte." },
        "unit": unit,
        "timeseries": timeseries,
        "errorCode": "Success",
    })
}
