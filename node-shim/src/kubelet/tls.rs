//! TLS for the kubelet API: the serving certificate (from files, from an approved
//! `kubernetes.io/kubelet-serving` CertificateSigningRequest renewed before it expires, or
//! self-signed when explicitly chosen) and client-certificate verification against a CA.

use parking_lot::RwLock;
use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use kube::Client;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use tokio_util::sync::CancellationToken;

use crate::{
    certificates,
    config::{Config, ServingCertMode},
};

/// Setting up TLS failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Generating a key or certificate failed.
    #[error("generating the serving key: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The serving certificate could not be obtained from the cluster.
    #[error("serving certificate: {0}")]
    Csr(#[from] certificates::Error),
}

fn file_error(path: &Path, reason: impl ToString) -> Error {
    Error::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The current serving certificate; swapped in place when a renewed one arrives.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

impl ServingCert {
    fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(key),
        })
    }

    fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write() = key;
    }

    /// The DER of the certificate now presented.
    pub fn certificate_der(&self) -> Vec<u8> {
        let current = self.current.read();
        current.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, Error> {
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
}

fn read_files(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    certified_key(chain, key_der)
}

/// The names the certificate is valid for: the node name and its InternalIP.
fn serving_params(cfg: &Config) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(vec![cfg.node_name.clone()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(cfg.pod_ip));
    params
        .distinguished_name
        .push(DnType::CommonName, format!("system:node:{}", cfg.node_name));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    Ok(params)
}

fn self_signed(cfg: &Config) -> Result<Arc<CertifiedKey>, Error> {
    let key = KeyPair::generate()?;
    let cert = serving_params(cfg)?.self_signed(&key)?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| Error::File {
        path: "self-signed".into(),
        reason: e.to_string(),
    })?;
    certified_key(vec![cert.der().clone()], key_der)
}

/// Asks the cluster for a serving certificate as the kubelet does with
/// `serverTLSBootstrap`, and waits until it is approved and issued.
async fn request_certificate(
    client: &Client,
    cfg: &Config,
) -> Result<(Arc<CertifiedKey>, SystemTime), Error> {
    let issued = certificates::request(
        client,
        &format!("csr-{}", cfg.node_name),
        serving_params(cfg)?,
        "kubernetes.io/kubelet-serving",
        &["digital signature", "key encipherment", "server auth"],
    )
    .await?;
    let key_der = PrivateKeyDer::try_from(issued.key.serialize_der()).map_err(|e| Error::File {
        path: "issued serving key".into(),
        reason: e.to_string(),
    })?;
    Ok((certified_key(issued.chain, key_der)?, issued.renew_at))
}

/// Obtains the serving certificate `cfg` asks for. With a CSR, also spawns the task that renews
/// it before it expires.
pub async fn serving_cert(
    client: &Client,
    cfg: &Arc<Config>,
    shutdown: &CancellationToken,
) -> Result<Arc<ServingCert>, Error> {
    match cfg.serving_cert_mode() {
        ServingCertMode::Files => {
            let (cert, key) = cfg.tls_files().ok_or_else(|| Error::File {
                path: "--tls-cert-file".into(),
                reason: "both --tls-cert-file and --tls-private-key-file are needed".into(),
            })?;
            Ok(ServingCert::new(read_files(cert, key)?))
        }
        ServingCertMode::SelfSigned => {
            tracing::warn!(
                "serving the kubelet API with a self-signed certificate (--serving-cert=self-signed)"
            );
            Ok(ServingCert::new(self_signed(cfg)?))
        }
        ServingCertMode::Csr => {
            let (key, renew) = request_certificate(client, cfg).await?;
            let serving = ServingCert::new(key);
            tokio::spawn(renew_loop(
                client.clone(),
                cfg.clone(),
                serving.clone(),
                renew,
                shutdown.clone(),
            ));
            Ok(serving)
        }
    }
}

async fn renew_loop(
    client: Client,
    cfg: Arc<Config>,
    serving: Arc<ServingCert>,
    mut renew: SystemTime,
    shutdown: CancellationToken,
) {
    loop {
        let wait = renew.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        tracing::info!("renewing the kubelet serving certificate");
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = request_certificate(&client, &cfg) => r,
        };
        match result {
            Ok((key, next)) => {
                serving.replace(key);
                renew = next;
            }
            Err(err) => {
                tracing::warn!(%err, "renewing the serving certificate failed; retrying in 1m");
                renew = SystemTime::now() + Duration::from_secs(60);
            }
        }
    }
}

/// The rustls server configuration: TLS 1.2+, HTTP/1.1 only (exec and port-forward upgrade the
/// connection), and client certificates verified against `--client-ca-file` when set (optional,
/// since clients may present a bearer token instead).
pub fn server_config(cfg: &Config, serving: Arc<ServingCert>) -> Result<ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &cfg.client_ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
                roots
                    .add(cert.map_err(|e| file_error(path, e))?)
                    .map_err(|e| file_error(path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_error(path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The user a verified client certificate names: CN is the user, each O a group (as the API
/// server reads client certificates).
pub fn certificate_user(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some((name, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::{renew_at, validity};

    #[test]
    fn self_signed_names_the_node_and_renews_at_80_percent() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cfg = <Config as clap::Parser>::parse_from([
            "node-shim",
            "--node-name=vk-a",
            "--pod-ip=10.1.2.3",
        ]);
        let key = self_signed(&cfg).expect("self-signed");
        let der = key.cert[0].to_vec();
        let (user, groups) = certificate_user(&der).expect("subject");
        assert_eq!(user, "system:node:vk-a");
        assert_eq!(groups, ["system:nodes"]);
        let (from, until) = validity(&der).expect("validity");
        let renew = renew_at(&der);
        assert!(renew > from && renew < until);
        let frac = renew.duration_since(from).expect("after").as_secs_f64()
            / until.duration_since(from).expect("after").as_secs_f64();
        assert!((frac - 0.8).abs() < 0.01, "{frac}");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let sans = cert
            .subject_alternative_name()
            .expect("ext")
            .expect("sans")
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(sans, "DNSName(vk-a),IPAddress(0a:01:02:03)");
    }
}
