//! Followers forward Control API calls to the Raft leader (DESIGN.md §4):
//! writes must be proposed there, and linearizable reads need its read
//! index. [`ForwardLayer`] sits in front of the Control service
//! (`Server::builder().layer(ForwardLayer::new(raft, tls))`, on the Unix
//! socket and on the cluster port) and relays the raw HTTP/2 request, so
//! every unary and streaming RPC is forwarded without per-method code.
//!
//! - On the leader, and for the methods that are about this manager
//!   ([`LOCAL_ONLY`]: Info, Leave, ServiceLogs), the request is served here.
//! - Other services on the same server (Raft, Dispatcher, NodeCa) are never
//!   touched.
//! - On a follower, the request goes to the leader's cluster address over
//!   mutual TLS with this manager's certificate (one cached channel per
//!   leader address). The leader therefore authorizes this *manager*, not
//!   the original caller: on the cluster port put the
//!   [`crate::ca::authz::AuthzLayer`] outside this layer (tonic's first
//!   `layer` is the outermost: add the authz layer before this one) so the
//!   caller is checked before anything is forwarded on its behalf.
//! - A forwarded request carries [`FORWARDED_HEADER`]; a manager that gets
//!   one and is not the leader (leadership moved in between) answers
//!   `Unavailable` instead of forwarding again, so requests never loop.
//! - With no leader at all the caller gets `Unavailable` saying how many
//!   managers this one can reach, out of how many.
//! - A forwarded call is given up (`Unavailable`, outcome unknown, retry)
//!   as soon as Raft here no longer names the leader it was sent to: a dead
//!   leader's host sends no reset, so the call would otherwise wait until
//!   the caller's deadline or the reconnect's [`CONNECT_TIMEOUT`].

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::ca::tls::{error_chain, TlsConnectorService};
use crate::raft::RaftNode;

/// Marks a request a manager forwarded; its value is the forwarder's raft id.
pub const FORWARDED_HEADER: &str = "shoal-forwarded";

/// The Control service's methods, by path prefix.
const CONTROL_PREFIX: &str = "/shoal.v1.Control/";

/// Methods about the manager they are called on, served wherever they
/// arrive: Info describes this node, Leave stops it, ServiceLogs streams
/// from this node's view of the workers.
pub const LOCAL_ONLY: &[&str] = &[
    "/shoal.v1.Control/Info",
    "/shoal.v1.Control/Leave",
    "/shoal.v1.Control/ServiceLogs",
];

/// Time to open a connection to the leader before the call fails: short,
/// because a leader whose host died answers no SYN, and the caller should
/// hear so (and retry on the next leader) well before its own deadline.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The channel to the current leader, replaced when the leader moves.
struct LeaderChannel {
    tls: Arc<rustls::ClientConfig>,
    cached: Mutex<Option<(String, Channel)>>,
}

impl LeaderChannel {
    fn to(&self, addr: &str) -> Result<Channel, Status> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, channel)) = cached.as_ref() {
            if known == addr {
                return Ok(channel.clone());
            }
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| {
                Status::internal(format!(
                    "the Raft leader's address {addr:?} is not a valid host:port: {e}"
                ))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_with_connector_lazy(TlsConnectorService::new(self.tls.clone()));
        *cached = Some((addr.to_string(), channel.clone()));
        Ok(channel)
    }
}

/// Forwards Control API calls from a follower to the Raft leader.
#[derive(Clone)]
pub struct ForwardLayer {
    raft: RaftNode,
    leader: Arc<LeaderChannel>,
}

impl ForwardLayer {
    /// `tls` is this manager's client config (`ca::tls::client_config`):
    /// the leader must see a manager certificate.
    pub fn new(raft: RaftNode, tls: Arc<rustls::ClientConfig>) -> ForwardLayer {
        ForwardLayer {
            raft,
            leader: Arc::new(LeaderChannel {
                tls,
                cached: Mutex::new(None),
            }),
        }
    }
}

impl<S> tower::Layer<S> for ForwardLayer {
    type Service = ForwardService<S>;

    fn layer(&self, inner: S) -> ForwardService<S> {
        ForwardService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ForwardLayer`] wraps around the server's routes.
#[derive(Clone)]
pub struct ForwardService<S> {
    inner: S,
    layer: ForwardLayer,
}

/// Where one request goes.
enum Route {
    Here,
    Leader { addr: String, channel: Channel },
    Refuse(Status),
}

impl ForwardLayer {
    fn route(&self, request: &http::Request<Body>) -> Route {
        let path = request.uri().path();
        if !path.starts_with(CONTROL_PREFIX) || LOCAL_ONLY.contains(&path) || self.raft.is_leader()
        {
            return Route::Here;
        }
        if let Some(from) = request.headers().get(FORWARDED_HEADER) {
            let from = from.to_str().unwrap_or("?");
            return Route::Refuse(Status::unavailable(format!(
                "manager {} got {path} forwarded by manager {from} as the Raft leader, but \
                 is not the leader (leadership is moving); retry in a few seconds",
                self.raft.node_id()
            )));
        }
        let Some(addr) = self.raft.leader_addr() else {
            return Route::Refuse(self.no_leader());
        };
        match self.leader.to(&addr) {
            Ok(channel) => Route::Leader { addr, channel },
            Err(status) => Route::Refuse(status),
        }
    }

    fn no_leader(&self) -> Status {
        if !self.raft.is_voter() {
            return Status::unavailable(format!(
                "manager {} is not a voting member of the Raft cluster (it was removed, or is \
                 still joining) and knows no leader; call another manager",
                self.raft.node_id()
            ));
        }
        crate::quorum::no_leader(crate::quorum::Reach::of(&self.raft.managers()))
    }
}

type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for ForwardService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.layer.route(&request) {
            Route::Here => {
                // The instance that was polled ready serves this call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Route::Leader { addr, channel } => {
                let from = self.layer.raft.node_id();
                let mut leader = self.layer.raft.leader_watch();
                let sent_to = *leader.borrow_and_update();
                Box::pin(async move {
                    // A call in flight to a leader that died would wait for
                    // it (a dead peer sends no reset): give it up as soon as
                    // Raft no longer names that leader, so the caller can
                    // retry against the new one.
                    let deposed = leader.wait_for(|now| *now != sent_to);
                    tokio::select! {
                        response = forward(request, from, &addr, channel) => Ok(response),
                        _ = deposed => Ok(Status::unavailable(format!(
                            "the call was forwarded to the Raft leader at {addr}, which is no \
                             longer the leader (a new election began); its outcome is unknown: \
                             retry"
                        ))
                        .into_http()),
                    }
                })
            }
            Route::Refuse(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// Sends `request` as it is to the leader and returns its answer; a
/// failure to reach the leader becomes `Unavailable` naming it.
async fn forward(
    mut request: http::Request<Body>,
    from: u64,
    addr: &str,
    mut channel: Channel,
) -> http::Response<Body> {
    let path = request.uri().path().to_string();
    tracing::debug!(%path, leader = %addr, "forwarding a control API call to the Raft leader");
    // This connection's facts (TLS peer, authenticated caller) mean nothing
    // on the leader's connection.
    *request.extensions_mut() = http::Extensions::new();
    request
        .headers_mut()
        .insert(FORWARDED_HEADER, http::HeaderValue::from(from));
    let unreachable = |e: tonic::transport::Error| {
        tracing::warn!(%path, leader = %addr, error = %error_chain(&e), "cannot forward to the leader");
        Status::unavailable(format!(
            "this manager is not the Raft leader and cannot reach the leader at {addr}: {}; \
             retry, or call the leader directly",
            error_chain(&e)
        ))
        .into_http()
    };
    use tower::Service;
    if let Err(e) = poll_fn(|cx| channel.poll_ready(cx)).await {
        return unreachable(e);
    }
    channel.call(request).await.unwrap_or_else(unreachable)
}
