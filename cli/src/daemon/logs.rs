//! Feeds `service logs` from the local Docker Engine: the manager asks for a
//! pod's lines through its LogSource trait; this adapts the worker's
//! executor to it.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_manager::controlapi::LogSource;
use shoal_proto::LogLine;
use shoal_worker::exec::{Executor, PodRef};

pub struct DockerLogs(pub Arc<dyn Executor>);

impl LogSource for DockerLogs {
    fn pod_logs(
        &self,
        pod_id: &str,
        pod_name: &str,
        follow: bool,
        tail: i64,
    ) -> BoxStream<'static, Result<LogLine, String>> {
        let tail = (tail > 0).then_some(tail as u64);
        self.0
            .logs(&PodRef::new(pod_id, pod_name), follow, tail)
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed()
    }
}
