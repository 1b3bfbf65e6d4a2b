//! Whether a node is up: heartbeats on its session decide, gossip only
//! tells a silent session apart from a silent node (DESIGN.md §5).
//!
//! A node whose heartbeats stop reaching the leader is Down, unless gossip
//! still hears it: then the trouble is between it and the leader (a one-way
//! loss, a broken route), its pods keep running where they are and it is
//! Disconnected: no new pods go there, and it is Down once gossip loses it
//! too or after [`DISCONNECTED_MAX_MS`]. Gossip never marks a node Down on
//! its own, and never keeps one Ready: a live set that says "dead" while
//! heartbeats arrive changes nothing.
//!
//! One sign shortens the wait: a session the node's side closed. A node
//! that merely stalls (a CPU stall, a paused VM, packets lost) keeps its
//! connection open; a node whose process or host died closes it (the
//! kernel ends the dead process's sockets). When the session closed without
//! the node saying it was stopping, no new session came, and gossip lost the
//! node too, it is Down after [`SESSION_CLOSED_GRACE_MS`] instead of the
//! heartbeat expiry: two independent signs that it is gone, one of them
//! the session's own.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_proto::defaults::{DISCONNECTED_MAX_MS, SESSION_CLOSED_GRACE_MS};
use shoal_proto::{GossipInfo, NodeState};

/// What the manager needs from this node's gossip (the worker crate's
/// membership, adapted by the daemon).
pub trait LivenessHint: Send + Sync + 'static {
    /// Ids of the nodes gossip deems alive; `None` while gossip is not
    /// running, or cannot be trusted (past its datagram ceiling).
    fn live_nodes(&self) -> Option<BTreeSet<String>>;

    /// How many nodes gossip can carry: with more nodes in the store, nodes
    /// that know too many fall silent, so the hint is ignored.
    fn capacity(&self) -> usize;

    /// This node's gossip as `shoal info` shows it.
    fn info(&self) -> GossipInfo;
}

/// What the node monitor does with one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Heartbeats again after a disconnection.
    Ready,
    /// Silent session, but gossip hears the node.
    Disconnect,
    /// Silent everywhere, or disconnected for too long.
    Down(&'static str),
}

/// What the leader knows about one node's signs of life.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signs {
    /// Since its last heartbeat on this leader (`None`: none yet).
    pub heartbeat_age: Option<Duration>,
    /// Since the node's side closed its newest session, when it did so
    /// without saying it was stopping and has opened none since.
    pub session_closed_for: Option<Duration>,
    /// Whether gossip hears it; `None` when gossip is not to be asked.
    pub gossip_hears: Option<bool>,
    /// How long it has been Disconnected (zero if it is not).
    pub disconnected_for: Duration,
}

impl Signs {
    /// Its session ended from its side a while ago, its heartbeats stopped
    /// as long, and gossip lost it: its process or host is gone.
    fn gone(&self) -> bool {
        let grace = Duration::from_millis(SESSION_CLOSED_GRACE_MS);
        self.session_closed_for.is_some_and(|c| c >= grace)
            && self.heartbeat_age.is_none_or(|a| a >= grace)
            && self.gossip_hears == Some(false)
    }
}

/// The monitor's decision for a node in `state` with `signs`, heartbeats
/// expiring after `expiry`.
pub fn verdict(state: NodeState, signs: &Signs, expiry: Duration) -> Verdict {
    let fresh = signs.heartbeat_age.is_some_and(|age| age <= expiry);
    let hears = signs.gossip_hears;
    match (state, fresh) {
        (NodeState::Ready, _) if signs.gone() => {
            Verdict::Down("its session closed and gossip lost the node")
        }
        (NodeState::Disconnected, true) => Verdict::Ready,
        (NodeState::Ready, false) if hears == Some(true) => Verdict::Disconnect,
        (NodeState::Ready, false) => Verdict::Down("heartbeat failure"),
        (NodeState::Disconnected, false) if hears != Some(true) => {
            Verdict::Down("heartbeat failure (gossip lost the node too)")
        }
        (NodeState::Disconnected, false)
            if signs.disconnected_for > Duration::from_millis(DISCONNECTED_MAX_MS) =>
        {
            Verdict::Down("heartbeat failure (disconnected for too long)")
        }
        _ => Verdict::Keep,
    }
}

/// Whether gossip hears `node_id`, when the hint may be asked at all.
pub fn gossip_hears(live: Option<&BTreeSet<String>>, node_id: &str) -> Option<bool> {
    live.map(|set| set.contains(node_id))
}

/// The live set, when gossip is running and can carry `nodes` nodes.
pub fn usable_live_set(hint: Option<&dyn LivenessHint>, nodes: usize) -> Option<BTreeSet<String>> {
    let hint = hint?;
    if nodes > hint.capacity() {
        return None;
    }
    hint.live_nodes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRY: Duration = Duration::from_secs(5);
    const S: fn(u64) -> Duration = Duration::from_secs;

    fn v(state: NodeState, age: Option<u64>, hears: Option<bool>, disc: u64) -> Verdict {
        let signs = Signs {
            heartbeat_age: age.map(S),
            session_closed_for: None,
            gossip_hears: hears,
            disconnected_for: S(disc),
        };
        verdict(state, &signs, EXPIRY)
    }

    #[test]
    fn heartbeats_decide_and_gossip_never_downs_a_node_on_its_own() {
        use NodeState::*;
        // Heartbeats arriving: Ready whatever gossip says (one-way loss of
        // gossip, or gossip not running).
        for hears in [Some(true), Some(false), None] {
            assert_eq!(v(Ready, Some(1), hears, 0), Verdict::Keep);
        }
        // Heartbeats stopped: Down unless gossip hears it.
        assert_eq!(
            v(Ready, Some(6), None, 0),
            Verdict::Down("heartbeat failure")
        );
        assert_eq!(
            v(Ready, None, Some(false), 0),
            Verdict::Down("heartbeat failure")
        );
        assert_eq!(v(Ready, Some(6), Some(true), 0), Verdict::Disconnect);
        // Disconnected: back to Ready with heartbeats, kept while gossip
        // hears it, Down when gossip loses it or after the maximum.
        assert_eq!(v(Disconnected, Some(0), Some(true), 10), Verdict::Ready);
        assert_eq!(v(Disconnected, Some(30), Some(true), 30), Verdict::Keep);
        assert!(matches!(
            v(Disconnected, Some(30), Some(false), 30),
            Verdict::Down(_)
        ));
        assert!(matches!(
            v(Disconnected, Some(30), None, 30),
            Verdict::Down(_)
        ));
        let max = DISCONNECTED_MAX_MS / 1000;
        assert!(matches!(
            v(Disconnected, Some(max + 5), Some(true), max + 1),
            Verdict::Down(_)
        ));
        // Down and Unknown nodes are the sessions' business (register).
        assert_eq!(v(Down, Some(1), Some(true), 0), Verdict::Keep);
        assert_eq!(v(Down, None, Some(true), 0), Verdict::Keep);
    }

    #[test]
    fn a_session_the_node_closed_downs_it_early_only_when_gossip_lost_it_too() {
        use NodeState::*;
        let ms = Duration::from_millis;
        let grace = ms(SESSION_CLOSED_GRACE_MS);
        let closed = |closed: Duration, age: Duration, hears: Option<bool>| Signs {
            heartbeat_age: Some(age),
            session_closed_for: Some(closed),
            gossip_hears: hears,
            disconnected_for: Duration::ZERO,
        };
        // Closed, silent and lost by gossip for the grace: Down before the
        // heartbeat expiry.
        assert!(grace < EXPIRY);
        assert_eq!(
            verdict(Ready, &closed(grace, grace, Some(false)), EXPIRY),
            Verdict::Down("its session closed and gossip lost the node")
        );
        // Not yet the grace (a daemon restarted at once comes back first).
        let early = grace - ms(1);
        assert_eq!(
            verdict(Ready, &closed(early, grace, Some(false)), EXPIRY),
            Verdict::Keep
        );
        assert_eq!(
            verdict(Ready, &closed(grace, early, Some(false)), EXPIRY),
            Verdict::Keep
        );
        // Gossip still hears it, or cannot be asked: the expiry decides.
        for hears in [Some(true), None] {
            assert_eq!(
                verdict(Ready, &closed(grace, grace, hears), EXPIRY),
                Verdict::Keep
            );
        }
        // A stalled node keeps its session open: only the expiry counts.
        let stalled = Signs {
            heartbeat_age: Some(EXPIRY - ms(1)),
            gossip_hears: Some(false),
            ..Signs::default()
        };
        assert_eq!(verdict(Ready, &stalled, EXPIRY), Verdict::Keep);
    }

    struct Fixed(Option<BTreeSet<String>>, usize);
    impl LivenessHint for Fixed {
        fn live_nodes(&self) -> Option<BTreeSet<String>> {
            self.0.clone()
        }
        fn capacity(&self) -> usize {
            self.1
        }
        fn info(&self) -> GossipInfo {
            GossipInfo::default()
        }
    }

    #[test]
    fn the_hint_is_ignored_past_gossips_capacity() {
        let live: BTreeSet<String> = ["a".to_string()].into();
        let hint = Fixed(Some(live.clone()), 3);
        assert_eq!(usable_live_set(Some(&hint), 3), Some(live.clone()));
        assert_eq!(usable_live_set(Some(&hint), 4), None);
        assert_eq!(usable_live_set(None, 1), None);
        assert_eq!(gossip_hears(Some(&live), "a"), Some(true));
        assert_eq!(gossip_hears(Some(&live), "b"), Some(false));
        assert_eq!(gossip_hears(None, "a"), None);
    }
}
