//! The node daemon: wires a manager (Raft, store, controllers, control API,
//! dispatcher) and a worker (agent, Docker executor, ingress proxy) into one
//! process, as `shoal init` / `shoal daemon` start it.

pub mod config;
pub mod detach;
mod logs;
mod pki;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::Rng;
use shoal_manager::ca::JoinSecrets;
use shoal_manager::controlapi::{ControlApi, LocalNode};
use shoal_manager::dispatcher::Dispatcher;
use shoal_manager::ids::new_id;
use shoal_manager::keys::ClusterKey;
use shoal_manager::proposer::{all_applied, batch};
use shoal_manager::raft::{RaftConfig, RaftNode};
use shoal_manager::store::{put, Store};
use shoal_proto::{
    now_ms, Cluster, Meta, Node, NodeAvailability, NodeRole, NodeSpec, NodeState, NodeStatus,
};
use shoal_worker::agent::{run_agent, AgentConfig};
use shoal_worker::exec::docker::{DockerExecutor, PodNetwork};
use shoal_worker::exec::Executor;
use shoal_worker::ingress::IngressProxy;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;

use config::NodeConfig;

/// Where and how the daemon runs.
pub struct DaemonRun {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub config: NodeConfig,
    /// Create the cluster (init) rather than resume it.
    pub init: bool,
}

/// A fresh node identity for `shoal init`.
pub fn new_node_config(
    listen_addr: &str,
    advertise_addr: &str,
    pod_network: &str,
    pod_network_internal: bool,
) -> Result<NodeConfig> {
    let listen = config::check_listen_addr(listen_addr)?;
    Ok(NodeConfig {
        node_id: new_id(),
        raft_id: rand::rng().random_range(1..u64::MAX),
        cluster_id: new_id(),
        listen_addr: listen.to_string(),
        advertise_addr: config::advertise_with_port(advertise_addr, &listen),
        pod_network: pod_network.to_string(),
        pod_network_internal,
    })
}

/// A live shoal process with this pid: not a zombie left by `kill -9`
/// waiting to be reaped, and not another program that reused the pid.
fn is_live_shoal(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let is_shoal = String::from_utf8_lossy(&cmdline).contains("shoal");
    pid > 0 && is_shoal && !matches!(state, None | Some('Z') | Some('X'))
}

/// Refuses to start twice on one data dir, then records our pid.
fn claim_pid_file(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(config::PID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(pid) = text.trim().parse::<i32>() {
            if pid != std::process::id() as i32 && is_live_shoal(pid) {
                bail!(
                    "a shoal daemon is already running on {} (pid {pid})",
                    dir.display()
                );
            }
        }
    }
    std::fs::write(&path, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
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

/// Binds the CLI socket: parent dir created, a stale socket file replaced,
/// permissions like docker.sock's.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Runs the node until a signal or `shoal leave`.
pub async fn run(run: DaemonRun) -> Result<()> {
    let DaemonRun {
        data_dir,
        socket,
        config: cfg,
        init,
    } = run;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let pid_file = claim_pid_file(&data_dir)?;
    let key = cluster_key(&data_dir, init)?;
    let listen = config::check_listen_addr(&cfg.listen_addr)?;

    // Manager: Raft and the store it applies to.
    let store = Store::new();
    let raft = RaftNode::open(
        RaftConfig {
            node_id: cfg.raft_id,
            data_dir: data_dir.clone(),
            advertise_addr: cfg.advertise_addr.clone(),
        },
        store.clone(),
    )
    .await
    .with_context(|| format!("cannot open the Raft log in {}", data_dir.display()))?;
    let shutdown = CancellationToken::new();

    // Cluster gRPC (Raft transport + dispatcher), loopback only for now.
    let tcp = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (is another shoal daemon using it?)")
    })?;
    // The CA and this node's certificate exist before anything is served
    // (made after the port is bound: a busy port leaves no CA behind).
    let pki = if init {
        Some(pki::create(
            &data_dir,
            &cfg,
            shoal_proto::defaults::FIRST_CLUSTER_EPOCH,
        )?)
    } else {
        pki::load(&data_dir, &cfg)?
    };
    let dispatcher = Dispatcher::new(
        store.clone(),
        Arc::new(raft.clone()),
        key.clone(),
        shutdown.child_token(),
    );
    let cluster_server = tonic::transport::Server::builder()
        .add_service(raft.grpc_service())
        .add_service(dispatcher.clone().into_service())
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(tcp),
            shutdown.clone().cancelled_owned(),
        );
    let cluster_task = tokio::spawn(cluster_server);

    if init {
        raft.bootstrap_single()
            .await
            .context("cannot bootstrap Raft")?;
    }
    raft.wait_for_leader(Duration::from_secs(30))
        .await
        .context("no Raft leader was elected")?;
    if init {
        create_cluster_objects(&raft, &cfg).await?;
        config::save(&data_dir, &cfg)?;
        tracing::info!(cluster = %cfg.cluster_id, node = %cfg.node_id, "cluster created");
    }
    let pki = match pki {
        Some(pki) => pki,
        None => {
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
            pki::create_for_old_data_dir(&data_dir, &cfg, epoch)?
        }
    };
    tracing::info!(
        ca_digest = %pki.ca.digest(),
        identity = %pki.credentials.identity(),
        "cluster CA and node certificate loaded"
    );
    tokio::spawn(shoal_manager::leader::supervise(
        raft.clone(),
        store.clone(),
        dispatcher.clone(),
        shutdown.clone(),
    ));

    // Worker: the Docker executor, the ingress proxy and the agent.
    let docker = DockerExecutor::new(
        cfg.node_id.clone(),
        PodNetwork {
            name: cfg.pod_network.clone(),
            internal: cfg.pod_network_internal,
        },
    )
    .await
    .context(
        "cannot reach the Docker Engine (is dockerd running and /var/run/docker.sock accessible?)",
    )?;
    let engine_version = docker
        .engine_info()
        .await
        .map(|i| i.version)
        .unwrap_or_default();
    let executor: Arc<dyn Executor> = Arc::new(docker.clone());
    let ingress = IngressProxy::new();
    let agent_task = tokio::spawn(run_agent(
        AgentConfig {
            node_id: cfg.node_id.clone(),
            hostname: config::hostname(),
            advertise_addr: cfg.advertise_addr.clone(),
            dispatcher_endpoint: format!("http://{listen}"),
        },
        executor.clone(),
        Some(ingress.clone()),
        shutdown.child_token(),
    ));

    // Control API on the Unix socket: bound last, so that a client that can
    // connect finds everything running.
    let (leave_tx, mut leave_rx) = tokio::sync::mpsc::channel::<bool>(1);
    let control = ControlApi::new(
        store.clone(),
        raft.clone(),
        Arc::new(logs::DockerLogs(executor.clone())),
        LocalNode {
            node_id: cfg.node_id.clone(),
            hostname: config::hostname(),
            data_dir: data_dir.display().to_string(),
            listen_addr: cfg.listen_addr.clone(),
            advertise_addr: cfg.advertise_addr.clone(),
            engine_version,
        },
        Arc::new(move |force| {
            let _ = leave_tx.try_send(force);
        }),
        key,
        pki.ca.digest().clone(),
    )
    .with_ca(Arc::new(pki.ca.clone()));
    let unix = bind_socket(&socket)?;
    // Clients are served until cleanup is over, so `shoal leave` returns
    // only once the node is really gone.
    let control_stop = CancellationToken::new();
    let control_server = tonic::transport::Server::builder()
        .add_service(control.into_service())
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(unix),
            control_stop.clone().cancelled_owned(),
        );
    let control_task = tokio::spawn(control_server);
    tracing::info!(socket = %socket.display(), listen = %listen, "shoal daemon serving");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let leave = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); false }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupt: stopping"); false }
        f = leave_rx.recv() => f.unwrap_or(false),
    };

    shutdown.cancel();
    let _ = agent_task.await;
    if leave {
        tracing::info!("leaving: removing this node's containers and cluster state");
        ingress.update(&[]);
        remove_all_containers(executor.as_ref()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), cluster_task).await;
    raft.shutdown().await;
    if leave {
        config::wipe(&data_dir)?;
    }
    control_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), control_task).await;
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}

async fn remove_all_containers(executor: &dyn Executor) {
    match executor.list().await {
        Ok(containers) => {
            for c in containers {
                if let Err(e) = executor.remove(&c.pod).await {
                    tracing::warn!(container = %c.container_id, error = %e, "cannot remove container");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list containers to remove"),
    }
}
