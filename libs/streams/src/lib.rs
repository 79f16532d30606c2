//! `runnel-streams`: stream processing on Runnel in Kafka Streams' model.
//!
//! An application describes what flows from input topics to output topics
//! (transform, aggregate, window, join) as a typed topology; the library
//! runs it on the cluster's consumer groups and transactions, with state
//! kept fault-tolerant in compacted changelog topics.
//!
//! Built so far (the crate grows towards Kafka Streams' whole DSL):
//!
//! - [`serde`]: the serdes that turn keys and values into record bytes and
//!   back (Kafka Streams' `Serdes`), byte for byte what Kafka's own
//!   serializers write, so a Runnel application and a Java one read each
//!   other's topics.
//! - [`topology`]: [`StreamsBuilder`] and the stateless [`KStream`]
//!   operations (`filter`, `map`, `map_values`, `select_key`, `flat_map`,
//!   `flat_map_values`, `peek`, `branch`, `merge`, `to`); grouping
//!   (`group_by_key`, `group_by` through a repartition topic) and the
//!   aggregations `count`, `reduce` and `aggregate` into a [`KTable`],
//!   each update written to its store and to the store's changelog topic
//!   (`<application.id>-<store>-changelog`); tables from topics
//!   (`StreamsBuilder::table`, null values delete) and stream–table
//!   `join` / `left_join`; sources with a timestamp extractor
//!   (`StreamsBuilder::stream_with_timestamps`).
//! - [`window`]: tumbling and hopping [`TimeWindows`] with a grace period
//!   (`windowed_by`, then `count`, `reduce` or `aggregate` per window;
//!   records for closed windows dropped and counted), `suppress` until a
//!   window closes, and [`Windowed`] keys in Kafka's byte layout.
//! - [`sliding`]: [`SlidingWindows`] (KIP-450: a window per distinct set
//!   of a key's records within a time difference).
//! - [`session`]: [`SessionWindows`] (inactivity gap and grace; a record
//!   that bridges two sessions merges them) for `count`, `reduce` and
//!   `aggregate`.
//! - [`join`]: table–table `join`, `left_join` and `outer_join`, and
//!   stream–stream windowed joins ([`JoinWindows`], [`StreamJoined`]),
//!   their records kept in changelogged window stores.
//! - [`processor`]: the processor API, `KStream::process` with a
//!   [`Processor`] per task, its own logged stores, and punctuation by
//!   stream time or wall-clock time.
//! - [`global`]: [`GlobalKTable`]s, which every instance loads whole
//!   before its tasks run and then follows, joined by a key computed from
//!   each record (`join_global`, `left_join_global`).
//! - [`store`]: the key-value stores a task keeps its state in (in memory,
//!   or on disk in redb), each commit recording the changelog offset the
//!   store holds everything before.
//! - [`config`]: [`StreamsConfig`] (`application.id`,
//!   `processing.guarantee`, `commit.interval.ms`, `num.stream.threads`,
//!   `state.dir`, what to do with an input record that does not
//!   deserialize).
//! - [`runtime`]: [`StreamsApp`], which runs a topology on a cluster:
//!   stream threads in the application's consumer group, a task per input
//!   partition with its stores restored from their changelogs, commits at
//!   least once or exactly once (`exactly_once_v2`), records of a task's
//!   topics taken in timestamp order, per-task metrics, interactive
//!   queries of the local stores (a key, a key range, a key's windows).
//! - [`driver`]: [`TestDriver`], which runs a topology in memory, as
//!   Kafka's `TopologyTestDriver`, repartition topics included.
//!
//! Still to come: standby replicas.

pub mod config;
pub mod driver;
pub mod error;
pub mod global;
pub mod join;
pub mod processor;
pub mod runtime;
pub mod serde;
pub mod session;
pub mod sliding;
pub mod store;
pub mod topology;
pub mod window;

pub use config::{OnDeserializationError, ProcessingGuarantee, StreamsConfig};
pub use driver::{TestDriver, TestInput};
pub use error::StreamsError;
pub use global::GlobalKTable;
pub use join::{JoinWindows, StreamJoined};
pub use processor::{Processor, ProcessorContext, PunctuationType};
pub use runtime::{AppState, KeyQueryMetadata, StreamsApp, TaskMetrics};
pub use serde::{
    BytesSerde, F64Serde, I32Serde, I64Serde, JsonSerde, Nullable, Serde, SerdeError, StringSerde,
    UnitSerde,
};
pub use session::{SessionWindowedKStream, SessionWindowedSerde, SessionWindows};
pub use sliding::{SlidingWindowedKStream, SlidingWindows};
pub use store::{KeyValueStore, MemoryStore, RedbStore, StoreReader};
pub use topology::{
    KGroupedStream, KStream, KTable, OutputRecord, Predicate, StreamsBuilder, TimeWindowedKStream,
    Topology,
};
pub use window::{TimeWindows, Windowed, WindowedSerde};
