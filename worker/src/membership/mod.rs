//! Node membership by gossip: a fast hint of which nodes are alive.
//!
//! chitchat (Scuttlebutt anti-entropy with a phi-accrual failure detector)
//! runs over a sealed UDP transport ([`transport`], wire format in
//! [`sealed`]), so only holders of the cluster's gossip key take part, and
//! forged, replayed, stale or oversized datagrams are dropped and counted
//! ([`TransportStats`]).
//!
//! Gossip is advisory (DESIGN.md §5): the dispatcher session stays the
//! authority for marking a node Down; a node missing from
//! [`Membership::live_nodes`] only lets the manager look sooner. Gossip
//! carries liveness and soft state (small per-node key-values), never
//! desired state. Past about a thousand nodes chitchat's digest no longer
//! fits one datagram ([`ceiling`]); gossip then degrades (logged once,
//! counted) and shoal runs on dispatcher sessions alone.
//!
//! chitchat never leaks out of this module: callers see node ids, keys and
//! counters.

pub mod ceiling;
pub mod keyring;
mod node;
pub mod sealed;
mod transport;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{spawn_chitchat, Chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{error, info, warn};

pub use keyring::{GossipKey, KeyId, Keyring, KeyringError};
pub use node::NodeGossip;
pub use sealed::TransportStats;

use sealed::{Counters, SEAL_OVERHEAD};
use transport::SealedTransport;

/// The gossip port, as Swarm's (7946/udp), so firewalls carry over.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// How often a node gossips with a few peers. chitchat's "phi" is the time
/// since a node's last heartbeat over the mean interval between its
/// heartbeats (which arrive about once a gossip interval or faster), so with
/// the default threshold a silent node is suspected after about 8 intervals:
/// ~2 s, sooner than the dispatcher's 5 missed 1 s heartbeats (measured on
/// loopback at 100 ms: 0.7 s).
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(250);
/// chitchat's default phi threshold (see [`DEFAULT_GOSSIP_INTERVAL`]). A
/// lower value suspects sooner and more often wrongly; a wrong suspicion only
/// makes the manager look at the node's session sooner.
pub const DEFAULT_PHI_THRESHOLD: f64 = 8.0;
/// The largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// How far a datagram's send time may be from the receiver's clock.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
/// How long a dead node is remembered before chitchat forgets it. Short on
/// purpose: a dead node (and every past generation of a restarted one) stays
/// in the digests for half of this, and digests are what hits the datagram
/// ceiling (see [`ceiling`]); a node that returns later is simply new again.
pub const DEFAULT_DEAD_NODE_GRACE: Duration = Duration::from_secs(600);

/// Everything [`Membership::start`] needs.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This node's id (the store's Node id).
    pub node_id: String,
    /// The cluster's id: nodes of another cluster are refused even with the key.
    pub cluster_id: String,
    /// Where to listen, 0.0.0.0:7946 by default.
    pub listen_addr: SocketAddr,
    /// Where other nodes reach this node's gossip socket.
    pub advertise_addr: SocketAddr,
    /// host:port of nodes to gossip with at first (managers are good seeds).
    pub seeds: Vec<String>,
    /// Keys accepted, and the one that seals; see [`keyring`].
    pub keyring: Keyring,
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    /// Largest datagram sent or accepted, at most [`MAX_UDP_PAYLOAD`].
    pub max_datagram_len: usize,
    /// Replay bound, see [`sealed`].
    pub max_age: Duration,
    pub dead_node_grace_period: Duration,
}

impl MembershipConfig {
    /// A configuration with shoal's defaults.
    pub fn new(
        node_id: impl Into<String>,
        cluster_id: impl Into<String>,
        advertise_addr: SocketAddr,
        keyring: Keyring,
    ) -> MembershipConfig {
        MembershipConfig {
            node_id: node_id.into(),
            cluster_id: cluster_id.into(),
            listen_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_GOSSIP_PORT)),
            advertise_addr,
            seeds: Vec::new(),
            keyring,
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            phi_threshold: DEFAULT_PHI_THRESHOLD,
            max_datagram_len: MAX_UDP_PAYLOAD,
            max_age: DEFAULT_MAX_AGE,
            dead_node_grace_period: DEFAULT_DEAD_NODE_GRACE,
        }
    }

    fn validate(&self) -> Result<(), MembershipError> {
        let invalid = |field: &'static str, value: String, reason: &str| {
            Err(MembershipError::InvalidConfig {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        if self.node_id.is_empty() || self.node_id.len() > u16::MAX as usize {
            return invalid("node_id", self.node_id.clone(), "must be 1 to 65535 bytes");
        }
        let smallest = SEAL_OVERHEAD + 512;
        if !(smallest..=MAX_UDP_PAYLOAD).contains(&self.max_datagram_len) {
            return invalid(
                "max_datagram_len",
                self.max_datagram_len.to_string(),
                &format!("must be between {smallest} and {MAX_UDP_PAYLOAD} bytes"),
            );
        }
        if self.gossip_interval.is_zero() {
            return invalid("gossip_interval", "0".into(), "must be positive");
        }
        if self.max_age < Duration::from_secs(1) {
            return invalid(
                "max_age",
                format!("{:?}", self.max_age),
                "must be at least 1 s, or clock skew drops all gossip",
            );
        }
        if !self.phi_threshold.is_finite() || self.phi_threshold <= 0.0 {
            return invalid(
                "phi_threshold",
                self.phi_threshold.to_string(),
                "must be positive",
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("invalid gossip setting {field} = {value}: {reason}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "cannot start gossip on {listen_addr}/udp: {reason} \
         (is another shoal daemon, or Docker Swarm, using the port?)"
    )]
    Start {
        listen_addr: SocketAddr,
        reason: String,
    },
}

/// What the manager needs from gossip, without depending on the worker:
/// the manager declares the same shape and the cli adapts one to the other.
pub trait LivenessHint: Send + Sync + 'static {
    /// Ids of the nodes gossip currently deems alive (this node included).
    /// A node leaving this set is a hint to check its session sooner, never
    /// a reason on its own to mark it Down.
    fn live_nodes(&self) -> watch::Receiver<BTreeSet<String>>;

    /// The most nodes gossip can carry (see [`ceiling`]). While the store
    /// holds more nodes than this, nodes that know too many fall silent and
    /// the others would see them "leave": ignore the hint then.
    fn capacity(&self) -> usize;
}

/// A running gossip member. Stops when the shutdown token given to
/// [`Membership::start`] is cancelled, or when it is dropped (a daemon that
/// restarts in another role must find 7946/udp free again).
pub struct Membership {
    node_id: String,
    chitchat: Arc<Mutex<Chitchat>>,
    keyring: Arc<RwLock<Keyring>>,
    counters: Arc<Counters>,
    live: watch::Receiver<BTreeSet<String>>,
    degraded: Arc<AtomicBool>,
    max_nodes: usize,
    task: JoinHandle<()>,
    stop_on_drop: DropGuard,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Binds the gossip socket and starts gossiping with the seeds.
    pub async fn start(
        config: MembershipConfig,
        shutdown: CancellationToken,
    ) -> Result<Membership, MembershipError> {
        config.validate()?;
        let max_nodes = ceiling::max_nodes(
            config.max_datagram_len,
            config.node_id.len(),
            &config.cluster_id,
        );
        let keyring = Arc::new(RwLock::new(config.keyring.clone()));
        let counters = Arc::new(Counters::default());
        let transport = SealedTransport {
            keyring: keyring.clone(),
            counters: counters.clone(),
            max_datagram_len: config.max_datagram_len,
            max_age: config.max_age,
        };
        // A restarted node gets a new generation, so peers take its fresh
        // state over what they remember of the previous run.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(config.node_id.clone(), generation, config.advertise_addr),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.listen_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                initial_interval: config.gossip_interval,
                max_interval: config.gossip_interval * 40,
                dead_node_grace_period: config.dead_node_grace_period,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let handle = spawn_chitchat(chitchat_config, Vec::new(), &transport)
            .await
            .map_err(|e| MembershipError::Start {
                listen_addr: config.listen_addr,
                reason: format!("{e:#}"),
            })?;
        let chitchat = handle.chitchat();
        let chitchat_live = chitchat.lock().await.live_nodes_watcher();
        let (live_tx, live) = watch::channel(node_ids(chitchat_live.borrow().iter()));
        info!(
            node_id = %config.node_id,
            listen = %config.listen_addr,
            advertise = %config.advertise_addr,
            seeds = ?config.seeds,
            max_nodes,
            "gossip started (max_nodes: how many nodes fit one datagram's digest)"
        );
        let degraded = Arc::new(AtomicBool::new(false));
        let follower = Follower {
            handle,
            chitchat: chitchat.clone(),
            chitchat_live,
            live_tx,
            counters: counters.clone(),
            max_nodes,
            degraded: degraded.clone(),
        };
        let stop = shutdown.child_token();
        let stop_on_drop = stop.clone().drop_guard();
        let task = tokio::spawn(follower.run(stop));
        Ok(Membership {
            stop_on_drop,
            max_nodes,
            node_id: config.node_id,
            chitchat,
            degraded,
            keyring,
            counters,
            live,
            task,
        })
    }

    /// Ids of the nodes gossip deems alive, this node included; changes as
    /// nodes join or the failure detector loses them.
    pub fn live_nodes(&self) -> watch::Receiver<BTreeSet<String>> {
        self.live.clone()
    }

    /// The most nodes whose digests fit one datagram with this node's
    /// settings (see [`ceiling`]): above it, the hint cannot be trusted.
    pub fn capacity(&self) -> usize {
        self.max_nodes
    }

    /// Whether gossip went past its ceiling and the live-node hint is frozen
    /// (see [`ceiling`]); shoal then relies on dispatcher sessions alone.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Datagram counters since start.
    pub fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }

    /// Rotation step 1: accept datagrams sealed with `key`.
    pub fn install_key(&self, key: GossipKey) -> Result<KeyId, KeyringError> {
        self.keyring_mut().install(key)
    }

    /// Rotation step 2: seal with key `id` (installed on every node first).
    pub fn use_key(&self, id: KeyId) -> Result<(), KeyringError> {
        self.keyring_mut().use_key(id)
    }

    /// Rotation step 3: stop accepting key `id`.
    pub fn remove_key(&self, id: KeyId) -> Result<(), KeyringError> {
        self.keyring_mut().remove(id)
    }

    /// Replaces the whole keyring, for when the managers hand out the
    /// cluster's current keyring (in the session message, say): each step
    /// of a rotation then arrives as a new keyring. Datagrams already on the
    /// wire under a key that is gone are dropped (and counted as forged).
    pub fn set_keyring(&self, keyring: Keyring) {
        let mut current = self.keyring_mut();
        if current.ids() != keyring.ids() || current.primary() != keyring.primary() {
            info!(keys = ?keyring.ids(), primary = %keyring.primary(), "gossip keyring changed");
        }
        *current = keyring;
    }

    /// The keys installed and the one that seals.
    pub fn keyring(&self) -> Keyring {
        self.keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publishes a piece of soft state (`key` = `value`) for this node; peers
    /// see it in their next gossip rounds. Keep it small: every node's state
    /// travels in datagrams.
    pub async fn set_local(&self, key: &str, value: &str) {
        self.chitchat.lock().await.self_node_state().set(key, value);
    }

    /// `key` as `node_id` last published it, if gossip knows the node.
    pub async fn get(&self, node_id: &str, key: &str) -> Option<String> {
        let chitchat = self.chitchat.lock().await;
        chitchat
            .node_states()
            .iter()
            .filter(|(id, _)| &*id.node_id == node_id)
            .max_by_key(|(id, _)| id.generation_id)
            .and_then(|(_, state)| state.get(key).map(str::to_string))
    }

    /// Stops gossip (if the shutdown token has not already) and waits until
    /// its socket is closed, so the port can be bound again at once.
    pub async fn stop(self) {
        let Membership {
            task, stop_on_drop, ..
        } = self;
        drop(stop_on_drop);
        let _ = task.await;
    }

    fn keyring_mut(&self) -> std::sync::RwLockWriteGuard<'_, Keyring> {
        self.keyring.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl LivenessHint for Membership {
    fn live_nodes(&self) -> watch::Receiver<BTreeSet<String>> {
        Membership::live_nodes(self)
    }

    fn capacity(&self) -> usize {
        Membership::capacity(self)
    }
}

fn node_ids<'a, I, V>(nodes: I) -> BTreeSet<String>
where
    I: IntoIterator<Item = (&'a ChitchatId, V)>,
{
    nodes
        .into_iter()
        .map(|(id, _)| id.node_id.to_string())
        .collect()
}

/// Mirrors chitchat's live set as node ids until shutdown, then stops
/// chitchat. If chitchat stops on its own (its socket failed), that is
/// logged once and the last live set stays: shoal goes on with dispatcher
/// sessions alone.
///
/// Past the ceiling (this node knows more nodes than fit a datagram, or has
/// had to drop a message) the set is frozen, logged once: nodes that cannot
/// send fall silent and would all look dead, a storm of false hints.
/// Frozen, the hint reports nothing more — no joins, no losses — until the
/// daemon restarts.
struct Follower {
    handle: chitchat::ChitchatHandle,
    chitchat: Arc<Mutex<Chitchat>>,
    chitchat_live: watch::Receiver<std::collections::BTreeMap<ChitchatId, chitchat::NodeState>>,
    live_tx: watch::Sender<BTreeSet<String>>,
    counters: Arc<Counters>,
    max_nodes: usize,
    degraded: Arc<AtomicBool>,
}

impl Follower {
    async fn run(mut self, shutdown: CancellationToken) {
        let terminated = self.handle.termination_watcher();
        tokio::pin!(terminated);
        let mut stopped_on_its_own = false;
        let mut watching = true;
        // Sends can start failing without any change in the live set.
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = check.tick(), if !self.degraded.load(Ordering::Relaxed) => {
                    self.past_ceiling().await;
                }
                result = &mut terminated, if !stopped_on_its_own => {
                    stopped_on_its_own = true;
                    let reason = match result {
                        Ok(()) => "it stopped".to_string(),
                        Err(e) => format!("{e:#}"),
                    };
                    error!(%reason, "gossip stopped; node liveness now comes from dispatcher sessions alone");
                }
                changed = self.chitchat_live.changed(), if watching && !stopped_on_its_own => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    if !self.past_ceiling().await {
                        self.publish();
                    }
                }
            }
        }
        if !stopped_on_its_own {
            if let Err(e) = self.handle.shutdown().await {
                error!(error = %format!("{e:#}"), "gossip did not stop cleanly");
            }
        }
    }

    /// Whether the hint is frozen; freezes it (logging once) on crossing.
    async fn past_ceiling(&self) -> bool {
        if self.degraded.load(Ordering::Relaxed) {
            return true;
        }
        let known = self.chitchat.lock().await.node_states().len();
        let dropped = self.counters.snapshot().send_oversized;
        if known <= self.max_nodes && dropped == 0 {
            return false;
        }
        self.degraded.store(true, Ordering::Relaxed);
        warn!(
            known,
            max_nodes = self.max_nodes,
            dropped,
            "gossip is past its ceiling (every node's digest must fit one datagram): the live-node \
             hint is frozen and liveness comes from dispatcher sessions alone. Logged once."
        );
        true
    }

    fn publish(&mut self) {
        let ids = node_ids(self.chitchat_live.borrow_and_update().iter());
        self.live_tx.send_if_modified(|current| {
            if *current == ids {
                return false;
            }
            let joined: Vec<_> = ids.difference(current).collect();
            let lost: Vec<_> = current.difference(&ids).collect();
            info!(
                ?joined,
                ?lost,
                live = ids.len(),
                "gossip membership changed"
            );
            *current = ids;
            true
        });
    }
}
