//! The rolling updater: moves a deployment's slots from older revisions to
//! the target revision (`status.current_replica_set_id`) in batches of
//! `parallelism`, stop-first or start-first, waiting for each batch's new
//! pods to be ready and to stay up for `monitor`, then `delay` before the
//! next batch. Failures of new pods beyond `max_failure_ratio` pause the
//! rollout, are ignored, or roll back, as `failure_action` says.
//!
//! Like the rest of the orchestrator it is a pure function of the store and
//! the time: all its state (target, previous revision, state, start time)
//! is in the Deployment's status in Raft, so a paused rollout survives a
//! manager restart and a new change simply retargets it.

use std::collections::BTreeSet;

use shoal_proto::{
    update_config::{FailureAction, Order},
    Deployment, Pod, PodState, PodTemplate, UpdateConfig, UpdateState,
};

use super::layout::Layout;
use super::placement::Placement;
use super::replicated::{shut_down, Reconciliation};
use crate::controlapi::spec::default_update_config;
use crate::objects::{created_at, is_ready, observed, touch, version, wanted};
use crate::store::put;

/// Whether a rollout is moving pods now.
pub fn is_active(state: UpdateState) -> bool {
    matches!(state, UpdateState::Updating | UpdateState::RollbackStarted)
}

/// The settings a rollout in `state` is rolled by.
pub fn config_for(d: &Deployment, state: UpdateState) -> UpdateConfig {
    let spec = d.spec.clone().unwrap_or_default();
    let rolling_back = matches!(
        state,
        UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted
    );
    let cfg = if rolling_back {
        spec.rollback_config
    } else {
        spec.update_config
    };
    cfg.unwrap_or_else(default_update_config)
}

/// Pods of the target revision that failed since the rollout started.
pub fn failed_pods<'a>(d: &Deployment, pods: impl Iterator<Item = &'a Pod>) -> Vec<&'a Pod> {
    let status = d.status.clone().unwrap_or_default();
    pods.filter(|p| {
        p.replica_set_id == status.current_replica_set_id
            && created_at(&p.meta) >= status.update_started_at
            && matches!(observed(p), PodState::Failed | PodState::Rejected)
    })
    .collect()
}

fn failure_reason(p: &Pod, service: &str) -> String {
    let s = p.status.clone().unwrap_or_default();
    let why = if s.err.is_empty() { s.message } else { s.err };
    format!("pod {} failed: {why}", crate::objects::pod_name(service, p))
}

/// Writes a new update state (and message) on the deployment.
fn set_state(
    d: &Deployment,
    state: UpdateState,
    message: String,
    now: i64,
    out: &mut Reconciliation,
) {
    let mut d2 = d.clone();
    let st = d2.status.get_or_insert_with(Default::default);
    st.update_state = state as i32;
    st.update_message = message;
    if matches!(
        state,
        UpdateState::Completed | UpdateState::RollbackCompleted
    ) {
        st.update_completed_at = now;
    }
    touch(&mut d2.meta, now);
    out.mutations.push(put(d2, version(&d.meta)));
}

/// Starts rolling back to the previous revision (automatic rollback).
fn start_rollback(
    d: &Deployment,
    previous_template: Option<PodTemplate>,
    reason: String,
    now: i64,
    out: &mut Reconciliation,
) {
    let status = d.status.clone().unwrap_or_default();
    if status.previous_replica_set_id.is_empty() {
        set_state(
            d,
            UpdateState::Paused,
            format!("update paused: {reason}; no previous revision to roll back to"),
            now,
            out,
        );
        return;
    }
    let mut d2 = d.clone();
    // The service's spec follows the revision it returns to.
    if let (Some(spec), Some(t)) = (d2.spec.as_mut(), previous_template) {
        spec.template = Some(t);
    }
    let st = d2.status.get_or_insert_with(Default::default);
    std::mem::swap(
        &mut st.current_replica_set_id,
        &mut st.previous_replica_set_id,
    );
    st.update_state = UpdateState::RollbackStarted as i32;
    st.update_message = format!("update rolled back: {reason}");
    st.update_started_at = now;
    st.update_completed_at = 0;
    touch(&mut d2.meta, now);
    out.mutations.push(put(d2, version(&d.meta)));
}

/// One step of the rollout of `d`, if one is active. `settled` are the
/// slots the slot reconciler left alone in this pass.
pub fn step(
    d: &Deployment,
    previous_template: Option<&PodTemplate>,
    layout: &Layout,
    settled: &BTreeSet<u64>,
    placement: &mut Placement,
    now: i64,
    out: &mut Reconciliation,
) {
    let Some(spec) = &d.spec else { return };
    let status = d.status.clone().unwrap_or_default();
    let state = status.update_state();
    if !is_active(state) {
        return;
    }
    let rolling_back = state == UpdateState::RollbackStarted;
    let cfg = config_for(d, state);
    let target = status.current_replica_set_id.as_str();
    let started = status.update_started_at;

    // Failure accounting over the target revision's pods.
    let failed = failed_pods(d, layout.all_pods());
    if let Some(first) = failed.first() {
        let ratio = failed.len() as f32 / layout.desired.max(1) as f32;
        if ratio > cfg.max_failure_ratio {
            let reason = failure_reason(first, &spec.name);
            match (cfg.failure_action(), rolling_back) {
                (FailureAction::Continue, _) => {}
                (FailureAction::Rollback, false) => {
                    let previous = previous_template.cloned();
                    return start_rollback(d, previous, reason, now, out);
                }
                (_, false) => {
                    return set_state(
                        d,
                        UpdateState::Paused,
                        format!("update paused due to failure: {reason}"),
                        now,
                        out,
                    )
                }
                (_, true) => {
                    return set_state(
                        d,
                        UpdateState::RollbackPaused,
                        format!("rollback paused due to failure: {reason}"),
                        now,
                        out,
                    )
                }
            }
        }
    }

    // Which slots still run an older revision, which are in flight (their
    // new pod not ready yet), and which are ready but still monitored.
    // As in Swarm, monitoring does not hold the next batch back: it watches
    // the new pods for failures while the rollout goes on, and the rollout
    // completes once the last new pod has been ready for `monitor`.
    let monitor = cfg.monitor_ms as i64;
    let mut old_slots = Vec::new();
    let mut in_flight = 0usize;
    let mut monitoring = 0usize;
    let mut last_ready: Option<i64> = None;
    for slot in 1..=layout.desired {
        let pods = layout.pods(slot);
        let live: Vec<&Pod> = pods.iter().copied().filter(|p| wanted(p)).collect();
        match live.last() {
            None => in_flight += 1,
            Some(newest) if newest.replica_set_id == target => {
                if live.len() > 1 {
                    in_flight += 1;
                } else if created_at(&newest.meta) >= started {
                    if is_ready(newest) {
                        let ready_at = newest
                            .status
                            .as_ref()
                            .map_or(0, |s| s.timestamp)
                            .max(created_at(&newest.meta));
                        last_ready = Some(last_ready.map_or(ready_at, |l: i64| l.max(ready_at)));
                        if ready_at + monitor > now {
                            monitoring += 1;
                            out.wake(ready_at + monitor);
                        }
                    } else {
                        in_flight += 1;
                    }
                }
            }
            Some(_) => old_slots.push(slot),
        }
    }

    if old_slots.is_empty() && in_flight == 0 && monitoring == 0 {
        let (done, message) = if rolling_back {
            (
                UpdateState::RollbackCompleted,
                format!("rollback completed ({})", status.update_message),
            )
        } else {
            (UpdateState::Completed, "update completed".to_string())
        };
        return set_state(d, done, message, now, out);
    }
    if in_flight > 0 || old_slots.is_empty() {
        return;
    }
    // The next batch, `delay` after the last one became ready.
    if let Some(ready) = last_ready {
        let next = ready + cfg.delay_ms as i64;
        if now < next {
            out.wake(next);
            return;
        }
    }
    let batch = if cfg.parallelism == 0 {
        old_slots.len()
    } else {
        cfg.parallelism as usize
    };
    for slot in old_slots
        .into_iter()
        .filter(|s| settled.contains(s))
        .take(batch)
    {
        let old = layout
            .pods(slot)
            .iter()
            .copied()
            .rfind(|p| wanted(p))
            .expect("an old slot has a live pod");
        match cfg.order() {
            Order::StopFirst => {
                out.mutations.push(shut_down(old, now));
                // The replacement rides in the same write, on the old pod's
                // node, when it fits there; its node starts it once the old
                // container has stopped. Otherwise the slot reconciler
                // creates it after the old pod has stopped.
                let new = layout.new_pod(d, target, slot, 0, now, now);
                if let Some(new) = placement.instead_of(new, old, now) {
                    out.mutations.push(put(new, 0));
                }
            }
            Order::StartFirst => out
                .mutations
                .push(put(layout.new_pod(d, target, slot, 0, now, now), 0)),
        }
    }
}
