//! One segment: a `.log` file of batches plus its `.index` and `.timeindex`,
//! and a `.txnindex` once a transaction aborts in it.
//!
//! The two indexes are created by their first entry, not with the segment: a
//! segment that has not reached `index.interval.bytes` (every new partition,
//! most idle ones) has only its `.log` on disk, so creating a partition costs
//! one segment file, not three. A sealed segment always has its `.timeindex`
//! (sealing writes its max timestamp there).
//!
//! Files are named by the segment's base offset, zero-padded to 20 digits
//! (`00000000000000000000.log`). Appends write at the segment's logical size
//! with a positional write, so a failed write (a full disk) is undone by
//! truncating back and never leaves the in-memory view pointing at garbage.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use runnel_records::batch::{BatchHeader, ControlRecord, RecordBatch};

use crate::error::LogError;
use crate::index::{OFFSET_ENTRY_SIZE, OffsetEntry, SegmentIndex, TIME_ENTRY_SIZE, relative};
use crate::scan::{MAX_LOOKUP_CHUNK, SCAN_CHUNK, ScanError, Scanner};
use crate::storage::{Storage, StorageFile};
use crate::txn_index::{self, AbortedTxn};
use crate::{Offset, TimestampMs};

/// Suffix of a segment's log file.
pub(crate) const LOG_SUFFIX: &str = ".log";
/// Suffix of a segment's offset index.
pub(crate) const INDEX_SUFFIX: &str = ".index";
/// Suffix of a segment's time index.
pub(crate) const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Suffix of a segment's aborted-transaction index.
pub(crate) const TXN_INDEX_SUFFIX: &str = ".txnindex";

/// The file name of a segment file: base offset, 20 digits, then the suffix.
pub(crate) fn file_name(base: Offset, suffix: &str, extra: &str) -> String {
    format!("{base:020}{suffix}{extra}")
}

/// Facts about one batch being appended, gathered during validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchMeta {
    /// Byte position of the batch within the appended buffer.
    pub position: usize,
    /// Size in bytes.
    pub size: usize,
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Records it holds.
    pub records_count: i32,
    /// Epoch of the leader that appended it.
    pub partition_leader_epoch: crate::LeaderEpoch,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// Its max timestamp.
    pub max_timestamp: TimestampMs,
    /// Offset holding that timestamp (the last offset, as Kafka records it for v2).
    pub offset_of_max_timestamp: Offset,
}

/// What a recovery scan of a segment found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Bytes of valid batches from the start.
    pub valid_size: u64,
    /// Offset after the last valid batch, if there is one.
    pub next_offset: Option<Offset>,
    /// Why the scan stopped before the end of the file (torn tail, bad CRC,
    /// offsets going backwards), if it did.
    pub stopped: Option<String>,
}

/// A segment of a partition log.
#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: Offset,
    dir: PathBuf,
    /// Extra suffix while the segment is being built by the cleaner (`.cleaned`, `.swap`).
    extra: &'static str,
    /// Where the index files are created when their first entry comes.
    storage: Arc<dyn Storage>,
    log: Arc<dyn StorageFile>,
    offset_index_file: IndexFile,
    time_index_file: IndexFile,
    /// Logical size: the bytes of whole batches; anything after is ignored and overwritten.
    size: u64,
    index: OnceLock<SegmentIndex>,
    max_timestamp: TimestampMs,
    offset_of_max_timestamp: Offset,
    /// Max timestamp of the first batch, from which `segment.ms` is measured.
    rolling_based_timestamp: Option<TimestampMs>,
    created_ms: TimestampMs,
    bytes_since_last_index_entry: u64,
    /// `index.interval.bytes` of the log.
    index_interval_bytes: u64,
    /// Set when a lookup found the index pointing at the wrong place.
    index_damaged: AtomicBool,
    /// Offset after the last batch, when known (always for the active segment).
    next_offset: Option<Offset>,
    /// Aborted transactions whose abort markers lie here (`.txnindex`), in marker order.
    aborted: Vec<AbortedTxn>,
    /// The `.txnindex` file, opened once the segment has one.
    txn_file: Option<Arc<dyn StorageFile>>,
    /// The `.txnindex` file was there but unreadable: the log rebuilds it.
    txn_index_damaged: bool,
}

impl Segment {
    /// Creates an empty segment (any existing files with these names are
    /// emptied or removed).
    pub(crate) fn create(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: Offset,
        extra: &'static str,
        index_interval_bytes: u64,
        now_ms: TimestampMs,
    ) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX, extra));
        let log = {
            let path = &log_path;
            let file = storage
                .open(path, true)
                .map_err(LogError::io("create segment file", path))?;
            // Only when there is something to cut: on ext4, truncating a file
            // makes its close write back all its dirty pages.
            if file
                .len()
                .map_err(LogError::io("stat segment file", path))?
                > 0
            {
                file.set_len(0)
                    .map_err(LogError::io("truncate segment file", path))?;
            }
            file
        };
        let index = OnceLock::new();
        index
            .set(SegmentIndex::default())
            .expect("fresh OnceLock is empty");
        // Indexes left by an earlier segment of this name would be read as
        // this one's once it wrote its first entry.
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX] {
            let path = dir.join(file_name(base_offset, suffix, extra));
            remove_if_present(storage.as_ref(), &path)
                .map_err(LogError::io("remove stale index", &path))?;
        }
        Ok(Segment {
            base_offset,
            dir: dir.to_owned(),
            extra,
            storage: Arc::clone(storage),
            log,
            offset_index_file: IndexFile::absent(INDEX_SUFFIX),
            time_index_file: IndexFile::absent(TIME_INDEX_SUFFIX),
            size: 0,
            index,
            max_timestamp: runnel_records::batch::NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            rolling_based_timestamp: None,
            created_ms: now_ms,
            bytes_since_last_index_entry: 0,
            index_interval_bytes,
            index_damaged: AtomicBool::new(false),
            next_offset: Some(base_offset),
            aborted: Vec::new(),
            txn_file: None,
            txn_index_damaged: false,
        })
    }

    /// Opens an existing segment without scanning it. Returns the segment and
    /// whether its indexes are missing or malformed (the caller rebuilds them).
    pub(crate) fn open(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: Offset,
        extra: &'static str,
        index_interval_bytes: u64,
        now_ms: TimestampMs,
    ) -> Result<(Segment, bool), LogError> {
        let path = |suffix: &str| dir.join(file_name(base_offset, suffix, extra));
        let log_path = path(LOG_SUFFIX);
        let log = storage
            .open(&log_path, false)
            .map_err(LogError::io("open segment", &log_path))?;
        let size = log.len().map_err(LogError::io("stat segment", &log_path))?;
        let mut indexes_ok = true;
        let mut open_index = |suffix: &'static str, entry: usize| -> Result<IndexFile, LogError> {
            let p = path(suffix);
            match storage.open(&p, false) {
                Ok(file) => {
                    let len = file.len().map_err(LogError::io("stat index", &p))?;
                    indexes_ok &= len % entry as u64 == 0;
                    Ok(IndexFile::opened(suffix, file))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Nothing reached `index.interval.bytes`, so there was no
                    // entry to write: no file is the empty index. A longer
                    // log lost its index, which is rebuilt.
                    indexes_ok &= size <= index_interval_bytes;
                    Ok(IndexFile::absent(suffix))
                }
                Err(e) => Err(LogError::io("open index", &p)(e)),
            }
        };
        let offset_index_file = open_index(INDEX_SUFFIX, OFFSET_ENTRY_SIZE)?;
        let time_index_file = open_index(TIME_INDEX_SUFFIX, TIME_ENTRY_SIZE)?;
        let (aborted, txn_file, txn_index_damaged) =
            open_txn_index(storage.as_ref(), &path(TXN_INDEX_SUFFIX))?;
        let mut segment = Segment {
            base_offset,
            dir: dir.to_owned(),
            extra,
            storage: Arc::clone(storage),
            log,
            offset_index_file,
            time_index_file,
            size,
            index: OnceLock::new(),
            max_timestamp: runnel_records::batch::NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            rolling_based_timestamp: None,
            created_ms: now_ms,
            bytes_since_last_index_entry: 0,
            index_interval_bytes,
            index_damaged: AtomicBool::new(false),
            next_offset: None,
            aborted,
            txn_file,
            txn_index_damaged,
        };
        if indexes_ok && let Some(time_index) = segment.time_index_file.get() {
            // The last time index entry of a closed segment is its max timestamp
            // (written when the segment rolled); reading 12 bytes avoids loading it all.
            let len = time_index
                .len()
                .map_err(LogError::io("stat index", path(TIME_INDEX_SUFFIX)))?;
            if len >= TIME_ENTRY_SIZE as u64 {
                let mut e = [0u8; TIME_ENTRY_SIZE];
                time_index
                    .read_exact_at(&mut e, len - TIME_ENTRY_SIZE as u64)
                    .map_err(LogError::io("read index", path(TIME_INDEX_SUFFIX)))?;
                segment.max_timestamp = i64::from_be_bytes(e[..8].try_into().expect("8 bytes"));
                segment.offset_of_max_timestamp = base_offset
                    + Offset::from(u32::from_be_bytes(e[8..].try_into().expect("4 bytes")));
            }
        }
        Ok((segment, !indexes_ok))
    }

    /// Changes `index.interval.bytes` for future index entries.
    pub(crate) fn set_index_interval_bytes(&mut self, bytes: u64) {
        self.index_interval_bytes = bytes;
    }

    /// The segment's base offset.
    pub(crate) fn base_offset(&self) -> Offset {
        self.base_offset
    }

    /// Logical size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Largest record timestamp in the segment (-1 when empty or unknown).
    pub(crate) fn max_timestamp(&self) -> TimestampMs {
        self.max_timestamp
    }

    /// The time retention measures the segment's age from: its largest
    /// record timestamp, or when it was created or opened if it has none.
    pub(crate) fn retention_timestamp(&self) -> TimestampMs {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.created_ms
        }
    }

    /// Offset after the last batch, when known.
    pub(crate) fn next_offset(&self) -> Option<Offset> {
        self.next_offset
    }

    /// Handle of the log file, for readers that outlive a borrow of the log (the cleaner).
    pub(crate) fn log_file(&self) -> Arc<dyn StorageFile> {
        Arc::clone(&self.log)
    }

    /// Path of one of the segment's files.
    pub(crate) fn path(&self, suffix: &str) -> PathBuf {
        self.dir
            .join(file_name(self.base_offset, suffix, self.extra))
    }

    fn index(&self) -> Result<&SegmentIndex, LogError> {
        if let Some(index) = self.index.get() {
            return Ok(index);
        }
        let loaded = self.load_index()?;
        // Another reader may have won the race; either copy is the same.
        let _ = self.index.set(loaded);
        Ok(self.index.get().expect("just set"))
    }

    fn index_mut(&mut self) -> Result<&mut SegmentIndex, LogError> {
        self.index()?;
        Ok(self.index.get_mut().expect("loaded above"))
    }

    /// Reads the index files, rebuilding them from the log if they do not make sense.
    fn load_index(&self) -> Result<SegmentIndex, LogError> {
        let read_all = |index: &IndexFile| -> Result<Vec<u8>, LogError> {
            let Some(file) = index.get() else {
                return Ok(Vec::new());
            };
            let p = self.path(index.suffix);
            let len = file.len().map_err(LogError::io("stat index", &p))?;
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, 0)
                .map_err(LogError::io("read index", &p))?;
            Ok(buf)
        };
        let offsets = read_all(&self.offset_index_file)?;
        let times = read_all(&self.time_index_file)?;
        if let Some(index) = SegmentIndex::decode(&offsets, &times, self.size) {
            return Ok(index);
        }
        let (mut index, _) = self.rebuild_index()?;
        self.write_index_files(&mut index)?;
        Ok(index)
    }

    /// Scans the whole segment, validating every batch (CRC, offsets after
    /// `floor` and increasing), rebuilds the indexes and cuts the file after
    /// the last valid batch.
    pub(crate) fn recover(&mut self, floor: Option<Offset>) -> Result<ScanOutcome, LogError> {
        let mut index = SegmentIndex::default();
        let mut scanner = Scanner::new(self.log.as_ref(), 0, self.size, SCAN_CHUNK);
        let mut acc = Accumulator::new(self.base_offset);
        let mut stopped = None;
        let mut floor = floor.unwrap_or(self.base_offset).max(self.base_offset);
        loop {
            let (pos, header) = match scanner.next_batch() {
                Ok(Some((pos, batch))) => (pos, *batch.header()),
                Ok(None) => break,
                Err(ScanError::Invalid { position, error }) => {
                    stopped = Some(format!("at byte {position}: {error}"));
                    break;
                }
                Err(ScanError::Io(e)) => {
                    return Err(LogError::io("read segment", self.path(LOG_SUFFIX))(e));
                }
            };
            // Offsets must increase and stay addressable from the segment base.
            if header.base_offset < floor
                || relative(self.base_offset, header.last_offset()).is_none()
            {
                stopped = Some(format!(
                    "at byte {pos}: batch offsets {}..={} do not follow offset {floor}",
                    header.base_offset,
                    header.last_offset()
                ));
                break;
            }
            acc.add(&mut index, pos, &header, self.index_interval_bytes);
            floor = header.next_offset();
        }
        let valid_size = acc.end;
        let path = self.path(LOG_SUFFIX);
        let file_len = self
            .log
            .len()
            .map_err(LogError::io("stat segment", &path))?;
        if file_len > valid_size {
            self.log
                .set_len(valid_size)
                .map_err(LogError::io("truncate segment", &path))?;
        }
        self.size = valid_size;
        self.adopt(index, &acc);
        Ok(ScanOutcome {
            valid_size,
            next_offset: acc.next,
            stopped,
        })
    }

    /// Takes a freshly built index and the stats gathered while building it;
    /// the index files are rewritten from scratch on the next persist.
    fn adopt(&mut self, mut index: SegmentIndex, acc: &Accumulator) {
        index.persisted_offsets = 0;
        index.persisted_times = 0;
        self.max_timestamp = acc.max_timestamp;
        self.offset_of_max_timestamp = acc.offset_of_max;
        self.rolling_based_timestamp = acc.first_timestamp;
        self.bytes_since_last_index_entry = acc.bytes_since_entry;
        self.next_offset = Some(acc.next.unwrap_or(self.base_offset));
        self.index = OnceLock::new();
        let _ = self.index.set(index);
    }

    /// Rebuilds the indexes by skimming batch headers (no CRC check), up to
    /// the first batch that does not parse: recovery deals with that one.
    fn rebuild_index(&self) -> Result<(SegmentIndex, Accumulator), LogError> {
        let mut index = SegmentIndex::default();
        let mut scanner = Scanner::new(self.log.as_ref(), 0, self.size, SCAN_CHUNK);
        let mut acc = Accumulator::new(self.base_offset);
        loop {
            match scanner.next_header() {
                Ok(Some((pos, header))) => {
                    acc.add(&mut index, pos, &header, self.index_interval_bytes)
                }
                Ok(None) | Err(ScanError::Invalid { .. }) => break,
                Err(ScanError::Io(e)) => {
                    return Err(LogError::io("read segment", self.path(LOG_SUFFIX))(e));
                }
            }
        }
        if let Some(rel) = relative(self.base_offset, acc.offset_of_max) {
            index.maybe_append_time(acc.max_timestamp, rel);
        }
        Ok((index, acc))
    }

    fn next_header(
        &self,
        scanner: &mut Scanner<'_>,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        match scanner.next_header() {
            Ok(h) => Ok(h),
            Err(ScanError::Io(e)) => Err(LogError::io("read segment", self.path(LOG_SUFFIX))(e)),
            Err(ScanError::Invalid { position, error }) => Err(LogError::Corrupt {
                path: self.path(LOG_SUFFIX),
                reason: format!("invalid batch at byte {position}: {error}"),
            }),
        }
    }

    /// Calls `f` with the position and header of every batch whose last
    /// offset is at or after `offset`, in order, and the control record of
    /// each control batch (replaying producer and transaction state).
    pub(crate) fn for_each_header_from(
        &self,
        offset: Offset,
        mut f: impl FnMut(&BatchHeader, Option<ControlRecord>) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let Some((start, _)) = self.translate(offset)? else {
            return Ok(());
        };
        let mut scanner = Scanner::new(self.log.as_ref(), start, self.size, SCAN_CHUNK);
        while let Some((pos, header)) = self.next_header(&mut scanner)? {
            if header.last_offset() < offset {
                continue;
            }
            let control = if header.is_control() {
                Some(self.control_record_at(pos, &header)?)
            } else {
                None
            };
            f(&header, control)?;
        }
        Ok(())
    }

    /// Reads the control record of the control batch at `pos`.
    fn control_record_at(&self, pos: u64, header: &BatchHeader) -> Result<ControlRecord, LogError> {
        let path = self.path(LOG_SUFFIX);
        let mut buf = vec![0u8; header.size()];
        self.log
            .read_exact_at(&mut buf, pos)
            .map_err(LogError::io("read segment", &path))?;
        RecordBatch::parse(&buf)
            .and_then(|(batch, _)| ControlRecord::from_batch(&batch))
            .map_err(|e| LogError::Corrupt {
                path,
                reason: format!("control batch at byte {pos}: {e}"),
            })
    }

    /// Checks the tail after the last index entry of a segment trusted after
    /// a clean shutdown, learning its end offset and max timestamp. Returns
    /// false, changing nothing, if the tail is invalid: the caller then
    /// recovers the whole segment.
    pub(crate) fn load_tail(&mut self) -> Result<bool, LogError> {
        let index = self.index()?;
        let start = index.offsets.last().map_or(0, |e| u64::from(e.position));
        let (max_ts, offset_of_max) = match index.times.last() {
            Some(t) => (
                t.timestamp,
                self.base_offset + Offset::from(t.relative_offset),
            ),
            None => (runnel_records::batch::NO_TIMESTAMP, self.base_offset),
        };
        let mut acc = Accumulator::new(self.base_offset);
        acc.max_timestamp = max_ts;
        acc.offset_of_max = offset_of_max;
        acc.end = start;
        let mut scanner = Scanner::new(self.log.as_ref(), start, self.size, SCAN_CHUNK);
        let mut scratch = SegmentIndex::default();
        loop {
            match scanner.next_batch() {
                Ok(Some((pos, batch))) => {
                    let header = *batch.header();
                    acc.add(&mut scratch, pos, &header, u64::MAX);
                }
                Ok(None) => break,
                Err(ScanError::Invalid { .. }) => return Ok(false),
                Err(ScanError::Io(e)) => {
                    return Err(LogError::io("read segment", self.path(LOG_SUFFIX))(e));
                }
            }
        }
        if self.size > 0 && acc.next.is_none() {
            return Ok(false);
        }
        self.max_timestamp = acc.max_timestamp;
        self.offset_of_max_timestamp = acc.offset_of_max;
        self.bytes_since_last_index_entry = acc.bytes_since_entry;
        self.next_offset = Some(acc.next.unwrap_or(self.base_offset));
        self.rolling_based_timestamp = self.first_batch_header()?.map(|h| h.max_timestamp);
        Ok(true)
    }

    fn first_batch_header(&self) -> Result<Option<BatchHeader>, LogError> {
        let mut scanner = Scanner::new(self.log.as_ref(), 0, self.size, self.lookup_chunk());
        Ok(self.next_header(&mut scanner)?.map(|(_, h)| h))
    }

    /// Whether appending `size` bytes ending at `last_offset` with
    /// `max_timestamp` must go to a new segment.
    pub(crate) fn should_roll(
        &self,
        config: &crate::LogConfig,
        size: u64,
        last_offset: Offset,
        max_timestamp: TimestampMs,
        now_ms: TimestampMs,
    ) -> bool {
        if self.size == 0 {
            return false;
        }
        let index = self.index.get();
        let index_full = index.is_some_and(|i| {
            ((i.offsets.len() + 1) * OFFSET_ENTRY_SIZE) as u64 > config.segment_index_bytes
                || ((i.times.len() + 1) * TIME_ENTRY_SIZE) as u64 > config.segment_index_bytes
        });
        // Kafka measures segment age by record time when records carry one.
        let waited = match self.rolling_based_timestamp {
            Some(first) if first >= 0 => max_timestamp.saturating_sub(first),
            _ => now_ms.saturating_sub(self.created_ms),
        };
        self.size + size > config.segment_bytes
            || waited > config.segment_ms.saturating_sub(config.segment_jitter_ms)
            || index_full
            || relative(self.base_offset, last_offset).is_none_or(|r| r > i32::MAX as u32)
    }

    /// Appends validated, offset-assigned batches (`bytes`), described by `batches`.
    ///
    /// On a write error the file is cut back to its previous size and the
    /// segment is unchanged.
    pub(crate) fn append(&mut self, bytes: &[u8], batches: &[BatchMeta]) -> Result<(), LogError> {
        let start = self.size;
        if let Err(e) = self.log.write_all_at(bytes, start) {
            // Best effort: the logical size already excludes the partial write,
            // and recovery would cut it too.
            let _ = self.log.set_len(start);
            return Err(LogError::io("append to segment", self.path(LOG_SUFFIX))(e));
        }
        self.size += bytes.len() as u64;
        let base = self.base_offset;
        let index_interval_bytes = self.index_interval_bytes;
        let mut bytes_since = self.bytes_since_last_index_entry;
        let (mut max_ts, mut offset_of_max) = (self.max_timestamp, self.offset_of_max_timestamp);
        let index = self.index_mut()?;
        for b in batches {
            if b.max_timestamp > max_ts {
                max_ts = b.max_timestamp;
                offset_of_max = b.offset_of_max_timestamp;
            }
            bytes_since += b.size as u64;
            if bytes_since > index_interval_bytes {
                push_index_entries(
                    index,
                    base,
                    start + b.position as u64,
                    b.last_offset,
                    max_ts,
                    offset_of_max,
                );
                bytes_since = 0;
            }
        }
        if self.rolling_based_timestamp.is_none() {
            self.rolling_based_timestamp = batches.first().map(|b| b.max_timestamp);
        }
        self.bytes_since_last_index_entry = bytes_since;
        self.max_timestamp = max_ts;
        self.offset_of_max_timestamp = offset_of_max;
        if let Some(last) = batches.last() {
            self.next_offset = Some(last.last_offset + 1);
        }
        Ok(())
    }

    /// Position and header of the first batch whose last offset is at or after `offset`.
    pub(crate) fn translate(&self, offset: Offset) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let rel = offset.saturating_sub(self.base_offset).max(0) as u64;
        let entry = self.index()?.lookup_position(rel);
        let start = entry.map_or(0, |e| u64::from(e.position));
        let mut scanner = Scanner::new(self.log.as_ref(), start, self.size, self.lookup_chunk());
        if let Some(e) = entry {
            // The batch an entry points at must end at the entry's offset; if
            // not, the index is damaged (the log itself was validated), so
            // scan from the start instead and rebuild the index at close.
            let expected = self.base_offset + Offset::from(e.relative_offset);
            let points_right =
                matches!(scanner.next_header(), Ok(Some((_, h))) if h.last_offset() == expected);
            if !points_right {
                self.index_damaged.store(true, Ordering::Relaxed);
                scanner = Scanner::new(self.log.as_ref(), 0, self.size, self.lookup_chunk());
            } else if expected >= offset {
                scanner = Scanner::new(self.log.as_ref(), start, self.size, self.lookup_chunk());
            }
        }
        while let Some((pos, header)) = self.next_header(&mut scanner)? {
            if header.last_offset() >= offset {
                return Ok(Some((pos, header)));
            }
        }
        Ok(None)
    }

    /// Bytes a lookup reads at once: the stretch between two index entries
    /// plus the next header, so one read usually finds the batch.
    fn lookup_chunk(&self) -> usize {
        (self.index_interval_bytes as usize).min(MAX_LOOKUP_CHUNK)
            + 2 * runnel_records::batch::RECORD_BATCH_OVERHEAD
    }

    /// Whether a lookup found the index pointing at the wrong place.
    pub(crate) fn index_damaged(&self) -> bool {
        self.index_damaged.load(Ordering::Relaxed)
    }

    /// Reads whole batches starting with `first` (found by [`Self::translate`]
    /// at `position`): as many as fit in `max_bytes` (at least one when
    /// `min_one`), stopping before any batch that reaches `upper_bound`
    /// (exclusive offset bound, e.g. the high watermark).
    pub(crate) fn read(
        &self,
        position: u64,
        first: &BatchHeader,
        max_bytes: usize,
        upper_bound: Offset,
        min_one: bool,
    ) -> Result<Bytes, LogError> {
        if first.last_offset() >= upper_bound {
            return Ok(Bytes::new());
        }
        let want = if first.size() >= max_bytes {
            // Only the first batch can be served: read exactly it, or nothing.
            if !(min_one || first.size() == max_bytes) {
                return Ok(Bytes::new());
            }
            first.size()
        } else {
            ((self.size - position) as usize).min(max_bytes)
        };
        // Reading into a fresh buffer is what hands the bytes to the caller as
        // an owned `Bytes`; the zeroing is the price of no `unsafe`.
        let mut buf = vec![0u8; want];
        self.log
            .read_exact_at(&mut buf, position)
            .map_err(|e| LogError::io("read segment", self.path(LOG_SUFFIX))(e))?;
        let mut end = first.size();
        while let Ok(header) = BatchHeader::parse(&buf[end..]) {
            let next = end + header.size();
            if header.last_offset() >= upper_bound || next > buf.len() {
                break;
            }
            end = next;
        }
        buf.truncate(end);
        Ok(Bytes::from(buf))
    }

    /// Earliest record at or after `timestamp` with offset at or after `min_offset`.
    pub(crate) fn find_by_timestamp(
        &self,
        timestamp: TimestampMs,
        min_offset: Offset,
    ) -> Result<Option<(Offset, TimestampMs)>, LogError> {
        let mut start = None;
        if let Some(e) = self.index()?.lookup_time(timestamp) {
            // A time entry names the last offset of the batch holding its
            // (max-so-far) timestamp; check that before trusting it.
            let offset = self.base_offset + Offset::from(e.relative_offset);
            match self.translate(offset.max(min_offset))? {
                Some((pos, h)) if offset >= min_offset => {
                    if h.last_offset() == offset && h.max_timestamp == e.timestamp {
                        start = Some(pos);
                    } else {
                        self.index_damaged.store(true, Ordering::Relaxed);
                    }
                }
                found => start = found.map(|(pos, _)| pos),
            }
        }
        let start = match start {
            Some(pos) => pos,
            None => match self.translate(min_offset.max(self.base_offset))? {
                Some((pos, _)) => pos,
                None => return Ok(None),
            },
        };
        let mut scanner = Scanner::new(self.log.as_ref(), start, self.size, self.lookup_chunk());
        loop {
            let batch = match scanner.next_batch() {
                Ok(Some((_, batch))) => batch,
                Ok(None) => return Ok(None),
                Err(ScanError::Io(e)) => {
                    return Err(LogError::io("read segment", self.path(LOG_SUFFIX))(e));
                }
                Err(ScanError::Invalid { position, error }) => {
                    return Err(LogError::Corrupt {
                        path: self.path(LOG_SUFFIX),
                        reason: format!("invalid batch at byte {position}: {error}"),
                    });
                }
            };
            if batch.header().max_timestamp < timestamp {
                continue;
            }
            let records = batch.records().map_err(|e| LogError::Corrupt {
                path: self.path(LOG_SUFFIX),
                reason: e.to_string(),
            })?;
            for record in records {
                let record = record.map_err(|e| LogError::Corrupt {
                    path: self.path(LOG_SUFFIX),
                    reason: e.to_string(),
                })?;
                if record.timestamp >= timestamp && record.offset >= min_offset {
                    return Ok(Some((record.offset, record.timestamp)));
                }
            }
        }
    }

    /// Removes every batch that holds an offset at or after `offset`; returns
    /// the bytes removed.
    pub(crate) fn truncate_to(&mut self, offset: Offset) -> Result<u64, LogError> {
        let Some((position, _)) = self.translate(offset)? else {
            return Ok(0);
        };
        let removed = self.size - position;
        let path = self.path(LOG_SUFFIX);
        self.log
            .set_len(position)
            .map_err(LogError::io("truncate segment", &path))?;
        self.size = position;
        let rel = (offset - self.base_offset).max(0) as u64;
        let base = self.base_offset;
        let index = self.index_mut()?;
        index.truncate(position, rel);
        let start = index.offsets.last().map_or(0, |e| u64::from(e.position));
        let (mut max_ts, mut offset_of_max) = match index.times.last() {
            Some(t) => (t.timestamp, base + Offset::from(t.relative_offset)),
            None => (runnel_records::batch::NO_TIMESTAMP, base),
        };
        // Recompute the tail's max timestamp and end from the last index entry on.
        let mut scanner = Scanner::new(self.log.as_ref(), start, self.size, SCAN_CHUNK);
        let mut next = None;
        let mut bytes_since = 0;
        while let Some((_, h)) = self.next_header(&mut scanner)? {
            if h.max_timestamp > max_ts {
                max_ts = h.max_timestamp;
                offset_of_max = h.last_offset();
            }
            bytes_since += h.size() as u64;
            next = Some(h.next_offset());
        }
        self.max_timestamp = max_ts;
        self.offset_of_max_timestamp = offset_of_max;
        self.bytes_since_last_index_entry = bytes_since;
        if self.size == 0 {
            self.rolling_based_timestamp = None;
        }
        self.next_offset = Some(next.unwrap_or(self.base_offset));
        self.truncate_index_files()?;
        Ok(removed)
    }

    /// Cuts the index files to the entries that are both persisted and kept.
    fn truncate_index_files(&mut self) -> Result<(), LogError> {
        let (po, pt) = {
            let index = self.index()?;
            (index.persisted_offsets, index.persisted_times)
        };
        self.cut_index(&self.offset_index_file, po * OFFSET_ENTRY_SIZE)?;
        self.cut_index(&self.time_index_file, pt * TIME_ENTRY_SIZE)
    }

    /// Cuts an index file to `len` bytes (nothing to cut if it was never written).
    fn cut_index(&self, index: &IndexFile, len: usize) -> Result<(), LogError> {
        if let Some(file) = index.get() {
            file.set_len(len as u64)
                .map_err(LogError::io("truncate index", self.path(index.suffix)))?;
        }
        Ok(())
    }

    /// Writes `buf` at `pos` of an index file, creating the file with its first entry.
    fn write_index(&self, index: &IndexFile, buf: &[u8], pos: u64) -> Result<(), LogError> {
        let path = self.path(index.suffix);
        let file = match index.get() {
            Some(file) => file,
            None => {
                let file = self
                    .storage
                    .open(&path, true)
                    .map_err(LogError::io("create index", &path))?;
                // A racing loader's handle is the same file; either serves.
                let _ = index.file.set(file);
                index.get().expect("just set")
            }
        };
        file.write_all_at(buf, pos)
            .map_err(LogError::io("write index", &path))
    }

    /// Writes index entries that are not yet in the files.
    pub(crate) fn persist_index(&mut self) -> Result<(), LogError> {
        let Some(index) = self.index.get_mut() else {
            return Ok(()); // never loaded, so never changed
        };
        let mut index = std::mem::take(index);
        let result = self.write_index_files(&mut index);
        let _ = self.index.get_mut().map(|slot| *slot = index);
        result
    }

    fn write_index_files(&self, index: &mut SegmentIndex) -> Result<(), LogError> {
        if index.persisted_offsets == 0 {
            self.cut_index(&self.offset_index_file, 0)?;
        }
        if index.persisted_times == 0 {
            self.cut_index(&self.time_index_file, 0)?;
        }
        if let Some((pos, buf)) = index.pending_offsets() {
            self.write_index(&self.offset_index_file, &buf, pos)?;
            index.persisted_offsets = index.offsets.len();
        }
        if let Some((pos, buf)) = index.pending_times() {
            self.write_index(&self.time_index_file, &buf, pos)?;
            index.persisted_times = index.times.len();
        }
        Ok(())
    }

    /// Closes the segment for appends: records its max timestamp as the last
    /// time index entry (what a later open reads) and writes the indexes.
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        let (base, max_ts, offset_of_max) = (
            self.base_offset,
            self.max_timestamp,
            self.offset_of_max_timestamp,
        );
        if self.size > 0
            && let Some(rel) = relative(base, offset_of_max)
        {
            self.index_mut()?.maybe_append_time(max_ts, rel);
        }
        self.persist_index()
    }

    /// Writes pending index entries and fsyncs the log and both indexes.
    pub(crate) fn flush(&mut self) -> Result<(), LogError> {
        self.persist_index()?;
        self.sync()
    }

    /// Fsyncs the log file only.
    pub(crate) fn sync_log(&self) -> Result<(), LogError> {
        self.log
            .sync_data()
            .map_err(LogError::io("sync segment", self.path(LOG_SUFFIX)))
    }

    /// Fsyncs the log and the index files there are, as they are.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.log
            .sync_data()
            .map_err(LogError::io("sync segment", self.path(LOG_SUFFIX)))?;
        for index in [&self.offset_index_file, &self.time_index_file] {
            if let Some(file) = index.get() {
                file.sync_data()
                    .map_err(LogError::io("sync index", self.path(index.suffix)))?;
            }
        }
        if let Some(file) = &self.txn_file {
            file.sync_data()
                .map_err(LogError::io("sync index", self.path(TXN_INDEX_SUFFIX)))?;
        }
        Ok(())
    }

    /// Cuts files to their logical size (a failed write may have left a partial batch).
    pub(crate) fn trim(&self) -> Result<(), LogError> {
        let path = self.path(LOG_SUFFIX);
        let len = self
            .log
            .len()
            .map_err(LogError::io("stat segment", &path))?;
        if len != self.size {
            self.log
                .set_len(self.size)
                .map_err(LogError::io("truncate segment", &path))?;
        }
        Ok(())
    }

    /// Deletes the segment's files (the log file first, so a crash leaves at
    /// most orphan indexes, which recovery removes).
    pub(crate) fn delete(&self, storage: &dyn Storage) -> Result<(), LogError> {
        for suffix in [
            LOG_SUFFIX,
            INDEX_SUFFIX,
            TIME_INDEX_SUFFIX,
            TXN_INDEX_SUFFIX,
        ] {
            let p = self.path(suffix);
            remove_if_present(storage, &p).map_err(LogError::io("delete segment", &p))?;
        }
        Ok(())
    }

    /// Renames the segment's files to carry `extra` instead of the current suffix
    /// (indexes first: the log file's rename is the step that counts).
    pub(crate) fn rename_extra(
        &mut self,
        storage: &dyn Storage,
        extra: &'static str,
    ) -> Result<(), LogError> {
        let files = [
            (INDEX_SUFFIX, self.offset_index_file.get()),
            (TIME_INDEX_SUFFIX, self.time_index_file.get()),
            (TXN_INDEX_SUFFIX, self.txn_file.as_ref()),
            (LOG_SUFFIX, Some(&self.log)),
        ];
        for (suffix, file) in files {
            let from = self.path(suffix);
            let to = self.dir.join(file_name(self.base_offset, suffix, extra));
            let Some(file) = file else {
                // No file of this kind: none may be left under the new name
                // to be taken for this segment's.
                remove_if_present(storage, &to).map_err(LogError::io("remove stale index", &to))?;
                continue;
            };
            storage
                .rename(&from, &to)
                .map_err(LogError::io("rename segment file", &from))?;
            file.renamed(&to);
        }
        self.extra = extra;
        Ok(())
    }

    /// The aborted transactions whose markers lie in this segment, in marker order.
    pub(crate) fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Whether the `.txnindex` file was there but could not be read.
    pub(crate) fn txn_index_damaged(&self) -> bool {
        self.txn_index_damaged
    }

    /// Adds an aborted transaction whose marker was just written here,
    /// creating the `.txnindex` file with the first one.
    pub(crate) fn append_aborted(
        &mut self,
        storage: &dyn Storage,
        entry: AbortedTxn,
    ) -> Result<(), LogError> {
        let path = self.path(TXN_INDEX_SUFFIX);
        let file = match &self.txn_file {
            Some(f) => Arc::clone(f),
            None => {
                let f = storage
                    .open(&path, true)
                    .map_err(LogError::io("create transaction index", &path))?;
                self.txn_file = Some(Arc::clone(&f));
                f
            }
        };
        let at = (self.aborted.len() * txn_index::ENTRY_SIZE) as u64;
        file.write_all_at(&entry.encode(), at)
            .map_err(LogError::io("write transaction index", &path))?;
        self.aborted.push(entry);
        Ok(())
    }

    /// Forgets the aborted transactions whose markers lie at or after `offset`.
    pub(crate) fn truncate_aborted(&mut self, offset: Offset) -> Result<(), LogError> {
        let keep = self
            .aborted
            .iter()
            .take_while(|e| e.last_offset < offset)
            .count();
        if keep == self.aborted.len() {
            return Ok(());
        }
        self.aborted.truncate(keep);
        if let Some(file) = &self.txn_file {
            file.set_len((keep * txn_index::ENTRY_SIZE) as u64)
                .map_err(LogError::io(
                    "truncate transaction index",
                    self.path(TXN_INDEX_SUFFIX),
                ))?;
        }
        Ok(())
    }

    /// Drops the `.txnindex` before it is rebuilt from the log.
    pub(crate) fn reset_aborted(&mut self, storage: &dyn Storage) -> Result<(), LogError> {
        self.aborted.clear();
        self.txn_index_damaged = false;
        if self.txn_file.take().is_some() {
            let path = self.path(TXN_INDEX_SUFFIX);
            storage
                .remove_file(&path)
                .map_err(LogError::io("remove transaction index", &path))?;
        }
        Ok(())
    }

    /// Rebuilds both index files from the log (an index was missing or malformed).
    pub(crate) fn rebuild_index_files(&mut self) -> Result<(), LogError> {
        let (index, acc) = self.rebuild_index()?;
        self.adopt(index, &acc);
        self.index_damaged.store(false, Ordering::Relaxed);
        self.persist_index()
    }
}

/// One of a segment's two index files, created by its first entry.
#[derive(Debug)]
struct IndexFile {
    suffix: &'static str,
    file: OnceLock<Arc<dyn StorageFile>>,
}

impl IndexFile {
    /// An index with no file yet.
    fn absent(suffix: &'static str) -> IndexFile {
        IndexFile {
            suffix,
            file: OnceLock::new(),
        }
    }

    /// An index whose file exists.
    fn opened(suffix: &'static str, file: Arc<dyn StorageFile>) -> IndexFile {
        let index = IndexFile::absent(suffix);
        let _ = index.file.set(file);
        index
    }

    /// The open file, if it exists.
    fn get(&self) -> Option<&Arc<dyn StorageFile>> {
        self.file.get()
    }
}

/// Removes a file if it is there.
pub(crate) fn remove_if_present(storage: &dyn Storage, path: &Path) -> std::io::Result<()> {
    match storage.remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Opens and reads a segment's `.txnindex` if there is one: its entries,
/// the open file, and whether it was unreadable (then it is left for the
/// log to rebuild, with no entries).
#[allow(clippy::type_complexity)]
fn open_txn_index(
    storage: &dyn Storage,
    path: &Path,
) -> Result<(Vec<AbortedTxn>, Option<Arc<dyn StorageFile>>, bool), LogError> {
    if !storage.exists(path) {
        return Ok((Vec::new(), None, false));
    }
    let file = storage
        .open(path, false)
        .map_err(LogError::io("open transaction index", path))?;
    let len = file
        .len()
        .map_err(LogError::io("stat transaction index", path))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(LogError::io("read transaction index", path))?;
    Ok(match AbortedTxn::decode_all(&buf) {
        Some(entries) => (entries, Some(file), false),
        None => (Vec::new(), Some(file), true),
    })
}

/// Running totals while walking a segment's batches in order.
#[derive(Debug)]
struct Accumulator {
    base: Offset,
    end: u64,
    next: Option<Offset>,
    max_timestamp: TimestampMs,
    offset_of_max: Offset,
    first_timestamp: Option<TimestampMs>,
    bytes_since_entry: u64,
}

impl Accumulator {
    fn new(base: Offset) -> Self {
        Accumulator {
            base,
            end: 0,
            next: None,
            max_timestamp: runnel_records::batch::NO_TIMESTAMP,
            offset_of_max: base,
            first_timestamp: None,
            bytes_since_entry: 0,
        }
    }

    /// Counts the batch at `pos`, adding index entries every `interval` bytes.
    fn add(&mut self, index: &mut SegmentIndex, pos: u64, header: &BatchHeader, interval: u64) {
        self.first_timestamp.get_or_insert(header.max_timestamp);
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max = header.last_offset();
        }
        self.bytes_since_entry += header.size() as u64;
        if self.bytes_since_entry > interval {
            push_index_entries(
                index,
                self.base,
                pos,
                header.last_offset(),
                self.max_timestamp,
                self.offset_of_max,
            );
            self.bytes_since_entry = 0;
        }
        self.end = pos + header.size() as u64;
        self.next = Some(header.next_offset());
    }
}

/// Adds an offset index entry for the batch at `position` ending at
/// `last_offset`, and a time index entry when the max timestamp grew.
fn push_index_entries(
    index: &mut SegmentIndex,
    base: Offset,
    position: u64,
    last_offset: Offset,
    max_ts: TimestampMs,
    offset_of_max: Offset,
) {
    let (Some(rel), Ok(pos)) = (relative(base, last_offset), u32::try_from(position)) else {
        return;
    };
    if index
        .offsets
        .last()
        .is_none_or(|e| e.relative_offset < rel && e.position < pos)
    {
        index.offsets.push(OffsetEntry {
            relative_offset: rel,
            position: pos,
        });
    }
    if let Some(rel_max) = relative(base, offset_of_max) {
        index.maybe_append_time(max_ts, rel_max);
    }
}
