//! The in-memory object store the Raft state machine applies to.
//!
//! Every manager holds the whole desired state here; only the state machine
//! writes to it (through [`Store::apply`]), everyone else reads a consistent
//! view with [`Store::read`] and learns about changes through a watch on the
//! last applied index. Controllers are level-triggered: a change wakes them,
//! they read the current state and propose what differs. Worker sessions,
//! one per node, wake only for what their node is sent
//! ([`Store::subscribe_session`]).

mod mutate;
mod pods;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use shoal_proto::{
    object, Batch, BatchResult, Cluster, Config, Deployment, Node, NodeRole, Object, ObjectKind,
    Pod, ReplicaSet, Secret, Service, StoreSnapshot,
};
use tokio::sync::watch;

pub use mutate::{delete, put, put_forced};
pub use pods::Pods;

/// Every object kind, by id. BTreeMaps keep iteration (and so snapshots and
/// listings) in a stable order.
///
/// Pods are also indexed by node ([`StoreData::pods_on_node`]), because
/// every worker session rebuilds its node's assignments after each change:
/// scanning every pod there costs nodes x pods per change, which at
/// thousands of nodes is the whole CPU. The index is kept by
/// [`Store::apply`] and [`Store::restore`]; code that fills a `StoreData`
/// by hand adds pods with [`StoreData::put_pod`] so the index follows.
#[derive(Debug, Default, Clone)]
pub struct StoreData {
    pub clusters: BTreeMap<String, Cluster>,
    pub nodes: BTreeMap<String, Node>,
    pub deployments: BTreeMap<String, Deployment>,
    pub replica_sets: BTreeMap<String, ReplicaSet>,
    /// Each pod held once and shared ([`Pods`]).
    pub pods: Pods,
    pub services: BTreeMap<String, Service>,
    /// Secrets, their data sealed by the cluster key.
    pub secrets: BTreeMap<String, Secret>,
    pub configs: BTreeMap<String, Config>,
    /// Raft log index of the last batch applied.
    pub last_applied: u64,
    /// Ids of the pods placed on each node (those with a `node_id`), each
    /// with the change mark of its last change on that node (see
    /// [`StoreData::pod_marks_on_node`]).
    pods_by_node: BTreeMap<String, BTreeMap<String, u64>>,
    /// Change marks (see [`StoreData::pods_changed_on`]): a count of
    /// writes and removals, never reset (a restore goes on from it), and
    /// its value at the last change of each kind.
    writes: u64,
    pod_writes: u64,
    pod_writes_on_node: HashMap<String, u64>,
    other_writes: u64,
    /// Nodes whose sessions must look again: a pod placed on them changed
    /// (but for its status or meta), or their node object did. Drained by
    /// [`Store::apply`], which wakes those sessions only.
    nodes_touched: HashSet<String>,
}

/// Whether two versions of a pod are the same for the node running it:
/// equal in everything but the status the node reported and the meta (what
/// a worker session sends of a pod). Every field is named, so a field added
/// to `Pod` must be placed on one side or the other here.
fn same_assignment(a: &Pod, b: &Pod) -> bool {
    let Pod {
        id,
        meta: _,
        deployment_id,
        replica_set_id,
        slot,
        node_id,
        desired_state,
        status: _,
        node_epoch,
        attempt,
        not_before,
        scheduling_message,
    } = a;
    *id == b.id
        && *deployment_id == b.deployment_id
        && *replica_set_id == b.replica_set_id
        && *slot == b.slot
        && *node_id == b.node_id
        && *desired_state == b.desired_state
        && *node_epoch == b.node_epoch
        && *attempt == b.attempt
        && *not_before == b.not_before
        && *scheduling_message == b.scheduling_message
}

/// Whether a node object is a manager's (see [`StoreData::others_changed`]).
fn is_manager(node: &Node) -> bool {
    node.spec
        .as_ref()
        .is_some_and(|s| s.role() == NodeRole::Manager)
}

impl StoreData {
    /// The cluster object (there is exactly one once the cluster exists).
    pub fn cluster(&self) -> Option<&Cluster> {
        self.clusters.values().next()
    }

    /// A deployment by exact name.
    pub fn deployment_by_name(&self, name: &str) -> Option<&Deployment> {
        self.deployments
            .values()
            .find(|d| d.spec.as_ref().is_some_and(|s| s.name == name))
    }

    /// The Service object fronting a deployment, if any.
    pub fn service_of_deployment(&self, deployment_id: &str) -> Option<&Service> {
        self.services
            .values()
            .find(|s| s.deployment_id == deployment_id)
    }

    /// A secret by exact name.
    pub fn secret_by_name(&self, name: &str) -> Option<&Secret> {
        self.secrets
            .values()
            .find(|s| s.spec.as_ref().is_some_and(|s| s.name == name))
    }

    /// A config by exact name.
    pub fn config_by_name(&self, name: &str) -> Option<&Config> {
        self.configs
            .values()
            .find(|s| s.spec.as_ref().is_some_and(|s| s.name == name))
    }

    /// Pods of one deployment, every revision and history included.
    pub fn pods_of_deployment<'a>(
        &'a self,
        deployment_id: &'a str,
    ) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods
            .values()
            .filter(move |p| p.deployment_id == deployment_id)
    }

    /// Pods placed on one node, every state included, by id.
    pub fn pods_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods_by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|(id, _)| self.pods.get(id))
    }

    /// The ids of the pods placed on `node_id`, each with the mark of its
    /// last change that its node is sent (as [`StoreData::pods_changed_on`]
    /// counts them: not its status or meta). A reader that remembers the
    /// marks it saw learns which pods were added, changed or removed since,
    /// without comparing the pods (a worker session sends only those).
    pub fn pod_marks_on_node<'a>(
        &'a self,
        node_id: &str,
    ) -> impl Iterator<Item = (&'a String, u64)> + 'a {
        self.pods_by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .map(|(id, mark)| (id, *mark))
    }

    /// A mark of the last change to a pod placed on `node_id` (written,
    /// removed, or moved to or from it), but for its status and meta alone:
    /// what the node is sent of its pods, not what it reported (status
    /// reports are most of the pod writes). Marks are only compared: equal
    /// marks from two reads mean no such change in between. For readers
    /// that rebuild something per node on every change of the store (a
    /// worker session's assignments) and skip it when nothing they read
    /// changed. Kept, like the index, by apply, restore and `put_pod`.
    pub fn pods_changed_on(&self, node_id: &str) -> u64 {
        self.pod_writes_on_node.get(node_id).copied().unwrap_or(0)
    }

    /// A mark of the last change to any pod (see [`StoreData::pods_changed_on`]).
    pub fn pods_changed(&self) -> u64 {
        self.pod_writes
    }

    /// A mark of the last change to anything but a pod or a worker node
    /// (see [`StoreData::pods_changed_on`]). Worker nodes are left out: at
    /// thousands of nodes their registrations and state changes come many
    /// times a second, and what every node is sent reads only the managers'
    /// node objects (a reader of one worker's own node reads it directly).
    pub fn others_changed(&self) -> u64 {
        self.other_writes
    }

    /// Moves the pods' mark, and `node_id`'s unless only the pod's status
    /// or meta changed (`assignment_changed` false).
    fn pod_changed_on(&mut self, node_id: &str, assignment_changed: bool) {
        self.writes += 1;
        self.pod_writes = self.writes;
        if assignment_changed && !node_id.is_empty() {
            self.pod_writes_on_node
                .insert(node_id.to_string(), self.writes);
            self.touch_node(node_id);
        }
    }

    fn touch_node(&mut self, node_id: &str) {
        if !self.nodes_touched.contains(node_id) {
            self.nodes_touched.insert(node_id.to_string());
        }
    }

    /// Whether a service publishes ingress ports: then every node is sent
    /// the endpoints of its pods, and every pod change (their status too)
    /// concerns every node.
    pub fn publishes_ingress(&self) -> bool {
        self.services
            .values()
            .any(|s| crate::objects::has_ingress_ports(&s.ports))
    }

    fn other_changed(&mut self) {
        self.writes += 1;
        self.other_writes = self.writes;
    }

    /// Adds or replaces a pod, keeping the index by node.
    pub fn put_pod(&mut self, pod: Pod) {
        // The pod as it was, read once: where it ran, and whether what its
        // node is sent of it changes.
        let (old_node, assignment_changed) = match self.pods.get(&pod.id) {
            Some(old) => (Some(old.node_id.clone()), !same_assignment(old, &pod)),
            None => (None, true),
        };
        let moved = old_node.as_deref() != Some(pod.node_id.as_str());
        if let Some(old) = old_node.filter(|_| moved) {
            self.pod_changed_on(&old, true);
            self.unindex_pod(&old, &pod.id);
        }
        self.pod_changed_on(&pod.node_id, assignment_changed);
        if (moved || assignment_changed) && !pod.node_id.is_empty() {
            let mark = self.writes;
            let marks = self.pods_by_node.entry(pod.node_id.clone()).or_default();
            match marks.get_mut(&pod.id) {
                Some(m) => *m = mark,
                None => {
                    marks.insert(pod.id.clone(), mark);
                }
            }
        }
        self.pods.insert(pod);
    }

    /// Removes a pod, keeping the index by node.
    pub fn remove_pod(&mut self, id: &str) -> Option<Pod> {
        let pod = self.pods.remove(id)?;
        self.unindex_pod(&pod.node_id, id);
        self.pod_changed_on(&pod.node_id, true);
        Some(pod)
    }

    /// Removes an object that is not a pod (see [`StoreData::remove_pod`]);
    /// moves the others' mark unless it is a worker node.
    fn remove_other(&mut self, kind: ObjectKind, id: &str) {
        let removed = match kind {
            ObjectKind::Cluster => self.clusters.remove(id).is_some(),
            ObjectKind::Node => {
                let removed = self.nodes.remove(id);
                if removed.is_some() {
                    self.touch_node(id);
                }
                removed.is_some_and(|n| is_manager(&n))
            }
            ObjectKind::Deployment => self.deployments.remove(id).is_some(),
            ObjectKind::ReplicaSet => self.replica_sets.remove(id).is_some(),
            ObjectKind::Service => self.services.remove(id).is_some(),
            ObjectKind::Secret => self.secrets.remove(id).is_some(),
            ObjectKind::Config => self.configs.remove(id).is_some(),
            ObjectKind::Pod | ObjectKind::Unspecified => false,
        };
        if removed {
            self.other_changed();
        }
    }

    fn unindex_pod(&mut self, node_id: &str, id: &str) {
        if let Some(ids) = self.pods_by_node.get_mut(node_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.pods_by_node.remove(node_id);
            }
        }
    }

    /// ReplicaSets (revisions) of one deployment, oldest first.
    pub fn replica_sets_of_deployment(&self, deployment_id: &str) -> Vec<&ReplicaSet> {
        let mut v: Vec<&ReplicaSet> = self
            .replica_sets
            .values()
            .filter(|r| r.deployment_id == deployment_id)
            .collect();
        v.sort_by_key(|r| r.revision);
        v
    }

    fn insert(&mut self, obj: Object) {
        let other = match &obj.kind {
            Some(object::Kind::Pod(_)) | None => false,
            Some(object::Kind::Node(n)) => {
                is_manager(n) || self.nodes.get(&n.id).is_some_and(is_manager)
            }
            Some(_) => true,
        };
        if other {
            self.other_changed();
        }
        match obj.kind {
            Some(object::Kind::Cluster(o)) => {
                self.clusters.insert(o.id.clone(), o);
            }
            Some(object::Kind::Node(o)) => {
                self.touch_node(&o.id);
                self.nodes.insert(o.id.clone(), o);
            }
            Some(object::Kind::Deployment(o)) => {
                self.deployments.insert(o.id.clone(), o);
            }
            Some(object::Kind::ReplicaSet(o)) => {
                self.replica_sets.insert(o.id.clone(), o);
            }
            Some(object::Kind::Pod(o)) => self.put_pod(o),
            Some(object::Kind::Service(o)) => {
                self.services.insert(o.id.clone(), o);
            }
            Some(object::Kind::Secret(o)) => {
                self.secrets.insert(o.id.clone(), o);
            }
            Some(object::Kind::Config(o)) => {
                self.configs.insert(o.id.clone(), o);
            }
            None => {}
        }
    }

    fn all_objects(&self) -> Vec<Object> {
        let mut out = Vec::new();
        let wrap = |k| Object { kind: Some(k) };
        out.extend(
            self.clusters
                .values()
                .cloned()
                .map(object::Kind::Cluster)
                .map(wrap),
        );
        out.extend(
            self.nodes
                .values()
                .cloned()
                .map(object::Kind::Node)
                .map(wrap),
        );
        out.extend(
            self.deployments
                .values()
                .cloned()
                .map(object::Kind::Deployment)
                .map(wrap),
        );
        out.extend(
            self.replica_sets
                .values()
                .cloned()
                .map(object::Kind::ReplicaSet)
                .map(wrap),
        );
        out.extend(self.pods.values().cloned().map(object::Kind::Pod).map(wrap));
        out.extend(
            self.services
                .values()
                .cloned()
                .map(object::Kind::Service)
                .map(wrap),
        );
        out.extend(
            self.secrets
                .values()
                .cloned()
                .map(object::Kind::Secret)
                .map(wrap),
        );
        out.extend(
            self.configs
                .values()
                .cloned()
                .map(object::Kind::Config)
                .map(wrap),
        );
        out
    }
}

/// The object store. Cheap to share (`Arc<Store>`); reads never block on
/// Raft, only on a concurrent apply.
///
/// Long reads (a controller's pass over every pod: tens to hundreds of
/// milliseconds at 100,000 pods) go through [`Store::read_long`], and the
/// Raft apply waits for them with [`Store::long_reads_done`] before it
/// takes the write lock. A writer queued on the lock holds back every new
/// reader (the lock prefers writers), so an apply queued behind a pass
/// stopped every worker session and heartbeat that read the store, and
/// with them the runtime threads that Raft's own tasks needed: the leader
/// missed its AppendEntries deadlines for the length of a pass.
#[derive(Debug)]
pub struct Store {
    data: RwLock<StoreData>,
    changes: watch::Sender<u64>,
    sessions: SessionWakers,
    /// Long reads in progress, and the wake-up when one ends.
    long_reads: AtomicUsize,
    long_read_ended: tokio::sync::Notify,
}

/// Longest wait of an apply for long reads to end: past it the apply
/// queues on the lock as before (passes are spaced by their own length,
/// so this is a bound for the unlucky case, not the usual wait).
const LONG_READ_WAIT: Duration = Duration::from_secs(1);

/// Counts one long read while it lives (even if the read panics).
struct LongRead<'a>(&'a Store);

impl Drop for LongRead<'_> {
    fn drop(&mut self) {
        self.0.long_reads.fetch_sub(1, Ordering::SeqCst);
        self.0.long_read_ended.notify_waiters();
    }
}

impl Store {
    pub fn new() -> Arc<Store> {
        Arc::new(Store {
            data: RwLock::new(StoreData::default()),
            changes: watch::channel(0).0,
            sessions: SessionWakers::default(),
            long_reads: AtomicUsize::new(0),
            long_read_ended: tokio::sync::Notify::new(),
        })
    }

    /// Runs `f` on a consistent view of the store.
    pub fn read<T>(&self, f: impl FnOnce(&StoreData) -> T) -> T {
        let guard = self.data.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// [`Store::read`] for a reader that holds the store long (a pass over
    /// every pod), on a thread that may block: the Raft apply waits for it
    /// to end before it queues on the lock (see [`Store`]).
    pub fn read_long<T>(&self, f: impl FnOnce(&StoreData) -> T) -> T {
        self.long_reads.fetch_add(1, Ordering::SeqCst);
        let _counted = LongRead(self);
        self.read(f)
    }

    /// Waits, without blocking a thread, until no [`Store::read_long`] is
    /// in progress (at most [`LONG_READ_WAIT`]), so that a write that
    /// follows does not queue behind one.
    pub async fn long_reads_done(&self) {
        let wait = async {
            loop {
                let ended = self.long_read_ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if self.long_reads.load(Ordering::SeqCst) == 0 {
                    return;
                }
                ended.await;
            }
        };
        let _ = tokio::time::timeout(LONG_READ_WAIT, wait).await;
    }

    /// A watch on the last applied Raft index: it changes after every apply
    /// and restore, so controllers wake when anything changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Applies one committed batch at Raft log index `index`. Deterministic:
    /// every manager computes the same outcome from the same log. Never
    /// panics on bad input; an unknown batch format skips every mutation.
    pub fn apply(&self, index: u64, batch: &Batch) -> BatchResult {
        let (result, every_node, nodes) = {
            let mut guard = self.data.write().unwrap_or_else(|e| e.into_inner());
            let (others, pods) = (guard.others_changed(), guard.pods_changed());
            let result = mutate::apply_batch(&mut guard, index, batch);
            guard.last_applied = index;
            let nodes = std::mem::take(&mut guard.nodes_touched);
            let every_node = guard.others_changed() != others
                || (guard.pods_changed() != pods && guard.publishes_ingress());
            (result, every_node, nodes)
        };
        self.changes.send_replace(index);
        self.sessions.wake(index, every_node, &nodes);
        result
    }

    /// What wakes the worker session of `node_id`: a change to what its
    /// node is sent (see [`StoreData::pods_changed_on`] and
    /// [`StoreData::others_changed`]), or to its node object. Not the
    /// status reports of its pods, nor anything about other workers: at
    /// thousands of nodes, waking every session after every apply (status
    /// reports are most of them) filled the managers' runtime with
    /// thousands of wake-ups that found nothing to send, and heartbeats
    /// queued behind them for seconds.
    pub fn subscribe_session(&self, node_id: &str) -> SessionChanges {
        SessionChanges {
            every_node: self.sessions.every_node.subscribe(),
            node: self.sessions.subscribe(node_id),
        }
    }

    /// Every object, for a Raft snapshot.
    pub fn snapshot(&self) -> StoreSnapshot {
        self.read(|d| StoreSnapshot {
            format: shoal_proto::defaults::SNAPSHOT_FORMAT,
            objects: d.all_objects(),
        })
    }

    /// Replaces the whole content with a snapshot's, taken at Raft index `index`.
    pub fn restore(&self, snapshot: StoreSnapshot, index: u64) {
        {
            let mut guard = self.data.write().unwrap_or_else(|e| e.into_inner());
            // Change marks go on from the replaced content's, so a reader's
            // earlier mark never matches a restored store by accident.
            let mut fresh = StoreData {
                writes: guard.writes,
                ..StoreData::default()
            };
            fresh.other_changed();
            for obj in snapshot.objects {
                fresh.insert(obj);
            }
            fresh.last_applied = index;
            fresh.nodes_touched.clear();
            *guard = fresh;
        }
        self.changes.send_replace(index);
        self.sessions.wake(index, true, &HashSet::new());
    }
}

/// The watches behind [`Store::subscribe_session`]: one every session
/// follows, and one per node.
#[derive(Debug)]
struct SessionWakers {
    every_node: watch::Sender<u64>,
    nodes: Mutex<NodeWakers>,
}

#[derive(Debug, Default)]
struct NodeWakers {
    by_node: HashMap<String, watch::Sender<u64>>,
    /// Entries after the last pruning of those nobody follows.
    pruned_at: usize,
}

impl Default for SessionWakers {
    fn default() -> Self {
        SessionWakers {
            every_node: watch::channel(0).0,
            nodes: Mutex::default(),
        }
    }
}

impl SessionWakers {
    fn lock(&self) -> std::sync::MutexGuard<'_, NodeWakers> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscribe(&self, node_id: &str) -> watch::Receiver<u64> {
        let mut wakers = self.lock();
        // Nodes removed from the cluster leave entries nobody follows;
        // pruned once the map has doubled, so a subscription costs O(1)
        // amortized.
        if wakers.by_node.len() > 2 * wakers.pruned_at + 64 {
            wakers.by_node.retain(|_, tx| tx.receiver_count() > 0);
            wakers.pruned_at = wakers.by_node.len();
        }
        match wakers.by_node.get(node_id) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                wakers.by_node.insert(node_id.to_string(), tx);
                rx
            }
        }
    }

    /// Wakes every session, or those of `nodes`, after the apply at `index`.
    fn wake(&self, index: u64, every_node: bool, nodes: &HashSet<String>) {
        if every_node {
            self.every_node.send_replace(index);
            return;
        }
        if nodes.is_empty() {
            return;
        }
        let wakers = self.lock();
        for id in nodes {
            if let Some(tx) = wakers.by_node.get(id) {
                tx.send_replace(index);
            }
        }
    }
}

/// A worker session's wake-ups (see [`Store::subscribe_session`]).
pub struct SessionChanges {
    every_node: watch::Receiver<u64>,
    node: watch::Receiver<u64>,
}

impl SessionChanges {
    /// Marks what changed so far as seen: call before reading the store.
    pub fn mark_seen(&mut self) {
        self.every_node.borrow_and_update();
        self.node.borrow_and_update();
    }

    /// Resolves at the next change for this session not marked seen; an
    /// error once the store is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        tokio::select! {
            r = self.every_node.changed() => r,
            r = self.node.changed() => r,
        }
    }
}

#[cfg(test)]
mod tests;
