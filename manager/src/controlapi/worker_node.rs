//! The Control API on a worker node's socket. A worker holds no cluster
//! state (no Raft, no store), so, as `docker service ls` on a Swarm worker,
//! every cluster command is refused with a message saying where to run it;
//! only Info (about this node) and Leave reach the handlers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use shoal_proto::{Batch, BatchResult};
use tonic::Status;

use crate::proposer::Proposer;
use crate::raft::ProposeError;

/// The methods a worker's socket serves itself.
const LOCAL_METHODS: &[&str] = &["/shoal.v1.Control/Info", "/shoal.v1.Control/Leave"];

/// What a cluster command on a worker answers.
pub fn not_a_manager() -> Status {
    Status::failed_precondition(
        "this node is a worker, not a manager: run the command on a manager \
         (they are marked in `shoal node ls` there), or from anywhere with \
         `-H tcp://MANAGER:2377 --tls-dir DIR` and a client certificate",
    )
}

/// Refuses every Control method but [`LOCAL_METHODS`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NotAManagerLayer;

impl<S> tower::Layer<S> for NotAManagerLayer {
    type Service = NotAManager<S>;

    fn layer(&self, inner: S) -> NotAManager<S> {
        NotAManager { inner }
    }
}

#[derive(Debug, Clone)]
pub struct NotAManager<S> {
    inner: S,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for NotAManager<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if LOCAL_METHODS.contains(&request.uri().path()) {
            let fut = self.inner.call(request);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        }
        let response = not_a_manager().into_http();
        Box::pin(async move { Ok(response) })
    }
}

/// The proposer of a worker's Control API: never called behind
/// [`NotAManagerLayer`], and refuses if it ever is.
pub struct NoProposer;

impl Proposer for NoProposer {
    fn propose(&self, _: Batch) -> BoxFuture<'_, Result<BatchResult, ProposeError>> {
        Box::pin(async {
            Err(ProposeError::Fatal(
                "this node is a worker: it holds no cluster state".into(),
            ))
        })
    }

    fn leads(&self) -> bool {
        false
    }
}
