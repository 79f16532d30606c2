//! `runnel-client`: the Rust client for Runnel.
//!
//! - [`Admin`]: topics, partitions, configs, cluster (see its module docs
//!   for an example).
//! - [`Producer`]: Kafka's partitioning (murmur2 for keys, sticky for null
//!   keys), batching by `batch.size` and `linger.ms`, compression, `acks`,
//!   retries within `delivery.timeout.ms`, and a [`DeliveryFuture`] per record.
//! - [`Consumer`]: assign partitions, seek (offset, beginning, end,
//!   timestamp), poll, `auto.offset.reset`.
//! - [`GroupConsumer`]: a consumer-group member: subscribe (topics or a
//!   pattern), rebalances with a [`RebalanceListener`], automatic and
//!   manual commits, committed offsets, positions and lag.
//! - [`assignor`]: Kafka's partition assignors for consumer groups (range,
//!   round-robin, cooperative-sticky), and [`consumer_protocol`], the
//!   subscription and assignment bytes members exchange.
//!
//! All of them start from a [`ClientConfig`] naming bootstrap brokers, or
//! share one [`Cluster`] (connections and metadata) between them.

pub mod admin;
pub mod assignor;
pub mod cluster;
pub mod consumer;
pub mod consumer_protocol;
mod error;
pub mod group;
mod group_admin;
mod next_gen;
pub mod partitioner;
pub mod producer;

pub use admin::{
    Admin, BrokerDescription, ClusterDescription, ConfigEntry, ControllerDescription,
    CoordinatorDescription, NewTopic, PartitionDescription, TopicDescription,
};
pub use cluster::{ClientConfig, Cluster, DEFAULT_BOOTSTRAP};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TopicPartition};
pub use error::{ClientError, Result};
pub use group::{GroupConfig, GroupConsumer, GroupProtocol, RebalanceListener};
pub use group_admin::{GroupDescription, GroupMemberDescription, ListedGroup};
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use runnel_log::batch::{Compression, Header};
pub use runnel_proto::common::v1::ErrorCode;
