//! An in-process cluster for tests that need many nodes but no Docker: one
//! manager on real Raft (durable, in a temp dir) with its dispatcher on a
//! loopback port, and N workers running the real agent over the real
//! dispatcher protocol with the in-memory `sim` executor. Tests drive it
//! through the Control API and read the store directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_manager::controlapi::{ControlApi, LocalNode, LogSource};
use shoal_manager::dispatcher::Dispatcher;
use shoal_manager::raft::{RaftConfig, RaftNode};
use shoal_manager::store::{Store, StoreData};
use shoal_proto::control_server::Control;
use shoal_proto::{
    CreateServiceRequest, GetServiceRequest, LogLine, NodeState, ServiceSpec, ServiceView,
    UpdateServiceRequest,
};
use shoal_worker::agent::{run_agent, AgentConfig};
use shoal_worker::exec::sim::SimExecutor;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::Request;

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
        // One key for the control API (seals) and the dispatcher (opens).
        let key = shoal_manager::keys::ClusterKey::generate();
        let dispatcher = Dispatcher::new(
            store.clone(),
            Arc::new(raft.clone()),
            key.clone(),
            shutdown.child_token(),
        );
        let server = tonic::transport::Server::builder()
            .add_service(raft.grpc_service())
            .add_service(dispatcher.clone().into_service())
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(tcp),
                shutdown.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        raft.bootstrap_single().await.expect("bootstrap");
        raft.wait_for_leader(Duration::from_secs(10))
            .await
            .expect("leader");
        tokio::spawn(shoal_manager::leader::supervise(
            raft.clone(),
            store.clone(),
            dispatcher,
            shutdown.clone(),
        ));
        let mut execs = Vec::new();
        for i in 0..workers {
            let exec = SimExecutor::new();
            let config = AgentConfig {
                node_id: format!("sim-node-{i}"),
                hostname: format!("sim{i}"),
                advertise_addr: format!("127.0.0.1:{}", 40000 + i),
                dispatcher_endpoint: format!("http://{addr}"),
            };
            tokio::spawn(run_agent(
                config,
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
            shoal_manager::ca::Ca::generate("sim", std::time::SystemTime::now())
                .expect("a CA")
                .digest()
                .clone(),
        );
        let cluster = SimCluster {
            api,
            store,
            workers: execs,
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
