//! A node changing what it is: promoted to manager, demoted to worker, or
//! renewing its certificate before it expires. Each is done between two
//! runs of the daemon: the daemon stops (its containers keep running), the
//! data dir is rewritten for the new role, and the process replaces itself
//! with `shoal daemon` on the same data dir (same pid, same log), which
//! then adopts the containers as after any restart.
//!
//! - Promotion: the store already says manager, so a manager renews this
//!   node's certificate with the manager role, then hands over the CA and
//!   the cluster key over mutual TLS; the new manager asks to join Raft
//!   when it starts.
//! - Demotion: the leader's role manager takes this node out of Raft; the
//!   node issues itself a worker certificate with the CA it still holds,
//!   then forgets the CA, the cluster key and its Raft state.
//! - Renewal: a manager signs its own new certificate; a worker asks a
//!   manager.

use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rand::Rng;
use shoal_manager::ca::{tls, Ca, NodeCredentials, NodeKeys, PeerIdentity, Role};
use shoal_proto::defaults as d;
use shoal_proto::node_ca_client::NodeCaClient;
use shoal_proto::RenewNodeCertificateRequest;

use super::config::{self, NodeConfig};
use super::pki;

/// Rewrites the data dir of a node that was `from` for the role `to` (the
/// same role: a renewal). Returns the node's new config.
pub async fn apply(
    data_dir: &Path,
    cfg: &NodeConfig,
    creds: &NodeCredentials,
    to: Role,
) -> Result<NodeConfig> {
    let from = creds.identity().role;
    // node.json as the agent last saved it: the managers' current addresses.
    let mut cfg = config::load(data_dir).unwrap_or_else(|_| cfg.clone());
    match (from, to) {
        (Role::Manager, Role::Manager) => {
            let ca = Ca::load(&pki::ca_dir(data_dir))?;
            let renewed = issue_locally(&ca, creds.identity(), Role::Manager)?;
            save_credentials(data_dir, &renewed)?;
        }
        (Role::Manager, Role::Worker) => {
            let ca = Ca::load(&pki::ca_dir(data_dir))?;
            let worker = issue_locally(&ca, creds.identity(), Role::Worker)?;
            save_credentials(data_dir, &worker)?;
            forget_manager_state(data_dir)?;
            cfg.raft_id = 0;
            // Report to the other managers from now on.
            cfg.managers.retain(|a| *a != cfg.advertise_addr);
        }
        (Role::Worker, to) => {
            let renewed = renew_remotely(&cfg, creds).await?;
            if renewed.identity().role != to {
                bail!(
                    "the managers issued a {} certificate, not a {to} one: the role changed again meanwhile",
                    renewed.identity().role
                );
            }
            if to == Role::Manager {
                pki::receive_manager_keys(data_dir, &cfg.managers, &renewed).await?;
                cfg.raft_id = rand::rng().random_range(1..u64::MAX);
            }
            save_credentials(data_dir, &renewed)?;
        }
        (from, to) => bail!("a {from} node cannot become a {to}"),
    }
    config::save(data_dir, &cfg)?;
    Ok(cfg)
}

/// Replaces this process with `shoal daemon` on the same data dir and
/// socket. Only returns on failure.
pub fn restart(data_dir: &Path, socket: &Path) -> anyhow::Error {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return anyhow!("cannot find the shoal binary to restart: {e}"),
    };
    let err = std::process::Command::new(exe)
        .arg("daemon")
        .arg("--foreground")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--socket")
        .arg(socket)
        .exec();
    anyhow!("cannot restart the daemon: {err}")
}

fn issue_locally(ca: &Ca, me: &PeerIdentity, role: Role) -> Result<NodeCredentials> {
    let identity = PeerIdentity::new(&me.node_id, role, &me.cluster_id, me.epoch)?;
    Ok(ca.issue_credentials(&identity, shoal_proto::defaults::node_cert_validity())?)
}

fn save_credentials(data_dir: &Path, creds: &NodeCredentials) -> Result<()> {
    let dir = pki::tls_dir(data_dir);
    creds
        .save(&dir)
        .with_context(|| format!("cannot save the new certificate in {}", dir.display()))?;
    tracing::info!(identity = %creds.identity(), "new node certificate saved");
    Ok(())
}

/// Removes what only a manager keeps: the CA (with its key), the cluster
/// key and the Raft log.
fn forget_manager_state(data_dir: &Path) -> Result<()> {
    for dir in [pki::ca_dir(data_dir), data_dir.join("raft")] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    let key = data_dir.join(d::CLUSTER_KEY_FILE);
    if key.exists() {
        std::fs::remove_file(&key).with_context(|| format!("cannot remove {}", key.display()))?;
    }
    Ok(())
}

/// A new certificate from the first manager that answers, for the role
/// the store gives this node now.
async fn renew_remotely(cfg: &NodeConfig, creds: &NodeCredentials) -> Result<NodeCredentials> {
    let client_tls = tls::client_config(creds)?;
    let mut errors = Vec::new();
    for addr in &cfg.managers {
        let keys = NodeKeys::generate()?;
        let channel = match tls::connect(addr, client_tls.clone()).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let response = NodeCaClient::new(channel)
            .renew_node_certificate(RenewNodeCertificateRequest {
                csr_der: keys.csr_der()?,
            })
            .await;
        match response {
            Ok(r) => {
                let r = r.into_inner();
                return NodeCredentials::from_parts(
                    r.certificate_der.into(),
                    keys.private_key_der(),
                    r.ca_certificate_der.into(),
                )
                .context("the manager's answer is not a certificate for this node");
            }
            Err(status) => errors.push(format!("{addr}: {}", status.message())),
        }
    }
    bail!(
        "no manager renewed this node's certificate: {}",
        errors.join("; ")
    )
}
