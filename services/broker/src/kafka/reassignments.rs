//! Kafka's partition reassignment APIs (KIP-455), forwarded to the
//! controller: AlterPartitionReassignments needs ALTER on the cluster,
//! ListPartitionReassignments DESCRIBE, as in Kafka.

use std::collections::BTreeMap;

use runnel_common::acl::Operation;
use runnel_kafka::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    alter_partition_reassignments_response as alter, list_partition_reassignments_response as list,
};
use runnel_proto::controller::v1 as pb;

use super::{Caller, KafkaApi, error_code, error_message, message, raw_code, topic_name};
use crate::service::Failure;

fn broker_ids(ids: Vec<i32>) -> Vec<BrokerId> {
    ids.into_iter().map(BrokerId).collect()
}

impl KafkaApi {
    pub(super) async fn alter_partition_reassignments(
        &self,
        r: AlterPartitionReassignmentsRequest,
        caller: &Caller<'_>,
    ) -> AlterPartitionReassignmentsResponse {
        let response = AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(r.allow_replication_factor_change);
        if let Err(f) = caller.check_cluster(Operation::Alter) {
            return response
                .with_error_code(error_code(&f))
                .with_error_message(error_message(&f));
        }
        let request = pb::AlterPartitionReassignmentsRequest {
            partitions: r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| pb::PartitionReassignment {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        replicas: p.replicas.as_ref().map(|ids| pb::ReplicaList {
                            broker_ids: ids.iter().map(|b| b.0).collect(),
                        }),
                    })
                })
                .collect(),
            keep_replication_factor: !r.allow_replication_factor_change,
        };
        let answer = self
            .controller
            .clone()
            .alter_partition_reassignments(request)
            .await
            .map(|a| a.into_inner().partitions)
            .map_err(|s| Failure::from_controller(&s));
        let results = match answer {
            Ok(results) => results,
            Err(f) => {
                return response
                    .with_error_code(error_code(&f))
                    .with_error_message(error_message(&f));
            }
        };
        // Topics in the order the request named them.
        let mut topics: Vec<alter::ReassignableTopicResponse> = Vec::new();
        for res in results {
            let partition = alter::ReassignablePartitionResponse::default()
                .with_partition_index(res.partition)
                .with_error_code(raw_code(res.error_code))
                .with_error_message(message(res.error_message));
            match topics.iter_mut().find(|t| t.name.as_str() == res.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    alter::ReassignableTopicResponse::default()
                        .with_name(topic_name(&res.topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        response.with_responses(topics)
    }

    pub(super) async fn list_partition_reassignments(
        &self,
        r: ListPartitionReassignmentsRequest,
        caller: &Caller<'_>,
    ) -> ListPartitionReassignmentsResponse {
        let response = ListPartitionReassignmentsResponse::default();
        if let Err(f) = caller.check_cluster(Operation::Describe) {
            return response
                .with_error_code(error_code(&f))
                .with_error_message(error_message(&f));
        }
        // Null topics: every reassignment; an empty list: none.
        let topics: Vec<pb::TopicPartitions> = match &r.topics {
            None => Vec::new(),
            Some(topics) if topics.iter().all(|t| t.partition_indexes.is_empty()) => {
                return response;
            }
            Some(topics) => topics
                .iter()
                .map(|t| pb::TopicPartitions {
                    topic: t.name.to_string(),
                    partitions: t.partition_indexes.clone(),
                })
                .collect(),
        };
        let answer = self
            .controller
            .clone()
            .list_partition_reassignments(pb::ListPartitionReassignmentsRequest { topics })
            .await
            .map(|a| a.into_inner().reassignments)
            .map_err(|s| Failure::from_controller(&s));
        let ongoing = match answer {
            Ok(ongoing) => ongoing,
            Err(f) => {
                return response
                    .with_error_code(error_code(&f))
                    .with_error_message(error_message(&f));
            }
        };
        let mut by_topic: BTreeMap<String, Vec<list::OngoingPartitionReassignment>> =
            BTreeMap::new();
        for o in ongoing {
            by_topic.entry(o.topic).or_default().push(
                list::OngoingPartitionReassignment::default()
                    .with_partition_index(o.partition)
                    .with_replicas(broker_ids(o.replicas))
                    .with_adding_replicas(broker_ids(o.adding_replicas))
                    .with_removing_replicas(broker_ids(o.removing_replicas)),
            );
        }
        response.with_topics(
            by_topic
                .into_iter()
                .map(|(name, partitions)| {
                    list::OngoingTopicReassignment::default()
                        .with_name(topic_name(&name))
                        .with_partitions(partitions)
                })
                .collect(),
        )
    }
}
