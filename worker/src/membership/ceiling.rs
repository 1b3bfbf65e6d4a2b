//! How many nodes fit in gossip: chitchat sends every node's digest in one
//! datagram (its SYN and SYN-ACK), so the datagram size caps the cluster.
//!
//! Per node a digest holds the node id (2 + length bytes), a generation
//! (8), the gossip address (7 for IPv4, 19 for IPv6), a heartbeat, a GC
//! version and a max version (8 each). With shoal's 25-character ids and
//! IPv4 that is 66 bytes a node; a 65,507-byte datagram minus the seal's
//! overhead holds 991 nodes (measured by the test that prints it). Past
//! that, the SYN no longer fits: the sealed transport drops it (counted as
//! `send_oversized`), the node falls silent and freezes its hint (see
//! `Membership::degraded`), which is only a hint anyway — the dispatcher
//! sessions keep deciding what is Down (DESIGN.md §5).
//!
//! The estimate is computed, not assumed: [`syn_len`] builds a real SYN
//! through chitchat's own decoder, so a change in chitchat's format changes
//! the number (and the test that prints it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use chitchat::{ChitchatId, ChitchatMessage, Deserializable, Serializable};

use super::sealed::SEAL_OVERHEAD;

/// chitchat's wire magic and version 0 (chitchat 0.11's format).
const CHITCHAT_MAGIC: u16 = 45_139;
const SYN: u8 = 0;

/// Length of the sealed SYN a node sends when gossip knows `nodes` nodes
/// with ids of `node_id_len` characters, in cluster `cluster_id`.
pub fn syn_len(nodes: usize, node_id_len: usize, cluster_id: &str) -> usize {
    syn_message(nodes, node_id_len, cluster_id).serialized_len() + SEAL_OVERHEAD
}

/// The most nodes whose SYN, sealed, fits `max_datagram_len` bytes.
pub fn max_nodes(max_datagram_len: usize, node_id_len: usize, cluster_id: &str) -> usize {
    // syn_len grows by a constant per node: find the boundary by bisection.
    let (mut fits, mut too_many) = (0usize, u16::MAX as usize);
    if syn_len(fits, node_id_len, cluster_id) > max_datagram_len {
        return 0;
    }
    while too_many - fits > 1 {
        let mid = (fits + too_many) / 2;
        if syn_len(mid, node_id_len, cluster_id) <= max_datagram_len {
            fits = mid;
        } else {
            too_many = mid;
        }
    }
    fits
}

/// A SYN carrying `nodes` digests, built as wire bytes and decoded by
/// chitchat (the digest type is private to chitchat), so the result is
/// exactly what chitchat would send.
pub(crate) fn syn_message(nodes: usize, node_id_len: usize, cluster_id: &str) -> ChitchatMessage {
    let mut wire = Vec::new();
    wire.extend_from_slice(&CHITCHAT_MAGIC.to_le_bytes());
    wire.push(0); // protocol version
    wire.push(SYN);
    (nodes as u16).serialize(&mut wire);
    for i in 0..nodes {
        let id = ChitchatId::new(
            format!("{i:0>node_id_len$}"),
            u64::MAX - i as u64,
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)),
                7946,
            ),
        );
        id.serialize(&mut wire);
        for field in [u64::MAX, 0, u64::MAX] {
            // heartbeat, last GC version, max version
            field.serialize(&mut wire);
        }
    }
    cluster_id.serialize(&mut wire);
    let msg = ChitchatMessage::deserialize(&mut &wire[..])
        .expect("the hand-built SYN follows chitchat 0.11's wire format");
    assert_eq!(
        msg.serialized_len(),
        wire.len(),
        "chitchat re-encodes it alike"
    );
    msg
}
