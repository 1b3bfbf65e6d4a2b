//! When a quorum of managers last acknowledged this leader, from openraft's
//! own bookkeeping: the evidence a leader's dispatcher needs to keep its
//! worker sessions (see `dispatcher::confirm_leadership`).
//!
//! openraft 0.9 reports, in each metrics update, how many milliseconds
//! before that update a quorum last acknowledged the leader
//! (`RaftMetrics::millis_since_quorum_ack`; the time counted is when the
//! acknowledged AppendEntries or heartbeat was sent, so a follower's
//! election timer restarted no earlier). An update carries no time of its
//! own, and under CPU starvation it may be read long after it was made, so
//! reading "now - millis" would date the acknowledgement too late and keep
//! a cut-off leader confident. Instead each update is dated by the moment
//! the previous one was read: the watch only shows values sent after that
//! read, so "previous read - millis" is never later than the real
//! acknowledgement. The estimate errs towards an older acknowledgement,
//! by at most the gap between two metrics updates (openraft sends one
//! each time its core loop runs, and at least every tick while it leads).

use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use super::types::Raft;

/// Follows openraft's metrics and publishes the earliest moment the last
/// quorum acknowledgement may have happened; `None` while this node does
/// not lead or no quorum acknowledged it yet. Ends (leaving `None`) when
/// openraft stops.
pub(super) fn spawn_quorum_ack_watch(raft: &Raft) -> watch::Receiver<Option<Instant>> {
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        // The current value may be from any time before this task started.
        metrics.borrow_and_update();
        let mut read_before = Instant::now();
        while metrics.changed().await.is_ok() {
            let now = Instant::now();
            let millis = metrics.borrow_and_update().millis_since_quorum_ack;
            tx.send_replace(acked_no_later_than(read_before, millis));
            read_before = now;
        }
        tx.send_replace(None);
    });
    rx
}

/// The earliest time a quorum acknowledgement reported as `millis` before
/// an update may have happened, when that update was made after
/// `sent_after`. `None` when there is no acknowledgement, or it would
/// predate this process's clock.
fn acked_no_later_than(sent_after: Instant, millis: Option<u64>) -> Option<Instant> {
    sent_after.checked_sub(Duration::from_millis(millis?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_is_dated_from_the_read_before_its_update() {
        let read = Instant::now();
        assert_eq!(
            acked_no_later_than(read, Some(300)),
            Some(read - Duration::from_millis(300))
        );
        assert_eq!(acked_no_later_than(read, Some(0)), Some(read));
        assert_eq!(acked_no_later_than(read, None), None);
    }
}
