use shoal_proto::{
    port_config::PublishMode, restart_policy::Condition, NodeAvailability, NodeState, Placement,
    PodState, PortConfig,
};

use super::schedule;
use crate::objects::{observed, version};
use crate::orchestrator::replicated::reconcile;
use crate::store::put;
use crate::testutil::{policy, Fixture};

fn run_all(f: &Fixture, now: i64) {
    for _ in 0..10 {
        let mut m = f.store.read(|d| reconcile(d, now)).mutations;
        m.extend(f.store.read(|d| schedule(d, now)).mutations);
        if m.is_empty() {
            return;
        }
        f.apply(m);
    }
}

fn set_template(f: &Fixture, dep: &str, edit: impl FnOnce(&mut shoal_proto::PodTemplate)) {
    let rs_id = format!("rs-{}-1", dep.trim_start_matches("dep-"));
    let mut rs = f.store.read(|d| d.replica_sets[&rs_id].clone());
    let v = version(&rs.meta);
    edit(rs.template.as_mut().unwrap());
    f.apply(vec![put(rs, v)]);
}

#[test]
fn spreads_pods_of_a_deployment_across_nodes() {
    let f = Fixture::new();
    for n in ["n1", "n2", "n3"] {
        f.ready_node(n);
    }
    let d = f.deployment("web", 6, policy(Condition::Any, 0, 0));
    run_all(&f, 0);
    let pods = f.pods(&d);
    for n in ["n1", "n2", "n3"] {
        assert_eq!(pods.iter().filter(|p| p.node_id == n).count(), 2, "{n}");
    }
    assert!(pods
        .iter()
        .all(|p| observed(p) == PodState::Assigned && p.node_epoch == 1));
}

#[test]
fn waits_for_the_restart_delay_before_placing() {
    let f = Fixture::new();
    f.ready_node("n1");
    let d = f.deployment("web", 1, policy(Condition::Any, 5_000, 0));
    run_all(&f, 0);
    let first = f.pods(&d).pop().unwrap();
    f.report(&first.id, PodState::Failed);
    run_all(&f, 1_000);
    let replacement = f.pods(&d).pop().unwrap();
    assert_eq!(replacement.attempt, 1);
    assert!(
        replacement.node_id.is_empty(),
        "not placed before its delay"
    );
    let pass = f.store.read(|d| schedule(d, 1_000));
    assert_eq!(pass.wake_at, Some(6_000));
    run_all(&f, 6_000);
    assert_eq!(f.pods(&d).pop().unwrap().node_id, "n1");
}

#[test]
fn explains_why_nothing_fits() {
    let f = Fixture::new();
    f.ready_node("n1");
    f.ready_node("n2");
    f.ready_node("n3");
    // n3 is drained; n1 and n2 lack the label.
    let mut n3 = f.store.read(|d| d.nodes["n3"].clone());
    let v = version(&n3.meta);
    n3.spec.as_mut().unwrap().availability = NodeAvailability::Drain as i32;
    f.apply(vec![put(n3, v)]);
    let d = f.deployment("web", 1, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| {
        t.placement = Some(Placement {
            constraints: vec!["node.labels.zone==a".into()],
            ..Default::default()
        })
    });
    run_all(&f, 0);
    let p = f.pods(&d).pop().unwrap();
    assert_eq!(observed(&p), PodState::Pending);
    assert_eq!(
        p.scheduling_message,
        "no suitable node (1 node not available for new pods (paused or drained); \
         2 nodes: constraint node.labels.zone==a not met)"
    );
}

#[test]
fn no_nodes_is_explained_too() {
    let f = Fixture::new();
    let d = f.deployment("web", 1, policy(Condition::Any, 0, 0));
    run_all(&f, 0);
    let p = f.pods(&d).pop().unwrap();
    assert_eq!(
        p.scheduling_message,
        "no suitable node (no nodes in the cluster)"
    );
}

#[test]
fn a_down_node_gets_nothing() {
    let f = Fixture::new();
    f.ready_node("n1");
    f.ready_node("n2");
    let mut n1 = f.store.read(|d| d.nodes["n1"].clone());
    let v = version(&n1.meta);
    n1.status.as_mut().unwrap().state = NodeState::Down as i32;
    f.apply(vec![put(n1, v)]);
    let d = f.deployment("web", 3, policy(Condition::Any, 0, 0));
    run_all(&f, 0);
    assert!(f.pods(&d).iter().all(|p| p.node_id == "n2"));
}

#[test]
fn host_mode_ports_allow_one_pod_per_node() {
    let f = Fixture::new();
    f.ready_node("n1");
    f.ready_node("n2");
    let d = f.deployment("web", 3, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| {
        t.host_ports = vec![PortConfig {
            target_port: 80,
            published_port: 8080,
            publish_mode: PublishMode::Host as i32,
            ..Default::default()
        }]
    });
    run_all(&f, 0);
    let pods = f.pods(&d);
    let placed: Vec<_> = pods.iter().filter(|p| !p.node_id.is_empty()).collect();
    assert_eq!(placed.len(), 2);
    assert_ne!(placed[0].node_id, placed[1].node_id);
    let waiting = pods.iter().find(|p| p.node_id.is_empty()).unwrap();
    assert!(waiting
        .scheduling_message
        .contains("2 nodes: host-mode port 8080 already in use"));
}
