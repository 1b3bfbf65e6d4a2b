//! Where a deployment's pods belong, as numbered keys the slot logic (restarts,
//! history, rolling updates) works on whatever the mode:
//!
//! - replicated: key = the slot number, 1..=replicas; keys above are scaled
//!   down;
//! - global: key = the position of an eligible node (sorted by id), so each
//!   eligible node has one live pod; pods on nodes that stopped being
//!   eligible get keys above the desired count and are removed. Global pods
//!   are created already assigned to their node (slot 0), as SwarmKit's
//!   global orchestrator does, so the scheduler never moves them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use shoal_proto::{
    Deployment, DeploymentMode, Node, NodeAvailability, NodeState, Pod, PodState, PodStatus,
    PodTemplate,
};

use super::replicated::new_pod;
use crate::objects::{created_at, node_active, node_ready, wanted};
use crate::scheduler::constraint::Constraint;
use crate::store::StoreData;

/// A deployment's pods by key, oldest first within a key.
pub struct Layout<'a> {
    slots: Keyed<'a>,
    /// Keys 1..=desired must each have a live pod.
    pub desired: u64,
    /// Global mode: the node (id, session epoch) of key i + 1.
    nodes: Vec<(String, u64)>,
    /// Replicated mode: nodes whose pods must run elsewhere: Down (the
    /// dispatcher's word, never a hint), drained, or removed.
    lost_nodes: BTreeSet<&'a str>,
    /// Those of `lost_nodes` that are only drained: their pods still run,
    /// and move a batch at a time (see replicated.rs).
    drained_nodes: BTreeSet<&'a str>,
}

impl<'a> Layout<'a> {
    /// The layout of `d` over its pods (`pods`, in any order).
    pub fn of(data: &StoreData, d: &Deployment, pods: Vec<&'a Pod>) -> Layout<'a> {
        Layout::with_lost(data, d, pods, &LostNodes::of(data))
    }

    /// [`Layout::of`], with the nodes whose pods must run elsewhere found
    /// once for every deployment of a pass.
    pub fn with_lost(
        data: &StoreData,
        d: &Deployment,
        pods: Vec<&'a Pod>,
        lost: &LostNodes,
    ) -> Layout<'a> {
        let spec = d.spec.clone().unwrap_or_default();
        let layout = if spec.mode() == DeploymentMode::Global {
            global(data, d, pods)
        } else {
            let mut lost_nodes = BTreeSet::new();
            let mut drained_nodes = BTreeSet::new();
            for p in &pods {
                match lost.get(&p.node_id) {
                    _ if p.node_id.is_empty() => {}
                    Some(Lost::Drained) => {
                        lost_nodes.insert(p.node_id.as_str());
                        drained_nodes.insert(p.node_id.as_str());
                    }
                    Some(Lost::Gone) => {
                        lost_nodes.insert(p.node_id.as_str());
                    }
                    None => {}
                }
            }
            Layout {
                slots: Keyed::by_slot(pods),
                desired: spec.replicas,
                nodes: vec![],
                lost_nodes,
                drained_nodes,
            }
        };
        layout
    }

    /// Whether `p` sits on a node it must be replaced from (replicated mode).
    pub fn on_lost_node(&self, p: &Pod) -> bool {
        self.lost_nodes.contains(p.node_id.as_str())
    }

    /// Whether `p` runs on a drained node (replicated mode): it moves off
    /// gradually, its replacement started first.
    pub fn on_drained_node(&self, p: &Pod) -> bool {
        self.drained_nodes.contains(p.node_id.as_str())
    }

    /// The pods of one key (none yet: empty).
    pub fn pods(&self, key: u64) -> &[&'a Pod] {
        self.slots.get(key)
    }

    /// Every pod, by key, oldest first within a key.
    pub fn all_pods(&self) -> impl Iterator<Item = &'a Pod> + '_ {
        self.slots.pods.iter().copied()
    }

    /// The pods of each key above `key`, by key.
    pub fn pods_above(&self, key: u64) -> impl Iterator<Item = &[&'a Pod]> + '_ {
        self.slots.above(key)
    }

    /// Whether any pod runs on a drained node (then slots move off it).
    pub fn has_drained_nodes(&self) -> bool {
        !self.drained_nodes.is_empty()
    }

    /// A new pod for `key` of revision `rs_id`.
    pub fn new_pod(
        &self,
        d: &Deployment,
        rs_id: &str,
        key: u64,
        attempt: u64,
        now: i64,
        not_before: i64,
    ) -> Pod {
        let Some((node_id, epoch)) = key.checked_sub(1).and_then(|i| self.nodes.get(i as usize))
        else {
            return new_pod(d, rs_id, key, attempt, now, not_before);
        };
        let mut p = new_pod(d, rs_id, 0, attempt, now, not_before);
        p.node_id = node_id.clone();
        p.node_epoch = *epoch;
        p.status = Some(PodStatus {
            state: PodState::Assigned as i32,
            message: "assigned to its node (global)".into(),
            timestamp: now,
            ..Default::default()
        });
        p
    }
}

/// Pods by key in one vector, sorted by key and then age (oldest first),
/// with each key's range in it. A pass lays out every pod of every
/// deployment: a tree of one small vector per slot was hundreds of
/// thousands of allocations a pass at 100,000 pods.
struct Keyed<'a> {
    pods: Vec<&'a Pod>,
    /// Each key with its pods' range in `pods`, by key.
    keys: Vec<(u64, Range<usize>)>,
}

impl<'a> Keyed<'a> {
    /// Pods keyed by their slot number.
    fn by_slot(mut pods: Vec<&'a Pod>) -> Keyed<'a> {
        // Stable: pods alike in all three stay in the order given.
        pods.sort_by_key(|p| (p.slot, created_at(&p.meta), p.attempt));
        let mut keys: Vec<(u64, Range<usize>)> = Vec::new();
        for (i, p) in pods.iter().enumerate() {
            match keys.last_mut() {
                Some((slot, range)) if *slot == p.slot => range.end = i + 1,
                _ => keys.push((p.slot, i..i + 1)),
            }
        }
        Keyed { pods, keys }
    }

    fn from_map(map: BTreeMap<u64, Vec<&'a Pod>>) -> Keyed<'a> {
        let mut pods = Vec::new();
        let mut keys = Vec::with_capacity(map.len());
        for (key, mut ps) in map {
            ps.sort_by_key(|p| (created_at(&p.meta), p.attempt));
            let start = pods.len();
            pods.extend(ps);
            keys.push((key, start..pods.len()));
        }
        Keyed { pods, keys }
    }

    fn get(&self, key: u64) -> &[&'a Pod] {
        match self.keys.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => &self.pods[self.keys[i].1.clone()],
            Err(_) => &[],
        }
    }

    fn above(&self, key: u64) -> impl Iterator<Item = &[&'a Pod]> + '_ {
        let first = self.keys.partition_point(|(k, _)| *k <= key);
        self.keys[first..]
            .iter()
            .map(|(_, range)| &self.pods[range.clone()])
    }
}

/// Why a node's replicated pods must run elsewhere.
enum Lost {
    /// Marked Down, or removed (`shoal node rm`): its pods are replaced at
    /// once.
    Gone,
    /// Drained (and up): its pods move a batch at a time.
    Drained,
}

/// The nodes whose replicated pods must run elsewhere, found once per pass:
/// looking each pod's node up in the store (a string-keyed tree of
/// thousands of nodes) was most of a pass over 100,000 pods, while there
/// are usually none of them.
pub struct LostNodes(HashMap<String, Lost>);

impl LostNodes {
    /// Down, drained and removed nodes. Paused nodes keep their pods (as
    /// in Swarm); a node the store never knew loses none.
    pub fn of(data: &StoreData) -> LostNodes {
        let mut lost = HashMap::new();
        for n in data.nodes.values() {
            let down = n
                .status
                .as_ref()
                .is_some_and(|s| s.state() == NodeState::Down);
            let drained = n
                .spec
                .as_ref()
                .is_some_and(|s| s.availability() == NodeAvailability::Drain);
            if down {
                lost.insert(n.id.clone(), Lost::Gone);
            } else if drained {
                lost.insert(n.id.clone(), Lost::Drained);
            }
        }
        if let Some(c) = data.cluster() {
            for id in c
                .removed_nodes
                .iter()
                .filter(|id| !data.nodes.contains_key(*id))
            {
                lost.insert(id.clone(), Lost::Gone);
            }
        }
        LostNodes(lost)
    }

    fn get(&self, node_id: &str) -> Option<&Lost> {
        self.0.get(node_id)
    }
}

/// A global deployment's placement constraints, parsed once per pass;
/// `None` when one does not parse (no node meets it; the control API
/// refuses such specs, so this is only for data written by older versions).
struct Constraints(Option<Vec<Constraint>>);

impl Constraints {
    fn of(template: &PodTemplate) -> Self {
        let exprs = template
            .placement
            .as_ref()
            .map_or(&[][..], |p| p.constraints.as_slice());
        Constraints(
            exprs
                .iter()
                .map(|c| Constraint::parse(c))
                .collect::<Result<_, _>>()
                .ok(),
        )
    }

    fn met_by(&self, node: &Node) -> bool {
        self.0
            .as_ref()
            .is_some_and(|cs| cs.iter().all(|c| c.matches(node)))
    }

    /// The deployment wants a new pod on `node`: up, active (as the
    /// scheduler's filters say) and meeting the constraints.
    fn takes_new_pods(&self, node: &Node) -> bool {
        node_ready(node) && node_active(node) && self.met_by(node)
    }

    /// A pod already on `node` may stay: a paused node keeps its pods (as
    /// in Swarm), a drained one or one that lost a label does not.
    fn keeps_pods(&self, node: &Node) -> bool {
        let drained = node
            .spec
            .as_ref()
            .is_some_and(|s| s.availability() == NodeAvailability::Drain);
        !drained && self.met_by(node)
    }
}

/// The nodes a global deployment should have a pod on (ready, active,
/// meeting its constraints) that have none because the pod does not fit
/// there, each with the reason ("insufficient memory (...)"), for
/// `service ps`: the orchestrator skips them until the pod fits.
pub fn unplaced_global(data: &StoreData, d: &Deployment) -> Vec<(String, String)> {
    let Some(spec) = d
        .spec
        .as_ref()
        .filter(|s| s.mode() == DeploymentMode::Global)
    else {
        return Vec::new();
    };
    let template = spec.template.clone().unwrap_or_default();
    let constraints = Constraints::of(&template);
    data.nodes
        .values()
        .filter(|n| constraints.takes_new_pods(n))
        .filter(|n| {
            !data
                .pods_of_deployment(&d.id)
                .any(|p| p.node_id == n.id && wanted(p))
        })
        .filter_map(|n| {
            let info = crate::scheduler::node_info(data, &n.id)?;
            let reason = crate::scheduler::fits(&info, &template, &d.id).err()?;
            Some((n.id.clone(), reason))
        })
        .collect()
}

fn global<'a>(data: &StoreData, d: &Deployment, pods: Vec<&'a Pod>) -> Layout<'a> {
    let template = d
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let constraints = Constraints::of(&template);
    let mut by_node: BTreeMap<&str, Vec<&'a Pod>> = BTreeMap::new();
    for p in pods {
        by_node.entry(p.node_id.as_str()).or_default().push(p);
    }
    // data.nodes is ordered by id, so keys are stable between passes.
    let mut nodes = Vec::new();
    for n in data.nodes.values() {
        let has_live = by_node
            .get(n.id.as_str())
            .is_some_and(|ps| ps.iter().any(|p| wanted(p)));
        // A new pod must also fit the node (reservations, host ports, max
        // per node), as the scheduler checks replicated pods; one that runs
        // keeps its place.
        let fits = || {
            crate::scheduler::node_info(data, &n.id)
                .is_some_and(|info| crate::scheduler::fits(&info, &template, &d.id).is_ok())
        };
        let eligible = if has_live {
            constraints.keeps_pods(n)
        } else {
            constraints.takes_new_pods(n) && fits()
        };
        if eligible {
            nodes.push((
                n.id.clone(),
                n.status.as_ref().map_or(0, |s| s.session_epoch),
            ));
        }
    }
    let mut slots: BTreeMap<u64, Vec<&Pod>> = BTreeMap::new();
    for (i, (id, _)) in nodes.iter().enumerate() {
        if let Some(ps) = by_node.remove(id.as_str()) {
            slots.insert(i as u64 + 1, ps);
        }
    }
    // Pods on nodes that are not (or no longer) eligible: above the desired
    // keys, so they are removed.
    let above = nodes.len() as u64 + 1..;
    for (key, (_, ps)) in above.zip(by_node) {
        slots.insert(key, ps);
    }
    Layout {
        slots: Keyed::from_map(slots),
        desired: nodes.len() as u64,
        lost_nodes: BTreeSet::new(),
        drained_nodes: BTreeSet::new(),
        nodes,
    }
}

#[cfg(test)]
mod keyed_tests {
    use shoal_proto::Meta;

    use super::*;

    fn pod(id: &str, slot: u64, created_at: i64, attempt: u64) -> Pod {
        Pod {
            id: id.into(),
            slot,
            attempt,
            meta: Some(Meta {
                created_at,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pods_are_kept_by_slot_oldest_first_and_alike_pods_in_the_order_given() {
        let pods = [
            pod("c", 3, 10, 0),
            pod("a", 1, 20, 1),
            pod("b", 1, 20, 0),
            pod("d", 7, 5, 0),
            pod("e", 1, 5, 0),
            pod("f", 3, 10, 0),
        ];
        let keyed = Keyed::by_slot(pods.iter().collect());
        fn ids<'p>(ps: &[&'p Pod]) -> Vec<&'p str> {
            ps.iter().map(|p| p.id.as_str()).collect()
        }
        assert_eq!(ids(keyed.get(1)), ["e", "b", "a"]);
        assert_eq!(ids(keyed.get(3)), ["c", "f"]);
        assert!(keyed.get(2).is_empty());
        assert!(keyed.get(8).is_empty());
        let above: Vec<Vec<&str>> = keyed.above(1).map(ids).collect();
        assert_eq!(above, [vec!["c", "f"], vec!["d"]]);
        assert_eq!(keyed.above(7).count(), 0);
        assert!(Keyed::by_slot(vec![]).get(1).is_empty());
    }
}
