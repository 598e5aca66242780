//! TLS for the gRPC link between the shim and a provider deployed on its own: a certificate and key
//! read from PEM files and re-read when they change (cert-manager rewrites its Secrets' files), CA
//! bundles re-read the same way, a client-CA verifier optionally restricted to allowed client
//! names, and the configs both sides use.
//!
//! Reloading swaps the key and the trusted CAs that *new* handshakes use; established connections
//! (and their `WatchPods` and exec streams) keep the session they negotiated. Session resumption
//! is off on both sides, so every new connection is verified against the current CAs.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock, RwLock, Weak},
    time::Duration,
};

use rustls::{
    DistinguishedName, SignatureScheme,
    client::{
        ResolvesClientCert, WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};

/// How often the certificate and CA files are compared with what is loaded. Reading a few small
/// files every few seconds is cheap, and cert-manager renews long before expiry.
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
    /// A verifier could not be built from a CA file.
    #[error("CA bundle: {0}")]
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
    load_roots_pem(path, &read(path)?)
}

/// Parses a CA bundle read from `path`; refuses one without a usable CA certificate.
fn load_roots_pem(path: &Path, pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
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

/// Files re-read every [`RELOAD_PERIOD`] by [`reload_loop`].
trait Reload: Send + Sync + 'static {
    /// What the files hold, for the log.
    const WHAT: &'static str;
    /// The file named in the log.
    fn file(&self) -> &Path;
    /// Re-reads the files; returns whether what new handshakes use was swapped.
    fn reload(&self) -> Result<bool, TlsError>;
}

impl Reload for ReloadingKey {
    const WHAT: &'static str = "TLS certificate";

    fn file(&self) -> &Path {
        &self.cert_path
    }

    fn reload(&self) -> Result<bool, TlsError> {
        ReloadingKey::reload(self)
    }
}

/// Polls `weak`'s files until it is dropped, keeping what is loaded when they cannot be used.
async fn reload_loop<T: Reload>(weak: Weak<T>) {
    // Report an unusable file once per change, not every period.
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(RELOAD_PERIOD).await;
        let Some(this) = weak.upgrade() else { return };
        match this.reload() {
            Ok(true) => {
                last_error = None;
                tracing::info!(file = %this.file().display(), "{} reloaded", T::WHAT);
            }
            Ok(false) => last_error = None,
            Err(e) => {
                // The error names the file and what is wrong, never its content.
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!(error = %msg, "{} files changed but cannot be used yet; keeping the previous ones", T::WHAT);
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

/// The verifiers built from one version of a CA bundle.
struct Trust {
    pem: Vec<u8>,
    client: Arc<dyn ClientCertVerifier>,
    server: Arc<WebPkiServerVerifier>,
}

impl Trust {
    fn new(path: &Path, pem: Vec<u8>) -> Result<Self, TlsError> {
        let roots = Arc::new(load_roots_pem(path, &pem)?);
        let verifier_error = |e: rustls::client::VerifierBuilderError| {
            TlsError::Verifier(format!("{}: {e}", path.display()))
        };
        let client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(verifier_error)?;
        let server = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(verifier_error)?;
        Ok(Self {
            pem,
            client,
            server,
        })
    }
}

/// The CA names a server hints to clients, one entry per distinct list the bundle has had. It
/// only grows: `ClientCertVerifier::root_hint_subjects` lends its answer for as long as the
/// verifier lives, so a list handed out cannot be freed before it (a few hundred bytes per CA
/// change that renames CAs).
struct Hints {
    subjects: Vec<DistinguishedName>,
    next: OnceLock<Box<Hints>>,
}

impl Hints {
    fn new(subjects: Vec<DistinguishedName>) -> Self {
        Self {
            subjects,
            next: OnceLock::new(),
        }
    }

    fn latest(&self) -> &Hints {
        let mut hints = self;
        while let Some(next) = hints.next.get() {
            hints = next;
        }
        hints
    }

    /// Appends `subjects` unless they are the latest already. One writer at a time (the caller
    /// holds the roots' write lock), so `set` cannot lose a race.
    fn push(&self, subjects: Vec<DistinguishedName>) {
        let latest = self.latest();
        let same = latest.subjects.len() == subjects.len()
            && latest
                .subjects
                .iter()
                .zip(&subjects)
                .all(|(a, b)| a.as_ref() == b.as_ref());
        if !same {
            let _ = latest.next.set(Box::new(Hints::new(subjects)));
        }
    }
}

/// A CA bundle from a PEM file, re-read every [`RELOAD_PERIOD`] while this lives: the CAs the
/// server verifies client certificates with, or the client the server's.
pub struct ReloadingRoots {
    path: PathBuf,
    current: RwLock<Arc<Trust>>,
    hints: Hints,
}

impl std::fmt::Debug for ReloadingRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingRoots")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ReloadingRoots {
    /// Loads the bundle (failing now if it is unusable) and starts watching the file on the
    /// current tokio runtime; the watch ends when the last handle is dropped.
    pub fn watch(path: &Path) -> Result<Arc<Self>, TlsError> {
        let this = Arc::new(Self::load(path)?);
        tokio::spawn(reload_loop(Arc::downgrade(&this)));
        Ok(this)
    }

    fn load(path: &Path) -> Result<Self, TlsError> {
        let trust = Trust::new(path, read(path)?)?;
        let hints = Hints::new(trust.client.root_hint_subjects().to_vec());
        Ok(Self {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(trust)),
            hints,
        })
    }

    fn trust(&self) -> Arc<Trust> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The names of the CAs currently trusted.
    fn hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints.latest().subjects
    }

    /// Re-reads the file; swaps the CAs when it changed and holds at least one usable CA
    /// certificate. Returns whether they were swapped.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let pem = read(&self.path)?;
        if self.trust().pem == pem {
            return Ok(false);
        }
        let trust = Trust::new(&self.path, pem)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        self.hints.push(trust.client.root_hint_subjects().to_vec());
        *cur = Arc::new(trust);
        Ok(true)
    }
}

impl Reload for ReloadingRoots {
    const WHAT: &'static str = "TLS CA bundle";

    fn file(&self) -> &Path {
        &self.path
    }

    fn reload(&self) -> Result<bool, TlsError> {
        ReloadingRoots::reload(self)
    }
}

/// Verifies the server's certificate against the current CAs of a [`ReloadingRoots`].
#[derive(Debug)]
struct CurrentServerRoots(Arc<ReloadingRoots>);

impl ServerCertVerifier for CurrentServerRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.trust().server.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .trust()
            .server
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .trust()
            .server
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.trust().server.supported_verify_schemes()
    }
}

/// Accepts client certificates the current CAs signed and, when `allowed` is not empty, only
/// those whose subject alternative names include one of `allowed` (DNS names or IP addresses).
#[derive(Debug)]
struct AllowedNames {
    roots: Arc<ReloadingRoots>,
    allowed: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedNames {
    fn offer_client_auth(&self) -> bool {
        self.roots.trust().client.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.roots.trust().client.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Go clients (grpcurl) send only a certificate issued by a hinted CA.
        self.roots.hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified =
            self.roots
                .trust()
                .client
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots
            .trust()
            .client
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots
            .trust()
            .client
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots.trust().client.supported_verify_schemes()
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
                let roots = ReloadingRoots::watch(ca)?;
                builder.with_client_cert_verifier(Arc::new(AllowedNames { roots, allowed }))
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
        // A resumed session skips certificate verification: after a CA rotation a client could
        // come back on a session its old-CA certificate opened. Handshakes are few (one per
        // shim connection), so none is resumed.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }
}

/// A rustls client config for the shim: the server must chain to `ca_file` (the system's roots
/// are not used: the provider's CA is private), and the client presents `cert_key` when given;
/// both are re-read when their files change.
pub fn client_config(
    ca_file: &Path,
    cert_key: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = ReloadingRoots::watch(ca_file)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CurrentServerRoots(roots)));
    let mut config = match cert_key {
        Some((cert, key)) => {
            builder.with_client_cert_resolver(ReloadingKey::watch(cert, key)? as Arc<_>)
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Every connection verifies the server against the current CAs (see `server_config`).
    config.resumption = rustls::client::Resumption::disabled();
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

    fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        rcgen::CertifiedIssuer::self_signed(params, key).expect("CA")
    }

    fn leaf(
        ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        name: &str,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("key");
        params.signed_by(&key, ca).expect("signed").der().clone()
    }

    #[test]
    fn a_rotated_ca_bundle_is_used_by_both_verifiers_and_a_garbage_one_is_not() {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.crt");
        let (a, b) = (ca("vk-ca-a"), ca("vk-ca-b"));
        std::fs::write(&path, a.pem()).expect("write");
        // Not watched: the test calls reload itself.
        let roots = Arc::new(ReloadingRoots::load(&path).expect("loads"));
        let clients = AllowedNames {
            roots: roots.clone(),
            allowed: vec![ServerName::try_from("shim.example").expect("name")],
        };
        let servers = CurrentServerRoots(roots.clone());
        let provider_name = ServerName::try_from("provider.example").expect("name");
        let now = UnixTime::now();
        let client_ok = |cert: &CertificateDer<'_>| clients.verify_client_cert(cert, &[], now);
        let server_ok = |cert: &CertificateDer<'_>| {
            servers.verify_server_cert(cert, &[], &provider_name, &[], now)
        };
        let hinted = |cn: &str| {
            let hints = clients.root_hint_subjects();
            hints.len() == 1
                && hints[0]
                    .as_ref()
                    .windows(cn.len())
                    .any(|w| w == cn.as_bytes())
        };
        let (client_a, server_a) = (
            leaf(&a, "shim.example", ClientAuth),
            leaf(&a, "provider.example", ServerAuth),
        );
        let (client_b, server_b) = (
            leaf(&b, "shim.example", ClientAuth),
            leaf(&b, "provider.example", ServerAuth),
        );
        assert!(client_ok(&client_a).is_ok());
        assert!(server_ok(&server_a).is_ok());
        assert!(client_ok(&client_b).is_err());
        assert!(server_ok(&server_b).is_err());
        assert!(hinted("vk-ca-a"));
        assert!(!roots.reload().expect("unchanged file"), "nothing changed");

        // The bundle now holds CA B only.
        std::fs::write(&path, b.pem()).expect("write");
        assert!(roots.reload().expect("CA B"));
        assert!(client_ok(&client_b).is_ok());
        assert!(server_ok(&server_b).is_ok());
        assert!(client_ok(&client_a).is_err(), "A-signed client accepted");
        assert!(server_ok(&server_a).is_err(), "A-signed server accepted");
        assert!(hinted("vk-ca-b"));

        // A half-written bundle and garbage are refused with the file named; B stays.
        let pem = a.pem();
        for bad in [&pem.as_bytes()[..pem.len() / 2], b"not a CA"] {
            std::fs::write(&path, bad).expect("write");
            let err = roots.reload().expect_err("unusable bundle").to_string();
            assert!(err.contains("ca.crt"), "{err}");
            assert!(client_ok(&client_b).is_ok());
            assert!(server_ok(&server_b).is_ok());
            assert!(client_ok(&client_a).is_err());
            assert!(hinted("vk-ca-b"));
        }
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
