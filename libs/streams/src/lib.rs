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
//!   `flat_map_values`, `peek`, `branch`, `merge`, `to`).
//! - [`driver`]: [`TestDriver`], which runs a topology in memory, as
//!   Kafka's `TopologyTestDriver`.

pub mod driver;
pub mod error;
pub mod serde;
pub mod topology;

pub use driver::{TestDriver, TestInput};
pub use error::StreamsError;
pub use serde::{
    BytesSerde, F64Serde, I32Serde, I64Serde, JsonSerde, Nullable, Serde, SerdeError, StringSerde,
    UnitSerde,
};
pub use topology::{KStream, OutputRecord, Predicate, StreamsBuilder, Topology};
