//! What the broker does for each request: find the partition, check
//! leadership, hand disk work to the I/O threads, and answer per partition.
//!
//! One file per family of requests, each an `impl Broker` block:
//! - `produce`: Produce (appends, acks).
//! - `fetch`: Fetch for consumers and followers, OffsetForLeaderEpoch.
//! - `offsets`: ListOffsets and DeleteRecords.
//! - `metadata_request`: Metadata (with topic auto-creation) and FindCoordinator.
//! - `producer_ids`: InitProducerId and DescribeProducers.
//! - `txn_markers`: WriteTxnMarkers (the transaction coordinator ends transactions).
//! - `coordinators`: the coordinators' gRPC clients, transactional
//!   InitProducerId and KIP-890's check of a transactional Produce.
//!
//! This file holds the [`Broker`] itself and what those share: finding the
//! partition this broker leads, leader-epoch fencing, and the listeners.

pub mod coordinators;
mod fetch;
mod metadata_request;
mod offsets;
mod produce;
mod producer_ids;
mod txn_markers;

use runnel_common::transport::GrpcSecurity;
use std::sync::Arc;

use runnel_common::shutdown::CancellationToken;
use runnel_proto::metadata::v1::Endpoint;
use tokio::sync::Semaphore;

use crate::log_manager::LogManager;
use crate::metadata::{Controller, MetadataCache};
use crate::partition::Partition;
use crate::replication_quota::ReplicationQuotas;

/// Broker settings the request logic uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// This broker's id.
    pub broker_id: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `num.partitions` for auto-created topics.
    pub num_partitions: i32,
    /// `default.replication.factor` for auto-created topics.
    pub default_replication_factor: i32,
}

/// The request logic of a broker.
#[derive(Debug)]
pub struct Broker {
    limits: Limits,
    /// TLS for calls to coordinators, and who may call internal RPCs.
    security: GrpcSecurity,
    logs: Arc<LogManager>,
    metadata: Arc<MetadataCache>,
    controller: Controller,
    /// Bounds reads in flight on the blocking pool.
    read_permits: Semaphore,
    shutdown: CancellationToken,
    /// The unused rest of this broker's block of producer ids.
    producer_ids: tokio::sync::Mutex<std::ops::Range<i64>>,
    /// gRPC clients of the coordinators (relays, KIP-890 checks, settled offsets).
    coordinators: coordinators::Coordinators,
    /// What throttled replicas may take (shared with the follower fetchers).
    replication_quotas: Arc<ReplicationQuotas>,
}

pub use crate::errors::Failure;

pub use runnel_common::metadata::EXTERNAL_GRPC_ENDPOINT;

/// Which of the broker's gRPC listeners a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listener {
    /// `listen`: other brokers and clients inside the cluster's network.
    #[default]
    Internal,
    /// `external_listen`: clients outside it (Kafka's `EXTERNAL` listener).
    External,
}

/// A node's endpoints as a client on `listener` must see them. Clients dial
/// the endpoint named `grpc`, so on the external listener a node's
/// `grpc-external` endpoint takes that name (its internal one is dropped);
/// a node without an external endpoint is shown as it registered.
pub fn endpoints_for(listener: Listener, endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    let has_external = endpoints.iter().any(|e| e.name == EXTERNAL_GRPC_ENDPOINT);
    if listener == Listener::Internal || !has_external {
        return endpoints;
    }
    endpoints
        .into_iter()
        .filter(|e| e.name != "grpc")
        .map(|mut e| {
            if e.name == EXTERNAL_GRPC_ENDPOINT {
                e.name = "grpc".into();
            }
            e
        })
        .collect()
}

/// Items in the order of their first appearance, grouped by topic.
pub(crate) fn by_topic<T>(items: impl IntoIterator<Item = (String, T)>) -> Vec<(String, Vec<T>)> {
    let mut out: Vec<(String, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, v)) => v.push(item),
            None => out.push((topic, vec![item])),
        }
    }
    out
}

impl Broker {
    /// The broker's request logic over its logs and metadata.
    pub fn new(
        limits: Limits,
        logs: Arc<LogManager>,
        metadata: Arc<MetadataCache>,
        controller: Controller,
        security: GrpcSecurity,
        shutdown: CancellationToken,
    ) -> Broker {
        Broker {
            replication_quotas: Arc::new(ReplicationQuotas::new(
                limits.broker_id,
                Arc::clone(&metadata),
            )),
            limits,
            security,
            logs,
            metadata,
            controller,
            read_permits: Semaphore::new(64),
            shutdown,
            producer_ids: tokio::sync::Mutex::new(0..0),
            coordinators: coordinators::Coordinators::default(),
        }
    }

    /// The partitions hosted here.
    pub fn logs(&self) -> &Arc<LogManager> {
        &self.logs
    }

    /// The replication throttles, which the follower fetchers share.
    pub fn replication_quotas(&self) -> &Arc<ReplicationQuotas> {
        &self.replication_quotas
    }

    /// TLS for calls to other services, and who may call internal RPCs.
    pub fn security(&self) -> &GrpcSecurity {
        &self.security
    }

    /// The partition if this broker leads it, else why not.
    fn leader(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, Failure> {
        let me = self.limits.broker_id;
        let caught_up = self.metadata.caught_up();
        self.metadata.with(|image| {
            let t = image.topics.get(topic).ok_or_else(|| match caught_up {
                true => Failure::UnknownTopic {
                    topic: topic.to_owned(),
                },
                false => Failure::MetadataCatchingUp {
                    broker: me,
                    topic: topic.to_owned(),
                },
            })?;
            let p = t
                .partitions
                .get(&partition)
                .ok_or_else(|| Failure::UnknownPartition {
                    topic: topic.to_owned(),
                    partition,
                    partitions: t.partitions.len(),
                })?;
            if p.leader != me {
                return Err(Failure::NotLeader {
                    broker: me,
                    topic: topic.to_owned(),
                    partition,
                    leader: p.leader,
                });
            }
            Ok(())
        })?;
        self.logs
            .get(topic, partition)
            .ok_or_else(|| Failure::PartitionOpening {
                topic: topic.to_owned(),
                partition,
                broker: me,
            })
    }
}

/// Kafka's leader-epoch fencing: a request naming an epoch (>= 0) must name
/// the current one; an older one is fenced, a newer one not known here yet.
fn check_leader_epoch(requested: i32, current: i32) -> Result<(), Failure> {
    if requested < 0 || requested == current {
        return Ok(());
    }
    if requested < current {
        Err(Failure::FencedLeaderEpoch { requested, current })
    } else {
        Err(Failure::UnknownLeaderEpoch { requested, current })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str, host: &str, port: u32) -> Endpoint {
        Endpoint {
            name: name.into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn external_listener_names_the_external_endpoint_grpc() {
        let registered = vec![
            endpoint("grpc", "broker-2", 9094),
            endpoint("admin", "broker-2", 9194),
            endpoint(EXTERNAL_GRPC_ENDPOINT, "127.0.0.1", 9194),
        ];
        assert_eq!(
            endpoints_for(Listener::External, registered.clone()),
            vec![
                endpoint("admin", "broker-2", 9194),
                endpoint("grpc", "127.0.0.1", 9194),
            ]
        );
        // Inside the network (and for replication) nothing changes.
        assert_eq!(
            endpoints_for(Listener::Internal, registered.clone()),
            registered
        );
    }

    #[test]
    fn a_node_without_an_external_endpoint_keeps_its_own() {
        let registered = vec![endpoint("grpc", "127.0.0.1", 9093)];
        assert_eq!(
            endpoints_for(Listener::External, registered.clone()),
            registered
        );
    }
}
