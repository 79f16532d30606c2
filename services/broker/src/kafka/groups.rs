//! FindCoordinator and the group APIs (classic and KIP-848): forwarded to
//! the coordinator owning the group over gRPC.
//!
//! Coordinators are their own services and do not speak Kafka, so every
//! broker answers FindCoordinator with itself and relays the group's
//! requests. When ownership moves the relay follows the metadata; a request
//! caught in the move gets NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE and
//! the client asks again, as it would against Kafka.

use std::collections::HashMap;

use std::future::Future;
use uuid::Uuid;

use runnel_kafka::kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, TopicPartitions as HeartbeatPartitions,
};
use runnel_kafka::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use runnel_kafka::kafka_protocol::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use runnel_kafka::kafka_protocol::messages::find_coordinator_response::Coordinator;
use runnel_kafka::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use runnel_kafka::kafka_protocol::messages::leave_group_response::MemberResponse;
use runnel_kafka::kafka_protocol::messages::list_groups_response::ListedGroup;
use runnel_kafka::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use runnel_kafka::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use runnel_kafka::kafka_protocol::messages::{
    BrokerId, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use runnel_kafka::kafka_protocol::protocol::StrBytes;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;

use runnel_common::acl::{CLUSTER_NAME, Operation, ResourceType};

use super::{
    Caller, GROUP_OPERATIONS, KafkaApi, authorized, code, error_code, error_message, message,
    raw_code, wire,
};
use crate::service::Failure;
pub(super) use crate::service::coordinators::{Client, call_coordinator};

/// Kafka's group key type in FindCoordinator.
const GROUP_KEY: i8 = 0;
/// FindCoordinator's key type for a transactional id.
const TRANSACTION_KEY: i8 = 1;

fn empty_if_none(s: &Option<StrBytes>) -> String {
    s.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

fn optional(s: String) -> Option<StrBytes> {
    (!s.is_empty()).then(|| wire(s))
}

impl KafkaApi {
    /// The client for the coordinator that owns `group` now.
    fn coordinator(&self, group: &str) -> Result<Client, Failure> {
        let addr = self.metadata.with(|image| {
            image
                .group_coordinator(group)
                .and_then(|(_, c, _)| c.grpc_address())
        });
        let Some(addr) = addr else {
            return Err(Failure::NoCoordinatorToRelay {
                group: group.to_owned(),
            });
        };
        self.broker.coordinator_client(&addr)
    }

    /// Every topic's id by name (KIP-848's APIs, Produce v13 and Fetch v13+
    /// name topics by id).
    pub(super) fn topic_ids(&self) -> HashMap<String, Uuid> {
        self.metadata.with(|image| {
            image
                .topics
                .iter()
                .map(|(name, t)| (name.clone(), Uuid::from_bytes(t.id)))
                .collect()
        })
    }

    /// Calls the coordinator owning `group`; a transport failure reads as
    /// COORDINATOR_NOT_AVAILABLE, which sends the client to FindCoordinator.
    pub(super) async fn relay_group<T, F, Fut>(&self, group: &str, call: F) -> Result<T, Failure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        call_coordinator(self.coordinator(group)?, call).await
    }

    /// [`Self::relay_group`] after checking the caller may do `operation`
    /// on the group (GROUP_AUTHORIZATION_FAILED otherwise).
    async fn relay_group_as<T, F, Fut>(
        &self,
        caller: &Caller<'_>,
        operation: Operation,
        group: &str,
        call: F,
    ) -> Result<T, Failure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        caller.check(operation, ResourceType::Group, group)?;
        self.relay_group(group, call).await
    }

    pub(super) fn find_coordinator(
        &self,
        r: FindCoordinatorRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> FindCoordinatorResponse {
        let keys: Vec<StrBytes> = if version >= 4 {
            r.coordinator_keys.clone()
        } else {
            vec![r.key.clone()]
        };
        let own = self.own_address();
        let coordinators: Vec<Coordinator> = keys
            .into_iter()
            .map(|key| {
                let out = Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(-1));
                let refused = |failure: &Failure| {
                    out.clone()
                        .with_port(-1)
                        .with_error_code(error_code(failure))
                        .with_error_message(error_message(failure))
                };
                let resource_type = match r.key_type {
                    GROUP_KEY => ResourceType::Group,
                    _ => ResourceType::TransactionalId,
                };
                if matches!(r.key_type, GROUP_KEY | TRANSACTION_KEY)
                    && let Err(failure) = caller.check(Operation::Describe, resource_type, &key)
                {
                    return refused(&failure);
                }
                match r.key_type {
                    GROUP_KEY => {}
                    TRANSACTION_KEY => {
                        if let Err(failure) = self.broker.txn_coordinator(&key) {
                            return refused(&failure);
                        }
                        return match &own {
                            Some((host, port)) => out
                                .with_node_id(BrokerId(self.broker_id))
                                .with_host(wire(host.clone()))
                                .with_port(*port),
                            None => refused(&Failure::NotRegisteredYet),
                        };
                    }
                    other => {
                        return refused(&Failure::UnsupportedKeyType { key_type: other });
                    }
                }
                if let Err(failure) = self.broker.group_coordinator(&key, self.listener) {
                    return refused(&failure);
                }
                match &own {
                    Some((host, port)) => out
                        .with_node_id(BrokerId(self.broker_id))
                        .with_host(wire(host.clone()))
                        .with_port(*port),
                    None => refused(&Failure::NotRegisteredYet),
                }
            })
            .collect();
        if version >= 4 {
            return FindCoordinatorResponse::default().with_coordinators(coordinators);
        }
        let first = coordinators.into_iter().next().unwrap_or_default();
        FindCoordinatorResponse::default()
            .with_error_code(first.error_code)
            .with_error_message(first.error_message)
            .with_node_id(first.node_id)
            .with_host(first.host)
            .with_port(first.port)
    }

    pub(super) async fn join_group(
        &self,
        r: JoinGroupRequest,
        version: i16,
        client_id: String,
        caller: &Caller<'_>,
    ) -> JoinGroupResponse {
        let group = r.group_id.to_string();
        let request = pb::JoinGroupRequest {
            group_id: group.clone(),
            session_timeout_ms: r.session_timeout_ms,
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout_ms: if r.rebalance_timeout_ms > 0 {
                r.rebalance_timeout_ms
            } else {
                r.session_timeout_ms
            },
            member_id: r.member_id.to_string(),
            group_instance_id: empty_if_none(&r.group_instance_id),
            protocol_type: r.protocol_type.to_string(),
            protocols: r
                .protocols
                .iter()
                .map(|p| pb::GroupProtocol {
                    name: p.name.to_string(),
                    metadata: p.metadata.clone(),
                })
                .collect(),
            client_id,
            // KIP-394's MEMBER_ID_REQUIRED exists from v4.
            member_id_not_required: version < 4,
        };
        let protocol_type = request.protocol_type.clone();
        match self
            .relay_group_as(caller, Operation::Read, &group, |mut c| async move {
                c.join_group(request).await
            })
            .await
        {
            Ok(j) => JoinGroupResponse::default()
                .with_error_code(raw_code(j.error_code))
                .with_generation_id(j.generation_id)
                .with_protocol_type(Some(wire(protocol_type)))
                .with_protocol_name(Some(wire(j.protocol_name)))
                .with_leader(wire(j.leader))
                .with_member_id(wire(j.member_id))
                .with_members(
                    j.members
                        .into_iter()
                        .map(|m| {
                            JoinGroupResponseMember::default()
                                .with_member_id(wire(m.member_id))
                                .with_group_instance_id(optional(m.group_instance_id))
                                .with_metadata(m.metadata)
                        })
                        .collect(),
                ),
            Err(failure) => {
                tracing::debug!(%group, error = %failure, "JoinGroup relay failed");
                JoinGroupResponse::default()
                    .with_error_code(error_code(&failure))
                    .with_generation_id(-1)
            }
        }
    }

    pub(super) async fn sync_group(
        &self,
        r: SyncGroupRequest,
        caller: &Caller<'_>,
    ) -> SyncGroupResponse {
        let group = r.group_id.to_string();
        let request = pb::SyncGroupRequest {
            group_id: group.clone(),
            generation_id: r.generation_id,
            member_id: r.member_id.to_string(),
            group_instance_id: empty_if_none(&r.group_instance_id),
            assignments: r
                .assignments
                .iter()
                .map(|a| pb::SyncGroupAssignment {
                    member_id: a.member_id.to_string(),
                    assignment: a.assignment.clone(),
                })
                .collect(),
        };
        match self
            .relay_group_as(caller, Operation::Read, &group, |mut c| async move {
                c.sync_group(request).await
            })
            .await
        {
            Ok(s) => SyncGroupResponse::default()
                .with_error_code(raw_code(s.error_code))
                .with_protocol_type(r.protocol_type)
                .with_protocol_name(r.protocol_name)
                .with_assignment(s.assignment),
            Err(failure) => SyncGroupResponse::default().with_error_code(error_code(&failure)),
        }
    }

    pub(super) async fn heartbeat(
        &self,
        r: HeartbeatRequest,
        caller: &Caller<'_>,
    ) -> HeartbeatResponse {
        let group = r.group_id.to_string();
        let request = pb::HeartbeatRequest {
            group_id: group.clone(),
            generation_id: r.generation_id,
            member_id: r.member_id.to_string(),
            group_instance_id: empty_if_none(&r.group_instance_id),
        };
        let error = match self
            .relay_group_as(caller, Operation::Read, &group, |mut c| async move {
                c.heartbeat(request).await
            })
            .await
        {
            Ok(h) => raw_code(h.error_code),
            Err(failure) => error_code(&failure),
        };
        HeartbeatResponse::default().with_error_code(error)
    }

    pub(super) async fn leave_group(
        &self,
        r: LeaveGroupRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> LeaveGroupResponse {
        let group = r.group_id.to_string();
        // v3+ names members (possibly several, by instance id); before, one member id.
        let members: Vec<(String, Option<StrBytes>)> = if version >= 3 {
            r.members
                .iter()
                .map(|m| (m.member_id.to_string(), m.group_instance_id.clone()))
                .collect()
        } else {
            vec![(r.member_id.to_string(), None)]
        };
        let mut results = Vec::with_capacity(members.len());
        let mut top = 0;
        for (member_id, instance) in members {
            let request = pb::LeaveGroupRequest {
                group_id: group.clone(),
                member_id: member_id.clone(),
                group_instance_id: empty_if_none(&instance),
            };
            let error = match self
                .relay_group_as(caller, Operation::Read, &group, |mut c| async move {
                    c.leave_group(request).await
                })
                .await
            {
                Ok(l) => raw_code(l.error_code),
                Err(failure) => error_code(&failure),
            };
            if top == 0 {
                top = error;
            }
            results.push(
                MemberResponse::default()
                    .with_member_id(wire(member_id))
                    .with_group_instance_id(instance)
                    .with_error_code(error),
            );
        }
        if version >= 3 {
            // Per-member errors; the top level reports only group-wide ones.
            let group_wide = [
                code(ErrorCode::CoordinatorNotAvailable),
                code(ErrorCode::NotCoordinator),
                code(ErrorCode::CoordinatorLoadInProgress),
                code(ErrorCode::InvalidGroupId),
                code(ErrorCode::GroupAuthorizationFailed),
            ];
            let top = if group_wide.contains(&top) { top } else { 0 };
            return LeaveGroupResponse::default()
                .with_error_code(top)
                .with_members(results);
        }
        LeaveGroupResponse::default().with_error_code(top)
    }

    pub(super) async fn offset_commit(
        &self,
        r: OffsetCommitRequest,
        caller: &Caller<'_>,
    ) -> OffsetCommitResponse {
        let group = r.group_id.to_string();
        // READ on the group, else every partition is refused with the
        // group's error; READ on each topic, else that topic's partitions.
        let group_denied = caller
            .check(Operation::Read, ResourceType::Group, &group)
            .err()
            .map(|f| error_code(&f));
        let topic_denied: std::collections::HashSet<&str> = r
            .topics
            .iter()
            .map(|t| t.name.as_str())
            .filter(|t| !caller.allowed(Operation::Read, ResourceType::Topic, t))
            .collect();
        // As Kafka: offsets of a partition no topic has are refused one by
        // one (UNKNOWN_TOPIC_OR_PARTITION) and the rest are committed.
        let unknown: std::collections::HashSet<(&str, i32)> = self.metadata.with(|image| {
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t, p.partition_index)))
                .filter(|(t, p)| {
                    !image
                        .topics
                        .get(t.name.as_str())
                        .is_some_and(|topic| topic.partitions.contains_key(p))
                })
                .map(|(t, p)| (t.name.as_str(), p))
                .collect()
        });
        let exists = |topic: &str, partition: i32| !unknown.contains(&(topic, partition));
        let partitions: Vec<pb::OffsetCommitPartition> = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| {
                        group_denied.is_none()
                            && !topic_denied.contains(t.name.as_str())
                            && exists(t.name.as_str(), p.partition_index)
                    })
                    .map(|p| pb::OffsetCommitPartition {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: empty_if_none(&p.committed_metadata),
                    })
            })
            .collect();
        let answer = if partitions.is_empty() {
            Ok(pb::OffsetCommitResponse::default())
        } else {
            let request = pb::OffsetCommitRequest {
                group_id: group.clone(),
                generation_id: r.generation_id_or_member_epoch,
                member_id: r.member_id.to_string(),
                group_instance_id: empty_if_none(&r.group_instance_id),
                partitions,
            };
            self.relay_group(
                &group,
                |mut c| async move { c.offset_commit(request).await },
            )
            .await
        };
        let topics = r
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let error = match &answer {
                            _ if group_denied.is_some() => group_denied.unwrap_or_default(),
                            _ if topic_denied.contains(t.name.as_str()) => {
                                code(ErrorCode::TopicAuthorizationFailed)
                            }
                            _ if !exists(t.name.as_str(), p.partition_index) => {
                                code(ErrorCode::UnknownTopicOrPartition)
                            }
                            Ok(a) => a
                                .partitions
                                .iter()
                                .find(|x| {
                                    x.topic == t.name.as_str() && x.partition == p.partition_index
                                })
                                .map_or(code(ErrorCode::UnknownServerError), |x| {
                                    raw_code(x.error_code)
                                }),
                            Err(failure) => error_code(failure),
                        };
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error)
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    pub(super) async fn offset_fetch(
        &self,
        r: OffsetFetchRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> OffsetFetchResponse {
        if version >= 8 {
            // v8+ batches groups (and names a KIP-848 member, checked at commit time).
            let mut groups = Vec::with_capacity(r.groups.len());
            for g in &r.groups {
                let asked = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.clone(), t.partition_indexes.clone()))
                        .collect()
                });
                let (error, topics) = self
                    .committed(&g.group_id, asked, r.require_stable, caller)
                    .await;
                groups.push(
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(error)
                        .with_topics(
                            topics
                                .into_iter()
                                .map(|(name, partitions)| {
                                    OffsetFetchResponseTopics::default()
                                        .with_name(name)
                                        .with_partitions(
                                            partitions
                                                .into_iter()
                                                .map(|o| {
                                                    OffsetFetchResponsePartitions::default()
                                                        .with_partition_index(o.partition)
                                                        .with_error_code(raw_code(o.error_code))
                                                        .with_committed_offset(o.offset)
                                                        .with_committed_leader_epoch(o.leader_epoch)
                                                        .with_metadata(Some(wire(o.metadata)))
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        ),
                );
            }
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let asked = r.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.clone(), t.partition_indexes.clone()))
                .collect()
        });
        // v7 added require_stable.
        let stable = version >= 7 && r.require_stable;
        let (error, topics) = self.committed(&r.group_id, asked, stable, caller).await;
        if error != 0 {
            return OffsetFetchResponse::default().with_error_code(error);
        }
        let topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|o| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(o.partition)
                                    .with_error_code(raw_code(o.error_code))
                                    .with_committed_offset(o.offset)
                                    .with_committed_leader_epoch(o.leader_epoch)
                                    .with_metadata(Some(wire(o.metadata)))
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }

    /// A group's committed offsets: those `asked` (-1 where nothing is
    /// committed), or every committed one; with the group-level error code
    /// (with `require_stable`, partitions an open transaction holds a commit
    /// for answer UNSTABLE_OFFSET_COMMIT). The caller needs DESCRIBE on the
    /// group, and on a topic to see its offsets: a topic asked for without
    /// it answers TOPIC_AUTHORIZATION_FAILED, and "every offset" leaves it out.
    async fn committed(
        &self,
        group_id: &GroupId,
        asked: Option<Vec<(TopicName, Vec<i32>)>>,
        require_stable: bool,
        caller: &Caller<'_>,
    ) -> (i16, Vec<(TopicName, Vec<pb::OffsetFetchPartition>)>) {
        let group = group_id.to_string();
        if let Err(failure) = caller.check(Operation::Describe, ResourceType::Group, &group) {
            return (error_code(&failure), Vec::new());
        }
        let describable =
            |topic: &str| caller.sees(Operation::Describe, ResourceType::Topic, topic);
        let asked_all = asked.is_none();
        let request = pb::OffsetFetchRequest {
            require_stable,
            group_id: group.clone(),
            topics: asked
                .iter()
                .flatten()
                .map(|(name, partitions)| pb::OffsetFetchTopic {
                    topic: name.to_string(),
                    partitions: partitions.clone(),
                })
                .collect(),
        };
        let answer = match self
            .relay_group(&group, |mut c| async move { c.offset_fetch(request).await })
            .await
        {
            Ok(a) if a.error_code == 0 => a,
            Ok(a) => return (raw_code(a.error_code), Vec::new()),
            Err(failure) => return (error_code(&failure), Vec::new()),
        };
        let topics = match asked {
            Some(asked) => asked
                .into_iter()
                .map(|(name, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| {
                            answer
                                .partitions
                                .iter()
                                .find(|o| o.topic == name.as_str() && o.partition == p)
                                .cloned()
                                .unwrap_or(pb::OffsetFetchPartition {
                                    topic: name.to_string(),
                                    partition: p,
                                    offset: -1,
                                    leader_epoch: -1,
                                    metadata: String::new(),
                                    error_code: 0,
                                })
                        })
                        .collect();
                    (name, found)
                })
                .collect(),
            None => {
                let mut topics: Vec<(TopicName, Vec<pb::OffsetFetchPartition>)> = Vec::new();
                for o in answer.partitions {
                    match topics.iter_mut().find(|(t, _)| t.as_str() == o.topic) {
                        Some((_, v)) => v.push(o),
                        None => topics.push((TopicName(wire(o.topic.clone())), vec![o])),
                    }
                }
                topics
            }
        };
        let topics = topics
            .into_iter()
            .filter(|(name, _)| !asked_all || describable(name))
            .map(|(name, mut partitions)| {
                if !describable(&name) {
                    for p in &mut partitions {
                        *p = pb::OffsetFetchPartition {
                            topic: name.to_string(),
                            partition: p.partition,
                            offset: -1,
                            leader_epoch: -1,
                            metadata: String::new(),
                            error_code: ErrorCode::TopicAuthorizationFailed as i32,
                        };
                    }
                }
                (name, partitions)
            })
            .collect();
        (0, topics)
    }

    /// KIP-848's heartbeat: topics travel by id on the wire and by name to the coordinator.
    pub(super) async fn consumer_group_heartbeat(
        &self,
        r: ConsumerGroupHeartbeatRequest,
        caller: &Caller<'_>,
    ) -> ConsumerGroupHeartbeatResponse {
        let refused = |failure: &Failure| {
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(error_code(failure))
                .with_error_message(error_message(failure))
        };
        if r.subscribed_topic_regex
            .as_ref()
            .is_some_and(|re| !re.is_empty())
        {
            return refused(&Failure::RegexSubscription);
        }
        // Subscribing needs DESCRIBE on every topic named (Kafka refuses
        // the heartbeat with TOPIC_AUTHORIZATION_FAILED otherwise).
        if let Some(denied) = r
            .subscribed_topic_names
            .iter()
            .flatten()
            .find(|t| !caller.allowed(Operation::Describe, ResourceType::Topic, t.as_str()))
        {
            return refused(&Failure::unauthorized(
                Operation::Describe,
                ResourceType::Topic,
                denied.as_str(),
            ));
        }
        let group = r.group_id.to_string();
        let ids = self.topic_ids();
        // Owned partitions come by id; only heartbeats that report them need the reverse map.
        let names: HashMap<Uuid, String> = match &r.topic_partitions {
            Some(_) => ids.iter().map(|(n, id)| (*id, n.clone())).collect(),
            None => HashMap::new(),
        };
        let request = pb::ConsumerGroupHeartbeatRequest {
            group_id: group.clone(),
            member_id: r.member_id.to_string(),
            member_epoch: r.member_epoch,
            instance_id: empty_if_none(&r.instance_id),
            rebalance_timeout_ms: r.rebalance_timeout_ms.max(0),
            subscribed_topics: r.subscribed_topic_names.as_ref().map(|ts| pb::TopicNames {
                names: ts.iter().map(|t| t.to_string()).collect(),
            }),
            server_assignor: empty_if_none(&r.server_assignor),
            owned: r.topic_partitions.as_ref().map(|owned| pb::PartitionSet {
                topics: owned
                    .iter()
                    .filter_map(|t| {
                        Some(pb::TopicPartitions {
                            topic: names.get(&t.topic_id)?.clone(),
                            partitions: t.partitions.clone(),
                        })
                    })
                    .collect(),
            }),
        };
        match self
            .relay_group_as(caller, Operation::Read, &group, |mut c| async move {
                c.consumer_group_heartbeat(request).await
            })
            .await
        {
            Ok(h) => ConsumerGroupHeartbeatResponse::default()
                .with_error_code(raw_code(h.error_code))
                .with_error_message(message(h.error_message))
                .with_member_id(optional(h.member_id))
                .with_member_epoch(h.member_epoch)
                .with_heartbeat_interval_ms(h.heartbeat_interval_ms)
                .with_assignment(h.assignment.map(|a| {
                    Assignment::default().with_topic_partitions(
                        a.topics
                            .into_iter()
                            .filter_map(|t| {
                                Some(
                                    HeartbeatPartitions::default()
                                        .with_topic_id(*ids.get(&t.topic)?)
                                        .with_partitions(t.partitions),
                                )
                            })
                            .collect(),
                    )
                })),
            Err(failure) => refused(&failure),
        }
    }

    /// KIP-848 groups described; classic and unknown ones are GROUP_ID_NOT_FOUND.
    pub(super) async fn consumer_group_describe(
        &self,
        r: ConsumerGroupDescribeRequest,
        caller: &Caller<'_>,
    ) -> ConsumerGroupDescribeResponse {
        use runnel_kafka::kafka_protocol::messages::consumer_group_describe_response::{
            Assignment as Described, DescribedGroup as Group, Member, TopicPartitions as Owned,
        };
        let ids = self.topic_ids();
        let assignment = |set: Option<pb::PartitionSet>| {
            Described::default().with_topic_partitions(
                set.unwrap_or_default()
                    .topics
                    .into_iter()
                    .map(|t| {
                        Owned::default()
                            .with_topic_id(ids.get(&t.topic).copied().unwrap_or_default())
                            .with_topic_name(TopicName(wire(t.topic)))
                            .with_partitions(t.partitions)
                    })
                    .collect(),
            )
        };
        let mut groups = Vec::with_capacity(r.group_ids.len());
        for id in r.group_ids {
            let group = id.to_string();
            let request = pb::ConsumerGroupDescribeRequest {
                group_ids: vec![group.clone()],
            };
            let described = match self
                .relay_group_as(caller, Operation::Describe, &group, |mut c| async move {
                    c.consumer_group_describe(request).await
                })
                .await
                .map(|a| a.groups.into_iter().next())
            {
                Ok(Some(g)) if g.error_code == 0 => Group::default()
                    .with_group_state(wire(g.state))
                    .with_group_epoch(g.group_epoch)
                    .with_assignment_epoch(g.assignment_epoch)
                    .with_assignor_name(wire(g.assignor_name))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                Member::default()
                                    .with_member_id(wire(m.member_id))
                                    .with_instance_id(optional(m.instance_id))
                                    .with_member_epoch(m.member_epoch)
                                    .with_subscribed_topic_names(
                                        m.subscribed_topics
                                            .into_iter()
                                            .map(|t| TopicName(wire(t)))
                                            .collect(),
                                    )
                                    .with_assignment(assignment(m.assignment))
                                    .with_target_assignment(assignment(m.target_assignment))
                            })
                            .collect(),
                    ),
                Ok(Some(g)) => Group::default()
                    .with_error_code(raw_code(g.error_code))
                    .with_error_message(message(g.error_message)),
                Ok(None) => Group::default().with_error_code(code(ErrorCode::GroupIdNotFound)),
                Err(failure) => Group::default()
                    .with_error_code(error_code(&failure))
                    .with_error_message(error_message(&failure)),
            };
            groups.push(
                described
                    .with_group_id(id)
                    .with_authorized_operations(authorized(
                        caller,
                        r.include_authorized_operations,
                        ResourceType::Group,
                        &group,
                        GROUP_OPERATIONS,
                    )),
            );
        }
        ConsumerGroupDescribeResponse::default().with_groups(groups)
    }

    pub(super) async fn list_groups(
        &self,
        r: ListGroupsRequest,
        caller: &Caller<'_>,
    ) -> ListGroupsResponse {
        // DESCRIBE on the cluster lists every group; else those the caller
        // may describe.
        let all = caller.sees(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME);
        // Every coordinator holds some groups: ask each live one.
        let addrs: Vec<String> = self.metadata.with(|image| {
            image
                .live_coordinators()
                .filter_map(|(_, c)| c.grpc_address())
                .collect()
        });
        let states: Vec<String> = r.states_filter.iter().map(|s| s.to_string()).collect();
        let types: Vec<String> = r.types_filter.iter().map(|s| s.to_string()).collect();
        let mut groups = Vec::new();
        let mut error = 0;
        for addr in addrs {
            let Ok(mut client) = self.broker.coordinator_client(&addr) else {
                continue;
            };
            match client
                .list_groups(pb::ListGroupsRequest {
                    states: states.clone(),
                    types: types.clone(),
                })
                .await
            {
                Ok(answer) => groups.extend(
                    answer
                        .into_inner()
                        .groups
                        .into_iter()
                        .filter(|g| {
                            all || caller.sees(
                                Operation::Describe,
                                ResourceType::Group,
                                &g.group_id,
                            )
                        })
                        .map(|g| {
                            ListedGroup::default()
                                .with_group_id(GroupId(wire(g.group_id)))
                                .with_protocol_type(wire(g.protocol_type))
                                .with_group_state(wire(g.state))
                                .with_group_type(wire(g.group_type))
                        }),
                ),
                Err(status) => {
                    tracing::debug!(%addr, error = %status.message(), "ListGroups: a coordinator did not answer");
                    error = code(ErrorCode::CoordinatorNotAvailable);
                }
            }
        }
        ListGroupsResponse::default()
            .with_error_code(error)
            .with_groups(groups)
    }

    pub(super) async fn describe_groups(
        &self,
        r: DescribeGroupsRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> DescribeGroupsResponse {
        let include_operations = r.include_authorized_operations && version >= 3;
        let mut groups = Vec::with_capacity(r.groups.len());
        for id in r.groups {
            let group = id.to_string();
            let request = pb::DescribeGroupsRequest {
                group_ids: vec![group.clone()],
            };
            let described = match self
                .relay_group_as(caller, Operation::Describe, &group, |mut c| async move {
                    c.describe_groups(request).await
                })
                .await
            {
                Ok(a) => match a.groups.into_iter().next() {
                    Some(g) => DescribedGroup::default()
                        .with_error_code(raw_code(g.error_code))
                        .with_error_message(message(g.error_message))
                        .with_group_state(wire(g.state))
                        .with_protocol_type(wire(g.protocol_type))
                        .with_protocol_data(wire(g.protocol))
                        .with_members(
                            g.members
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_id(wire(m.member_id))
                                        .with_group_instance_id(optional(m.group_instance_id))
                                        .with_client_id(wire(m.client_id))
                                        .with_client_host(wire(m.client_host))
                                        .with_member_metadata(m.metadata)
                                        .with_member_assignment(m.assignment)
                                })
                                .collect(),
                        ),
                    None => DescribedGroup::default()
                        .with_group_state(StrBytes::from_static_str("Dead")),
                },
                Err(failure) => DescribedGroup::default()
                    .with_error_code(error_code(&failure))
                    .with_error_message(error_message(&failure)),
            };
            // v6 added error messages; the codec refuses them set on older versions.
            let described = if version >= 6 {
                described
            } else {
                described.with_error_message(None)
            };
            groups.push(
                described
                    .with_group_id(id)
                    .with_authorized_operations(authorized(
                        caller,
                        include_operations,
                        ResourceType::Group,
                        &group,
                        GROUP_OPERATIONS,
                    )),
            );
        }
        DescribeGroupsResponse::default().with_groups(groups)
    }

    pub(super) async fn delete_groups(
        &self,
        r: DeleteGroupsRequest,
        caller: &Caller<'_>,
    ) -> DeleteGroupsResponse {
        let mut results = Vec::with_capacity(r.groups_names.len());
        for id in r.groups_names {
            let group = id.to_string();
            let request = pb::DeleteGroupsRequest {
                group_ids: vec![group.clone()],
            };
            let error = match self
                .relay_group_as(caller, Operation::Delete, &group, |mut c| async move {
                    c.delete_groups(request).await
                })
                .await
            {
                Ok(a) => a
                    .groups
                    .first()
                    .map_or(code(ErrorCode::UnknownServerError), |g| {
                        raw_code(g.error_code)
                    }),
                Err(failure) => error_code(&failure),
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(error),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }
}
