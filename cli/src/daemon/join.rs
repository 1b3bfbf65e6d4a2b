//! `shoal join`: the joining side of the CA bootstrap (DESIGN.md §6).
//!
//! 1. Dial the manager with a TLS config that accepts it only if the CA
//!    certificate it presents has the token's digest: nothing secret is sent
//!    to a server that fails this.
//! 2. Send the token and a CSR for a key pair made here (the key never
//!    leaves this node); the manager admits the node with the token's role
//!    and answers with a certificate naming the node id it chose.
//! 3. A manager also receives the CA and the cluster key over mutual TLS.
//! 4. Write the data dir (tls/, ca/ and cluster.key for a manager,
//!    node.json); the daemon then starts from it as after a restart.
//!
//! Everything runs in the foreground, so a wrong token or an unreachable
//! manager is reported on the terminal, with nothing left behind.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use rand::Rng;
use shoal_manager::ca::{tls, JoinToken, NodeCredentials, NodeKeys, Role};
use shoal_proto::defaults as d;
use shoal_proto::node_ca_client::NodeCaClient;
use shoal_proto::IssueNodeCertificateRequest;

use super::config::{self, NodeConfig};
use super::pki;

/// What `shoal join` was asked.
pub struct JoinRequest<'a> {
    pub token: &'a str,
    /// host:port of a manager (the port defaults to 2377).
    pub manager: &'a str,
    pub advertise_addr: Option<&'a str>,
    pub listen_addr: Option<&'a str>,
    pub pod_network: &'a str,
    pub pod_network_internal: bool,
    pub gossip_port: u16,
}

/// The manager address with the cluster port when none is given.
pub fn manager_addr(addr: &str) -> String {
    if addr.parse::<SocketAddr>().is_ok()
        || addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && !h.ends_with(']') && p.parse::<u16>().is_ok())
    {
        addr.to_string()
    } else {
        format!("{addr}:{}", d::CLUSTER_PORT)
    }
}

/// The local address that routes to `manager` (no packet is sent: a UDP
/// socket's connect only picks the route), as Swarm picks its default.
fn route_to(manager: &str) -> Result<String> {
    let target = std::net::ToSocketAddrs::to_socket_addrs(manager)
        .with_context(|| format!("cannot resolve the manager address {manager}"))?
        .next()
        .ok_or_else(|| anyhow!("the manager address {manager} resolves to nothing"))?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = std::net::UdpSocket::bind(bind)?;
    socket
        .connect(target)
        .with_context(|| format!("no route to the manager at {manager}: give --advertise-addr"))?;
    Ok(socket.local_addr()?.ip().to_string())
}

/// Runs the bootstrap and writes the node's data dir; returns its config.
pub async fn join(data_dir: &Path, req: JoinRequest<'_>) -> Result<NodeConfig> {
    let token = JoinToken::parse(req.token.trim()).context("invalid --token")?;
    config::check_pod_network(req.pod_network, req.pod_network_internal)?;
    let manager = manager_addr(req.manager);
    let advertise = match req.advertise_addr {
        Some(a) => a.to_string(),
        None => route_to(&manager)?,
    };
    let listen = req
        .listen_addr
        .map(str::to_string)
        .unwrap_or_else(|| config::default_listen_addr(&advertise));
    let listen = config::check_listen_addr(&listen)?;

    // 1 + 2: the CA pinned by the token's digest, then the token's secret.
    let keys = NodeKeys::generate()?;
    let channel = tls::connect(&manager, tls::bootstrap_client_config(&token)?)
        .await
        .with_context(|| format!("cannot join through the manager at {manager}"))?;
    let response = NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            token: token.to_string(),
            csr_der: keys.csr_der()?,
        })
        .await
        .map_err(|s| {
            anyhow!(
                "the manager at {manager} refused to admit this node: {}",
                s.message()
            )
        })?
        .into_inner();
    let credentials = NodeCredentials::from_parts(
        response.certificate_der.into(),
        keys.private_key_der(),
        response.ca_certificate_der.into(),
    )
    .context("the manager's answer is not a certificate for this node")?;
    token
        .verify_ca(credentials.ca_certificate_der())
        .context("the certificate the manager issued chains to another CA than the token's")?;
    let identity = credentials.identity().clone();

    let cfg = NodeConfig {
        node_id: identity.node_id.clone(),
        raft_id: match identity.role {
            Role::Manager => rand::rng().random_range(1..u64::MAX),
            _ => 0,
        },
        cluster_id: identity.cluster_id.clone(),
        listen_addr: listen.to_string(),
        advertise_addr: config::advertise_with_port(&advertise, &listen),
        pod_network: req.pod_network.to_string(),
        pod_network_internal: req.pod_network_internal,
        managers: vec![manager.clone()],
        gossip_port: req.gossip_port,
    };
    let written = write_data_dir(data_dir, &manager, &credentials, &cfg).await;
    if written.is_err() {
        // Nothing half-written stays behind: a retry starts clean.
        let _ = config::wipe(data_dir);
    }
    written?;
    tracing::info!(node = %identity, "joined the cluster");
    Ok(cfg)
}

/// 3 + 4: a manager's keys, then the files the daemon starts from
/// (node.json last: its presence means "this node is in a cluster").
async fn write_data_dir(
    data_dir: &Path,
    manager: &str,
    credentials: &NodeCredentials,
    cfg: &NodeConfig,
) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let tls_dir = pki::tls_dir(data_dir);
    credentials.save(&tls_dir).with_context(|| {
        format!(
            "cannot save this node's certificate in {}",
            tls_dir.display()
        )
    })?;
    if credentials.identity().role == Role::Manager {
        pki::receive_manager_keys(data_dir, &[manager.to_string()], credentials).await?;
    }
    config::save(data_dir, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_port_defaults_to_the_cluster_port() {
        assert_eq!(manager_addr("10.0.0.1"), "10.0.0.1:2377");
        assert_eq!(manager_addr("10.0.0.1:4000"), "10.0.0.1:4000");
        assert_eq!(manager_addr("vm1"), "vm1:2377");
        assert_eq!(manager_addr("vm1:2377"), "vm1:2377");
    }

    #[test]
    fn the_default_advertise_address_is_the_one_that_routes_to_the_manager() {
        assert_eq!(route_to("127.0.0.1:2377").unwrap(), "127.0.0.1");
    }
}
