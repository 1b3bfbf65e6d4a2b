//! What a node (or a remote CLI) holds to speak mutual TLS: its certificate,
//! its private key and the CA certificate it trusts. Stored as
//! `cert.pem`, `key.pem` (mode 0600) and `ca.pem`, the layout of Docker's
//! `--tlsverify` directories, so `shoal -H tcp://HOST:2377 --tls-dir DIR`
//! reads the same files `shoal ca client-cert --out DIR` writes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::files::{self, bad};
use super::{CaError, CertValidity, NodeKeys, PeerIdentity};

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
const CA_FILE: &str = "ca.pem";

/// A certificate with its private key and its CA, checked to belong
/// together when built or loaded.
pub struct NodeCredentials {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    ca: CertificateDer<'static>,
    identity: PeerIdentity,
}

impl Clone for NodeCredentials {
    fn clone(&self) -> Self {
        NodeCredentials {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
            identity: self.identity.clone(),
        }
    }
}

impl std::fmt::Debug for NodeCredentials {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl NodeCredentials {
    /// Credentials from a certificate the CA issued for `keys`.
    pub fn new(
        cert: CertificateDer<'static>,
        keys: &NodeKeys,
        ca: CertificateDer<'static>,
    ) -> Result<NodeCredentials, CaError> {
        NodeCredentials::from_parts(cert, keys.private_key_der(), ca)
    }

    /// Checks that the parts belong together: the certificate is a shoal
    /// certificate signed by `ca`, and `key` is its private key.
    pub fn from_parts(
        cert: CertificateDer<'static>,
        key: PrivatePkcs8KeyDer<'static>,
        ca: CertificateDer<'static>,
    ) -> Result<NodeCredentials, CaError> {
        let identity = PeerIdentity::from_certificate(&cert)?;
        let (_, leaf) = X509Certificate::from_der(&cert)
            .map_err(|e| CaError::BadCertificate(format!("cannot parse it as X.509: {e}")))?;
        let (_, ca_x509) = X509Certificate::from_der(&ca).map_err(|e| {
            CaError::BadCertificate(format!("cannot parse the CA certificate as X.509: {e}"))
        })?;
        leaf.verify_signature(Some(ca_x509.public_key()))
            .map_err(|_| {
                CaError::BadCertificate(format!(
                    "the certificate of {identity} was not issued by this CA"
                ))
            })?;
        let key_pair = KeyPair::try_from(&key)
            .map_err(|e| CaError::BadCertificate(format!("unusable private key: {e}")))?;
        if leaf.public_key().subject_public_key.data.as_ref() != key_pair.public_key_raw() {
            return Err(CaError::BadCertificate(format!(
                "the private key does not belong to the certificate of {identity}"
            )));
        }
        Ok(NodeCredentials {
            cert,
            key,
            ca,
            identity,
        })
    }

    /// The files [`NodeCredentials::save`] writes in `dir` (certificate,
    /// key, CA certificate), so a caller can refuse to overwrite them.
    pub fn paths_in(dir: &Path) -> [PathBuf; 3] {
        [CERT_FILE, KEY_FILE, CA_FILE].map(|f| dir.join(f))
    }

    /// Writes the credentials into `dir` (created mode 0700 if missing).
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        files::create_private_dir(dir)?;
        files::write_key(&dir.join(KEY_FILE), &self.key)?;
        files::write_certs(&dir.join(CERT_FILE), std::slice::from_ref(&self.cert))?;
        files::write_certs(&dir.join(CA_FILE), std::slice::from_ref(&self.ca))
    }

    /// Reads what [`NodeCredentials::save`] wrote, with the same checks as
    /// [`NodeCredentials::from_parts`].
    pub fn load(dir: &Path) -> Result<NodeCredentials, CaError> {
        let cert = files::read_certs(&dir.join(CERT_FILE))?.remove(0);
        let key = files::read_key(&dir.join(KEY_FILE))?;
        let ca = files::read_certs(&dir.join(CA_FILE))?.remove(0);
        NodeCredentials::from_parts(cert, key, ca)
            .map_err(|e| bad(dir, "credentials directory", e.to_string()))
    }

    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn ca_certificate_der(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    pub(crate) fn private_key_der(&self) -> &PrivatePkcs8KeyDer<'static> {
        &self.key
    }

    pub fn validity(&self) -> Result<CertValidity, CaError> {
        CertValidity::of(&self.cert)
    }

    /// Whether the node should ask for a new certificate now.
    pub fn needs_renewal(&self, now: SystemTime) -> Result<bool, CaError> {
        Ok(self.validity()?.needs_renewal(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::testutil::{ca, credentials};
    use crate::ca::Role;

    #[test]
    fn credentials_round_trip_through_a_directory() {
        let ca = ca("c1");
        let creds = credentials(&ca, "alice", Role::Client);
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        creds.save(&tls_dir).unwrap();
        let loaded = NodeCredentials::load(&tls_dir).unwrap();
        assert_eq!(loaded.identity(), creds.identity());
        assert_eq!(loaded.certificate_der(), creds.certificate_der());
        assert!(!loaded.needs_renewal(SystemTime::now()).unwrap());
    }

    #[test]
    fn parts_that_do_not_belong_together_are_refused() {
        let ca1 = ca("c1");
        let ca2 = ca("c1");
        let a = credentials(&ca1, "w1", Role::Worker);
        let err = NodeCredentials::from_parts(
            a.certificate_der().clone(),
            a.private_key_der().clone_key(),
            ca2.certificate_der().clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("was not issued by this CA"), "{err}");

        let b = credentials(&ca1, "w2", Role::Worker);
        let err = NodeCredentials::from_parts(
            a.certificate_der().clone(),
            b.private_key_der().clone_key(),
            ca1.certificate_der().clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("private key does not belong"), "{err}");
    }
}
