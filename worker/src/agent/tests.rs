//! The agent against an in-process fake dispatcher and the sim executor:
//! session, reports, orphan removal, adoption after a restart, and a
//! container removed behind shoal's back.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::Stream;
use shoal_proto::dispatcher_server::{Dispatcher, DispatcherServer};
use shoal_proto::{
    Assignment, ContainerSpec, HeartbeatResponse, Pod, PodState, PodStatus, PodTemplate,
    UpdatePodStatusResponse,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};

use super::*;
use crate::exec::sim::SimExecutor;
use crate::exec::PodRef;

/// Streams whatever `assignments` holds (once it holds something) and
/// records every status report and heartbeat.
#[derive(Clone)]
struct FakeDispatcher {
    assignments: watch::Sender<Option<Vec<Assignment>>>,
    reports: Arc<Mutex<Vec<(String, PodStatus)>>>,
    heartbeats: Arc<Mutex<usize>>,
    /// When set, this dispatcher does not lead: it refuses sessions and
    /// names this address as the leader's.
    leader: Option<String>,
}

#[tonic::async_trait]
impl Dispatcher for FakeDispatcher {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send>>;

    async fn session(
        &self,
        _: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if let Some(leader) = &self.leader {
            return Err(shoal_proto::not_the_leader(leader));
        }
        let stream = WatchStream::new(self.assignments.subscribe()).filter_map(|set| {
            set.map(|assignments| {
                Ok(SessionMessage {
                    session_id: "s1".into(),
                    session_epoch: 1,
                    heartbeat_period_ms: 100,
                    assignments,
                    services: Vec::new(),
                    managers: Vec::new(),
                    role: 0,
                    gossip: None,
                    ..Default::default()
                })
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        *self.heartbeats.lock().unwrap() += 1;
        Ok(Response::new(HeartbeatResponse { period_ms: 100 }))
    }

    async fn update_pod_status(
        &self,
        request: Request<shoal_proto::UpdatePodStatusRequest>,
    ) -> Result<Response<UpdatePodStatusResponse>, Status> {
        let mut reports = self.reports.lock().unwrap();
        for u in request.into_inner().updates {
            reports.push((u.pod_id, u.status.unwrap_or_default()));
        }
        Ok(Response::new(UpdatePodStatusResponse {}))
    }
}

impl FakeDispatcher {
    /// The latest reported status of each pod.
    fn latest(&self) -> HashMap<String, PodStatus> {
        self.reports.lock().unwrap().iter().cloned().collect()
    }

    fn state_of(&self, pod_id: &str) -> Option<PodState> {
        self.latest().get(pod_id).map(|s| s.state())
    }
}

fn assignment(id: &str, image: &str, state: PodState) -> Assignment {
    let mut status = PodStatus::default();
    status.set_state(state);
    let mut pod = Pod {
        id: id.into(),
        status: Some(status),
        ..Default::default()
    };
    pod.set_desired_state(PodState::Running);
    Assignment {
        pod: Some(pod),
        template: Some(PodTemplate {
            container: Some(ContainerSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        pod_name: format!("web.{id}"),
        service_name: "web".into(),
        stack: String::new(),
        ..Default::default()
    }
}

fn start_agent(
    endpoint: &str,
    sim: &SimExecutor,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let config = AgentConfig {
        node_id: "n1".into(),
        hostname: "host1".into(),
        advertise_addr: "127.0.0.1".into(),
        managers: vec![endpoint.trim_start_matches("http://").into()],
    };
    let handle = tokio::spawn({
        let shutdown = shutdown.clone();
        let executor: Arc<dyn Executor> = Arc::new(sim.clone());
        async move {
            run_agent(config, AgentLinks::plaintext(), executor, None, shutdown)
                .await
                .unwrap()
        }
    });
    (shutdown, handle)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_agent_runs_reports_sweeps_and_adopts() {
    let fake = FakeDispatcher {
        assignments: watch::channel(None).0,
        reports: Arc::default(),
        heartbeats: Arc::default(),
        leader: None,
    };
    let sim = SimExecutor::new();
    // A container left over from a pod that is no longer wanted.
    let orphan = assignment("old", "img", PodState::Running);
    sim.create(&orphan).await.unwrap();

    // The agent starts before the dispatcher exists: it keeps retrying.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (shutdown, handle) = start_agent(&endpoint, &sim);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = TcpListener::bind(endpoint.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DispatcherServer::new(fake.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    // Connected but no assignments yet: nothing is removed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        sim.container_count(),
        1,
        "removed before knowing what is wanted"
    );

    fake.assignments.send_replace(Some(vec![
        assignment("p1", "img", PodState::Assigned),
        assignment("p2", "sim/fail", PodState::Assigned),
    ]));
    eventually("p1 running", || {
        fake.state_of("p1") == Some(PodState::Running)
    })
    .await;
    eventually("p2 rejected", || {
        fake.state_of("p2") == Some(PodState::Rejected)
    })
    .await;
    eventually("orphan removed", || sim.container_count() == 1).await;
    let p1 = PodRef::new("p1", "web.p1");
    let running = fake.latest()["p1"].clone();
    assert!(running.ip.starts_with("10.255."), "{running:?}");
    assert!(fake.latest()["p2"].err.contains("could not be pulled"));
    eventually("heartbeats", || *fake.heartbeats.lock().unwrap() > 0).await;

    // Removed behind shoal's back: reported Failed.
    sim.delete(&p1);
    eventually("p1 failed", || {
        fake.state_of("p1") == Some(PodState::Failed)
    })
    .await;
    assert_eq!(fake.latest()["p1"].err, "container removed");

    // A new pod, then a restart of the agent: adopted, not re-created.
    fake.assignments
        .send_replace(Some(vec![assignment("p3", "img", PodState::Assigned)]));
    eventually("p3 running", || {
        fake.state_of("p3") == Some(PodState::Running)
    })
    .await;
    let p3 = PodRef::new("p3", "web.p3");
    let id_before = sim.inspect(&p3).await.unwrap().container_id;
    shutdown.cancel();
    handle.await.unwrap();
    assert_eq!(sim.container_count(), 1, "containers outlive the agent");

    // The managers hand back the status the agent last reported.
    let reports_before = fake.reports.lock().unwrap().len();
    let mut adopted = assignment("p3", "img", PodState::Running);
    adopted.pod.as_mut().unwrap().status = Some(fake.latest()["p3"].clone());
    fake.assignments.send_replace(Some(vec![adopted]));
    let (shutdown, handle) = start_agent(&endpoint, &sim);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sim.container_count(), 1);
    assert_eq!(sim.inspect(&p3).await.unwrap().container_id, id_before);
    assert_eq!(
        fake.reports.lock().unwrap().len(),
        reports_before,
        "an adopted running pod has no change to report"
    );

    // The pod leaves the set: its container is removed.
    fake.assignments.send_replace(Some(Vec::new()));
    eventually("p3 removed", || sim.container_count() == 0).await;
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn an_invalid_endpoint_is_a_clear_error() {
    let err = run_agent(
        AgentConfig {
            node_id: "n".into(),
            hostname: "h".into(),
            advertise_addr: "a".into(),
            managers: vec!["not an address".into()],
        },
        AgentLinks::plaintext(),
        Arc::new(SimExecutor::new()),
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("invalid manager address"), "{err}");
}

async fn serve(fake: FakeDispatcher) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DispatcherServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test]
async fn a_manager_that_does_not_lead_sends_the_agent_to_the_leader() {
    let leader = FakeDispatcher {
        assignments: watch::channel(None).0,
        reports: Arc::default(),
        heartbeats: Arc::default(),
        leader: None,
    };
    let leader_addr = serve(leader.clone()).await;
    let follower = FakeDispatcher {
        leader: Some(leader_addr.clone()),
        ..leader.clone()
    };
    // The follower shares nothing with the leader but its address.
    let follower = FakeDispatcher {
        assignments: watch::channel(None).0,
        reports: Arc::default(),
        heartbeats: Arc::default(),
        ..follower
    };
    let follower_addr = serve(follower).await;
    let sim = SimExecutor::new();
    let (shutdown, handle) = start_agent(&follower_addr, &sim);
    leader
        .assignments
        .send_replace(Some(vec![assignment("p1", "img", PodState::Assigned)]));
    eventually("p1 running via the leader", || {
        leader.state_of("p1") == Some(PodState::Running)
    })
    .await;
    shutdown.cancel();
    handle.await.unwrap();
}

/// Sends one message per session, then ends it as a manager that lost
/// its quorum does; counts the sessions.
#[derive(Clone, Default)]
struct EndingDispatcher {
    sessions: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl Dispatcher for EndingDispatcher {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send>>;

    async fn session(
        &self,
        _: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        *self.sessions.lock().unwrap() += 1;
        let message = SessionMessage {
            session_id: "s".into(),
            session_epoch: 1,
            heartbeat_period_ms: 100,
            ..Default::default()
        };
        let ended = Status::unavailable("this manager lost its quorum");
        Ok(Response::new(Box::pin(tokio_stream::iter([
            Ok(message),
            Err(ended),
        ]))))
    }

    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        Ok(Response::new(HeartbeatResponse { period_ms: 100 }))
    }

    async fn update_pod_status(
        &self,
        _: Request<shoal_proto::UpdatePodStatusRequest>,
    ) -> Result<Response<UpdatePodStatusResponse>, Status> {
        Ok(Response::new(UpdatePodStatusResponse {}))
    }
}

#[tokio::test]
async fn sessions_that_end_are_opened_again_over_the_same_connection() {
    let fake = EndingDispatcher::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0usize));
    let incoming = TcpListenerStream::new(listener).map({
        let connections = connections.clone();
        move |accepted| {
            *connections.lock().unwrap() += 1;
            accepted
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DispatcherServer::new(fake.clone()))
            .serve_with_incoming(incoming),
    );
    let sim = SimExecutor::new();
    let (shutdown, handle) = start_agent(&format!("http://{addr}"), &sim);
    eventually("four sessions", || *fake.sessions.lock().unwrap() >= 4).await;
    shutdown.cancel();
    handle.await.unwrap();
    assert_eq!(*connections.lock().unwrap(), 1, "a connection per session");
}
