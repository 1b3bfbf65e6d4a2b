//! Translating a user's ServiceSpec into the objects kept in Raft (a
//! Deployment with its first ReplicaSet, and a Service), back again for
//! `inspect`, and validating it with errors that name the field.

use std::collections::BTreeSet;

use shoal_proto::defaults as d;
use shoal_proto::{
    port_config::PublishMode, restart_policy::Condition, service::Type as ServiceType,
    update_config, Deployment, DeploymentMode, DeploymentSpec, DeploymentStatus, EndpointMode,
    Meta, PodTemplate, ReplicaSet, RestartPolicy, Service, ServiceSpec, UpdateConfig,
};

use crate::objects::has_ingress_ports;
use crate::scheduler::constraint::{known_key, Constraint};
use crate::store::StoreData;

/// Range NodePort-style ports are assigned from when none is given.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u32> = 30000..=32767;

/// Checks a spec; the error names the field and the offending value.
pub fn validate(spec: &ServiceSpec) -> Result<(), String> {
    validate_name(&spec.name)?;
    validate_type(spec)?;
    if service_type(spec) == ServiceType::ExternalName {
        return validate_external(spec);
    }
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
        for s in &pl.spread {
            validate_spread(s)?;
        }
    }
    validate_resources(c)?;
    for e in &c.env {
        if e.is_empty() || e.starts_with('=') {
            return Err(format!("env: {e:?} is not KEY=VALUE"));
        }
    }
    Ok(())
}

/// A spread descriptor names a node attribute the scheduler can group by:
/// the keys constraints use. Swarm's `spread=` prefix is the CLI's; a stored
/// descriptor has none.
fn validate_spread(descriptor: &str) -> Result<(), String> {
    if known_key(descriptor) {
        return Ok(());
    }
    Err(format!(
        "placement.spread: {descriptor:?} is not a spread descriptor (use node.labels.<name>, node.id, node.hostname or node.role)"
    ))
}

/// Reservations and limits are amounts: negative ones mean nothing, and a
/// reservation above its limit could never be used.
fn validate_resources(c: &shoal_proto::ContainerSpec) -> Result<(), String> {
    let amounts = [
        ("reserve_nano_cpus", c.reserve_nano_cpus),
        ("reserve_memory_bytes", c.reserve_memory_bytes),
        ("limit_nano_cpus", c.limit_nano_cpus),
        ("limit_memory_bytes", c.limit_memory_bytes),
    ];
    for (field, v) in amounts {
        if v < 0 {
            return Err(format!("container.{field}: {v} is negative"));
        }
    }
    let pairs = [
        ("nano_cpus", c.reserve_nano_cpus, c.limit_nano_cpus),
        ("memory_bytes", c.reserve_memory_bytes, c.limit_memory_bytes),
    ];
    for (what, reserve, limit) in pairs {
        if limit > 0 && reserve > limit {
            return Err(format!(
                "container.reserve_{what}: {reserve} is more than container.limit_{what} {limit}"
            ));
        }
    }
    Ok(())
}

/// The type a spec's Service gets: the one given, else NodePort when a port
/// is published in ingress mode (the node port), else ClusterIP.
pub fn service_type(spec: &ServiceSpec) -> ServiceType {
    match spec.r#type {
        Some(_) => spec.r#type(),
        None if has_ingress_ports(&spec.ports) => ServiceType::NodePort,
        None => ServiceType::ClusterIp,
    }
}

/// The type and endpoint mode agree with each other and with the ports.
fn validate_type(spec: &ServiceSpec) -> Result<(), String> {
    let mode = EndpointMode::try_from(spec.endpoint_mode).map_err(|_| {
        format!(
            "endpoint_mode: unknown value {} (use vip or dnsrr)",
            spec.endpoint_mode
        )
    })?;
    let ty = match spec.r#type {
        None => None,
        Some(v) => Some(
            ServiceType::try_from(v)
                .map_err(|_| format!("type: unknown value {v} (use {})", ServiceType::choices()))?,
        ),
    };
    let ingress = has_ingress_ports(&spec.ports);
    if mode == EndpointMode::Dnsrr && ingress && ty != Some(ServiceType::ExternalName) {
        return Err("endpoint_mode: dnsrr cannot publish ports in ingress mode (a dnsrr service has no virtual IP to balance): publish with mode=host or use endpoint mode vip".into());
    }
    match ty {
        Some(ServiceType::ExternalName) => Ok(()),
        _ if !spec.external_name.is_empty() => Err(format!(
            "external_name: {:?} is only allowed with type ExternalName (this service is {})",
            spec.external_name,
            service_type(spec).display()
        )),
        Some(ServiceType::ClusterIp) if ingress => Err("type: ClusterIP cannot publish ports in ingress mode (a port published in ingress mode is a node port): remove the type or publish with mode=host".into()),
        Some(ServiceType::NodePort) if !ingress => Err("type: NodePort needs a port published in ingress mode (e.g. -p 8080:80, or -p 80 for a port from 30000-32767)".into()),
        Some(ServiceType::LoadBalancer) if mode == EndpointMode::Dnsrr => Err("type: LoadBalancer needs endpoint mode vip (a dnsrr service is headless)".into()),
        _ => Ok(()),
    }
}

/// An ExternalName service is a name for an outside DNS name: no image, no
/// pods, no ports.
fn validate_external(spec: &ServiceSpec) -> Result<(), String> {
    let name = spec.external_name.trim();
    if name.is_empty() {
        return Err("external_name: required for a service of type ExternalName (the DNS name it stands for, e.g. db.example.org)".into());
    }
    let valid = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid || name != spec.external_name {
        return Err(format!(
            "external_name: {:?} is not a DNS name (dot-separated labels of letters, digits and '-')",
            spec.external_name
        ));
    }
    if let Some(image) = spec.container.as_ref().map(|c| &c.image) {
        if !image.is_empty() {
            return Err(format!(
                "image: {image:?}: an ExternalName service runs no pods, so it takes no image"
            ));
        }
    }
    if spec.mode() == DeploymentMode::Global {
        return Err(
            "mode: an ExternalName service runs no pods, so global mode does not apply".into(),
        );
    }
    if spec.replicas > 0 {
        return Err(format!(
            "replicas: an ExternalName service runs no pods (got {})",
            spec.replicas
        ));
    }
    if !spec.ports.is_empty() {
        return Err("ports: an ExternalName service has no pods to publish ports of".into());
    }
    if spec.endpoint_mode() == EndpointMode::Dnsrr {
        return Err("endpoint_mode: dnsrr does not apply to an ExternalName service (its name resolves to its external name)".into());
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
        network_aliases: spec.network_aliases.clone(),
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
    let service = service_object(spec, service_id, deployment_id, meta);
    (deployment, rs, service)
}

/// The Service object a spec describes (`deployment_id` empty for an
/// ExternalName service, which has no Deployment).
pub fn service_object(
    spec: &ServiceSpec,
    id: String,
    deployment_id: String,
    meta: Option<Meta>,
) -> Service {
    Service {
        id,
        meta,
        name: spec.name.clone(),
        r#type: service_type(spec) as i32,
        deployment_id,
        ports: spec.ports.clone(),
        external_name: spec.external_name.clone(),
        stack: spec.stack.clone(),
        endpoint_mode: spec.endpoint_mode,
        labels: spec.labels.clone(),
    }
}

/// The type as a spec gives it back: ClusterIP and NodePort follow from the
/// ports (and are checked against them), so only the others are explicit.
fn explicit_type(svc: &Service) -> Option<i32> {
    match svc.r#type() {
        ServiceType::ClusterIp | ServiceType::NodePort => None,
        t => Some(t as i32),
    }
}

/// The user's view of an ExternalName service (a Service without a
/// Deployment), for inspect and update.
pub fn spec_of_external(svc: &Service) -> ServiceSpec {
    ServiceSpec {
        name: svc.name.clone(),
        labels: svc.labels.clone(),
        r#type: Some(ServiceType::ExternalName as i32),
        external_name: svc.external_name.clone(),
        stack: svc.stack.clone(),
        endpoint_mode: svc.endpoint_mode,
        ..Default::default()
    }
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
        network_aliases: t.network_aliases,
        stack: ds.stack,
        endpoint_mode: service.map_or(0, |s| s.endpoint_mode),
        r#type: service.and_then(explicit_type),
        external_name: service.map(|s| s.external_name.clone()).unwrap_or_default(),
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
    fn spread_descriptors_and_amounts_are_checked() {
        let mut s = spec("web");
        s.placement = Some(shoal_proto::Placement {
            spread: vec!["node.labels.zone".into(), "node.hostname".into()],
            ..Default::default()
        });
        assert_eq!(validate(&s), Ok(()));
        for bad in [
            "spread=node.labels.zone",
            "node.labels.",
            "engine.labels.x",
            "",
        ] {
            s.placement.as_mut().unwrap().spread = vec![bad.into()];
            let e = validate(&s).unwrap_err();
            assert!(
                e.starts_with("placement.spread: ") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
        s.placement = None;
        let c = s.container.as_mut().unwrap();
        c.reserve_memory_bytes = -1;
        assert_eq!(
            validate(&s).unwrap_err(),
            "container.reserve_memory_bytes: -1 is negative"
        );
        let c = s.container.as_mut().unwrap();
        c.reserve_memory_bytes = 256 << 20;
        c.limit_memory_bytes = 128 << 20;
        assert!(validate(&s)
            .unwrap_err()
            .starts_with("container.reserve_memory_bytes: 268435456 is more than"));
        s.container.as_mut().unwrap().limit_memory_bytes = 0;
        assert_eq!(validate(&s), Ok(()));
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

    fn published(port: u32, mode: PublishMode) -> PortConfig {
        PortConfig {
            target_port: 80,
            published_port: port,
            publish_mode: mode as i32,
            ..Default::default()
        }
    }

    #[test]
    fn the_type_follows_the_ports_unless_given() {
        let mut s = spec("web");
        assert_eq!(service_type(&s), ServiceType::ClusterIp);
        s.ports = vec![published(8080, PublishMode::Host)];
        assert_eq!(service_type(&s), ServiceType::ClusterIp);
        s.ports = vec![published(0, PublishMode::Ingress)];
        assert_eq!(service_type(&s), ServiceType::NodePort);
        s.r#type = Some(ServiceType::LoadBalancer as i32);
        assert_eq!(service_type(&s), ServiceType::LoadBalancer);
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn types_that_contradict_the_ports_or_endpoint_mode_are_refused() {
        let err = |s: &ServiceSpec| validate(s).unwrap_err();
        let mut s = spec("web");
        s.endpoint_mode = EndpointMode::Dnsrr as i32;
        s.ports = vec![published(8080, PublishMode::Ingress)];
        assert!(err(&s).starts_with("endpoint_mode: dnsrr cannot publish ports in ingress mode"));
        s.ports = vec![published(8080, PublishMode::Host)];
        assert!(validate(&s).is_ok(), "dnsrr with host-mode ports is fine");
        s.r#type = Some(ServiceType::LoadBalancer as i32);
        assert!(err(&s).starts_with("type: LoadBalancer needs endpoint mode vip"));

        let mut s = spec("web");
        s.r#type = Some(ServiceType::NodePort as i32);
        assert!(err(&s).starts_with("type: NodePort needs a port published in ingress mode"));
        s.r#type = Some(ServiceType::ClusterIp as i32);
        s.ports = vec![published(8080, PublishMode::Ingress)];
        assert!(err(&s).starts_with("type: ClusterIP cannot publish ports in ingress mode"));
        s.r#type = Some(9);
        assert_eq!(
            err(&s),
            "type: unknown value 9 (use ClusterIP, NodePort, LoadBalancer or ExternalName)"
        );
        let mut s = spec("web");
        s.external_name = "db.example.org".into();
        assert_eq!(
            err(&s),
            "external_name: \"db.example.org\" is only allowed with type ExternalName (this service is ClusterIP)"
        );
    }

    fn external(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: "db".into(),
            r#type: Some(ServiceType::ExternalName as i32),
            external_name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn external_name_services_need_a_dns_name_and_nothing_to_run() {
        assert!(validate(&external("db.example.org")).is_ok());
        let err = |s: &ServiceSpec| validate(s).unwrap_err();
        assert!(err(&external("")).starts_with("external_name: required"));
        assert!(err(&external("db..example"))
            .starts_with("external_name: \"db..example\" is not a DNS name"));
        assert!(err(&external("-db.example")).contains("is not a DNS name"));
        let mut s = external("db.example.org");
        s.container = Some(ContainerSpec {
            image: "postgres".into(),
            ..Default::default()
        });
        assert_eq!(
            err(&s),
            "image: \"postgres\": an ExternalName service runs no pods, so it takes no image"
        );
        let mut s = external("db.example.org");
        s.replicas = 2;
        assert!(err(&s).starts_with("replicas: an ExternalName service runs no pods (got 2)"));
        let mut s = external("db.example.org");
        s.ports = vec![published(0, PublishMode::Ingress)];
        assert!(err(&s).starts_with("ports: an ExternalName service has no pods"));
    }

    #[test]
    fn the_service_object_records_type_mode_and_external_name() {
        let mut s = with_defaults(spec("web"));
        s.endpoint_mode = EndpointMode::Dnsrr as i32;
        let (d, _, svc) = objects_for(&s, ("d".into(), "r".into(), "s".into()), 0);
        assert_eq!(svc.r#type(), ServiceType::ClusterIp);
        assert_eq!(svc.endpoint_mode(), EndpointMode::Dnsrr);
        assert_eq!(spec_of(&d, Some(&svc)), s);

        s.endpoint_mode = 0;
        s.r#type = Some(ServiceType::LoadBalancer as i32);
        let (d, _, svc) = objects_for(&s, ("d".into(), "r".into(), "s".into()), 0);
        assert_eq!(svc.r#type(), ServiceType::LoadBalancer);
        assert_eq!(
            spec_of(&d, Some(&svc)),
            s,
            "an explicit LoadBalancer reads back"
        );

        let mut e = external("db.example.org");
        e.labels.insert("tier".into(), "data".into());
        let svc = service_object(&e, "s".into(), String::new(), None);
        assert_eq!(svc.r#type(), ServiceType::ExternalName);
        assert_eq!(svc.external_name, "db.example.org");
        assert_eq!(spec_of_external(&svc), e);
    }
}
