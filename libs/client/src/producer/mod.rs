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

use std::collections::{HashMap, VecDeque};
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use runnel_records::batch::{BatchBuilder, Compression, Header, RecordBatchMut, add_sequence};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{ClientError, Result};
use crate::partitioner::{next_sticky, partition_for_key};

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

struct OpenBatch {
    builder: BatchBuilder,
    /// What the batch's records count against `buffer.memory` (estimated at `send`).
    accounted: usize,
    created: Instant,
    outcome: BatchOutcome,
    /// The caller's span when the batch opened: its requests are traced under it.
    span: tracing::Span,
}

/// An idempotent producer's id and epoch (from InitProducerId, the epoch bumped by the producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    id: i64,
    epoch: i16,
}

struct ReadyBatch {
    bytes: Bytes,
    records: i64,
    accounted: usize,
    created: Instant,
    outcome: BatchOutcome,
    span: tracing::Span,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    in_flight: bool,
    retry_at: Option<Instant>,
    /// Why the last attempt failed, for the error if the batch expires.
    last_error: Option<ClientError>,
    /// Idempotence: the identity this partition's batches are numbered
    /// under and the sequence number of the next record.
    sequence: Option<(Identity, i32)>,
}

/// One topic's partition queues (indexed by partition) and its sticky partition.
struct TopicQueues {
    name: Arc<str>,
    partitions: Vec<PartitionQueue>,
    sticky: Option<i32>,
    /// The partition count as of metadata `generation`.
    partition_count: i32,
    generation: u64,
}

impl TopicQueues {
    fn new(name: &str) -> Self {
        TopicQueues {
            name: Arc::from(name),
            partitions: Vec::new(),
            sticky: None,
            partition_count: 0,
            generation: 0,
        }
    }

    fn queue(&mut self, partition: i32) -> &mut PartitionQueue {
        queue_at(&mut self.partitions, partition)
    }
}

/// The queue of `partition`, made if missing.
fn queue_at(queues: &mut Vec<PartitionQueue>, partition: i32) -> &mut PartitionQueue {
    let i = partition as usize;
    if queues.len() <= i {
        queues.resize_with(i + 1, PartitionQueue::default);
    }
    &mut queues[i]
}

#[derive(Default)]
struct Accumulator {
    /// By topic name (hashbrown for lookups by `&str` that hash once, with a fast hasher).
    topics: hashbrown::HashMap<Arc<str>, TopicQueues>,
    /// Bytes accepted and not yet acknowledged.
    buffered: usize,
    /// Close every open batch now (flush, close).
    flushing: bool,
    closed: bool,
    /// The idempotent producer's identity, once known (None when not idempotent).
    identity: Option<Identity>,
}

impl Accumulator {
    fn queues(&self) -> impl Iterator<Item = &PartitionQueue> {
        self.topics.values().flat_map(|t| t.partitions.iter())
    }

    /// Nothing open, queued or in flight.
    fn idle(&self) -> bool {
        self.queues()
            .all(|q| q.open.is_none() && q.ready.is_empty() && !q.in_flight)
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

/// Most bytes a new batch allocates up front; larger batches grow as they fill.
const BATCH_PREALLOCATION: usize = 1 << 20;

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
        let shared = Arc::new(Shared {
            failed: std::sync::atomic::AtomicU64::new(0),
            cluster,
            idempotent: config.enable_idempotence && config.acks == Acks::All,
            config,
            acc: Mutex::new(Accumulator::default()),
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
        if shared.idempotent && shared.acc.lock().identity.is_none() {
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

    /// Adds the record to its partition's open batch. Returns its delivery
    /// future and whether the sender must look (a batch opened or closed).
    fn append(
        &self,
        acc: &mut Accumulator,
        record: &ProducerRecord,
        (partitions, generation): (i32, u64),
        size: usize,
        timestamp: i64,
    ) -> (DeliveryFuture, bool) {
        let config = &self.shared.config;
        let identity = acc.identity;
        acc.buffered += size;
        let queues = acc
            .topics
            .entry_ref(record.topic.as_str())
            .or_insert_with(|| TopicQueues::new(&record.topic));
        queues.partition_count = partitions;
        queues.generation = generation;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => {
                // KIP-480: null-key records stick to one partition until its
                // batch is done; a record that would start a new batch moves on.
                let current = *queues
                    .sticky
                    .get_or_insert_with(|| next_sticky(None, partitions));
                let fits = queues
                    .partitions
                    .get(current as usize)
                    .and_then(|q| q.open.as_ref())
                    .is_some_and(|open| {
                        open.builder.uncompressed_size() + size <= config.batch_size
                            || open.builder.is_empty()
                    });
                if fits {
                    current
                } else {
                    let next = next_sticky(Some(current), partitions);
                    queues.sticky = Some(next);
                    next
                }
            }
        };
        let mut freed = 0;
        let mut wake = false;
        let name = &queues.name;
        let queue = queue_at(&mut queues.partitions, partition);
        if let Some(open) = &queue.open
            && open.builder.uncompressed_size() + size > config.batch_size
            && !open.builder.is_empty()
        {
            freed += close_open(queue, identity);
            wake = true;
        }
        let open = queue.open.get_or_insert_with(|| {
            wake = true;
            OpenBatch {
                outcome: BatchOutcome::new(Arc::clone(name), partition),
                builder: BatchBuilder::with_capacity(
                    config.compression,
                    config.batch_size.min(BATCH_PREALLOCATION),
                ),
                accounted: 0,
                created: Instant::now(),
                span: tracing::Span::current(),
            }
        });
        let index = open.builder.len() as i64;
        open.accounted += size;
        open.builder.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        let future = DeliveryFuture {
            batch: Arc::clone(&open.outcome.0),
            index,
            timestamp,
        };
        if open.builder.uncompressed_size() >= config.batch_size {
            freed += close_open(queue, identity);
            wake = true;
        }
        acc.buffered = acc.buffered.saturating_sub(freed);
        (future, wake)
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

/// Moves a partition's open batch to its ready queue, encoding it (numbered
/// for an idempotent producer). Returns the `buffer.memory` bytes freed when
/// the batch cannot be encoded and fails.
fn close_open(queue: &mut PartitionQueue, identity: Option<Identity>) -> usize {
    let Some(open) = queue.open.take() else {
        return 0;
    };
    let records = open.builder.len() as i64;
    let mut builder = open.builder;
    if let Some(identity) = identity {
        let seq = match queue.sequence {
            Some((numbered, next)) if numbered == identity => next,
            // A new identity (or epoch) numbers from zero.
            _ => 0,
        };
        builder = builder.producer(identity.id, identity.epoch, seq);
        queue.sequence = Some((identity, add_sequence(seq, records as i32)));
    }
    match builder.build() {
        Ok(bytes) => {
            queue.ready.push_back(ReadyBatch {
                bytes: Bytes::from(bytes),
                records,
                accounted: open.accounted,
                created: open.created,
                outcome: open.outcome,
                span: open.span,
            });
            0
        }
        Err(e) => {
            open.outcome.resolve(Err(ClientError::Invalid(format!(
                "cannot encode the batch: {e}"
            ))));
            open.accounted
        }
    }
}

/// One partition's batches in a request.
struct InFlight {
    topic: Arc<str>,
    partition: i32,
    batches: Vec<ReadyBatch>,
}

async fn run_sender(shared: Arc<Shared>) {
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let (sends, next_wake, done) = collect(&shared);
        for (addr, parts) in sends {
            // Traced under the span of whoever sent the oldest record in it.
            let parent = parts
                .first()
                .and_then(|p| p.batches.first())
                .map_or_else(tracing::Span::none, |b| b.span.clone());
            let span = tracing::info_span!(parent: &parent, "produce", broker = %addr, partitions = parts.len());
            requests.spawn(tracing::Instrument::instrument(
                send_request(Arc::clone(&shared), addr, parts),
                span,
            ));
        }
        if done && requests.is_empty() {
            return;
        }
        let deadline = next_wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            () = shared.wake.notified() => {}
            Some(_) = requests.join_next() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

type Sends = Vec<(String, Vec<InFlight>)>;

/// Closes lingering batches, fails expired ones, and takes what can be sent
/// now, grouped by leader. Returns when to look again and whether the
/// producer is closed and drained.
fn collect(shared: &Shared) -> (Sends, Option<Instant>, bool) {
    let config = &shared.config;
    let now = Instant::now();
    let mut acc = shared.acc.lock();
    let flushing = acc.flushing || acc.closed;
    let identity = acc.identity;
    let mut renumber = Vec::new();
    let mut by_leader: HashMap<String, Vec<InFlight>> = HashMap::new();
    let mut next_wake: Option<Instant> = None;
    let mut wake_at = |t: Instant| next_wake = Some(next_wake.map_or(t, |n| n.min(t)));
    let mut need_metadata = Vec::new();
    let mut freed = 0usize;
    let queues = acc.topics.iter_mut().flat_map(|(topic, t)| {
        t.partitions
            .iter_mut()
            .enumerate()
            .map(move |(p, q)| (topic, p as i32, q))
    });
    for (topic, partition, queue) in queues {
        if let Some(open) = &queue.open {
            if flushing || now >= open.created + config.linger {
                freed += close_open(queue, identity);
            } else {
                wake_at(open.created + config.linger);
            }
        }
        // Expired batches fail; they never reach a broker.
        while let Some(b) = queue.ready.front() {
            if now < b.created + config.delivery_timeout || queue.in_flight {
                break;
            }
            let b = queue.ready.pop_front().expect("front exists");
            freed += b.accounted;
            shared
                .failed
                .fetch_add(b.records as u64, std::sync::atomic::Ordering::Relaxed);
            let what = match &queue.last_error {
                Some(e) => format!("delivery to {topic}-{partition} (last error: {e})"),
                None => format!("delivery to {topic}-{partition}"),
            };
            b.outcome.resolve(Err(ClientError::Timeout {
                what,
                ms: config.delivery_timeout.as_millis() as u64,
            }));
            if identity.is_some() {
                renumber.push((Arc::clone(topic), partition));
            }
        }
        if renumber
            .last()
            .is_some_and(|(t, p)| *p == partition && Arc::ptr_eq(t, topic))
        {
            // Its batches are renumbered below, under a new epoch; send them next round.
            wake_at(now);
            continue;
        }
        if queue.in_flight || queue.ready.is_empty() {
            continue;
        }
        if let Some(t) = queue.retry_at {
            if now < t {
                wake_at(t);
                continue;
            }
            queue.retry_at = None;
        }
        let Some((_, addr)) = shared.cluster.leader_addr(topic, partition) else {
            need_metadata.push(topic.to_string());
            queue.retry_at = Some(now + config.retry_backoff);
            wake_at(now + config.retry_backoff);
            continue;
        };
        let mut batches = Vec::new();
        let mut bytes = 0;
        while let Some(b) = queue.ready.front() {
            if !batches.is_empty() && bytes + b.bytes.len() > config.max_request_size {
                break;
            }
            bytes += b.bytes.len();
            batches.push(queue.ready.pop_front().expect("front exists"));
        }
        queue.in_flight = true;
        by_leader.entry(addr).or_default().push(InFlight {
            topic: Arc::clone(topic),
            partition,
            batches,
        });
    }
    renumber.dedup();
    for (topic, partition) in renumber {
        bump_epoch(&mut acc, &topic, partition);
    }
    acc.buffered = acc.buffered.saturating_sub(freed);
    let done = acc.closed && acc.idle();
    drop(acc);
    if freed > 0 {
        shared.progress.notify_waiters();
    }
    if !need_metadata.is_empty() {
        need_metadata.sort();
        need_metadata.dedup();
        let cluster = Arc::clone(&shared.cluster);
        tokio::spawn(async move {
            let _ = cluster.refresh(&need_metadata, false).await;
        });
    }
    (by_leader.into_iter().collect(), next_wake, done)
}

async fn send_request(shared: Arc<Shared>, addr: String, parts: Vec<InFlight>) {
    let config = &shared.config;
    let request = pb::ProduceRequest {
        acks: config.acks.wire() as i32,
        timeout_ms: config
            .delivery_timeout
            .as_millis()
            .min(u128::from(u32::MAX)) as u32,
        partitions: parts
            .iter()
            .map(|p| pb::ProducePartition {
                topic: p.topic.to_string(),
                partition: p.partition,
                records: concat(&p.batches),
            })
            .collect(),
    };
    let response = match shared.cluster.broker_at(&addr) {
        Ok(mut client) => client
            .produce(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ClientError::from_status(&addr, s)),
        Err(e) => Err(e),
    };
    type Outcome = std::result::Result<(i64, Vec<i64>, i64), ClientError>;
    let mut results: HashMap<(String, i32), Outcome> = HashMap::new();
    match response {
        Ok(r) => {
            for p in r.partitions {
                let outcome = if p.error_code() == ErrorCode::None {
                    Ok((p.base_offset, p.batch_base_offsets, p.log_append_time_ms))
                } else {
                    Err(ClientError::server(p.error_code(), p.error_message))
                };
                results.insert((p.topic, p.partition), outcome);
            }
        }
        Err(e) => {
            for p in &parts {
                results.insert((p.topic.to_string(), p.partition), Err(e.clone()));
            }
        }
    }
    let mut refresh = Vec::new();
    let mut freed = 0;
    {
        let mut acc = shared.acc.lock();
        let now = Instant::now();
        for part in parts {
            let outcome = results
                .remove(&(part.topic.to_string(), part.partition))
                .unwrap_or_else(|| {
                    Err(ClientError::server(
                        ErrorCode::UnknownServerError,
                        "no result for the partition",
                    ))
                });
            let queue = acc
                .topics
                .entry_ref(&*part.topic)
                .or_insert_with(|| TopicQueues::new(&part.topic))
                .queue(part.partition);
            queue.in_flight = false;
            match outcome {
                Ok((base, batch_offsets, append_time)) => {
                    queue.last_error = None;
                    // Offsets are consecutive unless some batches were retries
                    // the leader already had (then each batch has its own).
                    let listed = batch_offsets.len() == part.batches.len();
                    let mut next = base;
                    for (i, b) in part.batches.into_iter().enumerate() {
                        freed += b.accounted;
                        let offset = match (base < 0, listed) {
                            (true, _) => -1,
                            (false, true) => batch_offsets[i],
                            (false, false) => next,
                        };
                        b.outcome.resolve(Ok((offset, append_time)));
                        next += b.records;
                    }
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(topic = %part.topic, partition = part.partition, error = %e, "produce will be retried");
                    queue.last_error = Some(e);
                    refresh.push(part.topic.to_string());
                    queue.retry_at = Some(now + config.retry_backoff);
                    // Back at the front, in order, ahead of newer batches.
                    for b in part.batches.into_iter().rev() {
                        queue.ready.push_front(b);
                    }
                }
                Err(e) => {
                    for b in part.batches {
                        freed += b.accounted;
                        shared
                            .failed
                            .fetch_add(b.records as u64, std::sync::atomic::Ordering::Relaxed);
                        b.outcome.resolve(Err(e.clone()));
                    }
                    if shared.idempotent {
                        bump_epoch(&mut acc, &part.topic, part.partition);
                    }
                }
            }
        }
        acc.buffered = acc.buffered.saturating_sub(freed);
    }
    if !refresh.is_empty() {
        refresh.sort();
        refresh.dedup();
        let _ = shared.cluster.refresh(&refresh, false).await;
    }
    shared.progress.notify_waiters();
    shared.wake.notify_one();
}

/// After a batch of `topic`-`partition` failed for good its successors
/// cannot follow its sequence numbers: the producer moves to a new epoch
/// (every partition's next batch starts again at 0) and renumbers this
/// partition's unsent batches under it (Kafka's epoch bump, KIP-360).
fn bump_epoch(acc: &mut Accumulator, topic: &str, partition: i32) {
    let Some(old) = acc.identity else {
        return;
    };
    let Some(epoch) = old.epoch.checked_add(1) else {
        tracing::warn!(
            producer_id = old.id,
            "producer epoch exhausted; sequences not reset"
        );
        return;
    };
    let identity = Identity { id: old.id, epoch };
    acc.identity = Some(identity);
    tracing::debug!(
        producer_id = old.id,
        epoch,
        topic,
        partition,
        "producer epoch bumped after a failed batch"
    );
    let Some(queue) = acc
        .topics
        .get_mut(topic)
        .and_then(|t| t.partitions.get_mut(partition as usize))
    else {
        return;
    };
    let mut seq = 0i32;
    for b in &mut queue.ready {
        let mut bytes = bytes::BytesMut::from(&b.bytes[..]);
        if let Ok((mut batch, _)) = RecordBatchMut::new(&mut bytes) {
            batch.set_producer(identity.id, identity.epoch, seq);
        }
        b.bytes = bytes.freeze();
        seq = add_sequence(seq, b.records as i32);
    }
    queue.sequence = Some((identity, seq));
}

fn concat(batches: &[ReadyBatch]) -> Bytes {
    if let [one] = batches {
        return one.bytes.clone();
    }
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.bytes.len()).sum());
    for b in batches {
        out.extend_from_slice(&b.bytes);
    }
    Bytes::from(out)
}
