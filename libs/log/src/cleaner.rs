//! Log compaction (`cleanup.policy=compact`): keep the latest record per key.
//!
//! Cleaning runs in three steps so a broker holds its lock on the log only
//! for the first and the last, which are cheap:
//!
//! 1. [`Log::plan_cleaning`] picks the cleanable segments (closed, older
//!    than `min.compaction.lag.ms`) and takes handles to their files.
//! 2. [`CleaningPlan::run`] builds a map key → latest offset over the dirty
//!    part (everything after the last cleaning), then rewrites the cleanable
//!    segments into `.cleaned` files, dropping records whose key has a later
//!    offset, keyless records and tombstones whose delete horizon has passed.
//!    Offsets are preserved (gaps are fine); a batch that loses nothing is
//!    copied byte for byte, one that loses records is re-encoded with its
//!    codec, producer fields and offset range intact. Tombstones get a delete
//!    horizon (KIP-534: `now + delete.retention.ms`, stored as the batch's
//!    base timestamp with attribute bit 6) the first time they are cleaned,
//!    and are dropped by the first cleaning after it.
//!
//!    Transactions, as Kafka cleans them: nothing from the first unsettled
//!    transaction on is cleanable; the batches of aborted transactions
//!    (known from the `.txnindex` files) are dropped and never enter the key
//!    map; a transaction marker whose transaction has no record left gets a
//!    delete horizon like a tombstone and goes after it, with its
//!    `.txnindex` entry. A producer's last batch is always kept (emptied).
//! 3. [`Log::install_cleaned`] checks the log still has the planned segments
//!    and swaps the cleaned ones in.
//!
//! The swap is crash-safe: a cleaned segment is fsynced as `.cleaned`,
//! renamed to `.swap` (the commit point), the segments it replaces are
//! deleted, and it is renamed to its final name. Opening the log deletes
//! `.cleaned` files (not committed) and finishes any `.swap` (committed), so
//! a crash at any point leaves every record that should be kept.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use runnel_records::batch::{BatchBuilder, BatchHeader, RecordBatch, TimestampType};

use crate::checkpoint;
use crate::error::LogError;
use crate::log::{CLEANED_SUFFIX, CLEANER_OFFSET_CHECKPOINT, Log, SWAP_SUFFIX};
use crate::scan::{SCAN_CHUNK, ScanError, Scanner};
use crate::segment::{
    BatchMeta, INDEX_SUFFIX, LOG_SUFFIX, Segment, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX, file_name,
    remove_if_present,
};
use crate::storage::{Storage, StorageFile};
use crate::txn_index::AbortedTxn;
use crate::{Offset, TimestampMs};

/// Bytes a key map entry costs beyond the key: the `Bytes` handle, the
/// offset and the hash table's own slot.
const MAP_ENTRY_OVERHEAD: usize = 64;

/// Cleaner settings (Kafka's `log.cleaner.*` broker configs).
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// `log.cleaner.dedupe.buffer.size`: memory for the key → offset map;
    /// when full, cleaning stops at the last whole segment mapped.
    pub dedupe_buffer_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            dedupe_buffer_bytes: 128 * 1024 * 1024,
        }
    }
}

/// What a cleaning did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments rewritten.
    pub segments_cleaned: usize,
    /// Segments that replaced them.
    pub segments_written: usize,
    /// Bytes read by the rewrite.
    pub bytes_read: u64,
    /// Bytes written by the rewrite.
    pub bytes_written: u64,
    /// Bytes read to build the key map.
    pub map_bytes_read: u64,
    /// Records read by the rewrite.
    pub records_read: u64,
    /// Records kept.
    pub records_retained: u64,
    /// Tombstones dropped because their delete horizon passed.
    pub tombstones_dropped: u64,
    /// Batches of aborted transactions dropped.
    pub aborted_batches_dropped: u64,
    /// Transaction markers dropped because their delete horizon passed.
    pub markers_dropped: u64,
    /// First offset left dirty (the next cleaning starts its map here).
    pub first_dirty_offset: Offset,
}

#[derive(Debug)]
struct PlannedSegment {
    base: Offset,
    size: u64,
    file: Arc<dyn StorageFile>,
    /// Its `.txnindex` entries.
    aborted: Vec<AbortedTxn>,
}

/// The segments a cleaning will read and rewrite, captured from a [`Log`].
#[derive(Debug)]
pub struct CleaningPlan {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    /// Segments from the log start to the end of the cleanable part.
    cleanable: Vec<PlannedSegment>,
    /// Later segments (read only to learn each producer's last batch).
    rest: Vec<PlannedSegment>,
    first_dirty: Offset,
    /// Base of the first segment that may not be cleaned.
    clean_end: Offset,
    segment_bytes: u64,
    index_interval_bytes: u64,
    delete_retention_ms: i64,
    /// Every aborted transaction that began before `clean_end`: producer →
    /// (first offset, marker offset) ranges.
    aborted: HashMap<i64, Vec<(Offset, Offset)>>,
}

/// Cleaned segments waiting to be swapped into the log.
#[derive(Debug)]
pub struct CleanedLog {
    groups: Vec<CleanedGroup>,
    first_dirty: Offset,
    stats: CleanStats,
}

#[derive(Debug)]
struct CleanedGroup {
    /// (base, size) of the segments the cleaned one replaces.
    replaced: Vec<(Offset, u64)>,
    segment: Segment,
}

impl Log {
    fn cleanable_end(&self) -> Offset {
        let now = self.clock.now_ms();
        let lag = self.config.min_compaction_lag_ms;
        let active = *self
            .segments
            .keys()
            .next_back()
            .expect("a log always has an active segment");
        // The segment holding an unsettled transaction's start is not cleanable.
        let unstable = self
            .first_unstable_offset()
            .and_then(|o| self.segments.range(..=o).next_back())
            .map_or(active, |(&b, _)| b);
        self.segments
            .iter()
            .find(|(_, s)| lag > 0 && s.max_timestamp() > now.saturating_sub(lag))
            .map_or(active, |(&b, _)| b.min(active))
            .min(unstable)
    }

    /// Dirty bytes over cleanable bytes: how much a cleaning would have to look at anew.
    pub fn dirty_ratio(&self) -> f64 {
        let end = self.cleanable_end();
        let (mut total, mut dirty) = (0u64, 0u64);
        let first_dirty_segment = self
            .segments
            .range(..=self.first_dirty_offset)
            .next_back()
            .map_or(Offset::MIN, |(&b, _)| b);
        for (&base, s) in self.segments.range(..end) {
            total += s.size();
            if base >= first_dirty_segment {
                dirty += s.size();
            }
        }
        if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        }
    }

    /// Whether a compacted log should be cleaned now (`min.cleanable.dirty.ratio`,
    /// or dirty data older than `max.compaction.lag.ms`).
    pub fn needs_cleaning(&self) -> bool {
        if !self.config.cleanup_policy.compact {
            return false;
        }
        let end = self.cleanable_end();
        if self.first_dirty_offset >= end {
            return false;
        }
        let now = self.clock.now_ms();
        let overdue = self
            .segments
            .range(self.first_dirty_offset..end)
            .next()
            .is_some_and(|(_, s)| {
                s.max_timestamp() >= 0
                    && now.saturating_sub(s.max_timestamp()) > self.config.max_compaction_lag_ms
            });
        overdue || self.dirty_ratio() >= self.config.min_cleanable_dirty_ratio
    }

    /// First offset not yet covered by a cleaning.
    pub fn first_dirty_offset(&self) -> Offset {
        self.first_dirty_offset
    }

    /// Captures what a cleaning would rewrite; `None` if nothing is cleanable.
    pub fn plan_cleaning(&self) -> Option<CleaningPlan> {
        let end = self.cleanable_end();
        let planned = |(&base, s): (&Offset, &Segment)| PlannedSegment {
            base,
            size: s.size(),
            file: s.log_file(),
            aborted: s.aborted().to_vec(),
        };
        let mut aborted: HashMap<i64, Vec<(Offset, Offset)>> = HashMap::new();
        for e in self.segments.values().flat_map(Segment::aborted) {
            if e.first_offset < end {
                aborted
                    .entry(e.producer_id)
                    .or_default()
                    .push((e.first_offset, e.last_offset));
            }
        }
        let cleanable: Vec<PlannedSegment> = self.segments.range(..end).map(planned).collect();
        if cleanable.is_empty() {
            return None;
        }
        Some(CleaningPlan {
            dir: self.dir.clone(),
            storage: Arc::clone(&self.storage),
            cleanable,
            rest: self.segments.range(end..).map(planned).collect(),
            first_dirty: self.first_dirty_offset.min(end),
            clean_end: end,
            segment_bytes: self.config.segment_bytes,
            index_interval_bytes: self.config.index_interval_bytes,
            delete_retention_ms: self.config.delete_retention_ms,
            aborted,
        })
    }

    /// Plans, runs and installs a cleaning in one call; `None` if nothing is cleanable.
    pub fn clean(&mut self, config: &CleanerConfig) -> Result<Option<CleanStats>, LogError> {
        let Some(plan) = self.plan_cleaning() else {
            return Ok(None);
        };
        let cleaned = plan.run(config, self.clock.now_ms())?;
        self.install_cleaned(cleaned).map(Some)
    }

    /// Swaps cleaned segments in, if the segments they replace are still
    /// there unchanged; otherwise discards them and reports
    /// [`LogError::CleaningAborted`].
    pub fn install_cleaned(&mut self, cleaned: CleanedLog) -> Result<CleanStats, LogError> {
        let active = *self
            .segments
            .keys()
            .next_back()
            .expect("a log always has an active segment");
        let still_there = cleaned.groups.iter().all(|g| {
            g.replaced.iter().all(|&(base, size)| {
                base != active && self.segments.get(&base).is_some_and(|s| s.size() == size)
            })
        });
        let st = Arc::clone(&self.storage);
        if !still_there {
            for g in &cleaned.groups {
                g.segment.delete(st.as_ref())?;
            }
            return Err(LogError::CleaningAborted {
                path: self.dir.clone(),
            });
        }
        let sync_dir = |dir: &Path| {
            st.sync_dir(dir)
                .map_err(LogError::io("sync directory", dir))
        };
        for mut group in cleaned.groups {
            group.segment.rename_extra(st.as_ref(), SWAP_SUFFIX)?;
            sync_dir(&self.dir)?;
            for &(base, _) in group.replaced.iter().rev() {
                let old = self.segments.remove(&base).expect("checked above");
                old.delete(st.as_ref())?;
            }
            group.segment.rename_extra(st.as_ref(), "")?;
            sync_dir(&self.dir)?;
            self.segments
                .insert(group.segment.base_offset(), group.segment);
        }
        self.first_dirty_offset = self.first_dirty_offset.max(cleaned.first_dirty);
        checkpoint::write_offset(
            st.as_ref(),
            &self.dir.join(CLEANER_OFFSET_CHECKPOINT),
            self.first_dirty_offset,
        )?;
        Ok(cleaned.stats)
    }
}

fn scan_error(path: &Path, e: ScanError) -> LogError {
    match e {
        ScanError::Io(e) => LogError::io("read segment", path)(e),
        ScanError::Invalid { position, error } => LogError::Corrupt {
            path: path.to_owned(),
            reason: format!("invalid batch at byte {position}: {error}"),
        },
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> LogError {
    LogError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl CleaningPlan {
    fn path(&self, base: Offset) -> PathBuf {
        self.dir.join(file_name(base, LOG_SUFFIX, ""))
    }

    /// Whether a data batch belongs to an aborted transaction.
    fn is_aborted(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.aborted.get(&h.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|&(first, last)| first <= h.base_offset && h.base_offset <= last)
            })
    }

    /// Builds the key map and writes the cleaned segments (no lock on the log needed).
    pub fn run(self, config: &CleanerConfig, now_ms: TimestampMs) -> Result<CleanedLog, LogError> {
        let mut stats = CleanStats::default();
        let (map, map_end) = self.build_map(config, &mut stats)?;
        let last_batch_of_producer = self.producer_last_batches()?;

        // Rewrite every segment that ends at or before the mapped end.
        let mut to_clean: Vec<&PlannedSegment> = Vec::new();
        for (i, s) in self.cleanable.iter().enumerate() {
            let end = self.cleanable.get(i + 1).map_or(self.clean_end, |n| n.base);
            if end > map_end {
                break;
            }
            to_clean.push(s);
        }
        let mut groups = Vec::new();
        for group in self.group(&to_clean) {
            groups.push(self.clean_group(
                &group,
                &map,
                &last_batch_of_producer,
                now_ms,
                &mut stats,
            )?);
        }
        stats.segments_cleaned = to_clean.len();
        stats.segments_written = groups.len();
        stats.first_dirty_offset = map_end;
        Ok(CleanedLog {
            groups,
            first_dirty: map_end,
            stats,
        })
    }

    /// Key → latest offset over the dirty part, and where the mapped part ends.
    fn build_map(
        &self,
        config: &CleanerConfig,
        stats: &mut CleanStats,
    ) -> Result<(HashMap<Bytes, Offset>, Offset), LogError> {
        let mut map: HashMap<Bytes, Offset> = HashMap::new();
        let mut map_bytes = 0usize;
        let mut map_end = self.first_dirty;
        for (i, s) in self.cleanable.iter().enumerate() {
            let end = self.cleanable.get(i + 1).map_or(self.clean_end, |n| n.base);
            if end <= self.first_dirty {
                continue;
            }
            // Stop at a segment boundary once the map is full, but always map one segment.
            if map_bytes > config.dedupe_buffer_bytes && map_end > self.first_dirty {
                break;
            }
            let path = self.path(s.base);
            let mut scanner = Scanner::new(s.file.as_ref(), 0, s.size, SCAN_CHUNK);
            while let Some((_, batch)) = scanner.next_batch().map_err(|e| scan_error(&path, e))? {
                stats.map_bytes_read += batch.size() as u64;
                let h = batch.header();
                if h.is_control() || h.last_offset() < self.first_dirty || self.is_aborted(h) {
                    continue;
                }
                for record in batch.records().map_err(|e| corrupt(&path, e))? {
                    let record = record.map_err(|e| corrupt(&path, e))?;
                    if record.offset < self.first_dirty {
                        continue;
                    }
                    if let Some(key) = record.key {
                        match map.get_mut(&key[..]) {
                            Some(offset) => *offset = record.offset,
                            None => {
                                // A copy: a slice would pin the whole decoded
                                // batch, which the budget does not count.
                                map_bytes += key.len() + MAP_ENTRY_OVERHEAD;
                                map.insert(Bytes::copy_from_slice(&key), record.offset);
                            }
                        }
                    }
                }
            }
            map_end = end;
        }
        Ok((map, map_end))
    }

    /// Each producer's last data batch and last batch of any kind anywhere
    /// in the log: an emptied data batch that is a producer's last is kept
    /// (header only) so the producer's sequence survives compaction, as
    /// Kafka does; a marker that is its last is kept for its epoch.
    fn producer_last_batches(&self) -> Result<HashMap<i64, LastBatches>, LogError> {
        let mut last: HashMap<i64, LastBatches> = HashMap::new();
        for s in self.cleanable.iter().chain(&self.rest) {
            let path = self.path(s.base);
            let mut scanner = Scanner::new(s.file.as_ref(), 0, s.size, SCAN_CHUNK);
            while let Some((_, h)) = scanner.next_header().map_err(|e| scan_error(&path, e))? {
                if h.has_producer_id() {
                    let entry = last.entry(h.producer_id).or_insert(LastBatches {
                        data: Offset::MIN,
                        any: Offset::MIN,
                    });
                    entry.any = h.base_offset;
                    if !h.is_control() {
                        entry.data = h.base_offset;
                    }
                }
            }
        }
        Ok(last)
    }

    /// Consecutive segments whose total size fits one segment and whose
    /// offsets fit one index.
    fn group<'a>(&self, segments: &[&'a PlannedSegment]) -> Vec<Vec<&'a PlannedSegment>> {
        let mut groups: Vec<Vec<&PlannedSegment>> = Vec::new();
        for (i, &s) in segments.iter().enumerate() {
            let end = segments.get(i + 1).map_or(self.clean_end, |n| n.base);
            let fits = groups.last().is_some_and(|g| {
                let size: u64 = g.iter().map(|x| x.size).sum();
                size + s.size <= self.segment_bytes && end - g[0].base <= i64::from(i32::MAX)
            });
            if fits {
                groups.last_mut().expect("checked").push(s);
            } else {
                groups.push(vec![s]);
            }
        }
        groups
    }

    fn clean_group(
        &self,
        group: &[&PlannedSegment],
        map: &HashMap<Bytes, Offset>,
        producer_last: &HashMap<i64, LastBatches>,
        now_ms: TimestampMs,
        stats: &mut CleanStats,
    ) -> Result<CleanedGroup, LogError> {
        let st = self.storage.as_ref();
        let base = group[0].base;
        let mut out = Segment::create(
            &self.storage,
            &self.dir,
            base,
            CLEANED_SUFFIX,
            self.index_interval_bytes,
            now_ms,
        )?;
        let mut pending: Vec<u8> = Vec::new();
        let mut metas: Vec<BatchMeta> = Vec::new();
        let mut txns = TxnTracker::default();
        let result = (|| {
            for s in group {
                let path = self.path(s.base);
                let mut scanner = Scanner::new(s.file.as_ref(), 0, s.size, SCAN_CHUNK);
                while let Some((_, batch)) =
                    scanner.next_batch().map_err(|e| scan_error(&path, e))?
                {
                    stats.bytes_read += batch.size() as u64;
                    let start = pending.len();
                    self.clean_batch(
                        &batch,
                        map,
                        producer_last,
                        now_ms,
                        stats,
                        &mut txns,
                        &mut pending,
                    )
                    .map_err(|e| corrupt(&path, e))?;
                    if pending.len() > start {
                        let h =
                            BatchHeader::parse(&pending[start..]).map_err(|e| corrupt(&path, e))?;
                        metas.push(meta(start, &h));
                    }
                    if pending.len() >= SCAN_CHUNK {
                        write_pending(&mut out, &mut pending, &mut metas, stats)?;
                    }
                }
            }
            write_pending(&mut out, &mut pending, &mut metas, stats)?;
            // The aborted transactions whose markers were kept stay indexed.
            for e in group.iter().flat_map(|s| &s.aborted) {
                if txns.kept_markers.contains(&e.last_offset) {
                    out.append_aborted(st, *e)?;
                }
            }
            out.seal()?;
            out.flush()
        })();
        if let Err(e) = result {
            let _ = out.delete(st);
            return Err(e);
        }
        Ok(CleanedGroup {
            replaced: group.iter().map(|s| (s.base, s.size)).collect(),
            segment: out,
        })
    }

    /// Appends the cleaned form of `batch` to `out` (possibly nothing).
    #[allow(clippy::too_many_arguments)]
    fn clean_batch(
        &self,
        batch: &RecordBatch<'_>,
        map: &HashMap<Bytes, Offset>,
        producer_last: &HashMap<i64, LastBatches>,
        now_ms: TimestampMs,
        stats: &mut CleanStats,
        txns: &mut TxnTracker,
        out: &mut Vec<u8>,
    ) -> Result<(), runnel_records::batch::BatchError> {
        let h = *batch.header();
        let is_producers_last = h.has_producer_id()
            && producer_last.get(&h.producer_id).is_some_and(|last| {
                let last = if h.is_control() { last.any } else { last.data };
                last == h.base_offset
            });
        if h.is_control() {
            return self.clean_marker(batch, is_producers_last, now_ms, stats, txns, out);
        }
        if self.is_aborted(&h) {
            stats.aborted_batches_dropped += 1;
            stats.records_read += u64::from(h.records_count.max(0) as u32);
            if is_producers_last {
                // Emptied, but kept: the producer's sequence survives, and
                // so does its marker (or a replay would reopen the transaction).
                txns.retained.insert(h.producer_id);
                out.extend_from_slice(&self.rebuild(&h, None, &[])?);
            }
            return Ok(());
        }
        let horizon = h.delete_horizon_ms();
        let mut kept = Vec::new();
        let mut dropped_any = false;
        let mut has_tombstone = false;
        for record in batch.records()? {
            let record = record?;
            stats.records_read += 1;
            let keep = match &record.key {
                None => false,
                Some(key) => {
                    let latest = map.get(key).is_none_or(|&o| record.offset >= o);
                    let expired_tombstone =
                        record.value.is_none() && horizon.is_some_and(|h| now_ms >= h);
                    if latest && expired_tombstone {
                        stats.tombstones_dropped += 1;
                    }
                    latest && !expired_tombstone
                }
            };
            if keep {
                has_tombstone |= record.value.is_none();
                kept.push(record);
            } else {
                dropped_any = true;
            }
        }
        stats.records_retained += kept.len() as u64;
        if h.is_transactional() && (!kept.is_empty() || is_producers_last) {
            txns.retained.insert(h.producer_id);
        }
        let needs_horizon = has_tombstone && horizon.is_none();
        if !dropped_any && !needs_horizon {
            out.extend_from_slice(batch.as_bytes());
            return Ok(());
        }
        if kept.is_empty() && !is_producers_last {
            return Ok(());
        }
        let horizon =
            horizon.or(needs_horizon.then(|| now_ms.saturating_add(self.delete_retention_ms)));
        out.extend_from_slice(&self.rebuild(&h, horizon, &kept)?);
        Ok(())
    }

    /// Keeps a transaction marker while its transaction has records left
    /// (or it is its producer's last batch); otherwise gives it a delete
    /// horizon, and drops it once that has passed.
    fn clean_marker(
        &self,
        batch: &RecordBatch<'_>,
        is_producers_last: bool,
        now_ms: TimestampMs,
        stats: &mut CleanStats,
        txns: &mut TxnTracker,
        out: &mut Vec<u8>,
    ) -> Result<(), runnel_records::batch::BatchError> {
        let h = *batch.header();
        let has_records = txns.retained.remove(&h.producer_id);
        let keep_as_is = |txns: &mut TxnTracker, out: &mut Vec<u8>| {
            txns.kept_markers.insert(h.base_offset);
            out.extend_from_slice(batch.as_bytes());
            Ok(())
        };
        if has_records || is_producers_last {
            return keep_as_is(txns, out);
        }
        match h.delete_horizon_ms() {
            Some(horizon) if now_ms >= horizon => {
                stats.markers_dropped += 1;
                Ok(())
            }
            Some(_) => keep_as_is(txns, out),
            None => {
                let records: Vec<_> = batch.records()?.collect::<Result<_, _>>()?;
                let horizon = now_ms.saturating_add(self.delete_retention_ms);
                txns.kept_markers.insert(h.base_offset);
                out.extend_from_slice(&self.rebuild(&h, Some(horizon), &records)?);
                Ok(())
            }
        }
    }

    /// Re-encodes a batch with only `kept` of its records, its offsets,
    /// producer fields and flags intact, and `horizon` as its delete horizon.
    fn rebuild(
        &self,
        h: &BatchHeader,
        horizon: Option<TimestampMs>,
        kept: &[runnel_records::batch::Record],
    ) -> Result<Vec<u8>, runnel_records::batch::BatchError> {
        let mut builder = BatchBuilder::new(h.compression()?)
            .base_offset(h.base_offset)
            .partition_leader_epoch(h.partition_leader_epoch)
            .producer(h.producer_id, h.producer_epoch, h.base_sequence)
            .transactional(h.is_transactional())
            .control(h.is_control())
            .last_offset_delta(h.last_offset_delta);
        if h.timestamp_type() == TimestampType::LogAppendTime {
            builder = builder.log_append_time(h.max_timestamp);
        }
        if let Some(horizon) = horizon {
            builder = builder.delete_horizon(horizon);
        }
        for r in kept {
            let delta = i32::try_from(r.offset - h.base_offset).map_err(|_| {
                runnel_records::batch::BatchError::MalformedRecord {
                    reason: "record offset outside its batch",
                }
            })?;
            builder.append_with_offset_delta(
                delta,
                r.timestamp,
                r.key.as_deref(),
                r.value.as_deref(),
                &r.headers,
            );
        }
        builder.build()
    }
}

/// Where a producer's last batches are, by base offset.
#[derive(Debug, Clone, Copy)]
struct LastBatches {
    /// Its last data batch.
    data: Offset,
    /// Its last batch, marker or data.
    any: Offset,
}

/// What a cleaning pass learns about transactions as it goes, in offset order.
#[derive(Debug, Default)]
struct TxnTracker {
    /// Producers whose current transaction has kept records so far.
    retained: HashSet<i64>,
    /// Offsets of the markers kept (their `.txnindex` entries stay).
    kept_markers: HashSet<Offset>,
}

fn meta(position: usize, h: &BatchHeader) -> BatchMeta {
    BatchMeta {
        position,
        size: h.size(),
        base_offset: h.base_offset,
        records_count: h.records_count,
        partition_leader_epoch: h.partition_leader_epoch,
        last_offset: h.last_offset(),
        max_timestamp: h.max_timestamp,
        offset_of_max_timestamp: h.last_offset(),
    }
}

fn write_pending(
    out: &mut Segment,
    pending: &mut Vec<u8>,
    metas: &mut Vec<BatchMeta>,
    stats: &mut CleanStats,
) -> Result<(), LogError> {
    if pending.is_empty() {
        return Ok(());
    }
    out.append(pending, metas)?;
    stats.bytes_written += pending.len() as u64;
    pending.clear();
    metas.clear();
    Ok(())
}

/// Finishes or rolls back a cleaning interrupted by a crash; returns how many
/// swaps were completed. Runs before the log's segments are opened.
pub(crate) fn recover_interrupted_cleaning(
    storage: &Arc<dyn Storage>,
    dir: &Path,
) -> Result<usize, LogError> {
    let names = match storage.list(dir) {
        Ok(n) => n,
        Err(e) => return Err(LogError::io("list log directory", dir)(e)),
    };
    let remove = |name: &str| {
        let p = dir.join(name);
        storage
            .remove_file(&p)
            .map_err(LogError::io("remove file", &p))
    };
    // Not committed: the segments they would replace are intact.
    for name in names.iter().filter(|n| n.ends_with(CLEANED_SUFFIX)) {
        remove(name)?;
    }
    let mut completed = 0;
    let swap_log_suffix = format!("{LOG_SUFFIX}{SWAP_SUFFIX}");
    let mut swaps: Vec<Offset> = names
        .iter()
        .filter_map(|n| n.strip_suffix(&swap_log_suffix))
        .filter_map(|b| b.parse().ok())
        .collect();
    swaps.sort_unstable();
    for base in &swaps {
        // Committed: finish it. The swap holds every kept record of the
        // segments whose base lies in [base, its last offset].
        let (mut swap, _) = Segment::open(storage, dir, *base, SWAP_SUFFIX, 4096, 0)?;
        let outcome = swap.recover(None)?;
        let last = outcome.next_offset.map_or(*base, |n| n - 1);
        for name in &names {
            let Some(b) = name
                .strip_suffix(LOG_SUFFIX)
                .and_then(|b| b.parse::<Offset>().ok())
            else {
                continue;
            };
            if b >= *base && b <= last {
                // A crash between the swap's renames may take its own
                // `.txnindex` here too. That costs nothing: every aborted
                // transaction indexed in a cleaned segment lost all its
                // records to the cleaning, so read_committed readers have
                // nothing left to skip.
                for suffix in [
                    LOG_SUFFIX,
                    INDEX_SUFFIX,
                    TIME_INDEX_SUFFIX,
                    TXN_INDEX_SUFFIX,
                ] {
                    let p = dir.join(file_name(b, suffix, ""));
                    remove_if_present(storage.as_ref(), &p)
                        .map_err(LogError::io("remove replaced segment", &p))?;
                }
            }
        }
        swap.flush()?;
        swap.rename_extra(storage.as_ref(), "")?;
        completed += 1;
    }
    // Swap indexes whose log was never renamed belong to an uncommitted cleaning.
    let names = storage
        .list(dir)
        .map_err(LogError::io("list log directory", dir))?;
    for name in names.iter().filter(|n| n.ends_with(SWAP_SUFFIX)) {
        remove(name)?;
    }
    if completed > 0 {
        storage
            .sync_dir(dir)
            .map_err(LogError::io("sync directory", dir))?;
    }
    Ok(completed)
}
