//! Workers' status reports into Raft, by group commit: a report that finds
//! no status proposal in flight is proposed at once; reports that arrive
//! while one is in flight are gathered and proposed together as soon as it
//! finishes. So a lone report (a rollout's slot, one new pod) pays no batch
//! window, and a burst still becomes few proposals, each of at most
//! [`MAX_REPORTS_PER_PROPOSAL`]. Each pod is written at the version read (a
//! conflict puts the report back for the next round, so a status write
//! never overwrites a concurrent desired-state change).
//!
//! Reports only commit on the leader. When this manager stops leading, the
//! reports it holds are dropped (retrying them here would never commit),
//! and the nodes that sent them are told through
//! [`StatusBatcher::lost_reports`] so that their sessions end: a node
//! re-sends the state of all its pods on its next session (worker's
//! `agent/reporter.rs`), whichever manager leads then.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::{now_ms, MutationOutcome, PodStatus, PodStatusUpdate};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::objects::{touch, version};
use crate::proposer::{batch, Proposer};
use crate::raft::MAX_MUTATIONS_PER_ENTRY;
use crate::store::{put, Store};

/// Most reports one proposal carries: sixteen Raft entries' worth, which
/// [`crate::raft::RaftNode::propose`] submits together. Bounded, so one
/// proposal's size does not grow with the cluster; not one entry, because
/// with one proposal in flight at a time the bound is the throughput. In a
/// simulated 1000-node cluster placing 20,000 pods (docs/BENCHMARKS.md,
/// "Simulator at scale") one entry converged in 4.2-4.5 s against 3.4-3.5 s
/// for the unbounded 50 ms batches before and for this bound; the runs are
/// noisy (see there) and the bound is not tuned.
pub(crate) const MAX_REPORTS_PER_PROPOSAL: usize = 16 * MAX_MUTATIONS_PER_ENTRY;

/// Pause after a proposal failed on a manager that still leads (a quorum
/// is missing), so the retry does not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// One report: the node that sent it and the status.
type Report = (String, PodStatus);

/// Reports not proposed yet, the newest per pod, oldest pod first (so a
/// pod whose reports keep coming is not served before one waiting longer).
#[derive(Default)]
struct Pending {
    reports: HashMap<String, Report>,
    order: VecDeque<String>,
}

impl Pending {
    /// Replaces an older report of the same pod, keeping its place.
    fn insert(&mut self, pod_id: String, report: Report) {
        if self.reports.insert(pod_id.clone(), report).is_none() {
            self.order.push_back(pod_id);
        }
    }

    /// Puts a report back unless a newer one arrived meanwhile.
    fn insert_if_absent(&mut self, pod_id: &str, report: &Report) {
        if !self.reports.contains_key(pod_id) {
            self.insert(pod_id.to_string(), report.clone());
        }
    }

    /// The oldest `limit` reports.
    fn take(&mut self, limit: usize) -> HashMap<String, Report> {
        let n = limit.min(self.order.len());
        self.order
            .drain(..n)
            .filter_map(|id| self.reports.remove(&id).map(|r| (id, r)))
            .collect()
    }

    /// Empties it; returns the nodes whose reports were in it.
    fn clear(&mut self) -> HashSet<String> {
        self.order.clear();
        self.reports.drain().map(|(_, (node, _))| node).collect()
    }

    fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }
}

/// Nodes whose accepted status reports were dropped because this manager
/// stopped leading.
pub type LostReports = Arc<HashSet<String>>;

#[derive(Clone)]
pub struct StatusBatcher {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    lost: broadcast::Sender<LostReports>,
}

impl StatusBatcher {
    pub fn start(
        store: Arc<Store>,
        proposer: Arc<dyn Proposer>,
        cancel: CancellationToken,
    ) -> Self {
        let batcher = StatusBatcher {
            pending: Arc::default(),
            wake: Arc::new(Notify::new()),
            lost: broadcast::channel(16).0,
        };
        let b = batcher.clone();
        tokio::spawn(async move { b.run(store, proposer, cancel).await });
        batcher
    }

    /// Queues reports from `node_id`; a later report for the same pod
    /// replaces an earlier unsent one.
    pub fn submit(&self, node_id: &str, updates: Vec<PodStatusUpdate>) {
        let mut pending = self.pending();
        for u in updates {
            if let Some(status) = u.status {
                pending.insert(u.pod_id, (node_id.to_string(), status));
            }
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// Tells which nodes' reports were dropped when this manager stopped
    /// leading: their sessions must end, so that they report again (a
    /// lagging receiver cannot tell, and must end its session too).
    pub fn lost_reports(&self) -> broadcast::Receiver<LostReports> {
        self.lost.subscribe()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One proposal at a time: each round takes what gathered while the
    /// last one was in flight (a `Notify` keeps one wake-up for it).
    async fn run(self, store: Arc<Store>, proposer: Arc<dyn Proposer>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            if !proposer.leads() {
                self.drop_pending(HashSet::new());
                continue;
            }
            let taken = {
                let mut pending = self.pending();
                let taken = pending.take(MAX_REPORTS_PER_PROPOSAL);
                if !pending.is_empty() {
                    // The rest goes in the next round, right after this one.
                    self.wake.notify_one();
                }
                taken
            };
            let (ids, mutations) = status_writes(&store, &taken);
            if mutations.is_empty() {
                continue;
            }
            let started = std::time::Instant::now();
            match proposer.propose(batch(mutations, false)).await {
                Ok(result) => {
                    let conflicted: Vec<&String> = ids
                        .iter()
                        .zip(&result.outcomes)
                        .filter(|(_, o)| **o == MutationOutcome::Conflict as i32)
                        .map(|(id, _)| id)
                        .collect();
                    tracing::debug!(
                        reports = ids.len(),
                        conflicts = conflicted.len(),
                        took = ?started.elapsed(),
                        "status batch committed"
                    );
                    self.requeue(&taken, conflicted);
                }
                Err(e) if !proposer.leads() => {
                    tracing::warn!(error = %e, "status batch not committed: this manager no longer leads");
                    self.drop_pending(taken.into_values().map(|(node, _)| node).collect());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "status batch not committed; retrying");
                    self.requeue(&taken, ids.iter().collect());
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                }
            }
        }
    }

    /// Drops every pending report (and those of `nodes` already taken):
    /// they can only commit on the leader, and their nodes re-send them
    /// there on their next session.
    fn drop_pending(&self, mut nodes: HashSet<String>) {
        nodes.extend(self.pending().clear());
        if nodes.is_empty() {
            return;
        }
        tracing::warn!(
            nodes = nodes.len(),
            "this manager no longer leads: dropping the status reports it holds; their nodes report again to the leader"
        );
        // No receiver: no session to end.
        let _ = self.lost.send(Arc::new(nodes));
    }

    /// Puts reports back unless a newer one arrived meanwhile.
    fn requeue(&self, taken: &HashMap<String, Report>, ids: Vec<&String>) {
        if ids.is_empty() {
            return;
        }
        let mut pending = self.pending();
        for id in ids {
            if let Some(report) = taken.get(id) {
                pending.insert_if_absent(id, report);
            }
        }
        drop(pending);
        self.wake.notify_one();
    }
}

/// The pod writes for `reports`, with the pod ids in the same order: only
/// the node a pod is placed on reports for it, and an unchanged status
/// needs no write.
fn status_writes(
    store: &Store,
    reports: &HashMap<String, Report>,
) -> (Vec<String>, Vec<shoal_proto::Mutation>) {
    let now = now_ms();
    let mut ids = Vec::new();
    let mutations = store.read(|d| {
        reports
            .iter()
            .filter_map(|(pod_id, (node_id, status))| {
                let pod = d.pods.get(pod_id)?;
                if &pod.node_id != node_id || pod.status.as_ref() == Some(status) {
                    return None;
                }
                let mut p = pod.clone();
                p.status = Some(status.clone());
                touch(&mut p.meta, now);
                ids.push(pod_id.clone());
                Some(put(p, version(&pod.meta)))
            })
            .collect()
    });
    (ids, mutations)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::future::BoxFuture;
    use shoal_proto::{mutation, object, Batch, BatchResult, Object, Pod, PodState};
    use tokio::sync::{mpsc, Semaphore};
    use tokio::time::Instant;

    use super::*;
    use crate::raft::ProposeError;
    use crate::testutil::Fixture;

    /// Applies to the fixture's store like Raft would, after the test lets
    /// each proposal through (`gate`); tells the test what each proposal
    /// held (pod ids) as it starts. Fails its proposals while it does not
    /// lead.
    struct HeldProposer {
        fixture: Fixture,
        gate: Semaphore,
        started: mpsc::UnboundedSender<Vec<String>>,
        proposals: AtomicUsize,
        leads: AtomicBool,
    }

    impl Proposer for HeldProposer {
        fn propose(&self, batch: Batch) -> BoxFuture<'_, Result<BatchResult, ProposeError>> {
            Box::pin(async move {
                self.proposals.fetch_add(1, Ordering::SeqCst);
                let mut ids: Vec<String> = batch
                    .mutations
                    .iter()
                    .map(|m| match &m.op {
                        Some(mutation::Op::Put(Object {
                            kind: Some(object::Kind::Pod(p)),
                        })) => p.id.clone(),
                        _ => panic!("not a pod write"),
                    })
                    .collect();
                ids.sort();
                let _ = self.started.send(ids);
                self.gate.acquire().await.expect("gate").forget();
                if !self.leads() {
                    return Err(ProposeError::NoLeader);
                }
                Ok(self.fixture.apply(batch.mutations))
            })
        }

        fn leads(&self) -> bool {
            self.leads.load(Ordering::SeqCst)
        }
    }

    struct Setup {
        proposer: Arc<HeldProposer>,
        batcher: StatusBatcher,
        started: mpsc::UnboundedReceiver<Vec<String>>,
        _cancel: tokio_util::sync::DropGuard,
    }

    /// Pods `pod-0`..`pod-{n-1}` on node `n1`, plus `other` on `n2`.
    fn setup(n: usize) -> Setup {
        let fixture = Fixture::new();
        let mut pods: Vec<Pod> = (0..n)
            .map(|i| Pod {
                id: format!("pod-{i}"),
                node_id: "n1".into(),
                ..Default::default()
            })
            .collect();
        pods.push(Pod {
            id: "other".into(),
            node_id: "n2".into(),
            ..Default::default()
        });
        fixture.apply(pods.into_iter().map(|p| put(p, 0)).collect());
        let store = fixture.store.clone();
        let (tx, started) = mpsc::unbounded_channel();
        let proposer = Arc::new(HeldProposer {
            fixture,
            gate: Semaphore::new(0),
            started: tx,
            proposals: AtomicUsize::new(0),
            leads: AtomicBool::new(true),
        });
        let cancel = CancellationToken::new();
        let batcher = StatusBatcher::start(store, proposer.clone(), cancel.clone());
        Setup {
            proposer,
            batcher,
            started,
            _cancel: cancel.drop_guard(),
        }
    }

    /// The pods of the next proposal (the clock is paused: when none ever
    /// comes, it jumps to the limit at once and the test fails).
    async fn next_proposal(started: &mut mpsc::UnboundedReceiver<Vec<String>>) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(600), started.recv())
            .await
            .expect("no proposal was made")
            .expect("batcher running")
    }

    fn report(pod_id: &str, state: PodState) -> PodStatusUpdate {
        PodStatusUpdate {
            pod_id: pod_id.into(),
            status: Some(PodStatus {
                state: state as i32,
                ..Default::default()
            }),
        }
    }

    fn state_of(s: &Setup, pod_id: &str) -> Option<PodState> {
        s.proposer
            .fixture
            .store
            .read(|d| d.pods[pod_id].status.as_ref().map(|st| st.state()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_is_proposed_at_once_when_no_proposal_is_in_flight() {
        let mut s = setup(1);
        let submitted = Instant::now();
        s.batcher
            .submit("n1", vec![report("pod-0", PodState::Running)]);
        assert_eq!(next_proposal(&mut s.started).await, ["pod-0"]);
        // The clock is paused and moves only when every task waits on a
        // timer: a batch window would have moved it.
        assert_eq!(submitted.elapsed(), Duration::ZERO, "waited for a window");
    }

    #[tokio::test(start_paused = true)]
    async fn reports_that_arrive_during_a_proposal_go_together_in_the_next_one() {
        let mut s = setup(4);
        s.batcher
            .submit("n1", vec![report("pod-0", PodState::Starting)]);
        assert_eq!(next_proposal(&mut s.started).await, ["pod-0"]);

        // While the first is in flight.
        s.batcher
            .submit("n1", vec![report("pod-1", PodState::Starting)]);
        s.batcher
            .submit("n1", vec![report("pod-2", PodState::Starting)]);
        s.batcher.submit(
            "n1",
            vec![
                report("pod-1", PodState::Running),
                report("pod-3", PodState::Running),
            ],
        );
        tokio::task::yield_now().await;
        assert_eq!(s.proposer.proposals.load(Ordering::SeqCst), 1);

        s.proposer.gate.add_permits(1);
        assert_eq!(
            next_proposal(&mut s.started).await,
            ["pod-1", "pod-2", "pod-3"]
        );
        s.proposer.gate.add_permits(1);
        s.batcher
            .submit("n1", vec![report("pod-0", PodState::Running)]);
        assert_eq!(next_proposal(&mut s.started).await, ["pod-0"]);
        assert_eq!(
            state_of(&s, "pod-1"),
            Some(PodState::Running),
            "the newest report"
        );
        assert_eq!(state_of(&s, "pod-2"), Some(PodState::Starting));
        assert_eq!(s.proposer.proposals.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_proposal_carries_at_most_the_limit_and_the_rest_follows() {
        let n = MAX_REPORTS_PER_PROPOSAL + 2;
        let mut s = setup(n);
        s.proposer.gate.add_permits(2);
        let all = (0..n)
            .map(|i| report(&format!("pod-{i}"), PodState::Running))
            .collect();
        s.batcher.submit("n1", all);
        let first = next_proposal(&mut s.started).await;
        let second = next_proposal(&mut s.started).await;
        assert_eq!(first.len(), MAX_REPORTS_PER_PROPOSAL);
        assert_eq!(second.len(), 2);
        // The oldest reports go first.
        assert!(second.contains(&format!("pod-{}", n - 1)), "{second:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_from_a_node_the_pod_is_not_on_is_not_written() {
        let mut s = setup(1);
        s.proposer.gate.add_permits(1);
        s.batcher
            .submit("n2", vec![report("pod-0", PodState::Failed)]);
        s.batcher
            .submit("n2", vec![report("other", PodState::Running)]);
        assert_eq!(next_proposal(&mut s.started).await, ["other"]);
        assert_eq!(state_of(&s, "pod-0"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn reports_held_when_leadership_is_lost_are_dropped_and_their_nodes_told() {
        let mut s = setup(2);
        let mut lost = s.batcher.lost_reports();
        s.batcher
            .submit("n1", vec![report("pod-0", PodState::Running)]);
        assert_eq!(next_proposal(&mut s.started).await, ["pod-0"]);
        s.batcher
            .submit("n2", vec![report("other", PodState::Running)]);

        // The proposal in flight fails: this manager no longer leads.
        s.proposer.leads.store(false, Ordering::SeqCst);
        s.proposer.gate.add_permits(1);
        let nodes = tokio::time::timeout(Duration::from_secs(600), lost.recv())
            .await
            .expect("no node was told")
            .unwrap();
        assert_eq!(
            *nodes,
            HashSet::from(["n1".to_string(), "n2".to_string()]),
            "the taken and the pending reports' nodes"
        );
        assert_eq!(s.proposer.proposals.load(Ordering::SeqCst), 1);

        // Leading again: the dropped reports are not proposed, new ones are.
        s.proposer.leads.store(true, Ordering::SeqCst);
        s.proposer.gate.add_permits(1);
        s.batcher
            .submit("n1", vec![report("pod-1", PodState::Running)]);
        assert_eq!(next_proposal(&mut s.started).await, ["pod-1"]);
        assert_eq!(state_of(&s, "pod-0"), None);
        assert_eq!(state_of(&s, "other"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn reports_submitted_while_not_leading_are_dropped_and_their_nodes_told() {
        let s = setup(1);
        let mut lost = s.batcher.lost_reports();
        s.proposer.leads.store(false, Ordering::SeqCst);
        s.batcher
            .submit("n1", vec![report("pod-0", PodState::Running)]);
        assert_eq!(
            *lost.recv().await.unwrap(),
            HashSet::from(["n1".to_string()])
        );
        assert_eq!(s.proposer.proposals.load(Ordering::SeqCst), 0);
    }
}
