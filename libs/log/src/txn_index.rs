//! The aborted-transaction index (`.txnindex`, Kafka's `TransactionIndex`).
//!
//! One per segment, created only when a transaction aborts in it: each
//! entry is an aborted transaction whose abort marker lies in that segment,
//! with the offsets a `read_committed` fetch needs to skip its records.
//! Entries are 34 bytes, big-endian, in the order the markers were written:
//!
//! ```text
//! version: int16 (0) | producerId: int64 | firstOffset: int64 | lastOffset: int64 | lastStableOffset: int64
//! ```
//!
//! `lastOffset` is the marker's offset; `lastStableOffset` is the partition's
//! last stable offset right after the marker (the first offset of the oldest
//! transaction still open, or the marker's offset + 1). A fetch that reads up
//! to some offset stops looking at later segments' entries once one of them
//! has a `lastStableOffset` at or past it: no transaction spanning the read
//! range can end later than that.

use crate::Offset;

/// Bytes per entry.
pub(crate) const ENTRY_SIZE: usize = 34;
const VERSION: i16 = 0;

/// An aborted transaction, as the index and Kafka's FetchResponse describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer whose transaction aborted.
    pub producer_id: i64,
    /// Offset of the transaction's first record in this partition.
    pub first_offset: Offset,
    /// Offset of its abort marker.
    pub last_offset: Offset,
    /// The last stable offset right after the marker was written.
    pub last_stable_offset: Offset,
}

impl AbortedTxn {
    /// The entry's 34 bytes.
    pub(crate) fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[..2].copy_from_slice(&VERSION.to_be_bytes());
        b[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        b[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        b[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        b[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        b
    }

    /// Decodes a whole index file; `None` if it is not one (a torn write or
    /// an unknown version): the caller rebuilds it from the log.
    pub(crate) fn decode_all(buf: &[u8]) -> Option<Vec<AbortedTxn>> {
        if !buf.len().is_multiple_of(ENTRY_SIZE) {
            return None;
        }
        let i64_at =
            |e: &[u8], at: usize| i64::from_be_bytes(e[at..at + 8].try_into().expect("8 bytes"));
        buf.chunks_exact(ENTRY_SIZE)
            .map(|e| {
                let entry = AbortedTxn {
                    producer_id: i64_at(e, 2),
                    first_offset: i64_at(e, 10),
                    last_offset: i64_at(e, 18),
                    last_stable_offset: i64_at(e, 26),
                };
                let sane = i16::from_be_bytes([e[0], e[1]]) == VERSION
                    && entry.first_offset <= entry.last_offset;
                sane.then_some(entry)
            })
            .collect()
    }
}

/// The entries of one segment that a read of `[from, upper)` must know
/// about, and whether later segments can be skipped.
pub(crate) fn collect(
    entries: &[AbortedTxn],
    from: Offset,
    upper: Offset,
    out: &mut Vec<AbortedTxn>,
) -> bool {
    for e in entries {
        if e.last_offset >= from && e.first_offset < upper {
            out.push(*e);
        }
        if e.last_stable_offset >= upper {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_torn_files_are_refused() {
        let a = AbortedTxn {
            producer_id: 7,
            first_offset: 10,
            last_offset: 20,
            last_stable_offset: 21,
        };
        let b = AbortedTxn {
            producer_id: 8,
            first_offset: 15,
            last_offset: 30,
            last_stable_offset: 31,
        };
        let mut file = a.encode().to_vec();
        file.extend_from_slice(&b.encode());
        assert_eq!(AbortedTxn::decode_all(&file), Some(vec![a, b]));
        assert_eq!(AbortedTxn::decode_all(&file[..40]), None);
        let mut bad = file.clone();
        bad[1] = 9;
        assert_eq!(AbortedTxn::decode_all(&bad), None);
    }

    #[test]
    fn collection_stops_once_the_read_range_is_stable() {
        let e = |pid, first, last, lso| AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        };
        let entries = [e(1, 0, 5, 6), e(2, 8, 12, 13), e(3, 20, 25, 26)];
        let mut out = Vec::new();
        // Reading [6, 13): the first ended before, the second overlaps, and
        // its stable offset 13 covers the whole read.
        assert!(collect(&entries, 6, 13, &mut out));
        assert_eq!(out, vec![entries[1]]);
        out.clear();
        assert!(!collect(&entries, 0, 100, &mut out));
        assert_eq!(out.len(), 3);
    }
}
