//! The node daemon: wires a manager (Raft, store, controllers, control API,
//! dispatcher) and a worker (agent, Docker executor, ingress proxy) into one
//! process, as `shoal init` / `shoal daemon` start it.

pub mod config;
pub mod detach;
pub mod force_new;
mod gossip;
pub mod join;
mod logs;
mod manager;
pub mod pki;
mod transition;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rand::Rng;
use shoal_manager::ca::{tls, Role};
use shoal_manager::controlapi::worker_node::NotAManagerLayer;
use shoal_manager::controlapi::{ControlApi, LocalNode};
use shoal_manager::dispatcher::LivenessHint;
use shoal_manager::ids::new_id;
use shoal_proto::NodeRole;
use shoal_worker::agent::{run_agent, AgentConfig, AgentLinks};
use shoal_worker::exec::docker::{DockerExecutor, PodNetwork};
use shoal_worker::exec::Executor;
use shoal_worker::ingress::IngressProxy;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
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
    gossip_port: u16,
) -> Result<NodeConfig> {
    let listen = config::check_listen_addr(listen_addr)?;
    config::check_pod_network(pod_network, pod_network_internal)?;
    Ok(NodeConfig {
        node_id: new_id(),
        raft_id: rand::rng().random_range(1..u64::MAX),
        cluster_id: new_id(),
        listen_addr: listen.to_string(),
        advertise_addr: config::advertise_with_port(advertise_addr, &listen),
        pod_network: pod_network.to_string(),
        pod_network_internal,
        managers: Vec::new(),
        gossip_port,
    })
}

/// The daemon's pid file, locked (flock) for as long as the daemon runs:
/// the lock, not the pid in it, says whether a daemon runs, so a pid file
/// left by a crash or a reboot (whose pid another process may have now)
/// never blocks a start.
struct PidFile {
    path: PathBuf,
    _lock: std::fs::File,
}

/// Refuses to start twice on one data dir, then records our pid.
fn claim_pid_file(dir: &Path) -> Result<PidFile> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let path = dir.join(config::PID_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "a shoal daemon is already running on {} (pid {})",
            dir.display(),
            pid.trim()
        );
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(PidFile { path, _lock: file })
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

/// Runs the node until a signal or `shoal leave`: the worker role always
/// (every node runs pods), the manager role when this node is a manager.
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
    let shutdown = CancellationToken::new();

    // The worker's executor first: a node without a usable Docker Engine
    // fails here, before it takes part in anything.
    let pod_network = PodNetwork {
        name: cfg.pod_network.clone(),
        internal: cfg.pod_network_internal,
    };
    pod_network
        .check()
        .map_err(|e| anyhow!("{e} (node.json in {})", data_dir.display()))?;
    let docker = DockerExecutor::new(cfg.node_id.clone(), pod_network)
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
    let (leave_tx, mut leave_rx) = tokio::sync::mpsc::channel::<bool>(1);
    let leave_hook: shoal_manager::controlapi::LeaveHook = Arc::new(move |force| {
        let _ = leave_tx.try_send(force);
    });
    let local = LocalNode {
        node_id: cfg.node_id.clone(),
        cluster_id: cfg.cluster_id.clone(),
        hostname: config::hostname(),
        data_dir: data_dir.display().to_string(),
        listen_addr: cfg.listen_addr.clone(),
        advertise_addr: cfg.advertise_addr.clone(),
        engine_version,
    };
    let logs = Arc::new(logs::DockerLogs(executor.clone()));
    // Gossip starts with the first session message that carries its keys.
    let node_gossip = gossip::for_node(&cfg, &shutdown);
    let hint = node_gossip
        .clone()
        .map(|g| Arc::new(gossip::Hint(g)) as Arc<dyn LivenessHint>);

    let manager = if init || pki::is_manager_dir(&data_dir) {
        Some(
            manager::start(
                manager::Start {
                    data_dir: &data_dir,
                    cfg: &cfg,
                    init,
                    local: local.clone(),
                    logs: logs.clone(),
                    leave: leave_hook.clone(),
                    gossip: hint.clone(),
                },
                &shutdown,
            )
            .await?,
        )
    } else {
        None
    };
    let credentials = match &manager {
        Some(m) => m.credentials.clone(),
        None => pki::load_worker(&data_dir, &cfg)?,
    };
    tracing::info!(identity = %credentials.identity(), "node certificate loaded");
    let client_tls = tls::client_config(&credentials)?;

    // Worker: the ingress proxy and the agent, reporting to the managers
    // over mutual TLS (to itself first, on a manager).
    let mut managers = Vec::new();
    if manager.is_some() {
        managers.push(cfg.advertise_addr.clone());
    }
    managers.extend(cfg.managers.iter().cloned());
    managers.dedup();
    let ingress = IngressProxy::new();
    // A new role in the session, or a certificate due for renewal, makes
    // the daemon restart itself in that role (see transition.rs).
    let my_role = credentials.identity().role;
    let (change_tx, mut change_rx) = tokio::sync::mpsc::channel::<Role>(1);
    let role_tx = change_tx.clone();
    let links = AgentLinks {
        connect: Arc::new(move |addr: &str| {
            tls::connect_lazy(addr, client_tls.clone()).map_err(|e| e.to_string())
        }),
        on_managers: Some(remember_managers(&data_dir, &cfg)),
        on_role: Some(Arc::new(move |role: NodeRole| {
            if let Some(role) = Role::from_node_role(role).filter(|r| *r != my_role) {
                let _ = role_tx.try_send(role);
            }
        })),
        gossip: node_gossip,
    };
    tokio::spawn(watch_expiry(
        credentials.clone(),
        change_tx,
        shutdown.child_token(),
    ));
    let agent_task = tokio::spawn(run_agent(
        AgentConfig {
            node_id: cfg.node_id.clone(),
            hostname: config::hostname(),
            advertise_addr: cfg.advertise_addr.clone(),
            managers,
        },
        links,
        executor.clone(),
        Some(ingress.clone()),
        shutdown.child_token(),
    ));

    // Control API on the Unix socket: bound last, so that a client that can
    // connect finds everything running. Clients are served until cleanup is
    // over, so `shoal leave` returns only once the node is really gone.
    let unix = bind_socket(&socket)?;
    let control_stop = CancellationToken::new();
    let incoming = UnixListenerStream::new(unix);
    let stopped = control_stop.clone().cancelled_owned();
    let control_task = match &manager {
        Some(m) => tokio::spawn(
            tonic::transport::Server::builder()
                .layer(m.forward.clone())
                .add_service(m.control.clone().into_service())
                .serve_with_incoming_shutdown(incoming, stopped),
        ),
        None => {
            let digest = shoal_manager::ca::CaDigest::of(credentials.ca_certificate_der());
            let mut control = ControlApi::for_worker(logs, local, leave_hook, digest);
            if let Some(hint) = hint {
                control = control.with_gossip(hint);
            }
            tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(NotAManagerLayer)
                    .add_service(control.into_service())
                    .serve_with_incoming_shutdown(incoming, stopped),
            )
        }
    };
    tracing::info!(
        socket = %socket.display(),
        role = if manager.is_some() { "manager" } else { "worker" },
        "shoal daemon serving"
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut change = None;
    let leave = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); false }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupt: stopping"); false }
        f = leave_rx.recv() => f.unwrap_or(false),
        Some(role) = change_rx.recv() => {
            tracing::info!(from = %my_role, to = %role, "restarting as a {role}");
            change = Some(role);
            false
        }
    };

    shutdown.cancel();
    let _ = agent_task.await;
    if leave {
        tracing::info!("leaving: removing this node's containers and cluster state");
        ingress.update(&[]);
        remove_all_containers(executor.as_ref()).await;
    }
    if let Some(m) = manager {
        m.stop().await;
    }
    if leave {
        config::wipe(&data_dir)?;
    }
    control_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), control_task).await;
    if let Some(role) = change {
        // The pid file stays: the same process goes on as `shoal daemon`.
        let _ = std::fs::remove_file(&socket);
        transition::apply(&data_dir, &cfg, &credentials, role)
            .await
            .with_context(|| format!("cannot change this node into a {role}"))?;
        return Err(transition::restart(&data_dir, &socket));
    }
    let _ = std::fs::remove_file(&pid_file.path);
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}

/// How often a node checks whether its certificate is due for renewal: a
/// tenth of its lifetime, at most hourly.
fn renewal_check(credentials: &shoal_manager::ca::NodeCredentials) -> Duration {
    credentials
        .validity()
        .map(|v| v.lifetime() / 10)
        .unwrap_or(Duration::from_secs(3_600))
        .clamp(Duration::from_secs(1), Duration::from_secs(3_600))
}

/// Asks for a restart in the same role (a renewal) once the certificate
/// has less than a third of its validity left.
async fn watch_expiry(
    credentials: shoal_manager::ca::NodeCredentials,
    change: tokio::sync::mpsc::Sender<Role>,
    cancel: CancellationToken,
) {
    loop {
        match credentials.needs_renewal(std::time::SystemTime::now()) {
            Ok(true) => {
                tracing::info!("the node certificate is due for renewal");
                let _ = change.send(credentials.identity().role).await;
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the node certificate's validity"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(renewal_check(&credentials)) => {}
        }
    }
}

/// Saves the managers' addresses in `node.json` whenever they change, so a
/// restarted node finds a manager even if the one it joined is gone.
fn remember_managers(data_dir: &Path, cfg: &NodeConfig) -> shoal_worker::agent::ManagersHook {
    let data_dir = data_dir.to_path_buf();
    let cfg = std::sync::Mutex::new(cfg.clone());
    Arc::new(move |managers: &[String]| {
        let mut cfg = cfg.lock().unwrap_or_else(|e| e.into_inner());
        if cfg.managers == managers {
            return;
        }
        cfg.managers = managers.to_vec();
        if let Err(e) = config::save(&data_dir, &cfg) {
            tracing::warn!(error = %format!("{e:#}"), "cannot remember the managers' addresses");
        }
    })
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
