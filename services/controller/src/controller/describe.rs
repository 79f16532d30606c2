//! Read-only views of the cluster: DescribeCluster (brokers with their
//! liveness, coordinators, controllers) and GetMetadata (topics and their
//! partitions).

use std::time::Instant;

use runnel_common::metadata::MetadataImage;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;

use super::{Controller, Inner};
use crate::quorum::controller_id;

impl Controller {
    /// Brokers with liveness, the coordinators, and the controllers.
    pub async fn describe_cluster(&self) -> pb::DescribeClusterResponse {
        let inner = self.inner.lock().await;
        let image = self.shared.image();
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let controllers = membership
            .nodes()
            .map(|(&id, node)| pb::ControllerInfo {
                controller_id: controller_id(id),
                address: node.addr.clone(),
                active: m.current_leader == Some(id),
                voter: membership.voter_ids().any(|v| v == id),
                matched_index: if id == m.id {
                    m.last_log_index.map_or(-1, |i| i as i64)
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .map_or(-1, |l| l.index as i64)
                },
            })
            .collect();
        pb::DescribeClusterResponse {
            brokers: broker_infos(&image, &inner),
            controller_id: self.settings.node_id,
            controller_endpoints: self.settings.endpoints.clone(),
            metadata_end_offset: image.next_offset,
            cluster_id: self.cluster_id(),
            coordinators: coordinator_infos(&image, &inner),
            controllers,
            controller_term: m.current_term as i64,
        }
    }

    /// Topics (all, or the named ones) with partitions and brokers.
    pub async fn metadata(&self, topics: Vec<String>) -> pb::GetMetadataResponse {
        let inner = self.inner.lock().await;
        let image = self.shared.image();
        let names: Vec<String> = if topics.is_empty() {
            image.topics.keys().cloned().collect()
        } else {
            topics
        };
        let topics = names
            .into_iter()
            .map(|name| match image.topics.get(&name) {
                Some(t) => pb::TopicMetadata {
                    topic_id: t.id.to_vec().into(),
                    error_code: ErrorCode::None as i32,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|(&partition, p)| pb::PartitionMetadata {
                            partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas.clone(),
                            isr: p.isr.clone(),
                            offline_replicas: offline_replicas(
                                &inner,
                                &name,
                                partition,
                                &p.replicas,
                            ),
                            adding_replicas: p.adding_replicas.clone(),
                            removing_replicas: p.removing_replicas.clone(),
                        })
                        .collect(),
                    name,
                },
                None => pb::TopicMetadata {
                    name,
                    error_code: ErrorCode::UnknownTopicOrPartition as i32,
                    ..Default::default()
                },
            })
            .collect();
        pb::GetMetadataResponse {
            topics,
            brokers: broker_infos(&image, &inner),
            metadata_end_offset: image.next_offset,
        }
    }
}

fn broker_infos(image: &MetadataImage, inner: &Inner) -> Vec<pb::BrokerInfo> {
    let now = Instant::now();
    image
        .brokers
        .iter()
        .map(|(&id, b)| pb::BrokerInfo {
            broker_id: id,
            broker_epoch: b.epoch,
            endpoints: b.endpoints.clone(),
            rack: b.rack.clone(),
            fenced: b.fenced,
            last_heartbeat_age_ms: inner
                .heartbeats
                .get(&id)
                .map_or(-1, |t| now.duration_since(*t).as_millis() as i64),
        })
        .collect()
}

fn coordinator_infos(image: &MetadataImage, inner: &Inner) -> Vec<pb::CoordinatorInfo> {
    let now = Instant::now();
    image
        .coordinators
        .iter()
        .map(|(&id, c)| pb::CoordinatorInfo {
            coordinator_id: id,
            coordinator_epoch: c.epoch,
            endpoints: c.endpoints.clone(),
            fenced: c.fenced,
            offsets_partitions: image
                .offsets_owners
                .values()
                .filter(|o| o.coordinator_id == id && o.coordinator_epoch == c.epoch)
                .map(|o| o.partition)
                .collect(),
            last_heartbeat_age_ms: inner
                .coordinator_heartbeats
                .get(&id)
                .map_or(-1, |t| now.duration_since(*t).as_millis() as i64),
        })
        .collect()
}

/// The replicas of `topic`-`partition` whose brokers report them offline.
fn offline_replicas(
    inner: &Inner,
    topic: &str,
    partition: i32,
    replicas: &[i32],
) -> Vec<pb::ReplicaError> {
    if inner.offline_replicas.is_empty() {
        return Vec::new();
    }
    let key = (topic.to_owned(), partition);
    replicas
        .iter()
        .filter_map(|&broker_id| {
            let error = inner.offline_replicas.get(&broker_id)?.get(&key)?;
            Some(pb::ReplicaError {
                broker_id,
                error: error.clone(),
            })
        })
        .collect()
}
