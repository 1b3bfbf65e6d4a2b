//! Batching workers' status reports into Raft: reports gathered for
//! STATUS_BATCH_MS become one proposal, each pod written at the version
//! read (a conflict puts the report back for the next round, so a status
//! write never overwrites a concurrent desired-state change).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::defaults::STATUS_BATCH_MS;
use shoal_proto::{now_ms, MutationOutcome, PodStatus, PodStatusUpdate};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::objects::{touch, version};
use crate::proposer::{batch, Proposer};
use crate::store::{put, Store};

/// Latest unreported status per pod id, with the reporting node.
type Pending = HashMap<String, (String, PodStatus)>;

#[derive(Clone)]
pub struct StatusBatcher {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
}

impl StatusBatcher {
    pub fn start(
        store: Arc<Store>,
        proposer: Arc<dyn Proposer>,
        cancel: CancellationToken,
    ) -> Self {
        let batcher = StatusBatcher {
            pending: Arc::default(),
            wake: Arc::new(Notify::new()),
        };
        let b = batcher.clone();
        tokio::spawn(async move { b.run(store, proposer, cancel).await });
        batcher
    }

    /// Queues reports from `node_id`; a later report for the same pod
    /// replaces an earlier unsent one.
    pub fn submit(&self, node_id: &str, updates: Vec<PodStatusUpdate>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for u in updates {
            if let Some(status) = u.status {
                pending.insert(u.pod_id, (node_id.to_string(), status));
            }
        }
        drop(pending);
        self.wake.notify_one();
    }

    async fn run(self, store: Arc<Store>, proposer: Arc<dyn Proposer>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            tokio::time::sleep(Duration::from_millis(STATUS_BATCH_MS)).await;
            let taken: Pending =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            let now = now_ms();
            let mut ids = Vec::new();
            let mutations: Vec<_> = store.read(|d| {
                taken
                    .iter()
                    .filter_map(|(pod_id, (node_id, status))| {
                        let pod = d.pods.get(pod_id)?;
                        // Only the node a pod is placed on reports for it.
                        if &pod.node_id != node_id || pod.status.as_ref() == Some(status) {
                            return None;
                        }
                        let mut p = pod.clone();
                        p.status = Some(status.clone());
                        touch(&mut p.meta, now);
                        ids.push(pod_id.clone());
                        Some(put(p, version(&pod.meta)))
                    })
                    .collect()
            });
            if mutations.is_empty() {
                continue;
            }
            match proposer.propose(batch(mutations, false)).await {
                Ok(result) => {
                    let conflicted: Vec<&String> = ids
                        .iter()
                        .zip(&result.outcomes)
                        .filter(|(_, o)| **o == MutationOutcome::Conflict as i32)
                        .map(|(id, _)| id)
                        .collect();
                    self.requeue(&taken, conflicted);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "status batch not committed; retrying");
                    self.requeue(&taken, ids.iter().collect());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Puts reports back unless a newer one arrived meanwhile.
    fn requeue(&self, taken: &Pending, ids: Vec<&String>) {
        if ids.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            if let Some(v) = taken.get(id) {
                pending.entry(id.clone()).or_insert_with(|| v.clone());
            }
        }
        drop(pending);
        self.wake.notify_one();
    }
}
