//! Partition leadership and ISR changes the controller decides on request
//! or on a timer: a leader's ISR changes (Kafka's AlterPartition) and
//! moving leadership back to preferred replicas. The rules themselves are
//! pure functions in `crate::election`; here they meet the lock and the log.
//! (Leadership that moves because a broker is fenced or unfenced moves in
//! `brokers`, with the record that fences it.)

use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{MetadataRecord, metadata_record::Record};

use super::brokers::check_live_broker;
use super::{Controller, ControllerError, Refusal, apply_changes, record};
use crate::election;

impl Controller {
    /// A leader's ISR changes (Kafka's AlterPartition): each partition is
    /// checked on its own against the leader and partition epochs, and the
    /// accepted ones are committed together.
    pub async fn alter_partition(
        &self,
        req: pb::AlterPartitionRequest,
    ) -> Result<Vec<pb::PartitionIsrResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        check_live_broker(&inner.image, req.broker_id, req.broker_epoch)?;
        let mut image = (*inner.image).clone();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(req.partitions.len());
        for p in req.partitions {
            let change = election::IsrChange {
                topic: p.topic.clone(),
                partition: p.partition,
                leader: req.broker_id,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: p.isr,
            };
            let mut result = pb::PartitionIsrResult {
                topic: p.topic,
                partition: p.partition,
                ..Default::default()
            };
            match election::alter_isr(&image, &change) {
                Ok(change) => {
                    apply_changes(&mut image, change, &mut records)?;
                }
                Err(refused) => {
                    result.error_code = refused.code() as i32;
                    result.error_message = refused.to_string();
                }
            }
            if let Some(state) = image
                .topics
                .get(&result.topic)
                .and_then(|t| t.partitions.get(&result.partition))
            {
                result.leader = state.leader;
                result.leader_epoch = state.leader_epoch;
                result.partition_epoch = state.partition_epoch;
                result.isr = state.isr.clone();
            }
            results.push(result);
        }
        let changed = records.len();
        self.commit(&mut inner, records).await?;
        if changed > 0 {
            tracing::info!(broker = req.broker_id, changed, "ISR changed");
        }
        Ok(results)
    }

    /// Moves leadership back to preferred replicas that are in sync
    /// (`auto.leader.rebalance.enable`); returns how many partitions moved.
    pub async fn elect_preferred_leaders(&self) -> Result<usize, ControllerError> {
        let mut inner = self.lock_active().await?;
        let records: Vec<MetadataRecord> = election::preferred_leaders(&inner.image)
            .into_iter()
            .map(|c| record(Record::PartitionChanged(c)))
            .collect();
        let moved = records.len();
        self.commit(&mut inner, records).await?;
        if moved > 0 {
            tracing::info!(
                partitions = moved,
                "leadership moved back to preferred replicas"
            );
        }
        Ok(moved)
    }

    /// Kafka's ElectLeaders: each partition elected on its own, the
    /// accepted ones committed together. Every partition when `topics` is
    /// empty, and then those needing no election are not reported.
    pub async fn elect_leaders(
        &self,
        req: pb::ElectLeadersRequest,
    ) -> Result<Vec<pb::PartitionElectionResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let mut image = (*inner.image).clone();
        let all = req.topics.is_empty();
        let partitions: Vec<(String, i32)> = if all {
            image
                .topics
                .iter()
                .flat_map(|(name, t)| t.partitions.keys().map(move |&p| (name.clone(), p)))
                .collect()
        } else {
            req.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |&p| (t.topic.clone(), p)))
                .collect()
        };
        let mut records = Vec::new();
        let mut results = Vec::new();
        for (topic, partition) in partitions {
            let mut result = pb::PartitionElectionResult {
                topic,
                partition,
                ..Default::default()
            };
            match election::elect_leader(&image, &result.topic, partition, req.unclean) {
                Ok(change) => {
                    apply_changes(&mut image, [change], &mut records)?;
                }
                Err(Refusal::ElectionNotNeeded { .. }) if all => continue,
                Err(refused) => {
                    result.error_code = refused.code() as i32;
                    result.error_message = refused.to_string();
                }
            }
            results.push(result);
        }
        let elected = records.len();
        self.commit(&mut inner, records).await?;
        if elected > 0 {
            tracing::info!(
                partitions = elected,
                unclean = req.unclean,
                "leaders elected on request"
            );
        }
        Ok(results)
    }
}
