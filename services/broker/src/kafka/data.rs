//! Kafka's data-path requests on the broker's request logic.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::FutureExt;
use runnel_kafka::kafka_protocol::messages::ResponseKind;
use runnel_kafka::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use runnel_kafka::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use runnel_kafka::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use runnel_kafka::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use runnel_kafka::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use runnel_kafka::kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use runnel_kafka::kafka_protocol::messages::{
    BrokerId, DeleteRecordsRequest, DeleteRecordsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use runnel_kafka::kafka_protocol::protocol::StrBytes;
use runnel_kafka::server::Reply;
use runnel_log::batch::{BatchHeader, Batches, Compression, legacy};
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use uuid::Uuid;

use super::sessions::FetchPlan;
use super::{
    CLUSTER_OPERATIONS, KafkaApi, TOPIC_OPERATIONS, authorized, code, message, raw_code, wire,
};

/// Kafka marks these topics internal in Metadata.
const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// A topic name for the wire.
pub(super) fn topic_name(s: &str) -> TopicName {
    TopicName(wire(s))
}

/// Items in the order of their first appearance, grouped by topic.
fn by_topic<T>(items: impl IntoIterator<Item = (String, T)>) -> Vec<(String, Vec<T>)> {
    let mut out: Vec<(String, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, v)) => v.push(item),
            None => out.push((topic, vec![item])),
        }
    }
    out
}

impl KafkaApi {
    pub(super) async fn metadata(&self, r: MetadataRequest, version: i16) -> MetadataResponse {
        // v1+: null means every topic, empty means none; v0: empty means every topic.
        let (wanted, none) = match &r.topics {
            None => (Vec::new(), false),
            Some(t) if t.is_empty() => (Vec::new(), version >= 1),
            Some(t) => {
                let names = self.metadata.with(|image| {
                    t.iter()
                        .filter_map(|t| match &t.name {
                            Some(name) => Some(name.to_string()),
                            // v10+ may ask by id.
                            None => image
                                .topics
                                .iter()
                                .find(|(_, s)| Uuid::from_bytes(s.id) == t.topic_id)
                                .map(|(n, _)| n.clone()),
                        })
                        .collect()
                });
                (names, false)
            }
        };
        // Before v4 the field did not exist and Kafka auto-created.
        let auto_create = version < 4 || r.allow_auto_topic_creation;
        // Asking for no topics still needs the brokers; the topics are dropped below.
        let answer = self
            .broker
            .metadata(
                pb::MetadataRequest {
                    topics: wanted,
                    allow_auto_topic_creation: auto_create && !none,
                },
                self.listener,
            )
            .await;
        let mut live = HashSet::new();
        let brokers = answer
            .brokers
            .iter()
            .filter(|b| !b.fenced)
            .filter_map(|b| {
                let (host, port) = self.kafka_address(&b.endpoints)?;
                live.insert(b.broker_id);
                Some(
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.broker_id))
                        .with_host(wire(host))
                        .with_port(port)
                        .with_rack((!b.rack.is_empty()).then(|| wire(b.rack.clone()))),
                )
            })
            .collect();
        let topic_operations = authorized(
            r.include_topic_authorized_operations && version >= 8,
            TOPIC_OPERATIONS,
        );
        let topics = if none {
            Vec::new()
        } else {
            answer
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let v = PartitionView::of(p, &live);
                            MetadataResponsePartition::default()
                                .with_error_code(v.error_code)
                                .with_partition_index(p.partition)
                                .with_leader_id(v.leader)
                                .with_leader_epoch(p.leader_epoch)
                                .with_replica_nodes(v.replicas)
                                .with_isr_nodes(v.isr)
                                .with_offline_replicas(v.offline)
                        })
                        .collect();
                    let id = <[u8; 16]>::try_from(&t.topic_id[..])
                        .map(Uuid::from_bytes)
                        .unwrap_or_default();
                    MetadataResponseTopic::default()
                        .with_error_code(raw_code(t.error_code))
                        .with_is_internal(INTERNAL_TOPICS.contains(&t.name.as_str()))
                        .with_name(Some(topic_name(&t.name)))
                        .with_topic_id(id)
                        .with_partitions(partitions)
                        .with_topic_authorized_operations(topic_operations)
                })
                .collect()
        };
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(wire(answer.cluster_id)))
            // Any broker takes admin requests (it forwards them to the
            // controller), so clients are told this one is "the controller".
            .with_controller_id(BrokerId(self.broker_id))
            .with_topics(topics)
            .with_cluster_authorized_operations(authorized(
                r.include_cluster_authorized_operations && (8..=10).contains(&version),
                CLUSTER_OPERATIONS,
            ))
    }

    /// Applies a Produce: its appends are queued, in order, before this
    /// returns, and the answer waits for their acknowledgement without
    /// holding the connection (Kafka answers acks=0 with nothing).
    pub(super) async fn produce(&self, mut r: ProduceRequest, version: i16) -> Reply {
        let acks = match r.acks {
            0 => Some(pb::Acks::None),
            1 => Some(pb::Acks::Leader),
            -1 => Some(pb::Acks::All),
            _ => None,
        };
        let refusal = match (acks, &r.transactional_id) {
            (None, _) => Some((
                ErrorCode::InvalidRequiredAcks,
                format!("acks={} is not one of 0, 1, -1", r.acks),
            )),
            (_, Some(id)) => Some((
                ErrorCode::TransactionalIdAuthorizationFailed,
                format!(
                    "transactions are not supported: leave transactional.id unset (got {id:?})"
                ),
            )),
            _ => None,
        };
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
                return Reply::NoResponse;
            }
            let (error, text) = refusal.unwrap_or_default();
            let results = asked
                .map(|(topic, p)| {
                    let out = PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(code(error))
                        .with_error_message(Some(wire(text.clone())))
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    (topic, out)
                })
                .collect();
            return produce_reply(results, &keys);
        };
        // Kafka's per-partition checks of the request itself (its
        // `ProduceRequest.validateRecords`): a partition that fails them is
        // refused alone, the others go on.
        let mut refused = Vec::new();
        let mut partitions = Vec::new();
        for (topic, p) in asked {
            let records = p.records.unwrap_or_default();
            let checked = match topic.strip_prefix(UNKNOWN_ID_KEY) {
                Some(id) => Err((
                    ErrorCode::UnknownTopicOrPartition,
                    format!("no topic has id {id}"),
                )),
                None => up_convert(records, version)
                    .and_then(|records| check_produce_records(&records, version).map(|()| records)),
            };
            match checked {
                Ok(records) => partitions.push(pb::ProducePartition {
                    topic,
                    partition: p.index,
                    records,
                }),
                Err((error, text)) => refused.push((
                    topic.clone(),
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(if topic.starts_with(UNKNOWN_ID_KEY) {
                            UNKNOWN_TOPIC_ID
                        } else {
                            code(error)
                        })
                        .with_error_message(Some(wire(text)))
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
            })
            .await;
        if acks == pb::Acks::None {
            // Queued is all the producer asked for; the appends finish on
            // their I/O threads without anyone waiting.
            return Reply::NoResponse;
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
    }

    pub(super) async fn fetch(&self, mut r: FetchRequest, version: i16) -> FetchResponse {
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
            return FetchResponse::default().with_error_code(code(ErrorCode::InvalidRequest));
        }
        let plan = match self.sessions.plan(&r, version) {
            Ok(plan) => plan,
            Err(error) => {
                return FetchResponse::default()
                    .with_error_code(error)
                    .with_session_id(0);
            }
        };
        let FetchPlan {
            session_id,
            partitions,
            incremental,
        } = plan;
        let answer = self
            .broker
            .fetch(pb::FetchRequest {
                max_wait_ms: u32::try_from(r.max_wait_ms).unwrap_or(0),
                min_bytes: u32::try_from(r.min_bytes).unwrap_or(0),
                max_bytes: u32::try_from(r.max_bytes).unwrap_or(u32::MAX),
                partitions: partitions
                    .iter()
                    .map(|(key, p)| pb::FetchPartition {
                        topic: key.0.clone(),
                        partition: key.1,
                        fetch_offset: p.fetch_offset,
                        partition_max_bytes: u32::try_from(p.max_bytes).unwrap_or(0),
                        current_leader_epoch: p.current_leader_epoch,
                    })
                    .collect(),
                replica: None,
            })
            .await;
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
                let out = PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_error_code(raw_code(p.error_code))
                    .with_high_watermark(p.high_watermark)
                    // No transactions: everything below the high watermark is stable.
                    .with_last_stable_offset(p.high_watermark)
                    .with_log_start_offset(p.log_start_offset)
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
        FetchResponse::default()
            .with_session_id(session_id)
            .with_responses(responses)
    }

    pub(super) async fn list_offsets(
        &self,
        r: ListOffsetsRequest,
        version: i16,
    ) -> ListOffsetsResponse {
        let mut answered = Vec::new();
        let mut asked = Vec::new();
        for t in r.topics {
            for p in t.partitions {
                if p.timestamp == LATEST_TIERED {
                    // Nothing is in tiered storage: Kafka answers "no offset".
                    answered.push((
                        t.name.to_string(),
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_offset(-1)
                            .with_timestamp(-1),
                    ));
                    continue;
                }
                let spec = match p.timestamp {
                    -1 => Some(pb::OffsetSpec::Latest),
                    // Without tiered storage the local log start is the log start.
                    -2 | EARLIEST_LOCAL => Some(pb::OffsetSpec::Earliest),
                    -3 => Some(pb::OffsetSpec::MaxTimestamp),
                    ts if ts >= 0 => Some(pb::OffsetSpec::Timestamp),
                    _ => None,
                };
                match spec {
                    Some(spec) => asked.push(pb::ListOffsetsPartition {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        spec: spec as i32,
                        timestamp_ms: p.timestamp.max(0),
                    }),
                    None => answered.push((
                        t.name.to_string(),
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code(ErrorCode::InvalidRequest))
                            .with_offset(-1)
                            .with_timestamp(-1),
                    )),
                }
            }
        }
        let answer = self
            .broker
            .list_offsets(pb::ListOffsetsRequest { partitions: asked })
            .await;
        let results = answer
            .partitions
            .into_iter()
            .map(|p| {
                let out = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition)
                    .with_error_code(raw_code(p.error_code))
                    .with_offset(p.offset)
                    .with_timestamp(p.timestamp_ms)
                    // v4 added the epoch; the codec refuses it set on older versions.
                    .with_leader_epoch(if version >= 4 { p.leader_epoch } else { -1 });
                (p.topic, out)
            })
            .chain(answered);
        let topics = by_topic(results)
            .into_iter()
            .map(|(topic, partitions)| {
                ListOffsetsTopicResponse::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }

    pub(super) async fn offset_for_leader_epoch(
        &self,
        r: OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let partitions = r
            .topics
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
        let topics = by_topic(results)
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic_name(&topic))
                    .with_partitions(partitions)
            })
            .collect();
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }

    pub(super) async fn init_producer_id(
        &self,
        r: InitProducerIdRequest,
    ) -> InitProducerIdResponse {
        let answer = self
            .broker
            .init_producer_id(pb::InitProducerIdRequest {
                transactional_id: r
                    .transactional_id
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                transaction_timeout_ms: r.transaction_timeout_ms,
                producer_id: r.producer_id.0,
                producer_epoch: i32::from(r.producer_epoch),
            })
            .await;
        if answer.error_code != 0 {
            tracing::debug!(error = %answer.error_message, "InitProducerId refused");
        }
        InitProducerIdResponse::default()
            .with_error_code(raw_code(answer.error_code))
            .with_producer_id(ProducerId(answer.producer_id))
            .with_producer_epoch(i16::try_from(answer.producer_epoch).unwrap_or(-1))
    }

    /// Kafka's DescribeTopicPartitions (KIP-966): topics sorted by name,
    /// at most `response_partition_limit` partitions per answer, the rest
    /// behind `next_cursor`.
    pub(super) async fn describe_topic_partitions(
        &self,
        r: DescribeTopicPartitionsRequest,
    ) -> DescribeTopicPartitionsResponse {
        use runnel_kafka::kafka_protocol::messages::describe_topic_partitions_response::{
            Cursor, DescribeTopicPartitionsResponsePartition as Partition,
            DescribeTopicPartitionsResponseTopic as Topic,
        };
        let mut wanted: Vec<String> = r.topics.iter().map(|t| t.name.to_string()).collect();
        wanted.sort();
        wanted.dedup();
        let cursor = r
            .cursor
            .as_ref()
            .map(|c| (c.topic_name.to_string(), c.partition_index.max(0)));
        if let Some((topic, _)) = &cursor
            && !wanted.is_empty()
            && !wanted.contains(topic)
        {
            // Kafka refuses a cursor outside the topics asked for.
            return DescribeTopicPartitionsResponse::default().with_topics(vec![
                Topic::default()
                    .with_error_code(code(ErrorCode::InvalidRequest))
                    .with_name(Some(topic_name(topic))),
            ]);
        }
        let answer = self
            .broker
            .metadata(
                pb::MetadataRequest {
                    topics: wanted,
                    allow_auto_topic_creation: false,
                },
                self.listener,
            )
            .await;
        let live: HashSet<i32> = answer
            .brokers
            .iter()
            .filter(|b| !b.fenced)
            .map(|b| b.broker_id)
            .collect();
        let mut topics = answer.topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut left = match r.response_partition_limit {
            n if n > 0 => n.min(MAX_DESCRIBED_PARTITIONS),
            _ => MAX_DESCRIBED_PARTITIONS,
        };
        let mut out = Vec::new();
        let mut next_cursor = None;
        for t in topics {
            let start = match &cursor {
                Some((topic, _)) if t.name < *topic => continue,
                Some((topic, p)) if t.name == *topic => *p,
                _ => 0,
            };
            if left == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(topic_name(&t.name))
                        .with_partition_index(start),
                );
                break;
            }
            let id = <[u8; 16]>::try_from(&t.topic_id[..])
                .map(Uuid::from_bytes)
                .unwrap_or_default();
            let mut partitions = Vec::new();
            for p in t.partitions.iter().filter(|p| p.partition >= start) {
                if left == 0 {
                    next_cursor = Some(
                        Cursor::default()
                            .with_topic_name(topic_name(&t.name))
                            .with_partition_index(p.partition),
                    );
                    break;
                }
                left -= 1;
                let v = PartitionView::of(p, &live);
                partitions.push(
                    Partition::default()
                        .with_error_code(v.error_code)
                        .with_partition_index(p.partition)
                        .with_leader_id(v.leader)
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(v.replicas)
                        .with_isr_nodes(v.isr)
                        // No eligible leader replicas (KIP-966's ELR is off).
                        .with_eligible_leader_replicas(Some(Vec::new()))
                        .with_last_known_elr(Some(Vec::new()))
                        .with_offline_replicas(v.offline),
                );
            }
            out.push(
                Topic::default()
                    .with_error_code(raw_code(t.error_code))
                    .with_is_internal(INTERNAL_TOPICS.contains(&t.name.as_str()))
                    .with_name(Some(topic_name(&t.name)))
                    .with_topic_id(id)
                    .with_partitions(partitions)
                    .with_topic_authorized_operations(TOPIC_OPERATIONS),
            );
            if next_cursor.is_some() {
                break;
            }
        }
        DescribeTopicPartitionsResponse::default()
            .with_topics(out)
            .with_next_cursor(next_cursor)
    }

    pub(super) fn describe_cluster(&self, r: DescribeClusterRequest) -> DescribeClusterResponse {
        // endpoint_type 2 asks for controllers, which Kafka clients cannot reach here.
        if r.endpoint_type > 1 {
            return DescribeClusterResponse::default()
                .with_error_code(code(ErrorCode::InvalidRequest))
                .with_error_message(Some(StrBytes::from_static_str(
                    "controllers are not reachable over the Kafka protocol; ask a broker",
                )))
                .with_endpoint_type(r.endpoint_type);
        }
        let brokers = self.metadata.with(|image| {
            image
                .brokers
                .iter()
                .filter(|(_, b)| !b.fenced || r.include_fenced_brokers)
                .filter_map(|(&id, b)| {
                    let (host, port) = self.kafka_address(&b.endpoints)?;
                    Some(
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(id))
                            .with_host(wire(host))
                            .with_port(port)
                            .with_rack((!b.rack.is_empty()).then(|| wire(b.rack.clone())))
                            .with_is_fenced(b.fenced),
                    )
                })
                .collect()
        });
        DescribeClusterResponse::default()
            .with_endpoint_type(1)
            .with_cluster_id(wire(self.metadata.cluster_id()))
            .with_controller_id(BrokerId(self.broker_id))
            .with_brokers(brokers)
            .with_cluster_authorized_operations(authorized(
                r.include_cluster_authorized_operations,
                CLUSTER_OPERATIONS,
            ))
    }

    pub(super) async fn delete_records(&self, r: DeleteRecordsRequest) -> DeleteRecordsResponse {
        use runnel_kafka::kafka_protocol::messages::delete_records_response::{
            DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
        };
        let mut topics = Vec::with_capacity(r.topics.len());
        for t in r.topics {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for p in t.partitions {
                let out =
                    DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                partitions.push(
                    match self
                        .broker
                        .delete_records(&t.name, p.partition_index, p.offset)
                        .await
                    {
                        Ok(start) => out.with_low_watermark(start),
                        Err((error, text)) => {
                            tracing::debug!(topic = %t.name.as_str(), partition = p.partition_index, error = %text, "DeleteRecords refused");
                            out.with_low_watermark(-1).with_error_code(code(error))
                        }
                    },
                );
            }
            topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        DeleteRecordsResponse::default().with_topics(topics)
    }

    pub(super) fn describe_producers(
        &self,
        r: DescribeProducersRequest,
    ) -> DescribeProducersResponse {
        use runnel_kafka::kafka_protocol::messages::describe_producers_response::{
            PartitionResponse, ProducerState, TopicResponse,
        };
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&index| {
                        let out = PartitionResponse::default().with_partition_index(index);
                        match self.broker.producers(&t.name, index) {
                            Ok(producers) => out.with_active_producers(
                                producers
                                    .into_iter()
                                    .map(|p| {
                                        ProducerState::default()
                                            .with_producer_id(ProducerId(p.producer_id))
                                            .with_producer_epoch(i32::from(p.epoch))
                                            .with_last_sequence(p.last_sequence)
                                            .with_last_timestamp(p.last_timestamp)
                                            .with_coordinator_epoch(-1)
                                            .with_current_txn_start_offset(-1)
                                    })
                                    .collect(),
                            ),
                            Err((error, text)) => out
                                .with_error_code(code(error))
                                .with_error_message(Some(wire(text))),
                        }
                    })
                    .collect();
                TopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        DescribeProducersResponse::default().with_topics(topics)
    }
}

/// A Produce answer from each partition's result.
/// A partition as Metadata and DescribeTopicPartitions show it: a leader
/// that is not live is no leader (LEADER_NOT_AVAILABLE).
struct PartitionView {
    error_code: i16,
    leader: BrokerId,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    offline: Vec<BrokerId>,
}

impl PartitionView {
    fn of(p: &pb::PartitionInfo, live: &HashSet<i32>) -> PartitionView {
        let leader = if live.contains(&p.leader) {
            p.leader
        } else {
            -1
        };
        PartitionView {
            error_code: if leader < 0 {
                code(ErrorCode::LeaderNotAvailable)
            } else {
                0
            },
            leader: BrokerId(leader),
            replicas: p.replicas.iter().map(|&b| BrokerId(b)).collect(),
            isr: p.isr.iter().map(|&b| BrokerId(b)).collect(),
            offline: p
                .replicas
                .iter()
                .filter(|b| !live.contains(b))
                .map(|&b| BrokerId(b))
                .collect(),
        }
    }
}

/// Kafka's `max.request.partition.size.limit`: the most partitions one
/// DescribeTopicPartitions answer holds.
const MAX_DESCRIBED_PARTITIONS: i32 = 2000;

/// Kafka's UNKNOWN_TOPIC_ID: a topic named by an id no topic has.
pub(super) const UNKNOWN_TOPIC_ID: i16 = 100;

/// ListOffsets' EARLIEST_LOCAL_TIMESTAMP (v8+, KIP-405).
const EARLIEST_LOCAL: i64 = -4;
/// ListOffsets' LATEST_TIERED_TIMESTAMP (v9+, KIP-1005).
const LATEST_TIERED: i64 = -5;

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

/// Produce v0–2 may carry message formats v0/v1: stored as one v2 batch,
/// as Kafka's brokers have done since they write only v2 (a corrupt or
/// malformed message set is refused with CORRUPT_MESSAGE, storing nothing).
fn up_convert(records: Bytes, version: i16) -> Result<Bytes, (ErrorCode, String)> {
    if version >= 3 || !matches!(legacy::magic_of(&records), Some(0 | 1)) {
        return Ok(records);
    }
    legacy::up_convert(&records)
        .map(Bytes::from)
        .map_err(|e| (ErrorCode::CorruptMessage, e.to_string()))
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

/// Kafka's checks of one partition's records in a Produce before any log
/// sees them: from v3 exactly one batch, of magic 2; zstd only from v7
/// (older clients could not read it back).
fn check_produce_records(records: &[u8], version: i16) -> Result<(), (ErrorCode, String)> {
    if version >= 3 && matches!(legacy::magic_of(records), Some(0 | 1)) {
        return Err((
            ErrorCode::InvalidRecord,
            "Produce requests with version 3 and above are only allowed to contain record batches with magic version 2"
                .into(),
        ));
    }
    let mut batches = Batches::new(records);
    let first = match batches.next() {
        Some(Ok(batch)) => batch,
        // The log names what is wrong with a malformed batch (CRC, length, magic).
        Some(Err(_)) => return Ok(()),
        None => {
            return Err((
                ErrorCode::InvalidRecord,
                "a produce request must carry a record batch per partition".into(),
            ));
        }
    };
    if version >= 3 && batches.next().is_some() {
        return Err((
            ErrorCode::InvalidRecord,
            "Produce requests with version 3 and above must contain exactly one record batch per partition"
                .into(),
        ));
    }
    if version < 7 && first.header().compression().ok() == Some(Compression::Zstd) {
        return Err((
            ErrorCode::UnsupportedCompressionType,
            format!(
                "Produce requests with version {version} are not allowed to use ZStandard compression"
            ),
        ));
    }
    Ok(())
}

/// Produce v13's key for a topic id no topic has (see `produce`).
const UNKNOWN_ID_KEY: &str = "unknown-id:";

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
