//! The Raft state machine: committed batches applied to the in-memory
//! [`Store`], and snapshots of it on disk.
//!
//! The store lives in memory only. What makes it durable is the log plus the
//! latest snapshot: on open the snapshot (if any) restores the store, and
//! openraft then re-applies the committed entries after it from the log.
//! That is why a snapshot file is written with temp + fsync + rename + fsync
//! of the directory before openraft is told it exists: openraft purges the
//! log up to a snapshot right after, and a snapshot lost in a crash would
//! lose those entries with it.
//!
//! A snapshot is one protobuf message ([`SnapshotFile`]) holding a format
//! number, the openraft metadata and the store's objects. The same bytes are
//! the file on disk and the payload streamed to a lagging follower, which
//! writes them as its own file after checking them.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use prost::Message;
use shoal_proto::defaults::SNAPSHOT_FORMAT;
use shoal_proto::{BatchResult, StoreSnapshot};
use tokio::sync::Mutex;

use super::codec;
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use super::RaftError;
use crate::store::Store;

/// The snapshot file and wire format. Versioned by `format`: a reader refuses
/// a format it does not know rather than restore a store it misreads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotFile {
    #[prost(uint32, tag = "1")]
    pub format: u32,
    #[prost(message, optional, tag = "2")]
    pub meta: Option<shoal_proto::SnapshotMeta>,
    #[prost(message, optional, tag = "3")]
    pub store: Option<StoreSnapshot>,
}

impl SnapshotFile {
    /// Decodes and checks snapshot bytes; `origin` names the file or peer in
    /// the error.
    fn parse(bytes: &[u8], origin: &str) -> Result<SnapshotFile, String> {
        let file = <SnapshotFile as Message>::decode(bytes)
            .map_err(|e| format!("{origin}: not a shoal raft snapshot: {e}"))?;
        if file.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "{origin}: snapshot format {} is not supported (this shoal reads format {}); \
                 upgrade shoal on this manager",
                file.format, SNAPSHOT_FORMAT
            ));
        }
        if file.meta.is_none() {
            return Err(format!("{origin}: snapshot has no metadata"));
        }
        Ok(file)
    }

    fn meta(&self) -> SnapshotMeta {
        codec::snapshot_meta_from_proto(self.meta.as_ref().unwrap_or(&Default::default()))
    }
}

/// Where snapshots live, and which one is current. Shared by the state
/// machine and the snapshot builders openraft runs in separate tasks; the
/// lock serializes every change of the directory.
#[derive(Debug)]
struct SnapshotDir {
    dir: PathBuf,
    /// Metadata and path of the snapshot file currently on disk, if any.
    current: Mutex<Option<(SnapshotMeta, PathBuf)>>,
}

impl SnapshotDir {
    fn path_of(&self, snapshot_id: &str) -> PathBuf {
        self.dir.join(format!("{}.snap", file_stem(snapshot_id)))
    }

    /// Persists `bytes` as the snapshot `meta`, if it is newer than the
    /// current one, and removes every older file. Returns false when a newer
    /// snapshot was already there (then nothing is written).
    async fn persist(&self, meta: &SnapshotMeta, bytes: Arc<Vec<u8>>) -> Result<bool, String> {
        let mut current = self.current.lock().await;
        if let Some((cur, _)) = current.as_ref() {
            if cur.last_log_id > meta.last_log_id {
                return Ok(false);
            }
        }
        let dir = self.dir.clone();
        let path = self.path_of(&meta.snapshot_id);
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_durably(&dir, &target, &bytes))
            .await
            .map_err(|e| format!("snapshot write task failed: {e}"))??;
        *current = Some((meta.clone(), path));
        let keep = file_stem(&meta.snapshot_id);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || remove_other_snapshots(&dir, &keep))
            .await
            .map_err(|e| format!("snapshot cleanup task failed: {e}"))?;
        Ok(true)
    }

    async fn read_current(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, String> {
        let current = self.current.lock().await;
        let Some((meta, path)) = current.clone() else {
            return Ok(None);
        };
        let bytes = tokio::task::spawn_blocking(move || {
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
        })
        .await
        .map_err(|e| format!("snapshot read task failed: {e}"))??;
        Ok(Some((meta, bytes)))
    }
}

/// Snapshot ids come from the leader; only a safe subset of characters goes
/// into a file name.
fn file_stem(snapshot_id: &str) -> String {
    let stem: String = snapshot_id
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "snapshot".into()
    } else {
        stem
    }
}

/// Writes `bytes` to `path` so that after a crash the file either does not
/// exist or is complete: temp file, fsync, rename, fsync of the directory.
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("snap.tmp");
    let ctx = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let mut f = std::fs::File::create(&tmp).map_err(|e| ctx("cannot create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| ctx("cannot write", &tmp, e))?;
    f.sync_all().map_err(|e| ctx("cannot fsync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| ctx("cannot rename into", path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ctx("cannot fsync directory", dir, e))?;
    Ok(())
}

/// Keeps only the snapshot named `keep` (and never touches other files).
fn remove_other_snapshots(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale_snap = name.ends_with(".snap") && name != format!("{keep}.snap");
        let stale_tmp = name.ends_with(".snap.tmp");
        if stale_snap || stale_tmp {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an old raft snapshot");
            }
        }
    }
}

/// Finds the newest complete snapshot in `dir`. Leftover temp files (from a
/// crash mid-write) are removed; a `.snap` that cannot be read is an error,
/// because the log entries it covers may already be purged.
fn load_latest(dir: &Path) -> Result<Option<(SnapshotFile, PathBuf)>, RaftError> {
    let io = |e: std::io::Error| RaftError::Io {
        context: format!("cannot list the raft snapshot directory {}", dir.display()),
        source: e,
    };
    let mut best: Option<(SnapshotFile, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".snap.tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".snap") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| RaftError::Io {
            context: format!("cannot read raft snapshot {}", path.display()),
            source: e,
        })?;
        let file = SnapshotFile::parse(&bytes, &path.display().to_string()).map_err(|message| {
            RaftError::Snapshot {
                path: path.clone(),
                message,
            }
        })?;
        let newer = match &best {
            None => true,
            Some((b, _)) => file.meta().last_log_id > b.meta().last_log_id,
        };
        if newer {
            best = Some((file, path));
        }
    }
    Ok(best)
}

/// openraft's state machine over shoal's [`Store`].
pub struct StateMachine {
    store: Arc<Store>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    /// Index of the last entry applied, read by `RaftNode::last_applied`
    /// without a round trip through the Raft core.
    applied_index: Arc<AtomicU64>,
    snapshots: Arc<SnapshotDir>,
}

impl StateMachine {
    /// Opens the snapshot directory and restores `store` from the latest
    /// snapshot in it, if any.
    pub fn open(
        dir: &Path,
        store: Arc<Store>,
        applied_index: Arc<AtomicU64>,
    ) -> Result<StateMachine, RaftError> {
        std::fs::create_dir_all(dir).map_err(|e| RaftError::Io {
            context: format!(
                "cannot create the raft snapshot directory {}",
                dir.display()
            ),
            source: e,
        })?;
        let latest = load_latest(dir)?;
        let current = latest
            .as_ref()
            .map(|(file, path)| (file.meta(), path.clone()));
        let mut sm = StateMachine {
            store,
            last_applied: None,
            last_membership: StoredMembership::default(),
            applied_index,
            snapshots: Arc::new(SnapshotDir {
                dir: dir.to_path_buf(),
                current: Mutex::new(current),
            }),
        };
        if let Some((file, path)) = latest {
            let meta = file.meta();
            tracing::info!(
                path = %path.display(),
                last_log_id = ?meta.last_log_id,
                "restoring the store from the raft snapshot"
            );
            sm.restore(&meta, file.store.unwrap_or_default());
            let keep = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            remove_other_snapshots(dir, &keep);
        }
        Ok(sm)
    }

    fn restore(&mut self, meta: &SnapshotMeta, snapshot: StoreSnapshot) {
        let index = meta.last_log_id.map(|id| id.index).unwrap_or(0);
        self.store.restore(snapshot, index);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.applied_index.store(index, Ordering::Release);
    }

    fn apply_one(&mut self, entry: Entry) -> BatchResult {
        let index = entry.log_id.index;
        let result = match entry.payload {
            EntryPayload::Normal(batch) => self.store.apply(index, &batch),
            EntryPayload::Blank => BatchResult {
                index,
                outcomes: vec![],
            },
            EntryPayload::Membership(m) => {
                self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                BatchResult {
                    index,
                    outcomes: vec![],
                }
            }
        };
        self.last_applied = Some(entry.log_id);
        self.applied_index.store(index, Ordering::Release);
        result
    }
}

fn snapshot_error(meta: Option<&SnapshotMeta>, write: bool, message: String) -> StorageError {
    let sig = meta.map(|m| m.signature());
    let source = AnyError::error(message);
    let e = if write {
        StorageIOError::write_snapshot(sig, source)
    } else {
        StorageIOError::read_snapshot(sig, source)
    };
    e.into()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    /// Applies committed entries in order. Never fails on content: a batch
    /// the store cannot use yields SKIPPED outcomes, not an error, so one bad
    /// proposal cannot stop every manager.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // A controller's pass may hold the store long: wait for it here,
        // not queued on the lock (see `Store`).
        self.store.long_reads_done().await;
        Ok(entries.into_iter().map(|e| self.apply_one(e)).collect())
    }

    /// Captures the store now, while no entry is being applied: openraft
    /// runs the builder in another task, concurrently with later applies.
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            store: self.store.snapshot(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Replaces the store with a snapshot streamed from the leader. The file
    /// is persisted before the store changes, so the state openraft records
    /// (and the log it purges) never gets ahead of what is on disk.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let origin = format!("snapshot {} from the leader", meta.snapshot_id);
        let file = SnapshotFile::parse(&bytes, &origin)
            .map_err(|m| snapshot_error(Some(meta), false, m))?;
        if file.meta().last_log_id != meta.last_log_id {
            return Err(snapshot_error(
                Some(meta),
                false,
                format!(
                    "{origin}: data is for {:?}, metadata says {:?}",
                    file.meta().last_log_id,
                    meta.last_log_id
                ),
            ));
        }
        let bytes = Arc::new(bytes);
        self.snapshots
            .persist(meta, bytes)
            .await
            .map_err(|m| snapshot_error(Some(meta), true, m))?;
        tracing::info!(snapshot = %meta, "installed a raft snapshot from the leader");
        self.restore(meta, file.store.unwrap_or_default());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = self
            .snapshots
            .read_current()
            .await
            .map_err(|m| snapshot_error(None, false, m))?;
        Ok(current.map(|(meta, bytes)| openraft::Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// Builds one snapshot from the store content captured when openraft asked
/// for the builder.
pub struct SnapshotBuilder {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    store: StoreSnapshot,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let snapshot_id = match self.last_applied {
            Some(id) => format!(
                "t{}-n{}-i{}-{millis}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => format!("empty-{millis}"),
        };
        let meta = openraft::SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let file = SnapshotFile {
            format: SNAPSHOT_FORMAT,
            meta: Some(codec::snapshot_meta_to_proto(&meta)),
            store: Some(std::mem::take(&mut self.store)),
        };
        let bytes = Arc::new(file.encode_to_vec());
        let written = self
            .snapshots
            .persist(&meta, bytes.clone())
            .await
            .map_err(|m| snapshot_error(Some(&meta), true, m))?;
        tracing::info!(snapshot = %meta, size = bytes.len(), written, "built a raft snapshot");
        let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| (*shared).clone());
        Ok(openraft::Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;
    use shoal_proto::defaults::BATCH_FORMAT;
    use shoal_proto::{mutation, object, Batch, Mutation, MutationOutcome, Node, Object};

    fn lid(index: u64) -> LogId {
        openraft::LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn put_node(id: &str) -> Batch {
        Batch {
            format: BATCH_FORMAT,
            mutations: vec![Mutation {
                op: Some(mutation::Op::Put(Object {
                    kind: Some(object::Kind::Node(Node {
                        id: id.into(),
                        ..Default::default()
                    })),
                })),
                expected_version: 0,
                force: false,
            }],
            atomic: false,
        }
    }

    fn normal(index: u64, batch: Batch) -> Entry {
        openraft::Entry {
            log_id: lid(index),
            payload: EntryPayload::Normal(batch),
        }
    }

    #[tokio::test]
    async fn apply_hands_batches_to_the_store_and_never_fails_on_bad_formats() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new();
        let mut sm =
            StateMachine::open(dir.path(), store.clone(), Arc::new(AtomicU64::new(0))).unwrap();
        let mut unknown = put_node("n-bad");
        unknown.format = 999;
        let results = sm
            .apply(vec![
                openraft::Entry {
                    log_id: lid(1),
                    payload: EntryPayload::Blank,
                },
                normal(2, put_node("n-1")),
                normal(3, unknown),
            ])
            .await
            .unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(
            results[0],
            BatchResult {
                index: 1,
                outcomes: vec![]
            }
        );
        assert_eq!(results[1].index, 2);
        assert_eq!(results[1].outcomes, vec![MutationOutcome::Applied as i32]);
        assert_eq!(results[2].outcomes, vec![MutationOutcome::Skipped as i32]);
        assert!(store.read(|d| d.nodes.contains_key("n-1")));
        assert!(!store.read(|d| d.nodes.contains_key("n-bad")));
        assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(3)));
    }

    #[tokio::test]
    async fn a_built_snapshot_restores_a_fresh_store_on_open_and_only_the_latest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new();
        let mut sm =
            StateMachine::open(dir.path(), store.clone(), Arc::new(AtomicU64::new(0))).unwrap();
        sm.apply(vec![normal(1, put_node("n-1"))]).await.unwrap();
        let first = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        sm.apply(vec![normal(2, put_node("n-2"))]).await.unwrap();
        let second = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_ne!(first.meta.snapshot_id, second.meta.snapshot_id);

        let snaps: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            snaps.len(),
            1,
            "only the latest snapshot is kept: {snaps:?}"
        );

        let current = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert_eq!(current.meta.last_log_id, Some(lid(2)));

        let fresh = Store::new();
        let applied = Arc::new(AtomicU64::new(0));
        let mut reopened = StateMachine::open(dir.path(), fresh.clone(), applied.clone()).unwrap();
        assert_eq!(reopened.applied_state().await.unwrap().0, Some(lid(2)));
        assert_eq!(applied.load(Ordering::Acquire), 2);
        assert!(fresh.read(|d| d.nodes.contains_key("n-1") && d.nodes.contains_key("n-2")));
    }

    #[tokio::test]
    async fn installing_a_snapshot_replaces_the_store_and_persists_it() {
        let leader_dir = tempfile::tempdir().unwrap();
        let leader_store = Store::new();
        let mut leader =
            StateMachine::open(leader_dir.path(), leader_store, Arc::new(AtomicU64::new(0)))
                .unwrap();
        leader
            .apply(vec![normal(1, put_node("n-1"))])
            .await
            .unwrap();
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = Store::new();
        let mut follower =
            StateMachine::open(dir.path(), store.clone(), Arc::new(AtomicU64::new(0))).unwrap();
        follower
            .apply(vec![normal(1, put_node("stale"))])
            .await
            .unwrap();
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert!(store.read(|d| d.nodes.contains_key("n-1") && !d.nodes.contains_key("stale")));

        // Garbage is refused with an error, not a panic, and changes nothing.
        let err = follower
            .install_snapshot(&snap.meta, Box::new(Cursor::new(vec![0xff; 8])))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("snapshot"), "{err}");
        assert!(store.read(|d| d.nodes.contains_key("n-1")));

        let again = Store::new();
        StateMachine::open(dir.path(), again.clone(), Arc::new(AtomicU64::new(0))).unwrap();
        assert!(again.read(|d| d.nodes.contains_key("n-1")));
    }

    #[test]
    fn snapshot_ids_from_peers_cannot_escape_the_directory() {
        assert_eq!(file_stem("../../etc/passwd"), "______etc_passwd");
        assert_eq!(file_stem(""), "snapshot");
        assert_eq!(file_stem("t1-n2-i3-4"), "t1-n2-i3-4");
    }
}
