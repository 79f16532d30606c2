//! The coordinator's groups in one process: the [`Group`] state machines,
//! the callers waiting on them, and the committed offsets, with every
//! change that must survive a restart written to `__consumer_offsets`
//! through a [`RecordSink`] before it is acknowledged.
//!
//! A JoinGroup or SyncGroup that has to wait parks on a oneshot channel;
//! whichever call completes the phase (another member's join, the leader's
//! sync, or the periodic [`GroupManager::tick`]) delivers the answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use runnel_proto::common::v1::ErrorCode;
use runnel_records::consumer_protocol::MemberAssignment;
use tokio::sync::oneshot;

use crate::consumer_group::{
    ConsumerGroup, ConsumerGroupConfig, Heartbeat, HeartbeatResponse, LEAVE_EPOCH,
};
use crate::group::{
    Group, GroupConfig, GroupState, JoinRequest, JoinResponse, Ms, Reply, Step, SyncResponse,
};
use crate::offsets::{
    CommittedOffset, DEFAULT_OFFSETS_PARTITIONS, OffsetsState, consumer_group_record, group_record,
    offset_record, partition_for,
};

/// A record for `__consumer_offsets`: key and value (None: a tombstone).
pub type OffsetsRecord = (Vec<u8>, Option<Vec<u8>>);

/// Why records could not be written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("writing to __consumer_offsets failed: {message}")]
pub struct SinkError {
    /// The code to answer with (retriable ones make clients retry).
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
}

/// Where the coordinator writes its records: a partition of
/// `__consumer_offsets`, durably (acks=all) before the call returns.
pub trait RecordSink: Send + Sync {
    /// Appends `records` to partition `partition`, in order.
    fn append(
        &self,
        partition: i32,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Appends `records` as one transactional batch of `producer` (Kafka's
    /// TxnOffsetCommit); they count once the transaction's commit marker
    /// follows. Sinks without transactions refuse.
    fn append_transactional(
        &self,
        partition: i32,
        producer: TxnProducer,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        let _ = (partition, producer, records);
        Box::pin(async {
            Err(SinkError {
                code: ErrorCode::UnknownServerError,
                message: "this sink does not write transactions".into(),
            })
        })
    }
}

/// The records that store `commits` of `group_id`, committed at `now`.
fn offset_records(group_id: &str, commits: &[OffsetCommit], now: Ms) -> Vec<OffsetsRecord> {
    commits
        .iter()
        .map(|c| {
            let value = CommittedOffset {
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata.clone(),
                commit_timestamp_ms: now,
            };
            offset_record(group_id, &c.topic, c.partition, Some(&value))
        })
        .collect()
}

/// A transactional producer writing offsets through the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnProducer {
    /// Its transactional id: the broker checks with that id's transaction
    /// coordinator that the partition is in the transaction (KIP-890).
    pub transactional_id: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// The batch's first sequence number in the partition.
    pub sequence: i32,
}

/// Transactional offset commits of one partition of `__consumer_offsets`
/// whose transactions have not ended yet, and where each producer's
/// sequence stands there.
#[derive(Debug, Default)]
struct PartitionTxns {
    pending: HashMap<i64, Vec<OffsetsRecord>>,
    sequences: HashMap<i64, (i16, i32)>,
}

/// One committed offset to store.
#[derive(Debug, Clone)]
pub struct OffsetCommit {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset to read.
    pub offset: i64,
    /// Leader epoch of the last record read, or -1.
    pub leader_epoch: i32,
    /// The committer's metadata.
    pub metadata: String,
}

#[derive(Default)]
struct Waiters {
    join: HashMap<String, oneshot::Sender<JoinResponse>>,
    sync: HashMap<String, oneshot::Sender<SyncResponse>>,
}

struct Entry {
    group: Group,
    waiters: Waiters,
    /// When the group last became empty (offset retention counts from it).
    empty_since: Option<Ms>,
}

impl Entry {
    fn new(group: Group) -> Entry {
        Entry {
            group,
            waiters: Waiters::default(),
            empty_since: None,
        }
    }

    /// Tracks when the group emptied; true when it just did.
    fn note_state(&mut self, now: Ms) -> bool {
        if self.group.state() == GroupState::Empty {
            let fresh = self.empty_since.is_none();
            self.empty_since.get_or_insert(now);
            fresh
        } else {
            self.empty_since = None;
            false
        }
    }
}

/// Where this coordinator stands with a partition of `__consumer_offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Taking it over: its records are being read.
    Loading,
    /// Serving its groups.
    Active,
}

/// The groups this coordinator serves.
pub struct GroupManager {
    config: GroupConfig,
    partitions: i32,
    /// Partitions this coordinator owns; `None`: all of them (one coordinator
    /// alone, and tests).
    owned: Mutex<Option<HashMap<i32, Ownership>>>,
    groups: Mutex<HashMap<String, Entry>>,
    /// KIP-848 groups (the same group id cannot be a classic group too).
    consumer_groups: Mutex<HashMap<String, ConsumerGroup>>,
    consumer_config: ConsumerGroupConfig,
    offsets: Mutex<OffsetsState>,
    /// One writer at a time per partition of `__consumer_offsets`, so a
    /// commit and the expiry of the same offsets cannot interleave.
    partition_locks: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<()>>>>,
    /// Open transactions' offset commits, by partition of `__consumer_offsets`.
    txn_offsets: Mutex<HashMap<i32, PartitionTxns>>,
    /// Groups that became empty and whose stored generation still lists
    /// members: [`GroupManager::store_emptied`] writes them, so a
    /// coordinator taking over does not bring departed members back.
    emptied: Mutex<Vec<String>>,
    sink: Arc<dyn RecordSink>,
    clock: Box<dyn Fn() -> Ms + Send + Sync>,
}

impl std::fmt::Debug for GroupManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupManager")
            .field("groups", &self.groups.lock().len())
            .finish_non_exhaustive()
    }
}

fn wall_clock_ms() -> Ms {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Ms)
}

impl GroupManager {
    /// A manager writing through `sink`, on the wall clock.
    pub fn new(config: GroupConfig, sink: Arc<dyn RecordSink>) -> GroupManager {
        Self::with_clock(config, sink, Box::new(wall_clock_ms))
    }

    /// A manager on a given clock (tests drive time by hand).
    pub fn with_clock(
        config: GroupConfig,
        sink: Arc<dyn RecordSink>,
        clock: Box<dyn Fn() -> Ms + Send + Sync>,
    ) -> GroupManager {
        GroupManager {
            config,
            partitions: DEFAULT_OFFSETS_PARTITIONS,
            owned: Mutex::new(None),
            groups: Mutex::new(HashMap::new()),
            consumer_groups: Mutex::new(HashMap::new()),
            consumer_config: ConsumerGroupConfig::default(),
            offsets: Mutex::new(OffsetsState::default()),
            partition_locks: Mutex::new(HashMap::new()),
            txn_offsets: Mutex::new(HashMap::new()),
            emptied: Mutex::new(Vec::new()),
            sink,
            clock,
        }
    }

    /// KIP-848 group settings (`group.consumer.*`).
    pub fn consumer_group_config(mut self, config: ConsumerGroupConfig) -> Self {
        self.consumer_config = config;
        self
    }

    /// Uses `n` partitions of `__consumer_offsets` (`offsets.topic.num.partitions`).
    pub fn offsets_partitions(mut self, n: i32) -> Self {
        self.partitions = n.max(1);
        self
    }

    /// Owns only the partitions handed to it by [`Self::begin_load`] (the
    /// controller shares them among coordinators).
    pub fn owning_assigned_partitions(self) -> Self {
        *self.owned.lock() = Some(HashMap::new());
        self
    }

    /// Whether this coordinator serves `group` now: NOT_COORDINATOR when
    /// another owns its partition, COORDINATOR_LOAD_IN_PROGRESS while it is
    /// still being read.
    pub fn check_owner(&self, group_id: &str) -> Result<(), ErrorCode> {
        let owned = self.owned.lock();
        let Some(owned) = owned.as_ref() else {
            return Ok(());
        };
        match owned.get(&partition_for(group_id, self.partitions)) {
            Some(Ownership::Active) => Ok(()),
            Some(Ownership::Loading) => Err(ErrorCode::CoordinatorLoadInProgress),
            None => Err(ErrorCode::NotCoordinator),
        }
    }

    /// The partitions this coordinator owns (`None`: all).
    pub fn owned(&self) -> Option<HashMap<i32, Ownership>> {
        self.owned.lock().clone()
    }

    /// Starts taking over `partition`: its groups answer
    /// COORDINATOR_LOAD_IN_PROGRESS until [`Self::finish_load`].
    pub fn begin_load(&self, partition: i32) {
        if let Some(owned) = self.owned.lock().as_mut() {
            owned.insert(partition, Ownership::Loading);
        }
    }

    /// Replays the records of `partition` and serves its groups: their
    /// committed offsets, and their members as the last stored generation
    /// left them (sessions start now).
    pub fn finish_load(
        &self,
        partition: i32,
        records: &[OffsetsRecord],
    ) -> Result<(), crate::offsets::RecordError> {
        let mut replayed = OffsetsState::default();
        for (k, v) in records {
            replayed.apply(k, v.as_deref())?;
        }
        let now = (self.clock)();
        let mut groups = self.groups.lock();
        let mut offsets = self.offsets.lock();
        for (k, v) in records {
            offsets.apply(k, v.as_deref())?;
        }
        for id in replayed.group_ids() {
            if let Some(value) = replayed.group(id)
                && !groups.contains_key(id)
            {
                let mut entry = Entry::new(Group::restore(id, self.config.clone(), value, now));
                if value.members.is_empty() {
                    entry.empty_since = Some(value.state_timestamp_ms);
                }
                groups.insert(id.to_owned(), entry);
            }
        }
        drop(offsets);
        drop(groups);
        let mut consumer_groups = self.consumer_groups.lock();
        for id in replayed.group_ids() {
            if let Some(value) = replayed.consumer_group(id) {
                consumer_groups.insert(
                    id.to_owned(),
                    ConsumerGroup::restore(self.consumer_config.clone(), value, now),
                );
            }
        }
        drop(consumer_groups);
        if let Some(owned) = self.owned.lock().as_mut() {
            owned.insert(partition, Ownership::Active);
        }
        Ok(())
    }

    /// The transactional offset commits a replay of `partition` found still
    /// open, and each producer's sequence there (before [`Self::finish_load`]).
    pub fn restore_transactions(
        &self,
        partition: i32,
        pending: HashMap<i64, Vec<(i64, OffsetsRecord)>>,
        sequences: HashMap<i64, (i16, i32)>,
    ) {
        let pending = pending
            .into_iter()
            .map(|(pid, records)| (pid, records.into_iter().map(|(_, r)| r).collect()))
            .collect();
        self.txn_offsets
            .lock()
            .insert(partition, PartitionTxns { pending, sequences });
    }

    /// Kafka's TxnOffsetCommit: checked like OffsetCommit (when it names a
    /// generation), written to `__consumer_offsets` as a transactional batch
    /// of the producer, and counted once its transaction commits
    /// ([`Self::complete_transaction`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn txn_commit(
        &self,
        group_id: &str,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        commits: Vec<OffsetCommit>,
    ) -> Result<(), ErrorCode> {
        self.check_owner(group_id)?;
        let partition = partition_for(group_id, self.partitions);
        let _one_writer = self.partition_lock(partition).lock_owned().await;
        if generation >= 0 {
            self.check_committer(group_id, member_id, group_instance_id, generation)?;
        }
        let records = offset_records(group_id, &commits, (self.clock)());
        let sequence = self
            .txn_offsets
            .lock()
            .get(&partition)
            .and_then(|t| t.sequences.get(&producer_id))
            .filter(|(epoch, _)| *epoch == producer_epoch)
            .map_or(0, |(_, seq)| *seq);
        let producer = TxnProducer {
            transactional_id: transactional_id.to_owned(),
            producer_id,
            producer_epoch,
            sequence,
        };
        self.sink
            .append_transactional(partition, producer, records.clone())
            .await
            .map_err(|e| e.code)?;
        let mut txns = self.txn_offsets.lock();
        let t = txns.entry(partition).or_default();
        t.sequences.insert(
            producer_id,
            (
                producer_epoch,
                runnel_records::batch::add_sequence(sequence, records.len() as i32),
            ),
        );
        t.pending.entry(producer_id).or_default().extend(records);
        Ok(())
    }

    /// A transaction marker reached `partition`: `producer_id`'s pending
    /// offset commits there count (commit) or are dropped (abort).
    pub fn complete_transaction(&self, partition: i32, producer_id: i64, commit: bool) -> usize {
        let pending = self
            .txn_offsets
            .lock()
            .get_mut(&partition)
            .and_then(|t| t.pending.remove(&producer_id))
            .unwrap_or_default();
        if commit {
            self.apply_written(&pending);
        }
        pending.len()
    }

    /// Whether an open transaction holds an offset commit of `group` for
    /// `topic-partition` (OffsetFetch with require_stable answers
    /// UNSTABLE_OFFSET_COMMIT then, as Kafka does).
    pub fn has_pending_commit(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        let (key, _) = offset_record(group_id, topic, partition, None);
        let p = partition_for(group_id, self.partitions);
        self.txn_offsets.lock().get(&p).is_some_and(|t| {
            t.pending
                .values()
                .any(|records| records.iter().any(|(k, _)| *k == key))
        })
    }

    /// Stops serving `partition` (it moved to another coordinator): its
    /// groups and offsets are dropped here, and members waiting on them are
    /// told NOT_COORDINATOR so they find the new owner.
    pub fn unload(&self, partition: i32) {
        if let Some(owned) = self.owned.lock().as_mut() {
            owned.remove(&partition);
        }
        let mine = |id: &str| partition_for(id, self.partitions) == partition;
        let mut groups = self.groups.lock();
        let gone: Vec<String> = groups.keys().filter(|id| mine(id)).cloned().collect();
        for id in gone {
            if let Some(entry) = groups.remove(&id) {
                for (member, tx) in entry.waiters.join {
                    let _ = tx.send(JoinResponse::error(ErrorCode::NotCoordinator, &member));
                }
                for (_, tx) in entry.waiters.sync {
                    let _ = tx.send(SyncResponse::error(ErrorCode::NotCoordinator));
                }
            }
        }
        self.consumer_groups.lock().retain(|id, _| !mine(id));
        self.offsets.lock().retain_groups(|id| !mine(id));
        self.txn_offsets.lock().remove(&partition);
    }

    /// Replays records of `__consumer_offsets` (a coordinator taking over a partition).
    pub fn load(&self, records: &[OffsetsRecord]) -> Result<(), crate::offsets::RecordError> {
        let mut offsets = self.offsets.lock();
        for (k, v) in records {
            offsets.apply(k, v.as_deref())?;
        }
        Ok(())
    }

    fn deliver(waiters: &mut Waiters, replies: Vec<Reply>) {
        for reply in replies {
            match reply {
                Reply::Join(id, r) => {
                    if let Some(tx) = waiters.join.remove(&id) {
                        let _ = tx.send(r);
                    }
                }
                Reply::Sync(id, r) => {
                    if let Some(tx) = waiters.sync.remove(&id) {
                        let _ = tx.send(r);
                    }
                }
            }
        }
    }

    /// JoinGroup: answers once the next generation has formed.
    pub async fn join(&self, group_id: &str, req: JoinRequest) -> JoinResponse {
        let wait_limit = Duration::from_millis(
            (req.rebalance_timeout_ms.max(0) as u64)
                .max(self.config.initial_rebalance_delay_ms.max(0) as u64)
                + 5_000,
        );
        let member = req.member_id.clone();
        tracing::debug!(group = group_id, member = %member, "JoinGroup");
        if let Err(e) = self.check_owner(group_id) {
            return JoinResponse::error(e, &member);
        }
        let rx = {
            let now = (self.clock)();
            let mut groups = self.groups.lock();
            let entry = groups
                .entry(group_id.to_owned())
                .or_insert_with(|| Entry::new(Group::new(group_id, self.config.clone())));
            let (step, replies) = entry.group.join(req, now);
            let rx = match step {
                Step::Respond(r) => {
                    Self::deliver(&mut entry.waiters, replies);
                    return r;
                }
                Step::Wait(id) => {
                    let (tx, rx) = oneshot::channel();
                    // A retried join replaces the earlier caller's wait.
                    entry.waiters.join.insert(id, tx);
                    rx
                }
            };
            Self::deliver(&mut entry.waiters, replies);
            rx
        };
        match tokio::time::timeout(wait_limit, rx).await {
            Ok(Ok(r)) => r,
            _ => JoinResponse {
                error: ErrorCode::RebalanceInProgress,
                generation_id: -1,
                protocol_name: String::new(),
                leader: String::new(),
                member_id: member,
                members: Vec::new(),
            },
        }
    }

    /// SyncGroup: the member's assignment, once the leader has sent them all.
    /// The new generation is written to `__consumer_offsets` before anyone
    /// gets an assignment.
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> SyncResponse {
        let refused = SyncResponse::error;
        if let Err(e) = self.check_owner(group_id) {
            return refused(e);
        }
        let (rx, store) = {
            let now = (self.clock)();
            let mut groups = self.groups.lock();
            let Some(entry) = groups.get_mut(group_id) else {
                return refused(ErrorCode::UnknownMemberId);
            };
            let (step, replies) =
                entry
                    .group
                    .sync(member_id, group_instance_id, generation, assignments, now);
            Self::deliver(&mut entry.waiters, replies);
            let rx = match step {
                Step::Respond(r) => return r,
                Step::Wait(id) => {
                    let (tx, rx) = oneshot::channel();
                    entry.waiters.sync.insert(id, tx);
                    rx
                }
            };
            // The leader's sync: the generation is stored before anyone gets it.
            let store = entry
                .group
                .take_store()
                .map(|generation| (generation, entry.group.value(now)));
            (rx, store)
        };
        if let Some((generation, value)) = store {
            let partition = partition_for(group_id, self.partitions);
            let record = group_record(group_id, Some(&value));
            let stored = {
                let _one_writer = self.partition_lock(partition).lock_owned().await;
                let stored = self.sink.append(partition, vec![record.clone()]).await;
                if stored.is_ok() {
                    // Written just above from a valid value: applying cannot fail.
                    let _ = self.offsets.lock().apply(&record.0, record.1.as_deref());
                }
                stored
            };
            let mut groups = self.groups.lock();
            if let Some(entry) = groups.get_mut(group_id) {
                let replies = match stored {
                    Ok(()) => {
                        tracing::info!(
                            group = group_id,
                            generation,
                            members = entry.group.members().len(),
                            protocol = entry.group.protocol().unwrap_or_default(),
                            "group generation stored"
                        );
                        entry.group.stored(generation)
                    }
                    Err(e) => {
                        tracing::warn!(group = group_id, error = %e, "storing the generation failed; rebalancing");
                        entry.group.rebalance((self.clock)())
                    }
                };
                Self::deliver(&mut entry.waiters, replies);
            }
        }
        rx.await
            .unwrap_or_else(|_| refused(ErrorCode::RebalanceInProgress))
    }

    /// A KIP-848 `ConsumerGroupHeartbeat`; `counts` are the partition
    /// counts of the topics that exist among those subscribed. A heartbeat
    /// that changes the group is stored before it is answered.
    pub async fn consumer_heartbeat(
        &self,
        group_id: &str,
        req: Heartbeat,
        counts: &BTreeMap<String, i32>,
    ) -> HeartbeatResponse {
        let refuse = |error: ErrorCode| HeartbeatResponse {
            error,
            member_id: req.member_id.clone(),
            member_epoch: LEAVE_EPOCH,
            heartbeat_interval_ms: self.consumer_config.heartbeat_interval_ms,
            assignment: Vec::new(),
        };
        if let Err(e) = self.check_owner(group_id) {
            return refuse(e);
        }
        if self
            .groups
            .lock()
            .get(group_id)
            .is_some_and(|e| !matches!(e.group.state(), GroupState::Empty | GroupState::Dead))
        {
            return refuse(ErrorCode::InconsistentGroupProtocol);
        }
        let partition = partition_for(group_id, self.partitions);
        let _one_writer = self.partition_lock(partition).lock_owned().await;
        let now = (self.clock)();
        let mut next = self
            .consumer_groups
            .lock()
            .get(group_id)
            .cloned()
            .unwrap_or_else(|| ConsumerGroup::new(self.consumer_config.clone()));
        let before = next.value();
        let response = next.heartbeat(req.clone(), counts, now);
        let after = next.value();
        if after != before {
            let record = consumer_group_record(group_id, Some(&after));
            if let Err(e) = self.sink.append(partition, vec![record.clone()]).await {
                return refuse(e.code);
            }
            let _ = self.offsets.lock().apply(&record.0, record.1.as_deref());
        }
        self.consumer_groups
            .lock()
            .insert(group_id.to_owned(), next);
        response
    }

    /// The topics a KIP-848 group's members subscribe to.
    pub fn consumer_group_topics(&self, group_id: &str) -> BTreeSet<String> {
        self.consumer_groups
            .lock()
            .get(group_id)
            .map(ConsumerGroup::subscribed_topics)
            .unwrap_or_default()
    }

    /// Drops KIP-848 members whose session or revocation time ran out, and
    /// stores the groups that changed.
    pub async fn tick_consumer_groups(&self) {
        let now = (self.clock)();
        let due: Vec<String> = self
            .consumer_groups
            .lock()
            .iter()
            .filter(|(_, g)| g.has_overdue(now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let partition = partition_for(&id, self.partitions);
            let _one_writer = self.partition_lock(partition).lock_owned().await;
            let Some(mut next) = self.consumer_groups.lock().get(&id).cloned() else {
                continue;
            };
            let gone = next.tick((self.clock)());
            if gone.is_empty() {
                continue;
            }
            tracing::info!(group = %id, members = ?gone, "consumer group members fenced");
            let record = consumer_group_record(&id, Some(&next.value()));
            if self
                .sink
                .append(partition, vec![record.clone()])
                .await
                .is_ok()
            {
                let _ = self.offsets.lock().apply(&record.0, record.1.as_deref());
                self.consumer_groups.lock().insert(id, next);
            }
        }
    }

    /// Heartbeat.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ErrorCode> {
        self.check_owner(group_id)?;
        let now = (self.clock)();
        let mut groups = self.groups.lock();
        let entry = groups.get_mut(group_id).ok_or(ErrorCode::UnknownMemberId)?;
        let result = entry
            .group
            .heartbeat(member_id, group_instance_id, generation, now);
        tracing::trace!(
            group = group_id,
            member = member_id,
            generation,
            ?result,
            "Heartbeat"
        );
        result
    }

    /// LeaveGroup.
    pub fn leave(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ErrorCode> {
        self.check_owner(group_id)?;
        let now = (self.clock)();
        let mut groups = self.groups.lock();
        let entry = groups.get_mut(group_id).ok_or(ErrorCode::UnknownMemberId)?;
        let replies = entry.group.leave(member_id, group_instance_id, now)?;
        Self::deliver(&mut entry.waiters, replies);
        if entry.note_state(now) {
            self.emptied.lock().push(group_id.to_owned());
        }
        Ok(())
    }

    /// Drops silent members and completes phases whose deadline passed; the
    /// service calls it a few times a second.
    pub fn tick(&self) {
        let now = (self.clock)();
        let mut groups = self.groups.lock();
        for (id, entry) in groups.iter_mut() {
            let replies = entry.group.tick(now);
            Self::deliver(&mut entry.waiters, replies);
            if entry.note_state(now) {
                self.emptied.lock().push(id.clone());
            }
        }
    }

    /// OffsetCommit: checked against the member's generation, written to
    /// `__consumer_offsets`, then visible to OffsetFetch.
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        commits: Vec<OffsetCommit>,
    ) -> Result<(), ErrorCode> {
        self.check_owner(group_id)?;
        let partition = partition_for(group_id, self.partitions);
        let _one_writer = self.partition_lock(partition).lock_owned().await;
        self.check_committer(group_id, member_id, group_instance_id, generation)?;
        let records = offset_records(group_id, &commits, (self.clock)());
        self.sink
            .append(partition, records.clone())
            .await
            .map_err(|e| e.code)?;
        self.apply_written(&records);
        Ok(())
    }

    /// Makes offset records this coordinator built and stored visible to OffsetFetch.
    fn apply_written(&self, records: &[OffsetsRecord]) {
        let mut offsets = self.offsets.lock();
        for (k, v) in records {
            // Built by `offset_records` from valid values: applying cannot fail.
            let _ = offsets.apply(k, v.as_deref());
        }
    }

    /// Whether `member_id` may commit for `group_id` in `generation`
    /// (KIP-848 or classic group). A group nobody has joined takes commits
    /// outside the group protocol (generation -1, any member id), as Kafka's
    /// "simple" groups: assign() + commit(), the admin client.
    fn check_committer(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ErrorCode> {
        let consumer_group = self
            .consumer_groups
            .lock()
            .get(group_id)
            .map(|g| g.check_commit(member_id, generation));
        if let Some(check) = consumer_group {
            return check;
        }
        match self.groups.lock().get(group_id) {
            Some(entry) => entry
                .group
                .check_commit(member_id, group_instance_id, generation),
            None if generation < 0 => Ok(()),
            None => Err(ErrorCode::IllegalGeneration),
        }
    }

    fn partition_lock(&self, partition: i32) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.partition_locks.lock().entry(partition).or_default())
    }

    /// Stores the groups that became empty since the last call (the service
    /// calls it a few times a second, after [`Self::tick`]).
    pub async fn store_emptied(&self) {
        let ids = std::mem::take(&mut *self.emptied.lock());
        if !ids.is_empty() {
            self.store_empty(ids).await;
        }
    }

    /// Writes an empty generation for those of `ids` that are empty here
    /// while their stored generation still lists members.
    async fn store_empty(&self, ids: Vec<String>) {
        for id in ids {
            if self.check_owner(&id).is_err() {
                continue;
            }
            let partition = partition_for(&id, self.partitions);
            let _one_writer = self.partition_lock(partition).lock_owned().await;
            let value = {
                let groups = self.groups.lock();
                let offsets = self.offsets.lock();
                let Some(e) = groups.get(&id) else { continue };
                let (Some(since), Some(stored)) = (e.empty_since, offsets.group(&id)) else {
                    continue;
                };
                if e.group.state() != GroupState::Empty || stored.members.is_empty() {
                    continue;
                }
                let mut value = e.group.value(since);
                value.members.clear();
                value
            };
            let record = group_record(&id, Some(&value));
            match self.sink.append(partition, vec![record.clone()]).await {
                Ok(()) => {
                    let _ = self.offsets.lock().apply(&record.0, record.1.as_deref());
                }
                Err(e) => {
                    tracing::warn!(group = %id, error = %e, "storing an emptied group failed; retrying later");
                    self.emptied.lock().push(id);
                }
            }
        }
    }

    /// Offset retention (`offsets.retention.minutes`): first stores the
    /// moment groups became empty, then deletes (with tombstones) the
    /// offsets of groups without members whose last commit and emptying
    /// are both older than `retention_ms`, and the group itself once none
    /// of its offsets is left. Returns how many offsets expired.
    pub async fn expire_offsets(&self, retention_ms: i64) -> usize {
        let now = (self.clock)();
        // Groups that emptied since their generation was stored.
        let empty: Vec<String> = self
            .groups
            .lock()
            .iter()
            .filter(|(_, e)| e.empty_since.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        self.store_empty(empty).await;
        let mut by_partition: HashMap<i32, Vec<String>> = HashMap::new();
        for (group, _, _) in self.offsets.lock().expired_offsets(now, retention_ms) {
            let p = partition_for(&group, self.partitions);
            let groups = by_partition.entry(p).or_default();
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        let mut expired = 0;
        for (partition, groups) in by_partition {
            let _one_writer = self.partition_lock(partition).lock_owned().await;
            let mut records = Vec::new();
            let mut gone = Vec::new();
            {
                // Lock order everywhere: groups, then offsets.
                let live = self.groups.lock();
                let state = self.offsets.lock();
                let all = state.expired_offsets(now, retention_ms);
                for group in &groups {
                    if self.check_owner(group).is_err()
                        || live
                            .get(group)
                            .is_some_and(|e| e.group.state() != GroupState::Empty)
                    {
                        continue;
                    }
                    let mine: Vec<_> = all.iter().filter(|(g, _, _)| g == group).collect();
                    for (g, t, p) in &mine {
                        records.push(offset_record(g, t, *p, None));
                    }
                    if mine.len() == state.group_offsets(group).count() {
                        records.push(group_record(group, None));
                        gone.push(group.clone());
                    }
                    expired += mine.len();
                }
            }
            if records.is_empty() {
                continue;
            }
            if let Err(e) = self.sink.append(partition, records.clone()).await {
                tracing::warn!(partition, error = %e, "expiring offsets failed; retrying later");
                continue;
            }
            {
                let mut state = self.offsets.lock();
                for (k, v) in &records {
                    let _ = state.apply(k, v.as_deref());
                }
            }
            let mut live = self.groups.lock();
            for g in gone {
                if live
                    .get(&g)
                    .is_some_and(|e| e.group.state() == GroupState::Empty)
                {
                    live.remove(&g);
                }
            }
        }
        if expired > 0 {
            tracing::info!(expired, "committed offsets expired");
            metrics::counter!("runnel_coordinator_expired_offsets_total").increment(expired as u64);
        }
        expired
    }

    /// OffsetFetch: a group's committed offset for a partition.
    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<CommittedOffset> {
        self.offsets
            .lock()
            .committed(group_id, topic, partition)
            .cloned()
    }

    /// Every committed offset of a group: (topic, partition, offset).
    pub fn group_offsets(&self, group_id: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.offsets
            .lock()
            .group_offsets(group_id)
            .map(|((t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    /// Every group: with members, or with committed offsets only (Empty).
    pub fn list(&self) -> Vec<ListedGroup> {
        let groups = self.groups.lock();
        let offsets = self.offsets.lock();
        let mut out: Vec<ListedGroup> = groups
            .iter()
            .filter(|(_, e)| e.group.state() != GroupState::Dead)
            .map(|(id, e)| ListedGroup {
                group_id: id.clone(),
                state: e.group.state(),
                protocol_type: e.group.protocol_type().unwrap_or_default().to_owned(),
                group_type: CLASSIC,
            })
            .collect();
        let consumer_groups = self.consumer_groups.lock();
        for (id, g) in consumer_groups.iter() {
            if !groups.contains_key(id) {
                out.push(ListedGroup {
                    group_id: id.clone(),
                    state: consumer_state(g),
                    protocol_type: "consumer".to_owned(),
                    group_type: CONSUMER,
                });
            }
        }
        // Only committed offsets (Kafka's "simple" groups): no protocol
        // type, and classic, as Kafka lists them.
        for id in offsets.group_ids() {
            if !groups.contains_key(id) && !consumer_groups.contains_key(id) {
                out.push(ListedGroup {
                    group_id: id.to_owned(),
                    state: GroupState::Empty,
                    protocol_type: String::new(),
                    group_type: CLASSIC,
                });
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// A KIP-848 group as Kafka's ConsumerGroupDescribe shows it; `None`
    /// for a classic or unknown group.
    pub fn describe_consumer_group(
        &self,
        group_id: &str,
    ) -> Option<runnel_proto::coordinator::v1::DescribedConsumerGroup> {
        use runnel_client::partition_set::to_partition_set;
        use runnel_proto::coordinator::v1 as pb;
        let consumer_groups = self.consumer_groups.lock();
        let g = consumer_groups.get(group_id)?;
        Some(pb::DescribedConsumerGroup {
            group_id: group_id.to_owned(),
            error_code: ErrorCode::None as i32,
            error_message: String::new(),
            state: g.state_name().into(),
            group_epoch: g.epoch(),
            assignment_epoch: g.target_epoch(),
            assignor_name: g.assignor_name(),
            members: g
                .members()
                .iter()
                .map(|(id, m)| {
                    let assigned: Vec<_> = m.assigned.iter().cloned().collect();
                    pb::ConsumerGroupMember {
                        member_id: id.clone(),
                        instance_id: m.instance_id.clone().unwrap_or_default(),
                        member_epoch: m.epoch,
                        subscribed_topics: m.topics.clone(),
                        assignment: Some(to_partition_set(&assigned)),
                        target_assignment: Some(to_partition_set(&g.target_of(id))),
                    }
                })
                .collect(),
        })
    }

    /// A group's state, protocol, generation and members, if it exists.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock();
        match groups.get(group_id) {
            Some(e) if e.group.state() != GroupState::Dead => Some(GroupDescription {
                state: e.group.state(),
                protocol_type: e.group.protocol_type().unwrap_or_default().to_owned(),
                protocol: e.group.protocol().unwrap_or_default().to_owned(),
                generation: e.group.generation(),
                members: e.group.members(),
            }),
            Some(_) => None,
            None if self.consumer_groups.lock().contains_key(group_id) => {
                let consumer_groups = self.consumer_groups.lock();
                let g = consumer_groups.get(group_id)?;
                Some(GroupDescription {
                    state: consumer_state(g),
                    protocol_type: "consumer".to_owned(),
                    protocol: g.assignor_name(),
                    generation: g.epoch(),
                    members: g
                        .members()
                        .iter()
                        .map(|(id, m)| crate::group::MemberDescription {
                            member_id: id.clone(),
                            group_instance_id: m.instance_id.clone(),
                            client_id: String::new(),
                            assignment: MemberAssignment {
                                partitions: m.assigned.iter().cloned().collect(),
                                user_data: None,
                            }
                            .encode(),
                            metadata: Vec::new(),
                        })
                        .collect(),
                })
            }
            None => self
                .offsets
                .lock()
                .group_ids()
                .contains(&group_id)
                .then(|| GroupDescription {
                    state: GroupState::Empty,
                    protocol_type: String::new(),
                    protocol: String::new(),
                    generation: 0,
                    members: Vec::new(),
                }),
        }
    }

    /// DeleteGroups: an empty group's metadata and offsets go (tombstones
    /// first, so a coordinator replaying the topic does not bring them back).
    pub async fn delete(&self, group_id: &str) -> Result<(), ErrorCode> {
        self.check_owner(group_id)?;
        let partition = partition_for(group_id, self.partitions);
        let _one_writer = self.partition_lock(partition).lock_owned().await;
        let exists = {
            let groups = self.groups.lock();
            match groups.get(group_id) {
                Some(e) if e.group.state() == GroupState::Empty => true,
                Some(e) if e.group.state() == GroupState::Dead => false,
                Some(_) => return Err(ErrorCode::NonEmptyGroup),
                None => false,
            }
        };
        let offsets = self.group_offsets(group_id);
        if !exists && offsets.is_empty() {
            return Err(ErrorCode::GroupIdNotFound);
        }
        let mut records: Vec<OffsetsRecord> = offsets
            .iter()
            .map(|(t, p, _)| offset_record(group_id, t, *p, None))
            .collect();
        records.push(group_record(group_id, None));
        self.sink
            .append(partition, records.clone())
            .await
            .map_err(|e| e.code)?;
        {
            let mut state = self.offsets.lock();
            for (k, v) in &records {
                let _ = state.apply(k, v.as_deref());
            }
        }
        let mut groups = self.groups.lock();
        if let Some(e) = groups.get_mut(group_id) {
            // A member may have joined while the tombstones were written.
            if e.group.delete().is_ok() {
                groups.remove(group_id);
            }
        }
        Ok(())
    }

    /// The state of a group (`Dead` when unknown).
    pub fn state(&self, group_id: &str) -> GroupState {
        self.groups
            .lock()
            .get(group_id)
            .map_or(GroupState::Dead, |e| e.group.state())
    }
}

/// Kafka's group type of JoinGroup/SyncGroup groups (and of groups with
/// only committed offsets).
pub const CLASSIC: &str = "classic";
/// Kafka's group type of KIP-848 groups.
pub const CONSUMER: &str = "consumer";

/// One group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group id.
    pub group_id: String,
    /// Its state, in the classic names.
    pub state: GroupState,
    /// Its protocol type ("consumer", "connect"; empty with only offsets).
    pub protocol_type: String,
    /// [`CLASSIC`] or [`CONSUMER`].
    pub group_type: &'static str,
}

/// What DescribeGroups says of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Its state.
    pub state: GroupState,
    /// The protocol type (`consumer`, `connect`; empty for a group that only
    /// has committed offsets).
    pub protocol_type: String,
    /// The chosen assignor, if any.
    pub protocol: String,
    /// The generation.
    pub generation: i32,
    /// Members with their assignments.
    pub members: Vec<crate::group::MemberDescription>,
}

/// A KIP-848 group's state in the classic names ListGroups and
/// DescribeGroups speak: assigning and reconciling are a rebalance.
fn consumer_state(g: &ConsumerGroup) -> GroupState {
    match g.state_name() {
        "Empty" => GroupState::Empty,
        "Stable" => GroupState::Stable,
        "Assigning" => GroupState::PreparingRebalance,
        _ => GroupState::CompletingRebalance,
    }
}
