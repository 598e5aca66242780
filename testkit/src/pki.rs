//! A throw-away certificate authority for one control plane, and the certificates it issues.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files of one issued certificate.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
}

impl CertFiles {
    /// The certificate's PEM text.
    pub fn cert_pem(&self) -> anyhow::Result<String> {
        fs::read_to_string(&self.cert).with_context(|| format!("reading {}", self.cert.display()))
    }

    /// The key's PEM text.
    pub fn key_pem(&self) -> anyhow::Result<String> {
        fs::read_to_string(&self.key).with_context(|| format!("reading {}", self.key.display()))
    }
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS server.
    Server,
    /// TLS client.
    Client,
}

/// A CA whose certificate and key live in `dir` as `ca.crt` and `ca.key`.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate and key files.
    pub ca_files: CertFiles,
}

impl Pki {
    /// Creates a new CA in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "vk-test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(params, key)?;
        let ca_files = write_pair(dir, "ca", &ca.pem(), &key_pem)?;
        Ok(Self {
            dir: dir.to_owned(),
            ca,
            ca_files,
        })
    }

    /// Issues a certificate named `file_stem` in the CA's directory.
    ///
    /// `sans` are DNS names or IP addresses; `organizations` become O= entries (Kubernetes groups).
    pub fn issue(
        &self,
        file_stem: &str,
        common_name: &str,
        organizations: &[&str],
        sans: &[&str],
        usage: Usage,
    ) -> anyhow::Result<CertFiles> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for org in organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *org);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        write_pair(&self.dir, file_stem, &cert.pem(), &key.serialize_pem())
    }

    /// Writes a fresh key pair (e.g. for service-account token signing) as `<stem>.key` (private)
    /// and `<stem>.pub` (public); returns `(private, public)` paths.
    pub fn new_key_pair(&self, file_stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let private = self.dir.join(format!("{file_stem}.key"));
        let public = self.dir.join(format!("{file_stem}.pub"));
        fs::write(&private, key.serialize_pem())?;
        fs::write(&public, key.public_key_pem())?;
        Ok((private, public))
    }

    /// The CA certificate as PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }
}

fn write_pair(dir: &Path, stem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<CertFiles> {
    let files = CertFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    fs::write(&files.cert, cert_pem)
        .with_context(|| format!("writing {}", files.cert.display()))?;
    fs::write(&files.key, key_pem).with_context(|| format!("writing {}", files.key.display()))?;
    Ok(files)
}
