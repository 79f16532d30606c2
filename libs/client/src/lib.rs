//! `runnel-client`: the Rust client for Runnel.
//!
//! - [`Admin`]: topics, partitions, configs, cluster (see its module docs
//!   for an example).
//! - [`Producer`]: Kafka's partitioning (murmur2 for keys, sticky for null
//!   keys), batching by `batch.size` and `linger.ms`, compression, `acks`,
//!   retries within `delivery.timeout.ms`, and a [`DeliveryFuture`] per record;
//!   with a `transactional.id`, Kafka's transactions (`init_transactions`,
//!   `begin_transaction`, `send_offsets_to_transaction`,
//!   `commit_transaction`, `abort_transaction`).
//! - [`Consumer`]: assign partitions, seek (offset, beginning, end,
//!   timestamp), poll, `auto.offset.reset`.
//! - [`GroupConsumer`]: a consumer-group member: subscribe (topics or a
//!   pattern), rebalances with a [`RebalanceListener`], automatic and
//!   manual commits, committed offsets, positions and lag.
//! - [`partition_set`]: the partition sets of KIP-848's gRPC messages.
//! - Transaction administration on [`Admin`] (`list_transactions`,
//!   `describe_transaction`, `describe_producers`,
//!   `find_hanging_transactions`, `abort_transaction`), as Kafka's
//!   `kafka-transactions.sh`.
//! - ACLs, SCRAM users and client quotas on [`Admin`] (`create_acls`,
//!   `upsert_scram_credential`, `alter_client_quotas`,
//!   `describe_client_quotas`, ...), as Kafka's `kafka-acls.sh` and
//!   `kafka-configs.sh`.
//!
//! All of them start from a [`ClientConfig`] naming bootstrap brokers, or
//! share one [`Cluster`] (connections and metadata) between them. Record
//! batches, the consumer-protocol bytes and the assignors a group leader
//! runs are `runnel-records`; this crate does not link the storage engine.

mod acl_admin;
pub mod admin;
pub mod cluster;
pub mod consumer;
mod error;
pub mod group;
mod group_admin;
pub mod partition_set;
pub mod partitioner;
pub mod producer;
mod quota_admin;
mod reassign_admin;
mod txn_admin;
mod user_admin;

pub use acl_admin::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
};
pub use admin::{
    Admin, BrokerDescription, ClusterDescription, ConfigEntry, ControllerDescription,
    CoordinatorDescription, NewTopic, PartitionDescription, TopicDescription,
};
pub use cluster::{ClientConfig, Cluster, Credentials, DEFAULT_BOOTSTRAP};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, IsolationLevel, OffsetReset, TopicPartition,
};
pub use error::{ClientError, Result};
pub use group::{GroupConfig, GroupConsumer, GroupProtocol, RebalanceListener};
pub use group_admin::{GroupDescription, GroupMemberDescription, ListedGroup};
pub use producer::{
    Acks, ConsumerGroupMetadata, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
    RecordMetadata,
};
pub use quota_admin::{
    QUOTA_CLIENT_ID, QUOTA_USER, QuotaEntity, QuotaEntityName, QuotaError, QuotaFilterComponent,
    QuotaKey, QuotaMatch,
};
pub use reassign_admin::{Assignments, PlanError, Reassignment, plan_moves};
pub use runnel_proto::common::v1::ErrorCode;
pub use runnel_records::batch::{Compression, Header};
pub use txn_admin::{
    HangingTransaction, ListedTransaction, ProducerDescription, TransactionDescription,
};
pub use user_admin::{DEFAULT_ITERATIONS, ScramMechanism, UserCredentials};
