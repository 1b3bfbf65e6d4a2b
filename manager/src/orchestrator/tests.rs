use shoal_proto::{restart_policy::Condition, PodState};

use super::replicated::reconcile;
use crate::objects::{observed, wanted};
use crate::testutil::{pods_written, policy, Fixture};

/// Runs reconcile passes until nothing is left to do (bounded).
fn settle(f: &Fixture, now: i64) {
    for _ in 0..10 {
        let r = f.store.read(|d| reconcile(d, now));
        if r.mutations.is_empty() {
            return;
        }
        f.apply(r.mutations);
    }
    panic!("orchestrator did not settle");
}

#[test]
fn creates_one_pod_per_slot() {
    let f = Fixture::new();
    let d = f.deployment("web", 3, policy(Condition::Any, 0, 0));
    settle(&f, 1_000);
    let pods = f.pods(&d);
    assert_eq!(
        pods.iter().map(|p| p.slot).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(pods
        .iter()
        .all(|p| wanted(p) && p.replica_set_id == "rs-web-1"));
}

#[test]
fn a_failed_pod_is_replaced_in_the_same_slot_after_the_delay() {
    let f = Fixture::new();
    let d = f.deployment("web", 2, policy(Condition::Any, 5_000, 0));
    settle(&f, 1_000);
    let victim = f.pods(&d).into_iter().find(|p| p.slot == 2).unwrap();
    f.report(&victim.id, PodState::Failed);
    settle(&f, 2_000);

    let slot2: Vec<_> = f.pods(&d).into_iter().filter(|p| p.slot == 2).collect();
    assert_eq!(slot2.len(), 2, "the failed pod stays as history");
    assert_eq!(slot2[0].id, victim.id);
    assert_eq!(slot2[0].desired_state(), PodState::Shutdown);
    assert_eq!(slot2[1].attempt, 1);
    assert!(wanted(&slot2[1]));
    assert_eq!(
        slot2[1].not_before, 7_000,
        "restart delay counts from the decision"
    );
}

#[test]
fn max_attempts_stops_restarting_and_says_why() {
    let f = Fixture::new();
    let d = f.deployment("job", 1, policy(Condition::OnFailure, 0, 2));
    settle(&f, 0);
    for round in 0..3 {
        let current = f.pods(&d).into_iter().find(wanted).unwrap();
        assert_eq!(current.attempt, round);
        f.report(&current.id, PodState::Failed);
        settle(&f, 10);
    }
    let pods = f.pods(&d);
    assert_eq!(pods.len(), 3, "initial pod plus 2 restarts, no more");
    let last = pods.last().unwrap();
    assert!(last
        .status
        .as_ref()
        .unwrap()
        .message
        .contains("max attempts 2"));
}

#[test]
fn on_failure_leaves_a_completed_pod_alone() {
    let f = Fixture::new();
    let d = f.deployment("job", 1, policy(Condition::OnFailure, 0, 0));
    settle(&f, 0);
    let p = f.pods(&d).pop().unwrap();
    f.report(&p.id, PodState::Complete);
    settle(&f, 10);
    assert_eq!(f.pods(&d).len(), 1);
}

#[test]
fn history_keeps_the_last_five_replaced_pods_per_slot() {
    let f = Fixture::new();
    let d = f.deployment("web", 1, policy(Condition::Any, 0, 0));
    settle(&f, 0);
    for _ in 0..8 {
        let current = f.pods(&d).into_iter().find(wanted).unwrap();
        f.report(&current.id, PodState::Failed);
        settle(&f, 10);
    }
    let pods = f.pods(&d);
    assert_eq!(pods.len(), 6, "one live pod and five replaced ones");
    assert_eq!(pods.iter().filter(|p| wanted(p)).count(), 1);
    assert_eq!(pods.first().unwrap().attempt, 3, "the oldest were trimmed");
}

#[test]
fn scaling_down_removes_the_highest_slots_once_stopped() {
    let f = Fixture::new();
    let d = f.deployment("web", 3, policy(Condition::Any, 0, 0));
    settle(&f, 0);
    for p in f.pods(&d) {
        // Placed and running, so removal has to wait for the worker.
        let mut p2 = p.clone();
        p2.node_id = "n1".into();
        f.apply(vec![crate::store::put(
            p2,
            crate::objects::version(&p.meta),
        )]);
        f.report(&p.id, PodState::Running);
    }
    let mut dep = f.store.read(|s| s.deployments[&d].clone());
    dep.spec.as_mut().unwrap().replicas = 1;
    let v = crate::objects::version(&dep.meta);
    f.apply(vec![crate::store::put(dep, v)]);
    settle(&f, 10);
    let pods = f.pods(&d);
    assert_eq!(pods.len(), 3, "still there until their containers stop");
    assert!(pods
        .iter()
        .filter(|p| p.slot > 1)
        .all(|p| p.desired_state() == PodState::Remove));
    for p in pods.iter().filter(|p| p.slot > 1) {
        f.report(&p.id, PodState::Shutdown);
    }
    settle(&f, 20);
    assert_eq!(f.pods(&d).len(), 1);
}

#[test]
fn pods_of_a_removed_deployment_are_removed() {
    let f = Fixture::new();
    let d = f.deployment("web", 2, policy(Condition::Any, 0, 0));
    settle(&f, 0);
    f.apply(vec![crate::store::delete(
        shoal_proto::ObjectKind::Deployment,
        d.clone(),
        0,
    )]);
    settle(&f, 10);
    assert!(f.pods(&d).is_empty(), "unplaced pods are deleted at once");
    assert!(
        f.store.read(|s| s.replica_sets.is_empty()),
        "the replica set goes with its last pod"
    );
}

#[test]
fn a_removed_deployment_keeps_its_replica_set_until_its_pods_stopped() {
    let f = Fixture::new();
    let d = f.deployment("web", 1, policy(Condition::Any, 0, 0));
    settle(&f, 0);
    let p = f.pods(&d).pop().unwrap();
    let mut placed = p.clone();
    placed.node_id = "n1".into();
    f.apply(vec![crate::store::put(
        placed,
        crate::objects::version(&p.meta),
    )]);
    f.report(&p.id, PodState::Running);
    f.apply(vec![crate::store::delete(
        shoal_proto::ObjectKind::Deployment,
        d.clone(),
        0,
    )]);
    settle(&f, 10);
    assert_eq!(f.pod(&p.id).desired_state(), PodState::Remove);
    assert_eq!(
        f.store.read(|s| s.replica_sets.len()),
        1,
        "the pod still needs its template"
    );
    f.report(&p.id, PodState::Shutdown);
    settle(&f, 20);
    assert!(f.pods(&d).is_empty());
    assert!(f.store.read(|s| s.replica_sets.is_empty()));
}

/// Live pods of a deployment by node.
fn live_nodes(f: &Fixture, d: &str) -> Vec<String> {
    let mut v: Vec<String> = f
        .pods(d)
        .into_iter()
        .filter(wanted)
        .map(|p| p.node_id)
        .collect();
    v.sort();
    v
}

#[test]
fn global_mode_runs_one_pod_on_every_eligible_node_and_follows_them() {
    use shoal_proto::{NodeAvailability, NodeState};
    let f = Fixture::new();
    f.ready_node("n1");
    f.ready_node("n2");
    let d = f.deployment("agent", 0, policy(Condition::Any, 0, 0));
    f.make_global(&d, &["node.labels.tier!=edge"]);
    settle(&f, 1_000);
    assert_eq!(live_nodes(&f, &d), vec!["n1", "n2"]);
    let pods = f.pods(&d);
    assert!(pods.iter().all(|p| p.slot == 0
        && p.node_epoch == 1
        && crate::objects::observed(p) == PodState::Assigned));

    // A node joining gets its pod.
    f.ready_node("n3");
    settle(&f, 2_000);
    assert_eq!(live_nodes(&f, &d), vec!["n1", "n2", "n3"]);

    // A label that breaks the constraint removes the pod; drain does too.
    f.edit_node("n2", |n| {
        n.spec
            .get_or_insert_with(Default::default)
            .labels
            .insert("tier".into(), "edge".into());
    });
    f.edit_node("n3", |n| {
        n.spec.get_or_insert_with(Default::default).availability = NodeAvailability::Drain as i32;
    });
    settle(&f, 3_000);
    assert_eq!(live_nodes(&f, &d), vec!["n1"]);

    // A paused node keeps its pod but a node that is not ready gets none.
    f.edit_node("n1", |n| {
        n.spec.get_or_insert_with(Default::default).availability = NodeAvailability::Pause as i32;
    });
    f.ready_node("n4");
    f.edit_node("n4", |n| {
        n.status.get_or_insert_with(Default::default).state = NodeState::Down as i32;
    });
    settle(&f, 4_000);
    assert_eq!(live_nodes(&f, &d), vec!["n1"]);
}

#[test]
fn a_failed_global_pod_restarts_on_its_own_node() {
    let f = Fixture::new();
    f.ready_node("n1");
    f.ready_node("n2");
    let d = f.deployment("agent", 0, policy(Condition::Any, 1_000, 0));
    f.make_global(&d, &[]);
    settle(&f, 1_000);
    let victim = f.pods(&d).into_iter().find(|p| p.node_id == "n2").unwrap();
    f.report(&victim.id, PodState::Failed);
    settle(&f, 2_000);
    let on_n2: Vec<_> = f
        .pods(&d)
        .into_iter()
        .filter(|p| p.node_id == "n2")
        .collect();
    assert_eq!(on_n2.len(), 2);
    let replacement = on_n2.iter().find(|p| wanted(p)).unwrap();
    assert_eq!((replacement.attempt, replacement.not_before), (1, 3_000));
    assert_eq!(live_nodes(&f, &d), vec!["n1", "n2"]);
}

/// Places every unassigned wanted pod of `d` on `node`, running.
fn place_all(f: &Fixture, d: &str, node: &str) {
    for p in f
        .pods(d)
        .into_iter()
        .filter(|p| wanted(p) && p.node_id.is_empty())
    {
        let mut p = p;
        let v = crate::objects::version(&p.meta);
        p.node_id = node.into();
        p.status = Some(shoal_proto::PodStatus {
            state: PodState::Running as i32,
            ..Default::default()
        });
        f.apply(vec![crate::store::put(p, v)]);
    }
}

#[test]
fn pods_of_a_node_that_goes_down_are_replaced_at_once_and_the_old_ones_shut_down() {
    let f = Fixture::new();
    let d = f.deployment("web", 2, policy(Condition::Any, 5_000, 0));
    settle(&f, 1_000);
    place_all(&f, &d, "n1");
    f.ready_node("n1");
    f.ready_node("n2");
    settle(&f, 1_500);
    assert_eq!(f.pods(&d).len(), 2, "nothing to do while n1 is up");

    f.edit_node("n1", |n| {
        n.status.as_mut().unwrap().state = shoal_proto::NodeState::Down as i32
    });
    settle(&f, 2_000);
    let pods = f.pods(&d);
    let old: Vec<_> = pods.iter().filter(|p| p.node_id == "n1").collect();
    let new: Vec<_> = pods.iter().filter(|p| wanted(p)).collect();
    assert_eq!(old.len(), 2);
    assert!(old.iter().all(|p| p.desired_state() == PodState::Shutdown));
    assert!(old[0]
        .status
        .as_ref()
        .unwrap()
        .message
        .contains("node n1 is down"));
    assert_eq!(new.len(), 2, "one new pod per slot");
    assert!(
        new.iter()
            .all(|p| p.node_id == "n2" && p.not_before <= 2_000),
        "replaced at once (no restart delay), placed on the node that is up: {new:?}"
    );

    // n1 comes back: its old pods stay shut down, nothing is duplicated.
    f.edit_node("n1", |n| {
        n.status.as_mut().unwrap().state = shoal_proto::NodeState::Ready as i32
    });
    settle(&f, 3_000);
    assert_eq!(f.pods(&d).iter().filter(|p| wanted(p)).count(), 2);
}

#[test]
fn draining_a_node_moves_its_pods_a_batch_at_a_time_but_pausing_keeps_them() {
    let f = Fixture::new();
    let d = f.deployment("web", 2, policy(Condition::Any, 0, 0));
    settle(&f, 1_000);
    place_all(&f, &d, "n1");
    f.ready_node("n1");
    f.ready_node("n2");
    f.edit_node("n1", |n| {
        n.spec.as_mut().unwrap().availability = shoal_proto::NodeAvailability::Pause as i32
    });
    settle(&f, 2_000);
    assert!(f.pods(&d).iter().all(|p| wanted(p) && p.node_id == "n1"));
    f.edit_node("n1", |n| {
        n.spec.as_mut().unwrap().availability = shoal_proto::NodeAvailability::Drain as i32
    });
    let on = |node: &str| {
        f.pods(&d)
            .into_iter()
            .filter(|p| wanted(p) && p.node_id == node)
            .collect::<Vec<_>>()
    };
    // Parallelism 1 (the default): one replacement at a time (placed on n2
    // in the write that creates it), started before its old pod stops.
    settle(&f, 3_000);
    assert_eq!(on("n2").len(), 1, "one replacement: {:?}", f.pods(&d));
    assert_eq!(on("n1").len(), 2, "the old pods keep serving");
    settle(&f, 3_500);
    assert_eq!(on("n1").len(), 2, "not before the replacement is ready");
    assert_eq!(on("n2").len(), 1, "no second replacement yet");
    let first = on("n2").pop().unwrap();
    f.report(&first.id, PodState::Running);
    settle(&f, 4_000);
    assert_eq!(on("n1").len(), 1, "the first old pod stopped once replaced");
    assert_eq!(on("n2").len(), 2, "then the next replacement");
    for p in on("n2") {
        f.report(&p.id, PodState::Running);
    }
    settle(&f, 5_000);
    assert!(on("n1").is_empty());
    assert_eq!(on("n2").len(), 2);
    assert!(f
        .pods(&d)
        .iter()
        .filter(|p| p.node_id == "n1")
        .all(|p| p.desired_state() == PodState::Shutdown));
}

#[test]
fn a_down_node_loses_its_pods_at_once() {
    let f = Fixture::new();
    f.ready_node("n1");
    let d = f.deployment("web", 3, policy(Condition::Any, 0, 0));
    settle(&f, 1_000);
    place_all(&f, &d, "n1");
    f.edit_node("n1", |n| {
        n.status.as_mut().unwrap().state = shoal_proto::NodeState::Down as i32
    });
    settle(&f, 2_000);
    let pods = f.pods(&d);
    assert_eq!(
        pods.iter()
            .filter(|p| wanted(p) && p.node_id.is_empty())
            .count(),
        3,
        "all replaced at once, whatever the parallelism"
    );
}

#[test]
fn a_lost_pod_with_restart_condition_none_is_not_replaced() {
    let f = Fixture::new();
    f.ready_node("n1");
    let d = f.deployment("once", 1, policy(Condition::None, 0, 0));
    settle(&f, 1_000);
    place_all(&f, &d, "n1");
    f.edit_node("n1", |n| {
        n.status.as_mut().unwrap().state = shoal_proto::NodeState::Down as i32
    });
    settle(&f, 2_000);
    let pods = f.pods(&d);
    assert_eq!(pods.len(), 1, "not replaced: {pods:?}");
    assert_eq!(pods[0].node_id, "n1");
}

#[test]
fn a_global_pod_goes_only_where_its_reservation_fits() {
    let f = Fixture::new();
    for n in ["n1", "n2"] {
        f.ready_node(n);
    }
    let gib = 1 << 30;
    f.edit_node("n1", |n| {
        n.status.as_mut().unwrap().resources = Some(shoal_proto::NodeResources {
            nano_cpus: 2_000_000_000,
            memory_bytes: gib,
        })
    });
    f.edit_node("n2", |n| {
        n.status.as_mut().unwrap().resources = Some(shoal_proto::NodeResources {
            nano_cpus: 2_000_000_000,
            memory_bytes: gib / 4,
        })
    });
    let d = f.deployment("agent", 0, policy(Condition::Any, 0, 0));
    f.make_global(&d, &[]);
    let mut dep = f.store.read(|s| s.deployments[&d].clone());
    let v = crate::objects::version(&dep.meta);
    dep.spec
        .as_mut()
        .unwrap()
        .template
        .as_mut()
        .unwrap()
        .container
        .get_or_insert_with(Default::default)
        .reserve_memory_bytes = gib / 2;
    f.apply(vec![crate::store::put(dep, v)]);
    settle(&f, 1_000);
    assert_eq!(live_nodes(&f, &d), vec!["n1"], "512 MiB fits n1 only");
}

#[test]
fn new_pods_are_placed_in_the_write_that_creates_them_by_the_schedulers_rules() {
    let f = Fixture::new();
    f.ready_node("n1");
    f.ready_node("n2");
    let d = f.deployment("web", 4, policy(Condition::Any, 0, 0));
    let pass = f.store.read(|s| reconcile(s, 1_000));
    let created: Vec<_> = pods_written(&pass.mutations)
        .into_iter()
        .filter(|(_, v)| *v == 0)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(created.len(), 4);
    assert!(created
        .iter()
        .all(|p| observed(p) == PodState::Assigned && p.node_epoch == 1));
    let on = |n: &str| created.iter().filter(|p| p.node_id == n).count();
    assert_eq!((on("n1"), on("n2")), (2, 2), "spread as the scheduler does");
    // Nothing is left for the scheduler.
    f.apply(pass.mutations);
    let scheduled = f.store.read(|s| crate::scheduler::schedule(s, 1_000));
    assert!(scheduled.mutations.is_empty(), "{:?}", scheduled.mutations);
    assert_eq!(f.pods(&d).len(), 4);
}

#[test]
fn a_new_pod_no_node_takes_is_left_to_the_scheduler_which_says_why() {
    let f = Fixture::new();
    f.ready_node("n1");
    f.edit_node("n1", |n| {
        n.spec.as_mut().unwrap().availability = shoal_proto::NodeAvailability::Pause as i32
    });
    let d = f.deployment("web", 1, policy(Condition::Any, 0, 0));
    settle(&f, 1_000);
    let pod = f.pods(&d).remove(0);
    assert!(pod.node_id.is_empty() && observed(&pod) == PodState::New);
    let scheduled = f.store.read(|s| crate::scheduler::schedule(s, 1_000));
    f.apply(scheduled.mutations);
    let pod = f.pod(&pod.id);
    assert_eq!(observed(&pod), PodState::Pending);
    assert!(
        pod.scheduling_message.contains("paused or drained"),
        "{}",
        pod.scheduling_message
    );
}

#[test]
fn a_pod_restarting_after_a_delay_is_left_to_the_scheduler() {
    let f = Fixture::new();
    f.ready_node("n1");
    let d = f.deployment("web", 1, policy(Condition::Any, 5_000, 0));
    settle(&f, 1_000);
    let first = f.pods(&d).remove(0);
    assert_eq!(first.node_id, "n1");
    f.report(&first.id, PodState::Failed);
    settle(&f, 2_000);
    let next = f.pods(&d).into_iter().find(wanted).unwrap();
    assert!(next.not_before > 2_000, "{}", next.not_before);
    assert!(
        next.node_id.is_empty(),
        "the scheduler places it when the delay ends"
    );
}

#[test]
fn a_new_pod_that_reserves_resources_is_left_to_the_scheduler() {
    // The scheduler is the one writer that hands out reservations, host
    // ports and per-node maximums: two controllers placing at once could
    // both give away the same memory.
    let f = Fixture::new();
    f.ready_node("n1");
    let d = f.deployment("db", 1, policy(Condition::Any, 0, 0));
    let mut rs = f.store.read(|s| s.replica_sets["rs-db-1"].clone());
    let v = crate::objects::version(&rs.meta);
    rs.template
        .as_mut()
        .unwrap()
        .container
        .as_mut()
        .unwrap()
        .reserve_memory_bytes = 64 << 20;
    f.apply(vec![crate::store::put(rs, v)]);
    settle(&f, 1_000);
    let pod = f.pods(&d).remove(0);
    assert!(pod.node_id.is_empty(), "{pod:?}");
}

#[test]
fn a_large_scale_up_creates_a_bounded_number_of_pods_per_pass_and_the_rest_after() {
    use super::replicated::MAX_CREATES_PER_PASS;
    let f = Fixture::new();
    let extra = 7;
    let d = f.deployment(
        "big",
        (MAX_CREATES_PER_PASS + extra) as u64,
        policy(Condition::Any, 0, 0),
    );
    let first = f.store.read(|d| reconcile(d, 1_000));
    assert_eq!(first.mutations.len(), MAX_CREATES_PER_PASS);
    assert_eq!(first.deferred, extra);
    f.apply(first.mutations);
    let second = f.store.read(|d| reconcile(d, 1_000));
    assert_eq!(second.mutations.len(), extra);
    assert_eq!(second.deferred, 0);
    f.apply(second.mutations);
    let mut slots: Vec<u64> = f.pods(&d).iter().map(|p| p.slot).collect();
    slots.sort_unstable();
    assert_eq!(
        slots,
        (1..=(MAX_CREATES_PER_PASS + extra) as u64).collect::<Vec<_>>()
    );
}
