//! Kafka's ListOffsets (its special timestamps mapped to the broker's offset
//! specs) and DeleteRecords.

use runnel_kafka::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use runnel_kafka::kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;

use runnel_common::acl::{Operation, ResourceType};

use super::{Caller, KafkaApi, by_topic, code, error_code, raw_code, topic_name};
use crate::service::Failure;

/// ListOffsets' EARLIEST_LOCAL_TIMESTAMP (v8+, KIP-405).
const EARLIEST_LOCAL: i64 = -4;
/// ListOffsets' LATEST_TIERED_TIMESTAMP (v9+, KIP-1005).
const LATEST_TIERED: i64 = -5;

impl KafkaApi {
    pub(super) async fn list_offsets(
        &self,
        r: ListOffsetsRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> ListOffsetsResponse {
        let mut answered = Vec::new();
        let mut asked = Vec::new();
        for t in r.topics {
            if !caller.allowed(Operation::Describe, ResourceType::Topic, &t.name) {
                answered.extend(t.partitions.iter().map(|p| {
                    (
                        t.name.to_string(),
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code(ErrorCode::TopicAuthorizationFailed))
                            .with_offset(-1)
                            .with_timestamp(-1),
                    )
                }));
                continue;
            }
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
            .list_offsets(pb::ListOffsetsRequest {
                partitions: asked,
                // v2 added isolation_level (1: READ_COMMITTED).
                isolation_level: if version >= 2 && r.isolation_level == 1 {
                    pb::IsolationLevel::ReadCommitted as i32
                } else {
                    pb::IsolationLevel::ReadUncommitted as i32
                },
            })
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

    pub(super) async fn delete_records(
        &self,
        r: DeleteRecordsRequest,
        caller: &Caller<'_>,
    ) -> DeleteRecordsResponse {
        use runnel_kafka::kafka_protocol::messages::delete_records_response::{
            DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
        };
        let mut topics = Vec::with_capacity(r.topics.len());
        for t in r.topics {
            let allowed = caller.check(Operation::Delete, ResourceType::Topic, &t.name);
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for p in t.partitions {
                let out =
                    DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                let deleted = match &allowed {
                    Ok(()) => {
                        self.broker
                            .delete_records(&t.name, p.partition_index, p.offset)
                            .await
                    }
                    Err(_) => Err(Failure::unauthorized(
                        Operation::Delete,
                        ResourceType::Topic,
                        &t.name,
                    )),
                };
                partitions.push(
                    match deleted {
                        Ok(start) => out.with_low_watermark(start),
                        Err(failure) => {
                            tracing::debug!(topic = %t.name.as_str(), partition = p.partition_index, error = %failure, "DeleteRecords refused");
                            out.with_low_watermark(-1)
                                .with_error_code(error_code(&failure))
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
}
