//! Cutting a node off from its peers, for failure tests.
//!
//! A [`NetFault`] is a switch shared by a node and the test that drives it.
//! While it is on, the node's gRPC server refuses every request from
//! another Runnel node (those carry [`PEER_HEADER`]) with `UNAVAILABLE`
//! ([`NetFaultLayer`], a tower layer), and the node's own calls to its peers
//! (its controller link, replica fetches, ISR changes) stop as if the
//! network dropped them. Clients outside the cluster still reach it, as a
//! producer on the far side of a network partition would: that is how a
//! test makes a cut-off leader take writes it can never get replicated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;

/// The metadata header a Runnel node puts on requests to other Runnel nodes.
pub const PEER_HEADER: &str = "runnel-peer";

/// A switch that isolates one node from its peers.
#[derive(Debug, Clone, Default)]
pub struct NetFault {
    isolated: Arc<AtomicBool>,
}

impl NetFault {
    /// Cuts the node off from its peers, in both directions.
    pub fn isolate(&self) {
        self.isolated.store(true, Ordering::SeqCst);
    }

    /// Restores the node's connectivity.
    pub fn heal(&self) {
        self.isolated.store(false, Ordering::SeqCst);
    }

    /// Whether the node is cut off now.
    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }
}

/// A tower layer for a node's gRPC server that refuses peers' requests
/// while its [`NetFault`] is on.
#[derive(Debug, Clone)]
pub struct NetFaultLayer(NetFault);

impl NetFaultLayer {
    /// The layer for the node `fault` switches.
    pub fn new(fault: NetFault) -> Self {
        NetFaultLayer(fault)
    }
}

impl<S> tower::Layer<S> for NetFaultLayer {
    type Service = NetFaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NetFaultService {
            fault: self.0.clone(),
            inner,
        }
    }
}

/// The service [`NetFaultLayer`] makes.
#[derive(Debug, Clone)]
pub struct NetFaultService<S> {
    fault: NetFault,
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for NetFaultService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let refused =
            || tonic::Status::unavailable("the node is cut off from its peers").into_http();
        if !request.headers().contains_key(PEER_HEADER) {
            return Box::pin(self.inner.call(request));
        }
        if self.fault.is_isolated() {
            return Box::pin(async move { Ok(refused()) });
        }
        // A peer's request that was already in (a long-polling fetch, say)
        // loses its answer if the cut comes before the answer is ready.
        let fault = self.fault.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(if fault.is_isolated() {
                refused()
            } else {
                response
            })
        })
    }
}
