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
use runnel_client::{
    Admin, ClientError, Cluster, Consumer, ConsumerConfig, NewTopic, OffsetReset, TopicPartition,
};
use runnel_common::backoff::Backoff;
use runnel_common::shutdown::CancellationToken;
use runnel_proto::broker::v1::{Acks, ProducePartition, ProduceRequest};
use runnel_proto::common::v1::ErrorCode;
use runnel_records::batch::{BatchBuilder, Compression};

use crate::manager::{OffsetsRecord, RecordSink, SinkError};
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

    /// Every record of `partition`, from its start to its end as of now.
    pub async fn read_partition(&self, partition: i32) -> Result<Vec<OffsetsRecord>, ClientError> {
        let admin = Admin::with_cluster(Arc::clone(&self.cluster));
        self.cluster.refresh(&[self.name.to_owned()], false).await?;
        let (_, end) = admin.offsets(self.name, partition).await?;
        let mut consumer = Consumer::with_cluster(
            Arc::clone(&self.cluster),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..ConsumerConfig::default()
            },
        );
        let tp = TopicPartition::new(self.name, partition);
        consumer.assign(vec![tp.clone()]).await?;
        consumer.seek_to_beginning(&tp);
        let mut out = Vec::new();
        loop {
            if consumer.position(&tp).is_some_and(|p| p >= end) {
                return Ok(out);
            }
            for r in consumer.poll(Duration::from_millis(500)).await? {
                if r.offset >= end {
                    return Ok(out);
                }
                let Some(key) = r.key else {
                    continue;
                };
                out.push((key.to_vec(), r.value.map(|v| v.to_vec())));
            }
        }
    }
}

impl RecordSink for InternalTopic {
    fn append(
        &self,
        partition: i32,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let writer = self.writers.lock().get(&partition).cloned();
            match writer {
                Some(w) => w.write(records).await,
                None => Err(SinkError {
                    code: ErrorCode::NotCoordinator,
                    message: format!(
                        "this coordinator does not own partition {partition} of {}",
                        self.name
                    ),
                }),
            }
        })
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
            match self.send(batch.clone()).await {
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

    async fn send(&self, batch: Bytes) -> Result<(), ClientError> {
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
        };
        let response = broker
            .produce(request)
            .await
            .map_err(|s| ClientError::from_status(&addr, s))?
            .into_inner();
        let result = response
            .partitions
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Server {
                code: ErrorCode::UnknownServerError,
                message: "empty produce response".into(),
            })?;
        match result.error_code() {
            ErrorCode::None => Ok(()),
            code => Err(ClientError::Server {
                code,
                message: result.error_message,
            }),
        }
    }

    /// Stops the writer: a write waiting to retry gives up.
    pub fn stop(&self) {
        self.stopped.cancel();
    }
}
