//! `shoal.v1.NodeCa`: the manager side of getting a certificate.
//!
//! `IssueNodeCertificate` is the bootstrap: the caller has no certificate
//! (the authorization layer lets it through as anonymous), so the token's
//! secret is what admits it, and decides its role. The node id is made here
//! and recorded through [`Enrollment::admit_node`] before the certificate is
//! returned. `RenewNodeCertificate` is for a node with a valid certificate:
//! same node id, the role the store gives it now, the current epoch.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::node_ca_server::NodeCa;
use shoal_proto::{
    IssueNodeCertificateRequest, NodeCertificateResponse, NodeRole, RenewNodeCertificateRequest,
};
use tonic::{Request, Response, Status};

use super::authz::{self, Caller, ClusterView};
use super::{Ca, CaError, JoinSecrets, JoinToken, PeerIdentity, Role};

/// What the CA service needs from the manager's store besides the
/// [`ClusterView`] every authorization reads.
#[tonic::async_trait]
pub trait Enrollment: ClusterView {
    /// The current join secrets (rotation replaces them in the store).
    fn join_secrets(&self) -> JoinSecrets;
    /// Records a node admitted by a token (through Raft), so that its
    /// certificate is accepted from now on.
    async fn admit_node(&self, node_id: &str, role: Role) -> Result<(), Status>;
}

/// Serves `shoal.v1.NodeCa` on a manager that holds the CA key.
pub struct NodeCaService<E> {
    ca: Arc<Ca>,
    enrollment: Arc<E>,
    validity: Duration,
}

impl<E: Enrollment> NodeCaService<E> {
    /// Issues certificates valid for `validity`
    /// (`defaults::NODE_CERT_VALIDITY_MS` in production).
    pub fn new(ca: Arc<Ca>, enrollment: Arc<E>, validity: Duration) -> NodeCaService<E> {
        NodeCaService {
            ca,
            enrollment,
            validity,
        }
    }

    fn respond(
        &self,
        csr_der: &[u8],
        identity: &PeerIdentity,
    ) -> Result<Response<NodeCertificateResponse>, Status> {
        let cert = self
            .ca
            .issue(csr_der, identity, self.validity)
            .map_err(invalid)?;
        Ok(Response::new(NodeCertificateResponse {
            node_id: identity.node_id.clone(),
            role: identity.role.node_role().unwrap_or(NodeRole::Unspecified) as i32,
            certificate_der: cert.to_vec(),
            ca_certificate_der: self.ca.certificate_der().to_vec(),
        }))
    }
}

fn invalid(e: CaError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl<E: Enrollment> NodeCa for NodeCaService<E> {
    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<NodeCertificateResponse>, Status> {
        let req = request.into_inner();
        let token = JoinToken::parse(&req.token).map_err(invalid)?;
        let role = self
            .enrollment
            .join_secrets()
            .admit(&token, self.ca.digest())
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let node_id = crate::ids::new_id();
        let identity =
            PeerIdentity::new(node_id, role, self.ca.cluster_id(), self.enrollment.epoch())
                .map_err(invalid)?;
        // Sign first: a bad CSR must not leave a node behind in the store.
        let response = self.respond(&req.csr_der, &identity)?;
        self.enrollment.admit_node(&identity.node_id, role).await?;
        tracing::info!(node_id = %identity.node_id, %role, "admitted a node with a join token");
        Ok(response)
    }

    async fn renew_node_certificate(
        &self,
        request: Request<RenewNodeCertificateRequest>,
    ) -> Result<Response<NodeCertificateResponse>, Status> {
        let Some(Caller::Peer { identity, .. }) = authz::caller(&request).cloned() else {
            return Err(Status::unauthenticated(
                "renewal needs the node's current certificate; a node without one joins with a token",
            ));
        };
        let role = self
            .enrollment
            .current_role(&identity.node_id)
            .ok_or_else(|| {
                Status::permission_denied(format!("node {} is not a member", identity.node_id))
            })?;
        let renewed = PeerIdentity::new(
            identity.node_id,
            role,
            self.ca.cluster_id(),
            self.enrollment.epoch(),
        )
        .map_err(invalid)?;
        self.respond(&request.get_ref().csr_der, &renewed)
    }
}
