//! Log errors as the stable codes clients see.

use runnel_log::LogError;
use runnel_log::batch::BatchError;
use runnel_proto::common::v1::ErrorCode;

/// The code and message a client gets for a log error.
pub fn log_error(e: &LogError) -> (ErrorCode, String) {
    let code = match e {
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
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::Io { .. } | LogError::Corrupt { .. } => ErrorCode::KafkaStorageError,
        LogError::InvalidConfig { .. } | LogError::UnknownConfig { .. } => ErrorCode::InvalidConfig,
        LogError::NonMonotonicOffset { .. } | LogError::CleaningAborted { .. } => {
            ErrorCode::UnknownServerError
        }
    };
    if code == ErrorCode::KafkaStorageError {
        tracing::error!(error = %e, "storage error");
    }
    (code, e.to_string())
}
