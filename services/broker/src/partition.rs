//! One partition hosted here: its log, its leadership state from the
//! metadata, and (as leader) its followers' progress and high watermark.
//! Which partitions are hosted is the log manager's business (`log_manager`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use runnel_common::metadata::TopicId;
use runnel_log::TopicConfig;
use runnel_log::{AbortedTxn, AppendInfo, Log, LogError, Offset, TimestampMs};
use runnel_records::batch::{BatchHeader, EndTxnMarker};
use tokio::sync::Notify;

use crate::replication_quota::Side;

/// A partition's identity: topic name and index.
pub type PartitionKey = (String, i32);

/// An idempotent producer as a partition knows it (Kafka's DescribeProducers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSummary {
    /// The producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub epoch: i16,
    /// Sequence number of its last appended record (-1: none in this epoch).
    pub last_sequence: i32,
    /// When this partition last appended for it (ms, broker clock).
    pub last_timestamp: i64,
    /// Offset of the first record of its open transaction here (-1: none).
    pub current_txn_start_offset: i64,
    /// Epoch of the coordinator that wrote its last marker (-1: none).
    pub coordinator_epoch: i32,
}

/// What a read_committed read returns.
#[derive(Debug, Clone, Default)]
pub struct CommittedRead {
    /// Whole batches below the last stable offset.
    pub records: Bytes,
    /// The aborted transactions whose records may be among them.
    pub aborted: Vec<AbortedTxn>,
}

/// Leadership and config of a partition, from the metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaState {
    /// This broker leads the partition.
    pub is_leader: bool,
    /// The leader's broker id (-1: none).
    pub leader: i32,
    /// The current leader epoch.
    pub leader_epoch: i32,
    /// Every replica, preferred leader first.
    pub replicas: Vec<i32>,
    /// Replicas a reassignment in progress adds (not yet counted for
    /// under-replication, as Kafka's KIP-352).
    pub adding: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// The topic's configs.
    pub config: TopicConfig,
}

/// The offset after the last batch of `records` (whole batches from the log).
fn end_of(records: &[u8]) -> Option<Offset> {
    let mut rest = records;
    let mut end = None;
    while let Ok(h) = BatchHeader::parse(rest) {
        end = Some(h.next_offset());
        match rest.get(h.size()..) {
            Some(tail) => rest = tail,
            None => break,
        }
    }
    end
}

/// One partition hosted here.
#[derive(Debug)]
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    /// Topic id the log belongs to.
    pub topic_id: TopicId,
    log: RwLock<Log>,
    state: Mutex<ReplicaState>,
    high_watermark: AtomicI64,
    log_start: AtomicI64,
    log_end: AtomicI64,
    /// The log end at the last flush the `flush.ms` policy made (or at open).
    flushed_end: AtomicI64,
    /// Woken whenever the log end or the high watermark moves (long-polling
    /// fetches and acks=all produces wait on it).
    pub data: Notify,
    /// The leader's view of its followers; a leaf lock (nothing else is taken under it).
    replication: Mutex<Replication>,
}

/// A follower's progress as its leader sees it (Kafka's `Replica` state).
#[derive(Debug, Clone, Copy)]
struct FollowerProgress {
    /// Its log end offset: the offset it last fetched from.
    log_end: Offset,
    /// When it last had everything the leader had.
    last_caught_up: std::time::Instant,
    /// The leader's log end and the time of its previous fetch.
    previous_leader_end: Offset,
    previous_fetch: std::time::Instant,
}

/// What the leader needs to move the high watermark.
#[derive(Debug, Default)]
struct Replication {
    broker_id: i32,
    is_leader: bool,
    /// When this replica started leading in the current epoch: followers
    /// not heard from yet count as caught up then.
    term_started: Option<std::time::Instant>,
    isr: Vec<i32>,
    /// Replicas the leader asked to add to the ISR: counted for the high
    /// watermark from the moment it asks, so a replica that joins never
    /// lacks a record below it.
    pending_additions: Vec<i32>,
    followers: HashMap<i32, FollowerProgress>,
}

impl Partition {
    /// A partition over an opened `log` (the log manager opens it).
    pub(crate) fn new(
        broker_id: i32,
        topic: &str,
        index: i32,
        topic_id: TopicId,
        log: Log,
        state: ReplicaState,
    ) -> Partition {
        Partition {
            topic: topic.to_owned(),
            index,
            topic_id,
            // Known once this replica leads (its ISR's log ends) or hears its leader.
            high_watermark: AtomicI64::new(log.log_start_offset()),
            log_start: AtomicI64::new(log.log_start_offset()),
            log_end: AtomicI64::new(log.log_end_offset()),
            flushed_end: AtomicI64::new(log.log_end_offset()),
            log: RwLock::new(log),
            state: Mutex::new(state),
            data: Notify::new(),
            replication: Mutex::new(Replication {
                broker_id,
                ..Replication::default()
            }),
        }
    }

    /// The partition's key.
    pub fn key(&self) -> PartitionKey {
        (self.topic.clone(), self.index)
    }

    /// Leadership and config.
    pub fn state(&self) -> ReplicaState {
        self.state.lock().clone()
    }

    /// Whether the partition is in `state` already (without copying it).
    pub(crate) fn has_state(&self, state: &ReplicaState) -> bool {
        *self.state.lock() == *state
    }

    /// The current leader epoch (without copying the whole state: fetch paths ask per partition).
    pub fn leader_epoch(&self) -> i32 {
        self.state.lock().leader_epoch
    }

    /// As leader, whether the ISR lacks any replica; `None` when not leading.
    pub fn leading_under_replicated(&self) -> Option<bool> {
        let state = self.state.lock();
        state
            .is_leader
            .then(|| state.isr.len() < state.replicas.len().saturating_sub(state.adding.len()))
    }

    /// Whether broker `id` holds a replica of this partition.
    pub fn has_replica(&self, id: i32) -> bool {
        self.state.lock().replicas.contains(&id)
    }

    /// Whether copying this partition to `replica` is throttled on `side`
    /// (see `crate::replication_quota`): the topic lists broker `me`'s
    /// replica for that side, and `replica` is not in the ISR.
    pub fn replication_throttled(&self, side: Side, me: i32, replica: i32) -> bool {
        let s = self.state.lock();
        let listed = match side {
            Side::Leader => &s.config.leader_throttled_replicas,
            Side::Follower => &s.config.follower_throttled_replicas,
        };
        listed.covers(self.index, me) && !s.isr.contains(&replica)
    }

    /// Whether this broker follows `leader` for this partition.
    pub fn follows(&self, leader: i32) -> bool {
        let s = self.state.lock();
        !s.is_leader && s.leader == leader
    }

    /// Offsets below this are readable by consumers.
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Bytes in the log's segments.
    pub fn size_bytes(&self) -> u64 {
        self.log.read().size_bytes()
    }

    /// First readable offset.
    pub fn log_start_offset(&self) -> Offset {
        self.log_start.load(Ordering::Acquire)
    }

    /// Offset the next record gets.
    pub fn log_end_offset(&self) -> Offset {
        self.log_end.load(Ordering::Acquire)
    }

    /// After the log changed: publish its offsets and wake waiting fetches.
    fn publish(&self, log: &mut Log) {
        self.log_start
            .store(log.log_start_offset(), Ordering::Release);
        self.log_end.store(log.log_end_offset(), Ordering::Release);
        self.advance_high_watermark();
        // The log settles transactions whose markers are now replicated.
        log.update_high_watermark(self.high_watermark());
        self.data.notify_waiters();
    }

    /// Offsets below this are readable by read_committed consumers: the
    /// first record of the oldest unsettled transaction, or the high watermark.
    pub fn last_stable_offset(&self) -> Offset {
        let hw = self.high_watermark();
        self.log.read().last_stable_offset(hw)
    }

    /// As leader: the high watermark becomes the lowest log end among the
    /// ISR (and replicas about to join it), never moving back.
    fn advance_high_watermark(&self) {
        let r = self.replication.lock();
        if !r.is_leader {
            return;
        }
        let current = self.high_watermark();
        let mut hw = self.log_end_offset();
        for id in r.isr.iter().chain(&r.pending_additions) {
            if *id == r.broker_id {
                continue;
            }
            hw = hw.min(r.followers.get(id).map_or(current, |f| f.log_end));
        }
        if hw > current {
            self.high_watermark.store(hw, Ordering::Release);
            drop(r);
            self.data.notify_waiters();
        }
    }

    /// As leader: follower `id` fetched from `offset` (so it holds everything
    /// below it); the high watermark may move.
    pub fn follower_fetched(&self, id: i32, offset: Offset) {
        let now = std::time::Instant::now();
        let leader_end = self.log_end_offset();
        {
            let mut r = self.replication.lock();
            let f = r.followers.entry(id).or_insert(FollowerProgress {
                log_end: -1,
                last_caught_up: now,
                previous_leader_end: -1,
                previous_fetch: now,
            });
            f.log_end = offset;
            // Kafka's rule: caught up now, or caught up with where the leader
            // was at the previous fetch.
            if offset >= leader_end {
                f.last_caught_up = now;
            } else if offset >= f.previous_leader_end && f.previous_leader_end >= 0 {
                f.last_caught_up = f.last_caught_up.max(f.previous_fetch);
            }
            f.previous_leader_end = leader_end;
            f.previous_fetch = now;
        }
        self.advance_high_watermark();
    }

    /// As leader: the ISR this partition should have now, if it differs from
    /// the current one: followers behind for longer than `max_lag` leave,
    /// replicas caught up with the high watermark (and with this leader's
    /// term) join. Joining replicas count for the high watermark from now on.
    pub fn wanted_isr(&self, max_lag: std::time::Duration) -> Option<Vec<i32>> {
        let now = std::time::Instant::now();
        let state = self.state();
        let hw = self.high_watermark();
        // Where this leader's epoch began: a joiner must hold records from this term on.
        let term_start = self
            .end_offset_for_epoch(state.leader_epoch - 1)
            .map_or(0, |(_, end)| end);
        let mut r = self.replication.lock();
        if !r.is_leader || r.isr != state.isr {
            return None;
        }
        let since = r.term_started.unwrap_or(now);
        let me = r.broker_id;
        let mut isr: Vec<i32> = r
            .isr
            .iter()
            .copied()
            .filter(|&id| {
                id == me
                    || now.duration_since(r.followers.get(&id).map_or(since, |f| f.last_caught_up))
                        <= max_lag
            })
            .collect();
        let joining: Vec<i32> = state
            .replicas
            .iter()
            .copied()
            .filter(|id| !isr.contains(id) && !r.isr.contains(id))
            .filter(|id| {
                r.followers
                    .get(id)
                    .is_some_and(|f| f.log_end >= hw && f.log_end >= term_start)
            })
            .collect();
        isr.extend(&joining);
        if isr == r.isr {
            return None;
        }
        r.pending_additions = joining;
        Some(isr)
    }

    /// The controller refused an ISR change: stop counting would-be joiners.
    pub fn isr_change_refused(&self) {
        self.replication.lock().pending_additions.clear();
    }

    /// As follower: the leader's high watermark, capped by what this replica has.
    pub fn set_follower_high_watermark(&self, leader_hw: Offset) {
        let hw = leader_hw.min(self.log_end_offset());
        if self.high_watermark.swap(hw, Ordering::AcqRel) != hw {
            self.data.notify_waiters();
        }
    }

    /// Reads batches from `offset` up to the log end, for a follower (blocking).
    pub fn read_for_follower(&self, offset: Offset, max_bytes: usize) -> Result<Bytes, LogError> {
        self.log.read().read(offset, max_bytes, None, true)
    }

    /// As follower: appends the leader's batches unchanged (blocking).
    pub fn append_as_follower(&self, records: &[u8]) -> Result<(), LogError> {
        let mut log = self.log.write();
        if !records.is_empty() {
            log.append_as_follower(records)?;
        }
        self.publish(&mut log);
        Ok(())
    }

    /// The last leader epoch in this replica's log and where it ends, for a
    /// follower's truncation (`None`: no epoch recorded yet).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.log.read().leader_epochs().latest_epoch()
    }

    /// Kafka's OffsetForLeaderEpoch on this log: the largest epoch <= `epoch`
    /// and the offset it ended at.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, Offset)> {
        self.log.read().end_offset_for_epoch(epoch)
    }

    /// As follower: cuts what diverged from the leader (blocking).
    pub fn truncate_to(&self, offset: Offset) -> Result<(), LogError> {
        let mut log = self.log.write();
        if offset < log.log_end_offset() {
            log.truncate_to(offset)?;
            tracing::debug!(topic = %self.topic, partition = self.index, offset, "truncated to the leader's log");
        }
        let hw = self.high_watermark().min(log.log_end_offset());
        self.high_watermark.store(hw, Ordering::Release);
        self.publish(&mut log);
        Ok(())
    }

    /// As follower: the leader's log starts after ours ends; start over there (blocking).
    pub fn restart_at(&self, offset: Offset) -> Result<(), LogError> {
        let mut log = self.log.write();
        log.truncate_fully_and_start_at(offset)?;
        self.high_watermark.store(offset, Ordering::Release);
        self.publish(&mut log);
        Ok(())
    }

    /// Appends producer batches as leader (blocking; run on the I/O thread).
    pub fn append(&self, records: &mut [u8], leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let mut log = self.log.write();
        let info = log.append_as_leader(records, leader_epoch)?;
        self.publish(&mut log);
        Ok(info)
    }

    /// Writes a transaction marker as leader, for the coordinator (blocking).
    pub fn append_end_txn_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        let mut log = self.log.write();
        let info = log.append_end_txn_marker(producer_id, producer_epoch, marker, leader_epoch)?;
        self.publish(&mut log);
        Ok(info)
    }

    /// Kafka's DeleteRecords on the leader: the log starts at `offset`
    /// (at most the high watermark) from now on (blocking). Returns the new log start.
    pub fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let mut log = self.log.write();
        let hw = self.high_watermark();
        if offset > hw {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: log.log_start_offset(),
                log_end: hw,
            });
        }
        log.advance_log_start_offset(offset)?;
        self.publish(&mut log);
        Ok(log.log_start_offset())
    }

    /// As follower: records the leader deleted (DeleteRecords, retention)
    /// go here too, as far as this replica has them (blocking).
    pub fn follow_log_start(&self, leader_log_start: Offset) -> Result<(), LogError> {
        if leader_log_start <= self.log_start_offset() {
            return Ok(());
        }
        let mut log = self.log.write();
        let offset = leader_log_start.min(log.log_end_offset());
        if log.advance_log_start_offset(offset)? {
            self.publish(&mut log);
        }
        Ok(())
    }

    /// Whether `producer_id` at `producer_epoch` has a transaction open here.
    pub fn transaction_open(&self, producer_id: i64, producer_epoch: i16) -> bool {
        self.log
            .read()
            .producer(producer_id)
            .is_some_and(|e| e.epoch == producer_epoch && e.current_txn_first_offset.is_some())
    }

    /// The idempotent producers this partition tracks.
    pub fn producers(&self) -> Vec<ProducerSummary> {
        let log = self.log.read();
        log.producers()
            .map(|(id, e)| ProducerSummary {
                producer_id: id,
                epoch: e.epoch,
                last_sequence: e.last_seq().unwrap_or(-1),
                last_timestamp: e.last_timestamp,
                current_txn_start_offset: e.current_txn_first_offset.unwrap_or(-1),
                coordinator_epoch: e.coordinator_epoch,
            })
            .collect()
    }

    /// Reads committed batches from `offset` (blocking).
    pub fn read(&self, offset: Offset, max_bytes: usize, min_one: bool) -> Result<Bytes, LogError> {
        let log = self.log.read();
        log.read(offset, max_bytes, Some(self.high_watermark()), min_one)
    }

    /// Reads batches from `offset` below `last_stable_offset` (as the fetch
    /// reports it), with the aborted transactions a read_committed consumer
    /// must skip (blocking).
    pub fn read_committed(
        &self,
        offset: Offset,
        max_bytes: usize,
        min_one: bool,
        last_stable_offset: Offset,
    ) -> Result<CommittedRead, LogError> {
        let log = self.log.read();
        let records = log.read(offset, max_bytes, Some(last_stable_offset), min_one)?;
        let aborted = match end_of(&records) {
            Some(upper) => log.aborted_transactions(offset, upper),
            None => Vec::new(),
        };
        Ok(CommittedRead { records, aborted })
    }

    /// The first record at or after `timestamp` below `bound` (the high
    /// watermark, or the last stable offset for read_committed) (blocking).
    pub fn offset_for_timestamp(
        &self,
        timestamp: TimestampMs,
        committed: bool,
    ) -> Result<Option<(Offset, TimestampMs)>, LogError> {
        let log = self.log.read();
        let bound = self.readable_end(&log, committed);
        let found = log.offset_for_timestamp(timestamp)?;
        Ok(found.filter(|(o, _)| *o < bound))
    }

    /// The record with the largest timestamp, if below the high watermark
    /// (or the last stable offset for read_committed) (blocking).
    pub fn max_timestamp_offset(
        &self,
        committed: bool,
    ) -> Result<Option<(Offset, TimestampMs)>, LogError> {
        let log = self.log.read();
        let bound = self.readable_end(&log, committed);
        let found = log.max_timestamp_offset()?;
        Ok(found.filter(|(o, _)| *o < bound))
    }

    /// Where consumers' reads end: the high watermark, or for read_committed the LSO.
    fn readable_end(&self, log: &Log, committed: bool) -> Offset {
        let hw = self.high_watermark();
        if committed {
            log.last_stable_offset(hw)
        } else {
            hw
        }
    }

    /// Applies retention and the flush policy (blocking).
    pub fn retain_and_flush(&self, producer_id_expiration_ms: i64) -> Result<(), LogError> {
        let mut log = self.log.write();
        let deleted = log.delete_old_segments(self.high_watermark())?;
        if deleted > 0 {
            tracing::debug!(topic = %self.topic, partition = self.index, segments = deleted, "retention deleted segments");
        }
        let expired = log.remove_expired_producers(producer_id_expiration_ms);
        if expired > 0 {
            tracing::debug!(topic = %self.topic, partition = self.index, producers = expired, "idle producers expired");
        }
        log.maybe_flush()?;
        self.publish(&mut log);
        Ok(())
    }

    /// Applies the `flush.ms` policy only (blocking).
    pub fn flush_if_due(&self) -> Result<(), LogError> {
        let mut log = self.log.write();
        if log.maybe_flush()? {
            self.flushed_end
                .store(log.log_end_offset(), Ordering::Release);
            self.publish(&mut log);
        }
        Ok(())
    }

    /// Whether the `flush.ms` policy may have work here: the topic sets it
    /// and the log end moved since its last flush. Lets the periodic sweep
    /// skip idle partitions without a trip to their I/O thread.
    pub fn may_flush_by_time(&self) -> bool {
        self.state.lock().config.log.flush_ms != i64::MAX
            && self.log_end.load(Ordering::Acquire) != self.flushed_end.load(Ordering::Acquire)
    }

    /// What a compaction would rewrite, if the log wants one now (blocking).
    pub fn plan_cleaning(&self) -> Option<runnel_log::CleaningPlan> {
        let log = self.log.read();
        if log.needs_cleaning() {
            log.plan_cleaning()
        } else {
            None
        }
    }

    /// Swaps in compacted segments (blocking).
    pub fn install_cleaned(&self, cleaned: runnel_log::CleanedLog) -> Result<(), LogError> {
        let mut log = self.log.write();
        match log.install_cleaned(cleaned) {
            Ok(stats) => tracing::debug!(
                topic = %self.topic,
                partition = self.index,
                bytes_read = stats.bytes_read,
                bytes_written = stats.bytes_written,
                "log compacted"
            ),
            Err(LogError::CleaningAborted { .. }) => {}
            Err(e) => return Err(e),
        }
        self.publish(&mut log);
        Ok(())
    }

    /// Applies new leadership and config from the metadata (blocking).
    pub(crate) fn update(&self, state: ReplicaState) -> Result<(), LogError> {
        let mut current = self.state.lock();
        if *current == state {
            return Ok(());
        }
        let mut log = self.log.write();
        if state.config.log != current.config.log {
            log.set_config(state.config.log.clone());
        }
        let new_leadership =
            state.is_leader && (!current.is_leader || state.leader_epoch != current.leader_epoch);
        if new_leadership {
            log.assign_leader_epoch(state.leader_epoch)?;
        }
        {
            let mut r = self.replication.lock();
            if new_leadership || !state.is_leader {
                // A new term: followers' progress is learnt afresh, and each
                // gets a full lag allowance (as Kafka resets lastCaughtUpTime).
                r.followers.clear();
                r.term_started = state.is_leader.then(std::time::Instant::now);
            }
            if r.isr != state.isr {
                r.pending_additions.clear();
            }
            r.is_leader = state.is_leader;
            r.isr = state.isr.clone();
        }
        *current = state;
        drop(current);
        self.publish(&mut log);
        Ok(())
    }

    /// Starts from a high watermark remembered across a restart (within the log).
    pub(crate) fn restore_high_watermark(&self, hw: Offset) {
        let hw = hw.clamp(self.log_start_offset(), self.log_end_offset());
        self.high_watermark.store(hw, Ordering::Release);
    }

    /// Flushes the log now, whatever its flush policy (blocking).
    pub(crate) fn flush(&self) -> Result<(), LogError> {
        self.log.write().flush()
    }

    /// Closes the log for the data directory's clean-shutdown marker: no
    /// fsync here, the log manager syncs the file system once (blocking).
    pub(crate) fn close_unsynced(self) -> Result<(), LogError> {
        self.log.into_inner().close_unsynced()
    }
}
