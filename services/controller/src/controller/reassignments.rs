//! Partition reassignments (Kafka's AlterPartitionReassignments and
//! ListPartitionReassignments). The rules are pure functions in
//! `crate::reassignment`; a move completes later, in `leader_and_isr`, with
//! the ISR change that brings the last new replica in sync.

use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;

use super::{Controller, ControllerError, apply_changes};
use crate::reassignment;

impl Controller {
    /// Starts or cancels reassignments; each partition gets its own result,
    /// and the accepted ones are committed together.
    pub async fn alter_partition_reassignments(
        &self,
        req: pb::AlterPartitionReassignmentsRequest,
    ) -> Result<Vec<pb::PartitionReassignmentResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let mut image = (*inner.image).clone();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(req.partitions.len());
        for item in req.partitions {
            let target = item.replicas.as_ref().map(|r| r.broker_ids.as_slice());
            let mut result = pb::PartitionReassignmentResult {
                topic: item.topic.clone(),
                partition: item.partition,
                error_code: ErrorCode::None as i32,
                error_message: String::new(),
            };
            match reassignment::reassign(
                &image,
                &item.topic,
                item.partition,
                target,
                !req.keep_replication_factor,
            ) {
                Ok(change) => {
                    apply_changes(&mut image, change, &mut records)?;
                    tracing::info!(
                        topic = %item.topic,
                        partition = item.partition,
                        target = ?target,
                        "partition reassignment {}",
                        if target.is_some() { "started" } else { "cancelled" }
                    );
                }
                Err(refused) => {
                    result.error_code = refused.code() as i32;
                    result.error_message = refused.to_string();
                }
            }
            results.push(result);
        }
        self.commit(&mut inner, records).await?;
        Ok(results)
    }

    /// The reassignments in progress, of the partitions asked for (every
    /// one when `topics` is empty).
    pub fn list_partition_reassignments(
        &self,
        topics: &[pb::TopicPartitions],
    ) -> Vec<pb::OngoingReassignment> {
        let image = self.shared.image();
        let wanted = |topic: &str, partition: i32| {
            topics.is_empty()
                || topics
                    .iter()
                    .any(|t| t.topic == topic && t.partitions.contains(&partition))
        };
        let mut out = Vec::new();
        for (name, t) in &image.topics {
            for (&partition, p) in &t.partitions {
                if p.is_reassigning() && wanted(name, partition) {
                    out.push(pb::OngoingReassignment {
                        topic: name.clone(),
                        partition,
                        replicas: p.replicas.clone(),
                        adding_replicas: p.adding_replicas.clone(),
                        removing_replicas: p.removing_replicas.clone(),
                    });
                }
            }
        }
        out
    }
}
