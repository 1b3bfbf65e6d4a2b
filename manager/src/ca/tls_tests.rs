//! Mutual TLS end to end on 127.0.0.1: a tonic server behind the
//! authorization layer serving the Raft service (a counting fake) and the
//! real node CA service, and clients with and without certificates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::node_ca_client::NodeCaClient;
use shoal_proto::node_ca_server::NodeCaServer;
use shoal_proto::raft_client::RaftClient;
use shoal_proto::raft_server::{Raft, RaftServer};
use shoal_proto::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    IssueNodeCertificateRequest, NodeRole, RenewNodeCertificateRequest, VoteRequest, VoteResponse,
};
use tonic::{Code, Request, Response, Status};

use super::authz::tests::FakeView;
use super::authz::{AuthzLayer, ClusterView, Policy};
use super::testutil::{ca, credentials};
use super::*;

#[tonic::async_trait]
impl Enrollment for FakeView {
    fn join_secrets(&self) -> JoinSecrets {
        self.secrets.lock().unwrap().clone()
    }
    async fn admit_node(&self, node_id: &str, role: Role) -> Result<(), Status> {
        self.roles.lock().unwrap().insert(node_id.into(), role);
        Ok(())
    }
}

/// Counts the calls that got past the TLS handshake and the policy.
#[derive(Clone, Default)]
struct CountingRaft(Arc<AtomicUsize>);

#[tonic::async_trait]
impl Raft for CountingRaft {
    async fn append_entries(
        &self,
        _: Request<AppendEntriesRequest>,
    ) -> Result<Response<AppendEntriesResponse>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(AppendEntriesResponse::default()))
    }
    async fn request_vote(
        &self,
        _: Request<VoteRequest>,
    ) -> Result<Response<VoteResponse>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(VoteResponse::default()))
    }
    async fn install_snapshot(
        &self,
        _: Request<InstallSnapshotRequest>,
    ) -> Result<Response<InstallSnapshotResponse>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(InstallSnapshotResponse::default()))
    }
}

struct Cluster {
    ca: Arc<Ca>,
    view: Arc<FakeView>,
    addr: SocketAddr,
    raft_calls: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Cluster {
    /// A manager "m1" serving on 127.0.0.1 with `server` credentials
    /// (m1's own unless given).
    async fn start(server: Option<NodeCredentials>) -> Cluster {
        let ca = Arc::new(ca("c1"));
        let view = FakeView::new("c1", &[("m1", Role::Manager)]);
        let server = server.unwrap_or_else(|| credentials(&ca, "m1", Role::Manager));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tls::incoming(listener, tls::server_config(&server).unwrap());
        let raft = CountingRaft::default();
        let raft_calls = raft.0.clone();
        let node_ca = NodeCaService::new(ca.clone(), view.clone(), Duration::from_secs(3600));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .layer(AuthzLayer::new(Policy::new(view.clone())))
            .add_service(RaftServer::new(raft))
            .add_service(NodeCaServer::new(node_ca));
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Cluster {
            ca,
            view,
            addr,
            raft_calls,
            _stop: stop,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn token(&self, role: Role) -> JoinToken {
        let secrets = self.view.join_secrets();
        let secret = if role == Role::Manager {
            secrets.manager
        } else {
            secrets.worker
        };
        self.ca.join_token(&secret).unwrap()
    }

    /// A RequestVote with `creds` (or none), as an error text when refused
    /// at the handshake or by the server.
    async fn vote(&self, config: Arc<rustls::ClientConfig>) -> Result<(), String> {
        let channel = tls::connect(&self.addr(), config)
            .await
            .map_err(|e| e.to_string())?;
        RaftClient::new(channel)
            .request_vote(VoteRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }

    /// Joins with `token`: a fresh key, the bootstrap call, credentials.
    async fn join(&self, token: &JoinToken) -> Result<NodeCredentials, String> {
        let keys = NodeKeys::generate().unwrap();
        let config = tls::bootstrap_client_config(token).unwrap();
        let channel = tls::connect(&self.addr(), config)
            .await
            .map_err(|e| e.to_string())?;
        let response = NodeCaClient::new(channel)
            .issue_node_certificate(IssueNodeCertificateRequest {
                token: token.to_string(),
                csr_der: keys.csr_der().unwrap(),
            })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        token.verify_ca(&response.ca_certificate_der).unwrap();
        Ok(NodeCredentials::new(
            response.certificate_der.into(),
            &keys,
            response.ca_certificate_der.into(),
        )
        .unwrap())
    }
}

#[tokio::test]
async fn a_node_certificate_gets_through_and_another_cas_is_refused_at_the_handshake() {
    let cluster = Cluster::start(None).await;
    cluster
        .view
        .roles
        .lock()
        .unwrap()
        .insert("m2".into(), Role::Manager);
    let m2 = credentials(&cluster.ca, "m2", Role::Manager);
    cluster
        .vote(tls::client_config(&m2).unwrap())
        .await
        .unwrap();
    assert_eq!(cluster.raft_calls.load(Ordering::SeqCst), 1);

    // Same cluster id, same node id, but a certificate of another CA: the
    // client trusts our CA, the server refuses its certificate.
    let impostor_ca = ca("c1");
    let impostor = credentials(&impostor_ca, "m2", Role::Manager);
    let err = cluster
        .vote(presenting(&impostor, cluster.ca.certificate_der()))
        .await
        .unwrap_err();
    // TLS 1.3: the client finishes its side first, so the refusal shows on
    // the first call as a broken connection, never as a gRPC answer.
    assert!(
        err.contains("transport error"),
        "refused at the handshake: {err}"
    );
    assert_eq!(cluster.raft_calls.load(Ordering::SeqCst), 1);

    // And a client that trusts another CA refuses this server.
    let err = cluster
        .vote(tls::client_config(&credentials(&impostor_ca, "m3", Role::Manager)).unwrap())
        .await
        .unwrap_err();
    assert!(err.contains("BadSignature"), "{err}");
}

/// A client config trusting `ca` that presents `creds`' certificate, even
/// when another CA issued it (which [`tls::client_config`] cannot build).
fn presenting(
    creds: &NodeCredentials,
    ca: &rustls::pki_types::CertificateDer<'static>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![creds.certificate_der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(creds.private_key_der().clone_key()),
    )
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn a_caller_without_a_certificate_is_refused_everything_but_the_bootstrap_call() {
    let cluster = Cluster::start(None).await;
    let token = cluster.token(Role::Worker);
    let err = cluster
        .vote(tls::bootstrap_client_config(&token).unwrap())
        .await
        .unwrap_err();
    assert!(err.starts_with("Unauthenticated"), "{err}");
    assert_eq!(cluster.raft_calls.load(Ordering::SeqCst), 0);

    let worker = cluster.join(&token).await.unwrap();
    let id = worker.identity().clone();
    assert_eq!(
        (id.role, id.cluster_id.as_str(), id.epoch),
        (Role::Worker, "c1", 1)
    );
    assert_eq!(cluster.view.current_role(&id.node_id), Some(Role::Worker));

    // A worker is refused by the Raft service, with its reason.
    let err = cluster
        .vote(tls::client_config(&worker).unwrap())
        .await
        .unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
    assert!(err.contains("worker"), "{err}");
    assert_eq!(cluster.raft_calls.load(Ordering::SeqCst), 0);

    // A manager token admits a manager, which may.
    let manager = cluster.join(&cluster.token(Role::Manager)).await.unwrap();
    assert_eq!(manager.identity().role, Role::Manager);
    assert_ne!(manager.identity().node_id, id.node_id);
    cluster
        .vote(tls::client_config(&manager).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn renewal_keeps_the_node_id_and_takes_the_stores_role() {
    let cluster = Cluster::start(None).await;
    let worker = cluster.join(&cluster.token(Role::Worker)).await.unwrap();
    let node_id = worker.identity().node_id.clone();
    cluster
        .view
        .roles
        .lock()
        .unwrap()
        .insert(node_id.clone(), Role::Manager);

    let keys = NodeKeys::generate().unwrap();
    let channel = tls::connect(&cluster.addr(), tls::client_config(&worker).unwrap())
        .await
        .unwrap();
    let renewed = NodeCaClient::new(channel)
        .renew_node_certificate(RenewNodeCertificateRequest {
            csr_der: keys.csr_der().unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.node_id, node_id);
    assert_eq!(renewed.role, NodeRole::Manager as i32);
    let promoted = NodeCredentials::new(
        renewed.certificate_der.into(),
        &keys,
        renewed.ca_certificate_der.into(),
    )
    .unwrap();
    assert_eq!(promoted.identity().node_id, node_id);
    cluster
        .vote(tls::client_config(&promoted).unwrap())
        .await
        .unwrap();

    // Without a certificate there is nothing to renew.
    let channel = tls::connect(
        &cluster.addr(),
        tls::bootstrap_client_config(&cluster.token(Role::Worker)).unwrap(),
    )
    .await
    .unwrap();
    let status = NodeCaClient::new(channel)
        .renew_node_certificate(RenewNodeCertificateRequest {
            csr_der: keys.csr_der().unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_wrong_or_rotated_token_is_refused_with_a_clear_message() {
    let cluster = Cluster::start(None).await;

    // Another cluster's token: the joining side refuses the server's CA
    // during the handshake, before the secret is sent.
    let other_ca = ca("c2");
    let foreign = other_ca
        .join_token(&cluster.view.join_secrets().worker)
        .unwrap();
    let err = cluster.join(&foreign).await.unwrap_err();
    assert!(err.contains("does not match the join token"), "{err}");
    assert_eq!(
        cluster.view.roles.lock().unwrap().len(),
        1,
        "nobody admitted"
    );

    // A rotated-out token.
    let old = cluster.token(Role::Worker);
    cluster.view.secrets.lock().unwrap().rotate_worker();
    let err = cluster.join(&old).await.unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
    assert!(err.contains("rotated out"), "{err}");
    cluster.join(&cluster.token(Role::Worker)).await.unwrap();

    // Garbage in the token field of the request.
    let channel = tls::connect(&cluster.addr(), tls::bootstrap_client_config(&old).unwrap())
        .await
        .unwrap();
    let status = NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            token: "SWMTKN-1-abc".into(),
            csr_der: vec![1, 2, 3],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("not a shoal join token"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_bad_csr_is_refused_and_admits_no_node() {
    let cluster = Cluster::start(None).await;
    let token = cluster.token(Role::Worker);
    let channel = tls::connect(
        &cluster.addr(),
        tls::bootstrap_client_config(&token).unwrap(),
    )
    .await
    .unwrap();
    let status = NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            token: token.to_string(),
            csr_der: b"not a CSR".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status
        .message()
        .contains("certificate signing request refused"));
    assert_eq!(cluster.view.roles.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_worker_certificate_cannot_serve_as_a_manager() {
    // The server presents a worker's certificate of the right CA: clients
    // refuse it (no manager server name, no server-auth usage).
    let ca_for_worker = ca("c1");
    let worker = credentials(&ca_for_worker, "w1", Role::Worker);
    let cluster = Cluster::start(Some(worker)).await;
    let m2 = credentials(&ca_for_worker, "m2", Role::Manager);
    let err = cluster
        .vote(tls::client_config(&m2).unwrap())
        .await
        .unwrap_err();
    assert!(err.contains("server authentication"), "{err}");
    assert_eq!(cluster.raft_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_client_that_does_not_speak_tls_does_not_stop_the_server() {
    use tokio::io::AsyncWriteExt;

    let cluster = Cluster::start(None).await;
    let mut junk = tokio::net::TcpStream::connect(cluster.addr).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    // A client that connects and says nothing holds only its own task.
    let _silent = tokio::net::TcpStream::connect(cluster.addr).await.unwrap();

    cluster
        .view
        .roles
        .lock()
        .unwrap()
        .insert("m2".into(), Role::Manager);
    let m2 = credentials(&cluster.ca, "m2", Role::Manager);
    cluster
        .vote(tls::client_config(&m2).unwrap())
        .await
        .unwrap();
    assert_eq!(cluster.raft_calls.load(Ordering::SeqCst), 1);
}
