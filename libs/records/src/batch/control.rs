//! Transaction markers: the control batches that end a transaction in a
//! partition (Kafka's `EndTransactionMarker`).
//!
//! A marker is a batch with the control and transactional attribute bits,
//! the producer's id and epoch, no sequence, and one record whose key is
//! `version: int16 (0), type: int16` (0 abort, 1 commit) and whose value is
//! `version: int16 (0), coordinator_epoch: int32`. Only the broker writes
//! them, when the transaction coordinator tells it a transaction ended.

use super::{BatchBuilder, BatchError, Compression, RecordBatch};
use crate::TimestampMs;

/// Control record types Kafka defines; only the first two end transactions.
const ABORT: i16 = 0;
const COMMIT: i16 = 1;
/// The only key and value version Kafka writes for end markers.
const CURRENT_VERSION: i16 = 0;

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlType {
    /// Its records are to be skipped by `read_committed` consumers.
    Abort,
    /// Its records become visible to `read_committed` consumers.
    Commit,
}

impl ControlType {
    /// Kafka's name for it (`ABORT`, `COMMIT`).
    pub fn as_str(self) -> &'static str {
        match self {
            ControlType::Abort => "ABORT",
            ControlType::Commit => "COMMIT",
        }
    }
}

/// The content of a transaction marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    /// Commit or abort.
    pub control_type: ControlType,
    /// Epoch of the coordinator that wrote it: a partition refuses markers
    /// from a coordinator older than the last one it heard from.
    pub coordinator_epoch: i32,
}

/// What a control batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRecord {
    /// The end of a transaction.
    EndTxn(EndTxnMarker),
    /// A control type this code does not know (Kafka's KRaft records:
    /// leader change, snapshot header, ...): carried, never interpreted.
    Other(i16),
}

impl EndTxnMarker {
    /// The marker as a whole control batch for `producer_id` at
    /// `producer_epoch`, stamped `timestamp` (offsets are the leader's to assign).
    pub fn to_batch(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        timestamp: TimestampMs,
    ) -> Result<Vec<u8>, BatchError> {
        let type_code = match self.control_type {
            ControlType::Abort => ABORT,
            ControlType::Commit => COMMIT,
        };
        let mut key = [0u8; 4];
        key[..2].copy_from_slice(&CURRENT_VERSION.to_be_bytes());
        key[2..].copy_from_slice(&type_code.to_be_bytes());
        let mut value = [0u8; 6];
        value[..2].copy_from_slice(&CURRENT_VERSION.to_be_bytes());
        value[2..].copy_from_slice(&self.coordinator_epoch.to_be_bytes());
        let mut builder = BatchBuilder::with_capacity(Compression::None, 80)
            .producer(producer_id, producer_epoch, super::NO_SEQUENCE)
            .transactional(true)
            .control(true);
        builder.append(timestamp, Some(&key), Some(&value), &[]);
        builder.build()
    }
}

impl ControlRecord {
    /// Reads the control record of a control batch.
    pub fn from_batch(batch: &RecordBatch<'_>) -> Result<ControlRecord, BatchError> {
        let malformed = |reason| BatchError::MalformedRecord { reason };
        if !batch.header().is_control() {
            return Err(malformed("not a control batch"));
        }
        let record = batch
            .records()?
            .next()
            .ok_or(malformed("control batch holds no record"))??;
        let key = record
            .key
            .as_deref()
            .filter(|k| k.len() >= 4)
            .ok_or(malformed("control record key is shorter than 4 bytes"))?;
        let type_code = i16::from_be_bytes([key[2], key[3]]);
        let control_type = match type_code {
            ABORT => ControlType::Abort,
            COMMIT => ControlType::Commit,
            other => return Ok(ControlRecord::Other(other)),
        };
        let value = record
            .value
            .as_deref()
            .filter(|v| v.len() >= 6)
            .ok_or(malformed(
                "end transaction marker value is shorter than 6 bytes",
            ))?;
        Ok(ControlRecord::EndTxn(EndTxnMarker {
            control_type,
            coordinator_epoch: i32::from_be_bytes([value[2], value[3], value[4], value[5]]),
        }))
    }

    /// The end-of-transaction marker, if that is what this is.
    pub fn end_txn(self) -> Option<EndTxnMarker> {
        match self {
            ControlRecord::EndTxn(m) => Some(m),
            ControlRecord::Other(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_with_kafkas_layout() {
        for control_type in [ControlType::Abort, ControlType::Commit] {
            let marker = EndTxnMarker {
                control_type,
                coordinator_epoch: 7,
            };
            let bytes = marker.to_batch(42, 3, 1_700_000_000_000).unwrap();
            let (batch, rest) = RecordBatch::parse(&bytes).unwrap();
            assert!(rest.is_empty());
            let h = batch.header();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(h.records_count, 1);
            let record = batch.records().unwrap().next().unwrap().unwrap();
            let code = if control_type == ControlType::Abort {
                0
            } else {
                1
            };
            assert_eq!(record.key.as_deref(), Some(&[0u8, 0, 0, code][..]));
            assert_eq!(record.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 7][..]));
            assert_eq!(
                ControlRecord::from_batch(&batch).unwrap(),
                ControlRecord::EndTxn(marker)
            );
        }
    }

    #[test]
    fn other_control_types_are_carried_and_data_batches_refused() {
        let mut builder = BatchBuilder::new(Compression::None).control(true);
        builder.append(0, Some(&[0, 0, 0, 2]), Some(&[0, 0]), &[]);
        let bytes = builder.build().unwrap();
        let (batch, _) = RecordBatch::parse(&bytes).unwrap();
        assert_eq!(
            ControlRecord::from_batch(&batch).unwrap(),
            ControlRecord::Other(2)
        );
        let mut builder = BatchBuilder::new(Compression::None);
        builder.append(0, Some(b"k"), Some(b"v"), &[]);
        let bytes = builder.build().unwrap();
        let (batch, _) = RecordBatch::parse(&bytes).unwrap();
        assert!(ControlRecord::from_batch(&batch).is_err());
    }
}
