//! The restart supervisor's decision: given a pod that stopped while it was
//! wanted running, should its slot get a new pod, and when? Swarm's rules:
//! condition any|on-failure|none, a delay before the new pod starts, at most
//! `max_attempts` restarts, counted within `window` when one is set.

use shoal_proto::{restart_policy::Condition, Pod, PodState, RestartPolicy};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Create a replacement that may start at `not_before` (Unix ms).
    Restart { not_before: i64 },
    /// Leave the slot with its dead pod; the reason is shown to the user.
    GiveUp(String),
}

fn created_at(p: &Pod) -> i64 {
    p.meta.as_ref().map_or(0, |m| m.created_at)
}

/// Decides for `stopped` (the newest pod of its slot, terminal while desired
/// running); `slot_pods` are all pods of the same slot, history included.
pub fn decide(
    policy: &RestartPolicy,
    stopped: &Pod,
    slot_pods: &[&Pod],
    now: i64,
) -> RestartDecision {
    let state = stopped.status.as_ref().map_or(PodState::New, |s| s.state());
    match policy.condition() {
        Condition::None => return RestartDecision::GiveUp("restart condition is none".into()),
        Condition::OnFailure if state == PodState::Complete => {
            return RestartDecision::GiveUp("completed; restart condition is on-failure".into())
        }
        _ => {}
    }
    if policy.max_attempts > 0 {
        let restarts = if policy.window_ms > 0 {
            let since = now - policy.window_ms as i64;
            slot_pods
                .iter()
                .filter(|p| p.attempt > 0 && created_at(p) >= since)
                .count() as u64
        } else {
            stopped.attempt
        };
        if restarts >= policy.max_attempts {
            return RestartDecision::GiveUp(format!(
                "gave up after {restarts} restart(s) (max attempts {})",
                policy.max_attempts
            ));
        }
    }
    RestartDecision::Restart {
        not_before: now + policy.delay_ms as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Meta, PodStatus};

    fn pod(state: PodState, attempt: u64, created_at: i64) -> Pod {
        Pod {
            slot: 1,
            attempt,
            meta: Some(Meta {
                created_at,
                ..Default::default()
            }),
            status: Some(PodStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn policy(
        condition: Condition,
        delay_ms: u64,
        max_attempts: u64,
        window_ms: u64,
    ) -> RestartPolicy {
        RestartPolicy {
            condition: condition as i32,
            delay_ms,
            max_attempts,
            window_ms,
        }
    }

    #[test]
    fn any_restarts_after_the_delay_even_on_success() {
        let p = pod(PodState::Complete, 0, 0);
        let d = decide(&policy(Condition::Any, 5_000, 0, 0), &p, &[&p], 1_000);
        assert_eq!(d, RestartDecision::Restart { not_before: 6_000 });
    }

    #[test]
    fn on_failure_does_not_restart_a_completed_pod() {
        let p = pod(PodState::Complete, 0, 0);
        assert!(matches!(
            decide(&policy(Condition::OnFailure, 0, 0, 0), &p, &[&p], 0),
            RestartDecision::GiveUp(_)
        ));
        let f = pod(PodState::Failed, 0, 0);
        assert!(matches!(
            decide(&policy(Condition::OnFailure, 0, 0, 0), &f, &[&f], 0),
            RestartDecision::Restart { .. }
        ));
    }

    #[test]
    fn none_never_restarts() {
        let p = pod(PodState::Failed, 0, 0);
        assert!(matches!(
            decide(&policy(Condition::None, 0, 0, 0), &p, &[&p], 0),
            RestartDecision::GiveUp(_)
        ));
    }

    #[test]
    fn max_attempts_without_window_counts_the_whole_life() {
        let pol = policy(Condition::Any, 0, 2, 0);
        let second_restart = pod(PodState::Failed, 1, 0);
        assert!(matches!(
            decide(&pol, &second_restart, &[&second_restart], 0),
            RestartDecision::Restart { .. }
        ));
        let after_two = pod(PodState::Failed, 2, 0);
        assert!(matches!(
            decide(&pol, &after_two, &[&after_two], 0),
            RestartDecision::GiveUp(_)
        ));
    }

    #[test]
    fn max_attempts_with_window_forgets_old_restarts() {
        let pol = policy(Condition::Any, 0, 2, 60_000);
        let old1 = pod(PodState::Failed, 1, 0);
        let old2 = pod(PodState::Failed, 2, 10_000);
        let recent = pod(PodState::Failed, 3, 100_000);
        // At t=120s only `recent` is inside the 60 s window: one restart.
        let d = decide(&pol, &recent, &[&old1, &old2, &recent], 120_000);
        assert!(matches!(d, RestartDecision::Restart { .. }));
        // At t=20s all three are inside: three restarts >= 2.
        let d = decide(&pol, &recent, &[&old1, &old2, &recent], 20_000);
        assert!(matches!(d, RestartDecision::GiveUp(_)));
    }
}
