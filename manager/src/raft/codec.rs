//! Conversions between shoal's protobuf Raft records and openraft's types.
//!
//! Everything Raft writes to disk or sends to a peer goes through this module,
//! so the protobuf encoding (with its format numbers) is the only contract
//! between managers of different versions, and openraft's in-memory types
//! never leak onto the wire. Decoding is strict: a record with a format this
//! build does not know, or without a field Raft cannot do without, is an
//! error that names what is wrong, never a silent default.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{CommittedLeaderId, EntryPayload, LeaderId};
use shoal_proto::defaults::ENTRY_FORMAT;
use shoal_proto::{self as pb, append_entries_response::Kind, entry::Payload};

use super::types::{
    Entry, LogId, Membership, NodeId, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

/// A protobuf Raft record that cannot be turned into openraft's type.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A required field is absent.
    #[error("malformed {record}: field `{field}` is missing")]
    Missing {
        record: &'static str,
        field: &'static str,
    },
    /// A log entry written by a newer (or corrupt) shoal.
    #[error(
        "raft log entry {index} has format {found}, but this shoal reads only format {supported}; \
         upgrade shoal on this manager"
    )]
    UnknownEntryFormat {
        index: u64,
        found: u32,
        supported: u32,
    },
    /// An enum value this build does not know.
    #[error("malformed {record}: unknown value {value} in field `{field}`")]
    UnknownEnum {
        record: &'static str,
        field: &'static str,
        value: i32,
    },
    /// Bytes that are not the expected protobuf message.
    #[error("cannot decode {record}: {source}")]
    Decode {
        record: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}

fn missing(record: &'static str, field: &'static str) -> CodecError {
    CodecError::Missing { record, field }
}

// ------------------------------------------------------------------ log ids

pub fn log_id_to_proto(id: &LogId) -> pb::LogId {
    pb::LogId {
        term: id.leader_id.term,
        leader_node_id: id.leader_id.node_id,
        index: id.index,
    }
}

pub fn log_id_from_proto(id: &pb::LogId) -> LogId {
    openraft::LogId::new(CommittedLeaderId::new(id.term, id.leader_node_id), id.index)
}

/// An optional log id: protobuf's absent message is openraft's `None`.
pub fn opt_log_id_to_proto(id: Option<&LogId>) -> Option<pb::LogId> {
    id.map(log_id_to_proto)
}

pub fn opt_log_id_from_proto(id: Option<&pb::LogId>) -> Option<LogId> {
    id.map(log_id_from_proto)
}

// ------------------------------------------------------------------ votes

pub fn vote_to_proto(vote: &Vote) -> pb::Vote {
    pb::Vote {
        term: vote.leader_id.term,
        node_id: vote.leader_id.node_id,
        committed: vote.committed,
    }
}

pub fn vote_from_proto(vote: &pb::Vote) -> Vote {
    openraft::Vote {
        leader_id: LeaderId::new(vote.term, vote.node_id),
        committed: vote.committed,
    }
}

fn required_vote(vote: Option<&pb::Vote>, record: &'static str) -> Result<Vote, CodecError> {
    vote.map(vote_from_proto)
        .ok_or_else(|| missing(record, "vote"))
}

// ------------------------------------------------------------------ membership

pub fn membership_to_proto(m: &Membership) -> pb::Membership {
    pb::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|set| pb::VoterSet {
                ids: set.iter().copied().collect(),
            })
            .collect(),
        nodes: m.nodes().map(|(id, peer)| (*id, peer.clone())).collect(),
    }
}

pub fn membership_from_proto(m: &pb::Membership) -> Membership {
    let configs: Vec<BTreeSet<NodeId>> = m
        .configs
        .iter()
        .map(|set| set.ids.iter().copied().collect())
        .collect();
    let nodes: BTreeMap<NodeId, pb::RaftPeer> =
        m.nodes.iter().map(|(id, p)| (*id, p.clone())).collect();
    openraft::Membership::new(configs, nodes)
}

pub fn stored_membership_to_proto(m: &StoredMembership) -> pb::StoredMembership {
    pb::StoredMembership {
        log_id: opt_log_id_to_proto(m.log_id().as_ref()),
        membership: Some(membership_to_proto(m.membership())),
    }
}

pub fn stored_membership_from_proto(m: &pb::StoredMembership) -> StoredMembership {
    openraft::StoredMembership::new(
        opt_log_id_from_proto(m.log_id.as_ref()),
        m.membership
            .as_ref()
            .map(membership_from_proto)
            .unwrap_or_default(),
    )
}

pub fn snapshot_meta_to_proto(meta: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: opt_log_id_to_proto(meta.last_log_id.as_ref()),
        last_membership: Some(stored_membership_to_proto(&meta.last_membership)),
        snapshot_id: meta.snapshot_id.clone(),
    }
}

pub fn snapshot_meta_from_proto(meta: &pb::SnapshotMeta) -> SnapshotMeta {
    openraft::SnapshotMeta {
        last_log_id: opt_log_id_from_proto(meta.last_log_id.as_ref()),
        last_membership: meta
            .last_membership
            .as_ref()
            .map(stored_membership_from_proto)
            .unwrap_or_default(),
        snapshot_id: meta.snapshot_id.clone(),
    }
}

// ------------------------------------------------------------------ entries

/// Encodes an entry in the current [`ENTRY_FORMAT`].
pub fn entry_to_proto(entry: &Entry) -> pb::Entry {
    let payload = match &entry.payload {
        EntryPayload::Blank => Payload::Blank(true),
        EntryPayload::Normal(batch) => Payload::Normal(batch.clone()),
        EntryPayload::Membership(m) => Payload::Membership(membership_to_proto(m)),
    };
    pb::Entry {
        format: ENTRY_FORMAT,
        log_id: Some(log_id_to_proto(&entry.log_id)),
        payload: Some(payload),
    }
}

/// Decodes an entry, refusing formats this build does not know: applying an
/// entry it cannot read correctly would make this manager's state diverge.
pub fn entry_from_proto(entry: pb::Entry) -> Result<Entry, CodecError> {
    let log_id = entry
        .log_id
        .as_ref()
        .map(log_id_from_proto)
        .ok_or_else(|| missing("raft log entry", "log_id"))?;
    if entry.format != ENTRY_FORMAT {
        return Err(CodecError::UnknownEntryFormat {
            index: log_id.index,
            found: entry.format,
            supported: ENTRY_FORMAT,
        });
    }
    let payload = match entry.payload {
        Some(Payload::Blank(_)) => EntryPayload::Blank,
        Some(Payload::Normal(batch)) => EntryPayload::Normal(batch),
        Some(Payload::Membership(m)) => EntryPayload::Membership(membership_from_proto(&m)),
        None => return Err(missing("raft log entry", "payload")),
    };
    Ok(openraft::Entry { log_id, payload })
}

/// Encodes an entry into the bytes stored in the log.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    prost::Message::encode_to_vec(&entry_to_proto(entry))
}

/// Decodes an entry stored in the log.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, CodecError> {
    let pb: pb::Entry = prost::Message::decode(bytes).map_err(|source| CodecError::Decode {
        record: "raft log entry",
        source,
    })?;
    entry_from_proto(pb)
}

// ------------------------------------------------------------------ transport

pub fn append_entries_request_to_proto(
    req: &openraft::raft::AppendEntriesRequest<TypeConfig>,
) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        vote: Some(vote_to_proto(&req.vote)),
        prev_log_id: opt_log_id_to_proto(req.prev_log_id.as_ref()),
        entries: req.entries.iter().map(entry_to_proto).collect(),
        leader_commit: opt_log_id_to_proto(req.leader_commit.as_ref()),
    }
}

pub fn append_entries_request_from_proto(
    req: pb::AppendEntriesRequest,
) -> Result<openraft::raft::AppendEntriesRequest<TypeConfig>, CodecError> {
    Ok(openraft::raft::AppendEntriesRequest {
        vote: required_vote(req.vote.as_ref(), "append entries request")?,
        prev_log_id: opt_log_id_from_proto(req.prev_log_id.as_ref()),
        entries: req
            .entries
            .into_iter()
            .map(entry_from_proto)
            .collect::<Result<_, _>>()?,
        leader_commit: opt_log_id_from_proto(req.leader_commit.as_ref()),
    })
}

pub fn append_entries_response_to_proto(
    resp: &openraft::raft::AppendEntriesResponse<NodeId>,
) -> pb::AppendEntriesResponse {
    use openraft::raft::AppendEntriesResponse as R;
    let mut out = pb::AppendEntriesResponse::default();
    match resp {
        R::Success => out.set_kind(Kind::Success),
        R::PartialSuccess(matching) => {
            out.set_kind(Kind::PartialSuccess);
            out.partial_matching = opt_log_id_to_proto(matching.as_ref());
        }
        R::Conflict => out.set_kind(Kind::Conflict),
        R::HigherVote(vote) => {
            out.set_kind(Kind::HigherVote);
            out.higher_vote = Some(vote_to_proto(vote));
        }
    }
    out
}

pub fn append_entries_response_from_proto(
    resp: &pb::AppendEntriesResponse,
) -> Result<openraft::raft::AppendEntriesResponse<NodeId>, CodecError> {
    use openraft::raft::AppendEntriesResponse as R;
    const RECORD: &str = "append entries response";
    let kind = Kind::try_from(resp.kind).map_err(|_| CodecError::UnknownEnum {
        record: RECORD,
        field: "kind",
        value: resp.kind,
    })?;
    Ok(match kind {
        Kind::Success => R::Success,
        Kind::PartialSuccess => {
            R::PartialSuccess(opt_log_id_from_proto(resp.partial_matching.as_ref()))
        }
        Kind::Conflict => R::Conflict,
        Kind::HigherVote => R::HigherVote(
            resp.higher_vote
                .as_ref()
                .map(vote_from_proto)
                .ok_or_else(|| missing(RECORD, "higher_vote"))?,
        ),
    })
}

pub fn vote_request_to_proto(req: &openraft::raft::VoteRequest<NodeId>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_to_proto(&req.vote)),
        last_log_id: opt_log_id_to_proto(req.last_log_id.as_ref()),
    }
}

pub fn vote_request_from_proto(
    req: &pb::VoteRequest,
) -> Result<openraft::raft::VoteRequest<NodeId>, CodecError> {
    Ok(openraft::raft::VoteRequest {
        vote: required_vote(req.vote.as_ref(), "vote request")?,
        last_log_id: opt_log_id_from_proto(req.last_log_id.as_ref()),
    })
}

pub fn vote_response_to_proto(resp: &openraft::raft::VoteResponse<NodeId>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_proto(&resp.vote)),
        vote_granted: resp.vote_granted,
        last_log_id: opt_log_id_to_proto(resp.last_log_id.as_ref()),
    }
}

pub fn vote_response_from_proto(
    resp: &pb::VoteResponse,
) -> Result<openraft::raft::VoteResponse<NodeId>, CodecError> {
    Ok(openraft::raft::VoteResponse {
        vote: required_vote(resp.vote.as_ref(), "vote response")?,
        vote_granted: resp.vote_granted,
        last_log_id: opt_log_id_from_proto(resp.last_log_id.as_ref()),
    })
}

pub fn install_snapshot_request_to_proto(
    req: &openraft::raft::InstallSnapshotRequest<TypeConfig>,
) -> pb::InstallSnapshotRequest {
    pb::InstallSnapshotRequest {
        vote: Some(vote_to_proto(&req.vote)),
        meta: Some(snapshot_meta_to_proto(&req.meta)),
        offset: req.offset,
        data: req.data.clone(),
        done: req.done,
    }
}

pub fn install_snapshot_request_from_proto(
    req: pb::InstallSnapshotRequest,
) -> Result<openraft::raft::InstallSnapshotRequest<TypeConfig>, CodecError> {
    const RECORD: &str = "install snapshot request";
    Ok(openraft::raft::InstallSnapshotRequest {
        vote: required_vote(req.vote.as_ref(), RECORD)?,
        meta: req
            .meta
            .as_ref()
            .map(snapshot_meta_from_proto)
            .ok_or_else(|| missing(RECORD, "meta"))?,
        offset: req.offset,
        data: req.data,
        done: req.done,
    })
}

pub fn install_snapshot_response_to_proto(
    resp: &openraft::raft::InstallSnapshotResponse<NodeId>,
) -> pb::InstallSnapshotResponse {
    pb::InstallSnapshotResponse {
        vote: Some(vote_to_proto(&resp.vote)),
    }
}

pub fn install_snapshot_response_from_proto(
    resp: &pb::InstallSnapshotResponse,
) -> Result<openraft::raft::InstallSnapshotResponse<NodeId>, CodecError> {
    Ok(openraft::raft::InstallSnapshotResponse {
        vote: required_vote(resp.vote.as_ref(), "install snapshot response")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::defaults::BATCH_FORMAT;

    fn lid(term: u64, node: u64, index: u64) -> LogId {
        openraft::LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn sample_batch() -> pb::Batch {
        pb::Batch {
            format: BATCH_FORMAT,
            mutations: vec![pb::Mutation {
                op: Some(pb::mutation::Op::Put(pb::Object {
                    kind: Some(pb::object::Kind::Pod(pb::Pod {
                        id: "pod-1".into(),
                        node_id: "node-a".into(),
                        ..Default::default()
                    })),
                })),
                expected_version: 0,
                force: false,
            }],
            atomic: true,
        }
    }

    fn two_node_membership() -> Membership {
        let nodes: BTreeMap<u64, pb::RaftPeer> = [
            (
                1,
                pb::RaftPeer {
                    addr: "127.0.0.1:2377".into(),
                },
            ),
            (
                2,
                pb::RaftPeer {
                    addr: "127.0.0.2:2377".into(),
                },
            ),
            (
                3,
                pb::RaftPeer {
                    addr: "127.0.0.3:2377".into(),
                },
            ),
        ]
        .into_iter()
        .collect();
        // Joint config {1,2} + {2,3}, with nobody a learner.
        openraft::Membership::new(vec![[1, 2].into(), [2, 3].into()], nodes)
    }

    fn round_trip(entry: Entry) -> Entry {
        let bytes = encode_entry(&entry);
        decode_entry(&bytes).expect("decodes")
    }

    #[test]
    fn entries_with_a_batch_survive_encoding() {
        let entry = openraft::Entry::<TypeConfig> {
            log_id: lid(3, 1, 42),
            payload: EntryPayload::Normal(sample_batch()),
        };
        assert_eq!(round_trip(entry.clone()), entry);
    }

    #[test]
    fn blank_and_membership_entries_survive_encoding() {
        let blank = openraft::Entry::<TypeConfig> {
            log_id: lid(1, 2, 1),
            payload: EntryPayload::Blank,
        };
        assert_eq!(round_trip(blank.clone()), blank);

        let member = openraft::Entry::<TypeConfig> {
            log_id: lid(2, 1, 7),
            payload: EntryPayload::Membership(two_node_membership()),
        };
        let back = round_trip(member.clone());
        assert_eq!(back, member);
        match back.payload {
            EntryPayload::Membership(m) => {
                assert_eq!(m.get_joint_config().len(), 2);
                assert_eq!(
                    m.get_node(&3).map(|p| p.addr.as_str()),
                    Some("127.0.0.3:2377")
                );
            }
            other => panic!("expected membership, got {other:?}"),
        }
    }

    #[test]
    fn entries_of_an_unknown_format_are_refused_with_their_index() {
        let mut pb_entry = entry_to_proto(&openraft::Entry::<TypeConfig> {
            log_id: lid(1, 1, 9),
            payload: EntryPayload::Blank,
        });
        pb_entry.format = ENTRY_FORMAT + 1;
        let err = entry_from_proto(pb_entry).unwrap_err();
        assert!(matches!(
            err,
            CodecError::UnknownEntryFormat { index: 9, found, .. } if found == ENTRY_FORMAT + 1
        ));
        assert!(err.to_string().contains("upgrade shoal"), "{err}");
    }

    #[test]
    fn entries_without_payload_or_garbage_bytes_are_errors() {
        let pb_entry = pb::Entry {
            format: ENTRY_FORMAT,
            log_id: Some(log_id_to_proto(&lid(1, 1, 1))),
            payload: None,
        };
        assert!(matches!(
            entry_from_proto(pb_entry),
            Err(CodecError::Missing {
                field: "payload",
                ..
            })
        ));
        assert!(decode_entry(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn votes_and_log_ids_survive_encoding() {
        let mut vote = openraft::Vote::new(7, 3);
        assert_eq!(vote_from_proto(&vote_to_proto(&vote)), vote);
        vote.commit();
        let back = vote_from_proto(&vote_to_proto(&vote));
        assert_eq!(back, vote);
        assert!(back.is_committed());

        let id = lid(5, 2, 1234);
        assert_eq!(log_id_from_proto(&log_id_to_proto(&id)), id);
        assert_eq!(
            opt_log_id_from_proto(opt_log_id_to_proto(None).as_ref()),
            None
        );
    }

    #[test]
    fn stored_membership_and_snapshot_meta_survive_encoding() {
        let sm = openraft::StoredMembership::new(Some(lid(2, 1, 7)), two_node_membership());
        assert_eq!(
            stored_membership_from_proto(&stored_membership_to_proto(&sm)),
            sm
        );

        let empty = StoredMembership::default();
        assert_eq!(
            stored_membership_from_proto(&stored_membership_to_proto(&empty)),
            empty
        );

        let meta = openraft::SnapshotMeta {
            last_log_id: Some(lid(2, 1, 100)),
            last_membership: sm,
            snapshot_id: "snap-1".into(),
        };
        assert_eq!(
            snapshot_meta_from_proto(&snapshot_meta_to_proto(&meta)),
            meta
        );
    }

    #[test]
    fn transport_messages_survive_encoding() {
        let req = openraft::raft::AppendEntriesRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(4, 1),
            prev_log_id: Some(lid(3, 1, 10)),
            entries: vec![openraft::Entry {
                log_id: lid(4, 1, 11),
                payload: EntryPayload::Normal(sample_batch()),
            }],
            leader_commit: Some(lid(3, 1, 10)),
        };
        let back = append_entries_request_from_proto(append_entries_request_to_proto(&req))
            .expect("decodes");
        assert_eq!(back.vote, req.vote);
        assert_eq!(back.prev_log_id, req.prev_log_id);
        assert_eq!(back.entries, req.entries);
        assert_eq!(back.leader_commit, req.leader_commit);

        use openraft::raft::AppendEntriesResponse as R;
        for resp in [
            R::Success,
            R::PartialSuccess(Some(lid(1, 1, 3))),
            R::PartialSuccess(None),
            R::Conflict,
            R::HigherVote(openraft::Vote::new(9, 2)),
        ] {
            let back = append_entries_response_from_proto(&append_entries_response_to_proto(&resp))
                .expect("decodes");
            assert_eq!(back, resp);
        }
        let bad = pb::AppendEntriesResponse {
            kind: 99,
            ..Default::default()
        };
        assert!(append_entries_response_from_proto(&bad).is_err());

        let vreq = openraft::raft::VoteRequest::new(openraft::Vote::new(2, 3), Some(lid(1, 1, 5)));
        assert_eq!(
            vote_request_from_proto(&vote_request_to_proto(&vreq)).unwrap(),
            vreq
        );
        let vresp = openraft::raft::VoteResponse::new(openraft::Vote::new(2, 3), None, true);
        assert_eq!(
            vote_response_from_proto(&vote_response_to_proto(&vresp)).unwrap(),
            vresp
        );
        assert!(vote_request_from_proto(&pb::VoteRequest::default()).is_err());
    }
}
