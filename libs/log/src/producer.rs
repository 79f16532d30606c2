//! Idempotent- and transactional-producer state of one partition (Kafka's
//! `ProducerStateManager`).
//!
//! For each producer id the log remembers its epoch and the sequence ranges
//! and offsets of its latest batches, as runs: batches that follow each
//! other in both sequence and offset share one entry (a request of many
//! batches is one run). With that the leader recognises a retried batch and
//! answers with the offsets it got the first time instead of appending it
//! again, and refuses a batch that skips sequence numbers.
//!
//! For transactional producers it also remembers where each producer's open
//! transaction began in this partition: the oldest of those is the first
//! unstable offset, below which the last stable offset (LSO) stays and
//! `read_committed` consumers read. A transaction ends with a marker (a
//! control batch the broker writes for the coordinator); an ended
//! transaction still counts as unstable until its marker is replicated
//! (below the high watermark), because a leader change could lose it.
//!
//! The state is derived from the log alone: every append (leader or
//! follower) updates it, and opening or truncating the log rebuilds it by
//! replaying batch headers from the newest snapshot at or below the log end.
//! Snapshots (`<offset>.snapshot`: the state as of that offset) are written
//! when a segment rolls and when the log closes, so a restart replays at
//! most the active segment, and deleted with the segments they precede.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use runnel_records::batch::{BatchHeader, ControlRecord, ControlType, add_sequence};

use crate::checkpoint;
use crate::error::LogError;
use crate::storage::Storage;
use crate::txn_index::AbortedTxn;
use crate::{Offset, TimestampMs};

/// Runs of batches remembered per producer. A retry is recognised while its
/// run is among the producer's latest this many (each run is an unbroken
/// stretch of its batches, so Runnel's client, with one request in flight
/// per partition, needs one; Kafka's clients keep at most 5 batches in flight).
pub const CACHED_BATCHES: usize = 64;

pub(crate) const SNAPSHOT_SUFFIX: &str = ".snapshot";
const SNAPSHOT_MAGIC: &[u8; 4] = b"RNPS";
/// Version 2 added each producer's open transaction and coordinator epoch.
const SNAPSHOT_VERSION: u32 = 2;

/// One remembered batch of a producer, or a run of consecutive ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedBatch {
    /// Sequence number of its first record.
    pub first_seq: i32,
    /// Sequence number of its last record.
    pub last_seq: i32,
    /// Offset of its first record.
    pub first_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
}

/// What a partition knows about one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The producer's current epoch.
    pub epoch: i16,
    /// Its latest batches in this epoch, oldest first.
    batches: VecDeque<CachedBatch>,
    /// When this partition last appended a batch of it, by the broker's
    /// clock (for `producer.id.expiration.ms`; record timestamps are the
    /// producer's and may be anything).
    pub last_timestamp: TimestampMs,
    /// Offset of the first record of its open transaction here, if one is open.
    pub current_txn_first_offset: Option<Offset>,
    /// Epoch of the coordinator that wrote its last marker (-1: none yet).
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    /// Sequence number of the last record appended in the current epoch.
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    /// Offset of the producer's last appended record.
    pub fn last_offset(&self) -> Option<Offset> {
        self.batches.back().map(|b| b.last_offset)
    }

    /// The remembered batches, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &CachedBatch> {
        self.batches.iter()
    }
}

/// The sequence number of the last record of a batch (sequences wrap at `i32::MAX`).
pub fn last_sequence(h: &BatchHeader) -> i32 {
    add_sequence(h.base_sequence, h.last_offset_delta)
}

/// A transaction that a marker just ended in this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    /// Its producer.
    pub producer_id: i64,
    /// Offset of its first record here (the marker's own offset if it wrote none).
    pub first_offset: Offset,
    /// Offset of the marker.
    pub last_offset: Offset,
    /// Whether it aborted.
    pub aborted: bool,
}

/// What the leader makes of a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Append it.
    Append,
    /// Already in the log: answer with these offsets, append nothing.
    Duplicate(CachedBatch),
}

/// Producer state of one partition, as of `end_offset`.
#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset → producer (derived from `producers`).
    ongoing: BTreeMap<Offset, i64>,
    /// Ended transactions whose markers may not be replicated yet, by first offset.
    unreplicated: BTreeMap<Offset, CompletedTxn>,
}

impl ProducerStates {
    pub(crate) fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(&id, e)| (id, e))
    }

    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Checks a producer's batch against what the log already holds from it
    /// (Kafka's rules): an older epoch is fenced; a newer epoch must start
    /// at sequence 0; in the same epoch, a batch matching a remembered one
    /// is a duplicate and anything else must follow the last sequence. A
    /// producer the partition does not know may start anywhere (its state
    /// may have expired or gone with retention).
    pub(crate) fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, LogError> {
        if h.producer_epoch < 0 || h.base_sequence < 0 {
            return Err(LogError::InvalidProducerState {
                producer_id: h.producer_id,
                reason: format!(
                    "epoch {} and base sequence {} must not be negative",
                    h.producer_epoch, h.base_sequence
                ),
            });
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(LogError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    found: h.base_sequence,
                    expected: 0,
                })
            };
        }
        if !h.is_transactional()
            && let Some(first) = entry.current_txn_first_offset
        {
            return Err(LogError::InvalidTxnState {
                producer_id: h.producer_id,
                reason: format!(
                    "a non-transactional batch while its transaction opened at offset {first} is still open"
                ),
            });
        }
        let last_seq = last_sequence(h);
        // Within a run, sequences and offsets advance together (and never wrap).
        let within = |b: &&CachedBatch| {
            (b.first_seq == h.base_sequence && b.last_seq == last_seq)
                || (h.base_sequence <= last_seq
                    && b.first_seq <= h.base_sequence
                    && last_seq <= b.last_seq)
        };
        if let Some(run) = entry.batches.iter().rev().find(within) {
            let first_offset = run.first_offset + Offset::from(h.base_sequence - run.first_seq);
            return Ok(SequenceCheck::Duplicate(CachedBatch {
                first_seq: h.base_sequence,
                last_seq,
                first_offset,
                last_offset: first_offset + Offset::from(h.last_offset_delta),
            }));
        }
        match entry.last_seq() {
            Some(last) if add_sequence(last, 1) != h.base_sequence => {
                Err(LogError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    found: h.base_sequence,
                    expected: add_sequence(last, 1),
                })
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Checks a transaction marker the coordinator asks this leader to
    /// write: a marker from an older producer epoch, or from an older
    /// coordinator than the last marker's, is refused.
    pub(crate) fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), LogError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id,
                epoch: producer_epoch,
                current: entry.epoch,
            });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(LogError::TransactionCoordinatorFenced {
                producer_id,
                coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records a batch appended at `now` (its header carries its final
    /// offsets; `control` is the record of a control batch). Batches without
    /// a producer id change nothing. Returns the transaction a marker ended.
    pub(crate) fn apply(
        &mut self,
        h: &BatchHeader,
        control: Option<ControlRecord>,
        now: TimestampMs,
    ) -> Option<CompletedTxn> {
        if !h.has_producer_id() {
            return None;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: now,
                current_txn_first_offset: None,
                coordinator_epoch: -1,
            });
        if h.is_control() {
            let marker = control.and_then(ControlRecord::end_txn)?;
            if h.producer_epoch > entry.epoch {
                entry.epoch = h.producer_epoch;
                entry.batches.clear();
            }
            entry.coordinator_epoch = marker.coordinator_epoch;
            entry.last_timestamp = entry.last_timestamp.max(now);
            let first = match entry.current_txn_first_offset.take() {
                Some(first) => {
                    self.ongoing.remove(&first);
                    first
                }
                None => h.base_offset,
            };
            let completed = CompletedTxn {
                producer_id: h.producer_id,
                first_offset: first,
                last_offset: h.base_offset,
                aborted: marker.control_type == ControlType::Abort,
            };
            self.unreplicated.insert(first, completed);
            return Some(completed);
        }
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if h.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(h.base_offset);
            self.ongoing.insert(h.base_offset, h.producer_id);
        }
        entry.last_timestamp = entry.last_timestamp.max(now);
        let last_seq = last_sequence(h);
        let wraps = last_seq < h.base_sequence;
        if let Some(run) = entry.batches.back_mut() {
            if !wraps
                && run.last_seq < h.base_sequence
                && h.base_sequence == add_sequence(run.last_seq, 1)
                && h.base_offset == run.last_offset + 1
            {
                run.last_seq = last_seq;
                run.last_offset = h.last_offset();
                return None;
            }
            if h.base_sequence <= run.last_seq {
                // The sequence wrapped past i32::MAX: older runs would match new numbers.
                entry.batches.clear();
            }
        }
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(CachedBatch {
            first_seq: h.base_sequence,
            last_seq,
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        None
    }

    /// The oldest offset a `read_committed` reader may not pass yet: the
    /// start of the oldest open transaction, or of the oldest ended one whose
    /// marker is not below `high_watermark`.
    pub(crate) fn first_unstable_offset(&self, high_watermark: Offset) -> Option<Offset> {
        let open = self.ongoing.keys().next().copied();
        let unreplicated = self
            .unreplicated
            .values()
            .find(|t| t.last_offset >= high_watermark)
            .map(|t| t.first_offset);
        match (open, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets ended transactions whose markers are below `high_watermark`.
    pub(crate) fn prune_replicated(&mut self, high_watermark: Offset) {
        self.unreplicated
            .retain(|_, t| t.last_offset >= high_watermark);
    }

    /// The last stable offset to record with a transaction just ended: the
    /// start of the oldest transaction still open, else right after its marker.
    pub(crate) fn last_stable_offset_after(&self, completed: &CompletedTxn) -> Offset {
        self.ongoing
            .keys()
            .next()
            .copied()
            .unwrap_or(completed.last_offset + 1)
    }

    /// The aborted transactions that applying `batches` (in order) would
    /// end, with their index entries, without changing the state: the log
    /// indexes them before it writes the markers.
    pub(crate) fn preview_aborts(
        &self,
        batches: &[(BatchHeader, Option<ControlRecord>)],
    ) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        if !batches.iter().any(|(h, _)| h.is_control()) {
            return out;
        }
        let mut open: HashMap<i64, Option<Offset>> = HashMap::new();
        let mut ongoing = self.ongoing.clone();
        for (h, control) in batches {
            if !h.has_producer_id() {
                continue;
            }
            let pid = h.producer_id;
            let current = *open.entry(pid).or_insert_with(|| {
                self.producers
                    .get(&pid)
                    .and_then(|e| e.current_txn_first_offset)
            });
            if h.is_control() {
                let Some(marker) = control.and_then(ControlRecord::end_txn) else {
                    continue;
                };
                let first = match current {
                    Some(first) => {
                        ongoing.remove(&first);
                        first
                    }
                    None => h.base_offset,
                };
                open.insert(pid, None);
                if marker.control_type == ControlType::Abort {
                    out.push(AbortedTxn {
                        producer_id: pid,
                        first_offset: first,
                        last_offset: h.base_offset,
                        last_stable_offset: ongoing
                            .keys()
                            .next()
                            .copied()
                            .unwrap_or(h.base_offset + 1),
                    });
                }
            } else if h.is_transactional() && current.is_none() {
                open.insert(pid, Some(h.base_offset));
                ongoing.insert(h.base_offset, pid);
            }
        }
        out
    }

    /// Open transactions, oldest first: (first offset, producer id).
    pub(crate) fn ongoing(&self) -> impl Iterator<Item = (Offset, i64)> + '_ {
        self.ongoing.iter().map(|(&o, &p)| (o, p))
    }

    /// Saves an entry before an append changes it, so a failed write can be undone.
    pub(crate) fn save(&self, producer_id: i64, undo: &mut Vec<(i64, Option<ProducerEntry>)>) {
        if !undo.iter().any(|(id, _)| *id == producer_id) {
            undo.push((producer_id, self.producers.get(&producer_id).cloned()));
        }
    }

    /// Puts back entries saved by [`save`](Self::save).
    pub(crate) fn restore(&mut self, undo: Vec<(i64, Option<ProducerEntry>)>) {
        for (id, entry) in undo {
            match entry {
                Some(e) => self.producers.insert(id, e),
                None => self.producers.remove(&id),
            };
        }
    }

    /// Forgets producers whose last record lies below the log start (their
    /// batches were deleted) or who have been silent for `max_idle_ms`;
    /// a producer with an open transaction is never idle. Returns how many
    /// were removed.
    pub(crate) fn remove_stale(
        &mut self,
        log_start: Offset,
        now: TimestampMs,
        max_idle_ms: Option<i64>,
    ) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            let last = e.last_offset().max(e.current_txn_first_offset);
            let deleted = last.is_none_or(|o| o < log_start);
            let idle = e.current_txn_first_offset.is_none()
                && max_idle_ms.is_some_and(|max| now.saturating_sub(e.last_timestamp) > max);
            !(deleted || idle)
        });
        let removed = before - self.producers.len();
        if removed > 0 {
            self.rebuild_ongoing();
        }
        self.unreplicated.retain(|_, t| t.last_offset >= log_start);
        removed
    }

    /// Derives the open-transaction map from the entries.
    fn rebuild_ongoing(&mut self) {
        self.ongoing = self
            .producers
            .iter()
            .filter_map(|(&id, e)| e.current_txn_first_offset.map(|o| (o, id)))
            .collect();
    }

    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4 + self.producers.len() * 40);
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            body.extend_from_slice(&(e.batches.len() as u16).to_be_bytes());
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
            }
            body.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
        }
        let mut out = Vec::with_capacity(12 + body.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn decode(buf: &[u8]) -> Result<ProducerStates, String> {
        let mut r = Reader(buf);
        if r.take(4)? != SNAPSHOT_MAGIC {
            return Err("not a producer snapshot".into());
        }
        let version = r.u32()?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return Err(format!("unknown snapshot version {version}"));
        }
        let crc = r.u32()?;
        if crc32c::crc32c(r.0) != crc {
            return Err("checksum mismatch".into());
        }
        let count = r.u32()?;
        let mut producers = HashMap::with_capacity((count as usize).min(1 << 16));
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp = r.i64()?;
            let n = r.u16()?;
            let mut batches = VecDeque::with_capacity(usize::from(n));
            for _ in 0..n {
                batches.push_back(CachedBatch {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            let (current_txn_first_offset, coordinator_epoch) = if version >= 2 {
                let first = r.i64()?;
                ((first >= 0).then_some(first), r.i32()?)
            } else {
                (None, -1)
            };
            producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp,
                    current_txn_first_offset,
                    coordinator_epoch,
                },
            );
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the last entry", r.0.len()));
        }
        let mut state = ProducerStates {
            producers,
            ..ProducerStates::default()
        };
        state.rebuild_ongoing();
        Ok(state)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.array()?))
    }
}

/// Snapshot file name for `offset`.
pub(crate) fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// Offsets of the snapshots in `dir`, ascending.
pub(crate) fn list_snapshots(storage: &dyn Storage, dir: &Path) -> Result<Vec<Offset>, LogError> {
    let names = storage
        .list(dir)
        .map_err(LogError::io("list log directory", dir))?;
    let mut offsets: Vec<Offset> = names
        .iter()
        .filter_map(|n| n.strip_suffix(SNAPSHOT_SUFFIX))
        .filter_map(|b| (b.len() == 20).then(|| b.parse().ok()).flatten())
        .collect();
    offsets.sort_unstable();
    Ok(offsets)
}

/// Writes the state as of `offset`. Not fsynced: a snapshot lost or torn
/// by a crash fails its checksum or is missing, and the state is rebuilt
/// from an older one and the log.
pub(crate) fn write_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    offset: Offset,
    state: &ProducerStates,
) -> Result<(), LogError> {
    checkpoint::write_unsynced(storage, &snapshot_path(dir, offset), &state.encode())
}

/// Deletes the snapshots whose offset satisfies `doomed`; returns how many.
pub(crate) fn delete_snapshots(
    storage: &dyn Storage,
    dir: &Path,
    doomed: impl Fn(Offset) -> bool,
) -> Result<usize, LogError> {
    let mut deleted = 0;
    for offset in list_snapshots(storage, dir)? {
        if doomed(offset) {
            delete_snapshot(storage, dir, offset)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

fn delete_snapshot(storage: &dyn Storage, dir: &Path, offset: Offset) -> Result<(), LogError> {
    let path = snapshot_path(dir, offset);
    storage
        .remove_file(&path)
        .map_err(LogError::io("delete producer snapshot", &path))
}

/// What [`load_latest`] found: the state and the offset it is as of, if any
/// snapshot was readable, and how many unreadable snapshots it deleted.
pub(crate) type Loaded = (Option<(ProducerStates, Offset)>, usize);

/// Loads the newest readable snapshot at or below `at_most`. Snapshots past
/// it and unreadable ones are deleted (the state is rebuilt from the log
/// instead, as Kafka does).
pub(crate) fn load_latest(
    storage: &dyn Storage,
    dir: &Path,
    at_most: Offset,
) -> Result<Loaded, LogError> {
    let mut discarded = 0;
    let mut kept = Vec::new();
    for offset in list_snapshots(storage, dir)? {
        if offset > at_most {
            delete_snapshot(storage, dir, offset)?;
        } else {
            kept.push(offset);
        }
    }
    for offset in kept.into_iter().rev() {
        let path = snapshot_path(dir, offset);
        let decoded = checkpoint::read_file(storage, &path)?
            .ok_or_else(|| "vanished".to_owned())
            .and_then(|bytes| ProducerStates::decode(&bytes));
        match decoded {
            Ok(state) => return Ok((Some((state, offset)), discarded)),
            Err(_) => {
                discarded += 1;
                delete_snapshot(storage, dir, offset)?;
            }
        }
    }
    Ok((None, discarded))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TimestampMs = 1000;

    impl ProducerStates {
        fn apply_data(&mut self, h: &BatchHeader, now: TimestampMs) {
            assert_eq!(self.apply(h, None, now), None);
        }
    }

    fn header(pid: i64, epoch: i16, seq: i32, offset: Offset, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 1000,
            max_timestamp: 1000 + offset,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: records,
        }
    }

    #[test]
    fn sequences_follow_kafkas_rules() {
        let mut s = ProducerStates::default();
        // An unknown producer may start anywhere.
        assert_eq!(
            s.check(&header(7, 0, 5, 0, 3)).unwrap(),
            SequenceCheck::Append
        );
        s.apply_data(&header(7, 0, 5, 0, 3), T);
        // The same batch again is a duplicate with its original offsets.
        assert_eq!(
            s.check(&header(7, 0, 5, 99, 3)).unwrap(),
            SequenceCheck::Duplicate(CachedBatch {
                first_seq: 5,
                last_seq: 7,
                first_offset: 0,
                last_offset: 2
            })
        );
        assert_eq!(
            s.check(&header(7, 0, 8, 3, 1)).unwrap(),
            SequenceCheck::Append
        );
        assert!(matches!(
            s.check(&header(7, 0, 9, 3, 1)),
            Err(LogError::OutOfOrderSequence {
                found: 9,
                expected: 8,
                ..
            })
        ));
        // A new epoch must start at 0; an old one is fenced.
        assert!(matches!(
            s.check(&header(7, 1, 8, 3, 1)),
            Err(LogError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            s.check(&header(7, 1, 0, 3, 1)).unwrap(),
            SequenceCheck::Append
        );
        s.apply_data(&header(7, 1, 0, 3, 1), T);
        assert!(matches!(
            s.check(&header(7, 0, 8, 4, 1)),
            Err(LogError::InvalidProducerEpoch {
                epoch: 0,
                current: 1,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(7, 1, -1, 4, 1)),
            Err(LogError::InvalidProducerState { .. })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 1, 3), 1);
        let mut s = ProducerStates::default();
        s.apply_data(&header(1, 0, i32::MAX - 1, 0, 2), T);
        assert_eq!(s.get(1).unwrap().last_seq(), Some(i32::MAX));
        assert_eq!(
            s.check(&header(1, 0, 0, 2, 1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn consecutive_batches_form_one_run_and_only_the_latest_runs_are_remembered() {
        let mut s = ProducerStates::default();
        // Offsets follow sequences: one run, and any batch of it is a duplicate.
        for i in 0..10 {
            s.apply_data(&header(1, 0, i * 3, Offset::from(i * 3), 3), T);
        }
        assert_eq!(s.get(1).unwrap().batches().count(), 1);
        assert_eq!(
            s.check(&header(1, 0, 9, 99, 3)).unwrap(),
            SequenceCheck::Duplicate(CachedBatch {
                first_seq: 9,
                last_seq: 11,
                first_offset: 9,
                last_offset: 11
            })
        );
        // A batch overlapping the end of the run is not a duplicate but a gap.
        assert!(s.check(&header(1, 0, 28, 99, 3)).is_err());
        // Another producer's records in between start a new run each time.
        let mut s = ProducerStates::default();
        for i in 0..(CACHED_BATCHES as i32 + 10) {
            s.apply_data(&header(1, 0, i, Offset::from(i) * 2, 1), T);
        }
        let e = s.get(1).unwrap();
        assert_eq!(e.batches().count(), CACHED_BATCHES);
        assert_eq!(e.batches().next().unwrap().first_seq, 10);
        assert!(s.check(&header(1, 0, 9, 0, 1)).is_err(), "forgotten");
        assert!(matches!(
            s.check(&header(1, 0, 10, 0, 1)).unwrap(),
            SequenceCheck::Duplicate(CachedBatch {
                first_offset: 20,
                ..
            })
        ));
    }

    #[test]
    fn a_wrapped_sequence_forgets_the_runs_before_it() {
        let mut s = ProducerStates::default();
        s.apply_data(&header(1, 0, 5, 0, 5), T);
        s.apply_data(&header(1, 0, 10, 10, i32::MAX - 9), T);
        s.apply_data(&header(1, 0, 0, i64::from(i32::MAX) + 1, 6), T);
        let e = s.get(1).unwrap();
        assert_eq!(e.batches().count(), 1);
        // Sequence 5..9 is new again, not the old run's.
        assert_eq!(
            s.check(&header(1, 0, 6, 0, 1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn snapshots_round_trip_and_corruption_is_detected() {
        let mut s = ProducerStates::default();
        s.apply_data(&header(1, 0, 0, 0, 5), T);
        s.apply_data(&header(2, 3, 10, 5, 2), T);
        let bytes = s.encode();
        let back = ProducerStates::decode(&bytes).unwrap();
        assert_eq!(back.producers, s.producers);
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(ProducerStates::decode(&bad).is_err());
        assert!(ProducerStates::decode(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn stale_producers_are_removed() {
        let mut s = ProducerStates::default();
        s.apply_data(&header(1, 0, 0, 0, 5), T); // last offset 4
        s.apply_data(&header(2, 0, 0, 10, 1), T + 10); // last offset 10
        assert_eq!(s.remove_stale(5, 0, None), 1);
        assert!(s.get(1).is_none());
        assert_eq!(s.remove_stale(0, 100_000, Some(1000)), 1);
        assert_eq!(s.len(), 0);
    }
}
