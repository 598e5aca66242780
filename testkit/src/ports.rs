//! Free loopback ports.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::Context;

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it). Another process could
/// take it before we bind it again; on loopback in a test run that is rare enough.
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}
