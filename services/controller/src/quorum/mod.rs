//! The controller quorum: the metadata log is a Raft log (openraft).
//!
//! Every change the active controller decides is one Raft entry (a
//! [`Batch`] of metadata records). Once a majority of controllers hold it,
//! each controller applies it to its SQLite state ([`state_machine`]),
//! giving the records the next metadata offsets, so every controller has
//! the same metadata log at the same offsets. Raft's own log and vote live
//! in a second SQLite file ([`log_store`]); controllers talk Raft over the
//! `ControllerQuorum` gRPC service ([`network`]). One controller is a quorum
//! of one: the same path, with no one to wait for.

// openraft's storage traits return its (large) `StorageError` by value;
// the helpers here return what those traits need.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::fmt;
use std::io::Cursor;

use base64::Engine as _;
use openraft::BasicNode;
use prost::Message as _;
use runnel_proto::metadata::v1::MetadataBatch;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

openraft::declare_raft_types!(
    /// The controller quorum's Raft types.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A controller's Raft node.
pub type ControllerRaft = openraft::Raft<TypeConfig>;

/// The payload of a Raft entry: metadata records applied all or none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch(pub MetadataBatch);

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} metadata records", self.0.records.len())
    }
}

// Raft messages travel as JSON; the records inside stay protobuf (base64),
// the same bytes the metadata log stores.
impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0.encode_to_vec()))
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        MetadataBatch::decode(bytes.as_slice())
            .map(Batch)
            .map_err(serde::de::Error::custom)
    }
}

/// What applying one Raft entry did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A membership change or the new leader's blank entry.
    Nothing,
    /// The records got offsets `first_offset..first_offset + count`.
    Records {
        /// Offset of the first record.
        first_offset: i64,
        /// How many records.
        count: usize,
    },
    /// The records do not apply to the state they reached (every controller
    /// refuses them alike, so nothing of the entry is in any state).
    Refused(String),
}

/// The Raft node id of controller `id` (`node.id`; negative ids are refused at start).
pub fn raft_id(id: i32) -> u64 {
    u64::try_from(id).unwrap_or_default()
}

/// The controller id of Raft node `id`.
pub fn controller_id(id: u64) -> i32 {
    i32::try_from(id).unwrap_or(-1)
}

/// Exports this controller's role and Raft progress as gauges.
pub fn publish_metrics(m: &openraft::RaftMetrics<u64, BasicNode>) {
    let active = m.state == openraft::ServerState::Leader;
    metrics::gauge!("runnel_controller_active").set(if active { 1.0 } else { 0.0 });
    metrics::gauge!("runnel_controller_raft_term").set(m.current_term as f64);
    let last = m.last_log_index.unwrap_or(0);
    let applied = m.last_applied.map_or(0, |l| l.index);
    metrics::gauge!("runnel_controller_raft_last_log_index").set(last as f64);
    metrics::gauge!("runnel_controller_raft_applied_index").set(applied as f64);
    metrics::gauge!("runnel_controller_raft_apply_lag").set(last.saturating_sub(applied) as f64);
}
