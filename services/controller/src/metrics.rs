//! Gauges computed from the metadata image. A module of their own so the
//! Raft state machine, which publishes them on every applied entry, does not
//! depend on the controller's rules (which depend on the state machine).

use runnel_common::metadata::MetadataImage;

use crate::election;

/// Cluster-wide partition health: offline (no leader) and under-replicated
/// (ISR smaller than the replica set) partition counts.
pub fn publish_partition_gauges(image: &MetadataImage) {
    let (mut offline, mut under) = (0u64, 0u64);
    for p in image.topics.values().flat_map(|t| t.partitions.values()) {
        if p.leader == election::NO_LEADER {
            offline += 1;
        } else if p.isr.len() < p.replicas.len() {
            under += 1;
        }
    }
    metrics::gauge!("runnel_controller_offline_partitions").set(offline as f64);
    metrics::gauge!("runnel_controller_under_replicated_partitions").set(under as f64);
}
