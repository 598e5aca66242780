//! Helpers of the cases: status ordering, time and quantity parsing, ids, and the raw calls that
//! the generated client cannot make (reflection, unknown fields).

use std::{
    hash::{BuildHasher, Hasher},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use podprovider_proto::v1::{self as pb, PodPhase, PodStatus, container_state};
use prost::Message;
use tonic::{Status, transport::Channel};

/// The kit's container: a line a second, forever (`sh` of the image).
pub const LOOP_SCRIPT: &str = "echo conformance-started; i=0; while true; do i=$((i+1)); echo \"conformance-line $i\"; sleep 1; done";

/// Pending < Running < Succeeded/Failed; unknown phases have no rank.
pub fn phase_rank(phase: PodPhase) -> Option<u8> {
    match phase {
        PodPhase::Pending => Some(1),
        PodPhase::Running => Some(2),
        PodPhase::Succeeded | PodPhase::Failed => Some(3),
        PodPhase::Unspecified | PodPhase::Unknown => None,
    }
}

/// Why `next` moves backwards from `prev` (phase, restart counts, a container's state), if it does.
pub fn regression(prev: &PodStatus, next: &PodStatus) -> Option<String> {
    if let (Some(a), Some(b)) = (phase_rank(prev.phase()), phase_rank(next.phase()))
        && b < a
    {
        return Some(format!("phase {:?} after {:?}", next.phase(), prev.phase()));
    }
    for n in &next.container_statuses {
        let Some(p) = prev.container_statuses.iter().find(|p| p.name == n.name) else {
            continue;
        };
        if n.restart_count < p.restart_count {
            return Some(format!(
                "container {} restart_count {} after {}",
                n.name, n.restart_count, p.restart_count
            ));
        }
        let rank = |s: &pb::ContainerStatus| match s.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(container_state::State::Waiting(_)) => Some(1),
            Some(container_state::State::Running(_)) => Some(2),
            Some(container_state::State::Terminated(_)) => Some(3),
            None => None,
        };
        // Within one instance (same restart count) a container only moves forward.
        if n.restart_count == p.restart_count
            && let (Some(a), Some(b)) = (rank(p), rank(n))
            && b < a
        {
            return Some(format!(
                "container {} went back from {} to {} without a restart",
                n.name,
                ["", "waiting", "running", "terminated"][a],
                ["", "waiting", "running", "terminated"][b]
            ));
        }
    }
    None
}

/// Seconds since the epoch of an RFC 3339 time (`2006-01-02T15:04:05.999999999Z`, or an offset).
pub fn rfc3339_seconds(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut fraction = 0.0;
    if let Some(after) = rest.strip_prefix('.') {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        fraction = format!("0.{}", &after[..digits]).parse().ok()?;
        rest = &after[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hh: i64 = rest.get(1..3)?.parse().ok()?;
            if rest.get(3..4)? != ":" || rest.len() != 6 {
                return None;
            }
            let mm: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs as f64 + fraction)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether `q` is a Kubernetes quantity: a decimal number and a suffix (SI, binary or exponent).
pub fn valid_quantity(q: &str) -> bool {
    let end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(end);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty() || digits.starts_with('.') || digits.parse::<f64>().is_err() {
        return false;
    }
    const SUFFIXES: &[&str] = &[
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    SUFFIXES.contains(&suffix)
        || suffix
            .strip_prefix(['e', 'E'])
            .is_some_and(|exp| exp.parse::<i32>().is_ok())
}

/// Wall-clock seconds since the epoch.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `bytes` random bytes as hex, from the standard library's randomly keyed hasher.
pub fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(bytes * 2);
    out
}

/// A random UUID-shaped pod UID, as Kubernetes makes them.
pub fn uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The last `lines` lines of `bytes`.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Services and the number of files describing `symbol`, from reflection v1.
pub async fn reflect_v1(
    channel: &Channel,
    symbol: &str,
    timeout: Duration,
) -> Result<(Vec<String>, usize), Status> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
        },
    ];
    let mut client = ServerReflectionClient::new(channel.clone());
    let call = async {
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await?
            .into_inner();
        let (mut services, mut files) = (Vec::new(), 0);
        while let Some(answer) = answers.next().await {
            match answer?.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    services.extend(list.service.into_iter().map(|s| s.name));
                }
                Some(MessageResponse::FileDescriptorResponse(f)) => {
                    files += f.file_descriptor_proto.len();
                }
                Some(MessageResponse::ErrorResponse(e)) => {
                    return Err(Status::new(e.error_code.into(), e.error_message));
                }
                _ => {}
            }
        }
        Ok((services, files))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Status::deadline_exceeded("reflection did not answer"))?
}

/// [`reflect_v1`] for reflection v1alpha.
pub async fn reflect_v1alpha(
    channel: &Channel,
    symbol: &str,
    timeout: Duration,
) -> Result<(Vec<String>, usize), Status> {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
        },
    ];
    let mut client = ServerReflectionClient::new(channel.clone());
    let call = async {
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await?
            .into_inner();
        let (mut services, mut files) = (Vec::new(), 0);
        while let Some(answer) = answers.next().await {
            match answer?.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    services.extend(list.service.into_iter().map(|s| s.name));
                }
                Some(MessageResponse::FileDescriptorResponse(f)) => {
                    files += f.file_descriptor_proto.len();
                }
                Some(MessageResponse::ErrorResponse(e)) => {
                    return Err(Status::new(e.error_code.into(), e.error_message));
                }
                _ => {}
            }
        }
        Ok((services, files))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Status::deadline_exceeded("reflection did not answer"))?
}

/// A field from a future version of a message: number far above the contract's, so that a
/// provider generated from today's proto sees it as unknown.
#[derive(Clone, PartialEq, Message)]
struct FutureFields {
    #[prost(string, tag = "9001")]
    future_string: String,
    #[prost(int64, tag = "9002")]
    future_number: i64,
}

/// A CreatePodRequest whose pod (field 1, length-delimited) is given pre-encoded, so that unknown
/// fields can be appended inside it.
#[derive(Clone, PartialEq, Message)]
struct RawCreatePodRequest {
    #[prost(bytes = "vec", tag = "1")]
    pod: Vec<u8>,
    #[prost(string, tag = "9001")]
    future_string: String,
}

/// A PingRequest with an unknown field.
#[derive(Clone, PartialEq, Message)]
struct RawPingRequest {
    #[prost(string, tag = "1")]
    node_name: String,
    #[prost(string, tag = "9001")]
    future_string: String,
}

fn future_fields() -> Vec<u8> {
    FutureFields {
        future_string: "from a newer contract".into(),
        future_number: 42,
    }
    .encode_to_vec()
}

async fn raw_unary<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    request: Req,
    timeout: Duration,
) -> Result<Resp, Status>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        grpc.unary(tonic::Request::new(request), path, codec)
            .await
            .map(tonic::Response::into_inner)
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Status::deadline_exceeded("no answer"))?
}

/// CreatePod with unknown fields in the request and in the pod.
pub async fn create_with_unknown_fields(
    channel: &Channel,
    pod: pb::Pod,
    timeout: Duration,
) -> Result<pb::CreatePodResponse, Status> {
    let mut pod_bytes = pod.encode_to_vec();
    pod_bytes.extend(future_fields());
    let request = RawCreatePodRequest {
        pod: pod_bytes,
        future_string: "from a newer contract".into(),
    };
    raw_unary(
        channel,
        "/podprovider.v1.PodProvider/CreatePod",
        request,
        timeout,
    )
    .await
}

/// Ping with an unknown field.
pub async fn ping_with_unknown_fields(
    channel: &Channel,
    node: &str,
    timeout: Duration,
) -> Result<pb::PingResponse, Status> {
    let request = RawPingRequest {
        node_name: node.to_owned(),
        future_string: "from a newer contract".into(),
    };
    raw_unary(
        channel,
        "/podprovider.v1.PodProvider/Ping",
        request,
        timeout,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(rfc3339_seconds("2000-03-01T00:00:01Z"), Some(951_868_801.0));
        let t = rfc3339_seconds("2026-12-03T14:01:18.5+01:00").unwrap();
        assert!((t - (rfc3339_seconds("2026-12-03T13:01:18Z").unwrap() + 0.5)).abs() < 1e-6);
        assert_eq!(rfc3339_seconds("conformance-started"), None);
        assert_eq!(rfc3339_seconds("2026-12-03 14:01:18Z"), None);
    }

    #[test]
    fn checks_quantities() {
        for good in ["1000", "4Ti", "500m", "1.5Gi", "1e3", "0"] {
            assert!(valid_quantity(good), "{good}");
        }
        for bad in ["", "lots", "4TB", "Gi", ".5", "1e"] {
            assert!(!valid_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn finds_regressions() {
        let status = |phase: PodPhase| PodStatus {
            phase: phase as i32,
            ..Default::default()
        };
        assert!(regression(&status(PodPhase::Running), &status(PodPhase::Pending)).is_some());
        assert!(regression(&status(PodPhase::Pending), &status(PodPhase::Running)).is_none());
        assert!(regression(&status(PodPhase::Running), &status(PodPhase::Unknown)).is_none());
        assert!(regression(&status(PodPhase::Failed), &status(PodPhase::Running)).is_some());
    }

    #[test]
    fn uids_are_uuid_shaped_and_distinct() {
        let (a, b) = (uuid(), uuid());
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);
    }
}
