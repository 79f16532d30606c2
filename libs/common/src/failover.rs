//! A gRPC channel over several servers that are equivalent for the caller
//! (the controllers of a quorum, any of which forwards to the active one).
//!
//! Calls go to one server until it fails: a transport error, or an
//! `UNAVAILABLE` answer (a controller that knows no active controller, or
//! is cut off) makes later calls go to the next server. The failed call
//! itself returns its error; callers already retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

/// The gRPC status code for `UNAVAILABLE`.
const UNAVAILABLE: &str = "14";

#[derive(Debug)]
struct Servers {
    addrs: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
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
    pub fn new(list: &str, connect_timeout: Duration) -> Result<Self, BadServerList> {
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
                crate::transport::lazy_channel(addr, connect_timeout)
                    .map_err(|e| bad(format!("{addr}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(FailoverChannel {
            servers: Arc::new(Servers {
                addrs,
                channels,
                current: AtomicUsize::new(0),
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

    /// Moves on from server `i` (if no other call already did).
    fn failed(&self, i: usize) {
        let n = self.servers.addrs.len();
        if self
            .servers
            .current
            .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && n > 1
        {
            tracing::debug!(from = %self.servers.addrs[i], to = %self.servers.addrs[(i + 1) % n], "moving to the next server");
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
            let unavailable = match &result {
                Err(_) => true,
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .is_some_and(|s| s.as_bytes() == UNAVAILABLE.as_bytes()),
            };
            if unavailable {
                this.failed(i);
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
        let c = FailoverChannel::new("a:1, b:2,c:3", Duration::from_secs(1)).expect("valid");
        assert_eq!(c.servers(), ["a:1", "b:2", "c:3"]);
        assert_eq!(c.current(), "a:1");
        c.failed(0);
        assert_eq!(c.current(), "b:2");
        // A late failure report about a server already left changes nothing.
        c.failed(0);
        assert_eq!(c.current(), "b:2");
        c.failed(1);
        c.failed(2);
        assert_eq!(c.current(), "a:1");
        assert!(FailoverChannel::new(" , ", Duration::from_secs(1)).is_err());
    }
}
