//! Global tables (Kafka Streams' `GlobalKTable`): a table every instance
//! keeps whole, every partition of its topic, so a stream joins it by any
//! key it computes from a record, with no repartitioning and no
//! co-partitioning.
//!
//! The topic itself is the table's changelog: an instance loads it into a
//! local redb store when the application starts (before any task runs),
//! then follows it on a thread of its own. The store records, per
//! partition, the offset it holds everything before, so a restart reads
//! only what came after.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_client::{Admin, Cluster, Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::StreamsConfig;
use crate::error::StreamsError;
use crate::serde::Serde;
use crate::store::{KeyValueStore, ReadStore, RedbStore};
use crate::topology::{Graph, KStream, Node, ProcessFn, StreamsBuilder, Topology, cast, with};

/// A table every instance holds whole (Kafka's `GlobalKTable`); streams
/// join it with [`KStream::join_global`] and [`KStream::left_join_global`].
pub struct GlobalKTable<K, V> {
    graph: Rc<std::cell::RefCell<Graph>>,
    topic: String,
    store: String,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
}

impl StreamsBuilder {
    /// The records of `topic` as a global table kept in store `store`:
    /// each record sets its key's value, a null value deletes it (Kafka's
    /// `builder.globalTable`). Every instance reads every partition of the
    /// topic; the topic is the store's changelog (no other is written).
    pub fn global_table<K, V>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
        store: &str,
    ) -> GlobalKTable<K, V>
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        self.graph
            .borrow_mut()
            .globals
            .push((topic.to_owned(), store.to_owned()));
        GlobalKTable {
            graph: Rc::clone(&self.graph),
            topic: topic.to_owned(),
            store: store.to_owned(),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
        }
    }
}

impl<K, V> KStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Each record joined with the global table's value under the key
    /// `key` computes from the record; records whose computed key the
    /// table lacks are dropped (Kafka's stream–globalTable `join`). The
    /// record keeps its own key.
    pub fn join_global<GK, GV, VR>(
        &self,
        table: &GlobalKTable<GK, GV>,
        key: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, &GV) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR>
    where
        GK: Send + Sync + 'static,
        GV: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_global_table(table, key, move |v, gv| gv.map(|gv| joiner(v, gv)))
    }

    /// Each record joined with the global table's value under the key
    /// `key` computes, or with `None` when the table lacks it (Kafka's
    /// stream–globalTable `leftJoin`).
    pub fn left_join_global<GK, GV, VR>(
        &self,
        table: &GlobalKTable<GK, GV>,
        key: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&GV>) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR>
    where
        GK: Send + Sync + 'static,
        GV: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_global_table(table, key, move |v, gv| Some(joiner(v, gv)))
    }

    fn join_global_table<GK, GV, VR>(
        &self,
        table: &GlobalKTable<GK, GV>,
        key: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&GV>) -> Option<VR> + Send + Sync + 'static,
    ) -> KStream<K, VR>
    where
        GK: Send + Sync + 'static,
        GV: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        if !Rc::ptr_eq(&self.graph, &table.graph) {
            self.graph
                .borrow_mut()
                .errors
                .push("a stream can only join a global table of the same builder".to_owned());
            return KStream::at(&self.graph, Vec::new(), false);
        }
        let (topic, store) = (table.topic.clone(), table.store.clone());
        let (ks, vs) = (Arc::clone(&table.key_serde), Arc::clone(&table.value_serde));
        let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
            let (k, v) = (cast::<K>(&rec.key)?, cast::<V>(&rec.value)?);
            let found = match ks.serialize_nullable(&topic, &key(k, v))? {
                Some(bytes) => {
                    let global = ctx.globals.get(&store).ok_or_else(|| {
                        StreamsError::Topology(format!("no global store {store}"))
                    })?;
                    match global.get(&bytes)? {
                        Some(value) => Some(vs.deserialize(&topic, &value)?),
                        None => None,
                    }
                }
                None => None,
            };
            if let Some(joined) = joiner(v, found.as_ref()) {
                out.push((0, with(rec, Arc::clone(&rec.key), Arc::new(joined))));
            }
            Ok(())
        });
        let id = self
            .graph
            .borrow_mut()
            .add(Node::Processor(process), &self.parents);
        KStream::at(&self.graph, vec![(id, 0)], self.key_changed)
    }
}

/// The mark under which a global store records how far it holds a
/// partition of its topic.
const PARTITION_MARK: &str = "partition-";

/// Records per load into a global store while bootstrapping.
const LOAD_BATCH: usize = 50_000;

/// A global table's store and where it stands.
struct Global {
    topic: String,
    store: RedbStore,
    /// Per partition: the offset the store holds everything before.
    next: BTreeMap<i32, i64>,
    /// Records fetched since the last load.
    batch: Vec<(Bytes, Option<Bytes>)>,
}

/// The global tables of one instance, loaded: readers for the tasks, and
/// the task that follows the topics from there on (none without globals).
pub(crate) struct Globals {
    pub readers: BTreeMap<String, Arc<dyn ReadStore>>,
    pub follower: Option<Follower>,
}

/// The run of following the global topics, for the caller to spawn.
pub(crate) type Follower =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StreamsError>> + Send>>;

/// Opens the topology's global stores under `state.dir`, loads each from
/// its topic up to the topic's end as of now, then follows the topics on
/// a task of its own until `stop`.
pub(crate) async fn open(
    topology: &Topology,
    config: &StreamsConfig,
    cluster: &Arc<Cluster>,
    stop: watch::Receiver<bool>,
) -> Result<Globals, StreamsError> {
    if topology.global_tables().is_empty() {
        return Ok(Globals {
            readers: BTreeMap::new(),
            follower: None,
        });
    }
    let dir = config.state_dir.join(&config.application_id).join("global");
    std::fs::create_dir_all(&dir).map_err(|e| StreamsError::Store {
        store: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let level = config.processing_guarantee.isolation_level();
    let admin = Admin::with_cluster(Arc::clone(cluster));
    let mut consumer = Consumer::with_cluster(
        Arc::clone(cluster),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation_level: level,
            max_poll_records: 10_000,
            max_partition_fetch_bytes: 8 * 1024 * 1024,
            ..ConsumerConfig::default()
        },
    );
    let mut globals = BTreeMap::new();
    let mut readers: BTreeMap<String, Arc<dyn ReadStore>> = BTreeMap::new();
    let mut ends = BTreeMap::new();
    let mut assignment = Vec::new();
    for (topic, name) in topology.global_tables() {
        let store = RedbStore::open(&dir.join(format!("{name}.redb")))?;
        let held: BTreeMap<i32, i64> = store
            .marks(PARTITION_MARK)?
            .into_iter()
            .filter_map(|(p, offset)| Some((p.parse().ok()?, offset)))
            .collect();
        let described = admin
            .describe_topic(topic)
            .await
            .map_err(|e| StreamsError::Setup(format!("global table topic {topic}: {e}")))?;
        let mut next = BTreeMap::new();
        for p in 0..described.partitions.len() as i32 {
            let (start, end) = admin.offsets_at(topic, p, level).await?;
            let from = held.get(&p).copied().unwrap_or(start).max(start);
            let tp = TopicPartition::new(topic.clone(), p);
            assignment.push(tp.clone());
            ends.insert(tp, (name.clone(), end));
            next.insert(p, from);
        }
        if let Some(reader) = store.reader() {
            readers.insert(name.clone(), Arc::new(reader));
        }
        globals.insert(
            name.clone(),
            Global {
                topic: topic.clone(),
                store,
                next,
                batch: Vec::new(),
            },
        );
    }
    consumer.assign(assignment.clone()).await?;
    for tp in &assignment {
        let Some((name, _)) = ends.get(tp) else {
            continue;
        };
        if let Some(from) = globals.get(name).and_then(|g| g.next.get(&tp.partition)) {
            consumer.seek(tp, *from);
        }
    }
    // Bootstrap: everything up to the ends as of now, before any task runs.
    let started = Instant::now();
    loop {
        let behind = ends
            .iter()
            .any(|(tp, (_, end))| consumer.position(tp).is_none_or(|at| at < *end));
        if !behind {
            break;
        }
        let records = consumer.poll(Duration::from_millis(500)).await?;
        apply(&mut globals, records, LOAD_BATCH, false)?;
    }
    flush(&mut globals, true)?;
    tracing::info!(
        tables = globals.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "global tables loaded"
    );
    let interval = config.commit_interval();
    let follower: Follower = Box::pin(follow(consumer, globals, interval, stop));
    Ok(Globals {
        readers,
        follower: Some(follower),
    })
}

/// Follows the global topics: each poll's records go into the stores at
/// once (readers see them), synced once per commit interval.
async fn follow(
    mut consumer: Consumer,
    mut globals: BTreeMap<String, Global>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StreamsError> {
    let mut synced = Instant::now();
    while !*stop.borrow() {
        let records = tokio::select! {
            r = consumer.poll(Duration::from_millis(500)) => r,
            _ = stop.changed() => break,
        };
        let records = match records {
            Ok(records) => records,
            Err(e) if e.is_retriable() => {
                tracing::debug!(error = %e, "global table fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let durable = synced.elapsed() >= interval;
        if durable {
            synced = Instant::now();
        }
        apply(&mut globals, records, 1, durable)?;
    }
    flush(&mut globals, true)
}

/// Adds `records` to their stores' batches, loading a batch once it holds
/// `batch` records.
fn apply(
    globals: &mut BTreeMap<String, Global>,
    records: Vec<runnel_client::ConsumerRecord>,
    batch: usize,
    durable: bool,
) -> Result<(), StreamsError> {
    for r in records {
        let Some(g) = globals.values_mut().find(|g| *g.topic == *r.topic) else {
            continue;
        };
        g.next.insert(r.partition, r.offset + 1);
        if let Some(key) = r.key {
            g.batch.push((key, r.value));
        }
    }
    for g in globals.values_mut() {
        if g.batch.len() >= batch {
            load(g, durable)?;
        }
    }
    Ok(())
}

/// Loads every store's batch, with where each partition stands.
fn flush(globals: &mut BTreeMap<String, Global>, durable: bool) -> Result<(), StreamsError> {
    for g in globals.values_mut() {
        load(g, durable)?;
    }
    Ok(())
}

/// Loads `g`'s batch, with each partition's next offset, in one transaction.
fn load(g: &mut Global, durable: bool) -> Result<(), StreamsError> {
    let names: Vec<(String, i64)> = g
        .next
        .iter()
        .map(|(p, next)| (format!("{PARTITION_MARK}{p}"), *next))
        .collect();
    let marks: Vec<(&str, i64)> = names.iter().map(|(m, o)| (m.as_str(), *o)).collect();
    g.store
        .load_marked(std::mem::take(&mut g.batch), &marks, durable)
}
