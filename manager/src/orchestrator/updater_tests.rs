//! The rolling updater against a simulated node, with a fake clock: each
//! tick runs the orchestrator until it settles, then lets the "node" stop
//! what must stop and start what must run (failing pods of a broken image).

use shoal_proto::{
    restart_policy::Condition, update_config::FailureAction, update_config::Order, PodState,
    UpdateConfig, UpdateState,
};

use super::replicated::reconcile;
use crate::controlapi::{rollout, spec::spec_of};
use crate::objects::{observed, version, wanted};
use crate::store::put;
use crate::testutil::{pods_written, policy, Fixture};

fn cfg(
    parallelism: u64,
    order: Order,
    monitor_ms: u64,
    delay_ms: u64,
    action: FailureAction,
) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        delay_ms,
        failure_action: action as i32,
        monitor_ms,
        max_failure_ratio: 0.0,
        order: order as i32,
    }
}

struct Sim {
    f: Fixture,
    dep: String,
    now: i64,
}

impl Sim {
    fn new(replicas: u64, update: UpdateConfig) -> Sim {
        let f = Fixture::new();
        let dep = f.deployment("web", replicas, policy(Condition::Any, 0, 0));
        let mut d = f.store.read(|s| s.deployments[&dep].clone());
        let v = version(&d.meta);
        let spec = d.spec.as_mut().unwrap();
        spec.update_config = Some(update);
        spec.rollback_config = Some(cfg(0, Order::StopFirst, 0, 0, FailureAction::Pause));
        f.apply(vec![put(d, v)]);
        let mut sim = Sim { f, dep, now: 1_000 };
        sim.tick();
        sim
    }

    /// The same, with the pods' node "n1" in the store and ready, so that
    /// the orchestrator can place pods on it.
    fn on_ready_node(replicas: u64, update: UpdateConfig) -> Sim {
        let sim = Sim::new(replicas, update);
        sim.f.ready_node("n1");
        sim
    }

    /// One orchestrator pass, applied: the pods it created and the pods
    /// it shut down.
    fn pass(&self) -> (Vec<shoal_proto::Pod>, Vec<shoal_proto::Pod>) {
        let r = self.f.store.read(|d| reconcile(d, self.now));
        let written = pods_written(&r.mutations);
        self.f.apply(r.mutations);
        let created = written.iter().filter(|(_, v)| *v == 0);
        let stopped = written
            .iter()
            .filter(|(p, v)| *v != 0 && p.desired_state() == PodState::Shutdown);
        (
            created.map(|(p, _)| p.clone()).collect(),
            stopped.map(|(p, _)| p.clone()).collect(),
        )
    }

    fn settle(&self) {
        for _ in 0..20 {
            let r = self.f.store.read(|d| reconcile(d, self.now));
            if r.mutations.is_empty() {
                return;
            }
            self.f.apply(r.mutations);
        }
        panic!("orchestrator did not settle");
    }

    /// The node's part: stop what is unwanted, run what is wanted.
    fn node(&self) {
        for p in self.f.pods(&self.dep) {
            let state = observed(&p);
            if !wanted(&p) {
                if !state.is_terminal() && !p.node_id.is_empty() {
                    self.f.report(&p.id, PodState::Shutdown);
                }
                continue;
            }
            if state.is_terminal() || state == PodState::Running {
                continue;
            }
            let mut placed = p.clone();
            placed.node_id = "n1".into();
            self.f.apply(vec![put(placed, version(&p.meta))]);
            let image = self.f.store.read(|d| {
                d.replica_sets[&p.replica_set_id]
                    .template
                    .clone()
                    .unwrap()
                    .container
                    .unwrap()
                    .image
            });
            let outcome = if image.contains("broken") {
                PodState::Failed
            } else {
                PodState::Running
            };
            self.f.report(&p.id, outcome);
            let mut p2 = self.f.pod(&p.id);
            let v = version(&p2.meta);
            p2.status.as_mut().unwrap().timestamp = self.now;
            self.f.apply(vec![put(p2, v)]);
        }
    }

    fn tick(&mut self) {
        self.settle();
        self.node();
        self.settle();
    }

    fn update_image(&mut self, image: &str) {
        let d = self.f.store.read(|s| s.deployments[&self.dep].clone());
        let mut spec = self
            .f
            .store
            .read(|s| spec_of(&d, s.service_of_deployment(&d.id)));
        spec.container.as_mut().unwrap().image = image.into();
        let m = self
            .f
            .store
            .read(|s| rollout::update(s, &d, spec, false, self.now))
            .unwrap();
        self.f.apply(m);
    }

    fn state(&self) -> (UpdateState, String) {
        let st = self
            .f
            .store
            .read(|s| s.deployments[&self.dep].status.clone().unwrap());
        (st.update_state(), st.update_message)
    }

    /// Live pods per image.
    fn live_images(&self) -> Vec<String> {
        self.f
            .pods(&self.dep)
            .into_iter()
            .filter(wanted)
            .map(|p| {
                self.f.store.read(|d| {
                    d.replica_sets[&p.replica_set_id]
                        .template
                        .clone()
                        .unwrap()
                        .container
                        .unwrap()
                        .image
                })
            })
            .collect()
    }

    fn running_count(&self) -> usize {
        self.f
            .pods(&self.dep)
            .iter()
            .filter(|p| wanted(p) && observed(p) == PodState::Running)
            .count()
    }
}

#[test]
fn stop_first_moves_one_slot_at_a_time_and_completes() {
    let mut sim = Sim::new(3, cfg(1, Order::StopFirst, 0, 0, FailureAction::Pause));
    sim.update_image("img:v2");
    assert_eq!(sim.state().0, UpdateState::Updating);
    let mut seen_v2 = 0;
    for _ in 0..20 {
        sim.now += 100;
        sim.tick();
        let imgs = sim.live_images();
        let v2 = imgs.iter().filter(|i| *i == "img:v2").count();
        assert!(
            v2 <= seen_v2 + 1,
            "more than one slot moved in a step: {imgs:?}"
        );
        assert!(
            sim.running_count() >= 2,
            "stop-first with parallelism 1 stops one pod at most"
        );
        seen_v2 = v2;
        if sim.state().0 == UpdateState::Completed {
            break;
        }
    }
    assert_eq!(sim.state().0, UpdateState::Completed);
    assert_eq!(sim.live_images(), vec!["img:v2"; 3]);
}

#[test]
fn start_first_never_drops_below_the_replica_count() {
    let mut sim = Sim::new(3, cfg(1, Order::StartFirst, 0, 0, FailureAction::Pause));
    sim.update_image("img:v2");
    for _ in 0..20 {
        sim.now += 100;
        sim.settle();
        assert!(
            sim.running_count() >= 3,
            "a running pod was stopped before its replacement ran"
        );
        sim.node();
        sim.settle();
        if sim.state().0 == UpdateState::Completed {
            break;
        }
    }
    assert_eq!(sim.state().0, UpdateState::Completed);
    assert_eq!(sim.live_images(), vec!["img:v2"; 3]);
}

#[test]
fn batches_wait_for_the_delay_and_the_update_completes_after_monitor() {
    let mut sim = Sim::new(
        4,
        cfg(2, Order::StopFirst, 5_000, 10_000, FailureAction::Pause),
    );
    sim.update_image("img:v2");
    let t0 = sim.now;
    sim.tick();
    sim.tick();
    let v2 = |s: &Sim| s.live_images().iter().filter(|i| *i == "img:v2").count();
    assert_eq!(v2(&sim), 2, "the first batch is two slots");
    // Ready at t0; the next batch `delay` (10 s) later. Monitoring (5 s)
    // does not hold it back, as in Swarm.
    sim.now = t0 + 9_999;
    sim.tick();
    assert_eq!(v2(&sim), 2, "the second batch started before the delay");
    let r = sim.f.store.read(|d| reconcile(d, sim.now));
    assert_eq!(
        r.wake_at,
        Some(t0 + 10_000),
        "the updater asks to be woken then"
    );
    sim.now = t0 + 10_000;
    sim.tick();
    sim.tick();
    assert_eq!(v2(&sim), 4);
    // Every slot is on v2, but the last batch is still monitored.
    sim.tick();
    assert_eq!(sim.state().0, UpdateState::Updating);
    sim.now += 5_000;
    sim.tick();
    assert_eq!(sim.state().0, UpdateState::Completed);
}

#[test]
fn a_pod_failing_while_monitored_pauses_even_after_the_next_batch_started() {
    let mut sim = Sim::new(4, cfg(2, Order::StopFirst, 5_000, 0, FailureAction::Pause));
    sim.update_image("img:v2");
    sim.tick();
    sim.tick();
    sim.tick();
    // No delay: the second batch starts as soon as the first is ready,
    // while the first is still monitored.
    let v2 = sim.live_images().iter().filter(|i| *i == "img:v2").count();
    assert_eq!(v2, 4, "the second batch waited for the monitor period");
    let first_batch: Vec<_> = sim.f.store.read(|d| {
        d.pods
            .values()
            .filter(|p| wanted(p))
            .cloned()
            .collect::<Vec<_>>()
    });
    let v2_pod = first_batch
        .iter()
        .find(|p| p.replica_set_id != "rs-web-1")
        .expect("a v2 pod")
        .id
        .clone();
    sim.now += 1_000;
    sim.f.report(&v2_pod, PodState::Failed);
    sim.tick();
    assert_eq!(sim.state().0, UpdateState::Paused, "{:?}", sim.state());
}

#[test]
fn a_failing_update_pauses_with_the_reason() {
    let mut sim = Sim::new(3, cfg(1, Order::StopFirst, 0, 0, FailureAction::Pause));
    sim.update_image("img:broken");
    for _ in 0..5 {
        sim.now += 100;
        sim.tick();
    }
    let (state, message) = sim.state();
    assert_eq!(state, UpdateState::Paused);
    assert!(
        message.contains("update paused due to failure: pod web."),
        "{message}"
    );
    let imgs = sim.live_images();
    assert_eq!(
        imgs.iter().filter(|i| *i == "img:v1").count(),
        2,
        "{imgs:?}"
    );
    // Paused: nothing more moves.
    for _ in 0..5 {
        sim.now += 100;
        sim.tick();
    }
    assert_eq!(
        sim.live_images().iter().filter(|i| *i == "img:v1").count(),
        2
    );
}

#[test]
fn a_failing_update_rolls_back_automatically() {
    let mut sim = Sim::new(3, cfg(1, Order::StopFirst, 0, 0, FailureAction::Rollback));
    sim.update_image("img:broken");
    let mut saw_rollback = false;
    for _ in 0..20 {
        sim.now += 100;
        sim.tick();
        saw_rollback |= sim.state().0 == UpdateState::RollbackStarted;
        if sim.state().0 == UpdateState::RollbackCompleted {
            break;
        }
    }
    assert!(saw_rollback);
    let (state, message) = sim.state();
    assert_eq!(state, UpdateState::RollbackCompleted);
    assert!(
        message.contains("update rolled back: pod web."),
        "{message}"
    );
    assert_eq!(sim.live_images(), vec!["img:v1"; 3]);
    let spec_image = sim.f.store.read(|d| {
        let spec = d.deployments[&sim.dep].spec.clone().unwrap();
        spec.template.unwrap().container.unwrap().image
    });
    assert_eq!(
        spec_image, "img:v1",
        "the service's spec follows the rollback"
    );
}

#[test]
fn a_paused_rollout_resumes_where_it_stopped() {
    let mut sim = Sim::new(3, cfg(1, Order::StopFirst, 0, 0, FailureAction::Pause));
    sim.update_image("img:v2");
    sim.tick();
    let d = sim.f.store.read(|s| s.deployments[&sim.dep].clone());
    sim.f
        .apply(rollout::pause_or_resume(&d, true, sim.now).unwrap());
    let before = sim.live_images();
    for _ in 0..5 {
        sim.now += 100;
        sim.tick();
    }
    assert_eq!(sim.state().0, UpdateState::Paused);
    let mut after = sim.live_images();
    let mut b = before.clone();
    after.sort();
    b.sort();
    assert_eq!(after, b, "pods moved while paused");
    let d = sim.f.store.read(|s| s.deployments[&sim.dep].clone());
    sim.f
        .apply(rollout::pause_or_resume(&d, false, sim.now).unwrap());
    for _ in 0..20 {
        sim.now += 100;
        sim.tick();
    }
    assert_eq!(sim.state().0, UpdateState::Completed);
    assert_eq!(sim.live_images(), vec!["img:v2"; 3]);
}

#[test]
fn a_new_change_during_a_rollout_supersedes_it() {
    let mut sim = Sim::new(4, cfg(1, Order::StopFirst, 0, 0, FailureAction::Pause));
    sim.update_image("img:v2");
    sim.tick();
    sim.tick();
    sim.update_image("img:v3");
    for _ in 0..30 {
        sim.now += 100;
        sim.tick();
    }
    assert_eq!(sim.state().0, UpdateState::Completed);
    assert_eq!(sim.live_images(), vec!["img:v3"; 4]);
    let revisions: Vec<u64> = sim.f.store.read(|d| {
        d.replica_sets_of_deployment(&sim.dep)
            .iter()
            .map(|r| r.revision)
            .collect()
    });
    assert_eq!(revisions, vec![1, 2, 3]);
}

#[test]
fn rollback_returns_to_the_previous_revision_and_history_is_trimmed() {
    let mut sim = Sim::new(2, cfg(0, Order::StopFirst, 0, 0, FailureAction::Pause));
    for i in 2..=13 {
        sim.update_image(&format!("img:v{i}"));
        for _ in 0..6 {
            sim.now += 100;
            sim.tick();
        }
        assert_eq!(sim.state().0, UpdateState::Completed, "v{i}");
    }
    let kept = sim
        .f
        .store
        .read(|d| d.replica_sets_of_deployment(&sim.dep).len());
    assert_eq!(kept, 10, "the revision history limit");
    let d = sim.f.store.read(|s| s.deployments[&sim.dep].clone());
    let m = sim
        .f
        .store
        .read(|s| rollout::rollback(s, &d, 0, sim.now))
        .unwrap();
    sim.f.apply(m);
    for _ in 0..6 {
        sim.now += 100;
        sim.tick();
    }
    assert_eq!(sim.state().0, UpdateState::RollbackCompleted);
    assert_eq!(sim.live_images(), vec!["img:v12"; 2]);
    let d = sim.f.store.read(|s| s.deployments[&sim.dep].clone());
    let err = sim
        .f
        .store
        .read(|s| rollout::rollback(s, &d, 1, sim.now))
        .unwrap_err();
    assert!(err.contains("has no revision 1"), "{err}");
}

#[test]
fn a_stop_first_replacement_is_created_on_the_old_pods_node_in_the_write_that_stops_it() {
    let mut sim = Sim::on_ready_node(3, cfg(1, Order::StopFirst, 0, 0, FailureAction::Pause));
    sim.update_image("img:v2");
    let (created, stopped) = sim.pass();
    assert_eq!(stopped.len(), 1, "parallelism 1");
    assert_eq!(created.len(), 1, "the replacement rides in the same write");
    let (old, new) = (&stopped[0], &created[0]);
    assert_eq!(new.slot, old.slot);
    assert_eq!(new.node_id, "n1");
    assert_eq!(new.node_epoch, 1);
    assert_eq!(observed(new), PodState::Assigned);
    assert_ne!(new.replica_set_id, old.replica_set_id);
    // The old pod still runs (its node starts the new one once it has
    // stopped): nothing else happens to the slot meanwhile.
    assert_eq!(observed(&sim.f.pod(&old.id)), PodState::Running);
    assert_eq!(sim.pass(), (vec![], vec![]));

    for _ in 0..20 {
        sim.now += 100;
        sim.tick();
        if sim.state().0 == UpdateState::Completed {
            break;
        }
    }
    assert_eq!(sim.state().0, UpdateState::Completed);
    assert_eq!(sim.live_images(), vec!["img:v2"; 3]);
    assert_eq!(
        sim.f.pods(&sim.dep).len(),
        6,
        "one new pod per slot, none created twice"
    );
}

#[test]
fn a_replacement_the_old_pods_node_does_not_take_waits_for_the_old_pod_to_stop() {
    let mut sim = Sim::on_ready_node(2, cfg(1, Order::StopFirst, 0, 0, FailureAction::Pause));
    sim.f.edit_node("n1", |n| {
        n.spec.as_mut().unwrap().availability = shoal_proto::NodeAvailability::Pause as i32
    });
    sim.update_image("img:v2");
    let (created, stopped) = sim.pass();
    assert_eq!((created.len(), stopped.len()), (0, 1));
    // Once the old pod has stopped, the slot gets its new pod the usual way
    // (unplaced here: the paused node takes none).
    sim.f.report(&stopped[0].id, PodState::Shutdown);
    let (created, _) = sim.pass();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].slot, stopped[0].slot);
    assert!(created[0].node_id.is_empty());
}

#[test]
fn the_old_pods_host_port_and_reservation_are_freed_for_its_replacement() {
    let mut sim = Sim::on_ready_node(1, cfg(1, Order::StopFirst, 0, 0, FailureAction::Pause));
    let gib: i64 = 1 << 30;
    sim.f.edit_node("n1", |n| {
        n.status.as_mut().unwrap().resources = Some(shoal_proto::NodeResources {
            nano_cpus: 2_000_000_000,
            memory_bytes: gib,
        })
    });
    // The running revision binds host port 8080 and reserves 600 MiB: the
    // node holds one such pod, not two.
    let edit = |t: &mut shoal_proto::PodTemplate| {
        t.host_ports = vec![shoal_proto::PortConfig {
            published_port: 8080,
            target_port: 80,
            publish_mode: shoal_proto::port_config::PublishMode::Host as i32,
            ..Default::default()
        }];
        t.container.as_mut().unwrap().reserve_memory_bytes = 600 << 20;
    };
    let mut d = sim.f.store.read(|s| s.deployments[&sim.dep].clone());
    let mut rs = sim.f.store.read(|s| s.replica_sets["rs-web-1"].clone());
    let (dv, rv) = (version(&d.meta), version(&rs.meta));
    edit(d.spec.as_mut().unwrap().template.as_mut().unwrap());
    edit(rs.template.as_mut().unwrap());
    sim.f.apply(vec![put(d, dv), put(rs, rv)]);

    sim.update_image("img:v2");
    let (created, stopped) = sim.pass();
    assert_eq!(stopped.len(), 1);
    assert_eq!(
        created
            .iter()
            .map(|p| p.node_id.as_str())
            .collect::<Vec<_>>(),
        vec!["n1"],
        "the old pod's port and memory count as freed"
    );
}

#[test]
fn a_replacement_that_claims_more_than_the_old_pod_waits_for_it_to_stop() {
    let sim = Sim::on_ready_node(1, cfg(1, Order::StopFirst, 0, 0, FailureAction::Pause));
    sim.f.edit_node("n1", |n| {
        n.status.as_mut().unwrap().resources = Some(shoal_proto::NodeResources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 1 << 30,
        })
    });
    // The new revision reserves memory the old one did not: the scheduler,
    // the one writer of reservations, places it once the old pod stopped.
    let d = sim.f.store.read(|s| s.deployments[&sim.dep].clone());
    let mut spec = sim
        .f
        .store
        .read(|s| spec_of(&d, s.service_of_deployment(&d.id)));
    spec.container.as_mut().unwrap().reserve_memory_bytes = 64 << 20;
    let m = sim
        .f
        .store
        .read(|s| rollout::update(s, &d, spec, false, sim.now))
        .unwrap();
    sim.f.apply(m);
    let (created, stopped) = sim.pass();
    assert_eq!((created.len(), stopped.len()), (0, 1));
}

#[test]
fn a_replacement_goes_where_the_spread_wants_it_so_a_forced_update_rebalances() {
    let mut sim = Sim::on_ready_node(2, cfg(1, Order::StopFirst, 0, 0, FailureAction::Pause));
    // A node joins: the spread prefers it for the next pod of the service.
    sim.f.ready_node("n2");
    sim.update_image("img:v2");
    let (created, stopped) = sim.pass();
    assert_eq!((created.len(), stopped.len()), (0, 1), "not kept on n1");
    sim.f.report(&stopped[0].id, PodState::Shutdown);
    let (created, _) = sim.pass();
    assert_eq!(
        created
            .iter()
            .map(|p| p.node_id.as_str())
            .collect::<Vec<_>>(),
        vec!["n2"]
    );
}
