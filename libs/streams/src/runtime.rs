//! Running a topology on a cluster (Kafka's `KafkaStreams`): stream
//! threads that are members of the application's consumer group, tasks
//! per input partition with their stores restored from changelogs, and
//! commits at least once or exactly once.
//!
//! A task is one partition number: partition `p` of every source topic
//! and of every repartition topic, with the stores those records update.
//! Source topics must therefore have one partition count (Kafka demands as
//! much of topics that are joined), and the group assigns with the range
//! assignor, which gives a member partition `p` of every topic together.
//! Internal topics (repartition, changelog) are created with that count.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use runnel_client::partitioner::partition_for_key;
use runnel_client::{
    Admin, ClientConfig, ClientError, Cluster, Consumer, ConsumerConfig, ConsumerRecord,
    DeliveryFuture, ErrorCode, GroupConfig, GroupConsumer, Header, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use runnel_common::backoff::Backoff;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{OnDeserializationError, ProcessingGuarantee, StreamsConfig};
use crate::error::StreamsError;
use crate::processor::PunctuationType;
use crate::serde::Serde;
use crate::store::{KeyValueStore, ReadStore, RedbStore, StoreReader};
use crate::topology::{Ctx, OutputRecord, Rec, Topology, changelog_topic};
use crate::window::{window_store_key, window_store_time};

/// What one task has done, as [`StreamsApp::metrics`] reports it (Kafka
/// Streams' task-level metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskMetrics {
    /// The task id, `0_<partition>` as Kafka Streams names it.
    pub task: String,
    /// Input records processed (`process-total`).
    pub records_processed: u64,
    /// Records dropped for arriving after their window closed
    /// (`dropped-records-total` for late records).
    pub dropped_late_records: u64,
    /// Input records skipped because they did not deserialize (with
    /// [`OnDeserializationError::LogAndContinue`]).
    pub skipped_records: u64,
    /// Changelog records restored into the task's stores when it opened.
    pub restored_records: u64,
    /// Changelog records the restore had to read when it began.
    pub restore_total: u64,
    /// How long the restore took, in milliseconds (tasks opened together
    /// restore in one pass, and each reports that pass's time).
    pub restore_millis: u64,
    /// Input records behind the end of the task's partitions, as of the
    /// last time the thread looked (every few seconds).
    pub lag: i64,
}

/// Where an application stands (Kafka Streams' `KafkaStreams.State`,
/// simplified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppState {
    /// Threads run (or wait for their first assignment).
    Running,
    /// A thread stopped with this error; the others go on (Kafka's default
    /// uncaught-exception handling replaces the thread; here the caller
    /// decides, by closing and starting again).
    Failed(String),
    /// Closed.
    Stopped,
}

/// Where a key's task runs, as [`StreamsApp::query_metadata_for_key`]
/// finds it (Kafka's `KeyQueryMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQueryMetadata {
    /// The task (partition) the key belongs to.
    pub partition: i32,
    /// The `application.server` of the instance running it (`None`: no
    /// instance runs it now, or it set no `application.server`).
    pub host: Option<String>,
    /// Whether this instance runs it.
    pub local: bool,
}

/// The subscription user data that carries `application.server`.
const SERVER_PREFIX: &[u8] = b"application.server=";

/// What the threads and the handle share.
#[derive(Default)]
struct Shared {
    metrics: Mutex<BTreeMap<i32, TaskMetrics>>,
    /// The stores of the tasks running here, by (store, partition), for queries.
    stores: Mutex<BTreeMap<(String, i32), StoreReader>>,
    failed: Mutex<Option<String>>,
    stopped: Mutex<bool>,
}

impl Shared {
    /// Forgets task `partition`: it no longer runs here.
    fn forget(&self, partition: i32) {
        self.metrics.lock().remove(&partition);
        self.stores.lock().retain(|(_, p), _| *p != partition);
    }
}

/// A running application: its stream threads on one instance.
pub struct StreamsApp {
    shared: Arc<Shared>,
    application_id: String,
    /// The source topics' partition count (the number of tasks).
    partitions: i32,
    /// The external source topics (whose partitions name tasks in the group).
    sources: Vec<String>,
    cluster: Arc<Cluster>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<Result<(), StreamsError>>>,
}

impl std::fmt::Debug for StreamsApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsApp")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl StreamsApp {
    /// Checks the source topics, creates the internal topics, and starts
    /// `num.stream.threads` threads running `topology` on the cluster
    /// `client` names.
    pub async fn start(
        topology: Topology,
        config: StreamsConfig,
        client: ClientConfig,
    ) -> Result<StreamsApp, StreamsError> {
        let cluster = Cluster::new(client);
        let partitions = prepare_topics(&topology, &config, &cluster).await?;
        tracing::info!(application = %config.application_id, partitions, threads = config.num_stream_threads, "starting stream threads");
        let sources = topology
            .input_topics(&config.application_id)
            .into_iter()
            .filter(|(_, internal)| !internal)
            .map(|(t, _)| t)
            .collect();
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = watch::channel(false);
        // The global tables load before any task runs: a join must not
        // miss a table entry that was there when the application started.
        let globals = crate::global::open(&topology, &config, &cluster, stopped.clone()).await?;
        let readers = Arc::new(globals.readers);
        let topology = Arc::new(topology);
        let process = uuid::Uuid::new_v4();
        let mut threads: Vec<JoinHandle<Result<(), StreamsError>>> = (0..config.num_stream_threads.max(1))
            .map(|i| {
                let thread = StreamThread::new(
                    i,
                    process,
                    Arc::clone(&topology),
                    config.clone(),
                    Arc::clone(&cluster),
                    Arc::clone(&shared),
                    Arc::clone(&readers),
                );
                let shared = Arc::clone(&shared);
                let stopped = stopped.clone();
                let instance = process.simple().to_string();
                let span = tracing::info_span!("stream_thread", application = %config.application_id, instance = %&instance[..8], thread = i);
                tokio::spawn(
                    async move {
                        let result = thread.run(stopped).await;
                        if let Err(e) = &result {
                            tracing::error!(error = %e, "stream thread failed");
                            shared.failed.lock().get_or_insert_with(|| e.to_string());
                        }
                        result
                    }
                    .instrument(span),
                )
            })
            .collect();
        if let Some(follower) = globals.follower {
            let shared = Arc::clone(&shared);
            let span = tracing::info_span!("global_thread", application = %config.application_id);
            threads.push(tokio::spawn(
                async move {
                    let result = follower.await;
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "global table thread failed");
                        shared.failed.lock().get_or_insert_with(|| e.to_string());
                    }
                    result
                }
                .instrument(span),
            ));
        }
        Ok(StreamsApp {
            shared,
            application_id: config.application_id,
            partitions,
            sources,
            cluster,
            stop,
            threads,
        })
    }

    /// Where the application stands.
    pub fn state(&self) -> AppState {
        if let Some(e) = self.shared.failed.lock().clone() {
            AppState::Failed(e)
        } else if *self.shared.stopped.lock() {
            AppState::Stopped
        } else {
            AppState::Running
        }
    }

    /// Each task's metrics on this instance, by task id.
    pub fn metrics(&self) -> Vec<TaskMetrics> {
        self.shared.metrics.lock().values().cloned().collect()
    }

    /// Which task holds `key` of store `store`, and which instance runs
    /// it (Kafka's `queryMetadataForKey`): the key's partition as the
    /// default partitioner puts it, and the `application.server` of the
    /// group member that owns that partition now.
    pub async fn query_metadata_for_key<K>(
        &self,
        store: &str,
        key: &K,
        key_serde: &impl Serde<K>,
    ) -> Result<KeyQueryMetadata, StreamsError> {
        let (_, _, partition) = self.locate(store, key, key_serde)?;
        let local = self
            .shared
            .stores
            .lock()
            .contains_key(&(store.to_owned(), partition));
        let group = Admin::with_cluster(Arc::clone(&self.cluster))
            .describe_group(&self.application_id)
            .await?;
        let host = group
            .members
            .iter()
            .find(|m| {
                m.partitions
                    .iter()
                    .any(|tp| tp.partition == partition && self.sources.contains(&tp.topic))
            })
            .and_then(|m| m.user_data.as_deref())
            .and_then(|d| d.strip_prefix(SERVER_PREFIX))
            .map(|h| String::from_utf8_lossy(h).into_owned());
        Ok(KeyQueryMetadata {
            partition,
            host,
            local,
        })
    }

    /// The value of `key` in store `store` as this instance last committed
    /// it (Kafka's interactive queries on a key-value store). Fails with
    /// [`StreamsError::NotLocal`] when another instance runs the key's task.
    pub fn get<K, V>(
        &self,
        store: &str,
        key: &K,
        key_serde: &impl Serde<K>,
        value_serde: &impl Serde<V>,
    ) -> Result<Option<V>, StreamsError> {
        let (topic, bytes, partition) = self.locate(store, key, key_serde)?;
        self.reader(store, partition)?
            .get(&bytes)?
            .map(|v| value_serde.deserialize(&topic, &v))
            .transpose()
            .map_err(StreamsError::from)
    }

    /// Every entry of store `store` in the tasks this instance runs (keys
    /// and values as bytes, in key order per task).
    pub fn all(&self, store: &str) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        let mut out = Vec::new();
        for r in self.local_readers(store) {
            out.extend(r.all()?);
        }
        Ok(out)
    }

    /// The entries of store `store` in the tasks this instance runs with
    /// keys (as bytes) from `from` (inclusive) to `to` (exclusive), in key
    /// order (Kafka's `ReadOnlyKeyValueStore#range`).
    pub fn range(
        &self,
        store: &str,
        from: &[u8],
        to: &[u8],
    ) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        let mut out = Vec::new();
        for r in self.local_readers(store) {
            out.extend(r.range(from, to)?);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The windows of `key` in the windowed aggregation store `store` that
    /// start from `from_ms` to `to_ms` (both inclusive), as (window start,
    /// value), oldest first (Kafka's `ReadOnlyWindowStore#fetch`). Fails
    /// with [`StreamsError::NotLocal`] when another instance runs the
    /// key's task.
    pub fn fetch_window<K, V>(
        &self,
        store: &str,
        key: &K,
        key_serde: &impl Serde<K>,
        value_serde: &impl Serde<V>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, V)>, StreamsError> {
        let (topic, key, partition) = self.locate(store, key, key_serde)?;
        let reader = self.reader(store, partition)?;
        let from = window_store_key(&key, from_ms.max(0), 0);
        let to = window_store_key(&key, to_ms.saturating_add(1).max(0), 0);
        let mut out = Vec::new();
        for (k, v) in reader.range(&from, &to)? {
            if let Some((start, _)) = window_store_time(&k, &key) {
                out.push((start, value_serde.deserialize(&topic, &v)?));
            }
        }
        Ok(out)
    }

    /// The readers of store `store` of every task this instance runs.
    fn local_readers(&self, store: &str) -> Vec<StoreReader> {
        self.shared
            .stores
            .lock()
            .iter()
            .filter(|((s, _), _)| s == store)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The reader of store `store` of task `partition`, if it runs here.
    fn reader(&self, store: &str, partition: i32) -> Result<StoreReader, StreamsError> {
        self.shared
            .stores
            .lock()
            .get(&(store.to_owned(), partition))
            .cloned()
            .ok_or_else(|| StreamsError::NotLocal {
                store: store.to_owned(),
                partition,
            })
    }

    /// `key` as store `store` holds it: (the store's changelog topic, the
    /// key's bytes, the task it belongs to).
    fn locate<K>(
        &self,
        store: &str,
        key: &K,
        key_serde: &impl Serde<K>,
    ) -> Result<(String, Bytes, i32), StreamsError> {
        let topic = changelog_topic(&self.application_id, store);
        let bytes = key_serde.serialize(&topic, key)?;
        let partition = partition_for_key(&bytes, self.partitions);
        Ok((topic, bytes, partition))
    }

    /// Stops the threads at once, as a crash would: nothing is committed,
    /// the group is not told (it moves the tasks after the session
    /// timeout), an open transaction stays open until the coordinator
    /// times it out. For tests of failover.
    pub fn abort(mut self) {
        for t in self.threads.drain(..) {
            t.abort();
        }
        *self.shared.stopped.lock() = true;
    }

    /// Stops the threads: each commits what it processed, leaves the group
    /// (its tasks move at once) and closes its stores. Returns the first
    /// error a thread stopped with.
    pub async fn close(mut self) -> Result<(), StreamsError> {
        let _ = self.stop.send(true);
        let mut first = None;
        for t in self.threads.drain(..) {
            let result = match t.await {
                Ok(r) => r,
                Err(e) => Err(StreamsError::Thread(e.to_string())),
            };
            if let Err(e) = result {
                first.get_or_insert(e);
            }
        }
        *self.shared.stopped.lock() = true;
        first.map_or(Ok(()), Err)
    }
}

/// `max.poll.records` of the restore consumer.
const RESTORE_MAX_POLL: usize = 10_000;

/// Changelog records per load into a store: enough that a load's sort and
/// transaction are paid rarely, few enough to bound the memory in flight.
const RESTORE_BATCH: usize = 100_000;

/// A changelog partition being restored.
struct Restoring {
    tp: TopicPartition,
    task: i32,
    store: String,
    /// Where the restore stops (the end when it began).
    end: i64,
    /// Which loader thread writes into the store.
    loader: usize,
    /// Records fetched, not yet handed to the loader.
    batch: Vec<(Bytes, Option<Bytes>)>,
    done: bool,
}

impl Restoring {
    /// The batch so far, complete up to `checkpoint`.
    fn load(&mut self, checkpoint: i64, last: bool) -> Load {
        Load {
            store: (self.task, self.store.clone()),
            batch: std::mem::take(&mut self.batch),
            checkpoint,
            last,
        }
    }
}

/// The stores a restore loader writes into, by (task, store name).
type LoadedStores = BTreeMap<(i32, String), Box<dyn KeyValueStore>>;

/// Writes the batches that come through `pending` into `stores`, until
/// the fetch is done; gives the stores back.
fn load_stores(
    mut stores: LoadedStores,
    mut pending: tokio::sync::mpsc::Receiver<Load>,
) -> Result<LoadedStores, StreamsError> {
    let mut loaded: BTreeMap<(i32, String), usize> = BTreeMap::new();
    while let Some(load) = pending.blocking_recv() {
        let Some(store) = stores.get_mut(&load.store) else {
            continue;
        };
        store.load(load.batch, load.checkpoint)?;
        let count = loaded.entry(load.store).or_default();
        *count += 1;
        // Synced now and then, so that a restart in the middle of a long
        // restore does not begin it again.
        if load.last || count.is_multiple_of(16) {
            store.commit(Some(load.checkpoint))?;
        }
    }
    Ok(stores)
}

/// A batch of changelog records for the loader to write into a store.
struct Load {
    /// (task, store name).
    store: (i32, String),
    batch: Vec<(Bytes, Option<Bytes>)>,
    checkpoint: i64,
    /// The partition's last batch: the store is synced after it.
    last: bool,
}

/// How long a thread keeps retrying a call that failed for a reason that
/// passes (a leader moving, a broker restarting) before it gives up.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Runs `call` until it succeeds, fails for good, or [`RETRY_FOR`] passes.
async fn retrying<T, F>(what: &str, mut call: impl FnMut() -> F) -> Result<T, ClientError>
where
    F: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match call().await {
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tracing::debug!(error = %e, "{what} failed; retrying");
                backoff.wait().await;
            }
            other => return other,
        }
    }
}

/// Checks that the source topics exist with one partition count, and
/// creates the internal topics with it (Kafka Streams'
/// `InternalTopicManager`). Returns the partition count.
async fn prepare_topics(
    topology: &Topology,
    config: &StreamsConfig,
    cluster: &Arc<Cluster>,
) -> Result<i32, StreamsError> {
    let admin = Admin::with_cluster(Arc::clone(cluster));
    let app = &config.application_id;
    let mut counts = BTreeMap::new();
    for (topic, internal) in topology.input_topics(app) {
        if internal {
            continue;
        }
        let d = admin.describe_topic(&topic).await.map_err(|e| {
            if e.code() == Some(ErrorCode::UnknownTopicOrPartition) {
                StreamsError::Setup(format!("source topic {topic} does not exist"))
            } else {
                StreamsError::Cluster(e)
            }
        })?;
        counts.insert(topic, d.partitions.len() as i32);
    }
    let distinct: BTreeSet<i32> = counts.values().copied().collect();
    let partitions = match distinct.len() {
        1 => *distinct.first().unwrap_or(&1),
        0 => {
            return Err(StreamsError::Setup(
                "the topology reads no topic".to_owned(),
            ));
        }
        _ => {
            let listed: Vec<String> = counts.iter().map(|(t, n)| format!("{t}: {n}")).collect();
            return Err(StreamsError::Setup(format!(
                "source topics are not co-partitioned (one task reads partition p of every source topic, so they need one partition count): {}",
                listed.join(", ")
            )));
        }
    };
    let mut wanted: Vec<NewTopic> = topology
        .repartition_topics(app)
        .iter()
        .map(|t| NewTopic::new(t.clone()))
        .collect();
    for store in topology.stores() {
        wanted.push(NewTopic::new(changelog_topic(app, store)).config("cleanup.policy", "compact"));
    }
    let wanted: Vec<NewTopic> = wanted
        .into_iter()
        .map(|t| {
            t.partitions(partitions)
                .replication_factor(config.replication_factor)
        })
        .collect();
    if wanted.is_empty() {
        return Ok(partitions);
    }
    let names: Vec<String> = wanted.iter().map(|t| t.name.clone()).collect();
    for (name, result) in admin.create_topics(wanted, false).await? {
        match result {
            Ok(()) => tracing::info!(topic = %name, partitions, "created internal topic"),
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
            Err(e) => return Err(StreamsError::Cluster(e)),
        }
    }
    for name in names {
        let found = admin.describe_topic(&name).await?.partitions.len() as i32;
        if found != partitions {
            return Err(StreamsError::Setup(format!(
                "internal topic {name} has {found} partitions, the source topics {partitions}: delete it (the application's internal topics) or give the sources {found}"
            )));
        }
    }
    Ok(partitions)
}

/// One task's state on a thread.
struct Task {
    partition: i32,
    stores: BTreeMap<String, Box<dyn KeyValueStore>>,
    slots: BTreeMap<usize, Box<dyn Any + Send>>,
    stream_time: i64,
    /// The stream time at the last commit (an aborted transaction goes back to it).
    committed_stream_time: i64,
    /// Per input topic: the next offset to commit.
    consumed: BTreeMap<Arc<str>, i64>,
    /// Per input topic: the first offset processed since the last commit
    /// (an aborted transaction rewinds to it).
    first_uncommitted: BTreeMap<Arc<str>, i64>,
    /// Per store: the delivery of its last changelog record since the
    /// last commit, whose offset becomes the store's checkpoint.
    changelog_acks: BTreeMap<String, DeliveryFuture>,
    /// Whether a wall-clock punctuation produced something since the last
    /// commit (it has no input offset to show for it).
    punctuated: bool,
    /// Per input topic: records polled, not processed yet. Within a
    /// sub-topology a task takes the one with the smallest timestamp
    /// across its topics next, as Kafka Streams' partition group does, so
    /// that joins and windows see the topics' records in time order rather
    /// than in fetch order. (A few topics per task: a list.)
    queues: Vec<Queue>,
    metrics: TaskMetrics,
}

impl Task {
    /// The queued record to process next: the earliest by timestamp
    /// (ties to the first topic), provided that every input topic has a
    /// record queued or has nothing more to fetch (`caught_up`), so that
    /// a record is not taken ahead of an earlier one still on its way
    /// (Kafka's `max.task.idle.ms` of 0).
    fn pop_ready(
        &mut self,
        mut caught_up: impl FnMut(usize, &str) -> bool,
    ) -> Option<ConsumerRecord> {
        if let [only] = self.queues.as_mut_slice() {
            return only.records.pop_front();
        }
        // Per sub-topology, its earliest record, if each of its topics has
        // a record queued or nothing more to fetch; then the earliest of those.
        let mut pick: Option<(i64, usize)> = None;
        for (i, q) in self.queues.iter().enumerate() {
            let Some(head) = q.records.front() else {
                continue;
            };
            let earliest = self.queues.iter().enumerate().all(|(j, o)| {
                o.group != q.group
                    || o.records.front().is_none_or(|h| {
                        h.timestamp > head.timestamp || (h.timestamp == head.timestamp && j >= i)
                    })
            });
            if !earliest || pick.is_some_and(|(t, _)| t <= head.timestamp) {
                continue;
            }
            let waiting = self.queues.iter().enumerate().any(|(j, o)| {
                o.group == q.group && o.records.is_empty() && !caught_up(j, &o.topic)
            });
            if !waiting {
                pick = Some((head.timestamp, i));
            }
        }
        let (_, i) = pick?;
        self.queues.get_mut(i).and_then(|q| q.records.pop_front())
    }

    /// The queue of `topic` (of sub-topology `group`), made if it has none yet.
    fn queue(
        &mut self,
        topic: &Arc<str>,
        group: impl FnOnce() -> usize,
    ) -> &mut VecDeque<ConsumerRecord> {
        let at = match self.queues.iter().position(|q| *q.topic == **topic) {
            Some(at) => at,
            None => {
                self.queues.push(Queue {
                    topic: Arc::clone(topic),
                    group: group(),
                    records: VecDeque::new(),
                });
                self.queues.len() - 1
            }
        };
        &mut self.queues[at].records
    }

    fn dirty(&self) -> bool {
        !self.consumed.is_empty() || self.punctuated
    }

    /// Forgets what was processed since the last commit; state held in
    /// memory (suppression buffers) is rebuilt from the stores on next use.
    fn discard(&mut self) {
        for s in self.stores.values_mut() {
            s.discard();
        }
        self.slots.clear();
        self.stream_time = self.committed_stream_time;
        self.consumed.clear();
        self.first_uncommitted.clear();
        self.changelog_acks.clear();
        self.punctuated = false;
    }

    /// Empties the queues, returning what they held.
    fn drain_queues(&mut self) -> Vec<ConsumerRecord> {
        self.queues
            .iter_mut()
            .flat_map(|q| q.records.drain(..))
            .collect()
    }
}

/// Kafka Streams' committed-offset metadata for a partition's time
/// (`TopicPartitionMetadata` version 1): a version byte, then the time as
/// eight big-endian bytes, in base64.
fn encode_stream_time(time: i64) -> String {
    use base64::Engine;
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&time.to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The partition time in committed-offset metadata Kafka Streams wrote
/// (version 1, or 2 with processor metadata after it); none for metadata
/// of another kind or of no time yet.
fn decode_stream_time(metadata: &str) -> Option<i64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(metadata)
        .ok()?;
    match bytes.as_slice() {
        [1 | 2, time @ ..] if time.len() >= 8 => {
            let time = i64::from_be_bytes(time[..8].try_into().ok()?);
            (time >= 0).then_some(time)
        }
        _ => None,
    }
}

/// What task `task` gives its topology for one record or punctuation.
fn task_ctx<'a>(
    application_id: &'a str,
    task: &'a mut Task,
    out: &'a mut Vec<OutputRecord>,
    scratch: &'a mut Vec<Vec<(usize, Rec)>>,
    globals: &'a BTreeMap<String, Arc<dyn ReadStore>>,
) -> Ctx<'a> {
    Ctx {
        application_id,
        stores: &mut task.stores,
        slots: &mut task.slots,
        sink: out,
        stream_time: task.stream_time,
        dropped_late: &mut task.metrics.dropped_late_records,
        scratch,
        globals,
    }
}

/// A task's records of one input topic, polled and not processed yet.
struct Queue {
    topic: Arc<str>,
    /// The topic's sub-topology (see [`Topology::sub_topologies`]).
    group: usize,
    records: VecDeque<ConsumerRecord>,
}

/// One group member and its tasks.
struct StreamThread {
    transactional_id: String,
    topology: Arc<Topology>,
    config: StreamsConfig,
    cluster: Arc<Cluster>,
    group: GroupConsumer,
    producer: Producer,
    restore: Consumer,
    /// Where each changelog partition about to be restored starts.
    restore_from: BTreeMap<TopicPartition, i64>,
    /// The restore consumer's `max.poll.records`.
    restore_max_poll: usize,
    /// Changelog topic → store.
    changelogs: BTreeMap<String, String>,
    tasks: BTreeMap<i32, Task>,
    txn_open: bool,
    /// What the record being processed sends, emptied between records.
    out: Vec<OutputRecord>,
    /// The topology's emptied processor buffers (see [`Ctx::scratch`]).
    scratch: Vec<Vec<(usize, Rec)>>,
    /// The global tables' stores.
    globals: Arc<BTreeMap<String, Arc<dyn ReadStore>>>,
    /// Each input topic's sub-topology.
    sub_topologies: BTreeMap<String, usize>,
    /// The partitions an abort moved back to their first uncommitted
    /// offset; while any are, the rest of the polled records are read
    /// again, not processed now.
    rewound: BTreeSet<TopicPartition>,
    /// Set by an abort until the polled records left are put back.
    aborted: bool,
    last_commit: Instant,
    last_lag: Instant,
    failed_sends: u64,
    shared: Arc<Shared>,
}

impl StreamThread {
    fn new(
        index: usize,
        process: uuid::Uuid,
        topology: Arc<Topology>,
        config: StreamsConfig,
        cluster: Arc<Cluster>,
        shared: Arc<Shared>,
        globals: Arc<BTreeMap<String, Arc<dyn ReadStore>>>,
    ) -> StreamThread {
        let app = config.application_id.clone();
        let sub_topologies = topology.sub_topologies(&app);
        let isolation = config.processing_guarantee.isolation_level();
        let mut group_config = GroupConfig::new(app.clone());
        group_config.client_id = format!("{app}-{process}-StreamThread-{index}");
        group_config.enable_auto_commit = false;
        group_config.assignment_strategy = vec!["range".into()];
        group_config.session_timeout = config.session_timeout;
        group_config.heartbeat_interval = config.heartbeat_interval;
        group_config.consumer.auto_offset_reset = OffsetReset::Earliest;
        group_config.consumer.isolation_level = isolation;
        group_config.consumer.max_poll_records = 1000;
        group_config.subscription_user_data = config.application_server.as_ref().map(|s| {
            let mut data = SERVER_PREFIX.to_vec();
            data.extend_from_slice(s.as_bytes());
            data
        });
        let mut group = GroupConsumer::with_cluster(Arc::clone(&cluster), group_config);
        let topics = topology
            .input_topics(&app)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        group.subscribe(topics);
        let transactional_id = format!("{app}-{process}-{index}");
        let producer = new_producer(&cluster, &config, &transactional_id);
        let restore = Consumer::with_cluster(
            Arc::clone(&cluster),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                isolation_level: isolation,
                max_poll_records: RESTORE_MAX_POLL,
                // Restoring reads whole changelogs: large fetches, fewer round trips.
                max_partition_fetch_bytes: 8 * 1024 * 1024,
                ..ConsumerConfig::default()
            },
        );
        let changelogs = topology
            .stores()
            .iter()
            .map(|s| (changelog_topic(&app, s), s.clone()))
            .collect();
        let now = Instant::now();
        StreamThread {
            transactional_id,
            topology,
            config,
            cluster,
            group,
            producer,
            restore,
            restore_from: BTreeMap::new(),
            restore_max_poll: RESTORE_MAX_POLL,
            changelogs,
            tasks: BTreeMap::new(),
            txn_open: false,
            out: Vec::new(),
            scratch: Vec::new(),
            globals,
            sub_topologies,
            rewound: BTreeSet::new(),
            aborted: false,
            last_commit: now,
            last_lag: now,
            failed_sends: 0,
            shared,
        }
    }

    fn eos(&self) -> bool {
        self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), StreamsError> {
        if self.eos() {
            retrying("initialising the transactional producer", || {
                self.producer.init_transactions()
            })
            .await?;
        }
        let result = self.run_loop(&mut stop).await;
        let closed = self.shut_down(result.is_ok()).await;
        result.and(closed)
    }

    async fn run_loop(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), StreamsError> {
        let interval = self.config.commit_interval();
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        while !*stop.borrow() {
            if self.group.rebalance_pending() {
                // Commit while the partitions are still this member's.
                self.commit().await?;
            }
            let records = match self.group.poll(self.config.poll).await {
                Ok(r) => {
                    backoff.reset();
                    r
                }
                Err(e) if e.is_retriable() => {
                    // A leader moving: ask again shortly, without spinning.
                    tracing::debug!(error = %e, "poll failed; retrying");
                    backoff.wait().await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.aborted = false;
            self.rewound.clear();
            self.sync_tasks().await?;
            self.enqueue(records)?;
            self.process_ready().await?;
            if !self.aborted {
                self.punctuate_wall_clock().await?;
            }
            self.publish_metrics();
            if self.last_commit.elapsed() >= interval {
                self.commit().await?;
            }
            if self.last_lag.elapsed() >= Duration::from_secs(5) {
                self.update_lag().await;
            }
        }
        Ok(())
    }

    /// Queues polled records on their tasks.
    fn enqueue(&mut self, records: Vec<ConsumerRecord>) -> Result<(), StreamsError> {
        for r in records {
            let Some(task) = self.tasks.get_mut(&r.partition) else {
                return Err(StreamsError::Thread(format!(
                    "a record of {}-{} reached a thread without its task",
                    r.topic, r.partition
                )));
            };
            let topic = Arc::clone(&r.topic);
            let groups = &self.sub_topologies;
            task.queue(&topic, || groups.get(&*topic).copied().unwrap_or(0))
                .push_back(r);
        }
        if self.aborted {
            // Aborted while opening or closing tasks: nothing polled may be
            // processed in what commits next; it is all read again.
            self.put_back_queued();
        }
        Ok(())
    }

    /// Processes the queued records each task may take (see
    /// [`Task::pop_ready`]), task by task.
    async fn process_ready(&mut self) -> Result<(), StreamsError> {
        // Whether a partition has nothing more to fetch, asked once per
        // partition per poll (the answer does not change in between).
        let mut caught_up: BTreeMap<(i32, usize), bool> = BTreeMap::new();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for p in partitions {
            loop {
                let group = &self.group;
                let Some(task) = self.tasks.get_mut(&p) else {
                    break;
                };
                let next = task.pop_ready(|queue, topic| {
                    *caught_up.entry((p, queue)).or_insert_with(|| {
                        let tp = TopicPartition::new(topic.to_owned(), p);
                        matches!(
                            (group.position(&tp), group.fetched_end(&tp)),
                            (Some(at), Some(end)) if at >= end
                        )
                    })
                });
                let Some(r) = next else {
                    break;
                };
                self.process(r).await?;
                if self.aborted {
                    // What is still queued was not processed in what
                    // commits next: it must be read again too.
                    self.put_back_queued();
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Puts every queued record back (see [`StreamThread::put_back`]).
    fn put_back_queued(&mut self) {
        let queued: Vec<ConsumerRecord> = self
            .tasks
            .values_mut()
            .flat_map(Task::drain_queues)
            .collect();
        self.put_back(queued.into_iter());
    }

    /// Commits (after a clean run) or aborts (after a failure), leaves the
    /// group and closes the producer.
    async fn shut_down(mut self, clean: bool) -> Result<(), StreamsError> {
        let committed = if clean {
            self.commit().await
        } else {
            if self.txn_open {
                let _ = self.producer.abort_transaction().await;
            }
            Ok(())
        };
        for p in self.tasks.keys() {
            self.shared.forget(*p);
        }
        let StreamThread {
            group, producer, ..
        } = self;
        if let Err(e) = group.close().await {
            tracing::warn!(error = %e, "leaving the group failed");
        }
        if let Err(e) = producer.close().await {
            tracing::warn!(error = %e, "closing the producer failed");
        }
        committed
    }

    /// Opens tasks for new partitions and closes those that went.
    async fn sync_tasks(&mut self) -> Result<(), StreamsError> {
        let assigned: BTreeSet<i32> = self
            .group
            .assignment()
            .iter()
            .map(|tp| tp.partition)
            .collect();
        let gone: Vec<i32> = self
            .tasks
            .keys()
            .filter(|p| !assigned.contains(p))
            .copied()
            .collect();
        if gone.iter().any(|p| self.tasks[p].dirty()) {
            // The partitions moved before this thread committed them: their
            // work since the last commit is the new owner's to redo.
            if self.eos() {
                tracing::warn!(tasks = ?gone, "partitions moved before this thread committed them; aborting its transaction");
                self.abort().await?;
            } else {
                for p in &gone {
                    if let Some(t) = self.tasks.get_mut(p) {
                        t.discard();
                    }
                }
            }
        }
        for p in gone {
            tracing::info!(task = %format!("0_{p}"), "task closed: its partitions moved");
            self.tasks.remove(&p);
            self.shared.forget(p);
        }
        let new: Vec<i32> = assigned
            .into_iter()
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        for task in self.open_tasks(&new).await? {
            for (name, store) in &task.stores {
                if let Some(reader) = store.reader() {
                    self.shared
                        .stores
                        .lock()
                        .insert((name.clone(), task.partition), reader);
                }
            }
            self.tasks.insert(task.partition, task);
        }
        // A queue for each input partition, polled yet or not: a task waits
        // for one that has records to fetch before it takes later ones.
        for tp in self.group.assignment() {
            if let Some(task) = self.tasks.get_mut(&tp.partition) {
                let groups = &self.sub_topologies;
                task.queue(&Arc::from(tp.topic.as_str()), || {
                    groups.get(&tp.topic).copied().unwrap_or(0)
                });
            }
        }
        Ok(())
    }

    fn task_dir(&self, partition: i32) -> PathBuf {
        self.config
            .state_dir
            .join(&self.config.application_id)
            .join(format!("0_{partition}"))
    }

    /// Opens the tasks of `partitions` and restores their stores from
    /// their changelogs, each from its checkpoint on, all in one pass (the
    /// changelog partitions are fetched together, as Kafka Streams' restore
    /// consumer does).
    async fn open_tasks(&mut self, partitions: &[i32]) -> Result<Vec<Task>, StreamsError> {
        let started = Instant::now();
        let mut tasks: BTreeMap<i32, Task> = BTreeMap::new();
        // Changelog partition → (task, store, where to stop).
        let mut restoring: BTreeMap<TopicPartition, (i32, String, i64)> = BTreeMap::new();
        let level = self.config.processing_guarantee.isolation_level();
        let admin = Admin::with_cluster(Arc::clone(&self.cluster));
        for &partition in partitions {
            let dir = self.task_dir(partition);
            std::fs::create_dir_all(&dir).map_err(|e| StreamsError::Store {
                store: dir.display().to_string(),
                reason: e.to_string(),
            })?;
            let mut task = Task {
                partition,
                stores: BTreeMap::new(),
                slots: BTreeMap::new(),
                stream_time: i64::MIN,
                committed_stream_time: i64::MIN,
                consumed: BTreeMap::new(),
                first_uncommitted: BTreeMap::new(),
                changelog_acks: BTreeMap::new(),
                punctuated: false,
                queues: Vec::new(),
                metrics: TaskMetrics {
                    task: format!("0_{partition}"),
                    ..TaskMetrics::default()
                },
            };
            for name in self.topology.stores() {
                let mut store = RedbStore::open(&dir.join(format!("{name}.redb")))?;
                let topic = changelog_topic(&self.config.application_id, name);
                let (start, end) = retrying("reading the changelog's offsets", || {
                    admin.offsets_at(&topic, partition, level)
                })
                .await?;
                let mut checkpoint = store.checkpoint()?;
                if checkpoint.is_some_and(|c| c > end) {
                    // The store is ahead of its changelog: the topic was recreated.
                    tracing::warn!(
                        topic,
                        partition,
                        ?checkpoint,
                        end,
                        "store checkpoint beyond its changelog; restoring from scratch"
                    );
                    store.clear()?;
                    checkpoint = None;
                }
                let from = checkpoint.unwrap_or(start).max(start);
                if from < end {
                    task.metrics.restore_total += (end - from) as u64;
                    let tp = TopicPartition::new(topic, partition);
                    self.restore_from.insert(tp.clone(), from);
                    restoring.insert(tp, (partition, name.clone(), end));
                }
                task.stores.insert(name.clone(), Box::new(store));
            }
            tasks.insert(partition, task);
        }
        self.restore_changelogs(&mut tasks, restoring).await?;
        self.resume_stream_time(&mut tasks).await?;
        let millis = started.elapsed().as_millis() as u64;
        let mut opened = Vec::with_capacity(tasks.len());
        for mut task in tasks.into_values() {
            task.metrics.restore_millis = millis;
            tracing::info!(task = %task.metrics.task, restored = task.metrics.restored_records, elapsed_ms = millis, "task opened");
            opened.push(task);
        }
        Ok(opened)
    }

    /// Sets each task's stream time to what its last owner committed with
    /// its offsets (the largest over its partitions), so that records too
    /// late for their windows stay too late after a task moves.
    async fn resume_stream_time(
        &mut self,
        tasks: &mut BTreeMap<i32, Task>,
    ) -> Result<(), StreamsError> {
        let partitions: Vec<TopicPartition> = self
            .group
            .assignment()
            .iter()
            .filter(|tp| tasks.contains_key(&tp.partition))
            .cloned()
            .collect();
        if partitions.is_empty() {
            return Ok(());
        }
        let group = &self.group;
        let committed = retrying("reading the committed offsets", || {
            group.committed_with_metadata(&partitions)
        })
        .await?;
        for (tp, c) in committed {
            let (Some((_, metadata)), Some(task)) = (c, tasks.get_mut(&tp.partition)) else {
                continue;
            };
            if let Some(time) = decode_stream_time(&metadata) {
                task.stream_time = task.stream_time.max(time);
                task.committed_stream_time = task.stream_time;
            }
        }
        Ok(())
    }

    /// Reads each changelog partition of `restoring` from where its store
    /// stopped to the end the restore began with, into the store.
    ///
    /// The stores move to a loader thread for the restore, so that writing
    /// one batch into its store overlaps fetching and decoding the next:
    /// with both on one thread, a restore runs at the sum of the two costs.
    async fn restore_changelogs(
        &mut self,
        tasks: &mut BTreeMap<i32, Task>,
        restoring: BTreeMap<TopicPartition, (i32, String, i64)>,
    ) -> Result<(), StreamsError> {
        if restoring.is_empty() {
            return Ok(());
        }
        self.restore
            .assign(restoring.keys().cloned().collect())
            .await?;
        for tp in restoring.keys() {
            if let Some(from) = self.restore_from.remove(tp) {
                self.restore.seek(tp, from);
            }
        }
        // Stores load independently: spread over a few threads, as many
        // as there are cores, since one B-tree write at a time is slower
        // than the fetch.
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(restoring.len());
        let mut groups: Vec<LoadedStores> = (0..threads).map(|_| BTreeMap::new()).collect();
        let mut parts = Vec::with_capacity(restoring.len());
        for (i, (tp, (task, name, end))) in restoring.into_iter().enumerate() {
            if let Some(store) = tasks.get_mut(&task).and_then(|t| t.stores.remove(&name)) {
                groups[i % threads].insert((task, name.clone()), store);
            }
            parts.push(Restoring {
                tp,
                task,
                store: name,
                end,
                loader: i % threads,
                batch: Vec::new(),
                done: false,
            });
        }
        let (loads, loaders): (Vec<_>, Vec<_>) = groups
            .into_iter()
            .map(|stores| {
                let (load, pending) = tokio::sync::mpsc::channel::<Load>(2);
                (
                    load,
                    tokio::task::spawn_blocking(move || load_stores(stores, pending)),
                )
            })
            .unzip();
        let fetched = self.fetch_changelogs(tasks, parts, &loads).await;
        drop(loads);
        for loader in loaders {
            let stores = loader
                .await
                .map_err(|e| StreamsError::Thread(format!("a restore loader failed: {e}")))??;
            for ((task, name), store) in stores {
                if let Some(task) = tasks.get_mut(&task) {
                    task.stores.insert(name, store);
                }
            }
        }
        fetched?;
        self.restore.assign(Vec::new()).await?;
        Ok(())
    }

    /// Fetches the changelog partitions of `parts` to their ends, handing
    /// the records to the loader in batches.
    async fn fetch_changelogs(
        &mut self,
        tasks: &mut BTreeMap<i32, Task>,
        mut parts: Vec<Restoring>,
        loads: &[tokio::sync::mpsc::Sender<Load>],
    ) -> Result<(), StreamsError> {
        // The loader only stops early on an error, which it returns itself.
        let stopped = || StreamsError::Thread("the restore loader stopped".into());
        let max_poll = self.restore_max_poll;
        while parts.iter().any(|p| !p.done) {
            let records = match self.restore.poll(Duration::from_millis(500)).await {
                Ok(records) => records,
                Err(e) if e.is_retriable() => {
                    tracing::debug!(error = %e, "restore fetch failed; retrying");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // A short poll has emptied the consumer's buffer: only then are
            // positions cheap to ask for and past the records seen.
            let drained = records.len() < max_poll;
            for r in records {
                let Some(part) = parts
                    .iter_mut()
                    .find(|p| p.tp.partition == r.partition && *p.tp.topic == *r.topic)
                else {
                    continue;
                };
                if part.done || r.offset >= part.end {
                    continue;
                }
                let Some(key) = r.key else {
                    continue;
                };
                part.batch.push((key, r.value));
                if let Some(task) = tasks.get_mut(&part.task) {
                    task.metrics.restored_records += 1;
                }
                if part.batch.len() >= RESTORE_BATCH {
                    let load = part.load(r.offset + 1, false);
                    loads[part.loader].send(load).await.map_err(|_| stopped())?;
                }
            }
            if !drained {
                continue;
            }
            for part in parts.iter_mut().filter(|p| !p.done) {
                if self
                    .restore
                    .position(&part.tp)
                    .is_some_and(|at| at >= part.end)
                {
                    part.done = true;
                    let load = part.load(part.end, true);
                    loads[part.loader].send(load).await.map_err(|_| stopped())?;
                }
            }
        }
        Ok(())
    }

    /// Runs one input record through its task and sends what it produced.
    async fn process(&mut self, r: ConsumerRecord) -> Result<(), StreamsError> {
        if !self.ensure_transaction().await? {
            // This record was not processed: it is read again too.
            self.put_back(std::iter::once(r));
            return Ok(());
        }
        let Some(task) = self.tasks.get_mut(&r.partition) else {
            return Err(StreamsError::Thread(format!(
                "a record of {}-{} reached a thread without its task",
                r.topic, r.partition
            )));
        };
        let headers: Vec<(String, Option<Bytes>)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    String::from_utf8_lossy(&h.key).into_owned(),
                    h.value.clone(),
                )
            })
            .collect();
        let mut out = std::mem::take(&mut self.out);
        let (processed, stream_time) = {
            let mut ctx = task_ctx(
                &self.config.application_id,
                task,
                &mut out,
                &mut self.scratch,
                &self.globals,
            );
            let processed = self
                .topology
                .process(
                    &mut ctx,
                    &r.topic,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    r.timestamp,
                    &headers,
                )
                .and_then(|()| {
                    if !self.topology.punctuates() {
                        return Ok(());
                    }
                    let now = ctx.stream_time;
                    self.topology
                        .punctuate(&mut ctx, PunctuationType::StreamTime, now)
                });
            (processed, ctx.stream_time)
        };
        // The topology moves stream time by the timestamps it processes
        // records with (a source's extractor may give others).
        task.stream_time = stream_time;
        match processed {
            Ok(()) => task.metrics.records_processed += 1,
            Err(e)
                if e.is_bad_input()
                    && self.config.on_deserialization_error
                        == OnDeserializationError::LogAndContinue =>
            {
                tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, error = %e, "skipping an input record that does not deserialize");
                task.metrics.skipped_records += 1;
            }
            Err(e) => {
                return Err(StreamsError::Task {
                    task: task.metrics.task.clone(),
                    topic: r.topic.to_string(),
                    partition: r.partition,
                    offset: r.offset,
                    source: Box::new(e),
                });
            }
        }
        // Looked up by name first: the topic's entries exist after its
        // first record, and cloning its name per record is not free.
        match task.consumed.get_mut(&*r.topic) {
            Some(next) => *next = r.offset + 1,
            None => {
                task.consumed.insert(Arc::clone(&r.topic), r.offset + 1);
            }
        }
        if !task.first_uncommitted.contains_key(&*r.topic) {
            task.first_uncommitted
                .insert(Arc::clone(&r.topic), r.offset);
        }
        let partition = task.partition;
        self.send_outputs(partition, &mut out).await?;
        self.out = out;
        Ok(())
    }

    /// Opens the thread's transaction when exactly once and none is open.
    /// False when that failed and the thread aborted (what was about to
    /// be processed must be read again).
    async fn ensure_transaction(&mut self) -> Result<bool, StreamsError> {
        if !self.eos() || self.txn_open {
            return Ok(true);
        }
        if let Err(e) = self.producer.begin_transaction() {
            tracing::warn!(error = %e, "beginning a transaction failed; starting a new producer");
            self.renew_producer().await?;
            self.abort().await?;
            return Ok(false);
        }
        self.txn_open = true;
        Ok(true)
    }

    /// Sends what task `partition` produced (outputs and changelog
    /// records), emptying `out`; a changelog record's delivery becomes its
    /// store's checkpoint at the next commit.
    async fn send_outputs(
        &mut self,
        partition: i32,
        out: &mut Vec<OutputRecord>,
    ) -> Result<(), StreamsError> {
        let eos = self.eos();
        for o in out.drain(..) {
            let store = self.changelogs.get(&o.topic).cloned();
            let record = producer_record(o, store.as_ref().map(|_| partition));
            let delivery = match self.producer.send(record).await {
                Ok(d) => d,
                Err(e) if eos => {
                    tracing::warn!(error = %e, "sending in the transaction failed; starting over from the last commit");
                    return self.abort().await;
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(store) = store
                && let Some(task) = self.tasks.get_mut(&partition)
            {
                task.changelog_acks.insert(store, delivery);
            }
        }
        Ok(())
    }

    /// Gives each task's processors that punctuate by wall-clock time their
    /// due punctuations, and sends what they produce.
    async fn punctuate_wall_clock(&mut self) -> Result<(), StreamsError> {
        if !self.topology.punctuates() {
            return Ok(());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for p in partitions {
            if !self.ensure_transaction().await? {
                return Ok(());
            }
            let Some(task) = self.tasks.get_mut(&p) else {
                continue;
            };
            let mut out = std::mem::take(&mut self.out);
            let punctuated = {
                let mut ctx = task_ctx(
                    &self.config.application_id,
                    task,
                    &mut out,
                    &mut self.scratch,
                    &self.globals,
                );
                self.topology
                    .punctuate(&mut ctx, PunctuationType::WallClockTime, now)
            };
            punctuated.map_err(|e| {
                StreamsError::Thread(format!(
                    "task {}: a wall-clock punctuation failed: {e}",
                    task.metrics.task
                ))
            })?;
            if !out.is_empty() {
                task.punctuated = true;
            }
            self.send_outputs(p, &mut out).await?;
            self.out = out;
            if self.aborted {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Commits every task: at least once, outputs flushed, then stores
    /// checkpointed, then offsets committed; exactly once, outputs and
    /// offsets in the thread's transaction, then stores checkpointed.
    async fn commit(&mut self) -> Result<(), StreamsError> {
        self.last_commit = Instant::now();
        if !self.tasks.values().any(Task::dirty) {
            return Ok(());
        }
        // Each offset carries its task's stream time, as Kafka Streams
        // commits partition time: whoever runs the task next starts from it.
        let offsets: Vec<(TopicPartition, i64, String)> = self
            .tasks
            .values()
            .flat_map(|t| {
                let time = encode_stream_time(t.stream_time);
                t.consumed.iter().map(move |(topic, o)| {
                    (
                        TopicPartition::new(topic.to_string(), t.partition),
                        *o,
                        time.clone(),
                    )
                })
            })
            .collect();
        if self.eos() {
            let group = self.group.group_metadata();
            let committed = async {
                // A transaction of wall-clock punctuations alone consumed nothing.
                if !offsets.is_empty() {
                    self.producer
                        .send_offsets_with_metadata_to_transaction(&offsets, &group)
                        .await?;
                }
                self.producer.commit_transaction().await
            }
            .await;
            if let Err(e) = committed {
                tracing::warn!(error = %e, "committing the transaction failed; aborting it and processing again from the last commit");
                return self.abort().await;
            }
            self.txn_open = false;
        } else {
            self.producer.flush().await?;
            let failed = self.producer.failed_records();
            if failed > self.failed_sends {
                let newly = failed - self.failed_sends;
                self.failed_sends = failed;
                return Err(StreamsError::Produce(format!(
                    "{newly} output records could not be written (see the producer's errors above)"
                )));
            }
        }
        for task in self.tasks.values_mut() {
            for (name, store) in task.stores.iter_mut() {
                let checkpoint = match task.changelog_acks.remove(name) {
                    Some(delivery) => Some(delivery.await?.offset + 1),
                    None => None,
                };
                store.commit(checkpoint)?;
            }
            task.committed_stream_time = task.stream_time;
            task.first_uncommitted.clear();
        }
        if !self.eos()
            && let Err(e) = self.group.commit_offsets_with_metadata(offsets).await
        {
            // The records are processed again by whoever owns them next:
            // what at least once allows.
            tracing::warn!(error = %e, "committing offsets failed");
        }
        for task in self.tasks.values_mut() {
            task.consumed.clear();
            task.punctuated = false;
        }
        Ok(())
    }

    /// Aborts the open transaction and goes back to the last commit: stores
    /// lose their uncommitted writes, inputs are read again from the first
    /// uncommitted offset.
    async fn abort(&mut self) -> Result<(), StreamsError> {
        self.aborted = true;
        if self.txn_open {
            if let Err(e) = self.producer.abort_transaction().await {
                tracing::warn!(error = %e, "aborting failed; starting a new producer");
                self.renew_producer().await?;
            }
            self.txn_open = false;
        }
        let owned: BTreeSet<TopicPartition> = self.group.assignment().iter().cloned().collect();
        for task in self.tasks.values_mut() {
            for (topic, offset) in &task.first_uncommitted {
                let tp = TopicPartition::new(topic.to_string(), task.partition);
                if owned.contains(&tp) {
                    self.group.seek(&tp, *offset);
                    self.rewound.insert(tp);
                }
            }
            task.discard();
        }
        Ok(())
    }

    /// Moves each partition of `unprocessed` (records polled but not
    /// processed, after an abort) back to its first such record, unless the
    /// abort moved it back further already.
    fn put_back(&mut self, unprocessed: impl Iterator<Item = ConsumerRecord>) {
        let mut first: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in unprocessed {
            let tp = TopicPartition::new(r.topic.to_string(), r.partition);
            if !self.rewound.contains(&tp) {
                first.entry(tp).or_insert(r.offset);
            }
        }
        for (tp, offset) in first {
            self.group.seek(&tp, offset);
            self.rewound.insert(tp);
        }
    }

    /// Replaces a producer that can no longer transact (fenced, or its
    /// transaction stuck): the new one's epoch fences whatever the old one
    /// left open.
    async fn renew_producer(&mut self) -> Result<(), StreamsError> {
        let old = std::mem::replace(
            &mut self.producer,
            new_producer(&self.cluster, &self.config, &self.transactional_id),
        );
        drop(old);
        retrying("initialising the transactional producer", || {
            self.producer.init_transactions()
        })
        .await?;
        Ok(())
    }

    /// Updates each task's lag (end offset minus position).
    async fn update_lag(&mut self) {
        self.last_lag = Instant::now();
        let Ok(lags) = self.group.lag().await else {
            return;
        };
        let mut per_task: BTreeMap<i32, i64> = BTreeMap::new();
        for (tp, lag) in lags {
            *per_task.entry(tp.partition).or_default() += lag;
        }
        for (p, task) in self.tasks.iter_mut() {
            task.metrics.lag = per_task.get(p).copied().unwrap_or(0);
        }
    }

    fn publish_metrics(&self) {
        let mut m = self.shared.metrics.lock();
        for (p, t) in &self.tasks {
            m.insert(*p, t.metrics.clone());
        }
    }
}

/// The thread's producer: idempotent, and with exactly once transactional.
fn new_producer(
    cluster: &Arc<Cluster>,
    config: &StreamsConfig,
    transactional_id: &str,
) -> Producer {
    let mut producer = ProducerConfig {
        allow_auto_topic_creation: false,
        ..ProducerConfig::default()
    };
    if config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2 {
        producer.transactional_id = Some(transactional_id.to_owned());
        producer.transaction_timeout = config.transaction_timeout;
    }
    Producer::with_cluster(Arc::clone(cluster), producer)
}

/// What to send for an output record; changelog records go to the task's
/// own partition, others are partitioned by key.
fn producer_record(o: OutputRecord, partition: Option<i32>) -> ProducerRecord {
    ProducerRecord {
        topic: o.topic,
        partition,
        key: o.key,
        value: o.value,
        headers: o
            .headers
            .into_iter()
            .map(|(k, v)| Header::new(k, v))
            .collect(),
        timestamp: Some(o.timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_time_travels_in_kafka_streams_offset_metadata() {
        let encoded = encode_stream_time(1_609_459_200_000);
        assert_eq!(decode_stream_time(&encoded), Some(1_609_459_200_000));
        // Version 1 as Kafka Streams writes it: 0x01, then the time.
        assert_eq!(encoded, "AQAAAXa7PnAA");
        // Version 2 carries processor metadata after the time.
        use base64::Engine;
        let mut v2 = vec![2u8];
        v2.extend_from_slice(&42i64.to_be_bytes());
        v2.extend_from_slice(&[0, 0, 0, 0]);
        let v2 = base64::engine::general_purpose::STANDARD.encode(v2);
        assert_eq!(decode_stream_time(&v2), Some(42));
        for other in ["", "not base64!", "AQ==", &encode_stream_time(i64::MIN)] {
            assert_eq!(decode_stream_time(other), None, "{other}");
        }
    }
}
