//! The connectors a worker can run, and what a source or sink task is.
//!
//! A connector class splits its config into task configs; the worker runs
//! each task. Source tasks `poll` records carrying a source partition and
//! offset (committed by the worker once the records are acknowledged);
//! sink tasks `put` records and `flush` them (the worker commits consumer
//! offsets only after a flush).

use futures::future::BoxFuture;
use serde_json::Value as Json;

use crate::configdef::{Key, Props};
use crate::data::Data;

pub mod file;
pub mod http;
pub mod postgres;

/// Source or sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads an outside system and produces records.
    Source,
    /// Consumes records and writes them to an outside system.
    Sink,
}

impl Kind {
    /// `source` or `sink`, as the REST API says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Sink => "sink",
        }
    }
}

/// Why a task call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TaskError {
    /// Worth trying again with the same input after a pause (Kafka's
    /// `RetriableException`).
    #[error("{0}")]
    Retriable(String),
    /// The task cannot go on: it is marked FAILED with this trace.
    #[error("{0}")]
    Fatal(String),
}

/// A record a source task read.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Where in the source it came from (e.g. `{"filename": ...}`).
    pub source_partition: Json,
    /// How far along that source partition this record is.
    pub source_offset: Json,
    /// Topic to produce to.
    pub topic: String,
    /// Partition, or the partitioner's choice.
    pub partition: Option<i32>,
    /// Key.
    pub key: Data,
    /// Value.
    pub value: Data,
    /// Timestamp in ms, if the source has one.
    pub timestamp: Option<i64>,
}

/// A record handed to a sink task.
#[derive(Debug, Clone)]
pub struct SinkRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms.
    pub timestamp: i64,
    /// Key.
    pub key: Data,
    /// Value (null: a tombstone).
    pub value: Data,
}

/// A record a sink could not write, with why.
#[derive(Debug, Clone)]
pub struct Failed {
    /// Index of the record in the batch given to `put`.
    pub index: usize,
    /// Why.
    pub reason: String,
}

/// What a source task sees of the worker when it starts.
#[derive(Debug, Clone, Default)]
pub struct SourceContext {
    /// The last committed offset of every source partition of this connector.
    pub offsets: Vec<(Json, Json)>,
}

impl SourceContext {
    /// The committed offset of `partition`, if any.
    pub fn offset(&self, partition: &Json) -> Option<&Json> {
        self.offsets
            .iter()
            .find(|(p, _)| p == partition)
            .map(|(_, o)| o)
    }
}

/// A running source task.
pub trait SourceTask: Send {
    /// Opens the source, resuming from the committed offsets in `ctx`.
    fn start(&mut self, ctx: SourceContext) -> BoxFuture<'_, Result<(), TaskError>>;
    /// The next records; an empty batch after a short wait when there are none.
    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, TaskError>>;
    /// Closes the source.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}

/// A running sink task.
pub trait SinkTask: Send {
    /// Opens the destination.
    fn start(&mut self) -> BoxFuture<'_, Result<(), TaskError>>;
    /// Writes (or buffers) records. Records it alone cannot write are
    /// returned (errors.tolerance decides what happens to them); an `Err`
    /// concerns the whole batch.
    fn put(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<Vec<Failed>, TaskError>>;
    /// Makes everything put so far durable; consumer offsets are committed after this.
    fn flush(&mut self) -> BoxFuture<'_, Result<(), TaskError>>;
    /// Closes the destination.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}

/// A connector class.
pub trait Plugin: Send + Sync {
    /// Kafka's class name.
    fn class(&self) -> &'static str;
    /// Other names it is known by (Kafka's aliases).
    fn aliases(&self) -> &'static [&'static str];
    /// Source or sink.
    fn kind(&self) -> Kind;
    /// Its own config keys.
    fn keys(&self) -> &'static [Key];
    /// Problems across keys, as `(key, problem)`.
    fn validate(&self, _props: &Props) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The task configs for at most `max_tasks` tasks. Deterministic:
    /// every worker computes the same ones from the same config.
    fn task_configs(&self, props: &Props, max_tasks: usize) -> Vec<Props> {
        let _ = max_tasks;
        vec![props.clone()]
    }
    /// A source task for `props` (sources only).
    fn source_task(&self, _props: &Props) -> Result<Box<dyn SourceTask>, TaskError> {
        Err(TaskError::Fatal(format!(
            "{} is not a source connector",
            self.class()
        )))
    }
    /// A sink task for `props` (sinks only).
    fn sink_task(&self, _props: &Props) -> Result<Box<dyn SinkTask>, TaskError> {
        Err(TaskError::Fatal(format!(
            "{} is not a sink connector",
            self.class()
        )))
    }
}

/// Every connector class this worker has.
pub static ALL: &[&dyn Plugin] = &[
    &file::FileSource,
    &file::FileSink,
    &postgres::PostgresSource,
    &postgres::PostgresSink,
    &http::HttpSink,
];

/// The connector class `name` names: its class name, simple class name or alias.
pub fn find(name: &str) -> Option<&'static dyn Plugin> {
    let name = name.trim();
    ALL.iter().copied().find(|p| {
        let class = p.class();
        let simple = class.rsplit('.').next().unwrap_or(class);
        name == class || name == simple || p.aliases().contains(&name)
    })
}

/// The version every built-in connector reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
