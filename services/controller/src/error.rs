//! The controller's errors, and the one place each maps to a stable
//! Runnel/Kafka [`ErrorCode`].
//!
//! A [`Refusal`] is a request the rules turn down (a topic that exists, an
//! ISR change from a stale epoch, ...): it answers one item of a batch
//! request in its result, or a whole request as a [`ControllerError`]. A
//! [`ControllerError`] is everything else that fails a call as a whole. Its
//! own module, so the pure rules (`election`) and the controller share the
//! types without depending on each other.

use openraft::BasicNode;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use runnel_common::metadata::ApplyError;
use runnel_common::topics::TopicNameError;
use runnel_log::TopicConfigError;
use runnel_proto::common::v1::ErrorCode;

use crate::store::StoreError;

/// A controller operation that failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record did not apply (a bug); nothing was written.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// This controller is not the active one (or cannot reach a majority
    /// of the quorum); the request changed nothing here.
    #[error("controller {node_id} is not the active controller{}", leader.as_ref().map(|(id, addr)| format!("; controller {id} at {addr} is")).unwrap_or_else(|| " and none is known".into()))]
    NotActive {
        /// This controller.
        node_id: i32,
        /// The active controller and its address, when known.
        leader: Option<(i32, String)>,
    },
    /// A committed metadata entry did not apply where it reached (every
    /// controller refuses it alike, so none of it is in any state).
    #[error("controller quorum: metadata entry {log_id} refused: {why}")]
    EntryRefused {
        /// The entry's place in the Raft log.
        log_id: openraft::LogId<u64>,
        /// Why it did not apply.
        why: String,
    },
    /// Raft failed (a storage error, or shutting down) during a
    /// membership change.
    #[error("controller quorum: {0}")]
    Raft(Box<RaftError<u64, ClientWriteError<u64, BasicNode>>>),
    /// A test's network fault cuts this controller off from the active one,
    /// so a call cannot be forwarded there.
    #[error("cut off from the active controller (network fault)")]
    ForwardingCut,
    /// The active controller's address does not make a gRPC endpoint.
    #[error("controller address {addr:?}: {source}")]
    PeerAddress {
        /// The address the quorum has for it.
        addr: String,
        /// Why it is not usable.
        source: tonic::transport::Error,
    },
    /// The task running a request panicked or was cancelled.
    #[error("{0}")]
    TaskFailed(#[from] tokio::task::JoinError),
    /// The request is refused; the refusal says why.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl ControllerError {
    /// The stable error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ControllerError::Store(_)
            | ControllerError::Apply(_)
            | ControllerError::EntryRefused { .. }
            | ControllerError::Raft(_)
            | ControllerError::PeerAddress { .. }
            | ControllerError::TaskFailed(_) => ErrorCode::UnknownServerError,
            ControllerError::NotActive { .. } | ControllerError::ForwardingCut => {
                ErrorCode::NotController
            }
            ControllerError::Refused(refusal) => refusal.code(),
        }
    }
}

/// Why the controller's rules turn a request (or one item of it) down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A broker registration with a negative id.
    #[error("broker id {broker_id} is negative")]
    NegativeBrokerId {
        /// The id asked for.
        broker_id: i32,
    },
    /// A coordinator registration with a negative id.
    #[error("coordinator id {coordinator_id} is negative")]
    NegativeCoordinatorId {
        /// The id asked for.
        coordinator_id: i32,
    },
    /// A controller added with a negative id.
    #[error("controller id {controller_id} is negative")]
    NegativeControllerId {
        /// The id asked for.
        controller_id: i32,
    },
    /// A broker asked in a registration that is not its current live one.
    #[error(
        "broker {broker_id} asked with epoch {epoch}, its registration has epoch {registered_epoch}{}",
        fenced_suffix(*.fenced)
    )]
    StaleBrokerEpoch {
        /// The broker.
        broker_id: i32,
        /// The epoch it asked with.
        epoch: i64,
        /// The epoch of its registration.
        registered_epoch: i64,
        /// Whether that registration is fenced.
        fenced: bool,
    },
    /// A broker asked without being registered.
    #[error("broker {broker_id} is not registered")]
    UnregisteredBroker {
        /// The broker.
        broker_id: i32,
    },
    /// One topic name listed twice in one request (refused every time, as Kafka does).
    #[error("topic {topic} appears more than once in the request")]
    TopicListedTwice {
        /// The topic.
        topic: String,
    },
    /// A topic name against Kafka's rules.
    #[error(transparent)]
    InvalidTopicName(#[from] TopicNameError),
    /// The topic to create exists.
    #[error("topic {topic} already exists")]
    TopicAlreadyExists {
        /// The topic.
        topic: String,
    },
    /// A new topic's name equals an existing one once '.' and '_' are alike
    /// (their metric names would collide).
    #[error("topic {topic} collides with an existing topic once '.' and '_' are treated alike")]
    TopicNameCollision {
        /// The topic.
        topic: String,
    },
    /// A topic created with fewer than one partition.
    #[error("partitions must be at least 1, not {partitions}")]
    TooFewPartitions {
        /// The count asked for.
        partitions: i32,
    },
    /// A topic created with a replication factor below one.
    #[error("replication factor must be at least 1, not {replication_factor}")]
    ReplicationFactorTooSmall {
        /// The replication factor asked for.
        replication_factor: i32,
    },
    /// More replicas asked for than there are live brokers to hold them.
    #[error(
        "replication factor {replication_factor} is larger than the {brokers} available brokers"
    )]
    NotEnoughBrokers {
        /// The replication factor.
        replication_factor: usize,
        /// Live brokers.
        brokers: usize,
    },
    /// A topic config key or value that is not acceptable.
    #[error(transparent)]
    InvalidConfig(#[from] TopicConfigError),
    /// The topic does not exist.
    #[error("topic {topic} does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// An internal topic cannot be deleted.
    #[error("{topic} is an internal topic and cannot be deleted")]
    InternalTopic {
        /// The topic.
        topic: String,
    },
    /// Fewer partitions asked for than the topic has.
    #[error(
        "topic {topic} has {current} partitions; partitions can only be added, not removed (asked for {requested})"
    )]
    PartitionsCannotShrink {
        /// The topic.
        topic: String,
        /// Its partitions now.
        current: i32,
        /// The count asked for.
        requested: i32,
    },
    /// As many partitions asked for as the topic has.
    #[error("topic {topic} already has {current} partitions")]
    PartitionCountUnchanged {
        /// The topic.
        topic: String,
        /// Its partitions now.
        current: i32,
    },
    /// Config changes to something other than a topic.
    #[error("only topic configs can be altered; broker configs are static")]
    AlterNonTopicConfigs,
    /// Configs described of something other than a topic.
    #[error("only topic configs can be described")]
    DescribeNonTopicConfigs,
    /// A config change whose operation is not one this controller knows.
    #[error("unknown alter operation")]
    UnknownAlterOp,
    /// An ISR change for a partition that does not exist.
    #[error("no partition {topic}-{partition}")]
    UnknownPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// An ISR change from a broker that is not the leader in that epoch.
    #[error(
        "{topic}-{partition}: broker {broker} in leader epoch {leader_epoch} asked, but the leader is {leader} in epoch {current_leader_epoch}"
    )]
    FencedLeaderEpoch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The broker asking.
        broker: i32,
        /// The leader epoch it asked in.
        leader_epoch: i32,
        /// The leader.
        leader: i32,
        /// The leader's epoch.
        current_leader_epoch: i32,
    },
    /// An ISR change based on an older partition epoch.
    #[error(
        "{topic}-{partition}: the change is based on partition epoch {partition_epoch}, the current one is {current_partition_epoch}"
    )]
    StalePartitionEpoch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The epoch the change is based on.
        partition_epoch: i32,
        /// The partition's epoch now.
        current_partition_epoch: i32,
    },
    /// An ISR without its leader.
    #[error("{topic}-{partition}: the ISR {isr:?} leaves out its leader")]
    IsrWithoutLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The ISR asked for.
        isr: Vec<i32>,
    },
    /// An ISR that lists a broker twice.
    #[error("{topic}-{partition}: broker {broker} appears twice in the ISR")]
    DuplicateIsrMember {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The broker.
        broker: i32,
    },
    /// An ISR member that is not a replica of the partition.
    #[error("{topic}-{partition}: broker {broker} is not a replica ({replicas:?})")]
    NotAReplica {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The broker.
        broker: i32,
        /// The partition's replicas.
        replicas: Vec<i32>,
    },
    /// A fenced broker cannot join an ISR (one already in it may stay).
    #[error("{topic}-{partition}: broker {broker} is fenced and cannot join the ISR")]
    FencedReplica {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The broker.
        broker: i32,
    },
    /// Every producer id is handed out.
    #[error("producer ids exhausted")]
    ProducerIdsExhausted,
    /// A controller to remove that is not a voter.
    #[error("controller {controller_id} is not a voter of the quorum")]
    NotAVoter {
        /// The controller.
        controller_id: i32,
    },
    /// The quorum's last controller cannot leave it.
    #[error("the last controller cannot be removed")]
    LastController,
    /// Raft refuses the membership change (one is already under way, say).
    #[error(transparent)]
    MembershipChange(#[from] ChangeMembershipError<u64>),
    /// A watch from a negative metadata offset.
    #[error("watch offset {from} is negative")]
    NegativeWatchOffset {
        /// The offset asked for.
        from: i64,
    },
    /// A manual assignment with no replica.
    #[error("The manual partition assignment includes an empty replica list.")]
    EmptyAssignment,
    /// A manual assignment naming a broker that never registered.
    #[error(
        "The manual partition assignment includes broker {broker}, but no such broker is registered."
    )]
    AssignmentToUnknownBroker {
        /// The broker.
        broker: i32,
    },
    /// A manual assignment naming a broker twice.
    #[error("The manual partition assignment includes the broker {broker} more than once.")]
    AssignmentRepeatsBroker {
        /// The broker.
        broker: i32,
    },
    /// Manual assignments of one topic with different replica counts.
    #[error(
        "The manual partition assignment includes a partition with {replicas} replica(s), but this is not consistent with previous partitions, which have {replication_factor} replica(s)."
    )]
    InconsistentAssignment {
        /// Replicas of the partition refused.
        replicas: usize,
        /// Replicas of the others.
        replication_factor: usize,
    },
    /// A new partition placed by hand on fenced brokers only.
    #[error(
        "All brokers specified in the manual partition assignment for partition {partition} are fenced or in controlled shutdown."
    )]
    AssignmentAllFenced {
        /// The partition.
        partition: i32,
    },
    /// A topic created with both counts and manual assignments.
    #[error(
        "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."
    )]
    AssignmentWithCounts,
    /// Manual assignments of a new topic that skip or repeat a partition.
    #[error("partitions should be a consecutive 0-based integer sequence")]
    AssignmentNotConsecutive,
    /// CreatePartitions with a number of assignments that is not the number of new partitions.
    #[error(
        "Attempted to add {additional} additional partition(s), but only {assignments} assignment(s) were specified."
    )]
    AssignmentCountMismatch {
        /// New partitions.
        additional: i32,
        /// Assignments given.
        assignments: usize,
    },
    /// Cancelling a reassignment where none runs.
    #[error("No ongoing reassignment for {topic}-{partition}.")]
    NoReassignmentInProgress {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// ElectLeaders for a partition already led by the replica it would elect.
    #[error("{topic}-{partition}: the leader is already the one an election would choose")]
    ElectionNotNeeded {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A preferred election whose preferred replica cannot lead.
    #[error("{topic}-{partition}: the preferred replica {preferred} is not in sync or not serving")]
    PreferredLeaderNotAvailable {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The preferred replica.
        preferred: i32,
    },
    /// An unclean election with no serving replica.
    #[error("{topic}-{partition}: no replica is serving")]
    EligibleLeadersNotAvailable {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A broker config resource that is not a broker id (nor "" for the default).
    #[error("broker config resource {name:?} is not a broker id")]
    InvalidBrokerResource {
        /// The resource name.
        name: String,
    },
    /// A broker config that cannot change at runtime.
    #[error(
        "Cannot update these configs dynamically: {key} (only leader.replication.throttled.rate and follower.replication.throttled.rate are dynamic)"
    )]
    StaticBrokerConfig {
        /// The key.
        key: String,
    },
    /// A dynamic broker config with a value out of range.
    #[error("invalid value {value:?} for broker config {key}: must be a number of bytes a second")]
    InvalidBrokerConfig {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A reassignment that changes the replica count when the request forbids it.
    #[error("The replication factor is changed from {from} to {to}")]
    ReplicationFactorChange {
        /// Replicas now.
        from: usize,
        /// Replicas asked for.
        to: usize,
    },
}

fn fenced_suffix(fenced: bool) -> &'static str {
    if fenced { " and is fenced" } else { "" }
}

impl Refusal {
    /// The stable error code for this refusal (Kafka's, where Kafka has one).
    pub fn code(&self) -> ErrorCode {
        use Refusal as R;
        match self {
            R::NegativeBrokerId { .. }
            | R::NegativeCoordinatorId { .. }
            | R::NegativeControllerId { .. }
            | R::TopicListedTwice { .. }
            | R::InternalTopic { .. }
            | R::AlterNonTopicConfigs
            | R::DescribeNonTopicConfigs
            | R::UnknownAlterOp
            | R::IsrWithoutLeader { .. }
            | R::DuplicateIsrMember { .. }
            | R::NotAVoter { .. }
            | R::LastController
            | R::MembershipChange(_)
            | R::NegativeWatchOffset { .. }
            | R::AssignmentWithCounts => ErrorCode::InvalidRequest,
            R::EmptyAssignment
            | R::AssignmentToUnknownBroker { .. }
            | R::AssignmentRepeatsBroker { .. }
            | R::InconsistentAssignment { .. }
            | R::AssignmentAllFenced { .. }
            | R::AssignmentNotConsecutive
            | R::AssignmentCountMismatch { .. } => ErrorCode::InvalidReplicaAssignment,
            R::NoReassignmentInProgress { .. } => ErrorCode::NoReassignmentInProgress,
            R::ElectionNotNeeded { .. } => ErrorCode::ElectionNotNeeded,
            R::PreferredLeaderNotAvailable { .. } => ErrorCode::PreferredLeaderNotAvailable,
            R::EligibleLeadersNotAvailable { .. } => ErrorCode::EligibleLeadersNotAvailable,
            R::ReplicationFactorChange { .. } => ErrorCode::InvalidReplicationFactor,
            R::StaleBrokerEpoch { .. } | R::UnregisteredBroker { .. } => {
                ErrorCode::StaleBrokerEpoch
            }
            R::InvalidTopicName(_) | R::TopicNameCollision { .. } => {
                ErrorCode::InvalidTopicException
            }
            R::TopicAlreadyExists { .. } => ErrorCode::TopicAlreadyExists,
            R::TooFewPartitions { .. }
            | R::PartitionsCannotShrink { .. }
            | R::PartitionCountUnchanged { .. } => ErrorCode::InvalidPartitions,
            R::ReplicationFactorTooSmall { .. } | R::NotEnoughBrokers { .. } => {
                ErrorCode::InvalidReplicationFactor
            }
            R::InvalidConfig(_) | R::StaticBrokerConfig { .. } | R::InvalidBrokerConfig { .. } => {
                ErrorCode::InvalidConfig
            }
            R::InvalidBrokerResource { .. } => ErrorCode::InvalidRequest,
            R::UnknownTopic { .. } | R::UnknownPartition { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            R::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            R::StalePartitionEpoch { .. } => ErrorCode::InvalidUpdateVersion,
            R::NotAReplica { .. } | R::FencedReplica { .. } => ErrorCode::IneligibleReplica,
            R::ProducerIdsExhausted => ErrorCode::UnknownServerError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients and tests read these codes and messages: they are the ones
    /// the controller answered with before refusals were typed.
    #[test]
    fn refusals_keep_their_codes_and_messages() {
        use ErrorCode as E;
        let t = || "orders".to_owned();
        let cases: Vec<(Refusal, ErrorCode, &str)> = vec![
            (
                Refusal::NegativeBrokerId { broker_id: -2 },
                E::InvalidRequest,
                "broker id -2 is negative",
            ),
            (
                Refusal::NegativeCoordinatorId { coordinator_id: -3 },
                E::InvalidRequest,
                "coordinator id -3 is negative",
            ),
            (
                Refusal::NegativeControllerId { controller_id: -4 },
                E::InvalidRequest,
                "controller id -4 is negative",
            ),
            (
                Refusal::StaleBrokerEpoch {
                    broker_id: 1,
                    epoch: 5,
                    registered_epoch: 7,
                    fenced: false,
                },
                E::StaleBrokerEpoch,
                "broker 1 asked with epoch 5, its registration has epoch 7",
            ),
            (
                Refusal::StaleBrokerEpoch {
                    broker_id: 1,
                    epoch: 7,
                    registered_epoch: 7,
                    fenced: true,
                },
                E::StaleBrokerEpoch,
                "broker 1 asked with epoch 7, its registration has epoch 7 and is fenced",
            ),
            (
                Refusal::UnregisteredBroker { broker_id: 9 },
                E::StaleBrokerEpoch,
                "broker 9 is not registered",
            ),
            (
                Refusal::TopicListedTwice { topic: t() },
                E::InvalidRequest,
                "topic orders appears more than once in the request",
            ),
            (
                Refusal::InvalidTopicName(TopicNameError::Empty),
                E::InvalidTopicException,
                "topic name is empty",
            ),
            (
                Refusal::TopicAlreadyExists { topic: t() },
                E::TopicAlreadyExists,
                "topic orders already exists",
            ),
            (
                Refusal::TopicNameCollision { topic: t() },
                E::InvalidTopicException,
                "topic orders collides with an existing topic once '.' and '_' are treated alike",
            ),
            (
                Refusal::TooFewPartitions { partitions: 0 },
                E::InvalidPartitions,
                "partitions must be at least 1, not 0",
            ),
            (
                Refusal::ReplicationFactorTooSmall {
                    replication_factor: -2,
                },
                E::InvalidReplicationFactor,
                "replication factor must be at least 1, not -2",
            ),
            (
                Refusal::NotEnoughBrokers {
                    replication_factor: 4,
                    brokers: 3,
                },
                E::InvalidReplicationFactor,
                "replication factor 4 is larger than the 3 available brokers",
            ),
            (
                Refusal::InvalidConfig(TopicConfigError::UnknownKey { key: "x".into() }),
                E::InvalidConfig,
                "unknown topic config x",
            ),
            (
                Refusal::UnknownTopic { topic: t() },
                E::UnknownTopicOrPartition,
                "topic orders does not exist",
            ),
            (
                Refusal::InternalTopic {
                    topic: "__consumer_offsets".into(),
                },
                E::InvalidRequest,
                "__consumer_offsets is an internal topic and cannot be deleted",
            ),
            (
                Refusal::PartitionsCannotShrink {
                    topic: t(),
                    current: 3,
                    requested: 2,
                },
                E::InvalidPartitions,
                "topic orders has 3 partitions; partitions can only be added, not removed (asked for 2)",
            ),
            (
                Refusal::PartitionCountUnchanged {
                    topic: t(),
                    current: 3,
                },
                E::InvalidPartitions,
                "topic orders already has 3 partitions",
            ),
            (
                Refusal::AlterNonTopicConfigs,
                E::InvalidRequest,
                "only topic configs can be altered; broker configs are static",
            ),
            (
                Refusal::DescribeNonTopicConfigs,
                E::InvalidRequest,
                "only topic configs can be described",
            ),
            (
                Refusal::UnknownAlterOp,
                E::InvalidRequest,
                "unknown alter operation",
            ),
            (
                Refusal::UnknownPartition {
                    topic: t(),
                    partition: 4,
                },
                E::UnknownTopicOrPartition,
                "no partition orders-4",
            ),
            (
                Refusal::FencedLeaderEpoch {
                    topic: t(),
                    partition: 0,
                    broker: 2,
                    leader_epoch: 3,
                    leader: 1,
                    current_leader_epoch: 4,
                },
                E::FencedLeaderEpoch,
                "orders-0: broker 2 in leader epoch 3 asked, but the leader is 1 in epoch 4",
            ),
            (
                Refusal::StalePartitionEpoch {
                    topic: t(),
                    partition: 0,
                    partition_epoch: 5,
                    current_partition_epoch: 6,
                },
                E::InvalidUpdateVersion,
                "orders-0: the change is based on partition epoch 5, the current one is 6",
            ),
            (
                Refusal::IsrWithoutLeader {
                    topic: t(),
                    partition: 0,
                    isr: vec![2, 3],
                },
                E::InvalidRequest,
                "orders-0: the ISR [2, 3] leaves out its leader",
            ),
            (
                Refusal::DuplicateIsrMember {
                    topic: t(),
                    partition: 0,
                    broker: 1,
                },
                E::InvalidRequest,
                "orders-0: broker 1 appears twice in the ISR",
            ),
            (
                Refusal::NotAReplica {
                    topic: t(),
                    partition: 0,
                    broker: 4,
                    replicas: vec![1, 2, 3],
                },
                E::IneligibleReplica,
                "orders-0: broker 4 is not a replica ([1, 2, 3])",
            ),
            (
                Refusal::FencedReplica {
                    topic: t(),
                    partition: 0,
                    broker: 3,
                },
                E::IneligibleReplica,
                "orders-0: broker 3 is fenced and cannot join the ISR",
            ),
            (
                Refusal::ProducerIdsExhausted,
                E::UnknownServerError,
                "producer ids exhausted",
            ),
            (
                Refusal::NotAVoter { controller_id: 5 },
                E::InvalidRequest,
                "controller 5 is not a voter of the quorum",
            ),
            (
                Refusal::LastController,
                E::InvalidRequest,
                "the last controller cannot be removed",
            ),
            (
                Refusal::NegativeWatchOffset { from: -1 },
                E::InvalidRequest,
                "watch offset -1 is negative",
            ),
        ];
        for (refusal, code, message) in cases {
            assert_eq!(refusal.code(), code, "{refusal:?}");
            assert_eq!(refusal.to_string(), message, "{refusal:?}");
            let whole = ControllerError::from(refusal);
            assert_eq!(
                (whole.code(), whole.to_string()),
                (code, message.to_owned())
            );
        }
    }

    #[test]
    fn whole_request_failures_keep_their_codes_and_messages() {
        let not_active = ControllerError::NotActive {
            node_id: 2,
            leader: Some((1, "10.0.0.1:9093".into())),
        };
        assert_eq!(not_active.code(), ErrorCode::NotController);
        assert_eq!(
            not_active.to_string(),
            "controller 2 is not the active controller; controller 1 at 10.0.0.1:9093 is"
        );
        let cut = ControllerError::ForwardingCut;
        assert_eq!(cut.code(), ErrorCode::NotController);
        assert_eq!(
            cut.to_string(),
            "cut off from the active controller (network fault)"
        );
        let refused = ControllerError::EntryRefused {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 42),
            why: "no such topic".into(),
        };
        assert_eq!(refused.code(), ErrorCode::UnknownServerError);
        assert_eq!(
            refused.to_string(),
            format!(
                "controller quorum: metadata entry {} refused: no such topic",
                openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)
            )
        );
    }
}
