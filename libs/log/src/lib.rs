//! `runnel-log`: the storage engine every Runnel partition runs on.
//!
//! A partition is a directory of segments holding Kafka v2 record batches
//! exactly as producers sent them (the broker only patches the header), with
//! a sparse offset index and a time index per segment. This crate is
//! synchronous and does no networking and spawns no threads: the broker calls
//! it from its own I/O threads.
//!
//! The batch format itself (views, header patching, builder, codecs) is
//! `runnel-records`, which the client and the coordinator use without
//! linking this crate.
//!
//! Map of the crate:
//!
//! - [`Log`]: one partition. Appends as leader (assigns offsets) or follower
//!   (keeps the leader's), reads whole batches up to a byte limit and a high
//!   watermark, looks up offsets by timestamp, truncates, advances the log
//!   start, applies retention, flushes (`flush.messages`, `flush.ms`, or
//!   explicitly), and recovers on open. See the `log` module docs for the
//!   directory layout.
//! - [`LeaderEpochCache`]: the leader-epoch checkpoint (epoch → start
//!   offset) that followers use to find where they diverged from a new leader.
//! - [`producer`]: idempotent-producer state (epochs, sequences, the
//!   offsets of recent batches) that lets a leader answer a retried batch
//!   with its original offsets, and each producer's open transaction;
//!   rebuilt from the log and snapshots.
//! - Transactions: [`Log::append_end_txn_marker`] ends one,
//!   [`Log::last_stable_offset`] is where read_committed readers stop, and
//!   [`Log::aborted_transactions`] names the [`AbortedTxn`]s (Kafka's
//!   `.txnindex`) a read must skip.
//! - [`cleaner`]: compaction for `cleanup.policy=compact`, with a crash-safe
//!   segment swap.
//! - [`LogConfig`]: Kafka's topic config names, defaults and bounds;
//!   [`TopicConfig`] adds the two replication keys a topic can also set.
//! - [`storage`]: the file-system surface, with a fault-injecting
//!   implementation for tests (full disk, crash at the N-th operation);
//!   [`CachedStorage`] keeps the files of many logs within a budget of
//!   open descriptors.
//!
//! ```
//! use runnel_log::{Log, LogConfig};
//! use runnel_records::batch::{BatchBuilder, Compression};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut log = Log::open(dir.path().join("orders-0"), LogConfig::default()).unwrap();
//! let mut batch = BatchBuilder::new(Compression::Zstd);
//! batch.append(1_700_000_000_000, Some(b"order-1"), Some(b"created"), &[]);
//! let mut bytes = batch.build().unwrap();
//! let info = log.append_as_leader(&mut bytes, 0).unwrap();
//! assert_eq!((info.first_offset, log.log_end_offset()), (0, 1));
//! let fetched = log.read(0, 1024 * 1024, None, true).unwrap();
//! assert_eq!(fetched.len(), bytes.len());
//! log.close().unwrap();
//! ```
//!
//! # Fuzzing
//!
//! `libs/log/fuzz` holds the `cargo fuzz` target for segment recovery
//! (`segment_recovery`); the batch decoder's targets are in
//! `libs/records/fuzz`. With only the stable toolchain installed:
//!
//! ```text
//! cargo install cargo-fuzz
//! cd libs/log && RUSTC_BOOTSTRAP=1 cargo fuzz run segment_recovery -- -max_total_time=600
//! ```

mod checkpoint;
pub mod cleaner;
mod clock;
mod config;
mod error;
mod file_cache;
mod index;
mod log;
pub mod producer;
mod scan;
mod segment;
pub mod storage;
mod topic_config;
mod txn_index;

pub use checkpoint::{EpochEntry, LeaderEpochCache};
pub use cleaner::{CleanStats, CleanedLog, CleanerConfig, CleaningPlan};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CleanupPolicy, LogConfig};
pub use error::{LogError, RecordError};
pub use file_cache::{CachedStorage, FileCacheStats};
pub use log::{AppendInfo, Log, OpenReport, parse_partition_dir_name, partition_dir_name};
pub use runnel_records::{LeaderEpoch, Offset, TimestampMs};
pub use topic_config::{
    FOLLOWER_THROTTLED_REPLICAS, LEADER_THROTTLED_REPLICAS, ThrottledReplicas, TopicConfig,
    TopicConfigError,
};
pub use txn_index::AbortedTxn;
