//! The producer: partitions, batches, compresses and sends records, and
//! tells each caller where its record landed.
//!
//! Records accumulate per partition in an open batch (`batch.size`,
//! `linger.ms`); closed batches wait in the partition's queue. A sender task
//! sends each leader one request holding every ready partition's queued
//! batches (up to `max.request.size`), with at most one request in flight per
//! partition, so retries never reorder a partition's records. Retriable
//! errors (leader moved, broker unreachable, timeouts) refresh the metadata
//! and retry after `retry.backoff.ms` until `delivery.timeout.ms` runs out.
//!
//! With `enable.idempotence` (the default, with `acks=all`) the producer
//! gets a producer id from a broker and numbers each partition's records;
//! a retried batch keeps its numbers, so a leader that already has it
//! answers with its original offsets instead of storing it twice. If a batch
//! fails for good, the producer bumps its epoch and renumbers the
//! partition's unsent batches from zero (as Kafka's does, KIP-360).
//!
//! With a `transactional.id` the producer is transactional, as Kafka's:
//! `init_transactions`, then `begin_transaction`, `send`,
//! `send_offsets_to_transaction`, and `commit_transaction` or
//! `abort_transaction` (see `transaction.rs`).
//!
//! This file is the API ([`Producer`], its config, the delivery futures);
//! `accumulator.rs` batches records per partition within `buffer.memory`,
//! `sender.rs` drains the batches to the leaders, retries them and
//! renumbers them after an epoch bump, and `transaction.rs` holds the
//! transactional producer.
//!
//! ```no_run
//! # async fn demo() -> runnel_client::Result<()> {
//! use runnel_client::{ClientConfig, Producer, ProducerConfig, ProducerRecord};
//!
//! let producer = Producer::new(ClientConfig::new("127.0.0.1:9094"), ProducerConfig::default());
//! let delivery = producer.send(ProducerRecord::new("orders", "order-42 created").key("order-42")).await?;
//! let metadata = delivery.await?;
//! println!("stored at {}-{} offset {}", metadata.topic, metadata.partition, metadata.offset);
//! producer.close().await?;
//! # Ok(()) }
//! ```

mod accumulator;
mod sender;
mod transaction;

pub use transaction::ConsumerGroupMetadata;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use runnel_records::batch::{Compression, Header};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{ClientError, Result};

use self::accumulator::{Accumulator, Identity};
use self::sender::run_sender;

/// How many replicas must have a record before it is acknowledged (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: do not wait.
    None,
    /// `acks=1`: the leader has it.
    Leader,
    /// `acks=all`: every in-sync replica has it.
    All,
}

impl Acks {
    /// Parses Kafka's spelling: `0`, `1`, `all` (or `-1`).
    pub fn parse(s: &str) -> Option<Acks> {
        match s {
            "0" => Some(Acks::None),
            "1" => Some(Acks::Leader),
            "all" | "-1" => Some(Acks::All),
            _ => None,
        }
    }

    fn wire(self) -> pb::Acks {
        match self {
            Acks::None => pb::Acks::None,
            Acks::Leader => pb::Acks::Leader,
            Acks::All => pb::Acks::All,
        }
    }
}

/// Producer settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `acks` (default all).
    pub acks: Acks,
    /// `batch.size`: a partition's batch is sent once it reaches this many bytes.
    pub batch_size: usize,
    /// `linger.ms`: longest a batch waits to fill.
    pub linger: Duration,
    /// `compression.type`.
    pub compression: Compression,
    /// `retry.backoff.ms`.
    pub retry_backoff: Duration,
    /// `delivery.timeout.ms`: a record not acknowledged by then fails.
    pub delivery_timeout: Duration,
    /// `max.request.size`: most bytes of batches per partition per request.
    pub max_request_size: usize,
    /// `buffer.memory`: bytes waiting to be sent before `send` waits.
    pub buffer_memory: usize,
    /// Create topics that do not exist (if the broker allows it).
    pub allow_auto_topic_creation: bool,
    /// `enable.idempotence` (default true): retries never duplicate or
    /// reorder records. Takes effect with `acks=all` only; with other acks
    /// the producer is not idempotent, as Kafka's is when acks is set lower
    /// and idempotence is not asked for explicitly.
    pub enable_idempotence: bool,
    /// `transactional.id`: makes the producer transactional (and
    /// idempotent); see [`Producer::init_transactions`].
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms` (default 60 s): the coordinator aborts a
    /// transaction left open longer.
    pub transaction_timeout: Duration,
    /// `max.block.ms` (default 60 s): how long a transactional call waits
    /// for the coordinator.
    pub max_block: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_size: 16_384,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(120),
            max_request_size: 1_048_576,
            buffer_memory: 32 * 1024 * 1024,
            allow_auto_topic_creation: true,
            enable_idempotence: true,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
            max_block: Duration::from_secs(60),
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: String,
    /// Partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// Key (`None`: no key).
    pub key: Option<Bytes>,
    /// Value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Timestamp in ms; `None`: now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and no key.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<Bytes>, value: Option<impl Into<Bytes>>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the timestamp.
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }
}

/// Where an acknowledged record is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset (-1 with `acks=0`).
    pub offset: i64,
    /// The record's timestamp (the broker's for `LogAppendTime` topics).
    pub timestamp: i64,
}

/// What a batch's send came to: its base offset and log-append time, or why it failed.
type Outcome = std::result::Result<(i64, i64), ClientError>;

/// A batch's outcome, set once and shared by the delivery futures of all its records.
#[derive(Debug)]
struct BatchResult {
    topic: Arc<str>,
    partition: i32,
    outcome: std::sync::OnceLock<Outcome>,
    done: Notify,
}

/// The producer's end of a [`BatchResult`]: resolves it once, and with
/// `Closed` if the batch is dropped unresolved (the producer went away).
#[derive(Debug)]
struct BatchOutcome(Arc<BatchResult>);

impl BatchOutcome {
    fn new(topic: Arc<str>, partition: i32) -> Self {
        BatchOutcome(Arc::new(BatchResult {
            topic,
            partition,
            outcome: std::sync::OnceLock::new(),
            done: Notify::new(),
        }))
    }

    fn resolve(&self, outcome: Outcome) {
        let _ = self.0.outcome.set(outcome);
        self.0.done.notify_waiters();
    }
}

impl Drop for BatchOutcome {
    fn drop(&mut self) {
        if self.0.outcome.get().is_none() {
            self.resolve(Err(ClientError::Closed));
        }
    }
}

/// Resolves when the record is acknowledged (or fails).
#[derive(Debug)]
pub struct DeliveryFuture {
    batch: Arc<BatchResult>,
    index: i64,
    timestamp: i64,
}

impl IntoFuture for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    type IntoFuture = BoxFuture<'static, Result<RecordMetadata>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let outcome = loop {
                // Created before the check, so a resolve in between still wakes it.
                let done = self.batch.done.notified();
                if let Some(outcome) = self.batch.outcome.get() {
                    break outcome.clone();
                }
                done.await;
            };
            let (base, append_time) = outcome?;
            Ok(RecordMetadata {
                topic: self.batch.topic.to_string(),
                partition: self.batch.partition,
                offset: if base < 0 { -1 } else { base + self.index },
                timestamp: if append_time >= 0 {
                    append_time
                } else {
                    self.timestamp
                },
            })
        })
    }
}

struct Shared {
    /// Records whose batch failed for good (for tools that do not await every delivery).
    failed: std::sync::atomic::AtomicU64,
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    /// Wakes the sender: new data, a finished request, a flush.
    wake: Notify,
    /// Wakes `send` callers waiting for buffer space and `flush` callers.
    progress: Notify,
    /// `enable.idempotence` in effect (it needs `acks=all`).
    idempotent: bool,
    /// One InitProducerId at a time.
    init: tokio::sync::Mutex<()>,
    /// With a `transactional.id`: the transaction's state and coordinator.
    txn: Option<Arc<transaction::Transactions>>,
}

impl Shared {
    /// Fails `batch` for good with `e`: counts its records as failed and
    /// resolves its delivery futures. Returns the `buffer.memory` bytes freed.
    fn fail_batch(&self, batch: accumulator::ReadyBatch, e: &ClientError) -> usize {
        self.failed
            .fetch_add(batch.records as u64, std::sync::atomic::Ordering::Relaxed);
        batch.outcome.resolve(Err(e.clone()));
        batch.accounted
    }
}

/// Sends records to a Runnel cluster.
pub struct Producer {
    shared: Arc<Shared>,
    sender: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Producer {
    /// A producer for the cluster at `client.bootstrap`.
    pub fn new(client: ClientConfig, config: ProducerConfig) -> Producer {
        Self::with_cluster(Cluster::new(client), config)
    }

    /// A producer sharing connections with other clients of `cluster`.
    pub fn with_cluster(cluster: Arc<Cluster>, config: ProducerConfig) -> Producer {
        let txn = config
            .transactional_id
            .clone()
            .map(|id| Arc::new(transaction::Transactions::new(id)));
        let shared = Arc::new(Shared {
            failed: std::sync::atomic::AtomicU64::new(0),
            cluster,
            idempotent: txn.is_some() || (config.enable_idempotence && config.acks == Acks::All),
            acc: Mutex::new(Accumulator {
                transactional: txn.is_some(),
                ..Accumulator::default()
            }),
            txn,
            config,
            wake: Notify::new(),
            progress: Notify::new(),
            init: tokio::sync::Mutex::new(()),
        });
        let sender = tokio::spawn(run_sender(Arc::clone(&shared)));
        Producer { shared, sender }
    }

    /// Queues a record; the returned future resolves once it is acknowledged.
    ///
    /// Waits only for metadata (the first record of a topic) and for buffer
    /// space (`buffer.memory`) when the cluster falls behind.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let shared = &self.shared;
        let size = 64
            + record.key.as_ref().map_or(0, Bytes::len)
            + record.value.as_ref().map_or(0, Bytes::len)
            + record
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len) + 8)
                .sum::<usize>();
        if size > shared.config.max_request_size {
            return Err(ClientError::server(
                ErrorCode::MessageTooLarge,
                format!(
                    "the record is {size} bytes, larger than max.request.size {}",
                    shared.config.max_request_size
                ),
            ));
        }
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        // Read before the metadata is looked at: a refresh in between makes the cache stale, not wrong.
        let generation = shared.cluster.generation();
        let mut looked_up = None;
        if let Some(txn) = &shared.txn {
            txn.check_open()?;
            if let Some(e) = shared.acc.lock().txn.error.clone() {
                return Err(e);
            }
        } else if shared.idempotent && shared.acc.lock().identity.is_none() {
            // The topic first: an unreachable cluster or a missing topic fails
            // fast here, as without idempotence.
            looked_up = Some(self.partition_count(&record.topic).await?);
            self.init_identity().await?;
        }
        loop {
            let progressed = shared.progress.notified();
            let partitions = {
                let mut acc = shared.acc.lock();
                if acc.closed {
                    return Err(ClientError::Closed);
                }
                let cached = acc
                    .topics
                    .get(record.topic.as_str())
                    .filter(|t| t.generation == generation && t.partition_count > 0)
                    .map(|t| t.partition_count);
                match cached.or(looked_up) {
                    Some(partitions) => {
                        if let Some(p) = record.partition
                            && !(0..partitions).contains(&p)
                        {
                            return Err(ClientError::server(
                                ErrorCode::UnknownTopicOrPartition,
                                format!(
                                    "topic {} has no partition {p} (it has {partitions})",
                                    record.topic
                                ),
                            ));
                        }
                        if acc.buffered + size <= shared.config.buffer_memory || acc.buffered == 0 {
                            let (future, wake) = self.append(
                                &mut acc,
                                &record,
                                (partitions, generation),
                                size,
                                timestamp,
                            );
                            drop(acc);
                            // The sender only needs to hear of a batch to send or a linger to time.
                            if wake {
                                shared.wake.notify_one();
                            }
                            return Ok(future);
                        }
                        Some(partitions)
                    }
                    None => None,
                }
            };
            match partitions {
                // Buffer full: the sender frees space as requests complete.
                Some(_) => progressed.await,
                None => looked_up = Some(self.partition_count(&record.topic).await?),
            }
        }
    }

    /// Gets a producer id from a broker (Kafka's InitProducerId), retrying
    /// retriable failures within `delivery.timeout.ms`.
    async fn init_identity(&self) -> Result<()> {
        let shared = &self.shared;
        let _one = shared.init.lock().await;
        if shared.acc.lock().identity.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + shared.config.delivery_timeout;
        let mut last_error = None;
        loop {
            for addr in shared.cluster.broker_addrs() {
                let request = pb::InitProducerIdRequest {
                    transactional_id: String::new(),
                    transaction_timeout_ms: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                };
                let answer = match shared.cluster.broker_at(&addr) {
                    Ok(mut client) => client
                        .init_producer_id(request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| ClientError::from_status(&addr, s)),
                    Err(e) => Err(e),
                };
                let error = match answer {
                    Ok(r) if r.error_code() == ErrorCode::None => {
                        let epoch = i16::try_from(r.producer_epoch).map_err(|_| {
                            ClientError::Invalid(format!(
                                "broker {addr} gave producer epoch {}",
                                r.producer_epoch
                            ))
                        })?;
                        tracing::debug!(
                            producer_id = r.producer_id,
                            epoch,
                            "idempotent producer initialised"
                        );
                        shared.acc.lock().identity = Some(Identity {
                            id: r.producer_id,
                            epoch,
                        });
                        return Ok(());
                    }
                    Ok(r) => ClientError::server(r.error_code(), r.error_message),
                    Err(e) => e,
                };
                if !error.is_retriable() {
                    return Err(error);
                }
                last_error = Some(error);
            }
            if Instant::now() + shared.config.retry_backoff >= deadline {
                return Err(ClientError::Timeout {
                    what: match last_error {
                        Some(e) => format!("getting a producer id (last error: {e})"),
                        None => "getting a producer id".into(),
                    },
                    ms: shared.config.delivery_timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(shared.config.retry_backoff).await;
        }
    }

    /// The topic's partition count from the metadata, fetched if unknown.
    async fn partition_count(&self, topic: &str) -> Result<i32> {
        let cluster = &self.shared.cluster;
        let n = match cluster.partition_count(topic) {
            Some(n) => n,
            None => cluster
                .topic(topic, self.shared.config.allow_auto_topic_creation)
                .await?
                .partitions
                .len(),
        };
        if n == 0 {
            return Err(ClientError::server(
                ErrorCode::LeaderNotAvailable,
                format!("topic {topic} has no partitions yet"),
            ));
        }
        Ok(n as i32)
    }

    /// Records that failed for good so far (expired or refused), whether or
    /// not anyone awaits their delivery futures.
    pub fn failed_records(&self) -> u64 {
        self.shared
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends everything queued and waits until all of it is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        self.shared.acc.lock().flushing = true;
        self.shared.wake.notify_one();
        loop {
            let progressed = self.shared.progress.notified();
            {
                let acc = self.shared.acc.lock();
                if acc.idle() {
                    drop(acc);
                    self.shared.acc.lock().flushing = false;
                    return Ok(());
                }
            }
            progressed.await;
        }
    }

    /// Flushes, then stops the producer.
    pub async fn close(self) -> Result<()> {
        let flushed = self.flush().await;
        self.shared.acc.lock().closed = true;
        self.shared.wake.notify_one();
        let _ = self.sender.await;
        flushed
    }
}
