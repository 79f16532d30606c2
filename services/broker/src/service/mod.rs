//! What the broker does for each request: find the partition, check
//! leadership, hand disk work to the I/O threads, and answer per partition.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use runnel_common::errors::code_of;
use runnel_common::shutdown::CancellationToken;
use runnel_common::topics::validate_topic_name;
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as cpb;
use runnel_proto::metadata::v1::Endpoint;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use runnel_log::LogError;

use crate::errors::log_error;
use crate::metadata::{Controller, MetadataCache};
use crate::partition::{LogManager, Partition};

/// Kafka's default `fetch.max.bytes`.
const DEFAULT_FETCH_MAX_BYTES: usize = 52_428_800;
/// Kafka's default `max.partition.fetch.bytes`.
const DEFAULT_PARTITION_FETCH_BYTES: usize = 1_048_576;
/// Longest a fetch may wait for data.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

/// Broker settings the request logic uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// This broker's id.
    pub broker_id: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `num.partitions` for auto-created topics.
    pub num_partitions: i32,
    /// `default.replication.factor` for auto-created topics.
    pub default_replication_factor: i32,
}

/// The request logic of a broker.
#[derive(Debug)]
pub struct Broker {
    limits: Limits,
    logs: Arc<LogManager>,
    metadata: Arc<MetadataCache>,
    controller: Controller,
    /// Bounds reads in flight on the blocking pool.
    read_permits: Semaphore,
    shutdown: CancellationToken,
    /// The unused rest of this broker's block of producer ids.
    producer_ids: tokio::sync::Mutex<std::ops::Range<i64>>,
}

/// Why a partition's request failed: the code and a message for the client.
pub type Failure = (ErrorCode, String);

pub use runnel_common::metadata::EXTERNAL_GRPC_ENDPOINT;

/// Which of the broker's gRPC listeners a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listener {
    /// `listen`: other brokers and clients inside the cluster's network.
    #[default]
    Internal,
    /// `external_listen`: clients outside it (Kafka's `EXTERNAL` listener).
    External,
}

/// A node's endpoints as a client on `listener` must see them. Clients dial
/// the endpoint named `grpc`, so on the external listener a node's
/// `grpc-external` endpoint takes that name (its internal one is dropped);
/// a node without an external endpoint is shown as it registered.
pub fn endpoints_for(listener: Listener, endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    let has_external = endpoints.iter().any(|e| e.name == EXTERNAL_GRPC_ENDPOINT);
    if listener == Listener::Internal || !has_external {
        return endpoints;
    }
    endpoints
        .into_iter()
        .filter(|e| e.name != "grpc")
        .map(|mut e| {
            if e.name == EXTERNAL_GRPC_ENDPOINT {
                e.name = "grpc".into();
            }
            e
        })
        .collect()
}

impl Broker {
    /// The broker's request logic over its logs and metadata.
    pub fn new(
        limits: Limits,
        logs: Arc<LogManager>,
        metadata: Arc<MetadataCache>,
        controller: Controller,
        shutdown: CancellationToken,
    ) -> Broker {
        Broker {
            limits,
            logs,
            metadata,
            controller,
            read_permits: Semaphore::new(64),
            shutdown,
            producer_ids: tokio::sync::Mutex::new(0..0),
        }
    }

    /// The coordinator owning group `req.key` as the metadata log says, with
    /// the address a client on `listener` reaches it at.
    pub fn find_coordinator(
        &self,
        req: &pb::FindCoordinatorRequest,
        listener: Listener,
    ) -> pb::FindCoordinatorResponse {
        let unavailable = |message: String| pb::FindCoordinatorResponse {
            error_code: ErrorCode::CoordinatorNotAvailable as i32,
            error_message: message,
            coordinator_id: -1,
            ..Default::default()
        };
        if req.key.is_empty() {
            return pb::FindCoordinatorResponse {
                error_code: ErrorCode::InvalidGroupId as i32,
                error_message: "the group id is empty".into(),
                coordinator_id: -1,
                ..Default::default()
            };
        }
        self.metadata.with(|image| {
            let Some((id, c, partition)) = image.group_coordinator(&req.key) else {
                return unavailable(format!(
                    "no live coordinator owns group {}'s partition of __consumer_offsets yet",
                    req.key
                ));
            };
            let endpoints = endpoints_for(listener, c.endpoints.clone());
            match endpoints.iter().find(|e| e.name == "grpc") {
                Some(e) => pb::FindCoordinatorResponse {
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                    coordinator_id: id,
                    host: e.host.clone(),
                    port: e.port,
                },
                None => unavailable(format!(
                    "coordinator {id} (owner of partition {partition}) has no gRPC endpoint"
                )),
            }
        })
    }

    /// A new producer id (epoch 0) for an idempotent producer, from this
    /// broker's block; an exhausted block is replaced by the controller's next.
    pub async fn init_producer_id(
        &self,
        req: pb::InitProducerIdRequest,
    ) -> pb::InitProducerIdResponse {
        let mut response = pb::InitProducerIdResponse {
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        };
        let fail = |mut r: pb::InitProducerIdResponse, code: ErrorCode, message: String| {
            r.error_code = code as i32;
            r.error_message = message;
            r
        };
        if !req.transactional_id.is_empty() {
            return fail(
                response,
                ErrorCode::TransactionalIdAuthorizationFailed,
                "transactions are not supported: leave transactional.id unset".into(),
            );
        }
        // Without a transactional id Kafka hands out a fresh id whatever the
        // request carries (the producer bumps its epoch itself, KIP-360).
        let mut block = self.producer_ids.lock().await;
        if block.is_empty() {
            let me = self.limits.broker_id;
            let Some(broker_epoch) = self
                .metadata
                .with(|image| image.brokers.get(&me).map(|b| b.epoch))
            else {
                return fail(
                    response,
                    ErrorCode::BrokerNotAvailable,
                    format!("broker {me} is not registered yet"),
                );
            };
            let request = runnel_proto::controller::v1::AllocateProducerIdsRequest {
                broker_id: me,
                broker_epoch,
            };
            match self.controller.clone().allocate_producer_ids(request).await {
                Ok(r) => {
                    let r = r.into_inner();
                    *block =
                        r.producer_id_start..r.producer_id_start + i64::from(r.producer_id_len);
                }
                Err(status) => {
                    let code = runnel_common::errors::code_of(&status);
                    // Whatever went wrong with the controller, the producer may retry.
                    let code = if runnel_common::errors::is_retriable(code) {
                        code
                    } else {
                        ErrorCode::BrokerNotAvailable
                    };
                    return fail(
                        response,
                        code,
                        format!("no producer ids from the controller: {}", status.message()),
                    );
                }
            }
        }
        let Some(id) = block.next() else {
            return fail(
                response,
                ErrorCode::BrokerNotAvailable,
                "empty producer id block".into(),
            );
        };
        response.producer_id = id;
        response.producer_epoch = 0;
        response
    }

    /// The partition if this broker leads it, else why not.
    fn leader(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, Failure> {
        let me = self.limits.broker_id;
        self.metadata.with(|image| {
            let t = image.topics.get(topic).ok_or_else(|| {
                (
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic {topic} does not exist"),
                )
            })?;
            let p = t.partitions.get(&partition).ok_or_else(|| {
                (
                    ErrorCode::UnknownTopicOrPartition,
                    format!(
                        "topic {topic} has no partition {partition} (it has {})",
                        t.partitions.len()
                    ),
                )
            })?;
            if p.leader != me {
                return Err((
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "broker {me} does not lead {topic}-{partition}; the leader is {}",
                        p.leader
                    ),
                ));
            }
            Ok(())
        })?;
        self.logs.get(topic, partition).ok_or_else(|| {
            (
                ErrorCode::LeaderNotAvailable,
                format!("{topic}-{partition} is still being opened on broker {me}"),
            )
        })
    }

    /// Appends each partition's batches; answers when they are acknowledged per `acks`.
    pub async fn produce(&self, req: pb::ProduceRequest) -> pb::ProduceResponse {
        self.start_produce(req).await.await
    }

    /// Applies a produce: every partition's batches are checked and queued
    /// for their log's I/O thread, in request order, before this returns.
    /// The future it returns answers once they are appended and
    /// acknowledged per `acks`; it does not hold the broker, so a
    /// connection's next Produce can be applied meanwhile.
    pub async fn start_produce(
        &self,
        req: pb::ProduceRequest,
    ) -> impl Future<Output = pb::ProduceResponse> + Send + 'static {
        let acks = req.acks();
        let timeout = Duration::from_millis(u64::from(req.timeout_ms).max(1));
        let mut pending = Vec::with_capacity(req.partitions.len());
        for p in req.partitions {
            pending.push(self.start_produce_partition(acks, timeout, p).await);
        }
        async move {
            let mut partitions = join_all(pending).await;
            if acks == pb::Acks::None {
                // The producer asked for no acknowledgement: it gets no offsets.
                for p in &mut partitions {
                    p.base_offset = -1;
                    p.batch_base_offsets.clear();
                }
            }
            pb::ProduceResponse { partitions }
        }
    }

    /// Checks one partition's part of a produce and queues its append; the
    /// future answers once it is appended and acknowledged.
    async fn start_produce_partition(
        &self,
        acks: pb::Acks,
        timeout: Duration,
        req: pb::ProducePartition,
    ) -> BoxFuture<'static, pb::ProducePartitionResult> {
        let result = pb::ProducePartitionResult {
            topic: req.topic.clone(),
            partition: req.partition,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            ..Default::default()
        };
        let answer = |r: pb::ProducePartitionResult| futures::future::ready(r).boxed();
        let p = match self.leader(&req.topic, req.partition) {
            Ok(p) => p,
            Err((code, message)) => return answer(fail(result, code, message)),
        };
        let state = p.state();
        if acks == pb::Acks::All && (state.isr.len() as i32) < state.config.min_insync_replicas {
            let message = format!(
                "{}-{} has {} in-sync replicas, fewer than min.insync.replicas {}",
                req.topic,
                req.partition,
                state.isr.len(),
                state.config.min_insync_replicas
            );
            return answer(fail(result, ErrorCode::NotEnoughReplicas, message));
        }
        let size = req.records.len();
        // The log patches offsets in place: take the buffer if we own it, else copy.
        let mut records: BytesMut = req
            .records
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
        let key = p.key();
        let epoch = state.leader_epoch;
        let target = Arc::clone(&p);
        // The disk write happens on an I/O thread; keep it in this request's trace.
        let span = tracing::info_span!("append", topic = %req.topic, partition = req.partition, bytes = size);
        let append = move || span.in_scope(|| target.append(&mut records, epoch));
        let appended = match self.logs.io().submit(&key, append).await {
            Ok(appended) => appended,
            Err(e) => return answer(fail(result, ErrorCode::KafkaStorageError, e.to_string())),
        };
        let shutdown = self.shutdown.clone();
        async move {
            let info = match appended.await {
                Ok(Ok(info)) => info,
                Ok(Err(e)) => {
                    let (code, message) = log_error(&e);
                    let record_errors = match e {
                        LogError::RejectedRecords { errors, .. } => errors
                            .into_iter()
                            .map(|r| pb::RecordError {
                                batch_index: r.batch_index,
                                message: r.message,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    return pb::ProducePartitionResult {
                        record_errors,
                        ..fail(result, code, message)
                    };
                }
                Err(e) => return fail(result, ErrorCode::KafkaStorageError, e.to_string()),
            };
            metrics::counter!("runnel_broker_bytes_in_total").increment(size as u64);
            metrics::counter!("runnel_broker_records_in_total").increment(info.record_count);
            if info.duplicate_batches > 0 {
                // An idempotent producer's retry of batches already stored.
                metrics::counter!("runnel_broker_duplicate_batches_total")
                    .increment(info.duplicate_batches as u64);
            }
            if acks == pb::Acks::All
                && let Err((code, message)) =
                    Self::await_replication(&p, epoch, info.last_offset, timeout, &shutdown).await
            {
                return fail(result, code, message);
            }
            pb::ProducePartitionResult {
                base_offset: info.first_offset,
                batch_base_offsets: info.batch_base_offsets,
                log_append_time_ms: info.log_append_time.unwrap_or(-1),
                log_start_offset: p.log_start_offset(),
                ..result
            }
        }
        .boxed()
    }

    /// A fetching follower must be a registered, unfenced broker in the
    /// incarnation it names.
    fn check_replica(&self, r: &pb::FetchingReplica) -> Result<(), Failure> {
        self.metadata
            .with(|image| match image.brokers.get(&r.broker_id) {
                Some(b) if b.epoch == r.broker_epoch && !b.fenced => Ok(()),
                Some(b) => Err((
                    ErrorCode::StaleBrokerEpoch,
                    format!(
                        "replica {} fetches with broker epoch {}, its registration is {}{}",
                        r.broker_id,
                        r.broker_epoch,
                        b.epoch,
                        if b.fenced { " (fenced)" } else { "" }
                    ),
                )),
                None => Err((
                    ErrorCode::StaleBrokerEpoch,
                    format!("replica {} is not a registered broker", r.broker_id),
                )),
            })
    }

    /// Kafka's OffsetForLeaderEpoch: where each asked epoch ends in this leader's log.
    pub async fn offset_for_leader_epoch(
        &self,
        req: pb::OffsetForLeaderEpochRequest,
    ) -> pb::OffsetForLeaderEpochResponse {
        let partitions = req
            .partitions
            .into_iter()
            .map(|q| {
                let mut r = pb::EpochEndOffset {
                    topic: q.topic.clone(),
                    partition: q.partition,
                    leader_epoch: -1,
                    end_offset: -1,
                    ..Default::default()
                };
                let p = match self.leader(&q.topic, q.partition) {
                    Ok(p) => p,
                    Err((code, message)) => {
                        r.error_code = code as i32;
                        r.error_message = message;
                        return r;
                    }
                };
                if let Err((code, message)) =
                    check_leader_epoch(q.current_leader_epoch, p.leader_epoch())
                {
                    r.error_code = code as i32;
                    r.error_message = message;
                    return r;
                }
                if let Some((epoch, end)) = p.end_offset_for_epoch(q.leader_epoch) {
                    r.leader_epoch = epoch;
                    r.end_offset = end;
                }
                r
            })
            .collect();
        pb::OffsetForLeaderEpochResponse { partitions }
    }

    /// Reads committed batches, waiting up to `max_wait_ms` for `min_bytes`.
    pub async fn fetch(&self, req: pb::FetchRequest) -> pb::FetchResponse {
        let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_FETCH_WAIT);
        let deadline = Instant::now() + wait;
        let max_bytes = if req.max_bytes == 0 {
            DEFAULT_FETCH_MAX_BYTES
        } else {
            req.max_bytes as usize
        };
        let min_bytes = req.min_bytes as usize;
        let follower = match &req.replica {
            None => None,
            Some(r) => match self.check_replica(r) {
                Ok(()) => Some(r.broker_id),
                Err((code, message)) => {
                    let partitions = req
                        .partitions
                        .iter()
                        .map(|p| pb::FetchPartitionResult {
                            topic: p.topic.clone(),
                            partition: p.partition,
                            error_code: code as i32,
                            error_message: message.clone(),
                            high_watermark: -1,
                            log_start_offset: -1,
                            ..Default::default()
                        })
                        .collect();
                    return pb::FetchResponse { partitions };
                }
            },
        };
        loop {
            // Register for wake-ups before looking, so an append in between is not missed.
            let partitions: Vec<Option<Arc<Partition>>> = req
                .partitions
                .iter()
                .map(|p| self.logs.get(&p.topic, p.partition))
                .collect();
            let mut wakeups: Vec<_> = partitions
                .iter()
                .flatten()
                .map(|p| Box::pin(p.data.notified()))
                .collect();
            // Registered now, not at their first poll, so nothing in between is missed.
            for w in &mut wakeups {
                w.as_mut().enable();
            }
            let mut results = Vec::with_capacity(req.partitions.len());
            let mut total = 0usize;
            let mut errors = false;
            for fp in &req.partitions {
                let r = self
                    .fetch_partition(fp, max_bytes.saturating_sub(total), total == 0, follower)
                    .await;
                total += r.records.len();
                errors |= r.error_code != ErrorCode::None as i32;
                results.push(r);
            }
            let done = total >= min_bytes.max(1)
                || errors
                || Instant::now() >= deadline
                || self.shutdown.is_cancelled();
            if done {
                metrics::counter!("runnel_broker_bytes_out_total").increment(total as u64);
                return pb::FetchResponse {
                    partitions: results,
                };
            }
            let any_data = async {
                if wakeups.is_empty() {
                    std::future::pending::<()>().await;
                }
                futures::future::select_all(wakeups).await;
            };
            tokio::select! {
                () = any_data => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
    }

    async fn fetch_partition(
        &self,
        req: &pb::FetchPartition,
        budget: usize,
        first: bool,
        follower: Option<i32>,
    ) -> pb::FetchPartitionResult {
        let mut result = pb::FetchPartitionResult {
            topic: req.topic.clone(),
            partition: req.partition,
            high_watermark: -1,
            log_start_offset: -1,
            ..Default::default()
        };
        let p = match self.leader(&req.topic, req.partition) {
            Ok(p) => p,
            Err((code, message)) => return fail_fetch(result, code, message),
        };
        if let Err((code, message)) = check_leader_epoch(req.current_leader_epoch, p.leader_epoch())
        {
            return fail_fetch(result, code, message);
        }
        if let Some(id) = follower
            && !p.has_replica(id)
        {
            return fail_fetch(
                result,
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "broker {id} is not a replica of {}-{}",
                    req.topic, req.partition
                ),
            );
        }
        let (start, end) = (p.log_start_offset(), p.log_end_offset());
        if let Some(id) = follower
            && (start..=end).contains(&req.fetch_offset)
        {
            p.follower_fetched(id, req.fetch_offset);
        }
        let hw = p.high_watermark();
        result.high_watermark = hw;
        result.log_start_offset = start;
        if req.fetch_offset < start || req.fetch_offset > end {
            return fail_fetch(
                result,
                ErrorCode::OffsetOutOfRange,
                format!(
                    "offset {} is out of range for {}-{} (log start {start}, log end {end})",
                    req.fetch_offset, req.topic, req.partition
                ),
            );
        }
        // Consumers read what is committed; followers read everything.
        let readable_end = if follower.is_some() { end } else { hw };
        if req.fetch_offset >= readable_end || budget == 0 {
            return result;
        }
        let limit = if req.partition_max_bytes == 0 {
            DEFAULT_PARTITION_FETCH_BYTES
        } else {
            req.partition_max_bytes as usize
        };
        let max = limit.min(budget);
        let Ok(_permit) = self.read_permits.acquire().await else {
            return result;
        };
        let offset = req.fetch_offset;
        let reader = Arc::clone(&p);
        let read = move || {
            if follower.is_some() {
                reader.read_for_follower(offset, max)
            } else {
                reader.read(offset, max, first)
            }
        };
        match tokio::task::spawn_blocking(read).await {
            Ok(Ok(records)) => {
                result.records = records;
                result
            }
            Ok(Err(e)) => {
                let (code, message) = log_error(&e);
                fail_fetch(result, code, message)
            }
            Err(e) => fail_fetch(result, ErrorCode::UnknownServerError, e.to_string()),
        }
    }

    /// Kafka's DeleteRecords: `topic-partition` starts at `offset` (-1:
    /// the high watermark) from now on. Returns the new log start.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, Failure> {
        let p = self.leader(topic, partition)?;
        let offset = if offset == -1 {
            p.high_watermark()
        } else {
            offset
        };
        if offset < 0 {
            return Err((
                ErrorCode::OffsetOutOfRange,
                format!("cannot delete records before offset {offset}"),
            ));
        }
        let target = Arc::clone(&p);
        match self
            .logs
            .io()
            .run(&p.key(), move || target.delete_records_before(offset))
            .await
        {
            Ok(Ok(start)) => Ok(start),
            Ok(Err(e)) => Err(log_error(&e)),
            Err(e) => Err((ErrorCode::KafkaStorageError, e.to_string())),
        }
    }

    /// The idempotent producers `topic-partition` tracks (Kafka's DescribeProducers).
    pub fn producers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<crate::partition::ProducerSummary>, Failure> {
        Ok(self.leader(topic, partition)?.producers())
    }

    /// Earliest, latest, or first-at-timestamp offsets.
    pub async fn list_offsets(&self, req: pb::ListOffsetsRequest) -> pb::ListOffsetsResponse {
        let mut out = Vec::with_capacity(req.partitions.len());
        for q in req.partitions {
            let mut r = pb::ListOffsetsPartitionResult {
                topic: q.topic.clone(),
                partition: q.partition,
                offset: -1,
                timestamp_ms: -1,
                leader_epoch: -1,
                ..Default::default()
            };
            let p = match self.leader(&q.topic, q.partition) {
                Ok(p) => p,
                Err((code, message)) => {
                    r.error_code = code as i32;
                    r.error_message = message;
                    out.push(r);
                    continue;
                }
            };
            r.leader_epoch = p.state().leader_epoch;
            let lookup = match q.spec() {
                pb::OffsetSpec::Earliest => Ok(Some((p.log_start_offset(), -1))),
                pb::OffsetSpec::Latest => Ok(Some((p.high_watermark(), -1))),
                pb::OffsetSpec::Timestamp => {
                    let (reader, ts) = (Arc::clone(&p), q.timestamp_ms);
                    tokio::task::spawn_blocking(move || reader.offset_for_timestamp(ts))
                        .await
                        .unwrap_or_else(|e| {
                            Err(runnel_log::LogError::Corrupt {
                                path: Default::default(),
                                reason: e.to_string(),
                            })
                        })
                }
                pb::OffsetSpec::MaxTimestamp => {
                    let reader = Arc::clone(&p);
                    tokio::task::spawn_blocking(move || reader.max_timestamp_offset())
                        .await
                        .unwrap_or_else(|e| {
                            Err(runnel_log::LogError::Corrupt {
                                path: Default::default(),
                                reason: e.to_string(),
                            })
                        })
                }
            };
            match lookup {
                Ok(Some((offset, ts))) => {
                    r.offset = offset;
                    r.timestamp_ms = ts;
                }
                Ok(None) => {}
                Err(e) => {
                    let (code, message) = log_error(&e);
                    r.error_code = code as i32;
                    r.error_message = message;
                }
            }
            out.push(r);
        }
        pb::ListOffsetsResponse { partitions: out }
    }

    /// Brokers, controller and topics, with the addresses a client on
    /// `listener` can reach; creates missing topics when allowed.
    pub async fn metadata(
        &self,
        req: pb::MetadataRequest,
        listener: Listener,
    ) -> pb::MetadataResponse {
        let wanted = req.topics.clone();
        if req.allow_auto_topic_creation && self.limits.auto_create_topics_enable {
            let missing: Vec<String> = self.metadata.with(|image| {
                wanted
                    .iter()
                    .filter(|t| !image.topics.contains_key(*t) && validate_topic_name(t).is_ok())
                    .cloned()
                    .collect()
            });
            if !missing.is_empty() {
                self.auto_create(missing).await;
            }
        }
        let image = self.metadata.snapshot();
        let names: Vec<String> = if wanted.is_empty() {
            image.topics.keys().cloned().collect()
        } else {
            wanted
        };
        let topics = names
            .into_iter()
            .map(|name| {
                let Some(t) = image.topics.get(&name) else {
                    let (code, message) = match validate_topic_name(&name) {
                        Ok(()) => (
                            ErrorCode::UnknownTopicOrPartition,
                            format!("topic {name} does not exist"),
                        ),
                        Err(e) => (ErrorCode::InvalidTopicException, e.to_string()),
                    };
                    return pb::TopicInfo {
                        name,
                        error_code: code as i32,
                        error_message: message,
                        ..Default::default()
                    };
                };
                pb::TopicInfo {
                    name,
                    topic_id: t.id.to_vec().into(),
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|(&partition, p)| pb::PartitionInfo {
                            partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas.clone(),
                            isr: p.isr.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        pb::MetadataResponse {
            brokers: image
                .brokers
                .iter()
                .map(|(&id, b)| pb::BrokerEndpoints {
                    broker_id: id,
                    endpoints: endpoints_for(listener, b.endpoints.clone()),
                    rack: b.rack.clone(),
                    fenced: b.fenced,
                })
                .collect(),
            controller_endpoints: endpoints_for(listener, self.metadata.controller_endpoints()),
            topics,
            metadata_offset: image.next_offset,
            cluster_id: self.metadata.cluster_id(),
            coordinators: image
                .live_coordinators()
                .map(|(id, c)| pb::CoordinatorEndpoints {
                    coordinator_id: id,
                    endpoints: endpoints_for(listener, c.endpoints.clone()),
                })
                .collect(),
        }
    }

    /// Asks the controller to create `topics`, then waits (briefly) until the
    /// metadata reaching this broker has them.
    async fn auto_create(&self, topics: Vec<String>) {
        let request = cpb::CreateTopicsRequest {
            topics: topics
                .iter()
                .map(|name| cpb::CreatableTopic {
                    name: name.clone(),
                    partitions: self.limits.num_partitions,
                    replication_factor: self.limits.default_replication_factor,
                    configs: Default::default(),
                })
                .collect(),
            validate_only: false,
        };
        match self.controller.clone().create_topics(request).await {
            Ok(r) => {
                for t in r.into_inner().topics {
                    if t.error_code() != ErrorCode::None
                        && t.error_code() != ErrorCode::TopicAlreadyExists
                    {
                        tracing::warn!(topic = %t.name, error = %t.error_message, "auto-creating topic failed");
                    }
                }
            }
            Err(status) => {
                tracing::warn!(code = ?code_of(&status), error = %status.message(), "auto-creating topics failed");
                return;
            }
        }
        self.wait_for_topics(&topics, Duration::from_secs(5)).await;
    }

    /// acks=all: waits until the high watermark covers `last_offset`, i.e.
    /// every in-sync replica has it, while this broker still leads in `epoch`.
    async fn await_replication(
        p: &Partition,
        epoch: i32,
        last_offset: i64,
        timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = p.data.notified();
            let state = p.state();
            if !state.is_leader || state.leader_epoch != epoch {
                return Err((
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "{}-{}: leadership moved before the write was replicated (leader now {})",
                        p.topic, p.index, state.leader
                    ),
                ));
            }
            if p.high_watermark() > last_offset {
                if (state.isr.len() as i32) < state.config.min_insync_replicas {
                    return Err((
                        ErrorCode::NotEnoughReplicasAfterAppend,
                        format!(
                            "{}-{}: the ISR shrank to {} replicas, fewer than min.insync.replicas {}",
                            p.topic,
                            p.index,
                            state.isr.len(),
                            state.config.min_insync_replicas
                        ),
                    ));
                }
                return Ok(());
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err((
                        ErrorCode::RequestTimedOut,
                        format!(
                            "{}-{}: not replicated to the ISR {:?} within {} ms",
                            p.topic, p.index, state.isr, timeout.as_millis()
                        ),
                    ));
                }
                () = shutdown.cancelled() => {
                    return Err((ErrorCode::NotLeaderOrFollower, "the broker is shutting down".into()));
                }
            }
        }
    }

    /// Waits (at most `timeout`) until this broker's metadata has `topics`
    /// and every partition of them it leads is open.
    pub async fn wait_for_topics(&self, topics: &[String], timeout: Duration) {
        let mut applied = self.metadata.subscribe();
        let me = self.limits.broker_id;
        let _ = tokio::time::timeout(timeout, async {
            loop {
                // Known, and every partition this broker leads opened.
                let ready = self.metadata.with(|image| {
                    topics.iter().all(|t| {
                        image.topics.get(t).is_some_and(|state| {
                            state
                                .partitions
                                .iter()
                                .filter(|(_, p)| p.leader == me)
                                .all(|(&i, _)| self.logs.get(t, i).is_some())
                        })
                    })
                });
                if ready || applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

fn fail(
    mut r: pb::ProducePartitionResult,
    code: ErrorCode,
    message: String,
) -> pb::ProducePartitionResult {
    r.error_code = code as i32;
    r.error_message = message;
    r
}

/// Kafka's leader-epoch fencing: a request naming an epoch (>= 0) must name
/// the current one; an older one is fenced, a newer one not known here yet.
fn check_leader_epoch(requested: i32, current: i32) -> Result<(), Failure> {
    if requested < 0 || requested == current {
        return Ok(());
    }
    let code = if requested < current {
        ErrorCode::FencedLeaderEpoch
    } else {
        ErrorCode::UnknownLeaderEpoch
    };
    Err((
        code,
        format!("the request names leader epoch {requested} but the current one is {current}"),
    ))
}

fn fail_fetch(
    mut r: pb::FetchPartitionResult,
    code: ErrorCode,
    message: String,
) -> pb::FetchPartitionResult {
    r.error_code = code as i32;
    r.error_message = message;
    r.records = Bytes::new();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str, host: &str, port: u32) -> Endpoint {
        Endpoint {
            name: name.into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn external_listener_names_the_external_endpoint_grpc() {
        let registered = vec![
            endpoint("grpc", "broker-2", 9094),
            endpoint("admin", "broker-2", 9194),
            endpoint(EXTERNAL_GRPC_ENDPOINT, "127.0.0.1", 9194),
        ];
        assert_eq!(
            endpoints_for(Listener::External, registered.clone()),
            vec![
                endpoint("admin", "broker-2", 9194),
                endpoint("grpc", "127.0.0.1", 9194),
            ]
        );
        // Inside the network (and for replication) nothing changes.
        assert_eq!(
            endpoints_for(Listener::Internal, registered.clone()),
            registered
        );
    }

    #[test]
    fn a_node_without_an_external_endpoint_keeps_its_own() {
        let registered = vec![endpoint("grpc", "127.0.0.1", 9093)];
        assert_eq!(
            endpoints_for(Listener::External, registered.clone()),
            registered
        );
    }
}
