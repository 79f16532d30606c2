//! `__consumer_offsets` on the brokers: the [`RecordSink`] that writes to it
//! (acks=all, idempotent, each group's records to its own partition) and
//! the reader a coordinator replays a partition with when it takes over.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use runnel_client::{
    Admin, ClientError, Cluster, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use runnel_proto::common::v1::ErrorCode;

use crate::manager::{OffsetsRecord, RecordSink, SinkError};
use crate::offsets::OFFSETS_TOPIC;

/// The offsets topic through a Runnel client.
pub struct OffsetsTopic {
    cluster: Arc<Cluster>,
    producer: Producer,
}

impl std::fmt::Debug for OffsetsTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetsTopic").finish_non_exhaustive()
    }
}

impl OffsetsTopic {
    /// Writes and reads `__consumer_offsets` through `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> OffsetsTopic {
        let producer = Producer::with_cluster(
            Arc::clone(&cluster),
            ProducerConfig {
                linger: Duration::ZERO,
                allow_auto_topic_creation: false,
                ..ProducerConfig::default()
            },
        );
        OffsetsTopic { cluster, producer }
    }

    /// Creates the topic if it does not exist: compacted, `partitions`
    /// partitions (`offsets.topic.num.partitions`), replication factor
    /// `replication_factor` (`offsets.topic.replication.factor`) capped by
    /// the brokers there are.
    pub async fn ensure(
        &self,
        partitions: i32,
        replication_factor: i32,
    ) -> Result<(), ClientError> {
        let admin = Admin::with_cluster(Arc::clone(&self.cluster));
        if admin
            .list_topics()
            .await?
            .iter()
            .any(|t| t == OFFSETS_TOPIC)
        {
            return Ok(());
        }
        let brokers = admin.describe_cluster().await?.brokers.len().max(1) as i32;
        let rf = replication_factor.clamp(1, brokers);
        let topic = NewTopic::new(OFFSETS_TOPIC)
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
        self.cluster
            .refresh(&[OFFSETS_TOPIC.to_owned()], false)
            .await?;
        let (_, end) = admin.offsets(OFFSETS_TOPIC, partition).await?;
        let mut consumer = Consumer::with_cluster(
            Arc::clone(&self.cluster),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..ConsumerConfig::default()
            },
        );
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
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

impl RecordSink for OffsetsTopic {
    fn append(
        &self,
        partition: i32,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let failed = |e: ClientError| SinkError {
                code: e.code().unwrap_or(ErrorCode::CoordinatorNotAvailable),
                message: e.to_string(),
            };
            let mut deliveries = Vec::with_capacity(records.len());
            for (key, value) in records {
                let record = ProducerRecord {
                    topic: OFFSETS_TOPIC.to_owned(),
                    partition: Some(partition),
                    key: Some(key.into()),
                    value: value.map(Into::into),
                    ..ProducerRecord::default()
                };
                deliveries.push(self.producer.send(record).await.map_err(failed)?);
            }
            for d in deliveries {
                d.await.map_err(failed)?;
            }
            Ok(())
        })
    }
}
