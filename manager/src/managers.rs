//! `shoal.v1.Managers`: what a node that became a manager (joined with the
//! manager token, or was promoted) asks the other managers for. The
//! authorization layer admits only callers whose certificate and current
//! role in the store both say manager; this service checks the caller once
//! more, so that it stays safe even if it is ever served without the layer.

use std::sync::Arc;

use shoal_proto::managers_server::{Managers, ManagersServer};
use shoal_proto::{ManagerKeysRequest, ManagerKeysResponse};
use tonic::{Request, Response, Status};

use crate::ca::authz::{caller, Caller};
use crate::ca::{Ca, Role};
use crate::keys::ClusterKey;

/// Serves `shoal.v1.Managers` on a manager that holds the CA key.
pub struct ManagersService {
    ca: Arc<Ca>,
    key: ClusterKey,
}

impl ManagersService {
    pub fn new(ca: Arc<Ca>, key: ClusterKey) -> ManagersService {
        ManagersService { ca, key }
    }

    pub fn into_service(self) -> ManagersServer<ManagersService> {
        ManagersServer::new(self)
    }
}

#[tonic::async_trait]
impl Managers for ManagersService {
    /// Hands over the CA key and the cluster key. Only ever over mutual TLS
    /// to a manager; the keys never appear in any other response.
    async fn get_manager_keys(
        &self,
        request: Request<ManagerKeysRequest>,
    ) -> Result<Response<ManagerKeysResponse>, Status> {
        match caller(&request) {
            Some(Caller::Peer {
                identity,
                role: Role::Manager,
            }) => {
                tracing::info!(node = %identity.node_id, "handing the cluster keys to a new manager");
            }
            _ => {
                return Err(Status::permission_denied(
                    "only a manager of this cluster may receive its keys",
                ))
            }
        }
        Ok(Response::new(ManagerKeysResponse {
            ca_certificate_der: self.ca.certificate_der().to_vec(),
            ca_key_der: self.ca.private_key_der().secret_pkcs8_der().to_vec(),
            cluster_key: self.key.to_bytes(),
        }))
    }
}
