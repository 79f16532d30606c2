//! What can go wrong while a topology runs.

use runnel_client::ClientError;

use crate::serde::SerdeError;

/// An error that stops a task.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamsError {
    /// An input record's key or value did not deserialize (what
    /// [`crate::config::OnDeserializationError`] decides about).
    #[error("input record at timestamp {timestamp}: {source}")]
    Deserialize {
        /// The record's timestamp.
        timestamp: i64,
        /// What the serde said.
        source: SerdeError,
    },
    /// A source's timestamp extractor gave an input record a negative
    /// timestamp (handled as a record that does not deserialize).
    #[error("input record of {topic}: invalid (negative) timestamp {timestamp}")]
    InvalidTimestamp {
        /// The topic it came from.
        topic: String,
        /// The timestamp extracted.
        timestamp: i64,
    },
    /// A key or value did not (de)serialize inside the topology (a store,
    /// a repartition or output topic).
    #[error(transparent)]
    Serde(#[from] SerdeError),
    /// A state store failed (its file, its disk).
    #[error("state store {store}: {reason}")]
    Store {
        /// Which store.
        store: String,
        /// What failed.
        reason: String,
    },
    /// The topology is inconsistent (a bug in how it was built).
    #[error("topology: {0}")]
    Topology(String),
    /// Processing a record failed: which task, which record, and why.
    #[error("task {task}, {topic}-{partition} offset {offset}: {source}")]
    Task {
        /// The task id.
        task: String,
        /// The input record's topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// What went wrong.
        source: Box<StreamsError>,
    },
    /// The cluster refused or could not be reached.
    #[error(transparent)]
    Cluster(#[from] ClientError),
    /// The application cannot start on this cluster (missing source
    /// topics, partition counts that do not match).
    #[error("{0}")]
    Setup(String),
    /// Output records could not be written.
    #[error("{0}")]
    Produce(String),
    /// A query asked this instance for a key whose task runs elsewhere
    /// (find it with `query_metadata_for_key`).
    #[error("store {store}: task 0_{partition} does not run on this instance")]
    NotLocal {
        /// The store asked.
        store: String,
        /// The key's partition.
        partition: i32,
    },
    /// A stream thread panicked.
    #[error("stream thread: {0}")]
    Thread(String),
}

impl StreamsError {
    /// Whether the error is an input record's own fault (it does not
    /// deserialize, or its timestamp is invalid): what
    /// `on_deserialization_error` decides about.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StreamsError::Deserialize { .. } | StreamsError::InvalidTimestamp { .. }
        )
    }
}
