//! The partition sets the coordinator's gRPC messages carry (KIP-848's
//! owned partitions and assignments), to and from [`TopicPartition`]s.
//!
//! They live here rather than beside the consumer-protocol bytes in
//! `runnel-records` because they are protobuf messages, and that crate
//! links no other Runnel crate; the coordinator uses them too.

use std::collections::BTreeMap;

use runnel_proto::coordinator::v1 as pb;

use crate::consumer::TopicPartition;

/// Partitions as the coordinator's gRPC messages carry them (KIP-848's
/// owned partitions and assignments), grouped by topic.
pub fn to_partition_set(tps: &[TopicPartition]) -> pb::PartitionSet {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in tps {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    pb::PartitionSet {
        topics: by_topic
            .into_iter()
            .map(|(topic, partitions)| pb::TopicPartitions {
                topic: topic.to_owned(),
                partitions,
            })
            .collect(),
    }
}

/// The partitions of a [`pb::PartitionSet`].
pub fn from_partition_set(set: &pb::PartitionSet) -> Vec<TopicPartition> {
    set.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|&p| TopicPartition::new(t.topic.clone(), p))
        })
        .collect()
}
