//! Idempotent producers: InitProducerId (ids from this broker's block;
//! a transactional producer's is relayed, see `coordinators`) and
//! the producers a partition tracks (DescribeProducers, and whether a
//! producer's transaction is open in a partition, for KIP-890's check).

use runnel_proto::broker::v1 as pb;

use super::{Broker, Failure};
use crate::grpc::Failed;

impl Broker {
    /// InitProducerId: a transactional producer's goes to its transaction
    /// coordinator; without a transactional id Kafka hands out a fresh id
    /// whatever the request carries (the producer bumps its epoch itself,
    /// KIP-360).
    pub async fn init_producer_id(
        &self,
        req: pb::InitProducerIdRequest,
    ) -> pb::InitProducerIdResponse {
        if req.transactional_id.is_empty() {
            self.new_producer_id().await
        } else {
            self.init_transactional_producer(req).await
        }
    }

    /// A new producer id (epoch 0) from this broker's block; an exhausted
    /// block is replaced by the controller's next.
    pub(super) async fn new_producer_id(&self) -> pb::InitProducerIdResponse {
        let mut response = pb::InitProducerIdResponse {
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        };
        let mut block = self.producer_ids.lock().await;
        if block.is_empty() {
            let me = self.limits.broker_id;
            let Some(broker_epoch) = self
                .metadata
                .with(|image| image.brokers.get(&me).map(|b| b.epoch))
            else {
                return response.failed(&Failure::BrokerNotRegistered { broker: me });
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
                    let failure = Failure::NoProducerIds {
                        code: runnel_common::errors::code_of(&status),
                        message: status.message().to_owned(),
                    };
                    return response.failed(&failure);
                }
            }
        }
        let Some(id) = block.next() else {
            return response.failed(&Failure::EmptyProducerIdBlock);
        };
        response.producer_id = id;
        response.producer_epoch = 0;
        response
    }

    /// Whether `producer_id` at `producer_epoch` has a transaction open in
    /// `topic-partition` (so a transactional batch needs no verification).
    pub fn transaction_open(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
    ) -> bool {
        self.leader(topic, partition)
            .is_ok_and(|p| p.transaction_open(producer_id, producer_epoch))
    }

    /// The idempotent producers `topic-partition` tracks (Kafka's DescribeProducers).
    pub fn producers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<crate::partition::ProducerSummary>, Failure> {
        Ok(self.leader(topic, partition)?.producers())
    }
}
