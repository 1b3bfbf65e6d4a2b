//! The Control API: what the `shoal` CLI calls. Each RPC validates its
//! input (errors name the field), reads the store, and writes through Raft
//! with optimistic version checks, retrying when a controller wrote first.

pub mod clientcerts;
pub mod external;
pub mod forward;
pub mod get;
mod logs;
mod nodes;
pub mod rollout;
pub mod secrets;
pub mod spec;
pub mod tokens;
pub mod worker_node;

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::control_server::{self, ControlServer};
use shoal_proto::{
    now_ms, CreateServiceRequest, Deployment, DeploymentMode, GetServiceRequest, InfoRequest,
    InfoResponse, LeaveRequest, LeaveResponse, ListNodesRequest, ListNodesResponse,
    ListPodsRequest, ListPodsResponse, ListServicesRequest, ListServicesResponse, NodeRole,
    ObjectKind, PodState, PodView, RemoveServiceRequest, RemoveServiceResponse,
    ScaleServiceRequest, ServiceLogsRequest, ServiceView,
};
use shoal_proto::{
    Config, CreateFileObjectRequest, FileObjectRequest, IssueClientCertificateRequest,
    IssueClientCertificateResponse, JoinTokenRequest, JoinTokenResponse, ListConfigsResponse,
    ListDeploymentsRequest, ListDeploymentsResponse, ListFileObjectsRequest, ListSecretsResponse,
    ListServiceObjectsRequest, ListServiceObjectsResponse, RemoveFileObjectResponse, Secret,
    UpdateFileObjectRequest,
};
use shoal_proto::{GossipKeyRequest, GossipKeyResponse, GossipKeyView, GossipKeyring};
use shoal_proto::{
    ListReplicaSetsRequest, ListReplicaSetsResponse, Node, RemoveNodeRequest, RemoveNodeResponse,
    ReplicaSetView, RollbackServiceRequest, RolloutControlRequest, UpdateNodeRequest,
    UpdateServiceRequest, UpdateStatus,
};
use tonic::{Request, Response, Status};

use crate::ca::{Ca, CaDigest};
use crate::dispatcher::LivenessHint;
use crate::gossipkeys;
use crate::ids::new_id;
use crate::keys::ClusterKey;
use crate::objects::{is_ready, observed, pod_name, touch, version, wanted};
use crate::proposer::{all_applied, batch, Proposer};
use crate::quorum::{self, Reach, Waited};
use crate::raft::{ProposeError, RaftNode};
use crate::store::{delete, put, Store, StoreData};

pub use logs::{LogSource, LogStream};

/// Facts about the local node that Info reports.
#[derive(Debug, Clone, Default)]
pub struct LocalNode {
    pub node_id: String,
    pub cluster_id: String,
    pub hostname: String,
    pub data_dir: String,
    pub listen_addr: String,
    pub advertise_addr: String,
    pub engine_version: String,
}

/// Called by Leave: the daemon stops (and with `force`, removes its
/// containers and cluster state).
pub type LeaveHook = Arc<dyn Fn(bool) + Send + Sync>;

#[derive(Clone)]
pub struct ControlApi {
    store: Arc<Store>,
    /// None on a worker node, whose socket answers only Info and Leave
    /// (see [`worker_node::NotAManagerLayer`]).
    raft: Option<RaftNode>,
    proposer: Arc<dyn Proposer>,
    logs: Arc<dyn LogSource>,
    local: LocalNode,
    leave: LeaveHook,
    /// Seals secrets before they go into Raft.
    key: ClusterKey,
    /// The digest of the cluster's CA, for join tokens.
    ca_digest: CaDigest,
    /// The CA with its key, on a manager that holds one: it signs client
    /// certificates (IssueClientCertificate), and its key is never part of
    /// an answer. `None` answers that RPC with failed_precondition.
    ca: Option<Arc<Ca>>,
    /// How long a write waits to commit, and a read for the leader to
    /// confirm it leads, before the client gets "no quorum"
    /// (`defaults::QUORUM_WAIT_MS`; shorter in tests).
    quorum_wait: Duration,
    /// This node's gossip, for Info.
    gossip: Option<Arc<dyn LivenessHint>>,
}

/// How many times a write is retried when a controller changed the same
/// object in between.
const WRITE_RETRIES: usize = 20;

fn quorum_wait_default() -> Duration {
    Duration::from_millis(shoal_proto::defaults::QUORUM_WAIT_MS)
}

impl ControlApi {
    pub fn new(
        store: Arc<Store>,
        raft: RaftNode,
        logs: Arc<dyn LogSource>,
        local: LocalNode,
        leave: LeaveHook,
        key: ClusterKey,
        ca_digest: CaDigest,
    ) -> Self {
        ControlApi {
            store,
            proposer: Arc::new(raft.clone()),
            raft: Some(raft),
            logs,
            local,
            leave,
            key,
            ca_digest,
            ca: None,
            quorum_wait: quorum_wait_default(),
            gossip: None,
        }
    }

    /// The Control API of a worker node's socket: it holds no cluster state,
    /// so it answers Info (about this node) and Leave; serve it behind
    /// [`worker_node::NotAManagerLayer`], which refuses everything else.
    pub fn for_worker(
        logs: Arc<dyn LogSource>,
        local: LocalNode,
        leave: LeaveHook,
        ca_digest: CaDigest,
    ) -> Self {
        let store = Store::new();
        ControlApi {
            proposer: Arc::new(worker_node::NoProposer),
            store,
            raft: None,
            logs,
            local,
            leave,
            key: ClusterKey::generate(),
            ca_digest,
            ca: None,
            quorum_wait: quorum_wait_default(),
            gossip: None,
        }
    }

    /// Lets this API sign client certificates with `ca` (which must be the
    /// CA whose digest [`ControlApi::new`] was given). A builder method
    /// rather than an argument of `new`, because only a manager that holds
    /// the CA's key has one to give.
    pub fn with_ca(mut self, ca: Arc<Ca>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Lets Info show this node's gossip.
    pub fn with_gossip(mut self, gossip: Arc<dyn LivenessHint>) -> Self {
        self.gossip = Some(gossip);
        self
    }

    pub fn into_service(self) -> ControlServer<ControlApi> {
        ControlServer::new(self)
    }

    /// Replaces how long calls wait for a quorum (tests use a short one).
    pub fn with_quorum_wait(mut self, wait: Duration) -> Self {
        self.quorum_wait = wait;
        self
    }

    /// The managers this one reaches, for a no-quorum message.
    fn reach(&self) -> Reach {
        self.raft
            .as_ref()
            .map(|r| Reach::of(&r.managers()))
            .unwrap_or(Reach {
                reachable: 0,
                voters: 0,
            })
    }

    fn propose_error(&self, e: ProposeError) -> Status {
        match e {
            ProposeError::NoLeader => quorum::no_leader(self.reach()),
            ProposeError::NotLeader { .. } => Status::unavailable(e.to_string()),
            ProposeError::Fatal(_) => Status::internal(e.to_string()),
        }
    }

    /// Reads after every write committed before the call (linearizable).
    /// A leader without a quorum cannot confirm it still leads: after
    /// [`ControlApi::with_quorum_wait`] the read fails with "no quorum".
    async fn read<T>(&self, f: impl FnOnce(&StoreData) -> T) -> Result<T, Status> {
        let Some(raft) = &self.raft else {
            return Err(worker_node::not_a_manager());
        };
        match tokio::time::timeout(self.quorum_wait, raft.linearizable_barrier()).await {
            Ok(barrier) => barrier.map_err(|e| self.propose_error(e))?,
            Err(_) => {
                let reach = self.reach();
                tracing::warn!(?reach, "linearizable read timed out: no quorum");
                return Err(quorum::no_quorum(reach, Waited::Read, self.quorum_wait));
            }
        }
        Ok(self.store.read(f))
    }

    /// Runs read-modify-write `f` until its batch applies without conflict.
    async fn write<T>(
        &self,
        mut f: impl FnMut(&StoreData) -> Result<(Vec<shoal_proto::Mutation>, T), Status>,
    ) -> Result<T, Status> {
        for _ in 0..WRITE_RETRIES {
            let (mutations, out) = self.store.read(&mut f)?;
            let proposal = self.proposer.propose(batch(mutations, true));
            let result = match tokio::time::timeout(self.quorum_wait, proposal).await {
                Ok(result) => result.map_err(|e| self.propose_error(e))?,
                Err(_) => {
                    let reach = self.reach();
                    tracing::warn!(?reach, "control API write not committed in time: no quorum");
                    return Err(quorum::no_quorum(reach, Waited::Write, self.quorum_wait));
                }
            };
            if all_applied(&result) {
                return Ok(out);
            }
        }
        Err(Status::aborted("too many concurrent changes; try again"))
    }

    async fn pause_or_resume(
        &self,
        service: String,
        pause: bool,
    ) -> Result<Response<ServiceView>, Status> {
        let id = self
            .write(|d| {
                let dep = find_deployment(d, &service)?;
                let m = rollout::pause_or_resume(dep, pause, now_ms())
                    .map_err(Status::failed_precondition)?;
                Ok((m, dep.id.clone()))
            })
            .await?;
        Ok(Response::new(self.view(&id)?))
    }

    fn view(&self, id: &str) -> Result<ServiceView, Status> {
        self.store.read(|d| {
            if let Some(svc) = d.services.get(id).filter(|s| external::is_external(s)) {
                return Ok(external::view(svc));
            }
            let dep = d
                .deployments
                .get(id)
                .ok_or_else(|| Status::not_found(format!("service {id} not found")))?;
            Ok(service_view(d, dep))
        })
    }
}

/// Finds a service by exact name, exact id, or unique id prefix.
pub fn find_deployment<'a>(d: &'a StoreData, name_or_id: &str) -> Result<&'a Deployment, Status> {
    if name_or_id.is_empty() {
        return Err(Status::invalid_argument("service: no name or id given"));
    }
    if let Some(dep) = d.deployment_by_name(name_or_id) {
        return Ok(dep);
    }
    if let Some(dep) = d.deployments.get(name_or_id) {
        return Ok(dep);
    }
    let matches: Vec<&Deployment> = d
        .deployments
        .values()
        .filter(|x| x.id.starts_with(name_or_id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => match external::find(d, name_or_id) {
            Some(svc) => Err(Status::failed_precondition(format!(
                "service {} is of type ExternalName: it has no deployment, pods or revisions",
                svc.name
            ))),
            None => Err(Status::not_found(format!("service {name_or_id} not found"))),
        },
        _ => Err(Status::invalid_argument(format!(
            "service {name_or_id} is ambiguous: {} services have ids starting with it",
            matches.len()
        ))),
    }
}

pub fn service_view(d: &StoreData, dep: &Deployment) -> ServiceView {
    let svc = d.service_of_deployment(&dep.id);
    let spec = spec::spec_of(dep, svc);
    let live: Vec<_> = d
        .pods_of_deployment(&dep.id)
        .filter(|p| wanted(p))
        .collect();
    let running = live
        .iter()
        .filter(|p| observed(p) == PodState::Running)
        .count() as u64;
    let ready = live.iter().filter(|p| is_ready(p)).count() as u64;
    // Global: one pod per eligible node, counted the orchestrator's way.
    let desired = if spec.mode() == DeploymentMode::Global {
        crate::orchestrator::layout::Layout::of(d, dep, d.pods_of_deployment(&dep.id).collect())
            .desired
    } else {
        spec.replicas
    };
    let status = dep.status.clone().unwrap_or_default();
    let failed =
        crate::orchestrator::updater::failed_pods(dep, d.pods_of_deployment(&dep.id)).len();
    let updated = live
        .iter()
        .filter(|p| p.replica_set_id == status.current_replica_set_id && is_ready(p))
        .count() as u64;
    let update_status = UpdateStatus {
        state: status.update_state,
        message: status.update_message.clone(),
        started_at: status.update_started_at,
        completed_at: status.update_completed_at,
        updated,
        total: desired,
        failed: failed as u64,
    };
    ServiceView {
        update_status: Some(update_status),
        id: dep.id.clone(),
        spec: Some(spec),
        meta: dep.meta,
        desired_replicas: desired,
        running_replicas: running,
        ready_replicas: ready,
        deployment_id: dep.id.clone(),
        revision: status.revision,
        message: status.message,
    }
}

#[tonic::async_trait]
impl control_server::Control for ControlApi {
    async fn create_service(
        &self,
        request: Request<CreateServiceRequest>,
    ) -> Result<Response<ServiceView>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let spec = spec::with_defaults(spec);
        spec::validate(&spec).map_err(Status::invalid_argument)?;
        let ids = (new_id(), new_id(), new_id());
        let external = spec::service_type(&spec) == shoal_proto::service::Type::ExternalName;
        let id = self
            .write(|d| {
                if external::name_taken(d, &spec.name) {
                    return Err(Status::already_exists(format!(
                        "service {} already exists",
                        spec.name
                    )));
                }
                if external {
                    return Ok((
                        external::create(&spec, ids.2.clone(), now_ms()),
                        ids.2.clone(),
                    ));
                }
                let mut spec = spec.clone();
                let own = spec.name.clone();
                spec::allocate_ports(d, &mut spec, &own).map_err(Status::invalid_argument)?;
                secrets::resolve_references(d, &mut spec).map_err(Status::invalid_argument)?;
                let (dep, rs, svc) = spec::objects_for(&spec, ids.clone(), now_ms());
                Ok((vec![put(dep, 0), put(rs, 0), put(svc, 0)], ids.0.clone()))
            })
            .await?;
        tracing::info!(service = %spec.name, id = %id, "service created");
        Ok(Response::new(self.view(&id)?))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<ServiceView>, Status> {
        let name = request.into_inner().service;
        let view = self
            .read(|d| match external::find(d, &name) {
                Some(svc) => Ok(external::view(svc)),
                None => find_deployment(d, &name).map(|dep| service_view(d, dep)),
            })
            .await??;
        Ok(Response::new(view))
    }

    async fn list_services(
        &self,
        _: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let mut services = self
            .read(|d| {
                d.deployments
                    .values()
                    .map(|dep| service_view(d, dep))
                    .chain(
                        d.services
                            .values()
                            .filter(|s| external::is_external(s))
                            .map(external::view),
                    )
                    .collect::<Vec<_>>()
            })
            .await?;
        services.sort_by(|a, b| {
            let name =
                |v: &ServiceView| v.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            name(a).cmp(&name(b))
        });
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn remove_service(
        &self,
        request: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        let name = request.into_inner().service;
        let id = self
            .write(|d| {
                if let Some(svc) = external::find(d, &name) {
                    return Ok((external::remove(svc), svc.id.clone()));
                }
                let dep = find_deployment(d, &name)?;
                // ReplicaSets stay until their pods are gone (the orchestrator
                // deletes them): pods need their template to stop gracefully.
                let mut m = vec![delete(
                    ObjectKind::Deployment,
                    dep.id.clone(),
                    version(&dep.meta),
                )];
                if let Some(svc) = d.service_of_deployment(&dep.id) {
                    m.push(delete(
                        ObjectKind::Service,
                        svc.id.clone(),
                        version(&svc.meta),
                    ));
                }
                Ok((m, dep.id.clone()))
            })
            .await?;
        tracing::info!(service = %name, id = %id, "service removed");
        Ok(Response::new(RemoveServiceResponse { id }))
    }

    async fn scale_service(
        &self,
        request: Request<ScaleServiceRequest>,
    ) -> Result<Response<ServiceView>, Status> {
        let req = request.into_inner();
        if req.replicas > 100_000 {
            return Err(Status::invalid_argument(format!(
                "replicas: {} is more than 100000",
                req.replicas
            )));
        }
        let id = self
            .write(|d| {
                let dep = find_deployment(d, &req.service)?;
                let spec = dep.spec.clone().unwrap_or_default();
                if spec.mode() != DeploymentMode::Replicated {
                    return Err(Status::failed_precondition(format!(
                        "service {}: scale can only be used with replicated mode",
                        spec.name
                    )));
                }
                let mut m = Vec::new();
                let mut dep2 = dep.clone();
                dep2.spec.get_or_insert_with(Default::default).replicas = req.replicas;
                touch(&mut dep2.meta, now_ms());
                m.push(put(dep2, version(&dep.meta)));
                let current = dep
                    .status
                    .as_ref()
                    .map(|s| s.current_replica_set_id.clone())
                    .unwrap_or_default();
                if let Some(rs) = d.replica_sets.get(&current) {
                    let mut rs2 = rs.clone();
                    rs2.replicas = req.replicas;
                    m.push(put(rs2, version(&rs.meta)));
                }
                Ok((m, dep.id.clone()))
            })
            .await?;
        Ok(Response::new(self.view(&id)?))
    }

    async fn list_pods(
        &self,
        request: Request<ListPodsRequest>,
    ) -> Result<Response<ListPodsResponse>, Status> {
        let req = request.into_inner();
        let (pods, unplaced) = self
            .read(|d| -> Result<(Vec<PodView>, Vec<String>), Status> {
                if external::find(d, &req.service).is_some() {
                    return Ok((vec![], vec![])); // an ExternalName service has no pods
                }
                let only = if req.service.is_empty() {
                    None
                } else {
                    Some(find_deployment(d, &req.service)?.id.clone())
                };
                let node = if req.node.is_empty() {
                    String::new()
                } else {
                    nodes::find_node(d, &req.node)?.id.clone()
                };
                let mut pods: Vec<PodView> = d
                    .pods
                    .values()
                    .filter(|p| only.as_ref().is_none_or(|id| &p.deployment_id == id))
                    .filter(|p| node.is_empty() || p.node_id == node)
                    .filter(|p| req.include_history || wanted(p))
                    .map(|p| pod_view(d, p))
                    .collect();
                pods.sort_by(|a, b| {
                    let key = |v: &PodView| {
                        let p = v.pod.as_ref().expect("set by pod_view");
                        (
                            v.service_name.clone(),
                            p.slot,
                            p.node_id.clone(),
                            u64::MAX - p.attempt,
                        )
                    };
                    key(a).cmp(&key(b))
                });
                let unplaced = match &only {
                    Some(id) => d.deployments.get(id).map_or_else(Vec::new, |dep| {
                        crate::orchestrator::layout::unplaced_global(d, dep)
                            .into_iter()
                            .filter(|(n, _)| node.is_empty() || *n == node)
                            .map(|(n, why)| format!("{}: {why}", nodes::display_name(d, &n)))
                            .collect()
                    }),
                    None => Vec::new(),
                };
                Ok((pods, unplaced))
            })
            .await??;
        Ok(Response::new(ListPodsResponse { pods, unplaced }))
    }

    type ServiceLogsStream = LogStream;

    async fn service_logs(
        &self,
        request: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let req = request.into_inner();
        let dep_id = self
            .read(|d| find_deployment(d, &req.service).map(|x| x.id.clone()))
            .await??;
        Ok(Response::new(logs::stream_service_logs(
            self.store.clone(),
            self.logs.clone(),
            dep_id,
            req.follow,
            req.tail,
        )))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let only = request.into_inner().node;
        let raft_view = self
            .raft
            .as_ref()
            .map(RaftNode::managers)
            .unwrap_or_default();
        let (nodes, managers) = self
            .read(|d| -> Result<_, Status> {
                let nodes: Vec<Node> = if only.is_empty() {
                    d.nodes.values().cloned().collect()
                } else {
                    vec![nodes::find_node(d, &only)?.clone()]
                };
                let mut managers = nodes::manager_statuses(d, &raft_view);
                managers.retain(|m| nodes.iter().any(|n| n.id == m.node_id));
                Ok((nodes, managers))
            })
            .await??;
        Ok(Response::new(ListNodesResponse { nodes, managers }))
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<Node>, Status> {
        let req = request.into_inner();
        self.read(|_| ()).await?;
        let raft_view = self
            .raft
            .as_ref()
            .map(RaftNode::managers)
            .unwrap_or_default();
        let id = self
            .write(|d| nodes::update(d, &raft_view, &req, now_ms()))
            .await?;
        let node = self
            .store
            .read(|d| d.nodes.get(&id).cloned())
            .ok_or_else(|| Status::not_found(format!("node {id} was removed meanwhile")))?;
        Ok(Response::new(node))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let req = request.into_inner();
        self.read(|_| ()).await?;
        self.write(|d| Ok((nodes::remove(d, &req.node, req.force, now_ms())?, ())))
            .await?;
        Ok(Response::new(RemoveNodeResponse {}))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let local = &self.local;
        let resp = self.store.read(|d| {
            let cluster = d.cluster().cloned().unwrap_or_default();
            InfoResponse {
                node_id: local.node_id.clone(),
                node_hostname: local.hostname.clone(),
                cluster_id: if cluster.id.is_empty() {
                    local.cluster_id.clone()
                } else {
                    cluster.id.clone()
                },
                is_manager: self.raft.is_some(),
                is_leader: self.raft.as_ref().is_some_and(RaftNode::is_leader),
                managers: d
                    .nodes
                    .values()
                    .filter(|n| {
                        n.spec
                            .as_ref()
                            .is_some_and(|s| s.role() == NodeRole::Manager)
                    })
                    .count() as u32,
                nodes: d.nodes.len() as u32,
                services: d.services.len() as u32,
                pods_running: d
                    .pods
                    .values()
                    .filter(|p| observed(p) == PodState::Running)
                    .count() as u32,
                daemon_version: env!("CARGO_PKG_VERSION").to_string(),
                data_dir: local.data_dir.clone(),
                engine_version: local.engine_version.clone(),
                listen_addr: local.listen_addr.clone(),
                advertise_addr: local.advertise_addr.clone(),
                worker_join_command: tokens::worker_join_command(
                    &cluster,
                    &self.ca_digest,
                    &local.advertise_addr,
                ),
                raft_last_applied: self.raft.as_ref().map_or(0, RaftNode::last_applied),
                gossip: self.gossip.as_ref().map(|g| g.info()),
            }
        });
        Ok(Response::new(resp))
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<ServiceView>, Status> {
        let req = request.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let id = self
            .write(|d| {
                if let Some(svc) = external::find(d, &req.service) {
                    let spec = spec::with_defaults(spec.clone());
                    spec::validate(&spec).map_err(Status::invalid_argument)?;
                    let m =
                        external::update(svc, &spec, now_ms()).map_err(Status::invalid_argument)?;
                    return Ok((m, svc.id.clone()));
                }
                let dep = find_deployment(d, &req.service)?;
                let m = rollout::update(d, dep, spec.clone(), req.force, now_ms())
                    .map_err(Status::invalid_argument)?;
                Ok((m, dep.id.clone()))
            })
            .await?;
        tracing::info!(service = %req.service, "service updated");
        Ok(Response::new(self.view(&id)?))
    }

    async fn rollback_service(
        &self,
        request: Request<RollbackServiceRequest>,
    ) -> Result<Response<ServiceView>, Status> {
        let req = request.into_inner();
        let id = self
            .write(|d| {
                let dep = find_deployment(d, &req.service)?;
                let m = rollout::rollback(d, dep, req.to_revision, now_ms())
                    .map_err(Status::failed_precondition)?;
                Ok((m, dep.id.clone()))
            })
            .await?;
        tracing::info!(service = %req.service, to_revision = req.to_revision, "rollback requested");
        Ok(Response::new(self.view(&id)?))
    }

    async fn pause_rollout(
        &self,
        request: Request<RolloutControlRequest>,
    ) -> Result<Response<ServiceView>, Status> {
        self.pause_or_resume(request.into_inner().service, true)
            .await
    }

    async fn resume_rollout(
        &self,
        request: Request<RolloutControlRequest>,
    ) -> Result<Response<ServiceView>, Status> {
        self.pause_or_resume(request.into_inner().service, false)
            .await
    }

    async fn list_replica_sets(
        &self,
        request: Request<ListReplicaSetsRequest>,
    ) -> Result<Response<ListReplicaSetsResponse>, Status> {
        let req = request.into_inner();
        let replica_sets = self
            .read(|d| -> Result<Vec<ReplicaSetView>, Status> {
                let deps: Vec<&Deployment> = if req.service.is_empty() {
                    d.deployments.values().collect()
                } else {
                    vec![find_deployment(d, &req.service)?]
                };
                Ok(deps
                    .into_iter()
                    .flat_map(|dep| replica_set_views(d, dep))
                    .collect())
            })
            .await??;
        Ok(Response::new(ListReplicaSetsResponse { replica_sets }))
    }

    async fn list_deployments(
        &self,
        request: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        let name = request.into_inner().name;
        let deployments = self.read(|d| get::deployment_views(d, &name)).await??;
        Ok(Response::new(ListDeploymentsResponse { deployments }))
    }

    async fn list_service_objects(
        &self,
        request: Request<ListServiceObjectsRequest>,
    ) -> Result<Response<ListServiceObjectsResponse>, Status> {
        let name = request.into_inner().name;
        let services = self.read(|d| get::service_object_views(d, &name)).await??;
        Ok(Response::new(ListServiceObjectsResponse { services }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        let force = request.into_inner().force;
        if !force && self.raft.is_some() {
            let managers = self.store.read(|d| {
                d.nodes
                    .values()
                    .filter(|n| {
                        n.spec
                            .as_ref()
                            .is_some_and(|s| s.role() == NodeRole::Manager)
                    })
                    .count()
            });
            return Err(Status::failed_precondition(if managers > 1 {
                "this node is a manager: demote it first (shoal node demote, on another manager), then leave; or leave --force (the other managers then count it as unreachable until it is removed with shoal node rm)"
            } else {
                "this node is the only manager: leaving loses the cluster's state. Use shoal leave --force to leave anyway"
            }));
        }
        (self.leave)(force);
        Ok(Response::new(LeaveResponse {}))
    }

    async fn create_secret(
        &self,
        request: Request<CreateFileObjectRequest>,
    ) -> Result<Response<Secret>, Status> {
        let spec = request.into_inner().spec;
        Ok(Response::new(self.create_file_object(spec).await?))
    }

    async fn update_secret(
        &self,
        request: Request<UpdateFileObjectRequest>,
    ) -> Result<Response<Secret>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.update_file_object(req.name, req.spec).await?,
        ))
    }

    async fn get_secret(
        &self,
        request: Request<FileObjectRequest>,
    ) -> Result<Response<Secret>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(self.get_file_object(name).await?))
    }

    async fn list_secrets(
        &self,
        _: Request<ListFileObjectsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        let secrets = self.list_file_objects().await?;
        Ok(Response::new(ListSecretsResponse { secrets }))
    }

    async fn remove_secret(
        &self,
        request: Request<FileObjectRequest>,
    ) -> Result<Response<RemoveFileObjectResponse>, Status> {
        let name = request.into_inner().name;
        let id = self.remove_file_object::<Secret>(name).await?;
        Ok(Response::new(RemoveFileObjectResponse { id }))
    }

    async fn create_config(
        &self,
        request: Request<CreateFileObjectRequest>,
    ) -> Result<Response<Config>, Status> {
        let spec = request.into_inner().spec;
        Ok(Response::new(self.create_file_object(spec).await?))
    }

    async fn update_config(
        &self,
        request: Request<UpdateFileObjectRequest>,
    ) -> Result<Response<Config>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.update_file_object(req.name, req.spec).await?,
        ))
    }

    async fn get_config(
        &self,
        request: Request<FileObjectRequest>,
    ) -> Result<Response<Config>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(self.get_file_object(name).await?))
    }

    async fn list_configs(
        &self,
        _: Request<ListFileObjectsRequest>,
    ) -> Result<Response<ListConfigsResponse>, Status> {
        let configs = self.list_file_objects().await?;
        Ok(Response::new(ListConfigsResponse { configs }))
    }

    async fn remove_config(
        &self,
        request: Request<FileObjectRequest>,
    ) -> Result<Response<RemoveFileObjectResponse>, Status> {
        let name = request.into_inner().name;
        let id = self.remove_file_object::<Config>(name).await?;
        Ok(Response::new(RemoveFileObjectResponse { id }))
    }

    async fn get_join_token(
        &self,
        request: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        let role = tokens::requested_role(request.into_inner().role)?;
        let resp = self
            .read(|d| {
                let cluster = tokens::cluster(d)?;
                tokens::response(cluster, &self.ca_digest, role, &self.local.advertise_addr)
            })
            .await??;
        Ok(Response::new(resp))
    }

    async fn rotate_join_token(
        &self,
        request: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        let role = tokens::requested_role(request.into_inner().role)?;
        let cluster = self
            .write(|d| Ok(tokens::rotate(tokens::cluster(d)?, role)))
            .await?;
        tracing::info!(%role, "join token rotated: the previous one no longer admits new nodes");
        let resp = tokens::response(&cluster, &self.ca_digest, role, &self.local.advertise_addr)?;
        Ok(Response::new(resp))
    }

    async fn get_gossip_keys(
        &self,
        _: Request<GossipKeyRequest>,
    ) -> Result<Response<GossipKeyResponse>, Status> {
        let ring = self
            .read(|d| Ok::<_, Status>(tokens::cluster(d)?.gossip.clone()))
            .await??;
        Ok(Response::new(gossip_key_view(ring.unwrap_or_default())))
    }

    /// Starts a rotation: the new key is installed now; the leader makes
    /// it the primary and retires the old one once every node has it
    /// (see [`gossipkeys`]).
    async fn rotate_gossip_key(
        &self,
        _: Request<GossipKeyRequest>,
    ) -> Result<Response<GossipKeyResponse>, Status> {
        let ring = self
            .write(|d| {
                let cluster = tokens::cluster(d)?;
                let (write, next) =
                    gossipkeys::change(cluster, gossipkeys::Step::Install, &self.key, now_ms())
                        .map_err(|e| Status::internal(format!("cannot make a gossip key: {e}")))?;
                Ok((vec![write], next))
            })
            .await?;
        tracing::info!(version = ring.version, "gossip key rotation started");
        Ok(Response::new(gossip_key_view(ring)))
    }

    async fn issue_client_certificate(
        &self,
        request: Request<IssueClientCertificateRequest>,
    ) -> Result<Response<IssueClientCertificateResponse>, Status> {
        // The cluster's epoch as of every committed write (and on a worker's
        // socket, which has no store, not-a-manager).
        self.read(|_| ()).await?;
        let resp = clientcerts::issue(
            self.ca.as_deref(),
            &self.store,
            request.get_ref(),
            &self.local.advertise_addr,
        )?;
        Ok(Response::new(resp))
    }
}

/// The keyring without its keys: ids and ages only.
fn gossip_key_view(ring: GossipKeyring) -> GossipKeyResponse {
    GossipKeyResponse {
        keys: ring
            .keys
            .iter()
            .map(|k| GossipKeyView {
                id: k.id,
                created_ms: k.created_ms,
            })
            .collect(),
        primary: ring.primary,
        version: ring.version,
    }
}

fn pod_view(d: &StoreData, p: &shoal_proto::Pod) -> PodView {
    let service_name = d
        .deployments
        .get(&p.deployment_id)
        .and_then(|x| x.spec.as_ref())
        .map_or_else(|| p.deployment_id.clone(), |s| s.name.clone());
    let image = d
        .replica_sets
        .get(&p.replica_set_id)
        .and_then(|rs| rs.template.as_ref())
        .and_then(|t| t.container.as_ref())
        .map(|c| c.image.clone())
        .unwrap_or_default();
    let node_hostname = d
        .nodes
        .get(&p.node_id)
        .and_then(|n| n.status.as_ref())
        .map(|s| s.hostname.clone())
        .unwrap_or_default();
    PodView {
        name: pod_name(&service_name, p),
        pod: Some(p.clone()),
        service_name,
        image,
        node_hostname,
    }
}

/// One row per revision of a deployment, newest first.
fn replica_set_views(d: &StoreData, dep: &Deployment) -> Vec<ReplicaSetView> {
    let spec = dep.spec.clone().unwrap_or_default();
    let current = dep
        .status
        .as_ref()
        .map(|s| s.current_replica_set_id.clone())
        .unwrap_or_default();
    let mut v: Vec<ReplicaSetView> = d
        .replica_sets_of_deployment(&dep.id)
        .into_iter()
        .map(|rs| {
            let live: Vec<_> = d
                .pods_of_deployment(&dep.id)
                .filter(|p| p.replica_set_id == rs.id && wanted(p))
                .collect();
            ReplicaSetView {
                replica_set: Some(rs.clone()),
                service_name: spec.name.clone(),
                current: rs.id == current,
                desired: if rs.id == current { spec.replicas } else { 0 },
                current_pods: live.len() as u64,
                ready: live.iter().filter(|p| is_ready(p)).count() as u64,
            }
        })
        .collect();
    v.reverse();
    v
}
