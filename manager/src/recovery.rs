//! `shoal init --force-new-cluster`: a surviving manager makes a new
//! one-manager cluster out of its own copy of the state, after the others
//! were lost for good (as `docker swarm init --force-new-cluster`).
//!
//! Offline, with the daemon stopped: the old Raft state is replayed into a
//! store (snapshot + committed log, what [`RaftNode::open`] restores), moved
//! aside (never deleted: it is the operator's data), and a fresh one-voter
//! Raft with the same raft id commits, in one batch, every object of the old
//! store, with the cluster's epoch raised and the other managers removed.
//!
//! Why the epoch and the removal both: the old managers' certificates carry
//! the old epoch, so this manager's authorization layer refuses their Raft
//! and Control calls (a certificate they renew later is refused as well,
//! being in `Cluster.removed_nodes`). A returning old manager cannot rebuild
//! the old quorum with this one; it rejoins as a new member (`shoal leave
//! --force`, then `shoal join` with a manager token). Workers keep their
//! certificates (only managers are fenced by epoch) and their sessions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_proto::{Mutation, NodeRole};

use crate::objects::touch;
use crate::proposer::{all_applied, batch};
use crate::raft::{RaftConfig, RaftError, RaftNode};
use crate::store::{put_forced, Store, StoreData};

/// How long the fresh one-voter Raft may take to elect itself.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A manager the new cluster no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedManager {
    pub node_id: String,
    pub hostname: String,
    pub addr: String,
}

/// The new cluster's first batch, made from the old store.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    pub mutations: Vec<Mutation>,
    /// The new cluster epoch (the old one + 1).
    pub epoch: u64,
    pub removed: Vec<RemovedManager>,
}

/// What [`force_new_cluster`] did.
#[derive(Debug, Clone)]
pub struct NewCluster {
    pub cluster_id: String,
    pub epoch: u64,
    pub removed: Vec<RemovedManager>,
    /// Objects carried over (the cluster object included).
    pub objects: usize,
    /// Where the old Raft state was moved.
    pub old_raft_dir: PathBuf,
}

/// Why the new cluster could not be made. Every message names the data dir
/// and what to do; nothing is moved before the old state was read and
/// checked.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(
        "{dir} holds no Raft state (no raft/ directory): this node was never a manager \
         with this data dir; run --force-new-cluster on a surviving manager, with its --data-dir"
    )]
    NoRaftState { dir: PathBuf },
    #[error(
        "the Raft state in {dir} holds no cluster object: it is empty or incomplete, so \
         there is nothing to recover; try another surviving manager, or restore its data \
         dir from a backup"
    )]
    NoCluster { dir: PathBuf },
    #[error(
        "the Raft state in {dir} has no node object for this node ({node_id}), or it is not \
         a manager there: node.json and raft/ do not belong together; run \
         --force-new-cluster on another surviving manager, or restore the data dir whole \
         from one backup"
    )]
    NotAManager { dir: PathBuf, node_id: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the old Raft state in {dir}: {source}")]
    OldRaft {
        dir: PathBuf,
        #[source]
        source: RaftError,
    },
    /// The new Raft failed after the old one was moved aside.
    #[error(
        "cannot start the new one-manager Raft in {dir}: {message}. The old Raft state is \
         untouched in {old}: to go back, remove {dir} and rename {old} to {dir}"
    )]
    NewRaft {
        dir: PathBuf,
        old: PathBuf,
        message: String,
    },
}

fn is_manager(node: &shoal_proto::Node) -> bool {
    node.spec
        .as_ref()
        .is_some_and(|s| s.role() == NodeRole::Manager)
}

/// The first batch of the new cluster: every object of `old` as it is
/// (forced puts, so the fresh store takes them whatever their versions),
/// except the other managers' node objects, which are dropped and
/// blocklisted in the cluster object, whose epoch goes up by one. `own` is
/// this node's id; it stays, as the only manager.
pub fn rebuild(
    old: &StoreData,
    own: &str,
    data_dir: &Path,
    now: i64,
) -> Result<Rebuilt, RecoveryError> {
    let mut cluster = old
        .cluster()
        .cloned()
        .ok_or_else(|| RecoveryError::NoCluster {
            dir: data_dir.to_path_buf(),
        })?;
    if !old.nodes.get(own).is_some_and(is_manager) {
        return Err(RecoveryError::NotAManager {
            dir: data_dir.to_path_buf(),
            node_id: own.to_string(),
        });
    }
    let removed: Vec<RemovedManager> = old
        .nodes
        .values()
        .filter(|n| n.id != own && is_manager(n))
        .map(|n| {
            let status = n.status.clone().unwrap_or_default();
            RemovedManager {
                node_id: n.id.clone(),
                hostname: status.hostname,
                addr: status.addr,
            }
        })
        .collect();
    cluster.epoch += 1;
    for r in &removed {
        if !cluster.removed_nodes.contains(&r.node_id) {
            cluster.removed_nodes.push(r.node_id.clone());
        }
    }
    touch(&mut cluster.meta, now);
    let epoch = cluster.epoch;

    let mut mutations = vec![put_forced(cluster.clone())];
    mutations.extend(
        old.clusters
            .values()
            .filter(|c| c.id != cluster.id)
            .cloned()
            .map(put_forced),
    );
    mutations.extend(
        old.nodes
            .values()
            .filter(|n| !removed.iter().any(|r| r.node_id == n.id))
            .cloned()
            .map(put_forced),
    );
    mutations.extend(old.deployments.values().cloned().map(put_forced));
    mutations.extend(old.replica_sets.values().cloned().map(put_forced));
    mutations.extend(old.pods.values().cloned().map(put_forced));
    mutations.extend(old.services.values().cloned().map(put_forced));
    mutations.extend(old.secrets.values().cloned().map(put_forced));
    mutations.extend(old.configs.values().cloned().map(put_forced));
    Ok(Rebuilt {
        mutations,
        epoch,
        removed,
    })
}

/// This node, as the new cluster's Raft knows it.
#[derive(Debug, Clone)]
pub struct Survivor<'a> {
    pub data_dir: &'a Path,
    pub node_id: &'a str,
    pub raft_id: u64,
    /// host:port of its cluster gRPC.
    pub advertise_addr: &'a str,
}

fn raft_config(s: &Survivor<'_>) -> RaftConfig {
    RaftConfig {
        node_id: s.raft_id,
        data_dir: s.data_dir.to_path_buf(),
        advertise_addr: s.advertise_addr.to_string(),
        // Nothing is served and no peer is called: the old node's RPCs are
        // blocked below, the new one has no peers.
        tls: None,
    }
}

/// Replays the old Raft state into a store and stops it again, without
/// talking to any peer.
async fn read_old_state(s: &Survivor<'_>) -> Result<StoreData, RecoveryError> {
    let raft_dir = s.data_dir.join("raft");
    let old_error = |source| RecoveryError::OldRaft {
        dir: raft_dir.clone(),
        source,
    };
    let store = Store::new();
    let old = RaftNode::open(raft_config(s), store.clone())
        .await
        .map_err(old_error)?;
    // Opening re-applied the committed log; an election must not touch
    // the old state (or reach an old peer) meanwhile.
    old.faults().block_all();
    let data = store.read(|d| d.clone());
    old.shutdown().await;
    Ok(data)
}

/// Moves `raft/` aside as `raft.old-<unix seconds>` (with a counter when
/// that name is taken) and returns where it went.
fn move_aside(data_dir: &Path) -> Result<PathBuf, RecoveryError> {
    let raft_dir = data_dir.join("raft");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prefix = shoal_proto::defaults::RAFT_OLD_DIR_PREFIX;
    let mut old = data_dir.join(format!("{prefix}{secs}"));
    let mut n = 1;
    while old.exists() {
        old = data_dir.join(format!("{prefix}{secs}.{n}"));
        n += 1;
    }
    std::fs::rename(&raft_dir, &old).map_err(|e| RecoveryError::Io {
        context: format!(
            "cannot move the old Raft state {} aside to {}",
            raft_dir.display(),
            old.display()
        ),
        source: e,
    })?;
    Ok(old)
}

/// Makes the new one-manager cluster in `survivor.data_dir`, which no
/// daemon may be using. See the module docs for what is kept and why.
pub async fn force_new_cluster(survivor: Survivor<'_>) -> Result<NewCluster, RecoveryError> {
    let data_dir = survivor.data_dir;
    let raft_dir = data_dir.join("raft");
    if !raft_dir.is_dir() {
        return Err(RecoveryError::NoRaftState {
            dir: data_dir.to_path_buf(),
        });
    }
    let old = read_old_state(&survivor).await?;
    let rebuilt = rebuild(&old, survivor.node_id, data_dir, shoal_proto::now_ms())?;
    let cluster_id = old.cluster().map(|c| c.id.clone()).unwrap_or_default();
    let objects = rebuilt.mutations.len();
    let old_raft_dir = move_aside(data_dir)?;
    tracing::info!(old = %old_raft_dir.display(), "moved the old raft state aside");

    let new_error = |message: String| RecoveryError::NewRaft {
        dir: raft_dir.clone(),
        old: old_raft_dir.clone(),
        message,
    };
    let store = Store::new();
    let raft = RaftNode::open(raft_config(&survivor), store)
        .await
        .map_err(|e| new_error(e.to_string()))?;
    let committed = async {
        raft.bootstrap_single().await.map_err(|e| e.to_string())?;
        raft.wait_for_leader(ELECTION_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let result = raft
            .propose(batch(rebuilt.mutations, true))
            .await
            .map_err(|e| e.to_string())?;
        if !all_applied(&result) {
            return Err(format!(
                "the new cluster's first batch did not apply: {:?}",
                result.outcomes
            ));
        }
        Ok(())
    }
    .await;
    raft.shutdown().await;
    committed.map_err(new_error)?;
    tracing::info!(
        epoch = rebuilt.epoch,
        objects,
        removed = rebuilt.removed.len(),
        "new one-manager cluster committed"
    );
    Ok(NewCluster {
        cluster_id,
        epoch: rebuilt.epoch,
        removed: rebuilt.removed,
        objects,
        old_raft_dir,
    })
}

#[cfg(test)]
mod tests {
    use shoal_proto::{
        Cluster, Config, Deployment, Meta, Node, NodeSpec, NodeStatus, Pod, ReplicaSet, Secret,
        Service,
    };

    use super::*;
    use crate::store::put;

    fn node(id: &str, role: NodeRole) -> Node {
        Node {
            id: id.into(),
            meta: Some(Meta::default()),
            spec: Some(NodeSpec {
                role: role as i32,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                hostname: format!("host-{id}"),
                addr: format!("10.0.0.{}:2377", id.len()),
                ..Default::default()
            }),
            raft_id: 0,
        }
    }

    /// A three-manager, one-worker cluster with one of everything else.
    fn old_cluster() -> Vec<Mutation> {
        vec![
            put(
                Cluster {
                    id: "c1".into(),
                    meta: Some(Meta::default()),
                    name: "default".into(),
                    worker_join_secret: "w".repeat(32),
                    manager_join_secret: "m".repeat(32),
                    epoch: 1,
                    removed_nodes: vec!["gone-worker".into()],
                    gossip: None,
                },
                0,
            ),
            put(node("m1", NodeRole::Manager), 0),
            put(node("m2", NodeRole::Manager), 0),
            put(node("m3", NodeRole::Manager), 0),
            put(node("w1", NodeRole::Worker), 0),
            put(
                Deployment {
                    id: "d1".into(),
                    ..Default::default()
                },
                0,
            ),
            put(
                ReplicaSet {
                    id: "r1".into(),
                    ..Default::default()
                },
                0,
            ),
            put(
                Pod {
                    id: "p1".into(),
                    node_id: "m2".into(),
                    ..Default::default()
                },
                0,
            ),
            put(
                Service {
                    id: "s1".into(),
                    ..Default::default()
                },
                0,
            ),
            put(
                Secret {
                    id: "x1".into(),
                    ..Default::default()
                },
                0,
            ),
            put(
                Config {
                    id: "k1".into(),
                    ..Default::default()
                },
                0,
            ),
        ]
    }

    fn store_with(mutations: Vec<Mutation>) -> StoreData {
        let store = Store::new();
        let r = store.apply(1, &batch(mutations, true));
        assert!(all_applied(&r), "{r:?}");
        store.read(|d| d.clone())
    }

    #[test]
    fn the_new_batch_keeps_every_object_raises_the_epoch_and_drops_the_other_managers() {
        let old = store_with(old_cluster());
        let rebuilt = rebuild(&old, "m1", Path::new("/d"), 42).unwrap();
        assert_eq!(rebuilt.epoch, 2);
        let removed: Vec<_> = rebuilt.removed.iter().map(|r| r.node_id.as_str()).collect();
        assert_eq!(removed, ["m2", "m3"]);
        assert_eq!(rebuilt.removed[0].hostname, "host-m2");

        let new = store_with(rebuilt.mutations);
        let cluster = new.cluster().unwrap();
        assert_eq!(cluster.epoch, 2);
        assert_eq!(cluster.removed_nodes, ["gone-worker", "m2", "m3"]);
        assert_eq!(cluster.manager_join_secret, "m".repeat(32));
        let nodes: Vec<_> = new.nodes.keys().map(String::as_str).collect();
        assert_eq!(nodes, ["m1", "w1"]);
        assert!(is_manager(&new.nodes["m1"]));
        // Everything else is carried over as it was.
        assert_eq!(new.deployments.keys().collect::<Vec<_>>(), ["d1"]);
        assert_eq!(new.replica_sets.keys().collect::<Vec<_>>(), ["r1"]);
        assert_eq!(new.pods["p1"].node_id, "m2");
        assert_eq!(new.services.keys().collect::<Vec<_>>(), ["s1"]);
        assert_eq!(new.secrets.keys().collect::<Vec<_>>(), ["x1"]);
        assert_eq!(new.configs.keys().collect::<Vec<_>>(), ["k1"]);
    }

    #[test]
    fn a_node_that_is_not_a_manager_in_the_old_state_is_refused_naming_the_dir() {
        let old = store_with(old_cluster());
        let err = rebuild(&old, "w1", Path::new("/data"), 0).unwrap_err();
        assert!(matches!(err, RecoveryError::NotAManager { .. }), "{err}");
        assert!(err.to_string().contains("/data"), "{err}");
        let err = rebuild(&StoreData::default(), "m1", Path::new("/data"), 0).unwrap_err();
        assert!(matches!(err, RecoveryError::NoCluster { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_survivor_commits_the_old_state_as_a_new_one_voter_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let survivor = Survivor {
            data_dir: dir.path(),
            node_id: "m1",
            raft_id: 7,
            advertise_addr: "127.0.0.1:1",
        };
        // The old cluster: three managers in Raft, seen from raft id 7.
        {
            let raft = RaftNode::open(raft_config(&survivor), Store::new())
                .await
                .unwrap();
            raft.bootstrap_single().await.unwrap();
            raft.wait_for_leader(ELECTION_TIMEOUT).await.unwrap();
            let r = raft.propose(batch(old_cluster(), true)).await.unwrap();
            assert!(all_applied(&r));
            raft.shutdown().await;
        }

        let done = force_new_cluster(survivor.clone()).await.unwrap();
        assert_eq!(done.epoch, 2);
        assert_eq!(done.cluster_id, "c1");
        assert_eq!(done.removed.len(), 2);
        assert_eq!(done.objects, 9);
        assert!(
            done.old_raft_dir.join("log.redb").exists(),
            "old state kept"
        );

        // The new Raft holds the new cluster, and this node leads it alone.
        let store = Store::new();
        let raft = RaftNode::open(raft_config(&survivor), store.clone())
            .await
            .unwrap();
        assert_eq!(raft.wait_for_leader(ELECTION_TIMEOUT).await.unwrap(), 7);
        let managers = raft.managers();
        assert_eq!(managers.len(), 1, "{managers:?}");
        assert_eq!(managers[0].raft_id, 7);
        let (epoch, nodes) = store.read(|d| {
            (
                d.cluster().unwrap().epoch,
                d.nodes.keys().cloned().collect::<Vec<_>>(),
            )
        });
        assert_eq!(epoch, 2);
        assert_eq!(nodes, ["m1", "w1"]);
        raft.shutdown().await;

        // Twice is fine: epoch 3, nothing more to remove, both old dirs kept.
        let again = force_new_cluster(survivor).await.unwrap();
        assert_eq!(again.epoch, 3);
        assert!(again.removed.is_empty());
        assert_ne!(again.old_raft_dir, done.old_raft_dir);
        assert!(done.old_raft_dir.exists());
    }
}
