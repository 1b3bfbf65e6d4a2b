//! What `shoal get deployments|services` reads: the stored objects with the
//! counts kubectl shows beside them, computed from the store in one read
//! (no per-row round trips from the CLI).

use shoal_proto::{
    Deployment, DeploymentMode, DeploymentView, PodState, Service, ServiceObjectView,
};
use tonic::{Code, Status};

use super::find_deployment;
use crate::objects::{is_ready, wanted};
use crate::orchestrator::layout::Layout;
use crate::store::StoreData;

/// The deployments `name` selects (all when empty), sorted by name; an
/// unknown name is NotFound naming it.
pub fn deployment_views(d: &StoreData, name: &str) -> Result<Vec<DeploymentView>, Status> {
    let deps: Vec<&Deployment> = if name.is_empty() {
        d.deployments.values().collect()
    } else {
        match find_deployment(d, name) {
            Ok(dep) => vec![dep],
            Err(s) if s.code() == Code::NotFound => {
                return Err(Status::not_found(format!("deployment {name} not found")))
            }
            Err(s) => return Err(s),
        }
    };
    let mut views: Vec<DeploymentView> = deps.into_iter().map(|x| deployment_view(d, x)).collect();
    views.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    Ok(views)
}

fn name_of(v: &DeploymentView) -> &str {
    v.deployment
        .as_ref()
        .and_then(|x| x.spec.as_ref())
        .map_or("", |s| s.name.as_str())
}

fn deployment_view(d: &StoreData, dep: &Deployment) -> DeploymentView {
    let spec = dep.spec.clone().unwrap_or_default();
    let current = dep
        .status
        .as_ref()
        .map(|s| s.current_replica_set_id.as_str())
        .unwrap_or_default();
    let live: Vec<_> = d
        .pods_of_deployment(&dep.id)
        .filter(|p| wanted(p))
        .collect();
    let ready = live.iter().filter(|p| is_ready(p)).count() as u64;
    let desired = match spec.mode() {
        DeploymentMode::Replicated => spec.replicas,
        // The orchestrator's own count, so the two never disagree.
        DeploymentMode::Global => {
            Layout::of(d, dep, d.pods_of_deployment(&dep.id).collect()).desired
        }
    };
    DeploymentView {
        deployment: Some(dep.clone()),
        desired,
        ready,
        up_to_date: live.iter().filter(|p| p.replica_set_id == current).count() as u64,
        available: ready,
    }
}

/// The Service objects `name` selects (by name, id or unique id prefix;
/// all when empty), sorted by name.
pub fn service_object_views(d: &StoreData, name: &str) -> Result<Vec<ServiceObjectView>, Status> {
    let mut services: Vec<&Service> = d.services.values().collect();
    if !name.is_empty() {
        let exact: Vec<&Service> = services
            .iter()
            .copied()
            .filter(|s| s.name == name || s.id == name)
            .collect();
        services = if exact.is_empty() {
            services
                .into_iter()
                .filter(|s| s.id.starts_with(name))
                .collect()
        } else {
            exact
        };
        match services.len() {
            0 => return Err(Status::not_found(format!("service {name} not found"))),
            1 => {}
            n => {
                return Err(Status::invalid_argument(format!(
                    "service {name} is ambiguous: {n} services have ids starting with it"
                )))
            }
        }
    }
    let mut views: Vec<ServiceObjectView> = services
        .into_iter()
        .map(|svc| ServiceObjectView {
            deployment_name: d
                .deployments
                .get(&svc.deployment_id)
                .and_then(|x| x.spec.as_ref())
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            ready_endpoints: ready_endpoints(d, svc),
            service: Some(svc.clone()),
        })
        .collect();
    views.sort_by(|a, b| {
        let n = |v: &ServiceObjectView| v.service.as_ref().map(|s| s.name.clone());
        n(a).cmp(&n(b))
    });
    Ok(views)
}

/// Pods a service balances across: wanted running and ready, as the
/// dispatcher hands them to the ingress proxy.
fn ready_endpoints(d: &StoreData, svc: &Service) -> u64 {
    if svc.deployment_id.is_empty() {
        return 0;
    }
    d.pods_of_deployment(&svc.deployment_id)
        .filter(|p| p.desired_state() == PodState::Running && is_ready(p))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlapi::spec::objects_for;
    use shoal_proto::NodeState;
    use shoal_proto::{
        ContainerSpec, HealthState, Node, NodeSpec, NodeStatus, Placement, Pod, PodStatus,
        ServiceSpec,
    };

    fn pod(id: &str, rs: &str, state: PodState, desired: PodState) -> Pod {
        Pod {
            id: id.into(),
            deployment_id: "d".into(),
            replica_set_id: rs.into(),
            desired_state: desired as i32,
            status: Some(PodStatus {
                state: state as i32,
                ip: "10.0.0.2".into(),
                health: HealthState::None as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn data() -> StoreData {
        let spec = ServiceSpec {
            name: "web".into(),
            replicas: 3,
            container: Some(ContainerSpec {
                image: "img".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut d = StoreData::default();
        let (dep, rs, svc) = objects_for(&spec, ("d".into(), "r2".into(), "s".into()), 0);
        d.deployments.insert("d".into(), dep);
        d.replica_sets.insert("r2".into(), rs);
        d.services.insert("s".into(), svc);
        for p in [
            pod("a", "r2", PodState::Running, PodState::Running),
            pod("b", "r2", PodState::Starting, PodState::Running),
            pod("c", "r1", PodState::Running, PodState::Running),
            pod("h", "r1", PodState::Shutdown, PodState::Shutdown),
        ] {
            d.put_pod(p);
        }
        d
    }

    #[test]
    fn deployment_counts_ready_and_up_to_date_pods() {
        let v = deployment_views(&data(), "").unwrap();
        assert_eq!(v.len(), 1);
        let v = &v[0];
        assert_eq!(
            (v.desired, v.ready, v.up_to_date, v.available),
            (3, 2, 2, 2)
        );
        assert_eq!(
            deployment_views(&data(), "nope").unwrap_err().message(),
            "deployment nope not found"
        );
    }

    #[test]
    fn global_deployments_want_one_pod_per_eligible_node() {
        let mut d = data();
        let dep = d.deployments.get_mut("d").unwrap();
        let spec = dep.spec.as_mut().unwrap();
        spec.mode = DeploymentMode::Global as i32;
        spec.template.as_mut().unwrap().placement = Some(Placement {
            constraints: vec!["node.labels.zone==a".into()],
            ..Default::default()
        });
        let node = |id: &str, zone: &str, state: NodeState| Node {
            id: id.into(),
            spec: Some(NodeSpec {
                labels: [("zone".to_string(), zone.to_string())].into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        for n in [
            node("n1", "a", NodeState::Ready),
            node("n2", "a", NodeState::Ready),
            node("n3", "b", NodeState::Ready),
            node("n4", "a", NodeState::Down),
        ] {
            d.nodes.insert(n.id.clone(), n);
        }
        assert_eq!(deployment_views(&d, "web").unwrap()[0].desired, 2);
    }

    #[test]
    fn services_show_their_ready_endpoints_and_unknown_names_fail() {
        let v = service_object_views(&data(), "web").unwrap();
        assert_eq!(v[0].ready_endpoints, 2);
        assert_eq!(v[0].deployment_name, "web");
        assert_eq!(
            service_object_views(&data(), "api").unwrap_err().message(),
            "service api not found"
        );
    }
}
