use shoal_proto::defaults::BATCH_FORMAT;
use shoal_proto::port_config::PublishMode;
use shoal_proto::{object, Batch, Meta, MutationOutcome, Object, ObjectKind, Pod};

use super::*;

fn pod(id: &str, version: u64) -> Object {
    Object {
        kind: Some(object::Kind::Pod(Pod {
            id: id.into(),
            meta: Some(Meta {
                version,
                ..Default::default()
            }),
            slot: 1,
            ..Default::default()
        })),
    }
}

fn batch(atomic: bool, mutations: Vec<shoal_proto::Mutation>) -> Batch {
    Batch {
        format: BATCH_FORMAT,
        mutations,
        atomic,
    }
}

fn outcomes(r: &BatchResult) -> Vec<MutationOutcome> {
    r.outcomes
        .iter()
        .map(|o| MutationOutcome::try_from(*o).unwrap())
        .collect()
}

#[test]
fn create_stamps_the_raft_index_as_version() {
    let store = Store::new();
    let r = store.apply(7, &batch(true, vec![put(pod("p1", 0), 0)]));
    assert_eq!(outcomes(&r), vec![MutationOutcome::Applied]);
    let v = store.read(|d| d.pods["p1"].meta.as_ref().unwrap().version);
    assert_eq!(v, 7);
    assert_eq!(store.read(|d| d.last_applied), 7);
}

#[test]
fn a_stale_update_fails_instead_of_overwriting() {
    let store = Store::new();
    store.apply(1, &batch(true, vec![put(pod("p1", 0), 0)]));
    store.apply(2, &batch(true, vec![put(pod("p1", 1), 1)]));
    // A writer that read version 1 and writes after version 2 landed.
    let r = store.apply(3, &batch(true, vec![put(pod("p1", 1), 1)]));
    assert_eq!(outcomes(&r), vec![MutationOutcome::Conflict]);
    assert_eq!(
        store.read(|d| d.pods["p1"].meta.as_ref().unwrap().version),
        2
    );
}

#[test]
fn create_of_an_existing_object_reports_exists() {
    let store = Store::new();
    store.apply(1, &batch(true, vec![put(pod("p1", 0), 0)]));
    let r = store.apply(2, &batch(false, vec![put(pod("p1", 0), 0)]));
    assert_eq!(outcomes(&r), vec![MutationOutcome::Exists]);
}

#[test]
fn an_atomic_batch_applies_all_or_nothing() {
    let store = Store::new();
    store.apply(1, &batch(true, vec![put(pod("p1", 0), 0)]));
    let r = store.apply(
        2,
        &batch(
            true,
            vec![
                put(pod("p2", 0), 0),
                put(pod("p1", 0), 99),
                put(pod("p3", 0), 0),
            ],
        ),
    );
    assert_eq!(
        outcomes(&r),
        vec![
            MutationOutcome::Skipped,
            MutationOutcome::Conflict,
            MutationOutcome::Skipped
        ]
    );
    assert_eq!(store.read(|d| d.pods.len()), 1);
}

#[test]
fn a_non_atomic_batch_applies_what_passes() {
    let store = Store::new();
    store.apply(1, &batch(true, vec![put(pod("p1", 0), 0)]));
    let r = store.apply(
        2,
        &batch(false, vec![put(pod("p2", 0), 0), put(pod("p1", 0), 99)]),
    );
    assert_eq!(
        outcomes(&r),
        vec![MutationOutcome::Applied, MutationOutcome::Conflict]
    );
    assert_eq!(store.read(|d| d.pods.len()), 2);
}

#[test]
fn mutations_in_one_atomic_batch_see_each_other() {
    let store = Store::new();
    // Create then update (expecting the version the create gives) then delete.
    let r = store.apply(
        5,
        &batch(
            true,
            vec![
                put(pod("p1", 0), 0),
                put(pod("p1", 5), 5),
                delete(ObjectKind::Pod, "p1", 5),
            ],
        ),
    );
    assert!(outcomes(&r).iter().all(|o| *o == MutationOutcome::Applied));
    assert!(store.read(|d| d.pods.is_empty()));
}

#[test]
fn forced_writes_skip_the_version_check() {
    let store = Store::new();
    store.apply(1, &batch(true, vec![put(pod("p1", 0), 0)]));
    store.apply(2, &batch(true, vec![put(pod("p1", 1), 1)]));
    let r = store.apply(3, &batch(false, vec![put_forced(pod("p1", 1))]));
    assert_eq!(outcomes(&r), vec![MutationOutcome::Applied]);
}

#[test]
fn delete_of_a_missing_object_reports_not_found() {
    let store = Store::new();
    let r = store.apply(1, &batch(false, vec![delete(ObjectKind::Pod, "nope", 0)]));
    assert_eq!(outcomes(&r), vec![MutationOutcome::NotFound]);
}

#[test]
fn an_unknown_batch_format_is_skipped_not_applied() {
    let store = Store::new();
    let mut b = batch(true, vec![put(pod("p1", 0), 0)]);
    b.format = BATCH_FORMAT + 1;
    let r = store.apply(1, &b);
    assert_eq!(outcomes(&r), vec![MutationOutcome::Skipped]);
    assert!(store.read(|d| d.pods.is_empty()));
}

#[test]
fn snapshot_and_restore_round_trip() {
    let store = Store::new();
    store.apply(
        3,
        &batch(true, vec![put(pod("p1", 0), 0), put(pod("p2", 0), 0)]),
    );
    let snap = store.snapshot();
    let other = Store::new();
    let rx = other.subscribe();
    other.restore(snap, 3);
    assert!(rx.has_changed().unwrap());
    assert_eq!(other.read(|d| d.pods.len()), 2);
    assert_eq!(other.read(|d| d.last_applied), 3);
}

#[test]
fn secrets_and_configs_are_stored_versioned_deleted_and_snapshotted() {
    let store = Store::new();
    let spec = |name: &str| {
        Some(shoal_proto::FileObjectSpec {
            name: name.into(),
            data: b"sealed".to_vec(),
            ..Default::default()
        })
    };
    let secret = Secret {
        id: "s1".into(),
        meta: None,
        spec: spec("pw"),
    };
    let config = Config {
        id: "c1".into(),
        meta: None,
        spec: spec("conf"),
    };
    let r = store.apply(4, &batch(true, vec![put(secret, 0), put(config, 0)]));
    assert_eq!(outcomes(&r), vec![MutationOutcome::Applied; 2]);
    assert_eq!(
        store.read(|d| d.secret_by_name("pw").map(|s| s.meta.unwrap().version)),
        Some(4)
    );
    assert!(store.read(|d| d.config_by_name("conf").is_some()));

    let other = Store::new();
    other.restore(store.snapshot(), 4);
    assert_eq!(other.read(|d| (d.secrets.len(), d.configs.len())), (1, 1));

    let r = store.apply(
        5,
        &batch(
            true,
            vec![
                delete(ObjectKind::Secret, "s1", 4),
                delete(ObjectKind::Config, "c1", 4),
            ],
        ),
    );
    assert_eq!(outcomes(&r), vec![MutationOutcome::Applied; 2]);
    assert!(store.read(|d| d.secrets.is_empty() && d.configs.is_empty()));
}

fn placed(id: &str, node: &str) -> Object {
    Object {
        kind: Some(object::Kind::Pod(Pod {
            id: id.into(),
            node_id: node.into(),
            slot: 1,
            ..Default::default()
        })),
    }
}

fn on(d: &StoreData, node: &str) -> Vec<String> {
    d.pods_on_node(node).map(|p| p.id.clone()).collect()
}

#[test]
fn pods_on_a_node_follow_placements_moves_deletes_and_restores() {
    let store = Store::new();
    store.apply(
        1,
        &batch(
            false,
            vec![
                put(placed("p1", "n1"), 0),
                put(placed("p2", "n1"), 0),
                put(placed("p3", ""), 0),
            ],
        ),
    );
    store.read(|d| {
        assert_eq!(on(d, "n1"), vec!["p1", "p2"]);
        assert!(on(d, "").is_empty(), "an unplaced pod is on no node");
    });
    // p2 moves to n2, p3 is placed there, p1 is deleted.
    store.apply(
        2,
        &batch(
            false,
            vec![
                put(placed("p2", "n2"), 1),
                put(placed("p3", "n2"), 1),
                delete(ObjectKind::Pod, "p1", 0),
            ],
        ),
    );
    store.read(|d| {
        assert!(on(d, "n1").is_empty());
        assert_eq!(on(d, "n2"), vec!["p2", "p3"]);
    });
    // A failed write leaves the index alone.
    store.apply(3, &batch(true, vec![put(placed("p2", "n3"), 1)]));
    store.read(|d| assert!(on(d, "n3").is_empty()));

    let restored = Store::new();
    restored.restore(store.snapshot(), 3);
    restored.read(|d| assert_eq!(on(d, "n2"), vec!["p2", "p3"]));

    // By hand, as tests fill a StoreData.
    let mut d = StoreData::default();
    d.put_pod(Pod {
        id: "p9".into(),
        node_id: "n9".into(),
        ..Default::default()
    });
    assert_eq!(on(&d, "n9"), vec!["p9"]);
    assert_eq!(d.remove_pod("p9").map(|p| p.id), Some("p9".into()));
    assert!(on(&d, "n9").is_empty());
}

fn marks(store: &Store) -> (u64, u64, u64, u64, u64) {
    store.read(|d| {
        (
            d.pods_changed_on("n1"),
            d.pods_changed_on("n2"),
            d.pods_changed_on("n3"),
            d.pods_changed(),
            d.others_changed(),
        )
    })
}

#[test]
fn change_marks_move_only_for_what_changed() {
    let store = Store::new();
    store.apply(
        1,
        &batch(
            false,
            vec![put(placed("p1", "n1"), 0), put(placed("p2", "n2"), 0)],
        ),
    );
    let (n1, n2, n3, pods, others) = marks(&store);
    assert!(n1 > 0 && n2 > 0 && n3 == 0);

    // p1 changes on n1 (a new attempt): n2's mark stays, and so does the
    // rest.
    let retried = Pod {
        id: "p1".into(),
        node_id: "n1".into(),
        slot: 1,
        attempt: 1,
        ..Default::default()
    };
    store.apply(2, &batch(false, vec![put(retried.clone(), 1)]));
    let after = marks(&store);
    assert!(after.0 != n1 && after.1 == n2 && after.2 == n3);
    assert!(after.3 != pods && after.4 == others);

    // Only p1's status changes: the pods' mark moves, n1's stays (a
    // node is sent its pods without their status).
    let reported = Pod {
        status: Some(shoal_proto::PodStatus {
            container_id: "c1".into(),
            ..Default::default()
        }),
        ..retried
    };
    store.apply(3, &batch(false, vec![put_forced(reported)]));
    let status_only = marks(&store);
    assert!(status_only.0 == after.0 && status_only.3 != after.3);
    let after = status_only;

    // p1 moves to n3: both nodes' marks move.
    store.apply(4, &batch(false, vec![put(placed("p1", "n3"), 3)]));
    let moved = marks(&store);
    assert!(moved.0 != after.0 && moved.2 != after.2 && moved.1 == n2);

    // A worker's node object moves no mark (sessions read their own node
    // directly); a manager's moves only the others' mark; a failed write
    // moves none.
    let node = |id: &str, role: NodeRole| Object {
        kind: Some(object::Kind::Node(shoal_proto::Node {
            id: id.into(),
            spec: Some(shoal_proto::NodeSpec {
                role: role as i32,
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    store.apply(5, &batch(false, vec![put(node("w1", NodeRole::Worker), 0)]));
    assert_eq!(marks(&store), moved, "a worker node moved a mark");
    store.apply(
        6,
        &batch(false, vec![put(node("n1", NodeRole::Manager), 0)]),
    );
    let noded = marks(&store);
    assert!(noded.4 != moved.4 && noded.3 == moved.3 && noded.0 == moved.0);
    store.apply(7, &batch(false, vec![put(placed("p2", "n2"), 99)]));
    assert_eq!(marks(&store), noded);
    // A worker promoted to manager (and back) moves the others' mark.
    store.apply(
        8,
        &batch(false, vec![put_forced(node("w1", NodeRole::Manager))]),
    );
    let promoted = marks(&store);
    assert!(promoted.4 != noded.4);
    store.apply(
        9,
        &batch(false, vec![put_forced(node("w1", NodeRole::Worker))]),
    );
    let demoted = marks(&store);
    assert!(demoted.4 != promoted.4);

    // Removing p2 moves n2's mark; removing the manager's node, the
    // others'; removing a worker's, none.
    store.apply(
        10,
        &batch(
            false,
            vec![
                delete(ObjectKind::Pod, "p2", 0),
                delete(ObjectKind::Node, "n1", 0),
            ],
        ),
    );
    let removed = marks(&store);
    assert!(removed.1 != demoted.1 && removed.4 != demoted.4);
    store.apply(11, &batch(false, vec![delete(ObjectKind::Node, "w1", 0)]));
    assert_eq!(
        marks(&store),
        removed,
        "removing a worker node moved a mark"
    );

    // A restore never gives a mark seen before.
    let before = marks(&store);
    store.restore(store.snapshot(), 11);
    let restored = marks(&store);
    assert!(restored.2 != before.2 && restored.3 != before.3 && restored.4 != before.4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_waits_for_a_long_read_to_end_without_queueing_on_the_lock() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let store = Store::new();
    let reading = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let pass = {
        let (store, reading, release) = (store.clone(), reading.clone(), release.clone());
        tokio::task::spawn_blocking(move || {
            store.read_long(|_| {
                reading.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
            })
        })
    };
    while !reading.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.long_reads_done().await })
    };
    tokio::task::yield_now().await;
    assert!(
        !waiter.is_finished(),
        "returned while a long read was running"
    );
    // Other readers go on meanwhile: nothing is queued on the lock.
    assert_eq!(store.read(|d| d.pods.len()), 0);
    release.store(true, Ordering::SeqCst);
    pass.await.unwrap();
    waiter.await.unwrap();
}

/// Whether each session was woken since the last look, marking it seen.
fn woken(sessions: &mut [&mut SessionChanges]) -> Vec<bool> {
    sessions
        .iter_mut()
        .map(|s| {
            let woken = s.every_node.has_changed().unwrap() || s.node.has_changed().unwrap();
            s.mark_seen();
            woken
        })
        .collect()
}

#[test]
fn a_session_wakes_for_what_its_node_is_sent_and_not_for_status_reports() {
    let store = Store::new();
    let (mut n1, mut n2) = (store.subscribe_session("n1"), store.subscribe_session("n2"));
    store.apply(1, &batch(false, vec![put(placed("p1", "n1"), 0)]));
    assert_eq!(woken(&mut [&mut n1, &mut n2]), [true, false]);

    // A status report of p1: nobody.
    let mut reported = store.read(|d| d.pods["p1"].clone());
    reported.status = Some(shoal_proto::PodStatus {
        container_id: "c1".into(),
        ..Default::default()
    });
    store.apply(2, &batch(false, vec![put_forced(reported.clone())]));
    assert_eq!(woken(&mut [&mut n1, &mut n2]), [false, false]);

    // p1 moves to n2: both.
    reported.node_id = "n2".into();
    store.apply(3, &batch(false, vec![put_forced(reported.clone())]));
    assert_eq!(woken(&mut [&mut n1, &mut n2]), [true, true]);

    // n2's node object (its role may have changed): n2 only.
    let worker = Object {
        kind: Some(object::Kind::Node(shoal_proto::Node {
            id: "n2".into(),
            ..Default::default()
        })),
    };
    store.apply(4, &batch(false, vec![put_forced(worker)]));
    assert_eq!(woken(&mut [&mut n1, &mut n2]), [false, true]);

    // A service (what every node is sent): everyone.
    let service = |mode: PublishMode| Object {
        kind: Some(object::Kind::Service(shoal_proto::Service {
            id: "s1".into(),
            ports: vec![shoal_proto::PortConfig {
                publish_mode: mode as i32,
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    store.apply(
        5,
        &batch(false, vec![put_forced(service(PublishMode::Host))]),
    );
    assert_eq!(woken(&mut [&mut n1, &mut n2]), [true, true]);
    store.apply(6, &batch(false, vec![put_forced(reported.clone())]));
    assert_eq!(woken(&mut [&mut n1, &mut n2]), [false, false]);

    // Once a service publishes ingress ports, every node is sent every
    // pod's endpoint: a status report wakes everyone.
    store.apply(
        7,
        &batch(false, vec![put_forced(service(PublishMode::Ingress))]),
    );
    woken(&mut [&mut n1, &mut n2]);
    reported.status.as_mut().unwrap().ip = "10.0.0.2".into();
    store.apply(8, &batch(false, vec![put_forced(reported)]));
    assert_eq!(woken(&mut [&mut n1, &mut n2]), [true, true]);

    // A restore: everyone.
    store.restore(store.snapshot(), 9);
    assert_eq!(woken(&mut [&mut n1, &mut n2]), [true, true]);
}
