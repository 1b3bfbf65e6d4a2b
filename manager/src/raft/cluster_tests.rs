//! Multi-manager Raft in one process: every manager has a real redb log in
//! its own temp dir and serves Raft (and, for forwarding tests, the Control
//! API) over mutual TLS on loopback, behind the authorization layer, with
//! certificates from a test CA. Partitions use [`Faults`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::ServerState;
use shoal_proto::control_client::ControlClient;
use shoal_proto::defaults::BATCH_FORMAT;
use shoal_proto::{
    mutation, object, Batch, CreateFileObjectRequest, FileObjectSpec, InfoRequest,
    ListNodesRequest, LogLine, Mutation, MutationOutcome, Node, Object,
};
use tokio::sync::oneshot;

use super::*;
use crate::ca::authz::tests::FakeView;
use crate::ca::authz::{AuthzLayer, Policy};
use crate::ca::testutil::{ca, credentials};
use crate::ca::{tls, Ca, Role};
use crate::controlapi::forward::{ForwardLayer, FORWARDED_HEADER};
use crate::controlapi::{ControlApi, LocalNode, LogSource};

const TIMEOUT: Duration = Duration::from_secs(10);
const APPLIED: i32 = MutationOutcome::Applied as i32;

fn put_node(id: &str) -> Batch {
    Batch {
        format: BATCH_FORMAT,
        mutations: vec![Mutation {
            op: Some(mutation::Op::Put(Object {
                kind: Some(object::Kind::Node(Node {
                    id: id.into(),
                    ..Default::default()
                })),
            })),
            expected_version: 0,
            force: false,
        }],
        atomic: false,
    }
}

struct NoLogs;

impl LogSource for NoLogs {
    fn pod_logs(
        &self,
        _: &str,
        _: &str,
        _: bool,
        _: i64,
    ) -> futures::stream::BoxStream<'static, Result<LogLine, String>> {
        futures::stream::empty().boxed()
    }
}

/// One running manager.
struct Manager {
    id: u64,
    addr: String,
    store: Arc<Store>,
    raft: RaftNode,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Manager {
    fn node_ids(&self) -> BTreeSet<String> {
        self.store.read(|d| d.nodes.keys().cloned().collect())
    }

    fn state(&self) -> (ServerState, u64) {
        let m = self.raft.inner.raft.metrics().borrow().clone();
        (m.state, m.current_term)
    }
}

/// A cluster's CA and its managers; `None` for a stopped one.
struct Cluster {
    ca: Ca,
    view: Arc<FakeView>,
    managers: Vec<Option<Manager>>,
    /// Also serve the Control API behind a [`ForwardLayer`].
    control: bool,
}

/// 127.0.0.<id+1> when the system routes it (Linux does), else 127.0.0.1.
async fn bind(id: u64) -> tokio::net::TcpListener {
    let ip = format!("127.0.0.{}", id % 250 + 1);
    match tokio::net::TcpListener::bind((ip.as_str(), 0)).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    }
}

impl Cluster {
    /// `n` voting managers with ids 1..=n; manager 1 bootstraps and adds
    /// the others through [`RaftNode::add_manager`].
    async fn start(n: u64, control: bool) -> Cluster {
        let mut cluster = Cluster {
            ca: ca("c1"),
            view: FakeView::new("c1", &[]),
            managers: Vec::new(),
            control,
        };
        for id in 1..=n {
            cluster.spawn(id).await;
        }
        let first = cluster.get(1);
        first.raft.bootstrap_single().await.unwrap();
        first.raft.wait_for_leader(TIMEOUT).await.unwrap();
        for id in 2..=n {
            let addr = cluster.get(id).addr.clone();
            cluster.get(1).raft.add_manager(id, &addr).await.unwrap();
        }
        cluster
    }

    /// Starts manager `id` (a fresh data dir) and serves it; not a member yet.
    async fn spawn(&mut self, id: u64) {
        self.spawn_in(id, tempfile::tempdir().unwrap()).await;
    }

    /// Stops manager `id` and starts it again on the same data dir at a
    /// new port, as a manager that moved to another address.
    async fn restart_elsewhere(&mut self, id: u64) -> String {
        let m = self.managers[id as usize - 1].take().expect("running");
        m.raft.shutdown().await;
        let Manager { _dir: dir, .. } = m;
        self.spawn_in(id, dir).await;
        self.get(id).addr.clone()
    }

    async fn spawn_in(&mut self, id: u64, dir: tempfile::TempDir) {
        let name = format!("m{id}");
        self.view
            .roles
            .lock()
            .unwrap()
            .insert(name.clone(), Role::Manager);
        let creds = credentials(&self.ca, &name, Role::Manager);
        let client_tls = tls::client_config(&creds).unwrap();
        let listener = bind(id).await;
        let addr = listener.local_addr().unwrap().to_string();
        let store = Store::new();
        let raft = RaftNode::open(
            RaftConfig {
                node_id: id,
                data_dir: dir.path().to_path_buf(),
                advertise_addr: addr.clone(),
                tls: Some(client_tls.clone()),
            },
            store.clone(),
        )
        .await
        .unwrap();
        let incoming = tls::incoming(listener, tls::server_config(&creds).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let authz = AuthzLayer::new(Policy::new(self.view.clone()));
        if self.control {
            let api = ControlApi::new(
                store.clone(),
                raft.clone(),
                Arc::new(NoLogs),
                LocalNode {
                    node_id: name,
                    ..Default::default()
                },
                Arc::new(|_| {}),
                crate::keys::ClusterKey::generate(),
                self.ca.digest().clone(),
            );
            let router = tonic::transport::Server::builder()
                // The first layer is the outermost: authorize, then forward.
                .layer(authz)
                .layer(ForwardLayer::new(raft.clone(), client_tls))
                .add_service(raft.grpc_service())
                .add_service(api.into_service());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped));
        } else {
            let router = tonic::transport::Server::builder()
                .layer(authz)
                .add_service(raft.grpc_service());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped));
        }
        let manager = Manager {
            id,
            addr,
            store,
            raft,
            _dir: dir,
            _stop: stop,
        };
        let slot = id as usize - 1;
        if self.managers.len() <= slot {
            self.managers.resize_with(slot + 1, || None);
        }
        self.managers[slot] = Some(manager);
    }

    fn get(&self, id: u64) -> &Manager {
        self.managers[id as usize - 1]
            .as_ref()
            .expect("manager running")
    }

    fn running(&self) -> impl Iterator<Item = &Manager> {
        self.managers.iter().flatten()
    }

    /// Stops manager `id`'s Raft and its server, as a crash would.
    async fn kill(&mut self, id: u64) {
        let m = self.managers[id as usize - 1].take().expect("running");
        m.raft.shutdown().await;
    }

    /// Waits until one of `among` leads and every one of them agrees.
    async fn leader_among(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let leaders: BTreeSet<Option<u64>> = among
                .iter()
                .map(|&id| *self.get(id).raft.leader_watch().borrow())
                .collect();
            if let [Some(l)] = leaders.iter().collect::<Vec<_>>()[..] {
                if among.contains(l) && self.get(*l).raft.is_leader() {
                    return *l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every manager in `ids` applied at least `index`.
    async fn applied_everywhere(&self, ids: &[u64], index: u64) {
        for &id in ids {
            self.get(id)
                .raft
                .inner
                .raft
                .wait(Some(TIMEOUT))
                .applied_index_at_least(Some(index), "caught up")
                .await
                .unwrap_or_else(|e| panic!("manager {id} did not apply {index}: {e}"));
        }
    }

    /// Proposes on `leader` and checks the write applied.
    async fn write(&self, leader: u64, id: &str) -> u64 {
        let r = tokio::time::timeout(TIMEOUT, self.get(leader).raft.propose(put_node(id)))
            .await
            .expect("write in time")
            .unwrap();
        assert_eq!(r.outcomes, vec![APPLIED]);
        r.index
    }

    /// Asserts that no two managers lead in the same term.
    fn assert_one_leader_per_term(&self) {
        let mut terms = BTreeSet::new();
        for m in self.running() {
            if let (ServerState::Leader, term) = m.state() {
                assert!(terms.insert(term), "two leaders in term {term}");
            }
        }
    }
}

/// Samples every manager's (term, state) until stopped, and fails if two
/// managers ever led in the same term.
struct LeaderSampler {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::collections::BTreeMap<u64, BTreeSet<u64>>>,
}

impl LeaderSampler {
    fn start(c: &Cluster) -> LeaderSampler {
        let nodes: Vec<RaftNode> = c.running().map(|m| m.raft.clone()).collect();
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut leaders = std::collections::BTreeMap::<u64, BTreeSet<u64>>::new();
            loop {
                for n in &nodes {
                    let m = n.inner.raft.metrics().borrow().clone();
                    if m.state == ServerState::Leader {
                        leaders.entry(m.current_term).or_default().insert(m.id);
                    }
                }
                tokio::select! {
                    _ = &mut stopped => return leaders,
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        });
        LeaderSampler {
            stop: Some(stop),
            task,
        }
    }

    /// Stops sampling; returns how many terms had a leader.
    async fn check(mut self) -> usize {
        let _ = self.stop.take().unwrap().send(());
        let leaders = (&mut self.task).await.unwrap();
        for (term, ids) in &leaders {
            assert_eq!(ids.len(), 1, "term {term} had leaders {ids:?}");
        }
        leaders.len()
    }
}

#[tokio::test]
async fn three_managers_elect_a_new_leader_when_the_leader_dies_and_keep_every_write() {
    let mut c = Cluster::start(3, false).await;
    let leader = c.leader_among(&[1, 2, 3]).await;
    assert_eq!(leader, 1);
    let mut written = BTreeSet::new();
    let mut last = 0;
    for i in 0..10 {
        let id = format!("before-{i}");
        last = c.write(leader, &id).await;
        written.insert(id);
    }
    // Mutual TLS between all three: the leader reached both peers.
    let managers = c.get(1).raft.managers();
    assert_eq!(managers.len(), 3);
    assert!(
        managers.iter().all(|m| m.reachable && !m.learner),
        "{managers:?}"
    );
    assert_eq!(c.get(2).raft.leader_addr(), Some(c.get(1).addr.clone()));

    let started = Instant::now();
    c.kill(1).await;
    let next = c.leader_among(&[2, 3]).await;
    eprintln!(
        "new leader {next} elected {:?} after the leader stopped",
        started.elapsed()
    );
    assert!(started.elapsed() < TIMEOUT);

    c.applied_everywhere(&[2, 3], last).await;
    for id in [2, 3] {
        assert!(
            c.get(id).node_ids().is_superset(&written),
            "manager {id} lost writes"
        );
    }
    let index = c.write(next, "after").await;
    c.applied_everywhere(&[2, 3], index).await;
    assert!(c.get(2).node_ids().contains("after"));
    // The dead manager is reported unreachable by the new leader.
    tokio::time::sleep(membership::REACHABLE_WITHIN).await;
    let view = c.get(next).raft.managers();
    let dead = view.iter().find(|m| m.raft_id == 1).unwrap();
    assert!(!dead.reachable && !dead.leader, "{view:?}");
    c.assert_one_leader_per_term();
}

#[tokio::test]
async fn a_minority_partition_cannot_commit_and_catches_up_after_healing() {
    let c = Cluster::start(5, false).await;
    let old = c.leader_among(&[1, 2, 3, 4, 5]).await;
    c.write(old, "before").await;
    let sampler = LeaderSampler::start(&c);
    // Cut the leader and one follower off from the other three, both ways.
    let minority: Vec<u64> = vec![old, if old == 1 { 2 } else { 1 }];
    let majority: Vec<u64> = (1..=5).filter(|i| !minority.contains(i)).collect();
    for &m in &minority {
        for &o in &majority {
            c.get(m).raft.faults().block(o);
            c.get(o).raft.faults().block(m);
        }
    }
    let started = Instant::now();
    let new = c.leader_among(&majority).await;
    eprintln!(
        "majority elected {new} {:?} after the partition",
        started.elapsed()
    );
    let committed = c.write(new, "majority-write").await;

    // The old leader still believes it leads an old term, but cannot commit.
    let stuck = tokio::time::timeout(
        Duration::from_secs(2),
        c.get(old).raft.propose(put_node("minority-write")),
    )
    .await;
    assert!(
        !matches!(stuck, Ok(Ok(_))),
        "the minority committed: {stuck:?}"
    );
    let follower = minority[1];
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        c.get(follower).raft.propose(put_node("x")),
    )
    .await;
    if let Ok(Ok(r)) = refused {
        panic!("a minority follower committed {r:?}");
    }
    c.assert_one_leader_per_term();
    for &m in &minority {
        assert!(!c.get(m).node_ids().contains("majority-write"));
    }

    for m in c.running() {
        m.raft.faults().heal();
    }
    // Leadership may move once more when the partitioned candidate's higher
    // term reaches the others; write through whoever leads in the end.
    let all = [1, 2, 3, 4, 5];
    let mut index = 0;
    for attempt in 0.. {
        let leader = c.leader_among(&all).await;
        match tokio::time::timeout(TIMEOUT, c.get(leader).raft.propose(put_node("healed"))).await {
            Ok(Ok(r)) => {
                index = r.index;
                break;
            }
            other => assert!(attempt < 5, "no write after healing: {other:?}"),
        }
    }
    assert!(index > committed);
    c.applied_everywhere(&all, index).await;
    let applied: BTreeSet<u64> = c.running().map(|m| m.raft.last_applied()).collect();
    assert_eq!(
        applied.len(),
        1,
        "same applied index everywhere: {applied:?}"
    );
    for m in c.running() {
        let ids = m.node_ids();
        assert!(
            ids.contains("majority-write") && ids.contains("healed"),
            "{}",
            m.id
        );
        assert!(!ids.contains("minority-write"), "{}", m.id);
    }
    c.assert_one_leader_per_term();
    let terms = sampler.check().await;
    assert!(terms >= 2, "the majority elected a leader in a new term");
}

#[tokio::test]
async fn a_new_manager_catches_up_from_a_snapshot_after_the_log_was_purged() {
    let mut c = Cluster::start(2, false).await;
    for i in 0..100 {
        c.write(1, &format!("n{i}")).await;
    }
    let raft1 = c.get(1).raft.inner.raft.clone();
    let snap = c.get(1).raft.last_applied();
    raft1.trigger().snapshot().await.unwrap();
    raft1
        .wait(Some(TIMEOUT))
        .metrics(|m| m.snapshot.map(|s| s.index) == Some(snap), "snapshot")
        .await
        .unwrap();
    raft1.trigger().purge_log(snap).await.unwrap();
    raft1
        .wait(Some(TIMEOUT))
        .metrics(|m| m.purged.map(|p| p.index) == Some(snap), "purged")
        .await
        .unwrap();

    c.spawn(3).await;
    let addr = c.get(3).addr.clone();
    c.get(1).raft.add_manager(3, &addr).await.unwrap();
    // Again: a voter at the same address is left alone.
    c.get(1).raft.add_manager(3, &addr).await.unwrap();
    assert!(c.get(3).raft.is_voter());
    let installed = c.get(3).raft.inner.raft.metrics().borrow().snapshot;
    assert!(installed.is_some_and(|s| s.index >= snap), "{installed:?}");
    let index = c.write(1, "after").await;
    c.applied_everywhere(&[3], index).await;
    assert_eq!(c.get(3).node_ids().len(), 101);
    let voters = c.get(1).raft.managers();
    assert!(voters.iter().all(|m| !m.learner), "{voters:?}");

    // It moves to another address (same data dir): adding it again
    // updates the address, and it follows again from there.
    let moved = c.restart_elsewhere(3).await;
    assert_ne!(moved, addr);
    assert_eq!(c.get(3).node_ids().len(), 101, "restored from its own disk");
    c.get(1).raft.add_manager(3, &moved).await.unwrap();
    let index = c.write(1, "after-move").await;
    c.applied_everywhere(&[3], index).await;
    let info = c.get(1).raft.managers();
    let m3 = info.iter().find(|m| m.raft_id == 3).unwrap();
    assert_eq!((m3.addr.as_str(), m3.learner), (moved.as_str(), false));

    // A follower refuses membership changes and names the leader.
    let err = c
        .get(3)
        .raft
        .add_manager(9, "127.0.0.1:9")
        .await
        .unwrap_err();
    assert!(
        matches!(err, MembershipError::NotLeader { leader: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&c.get(1).addr), "{err}");
}

#[tokio::test]
async fn removing_a_manager_is_refused_when_the_rest_would_lose_quorum() {
    let mut c = Cluster::start(3, false).await;
    assert_eq!(c.leader_among(&[1, 2, 3]).await, 1);
    c.kill(3).await;
    // Wait until the leader counts 3 as unreachable.
    let deadline = Instant::now() + TIMEOUT;
    while c
        .get(1)
        .raft
        .managers()
        .iter()
        .any(|m| m.raft_id == 3 && m.reachable)
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = c.get(1).raft.remove_manager(2).await.unwrap_err();
    assert!(
        matches!(err, MembershipError::WouldLoseQuorum(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("3 at"), "{err}");
    assert!(c.get(2).raft.is_voter());

    // Removing the unreachable one leaves 2 of 2 reachable.
    assert_eq!(
        c.get(1).raft.remove_manager(3).await.unwrap(),
        Removal::Removed
    );
    assert_eq!(
        c.get(1).raft.remove_manager(3).await.unwrap(),
        Removal::NotAMember
    );
    c.write(1, "two-managers").await;

    // A reachable follower removed sees it in its own membership.
    let mut removed = c.get(2).raft.voter_watch();
    assert_eq!(
        c.get(1).raft.remove_manager(2).await.unwrap(),
        Removal::Removed
    );
    tokio::time::timeout(TIMEOUT, removed.wait_for(|v| !v))
        .await
        .expect("manager 2 learns it was removed")
        .unwrap();
    let err = c.get(1).raft.remove_manager(1).await.unwrap_err();
    assert!(matches!(err, MembershipError::LastVoter(1)), "{err:?}");
    c.write(1, "one-manager").await;
}

#[tokio::test]
async fn the_leader_removing_itself_steps_down_and_can_rejoin_as_a_new_manager() {
    let mut c = Cluster::start(3, true).await;
    assert_eq!(c.leader_among(&[1, 2, 3]).await, 1);
    let before = c.write(1, "before").await;

    let started = Instant::now();
    let removal = c.get(1).raft.remove_manager(1).await.unwrap();
    let returned = started.elapsed();
    let Removal::SteppedDown { voters } = removal else {
        panic!("expected a step-down, got {removal:?}");
    };
    assert_eq!(voters.iter().map(|v| v.0).collect::<Vec<_>>(), vec![2, 3]);
    assert!(!c.get(1).raft.is_voter());
    assert!(!c.get(1).raft.is_leader());
    let stepped = Instant::now();
    let next = c.leader_among(&[2, 3]).await;
    eprintln!(
        "step-down: membership change took {returned:?}; new leader {next} {:?} later",
        stepped.elapsed()
    );
    let index = c.write(next, "after").await;
    c.applied_everywhere(&[2, 3], index).await;
    assert!(c.get(2).node_ids().contains("before") && before < index);
    c.assert_one_leader_per_term();
    // The stepped-down manager says so instead of forwarding.
    let err = control(&c, 1)
        .await
        .list_nodes(ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("not a voting member"), "{err:?}");

    // The old manager comes back with a wiped data dir, as a new raft id.
    c.kill(1).await;
    c.spawn(4).await;
    let addr = c.get(4).addr.clone();
    c.get(next).raft.add_manager(4, &addr).await.unwrap();
    let index = c.write(next, "rejoined").await;
    c.applied_everywhere(&[2, 3, 4], index).await;
    assert!(c.get(4).node_ids().contains("before"));
    let ids: Vec<u64> = c
        .get(next)
        .raft
        .managers()
        .iter()
        .map(|m| m.raft_id)
        .collect();
    assert_eq!(ids, vec![2, 3, 4]);
}

async fn control(c: &Cluster, id: u64) -> ControlClient<tonic::transport::Channel> {
    let creds = credentials(&c.ca, "cli", Role::Client);
    let channel = tls::connect(&c.get(id).addr, tls::client_config(&creds).unwrap())
        .await
        .unwrap();
    ControlClient::new(channel)
}

#[tokio::test]
async fn followers_forward_control_calls_to_the_leader_but_serve_local_ones() {
    let mut c = Cluster::start(3, true).await;
    assert_eq!(c.leader_among(&[1, 2, 3]).await, 1);
    let index = c.write(1, "seen-by-leader").await;
    c.applied_everywhere(&[2], index).await;

    // A linearizable read on a follower: it fails there (not the leader),
    // so an answer proves it was forwarded.
    let mut follower = control(&c, 2).await;
    let nodes = follower
        .list_nodes(ListNodesRequest::default())
        .await
        .unwrap();
    let ids: Vec<_> = nodes.into_inner().nodes.into_iter().map(|n| n.id).collect();
    assert_eq!(ids, vec!["seen-by-leader".to_string()]);
    // A write on a follower is proposed by the leader.
    let created = follower
        .create_config(CreateFileObjectRequest {
            spec: Some(FileObjectSpec {
                name: "app.conf".into(),
                data: b"x=1".to_vec(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let on_leader = c.get(1).store.read(|d| d.configs.contains_key(&created.id));
    assert!(on_leader, "the config was written through the leader");
    // Info is about the manager called: answered by the follower itself.
    let info = follower.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id, "m2");
    assert!(!info.is_leader);

    // A forwarded call that reaches a non-leader is not forwarded again.
    let mut request = tonic::Request::new(ListNodesRequest::default());
    request
        .metadata_mut()
        .insert(FORWARDED_HEADER, "3".parse().unwrap());
    let err = follower.list_nodes(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("forwarded by manager 3"), "{err:?}");

    // Without a quorum there is no leader to forward to, and the caller
    // learns why.
    c.kill(1).await;
    c.kill(3).await;
    let raft2 = c.get(2).raft.clone();
    tokio::time::timeout(TIMEOUT, raft2.leader_watch().wait_for(|l| l.is_none()))
        .await
        .expect("the leader's lease expires")
        .unwrap();
    let err = follower
        .list_nodes(ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message()
            .starts_with("no quorum: 1 of 3 managers reachable from this one and no leader"),
        "{err:?}"
    );
    // Local calls still work.
    assert_eq!(
        follower
            .info(InfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .node_id,
        "m2"
    );
}

#[tokio::test]
async fn a_call_forwarded_to_a_leader_that_loses_leadership_is_given_up() {
    let c = Cluster::start(3, true).await;
    assert_eq!(c.leader_among(&[1, 2, 3]).await, 1);
    let index = c.write(1, "before").await;
    c.applied_everywhere(&[2, 3], index).await;
    let mut follower = control(&c, 2).await;

    // The leader is cut off from Raft both ways (as when its host dies):
    // a write forwarded to it cannot commit and gets no answer, while
    // managers 2 and 3 elect a new leader.
    c.get(1).raft.faults().block_all();
    c.get(2).raft.faults().block(1);
    c.get(3).raft.faults().block(1);
    let t0 = Instant::now();
    let err = tokio::time::timeout(
        TIMEOUT,
        follower.create_config(CreateFileObjectRequest {
            spec: Some(FileObjectSpec {
                name: "during-failover".into(),
                data: b"x=1".to_vec(),
                ..Default::default()
            }),
        }),
    )
    .await
    .expect("the forwarded call is given up once manager 2 no longer follows 1")
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("no longer the leader") && err.message().contains("retry"),
        "{err:?}"
    );
    eprintln!("given up after {:?}", t0.elapsed());

    // A retry reaches the new leader.
    let next = c.leader_among(&[2, 3]).await;
    let created = follower
        .create_config(CreateFileObjectRequest {
            spec: Some(FileObjectSpec {
                name: "after-failover".into(),
                data: b"x=2".to_vec(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(c
        .get(next)
        .store
        .read(|d| d.configs.contains_key(&created.id)));
}

/// A leader whose followers are gone keeps believing it leads (openraft
/// 0.9), so without a deadline a write would wait until they come back:
/// the Control API gives up after its quorum wait and says why.
#[tokio::test]
async fn without_a_quorum_control_api_writes_and_reads_fail_with_no_quorum_in_time() {
    use crate::controlapi::ControlApi;
    use shoal_proto::control_server::Control;

    let mut c = Cluster::start(3, false).await;
    let leader = c.leader_among(&[1, 2, 3]).await;
    for id in [1, 2, 3].into_iter().filter(|&id| id != leader) {
        c.kill(id).await;
    }
    let m = c.get(leader);
    let wait = Duration::from_millis(1_500);
    let api = ControlApi::new(
        m.store.clone(),
        m.raft.clone(),
        Arc::new(NoLogs),
        LocalNode::default(),
        Arc::new(|_| {}),
        crate::keys::ClusterKey::generate(),
        c.ca.digest().clone(),
    )
    .with_quorum_wait(wait);
    // Let the leader notice the followers are gone (REACHABLE_WITHIN).
    tokio::time::sleep(super::membership::REACHABLE_WITHIN + Duration::from_millis(200)).await;

    let started = Instant::now();
    let err = api
        .create_config(tonic::Request::new(CreateFileObjectRequest {
            spec: Some(FileObjectSpec {
                name: "app.conf".into(),
                data: b"x=1".to_vec(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .starts_with("no quorum: 1 of 3 managers reachable from this one"),
        "{err:?}"
    );
    assert!(
        err.message()
            .contains("run `shoal init --force-new-cluster` on a survivor"),
        "{err:?}"
    );
    assert!(took < wait + Duration::from_secs(2), "took {took:?}");

    let err = api
        .list_nodes(tonic::Request::new(ListNodesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().starts_with("no quorum: 1 of 3 managers"),
        "{err:?}"
    );
}

/// Adding a manager needs a committed membership change: a leader that
/// reaches no majority refuses at once instead of waiting for one.
#[tokio::test]
async fn a_leader_without_a_majority_refuses_to_add_a_manager_saying_no_quorum() {
    use crate::ca::authz::Caller;
    use crate::ca::PeerIdentity;
    use crate::managers::ManagersService;
    use shoal_proto::managers_server::Managers;
    use shoal_proto::JoinRaftRequest;

    let mut c = Cluster::start(3, false).await;
    let leader = c.leader_among(&[1, 2, 3]).await;
    for id in [1, 2, 3].into_iter().filter(|&id| id != leader) {
        c.kill(id).await;
    }
    tokio::time::sleep(super::membership::REACHABLE_WITHIN + Duration::from_millis(200)).await;
    let m = c.get(leader);
    let service = ManagersService::new(
        Arc::new(ca("c1")),
        crate::keys::ClusterKey::generate(),
        m.raft.clone(),
        m.store.clone(),
    );
    let mut request = tonic::Request::new(JoinRaftRequest {
        raft_id: 9,
        addr: "127.0.0.1:9".into(),
    });
    request.extensions_mut().insert(Caller::Peer {
        identity: PeerIdentity::new("m9", Role::Manager, "c1", 1).unwrap(),
        role: Role::Manager,
    });
    let started = Instant::now();
    let err = service.join_raft(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().starts_with(
            "no quorum: 1 of 3 managers reachable from this one, so it cannot add a manager"
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(m.raft.managers().len(), 3, "nothing was added");
}

/// Waits (up to [`TIMEOUT`]) until `ok` holds for manager `id`'s quorum
/// acknowledgement age, and returns the age.
async fn quorum_ack_age_until(
    c: &Cluster,
    id: u64,
    ok: impl Fn(Option<Duration>) -> bool,
) -> Option<Duration> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let age = c.get(id).raft.quorum_ack_age();
        if ok(age) {
            return age;
        }
        assert!(Instant::now() < deadline, "manager {id}: last age {age:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The dispatcher's evidence that its manager still leads: the leader's
/// followers acknowledge its heartbeats, a follower has no such evidence,
/// and a leader cut off from the others (which keeps believing it leads)
/// sees its last acknowledgement grow old.
#[tokio::test]
async fn a_cut_off_leader_sees_its_last_quorum_acknowledgement_grow_old() {
    let c = Cluster::start(3, true).await;
    assert_eq!(c.leader_among(&[1, 2, 3]).await, 1);
    quorum_ack_age_until(&c, 1, |age| age.is_some_and(|a| a < Duration::from_secs(1))).await;
    assert_eq!(c.get(2).raft.quorum_ack_age(), None);
    assert_eq!(c.get(3).raft.quorum_ack_age(), None);

    c.get(1).raft.faults().block_all();
    c.get(2).raft.faults().block(1);
    c.get(3).raft.faults().block(1);
    let age =
        quorum_ack_age_until(&c, 1, |age| age.is_none_or(|a| a > Duration::from_secs(3))).await;
    assert!(
        age.is_some() && c.get(1).raft.is_leader(),
        "the cut-off leader still believes it leads: {age:?}"
    );
}
