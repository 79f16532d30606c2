//! `runnel-coordinator`: the group coordinator service (issue 6, in progress).
//!
//! Consumers in a group share a topic's partitions, each partition read by
//! one member at a time. The coordinator runs Kafka's classic group
//! protocol: members join, one of them (the leader) assigns partitions with
//! a client-side assignor, the coordinator hands every member its share and
//! watches heartbeats; a member that joins, leaves or goes silent starts a
//! new generation. Committed offsets are fenced by generation and member.
//!
//! - [`group`]: one group's membership and rebalance state machine, pure
//!   and driven by the caller's clock, so every timing rule is tested
//!   without sleeping. The gRPC service and the `__consumer_offsets`
//!   storage build on it.
//! - [`offsets`]: the records of `__consumer_offsets` (committed offsets,
//!   group metadata), the state they replay into, offset retention, and
//!   which partition (so which coordinator) holds a group.
//! - [`manager`]: the groups of one coordinator with their waiting callers
//!   and committed offsets; what must survive a restart goes through a
//!   [`manager::RecordSink`] into `__consumer_offsets` before it is acknowledged.
//! - [`grpc`]: the Coordinator gRPC API over the manager.
//! - [`offsets_topic`]: that sink on the brokers (acks=all, idempotent), and
//!   the reader a coordinator replays its partitions with.

pub mod group;
pub mod grpc;
pub mod manager;
pub mod offsets;
pub mod offsets_topic;
