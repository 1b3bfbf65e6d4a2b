//! Default-deny authorization of every cluster RPC. [`TABLE`] names, for each
//! fully-qualified gRPC method, who may call it; a method missing from it is
//! refused (and a unit test fails listing it, so a new RPC cannot be
//! forgotten). [`AuthzLayer`] applies the table in front of tonic's router:
//! it reads the caller's certificate from the TLS connection, checks the
//! identity against the store through [`ClusterView`] (so a demoted or
//! removed node loses its rights at once, not when its certificate expires)
//! and hands the handler a [`Caller`] in the request's extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::CertificateDer;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use super::{PeerIdentity, Role};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any caller, even one without a certificate: only the CA bootstrap.
    Anyone,
    /// Callers whose current role is one of these.
    Roles(&'static [Role]),
    /// Like `Roles`, and the request is about the caller's own node: the
    /// handler must check the node id it names with [`ensure_own_node`].
    OwnNode(&'static [Role]),
}

const CONTROL: Access = Access::Roles(&[Role::Manager, Role::Client]);
const RAFT: Access = Access::Roles(&[Role::Manager]);
const DISPATCHER: Access = Access::OwnNode(&[Role::Worker, Role::Manager]);

/// Every RPC and who may call it. The Control API serves the CLI (remote
/// clients with a client certificate) and managers (forwarding to the
/// leader); Raft is managers only; the Dispatcher serves every node, each
/// for itself only; a node renews its certificate (always its own: the
/// request names no node); anyone may ask for a first certificate, which the
/// token secret in the request then decides. Clients get no renewal: they
/// ask an operator for a new client certificate.
pub const TABLE: &[(&str, Access)] = &[
    ("/shoal.v1.Control/CreateService", CONTROL),
    ("/shoal.v1.Control/GetService", CONTROL),
    ("/shoal.v1.Control/ListServices", CONTROL),
    ("/shoal.v1.Control/RemoveService", CONTROL),
    ("/shoal.v1.Control/ScaleService", CONTROL),
    ("/shoal.v1.Control/ListPods", CONTROL),
    ("/shoal.v1.Control/ServiceLogs", CONTROL),
    ("/shoal.v1.Control/ListNodes", CONTROL),
    ("/shoal.v1.Control/UpdateNode", CONTROL),
    ("/shoal.v1.Control/RemoveNode", CONTROL),
    ("/shoal.v1.Control/Info", CONTROL),
    ("/shoal.v1.Control/Leave", CONTROL),
    ("/shoal.v1.Control/UpdateService", CONTROL),
    ("/shoal.v1.Control/RollbackService", CONTROL),
    ("/shoal.v1.Control/PauseRollout", CONTROL),
    ("/shoal.v1.Control/ResumeRollout", CONTROL),
    ("/shoal.v1.Control/ListReplicaSets", CONTROL),
    ("/shoal.v1.Control/ListDeployments", CONTROL),
    ("/shoal.v1.Control/ListServiceObjects", CONTROL),
    ("/shoal.v1.Control/CreateSecret", CONTROL),
    ("/shoal.v1.Control/UpdateSecret", CONTROL),
    ("/shoal.v1.Control/GetSecret", CONTROL),
    ("/shoal.v1.Control/ListSecrets", CONTROL),
    ("/shoal.v1.Control/RemoveSecret", CONTROL),
    ("/shoal.v1.Control/CreateConfig", CONTROL),
    ("/shoal.v1.Control/UpdateConfig", CONTROL),
    ("/shoal.v1.Control/GetConfig", CONTROL),
    ("/shoal.v1.Control/ListConfigs", CONTROL),
    ("/shoal.v1.Control/RemoveConfig", CONTROL),
    ("/shoal.v1.Control/GetJoinToken", CONTROL),
    ("/shoal.v1.Control/RotateJoinToken", CONTROL),
    ("/shoal.v1.Control/GetGossipKeys", CONTROL),
    ("/shoal.v1.Control/RotateGossipKey", CONTROL),
    ("/shoal.v1.Control/IssueClientCertificate", CONTROL),
    ("/shoal.v1.Raft/AppendEntries", RAFT),
    ("/shoal.v1.Raft/RequestVote", RAFT),
    ("/shoal.v1.Raft/InstallSnapshot", RAFT),
    ("/shoal.v1.Dispatcher/Session", DISPATCHER),
    ("/shoal.v1.Dispatcher/Heartbeat", DISPATCHER),
    ("/shoal.v1.Dispatcher/UpdatePodStatus", DISPATCHER),
    ("/shoal.v1.NodeCa/IssueNodeCertificate", Access::Anyone),
    (
        "/shoal.v1.NodeCa/RenewNodeCertificate",
        Access::Roles(&[Role::Worker, Role::Manager]),
    ),
    ("/shoal.v1.Managers/GetManagerKeys", RAFT),
    ("/shoal.v1.Managers/JoinRaft", RAFT),
];

/// What the manager knows right now, read from its store on every call.
pub trait ClusterView: Send + Sync + 'static {
    fn cluster_id(&self) -> String;
    /// The cluster epoch, raised by `shoal init --force-new-cluster`.
    fn epoch(&self) -> u64;
    /// The role the store gives a node; `None` for a node it does not know.
    fn current_role(&self, node_id: &str) -> Option<Role>;
    /// Removed nodes and revoked client names: their certificates, still
    /// cryptographically valid, are refused.
    fn is_removed(&self, node_id: &str) -> bool;
}

/// The authenticated caller of an RPC, put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No client certificate (only reaches [`Access::Anyone`] methods).
    Anonymous,
    Peer {
        identity: PeerIdentity,
        /// The role the caller acts with now: the lower of its certificate's
        /// and the store's (a promoted node acts as a worker until it renews,
        /// a demoted one as a worker at once).
        role: Role,
    },
}

/// The table applied with a [`ClusterView`]: cheap to clone (one `Arc`),
/// one per server.
pub struct Policy<V> {
    view: Arc<V>,
}

impl<V> Clone for Policy<V> {
    fn clone(&self) -> Self {
        Policy {
            view: self.view.clone(),
        }
    }
}

/// Who may call `path`; `None` (refused) for a method not in [`TABLE`].
pub fn access(path: &str) -> Option<Access> {
    TABLE.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

impl<V: ClusterView> Policy<V> {
    pub fn new(view: Arc<V>) -> Policy<V> {
        Policy { view }
    }

    /// Decides one call of `path` by a caller that presented `peer_certs`
    /// (leaf first; already verified against our CA by rustls).
    pub fn authorize(
        &self,
        path: &str,
        peer_certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<Caller, Status> {
        let Some(access) = access(path) else {
            return Err(Status::permission_denied(format!(
                "{path} is not in the authorization table; refused by default"
            )));
        };
        let Some(leaf) = peer_certs.and_then(|certs| certs.first()) else {
            return match access {
                Access::Anyone => Ok(Caller::Anonymous),
                _ => Err(Status::unauthenticated(format!(
                    "{path} needs a client certificate from this cluster's CA: \
                     join the cluster (`shoal join`) or use a client certificate \
                     (`shoal ca client-cert`, then `--tls-dir`)"
                ))),
            };
        };
        let identity = PeerIdentity::from_certificate(leaf)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let role = self.current_role(&identity)?;
        let allowed = match access {
            Access::Anyone => true,
            Access::Roles(roles) | Access::OwnNode(roles) => roles.contains(&role),
        };
        if !allowed {
            return Err(Status::permission_denied(format!(
                "{role} {} may not call {path}",
                identity.node_id
            )));
        }
        Ok(Caller::Peer { identity, role })
    }

    /// The role `identity` may act with now, or why it may not act at all.
    fn current_role(&self, identity: &PeerIdentity) -> Result<Role, Status> {
        let view = &self.view;
        let denied = |why: String| Err(Status::permission_denied(why));
        let cluster_id = view.cluster_id();
        if identity.cluster_id != cluster_id {
            return denied(format!(
                "certificate of {identity} is for another cluster than {cluster_id}"
            ));
        }
        let epoch = view.epoch();
        if identity.epoch > epoch {
            return denied(format!(
                "certificate of {identity} is newer than this manager's cluster epoch \
                 {epoch}: this manager was fenced out by `shoal init --force-new-cluster`"
            ));
        }
        if identity.role == Role::Manager && identity.epoch < epoch {
            return denied(format!(
                "certificate of {identity} predates cluster epoch {epoch} \
                 (`shoal init --force-new-cluster`): this manager must rejoin"
            ));
        }
        if view.is_removed(&identity.node_id) {
            return denied(format!(
                "{} {} was removed from the cluster",
                identity.role, identity.node_id
            ));
        }
        if identity.role == Role::Client {
            return Ok(Role::Client);
        }
        match view.current_role(&identity.node_id) {
            None => denied(format!(
                "node {} is not a member of cluster {cluster_id}",
                identity.node_id
            )),
            Some(Role::Manager) => Ok(identity.role),
            Some(_) => Ok(Role::Worker),
        }
    }
}

/// The caller the layer authenticated, for a handler.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

/// Refuses a request about another node than the caller's own (dispatcher
/// sessions and status reports, certificate renewal). Without a
/// [`Caller`] (the layer is not installed) the request is refused too.
pub fn ensure_own_node<T>(request: &tonic::Request<T>, node_id: &str) -> Result<(), Status> {
    match caller(request) {
        Some(Caller::Peer { identity, .. }) if identity.node_id == node_id => Ok(()),
        Some(Caller::Peer { identity, .. }) => Err(Status::permission_denied(format!(
            "node {} may only act for itself, not for node {node_id}",
            identity.node_id
        ))),
        Some(Caller::Anonymous) | None => Err(Status::unauthenticated(format!(
            "no authenticated caller may act for node {node_id}"
        ))),
    }
}

/// Applies a [`Policy`] in front of a tonic server's services
/// (`Server::builder().layer(AuthzLayer::new(policy))`).
pub struct AuthzLayer<V> {
    policy: Policy<V>,
}

impl<V> Clone for AuthzLayer<V> {
    fn clone(&self) -> Self {
        AuthzLayer {
            policy: self.policy.clone(),
        }
    }
}

impl<V: ClusterView> AuthzLayer<V> {
    pub fn new(policy: Policy<V>) -> AuthzLayer<V> {
        AuthzLayer { policy }
    }
}

impl<S, V> tower::Layer<S> for AuthzLayer<V> {
    type Service = AuthzService<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthzService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service [`AuthzLayer`] wraps around tonic's router: refused calls
/// are answered here and never reach a handler.
pub struct AuthzService<S, V> {
    inner: S,
    policy: Policy<V>,
}

impl<S: Clone, V> Clone for AuthzService<S, V> {
    fn clone(&self) -> Self {
        AuthzService {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
        }
    }
}

type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, V, B> tower::Service<http::Request<B>> for AuthzService<S, V>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    V: ClusterView,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        let path = request.uri().path().to_string();
        match self
            .policy
            .authorize(&path, certs.as_deref().map(Vec::as_slice))
        {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                // The instance that was polled ready serves this call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(status) => {
                if status.code() == tonic::Code::Unauthenticated {
                    tracing::debug!(%path, reason = status.message(), "RPC refused");
                } else {
                    tracing::warn!(%path, reason = status.message(), "RPC refused");
                }
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
