//! One task per assigned pod, each stepping its [`PodController`], so a slow
//! image pull never holds up the other pods.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::{defaults, Assignment, PodStatus};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::controller::{PodController, Step};
use crate::exec::Executor;

/// A status change to report: pod id and its new status.
pub(crate) type Report = (String, PodStatus);

struct PodTask {
    assignment: watch::Sender<Assignment>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// The pods this node runs, keyed by pod id.
pub(crate) struct PodSet {
    executor: Arc<dyn Executor>,
    reports: mpsc::UnboundedSender<Report>,
    shutdown: CancellationToken,
    pods: HashMap<String, PodTask>,
}

impl PodSet {
    pub fn new(
        executor: Arc<dyn Executor>,
        reports: mpsc::UnboundedSender<Report>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            executor,
            reports,
            shutdown,
            pods: HashMap::new(),
        }
    }

    /// Makes the running tasks match the complete assignment set: starts
    /// new pods, hands changed assignments to their tasks, stops the tasks of
    /// pods that left (their containers are removed by the agent's orphan
    /// sweep).
    pub fn apply(&mut self, assignments: Vec<Assignment>) {
        let mut wanted: HashMap<String, Assignment> = HashMap::new();
        for a in assignments {
            match a.pod.as_ref().map(|p| p.id.clone()) {
                Some(id) if !id.is_empty() => {
                    wanted.insert(id, a);
                }
                _ => warn!(pod_name = %a.pod_name, "ignoring an assignment without a pod id"),
            }
        }
        self.pods.retain(|id, task| {
            let keep = wanted.contains_key(id);
            if !keep {
                debug!(pod = %id, "pod left the assignment set");
                task.stop.cancel();
            }
            keep
        });
        for (id, assignment) in wanted {
            match self.pods.get(&id) {
                Some(task) => {
                    task.assignment.send_if_modified(|current| {
                        let changed = *current != assignment;
                        if changed {
                            *current = assignment;
                        }
                        changed
                    });
                }
                None => {
                    let task = self.spawn(id.clone(), assignment);
                    self.pods.insert(id, task);
                }
            }
        }
    }

    pub fn ids(&self) -> HashSet<String> {
        self.pods.keys().cloned().collect()
    }

    fn spawn(&self, pod_id: String, assignment: Assignment) -> PodTask {
        let (tx, rx) = watch::channel(assignment);
        let stop = self.shutdown.child_token();
        let handle = tokio::spawn(run_pod(
            pod_id,
            self.executor.clone(),
            rx,
            stop.clone(),
            self.reports.clone(),
        ));
        PodTask {
            assignment: tx,
            stop,
            handle,
        }
    }

    /// Stops every pod task (never the containers: a restarted worker
    /// adopts them) and waits for the tasks to end.
    pub async fn stop_all(&mut self) {
        for (_, task) in self.pods.drain() {
            task.stop.cancel();
            let _ = task.handle.await;
        }
    }
}

/// Steps one pod until it is terminal, reporting each status change;
/// then idles until the pod leaves the set.
async fn run_pod(
    pod_id: String,
    executor: Arc<dyn Executor>,
    mut assignments: watch::Receiver<Assignment>,
    stop: CancellationToken,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut controller = PodController::new(assignments.borrow_and_update().clone());
    let mut reported = controller.status().clone();
    let mut tick = tokio::time::interval(Duration::from_millis(defaults::WORKER_RECONCILE_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = controller.step(executor.as_ref()) => outcome,
        };
        if controller.status() != &reported {
            reported = controller.status().clone();
            if reports.send((pod_id.clone(), reported.clone())).is_err() {
                return;
            }
        }
        let wait_for_tick = match outcome {
            Ok(Step::Progressed) => continue,
            Ok(Step::Wait) => true,
            Ok(Step::Done) => false,
            Err(e) => {
                // Log a persistent failure once, not at every tick.
                let message = e.to_string();
                if message != last_error {
                    warn!(pod = %pod_id, error = %message, "pod step failed; retrying");
                    last_error = message;
                }
                true
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick(), if wait_for_tick => {}
            changed = assignments.changed() => {
                if changed.is_err() {
                    return;
                }
                controller.update(assignments.borrow_and_update().clone());
            }
        }
    }
}
