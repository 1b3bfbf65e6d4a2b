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
use shoal_proto::{defaults, HeartbeatRequest, NodeResources, SessionMessage, SessionRequest};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tracing::{debug, info, warn};

use crate::exec::{ExecError, Executor, ListedContainer};
use crate::ingress::IngressProxy;
use backoff::Backoff;
use pods::PodSet;
use reporter::SessionHandle;

/// Who this node is and where its dispatcher listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub node_id: String,
    pub hostname: String,
    /// Address other nodes reach this node at.
    pub advertise_addr: String,
    /// The dispatcher's gRPC endpoint, e.g. "http://127.0.0.1:2377".
    pub dispatcher_endpoint: String,
}

/// Runs the agent until `shutdown` is cancelled, then stops its tasks and
/// returns `Ok(())`. Containers are left running for the next start to
/// adopt. Connection failures are retried forever, never returned; the
/// error case is a configuration the agent can never work with (an invalid
/// dispatcher endpoint).
pub async fn run_agent(
    config: AgentConfig,
    executor: Arc<dyn Executor>,
    ingress: Option<IngressProxy>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let endpoint = Endpoint::from_shared(config.dispatcher_endpoint.clone())
        .with_context(|| {
            format!(
                "invalid dispatcher endpoint {:?} (expected e.g. http://127.0.0.1:2377)",
                config.dispatcher_endpoint
            )
        })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);

    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let (session_tx, session_rx) = watch::channel(None);
    let reporter = tokio::spawn(reporter::run(
        config.node_id.clone(),
        report_rx,
        session_rx,
        shutdown.clone(),
    ));

    let mut agent = Agent {
        config,
        executor: executor.clone(),
        ingress,
        pods: PodSet::new(executor, report_tx, shutdown.clone()),
        sweeper: Sweeper::default(),
        assignments_known: false,
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        match agent.session(&endpoint, &session_tx, &shutdown).await {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Closed { received }) => {
                info!("dispatcher closed the session; reconnecting");
                if received {
                    backoff.reset();
                }
            }
            Err(e) => warn!(error = %format!("{e:#}"), "dispatcher session failed; reconnecting"),
        }
        session_tx.send_replace(None);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    agent.pods.stop_all().await;
    let _ = reporter.await;
    info!("agent stopped");
    Ok(())
}

enum SessionEnd {
    Shutdown,
    Closed { received: bool },
}

struct Agent {
    config: AgentConfig,
    executor: Arc<dyn Executor>,
    ingress: Option<IngressProxy>,
    pods: PodSet,
    sweeper: Sweeper,
    /// Set by the first session message: before it, nothing is removed.
    assignments_known: bool,
}

impl Agent {
    /// One session: connect, open the stream, then apply messages,
    /// heartbeat and sweep until it ends.
    async fn session(
        &mut self,
        endpoint: &Endpoint,
        session_tx: &watch::Sender<Option<SessionHandle>>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<SessionEnd> {
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            c = endpoint.connect() => c.with_context(|| format!("connecting to {}", self.config.dispatcher_endpoint))?,
        };
        let mut client = DispatcherClient::new(channel);
        let request = self.session_request().await;
        let mut stream = tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            s = client.session(request) => s.context("opening the session")?.into_inner(),
        };
        info!(dispatcher = %self.config.dispatcher_endpoint, "session opened");

        let mut heartbeat = Heartbeat::new(client.clone(), self.config.node_id.clone());
        let mut sweep = tokio::time::interval(Duration::from_millis(defaults::WORKER_RECONCILE_MS));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut received = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                message = stream.message() => {
                    let Some(message) = message.context("session stream")? else {
                        return Ok(SessionEnd::Closed { received });
                    };
                    received = true;
                    heartbeat.session(&message);
                    session_tx.send_replace(Some(SessionHandle {
                        client: client.clone(),
                        session_id: message.session_id.clone(),
                    }));
                    self.apply(message);
                    self.sweep().await;
                }
                _ = heartbeat.due() => heartbeat.beat().await?,
                _ = sweep.tick() => self.sweep().await,
            }
        }
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
        }
    }

    fn apply(&mut self, message: SessionMessage) {
        debug!(
            assignments = message.assignments.len(),
            services = message.services.len(),
            "session message"
        );
        self.pods.apply(message.assignments);
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
        let wanted = self.pods.ids();
        for container in listed {
            if !wanted.contains(&container.pod.pod_id) {
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

/// Heartbeats on the session's period (the dispatcher may change it).
struct Heartbeat {
    client: DispatcherClient<Channel>,
    node_id: String,
    session_id: Option<String>,
    period: Duration,
    next: tokio::time::Instant,
}

impl Heartbeat {
    fn new(client: DispatcherClient<Channel>, node_id: String) -> Self {
        let period = Duration::from_millis(defaults::HEARTBEAT_PERIOD_MS);
        Self {
            client,
            node_id,
            session_id: None,
            period,
            next: tokio::time::Instant::now() + period,
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

    /// Sends one heartbeat. A rejected session ends it (the caller
    /// reconnects); a transient failure is logged and retried next period.
    async fn beat(&mut self) -> anyhow::Result<()> {
        self.next = tokio::time::Instant::now() + self.period;
        let request = HeartbeatRequest {
            node_id: self.node_id.clone(),
            session_id: self.session_id.clone().unwrap_or_default(),
        };
        let call = self.client.heartbeat(request);
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
