//! The `podprovider.v1` gRPC contract between a virtual node's shim and its provider.
//!
//! The contract itself, with every message and field documented, is
//! `proto/podprovider/v1/podprovider.proto`; `docs/PROTOCOL.md` explains it to provider authors.
//! This crate holds the code tonic and prost generate from it, plus the encoded file descriptor set
//! that servers register for gRPC reflection.

#![allow(missing_docs)] // generated code carries the proto comments instead

/// `podprovider.v1`: messages, the `PodProvider` client and server.
// Generated; the proto comments are its docs (written for protobuf readers, not rustdoc: `<id>`
// placeholders, bare URLs, `[..]` in prose).
#[allow(
    clippy::all,
    clippy::pedantic,
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links,
    rustdoc::bare_urls,
    rustdoc::invalid_rust_codeblocks
)]
pub mod v1 {
    tonic::include_proto!("podprovider.v1");
}

mod redact;

/// Encoded `FileDescriptorSet` of the contract, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("podprovider_descriptor");

/// Largest gRPC message either side sends or accepts: resolved pods carry ConfigMap and Secret
/// contents (up to 1 MiB each in Kubernetes), so gRPC's 4 MiB default is too small.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

pub use v1::pod_provider_client::PodProviderClient;
pub use v1::pod_provider_server::{PodProvider, PodProviderServer};
