//! `node-shim`: one virtual Kubernetes Node whose pods run through a PodProvider gRPC service.
//!
//! Read in this order: [`config`] (flags), [`provider_client`] (the gRPC connection), [`node`]
//! (Node registration, Lease, Ready from the provider's Ping), [`pods`] (the controller: watch,
//! reconcile, provider status stream), [`resolve`] (env and volumes into the contract's Pod),
//! [`status`] (provider status into Kubernetes status), [`volume_sources`] (mounted ConfigMaps and
//! Secrets followed while pods run), [`kubelet`] (the kubelet HTTPS API: logs,
//! exec, attach, port-forward, stats).
#![forbid(unsafe_code)]

pub mod certificates;
pub mod config;
pub mod deregister;
pub mod events;
pub mod fields;
pub mod kubelet;
pub mod metrics;
pub mod node;
pub mod node_identity;
pub mod pods;
pub mod provider_client;
pub mod quantity;
pub mod resolve;
pub mod status;
pub mod volume_sources;

#[cfg(test)]
mod fuzzing;

use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Errors that stop the shim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig or in-cluster configuration could not be loaded.
    #[error("loading Kubernetes configuration: {0}")]
    KubeConfig(String),
    /// Building the Kubernetes client failed.
    #[error("building the Kubernetes client: {0}")]
    KubeClient(#[from] kube::Error),
    /// The provider endpoint is invalid.
    #[error(transparent)]
    Endpoint(#[from] provider_client::EndpointError),
    /// The node manager failed.
    #[error(transparent)]
    Node(#[from] node::Error),
    /// The metrics port could not be bound.
    #[error("serving metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The node identity (`--tls-bootstrap`) could not be set up.
    #[error(transparent)]
    NodeIdentity(#[from] node_identity::Error),
    /// `--deregister` failed.
    #[error(transparent)]
    Deregister(#[from] deregister::Error),
    /// The kubelet API could not be served.
    #[error(transparent)]
    Kubelet(#[from] kubelet::Error),
}

/// The Kubernetes configuration from `--kubeconfig`, or in-cluster / default configuration.
async fn kube_config(cfg: &Config) -> Result<kube::Config, Error> {
    match &cfg.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| Error::KubeConfig(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::KubeConfig(e.to_string()))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::KubeConfig(e.to_string())),
    }
}

/// The Kubernetes client the shim works with: the configured credentials, or with
/// `--tls-bootstrap` the node's own identity obtained with them, plus the configured
/// credentials for what NodeRestriction keeps from a node (see [`node::NodeManager`]).
pub async fn kube_clients(
    cfg: &Arc<Config>,
    shutdown: &CancellationToken,
) -> Result<(kube::Client, Option<kube::Client>), Error> {
    let config = kube_config(cfg).await?;
    if cfg.tls_bootstrap {
        let owner = kube::Client::try_from(config.clone())?;
        let node = node_identity::client(config, cfg, shutdown).await?;
        Ok((node, Some(owner)))
    } else {
        Ok((kube::Client::try_from(config)?, None))
    }
}

/// Runs the shim until `shutdown` is cancelled. Cloud pods are neither deleted nor drained.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let cfg = Arc::new(cfg);
    if cfg.deregister {
        let client = kube::Client::try_from(kube_config(&cfg).await?)?;
        return Ok(deregister::run(client, &cfg).await?);
    }
    let (client, owner) = kube_clients(&cfg, &shutdown).await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    // Not ready until the provider answers a ping: the chart's readiness probe reads this.
    let readiness = vk_telemetry::metrics::Readiness::new(false);
    if let Some(addr) = cfg.metrics_address.0 {
        vk_telemetry::metrics::serve_with_readiness(
            addr,
            Arc::new(registry),
            readiness.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(|source| Error::Metrics { addr, source })?;
    }
    let provider = provider_client::connect_tls(
        &cfg.provider_endpoint,
        &cfg.provider_tls(),
        cfg.provider_timeout,
        Some(metrics.grpc.clone()),
    )?;
    let node = node::NodeManager::new(client.clone(), owner, provider.clone(), cfg.clone())
        .await?
        .with_readiness(readiness);
    tracing::info!(node = %cfg.node_name, provider = %cfg.provider_endpoint, "node-shim starting");
    let kubelet_api = async {
        let result = kubelet::run(
            client.clone(),
            provider.clone(),
            cfg.clone(),
            shutdown.clone(),
        )
        .await;
        if result.is_err() {
            // A node whose kubelet API cannot serve is broken; stop like a kubelet would.
            shutdown.cancel();
        }
        result
    };
    let (node_result, (), kubelet_result) = tokio::join!(
        node.run(shutdown.clone()),
        pods::run(
            client.clone(),
            provider.clone(),
            cfg.clone(),
            metrics,
            shutdown.clone()
        ),
        kubelet_api,
    );
    kubelet_result?;
    node_result?;
    tracing::info!("node-shim stopped");
    Ok(())
}
