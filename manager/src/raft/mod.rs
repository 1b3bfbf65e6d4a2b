//! The manager's Raft node: openraft with a durable redb log, a state
//! machine over the in-memory [`Store`], and a gRPC transport.
//!
//! Everything the rest of the manager needs from consensus goes through
//! [`RaftNode`]: propose a batch and get the store's result, learn who leads
//! (as a watch, so controllers start and stop with leadership), and make
//! local reads linearizable. openraft's own types stay inside this module.
//!
//! Layout (as openraft's gRPC example): [`types`] declares the type config,
//! `codec` converts protobuf <-> openraft, `log_store` and `state_machine`
//! are the two storage halves, `network` and [`service`] the two transport
//! halves.

#[cfg(test)]
mod cluster_tests;
mod codec;
mod faults;
mod log_store;
mod membership;
mod network;
mod quorum_ack;
pub mod service;
mod state_machine;
pub mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError};
use openraft::{Config, SnapshotPolicy};
use shoal_proto::defaults::{
    RAFT_ELECTION_TIMEOUT_MAX_MS, RAFT_ELECTION_TIMEOUT_MIN_MS, RAFT_HEARTBEAT_MS,
    RAFT_SNAPSHOT_LOGS_SINCE_LAST,
};
use shoal_proto::raft_server::RaftServer;
use shoal_proto::{Batch, BatchResult, RaftPeer};
use tokio::sync::watch;

use crate::store::Store;
pub use faults::Faults;
use log_store::LogStore;
pub use membership::{check_removal, ManagerInfo, MembershipError, Removal};
use network::{NetworkFactory, PeerContacts};
use service::RaftService;
use state_machine::StateMachine;
use types::{NodeId, Raft};

/// Largest gRPC message between managers. Above tonic's 4 MiB default
/// because one AppendEntries carries up to openraft's `max_payload_entries`
/// batches, and a batch of scheduling decisions can be large.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most mutations in one log entry: a larger non-atomic batch is proposed
/// as several entries (see [`RaftNode::propose`]). A scheduling pass over
/// 100,000 pods is tens of megabytes; as one entry it must cross to each
/// follower in one AppendEntries call within openraft's heartbeat interval
/// (see `network::MAX_APPEND_BYTES`), which it never does.
pub const MAX_MUTATIONS_PER_ENTRY: usize = 500;

/// Log entries kept behind a snapshot, so a follower that lags a little
/// catches up from the log instead of receiving a whole snapshot.
const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1_000;

/// Deadline for sending one snapshot chunk (and, for the last one, for the
/// follower to install it). openraft's 200 ms default is too short for the
/// last chunk of a large store, whose install decodes, fsyncs and restores
/// everything; a timed-out install restarts the whole transfer, forever.
const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 10_000;

/// How this manager takes part in Raft.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This manager's Raft id; stable for the life of its data directory.
    pub node_id: u64,
    /// The node's data directory; Raft's files go to `data_dir/raft`.
    pub data_dir: PathBuf,
    /// host:port of this node's cluster gRPC, as peers reach it.
    pub advertise_addr: String,
    /// Mutual TLS to the other managers (`ca::tls::client_config` of this
    /// manager's credentials). `None` dials peers in plaintext, which only
    /// storage-level unit tests do: managers refuse Raft RPCs without a
    /// manager certificate.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Raft's clock: how often the leader sends AppendEntries (also the
/// deadline openraft gives each AppendEntries call, entries included) and
/// the election timeout range. The daemon uses the defaults
/// (`shoal_proto::defaults::RAFT_*`); the simulator, whose three managers
/// share two cores with thousands of simulated nodes' agents, uses a
/// slower one (docs/BENCHMARKS.md, "Simulator at scale").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: RAFT_HEARTBEAT_MS,
            election_min_ms: RAFT_ELECTION_TIMEOUT_MIN_MS,
            election_max_ms: RAFT_ELECTION_TIMEOUT_MAX_MS,
        }
    }
}

/// Why the Raft node could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// A file or directory Raft needs could not be used.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The log database could not be opened.
    #[error(transparent)]
    Log(#[from] log_store::OpenError),
    /// A snapshot file that cannot be read; starting without it would lose
    /// the entries it covers, which the log no longer holds.
    #[error("raft snapshot {path}: {message}; restore it from a backup or rejoin this manager")]
    Snapshot { path: PathBuf, message: String },
    /// openraft refused the configuration.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// The node could not become a one-manager cluster.
    #[error("cannot bootstrap a one-manager raft cluster: {0}")]
    Bootstrap(String),
    /// openraft stopped (a storage error, or shut down).
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// No leader was elected in time.
    #[error("no raft leader elected within {0:?}; is a quorum of managers up?")]
    NoLeaderWithin(Duration),
}

/// Why a proposal (or a read barrier) did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Another manager leads; send the request there.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        leader: Option<u64>,
        leader_addr: Option<String>,
    },
    /// No manager leads right now (an election is running, or a quorum is
    /// missing); retry later.
    #[error("no leader: the cluster has no quorum")]
    NoLeader,
    /// Raft stopped on this manager.
    #[error("raft failed: {0}")]
    Fatal(String),
}

impl ProposeError {
    fn write(e: ClientWriteError<NodeId, RaftPeer>) -> ProposeError {
        match e {
            ClientWriteError::ForwardToLeader(f) => ProposeError::forward(f),
            e @ ClientWriteError::ChangeMembershipError(_) => ProposeError::Fatal(e.to_string()),
        }
    }

    fn forward(f: ForwardToLeader<NodeId, RaftPeer>) -> ProposeError {
        match f.leader_id {
            Some(leader) => ProposeError::NotLeader {
                leader: Some(leader),
                leader_addr: f.leader_node.map(|n| n.addr),
            },
            None => ProposeError::NoLeader,
        }
    }
}

struct Inner {
    raft: Raft,
    node_id: NodeId,
    advertise_addr: String,
    applied_index: Arc<AtomicU64>,
    leader: watch::Receiver<Option<NodeId>>,
    /// While this node leads: the earliest moment a quorum may last have
    /// acknowledged it (see [`quorum_ack`]).
    quorum_acked: watch::Receiver<Option<tokio::time::Instant>>,
    /// Whether this node is a voter of the current (effective) membership.
    voter: watch::Receiver<bool>,
    /// Last successful RPC to each peer, for reachability.
    contacts: PeerContacts,
    faults: Faults,
}

/// A running Raft node. Cheap to clone; every clone drives the same node.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("node_id", &self.inner.node_id)
            .field("advertise_addr", &self.inner.advertise_addr)
            .finish()
    }
}

fn openraft_config(timing: RaftTiming) -> Result<Config, RaftError> {
    Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_min_ms,
        election_timeout_max: timing.election_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(RAFT_SNAPSHOT_LOGS_SINCE_LAST),
        max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT,
        install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
        ..Default::default()
    }
    .validate()
    .map_err(|e| RaftError::Config(e.to_string()))
}

impl RaftNode {
    /// Opens (or creates) the on-disk log and latest snapshot; starts openraft.
    ///
    /// `store` should be empty: it is restored from the latest snapshot, and
    /// openraft then re-applies the committed log after it in the background
    /// (watch [`RaftNode::last_applied`] or the store to see it catch up).
    pub async fn open(config: RaftConfig, store: Arc<Store>) -> Result<RaftNode, RaftError> {
        RaftNode::open_with_timing(config, store, RaftTiming::default()).await
    }

    /// [`RaftNode::open`] with another clock than the default (the simulator's).
    pub async fn open_with_timing(
        config: RaftConfig,
        store: Arc<Store>,
        timing: RaftTiming,
    ) -> Result<RaftNode, RaftError> {
        let raft_dir = config.data_dir.join("raft");
        std::fs::create_dir_all(&raft_dir).map_err(|e| RaftError::Io {
            context: format!("cannot create the raft directory {}", raft_dir.display()),
            source: e,
        })?;
        let log = LogStore::open(&raft_dir.join("log.redb"))?;
        let applied_index = Arc::new(AtomicU64::new(0));
        let sm = StateMachine::open(
            &raft_dir.join("snapshots"),
            store.clone(),
            applied_index.clone(),
        )?;
        let contacts = PeerContacts::default();
        let faults = Faults::default();
        let network = NetworkFactory::new(
            config.node_id,
            config.tls.clone(),
            contacts.clone(),
            faults.clone(),
        );
        let raft = Raft::new(
            config.node_id,
            Arc::new(openraft_config(timing)?),
            network,
            log,
            sm,
        )
        .await
        .map_err(|e| RaftError::Fatal(e.to_string()))?;
        tracing::info!(
            node_id = config.node_id,
            dir = %raft_dir.display(),
            "raft node started"
        );
        let leader = spawn_leader_watch(&raft);
        let quorum_acked = quorum_ack::spawn_quorum_ack_watch(&raft);
        let voter = membership::spawn_voter_watch(&raft, config.node_id);
        Ok(RaftNode {
            inner: Arc::new(Inner {
                raft,
                node_id: config.node_id,
                advertise_addr: config.advertise_addr,
                applied_index,
                leader,
                quorum_acked,
                voter,
                contacts,
                faults,
            }),
        })
    }

    /// True once a membership exists (initialized before, or restored from disk).
    pub async fn is_initialized(&self) -> bool {
        self.inner
            .raft
            .with_raft_state(|st| {
                st.membership_state
                    .effective()
                    .membership()
                    .nodes()
                    .next()
                    .is_some()
            })
            .await
            .unwrap_or(false)
    }

    /// Initializes a one-voter cluster of this node; a no-op when already initialized.
    pub async fn bootstrap_single(&self) -> Result<(), RaftError> {
        if self.is_initialized().await {
            return Ok(());
        }
        let members: BTreeMap<NodeId, RaftPeer> = [(
            self.inner.node_id,
            RaftPeer {
                addr: self.inner.advertise_addr.clone(),
            },
        )]
        .into();
        match self.inner.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(
                    node_id = self.inner.node_id,
                    "bootstrapped a one-manager raft cluster"
                );
                Ok(())
            }
            // Initialized meanwhile: fine. Otherwise this node already voted
            // in another cluster's election, and must join that one instead.
            Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(e))) => {
                if self.is_initialized().await {
                    Ok(())
                } else {
                    Err(RaftError::Bootstrap(e.to_string()))
                }
            }
            Err(e) => Err(RaftError::Bootstrap(e.to_string())),
        }
    }

    /// Proposes one batch and waits until it is committed and applied here.
    /// Returns the state machine's result.
    ///
    /// A non-atomic batch of more than [`MAX_MUTATIONS_PER_ENTRY`] mutations
    /// becomes several consecutive log entries, submitted in order at once
    /// (so they are appended and replicated together) and applied in
    /// order: the same outcome as one entry, since each mutation of a
    /// non-atomic batch is checked against the store as the earlier ones
    /// left it. Its result is their outcomes, in order, at the last one's
    /// index. If leadership is lost part way, some entries may have
    /// committed: the error says so no more than for one entry (the caller
    /// reads the store again). Atomic batches are always one entry.
    ///
    /// On a leader that has lost its quorum this waits until the quorum is
    /// back (the entry may still commit then); callers with a deadline wrap
    /// it in a timeout and treat the outcome as unknown when it expires.
    pub async fn propose(&self, batch: Batch) -> Result<BatchResult, ProposeError> {
        if batch.atomic || batch.mutations.len() <= MAX_MUTATIONS_PER_ENTRY {
            return match self.inner.raft.client_write(batch).await {
                Ok(resp) => Ok(resp.data),
                Err(openraft::error::RaftError::APIError(e)) => Err(ProposeError::write(e)),
                Err(openraft::error::RaftError::Fatal(f)) => {
                    Err(ProposeError::Fatal(f.to_string()))
                }
            };
        }
        let Batch {
            format, mutations, ..
        } = batch;
        let mut answers = Vec::new();
        for chunk in mutations.chunks(MAX_MUTATIONS_PER_ENTRY) {
            let entry = Batch {
                format,
                mutations: chunk.to_vec(),
                atomic: false,
            };
            let answer = self
                .inner
                .raft
                .client_write_ff(entry)
                .await
                .map_err(|f| ProposeError::Fatal(f.to_string()))?;
            answers.push(answer);
        }
        let mut result = BatchResult::default();
        for answer in answers {
            let written = answer
                .await
                .map_err(|_| ProposeError::Fatal("raft stopped before answering".into()))?
                .map_err(ProposeError::write)?;
            result.index = written.data.index;
            result.outcomes.extend(written.data.outcomes);
        }
        Ok(result)
    }

    /// Waits until some node is leader (or the timeout passes) and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, RaftError> {
        let mut rx = self.leader_watch();
        let wait = async {
            loop {
                if let Some(leader) = *rx.borrow_and_update() {
                    return Ok(leader);
                }
                if rx.changed().await.is_err() {
                    return Err(RaftError::Fatal("raft node shut down".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| RaftError::NoLeaderWithin(timeout))?
    }

    /// True when this node believes it leads (as of the latest metrics).
    pub fn is_leader(&self) -> bool {
        *self.inner.leader.borrow() == Some(self.inner.node_id)
    }

    /// How long ago a quorum of managers last acknowledged this node as
    /// leader, by openraft's own heartbeats (no round trip of its own, so
    /// it stays cheap and current when the core is busy with writes);
    /// `None` when it does not lead or was never acknowledged. A leader cut
    /// off from the other managers keeps believing it leads (openraft 0.9)
    /// while this age grows.
    pub fn quorum_ack_age(&self) -> Option<Duration> {
        if !self.is_leader() {
            return None;
        }
        let acked = *self.inner.quorum_acked.borrow();
        acked.map(|at| at.elapsed())
    }

    /// Current leader id (None during an election), as a watch so controllers can start/stop on leadership changes.
    pub fn leader_watch(&self) -> watch::Receiver<Option<u64>> {
        self.inner.leader.clone()
    }

    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The switches that make this node's outgoing Raft RPCs fail, for
    /// fault-injection tests (partitions without touching the OS network).
    /// Nothing is blocked unless a test asks; an unused handle costs one
    /// atomic load per RPC.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Last log index applied to the store on this node.
    pub fn last_applied(&self) -> u64 {
        self.inner.applied_index.load(Ordering::Acquire)
    }

    /// Makes sure reads served from the local store afterwards see every
    /// write committed before the call (openraft's read index on the
    /// leader). On a follower this fails with `NotLeader`: forward the read.
    pub async fn linearizable_barrier(&self) -> Result<(), ProposeError> {
        use openraft::error::RaftError as E;
        match self.inner.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(E::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ProposeError::forward(f))
            }
            Err(E::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => Err(ProposeError::NoLeader),
            Err(E::Fatal(f)) => Err(ProposeError::Fatal(f.to_string())),
        }
    }

    /// Builds a snapshot of everything applied so far, as the log-size
    /// policy does on its own, and waits until it is on disk (the log before
    /// it may then be purged). Returns the last log index it covers. For
    /// benchmarks, which time it at a known store size.
    pub async fn snapshot_now(&self) -> Result<u64, RaftError> {
        let target = self.last_applied();
        let mut metrics = self.inner.raft.metrics();
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| RaftError::Fatal(e.to_string()))?;
        loop {
            let covered = metrics
                .borrow_and_update()
                .snapshot
                .map_or(0, |id| id.index);
            if covered >= target {
                return Ok(covered);
            }
            metrics
                .changed()
                .await
                .map_err(|_| RaftError::Fatal("raft node shut down".into()))?;
        }
    }

    /// The tonic service to add to the cluster gRPC router.
    pub fn grpc_service(&self) -> RaftServer<RaftService> {
        RaftServer::new(RaftService::new(self.inner.raft.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Stops openraft; the log file is closed once its tasks have ended.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core task ended abnormally");
        }
        tracing::info!(node_id = self.inner.node_id, "raft node stopped");
    }
}

/// Mirrors openraft's metrics into a watch of the current leader, changed
/// only when the leader changes, so watchers wake on leadership changes and
/// not on every heartbeat's metrics update. Ends (leaving `None`) when
/// openraft stops.
fn spawn_leader_watch(raft: &Raft) -> watch::Receiver<Option<NodeId>> {
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(metrics.borrow().current_leader);
    tokio::spawn(async move {
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            tx.send_if_modified(|cur| {
                let changed = *cur != leader;
                if changed {
                    tracing::info!(leader = ?leader, "raft leader changed");
                    *cur = leader;
                }
                changed
            });
            if metrics.changed().await.is_err() {
                break;
            }
        }
        tx.send_replace(None);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::defaults::BATCH_FORMAT;
    use shoal_proto::{mutation, object, Mutation, MutationOutcome, Node, Object};

    const APPLIED: i32 = MutationOutcome::Applied as i32;
    const EXISTS: i32 = MutationOutcome::Exists as i32;
    const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

    fn put_nodes(ids: &[&str]) -> Batch {
        Batch {
            format: BATCH_FORMAT,
            mutations: ids
                .iter()
                .map(|id| Mutation {
                    op: Some(mutation::Op::Put(Object {
                        kind: Some(object::Kind::Node(Node {
                            id: (*id).into(),
                            ..Default::default()
                        })),
                    })),
                    expected_version: 0,
                    force: false,
                })
                .collect(),
            atomic: false,
        }
    }

    fn config(dir: &std::path::Path, node_id: u64, addr: &str) -> RaftConfig {
        RaftConfig {
            node_id,
            data_dir: dir.to_path_buf(),
            advertise_addr: addr.into(),
            tls: None,
        }
    }

    async fn open_leader(dir: &std::path::Path, store: Arc<Store>) -> RaftNode {
        let node = RaftNode::open(config(dir, 1, "127.0.0.1:1"), store)
            .await
            .expect("raft opens");
        node.bootstrap_single().await.expect("bootstrap");
        assert_eq!(node.wait_for_leader(LEADER_TIMEOUT).await.unwrap(), 1);
        node
    }

    fn node_ids(store: &Store) -> Vec<String> {
        store.read(|d| d.nodes.keys().cloned().collect())
    }

    #[tokio::test]
    async fn proposals_before_bootstrap_are_refused_without_a_leader() {
        let dir = tempfile::tempdir().unwrap();
        let node = RaftNode::open(config(dir.path(), 1, "127.0.0.1:1"), Store::new())
            .await
            .unwrap();
        assert!(!node.is_initialized().await);
        assert!(!node.is_leader());
        let err = node.propose(put_nodes(&["a"])).await.unwrap_err();
        assert!(matches!(err, ProposeError::NoLeader), "{err:?}");
        assert!(matches!(
            node.wait_for_leader(Duration::from_millis(50)).await,
            Err(RaftError::NoLeaderWithin(_))
        ));
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_single_node_commits_batches_and_keeps_them_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new();
        let node = open_leader(dir.path(), store.clone()).await;
        assert!(node.is_initialized().await);
        assert!(node.is_leader());
        assert_eq!(*node.leader_watch().borrow(), Some(1));
        // Bootstrapping twice is a no-op.
        node.bootstrap_single().await.unwrap();

        let mut last_index = 0;
        for i in 0..5 {
            let id = format!("node-{i}");
            let result = node.propose(put_nodes(&[&id])).await.unwrap();
            assert_eq!(result.outcomes, vec![APPLIED]);
            assert!(result.index > last_index, "indexes grow: {result:?}");
            last_index = result.index;
        }
        assert_eq!(node.last_applied(), last_index);
        node.linearizable_barrier().await.unwrap();
        assert_eq!(node_ids(&store).len(), 5);
        node.shutdown().await;
        drop(node);

        let store = Store::new();
        let node = RaftNode::open(config(dir.path(), 1, "127.0.0.1:1"), store.clone())
            .await
            .unwrap();
        assert!(node.is_initialized().await);
        // Committed entries are re-applied while opening.
        assert!(node.last_applied() >= last_index);
        assert_eq!(
            node_ids(&store),
            (0..5).map(|i| format!("node-{i}")).collect::<Vec<_>>()
        );
        node.bootstrap_single().await.unwrap();
        node.wait_for_leader(LEADER_TIMEOUT).await.unwrap();
        // The old objects are really there: creating one again conflicts.
        let again = node
            .propose(put_nodes(&["node-0", "node-5"]))
            .await
            .unwrap();
        assert_eq!(again.outcomes, vec![EXISTS, APPLIED]);
        assert!(again.index > last_index);
        assert_eq!(node.last_applied(), again.index);
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_large_batch_is_several_entries_applied_in_order_with_every_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new();
        let node = open_leader(dir.path(), store.clone()).await;
        node.propose(put_nodes(&["n-5"])).await.unwrap();
        let before = node.last_applied();

        // Three entries; n-5 exists already, and n-7 is put twice: the
        // second put (in the second entry) sees the first.
        let n = 2 * MAX_MUTATIONS_PER_ENTRY + 1;
        let mut ids: Vec<String> = (0..n - 1).map(|i| format!("n-{i}")).collect();
        ids.insert(MAX_MUTATIONS_PER_ENTRY + 1, "n-7".into());
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let result = node.propose(put_nodes(&refs)).await.unwrap();
        assert_eq!(result.index, before + 3);
        assert_eq!(result.index, node.last_applied());
        assert_eq!(result.outcomes.len(), n);
        for (i, (id, outcome)) in ids.iter().zip(&result.outcomes).enumerate() {
            let again = id == "n-5" || (id == "n-7" && i > MAX_MUTATIONS_PER_ENTRY);
            let expected = if again { EXISTS } else { APPLIED };
            assert_eq!(*outcome, expected, "{id} at {i}");
        }
        assert_eq!(node_ids(&store).len(), n - 1);

        // An atomic batch stays one entry, whatever its size.
        let mut atomic = put_nodes(
            &(0..n)
                .map(|i| format!("a-{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        atomic.atomic = true;
        let result = node.propose(atomic).await.unwrap();
        assert_eq!(result.index, before + 4);
        assert!(result.outcomes.iter().all(|o| *o == APPLIED));
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_snapshot_and_the_log_after_it_rebuild_the_store_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new();
        let node = open_leader(dir.path(), store.clone()).await;
        for i in 0..3 {
            node.propose(put_nodes(&[&format!("before-{i}")]))
                .await
                .unwrap();
        }
        let snap_index = node.last_applied();
        assert_eq!(node.snapshot_now().await.unwrap(), snap_index);
        let raft = node.inner.raft.clone();
        // Drop the log the snapshot covers, so recovery must use the snapshot.
        raft.trigger().purge_log(snap_index).await.unwrap();
        raft.wait(Some(LEADER_TIMEOUT))
            .metrics(
                |m| m.purged.map(|p| p.index) == Some(snap_index),
                "log purged",
            )
            .await
            .expect("log purged");
        for i in 0..2 {
            node.propose(put_nodes(&[&format!("after-{i}")]))
                .await
                .unwrap();
        }
        let last = node.last_applied();
        node.shutdown().await;
        drop((node, raft));

        let snaps: Vec<_> = std::fs::read_dir(dir.path().join("raft/snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(snaps.len(), 1, "{snaps:?}");
        assert!(snaps[0].ends_with(".snap"), "{snaps:?}");

        let store = Store::new();
        let node = RaftNode::open(config(dir.path(), 1, "127.0.0.1:1"), store.clone())
            .await
            .unwrap();
        assert_eq!(node.last_applied(), last);
        let mut ids = node_ids(&store);
        ids.sort();
        assert_eq!(
            ids,
            vec!["after-0", "after-1", "before-0", "before-1", "before-2"]
        );
        node.wait_for_leader(LEADER_TIMEOUT).await.unwrap();
        let r = node.propose(put_nodes(&["before-0"])).await.unwrap();
        assert_eq!(r.outcomes, vec![EXISTS]);
        node.shutdown().await;
    }

    /// Serves a node's Raft service on a fresh loopback port.
    async fn open_served(
        dir: &std::path::Path,
        node_id: u64,
        store: Arc<Store>,
    ) -> (RaftNode, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let node = RaftNode::open(config(dir, node_id, &addr), store)
            .await
            .unwrap();
        let service = node.grpc_service();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        (node, addr)
    }

    #[tokio::test]
    async fn a_second_manager_catches_up_over_grpc_from_a_snapshot_and_the_log() {
        let dir1 = tempfile::tempdir().unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let store1 = Store::new();
        let store2 = Store::new();
        let (n1, addr1) = open_served(dir1.path(), 1, store1.clone()).await;
        let (n2, addr2) = open_served(dir2.path(), 2, store2.clone()).await;
        n1.bootstrap_single().await.unwrap();
        n1.wait_for_leader(LEADER_TIMEOUT).await.unwrap();

        for i in 0..3 {
            n1.propose(put_nodes(&[&format!("early-{i}")]))
                .await
                .unwrap();
        }
        // Snapshot and purge, so node 2 can only catch up through
        // InstallSnapshot, then AppendEntries for the rest.
        let raft1 = n1.inner.raft.clone();
        let snap_index = n1.last_applied();
        raft1.trigger().snapshot().await.unwrap();
        raft1
            .wait(Some(LEADER_TIMEOUT))
            .metrics(
                |m| m.snapshot.map(|s| s.index) == Some(snap_index),
                "snapshot",
            )
            .await
            .unwrap();
        raft1.trigger().purge_log(snap_index).await.unwrap();
        raft1
            .wait(Some(LEADER_TIMEOUT))
            .metrics(|m| m.purged.map(|p| p.index) == Some(snap_index), "purged")
            .await
            .unwrap();
        n1.propose(put_nodes(&["late"])).await.unwrap();

        raft1
            .add_learner(2, RaftPeer { addr: addr2 }, true)
            .await
            .expect("learner added and caught up");
        raft1
            .change_membership([1u64, 2], false)
            .await
            .expect("node 2 becomes a voter");
        let r = n1.propose(put_nodes(&["after-join"])).await.unwrap();
        assert_eq!(r.outcomes, vec![APPLIED]);

        // Node 2 follows node 1 and applies everything.
        assert_eq!(n2.wait_for_leader(LEADER_TIMEOUT).await.unwrap(), 1);
        n2.inner
            .raft
            .wait(Some(LEADER_TIMEOUT))
            .applied_index_at_least(Some(r.index), "node 2 caught up")
            .await
            .unwrap();
        let mut ids = node_ids(&store2);
        ids.sort();
        assert_eq!(
            ids,
            vec!["after-join", "early-0", "early-1", "early-2", "late"]
        );
        assert!(!n2.is_leader());
        assert!(n2.is_initialized().await);
        // It got the purged prefix as a snapshot, and kept it on disk.
        let installed = n2.inner.raft.metrics().borrow().snapshot;
        assert_eq!(installed.map(|s| s.index), Some(snap_index));
        let files = std::fs::read_dir(dir2.path().join("raft/snapshots"))
            .unwrap()
            .count();
        assert_eq!(files, 1);

        // A follower does not take writes or serve linearizable reads: it
        // names the leader and its address instead.
        match n2.propose(put_nodes(&["x"])).await.unwrap_err() {
            ProposeError::NotLeader {
                leader,
                leader_addr,
            } => {
                assert_eq!(leader, Some(1));
                assert_eq!(leader_addr, Some(addr1.clone()));
            }
            other => panic!("expected NotLeader, got {other:?}"),
        }
        assert!(matches!(
            n2.linearizable_barrier().await,
            Err(ProposeError::NotLeader {
                leader: Some(1),
                ..
            })
        ));
        n1.linearizable_barrier().await.unwrap();

        n2.shutdown().await;
        n1.shutdown().await;
    }
}
