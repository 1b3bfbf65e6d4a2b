//! The worker agent: the node's session with the dispatcher.
//!
//! [`run_agent`] holds a `Session` stream open (reconnecting with backoff:
//! the daemon starts the worker before the manager may be up), heartbeats,
//! and applies each `SessionMessage` — the COMPLETE set of this node's
//! assignments — by driving one pod task per assigned pod. Containers
//! labelled by shoal whose pod is no longer assigned are stopped and
//! removed, but only once the first message has said what is wanted.
//! Containers survive the agent: a restarted worker adopts them by name.

mod backoff;
mod pods;
mod reporter;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::{
    defaults, leader_hint, HeartbeatRequest, NodeResources, NodeRole, SessionMessage,
    SessionRequest,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tracing::{debug, info, warn};

use crate::exec::{ExecError, Executor, ListedContainer};
use crate::ingress::IngressProxy;
use crate::membership::NodeGossip;
use backoff::Backoff;
use pods::PodSet;
use reporter::SessionHandle;

/// Who this node is and which managers it may report to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub node_id: String,
    pub hostname: String,
    /// Address other nodes reach this node at.
    pub advertise_addr: String,
    /// Cluster gRPC addresses (host:port) of the managers to try, in order
    /// until one leads; replaced by the list each session message carries.
    pub managers: Vec<String>,
}

/// Opens a gRPC channel (lazily connecting) to a manager's cluster address,
/// host:port. The daemon's dials mutual TLS with the node's certificate;
/// the worker crate knows nothing of certificates.
pub type Connector = Arc<dyn Fn(&str) -> Result<Channel, String> + Send + Sync>;

/// Told the managers' addresses whenever the list changes, so the node can
/// remember them across restarts (the manager it joined may be gone then).
pub type ManagersHook = Arc<dyn Fn(&[String]) + Send + Sync>;

/// Told the node's role each time a session message carries one, so the
/// daemon can restart in a new role when it was promoted or demoted.
pub type RoleHook = Arc<dyn Fn(NodeRole) + Send + Sync>;

/// How the agent reaches the managers.
#[derive(Clone)]
pub struct AgentLinks {
    pub connect: Connector,
    pub on_managers: Option<ManagersHook>,
    pub on_role: Option<RoleHook>,
    /// This node's gossip, started and rekeyed by session messages.
    pub gossip: Option<Arc<NodeGossip>>,
}

impl AgentLinks {
    /// Plain HTTP/2, for tests of the agent against a fake dispatcher.
    pub fn plaintext() -> AgentLinks {
        AgentLinks {
            connect: Arc::new(|addr: &str| {
                Endpoint::from_shared(format!("http://{addr}"))
                    .map(|e| {
                        e.connect_timeout(Duration::from_secs(3))
                            .tcp_nodelay(true)
                            .connect_lazy()
                    })
                    .map_err(|e| format!("invalid manager address {addr:?}: {e}"))
            }),
            on_managers: None,
            on_role: None,
            gossip: None,
        }
    }
}

/// Which manager the next session goes to: the leader a manager named when
/// it refused us, else the next one in the list, round robin.
struct ManagerCursor {
    managers: Vec<String>,
    next: usize,
    hint: Option<String>,
}

impl ManagerCursor {
    fn pick(&mut self) -> Option<String> {
        if let Some(hint) = self.hint.take() {
            return Some(hint);
        }
        if self.managers.is_empty() {
            return None;
        }
        let addr = self.managers[self.next % self.managers.len()].clone();
        self.next = self.next.wrapping_add(1);
        Some(addr)
    }

    /// Takes the list a session message carries; true when it changed.
    fn update(&mut self, managers: &[String]) -> bool {
        if managers.is_empty() || managers == self.managers.as_slice() {
            return false;
        }
        self.managers = managers.to_vec();
        true
    }
}

/// Runs the agent until `shutdown` is cancelled, then stops its tasks and
/// returns `Ok(())`. Containers are left running for the next start to
/// adopt. Connection failures are retried forever, never returned; the
/// error case is a configuration the agent can never work with (an invalid
/// dispatcher endpoint).
pub async fn run_agent(
    config: AgentConfig,
    links: AgentLinks,
    executor: Arc<dyn Executor>,
    ingress: Option<IngressProxy>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.managers.is_empty() {
        anyhow::bail!("no manager address to report to");
    }
    for addr in &config.managers {
        (links.connect)(addr).map_err(|e| anyhow::anyhow!("{e}"))?;
    }

    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let (session_tx, session_rx) = watch::channel(None);
    let reporter = tokio::spawn(reporter::run(
        config.node_id.clone(),
        report_rx,
        session_rx,
        shutdown.clone(),
    ));

    let mut agent = Agent {
        cursor: ManagerCursor {
            managers: config.managers.clone(),
            next: 0,
            hint: None,
        },
        links,
        config,
        executor: executor.clone(),
        ingress,
        pods: PodSet::new(executor, report_tx, shutdown.clone()),
        sweeper: Sweeper::default(),
        assignments_known: false,
        channel: None,
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), backoff::RETRY_MAX);
    while !shutdown.is_cancelled() {
        let ended = agent.session(&session_tx, &shutdown).await;
        // A session that carried messages worked: it ended because its
        // manager did (often every session of that manager at once), so
        // the way back is spread; otherwise the attempt failed: back off.
        let worked = session_tx.send_replace(None).is_some();
        match ended {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Closed) => {
                info!(worked, "dispatcher closed the session; reconnecting")
            }
            Err(e) => warn!(error = %format!("{e:#}"), "dispatcher session failed; reconnecting"),
        }
        let delay = if worked {
            backoff.after_session(backoff::RECONNECT_SPREAD)
        } else {
            backoff.next_delay()
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    agent.pods.stop_all().await;
    let _ = reporter.await;
    info!("agent stopped");
    Ok(())
}

enum SessionEnd {
    Shutdown,
    Closed,
}

struct Agent {
    config: AgentConfig,
    links: AgentLinks,
    cursor: ManagerCursor,
    executor: Arc<dyn Executor>,
    ingress: Option<IngressProxy>,
    pods: PodSet,
    sweeper: Sweeper,
    /// Set by the first session message: before it, nothing is removed.
    assignments_known: bool,
    /// The channel of the last session and its manager's address, kept
    /// for the next session (see [`Agent::channel`]).
    channel: Option<(String, Channel)>,
}

impl Agent {
    /// One session: connect, open the stream, then apply messages,
    /// heartbeat and sweep until it ends.
    async fn session(
        &mut self,
        session_tx: &watch::Sender<Option<SessionHandle>>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<SessionEnd> {
        let Some(addr) = self.cursor.pick() else {
            anyhow::bail!("no manager address to report to");
        };
        let mut client = DispatcherClient::new(self.channel(&addr)?);
        let request = self.session_request().await;
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            s = client.session(request) => s,
        };
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(status) => {
                self.cursor.hint = leader_hint(&status);
                return Err(anyhow::anyhow!("{}", status.message()))
                    .with_context(|| format!("opening a session with the manager at {addr}"));
            }
        };
        info!(manager = %addr, "session opened");

        let mut heartbeat = Heartbeat::new(
            client.clone(),
            self.config.node_id.clone(),
            self.links.gossip.clone(),
        );
        let mut sweep = tokio::time::interval(Duration::from_millis(defaults::WORKER_RECONCILE_MS));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    heartbeat.stopping().await;
                    return Ok(SessionEnd::Shutdown);
                }
                message = stream.message() => {
                    let message = match message {
                        Ok(Some(m)) => m,
                        Ok(None) => return Ok(SessionEnd::Closed),
                        Err(status) => {
                            self.cursor.hint = leader_hint(&status);
                            return Err(anyhow::anyhow!("{}", status.message()))
                                .with_context(|| format!("session with the manager at {addr}"));
                        }
                    };
                    if let Some(hook) = &self.links.on_role {
                        hook(message.role());
                    }
                    if self.cursor.update(&message.managers) {
                        if let Some(hook) = &self.links.on_managers {
                            hook(&message.managers);
                        }
                    }
                    heartbeat.session(&message);
                    if let (Some(gossip), Some(config)) = (&self.links.gossip, &message.gossip) {
                        gossip.apply(config).await;
                    }
                    session_tx.send_replace(Some(SessionHandle {
                        client: client.clone(),
                        session_id: message.session_id.clone(),
                    }));
                    // Only a message that can have made pods leave the set
                    // can leave containers to remove now (the period's sweep
                    // finds the rest): at thousands of nodes placing pods,
                    // a listing per added pod was most of a node's work.
                    let may_remove = !message.incremental || !message.removed_pod_ids.is_empty();
                    self.apply(message);
                    if may_remove {
                        self.sweep().await;
                    }
                }
                _ = heartbeat.due() => {
                    if let Err(e) = heartbeat.beat().await {
                        self.cursor.hint = heartbeat.leader_hint.take();
                        return Err(e);
                    }
                }
                _ = sweep.tick() => self.sweep().await,
            }
        }
    }

    /// The channel to the manager at `addr`: the last session's when it
    /// went to the same manager. A session that ends (its manager ended
    /// them all, or asked this node to register again) leaves the
    /// connection under it usable, and a new TLS handshake for each of
    /// thousands of nodes coming back at once is what starves a manager
    /// most. Only one is kept, so a node holds one connection to the
    /// managers, as before. A channel whose connection broke connects again
    /// on its next call.
    fn channel(&mut self, addr: &str) -> anyhow::Result<Channel> {
        if let Some((last, channel)) = &self.channel {
            if last == addr {
                return Ok(channel.clone());
            }
        }
        let channel = (self.links.connect)(addr).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.channel = Some((addr.to_string(), channel.clone()));
        Ok(channel)
    }

    async fn session_request(&self) -> SessionRequest {
        let info = match self.executor.engine_info().await {
            Ok(info) => info,
            Err(e) => {
                warn!(error = %e, "cannot read the engine's capacity; reporting none");
                Default::default()
            }
        };
        SessionRequest {
            node_id: self.config.node_id.clone(),
            hostname: self.config.hostname.clone(),
            addr: self.config.advertise_addr.clone(),
            resources: Some(NodeResources {
                nano_cpus: info.ncpu.saturating_mul(1_000_000_000),
                memory_bytes: info.memory_bytes,
            }),
            engine_version: info.version,
            gossip_addr: self
                .links
                .gossip
                .as_ref()
                .map(|g| g.advertise_addr())
                .unwrap_or_default(),
            incremental: true,
        }
    }

    fn apply(&mut self, message: SessionMessage) {
        debug!(
            assignments = message.assignments.len(),
            services = message.services.len(),
            "session message"
        );
        if message.incremental {
            self.pods
                .apply_changes(message.assignments, message.removed_pod_ids);
        } else {
            self.pods.apply(message.assignments);
        }
        if let Some(ingress) = &self.ingress {
            ingress.update(&message.services);
        }
        self.assignments_known = true;
    }

    /// Removes the containers of pods that are no longer assigned.
    async fn sweep(&mut self) {
        if !self.assignments_known {
            return;
        }
        let listed = match self.executor.list().await {
            Ok(listed) => listed,
            Err(e) => {
                warn!(error = %e, "cannot list containers; orphan sweep skipped");
                return;
            }
        };
        self.pods.listing().publish(&listed);
        for container in listed {
            if !self.pods.contains(&container.pod.pod_id) {
                self.sweeper.remove(self.executor.clone(), container);
            }
        }
    }
}

/// Removes orphaned containers in the background (a stop may take the
/// whole grace period), at most one removal per pod at a time.
#[derive(Default)]
struct Sweeper {
    in_progress: Arc<Mutex<HashSet<String>>>,
}

impl Sweeper {
    fn remove(&self, executor: Arc<dyn Executor>, container: ListedContainer) {
        let pod_id = container.pod.pod_id.clone();
        {
            let mut in_progress = self.in_progress.lock().unwrap_or_else(|e| e.into_inner());
            if !in_progress.insert(pod_id.clone()) {
                return;
            }
        }
        let in_progress = self.in_progress.clone();
        tokio::spawn(async move {
            info!(pod = %pod_id, container = %container.container_id, "removing container of an unassigned pod");
            let grace = Duration::from_millis(defaults::STOP_GRACE_PERIOD_MS);
            let result: Result<(), ExecError> = async {
                executor.stop(&container.pod, grace).await?;
                executor.remove(&container.pod).await
            }
            .await;
            if let Err(e) = result {
                warn!(pod = %pod_id, error = %e, "removing orphaned container failed; will retry");
            }
            in_progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&pod_id);
        });
    }
}

/// How long a stopping node waits to tell its manager so.
const STOPPING_NOTICE_TIMEOUT: Duration = Duration::from_millis(500);

/// Heartbeats on the session's period (the dispatcher may change it).
struct Heartbeat {
    client: DispatcherClient<Channel>,
    /// Where the leader is, when the manager refused a heartbeat because
    /// it no longer leads.
    leader_hint: Option<String>,
    node_id: String,
    session_id: Option<String>,
    period: Duration,
    next: tokio::time::Instant,
    /// Whose keyring version each heartbeat reports.
    gossip: Option<Arc<NodeGossip>>,
}

impl Heartbeat {
    fn new(
        client: DispatcherClient<Channel>,
        node_id: String,
        gossip: Option<Arc<NodeGossip>>,
    ) -> Self {
        let period = Duration::from_millis(defaults::HEARTBEAT_PERIOD_MS);
        Self {
            client,
            leader_hint: None,
            node_id,
            session_id: None,
            period,
            next: tokio::time::Instant::now() + period,
            gossip,
        }
    }

    /// Takes the session id and period from a session message.
    fn session(&mut self, message: &SessionMessage) {
        self.session_id = Some(message.session_id.clone());
        if message.heartbeat_period_ms > 0 {
            self.period = Duration::from_millis(message.heartbeat_period_ms);
        }
    }

    /// Resolves when a heartbeat is due (never before the first message:
    /// there is no session id to beat for).
    async fn due(&self) {
        if self.session_id.is_none() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.next).await;
    }

    fn request(&self, stopping: bool) -> HeartbeatRequest {
        HeartbeatRequest {
            node_id: self.node_id.clone(),
            session_id: self.session_id.clone().unwrap_or_default(),
            gossip_version: self.gossip.as_ref().map_or(0, |g| g.version()),
            stopping,
        }
    }

    /// Tells the manager this node stops on purpose, so that the session
    /// it is about to close is not taken for a dead node (the manager then
    /// waits for the heartbeat expiry). Best effort and brief: a stopping
    /// daemon must not hang on an unreachable manager.
    async fn stopping(&mut self) {
        if self.session_id.is_none() {
            return;
        }
        let call = self.client.heartbeat(self.request(true));
        match tokio::time::timeout(STOPPING_NOTICE_TIMEOUT, call).await {
            Ok(Ok(_)) => info!("told the manager this node is stopping"),
            Ok(Err(status)) => warn!(
                message = status.message(),
                "cannot tell the manager this node is stopping"
            ),
            Err(_) => warn!("cannot tell the manager this node is stopping: timed out"),
        }
    }

    /// Sends one heartbeat. A rejected session ends it (the caller
    /// reconnects); a transient failure is logged and retried next period.
    async fn beat(&mut self) -> anyhow::Result<()> {
        self.next = tokio::time::Instant::now() + self.period;
        let call = self.client.heartbeat(self.request(false));
        match tokio::time::timeout(self.period.max(Duration::from_secs(1)) * 3, call).await {
            Ok(Ok(response)) => {
                let period_ms = response.into_inner().period_ms;
                if period_ms > 0 {
                    self.period = Duration::from_millis(period_ms);
                }
                Ok(())
            }
            Ok(Err(status))
                if matches!(
                    status.code(),
                    Code::NotFound
                        | Code::FailedPrecondition
                        | Code::PermissionDenied
                        | Code::Unauthenticated
                ) =>
            {
                anyhow::bail!("heartbeat rejected: {}", status.message())
            }
            Ok(Err(status)) if leader_hint(&status).is_some() => {
                self.leader_hint = leader_hint(&status);
                anyhow::bail!("heartbeat refused: {}", status.message())
            }
            Ok(Err(status)) => {
                warn!(code = ?status.code(), message = status.message(), "heartbeat failed");
                Ok(())
            }
            Err(_) => {
                warn!("heartbeat timed out");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
