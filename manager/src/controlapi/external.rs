//! ExternalName services: a Service object without a Deployment, standing
//! for a DNS name outside the cluster (Kubernetes' CNAME service). They have
//! no image, pods, revisions or ports, so the RPCs that act on pods refuse
//! them by name, and the ones that list or show services include them.

use shoal_proto::{Mutation, ObjectKind, Service, ServiceSpec, ServiceView};

use super::spec;
use crate::objects::{touch, version};
use crate::store::{delete, put, StoreData};

/// Is this Service an ExternalName one (no Deployment behind it)?
pub fn is_external(svc: &Service) -> bool {
    svc.deployment_id.is_empty()
}

/// An ExternalName service by exact name, exact id, or id prefix unique
/// among every service (a prefix a deployment's id shares selects nothing).
pub fn find<'a>(d: &'a StoreData, name_or_id: &str) -> Option<&'a Service> {
    if name_or_id.is_empty() {
        return None;
    }
    let mut external = d.services.values().filter(|s| is_external(s));
    if let Some(s) = external
        .clone()
        .find(|s| s.name == name_or_id || s.id == name_or_id)
    {
        return Some(s);
    }
    if d.deployments.keys().any(|id| id.starts_with(name_or_id)) {
        return None;
    }
    let mut by_prefix = external.by_ref().filter(|s| s.id.starts_with(name_or_id));
    match (by_prefix.next(), by_prefix.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// Is `name` taken by any service, with or without a Deployment?
pub fn name_taken(d: &StoreData, name: &str) -> bool {
    d.deployment_by_name(name).is_some() || d.services.values().any(|s| s.name == name)
}

/// What `service inspect`/`ls` show for an ExternalName service: no pods,
/// nothing desired, no rollout.
pub fn view(svc: &Service) -> ServiceView {
    ServiceView {
        id: svc.id.clone(),
        spec: Some(spec::spec_of_external(svc)),
        meta: svc.meta,
        ..Default::default()
    }
}

/// The new Service for `service create --type ExternalName`.
pub fn create(spec: &ServiceSpec, id: String, now: i64) -> Vec<Mutation> {
    let meta = Some(shoal_proto::Meta {
        version: 0,
        created_at: now,
        updated_at: now,
    });
    vec![put(spec::service_object(spec, id, String::new(), meta), 0)]
}

/// `service update` of an ExternalName service (a validated spec): its
/// external name, labels and stack may change, its type may not.
pub fn update(svc: &Service, spec: &ServiceSpec, now: i64) -> Result<Vec<Mutation>, String> {
    if spec.name != svc.name {
        return Err(format!(
            "name: cannot be changed (from {} to {})",
            svc.name, spec.name
        ));
    }
    if spec::service_type(spec) != shoal_proto::service::Type::ExternalName {
        return Err(format!(
            "type: service {} is ExternalName and cannot become {}; remove it and create it again",
            svc.name,
            spec::service_type(spec).display()
        ));
    }
    let mut s2 = spec::service_object(spec, svc.id.clone(), String::new(), svc.meta);
    if s2 == *svc {
        return Ok(vec![]);
    }
    touch(&mut s2.meta, now);
    Ok(vec![put(s2, version(&svc.meta))])
}

/// `service rm` of an ExternalName service.
pub fn remove(svc: &Service) -> Vec<Mutation> {
    vec![delete(
        ObjectKind::Service,
        svc.id.clone(),
        version(&svc.meta),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::service::Type;

    fn spec(external_name: &str) -> ServiceSpec {
        ServiceSpec {
            name: "db".into(),
            r#type: Some(Type::ExternalName as i32),
            external_name: external_name.into(),
            ..Default::default()
        }
    }

    fn stored() -> StoreData {
        let mut d = StoreData::default();
        let svc = spec::service_object(
            &spec("db.example.org"),
            "abc123".into(),
            String::new(),
            Some(shoal_proto::Meta {
                version: 3,
                ..Default::default()
            }),
        );
        d.services.insert(svc.id.clone(), svc);
        d
    }

    #[test]
    fn found_by_name_id_or_prefix() {
        let d = stored();
        assert!(find(&d, "db").is_some());
        assert!(find(&d, "abc123").is_some());
        assert!(find(&d, "abc").is_some());
        assert!(find(&d, "web").is_none());
        assert!(find(&d, "").is_none());
        assert!(name_taken(&d, "db"));
    }

    #[test]
    fn updates_keep_the_type_and_write_only_changes() {
        let d = stored();
        let svc = find(&d, "db").unwrap();
        assert!(update(svc, &spec("db.example.org"), 1).unwrap().is_empty());
        assert_eq!(update(svc, &spec("db2.example.org"), 1).unwrap().len(), 1);
        let mut other = spec("");
        other.r#type = None;
        let err = update(svc, &other, 1).unwrap_err();
        assert_eq!(
            err,
            "type: service db is ExternalName and cannot become ClusterIP; remove it and create it again"
        );
    }

    #[test]
    fn the_view_has_no_pods() {
        let d = stored();
        let v = view(find(&d, "db").unwrap());
        assert_eq!(v.desired_replicas, 0);
        assert!(v.deployment_id.is_empty());
        assert_eq!(v.spec.unwrap().external_name, "db.example.org");
    }
}
