//! Shared test fixtures: CAs and issued credentials made in memory.

use std::time::{Duration, SystemTime};

use super::{Ca, NodeCredentials, PeerIdentity, Role};

pub(crate) fn ca(cluster_id: &str) -> Ca {
    Ca::generate(cluster_id, SystemTime::now()).unwrap()
}

/// Credentials for `node_id` in `role`, issued by `ca` at epoch 1.
pub(crate) fn credentials(ca: &Ca, node_id: &str, role: Role) -> NodeCredentials {
    credentials_at_epoch(ca, node_id, role, 1)
}

pub(crate) fn credentials_at_epoch(
    ca: &Ca,
    node_id: &str,
    role: Role,
    epoch: u64,
) -> NodeCredentials {
    let id = PeerIdentity::new(node_id, role, ca.cluster_id(), epoch).unwrap();
    ca.issue_credentials(&id, Duration::from_secs(3600))
        .unwrap()
}
