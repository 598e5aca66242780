//! The kubelet API's plain HTTP handlers: container logs (streamed), `/stats/summary`,
//! `/metrics/resource`, `/pods`, `/runningpods/`.

use std::{collections::HashMap, fmt::Write as _};

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{Api, api::ListParams};
use podprovider_proto::v1 as pb;

use super::{Body, KubeletApi, has_container, json, provider_error, text};
use crate::resolve;

/// Query parameters as a map; the last value of a repeated key wins (for everything but
/// `command`, which [`query_all`] reads).
pub fn query_map(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Every value of `key`, in order.
pub fn query_all(query: Option<&str>, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// A boolean query parameter as Kubernetes converts them: absent is false; `false` and `0` are
/// false; anything else (including an empty value) is true.
pub fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"))
}

fn number(q: &HashMap<String, String>, key: &str) -> Result<Option<i64>, String> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid {key} {v:?}: expected an integer")),
    }
}

/// The `GetContainerLogs` request for a `/containerLogs` query, or why the query is invalid.
pub fn logs_request(
    pod_ref: pb::PodRef,
    container: &str,
    query: Option<&str>,
) -> Result<pb::GetContainerLogsRequest, String> {
    let q = query_map(query);
    let since_time = match q.get("sinceTime") {
        None => None,
        Some(v) => {
            let t: Timestamp = v
                .parse()
                .map_err(|_| format!("invalid sinceTime {v:?}: expected RFC 3339"))?;
            Some(prost_types::Timestamp {
                seconds: t.as_second(),
                nanos: t.subsec_nanosecond(),
            })
        }
    };
    let non_negative = |key: &str| -> Result<Option<i64>, String> {
        match number(&q, key)? {
            Some(n) if n < 0 => Err(format!("{key} must not be negative")),
            n => Ok(n),
        }
    };
    Ok(pb::GetContainerLogsRequest {
        pod_ref: Some(pod_ref),
        container: container.to_owned(),
        tail_lines: non_negative("tailLines")?,
        since_seconds: non_negative("sinceSeconds")?,
        since_time,
        timestamps: flag(&q, "timestamps"),
        limit_bytes: non_negative("limitBytes")?,
        previous: flag(&q, "previous"),
        follow: flag(&q, "follow"),
    })
}

/// `GET /containerLogs/{namespace}/{pod}/{container}`: streamed from the provider; a follow ends
/// when the provider ends it or when the client goes away (dropping the body cancels the call).
pub async fn container_logs(
    api: &KubeletApi,
    namespace: &str,
    name: &str,
    container: &str,
    query: Option<&str>,
) -> Response<Body> {
    let pod = match api.pod(namespace, name, None).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if !has_container(&pod, container) {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {namespace}/{name}"),
        );
    }
    let request = match logs_request(resolve::pod_ref(&pod), container, query) {
        Ok(r) => r,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let stream = match api.provider.clone().get_container_logs(request).await {
        Ok(s) => s.into_inner(),
        Err(status) => return provider_error(&status),
    };
    let frames = stream.map(|chunk| match chunk {
        Ok(c) => Ok(Frame::data(Bytes::from(c.data))),
        Err(status) => Err(std::io::Error::other(status.message().to_owned())),
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

async fn node_pods(api: &KubeletApi) -> Result<Vec<Pod>, Response<Body>> {
    let params = ListParams::default().fields(&format!("spec.nodeName={}", api.cfg.node_name));
    Api::<Pod>::all(api.client.clone())
        .list(&params)
        .await
        .map(|l| l.items)
        .map_err(|err| {
            tracing::warn!(%err, "listing the node's pods failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "listing pods failed")
        })
}

/// `GET /pods`: the pods bound to this node, as a PodList.
pub async fn pods(api: &KubeletApi) -> Response<Body> {
    match node_pods(api).await {
        Ok(items) => json(&serde_json::json!({
            "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items
        })),
        Err(response) => response,
    }
}

/// `GET /runningpods/`: what the provider runs, as a PodList of names, UIDs and containers.
pub async fn running_pods(api: &KubeletApi) -> Response<Body> {
    let request = pb::ListPodsRequest {
        node_name: api.cfg.node_name.clone(),
    };
    let listed = match api.provider.clone().list_pods(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return provider_error(&status),
    };
    let items: Vec<serde_json::Value> = listed
        .pods
        .iter()
        .filter(|s| s.phase == pb::PodPhase::Running as i32)
        .filter_map(|s| {
            let r = s.pod_ref.as_ref()?;
            let containers: Vec<serde_json::Value> = s
                .container_statuses
                .iter()
                .map(|c| serde_json::json!({"name": c.name, "image": c.image}))
                .collect();
            Some(serde_json::json!({
                "metadata": {"name": r.name, "namespace": r.namespace, "uid": r.uid},
                "spec": {"containers": containers},
                "status": {}
            }))
        })
        .collect();
    json(&serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items
    }))
}

fn rfc3339(t: Option<&prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    Timestamp::new(t.seconds, t.nanos)
        .ok()
        .map(|t| t.to_string())
}

fn cpu_json(cpu: Option<&pb::CpuUsage>, time: &Option<String>) -> serde_json::Value {
    let cpu = cpu.cloned().unwrap_or_default();
    serde_json::json!({
        "time": time,
        "usageNanoCores": cpu.usage_nano_cores,
        "usageCoreNanoSeconds": cpu.usage_core_nano_seconds,
    })
}

fn memory_json(memory: Option<&pb::MemoryUsage>, time: &Option<String>) -> serde_json::Value {
    let m = memory.cloned().unwrap_or_default();
    serde_json::json!({
        "time": time,
        "workingSetBytes": m.working_set_bytes,
        "usageBytes": m.usage_bytes,
        "rssBytes": m.rss_bytes,
    })
}

async fn stats(api: &KubeletApi) -> Result<Vec<pb::PodStats>, Response<Body>> {
    let request = pb::GetStatsRequest {
        node_name: api.cfg.node_name.clone(),
        pods: Vec::new(),
    };
    match api.provider.clone().get_stats(request).await {
        Ok(r) => Ok(r.into_inner().pods),
        Err(status) => Err(provider_error(&status)),
    }
}

/// Sums an optional figure over pods; `None` when no pod reports it.
fn total(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values.fold(None, |acc, v| match (acc, v) {
        (None, v) => v,
        (acc, None) => acc,
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
    })
}

/// `GET /stats/summary`: the stats/v1alpha1 Summary (node totals are the sums over pods, since a
/// virtual node has no machine of its own).
pub async fn summary(api: &KubeletApi) -> Response<Body> {
    let stats = match stats(api).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    // Start times come from the API's pod status.
    let started: HashMap<String, Pod> = match node_pods(api).await {
        Ok(pods) => pods
            .into_iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect(),
        Err(response) => return response,
    };
    let now = Some(Timestamp::now().to_string());
    let pods: Vec<serde_json::Value> = stats
        .iter()
        .filter_map(|p| {
            let r = p.pod_ref.as_ref()?;
            let time = rfc3339(p.time.as_ref()).or_else(|| now.clone());
            let status = started.get(&r.uid).and_then(|p| p.status.as_ref());
            let container_start = |name: &str| {
                status
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.name == name))
                    .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.clone())
            };
            let containers: Vec<serde_json::Value> = p
                .containers
                .iter()
                .map(|c| {
                    let ctime = rfc3339(c.time.as_ref()).or_else(|| time.clone());
                    serde_json::json!({
                        "name": c.name,
                        "startTime": container_start(&c.name),
                        "cpu": cpu_json(c.cpu.as_ref(), &ctime),
                        "memory": memory_json(c.memory.as_ref(), &ctime),
                    })
                })
                .collect();
            Some(serde_json::json!({
                "podRef": {"name": r.name, "namespace": r.namespace, "uid": r.uid},
                "startTime": status.and_then(|s| s.start_time.clone()),
                "containers": containers,
                "cpu": cpu_json(p.cpu.as_ref(), &time),
                "memory": memory_json(p.memory.as_ref(), &time),
            }))
        })
        .collect();
    let node_cpu = pb::CpuUsage {
        usage_nano_cores: total(stats.iter().map(|p| p.cpu.as_ref()?.usage_nano_cores)),
        usage_core_nano_seconds: total(
            stats
                .iter()
                .map(|p| p.cpu.as_ref()?.usage_core_nano_seconds),
        ),
    };
    let node_memory = pb::MemoryUsage {
        working_set_bytes: total(stats.iter().map(|p| p.memory.as_ref()?.working_set_bytes)),
        usage_bytes: total(stats.iter().map(|p| p.memory.as_ref()?.usage_bytes)),
        rss_bytes: total(stats.iter().map(|p| p.memory.as_ref()?.rss_bytes)),
    };
    let node_start = rfc3339(Some(&prost_types::Timestamp::from(api.started)));
    json(&serde_json::json!({
        "node": {
            "nodeName": api.cfg.node_name,
            "startTime": node_start,
            "cpu": cpu_json(Some(&node_cpu), &now),
            "memory": memory_json(Some(&node_memory), &now),
        },
        "pods": pods,
    }))
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn millis(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| (t.seconds * 1000 + i64::from(t.nanos / 1_000_000)).to_string())
        .unwrap_or_default()
}

fn seconds(core_nanos: u64) -> f64 {
    core_nanos as f64 / 1e9
}

/// Prometheus text in the kubelet's `/metrics/resource` format.
pub fn resource_metrics_text(stats: &[pb::PodStats]) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, samples: Vec<(String, String, String)>| {
            let _ = writeln!(out, "# HELP {name} [ALPHA] {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value, ts) in samples {
                let ts = if ts.is_empty() { ts } else { format!(" {ts}") };
                let _ = writeln!(out, "{name}{labels} {value}{ts}");
            }
        };
    let container_labels = |p: &pb::PodRef, c: &str| {
        format!(
            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
            label(c),
            label(&p.namespace),
            label(&p.name)
        )
    };
    let pod_labels = |p: &pb::PodRef| {
        format!(
            "{{namespace=\"{}\",pod=\"{}\"}}",
            label(&p.namespace),
            label(&p.name)
        )
    };
    let containers = || {
        stats
            .iter()
            .filter_map(|p| Some((p.pod_ref.as_ref()?, p)))
            .flat_map(|(r, p)| p.containers.iter().map(move |c| (r, p, c)))
    };
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        containers()
            .filter_map(|(r, p, c)| {
                let v = c.cpu.as_ref()?.usage_core_nano_seconds?;
                let t = c.time.as_ref().or(p.time.as_ref());
                Some((
                    container_labels(r, &c.name),
                    seconds(v).to_string(),
                    millis(t),
                ))
            })
            .collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        containers()
            .filter_map(|(r, p, c)| {
                let v = c.memory.as_ref()?.working_set_bytes?;
                let t = c.time.as_ref().or(p.time.as_ref());
                Some((container_labels(r, &c.name), v.to_string(), millis(t)))
            })
            .collect(),
    );
    let pod_cpu: Vec<(String, String, String)> = stats
        .iter()
        .filter_map(|p| {
            let v = p.cpu.as_ref()?.usage_core_nano_seconds?;
            Some((
                pod_labels(p.pod_ref.as_ref()?),
                seconds(v).to_string(),
                millis(p.time.as_ref()),
            ))
        })
        .collect();
    let pod_memory: Vec<(String, String, String)> = stats
        .iter()
        .filter_map(|p| {
            let v = p.memory.as_ref()?.working_set_bytes?;
            Some((
                pod_labels(p.pod_ref.as_ref()?),
                v.to_string(),
                millis(p.time.as_ref()),
            ))
        })
        .collect();
    let node_cpu = total(
        stats
            .iter()
            .map(|p| p.cpu.as_ref()?.usage_core_nano_seconds),
    );
    let node_memory = total(stats.iter().map(|p| p.memory.as_ref()?.working_set_bytes));
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        node_cpu
            .map(|v| (String::new(), seconds(v).to_string(), String::new()))
            .into_iter()
            .collect(),
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        node_memory
            .map(|v| (String::new(), v.to_string(), String::new()))
            .into_iter()
            .collect(),
    );
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pod_cpu,
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        pod_memory,
    );
    out
}

/// `GET /metrics/resource`.
pub async fn resource_metrics(api: &KubeletApi) -> Response<Body> {
    let (body, scrape_error) = match stats(api).await {
        Ok(stats) => (resource_metrics_text(&stats), 0),
        Err(_) => (String::new(), 1),
    };
    let body = format!(
        "{body}# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\nscrape_error {scrape_error}\n"
    );
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_query_follows_kubernetes_conversion() {
        let r = pb::PodRef::default();
        let req = logs_request(
            r.clone(),
            "c",
            Some(
                "follow=true&tailLines=5&timestamps=1&limitBytes=10&sinceSeconds=60&previous=false",
            ),
        )
        .expect("valid");
        assert!(req.follow && req.timestamps && !req.previous);
        assert_eq!(
            (req.tail_lines, req.limit_bytes, req.since_seconds),
            (Some(5), Some(10), Some(60))
        );
        let req =
            logs_request(r.clone(), "c", Some("sinceTime=2026-11-23T10:00:00Z")).expect("valid");
        assert_eq!(req.since_time.map(|t| t.seconds), Some(1_795_428_000));
        assert!(logs_request(r.clone(), "c", Some("tailLines=x")).is_err());
        assert!(logs_request(r.clone(), "c", Some("tailLines=-1")).is_err());
        assert!(logs_request(r, "c", Some("sinceTime=yesterday")).is_err());
    }

    #[test]
    fn metrics_use_kubelet_names_and_labels() {
        let stats = vec![pb::PodStats {
            pod_ref: Some(pb::PodRef {
                namespace: "ns".into(),
                name: "p\"1".into(),
                uid: "u".into(),
            }),
            time: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 5_000_000,
            }),
            cpu: Some(pb::CpuUsage {
                usage_nano_cores: Some(1),
                usage_core_nano_seconds: Some(2_500_000_000),
            }),
            memory: Some(pb::MemoryUsage {
                working_set_bytes: Some(1024),
                ..Default::default()
            }),
            containers: vec![pb::ContainerStats {
                name: "c".into(),
                time: None,
                cpu: Some(pb::CpuUsage {
                    usage_nano_cores: None,
                    usage_core_nano_seconds: Some(1_000_000_000),
                }),
                memory: Some(pb::MemoryUsage {
                    working_set_bytes: Some(512),
                    ..Default::default()
                }),
            }],
        }];
        let text = resource_metrics_text(&stats);
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"ns\",pod=\"p\\\"1\"} 1 10005"
        ), "{text}");
        assert!(text.contains(
            "container_memory_working_set_bytes{container=\"c\",namespace=\"ns\",pod=\"p\\\"1\"} 512 10005"
        ));
        assert!(
            text.contains("pod_cpu_usage_seconds_total{namespace=\"ns\",pod=\"p\\\"1\"} 2.5 10005")
        );
        assert!(text.contains("node_memory_working_set_bytes 1024\n"));
        assert!(text.contains("# TYPE node_cpu_usage_seconds_total counter"));
    }
}

/// Arbitrary `/containerLogs` queries: no panic; each value is taken as the kubelet takes it or
/// refused with a message that names it.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const NUMBERS: [&str; 3] = ["tailLines", "sinceSeconds", "limitBytes"];
    const FLAGS: [&str; 3] = ["follow", "timestamps", "previous"];

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(NUMBERS.to_vec()).prop_map(str::to_owned),
            prop::sample::select(FLAGS.to_vec()).prop_map(str::to_owned),
            Just("sinceTime".to_owned()),
            ".{0,6}",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            Just("-0".to_owned()),
            Just("+5".to_owned()),
            Just(" 5".to_owned()),
            Just("99999999999999999999".to_owned()),
            Just("false".to_owned()),
            Just("FaLsE".to_owned()),
            Just("0".to_owned()),
            Just(String::new()),
            Just("2026-11-23T10:00:00Z".to_owned()),
            Just("2026-11-23T10:00:00.123456789+05:30".to_owned()),
            Just("9999-12-31T23:59:59Z".to_owned()),
            Just("2016-12-31T23:59:60Z".to_owned()),
            Just("0000-01-01T00:00:00Z".to_owned()),
            "[0-9T:.Z+-]{0,30}",
            any::<String>(),
        ]
    }

    /// What a query parameter means to the kubelet: absent, `false`/`0`, else true.
    fn flag_model(v: Option<&String>) -> bool {
        v.is_some_and(|v| !v.eq_ignore_ascii_case("false") && v != "0")
    }

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        #[test]
        fn fuzz_logs_query_arbitrary_strings(query in any::<String>()) {
            let _ = logs_request(pb::PodRef::default(), "c", Some(&query));
        }

        #[test]
        fn fuzz_logs_query_values(pairs in prop::collection::vec((key(), value()), 0..8)) {
            let query = pairs
                .iter()
                .map(|(k, v)| {
                    let k: String = form_urlencoded::byte_serialize(k.as_bytes()).collect();
                    let v: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join("&");
            // The last value of a key wins.
            let last: HashMap<&str, &String> =
                pairs.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let number_ok = |k: &str| last.get(k).is_none_or(|v| v.parse::<i64>().is_ok_and(|n| n >= 0));
            match logs_request(pb::PodRef::default(), "c", Some(&query)) {
                Ok(req) => {
                    for (k, got) in NUMBERS.iter().zip([req.tail_lines, req.since_seconds, req.limit_bytes]) {
                        prop_assert_eq!(got, last.get(k).map(|v| v.parse::<i64>().unwrap_or(-1)), "{}", k);
                        prop_assert!(got.is_none_or(|n| n >= 0));
                    }
                    for (k, got) in FLAGS.iter().zip([req.follow, req.timestamps, req.previous]) {
                        prop_assert_eq!(got, flag_model(last.get(k).copied()), "{}", k);
                    }
                    prop_assert_eq!(req.since_time.is_some(), last.contains_key("sinceTime"));
                    if let Some(t) = req.since_time {
                        prop_assert!((0..1_000_000_000).contains(&t.nanos));
                    }
                }
                Err(msg) => {
                    let named = NUMBERS.iter().any(|k| !number_ok(k) && msg.contains(k))
                        || (msg.contains("sinceTime") && last.contains_key("sinceTime"));
                    prop_assert!(named, "{:?} for {:?}", msg, query);
                }
            }
            // Every number valid and no sinceTime: nothing to refuse.
            if NUMBERS.iter().all(|k| number_ok(k)) && !last.contains_key("sinceTime") {
                prop_assert!(logs_request(pb::PodRef::default(), "c", Some(&query)).is_ok());
            }
        }
    }
}
