//! [`Executor`] on the local Docker Engine, through bollard.
//!
//! The engine may be old (20.10, API 1.41), so the client negotiates the API
//! version at connect time and only uses requests 1.41 understands (one
//! network at create time, the others connected before start).

mod files;
mod logs;
pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerStateStatusEnum, ContainerSummaryStateEnum, HealthStatusEnum, NetworkConnectRequest,
    NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    InspectNetworkOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;
use shoal_proto::defaults::labels;
use shoal_proto::{Assignment, HealthState, LogLine};
use tracing::{debug, info};

use super::{
    ContainerState, ContainerStatus, EngineInfo, ExecError, Executor, ListedContainer, PodRef,
};

/// On every network shoal creates; only those are ever removed by shoal.
const NETWORK_LABEL: &str = "io.shoal.network";

/// The Docker bridge network pods attach to unless their template names
/// others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub name: String,
    /// Created with `--internal` (no route out of the host); tests always
    /// set it, so a wrong address can never leave the machine.
    pub internal: bool,
}

impl PodNetwork {
    /// Whether this is Docker's default bridge, which shoal uses as it is
    /// (it cannot create, label or make it internal).
    pub fn is_docker_default(&self) -> bool {
        self.name == spec::DOCKER_DEFAULT_BRIDGE
    }

    /// Refuses a pod network the node cannot run pods on.
    pub fn check(&self) -> Result<(), PodNetworkError> {
        match self.name.as_str() {
            "" => Err(PodNetworkError::Unnamed),
            "host" | "none" => Err(PodNetworkError::NotABridge(self.name.clone())),
            _ if self.internal && self.is_docker_default() => {
                Err(PodNetworkError::InternalDefaultBridge)
            }
            _ => Ok(()),
        }
    }
}

/// A pod network no pod could run on, in the words of the flags that chose it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodNetworkError {
    #[error("--pod-network must name a network")]
    Unnamed,
    #[error(
        "--pod-network {0}: pods need a bridge network: give {bridge} (Docker's default bridge, \
         as Swarm uses for services without networks) or the name of a network for shoal to \
         create (default {default})",
        bridge = spec::DOCKER_DEFAULT_BRIDGE,
        default = shoal_proto::defaults::POD_NETWORK
    )]
    NotABridge(String),
    #[error(
        "--pod-network-internal cannot apply to Docker's default bridge ({bridge}): name \
         another pod network for shoal to create with --internal",
        bridge = spec::DOCKER_DEFAULT_BRIDGE
    )]
    InternalDefaultBridge,
}

impl Default for PodNetwork {
    fn default() -> Self {
        Self {
            name: shoal_proto::defaults::POD_NETWORK.to_string(),
            internal: false,
        }
    }
}

/// Runs pods as Docker containers on this node.
#[derive(Clone)]
pub struct DockerExecutor {
    docker: Docker,
    node_id: String,
    network: PodNetwork,
    /// Networks known to exist. Behind a lock because Docker lets two
    /// concurrent creates make two networks of one name (then every use of
    /// the name fails as ambiguous): one creation at a time. Known networks
    /// cost pods nothing: no API call, no waiting on each other.
    known_networks: std::sync::Arc<tokio::sync::Mutex<std::collections::HashSet<String>>>,
    /// Held shared from making sure a pod's networks exist until its
    /// container is attached to them, and exclusively while unused stack
    /// networks are removed, so a removal never pulls a network from under
    /// a container being created.
    network_use: std::sync::Arc<tokio::sync::RwLock<()>>,
    /// Pods' secret and config files, on a tmpfs.
    files: files::PodFiles,
}

impl DockerExecutor {
    /// Connects to the local engine (`DOCKER_HOST` if it names a Unix
    /// socket, else /var/run/docker.sock), negotiates the API version and
    /// makes sure the pod network exists, and removes the secret and config
    /// files of pods that have no container any more.
    pub async fn new(node_id: impl Into<String>, network: PodNetwork) -> Result<Self, ExecError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(unavailable)?
            .negotiate_version()
            .await
            .map_err(unavailable)?;
        let node_id = node_id.into();
        let exec = Self {
            docker,
            files: files::PodFiles::new(shoal_proto::defaults::POD_FILES_DIR, &node_id),
            node_id,
            network,
            known_networks: Default::default(),
            network_use: Default::default(),
        };
        exec.ensure_network(&exec.network.name).await?;
        let live = exec.do_list().await?;
        exec.files
            .remove_stale(&live.into_iter().map(|c| c.pod.pod_id).collect());
        Ok(exec)
    }

    /// The bollard client, for callers that need more of the engine (tests,
    /// the node's network setup).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Creates the bridge network `name` unless it exists. Networks other
    /// than the pod network (a stack's) get the pod network's `internal`
    /// setting, so tests stay isolated.
    async fn ensure_network(&self, name: &str) -> Result<(), ExecError> {
        let mut known = self.known_networks.lock().await;
        if known.contains(name) {
            return Ok(());
        }
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(_) => {
                known.insert(name.to_string());
                return Ok(());
            }
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(runtime("inspect network", name, e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            internal: Some(self.network.internal),
            attachable: Some(true),
            labels: Some(HashMap::from([(
                NETWORK_LABEL.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {
                info!(
                    network = name,
                    internal = self.network.internal,
                    "created pod network"
                );
            }
            // Another caller created it in between: that is what we wanted.
            Err(e) if status_code(&e) == Some(409) => {}
            Err(e) => return Err(runtime("create network", name, e)),
        }
        known.insert(name.to_string());
        Ok(())
    }

    /// Forgets which networks exist, so the next pod checks with the engine
    /// (after a create failed, e.g. because someone removed a network).
    async fn forget_networks(&self) {
        self.known_networks.lock().await.clear();
    }

    /// The networks a container is attached to, other than the pod network
    /// (empty when it cannot be inspected: pruning is best effort).
    async fn networks_of(&self, container: &str) -> Vec<String> {
        let Ok(info) = self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
        else {
            return vec![];
        };
        info.network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().filter(|k| *k != self.network.name).collect())
            .unwrap_or_default()
    }

    /// Removes those of `candidates` that shoal created and no container
    /// uses any more: a stack's networks go with its last pod on the node,
    /// as Swarm's do. External networks (not created by shoal) stay.
    async fn prune_networks(&self, candidates: Vec<String>) {
        if candidates.is_empty() {
            return;
        }
        let _exclusive = self.network_use.write().await;
        for name in candidates {
            let Ok(net) = self
                .docker
                .inspect_network(&name, None::<InspectNetworkOptions>)
                .await
            else {
                continue;
            };
            let ours = net
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(NETWORK_LABEL));
            let unused = net.containers.as_ref().is_none_or(|c| c.is_empty());
            if !ours || !unused {
                continue;
            }
            match self.docker.remove_network(&name).await {
                Ok(()) => {
                    self.known_networks.lock().await.remove(&name);
                    info!(network = %name, "removed unused stack network")
                }
                Err(e) => {
                    debug!(network = %name, error = %docker_message(&e), "network not removed")
                }
            }
        }
    }

    /// Checks that an external network exists: shoal never creates those.
    async fn require_network(&self, name: &str) -> Result<(), ExecError> {
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(ExecError::MissingExternal {
                kind: "network",
                name: name.to_string(),
            }),
            Err(e) => Err(runtime("inspect network", name, e)),
        }
    }

    /// Checks that an external volume exists: Docker would otherwise create
    /// an empty one silently.
    async fn require_volume(&self, name: &str) -> Result<(), ExecError> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(ExecError::MissingExternal {
                kind: "volume",
                name: name.to_string(),
            }),
            Err(e) => Err(runtime("inspect volume", name, e)),
        }
    }

    /// Whether the image is already in the engine's store.
    async fn image_present(&self, image: &str) -> Result<bool, ExecError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(runtime("inspect image", image, e)),
        }
    }

    async fn pull(&self, image: &str) -> Result<(), ExecError> {
        let (from_image, tag) = split_image_ref(image);
        let options = CreateImageOptionsBuilder::default()
            .from_image(&from_image)
            .tag(&tag)
            .build();
        info!(image, "pulling image");
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                return Err(ExecError::ImagePull {
                    image: image.to_string(),
                    reason: docker_message(&e),
                });
            }
        }
        info!(image, "pulled image");
        Ok(())
    }

    async fn do_prepare(&self, assignment: &Assignment) -> Result<(), ExecError> {
        let image = image_of(assignment);
        if image.is_empty() {
            return Err(ExecError::ImagePull {
                image,
                reason: "the pod's container spec names no image".into(),
            });
        }
        // Networks shoal owns are made sure of at create, under the lock
        // that keeps pruning away; external ones must exist already.
        let template = assignment.template.clone().unwrap_or_default();
        for network in &template.external_networks {
            self.require_network(network).await?;
        }
        for volume in spec::external_volumes(&template) {
            self.require_volume(volume).await?;
        }
        if self.image_present(&image).await? {
            debug!(image, "image present locally");
            return Ok(());
        }
        self.pull(&image).await
    }

    async fn do_create(&self, assignment: &Assignment) -> Result<String, ExecError> {
        let pod = PodRef::of(assignment);
        let name = pod.container_name();
        let template = assignment.template.clone().unwrap_or_default();
        let networks = spec::pod_networks(&template, &self.network.name);
        let _networks_stay = self.network_use.read().await;
        for network in networks
            .iter()
            .filter(|n| !template.external_networks.contains(n))
        {
            self.ensure_network(network).await?;
        }
        let mut body = spec::create_body(assignment, &self.node_id, &networks);
        let file_mounts = self.files.write(assignment).inspect_err(|_| {
            self.files.remove(&pod.pod_id);
        })?;
        if !file_mounts.is_empty() {
            let host = body.host_config.get_or_insert_with(Default::default);
            host.mounts.get_or_insert_with(Vec::new).extend(file_mounts);
        }
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created,
            // The pod's container exists (and uses the files): keep them.
            Err(e) if status_code(&e) == Some(409) => {
                return Err(ExecError::AlreadyExists { container: name });
            }
            Err(e) => {
                self.files.remove(&pod.pod_id);
                // A network removed behind shoal's back: look again next time.
                self.forget_networks().await;
                return Err(ExecError::Create {
                    container: name,
                    reason: docker_message(&e),
                });
            }
        };
        // API 1.41 attaches one network at create time; the rest now.
        for network in networks.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: name.clone(),
                endpoint_config: Some(spec::endpoint_settings(assignment, network)),
            };
            if let Err(e) = self.docker.connect_network(network, request).await {
                self.forget_networks().await;
                return Err(ExecError::Create {
                    container: name.clone(),
                    reason: format!("attaching network {network:?}: {}", docker_message(&e)),
                });
            }
        }
        info!(container = %name, id = %created.id, "created container");
        Ok(created.id)
    }

    async fn do_inspect(&self, pod: &PodRef) -> Result<ContainerStatus, ExecError> {
        let name = pod.container_name();
        let info = match self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(e) if status_code(&e) == Some(404) => return Ok(ContainerStatus::missing()),
            Err(e) => return Err(runtime("inspect container", &name, e)),
        };
        let state = info.state.unwrap_or_default();
        let exit_code = state
            .exit_code
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1);
        let container_state = match state.status {
            Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
            Some(
                ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::RESTARTING,
            ) => ContainerState::Running,
            Some(
                ContainerStateStatusEnum::EXITED
                | ContainerStateStatusEnum::DEAD
                | ContainerStateStatusEnum::REMOVING,
            ) => ContainerState::Exited { code: exit_code },
            // An engine that reports nothing useful: trust `running`.
            _ if state.running == Some(true) => ContainerState::Running,
            _ => ContainerState::Created,
        };
        let health = match state.health.and_then(|h| h.status) {
            Some(HealthStatusEnum::STARTING) => HealthState::Starting,
            Some(HealthStatusEnum::HEALTHY) => HealthState::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => HealthState::Unhealthy,
            _ => HealthState::None,
        };
        let ip = if container_state == ContainerState::Running {
            self.ip_of(info.network_settings.and_then(|n| n.networks))
        } else {
            String::new()
        };
        Ok(ContainerStatus {
            state: container_state,
            container_id: info.id.unwrap_or_default(),
            health,
            ip,
            error: state.error.unwrap_or_default(),
        })
    }

    /// The container's address on the pod network, else on any network.
    fn ip_of(
        &self,
        networks: Option<HashMap<String, bollard::models::EndpointSettings>>,
    ) -> String {
        let networks = networks.unwrap_or_default();
        let ip = |n: &bollard::models::EndpointSettings| {
            n.ip_address.clone().filter(|ip| !ip.is_empty())
        };
        networks
            .get(&self.network.name)
            .and_then(ip)
            .or_else(|| {
                let mut names: Vec<&String> = networks.keys().collect();
                names.sort();
                names.into_iter().find_map(|k| ip(&networks[k]))
            })
            .unwrap_or_default()
    }

    async fn do_stop(&self, pod: &PodRef, grace: Duration) -> Result<(), ExecError> {
        let name = pod.container_name();
        let seconds = spec::grace_seconds(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
        let options = StopContainerOptionsBuilder::default()
            .t(i32::try_from(seconds).unwrap_or(i32::MAX))
            .build();
        match self.docker.stop_container(&name, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: gone. Both are what stop wants.
            Err(e) if matches!(status_code(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(runtime("stop container", &name, e)),
        }
    }

    async fn do_remove(&self, pod: &PodRef) -> Result<(), ExecError> {
        let name = pod.container_name();
        let networks = self.networks_of(&name).await;
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(&name, Some(options)).await {
            Ok(()) => {
                info!(container = %name, "removed container");
                self.prune_networks(networks).await;
                self.files.remove(&pod.pod_id);
                Ok(())
            }
            Err(e) if status_code(&e) == Some(404) => {
                self.files.remove(&pod.pod_id);
                Ok(())
            }
            // 409 "removal already in progress": it is going away (its
            // files go at the next removal or worker start).
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(runtime("remove container", &name, e)),
        }
    }

    async fn do_list(&self) -> Result<Vec<ListedContainer>, ExecError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                labels::POD_ID.to_string(),
                format!("{}={}", labels::NODE_ID, self.node_id),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| runtime("list containers", &self.node_id, e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let pod_id = labels.get(labels::POD_ID)?.clone();
                let name = c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                let pod_name = pod_name_from(&name, &pod_id)
                    .or_else(|| labels.get(labels::POD_NAME).cloned())
                    .unwrap_or_default();
                let state = match c.state {
                    Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
                    Some(
                        ContainerSummaryStateEnum::RUNNING
                        | ContainerSummaryStateEnum::PAUSED
                        | ContainerSummaryStateEnum::RESTARTING,
                    ) => ContainerState::Running,
                    // The summary carries no exit code; inspect has it.
                    _ => ContainerState::Exited { code: -1 },
                };
                Some(ListedContainer {
                    pod: PodRef::new(pod_id, pod_name),
                    container_id: c.id.unwrap_or_default(),
                    state,
                })
            })
            .collect())
    }

    async fn do_engine_info(&self) -> Result<EngineInfo, ExecError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| runtime("info", "engine", e))?;
        Ok(EngineInfo {
            version: info.server_version.unwrap_or_default(),
            ncpu: info.ncpu.unwrap_or(0),
            memory_bytes: info.mem_total.unwrap_or(0),
        })
    }
}

impl Executor for DockerExecutor {
    fn prepare<'a>(&'a self, assignment: &'a Assignment) -> BoxFuture<'a, Result<(), ExecError>> {
        self.do_prepare(assignment).boxed()
    }

    fn create<'a>(
        &'a self,
        assignment: &'a Assignment,
    ) -> BoxFuture<'a, Result<String, ExecError>> {
        self.do_create(assignment).boxed()
    }

    fn start<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<(), ExecError>> {
        async move {
            let name = pod.container_name();
            match self.docker.start_container(&name, None).await {
                Ok(()) => Ok(()),
                Err(e) if status_code(&e) == Some(304) => Ok(()),
                Err(e) if status_code(&e) == Some(404) => {
                    Err(ExecError::NotFound { container: name })
                }
                Err(e) => Err(ExecError::Runtime {
                    op: "start container",
                    target: name,
                    reason: docker_message(&e),
                }),
            }
        }
        .boxed()
    }

    fn inspect<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<ContainerStatus, ExecError>> {
        self.do_inspect(pod).boxed()
    }

    fn stop<'a>(
        &'a self,
        pod: &'a PodRef,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        self.do_stop(pod, grace).boxed()
    }

    fn remove<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<(), ExecError>> {
        self.do_remove(pod).boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ListedContainer>, ExecError>> {
        self.do_list().boxed()
    }

    fn logs(
        &self,
        pod: &PodRef,
        follow: bool,
        tail: Option<u64>,
    ) -> BoxStream<'static, Result<LogLine, ExecError>> {
        let tail = tail.map_or_else(|| "all".to_string(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let frames = self
            .docker
            .logs(&pod.container_name(), Some(options))
            .boxed();
        logs::into_lines(frames, pod.clone())
    }

    fn engine_info(&self) -> BoxFuture<'_, Result<EngineInfo, ExecError>> {
        self.do_engine_info().boxed()
    }
}

/// The image an assignment runs.
fn image_of(assignment: &Assignment) -> String {
    assignment
        .template
        .as_ref()
        .and_then(|t| t.container.as_ref())
        .map(|c| c.image.trim().to_string())
        .unwrap_or_default()
}

/// Splits `repo[:tag]` / `repo@digest` for the pull API, which pulls every
/// tag of a repository when given none: an untagged image means `latest`.
fn split_image_ref(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (image[..at].to_string(), image[at + 1..].to_string())
        }
        None => (image.to_string(), "latest".to_string()),
    }
}

/// The pod name within a container name `<pod_name>.<pod_id>`.
fn pod_name_from(container_name: &str, pod_id: &str) -> Option<String> {
    container_name
        .strip_suffix(pod_id)
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|name| !name.is_empty())
        .map(str::to_string)
}

fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker's own message, without bollard's "responded with status code"
/// wrapping, because users read it in `service ps`.
fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn runtime(op: &'static str, target: &str, e: DockerError) -> ExecError {
    if matches!(
        e,
        DockerError::IOError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_)
    ) {
        // Not an answer from the engine: it could not be reached at all.
        return unavailable(e);
    }
    ExecError::Runtime {
        op,
        target: target.to_string(),
        reason: docker_message(&e),
    }
}

fn unavailable(e: DockerError) -> ExecError {
    ExecError::Unavailable {
        reason: format!("{e} (is the Docker daemon running, and may this user use its socket?)"),
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn image_refs_split_into_repo_and_tag() {
        let s = |i| split_image_ref(i);
        assert_eq!(s("redis"), ("redis".into(), "latest".into()));
        assert_eq!(s("redis:7"), ("redis".into(), "7".into()));
        assert_eq!(
            s("localhost:5000/a/b"),
            ("localhost:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            s("localhost:5000/a/b:v2"),
            ("localhost:5000/a/b".into(), "v2".into())
        );
        assert_eq!(s("a@sha256:00"), ("a".into(), "sha256:00".into()));
    }

    #[test]
    fn pod_name_is_recovered_from_the_container_name() {
        assert_eq!(pod_name_from("web.1.abc", "abc").as_deref(), Some("web.1"));
        assert_eq!(pod_name_from("other", "abc"), None);
    }
}
