//! `runnel-records`: Kafka's wire formats, shared by the storage engine,
//! the client, the broker and the coordinator.
//!
//! Everything here is bytes in, bytes out: no I/O, no async, and no other
//! Runnel crate, so the client and the coordinator can read and write
//! batches without linking the storage engine, and the coordinator can run
//! assignors without linking the client.
//!
//! Map of the crate:
//!
//! - [`batch`]: the v2 record batch format: zero-copy validated views,
//!   in-place header patching, a builder, record decoding, and the gzip,
//!   snappy, lz4 and zstd codecs; [`batch::legacy`] converts the message
//!   formats v0 and v1 of old clients to and from v2.
//! - [`consumer_protocol`]: the subscription and assignment bytes group
//!   members exchange through the coordinator (Kafka's `consumer` protocol).
//! - [`assignor`]: Kafka's partition assignors (range, round-robin,
//!   cooperative-sticky, and the coordinator's uniform one for KIP-848).
//! - [`TopicPartition`]: the unit both of the above deal in.
//!
//! ```
//! use runnel_records::batch::{BatchBuilder, Compression, RecordBatch};
//!
//! let mut builder = BatchBuilder::new(Compression::Zstd);
//! builder.append(1_700_000_000_000, Some(b"order-1"), Some(b"created"), &[]);
//! let bytes = builder.build().unwrap();
//! let (batch, rest) = RecordBatch::parse(&bytes).unwrap();
//! assert!(rest.is_empty());
//! let record = batch.records().unwrap().next().unwrap().unwrap();
//! assert_eq!(record.key.as_deref(), Some(&b"order-1"[..]));
//! ```
//!
//! # Fuzzing
//!
//! `libs/records/fuzz` holds `cargo fuzz` targets for the batch decoder
//! (`batch_decode`) and for the old message formats' conversions
//! (`legacy_convert`); see its README. With only the stable toolchain
//! installed:
//!
//! ```text
//! cargo install cargo-fuzz
//! cd libs/records && RUSTC_BOOTSTRAP=1 cargo fuzz run batch_decode -- -max_total_time=600
//! ```

pub mod assignor;
pub mod batch;
pub mod consumer_protocol;
mod topic_partition;

pub use topic_partition::TopicPartition;

/// A position in a partition log (Kafka's 64-bit offset).
pub type Offset = i64;
/// A leader epoch; -1 when unknown.
pub type LeaderEpoch = i32;
/// Milliseconds since the Unix epoch.
pub type TimestampMs = i64;
