//! The server side of the Raft transport: a thin tonic adapter that decodes
//! a peer's request, hands it to openraft and encodes the answer.
//!
//! Status codes are chosen for the client in `network.rs`: `Unavailable`
//! when this node's Raft is stopping (the sender backs off, as for a dead
//! peer), `FailedPrecondition` with [`SNAPSHOT_MISMATCH`] when a snapshot
//! chunk does not continue the stream (the sender restarts it), and
//! `InvalidArgument` for a request that does not decode.

use shoal_proto as pb;
use shoal_proto::raft_server::Raft as RaftRpc;
use tonic::{Request, Response, Status};

use super::codec::{self, CodecError};
use super::network::SNAPSHOT_MISMATCH;
use super::types::{NodeId, Raft};

/// Serves `shoal.v1.Raft` for the local openraft node.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub fn new(raft: Raft) -> RaftService {
        RaftService { raft }
    }
}

fn bad_request(e: CodecError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn stopped(e: openraft::error::Fatal<NodeId>) -> Status {
    Status::unavailable(format!("raft on this manager is not running: {e}"))
}

fn raft_error(e: openraft::error::RaftError<NodeId>) -> Status {
    match e {
        openraft::error::RaftError::APIError(never) => match never {},
        openraft::error::RaftError::Fatal(f) => stopped(f),
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let req =
            codec::append_entries_request_from_proto(request.into_inner()).map_err(bad_request)?;
        let resp = self.raft.append_entries(req).await.map_err(raft_error)?;
        Ok(Response::new(codec::append_entries_response_to_proto(
            &resp,
        )))
    }

    async fn request_vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let req = codec::vote_request_from_proto(request.get_ref()).map_err(bad_request)?;
        let resp = self.raft.vote(req).await.map_err(raft_error)?;
        Ok(Response::new(codec::vote_response_to_proto(&resp)))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        use openraft::error::{InstallSnapshotError, RaftError};
        let req = codec::install_snapshot_request_from_proto(request.into_inner())
            .map_err(bad_request)?;
        let resp = self.raft.install_snapshot(req).await.map_err(|e| match e {
            RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)) => {
                Status::failed_precondition(format!("{SNAPSHOT_MISMATCH}: {m}"))
            }
            RaftError::Fatal(f) => stopped(f),
        })?;
        Ok(Response::new(codec::install_snapshot_response_to_proto(
            &resp,
        )))
    }
}
