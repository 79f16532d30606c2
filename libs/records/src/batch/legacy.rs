//! Kafka's message formats v0 and v1 (magic 0 and 1), which clients pinned
//! to Produce v0–2 and Fetch v0–3 still speak. Runnel stores only v2
//! batches: a producer's message set is converted to one v2 batch before
//! the log sees it, and v2 batches are converted back for such a consumer,
//! as Kafka's brokers do since they write only v2 themselves.
//!
//! A message set is a sequence of messages (big-endian):
//!
//! ```text
//! offset: int64 | messageSize: int32 | crc: uint32 (CRC-32 of magic..end) | magic: int8
//! attributes: int8 | timestamp: int64 (magic 1 only) | key: bytes (int32 length, -1 null)
//! value: bytes (int32 length, -1 null)
//! ```
//!
//! A compressed message (codec in the low three bits of the attributes) is
//! a wrapper whose value is a compressed message set of the real messages.

use super::{
    BatchBuilder, BatchError, Batches, Compression, MAX_DECOMPRESSED_BATCH_BYTES, NO_TIMESTAMP,
    TimestampType,
};
use crate::{Offset, TimestampMs};

/// Message format v0 (no timestamps).
pub const MAGIC_V0: i8 = 0;
/// Message format v1 (timestamps, Kafka 0.10).
pub const MAGIC_V1: i8 = 1;

/// `offset` and `messageSize`, before what the size counts.
const LOG_OVERHEAD: usize = 12;
/// Where the magic byte sits, in every format (v2 included).
const MAGIC_AT: usize = 16;
const CODEC_MASK: i8 = 0x07;
const LOG_APPEND_TIME_MASK: i8 = 0x08;

/// What is wrong with a message set of magic 0 or 1.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// The bytes end inside a message.
    #[error("message set is truncated: {0}")]
    Truncated(&'static str),
    /// A message's CRC-32 does not match its bytes.
    #[error("message crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the message.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A message whose magic is not 0 or 1, or differs from its wrapper's.
    #[error("message magic {magic} is not valid here (expected {expected})")]
    UnexpectedMagic {
        /// The magic found.
        magic: i8,
        /// The magic the message set called for.
        expected: i8,
    },
    /// A compressed message inside a compressed message.
    #[error("a compressed message holds another compressed message")]
    NestedCompression,
    /// A message set without any message.
    #[error("message set holds no message")]
    Empty,
    /// Decompressing, compressing or building the v2 batch failed.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// The magic of the first message or batch in `records`, if it has one.
pub fn magic_of(records: &[u8]) -> Option<i8> {
    records.get(MAGIC_AT).map(|b| *b as i8)
}

/// One message of a legacy message set, compressed wrappers unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message<'a> {
    timestamp: TimestampMs,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

/// Converts a producer's message set of magic 0 or 1 into one v2 batch,
/// compressed with the producer's codec (the log then applies the topic's
/// `compression.type`). The producer's offsets are dropped (the log
/// assigns them); magic 0 carries no timestamps, so its records get none
/// (-1), as in Kafka.
pub fn up_convert(set: &[u8]) -> Result<Vec<u8>, LegacyError> {
    up_convert_limited(set, MAX_DECOMPRESSED_BATCH_BYTES)
}

/// [`up_convert`] with at most `limit` bytes of decompressed wrappers.
fn up_convert_limited(set: &[u8], limit: usize) -> Result<Vec<u8>, LegacyError> {
    let expected = magic_of(set).ok_or(LegacyError::Truncated("message header"))?;
    let mut codec = Compression::None;
    let mut entries = Vec::new();
    // All wrappers are held at once: their sum is bounded, not each alone.
    let mut inflated = 0usize;
    for raw in messages(set) {
        let raw = raw?;
        check_magic(raw.magic, expected)?;
        entries.push(match raw.codec()? {
            Compression::None => Entry::Plain(raw.message()),
            wrapper => {
                codec = wrapper;
                let inner = decompress(wrapper, raw.magic, raw.value.unwrap_or_default())?;
                inflated = inflated.saturating_add(inner.len());
                if inflated > limit {
                    return Err(BatchError::DecompressedTooLarge { limit }.into());
                }
                Entry::Wrapper {
                    timestamp: raw.timestamp,
                    log_append_time: raw.log_append_time(),
                    inner,
                }
            }
        });
    }
    let mut builder = BatchBuilder::with_capacity(codec, set.len());
    for entry in &entries {
        match entry {
            Entry::Plain(m) => {
                builder.append(m.timestamp, m.key, m.value, &[]);
            }
            Entry::Wrapper {
                timestamp,
                log_append_time,
                inner,
            } => {
                let before = builder.len();
                for raw in messages(inner) {
                    let raw = raw?;
                    check_magic(raw.magic, expected)?;
                    if raw.codec()? != Compression::None {
                        return Err(LegacyError::NestedCompression);
                    }
                    let m = raw.message();
                    // LogAppendTime on a wrapper stands for all its messages.
                    let ts = if *log_append_time {
                        *timestamp
                    } else {
                        m.timestamp
                    };
                    builder.append(ts, m.key, m.value, &[]);
                }
                if builder.len() == before {
                    return Err(LegacyError::Empty);
                }
            }
        }
    }
    if builder.is_empty() {
        return Err(LegacyError::Empty);
    }
    Ok(builder.build()?)
}

/// A message of a producer's set: plain, or a wrapper's decompressed set.
enum Entry<'a> {
    Plain(Message<'a>),
    Wrapper {
        timestamp: TimestampMs,
        log_append_time: bool,
        inner: Vec<u8>,
    },
}

/// Converts v2 batches read from the log into a message set of `magic`
/// (0 or 1) for Fetch v0–3: one uncompressed message per record at its
/// offset, from `first_offset` on (a fetch from the middle of a batch),
/// headers dropped (the old formats have none), control batches left out,
/// as Kafka's down-conversion does. Like Kafka's, it converts whole
/// batches until the output reaches `max_bytes` (at least one batch, so a
/// consumer always moves on; it fetches the rest next), and stops at a
/// batch that cannot be read (a fetch may end in a partial one).
pub fn down_convert(
    batches: &[u8],
    magic: i8,
    first_offset: Offset,
    max_bytes: usize,
) -> Result<Vec<u8>, LegacyError> {
    let mut out = Vec::with_capacity(batches.len().min(max_bytes) + 1024);
    for batch in Batches::new(batches) {
        if !out.is_empty() && out.len() >= max_bytes {
            break;
        }
        let Ok(batch) = batch else { break };
        if batch.header().is_control() {
            continue;
        }
        let log_append_time = batch.header().timestamp_type() == TimestampType::LogAppendTime;
        for record in batch.records()? {
            let record = record?;
            if record.offset < first_offset {
                continue;
            }
            write_message(
                &mut out,
                magic,
                record.offset,
                record.timestamp,
                log_append_time,
                record.key.as_deref(),
                record.value.as_deref(),
            );
        }
    }
    Ok(out)
}

/// Appends one uncompressed message of `magic` to `out` (also used by
/// tests that play an old client).
pub fn write_message(
    out: &mut Vec<u8>,
    magic: i8,
    offset: Offset,
    timestamp: TimestampMs,
    log_append_time: bool,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    write_wrapped(
        out,
        magic,
        offset,
        timestamp,
        log_append_time,
        0,
        key,
        value,
    );
}

/// Appends a message with `codec` bits in its attributes and `value` as is.
#[allow(clippy::too_many_arguments)]
fn write_wrapped(
    out: &mut Vec<u8>,
    magic: i8,
    offset: Offset,
    timestamp: TimestampMs,
    log_append_time: bool,
    codec: u8,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    out.extend_from_slice(&offset.to_be_bytes());
    let size_at = out.len();
    out.extend_from_slice(&[0; 8]); // size, crc
    let body_at = out.len();
    out.push(magic as u8);
    let mut attributes = codec as i8 & CODEC_MASK;
    if magic >= MAGIC_V1 && log_append_time {
        attributes |= LOG_APPEND_TIME_MASK;
    }
    out.push(attributes as u8);
    if magic >= MAGIC_V1 {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    for field in [key, value] {
        match field {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
    let crc = crc32fast::hash(&out[body_at..]);
    let size = (out.len() - size_at - 4) as i32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out[size_at + 4..body_at].copy_from_slice(&crc.to_be_bytes());
}

/// Appends a compressed wrapper holding `inner` (a message set) compressed
/// with `codec`; for tests that play an old producer. Inner offsets are
/// relative for magic 1 and the wrapper takes the last one, as Kafka's
/// clients write them.
pub fn write_compressed(
    out: &mut Vec<u8>,
    magic: i8,
    offset: Offset,
    timestamp: TimestampMs,
    codec: Compression,
    inner: &[u8],
) -> Result<(), LegacyError> {
    let mut compressed = Vec::new();
    super::compression::compress(codec, inner, &mut compressed)?;
    if codec == Compression::Lz4 && magic == MAGIC_V0 {
        // Kafka 0.8–0.9 clients wrote this frame checksum wrongly (KAFKA-3160).
        set_lz4_header_checksum(&mut compressed, true);
    }
    write_wrapped(
        out,
        magic,
        offset,
        timestamp,
        false,
        codec.id(),
        None,
        Some(&compressed),
    );
    Ok(())
}

fn check_magic(magic: i8, expected: i8) -> Result<(), LegacyError> {
    if magic == expected && (magic == MAGIC_V0 || magic == MAGIC_V1) {
        Ok(())
    } else {
        Err(LegacyError::UnexpectedMagic { magic, expected })
    }
}

fn decompress(codec: Compression, magic: i8, input: &[u8]) -> Result<Vec<u8>, LegacyError> {
    if codec == Compression::Lz4 && magic == MAGIC_V0 {
        // Magic 0 writers computed the frame descriptor's checksum over the
        // frame magic too (KAFKA-3160); Kafka ignores it there, we mend it.
        let mut fixed = input.to_vec();
        set_lz4_header_checksum(&mut fixed, false);
        return Ok(super::compression::decompress(codec, &fixed)?);
    }
    Ok(super::compression::decompress(codec, input)?)
}

/// Rewrites an LZ4 frame's header checksum: the correct one, or the one
/// Kafka's magic 0 writers computed (`broken`: from the frame magic on).
fn set_lz4_header_checksum(frame: &mut [u8], broken: bool) {
    const FRAME_MAGIC: usize = 4;
    let Some(&flags) = frame.get(FRAME_MAGIC) else {
        return;
    };
    // FLG, BD, then an 8-byte content size and a 4-byte dictionary id when flagged.
    let mut end = FRAME_MAGIC + 2;
    if flags & 0x08 != 0 {
        end += 8;
    }
    if flags & 0x01 != 0 {
        end += 4;
    }
    let start = if broken { 0 } else { FRAME_MAGIC };
    let Some(descriptor) = frame.get(start..end) else {
        return;
    };
    let checksum = (twox_hash::XxHash32::oneshot(0, descriptor) >> 8) as u8;
    if let Some(byte) = frame.get_mut(end) {
        *byte = checksum;
    }
}

/// One message as it sits in a message set.
struct RawMessage<'a> {
    magic: i8,
    attributes: i8,
    timestamp: TimestampMs,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

impl<'a> RawMessage<'a> {
    fn codec(&self) -> Result<Compression, LegacyError> {
        Ok(Compression::from_id((self.attributes & CODEC_MASK) as u8)?)
    }

    fn log_append_time(&self) -> bool {
        self.magic >= MAGIC_V1 && self.attributes & LOG_APPEND_TIME_MASK != 0
    }

    fn message(&self) -> Message<'a> {
        Message {
            timestamp: self.timestamp,
            key: self.key,
            value: self.value,
        }
    }
}

/// The messages of a set, each checked against its CRC.
fn messages(set: &[u8]) -> impl Iterator<Item = Result<RawMessage<'_>, LegacyError>> {
    let mut rest = set;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        let parsed = parse_message(rest);
        match parsed {
            Ok((message, tail)) => {
                rest = tail;
                Some(Ok(message))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

fn parse_message(buf: &[u8]) -> Result<(RawMessage<'_>, &[u8]), LegacyError> {
    let size = buf
        .get(8..LOG_OVERHEAD)
        .ok_or(LegacyError::Truncated("message header"))?;
    let size = i32::from_be_bytes(size.try_into().expect("4 bytes"));
    let size = usize::try_from(size).map_err(|_| LegacyError::Truncated("negative size"))?;
    let end = LOG_OVERHEAD
        .checked_add(size)
        .ok_or(LegacyError::Truncated("message size"))?;
    let body = buf
        .get(LOG_OVERHEAD..end)
        .ok_or(LegacyError::Truncated("message body"))?;
    let mut r = Reader(body);
    let stored = r.u32()?;
    let computed = crc32fast::hash(r.0);
    if stored != computed {
        return Err(LegacyError::CrcMismatch { stored, computed });
    }
    let magic = r.i8()?;
    let attributes = r.i8()?;
    let timestamp = match magic {
        MAGIC_V0 => NO_TIMESTAMP,
        MAGIC_V1 => r.i64()?,
        _ => {
            return Err(LegacyError::UnexpectedMagic {
                magic,
                expected: MAGIC_V1,
            });
        }
    };
    let key = r.bytes()?;
    let value = r.bytes()?;
    Ok((
        RawMessage {
            magic,
            attributes,
            timestamp,
            key,
            value,
        },
        &buf[end..],
    ))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LegacyError> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or(LegacyError::Truncated("message field"))?;
        self.0 = tail;
        Ok(head)
    }

    fn i8(&mut self) -> Result<i8, LegacyError> {
        Ok(self.take(1)?[0] as i8)
    }

    fn u32(&mut self) -> Result<u32, LegacyError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn i64(&mut self) -> Result<i64, LegacyError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<Option<&'a [u8]>, LegacyError> {
        let len = i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes"));
        match usize::try_from(len) {
            Ok(len) => self.take(len).map(Some),
            Err(_) if len == -1 => Ok(None),
            Err(_) => Err(LegacyError::Truncated("negative length")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::batch::{Header, RecordBatch};

    type Plain = (TimestampMs, Option<Vec<u8>>, Option<Vec<u8>>);

    fn records_of(batch: &[u8]) -> Vec<Plain> {
        let (batch, rest) = RecordBatch::parse(batch).unwrap();
        assert!(rest.is_empty());
        batch
            .records()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.timestamp,
                    r.key.map(|k| k.to_vec()),
                    r.value.map(|v| v.to_vec()),
                )
            })
            .collect()
    }

    #[test]
    fn plain_messages_of_both_magics_become_one_batch() {
        for magic in [MAGIC_V0, MAGIC_V1] {
            let mut set = Vec::new();
            write_message(&mut set, magic, 0, 1_000, false, Some(b"k1"), Some(b"v1"));
            write_message(&mut set, magic, 0, 2_000, false, None, Some(b""));
            write_message(&mut set, magic, 0, 3_000, false, Some(b"k3"), None);
            let batch = up_convert(&set).unwrap();
            let ts = |t| if magic == MAGIC_V0 { NO_TIMESTAMP } else { t };
            assert_eq!(
                records_of(&batch),
                vec![
                    (ts(1_000), Some(b"k1".to_vec()), Some(b"v1".to_vec())),
                    (ts(2_000), None, Some(Vec::new())),
                    (ts(3_000), Some(b"k3".to_vec()), None),
                ]
            );
        }
    }

    #[test]
    fn compressed_wrappers_keep_their_codec_and_order() {
        for magic in [MAGIC_V0, MAGIC_V1] {
            for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4] {
                let mut inner = Vec::new();
                for i in 0..3i64 {
                    let value = format!("value-{i}");
                    write_message(
                        &mut inner,
                        magic,
                        i,
                        10 + i,
                        false,
                        None,
                        Some(value.as_bytes()),
                    );
                }
                let mut set = Vec::new();
                write_message(&mut set, magic, 0, 5, false, None, Some(b"before"));
                write_compressed(&mut set, magic, 2, 12, codec, &inner).unwrap();
                let batch = up_convert(&set).unwrap();
                let (view, _) = RecordBatch::parse(&batch).unwrap();
                assert_eq!(
                    view.header().compression().unwrap(),
                    codec,
                    "{magic} {codec}"
                );
                let values: Vec<_> = records_of(&batch)
                    .into_iter()
                    .map(|r| r.2.unwrap())
                    .collect();
                assert_eq!(values, [&b"before"[..], b"value-0", b"value-1", b"value-2"]);
            }
        }
    }

    #[test]
    fn a_log_append_time_wrapper_stamps_its_messages() {
        let mut inner = Vec::new();
        write_message(&mut inner, MAGIC_V1, 0, 1, false, None, Some(b"a"));
        let mut set = Vec::new();
        write_compressed(&mut set, MAGIC_V1, 0, 99, Compression::Gzip, &inner).unwrap();
        // Flip the wrapper's timestamp-type bit and mend its CRC.
        set[LOG_OVERHEAD + 5] |= LOG_APPEND_TIME_MASK as u8;
        let crc = crc32fast::hash(&set[LOG_OVERHEAD + 4..]);
        set[LOG_OVERHEAD..LOG_OVERHEAD + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(records_of(&up_convert(&set).unwrap())[0].0, 99);
    }

    #[test]
    fn bad_message_sets_are_refused() {
        let mut set = Vec::new();
        write_message(&mut set, MAGIC_V1, 0, 1, false, None, Some(b"value"));
        let mut corrupt = set.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert!(matches!(
            up_convert(&corrupt),
            Err(LegacyError::CrcMismatch { .. })
        ));
        assert!(matches!(
            up_convert(&set[..set.len() - 1]),
            Err(LegacyError::Truncated(_))
        ));
        assert!(matches!(up_convert(&[]), Err(LegacyError::Truncated(_))));
        let mut mixed = set.clone();
        write_message(&mut mixed, MAGIC_V0, 0, 1, false, None, Some(b"value"));
        assert!(matches!(
            up_convert(&mixed),
            Err(LegacyError::UnexpectedMagic {
                magic: 0,
                expected: 1
            })
        ));
        let mut nested = Vec::new();
        write_compressed(&mut nested, MAGIC_V1, 0, 1, Compression::Gzip, &set).unwrap();
        let mut outer = Vec::new();
        write_compressed(&mut outer, MAGIC_V1, 0, 1, Compression::Gzip, &nested).unwrap();
        assert!(matches!(
            up_convert(&outer),
            Err(LegacyError::NestedCompression)
        ));
        let mut empty = Vec::new();
        write_compressed(&mut empty, MAGIC_V1, 0, 1, Compression::Gzip, &[]).unwrap();
        assert!(matches!(up_convert(&empty), Err(LegacyError::Empty)));
        // Wrappers are held together: their decompressed sum is bounded.
        let mut inner = Vec::new();
        write_message(&mut inner, MAGIC_V1, 0, 1, false, None, Some(&[0; 1000]));
        let mut two = Vec::new();
        write_compressed(&mut two, MAGIC_V1, 0, 1, Compression::Gzip, &inner).unwrap();
        write_compressed(&mut two, MAGIC_V1, 1, 1, Compression::Gzip, &inner).unwrap();
        assert!(up_convert_limited(&two, 2 * inner.len()).is_ok());
        assert!(matches!(
            up_convert_limited(&two, 2 * inner.len() - 1),
            Err(LegacyError::Batch(BatchError::DecompressedTooLarge { .. }))
        ));
    }

    #[test]
    fn v2_batches_down_convert_to_messages_at_their_offsets() {
        let mut first = BatchBuilder::new(Compression::Gzip).base_offset(40);
        first.append(
            7,
            Some(b"k"),
            Some(b"v"),
            &[Header::new(&b"h"[..], Some(&b"x"[..]))],
        );
        first.append(8, None, None, &[]);
        let mut control = BatchBuilder::new(Compression::None)
            .base_offset(42)
            .control(true);
        control.append(9, Some(b"\0\0\0\0"), Some(b"\0\0\0\0\0\0"), &[]);
        let mut appended = BatchBuilder::new(Compression::None)
            .base_offset(43)
            .log_append_time(500);
        appended.append(9, None, Some(b"w"), &[]);
        let mut v2 = first.build().unwrap();
        v2.extend(control.build().unwrap());
        v2.extend(appended.build().unwrap());
        for magic in [MAGIC_V0, MAGIC_V1] {
            let set = down_convert(&v2, magic, 0, usize::MAX).unwrap();
            let got: Vec<_> = messages(&set)
                .map(|m| {
                    let m = m.unwrap();
                    assert_eq!(m.magic, magic);
                    (m.timestamp, m.log_append_time(), m.key, m.value)
                })
                .collect();
            let ts = |t| if magic == MAGIC_V0 { NO_TIMESTAMP } else { t };
            assert_eq!(
                got,
                vec![
                    (ts(7), false, Some(&b"k"[..]), Some(&b"v"[..])),
                    (ts(8), false, None, None),
                    (ts(500), magic == MAGIC_V1, None, Some(&b"w"[..])),
                ]
            );
            let offsets: Vec<i64> = {
                let mut rest = &set[..];
                let mut out = Vec::new();
                while !rest.is_empty() {
                    out.push(i64::from_be_bytes(rest[..8].try_into().unwrap()));
                    rest = parse_message(rest).unwrap().1;
                }
                out
            };
            assert_eq!(offsets, [40, 41, 43]);
            // What an old client sends back converts to the same records.
            assert_eq!(records_of(&up_convert(&set).unwrap()).len(), 3);
        }
        // A partial trailing batch (a fetch cut at its byte limit) is left out.
        let cut = down_convert(&v2[..v2.len() - 3], MAGIC_V1, 0, usize::MAX).unwrap();
        assert_eq!(messages(&cut).count(), 2);
        // From the middle of a batch: what lies before the offset is left out.
        let from = down_convert(&v2, MAGIC_V1, 41, usize::MAX).unwrap();
        assert_eq!(messages(&from).count(), 2);
        // Whole batches up to the byte limit, and always at least one.
        let first_only = down_convert(&v2, MAGIC_V1, 0, 0).unwrap();
        assert_eq!(messages(&first_only).count(), 2);
    }
}
