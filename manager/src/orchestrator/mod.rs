//! Orchestrators: deployments -> pods. The replicated orchestrator keeps one
//! live pod per slot and restarts failed ones by the restart policy.

pub mod replicated;
pub mod restart;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::controller::{run_controller, Pass};
use crate::proposer::Proposer;
use crate::store::Store;

/// Runs the replicated orchestrator until `cancel` fires.
pub async fn run(store: Arc<Store>, proposer: Arc<dyn Proposer>, cancel: CancellationToken) {
    run_controller("orchestrator", store, proposer, cancel, |data, now| Pass {
        mutations: replicated::reconcile(data, now).mutations,
        wake_at: None,
    })
    .await
}

#[cfg(test)]
mod tests;
