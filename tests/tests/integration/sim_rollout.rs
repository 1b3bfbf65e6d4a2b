//! The rolling updater over the real dispatcher protocol, with sim workers
//! (no Docker): batching by parallelism, and failure accounting that pauses
//! or rolls back.

use std::time::Duration;

use shoal_manager::store::StoreData;
use shoal_proto::{
    restart_policy::Condition, update_config::FailureAction, update_config::Order, ContainerSpec,
    PodState, RestartPolicy, ServiceSpec, UpdateConfig, UpdateState,
};
use shoal_tests::cluster::SimCluster;

const LONG: Duration = Duration::from_secs(30);

fn spec(name: &str, replicas: u64, image: &str, update: UpdateConfig) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        replicas,
        container: Some(ContainerSpec {
            image: image.into(),
            stop_grace_period_ms: 100,
            ..Default::default()
        }),
        restart_policy: Some(RestartPolicy {
            condition: Condition::Any as i32,
            delay_ms: 0,
            ..Default::default()
        }),
        update_config: Some(update),
        ..Default::default()
    }
}

fn update_config(parallelism: u64, monitor_ms: u64, action: FailureAction) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        delay_ms: 0,
        failure_action: action as i32,
        monitor_ms,
        max_failure_ratio: 0.0,
        order: Order::StopFirst as i32,
    }
}

/// Live (wanted) pods of `service` by image, and how many of them are ready.
fn live(d: &StoreData, service: &str) -> Vec<(String, bool)> {
    let Some(dep) = d.deployment_by_name(service) else {
        return vec![];
    };
    d.pods_of_deployment(&dep.id)
        .filter(|p| p.desired_state() == PodState::Running)
        .map(|p| {
            let image = d.replica_sets[&p.replica_set_id]
                .template
                .clone()
                .unwrap_or_default()
                .container
                .unwrap_or_default()
                .image;
            (image, shoal_manager::objects::is_ready(p))
        })
        .collect()
}

fn state(d: &StoreData, service: &str) -> UpdateState {
    d.deployment_by_name(service)
        .and_then(|x| x.status.clone())
        .map_or(UpdateState::None, |s| s.update_state())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_updater_moves_at_most_parallelism_slots_at_a_time() {
    let c = SimCluster::start(3).await;
    c.create(spec(
        "web",
        6,
        "sim/web:v1",
        update_config(2, 200, FailureAction::Pause),
    ))
    .await;
    c.wait("6 ready pods", LONG, |d| {
        live(d, "web").iter().filter(|(_, r)| *r).count() == 6
    })
    .await;
    c.update("web", |s| {
        s.container.as_mut().unwrap().image = "sim/web:v2".into()
    })
    .await;

    let mut max_unready = 0;
    let mut samples = 0;
    loop {
        let (pods, st) = c.store.read(|d| (live(d, "web"), state(d, "web")));
        // Slots not served by a ready pod are the ones in transition.
        let ready = pods.iter().filter(|(_, r)| *r).count();
        let unready = 6usize.saturating_sub(ready);
        max_unready = max_unready.max(unready);
        assert!(
            unready <= 2,
            "{unready} slots in transition with parallelism 2: {pods:?}"
        );
        samples += 1;
        if st == UpdateState::Completed {
            break;
        }
        assert!(
            samples < 3_000,
            "the update did not complete: {st:?} {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(max_unready, 2, "batches of 2 were never used");
    let pods = c.store.read(|d| live(d, "web"));
    assert_eq!(pods.len(), 6);
    assert!(
        pods.iter().all(|(i, r)| i == "sim/web:v2" && *r),
        "{pods:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_update_pauses_after_its_first_failure() {
    let c = SimCluster::start(2).await;
    c.create(spec(
        "api",
        4,
        "sim/api:v1",
        update_config(1, 100, FailureAction::Pause),
    ))
    .await;
    c.wait("4 ready pods", LONG, |d| {
        live(d, "api").iter().filter(|(_, r)| *r).count() == 4
    })
    .await;
    // sim/fail cannot be pulled: its pods are rejected.
    c.update("api", |s| {
        s.container.as_mut().unwrap().image = "sim/fail:v2".into()
    })
    .await;
    c.wait("the update to pause", LONG, |d| {
        state(d, "api") == UpdateState::Paused
    })
    .await;
    let view = c.get("api").await;
    let status = view.update_status.unwrap();
    assert!(
        status
            .message
            .starts_with("update paused due to failure: pod api.")
            && status.message.contains("could not be pulled"),
        "{}",
        status.message
    );
    assert!(status.failed >= 1);
    // Only the first slot moved: three pods of v1 keep serving.
    let pods = c.store.read(|d| live(d, "api"));
    let v1_ready = pods.iter().filter(|(i, r)| i == "sim/api:v1" && *r).count();
    assert_eq!(v1_ready, 3, "{pods:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_beyond_the_ratio_roll_back_to_the_previous_revision() {
    let c = SimCluster::start(3).await;
    let mut cfg = update_config(2, 100, FailureAction::Rollback);
    cfg.max_failure_ratio = 0.3;
    c.create(spec("job", 6, "sim/job:v1", cfg)).await;
    c.wait("6 ready pods", LONG, |d| {
        live(d, "job").iter().filter(|(_, r)| *r).count() == 6
    })
    .await;
    // Exits 1 at once: every new pod fails, is restarted, fails again.
    c.update("job", |s| {
        s.container.as_mut().unwrap().image = "sim/exit1:v2".into()
    })
    .await;
    c.wait("the rollback to complete", LONG, |d| {
        state(d, "job") == UpdateState::RollbackCompleted
    })
    .await;
    let view = c.get("job").await;
    let status = view.update_status.unwrap();
    assert!(
        status.message.contains("update rolled back: pod job.") && status.message.contains("exit"),
        "{}",
        status.message
    );
    c.wait("6 ready pods of v1 again", LONG, |d| {
        let pods = live(d, "job");
        pods.len() == 6 && pods.iter().all(|(i, r)| i == "sim/job:v1" && *r)
    })
    .await;
    assert_eq!(
        view.spec.unwrap().container.unwrap().image,
        "sim/job:v1",
        "the spec follows the rollback"
    );
    c.stop().await;
}
