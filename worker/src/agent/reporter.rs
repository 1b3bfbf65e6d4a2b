//! Sends pod status changes to the dispatcher: what changed within a short
//! window goes out as one `UpdatePodStatus` call (the dispatcher batches
//! into Raft, which caps proposals per second), and a failed call is
//! retried with the newest status of each pod.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::{PodStatus, PodStatusUpdate, UpdatePodStatusRequest};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, warn};

use super::backoff::Backoff;
use super::pods::Report;

/// Changes gathered before a call, so one reconcile pass makes one call.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// The live session the reports go through.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    pub client: DispatcherClient<Channel>,
    pub session_id: String,
}

pub(crate) async fn run(
    node_id: String,
    mut changes: mpsc::UnboundedReceiver<Report>,
    mut session: watch::Receiver<Option<SessionHandle>>,
    shutdown: CancellationToken,
) {
    let mut pending: BTreeMap<String, PodStatus> = BTreeMap::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                change = changes.recv() => match change {
                    Some((id, status)) => { pending.insert(id, status); }
                    None => return,
                },
            }
            tokio::time::sleep(BATCH_WINDOW).await;
        }
        while let Ok((id, status)) = changes.try_recv() {
            pending.insert(id, status);
        }
        let Some(handle) = session.borrow_and_update().clone() else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = session.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let request = UpdatePodStatusRequest {
            node_id: node_id.clone(),
            session_id: handle.session_id.clone(),
            updates: pending
                .iter()
                .map(|(id, status)| PodStatusUpdate {
                    pod_id: id.clone(),
                    status: Some(status.clone()),
                })
                .collect(),
        };
        let mut client = handle.client.clone();
        match client.update_pod_status(request).await {
            Ok(_) => {
                debug!(updates = pending.len(), "reported pod status");
                pending.clear();
                backoff.reset();
            }
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), pending = pending.len(), "reporting pod status failed; will retry");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    // A new session: retry through it at once.
                    changed = session.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}
