//! The orchestrator's reconcile pass: a pure function from the store's
//! content and the time to the mutations that bring pods in line with each
//! deployment (one live pod per slot — a slot number in replicated mode, an
//! eligible node in global mode, see [`Layout`] — restarts with the restart
//! policy, scale up and down, per-slot history trimming, and clean-up of
//! pods whose deployment is gone).

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::{
    restart_policy, Deployment, Mutation, ObjectKind, Pod, PodState, PodStatus, RestartPolicy,
};

use super::layout::{Layout, LostNodes};
use super::placement::Placement;
use super::restart::{decide, RestartDecision};
use super::updater;
use crate::ids::new_id;
use crate::objects::{is_ready, observed, touch, version, wanted};
use crate::store::{delete, put, StoreData};

/// What one pass wants written, and the messages to show on deployments.
#[derive(Debug, Default)]
pub struct Reconciliation {
    pub mutations: Vec<Mutation>,
    /// When to look again even without a change (a monitor period or an
    /// update delay ending), Unix ms.
    pub wake_at: Option<i64>,
    /// Pods this pass creates for empty slots, and those it left for the
    /// next pass ([`MAX_CREATES_PER_PASS`]).
    created: usize,
    pub deferred: usize,
}

/// Most pods one pass creates for empty slots (a scale-up): the controller
/// proposes at most this many mutations a pass anyway, and building (and
/// placing) 100,000 pods to propose 5,000 of them took the pass 400 ms
/// under the store's lock, ten times over.
pub const MAX_CREATES_PER_PASS: usize = crate::controller::MAX_WRITES_PER_PASS;

impl Reconciliation {
    /// Whether this pass may create one more pod for an empty slot; counts
    /// it when so, and the deferral when not.
    fn may_create(&mut self) -> bool {
        if self.created < MAX_CREATES_PER_PASS {
            self.created += 1;
            true
        } else {
            self.deferred += 1;
            false
        }
    }

    pub fn wake(&mut self, at: i64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// Computes the pass over every deployment and orphaned pod. The pods it
/// creates come already placed when a node takes them ([`Placement`]).
pub fn reconcile(data: &StoreData, now: i64) -> Reconciliation {
    let mut out = Reconciliation::default();
    let mut placement = Placement::new(data);
    let lost = LostNodes::of(data);
    let mut by_deployment: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in data.pods.values() {
        by_deployment
            .entry(p.deployment_id.as_str())
            .or_default()
            .push(p);
    }

    for d in data.deployments.values() {
        if d.spec.is_none() {
            continue;
        }
        let pods = by_deployment
            .get(d.id.as_str())
            .cloned()
            .unwrap_or_default();
        let layout = Layout::with_lost(data, d, pods, &lost);
        let previous = d
            .status
            .as_ref()
            .and_then(|s| data.replica_sets.get(&s.previous_replica_set_id))
            .and_then(|rs| rs.template.as_ref());
        reconcile_deployment(d, previous, &layout, &mut placement, now, &mut out);
        trim_revisions(data, d, &mut out);
    }

    // Pods whose deployment no longer exists: stop them, then forget them.
    for (deployment_id, pods) in &by_deployment {
        if data.deployments.contains_key(*deployment_id) {
            continue;
        }
        for p in pods {
            remove_pod(p, now, &mut out);
        }
    }
    // ReplicaSets of a removed deployment go once none of its pods is left.
    for rs in data.replica_sets.values() {
        let orphaned = !data.deployments.contains_key(&rs.deployment_id)
            && !by_deployment.contains_key(rs.deployment_id.as_str());
        if orphaned {
            out.mutations.push(delete(
                ObjectKind::ReplicaSet,
                rs.id.clone(),
                version(&rs.meta),
            ));
        }
    }
    placement.place_new(&mut out.mutations, now);
    out
}

fn reconcile_deployment(
    d: &Deployment,
    previous_template: Option<&shoal_proto::PodTemplate>,
    layout: &Layout,
    placement: &mut Placement,
    now: i64,
    out: &mut Reconciliation,
) {
    let spec = d.spec.as_ref().expect("checked by caller");
    let rs_id = d
        .status
        .as_ref()
        .map(|s| s.current_replica_set_id.clone())
        .unwrap_or_default();
    if rs_id.is_empty() {
        return;
    }
    let policy = spec.restart_policy.unwrap_or_default();
    let history_limit = spec.pod_history_limit as usize;

    // Pods move off drained nodes `parallelism` slots at a time (the update
    // setting; 0: all at once), each replacement started before its old pod
    // stops.
    let parallelism = spec
        .update_config
        .unwrap_or_else(crate::controlapi::spec::default_update_config)
        .parallelism;
    let drains: Vec<DrainState> = (1..=layout.desired)
        .map(|slot| drain_state(layout, layout.pods(slot)))
        .collect();
    let moving = drains
        .iter()
        .filter(|s| matches!(s, DrainState::Moving))
        .count() as u64;
    let mut drain_budget = match parallelism {
        0 => u64::MAX,
        n => n.saturating_sub(moving),
    };

    // Slots this pass leaves alone: only those may start an update step,
    // so two mutations never race on one pod.
    let mut settled = BTreeSet::new();
    for (slot, drain) in (1..=layout.desired).zip(drains) {
        let pods = layout.pods(slot);
        let before = out.mutations.len();
        let deferred = out.deferred;
        let draining = policy.condition() != restart_policy::Condition::None
            && !matches!(drain, DrainState::None);
        if draining {
            drain_slot(
                d,
                layout,
                &rs_id,
                slot,
                pods,
                drain,
                &mut drain_budget,
                now,
                out,
            );
        } else {
            reconcile_slot(d, layout, &rs_id, &policy, slot, pods, now, out);
        }
        if out.mutations.len() == before && out.deferred == deferred && !draining {
            settled.insert(slot);
        }
        trim_history(pods, history_limit, out);
    }
    // Slots above the desired count: scale down (or, in global mode, nodes
    // that are no longer eligible).
    for pods in layout.pods_above(layout.desired) {
        for p in pods {
            remove_pod(p, now, out);
        }
    }
    updater::step(d, previous_template, layout, &settled, placement, now, out);
}

/// Where a slot stands in moving off a drained node.
#[derive(Debug)]
enum DrainState<'a> {
    /// No live pod of the slot is on a drained node.
    None,
    /// Its pod runs on a drained node, no replacement yet.
    Waiting,
    /// A replacement runs elsewhere, not ready yet: the old pod still serves.
    Moving,
    /// The replacement (here) is ready, or it ended: the old pod can stop,
    /// or the replacement be replaced.
    Replaced(&'a Pod),
}

fn drain_state<'a>(layout: &Layout, pods: &[&'a Pod]) -> DrainState<'a> {
    if !layout.has_drained_nodes() {
        return DrainState::None;
    }
    let live: Vec<&'a Pod> = pods.iter().copied().filter(|p| wanted(p)).collect();
    if !live.iter().any(|p| layout.on_drained_node(p)) {
        return DrainState::None;
    }
    match live.iter().rev().find(|p| !layout.on_lost_node(p)) {
        None => DrainState::Waiting,
        Some(r) if !is_ready(r) && !observed(r).is_terminal() => DrainState::Moving,
        Some(r) => DrainState::Replaced(r),
    }
}

/// A slot whose pod runs on a drained node: a replacement is started
/// elsewhere (when the drain budget allows), and the old pod stops once it
/// is ready, so the service keeps its capacity while a node drains. A
/// replacement that cannot be placed leaves the old pod running (`service
/// ps` says why); one that fails is restarted by the restart policy.
#[allow(clippy::too_many_arguments)]
fn drain_slot(
    d: &Deployment,
    layout: &Layout,
    rs_id: &str,
    slot: u64,
    pods: &[&Pod],
    state: DrainState,
    budget: &mut u64,
    now: i64,
    out: &mut Reconciliation,
) {
    let live = || pods.iter().copied().filter(|p| wanted(p));
    // Down or removed nodes are not waited for.
    for p in live().filter(|p| layout.on_lost_node(p) && !layout.on_drained_node(p)) {
        out.mutations.push(shut_down_lost(p, now));
    }
    match state {
        DrainState::None | DrainState::Moving => {}
        DrainState::Waiting => {
            if *budget > 0 {
                *budget -= 1;
                let attempt = live().next_back().map_or(0, |p| p.attempt + 1);
                out.mutations
                    .push(put(layout.new_pod(d, rs_id, slot, attempt, now, now), 0));
            }
        }
        DrainState::Replaced(r) if observed(r).is_terminal() => {
            // The replacement failed: another one, as a restart would.
            if *budget > 0 {
                *budget -= 1;
                out.mutations.push(shut_down(r, now));
                out.mutations.push(put(
                    layout.new_pod(d, rs_id, slot, r.attempt + 1, now, now),
                    0,
                ));
            }
        }
        DrainState::Replaced(_) => {
            for p in live().filter(|p| layout.on_drained_node(p)) {
                out.mutations.push(shut_down_lost(p, now));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn reconcile_slot(
    d: &Deployment,
    layout: &Layout,
    rs_id: &str,
    policy: &RestartPolicy,
    slot: u64,
    pods: &[&Pod],
    now: i64,
    out: &mut Reconciliation,
) {
    // A pod on a node that is down, drained or gone runs elsewhere: it is
    // shut down (its node stops it if it ever comes back, so it is never
    // duplicated) and the slot gets a new pod at once, unless the restart
    // policy says never.
    let replace_lost = policy.condition() != restart_policy::Condition::None;
    let lost = |p: &Pod| replace_lost && layout.on_lost_node(p);
    // Iterated, not collected: this runs for every slot of every pass.
    let live = || pods.iter().copied().filter(|p| wanted(p) && !lost(p));
    for p in pods.iter().copied().filter(|p| wanted(p) && lost(p)) {
        out.mutations.push(shut_down_lost(p, now));
    }
    let Some(newest) = live().next_back() else {
        // Stop-first: the previous pod of the slot stops before the next
        // starts (one on a lost node cannot be waited for).
        let stopping = pods.iter().any(|p| {
            !p.node_id.is_empty() && !observed(p).is_terminal() && !layout.on_lost_node(p)
        });
        if !stopping && out.may_create() {
            out.mutations
                .push(put(layout.new_pod(d, rs_id, slot, 0, now, now), 0));
        }
        return;
    };
    let older = || live().take_while(|p| !std::ptr::eq(*p, newest));
    // Start-first: the old pod keeps serving until its replacement of the
    // target revision is ready. Otherwise (a race left two live pods) only
    // the newest stays.
    let replacement_starting = newest.replica_set_id == rs_id
        && !is_ready(newest)
        && older().all(|o| o.replica_set_id != rs_id);
    if !replacement_starting {
        for extra in older() {
            out.mutations.push(shut_down(extra, now));
        }
    }
    if !observed(newest).is_terminal() {
        return;
    }
    match decide(policy, newest, pods, now) {
        RestartDecision::Restart { not_before } => {
            out.mutations.push(shut_down(newest, now));
            out.mutations.push(put(
                layout.new_pod(d, rs_id, slot, newest.attempt + 1, now, not_before),
                0,
            ));
        }
        RestartDecision::GiveUp(reason) => {
            // Record why once, so `service ps` can show it.
            let status = newest.status.clone().unwrap_or_default();
            if !status.message.contains(&reason) {
                let mut p = (*newest).clone();
                let s = p.status.get_or_insert_with(PodStatus::default);
                s.message = format!("{} ({reason})", status.message).trim().to_string();
                touch(&mut p.meta, now);
                out.mutations.push(put(p, version(&newest.meta)));
            }
        }
    }
}

/// Deletes revisions beyond the history limit that no pod refers to any more
/// (the target and the previous revision are always kept).
fn trim_revisions(data: &StoreData, d: &Deployment, out: &mut Reconciliation) {
    let Some(spec) = &d.spec else { return };
    let status = d.status.clone().unwrap_or_default();
    let keep = (spec.revision_history_limit as usize).max(2);
    let revisions = data.replica_sets_of_deployment(&d.id);
    if revisions.len() <= keep {
        return;
    }
    for rs in &revisions[..revisions.len() - keep] {
        let pinned = rs.id == status.current_replica_set_id
            || rs.id == status.previous_replica_set_id
            || data.pods.values().any(|p| p.replica_set_id == rs.id);
        if !pinned {
            out.mutations.push(delete(
                ObjectKind::ReplicaSet,
                rs.id.clone(),
                version(&rs.meta),
            ));
        }
    }
}

/// Deletes the oldest dead pods of a slot beyond the history limit.
fn trim_history(pods: &[&Pod], limit: usize, out: &mut Reconciliation) {
    let dead: Vec<&&Pod> = pods
        .iter()
        .filter(|p| !wanted(p) && observed(p).is_terminal())
        .collect();
    if dead.len() > limit {
        for p in &dead[..dead.len() - limit] {
            out.mutations
                .push(delete(ObjectKind::Pod, p.id.clone(), version(&p.meta)));
        }
    }
}

/// Marks a pod for removal, and deletes it once nothing runs for it.
fn remove_pod(p: &Pod, now: i64, out: &mut Reconciliation) {
    let never_placed = p.node_id.is_empty();
    if never_placed || observed(p).is_terminal() {
        out.mutations
            .push(delete(ObjectKind::Pod, p.id.clone(), version(&p.meta)));
    } else if p.desired_state() != PodState::Remove {
        let mut p = p.clone();
        p.desired_state = PodState::Remove as i32;
        touch(&mut p.meta, now);
        let v = version(&p.meta);
        out.mutations.push(put(p, v));
    }
}

/// Shuts down a pod whose node is lost, saying so in its status for
/// `service ps` (its observed state is the node's, and the node is gone).
fn shut_down_lost(p: &Pod, now: i64) -> Mutation {
    let mut p = p.clone();
    p.desired_state = PodState::Shutdown as i32;
    let s = p.status.get_or_insert_with(PodStatus::default);
    s.message = format!("node {} is down or drained: replaced", p.node_id);
    touch(&mut p.meta, now);
    let v = version(&p.meta);
    put(p, v)
}

pub(super) fn shut_down(p: &Pod, now: i64) -> Mutation {
    let mut p = p.clone();
    p.desired_state = PodState::Shutdown as i32;
    touch(&mut p.meta, now);
    let v = version(&p.meta);
    put(p, v)
}

pub(super) fn new_pod(
    d: &Deployment,
    rs_id: &str,
    slot: u64,
    attempt: u64,
    now: i64,
    not_before: i64,
) -> Pod {
    let mut pod = Pod {
        id: new_id(),
        deployment_id: d.id.clone(),
        replica_set_id: rs_id.to_string(),
        slot,
        desired_state: PodState::Running as i32,
        status: Some(PodStatus {
            state: PodState::New as i32,
            message: "created".into(),
            timestamp: now,
            ..Default::default()
        }),
        attempt,
        not_before,
        ..Default::default()
    };
    touch(&mut pod.meta, now);
    pod
}
