//! port-forward over SPDY/3.1: `data`/`error` stream pairs, one provider PortForward call each.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use futures::{StreamExt, stream};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use podprovider_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::{
    Body, KubeletApi, MAX_PENDING_PORT_FORWARD_STREAMS, PORT_FORWARD_PAIRING_TIMEOUT,
    PORT_FORWARD_PROTOCOL, is_spdy, is_websocket, spdy_protocol, switching, text,
};
use crate::resolve;

/// `/portForward/{namespace}/{pod}`: SPDY streams in `data`/`error` pairs per `requestid`, each
/// pair one provider PortForward call.
pub async fn port_forward(
    api: Arc<KubeletApi>,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
    req: Request<Incoming>,
) -> Response<Body> {
    let pod = match api.pod(namespace, name, uid).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if is_websocket(&req) {
        // kubectl ≥ 1.31 tries SPDY tunnelled in WebSocket first and falls back to SPDY.
        return text(
            StatusCode::BAD_REQUEST,
            "port-forward over WebSocket is not supported by this node; use SPDY",
        );
    }
    if !is_spdy(&req) {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    if let Err(response) = spdy_protocol(&req, &[PORT_FORWARD_PROTOCOL]) {
        return *response;
    }
    let pod_ref = resolve::pod_ref(&pod);
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => TokioIo::new(u),
            Err(err) => {
                tracing::debug!(%err, "port-forward upgrade failed");
                return;
            }
        };
        let mut session = spdy::Session::new(upgraded);
        let mut pending: HashMap<String, Pending> = HashMap::new();
        loop {
            // Halves of pairs that waited too long are dropped (their streams reset).
            let oldest = pending.values().map(|p| p.since).min();
            let stream = tokio::select! {
                s = session.accept() => s,
                () = async {
                    match oldest {
                        Some(at) => tokio::time::sleep_until(at + PORT_FORWARD_PAIRING_TIMEOUT).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = tokio::time::Instant::now();
                    pending.retain(|_, p| now.duration_since(p.since) < PORT_FORWARD_PAIRING_TIMEOUT);
                    continue;
                }
            };
            let Some(stream) = stream else { break };
            let id = stream
                .headers()
                .get(spdy::kube::HEADER_REQUEST_ID)
                .unwrap_or_default()
                .to_owned();
            if !pending.contains_key(&id) && pending.len() >= MAX_PENDING_PORT_FORWARD_STREAMS {
                tracing::debug!("too many unpaired port-forward streams; dropping one");
                continue;
            }
            let entry = pending.entry(id.clone()).or_insert_with(|| Pending {
                since: tokio::time::Instant::now(),
                streams: (None, None),
            });
            let entry = &mut entry.streams;
            match stream.stream_type() {
                Some(spdy::kube::STREAM_TYPE_DATA) => entry.0 = Some(stream),
                Some(spdy::kube::STREAM_TYPE_ERROR) => entry.1 = Some(stream),
                _ => continue,
            }
            // A pair is complete once both its streams are open.
            if matches!(pending.get(&id), Some(p) if matches!(p.streams, (Some(_), Some(_))))
                && let Some(Pending {
                    streams: (Some(data), Some(error)),
                    ..
                }) = pending.remove(&id)
            {
                let forwarded = forward(api.clone(), pod_ref.clone(), data, error);
                tokio::spawn(forwarded.instrument(tracing::Span::current()));
            }
        }
    });
    switching(spdy::kube::upgrade_response_headers(Some(
        PORT_FORWARD_PROTOCOL,
    )))
}

/// Half (or all) of a port-forward pair: its data and error streams, and since when it waits.
struct Pending {
    since: tokio::time::Instant,
    streams: (Option<spdy::Stream>, Option<spdy::Stream>),
}

/// One forwarded connection: the `data` stream's bytes to and from the provider; a failure is
/// written to the `error` stream as the kubelet words it.
async fn forward(
    api: Arc<KubeletApi>,
    pod_ref: pb::PodRef,
    data: spdy::Stream,
    mut error: spdy::Stream,
) {
    use pb::port_forward_request::Request as R;
    let port = data
        .headers()
        .get(spdy::kube::HEADER_PORT)
        .and_then(|p| p.parse::<u16>().ok());
    let fail = |message: String| {
        format!(
            "error forwarding port {} to pod {}, uid {}: {message}",
            port.map(|p| p.to_string()).unwrap_or_default(),
            pod_ref.name,
            pod_ref.uid
        )
    };
    let Some(port) = port else {
        let _ = error
            .send(Bytes::from(fail("invalid port header".into())))
            .await;
        let _ = error.close().await;
        return;
    };
    let (mut from_client, mut to_client) = data.into_split();
    let (tx, rx) = mpsc::channel(16);
    let start = pb::PortForwardRequest {
        request: Some(R::Start(pb::PortForwardStart {
            pod_ref: Some(pod_ref.clone()),
            port: i32::from(port),
        })),
    };
    let requests = stream::once(async { start }).chain(ReceiverStream::new(rx));
    let mut responses = match api.provider.clone().port_forward(requests).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let _ = error
                .send(Bytes::from(fail(status.message().to_owned())))
                .await;
            let _ = error.close().await;
            return;
        }
    };
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = from_client.recv().await {
            let msg = pb::PortForwardRequest {
                request: Some(R::Data(chunk.to_vec())),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(pb::PortForwardRequest {
                request: Some(R::Closed(true)),
            })
            .await;
    });
    loop {
        match responses.message().await {
            Ok(Some(pb::PortForwardResponse {
                response: Some(pb::port_forward_response::Response::Data(d)),
            })) => {
                if to_client.send(Bytes::from(d)).await.is_err() {
                    break;
                }
            }
            Ok(Some(_)) | Ok(None) => break,
            Err(status) => {
                let _ = error
                    .send(Bytes::from(fail(status.message().to_owned())))
                    .await;
                break;
            }
        }
    }
    let _ = to_client.close().await;
    let _ = error.close().await;
    upstream.abort();
}
