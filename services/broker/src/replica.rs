//! The follower side of replication: one fetcher per leader this broker
//! follows, pulling every followed partition of that leader in one
//! long-polling request and appending the leader's bytes unchanged.
//!
//! Before a partition fetches in a new leader epoch, its fetcher asks the
//! leader where this replica's last epoch ends (Kafka's
//! OffsetForLeaderEpoch) and truncates whatever diverged: records a former
//! leader wrote but never got acknowledged by the ISR.

use runnel_common::tls::ClientTls;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runnel_common::netfault::{NetFault, PEER_HEADER, PeerName};
use runnel_common::shutdown::CancellationToken;
use runnel_common::telemetry::TraceInterceptor;
use runnel_proto::broker::v1 as pb;
use runnel_proto::broker::v1::broker_client::BrokerClient;
use runnel_proto::common::v1::ErrorCode;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::log_manager::LogManager;
use crate::metadata::MetadataCache;
use crate::partition::{Partition, PartitionKey};
use crate::replication_quota::{ReplicationQuotas, Side};

type Client = BrokerClient<InterceptedService<Channel, PeerInterceptor>>;

/// Trace context plus [`PEER_HEADER`]: this request comes from a cluster peer.
#[derive(Debug, Clone)]
struct PeerInterceptor(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for PeerInterceptor {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = TraceInterceptor.call(request)?;
        request.metadata_mut().insert(PEER_HEADER, self.0.clone());
        Ok(request)
    }
}

/// How long a fetch waits at the leader for new data.
const FETCH_WAIT_MS: u32 = 500;
/// Most bytes per partition per fetch.
const PARTITION_FETCH_BYTES: u32 = 1 << 20;
/// Most bytes per fetch.
const FETCH_BYTES: u32 = 64 << 20;
/// Pause after a failed round.
const BACKOFF: Duration = Duration::from_millis(100);

/// The fetchers of one broker.
#[derive(Debug)]
pub struct Fetchers {
    me: i32,
    logs: Arc<LogManager>,
    metadata: Arc<MetadataCache>,
    running: Mutex<HashMap<i32, tokio::task::JoinHandle<()>>>,
    net_fault: NetFault,
    /// TLS to the leaders, with this broker's service certificate.
    tls: Option<Arc<ClientTls>>,
    /// `follower.replication.throttled.rate` and its meter.
    quotas: Arc<ReplicationQuotas>,
    shutdown: CancellationToken,
}

impl Fetchers {
    /// Fetchers for broker `me`; they stop when `shutdown` is cancelled.
    pub fn new(
        me: i32,
        logs: Arc<LogManager>,
        metadata: Arc<MetadataCache>,
        net_fault: NetFault,
        tls: Option<Arc<ClientTls>>,
        quotas: Arc<ReplicationQuotas>,
        shutdown: CancellationToken,
    ) -> Arc<Fetchers> {
        Arc::new(Fetchers {
            me,
            logs,
            metadata,
            running: Mutex::new(HashMap::new()),
            net_fault,
            quotas,
            tls,
            shutdown,
        })
    }

    /// Keeps a fetcher running for every leader followed, re-checking
    /// after each metadata change, until shutdown.
    pub async fn supervise(self: Arc<Self>) {
        let mut applied = self.metadata.subscribe_applied();
        loop {
            self.ensure();
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                changed = applied.changed() => if changed.is_err() { break },
                // Also after a fetcher ends on its own (its leader led nothing more).
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let handles: Vec<_> = self.running.lock().drain().map(|(_, h)| h).collect();
        for h in handles {
            let _ = h.await;
        }
    }

    fn ensure(self: &Arc<Self>) {
        let leaders: HashSet<i32> = self
            .logs
            .all()
            .iter()
            .map(|p| p.state())
            .filter(|s| !s.is_leader && s.leader >= 0 && s.leader != self.me)
            .map(|s| s.leader)
            .collect();
        let mut running = self.running.lock();
        running.retain(|_, h| !h.is_finished());
        for leader in leaders {
            running
                .entry(leader)
                .or_insert_with(|| tokio::spawn(Arc::clone(self).follow(leader)));
        }
    }

    /// The partitions this broker follows from `leader` right now.
    fn followed(&self, leader: i32) -> Vec<Arc<Partition>> {
        self.logs
            .all()
            .into_iter()
            .filter(|p| p.follows(leader))
            .collect()
    }

    fn leader_addr(&self, leader: i32) -> Option<String> {
        self.metadata.with(|image| {
            let b = image.brokers.get(&leader)?;
            let e = b.endpoint("grpc")?;
            Some(format!("{}:{}", e.host, e.port))
        })
    }

    fn my_epoch(&self) -> Option<i64> {
        self.metadata
            .with(|image| image.brokers.get(&self.me).map(|b| b.epoch))
    }

    /// Follows `leader` until it leads nothing this broker hosts.
    async fn follow(self: Arc<Self>, leader: i32) {
        // The leader epoch each partition last truncated for.
        let mut truncated: HashMap<PartitionKey, i32> = HashMap::new();
        let mut client: Option<(String, Client)> = None;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let partitions = self.followed(leader);
            if partitions.is_empty() {
                return;
            }
            if self.net_fault.is_isolated() {
                self.pause().await;
                continue;
            }
            let (Some(addr), Some(my_epoch)) = (self.leader_addr(leader), self.my_epoch()) else {
                self.pause().await;
                continue;
            };
            if client.as_ref().is_none_or(|(a, _)| *a != addr) {
                match connect(&addr, self.me, self.tls.as_ref()) {
                    Ok(c) => client = Some((addr.clone(), c)),
                    Err(e) => {
                        tracing::warn!(leader, %addr, error = %e, "cannot reach the leader");
                        self.pause().await;
                        continue;
                    }
                }
            }
            let Some((_, c)) = client.as_mut() else {
                continue;
            };
            let round = self.round(c, &partitions, my_epoch, &mut truncated).await;
            if let Err(e) = round {
                tracing::debug!(leader, error = %e, "replica fetch failed; retrying");
                client = None;
                self.pause().await;
            }
        }
    }

    async fn pause(&self) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = tokio::time::sleep(BACKOFF) => {}
        }
    }

    /// Truncates partitions new to their leader epoch, then fetches once.
    async fn round(
        &self,
        client: &mut Client,
        partitions: &[Arc<Partition>],
        my_epoch: i64,
        truncated: &mut HashMap<PartitionKey, i32>,
    ) -> Result<(), tonic::Status> {
        let stale: Vec<&Arc<Partition>> = partitions
            .iter()
            .filter(|p| truncated.get(&p.key()) != Some(&p.leader_epoch()))
            .collect();
        if !stale.is_empty() {
            self.truncate(client, &stale, truncated).await?;
        }
        // Throttled replicas sit out rounds while this broker's throttled
        // fetching is over `follower.replication.throttled.rate` (with no
        // rate set, no replica is looked at: nothing can be held).
        let throttled: HashSet<PartitionKey> = if self.quotas.limit(Side::Follower).is_some() {
            partitions
                .iter()
                .filter(|p| p.replication_throttled(Side::Follower, self.me, self.me))
                .map(|p| p.key())
                .collect()
        } else {
            HashSet::new()
        };
        let hold = !throttled.is_empty() && self.quotas.exceeded(Side::Follower);
        let ready: Vec<&Arc<Partition>> = partitions
            .iter()
            .filter(|p| truncated.get(&p.key()) == Some(&p.leader_epoch()))
            .filter(|p| !(hold && throttled.contains(&p.key())))
            .collect();
        if ready.is_empty() {
            if hold {
                // Only throttled replicas here: back as soon as the throttle allows.
                let wait = self
                    .quotas
                    .wait(Side::Follower, BACKOFF)
                    .max(Duration::from_millis(5));
                tokio::select! {
                    () = self.shutdown.cancelled() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            } else {
                self.pause().await;
            }
            return Ok(());
        }
        // Held replicas may fetch again once the throttle allows: the long
        // poll ends by then so they are not held longer than that.
        let max_wait_ms = if hold {
            let wait = self.quotas.wait(
                Side::Follower,
                Duration::from_millis(u64::from(FETCH_WAIT_MS)),
            );
            (wait.as_millis() as u32).clamp(5, FETCH_WAIT_MS)
        } else {
            FETCH_WAIT_MS
        };
        let request = pb::FetchRequest {
            max_wait_ms,
            min_bytes: 1,
            max_bytes: FETCH_BYTES,
            partitions: ready
                .iter()
                .map(|p| pb::FetchPartition {
                    topic: p.topic.clone(),
                    partition: p.index,
                    fetch_offset: p.log_end_offset(),
                    partition_max_bytes: PARTITION_FETCH_BYTES,
                    current_leader_epoch: p.leader_epoch(),
                })
                .collect(),
            replica: Some(pb::FetchingReplica {
                broker_id: self.me,
                broker_epoch: my_epoch,
            }),
            isolation_level: pb::IsolationLevel::ReadUncommitted as i32,
        };
        let response = tokio::select! {
            r = client.fetch(request) => r?.into_inner(),
            () = self.shutdown.cancelled() => return Ok(()),
        };
        let by_key: HashMap<PartitionKey, &Arc<Partition>> =
            ready.iter().map(|p| (p.key(), *p)).collect();
        let mut failed = false;
        for r in response.partitions {
            let key = (r.topic.clone(), r.partition);
            let Some(&p) = by_key.get(&key) else { continue };
            match r.error_code() {
                ErrorCode::None => {
                    if throttled.contains(&key) {
                        self.quotas.record(Side::Follower, r.records.len());
                    }
                    let target = Arc::clone(p);
                    let records = r.records;
                    let leader_start = r.log_start_offset;
                    let appended = self
                        .logs
                        .io()
                        .run(&key, move || {
                            target.append_as_follower(&records)?;
                            target.follow_log_start(leader_start)
                        })
                        .await;
                    match appended {
                        Ok(Ok(())) => p.set_follower_high_watermark(r.high_watermark),
                        Ok(Err(e)) => {
                            tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot append the leader's batches");
                            truncated.remove(&key);
                            failed = true;
                        }
                        Err(_) => return Ok(()),
                    }
                }
                ErrorCode::OffsetOutOfRange if p.log_end_offset() < r.log_start_offset => {
                    // The leader deleted what this replica would fetch next: start at its log start.
                    let target = Arc::clone(p);
                    let start = r.log_start_offset;
                    let _ = self
                        .logs
                        .io()
                        .run(&key, move || target.restart_at(start))
                        .await;
                }
                code => {
                    tracing::debug!(topic = %key.0, partition = key.1, ?code, message = %r.error_message, "replica fetch refused");
                    truncated.remove(&key);
                    failed = true;
                }
            }
        }
        if failed {
            self.pause().await;
        }
        Ok(())
    }

    /// Asks the leader where this replica's last epoch ends and cuts what diverged.
    async fn truncate(
        &self,
        client: &mut Client,
        partitions: &[&Arc<Partition>],
        truncated: &mut HashMap<PartitionKey, i32>,
    ) -> Result<(), tonic::Status> {
        let mut asked = Vec::new();
        let mut request = pb::OffsetForLeaderEpochRequest::default();
        for p in partitions {
            let epoch = p.leader_epoch();
            match p.latest_epoch() {
                Some(last) => {
                    request.partitions.push(pb::OffsetForLeaderEpochPartition {
                        topic: p.topic.clone(),
                        partition: p.index,
                        current_leader_epoch: epoch,
                        leader_epoch: last,
                    });
                    asked.push(Arc::clone(p));
                }
                // Nothing written in any epoch: nothing can have diverged.
                None => {
                    truncated.insert(p.key(), epoch);
                }
            }
        }
        if asked.is_empty() {
            return Ok(());
        }
        let response = client.offset_for_leader_epoch(request).await?.into_inner();
        for (p, r) in asked.iter().zip(response.partitions) {
            let key = p.key();
            if r.error_code() != ErrorCode::None {
                tracing::debug!(topic = %key.0, partition = key.1, message = %r.error_message, "epoch end offset refused");
                continue;
            }
            // Where this replica's log agrees with the leader's.
            let mut end = if r.leader_epoch < 0 {
                p.high_watermark()
            } else {
                r.end_offset
            };
            if r.leader_epoch >= 0
                && let Some((_, mine)) = p.end_offset_for_epoch(r.leader_epoch)
            {
                end = end.min(mine);
            }
            let target = Arc::clone(p);
            match self
                .logs
                .io()
                .run(&key, move || target.truncate_to(end))
                .await
            {
                Ok(Ok(())) => {
                    truncated.insert(key, p.leader_epoch());
                }
                Ok(Err(e)) => {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "truncation failed");
                }
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }
}

fn connect(
    addr: &str,
    me: i32,
    tls: Option<&Arc<ClientTls>>,
) -> Result<Client, tonic::transport::Error> {
    let channel = runnel_common::transport::lazy_channel(addr, Duration::from_secs(3), tls)?;
    let peer = PeerInterceptor(PeerName::broker(me).header_value());
    Ok(BrokerClient::with_interceptor(channel, peer)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// The leader side of ISR upkeep: every `max_lag / 4`, asks the controller
/// to drop followers that fell behind for `max_lag` (`replica.lag.time.max.ms`)
/// and to add replicas that caught up, until shutdown.
pub async fn manage_isr(
    me: i32,
    logs: Arc<LogManager>,
    metadata: Arc<MetadataCache>,
    mut controller: crate::metadata::Controller,
    net_fault: NetFault,
    max_lag: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval((max_lag / 4).max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if net_fault.is_isolated() {
            continue;
        }
        let mut changes = Vec::new();
        let mut asked = HashMap::new();
        for p in logs.all() {
            if let Some(isr) = p.wanted_isr(max_lag) {
                let state = p.state();
                let partition_epoch = metadata.with(|image| {
                    image
                        .topics
                        .get(&p.topic)
                        .and_then(|t| t.partitions.get(&p.index))
                        .map(|s| s.partition_epoch)
                });
                let Some(partition_epoch) = partition_epoch else {
                    p.isr_change_refused();
                    continue;
                };
                tracing::debug!(topic = %p.topic, partition = p.index, from = ?state.isr, to = ?isr, "asking for an ISR change");
                changes.push(runnel_proto::controller::v1::PartitionIsrChange {
                    topic: p.topic.clone(),
                    partition: p.index,
                    leader_epoch: state.leader_epoch,
                    partition_epoch,
                    isr,
                });
                asked.insert(p.key(), p);
            }
        }
        if changes.is_empty() {
            continue;
        }
        let Some(broker_epoch) = metadata.with(|image| image.brokers.get(&me).map(|b| b.epoch))
        else {
            continue;
        };
        let request = runnel_proto::controller::v1::AlterPartitionRequest {
            broker_id: me,
            broker_epoch,
            partitions: changes,
        };
        match controller.alter_partition(request).await {
            Ok(response) => {
                for r in response.into_inner().partitions {
                    if r.error_code() != ErrorCode::None {
                        tracing::debug!(topic = %r.topic, partition = r.partition, message = %r.error_message, "ISR change refused");
                        if let Some(p) = asked.get(&(r.topic.clone(), r.partition)) {
                            p.isr_change_refused();
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), "cannot reach the controller for an ISR change");
                for p in asked.values() {
                    p.isr_change_refused();
                }
            }
        }
    }
}
