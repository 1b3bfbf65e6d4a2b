//! What a node is told: its pods (with their templates) and the endpoints
//! of every service it must publish.

use shoal_proto::defaults::HEARTBEAT_PERIOD_MS;
use shoal_proto::{
    port_config::PublishMode, Assignment, Endpoint, ServiceEndpoints, SessionMessage,
};

use crate::objects::{is_ready, pod_name};
use crate::store::StoreData;

/// The complete message for one node. Pods are sent without their observed
/// status and meta, so status reports alone do not cause a resend.
pub fn session_message(
    data: &StoreData,
    node_id: &str,
    session_id: &str,
    epoch: u64,
) -> SessionMessage {
    let mut assignments: Vec<Assignment> = data
        .pods
        .values()
        .filter(|p| p.node_id == node_id)
        .filter_map(|p| {
            let template = data.replica_sets.get(&p.replica_set_id)?.template.clone();
            let spec = data
                .deployments
                .get(&p.deployment_id)
                .and_then(|d| d.spec.as_ref());
            let service_name = spec.map_or_else(|| p.deployment_id.clone(), |s| s.name.clone());
            let stack = spec.map(|s| s.stack.clone()).unwrap_or_default();
            let mut pod = p.clone();
            pod.status = None;
            pod.meta = None;
            Some(Assignment {
                pod_name: pod_name(&service_name, p),
                pod: Some(pod),
                template,
                service_name,
                stack,
            })
        })
        .collect();
    assignments.sort_by(|a, b| {
        a.pod_name.cmp(&b.pod_name).then(
            a.pod
                .as_ref()
                .map(|p| &p.id)
                .cmp(&b.pod.as_ref().map(|p| &p.id)),
        )
    });

    let services = data
        .services
        .values()
        .filter(|s| {
            s.ports
                .iter()
                .any(|p| p.publish_mode() == PublishMode::Ingress)
        })
        .map(|s| {
            let mut endpoints: Vec<Endpoint> = data
                .pods_of_deployment(&s.deployment_id)
                .filter(|p| is_ready(p) && p.desired_state() == shoal_proto::PodState::Running)
                .map(|p| Endpoint {
                    pod_id: p.id.clone(),
                    ip: p.status.as_ref().map(|s| s.ip.clone()).unwrap_or_default(),
                    node_id: p.node_id.clone(),
                })
                .collect();
            endpoints.sort_by(|a, b| a.pod_id.cmp(&b.pod_id));
            ServiceEndpoints {
                service_id: s.id.clone(),
                service_name: s.name.clone(),
                ports: s
                    .ports
                    .iter()
                    .filter(|p| p.publish_mode() == PublishMode::Ingress)
                    .cloned()
                    .collect(),
                endpoints,
            }
        })
        .collect();

    SessionMessage {
        session_id: session_id.to_string(),
        session_epoch: epoch,
        heartbeat_period_ms: HEARTBEAT_PERIOD_MS,
        assignments,
        services,
    }
}
