//! The role manager (as SwarmKit's): on the leader, makes the Raft
//! membership follow the roles in the store. `shoal node demote` and
//! `shoal node rm` only write the store; this loop then takes the Raft
//! member of a node that is no longer a manager out of the voters (refusing,
//! and retrying later, while that would cost the quorum). Managers enter
//! Raft themselves, through `Managers/JoinRaft`, because only they know
//! their Raft id and address.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::NodeRole;
use tokio_util::sync::CancellationToken;

use crate::raft::{MembershipError, RaftNode, Removal};
use crate::store::Store;

/// How often the membership is compared with the store when nothing
/// changes (a change in the store wakes the loop at once).
const PERIOD: Duration = Duration::from_secs(2);

/// The Raft members whose node is gone or no longer a manager.
fn stale_members(raft: &RaftNode, store: &Store) -> Vec<u64> {
    let members = raft.managers();
    store.read(|d| {
        members
            .iter()
            .filter(|m| {
                !d.nodes.values().any(|n| {
                    n.raft_id == m.raft_id
                        && n.spec
                            .as_ref()
                            .is_some_and(|s| s.role() == NodeRole::Manager)
                })
            })
            .map(|m| m.raft_id)
            .collect()
    })
}

/// Runs until `cancel` (leadership lost, or shutdown).
pub async fn run(raft: RaftNode, store: Arc<Store>, cancel: CancellationToken) {
    let mut changes = store.subscribe();
    loop {
        changes.borrow_and_update();
        // A new leader may not have applied every committed entry yet (a
        // promotion, say): act only on a store that has.
        let mut stale = stale_members(&raft, &store);
        if !stale.is_empty() {
            if raft.linearizable_barrier().await.is_err() {
                return;
            }
            stale = stale_members(&raft, &store);
        }
        for raft_id in stale {
            match raft.remove_manager(raft_id).await {
                Ok(Removal::Removed) => {
                    tracing::info!(raft_id, "removed a demoted manager from raft")
                }
                Ok(Removal::NotAMember) => {}
                Ok(Removal::SteppedDown { .. }) => {
                    tracing::info!("this manager was demoted: stepped down as leader");
                    return;
                }
                Err(MembershipError::NotLeader { .. } | MembershipError::NoLeader) => return,
                Err(e) => {
                    tracing::warn!(raft_id, error = %e, "cannot remove a demoted manager from raft yet")
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(PERIOD) => {}
        }
    }
}
