//! `shoal.v1.Managers`: what a node that became a manager (joined with the
//! manager token, or was promoted) asks the other managers for. The
//! authorization layer admits only callers whose certificate and current
//! role in the store both say manager; this service checks the caller once
//! more, so that it stays safe even if it is ever served without the layer.

use std::sync::Arc;

use shoal_proto::managers_server::{Managers, ManagersServer};
use shoal_proto::{
    now_ms, JoinRaftRequest, JoinRaftResponse, ManagerKeysRequest, ManagerKeysResponse, NodeRole,
};
use tonic::{Request, Response, Status};

use crate::ca::authz::{caller, Caller};
use crate::ca::{Ca, PeerIdentity, Role};
use crate::keys::ClusterKey;
use crate::objects::{touch, version};
use crate::proposer::{all_applied, batch};
use crate::raft::RaftNode;
use crate::store::{put, Store};

/// Serves `shoal.v1.Managers` on a manager that holds the CA key.
pub struct ManagersService {
    ca: Arc<Ca>,
    key: ClusterKey,
    raft: RaftNode,
    store: Arc<Store>,
}

/// The calling manager, or a refusal.
fn manager_caller<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    match caller(request) {
        Some(Caller::Peer {
            identity,
            role: Role::Manager,
        }) => Ok(identity.clone()),
        _ => Err(Status::permission_denied(
            "only a manager of this cluster may call this",
        )),
    }
}

impl ManagersService {
    pub fn new(ca: Arc<Ca>, key: ClusterKey, raft: RaftNode, store: Arc<Store>) -> ManagersService {
        ManagersService {
            ca,
            key,
            raft,
            store,
        }
    }

    /// Refuses on a manager that does not lead, naming the leader.
    fn ensure_leader(&self) -> Result<(), Status> {
        if self.raft.is_leader() {
            return Ok(());
        }
        let Some(leader) = self.raft.leader_addr() else {
            return Err(crate::quorum::no_leader(crate::quorum::Reach::of(
                &self.raft.managers(),
            )));
        };
        Err(shoal_proto::not_the_leader(&leader))
    }

    /// Records the manager's Raft id on its node, so that the role manager
    /// knows the Raft member as this node.
    async fn record_raft_id(&self, node_id: &str, raft_id: u64) -> Result<(), Status> {
        for _ in 0..20 {
            let node = self.store.read(|d| d.nodes.get(node_id).cloned());
            let Some(mut node) = node else {
                return Err(Status::not_found(format!("node {node_id} is not a member")));
            };
            if node.spec.as_ref().map(|s| s.role()) != Some(NodeRole::Manager) {
                return Err(Status::permission_denied(format!(
                    "node {node_id} is not a manager"
                )));
            }
            if node.raft_id == raft_id {
                return Ok(());
            }
            let v = version(&node.meta);
            node.raft_id = raft_id;
            touch(&mut node.meta, now_ms());
            let result = self
                .raft
                .propose(batch(vec![put(node, v)], true))
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            if all_applied(&result) {
                return Ok(());
            }
        }
        Err(Status::aborted("too many concurrent changes to the node"))
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
        let identity = manager_caller(&request)?;
        tracing::info!(node = %identity.node_id, "handing the cluster keys to a new manager");
        Ok(Response::new(ManagerKeysResponse {
            ca_certificate_der: self.ca.certificate_der().to_vec(),
            ca_key_der: self.ca.private_key_der().secret_pkcs8_der().to_vec(),
            cluster_key: self.key.to_bytes(),
        }))
    }

    /// Takes the calling manager into Raft (learner, caught up, voter).
    async fn join_raft(
        &self,
        request: Request<JoinRaftRequest>,
    ) -> Result<Response<JoinRaftResponse>, Status> {
        let identity = manager_caller(&request)?;
        self.ensure_leader()?;
        // A leader without a majority keeps leading (openraft 0.9) but
        // commits nothing: adding a manager would wait for the others.
        let reach = crate::quorum::Reach::of(&self.raft.managers());
        if !reach.has_majority() {
            return Err(crate::quorum::refuse_without_majority(
                reach,
                "add a manager",
            ));
        }
        let req = request.into_inner();
        if req.raft_id == 0 || req.addr.is_empty() {
            return Err(Status::invalid_argument(
                "join raft: raft_id and addr are required",
            ));
        }
        self.record_raft_id(&identity.node_id, req.raft_id).await?;
        tracing::info!(node = %identity.node_id, raft_id = req.raft_id, addr = %req.addr, "adding a manager to raft");
        self.raft
            .add_manager(req.raft_id, &req.addr)
            .await
            .map_err(|e| Status::unavailable(format!("cannot add the manager to raft: {e}")))?;
        Ok(Response::new(JoinRaftResponse {}))
    }
}
