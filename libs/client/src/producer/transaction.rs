//! The transactional producer (`transactional.id`), as Kafka's: records and
//! consumer offsets sent between `begin_transaction` and
//! `commit_transaction` become visible to read_committed consumers
//! together, or not at all after `abort_transaction`.
//!
//! `init_transactions` asks a broker for the id's producer id and epoch
//! (relayed to the transaction coordinator, which fences any older producer
//! with the same id and ends its open transaction). Before the sender sends
//! a partition's first batch of a transaction it adds the partition at the
//! coordinator (AddPartitionsToTxn); `send_offsets_to_transaction` adds the
//! group's partition of `__consumer_offsets` and commits the offsets there
//! with TxnOffsetCommit; commit and abort end the transaction with EndTxn.
//!
//! A batch that fails for good puts the transaction in an abortable error:
//! it can only be aborted, after which the producer bumps its epoch with
//! the coordinator (KIP-360) so its sequence numbers start afresh. Being
//! fenced is fatal: every later call fails.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runnel_common::metadata::{OFFSETS_TOPIC, offsets_partition_for};
use runnel_proto::broker::v1 as bpb;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use tokio::time::Instant;

use super::accumulator::Identity;
use super::{Producer, Shared};
use crate::cluster::Coordinator;
use crate::consumer::TopicPartition;
use crate::error::{ClientError, Result};

/// A consumer group member as `send_offsets_to_transaction` names it, so
/// the group's coordinator can refuse a member that has been fenced
/// (Kafka's `ConsumerGroupMetadata`, KIP-447).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// The group id.
    pub group_id: String,
    /// The member's generation; -1 skips the generation check.
    pub generation_id: i32,
    /// The member id (empty with generation -1).
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// A group named by id alone (no member check, as Kafka's older
    /// `sendOffsetsToTransaction(offsets, groupId)`).
    pub fn new(group_id: impl Into<String>) -> Self {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

/// Where the producer's transaction stands.
#[derive(Debug, Clone)]
enum TxnState {
    /// `init_transactions` not called yet (or not finished).
    Uninitialized,
    /// Between transactions.
    Ready,
    /// Between `begin_transaction` and commit or abort.
    InTransaction,
    /// Fenced or otherwise unusable: every call fails with this.
    Fatal(ClientError),
}

/// What the sender tracks of the open transaction, under the accumulator's lock.
#[derive(Debug, Default)]
pub(super) struct TxnPartitions {
    /// Partitions (with the group's offsets partition) the coordinator has
    /// in the transaction.
    pub(super) added: HashSet<(Arc<str>, i32)>,
    /// An AddPartitionsToTxn of the sender is in flight.
    pub(super) adding: bool,
    /// Why the transaction can only be aborted, if it can.
    pub(super) error: Option<ClientError>,
    /// A batch failed: after the abort the producer needs a new epoch.
    pub(super) bump_epoch: bool,
}

impl TxnPartitions {
    /// A batch of the transaction failed for good: it can only be aborted,
    /// and the producer needs a new epoch after (its sequences have a gap).
    pub(super) fn failed_batch(&mut self, e: ClientError) {
        self.error.get_or_insert(e);
        self.bump_epoch = true;
    }
}

/// The transactional part of a producer.
#[derive(Debug)]
pub(super) struct Transactions {
    /// `transactional.id`.
    pub(super) id: String,
    /// The coordinator's address, once found.
    coordinator: Mutex<Option<String>>,
    state: Mutex<TxnState>,
    /// One transactional call (init, offsets, commit, abort) at a time.
    calls: tokio::sync::Mutex<()>,
}

impl Transactions {
    pub(super) fn new(id: String) -> Self {
        Transactions {
            id,
            coordinator: Mutex::new(None),
            state: Mutex::new(TxnState::Uninitialized),
            calls: tokio::sync::Mutex::new(()),
        }
    }

    /// A fatal error (fenced) ends the producer: every later call fails with it.
    pub(super) fn fail_if_fatal(&self, e: &ClientError) {
        if is_fatal(e) {
            *self.state.lock() = TxnState::Fatal(e.clone());
        }
    }

    /// Fails unless a transaction is open (what `send` needs).
    pub(super) fn check_open(&self) -> Result<()> {
        match &*self.state.lock() {
            TxnState::InTransaction => Ok(()),
            TxnState::Fatal(e) => Err(e.clone()),
            TxnState::Uninitialized => Err(ClientError::Invalid(
                "call init_transactions before sending with a transactional.id".into(),
            )),
            TxnState::Ready => Err(ClientError::Invalid(
                "call begin_transaction before sending with a transactional.id".into(),
            )),
        }
    }
}

/// Errors that end the producer (Kafka's fatal transactional errors).
fn is_fatal(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(
            ErrorCode::ProducerFenced
                | ErrorCode::InvalidProducerEpoch
                | ErrorCode::TransactionalIdAuthorizationFailed
                | ErrorCode::InvalidTransactionTimeout
        )
    )
}

/// Errors after which the same call may succeed: the coordinator moved or
/// is loading, or it is still completing the previous transaction.
fn is_retriable(e: &ClientError) -> bool {
    e.is_retriable() || e.code() == Some(ErrorCode::ConcurrentTransactions)
}

/// The error an answer's code and message stand for, if any.
fn refused(code: ErrorCode, message: String) -> Result<()> {
    match code {
        ErrorCode::None => Ok(()),
        code => Err(ClientError::server(code, message)),
    }
}

impl Producer {
    fn transactions(&self) -> Result<&Arc<Transactions>> {
        self.shared
            .txn
            .as_ref()
            .ok_or_else(|| ClientError::Invalid("the producer has no transactional.id".into()))
    }

    /// Kafka's `initTransactions`: gets the transactional id's producer id
    /// and epoch, fencing any older producer with the same id and ending
    /// the transaction it left open. Call once, before the first transaction.
    pub async fn init_transactions(&self) -> Result<()> {
        let txn = self.transactions()?;
        if self.shared.config.acks != super::Acks::All {
            return Err(ClientError::Invalid(
                "a transactional producer needs acks=all".into(),
            ));
        }
        let _one = txn.calls.lock().await;
        match &*txn.state.lock() {
            TxnState::Uninitialized => {}
            TxnState::Fatal(e) => return Err(e.clone()),
            _ => {
                return Err(ClientError::Invalid(
                    "init_transactions was already called".into(),
                ));
            }
        }
        let identity = self.new_transactional_identity(None).await?;
        self.shared.acc.lock().identity = Some(identity);
        *txn.state.lock() = TxnState::Ready;
        Ok(())
    }

    /// InitProducerId for the transactional id: a first one, or (KIP-360)
    /// the next epoch of `current`.
    async fn new_transactional_identity(&self, current: Option<Identity>) -> Result<Identity> {
        let txn = self.transactions()?;
        let shared = &self.shared;
        let result = self
            .retrying("initialising the transactional producer", || async {
                let mut last = ClientError::Invalid("no bootstrap address given".into());
                for addr in shared.cluster.broker_addrs() {
                    let request = bpb::InitProducerIdRequest {
                        transactional_id: txn.id.clone(),
                        transaction_timeout_ms: i32::try_from(
                            shared.config.transaction_timeout.as_millis(),
                        )
                        .unwrap_or(i32::MAX),
                        producer_id: current.map_or(-1, |c| c.id),
                        producer_epoch: current.map_or(-1, |c| i32::from(c.epoch)),
                    };
                    let answer = match shared.cluster.broker_at(&addr) {
                        Ok(mut client) => client
                            .init_producer_id(request)
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(|s| ClientError::from_status(&addr, s)),
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok(r) => {
                            refused(r.error_code(), r.error_message)?;
                            let epoch = i16::try_from(r.producer_epoch).map_err(|_| {
                                ClientError::Invalid(format!(
                                    "broker {addr} gave producer epoch {}",
                                    r.producer_epoch
                                ))
                            })?;
                            return Ok(Identity {
                                id: r.producer_id,
                                epoch,
                            });
                        }
                        Err(e) if e.is_retriable() => last = e,
                        Err(e) => return Err(e),
                    }
                }
                Err(last)
            })
            .await;
        match result {
            Ok(identity) => {
                tracing::debug!(
                    transactional_id = %txn.id,
                    producer_id = identity.id,
                    epoch = identity.epoch,
                    "transactional producer initialised"
                );
                Ok(identity)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Kafka's `beginTransaction`: records sent from now on belong to a
    /// new transaction (nothing is sent to the cluster until they are).
    pub fn begin_transaction(&self) -> Result<()> {
        let txn = self.transactions()?;
        let mut state = txn.state.lock();
        match &*state {
            TxnState::Ready => {
                *state = TxnState::InTransaction;
                Ok(())
            }
            TxnState::Fatal(e) => Err(e.clone()),
            TxnState::Uninitialized => Err(ClientError::Invalid(
                "call init_transactions before begin_transaction".into(),
            )),
            TxnState::InTransaction => Err(ClientError::Invalid(
                "a transaction is already open: commit or abort it first".into(),
            )),
        }
    }

    /// Kafka's `sendOffsetsToTransaction`: the group's committed offsets
    /// become `offsets` (each the next offset to read) if, and when, the
    /// transaction commits.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let offsets: Vec<(TopicPartition, i64, String)> = offsets
            .iter()
            .map(|(tp, offset)| (tp.clone(), *offset, String::new()))
            .collect();
        self.send_offsets_with_metadata_to_transaction(&offsets, group)
            .await
    }

    /// As [`Producer::send_offsets_to_transaction`], each offset with a
    /// metadata string committed beside it (Kafka's `OffsetAndMetadata`).
    pub async fn send_offsets_with_metadata_to_transaction(
        &self,
        offsets: &[(TopicPartition, i64, String)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let txn = self.transactions()?;
        let _one = txn.calls.lock().await;
        txn.check_open()?;
        if let Some(e) = self.abortable() {
            return Err(e);
        }
        let offsets_partitions = self
            .shared
            .cluster
            .topic(OFFSETS_TOPIC, false)
            .await?
            .partitions
            .len() as i32;
        let partition = (
            Arc::<str>::from(OFFSETS_TOPIC),
            offsets_partition_for(&group.group_id, offsets_partitions),
        );
        self.add_partitions(std::slice::from_ref(&partition))
            .await
            .map_err(|e| self.failed(e))?;
        self.shared.acc.lock().txn.added.insert(partition);
        let identity = self.identity()?;
        let request = pb::TxnOffsetCommitRequest {
            transactional_id: txn.id.clone(),
            group_id: group.group_id.clone(),
            producer_id: identity.id,
            producer_epoch: i32::from(identity.epoch),
            generation_id: group.generation_id,
            member_id: group.member_id.clone(),
            group_instance_id: group.group_instance_id.clone().unwrap_or_default(),
            partitions: offsets
                .iter()
                .map(|(tp, offset, metadata)| pb::OffsetCommitPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *offset,
                    leader_epoch: -1,
                    metadata: metadata.clone(),
                })
                .collect(),
        };
        let cluster = &self.shared.cluster;
        let group_coordinator: Mutex<Option<String>> = Mutex::new(None);
        self.retrying("committing offsets in the transaction", || async {
            let known = group_coordinator.lock().clone();
            let addr = match known {
                Some(addr) => addr,
                None => cluster.find_coordinator(&group.group_id).await?.1,
            };
            let answer = cluster
                .coordinator_at(&addr)?
                .txn_offset_commit(request.clone())
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| ClientError::from_status(&addr, s));
            let first_error =
                answer.and_then(
                    |a| match a.partitions.into_iter().find(|p| p.error_code != 0) {
                        Some(p) => refused(p.error_code(), p.error_message),
                        None => Ok(()),
                    },
                );
            match &first_error {
                Err(e) if is_retriable(e) => *group_coordinator.lock() = None,
                _ => *group_coordinator.lock() = Some(addr),
            }
            first_error
        })
        .await
        .map_err(|e| self.failed(e))
    }

    /// Kafka's `commitTransaction`: sends what is queued, then commits. If a
    /// record of the transaction failed, the transaction cannot commit: the
    /// error is returned and only `abort_transaction` is left.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true).await
    }

    /// Kafka's `abortTransaction`: what the transaction wrote is discarded
    /// (read_committed consumers never see it) and its offsets are not
    /// committed.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let txn = self.transactions()?;
        let _one = txn.calls.lock().await;
        txn.check_open().map_err(|e| match e {
            ClientError::Invalid(_) => ClientError::Invalid(format!(
                "no transaction is open to {}",
                if commit { "commit" } else { "abort" }
            )),
            e => e,
        })?;
        // Every batch of the transaction is answered before it ends.
        self.flush().await?;
        if commit && let Some(e) = self.abortable() {
            return Err(e);
        }
        let (added, bump) = {
            let acc = self.shared.acc.lock();
            (!acc.txn.added.is_empty(), acc.txn.bump_epoch)
        };
        if added {
            let identity = self.identity()?;
            let request = pb::EndTxnRequest {
                transactional_id: txn.id.clone(),
                producer_id: identity.id,
                producer_epoch: i32::from(identity.epoch),
                committed: commit,
            };
            let what = if commit {
                "committing the transaction"
            } else {
                "aborting the transaction"
            };
            self.call_txn_coordinator(what, |mut c| {
                let request = request.clone();
                async move {
                    let r = c.end_txn(request).await?.into_inner();
                    Ok((r.error_code(), r.error_message))
                }
            })
            .await
            .map_err(|e| self.failed(e))?;
        }
        if bump {
            // A failed batch left sequence numbers the leaders will not
            // accept: continue under the next epoch (KIP-360).
            let current = self.identity()?;
            let next = self.new_transactional_identity(Some(current)).await?;
            self.shared.acc.lock().identity = Some(next);
        }
        {
            let mut acc = self.shared.acc.lock();
            acc.txn = TxnPartitions::default();
        }
        *txn.state.lock() = TxnState::Ready;
        Ok(())
    }

    /// The producer's current id and epoch.
    fn identity(&self) -> Result<Identity> {
        self.shared
            .acc
            .lock()
            .identity
            .ok_or_else(|| ClientError::Invalid("the producer has no producer id yet".into()))
    }

    /// Why the open transaction can only be aborted, if it can.
    fn abortable(&self) -> Option<ClientError> {
        self.shared.acc.lock().txn.error.clone()
    }

    /// Records `e`: fatal errors end the producer, others make the open
    /// transaction abortable. Returns `e`.
    fn failed(&self, e: ClientError) -> ClientError {
        if let Some(txn) = &self.shared.txn {
            if is_fatal(&e) {
                txn.fail_if_fatal(&e);
            } else if matches!(&*txn.state.lock(), TxnState::InTransaction) {
                self.shared.acc.lock().txn.error.get_or_insert(e.clone());
            }
        }
        e
    }

    /// AddPartitionsToTxn for `partitions`, retried while the coordinator
    /// moves or finishes the previous transaction.
    async fn add_partitions(&self, partitions: &[(Arc<str>, i32)]) -> Result<()> {
        add_partitions(&self.shared, partitions).await
    }

    /// Runs `attempt` until it succeeds, fails for good, or `max.block.ms` passes.
    async fn retrying<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        retrying(&self.shared, what, attempt).await
    }

    async fn call_txn_coordinator<F, Fut>(&self, what: &str, call: F) -> Result<()>
    where
        F: Fn(Coordinator) -> Fut,
        Fut: Future<Output = std::result::Result<(ErrorCode, String), tonic::Status>>,
    {
        call_txn_coordinator(&self.shared, what, call).await
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `max.block.ms`
/// passes; a coordinator still completing the last transaction is asked
/// again sooner than one that moved.
async fn retrying<T, F, Fut>(shared: &Shared, what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + shared.config.max_block;
    // The previous transaction's markers usually land within a few
    // milliseconds: ask again soon, then back off to 20 ms.
    let mut concurrent = Duration::from_millis(1);
    loop {
        let e = match attempt().await {
            Ok(t) => return Ok(t),
            Err(e) if is_retriable(&e) => e,
            Err(e) => return Err(e),
        };
        let pause = if e.code() == Some(ErrorCode::ConcurrentTransactions) {
            concurrent = (concurrent * 2).min(Duration::from_millis(20));
            concurrent.min(shared.config.retry_backoff)
        } else {
            shared.config.retry_backoff
        };
        if Instant::now() + pause >= deadline {
            return Err(ClientError::Timeout {
                what: format!("{what} (last error: {e})"),
                ms: shared.config.max_block.as_millis() as u64,
            });
        }
        tokio::time::sleep(pause).await;
    }
}

/// Calls the transaction coordinator (found, and found again when it
/// moves) until `call` succeeds, fails for good, or `max.block.ms` passes.
async fn call_txn_coordinator<F, Fut>(shared: &Shared, what: &str, call: F) -> Result<()>
where
    F: Fn(Coordinator) -> Fut,
    Fut: Future<Output = std::result::Result<(ErrorCode, String), tonic::Status>>,
{
    let Some(txn) = &shared.txn else {
        return Err(ClientError::Invalid(
            "the producer has no transactional.id".into(),
        ));
    };
    let call = &call;
    retrying(shared, what, move || async move {
        let known = txn.coordinator.lock().clone();
        let addr = match known {
            Some(addr) => addr,
            None => {
                shared
                    .cluster
                    .find_transaction_coordinator(&txn.id)
                    .await?
                    .1
            }
        };
        let outcome = match call(shared.cluster.coordinator_at(&addr)?).await {
            Ok((code, message)) => refused(code, message),
            Err(status) => Err(ClientError::from_status(&addr, status)),
        };
        *txn.coordinator.lock() = match &outcome {
            Err(e) if e.is_retriable() => None,
            _ => Some(addr),
        };
        outcome
    })
    .await
}

/// AddPartitionsToTxn for `partitions` at the producer's current identity.
pub(super) async fn add_partitions(shared: &Shared, partitions: &[(Arc<str>, i32)]) -> Result<()> {
    let Some(txn) = &shared.txn else {
        return Ok(());
    };
    let Some(identity) = shared.acc.lock().identity else {
        return Err(ClientError::Invalid(
            "the producer has no producer id yet".into(),
        ));
    };
    let mut topics: Vec<pb::TopicPartitions> = Vec::new();
    for (topic, partition) in partitions {
        match topics.iter_mut().find(|t| *t.topic == **topic) {
            Some(t) => t.partitions.push(*partition),
            None => topics.push(pb::TopicPartitions {
                topic: topic.to_string(),
                partitions: vec![*partition],
            }),
        }
    }
    let request = pb::AddPartitionsToTxnRequest {
        transactional_id: txn.id.clone(),
        producer_id: identity.id,
        producer_epoch: i32::from(identity.epoch),
        topics,
        verify_only: false,
    };
    call_txn_coordinator(shared, "adding partitions to the transaction", |mut c| {
        let request = request.clone();
        async move {
            let r = c.add_partitions_to_txn(request).await?.into_inner();
            // A refusal of the whole request, or else the first partition's.
            if r.error_code() != ErrorCode::None {
                return Ok((r.error_code(), r.error_message));
            }
            Ok(match r.results.iter().find(|p| p.error_code != 0) {
                Some(p) => (
                    p.error_code(),
                    format!(
                        "the coordinator refused {}-{} in the transaction",
                        p.topic, p.partition
                    ),
                ),
                None => (ErrorCode::None, String::new()),
            })
        }
    })
    .await
}

/// The sender's AddPartitionsToTxn for partitions with batches to send
/// that are not in the transaction yet: once added they are sent; a
/// refusal fails their queued batches and makes the transaction abortable
/// (or the producer fenced).
pub(super) async fn add_for_sender(shared: Arc<Shared>, partitions: Vec<(Arc<str>, i32)>) {
    let outcome = add_partitions(&shared, &partitions).await;
    let mut freed = 0;
    {
        let mut acc = shared.acc.lock();
        acc.txn.adding = false;
        match outcome {
            Ok(()) => acc.txn.added.extend(partitions),
            Err(e) => {
                tracing::debug!(error = %e, "adding partitions to the transaction failed");
                for (topic, partition) in &partitions {
                    let Some(queue) = acc
                        .topics
                        .get_mut(&**topic)
                        .and_then(|t| t.partitions.get_mut(*partition as usize))
                    else {
                        continue;
                    };
                    for b in queue.ready.drain(..) {
                        freed += shared.fail_batch(b, &e);
                    }
                }
                acc.buffered = acc.buffered.saturating_sub(freed);
                if let Some(txn) = &shared.txn {
                    txn.fail_if_fatal(&e);
                }
                acc.txn.failed_batch(e);
            }
        }
    }
    shared.progress.notify_waiters();
    shared.wake.notify_one();
}
