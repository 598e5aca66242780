//! Where a provider listens: `HOST:PORT`, `tcp://HOST:PORT` or `unix:/path/to/socket`.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

/// A listening address for the gRPC server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A unix domain socket path (a stale socket file is replaced on start).
    Unix(PathBuf),
}

/// The address could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid listen address {input:?}: expected HOST:PORT, tcp://HOST:PORT or unix:/PATH")]
pub struct ParseListenAddrError {
    input: String,
}

impl FromStr for ListenAddr {
    type Err = ParseListenAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseListenAddrError {
            input: s.to_owned(),
        };
        if let Some(path) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(err());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let tcp = s.strip_prefix("tcp://").unwrap_or(s);
        tcp.parse().map(Self::Tcp).map_err(|_| err())
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_form() {
        let tcp: SocketAddr = "127.0.0.1:50051".parse().expect("literal address");
        assert_eq!(
            "127.0.0.1:50051".parse::<ListenAddr>().ok(),
            Some(ListenAddr::Tcp(tcp))
        );
        assert_eq!(
            "tcp://127.0.0.1:50051".parse::<ListenAddr>().ok(),
            Some(ListenAddr::Tcp(tcp))
        );
        assert_eq!(
            "[::1]:7".parse::<ListenAddr>().ok(),
            Some(ListenAddr::Tcp("[::1]:7".parse().expect("literal address")))
        );
        for s in ["unix:/run/p.sock", "unix:///run/p.sock"] {
            let want = ListenAddr::Unix("/run/p.sock".into());
            assert_eq!(s.parse::<ListenAddr>().ok(), Some(want), "{s}");
        }
    }

    #[test]
    fn rejects_garbage_with_a_clear_message() {
        for s in ["", "localhost", "unix:", "127.0.0.1", "http://1.2.3.4:5"] {
            let err = s.parse::<ListenAddr>().expect_err(s).to_string();
            assert!(err.contains("expected HOST:PORT"), "{err}");
        }
    }

    #[test]
    fn displays_in_parseable_form() {
        for s in ["127.0.0.1:1", "unix:/tmp/x.sock"] {
            let addr: ListenAddr = s.parse().expect("valid");
            assert_eq!(addr.to_string(), s);
        }
    }
}
