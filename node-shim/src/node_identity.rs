//! The shim's identity towards the API server when `--tls-bootstrap` is set: `system:node:<name>`
//! in group `system:nodes`, as the kubelet has, so that the Node authorizer and NodeRestriction
//! confine it to its own Node, Lease and pods and to the Secrets, ConfigMaps and tokens those pods
//! use. The starting credentials (`--kubeconfig` or the in-cluster ServiceAccount) only request the
//! client certificate from the `kubernetes.io/kube-apiserver-client-kubelet` signer, as the
//! kubelet's TLS bootstrap does; the certificate is kept in `--cert-dir` across restarts and
//! renewed, as the node itself, at 80% of its life.

use parking_lot::RwLock;
use std::{
    future::Future,
    io::Write,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use http::{Request, Response};
use kube::{client::Body, config::AuthInfo};
use rcgen::{CertificateParams, DnType};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_util::sync::CancellationToken;

use crate::{
    certificates::{self, Issued},
    config::Config,
};

/// The signer whose certificates the API server accepts as kubelet client identities.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The usages the CSR approver requires of a node client certificate.
const USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];
const CERT_FILE: &str = "node-client.crt";
const KEY_FILE: &str = "node-client.key";

/// The node identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The certificate could not be obtained.
    #[error("node client certificate: {0}")]
    Certificate(#[from] certificates::Error),
    /// The certificate directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The client could not be built.
    #[error("building the node client: {0}")]
    Client(#[from] kube::Error),
}

/// The user a node's certificate names.
pub fn node_user(node_name: &str) -> String {
    format!("system:node:{node_name}")
}

fn client_params(node_name: &str) -> Result<CertificateParams, certificates::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, node_user(node_name));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    Ok(params)
}

/// A `kube::Client` that runs as the node: the starting credentials obtain the first certificate
/// (unless a valid one is kept in `--cert-dir`), and a background task renews it before expiry.
pub async fn client(
    start: kube::Config,
    cfg: &Arc<Config>,
    shutdown: &CancellationToken,
) -> Result<kube::Client, Error> {
    let dir = cfg.cert_dir.clone();
    // As the kubelet: a kept certificate still valid is used (and renewed as the node when due,
    // at once if that time has passed); only a missing or expired one means bootstrapping again.
    let renew = match stored(&dir, &cfg.node_name) {
        Some((renew, expiry)) if expiry > SystemTime::now() + Duration::from_secs(60) => {
            tracing::info!(dir = %dir.display(), "using the node client certificate kept from before");
            renew
        }
        _ => {
            let bootstrap = kube::Client::try_from(start.clone())?;
            tracing::info!(node = %cfg.node_name, "requesting a node client certificate (TLS bootstrap)");
            let issued = request(&bootstrap, &cfg.node_name).await?;
            store(&dir, &issued)?;
            not_before_a_minute(issued.renew_at)
        }
    };
    let current = Arc::new(RwLock::new(node_client(&start, &dir)?));
    let client = kube::Client::new(Rotating(current.clone()), start.default_namespace.clone());
    tokio::spawn(renew_loop(
        start,
        cfg.clone(),
        current,
        renew,
        shutdown.clone(),
    ));
    Ok(client)
}

async fn request(client: &kube::Client, node_name: &str) -> Result<Issued, certificates::Error> {
    certificates::request(
        client,
        &format!("node-client-{node_name}"),
        client_params(node_name)?,
        SIGNER,
        &USAGES,
    )
    .await
}

/// The kept certificate's renewal time and expiry, if it is there, parses, and names this node.
fn stored(dir: &Path, node_name: &str) -> Option<(SystemTime, SystemTime)> {
    let pem = std::fs::read(dir.join(CERT_FILE)).ok()?;
    let leaf = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    if !dir.join(KEY_FILE).is_file() {
        return None;
    }
    let (user, _) = crate::kubelet::tls::certificate_user(&leaf)?;
    let (_, expiry) = certificates::validity(&leaf)?;
    (user == node_user(node_name)).then(|| (certificates::renew_at(&leaf), expiry))
}

/// Writes key and certificate (key first, owner-only) so a crash between the two leaves a pair
/// that `stored` rejects rather than a certificate with another key.
fn store(dir: &Path, issued: &Issued) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let _ = std::fs::remove_file(dir.join(CERT_FILE));
    write_private(&dir.join(KEY_FILE), issued.key.serialize_pem().as_bytes())
        .map_err(io(&dir.join(KEY_FILE)))?;
    write_private(&dir.join(CERT_FILE), &issued.chain_pem).map_err(io(&dir.join(CERT_FILE)))?;
    Ok(())
}

fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A client for the same API server as `start`, authenticated only by the kept certificate.
fn node_client(start: &kube::Config, dir: &Path) -> Result<kube::Client, Error> {
    let mut config = start.clone();
    config.auth_info = AuthInfo {
        client_certificate: Some(dir.join(CERT_FILE).display().to_string()),
        client_key: Some(dir.join(KEY_FILE).display().to_string()),
        ..Default::default()
    };
    Ok(kube::Client::try_from(config)?)
}

async fn renew_loop(
    start: kube::Config,
    cfg: Arc<Config>,
    current: Arc<RwLock<kube::Client>>,
    mut renew: SystemTime,
    shutdown: CancellationToken,
) {
    loop {
        let wait = renew.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        tracing::info!("renewing the node client certificate");
        let node = read(&current);
        // As the node first (the kubelet's way); the starting credentials if the node's own
        // certificate no longer works (e.g. it expired during an outage).
        let issued = match request(&node, &cfg.node_name).await {
            Ok(issued) => Ok(issued),
            Err(err) => {
                tracing::warn!(%err, "renewing as the node failed; trying the bootstrap credentials");
                match kube::Client::try_from(start.clone()) {
                    Ok(bootstrap) => request(&bootstrap, &cfg.node_name).await,
                    Err(err) => Err(certificates::Error::Kube(err)),
                }
            }
        };
        let swapped = match issued {
            Ok(issued) => store(&cfg.cert_dir, &issued)
                .and_then(|()| node_client(&start, &cfg.cert_dir))
                .map(|client| (client, issued.renew_at)),
            Err(err) => Err(Error::Certificate(err)),
        };
        match swapped {
            Ok((client, next)) => {
                *current.write() = client;
                renew = not_before_a_minute(next);
                tracing::info!("node client certificate renewed");
            }
            Err(err) => {
                tracing::warn!(%err, "renewing the node client certificate failed; retrying in 1m");
                renew = SystemTime::now() + Duration::from_secs(60);
            }
        }
    }
}

/// A signer whose certificates are due for renewal as soon as they are issued (the 1.20 signer
/// backdates by five minutes, so a `--cluster-signing-duration` under about six minutes does
/// that) must not be asked again in a tight loop.
fn not_before_a_minute(renew: SystemTime) -> SystemTime {
    let soonest = SystemTime::now() + Duration::from_secs(60);
    if renew < soonest {
        tracing::warn!(
            "the node client certificate is due for renewal as soon as issued (the signer's \
             certificates live too short); renewing in 1m"
        );
    }
    renew.max(soonest)
}

fn read(current: &RwLock<kube::Client>) -> kube::Client {
    current.read().clone()
}

/// Sends each request through the client built from the newest certificate; requests (and
/// watches) already under way finish on the connection they started on.
#[derive(Clone)]
struct Rotating(Arc<RwLock<kube::Client>>);

impl tower::Service<Request<Body>> for Rotating {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = read(&self.0);
        Box::pin(async move { client.send(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_certificate_is_used_only_for_its_own_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = client_params("vk-a")
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let issued = Issued {
            chain: vec![cert.der().clone()],
            chain_pem: cert.pem().into_bytes(),
            key,
            renew_at: SystemTime::now(),
        };
        assert_eq!(stored(dir.path(), "vk-a"), None, "nothing kept yet");
        store(dir.path(), &issued).expect("store");
        let (renew, expiry) = stored(dir.path(), "vk-a").expect("kept");
        assert!(renew > SystemTime::now() && expiry > renew);
        assert_eq!(stored(dir.path(), "vk-b"), None, "another node's name");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(dir.path().join(KEY_FILE)).expect("rm");
        assert_eq!(
            stored(dir.path(), "vk-a"),
            None,
            "a certificate without its key"
        );
    }
}
