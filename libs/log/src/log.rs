//! A partition log: an ordered set of segments plus the offsets and
//! checkpoints that describe it.
//!
//! Directory layout (`<topic>-<partition>/`):
//!
//! ```text
//! 00000000000000000000.log        batches, as received
//! 00000000000000000000.index      sparse offset index (every index.interval.bytes; from the first entry)
//! 00000000000000000000.timeindex  time index (from the first entry; every sealed segment has one)
//! 00000000000000000000.txnindex   aborted transactions whose markers are in the segment (when any)
//! 00000000000000052318.log ...    later segments, named by base offset
//! leader-epoch-checkpoint         epoch -> start offset
//! recovery-point-checkpoint       everything below this offset is fsynced
//! log-start-offset-checkpoint     first offset consumers may read
//! cleaner-offset-checkpoint       first offset the cleaner has not compacted
//! 00000000000000052318.snapshot   idempotent-producer state as of that offset
//! .clean-shutdown                 present only after a clean close
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use runnel_records::batch::{
    BatchBuilder, BatchError, BatchHeader, Compression, ControlRecord, EndTxnMarker, RecordBatch,
    RecordBatchMut, TimestampType,
};

use crate::checkpoint::{self, LeaderEpochCache};
use crate::clock::{Clock, SystemClock};
use crate::config::LogConfig;
use crate::error::{LogError, RecordError};
use crate::producer::{
    self, CachedBatch, CompletedTxn, ProducerEntry, ProducerStates, SequenceCheck,
};
use crate::segment::{BatchMeta, LOG_SUFFIX, Segment};
use crate::storage::{StdStorage, Storage};
use crate::txn_index::{self, AbortedTxn};
use crate::{LeaderEpoch, Offset, TimestampMs};

pub(crate) const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
pub(crate) const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-checkpoint";
pub(crate) const LOG_START_OFFSET_CHECKPOINT: &str = "log-start-offset-checkpoint";
pub(crate) const CLEANER_OFFSET_CHECKPOINT: &str = "cleaner-offset-checkpoint";
pub(crate) const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
/// Suffix of a segment the cleaner is still writing.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a cleaned segment waiting to replace the segments it compacts.
pub(crate) const SWAP_SUFFIX: &str = ".swap";

/// The directory name of a partition's log: `<topic>-<partition>`.
pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Splits a partition directory name into topic and partition.
pub fn parse_partition_dir_name(name: &str) -> Option<(&str, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    (!topic.is_empty() && partition >= 0).then_some((topic, partition))
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record (base offset of the first batch).
    pub first_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// Largest timestamp appended (the log-append time for `LogAppendTime`).
    pub max_timestamp: TimestampMs,
    /// Offset carrying that timestamp (last offset of its batch).
    pub offset_of_max_timestamp: Offset,
    /// The broker time stamped on the batches, for `LogAppendTime` logs.
    pub log_append_time: Option<TimestampMs>,
    /// Records appended.
    pub record_count: u64,
    /// Batches appended.
    pub batch_count: usize,
    /// Bytes appended.
    pub bytes: usize,
    /// Batches not appended because the log already held them (an
    /// idempotent producer's retry); they count for none of the above
    /// except the offsets.
    pub duplicate_batches: usize,
    /// Set only when some batches were duplicates: the base offset of each
    /// batch of the append, in order. Empty means the batches got
    /// consecutive offsets from `first_offset`.
    pub batch_base_offsets: Vec<Offset>,
}

/// What opening the log found and did, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The log was closed cleanly: only the active segment's tail was checked.
    pub clean_shutdown: bool,
    /// Segments scanned and validated batch by batch.
    pub recovered_segments: usize,
    /// Bytes scanned by recovery.
    pub recovered_bytes: u64,
    /// Bytes of torn or corrupt data cut off.
    pub truncated_bytes: u64,
    /// Segments dropped because they followed corruption or lay below the log start.
    pub deleted_segments: usize,
    /// Segments whose index files were rebuilt.
    pub rebuilt_indexes: usize,
    /// Interrupted compactions finished (swap files installed).
    pub completed_swaps: usize,
    /// Batch headers read to rebuild the idempotent-producer state past its newest snapshot.
    pub replayed_producer_batches: u64,
    /// Producer snapshots that could not be read and were deleted.
    pub discarded_producer_snapshots: usize,
    /// Segments whose aborted-transaction index was rebuilt from the log.
    pub rebuilt_txn_indexes: usize,
}

/// A partition's append-only log on local disk.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) segments: BTreeMap<Offset, Segment>,
    log_start_offset: Offset,
    log_end_offset: Offset,
    /// Offsets below this are on stable storage.
    recovery_point: Offset,
    /// The recovery point as last written to disk: a crash rescans from the
    /// segment holding it. May trail `recovery_point` (see `flush`).
    checkpointed_recovery_point: Offset,
    /// A segment was created or sealed since the last full flush.
    segments_changed: bool,
    epochs: LeaderEpochCache,
    unflushed_messages: i64,
    last_flush_ms: TimestampMs,
    pub(crate) first_dirty_offset: Offset,
    report: OpenReport,
    producers: ProducerStates,
    /// The high watermark as last told by the broker (`update_high_watermark`):
    /// ended transactions count as unstable until it passes their markers.
    high_watermark: Offset,
    /// Offset of the newest producer snapshot on disk, when known.
    snapshot_offset: Option<Offset>,
}

impl Log {
    /// Opens (or creates) the log in `dir` on the local file system.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, LogError> {
        Self::open_with(dir, config, Arc::new(StdStorage), Arc::new(SystemClock))
    }

    /// Opens (or creates) the log in `dir` through `storage`, with `clock`.
    ///
    /// Recovers from an unclean shutdown: every segment from the last
    /// recovery point on is validated batch by batch, a torn or corrupt tail
    /// is cut at the last valid batch (segments after it are dropped), and
    /// missing or malformed indexes are rebuilt. Interrupted compactions are
    /// rolled back or finished.
    ///
    /// Batches carry their leader epoch, so a leader-epoch checkpoint that a
    /// crash left unreadable is rebuilt from them.
    pub fn open_with(
        dir: impl AsRef<Path>,
        config: LogConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
    ) -> Result<Log, LogError> {
        Self::open_inner(dir.as_ref(), config, storage, clock, false)
    }

    /// Opens a log closed by [`Log::close_unsynced`] whose caller then made
    /// the whole directory of logs durable and recorded that in a marker of
    /// its own (a broker's clean-shutdown marker for its data directory):
    /// the log is trusted as after [`Log::close`], without a marker of its own.
    pub fn open_after_clean_shutdown(
        dir: impl AsRef<Path>,
        config: LogConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
    ) -> Result<Log, LogError> {
        Self::open_inner(dir.as_ref(), config, storage, clock, true)
    }

    fn open_inner(
        dir: &Path,
        config: LogConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        dir_clean: bool,
    ) -> Result<Log, LogError> {
        let dir = dir.to_owned();
        let st = storage.as_ref();
        st.create_dir_all(&dir)
            .map_err(LogError::io("create log directory", &dir))?;
        let now = clock.now_ms();
        let list = || {
            st.list(&dir)
                .map_err(LogError::io("list log directory", &dir))
        };
        let mut names = list()?;
        let mut report = OpenReport::default();
        if names
            .iter()
            .any(|n| n.ends_with(CLEANED_SUFFIX) || n.ends_with(SWAP_SUFFIX))
        {
            report.completed_swaps = crate::cleaner::recover_interrupted_cleaning(&storage, &dir)?;
            names = list()?;
        }
        let mut bases: Vec<Offset> = names
            .iter()
            .filter_map(|n| n.strip_suffix(LOG_SUFFIX))
            .filter_map(|b| (b.len() == 20).then(|| b.parse().ok()).flatten())
            .collect();
        bases.sort_unstable();
        remove_orphan_indexes(st, &dir, &names, &bases)?;

        let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
        let marked = st.exists(&marker);
        let clean = dir_clean || marked;
        if marked {
            // From here on a crash must be treated as unclean.
            st.remove_file(&marker)
                .map_err(LogError::io("remove clean shutdown marker", &marker))?;
            st.sync_dir(&dir)
                .map_err(LogError::io("sync directory", &dir))?;
        }
        report.clean_shutdown = clean;
        let recovery_checkpoint =
            checkpoint::read_offset(st, &dir.join(RECOVERY_POINT_CHECKPOINT))?;
        let start_checkpoint = checkpoint::read_offset(st, &dir.join(LOG_START_OFFSET_CHECKPOINT))?;

        let mut segments = BTreeMap::new();
        let mut rebuild = Vec::new();
        for &base in &bases {
            let (segment, needs_rebuild) =
                Segment::open(&storage, &dir, base, "", config.index_interval_bytes, now)?;
            if needs_rebuild {
                rebuild.push(base);
            }
            segments.insert(base, segment);
        }

        // Unclean: validate everything from the segment holding the recovery point.
        let recover_from = (!clean).then(|| {
            let point = recovery_checkpoint.unwrap_or(0);
            segments
                .range(..=point)
                .next_back()
                .map(|(&b, _)| b)
                .unwrap_or(Offset::MIN)
        });
        let mut recovered = Vec::new();
        let mut cut_at = None;
        let mut needs_full_recovery = recover_from;
        if clean
            && let Some(segment) = segments.values_mut().next_back()
            && (rebuild.contains(&segment.base_offset()) || !segment.load_tail()?)
        {
            needs_full_recovery = Some(segment.base_offset());
        }
        if let Some(from) = needs_full_recovery {
            for (&base, segment) in segments.range_mut(from..) {
                let before = segment.size();
                let outcome = segment.recover(None)?;
                report.recovered_segments += 1;
                report.recovered_bytes += outcome.valid_size;
                report.truncated_bytes += before - outcome.valid_size;
                recovered.push(base);
                rebuild.retain(|&b| b != base);
                if outcome.stopped.is_some() {
                    cut_at = Some(base);
                    break;
                }
            }
        }
        if let Some(cut) = cut_at {
            // Nothing after corruption can be trusted to follow it.
            let later: Vec<Offset> = segments.range(cut + 1..).map(|(&b, _)| b).collect();
            for base in later.into_iter().rev() {
                let segment = segments.remove(&base).expect("listed above");
                report.truncated_bytes += segment.size();
                report.deleted_segments += 1;
                segment.delete(st)?;
            }
        }
        for base in rebuild {
            if let Some(segment) = segments.get_mut(&base) {
                segment.rebuild_index_files()?;
                report.rebuilt_indexes += 1;
            }
        }
        // Recovered segments may have lost index entries with their tail;
        // unreadable indexes are rebuilt too, by replaying the markers.
        let mut txn_rebuild: Vec<Offset> = segments
            .iter()
            .filter(|(b, s)| recovered.contains(b) || s.txn_index_damaged())
            .map(|(&b, _)| b)
            .collect();
        txn_rebuild.sort_unstable();
        for base in &txn_rebuild {
            if let Some(segment) = segments.get_mut(base) {
                segment.reset_aborted(st)?;
            }
        }

        let mut log_start = start_checkpoint.unwrap_or(Offset::MIN);
        if segments.is_empty() {
            let base = log_start.max(0);
            segments.insert(
                base,
                Segment::create(&storage, &dir, base, "", config.index_interval_bytes, now)?,
            );
        }
        let active = segments.values().next_back().expect("at least one segment");
        let log_end = active
            .next_offset()
            .expect("the active segment was scanned, so its end is known");
        let first_base = segments
            .keys()
            .next()
            .copied()
            .expect("at least one segment");
        log_start = log_start.max(first_base);
        // A torn tail took the batch holding the log start: restart empty there.
        let restart_empty = log_start > log_end;

        // Segments wholly below the log start are garbage from an interrupted deletion.
        let below: Vec<Offset> = segments
            .keys()
            .zip(segments.keys().skip(1))
            .filter(|&(_, &next)| next <= log_start)
            .map(|(&b, _)| b)
            .collect();
        for base in below {
            let segment = segments.remove(&base).expect("listed above");
            report.deleted_segments += 1;
            segment.delete(st)?;
        }

        let epochs_path = dir.join(LEADER_EPOCH_CHECKPOINT);
        let (mut epochs, rebuild_epochs) =
            match LeaderEpochCache::load(Arc::clone(&storage), epochs_path.clone()) {
                Ok(epochs) => (epochs, false),
                // Torn by a crash after an unsynced write: the batches say it again.
                Err(LogError::Corrupt { .. }) => (
                    LeaderEpochCache::empty(Arc::clone(&storage), epochs_path),
                    true,
                ),
                Err(e) => return Err(e),
            };
        epochs.truncate_from_end_lazily(log_end);
        epochs.truncate_from_start(log_start)?;
        // A crash may have lost epochs kept in memory (see
        // `assign_leader_epoch`): the batches recovery validated carry them.
        // A torn checkpoint is rebuilt from every batch.
        let scan: Vec<Offset> = if rebuild_epochs {
            segments.keys().copied().collect()
        } else {
            recovered.clone()
        };
        let mut found = false;
        for base in &scan {
            if let Some(segment) = segments.get(base) {
                segment.for_each_header_from(log_start, |h, _| {
                    found |= epochs
                        .assign_recovered(h.partition_leader_epoch, h.base_offset.max(log_start));
                    Ok(())
                })?;
            }
        }
        if rebuild_epochs {
            // Written even with no epoch found: it replaces the torn file.
            epochs.persist()?;
        } else if found {
            epochs.sync()?;
        }

        let first_dirty_offset = checkpoint::read_offset(st, &dir.join(CLEANER_OFFSET_CHECKPOINT))?
            .unwrap_or(log_start)
            .clamp(log_start, log_end.max(log_start));

        let mut log = Log {
            dir,
            config,
            storage,
            clock,
            segments,
            log_start_offset: log_start,
            log_end_offset: log_end,
            recovery_point: recovery_checkpoint.unwrap_or(0).min(log_end),
            checkpointed_recovery_point: recovery_checkpoint.unwrap_or(0),
            segments_changed: true,
            epochs,
            unflushed_messages: 0,
            last_flush_ms: now,
            first_dirty_offset,
            report,
            producers: ProducerStates::default(),
            high_watermark: log_start,
            snapshot_offset: None,
        };
        let active_base = log.active_base();
        for base in &recovered {
            if *base != active_base
                && let Some(segment) = log.segments.get_mut(base)
            {
                segment.seal()?;
            }
        }
        if log.report.truncated_bytes > 0 || log.report.deleted_segments > 0 {
            // Recovery cut the log: make the cut durable before anything is
            // appended after it. A recovery that found everything intact
            // changed nothing and syncs nothing (a broker recovering 100,000
            // logs after a crash would otherwise fsync each): the recovery
            // point moves at the next flush or clean close.
            log.flush()?;
        }
        if restart_empty {
            log.truncate_fully_and_start_at(log_start)?;
        } else if start_checkpoint.unwrap_or(first_base) != log_start {
            // Absent means "the first segment's base": a new log writes nothing.
            log.write_log_start_checkpoint()?;
        }
        txn_rebuild.retain(|b| log.segments.contains_key(b));
        log.report.rebuilt_txn_indexes = txn_rebuild.len();
        log.rebuild_producer_state(&txn_rebuild)?;
        Ok(log)
    }

    /// Rebuilds the producer state: the newest snapshot at or below the log
    /// end (and at or below the first segment of `txn_rebuild`), then every
    /// batch after it. The aborted transactions whose markers lie in the
    /// segments of `txn_rebuild` are written to their `.txnindex` again.
    fn rebuild_producer_state(&mut self, txn_rebuild: &[Offset]) -> Result<(), LogError> {
        let at_most = txn_rebuild
            .first()
            .map_or(self.log_end_offset, |&b| b.min(self.log_end_offset));
        let (loaded, discarded) = producer::load_latest(self.storage.as_ref(), &self.dir, at_most)?;
        self.report.discarded_producer_snapshots += discarded;
        self.snapshot_offset = loaded.as_ref().map(|(_, at)| *at);
        let (mut state, from) =
            loaded.unwrap_or_else(|| (ProducerStates::default(), self.log_start_offset));
        let from = from.max(self.log_start_offset);
        let first = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(Offset::MIN, |(&b, _)| b);
        let mut replayed = 0u64;
        let mut aborted: Vec<(Offset, AbortedTxn)> = Vec::new();
        // Replayed producers count as seen now: their expiry restarts.
        let now = self.clock.now_ms();
        for (&base, segment) in self.segments.range(first..) {
            let rebuild = txn_rebuild.binary_search(&base).is_ok();
            segment.for_each_header_from(from, |h, control| {
                replayed += 1;
                if let Some(done) = state.apply(h, control, now)
                    && done.aborted
                    && rebuild
                {
                    aborted.push((base, aborted_entry(&state, &done)));
                }
                Ok(())
            })?;
        }
        for (base, entry) in aborted {
            if let Some(segment) = self.segments.get_mut(&base) {
                segment.append_aborted(self.storage.as_ref(), entry)?;
            }
        }
        self.report.replayed_producer_batches += replayed;
        state.remove_stale(self.log_start_offset, now, None);
        self.producers = state;
        Ok(())
    }

    /// The last stable offset (LSO) given the high watermark: `read_committed`
    /// consumers read below it. It is the start of the oldest transaction
    /// that is open, or ended with a marker not yet below `high_watermark`,
    /// and never past the high watermark.
    pub fn last_stable_offset(&self, high_watermark: Offset) -> Offset {
        self.producers
            .first_unstable_offset(high_watermark)
            .map_or(high_watermark, |o| o.min(high_watermark))
    }

    /// Tells the log the partition's high watermark: transactions whose
    /// markers lie below it are settled (kept for the cleaner's and
    /// retention's bounds).
    pub fn update_high_watermark(&mut self, high_watermark: Offset) {
        self.high_watermark = high_watermark;
        self.producers.prune_replicated(high_watermark);
    }

    /// The oldest offset retention and compaction must keep: the start of
    /// the oldest unsettled transaction, if any.
    pub(crate) fn first_unstable_offset(&self) -> Option<Offset> {
        self.producers.first_unstable_offset(self.high_watermark)
    }

    /// Open transactions in this partition, oldest first: (first offset, producer id).
    pub fn ongoing_transactions(&self) -> Vec<(Offset, i64)> {
        self.producers.ongoing().collect()
    }

    /// The aborted transactions a `read_committed` read of `[from, upper)`
    /// must skip (Kafka's FetchResponse `aborted_transactions`): those whose
    /// markers are at or after `from` and whose first record is before `upper`.
    pub fn aborted_transactions(&self, from: Offset, upper: Offset) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        let first = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(Offset::MIN, |(&b, _)| b);
        for segment in self.segments.range(first..).map(|(_, s)| s) {
            if txn_index::collect(segment.aborted(), from, upper, &mut out) {
                break;
            }
        }
        out
    }

    /// What this partition knows about an idempotent producer.
    pub fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(producer_id)
    }

    /// Every idempotent producer this partition tracks (Kafka's DescribeProducers).
    pub fn producers(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter()
    }

    /// How many producers this partition tracks.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Forgets producers silent for longer than `max_idle_ms`
    /// (`producer.id.expiration.ms`). Returns how many went.
    pub fn remove_expired_producers(&mut self, max_idle_ms: i64) -> usize {
        let now = self.clock.now_ms();
        self.producers
            .remove_stale(self.log_start_offset, now, Some(max_idle_ms))
    }

    /// What opening the log found and did.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's configuration.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the configuration; takes effect for the next append, roll and retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        for segment in self.segments.values_mut() {
            segment.set_index_interval_bytes(config.index_interval_bytes);
        }
        self.config = config;
    }

    /// First offset that can be read.
    pub fn log_start_offset(&self) -> Offset {
        self.log_start_offset
    }

    /// Offset the next appended record will get.
    pub fn log_end_offset(&self) -> Offset {
        self.log_end_offset
    }

    /// Offsets below this are known to be on stable storage.
    pub fn recovery_point(&self) -> Offset {
        self.recovery_point
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<Offset> {
        self.segments.keys().copied().collect()
    }

    /// The leader-epoch cache (epoch → start offset).
    pub fn leader_epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// Kafka's OffsetForLeaderEpoch answered from this log.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset)
    }

    /// Records that `epoch` starts at the current log end (a new leader takes over).
    pub fn assign_leader_epoch(&mut self, epoch: LeaderEpoch) -> Result<(), LogError> {
        // Not written here: a broker taking over thousands of partitions at
        // once must not wait on a file each; `flush` makes it durable
        // before the data that follows, recovery finds it in the batches.
        self.epochs.assign_at_end(epoch, self.log_end_offset);
        Ok(())
    }

    fn active_base(&self) -> Offset {
        *self
            .segments
            .keys()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Appends batches from a producer as the partition leader.
    ///
    /// `records` holds one or more v2 batches. Each is validated as Kafka's
    /// log validation does (length, magic, CRC, record count vs offsets and
    /// offset deltas, no control batches, `max.message.bytes`, keys on
    /// compacted logs, create times within `message.timestamp.before/after.max.ms`),
    /// its max timestamp recomputed from its records, and it is recompressed
    /// when the log's `compression.type` names another codec; only then are
    /// offsets assigned by patching each batch's header (base offset,
    /// `leader_epoch`, max timestamp or the log-append time) and the bytes
    /// written. On any error nothing is written.
    pub fn append_as_leader(
        &mut self,
        records: &mut [u8],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, LogError> {
        let now = self.clock.now_ms();
        let (metas, recompressed) = self.validate_from_producer(records, now)?;
        match recompressed {
            Some(mut bytes) => self.assign_and_append(&mut bytes, metas, leader_epoch, now),
            None => self.assign_and_append(records, metas, leader_epoch, now),
        }
    }

    /// Validates a producer's batches; when the log's `compression.type`
    /// makes any be recompressed, also returns the whole append rebuilt
    /// (the metas then describe those bytes).
    fn validate_from_producer(
        &self,
        records: &[u8],
        now: TimestampMs,
    ) -> Result<(Vec<BatchMeta>, Option<Vec<u8>>), LogError> {
        if records.is_empty() {
            return Err(LogError::EmptyAppend);
        }
        let create_time = self.config.message_timestamp_type == TimestampType::CreateTime;
        let earliest = now.saturating_sub(self.config.message_timestamp_before_max_ms);
        let latest = now.saturating_add(self.config.message_timestamp_after_max_ms);
        let compact = self.config.cleanup_policy.compact;
        let mut metas = Vec::new();
        let mut rebuilt: Option<Vec<u8>> = None;
        let mut index_base = 0usize;
        let mut rest = records;
        while !rest.is_empty() {
            let position = records.len() - rest.len();
            let invalid = |source| LogError::InvalidBatch { position, source };
            let (batch, tail) = RecordBatch::parse(rest).map_err(invalid)?;
            rest = tail;
            self.check_size(batch.size())?;
            let h = batch.header();
            if h.is_control() {
                return Err(LogError::ControlBatchFromProducer { position });
            }
            if h.records_count <= 0
                || i64::from(h.records_count) != i64::from(h.last_offset_delta) + 1
            {
                return Err(invalid(BatchError::InvalidRecordCount {
                    count: h.records_count,
                    last_offset_delta: h.last_offset_delta,
                }));
            }
            let mut max_timestamp = runnel_records::batch::NO_TIMESTAMP;
            let mut deltas_in_order = true;
            let mut errors = Vec::new();
            let mut invalid_timestamp = false;
            batch
                .scan_records(|i, r| {
                    deltas_in_order &= i64::from(r.offset_delta) == i as i64;
                    max_timestamp = max_timestamp.max(r.timestamp);
                    let batch_index = i32::try_from(index_base + i).unwrap_or(i32::MAX);
                    if compact && !r.has_key {
                        errors.push(RecordError {
                            batch_index,
                            message: "Compacted topic cannot accept message without key.".into(),
                        });
                    } else if create_time
                        && r.timestamp != runnel_records::batch::NO_TIMESTAMP
                        && !(earliest..=latest).contains(&r.timestamp)
                    {
                        invalid_timestamp = true;
                        errors.push(RecordError {
                            batch_index,
                            message: format!(
                                "Timestamp {} of message with offset {} is out of range. The timestamp should be within [{earliest}, {latest}]",
                                r.timestamp, r.offset_delta
                            ),
                        });
                    }
                })
                .map_err(invalid)?;
            if !deltas_in_order {
                return Err(invalid(BatchError::MalformedRecord {
                    reason: "record offset deltas are not 0, 1, 2, ... in order",
                }));
            }
            if !errors.is_empty() {
                return Err(LogError::RejectedRecords {
                    errors,
                    invalid_timestamp,
                });
            }
            index_base += h.records_count as usize;
            let codec = h.compression().map_err(invalid)?;
            let target = self.config.compression_type.filter(|t| *t != codec);
            let bytes = match target {
                Some(target) => {
                    let bytes = recompress(&batch, target).map_err(invalid)?;
                    self.check_size(bytes.len())?;
                    std::borrow::Cow::Owned(bytes)
                }
                None => std::borrow::Cow::Borrowed(batch.as_bytes()),
            };
            // Once one batch changes size, the append is rebuilt whole.
            if rebuilt.is_none() && matches!(bytes, std::borrow::Cow::Owned(_)) {
                rebuilt = Some(records[..position].to_vec());
            }
            let out_position = match &mut rebuilt {
                Some(out) => {
                    let at = out.len();
                    out.extend_from_slice(&bytes);
                    at
                }
                None => position,
            };
            metas.push(BatchMeta {
                position: out_position,
                size: bytes.len(),
                base_offset: h.base_offset,
                records_count: h.records_count,
                partition_leader_epoch: h.partition_leader_epoch,
                last_offset: h.last_offset(),
                max_timestamp,
                offset_of_max_timestamp: h.last_offset(),
            });
        }
        Ok((metas, rebuilt))
    }

    /// Refuses a batch larger than `max.message.bytes`.
    fn check_size(&self, size: usize) -> Result<(), LogError> {
        if size as u64 > self.config.max_message_bytes {
            return Err(LogError::RecordTooLarge {
                size,
                max: self.config.max_message_bytes,
            });
        }
        Ok(())
    }

    /// Assigns offsets to validated producer batches (checking idempotent
    /// producers' sequences) and appends them.
    fn assign_and_append(
        &mut self,
        records: &mut [u8],
        mut metas: Vec<BatchMeta>,
        leader_epoch: LeaderEpoch,
        now: TimestampMs,
    ) -> Result<AppendInfo, LogError> {
        let log_append_time =
            (self.config.message_timestamp_type == TimestampType::LogAppendTime).then_some(now);
        let mut next = self.log_end_offset;
        let mut rest: &mut [u8] = records;
        // Sequence checks see the earlier batches of this append: apply them
        // as we go, then put the state back; it is applied for real once the
        // bytes are written (so a roll's snapshot holds exactly what precedes it).
        let mut undo = Vec::new();
        let mut duplicates: Vec<(usize, CachedBatch)> = Vec::new();
        for (i, meta) in metas.iter_mut().enumerate() {
            let (mut batch, tail) = RecordBatchMut::validated(rest, meta.size);
            rest = tail;
            let header = batch.header();
            let idempotent = header.has_producer_id() && !header.is_control();
            if idempotent {
                match self.producers.check(&header) {
                    Ok(SequenceCheck::Append) => {}
                    Ok(SequenceCheck::Duplicate(original)) => {
                        duplicates.push((i, original));
                        continue;
                    }
                    Err(e) => {
                        self.producers.restore(undo);
                        return Err(e);
                    }
                }
            }
            batch.set_base_offset(next);
            batch.set_partition_leader_epoch(leader_epoch);
            if let Some(t) = log_append_time {
                batch.set_log_append_time(t);
                meta.max_timestamp = t;
            } else if header.max_timestamp != meta.max_timestamp {
                // The producer's figure may be missing (-1) or wrong; the
                // time index, ListOffsets by time and time-based roll and
                // retention all read the header.
                batch.set_max_timestamp(meta.max_timestamp);
            }
            meta.last_offset = next + (meta.last_offset - meta.base_offset);
            meta.base_offset = next;
            meta.partition_leader_epoch = leader_epoch;
            meta.offset_of_max_timestamp = meta.last_offset;
            next = meta.last_offset + 1;
            if idempotent {
                self.producers.save(header.producer_id, &mut undo);
                self.producers.apply(&batch.header(), None, now);
            }
        }
        self.producers.restore(undo);
        if duplicates.is_empty() {
            return self.append_validated(records, &metas, log_append_time, now);
        }
        self.append_without_duplicates(records, metas, &duplicates, log_append_time, now)
    }

    /// Appends the batches of a leader append that are not duplicates and
    /// describes the whole append, duplicates with their original offsets.
    fn append_without_duplicates(
        &mut self,
        records: &[u8],
        metas: Vec<BatchMeta>,
        duplicates: &[(usize, CachedBatch)],
        log_append_time: Option<TimestampMs>,
        now: TimestampMs,
    ) -> Result<AppendInfo, LogError> {
        let mut offsets = Vec::with_capacity(metas.len());
        let mut last_offset = Offset::MIN;
        let mut fresh_bytes = Vec::new();
        let mut fresh = Vec::new();
        let mut dups = duplicates.iter().peekable();
        for (i, meta) in metas.into_iter().enumerate() {
            if let Some((_, original)) = dups.next_if(|(d, _)| *d == i) {
                offsets.push(original.first_offset);
                last_offset = last_offset.max(original.last_offset);
                continue;
            }
            offsets.push(meta.base_offset);
            last_offset = last_offset.max(meta.last_offset);
            let position = fresh_bytes.len();
            fresh_bytes.extend_from_slice(&records[meta.position..meta.position + meta.size]);
            fresh.push(BatchMeta { position, ..meta });
        }
        let mut info = if fresh.is_empty() {
            AppendInfo {
                first_offset: offsets[0],
                last_offset,
                max_timestamp: runnel_records::batch::NO_TIMESTAMP,
                offset_of_max_timestamp: offsets[0],
                log_append_time: None,
                record_count: 0,
                batch_count: 0,
                bytes: 0,
                duplicate_batches: 0,
                batch_base_offsets: Vec::new(),
            }
        } else {
            self.append_validated(&fresh_bytes, &fresh, log_append_time, now)?
        };
        info.first_offset = offsets[0];
        info.last_offset = last_offset;
        info.duplicate_batches = duplicates.len();
        info.batch_base_offsets = offsets;
        Ok(info)
    }

    /// Appends batches replicated from the leader, with their offsets and
    /// epochs as the leader assigned them (bytes unchanged).
    ///
    /// The first batch must start at or after the log end offset and every
    /// batch after the previous one; gaps are allowed (the leader's log may
    /// be compacted).
    pub fn append_as_follower(&mut self, records: &[u8]) -> Result<AppendInfo, LogError> {
        let metas = self.validate_replicated(records)?;
        let mut floor = self.log_end_offset;
        for meta in &metas {
            if meta.base_offset < floor {
                return Err(LogError::NonMonotonicOffset {
                    offset: meta.base_offset,
                    log_end: floor,
                });
            }
            floor = meta.last_offset + 1;
        }
        let now = self.clock.now_ms();
        self.append_validated(records, &metas, None, now)
    }

    /// Writes a transaction marker as the partition leader, for the
    /// transaction coordinator (Kafka's WriteTxnMarkers): a control batch
    /// ending `producer_id`'s open transaction here, committed or aborted.
    /// An abort is indexed in the segment's `.txnindex` first. A marker from
    /// an older producer epoch, or from an older coordinator than the last
    /// marker's, is refused and nothing is written.
    pub fn append_end_txn_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, LogError> {
        self.producers
            .check_marker(producer_id, producer_epoch, marker.coordinator_epoch)?;
        let now = self.clock.now_ms();
        let mut bytes = marker
            .to_batch(producer_id, producer_epoch, now)
            .map_err(|source| LogError::InvalidBatch {
                position: 0,
                source,
            })?;
        let size = bytes.len();
        let (mut batch, _) = RecordBatchMut::validated(&mut bytes, size);
        batch.set_base_offset(self.log_end_offset);
        batch.set_partition_leader_epoch(leader_epoch);
        let log_append_time =
            (self.config.message_timestamp_type == TimestampType::LogAppendTime).then_some(now);
        if let Some(t) = log_append_time {
            batch.set_log_append_time(t);
        }
        let meta = BatchMeta {
            position: 0,
            size,
            base_offset: self.log_end_offset,
            records_count: 1,
            partition_leader_epoch: leader_epoch,
            last_offset: self.log_end_offset,
            max_timestamp: now,
            offset_of_max_timestamp: self.log_end_offset,
        };
        self.append_validated(&bytes, &[meta], log_append_time, now)
    }

    /// Validates every replicated batch and describes it with the offsets it carries.
    fn validate_replicated(&self, records: &[u8]) -> Result<Vec<BatchMeta>, LogError> {
        if records.is_empty() {
            return Err(LogError::EmptyAppend);
        }
        let mut metas = Vec::new();
        let mut rest = records;
        while !rest.is_empty() {
            let position = records.len() - rest.len();
            let (batch, tail) = RecordBatch::parse(rest)
                .map_err(|source| LogError::InvalidBatch { position, source })?;
            let size = batch.size();
            self.check_size(size)?;
            let h = batch.header();
            metas.push(BatchMeta {
                position,
                size,
                base_offset: h.base_offset,
                records_count: h.records_count,
                partition_leader_epoch: h.partition_leader_epoch,
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp,
                offset_of_max_timestamp: h.last_offset(),
            });
            rest = tail;
        }
        Ok(metas)
    }

    fn append_validated(
        &mut self,
        records: &[u8],
        metas: &[BatchMeta],
        log_append_time: Option<TimestampMs>,
        now: TimestampMs,
    ) -> Result<AppendInfo, LogError> {
        let first = metas.first().expect("validate refuses empty appends");
        let last = metas.last().expect("validate refuses empty appends");
        let first_offset = first.base_offset;
        let (mut max_ts, mut offset_of_max) = (runnel_records::batch::NO_TIMESTAMP, first_offset);
        for m in metas {
            if m.max_timestamp > max_ts {
                max_ts = m.max_timestamp;
                offset_of_max = m.offset_of_max_timestamp;
            }
        }
        let active = self
            .segments
            .values()
            .next_back()
            .expect("a log always has an active segment");
        // A follower's first batch may start past an empty active segment's base (gaps).
        if active.should_roll(
            &self.config,
            records.len() as u64,
            last.last_offset,
            max_ts,
            now,
        ) || (active.size() == 0 && active.base_offset() != first_offset)
        {
            self.roll_at(first_offset)?;
        }

        // Each batch's header, and its control record if it is a control batch.
        let mut headers: Vec<(BatchHeader, Option<ControlRecord>)> =
            Vec::with_capacity(metas.len());
        for m in metas {
            let bytes = &records[m.position..m.position + m.size];
            let invalid = |source| LogError::InvalidBatch {
                position: m.position,
                source,
            };
            let h = BatchHeader::parse(bytes).map_err(invalid)?;
            let control = if h.is_control() {
                let (batch, _) = RecordBatch::parse(bytes).map_err(invalid)?;
                Some(ControlRecord::from_batch(&batch).map_err(invalid)?)
            } else {
                None
            };
            headers.push((h, control));
        }
        // Aborted transactions are indexed before their markers are written:
        // a marker on disk without its entry would let read_committed
        // consumers see the aborted records.
        let aborts = self.producers.preview_aborts(&headers);
        let active_base = self.active_base();
        let st = Arc::clone(&self.storage);
        for entry in &aborts {
            if let Err(e) = self.active_mut().append_aborted(st.as_ref(), *entry) {
                let _ = self.active_mut().truncate_aborted(first_offset);
                return Err(e);
            }
        }
        debug_assert_eq!(active_base, self.active_base());

        // Epochs first: if the data write then fails, the entry is removed
        // again; the reverse order could leave data without its epoch.
        let epoch_before = self.epochs.latest_epoch();
        for m in metas {
            let epoch = m.partition_leader_epoch;
            if epoch >= 0 && self.epochs.latest_epoch().is_none_or(|e| epoch > e) {
                self.epochs.assign(epoch, m.base_offset)?;
            }
        }
        if let Err(e) = self.active_mut().append(records, metas) {
            if self.epochs.latest_epoch() != epoch_before {
                let _ = self.epochs.truncate_from_end(first_offset);
            }
            if !aborts.is_empty() {
                let _ = self.active_mut().truncate_aborted(first_offset);
            }
            return Err(e);
        }
        for (h, control) in headers {
            self.producers.apply(&h, control, now);
        }
        let record_count: u64 = metas.iter().map(|m| m.records_count.max(0) as u64).sum();
        self.log_end_offset = last.last_offset + 1;
        self.unflushed_messages = self.unflushed_messages.saturating_add(record_count as i64);
        if self.unflushed_messages >= self.config.flush_messages {
            self.flush()?;
        }
        Ok(AppendInfo {
            first_offset,
            last_offset: last.last_offset,
            max_timestamp: max_ts,
            offset_of_max_timestamp: offset_of_max,
            log_append_time,
            record_count,
            batch_count: metas.len(),
            bytes: records.len(),
            duplicate_batches: 0,
            batch_base_offsets: Vec::new(),
        })
    }

    /// Starts a new segment at the log end offset, whatever the roll policy says.
    pub fn roll(&mut self) -> Result<(), LogError> {
        self.roll_at(self.log_end_offset)
    }

    fn roll_at(&mut self, base: Offset) -> Result<(), LogError> {
        let now = self.clock.now_ms();
        // The new segment's snapshot: a restart replays at most the active segment.
        producer::write_snapshot(self.storage.as_ref(), &self.dir, base, &self.producers)?;
        self.snapshot_offset = Some(base);
        let active_base = self.active_base();
        let active = self.active_mut();
        // A failed write may have left bytes past the logical size: a sealed
        // segment is opened by its file's length.
        active.trim()?;
        if active.size() == 0 {
            if active_base == base {
                return Ok(());
            }
            // An empty active segment is replaced rather than kept as a hole.
            let empty = self.segments.remove(&active_base).expect("active segment");
            empty.delete(self.storage.as_ref())?;
        } else {
            active.seal()?;
        }
        let segment = Segment::create(
            &self.storage,
            &self.dir,
            base,
            "",
            self.config.index_interval_bytes,
            now,
        )?;
        self.segments.insert(base, segment);
        self.segments_changed = true;
        Ok(())
    }

    /// Reads whole batches starting with the one holding `offset`.
    ///
    /// Returns at most `max_bytes` (but always at least one batch when
    /// `min_one_batch` is set and data exists, so a consumer can make progress
    /// past a large batch) and never a batch that reaches `upper_bound`
    /// (exclusive; the high watermark for consumers). Data comes from one
    /// segment per call. `offset` must lie in `[log start, log end]`.
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        upper_bound: Option<Offset>,
        min_one_batch: bool,
    ) -> Result<Bytes, LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(self.out_of_range(offset));
        }
        let upper = upper_bound
            .unwrap_or(self.log_end_offset)
            .min(self.log_end_offset);
        if offset >= upper {
            return Ok(Bytes::new());
        }
        let first = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(Offset::MIN, |(&b, _)| b);
        for segment in self.segments.range(first..).map(|(_, s)| s) {
            if let Some((position, first)) = segment.translate(offset)? {
                return segment.read(position, &first, max_bytes, upper, min_one_batch);
            }
        }
        Ok(Bytes::new())
    }

    fn out_of_range(&self, offset: Offset) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            log_start: self.log_start_offset,
            log_end: self.log_end_offset,
        }
    }

    /// Kafka's ListOffsets by timestamp: the first record at or after
    /// `timestamp`, with its timestamp; `None` if every record is older.
    pub fn offset_for_timestamp(
        &self,
        timestamp: TimestampMs,
    ) -> Result<Option<(Offset, TimestampMs)>, LogError> {
        for segment in self.segments.values() {
            // Segments never sealed may not know their max timestamp; search them.
            if segment.size() == 0
                || (segment.max_timestamp() < timestamp && segment.max_timestamp() >= 0)
            {
                continue;
            }
            if let Some(found) = segment.find_by_timestamp(timestamp, self.log_start_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp (ListOffsets `MAX_TIMESTAMP`, KIP-734).
    pub fn max_timestamp_offset(&self) -> Result<Option<(Offset, TimestampMs)>, LogError> {
        let best = self
            .segments
            .values()
            .filter(|s| s.size() > 0)
            .max_by_key(|s| s.max_timestamp());
        let Some(segment) = best else {
            return Ok(None);
        };
        let ts = segment.max_timestamp();
        segment.find_by_timestamp(ts, self.log_start_offset)
    }

    /// Removes every record at or after `offset` (a follower diverged from a
    /// new leader). Whole batches go: a batch that holds `offset` is removed
    /// with any earlier records it holds, as in Kafka.
    pub fn truncate_to(&mut self, offset: Offset) -> Result<(), LogError> {
        if offset >= self.log_end_offset {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return self.truncate_fully_and_start_at(offset);
        }
        // Epochs first: if the data truncation then fails, a retry finds the
        // cache already right; the reverse order could leave epochs pointing
        // past the end of the log.
        self.epochs.truncate_from_end(offset)?;
        // Newest first, so a crash part-way leaves a log that ends earlier,
        // never one with a hole.
        let later: Vec<Offset> = self.segments.range(offset + 1..).map(|(&b, _)| b).collect();
        for base in later.into_iter().rev() {
            let segment = self.segments.remove(&base).expect("listed above");
            segment.delete(self.storage.as_ref())?;
        }
        let active = self.active_mut();
        active.truncate_to(offset)?;
        active.truncate_aborted(offset)?;
        // Truncated data must not come back after a power loss.
        active.sync()?;
        self.log_end_offset = active.next_offset().expect("active segment end is known");
        if self.log_end_offset < self.log_start_offset {
            // The batch holding the log start went too: nothing readable is
            // left, so restart empty at the start (which never moves back).
            return self.truncate_fully_and_start_at(self.log_start_offset);
        }
        self.first_dirty_offset = self.first_dirty_offset.min(self.log_end_offset);
        self.recovery_point = self.recovery_point.min(self.log_end_offset);
        if self.checkpointed_recovery_point > self.log_end_offset {
            self.write_recovery_checkpoint(self.log_end_offset)?;
        }
        // Snapshots past the new end describe batches that are gone: delete
        // them durably, or a crash could bring one back over new data.
        let stale = self.log_end_offset;
        if producer::delete_snapshots(self.storage.as_ref(), &self.dir, |o| o > stale)? > 0 {
            self.storage
                .sync_dir(&self.dir)
                .map_err(LogError::io("sync directory", &self.dir))?;
        }
        // The truncated batches' producers must not look appended.
        self.rebuild_producer_state(&[])
    }

    /// Empties the log and restarts it at `offset` (a follower far behind a
    /// leader whose log starts later).
    pub fn truncate_fully_and_start_at(&mut self, offset: Offset) -> Result<(), LogError> {
        let bases: Vec<Offset> = self.segments.keys().copied().collect();
        for base in bases.into_iter().rev() {
            let segment = self.segments.remove(&base).expect("listed above");
            segment.delete(self.storage.as_ref())?;
        }
        let now = self.clock.now_ms();
        let segment = Segment::create(
            &self.storage,
            &self.dir,
            offset,
            "",
            self.config.index_interval_bytes,
            now,
        )?;
        self.segments.insert(offset, segment);
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.recovery_point = offset;
        self.first_dirty_offset = offset;
        self.epochs.clear()?;
        if producer::delete_snapshots(self.storage.as_ref(), &self.dir, |_| true)? > 0 {
            self.storage
                .sync_dir(&self.dir)
                .map_err(LogError::io("sync directory", &self.dir))?;
        }
        self.producers = ProducerStates::default();
        self.snapshot_offset = None;
        self.write_log_start_checkpoint()?;
        self.write_recovery_checkpoint(offset)?;
        self.segments_changed = true;
        Ok(())
    }

    /// Moves the log start forward (Kafka DeleteRecords); segments wholly
    /// below it are deleted. Returns false if `offset` is not past the current start.
    pub fn advance_log_start_offset(&mut self, offset: Offset) -> Result<bool, LogError> {
        if offset > self.log_end_offset {
            return Err(self.out_of_range(offset));
        }
        if offset <= self.log_start_offset {
            return Ok(false);
        }
        let previous = self.log_start_offset;
        self.log_start_offset = offset;
        if let Err(e) = self.write_log_start_checkpoint() {
            self.log_start_offset = previous;
            return Err(e);
        }
        self.epochs.truncate_from_start(offset)?;
        self.first_dirty_offset = self.first_dirty_offset.max(offset);
        self.delete_segments_below_start()?;
        Ok(true)
    }

    fn delete_segments_below_start(&mut self) -> Result<usize, LogError> {
        let start = self.log_start_offset;
        self.producers
            .remove_stale(start, self.clock.now_ms(), None);
        let keep_from = self
            .segments
            .range(..=start)
            .next_back()
            .map_or(start, |(&b, _)| b);
        producer::delete_snapshots(self.storage.as_ref(), &self.dir, |o| o < keep_from)?;
        let bases: Vec<Offset> = self.segments.keys().copied().collect();
        let mut deleted = 0;
        for pair in bases.windows(2) {
            if pair[1] > self.log_start_offset {
                break;
            }
            let segment = self.segments.remove(&pair[0]).expect("listed above");
            segment.delete(self.storage.as_ref())?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Applies retention: deletes closed segments wholly below
    /// `high_watermark` (and below the first record of any unsettled
    /// transaction) that are older than `retention.ms` or beyond
    /// `retention.bytes` (for `cleanup.policy` with `delete`), and those below
    /// the log start offset. Never touches the active segment. Returns how
    /// many segments were deleted.
    pub fn delete_old_segments(&mut self, high_watermark: Offset) -> Result<usize, LogError> {
        let now = self.clock.now_ms();
        // An open transaction's first record stays: read_committed readers
        // and the coordinator's abort still need it.
        let high_watermark = self.last_stable_offset(high_watermark);
        let mut new_start = self.log_start_offset;
        if self.config.cleanup_policy.delete {
            let bases: Vec<Offset> = self.segments.keys().copied().collect();
            let mut excess = if self.config.retention_bytes >= 0 {
                self.size_bytes() as i64 - self.config.retention_bytes
            } else {
                i64::MIN
            };
            // Closed segments, oldest first, each with the next segment's base.
            for pair in bases.windows(2) {
                let (base, next_base) = (pair[0], pair[1]);
                if next_base > high_watermark {
                    break;
                }
                let segment = &self.segments[&base];
                let expired = self.config.retention_ms >= 0
                    && now.saturating_sub(segment.retention_timestamp()) > self.config.retention_ms;
                let size = segment.size() as i64;
                let oversize = excess != i64::MIN && excess - size >= 0;
                if !(expired || oversize) {
                    break;
                }
                if oversize {
                    excess -= size;
                }
                new_start = new_start.max(next_base);
            }
        }
        if new_start > self.log_start_offset {
            let previous = self.log_start_offset;
            self.log_start_offset = new_start;
            if let Err(e) = self.write_log_start_checkpoint() {
                self.log_start_offset = previous;
                return Err(e);
            }
            self.epochs.truncate_from_start(new_start)?;
            self.first_dirty_offset = self.first_dirty_offset.max(new_start);
        }
        self.delete_segments_below_start()
    }

    /// Writes everything appended so far to stable storage and moves the
    /// recovery point to the log end.
    ///
    /// In steady state (the checkpointed recovery point already lies in the
    /// active segment and no segment was created or sealed since) this is
    /// one fdatasync of the active segment's log file: a crash rescans that
    /// whole segment and rebuilds its indexes anyway. Otherwise every segment
    /// from the checkpointed recovery point on is synced with its indexes,
    /// then the directory, then the recovery-point checkpoint is written.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.epochs.sync()?;
        let active_base = self.active_base();
        if !self.segments_changed && self.checkpointed_recovery_point >= active_base {
            self.active_mut().sync_log()?;
        } else {
            let from = self
                .segments
                .range(..=self.checkpointed_recovery_point)
                .next_back()
                .map_or(Offset::MIN, |(&b, _)| b);
            for segment in self.segments.range_mut(from..).map(|(_, s)| s) {
                segment.flush()?;
            }
            self.storage
                .sync_dir(&self.dir)
                .map_err(LogError::io("sync directory", &self.dir))?;
            self.write_recovery_checkpoint(self.log_end_offset)?;
            self.segments_changed = false;
        }
        self.recovery_point = self.log_end_offset;
        self.unflushed_messages = 0;
        self.last_flush_ms = self.clock.now_ms();
        Ok(())
    }

    /// Flushes if `flush.ms` has passed since the last flush with data unflushed.
    pub fn maybe_flush(&mut self) -> Result<bool, LogError> {
        let due = self.unflushed_messages > 0
            && self.clock.now_ms().saturating_sub(self.last_flush_ms) >= self.config.flush_ms;
        if due {
            self.flush()?;
        }
        Ok(due)
    }

    /// Flushes and closes the log, leaving a clean-shutdown marker so the
    /// next open skips recovery.
    pub fn close(mut self) -> Result<(), LogError> {
        // A clean start trusts the checkpoint: write it, whatever `flush` would skip.
        self.segments_changed = true;
        for segment in self.segments.values_mut() {
            segment.trim()?;
            // A clean start trusts index files: do not leave a damaged one.
            if segment.index_damaged() {
                segment.rebuild_index_files()?;
            }
        }
        self.flush()?;
        producer::write_snapshot(
            self.storage.as_ref(),
            &self.dir,
            self.log_end_offset,
            &self.producers,
        )?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_MARKER);
        checkpoint::write_atomically(self.storage.as_ref(), &marker, b"")?;
        Ok(())
    }

    /// Closes the log for a caller that makes a whole directory of logs
    /// durable at once (one `syncfs` for the file system, then one marker,
    /// then [`Log::open_after_clean_shutdown`]): it leaves the files as
    /// [`Log::close`] does, but fsyncs nothing and writes no marker. A log
    /// with nothing new since it was opened or last flushed writes nothing.
    pub fn close_unsynced(mut self) -> Result<(), LogError> {
        self.epochs.write_unsynced(self.log_end_offset)?;
        // Only the active segment takes appends, so only it can hold a
        // failed write's bytes past its logical size (rolling trims).
        self.active_mut().trim()?;
        for segment in self.segments.values_mut() {
            if segment.index_damaged() {
                segment.rebuild_index_files()?;
            }
            segment.persist_index()?;
        }
        if self.checkpointed_recovery_point != self.log_end_offset {
            checkpoint::write_unsynced_offset(
                self.storage.as_ref(),
                &self.dir.join(RECOVERY_POINT_CHECKPOINT),
                self.log_end_offset,
            )?;
        }
        if self.log_end_offset > self.log_start_offset
            && self.snapshot_offset != Some(self.log_end_offset)
        {
            producer::write_snapshot(
                self.storage.as_ref(),
                &self.dir,
                self.log_end_offset,
                &self.producers,
            )?;
        }
        Ok(())
    }

    /// Deletes the log and its directory.
    pub fn delete(self) -> Result<(), LogError> {
        self.storage
            .remove_dir_all(&self.dir)
            .map_err(LogError::io("delete log directory", &self.dir))
    }

    fn write_log_start_checkpoint(&self) -> Result<(), LogError> {
        checkpoint::write_offset(
            self.storage.as_ref(),
            &self.dir.join(LOG_START_OFFSET_CHECKPOINT),
            self.log_start_offset,
        )
    }

    fn write_recovery_checkpoint(&mut self, offset: Offset) -> Result<(), LogError> {
        checkpoint::write_offset(
            self.storage.as_ref(),
            &self.dir.join(RECOVERY_POINT_CHECKPOINT),
            offset,
        )?;
        self.checkpointed_recovery_point = offset;
        Ok(())
    }
}

/// The broker shares a log between its request handlers and I/O threads.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
};

/// The index entry for a transaction a marker just aborted (`state` as
/// after the marker).
fn aborted_entry(state: &ProducerStates, done: &CompletedTxn) -> AbortedTxn {
    AbortedTxn {
        producer_id: done.producer_id,
        first_offset: done.first_offset,
        last_offset: done.last_offset,
        last_stable_offset: state.last_stable_offset_after(done),
    }
}

/// Removes `.index` / `.timeindex` / `.txnindex` files whose `.log` is gone (a deletion
/// that crashed half-way).
fn remove_orphan_indexes(
    storage: &dyn Storage,
    dir: &Path,
    names: &[String],
    bases: &[Offset],
) -> Result<(), LogError> {
    for name in names {
        let Some(base) = name
            .strip_suffix(crate::segment::INDEX_SUFFIX)
            .or_else(|| name.strip_suffix(crate::segment::TIME_INDEX_SUFFIX))
            .or_else(|| name.strip_suffix(crate::segment::TXN_INDEX_SUFFIX))
        else {
            continue;
        };
        let Ok(base) = base.parse::<Offset>() else {
            continue;
        };
        if bases.binary_search(&base).is_err() {
            let path = dir.join(name);
            storage
                .remove_file(&path)
                .map_err(LogError::io("remove orphan index", &path))?;
        }
    }
    Ok(())
}

/// Re-encodes a producer's batch with `codec` (the log's `compression.type`),
/// keeping its records, their offset deltas and create times, and its
/// producer id, epoch, sequence and transactional flag.
fn recompress(batch: &RecordBatch<'_>, codec: Compression) -> Result<Vec<u8>, BatchError> {
    let h = batch.header();
    let mut builder = BatchBuilder::with_capacity(codec, batch.size())
        .producer(h.producer_id, h.producer_epoch, h.base_sequence)
        .transactional(h.is_transactional())
        .last_offset_delta(h.last_offset_delta);
    for record in batch.records()? {
        let r = record?;
        let delta =
            i32::try_from(r.offset - h.base_offset).map_err(|_| BatchError::MalformedRecord {
                reason: "record offset delta out of range",
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
