//! Translating a user's ServiceSpec into the objects kept in Raft (a
//! Deployment with its first ReplicaSet, and a Service), back again for
//! `inspect`, and validating it with errors that name the field.

use std::collections::BTreeSet;

use shoal_proto::defaults as d;
use shoal_proto::{
    port_config::PublishMode, restart_policy::Condition, update_config, Deployment, DeploymentMode,
    DeploymentSpec, DeploymentStatus, PodTemplate, ReplicaSet, RestartPolicy, Service, ServiceSpec,
    UpdateConfig,
};

use crate::scheduler::constraint::Constraint;
use crate::store::StoreData;

/// Range NodePort-style ports are assigned from when none is given.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u32> = 30000..=32767;

/// Checks a spec; the error names the field and the offending value.
pub fn validate(spec: &ServiceSpec) -> Result<(), String> {
    validate_name(&spec.name)?;
    let c = spec
        .container
        .as_ref()
        .ok_or("container: missing (an image is required)")?;
    if c.image.trim().is_empty() {
        return Err("image: empty (give an image, e.g. nginx:1.27)".into());
    }
    if spec.mode() == DeploymentMode::Global && spec.replicas > 0 {
        return Err("replicas: cannot be used with global mode".into());
    }
    if spec.replicas > 100_000 {
        return Err(format!("replicas: {} is more than 100000", spec.replicas));
    }
    let mut seen = BTreeSet::new();
    for p in &spec.ports {
        if p.target_port == 0 || p.target_port > 65535 {
            return Err(format!(
                "ports: target port {} is not in 1-65535",
                p.target_port
            ));
        }
        if p.published_port > 65535 {
            return Err(format!(
                "ports: published port {} is not in 1-65535",
                p.published_port
            ));
        }
        if p.publish_mode() == PublishMode::Host && p.published_port == 0 {
            return Err("ports: mode=host needs a published port".into());
        }
        if p.published_port != 0 && !seen.insert((p.published_port, p.protocol)) {
            return Err(format!(
                "ports: published port {} given twice",
                p.published_port
            ));
        }
    }
    if let Some(pl) = &spec.placement {
        for c in &pl.constraints {
            Constraint::parse(c).map_err(|e| format!("constraint: {e}"))?;
        }
    }
    for e in &c.env {
        if e.is_empty() || e.starts_with('=') {
            return Err(format!("env: {e:?} is not KEY=VALUE"));
        }
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name: {name:?} is not a valid service name (1-63 letters, digits, '-' or '_', starting with a letter or digit)"
        ))
    }
}

/// Fills what the user left unset with the defaults.
pub fn with_defaults(mut spec: ServiceSpec) -> ServiceSpec {
    if let Some(c) = spec.container.as_mut() {
        if c.stop_grace_period_ms == 0 {
            c.stop_grace_period_ms = d::STOP_GRACE_PERIOD_MS;
        }
    }
    if spec.restart_policy.is_none() {
        spec.restart_policy = Some(default_restart_policy());
    }
    if spec.update_config.is_none() {
        spec.update_config = Some(default_update_config());
    }
    if spec.rollback_config.is_none() {
        spec.rollback_config = Some(default_update_config());
    }
    spec
}

pub fn default_restart_policy() -> RestartPolicy {
    RestartPolicy {
        condition: Condition::Any as i32,
        delay_ms: d::RESTART_DELAY_MS,
        max_attempts: d::RESTART_MAX_ATTEMPTS,
        window_ms: d::RESTART_WINDOW_MS,
    }
}

pub fn default_update_config() -> UpdateConfig {
    UpdateConfig {
        parallelism: d::UPDATE_PARALLELISM,
        delay_ms: d::UPDATE_DELAY_MS,
        failure_action: update_config::FailureAction::Pause as i32,
        monitor_ms: d::UPDATE_MONITOR_MS,
        max_failure_ratio: d::UPDATE_MAX_FAILURE_RATIO,
        order: update_config::Order::StopFirst as i32,
    }
}

/// Ingress ports already published, by port number, with the owner's name.
fn published_ports(data: &StoreData) -> Vec<(u32, String)> {
    data.services
        .values()
        .flat_map(|s| {
            s.ports
                .iter()
                .filter(|p| p.published_port != 0)
                .map(move |p| (p.published_port, s.name.clone()))
        })
        .collect()
}

/// Gives ingress ports without a published port one from the NodePort
/// range, and refuses ports another service already publishes.
pub fn allocate_ports(
    data: &StoreData,
    spec: &mut ServiceSpec,
    own_name: &str,
) -> Result<(), String> {
    let taken: Vec<(u32, String)> = published_ports(data)
        .into_iter()
        .filter(|(_, owner)| owner != own_name)
        .collect();
    for p in &spec.ports {
        if let Some((_, owner)) = taken.iter().find(|(port, _)| *port == p.published_port) {
            return Err(format!(
                "ports: port {} is already published by service {owner}",
                p.published_port
            ));
        }
    }
    let mut used: BTreeSet<u32> = taken.iter().map(|(p, _)| *p).collect();
    used.extend(spec.ports.iter().map(|p| p.published_port));
    for p in spec.ports.iter_mut() {
        if p.published_port == 0 && p.publish_mode() == PublishMode::Ingress {
            let free = NODE_PORT_RANGE
                .clone()
                .find(|c| !used.contains(c))
                .ok_or("ports: no free port left in 30000-32767")?;
            p.published_port = free;
            used.insert(free);
        }
    }
    Ok(())
}

pub fn template_of(spec: &ServiceSpec) -> PodTemplate {
    PodTemplate {
        container: spec.container.clone(),
        host_ports: spec
            .ports
            .iter()
            .filter(|p| p.publish_mode() == PublishMode::Host)
            .cloned()
            .collect(),
        placement: spec.placement.clone(),
        networks: spec.networks.clone(),
        external_networks: spec.external_networks.clone(),
    }
}

/// The Deployment, its first ReplicaSet and the Service for a new service.
pub fn objects_for(
    spec: &ServiceSpec,
    ids: (String, String, String),
    now: i64,
) -> (Deployment, ReplicaSet, Service) {
    let (deployment_id, rs_id, service_id) = ids;
    let meta = Some(shoal_proto::Meta {
        version: 0,
        created_at: now,
        updated_at: now,
    });
    let replicas = if spec.mode() == DeploymentMode::Replicated {
        spec.replicas
    } else {
        0
    };
    let deployment = Deployment {
        id: deployment_id.clone(),
        meta,
        spec: Some(DeploymentSpec {
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            mode: spec.mode,
            replicas,
            template: Some(template_of(spec)),
            restart_policy: spec.restart_policy,
            update_config: spec.update_config,
            rollback_config: spec.rollback_config,
            pod_history_limit: d::POD_HISTORY_LIMIT,
            revision_history_limit: d::REVISION_HISTORY_LIMIT,
            stack: spec.stack.clone(),
        }),
        status: Some(DeploymentStatus {
            current_replica_set_id: rs_id.clone(),
            revision: 1,
            ..Default::default()
        }),
    };
    let rs = ReplicaSet {
        id: rs_id,
        meta,
        deployment_id: deployment_id.clone(),
        revision: 1,
        template: Some(template_of(spec)),
        replicas,
        change_cause: "create".into(),
    };
    let has_ingress = spec
        .ports
        .iter()
        .any(|p| p.publish_mode() == PublishMode::Ingress);
    let service = Service {
        id: service_id,
        meta,
        name: spec.name.clone(),
        r#type: if has_ingress {
            shoal_proto::service::Type::NodePort as i32
        } else {
            shoal_proto::service::Type::ClusterIp as i32
        },
        deployment_id,
        ports: spec.ports.clone(),
        external_name: String::new(),
        stack: spec.stack.clone(),
    };
    (deployment, rs, service)
}

/// The user's view of a stored deployment (and its service), for inspect.
pub fn spec_of(d: &Deployment, service: Option<&Service>) -> ServiceSpec {
    let ds = d.spec.clone().unwrap_or_default();
    let t = ds.template.unwrap_or_default();
    ServiceSpec {
        name: ds.name,
        labels: ds.labels,
        mode: ds.mode,
        replicas: ds.replicas,
        container: t.container,
        ports: service.map(|s| s.ports.clone()).unwrap_or(t.host_ports),
        restart_policy: ds.restart_policy,
        update_config: ds.update_config,
        rollback_config: ds.rollback_config,
        placement: t.placement,
        networks: t.networks,
        external_networks: t.external_networks,
        stack: ds.stack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ContainerSpec, PortConfig};

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            replicas: 1,
            container: Some(ContainerSpec {
                image: "img".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate(&spec("web-1")).is_ok());
        assert!(validate(&spec("")).unwrap_err().starts_with("name:"));
        assert!(validate(&spec("-web")).unwrap_err().starts_with("name:"));
        assert!(validate(&spec("we b")).unwrap_err().starts_with("name:"));
    }

    #[test]
    fn ports_are_checked() {
        let mut s = spec("web");
        s.ports = vec![PortConfig {
            target_port: 70000,
            ..Default::default()
        }];
        assert!(validate(&s).unwrap_err().contains("target port 70000"));
        s.ports = vec![PortConfig {
            target_port: 80,
            publish_mode: PublishMode::Host as i32,
            ..Default::default()
        }];
        assert!(validate(&s)
            .unwrap_err()
            .contains("mode=host needs a published port"));
    }

    #[test]
    fn ingress_ports_get_a_node_port_and_conflicts_are_refused() {
        let data = StoreData::default();
        let mut s = spec("web");
        s.ports = vec![PortConfig {
            target_port: 80,
            ..Default::default()
        }];
        allocate_ports(&data, &mut s, "web").unwrap();
        assert_eq!(s.ports[0].published_port, 30000);

        let mut data = StoreData::default();
        let (_, _, svc) = objects_for(&s, ("d".into(), "r".into(), "s".into()), 0);
        data.services.insert("s".into(), svc);
        let mut other = spec("api");
        other.ports = vec![PortConfig {
            target_port: 80,
            published_port: 30000,
            ..Default::default()
        }];
        let err = allocate_ports(&data, &mut other, "api").unwrap_err();
        assert_eq!(err, "ports: port 30000 is already published by service web");
    }

    #[test]
    fn spec_survives_the_round_trip_through_stored_objects() {
        let mut s = with_defaults(spec("web"));
        s.replicas = 3;
        s.ports = vec![PortConfig {
            target_port: 80,
            published_port: 8080,
            ..Default::default()
        }];
        let (d, _, svc) = objects_for(&s, ("d".into(), "r".into(), "s".into()), 0);
        assert_eq!(spec_of(&d, Some(&svc)), s);
    }
}
