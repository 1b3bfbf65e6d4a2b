//! How controllers write: through a [`Proposer`], which is Raft in the daemon
//! and a direct store apply in unit tests, so controller logic is tested
//! without a cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_proto::defaults::BATCH_FORMAT;
use shoal_proto::{Batch, BatchResult, Mutation, MutationOutcome};

use crate::raft::{ProposeError, RaftNode};
use crate::store::Store;

/// Something that commits batches of mutations to the store.
pub trait Proposer: Send + Sync + 'static {
    fn propose(&self, batch: Batch) -> BoxFuture<'_, Result<BatchResult, ProposeError>>;

    /// Whether proposals made here can commit now (this manager leads).
    /// Services that take writes from nodes (the dispatcher) send them to
    /// the leader instead when it does not.
    fn leads(&self) -> bool {
        true
    }

    /// The Raft id of the current leader, if one is known.
    fn leader_raft_id(&self) -> Option<u64> {
        None
    }

    /// How long ago a quorum of managers last acknowledged this manager as
    /// leader (`None`: it does not lead, or no quorum acknowledged it yet),
    /// for a leader cut off from the other managers believes it leads until
    /// it hears of a newer term. Without other managers, just now.
    fn quorum_ack_age(&self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Proposer for RaftNode {
    fn propose(&self, batch: Batch) -> BoxFuture<'_, Result<BatchResult, ProposeError>> {
        Box::pin(RaftNode::propose(self, batch))
    }

    fn leads(&self) -> bool {
        self.is_leader()
    }

    fn leader_raft_id(&self) -> Option<u64> {
        *self.leader_watch().borrow()
    }

    fn quorum_ack_age(&self) -> Option<Duration> {
        RaftNode::quorum_ack_age(self)
    }
}

/// Applies straight to a store, numbering entries itself: for unit tests of
/// controllers, never used by the daemon.
pub struct LocalProposer {
    pub store: Arc<Store>,
    next_index: AtomicU64,
}

impl LocalProposer {
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(LocalProposer {
            store,
            next_index: AtomicU64::new(1),
        })
    }
}

impl Proposer for LocalProposer {
    fn propose(&self, batch: Batch) -> BoxFuture<'_, Result<BatchResult, ProposeError>> {
        let index = self.next_index.fetch_add(1, Ordering::SeqCst);
        let result = self.store.apply(index, &batch);
        Box::pin(async move { Ok(result) })
    }
}

/// A batch in the current format.
pub fn batch(mutations: Vec<Mutation>, atomic: bool) -> Batch {
    Batch {
        format: BATCH_FORMAT,
        mutations,
        atomic,
    }
}

/// True when every mutation of the batch applied.
pub fn all_applied(result: &BatchResult) -> bool {
    result
        .outcomes
        .iter()
        .all(|o| *o == MutationOutcome::Applied as i32)
}
