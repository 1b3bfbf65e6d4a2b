//! Sends pod status changes to the dispatcher, one `UpdatePodStatus` call
//! at a time (group commit, as the dispatcher's batcher does into Raft): a
//! change that finds no call in flight goes out at once; changes made while
//! a call is in flight are gathered, the newest per pod, and go together in
//! the next call as soon as it returns. A failed call is retried with the
//! newest status of each pod.
//!
//! Each new session is first told the current status of every pod of the
//! node: the manager of the last session may have accepted reports and then
//! lost its leadership before they reached Raft (it drops them), and a pod
//! whose status does not change would otherwise never be reported again.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::{PodStatus, PodStatusUpdate, UpdatePodStatusRequest};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, warn};

use super::backoff::Backoff;

/// What the pod tasks tell the reporter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Report {
    /// The pod's status changed.
    Status(String, PodStatus),
    /// The pod's task ended (the pod left the node's set): later sessions
    /// need not hear of it.
    Left(String),
}

/// The live session the reports go through.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    pub client: DispatcherClient<Channel>,
    pub session_id: String,
}

/// What is known and what is still to send.
#[derive(Debug, Default)]
struct Outbox {
    /// The newest status of every pod of the node.
    current: BTreeMap<String, PodStatus>,
    /// Changes no dispatcher has accepted yet, the newest per pod.
    unsent: BTreeMap<String, PodStatus>,
    /// The session that was told `current`.
    told: Option<String>,
}

impl Outbox {
    fn record(&mut self, report: Report) {
        match report {
            Report::Status(id, status) => {
                self.current.insert(id.clone(), status.clone());
                self.unsent.insert(id, status);
            }
            Report::Left(id) => {
                self.current.remove(&id);
            }
        }
    }

    /// The updates to send through `session_id`: the unsent changes, and
    /// every pod's status when the session is new to it.
    fn updates_for(&mut self, session_id: &str) -> Vec<PodStatusUpdate> {
        if self.told.as_deref() != Some(session_id) {
            self.unsent
                .extend(self.current.iter().map(|(id, s)| (id.clone(), s.clone())));
            self.told = Some(session_id.to_string());
        }
        self.unsent
            .iter()
            .map(|(id, status)| PodStatusUpdate {
                pod_id: id.clone(),
                status: Some(status.clone()),
            })
            .collect()
    }
}

pub(crate) async fn run(
    node_id: String,
    changes: mpsc::UnboundedReceiver<Report>,
    session: watch::Receiver<Option<SessionHandle>>,
    shutdown: CancellationToken,
) {
    run_with(node_id, changes, session, shutdown, |handle, request| {
        let mut client = handle.client;
        async move { client.update_pod_status(request).await.map(|_| ()) }
    })
    .await
}

/// [`run`], with the call made by `call` (tests hold calls in flight).
async fn run_with<F, Fut>(
    node_id: String,
    mut changes: mpsc::UnboundedReceiver<Report>,
    mut session: watch::Receiver<Option<SessionHandle>>,
    shutdown: CancellationToken,
    mut call: F,
) where
    F: FnMut(SessionHandle, UpdatePodStatusRequest) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut outbox = Outbox::default();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        // Wait for a change, or for a session message (it may open a new
        // session, which must be told every pod).
        if outbox.unsent.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                change = changes.recv() => match change {
                    Some(report) => outbox.record(report),
                    None => return,
                },
                changed = session.changed() => if changed.is_err() { return },
            }
        }
        // Whatever else came meanwhile (the rest of a reconcile pass, or
        // what changed during the last call) goes in the same call.
        while let Ok(report) = changes.try_recv() {
            outbox.record(report);
        }
        let Some(handle) = session.borrow_and_update().clone() else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = session.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let session_id = handle.session_id.clone();
        let updates = outbox.updates_for(&session_id);
        if updates.is_empty() {
            continue;
        }
        let count = updates.len();
        let request = UpdatePodStatusRequest {
            node_id: node_id.clone(),
            session_id: session_id.clone(),
            updates,
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = call(handle, request) => outcome,
            // A call that hangs (its manager starved, or a half-open
            // connection) must not hold the reports: the new session is
            // told everything anyway.
            _ = moved_from(&mut session, &session_id) => {
                debug!("a new session opened during a status call; reporting through it");
                continue;
            }
        };
        match outcome {
            Ok(()) => {
                debug!(updates = count, "reported pod status");
                outbox.unsent.clear();
                backoff.reset();
            }
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), pending = count, "reporting pod status failed; will retry");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    // A new session: retry through it at once.
                    _ = moved_from(&mut session, &session_id) => {}
                }
            }
        }
    }
}

/// Resolves once the session is another than `session_id` (never when the
/// agent is gone: its shutdown ends the reporter).
async fn moved_from(session: &mut watch::Receiver<Option<SessionHandle>>, session_id: &str) {
    loop {
        if session.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if session
            .borrow()
            .as_ref()
            .is_some_and(|h| h.session_id != session_id)
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_proto::PodState;
    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;
    use tonic::transport::Endpoint;

    use super::*;

    /// One call as the fake dispatcher saw it: the session and each pod's
    /// reported state, by pod id.
    type Call = (String, Vec<(String, PodState)>);

    struct Reporter {
        changes: mpsc::UnboundedSender<Report>,
        session: watch::Sender<Option<SessionHandle>>,
        calls: mpsc::UnboundedReceiver<Call>,
        /// One permit lets one call return.
        gate: Arc<Semaphore>,
        _task: JoinHandle<()>,
        _shutdown: tokio_util::sync::DropGuard,
    }

    impl Reporter {
        /// A reporter whose calls are recorded and return only as the test
        /// lets them (`gate`).
        fn start() -> Reporter {
            let (changes, rx) = mpsc::unbounded_channel();
            let (session, session_rx) = watch::channel(None);
            let (calls_tx, calls) = mpsc::unbounded_channel();
            let gate = Arc::new(Semaphore::new(0));
            let shutdown = CancellationToken::new();
            let held = gate.clone();
            let task = tokio::spawn(run_with(
                "n1".into(),
                rx,
                session_rx,
                shutdown.clone(),
                move |handle: SessionHandle, request: UpdatePodStatusRequest| {
                    let states = request
                        .updates
                        .into_iter()
                        .map(|u| (u.pod_id, u.status.unwrap_or_default().state()))
                        .collect();
                    let _ = calls_tx.send((handle.session_id, states));
                    let gate = held.clone();
                    async move {
                        gate.acquire().await.expect("gate").forget();
                        Ok(())
                    }
                },
            ));
            Reporter {
                changes,
                session,
                calls,
                gate,
                _task: task,
                _shutdown: shutdown.drop_guard(),
            }
        }

        /// Opens session `id` (its client is never dialled: calls are faked).
        fn open(&self, id: &str) {
            let channel = Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
            self.session.send_replace(Some(SessionHandle {
                client: DispatcherClient::new(channel),
                session_id: id.into(),
            }));
        }

        fn change(&self, pod_id: &str, state: PodState) {
            let mut status = PodStatus::default();
            status.set_state(state);
            self.changes
                .send(Report::Status(pod_id.into(), status))
                .expect("reporter running");
        }

        /// The next call (the clock is paused: when no call ever comes,
        /// it jumps to the limit at once and the test fails).
        async fn next_call(&mut self) -> Call {
            tokio::time::timeout(Duration::from_secs(600), self.calls.recv())
                .await
                .expect("no call was made")
                .expect("reporter running")
        }
    }

    fn states(pods: &[(&str, PodState)]) -> Vec<(String, PodState)> {
        pods.iter().map(|(id, s)| (id.to_string(), *s)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_goes_out_at_once_and_changes_during_a_call_go_together_next() {
        let mut r = Reporter::start();
        r.open("s1");
        let changed = Instant::now();
        r.change("a", PodState::Starting);
        let first = r.next_call().await;
        assert_eq!(first, ("s1".into(), states(&[("a", PodState::Starting)])));
        // The clock is paused and moves only when every task waits on a
        // timer: a gathering window would have moved it.
        assert_eq!(changed.elapsed(), Duration::ZERO, "waited for a window");

        // While the first call is in flight.
        r.change("b", PodState::Starting);
        r.change("c", PodState::Running);
        r.change("b", PodState::Running);
        tokio::task::yield_now().await;
        assert!(
            r.calls.try_recv().is_err(),
            "a second call while one is in flight"
        );

        r.gate.add_permits(1);
        let second = r.next_call().await;
        assert_eq!(
            second,
            (
                "s1".into(),
                states(&[("b", PodState::Running), ("c", PodState::Running)])
            ),
            "the newest status of each pod, together"
        );
        assert_eq!(changed.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_session_is_told_every_pod_of_the_node_but_not_those_that_left() {
        let mut r = Reporter::start();
        r.gate.add_permits(100);
        r.open("s1");
        r.change("a", PodState::Running);
        r.change("b", PodState::Starting);
        r.change("b", PodState::Running);
        r.change("c", PodState::Running);
        r.changes.send(Report::Left("c".into())).unwrap();
        // s1 is told each change once.
        let mut told = Vec::new();
        while told.len() < 3 {
            let (session, pods) = r.next_call().await;
            assert_eq!(session, "s1");
            told.extend(pods.into_iter().map(|(id, _)| id));
        }
        told.sort();
        assert_eq!(told, ["a", "b", "c"]);

        // Its manager may have dropped them: the next session hears the
        // current status of every pod still on the node, with no change.
        r.open("s2");
        assert_eq!(
            r.next_call().await,
            (
                "s2".into(),
                states(&[("a", PodState::Running), ("b", PodState::Running)])
            )
        );
        // Another message of the same session is no reason to tell it
        // everything again.
        r.open("s2");
        r.change("d", PodState::Starting);
        assert_eq!(
            r.next_call().await,
            ("s2".into(), states(&[("d", PodState::Starting)]))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_flight_when_a_new_session_opens_is_sent_again_through_it() {
        let mut r = Reporter::start();
        r.open("s1");
        r.change("a", PodState::Running);
        assert_eq!(r.next_call().await.0, "s1");
        // That call never returns; the agent opens a session elsewhere.
        r.open("s2");
        r.change("b", PodState::Starting);
        assert_eq!(
            r.next_call().await,
            (
                "s2".into(),
                states(&[("a", PodState::Running), ("b", PodState::Starting)])
            )
        );
    }
}
