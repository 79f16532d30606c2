//! Moving partitions' replicas between brokers (Kafka's KIP-455:
//! AlterPartitionReassignments and ListPartitionReassignments) through the
//! controller, as `runnel partitions reassign` and
//! `kafka-reassign-partitions.sh` use them.

use std::collections::BTreeMap;

use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;

use crate::admin::Admin;
use crate::error::{ClientError, Result};

/// A partition being moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Target replicas followed by the leaving ones.
    pub replicas: Vec<i32>,
    /// Replicas joining.
    pub adding_replicas: Vec<i32>,
    /// Replicas leaving.
    pub removing_replicas: Vec<i32>,
}

impl Reassignment {
    /// The replicas the partition moves to.
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }
}

/// Where each partition of some topics is: topic → partition → replicas,
/// preferred leader first.
pub type Assignments = BTreeMap<String, BTreeMap<i32, Vec<i32>>>;

impl Admin {
    /// Starts moving each `(topic, partition)` to its target replicas, or
    /// cancels the move in progress where the target is `None`; one result
    /// per partition, in order.
    pub async fn alter_partition_reassignments(
        &self,
        moves: Vec<(String, i32, Option<Vec<i32>>)>,
    ) -> Result<Vec<((String, i32), Result<()>)>> {
        let request = pb::AlterPartitionReassignmentsRequest {
            partitions: moves
                .into_iter()
                .map(|(topic, partition, target)| pb::PartitionReassignment {
                    topic,
                    partition,
                    replicas: target.map(|broker_ids| pb::ReplicaList { broker_ids }),
                })
                .collect(),
            keep_replication_factor: false,
        };
        let response = self
            .cluster
            .call_controller(request, |mut c, r| async move {
                c.alter_partition_reassignments(r).await
            })
            .await?
            .into_inner();
        Ok(response
            .partitions
            .into_iter()
            .map(|p| {
                let result = match p.error_code() {
                    ErrorCode::None => Ok(()),
                    code => Err(ClientError::server(code, p.error_message)),
                };
                ((p.topic, p.partition), result)
            })
            .collect())
    }

    /// The reassignments in progress (of `partitions` only, when given).
    pub async fn list_partition_reassignments(
        &self,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<Reassignment>> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions.unwrap_or_default() {
            topics.entry(topic).or_default().push(*partition);
        }
        if partitions.is_some() && topics.is_empty() {
            return Ok(Vec::new());
        }
        let request = pb::ListPartitionReassignmentsRequest {
            topics: topics
                .into_iter()
                .map(|(topic, partitions)| pb::TopicPartitions {
                    topic: topic.to_owned(),
                    partitions,
                })
                .collect(),
        };
        let response = self
            .cluster
            .call_controller(request, |mut c, r| async move {
                c.list_partition_reassignments(r).await
            })
            .await?
            .into_inner();
        Ok(response
            .reassignments
            .into_iter()
            .map(|r| Reassignment {
                topic: r.topic,
                partition: r.partition,
                replicas: r.replicas,
                adding_replicas: r.adding_replicas,
                removing_replicas: r.removing_replicas,
            })
            .collect())
    }

    /// The replicas of every partition of `topics` (every topic when empty),
    /// from the controller's metadata alone (no offsets asked of leaders).
    pub async fn assignments(&self, topics: &[String]) -> Result<Assignments> {
        let md = self
            .cluster
            .call_controller(
                pb::GetMetadataRequest {
                    topics: topics.to_vec(),
                },
                |mut c, r| async move { c.get_metadata(r).await },
            )
            .await?
            .into_inner();
        let mut out = Assignments::new();
        for t in md.topics {
            if t.error_code() != ErrorCode::None {
                return Err(ClientError::server(
                    t.error_code(),
                    format!("topic {} does not exist", t.name),
                ));
            }
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    // During a move, the target replicas: where the partition is going.
                    let target = p
                        .replicas
                        .iter()
                        .copied()
                        .filter(|r| !p.removing_replicas.contains(r))
                        .collect();
                    (p.partition, target)
                })
                .collect();
            out.insert(t.name, partitions);
        }
        Ok(out)
    }
}
