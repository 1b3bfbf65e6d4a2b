//! Scheduler filters, SwarmKit's shape: each concern is one small type that
//! prepares itself for a pod, checks one node, and explains in words how many
//! nodes it turned away, so the user sees why nothing fits.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};

use shoal_proto::{port_config::PublishMode, PodTemplate};

use super::constraint::Constraint;
use super::NodeInfo;
use crate::objects::{node_active, node_ready};

pub trait Filter {
    /// Prepares the filter for one pod; false when it has nothing to say
    /// about this pod (so it is skipped).
    fn applies(&mut self, template: &PodTemplate, deployment_id: &str) -> bool;
    /// Does this node pass?
    fn check(&self, node: &NodeInfo) -> bool;
    /// What is wrong with the nodes that did not pass, without a count
    /// (e.g. "insufficient memory (the pod reserves 64 MiB)"): alone it
    /// answers "why not this node", as [`super::fits`] does for global pods.
    fn reason(&self) -> String;
    /// Whether the answer for a node can change as pods are placed on it
    /// during a pass (ports, reservations, per-node caps). Filters that
    /// look only at the node itself (readiness, availability, labels) let
    /// the placer keep the nodes that pass across consecutive pods.
    fn counts_placements(&self) -> bool {
        false
    }
    /// Why `failed` nodes did not pass, e.g. "2 nodes: constraint
    /// node.labels.zone==a not met".
    fn explain(&self, failed: usize) -> String {
        format!("{}: {}", nodes(failed), self.reason())
    }
}

pub(super) fn nodes(n: usize) -> String {
    if n == 1 {
        "1 node".into()
    } else {
        format!("{n} nodes")
    }
}

/// Only nodes whose session is up take pods.
pub struct ReadyFilter;

impl Filter for ReadyFilter {
    fn applies(&mut self, _: &PodTemplate, _: &str) -> bool {
        true
    }
    fn check(&self, node: &NodeInfo) -> bool {
        node_ready(&node.node)
    }
    fn reason(&self) -> String {
        "not ready".into()
    }
    fn explain(&self, failed: usize) -> String {
        format!("{} {}", nodes(failed), self.reason())
    }
}

/// Paused and drained nodes take no new pods.
pub struct AvailabilityFilter;

impl Filter for AvailabilityFilter {
    fn applies(&mut self, _: &PodTemplate, _: &str) -> bool {
        true
    }
    fn check(&self, node: &NodeInfo) -> bool {
        node_active(&node.node)
    }
    fn reason(&self) -> String {
        "not available for new pods (paused or drained)".into()
    }
    fn explain(&self, failed: usize) -> String {
        format!("{} {}", nodes(failed), self.reason())
    }
}

/// Host-mode published ports bind on the node itself: one pod per port.
#[derive(Default)]
pub struct HostPortFilter {
    wanted: Vec<u32>,
}

impl Filter for HostPortFilter {
    fn counts_placements(&self) -> bool {
        true
    }
    fn applies(&mut self, template: &PodTemplate, _: &str) -> bool {
        self.wanted = template
            .host_ports
            .iter()
            .filter(|p| p.publish_mode() == PublishMode::Host && p.published_port != 0)
            .map(|p| p.published_port)
            .collect();
        !self.wanted.is_empty()
    }
    fn check(&self, node: &NodeInfo) -> bool {
        self.wanted.iter().all(|p| !node.host_ports.contains(p))
    }
    fn reason(&self) -> String {
        let ports: Vec<String> = self.wanted.iter().map(|p| p.to_string()).collect();
        format!("host-mode port {} already in use", ports.join(","))
    }
}

/// Placement constraints (`node.labels.zone==a`, `node.role!=manager`, ...).
#[derive(Default)]
pub struct ConstraintFilter {
    constraints: Vec<Constraint>,
    /// Which constraint a node failed first, remembered for the explanation.
    first_failed: RefCell<HashSet<String>>,
}

impl Filter for ConstraintFilter {
    fn applies(&mut self, template: &PodTemplate, _: &str) -> bool {
        self.constraints = template
            .placement
            .as_ref()
            .map(|p| {
                p.constraints
                    .iter()
                    .filter_map(|c| Constraint::parse(c).ok())
                    .collect()
            })
            .unwrap_or_default();
        self.first_failed.borrow_mut().clear();
        !self.constraints.is_empty()
    }
    fn check(&self, node: &NodeInfo) -> bool {
        match self.constraints.iter().find(|c| !c.matches(&node.node)) {
            Some(c) => {
                self.first_failed.borrow_mut().insert(c.to_string());
                false
            }
            None => true,
        }
    }
    fn reason(&self) -> String {
        let mut which: Vec<String> = self.first_failed.borrow().iter().cloned().collect();
        which.sort();
        format!("constraint {} not met", which.join(", "))
    }
}

/// At most N pods of one deployment per node.
#[derive(Default)]
pub struct MaxPerNodeFilter {
    max: u64,
    deployment_id: String,
}

impl Filter for MaxPerNodeFilter {
    fn counts_placements(&self) -> bool {
        true
    }
    fn applies(&mut self, template: &PodTemplate, deployment_id: &str) -> bool {
        self.max = template
            .placement
            .as_ref()
            .map_or(0, |p| p.max_replicas_per_node);
        self.deployment_id = deployment_id.to_string();
        self.max > 0
    }
    fn check(&self, node: &NodeInfo) -> bool {
        node.pods_of(&self.deployment_id) < self.max
    }
    fn reason(&self) -> String {
        format!("max replicas per node ({}) reached", self.max)
    }
}

/// Reservations are promises: a node takes a pod only when what its pods
/// already reserve plus this pod's reservation fits in what its engine
/// reported (`NodeStatus.resources`). Limits are not counted, as in Swarm:
/// they cap a container, they claim nothing. A node that reported no
/// resources has none to promise, so a pod that reserves anything waits.
#[derive(Default)]
pub struct ResourceFilter {
    nano_cpus: i64,
    memory_bytes: i64,
    /// Which resources fell short on some node, for the explanation.
    short: RefCell<BTreeSet<&'static str>>,
}

impl Filter for ResourceFilter {
    fn counts_placements(&self) -> bool {
        true
    }
    fn applies(&mut self, template: &PodTemplate, _: &str) -> bool {
        (self.nano_cpus, self.memory_bytes) = reservation(template);
        self.short.borrow_mut().clear();
        self.nano_cpus > 0 || self.memory_bytes > 0
    }
    fn check(&self, node: &NodeInfo) -> bool {
        let capacity = node
            .node
            .status
            .as_ref()
            .and_then(|s| s.resources)
            .unwrap_or_default();
        let mut short = self.short.borrow_mut();
        let mut fits = true;
        if self.nano_cpus > 0 && node.reserved_nano_cpus + self.nano_cpus > capacity.nano_cpus {
            short.insert("cpu");
            fits = false;
        }
        if self.memory_bytes > 0
            && node.reserved_memory_bytes + self.memory_bytes > capacity.memory_bytes
        {
            short.insert("memory");
            fits = false;
        }
        fits
    }
    fn reason(&self) -> String {
        let short = self.short.borrow();
        let amounts: Vec<String> = short
            .iter()
            .map(|r| match *r {
                "cpu" => cpus(self.nano_cpus),
                _ => bytes(self.memory_bytes),
            })
            .collect();
        let short: Vec<&str> = short.iter().copied().collect();
        format!(
            "insufficient {} (the pod reserves {})",
            short.join(" and "),
            amounts.join(" and ")
        )
    }
}

/// What a pod of this template reserves: (nano CPUs, memory bytes), 0 for
/// none; negative values (refused by the control API) count as none.
pub fn reservation(template: &PodTemplate) -> (i64, i64) {
    template.container.as_ref().map_or((0, 0), |c| {
        (c.reserve_nano_cpus.max(0), c.reserve_memory_bytes.max(0))
    })
}

/// `500000000` nano CPUs as "0.5 CPU".
fn cpus(nano: i64) -> String {
    let s = format!("{:.3}", nano as f64 / 1e9);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} CPU")
}

/// Bytes in the largest binary unit that keeps them readable: "64 MiB",
/// "1.5 GiB", "512 bytes" (Docker's flags read 64M as 64 MiB).
fn bytes(n: i64) -> String {
    const UNITS: [(&str, i64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            let s = format!("{:.1}", n as f64 / size as f64);
            return format!("{} {unit}", s.trim_end_matches(".0"));
        }
    }
    format!("{n} bytes")
}

/// Every filter, in the order their explanations are most useful.
pub fn all_filters() -> Vec<Box<dyn Filter>> {
    vec![
        Box::new(ReadyFilter),
        Box::new(AvailabilityFilter),
        Box::new(ConstraintFilter::default()),
        Box::new(HostPortFilter::default()),
        Box::new(MaxPerNodeFilter::default()),
        Box::new(ResourceFilter::default()),
    ]
}

/// The filters about what a node holds and is, not whether it is up: what
/// [`super::fits`] checks for a global pod, whose node the orchestrator
/// chose by its own readiness and availability rules.
pub fn capacity_filters() -> Vec<Box<dyn Filter>> {
    vec![
        Box::new(ConstraintFilter::default()),
        Box::new(HostPortFilter::default()),
        Box::new(MaxPerNodeFilter::default()),
        Box::new(ResourceFilter::default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_people_write_them() {
        assert_eq!(cpus(500_000_000), "0.5 CPU");
        assert_eq!(cpus(2_000_000_000), "2 CPU");
        assert_eq!(cpus(250_000_000), "0.25 CPU");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(512), "512 bytes");
    }
}
