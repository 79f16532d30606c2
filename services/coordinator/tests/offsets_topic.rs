//! Committed offsets through `__consumer_offsets` on a real three-broker
//! cluster: written with acks=all, and read back by another coordinator.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use runnel_coordinator::group::{GroupConfig, JoinRequest};
use runnel_coordinator::manager::{GroupManager, OffsetCommit};
use runnel_coordinator::offsets::{OFFSETS_TOPIC, partition_for};
use runnel_coordinator::offsets_topic::OffsetsTopic;
use runnel_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_in_the_offsets_topic_for_the_next_coordinator() {
    let cluster = TestCluster::builder().brokers(3).start().await;
    let topic = Arc::new(OffsetsTopic::new(cluster.client()));
    topic.ensure(50, 3).await.unwrap();
    topic.ensure(50, 3).await.unwrap();
    let described = cluster.admin().describe_topic(OFFSETS_TOPIC).await.unwrap();
    assert_eq!(described.partitions.len(), 50);
    assert!(described.partitions.iter().all(|p| p.replicas.len() == 3));

    let config = GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    };
    let manager = GroupManager::new(config.clone(), topic.clone());
    let joined = manager
        .join(
            "orders-app",
            JoinRequest {
                client_id: "t".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 1_000,
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), b"orders".to_vec())],
                fresh_member_id: "m1".into(),
                ..JoinRequest::default()
            },
        )
        .await;
    manager
        .sync(
            "orders-app",
            "m1",
            None,
            joined.generation_id,
            vec![("m1".into(), b"p".to_vec())],
        )
        .await;
    for offset in [10, 20, 30] {
        manager
            .commit(
                "orders-app",
                "m1",
                None,
                joined.generation_id,
                vec![OffsetCommit {
                    topic: "orders".into(),
                    partition: 2,
                    offset,
                    leader_epoch: 0,
                    metadata: "m".into(),
                }],
            )
            .await
            .unwrap();
    }

    // Another coordinator replays the group's partition.
    let reader = OffsetsTopic::new(cluster.client());
    let records = reader
        .read_partition(partition_for("orders-app", 50))
        .await
        .unwrap();
    assert_eq!(records.len(), 4, "one generation and three commits");
    let successor = GroupManager::new(config, Arc::new(reader));
    successor.load(&records).unwrap();
    let c = successor.committed("orders-app", "orders", 2).unwrap();
    assert_eq!((c.offset, c.metadata.as_str()), (30, "m"));
    cluster.shutdown().await;
}
