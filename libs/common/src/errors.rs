//! Stable error codes on the wire.
//!
//! A failed gRPC call carries a [`ErrorCode`] (Kafka's numbering) in an
//! `ErrorDetail` message in the status details, so callers branch on the
//! code, never on the message text. Per-item results carry the code in a
//! field instead.

use prost::Message;
use runnel_proto::common::v1::{ErrorCode, ErrorDetail};
use tonic::{Code, Status};

/// The gRPC status code that goes with a Runnel error code.
pub fn grpc_code(code: ErrorCode) -> Code {
    use ErrorCode as E;
    match code {
        E::None => Code::Ok,
        E::OffsetOutOfRange => Code::OutOfRange,
        E::UnknownTopicOrPartition => Code::NotFound,
        E::CorruptMessage
        | E::InvalidFetchSize
        | E::MessageTooLarge
        | E::InvalidTopicException
        | E::RecordListTooLarge
        | E::InvalidRequiredAcks
        | E::UnsupportedCompressionType
        | E::InvalidTimestamp
        | E::InvalidRequest
        | E::InvalidRecord
        | E::InvalidPartitions
        | E::InvalidReplicationFactor
        | E::InvalidReplicaAssignment
        | E::InvalidConfig
        | E::IneligibleReplica
        | E::InvalidGroupId
        | E::InvalidSessionTimeout
        | E::InconsistentGroupProtocol => Code::InvalidArgument,
        E::GroupIdNotFound => Code::NotFound,
        E::IllegalGeneration
        | E::UnknownMemberId
        | E::MemberIdRequired
        | E::FencedInstanceId
        | E::FencedMemberEpoch
        | E::UnreleasedInstanceId
        | E::UnsupportedAssignor
        | E::StaleMemberEpoch
        | E::NonEmptyGroup
        | E::GroupMaxSizeReached => Code::FailedPrecondition,
        E::RebalanceInProgress
        | E::UnstableOffsetCommit
        | E::CoordinatorLoadInProgress
        | E::CoordinatorNotAvailable
        | E::NotCoordinator => Code::Unavailable,
        E::TopicAlreadyExists => Code::AlreadyExists,
        E::StaleBrokerEpoch
        | E::OutOfOrderSequenceNumber
        | E::DuplicateSequenceNumber
        | E::InvalidProducerEpoch
        | E::UnknownProducerId
        | E::ProducerFenced
        | E::InvalidTxnState
        | E::InvalidProducerIdMapping
        | E::TransactionCoordinatorFenced
        | E::TransactionalIdNotFound
        | E::TransactionAbortable
        | E::OperationNotAttempted
        | E::NoReassignmentInProgress
        | E::ElectionNotNeeded
        | E::PreferredLeaderNotAvailable
        | E::EligibleLeadersNotAvailable
        | E::InvalidUpdateVersion => Code::FailedPrecondition,
        E::InvalidTransactionTimeout => Code::InvalidArgument,
        E::ConcurrentTransactions => Code::Unavailable,
        E::NotController | E::BrokerNotAvailable => Code::Unavailable,
        E::LeaderNotAvailable
        | E::NotLeaderOrFollower
        | E::NotEnoughReplicas
        | E::NotEnoughReplicasAfterAppend
        | E::FencedLeaderEpoch
        | E::UnknownLeaderEpoch
        | E::NewLeaderElected => Code::Unavailable,
        E::RequestTimedOut => Code::DeadlineExceeded,
        E::ThrottlingQuotaExceeded => Code::ResourceExhausted,
        E::TransactionalIdAuthorizationFailed
        | E::TopicAuthorizationFailed
        | E::GroupAuthorizationFailed
        | E::ClusterAuthorizationFailed => Code::PermissionDenied,
        E::SaslAuthenticationFailed | E::IllegalSaslState => Code::Unauthenticated,
        E::UnsupportedSaslMechanism | E::UnacceptableCredential => Code::InvalidArgument,
        E::ResourceNotFound => Code::NotFound,
        E::DuplicateResource => Code::AlreadyExists,
        E::KafkaStorageError | E::UnknownServerError => Code::Internal,
    }
}

/// A status for `code` whose details carry the code and message.
pub fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    let message = message.into();
    let detail = ErrorDetail {
        code: code as i32,
        message: message.clone(),
    };
    Status::with_details(grpc_code(code), message, detail.encode_to_vec().into())
}

/// The Runnel error code a status carries (`UnknownServerError` if none).
pub fn code_of(status: &Status) -> ErrorCode {
    // Empty details decode as a default message (code 0): that is no code.
    ErrorDetail::decode(status.details())
        .ok()
        .and_then(|d| ErrorCode::try_from(d.code).ok())
        .filter(|&c| c != ErrorCode::None || status.code() == Code::Ok)
        .unwrap_or(match status.code() {
            Code::NotFound => ErrorCode::UnknownTopicOrPartition,
            Code::InvalidArgument => ErrorCode::InvalidRequest,
            Code::DeadlineExceeded => ErrorCode::RequestTimedOut,
            Code::Unavailable => ErrorCode::LeaderNotAvailable,
            _ => ErrorCode::UnknownServerError,
        })
}

/// Whether a client should refresh metadata and retry after this code.
pub fn is_retriable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::LeaderNotAvailable
            | ErrorCode::NotLeaderOrFollower
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::NotEnoughReplicasAfterAppend
            | ErrorCode::RequestTimedOut
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::KafkaStorageError
            | ErrorCode::NotController
            | ErrorCode::BrokerNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::NotCoordinator
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_the_status_round_trip() {
        let s = status(ErrorCode::InvalidTopicException, "bad name");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "bad name");
        assert_eq!(code_of(&s), ErrorCode::InvalidTopicException);
        assert_eq!(
            code_of(&Status::not_found("x")),
            ErrorCode::UnknownTopicOrPartition
        );
    }
}
