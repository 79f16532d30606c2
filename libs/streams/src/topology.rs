//! The topology: what an application does to the records it reads, built
//! with [`StreamsBuilder`] and typed [`KStream`]s, kept as a graph of
//! processor nodes that pass records on to their children.
//!
//! Inside the graph keys and values are type-erased (`Arc<dyn Any>`), so
//! one node can feed several children without cloning user types; the typed
//! builder methods are the only place that knows what each node holds, and
//! each closure they install downcasts to exactly the type it was built for.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::StreamsError;
use crate::processor::PunctuationType;
use crate::serde::{Serde, read};
use crate::store::{KeyValueStore, ReadStore};
use crate::window::{TimeWindows, Windowed, WindowedSerde, window_store_key};

/// A key or value inside the graph.
pub(crate) type Erased = Arc<dyn Any + Send + Sync>;

/// A record inside the graph.
#[derive(Clone)]
pub(crate) struct Rec {
    pub key: Erased,
    pub value: Erased,
    pub timestamp: i64,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A record as it reaches a sink: bytes for one output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// The topic it goes to.
    pub topic: String,
    /// Its key (`None`: null).
    pub key: Option<Bytes>,
    /// Its value (`None`: null, a tombstone).
    pub value: Option<Bytes>,
    /// Its timestamp (the input record's, as Kafka Streams keeps it).
    pub timestamp: i64,
    /// Its headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Node index in the graph.
pub(crate) type NodeId = usize;

/// What a processor node does with one record: pushes what it passes on
/// to `out` as (output port, record); most nodes have one port, 0.
pub(crate) type ProcessFn =
    dyn Fn(&mut Ctx<'_>, &Rec, &mut Vec<(usize, Rec)>) -> Result<(), StreamsError> + Send + Sync;

/// What a hand-written processor does at a punctuation of a kind, at a
/// time: pushes what it passes on to `out`, as [`ProcessFn`] does.
pub(crate) type PunctuateFn = dyn Fn(&mut Ctx<'_>, PunctuationType, i64, &mut Vec<(usize, Rec)>) -> Result<(), StreamsError>
    + Send
    + Sync;

/// What a task gives its processors: its stores, and where records for
/// topics (sinks, changelogs) go.
pub(crate) struct Ctx<'a> {
    pub application_id: &'a str,
    pub stores: &'a mut BTreeMap<String, Box<dyn KeyValueStore>>,
    /// Per-task state of nodes that keep some in memory, by slot.
    pub slots: &'a mut BTreeMap<usize, Box<dyn Any + Send>>,
    pub sink: &'a mut Vec<OutputRecord>,
    /// The task's stream time: the largest timestamp it has processed.
    pub stream_time: i64,
    /// Records dropped for arriving after their window closed.
    pub dropped_late: &'a mut u64,
    /// Emptied output buffers of processor nodes, kept from record to
    /// record so that passing one along allocates nothing.
    pub scratch: &'a mut Vec<Vec<(usize, Rec)>>,
    /// The global tables' stores, by name (shared by every task).
    pub globals: &'a BTreeMap<String, Arc<dyn ReadStore>>,
}

impl Ctx<'_> {
    /// The store `name` of this task.
    pub(crate) fn store(
        &mut self,
        name: &str,
    ) -> Result<&mut Box<dyn KeyValueStore>, StreamsError> {
        self.stores
            .get_mut(name)
            .ok_or_else(|| StreamsError::Topology(format!("no state store {name}")))
    }

    /// Folds a record into the value under `key` of store `name`: reads
    /// it, applies `step`, writes the result to the store and to the
    /// store's changelog topic, and returns it.
    fn fold_into<A>(
        &mut self,
        name: &str,
        changelog: &str,
        key: Bytes,
        serde: &impl Serde<A>,
        timestamp: i64,
        step: impl FnOnce(Option<A>) -> A,
    ) -> Result<A, StreamsError> {
        let store = self.store(name)?;
        let old = match store.get(&key)? {
            Some(bytes) => Some(serde.deserialize(changelog, &bytes)?),
            None => None,
        };
        let new = step(old);
        let bytes = serde.serialize(changelog, &new)?;
        self.log(name, changelog, key, Some(bytes), timestamp)?;
        Ok(new)
    }

    /// Writes `value` under `key` to store `name` and to its changelog
    /// topic (`None`: a deletion and a tombstone).
    pub(crate) fn log(
        &mut self,
        name: &str,
        changelog: &str,
        key: Bytes,
        value: Option<Bytes>,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        self.store(name)?.put(&key, value.clone())?;
        self.sink.push(OutputRecord {
            topic: changelog.to_owned(),
            key: Some(key),
            value,
            timestamp,
            headers: Vec::new(),
        });
        Ok(())
    }

    /// Whether `real` is the real name of topic `name` (as [`Self::topic`]
    /// makes it, without building it: this runs for every input record).
    fn is_topic(&self, real: &str, name: &str, internal: bool) -> bool {
        if internal {
            real.strip_prefix(self.application_id)
                .and_then(|r| r.strip_prefix('-'))
                == Some(name)
        } else {
            real == name
        }
    }

    /// The real name of a topic: internal ones (repartition, changelog)
    /// carry the application id first, as Kafka Streams names them.
    pub fn topic(&self, name: &str, internal: bool) -> String {
        if internal {
            format!("{}-{name}", self.application_id)
        } else {
            name.to_owned()
        }
    }
}

/// A source's timestamp extractor, on the record read into the graph's
/// types and the timestamp it carries.
pub(crate) type TimestampFn =
    dyn Fn(&Erased, &Erased, i64) -> Result<i64, StreamsError> + Send + Sync;

/// Reads a source record's bytes into the graph's types.
pub(crate) type SourceFn = dyn Fn(&str, Option<&[u8]>, Option<&[u8]>) -> Result<(Erased, Erased), StreamsError>
    + Send
    + Sync;

/// Writes a record's key and value as bytes for a sink topic.
pub(crate) type SinkFn =
    dyn Fn(&str, &Rec) -> Result<(Option<Bytes>, Option<Bytes>), StreamsError> + Send + Sync;

pub(crate) enum Node {
    Source {
        topics: Vec<String>,
        internal: bool,
        read: Arc<SourceFn>,
        /// The source's timestamp extractor, if it has one.
        timestamps: Option<Arc<TimestampFn>>,
    },
    Processor(Arc<ProcessFn>),
    Sink {
        topic: String,
        internal: bool,
        write: Arc<SinkFn>,
    },
}

/// The built topology: nodes and who feeds whom.
pub struct Topology {
    pub(crate) nodes: Vec<Node>,
    /// For each node, its children and the output port each hangs off.
    pub(crate) children: Vec<Vec<(usize, NodeId)>>,
    /// The state stores a task of this topology holds.
    pub(crate) stores: Vec<String>,
    /// The global tables every instance keeps whole: (topic, store).
    pub(crate) globals: Vec<(String, String)>,
    /// The nodes that punctuate, and how.
    pub(crate) punctuators: Vec<(NodeId, Arc<PunctuateFn>)>,
}

impl Topology {
    /// The names of its state stores.
    pub fn stores(&self) -> &[String] {
        &self.stores
    }

    /// Its global tables, as (topic, store).
    pub fn global_tables(&self) -> &[(String, String)] {
        &self.globals
    }

    /// The topics the topology reads.
    pub fn source_topics(&self) -> Vec<String> {
        self.topics(|n| match n {
            Node::Source { topics, .. } => topics.as_slice(),
            _ => &[],
        })
    }

    /// The topics the topology writes.
    pub fn sink_topics(&self) -> Vec<String> {
        self.topics(|n| match n {
            Node::Sink { topic, .. } => std::slice::from_ref(topic),
            _ => &[],
        })
    }

    /// The topics `of` names across the nodes, sorted, once each.
    fn topics(&self, of: impl Fn(&Node) -> &[String]) -> Vec<String> {
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|n| of(n).iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Runs one input record through the graph from every source of
    /// `topic`, collecting what reaches the sinks.
    pub(crate) fn process(
        &self,
        ctx: &mut Ctx<'_>,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(String, Option<Bytes>)],
    ) -> Result<(), StreamsError> {
        for (id, node) in self.nodes.iter().enumerate() {
            if let Node::Source {
                topics,
                internal,
                read,
                timestamps,
            } = node
                && topics.iter().any(|t| ctx.is_topic(topic, t, *internal))
            {
                let (key, value) = read(topic, key, value).map_err(|e| match e {
                    StreamsError::Serde(source) => StreamsError::Deserialize { timestamp, source },
                    other => other,
                })?;
                let timestamp = match timestamps {
                    Some(extract) => extract(&key, &value, timestamp)?,
                    None => timestamp,
                };
                if timestamp < 0 {
                    return Err(StreamsError::InvalidTimestamp {
                        topic: topic.to_owned(),
                        timestamp,
                    });
                }
                // Stream time follows the timestamps records are processed
                // with: the extracted ones where the source has an extractor.
                ctx.stream_time = ctx.stream_time.max(timestamp);
                let rec = Rec {
                    key,
                    value,
                    timestamp,
                    headers: headers.to_vec(),
                };
                self.forward(ctx, id, 0, &rec)?;
            }
        }
        Ok(())
    }

    /// Whether any processor punctuates (its instance decides by which
    /// clock).
    pub(crate) fn punctuates(&self) -> bool {
        !self.punctuators.is_empty()
    }

    /// Gives every punctuating processor a punctuation of `kind` at `now`,
    /// passing on what each forwards.
    pub(crate) fn punctuate(
        &self,
        ctx: &mut Ctx<'_>,
        kind: PunctuationType,
        now: i64,
    ) -> Result<(), StreamsError> {
        for (node, punctuate) in &self.punctuators {
            let mut out = ctx.scratch.pop().unwrap_or_default();
            let passed = punctuate(ctx, kind, now, &mut out).and_then(|()| {
                out.iter()
                    .try_for_each(|(port, r)| self.forward(ctx, *node, *port, r))
            });
            out.clear();
            ctx.scratch.push(out);
            passed?;
        }
        Ok(())
    }

    /// Hands `rec` to the children of `from` on `port`, depth first, as
    /// Kafka Streams does: a record reaches every sink before the next one
    /// enters.
    fn forward(
        &self,
        ctx: &mut Ctx<'_>,
        from: NodeId,
        port: usize,
        rec: &Rec,
    ) -> Result<(), StreamsError> {
        for &(p, child) in &self.children[from] {
            if p != port {
                continue;
            }
            match &self.nodes[child] {
                Node::Source { .. } => {}
                Node::Processor(f) => {
                    let mut out = ctx.scratch.pop().unwrap_or_default();
                    let passed = f(ctx, rec, &mut out).and_then(|()| {
                        out.iter()
                            .try_for_each(|(port, r)| self.forward(ctx, child, *port, r))
                    });
                    out.clear();
                    ctx.scratch.push(out);
                    passed?;
                }
                Node::Sink {
                    topic,
                    internal,
                    write,
                } => {
                    let topic = ctx.topic(topic, *internal);
                    let (key, value) = write(&topic, rec)?;
                    ctx.sink.push(OutputRecord {
                        topic,
                        key,
                        value,
                        timestamp: rec.timestamp,
                        headers: rec.headers.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The graph while it is being built.
#[derive(Default)]
pub(crate) struct Graph {
    nodes: Vec<Node>,
    children: Vec<Vec<(usize, NodeId)>>,
    pub(crate) stores: Vec<String>,
    /// Per-task state slots handed out so far (suppression buffers).
    pub(crate) slots: usize,
    /// Mistakes found while building, reported by `build`.
    pub(crate) errors: Vec<String>,
    /// The global tables: (topic, store).
    pub(crate) globals: Vec<(String, String)>,
    /// The nodes that punctuate, and how.
    pub(crate) punctuators: Vec<(NodeId, Arc<PunctuateFn>)>,
}

impl Graph {
    pub(crate) fn add(&mut self, node: Node, parents: &[(NodeId, usize)]) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(node);
        self.children.push(Vec::new());
        for &(parent, port) in parents {
            self.children[parent].push((port, id));
        }
        id
    }
}

/// Builds a [`Topology`] (Kafka Streams' `StreamsBuilder`).
#[derive(Default)]
pub struct StreamsBuilder {
    pub(crate) graph: Rc<RefCell<Graph>>,
}

/// Downcasts a graph key or value to the type its node was built for.
pub(crate) fn cast<T: 'static>(v: &Erased) -> Result<&T, StreamsError> {
    v.downcast_ref::<T>().ok_or_else(|| {
        StreamsError::Topology(format!(
            "a node expected {}, the graph passed something else",
            std::any::type_name::<T>()
        ))
    })
}

impl StreamsBuilder {
    /// A new, empty builder.
    pub fn new() -> StreamsBuilder {
        StreamsBuilder::default()
    }

    /// The records of `topic`, keys and values read with the serdes given.
    pub fn stream<K, V>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> KStream<K, V>
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let read: Arc<SourceFn> = Arc::new(move |topic, key, value| {
            let k = read(&key_serde, topic, key)?;
            let v = read(&value_serde, topic, value)?;
            Ok((Arc::new(k) as Erased, Arc::new(v) as Erased))
        });
        let id = self.graph.borrow_mut().add(
            Node::Source {
                topics: vec![topic.to_owned()],
                internal: false,
                read,
                timestamps: None,
            },
            &[],
        );
        KStream::at(&self.graph, vec![(id, 0)], false)
    }

    /// The records of `topic` as a stream, each processed with the
    /// timestamp `extract` gives it from its key, its value and the
    /// timestamp it was written with (Kafka's `Consumed` with a
    /// `TimestampExtractor`): windows, joins and stream time go by it, and
    /// the outputs carry it. A negative timestamp is an error handled as
    /// one that does not deserialize (`on_deserialization_error`).
    pub fn stream_with_timestamps<K, V>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
        extract: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static,
    ) -> KStream<K, V>
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let stream = self.stream(topic, key_serde, value_serde);
        let extract: Arc<TimestampFn> =
            Arc::new(move |k, v, timestamp| Ok(extract(cast::<K>(k)?, cast::<V>(v)?, timestamp)));
        if let Some(&(id, _)) = stream.parents.first()
            && let Some(Node::Source { timestamps, .. }) = self.graph.borrow_mut().nodes.get_mut(id)
        {
            *timestamps = Some(extract);
        }
        stream
    }

    /// The topology built so far. Refuses one in which two aggregations
    /// name the same store (they would share its state and its changelog),
    /// as Kafka's `TopologyException`.
    pub fn build(self) -> Result<Topology, StreamsError> {
        let graph = std::mem::take(&mut *self.graph.borrow_mut());
        if let Some(e) = graph.errors.first() {
            return Err(StreamsError::Topology(e.clone()));
        }
        let mut names = graph.stores.clone();
        names.extend(graph.globals.iter().map(|(_, store)| store.clone()));
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(StreamsError::Topology(format!(
                "state store {} is named by two operations",
                w[0]
            )));
        }
        Ok(Topology {
            nodes: graph.nodes,
            children: graph.children,
            stores: graph.stores,
            globals: graph.globals,
            punctuators: graph.punctuators,
        })
    }
}

/// A test on a record's key and value, for [`KStream::branch`].
pub type Predicate<K, V> = Box<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// A stream of keyed records (Kafka Streams' `KStream`).
pub struct KStream<K, V> {
    pub(crate) graph: Rc<RefCell<Graph>>,
    /// The nodes (and ports) whose output this stream is: one, or several
    /// after [`KStream::merge`].
    pub(crate) parents: Vec<(NodeId, usize)>,
    /// Whether an operation since the source may have changed keys, so
    /// records are no longer in the partition their key hashes to: an
    /// aggregation must then repartition first (Kafka's "key changing"
    /// operations: `map`, `select_key`, `flat_map`).
    pub(crate) key_changed: bool,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> KStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub(crate) fn at(
        graph: &Rc<RefCell<Graph>>,
        parents: Vec<(NodeId, usize)>,
        key_changed: bool,
    ) -> KStream<K, V> {
        KStream {
            graph: Rc::clone(graph),
            parents,
            key_changed,
            types: PhantomData,
        }
    }

    fn then<K2, V2>(
        &self,
        changes_key: bool,
        f: impl Fn(&K, &V, &Rec, &mut Vec<(usize, Rec)>) + Send + Sync + 'static,
    ) -> KStream<K2, V2>
    where
        K2: Send + Sync + 'static,
        V2: Send + Sync + 'static,
    {
        let process: Arc<ProcessFn> = Arc::new(move |_, rec, out| {
            f(cast::<K>(&rec.key)?, cast::<V>(&rec.value)?, rec, out);
            Ok(())
        });
        let id = self
            .graph
            .borrow_mut()
            .add(Node::Processor(process), &self.parents);
        KStream::at(&self.graph, vec![(id, 0)], self.key_changed || changes_key)
    }

    /// The records for which `keep` is true.
    pub fn filter(&self, keep: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KStream<K, V> {
        self.then(false, move |k, v, rec, out| {
            if keep(k, v) {
                out.push((0, rec.clone()));
            }
        })
    }

    /// The records for which `drop` is false (Kafka's `filterNot`).
    pub fn filter_not(
        &self,
        drop: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.filter(move |k, v| !drop(k, v))
    }

    /// Each record turned into a new key and value.
    pub fn map<K2, V2>(
        &self,
        f: impl Fn(&K, &V) -> (K2, V2) + Send + Sync + 'static,
    ) -> KStream<K2, V2>
    where
        K2: Send + Sync + 'static,
        V2: Send + Sync + 'static,
    {
        self.then(true, move |k, v, rec, out| {
            let (k2, v2) = f(k, v);
            out.push((0, with(rec, Arc::new(k2), Arc::new(v2))));
        })
    }

    /// Each record with a new value, the key kept.
    pub fn map_values<V2>(&self, f: impl Fn(&V) -> V2 + Send + Sync + 'static) -> KStream<K, V2>
    where
        V2: Send + Sync + 'static,
    {
        self.then(false, move |_, v, rec, out| {
            out.push((0, with(rec, Arc::clone(&rec.key), Arc::new(f(v)))));
        })
    }

    /// Each record with a new key computed from it (Kafka's `selectKey`).
    pub fn select_key<K2>(&self, f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static) -> KStream<K2, V>
    where
        K2: Send + Sync + 'static,
    {
        self.then(true, move |k, v, rec, out| {
            out.push((0, with(rec, Arc::new(f(k, v)), Arc::clone(&rec.value))));
        })
    }

    /// Each record turned into zero or more records.
    pub fn flat_map<K2, V2, I>(
        &self,
        f: impl Fn(&K, &V) -> I + Send + Sync + 'static,
    ) -> KStream<K2, V2>
    where
        K2: Send + Sync + 'static,
        V2: Send + Sync + 'static,
        I: IntoIterator<Item = (K2, V2)>,
    {
        self.then(true, move |k, v, rec, out| {
            for (k2, v2) in f(k, v) {
                out.push((0, with(rec, Arc::new(k2), Arc::new(v2))));
            }
        })
    }

    /// Each record turned into zero or more values under its key.
    pub fn flat_map_values<V2, I>(
        &self,
        f: impl Fn(&V) -> I + Send + Sync + 'static,
    ) -> KStream<K, V2>
    where
        V2: Send + Sync + 'static,
        I: IntoIterator<Item = V2>,
    {
        self.then(false, move |_, v, rec, out| {
            for v2 in f(v) {
                out.push((0, with(rec, Arc::clone(&rec.key), Arc::new(v2))));
            }
        })
    }

    /// Calls `f` on each record and passes it on unchanged.
    pub fn peek(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) -> KStream<K, V> {
        self.then(false, move |k, v, rec, out| {
            f(k, v);
            out.push((0, rec.clone()));
        })
    }

    /// Splits the stream: each record goes to the first branch whose
    /// predicate it matches, or is dropped if none does (Kafka's `branch`;
    /// end with `|_, _| true` for a default branch).
    pub fn branch(&self, predicates: Vec<Predicate<K, V>>) -> Vec<KStream<K, V>> {
        let n = predicates.len();
        let process: Arc<ProcessFn> = Arc::new(move |_, rec, out| {
            let (k, v) = (cast::<K>(&rec.key)?, cast::<V>(&rec.value)?);
            if let Some(port) = predicates.iter().position(|p| p(k, v)) {
                out.push((port, rec.clone()));
            }
            Ok(())
        });
        let id = self
            .graph
            .borrow_mut()
            .add(Node::Processor(process), &self.parents);
        (0..n)
            .map(|port| KStream::at(&self.graph, vec![(id, port)], self.key_changed))
            .collect()
    }

    /// This stream and `other` as one.
    pub fn merge(&self, other: &KStream<K, V>) -> KStream<K, V> {
        let mut parents = self.parents.clone();
        parents.extend(other.parents.iter().copied());
        KStream::at(&self.graph, parents, self.key_changed || other.key_changed)
    }

    /// Writes the stream to `topic`, keys and values with the serdes given.
    pub fn to(&self, topic: &str, key_serde: impl Serde<K>, value_serde: impl Serde<V>) {
        let write: Arc<SinkFn> = Arc::new(move |topic, rec| {
            let key = key_serde.serialize_nullable(topic, cast::<K>(&rec.key)?)?;
            let value = value_serde.serialize_nullable(topic, cast::<V>(&rec.value)?)?;
            Ok((key, value))
        });
        self.graph.borrow_mut().add(
            Node::Sink {
                topic: topic.to_owned(),
                internal: false,
                write,
            },
            &self.parents,
        );
    }
}

impl<K, V> KStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Writes the stream to `topic` and goes on from what is read back
    /// from it (Kafka's `through`): the records are then partitioned by
    /// their key. The topic is the application's to create, with the
    /// source topics' partition count.
    pub fn through(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> KStream<K, V> {
        let parents = round_trip(
            &self.graph,
            &self.parents,
            topic.to_owned(),
            false,
            Arc::new(key_serde),
            Arc::new(value_serde),
        );
        KStream::at(&self.graph, parents, false)
    }
}

/// `rec` with a new key and value, its timestamp and headers kept.
pub(crate) fn with(rec: &Rec, key: Erased, value: Erased) -> Rec {
    Rec {
        key,
        value,
        timestamp: rec.timestamp,
        headers: rec.headers.clone(),
    }
}

impl Topology {
    /// The topics the topology reads as application `application_id`
    /// names them on the cluster, sorted, each with whether it is one of
    /// the application's own (a repartition topic).
    pub(crate) fn input_topics(&self, application_id: &str) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = self
            .nodes
            .iter()
            .flat_map(|n| match n {
                Node::Source {
                    topics, internal, ..
                } => topics
                    .iter()
                    .map(|t| match internal {
                        true => (format!("{application_id}-{t}"), true),
                        false => (t.clone(), false),
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Each input topic's sub-topology (by its real name for application
    /// `application_id`): topics whose records meet in the graph (their
    /// sources reach a common node) share one. Kafka Streams runs each
    /// sub-topology as a task of its own and takes records in timestamp
    /// order only among its topics; a repartition topic starts a new one.
    pub(crate) fn sub_topologies(&self, application_id: &str) -> BTreeMap<String, usize> {
        let mut root: Vec<usize> = (0..self.nodes.len()).collect();
        fn find(root: &mut [usize], mut n: usize) -> usize {
            while root[n] != n {
                root[n] = root[root[n]];
                n = root[n];
            }
            n
        }
        for (from, children) in self.children.iter().enumerate() {
            for &(_, child) in children {
                let (a, b) = (find(&mut root, from), find(&mut root, child));
                root[a] = b;
            }
        }
        let mut ids: BTreeMap<usize, usize> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for (id, node) in self.nodes.iter().enumerate() {
            if let Node::Source {
                topics, internal, ..
            } = node
            {
                let r = find(&mut root, id);
                let next = ids.len();
                let group = *ids.entry(r).or_insert(next);
                for t in topics {
                    let name = match internal {
                        true => format!("{application_id}-{t}"),
                        false => t.clone(),
                    };
                    out.insert(name, group);
                }
            }
        }
        out
    }

    /// The real names of the repartition topics the topology writes and
    /// reads back, for application `application_id`.
    pub(crate) fn repartition_topics(&self, application_id: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Sink {
                    topic,
                    internal: true,
                    ..
                } if topic.ends_with(REPARTITION_SUFFIX) => {
                    Some(format!("{application_id}-{topic}"))
                }
                _ => None,
            })
            .collect()
    }
}

/// `count`'s step: one more.
pub(crate) fn count_step<K, V>(_: &K, _: &V, old: Option<i64>) -> i64 {
    old.unwrap_or(0) + 1
}

/// `reduce`'s step: the first value as it is, later ones combined in.
pub(crate) fn reduce_step<K, V: Clone>(
    combine: impl Fn(&V, &V) -> V + Send + Sync + 'static,
) -> impl Fn(&K, &V, Option<V>) -> V + Send + Sync + 'static {
    move |_, v, old| match old {
        Some(agg) => combine(&agg, v),
        None => v.clone(),
    }
}

/// `aggregate`'s step: `add` onto the aggregate so far, or onto `init()`.
pub(crate) fn aggregate_step<K, V, A>(
    init: impl Fn() -> A + Send + Sync + 'static,
    add: impl Fn(&K, &V, A) -> A + Send + Sync + 'static,
) -> impl Fn(&K, &V, Option<A>) -> A + Send + Sync + 'static {
    move |k, v, old| add(k, v, old.unwrap_or_else(&init))
}

pub(crate) const REPARTITION_SUFFIX: &str = "-repartition";
pub(crate) const CHANGELOG_SUFFIX: &str = "-changelog";

/// The changelog topic of store `store` in application `application_id`,
/// as Kafka Streams names it.
pub(crate) fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}{CHANGELOG_SUFFIX}")
}

impl<K, V> KStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The records grouped by their key, for an aggregation (Kafka's
    /// `groupByKey` with `Grouped.with(keySerde, valueSerde)`); through a
    /// repartition topic if an operation before may have changed keys.
    pub fn group_by_key(
        &self,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> KGroupedStream<K, V> {
        KGroupedStream {
            stream: KStream::at(&self.graph, self.parents.clone(), self.key_changed),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            repartition: self.key_changed,
        }
    }

    /// The records grouped by a new key: they go through a repartition
    /// topic first, so every record of one key reaches the same task
    /// (Kafka's `groupBy`).
    pub fn group_by<K2>(
        &self,
        key: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
        key_serde: impl Serde<K2>,
        value_serde: impl Serde<V>,
    ) -> KGroupedStream<K2, V>
    where
        K2: Send + Sync + 'static,
    {
        KGroupedStream {
            stream: self.select_key(key),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            repartition: true,
        }
    }
}

/// A stream grouped by key, ready to aggregate (Kafka's `KGroupedStream`).
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
    pub(crate) repartition: bool,
}

impl<K, V> KGroupedStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// How many records each key had, in store `store` (Kafka's `count`).
    pub fn count(&self, store: &str) -> KTable<K, i64> {
        self.fold(store, crate::serde::I64Serde, count_step)
    }

    /// Each key's values combined with `combine` (the first value as it
    /// is), in store `store` (Kafka's `reduce`).
    pub fn reduce(
        &self,
        store: &str,
        combine: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> KTable<K, V>
    where
        V: Clone,
    {
        let serde = ArcSerde(Arc::clone(&self.value_serde));
        self.fold(store, serde, reduce_step(combine))
    }

    /// Each key's values folded into an aggregate that starts as `init()`,
    /// in store `store`, written with `serde` (Kafka's `aggregate`).
    pub fn aggregate<A>(
        &self,
        store: &str,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&K, &V, A) -> A + Send + Sync + 'static,
        serde: impl Serde<A>,
    ) -> KTable<K, A>
    where
        A: Send + Sync + 'static,
    {
        self.fold(store, serde, aggregate_step(init, add))
    }

    /// The aggregation node: reads the key's aggregate from the store,
    /// folds the record in, writes the store and its changelog, and passes
    /// the new aggregate on. Records with a null key are dropped, as Kafka
    /// Streams drops them.
    fn fold<A>(
        &self,
        store: &str,
        serde: impl Serde<A>,
        step: impl Fn(&K, &V, Option<A>) -> A + Send + Sync + 'static,
    ) -> KTable<K, A>
    where
        A: Send + Sync + 'static,
    {
        let parents = self.aggregation_parents(store);
        let serde: Arc<dyn Serde<A>> = Arc::new(serde);
        let lookup = store_lookup(store, Arc::clone(&self.key_serde), Arc::clone(&serde));
        let kept = Kept {
            store: store.to_owned(),
            key_serde: Arc::clone(&self.key_serde),
            value_serde: Arc::clone(&serde),
        };
        let serde = ArcSerde(serde);
        let key_serde = Arc::clone(&self.key_serde);
        let name = store.to_owned();
        let changelog = format!("{store}{CHANGELOG_SUFFIX}");
        let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
            let (k, v) = (cast::<K>(&rec.key)?, cast::<V>(&rec.value)?);
            let changelog = ctx.topic(&changelog, true);
            let Some(key) = key_serde.serialize_nullable(&changelog, k)? else {
                return Ok(());
            };
            let new = ctx.fold_into(&name, &changelog, key, &serde, rec.timestamp, |old| {
                step(k, v, old)
            })?;
            out.push((0, with(rec, Arc::clone(&rec.key), Arc::new(Some(new)))));
            Ok(())
        });
        self.aggregation(kept, parents, None, Some(lookup), process)
    }

    /// Adds an aggregation node keeping store `store` under `parents`.
    pub(crate) fn aggregation<K2, A>(
        &self,
        kept: Kept<K2, A>,
        parents: Vec<(NodeId, usize)>,
        grace: Option<i64>,
        lookup: Option<Arc<LookupFn<K2, A>>>,
        process: Arc<ProcessFn>,
    ) -> KTable<K2, A> {
        let store = kept.store.as_str();
        let graph = &self.stream.graph;
        let id = {
            let mut g = graph.borrow_mut();
            g.stores.push(store.to_owned());
            g.add(Node::Processor(process), &parents)
        };
        KTable {
            graph: Rc::clone(graph),
            parents: vec![(id, 0)],
            grace,
            lookup,
            kept: Some(kept),
            types: PhantomData,
        }
    }

    /// Where an aggregation over store `store` reads from: the stream, or
    /// the repartition topic after a key change.
    pub(crate) fn aggregation_parents(&self, store: &str) -> Vec<(NodeId, usize)> {
        if self.repartition {
            self.through_repartition(store)
        } else {
            self.stream.parents.clone()
        }
    }

    /// Writes the stream to `<store>-repartition` and reads it back: the
    /// parents an aggregation hangs off after a key change.
    fn through_repartition(&self, store: &str) -> Vec<(NodeId, usize)> {
        round_trip(
            &self.stream.graph,
            &self.stream.parents,
            format!("{store}{REPARTITION_SUFFIX}"),
            true,
            Arc::clone(&self.key_serde),
            Arc::clone(&self.value_serde),
        )
    }
}

/// A sink writing the records under `parents` to `topic` and a source
/// reading them back, keys and values with the serdes given; returns the
/// source, for what hangs off it. The records come back partitioned by key.
pub(crate) fn round_trip<K, V>(
    graph: &Rc<RefCell<Graph>>,
    parents: &[(NodeId, usize)],
    topic: String,
    internal: bool,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
) -> Vec<(NodeId, usize)>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let (ks, vs) = (Arc::clone(&key_serde), Arc::clone(&value_serde));
    let write: Arc<SinkFn> = Arc::new(move |topic, rec| {
        let key = ks.serialize_nullable(topic, cast::<K>(&rec.key)?)?;
        let value = vs.serialize_nullable(topic, cast::<V>(&rec.value)?)?;
        Ok((key, value))
    });
    let read: Arc<SourceFn> = Arc::new(move |topic, key, value| {
        let k = read(&ArcSerde(Arc::clone(&key_serde)), topic, key)?;
        let v = read(&ArcSerde(Arc::clone(&value_serde)), topic, value)?;
        Ok((Arc::new(k) as Erased, Arc::new(v) as Erased))
    });
    let mut g = graph.borrow_mut();
    g.add(
        Node::Sink {
            topic: topic.clone(),
            internal,
            write,
        },
        parents,
    );
    let source = g.add(
        Node::Source {
            topics: vec![topic],
            internal,
            read,
            timestamps: None,
        },
        &[],
    );
    vec![(source, 0)]
}

/// A shared serde used where an owned one is wanted.
pub(crate) struct ArcSerde<T>(pub(crate) Arc<dyn Serde<T>>);

impl<T: 'static> Serde<T> for ArcSerde<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn serialize(&self, topic: &str, value: &T) -> Result<Bytes, crate::serde::SerdeError> {
        self.0.serialize(topic, value)
    }
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<T, crate::serde::SerdeError> {
        self.0.deserialize(topic, data)
    }
    fn serialize_nullable(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Option<Bytes>, crate::serde::SerdeError> {
        self.0.serialize_nullable(topic, value)
    }
    fn deserialize_null(&self, topic: &str) -> Result<T, crate::serde::SerdeError> {
        self.0.deserialize_null(topic)
    }
}

/// Reads a key's current value from a table's store.
pub(crate) type LookupFn<K, V> =
    dyn Fn(&mut Ctx<'_>, &K) -> Result<Option<V>, StreamsError> + Send + Sync;

/// The lookup of a table kept in store `store`, keys and values written
/// with the serdes given.
fn store_lookup<K: 'static, V: 'static>(
    store: &str,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
) -> Arc<LookupFn<K, V>> {
    let (name, changelog) = (store.to_owned(), format!("{store}{CHANGELOG_SUFFIX}"));
    Arc::new(move |ctx, k| {
        let changelog = ctx.topic(&changelog, true);
        let Some(key) = key_serde.serialize_nullable(&changelog, k)? else {
            return Ok(None);
        };
        match ctx.store(&name)?.get(&key)? {
            Some(bytes) => Ok(Some(value_serde.deserialize(&changelog, &bytes)?)),
            None => Ok(None),
        }
    })
}

/// A table: the latest value of each key, as a changelog of updates
/// (Kafka Streams' `KTable`). Inside the graph an update's value is an
/// `Option<V>`: `None` deletes the key.
pub struct KTable<K, V> {
    pub(crate) graph: Rc<RefCell<Graph>>,
    pub(crate) parents: Vec<(NodeId, usize)>,
    /// A windowed aggregation's table: the grace period of its windows.
    pub(crate) grace: Option<i64>,
    /// How a join reads the table's current value of a key; none for
    /// tables kept by window (their store is keyed by window too).
    pub(crate) lookup: Option<Arc<LookupFn<K, V>>>,
    /// The store the table is kept in, and the serdes of its keys and
    /// values (what a suppression buffer logs its entries with).
    pub(crate) kept: Option<Kept<K, V>>,
    pub(crate) types: PhantomData<fn() -> (K, V)>,
}

/// Where a table is kept: its store and how its keys and values are written.
pub(crate) struct Kept<K, V> {
    pub(crate) store: String,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
}

impl<K, V> Clone for Kept<K, V> {
    fn clone(&self) -> Self {
        Kept {
            store: self.store.clone(),
            key_serde: Arc::clone(&self.key_serde),
            value_serde: Arc::clone(&self.value_serde),
        }
    }
}

impl<K, V> KTable<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The table's updates as a stream (Kafka's `toStream`): `None` is a
    /// deletion, written as a tombstone through a [`crate::Nullable`] serde.
    pub fn to_stream(&self) -> KStream<K, Option<V>> {
        KStream::at(&self.graph, self.parents.clone(), false)
    }
}

impl<K, V> KGroupedStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The grouped records in time windows, for a windowed aggregation
    /// (Kafka's `windowedBy(TimeWindows)`).
    pub fn windowed_by(&self, windows: TimeWindows) -> TimeWindowedKStream<K, V> {
        TimeWindowedKStream {
            grouped: self.copy(),
            windows,
        }
    }

    /// The same grouped stream (for a windowed one to hold).
    pub(crate) fn copy(&self) -> KGroupedStream<K, V> {
        KGroupedStream {
            stream: KStream::at(
                &self.stream.graph,
                self.stream.parents.clone(),
                self.stream.key_changed,
            ),
            key_serde: Arc::clone(&self.key_serde),
            value_serde: Arc::clone(&self.value_serde),
            repartition: self.repartition,
        }
    }
}

/// A grouped stream cut into time windows (Kafka's `TimeWindowedKStream`).
pub struct TimeWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: TimeWindows,
}

impl<K, V> TimeWindowedKStream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// How many records each key had in each window.
    pub fn count(&self, store: &str) -> KTable<Windowed<K>, i64> {
        self.fold(store, crate::serde::I64Serde, count_step)
    }

    /// Each key's values in each window combined with `combine`.
    pub fn reduce(
        &self,
        store: &str,
        combine: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, V>
    where
        V: Clone,
    {
        let serde = ArcSerde(Arc::clone(&self.grouped.value_serde));
        self.fold(store, serde, reduce_step(combine))
    }

    /// Each key's values in each window folded into an aggregate that
    /// starts as `init()`, written with `serde`.
    pub fn aggregate<A>(
        &self,
        store: &str,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&K, &V, A) -> A + Send + Sync + 'static,
        serde: impl Serde<A>,
    ) -> KTable<Windowed<K>, A>
    where
        A: Send + Sync + 'static,
    {
        self.fold(store, serde, aggregate_step(init, add))
    }

    /// The windowed aggregation node: the record is folded into every
    /// window holding its timestamp that is still open (stream time before
    /// its end plus grace); one that is closed for all of them is dropped
    /// and counted, as Kafka Streams drops late records. The store and its
    /// changelog are keyed by the key's bytes, the window start (eight
    /// bytes) and a sequence number (four), Kafka's window-store layout.
    fn fold<A>(
        &self,
        store: &str,
        serde: impl Serde<A>,
        step: impl Fn(&K, &V, Option<A>) -> A + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, A>
    where
        A: Send + Sync + 'static,
    {
        let g = &self.grouped;
        let parents = g.aggregation_parents(store);
        let key_serde = Arc::clone(&g.key_serde);
        let windows = self.windows;
        let serde: Arc<dyn Serde<A>> = Arc::new(serde);
        let kept = Kept {
            store: store.to_owned(),
            key_serde: Arc::new(WindowedSerde::new(
                ArcSerde(Arc::clone(&key_serde)),
                windows.size_ms,
            )) as Arc<dyn Serde<Windowed<K>>>,
            value_serde: Arc::clone(&serde),
        };
        let serde = ArcSerde(serde);
        let name = store.to_owned();
        let changelog = format!("{store}{CHANGELOG_SUFFIX}");
        let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
            let (k, v) = (cast::<K>(&rec.key)?, cast::<V>(&rec.value)?);
            let changelog = ctx.topic(&changelog, true);
            let Some(key) = key_serde.serialize_nullable(&changelog, k)? else {
                return Ok(());
            };
            let close = ctx.stream_time.saturating_sub(windows.grace_ms);
            let open: Vec<i64> = windows
                .starts_for(rec.timestamp)
                .into_iter()
                .filter(|start| start + windows.size_ms > close)
                .collect();
            if open.is_empty() {
                *ctx.dropped_late += 1;
                return Ok(());
            }
            for start in open {
                let new = ctx.fold_into(
                    &name,
                    &changelog,
                    window_store_key(&key, start, 0),
                    &serde,
                    rec.timestamp,
                    |old| step(k, v, old),
                )?;
                let windowed = Windowed {
                    key: k.clone(),
                    start,
                    end: start + windows.size_ms,
                };
                out.push((0, with(rec, Arc::new(windowed), Arc::new(Some(new)))));
            }
            Ok(())
        });
        g.aggregation(kept, parents, Some(windows.grace_ms), None, process)
    }
}

/// Buffered windowed updates of one suppression, by (window end, window
/// start, key): the latest update of each window waits here until the
/// window closes. The buffer's store (and changelog) holds the same
/// entries, so a task that moves or restarts rebuilds it.
type SuppressBuffer<K> = BTreeMap<(i64, i64, K), Rec>;

/// A suppression buffer entry's value in its store: a flag (1: a value, 0:
/// a deletion), the update's timestamp, then the value's bytes.
fn buffer_entry(value: Option<Bytes>, timestamp: i64) -> Bytes {
    let mut out = Vec::with_capacity(9 + value.as_ref().map_or(0, Bytes::len));
    out.push(u8::from(value.is_some()));
    out.extend_from_slice(&timestamp.to_be_bytes());
    if let Some(v) = value {
        out.extend_from_slice(&v);
    }
    Bytes::from(out)
}

/// Reads [`buffer_entry`]'s layout back: (value bytes, timestamp).
fn read_buffer_entry<'a>(
    store: &str,
    entry: &'a [u8],
) -> Result<(Option<&'a [u8]>, i64), StreamsError> {
    match entry {
        [flag @ (0 | 1), ts @ ..] if ts.len() >= 8 => {
            let (ts, value) = ts.split_at(8);
            let mut t = [0u8; 8];
            t.copy_from_slice(ts);
            Ok(((*flag == 1).then_some(value), i64::from_be_bytes(t)))
        }
        _ => Err(StreamsError::Store {
            store: store.to_owned(),
            reason: format!(
                "a suppression buffer entry of {} bytes is malformed",
                entry.len()
            ),
        }),
    }
}

const SUPPRESS_SUFFIX: &str = "-suppress";

impl<K, V> KTable<Windowed<K>, V>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Holds each window's updates back until the window closes (its end
    /// plus the grace period behind stream time), then passes on its final
    /// value once (Kafka's `suppress(Suppressed.untilWindowCloses(...))`).
    /// As in Kafka Streams, closed windows are let out when a later record
    /// reaches this point, not on a timer. The buffer is kept in store
    /// `<store>-suppress` (logged to its changelog like any store), so a
    /// window's pending result survives its task moving.
    pub fn suppress_until_window_closes(&self) -> Result<KTable<Windowed<K>, V>, StreamsError> {
        let (Some(grace), Some(kept)) = (self.grace, self.kept.clone()) else {
            return Err(StreamsError::Topology(
                "suppress until window closes needs a windowed aggregation".into(),
            ));
        };
        let name = name_of(&kept.store);
        let changelog = format!("{name}{CHANGELOG_SUFFIX}");
        let slot = {
            let mut g = self.graph.borrow_mut();
            if g.stores.contains(&name) {
                g.errors.push(format!(
                    "the table of store {} is suppressed twice",
                    kept.store
                ));
            }
            g.stores.push(name.clone());
            g.slots += 1;
            g.slots - 1
        };
        let (ks, vs) = (Arc::clone(&kept.key_serde), Arc::clone(&kept.value_serde));
        let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
            let w = cast::<Windowed<K>>(&rec.key)?;
            let v = cast::<Option<V>>(&rec.value)?;
            let changelog = ctx.topic(&changelog, true);
            if !ctx.slots.contains_key(&slot) {
                // First use in this task: the buffer is what its store holds.
                let mut buffer = SuppressBuffer::<K>::new();
                for (key, entry) in ctx.store(&name)?.all()? {
                    let w: Windowed<K> = ks.deserialize(&changelog, &key)?;
                    let (value, timestamp) = read_buffer_entry(&name, &entry)?;
                    let value: Option<V> =
                        value.map(|b| vs.deserialize(&changelog, b)).transpose()?;
                    let rec = Rec {
                        key: Arc::new(w.clone()),
                        value: Arc::new(value),
                        timestamp,
                        headers: Vec::new(),
                    };
                    buffer.insert((w.end, w.start, w.key), rec);
                }
                ctx.slots.insert(slot, Box::new(buffer));
            }
            let key = ks.serialize(&changelog, w)?;
            let value = v
                .as_ref()
                .map(|v| vs.serialize(&changelog, v))
                .transpose()?;
            let entry = buffer_entry(value, rec.timestamp);
            ctx.log(&name, &changelog, key, Some(entry), rec.timestamp)?;
            let close = ctx.stream_time.saturating_sub(grace);
            let mut closed = Vec::new();
            {
                let buffer = ctx
                    .slots
                    .get_mut(&slot)
                    .and_then(|b| b.downcast_mut::<SuppressBuffer<K>>())
                    .ok_or_else(|| {
                        StreamsError::Topology(format!("state slot {slot} holds another type"))
                    })?;
                buffer.insert((w.end, w.start, w.key.clone()), rec.clone());
                while let Some(entry) = buffer.first_entry() {
                    if entry.key().0 > close {
                        break;
                    }
                    closed.push(entry.remove());
                }
            }
            for r in closed {
                let key = ks.serialize(&changelog, cast::<Windowed<K>>(&r.key)?)?;
                ctx.log(&name, &changelog, key, None, rec.timestamp)?;
                out.push((0, r));
            }
            Ok(())
        });
        let id = self
            .graph
            .borrow_mut()
            .add(Node::Processor(process), &self.parents);
        Ok(KTable {
            graph: Rc::clone(&self.graph),
            parents: vec![(id, 0)],
            grace: self.grace,
            lookup: None,
            kept: Some(Kept {
                store: name_of(&kept.store),
                ..kept
            }),
            types: PhantomData,
        })
    }
}

/// The suppression buffer store of a table kept in `store`.
fn name_of(store: &str) -> String {
    format!("{store}{SUPPRESS_SUFFIX}")
}

impl StreamsBuilder {
    /// The records of `topic` as a table kept in store `store`: each record
    /// sets its key's value, a null value deletes it, a null key is
    /// skipped (Kafka's `builder.table`). The store is logged to
    /// `<application.id>-<store>-changelog`.
    pub fn table<K, V>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
        store: &str,
    ) -> KTable<K, V>
    where
        K: Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let (key_serde, value_serde): (Arc<dyn Serde<K>>, Arc<dyn Serde<V>>) =
            (Arc::new(key_serde), Arc::new(value_serde));
        let (ks, vs) = (Arc::clone(&key_serde), Arc::clone(&value_serde));
        // Keys and values both optional here: a table reads nulls as
        // "skip" and "delete", whatever its serdes make of them.
        let read: Arc<SourceFn> = Arc::new(move |topic, key, value| {
            let k = key.map(|k| ks.deserialize(topic, k)).transpose()?;
            let v = value.map(|v| vs.deserialize(topic, v)).transpose()?;
            Ok((Arc::new(k) as Erased, Arc::new(v) as Erased))
        });
        let (name, changelog) = (store.to_owned(), format!("{store}{CHANGELOG_SUFFIX}"));
        let (ks, vs) = (Arc::clone(&key_serde), Arc::clone(&value_serde));
        let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
            let Some(k) = cast::<Option<K>>(&rec.key)? else {
                return Ok(());
            };
            let v = cast::<Option<V>>(&rec.value)?;
            let changelog = ctx.topic(&changelog, true);
            let key = ks.serialize(&changelog, k)?;
            let value = v
                .as_ref()
                .map(|v| vs.serialize(&changelog, v))
                .transpose()?;
            ctx.log(&name, &changelog, key, value, rec.timestamp)?;
            out.push((0, with(rec, Arc::new(k.clone()), Arc::clone(&rec.value))));
            Ok(())
        });
        let id = {
            let mut g = self.graph.borrow_mut();
            let source = g.add(
                Node::Source {
                    topics: vec![topic.to_owned()],
                    internal: false,
                    read,
                    timestamps: None,
                },
                &[],
            );
            g.stores.push(store.to_owned());
            g.add(Node::Processor(process), &[(source, 0)])
        };
        KTable {
            graph: Rc::clone(&self.graph),
            parents: vec![(id, 0)],
            grace: None,
            lookup: Some(store_lookup(
                store,
                Arc::clone(&key_serde),
                Arc::clone(&value_serde),
            )),
            kept: Some(Kept {
                store: store.to_owned(),
                key_serde,
                value_serde,
            }),
            types: PhantomData,
        }
    }
}

impl<K, V> KStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Each record joined with the table's current value of its key;
    /// records whose key the table lacks are dropped (Kafka's stream–table
    /// `join`). Table updates produce nothing by themselves.
    pub fn join<VT, VR>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, &VT) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR>
    where
        VT: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_table(table, move |v, vt| vt.map(|vt| joiner(v, vt)))
    }

    /// Each record joined with the table's current value of its key, or
    /// with `None` when the table lacks it (Kafka's stream–table `leftJoin`).
    pub fn left_join<VT, VR>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, Option<&VT>) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR>
    where
        VT: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_table(table, move |v, vt| Some(joiner(v, vt)))
    }

    fn join_table<VT, VR>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, Option<&VT>) -> Option<VR> + Send + Sync + 'static,
    ) -> KStream<K, VR>
    where
        VT: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        let lookup = match table.lookup.as_ref() {
            Some(lookup) if Rc::ptr_eq(&self.graph, &table.graph) => Arc::clone(lookup),
            found => {
                let why = if found.is_some() {
                    "a stream can only join a table of the same builder"
                } else {
                    "a stream can only join a table kept by key (not a windowed or suppressed one)"
                };
                self.graph.borrow_mut().errors.push(why.to_owned());
                return KStream::at(&self.graph, Vec::new(), false);
            }
        };
        let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
            let (k, v) = (cast::<K>(&rec.key)?, cast::<V>(&rec.value)?);
            let current = lookup(ctx, k)?;
            if let Some(joined) = joiner(v, current.as_ref()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::{JoinWindows, StreamJoined};
    use crate::serde::StringSerde;

    #[test]
    fn a_repartition_starts_a_sub_topology_and_a_join_keeps_its_sides_in_one() {
        let b = StreamsBuilder::new();
        let lines = b.stream("lines", StringSerde, StringSerde);
        lines
            .group_by(|_, w: &String| w.clone(), StringSerde, StringSerde)
            .count("counts");
        let clicks = b.stream("clicks", StringSerde, StringSerde);
        lines
            .join_stream(
                &clicks,
                |a: &String, b: &String| format!("{a}{b}"),
                JoinWindows::of_time_difference_no_grace(10),
                StreamJoined::with("j", StringSerde, StringSerde, StringSerde),
            )
            .to("out", StringSerde, StringSerde);
        b.stream("other", StringSerde, StringSerde)
            .to("copy", StringSerde, StringSerde);
        let groups = b.build().unwrap().sub_topologies("app");
        assert_eq!(groups["lines"], groups["clicks"], "joined sides meet");
        assert_ne!(groups["lines"], groups["app-counts-repartition"]);
        assert_ne!(groups["lines"], groups["other"]);
        assert_eq!(groups.len(), 4);
    }
}
