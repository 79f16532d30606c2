//! Kafka's v2 record batch (magic 2), byte for byte.
//!
//! The same bytes arrive from producers, sit in segment files and go out to
//! consumers, so the broker never re-encodes records: [`RecordBatch`] is a
//! validated, zero-copy view over one batch, [`RecordBatchMut`] patches the
//! header fields the broker owns (base offset, leader epoch, log-append time),
//! [`BatchBuilder`] encodes new batches and [`Records`] decodes the records of
//! one, decompressing when needed. [`control`] reads and writes the
//! transaction markers that end a transaction. [`legacy`] converts the message formats
//! v0 and v1 of old clients to and from v2 at the edge.
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! baseOffset: int64 | batchLength: int32 | partitionLeaderEpoch: int32 | magic: int8 (2)
//! crc: uint32 (CRC-32C of attributes..end) | attributes: int16 | lastOffsetDelta: int32
//! baseTimestamp: int64 | maxTimestamp: int64 | producerId: int64 | producerEpoch: int16
//! baseSequence: int32 | recordsCount: int32 | records (compressed as a whole when a codec is set)
//! ```

mod builder;
mod compression;
pub mod control;
pub mod legacy;
mod record;
pub(crate) mod varint;

pub use builder::BatchBuilder;
pub use compression::{Compression, MAX_DECOMPRESSED_BATCH_BYTES};
pub use control::{ControlRecord, ControlType, EndTxnMarker};
pub use record::{Header, Record, RecordSummary, Records};

use crate::{LeaderEpoch, Offset, TimestampMs};

/// Bytes before the `batchLength` field counts: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of a batch header, i.e. of a batch with no records.
pub const RECORD_BATCH_OVERHEAD: usize = 61;
/// Bytes needed to read a batch's length and magic.
pub const HEADER_SIZE_UP_TO_MAGIC: usize = 17;
/// The only record format version Runnel reads and writes.
pub const MAGIC_V2: i8 = 2;
/// Producer id of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of a batch written without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;
/// Leader epoch of a batch that no leader has stamped.
pub const NO_PARTITION_LEADER_EPOCH: LeaderEpoch = -1;
/// Timestamp of a batch with no records.
pub const NO_TIMESTAMP: TimestampMs = -1;

/// `seq + n`, wrapping past `i32::MAX` to 0 as Kafka's producers do.
pub fn add_sequence(seq: i32, n: i32) -> i32 {
    if seq > i32::MAX - n {
        n - (i32::MAX - seq) - 1
    } else {
        seq + n
    }
}

const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_MASK: i16 = 0x08;
const TRANSACTIONAL_MASK: i16 = 0x10;
const CONTROL_MASK: i16 = 0x20;
const DELETE_HORIZON_MASK: i16 = 0x40;

/// Smallest possible encoded record: seven one-byte varints/fields.
const MIN_RECORD_SIZE: usize = 7;

/// What is wrong with bytes that claim to be a record batch.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The buffer ends before the batch does.
    #[error("record batch is truncated: it needs {needed} bytes but {available} are left")]
    Truncated {
        /// Bytes the batch header says the batch occupies (or the header needs).
        needed: usize,
        /// Bytes actually available.
        available: usize,
    },
    /// `batchLength` is smaller than a header or absurd.
    #[error("record batch length {length} is invalid (a batch needs at least {min} bytes after the offset and length)", min = RECORD_BATCH_OVERHEAD - LOG_OVERHEAD)]
    InvalidLength {
        /// The `batchLength` field.
        length: i32,
    },
    /// Not a v2 batch.
    #[error("record batch magic {magic} is not supported (only magic 2 is)")]
    UnsupportedMagic {
        /// The magic byte found.
        magic: i8,
    },
    /// The CRC-32C over attributes..end does not match the stored one.
    #[error("record batch crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Record count and offset deltas disagree.
    #[error("record batch claims {count} records with last offset delta {last_offset_delta}")]
    InvalidRecordCount {
        /// `recordsCount` field.
        count: i32,
        /// `lastOffsetDelta` field.
        last_offset_delta: i32,
    },
    /// The offset range does not fit 64 bits or the offset delta is negative.
    #[error("record batch offsets {base_offset} + {last_offset_delta} are out of range")]
    InvalidOffsets {
        /// `baseOffset` field.
        base_offset: Offset,
        /// `lastOffsetDelta` field.
        last_offset_delta: i32,
    },
    /// Compression codec bits name no known codec.
    #[error("record batch uses unknown compression codec {codec}")]
    UnknownCompression {
        /// Codec id from the attributes.
        codec: u8,
    },
    /// The compressed records could not be decompressed.
    #[error("{codec} decompression failed: {source}")]
    Decompression {
        /// Codec in use.
        codec: Compression,
        /// What the codec reported.
        #[source]
        source: std::io::Error,
    },
    /// The records could not be compressed.
    #[error("{codec} compression failed: {source}")]
    Compression {
        /// Codec in use.
        codec: Compression,
        /// What the codec reported.
        #[source]
        source: std::io::Error,
    },
    /// Decompressed records exceed [`MAX_DECOMPRESSED_BATCH_BYTES`].
    #[error("decompressed records exceed {limit} bytes")]
    DecompressedTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A record inside the batch is malformed.
    #[error("malformed record: {reason}")]
    MalformedRecord {
        /// What is wrong.
        reason: &'static str,
    },
}

/// How records are compressed, from the low bits of the attributes.
fn codec_of(attributes: i16) -> Result<Compression, BatchError> {
    Compression::from_id((attributes & COMPRESSION_MASK) as u8)
}

/// Which clock a batch's timestamps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer (Kafka `CreateTime`).
    CreateTime,
    /// Set by the broker when it appended the batch (Kafka `LogAppendTime`).
    LogAppendTime,
}

impl TimestampType {
    /// Kafka's config value: `CreateTime` or `LogAppendTime`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

impl std::fmt::Display for TimestampType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fixed 61-byte header of a v2 batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (assigned by the leader).
    pub base_offset: Offset,
    /// Bytes after the `batchLength` field.
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch.
    pub partition_leader_epoch: LeaderEpoch,
    /// Format version, always 2 here.
    pub magic: i8,
    /// CRC-32C of attributes..end.
    pub crc: u32,
    /// Codec, timestamp type, transactional, control and delete-horizon bits.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp the record deltas are relative to (the delete horizon when that bit is set).
    pub base_timestamp: TimestampMs,
    /// Largest record timestamp, or the log-append time.
    pub max_timestamp: TimestampMs,
    /// Idempotent/transactional producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf` without checking the CRC.
    ///
    /// Checks the magic and that `batchLength` can hold a header; does not
    /// require the whole batch to be present.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_SIZE_UP_TO_MAGIC {
            return Err(BatchError::Truncated {
                needed: HEADER_SIZE_UP_TO_MAGIC,
                available: buf.len(),
            });
        }
        let batch_length = read_i32(buf, LENGTH_AT);
        if batch_length < (RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i32 {
            return Err(BatchError::InvalidLength {
                length: batch_length,
            });
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        if buf.len() < RECORD_BATCH_OVERHEAD {
            return Err(BatchError::Truncated {
                needed: LOG_OVERHEAD + batch_length as usize,
                available: buf.len(),
            });
        }
        let base_offset = read_i64(buf, BASE_OFFSET_AT);
        let last_offset_delta = read_i32(buf, LAST_OFFSET_DELTA_AT);
        // Every later computation of the batch's last offset relies on this.
        if last_offset_delta < 0
            || base_offset
                .checked_add(i64::from(last_offset_delta))
                .is_none()
        {
            return Err(BatchError::InvalidOffsets {
                base_offset,
                last_offset_delta,
            });
        }
        Ok(BatchHeader {
            base_offset,
            batch_length,
            partition_leader_epoch: read_i32(buf, PARTITION_LEADER_EPOCH_AT),
            magic,
            crc: read_u32(buf, CRC_AT),
            attributes: read_i16(buf, ATTRIBUTES_AT),
            last_offset_delta,
            base_timestamp: read_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: read_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: read_i64(buf, PRODUCER_ID_AT),
            producer_epoch: read_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: read_i32(buf, BASE_SEQUENCE_AT),
            records_count: read_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Total bytes of the batch, header included.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record (or of the last record the batch once held, after compaction).
    pub fn last_offset(&self) -> Offset {
        self.base_offset + Offset::from(self.last_offset_delta)
    }

    /// The offset right after this batch (saturating at `i64::MAX`).
    pub fn next_offset(&self) -> Offset {
        self.last_offset().saturating_add(1)
    }

    /// Compression codec of the records.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        codec_of(self.attributes)
    }

    /// Whether timestamps are producer- or broker-assigned.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_MASK != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch is part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_MASK != 0
    }

    /// Whether the batch holds transaction control markers.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_MASK != 0
    }

    /// The compaction delete horizon (KIP-534), when the cleaner has set one.
    pub fn delete_horizon_ms(&self) -> Option<TimestampMs> {
        (self.attributes & DELETE_HORIZON_MASK != 0).then_some(self.base_timestamp)
    }

    /// Whether the batch carries an idempotent or transactional producer id.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// A validated, zero-copy view of one v2 record batch.
#[derive(Debug, Clone, Copy)]
pub struct RecordBatch<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl<'a> RecordBatch<'a> {
    /// Validates the batch at the start of `buf` and returns it with the bytes after it.
    ///
    /// Checks the length, magic, CRC-32C, codec and that the record count fits
    /// the offset range. Records themselves are decoded only by [`Self::records`].
    pub fn parse(buf: &'a [u8]) -> Result<(RecordBatch<'a>, &'a [u8]), BatchError> {
        let header = BatchHeader::parse(buf)?;
        let size = header.size();
        if buf.len() < size {
            return Err(BatchError::Truncated {
                needed: size,
                available: buf.len(),
            });
        }
        let (bytes, rest) = buf.split_at(size);
        let computed = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        if computed != header.crc {
            return Err(BatchError::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
        let codec = header.compression()?;
        let count = header.records_count;
        let last = header.last_offset_delta;
        // After compaction a batch may hold fewer records than its offset
        // range, never more; an empty batch keeps a producer's sequence alive.
        if count < 0 || i64::from(count) > i64::from(last) + 1 {
            return Err(BatchError::InvalidRecordCount {
                count,
                last_offset_delta: last,
            });
        }
        if codec == Compression::None
            && (count as usize).saturating_mul(MIN_RECORD_SIZE) > size - RECORD_BATCH_OVERHEAD
        {
            return Err(BatchError::InvalidRecordCount {
                count,
                last_offset_delta: last,
            });
        }
        Ok((RecordBatch { bytes, header }, rest))
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Total size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The records section as stored (compressed when a codec is set).
    pub fn records_payload(&self) -> &'a [u8] {
        &self.bytes[RECORD_BATCH_OVERHEAD..]
    }

    /// Decodes the records, decompressing them first if needed.
    pub fn records(&self) -> Result<Records, BatchError> {
        let codec = self.header.compression()?;
        let data = match codec {
            Compression::None => bytes::Bytes::copy_from_slice(self.records_payload()),
            codec => compression::decompress(codec, self.records_payload())?.into(),
        };
        Ok(Records::new(&self.header, data))
    }

    /// Reads every record's offset delta, create time and key presence,
    /// in order, without copying an uncompressed batch (a compressed one is
    /// decompressed once).
    pub fn scan_records(&self, f: impl FnMut(usize, RecordSummary)) -> Result<(), BatchError> {
        let h = &self.header;
        match h.compression()? {
            Compression::None => {
                record::scan(self.records_payload(), h.records_count, h.base_timestamp, f)
            }
            codec => {
                let data = compression::decompress(codec, self.records_payload())?;
                record::scan(&data, h.records_count, h.base_timestamp, f)
            }
        }
    }

    /// Decodes every record and checks the batch is internally consistent.
    ///
    /// For batches fresh from a producer (`strict`), the record count must
    /// equal the offset range and offset deltas must be 0, 1, 2, ...; for
    /// stored batches (possibly compacted) deltas need only increase within
    /// the range.
    pub fn validate_records(&self, strict: bool) -> Result<(), BatchError> {
        let h = &self.header;
        if strict && i64::from(h.records_count) != i64::from(h.last_offset_delta) + 1 {
            return Err(BatchError::InvalidRecordCount {
                count: h.records_count,
                last_offset_delta: h.last_offset_delta,
            });
        }
        let mut prev: Option<Offset> = None;
        for (i, record) in self.records()?.enumerate() {
            let delta = record?.offset - h.base_offset;
            let expected_ok = if strict {
                delta == i as Offset
            } else {
                prev.is_none_or(|p| delta > p) && delta <= Offset::from(h.last_offset_delta)
            };
            if !expected_ok {
                return Err(BatchError::MalformedRecord {
                    reason: "record offset deltas are out of order or out of range",
                });
            }
            prev = Some(delta);
        }
        Ok(())
    }
}

/// Iterates over the batches of a buffer holding several concatenated batches.
///
/// Stops at the end of the buffer; yields an error (and then stops) at the
/// first invalid or truncated batch.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Batches<'a> {
    /// Iterates over the batches in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Batches {
            rest: buf,
            failed: false,
        }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<RecordBatch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match RecordBatch::parse(self.rest) {
            Ok((batch, rest)) => {
                self.rest = rest;
                Some(Ok(batch))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// A mutable view of a validated batch, for the header fields the broker owns.
///
/// Base offset and partition leader epoch lie outside the CRC, so patching
/// them costs a few bytes; setting the log-append time changes attributes and
/// the max timestamp and so recomputes the CRC (still without re-encoding).
#[derive(Debug)]
pub struct RecordBatchMut<'a> {
    bytes: &'a mut [u8],
}

impl<'a> RecordBatchMut<'a> {
    /// Wraps the first batch of `buf`, validating it like [`RecordBatch::parse`].
    pub fn new(buf: &'a mut [u8]) -> Result<(RecordBatchMut<'a>, &'a mut [u8]), BatchError> {
        let size = RecordBatch::parse(buf)?.0.size();
        let (bytes, rest) = buf.split_at_mut(size);
        Ok((RecordBatchMut { bytes }, rest))
    }

    /// Wraps the first `size` bytes of `buf`, a batch the caller has already
    /// validated with [`RecordBatch::parse`] (no second CRC pass).
    pub fn validated(buf: &'a mut [u8], size: usize) -> (RecordBatchMut<'a>, &'a mut [u8]) {
        let (bytes, rest) = buf.split_at_mut(size);
        (RecordBatchMut { bytes }, rest)
    }

    /// Read-only view of the same batch.
    pub fn header(&self) -> BatchHeader {
        BatchHeader::parse(self.bytes).expect("validated in RecordBatchMut::new")
    }

    /// Sets the offset of the first record.
    pub fn set_base_offset(&mut self, offset: Offset) {
        self.bytes[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&offset.to_be_bytes());
    }

    /// Stamps the epoch of the leader appending the batch.
    pub fn set_partition_leader_epoch(&mut self, epoch: LeaderEpoch) {
        self.bytes[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
            .copy_from_slice(&epoch.to_be_bytes());
    }

    /// Marks the batch as `LogAppendTime` with the broker's time, fixing the CRC.
    pub fn set_log_append_time(&mut self, timestamp: TimestampMs) {
        let attributes = read_i16(self.bytes, ATTRIBUTES_AT) | TIMESTAMP_TYPE_MASK;
        self.bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        self.bytes[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&timestamp.to_be_bytes());
        self.update_crc();
    }

    /// Sets the create time of the newest record, fixing the CRC (the
    /// broker's own figure replaces what the producer wrote).
    pub fn set_max_timestamp(&mut self, timestamp: TimestampMs) {
        self.bytes[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&timestamp.to_be_bytes());
        self.update_crc();
    }

    /// Stamps an idempotent producer's id, epoch and first sequence number,
    /// fixing the CRC (a producer re-sequencing batches it has not had
    /// acknowledged after bumping its epoch).
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.bytes[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
        self.bytes[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
            .copy_from_slice(&producer_epoch.to_be_bytes());
        self.bytes[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
            .copy_from_slice(&base_sequence.to_be_bytes());
        self.update_crc();
    }

    fn update_crc(&mut self) {
        let crc = crc32c::crc32c(&self.bytes[ATTRIBUTES_AT..]);
        self.bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// The patched bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes
    }
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Writes a complete header into `buf[..RECORD_BATCH_OVERHEAD]` and the CRC over the rest.
pub(crate) fn write_header(buf: &mut [u8], h: &BatchHeader) {
    buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&h.base_offset.to_be_bytes());
    buf[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&h.batch_length.to_be_bytes());
    buf[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
    buf[MAGIC_AT] = h.magic as u8;
    buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&h.attributes.to_be_bytes());
    buf[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
        .copy_from_slice(&h.last_offset_delta.to_be_bytes());
    buf[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&h.base_timestamp.to_be_bytes());
    buf[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&h.max_timestamp.to_be_bytes());
    buf[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&h.producer_id.to_be_bytes());
    buf[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&h.producer_epoch.to_be_bytes());
    buf[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&h.base_sequence.to_be_bytes());
    buf[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&h.records_count.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Attribute bits for a batch with these properties.
pub(crate) fn attributes(
    codec: Compression,
    timestamp_type: TimestampType,
    transactional: bool,
    control: bool,
    delete_horizon: bool,
) -> i16 {
    let mut a = i16::from(codec.id());
    if timestamp_type == TimestampType::LogAppendTime {
        a |= TIMESTAMP_TYPE_MASK;
    }
    if transactional {
        a |= TRANSACTIONAL_MASK;
    }
    if control {
        a |= CONTROL_MASK;
    }
    if delete_horizon {
        a |= DELETE_HORIZON_MASK;
    }
    a
}
