//! Kafka's requests about the cluster's shape: Metadata, DescribeCluster and
//! DescribeTopicPartitions (KIP-966), on the broker's Metadata answer.

use std::collections::HashSet;

use runnel_kafka::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use runnel_kafka::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use runnel_kafka::kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, MetadataRequest, MetadataResponse,
};
use runnel_kafka::kafka_protocol::protocol::StrBytes;
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use uuid::Uuid;

use runnel_common::acl::{CLUSTER_NAME, Operation, ResourceType};

use super::{
    CLUSTER_OPERATIONS, Caller, KafkaApi, TOPIC_OPERATIONS, authorized, code, raw_code, topic_name,
    wire,
};

/// Kafka marks these topics internal in Metadata.
const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// Kafka's `max.request.partition.size.limit`: the most partitions one
/// DescribeTopicPartitions answer holds.
const MAX_DESCRIBED_PARTITIONS: i32 = 2000;

impl KafkaApi {
    pub(super) async fn metadata(
        &self,
        r: MetadataRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> MetadataResponse {
        // v1+: null means every topic, empty means none; v0: empty means every topic.
        let (wanted, none) = match &r.topics {
            None => (Vec::new(), false),
            Some(t) if t.is_empty() => (Vec::new(), version >= 1),
            Some(t) => {
                let names = self.metadata.with(|image| {
                    t.iter()
                        .filter_map(|t| match &t.name {
                            Some(name) => Some(name.to_string()),
                            // v10+ may ask by id.
                            None => image
                                .topics
                                .iter()
                                .find(|(_, s)| Uuid::from_bytes(s.id) == t.topic_id)
                                .map(|(n, _)| n.clone()),
                        })
                        .collect()
                });
                (names, false)
            }
        };
        // Topics named but not describable are answered
        // TOPIC_AUTHORIZATION_FAILED whether they exist or not.
        let (wanted, denied): (Vec<String>, Vec<String>) = wanted
            .into_iter()
            .partition(|t| caller.allowed(Operation::Describe, ResourceType::Topic, t));
        let asked_by_name = !wanted.is_empty() || !denied.is_empty();
        let allowed = wanted.len();
        // Before v4 the field did not exist and Kafka auto-created; creating
        // needs CREATE on the cluster or on every topic to create.
        let auto_create = (version < 4 || r.allow_auto_topic_creation)
            && (caller.sees(Operation::Create, ResourceType::Cluster, CLUSTER_NAME)
                || wanted
                    .iter()
                    .all(|t| caller.sees(Operation::Create, ResourceType::Topic, t)));
        // Asking for no topics still needs the brokers; the topics are dropped below.
        let mut answer = self
            .broker
            .metadata(
                pb::MetadataRequest {
                    topics: wanted,
                    allow_auto_topic_creation: auto_create && !none,
                },
                self.listener,
            )
            .await;
        keep_describable(caller, &mut answer, !asked_by_name, allowed, denied);
        let mut live = HashSet::new();
        let brokers = answer
            .brokers
            .iter()
            .filter(|b| !b.fenced)
            .filter_map(|b| {
                let (host, port) = self.kafka_address(&b.endpoints)?;
                live.insert(b.broker_id);
                Some(
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.broker_id))
                        .with_host(wire(host))
                        .with_port(port)
                        .with_rack((!b.rack.is_empty()).then(|| wire(b.rack.clone()))),
                )
            })
            .collect();
        let topic_operations = r.include_topic_authorized_operations && version >= 8;
        let topics = if none {
            Vec::new()
        } else {
            answer
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let v = PartitionView::of(p, &live);
                            MetadataResponsePartition::default()
                                .with_error_code(v.error_code)
                                .with_partition_index(p.partition)
                                .with_leader_id(v.leader)
                                .with_leader_epoch(p.leader_epoch)
                                .with_replica_nodes(v.replicas)
                                .with_isr_nodes(v.isr)
                                .with_offline_replicas(v.offline)
                        })
                        .collect();
                    let id = <[u8; 16]>::try_from(&t.topic_id[..])
                        .map(Uuid::from_bytes)
                        .unwrap_or_default();
                    MetadataResponseTopic::default()
                        .with_error_code(raw_code(t.error_code))
                        .with_is_internal(INTERNAL_TOPICS.contains(&t.name.as_str()))
                        .with_name(Some(topic_name(&t.name)))
                        .with_topic_id(id)
                        .with_partitions(partitions)
                        .with_topic_authorized_operations(authorized(
                            caller,
                            topic_operations,
                            ResourceType::Topic,
                            &t.name,
                            TOPIC_OPERATIONS,
                        ))
                })
                .collect()
        };
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(wire(answer.cluster_id)))
            // Any broker takes admin requests (it forwards them to the
            // controller), so clients are told this one is "the controller".
            .with_controller_id(BrokerId(self.broker_id))
            .with_topics(topics)
            .with_cluster_authorized_operations(authorized(
                caller,
                r.include_cluster_authorized_operations && (8..=10).contains(&version),
                ResourceType::Cluster,
                CLUSTER_NAME,
                CLUSTER_OPERATIONS,
            ))
    }

    /// Kafka's DescribeTopicPartitions (KIP-966): topics sorted by name,
    /// at most `response_partition_limit` partitions per answer, the rest
    /// behind `next_cursor`.
    pub(super) async fn describe_topic_partitions(
        &self,
        r: DescribeTopicPartitionsRequest,
        caller: &Caller<'_>,
    ) -> DescribeTopicPartitionsResponse {
        use runnel_kafka::kafka_protocol::messages::describe_topic_partitions_response::{
            Cursor, DescribeTopicPartitionsResponsePartition as Partition,
            DescribeTopicPartitionsResponseTopic as Topic,
        };
        let mut wanted: Vec<String> = r.topics.iter().map(|t| t.name.to_string()).collect();
        wanted.sort();
        wanted.dedup();
        let cursor = r
            .cursor
            .as_ref()
            .map(|c| (c.topic_name.to_string(), c.partition_index.max(0)));
        if let Some((topic, _)) = &cursor
            && !wanted.is_empty()
            && !wanted.contains(topic)
        {
            // Kafka refuses a cursor outside the topics asked for.
            return DescribeTopicPartitionsResponse::default().with_topics(vec![
                Topic::default()
                    .with_error_code(code(ErrorCode::InvalidRequest))
                    .with_name(Some(topic_name(topic))),
            ]);
        }
        let every = wanted.is_empty();
        let (wanted, denied): (Vec<String>, Vec<String>) = wanted
            .into_iter()
            .partition(|t| caller.allowed(Operation::Describe, ResourceType::Topic, t));
        let wanted_count = wanted.len();
        let mut answer = self
            .broker
            .metadata(
                pb::MetadataRequest {
                    topics: wanted,
                    allow_auto_topic_creation: false,
                },
                self.listener,
            )
            .await;
        keep_describable(caller, &mut answer, every, wanted_count, denied);
        let live: HashSet<i32> = answer
            .brokers
            .iter()
            .filter(|b| !b.fenced)
            .map(|b| b.broker_id)
            .collect();
        let mut topics = answer.topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut left = match r.response_partition_limit {
            n if n > 0 => n.min(MAX_DESCRIBED_PARTITIONS),
            _ => MAX_DESCRIBED_PARTITIONS,
        };
        let mut out = Vec::new();
        let mut next_cursor = None;
        for t in topics {
            let start = match &cursor {
                Some((topic, _)) if t.name < *topic => continue,
                Some((topic, p)) if t.name == *topic => *p,
                _ => 0,
            };
            if left == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(topic_name(&t.name))
                        .with_partition_index(start),
                );
                break;
            }
            let id = <[u8; 16]>::try_from(&t.topic_id[..])
                .map(Uuid::from_bytes)
                .unwrap_or_default();
            let mut partitions = Vec::new();
            for p in t.partitions.iter().filter(|p| p.partition >= start) {
                if left == 0 {
                    next_cursor = Some(
                        Cursor::default()
                            .with_topic_name(topic_name(&t.name))
                            .with_partition_index(p.partition),
                    );
                    break;
                }
                left -= 1;
                let v = PartitionView::of(p, &live);
                partitions.push(
                    Partition::default()
                        .with_error_code(v.error_code)
                        .with_partition_index(p.partition)
                        .with_leader_id(v.leader)
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(v.replicas)
                        .with_isr_nodes(v.isr)
                        // No eligible leader replicas (KIP-966's ELR is off).
                        .with_eligible_leader_replicas(Some(Vec::new()))
                        .with_last_known_elr(Some(Vec::new()))
                        .with_offline_replicas(v.offline),
                );
            }
            out.push(
                Topic::default()
                    .with_error_code(raw_code(t.error_code))
                    .with_is_internal(INTERNAL_TOPICS.contains(&t.name.as_str()))
                    .with_name(Some(topic_name(&t.name)))
                    .with_topic_id(id)
                    .with_partitions(partitions)
                    .with_topic_authorized_operations(authorized(
                        caller,
                        true,
                        ResourceType::Topic,
                        &t.name,
                        TOPIC_OPERATIONS,
                    )),
            );
            if next_cursor.is_some() {
                break;
            }
        }
        DescribeTopicPartitionsResponse::default()
            .with_topics(out)
            .with_next_cursor(next_cursor)
    }

    pub(super) fn describe_cluster(
        &self,
        r: DescribeClusterRequest,
        caller: &Caller<'_>,
    ) -> DescribeClusterResponse {
        // endpoint_type 2 asks for controllers, which Kafka clients cannot reach here.
        if r.endpoint_type > 1 {
            return DescribeClusterResponse::default()
                .with_error_code(code(ErrorCode::InvalidRequest))
                .with_error_message(Some(StrBytes::from_static_str(
                    "controllers are not reachable over the Kafka protocol; ask a broker",
                )))
                .with_endpoint_type(r.endpoint_type);
        }
        let brokers = self.metadata.with(|image| {
            image
                .brokers
                .iter()
                .filter(|(_, b)| !b.fenced || r.include_fenced_brokers)
                .filter_map(|(&id, b)| {
                    let (host, port) = self.kafka_address(&b.endpoints)?;
                    Some(
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(id))
                            .with_host(wire(host))
                            .with_port(port)
                            .with_rack((!b.rack.is_empty()).then(|| wire(b.rack.clone())))
                            .with_is_fenced(b.fenced),
                    )
                })
                .collect()
        });
        DescribeClusterResponse::default()
            .with_endpoint_type(1)
            .with_cluster_id(wire(self.metadata.cluster_id()))
            .with_controller_id(BrokerId(self.broker_id))
            .with_brokers(brokers)
            .with_cluster_authorized_operations(authorized(
                caller,
                r.include_cluster_authorized_operations,
                ResourceType::Cluster,
                CLUSTER_NAME,
                CLUSTER_OPERATIONS,
            ))
    }
}

/// Leaves in a Metadata answer only what the caller may describe: with
/// `every` topic asked for, those it may; else the `allowed` named ones the
/// broker answered (none if every named one was `denied`: the broker was
/// then asked for all), and each denied one as TOPIC_AUTHORIZATION_FAILED,
/// as a topic that does not exist would be.
fn keep_describable(
    caller: &Caller<'_>,
    answer: &mut pb::MetadataResponse,
    every: bool,
    allowed: usize,
    denied: Vec<String>,
) {
    if every {
        answer
            .topics
            .retain(|t| caller.sees(Operation::Describe, ResourceType::Topic, &t.name));
    } else if allowed == 0 {
        answer.topics.clear();
    }
    answer
        .topics
        .extend(denied.into_iter().map(|name| pb::TopicInfo {
            name,
            error_code: ErrorCode::TopicAuthorizationFailed as i32,
            ..Default::default()
        }));
}

/// A partition as Metadata and DescribeTopicPartitions show it: a leader
/// that is not live is no leader (LEADER_NOT_AVAILABLE).
struct PartitionView {
    error_code: i16,
    leader: BrokerId,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    offline: Vec<BrokerId>,
}

impl PartitionView {
    fn of(p: &pb::PartitionInfo, live: &HashSet<i32>) -> PartitionView {
        let leader = if live.contains(&p.leader) {
            p.leader
        } else {
            -1
        };
        PartitionView {
            error_code: if leader < 0 {
                code(ErrorCode::LeaderNotAvailable)
            } else {
                0
            },
            leader: BrokerId(leader),
            replicas: p.replicas.iter().map(|&b| BrokerId(b)).collect(),
            isr: p.isr.iter().map(|&b| BrokerId(b)).collect(),
            offline: p
                .replicas
                .iter()
                .filter(|b| !live.contains(b))
                .map(|&b| BrokerId(b))
                .collect(),
        }
    }
}
