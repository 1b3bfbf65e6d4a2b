//! When the agent tries the dispatcher again: exponential backoff with
//! jitter for failed attempts, and a reconnect spread over a window after a
//! session that worked ends, so many workers reconnecting to a restarted
//! manager, or leaving a manager that ended every session at once, do not
//! all knock at the same instant.

use std::time::Duration;

use rand::Rng;
use shoal_proto::defaults::HEARTBEAT_PERIOD_MS;

/// The window over which the nodes of sessions that ended together
/// reconnect. A manager that stops leading (or cannot show a quorum still
/// follows it) ends every session at once; each node's way back is a TLS
/// handshake and a Raft write to register, and thousands of them in the
/// same milliseconds starve the new leader and delay the heartbeats of the
/// nodes already back. One heartbeat period: the spread itself costs a
/// node at most a fifth of the heartbeat expiry, and of a new leader's
/// warm-up before it marks anyone Down.
pub(crate) const RECONNECT_SPREAD: Duration = Duration::from_millis(HEARTBEAT_PERIOD_MS);

/// The longest wait between failed attempts (plus up to 25 % jitter). A
/// node whose attempts fail through an election must still reach the new
/// leader within its warm-up (a heartbeat expiry, five periods), or it is
/// marked Down: at 5 s, nodes that had backed off to the cap during a long
/// election arrived too late. An attempt over the kept channel costs a
/// manager one refused call.
pub(crate) const RETRY_MAX: Duration = Duration::from_millis(2 * HEARTBEAT_PERIOD_MS);

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay after a failed attempt: the current one with up to
    /// 25% jitter either way; the one after doubles, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = rand::rng().random_range(0.75..1.25);
        base.mul_f64(jitter)
    }

    /// The delay after a session that worked has ended: uniform over
    /// `spread` (see [`RECONNECT_SPREAD`]), and the backoff starts over.
    pub fn after_session(&mut self, spread: Duration) -> Duration {
        self.reset();
        spread.mul_f64(rand::rng().random_range(0.0..1.0))
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert!((75..=125).contains(&delays[0]), "{delays:?}");
        assert!((150..=250).contains(&delays[1]), "{delays:?}");
        assert!((300..=500).contains(&delays[4]), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[test]
    fn reconnects_after_a_session_spread_over_the_whole_window_and_start_the_backoff_over() {
        let spread = Duration::from_millis(1_000);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..2_000)
            .map(|_| {
                // A failed attempt or two before the session worked.
                b.next_delay();
                b.next_delay();
                b.after_session(spread)
            })
            .collect();
        assert!(delays.iter().all(|d| *d < spread), "beyond the window");
        // Every tenth of the window gets some of them (1 in 10 each; the
        // chance a tenth stays empty in 2,000 draws is about 1e-91).
        for tenth in 0..10 {
            let (lo, hi) = (spread * tenth / 10, spread * (tenth + 1) / 10);
            assert!(
                delays.iter().any(|d| (lo..hi).contains(d)),
                "nothing in {lo:?}..{hi:?}"
            );
        }
        // The backoff starts over: the next failure waits the initial delay.
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[test]
    fn a_node_failing_through_an_election_retries_within_a_new_leaders_warm_up() {
        use shoal_proto::defaults::HEARTBEAT_MISSES_BEFORE_DOWN;
        let warm_up = Duration::from_millis(HEARTBEAT_PERIOD_MS * HEARTBEAT_MISSES_BEFORE_DOWN);
        let mut b = Backoff::new(Duration::from_millis(100), RETRY_MAX);
        let longest = (0..200).map(|_| b.next_delay()).max().unwrap();
        assert!(longest <= RETRY_MAX.mul_f64(1.25), "{longest:?}");
        assert!(longest * 2 <= warm_up, "{longest:?} against {warm_up:?}");
    }
}
