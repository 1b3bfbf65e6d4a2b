//! Scheduler filters, SwarmKit's shape: each concern is one small type that
//! prepares itself for a pod, checks one node, and explains in words how many
//! nodes it turned away, so the user sees why nothing fits.

use std::collections::HashSet;

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
    /// Why `failed` nodes did not pass, e.g. "2 nodes not ready".
    fn explain(&self, failed: usize) -> String;
}

fn nodes(n: usize) -> String {
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
    fn explain(&self, failed: usize) -> String {
        format!("{} not ready", nodes(failed))
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
    fn explain(&self, failed: usize) -> String {
        format!(
            "{} not available for new pods (paused or drained)",
            nodes(failed)
        )
    }
}

/// Host-mode published ports bind on the node itself: one pod per port.
#[derive(Default)]
pub struct HostPortFilter {
    wanted: Vec<u32>,
}

impl Filter for HostPortFilter {
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
    fn explain(&self, failed: usize) -> String {
        let ports: Vec<String> = self.wanted.iter().map(|p| p.to_string()).collect();
        format!(
            "{}: host-mode port {} already in use",
            nodes(failed),
            ports.join(",")
        )
    }
}

/// Placement constraints (`node.labels.zone==a`, `node.role!=manager`, ...).
#[derive(Default)]
pub struct ConstraintFilter {
    constraints: Vec<Constraint>,
    /// Which constraint a node failed first, remembered for the explanation.
    first_failed: std::cell::RefCell<HashSet<String>>,
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
    fn explain(&self, failed: usize) -> String {
        let mut which: Vec<String> = self.first_failed.borrow().iter().cloned().collect();
        which.sort();
        format!("{}: constraint {} not met", nodes(failed), which.join(", "))
    }
}

/// At most N pods of one deployment per node.
#[derive(Default)]
pub struct MaxPerNodeFilter {
    max: u64,
    deployment_id: String,
}

impl Filter for MaxPerNodeFilter {
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
    fn explain(&self, failed: usize) -> String {
        format!(
            "{}: max replicas per node ({}) reached",
            nodes(failed),
            self.max
        )
    }
}

/// Every filter, in the order their explanations are most useful.
pub fn all_filters() -> Vec<Box<dyn Filter>> {
    vec![
        Box::new(ReadyFilter),
        Box::new(AvailabilityFilter),
        Box::new(ConstraintFilter::default()),
        Box::new(HostPortFilter::default()),
        Box::new(MaxPerNodeFilter::default()),
    ]
}
