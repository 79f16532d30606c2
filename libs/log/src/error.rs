//! The log's error type.

use std::io;
use std::path::PathBuf;

use runnel_records::batch::BatchError;

use crate::Offset;

/// Everything that can go wrong in a log operation. An error leaves the log
/// as it was: nothing is appended, truncated or deleted half-way.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A batch in an append is malformed (CRC, length, magic, records).
    #[error("invalid record batch at byte {position} of the append: {source}")]
    InvalidBatch {
        /// Byte position of the batch within the appended buffer.
        position: usize,
        /// What is wrong with it.
        #[source]
        source: BatchError,
    },
    /// A batch is larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge {
        /// Size of the batch.
        size: usize,
        /// The limit.
        max: u64,
    },
    /// Records a producer may not write: keyless on a compacted log, or
    /// with a create time outside `message.timestamp.before/after.max.ms`.
    /// Nothing is appended; the errors name the records, as Kafka's
    /// `record_errors` do.
    #[error("{}", rejected_message(.errors, *.invalid_timestamp))]
    RejectedRecords {
        /// Each refused record, in order.
        errors: Vec<RecordError>,
        /// Whether any was refused for its timestamp (INVALID_TIMESTAMP
        /// rather than INVALID_RECORD, as Kafka answers).
        invalid_timestamp: bool,
    },
    /// Producers may not write control batches (only the broker does).
    #[error("clients are not allowed to write control records (batch at byte {position})")]
    ControlBatchFromProducer {
        /// Byte position of the batch within the appended buffer.
        position: usize,
    },
    /// The append held no batch.
    #[error("append holds no record batches")]
    EmptyAppend,
    /// An offset outside `[log start, log end]`.
    #[error("offset {offset} is out of range (log start {log_start}, log end {log_end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: Offset,
        /// First offset in the log.
        log_start: Offset,
        /// Offset the next record will get.
        log_end: Offset,
    },
    /// Replicated batches must continue the log.
    #[error("batch base offset {offset} is below the log end offset {log_end}")]
    NonMonotonicOffset {
        /// Base offset of the offending batch.
        offset: Offset,
        /// Where the log currently ends.
        log_end: Offset,
    },
    /// An I/O operation failed; the log is unchanged and still readable.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file of the log (checkpoint, segment name) could not be understood.
    #[error("corrupt {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An idempotent producer's batch does not follow its last sequence number.
    #[error(
        "out of order sequence number for producer {producer_id}: found {found}, expected {expected}"
    )]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence number.
        found: i32,
        /// The sequence number the partition expected.
        expected: i32,
    },
    /// A batch from an older epoch of a producer that has since moved on (fenced).
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The newest epoch the partition has seen.
        current: i16,
    },
    /// A batch's producer fields make no sense (a producer id with a negative epoch or sequence).
    #[error("invalid producer state in batch of producer {producer_id}: {reason}")]
    InvalidProducerState {
        /// The producer.
        producer_id: i64,
        /// What is wrong.
        reason: String,
    },
    /// A producer's batch does not fit its transaction state (Kafka's
    /// INVALID_TXN_STATE): a non-transactional batch while its transaction
    /// is open.
    #[error("invalid transaction state for producer {producer_id}: {reason}")]
    InvalidTxnState {
        /// The producer.
        producer_id: i64,
        /// What is wrong.
        reason: String,
    },
    /// A transaction marker from a coordinator older than the one that
    /// wrote this producer's last marker (Kafka's TRANSACTION_COORDINATOR_FENCED).
    #[error(
        "transaction marker for producer {producer_id} comes from coordinator epoch {coordinator_epoch}, older than {current}"
    )]
    TransactionCoordinatorFenced {
        /// The producer.
        producer_id: i64,
        /// The marker's coordinator epoch.
        coordinator_epoch: i32,
        /// The epoch of the coordinator that wrote the last marker.
        current: i32,
    },
    /// A config value is out of range or malformed.
    #[error("invalid value {value:?} for config {key}: {reason}")]
    InvalidConfig {
        /// Kafka config key.
        key: String,
        /// The refused value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Not a log config key.
    #[error("unknown config {key}")]
    UnknownConfig {
        /// The key.
        key: String,
    },
    /// The cleaner's view of the log went stale while it worked (segments
    /// were deleted or truncated meanwhile); nothing was changed.
    #[error("compaction of {path} aborted: the log changed while it was being cleaned")]
    CleaningAborted {
        /// Partition directory.
        path: PathBuf,
    },
}

impl LogError {
    /// Wraps an I/O error with the operation and path it concerns.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { op, path, source }
    }

    /// Whether the error is the disk being full (ENOSPC or a quota).
    pub fn is_storage_full(&self) -> bool {
        matches!(self, LogError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }
}

/// One record of a producer's append that the log refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Index of the record among the append's records (with one batch per
    /// append, as Kafka's Produce v3+ sends, its index in the batch).
    pub batch_index: i32,
    /// Why.
    pub message: String,
}

/// Kafka's summary of refused records (its `LogValidator` wording, which
/// clients show to users).
fn rejected_message(errors: &[RecordError], invalid_timestamp: bool) -> String {
    if invalid_timestamp {
        return "One or more records have been rejected due to invalid timestamp".to_owned();
    }
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|e| {
            format!(
                "RecordError(batchIndex={}, message='{}')",
                e.batch_index, e.message
            )
        })
        .collect();
    format!(
        "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
        errors.len(),
        shown.join(", ")
    )
}
