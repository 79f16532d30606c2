//! Why a broker request failed, as one typed error: each [`Failure`] names
//! what went wrong with the values that explain it, and [`Failure::code`]
//! is the one place it becomes the stable code clients see (Runnel's codes
//! are Kafka's numbers). The gRPC layer (`grpc.rs`) and the Kafka layer
//! (`kafka/mod.rs`) each turn it into their answers in one place.

use runnel_common::errors::is_retriable;
use runnel_common::topics::TopicNameError;
use runnel_log::LogError;
use runnel_proto::common::v1::ErrorCode;
use runnel_records::batch::BatchError;
use runnel_records::batch::legacy;

use crate::io::IoStopped;

/// Why a request (or one partition's part of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The topic does not exist.
    #[error("topic {topic} does not exist")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },
    /// The topic exists but has no such partition.
    #[error("topic {topic} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        partitions: usize,
    },
    /// No topic has this id (Kafka's UNKNOWN_TOPIC_ID).
    #[error("no topic has id {id}")]
    UnknownTopicId {
        /// The id asked for, as the request gave it.
        id: String,
    },
    /// The name is not a valid topic name.
    #[error(transparent)]
    InvalidTopic(#[from] TopicNameError),
    /// Another broker leads the partition.
    #[error("broker {broker} does not lead {topic}-{partition}; the leader is {leader}")]
    NotLeader {
        /// This broker.
        broker: i32,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The leader the metadata names (-1: none).
        leader: i32,
    },
    /// The broker started and has not caught up with the metadata log yet:
    /// a topic it does not know may exist (Kafka's brokers do not serve
    /// requests until then; a retriable code tells clients to ask again).
    #[error(
        "broker {broker} is still catching up with the cluster's metadata; {topic} is not known to it yet"
    )]
    MetadataCatchingUp {
        /// This broker.
        broker: i32,
        /// The topic asked for.
        topic: String,
    },
    /// This broker leads the partition but has not opened its log yet.
    #[error("{topic}-{partition} is still being opened on broker {broker}")]
    PartitionOpening {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// This broker.
        broker: i32,
    },
    /// acks=all: leadership moved while the write waited for the ISR.
    #[error(
        "{topic}-{partition}: leadership moved before the write was replicated (leader now {leader})"
    )]
    LeadershipMoved {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The leader now (-1: none).
        leader: i32,
    },
    /// acks=all: the broker stopped while the write waited for the ISR.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// acks=all: too few in-sync replicas to take the write.
    #[error(
        "{topic}-{partition} has {isr} in-sync replicas, fewer than min.insync.replicas {min_insync_replicas}"
    )]
    NotEnoughReplicas {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// In-sync replicas now.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min_insync_replicas: i32,
    },
    /// acks=all: written, but the ISR shrank below `min.insync.replicas`.
    #[error(
        "{topic}-{partition}: the ISR shrank to {isr} replicas, fewer than min.insync.replicas {min_insync_replicas}"
    )]
    NotEnoughReplicasAfterAppend {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// In-sync replicas now.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min_insync_replicas: i32,
    },
    /// acks=all: the ISR did not have the write within the request's timeout.
    #[error("{topic}-{partition}: not replicated to the ISR {isr:?} within {timeout_ms} ms")]
    ReplicationTimedOut {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The ISR waited for.
        isr: Vec<i32>,
        /// The request's timeout.
        timeout_ms: u128,
    },
    /// The request names a leader epoch older than the current one.
    #[error("the request names leader epoch {requested} but the current one is {current}")]
    FencedLeaderEpoch {
        /// The epoch the request names.
        requested: i32,
        /// The current epoch.
        current: i32,
    },
    /// The request names a leader epoch newer than this broker knows.
    #[error("the request names leader epoch {requested} but the current one is {current}")]
    UnknownLeaderEpoch {
        /// The epoch the request names.
        requested: i32,
        /// The current epoch.
        current: i32,
    },
    /// A fetching follower names a registration that is not its current one.
    #[error(
        "replica {replica} fetches with broker epoch {epoch}, its registration is {registered}{}",
        fenced_note(*.fenced)
    )]
    StaleReplicaEpoch {
        /// The follower.
        replica: i32,
        /// The broker epoch it names.
        epoch: i64,
        /// Its registration's broker epoch.
        registered: i64,
        /// Whether that registration is fenced.
        fenced: bool,
    },
    /// A fetching follower is not a registered broker.
    #[error("replica {replica} is not a registered broker")]
    UnregisteredReplica {
        /// The follower.
        replica: i32,
    },
    /// A fetching follower holds no replica of the partition.
    #[error("broker {replica} is not a replica of {topic}-{partition}")]
    NotAReplica {
        /// The follower.
        replica: i32,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A fetch offset outside the log.
    #[error(
        "offset {offset} is out of range for {topic}-{partition} (log start {log_start}, log end {log_end})"
    )]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The log start.
        log_start: i64,
        /// The log end.
        log_end: i64,
    },
    /// DeleteRecords below offset 0.
    #[error("cannot delete records before offset {offset}")]
    NegativeDeleteOffset {
        /// The offset asked for.
        offset: i64,
    },
    /// The log refused or failed (see [`Failure::code`] for each case).
    #[error(transparent)]
    Log(LogError),
    /// The I/O threads are gone (the broker is stopping).
    #[error(transparent)]
    Stopped(#[from] IoStopped),
    /// The blocking task reading a fetch failed.
    #[error(transparent)]
    ReadTask(tokio::task::JoinError),
    /// Produce v0-2: a message set of magic 0 or 1 that cannot be read.
    #[error(transparent)]
    CorruptMessageSet(legacy::LegacyError),
    /// Produce: acks is not 0, 1 or -1.
    #[error("acks={acks} is not one of 0, 1, -1")]
    InvalidRequiredAcks {
        /// The acks asked for.
        acks: i16,
    },
    /// Produce v3+: a message set of magic 0 or 1.
    #[error(
        "Produce requests with version 3 and above are only allowed to contain record batches with magic version 2"
    )]
    OldMessageFormat,
    /// Produce: no record batch for a partition.
    #[error("a produce request must carry a record batch per partition")]
    NoRecordBatch,
    /// Produce v3+: more than one batch for a partition.
    #[error(
        "Produce requests with version 3 and above must contain exactly one record batch per partition"
    )]
    ManyRecordBatches,
    /// Produce below v7: zstd (those clients could not read it back).
    #[error("Produce requests with version {version} are not allowed to use ZStandard compression")]
    ZstdBeforeV7 {
        /// The Produce version.
        version: i16,
    },
    /// A transactional batch for a partition its
    /// transaction does not hold (KIP-890: verified with the coordinator).
    #[error(
        "producer {producer_id} of transactional id {transactional_id:?} has not added {topic}-{partition} to its transaction"
    )]
    PartitionNotInTransaction {
        /// The producer's transactional id.
        transactional_id: String,
        /// Its producer id.
        producer_id: i64,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// This broker is not in the metadata it has applied yet.
    #[error("broker {broker} is not registered yet")]
    BrokerNotRegistered {
        /// This broker.
        broker: i32,
    },
    /// The controller handed out no block of producer ids.
    #[error("no producer ids from the controller: {message}")]
    NoProducerIds {
        /// The controller's code.
        code: ErrorCode,
        /// The controller's message.
        message: String,
    },
    /// The block of producer ids the controller handed out is empty.
    #[error("empty producer id block")]
    EmptyProducerIdBlock,
    /// FindCoordinator for an empty group id.
    #[error("the group id is empty")]
    EmptyGroupId,
    /// FindCoordinator for an empty transactional id.
    #[error("the transactional id is empty")]
    EmptyTransactionalId,
    /// No live coordinator owns the group's partition of `__consumer_offsets`.
    #[error("no live coordinator owns group {group}'s partition of __consumer_offsets yet")]
    NoCoordinator {
        /// The group.
        group: String,
    },
    /// The coordinator owning the group registered no gRPC endpoint.
    #[error("coordinator {coordinator} (owner of partition {partition}) has no gRPC endpoint")]
    CoordinatorWithoutEndpoint {
        /// The coordinator.
        coordinator: i32,
        /// The partition of `__consumer_offsets` it owns.
        partition: i32,
    },
    /// Kafka listener: no live coordinator to relay the group's request to.
    #[error("no live coordinator owns group {group} yet")]
    NoCoordinatorToRelay {
        /// The group.
        group: String,
    },
    /// Kafka listener: no live coordinator serves the transactional id yet.
    #[error("no live coordinator serves transactional id {transactional_id} yet")]
    NoTransactionCoordinator {
        /// The transactional id.
        transactional_id: String,
    },
    /// Kafka listener: the coordinator's address is unusable.
    #[error("coordinator {addr}: {source}")]
    CoordinatorUnreachable {
        /// Its address.
        addr: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// Kafka listener: the coordinator refused or failed a relayed request.
    #[error("{message}")]
    Coordinator {
        /// The code it answered with.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// Kafka listener: the controller refused or failed a forwarded request.
    #[error("{message}")]
    Controller {
        /// The code it answered with.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// Kafka listener: the controller's answer left out the resource asked for.
    #[error("no answer for the resource")]
    NoAnswer,
    /// Kafka listener: FindCoordinator answering for itself before it is registered.
    #[error("this broker is not registered yet")]
    NotRegisteredYet,
    /// A transaction marker whose producer epoch does not fit Kafka's int16.
    #[error("transaction marker for producer {producer_id} has epoch {epoch}, outside 0..=32767")]
    InvalidMarkerEpoch {
        /// The producer.
        producer_id: i64,
        /// The epoch the marker named.
        epoch: i32,
    },
    /// Kafka listener: a FindCoordinator key type other than group or transaction.
    #[error("coordinator key type {key_type} is not supported")]
    UnsupportedKeyType {
        /// The key type.
        key_type: i8,
    },
    /// Kafka listener: a KIP-848 heartbeat subscribing by regular expression.
    #[error(
        "subscribing by regular expression is not supported with group.protocol=consumer; name the topics"
    )]
    RegexSubscription,
    /// Kafka listener: a config resource type other than topic or broker.
    #[error("config resource type {resource_type} is not supported (2: topic, 4: broker)")]
    UnsupportedConfigResource {
        /// The resource type.
        resource_type: i8,
    },
    /// The authorizer denied the caller an operation on a resource.
    #[error("Not authorized to {operation} {resource_type} {name}")]
    Unauthorized {
        /// The operation (`WRITE`).
        operation: runnel_common::acl::Operation,
        /// The resource's type.
        resource_type: runnel_common::acl::ResourceType,
        /// The resource's name.
        name: String,
    },
    /// Kafka listener: an IncrementalAlterConfigs operation other than 0-3.
    #[error("config operation {operation} is not one of 0-3")]
    UnknownConfigOperation {
        /// The operation.
        operation: i8,
    },
}

fn fenced_note(fenced: bool) -> &'static str {
    if fenced { " (fenced)" } else { "" }
}

impl Failure {
    /// The authorizer's denial of `operation` on a resource.
    pub fn unauthorized(
        operation: runnel_common::acl::Operation,
        resource_type: runnel_common::acl::ResourceType,
        name: &str,
    ) -> Failure {
        Failure::Unauthorized {
            operation,
            resource_type,
            name: name.to_owned(),
        }
    }

    /// The code clients get for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Failure::UnknownTopic { .. }
            | Failure::UnknownPartition { .. }
            // Kafka's UNKNOWN_TOPIC_ID has no Runnel code; the Kafka layer answers it.
            | Failure::UnknownTopicId { .. } => ErrorCode::UnknownTopicOrPartition,
            Failure::InvalidTopic(_) => ErrorCode::InvalidTopicException,
            Failure::Unauthorized { resource_type, .. } => {
                use runnel_common::acl::ResourceType as R;
                match resource_type {
                    R::Topic => ErrorCode::TopicAuthorizationFailed,
                    R::Group => ErrorCode::GroupAuthorizationFailed,
                    R::TransactionalId => ErrorCode::TransactionalIdAuthorizationFailed,
                    _ => ErrorCode::ClusterAuthorizationFailed,
                }
            }
            Failure::NotLeader { .. }
            | Failure::LeadershipMoved { .. }
            | Failure::ShuttingDown
            | Failure::NotAReplica { .. } => ErrorCode::NotLeaderOrFollower,
            Failure::PartitionOpening { .. } | Failure::MetadataCatchingUp { .. } => {
                ErrorCode::LeaderNotAvailable
            }
            Failure::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            Failure::NotEnoughReplicasAfterAppend { .. } => ErrorCode::NotEnoughReplicasAfterAppend,
            Failure::ReplicationTimedOut { .. } => ErrorCode::RequestTimedOut,
            Failure::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            Failure::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            Failure::StaleReplicaEpoch { .. } | Failure::UnregisteredReplica { .. } => {
                ErrorCode::StaleBrokerEpoch
            }
            Failure::OffsetOutOfRange { .. } | Failure::NegativeDeleteOffset { .. } => {
                ErrorCode::OffsetOutOfRange
            }
            Failure::Log(e) => log_code(e),
            Failure::Stopped(_) => ErrorCode::KafkaStorageError,
            Failure::ReadTask(_) => ErrorCode::UnknownServerError,
            Failure::CorruptMessageSet(_) => ErrorCode::CorruptMessage,
            Failure::InvalidRequiredAcks { .. } => ErrorCode::InvalidRequiredAcks,
            Failure::OldMessageFormat | Failure::NoRecordBatch | Failure::ManyRecordBatches => {
                ErrorCode::InvalidRecord
            }
            Failure::ZstdBeforeV7 { .. } => ErrorCode::UnsupportedCompressionType,
            Failure::PartitionNotInTransaction { .. } => ErrorCode::InvalidTxnState,
            Failure::BrokerNotRegistered { .. } | Failure::EmptyProducerIdBlock => {
                ErrorCode::BrokerNotAvailable
            }
            // Whatever went wrong with the controller, the producer may retry.
            Failure::NoProducerIds { code, .. } if is_retriable(*code) => *code,
            Failure::NoProducerIds { .. } => ErrorCode::BrokerNotAvailable,
            Failure::EmptyGroupId => ErrorCode::InvalidGroupId,
            Failure::EmptyTransactionalId => ErrorCode::InvalidRequest,
            Failure::NoCoordinator { .. }
            | Failure::CoordinatorWithoutEndpoint { .. }
            | Failure::NoCoordinatorToRelay { .. }
            | Failure::NoTransactionCoordinator { .. }
            | Failure::CoordinatorUnreachable { .. }
            | Failure::NotRegisteredYet => ErrorCode::CoordinatorNotAvailable,
            // A transport failure reads as COORDINATOR_NOT_AVAILABLE, which
            // sends the client to FindCoordinator.
            Failure::Coordinator {
                code: ErrorCode::UnknownServerError | ErrorCode::LeaderNotAvailable,
                ..
            } => ErrorCode::CoordinatorNotAvailable,
            Failure::Coordinator { code, .. } | Failure::Controller { code, .. } => *code,
            Failure::NoAnswer => ErrorCode::UnknownServerError,
            Failure::UnsupportedKeyType { .. }
            | Failure::InvalidMarkerEpoch { .. }
            | Failure::RegexSubscription
            | Failure::UnsupportedConfigResource { .. }
            | Failure::UnknownConfigOperation { .. } => ErrorCode::InvalidRequest,
        }
    }

    /// A refusal the controller answered with, passed on.
    pub fn from_controller(status: &tonic::Status) -> Failure {
        Failure::Controller {
            code: runnel_common::errors::code_of(status),
            message: status.message().to_owned(),
        }
    }
}

impl From<LogError> for Failure {
    fn from(e: LogError) -> Failure {
        if log_code(&e) == ErrorCode::KafkaStorageError {
            tracing::error!(error = %e, "storage error");
        }
        Failure::Log(e)
    }
}

/// The code for a log error.
fn log_code(e: &LogError) -> ErrorCode {
    match e {
        LogError::InvalidBatch { source, .. } => match source {
            BatchError::CrcMismatch { .. }
            | BatchError::Truncated { .. }
            | BatchError::InvalidLength { .. }
            | BatchError::UnsupportedMagic { .. } => ErrorCode::CorruptMessage,
            _ => ErrorCode::InvalidRecord,
        },
        LogError::RecordTooLarge { .. } => ErrorCode::MessageTooLarge,
        LogError::RejectedRecords {
            invalid_timestamp: true,
            ..
        } => ErrorCode::InvalidTimestamp,
        LogError::RejectedRecords { .. }
        | LogError::ControlBatchFromProducer { .. }
        | LogError::EmptyAppend
        | LogError::InvalidProducerState { .. } => ErrorCode::InvalidRecord,
        LogError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
        LogError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
        LogError::InvalidTxnState { .. } => ErrorCode::InvalidTxnState,
        LogError::TransactionCoordinatorFenced { .. } => ErrorCode::TransactionCoordinatorFenced,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::Io { .. } | LogError::Corrupt { .. } => ErrorCode::KafkaStorageError,
        LogError::InvalidConfig { .. } | LogError::UnknownConfig { .. } => ErrorCode::InvalidConfig,
        LogError::NonMonotonicOffset { .. } | LogError::CleaningAborted { .. } => {
            ErrorCode::UnknownServerError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients (and tests) read these codes and messages: they are the ones
    /// the broker answered with before failures were typed.
    #[test]
    fn each_failure_keeps_its_code_and_message() {
        let cases = [
            (
                Failure::UnknownTopic {
                    topic: "orders".into(),
                },
                ErrorCode::UnknownTopicOrPartition,
                "topic orders does not exist",
            ),
            (
                Failure::UnknownPartition {
                    topic: "orders".into(),
                    partition: 7,
                    partitions: 3,
                },
                ErrorCode::UnknownTopicOrPartition,
                "topic orders has no partition 7 (it has 3)",
            ),
            (
                Failure::NotLeader {
                    broker: 1,
                    topic: "orders".into(),
                    partition: 0,
                    leader: 2,
                },
                ErrorCode::NotLeaderOrFollower,
                "broker 1 does not lead orders-0; the leader is 2",
            ),
            (
                Failure::PartitionOpening {
                    topic: "orders".into(),
                    partition: 0,
                    broker: 1,
                },
                ErrorCode::LeaderNotAvailable,
                "orders-0 is still being opened on broker 1",
            ),
            (
                Failure::MetadataCatchingUp {
                    broker: 2,
                    topic: "orders".into(),
                },
                ErrorCode::LeaderNotAvailable,
                "broker 2 is still catching up with the cluster's metadata; orders is not known to it yet",
            ),
            (
                Failure::LeadershipMoved {
                    topic: "orders".into(),
                    partition: 0,
                    leader: 3,
                },
                ErrorCode::NotLeaderOrFollower,
                "orders-0: leadership moved before the write was replicated (leader now 3)",
            ),
            (
                Failure::ShuttingDown,
                ErrorCode::NotLeaderOrFollower,
                "the broker is shutting down",
            ),
            (
                Failure::NotEnoughReplicas {
                    topic: "orders".into(),
                    partition: 0,
                    isr: 1,
                    min_insync_replicas: 2,
                },
                ErrorCode::NotEnoughReplicas,
                "orders-0 has 1 in-sync replicas, fewer than min.insync.replicas 2",
            ),
            (
                Failure::NotEnoughReplicasAfterAppend {
                    topic: "orders".into(),
                    partition: 0,
                    isr: 1,
                    min_insync_replicas: 2,
                },
                ErrorCode::NotEnoughReplicasAfterAppend,
                "orders-0: the ISR shrank to 1 replicas, fewer than min.insync.replicas 2",
            ),
            (
                Failure::ReplicationTimedOut {
                    topic: "orders".into(),
                    partition: 0,
                    isr: vec![1, 2],
                    timeout_ms: 1500,
                },
                ErrorCode::RequestTimedOut,
                "orders-0: not replicated to the ISR [1, 2] within 1500 ms",
            ),
            (
                Failure::FencedLeaderEpoch {
                    requested: 3,
                    current: 5,
                },
                ErrorCode::FencedLeaderEpoch,
                "the request names leader epoch 3 but the current one is 5",
            ),
            (
                Failure::UnknownLeaderEpoch {
                    requested: 6,
                    current: 5,
                },
                ErrorCode::UnknownLeaderEpoch,
                "the request names leader epoch 6 but the current one is 5",
            ),
            (
                Failure::StaleReplicaEpoch {
                    replica: 2,
                    epoch: 10,
                    registered: 12,
                    fenced: true,
                },
                ErrorCode::StaleBrokerEpoch,
                "replica 2 fetches with broker epoch 10, its registration is 12 (fenced)",
            ),
            (
                Failure::StaleReplicaEpoch {
                    replica: 2,
                    epoch: 10,
                    registered: 12,
                    fenced: false,
                },
                ErrorCode::StaleBrokerEpoch,
                "replica 2 fetches with broker epoch 10, its registration is 12",
            ),
            (
                Failure::InvalidMarkerEpoch {
                    producer_id: 7,
                    epoch: 40_000,
                },
                ErrorCode::InvalidRequest,
                "transaction marker for producer 7 has epoch 40000, outside 0..=32767",
            ),
            (
                Failure::UnregisteredReplica { replica: 4 },
                ErrorCode::StaleBrokerEpoch,
                "replica 4 is not a registered broker",
            ),
            (
                Failure::NotAReplica {
                    replica: 4,
                    topic: "orders".into(),
                    partition: 0,
                },
                ErrorCode::NotLeaderOrFollower,
                "broker 4 is not a replica of orders-0",
            ),
            (
                Failure::OffsetOutOfRange {
                    offset: 99,
                    topic: "orders".into(),
                    partition: 0,
                    log_start: 10,
                    log_end: 50,
                },
                ErrorCode::OffsetOutOfRange,
                "offset 99 is out of range for orders-0 (log start 10, log end 50)",
            ),
            (
                Failure::NegativeDeleteOffset { offset: -7 },
                ErrorCode::OffsetOutOfRange,
                "cannot delete records before offset -7",
            ),
            (
                Failure::Stopped(IoStopped),
                ErrorCode::KafkaStorageError,
                "the I/O threads have stopped",
            ),
            (
                Failure::InvalidRequiredAcks { acks: 2 },
                ErrorCode::InvalidRequiredAcks,
                "acks=2 is not one of 0, 1, -1",
            ),
            (
                Failure::PartitionNotInTransaction {
                    transactional_id: "tx-1".into(),
                    producer_id: 7,
                    topic: "orders".into(),
                    partition: 2,
                },
                ErrorCode::InvalidTxnState,
                "producer 7 of transactional id \"tx-1\" has not added orders-2 to its transaction",
            ),
            (
                Failure::NoTransactionCoordinator {
                    transactional_id: "tx-1".into(),
                },
                ErrorCode::CoordinatorNotAvailable,
                "no live coordinator serves transactional id tx-1 yet",
            ),
            (
                Failure::ZstdBeforeV7 { version: 5 },
                ErrorCode::UnsupportedCompressionType,
                "Produce requests with version 5 are not allowed to use ZStandard compression",
            ),
            (
                Failure::NoProducerIds {
                    code: ErrorCode::NotController,
                    message: "not the controller".into(),
                },
                ErrorCode::NotController,
                "no producer ids from the controller: not the controller",
            ),
            (
                Failure::NoProducerIds {
                    code: ErrorCode::InvalidRequest,
                    message: "bad".into(),
                },
                ErrorCode::BrokerNotAvailable,
                "no producer ids from the controller: bad",
            ),
            (
                Failure::NoCoordinator { group: "g".into() },
                ErrorCode::CoordinatorNotAvailable,
                "no live coordinator owns group g's partition of __consumer_offsets yet",
            ),
            (
                Failure::Coordinator {
                    code: ErrorCode::UnknownServerError,
                    message: "transport error".into(),
                },
                ErrorCode::CoordinatorNotAvailable,
                "transport error",
            ),
            (
                Failure::Coordinator {
                    code: ErrorCode::UnknownMemberId,
                    message: "who?".into(),
                },
                ErrorCode::UnknownMemberId,
                "who?",
            ),
            (
                Failure::UnknownTopicId {
                    id: "5a8d7e0c-0000-0000-0000-000000000001".into(),
                },
                ErrorCode::UnknownTopicOrPartition,
                "no topic has id 5a8d7e0c-0000-0000-0000-000000000001",
            ),
        ];
        for (failure, code, message) in cases {
            assert_eq!(failure.code(), code, "{failure:?}");
            assert_eq!(failure.to_string(), message);
        }
    }

    #[test]
    fn log_errors_keep_their_codes_and_messages() {
        let e = LogError::OffsetOutOfRange {
            offset: 5,
            log_start: 10,
            log_end: 20,
        };
        let message = e.to_string();
        let failure = Failure::from(e);
        assert_eq!(failure.code(), ErrorCode::OffsetOutOfRange);
        assert_eq!(failure.to_string(), message);
        assert_eq!(
            Failure::from(LogError::EmptyAppend).code(),
            ErrorCode::InvalidRecord
        );
    }
}
