//! The broker's Kafka listener: Kafka's requests on the broker's own request
//! logic, so Kafka clients and tools work against Runnel unchanged.
//!
//! Requests become the same calls the gRPC API makes ([`Broker`]'s produce,
//! fetch, list offsets...), record batches passing through as bytes. Group
//! requests go to the coordinator owning the group over gRPC (every broker
//! names itself as the group's coordinator, so Kafka clients need no route
//! to the coordinators); admin requests go to the controller. Runnel's
//! error codes are Kafka's numbers, so they map one to one.
//!
//! - `produce`: Produce.
//! - `fetch`: Fetch (with fetch sessions, `sessions`) and OffsetForLeaderEpoch.
//! - `offsets`: ListOffsets and DeleteRecords.
//! - `metadata_request`: Metadata, DescribeCluster, DescribeTopicPartitions.
//! - `producer_ids`: InitProducerId and DescribeProducers.
//! - `groups`: FindCoordinator and the group APIs.
//! - `transactions`: the transaction APIs, relayed to the transaction
//!   coordinator, and KIP-890's check of transactional produces.
//! - `admin`: topics, partitions and configs.
//! - `acls`: CreateAcls, DescribeAcls, DeleteAcls.
//! - `reassignments`: AlterPartitionReassignments, ListPartitionReassignments,
//!   ElectLeaders, DescribeLogDirs.
//! - `quotas`: DescribeClientQuotas, AlterClientQuotas (the throttling
//!   itself is `crate::quotas`).
//! - `users`: SCRAM credentials (the SASL handshake itself is the
//!   listener's, `runnel_kafka::auth`).

mod acls;
mod admin;
mod fetch;
mod groups;
mod metadata_request;
mod offsets;
mod produce;
mod producer_ids;
mod quotas;
mod reassignments;
mod sessions;
mod transactions;
mod users;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use runnel_common::acl::{Operation, ResourceType};
use runnel_common::quota::QuotaKey;
use runnel_kafka::kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind, TopicName};
use runnel_kafka::kafka_protocol::protocol::StrBytes;
use runnel_kafka::request::Request;
use runnel_kafka::server::{Handler, Reply, Session};
use runnel_kafka::versions::{Feature, Versions};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::metadata::v1::Endpoint;

use crate::authz::{Authorizer, Caller};
use crate::metadata::{Controller, MetadataCache};
use crate::quotas::{Client, Quotas, Timed};
use crate::service::{Broker, Failure, Listener, by_topic};

/// The endpoint a broker registers for its Kafka listener.
pub const KAFKA_ENDPOINT: &str = "kafka";
/// The endpoint a broker registers for its external Kafka listener.
pub const KAFKA_EXTERNAL_ENDPOINT: &str = "kafka-external";

/// The APIs served and their versions: every version the codec knows
/// (Kafka 4.x's newest) down to the oldest Kafka 4.x still serves, plus the
/// older Produce, Fetch, OffsetCommit, CreateTopics and DescribeConfigs
/// versions Kafka 3.9 served (`runnel_kafka::legacy`), and the cluster
/// features ApiVersions v3+ reports.
pub fn versions() -> Versions {
    Versions::new(&[
        (ApiKey::Produce, 0, 13),
        (ApiKey::Fetch, 0, 18),
        (ApiKey::ListOffsets, 1, 10),
        (ApiKey::Metadata, 0, 13),
        (ApiKey::OffsetCommit, 0, 9),
        (ApiKey::OffsetFetch, 1, 9),
        (ApiKey::FindCoordinator, 0, 6),
        (ApiKey::JoinGroup, 0, 9),
        (ApiKey::Heartbeat, 0, 4),
        (ApiKey::LeaveGroup, 0, 5),
        (ApiKey::SyncGroup, 0, 5),
        (ApiKey::DescribeGroups, 0, 6),
        (ApiKey::ListGroups, 0, 5),
        (ApiKey::ApiVersions, 0, 4),
        (ApiKey::CreateTopics, 0, 7),
        (ApiKey::DeleteTopics, 1, 6),
        (ApiKey::DeleteRecords, 0, 2),
        (ApiKey::InitProducerId, 0, 5),
        (ApiKey::OffsetForLeaderEpoch, 2, 4),
        (ApiKey::DescribeConfigs, 0, 4),
        (ApiKey::AlterConfigs, 0, 2),
        (ApiKey::DeleteGroups, 0, 2),
        (ApiKey::CreatePartitions, 0, 3),
        (ApiKey::AlterPartitionReassignments, 0, 1),
        (ApiKey::ListPartitionReassignments, 0, 0),
        (ApiKey::ElectLeaders, 0, 2),
        (ApiKey::DescribeLogDirs, 1, 4),
        (ApiKey::IncrementalAlterConfigs, 0, 1),
        (ApiKey::DescribeCluster, 0, 2),
        (ApiKey::DescribeProducers, 0, 0),
        (ApiKey::ConsumerGroupHeartbeat, 0, 1),
        (ApiKey::ConsumerGroupDescribe, 0, 1),
        (ApiKey::DescribeTopicPartitions, 0, 0),
        (ApiKey::AddPartitionsToTxn, 0, 4),
        (ApiKey::AddOffsetsToTxn, 0, 3),
        (ApiKey::TxnOffsetCommit, 0, 3),
        (ApiKey::EndTxn, 0, 4),
        (ApiKey::DescribeTransactions, 0, 0),
        (ApiKey::ListTransactions, 0, 1),
        // Answered by the listener itself (`runnel_kafka::auth`). v0 is
        // listed because librdkafka requires it to enable SASL at all, but
        // every current client then takes v1 with SaslAuthenticate; a v0
        // handshake (raw tokens outside Kafka frames) is refused.
        (ApiKey::SaslHandshake, 0, 1),
        (ApiKey::SaslAuthenticate, 0, 2),
        (ApiKey::DescribeUserScramCredentials, 0, 0),
        (ApiKey::AlterUserScramCredentials, 0, 0),
        (ApiKey::DescribeAcls, 1, 3),
        (ApiKey::CreateAcls, 1, 3),
        (ApiKey::DeleteAcls, 1, 3),
        (ApiKey::DescribeClientQuotas, 0, 1),
        (ApiKey::AlterClientQuotas, 0, 1),
    ])
    .with_features(&[
        // The KRaft metadata versions of Kafka 3.3 to 4.1, at 4.1's.
        Feature {
            name: "metadata.version",
            min: 7,
            max: 27,
            finalized: 27,
        },
        // KIP-848's consumer group protocol is on.
        Feature {
            name: "group.version",
            min: 0,
            max: 1,
            finalized: 1,
        },
        // Transactions as before KIP-890 part 2: transaction.version stays
        // 0 (not finalized), so clients keep one producer epoch across
        // transactions and add partitions themselves; brokers verify
        // transactional produces with the coordinator (part 1).
        Feature {
            name: "transaction.version",
            min: 0,
            max: 0,
            finalized: 0,
        },
    ])
}

/// Answers Kafka requests arriving on one of the broker's Kafka listeners.
#[derive(Debug)]
pub struct KafkaApi {
    broker: Arc<Broker>,
    metadata: Arc<MetadataCache>,
    controller: Controller,
    /// Which listener: decides which addresses Metadata hands out.
    listener: Listener,
    broker_id: i32,
    sessions: sessions::FetchSessions,
    authorizer: Authorizer,
    quotas: Arc<Quotas>,
}

impl KafkaApi {
    /// The Kafka API of `broker` on `listener`.
    pub fn new(
        broker: Arc<Broker>,
        metadata: Arc<MetadataCache>,
        controller: Controller,
        listener: Listener,
        broker_id: i32,
        authorizer: Authorizer,
        quotas: Arc<Quotas>,
    ) -> KafkaApi {
        KafkaApi {
            broker,
            metadata,
            controller,
            listener,
            broker_id,
            sessions: sessions::FetchSessions::new(sessions::MAX_SESSIONS),
            authorizer,
            quotas,
        }
    }

    /// The endpoint name clients on this listener reach brokers by.
    fn endpoint_name(&self) -> &'static str {
        match self.listener {
            Listener::Internal => KAFKA_ENDPOINT,
            Listener::External => KAFKA_EXTERNAL_ENDPOINT,
        }
    }

    /// Where a client on this listener reaches a node with `endpoints`
    /// (a node without an external Kafka endpoint is shown by its internal one).
    fn kafka_address(&self, endpoints: &[Endpoint]) -> Option<(String, i32)> {
        let find = |name: &str| endpoints.iter().find(|e| e.name == name);
        find(self.endpoint_name())
            .or_else(|| find(KAFKA_ENDPOINT))
            .map(|e| (e.host.clone(), e.port as i32))
    }

    /// Waits (at most [`PROPAGATION_WAIT`]) until `done` holds of this
    /// broker's metadata, so that what a client just changed through this
    /// broker (credentials, ACLs) is in force for its next request.
    async fn wait_until_applied(&self, done: impl Fn() -> bool) {
        let mut applied = self.metadata.subscribe_applied();
        let _ = tokio::time::timeout(PROPAGATION_WAIT, async {
            while !done() {
                if applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// This broker's own address on this listener.
    fn own_address(&self) -> Option<(String, i32)> {
        self.metadata.with(|image| {
            image
                .brokers
                .get(&self.broker_id)
                .and_then(|b| self.kafka_address(&b.endpoints))
        })
    }
}

impl Handler for KafkaApi {
    async fn handle(&self, request: Request, session: Arc<Session>) -> Reply {
        let client_id = request
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let client = Client {
            user: &session.principal.name,
            client_id: &client_id,
        };
        // `request_percentage`: the time spent handling, when any is set.
        if !self.quotas.any(QuotaKey::RequestPercentage) {
            return self.dispatch(request, &session, client).await;
        }
        let spent = AtomicU64::new(0);
        let reply = Timed::new(self.dispatch(request, &session, client), &spent).await;
        let spent = Duration::from_nanos(spent.load(std::sync::atomic::Ordering::Relaxed));
        reply.throttled(self.quotas.record_time(client, spent))
    }
}

impl KafkaApi {
    async fn dispatch(&self, request: Request, session: &Session, client: Client<'_>) -> Reply {
        let v = request.version;
        let caller = &self
            .authorizer
            .caller(session, request.header.request_api_key);
        Reply::Response(Box::new(match request.body {
            RequestKind::Produce(r) => return self.produce(r, v, caller, client).await,
            RequestKind::Fetch(r) => {
                return throttled(self.fetch(r, v, caller, client).await, ResponseKind::Fetch);
            }
            RequestKind::ListOffsets(r) => {
                ResponseKind::ListOffsets(self.list_offsets(r, v, caller).await)
            }
            RequestKind::Metadata(r) => ResponseKind::Metadata(self.metadata(r, v, caller).await),
            RequestKind::OffsetForLeaderEpoch(r) => {
                ResponseKind::OffsetForLeaderEpoch(self.offset_for_leader_epoch(r, caller).await)
            }
            RequestKind::InitProducerId(r) => {
                ResponseKind::InitProducerId(self.init_producer_id(r, v, caller).await)
            }
            RequestKind::DescribeCluster(r) => {
                ResponseKind::DescribeCluster(self.describe_cluster(r, caller))
            }
            RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
                self.describe_topic_partitions(r, caller).await,
            ),
            RequestKind::DeleteRecords(r) => {
                ResponseKind::DeleteRecords(self.delete_records(r, caller).await)
            }
            RequestKind::DescribeProducers(r) => {
                ResponseKind::DescribeProducers(self.describe_producers(r, caller))
            }
            RequestKind::FindCoordinator(r) => {
                ResponseKind::FindCoordinator(self.find_coordinator(r, v, caller))
            }
            RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(
                self.join_group(r, v, client.client_id.to_owned(), caller)
                    .await,
            ),
            RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(self.sync_group(r, caller).await),
            RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(self.heartbeat(r, caller).await),
            RequestKind::LeaveGroup(r) => {
                ResponseKind::LeaveGroup(self.leave_group(r, v, caller).await)
            }
            RequestKind::OffsetCommit(r) => {
                ResponseKind::OffsetCommit(self.offset_commit(r, caller).await)
            }
            RequestKind::OffsetFetch(r) => {
                ResponseKind::OffsetFetch(self.offset_fetch(r, v, caller).await)
            }
            RequestKind::ListGroups(r) => {
                ResponseKind::ListGroups(self.list_groups(r, caller).await)
            }
            RequestKind::DescribeGroups(r) => {
                ResponseKind::DescribeGroups(self.describe_groups(r, v, caller).await)
            }
            RequestKind::ConsumerGroupHeartbeat(r) => {
                ResponseKind::ConsumerGroupHeartbeat(self.consumer_group_heartbeat(r, caller).await)
            }
            RequestKind::ConsumerGroupDescribe(r) => {
                ResponseKind::ConsumerGroupDescribe(self.consumer_group_describe(r, caller).await)
            }
            RequestKind::DeleteGroups(r) => {
                ResponseKind::DeleteGroups(self.delete_groups(r, caller).await)
            }
            RequestKind::AddPartitionsToTxn(r) => {
                ResponseKind::AddPartitionsToTxn(self.add_partitions_to_txn(r, v, caller).await)
            }
            RequestKind::EndTxn(r) => ResponseKind::EndTxn(self.end_txn(r, v, caller).await),
            RequestKind::AddOffsetsToTxn(r) => {
                ResponseKind::AddOffsetsToTxn(self.add_offsets_to_txn(r, v, caller).await)
            }
            RequestKind::TxnOffsetCommit(r) => {
                ResponseKind::TxnOffsetCommit(self.txn_offset_commit(r, v, caller).await)
            }
            RequestKind::DescribeTransactions(r) => {
                ResponseKind::DescribeTransactions(self.describe_transactions(r, caller).await)
            }
            RequestKind::ListTransactions(r) => {
                ResponseKind::ListTransactions(self.list_transactions(r, caller).await)
            }
            RequestKind::CreateTopics(r) => {
                return throttled(
                    self.create_topics(r, v, caller, client).await,
                    ResponseKind::CreateTopics,
                );
            }
            RequestKind::DeleteTopics(r) => {
                return throttled(
                    self.delete_topics(r, v, caller, client).await,
                    ResponseKind::DeleteTopics,
                );
            }
            RequestKind::CreatePartitions(r) => {
                return throttled(
                    self.create_partitions(r, v, caller, client).await,
                    ResponseKind::CreatePartitions,
                );
            }
            RequestKind::AlterPartitionReassignments(r) => {
                ResponseKind::AlterPartitionReassignments(
                    self.alter_partition_reassignments(r, caller).await,
                )
            }
            RequestKind::DescribeLogDirs(r) => {
                ResponseKind::DescribeLogDirs(self.describe_log_dirs(r, caller).await)
            }
            RequestKind::ElectLeaders(r) => {
                ResponseKind::ElectLeaders(self.elect_leaders(r, v, caller).await)
            }
            RequestKind::ListPartitionReassignments(r) => ResponseKind::ListPartitionReassignments(
                self.list_partition_reassignments(r, caller).await,
            ),
            RequestKind::DescribeConfigs(r) => {
                ResponseKind::DescribeConfigs(self.describe_configs(r, caller).await)
            }
            RequestKind::AlterConfigs(r) => {
                ResponseKind::AlterConfigs(self.alter_configs(r, caller).await)
            }
            RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
                self.incremental_alter_configs(r, caller).await,
            ),
            RequestKind::DescribeUserScramCredentials(r) => {
                ResponseKind::DescribeUserScramCredentials(
                    self.describe_user_scram_credentials(r, caller),
                )
            }
            RequestKind::AlterUserScramCredentials(r) => ResponseKind::AlterUserScramCredentials(
                self.alter_user_scram_credentials(r, caller).await,
            ),
            RequestKind::CreateAcls(r) => {
                ResponseKind::CreateAcls(self.create_acls(r, caller).await)
            }
            RequestKind::DescribeAcls(r) => {
                ResponseKind::DescribeAcls(self.describe_acls(r, caller))
            }
            RequestKind::DeleteAcls(r) => {
                ResponseKind::DeleteAcls(self.delete_acls(r, caller).await)
            }
            RequestKind::DescribeClientQuotas(r) => {
                ResponseKind::DescribeClientQuotas(self.describe_client_quotas(r, caller))
            }
            RequestKind::AlterClientQuotas(r) => {
                ResponseKind::AlterClientQuotas(self.alter_client_quotas(r, caller).await)
            }
            other => {
                // `versions()` lists only what is handled above, so the
                // decoder refuses anything else before it gets here.
                tracing::error!(request = ?std::mem::discriminant(&other), "a Kafka request without a handler");
                return Reply::Close;
            }
        }))
    }
}

/// A handler's answer and the time its client must wait, as a reply.
fn throttled<T>((response, throttle): (T, Duration), kind: fn(T) -> ResponseKind) -> Reply {
    Reply::Response(Box::new(kind(response))).throttled(throttle)
}

/// How long a change made through this broker waits for its records to
/// come back to it.
const PROPAGATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Every operation Kafka defines on a topic.
const TOPIC_OPERATIONS: &[Operation] = &[
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];
/// Every operation Kafka defines on a group.
const GROUP_OPERATIONS: &[Operation] = &[Operation::Read, Operation::Describe, Operation::Delete];
/// Every operation Kafka defines on the cluster.
const CLUSTER_OPERATIONS: &[Operation] = &[
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];

/// An authorized-operations field: the operations of `ops` the caller may
/// do on the resource (bit n for operation code n) when the client asked
/// for it, else Kafka's "not asked" (`i32::MIN`).
fn authorized(
    caller: &Caller<'_>,
    requested: bool,
    resource_type: ResourceType,
    name: &str,
    ops: &[Operation],
) -> i32 {
    if !requested {
        return i32::MIN;
    }
    ops.iter()
        .filter(|op| caller.sees(**op, resource_type, name))
        .fold(0, |bits, op| bits | 1 << op.code())
}

/// A Kafka error code from Runnel's (the same numbers).
fn code(e: ErrorCode) -> i16 {
    e as i32 as i16
}

/// The Kafka error code a failure is answered with: Runnel's code (the same
/// numbers), or Kafka's own where Runnel has none. The one place the Kafka
/// listener maps a [`Failure`], with [`error_message`].
fn error_code(failure: &Failure) -> i16 {
    match failure {
        Failure::UnknownTopicId { .. } => UNKNOWN_TOPIC_ID,
        other => code(other.code()),
    }
}

/// The message a failure is answered with.
fn error_message(failure: &Failure) -> Option<StrBytes> {
    Some(wire(failure.to_string()))
}

/// A Kafka error code from a raw Runnel code field.
fn raw_code(e: i32) -> i16 {
    i16::try_from(e).unwrap_or(-1)
}

/// A string for the wire.
fn wire(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// An optional message for the wire: `None` when empty.
fn message(s: String) -> Option<StrBytes> {
    (!s.is_empty()).then(|| StrBytes::from_string(s))
}

/// A topic name for the wire.
fn topic_name(s: &str) -> TopicName {
    TopicName(wire(s))
}

/// Kafka's UNKNOWN_TOPIC_ID: a topic named by an id no topic has.
const UNKNOWN_TOPIC_ID: i16 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_answer_with_kafkas_codes() {
        let unknown_id = Failure::UnknownTopicId {
            id: "5a8d7e0c-0000-0000-0000-000000000001".into(),
        };
        assert_eq!(error_code(&unknown_id), UNKNOWN_TOPIC_ID);
        assert_eq!(
            error_message(&unknown_id).as_deref(),
            Some("no topic has id 5a8d7e0c-0000-0000-0000-000000000001")
        );
        assert_eq!(
            error_code(&Failure::ShuttingDown),
            ErrorCode::NotLeaderOrFollower as i16
        );
    }
}
