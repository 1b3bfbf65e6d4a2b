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
    heartbeat_period_ms, GOSSIP_KEY_ROTATION_MS, GOSSIP_KEY_STEP_WAIT_MS,
    HEARTBEAT_MISSES_BEFORE_DOWN, HEARTBEAT_PERIOD_MS, NODE_MONITOR_TICK_MS,
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

pub use assignments::{manager_addrs, SessionView};
pub use liveness::{verdict, LivenessHint, Signs, Verdict};

/// A node's last heartbeat on this manager, the gossip keyring version it
/// said it holds, and how its newest session stands.
#[derive(Debug, Clone, Default)]
struct Beat {
    at: Option<Instant>,
    /// The period this manager last told the node to beat at.
    period: Option<Duration>,
    gossip_version: u64,
    /// The node's newest session on this manager.
    session: String,
    /// When the node's side closed that session (see [`liveness`]).
    closed: Option<Instant>,
    /// The node said it is stopping on purpose: a closed session then
    /// means nothing more than silence does.
    stopping: bool,
}

impl Beat {
    /// Since the node's side closed its newest session, unless it said it
    /// was stopping.
    fn closed_for(&self) -> Option<Duration> {
        self.closed.filter(|_| !self.stopping).map(|c| c.elapsed())
    }
}

/// Signs of life per node id, on this manager.
#[derive(Default)]
struct Beats(Mutex<HashMap<String, Beat>>);

impl Beats {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Beat>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with(&self, node_id: &str, f: impl FnOnce(&mut Beat)) {
        f(self.lock().entry(node_id.to_string()).or_default());
    }

    /// Records a sign of life; `gossip_version` when the node said which
    /// gossip keyring it holds and `period` when it was told a heartbeat
    /// period (heartbeats do both).
    fn beat(&self, node_id: &str, gossip_version: Option<u64>, period: Option<Duration>) {
        self.with(node_id, |beat| {
            beat.at = Some(Instant::now());
            if let Some(v) = gossip_version {
                beat.gossip_version = v;
            }
            if period.is_some() {
                beat.period = period;
            }
        });
    }

    /// A new session of `node_id`: a sign of life that also forgets how
    /// its last session ended.
    fn session_opened(&self, node_id: &str, session_id: &str) {
        self.with(node_id, |beat| {
            beat.at = Some(Instant::now());
            beat.session = session_id.to_string();
            beat.closed = None;
            beat.stopping = false;
        });
    }

    /// The node's side closed `session_id` (its stream's receiver is gone);
    /// remembered only while it is the node's newest session.
    fn session_closed(&self, node_id: &str, session_id: &str) {
        self.with(node_id, |beat| {
            if beat.session == session_id {
                beat.closed = Some(Instant::now());
            }
        });
    }

    /// The node said it is stopping on purpose.
    fn stopping(&self, node_id: &str) {
        self.with(node_id, |beat| beat.stopping = true);
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    heartbeats: Arc<Beats>,
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

/// How long a node may stay silent before it is Down: five periods of the
/// period it was last told (`told`), and never of less than the cluster is
/// told now (`period`). A node told a longer period while the cluster was
/// larger keeps that expiry until a heartbeat's answer gives it the shorter
/// one; one that was never answered is judged on the current period.
fn heartbeat_expiry(told: Option<Duration>, period: Duration) -> Duration {
    told.unwrap_or(period).max(period) * HEARTBEAT_MISSES_BEFORE_DOWN as u32
}

/// How long a leader keeps its worker sessions after a quorum of managers
/// last acknowledged it. Safety bound: a leader cut off from the other
/// managers must have ended its sessions, and its nodes reached the new
/// leader, before that new leader marks anyone Down: it is elected no
/// sooner than an election timeout after the last acknowledgement, then
/// waits a full heartbeat expiry (five periods) before its first Down. Two
/// periods, plus a check period and a session's own check, leave the nodes
/// more than a period to reconnect. Far longer than Raft's own tolerance
/// (an election timeout, 250-500 ms): a CPU stall that delays a few Raft
/// heartbeats no longer ends every session, as a read barrier with a time
/// limit did (it queued behind the writes of thousands of registrations).
/// This is the lease up to 1,000 nodes; past that it grows with the
/// heartbeat period, as the new leader's wait does ([`quorum_ack_lease`]).
const QUORUM_ACK_LEASE: Duration = Duration::from_millis(2 * HEARTBEAT_PERIOD_MS);

/// The lease for a cluster of `nodes` nodes: two heartbeat periods, so the
/// margin above holds at any size. At 5,000 nodes it is 10 s, and a leader
/// starved for two seconds (the simulator's placements do that to it) keeps
/// its sessions instead of sending 5,000 nodes to reconnect.
fn quorum_ack_lease(nodes: usize) -> Duration {
    QUORUM_ACK_LEASE.max(Duration::from_millis(2 * heartbeat_period_ms(nodes)))
}

/// How often the lease is checked (a read of Raft's metrics, no I/O).
const LEASE_CHECK: Duration = Duration::from_millis(HEARTBEAT_PERIOD_MS / 4);

/// Whether a leader last acknowledged by a quorum `ack_age` ago may keep its
/// sessions, under `lease`.
fn leadership_holds(ack_age: Option<Duration>, lease: Duration) -> bool {
    ack_age.is_some_and(|age| age <= lease)
}

/// Keeps `confirmed` telling whether this leader was acknowledged by a
/// quorum of managers lately, for the sessions: a leader cut off from the
/// other managers (but not from its workers) would otherwise keep their
/// sessions while the new leader marks them Down and runs their pods
/// elsewhere. Raft's own acknowledgements are the evidence (see
/// [`Proposer::quorum_ack_age`]), read once per manager, not per session,
/// so the cost does not grow with the nodes. `lease` says how long an
/// acknowledgement lasts now ([`quorum_ack_lease`]).
async fn confirm_leadership(
    proposer: Arc<dyn Proposer>,
    confirmed: watch::Sender<bool>,
    shutdown: CancellationToken,
    lease: impl Fn() -> Duration + Send + 'static,
) {
    // Since when this manager leads, as this task saw it.
    let mut leading_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LEASE_CHECK) => {}
        }
        if !proposer.leads() {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
        // A new leader's first acknowledgement can be slow under load;
        // until it comes, its election (a quorum's votes, granted before
        // this task saw it lead) is the evidence.
        let age = proposer.quorum_ack_age().or_else(|| Some(since.elapsed()));
        let ok = leadership_holds(age, lease());
        confirmed.send_if_modified(|c| {
            let changed = *c != ok;
            if changed && !ok {
                tracing::warn!(
                    since_quorum_ack = ?age,
                    "this leader cannot reach a quorum of managers: ending worker sessions"
                );
            } else if changed {
                tracing::info!("a quorum of managers acknowledges this leader again");
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
        let nodes = store.clone();
        let lease = move || quorum_ack_lease(nodes.read(|d| d.nodes.len()));
        tokio::spawn(confirm_leadership(
            proposer.clone(),
            tx,
            shutdown.clone(),
            lease,
        ));
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
        let started = Instant::now();
        // When this leader first saw each node Disconnected.
        let mut disconnected_since: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(NODE_MONITOR_TICK_MS)) => {}
            }
            let node_count = self.store.read(|d| d.nodes.len());
            // The period the cluster is told now; a node told a longer one
            // (when there were more nodes) is given that one's expiry.
            let period = Duration::from_millis(heartbeat_period_ms(node_count));
            if started.elapsed() < heartbeat_expiry(None, period) {
                continue;
            }
            let live = liveness::usable_live_set(self.liveness.as_deref(), node_count);
            let changes: Vec<(Node, Verdict)> = {
                let beats = self.heartbeats.lock();
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
                            let beat = beats.get(&n.id);
                            let signs = Signs {
                                heartbeat_age: beat.and_then(|b| b.at).map(|at| at.elapsed()),
                                session_closed_for: beat.and_then(Beat::closed_for),
                                gossip_hears: liveness::gossip_hears(live.as_ref(), &n.id),
                                disconnected_for: since.elapsed(),
                            };
                            let expiry = heartbeat_expiry(beat.and_then(|b| b.period), period);
                            let v = verdict(state, &signs, expiry);
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
                // A few names: at thousands of nodes the whole set is a
                // line of tens of kilobytes, every period.
                let some: Vec<&String> = pending.iter().take(5).collect();
                tracing::warn!(
                    pending = pending.len(),
                    ?some,
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
        let beats = self.heartbeats.lock();
        self.store.read(|d| {
            d.nodes
                .values()
                .filter(|n| node_ready(n))
                .filter(|n| beats.get(&n.id).is_none_or(|b| b.gossip_version < version))
                .map(|n| n.id.clone())
                .collect()
        })
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
        // The beat first: once registered the node is Ready in the store,
        // and the node monitor must not find it Ready and never heard of
        // (or with its last session closed) while the registration's
        // answer is still on its way.
        let session_id = new_id();
        self.heartbeats.session_opened(&req.node_id, &session_id);
        let epoch = self.register(&req).await?;
        tracing::info!(node = %req.node_id, epoch, session = %session_id, "worker session opened");

        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        let node_id = req.node_id.clone();
        let incremental = req.incremental;
        let key = self.key.clone();
        let this = self.clone();
        tokio::spawn(async move {
            let mut changes = store.subscribe_session(&node_id);
            let mut view = SessionView::new(&node_id, &session_id, epoch, incremental);
            let mut leadership = tokio::time::interval(Duration::from_millis(HEARTBEAT_PERIOD_MS));
            // Whether the node's side closed the stream (rather than this
            // manager ending it): a sign its process or host is gone.
            let mut node_closed = false;
            let mut lost_reports = this.status.lost_reports();
            loop {
                changes.mark_seen();
                if let Some(msg) = store.read(|d| view.next(d, &key)) {
                    if tx.send(Ok(msg)).await.is_err() {
                        node_closed = true;
                        break;
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tx.closed() => {
                        node_closed = true;
                        break;
                    }
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
            if node_closed {
                this.heartbeats.session_closed(&node_id, &session_id);
                tracing::info!(node = %node_id, "worker session closed by the node");
            } else {
                tracing::info!(node = %node_id, "worker session closed");
            }
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
        let (down, nodes) = self.store.read(|d| {
            let down = d
                .nodes
                .get(&req.node_id)
                .and_then(|n| n.status.as_ref())
                .is_some_and(|s| s.state() == NodeState::Down);
            (down, d.nodes.len())
        });
        if down {
            return Err(Status::failed_precondition(
                "this node was marked Down: open a new session",
            ));
        }
        // The period grows with the cluster (see heartbeat_period_ms); the
        // node monitor gives this node the expiry of the period it was told.
        let period_ms = heartbeat_period_ms(nodes);
        self.heartbeats.beat(
            &req.node_id,
            Some(req.gossip_version),
            Some(Duration::from_millis(period_ms)),
        );
        if req.stopping {
            tracing::info!(node = %req.node_id, "the node says it is stopping");
            self.heartbeats.stopping(&req.node_id);
        }
        Ok(Response::new(HeartbeatResponse { period_ms }))
    }

    async fn update_pod_status(
        &self,
        request: Request<UpdatePodStatusRequest>,
    ) -> Result<Response<UpdatePodStatusResponse>, Status> {
        authz::ensure_own_node(&request, &request.get_ref().node_id)?;
        self.ensure_leader()?;
        let req = request.into_inner();
        self.heartbeats.beat(&req.node_id, None, None);
        self.status.submit(&req.node_id, req.updates);
        Ok(Response::new(UpdatePodStatusResponse {}))
    }
}

#[cfg(test)]
mod beat_tests {
    use super::*;

    #[test]
    fn a_node_is_judged_on_the_longest_of_the_period_it_was_told_and_the_current_one() {
        let s = Duration::from_secs;
        // Never answered: the current period.
        assert_eq!(heartbeat_expiry(None, s(1)), s(5));
        assert_eq!(heartbeat_expiry(None, s(5)), s(25));
        // Told 5 s when the cluster was larger: 5 s until told otherwise.
        assert_eq!(heartbeat_expiry(Some(s(5)), s(1)), s(25));
        // Told 1 s, the cluster grew since: its next beat may come 5 s later.
        assert_eq!(heartbeat_expiry(Some(s(1)), s(5)), s(25));
        assert_eq!(heartbeat_expiry(Some(s(2)), s(2)), s(10));
    }

    #[test]
    fn only_the_newest_session_closed_by_a_node_that_did_not_say_it_stops_counts() {
        let d = Beats::default();
        d.session_opened("n", "s1");
        d.session_opened("n", "s2");
        // The older session's stream ends after the node opened a new one.
        d.session_closed("n", "s1");
        let closed_for = |d: &Beats| d.lock()["n"].closed_for();
        assert_eq!(closed_for(&d), None);
        d.session_closed("n", "s2");
        assert!(closed_for(&d).is_some());
        // A node that said it was stopping: its closed session is silence.
        d.stopping("n");
        assert_eq!(closed_for(&d), None);
        // A new session forgets both.
        d.session_opened("n", "s3");
        d.session_closed("n", "s3");
        assert!(closed_for(&d).is_some());
    }
}

#[cfg(test)]
mod leadership_tests {
    use super::*;
    use crate::raft::ProposeError;
    use futures::future::BoxFuture;
    use shoal_proto::{Batch, BatchResult};

    /// Leads by its own account; its quorum's last acknowledgement is
    /// whatever the test sets (by the paused test clock).
    struct Leader {
        acked_at: Mutex<Option<tokio::time::Instant>>,
    }

    impl Leader {
        fn acked(&self, at: Option<tokio::time::Instant>) {
            *self.acked_at.lock().unwrap() = at;
        }
    }

    impl Proposer for Leader {
        fn propose(&self, _: Batch) -> BoxFuture<'_, Result<BatchResult, ProposeError>> {
            Box::pin(async { Err(ProposeError::NoLeader) })
        }
        fn quorum_ack_age(&self) -> Option<Duration> {
            self.acked_at.lock().unwrap().map(|at| at.elapsed())
        }
    }

    /// A leader never acknowledged yet, and its confirmation task.
    fn start() -> (Arc<Leader>, watch::Receiver<bool>, CancellationToken) {
        let proposer = Arc::new(Leader {
            acked_at: Mutex::new(None),
        });
        let (tx, rx) = watch::channel(true);
        let shutdown = CancellationToken::new();
        tokio::spawn(confirm_leadership(
            proposer.clone(),
            tx,
            shutdown.clone(),
            || QUORUM_ACK_LEASE,
        ));
        (proposer, rx, shutdown)
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_prove_its_leadership_stops_confirming_and_recovers() {
        let (proposer, mut rx, shutdown) = start();
        // A reachable quorum acknowledges every Raft heartbeat.
        let beats = {
            let proposer = proposer.clone();
            let cut = CancellationToken::new();
            let stop = cut.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    proposer.acked(Some(tokio::time::Instant::now()));
                    tokio::time::sleep(Duration::from_millis(75)).await;
                }
            });
            cut
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            *rx.borrow_and_update(),
            "a reachable quorum keeps it confirmed"
        );

        // Cut off: the acknowledgements stop.
        beats.cancel();
        rx.changed().await.unwrap();
        assert!(!*rx.borrow_and_update());
        let took = proposer.quorum_ack_age().unwrap();
        assert!(took > QUORUM_ACK_LEASE, "ended within the lease: {took:?}");
        assert!(took <= QUORUM_ACK_LEASE + LEASE_CHECK, "{took:?}");

        proposer.acked(Some(tokio::time::Instant::now()));
        rx.changed().await.unwrap();
        assert!(*rx.borrow());
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_acknowledged_within_the_lease_keeps_its_sessions_however_late_the_acks() {
        let (proposer, mut rx, shutdown) = start();
        // Acknowledgements arrive in bursts, each one just inside the
        // lease of the one before (a starved core), for a minute.
        let gap = QUORUM_ACK_LEASE - LEASE_CHECK;
        for _ in 0..(60_000 / gap.as_millis()) {
            proposer.acked(Some(tokio::time::Instant::now()));
            tokio::time::sleep(gap).await;
        }
        assert!(
            !rx.has_changed().unwrap(),
            "sessions ended within the lease"
        );
        assert!(*rx.borrow_and_update());

        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_counts_its_election_until_its_first_acknowledgement() {
        let (proposer, mut rx, shutdown) = start();
        let elected = tokio::time::Instant::now();
        rx.changed().await.unwrap();
        assert!(!*rx.borrow_and_update(), "no acknowledgement ever came");
        let took = elected.elapsed();
        assert!(took > QUORUM_ACK_LEASE, "ended within the lease: {took:?}");
        assert!(took <= QUORUM_ACK_LEASE + 2 * LEASE_CHECK, "{took:?}");
        proposer.acked(Some(tokio::time::Instant::now()));
        rx.changed().await.unwrap();
        assert!(*rx.borrow());
        shutdown.cancel();
    }

    #[test]
    fn leadership_holds_up_to_the_lease_and_not_without_an_acknowledgement() {
        let lease = QUORUM_ACK_LEASE;
        assert!(leadership_holds(Some(Duration::ZERO), lease));
        assert!(leadership_holds(Some(lease), lease));
        assert!(!leadership_holds(
            Some(lease + Duration::from_millis(1)),
            lease
        ));
        assert!(!leadership_holds(None, lease));
        // The lease grows with the heartbeat period, as the new leader's
        // wait before its first Down does.
        assert_eq!(quorum_ack_lease(0), QUORUM_ACK_LEASE);
        assert_eq!(quorum_ack_lease(1_000), QUORUM_ACK_LEASE);
        assert_eq!(quorum_ack_lease(5_000), Duration::from_secs(10));
        // Two of the five periods a new leader waits, at any size.
        let period = Duration::from_millis(heartbeat_period_ms(5_000));
        assert_eq!(
            quorum_ack_lease(5_000) * 5,
            heartbeat_expiry(None, period) * 2
        );
    }
}
