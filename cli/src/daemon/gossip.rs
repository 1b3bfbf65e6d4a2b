//! The node's gossip (worker crate) as the manager's liveness hint.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use shoal_manager::dispatcher::LivenessHint;
use shoal_proto::GossipInfo;
use shoal_worker::membership::NodeGossip;
use tokio_util::sync::CancellationToken;

use super::config::NodeConfig;

/// This node's gossip, on the host of its listen address and the host of
/// its advertise address at `gossip_port`; `None` with port 0, or when an
/// address is a host name (gossip needs an IP to advertise), logged.
pub fn for_node(cfg: &NodeConfig, shutdown: &CancellationToken) -> Option<Arc<NodeGossip>> {
    if cfg.gossip_port == 0 {
        tracing::info!("gossip off (--gossip-port 0): liveness from dispatcher sessions alone");
        return None;
    }
    let with_port = |addr: &str| {
        addr.parse::<SocketAddr>()
            .ok()
            .map(|a| SocketAddr::new(a.ip(), cfg.gossip_port))
    };
    let (Some(listen), Some(advertise)) =
        (with_port(&cfg.listen_addr), with_port(&cfg.advertise_addr))
    else {
        tracing::warn!(
            listen = %cfg.listen_addr,
            advertise = %cfg.advertise_addr,
            "gossip off: it needs IP addresses to listen on and advertise"
        );
        return None;
    };
    Some(Arc::new(NodeGossip::new(
        cfg.node_id.clone(),
        cfg.cluster_id.clone(),
        listen,
        advertise,
        shutdown.child_token(),
    )))
}

/// [`NodeGossip`] seen by the manager's node monitor and Info.
pub struct Hint(pub Arc<NodeGossip>);

impl LivenessHint for Hint {
    fn live_nodes(&self) -> Option<BTreeSet<String>> {
        self.0.live_nodes()
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }

    fn info(&self) -> GossipInfo {
        self.0.info()
    }
}
