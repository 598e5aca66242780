//! TLS for the gRPC link between the shim and a provider deployed on its own: a certificate and key
//! read from PEM files and re-read when they change (cert-manager rewrites its Secrets' files), a
//! client-CA verifier optionally restricted to allowed client names, and the configs both sides use.
//!
//! Reloading swaps the key that *new* handshakes use; established connections (and their
//! `WatchPods` and exec streams) keep the session they negotiated.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use rustls::{
    DistinguishedName, SignatureScheme,
    client::{ResolvesClientCert, WebPkiServerVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};

/// How often the certificate files are compared with what is loaded. Reading two small files
/// every few seconds is cheap, and cert-manager renews long before expiry.
pub const RELOAD_PERIOD: Duration = Duration::from_secs(2);

/// ALPN for gRPC; Go clients (grpcurl) refuse a server that does not negotiate it.
const ALPN_H2: &[u8] = b"h2";

/// A TLS set-up failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its content).
        what: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built from the CA file.
    #[error("client CA: {0}")]
    Verifier(String),
    /// Flags that do not go together.
    #[error("{0}")]
    Flags(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The ring provider: the only one this workspace builds, whatever the process installed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and its private key into a key rustls can sign with, checking
/// that they belong together (a half-written rotation must not be used).
fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.to_owned(),
            what: format!("invalid certificate PEM: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path.to_owned(),
            what: "no CERTIFICATE block".into(),
        });
    }
    // The error is about the PEM structure; it never carries key material.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        path: key_path.to_owned(),
        what: format!("no usable private key: {e}"),
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match()?;
    Ok(ck)
}

/// Reads a CA bundle into a root store.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let pem = read(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("invalid certificate PEM: {e}"),
        })?;
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("unusable CA certificate: {e}"),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CA certificate".into(),
        });
    }
    Ok(roots)
}

struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
}

/// A certificate and key from two PEM files, re-read every [`RELOAD_PERIOD`] while this lives;
/// serves as the key of both server and client configs.
pub struct ReloadingKey {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Loaded>,
}

impl std::fmt::Debug for ReloadingKey {
    // The key is never printed, only where it comes from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingKey")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingKey {
    /// Loads the pair (failing now if it is unusable) and starts watching the files on the
    /// current tokio runtime; the watch ends when the last handle is dropped.
    pub fn watch(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key = Arc::new(certified_key(cert_path, &cert_pem, key_path, &key_pem)?);
        let this = Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Loaded {
                cert_pem,
                key_pem,
                key,
            }),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(reload_loop(weak));
        Ok(this)
    }

    /// The key new handshakes use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.key.clone(),
            Err(poisoned) => poisoned.into_inner().key.clone(),
        }
    }

    /// Re-reads the files; swaps the key when they changed and parse as a matching pair. Returns
    /// whether the key was swapped.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = read(&self.cert_path)?;
        let key_pem = read(&self.key_path)?;
        {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            if cur.cert_pem == cert_pem && cur.key_pem == key_pem {
                return Ok(false);
            }
        }
        let key = Arc::new(certified_key(
            &self.cert_path,
            &cert_pem,
            &self.key_path,
            &key_pem,
        )?);
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Loaded {
            cert_pem,
            key_pem,
            key,
        };
        Ok(true)
    }
}

async fn reload_loop(weak: Weak<ReloadingKey>) {
    // Report a bad pair once per change, not every period.
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(RELOAD_PERIOD).await;
        let Some(this) = weak.upgrade() else { return };
        match this.reload() {
            Ok(true) => {
                last_error = None;
                tracing::info!(cert = %this.cert_path.display(), "TLS certificate reloaded");
            }
            Ok(false) => last_error = None,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!(error = %msg, "TLS certificate files changed but cannot be used yet; keeping the previous certificate");
                    last_error = Some(msg);
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts client certificates the CA signed and, when `allowed` is not empty, only those whose
/// subject alternative names include one of `allowed` (DNS names or IP addresses).
#[derive(Debug)]
struct AllowedNames {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedNames {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allowed.is_empty() {
            return Ok(verified);
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self
            .allowed
            .iter()
            .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The provider's TLS settings, from its flags.
#[derive(Clone, Debug, Default)]
pub struct ServerTls {
    /// Serving certificate (chain), PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
    /// CA bundle client certificates must chain to; no client authentication when unset.
    pub client_ca_file: Option<PathBuf>,
    /// DNS names or IPs, one of which a client certificate's SANs must hold; any when empty.
    pub allowed_client_names: Vec<String>,
}

impl ServerTls {
    /// A rustls server config whose certificate follows the files.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let key = ReloadingKey::watch(&self.cert_file, &self.key_file)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca_file {
            Some(ca) => {
                let roots = Arc::new(load_roots(ca)?);
                let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
                let allowed = self
                    .allowed_client_names
                    .iter()
                    .map(|n| {
                        ServerName::try_from(n.clone()).map_err(|_| {
                            TlsError::Flags(format!(
                                "allowed client name {n:?} is neither a DNS name nor an IP address"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                builder.with_client_cert_verifier(Arc::new(AllowedNames { inner, allowed }))
            }
            None if !self.allowed_client_names.is_empty() => {
                return Err(TlsError::Flags(
                    "--allowed-client-names needs --client-ca-file".into(),
                ));
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(key);
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(config)
    }
}

/// A rustls client config for the shim: the server must chain to `ca_file` (the system's roots
/// are not used: the provider's CA is private), and the client presents `cert_key` when given,
/// re-read when its files change.
pub fn client_config(
    ca_file: &Path,
    cert_key: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = Arc::new(load_roots(ca_file)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier);
    let mut config = match cert_key {
        Some((cert, key)) => {
            builder.with_client_cert_resolver(ReloadingKey::watch(cert, key)? as Arc<_>)
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, stem: &str) -> (Vec<u8>, Vec<u8>) {
        let ck = rcgen::generate_simple_self_signed(vec!["provider.example".to_owned()])
            .expect("self-signed certificate");
        let (cert, key) = (
            ck.cert.pem().into_bytes(),
            ck.signing_key.serialize_pem().into_bytes(),
        );
        std::fs::write(dir.join(format!("{stem}.crt")), &cert).expect("write");
        std::fs::write(dir.join(format!("{stem}.key")), &key).expect("write");
        (cert, key)
    }

    fn der(pem: &[u8]) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem).expect("pem").to_vec()
    }

    #[tokio::test]
    async fn a_half_written_rotation_is_not_used_and_a_complete_one_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_a, _) = pair(dir.path(), "live");
        let (cert_path, key_path) = (dir.path().join("live.crt"), dir.path().join("live.key"));
        let key = ReloadingKey::watch(&cert_path, &key_path).expect("loads");
        assert_eq!(key.current().cert[0].to_vec(), der(&cert_a));
        assert!(!key.reload().expect("unchanged files"), "nothing changed");

        // The new certificate is written, its key not yet: keep serving the old pair.
        let (cert_b, key_b) = pair(dir.path(), "next");
        std::fs::write(&cert_path, &cert_b).expect("write");
        let err = key.reload().expect_err("mismatched pair");
        assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
        assert_eq!(key.current().cert[0].to_vec(), der(&cert_a));

        std::fs::write(&key_path, &key_b).expect("write");
        assert!(key.reload().expect("complete pair"));
        assert_eq!(key.current().cert[0].to_vec(), der(&cert_b));

        // Garbage is refused with the file named, and the good pair stays.
        std::fs::write(&key_path, b"not a key").expect("write");
        let err = key.reload().expect_err("garbage").to_string();
        assert!(err.contains("live.key"), "{err}");
        assert_eq!(key.current().cert[0].to_vec(), der(&cert_b));
    }

    #[test]
    fn check_listen_refuses_unauthenticated_non_loopback() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            server: crate::ServerArgs,
        }
        let check = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("p").chain(args.iter().copied()))
                .expect("flags parse")
                .server
                .check_listen()
                .map_err(|e| e.to_string())
        };
        let tls = ["--tls-cert-file=c", "--tls-private-key-file=k"];
        assert!(check(&["--listen=127.0.0.1:1"]).is_ok());
        assert!(check(&["--listen=[::1]:1"]).is_ok());
        assert!(check(&["--listen=unix:/tmp/p.sock"]).is_ok());
        let err = check(&["--listen=0.0.0.0:1"]).expect_err("plaintext");
        assert!(
            err.contains("plaintext gRPC authenticates no client"),
            "{err}"
        );
        let err = check(&["--listen=10.0.0.1:1", tls[0], tls[1]]).expect_err("no client CA");
        assert!(err.contains("without --client-ca-file"), "{err}");
        assert!(check(&["--listen=0.0.0.0:1", tls[0], tls[1], "--client-ca-file=ca"]).is_ok());
        assert!(check(&["--listen=0.0.0.0:1", "--insecure-plaintext-listen"]).is_ok());
        let err = check(&["--listen=unix:/tmp/p.sock", tls[0], tls[1]]).expect_err("unix TLS");
        assert!(err.contains("unix socket"), "{err}");
        // Half a pair, or a CA without a certificate, does not parse.
        let cli =
            |args: &[&str]| Cli::try_parse_from(std::iter::once("p").chain(args.iter().copied()));
        assert!(cli(&["--tls-cert-file=c"]).is_err());
        assert!(cli(&["--client-ca-file=ca"]).is_err());
        assert!(cli(&["--allowed-client-names=a", tls[0], tls[1]]).is_err());
    }
}
