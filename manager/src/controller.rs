//! The loop every leader-side controller runs: read the store, compute the
//! mutations that close the gap between desired and actual, propose them,
//! and sleep until the store changes or a deadline (a restart delay) passes.
//! Controllers stay pure functions of the store, which is what their unit
//! tests exercise; this loop is the only place they touch Raft.

use std::sync::Arc;
use std::time::Duration;

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

/// Runs `pass` until `cancel` fires (leadership lost, or shutdown).
pub async fn run_controller<F>(
    name: &'static str,
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    cancel: CancellationToken,
    mut pass: F,
) where
    F: FnMut(&StoreData, i64) -> Pass + Send,
{
    let mut changes = store.subscribe();
    tracing::info!(controller = name, "started");
    loop {
        changes.borrow_and_update();
        let now = now_ms();
        let Pass { mutations, wake_at } = store.read(|d| pass(d, now));
        if !mutations.is_empty() {
            let n = mutations.len();
            match proposer.propose(batch(mutations, false)).await {
                Ok(result) if all_applied(&result) => {
                    tracing::debug!(controller = name, mutations = n, "applied");
                    continue;
                }
                Ok(_) => tracing::debug!(controller = name, "some mutations conflicted; retrying"),
                Err(e) => tracing::warn!(controller = name, error = %e, "proposal failed"),
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
