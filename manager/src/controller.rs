//! The loop every leader-side controller runs: read the store, compute the
//! mutations that close the gap between desired and actual, propose them,
//! and sleep until the store changes or a deadline (a restart delay) passes.
//! Controllers stay pure functions of the store, which is what their unit
//! tests exercise; this loop is the only place they touch Raft.
//!
//! A pass reads every pod, so at 100,000 pods it is tens of milliseconds of
//! CPU under the store's read lock. Three rules keep that from starving the
//! rest of the manager (Raft's heartbeats and apply, the worker sessions):
//! - the pass runs on a blocking thread, never on the async runtime's few
//!   worker threads ([`tokio::task::spawn_blocking`]), as a long read
//!   ([`Store::read_long`]) that Raft's apply waits for without queueing on
//!   the lock, so other readers are never held back behind it;
//! - after a pass, the next one waits at least as long as it took, so a
//!   controller woken by every applied entry holds the lock (and a core)
//!   at most half the time, and Raft's apply, which needs the write lock,
//!   gets its turn;
//! - a pass proposes its mutations in proposals of at most
//!   [`MAX_WRITES_PER_PROPOSAL`], each committed before the next is made,
//!   and at most [`MAX_WRITES_PER_PASS`] in all; the next pass, which sees
//!   them applied, computes the rest (controllers are level-triggered).
//!   100,000 pod creations in one proposal were 200 Raft entries appended,
//!   replicated and applied back to back on every manager, with no
//!   heartbeat between them; one proposal per pass, on the other hand, made
//!   a scale-up cost a pass over every pod per 5,000 pods (at 100,000 pods
//!   the pass, not Raft, set the pace). The mutations of later proposals
//!   were computed before the earlier ones applied: each is written at the
//!   version read (a conflict fails it alone, and the next pass looks
//!   again), and a created pod is new.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_proto::{now_ms, Mutation};
use tokio_util::sync::CancellationToken;

use crate::proposer::{all_applied, batch, Proposer};
use crate::store::{Store, StoreData};

/// One pass's wishes: mutations to propose now, and when to look again even
/// if nothing changes (Unix ms).
#[derive(Debug, Default)]
pub struct Pass {
    pub mutations: Vec<Mutation>,
    pub wake_at: Option<i64>,
}

/// Longest sleep without a change: a safety net against lost wake-ups.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Pause after a proposal that did not fully apply, so a persistent conflict
/// cannot spin.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(50);
/// Most mutations in one proposal (see the module doc): twenty Raft
/// entries of [`crate::raft::MAX_MUTATIONS_PER_ENTRY`], which reach the
/// followers in AppendEntries of at most 1 MiB (`raft::network`). At
/// 5,000 nodes, proposals of 10,000 placed 100,000 pods at 5,973 a second
/// against 4,634 for proposals of 5,000 (docs/BENCHMARKS.md, 2026-12-03
/// evening): each commit has a cost of its own (round trips, fsyncs, and an
/// apply that waits for the passes' long reads), paid half as often.
pub const MAX_WRITES_PER_PROPOSAL: usize = 10_000;
/// Most proposals one pass makes, one after the other.
pub const MAX_PROPOSALS_PER_PASS: usize = 2;
/// Most mutations one pass proposes: enough that a pass over 100,000 pods
/// places 20,000 of them.
pub const MAX_WRITES_PER_PASS: usize = MAX_WRITES_PER_PROPOSAL * MAX_PROPOSALS_PER_PASS;
/// Passes longer than this are logged (at debug level otherwise).
const SLOW_PASS: Duration = Duration::from_millis(50);

/// Runs `pass` until `cancel` fires (leadership lost, or shutdown).
pub async fn run_controller<F>(
    name: &'static str,
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    cancel: CancellationToken,
    pass: F,
) where
    F: FnMut(&StoreData, i64) -> Pass + Send + 'static,
{
    let mut changes = store.subscribe();
    let mut pass = Some(pass);
    // When the next pass may start: the last one's end plus its length
    // (module doc).
    let mut next_pass_at = tokio::time::Instant::now();
    tracing::info!(controller = name, "started");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(next_pass_at) => {}
        }
        changes.borrow_and_update();
        let now = now_ms();
        let Some(outcome) = run_pass(name, &store, &mut pass, now).await else {
            break;
        };
        let PassOutcome {
            wishes: Pass {
                mut mutations,
                wake_at,
            },
            took,
        } = outcome;
        next_pass_at = tokio::time::Instant::now() + took;
        if !mutations.is_empty() {
            let more = mutations.len() > MAX_WRITES_PER_PASS;
            mutations.truncate(MAX_WRITES_PER_PASS);
            if propose_in_turn(name, proposer.as_ref(), &cancel, mutations, more).await {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(CONFLICT_BACKOFF) => continue,
            }
        }
        let sleep = wake_at
            .map(|t| Duration::from_millis((t - now).max(1) as u64))
            .unwrap_or(IDLE_TICK)
            .min(IDLE_TICK);
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = changes.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    tracing::info!(controller = name, "stopped");
}

/// Proposes `mutations` in proposals of at most [`MAX_WRITES_PER_PROPOSAL`],
/// each once the one before applied; whether every mutation applied (false
/// at the first conflict or failure, or when `cancel` fires: the rest is
/// left to the next pass).
async fn propose_in_turn(
    name: &'static str,
    proposer: &dyn Proposer,
    cancel: &CancellationToken,
    mut mutations: Vec<Mutation>,
    more: bool,
) -> bool {
    while !mutations.is_empty() {
        if cancel.is_cancelled() {
            return false;
        }
        let rest = mutations.split_off(mutations.len().min(MAX_WRITES_PER_PROPOSAL));
        let n = mutations.len();
        match proposer.propose(batch(mutations, false)).await {
            Ok(result) if all_applied(&result) => {
                tracing::debug!(
                    controller = name,
                    mutations = n,
                    left = rest.len(),
                    more,
                    "applied"
                );
            }
            Ok(_) => {
                tracing::debug!(controller = name, "some mutations conflicted; retrying");
                return false;
            }
            Err(e) => {
                tracing::warn!(controller = name, error = %e, "proposal failed");
                return false;
            }
        }
        mutations = rest;
    }
    true
}

/// A pass's wishes and how long computing them took.
struct PassOutcome {
    wishes: Pass,
    took: Duration,
}

/// Runs one pass on a blocking thread (module doc). `pass` travels to the
/// thread and back; None when the pass panicked (the controller stops, as
/// a panic on the runtime would have stopped it).
async fn run_pass<F>(
    name: &'static str,
    store: &Arc<Store>,
    pass: &mut Option<F>,
    now: i64,
) -> Option<PassOutcome>
where
    F: FnMut(&StoreData, i64) -> Pass + Send + 'static,
{
    let mut f = pass.take()?;
    let store = store.clone();
    let job = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let wishes = store.read_long(|d| f(d, now));
        (f, wishes, started.elapsed())
    });
    match job.await {
        Ok((f, wishes, took)) => {
            *pass = Some(f);
            if took >= SLOW_PASS {
                tracing::info!(
                    controller = name,
                    ?took,
                    mutations = wishes.mutations.len(),
                    "slow pass"
                );
            } else {
                tracing::debug!(
                    controller = name,
                    ?took,
                    mutations = wishes.mutations.len(),
                    "pass"
                );
            }
            Some(PassOutcome { wishes, took })
        }
        Err(e) => {
            tracing::error!(controller = name, error = %e, "pass failed; controller stopped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use shoal_proto::{Batch, BatchResult, Node};

    use super::*;
    use crate::proposer::LocalProposer;
    use crate::raft::ProposeError;
    use crate::store::put;

    /// A [`LocalProposer`] that records the size of every batch.
    struct Recording {
        inner: Arc<LocalProposer>,
        sizes: Mutex<Vec<usize>>,
    }

    impl Proposer for Recording {
        fn propose(&self, batch: Batch) -> BoxFuture<'_, Result<BatchResult, ProposeError>> {
            self.sizes.lock().unwrap().push(batch.mutations.len());
            self.inner.propose(batch)
        }
    }

    #[tokio::test]
    async fn a_pass_proposes_bounded_batches_in_turn_and_the_next_pass_the_rest() {
        let store = Store::new();
        let proposer = Arc::new(Recording {
            inner: LocalProposer::new(store.clone()),
            sizes: Mutex::new(Vec::new()),
        });
        let wanted = MAX_WRITES_PER_PASS + MAX_WRITES_PER_PROPOSAL + 3;
        let cancel = CancellationToken::new();
        // Wants one node object per number below `wanted`.
        let pass = move |d: &StoreData, _now: i64| Pass {
            mutations: (0..wanted)
                .map(|i| format!("n-{i}"))
                .filter(|id| !d.nodes.contains_key(id))
                .map(|id| {
                    put(
                        Node {
                            id,
                            ..Default::default()
                        },
                        0,
                    )
                })
                .collect(),
            wake_at: None,
        };
        let task = tokio::spawn(run_controller(
            "test",
            store.clone(),
            proposer.clone(),
            cancel.clone(),
            pass,
        ));
        let mut changes = store.subscribe();
        while store.read(|d| d.nodes.len()) < wanted {
            changes.changed().await.unwrap();
        }
        cancel.cancel();
        task.await.unwrap();
        let sizes = proposer.sizes.lock().unwrap().clone();
        let mut expected = vec![MAX_WRITES_PER_PROPOSAL; MAX_PROPOSALS_PER_PASS + 1];
        expected.push(3);
        assert_eq!(sizes, expected);
    }
}
