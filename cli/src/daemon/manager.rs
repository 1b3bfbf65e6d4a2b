//! The manager role of the node daemon: Raft and the store it applies to,
//! the controllers on the leader, and the cluster gRPC port, where Raft,
//! the dispatcher, the CA and the Control API are served over mutual TLS
//! behind the default-deny authorization layer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use shoal_manager::ca::authz::{AuthzLayer, Policy};
use shoal_manager::ca::{tls, JoinSecrets, NodeCaService, NodeCredentials};
use shoal_manager::controlapi::forward::ForwardLayer;
use shoal_manager::controlapi::{ControlApi, LeaveHook, LocalNode, LogSource};
use shoal_manager::dispatcher::{Dispatcher, LivenessHint};
use shoal_manager::enrollment::StoreView;
use shoal_manager::keys::ClusterKey;
use shoal_manager::managers::ManagersService;
use shoal_manager::proposer::{all_applied, batch, Proposer};
use shoal_manager::raft::{RaftConfig, RaftNode};
use shoal_manager::store::{put, Store};
use shoal_proto::managers_client::ManagersClient;
use shoal_proto::node_ca_server::NodeCaServer;
use shoal_proto::{
    now_ms, Cluster, JoinRaftRequest, Meta, Node, NodeAvailability, NodeRole, NodeSpec, NodeState,
    NodeStatus,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{self, NodeConfig};
use super::pki::{self, NodePki};

/// What the daemon hands the manager role.
pub struct Start<'a> {
    pub data_dir: &'a Path,
    pub cfg: &'a NodeConfig,
    /// Create the cluster rather than resume it.
    pub init: bool,
    pub local: LocalNode,
    pub logs: Arc<dyn LogSource>,
    pub leave: LeaveHook,
    /// This node's gossip, a hint for the node monitor.
    pub gossip: Option<Arc<dyn LivenessHint>>,
}

/// The running manager role.
pub struct Manager {
    pub raft: RaftNode,
    pub control: ControlApi,
    /// Forwards the Control API to the leader (on the Unix socket too).
    pub forward: ForwardLayer,
    pub credentials: NodeCredentials,
    cluster_task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Manager {
    /// Stops serving peers, then Raft (after the agent, which reports to it).
    pub async fn stop(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.cluster_task).await;
        self.raft.shutdown().await;
    }
}

/// The cluster key that seals secrets: made at init, read on restart. A
/// node initialized before secrets existed gets one on its next start.
fn cluster_key(data_dir: &Path, init: bool) -> Result<ClusterKey> {
    let path = data_dir.join(shoal_proto::defaults::CLUSTER_KEY_FILE);
    if !init && path.exists() {
        return Ok(ClusterKey::load(&path)?);
    }
    if !init {
        tracing::warn!(path = %path.display(), "no cluster key: creating one (secrets created before it, if any, cannot be decrypted)");
    }
    let key = ClusterKey::generate();
    key.save(&path)?;
    Ok(key)
}

/// Creates the Cluster and this node's Node object (init only).
async fn create_cluster_objects(raft: &RaftNode, cfg: &NodeConfig) -> Result<()> {
    let now = now_ms();
    let meta = Some(Meta {
        version: 0,
        created_at: now,
        updated_at: now,
    });
    // Checked by the token parser: 32 characters of a-z0-9 each.
    let secrets = JoinSecrets::generate();
    let cluster = Cluster {
        id: cfg.cluster_id.clone(),
        meta,
        name: "default".into(),
        worker_join_secret: secrets.worker,
        manager_join_secret: secrets.manager,
        epoch: shoal_proto::defaults::FIRST_CLUSTER_EPOCH,
        removed_nodes: Vec::new(),
        // Made by the leader's gossip key controller within a second.
        gossip: None,
    };
    let node = Node {
        id: cfg.node_id.clone(),
        meta,
        spec: Some(NodeSpec {
            role: NodeRole::Manager as i32,
            availability: NodeAvailability::Active as i32,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Unknown as i32,
            hostname: config::hostname(),
            addr: cfg.advertise_addr.clone(),
            ..Default::default()
        }),
        raft_id: cfg.raft_id,
    };
    let result = raft
        .propose(batch(vec![put(cluster, 0), put(node, 0)], true))
        .await
        .context("cannot record the new cluster")?;
    if !all_applied(&result) {
        bail!("cannot record the new cluster: it already exists in this data dir");
    }
    Ok(())
}

/// A data dir from before the PKI: only ever a one-manager cluster, which
/// elects itself without the network, so its epoch can be read from Raft
/// before anything is served.
async fn pki_for_old_data_dir(
    raft: &RaftNode,
    store: &Store,
    data_dir: &Path,
    cfg: &NodeConfig,
) -> Result<NodePki> {
    raft.wait_for_leader(Duration::from_secs(30))
        .await
        .context("no Raft leader was elected")?;
    raft.linearizable_barrier()
        .await
        .context("cannot read the cluster's epoch from Raft")?;
    let epoch = store
        .read(|d| d.cluster().map(|c| c.epoch))
        .with_context(|| {
            format!(
                "the Raft log in {} holds no cluster object, so this node cannot \
                 make its CA: the data dir is incomplete; restore it from a backup, \
                 or start over with `shoal leave --force` and `shoal init`",
                data_dir.display()
            )
        })?;
    pki::create_for_old_data_dir(data_dir, cfg, epoch)
}

/// Starts the manager role and returns once it serves and a leader is known
/// (a resumed manager without a quorum returns after 5 s without one).
pub async fn start(start: Start<'_>, shutdown: &CancellationToken) -> Result<Manager> {
    let Start {
        data_dir,
        cfg,
        init,
        local,
        logs,
        leave,
        gossip,
    } = start;
    let key = cluster_key(data_dir, init)?;
    let listen = config::check_listen_addr(&cfg.listen_addr)?;
    let tcp = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (is another shoal daemon using it?)")
    })?;
    // The CA and this node's certificate exist before anything is served
    // (made after the port is bound: a busy port leaves no CA behind).
    let pki = if init {
        Some(pki::create(
            data_dir,
            cfg,
            shoal_proto::defaults::FIRST_CLUSTER_EPOCH,
        )?)
    } else {
        pki::load(data_dir, cfg)?
    };

    // Raft between managers is mutual TLS with this node's certificate; a
    // data dir from before the PKI has no certificate yet, and is a
    // one-manager cluster (no peers) until its next start.
    let peer_tls = match &pki {
        Some(pki) => Some(tls::client_config(&pki.credentials)?),
        None => None,
    };
    let store = Store::new();
    let raft = RaftNode::open(
        RaftConfig {
            node_id: cfg.raft_id,
            data_dir: data_dir.to_path_buf(),
            advertise_addr: cfg.advertise_addr.clone(),
            tls: peer_tls,
        },
        store.clone(),
    )
    .await
    .with_context(|| format!("cannot open the Raft log in {}", data_dir.display()))?;
    if init {
        raft.bootstrap_single()
            .await
            .context("cannot bootstrap Raft")?;
    }
    let pki = match pki {
        Some(pki) => pki,
        None => pki_for_old_data_dir(&raft, &store, data_dir, cfg).await?,
    };
    tracing::info!(
        ca_digest = %pki.ca.digest(),
        identity = %pki.credentials.identity(),
        "cluster CA and node certificate loaded"
    );
    let ca = Arc::new(pki.ca);
    let proposer: Arc<dyn Proposer> = Arc::new(raft.clone());
    let own = pki.credentials.identity();
    let view = Arc::new(
        StoreView::new(store.clone(), proposer.clone())
            .until_replicated(&own.cluster_id, own.epoch),
    );
    let mut dispatcher =
        Dispatcher::new(store.clone(), proposer, key.clone(), shutdown.child_token());
    if let Some(g) = &gossip {
        dispatcher = dispatcher.with_liveness(g.clone());
    }
    let control = ControlApi::new(
        store.clone(),
        raft.clone(),
        logs,
        local,
        leave,
        key.clone(),
        ca.digest().clone(),
    )
    .with_ca(ca.clone());
    let control = match gossip {
        Some(g) => control.with_gossip(g),
        None => control,
    };

    // Cluster gRPC: mutual TLS, every call authorized against the store
    // (first, so a caller is checked before anything is forwarded for it),
    // Control API calls forwarded to the leader.
    let server_tls = tls::server_config(&pki.credentials)?;
    let client_tls = tls::client_config(&pki.credentials)?;
    let forward = ForwardLayer::new(raft.clone(), client_tls.clone());
    let node_ca = NodeCaService::new(
        ca.clone(),
        view.clone(),
        shoal_proto::defaults::node_cert_validity(),
    );
    let cluster_server = tonic::transport::Server::builder()
        .layer(AuthzLayer::new(Policy::new(view)))
        .layer(forward.clone())
        .add_service(raft.grpc_service())
        .add_service(dispatcher.clone().into_service())
        .add_service(NodeCaServer::new(node_ca))
        .add_service(
            ManagersService::new(ca.clone(), key, raft.clone(), store.clone()).into_service(),
        )
        .add_service(control.clone().into_service())
        .serve_with_incoming_shutdown(
            tls::incoming(tcp, server_tls),
            shutdown.clone().cancelled_owned(),
        );
    let cluster_task = tokio::spawn(cluster_server);

    let resumed = !init && raft.is_initialized().await;
    if !init && !resumed {
        // A manager that joined (or was promoted) and is not in Raft yet.
        join_raft(cfg, client_tls).await?;
    }
    // A resumed manager hears from a live leader within a heartbeat, or
    // takes part in an election that takes about a second.
    let wait = if resumed { 5 } else { 30 };
    let elected = raft.wait_for_leader(Duration::from_secs(wait)).await;
    match elected {
        Ok(_) => {}
        // A manager resumed while a majority of managers is down (they
        // restart one by one, or they are lost) still serves: its socket
        // then says "no quorum" and how to recover, and it takes part in
        // the election as soon as the others are back.
        Err(e) if resumed => tracing::warn!(
            error = %e,
            "no Raft leader yet: serving anyway; cluster writes fail until a majority of \
             managers is back (or `shoal init --force-new-cluster` on a survivor)"
        ),
        Err(e) => return Err(e).context("no Raft leader was elected"),
    }
    if init {
        create_cluster_objects(&raft, cfg).await?;
        config::save(data_dir, cfg)?;
        tracing::info!(cluster = %cfg.cluster_id, node = %cfg.node_id, "cluster created");
    }
    tokio::spawn(shoal_manager::leader::supervise(
        raft.clone(),
        store,
        dispatcher,
        shutdown.clone(),
    ));
    Ok(Manager {
        raft,
        control,
        forward,
        credentials: pki.credentials,
        cluster_task,
    })
}

/// How long a new manager keeps asking to be taken into Raft: catching up
/// from a large snapshot takes a while.
const JOIN_RAFT_TIMEOUT: Duration = Duration::from_secs(120);

/// Asks the managers this node knows, following the leader's address when
/// one that does not lead names it, to take this node into Raft.
async fn join_raft(cfg: &NodeConfig, client_tls: Arc<tls::ClientConfig>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + JOIN_RAFT_TIMEOUT;
    let mut candidates: Vec<String> = cfg
        .managers
        .iter()
        .filter(|a| **a != cfg.advertise_addr)
        .cloned()
        .collect();
    if candidates.is_empty() {
        bail!("this manager knows no other manager to join Raft through (node.json lists none)");
    }
    let mut next = 0;
    let mut hint: Option<String> = None;
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        let addr = hint
            .take()
            .unwrap_or_else(|| candidates[next % candidates.len()].clone());
        next += 1;
        let channel = match tls::connect(&addr, client_tls.clone()).await {
            Ok(c) => c,
            Err(e) => {
                last_error = e.to_string();
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let request = JoinRaftRequest {
            raft_id: cfg.raft_id,
            addr: cfg.advertise_addr.clone(),
        };
        match ManagersClient::new(channel).join_raft(request).await {
            Ok(_) => {
                tracing::info!(via = %addr, raft_id = cfg.raft_id, "taken into raft");
                return Ok(());
            }
            Err(status) => {
                last_error = format!("{addr}: {}", status.message());
                if let Some(leader) = shoal_proto::leader_hint(&status) {
                    if !candidates.contains(&leader) {
                        candidates.push(leader.clone());
                    }
                    hint = Some(leader);
                } else {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                tracing::info!(error = %last_error, "not taken into raft yet; retrying");
            }
        }
    }
    bail!(
        "this manager was not taken into Raft within {}s: {last_error}",
        JOIN_RAFT_TIMEOUT.as_secs()
    )
}
