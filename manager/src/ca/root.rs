//! The cluster's root CA: an ECDSA P-256 key and a self-signed certificate
//! made by `shoal init`. The key lives only in a manager's data dir
//! (`ca/ca.key`, mode 0600) and is never sent anywhere: other nodes only
//! ever see the certificate, and pin it by its digest.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::files::{self, bad};
use super::identity::check_name;
use super::{CaDigest, CaError, JoinToken};

const CERT_FILE: &str = "ca.crt";
const KEY_FILE: &str = "ca.key";

/// The root CA, able to sign: only managers hold one.
pub struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    cluster_id: String,
    digest: CaDigest,
}

impl std::fmt::Debug for Ca {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cluster_id", &self.cluster_id)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new root CA for `cluster_id` and stores it in `dir`
    /// (created if missing), refusing to overwrite an existing one.
    pub fn create(dir: &Path, cluster_id: &str) -> Result<Ca, CaError> {
        let (cert_path, key_path) = paths(dir);
        if cert_path.exists() || key_path.exists() {
            return Err(CaError::CaExists(dir.to_path_buf()));
        }
        let ca = Ca::generate(cluster_id, SystemTime::now())?;
        files::create_private_dir(dir)?;
        files::write_key(&key_path, &ca.private_key_der())?;
        files::write_certs(&cert_path, std::slice::from_ref(&ca.cert))?;
        tracing::info!(cluster_id, digest = %ca.digest, dir = %dir.display(), "created the cluster root CA");
        Ok(ca)
    }

    /// A new root CA in memory (subject "shoal root CA `<cluster id>`",
    /// O = cluster id), valid from an hour before `now` (clock skew between
    /// nodes) for the default CA validity.
    pub fn generate(cluster_id: &str, now: SystemTime) -> Result<Ca, CaError> {
        check_name("cluster id", cluster_id)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            CaError::Generate {
                what: "the CA key",
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("shoal root CA {cluster_id}"));
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after =
            (now + Duration::from_millis(shoal_proto::defaults::CA_CERT_VALIDITY_MS)).into();
        params.serial_number = Some(super::issue::random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|source| CaError::Generate {
                what: "the CA certificate",
                source,
            })?;
        let cert = cert.der().clone();
        Ok(Ca {
            digest: CaDigest::of(&cert),
            cert,
            issuer: Issuer::new(params, key),
            cluster_id: cluster_id.to_string(),
        })
    }

    /// Loads the CA stored by [`Ca::create`], refusing a key file others can
    /// read and a key that does not belong to the certificate.
    pub fn load(dir: &Path) -> Result<Ca, CaError> {
        let (cert_path, key_path) = paths(dir);
        let cert = files::read_certs(&cert_path)?.remove(0);
        let key_der = files::read_key(&key_path)?;
        Ca::from_parts(cert, key_der, &cert_path, &key_path)
    }

    /// A CA handed over by another manager (its certificate and PKCS#8 key,
    /// DER), checked as [`Ca::load`] checks files; `source` names where it
    /// came from in errors.
    pub fn from_der(cert: &[u8], key: &[u8], source: &str) -> Result<Ca, CaError> {
        let name = Path::new(source);
        Ca::from_parts(
            CertificateDer::from(cert.to_vec()),
            PrivatePkcs8KeyDer::from(key.to_vec()),
            name,
            name,
        )
    }

    /// Stores a CA received from another manager in `dir`, as
    /// [`Ca::create`] would (key mode 0600), refusing to overwrite.
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        let (cert_path, key_path) = paths(dir);
        if cert_path.exists() || key_path.exists() {
            return Err(CaError::CaExists(dir.to_path_buf()));
        }
        files::create_private_dir(dir)?;
        files::write_key(&key_path, &self.private_key_der())?;
        files::write_certs(&cert_path, std::slice::from_ref(&self.cert))
    }

    fn from_parts(
        cert: CertificateDer<'static>,
        key_der: PrivatePkcs8KeyDer<'static>,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Ca, CaError> {
        let key = KeyPair::try_from(&key_der)
            .map_err(|e| bad(key_path, "CA private key", e.to_string()))?;
        let (_, x509) = X509Certificate::from_der(&cert)
            .map_err(|e| bad(cert_path, "CA certificate", e.to_string()))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad(
                key_path,
                "CA private key",
                format!(
                    "it does not belong to the certificate in {}",
                    cert_path.display()
                ),
            ));
        }
        if !x509.is_ca() {
            return Err(bad(
                cert_path,
                "CA certificate",
                "it is not a CA certificate".into(),
            ));
        }
        let cluster_id = x509
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .ok_or_else(|| {
                bad(
                    cert_path,
                    "CA certificate",
                    "it names no cluster (O=)".into(),
                )
            })?
            .to_string();
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| bad(cert_path, "CA certificate", e.to_string()))?;
        Ok(Ca {
            digest: CaDigest::of(&cert),
            cert,
            issuer,
            cluster_id,
        })
    }

    /// Where [`Ca::create`] in `dir` puts the certificate (PEM): what an
    /// operator (or a test) reads to check a token's digest
    /// ([`CaDigest::of_pem_file`]).
    pub fn certificate_path(dir: &Path) -> PathBuf {
        dir.join(CERT_FILE)
    }

    /// Where [`Ca::create`] in `dir` puts the private key (mode 0600).
    pub fn key_path(dir: &Path) -> PathBuf {
        dir.join(KEY_FILE)
    }

    /// Whether `dir` holds any part of a CA (certificate or key).
    pub fn exists_in(dir: &Path) -> bool {
        let (cert, key) = paths(dir);
        cert.exists() || key.exists()
    }

    /// The CA certificate (DER): what every node trusts.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The digest join tokens carry.
    pub fn digest(&self) -> &CaDigest {
        &self.digest
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The join token for a secret the store keeps.
    pub fn join_token(&self, secret: &str) -> Result<JoinToken, CaError> {
        JoinToken::new(self.digest.clone(), secret)
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The CA's private key (PKCS#8 DER): only for handing the CA to a new
    /// manager over mutual TLS ([`Ca::from_der`] on the other side).
    pub fn private_key_der(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.issuer.key().serialize_der())
    }
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (Ca::certificate_path(dir), Ca::key_path(dir))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn create_stores_a_p256_ca_with_a_private_key_and_load_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = Ca::create(&ca_dir, "c1").unwrap();
        let mode = fs::metadata(ca_dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&ca_dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        let (_, x509) = X509Certificate::from_der(ca.certificate_der()).unwrap();
        assert!(x509.is_ca());
        assert_eq!(x509.subject().to_string(), "CN=shoal root CA c1, O=c1");
        assert_eq!(
            x509.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        let years = x509.validity().time_to_expiration().unwrap().whole_days() / 365;
        assert!(years >= 19, "{years} years");

        let loaded = Ca::load(&ca_dir).unwrap();
        assert_eq!(loaded.certificate_der(), ca.certificate_der());
        assert_eq!(loaded.digest(), ca.digest());
        assert_eq!(loaded.cluster_id(), "c1");
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    #[test]
    fn create_refuses_to_overwrite_an_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = Ca::create(dir.path(), "c1").unwrap();
        let err = Ca::create(dir.path(), "c2").unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(Ca::load(dir.path()).unwrap().digest(), first.digest());
    }

    #[test]
    fn load_refuses_a_world_readable_key_and_a_key_of_another_ca() {
        let dir = tempfile::tempdir().unwrap();
        Ca::create(&dir.path().join("a"), "c1").unwrap();
        Ca::create(&dir.path().join("b"), "c1").unwrap();
        let key_a = dir.path().join("a").join(KEY_FILE);

        fs::set_permissions(&key_a, fs::Permissions::from_mode(0o640)).unwrap();
        let err = Ca::load(&dir.path().join("a")).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(&key_a, fs::Permissions::from_mode(0o600)).unwrap();

        fs::copy(dir.path().join("b").join(KEY_FILE), &key_a).unwrap();
        let err = Ca::load(&dir.path().join("a")).unwrap_err().to_string();
        assert!(err.contains("does not belong to the certificate"), "{err}");
    }

    #[test]
    fn a_bad_cluster_id_is_refused() {
        let err = Ca::generate("a/b", SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster id \"a/b\""), "{err}");
    }
}
