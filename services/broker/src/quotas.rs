//! Client quotas on the Kafka listeners (Kafka's `ClientQuotaManager`s):
//! the limits come from the metadata log, the meters are this broker's
//! own, shared by its listeners, so a client is held to each limit on every
//! broker it talks to, as in Kafka.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use runnel_common::quota::{AppliedQuota, QuotaKey, QuotaWindows, Throttler, request_time_units};

use crate::metadata::MetadataCache;

/// Who a request is metered as: the principal's name and the client id.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The authenticated principal's name (`ANONYMOUS` without one).
    pub user: &'a str,
    /// The request header's `client.id`.
    pub client_id: &'a str,
}

/// The quota limits in force and this broker's meters.
#[derive(Debug)]
pub struct Quotas {
    metadata: Arc<MetadataCache>,
    windows: QuotaWindows,
    throttler: Throttler,
}

impl Quotas {
    /// Quotas by the limits of `metadata`, measured over `windows`.
    pub fn new(metadata: Arc<MetadataCache>, windows: QuotaWindows) -> Quotas {
        Quotas {
            metadata,
            windows,
            throttler: Throttler::new(windows),
        }
    }

    /// The quota of `key` that applies to `client`, if any.
    fn applied(&self, key: QuotaKey, client: Client<'_>) -> Option<AppliedQuota> {
        // `resolve` returns at once for a quota nobody set.
        self.metadata
            .with(|image| image.quotas.resolve(key, client.user, client.client_id))
    }

    /// Whether any quota of `key` is set at all.
    pub fn any(&self, key: QuotaKey) -> bool {
        self.metadata.with(|image| image.quotas.any(key))
    }

    /// Records `value` against `client`'s quota of `key`: how long the
    /// client must now wait (zero when under its limit or without one).
    pub fn record(&self, key: QuotaKey, client: Client<'_>, value: f64) -> Duration {
        self.applied(key, client)
            .map_or(Duration::ZERO, |q| self.throttler.record(key, &q, value))
    }

    /// Takes back a [`Quotas::record`] of what was not sent after all.
    pub fn unrecord(&self, key: QuotaKey, client: Client<'_>, value: f64) {
        if let Some(q) = self.applied(key, client) {
            self.throttler.unrecord(key, &q, value);
        }
    }

    /// The most `client` may take at once under `key`: the limit over all
    /// quota windows but one (Kafka caps a consumer's fetch at this, so one
    /// answer cannot put it over by more).
    pub fn window_bytes(&self, key: QuotaKey, client: Client<'_>) -> Option<u64> {
        let span = self.windows.window.as_secs_f64()
            * f64::from(self.windows.samples.saturating_sub(1).max(1));
        // `as` saturates: a limit too large for u64 is no cap.
        self.applied(key, client)
            .map(|q| (q.limit * span).max(1.0) as u64)
    }

    /// Request handling time against `request_percentage`.
    pub fn record_time(&self, client: Client<'_>, time: Duration) -> Duration {
        self.record(
            QuotaKey::RequestPercentage,
            client,
            request_time_units(time),
        )
    }

    /// Admits a mutation of `partitions` partitions under `client`'s
    /// `controller_mutation_rate`: `Err` with the time to wait when it is
    /// refused (only when `strict`), else the time the client should wait
    /// after it.
    pub fn mutate(
        &self,
        client: Client<'_>,
        partitions: u32,
        strict: bool,
    ) -> Result<Duration, Duration> {
        match self.applied(QuotaKey::ControllerMutationRate, client) {
            Some(q) => self.throttler.mutate(&q, partitions, strict),
            None => Ok(Duration::ZERO),
        }
    }
}

/// A future that adds the time spent inside its polls to a counter: the
/// handling time `request_percentage` meters, without the time the
/// request waits on replicas, disks or other services.
pub struct Timed<'a, F> {
    inner: Pin<Box<F>>,
    nanos: &'a AtomicU64,
}

impl<'a, F> Timed<'a, F> {
    /// `inner`, its poll time added to `nanos`.
    pub fn new(inner: F, nanos: &'a AtomicU64) -> Self {
        Timed {
            inner: Box::pin(inner),
            nanos,
        }
    }
}

impl<F: Future> Future for Timed<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let out = self.inner.as_mut().poll(cx);
        let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(spent, Ordering::Relaxed);
        out
    }
}
