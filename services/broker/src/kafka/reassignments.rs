//! Kafka's APIs that move partitions' replicas and leaders, forwarded to
//! the controller: AlterPartitionReassignments (KIP-455) and ElectLeaders
//! need ALTER on the cluster, ListPartitionReassignments DESCRIBE, as in
//! Kafka; and DescribeLogDirs (DESCRIBE on the cluster), which each broker
//! answers for its own data directory.

use std::collections::BTreeMap;

use runnel_common::acl::Operation;
use runnel_kafka::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    DescribeLogDirsRequest, DescribeLogDirsResponse, ElectLeadersRequest, ElectLeadersResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    alter_partition_reassignments_response as alter, describe_log_dirs_response as log_dirs,
    elect_leaders_response as elect, list_partition_reassignments_response as list,
};
use runnel_proto::controller::v1 as pb;

use super::{Caller, KafkaApi, error_code, error_message, message, raw_code, topic_name, wire};
use crate::service::Failure;

/// Per-partition answers grouped by topic, topics in the order they first
/// appear (the order the request named them).
fn in_topic_order<T>(answers: impl IntoIterator<Item = (String, T)>) -> Vec<(String, Vec<T>)> {
    let mut out: Vec<(String, Vec<T>)> = Vec::new();
    for (topic, answer) in answers {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, answers)) => answers.push(answer),
            None => out.push((topic, vec![answer])),
        }
    }
    out
}

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
        let topics = in_topic_order(results.into_iter().map(|res| {
            let partition = alter::ReassignablePartitionResponse::default()
                .with_partition_index(res.partition)
                .with_error_code(raw_code(res.error_code))
                .with_error_message(message(res.error_message));
            (res.topic, partition)
        }))
        .into_iter()
        .map(|(topic, partitions)| {
            alter::ReassignableTopicResponse::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
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

    pub(super) async fn elect_leaders(
        &self,
        r: ElectLeadersRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> ElectLeadersResponse {
        // v0 knows only preferred elections.
        let unclean = version >= 1 && r.election_type == 1;
        let asked: Vec<(String, Vec<i32>)> = r
            .topic_partitions
            .iter()
            .flatten()
            .map(|t| (t.topic.to_string(), t.partitions.clone()))
            .collect();
        // Every asked partition answered alike.
        let refused = |f: &Failure| {
            let results = asked
                .iter()
                .map(|(topic, partitions)| {
                    elect::ReplicaElectionResult::default()
                        .with_topic(topic_name(topic))
                        .with_partition_result(
                            partitions
                                .iter()
                                .map(|&p| {
                                    elect::PartitionResult::default()
                                        .with_partition_id(p)
                                        .with_error_code(error_code(f))
                                        .with_error_message(error_message(f))
                                })
                                .collect(),
                        )
                })
                .collect();
            ElectLeadersResponse::default()
                .with_error_code(error_code(f))
                .with_replica_election_results(results)
        };
        if let Err(f) = caller.check_cluster(Operation::Alter) {
            return refused(&f);
        }
        // Null: every partition; an empty list: none.
        if r.topic_partitions.as_ref().is_some_and(|t| t.is_empty()) {
            return ElectLeadersResponse::default();
        }
        let request = pb::ElectLeadersRequest {
            unclean,
            topics: asked
                .iter()
                .map(|(topic, partitions)| pb::TopicPartitions {
                    topic: topic.clone(),
                    partitions: partitions.clone(),
                })
                .collect(),
        };
        let answer = self
            .controller
            .clone()
            .elect_leaders(request)
            .await
            .map(|a| a.into_inner().partitions)
            .map_err(|s| Failure::from_controller(&s));
        let results = match answer {
            Ok(results) => results,
            Err(f) => return refused(&f),
        };
        let by_topic = in_topic_order(results.into_iter().map(|res| {
            let partition = elect::PartitionResult::default()
                .with_partition_id(res.partition)
                .with_error_code(raw_code(res.error_code))
                .with_error_message(message(res.error_message));
            (res.topic, partition)
        }))
        .into_iter()
        .map(|(topic, partitions)| {
            elect::ReplicaElectionResult::default()
                .with_topic(topic_name(&topic))
                .with_partition_result(partitions)
        })
        .collect();
        ElectLeadersResponse::default().with_replica_election_results(by_topic)
    }

    pub(super) async fn describe_log_dirs(
        &self,
        r: DescribeLogDirsRequest,
        caller: &Caller<'_>,
    ) -> DescribeLogDirsResponse {
        if let Err(f) = caller.check_cluster(Operation::Describe) {
            return DescribeLogDirsResponse::default().with_error_code(error_code(&f));
        }
        let logs = self.broker.logs();
        let wanted = |topic: &str, partition: i32| {
            r.topics.as_ref().is_none_or(|topics| {
                topics
                    .iter()
                    .any(|t| t.topic.as_str() == topic && t.partitions.contains(&partition))
            })
        };
        let mut topics: BTreeMap<String, Vec<log_dirs::DescribeLogDirsPartition>> = BTreeMap::new();
        for p in logs.all() {
            if !wanted(&p.topic, p.index) {
                continue;
            }
            let lag = (p.high_watermark() - p.log_end_offset()).max(0);
            topics.entry(p.topic.clone()).or_default().push(
                log_dirs::DescribeLogDirsPartition::default()
                    .with_partition_index(p.index)
                    .with_partition_size(i64::try_from(p.size_bytes()).unwrap_or(i64::MAX))
                    .with_offset_lag(lag),
            );
        }
        let mut dir = log_dirs::DescribeLogDirsResult::default()
            .with_log_dir(wire(logs.data_dir().display().to_string()))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, mut partitions)| {
                        partitions.sort_by_key(|p| p.partition_index);
                        log_dirs::DescribeLogDirsTopic::default()
                            .with_name(topic_name(&name))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        // -1: unknown (Kafka's value when the file system cannot say).
        let (total, usable) = logs.disk_space().map_or((-1, -1), |(t, u)| {
            (
                i64::try_from(t).unwrap_or(i64::MAX),
                i64::try_from(u).unwrap_or(i64::MAX),
            )
        });
        // Partitions that cannot open are not listed; the directory itself serves.
        dir = dir.with_total_bytes(total).with_usable_bytes(usable);
        DescribeLogDirsResponse::default().with_results(vec![dir])
    }
}
