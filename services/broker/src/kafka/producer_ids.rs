//! Kafka's InitProducerId (transactional producers go on to
//! `transactions`) and DescribeProducers.

use runnel_kafka::kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId,
};
use runnel_proto::broker::v1 as pb;

use super::{KafkaApi, error_code, error_message, raw_code};

impl KafkaApi {
    pub(super) async fn init_producer_id(
        &self,
        r: InitProducerIdRequest,
        version: i16,
    ) -> InitProducerIdResponse {
        if let Some(id) = r.transactional_id.as_ref().filter(|t| !t.is_empty()) {
            return self
                .init_transactional_producer(id.to_string(), &r, version)
                .await;
        }
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
