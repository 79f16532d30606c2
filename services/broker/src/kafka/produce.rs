//! Kafka's Produce: the request's own checks (acks, one v2 batch per
//! partition, topic ids in v13, KIP-890's check of transactional batches
//! with the coordinator), old message formats up-converted, then the
//! broker's produce, answered without holding the connection.

use std::collections::HashMap;

use bytes::Bytes;
use futures::FutureExt;
use runnel_kafka::kafka_protocol::messages::ResponseKind;
use runnel_kafka::kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use runnel_kafka::kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use runnel_kafka::server::Reply;
use runnel_proto::broker::v1 as pb;
use runnel_records::batch::{Batches, Compression, legacy};
use uuid::Uuid;

use runnel_common::acl::{Operation, ResourceType};
use runnel_common::quota::QuotaKey;

use super::{Caller, KafkaApi, by_topic, error_code, error_message, message, raw_code, topic_name};
use crate::quotas::Client;
use crate::service::Failure;

/// Produce v13's key for a topic id no topic has (see `produce`).
const UNKNOWN_ID_KEY: &str = "unknown-id:";

impl KafkaApi {
    /// Applies a Produce: its appends are queued, in order, before this
    /// returns, and the answer waits for their acknowledgement without
    /// holding the connection (Kafka answers acks=0 with nothing).
    pub(super) async fn produce(
        &self,
        mut r: ProduceRequest,
        version: i16,
        caller: &Caller<'_>,
        client: Client<'_>,
    ) -> Reply {
        // `producer_byte_rate` meters what the producer sent, whatever
        // becomes of it.
        let sent: usize = r
            .topic_data
            .iter()
            .flat_map(|t| &t.partition_data)
            .filter_map(|p| p.records.as_ref().map(Bytes::len))
            .sum();
        let throttle = self
            .quotas
            .record(QuotaKey::ProducerByteRate, client, sent as f64);
        let acks = match r.acks {
            0 => Some(pb::Acks::None),
            1 => Some(pb::Acks::Leader),
            -1 => Some(pb::Acks::All),
            _ => None,
        };
        let refusal = acks
            .is_none()
            .then_some(Failure::InvalidRequiredAcks { acks: r.acks });
        // v13 names topics by id: each topic's key is its name, or for an id
        // no topic has, a key no name can be (names have no ':').
        let mut keys: HashMap<String, Uuid> = HashMap::new();
        if version >= 13 {
            let names: HashMap<Uuid, String> = self
                .topic_ids()
                .into_iter()
                .map(|(name, id)| (id, name))
                .collect();
            for t in &mut r.topic_data {
                let key = names
                    .get(&t.topic_id)
                    .cloned()
                    .unwrap_or_else(|| format!("{UNKNOWN_ID_KEY}{}", t.topic_id));
                keys.insert(key.clone(), t.topic_id);
                t.name = topic_name(&key);
            }
        }
        let asked = r.topic_data.into_iter().flat_map(|t| {
            let topic = t.name.to_string();
            t.partition_data
                .into_iter()
                .map(move |p| (topic.clone(), p))
        });
        let (Some(acks), None) = (acks, &refusal) else {
            if acks == Some(pb::Acks::None) {
                return Reply::NoResponse.throttled(throttle);
            }
            let failure = refusal.unwrap_or(Failure::InvalidRequiredAcks { acks: r.acks });
            let results = asked
                .map(|(topic, p)| {
                    let out = PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(error_code(&failure))
                        .with_error_message(error_message(&failure))
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    (topic, out)
                })
                .collect();
            return produce_reply(results, &keys).throttled(throttle);
        };
        // Kafka's per-partition checks of the request itself (its
        // `ProduceRequest.validateRecords`): a partition that fails them is
        // refused alone, the others go on.
        let mut refused = Vec::new();
        let mut partitions = Vec::new();
        // A transactional produce needs WRITE on its transactional id, each
        // topic WRITE on the topic (refused alike whether it exists or not).
        let denied_id = r
            .transactional_id
            .as_deref()
            .filter(|id| !caller.allowed(Operation::Write, ResourceType::TransactionalId, id));
        let check_topics = caller.enabled();
        let mut topic_allowed: HashMap<String, bool> = HashMap::new();
        for (topic, p) in asked {
            let records = p.records.unwrap_or_default();
            let checked = if let Some(id) = topic.strip_prefix(UNKNOWN_ID_KEY) {
                Err(Failure::UnknownTopicId { id: id.to_owned() })
            } else if let Some(id) = denied_id {
                Err(Failure::unauthorized(
                    Operation::Write,
                    ResourceType::TransactionalId,
                    id,
                ))
            } else if check_topics
                && !*topic_allowed.entry(topic.clone()).or_insert_with(|| {
                    caller.allowed(Operation::Write, ResourceType::Topic, &topic)
                })
            {
                Err(Failure::unauthorized(
                    Operation::Write,
                    ResourceType::Topic,
                    &topic,
                ))
            } else {
                up_convert(records, version)
                    .and_then(|records| check_produce_records(&records, version).map(|()| records))
            };
            match checked {
                Ok(records) => partitions.push(pb::ProducePartition {
                    topic,
                    partition: p.index,
                    records,
                }),
                Err(failure) => refused.push((
                    topic.clone(),
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(error_code(&failure))
                        .with_error_message(error_message(&failure))
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1),
                )),
            }
        }
        let answer = self
            .broker
            .start_produce(pb::ProduceRequest {
                acks: acks as i32,
                timeout_ms: u32::try_from(r.timeout_ms).unwrap_or(0),
                partitions,
                transactional_id: r
                    .transactional_id
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            })
            .await;
        if acks == pb::Acks::None {
            // Queued is all the producer asked for; the appends finish on
            // their I/O threads without anyone waiting.
            return Reply::NoResponse.throttled(throttle);
        }
        Reply::Pending(
            async move {
                let mut results = refused;
                results.extend(answer.await.partitions.into_iter().map(|p| {
                    let record_errors = p
                        .record_errors
                        .into_iter()
                        .map(|e| {
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(e.batch_index)
                                .with_batch_index_error_message(message(e.message))
                        })
                        .collect();
                    let out = PartitionProduceResponse::default()
                        .with_index(p.partition)
                        .with_error_code(raw_code(p.error_code))
                        .with_error_message(message(p.error_message))
                        .with_base_offset(p.base_offset)
                        .with_log_append_time_ms(p.log_append_time_ms)
                        .with_log_start_offset(p.log_start_offset)
                        .with_record_errors(record_errors);
                    (p.topic, out)
                }));
                produce_reply(results, &keys)
            }
            .boxed(),
        )
        .throttled(throttle)
    }
}

/// Produce v0–2 may carry message formats v0/v1: stored as one v2 batch,
/// as Kafka's brokers have done since they write only v2 (a corrupt or
/// malformed message set is refused with CORRUPT_MESSAGE, storing nothing).
fn up_convert(records: Bytes, version: i16) -> Result<Bytes, Failure> {
    if version >= 3 || !matches!(legacy::magic_of(&records), Some(0 | 1)) {
        return Ok(records);
    }
    legacy::up_convert(&records)
        .map(Bytes::from)
        .map_err(Failure::CorruptMessageSet)
}

/// Kafka's checks of one partition's records in a Produce before any log
/// sees them: from v3 exactly one batch, of magic 2; zstd only from v7
/// (older clients could not read it back).
fn check_produce_records(records: &[u8], version: i16) -> Result<(), Failure> {
    if version >= 3 && matches!(legacy::magic_of(records), Some(0 | 1)) {
        return Err(Failure::OldMessageFormat);
    }
    let mut batches = Batches::new(records);
    let first = match batches.next() {
        Some(Ok(batch)) => batch,
        // The log names what is wrong with a malformed batch (CRC, length, magic).
        Some(Err(_)) => return Ok(()),
        None => {
            return Err(Failure::NoRecordBatch);
        }
    };
    if version >= 3 && batches.next().is_some() {
        return Err(Failure::ManyRecordBatches);
    }
    if version < 7 && first.header().compression().ok() == Some(Compression::Zstd) {
        return Err(Failure::ZstdBeforeV7 { version });
    }
    Ok(())
}

/// The Produce answer; `ids` gives each topic key its id (v13).
fn produce_reply(
    results: Vec<(String, PartitionProduceResponse)>,
    ids: &HashMap<String, Uuid>,
) -> Reply {
    let responses = by_topic(results)
        .into_iter()
        .map(|(topic, partitions)| {
            TopicProduceResponse::default()
                .with_name(topic_name(&topic))
                .with_topic_id(ids.get(&topic).copied().unwrap_or_default())
                .with_partition_responses(partitions)
        })
        .collect();
    Reply::Response(Box::new(ResponseKind::Produce(
        ProduceResponse::default().with_responses(responses),
    )))
}
