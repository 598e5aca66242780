//! Kubernetes conventions around SPDY: the HTTP upgrade handshake the caller
//! performs, the sub-protocol names, and the headers that identify streams.
//!
//! The handshake mirrors `k8s.io/apimachinery/pkg/util/httpstream`: the
//! client sends `Connection: Upgrade`, `Upgrade: SPDY/3.1` and one
//! `X-Stream-Protocol-Version` per protocol it speaks, most preferred first;
//! the server answers `101 Switching Protocols` with `Connection: Upgrade`,
//! `Upgrade: SPDY/3.1` and the chosen `X-Stream-Protocol-Version`, or `403`
//! with `X-Accepted-Stream-Protocol-Versions` when nothing matches. After the
//! 101 the connection carries SPDY frames: hand it to
//! [`Session::new`](crate::Session::new).

/// Value of the `Upgrade` header for SPDY.
pub const UPGRADE_PROTOCOL: &str = "SPDY/3.1";
pub const HEADER_CONNECTION: &str = "Connection";
pub const HEADER_UPGRADE: &str = "Upgrade";
/// Sub-protocols offered by the client (repeated header) and the one chosen
/// by the server.
pub const HEADER_PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
/// Sent by the server with 403 when no sub-protocol matches.
pub const HEADER_ACCEPTED_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";

/// exec/attach protocol with a JSON `metav1.Status` on the error stream and
/// a resize stream.
pub const REMOTE_COMMAND_V4: &str = "v4.channel.k8s.io";
/// exec/attach protocol with a resize stream.
pub const REMOTE_COMMAND_V3: &str = "v3.channel.k8s.io";
pub const REMOTE_COMMAND_V2: &str = "v2.channel.k8s.io";
/// The original exec/attach protocol (also what a client that offers no
/// protocol gets).
pub const REMOTE_COMMAND_V1: &str = "channel.k8s.io";
/// The port-forward protocol.
pub const PORT_FORWARD_V1: &str = "portforward.k8s.io";

/// Stream header naming the stream's role. Go sends `streamType`; SPDY
/// lowercases names on the wire.
pub const HEADER_STREAM_TYPE: &str = "streamtype";
/// Port-forward: the container port a stream pair is for.
pub const HEADER_PORT: &str = "port";
/// Port-forward: pairs a `data` stream with its `error` stream.
pub const HEADER_REQUEST_ID: &str = "requestid";

pub const STREAM_TYPE_ERROR: &str = "error";
pub const STREAM_TYPE_STDIN: &str = "stdin";
pub const STREAM_TYPE_STDOUT: &str = "stdout";
pub const STREAM_TYPE_STDERR: &str = "stderr";
pub const STREAM_TYPE_RESIZE: &str = "resize";
/// Port-forward data stream.
pub const STREAM_TYPE_DATA: &str = "data";

/// Whether a request asks for a SPDY/3.1 upgrade: some `Connection` value
/// mentions `upgrade` and some `Upgrade` value mentions `spdy/3.1`, both
/// case-insensitively (as apimachinery checks it).
pub fn is_spdy_upgrade<'a>(
    connection: impl IntoIterator<Item = &'a str>,
    upgrade: impl IntoIterator<Item = &'a str>,
) -> bool {
    let contains = |haystack: &str, needle: &str| {
        haystack
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase())
    };
    connection.into_iter().any(|v| contains(v, "upgrade"))
        && upgrade.into_iter().any(|v| contains(v, UPGRADE_PROTOCOL))
}

/// Picks the sub-protocol: the first of the client's
/// `X-Stream-Protocol-Version` values (in the client's order) that the server
/// supports. Values may also be comma-separated. `None` when nothing matches;
/// note that a client that sent no value at all is a Kubernetes 1.0 client
/// that expects [`REMOTE_COMMAND_V1`] without any response header.
pub fn negotiate_protocol<'a>(
    client: impl IntoIterator<Item = &'a str>,
    server: &[&str],
) -> Option<&'a str> {
    client
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| server.contains(p))
}

/// Headers for the `101 Switching Protocols` response, with the negotiated
/// sub-protocol if there is one.
pub fn upgrade_response_headers(protocol: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (HEADER_CONNECTION, HEADER_UPGRADE.to_owned()),
        (HEADER_UPGRADE, UPGRADE_PROTOCOL.to_owned()),
    ];
    if let Some(p) = protocol {
        headers.push((HEADER_PROTOCOL_VERSION, p.to_owned()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_detection() {
        assert!(is_spdy_upgrade(["Upgrade"], ["SPDY/3.1"]));
        assert!(is_spdy_upgrade(["keep-alive, upgrade"], ["spdy/3.1"]));
        assert!(!is_spdy_upgrade(["close"], ["SPDY/3.1"]));
        assert!(!is_spdy_upgrade(["Upgrade"], ["websocket"]));
    }

    #[test]
    fn negotiation_prefers_client_order() {
        let server = [REMOTE_COMMAND_V4, REMOTE_COMMAND_V3, REMOTE_COMMAND_V2];
        assert_eq!(
            negotiate_protocol([REMOTE_COMMAND_V3, REMOTE_COMMAND_V4], &server),
            Some(REMOTE_COMMAND_V3)
        );
        assert_eq!(
            negotiate_protocol(["v5.channel.k8s.io, v4.channel.k8s.io"], &server),
            Some(REMOTE_COMMAND_V4)
        );
        assert_eq!(negotiate_protocol(["bogus"], &server), None);
        assert_eq!(negotiate_protocol([], &server), None);
    }

    #[test]
    fn response_headers() {
        let h = upgrade_response_headers(Some(PORT_FORWARD_V1));
        assert_eq!(h[1], (HEADER_UPGRADE, "SPDY/3.1".to_owned()));
        assert_eq!(h[2], (HEADER_PROTOCOL_VERSION, PORT_FORWARD_V1.to_owned()));
        assert_eq!(upgrade_response_headers(None).len(), 2);
    }
}
