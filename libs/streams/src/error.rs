//! What can go wrong while a topology runs.

use crate::serde::SerdeError;

/// An error that stops a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamsError {
    /// A key or value did not (de)serialize.
    #[error(transparent)]
    Serde(#[from] SerdeError),
    /// The topology is inconsistent (a bug in how it was built).
    #[error("topology: {0}")]
    Topology(String),
}
