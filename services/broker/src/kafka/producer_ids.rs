//! Kafka's InitProducerId (transactional producers go on to
//! `transactions`) and DescribeProducers.

use runnel_kafka::kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId,
};
use runnel_proto::broker::v1 as pb;

use runnel_common::acl::{CLUSTER_NAME, Operation, ResourceType};
use runnel_proto::common::v1::ErrorCode;

use super::transactions::fenced;
use super::{Caller, KafkaApi, error_code, error_message, raw_code};
use crate::service::Failure;

impl KafkaApi {
    /// InitProducerId, with or without a transactional id (the broker
    /// relays a transactional one to its coordinator).
    pub(super) async fn init_producer_id(
        &self,
        r: InitProducerIdRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> InitProducerIdResponse {
        let transactional_id = r
            .transactional_id
            .map(|t| t.to_string())
            .unwrap_or_default();
        // A transactional producer needs WRITE on its id; an idempotent one
        // IDEMPOTENT_WRITE on the cluster or WRITE on some topic (Kafka 3's rule).
        let allowed = if transactional_id.is_empty() {
            caller.allowed_on_any(Operation::Write, ResourceType::Topic)
                || caller.allowed(
                    Operation::IdempotentWrite,
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                )
        } else {
            caller.allowed(
                Operation::Write,
                ResourceType::TransactionalId,
                &transactional_id,
            )
        };
        if !allowed {
            let code = if transactional_id.is_empty() {
                ErrorCode::ClusterAuthorizationFailed
            } else {
                ErrorCode::TransactionalIdAuthorizationFailed
            };
            return InitProducerIdResponse::default()
                .with_error_code(code as i32 as i16)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
        let answer = self
            .broker
            .init_producer_id(pb::InitProducerIdRequest {
                transactional_id: transactional_id.clone(),
                transaction_timeout_ms: r.transaction_timeout_ms,
                producer_id: r.producer_id.0,
                producer_epoch: i32::from(r.producer_epoch),
            })
            .await;
        if answer.error_code != 0 {
            tracing::debug!(%transactional_id, error = %answer.error_message, "InitProducerId refused");
            return InitProducerIdResponse::default()
                .with_error_code(fenced(raw_code(answer.error_code), version, 4))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
        InitProducerIdResponse::default()
            .with_producer_id(ProducerId(answer.producer_id))
            .with_producer_epoch(i16::try_from(answer.producer_epoch).unwrap_or(-1))
    }

    pub(super) fn describe_producers(
        &self,
        r: DescribeProducersRequest,
        caller: &Caller<'_>,
    ) -> DescribeProducersResponse {
        use runnel_kafka::kafka_protocol::messages::describe_producers_response::{
            PartitionResponse, ProducerState, TopicResponse,
        };
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let readable = caller.check(Operation::Read, ResourceType::Topic, &t.name);
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&index| {
                        let out = PartitionResponse::default().with_partition_index(index);
                        let producers = match &readable {
                            Ok(()) => self.broker.producers(&t.name, index),
                            Err(_) => Err(Failure::unauthorized(
                                Operation::Read,
                                ResourceType::Topic,
                                &t.name,
                            )),
                        };
                        match producers {
                            Ok(producers) => out.with_active_producers(
                                producers
                                    .into_iter()
                                    .map(|p| {
                                        ProducerState::default()
                                            .with_producer_id(ProducerId(p.producer_id))
                                            .with_producer_epoch(i32::from(p.epoch))
                                            .with_last_sequence(p.last_sequence)
                                            .with_last_timestamp(p.last_timestamp)
                                            .with_coordinator_epoch(p.coordinator_epoch)
                                            .with_current_txn_start_offset(
                                                p.current_txn_start_offset,
                                            )
                                    })
                                    .collect(),
                            ),
                            Err(failure) => out
                                .with_error_code(error_code(&failure))
                                .with_error_message(error_message(&failure)),
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
