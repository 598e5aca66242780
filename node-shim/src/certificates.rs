//! Certificates from the cluster's signers, obtained as the kubelet obtains its own: a key made
//! here, a CertificateSigningRequest, and the issued certificate once approved and signed. Used
//! for the kubelet API's serving certificate and for the shim's node client identity.

use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    ByteString,
    api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, pem::PemObject};

/// A certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Generating the key or the request failed.
    #[error("generating the key: {0}")]
    Generate(#[from] rcgen::Error),
    /// The CSR was denied, failed, or issued something unusable.
    #[error("certificate request {name}: {reason}")]
    Csr {
        /// The CertificateSigningRequest.
        name: String,
        /// What happened.
        reason: String,
    },
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// An issued certificate with its key.
pub struct Issued {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain as the signer returned it (PEM).
    pub chain_pem: Vec<u8>,
    /// The private key.
    pub key: KeyPair,
    /// When to ask for the next one.
    pub renew_at: SystemTime,
}

/// The validity window of a DER certificate.
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    };
    Some((at(v.not_before)?, at(v.not_after)?))
}

/// When to ask for a new certificate: at 80% of its validity, as the kubelet's certificate manager
/// (which picks a random point between 70% and 90%).
pub fn renew_at(der: &[u8]) -> SystemTime {
    match validity(der) {
        Some((from, until)) => {
            let life = until.duration_since(from).unwrap_or_default();
            from + life.mul_f64(0.8)
        }
        None => SystemTime::now() + Duration::from_secs(3600),
    }
}

/// Whether a request is finished: signed, or denied or failed.
fn signed_or_refused(csr: &CertificateSigningRequest) -> bool {
    let status = csr.status.as_ref();
    let refused = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Denied" || c.type_ == "Failed")
        });
    refused || status.and_then(|s| s.certificate.as_ref()).is_some()
}

/// Watches the request `name` until it is signed or refused. The wait can be long (an approver,
/// or an admin, decides) and outlive API server restarts: watch errors are retried with backoff,
/// as the kubelet's certificate manager does, instead of ending the wait.
async fn wait_signed_or_refused(
    api: Api<CertificateSigningRequest>,
    name: &str,
) -> Result<CertificateSigningRequest, Error> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::Apply(csr) | watcher::Event::InitApply(csr)))
                if signed_or_refused(&csr) =>
            {
                return Ok(csr);
            }
            Ok(Some(watcher::Event::Delete(_))) => {
                return Err(Error::Csr {
                    name: name.to_owned(),
                    reason: "deleted before it was signed".into(),
                });
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Error::Csr {
                    name: name.to_owned(),
                    reason: "the watch ended".into(),
                });
            }
            Err(e) => {
                tracing::warn!(csr = %name, error = %e, "watching the certificate request failed; retrying");
            }
        }
    }
}

/// Asks `signer` for a certificate with `params` (subject, names) and `usages`, as `client`, and
/// waits until the request is approved and signed (or refused).
pub async fn request(
    client: &Client,
    name_prefix: &str,
    params: CertificateParams,
    signer: &str,
    usages: &[&str],
) -> Result<Issued, Error> {
    let key = KeyPair::generate()?;
    let csr_pem = params.serialize_request(&key)?.pem()?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name_prefix}-")),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| (*u).to_owned()).collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = api.create(&PostParams::default(), &csr).await?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, %signer, "waiting for the certificate request to be approved and signed");
    let issued = wait_signed_or_refused(api, &name).await?;
    let status = issued.status.unwrap_or_default();
    let Some(pem) = status.certificate else {
        let why = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| format!("{}: {}", c.type_, c.message.unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Csr { name, reason: why });
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.0)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Csr {
            name: name.clone(),
            reason: format!("the issued certificate does not parse: {e}"),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(Error::Csr {
            name,
            reason: "the signer issued an empty certificate".into(),
        });
    };
    let renew_at = renew_at(leaf);
    tracing::info!(csr = %name, "certificate issued");
    Ok(Issued {
        chain,
        chain_pem: pem.0,
        key,
        renew_at,
    })
}
