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
    /// This manager's own cluster id and epoch (from its certificate), for
    /// the time its store holds no cluster yet: a manager that just joined
    /// must accept the leader's Raft calls before it has replicated
    /// anything.
    own: Option<(String, u64)>,
}

impl StoreView {
    pub fn new(store: Arc<Store>, proposer: Arc<dyn Proposer>) -> StoreView {
        StoreView {
            store,
            proposer,
            own: None,
        }
    }

    /// Until the store holds the cluster object, answer from this manager's
    /// own certificate: its cluster and epoch, and the role each caller's
    /// certificate states (signed by our CA, which the TLS layer checked).
    pub fn until_replicated(mut self, cluster_id: &str, epoch: u64) -> StoreView {
        self.own = Some((cluster_id.to_string(), epoch));
        self
    }

    /// Whether the store has the cluster object (replication has begun).
    fn replicated(&self) -> bool {
        self.store.read(|d| d.cluster().is_some())
    }
}

impl ClusterView for StoreView {
    fn cluster_id(&self) -> String {
        match self.store.read(|d| d.cluster().map(|c| c.id.clone())) {
            Some(id) => id,
            None => self.own.as_ref().map(|o| o.0.clone()).unwrap_or_default(),
        }
    }

    fn epoch(&self) -> u64 {
        match self.store.read(|d| d.cluster().map(|c| c.epoch)) {
            Some(e) => e,
            None => self.own.as_ref().map(|o| o.1).unwrap_or_default(),
        }
    }

    fn current_role(&self, node_id: &str) -> Option<Role> {
        if self.own.is_some() && !self.replicated() {
            // The authorization layer acts with the lower of this and the
            // certificate's role: the certificate decides.
            return Some(Role::Manager);
        }
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
        // A leader without a quorum would wait for it forever; the joining
        // node gets an answer in bounded time instead.
        let wait = std::time::Duration::from_millis(shoal_proto::defaults::QUORUM_WAIT_MS);
        let proposal = self.proposer.propose(batch(vec![put(node, 0)], true));
        let result = tokio::time::timeout(wait, proposal)
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "no quorum: the managers could not record node {node_id} within {}s (a \
                     majority of managers is unreachable); retry once they are back",
                    wait.as_secs()
                ))
            })?
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

    #[test]
    fn a_manager_with_an_empty_store_trusts_certificates_of_its_cluster_until_it_has_one() {
        let store = Store::new();
        let proposer = LocalProposer::new(store.clone());
        let view = StoreView::new(store.clone(), proposer.clone()).until_replicated("c1", 2);
        assert_eq!(view.cluster_id(), "c1");
        assert_eq!(view.epoch(), 2);
        assert_eq!(view.current_role("leader"), Some(Role::Manager));
        // Without the fallback an empty store knows no one.
        let strict = StoreView::new(store.clone(), proposer.clone());
        assert_eq!(strict.current_role("leader"), None);
        // Once the cluster is replicated, the store decides.
        proposer.store.apply(
            1,
            &batch(
                vec![put(
                    Cluster {
                        id: "c1".into(),
                        epoch: 3,
                        ..Default::default()
                    },
                    0,
                )],
                true,
            ),
        );
        assert_eq!(view.epoch(), 3);
        assert_eq!(view.current_role("leader"), None);
    }
}
