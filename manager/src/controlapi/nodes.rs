//! `shoal node ls|inspect|promote|demote|update|rm`: node objects and the
//! managers' Raft view. A role change is only a write to the store: the node
//! sees its new role in its session and restarts in it, and the leader's
//! role manager ([`crate::rolemanager`]) makes the Raft membership follow.
//! What must be refused is refused here, before anything is written: a
//! demotion or removal that would cost the managers their quorum.

use shoal_proto::{
    ManagerStatus, Node, NodeAvailability, NodeRole, NodeState, ObjectKind, UpdateNodeRequest,
};
use tonic::Status;

use crate::objects::{touch, version};
use crate::raft::{check_removal, ManagerInfo};
use crate::store::{delete, put, StoreData};

/// Finds a node by exact id, exact hostname, or unique id prefix.
pub fn find_node<'a>(d: &'a StoreData, name: &str) -> Result<&'a Node, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "node: a node id or hostname is required",
        ));
    }
    if let Some(n) = d.nodes.get(name) {
        return Ok(n);
    }
    let hostname = |n: &&Node| n.status.as_ref().is_some_and(|s| s.hostname == name);
    let by_host: Vec<&Node> = d.nodes.values().filter(hostname).collect();
    let by_prefix: Vec<&Node> = d
        .nodes
        .values()
        .filter(|n| n.id.starts_with(name))
        .collect();
    match (by_host.as_slice(), by_prefix.as_slice()) {
        ([one], _) => Ok(one),
        ([], [one]) => Ok(one),
        ([], []) => Err(Status::not_found(format!("node {name} not found"))),
        _ => Err(Status::failed_precondition(format!(
            "node {name} is ambiguous: use its full id (shoal node ls)"
        ))),
    }
}

/// A node as users name it: its hostname and id prefix when the hostname
/// is known ("web-2 (k3x9e1f0)"), else its id.
pub fn display_name(d: &StoreData, node_id: &str) -> String {
    let hostname = d
        .nodes
        .get(node_id)
        .and_then(|n| n.status.as_ref())
        .map(|s| s.hostname.as_str())
        .filter(|h| !h.is_empty());
    match hostname {
        Some(h) => format!("{h} ({})", &node_id[..node_id.len().min(8)]),
        None => node_id.to_string(),
    }
}

fn is_manager(n: &Node) -> bool {
    n.spec
        .as_ref()
        .is_some_and(|s| s.role() == NodeRole::Manager)
}

/// Refuses taking `raft_id` out of the voters when Raft would refuse it
/// ([`check_removal`]): before anything is written, so a refused demotion
/// leaves the store as it was.
pub fn check_quorum_without(
    managers: &[ManagerInfo],
    raft_id: u64,
    what: &str,
) -> Result<(), Status> {
    check_removal(managers, raft_id)
        .map_err(|e| Status::failed_precondition(format!("cannot {what}: {e}")))
}

/// The mutation of one `UpdateNode` request, or why it is refused.
pub fn update(
    d: &StoreData,
    managers: &[ManagerInfo],
    req: &UpdateNodeRequest,
    now: i64,
) -> Result<(Vec<shoal_proto::Mutation>, String), Status> {
    let node = find_node(d, &req.node)?;
    let mut n = node.clone();
    let spec = n.spec.get_or_insert_with(Default::default);
    let hostname = node
        .status
        .as_ref()
        .map(|s| s.hostname.clone())
        .unwrap_or_default();
    match req.role() {
        NodeRole::Unspecified => {}
        NodeRole::Manager => spec.role = NodeRole::Manager as i32,
        NodeRole::Worker => {
            if is_manager(node) {
                check_quorum_without(
                    managers,
                    node.raft_id,
                    &format!("demote {hostname} ({})", node.id),
                )?;
                if d.nodes.values().filter(|n| is_manager(n)).count() <= 1 {
                    return Err(Status::failed_precondition(format!(
                        "cannot demote {hostname} ({}): it is the last manager; promote another node first",
                        node.id
                    )));
                }
            }
            spec.role = NodeRole::Worker as i32;
        }
    }
    match req.availability() {
        NodeAvailability::Unspecified => {}
        a => spec.availability = a as i32,
    }
    for key in &req.labels_rm {
        if spec.labels.remove(key).is_none() {
            return Err(Status::not_found(format!(
                "--label-rm {key}: node {hostname} has no such label"
            )));
        }
    }
    for (k, v) in &req.labels_add {
        if k.is_empty() {
            return Err(Status::invalid_argument("--label-add: a label needs a key"));
        }
        spec.labels.insert(k.clone(), v.clone());
    }
    let v = version(&n.meta);
    touch(&mut n.meta, now);
    let id = n.id.clone();
    Ok((vec![put(n, v)], id))
}

/// The mutations of `shoal node rm`: the node is deleted and blocklisted
/// (its certificate is refused from now on); a manager must be demoted
/// first, and a node that still looks alive needs `force`.
pub fn remove(
    d: &StoreData,
    name: &str,
    force: bool,
    now: i64,
) -> Result<Vec<shoal_proto::Mutation>, Status> {
    let node = find_node(d, name)?;
    let hostname = node
        .status
        .as_ref()
        .map(|s| s.hostname.clone())
        .unwrap_or_default();
    if is_manager(node) {
        return Err(Status::failed_precondition(format!(
            "node {hostname} ({}) is a manager: demote it first (shoal node demote {})",
            node.id, node.id
        )));
    }
    // A Disconnected node is alive too (gossip hears it).
    let alive = node
        .status
        .as_ref()
        .map(|s| s.state())
        .filter(|s| matches!(s, NodeState::Ready | NodeState::Disconnected));
    if let (Some(state), false) = (alive, force) {
        let state = if state == NodeState::Ready {
            "Ready"
        } else {
            "Disconnected (gossip still hears it)"
        };
        return Err(Status::failed_precondition(format!(
            "node {hostname} ({}) is {state}: stop it (shoal leave on it) or use --force",
            node.id
        )));
    }
    let Some(cluster) = d.cluster() else {
        return Err(Status::failed_precondition("no cluster object"));
    };
    let mut cluster = cluster.clone();
    let cv = version(&cluster.meta);
    if !cluster.removed_nodes.contains(&node.id) {
        cluster.removed_nodes.push(node.id.clone());
    }
    touch(&mut cluster.meta, now);
    Ok(vec![
        delete(ObjectKind::Node, node.id.clone(), version(&node.meta)),
        put(cluster, cv),
    ])
}

/// The managers' Raft view as `node ls` shows it, joined to node ids.
pub fn manager_statuses(d: &StoreData, managers: &[ManagerInfo]) -> Vec<ManagerStatus> {
    managers
        .iter()
        .map(|m| ManagerStatus {
            node_id: d
                .nodes
                .values()
                .find(|n| n.raft_id == m.raft_id)
                .map(|n| n.id.clone())
                .unwrap_or_default(),
            raft_id: m.raft_id,
            addr: m.addr.clone(),
            leader: m.leader,
            reachable: m.reachable,
            learner: m.learner,
        })
        .collect()
}
