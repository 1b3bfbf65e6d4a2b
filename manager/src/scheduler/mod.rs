//! The scheduler: places pending pods on nodes. Filters decide which nodes
//! can take a pod (and explain the ones that cannot); among those, the
//! template's spread preferences pick the group of nodes (by label value)
//! with the fewest pods of the deployment, as Swarm's do, and within it the
//! node with the fewest pods of the same deployment, then the fewest pods
//! overall.

pub mod constraint;
pub mod filter;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use shoal_proto::{port_config::PublishMode, Node, Pod, PodState, PodStatus, PodTemplate};
use tokio_util::sync::CancellationToken;

use crate::controller::{run_controller, Pass};
use crate::objects::{observed, touch, version, wanted};
use crate::proposer::Proposer;
use crate::store::{put, Store, StoreData};
use constraint::node_attribute;
use filter::{all_filters, capacity_filters, reservation, Filter};

/// A node and what is already placed on it, as the filters see it.
pub struct NodeInfo {
    pub node: Node,
    /// Live pods per deployment id.
    per_deployment: HashMap<String, u64>,
    pub total: u64,
    pub host_ports: HashSet<u32>,
    /// What the pods on the node reserve (their templates' `reserve_*`).
    pub reserved_nano_cpus: i64,
    pub reserved_memory_bytes: i64,
}

impl NodeInfo {
    /// A node with nothing placed on it yet.
    pub fn new(node: Node) -> NodeInfo {
        NodeInfo {
            node,
            per_deployment: HashMap::new(),
            total: 0,
            host_ports: HashSet::new(),
            reserved_nano_cpus: 0,
            reserved_memory_bytes: 0,
        }
    }

    pub fn pods_of(&self, deployment_id: &str) -> u64 {
        self.per_deployment.get(deployment_id).copied().unwrap_or(0)
    }

    /// Counts one more pod of `deployment_id` on the node, with what its
    /// template takes: host-mode ports and reservations. `None` when the
    /// pod's replica set is gone (it still counts as a pod).
    pub fn place(&mut self, deployment_id: &str, template: Option<&PodTemplate>) {
        // Counted without a new key string per pod: a pass counts every
        // pod of the cluster here.
        match self.per_deployment.get_mut(deployment_id) {
            Some(n) => *n += 1,
            None => {
                self.per_deployment.insert(deployment_id.to_string(), 1);
            }
        }
        self.total += 1;
        let Some(t) = template else { return };
        self.host_ports.extend(
            t.host_ports
                .iter()
                .filter(|p| p.publish_mode() == PublishMode::Host)
                .map(|p| p.published_port),
        );
        let (cpus, memory) = reservation(t);
        self.reserved_nano_cpus += cpus;
        self.reserved_memory_bytes += memory;
    }

    /// Takes back what [`NodeInfo::place`] counted for one pod: the share
    /// of a pod that leaves the node, so the pod replacing it there can be
    /// checked against the node without it.
    pub fn unplace(&mut self, deployment_id: &str, template: Option<&PodTemplate>) {
        if let Some(n) = self.per_deployment.get_mut(deployment_id) {
            *n = n.saturating_sub(1);
        }
        self.total = self.total.saturating_sub(1);
        let Some(t) = template else { return };
        for p in t
            .host_ports
            .iter()
            .filter(|p| p.publish_mode() == PublishMode::Host)
        {
            self.host_ports.remove(&p.published_port);
        }
        let (cpus, memory) = reservation(t);
        self.reserved_nano_cpus -= cpus;
        self.reserved_memory_bytes -= memory;
    }
}

fn template_of<'a>(data: &'a StoreData, pod: &Pod) -> Option<&'a PodTemplate> {
    data.replica_sets
        .get(&pod.replica_set_id)
        .and_then(|rs| rs.template.as_ref())
}

/// Pods that occupy a node: placed there and not finished.
fn occupies(p: &Pod) -> bool {
    !p.node_id.is_empty() && !observed(p).is_terminal()
}

fn node_infos(data: &StoreData) -> Vec<NodeInfo> {
    let mut infos: HashMap<&str, NodeInfo> = data
        .nodes
        .values()
        .map(|n| (n.id.as_str(), NodeInfo::new(n.clone())))
        .collect();
    for p in data.pods.values().filter(|p| occupies(p)) {
        if let Some(info) = infos.get_mut(p.node_id.as_str()) {
            info.place(&p.deployment_id, template_of(data, p));
        }
    }
    let mut v: Vec<NodeInfo> = infos.into_values().collect();
    v.sort_by(|a, b| a.node.id.cmp(&b.node.id));
    v
}

/// One node as the scheduler sees it: the node and every pod that occupies
/// it (placed, not finished), with their templates' ports and reservations.
/// None when there is no such node. For callers that place pods themselves
/// (the global orchestrator) and check them with [`fits`].
pub fn node_info(data: &StoreData, node_id: &str) -> Option<NodeInfo> {
    let mut info = NodeInfo::new(data.nodes.get(node_id)?.clone());
    for p in data.pods_on_node(node_id).filter(|p| occupies(p)) {
        info.place(&p.deployment_id, template_of(data, p));
    }
    Some(info)
}

/// Can one more pod of `template` (of `deployment_id`) go on this node,
/// given what `info` already holds? The error is the first reason it cannot,
/// worded as in `service ps` ("insufficient memory (the pod reserves 64
/// MiB)"). It checks constraints, host-mode ports, max replicas per node
/// and reservations, not readiness or availability: the global orchestrator
/// places pods itself (bypassing [`schedule`]) by its own rules for those,
/// and calls this so that a global pod is held to the same limits as a
/// scheduled one. After deciding to create the pod, the caller counts it
/// with [`NodeInfo::place`] so the next check on the node sees it.
pub fn fits(info: &NodeInfo, template: &PodTemplate, deployment_id: &str) -> Result<(), String> {
    for mut f in capacity_filters() {
        if f.applies(template, deployment_id) && !f.check(info) {
            return Err(f.reason());
        }
    }
    Ok(())
}

/// Among the nodes that passed the filters (`eligible`, indices into
/// `nodes`), the one for the next pod of `deployment_id`. Spread
/// preferences come first, in order, as Swarm's: nodes are grouped by the
/// value of the first descriptor (nodes lacking it form a group of their
/// own), the group holding the fewest pods of the deployment wins, and so
/// on down the descriptors within it; then the node with the fewest pods of
/// the deployment, then the fewest pods, then the lowest id.
fn pick(
    nodes: &[NodeInfo],
    eligible: &[usize],
    deployment_id: &str,
    spread: &[String],
) -> Option<usize> {
    let values: Vec<Vec<Option<String>>> = eligible
        .iter()
        .map(|&i| {
            spread
                .iter()
                .map(|key| node_attribute(&nodes[i].node, key))
                .collect()
        })
        .collect();
    // Pods of the deployment per group, a group being the nodes that share
    // the values of the first `level + 1` descriptors.
    let mut per_group: Vec<HashMap<&[Option<String>], u64>> = vec![HashMap::new(); spread.len()];
    for (k, &i) in eligible.iter().enumerate() {
        for (level, groups) in per_group.iter_mut().enumerate() {
            *groups.entry(&values[k][..=level]).or_default() += nodes[i].pods_of(deployment_id);
        }
    }
    (0..eligible.len())
        .min_by_key(|&k| {
            let info = &nodes[eligible[k]];
            let groups: Vec<u64> = per_group
                .iter()
                .enumerate()
                .map(|(level, g)| g[&values[k][..=level]])
                .collect();
            (groups, info.pods_of(deployment_id), info.total, k)
        })
        .map(|k| eligible[k])
}

/// Why no node fits: each filter's explanation of the nodes it rejected.
fn explain(filters: &[Box<dyn Filter>], rejected_by: &[usize], node_count: usize) -> String {
    if node_count == 0 {
        return "no suitable node (no nodes in the cluster)".into();
    }
    let parts: Vec<String> = rejected_by
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| filters[i].explain(*n))
        .collect();
    format!("no suitable node ({})", parts.join("; "))
}

/// Pods waiting for a node, oldest first.
fn pending(data: &StoreData) -> Vec<&Pod> {
    let mut v: Vec<&Pod> = data
        .pods
        .values()
        .filter(|p| {
            wanted(p)
                && p.node_id.is_empty()
                && matches!(observed(p), PodState::New | PodState::Pending)
        })
        .collect();
    v.sort_by_key(|p| (p.meta.as_ref().map_or(0, |m| m.created_at), p.slot));
    v
}

/// Places pods one after another by the filters and the spread, counting
/// each placed pod on its node so the next one sees it. The scheduler uses
/// one per pass; the orchestrator uses one to create pods already placed, in
/// the same Raft write, instead of leaving them for the scheduler's next
/// pass (one write and one wake-up less between `service create` and the
/// first container; the filters, the spread and the explanations are the
/// same because they are this code).
pub struct Placer {
    nodes: Vec<NodeInfo>,
    filters: Vec<Box<dyn Filter>>,
    /// The pods being placed one after another, when only filters that
    /// look at the node itself apply to them (see [`Group`]).
    group: Option<Group>,
    /// Off in tests that compare the heap with the scan it replaces.
    groups_enabled: bool,
}

/// Consecutive pods of one deployment and template that no spread
/// preference and no filter that counts placements applies to: the nodes
/// that pass are the same for each, and the choice among them (the fewest
/// pods of the deployment, then the fewest pods, then the lowest id) is
/// kept in a heap instead of filtering and comparing every node for every
/// pod (100,000 pods on 5,000 nodes made 5 x 10^8 checks a pass).
struct Group {
    deployment_id: String,
    template: PodTemplate,
    /// (pods of the deployment, pods, node index) per eligible node,
    /// smallest first. Counts only grow while a group lives, so an entry is
    /// at most its node's counts now: a stale top is refreshed when looked
    /// at, and a fresh top is the true minimum.
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
}

impl Placer {
    /// A placer over the nodes and the pods that occupy them now.
    pub fn new(data: &StoreData) -> Placer {
        Placer {
            nodes: node_infos(data),
            filters: all_filters(),
            group: None,
            groups_enabled: true,
        }
    }

    /// A placer that filters every node for every pod, for tests that
    /// check the heap chooses as the scan does.
    #[cfg(test)]
    pub(crate) fn scanning(data: &StoreData) -> Placer {
        Placer {
            groups_enabled: false,
            ..Placer::new(data)
        }
    }

    /// Chooses the node for one more pod of `template` (of `deployment_id`)
    /// and counts the pod there. The error says why no node fits, worded for
    /// `service ps` ("no suitable node (2 nodes not ready)").
    pub fn place(&mut self, template: &PodTemplate, deployment_id: &str) -> Result<&Node, String> {
        let ni = self.choose(template, deployment_id)?;
        let info = &mut self.nodes[ni];
        info.place(deployment_id, Some(template));
        Ok(&info.node)
    }

    /// The node the filters and the spread choose for one more pod, as an
    /// index into `nodes`, without counting it; or why none fits.
    fn choose(&mut self, template: &PodTemplate, deployment_id: &str) -> Result<usize, String> {
        if let Some(ni) = self.choose_in_group(template, deployment_id) {
            return Ok(ni);
        }
        let filters = &mut self.filters;
        let active: Vec<usize> = (0..filters.len())
            .filter(|&i| filters[i].applies(template, deployment_id))
            .collect();
        let mut rejected_by = vec![0usize; filters.len()];
        let mut eligible = Vec::new();
        for (ni, info) in self.nodes.iter().enumerate() {
            match active.iter().find(|&&fi| !filters[fi].check(info)) {
                Some(&fi) => rejected_by[fi] += 1,
                None => eligible.push(ni),
            }
        }
        let spread = template
            .placement
            .as_ref()
            .map_or(&[][..], |p| p.spread.as_slice());
        pick(&self.nodes, &eligible, deployment_id, spread)
            .ok_or_else(|| explain(filters, &rejected_by, self.nodes.len()))
    }

    /// [`Placer::choose`] by the group's heap, when the pod belongs to one
    /// (made here when it starts a new one); None when it does not, or no
    /// node passes (the scan then explains why).
    fn choose_in_group(&mut self, template: &PodTemplate, deployment_id: &str) -> Option<usize> {
        if !self.groups_enabled {
            return None;
        }
        let same = self
            .group
            .as_ref()
            .is_some_and(|g| g.deployment_id == deployment_id && g.template == *template);
        if !same {
            self.group = None;
            let spread = template
                .placement
                .as_ref()
                .is_some_and(|p| !p.spread.is_empty());
            let filters = &mut self.filters;
            let active: Vec<usize> = (0..filters.len())
                .filter(|&i| filters[i].applies(template, deployment_id))
                .collect();
            if spread || active.iter().any(|&i| filters[i].counts_placements()) {
                return None;
            }
            let heap = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, info)| active.iter().all(|&fi| filters[fi].check(info)))
                .map(|(ni, info)| Reverse((info.pods_of(deployment_id), info.total, ni)))
                .collect();
            self.group = Some(Group {
                deployment_id: deployment_id.to_string(),
                template: template.clone(),
                heap,
            });
        }
        let group = self.group.as_mut()?;
        loop {
            let Reverse((of_deployment, total, ni)) = *group.heap.peek()?;
            let info = &self.nodes[ni];
            let now = (info.pods_of(deployment_id), info.total);
            if now == (of_deployment, total) {
                return Some(ni);
            }
            group.heap.pop();
            group.heap.push(Reverse((now.0, now.1, ni)));
        }
    }

    /// Places one more pod of `template` on the node of `leaving`, the pod
    /// it replaces there (a stop-first rolling update), if that node is the
    /// one the filters and the spread choose once `leaving` (of
    /// `leaving_template`) is gone from it. Then `leaving` no longer counts on
    /// the node and the new pod does; otherwise nothing changes and the
    /// answer is None (so a forced update still rebalances a service over
    /// nodes that joined or came back, as in Swarm).
    pub fn place_instead_of(
        &mut self,
        template: &PodTemplate,
        deployment_id: &str,
        leaving: &Pod,
        leaving_template: Option<&PodTemplate>,
    ) -> Option<&Node> {
        let at = self
            .nodes
            .iter()
            .position(|n| n.node.id == leaving.node_id)?;
        let counted = occupies(leaving);
        if counted {
            // Counts shrink: a group's heap would no longer be a lower bound.
            self.group = None;
            self.nodes[at].unplace(&leaving.deployment_id, leaving_template);
        }
        if self.choose(template, deployment_id) == Ok(at) {
            let info = &mut self.nodes[at];
            info.place(deployment_id, Some(template));
            return Some(&info.node);
        }
        if counted {
            self.nodes[at].place(&leaving.deployment_id, leaving_template);
        }
        None
    }
}

/// Marks `pod` as assigned to `node`.
pub fn assign(pod: &mut Pod, node: &Node, now: i64) {
    pod.node_id = node.id.clone();
    pod.node_epoch = node.status.as_ref().map_or(0, |s| s.session_epoch);
    pod.scheduling_message.clear();
    pod.status = Some(PodStatus {
        state: PodState::Assigned as i32,
        message: "assigned to a node".into(),
        timestamp: now,
        ..Default::default()
    });
}

/// One scheduling pass over every pending pod. The placer (every node and
/// every pod on it) is built only when a pod may be placed now: the
/// scheduler wakes on every applied entry, and most passes at scale find
/// nothing pending (building it read 100,000 pods and copied 5,000 nodes
/// for nothing, many times a second).
pub fn schedule(data: &StoreData, now: i64) -> Pass {
    let mut pass = Pass::default();
    let mut placer: Option<Placer> = None;
    for pod in pending(data) {
        if pod.not_before > now {
            pass.wake_at = Some(
                pass.wake_at
                    .map_or(pod.not_before, |w| w.min(pod.not_before)),
            );
            continue;
        }
        let Some(template) = template_of(data, pod) else {
            continue;
        };
        let mut p = pod.clone();
        let v = version(&pod.meta);
        let placer = placer.get_or_insert_with(|| Placer::new(data));
        match placer.place(template, &pod.deployment_id) {
            Ok(node) => assign(&mut p, node, now),
            Err(why) => {
                if observed(pod) == PodState::Pending && pod.scheduling_message == why {
                    continue;
                }
                p.scheduling_message = why.clone();
                p.status = Some(PodStatus {
                    state: PodState::Pending as i32,
                    message: "pending".into(),
                    err: why,
                    timestamp: now,
                    ..Default::default()
                });
            }
        }
        touch(&mut p.meta, now);
        pass.mutations.push(put(p, v));
    }
    pass
}

/// Runs the scheduler until `cancel` fires.
pub async fn run(store: Arc<Store>, proposer: Arc<dyn Proposer>, cancel: CancellationToken) {
    run_controller("scheduler", store, proposer, cancel, schedule).await
}

#[cfg(test)]
mod tests;
