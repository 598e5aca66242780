//! Free ports for test processes.
//!
//! Ports come from below the kernel's ephemeral range (32768-60999 by default), so outgoing
//! connections of the many processes a test starts can never be holding one, and each port is
//! handed out at most once per test process, so parallel tests in one binary never share one.

use parking_lot::Mutex;
use std::{
    collections::HashSet,
    hash::{BuildHasher, RandomState},
    net::{Ipv4Addr, TcpListener},
    sync::OnceLock,
};

use anyhow::bail;

const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Mutex::default)
}

/// A TCP port that is free on all addresses now and was not handed out before in this process.
/// Another program could still take it before it is bound; outside the ephemeral range that is
/// rare.
pub fn free_port() -> anyhow::Result<u16> {
    let span = u64::from(LAST - FIRST);
    // A random starting point, so test processes run one after another don't retry the same ports.
    let start = RandomState::new().hash_one(std::process::id()) % span;
    let mut used = handed_out().lock();
    for i in 0..span {
        let port = FIRST + u16::try_from((start + i) % span)?;
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            used.insert(port);
            return Ok(port);
        }
    }
    bail!("no free port between {FIRST} and {LAST}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("port")).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for p in ports {
            assert!((FIRST..LAST).contains(&p));
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("bindable");
        }
    }
}
