//! Placement over the real dispatcher protocol with sim workers (no Docker):
//! spread preferences by node label, and reservations accounted against the
//! resources the workers report (a sim node reports 4 CPUs and 8 GiB).

use std::time::Duration;

use shoal_manager::store::StoreData;
use shoal_proto::control_server::Control;
use shoal_proto::{
    restart_policy::Condition, ContainerSpec, DeploymentMode, ListPodsRequest, NodeAvailability,
    Placement, Pod, PodState, RestartPolicy, ServiceSpec, UpdateNodeRequest, UpdateServiceRequest,
};
use shoal_tests::cluster::SimCluster;
use tonic::Request;

const LONG: Duration = Duration::from_secs(30);
const GIB: i64 = 1 << 30;

fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        replicas,
        container: Some(ContainerSpec {
            image: format!("sim/{name}:v1"),
            stop_grace_period_ms: 100,
            ..Default::default()
        }),
        restart_policy: Some(RestartPolicy {
            condition: Condition::Any as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Wanted pods of `service`.
fn wanted(d: &StoreData, service: &str) -> Vec<Pod> {
    let Some(dep) = d.deployment_by_name(service) else {
        return vec![];
    };
    d.pods_of_deployment(&dep.id)
        .filter(|p| p.desired_state() == PodState::Running)
        .cloned()
        .collect()
}

fn running_on(d: &StoreData, service: &str, node: &str) -> usize {
    wanted(d, service)
        .iter()
        .filter(|p| p.node_id == node && shoal_manager::objects::observed(p) == PodState::Running)
        .count()
}

async fn label(c: &SimCluster, node: &str, zone: &str) {
    c.api
        .update_node(Request::new(UpdateNodeRequest {
            node: node.into(),
            labels_add: [("zone".to_string(), zone.to_string())].into(),
            ..Default::default()
        }))
        .await
        .expect("label the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_by_zone_gives_the_lone_zone_b_node_half_the_pods() {
    let c = SimCluster::start(3).await;
    label(&c, "sim-node-0", "a").await;
    label(&c, "sim-node-1", "a").await;
    label(&c, "sim-node-2", "b").await;
    let mut s = spec("web", 4);
    s.placement = Some(Placement {
        spread: vec!["node.labels.zone".into()],
        ..Default::default()
    });
    c.create(s).await;
    c.wait("web's 4 pods running, 2 in zone b", LONG, |d| {
        running_on(d, "web", "sim-node-2") == 2
            && running_on(d, "web", "sim-node-0") == 1
            && running_on(d, "web", "sim-node-1") == 1
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_fits_nowhere_waits_with_the_reason_until_space_is_freed() {
    let c = SimCluster::start(2).await;
    let mut big = spec("big", 4);
    big.container.as_mut().unwrap().reserve_memory_bytes = 3 * GIB;
    c.create(big).await;
    c.wait("big's 4 pods running", LONG, |d| {
        running_on(d, "big", "sim-node-0") == 2 && running_on(d, "big", "sim-node-1") == 2
    })
    .await;

    // Each node has 8 GiB with 6 reserved: a 4 GiB pod fits on neither.
    let mut more = spec("more", 1);
    let c_spec = more.container.as_mut().unwrap();
    c_spec.reserve_memory_bytes = 4 * GIB;
    c_spec.reserve_nano_cpus = 500_000_000;
    c.create(more).await;
    let why = "no suitable node (2 nodes: insufficient memory (the pod reserves 4 GiB))";
    c.wait("more's pod to wait, saying why", LONG, |d| {
        wanted(d, "more")
            .iter()
            .any(|p| p.node_id.is_empty() && p.scheduling_message == why)
    })
    .await;
    let pending = c.store.read(|d| wanted(d, "more"));
    assert_eq!(pending.len(), 1);
    assert_eq!(
        shoal_manager::objects::observed(&pending[0]),
        PodState::Pending
    );

    // Scaling big down frees 6 GiB on one node once its pods are gone.
    c.update("big", |s| s.replicas = 2).await;
    c.wait("more's pod running once big shrank", LONG, |d| {
        wanted(d, "more")
            .iter()
            .any(|p| shoal_manager::objects::observed(p) == PodState::Running)
    })
    .await;
    let p = c.store.read(|d| wanted(d, "more")).pop().unwrap();
    assert!(p.scheduling_message.is_empty(), "{}", p.scheduling_message);
    c.stop().await;
}

async fn availability(c: &SimCluster, node: &str, availability: NodeAvailability) {
    c.api
        .update_node(Request::new(UpdateNodeRequest {
            node: node.into(),
            availability: availability as i32,
            ..Default::default()
        }))
        .await
        .expect("set the node's availability");
}

/// Running pods of `service` on sim-node-0, -1 and -2.
fn spread(d: &StoreData, service: &str) -> [usize; 3] {
    [0, 1, 2].map(|i| running_on(d, service, &format!("sim-node-{i}")))
}

/// A node that comes back (here: drained, then active again) gets the next
/// new pods first; `service update --force` rebalances the others onto it
/// (Swarm never rebalances: moby#24103).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_node_gets_new_pods_first_and_a_forced_update_rebalances() {
    let c = SimCluster::start(3).await;
    c.create(spec("web", 6)).await;
    c.wait("web spread 2/2/2", LONG, |d| spread(d, "web") == [2, 2, 2])
        .await;

    availability(&c, "sim-node-0", NodeAvailability::Drain).await;
    c.wait("web off sim-node-0", LONG, |d| {
        spread(d, "web") == [0, 3, 3]
    })
    .await;
    availability(&c, "sim-node-0", NodeAvailability::Active).await;
    c.update("web", |s| s.replicas = 9).await;
    c.wait("the 3 new pods on the returned node", LONG, |d| {
        spread(d, "web") == [3, 3, 3]
    })
    .await;

    availability(&c, "sim-node-0", NodeAvailability::Drain).await;
    c.wait("web off sim-node-0 again", LONG, |d| {
        let s = spread(d, "web");
        s[0] == 0 && s[1] + s[2] == 9
    })
    .await;
    availability(&c, "sim-node-0", NodeAvailability::Active).await;
    let spec = c.get("web").await.spec;
    c.api
        .update_service(Request::new(UpdateServiceRequest {
            service: "web".into(),
            spec,
            force: true,
        }))
        .await
        .expect("update --force");
    c.wait("a forced update rebalances 3/3/3", LONG, |d| {
        spread(d, "web") == [3, 3, 3] && wanted(d, "web").len() == 9
    })
    .await;
    c.stop().await;
}

/// A global service's pod that does not fit a node is not placed there, and
/// `service ps` (ListPods) says which node and why; it starts once it fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_pod_that_does_not_fit_a_node_is_explained_and_placed_once_it_fits() {
    let c = SimCluster::start(2).await;
    let mut hog = spec("hog", 1);
    hog.container.as_mut().unwrap().reserve_memory_bytes = 6 * GIB;
    c.create(hog).await;
    c.wait("hog running", LONG, |d| {
        wanted(d, "hog")
            .iter()
            .any(|p| shoal_manager::objects::observed(p) == PodState::Running)
    })
    .await;
    let hog_node = c.store.read(|d| wanted(d, "hog")[0].node_id.clone());
    let free_node = if hog_node == "sim-node-0" {
        "sim-node-1"
    } else {
        "sim-node-0"
    };

    let mut agent = spec("agent", 0);
    agent.mode = DeploymentMode::Global as i32;
    agent.container.as_mut().unwrap().reserve_memory_bytes = 4 * GIB;
    c.create(agent).await;
    c.wait("agent on the free node only", LONG, |d| {
        running_on(d, "agent", free_node) == 1 && wanted(d, "agent").len() == 1
    })
    .await;
    let list = || async {
        c.api
            .list_pods(Request::new(ListPodsRequest {
                service: "agent".into(),
                ..Default::default()
            }))
            .await
            .expect("list pods")
            .into_inner()
    };
    let hostname = format!("sim{}", &hog_node["sim-node-".len()..]);
    assert_eq!(
        list().await.unplaced,
        vec![format!(
            "{hostname} (sim-node): insufficient memory (the pod reserves 4 GiB)"
        )]
    );

    c.update("hog", |s| s.replicas = 0).await;
    c.wait("agent on both nodes once hog is gone", LONG, |d| {
        running_on(d, "agent", &hog_node) == 1 && running_on(d, "agent", free_node) == 1
    })
    .await;
    assert!(list().await.unplaced.is_empty());
    c.stop().await;
}

/// A node marked Down while its session lives (a starved leader's false
/// Down) is told so at its next heartbeat, registers again and is Ready
/// with a new session epoch; its pods, replaced meanwhile, are not doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_marked_down_registers_again_and_is_ready() {
    use shoal_manager::proposer::{all_applied, batch};
    use shoal_proto::NodeState;

    let c = SimCluster::start(2).await;
    c.create(spec("web", 4)).await;
    c.wait("web spread 2/2", LONG, |d| {
        running_on(d, "web", "sim-node-0") == 2 && running_on(d, "web", "sim-node-1") == 2
    })
    .await;
    let (node, epoch) = c.store.read(|d| {
        let n = d.nodes["sim-node-0"].clone();
        let epoch = n.status.as_ref().unwrap().session_epoch;
        (n, epoch)
    });
    let mut down = node.clone();
    down.status.as_mut().unwrap().state = NodeState::Down as i32;
    let v = shoal_manager::objects::version(&node.meta);
    let leader = c.leader().expect("a leader");
    let r = leader
        .raft
        .propose(batch(vec![shoal_manager::store::put(down, v)], true))
        .await
        .expect("mark the node down");
    assert!(all_applied(&r));
    c.wait("sim-node-0 ready again with a new session", LONG, |d| {
        d.nodes["sim-node-0"]
            .status
            .as_ref()
            .is_some_and(|s| s.state() == NodeState::Ready && s.session_epoch > epoch)
    })
    .await;
    c.wait("4 pods running, none doubled", LONG, |d| {
        wanted(d, "web").len() == 4
            && running_on(d, "web", "sim-node-0") + running_on(d, "web", "sim-node-1") == 4
    })
    .await;
    c.stop().await;
}
