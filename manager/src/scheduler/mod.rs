//! The scheduler: places pending pods on nodes. Filters decide which nodes
//! can take a pod (and explain the ones that cannot); among those, the
//! spread strategy picks the node with the fewest pods of the same
//! deployment, then the fewest pods overall.

pub mod constraint;
pub mod filter;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use shoal_proto::{port_config::PublishMode, Node, Pod, PodState, PodStatus};
use tokio_util::sync::CancellationToken;

use crate::controller::{run_controller, Pass};
use crate::objects::{observed, touch, version, wanted};
use crate::proposer::Proposer;
use crate::store::{put, Store, StoreData};
use filter::{all_filters, Filter};

/// A node and what is already placed on it, as the filters see it.
pub struct NodeInfo {
    pub node: Node,
    /// Live pods per deployment id.
    per_deployment: HashMap<String, u64>,
    pub total: u64,
    pub host_ports: HashSet<u32>,
}

impl NodeInfo {
    pub fn pods_of(&self, deployment_id: &str) -> u64 {
        self.per_deployment.get(deployment_id).copied().unwrap_or(0)
    }

    fn add(&mut self, deployment_id: &str, host_ports: impl Iterator<Item = u32>) {
        *self
            .per_deployment
            .entry(deployment_id.to_string())
            .or_default() += 1;
        self.total += 1;
        self.host_ports.extend(host_ports);
    }
}

fn host_ports_of(data: &StoreData, pod: &Pod) -> Vec<u32> {
    data.replica_sets
        .get(&pod.replica_set_id)
        .and_then(|rs| rs.template.as_ref())
        .map(|t| {
            t.host_ports
                .iter()
                .filter(|p| p.publish_mode() == PublishMode::Host)
                .map(|p| p.published_port)
                .collect()
        })
        .unwrap_or_default()
}

/// Pods that occupy a node: placed there and not finished.
fn occupies(p: &Pod) -> bool {
    !p.node_id.is_empty() && !observed(p).is_terminal()
}

fn node_infos(data: &StoreData) -> Vec<NodeInfo> {
    let mut infos: HashMap<&str, NodeInfo> = data
        .nodes
        .values()
        .map(|n| {
            (
                n.id.as_str(),
                NodeInfo {
                    node: n.clone(),
                    per_deployment: HashMap::new(),
                    total: 0,
                    host_ports: HashSet::new(),
                },
            )
        })
        .collect();
    for p in data.pods.values().filter(|p| occupies(p)) {
        if let Some(info) = infos.get_mut(p.node_id.as_str()) {
            info.add(&p.deployment_id, host_ports_of(data, p).into_iter());
        }
    }
    let mut v: Vec<NodeInfo> = infos.into_values().collect();
    v.sort_by(|a, b| a.node.id.cmp(&b.node.id));
    v
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

/// One scheduling pass over every pending pod.
pub fn schedule(data: &StoreData, now: i64) -> Pass {
    let mut pass = Pass::default();
    let mut nodes = node_infos(data);
    let mut filters = all_filters();
    for pod in pending(data) {
        if pod.not_before > now {
            pass.wake_at = Some(
                pass.wake_at
                    .map_or(pod.not_before, |w| w.min(pod.not_before)),
            );
            continue;
        }
        let Some(template) = data
            .replica_sets
            .get(&pod.replica_set_id)
            .and_then(|rs| rs.template.clone())
        else {
            continue;
        };
        let active: Vec<usize> = (0..filters.len())
            .filter(|&i| filters[i].applies(&template, &pod.deployment_id))
            .collect();
        let mut rejected_by = vec![0usize; filters.len()];
        let mut best: Option<usize> = None;
        for (ni, info) in nodes.iter().enumerate() {
            match active.iter().find(|&&fi| !filters[fi].check(info)) {
                Some(&fi) => rejected_by[fi] += 1,
                None => {
                    let better = best.is_none_or(|b| {
                        let cur = &nodes[b];
                        (info.pods_of(&pod.deployment_id), info.total)
                            < (cur.pods_of(&pod.deployment_id), cur.total)
                    });
                    if better {
                        best = Some(ni);
                    }
                }
            }
        }
        let mut p = pod.clone();
        let v = version(&pod.meta);
        match best {
            Some(ni) => {
                let info = &mut nodes[ni];
                info.add(&pod.deployment_id, host_ports_of(data, pod).into_iter());
                p.node_id = info.node.id.clone();
                p.node_epoch = info.node.status.as_ref().map_or(0, |s| s.session_epoch);
                p.scheduling_message.clear();
                p.status = Some(PodStatus {
                    state: PodState::Assigned as i32,
                    message: "assigned to a node".into(),
                    timestamp: now,
                    ..Default::default()
                });
            }
            None => {
                let why = explain(&filters, &rejected_by, nodes.len());
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
