//! One transactional id under Kafka's transaction protocol: the state the
//! transaction coordinator keeps in `__transaction_state` and the rules
//! every transaction request is checked against.
//!
//! States, as Kafka's `TransactionState`:
//!
//! ```text
//!            InitProducerId (epoch + 1)          EndTxn(commit)
//! Empty / CompleteCommit / CompleteAbort ──AddPartitions──▶ Ongoing ──────────▶ PrepareCommit ──markers──▶ CompleteCommit
//!        ▲                                                 │  EndTxn(abort), timeout,
//!        └──────────────── markers ◀── PrepareAbort ◀──────┘  InitProducerId (fences: epoch + 1)
//! ```
//!
//! Everything here is pure and driven by the caller's clock: a request
//! either gets its answer at once ([`Step::Reply`]) or names the metadata
//! that must be written to `__transaction_state` before it is answered
//! ([`Step::Write`]). After a write to PrepareCommit or PrepareAbort the
//! caller sends the markers to the partitions' leaders and then writes
//! [`TxnMetadata::completed`]. While a write is in flight the caller
//! answers other requests for the id with CONCURRENT_TRANSACTIONS (see
//! [`TxnMetadata::pending`]).

use std::collections::BTreeSet;

use prost::Message;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1::{
    OwnerKey, OwnerValue, TopicPartitionRef, TransactionStateKey, TransactionStateValue,
    transaction_state_key,
};

/// The internal topic's name (Kafka's).
pub use runnel_common::metadata::TRANSACTION_STATE_TOPIC;

/// `transaction.state.log.num.partitions` default.
pub const DEFAULT_TXN_PARTITIONS: i32 = 50;

/// The partition of `__transaction_state` a transactional id belongs to
/// (Java's `String.hashCode`, as Kafka computes it).
pub use runnel_common::metadata::offsets_partition_for as partition_for;

/// Milliseconds on the caller's clock.
pub type Ms = i64;

/// Coordinator-wide limits (Kafka's broker configs of the same names).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an idle transactional id is forgotten after this.
    pub id_expiration_ms: Ms,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
        }
    }
}

/// Where a transactional id is, as Kafka's `TransactionState` (same ids and names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// A transaction is open: partitions were added.
    Ongoing,
    /// EndTxn(commit) was accepted; commit markers are being written.
    PrepareCommit,
    /// The transaction is aborting; abort markers are being written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
    /// The id expired and is being removed.
    Dead,
    /// An open transaction is being fenced by a new producer (Kafka's
    /// intermediate state; here the fence goes straight to PrepareAbort).
    PrepareEpochFence,
}

impl TxnState {
    /// Kafka's id for the state (as `__transaction_state` stores it).
    pub fn id(self) -> i32 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    /// The state with Kafka's id `id`.
    pub fn from_id(id: i32) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name (DescribeTransactions, ListTransactions' state filter).
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Whether a transaction is between its first AddPartitions and its end.
    fn is_settled(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// A partition a transaction wrote to.
pub type TxnPartition = (String, i32);

/// What the coordinator knows about one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    /// The producer's `transactional.id`.
    pub transactional_id: String,
    /// The producer id it is bound to.
    pub producer_id: i64,
    /// The id it had before the epoch ran out (-1: none), so a retried
    /// InitProducerId from before the change is recognised (KIP-360).
    pub previous_producer_id: i64,
    /// The current producer epoch: older epochs are fenced.
    pub producer_epoch: i16,
    /// The epoch before the last bump (-1: none): a retry of the
    /// InitProducerId that bumped it gets the same answer (KIP-360).
    pub last_producer_epoch: i16,
    /// `transaction.timeout.ms`: an open transaction older than this is aborted.
    pub timeout_ms: i32,
    /// Where the id is.
    pub state: TxnState,
    /// The partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<TxnPartition>,
    /// When the open transaction began (-1: none).
    pub txn_start_ms: Ms,
    /// When this metadata last changed.
    pub last_update_ms: Ms,
    /// A transition written but not yet stored: requests wait meanwhile.
    /// Never stored.
    pub pending: Option<TxnState>,
}

/// Why a transaction request is refused (Kafka's error for each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// `transaction.timeout.ms` out of range.
    #[error("transaction.timeout.ms {asked} is not within 1..={max} (transaction.max.timeout.ms)")]
    InvalidTimeout {
        /// What the producer asked for.
        asked: i32,
        /// The coordinator's maximum.
        max: i32,
    },
    /// Another transition of this id is being written, or markers are being sent.
    #[error("transactional id {id}: {what} is in progress; retry")]
    Concurrent {
        /// The transactional id.
        id: String,
        /// What is in progress.
        what: &'static str,
    },
    /// The producer id does not belong to this transactional id.
    #[error("transactional id {id} is bound to producer id {current}, not {asked}")]
    ProducerIdMapping {
        /// The transactional id.
        id: String,
        /// The producer id of the request.
        asked: i64,
        /// The one the id is bound to (-1: the id is unknown).
        current: i64,
    },
    /// A newer producer with this transactional id has started (a zombie's request).
    #[error(
        "producer {producer_id} epoch {asked} of transactional id {id} is fenced by epoch {current}"
    )]
    Fenced {
        /// The transactional id.
        id: String,
        /// The producer id.
        producer_id: i64,
        /// The epoch of the request.
        asked: i16,
        /// The current epoch.
        current: i16,
    },
    /// The request does not fit the transaction's state.
    #[error("transactional id {id} is {state}: cannot {what}")]
    InvalidState {
        /// The transactional id.
        id: String,
        /// Its state.
        state: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// The producer id space of this transactional id needs a new id first
    /// (the caller allocates one and asks again).
    #[error("a new producer id is needed")]
    NeedsProducerId,
}

impl TxnError {
    /// Kafka's error code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            TxnError::InvalidTimeout { .. } => ErrorCode::InvalidTransactionTimeout,
            TxnError::Concurrent { .. } => ErrorCode::ConcurrentTransactions,
            TxnError::ProducerIdMapping { .. } => ErrorCode::InvalidProducerIdMapping,
            TxnError::Fenced { .. } => ErrorCode::ProducerFenced,
            TxnError::InvalidState { .. } => ErrorCode::InvalidTxnState,
            TxnError::NeedsProducerId => ErrorCode::UnknownServerError,
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Answer now; nothing changes.
    Reply,
    /// Store this metadata in `__transaction_state`, then answer (and, for
    /// PrepareCommit or PrepareAbort, write the markers).
    Write(TxnMetadata),
}

/// An InitProducerId's producer id and epoch, from a producer that had one (KIP-360).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedProducer {
    /// The id it had.
    pub producer_id: i64,
    /// The epoch it had.
    pub producer_epoch: i16,
}

/// Checks a producer's `transaction.timeout.ms` against the coordinator's maximum.
pub fn check_timeout(timeout_ms: i32, config: &TxnConfig) -> Result<(), TxnError> {
    if timeout_ms <= 0 || timeout_ms > config.max_timeout_ms {
        return Err(TxnError::InvalidTimeout {
            asked: timeout_ms,
            max: config.max_timeout_ms,
        });
    }
    Ok(())
}

/// Kafka's InitProducerId for a transactional id that has no metadata yet:
/// producer id `producer_id` (freshly allocated), epoch 0.
pub fn new_id(
    transactional_id: &str,
    producer_id: i64,
    timeout_ms: i32,
    now: Ms,
    config: &TxnConfig,
) -> Result<TxnMetadata, TxnError> {
    check_timeout(timeout_ms, config)?;
    Ok(TxnMetadata {
        transactional_id: transactional_id.to_owned(),
        producer_id,
        previous_producer_id: -1,
        producer_epoch: 0,
        last_producer_epoch: -1,
        timeout_ms,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        txn_start_ms: -1,
        last_update_ms: now,
        pending: None,
    })
}

/// A record of `__transaction_state`: key and value (None: a tombstone).
pub type TxnRecord = (Vec<u8>, Option<Vec<u8>>);

/// What a record of `__transaction_state` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnEntry {
    /// A transactional id's metadata, or its removal.
    Txn(String, Option<TxnMetadata>),
    /// A coordinator took the partition over.
    Owner {
        /// The coordinator.
        coordinator_id: i32,
        /// Its owner epoch.
        owner_epoch: i32,
    },
}

/// A record of `__transaction_state` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed __transaction_state record: {0}")]
pub struct MalformedTxnRecord(String);

/// The ownership marker of `partition` (see `OwnerKey` in records.proto).
pub fn owner_record(partition: i32, coordinator_id: i32, owner_epoch: i32) -> TxnRecord {
    let key = TransactionStateKey {
        key: Some(transaction_state_key::Key::Owner(OwnerKey { partition })),
    };
    let value = OwnerValue {
        coordinator_id,
        owner_epoch,
    };
    (key.encode_to_vec(), Some(value.encode_to_vec()))
}

/// Reads a record of `__transaction_state`.
pub fn decode_record(key: &[u8], value: Option<&[u8]>) -> Result<TxnEntry, MalformedTxnRecord> {
    let bad = |e: &dyn std::fmt::Display| MalformedTxnRecord(e.to_string());
    let key = TransactionStateKey::decode(key).map_err(|e| bad(&e))?;
    match key.key {
        Some(transaction_state_key::Key::TransactionalId(id)) => {
            let metadata = value
                .map(|v| {
                    let v = TransactionStateValue::decode(v).map_err(|e| bad(&e))?;
                    TxnMetadata::from_value(&id, &v)
                })
                .transpose()?;
            Ok(TxnEntry::Txn(id, metadata))
        }
        Some(transaction_state_key::Key::Owner(_)) => {
            let v = OwnerValue::decode(value.unwrap_or_default()).map_err(|e| bad(&e))?;
            Ok(TxnEntry::Owner {
                coordinator_id: v.coordinator_id,
                owner_epoch: v.owner_epoch,
            })
        }
        None => Err(MalformedTxnRecord("a key of no known kind".into())),
    }
}

/// The last epoch a producer id may use; one more bump needs a new id.
const MAX_EPOCH: i16 = i16::MAX - 1;

impl TxnMetadata {
    /// The record that stores this metadata (a tombstone once Dead).
    pub fn to_record(&self) -> TxnRecord {
        let key = TransactionStateKey {
            key: Some(transaction_state_key::Key::TransactionalId(
                self.transactional_id.clone(),
            )),
        };
        let value = (self.state != TxnState::Dead).then(|| {
            TransactionStateValue {
                producer_id: self.producer_id,
                previous_producer_id: self.previous_producer_id,
                producer_epoch: i32::from(self.producer_epoch),
                last_producer_epoch: i32::from(self.last_producer_epoch),
                timeout_ms: self.timeout_ms,
                state: self.state.id(),
                partitions: self
                    .partitions
                    .iter()
                    .map(|(topic, partition)| TopicPartitionRef {
                        topic: topic.clone(),
                        partition: *partition,
                    })
                    .collect(),
                txn_start_ms: self.txn_start_ms,
                last_update_ms: self.last_update_ms,
            }
            .encode_to_vec()
        });
        (key.encode_to_vec(), value)
    }

    fn from_value(id: &str, v: &TransactionStateValue) -> Result<TxnMetadata, MalformedTxnRecord> {
        let epoch = |e: i32| {
            i16::try_from(e).map_err(|_| MalformedTxnRecord(format!("epoch {e} out of range")))
        };
        Ok(TxnMetadata {
            transactional_id: id.to_owned(),
            producer_id: v.producer_id,
            previous_producer_id: v.previous_producer_id,
            producer_epoch: epoch(v.producer_epoch)?,
            last_producer_epoch: epoch(v.last_producer_epoch)?,
            timeout_ms: v.timeout_ms,
            state: TxnState::from_id(v.state)
                .ok_or_else(|| MalformedTxnRecord(format!("unknown state {}", v.state)))?,
            partitions: v
                .partitions
                .iter()
                .map(|p| (p.topic.clone(), p.partition))
                .collect(),
            txn_start_ms: v.txn_start_ms,
            last_update_ms: v.last_update_ms,
            pending: None,
        })
    }

    fn concurrent(&self, what: &'static str) -> TxnError {
        TxnError::Concurrent {
            id: self.transactional_id.clone(),
            what,
        }
    }

    fn invalid(&self, what: &'static str) -> TxnError {
        TxnError::InvalidState {
            id: self.transactional_id.clone(),
            state: self.state.as_str(),
            what,
        }
    }

    /// Refuses requests while a write is in flight or markers are being sent.
    fn check_not_busy(&self) -> Result<(), TxnError> {
        if self.pending.is_some() {
            return Err(self.concurrent("a state change"));
        }
        match self.state {
            TxnState::PrepareCommit => Err(self.concurrent("a commit")),
            TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                Err(self.concurrent("an abort"))
            }
            _ => Ok(()),
        }
    }

    /// The producer id and epoch of a request must be the current ones.
    fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::ProducerIdMapping {
                id: self.transactional_id.clone(),
                asked: producer_id,
                current: self.producer_id,
            });
        }
        if producer_epoch != self.producer_epoch {
            return Err(TxnError::Fenced {
                id: self.transactional_id.clone(),
                producer_id,
                asked: producer_epoch,
                current: self.producer_epoch,
            });
        }
        Ok(())
    }

    /// A copy moved to `state` at `now`.
    fn to(&self, state: TxnState, now: Ms) -> TxnMetadata {
        TxnMetadata {
            state,
            last_update_ms: now,
            pending: None,
            ..self.clone()
        }
    }

    /// Kafka's InitProducerId for a known transactional id. An open
    /// transaction is aborted first, under a bumped epoch that fences its
    /// producer (the caller answers CONCURRENT_TRANSACTIONS and the
    /// producer retries); otherwise the epoch is bumped (or, when it has
    /// run out, [`TxnError::NeedsProducerId`] asks for `new_producer_id`).
    /// A producer that names its previous id and epoch (KIP-360) must name
    /// the current ones, or the ones of a bump it is retrying.
    pub fn init_producer_id(
        &self,
        timeout_ms: i32,
        expected: Option<ExpectedProducer>,
        new_producer_id: Option<i64>,
        now: Ms,
        config: &TxnConfig,
    ) -> Result<Step, TxnError> {
        check_timeout(timeout_ms, config)?;
        self.check_not_busy()?;
        if self.state == TxnState::Ongoing {
            return Ok(Step::Write(self.fence_and_abort(now)));
        }
        if self.state == TxnState::Dead {
            return Err(self.invalid("initialize a producer"));
        }
        if let Some(e) = expected {
            let current =
                e.producer_id == self.producer_id && e.producer_epoch == self.producer_epoch;
            let retried = (e.producer_id == self.producer_id
                && self.last_producer_epoch >= 0
                && e.producer_epoch == self.last_producer_epoch)
                || (e.producer_id == self.previous_producer_id && self.producer_epoch == 0);
            if retried {
                return Ok(Step::Reply);
            }
            if !current {
                return Err(TxnError::Fenced {
                    id: self.transactional_id.clone(),
                    producer_id: e.producer_id,
                    asked: e.producer_epoch,
                    current: self.producer_epoch,
                });
            }
        }
        let mut next = self.to(TxnState::Empty, now);
        next.timeout_ms = timeout_ms;
        next.partitions.clear();
        next.txn_start_ms = -1;
        if self.producer_epoch >= MAX_EPOCH {
            let Some(id) = new_producer_id else {
                return Err(TxnError::NeedsProducerId);
            };
            next.previous_producer_id = self.producer_id;
            next.producer_id = id;
            next.producer_epoch = 0;
            next.last_producer_epoch = -1;
        } else {
            next.last_producer_epoch = self.producer_epoch;
            next.producer_epoch = self.producer_epoch + 1;
        }
        Ok(Step::Write(next))
    }

    /// The open transaction aborted under a bumped epoch, so its producer
    /// (a zombie, or one that let it time out) is fenced.
    fn fence_and_abort(&self, now: Ms) -> TxnMetadata {
        let mut next = self.to(TxnState::PrepareAbort, now);
        if self.producer_epoch < i16::MAX {
            next.last_producer_epoch = self.producer_epoch;
            next.producer_epoch = self.producer_epoch + 1;
        }
        next
    }

    /// Kafka's AddPartitionsToTxn (and AddOffsetsToTxn, with the group's
    /// `__consumer_offsets` partition): the partitions join the
    /// transaction, which opens if it was not.
    pub fn add_partitions(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TxnPartition],
        now: Ms,
    ) -> Result<Step, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        self.check_not_busy()?;
        if self.state == TxnState::Dead {
            return Err(self.invalid("add partitions"));
        }
        let known = partitions.iter().all(|p| self.partitions.contains(p));
        if self.state == TxnState::Ongoing && known {
            return Ok(Step::Reply);
        }
        let mut next = self.to(TxnState::Ongoing, now);
        if self.state != TxnState::Ongoing {
            next.partitions.clear();
            next.txn_start_ms = now;
        }
        next.partitions.extend(partitions.iter().cloned());
        Ok(Step::Write(next))
    }

    /// KIP-890's check for a broker about to write a transactional batch:
    /// the producer's transaction is open and holds `partition`.
    pub fn verify_partition(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partition: &TxnPartition,
    ) -> Result<(), TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        // A concurrent AddPartitions of other partitions leaves the
        // transaction open; only a pending end (or none at all) does not.
        let open = self.state == TxnState::Ongoing
            && self.pending.is_none_or(|next| next == TxnState::Ongoing);
        if open && self.partitions.contains(partition) {
            Ok(())
        } else {
            Err(self.invalid("write to a partition not added to the transaction"))
        }
    }

    /// Kafka's EndTxn: an open transaction moves to PrepareCommit or
    /// PrepareAbort; a retry of an end already done succeeds; anything
    /// else is refused.
    pub fn end(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now: Ms,
    ) -> Result<Step, TxnError> {
        let what = if commit { "commit" } else { "abort" };
        self.check_producer(producer_id, producer_epoch)?;
        if self.pending.is_some() {
            return Err(self.concurrent("a state change"));
        }
        match (self.state, commit) {
            (TxnState::Ongoing, true) => Ok(Step::Write(self.to(TxnState::PrepareCommit, now))),
            (TxnState::Ongoing, false) => Ok(Step::Write(self.to(TxnState::PrepareAbort, now))),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(Step::Reply),
            (TxnState::PrepareCommit, true) => Err(self.concurrent("a commit")),
            (TxnState::PrepareAbort, false) => Err(self.concurrent("an abort")),
            _ => Err(self.invalid(what)),
        }
    }

    /// After the markers of a PrepareCommit or PrepareAbort are written:
    /// CompleteCommit or CompleteAbort, with no partitions. `None` for any
    /// other state.
    pub fn completed(&self, now: Ms) -> Option<TxnMetadata> {
        let state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return None,
        };
        let mut next = self.to(state, now);
        next.partitions.clear();
        next.txn_start_ms = -1;
        Some(next)
    }

    /// An open transaction past its `transaction.timeout.ms`: aborted
    /// under a bumped epoch (its producer is fenced, as Kafka does).
    pub fn timed_out(&self, now: Ms) -> Option<TxnMetadata> {
        let late = self.state == TxnState::Ongoing
            && self.pending.is_none()
            && now.saturating_sub(self.txn_start_ms) > Ms::from(self.timeout_ms);
        late.then(|| self.fence_and_abort(now))
    }

    /// A settled id idle past `transactional.id.expiration.ms`: Dead (the
    /// caller writes a tombstone and forgets it).
    pub fn expired(&self, now: Ms, config: &TxnConfig) -> Option<TxnMetadata> {
        let idle = self.state.is_settled()
            && self.pending.is_none()
            && now.saturating_sub(self.last_update_ms) > config.id_expiration_ms;
        idle.then(|| self.to(TxnState::Dead, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Ms = 1_000_000;

    fn config() -> TxnConfig {
        TxnConfig::default()
    }

    fn tp(topic: &str, p: i32) -> TxnPartition {
        (topic.to_owned(), p)
    }

    fn written(step: Result<Step, TxnError>) -> TxnMetadata {
        match step {
            Ok(Step::Write(m)) => m,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn fresh() -> TxnMetadata {
        new_id("tx", 7, 60_000, T, &config()).unwrap()
    }

    #[test]
    fn a_transaction_commits_through_prepare_and_complete() {
        let m = fresh();
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (7, 0, TxnState::Empty)
        );
        let m = written(m.add_partitions(7, 0, &[tp("a", 0), tp("b", 1)], T + 1));
        assert_eq!(m.state, TxnState::Ongoing);
        assert_eq!(m.txn_start_ms, T + 1);
        // Adding a known partition again writes nothing; a new one does.
        assert_eq!(
            m.add_partitions(7, 0, &[tp("a", 0)], T + 2),
            Ok(Step::Reply)
        );
        let m = written(m.add_partitions(7, 0, &[tp("a", 1)], T + 2));
        assert_eq!(m.partitions.len(), 3);
        assert_eq!(m.txn_start_ms, T + 1, "still the same transaction");
        assert!(m.verify_partition(7, 0, &tp("b", 1)).is_ok());
        // Another AddPartitions in flight does not make it unverifiable.
        let mut adding = m.clone();
        adding.pending = Some(TxnState::Ongoing);
        assert!(adding.verify_partition(7, 0, &tp("b", 1)).is_ok());
        adding.pending = Some(TxnState::PrepareCommit);
        assert!(adding.verify_partition(7, 0, &tp("b", 1)).is_err());
        assert_eq!(
            m.verify_partition(7, 0, &tp("c", 0)).unwrap_err().code(),
            ErrorCode::InvalidTxnState
        );
        let m = written(m.end(7, 0, true, T + 3));
        assert_eq!(m.state, TxnState::PrepareCommit);
        // While markers are written, the producer waits.
        assert_eq!(
            m.add_partitions(7, 0, &[tp("a", 0)], T + 4)
                .unwrap_err()
                .code(),
            ErrorCode::ConcurrentTransactions
        );
        assert_eq!(
            m.end(7, 0, true, T + 4).unwrap_err().code(),
            ErrorCode::ConcurrentTransactions
        );
        assert_eq!(
            m.end(7, 0, false, T + 4).unwrap_err().code(),
            ErrorCode::InvalidTxnState
        );
        let m = m.completed(T + 5).unwrap();
        assert_eq!(m.state, TxnState::CompleteCommit);
        assert!(m.partitions.is_empty());
        // A retried commit succeeds; an abort now is refused.
        assert_eq!(m.end(7, 0, true, T + 6), Ok(Step::Reply));
        assert_eq!(
            m.end(7, 0, false, T + 6).unwrap_err().code(),
            ErrorCode::InvalidTxnState
        );
        // The next transaction starts afresh.
        let m = written(m.add_partitions(7, 0, &[tp("z", 0)], T + 7));
        assert_eq!(m.partitions.len(), 1);
        assert_eq!(m.txn_start_ms, T + 7);
    }

    #[test]
    fn a_new_producer_fences_the_old_and_aborts_its_transaction() {
        let m = written(fresh().add_partitions(7, 0, &[tp("a", 0)], T));
        // A second producer with the same id: the open transaction aborts
        // under epoch 1, which fences the first producer.
        let fencing = written(m.init_producer_id(60_000, None, None, T + 1, &config()));
        assert_eq!(fencing.state, TxnState::PrepareAbort);
        assert_eq!(fencing.producer_epoch, 1);
        assert_eq!(
            fencing.end(7, 0, true, T + 2).unwrap_err().code(),
            ErrorCode::ProducerFenced
        );
        // Its retry waits for the markers, then bumps again.
        assert_eq!(
            fencing
                .init_producer_id(60_000, None, None, T + 2, &config())
                .unwrap_err()
                .code(),
            ErrorCode::ConcurrentTransactions
        );
        let done = fencing.completed(T + 3).unwrap();
        assert_eq!(done.state, TxnState::CompleteAbort);
        let m = written(done.init_producer_id(60_000, None, None, T + 4, &config()));
        assert_eq!((m.producer_epoch, m.state), (2, TxnState::Empty));
        // The old producer stays fenced everywhere.
        assert_eq!(
            m.add_partitions(7, 0, &[tp("a", 0)], T + 5)
                .unwrap_err()
                .code(),
            ErrorCode::ProducerFenced
        );
        assert_eq!(
            m.add_partitions(8, 2, &[tp("a", 0)], T + 5)
                .unwrap_err()
                .code(),
            ErrorCode::InvalidProducerIdMapping
        );
    }

    #[test]
    fn kip_360_recovery_bumps_only_for_the_current_epoch() {
        let m = fresh();
        let expected = |pid, epoch| {
            Some(ExpectedProducer {
                producer_id: pid,
                producer_epoch: epoch,
            })
        };
        let bumped = written(m.init_producer_id(60_000, expected(7, 0), None, T, &config()));
        assert_eq!((bumped.producer_epoch, bumped.last_producer_epoch), (1, 0));
        // The same request retried (its answer was lost): same answer, no write.
        assert_eq!(
            bumped.init_producer_id(60_000, expected(7, 0), None, T, &config()),
            Ok(Step::Reply)
        );
        // An older epoch is a zombie.
        let zombie = written(bumped.init_producer_id(60_000, None, None, T, &config()))
            .init_producer_id(60_000, expected(7, 0), None, T, &config());
        assert_eq!(zombie.unwrap_err().code(), ErrorCode::ProducerFenced);
    }

    #[test]
    fn an_exhausted_epoch_moves_to_a_new_producer_id() {
        let mut m = fresh();
        m.producer_epoch = MAX_EPOCH;
        assert_eq!(
            m.init_producer_id(60_000, None, None, T, &config()),
            Err(TxnError::NeedsProducerId)
        );
        let next = written(m.init_producer_id(60_000, None, Some(99), T, &config()));
        assert_eq!((next.producer_id, next.producer_epoch), (99, 0));
        assert_eq!(next.previous_producer_id, 7);
        // A retry from the old id's last epoch is recognised.
        let retry = ExpectedProducer {
            producer_id: 7,
            producer_epoch: MAX_EPOCH,
        };
        assert_eq!(
            next.init_producer_id(60_000, Some(retry), None, T, &config()),
            Ok(Step::Reply)
        );
    }

    #[test]
    fn timeouts_and_bad_requests() {
        let c = config();
        for bad in [0, -5, c.max_timeout_ms + 1] {
            assert_eq!(
                new_id("tx", 1, bad, T, &c).unwrap_err().code(),
                ErrorCode::InvalidTransactionTimeout
            );
        }
        let m = written(fresh().add_partitions(7, 0, &[tp("a", 0)], T));
        assert_eq!(m.timed_out(T + 60_000), None);
        let aborted = m.timed_out(T + 60_001).unwrap();
        assert_eq!(
            (aborted.state, aborted.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        // Ending an empty transaction is refused; so is anything mid-write.
        assert_eq!(
            fresh().end(7, 0, true, T).unwrap_err().code(),
            ErrorCode::InvalidTxnState
        );
        let mut busy = m.clone();
        busy.pending = Some(TxnState::PrepareCommit);
        assert_eq!(
            busy.end(7, 0, true, T).unwrap_err().code(),
            ErrorCode::ConcurrentTransactions
        );
        assert_eq!(busy.timed_out(T + 100_000), None);
    }

    #[test]
    fn records_round_trip_and_dead_ids_are_tombstones() {
        let m = written(fresh().add_partitions(7, 0, &[tp("a", 0), tp("b", 3)], T));
        let (key, value) = m.to_record();
        assert_eq!(
            decode_record(&key, value.as_deref()).unwrap(),
            TxnEntry::Txn("tx".into(), Some(m.clone()))
        );
        let dead = m.to(TxnState::Dead, T);
        let (key, value) = dead.to_record();
        assert_eq!(value, None);
        assert_eq!(
            decode_record(&key, None).unwrap(),
            TxnEntry::Txn("tx".into(), None)
        );
        let (key, value) = owner_record(3, 2, 9);
        assert_eq!(
            decode_record(&key, value.as_deref()).unwrap(),
            TxnEntry::Owner {
                coordinator_id: 2,
                owner_epoch: 9
            }
        );
        assert!(decode_record(b"\xff\xff", None).is_err());
        // Kafka's partitioning of transactional ids (Java's hashCode).
        assert_eq!(partition_for("tx", 50), partition_for("tx", 50));
    }

    #[test]
    fn idle_ids_expire_but_open_transactions_do_not() {
        let c = TxnConfig {
            id_expiration_ms: 1000,
            ..TxnConfig::default()
        };
        let m = fresh();
        assert_eq!(m.expired(T + 1000, &c), None);
        assert_eq!(m.expired(T + 1001, &c).unwrap().state, TxnState::Dead);
        let open = written(m.add_partitions(7, 0, &[tp("a", 0)], T));
        assert_eq!(open.expired(T + 10_000, &c), None);
        for id in 0..8 {
            let s = TxnState::from_id(id).unwrap();
            assert_eq!(s.id(), id);
        }
        assert_eq!(TxnState::from_id(8), None);
    }
}
