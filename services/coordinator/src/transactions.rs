//! The transaction coordinator: every transactional id whose partition of
//! `__transaction_state` this coordinator owns, the requests of their
//! producers, and the markers that end their transactions.
//!
//! A request is checked against the id's [`TxnMetadata`]; a change is
//! written to `__transaction_state` (acks=all, fenced by owner epoch like
//! `__consumer_offsets`) before it is answered, and while it is in flight
//! other requests for the id get CONCURRENT_TRANSACTIONS. After
//! PrepareCommit or PrepareAbort is stored, a task writes the markers to
//! the leaders of the transaction's partitions (WriteTxnMarkers, retried
//! until each leader has it) and then stores CompleteCommit or
//! CompleteAbort. A coordinator taking a partition over replays it and
//! finishes the transactions it finds prepared; open ones keep their
//! start time and time out as before.
//!
//! Partition `q` of `__transaction_state` belongs to whoever owns partition
//! `q % offsets.topic.num.partitions` of `__consumer_offsets`, with the
//! same producer id and owner epoch, so the controller's sharing of that
//! topic (and its fencing of a late owner) covers both; the owner epoch is
//! also the coordinator epoch the markers carry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use parking_lot::Mutex;
use runnel_client::Cluster;
use runnel_common::backoff::Backoff;
use runnel_common::shutdown::CancellationToken;
use runnel_proto::broker::v1 as bpb;
use runnel_proto::common::v1::ErrorCode;

use crate::manager::{OffsetsRecord, RecordSink};
use crate::transaction::{
    ExpectedProducer, Ms, Step, TxnConfig, TxnEntry, TxnError, TxnMetadata, TxnPartition, TxnState,
    decode_record, new_id, partition_for,
};

/// Writes transaction markers to partition leaders.
pub trait MarkerWriter: Send + Sync {
    /// Writes the marker ending `producer_id`'s transaction (at
    /// `producer_epoch`, from coordinator epoch `coordinator_epoch`) to each
    /// partition; returns the partitions that failed, with why.
    fn write(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        partitions: Vec<TxnPartition>,
    ) -> BoxFuture<'_, Vec<(TxnPartition, ErrorCode, String)>>;
}

/// A transaction request's refusal: Kafka's code and a message.
pub type Refusal = (ErrorCode, String);

impl From<TxnError> for (ErrorCode, String) {
    fn from(e: TxnError) -> Self {
        (e.code(), e.to_string())
    }
}

/// One owned partition of `__transaction_state`.
#[derive(Debug)]
enum Load {
    /// Being read: its ids answer COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    /// Served; markers carry `coordinator_epoch`; `stop` ends its marker tasks.
    Active {
        coordinator_epoch: i32,
        stop: CancellationToken,
    },
}

#[derive(Debug, Default)]
struct Inner {
    partitions: HashMap<i32, Load>,
    txns: HashMap<String, TxnMetadata>,
}

/// The transactions of one coordinator.
pub struct TxnManager {
    config: TxnConfig,
    txn_partitions: i32,
    offsets_partitions: i32,
    sink: Arc<dyn RecordSink>,
    markers: Arc<dyn MarkerWriter>,
    clock: Box<dyn Fn() -> Ms + Send + Sync>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for TxnManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnManager")
            .field("txn_partitions", &self.txn_partitions)
            .field("ids", &self.inner.lock().txns.len())
            .finish_non_exhaustive()
    }
}

fn wall_clock_ms() -> Ms {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Ms)
}

impl TxnManager {
    /// A manager storing through `sink` and ending transactions through
    /// `markers`, with `txn_partitions` partitions of `__transaction_state`
    /// mapped onto `offsets_partitions` of `__consumer_offsets`.
    pub fn new(
        config: TxnConfig,
        txn_partitions: i32,
        offsets_partitions: i32,
        sink: Arc<dyn RecordSink>,
        markers: Arc<dyn MarkerWriter>,
    ) -> TxnManager {
        Self::with_clock(
            config,
            txn_partitions,
            offsets_partitions,
            sink,
            markers,
            Box::new(wall_clock_ms),
        )
    }

    /// The same on a given clock (tests drive time by hand).
    pub fn with_clock(
        config: TxnConfig,
        txn_partitions: i32,
        offsets_partitions: i32,
        sink: Arc<dyn RecordSink>,
        markers: Arc<dyn MarkerWriter>,
        clock: Box<dyn Fn() -> Ms + Send + Sync>,
    ) -> TxnManager {
        TxnManager {
            config,
            txn_partitions: txn_partitions.max(1),
            offsets_partitions: offsets_partitions.max(1),
            sink,
            markers,
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The partitions of `__transaction_state` that go with partition
    /// `offsets_partition` of `__consumer_offsets`.
    pub fn partitions_of(&self, offsets_partition: i32) -> Vec<i32> {
        (0..self.txn_partitions)
            .filter(|q| q % self.offsets_partitions == offsets_partition)
            .collect()
    }

    /// The partition of `__transaction_state` holding `transactional_id`.
    pub fn partition_of(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.txn_partitions)
    }

    /// Whether this coordinator serves `transactional_id` now, and the
    /// coordinator epoch of its partition.
    fn check_owner(&self, transactional_id: &str) -> Result<i32, Refusal> {
        let q = self.partition_of(transactional_id);
        match self.inner.lock().partitions.get(&q) {
            Some(Load::Active {
                coordinator_epoch, ..
            }) => Ok(*coordinator_epoch),
            Some(Load::Loading) => Err((
                ErrorCode::CoordinatorLoadInProgress,
                format!("partition {q} of __transaction_state is still being loaded"),
            )),
            None => Err((
                ErrorCode::NotCoordinator,
                format!("this coordinator does not own partition {q} of __transaction_state"),
            )),
        }
    }

    /// Whether a partition of `__transaction_state` taken over here is still being loaded.
    pub fn is_loading(&self) -> bool {
        self.inner
            .lock()
            .partitions
            .values()
            .any(|l| matches!(l, Load::Loading))
    }

    /// Starts taking over partition `q`: its ids wait until [`Self::finish_load`].
    pub fn begin_load(&self, q: i32) {
        let mut inner = self.inner.lock();
        if let Some(Load::Active { stop, .. }) = inner.partitions.insert(q, Load::Loading) {
            stop.cancel();
        }
        self.forget(&mut inner, q);
    }

    fn forget(&self, inner: &mut Inner, q: i32) {
        let partitions = self.txn_partitions;
        inner
            .txns
            .retain(|id, _| partition_for(id, partitions) != q);
    }

    /// Replays partition `q` and serves its ids, as coordinator epoch
    /// `coordinator_epoch`; prepared transactions get their markers.
    pub fn finish_load(
        self: &Arc<Self>,
        q: i32,
        records: &[OffsetsRecord],
        coordinator_epoch: i32,
    ) -> Result<usize, crate::transaction::MalformedTxnRecord> {
        let mut latest: HashMap<String, Option<TxnMetadata>> = HashMap::new();
        for (k, v) in records {
            if let TxnEntry::Txn(id, m) = decode_record(k, v.as_deref())? {
                latest.insert(id, m);
            }
        }
        let stop = CancellationToken::new();
        let mut prepared = Vec::new();
        {
            let mut inner = self.inner.lock();
            if !matches!(inner.partitions.get(&q), Some(Load::Loading)) {
                // Released while it was being read.
                return Ok(0);
            }
            self.forget(&mut inner, q);
            for (id, m) in latest {
                let Some(mut m) = m else { continue };
                if m.state == TxnState::PrepareEpochFence {
                    m.state = TxnState::PrepareAbort;
                }
                if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                    prepared.push(m.clone());
                }
                inner.txns.insert(id, m);
            }
            inner.partitions.insert(
                q,
                Load::Active {
                    coordinator_epoch,
                    stop: stop.clone(),
                },
            );
        }
        let n = prepared.len();
        for m in prepared {
            self.spawn_completion(m, coordinator_epoch, stop.clone());
        }
        Ok(n)
    }

    /// Stops serving partition `q` (it moved): its ids are forgotten and
    /// its marker tasks stop (the new owner finishes them).
    pub fn unload(&self, q: i32) {
        let mut inner = self.inner.lock();
        if let Some(Load::Active { stop, .. }) = inner.partitions.remove(&q) {
            stop.cancel();
        }
        self.forget(&mut inner, q);
    }

    /// Decides a request against `id`'s metadata and, for a write, marks
    /// the id pending in the same step, so that a concurrent request for it
    /// sees the write in flight (CONCURRENT_TRANSACTIONS) rather than
    /// deciding from the same state and overwriting it. Returns the
    /// metadata decided from and the write, if any (to [`Self::store`]).
    fn claim(
        &self,
        id: &str,
        decide: impl FnOnce(Option<&TxnMetadata>) -> Result<Step, Refusal>,
    ) -> Result<(Option<TxnMetadata>, Option<TxnMetadata>), Refusal> {
        let mut inner = self.inner.lock();
        let current = inner.txns.get(id).cloned();
        let Step::Write(next) = decide(current.as_ref())? else {
            return Ok((current, None));
        };
        match inner.txns.get_mut(id) {
            Some(c) => c.pending = Some(next.state),
            None => {
                let mut placeholder = next.clone();
                placeholder.pending = Some(next.state);
                inner.txns.insert(id.to_owned(), placeholder);
            }
        }
        Ok((current, Some(next)))
    }

    /// Stores `next`, claimed by [`Self::claim`], for its id (`previous`:
    /// what to put back if the write fails; `None` removes the id); a
    /// stored PrepareCommit or PrepareAbort gets its markers, under
    /// `coordinator_epoch`.
    ///
    /// The write runs in its own task, to its end even when the request
    /// that claimed the id is dropped (its client went away mid-request):
    /// otherwise the id would stay pending, refusing every later request
    /// with CONCURRENT_TRANSACTIONS, and a prepared transaction stored
    /// without its completion task would never end.
    async fn store(
        self: &Arc<Self>,
        next: TxnMetadata,
        previous: Option<TxnMetadata>,
        coordinator_epoch: i32,
    ) -> Result<(), Refusal> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let id = next.transactional_id.clone();
            let q = this.partition_of(&id);
            let written = this.sink.append(q, vec![next.to_record()]).await;
            let prepared = {
                let mut inner = this.inner.lock();
                match written {
                    Ok(()) => {
                        let prepared =
                            matches!(next.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
                                .then(|| next.clone());
                        if next.state == TxnState::Dead {
                            inner.txns.remove(&id);
                        } else {
                            inner.txns.insert(id.clone(), next);
                        }
                        prepared
                    }
                    Err(e) => {
                        match previous {
                            Some(p) => inner.txns.insert(id, p),
                            None => inner.txns.remove(&id),
                        };
                        return Err((e.code, e.message));
                    }
                }
            };
            if let Some(m) = prepared {
                this.spawn_completion(m, coordinator_epoch, this.stop_token(&id));
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| {
            Err((
                ErrorCode::UnknownServerError,
                format!("storing the transaction state failed: {e}"),
            ))
        })
    }

    /// The id's metadata, if this coordinator knows it.
    fn get(&self, id: &str) -> Option<TxnMetadata> {
        self.inner.lock().txns.get(id).cloned()
    }

    /// Kafka's InitProducerId with a transactional id. `new_producer_id`
    /// is used when the id needs a fresh producer id.
    pub async fn init_producer_id(
        self: &Arc<Self>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<ExpectedProducer>,
        new_producer_id: Option<i64>,
    ) -> Result<(i64, i16), Refusal> {
        if transactional_id.is_empty() {
            return Err((
                ErrorCode::InvalidRequest,
                "the transactional id is empty".into(),
            ));
        }
        let coordinator_epoch = self.check_owner(transactional_id)?;
        let now = (self.clock)();
        let (current, next) = self.claim(transactional_id, |current| match current {
            None => {
                let Some(pid) = new_producer_id else {
                    return Err(no_producer_id());
                };
                Ok(Step::Write(new_id(
                    transactional_id,
                    pid,
                    timeout_ms,
                    now,
                    &self.config,
                )?))
            }
            Some(m) => m
                .init_producer_id(timeout_ms, expected, new_producer_id, now, &self.config)
                .map_err(|e| match e {
                    TxnError::NeedsProducerId => no_producer_id(),
                    e => e.into(),
                }),
        })?;
        let Some(next) = next else {
            let m = current.expect("a reply needs metadata");
            return Ok((m.producer_id, m.producer_epoch));
        };
        self.store(next.clone(), current, coordinator_epoch).await?;
        if next.state == TxnState::PrepareAbort {
            // A newer producer fenced an open transaction: it is being
            // aborted; the producer retries once that is done.
            return Err(TxnError::Concurrent {
                id: transactional_id.to_owned(),
                what: "the abort of the previous producer's transaction",
            }
            .into());
        }
        Ok((next.producer_id, next.producer_epoch))
    }

    /// Kafka's AddPartitionsToTxn (AddOffsetsToTxn adds the group's
    /// `__consumer_offsets` partition); with `verify_only`, KIP-890's check
    /// that they are already in the open transaction. Per-partition codes.
    pub async fn add_partitions(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<TxnPartition>,
        verify_only: bool,
    ) -> Result<Vec<(TxnPartition, ErrorCode)>, Refusal> {
        let coordinator_epoch = self.check_owner(transactional_id)?;
        let unknown = || -> Refusal {
            TxnError::ProducerIdMapping {
                id: transactional_id.to_owned(),
                asked: producer_id,
                current: -1,
            }
            .into()
        };
        if verify_only {
            let current = self.get(transactional_id).ok_or_else(unknown)?;
            return Ok(partitions
                .into_iter()
                .map(|p| {
                    let code = match current.verify_partition(producer_id, producer_epoch, &p) {
                        Ok(()) => ErrorCode::None,
                        Err(e) => e.code(),
                    };
                    (p, code)
                })
                .collect());
        }
        let now = (self.clock)();
        let (current, next) = self.claim(transactional_id, |current| {
            let current = current.ok_or_else(unknown)?;
            Ok(current.add_partitions(producer_id, producer_epoch, &partitions, now)?)
        })?;
        if let Some(next) = next {
            self.store(next, current, coordinator_epoch).await?;
        }
        Ok(partitions
            .into_iter()
            .map(|p| (p, ErrorCode::None))
            .collect())
    }

    /// Kafka's EndTxn: answered once PrepareCommit or PrepareAbort is
    /// stored; the markers and the completion follow in the background.
    pub async fn end_txn(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), Refusal> {
        let coordinator_epoch = self.check_owner(transactional_id)?;
        let now = (self.clock)();
        let (current, next) = self.claim(transactional_id, |current| {
            let Some(current) = current else {
                return Err(TxnError::ProducerIdMapping {
                    id: transactional_id.to_owned(),
                    asked: producer_id,
                    current: -1,
                }
                .into());
            };
            Ok(current.end(producer_id, producer_epoch, commit, now)?)
        })?;
        let Some(next) = next else {
            return Ok(());
        };
        self.store(next, current, coordinator_epoch).await
    }

    /// The token that stops the marker tasks of `id`'s partition.
    fn stop_token(&self, id: &str) -> CancellationToken {
        match self.inner.lock().partitions.get(&self.partition_of(id)) {
            Some(Load::Active { stop, .. }) => stop.clone(),
            _ => {
                let t = CancellationToken::new();
                t.cancel();
                t
            }
        }
    }

    /// Writes the markers of a prepared transaction until every partition
    /// has one, then stores its completion. Stops when the partition moves
    /// (the new owner finishes it) or a leader says this coordinator is stale.
    fn spawn_completion(
        self: &Arc<Self>,
        m: TxnMetadata,
        coordinator_epoch: i32,
        stop: CancellationToken,
    ) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                // A moved partition's task must not send another marker.
                biased;
                () = stop.cancelled() => {}
                () = this.complete(m, coordinator_epoch, &stop) => {}
            }
        });
    }

    async fn complete(
        self: &Arc<Self>,
        m: TxnMetadata,
        coordinator_epoch: i32,
        stop: &CancellationToken,
    ) {
        let commit = m.state == TxnState::PrepareCommit;
        let mut left: Vec<TxnPartition> = m.partitions.iter().cloned().collect();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        while !left.is_empty() {
            if stop.is_cancelled() {
                return;
            }
            let failed = self
                .markers
                .write(
                    m.producer_id,
                    m.producer_epoch,
                    commit,
                    coordinator_epoch,
                    left,
                )
                .await;
            left = Vec::new();
            for (p, code, message) in failed {
                match code {
                    // The topic or partition is gone: nothing to end there (as Kafka).
                    ErrorCode::UnknownTopicOrPartition => {
                        tracing::debug!(transactional_id = %m.transactional_id, topic = %p.0, partition = p.1, "marker skipped: the partition is gone");
                    }
                    ErrorCode::TransactionCoordinatorFenced | ErrorCode::InvalidProducerEpoch => {
                        tracing::warn!(transactional_id = %m.transactional_id, topic = %p.0, partition = p.1, %message, "marker refused: a newer coordinator or producer took over; leaving the transaction to it");
                        return;
                    }
                    _ => {
                        tracing::debug!(transactional_id = %m.transactional_id, topic = %p.0, partition = p.1, ?code, %message, "marker not written yet; retrying");
                        left.push(p);
                    }
                }
            }
            if !left.is_empty() {
                backoff.wait().await;
            }
        }
        let now = (self.clock)();
        let Some(done) = m.completed(now) else {
            return;
        };
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            if stop.is_cancelled() {
                return;
            }
            // Only the prepared state this task was started for completes.
            let mut busy = false;
            let claimed = self.claim(&m.transactional_id, |c| {
                let same =
                    c.is_some_and(|c| c.state == m.state && c.producer_epoch == m.producer_epoch);
                busy = same && c.is_some_and(|c| c.pending.is_some());
                Ok(if same && !busy {
                    Step::Write(done.clone())
                } else {
                    Step::Reply
                })
            });
            let (current, next) = match claimed {
                Ok((current, Some(next))) => (current, next),
                _ if busy => {
                    backoff.wait().await;
                    continue;
                }
                _ => return,
            };
            match self.store(next, current, coordinator_epoch).await {
                Ok(()) => {
                    metrics::counter!("runnel_coordinator_transactions_completed_total", "result" => if commit { "commit" } else { "abort" }).increment(1);
                    return;
                }
                Err((ErrorCode::NotCoordinator, _)) => return,
                Err((code, message)) => {
                    tracing::debug!(transactional_id = %m.transactional_id, ?code, %message, "cannot store the transaction's completion yet; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Aborts open transactions past their timeout and forgets ids idle
    /// past `transactional.id.expiration.ms`. Returns how many of each.
    pub async fn tick(self: &Arc<Self>) -> (usize, usize) {
        let now = (self.clock)();
        let (mut timed_out, mut expired) = (Vec::new(), Vec::new());
        {
            let inner = self.inner.lock();
            for m in inner.txns.values() {
                if !matches!(
                    inner
                        .partitions
                        .get(&self.partition_of(&m.transactional_id)),
                    Some(Load::Active { .. })
                ) {
                    continue;
                }
                if m.timed_out(now).is_some() {
                    timed_out.push(m.transactional_id.clone());
                } else if m.expired(now, &self.config).is_some() {
                    expired.push(m.transactional_id.clone());
                }
            }
        }
        let counts = (timed_out.len(), expired.len());
        for id in timed_out {
            let Ok(epoch) = self.check_owner(&id) else {
                continue;
            };
            // Decided again under the claim: the producer may have ended it meanwhile.
            let claimed = self.claim(&id, |c| {
                Ok(c.and_then(|c| c.timed_out(now))
                    .map_or(Step::Reply, Step::Write))
            });
            if let Ok((current, Some(next))) = claimed {
                tracing::info!(transactional_id = %id, producer_id = next.producer_id, timeout_ms = next.timeout_ms, "transaction timed out; aborting it");
                let _ = self.store(next, current, epoch).await;
            }
        }
        for id in expired {
            let Ok(epoch) = self.check_owner(&id) else {
                continue;
            };
            let claimed = self.claim(&id, |c| {
                Ok(c.and_then(|c| c.expired(now, &self.config))
                    .map_or(Step::Reply, Step::Write))
            });
            if let Ok((current, Some(next))) = claimed {
                let _ = self.store(next, current, epoch).await;
            }
        }
        counts
    }

    /// The metadata of each id (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS
    /// or TRANSACTIONAL_ID_NOT_FOUND when not served here).
    pub fn describe(&self, ids: &[String]) -> Vec<(String, Result<TxnMetadata, ErrorCode>)> {
        ids.iter()
            .map(|id| {
                let found = match self.check_owner(id) {
                    Err((code, _)) => Err(code),
                    Ok(_) => self.get(id).ok_or(ErrorCode::TransactionalIdNotFound),
                };
                (id.clone(), found)
            })
            .collect()
    }

    /// The ids this coordinator serves, filtered as Kafka's ListTransactions:
    /// by state names, producer ids and how long their transaction has been open.
    pub fn list(
        &self,
        states: &[String],
        producer_ids: &[i64],
        open_longer_than_ms: i64,
    ) -> Vec<TxnMetadata> {
        let now = (self.clock)();
        let inner = self.inner.lock();
        let mut out: Vec<TxnMetadata> = inner
            .txns
            .values()
            .filter(|m| states.is_empty() || states.iter().any(|s| s == m.state.as_str()))
            .filter(|m| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .filter(|m| {
                open_longer_than_ms <= 0
                    || (m.txn_start_ms >= 0
                        && now.saturating_sub(m.txn_start_ms) > open_longer_than_ms)
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }
}

fn no_producer_id() -> Refusal {
    (
        ErrorCode::CoordinatorNotAvailable,
        "no producer id was supplied for a transactional id that needs one; retry".into(),
    )
}

/// Markers through the brokers' gRPC API: partitions grouped by leader,
/// one WriteTxnMarkers per leader.
pub struct BrokerMarkers {
    cluster: Arc<Cluster>,
}

impl BrokerMarkers {
    /// Writes markers through `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> BrokerMarkers {
        BrokerMarkers { cluster }
    }
}

impl MarkerWriter for BrokerMarkers {
    fn write(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        partitions: Vec<TxnPartition>,
    ) -> BoxFuture<'_, Vec<(TxnPartition, ErrorCode, String)>> {
        Box::pin(async move {
            let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
            topics.sort();
            topics.dedup();
            let _ = self.cluster.refresh(&topics, false).await;
            let mut failed = Vec::new();
            let mut by_leader: HashMap<String, Vec<TxnPartition>> = HashMap::new();
            for p in partitions {
                match self.cluster.leader_addr(&p.0, p.1) {
                    Some((_, addr)) => by_leader.entry(addr).or_default().push(p),
                    None => {
                        // Gone only if a broker said so: one restarted and
                        // still catching up with the metadata log answers
                        // LEADER_NOT_AVAILABLE for every topic (and names no
                        // broker), and a failed refresh says nothing. Skipping
                        // the marker then would complete the transaction while
                        // the partition keeps it open, its last stable offset
                        // held at the transaction's first record for good.
                        let md = self.cluster.metadata();
                        let gone = !md.topics.contains_key(&p.0)
                            && md.topic_errors.get(&p.0).is_some_and(|(code, _)| {
                                *code == ErrorCode::UnknownTopicOrPartition
                            });
                        let code = if gone {
                            ErrorCode::UnknownTopicOrPartition
                        } else {
                            ErrorCode::LeaderNotAvailable
                        };
                        failed.push((p, code, "no leader known".to_owned()));
                    }
                }
            }
            let sends = by_leader.into_iter().map(|(addr, partitions)| async move {
                let request = bpb::WriteTxnMarkersRequest {
                    markers: vec![bpb::TxnMarker {
                        producer_id,
                        producer_epoch: i32::from(producer_epoch),
                        committed: commit,
                        coordinator_epoch,
                        partitions: partitions
                            .iter()
                            .map(|(topic, partition)| bpb::MarkerPartition {
                                topic: topic.clone(),
                                partition: *partition,
                            })
                            .collect(),
                    }],
                    timeout_ms: 30_000,
                };
                let answer = match self.cluster.broker_at(&addr) {
                    Ok(mut b) => b
                        .write_txn_markers(request)
                        .await
                        .map(tonic::Response::into_inner),
                    Err(e) => {
                        return partitions
                            .into_iter()
                            .map(|p| (p, ErrorCode::BrokerNotAvailable, e.to_string()))
                            .collect::<Vec<_>>();
                    }
                };
                match answer {
                    Ok(r) => r
                        .markers
                        .into_iter()
                        .flat_map(|m| m.partitions)
                        .filter(|p| p.error_code() != ErrorCode::None)
                        .map(|p| {
                            let code = p.error_code();
                            ((p.topic, p.partition), code, p.error_message)
                        })
                        .collect(),
                    Err(status) => partitions
                        .into_iter()
                        .map(|p| {
                            (
                                p,
                                runnel_common::errors::code_of(&status),
                                status.message().to_owned(),
                            )
                        })
                        .collect(),
                }
            });
            for f in join_all(sends).await {
                failed.extend(f);
            }
            failed
        })
    }
}
