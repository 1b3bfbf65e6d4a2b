//! What a client hears when the managers have lost their quorum.
//!
//! openraft 0.9 keeps a leader that lost its majority leading, and a
//! proposal there waits until the majority is back; a follower that lost
//! its leader knows no one to forward to. Either way the operator needs the
//! same three facts: how many managers this one still reaches, that the
//! write is in doubt rather than lost, and the two ways out (bring managers
//! back, or `shoal init --force-new-cluster` on a survivor).

use std::time::Duration;

use tonic::Status;

use crate::raft::ManagerInfo;

/// How many voting managers this manager reaches, of how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub reachable: usize,
    pub voters: usize,
}

impl Reach {
    /// Counts the voters of `managers` (learners do not vote, so they do
    /// not count toward a quorum either way).
    pub fn of(managers: &[ManagerInfo]) -> Reach {
        let voters = managers.iter().filter(|m| !m.learner);
        let (reachable, voters) =
            voters.fold((0, 0), |(r, v), m| (r + m.reachable as usize, v + 1));
        Reach { reachable, voters }
    }
}

/// What timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// A proposal was appended but not committed in time: it may still
    /// commit.
    Write,
    /// The leader could not confirm its leadership in time (a read).
    Read,
}

/// The way out, shared by every no-quorum message.
const WAY_OUT: &str = "Bring managers back, or run `shoal init --force-new-cluster` on a survivor";

/// `Unavailable` for a call that waited `waited` for a quorum in vain.
pub fn no_quorum(reach: Reach, what: Waited, waited: Duration) -> Status {
    let secs = waited.as_secs_f64();
    let doubt = match what {
        Waited::Write => format!(
            "the write was not committed within {secs}s (it may still commit if the managers \
             come back)"
        ),
        Waited::Read => format!(
            "the leader could not confirm within {secs}s that it still leads, so a current \
             read is impossible"
        ),
    };
    Status::unavailable(format!(
        "no quorum: {} of {} managers reachable from this one; {doubt}. {WAY_OUT}",
        reach.reachable, reach.voters
    ))
}

impl Reach {
    /// Whether the reachable voters are a majority (this one included).
    pub fn has_majority(&self) -> bool {
        self.reachable * 2 > self.voters
    }
}

/// `Unavailable` for a change refused up front because the leader reaches
/// no majority (it could not commit, and would wait for one).
pub fn refuse_without_majority(reach: Reach, what: &str) -> Status {
    Status::unavailable(format!(
        "no quorum: {} of {} managers reachable from this one, so it cannot {what}. {WAY_OUT}",
        reach.reachable, reach.voters
    ))
}

/// `Unavailable` for a call that found no leader at all: an election is
/// running, which a majority of reachable managers soon ends, or one that
/// cannot be won without a majority.
pub fn no_leader(reach: Reach) -> Status {
    if reach.has_majority() {
        return Status::unavailable(format!(
            "no Raft leader at the moment: an election is running ({} of {} managers \
             reachable from this one); retry in a few seconds",
            reach.reachable, reach.voters
        ));
    }
    Status::unavailable(format!(
        "no quorum: {} of {} managers reachable from this one and no leader elected. {WAY_OUT}",
        reach.reachable, reach.voters
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(raft_id: u64, reachable: bool, learner: bool) -> ManagerInfo {
        ManagerInfo {
            raft_id,
            addr: format!("10.0.0.{raft_id}:2377"),
            leader: raft_id == 1,
            learner,
            reachable,
        }
    }

    #[test]
    fn reach_counts_voters_only() {
        let managers = [
            manager(1, true, false),
            manager(2, false, false),
            manager(3, false, false),
            manager(4, true, true),
        ];
        assert_eq!(
            Reach::of(&managers),
            Reach {
                reachable: 1,
                voters: 3
            }
        );
    }

    #[test]
    fn no_leader_says_no_quorum_only_without_a_reachable_majority() {
        let reach = |reachable| Reach {
            reachable,
            voters: 3,
        };
        let election = no_leader(reach(2));
        assert!(
            election
                .message()
                .starts_with("no Raft leader at the moment"),
            "{}",
            election.message()
        );
        let lost = no_leader(reach(1));
        assert!(
            lost.message().starts_with("no quorum: 1 of 3 managers"),
            "{}",
            lost.message()
        );
        assert!(lost.message().ends_with(WAY_OUT), "{}", lost.message());
    }

    #[test]
    fn the_write_message_says_how_many_how_long_and_what_to_do() {
        let status = no_quorum(
            Reach {
                reachable: 1,
                voters: 3,
            },
            Waited::Write,
            Duration::from_secs(10),
        );
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "no quorum: 1 of 3 managers reachable from this one; the write was not committed \
             within 10s (it may still commit if the managers come back). Bring managers back, \
             or run `shoal init --force-new-cluster` on a survivor"
        );
        let read = no_quorum(
            Reach {
                reachable: 1,
                voters: 3,
            },
            Waited::Read,
            Duration::from_millis(1500),
        );
        assert!(read.message().contains("within 1.5s"), "{}", read.message());
        assert!(read.message().starts_with("no quorum: 1 of 3"));
    }
}
