//! Decoding the records inside a batch.
//!
//! Each record is `length | attributes | timestampDelta | offsetDelta | key |
//! value | headers`, with zigzag varints for every number and length, and -1
//! for a null key, value or header value.

use std::ops::Range;

use bytes::Bytes;

use super::{BatchError, BatchHeader, TimestampType, varint};
use crate::{Offset, TimestampMs};

/// A record header: a key (UTF-8 by convention, kept as bytes) and an optional value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// Header key; Kafka clients treat it as UTF-8.
    pub key: Bytes,
    /// Header value; `None` is a null value, distinct from empty.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header from a key and optional value.
    pub fn new(key: impl Into<Bytes>, value: Option<impl Into<Bytes>>) -> Self {
        Header {
            key: key.into(),
            value: value.map(Into::into),
        }
    }
}

/// One decoded record with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset (batch base offset + delta).
    pub offset: Offset,
    /// Absolute timestamp; the batch's log-append time for `LogAppendTime` batches.
    pub timestamp: TimestampMs,
    /// Key; `None` is a null key, distinct from an empty one.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order; keys may repeat.
    pub headers: Vec<Header>,
}

/// Iterator over the records of one batch; owns the (decompressed) records.
///
/// Yields an error and stops at the first malformed record, and also when the
/// record count and the bytes disagree.
#[derive(Debug)]
pub struct Records {
    data: Bytes,
    pos: usize,
    remaining: i32,
    base_offset: Offset,
    base_timestamp: TimestampMs,
    log_append_time: Option<TimestampMs>,
    done: bool,
}

impl Records {
    pub(super) fn new(header: &BatchHeader, data: Bytes) -> Self {
        Records {
            data,
            pos: 0,
            remaining: header.records_count,
            base_offset: header.base_offset,
            base_timestamp: header.base_timestamp,
            log_append_time: (header.timestamp_type() == TimestampType::LogAppendTime)
                .then_some(header.max_timestamp),
            done: false,
        }
    }

    fn decode_next(&mut self) -> Result<Record, BatchError> {
        let mut headers = Vec::new();
        let span = decode_span(&self.data, &mut self.pos, |key, value| {
            let key = key.ok_or(BatchError::MalformedRecord {
                reason: "null header key",
            })?;
            headers.push(Header {
                key: self.data.slice(key),
                value: value.map(|v| self.data.slice(v)),
            });
            Ok(())
        })?;
        let timestamp = match self.log_append_time {
            Some(t) => t,
            None => self.base_timestamp.wrapping_add(span.timestamp_delta),
        };
        let offset = self
            .base_offset
            .checked_add(Offset::from(span.offset_delta))
            .ok_or(BatchError::MalformedRecord {
                reason: "record offset overflows",
            })?;
        Ok(Record {
            offset,
            timestamp,
            key: span.key.map(|k| self.data.slice(k)),
            value: span.value.map(|v| self.data.slice(v)),
            headers,
        })
    }
}

/// Where one record's fields lie in a batch's (decompressed) record bytes.
struct Span {
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// Decodes the record at `*pos` and moves `*pos` past it, handing each
/// header's key and value ranges to `header` (so a scan that only needs the
/// fixed fields allocates nothing).
#[inline]
fn decode_span(
    buf: &[u8],
    pos: &mut usize,
    mut header: impl FnMut(Option<Range<usize>>, Option<Range<usize>>) -> Result<(), BatchError>,
) -> Result<Span, BatchError> {
    let length = varint::read_i32(buf, pos)?;
    let length = usize::try_from(length).map_err(|_| BatchError::MalformedRecord {
        reason: "negative record length",
    })?;
    let start = *pos;
    let end = start
        .checked_add(length)
        .filter(|&e| e <= buf.len())
        .ok_or(BatchError::MalformedRecord {
            reason: "record length runs past the end of the batch",
        })?;
    let body = &buf[..end];
    let mut p = start;
    // Record-level attributes are unused in v2; skip the byte.
    if p >= end {
        return Err(BatchError::MalformedRecord {
            reason: "record is empty",
        });
    }
    p += 1;
    let timestamp_delta = varint::read_i64(body, &mut p)?;
    let offset_delta = varint::read_i32(body, &mut p)?;
    let key = nullable(body, &mut p)?;
    let value = nullable(body, &mut p)?;
    let header_count = varint::read_i32(body, &mut p)?;
    if header_count < 0 {
        return Err(BatchError::MalformedRecord {
            reason: "negative header count",
        });
    }
    // Each header takes at least two bytes: refuse counts the body cannot hold.
    if header_count as usize > (end - p) / 2 {
        return Err(BatchError::MalformedRecord {
            reason: "header count exceeds the record size",
        });
    }
    for _ in 0..header_count {
        let key = nullable(body, &mut p)?;
        let value = nullable(body, &mut p)?;
        header(key, value)?;
    }
    if p != end {
        return Err(BatchError::MalformedRecord {
            reason: "record length does not match its fields",
        });
    }
    *pos = end;
    Ok(Span {
        timestamp_delta,
        offset_delta,
        key,
        value,
    })
}

/// A nullable field's byte range (`None` for length -1).
#[inline]
fn nullable(body: &[u8], pos: &mut usize) -> Result<Option<Range<usize>>, BatchError> {
    let len = varint::read_i32(body, pos)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| BatchError::MalformedRecord {
        reason: "negative length other than -1",
    })?;
    let end =
        pos.checked_add(len)
            .filter(|&e| e <= body.len())
            .ok_or(BatchError::MalformedRecord {
                reason: "field runs past the end of the record",
            })?;
    let field = *pos..end;
    *pos = end;
    Ok(Some(field))
}

/// What validation needs of one record, read without copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSummary {
    /// Offset delta from the batch's base offset.
    pub offset_delta: i32,
    /// The batch's base timestamp plus the record's delta (its create time).
    pub timestamp: TimestampMs,
    /// Whether the key is non-null.
    pub has_key: bool,
}

/// Reads `count` records from `data` (the whole record section) with
/// `base_timestamp`, calling `f` with each one's index and summary; fails
/// on a malformed record or bytes left after the last one.
pub(super) fn scan(
    data: &[u8],
    count: i32,
    base_timestamp: TimestampMs,
    mut f: impl FnMut(usize, RecordSummary),
) -> Result<(), BatchError> {
    let mut pos = 0;
    for i in 0..usize::try_from(count).unwrap_or(0) {
        let span = decode_span(data, &mut pos, |key, _| {
            key.map(|_| ()).ok_or(BatchError::MalformedRecord {
                reason: "null header key",
            })
        })?;
        f(
            i,
            RecordSummary {
                offset_delta: span.offset_delta,
                timestamp: base_timestamp.wrapping_add(span.timestamp_delta),
                has_key: span.key.is_some(),
            },
        );
    }
    if pos != data.len() {
        return Err(BatchError::MalformedRecord {
            reason: "bytes left after the last record",
        });
    }
    Ok(())
}

impl Iterator for Records {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.remaining == 0 {
            self.done = true;
            if self.pos != self.data.len() {
                return Some(Err(BatchError::MalformedRecord {
                    reason: "bytes left after the last record",
                }));
            }
            return None;
        }
        self.remaining -= 1;
        let result = self.decode_next();
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

/// Bytes the encoded body of a record (everything after its length) occupies.
pub(super) fn body_size(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    let mut n = 1 + varint::size(timestamp_delta) + varint::size(i64::from(offset_delta));
    n += nullable_size(key);
    n += nullable_size(value);
    n += varint::size(headers.len() as i64);
    for h in headers {
        n += nullable_size(Some(&h.key)) + nullable_size(h.value.as_deref());
    }
    n
}

fn nullable_size(field: Option<&[u8]>) -> usize {
    match field {
        None => 1,
        Some(f) => varint::size(f.len() as i64) + f.len(),
    }
}

/// Appends one encoded record (length prefix included).
pub(super) fn write(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) {
    let body = body_size(timestamp_delta, offset_delta, key, value, headers);
    out.reserve(body + 5);
    varint::write(out, body as i64);
    out.push(0); // attributes: unused in v2
    varint::write(out, timestamp_delta);
    varint::write(out, i64::from(offset_delta));
    write_nullable(out, key);
    write_nullable(out, value);
    varint::write(out, headers.len() as i64);
    for h in headers {
        write_nullable(out, Some(&h.key));
        write_nullable(out, h.value.as_deref());
    }
}

fn write_nullable(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => varint::write(out, -1),
        Some(f) => {
            varint::write(out, f.len() as i64);
            out.extend_from_slice(f);
        }
    }
}
