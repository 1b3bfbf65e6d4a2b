//! One pod's lifecycle on this node, advanced ONE step per call.
//!
//! The shape of SwarmKit's agent/exec/controller.go: [`PodController::step`]
//! looks at the pod's reported state, its desired state and the observed
//! container, does at most one executor action and returns. Each transition
//! is therefore testable on its own, and nothing here loops or restarts: a
//! container that exited stays exited, and the orchestrator makes a new pod.
//!
//! States reported: Accepted -> Preparing -> Ready -> Starting -> Running ->
//! Complete (exit 0) | Failed (non-zero exit, vanished container, unhealthy,
//! start error) | Rejected (image or create failure, before starting) |
//! Shutdown (desired state Shutdown or later).

use std::time::Duration;

use shoal_proto::{defaults, now_ms, Assignment, HealthState, PodState, PodStatus};
use tracing::{debug, info, warn};

use crate::exec::{ContainerState, ContainerStatus, ExecError, Executor, PodRef};

/// What the caller should do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Something changed: step again right away.
    Progressed,
    /// Nothing to do until the container changes or time passes: step again
    /// at the next reconcile tick.
    Wait,
    /// The pod is terminal: it never changes again.
    Done,
}

/// Drives one assigned pod.
#[derive(Debug, Clone)]
pub struct PodController {
    assignment: Assignment,
    pod: PodRef,
    status: PodStatus,
    /// Another pod of the same slot on this node is still being stopped:
    /// this one waits in Ready (stop-first), set by the agent ([`Self::hold`]).
    held: bool,
    /// This controller created the container (rather than adopting one):
    /// it is known to be in the Created state, so starting it needs no
    /// inspect first.
    created: bool,
}

impl PodController {
    /// Starts from the status the managers hold for the pod, so a restarted
    /// worker continues (and adopts the container) instead of starting over.
    pub fn new(assignment: Assignment) -> Self {
        let status = assignment
            .pod
            .as_ref()
            .and_then(|p| p.status.clone())
            .unwrap_or_default();
        Self {
            pod: PodRef::of(&assignment),
            assignment,
            status,
            held: false,
            created: false,
        }
    }

    /// Holds the pod before starting (or lets it go): its container is
    /// created, but it starts only once the other pod of its slot that is
    /// being stopped has stopped, as stop-first promises.
    pub fn hold(&mut self, held: bool) {
        self.held = held;
    }

    /// A newer version of the assignment (desired state, not_before). The
    /// observed status stays the controller's: the worker is its authority.
    pub fn update(&mut self, assignment: Assignment) {
        self.assignment = assignment;
    }

    pub fn status(&self) -> &PodStatus {
        &self.status
    }

    pub fn pod(&self) -> &PodRef {
        &self.pod
    }

    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    fn state(&self) -> PodState {
        self.status.state()
    }

    /// Running, wanted running, and with nothing to follow but whether its
    /// container still runs: no health to watch (neither the template nor
    /// the image has a healthcheck). Until the container changes, a step
    /// would only find it running again, so its caller may wait for the
    /// node's container listing to say otherwise instead of stepping every
    /// period.
    pub fn steady(&self) -> bool {
        self.state() == PodState::Running
            && self.desired() == PodState::Running
            && self.status.health() == HealthState::None
    }

    fn desired(&self) -> PodState {
        self.assignment
            .pod
            .as_ref()
            .map_or(PodState::Running, |p| p.desired_state())
    }

    fn grace(&self) -> Duration {
        let ms = self
            .assignment
            .template
            .as_ref()
            .and_then(|t| t.container.as_ref())
            .map_or(0, |c| c.stop_grace_period_ms);
        Duration::from_millis(if ms == 0 {
            defaults::STOP_GRACE_PERIOD_MS
        } else {
            ms
        })
    }

    /// Advances the pod by at most one action. An `Err` is a transient
    /// executor failure (engine unreachable...): the status is unchanged and
    /// the caller retries later.
    pub async fn step(&mut self, exec: &dyn Executor) -> Result<Step, ExecError> {
        let state = self.state();
        if state.is_terminal() {
            return Ok(Step::Done);
        }
        if self.desired() >= PodState::Shutdown {
            return self.shutdown(exec).await;
        }
        match state {
            PodState::New | PodState::Pending | PodState::Assigned => {
                self.transition(PodState::Accepted, "accepted");
                Ok(Step::Progressed)
            }
            PodState::Accepted => {
                self.transition(PodState::Preparing, "preparing");
                Ok(Step::Progressed)
            }
            PodState::Preparing => self.prepare(exec).await,
            PodState::Ready => self.ready(),
            PodState::Starting => self.start(exec).await,
            PodState::Running => self.observe(exec).await,
            // Terminal states returned above.
            _ => Ok(Step::Done),
        }
    }

    /// Preparing: make the image available and create the container, or
    /// adopt the pod's container if it exists already (a restarted worker).
    /// The name is unique per pod, so creating is also the existence check:
    /// a new pod costs no inspect, an existing container answers "already
    /// exists" and is adopted.
    async fn prepare(&mut self, exec: &dyn Executor) -> Result<Step, ExecError> {
        match exec.prepare(&self.assignment).await {
            Ok(()) => {}
            Err(e @ ExecError::Unavailable { .. }) => return Err(e),
            // An existing container is adopted even if its image is gone.
            Err(e) => match self.adopt(exec).await? {
                Some(step) => return Ok(step),
                None => return Ok(self.fail(PodState::Rejected, e.to_string())),
            },
        }
        match exec.create(&self.assignment).await {
            Ok(id) => {
                self.status.container_id = id;
                self.created = true;
                self.transition(PodState::Ready, "created");
                Ok(Step::Progressed)
            }
            // Created concurrently (or by a previous life): adopt it.
            Err(ExecError::AlreadyExists { .. }) => match self.adopt(exec).await? {
                Some(step) => Ok(step),
                // Gone again in between: create it at the next step.
                None => Ok(Step::Progressed),
            },
            Err(e @ ExecError::Unavailable { .. }) => Err(e),
            Err(e) => Ok(self.fail(PodState::Rejected, e.to_string())),
        }
    }

    /// Takes over the pod's existing container, if there is one.
    async fn adopt(&mut self, exec: &dyn Executor) -> Result<Option<Step>, ExecError> {
        let observed = exec.inspect(&self.pod).await?;
        if observed.state == ContainerState::Missing {
            return Ok(None);
        }
        debug!(pod = %self.pod.pod_id, "adopting existing container");
        self.status.container_id = observed.container_id;
        self.transition(PodState::Ready, "created");
        Ok(Some(Step::Progressed))
    }

    /// Ready: start when the pod is wanted running, its restart delay
    /// (`not_before`) has passed and it is not held.
    fn ready(&mut self) -> Result<Step, ExecError> {
        let not_before = self.assignment.pod.as_ref().map_or(0, |p| p.not_before);
        if self.held || self.desired() < PodState::Running || now_ms() < not_before {
            return Ok(Step::Wait);
        }
        self.transition(PodState::Starting, "starting");
        Ok(Step::Progressed)
    }

    /// Starting: start the container unless it already runs (or ran). One
    /// this controller created is known not to have started yet.
    async fn start(&mut self, exec: &dyn Executor) -> Result<Step, ExecError> {
        if !self.created {
            let observed = exec.inspect(&self.pod).await?;
            if observed.state != ContainerState::Created {
                return Ok(self.observed(observed));
            }
        }
        match exec.start(&self.pod).await {
            Ok(()) => {
                let started = exec.inspect(&self.pod).await?;
                Ok(self.observed(started))
            }
            Err(e @ ExecError::Unavailable { .. }) => Err(e),
            Err(e) => Ok(self.fail(PodState::Failed, e.to_string())),
        }
    }

    /// Running: follow the container (exit, removal, health, address).
    async fn observe(&mut self, exec: &dyn Executor) -> Result<Step, ExecError> {
        let observed = exec.inspect(&self.pod).await?;
        if observed.state == ContainerState::Running && observed.health == HealthState::Unhealthy {
            // As Swarm does: an unhealthy container fails its pod, and the
            // orchestrator replaces it.
            exec.stop(&self.pod, self.grace()).await?;
            self.status.set_health(HealthState::Unhealthy);
            return Ok(self.fail(PodState::Failed, "container unhealthy".into()));
        }
        if observed.state == ContainerState::Running
            && observed.ip.is_empty()
            && !self.status.ip.is_empty()
        {
            // Disconnected from its network behind shoal's back: it can
            // take no traffic, so the pod fails and is replaced rather than
            // counting as running forever.
            exec.stop(&self.pod, self.grace()).await?;
            return Ok(self.fail(
                PodState::Failed,
                "container lost its network address".into(),
            ));
        }
        Ok(self.observed(observed))
    }

    /// Moves to the state the observed container implies.
    fn observed(&mut self, observed: ContainerStatus) -> Step {
        match observed.state {
            ContainerState::Missing => self.fail(PodState::Failed, "container removed".into()),
            ContainerState::Exited { code } => self.exited(code, observed.error),
            // Created while Running cannot happen by shoal's hand; wait.
            ContainerState::Created => Step::Wait,
            ContainerState::Running => {
                let changed = self.state() != PodState::Running
                    || self.status.health() != observed.health
                    || self.status.ip != observed.ip
                    || self.status.container_id != observed.container_id;
                if !changed {
                    return Step::Wait;
                }
                self.status.set_health(observed.health);
                self.status.ip = observed.ip;
                self.status.container_id = observed.container_id;
                self.transition(PodState::Running, "started");
                Step::Progressed
            }
        }
    }

    fn exited(&mut self, code: i32, runtime_error: String) -> Step {
        self.status.exit_code = code;
        self.status.ip.clear();
        if code == 0 {
            self.transition(PodState::Complete, "finished");
            Step::Done
        } else {
            let err = if runtime_error.is_empty() {
                format!("task: non-zero exit ({code})")
            } else {
                runtime_error
            };
            self.fail(PodState::Failed, err)
        }
    }

    /// Desired Shutdown (or Remove): stop the container if it runs, with the
    /// pod's grace period, and report Shutdown. The container stays until
    /// the pod leaves the assignment set.
    async fn shutdown(&mut self, exec: &dyn Executor) -> Result<Step, ExecError> {
        let observed = exec.inspect(&self.pod).await?;
        if observed.state == ContainerState::Running {
            info!(pod = %self.pod.pod_id, grace = ?self.grace(), "stopping container");
            exec.stop(&self.pod, self.grace()).await?;
        }
        if let ContainerState::Exited { code } = observed.state {
            self.status.exit_code = code;
        }
        self.status.ip.clear();
        self.transition(PodState::Shutdown, "shutdown");
        Ok(Step::Done)
    }

    /// Ends the pod's life with `state` (Rejected or Failed) and `err`.
    fn fail(&mut self, state: PodState, err: String) -> Step {
        warn!(pod = %self.pod.pod_id, state = state.display(), %err, "pod failed");
        self.status.err = err;
        self.status.ip.clear();
        self.transition(state, state.display());
        Step::Done
    }

    fn transition(&mut self, state: PodState, message: &str) {
        debug!(pod = %self.pod.pod_id, from = self.state().display(), to = state.display(), "pod state");
        self.status.set_state(state);
        self.status.message = message.to_string();
        self.status.timestamp = now_ms();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::{self, BoxFuture, FutureExt};
    use futures::stream::{self, BoxStream, StreamExt};
    use shoal_proto::{ContainerSpec, LogLine, Pod, PodTemplate};

    use super::*;
    use crate::exec::{EngineInfo, ListedContainer};

    /// A scripted executor: tests set what the next inspect sees and which
    /// operations fail, and read back which operations were called.
    #[derive(Default)]
    struct FakeExecutor {
        observed: Mutex<Option<ContainerStatus>>,
        pull_error: Mutex<Option<String>>,
        create_error: Mutex<Option<String>>,
        calls: Mutex<Vec<String>>,
        inspects: Mutex<usize>,
    }

    impl FakeExecutor {
        fn set(&self, state: ContainerState, health: HealthState) {
            *self.observed.lock().unwrap() = Some(ContainerStatus {
                state,
                container_id: "c1".into(),
                health,
                ip: if state == ContainerState::Running {
                    "10.0.0.2".into()
                } else {
                    String::new()
                },
                error: String::new(),
            });
        }

        fn remove_container(&self) {
            *self.observed.lock().unwrap() = None;
        }

        fn inspects(&self) -> usize {
            *self.inspects.lock().unwrap()
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn call(&self, name: &str) {
            self.calls.lock().unwrap().push(name.to_string());
        }
    }

    impl Executor for FakeExecutor {
        fn prepare<'a>(&'a self, _: &'a Assignment) -> BoxFuture<'a, Result<(), ExecError>> {
            self.call("prepare");
            let result = match self.pull_error.lock().unwrap().clone() {
                Some(reason) => Err(ExecError::ImagePull {
                    image: "img".into(),
                    reason,
                }),
                None => Ok(()),
            };
            future::ready(result).boxed()
        }

        fn create<'a>(&'a self, _: &'a Assignment) -> BoxFuture<'a, Result<String, ExecError>> {
            self.call("create");
            let exists = self.observed.lock().unwrap().is_some();
            let result = match self.create_error.lock().unwrap().clone() {
                Some(reason) => Err(ExecError::Create {
                    container: "web.1.p1".into(),
                    reason,
                }),
                // Container names are unique per pod, as with Docker.
                None if exists => Err(ExecError::AlreadyExists {
                    container: "web.1.p1".into(),
                }),
                None => {
                    self.set(ContainerState::Created, HealthState::None);
                    Ok("c1".into())
                }
            };
            future::ready(result).boxed()
        }

        fn start<'a>(&'a self, _: &'a PodRef) -> BoxFuture<'a, Result<(), ExecError>> {
            self.call("start");
            self.set(ContainerState::Running, HealthState::None);
            future::ready(Ok(())).boxed()
        }

        fn inspect<'a>(
            &'a self,
            _: &'a PodRef,
        ) -> BoxFuture<'a, Result<ContainerStatus, ExecError>> {
            *self.inspects.lock().unwrap() += 1;
            let s = self
                .observed
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(ContainerStatus::missing);
            future::ready(Ok(s)).boxed()
        }

        fn stop<'a>(
            &'a self,
            _: &'a PodRef,
            grace: Duration,
        ) -> BoxFuture<'a, Result<(), ExecError>> {
            self.call(&format!("stop {}ms", grace.as_millis()));
            self.set(ContainerState::Exited { code: 143 }, HealthState::None);
            future::ready(Ok(())).boxed()
        }

        fn remove<'a>(&'a self, _: &'a PodRef) -> BoxFuture<'a, Result<(), ExecError>> {
            self.call("remove");
            self.remove_container();
            future::ready(Ok(())).boxed()
        }

        fn list(&self) -> BoxFuture<'_, Result<Vec<ListedContainer>, ExecError>> {
            future::ready(Ok(Vec::new())).boxed()
        }

        fn logs(
            &self,
            _: &PodRef,
            _: bool,
            _: Option<u64>,
        ) -> BoxStream<'static, Result<LogLine, ExecError>> {
            stream::empty().boxed()
        }

        fn engine_info(&self) -> BoxFuture<'_, Result<EngineInfo, ExecError>> {
            future::ready(Ok(EngineInfo::default())).boxed()
        }
    }

    fn assignment(desired: PodState) -> Assignment {
        let mut pod = Pod {
            id: "p1".into(),
            status: Some(PodStatus::default()),
            ..Default::default()
        };
        pod.set_desired_state(desired);
        pod.status.as_mut().unwrap().set_state(PodState::Assigned);
        Assignment {
            pod: Some(pod),
            template: Some(PodTemplate {
                container: Some(ContainerSpec {
                    image: "img:v1".into(),
                    stop_grace_period_ms: 2_000,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            pod_name: "web.1".into(),
            service_name: "web".into(),
            stack: String::new(),
            ..Default::default()
        }
    }

    /// Steps once and returns the resulting state.
    async fn step(ctl: &mut PodController, exec: &FakeExecutor) -> (PodState, Step) {
        let outcome = ctl.step(exec).await.unwrap();
        (ctl.status().state(), outcome)
    }

    /// Steps a fresh pod up to Running.
    async fn running(exec: &FakeExecutor) -> PodController {
        let mut ctl = PodController::new(assignment(PodState::Running));
        while ctl.status().state() != PodState::Running {
            ctl.step(exec).await.unwrap();
        }
        ctl
    }

    #[tokio::test]
    async fn happy_path_goes_accepted_preparing_ready_starting_running() {
        let exec = FakeExecutor::default();
        let mut ctl = PodController::new(assignment(PodState::Running));
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Accepted, Step::Progressed)
        );
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Preparing, Step::Progressed)
        );
        assert!(exec.calls().is_empty(), "announced before any slow work");
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Ready, Step::Progressed)
        );
        assert_eq!(exec.calls(), vec!["prepare", "create"]);
        assert_eq!(ctl.status().container_id, "c1");
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Starting, Step::Progressed)
        );
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Running, Step::Progressed)
        );
        assert_eq!(exec.calls(), vec!["prepare", "create", "start"]);
        assert_eq!(ctl.status().ip, "10.0.0.2");
        assert!(ctl.status().timestamp > 0);
        // Nothing changes while the container runs.
        assert_eq!(step(&mut ctl, &exec).await, (PodState::Running, Step::Wait));
    }

    #[tokio::test]
    async fn a_pull_failure_rejects_the_pod_with_the_reason() {
        let exec = FakeExecutor::default();
        *exec.pull_error.lock().unwrap() = Some("manifest unknown".into());
        let mut ctl = PodController::new(assignment(PodState::Running));
        step(&mut ctl, &exec).await;
        step(&mut ctl, &exec).await;
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Rejected, Step::Done)
        );
        let err = &ctl.status().err;
        assert!(
            err.contains("could not be pulled") && err.contains("manifest unknown"),
            "{err}"
        );
        assert_eq!(exec.calls(), vec!["prepare"]);
        // Terminal: further steps do nothing.
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Rejected, Step::Done)
        );
    }

    #[tokio::test]
    async fn a_create_failure_rejects_the_pod_with_dockers_message() {
        let exec = FakeExecutor::default();
        *exec.create_error.lock().unwrap() = Some("invalid reference format".into());
        let mut ctl = PodController::new(assignment(PodState::Running));
        step(&mut ctl, &exec).await;
        step(&mut ctl, &exec).await;
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Rejected, Step::Done)
        );
        assert!(ctl.status().err.contains("invalid reference format"));
    }

    #[tokio::test]
    async fn exit_1_fails_the_pod_with_its_exit_code_and_is_never_restarted() {
        let exec = FakeExecutor::default();
        let mut ctl = running(&exec).await;
        exec.set(ContainerState::Exited { code: 1 }, HealthState::None);
        assert_eq!(step(&mut ctl, &exec).await, (PodState::Failed, Step::Done));
        assert_eq!(ctl.status().exit_code, 1);
        assert_eq!(ctl.status().err, "task: non-zero exit (1)");
        assert_eq!(ctl.status().ip, "");
        step(&mut ctl, &exec).await;
        assert_eq!(exec.calls(), vec!["prepare", "create", "start"]);
    }

    #[tokio::test]
    async fn exit_0_completes_the_pod() {
        let exec = FakeExecutor::default();
        let mut ctl = running(&exec).await;
        exec.set(ContainerState::Exited { code: 0 }, HealthState::None);
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Complete, Step::Done)
        );
        assert_eq!(ctl.status().exit_code, 0);
    }

    #[tokio::test]
    async fn a_removed_container_fails_the_pod() {
        let exec = FakeExecutor::default();
        let mut ctl = running(&exec).await;
        exec.remove_container();
        assert_eq!(step(&mut ctl, &exec).await, (PodState::Failed, Step::Done));
        assert_eq!(ctl.status().err, "container removed");
    }

    #[tokio::test]
    async fn a_shutdown_request_stops_with_the_grace_period() {
        let exec = FakeExecutor::default();
        let mut ctl = running(&exec).await;
        ctl.update(assignment(PodState::Shutdown));
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Shutdown, Step::Done)
        );
        assert_eq!(exec.calls().last().unwrap(), "stop 2000ms");
        assert_eq!(ctl.status().message, "shutdown");
    }

    #[tokio::test]
    async fn a_shutdown_before_start_never_starts_the_container() {
        let exec = FakeExecutor::default();
        let mut ctl = PodController::new(assignment(PodState::Shutdown));
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Shutdown, Step::Done)
        );
        assert!(exec.calls().is_empty());
    }

    #[tokio::test]
    async fn health_starting_then_healthy_is_reported_as_a_change() {
        let exec = FakeExecutor::default();
        let mut ctl = running(&exec).await;
        exec.set(ContainerState::Running, HealthState::Starting);
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Running, Step::Progressed)
        );
        assert_eq!(ctl.status().health(), HealthState::Starting);
        exec.set(ContainerState::Running, HealthState::Healthy);
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Running, Step::Progressed)
        );
        assert_eq!(ctl.status().health(), HealthState::Healthy);
        assert_eq!(step(&mut ctl, &exec).await, (PodState::Running, Step::Wait));
    }

    #[tokio::test]
    async fn an_unhealthy_container_is_stopped_and_fails_the_pod() {
        let exec = FakeExecutor::default();
        let mut ctl = running(&exec).await;
        exec.set(ContainerState::Running, HealthState::Unhealthy);
        assert_eq!(step(&mut ctl, &exec).await, (PodState::Failed, Step::Done));
        assert_eq!(ctl.status().err, "container unhealthy");
        assert_eq!(exec.calls().last().unwrap(), "stop 2000ms");
    }

    #[tokio::test]
    async fn a_running_container_that_loses_its_address_fails_the_pod() {
        let exec = FakeExecutor::default();
        let mut ctl = running(&exec).await;
        assert_eq!(ctl.status().ip, "10.0.0.2");
        exec.observed.lock().unwrap().as_mut().unwrap().ip.clear();
        assert_eq!(step(&mut ctl, &exec).await, (PodState::Failed, Step::Done));
        assert_eq!(ctl.status().err, "container lost its network address");
        assert_eq!(exec.calls().last().unwrap(), "stop 2000ms");
    }

    #[tokio::test]
    async fn an_existing_container_is_adopted_without_recreating_it() {
        let exec = FakeExecutor::default();
        exec.set(ContainerState::Running, HealthState::None);
        // The managers last heard "preparing" before the worker restarted.
        let mut a = assignment(PodState::Running);
        a.pod
            .as_mut()
            .unwrap()
            .status
            .as_mut()
            .unwrap()
            .set_state(PodState::Preparing);
        let mut ctl = PodController::new(a);
        while ctl.status().state() != PodState::Running {
            ctl.step(&exec).await.unwrap();
        }
        // Creating is the existence check: the engine says the pod's
        // container exists, and it is taken over, never started again.
        assert_eq!(exec.calls(), vec!["prepare", "create"]);
        assert_eq!(ctl.status().container_id, "c1");
    }

    #[tokio::test]
    async fn an_existing_container_is_adopted_even_if_its_image_is_gone() {
        let exec = FakeExecutor::default();
        exec.set(ContainerState::Running, HealthState::None);
        *exec.pull_error.lock().unwrap() = Some("manifest unknown".into());
        let mut ctl = PodController::new(assignment(PodState::Running));
        while ctl.status().state() != PodState::Running {
            ctl.step(&exec).await.unwrap();
        }
        assert_eq!(exec.calls(), vec!["prepare"]);
    }

    #[tokio::test]
    async fn a_new_pod_costs_one_inspect_on_its_way_to_running() {
        let exec = FakeExecutor::default();
        running(&exec).await;
        assert_eq!(
            exec.inspects(),
            1,
            "only the one after start, which reads the address"
        );
    }

    #[tokio::test]
    async fn a_pod_waits_in_ready_until_not_before() {
        let exec = FakeExecutor::default();
        let mut a = assignment(PodState::Running);
        a.pod.as_mut().unwrap().not_before = now_ms() + 60_000;
        let mut ctl = PodController::new(a);
        for _ in 0..3 {
            ctl.step(&exec).await.unwrap();
        }
        assert_eq!(step(&mut ctl, &exec).await, (PodState::Ready, Step::Wait));
        let mut later = ctl.assignment().clone();
        later.pod.as_mut().unwrap().not_before = 0;
        ctl.update(later);
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Starting, Step::Progressed)
        );
    }

    #[tokio::test]
    async fn a_held_pod_is_created_but_starts_only_when_let_go() {
        let exec = FakeExecutor::default();
        let mut ctl = PodController::new(assignment(PodState::Running));
        ctl.hold(true);
        for _ in 0..3 {
            ctl.step(&exec).await.unwrap();
        }
        assert_eq!(ctl.status().state(), PodState::Ready);
        assert_eq!(step(&mut ctl, &exec).await, (PodState::Ready, Step::Wait));
        assert_eq!(
            exec.calls(),
            vec!["prepare", "create"],
            "created, not started"
        );
        ctl.hold(false);
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Starting, Step::Progressed)
        );
        assert_eq!(
            step(&mut ctl, &exec).await,
            (PodState::Running, Step::Progressed)
        );
        assert_eq!(exec.calls(), vec!["prepare", "create", "start"]);
    }
}
