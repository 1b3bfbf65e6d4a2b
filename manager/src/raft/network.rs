//! The client side of the Raft transport: one gRPC channel per peer.
//!
//! Channels connect lazily, so a peer that is down costs nothing until the
//! leader talks to it, and reconnect by themselves once it is back. Failures
//! are classified for openraft: a peer that cannot be reached is
//! `Unreachable` (openraft then backs off instead of hammering it), a call
//! that outlives its deadline is a `Timeout`, anything else on the wire is a
//! `NetworkError`.
//!
//! With a TLS client config every peer is dialled over mutual TLS (the
//! server verified as a manager of our CA, our manager certificate shown
//! to it); without one, plaintext (storage-level unit tests only). Each
//! successful call is recorded in [`PeerContacts`], which is how the leader
//! knows which managers it can reach; [`Faults`] can fail calls on purpose.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    SnapshotMismatch, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::{EntryPayload, RPCTypes, RaftNetwork, RaftNetworkFactory, SnapshotSegmentId};
use prost::Message;
use shoal_proto::raft_client::RaftClient;
use shoal_proto::RaftPeer;
use tonic::transport::{Channel, Endpoint};

use super::codec;
use super::faults::{Faults, BLOCKED_CALL_DELAY};
use super::types::{NodeId, TypeConfig};
use super::MAX_MESSAGE_BYTES;
use crate::ca::tls::TlsConnectorService;

/// How long connecting to a peer may take before the call counts as
/// unreachable; well under the election timeout, so a dead peer does not
/// hold a replication stream hostage.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The message a receiving node sends when a snapshot chunk does not follow
/// the one it has, so the sender restarts the stream from offset 0.
pub(super) const SNAPSHOT_MISMATCH: &str = "snapshot segment mismatch";

/// When this node last completed an RPC with each peer (any answer counts,
/// a refused vote too: the peer is up and reachable). Shared by every
/// [`PeerClient`] and the [`super::RaftNode`] that reports reachability.
#[derive(Debug, Clone, Default)]
pub struct PeerContacts {
    last: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl PeerContacts {
    fn record(&self, target: NodeId) {
        self.lock().insert(target, Instant::now());
    }

    /// The time of the last successful RPC to `target`, if any.
    pub fn last(&self, target: NodeId) -> Option<Instant> {
        self.lock().get(&target).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Instant>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates a [`PeerClient`] for every peer openraft replicates to.
#[derive(Clone)]
pub struct NetworkFactory {
    /// This node's id, for timeout errors.
    node_id: NodeId,
    /// Mutual TLS to peers; `None` dials plaintext.
    tls: Option<Arc<rustls::ClientConfig>>,
    contacts: PeerContacts,
    faults: Faults,
}

impl NetworkFactory {
    pub fn new(
        node_id: NodeId,
        tls: Option<Arc<rustls::ClientConfig>>,
        contacts: PeerContacts,
        faults: Faults,
    ) -> NetworkFactory {
        NetworkFactory {
            node_id,
            tls,
            contacts,
            faults,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &RaftPeer) -> PeerClient {
        PeerClient::new(self, target, node)
    }
}

/// The connection to one peer.
pub struct PeerClient {
    node_id: NodeId,
    target: NodeId,
    addr: String,
    contacts: PeerContacts,
    faults: Faults,
    /// The client, or why none could be made (an address that is not a
    /// valid URI); reported on every call as unreachable.
    client: Result<RaftClient<Channel>, String>,
}

/// An error from the transport, as a std error openraft can carry.
#[derive(Debug, thiserror::Error)]
#[error("raft peer {target} at {addr}: {message}")]
struct PeerError {
    target: NodeId,
    addr: String,
    message: String,
}

impl PeerClient {
    fn new(factory: &NetworkFactory, target: NodeId, peer: &RaftPeer) -> PeerClient {
        let client = Endpoint::from_shared(format!("http://{}", peer.addr))
            .map(|e| {
                let e = e
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10));
                let channel = match &factory.tls {
                    Some(tls) => {
                        e.connect_with_connector_lazy(TlsConnectorService::new(tls.clone()))
                    }
                    None => e.connect_lazy(),
                };
                RaftClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .map_err(|e| format!("invalid address {:?}: {e}", peer.addr));
        PeerClient {
            node_id: factory.node_id,
            target,
            addr: peer.addr.clone(),
            contacts: factory.contacts.clone(),
            faults: factory.faults.clone(),
            client,
        }
    }

    fn error(&self, message: impl Into<String>) -> PeerError {
        PeerError {
            target: self.target,
            addr: self.addr.clone(),
            message: message.into(),
        }
    }

    /// The client for one call; fails as unreachable when the address is
    /// invalid or a test blocked this peer (after a short delay, as a dead
    /// peer would).
    async fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftClient<Channel>, RPCError<NodeId, RaftPeer, E>> {
        if self.faults.is_blocked(self.target) {
            tokio::time::sleep(BLOCKED_CALL_DELAY).await;
            let err = self.error("blocked by fault injection");
            return Err(RPCError::Unreachable(Unreachable::new(&err)));
        }
        self.client
            .clone()
            .map_err(|m| RPCError::Unreachable(Unreachable::new(&self.error(m))))
    }

    /// Runs one call under the RPC's deadline and classifies its failure.
    async fn call<T, E, F>(
        &self,
        action: RPCTypes,
        option: &RPCOption,
        fut: F,
    ) -> Result<T, RPCError<NodeId, RaftPeer, E>>
    where
        E: std::error::Error,
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = option.hard_ttl();
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.node_id,
                target: self.target,
                timeout,
            })),
            Ok(Ok(resp)) => {
                self.contacts.record(self.target);
                Ok(resp.into_inner())
            }
            Ok(Err(status)) => Err(self.status_error(status)),
        }
    }

    fn status_error<E: std::error::Error>(
        &self,
        status: tonic::Status,
    ) -> RPCError<NodeId, RaftPeer, E> {
        let err = self.error(format!("{:?}: {}", status.code(), status.message()));
        match status.code() {
            // Connection refused or reset, or the peer's Raft is stopping.
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
            _ => RPCError::Network(NetworkError::new(&err)),
        }
    }

    fn decode_error<E: std::error::Error>(
        &self,
        e: codec::CodecError,
    ) -> RPCError<NodeId, RaftPeer, E> {
        RPCError::Network(NetworkError::new(&self.error(e.to_string())))
    }
}

/// Most bytes of log entries one AppendEntries carries (unless one entry
/// alone is larger). openraft gives the whole call its heartbeat interval
/// (75 ms) to be encoded, sent, written and fsynced by the follower: a
/// call carrying megabytes misses that on two busy cores, is retried whole,
/// misses it again, and nothing commits. So a larger call is refused
/// before it is sent, with the number of entries that fit, and openraft
/// sends that many at a time for a while.
const MAX_APPEND_BYTES: usize = 1 << 20;

/// How many of `entries`, from the first, fit in [`MAX_APPEND_BYTES`]
/// (at least one); None when all of them do.
fn entries_that_fit(entries: &[super::types::Entry]) -> Option<u64> {
    let mut bytes = 0;
    for (i, e) in entries.iter().enumerate() {
        bytes += match &e.payload {
            EntryPayload::Normal(batch) => batch.encoded_len(),
            // Blank and membership entries are a few bytes.
            _ => 64,
        };
        if bytes > MAX_APPEND_BYTES {
            return Some(i.max(1) as u64);
        }
    }
    None
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: openraft::raft::AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        openraft::raft::AppendEntriesResponse<NodeId>,
        RPCError<NodeId, RaftPeer, RaftError<NodeId>>,
    > {
        if rpc.entries.len() > 1 {
            if let Some(fit) = entries_that_fit(&rpc.entries) {
                return Err(PayloadTooLarge::new_entries_hint(fit).into());
            }
        }
        let mut client = self.client().await?;
        let req = codec::append_entries_request_to_proto(&rpc);
        let resp = self
            .call(RPCTypes::AppendEntries, &option, client.append_entries(req))
            .await?;
        codec::append_entries_response_from_proto(&resp).map_err(|e| self.decode_error(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: openraft::raft::InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        openraft::raft::InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, RaftPeer, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let mut client = self.client().await?;
        let snapshot_id = rpc.meta.snapshot_id.clone();
        let offset = rpc.offset;
        let req = codec::install_snapshot_request_to_proto(&rpc);
        let timeout = option.hard_ttl();
        let resp = match tokio::time::timeout(timeout, client.install_snapshot(req)).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: self.node_id,
                    target: self.target,
                    timeout,
                }))
            }
            Ok(Ok(resp)) => {
                self.contacts.record(self.target);
                resp.into_inner()
            }
            // The receiver lost track of this stream (it restarted, or saw
            // another snapshot): openraft resends from offset 0 on this error.
            Ok(Err(status))
                if status.code() == tonic::Code::FailedPrecondition
                    && status.message().starts_with(SNAPSHOT_MISMATCH) =>
            {
                let mismatch = SnapshotMismatch {
                    expect: SnapshotSegmentId {
                        id: snapshot_id.clone(),
                        offset: 0,
                    },
                    got: SnapshotSegmentId {
                        id: snapshot_id,
                        offset,
                    },
                };
                return Err(RPCError::RemoteError(RemoteError::new(
                    self.target,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
                )));
            }
            Ok(Err(status)) => return Err(self.status_error(status)),
        };
        codec::install_snapshot_response_from_proto(&resp).map_err(|e| self.decode_error(e))
    }

    async fn vote(
        &mut self,
        rpc: openraft::raft::VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<openraft::raft::VoteResponse<NodeId>, RPCError<NodeId, RaftPeer, RaftError<NodeId>>>
    {
        let mut client = self.client().await?;
        let req = codec::vote_request_to_proto(&rpc);
        let resp = self
            .call(RPCTypes::Vote, &option, client.request_vote(req))
            .await?;
        codec::vote_response_from_proto(&resp).map_err(|e| self.decode_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry, LogId};
    use shoal_proto::{mutation, object, Batch, Mutation, Node, Object};

    /// An entry whose batch encodes to about `bytes`.
    fn entry(index: u64, bytes: usize) -> Entry<TypeConfig> {
        let node = Node {
            id: "x".repeat(bytes),
            ..Default::default()
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch {
                format: 1,
                mutations: vec![Mutation {
                    op: Some(mutation::Op::Put(Object {
                        kind: Some(object::Kind::Node(node)),
                    })),
                    ..Default::default()
                }],
                atomic: false,
            }),
        }
    }

    #[test]
    fn an_append_is_cut_where_its_entries_pass_the_byte_budget() {
        let quarter = MAX_APPEND_BYTES / 4;
        let small: Vec<_> = (1..=3).map(|i| entry(i, quarter)).collect();
        assert_eq!(entries_that_fit(&small), None);
        let five: Vec<_> = (1..=5).map(|i| entry(i, quarter)).collect();
        assert_eq!(entries_that_fit(&five), Some(3));
        // One entry over the budget still goes, alone.
        let big = vec![entry(1, 2 * MAX_APPEND_BYTES), entry(2, 10)];
        assert_eq!(entries_that_fit(&big), Some(1));
        assert_eq!(entries_that_fit(&big[..1]), Some(1));
    }
}
