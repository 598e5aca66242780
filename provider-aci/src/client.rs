//! The ARM REST calls on `Microsoft.ContainerInstance/containerGroups` (api-version 2023-05-01),
//! each retried with `provider_common::retry` (429 with Retry-After, 5xx, connection failures)
//! and with a fresh token after a 401.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use provider_common::retry::{RetryPolicy, retry};
use serde::de::DeserializeOwned;

use crate::{
    auth::TokenSource,
    error::{AzureError, Kind, parse_retry_after},
    http::Http,
    http::Reply,
    wire::{
        ContainerGroup, ExecRequest, ExecResponse, GroupList, Logs, MetricsResponse,
        OperationStatus, TerminalSize,
    },
};

/// What a DELETE of a group did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Gone (200).
    Deleted,
    /// There was no such group (204, 404).
    NotFound,
    /// Accepted (202): under way, its outcome at `operation` if ARM gave one.
    Accepted { operation: Option<String> },
}

/// The API version every call uses.
pub const API_VERSION: &str = "2023-05-01";

/// Azure Monitor's Metrics - List: the stable version the SDKs have used longest.
pub const METRICS_API_VERSION: &str = "2018-01-01";

/// Where the container groups live.
#[derive(Clone, Debug)]
pub struct Scope {
    /// ARM endpoint, e.g. `https://management.azure.com`.
    pub endpoint: String,
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
}

/// The ARM client.
#[derive(Clone, Debug)]
pub struct Arm {
    http: Http,
    tokens: Arc<TokenSource>,
    scope: Scope,
    /// Retry policy of every call.
    pub policy: RetryPolicy,
}

/// The scheme, host and port of a URL (`None` when it has no host).
fn origin(u: &url::Url) -> Option<(String, String, u16)> {
    Some((
        u.scheme().to_ascii_lowercase(),
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default()?,
    ))
}

/// Refuses a `nextLink` outside the configured ARM endpoint: following it would send the bearer
/// token to whatever host the page named.
fn check_next_link(op: &'static str, endpoint: &str, next: &str) -> Result<(), AzureError> {
    check_same_origin(op, endpoint, next, "a nextLink")
}

/// `url` must be on the ARM endpoint (scheme, host, port): the request would carry the token.
fn check_same_origin(
    op: &'static str,
    endpoint: &str,
    next: &str,
    what: &str,
) -> Result<(), AzureError> {
    let arm = url::Url::parse(endpoint).ok().as_ref().and_then(origin);
    let link = url::Url::parse(next).ok();
    let target = link.as_ref().and_then(origin);
    if arm.is_some() && arm == target {
        return Ok(());
    }
    let host = link
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "an unreadable URL".into());
    Err(crate::error::failed(
        op,
        Kind::Other,
        "ForeignNextLink",
        format!(
            "ARM answered with {what} to {host}, not to the configured ARM endpoint {endpoint}: refusing to follow it (the request would carry the access token)"
        ),
    )
    .with_status(200))
}

/// One list entry as a group, or `None` (logged) when it does not have a group's shape: one
/// unreadable group must not stop the status of all the others.
fn read_listed(entry: serde_json::Value) -> Option<ContainerGroup> {
    let label = |key: &str| {
        entry
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let (name, id) = (label("name"), label("id"));
    match serde_json::from_value(entry) {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(group = %name, id = %id, error = %without_values(&e.to_string()), "skipping a container group that cannot be read");
            None
        }
    }
}

/// One page of a group list: the groups that can be read (the others skipped, logged) and the
/// next page's link, if any. Only an answer that is not a list page at all is an error.
fn read_page(
    op: &'static str,
    body: &[u8],
) -> Result<(Vec<ContainerGroup>, Option<String>), AzureError> {
    let page: GroupList = Arm::parse(op, body)?;
    let groups = page.value.into_iter().filter_map(read_listed).collect();
    Ok((groups, page.next_link.filter(|l| !l.is_empty())))
}

/// A serde error without the values it quotes (a foreign group's fields are none of our logs'
/// business): `invalid type: string "x"` becomes `invalid type: string "…"`.
fn without_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quote: Option<char> = None;
    for c in msg.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    quote = Some(c);
                }
            }
        }
    }
    out
}

/// RFC 3986 unreserved characters stay as they are (`-._~` must not be encoded).
pub const UNRESERVED: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

impl Arm {
    /// A client for `scope`.
    pub fn new(http: Http, tokens: Arc<TokenSource>, scope: Scope, policy: RetryPolicy) -> Self {
        Self {
            http,
            tokens,
            scope,
            policy,
        }
    }

    /// The shared HTTP client (its TLS settings serve the exec WebSocket).
    pub fn http(&self) -> &Http {
        &self.http
    }

    fn groups_url(&self) -> String {
        format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerInstance/containerGroups",
            self.scope.endpoint.trim_end_matches('/'),
            enc(&self.scope.subscription),
            enc(&self.scope.resource_group)
        )
    }

    fn group_url(&self, name: &str) -> String {
        format!("{}/{}", self.groups_url(), enc(name))
    }

    /// One attempt: token, request, classification. A 401 drops the cached token and is retried.
    async fn attempt(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<Reply, AzureError> {
        let token = self.tokens.token().await?;
        let mut headers = vec![(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                crate::error::transport(op, "Azure AD returned a token that is not a header value")
            })?,
        )];
        if body.is_some() {
            headers.push((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
        }
        let reply = self.http.send(op, method, url, headers, body).await?;
        if reply.status.is_success() {
            return Ok(reply);
        }
        let retry_after = parse_retry_after(reply.headers.get(header::RETRY_AFTER));
        let mut err =
            crate::error::from_response(op, reply.status.as_u16(), retry_after, &reply.body);
        if reply.status == StatusCode::UNAUTHORIZED {
            // An expired or revoked token: the next attempt fetches a new one.
            self.tokens.invalidate().await;
            err.kind = Kind::Unavailable;
        }
        Err(err)
    }

    async fn call(
        &self,
        op: &'static str,
        method: Method,
        url: String,
        body: Option<Bytes>,
    ) -> Result<Reply, AzureError> {
        // A 401 is retried once, with a fresh token; a second one is final.
        let unauthorized = AtomicBool::new(false);
        let result = retry(&self.policy, op, || async {
            let attempt = self.attempt(op, method.clone(), &url, body.clone()).await;
            match attempt {
                Err(mut e) if e.status == 401 && unauthorized.swap(true, Ordering::Relaxed) => {
                    e.kind = Kind::Unauthenticated;
                    Err(e)
                }
                other => other,
            }
        })
        .await;
        // A 401 that persists is an authentication failure, not an outage.
        result.map_err(|mut e| {
            if e.status == 401 {
                e.kind = Kind::Unauthenticated;
            }
            e
        })
    }

    fn parse<T: DeserializeOwned>(op: &'static str, body: &[u8]) -> Result<T, AzureError> {
        serde_json::from_slice(body).map_err(|e| {
            crate::error::failed(
                op,
                Kind::Other,
                "UnreadableResponse",
                format!("cannot read ARM's answer: {e}"),
            )
            .with_status(200)
        })
    }

    /// Container Groups - Create Or Update (PUT; idempotent for an unchanged body).
    pub async fn put_group(
        &self,
        name: &str,
        group: &ContainerGroup,
    ) -> Result<ContainerGroup, AzureError> {
        const OP: &str = "ContainerGroups_CreateOrUpdate";
        let body = serde_json::to_vec(group)
            .map_err(|e| crate::error::failed(OP, Kind::Other, "EncodeFailed", e.to_string()))?;
        let url = format!("{}?api-version={API_VERSION}", self.group_url(name));
        let reply = self
            .call(OP, Method::PUT, url, Some(Bytes::from(body)))
            .await?;
        Self::parse(OP, &reply.body)
    }

    /// Container Groups - Get; `None` when it does not exist.
    pub async fn get_group(&self, name: &str) -> Result<Option<ContainerGroup>, AzureError> {
        const OP: &str = "ContainerGroups_Get";
        let url = format!("{}?api-version={API_VERSION}", self.group_url(name));
        match self.call(OP, Method::GET, url, None).await {
            Ok(reply) => Ok(Some(Self::parse(OP, &reply.body)?)),
            Err(e) if e.kind == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Container Groups - Delete; `false` when it did not exist.
    /// ContainerGroups_Delete, a long-running operation: 200 (deleted), 204 (not there) or 202
    /// (accepted; its outcome at the `Azure-AsyncOperation` URL, else `Location`).
    pub async fn delete_group(&self, name: &str) -> Result<Deletion, AzureError> {
        const OP: &str = "ContainerGroups_Delete";
        let url = format!("{}?api-version={API_VERSION}", self.group_url(name));
        match self.call(OP, Method::DELETE, url, None).await {
            Ok(r) if r.status == StatusCode::NO_CONTENT => Ok(Deletion::NotFound),
            Ok(r) if r.status == StatusCode::ACCEPTED => {
                let header = |h: &str| {
                    r.headers
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                };
                Ok(Deletion::Accepted {
                    operation: header("azure-asyncoperation").or_else(|| header("location")),
                })
            }
            Ok(_) => Ok(Deletion::Deleted),
            Err(e) if e.kind == Kind::NotFound => Ok(Deletion::NotFound),
            Err(e) => Err(e),
        }
    }

    /// The status of an asynchronous operation (`Azure-AsyncOperation` URL): `InProgress`,
    /// `Succeeded`, `Failed` or `Canceled`, with the error's code and message if it failed.
    /// Only URLs on the configured ARM endpoint are asked: the request carries the token.
    pub async fn operation_status(&self, url: &str) -> Result<OperationStatus, AzureError> {
        const OP: &str = "AsyncOperation_Get";
        check_same_origin(
            OP,
            &self.scope.endpoint,
            url,
            "an asynchronous operation URL",
        )?;
        let reply = self.call(OP, Method::GET, url.to_owned(), None).await?;
        // A Location URL answers 202 while in progress and 200/204 once done, maybe without a
        // body; an Azure-AsyncOperation URL always has the status body.
        if reply.body.is_empty() {
            let status = if reply.status == StatusCode::ACCEPTED {
                "InProgress"
            } else {
                "Succeeded"
            };
            return Ok(OperationStatus {
                status: status.into(),
                error: None,
            });
        }
        Self::parse(OP, &reply.body)
    }

    /// Container Groups - List By Resource Group, every page. A `nextLink` is followed only on
    /// the configured ARM endpoint (the bearer token goes with it) and never twice.
    pub async fn list_groups(&self) -> Result<Vec<ContainerGroup>, AzureError> {
        const OP: &str = "ContainerGroups_ListByResourceGroup";
        let mut url = format!("{}?api-version={API_VERSION}", self.groups_url());
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        loop {
            let reply = self.call(OP, Method::GET, url.clone(), None).await?;
            let (groups, next) = read_page(OP, &reply.body)?;
            out.extend(groups);
            let Some(next) = next else {
                return Ok(out);
            };
            check_next_link(OP, &self.scope.endpoint, &next)?;
            if !seen.insert(next.clone()) {
                return Err(crate::error::failed(
                    OP,
                    Kind::Other,
                    "NextLinkLoop",
                    "ARM's list returned a nextLink it had already returned",
                )
                .with_status(200));
            }
            url = next;
        }
    }

    /// Containers - List Logs: the container's log text (optionally the last `tail` lines, with
    /// timestamps).
    pub async fn logs(
        &self,
        group: &str,
        container: &str,
        tail: Option<i64>,
        timestamps: bool,
    ) -> Result<String, AzureError> {
        const OP: &str = "Containers_ListLogs";
        let mut url = format!(
            "{}/containers/{}/logs?api-version={API_VERSION}",
            self.group_url(group),
            enc(container)
        );
        if let Some(t) = tail {
            url.push_str(&format!("&tail={t}"));
        }
        if timestamps {
            url.push_str("&timestamps=true");
        }
        let reply = self.call(OP, Method::GET, url, None).await?;
        let logs: Logs = Self::parse(OP, &reply.body)?;
        Ok(logs.content.unwrap_or_default())
    }

    /// Containers - Execute Command: a WebSocket URI and its password for one executable.
    /// Metrics - List (Azure Monitor) of group `name`: `CpuUsage` (millicores) and `MemoryUsage`
    /// (bytes), `Average` per minute over the last `window`, one series per container
    /// (`$filter=containerName eq '*'`).
    pub async fn metrics(
        &self,
        name: &str,
        window: std::time::Duration,
    ) -> Result<MetricsResponse, AzureError> {
        const OP: &str = "Metrics_List";
        let now = time::OffsetDateTime::now_utc();
        let from = now - window;
        let fmt = |t: time::OffsetDateTime| {
            t.replace_nanosecond(0)
                .unwrap_or(t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let timespan = format!("{}/{}", fmt(from), fmt(now));
        let url = format!(
            "{}/providers/Microsoft.Insights/metrics?api-version={METRICS_API_VERSION}&metricnames=CpuUsage,MemoryUsage&aggregation=Average&interval=PT1M&timespan={}&$filter={}",
            self.group_url(name),
            enc(&timespan),
            enc("containerName eq '*'")
        );
        let reply = self.call(OP, Method::GET, url, None).await?;
        Self::parse(OP, &reply.body)
    }

    /// Containers - Attach: a WebSocket URI and password for the container's output stream.
    pub async fn attach(&self, group: &str, container: &str) -> Result<ExecResponse, AzureError> {
        const OP: &str = "Containers_Attach";
        let url = format!(
            "{}/containers/{}/attach?api-version={API_VERSION}",
            self.group_url(group),
            enc(container)
        );
        let reply = self.call(OP, Method::POST, url, None).await?;
        Self::parse(OP, &reply.body)
    }

    pub async fn exec(
        &self,
        group: &str,
        container: &str,
        command: &str,
        size: TerminalSize,
    ) -> Result<ExecResponse, AzureError> {
        const OP: &str = "Containers_ExecuteCommand";
        let url = format!(
            "{}/containers/{}/exec?api-version={API_VERSION}",
            self.group_url(group),
            enc(container)
        );
        let body = serde_json::to_vec(&ExecRequest {
            command: command.to_owned(),
            terminal_size: size,
        })
        .map_err(|e| crate::error::transport(OP, e.to_string()))?;
        let reply = self
            .call(OP, Method::POST, url, Some(Bytes::from(body)))
            .await?;
        Self::parse(OP, &reply.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_followed_only_on_the_arm_endpoint() {
        let arm = "https://management.azure.com";
        let ok = format!(
            "{arm}/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups?api-version=2023-05-01&$skiptoken=x"
        );
        assert!(check_next_link("op", arm, &ok).is_ok());
        assert!(check_next_link("op", "https://MANAGEMENT.azure.com/", &ok).is_ok());
        assert!(
            check_next_link(
                "op",
                arm,
                "https://management.azure.com:443/subscriptions/s"
            )
            .is_ok()
        );
        for bad in [
            "https://evil.example/subscriptions/s",
            "http://management.azure.com/subscriptions/s",
            "https://management.azure.com:8443/subscriptions/s",
            "https://management.azure.com.evil.example/subscriptions/s",
            "/subscriptions/s",
            "not a url",
        ] {
            let e = check_next_link("op", arm, bad).expect_err(bad);
            assert_eq!(e.code, "ForeignNextLink");
            assert!(e.message.contains("refusing"), "{}", e.message);
        }
    }

    #[test]
    fn a_malformed_list_entry_is_skipped_and_its_values_stay_out_of_the_log() {
        let ok = serde_json::json!({"name": "ours", "properties": {"containers": [
            {"name": "web", "properties": {"image": "nginx",
                "livenessProbe": {"exec": {}, "httpGet": {"port": 80, "httpHeaders": [{}]}}}}
        ]}});
        let bad = serde_json::json!({"name": "theirs", "properties": {"containers": "s3cret"}});
        let groups: Vec<ContainerGroup> = [bad, ok].into_iter().filter_map(read_listed).collect();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name.as_deref(), Some("ours"));
        let e = serde_json::from_value::<ContainerGroup>(
            serde_json::json!({"properties": {"containers": "s3cret"}}),
        )
        .expect_err("malformed");
        let logged = without_values(&e.to_string());
        assert!(!logged.contains("s3cret"), "{logged}");
        assert!(logged.contains("invalid type"), "{logged}");
    }
}

/// Fuzzing ARM's answers: any bytes, any JSON and realistic answers with random parts replaced
/// by arbitrary JSON go through the same reading and status code as a real poll. Nothing may
/// panic; an entry that cannot be read is skipped without costing the others.
#[cfg(test)]
mod fuzz {
    use proptest::{collection::vec, prelude::*, test_runner::TestCaseError};
    use serde_json::{Value, json};

    use super::*;
    use crate::{status, wire};

    use provider_common::arbitrary::{self, Vocabulary, run};

    /// ACI's words, so arbitrary objects often hit real fields.
    const ACI: Vocabulary = Vocabulary {
        keys: &[
            "name",
            "id",
            "tags",
            "properties",
            "containers",
            "initContainers",
            "instanceView",
            "currentState",
            "previousState",
            "state",
            "exitCode",
            "startTime",
            "finishTime",
            "detailStatus",
            "restartCount",
            "events",
            "count",
            "firstTimestamp",
            "lastTimestamp",
            "message",
            "type",
            "provisioningState",
            "ipAddress",
            "ip",
            "value",
            "nextLink",
            "timeseries",
            "metadatavalues",
            "data",
            "average",
            "timeStamp",
        ],
        strings: &[
            "Running",
            "Terminated",
            "Waiting",
            "Succeeded",
            "Failed",
            "Stopped",
            "Canceled",
            "CpuUsage",
            "containername",
        ],
    };

    fn json_value() -> BoxedStrategy<Value> {
        arbitrary::json_value(ACI)
    }

    fn mutated(template: Value, max: usize) -> BoxedStrategy<Value> {
        arbitrary::mutated(template, max, ACI)
    }

    fn state(s: &str, exit: Option<i32>) -> Value {
        json!({"state": s, "startTime": "2024-01-01T00:00:00Z", "exitCode": exit,
               "finishTime": "2024-01-01T00:05:00.5Z", "detailStatus": "CrashLoopBackOff: Back-off"})
    }

    /// A group as Get answers it, with everything the status code reads.
    fn group_template(i: usize) -> Value {
        let events = json!([
            {"name": "Pulled", "type": "Normal", "count": 2, "message": "pulled",
             "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:01:00Z"},
            {"name": "FailedMount", "type": "Warning", "count": 1, "message": "mount error"}
        ]);
        let view = |s: &str, exit| {
            json!({"restartCount": 3, "currentState": state(s, exit),
                   "previousState": state("Terminated", Some(137)), "events": events.clone()})
        };
        json!({
            "id": format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g{i}"),
            "name": format!("g{i}"),
            "location": "westeurope",
            "tags": {"vk-pod-namespace": "ns", "vk-pod-name": format!("p{i}"),
                     "vk-pod-uid": format!("u{i}"), "vk-node": "vk", "vk-cluster": "c"},
            "properties": {
                "provisioningState": "Succeeded",
                "restartPolicy": "OnFailure",
                "osType": "Linux",
                "ipAddress": {"ip": "10.0.0.4", "type": "Private", "ports": [{"port": 80, "protocol": "TCP"}]},
                "instanceView": {"state": "Running", "events": events.clone()},
                "initContainers": [{"name": "init", "properties": {"image": "busybox",
                    "instanceView": view("Terminated", Some(0))}}],
                "containers": [
                    {"name": "web", "properties": {"image": "nginx",
                        "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}},
                        "instanceView": view("Running", None)}},
                    {"name": "side", "properties": {"image": "envoy",
                        "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}},
                        "instanceView": view("Waiting", None)}}
                ]
            }
        })
    }

    fn pod_ref() -> podprovider_proto::v1::PodRef {
        podprovider_proto::v1::PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        }
    }

    /// Everything a poll does with a group it has read.
    fn use_group(g: &ContainerGroup) -> Result<(), TestCaseError> {
        let r = pod_ref();
        let s = status::pod_status(&r, g);
        prop_assert_eq!(s.container_statuses.len(), g.properties.containers.len());
        prop_assert_eq!(
            s.init_container_statuses.len(),
            g.properties.init_containers.len()
        );
        for e in status::events(&r, g) {
            prop_assert!(e.count >= 1);
            prop_assert!(!e.event.reason.is_empty());
        }
        for ip in s
            .pod_ips
            .iter()
            .chain([&s.pod_ip])
            .filter(|i| !i.is_empty())
        {
            prop_assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{:?}", ip);
        }
        let _ = status::accepted(&r, g, "id");
        let window = crate::provider::since_start(Some(g));
        prop_assert!(window >= std::time::Duration::from_secs(600));
        prop_assert!(window <= std::time::Duration::from_secs(86_400));
        let _ = provider_common::naming::pod_from_tags(
            g.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        // The fingerprint a poll keeps of each entry.
        let _ = serde_json::to_string(g).unwrap_or_default();
        Ok(())
    }

    /// Any bytes as an answer of each call: parsed or refused as unreadable, never a panic.
    #[test]
    fn fuzz_answers_arbitrary_bytes() {
        let bytes = || arbitrary::answer_bytes(ACI);
        run(bytes, |body| {
            const OP: &str = "op";
            match read_page(OP, &body) {
                Ok((groups, next)) => {
                    prop_assert!(next.is_none_or(|n| !n.is_empty()));
                    for g in &groups {
                        use_group(g)?;
                    }
                }
                Err(e) => prop_assert_eq!(e.code.as_str(), "UnreadableResponse"),
            }
            if let Ok(g) = Arm::parse::<ContainerGroup>(OP, &body) {
                use_group(&g)?;
            }
            if let Ok(m) = Arm::parse::<MetricsResponse>(OP, &body) {
                let _ = status::pod_stats(&pod_ref(), &m);
            }
            let _ = Arm::parse::<OperationStatus>(OP, &body);
            let _ = Arm::parse::<Logs>(OP, &body);
            let _ = Arm::parse::<ExecResponse>(OP, &body);
            for code in [400, 401, 404, 409, 429, 500, 503] {
                let e = crate::error::from_response(OP, code, None, &body);
                let _ = e.to_status();
            }
            Ok(())
        });
    }

    /// A list page of realistic groups, some with random parts replaced: every untouched group
    /// is read, the others are read or skipped, and whatever is read goes through the status
    /// code without a panic.
    #[test]
    fn fuzz_list_pages_skip_only_the_broken_entries() {
        let page = || {
            (
                vec((mutated(group_template(0), 4), any::<bool>()), 1..5),
                prop_oneof![
                    Just(Value::Null),
                    Just(json!("")),
                    Just(json!("https://management.azure.com/next")),
                    json_value()
                ],
            )
        };
        run(page, |(entries, next)| {
            let mut value = Vec::new();
            let mut intact = Vec::new();
            for (i, (mutated, keep)) in entries.into_iter().enumerate() {
                // Each entry named apart so the untouched ones can be found in the result.
                let name = format!("intact{i}");
                let mut g = if keep { group_template(i) } else { mutated };
                if keep {
                    g["name"] = json!(name);
                    intact.push(name);
                }
                value.push(g);
            }
            let body =
                serde_json::to_vec(&json!({"value": value, "nextLink": next})).expect("encode");
            match read_page("op", &body) {
                Ok((groups, _)) => {
                    for want in &intact {
                        prop_assert!(
                            groups.iter().any(|g| g.name.as_deref() == Some(want)),
                            "{} was skipped",
                            want
                        );
                    }
                    for g in &groups {
                        use_group(g)?;
                    }
                }
                // Only a nextLink of the wrong type makes the page itself unreadable.
                Err(e) => {
                    prop_assert_eq!(e.code.as_str(), "UnreadableResponse");
                    prop_assert!(!next.is_null() && !next.is_string(), "{}", e);
                }
            }
            Ok(())
        });
    }

    /// Get's answer (one group, all instance views) with random parts replaced.
    #[test]
    fn fuzz_group_answers_never_panic() {
        run(
            || mutated(group_template(0), 8),
            |v| {
                let body = serde_json::to_vec(&v).expect("encode");
                if let Ok(g) = Arm::parse::<ContainerGroup>("op", &body) {
                    use_group(&g)?;
                }
                Ok(())
            },
        );
    }

    /// Azure Monitor's answer with random parts replaced: figures, when any, are never negative
    /// and never wrap.
    #[test]
    fn fuzz_metrics_answers_never_panic() {
        let series = |metric: &str| {
            json!({"name": {"value": metric}, "timeseries": [
                {"metadatavalues": [{"name": {"value": "containername"}, "value": "web"}],
                 "data": [{"timeStamp": "2024-01-01T00:00:00Z", "average": 100.0},
                          {"timeStamp": "2024-01-01T00:01:00Z", "average": 250.5},
                          {"timeStamp": "2024-01-01T00:02:00Z"}]},
                {"metadatavalues": [], "data": [{"timeStamp": "2024-01-01T00:01:00Z", "average": 1e18}]}
            ]})
        };
        let template = json!({"value": [series("CpuUsage"), series("MemoryUsage")]});
        run(
            move || mutated(template, 6),
            |v| {
                let body = serde_json::to_vec(&v).expect("encode");
                if let Ok(m) = Arm::parse::<wire::MetricsResponse>("op", &body)
                    && let Some(s) = status::pod_stats(&pod_ref(), &m)
                {
                    let sum: u128 = s
                        .containers
                        .iter()
                        .filter_map(|c| c.cpu.and_then(|c| c.usage_nano_cores))
                        .map(u128::from)
                        .sum();
                    let pod = s.cpu.and_then(|c| c.usage_nano_cores).map(u128::from);
                    // The pod's figure is the (saturating) sum of its containers'.
                    if !s.containers.is_empty() && pod.is_some() {
                        prop_assert!(pod >= Some(sum.min(u128::from(u64::MAX))));
                    }
                }
                Ok(())
            },
        );
    }
}
