//! This node's share of the cluster PKI on disk (DESIGN.md §6): the root CA
//! in `DATA_DIR/ca/` (the first manager makes it at `shoal init`; its key,
//! mode 0600, never leaves the managers) and the node's own credentials in
//! `DATA_DIR/tls/` (a manager certificate the CA issues to itself). Both are
//! in place before the daemon serves anything, and checked on every start
//! against `node.json`, so a daemon never runs with another cluster's CA.
//!
//! A worker has only `tls/`: its certificate, its key and the CA
//! certificate it trusts. A manager also has `ca/` (from `shoal init`, or
//! handed over by another manager when it joined or was promoted).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use shoal_manager::ca::{tls, Ca, NodeCredentials, PeerIdentity, Role};
use shoal_manager::keys::ClusterKey;
use shoal_proto::defaults as d;
use shoal_proto::managers_client::ManagersClient;
use shoal_proto::ManagerKeysRequest;

use super::config::NodeConfig;

/// The CA and this node's credentials, loaded and checked to belong together.
pub struct NodePki {
    pub ca: Ca,
    pub credentials: NodeCredentials,
}

/// A worker's credentials, checked against `node.json`.
pub fn load_worker(data_dir: &Path, cfg: &NodeConfig) -> Result<NodeCredentials> {
    let dir = tls_dir(data_dir);
    let credentials = NodeCredentials::load(&dir).with_context(|| {
        format!(
            "cannot load this node's certificate from {}; restore it from a backup of the \
             data dir, or leave (`shoal leave --force`) and join again",
            dir.display()
        )
    })?;
    let id = credentials.identity();
    if id.node_id != cfg.node_id || id.cluster_id != cfg.cluster_id {
        bail!(
            "the certificate in {} is for {id}, but this node is {} in cluster {}: the data \
             dir mixes files of different nodes or clusters; restore it whole from one backup",
            dir.display(),
            cfg.node_id,
            cfg.cluster_id
        );
    }
    Ok(credentials)
}

/// Whether the data dir holds a manager's share of the PKI (the CA), or a
/// data dir from before the PKI existed (which only a manager made).
pub fn is_manager_dir(data_dir: &Path) -> bool {
    Ca::exists_in(&ca_dir(data_dir)) || !tls_dir(data_dir).exists()
}

pub fn ca_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(d::CA_DIR)
}

pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(d::NODE_TLS_DIR)
}

/// `shoal init`: a new root CA for the cluster and a manager certificate
/// for this node, in epoch `epoch`. Refuses to replace a CA already there
/// (key material is never deleted behind the operator's back).
pub fn create(data_dir: &Path, cfg: &NodeConfig, epoch: u64) -> Result<NodePki> {
    let ca_dir = ca_dir(data_dir);
    if Ca::exists_in(&ca_dir) {
        bail!(
            "a cluster CA already exists in {} but this node is in no cluster (no node.json): \
             it was left by an earlier `shoal init` that did not finish; remove {} and {} \
             and run `shoal init` again",
            ca_dir.display(),
            ca_dir.display(),
            tls_dir(data_dir).display()
        );
    }
    let ca = Ca::create(&ca_dir, &cfg.cluster_id)
        .with_context(|| format!("cannot create the cluster CA in {}", ca_dir.display()))?;
    let credentials = issue_own(data_dir, &ca, cfg, epoch)?;
    Ok(NodePki { ca, credentials })
}

/// `shoal daemon`: the CA and credentials `shoal init` made, checked
/// against this node's identity. `Ok(None)` for a data dir from before the
/// PKI existed (neither directory there): the caller creates them once it
/// knows the cluster's epoch. Anything half there or unreadable is an error
/// saying which file and what to do.
pub fn load(data_dir: &Path, cfg: &NodeConfig) -> Result<Option<NodePki>> {
    let (ca_dir, tls_dir) = (ca_dir(data_dir), tls_dir(data_dir));
    if !ca_dir.exists() && !tls_dir.exists() {
        return Ok(None);
    }
    let ca = Ca::load(&ca_dir).with_context(|| {
        format!(
            "cannot load the cluster CA from {} (made by `shoal init`); restore it from a \
             backup of the data dir: without it this manager cannot make join tokens",
            ca_dir.display()
        )
    })?;
    let credentials = NodeCredentials::load(&tls_dir).with_context(|| {
        format!(
            "cannot load this node's certificate from {}; restore it from a backup of the \
             data dir",
            tls_dir.display()
        )
    })?;
    check(&ca, &credentials, cfg, data_dir)?;
    Ok(Some(NodePki { ca, credentials }))
}

/// A data dir from before the PKI: make the CA and the node's certificate
/// now, in the cluster's current `epoch` (read from the store), with a
/// warning. Tokens printed before used the cluster id instead of a digest
/// and admitted no one, so nothing that worked stops working.
pub fn create_for_old_data_dir(data_dir: &Path, cfg: &NodeConfig, epoch: u64) -> Result<NodePki> {
    tracing::warn!(
        dir = %ca_dir(data_dir).display(),
        "no cluster CA in this data dir (made before shoal had one): creating it; \
         join tokens printed before are replaced by tokens with the CA digest"
    );
    create(data_dir, cfg, epoch)
}

/// A manager certificate this node's CA issues to this node, saved in
/// `tls/` (replacing what is there): the first manager's at `shoal init`,
/// and the survivor's at the new epoch after `--force-new-cluster`.
pub fn issue_own(
    data_dir: &Path,
    ca: &Ca,
    cfg: &NodeConfig,
    epoch: u64,
) -> Result<NodeCredentials> {
    let identity = PeerIdentity::new(&cfg.node_id, Role::Manager, &cfg.cluster_id, epoch)?;
    let credentials = ca
        .issue_credentials(&identity, shoal_proto::defaults::node_cert_validity())
        .context("cannot issue this node's certificate")?;
    let tls_dir = tls_dir(data_dir);
    credentials.save(&tls_dir).with_context(|| {
        format!(
            "cannot save this node's certificate in {}",
            tls_dir.display()
        )
    })?;
    tracing::info!(identity = %identity, dir = %tls_dir.display(), "issued this node's certificate");
    Ok(credentials)
}

/// The CA, the credentials and `node.json` must describe one node of one
/// cluster: a data dir assembled from two nodes' files is refused.
fn check(ca: &Ca, creds: &NodeCredentials, cfg: &NodeConfig, data_dir: &Path) -> Result<()> {
    let id = creds.identity();
    let restore = "the data dir mixes files of different nodes or clusters; restore it whole \
                   from one backup";
    if ca.cluster_id() != cfg.cluster_id {
        bail!(
            "the CA in {} is for cluster {}, but this node is in cluster {}: {restore}",
            ca_dir(data_dir).display(),
            ca.cluster_id(),
            cfg.cluster_id
        );
    }
    if creds.ca_certificate_der() != ca.certificate_der() {
        bail!(
            "the certificate in {} was issued by another CA than the one in {}: {restore}",
            tls_dir(data_dir).display(),
            ca_dir(data_dir).display()
        );
    }
    if id.node_id != cfg.node_id || id.cluster_id != cfg.cluster_id {
        bail!(
            "the certificate in {} is for {id}, but this node is {} in cluster {}: {restore}",
            tls_dir(data_dir).display(),
            cfg.node_id,
            cfg.cluster_id
        );
    }
    Ok(())
}

/// The CA and the cluster key, from the first of `managers` that hands
/// them over to this node's (new) manager certificate, saved in the data
/// dir in place of any there before: for a joining manager and for a
/// promoted worker alike.
pub async fn receive_manager_keys(
    data_dir: &Path,
    managers: &[String],
    creds: &NodeCredentials,
) -> Result<()> {
    let client_tls = tls::client_config(creds)?;
    let mut errors = Vec::new();
    for addr in managers {
        let channel = match tls::connect(addr, client_tls.clone()).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        match ManagersClient::new(channel)
            .get_manager_keys(ManagerKeysRequest {})
            .await
        {
            Ok(keys) => {
                let keys = keys.into_inner();
                let ca = Ca::from_der(
                    &keys.ca_certificate_der,
                    &keys.ca_key_der,
                    "the CA received from the manager",
                )?;
                if ca.certificate_der() != creds.ca_certificate_der() {
                    bail!("the manager at {addr} handed over another CA than the one that signed this node's certificate");
                }
                let ca_dir = ca_dir(data_dir);
                if ca_dir.exists() {
                    std::fs::remove_dir_all(&ca_dir)?;
                }
                ca.save(&ca_dir)?;
                let key_path = data_dir.join(d::CLUSTER_KEY_FILE);
                if key_path.exists() {
                    std::fs::remove_file(&key_path)?;
                }
                ClusterKey::from_bytes(&keys.cluster_key)?.save(&key_path)?;
                return Ok(());
            }
            Err(status) => errors.push(format!("{addr}: {}", status.message())),
        }
    }
    bail!(
        "no manager handed over the cluster keys: {}",
        errors.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn cfg(node: &str, cluster: &str) -> NodeConfig {
        NodeConfig {
            node_id: node.into(),
            raft_id: 1,
            cluster_id: cluster.into(),
            listen_addr: "127.0.0.1:2377".into(),
            advertise_addr: "127.0.0.1:2377".into(),
            pod_network: "n".into(),
            pod_network_internal: false,
            managers: Vec::new(),
            gossip_port: 0,
        }
    }

    #[test]
    fn init_creates_the_ca_and_a_manager_certificate_that_a_restart_loads() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg("n1", "c1");
        let made = create(dir.path(), &c, 1).unwrap();
        let key = Ca::key_path(&ca_dir(dir.path()));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let id = made.credentials.identity();
        assert_eq!((id.role, id.epoch), (Role::Manager, 1));

        let loaded = load(dir.path(), &c).unwrap().expect("the PKI is there");
        assert_eq!(loaded.ca.digest(), made.ca.digest());
        assert_eq!(loaded.credentials.identity(), made.credentials.identity());

        let err = create(dir.path(), &c, 1).err().unwrap().to_string();
        assert!(err.contains("already exists"), "{err}");
    }

    #[test]
    fn an_old_data_dir_has_none_and_a_broken_one_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg("n1", "c1");
        assert!(load(dir.path(), &c).unwrap().is_none());

        create(dir.path(), &c, 1).unwrap();
        let err = format!("{:#}", load(dir.path(), &cfg("n2", "c1")).err().unwrap());
        assert!(
            err.contains("is for manager n1 (cluster c1, epoch 1)"),
            "{err}"
        );
        let err = format!("{:#}", load(dir.path(), &cfg("n1", "c2")).err().unwrap());
        assert!(err.contains("is for cluster c1"), "{err}");

        std::fs::remove_file(Ca::key_path(&ca_dir(dir.path()))).unwrap();
        let err = format!("{:#}", load(dir.path(), &c).err().unwrap());
        assert!(err.contains("cannot load the cluster CA"), "{err}");
        assert!(err.contains("ca.key"), "{err}");
    }
}
