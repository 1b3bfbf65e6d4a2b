//! Small readers over generated types that every controller uses.

use shoal_proto::{
    port_config::PublishMode, HealthState, Meta, Node, NodeAvailability, NodeState, Pod, PodState,
    PortConfig,
};

/// The stored version of an object (0 when it has no meta yet).
pub fn version(meta: &Option<Meta>) -> u64 {
    meta.as_ref().map_or(0, |m| m.version)
}

pub fn created_at(meta: &Option<Meta>) -> i64 {
    meta.as_ref().map_or(0, |m| m.created_at)
}

/// Whether any of `ports` is published in ingress mode (served by every
/// node's proxy, so every node is sent the service's endpoints).
pub fn has_ingress_ports(ports: &[PortConfig]) -> bool {
    ports
        .iter()
        .any(|p| p.publish_mode() == PublishMode::Ingress)
}

/// Observed state of a pod.
pub fn observed(p: &Pod) -> PodState {
    p.status.as_ref().map_or(PodState::New, |s| s.state())
}

/// Wanted running: neither shut down nor marked for removal.
pub fn wanted(p: &Pod) -> bool {
    p.desired_state() == PodState::Running
}

/// Running and, when it has a healthcheck, healthy: it may take traffic.
pub fn is_ready(p: &Pod) -> bool {
    let Some(s) = &p.status else { return false };
    s.state() == PodState::Running
        && matches!(s.health(), HealthState::None | HealthState::Healthy)
        && !s.ip.is_empty()
}

/// The name users see: `web.1` for a replicated pod, `web.<node id>` for a
/// global one (as Swarm names tasks).
pub fn pod_name(service: &str, p: &Pod) -> String {
    if p.slot > 0 {
        format!("{service}.{}", p.slot)
    } else {
        format!("{service}.{}", p.node_id)
    }
}

/// The node's session is up (the dispatcher's word).
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .is_some_and(|s| s.state() == NodeState::Ready)
}

/// The node takes new pods: active (paused and drained nodes do not).
pub fn node_active(n: &Node) -> bool {
    n.spec
        .as_ref()
        .is_none_or(|s| s.availability() == NodeAvailability::Active || s.availability == 0)
}

/// Sets the meta's update time, creating the meta when missing.
pub fn touch(meta: &mut Option<Meta>, now: i64) {
    let m = meta.get_or_insert_with(Meta::default);
    if m.created_at == 0 {
        m.created_at = now;
    }
    m.updated_at = now;
}
