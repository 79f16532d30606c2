//! Blocks of producer ids for brokers (Kafka's AllocateProducerIds): a
//! broker hands ids from its block to idempotent producers; the next free id
//! is part of the metadata image, so blocks never overlap across restarts.

use runnel_proto::metadata::v1::metadata_record::Record;

use super::brokers::check_live_broker;
use super::{Controller, ControllerError, Refusal, record};

/// Producer ids per block handed to a broker (Kafka's `PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

impl Controller {
    /// Hands a live broker the next block of [`PRODUCER_ID_BLOCK_SIZE`]
    /// producer ids (Kafka's AllocateProducerIds); returns the block's first id.
    pub async fn allocate_producer_ids(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<i64, ControllerError> {
        let mut inner = self.lock_active().await?;
        check_live_broker(&inner.image, broker_id, broker_epoch)?;
        let start = inner.image.next_producer_id;
        let next = start
            .checked_add(PRODUCER_ID_BLOCK_SIZE)
            .ok_or(Refusal::ProducerIdsExhausted)?;
        let r = record(Record::ProducerIdsAllocated(
            runnel_proto::metadata::v1::ProducerIdsAllocated {
                broker_id,
                broker_epoch,
                next_producer_id: next,
            },
        ));
        self.commit(&mut inner, vec![r]).await?;
        tracing::debug!(broker = broker_id, start, "producer id block allocated");
        Ok(start)
    }
}
