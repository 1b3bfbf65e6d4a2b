//! One task per assigned pod, each stepping its [`PodController`], so a slow
//! image pull never holds up the other pods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::{defaults, Assignment, PodState};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::reporter::Report;
use crate::controller::{PodController, Step};
use crate::exec::{ContainerState, Executor, ListedContainer};

/// How often a steady pod (see [`PodController::steady`]) is stepped even
/// though the node's listing says its container still runs: what only an
/// inspect shows (the container lost its network address behind shoal's
/// back) is found this late.
const STEADY_RECHECK: Duration = Duration::from_millis(10 * defaults::WORKER_RECONCILE_MS);

/// The state of each pod's container as the agent's last listing of the
/// node's containers saw it (`None`: not listed yet). A running pod with no
/// health to watch waits on its entry instead of inspecting its container
/// every period: one listing a period for the node (as the kubelet relists)
/// instead of an inspect a period for every pod, and no task wakes while
/// nothing changes. At 100,000 pods on one simulator's cores those
/// inspects and wake-ups were a quarter of the CPU.
#[derive(Clone, Default)]
pub(crate) struct Listing(Arc<Mutex<HashMap<String, watch::Sender<Option<ContainerState>>>>>);

impl Listing {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Option<ContainerState>>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry of `pod_id`'s container.
    fn follow(&self, pod_id: &str) -> watch::Receiver<Option<ContainerState>> {
        let mut entries = self.lock();
        match entries.get(pod_id) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                entries.insert(pod_id.to_string(), tx);
                rx
            }
        }
    }

    /// Records a listing of the node's containers: a followed pod whose
    /// container is not in it is Missing. Wakes only the pods whose state
    /// changed; forgets the pods nobody follows any more.
    pub(crate) fn publish(&self, listed: &[ListedContainer]) {
        let states: HashMap<&str, ContainerState> = listed
            .iter()
            .map(|c| (c.pod.pod_id.as_str(), c.state))
            .collect();
        self.lock().retain(|pod_id, tx| {
            let state = states
                .get(pod_id.as_str())
                .copied()
                .unwrap_or(ContainerState::Missing);
            // Read first: most listings change nothing, and a write takes
            // the channel's lock exclusively.
            if *tx.borrow() != Some(state) {
                tx.send_replace(Some(state));
            }
            tx.receiver_count() > 0
        });
    }
}

/// A pod's slot on this node: its deployment and slot number (global pods
/// all have slot 0, and one node holds one of them).
type SlotKey = (String, u64);

/// What the node knows of one pod for the stop-first rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotEntry {
    key: SlotKey,
    /// Its desired state is Shutdown or Remove.
    stopping: bool,
    /// Its task has brought it to a terminal state: its container, if it
    /// ever had one, no longer runs.
    finished: bool,
}

/// Every pod in the assignment set with its slot, so that a pod does not
/// start while another pod of its slot on this node is being stopped. The
/// managers send a stop-first replacement in the same message that shuts
/// the old pod down (manager/src/orchestrator/placement.rs); this is what
/// makes it wait, created but not started, until the old container has
/// stopped, and then start at once. One watch channel, so the agent's
/// writes (stopping) and the pod tasks' writes (finished) are serialized.
#[derive(Clone, Default)]
pub(crate) struct Slots(Arc<watch::Sender<SlotTable>>);

#[derive(Default)]
struct SlotTable {
    entries: HashMap<String, SlotEntry>,
    /// Entries stopping and not finished: while there are none (nearly
    /// always) no pod is held, and every pod task asks at each step, so the
    /// answer must not cost a scan of the node's pods.
    blocking: usize,
}

impl SlotTable {
    fn count_blocking(&mut self) {
        self.blocking = self
            .entries
            .values()
            .filter(|e| e.stopping && !e.finished)
            .count();
    }
}

impl Slots {
    /// Whether `pod_id` must wait: another pod of its slot is stopping and
    /// has not finished.
    fn held(&self, pod_id: &str) -> bool {
        let table = self.0.borrow();
        if table.blocking == 0 {
            return false;
        }
        let Some(me) = table.entries.get(pod_id) else {
            return false;
        };
        table
            .entries
            .iter()
            .any(|(id, e)| id != pod_id && e.key == me.key && e.stopping && !e.finished)
    }

    fn finished(&self, pod_id: &str) {
        self.0
            .send_if_modified(|table| match table.entries.get_mut(pod_id) {
                Some(e) if !e.finished => {
                    e.finished = true;
                    table.count_blocking();
                    true
                }
                _ => false,
            });
    }

    /// Records the pods added or changed (`changed`) and forgets those that
    /// left (`removed`), keeping what the tasks recorded (finished).
    fn update(&self, changed: &HashMap<String, Assignment>, removed: &[String]) {
        self.0.send_if_modified(|table| {
            let mut modified = false;
            for id in removed {
                modified |= table.entries.remove(id).is_some();
            }
            for (id, a) in changed {
                let Some(pod) = a.pod.as_ref() else { continue };
                let stopping = pod.desired_state() >= PodState::Shutdown;
                match table.entries.get_mut(id) {
                    Some(e) => {
                        if e.stopping != stopping
                            || e.key.0 != pod.deployment_id
                            || e.key.1 != pod.slot
                        {
                            e.key = (pod.deployment_id.clone(), pod.slot);
                            e.stopping = stopping;
                            modified = true;
                        }
                    }
                    None => {
                        let key = (pod.deployment_id.clone(), pod.slot);
                        let entry = SlotEntry {
                            key,
                            stopping,
                            finished: false,
                        };
                        table.entries.insert(id.clone(), entry);
                        modified = true;
                    }
                }
            }
            if modified {
                table.count_blocking();
            }
            modified
        });
    }
}

/// Assignments by pod id; one without a pod id is logged and left out.
fn by_id(assignments: Vec<Assignment>) -> HashMap<String, Assignment> {
    let mut wanted = HashMap::with_capacity(assignments.len());
    for a in assignments {
        match a.pod.as_ref().map(|p| p.id.clone()) {
            Some(id) if !id.is_empty() => {
                wanted.insert(id, a);
            }
            _ => warn!(pod_name = %a.pod_name, "ignoring an assignment without a pod id"),
        }
    }
    wanted
}

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
    slots: Slots,
    listing: Listing,
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
            slots: Slots::default(),
            listing: Listing::default(),
        }
    }

    /// Where the agent's listings of the node's containers go.
    pub(crate) fn listing(&self) -> &Listing {
        &self.listing
    }

    /// Makes the running tasks match the complete assignment set: starts
    /// new pods, hands changed assignments to their tasks, stops the tasks of
    /// pods that left (their containers are removed by the agent's orphan
    /// sweep).
    pub fn apply(&mut self, assignments: Vec<Assignment>) {
        let wanted = by_id(assignments);
        let left: Vec<String> = self
            .pods
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        self.change(wanted, left);
    }

    /// Applies an incremental message: `assignments` are the pods added or
    /// changed, `removed` the ids of those no longer wanted; every other
    /// pod keeps its assignment.
    pub fn apply_changes(&mut self, assignments: Vec<Assignment>, removed: Vec<String>) {
        self.change(by_id(assignments), removed);
    }

    fn change(&mut self, changed: HashMap<String, Assignment>, removed: Vec<String>) {
        // Before any task sees its new assignment, so a replacement never
        // misses the old pod's shutdown that came in the same message.
        self.slots.update(&changed, &removed);
        for id in &removed {
            if let Some(task) = self.pods.remove(id) {
                debug!(pod = %id, "pod left the assignment set");
                task.stop.cancel();
            }
        }
        for (id, assignment) in changed {
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

    #[cfg(test)]
    pub fn ids(&self) -> std::collections::HashSet<String> {
        self.pods.keys().cloned().collect()
    }

    /// Whether `pod_id` is in the assignment set.
    pub fn contains(&self, pod_id: &str) -> bool {
        self.pods.contains_key(pod_id)
    }

    fn spawn(&self, pod_id: String, assignment: Assignment) -> PodTask {
        let (tx, rx) = watch::channel(assignment);
        let stop = self.shutdown.child_token();
        let reports = self.reports.clone();
        let pod = run_pod(
            pod_id.clone(),
            self.executor.clone(),
            rx,
            stop.clone(),
            reports.clone(),
            self.slots.clone(),
            self.listing.clone(),
        );
        let handle = tokio::spawn(async move {
            pod.await;
            // After the task's last status, from the same sender, so the
            // reporter never hears of the pod again once it has left.
            let _ = reports.send(Report::Left(pod_id));
        });
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
    slots: Slots,
    listing: Listing,
) {
    let mut slot_changes = slots.0.subscribe();
    // Followed from the start, so that a listing made while a step was
    // under way is not missed: its change wakes the first steady wait. Its
    // sender is kept in `listing`, which this task holds, and is forgotten
    // only once nobody follows it: the watch never closes under the task.
    let mut listed = listing.follow(&pod_id);
    let mut controller = PodController::new(assignments.borrow_and_update().clone());
    let mut reported = controller.status().clone();
    let mut tick = tokio::time::interval(Duration::from_millis(defaults::WORKER_RECONCILE_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        slot_changes.borrow_and_update();
        let held = slots.held(&pod_id);
        controller.hold(held);
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = controller.step(executor.as_ref()) => outcome,
        };
        if matches!(outcome, Ok(Step::Done)) {
            slots.finished(&pod_id);
        }
        if controller.status() != &reported {
            reported = controller.status().clone();
            if reports
                .send(Report::Status(pod_id.clone(), reported.clone()))
                .is_err()
            {
                return;
            }
        }
        let steady = matches!(outcome, Ok(Step::Wait)) && controller.steady();
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
            _ = tick.tick(), if wait_for_tick && !steady => {}
            // Steady: the container is looked at when the node's listing
            // says it changed, and now and then anyway.
            _ = listed.changed(), if steady => {}
            _ = tokio::time::sleep(STEADY_RECHECK), if steady => {}
            // Held: the other pod of the slot may have stopped.
            _ = slot_changes.changed(), if held => {}
            changed = assignments.changed() => {
                if changed.is_err() {
                    return;
                }
                controller.update(assignments.borrow_and_update().clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_proto::Pod;

    use super::*;

    fn assignment(id: &str, slot: u64, desired: PodState) -> (String, Assignment) {
        let mut pod = Pod {
            id: id.into(),
            deployment_id: "dep-web".into(),
            slot,
            ..Default::default()
        };
        pod.set_desired_state(desired);
        let a = Assignment {
            pod: Some(pod),
            ..Default::default()
        };
        (id.to_string(), a)
    }

    fn listed(pod_id: &str, state: ContainerState) -> ListedContainer {
        ListedContainer {
            pod: crate::exec::PodRef::new(pod_id, "web.1"),
            container_id: format!("c-{pod_id}"),
            state,
        }
    }

    #[test]
    fn a_listing_wakes_only_the_pods_whose_container_changed() {
        let listing = Listing::default();
        let (mut a, mut b) = (listing.follow("a"), listing.follow("b"));
        listing.publish(&[
            listed("a", ContainerState::Running),
            listed("b", ContainerState::Running),
        ]);
        assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
        a.borrow_and_update();
        b.borrow_and_update();

        // The same listing again: nobody.
        listing.publish(&[
            listed("a", ContainerState::Running),
            listed("b", ContainerState::Running),
        ]);
        assert!(!a.has_changed().unwrap() && !b.has_changed().unwrap());

        // b exited, a's container is gone.
        listing.publish(&[listed("b", ContainerState::Exited { code: 1 })]);
        assert_eq!(*a.borrow_and_update(), Some(ContainerState::Missing));
        assert_eq!(
            *b.borrow_and_update(),
            Some(ContainerState::Exited { code: 1 })
        );

        // A pod nobody follows any more is forgotten.
        drop(b);
        listing.publish(&[]);
        assert_eq!(listing.lock().len(), 1);
        assert!(listing.lock().contains_key("a"));
    }

    #[test]
    fn a_pod_is_held_while_another_pod_of_its_slot_is_being_stopped() {
        let slots = Slots::default();
        let set = HashMap::from([
            assignment("old", 1, PodState::Shutdown),
            assignment("new", 1, PodState::Running),
            assignment("other", 2, PodState::Running),
        ]);
        slots.update(&set, &[]);
        assert!(slots.held("new"));
        assert!(!slots.held("old"), "the pod being stopped is not held");
        assert!(!slots.held("other"), "another slot is not held");
        // The old pod's container has stopped: the new one may start.
        slots.finished("old");
        assert!(!slots.held("new"));
        // A later message keeps what the tasks recorded.
        slots.update(&set, &[]);
        assert!(!slots.held("new"));
    }

    #[test]
    fn a_pod_is_not_held_by_a_running_pod_of_its_slot() {
        // Start-first: the old pod keeps running until the new one is ready.
        let slots = Slots::default();
        slots.update(
            &HashMap::from([
                assignment("old", 1, PodState::Running),
                assignment("new", 1, PodState::Running),
            ]),
            &[],
        );
        assert!(!slots.held("new"));
    }

    #[tokio::test]
    async fn a_pod_that_leaves_the_set_is_reported_left_after_its_last_status() {
        let (tx, mut reports) = mpsc::unbounded_channel();
        let executor: Arc<dyn Executor> = Arc::new(crate::exec::sim::SimExecutor::new());
        let shutdown = CancellationToken::new();
        let mut set = PodSet::new(executor, tx, shutdown.clone());
        let (_, mut a) = assignment("p1", 1, PodState::Running);
        a.template = Some(shoal_proto::PodTemplate {
            container: Some(shoal_proto::ContainerSpec {
                image: "img:v1".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        set.apply(vec![a]);
        match reports.recv().await {
            Some(Report::Status(id, _)) => assert_eq!(id, "p1"),
            other => panic!("expected a status of p1, got {other:?}"),
        }
        set.apply(Vec::new());
        // Whatever statuses the task still sent, `Left` comes last.
        loop {
            match reports
                .recv()
                .await
                .expect("the task reports until it ends")
            {
                Report::Status(id, _) => assert_eq!(id, "p1"),
                Report::Left(id) => {
                    assert_eq!(id, "p1");
                    break;
                }
            }
        }
        set.stop_all().await;
        assert!(reports.try_recv().is_err(), "nothing after Left");
        shutdown.cancel();
    }

    #[test]
    fn a_pod_that_left_the_set_holds_nothing() {
        let slots = Slots::default();
        slots.update(
            &HashMap::from([
                assignment("old", 1, PodState::Shutdown),
                assignment("new", 1, PodState::Running),
            ]),
            &[],
        );
        assert!(slots.held("new"));
        slots.update(&HashMap::new(), &["old".to_string()]);
        assert!(!slots.held("new"));
    }

    #[tokio::test]
    async fn an_incremental_message_changes_only_the_pods_it_names() {
        let (tx, _reports) = mpsc::unbounded_channel();
        let executor: Arc<dyn Executor> = Arc::new(crate::exec::sim::SimExecutor::new());
        let shutdown = CancellationToken::new();
        let mut set = PodSet::new(executor, tx, shutdown.clone());
        let ids = |set: &PodSet| {
            let mut ids: Vec<String> = set.ids().into_iter().collect();
            ids.sort();
            ids
        };
        set.apply(vec![
            assignment("p1", 1, PodState::Running).1,
            assignment("p2", 2, PodState::Running).1,
        ]);
        set.apply_changes(vec![assignment("p3", 3, PodState::Running).1], vec![]);
        assert_eq!(
            ids(&set),
            ["p1", "p2", "p3"],
            "an addition keeps the others"
        );
        set.apply_changes(vec![], vec!["p1".into(), "gone".into()]);
        assert_eq!(
            ids(&set),
            ["p2", "p3"],
            "a removal takes only what it names"
        );
        let (_, mut stopping) = assignment("p2", 2, PodState::Shutdown);
        stopping.pod_name = "web.2".into();
        set.apply_changes(vec![stopping.clone()], vec![]);
        assert_eq!(
            *set.pods["p2"].assignment.borrow(),
            stopping,
            "a change reaches its task"
        );
        // A complete message again: what it leaves out leaves.
        set.apply(vec![assignment("p3", 3, PodState::Running).1]);
        assert_eq!(ids(&set), ["p3"]);
        set.stop_all().await;
        shutdown.cancel();
    }
}
