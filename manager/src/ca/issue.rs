//! Node and client certificates. A node makes its own key pair and sends a
//! CSR; the signer uses ONLY the CSR's public key (after checking the CSR's
//! self-signature, which proves the node holds the private key). Everything
//! the certificate asserts (node id, role, cluster, epoch) comes from the
//! signer's arguments, which the manager takes from the token and the store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Ca, CaError, NodeCredentials, PeerIdentity, Role};

/// Certificates are valid from a little before they are issued, so a peer
/// whose clock is slightly behind accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A node's (or a CLI client's) own key pair, made where it is used: the
/// private key never travels.
pub struct NodeKeys {
    key: KeyPair,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKeys(..)")
    }
}

impl NodeKeys {
    /// A fresh ECDSA P-256 key pair.
    pub fn generate() -> Result<NodeKeys, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            CaError::Generate {
                what: "a node key",
                source,
            }
        })?;
        Ok(NodeKeys { key })
    }

    /// A CSR for this key. It claims nothing: the signer would ignore it.
    pub fn csr_der(&self) -> Result<Vec<u8>, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "shoal node");
        let csr = params
            .serialize_request(&self.key)
            .map_err(|source| CaError::Generate {
                what: "a certificate signing request",
                source,
            })?;
        Ok(csr.der().to_vec())
    }

    pub fn private_key_der(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der())
    }
}

impl Ca {
    /// Signs a certificate for `identity` with the public key of `csr_der`,
    /// valid for `validity` from now (see [`Ca::issue_at`]).
    pub fn issue(
        &self,
        csr_der: &[u8],
        identity: &PeerIdentity,
        validity: Duration,
    ) -> Result<CertificateDer<'static>, CaError> {
        self.issue_at(csr_der, identity, validity, SystemTime::now())
    }

    /// Keys and a certificate made together on the manager that holds the
    /// CA: the first manager's own credentials at `shoal init`, and client
    /// credentials for `shoal ca client-cert`. Joining nodes never use this:
    /// they make their key themselves and send a CSR.
    pub fn issue_credentials(
        &self,
        identity: &PeerIdentity,
        validity: Duration,
    ) -> Result<NodeCredentials, CaError> {
        let keys = NodeKeys::generate()?;
        let cert = self.issue(&keys.csr_der()?, identity, validity)?;
        NodeCredentials::new(cert, &keys, self.certificate_der().clone())
    }

    /// Signs a certificate for `identity`. The CSR's subject, SANs and
    /// extensions are ignored: only its (verified) public key is used.
    ///
    /// The certificate carries the identity as the SAN URI of
    /// [`PeerIdentity::to_uri`] (and CN = node id, O = cluster, OU = role for
    /// people); the extended key usage is client auth, plus server auth and
    /// the DNS name [`shoal_proto::defaults::MANAGER_SERVER_NAME`] for managers
    /// only, so a worker's or client's certificate cannot serve as a manager.
    pub fn issue_at(
        &self,
        csr_der: &[u8],
        identity: &PeerIdentity,
        validity: Duration,
        now: SystemTime,
    ) -> Result<CertificateDer<'static>, CaError> {
        if identity.cluster_id != self.cluster_id() {
            return Err(CaError::BadIdentity(format!(
                "this CA signs for cluster {}, not {}",
                self.cluster_id(),
                identity.cluster_id
            )));
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| CaError::BadCsr(format!("cannot parse or verify it: {e}")))?;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.node_id.as_str());
        dn.push(DnType::OrganizationName, identity.cluster_id.as_str());
        dn.push(DnType::OrganizationalUnitName, identity.role.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(ia5(identity.to_uri())?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if identity.role == Role::Manager {
            let name = shoal_proto::defaults::MANAGER_SERVER_NAME;
            params
                .subject_alt_names
                .push(SanType::DnsName(ia5(name.into())?));
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + validity).into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, self.issuer())
            .map_err(|source| CaError::Generate {
                what: "the certificate",
                source,
            })?;
        tracing::info!(identity = %identity, "issued a certificate");
        Ok(cert.der().clone())
    }
}

fn ia5(s: String) -> Result<rcgen::string::Ia5String, CaError> {
    rcgen::string::Ia5String::try_from(s.clone())
        .map_err(|e| CaError::BadIdentity(format!("{s:?} is not ASCII: {e}")))
}

/// 127 random bits, positive as DER requires.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// When a certificate may be used, read from the certificate itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertValidity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertValidity {
    /// The validity the certificate was issued for: from issue to expiry,
    /// without the clock-skew allowance before issue that our CA adds.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
            .saturating_sub(CLOCK_SKEW)
    }

    pub fn of(cert_der: &[u8]) -> Result<CertValidity, CaError> {
        let (_, cert) = X509Certificate::from_der(cert_der)
            .map_err(|e| CaError::BadCertificate(format!("cannot parse it as X.509: {e}")))?;
        let at = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
        };
        Ok(CertValidity {
            not_before: at(cert.validity().not_before),
            not_after: at(cert.validity().not_after),
        })
    }

    /// Renew once less than a third of the validity is left (Swarm renews
    /// between half and 80% of the way; a third left leaves days for a
    /// manager outage even with the default 90 days), or when expired.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        let total = self.lifetime();
        match self.not_after.duration_since(now) {
            Ok(left) => left < total / shoal_proto::defaults::CERT_RENEW_FRACTION_LEFT,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::testutil::ca;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_csr_claiming_another_identity_gets_the_signers_identity() {
        let ca = ca("c1");
        let keys = NodeKeys::generate().unwrap();
        // The CSR claims to be manager m9 of another cluster.
        let mut claims = CertificateParams::new(vec!["shoal-manager".into()]).unwrap();
        claims.subject_alt_names.push(SanType::URI(
            "shoal://other/9/manager/m9".try_into().unwrap(),
        ));
        claims.distinguished_name.push(DnType::CommonName, "m9");
        claims
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "manager");
        let csr = claims.serialize_request(&keys.key).unwrap();

        let signer_says = PeerIdentity::new("w1", Role::Worker, "c1", 1).unwrap();
        let cert = ca.issue(csr.der(), &signer_says, 90 * DAY).unwrap();
        assert_eq!(PeerIdentity::from_certificate(&cert).unwrap(), signer_says);

        let (_, x509) = X509Certificate::from_der(&cert).unwrap();
        assert_eq!(x509.subject().to_string(), "CN=w1, O=c1, OU=worker");
        let sans = x509.subject_alternative_name().unwrap().unwrap();
        assert_eq!(sans.value.general_names.len(), 1, "only the signer's URI");
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth, "a worker cannot serve");
        // The certificate is for the CSR's key.
        assert_eq!(
            x509.public_key().subject_public_key.data.as_ref(),
            keys.key.public_key_raw()
        );
    }

    #[test]
    fn managers_get_the_server_name_and_server_auth() {
        let ca = ca("c1");
        let keys = NodeKeys::generate().unwrap();
        let id = PeerIdentity::new("m1", Role::Manager, "c1", 2).unwrap();
        let cert = ca.issue(&keys.csr_der().unwrap(), &id, DAY).unwrap();
        let (_, x509) = X509Certificate::from_der(&cert).unwrap();
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        let names = &x509
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert!(
            names.contains(&x509_parser::extensions::GeneralName::DNSName(
                "shoal-manager"
            ))
        );
        assert_eq!(PeerIdentity::from_certificate(&cert).unwrap(), id);
    }

    #[test]
    fn garbage_csrs_tampered_csrs_and_other_clusters_are_refused() {
        let ca = ca("c1");
        let id = PeerIdentity::new("w1", Role::Worker, "c1", 1).unwrap();
        let err = ca.issue(b"junk", &id, DAY).unwrap_err().to_string();
        assert!(
            err.starts_with("certificate signing request refused"),
            "{err}"
        );

        // Flip a byte of the signature: the proof of possession fails.
        let mut csr = NodeKeys::generate().unwrap().csr_der().unwrap();
        let last = csr.len() - 1;
        csr[last] ^= 1;
        let err = ca.issue(&csr, &id, DAY).unwrap_err().to_string();
        assert!(
            err.starts_with("certificate signing request refused"),
            "{err}"
        );

        let csr = NodeKeys::generate().unwrap().csr_der().unwrap();
        let other = PeerIdentity::new("w1", Role::Worker, "c2", 1).unwrap();
        let err = ca.issue(&csr, &other, DAY).unwrap_err().to_string();
        assert!(err.contains("signs for cluster c1, not c2"), "{err}");
    }

    #[test]
    fn renewal_keeps_the_node_id_with_a_new_key() {
        let ca = ca("c1");
        let id = PeerIdentity::new("w1", Role::Worker, "c1", 1).unwrap();
        let first = ca
            .issue(&NodeKeys::generate().unwrap().csr_der().unwrap(), &id, DAY)
            .unwrap();
        let renewed = ca
            .issue(&NodeKeys::generate().unwrap().csr_der().unwrap(), &id, DAY)
            .unwrap();
        assert_ne!(first, renewed);
        assert_eq!(
            PeerIdentity::from_certificate(&renewed).unwrap().node_id,
            "w1"
        );
    }

    #[test]
    fn renewal_is_due_when_less_than_a_third_of_the_validity_is_left() {
        let ca = ca("c1");
        let id = PeerIdentity::new("w1", Role::Worker, "c1", 1).unwrap();
        let now = SystemTime::now();
        let csr = NodeKeys::generate().unwrap().csr_der().unwrap();
        let cert = ca.issue_at(&csr, &id, 90 * DAY, now).unwrap();
        let v = CertValidity::of(&cert).unwrap();
        // X.509 times have whole seconds.
        let expected_end = now + 90 * DAY;
        let drift = v
            .not_after
            .max(expected_end)
            .duration_since(v.not_after.min(expected_end));
        assert!(drift.unwrap() <= Duration::from_secs(1));
        assert!(v.not_before < now);

        let left = |days: u32| v.not_after - days * DAY;
        assert!(!v.needs_renewal(now));
        assert!(!v.needs_renewal(left(31)));
        assert!(v.needs_renewal(left(29)));
        assert!(v.needs_renewal(v.not_after + DAY), "expired");
    }

    #[test]
    fn every_truncation_of_a_csr_is_refused_without_a_panic() {
        let ca = ca("c1");
        let id = PeerIdentity::new("w1", Role::Worker, "c1", 1).unwrap();
        let csr = NodeKeys::generate().unwrap().csr_der().unwrap();
        for len in 0..csr.len() {
            let err = ca.issue(&csr[..len], &id, DAY).unwrap_err().to_string();
            assert!(
                err.starts_with("certificate signing request refused"),
                "{len}: {err}"
            );
        }
        ca.issue(&csr, &id, DAY).unwrap();
    }
}
