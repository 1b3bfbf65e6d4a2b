//! Fault injection for the Raft transport, for tests that partition
//! managers without touching the operating system's network.
//!
//! Every outgoing RPC asks [`Faults`] first; a blocked one fails as
//! `Unreachable` after [`BLOCKED_CALL_DELAY`], as a dead peer would (but
//! faster than a real connect timeout, to keep tests short). Faults only
//! act on this node's *outgoing* calls: to cut two nodes apart both ways,
//! block each from the other. A handle nobody blocks costs one atomic load
//! per RPC.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::types::NodeId;

/// How long a blocked call takes to fail.
pub const BLOCKED_CALL_DELAY: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct State {
    all: bool,
    targets: HashSet<NodeId>,
}

#[derive(Debug, Default)]
struct Shared {
    /// True when anything is blocked: the fast path for the common case.
    active: AtomicBool,
    state: Mutex<State>,
}

/// Which peers this node's Raft transport must treat as unreachable.
/// Cheap to clone; clones share the same switches.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    /// Makes calls to `target` fail as unreachable.
    pub fn block(&self, target: NodeId) {
        self.update(|s| {
            s.targets.insert(target);
        });
    }

    /// Lets calls to `target` through again (unless everything is blocked).
    pub fn unblock(&self, target: NodeId) {
        self.update(|s| {
            s.targets.remove(&target);
        });
    }

    /// Makes every outgoing call fail as unreachable.
    pub fn block_all(&self) {
        self.update(|s| s.all = true);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.update(|s| {
            s.all = false;
            s.targets.clear();
        });
    }

    /// True when a call to `target` must fail.
    pub fn is_blocked(&self, target: NodeId) -> bool {
        if !self.shared.active.load(Ordering::Acquire) {
            return false;
        }
        let s = self.lock();
        s.all || s.targets.contains(&target)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the sets inconsistent.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.lock();
        f(&mut s);
        let active = s.all || !s.targets.is_empty();
        self.shared.active.store(active, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_one_peer_or_all_and_healing() {
        let faults = Faults::default();
        assert!(!faults.is_blocked(2));
        faults.block(2);
        let clone = faults.clone();
        assert!(clone.is_blocked(2));
        assert!(!clone.is_blocked(3));
        faults.block_all();
        assert!(faults.is_blocked(3));
        faults.unblock(2);
        assert!(faults.is_blocked(2), "block_all still holds");
        faults.heal();
        assert!(!faults.is_blocked(2) && !faults.is_blocked(3));
        faults.block(4);
        faults.unblock(4);
        assert!(!faults.is_blocked(4));
    }
}
