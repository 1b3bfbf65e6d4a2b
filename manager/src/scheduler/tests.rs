use shoal_proto::{
    port_config::PublishMode, restart_policy::Condition, NodeAvailability, NodeResources,
    NodeState, Placement, PodState, PodTemplate, PortConfig,
};

use super::{fits, node_info, schedule};
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

const MIB: i64 = 1 << 20;

/// A ready node with these labels and this capacity (4 CPUs).
fn node(f: &Fixture, id: &str, labels: &[(&str, &str)], memory_bytes: i64) {
    f.ready_node(id);
    f.edit_node(id, |n| {
        let spec = n.spec.as_mut().unwrap();
        for (k, v) in labels {
            spec.labels.insert(k.to_string(), v.to_string());
        }
        n.status.as_mut().unwrap().resources = Some(NodeResources {
            nano_cpus: 4_000_000_000,
            memory_bytes,
        });
    });
}

fn reserve(t: &mut PodTemplate, nano_cpus: i64, memory_bytes: i64) {
    let c = t.container.as_mut().unwrap();
    c.reserve_nano_cpus = nano_cpus;
    c.reserve_memory_bytes = memory_bytes;
}

fn placement(t: &mut PodTemplate, constraints: &[&str], spread: &[&str], max_per_node: u64) {
    t.placement = Some(Placement {
        constraints: constraints.iter().map(|c| c.to_string()).collect(),
        spread: spread.iter().map(|s| s.to_string()).collect(),
        max_replicas_per_node: max_per_node,
    });
}

/// Pods of `dep` per node id, in the order of `ids`; unplaced ones last.
fn counts(f: &Fixture, dep: &str, ids: &[&str]) -> Vec<usize> {
    let pods = f.pods(dep);
    let mut v: Vec<usize> = ids
        .iter()
        .map(|n| pods.iter().filter(|p| p.node_id == *n).count())
        .collect();
    v.push(pods.iter().filter(|p| p.node_id.is_empty()).count());
    v
}

#[test]
fn reservations_fill_nodes_up_to_their_memory() {
    let f = Fixture::new();
    node(&f, "n1", &[], 100 * MIB);
    node(&f, "n2", &[], 200 * MIB);
    let d = f.deployment("web", 5, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| reserve(t, 0, 64 * MIB));
    run_all(&f, 0);
    // 100 MiB holds one 64 MiB pod, 200 MiB three; the fifth waits.
    assert_eq!(counts(&f, &d, &["n1", "n2"]), vec![1, 3, 1]);
    let waiting = f
        .pods(&d)
        .into_iter()
        .find(|p| p.node_id.is_empty())
        .unwrap();
    assert_eq!(observed(&waiting), PodState::Pending);
    assert_eq!(
        waiting.scheduling_message,
        "no suitable node (2 nodes: insufficient memory (the pod reserves 64 MiB))"
    );
}

#[test]
fn pods_already_on_a_node_count_with_their_reservations() {
    let f = Fixture::new();
    node(&f, "n1", &[], 100 * MIB);
    let db = f.deployment("db", 1, policy(Condition::Any, 0, 0));
    set_template(&f, &db, |t| reserve(t, 3_500_000_000, 10 * MIB));
    run_all(&f, 0);
    assert_eq!(counts(&f, &db, &["n1"]), vec![1, 0]);
    // Memory is plenty, but db holds 3.5 of the 4 CPUs.
    let web = f.deployment("web", 1, policy(Condition::Any, 0, 0));
    set_template(&f, &web, |t| reserve(t, 1_000_000_000, 10 * MIB));
    run_all(&f, 0);
    let p = f.pods(&web).pop().unwrap();
    assert!(p.node_id.is_empty());
    assert_eq!(
        p.scheduling_message,
        "no suitable node (1 node: insufficient cpu (the pod reserves 1 CPU))"
    );
    // Limits claim nothing: a pod that only limits goes on.
    let limited = f.deployment("batch", 1, policy(Condition::Any, 0, 0));
    set_template(&f, &limited, |t| {
        let c = t.container.as_mut().unwrap();
        c.limit_nano_cpus = 4_000_000_000;
        c.limit_memory_bytes = 100 * MIB;
    });
    run_all(&f, 0);
    assert_eq!(counts(&f, &limited, &["n1"]), vec![1, 0]);
}

#[test]
fn finished_pods_free_their_reservations() {
    let f = Fixture::new();
    node(&f, "n1", &[], 100 * MIB);
    let db = f.deployment("db", 1, policy(Condition::None, 0, 0));
    set_template(&f, &db, |t| reserve(t, 0, 80 * MIB));
    run_all(&f, 0);
    let web = f.deployment("web", 1, policy(Condition::Any, 0, 0));
    set_template(&f, &web, |t| reserve(t, 0, 80 * MIB));
    run_all(&f, 0);
    assert!(f.pods(&web)[0].node_id.is_empty());
    let first = f.pods(&db).pop().unwrap();
    f.report(&first.id, PodState::Complete);
    run_all(&f, 1);
    assert_eq!(f.pods(&web)[0].node_id, "n1");
}

#[test]
fn a_node_that_reported_no_resources_takes_no_reserving_pod() {
    let f = Fixture::new();
    f.ready_node("n1");
    let d = f.deployment("web", 1, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| reserve(t, 500_000_000, 64 * MIB));
    run_all(&f, 0);
    assert_eq!(
        f.pods(&d)[0].scheduling_message,
        "no suitable node (1 node: insufficient cpu and memory (the pod reserves 0.5 CPU and 64 MiB))"
    );
}

#[test]
fn constraints_and_reservations_are_explained_together() {
    let f = Fixture::new();
    node(&f, "n1", &[], 1024 * MIB);
    node(&f, "n2", &[], 1024 * MIB);
    node(&f, "n3", &[("zone", "a")], 100 * MIB);
    let d = f.deployment("web", 1, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| {
        reserve(t, 0, 200 * MIB);
        placement(t, &["node.labels.zone==a"], &[], 0);
    });
    run_all(&f, 0);
    assert_eq!(
        f.pods(&d)[0].scheduling_message,
        "no suitable node (2 nodes: constraint node.labels.zone==a not met; \
         1 node: insufficient memory (the pod reserves 200 MiB))"
    );
}

#[test]
fn spread_balances_label_values_not_nodes() {
    let f = Fixture::new();
    node(&f, "n1", &[("zone", "a")], 0);
    node(&f, "n2", &[("zone", "a")], 0);
    node(&f, "n3", &[("zone", "b")], 0);
    let d = f.deployment("web", 4, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| placement(t, &[], &["node.labels.zone"], 0));
    run_all(&f, 0);
    // Two per zone: zone b has one node, so it takes both of b's.
    assert_eq!(counts(&f, &d, &["n1", "n2", "n3"]), vec![1, 1, 2, 0]);
}

#[test]
fn nodes_lacking_the_label_spread_as_one_group() {
    let f = Fixture::new();
    node(&f, "n1", &[("zone", "a")], 0);
    node(&f, "n2", &[("zone", "b")], 0);
    node(&f, "n3", &[], 0);
    node(&f, "n4", &[], 0);
    let d = f.deployment("web", 6, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| placement(t, &[], &["node.labels.zone"], 0));
    run_all(&f, 0);
    assert_eq!(
        counts(&f, &d, &["n1", "n2", "n3", "n4"]),
        vec![2, 2, 1, 1, 0]
    );
}

#[test]
fn spread_preferences_nest_in_order() {
    let f = Fixture::new();
    node(&f, "n1", &[("zone", "a"), ("rack", "1")], 0);
    node(&f, "n2", &[("zone", "a"), ("rack", "1")], 0);
    node(&f, "n3", &[("zone", "a"), ("rack", "2")], 0);
    node(&f, "n4", &[("zone", "b"), ("rack", "1")], 0);
    let d = f.deployment("web", 4, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| {
        placement(t, &[], &["node.labels.zone", "node.labels.rack"], 0)
    });
    run_all(&f, 0);
    // Zone a gets 2, one per rack; zone b's only node the other 2.
    assert_eq!(
        counts(&f, &d, &["n1", "n2", "n3", "n4"]),
        vec![1, 0, 1, 2, 0]
    );
}

#[test]
fn spread_counts_only_nodes_that_pass_the_constraints() {
    let f = Fixture::new();
    node(&f, "n1", &[("zone", "a"), ("disk", "ssd")], 0);
    node(&f, "n2", &[("zone", "a"), ("disk", "ssd")], 0);
    node(&f, "n3", &[("zone", "b"), ("disk", "ssd")], 0);
    node(&f, "n4", &[("zone", "b"), ("disk", "hdd")], 0);
    let d = f.deployment("web", 4, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| {
        placement(t, &["node.labels.disk==ssd"], &["node.labels.zone"], 0)
    });
    run_all(&f, 0);
    assert_eq!(
        counts(&f, &d, &["n1", "n2", "n3", "n4"]),
        vec![1, 1, 2, 0, 0]
    );
}

#[test]
fn max_replicas_per_node_caps_each_node_and_says_so() {
    let f = Fixture::new();
    node(&f, "n1", &[("zone", "a")], 0);
    node(&f, "n2", &[("zone", "b")], 0);
    let d = f.deployment("web", 5, policy(Condition::Any, 0, 0));
    set_template(&f, &d, |t| placement(t, &[], &["node.labels.zone"], 2));
    run_all(&f, 0);
    assert_eq!(counts(&f, &d, &["n1", "n2"]), vec![2, 2, 1]);
    let waiting = f
        .pods(&d)
        .into_iter()
        .find(|p| p.node_id.is_empty())
        .unwrap();
    assert_eq!(
        waiting.scheduling_message,
        "no suitable node (2 nodes: max replicas per node (2) reached)"
    );
}

#[test]
fn fits_holds_a_node_to_the_scheduler_limits() {
    let f = Fixture::new();
    node(&f, "n1", &[("zone", "a")], 100 * MIB);
    let db = f.deployment("db", 1, policy(Condition::Any, 0, 0));
    set_template(&f, &db, |t| reserve(t, 0, 60 * MIB));
    run_all(&f, 0);
    let mut t = f
        .store
        .read(|d| d.replica_sets["rs-db-1"].template.clone().unwrap());
    let mut info = f.store.read(|d| node_info(d, "n1")).unwrap();
    assert_eq!(info.reserved_memory_bytes, 60 * MIB);
    reserve(&mut t, 0, 30 * MIB);
    assert_eq!(fits(&info, &t, "dep-global"), Ok(()));
    // Counting it leaves 10 MiB: a second one does not fit.
    info.place("dep-global", Some(&t));
    assert_eq!(
        fits(&info, &t, "dep-global"),
        Err("insufficient memory (the pod reserves 30 MiB)".to_string())
    );
    reserve(&mut t, 0, 0);
    placement(&mut t, &["node.labels.zone==b"], &[], 0);
    assert_eq!(
        fits(&info, &t, "dep-global"),
        Err("constraint node.labels.zone==b not met".to_string())
    );
    t.placement = None;
    t.host_ports = vec![PortConfig {
        target_port: 80,
        published_port: 8080,
        publish_mode: PublishMode::Host as i32,
        ..Default::default()
    }];
    assert_eq!(fits(&info, &t, "dep-global"), Ok(()));
    info.place("dep-global", Some(&t));
    assert_eq!(
        fits(&info, &t, "dep-other"),
        Err("host-mode port 8080 already in use".to_string())
    );
    assert!(f.store.read(|d| node_info(d, "nope")).is_none());
}

/// The placer keeps the nodes a run of like pods may go to in a heap
/// instead of filtering every node for every pod; it must choose exactly
/// as the scan does, also when runs of different pods interleave, when
/// filters that count placements apply, and when nothing fits.
#[test]
fn the_heap_places_every_pod_where_the_scan_of_every_node_would() {
    use super::Placer;
    let f = Fixture::new();
    for i in 0..12 {
        let zone = if i % 3 == 0 { "a" } else { "b" };
        node(&f, &format!("n{i:02}"), &[("zone", zone)], 1024 * MIB);
    }
    f.edit_node("n04", |n| {
        n.spec.as_mut().unwrap().availability = NodeAvailability::Drain as i32
    });
    f.edit_node("n07", |n| {
        n.status.as_mut().unwrap().state = NodeState::Down as i32
    });
    // Pods already placed count: two deployments' worth.
    let web = f.deployment("web", 5, policy(Condition::Any, 0, 0));
    let api = f.deployment("api", 3, policy(Condition::Any, 0, 0));
    run_all(&f, 0);
    let template = |dep: &str| {
        let rs = format!("rs-{}-1", dep.trim_start_matches("dep-"));
        f.store
            .read(|d| d.replica_sets[&rs].template.clone().unwrap())
    };
    let plain = template(&web);
    let mut zoned = template(&api);
    placement(&mut zoned, &["node.labels.zone==a"], &[], 0);
    let mut capped = template(&api);
    placement(&mut capped, &[], &[], 2);
    let mut nowhere = template(&web);
    placement(&mut nowhere, &["node.labels.zone==c"], &[], 0);
    let kinds = [
        (&web, &plain),
        (&api, &zoned),
        (&api, &capped),
        (&web, &nowhere),
    ];

    let (mut heap, mut scan) = f.store.read(|d| (Placer::new(d), Placer::scanning(d)));
    // A fixed pseudo-random order with runs of one kind, like a pass.
    let mut seed: u64 = 7;
    let mut kind = 0;
    for step in 0..400 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if (seed >> 33).is_multiple_of(5) {
            kind = ((seed >> 40) % kinds.len() as u64) as usize;
        }
        let (dep, t) = kinds[kind];
        let a = heap.place(t, dep).map(|n| n.id.clone());
        let b = scan.place(t, dep).map(|n| n.id.clone());
        assert_eq!(a, b, "step {step}, kind {kind}");
    }
}
