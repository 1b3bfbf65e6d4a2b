//! The durable Raft log, in one redb database file (`<raft_dir>/log.redb`).
//!
//! Why redb: it is pure Rust, transactional and fsyncs on commit, so an
//! entry acknowledged to the leader survives a crash, and a torn write never
//! leaves a half-appended batch behind. Entries are stored as the protobuf
//! [`shoal_proto::Entry`] (with its format number), keyed by log index; a meta
//! table keeps the vote, the last committed log id and the last purged log id.
//!
//! redb calls block. Writes (which fsync) run on tokio's blocking pool so
//! they never stall the Raft core's executor thread; reads are short page
//! lookups and run inline.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, StorageIOError,
};
use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::codec;
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Log entries: index -> encoded `shoal_proto::Entry`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Raft's own durable variables, each an encoded protobuf message.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Memory the log database may use to cache its pages. redb's default
/// (1 GiB) keeps every page written in memory, until the log is a
/// manager's largest cost per pod: a 20,000-pod service wrote 25-75 MiB
/// of log, all of it held in each manager's memory. Replication and
/// recovery read the newest entries, which this still holds (4 MiB: about
/// one status proposal of sixteen 500-pod entries, each a 256 KiB page,
/// or four AppendEntries calls of at most 1 MiB); older pages come from
/// the file (and the kernel's page cache). At 16 MiB the cache held 10-12
/// MiB of log pages per manager after a 20,000-pod service converged, about
/// 520 bytes per pod of each manager's heap (`shoal-bench sim`,
/// docs/BENCHMARKS.md "Manager memory per pod, counted").
const LOG_CACHE_BYTES: usize = 4 << 20;

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// The log store handed to openraft. Cloning is cheap and shares the
/// database, which is how the log readers (one per replication stream) work.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Why the log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the raft log {path}: {message}")]
pub struct OpenError {
    pub path: PathBuf,
    pub message: String,
}

impl LogStore {
    /// Opens the log file, creating it (and its tables) on first use.
    pub fn open(path: &Path) -> Result<LogStore, OpenError> {
        let err = |message: String| OpenError {
            path: path.to_path_buf(),
            message,
        };
        let db = redb::Builder::new()
            .set_cache_size(LOG_CACHE_BYTES)
            .create(path)
            .map_err(|e| err(e.to_string()))?;
        // Create both tables now so reads never meet a missing table.
        let txn = db.begin_write().map_err(|e| err(e.to_string()))?;
        {
            txn.open_table(LOG).map_err(|e| err(e.to_string()))?;
            txn.open_table(META).map_err(|e| err(e.to_string()))?;
        }
        txn.commit().map_err(|e| err(e.to_string()))?;
        Ok(LogStore {
            db: Arc::new(db),
            path: Arc::new(path.to_path_buf()),
        })
    }

    fn read_meta<M: Message + Default>(&self, key: &str) -> Result<Option<M>, AnyError> {
        let txn = self.db.begin_read().map_err(|e| self.any(&e))?;
        let table = txn.open_table(META).map_err(|e| self.any(&e))?;
        let Some(value) = table.get(key).map_err(|e| self.any(&e))? else {
            return Ok(None);
        };
        M::decode(value.value())
            .map(Some)
            .map_err(|e| AnyError::error(format!("{}: meta key `{key}`: {e}", self.path.display())))
    }

    /// Runs one write transaction on the blocking pool and commits it with
    /// the given durability: `Immediate` fsyncs before returning.
    async fn write<F>(&self, durability: Durability, f: F) -> Result<(), AnyError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let path = self.path.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.set_durability(durability).map_err(|e| e.to_string())?;
            f(&txn).map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AnyError::error(format!("{}: {e}", path.display()))),
            Err(join) => Err(AnyError::error(format!(
                "{}: write task failed: {join}",
                path.display()
            ))),
        }
    }

    /// Wraps a redb error with the file it is about, so a fatal storage error
    /// in the daemon's log says which file to look at.
    fn any(&self, e: &dyn std::fmt::Display) -> AnyError {
        AnyError::error(format!("{}: {e}", self.path.display()))
    }

    // openraft's error type, fixed by the trait this serves.
    #[allow(clippy::result_large_err)]
    fn read_entries(&self, range: (Bound<u64>, Bound<u64>)) -> Result<Vec<Entry>, StorageError> {
        let read_err = |e: AnyError| StorageError::from(StorageIOError::read_logs(e));
        let txn = self.db.begin_read().map_err(|e| read_err(self.any(&e)))?;
        let table = txn.open_table(LOG).map_err(|e| read_err(self.any(&e)))?;
        let mut out = Vec::new();
        for item in table
            .range::<u64>(range)
            .map_err(|e| read_err(self.any(&e)))?
        {
            let (key, value) = item.map_err(|e| read_err(self.any(&e)))?;
            let index = key.value();
            let entry = codec::decode_entry(value.value()).map_err(|e| {
                StorageError::from(StorageIOError::read_log_at_index(index, self.any(&e)))
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    // openraft's error type, fixed by the trait this serves.
    #[allow(clippy::result_large_err)]
    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let read_err = |e: AnyError| StorageError::from(StorageIOError::read_logs(e));
        let txn = self.db.begin_read().map_err(|e| read_err(self.any(&e)))?;
        let table = txn.open_table(LOG).map_err(|e| read_err(self.any(&e)))?;
        let Some((key, value)) = table.last().map_err(|e| read_err(self.any(&e)))? else {
            return Ok(None);
        };
        let index = key.value();
        let entry = codec::decode_entry(value.value()).map_err(|e| {
            StorageError::from(StorageIOError::read_log_at_index(index, self.any(&e)))
        })?;
        Ok(Some(entry.log_id))
    }
}

fn owned_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(owned_bounds(&range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self
            .read_meta::<shoal_proto::LogId>(KEY_LAST_PURGED)
            .map_err(StorageIOError::read_logs)?
            .map(|id| codec::log_id_from_proto(&id));
        // After a purge of everything, the last log id is the last purged one.
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = codec::vote_to_proto(vote).encode_to_vec();
        self.write(Durability::Immediate, move |txn| {
            txn.open_table(META)?.insert(KEY_VOTE, bytes.as_slice())?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self
            .read_meta::<shoal_proto::Vote>(KEY_VOTE)
            .map_err(StorageIOError::read_vote)?
            .map(|v| codec::vote_from_proto(&v)))
    }

    /// Persisted so that, after a restart, openraft re-applies every entry
    /// known committed before serving: the in-memory store is then back to
    /// where it was. No fsync: a lost update only means re-applying from an
    /// older committed id (the next appended entry's fsync carries it anyway).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = committed.map(|id| codec::log_id_to_proto(&id).encode_to_vec());
        self.write(Durability::None, move |txn| {
            let mut meta = txn.open_table(META)?;
            match bytes {
                Some(b) => {
                    meta.insert(KEY_COMMITTED, b.as_slice())?;
                }
                None => {
                    meta.remove(KEY_COMMITTED)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<shoal_proto::LogId>(KEY_COMMITTED)
            .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, e))?
            .map(|id| codec::log_id_from_proto(&id)))
    }

    /// Appends in one transaction and reports the entries flushed only after
    /// the fsyncing commit returned: openraft counts them toward the quorum
    /// from that moment on.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.log_id.index, codec::encode_entry(&e)))
            .collect();
        if encoded.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let count = encoded.len();
        self.write(Durability::Immediate, move |txn| {
            let mut log = txn.open_table(LOG)?;
            for (index, bytes) in &encoded {
                log.insert(*index, bytes.as_slice())?;
            }
            Ok(())
        })
        .await
        .map_err(StorageIOError::write_logs)?;
        tracing::trace!(count, "raft log entries appended");
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    /// Removes every entry from `log_id` on (they conflict with the leader's).
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the raft log");
        let from = log_id.index;
        self.write(Durability::Immediate, move |txn| {
            txn.open_table(LOG)?.retain_in(from.., |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_log_entry(log_id, e).into())
    }

    /// Removes every entry up to and including `log_id` (covered by a
    /// snapshot) and remembers it as the last purged id, in one transaction.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the raft log");
        let upto = log_id.index;
        let bytes = codec::log_id_to_proto(&log_id).encode_to_vec();
        self.write(Durability::Immediate, move |txn| {
            txn.open_table(META)?
                .insert(KEY_LAST_PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?.retain_in(..=upto, |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};
    use shoal_proto::defaults::BATCH_FORMAT;

    fn lid(term: u64, index: u64) -> LogId {
        openraft::LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        openraft::Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Normal(shoal_proto::Batch {
                format: BATCH_FORMAT,
                mutations: vec![],
                atomic: false,
            }),
        }
    }

    /// Appends without a running Raft core: writes the entries directly the
    /// way `append` does, since `LogFlushed` cannot be built outside openraft.
    async fn put(store: &LogStore, entries: Vec<Entry>) {
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .map(|e| (e.log_id.index, codec::encode_entry(e)))
            .collect();
        store
            .write(Durability::Immediate, move |txn| {
                let mut log = txn.open_table(LOG)?;
                for (i, b) in &encoded {
                    log.insert(*i, b.as_slice())?;
                }
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn vote_committed_and_entries_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let mut store = LogStore::open(&path).unwrap();
            assert_eq!(store.read_vote().await.unwrap(), None);
            assert_eq!(store.get_log_state().await.unwrap(), LogState::default());

            store
                .save_vote(&openraft::Vote::new_committed(3, 1))
                .await
                .unwrap();
            put(&store, (1..=5).map(|i| entry(3, i)).collect()).await;
            store.save_committed(Some(lid(3, 4))).await.unwrap();
        }
        let mut store = LogStore::open(&path).unwrap();
        assert_eq!(
            store.read_vote().await.unwrap(),
            Some(openraft::Vote::new_committed(3, 1))
        );
        // The committed id is written without fsync; redb makes a pending
        // non-durable commit durable when the database is closed cleanly.
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(3, 4)));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(lid(3, 5)));
        assert_eq!(state.last_purged_log_id, None);
        let got = store.try_get_log_entries(2..4).await.unwrap();
        assert_eq!(got, vec![entry(3, 2), entry(3, 3)]);
    }

    #[tokio::test]
    async fn truncate_and_purge_remove_the_right_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(&dir.path().join("log.redb")).unwrap();
        put(&store, (1..=10).map(|i| entry(1, i)).collect()).await;

        store.truncate(lid(1, 8)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(lid(1, 7)));

        store.purge(lid(1, 3)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(lid(1, 3)));
        assert_eq!(state.last_log_id, Some(lid(1, 7)));
        let left: Vec<u64> = store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(left, vec![4, 5, 6, 7]);

        // Purging everything leaves the purged id as the last log id.
        store.purge(lid(1, 7)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(lid(1, 7)));
        assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_entry_of_an_unknown_format_is_a_storage_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(&dir.path().join("log.redb")).unwrap();
        let mut pb = codec::entry_to_proto(&entry(1, 1));
        pb.format = 99;
        let bytes = pb.encode_to_vec();
        store
            .write(Durability::Immediate, move |txn| {
                txn.open_table(LOG)?.insert(1u64, bytes.as_slice())?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store.try_get_log_entries(1..2).await.unwrap_err();
        assert!(err.to_string().contains("format 99"), "{err}");
    }
}
