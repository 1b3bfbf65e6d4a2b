//! Client certificates (`shoal ca client-cert`): a remote CLI's way into the
//! Control API over mutual TLS. The client makes its own key pair and sends
//! a CSR; this manager signs the CSR's public key (and nothing else the CSR
//! claims) as role client, named by the request, in the cluster's current
//! id and epoch read from the store. Only a manager that holds the CA with
//! its key can sign; the answer carries certificates, never key material.

use std::time::{Duration, UNIX_EPOCH};

use shoal_proto::defaults as d;
use shoal_proto::{IssueClientCertificateRequest, IssueClientCertificateResponse};
use tonic::Status;

use crate::ca::{Ca, CaError, CertValidity, ClientName, PeerIdentity, Role};
use crate::store::{Store, StoreData};

/// Signs the client certificate `req` asks for with `ca`, reading the
/// cluster from `store` (the caller makes the read linearizable first).
/// `manager_addr` is where this manager serves the cluster port, for the
/// client's next command.
pub fn issue(
    ca: Option<&Ca>,
    store: &Store,
    req: &IssueClientCertificateRequest,
    manager_addr: &str,
) -> Result<IssueClientCertificateResponse, Status> {
    let ca = ca.ok_or_else(|| {
        Status::failed_precondition("this node holds no cluster CA: ask a manager")
    })?;
    let name = requested_name(&req.name)?;
    if req.csr_der.is_empty() {
        return Err(Status::invalid_argument(
            "csr_der: empty; send a PKCS#10 certificate signing request (DER) for the \
             client's own key pair",
        ));
    }
    let identity = store.read(|d| identity(d, &name))?;
    let cert = ca
        .issue(
            &req.csr_der,
            &identity,
            Duration::from_millis(d::CLIENT_CERT_VALIDITY_MS),
        )
        .map_err(|e| match e {
            CaError::BadCsr(_) => Status::invalid_argument(format!("csr_der: {e}")),
            e => Status::internal(format!("cannot sign a certificate for {identity}: {e}")),
        })?;
    let not_after = CertValidity::of(&cert)
        .map_err(|e| Status::internal(format!("the certificate just signed is unreadable: {e}")))?
        .not_after;
    tracing::info!(client = %identity, "issued a client certificate");
    Ok(IssueClientCertificateResponse {
        name: identity.node_id.clone(),
        cluster_id: identity.cluster_id.clone(),
        certificate_der: cert.to_vec(),
        ca_certificate_der: ca.certificate_der().to_vec(),
        not_after: not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as i64),
        manager_addr: manager_addr.to_string(),
    })
}

/// The name asked for, checked, or a fresh `client-<random>` when empty.
fn requested_name(name: &str) -> Result<ClientName, Status> {
    if name.is_empty() {
        return Ok(ClientName::random());
    }
    ClientName::parse(name).map_err(|e| Status::invalid_argument(format!("name: {e}")))
}

/// The identity the certificate asserts: the cluster's id and current epoch
/// come from the store, never from the client. A name that is a node's id
/// is refused: the authorization layer and audit logs tell callers apart by
/// that name, and removing the node would lock the client out too. A
/// removed (revoked) name is refused: its certificate would be refused on
/// every call.
fn identity(d: &StoreData, name: &ClientName) -> Result<PeerIdentity, Status> {
    let cluster = super::tokens::cluster(d)?;
    if d.nodes.contains_key(name.as_str()) {
        return Err(Status::already_exists(format!(
            "name: {name} is the id of a node of this cluster; choose another client name"
        )));
    }
    if cluster.removed_nodes.iter().any(|r| r == name.as_str()) {
        return Err(Status::failed_precondition(format!(
            "name: {name} was removed from the cluster, and the managers refuse every \
             certificate that carries it; choose another client name"
        )));
    }
    PeerIdentity::new(name.as_str(), Role::Client, &cluster.id, cluster.epoch)
        .map_err(|e| Status::internal(format!("the cluster object is unusable: {e}")))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use shoal_proto::{Cluster, Meta, Node};
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;
    use crate::ca::{NodeCredentials, NodeKeys};
    use crate::store::put;
    use crate::testutil::Fixture;

    const ADDR: &str = "10.0.0.1:2377";

    /// A store with the cluster object (epoch 3) and one node, and the CA.
    fn setup() -> (Fixture, Ca) {
        let fx = Fixture::new();
        fx.apply(vec![
            put(
                Cluster {
                    id: "c1".into(),
                    meta: Some(Meta::default()),
                    name: "default".into(),
                    epoch: 3,
                    removed_nodes: vec!["gone".into()],
                    ..Default::default()
                },
                0,
            ),
            put(
                Node {
                    id: "n1".into(),
                    ..Default::default()
                },
                0,
            ),
        ]);
        (fx, Ca::generate("c1", SystemTime::now()).unwrap())
    }

    fn request(name: &str, keys: &NodeKeys) -> IssueClientCertificateRequest {
        IssueClientCertificateRequest {
            name: name.into(),
            csr_der: keys.csr_der().unwrap(),
        }
    }

    #[test]
    fn a_csr_is_signed_as_a_client_with_the_given_name_cluster_and_epoch() {
        let (fx, ca) = setup();
        let keys = NodeKeys::generate().unwrap();
        let resp = issue(Some(&ca), &fx.store, &request("alice", &keys), ADDR).unwrap();
        assert_eq!(resp.name, "alice");
        assert_eq!(resp.cluster_id, "c1");
        assert_eq!(resp.manager_addr, ADDR);
        assert_eq!(resp.ca_certificate_der, ca.certificate_der().to_vec());

        let id = PeerIdentity::from_certificate(&resp.certificate_der).unwrap();
        assert_eq!(
            id,
            PeerIdentity::new("alice", Role::Client, "c1", 3).unwrap()
        );
        // The certificate is for the client's key, chains to the CA, and
        // cannot serve as a manager.
        let creds = NodeCredentials::new(
            resp.certificate_der.clone().into(),
            &keys,
            resp.ca_certificate_der.clone().into(),
        )
        .unwrap();
        assert_eq!(creds.identity().role, Role::Client);
        let (_, x509) = X509Certificate::from_der(&resp.certificate_der).unwrap();
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);

        let days = (resp.not_after - shoal_proto::now_ms()) / 86_400_000;
        let expected = (d::CLIENT_CERT_VALIDITY_MS / 86_400_000) as i64;
        assert!((expected - 1..=expected).contains(&days), "{days} days");
    }

    #[test]
    fn no_name_gets_a_random_client_name() {
        let (fx, ca) = setup();
        let keys = NodeKeys::generate().unwrap();
        let resp = issue(Some(&ca), &fx.store, &request("", &keys), ADDR).unwrap();
        assert!(resp.name.starts_with("client-"), "{}", resp.name);
        let id = PeerIdentity::from_certificate(&resp.certificate_der).unwrap();
        assert_eq!(id.node_id, resp.name);
    }

    #[test]
    fn bad_names_are_refused_naming_the_field_and_the_rule() {
        let (fx, ca) = setup();
        let keys = NodeKeys::generate().unwrap();
        for name in ["Alice", "a_b", "a.b", &"x".repeat(64)] {
            let err = issue(Some(&ca), &fx.store, &request(name, &keys), ADDR).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
            assert!(err.message().starts_with("name: "), "{err:?}");
            assert!(err.message().contains(&format!("{name:?}")), "{err:?}");
            assert!(err.message().contains("a-z, 0-9 and '-'"), "{err:?}");
        }
        let err = issue(Some(&ca), &fx.store, &request("n1", &keys), ADDR).unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
        assert!(err.message().contains("n1 is the id of a node"), "{err:?}");
        let err = issue(Some(&ca), &fx.store, &request("gone", &keys), ADDR).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("gone was removed"), "{err:?}");
    }

    #[test]
    fn garbage_and_empty_csrs_are_refused_naming_the_field() {
        let (fx, ca) = setup();
        for (csr, why) in [
            (vec![], "csr_der: empty"),
            (
                b"not a CSR".to_vec(),
                "csr_der: certificate signing request refused",
            ),
        ] {
            let req = IssueClientCertificateRequest {
                name: "alice".into(),
                csr_der: csr,
            };
            let err = issue(Some(&ca), &fx.store, &req, ADDR).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains(why), "{err:?}");
        }
        // A CSR whose self-signature does not verify proves no key.
        let mut csr = NodeKeys::generate().unwrap().csr_der().unwrap();
        let last = csr.len() - 1;
        csr[last] ^= 0xff;
        let req = IssueClientCertificateRequest {
            name: "alice".into(),
            csr_der: csr,
        };
        let err = issue(Some(&ca), &fx.store, &req, ADDR).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with("csr_der: "), "{err:?}");
    }

    #[test]
    fn a_node_without_the_ca_refuses_with_failed_precondition() {
        let (fx, _) = setup();
        let keys = NodeKeys::generate().unwrap();
        let err = issue(None, &fx.store, &request("alice", &keys), ADDR).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert_eq!(
            err.message(),
            "this node holds no cluster CA: ask a manager"
        );
    }

    #[test]
    fn without_the_cluster_object_the_request_is_refused_as_unavailable() {
        let ca = Ca::generate("c1", SystemTime::now()).unwrap();
        let keys = NodeKeys::generate().unwrap();
        let err = issue(Some(&ca), &Store::new(), &request("alice", &keys), ADDR).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    }
}
