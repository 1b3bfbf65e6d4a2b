//! The dispatcher: the managers' side of worker sessions. A worker opens a
//! session and receives, on one stream, the complete set of pods it must run
//! plus the endpoints of every published service; it sends heartbeats and
//! status reports, which are batched into Raft proposals.

mod assignments;
mod liveness;
mod status;

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use shoal_proto::defaults::{
    GOSSIP_KEY_ROTATION_MS, GOSSIP_KEY_STEP_WAIT_MS, HEARTBEAT_MISSES_BEFORE_DOWN,
    HEARTBEAT_PERIOD_MS, NODE_MONITOR_TICK_MS,
};
use shoal_proto::dispatcher_server::{self, DispatcherServer};
use shoal_proto::{
    now_ms, HeartbeatRequest, HeartbeatResponse, Node, NodeAvailability, NodeRole, NodeSpec,
    NodeState, NodeStatus, SessionMessage, SessionRequest, UpdatePodStatusRequest,
    UpdatePodStatusResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::ca::authz;
use crate::gossipkeys;
use crate::ids::new_id;
use crate::keys::ClusterKey;
use crate::objects::{node_ready, touch, version};
use crate::proposer::{all_applied, batch, Proposer};
use crate::store::{put, Store};

pub use assignments::{manager_addrs, session_inputs, session_message};
pub use liveness::{verdict, LivenessHint, Verdict};

/// A node's last heartbeat on this manager, and the gossip keyring version
/// it said it holds.
#[derive(Debug, Clone, Copy)]
struct Beat {
    at: Instant,
    gossip_version: u64,
}

/// Last heartbeat per node id, on this manager.
type Heartbeats = Arc<Mutex<HashMap<String, Beat>>>;

#[derive(Clone)]
pub struct Dispatcher {
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    heartbeats: Heartbeats,
    status: status::StatusBatcher,
    shutdown: CancellationToken,
    /// Opens the secrets handed to the nodes that run pods using them.
    key: ClusterKey,
    /// Whether this manager proved its leadership lately (see
    /// [`confirm_leadership`]): sessions end when it could not.
    confirmed: watch::Receiver<bool>,
    /// This node's gossip: tells a silent session from a silent node.
    liveness: Option<Arc<dyn LivenessHint>>,
}

/// How many leadership proofs in a row may fail before sessions end.
const UNCONFIRMED_TICKS: u32 = 2;

/// Proves leadership to a quorum once per heartbeat period, for the
/// sessions: a leader cut off from the other managers (but not from its
/// workers) would otherwise keep their sessions while the new leader
/// marks them Down and runs their pods elsewhere. One proof per manager,
/// not per session, so the cost does not grow with the nodes.
async fn confirm_leadership(
    proposer: Arc<dyn Proposer>,
    confirmed: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let period = Duration::from_millis(HEARTBEAT_PERIOD_MS);
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if !proposer.leads() {
            failures = 0;
            continue;
        }
        let proved = tokio::time::timeout(period, proposer.confirm_leadership())
            .await
            .unwrap_or(false);
        failures = if proved { 0 } else { failures + 1 };
        let ok = failures < UNCONFIRMED_TICKS;
        confirmed.send_if_modified(|c| {
            let changed = *c != ok;
            if changed && !ok {
                tracing::warn!(
                    "this leader cannot reach a quorum of managers: ending worker sessions"
                );
            }
            *c = ok;
            changed
        });
    }
}

impl Dispatcher {
    /// Starts the status batcher; `shutdown` ends it and every session.
    /// `key` is the cluster key secrets are sealed with.
    pub fn new(
        store: Arc<Store>,
        proposer: Arc<dyn Proposer>,
        key: ClusterKey,
        shutdown: CancellationToken,
    ) -> Self {
        let status =
            status::StatusBatcher::start(store.clone(), proposer.clone(), shutdown.clone());
        let (tx, confirmed) = watch::channel(true);
        tokio::spawn(confirm_leadership(proposer.clone(), tx, shutdown.clone()));
        Dispatcher {
            store,
            proposer,
            heartbeats: Arc::default(),
            status,
            shutdown,
            key,
            confirmed,
            liveness: None,
        }
    }

    /// Consults `hint` before marking a silent node Down (see [`liveness`]).
    pub fn with_liveness(mut self, hint: Arc<dyn LivenessHint>) -> Self {
        self.liveness = Some(hint);
        self
    }

    pub fn into_service(self) -> DispatcherServer<Dispatcher> {
        DispatcherServer::new(self)
    }

    /// A session needs more than [`Dispatcher::ensure_leader`]: a leader
    /// that could not prove its leadership lately (see
    /// [`confirm_leadership`]) may be cut off from the other managers, so
    /// its sessions end and new ones go elsewhere.
    fn ensure_session_leader(&self) -> Result<(), Status> {
        self.ensure_leader()?;
        if !*self.confirmed.borrow() {
            return Err(Status::unavailable(
                "this manager lost its quorum: it may no longer lead; try another manager",
            ));
        }
        Ok(())
    }

    /// Refuses work when this manager does not lead: sessions, heartbeats
    /// and status reports all end in Raft writes, which only the leader can
    /// make. The answer names the leader's address
    /// ([`shoal_proto::not_the_leader`]) so the node goes there directly.
    fn ensure_leader(&self) -> Result<(), Status> {
        if self.proposer.leads() {
            return Ok(());
        }
        let leader = self.proposer.leader_raft_id().and_then(|id| {
            self.store.read(|d| {
                d.nodes
                    .values()
                    .find(|n| n.raft_id == id)
                    .and_then(|n| n.status.as_ref())
                    .map(|s| s.addr.clone())
                    .filter(|a| !a.is_empty())
            })
        });
        Err(match leader {
            Some(addr) => shoal_proto::not_the_leader(&addr),
            None => Status::unavailable("this manager is not the leader and no leader is known (an election is running, or a quorum of managers is missing)"),
        })
    }

    /// Records the node as Ready with a new session epoch (fencing pods from
    /// older sessions), creating it when it is new.
    async fn register(&self, req: &SessionRequest) -> Result<u64, Status> {
        for _ in 0..20 {
            let now = now_ms();
            let existing = self.store.read(|d| d.nodes.get(&req.node_id).cloned());
            let expected = existing.as_ref().map_or(0, |n| version(&n.meta));
            let mut node = existing.unwrap_or_else(|| Node {
                id: req.node_id.clone(),
                spec: Some(NodeSpec {
                    role: NodeRole::Worker as i32,
                    availability: NodeAvailability::Active as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
            let old = node.status.take().unwrap_or_default();
            let epoch = old.session_epoch + 1;
            node.status = Some(NodeStatus {
                state: NodeState::Ready as i32,
                message: String::new(),
                hostname: req.hostname.clone(),
                addr: req.addr.clone(),
                resources: req.resources,
                engine_version: req.engine_version.clone(),
                session_epoch: epoch,
                last_heartbeat: now,
                gossip_addr: req.gossip_addr.clone(),
            });
            touch(&mut node.meta, now);
            match self
                .proposer
                .propose(batch(vec![put(node, expected)], true))
                .await
            {
                Ok(r) if all_applied(&r) => return Ok(epoch),
                Ok(_) => continue,
                Err(e) => return Err(Status::unavailable(format!("cannot register node: {e}"))),
            }
        }
        Err(Status::aborted(
            "cannot register node: too many concurrent changes",
        ))
    }

    /// Marks nodes whose heartbeats stopped as Down, or Disconnected when
    /// gossip still hears them (see [`liveness`]). Runs on the leader; a
    /// new leader first waits a full expiry period (warm-up) so that nodes
    /// have time to reach it before anyone is declared down.
    pub async fn run_node_monitor(&self, cancel: CancellationToken) {
        let expiry = Duration::from_millis(HEARTBEAT_PERIOD_MS * HEARTBEAT_MISSES_BEFORE_DOWN);
        let started = Instant::now();
        // When this leader first saw each node Disconnected.
        let mut disconnected_since: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(NODE_MONITOR_TICK_MS)) => {}
            }
            if started.elapsed() < expiry {
                continue;
            }
            let node_count = self.store.read(|d| d.nodes.len());
            let live = liveness::usable_live_set(self.liveness.as_deref(), node_count);
            let changes: Vec<(Node, Verdict)> = {
                let beats = self.heartbeats.lock().unwrap_or_else(|e| e.into_inner());
                self.store.read(|d| {
                    d.nodes
                        .values()
                        .filter_map(|n| {
                            let state = n.status.as_ref()?.state();
                            let since = match state {
                                NodeState::Disconnected => *disconnected_since
                                    .entry(n.id.clone())
                                    .or_insert_with(Instant::now),
                                _ => {
                                    disconnected_since.remove(&n.id);
                                    Instant::now()
                                }
                            };
                            let v = verdict(
                                state,
                                beats.get(&n.id).map(|b| b.at.elapsed()),
                                expiry,
                                liveness::gossip_hears(live.as_ref(), &n.id),
                                since.elapsed(),
                            );
                            (v != Verdict::Keep).then(|| (n.clone(), v))
                        })
                        .collect()
                })
            };
            if changes.is_empty() {
                continue;
            }
            let now = now_ms();
            let mutations = changes
                .into_iter()
                .map(|(mut n, v)| {
                    let version = version(&n.meta);
                    let s = n.status.get_or_insert_with(NodeStatus::default);
                    let (state, message) = match v {
                        Verdict::Down(why) => {
                            tracing::warn!(node = %n.id, why, "marking node down");
                            (NodeState::Down, why.to_string())
                        }
                        Verdict::Disconnect => {
                            tracing::warn!(
                                node = %n.id,
                                "no heartbeat, but gossip hears the node: disconnected, its pods stay"
                            );
                            (
                                NodeState::Disconnected,
                                "no heartbeat reaches the leader; gossip still hears the node"
                                    .to_string(),
                            )
                        }
                        Verdict::Ready | Verdict::Keep => {
                            tracing::info!(node = %n.id, "heartbeats again: ready");
                            (NodeState::Ready, String::new())
                        }
                    };
                    s.state = state as i32;
                    s.message = message;
                    touch(&mut n.meta, now);
                    put(n, version)
                })
                .collect();
            if let Err(e) = self.proposer.propose(batch(mutations, false)).await {
                tracing::warn!(error = %e, "cannot record node states");
            }
        }
    }

    /// Keeps the cluster's gossip keys (see [`gossipkeys`]): makes the first
    /// one, and takes each rotation step once every ready node holds the
    /// keyring of the step before. Runs on the leader.
    pub async fn run_gossip_keys(&self, cancel: CancellationToken) {
        // The keyring version this leader waits on, and since when.
        let mut waiting: Option<(u64, Instant)> = None;
        let step_wait = Duration::from_millis(GOSSIP_KEY_STEP_WAIT_MS);
        loop {
            let Some(cluster) = self.store.read(|d| d.cluster().cloned()) else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(HEARTBEAT_PERIOD_MS)) => continue,
                }
            };
            let ring = cluster.gossip.as_ref();
            let ring_version = ring.map_or(0, |r| r.version);
            let since = match waiting {
                Some((v, since)) if v == ring_version => since,
                _ => {
                    let now = Instant::now();
                    waiting = Some((ring_version, now));
                    now
                }
            };
            let pending = self.gossip_pending(ring_version);
            let settled = pending.is_empty() || since.elapsed() > step_wait;
            if !pending.is_empty() && settled {
                tracing::warn!(
                    ?pending,
                    version = ring_version,
                    "gossip key rotation goes on without nodes that did not take the last step"
                );
            }
            if let Some(step) =
                gossipkeys::next_step(ring, settled, now_ms(), GOSSIP_KEY_ROTATION_MS)
            {
                match gossipkeys::change(&cluster, step, &self.key, now_ms()) {
                    Ok((write, _)) => match self.proposer.propose(batch(vec![write], true)).await {
                        Ok(r) if all_applied(&r) => {
                            tracing::info!(?step, "gossip keyring changed")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot change the gossip keyring")
                        }
                    },
                    Err(e) => tracing::error!(error = %e, "cannot make a gossip key"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(HEARTBEAT_PERIOD_MS)) => {}
            }
        }
    }

    /// Ready nodes whose heartbeats have not said they hold gossip keyring
    /// `version` yet.
    fn gossip_pending(&self, version: u64) -> BTreeSet<String> {
        let beats = self.heartbeats.lock().unwrap_or_else(|e| e.into_inner());
        self.store.read(|d| {
            d.nodes
                .values()
                .filter(|n| node_ready(n))
                .filter(|n| beats.get(&n.id).is_none_or(|b| b.gossip_version < version))
                .map(|n| n.id.clone())
                .collect()
        })
    }

    /// Records a sign of life; `gossip_version` when the node said which
    /// gossip keyring it holds (heartbeats do).
    fn beat(&self, node_id: &str, gossip_version: Option<u64>) {
        let mut beats = self.heartbeats.lock().unwrap_or_else(|e| e.into_inner());
        let beat = beats.entry(node_id.to_string()).or_insert(Beat {
            at: Instant::now(),
            gossip_version: 0,
        });
        beat.at = Instant::now();
        if let Some(v) = gossip_version {
            beat.gossip_version = v;
        }
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send>>;

#[tonic::async_trait]
impl dispatcher_server::Dispatcher for Dispatcher {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        authz::ensure_own_node(&request, &request.get_ref().node_id)?;
        self.ensure_session_leader()?;
        let req = request.into_inner();
        if req.node_id.is_empty() {
            return Err(Status::invalid_argument("session: node_id is empty"));
        }
        let epoch = self.register(&req).await?;
        self.beat(&req.node_id, None);
        let session_id = new_id();
        tracing::info!(node = %req.node_id, epoch, session = %session_id, "worker session opened");

        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        let node_id = req.node_id.clone();
        let key = self.key.clone();
        let this = self.clone();
        tokio::spawn(async move {
            let mut changes = store.subscribe();
            let mut last: Option<SessionMessage> = None;
            let mut inputs = None;
            let mut leadership = tokio::time::interval(Duration::from_millis(HEARTBEAT_PERIOD_MS));
            let mut lost_reports = this.status.lost_reports();
            loop {
                changes.borrow_and_update();
                let msg = store.read(|d| {
                    let now = Some(session_inputs(d, &node_id));
                    (inputs != now).then(|| {
                        inputs = now;
                        session_message(d, &key, &node_id, &session_id, epoch)
                    })
                });
                if let Some(msg) = msg.filter(|m| last.as_ref() != Some(m)) {
                    if tx.send(Ok(msg.clone())).await.is_err() {
                        break;
                    }
                    last = Some(msg);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tx.closed() => break,
                    r = changes.changed() => if r.is_err() { break },
                    _ = leadership.tick() => {
                        // Leadership moved, or can no longer be proved: the
                        // node must report to the (new) leader, so end the
                        // stream with where it is.
                        if let Err(status) = this.ensure_session_leader() {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    }
                    lost = lost_reports.recv() => {
                        // This node's reports were dropped with leadership
                        // (even if it came back): end the session, the node
                        // reports all its pods again on its next one.
                        if lost.map_or(true, |nodes| nodes.contains(&node_id)) {
                            let status = this.ensure_session_leader().err().unwrap_or_else(|| {
                                Status::unavailable("status reports were lost while this manager did not lead: open a new session")
                            });
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    }
                }
            }
            tracing::info!(node = %node_id, "worker session closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        authz::ensure_own_node(&request, &request.get_ref().node_id)?;
        self.ensure_leader()?;
        let req = request.into_inner();
        // A node marked Down whose session still lives (it was starved,
        // or cut off and back) must register again: that makes it Ready
        // with a new session epoch, and its replaced pods are stopped by
        // the new session's assignments. Beating on would leave it Down.
        let down = self.store.read(|d| {
            d.nodes
                .get(&req.node_id)
                .and_then(|n| n.status.as_ref())
                .is_some_and(|s| s.state() == NodeState::Down)
        });
        if down {
            return Err(Status::failed_precondition(
                "this node was marked Down: open a new session",
            ));
        }
        self.beat(&req.node_id, Some(req.gossip_version));
        Ok(Response::new(HeartbeatResponse {
            period_ms: HEARTBEAT_PERIOD_MS,
        }))
    }

    async fn update_pod_status(
        &self,
        request: Request<UpdatePodStatusRequest>,
    ) -> Result<Response<UpdatePodStatusResponse>, Status> {
        authz::ensure_own_node(&request, &request.get_ref().node_id)?;
        self.ensure_leader()?;
        let req = request.into_inner();
        self.beat(&req.node_id, None);
        self.status.submit(&req.node_id, req.updates);
        Ok(Response::new(UpdatePodStatusResponse {}))
    }
}

#[cfg(test)]
mod leadership_tests {
    use super::*;
    use crate::raft::ProposeError;
    use futures::future::BoxFuture;
    use shoal_proto::{Batch, BatchResult};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Leads by its own account; proves it only while `reachable`.
    struct Isolated {
        reachable: AtomicBool,
    }

    impl Proposer for Isolated {
        fn propose(&self, _: Batch) -> BoxFuture<'_, Result<BatchResult, ProposeError>> {
            Box::pin(async { Err(ProposeError::NoLeader) })
        }
        fn confirm_leadership(&self) -> BoxFuture<'_, bool> {
            let ok = self.reachable.load(Ordering::SeqCst);
            Box::pin(async move {
                if !ok {
                    // As a barrier that never gets its quorum.
                    std::future::pending::<()>().await;
                }
                true
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_prove_its_leadership_stops_confirming_and_recovers() {
        let proposer = Arc::new(Isolated {
            reachable: AtomicBool::new(true),
        });
        let (tx, mut rx) = watch::channel(true);
        let shutdown = CancellationToken::new();
        tokio::spawn(confirm_leadership(proposer.clone(), tx, shutdown.clone()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            *rx.borrow_and_update(),
            "a reachable quorum keeps it confirmed"
        );

        proposer.reachable.store(false, Ordering::SeqCst);
        let cut = tokio::time::Instant::now();
        rx.changed().await.unwrap();
        assert!(!*rx.borrow_and_update());
        let took = cut.elapsed();
        assert!(
            took <= Duration::from_millis(HEARTBEAT_PERIOD_MS) * (UNCONFIRMED_TICKS * 2 + 1),
            "{took:?}"
        );

        proposer.reachable.store(true, Ordering::SeqCst);
        rx.changed().await.unwrap();
        assert!(*rx.borrow());
        shutdown.cancel();
    }
}
