//! Who may call what on a manager's cluster port, over the wire (mutual TLS
//! and the authorization layer in front of the real services), with the sim
//! cluster: a worker acts only for its own node, never reaches Raft or the
//! Control API; a caller without a certificate reaches nothing but the CA
//! bootstrap; a removed node is refused whatever its certificate says.

use shoal_manager::ca::{tls, Role};
use shoal_proto::control_client::ControlClient;
use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::raft_client::RaftClient;
use shoal_proto::{
    HeartbeatRequest, ListServicesRequest, SessionRequest, UpdatePodStatusRequest, VoteRequest,
};
use shoal_tests::cluster::SimCluster;
use tonic::Code;

async fn dispatcher_as(
    sc: &SimCluster,
    node: &str,
    role: Role,
) -> DispatcherClient<tonic::transport::Channel> {
    let creds = sc.credentials(node, role);
    let channel = tls::connect(&sc.addr, tls::client_config(&creds).unwrap())
        .await
        .expect("mutual TLS to the manager");
    DispatcherClient::new(channel)
}

#[tokio::test]
async fn a_worker_acts_only_for_its_own_node_and_reaches_neither_raft_nor_the_control_api() {
    let sc = SimCluster::start(2).await;
    let mut w0 = dispatcher_as(&sc, "sim-node-0", Role::Worker).await;

    // Its own node: fine.
    w0.heartbeat(HeartbeatRequest {
        node_id: "sim-node-0".into(),
        session_id: String::new(),
        gossip_version: 0,
        stopping: false,
    })
    .await
    .expect("a heartbeat for itself");

    // Another node: refused, for every dispatcher call.
    let e = w0
        .update_pod_status(UpdatePodStatusRequest {
            node_id: "sim-node-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("may only act for itself"), "{e:?}");
    let e = w0
        .session(SessionRequest {
            node_id: "sim-node-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = w0
        .heartbeat(HeartbeatRequest {
            node_id: "sim-node-1".into(),
            session_id: String::new(),
            gossip_version: 0,
            stopping: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A worker's certificate opens neither Raft nor the Control API.
    let creds = sc.credentials("sim-node-0", Role::Worker);
    let channel = tls::connect(&sc.addr, tls::client_config(&creds).unwrap())
        .await
        .unwrap();
    let e = RaftClient::new(channel.clone())
        .request_vote(VoteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = ControlClient::new(channel)
        .list_services(ListServicesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A certificate for a node the store does not know: refused.
    let mut stranger = dispatcher_as(&sc, "not-a-member", Role::Worker).await;
    let e = stranger
        .heartbeat(HeartbeatRequest {
            node_id: "not-a-member".into(),
            session_id: String::new(),
            gossip_version: 0,
            stopping: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not a member"), "{e:?}");

    // A removed node: blocklisted at once, its valid certificate refused.
    use shoal_proto::control_server::Control;
    sc.api
        .remove_node(tonic::Request::new(shoal_proto::RemoveNodeRequest {
            node: "sim-node-1".into(),
            force: true,
        }))
        .await
        .expect("node rm --force");
    let mut w1 = dispatcher_as(&sc, "sim-node-1", Role::Worker).await;
    let e = w1
        .heartbeat(HeartbeatRequest {
            node_id: "sim-node-1".into(),
            session_id: String::new(),
            gossip_version: 0,
            stopping: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("was removed"), "{e:?}");
    sc.stop().await;
}
