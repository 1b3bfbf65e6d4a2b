//! The boundary between shoal and a container runtime.
//!
//! Modelled on SwarmKit's agent/exec: the [`Executor`] trait is deliberately
//! narrow (ensure an image, create, start, inspect, stop, remove, list, logs)
//! so the pod controller can be tested against a fake, and so the same agent
//! runs on Docker ([`docker::DockerExecutor`]) or fully in memory
//! ([`sim::SimExecutor`]) for scale tests.
//!
//! Every pod has exactly one container, named `<pod_name>.<pod_id>`: the name
//! is unique per pod, so creating twice conflicts instead of duplicating, and
//! every operation can address the container without a lookup.

pub mod docker;
pub mod sim;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use shoal_proto::{Assignment, HealthState, LogLine};

/// Identifies one pod's container: the pod id and its display name
/// (`web.1`), from which the container name is derived.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub pod_id: String,
    pub pod_name: String,
}

impl PodRef {
    pub fn new(pod_id: impl Into<String>, pod_name: impl Into<String>) -> Self {
        Self {
            pod_id: pod_id.into(),
            pod_name: pod_name.into(),
        }
    }

    /// The pod an assignment is about.
    pub fn of(assignment: &Assignment) -> Self {
        let pod_id = assignment
            .pod
            .as_ref()
            .map(|p| p.id.clone())
            .unwrap_or_default();
        Self::new(pod_id, assignment.pod_name.clone())
    }

    /// `<pod_name>.<pod_id>`, as `docker ps` shows it (Swarm names its task
    /// containers the same way). A pod without a name is just its id.
    pub fn container_name(&self) -> String {
        if self.pod_name.is_empty() {
            self.pod_id.clone()
        } else {
            format!("{}.{}", self.pod_name, self.pod_id)
        }
    }
}

/// What the runtime says about a pod's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running (paused and restarting count as running: the process exists).
    Running,
    /// The process ended with this exit code.
    Exited { code: i32 },
    /// No such container.
    Missing,
}

/// The observed state of one pod's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub state: ContainerState,
    /// Empty when the container is missing.
    pub container_id: String,
    pub health: HealthState,
    /// The container's address on the pod network; empty when not running.
    pub ip: String,
    /// The runtime's error for the container, e.g. why it failed to start.
    pub error: String,
}

impl ContainerStatus {
    /// The status of a container that does not exist.
    pub fn missing() -> Self {
        Self {
            state: ContainerState::Missing,
            container_id: String::new(),
            health: HealthState::None,
            ip: String::new(),
            error: String::new(),
        }
    }
}

/// One container found on the node, labelled by shoal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedContainer {
    pub pod: PodRef,
    pub container_id: String,
    pub state: ContainerState,
}

/// The runtime's version and capacity, reported when a session opens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineInfo {
    pub version: String,
    pub ncpu: i64,
    pub memory_bytes: i64,
}

/// Everything an executor can fail with. Messages name the operation, the
/// image or container, and the runtime's own reason, because they end up in
/// `shoal service ps` as the pod's error.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("image {image:?} could not be pulled: {reason}")]
    ImagePull { image: String, reason: String },
    #[error("container {container:?} could not be created: {reason}")]
    Create { container: String, reason: String },
    #[error("{kind} {name:?} is external but does not exist on this node: create it first (docker {kind} create {name})")]
    MissingExternal { kind: &'static str, name: String },
    #[error("container {container:?} already exists")]
    AlreadyExists { container: String },
    #[error("no such container {container:?}")]
    NotFound { container: String },
    #[error("{op} {target:?} failed: {reason}")]
    Runtime {
        op: &'static str,
        target: String,
        reason: String,
    },
    #[error("the container engine is unavailable: {reason}")]
    Unavailable { reason: String },
}

/// A container runtime as the pod controller sees it.
///
/// Object-safe (futures are boxed) so the agent holds an `Arc<dyn Executor>`
/// and the daemon picks Docker or the simulator at start-up.
pub trait Executor: Send + Sync + 'static {
    /// Makes the pod's image available: the local one if present, else
    /// pulled. A failed pull is [`ExecError::ImagePull`].
    fn prepare<'a>(&'a self, assignment: &'a Assignment) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Creates (not starts) the pod's container; returns its id.
    fn create<'a>(&'a self, assignment: &'a Assignment)
        -> BoxFuture<'a, Result<String, ExecError>>;

    /// Starts a created container.
    fn start<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Observes the container; a missing container is a state, not an error.
    fn inspect<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<ContainerStatus, ExecError>>;

    /// Stops the container: SIGTERM, then SIGKILL after `grace`. Stopping a
    /// stopped or missing container succeeds.
    fn stop<'a>(&'a self, pod: &'a PodRef, grace: Duration)
        -> BoxFuture<'a, Result<(), ExecError>>;

    /// Removes the container (killing it if it still runs). Removing a
    /// missing container succeeds.
    fn remove<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Every container of this node labelled by shoal, so a restarted worker
    /// adopts its pods and finds the ones no longer wanted.
    fn list(&self) -> BoxFuture<'_, Result<Vec<ListedContainer>, ExecError>>;

    /// The container's output, one [`LogLine`] per line (without the
    /// newline). `tail`: only the last lines; `follow`: keep streaming.
    fn logs(
        &self,
        pod: &PodRef,
        follow: bool,
        tail: Option<u64>,
    ) -> BoxStream<'static, Result<LogLine, ExecError>>;

    /// The engine's version and the node's capacity.
    fn engine_info(&self) -> BoxFuture<'_, Result<EngineInfo, ExecError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_name_is_pod_name_dot_pod_id() {
        assert_eq!(PodRef::new("abc", "web.1").container_name(), "web.1.abc");
        assert_eq!(PodRef::new("abc", "").container_name(), "abc");
    }
}
