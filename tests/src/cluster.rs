//! An in-process cluster for tests that need many nodes but no Docker: one
//! manager on real Raft (durable, in a temp dir) with its dispatcher on a
//! loopback port, and N workers running the real agent over the real
//! dispatcher protocol with the in-memory `sim` executor. Tests drive it
//! through the Control API and read the store directly.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_manager::ca::authz::{AuthzLayer, Policy};
use shoal_manager::ca::{tls, Ca, PeerIdentity, Role};
use shoal_manager::controlapi::{ControlApi, LocalNode, LogSource};
use shoal_manager::dispatcher::Dispatcher;
use shoal_manager::enrollment::StoreView;
use shoal_manager::proposer::{all_applied, batch, Proposer};
use shoal_manager::raft::{RaftConfig, RaftNode};
use shoal_manager::store::put;
use shoal_manager::store::{Store, StoreData};
use shoal_proto::control_server::Control;
use shoal_proto::{
    Cluster, CreateServiceRequest, GetServiceRequest, LogLine, Node, NodeAvailability, NodeRole,
    NodeSpec, NodeState, ServiceSpec, ServiceView, UpdateServiceRequest,
};
use shoal_worker::agent::{run_agent, AgentConfig, AgentLinks};
use shoal_worker::exec::sim::SimExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Request;

/// The sim cluster's id, in its CA and every certificate.
const CLUSTER_ID: &str = "sim-cluster";

/// Records the cluster and admits the sim workers, as `shoal init` and
/// `shoal join` do, so their certificates are accepted.
async fn admit(raft: &RaftNode, node_ids: &[String]) {
    let cluster = Cluster {
        id: CLUSTER_ID.into(),
        name: "sim".into(),
        epoch: 1,
        ..Default::default()
    };
    let mut mutations = vec![put(cluster, 0)];
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

pub struct SimCluster {
    pub api: ControlApi,
    pub store: Arc<Store>,
    pub workers: Vec<SimExecutor>,
    /// The manager's cluster gRPC address (mutual TLS).
    pub addr: String,
    /// The cluster's CA, to issue test certificates.
    pub ca: Arc<Ca>,
    raft: RaftNode,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl SimCluster {
    /// Starts a manager and `workers` sim workers, and waits until every
    /// worker's node is Ready.
    pub async fn start(workers: usize) -> SimCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = tcp.local_addr().unwrap();
        let store = Store::new();
        let raft = RaftNode::open(
            RaftConfig {
                node_id: 1,
                data_dir: dir.path().to_path_buf(),
                advertise_addr: addr.to_string(),
                tls: None,
            },
            store.clone(),
        )
        .await
        .expect("open raft");
        let shutdown = CancellationToken::new();
        raft.bootstrap_single().await.expect("bootstrap");
        raft.wait_for_leader(Duration::from_secs(10))
            .await
            .expect("leader");

        // The cluster's PKI, as `shoal init` and `shoal join` make it: the
        // workers are admitted nodes with their own certificates, and talk
        // to the dispatcher over mutual TLS behind the authorization layer.
        let ca = Arc::new(Ca::generate(CLUSTER_ID, SystemTime::now()).expect("a CA"));
        let node_ids: Vec<String> = (0..workers).map(|i| format!("sim-node-{i}")).collect();
        admit(&raft, &node_ids).await;
        let validity = Duration::from_secs(3_600);
        let manager_creds = ca
            .issue_credentials(
                &PeerIdentity::new("sim-manager", Role::Manager, CLUSTER_ID, 1).unwrap(),
                validity,
            )
            .expect("manager certificate");

        // One key for the control API (seals) and the dispatcher (opens).
        let key = shoal_manager::keys::ClusterKey::generate();
        let proposer: Arc<dyn Proposer> = Arc::new(raft.clone());
        let dispatcher = Dispatcher::new(
            store.clone(),
            proposer.clone(),
            key.clone(),
            shutdown.child_token(),
        );
        let view = Arc::new(StoreView::new(store.clone(), proposer));
        let server = tonic::transport::Server::builder()
            .layer(AuthzLayer::new(Policy::new(view)))
            .add_service(raft.grpc_service())
            .add_service(dispatcher.clone().into_service())
            .serve_with_incoming_shutdown(
                tls::incoming(tcp, tls::server_config(&manager_creds).unwrap()),
                shutdown.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        tokio::spawn(shoal_manager::leader::supervise(
            raft.clone(),
            store.clone(),
            dispatcher,
            shutdown.clone(),
        ));
        let mut execs = Vec::new();
        for (i, node_id) in node_ids.iter().enumerate() {
            let exec = SimExecutor::new();
            let creds = ca
                .issue_credentials(
                    &PeerIdentity::new(node_id, Role::Worker, CLUSTER_ID, 1).unwrap(),
                    validity,
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
                node_id: node_id.clone(),
                hostname: format!("sim{i}"),
                advertise_addr: format!("127.0.0.1:{}", 40000 + i),
                managers: vec![addr.to_string()],
            };
            tokio::spawn(run_agent(
                config,
                links,
                Arc::new(exec.clone()),
                None,
                shutdown.child_token(),
            ));
            execs.push(exec);
        }
        let api = ControlApi::new(
            store.clone(),
            raft.clone(),
            Arc::new(NoLogs),
            LocalNode::default(),
            Arc::new(|_| {}),
            key,
            ca.digest().clone(),
        );
        let cluster = SimCluster {
            api,
            store,
            workers: execs,
            addr: addr.to_string(),
            ca,
            raft,
            shutdown,
            _dir: dir,
        };
        cluster
            .wait("every sim node to be ready", Duration::from_secs(20), |d| {
                let ready = d
                    .nodes
                    .values()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .is_some_and(|s| s.state() == NodeState::Ready)
                    })
                    .count();
                ready == workers
            })
            .await;
        cluster
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
                Duration::from_secs(3_600),
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
        self.raft.shutdown().await;
    }
}
