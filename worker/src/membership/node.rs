//! A node's gossip as the daemon runs it: started by the first session
//! message that carries keys, given each later keyring, asked by the
//! manager (on a manager node) which nodes are alive.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use shoal_proto::{GossipConfig, GossipInfo};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{GossipKey, Keyring, Membership, MembershipConfig};

/// This node's gossip member, once it runs.
pub struct NodeGossip {
    node_id: String,
    cluster_id: String,
    listen_addr: SocketAddr,
    advertise_addr: SocketAddr,
    member: tokio::sync::Mutex<Option<Membership>>,
    /// Read without awaiting (the manager's node monitor, Info).
    snapshot: Mutex<Option<Snapshot>>,
    /// The keyring version this node holds (0: none yet).
    version: AtomicU64,
    shutdown: CancellationToken,
}

/// What readers need of a running member, cloned out of it.
struct Snapshot {
    live: tokio::sync::watch::Receiver<BTreeSet<String>>,
    capacity: usize,
}

impl NodeGossip {
    /// Gossip for `node_id` on `listen_addr`, reached by other nodes at
    /// `advertise_addr`; nothing is bound until [`NodeGossip::apply`].
    pub fn new(
        node_id: impl Into<String>,
        cluster_id: impl Into<String>,
        listen_addr: SocketAddr,
        advertise_addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> NodeGossip {
        NodeGossip {
            node_id: node_id.into(),
            cluster_id: cluster_id.into(),
            listen_addr,
            advertise_addr,
            member: tokio::sync::Mutex::new(None),
            snapshot: Mutex::new(None),
            version: AtomicU64::new(0),
            shutdown,
        }
    }

    /// Where other nodes reach this node's gossip (host:port).
    pub fn advertise_addr(&self) -> String {
        self.advertise_addr.to_string()
    }

    /// The keyring version this node holds, echoed in heartbeats.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Takes the gossip settings of a session message: starts gossip the
    /// first time, replaces the keyring later. A node that cannot bind its
    /// gossip port logs it and goes on without gossip (a hint; sessions
    /// decide liveness), and still says it holds the keyring, so a
    /// rotation is not held up by it.
    pub async fn apply(&self, config: &GossipConfig) {
        if config.version == self.version() {
            return;
        }
        let keyring = match keyring(&config.keys) {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "unusable gossip keys in the session message; gossip unchanged");
                return;
            }
        };
        let mut member = self.member.lock().await;
        match member.as_ref() {
            Some(m) => m.set_keyring(keyring),
            None => {
                let mut cfg = MembershipConfig::new(
                    self.node_id.clone(),
                    self.cluster_id.clone(),
                    self.advertise_addr,
                    keyring,
                );
                cfg.listen_addr = self.listen_addr;
                cfg.seeds = config
                    .seeds
                    .iter()
                    .filter(|s| **s != self.advertise_addr())
                    .cloned()
                    .collect();
                match Membership::start(cfg, self.shutdown.child_token()).await {
                    Ok(m) => {
                        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Snapshot {
                            live: m.live_nodes(),
                            capacity: m.capacity(),
                        });
                        *member = Some(m);
                    }
                    Err(e) => warn!(
                        error = %e,
                        "gossip not started: liveness relies on dispatcher sessions alone"
                    ),
                }
            }
        }
        self.version.store(config.version, Ordering::Relaxed);
    }

    /// Ids of the nodes gossip deems alive; `None` when gossip is not
    /// running or went past its ceiling (then the set is not trusted).
    pub fn live_nodes(&self) -> Option<BTreeSet<String>> {
        if self.degraded() {
            return None;
        }
        let snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        snapshot.as_ref().map(|s| s.live.borrow().clone())
    }

    /// How many nodes gossip can carry (0 while it is not running).
    pub fn capacity(&self) -> usize {
        let snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        snapshot.as_ref().map_or(0, |s| s.capacity)
    }

    fn degraded(&self) -> bool {
        self.member
            .try_lock()
            .ok()
            .and_then(|m| m.as_ref().map(Membership::degraded))
            .unwrap_or(false)
    }

    /// This node's gossip for `shoal info`.
    pub fn info(&self) -> GossipInfo {
        // Locked for the instant it starts or takes a new keyring: answered
        // as not running then.
        let member = self.member.try_lock().ok();
        let Some(m) = member.as_ref().and_then(|m| m.as_ref()) else {
            return GossipInfo {
                addr: self.advertise_addr(),
                ..Default::default()
            };
        };
        let stats = m.stats();
        let keyring = m.keyring();
        GossipInfo {
            running: true,
            addr: self.advertise_addr(),
            live_nodes: m.live_nodes().borrow().iter().cloned().collect(),
            key_ids: keyring.ids().into_iter().map(|k| k.0).collect(),
            primary_key_id: keyring.primary().0,
            forged: stats.forged,
            replayed: stats.replayed,
            stale: stats.stale,
            oversized: stats.oversized,
            malformed: stats.malformed,
            send_oversized: stats.send_oversized,
            degraded: m.degraded(),
            capacity: m.capacity() as u32,
        }
    }
}

/// A keyring from keys in the clear, the first one sealing.
fn keyring(keys: &[Vec<u8>]) -> Result<Keyring, super::KeyringError> {
    let mut keys = keys.iter().map(|k| GossipKey::from_bytes(k));
    let Some(primary) = keys.next() else {
        return Err(super::KeyringError::Empty);
    };
    let mut ring = Keyring::new(primary?);
    for key in keys {
        ring.install(key?)?;
    }
    Ok(ring)
}
