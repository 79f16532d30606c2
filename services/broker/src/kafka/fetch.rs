//! Kafka's Fetch (with fetch sessions, `sessions`; topic ids from v13;
//! batches down-converted for v0-3 and zstd refused below v10) and
//! OffsetForLeaderEpoch, on the broker's fetch.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use runnel_kafka::kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use runnel_kafka::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use runnel_kafka::kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ProducerId,
};
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use runnel_records::batch::{BatchHeader, Compression, legacy};
use uuid::Uuid;

use runnel_common::acl::{Operation, ResourceType};
use runnel_common::quota::QuotaKey;

use super::sessions::FetchPlan;
use super::{Caller, KafkaApi, UNKNOWN_TOPIC_ID, by_topic, code, raw_code, topic_name};
use crate::quotas::Client;

impl KafkaApi {
    pub(super) async fn fetch(
        &self,
        mut r: FetchRequest,
        version: i16,
        caller: &Caller<'_>,
        client: Client<'_>,
    ) -> (FetchResponse, Duration) {
        let replica = if version >= 15 {
            r.replica_state.replica_id.0
        } else {
            r.replica_id.0
        };
        // v13+ name topics by id: resolve them to names up front, so the
        // sessions and the reads work on names as for older versions.
        let ids = (version >= 13).then(|| self.topic_ids());
        let mut unknown_ids = Vec::new();
        if let Some(ids) = &ids {
            let names: HashMap<Uuid, &String> = ids.iter().map(|(n, id)| (*id, n)).collect();
            r.topics.retain_mut(|t| match names.get(&t.topic_id) {
                Some(name) => {
                    t.topic = topic_name(name);
                    true
                }
                None => {
                    unknown_ids.push((t.topic_id, std::mem::take(&mut t.partitions)));
                    false
                }
            });
            r.forgotten_topics_data
                .retain_mut(|t| match names.get(&t.topic_id) {
                    Some(name) => {
                        t.topic = topic_name(name);
                        true
                    }
                    None => false,
                });
        }
        if replica >= 0 {
            // Replication between Runnel brokers runs over gRPC.
            return (
                FetchResponse::default().with_error_code(code(ErrorCode::InvalidRequest)),
                Duration::ZERO,
            );
        }
        let plan = match self.sessions.plan(&r, version) {
            Ok(plan) => plan,
            Err(error) => {
                return (
                    FetchResponse::default()
                        .with_error_code(error)
                        .with_session_id(0),
                    Duration::ZERO,
                );
            }
        };
        let FetchPlan {
            session_id,
            partitions,
            incremental,
        } = plan;
        // Each topic needs READ; the others are answered without a read
        // (without an authorizer, nothing to look at).
        let mut readable: HashMap<&str, bool> = HashMap::new();
        let mut denied = Vec::new();
        if caller.enabled() {
            for ((topic, partition), _) in &partitions {
                if !*readable
                    .entry(topic.as_str())
                    .or_insert_with(|| caller.allowed(Operation::Read, ResourceType::Topic, topic))
                {
                    denied.push(pb::FetchPartitionResult {
                        topic: topic.clone(),
                        partition: *partition,
                        error_code: ErrorCode::TopicAuthorizationFailed as i32,
                        high_watermark: -1,
                        log_start_offset: -1,
                        last_stable_offset: -1,
                        ..Default::default()
                    });
                }
            }
        }
        // Kafka's cap under `consumer_byte_rate` (its
        // `getMaxValueInQuotaWindow`): the quota's bytes over all windows but one.
        let window = self
            .quotas
            .window_bytes(QuotaKey::ConsumerByteRate, client)
            .map_or(u32::MAX, |b| u32::try_from(b).unwrap_or(u32::MAX));
        let max_bytes = u32::try_from(r.max_bytes).unwrap_or(u32::MAX).min(window);
        let mut answer = self
            .broker
            .fetch(pb::FetchRequest {
                max_wait_ms: u32::try_from(r.max_wait_ms).unwrap_or(0),
                min_bytes: u32::try_from(r.min_bytes).unwrap_or(0).min(max_bytes),
                max_bytes,
                partitions: partitions
                    .iter()
                    .filter(|((topic, _), _)| readable.get(topic.as_str()) != Some(&false))
                    .map(|(key, p)| pb::FetchPartition {
                        topic: key.0.clone(),
                        partition: key.1,
                        fetch_offset: p.fetch_offset,
                        partition_max_bytes: u32::try_from(p.max_bytes).unwrap_or(0),
                        current_leader_epoch: p.current_leader_epoch,
                    })
                    .collect(),
                replica: None,
                // v4 added isolation_level (1: READ_COMMITTED).
                isolation_level: if version >= 4 && r.isolation_level == 1 {
                    pb::IsolationLevel::ReadCommitted as i32
                } else {
                    pb::IsolationLevel::ReadUncommitted as i32
                },
            })
            .await;
        // `consumer_byte_rate`, as Kafka: a fetch that takes the consumer
        // over its quota is answered empty (and so costs nothing) with the
        // time to wait; the session stays where it was, so the next fetch
        // asks for the same data again.
        let fetched: usize = answer.partitions.iter().map(|p| p.records.len()).sum();
        let throttle = self
            .quotas
            .record(QuotaKey::ConsumerByteRate, client, fetched as f64);
        if !throttle.is_zero() {
            self.quotas
                .unrecord(QuotaKey::ConsumerByteRate, client, fetched as f64);
            // A full fetch's new session is not kept (Kafka's throttled full
            // fetch names none); an incremental one goes on.
            let session_id = if incremental {
                session_id
            } else {
                self.sessions.close(session_id);
                0
            };
            return (
                FetchResponse::default().with_session_id(session_id),
                throttle,
            );
        }
        answer.partitions.extend(denied);
        let committed = version >= 4 && r.isolation_level == 1;
        let keep = self
            .sessions
            .record(session_id, incremental, &answer.partitions);
        // Topics whose `compression.type` is zstd, refused below Fetch v10.
        let zstd_topics: HashSet<String> = if version < 10 {
            self.metadata.with(|image| {
                image
                    .topics
                    .iter()
                    .filter(|(_, t)| {
                        t.configs
                            .get("compression.type")
                            .is_some_and(|c| c == "zstd")
                    })
                    .map(|(name, _)| name.clone())
                    .collect()
            })
        } else {
            HashSet::new()
        };
        // Where each partition's read began and its byte limit, for
        // converting to old formats.
        let offsets: HashMap<(String, i32), (i64, i32)> = if version < 4 {
            partitions
                .iter()
                .map(|(key, p)| (key.clone(), (p.fetch_offset, p.max_bytes)))
                .collect()
        } else {
            HashMap::new()
        };
        let results = answer
            .partitions
            .into_iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(mut p, _)| {
                if version < 10 && (zstd_topics.contains(&p.topic) || holds_zstd(&p.records)) {
                    // Clients before Fetch v10 cannot read zstd: Kafka refuses
                    // a partition whose topic stores zstd, and we also one that
                    // holds a producer's zstd batch, rather than send what they
                    // cannot decode.
                    p.error_code = ErrorCode::UnsupportedCompressionType as i32;
                    p.records = Default::default();
                }
                if version < 4 {
                    let (from, max_bytes) = offsets
                        .get(&(p.topic.clone(), p.partition))
                        .copied()
                        .unwrap_or((0, i32::MAX));
                    down_convert(&mut p, version, from, max_bytes);
                }
                // Kafka names the aborted transactions only for read_committed.
                let aborted = committed.then(|| {
                    p.aborted_transactions
                        .iter()
                        .map(|a| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(a.producer_id))
                                .with_first_offset(a.first_offset)
                        })
                        .collect()
                });
                let out = PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_error_code(raw_code(p.error_code))
                    .with_high_watermark(p.high_watermark)
                    .with_last_stable_offset(p.last_stable_offset)
                    .with_log_start_offset(p.log_start_offset)
                    .with_aborted_transactions(aborted)
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_records(Some(p.records));
                (p.topic, out)
            });
        let mut responses: Vec<FetchableTopicResponse> = by_topic(results)
            .into_iter()
            .map(|(topic, partitions)| {
                let id = ids
                    .as_ref()
                    .and_then(|ids| ids.get(&topic).copied())
                    .unwrap_or_default();
                FetchableTopicResponse::default()
                    .with_topic(topic_name(&topic))
                    .with_topic_id(id)
                    .with_partitions(partitions)
            })
            .collect();
        // Kafka answers a topic id it does not know per partition.
        responses.extend(unknown_ids.into_iter().map(|(id, partitions)| {
            FetchableTopicResponse::default()
                .with_topic_id(id)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_error_code(UNKNOWN_TOPIC_ID)
                                .with_high_watermark(-1)
                                .with_last_stable_offset(-1)
                                .with_log_start_offset(-1)
                                .with_preferred_read_replica(BrokerId(-1))
                        })
                        .collect(),
                )
        }));
        (
            FetchResponse::default()
                .with_session_id(session_id)
                .with_responses(responses),
            Duration::ZERO,
        )
    }

    pub(super) async fn offset_for_leader_epoch(
        &self,
        r: OffsetForLeaderEpochRequest,
        caller: &Caller<'_>,
    ) -> OffsetForLeaderEpochResponse {
        let (topics, denied): (Vec<_>, Vec<_>) = r
            .topics
            .into_iter()
            .partition(|t| caller.allowed(Operation::Describe, ResourceType::Topic, &t.topic));
        let denied = denied.into_iter().flat_map(|t| {
            let topic = t.topic.to_string();
            t.partitions.into_iter().map(move |p| {
                let out = EpochEndOffset::default()
                    .with_error_code(code(ErrorCode::TopicAuthorizationFailed))
                    .with_partition(p.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                (topic.clone(), out)
            })
        });
        let partitions = topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.to_string();
                t.partitions
                    .into_iter()
                    .map(move |p| pb::OffsetForLeaderEpochPartition {
                        topic: topic.clone(),
                        partition: p.partition,
                        current_leader_epoch: p.current_leader_epoch,
                        leader_epoch: p.leader_epoch,
                    })
            })
            .collect();
        let answer = self
            .broker
            .offset_for_leader_epoch(pb::OffsetForLeaderEpochRequest { partitions })
            .await;
        let results = answer.partitions.into_iter().map(|p| {
            let out = EpochEndOffset::default()
                .with_error_code(raw_code(p.error_code))
                .with_partition(p.partition)
                .with_leader_epoch(p.leader_epoch)
                .with_end_offset(p.end_offset);
            (p.topic, out)
        });
        let topics = by_topic(results.chain(denied))
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic_name(&topic))
                    .with_partitions(partitions)
            })
            .collect();
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }
}

/// Whether any batch in fetched `records` is zstd-compressed (headers only,
/// no CRC pass: the bytes come from the log).
fn holds_zstd(records: &[u8]) -> bool {
    let mut rest = records;
    while let Ok(h) = BatchHeader::parse(rest) {
        if h.compression().ok() == Some(Compression::Zstd) {
            return true;
        }
        match rest.get(h.size()..) {
            Some(tail) => rest = tail,
            None => break,
        }
    }
    false
}

/// Fetch v0–1 read message format v0, v2–3 v1: the v2 batches read from
/// the log are converted for them, as Kafka does.
fn down_convert(p: &mut pb::FetchPartitionResult, version: i16, fetch_offset: i64, max_bytes: i32) {
    let magic = if version <= 1 {
        legacy::MAGIC_V0
    } else {
        legacy::MAGIC_V1
    };
    let max_bytes = usize::try_from(max_bytes).unwrap_or(0);
    match legacy::down_convert(&p.records, magic, fetch_offset, max_bytes) {
        Ok(set) => p.records = Bytes::from(set),
        Err(e) => {
            tracing::warn!(topic = %p.topic, partition = p.partition, error = %e, "cannot convert fetched batches for an old consumer");
            p.error_code = ErrorCode::CorruptMessage as i32;
            p.records = Bytes::new();
        }
    }
}
