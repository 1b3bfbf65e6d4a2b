//! An in-process cluster for tests and benchmarks that need many nodes but
//! no Docker: one or more managers on real Raft (durable, each in its own
//! temp dir, Raft between them over mutual TLS) with their dispatchers on
//! loopback ports, and N workers running the real agent over the real
//! dispatcher protocol with the in-memory `sim` executor. Tests drive it
//! through the Control API and read the store directly.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_manager::ca::authz::{AuthzLayer, Policy};
use shoal_manager::ca::{tls, Ca, PeerIdentity, Role};
use shoal_manager::controlapi::{ControlApi, LocalNode, LogSource};
use shoal_manager::dispatcher::{Dispatcher, LivenessHint};
use shoal_manager::enrollment::StoreView;
use shoal_manager::keys::ClusterKey;
use shoal_manager::proposer::{all_applied, batch, Proposer};
use shoal_manager::raft::{RaftConfig, RaftNode, RaftTiming};
use shoal_manager::store::put;
use shoal_manager::store::{Store, StoreData};
use shoal_proto::control_server::Control;
use shoal_proto::{
    Cluster, CreateServiceRequest, GetServiceRequest, GossipInfo, LogLine, Node, NodeAvailability,
    NodeRole, NodeSpec, NodeState, NodeStatus, ServiceSpec, ServiceView, UpdateServiceRequest,
};
use shoal_worker::agent::{run_agent, AgentConfig, AgentLinks};
use shoal_worker::exec::sim::SimExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Request;

use crate::heap;

/// The sim cluster's id, in its CA and every certificate.
const CLUSTER_ID: &str = "sim-cluster";

/// Sim workers started at once (see [`SimCluster::start_with`]).
const JOIN_WAVE: usize = 250;

/// How long the test certificates are valid.
const VALIDITY: Duration = Duration::from_secs(3_600);

/// How many managers and sim workers a [`SimCluster`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimSize {
    /// Voting managers, at least 1. Manager 1 bootstraps Raft and adds the
    /// others, as `shoal init` and `shoal join --token <manager token>` do.
    pub managers: u64,
    pub workers: usize,
    /// Worker threads of a runtime of the managers' own (0: the managers
    /// run on the caller's runtime, with the agents). A real manager does
    /// not share its runtime's queue with thousands of workers' agents: at
    /// 5,000 sim nodes, Raft's heartbeats and vote requests waited behind
    /// the agents' ready tasks for longer than an election timeout. On
    /// their own runtime the managers' threads still share the cores with
    /// the agents', but the kernel shares them out by thread, not by task.
    /// Their allocations are then counted for [`heap::Owner::Managers`]
    /// (by a program that installs [`heap::OwnedHeap`]).
    pub manager_threads: usize,
    /// The managers' Raft clock (the daemon's by default).
    pub raft_timing: RaftTiming,
    /// Feed the dispatchers [`SimMembership`] as their gossip hint (off by
    /// default: heartbeats alone decide, as with no gossip).
    pub membership: bool,
}

impl SimSize {
    /// `managers` managers and `workers` sim workers, all on the caller's
    /// runtime.
    pub fn new(managers: u64, workers: usize) -> SimSize {
        SimSize {
            managers,
            workers,
            manager_threads: 0,
            raft_timing: RaftTiming::default(),
            membership: false,
        }
    }
}

/// The managers' own runtime, when they have one ([`SimSize::manager_threads`]).
/// Dropped without waiting for its tasks (a runtime cannot be dropped
/// inside another's async context otherwise): by then the cluster has
/// stopped them.
struct ManagerHost(Option<tokio::runtime::Runtime>);

impl ManagerHost {
    fn start(threads: usize) -> ManagerHost {
        ManagerHost((threads > 0).then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("sim-manager")
                // Workers and blocking threads alike: what the managers
                // allocate is counted for them (`crate::heap`).
                .on_thread_start(|| heap::set_thread_owner(heap::Owner::Managers))
                .enable_all()
                .build()
                .expect("the managers' runtime")
        }))
    }

    /// Runs `f` to completion on the managers' runtime (so every task it
    /// spawns stays there), or in place without one.
    async fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match &self.0 {
            Some(rt) => rt.spawn(f).await.expect("a manager task panicked"),
            None => f.await,
        }
    }
}

impl Drop for ManagerHost {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The id (and certificate name) of manager `raft_id`.
fn manager_node_id(raft_id: u64) -> String {
    format!("sim-manager-{raft_id}")
}

/// The id of sim worker `i`.
pub fn worker_node_id(i: usize) -> String {
    format!("sim-node-{i}")
}

/// Records the cluster and admits the sim workers, as `shoal init` and
/// `shoal join` do, so their certificates are accepted. With several
/// managers, the managers are recorded as manager nodes too (with their
/// Raft id and address, as the daemon records itself): once the cluster is
/// replicated, Raft between them is authorized against the store, and a
/// dispatcher that does not lead names the leader's address from it. They
/// run no agent, so they are never Ready and nothing is placed on them.
async fn admit(raft: &RaftNode, managers: &[(u64, String)], node_ids: &[String]) {
    let cluster = Cluster {
        id: CLUSTER_ID.into(),
        name: "sim".into(),
        epoch: 1,
        ..Default::default()
    };
    let mut mutations = vec![put(cluster, 0)];
    if managers.len() > 1 {
        for (raft_id, addr) in managers {
            mutations.push(put(
                Node {
                    id: manager_node_id(*raft_id),
                    spec: Some(NodeSpec {
                        role: NodeRole::Manager as i32,
                        availability: NodeAvailability::Active as i32,
                        ..Default::default()
                    }),
                    status: Some(NodeStatus {
                        state: NodeState::Unknown as i32,
                        addr: addr.clone(),
                        ..Default::default()
                    }),
                    raft_id: *raft_id,
                    ..Default::default()
                },
                0,
            ));
        }
    }
    for id in node_ids {
        mutations.push(put(
            Node {
                id: id.clone(),
                spec: Some(NodeSpec {
                    role: NodeRole::Worker as i32,
                    availability: NodeAvailability::Active as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
            0,
        ));
    }
    let result = raft
        .propose(batch(mutations, true))
        .await
        .expect("admit the sim nodes");
    assert!(all_applied(&result), "{result:?}");
}

/// Sim pods have no output.
struct NoLogs;

impl LogSource for NoLogs {
    fn pod_logs(
        &self,
        _: &str,
        _: &str,
        _: bool,
        _: i64,
    ) -> BoxStream<'static, Result<LogLine, String>> {
        futures::stream::empty().boxed()
    }
}

/// The sim's membership layer: what gossip would tell the managers if it
/// carried any number of nodes (chitchat stops near a thousand, see
/// docs/GOSSIP.md): every node whose agent runs is heard, a stopped one is
/// not. Fed to the dispatchers through the same trait as the daemon's
/// gossip, so the node monitor applies the same rules (DESIGN.md §5): a
/// node whose heartbeats stop while it is heard is Disconnected, not Down.
#[derive(Default)]
pub struct SimMembership {
    /// Each worker's node id and the token that stops its agent.
    workers: Mutex<Vec<(String, CancellationToken)>>,
    /// The managers' node ids: they run as long as the cluster does.
    managers: Mutex<Vec<String>>,
}

impl SimMembership {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add_manager(&self, node_id: String) {
        Self::lock(&self.managers).push(node_id);
    }

    /// A worker, heard until `stop` fires.
    fn add_worker(&self, node_id: &str, stop: &CancellationToken) {
        Self::lock(&self.workers).push((node_id.to_string(), stop.clone()));
    }
}

impl LivenessHint for SimMembership {
    fn live_nodes(&self) -> Option<BTreeSet<String>> {
        let mut live: BTreeSet<String> = Self::lock(&self.managers).iter().cloned().collect();
        live.extend(
            Self::lock(&self.workers)
                .iter()
                .filter(|(_, stop)| !stop.is_cancelled())
                .map(|(id, _)| id.clone()),
        );
        Some(live)
    }

    fn capacity(&self) -> usize {
        usize::MAX
    }

    fn info(&self) -> GossipInfo {
        GossipInfo {
            running: true,
            live_nodes: self.live_nodes().unwrap_or_default().into_iter().collect(),
            ..Default::default()
        }
    }
}

/// One manager of a [`SimCluster`]: its own store, Raft log (in its own
/// temp dir), dispatcher and leader-side controllers, served on its own
/// loopback port.
pub struct SimManager {
    pub raft_id: u64,
    /// The manager's cluster gRPC address (mutual TLS).
    pub addr: String,
    pub store: Arc<Store>,
    pub raft: RaftNode,
    /// The Control API, called in process (not over the network): on a
    /// manager that does not lead, writes fail with "not the leader".
    pub api: ControlApi,
    dir: tempfile::TempDir,
}

impl SimManager {
    /// Starts manager `raft_id` in a fresh temp dir: Raft (not yet a member
    /// of anything), the dispatcher, the authorized cluster gRPC server, and
    /// the supervisor that runs the controllers while it leads.
    async fn start(
        raft_id: u64,
        ca: Arc<Ca>,
        key: ClusterKey,
        shutdown: CancellationToken,
        timing: RaftTiming,
        membership: Option<Arc<SimMembership>>,
    ) -> SimManager {
        let dir = tempfile::tempdir().expect("temp dir");
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = tcp.local_addr().unwrap().to_string();
        let creds = ca
            .issue_credentials(
                &PeerIdentity::new(manager_node_id(raft_id), Role::Manager, CLUSTER_ID, 1).unwrap(),
                VALIDITY,
            )
            .expect("manager certificate");
        let store = Store::new();
        let raft = RaftNode::open_with_timing(
            RaftConfig {
                node_id: raft_id,
                data_dir: dir.path().to_path_buf(),
                advertise_addr: addr.clone(),
                tls: Some(tls::client_config(&creds).unwrap()),
            },
            store.clone(),
            timing,
        )
        .await
        .expect("open raft");

        // The workers talk to the dispatcher over mutual TLS behind the
        // authorization layer, as in the daemon. Until the cluster object
        // is replicated here, a joining manager trusts its peers'
        // certificates (as the daemon's does).
        let proposer: Arc<dyn Proposer> = Arc::new(raft.clone());
        let mut dispatcher = Dispatcher::new(
            store.clone(),
            proposer.clone(),
            key.clone(),
            shutdown.child_token(),
        );
        if let Some(membership) = membership {
            membership.add_manager(manager_node_id(raft_id));
            dispatcher = dispatcher.with_liveness(membership);
        }
        let view =
            Arc::new(StoreView::new(store.clone(), proposer).until_replicated(CLUSTER_ID, 1));
        let server = tonic::transport::Server::builder()
            .layer(AuthzLayer::new(Policy::new(view)))
            .add_service(raft.grpc_service())
            .add_service(dispatcher.clone().into_service())
            .serve_with_incoming_shutdown(
                tls::incoming(tcp, tls::server_config(&creds).unwrap()),
                shutdown.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        tokio::spawn(shoal_manager::leader::supervise(
            raft.clone(),
            store.clone(),
            dispatcher,
            shutdown.clone(),
        ));
        let api = ControlApi::new(
            store.clone(),
            raft.clone(),
            Arc::new(NoLogs),
            LocalNode::default(),
            Arc::new(|_| {}),
            key.clone(),
            ca.digest().clone(),
        );
        SimManager {
            raft_id,
            addr,
            store,
            raft,
            api,
            dir,
        }
    }

    /// The manager's data directory (Raft's files are under `raft/`).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

pub struct SimCluster {
    /// Manager 1's Control API, store and address: the manager that
    /// bootstrapped Raft, and the leader unless leadership moved.
    pub api: ControlApi,
    pub store: Arc<Store>,
    pub workers: Vec<SimExecutor>,
    /// The manager's cluster gRPC address (mutual TLS).
    pub addr: String,
    /// The cluster's CA, to issue test certificates.
    pub ca: Arc<Ca>,
    /// Every manager, manager 1 first.
    pub managers: Vec<SimManager>,
    /// One per worker: cancelling it stops that worker's agent.
    agents: Vec<CancellationToken>,
    /// One per worker: its agent's task (see [`SimCluster::crash_worker`]).
    agent_tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
    /// Declared last: dropped after everything that runs on it.
    host: ManagerHost,
}

impl SimCluster {
    /// Starts a manager and `workers` sim workers, and waits until every
    /// worker's node is Ready.
    pub async fn start(workers: usize) -> SimCluster {
        SimCluster::start_with(SimSize::new(1, workers)).await
    }

    /// Starts `size.managers` managers on one Raft cluster and
    /// `size.workers` sim workers, each worker knowing every manager (it
    /// follows a manager's hint to the leader), and waits until every
    /// worker's node is Ready.
    pub async fn start_with(size: SimSize) -> SimCluster {
        assert!(size.managers >= 1, "a sim cluster needs a manager");
        let shutdown = CancellationToken::new();
        // The cluster's PKI, as `shoal init` and `shoal join` make it: every
        // node has its own certificate from the cluster's CA.
        let ca = Arc::new(Ca::generate(CLUSTER_ID, SystemTime::now()).expect("a CA"));
        // One key for the control API (seals) and the dispatchers (open).
        let key = ClusterKey::generate();
        let host = ManagerHost::start(size.manager_threads);
        let membership = size.membership.then(Arc::<SimMembership>::default);
        let mut managers = Vec::new();
        for raft_id in 1..=size.managers {
            let start = SimManager::start(
                raft_id,
                ca.clone(),
                key.clone(),
                shutdown.clone(),
                size.raft_timing,
                membership.clone(),
            );
            managers.push(host.run(start).await);
        }
        let first = managers[0].raft.clone();
        let node_ids: Vec<String> = (0..size.workers).map(worker_node_id).collect();
        let manager_addrs: Vec<(u64, String)> = managers
            .iter()
            .map(|m| (m.raft_id, m.addr.clone()))
            .collect();
        let ids = node_ids.clone();
        host.run(async move {
            first.bootstrap_single().await.expect("bootstrap");
            first
                .wait_for_leader(Duration::from_secs(10))
                .await
                .expect("leader");
            admit(&first, &manager_addrs, &ids).await;
            for (raft_id, addr) in &manager_addrs[1..] {
                first
                    .add_manager(*raft_id, addr)
                    .await
                    .expect("add a manager to raft");
            }
        })
        .await;

        let SimManager {
            api, store, addr, ..
        } = &managers[0];
        let mut cluster = SimCluster {
            api: api.clone(),
            store: store.clone(),
            workers: Vec::new(),
            addr: addr.clone(),
            ca,
            managers,
            agents: Vec::new(),
            agent_tasks: Vec::new(),
            shutdown,
            host,
        };
        // Nodes join in waves, each Ready before the next starts: a
        // thousand handshakes at one instant overflow the listener's
        // accept queue, and the dropped connections are retried only after
        // TCP's and the agent's back-offs, which then dominate the start.
        let addrs: Vec<String> = cluster.managers.iter().map(|m| m.addr.clone()).collect();
        for wave in node_ids.chunks(JOIN_WAVE) {
            for node_id in wave {
                let i = cluster.workers.len();
                let exec = SimExecutor::new();
                let stop = cluster.shutdown.child_token();
                let task = start_agent(&cluster.ca, i, node_id, &addrs, &exec, stop.clone());
                cluster.agent_tasks.push(task);
                if let Some(membership) = &membership {
                    membership.add_worker(node_id, &stop);
                }
                cluster.workers.push(exec);
                cluster.agents.push(stop);
            }
            let started = cluster.workers.len();
            cluster
                .wait("every sim node to be ready", Duration::from_secs(90), |d| {
                    let ready = d
                        .nodes
                        .values()
                        .filter(|n| {
                            n.status
                                .as_ref()
                                .is_some_and(|s| s.state() == NodeState::Ready)
                        })
                        .count();
                    ready == started
                })
                .await;
        }
        cluster
    }

    /// The manager that leads now, if any (as the managers see it).
    pub fn leader(&self) -> Option<&SimManager> {
        let id = self.managers.iter().find_map(|m| {
            let leader = *m.raft.leader_watch().borrow();
            leader
        })?;
        self.managers.iter().find(|m| m.raft_id == id)
    }

    /// Worker `i`'s agent dies without a word, as when its process is
    /// killed: no "stopping" heartbeat, its connection to the managers
    /// closes under its session, and its pod tasks end with it. With
    /// [`SimSize::membership`] the node is then not heard either, so the
    /// dispatcher marks it Down after the closed session's grace
    /// (`SESSION_CLOSED_GRACE_MS`) rather than the heartbeat expiry.
    pub fn crash_worker(&self, i: usize) {
        self.agent_tasks[i].abort();
        self.agents[i].cancel();
    }

    pub async fn create(&self, spec: ServiceSpec) -> ServiceView {
        self.api
            .create_service(Request::new(CreateServiceRequest { spec: Some(spec) }))
            .await
            .expect("create service")
            .into_inner()
    }

    pub async fn get(&self, service: &str) -> ServiceView {
        self.api
            .get_service(Request::new(GetServiceRequest {
                service: service.into(),
            }))
            .await
            .expect("get service")
            .into_inner()
    }

    /// Reads the spec, edits it with `edit`, and sends it back.
    pub async fn update(&self, service: &str, edit: impl FnOnce(&mut ServiceSpec)) -> ServiceView {
        let mut spec = self.get(service).await.spec.unwrap_or_default();
        edit(&mut spec);
        self.api
            .update_service(Request::new(UpdateServiceRequest {
                service: service.into(),
                spec: Some(spec),
                force: false,
            }))
            .await
            .expect("update service")
            .into_inner()
    }

    /// Credentials for `node_id` with `role`, from this cluster's CA.
    pub fn credentials(&self, node_id: &str, role: Role) -> shoal_manager::ca::NodeCredentials {
        self.ca
            .issue_credentials(
                &PeerIdentity::new(node_id, role, CLUSTER_ID, 1).unwrap(),
                VALIDITY,
            )
            .expect("certificate")
    }

    /// Polls the store every 10 ms until `cond` holds; panics after `timeout`.
    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&StoreData) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !self.store.read(&mut cond) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every task of the cluster.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for m in &self.managers {
            m.raft.shutdown().await;
        }
        // The managers' runtime goes last, once nothing runs on it.
        let SimCluster { managers, host, .. } = self;
        drop(managers);
        drop(host);
    }
}

/// Starts sim worker `i`'s agent with its own certificate, reporting to
/// the first of `managers` that leads.
fn start_agent(
    ca: &Ca,
    i: usize,
    node_id: &str,
    managers: &[String],
    exec: &SimExecutor,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let creds = ca
        .issue_credentials(
            &PeerIdentity::new(node_id, Role::Worker, CLUSTER_ID, 1).unwrap(),
            VALIDITY,
        )
        .expect("worker certificate");
    let client_tls = tls::client_config(&creds).unwrap();
    let links = AgentLinks {
        connect: Arc::new(move |addr: &str| {
            tls::connect_lazy(addr, client_tls.clone()).map_err(|e| e.to_string())
        }),
        on_managers: None,
        on_role: None,
        // Sim nodes do not gossip: sessions alone say who is up.
        gossip: None,
    };
    let config = AgentConfig {
        node_id: node_id.to_string(),
        hostname: format!("sim{i}"),
        advertise_addr: format!("127.0.0.1:{}", 40000 + i),
        managers: managers.to_vec(),
    };
    let agent = run_agent(config, links, Arc::new(exec.clone()), None, stop);
    tokio::spawn(async move {
        if let Err(e) = agent.await {
            eprintln!("sim agent ended: {e:#}");
        }
    })
}
