//! Placing the pods the orchestrator creates in the same Raft write that
//! creates them, by the scheduler's own [`Placer`] (its filters, spread and
//! explanations), instead of leaving them unassigned for the scheduler's
//! next pass. That saves a Raft write and a controller wake-up between a
//! change and the first container start, on every `service create`, scale
//! and rollout step.
//!
//! Two cases:
//! - a new pod that may start now goes where the scheduler would put it;
//!   one that no node takes is left unassigned, and the scheduler writes it
//!   Pending with the explanation, as before. Pods that compete with others
//!   for what a node has (reservations, host-mode ports, a maximum per node)
//!   are left to the scheduler too: it is the one writer that hands those
//!   out, since two controllers placing at the same moment could both give
//!   away the last of a node's memory or the same port;
//! - the replacement of a pod in a stop-first rolling update goes on the
//!   old pod's node, in the write that shuts the old pod down, when that node
//!   is the one the scheduler would choose once the old pod is gone (it
//!   passes the filters and the spread prefers it; otherwise, say after a
//!   node joined, the replacement is scheduled afresh, so a forced update
//!   still rebalances). The node holds it (created, not
//!   started) until the old container has stopped (worker/src/agent/pods.rs),
//!   so stop-first still means stop first, but the container is created
//!   during the old one's grace period and started the moment it is gone,
//!   with no round trip through the managers in between. The old pod's
//!   reservations and ports pass to its replacement in that one write, so
//!   the scheduler never sees them free; a replacement that claims more than
//!   the old pod held waits for the old pod to stop and goes through the
//!   scheduler, as before.

use std::collections::BTreeSet;

use shoal_proto::{
    mutation, object, port_config::PublishMode, Mutation, Pod, PodState, PodStatus, PodTemplate,
};

use crate::objects::observed;
use crate::scheduler::filter::reservation;
use crate::scheduler::{assign, Placer};
use crate::store::StoreData;

/// The placer of one orchestrator pass, built on first use (most passes
/// create no pod).
pub struct Placement<'a> {
    data: &'a StoreData,
    placer: Option<Placer>,
}

impl<'a> Placement<'a> {
    pub fn new(data: &'a StoreData) -> Self {
        Placement { data, placer: None }
    }

    fn template(&self, pod: &Pod) -> Option<&'a PodTemplate> {
        self.data
            .replica_sets
            .get(&pod.replica_set_id)
            .and_then(|rs| rs.template.as_ref())
    }

    /// `new`, placed on the node of `old` (the pod it replaces, being shut
    /// down in the same write) if that node is the scheduler's choice once
    /// `old` is gone; None when it is not, or when `old` is not on a node:
    /// then the replacement is created the usual way once `old` has stopped.
    pub fn instead_of(&mut self, mut new: Pod, old: &Pod, now: i64) -> Option<Pod> {
        if old.node_id.is_empty() || observed(old).is_terminal() {
            return None;
        }
        // A global pod comes with its node, which is the old pod's.
        if !new.node_id.is_empty() && new.node_id != old.node_id {
            return None;
        }
        let template = self.template(&new)?;
        let old_template = self.template(old);
        if !claims_within(template, old_template) {
            return None;
        }
        let data = self.data;
        let placer = self.placer.get_or_insert_with(|| Placer::new(data));
        let node = placer.place_instead_of(template, &new.deployment_id, old, old_template)?;
        assign(&mut new, node, now);
        new.status = Some(PodStatus {
            state: PodState::Assigned as i32,
            message: "assigned to the node of the pod it replaces".into(),
            timestamp: now,
            ..Default::default()
        });
        Some(new)
    }

    /// Assigns the pods `mutations` create unplaced and that may start now
    /// (restart delays are left to the scheduler, which wakes for them).
    pub fn place_new(&mut self, mutations: &mut [Mutation], now: i64) {
        for m in mutations.iter_mut() {
            let Some(pod) = created_pod(m) else { continue };
            let unplaced = pod.node_id.is_empty()
                && pod.not_before <= now
                && pod.desired_state() == PodState::Running;
            if !unplaced {
                continue;
            }
            let Some(template) = self.template(pod).filter(|t| !contends(t)) else {
                continue;
            };
            let data = self.data;
            let placer = self.placer.get_or_insert_with(|| Placer::new(data));
            if let Ok(node) = placer.place(template, &pod.deployment_id) {
                assign(pod, node, now);
            }
        }
    }
}

/// The pod a mutation creates (a put expecting no stored version).
fn created_pod(m: &mut Mutation) -> Option<&mut Pod> {
    if m.expected_version != 0 || m.force {
        return None;
    }
    match m.op.as_mut()? {
        mutation::Op::Put(o) => match o.kind.as_mut()? {
            object::Kind::Pod(p) => Some(p),
            _ => None,
        },
        _ => None,
    }
}

/// The host-mode ports a pod of `template` binds on its node.
fn host_ports(template: &PodTemplate) -> BTreeSet<u32> {
    template
        .host_ports
        .iter()
        .filter(|p| p.publish_mode() == PublishMode::Host && p.published_port != 0)
        .map(|p| p.published_port)
        .collect()
}

/// Whether pods of `template` compete with other pods for what a node has:
/// reservations, host-mode ports, a maximum per node.
fn contends(template: &PodTemplate) -> bool {
    let (cpus, memory) = reservation(template);
    let max_per_node = template
        .placement
        .as_ref()
        .is_some_and(|p| p.max_replicas_per_node > 0);
    cpus > 0 || memory > 0 || max_per_node || !host_ports(template).is_empty()
}

/// Whether a pod of `new` claims nothing on its node beyond what the pod of
/// `old` it replaces held there (one pod out, one in, so a maximum per node
/// is unchanged).
fn claims_within(new: &PodTemplate, old: Option<&PodTemplate>) -> bool {
    let (cpus, memory) = reservation(new);
    let (old_cpus, old_memory) = old.map_or((0, 0), reservation);
    let old_ports = old.map(host_ports).unwrap_or_default();
    cpus <= old_cpus && memory <= old_memory && host_ports(new).is_subset(&old_ports)
}
