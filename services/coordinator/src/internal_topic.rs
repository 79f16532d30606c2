//! The coordinator's internal topics on the brokers (`__consumer_offsets`
//! and `__transaction_state`): the [`RecordSink`] that writes the
//! partitions this coordinator owns (acks=all, under each partition's
//! producer id and owner epoch, so a previous owner is fenced by the
//! brokers) and the reader a coordinator replays a partition with when it
//! takes over.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use runnel_client::{Admin, ClientError, Cluster, NewTopic};
use runnel_common::backoff::Backoff;
use runnel_common::shutdown::CancellationToken;
use runnel_proto::broker::v1::{
    Acks, FetchPartition, FetchRequest, ProducePartition, ProduceRequest,
};
use runnel_proto::common::v1::ErrorCode;
use runnel_records::batch::{
    BatchBuilder, Batches, Compression, ControlRecord, ControlType, add_sequence,
};

use crate::manager::{OffsetsRecord, RecordSink, SinkError, TxnProducer};
use crate::offsets::OFFSETS_TOPIC;
use crate::transaction::TRANSACTION_STATE_TOPIC;

/// One internal topic through a Runnel client, with a writer for each
/// partition this coordinator owns.
pub struct InternalTopic {
    cluster: Arc<Cluster>,
    name: &'static str,
    writers: Mutex<HashMap<i32, Arc<PartitionWriter>>>,
}

impl std::fmt::Debug for InternalTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalTopic")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl InternalTopic {
    /// Writes and reads `__consumer_offsets` through `cluster`.
    pub fn offsets(cluster: Arc<Cluster>) -> InternalTopic {
        Self::named(cluster, OFFSETS_TOPIC)
    }

    /// Writes and reads `__transaction_state` through `cluster`.
    pub fn transaction_state(cluster: Arc<Cluster>) -> InternalTopic {
        Self::named(cluster, TRANSACTION_STATE_TOPIC)
    }

    fn named(cluster: Arc<Cluster>, name: &'static str) -> InternalTopic {
        InternalTopic {
            cluster,
            name,
            writers: Mutex::new(HashMap::new()),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Starts writing `partition` as its owner with `producer_id` at
    /// `owner_epoch`: writes the ownership marker `owner_record` (which
    /// fences any previous owner) and returns once it is stored.
    pub async fn take_over(
        &self,
        partition: i32,
        producer_id: i64,
        owner_epoch: i32,
        owner_record: OffsetsRecord,
    ) -> Result<(), SinkError> {
        let epoch = i16::try_from(owner_epoch).map_err(|_| SinkError {
            code: ErrorCode::UnknownServerError,
            message: format!("owner epoch {owner_epoch} does not fit a producer epoch"),
        })?;
        let writer = {
            let mut writers = self.writers.lock();
            match writers.get(&partition) {
                Some(w) if w.producer_id == producer_id && w.epoch == epoch => Arc::clone(w),
                _ => {
                    let w = Arc::new(PartitionWriter {
                        cluster: Arc::clone(&self.cluster),
                        topic: self.name,
                        partition,
                        producer_id,
                        epoch,
                        next_sequence: tokio::sync::Mutex::new(Some(0)),
                        stopped: CancellationToken::new(),
                    });
                    if let Some(old) = writers.insert(partition, Arc::clone(&w)) {
                        old.stop();
                    }
                    w
                }
            }
        };
        writer.write(vec![owner_record]).await
    }

    /// Stops writing `partition` (it moved away).
    pub fn release(&self, partition: i32) {
        if let Some(w) = self.writers.lock().remove(&partition) {
            w.stop();
        }
    }

    /// Creates the topic if it does not exist: compacted, `partitions`
    /// partitions (`offsets.topic.num.partitions`,
    /// `transaction.state.log.num.partitions`), replication factor
    /// `replication_factor` (`offsets.topic.replication.factor`,
    /// `transaction.state.log.replication.factor`) capped by the brokers
    /// there are, 100 MiB segments and min.insync.replicas 2 as Kafka's
    /// defaults for both.
    pub async fn ensure(
        &self,
        partitions: i32,
        replication_factor: i32,
    ) -> Result<(), ClientError> {
        let admin = Admin::with_cluster(Arc::clone(&self.cluster));
        if admin.list_topics().await?.iter().any(|t| t == self.name) {
            return Ok(());
        }
        let brokers = admin.describe_cluster().await?.brokers.len().max(1) as i32;
        let rf = replication_factor.clamp(1, brokers);
        let topic = NewTopic::new(self.name)
            .partitions(partitions)
            .replication_factor(rf)
            .config("cleanup.policy", "compact")
            .config("segment.bytes", "104857600")
            .config("min.insync.replicas", if rf > 1 { "2" } else { "1" });
        match admin.create_topic(topic).await {
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => Ok(()),
            other => other,
        }
    }

    /// Every record of `partition`, from its start to its end as of now,
    /// read batch by batch: records of committed transactions stay where
    /// they are in the log, aborted ones are dropped, and open ones are
    /// returned apart (the transactional offset commits whose marker has
    /// not come yet), as Kafka's group coordinator loads its partitions.
    pub async fn read_partition(&self, partition: i32) -> Result<Replay, ClientError> {
        let admin = Admin::with_cluster(Arc::clone(&self.cluster));
        self.cluster.refresh(&[self.name.to_owned()], false).await?;
        let (start, end) = admin.offsets(self.name, partition).await?;
        let mut replay = Replay::default();
        let mut settled: Vec<(i64, OffsetsRecord)> = Vec::new();
        let mut offset = start;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        while offset < end {
            let records = match self.fetch(partition, offset).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    backoff.wait().await;
                    let _ = self.cluster.refresh(&[self.name.to_owned()], false).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let before = offset;
            for batch in Batches::new(&records) {
                let Ok(batch) = batch else { break };
                let h = *batch.header();
                offset = offset.max(h.next_offset());
                if h.has_producer_id() && !h.is_control() {
                    replay.sequences.insert(
                        h.producer_id,
                        (
                            h.producer_epoch,
                            add_sequence(h.base_sequence, h.last_offset_delta + 1),
                        ),
                    );
                }
                if h.is_control() {
                    let Ok(marker) = ControlRecord::from_batch(&batch) else {
                        continue;
                    };
                    let Some(marker) = marker.end_txn() else {
                        continue;
                    };
                    if let Some(pending) = replay.pending.remove(&h.producer_id)
                        && marker.control_type == ControlType::Commit
                    {
                        settled.extend(pending);
                    }
                    continue;
                }
                let Ok(decoded) = batch.records() else {
                    continue;
                };
                for r in decoded.flatten() {
                    if r.offset >= end || r.offset < before {
                        continue;
                    }
                    let Some(key) = r.key else { continue };
                    let record = (r.offset, (key.to_vec(), r.value.map(|v| v.to_vec())));
                    if h.is_transactional() {
                        replay
                            .pending
                            .entry(h.producer_id)
                            .or_default()
                            .push(record);
                    } else {
                        settled.push(record);
                    }
                }
            }
            if offset == before {
                // Nothing readable came back yet (the high watermark lags).
                backoff.wait().await;
            }
        }
        settled.sort_by_key(|(o, _)| *o);
        replay.records = settled.into_iter().map(|(_, r)| r).collect();
        Ok(replay)
    }

    /// One fetch of `partition` from `offset` at its leader (read_uncommitted).
    async fn fetch(&self, partition: i32, offset: i64) -> Result<Bytes, ClientError> {
        let Some((_, addr)) = self.cluster.leader_addr(self.name, partition) else {
            return Err(ClientError::Server {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("no leader for {}-{partition}", self.name),
            });
        };
        let mut broker = self.cluster.broker_at(&addr)?;
        let answer = broker
            .fetch(FetchRequest {
                max_wait_ms: 100,
                min_bytes: 1,
                max_bytes: 8 << 20,
                partitions: vec![FetchPartition {
                    topic: self.name.to_owned(),
                    partition,
                    fetch_offset: offset,
                    partition_max_bytes: 8 << 20,
                    current_leader_epoch: -1,
                }],
                ..Default::default()
            })
            .await
            .map_err(|s| ClientError::from_status(&addr, s))?
            .into_inner();
        let p = only(answer.partitions, "fetch")?;
        answered(p.error_code(), p.error_message)?;
        Ok(p.records)
    }
}

/// The one partition a single-partition request's answer holds.
fn only<T>(partitions: Vec<T>, what: &str) -> Result<T, ClientError> {
    partitions
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Server {
            code: ErrorCode::UnknownServerError,
            message: format!("empty {what} response"),
        })
}

/// A partition's answer as a result.
fn answered(code: ErrorCode, message: String) -> Result<(), ClientError> {
    match code {
        ErrorCode::None => Ok(()),
        code => Err(ClientError::Server { code, message }),
    }
}

/// What replaying a partition of an internal topic found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Settled records in log order: plain ones and committed transactions'.
    pub records: Vec<OffsetsRecord>,
    /// Records of transactions still open, by producer id, with their offsets.
    pub pending: HashMap<i64, Vec<(i64, OffsetsRecord)>>,
    /// Each producer's epoch and next sequence number in the partition.
    pub sequences: HashMap<i64, (i16, i32)>,
}

impl InternalTopic {
    /// The writer of `partition`, if this coordinator owns it.
    fn writer(&self, partition: i32) -> Result<Arc<PartitionWriter>, SinkError> {
        self.writers.lock().get(&partition).cloned().ok_or_else(|| {
            not_coordinator(format!(
                "this coordinator does not own partition {partition} of {}",
                self.name
            ))
        })
    }
}

impl RecordSink for InternalTopic {
    fn append_transactional(
        &self,
        partition: i32,
        producer: TxnProducer,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.writer(partition)?
                .write_transactional(producer, records)
                .await
        })
    }

    fn append(
        &self,
        partition: i32,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move { self.writer(partition)?.write(records).await })
    }
}

/// Writes one partition of an internal topic as its owner: every batch
/// under the partition's producer id at the owner epoch, with consecutive
/// sequence numbers, one batch in flight. A batch whose outcome is unknown
/// is sent again unchanged (the broker recognises a retry), so nothing is
/// written twice; a newer owner's epoch makes the broker refuse this one.
pub struct PartitionWriter {
    cluster: Arc<Cluster>,
    topic: &'static str,
    partition: i32,
    producer_id: i64,
    epoch: i16,
    next_sequence: tokio::sync::Mutex<Option<i32>>,
    stopped: CancellationToken,
}

impl std::fmt::Debug for PartitionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWriter")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("producer_id", &self.producer_id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn not_coordinator(message: String) -> SinkError {
    SinkError {
        code: ErrorCode::NotCoordinator,
        message,
    }
}

impl PartitionWriter {
    /// Appends `records` (acks=all), retrying while the partition is
    /// unavailable, until written, refused for good, or the writer stopped.
    pub async fn write(&self, records: Vec<OffsetsRecord>) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut sequence = self.next_sequence.lock().await;
        let Some(seq) = *sequence else {
            return Err(not_coordinator(format!(
                "the writer of partition {} was fenced",
                self.partition
            )));
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut builder =
            BatchBuilder::new(Compression::None).producer(self.producer_id, self.epoch, seq);
        for (k, v) in &records {
            builder.append(now, Some(k), v.as_deref(), &[]);
        }
        let batch = Bytes::from(builder.build().map_err(|e| SinkError {
            code: ErrorCode::UnknownServerError,
            message: format!("cannot build a batch: {e}"),
        })?);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            match self.send(batch.clone(), "").await {
                Ok(()) => {
                    *sequence = Some(seq.wrapping_add(records.len() as i32) & i32::MAX);
                    return Ok(());
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(topic = self.topic, partition = self.partition, error = %e, "internal topic write failed; retrying");
                }
                Err(e) => {
                    tracing::warn!(topic = self.topic, partition = self.partition, error = %e, "internal topic write refused; this coordinator no longer owns the partition");
                    *sequence = None;
                    self.stopped.cancel();
                    return Err(not_coordinator(e.to_string()));
                }
            }
            tokio::select! {
                () = self.stopped.cancelled() => {
                    return Err(not_coordinator(format!(
                        "partition {} of {} moved to another coordinator",
                        self.partition, self.topic
                    )));
                }
                () = backoff.wait() => {}
            }
            let _ = self.cluster.refresh(&[self.topic.to_owned()], false).await;
        }
    }

    /// Appends `records` as one transactional batch of `producer` (a
    /// TxnOffsetCommit: settled by the transaction's marker), in order with
    /// this writer's own batches. A refusal is returned, never retried.
    pub async fn write_transactional(
        &self,
        producer: TxnProducer,
        records: Vec<OffsetsRecord>,
    ) -> Result<(), SinkError> {
        let _in_order = self.next_sequence.lock().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut builder = BatchBuilder::new(Compression::None)
            .producer(
                producer.producer_id,
                producer.producer_epoch,
                producer.sequence,
            )
            .transactional(true);
        for (k, v) in &records {
            builder.append(now, Some(k), v.as_deref(), &[]);
        }
        let batch = Bytes::from(builder.build().map_err(|e| SinkError {
            code: ErrorCode::UnknownServerError,
            message: format!("cannot build a batch: {e}"),
        })?);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        for _ in 0..20 {
            match self.send(batch.clone(), &producer.transactional_id).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retriable() => {}
                Err(e) => {
                    return Err(SinkError {
                        code: e.code().unwrap_or(ErrorCode::UnknownServerError),
                        message: e.to_string(),
                    });
                }
            }
            if self.stopped.is_cancelled() {
                break;
            }
            backoff.wait().await;
            let _ = self.cluster.refresh(&[self.topic.to_owned()], false).await;
        }
        Err(not_coordinator(format!(
            "cannot write to partition {} of {} now",
            self.partition, self.topic
        )))
    }

    /// Sends one batch to the partition's leader (`transactional_id`: the
    /// transactional producer whose batch it is, or empty).
    async fn send(&self, batch: Bytes, transactional_id: &str) -> Result<(), ClientError> {
        let topic = self.topic.to_owned();
        let Some((_, addr)) = self.cluster.leader_addr(&topic, self.partition) else {
            return Err(ClientError::Server {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("no leader for {topic}-{}", self.partition),
            });
        };
        let mut broker = self.cluster.broker_at(&addr)?;
        let request = ProduceRequest {
            acks: Acks::All as i32,
            timeout_ms: 30_000,
            partitions: vec![ProducePartition {
                topic,
                partition: self.partition,
                records: batch,
            }],
            transactional_id: transactional_id.to_owned(),
        };
        let response = broker
            .produce(request)
            .await
            .map_err(|s| ClientError::from_status(&addr, s))?
            .into_inner();
        let result = only(response.partitions, "produce")?;
        answered(result.error_code(), result.error_message)
    }

    /// Stops the writer: a write waiting to retry gives up.
    pub fn stop(&self) {
        self.stopped.cancel();
    }
}
