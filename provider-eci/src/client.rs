//! The ECI RPC client: every call signed with ACS3-HMAC-SHA256 (re-signed per attempt, so each
//! retry has a fresh nonce and date), retried by `provider_common::retry`, errors classified by
//! `error.rs`. Parameter values (environment, file contents, registry passwords) travel in the
//! query string and are never logged: only the operation name is.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use provider_common::retry::{RetryPolicy, retry};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    credentials::CredentialProvider,
    error::{EciError, Kind},
    params::flatten,
    signing, wire,
};

/// The ECI API version.
pub const API_VERSION: &str = "2018-08-08";
/// Page size of `DescribeContainerGroups` (its documented maximum).
const GROUPS_PAGE: u32 = 20;
/// Page size of `DescribeContainerGroupStatus` (its documented default).
const STATUS_PAGE: u32 = 200;
/// Deadline of one HTTP attempt, from sending the request to the last byte of the answer (a
/// server that sends headers and then stalls must not hold a call forever).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read into memory; bigger is an error, not an allocation. ECI's largest answers
/// (a 200-group status page, a container log) are far smaller.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Longest request URI this client can send: the `http` crate refuses a longer one ("uri too
/// long"), and an RPC-style call carries every parameter in the query string, so it bounds a
/// whole request (a pod's env values, files and commands included).
pub const MAX_URI_BYTES: usize = 65_534;
/// Longest parameter query a planned request may have: [`MAX_URI_BYTES`] less room for the
/// endpoint (`https://eci-vpc.<region>.aliyuncs.com/?`) and what each call adds (`RegionId`).
pub const MAX_QUERY_BYTES: usize = MAX_URI_BYTES - 512;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// An ECI endpoint and the credentials to call it with.
#[derive(Clone)]
pub struct Cloud {
    http: HyperClient<Https, Full<Bytes>>,
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    /// `host[:port]` as signed and sent.
    host: String,
    creds: CredentialProvider,
    /// Region (`RegionId` of every call).
    pub region: String,
    /// Retry policy of every call.
    pub policy: RetryPolicy,
    /// [`ATTEMPT_TIMEOUT`], shorter in tests.
    attempt_timeout: Duration,
}

/// The endpoint for `region`: regional public (`eci.<region>.aliyuncs.com`) or VPC
/// (`eci-vpc.<region>.aliyuncs.com`), over HTTPS.
pub fn default_endpoint(region: &str, vpc: bool) -> String {
    if vpc {
        format!("https://eci-vpc.{region}.aliyuncs.com")
    } else {
        format!("https://eci.{region}.aliyuncs.com")
    }
}

/// One page of `DescribeContainerGroups` filtered by `tags`.
pub struct GroupFilter<'a> {
    /// Tags every group must have.
    pub tags: &'a [(String, String)],
    /// Only the group with this name.
    pub name: Option<&'a str>,
    /// Only these groups (`ContainerGroupIds`, at most 20).
    pub ids: Option<&'a [String]>,
    /// Ask for the groups' events (`WithEvent`; without it ECI leaves `Events` out).
    pub with_events: bool,
}

impl Cloud {
    /// A client for `endpoint` (`http(s)://host[:port]`).
    pub fn new(
        endpoint: &str,
        region: &str,
        creds: CredentialProvider,
        policy: RetryPolicy,
    ) -> Result<Self, String> {
        let url =
            url::Url::parse(endpoint).map_err(|e| format!("bad endpoint {endpoint:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("endpoint {endpoint:?} has no host"))?;
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            http: HyperClient::builder(TokioExecutor::new()).build(https),
            base: format!("{}://{host}", url.scheme()),
            host,
            creds,
            region: region.to_owned(),
            policy,
            attempt_timeout: ATTEMPT_TIMEOUT,
        })
    }

    /// One signed attempt of `action` with `params` (RegionId added).
    async fn once(
        &self,
        action: &'static str,
        params: &BTreeMap<String, String>,
    ) -> Result<Value, EciError> {
        let date = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| crate::error::transport(action, e))?;
        let nonce = format!("{:032x}", rand::random::<u128>());
        // Per attempt: temporary credentials may have been replaced since the last one.
        let creds = self.creds.get().await?;
        let (headers, query) = signing::sign(
            &creds,
            &signing::RpcRequest {
                method: "POST",
                host: &self.host,
                action,
                version: API_VERSION,
                query: params,
                date: &date,
                nonce: &nonce,
            },
        );
        let uri = format!("{}/?{query}", self.base);
        if uri.len() > MAX_URI_BYTES {
            // Not a transport failure: the same request can never be sent, so not retried.
            return Err(crate::error::request_too_large(action, uri.len()));
        }
        let mut req = http::Request::post(uri);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let mut trace = http::HeaderMap::new();
        vk_telemetry::propagation::inject_current(&mut trace);
        for (k, v) in &trace {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| crate::error::transport(action, e))?;
        let (status, retry_after, body) =
            tokio::time::timeout(self.attempt_timeout, self.exchange(action, req))
                .await
                .map_err(|_| crate::error::transport(action, "timed out"))??;
        if !(200..300).contains(&status) {
            let err = crate::error::from_response(action, status, &body, retry_after);
            tracing::debug!(call = action, code = %err.code, http = status, "ECI call failed");
            return Err(err);
        }
        parse_answer(action, &body)
    }

    /// Sends `req` and reads the whole answer, at most [`MAX_ANSWER_BYTES`] of it: status,
    /// Retry-After and body.
    async fn exchange(
        &self,
        action: &'static str,
        req: http::Request<Full<Bytes>>,
    ) -> Result<(u16, Option<Duration>, Bytes), EciError> {
        let too_large = || {
            crate::error::bad_answer(
                action,
                format_args!("an answer larger than {MAX_ANSWER_BYTES} bytes"),
            )
        };
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| crate::error::transport(action, e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // A declared length over the cap is refused before reading any of it.
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
            return Err(too_large());
        }
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    too_large()
                } else {
                    crate::error::transport(action, e)
                }
            })?
            .to_bytes();
        Ok((status, retry_after, body))
    }

    /// `action` with `request` (flattened), retried; the answer parsed as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        action: &'static str,
        mut request: Value,
    ) -> Result<T, EciError> {
        if let Value::Object(m) = &mut request {
            m.insert("RegionId".into(), Value::String(self.region.clone()));
        }
        let params = flatten(&request);
        let v = retry(&self.policy, action, || self.once(action, &params)).await?;
        read_answer(action, v)
    }

    /// Creates a group from `request` (built by `plan.rs`); returns its id.
    pub async fn create(&self, request: Value) -> Result<String, EciError> {
        let r: wire::CreateResponse = self.call("CreateContainerGroup", request).await?;
        if r.container_group_id.is_empty() {
            return Err(crate::error::bad_answer(
                "CreateContainerGroup",
                "no ContainerGroupId",
            ));
        }
        Ok(r.container_group_id)
    }

    /// Deletes a group; `Ok(false)` when ECI does not know it. `force` (`Force=true`) skips the
    /// graceful termination (preStop hooks and the grace period).
    pub async fn delete(&self, id: &str, force: bool) -> Result<bool, EciError> {
        let mut req = json!({ "ContainerGroupId": id });
        if force {
            req["Force"] = json!(true);
        }
        match self.call::<Value>("DeleteContainerGroup", req).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == Kind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every group matching `filter`, all pages (NextToken).
    pub async fn groups(&self, filter: &GroupFilter<'_>) -> Result<Vec<wire::Group>, EciError> {
        let tags: Vec<Value> = filter
            .tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut req = json!({ "Tag": tags, "Limit": GROUPS_PAGE });
            if let Some(name) = filter.name {
                req["ContainerGroupName"] = json!(name);
            }
            if let Some(ids) = filter.ids {
                // A JSON array in one parameter, as the reference shows it.
                req["ContainerGroupIds"] = json!(Value::from(ids.to_vec()).to_string());
            }
            if filter.with_events {
                req["WithEvent"] = json!(true);
            }
            if !token.is_empty() {
                req["NextToken"] = json!(token);
            }
            let page: wire::GroupsPage = self.call("DescribeContainerGroups", req).await?;
            let empty = page.container_groups.is_empty();
            out.extend(page.container_groups);
            if page.next_token.is_empty() || page.next_token == token || empty {
                return Ok(out);
            }
            token = page.next_token;
        }
    }

    /// Statuses of the groups with `tags`, all pages; with `since`, only groups whose status
    /// changed in the last `since` seconds.
    pub async fn statuses(
        &self,
        tags: &[(String, String)],
        since: Option<u64>,
    ) -> Result<Vec<wire::GroupStatus>, EciError> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut req = json!({ "Tag": tags, "Limit": STATUS_PAGE });
            if let Some(s) = since {
                req["SinceSecond"] = json!(s);
            }
            if !token.is_empty() {
                req["NextToken"] = json!(token);
            }
            let page: wire::StatusPage = self.call("DescribeContainerGroupStatus", req).await?;
            let empty = page.data.is_empty();
            out.extend(page.data);
            if page.next_token.is_empty() || page.next_token == token || empty {
                return Ok(out);
            }
            token = page.next_token;
        }
    }

    /// The latest usage figures of up to 20 groups (`DescribeMultiContainerGroupMetric`,
    /// `MetricType=summary`).
    pub async fn metrics(&self, ids: &[String]) -> Result<Vec<wire::MonitorData>, EciError> {
        let r: wire::MetricsResponse = self
            .call(
                "DescribeMultiContainerGroupMetric",
                json!({
                    "ContainerGroupIds": Value::from(ids.to_vec()).to_string(),
                    "MetricType": "summary",
                }),
            )
            .await?;
        Ok(r.monitor_datas)
    }

    /// A container's log per `DescribeContainerLog` options.
    pub async fn log(
        &self,
        id: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<String, EciError> {
        let mut req = json!({ "ContainerGroupId": id, "ContainerName": container });
        if let Some(t) = opts.tail {
            req["Tail"] = json!(t);
        }
        if let Some(s) = opts.since_seconds {
            req["SinceSeconds"] = json!(s);
        }
        if let Some(t) = &opts.start_time {
            req["StartTime"] = json!(t);
        }
        if let Some(b) = opts.limit_bytes {
            req["LimitBytes"] = json!(b);
        }
        if opts.timestamps {
            req["Timestamps"] = json!(true);
        }
        if opts.previous {
            // The log of the container's previous instance (after a restart).
            req["LastTime"] = json!(true);
        }
        let r: wire::LogResponse = self.call("DescribeContainerLog", req).await?;
        Ok(r.content)
    }

    /// Starts `command` in a container; returns the WebSocket URI to stream it over.
    pub async fn exec(
        &self,
        id: &str,
        container: &str,
        command: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<String, EciError> {
        let command = serde_json::to_string(command)
            .map_err(|e| crate::error::bad_answer("ExecContainerCommand", e))?;
        let r: wire::ExecResponse = self
            .call(
                "ExecContainerCommand",
                json!({
                    "ContainerGroupId": id,
                    "ContainerName": container,
                    "Command": command,
                    "TTY": tty,
                    "Stdin": stdin,
                    "Sync": false,
                }),
            )
            .await?;
        if r.web_socket_uri.is_empty() {
            return Err(crate::error::bad_answer(
                "ExecContainerCommand",
                "no WebSocketUri",
            ));
        }
        Ok(r.web_socket_uri)
    }
}

/// A successful answer's body as JSON (what one attempt hands the retry loop).
pub(crate) fn parse_answer(action: &'static str, body: &[u8]) -> Result<Value, EciError> {
    serde_json::from_slice(body).map_err(|e| crate::error::bad_answer(action, e))
}

/// An answer's JSON as the `api` type of its call.
pub(crate) fn read_answer<T: DeserializeOwned>(
    action: &'static str,
    v: Value,
) -> Result<T, EciError> {
    serde_json::from_value(v).map_err(|e| crate::error::bad_answer(action, e))
}

/// `DescribeContainerLog` options.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// Last N lines.
    pub tail: Option<i64>,
    /// Lines of the last N seconds.
    pub since_seconds: Option<i64>,
    /// Lines from this time (RFC 3339).
    pub start_time: Option<String>,
    /// At most this many bytes.
    pub limit_bytes: Option<i64>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
    /// The previous instance of a restarted container.
    pub previous: bool,
}

#[cfg(test)]
mod tests {
    use vk_testkit::http_stub::{endless_chunked, stall_after};

    use super::*;

    #[test]
    fn regional_and_vpc_endpoints() {
        assert_eq!(
            default_endpoint("cn-hangzhou", false),
            "https://eci.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            default_endpoint("ap-southeast-1", true),
            "https://eci-vpc.ap-southeast-1.aliyuncs.com"
        );
        // As main does: the workspace links both of rustls' crypto providers.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The host is signed as sent, port included.
        let c = Cloud::new(
            "http://127.0.0.1:8082",
            "cn-hangzhou",
            CredentialProvider::fixed(crate::signing::Credentials {
                access_key_id: "id".into(),
                access_key_secret: "secret".into(),
                security_token: None,
            })
            .expect("roots"),
            RetryPolicy::default(),
        )
        .expect("valid endpoint");
        assert_eq!(c.host, "127.0.0.1:8082");
        assert!(Cloud::new("ftp://x", "r", c.creds.clone(), RetryPolicy::default()).is_err());
    }

    /// A client of a local test server: one attempt, no retries, a short attempt deadline.
    fn local(addr: std::net::SocketAddr, attempt: Duration) -> Cloud {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut c = Cloud::new(
            &format!("http://{addr}"),
            "cn-hangzhou",
            CredentialProvider::fixed(crate::signing::Credentials {
                access_key_id: "id".into(),
                access_key_secret: "secret".into(),
                security_token: None,
            })
            .expect("roots"),
            RetryPolicy {
                max_retries: 0,
                ..RetryPolicy::default()
            },
        )
        .expect("valid endpoint");
        c.attempt_timeout = attempt;
        c
    }

    /// Answers one request `200 {}` and hands over its request line.
    async fn capture_once() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&seen);
            let _ = tx.send(text.lines().next().unwrap_or_default().to_owned());
            let body = "{}";
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
        });
        (addr, rx)
    }

    /// A call whose URI would exceed what the client can send is refused unsent, as an invalid
    /// request (it used to be a transport error: UNAVAILABLE, retried forever).
    #[tokio::test]
    async fn a_request_longer_than_a_uri_can_be_is_refused_unsent() {
        let (addr, line) = capture_once().await;
        let command = vec!["x".repeat(MAX_URI_BYTES)];
        let e = local(addr, Duration::from_secs(10))
            .exec("eci-1", "c", &command, false, false)
            .await
            .expect_err("too large");
        assert_eq!(e.kind, Kind::Invalid);
        assert!(!provider_common::retry::Retryable::is_retryable(&e));
        let s = e.to_status();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("RequestTooLarge"), "{}", s.message());
        assert!(
            tokio::time::timeout(Duration::from_millis(200), line)
                .await
                .is_err(),
            "the request was sent"
        );
    }

    #[tokio::test]
    async fn grace_zero_is_the_sdks_delete_container_group_force() {
        // DeleteContainerGroupRequest.Force: skip the graceful termination.
        let (addr, line) = capture_once().await;
        let found = local(addr, Duration::from_secs(10))
            .delete("eci-1", true)
            .await
            .expect("deleted");
        assert!(found);
        let line = line.await.expect("request line");
        assert!(
            line.contains("Force=true") && line.contains("ContainerGroupId=eci-1"),
            "{line}"
        );
        let (addr, line) = capture_once().await;
        local(addr, Duration::from_secs(10))
            .delete("eci-1", false)
            .await
            .expect("deleted");
        let line = line.await.expect("request line");
        assert!(!line.contains("Force"), "{line}");
    }

    #[tokio::test]
    async fn a_stalled_body_is_timed_out() {
        // Headers promptly, then one byte of a promised hundred and silence: the body is under
        // the attempt deadline too.
        let addr = stall_after(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .expect("stub");
        let c = local(addr, Duration::from_millis(500));
        let started = std::time::Instant::now();
        let err = c
            .call::<Value>("DescribeContainerGroups", json!({}))
            .await
            .expect_err("stalled");
        assert_eq!(err.code, "Transport", "{err}");
        assert!(err.message.contains("timed out"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_huge_declared_body_is_refused_unread() {
        let addr = stall_after("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n")
        .await
        .expect("stub");
        let err = local(addr, Duration::from_secs(10))
            .call::<Value>("DescribeContainerGroups", json!({}))
            .await
            .expect_err("too large");
        assert_eq!(err.code, "UnreadableResponse", "{err}");
        assert!(err.message.contains("larger than"), "{err}");
    }

    #[tokio::test]
    async fn a_huge_chunked_body_is_cut_off_at_the_cap() {
        use std::sync::atomic::Ordering;

        // No length given: 1 MiB chunks until the client hangs up.
        let (addr, sent) = endless_chunked().await.expect("stub");
        let err = local(addr, Duration::from_secs(30))
            .call::<Value>("DescribeContainerStatus", json!({}))
            .await
            .expect_err("too large");
        assert_eq!(err.code, "UnreadableResponse", "{err}");
        assert!(err.message.contains("larger than"), "{err}");
        // The client stopped reading near the cap (plus what the socket buffers held).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = sent.load(Ordering::Relaxed);
        assert!(sent < MAX_ANSWER_BYTES + (16 << 20), "{sent} bytes sent");
    }
}
