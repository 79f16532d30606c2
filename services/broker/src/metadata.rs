//! The broker's view of the cluster and its link to the controller.
//!
//! The link registers the broker, heartbeats, and follows the controller's
//! metadata log with `Watch`, folding each record into the same
//! [`MetadataImage`] the controller keeps, then reconciling the hosted
//! partitions with it. It reconnects and resumes from its offset when the
//! controller goes away.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use runnel_common::admin::Readiness;
use runnel_common::backoff::Backoff;
use runnel_common::failover::{BadServerList, FailoverChannel};
use runnel_common::metadata::MetadataImage;
use runnel_common::shutdown::CancellationToken;
use runnel_common::telemetry::TraceInterceptor;
use runnel_proto::controller::v1 as pb;
use runnel_proto::controller::v1::controller_client::ControllerClient;
use runnel_proto::metadata::v1::Endpoint;
use tokio::sync::watch;
use tonic::codegen::InterceptedService;

use crate::log_manager::LogManager;

/// A controller client that propagates trace context.
pub type Controller = ControllerClient<InterceptedService<FailoverChannel, TraceInterceptor>>;

/// A lazily connecting client for the controllers at `addrs` (`host:port`
/// separated by commas): calls move to the next one when one fails.
pub fn controller_client(
    addrs: &str,
    tls: Option<&Arc<runnel_common::tls::ClientTls>>,
) -> Result<Controller, BadServerList> {
    // Short: a controller that does not answer a connect in a second is
    // down, and the next one is tried.
    let channel = FailoverChannel::new(addrs, Duration::from_secs(1), tls)?;
    Ok(ControllerClient::with_interceptor(
        channel,
        TraceInterceptor,
    ))
}

/// The metadata as this broker has applied it.
#[derive(Debug)]
pub struct MetadataCache {
    image: RwLock<MetadataImage>,
    applied: watch::Sender<i64>,
    /// The image has caught up with the metadata log once since start:
    /// before that, a topic missing from it may just not be replayed yet.
    caught_up: std::sync::atomic::AtomicBool,
    cluster_id: RwLock<String>,
    controller_endpoints: RwLock<Vec<Endpoint>>,
}

/// SASL looks users' credentials up in the metadata log's image.
impl runnel_kafka::auth::CredentialStore for MetadataCache {
    fn scram(
        &self,
        user: &str,
        mechanism: runnel_common::scram::Mechanism,
    ) -> Option<runnel_common::scram::ScramCredential> {
        self.with(|image| {
            image
                .scram_credentials
                .get(user)
                .and_then(|c| c.get(&mechanism))
                .cloned()
        })
    }
}

/// The gRPC API authenticates and authorizes against the same image.
impl runnel_common::grpc_auth::ImageSource for MetadataCache {
    fn with_image<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R {
        self.with(f)
    }
}

impl Default for MetadataCache {
    fn default() -> Self {
        MetadataCache {
            image: RwLock::new(MetadataImage::default()),
            applied: watch::channel(0).0,
            caught_up: std::sync::atomic::AtomicBool::new(false),
            cluster_id: RwLock::new(String::new()),
            controller_endpoints: RwLock::new(Vec::new()),
        }
    }
}

impl MetadataCache {
    /// A cache holding `image` (unit tests).
    #[cfg(test)]
    pub(crate) fn of(image: MetadataImage) -> MetadataCache {
        let cache = MetadataCache::default();
        *cache.image.write() = image;
        cache.set_caught_up();
        cache
    }

    /// Whether the image has caught up with the metadata log since the
    /// broker started (a topic it lacks before then may exist).
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_caught_up(&self) {
        self.caught_up
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Reads the image.
    pub fn with<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R {
        f(&self.image.read())
    }

    /// A copy of the image.
    pub fn snapshot(&self) -> MetadataImage {
        self.image.read().clone()
    }

    /// Told of every applied metadata batch (after the logs were reconciled with it).
    pub fn subscribe_applied(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Offset after the last applied record.
    pub fn applied_offset(&self) -> i64 {
        *self.applied.borrow()
    }

    /// A receiver that changes whenever records are applied.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// The cluster id, once known.
    pub fn cluster_id(&self) -> String {
        self.cluster_id.read().clone()
    }

    /// Where the controller can be reached.
    pub fn controller_endpoints(&self) -> Vec<Endpoint> {
        self.controller_endpoints.read().clone()
    }
}

/// What the link needs to know about this broker.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `broker.id`.
    pub broker_id: i32,
    /// Advertised endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Rack.
    pub rack: String,
    /// Random per process start.
    pub incarnation_id: String,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// Cuts the link while a test isolates this broker.
    pub net_fault: runnel_common::netfault::NetFault,
}

/// The first wait before registering again after the link failed; doubles
/// up to 2 s while it keeps failing.
const RELINK_BACKOFF: Duration = Duration::from_millis(100);

/// How soon a failed heartbeat is first retried (doubling up to
/// [`HEARTBEAT_RETRY_MAX`]): a controller election is the usual cause, and
/// the new active controller should hear from every broker as soon as it
/// is elected, not a whole heartbeat interval later.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between heartbeats that keep failing.
const HEARTBEAT_RETRY_MAX: Duration = Duration::from_millis(400);

/// Follows the controller until `shutdown`; reconnects after failures.
pub async fn run_link(
    mut controller: Controller,
    identity: Identity,
    cache: Arc<MetadataCache>,
    logs: Arc<LogManager>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(RELINK_BACKOFF, Duration::from_secs(2));
    let mut epoch = None;
    // Opening thousands of logs takes a while: the link keeps heartbeating
    // meanwhile, and the reconciler works on the newest image when done.
    let (targets, wanted) = watch::channel(0i64);
    let caught_up = Arc::new(tokio::sync::Notify::new());
    let reconciler = tokio::spawn(reconcile_logs(
        Arc::clone(&cache),
        Arc::clone(&logs),
        readiness,
        wanted,
        Arc::clone(&caught_up),
        shutdown.clone(),
    ));
    let link = Link {
        targets,
        caught_up,
        logs: Arc::clone(&logs),
    };
    loop {
        let mut registered_at = None;
        let session = session(
            &mut controller,
            &identity,
            &cache,
            &link,
            &shutdown,
            &mut epoch,
            &mut registered_at,
        );
        match session.await {
            Ok(()) => break,
            Err(e) => {
                if registered_at.is_some_and(|at| at.elapsed() > Duration::from_secs(10)) {
                    // A session that lasted: this is a new failure, not a flapping one.
                    backoff.reset();
                }
                if shutdown.is_cancelled() {
                    break;
                }
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "controller link lost");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    // Logs being opened are in the hosted set before the broker closes them all.
    let _ = reconciler.await;
    // Tell the controller we are going, so it does not wait for the session to time out.
    if let Some(epoch) = epoch {
        let goodbye = controller.broker_heartbeat(pb::BrokerHeartbeatRequest {
            broker_id: identity.broker_id,
            broker_epoch: epoch,
            metadata_offset: cache.applied_offset(),
            shutting_down: true,
            offline_replicas: Vec::new(),
        });
        let _ = tokio::time::timeout(Duration::from_secs(2), goodbye).await;
    }
}

/// What a session shares with the log reconciler.
struct Link {
    /// The offset the image is caught up to, for the reconciler.
    targets: watch::Sender<i64>,
    /// Told once the logs first match a caught-up image (heartbeat now).
    caught_up: Arc<tokio::sync::Notify>,
    /// The hosted logs, for the offline partitions each heartbeat reports.
    logs: Arc<LogManager>,
}

impl Link {
    /// Every assigned partition whose log cannot open, for the controller.
    fn offline_replicas(&self) -> Vec<pb::OfflineReplica> {
        self.logs
            .offline()
            .into_iter()
            .map(|((topic, partition), r)| pb::OfflineReplica {
                topic,
                partition,
                error: r.error,
            })
            .collect()
    }
}

/// Brings the hosted logs in line with the image each time the link says
/// it moved (several moves while one pass runs make one more pass), then
/// publishes the applied offset. The first pass (the broker caught up with
/// the metadata log) also removes stray partition directories and makes
/// the broker ready.
async fn reconcile_logs(
    cache: Arc<MetadataCache>,
    logs: Arc<LogManager>,
    readiness: Readiness,
    mut wanted: watch::Receiver<i64>,
    caught_up: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut first = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = wanted.changed() => if changed.is_err() { return },
        }
        wanted.borrow_and_update();
        let snapshot = cache.snapshot();
        let applied = snapshot.next_offset;
        if let Err(e) = logs.reconcile(&snapshot, first).await {
            tracing::error!(error = %e, "applying metadata to local partitions failed");
        }
        drop(snapshot);
        cache.applied.send_replace(applied);
        if first {
            first = false;
            cache.set_caught_up();
            readiness.set(true);
            tracing::info!(metadata_offset = applied, "caught up with the metadata log");
            caught_up.notify_one();
        }
    }
}

/// Opens the metadata stream from where this broker has applied it, on
/// the next controller if the current one is down.
async fn watch(
    controller: &mut Controller,
    cache: &MetadataCache,
) -> Result<tonic::Streaming<pb::WatchResponse>, LinkError> {
    let request = || pb::WatchRequest {
        from_offset: cache.applied_offset(),
    };
    let stream = match controller.watch(request()).await {
        Ok(stream) => stream,
        // The failed call moved the channel on: one more try.
        Err(_) => controller.watch(request()).await?,
    };
    Ok(stream.into_inner())
}

/// Batches folded into the image at most between two reconciliations.
const MAX_BATCHES_PER_RECONCILE: usize = 256;

/// Applies one `Watch` batch to the image, noting a change of active
/// controller; returns the offset after the last applied record.
fn apply_batch(
    cache: &MetadataCache,
    batch: &pb::WatchResponse,
    active_controller: &mut Option<i32>,
    heartbeat: &mut tokio::time::Interval,
) -> Result<i64, LinkError> {
    let active = (batch.active_controller_id >= 0).then_some(batch.active_controller_id);
    if active.is_some() && active != *active_controller {
        if active_controller.is_some() {
            // Elected just now: the heartbeat's answer says where it listens.
            heartbeat.reset_immediately();
        }
        *active_controller = active;
    }
    let mut image = cache.image.write();
    for event in &batch.events {
        if event.offset < image.next_offset {
            continue; // already applied before a reconnect
        }
        let Some(record) = &event.record else {
            continue;
        };
        if let Err(e) = image.apply(event.offset, record) {
            tracing::error!(error = %e, "metadata record does not apply; resyncing");
            *image = MetadataImage::default();
            return Err(LinkError::StreamEnded);
        }
    }
    Ok(image.next_offset)
}

/// Whether a failed controller call is what an election looks like: no
/// controller reachable, or none active yet.
fn in_election(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("controller call failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("metadata stream ended")]
    StreamEnded,
    #[error("the controller asked this broker to register again")]
    Reregister,
    #[error("cut off from the controller (network fault)")]
    Isolated,
}

#[allow(clippy::too_many_arguments)]
async fn session(
    controller: &mut Controller,
    identity: &Identity,
    cache: &Arc<MetadataCache>,
    link: &Link,
    shutdown: &CancellationToken,
    epoch_slot: &mut Option<i64>,
    registered_at: &mut Option<std::time::Instant>,
) -> Result<(), LinkError> {
    if identity.net_fault.is_isolated() {
        return Err(LinkError::Isolated);
    }
    let epoch = controller
        .register_broker(pb::RegisterBrokerRequest {
            broker_id: identity.broker_id,
            endpoints: identity.endpoints.clone(),
            rack: identity.rack.clone(),
            incarnation_id: identity.incarnation_id.clone(),
        })
        .await?
        .into_inner()
        .broker_epoch;
    *epoch_slot = Some(epoch);
    *registered_at = Some(std::time::Instant::now());
    let cluster = controller
        .describe_cluster(pb::DescribeClusterRequest {})
        .await?
        .into_inner();
    *cache.cluster_id.write() = cluster.cluster_id;
    *cache.controller_endpoints.write() = cluster.controller_endpoints;
    let catch_up_to = cluster.metadata_end_offset;
    tracing::info!(
        broker = identity.broker_id,
        epoch,
        "registered with the controller"
    );

    let mut stream = watch(controller, cache).await?;
    let mut reopened = false;
    let mut active_controller = None;
    let mut retry = Backoff::new(
        HEARTBEAT_RETRY,
        HEARTBEAT_RETRY_MAX.min(identity.heartbeat_interval),
    );
    let mut heartbeat = tokio::time::interval(identity.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = heartbeat.tick() => {
                if identity.net_fault.is_isolated() {
                    return Err(LinkError::Isolated);
                }
                let hb = match controller
                    .broker_heartbeat(pb::BrokerHeartbeatRequest {
                        broker_id: identity.broker_id,
                        broker_epoch: epoch,
                        metadata_offset: cache.applied_offset(),
                        shutting_down: false,
                        offline_replicas: link.offline_replicas(),
                    })
                    .await
                {
                    Ok(hb) => hb.into_inner(),
                    // The session outlives an election: keep it, ask again soon
                    // (the channel has moved on if that controller is down).
                    Err(status) if in_election(&status) => {
                        let delay = retry.next_delay();
                        tracing::debug!(error = %status, retry_in_ms = delay.as_millis() as u64, "heartbeat failed");
                        heartbeat.reset_after(delay);
                        continue;
                    }
                    Err(status) => return Err(status.into()),
                };
                retry.reset();
                if hb.should_register {
                    return Err(LinkError::Reregister);
                }
                // The active controller answered (through any controller):
                // clients asking this broker for the controller go there.
                if !hb.controller_endpoints.is_empty() {
                    *cache.controller_endpoints.write() = hb.controller_endpoints;
                }
            }
            message = stream.message() => {
                let batch = match message {
                    Ok(Some(batch)) => batch,
                    // Its controller went away; any other serves the same log
                    // (but a stream that fails again at once is a session failure).
                    Ok(None) | Err(_) if !reopened => {
                        stream = watch(controller, cache).await?;
                        reopened = true;
                        continue;
                    }
                    Ok(None) => return Err(LinkError::StreamEnded),
                    Err(status) => return Err(status.into()),
                };
                reopened = false;
                if identity.net_fault.is_isolated() {
                    return Err(LinkError::Isolated);
                }
                let mut applied = apply_batch(cache, &batch, &mut active_controller, &mut heartbeat)?;
                // Batches already here are folded in before the logs are
                // reconciled once: a burst costs one pass over the partitions.
                for _ in 0..MAX_BATCHES_PER_RECONCILE {
                    match futures::FutureExt::now_or_never(stream.message()) {
                        Some(Ok(Some(batch))) => {
                            applied = apply_batch(cache, &batch, &mut active_controller, &mut heartbeat)?;
                        }
                        // Nothing more yet; an end or error shows on the next receive.
                        _ => break,
                    }
                }
                if applied >= catch_up_to {
                    // Caught up: the logs follow. While catching up (a
                    // restart replays the whole log) they wait for the end.
                    link.targets.send_replace(applied);
                }
            }
            () = link.caught_up.notified() => {
                // The controller unfences a caught-up broker: tell it now, not a tick later.
                heartbeat.reset_immediately();
            }
        }
    }
}
