//! The sparse offset index and the time index of a segment.
//!
//! On disk both are Kafka's formats: the `.index` holds 8-byte entries
//! (offset relative to the segment base, file position), the `.timeindex`
//! 12-byte entries (timestamp, relative offset), big-endian. In memory they
//! are sorted vectors, loaded on first use; new entries reach the files when
//! the segment is flushed, rolled or closed. An index lost in a crash is
//! rebuilt by recovery, which rescans every segment past the last flush.

use crate::{Offset, TimestampMs};

/// Bytes of one `.index` entry.
pub(crate) const OFFSET_ENTRY_SIZE: usize = 8;
/// Bytes of one `.timeindex` entry.
pub(crate) const TIME_ENTRY_SIZE: usize = 12;

/// An `.index` entry: the batch at `position` ends at `relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// Last offset of the batch, relative to the segment base.
    pub relative_offset: u32,
    /// File position of the batch.
    pub position: u32,
}

/// A `.timeindex` entry: records up to `relative_offset` have timestamps up to `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// Largest timestamp seen up to the entry.
    pub timestamp: TimestampMs,
    /// Offset holding that timestamp, relative to the segment base.
    pub relative_offset: u32,
}

/// Both indexes of a segment, with how much of each is already on disk.
#[derive(Debug, Default, Clone)]
pub(crate) struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    /// Entries already written to the `.index` file.
    pub persisted_offsets: usize,
    /// Entries already written to the `.timeindex` file.
    pub persisted_times: usize,
}

impl SegmentIndex {
    /// Position to start scanning from for the first batch ending at or after `relative`.
    /// The entry to start scanning from for the first batch ending at or
    /// after `relative` (`None`: scan from the start of the segment).
    pub(crate) fn lookup_position(&self, relative: u64) -> Option<OffsetEntry> {
        let i = self
            .offsets
            .partition_point(|e| u64::from(e.relative_offset) < relative);
        // Entries before `i` end strictly before `relative`; the batch after
        // the last of them is the first candidate. Starting at entry i-1's
        // batch and skipping it is the same, and lets the caller check that
        // the entry really points at a batch ending at its offset.
        i.checked_sub(1).map(|j| self.offsets[j])
    }

    /// The entry to start a timestamp search from: every record up to its
    /// offset is older than `timestamp` (`None`: search from the start).
    pub(crate) fn lookup_time(&self, timestamp: TimestampMs) -> Option<TimeEntry> {
        let i = self.times.partition_point(|e| e.timestamp < timestamp);
        i.checked_sub(1).map(|j| self.times[j])
    }

    /// Adds a time entry if `timestamp` is larger than the last one.
    pub(crate) fn maybe_append_time(&mut self, timestamp: TimestampMs, relative_offset: u32) {
        if self
            .times
            .last()
            .is_none_or(|last| timestamp > last.timestamp)
        {
            self.times.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
    }

    /// Drops entries for batches at or after `position` / offsets at or after `relative`.
    pub(crate) fn truncate(&mut self, position: u64, relative: u64) {
        self.offsets.retain(|e| u64::from(e.position) < position);
        self.times
            .retain(|e| u64::from(e.relative_offset) < relative);
        self.persisted_offsets = self.persisted_offsets.min(self.offsets.len());
        self.persisted_times = self.persisted_times.min(self.times.len());
    }

    /// Entries not yet on disk, encoded; `None` when up to date.
    pub(crate) fn pending_offsets(&self) -> Option<(u64, Vec<u8>)> {
        let pending = &self.offsets[self.persisted_offsets..];
        if pending.is_empty() {
            return None;
        }
        let mut buf = Vec::with_capacity(pending.len() * OFFSET_ENTRY_SIZE);
        for e in pending {
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
            buf.extend_from_slice(&e.position.to_be_bytes());
        }
        Some(((self.persisted_offsets * OFFSET_ENTRY_SIZE) as u64, buf))
    }

    /// Time entries not yet on disk, encoded; `None` when up to date.
    pub(crate) fn pending_times(&self) -> Option<(u64, Vec<u8>)> {
        let pending = &self.times[self.persisted_times..];
        if pending.is_empty() {
            return None;
        }
        let mut buf = Vec::with_capacity(pending.len() * TIME_ENTRY_SIZE);
        for e in pending {
            buf.extend_from_slice(&e.timestamp.to_be_bytes());
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        Some(((self.persisted_times * TIME_ENTRY_SIZE) as u64, buf))
    }

    /// Decodes index files, checking they are sorted and point inside a log of `log_size` bytes.
    pub(crate) fn decode(offsets: &[u8], times: &[u8], log_size: u64) -> Option<SegmentIndex> {
        if !offsets.len().is_multiple_of(OFFSET_ENTRY_SIZE)
            || !times.len().is_multiple_of(TIME_ENTRY_SIZE)
        {
            return None;
        }
        let offsets: Vec<OffsetEntry> = offsets
            .chunks_exact(OFFSET_ENTRY_SIZE)
            .map(|c| OffsetEntry {
                relative_offset: u32::from_be_bytes(c[..4].try_into().expect("4 bytes")),
                position: u32::from_be_bytes(c[4..].try_into().expect("4 bytes")),
            })
            .collect();
        let times: Vec<TimeEntry> = times
            .chunks_exact(TIME_ENTRY_SIZE)
            .map(|c| TimeEntry {
                timestamp: i64::from_be_bytes(c[..8].try_into().expect("8 bytes")),
                relative_offset: u32::from_be_bytes(c[8..].try_into().expect("4 bytes")),
            })
            .collect();
        let sorted_offsets = offsets
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
        let sorted_times = times.windows(2).all(|w| {
            w[0].timestamp < w[1].timestamp && w[0].relative_offset <= w[1].relative_offset
        });
        let inside = offsets
            .last()
            .is_none_or(|e| u64::from(e.position) < log_size);
        (sorted_offsets && sorted_times && inside).then_some(SegmentIndex {
            persisted_offsets: offsets.len(),
            persisted_times: times.len(),
            offsets,
            times,
        })
    }
}

/// Offset relative to a segment base, if it fits an index entry.
pub(crate) fn relative(base: Offset, offset: Offset) -> Option<u32> {
    u32::try_from(offset.checked_sub(base)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(u32, u32)]) -> SegmentIndex {
        SegmentIndex {
            offsets: entries
                .iter()
                .map(|&(relative_offset, position)| OffsetEntry {
                    relative_offset,
                    position,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn lookup_starts_at_the_last_batch_ending_before_the_target() {
        let idx = index(&[(9, 1000), (19, 2000), (29, 3000)]);
        let pos = |r| idx.lookup_position(r).map_or(0, |e| e.position);
        assert_eq!(pos(0), 0);
        assert_eq!(pos(9), 0);
        assert_eq!(pos(10), 1000);
        assert_eq!(pos(19), 1000);
        assert_eq!(pos(20), 2000);
        assert_eq!(pos(1000), 3000);
    }

    #[test]
    fn encode_decode_round_trip_and_sanity() {
        let mut idx = index(&[(9, 1000), (19, 2000)]);
        idx.maybe_append_time(5, 3);
        idx.maybe_append_time(5, 4); // not larger: skipped
        idx.maybe_append_time(7, 19);
        let (_, o) = idx.pending_offsets().unwrap();
        let (_, t) = idx.pending_times().unwrap();
        let back = SegmentIndex::decode(&o, &t, 2001).unwrap();
        assert_eq!(back.offsets, idx.offsets);
        assert_eq!(back.times, idx.times);
        assert!(
            SegmentIndex::decode(&o, &t, 2000).is_none(),
            "position past the log"
        );
        assert!(
            SegmentIndex::decode(&o[..7], &t, 5000).is_none(),
            "partial entry"
        );
        let mut swapped = o.clone();
        swapped.rotate_left(8);
        assert!(
            SegmentIndex::decode(&swapped, &t, 5000).is_none(),
            "unsorted"
        );
    }
}
