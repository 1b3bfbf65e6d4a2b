//! The store as the CA and the authorization layer see it: who is a member
//! with which role, the cluster's epoch and join secrets, the blocklist of
//! removed nodes ([`ClusterView`]), and admitting a node that presented a
//! valid join token ([`Enrollment`]).
//!
//! Every answer is read from the local store at the moment of the call, so a
//! demotion or removal committed through Raft takes effect on the next RPC,
//! not when a certificate expires.

use std::sync::Arc;

use shoal_proto::{now_ms, Meta, Node, NodeAvailability, NodeSpec, NodeState, NodeStatus};
use tonic::Status;

use crate::ca::authz::ClusterView;
use crate::ca::{Enrollment, JoinSecrets, Role};
use crate::proposer::{all_applied, batch, Proposer};
use crate::store::{put, Store};

/// [`ClusterView`] and [`Enrollment`] over the manager's store.
#[derive(Clone)]
pub struct StoreView {
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
}

impl StoreView {
    pub fn new(store: Arc<Store>, proposer: Arc<dyn Proposer>) -> StoreView {
        StoreView { store, proposer }
    }
}

impl ClusterView for StoreView {
    fn cluster_id(&self) -> String {
        self.store
            .read(|d| d.cluster().map(|c| c.id.clone()))
            .unwrap_or_default()
    }

    fn epoch(&self) -> u64 {
        self.store
            .read(|d| d.cluster().map(|c| c.epoch))
            .unwrap_or_default()
    }

    fn current_role(&self, node_id: &str) -> Option<Role> {
        self.store.read(|d| {
            d.nodes
                .get(node_id)
                .and_then(|n| n.spec.as_ref())
                .and_then(|s| Role::from_node_role(s.role()))
        })
    }

    fn is_removed(&self, node_id: &str) -> bool {
        self.store.read(|d| {
            d.cluster()
                .is_some_and(|c| c.removed_nodes.iter().any(|r| r == node_id))
        })
    }
}

#[tonic::async_trait]
impl Enrollment for StoreView {
    fn join_secrets(&self) -> JoinSecrets {
        self.store
            .read(|d| d.cluster().map(JoinSecrets::of_cluster))
            .unwrap_or_else(JoinSecrets::generate)
    }

    /// Creates the node's object with the token's role, Unknown until its
    /// first dispatcher session makes it Ready. A fresh id never exists, so
    /// a conflict means a bug or a replay: refused.
    async fn admit_node(&self, node_id: &str, role: Role) -> Result<(), Status> {
        let Some(node_role) = role.node_role() else {
            return Err(Status::invalid_argument(format!(
                "a join token cannot admit a {role}"
            )));
        };
        let now = now_ms();
        let node = Node {
            id: node_id.to_string(),
            meta: Some(Meta {
                version: 0,
                created_at: now,
                updated_at: now,
            }),
            spec: Some(NodeSpec {
                role: node_role as i32,
                availability: NodeAvailability::Active as i32,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: NodeState::Unknown as i32,
                message: "joined; waiting for its first session".into(),
                ..Default::default()
            }),
            raft_id: 0,
        };
        let result = self
            .proposer
            .propose(batch(vec![put(node, 0)], true))
            .await
            .map_err(|e| Status::unavailable(format!("cannot record the new node: {e}")))?;
        if !all_applied(&result) {
            return Err(Status::already_exists(format!(
                "node {node_id} already exists"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposer::LocalProposer;
    use shoal_proto::Cluster;

    fn view() -> (StoreView, Arc<Store>) {
        let store = Store::new();
        let proposer = LocalProposer::new(store.clone());
        proposer.store.apply(
            1,
            &batch(
                vec![put(
                    Cluster {
                        id: "c1".into(),
                        epoch: 3,
                        worker_join_secret: "w".repeat(32),
                        manager_join_secret: "m".repeat(32),
                        removed_nodes: vec!["gone".into()],
                        ..Default::default()
                    },
                    0,
                )],
                true,
            ),
        );
        (StoreView::new(store.clone(), proposer), store)
    }

    #[tokio::test]
    async fn admitted_nodes_get_the_tokens_role_and_removed_ones_are_blocklisted() {
        let (view, store) = view();
        assert_eq!(view.cluster_id(), "c1");
        assert_eq!(view.epoch(), 3);
        assert_eq!(view.current_role("n1"), None);
        view.admit_node("n1", Role::Worker).await.unwrap();
        view.admit_node("n2", Role::Manager).await.unwrap();
        assert_eq!(view.current_role("n1"), Some(Role::Worker));
        assert_eq!(view.current_role("n2"), Some(Role::Manager));
        let state = store.read(|d| d.nodes["n1"].status.as_ref().unwrap().state());
        assert_eq!(state, NodeState::Unknown);
        // The same id twice is refused, clients are not nodes.
        let again = view.admit_node("n1", Role::Manager).await.unwrap_err();
        assert_eq!(again.code(), tonic::Code::AlreadyExists);
        assert_eq!(view.current_role("n1"), Some(Role::Worker));
        let client = view.admit_node("c", Role::Client).await.unwrap_err();
        assert_eq!(client.code(), tonic::Code::InvalidArgument);
        assert!(view.is_removed("gone"));
        assert!(!view.is_removed("n1"));
        assert_eq!(view.join_secrets().worker, "w".repeat(32));
    }
}
