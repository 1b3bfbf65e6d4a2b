//! Which managers take part in Raft, whether the leader can reach them, and
//! changing that set: adding a manager (as a learner until it caught up,
//! then as a voter) and removing one without losing the quorum.
//!
//! Every change goes through the leader. openraft 0.9 has no leadership
//! transfer, and a leader that removes itself keeps leading the new
//! configuration (openraft#923), so [`RaftNode::remove_manager`] on the
//! leader's own id steps down explicitly; see there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError};
use openraft::{ChangeMembers, ServerState};
use shoal_proto::defaults::RAFT_ELECTION_TIMEOUT_MIN_MS;
use shoal_proto::RaftPeer;
use tokio::sync::watch;

use super::types::{NodeId, Raft};
use super::RaftNode;

/// A peer the leader completed an RPC with this recently counts as
/// reachable: three election timeouts, i.e. several missed heartbeats, so
/// one slow round trip does not flip it.
pub const REACHABLE_WITHIN: Duration = Duration::from_millis(3 * RAFT_ELECTION_TIMEOUT_MIN_MS);

/// How long removing a reachable follower waits for it to receive the
/// configuration that demotes it, before dropping it anyway.
const DEMOTION_NOTICE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`RaftNode::add_manager`] waits for a new manager to catch up
/// (a snapshot install of a large store included) before giving up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// One manager of the Raft group, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerInfo {
    pub raft_id: u64,
    /// host:port of its cluster gRPC.
    pub addr: String,
    /// The current leader, as this node knows it.
    pub leader: bool,
    /// A learner receives the log but does not vote (a manager being added).
    pub learner: bool,
    /// See [`RaftNode::managers`] for what this means on a leader and on a
    /// follower.
    pub reachable: bool,
}

/// What [`RaftNode::remove_manager`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The manager is no longer a member.
    Removed,
    /// It was not a member to begin with; nothing changed.
    NotAMember,
    /// This node removed itself and stopped its Raft node so the remaining
    /// voters elect a leader among themselves. This node is no longer a
    /// manager: reach the cluster through `voters` (raft id, address).
    SteppedDown { voters: Vec<(u64, String)> },
}

/// Why a membership change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Membership changes go through the leader.
    #[error(
        "this manager is not the Raft leader; change the managers on the leader \
         (raft id {leader}{})",
        leader_addr.as_deref().map(|a| format!(" at {a}")).unwrap_or_default()
    )]
    NotLeader {
        leader: u64,
        leader_addr: Option<String>,
    },
    /// No leader right now: an election is running or a quorum is missing.
    #[error(
        "no Raft leader: an election is running or fewer than a majority of managers \
         are up; retry once a quorum of managers is reachable"
    )]
    NoLeader,
    /// The change would leave fewer reachable voters than a majority.
    #[error("{0}")]
    WouldLoseQuorum(String),
    /// Removing the only voter would leave no cluster at all.
    #[error(
        "manager {0} is the last voting manager; removing it would destroy the cluster \
         (add another manager first)"
    )]
    LastVoter(u64),
    /// A new manager did not receive the log in time; it stays a learner
    /// (it does not count for the quorum) until the call is retried.
    #[error(
        "manager {raft_id} at {addr} did not catch up with the Raft log within {timeout:?}; \
         is it running and reachable from the leader? it stays a non-voting learner; \
         retry to make it a voter"
    )]
    CatchUpTimeout {
        raft_id: u64,
        addr: String,
        timeout: Duration,
    },
    /// openraft refused the change (another change in progress, ...).
    #[error("membership change refused: {0}")]
    Refused(String),
    /// Raft stopped on this manager.
    #[error("raft failed: {0}")]
    Fatal(String),
}

type WriteError = openraft::error::RaftError<NodeId, ClientWriteError<NodeId, RaftPeer>>;

impl MembershipError {
    fn from_write(node: &RaftNode, e: WriteError) -> MembershipError {
        use openraft::error::RaftError as E;
        match e {
            E::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
                Some(leader) => MembershipError::NotLeader {
                    leader,
                    leader_addr: f.leader_node.map(|n| n.addr),
                },
                None => MembershipError::NoLeader,
            },
            E::APIError(ClientWriteError::ChangeMembershipError(
                e @ ChangeMembershipError::InProgress(_),
            )) => MembershipError::Refused(format!(
                "{e}; another membership change is still committing, retry shortly"
            )),
            E::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                MembershipError::Refused(e.to_string())
            }
            E::Fatal(f) => MembershipError::Fatal(format!("manager {}: {f}", node.node_id())),
        }
    }
}

/// Mirrors "this node is a voter of the effective membership" from
/// openraft's metrics into a watch that changes only when that does.
pub(super) fn spawn_voter_watch(raft: &Raft, node_id: NodeId) -> watch::Receiver<bool> {
    let mut metrics = raft.metrics();
    let is_voter = move |m: &openraft::RaftMetrics<NodeId, RaftPeer>| {
        m.membership_config
            .membership()
            .voter_ids()
            .any(|id| id == node_id)
    };
    let (tx, rx) = watch::channel(is_voter(&metrics.borrow()));
    tokio::spawn(async move {
        loop {
            let voter = is_voter(&metrics.borrow_and_update());
            tx.send_if_modified(|cur| {
                let changed = *cur != voter;
                if changed {
                    tracing::info!(
                        node_id,
                        voter,
                        "raft voting membership of this manager changed"
                    );
                    *cur = voter;
                }
                changed
            });
            if metrics.changed().await.is_err() {
                break;
            }
        }
    });
    rx
}

impl RaftNode {
    /// The voters and learners of the current membership configuration.
    ///
    /// `reachable` is what this node can tell:
    /// - this node itself is always reachable;
    /// - a peer with a successful Raft RPC from this node within
    ///   [`REACHABLE_WITHIN`] is reachable. The leader sends every peer a
    ///   heartbeat each `RAFT_HEARTBEAT_MS`, so on the leader this is
    ///   exact; a candidate's vote requests count too;
    /// - on a follower, the leader it follows is reachable (it hears from
    ///   it); the other followers are reported unreachable, as a follower
    ///   does not talk to them. Ask the leader for the cluster's view.
    pub fn managers(&self) -> Vec<ManagerInfo> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let now = Instant::now();
        membership
            .nodes()
            .map(|(&id, peer)| {
                let contacted = self
                    .inner
                    .contacts
                    .last(id)
                    .is_some_and(|t| now.duration_since(t) <= REACHABLE_WITHIN);
                let leader = metrics.current_leader == Some(id);
                let follows = metrics.state != ServerState::Leader && leader;
                ManagerInfo {
                    raft_id: id,
                    addr: peer.addr.clone(),
                    leader,
                    learner: !voters.contains(&id),
                    reachable: id == self.inner.node_id || contacted || follows,
                }
            })
            .collect()
    }

    /// The leader's cluster gRPC address, as the membership records it;
    /// `None` during an election and once this node's Raft stopped (the
    /// leader watch, not the last metrics, which outlive a shutdown).
    pub fn leader_addr(&self) -> Option<String> {
        let leader = (*self.inner.leader.borrow())?;
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|p| p.addr.clone())
    }

    /// True while this node is a voter of the membership it knows. A
    /// manager removed by the leader sees this turn false once the change
    /// reaches it (it may not, when it was unreachable at that time).
    pub fn is_voter(&self) -> bool {
        *self.inner.voter.borrow()
    }

    /// [`RaftNode::is_voter`] as a watch, so the daemon learns at once that
    /// this manager was removed (or became a voter after joining).
    pub fn voter_watch(&self) -> watch::Receiver<bool> {
        self.inner.voter.clone()
    }

    /// Fails unless this node is the leader, naming the leader if known.
    fn ensure_leader(&self) -> Result<(), MembershipError> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            Some(id) if id == self.inner.node_id && m.state == ServerState::Leader => Ok(()),
            Some(leader) => Err(MembershipError::NotLeader {
                leader,
                leader_addr: m
                    .membership_config
                    .membership()
                    .get_node(&leader)
                    .map(|p| p.addr.clone()),
            }),
            None => Err(MembershipError::NoLeader),
        }
    }

    /// Makes `raft_id` (serving Raft at `addr`) a voting manager. Leader only.
    ///
    /// It joins as a learner first, and becomes a voter only once it has
    /// caught up (from a snapshot when the leader purged the log it lacks),
    /// so a fresh manager never counts toward the quorum while it cannot
    /// vote usefully. Idempotent: a voter at `addr` is left alone; a member
    /// at another address has its address updated.
    pub async fn add_manager(&self, raft_id: u64, addr: &str) -> Result<(), MembershipError> {
        self.ensure_leader()?;
        let raft = &self.inner.raft;
        let peer = RaftPeer { addr: addr.into() };
        let (known_addr, is_voter) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            (
                membership.get_node(&raft_id).map(|p| p.addr.clone()),
                membership.voter_ids().any(|id| id == raft_id),
            )
        };
        match known_addr {
            Some(known) if known == addr => {}
            Some(known) => {
                tracing::info!(raft_id, from = %known, to = %addr, "raft: manager address changed");
                let nodes = BTreeMap::from([(raft_id, peer.clone())]);
                raft.change_membership(ChangeMembers::SetNodes(nodes), true)
                    .await
                    .map_err(|e| MembershipError::from_write(self, e))?;
            }
            None => {}
        }
        if is_voter {
            return Ok(());
        }
        let added = raft
            .add_learner(raft_id, peer, false)
            .await
            .map_err(|e| MembershipError::from_write(self, e))?;
        tracing::info!(raft_id, %addr, "raft: manager added as a learner; waiting for it to catch up");
        replicated(
            raft,
            raft_id,
            added.log_id.index,
            CATCH_UP_TIMEOUT,
            "new manager caught up",
        )
        .await
        .map_err(|e| match e {
            openraft::metrics::WaitError::Timeout(..) => MembershipError::CatchUpTimeout {
                raft_id,
                addr: addr.into(),
                timeout: CATCH_UP_TIMEOUT,
            },
            openraft::metrics::WaitError::ShuttingDown => {
                MembershipError::Fatal("raft is shutting down".into())
            }
        })?;
        raft.change_membership(ChangeMembers::AddVoterIds([raft_id].into()), false)
            .await
            .map_err(|e| MembershipError::from_write(self, e))?;
        tracing::info!(raft_id, %addr, "raft: manager is now a voter");
        Ok(())
    }

    /// Removes `raft_id` from the managers. Leader only.
    ///
    /// A voter is removed only if the voters left would still have a
    /// reachable strict majority ([`RaftNode::managers`]), and never the
    /// last one; a learner is simply dropped.
    ///
    /// Removing the leader itself (openraft 0.9 has no leadership transfer,
    /// and a leader that left the membership keeps leading it) steps down:
    /// 1. commit the membership without this node (joint, then final),
    ///    while it still leads, so the others agree on the new voter set;
    /// 2. shut this node's Raft down: heartbeats stop, the remaining
    ///    voters' leader leases (`RAFT_ELECTION_TIMEOUT_MAX_MS`) expire, and
    ///    the first whose election timer fires is elected.
    ///
    /// There is no faster hand-over on 0.9: a follower that asked for votes
    /// at once would be refused by the others until their leases expire.
    /// Measured on loopback with the default timeouts (150 ms heartbeat,
    /// 500-1000 ms election timeout; `cluster_tests::the_leader_removing_
    /// itself_steps_down_and_can_rejoin_as_a_new_manager`, 2 shared cores):
    /// the call returns after 65-170 ms (the two membership commits), and a
    /// new leader exists 1.6-1.9 s later, about what a crashed leader costs
    /// (1.9-2.1 s). This node's
    /// [`RaftNode`] is stopped afterwards (its leader watch reads `None`,
    /// [`RaftNode::is_voter`] false): the daemon must treat it as a
    /// non-manager and reach the cluster through the returned voters.
    pub async fn remove_manager(&self, raft_id: u64) -> Result<Removal, MembershipError> {
        self.ensure_leader()?;
        let managers = self.managers();
        let Some(target) = managers.iter().find(|m| m.raft_id == raft_id) else {
            return Ok(Removal::NotAMember);
        };
        let raft = &self.inner.raft;
        if target.learner {
            raft.change_membership(ChangeMembers::RemoveNodes([raft_id].into()), false)
                .await
                .map_err(|e| MembershipError::from_write(self, e))?;
            tracing::info!(raft_id, "raft: learner removed");
            return Ok(Removal::Removed);
        }
        check_removal(&managers, raft_id)?;
        let remaining: Vec<&ManagerInfo> = managers
            .iter()
            .filter(|m| !m.learner && m.raft_id != raft_id)
            .collect();
        if raft_id != self.inner.node_id {
            self.remove_follower(raft_id, target.reachable).await?;
            return Ok(Removal::Removed);
        }
        raft.change_membership(ChangeMembers::RemoveVoters([raft_id].into()), false)
            .await
            .map_err(|e| MembershipError::from_write(self, e))?;
        tracing::info!(
            raft_id,
            "raft: this leader removed itself; stopping raft so the remaining managers elect a leader"
        );
        self.shutdown().await;
        Ok(Removal::SteppedDown {
            voters: remaining
                .iter()
                .map(|m| (m.raft_id, m.addr.clone()))
                .collect(),
        })
    }

    /// Removes voter `raft_id` (not this node) in two steps, so that it
    /// learns of its removal: openraft stops replicating to a node as soon
    /// as the leader appends a configuration without it, so a voter removed
    /// outright never receives that configuration and goes on believing it
    /// votes. Demoted to a learner first, it receives the configuration
    /// that demotes it (its [`RaftNode::voter_watch`] turns false); then it
    /// is dropped. An unreachable one is dropped without waiting.
    async fn remove_follower(&self, raft_id: u64, reachable: bool) -> Result<(), MembershipError> {
        let raft = &self.inner.raft;
        let demoted = raft
            .change_membership(ChangeMembers::RemoveVoters([raft_id].into()), true)
            .await
            .map_err(|e| MembershipError::from_write(self, e))?;
        if reachable {
            let noticed = replicated(
                raft,
                raft_id,
                demoted.log_id.index,
                DEMOTION_NOTICE_TIMEOUT,
                "removed manager received its demotion",
            )
            .await;
            if let Err(e) = noticed {
                tracing::warn!(raft_id, error = %e, "raft: removed manager did not confirm its demotion; dropping it anyway");
            }
        }
        raft.change_membership(ChangeMembers::RemoveNodes([raft_id].into()), false)
            .await
            .map_err(|e| MembershipError::from_write(self, e))?;
        tracing::info!(raft_id, "raft: manager removed");
        Ok(())
    }
}

/// Waits (on the leader) until `raft_id` has replicated the log up to
/// `index`, or `timeout` passes.
async fn replicated(
    raft: &super::types::Raft,
    raft_id: u64,
    index: u64,
    timeout: Duration,
    what: &str,
) -> Result<(), openraft::metrics::WaitError> {
    raft.wait(Some(timeout))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&raft_id))
                    .and_then(|matched| *matched)
                    .is_some_and(|l| l.index >= index)
            },
            what,
        )
        .await
        .map(|_| ())
}

/// Whether voter `raft_id` may leave the voters (`managers` as
/// [`RaftNode::managers`] gives them): at least one voter must be left, and
/// the reachable ones among those left must be a strict majority of them.
/// Learners and non-members may always go. The one rule for removals,
/// here and in the Control API, which refuses a demotion before writing it.
pub fn check_removal(managers: &[ManagerInfo], raft_id: u64) -> Result<(), MembershipError> {
    if !managers.iter().any(|m| m.raft_id == raft_id && !m.learner) {
        return Ok(());
    }
    let remaining: Vec<&ManagerInfo> = managers
        .iter()
        .filter(|m| !m.learner && m.raft_id != raft_id)
        .collect();
    if remaining.is_empty() {
        return Err(MembershipError::LastVoter(raft_id));
    }
    let reachable = remaining.iter().filter(|m| m.reachable).count();
    if reachable * 2 <= remaining.len() {
        let unreachable: Vec<String> = remaining
            .iter()
            .filter(|m| !m.reachable)
            .map(|m| format!("{} at {}", m.raft_id, m.addr))
            .collect();
        return Err(MembershipError::WouldLoseQuorum(format!(
            "removing manager {raft_id} would leave {} voting managers of which only \
             {reachable} are reachable from the leader (unreachable: {}), not a majority: \
             the cluster would lose its quorum and stop accepting writes; bring those \
             managers back or remove an unreachable one first",
            remaining.len(),
            unreachable.join(", ")
        )));
    }
    Ok(())
}
