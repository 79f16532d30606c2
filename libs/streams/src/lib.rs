//! `runnel-streams`: stream processing on Runnel in Kafka Streams' model.
//!
//! An application describes what flows from input topics to output topics
//! (transform, aggregate, window, join) as a typed topology; the library
//! runs it on the cluster's consumer groups and transactions, with state
//! kept fault-tolerant in compacted changelog topics.
//!
//! Built so far: [`serde`], the serdes that turn keys and values into
//! record bytes and back (Kafka Streams' `Serdes`), byte for byte what
//! Kafka's own serializers write, so a Runnel application and a Java one
//! read each other's topics.

pub mod serde;

pub use serde::{
    BytesSerde, F64Serde, I32Serde, I64Serde, JsonSerde, Serde, SerdeError, StringSerde, UnitSerde,
};
