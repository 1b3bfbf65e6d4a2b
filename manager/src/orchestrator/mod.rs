//! Orchestrators: deployments -> pods. The replicated orchestrator keeps one
//! live pod per slot and restarts failed ones by the restart policy.

pub mod layout;
pub mod placement;
pub mod replicated;
pub mod restart;
pub mod updater;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::controller::{run_controller, Pass};
use crate::proposer::Proposer;
use crate::store::Store;

/// Runs the replicated orchestrator until `cancel` fires.
pub async fn run(store: Arc<Store>, proposer: Arc<dyn Proposer>, cancel: CancellationToken) {
    run_controller("orchestrator", store, proposer, cancel, |data, now| {
        let r = replicated::reconcile(data, now);
        Pass {
            mutations: r.mutations,
            wake_at: r.wake_at,
        }
    })
    .await
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod updater_tests;
