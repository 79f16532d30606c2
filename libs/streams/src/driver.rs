//! Runs a topology without a cluster (Kafka's `TopologyTestDriver`): pipe
//! records into its input topics, read what it wrote to its output topics.
//! Records are processed one at a time, in the order piped, each through
//! the whole graph before the next.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::config::{OnDeserializationError, StreamsConfig};
use crate::error::StreamsError;
use crate::processor::PunctuationType;
use crate::serde::{Serde, read};
use crate::store::{KeyValueStore, MemoryStore, ReadStore};
use crate::topology::{Ctx, OutputRecord, Rec, Topology, changelog_topic};

/// A topology run in memory.
pub struct TestDriver {
    topology: Topology,
    config: StreamsConfig,
    /// The topics the topology both writes and reads (repartition topics,
    /// `through` topics), by their real names: their records are fed back in.
    loops: Vec<String>,
    /// Each store's changelog topic, and every record written to it (what
    /// [`TestDriver::move_task`] restores from).
    changelogs: BTreeMap<String, (String, Vec<OutputRecord>)>,
    stores: BTreeMap<String, Box<dyn KeyValueStore>>,
    slots: BTreeMap<usize, Box<dyn Any + Send>>,
    outputs: BTreeMap<String, Vec<OutputRecord>>,
    stream_time: i64,
    dropped_late: u64,
    skipped: u64,
    scratch: Vec<Vec<(usize, Rec)>>,
    /// The global tables' stores, by topic (written when a record is piped
    /// to the topic) and by store name (what the topology reads).
    global_topics: BTreeMap<String, Arc<Mutex<MemoryStore>>>,
    globals: BTreeMap<String, Arc<dyn ReadStore>>,
    /// The driver's wall clock, ms (moved by `advance_wall_clock`).
    wall_clock: i64,
}

/// What the driver runs through the topology next.
enum Step {
    /// A record of a topic the topology reads.
    Record(OutputRecord),
    /// A wall-clock punctuation at this time.
    WallClock(i64),
}

impl TestDriver {
    /// A driver for `topology` run with `config` (its `application_id`
    /// prefixes the internal topics).
    pub fn new(topology: Topology, config: StreamsConfig) -> TestDriver {
        let mut global_topics = BTreeMap::new();
        let mut globals: BTreeMap<String, Arc<dyn ReadStore>> = BTreeMap::new();
        for (topic, store) in topology.global_tables() {
            let s = Arc::new(Mutex::new(MemoryStore::new()));
            globals.insert(store.clone(), Arc::clone(&s) as Arc<dyn ReadStore>);
            global_topics.insert(topic.clone(), s);
        }
        let stores = topology
            .stores()
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    Box::new(MemoryStore::new()) as Box<dyn KeyValueStore>,
                )
            })
            .collect();
        let changelogs = topology
            .stores()
            .iter()
            .map(|name| {
                let topic = changelog_topic(&config.application_id, name);
                (topic, (name.clone(), Vec::new()))
            })
            .collect();
        TestDriver {
            loops: {
                let sources = topology.input_topics(&config.application_id);
                let mut sinks = topology.sink_topics();
                sinks.extend(topology.repartition_topics(&config.application_id));
                sinks
                    .into_iter()
                    .filter(|t| sources.iter().any(|(s, _)| s == t))
                    .collect()
            },
            changelogs,
            topology,
            config,
            stores,
            slots: BTreeMap::new(),
            outputs: BTreeMap::new(),
            stream_time: i64::MIN,
            dropped_late: 0,
            skipped: 0,
            scratch: Vec::new(),
            global_topics,
            globals,
            wall_clock: 0,
        }
    }

    /// Input records skipped because they did not deserialize (with
    /// [`OnDeserializationError::LogAndContinue`]).
    pub fn skipped_records(&self) -> u64 {
        self.skipped
    }

    /// Records dropped so far for arriving after their window closed
    /// (Kafka's `dropped-records` for late records).
    pub fn dropped_late_records(&self) -> u64 {
        self.dropped_late
    }

    /// Processes one record of `topic` given as bytes (`None`: null), then
    /// whatever it wrote to topics it also reads (repartition and `through`
    /// topics), until nothing is left.
    pub fn pipe_raw(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        if let Some(global) = self.global_topics.get(topic) {
            // A global table's topic goes into its store, not to a task.
            if let Some(key) = key {
                let mut store = global.lock();
                store.put(key, value.map(Bytes::copy_from_slice))?;
                store.commit(None)?;
            }
            return Ok(());
        }
        self.run(Step::Record(OutputRecord {
            topic: topic.to_owned(),
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            timestamp,
            headers: Vec::new(),
        }))
    }

    /// Moves the driver's wall clock `ms` ahead and gives the processors
    /// that punctuate by wall-clock time their punctuations (Kafka's
    /// `advanceWallClockTime`). The clock starts at 0.
    pub fn advance_wall_clock(&mut self, ms: i64) -> Result<(), StreamsError> {
        self.wall_clock = self.wall_clock.saturating_add(ms.max(0));
        self.run(Step::WallClock(self.wall_clock))
    }

    /// Runs `first`, then every record it wrote to a topic the topology
    /// reads, until nothing is left.
    fn run(&mut self, first: Step) -> Result<(), StreamsError> {
        let mut pending = VecDeque::from([first]);
        while let Some(step) = pending.pop_front() {
            let mut out = Vec::new();
            let mut ctx = Ctx {
                application_id: &self.config.application_id,
                stores: &mut self.stores,
                slots: &mut self.slots,
                sink: &mut out,
                stream_time: self.stream_time,
                dropped_late: &mut self.dropped_late,
                scratch: &mut self.scratch,
                globals: &self.globals,
            };
            let processed = match &step {
                Step::Record(r) => self
                    .topology
                    .process(
                        &mut ctx,
                        &r.topic,
                        r.key.as_deref(),
                        r.value.as_deref(),
                        r.timestamp,
                        &r.headers,
                    )
                    .and_then(|()| {
                        let now = ctx.stream_time;
                        self.topology
                            .punctuate(&mut ctx, PunctuationType::StreamTime, now)
                    }),
                Step::WallClock(now) => {
                    self.topology
                        .punctuate(&mut ctx, PunctuationType::WallClockTime, *now)
                }
            };
            self.stream_time = ctx.stream_time;
            match processed {
                Err(e)
                    if e.is_bad_input()
                        && self.config.on_deserialization_error
                            == OnDeserializationError::LogAndContinue =>
                {
                    tracing::warn!(error = %e, "skipping an input record that does not deserialize");
                    self.skipped += 1;
                    continue;
                }
                other => other?,
            }
            // Each record is its own commit here.
            for store in self.stores.values_mut() {
                store.commit(None)?;
            }
            for o in out {
                if let Some((_, log)) = self.changelogs.get_mut(&o.topic) {
                    log.push(o.clone());
                }
                if self.loops.contains(&o.topic) {
                    pending.push_back(Step::Record(o.clone()));
                }
                self.outputs.entry(o.topic.clone()).or_default().push(o);
            }
        }
        Ok(())
    }

    /// Moves the task as a rebalance would: its stores are rebuilt from
    /// nothing but their changelogs, and what it held in memory (stream
    /// time, suppression buffers) is gone. What comes out after must not
    /// differ from what would have without the move.
    pub fn move_task(&mut self) -> Result<(), StreamsError> {
        for (name, log) in self.changelogs.values() {
            let mut store = MemoryStore::new();
            for r in log {
                if let Some(key) = &r.key {
                    store.put(key, r.value.clone())?;
                }
            }
            store.commit(None)?;
            self.stores.insert(name.clone(), Box::new(store));
        }
        self.slots.clear();
        self.stream_time = i64::MIN;
        Ok(())
    }

    /// An input topic taking typed records written with the serdes given
    /// (Kafka's `createInputTopic`).
    pub fn input<K, V, KS: Serde<K>, VS: Serde<V>>(
        &mut self,
        topic: &str,
        key_serde: KS,
        value_serde: VS,
    ) -> TestInput<'_, K, V, KS, VS> {
        TestInput {
            driver: self,
            topic: topic.to_owned(),
            key_serde,
            value_serde,
            types: PhantomData,
        }
    }

    /// Takes every record written to `topic` so far, as bytes.
    pub fn read_raw(&mut self, topic: &str) -> Vec<OutputRecord> {
        self.outputs.remove(topic).unwrap_or_default()
    }

    /// Takes every record written to `topic` so far, read with the serdes
    /// given: (key, value, timestamp).
    pub fn read<K, V>(
        &mut self,
        topic: &str,
        key_serde: &impl Serde<K>,
        value_serde: &impl Serde<V>,
    ) -> Result<Vec<(K, V, i64)>, StreamsError> {
        self.read_raw(topic)
            .into_iter()
            .map(|r| {
                let k = read(key_serde, topic, r.key.as_ref().map(Bytes::as_ref))?;
                let v = read(value_serde, topic, r.value.as_ref().map(Bytes::as_ref))?;
                Ok((k, v, r.timestamp))
            })
            .collect()
    }
}

/// Typed records into one input topic of a [`TestDriver`].
pub struct TestInput<'a, K, V, KS, VS> {
    driver: &'a mut TestDriver,
    topic: String,
    key_serde: KS,
    value_serde: VS,
    types: PhantomData<fn(K, V)>,
}

impl<K, V, KS: Serde<K>, VS: Serde<V>> TestInput<'_, K, V, KS, VS> {
    /// Processes one record.
    pub fn pipe(&mut self, key: K, value: V, timestamp: i64) -> Result<(), StreamsError> {
        let k = self.key_serde.serialize_nullable(&self.topic, &key)?;
        let v = self.value_serde.serialize_nullable(&self.topic, &value)?;
        self.driver
            .pipe_raw(&self.topic, k.as_deref(), v.as_deref(), timestamp)
    }
}
