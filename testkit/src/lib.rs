//! Test support for the virtual kubelet: real parts on loopback, never mocks.
//!
//! - [`control_plane`]: etcd + kube-apiserver + kube-scheduler + kube-controller-manager, fresh per
//!   test run, with its own CA and certificates ([`pki`]).
//! - [`process`]: child processes that log to files and are stopped on drop.
//! - [`grpcurl`]: runs the real `grpcurl` against a provider.
//! - [`ports`]: free loopback ports.
//! - [`moto`]: a real moto server (AWS emulator) set up for ECS on Fargate.
//! - [`fault_proxy`]: an HTTP proxy injecting throttling, 5xx, lost and slow answers in front of
//!   moto or an emulator.
//! - [`shim`]: the real node-shim binary for providers' end-to-end tests; acceptance manifests.
//! - [`soak`]: every process killed and every cloud disturbed while pods come and go, then a
//!   check that nothing was lost, leaked or duplicated.
//! - [`otlp`]: an OTLP/gRPC trace receiver recording spans.
//! - [`kubelet_node`]: a real node (containerd + kubelet 1.20) for a control plane.
//!
//! Errors are `anyhow` with context: this crate is used only by tests, benchmarks and the demo.
#![forbid(unsafe_code)]

pub mod aci_emulator;
pub mod bins;
pub mod control_plane;
pub mod eci_emulator;
pub mod fault_proxy;
pub mod grpcurl;
pub mod http_stub;
pub mod kubelet_node;
pub mod moto;
pub mod otlp;
pub mod pki;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod provider_calls;
pub mod provider_checks;
pub mod shim;
pub mod soak;
pub mod test_provider;
pub mod wait;

pub use control_plane::ControlPlane;

/// Installs rustls' ring crypto provider once; kube's TLS needs one when several are linked.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Logging for testkit's binaries (`vk-control-plane`, `vk-moto`): `RUST_LOG` (default `info`)
/// to stderr.
pub fn init_bin_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Sets up test logging (`RUST_LOG`, default `info`) once; later calls do nothing.
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
