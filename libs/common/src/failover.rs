//! A gRPC channel over several servers that are equivalent for the caller
//! (the controllers of a quorum, any of which forwards to the active one).
//!
//! Calls go to one server until it fails: a transport error, or an
//! `UNAVAILABLE` answer (a controller that knows no active controller, or
//! is cut off) makes later calls go to the next server. A server that could
//! not be reached is skipped for a while, so a caller moving on from a
//! live server that is waiting out an election does not land on the dead
//! one. The failed call itself returns its error; callers already retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

/// The gRPC status code for `UNAVAILABLE`.
const UNAVAILABLE: &str = "14";

/// How long a server that could not be reached is passed over.
const DOWN_FOR: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Servers {
    addrs: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    /// Per server: until when (ms after `since`) it is passed over.
    down_until_ms: Vec<AtomicU64>,
    since: Instant,
}

impl Servers {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A channel that moves to the next server when the current one fails.
#[derive(Debug, Clone)]
pub struct FailoverChannel {
    servers: Arc<Servers>,
}

/// `list` (`host:port` separated by commas) is empty or holds a bad address.
#[derive(Debug, thiserror::Error)]
#[error("invalid server list {list:?}: {reason}")]
pub struct BadServerList {
    list: String,
    reason: String,
}

impl FailoverChannel {
    /// Lazily connecting channels to each `host:port` in `list` (comma separated).
    pub fn new(
        list: &str,
        connect_timeout: Duration,
        tls: Option<&Arc<crate::tls::ClientTls>>,
    ) -> Result<Self, BadServerList> {
        let bad = |reason: String| BadServerList {
            list: list.to_owned(),
            reason,
        };
        let addrs: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if addrs.is_empty() {
            return Err(bad("no address".into()));
        }
        let channels = addrs
            .iter()
            .map(|addr| {
                crate::transport::lazy_channel(addr, connect_timeout, tls)
                    .map_err(|e| bad(format!("{addr}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(FailoverChannel {
            servers: Arc::new(Servers {
                down_until_ms: addrs.iter().map(|_| AtomicU64::new(0)).collect(),
                addrs,
                channels,
                current: AtomicUsize::new(0),
                since: Instant::now(),
            }),
        })
    }

    /// The server calls go to now.
    pub fn current(&self) -> &str {
        let i = self.servers.current.load(Ordering::Relaxed) % self.servers.addrs.len();
        &self.servers.addrs[i]
    }

    /// Every server, in order.
    pub fn servers(&self) -> &[String] {
        &self.servers.addrs
    }

    /// Moves on from server `i` (if no other call already did) to the next
    /// one not known to be down; `unreachable`: pass `i` over for a while.
    fn failed(&self, i: usize, unreachable: bool) {
        let servers = &*self.servers;
        let n = servers.addrs.len();
        let now = servers.now_ms();
        if unreachable {
            let until = now.saturating_add(u64::try_from(DOWN_FOR.as_millis()).unwrap_or(0));
            servers.down_until_ms[i].store(until, Ordering::Relaxed);
        }
        let next = (1..n)
            .map(|k| (i + k) % n)
            .find(|&j| servers.down_until_ms[j].load(Ordering::Relaxed) <= now)
            .unwrap_or((i + 1) % n);
        if servers
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && n > 1
        {
            tracing::debug!(from = %servers.addrs[i], to = %servers.addrs[next], "moving to the next server");
        }
    }
}

impl Service<http::Request<Body>> for FailoverChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited per call, on the server the call goes to.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let i = self.servers.current.load(Ordering::Relaxed) % self.servers.addrs.len();
        let channel = self.servers.channels[i].clone();
        let this = self.clone();
        Box::pin(async move {
            let result = channel.oneshot(request).await;
            match &result {
                Err(_) => this.failed(i, true),
                Ok(response)
                    if response
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|s| s.as_bytes() == UNAVAILABLE.as_bytes()) =>
                {
                    this.failed(i, false)
                }
                Ok(_) => {}
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_parse_and_failures_rotate() {
        let c = FailoverChannel::new("a:1, b:2,c:3", Duration::from_secs(1), None).expect("valid");
        assert_eq!(c.servers(), ["a:1", "b:2", "c:3"]);
        assert_eq!(c.current(), "a:1");
        c.failed(0, false);
        assert_eq!(c.current(), "b:2");
        // A late failure report about a server already left changes nothing.
        c.failed(0, false);
        assert_eq!(c.current(), "b:2");
        c.failed(1, false);
        c.failed(2, false);
        assert_eq!(c.current(), "a:1");
        // An unreachable server is passed over by the next moves...
        c.failed(0, true);
        assert_eq!(c.current(), "b:2");
        c.failed(1, false);
        assert_eq!(c.current(), "c:3");
        c.failed(2, false);
        assert_eq!(c.current(), "b:2");
        // ...unless every other one is down too.
        c.failed(1, true);
        c.failed(2, true);
        assert_eq!(c.current(), "a:1");
        assert!(FailoverChannel::new(" , ", Duration::from_secs(1), None).is_err());
    }
}
