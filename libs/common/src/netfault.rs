//! Cutting nodes off from each other, for failure tests.
//!
//! Every request one Runnel node sends another carries [`PEER_HEADER`],
//! whose value names the sender ([`PeerName`]: `broker-2`,
//! `controller-1`). A [`NetFault`] is a node's set of switches, shared by
//! the node and the test that drives it; [`NetFaultLayer`], a tower layer
//! on the node's gRPC server, refuses with `UNAVAILABLE` the peers'
//! requests the switches cut. Requests without the header (clients, tools)
//! are never refused. Two kinds of fault:
//!
//! - Isolation ([`NetFault::isolate`]): the node's server refuses every
//!   peer's request, and the node's own calls to its peers (its controller
//!   link, replica fetches, ISR changes) stop as if the network dropped
//!   them. Clients outside the cluster still reach it, as a producer on the
//!   far side of a network partition would: that is how a test makes a
//!   cut-off leader take writes it can never get replicated.
//! - A cut between two nodes ([`NetFault::cut_from`] on each, naming the
//!   other): a partition where A cannot reach B but both still reach C.
//!   Each node refuses the other's requests where they arrive, so calls
//!   fail in both directions without either node's client side knowing;
//!   naming the peer on one side only cuts one direction. A cut holds
//!   between nodes that call each other as peers: brokers with brokers
//!   (replication) and controllers with controllers (Raft, forwarded
//!   calls). A broker calls the controllers as any client does, without
//!   the header, so only isolation cuts a broker from the controllers.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::metadata::{Ascii, MetadataValue};

/// The metadata header a Runnel node puts on requests to other Runnel
/// nodes; its value is the sender's [`PeerName`].
pub const PEER_HEADER: &str = "runnel-peer";

/// How a node names itself to its peers (the value of [`PEER_HEADER`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerName(String);

impl PeerName {
    /// Broker `id`'s name.
    pub fn broker(id: i32) -> Self {
        PeerName(format!("broker-{id}"))
    }

    /// Controller `id`'s name (its quorum node id).
    pub fn controller(id: i32) -> Self {
        PeerName(format!("controller-{id}"))
    }

    /// The name as it travels in [`PEER_HEADER`].
    pub fn header_value(&self) -> MetadataValue<Ascii> {
        MetadataValue::try_from(self.0.as_str())
            .expect("a peer name is a fixed word and a number, so ASCII")
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One node's network switches: isolation from every peer, and cuts from
/// chosen ones. Clones share the switches.
#[derive(Debug, Clone, Default)]
pub struct NetFault {
    isolated: Arc<AtomicBool>,
    /// The peers whose requests this node refuses.
    cut_from: Arc<RwLock<HashSet<String>>>,
}

impl NetFault {
    /// Cuts the node off from its peers, in both directions.
    pub fn isolate(&self) {
        self.isolated.store(true, Ordering::SeqCst);
    }

    /// Ends the isolation (cuts from chosen peers stay).
    pub fn heal(&self) {
        self.isolated.store(false, Ordering::SeqCst);
    }

    /// Whether the node is cut off from every peer now.
    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }

    /// Refuses `peer`'s requests from now on; the same call on `peer`'s
    /// fault naming this node makes the cut two-way.
    pub fn cut_from(&self, peer: &PeerName) {
        self.cut_from
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer.0.clone());
    }

    /// Takes `peer`'s requests again.
    pub fn heal_cut(&self, peer: &PeerName) {
        self.cut_from
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&peer.0);
    }

    /// Whether the node refuses `peer`'s requests because of a cut.
    pub fn is_cut_from(&self, peer: &PeerName) -> bool {
        self.is_cut_from_name(&peer.0)
    }

    fn is_cut_from_name(&self, peer: &str) -> bool {
        self.cut_from
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(peer)
    }

    /// Whether a peer's request from `sender` (None: the header was not
    /// readable as text) must be refused now.
    fn refuses(&self, sender: Option<&str>) -> bool {
        self.is_isolated() || sender.is_some_and(|s| self.is_cut_from_name(s))
    }
}

/// A tower layer for a node's gRPC server that refuses peers' requests
/// while its [`NetFault`] cuts them.
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
            || tonic::Status::unavailable("the node is cut off from this peer").into_http();
        let Some(sender) = request.headers().get(PEER_HEADER) else {
            return Box::pin(self.inner.call(request));
        };
        let sender = sender.to_str().ok().map(str::to_owned);
        if self.fault.refuses(sender.as_deref()) {
            return Box::pin(async move { Ok(refused()) });
        }
        // A peer's request that was already in (a long-polling fetch, say)
        // loses its answer if the cut comes before the answer is ready.
        let fault = self.fault.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(if fault.refuses(sender.as_deref()) {
                refused()
            } else {
                response
            })
        })
    }
}

/// A tower layer that makes an in-process node die like a process: once
/// its token is cancelled, every request (those in flight too) is refused
/// with `UNAVAILABLE`, as a dead process's reset connections would be.
/// Without it, a node killed by aborting its tasks leaves its gRPC
/// connection tasks running, and a request waiting inside it (a JoinGroup
/// held for a rebalance) would never be answered.
#[derive(Debug, Clone)]
pub struct CrashLayer(tokio_util::sync::CancellationToken);

impl CrashLayer {
    /// The layer of a node that is killed by cancelling `crashed`.
    pub fn new(crashed: tokio_util::sync::CancellationToken) -> Self {
        CrashLayer(crashed)
    }
}

impl<S> tower::Layer<S> for CrashLayer {
    type Service = CrashService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CrashService {
            crashed: self.0.clone(),
            inner,
        }
    }
}

/// The service [`CrashLayer`] makes.
#[derive(Debug, Clone)]
pub struct CrashService<S> {
    crashed: tokio_util::sync::CancellationToken,
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for CrashService<S>
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
        let dead = || tonic::Status::unavailable("the node is down").into_http();
        let crashed = self.crashed.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            tokio::select! {
                biased;
                () = crashed.cancelled() => Ok(dead()),
                answer = answer => answer,
            }
        })
    }
}

/// A loopback address whose port is free now, for a test node whose address
/// must be known before it starts (a controller quorum's).
///
/// The port is picked below the kernel's ephemeral range: a port the kernel
/// hands out (a listener on port 0, a connection's local end) could be
/// taken by another test between this check and the node's bind, and
/// ports outside that range are only ever taken by explicit binds.
pub fn free_loopback_addr() -> std::net::SocketAddr {
    use rand::Rng;
    let bind = |port: u16| {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .and_then(|l| l.local_addr())
            .ok()
    };
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 4096 {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            if let Some(addr) = bind(rng.random_range(ephemeral_low / 2..ephemeral_low)) {
                return addr;
            }
        }
    }
    // An unusual range, or nothing free below it: let the kernel choose.
    bind(0).expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, ServiceExt};

    use super::*;

    /// Sends one request from `sender` (None: a client) through the layer
    /// and says whether it got through.
    async fn passes(fault: &NetFault, sender: Option<&PeerName>) -> bool {
        let inner = tower::service_fn(|_: http::Request<Body>| async {
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        });
        let service = NetFaultLayer::new(fault.clone()).layer(inner);
        let mut request = http::Request::new(Body::empty());
        if let Some(s) = sender {
            let value = http::HeaderValue::from_str(&s.to_string()).expect("ASCII");
            request.headers_mut().insert(PEER_HEADER, value);
        }
        let response = service.oneshot(request).await.expect("infallible");
        // A refusal is a gRPC status in the headers of an HTTP 200.
        response.headers().get("grpc-status").is_none()
    }

    #[tokio::test]
    async fn isolation_refuses_every_peer_but_no_client() {
        let fault = NetFault::default();
        let (b1, c1) = (PeerName::broker(1), PeerName::controller(1));
        assert!(passes(&fault, Some(&b1)).await);
        fault.isolate();
        assert!(!passes(&fault, Some(&b1)).await);
        assert!(!passes(&fault, Some(&c1)).await);
        assert!(passes(&fault, None).await, "clients still get through");
        fault.heal();
        assert!(passes(&fault, Some(&b1)).await);
    }

    #[tokio::test]
    async fn a_cut_refuses_only_the_named_peer() {
        let fault = NetFault::default();
        let (b1, b2) = (PeerName::broker(1), PeerName::broker(2));
        fault.cut_from(&b1);
        assert!(fault.is_cut_from(&b1) && !fault.is_cut_from(&b2));
        assert!(!passes(&fault, Some(&b1)).await);
        assert!(passes(&fault, Some(&b2)).await);
        assert!(
            passes(&fault, Some(&PeerName::controller(1))).await,
            "controller 1 is not broker 1"
        );
        assert!(passes(&fault, None).await);
        assert!(!fault.is_isolated(), "a cut is not isolation");

        // Isolation and cuts are separate switches.
        fault.isolate();
        fault.heal();
        assert!(!passes(&fault, Some(&b1)).await, "heal keeps the cut");
        fault.heal_cut(&b1);
        assert!(passes(&fault, Some(&b1)).await);
    }

    #[test]
    fn clones_share_the_switches() {
        let fault = NetFault::default();
        let node_side = fault.clone();
        fault.cut_from(&PeerName::controller(3));
        fault.isolate();
        assert!(node_side.is_cut_from(&PeerName::controller(3)));
        assert!(node_side.is_isolated());
    }

    #[test]
    fn peer_names_say_kind_and_id() {
        assert_eq!(PeerName::broker(2).to_string(), "broker-2");
        assert_eq!(PeerName::controller(2).to_string(), "controller-2");
        assert_eq!(PeerName::controller(2).header_value(), "controller-2");
    }

    #[tokio::test]
    async fn a_crash_answers_requests_in_flight_and_new_ones() {
        let crashed = tokio_util::sync::CancellationToken::new();
        // An answer that never comes, as a JoinGroup held for a rebalance.
        let inner = tower::service_fn(|_: http::Request<Body>| {
            futures::future::pending::<Result<http::Response<Body>, Infallible>>()
        });
        let service = CrashLayer::new(crashed.clone()).layer(inner);
        let waiting = tokio::spawn(service.clone().oneshot(http::Request::new(Body::empty())));
        tokio::task::yield_now().await;
        crashed.cancel();
        let answer = waiting
            .await
            .expect("the request task")
            .expect("infallible");
        assert_eq!(
            answer.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"14"[..])
        );
        let answer = service
            .oneshot(http::Request::new(Body::empty()))
            .await
            .expect("infallible");
        assert_eq!(
            answer.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"14"[..])
        );
    }
}
