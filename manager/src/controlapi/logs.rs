//! `service logs`: merges the output of every pod of a service into one
//! stream, each line tagged with its pod's name; with follow, pods started
//! later are attached as they appear. Where the lines come from (the local
//! Docker Engine) is injected as a [`LogSource`], so the manager does not
//! depend on the worker.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use shoal_proto::LogLine;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::objects::pod_name;
use crate::store::Store;

pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, Status>> + Send>>;

/// Reads one pod's container output on this node.
pub trait LogSource: Send + Sync + 'static {
    /// `pod_name` is the display name (`web.1`) the container was named after.
    fn pod_logs(
        &self,
        pod_id: &str,
        pod_name: &str,
        follow: bool,
        tail: i64,
    ) -> BoxStream<'static, Result<LogLine, String>>;
}

/// How often a following stream looks for new pods.
const FOLLOW_POLL: Duration = Duration::from_millis(300);

/// Pods of the deployment that have (or had) a container, with their names.
fn pods_with_containers(store: &Store, deployment_id: &str) -> Vec<(String, String)> {
    store.read(|d| {
        let service = d
            .deployments
            .get(deployment_id)
            .and_then(|x| x.spec.as_ref())
            .map_or_else(|| deployment_id.to_string(), |s| s.name.clone());
        d.pods_of_deployment(deployment_id)
            .filter(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| !s.container_id.is_empty())
            })
            .map(|p| (p.id.clone(), pod_name(&service, p)))
            .collect()
    })
}

pub fn stream_service_logs(
    store: Arc<Store>,
    source: Arc<dyn LogSource>,
    deployment_id: String,
    follow: bool,
    tail: i64,
) -> LogStream {
    let (tx, rx) = mpsc::channel::<Result<LogLine, Status>>(256);
    tokio::spawn(async move {
        let mut attached: HashSet<String> = HashSet::new();
        let mut readers = JoinSet::new();
        loop {
            for (pod_id, name) in pods_with_containers(&store, &deployment_id) {
                if !attached.insert(pod_id.clone()) {
                    continue;
                }
                let mut lines = source.pod_logs(&pod_id, &name, follow, tail);
                let tx = tx.clone();
                readers.spawn(async move {
                    while let Some(item) = lines.next().await {
                        let item = item
                            .map(|mut l| {
                                l.pod_name = name.clone();
                                l.pod_id = pod_id.clone();
                                l
                            })
                            .map_err(|e| Status::unavailable(format!("logs of {name}: {e}")));
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                });
            }
            if !follow {
                while readers.join_next().await.is_some() {}
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
            if !store.read(|d| d.deployments.contains_key(&deployment_id)) {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
