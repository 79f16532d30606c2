//! What can go wrong while a topology runs.

use crate::serde::SerdeError;

/// An error that stops a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
}
