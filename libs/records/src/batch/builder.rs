//! Encoding new record batches: used by producers, tests and the cleaner.

use super::{
    BatchError, BatchHeader, Compression, Header, LOG_OVERHEAD, MAGIC_V2,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, NO_TIMESTAMP,
    RECORD_BATCH_OVERHEAD, TimestampType, attributes, compression, record, write_header,
};
use crate::{LeaderEpoch, Offset, TimestampMs};

/// Builds one v2 record batch.
///
/// ```
/// use runnel_records::batch::{BatchBuilder, Compression, RecordBatch};
///
/// let mut builder = BatchBuilder::new(Compression::Lz4);
/// builder.append(1_700_000_000_000, Some(b"key"), Some(b"value"), &[]);
/// let bytes = builder.build().unwrap();
/// let (batch, _) = RecordBatch::parse(&bytes).unwrap();
/// assert_eq!(batch.header().records_count, 1);
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    timestamp_type: TimestampType,
    base_offset: Offset,
    partition_leader_epoch: LeaderEpoch,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    delete_horizon: Option<TimestampMs>,
    base_timestamp: Option<TimestampMs>,
    max_timestamp: TimestampMs,
    log_append_time: Option<TimestampMs>,
    last_offset_delta: Option<i32>,
    forced_last_offset_delta: Option<i32>,
    count: i32,
    /// Header space followed by the uncompressed records.
    buf: Vec<u8>,
}

impl BatchBuilder {
    /// A builder for a batch compressed with `compression`, `CreateTime`, no producer id.
    pub fn new(compression: Compression) -> Self {
        BatchBuilder {
            compression,
            timestamp_type: TimestampType::CreateTime,
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            delete_horizon: None,
            base_timestamp: None,
            max_timestamp: NO_TIMESTAMP,
            log_append_time: None,
            last_offset_delta: None,
            forced_last_offset_delta: None,
            count: 0,
            buf: vec![0; RECORD_BATCH_OVERHEAD],
        }
    }

    /// Like [`BatchBuilder::new`], with room for `capacity` bytes of records up front.
    pub fn with_capacity(compression: Compression, capacity: usize) -> Self {
        let mut builder = Self::new(compression);
        builder.buf.reserve(capacity);
        builder
    }

    /// Offset of the first record (the broker overwrites it on append).
    pub fn base_offset(mut self, offset: Offset) -> Self {
        self.base_offset = offset;
        self
    }

    /// Leader epoch stamped in the header.
    pub fn partition_leader_epoch(mut self, epoch: LeaderEpoch) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Idempotent producer identity and the sequence of the first record.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of a transaction.
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Marks the batch as holding control markers.
    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    /// A `LogAppendTime` batch stamped with `timestamp` (records carry it too).
    pub fn log_append_time(mut self, timestamp: TimestampMs) -> Self {
        self.timestamp_type = TimestampType::LogAppendTime;
        self.log_append_time = Some(timestamp);
        self
    }

    /// Sets the compaction delete horizon (KIP-534), which becomes the base timestamp.
    ///
    /// Must be called before the first record is appended, since record
    /// timestamps are encoded relative to the base timestamp.
    pub fn delete_horizon(mut self, horizon: TimestampMs) -> Self {
        debug_assert_eq!(self.count, 0, "delete horizon set after records");
        self.delete_horizon = Some(horizon);
        self.base_timestamp = Some(horizon);
        self
    }

    /// Keeps the offset range of a compacted batch whose trailing records were removed.
    pub fn last_offset_delta(mut self, delta: i32) -> Self {
        self.forced_last_offset_delta = Some(delta);
        self
    }

    /// Appends a record whose offset follows the previous one.
    pub fn append(
        &mut self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> &mut Self {
        let delta = self.last_offset_delta.map_or(0, |d| d + 1);
        self.append_with_offset_delta(delta, timestamp, key, value, headers)
    }

    /// Appends a record at `offset_delta` from the base offset (deltas must increase).
    pub fn append_with_offset_delta(
        &mut self,
        offset_delta: i32,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> &mut Self {
        debug_assert!(self.last_offset_delta.is_none_or(|d| offset_delta > d));
        let timestamp = self.log_append_time.unwrap_or(timestamp);
        let base = *self.base_timestamp.get_or_insert(timestamp);
        record::write(
            &mut self.buf,
            timestamp.wrapping_sub(base),
            offset_delta,
            key,
            value,
            headers,
        );
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.last_offset_delta = Some(offset_delta);
        self.count += 1;
        self
    }

    /// Number of records appended so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record has been appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if it were built uncompressed now.
    pub fn uncompressed_size(&self) -> usize {
        self.buf.len()
    }

    /// Encodes the batch: compresses the records and writes the header and CRC.
    pub fn build(self) -> Result<Vec<u8>, BatchError> {
        let mut out = match self.compression {
            Compression::None => self.buf,
            codec => {
                let records = &self.buf[RECORD_BATCH_OVERHEAD..];
                let mut out = Vec::with_capacity(RECORD_BATCH_OVERHEAD + records.len() / 2 + 64);
                out.resize(RECORD_BATCH_OVERHEAD, 0);
                compression::compress(codec, records, &mut out)?;
                out
            }
        };
        let batch_length = i32::try_from(out.len() - LOG_OVERHEAD)
            .map_err(|_| BatchError::InvalidLength { length: i32::MAX })?;
        let max_timestamp = self.log_append_time.unwrap_or(self.max_timestamp);
        let header = BatchHeader {
            base_offset: self.base_offset,
            batch_length,
            partition_leader_epoch: self.partition_leader_epoch,
            magic: MAGIC_V2,
            crc: 0,
            attributes: attributes(
                self.compression,
                self.timestamp_type,
                self.transactional,
                self.control,
                self.delete_horizon.is_some(),
            ),
            last_offset_delta: self
                .forced_last_offset_delta
                .or(self.last_offset_delta)
                .unwrap_or(0),
            base_timestamp: self.base_timestamp.unwrap_or(NO_TIMESTAMP),
            max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            records_count: self.count,
        };
        write_header(&mut out, &header);
        Ok(out)
    }
}
