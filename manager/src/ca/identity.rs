//! What a certificate says about its holder. The identity is written by the
//! signer as ONE subject-alternative-name URI,
//! `shoal://<cluster id>/<epoch>/<role>/<node id>`, which is what the server
//! side reads back (the subject CN/O/OU repeat it for people reading the
//! certificate with openssl, and are not trusted). A certificate without
//! exactly one such URI is not a shoal certificate and is refused.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CaError, Role};

const SCHEME: &str = "shoal://";

/// Who is calling (or who a certificate is issued to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The node id (workers, managers) or client name (`shoal ca client-cert`).
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
    /// The cluster epoch the certificate was issued in: raised by
    /// `shoal init --force-new-cluster`, it fences older managers out.
    pub epoch: u64,
}

impl PeerIdentity {
    /// An identity with its names checked, so that it fits in a URI and a
    /// distinguished name without escaping.
    pub fn new(
        node_id: impl Into<String>,
        role: Role,
        cluster_id: impl Into<String>,
        epoch: u64,
    ) -> Result<PeerIdentity, CaError> {
        let id = PeerIdentity {
            node_id: node_id.into(),
            role,
            cluster_id: cluster_id.into(),
            epoch,
        };
        check_name("node id", &id.node_id)?;
        check_name("cluster id", &id.cluster_id)?;
        Ok(id)
    }

    /// The SAN URI that carries this identity in a certificate.
    pub fn to_uri(&self) -> String {
        format!(
            "{SCHEME}{}/{}/{}/{}",
            self.cluster_id, self.epoch, self.role, self.node_id
        )
    }

    /// Parses the SAN URI written by [`PeerIdentity::to_uri`].
    pub fn from_uri(uri: &str) -> Result<PeerIdentity, CaError> {
        let bad = |why: &str| CaError::BadIdentity(format!("{uri:?}: {why}"));
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("not a shoal:// URI"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [cluster_id, epoch, role, node_id] = parts[..] else {
            return Err(bad(
                "expected shoal://<cluster id>/<epoch>/<role>/<node id>",
            ));
        };
        let epoch = epoch
            .parse::<u64>()
            .map_err(|_| bad("the epoch is not a number"))?;
        PeerIdentity::new(node_id, role.parse()?, cluster_id, epoch)
    }

    /// The identity in a peer's leaf certificate (DER). The certificate's
    /// chain and validity are checked by rustls during the handshake; this
    /// only reads what the signer wrote.
    pub fn from_certificate(cert_der: &[u8]) -> Result<PeerIdentity, CaError> {
        let (_, cert) = X509Certificate::from_der(cert_der)
            .map_err(|e| CaError::BadCertificate(format!("cannot parse it as X.509: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| CaError::BadCertificate(format!("bad subject alternative names: {e}")))?;
        let mut uris = san
            .iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(*uri),
                _ => None,
            });
        match (uris.next(), uris.next()) {
            (Some(uri), None) => PeerIdentity::from_uri(uri),
            (None, _) => Err(CaError::BadCertificate(
                "it carries no shoal identity (a SAN URI \
                 shoal://<cluster id>/<epoch>/<role>/<node id>); it was not issued by a shoal CA"
                    .into(),
            )),
            (Some(_), Some(_)) => Err(CaError::BadCertificate(
                "it carries more than one shoal identity URI".into(),
            )),
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (cluster {}, epoch {})",
            self.role, self.node_id, self.cluster_id, self.epoch
        )
    }
}

/// Node ids, client names and cluster ids: 1 to 64 of `A-Z a-z 0-9 . _ -`,
/// so they need no escaping in a URI path or a distinguished name.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), CaError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CaError::BadIdentity(format!(
            "{what} {name:?} must be 1 to 64 characters of letters, digits, '.', '_' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_its_uri() {
        let id = PeerIdentity::new("n1", Role::Manager, "c1", 3).unwrap();
        assert_eq!(id.to_uri(), "shoal://c1/3/manager/n1");
        assert_eq!(PeerIdentity::from_uri(&id.to_uri()).unwrap(), id);
    }

    #[test]
    fn malformed_uris_are_refused_naming_the_uri() {
        for (uri, why) in [
            ("https://c1/3/manager/n1", "not a shoal:// URI"),
            ("shoal://c1/3/manager", "expected shoal://"),
            ("shoal://c1/3/manager/n1/x", "expected shoal://"),
            ("shoal://c1/x/manager/n1", "epoch is not a number"),
            ("shoal://c1/3/root/n1", "unknown role \"root\""),
            ("shoal://c1/3/manager/", "node id \"\""),
            ("shoal://c 1/3/manager/n1", "cluster id \"c 1\""),
        ] {
            let err = PeerIdentity::from_uri(uri).unwrap_err().to_string();
            assert!(err.contains(why), "{uri}: {err}");
        }
    }

    #[test]
    fn garbage_and_foreign_certificates_are_refused() {
        let err = PeerIdentity::from_certificate(b"not DER")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot parse it as X.509"), "{err}");

        // A well-formed certificate that no shoal CA issued.
        let key = rcgen::KeyPair::generate().unwrap();
        let foreign = rcgen::CertificateParams::new(vec!["example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err = PeerIdentity::from_certificate(foreign.der())
            .unwrap_err()
            .to_string();
        assert!(err.contains("carries no shoal identity"), "{err}");
    }

    #[test]
    fn every_truncation_of_a_certificate_is_an_error_not_a_panic() {
        let ca = crate::ca::testutil::ca("c1");
        let creds = crate::ca::testutil::credentials(&ca, "w1", Role::Worker);
        let der = creds.certificate_der();
        for len in 0..der.len() {
            assert!(
                PeerIdentity::from_certificate(&der[..len]).is_err(),
                "{len}"
            );
        }
        let mut flipped = der.to_vec();
        for i in (0..flipped.len()).step_by(7) {
            flipped[i] ^= 0xff;
            // Whatever it reads, it must not panic; a changed identity byte
            // is caught by the signature check during the handshake.
            let _ = PeerIdentity::from_certificate(&flipped);
            flipped[i] ^= 0xff;
        }
        assert_eq!(PeerIdentity::from_certificate(der).unwrap().node_id, "w1");
    }
}
