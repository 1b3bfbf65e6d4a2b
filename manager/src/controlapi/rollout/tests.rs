use shoal_proto::{
    port_config::PublishMode, service::Type, ContainerSpec, PortConfig, ServiceSpec,
};

use super::update;
use crate::controlapi::spec::{objects_for, with_defaults};
use crate::store::StoreData;

fn stored(spec: &ServiceSpec) -> StoreData {
    let mut data = StoreData::default();
    let (mut dep, mut rs, mut svc) = objects_for(spec, ("d".into(), "r".into(), "s".into()), 1);
    for meta in [&mut dep.meta, &mut rs.meta, &mut svc.meta] {
        meta.get_or_insert_with(Default::default).version = 1;
    }
    data.deployments.insert("d".into(), dep);
    data.replica_sets.insert("r".into(), rs);
    data.services.insert("s".into(), svc);
    data
}

fn web() -> ServiceSpec {
    with_defaults(ServiceSpec {
        name: "web".into(),
        replicas: 1,
        container: Some(ContainerSpec {
            image: "img".into(),
            ..Default::default()
        }),
        ports: vec![PortConfig {
            target_port: 80,
            published_port: 30001,
            publish_mode: PublishMode::Ingress as i32,
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn service_put(m: &[shoal_proto::Mutation]) -> Option<shoal_proto::Service> {
    m.iter().find_map(|m| match &m.op {
        Some(shoal_proto::mutation::Op::Put(o)) => match &o.kind {
            Some(shoal_proto::object::Kind::Service(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    })
}

#[test]
fn an_update_carries_type_and_labels_to_the_service_object() {
    let data = stored(&web());
    let dep = &data.deployments["d"];
    let mut spec = web();
    spec.r#type = Some(Type::LoadBalancer as i32);
    spec.labels.insert("tier".into(), "front".into());
    let m = update(&data, dep, spec, false, 2).unwrap();
    let svc = service_put(&m).expect("the Service is rewritten");
    assert_eq!(svc.r#type(), Type::LoadBalancer);
    assert_eq!(svc.labels["tier"], "front");

    let m = update(&data, dep, web(), false, 2).unwrap();
    assert!(
        service_put(&m).is_none(),
        "nothing changed, nothing written"
    );

    let mut spec = web();
    spec.ports.clear();
    let m = update(&data, dep, spec, false, 2).unwrap();
    assert_eq!(service_put(&m).unwrap().r#type(), Type::ClusterIp);
}

#[test]
fn a_service_with_pods_cannot_become_external_name() {
    let data = stored(&web());
    let mut spec = web();
    spec.r#type = Some(Type::ExternalName as i32);
    spec.external_name = "db.example.org".into();
    spec.container = None;
    spec.replicas = 0;
    spec.ports.clear();
    let err = update(&data, &data.deployments["d"], spec, false, 2).unwrap_err();
    assert!(
        err.starts_with("type: a service that runs pods cannot become ExternalName"),
        "{err}"
    );
}
