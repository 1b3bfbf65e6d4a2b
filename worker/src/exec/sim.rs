//! An in-memory [`Executor`] for scale tests and simulations: containers are
//! plain structs, so thousands of pods cost nothing. It never stands in for
//! Docker in a test that claims Docker behaviour.
//!
//! Behaviour by image name (everything else runs until stopped):
//! - `sim/fail`: the image cannot be pulled (`prepare` fails).
//! - `sim/nocreate`: the container cannot be created.
//! - `sim/exit0`, `sim/exit1`: the container exits with 0 / 1 as soon as it
//!   starts.
//!
//! A tag is ignored (`sim/exit1:v2` exits 1). Faults while running are
//! injected with [`SimExecutor::crash`] and [`SimExecutor::delete`].
//! Addresses come from 10.255.0.0/16 and are never dialed.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::{self, BoxFuture, FutureExt};
use futures::stream::{self, BoxStream, StreamExt};
use shoal_proto::{Assignment, HealthState, LogLine};

use super::{
    ContainerState, ContainerStatus, EngineInfo, ExecError, Executor, ListedContainer, PodRef,
};

#[derive(Debug, Clone)]
struct SimContainer {
    pod: PodRef,
    id: String,
    image: String,
    state: ContainerState,
    ip: String,
    log: Vec<String>,
}

/// The in-memory executor of one simulated node. Cloning shares the node.
#[derive(Clone, Default)]
pub struct SimExecutor {
    containers: Arc<Mutex<HashMap<String, SimContainer>>>,
    next_ip: Arc<AtomicU32>,
    next_id: Arc<AtomicU32>,
}

impl SimExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, SimContainer>> {
        // A panic while holding the lock leaves plain data behind: use it.
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a running container exit with `code`, as a crashing process
    /// would. Returns whether the container existed.
    pub fn crash(&self, pod: &PodRef, code: i32) -> bool {
        match self.lock().get_mut(&pod.container_name()) {
            Some(c) => {
                c.state = ContainerState::Exited { code };
                c.ip.clear();
                true
            }
            None => false,
        }
    }

    /// Removes a container behind shoal's back (`docker rm -f`).
    pub fn delete(&self, pod: &PodRef) -> bool {
        self.lock().remove(&pod.container_name()).is_some()
    }

    /// Number of containers on the simulated node, in any state.
    pub fn container_count(&self) -> usize {
        self.lock().len()
    }

    /// The next address in 10.255.0.0/16, skipping .0 and .255 hosts.
    fn allocate_ip(&self) -> String {
        loop {
            let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
            let (x, y) = ((n >> 8) & 0xff, n & 0xff);
            if y != 0 && y != 255 {
                return format!("10.255.{x}.{y}");
            }
        }
    }
}

/// The image name without its tag.
fn image_base(image: &str) -> &str {
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].find([':', '@']) {
        Some(i) => &image[..last_slash + i],
        None => image,
    }
}

fn image_of(assignment: &Assignment) -> String {
    assignment
        .template
        .as_ref()
        .and_then(|t| t.container.as_ref())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

impl Executor for SimExecutor {
    fn prepare<'a>(&'a self, assignment: &'a Assignment) -> BoxFuture<'a, Result<(), ExecError>> {
        let image = image_of(assignment);
        let result = match image_base(&image) {
            "" => Err(ExecError::ImagePull {
                image,
                reason: "the pod's container spec names no image".into(),
            }),
            "sim/fail" => Err(ExecError::ImagePull {
                image,
                reason: "simulated pull failure".into(),
            }),
            _ => Ok(()),
        };
        future::ready(result).boxed()
    }

    fn create<'a>(
        &'a self,
        assignment: &'a Assignment,
    ) -> BoxFuture<'a, Result<String, ExecError>> {
        let pod = PodRef::of(assignment);
        let name = pod.container_name();
        let image = image_of(assignment);
        let result = if image_base(&image) == "sim/nocreate" {
            Err(ExecError::Create {
                container: name,
                reason: "simulated create failure".into(),
            })
        } else {
            match self.lock().entry(name) {
                Entry::Occupied(e) => Err(ExecError::AlreadyExists {
                    container: e.key().clone(),
                }),
                Entry::Vacant(slot) => {
                    let id = format!("sim{:012x}", self.next_id.fetch_add(1, Ordering::Relaxed));
                    slot.insert(SimContainer {
                        pod,
                        id: id.clone(),
                        image,
                        state: ContainerState::Created,
                        ip: String::new(),
                        log: Vec::new(),
                    });
                    Ok(id)
                }
            }
        };
        future::ready(result).boxed()
    }

    fn start<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<(), ExecError>> {
        let name = pod.container_name();
        let ip = self.allocate_ip();
        let result = match self.lock().get_mut(&name) {
            None => Err(ExecError::NotFound { container: name }),
            Some(c) if c.state == ContainerState::Running => Ok(()),
            Some(c) => {
                c.log.push(format!("sim: started {}", c.image));
                c.state = match image_base(&c.image) {
                    "sim/exit0" => ContainerState::Exited { code: 0 },
                    "sim/exit1" => ContainerState::Exited { code: 1 },
                    _ => {
                        c.ip = ip;
                        ContainerState::Running
                    }
                };
                Ok(())
            }
        };
        future::ready(result).boxed()
    }

    fn inspect<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<ContainerStatus, ExecError>> {
        let status = match self.lock().get(&pod.container_name()) {
            None => ContainerStatus::missing(),
            Some(c) => ContainerStatus {
                state: c.state,
                container_id: c.id.clone(),
                health: HealthState::None,
                ip: c.ip.clone(),
                error: String::new(),
            },
        };
        future::ready(Ok(status)).boxed()
    }

    fn stop<'a>(
        &'a self,
        pod: &'a PodRef,
        _grace: Duration,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        if let Some(c) = self.lock().get_mut(&pod.container_name()) {
            if c.state == ContainerState::Running {
                // Killed by the signal, as Docker reports SIGTERM: 128 + 15.
                c.state = ContainerState::Exited { code: 143 };
                c.ip.clear();
            }
        }
        future::ready(Ok(())).boxed()
    }

    fn remove<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<(), ExecError>> {
        self.lock().remove(&pod.container_name());
        future::ready(Ok(())).boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ListedContainer>, ExecError>> {
        let listed = self
            .lock()
            .values()
            .map(|c| ListedContainer {
                pod: c.pod.clone(),
                container_id: c.id.clone(),
                state: c.state,
            })
            .collect();
        future::ready(Ok(listed)).boxed()
    }

    fn logs(
        &self,
        pod: &PodRef,
        _follow: bool,
        tail: Option<u64>,
    ) -> BoxStream<'static, Result<LogLine, ExecError>> {
        let lines = self
            .lock()
            .get(&pod.container_name())
            .map(|c| c.log.clone())
            .unwrap_or_default();
        let skip = tail.map_or(0, |n| {
            lines
                .len()
                .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX))
        });
        let pod = pod.clone();
        stream::iter(lines.into_iter().skip(skip).map(move |line| {
            Ok(LogLine {
                pod_name: pod.pod_name.clone(),
                pod_id: pod.pod_id.clone(),
                stream: "stdout".into(),
                line,
            })
        }))
        .boxed()
    }

    fn engine_info(&self) -> BoxFuture<'_, Result<EngineInfo, ExecError>> {
        future::ready(Ok(EngineInfo {
            version: "sim".into(),
            ncpu: 4,
            memory_bytes: 8 << 30,
        }))
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ContainerSpec, Pod, PodTemplate};

    fn assignment(id: &str, image: &str) -> Assignment {
        Assignment {
            pod: Some(Pod {
                id: id.into(),
                ..Default::default()
            }),
            template: Some(PodTemplate {
                container: Some(ContainerSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            pod_name: "web.1".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_started_container_runs_with_a_sim_address_until_stopped() {
        let sim = SimExecutor::new();
        let a = assignment("p1", "nginx:1");
        let pod = PodRef::of(&a);
        sim.prepare(&a).await.unwrap();
        sim.create(&a).await.unwrap();
        assert!(matches!(
            sim.create(&a).await,
            Err(ExecError::AlreadyExists { .. })
        ));
        sim.start(&pod).await.unwrap();
        let status = sim.inspect(&pod).await.unwrap();
        assert_eq!(status.state, ContainerState::Running);
        assert!(status.ip.starts_with("10.255."), "{}", status.ip);
        sim.stop(&pod, Duration::ZERO).await.unwrap();
        assert!(matches!(
            sim.inspect(&pod).await.unwrap().state,
            ContainerState::Exited { .. }
        ));
        sim.remove(&pod).await.unwrap();
        assert_eq!(sim.container_count(), 0);
    }

    #[tokio::test]
    async fn images_named_for_failures_fail_as_documented() {
        let sim = SimExecutor::new();
        assert!(matches!(
            sim.prepare(&assignment("p", "sim/fail:v1")).await,
            Err(ExecError::ImagePull { .. })
        ));
        assert!(matches!(
            sim.create(&assignment("p", "sim/nocreate")).await,
            Err(ExecError::Create { .. })
        ));
        let a = assignment("p1", "sim/exit1");
        sim.create(&a).await.unwrap();
        sim.start(&PodRef::of(&a)).await.unwrap();
        assert_eq!(
            sim.inspect(&PodRef::of(&a)).await.unwrap().state,
            ContainerState::Exited { code: 1 }
        );
    }

    #[test]
    fn addresses_skip_network_and_broadcast_hosts() {
        let sim = SimExecutor::new();
        let ips: Vec<String> = (0..300).map(|_| sim.allocate_ip()).collect();
        assert_eq!(ips[0], "10.255.0.1");
        assert!(ips
            .iter()
            .all(|ip| !ip.ends_with(".0") && !ip.ends_with(".255")));
        let unique: std::collections::HashSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), ips.len());
    }
}
