//! `__consumer_offsets` on a real three-broker cluster: a partition's owner
//! writes with acks=all under the partition's producer id; a new owner at a
//! higher owner epoch fences the old one at the brokers; the new owner
//! replays everything the old one stored.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use runnel_coordinator::group::{GroupConfig, JoinRequest};
use runnel_coordinator::internal_topic::InternalTopic;
use runnel_coordinator::manager::{GroupManager, OffsetCommit, RecordSink};
use runnel_coordinator::offsets::{OFFSETS_TOPIC, owner_record, partition_for};
use runnel_proto::broker::v1::InitProducerIdRequest;
use runnel_proto::common::v1::ErrorCode;
use runnel_testkit::TestCluster;

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_fences_the_old_one_and_replays_what_it_stored() {
    let cluster = TestCluster::builder().brokers(3).start().await;
    let old_topic = Arc::new(InternalTopic::offsets(cluster.client()));
    old_topic.ensure(50, 3).await.unwrap();
    old_topic.ensure(50, 3).await.unwrap();
    let described = cluster.admin().describe_topic(OFFSETS_TOPIC).await.unwrap();
    assert_eq!(described.partitions.len(), 50);
    assert!(described.partitions.iter().all(|p| p.replicas.len() == 3));

    // The controller gives each partition a producer id; any unused one does here.
    let producer_id = cluster
        .client()
        .broker_at(&cluster.broker_addr(0).to_string())
        .unwrap()
        .init_producer_id(InitProducerIdRequest {
            producer_id: -1,
            producer_epoch: -1,
            ..InitProducerIdRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .producer_id;
    let group = "orders-app";
    let p = partition_for(group, 50);
    old_topic
        .take_over(p, producer_id, 0, owner_record(p, 1, 0))
        .await
        .unwrap();
    let old = GroupManager::new(config(), old_topic.clone());
    let joined = old
        .join(
            group,
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
    old.sync(
        group,
        "m1",
        None,
        joined.generation_id,
        vec![("m1".into(), b"p".to_vec())],
    )
    .await;
    let commit = |offset| {
        vec![OffsetCommit {
            topic: "orders".into(),
            partition: 2,
            offset,
            leader_epoch: 0,
            metadata: "m".into(),
        }]
    };
    for offset in [10, 20, 30] {
        old.commit(group, "m1", None, joined.generation_id, commit(offset))
            .await
            .unwrap();
    }

    // A second coordinator takes the partition over at the next epoch.
    let new_topic = Arc::new(InternalTopic::offsets(cluster.client()));
    new_topic
        .take_over(p, producer_id, 1, owner_record(p, 2, 1))
        .await
        .unwrap();
    let refused = old
        .commit(group, "m1", None, joined.generation_id, commit(40))
        .await;
    assert_eq!(
        refused,
        Err(ErrorCode::NotCoordinator),
        "the old owner is fenced"
    );
    let stale = old_topic.append(p, vec![(b"k".to_vec(), None)]).await;
    assert_eq!(stale.unwrap_err().code, ErrorCode::NotCoordinator);

    let records = new_topic.read_partition(p).await.unwrap().records;
    assert_eq!(
        records.len(),
        6,
        "two ownership markers, one generation and three commits"
    );
    let successor = GroupManager::new(config(), new_topic.clone()).owning_assigned_partitions();
    successor.begin_load(p);
    assert_eq!(
        successor.check_owner(group),
        Err(ErrorCode::CoordinatorLoadInProgress)
    );
    successor.finish_load(p, &records).unwrap();
    let c = successor.committed(group, "orders", 2).unwrap();
    assert_eq!((c.offset, c.metadata.as_str()), (30, "m"));
    // The group's member carries on in its generation at the new owner.
    successor
        .heartbeat(group, "m1", None, joined.generation_id)
        .unwrap();
    successor
        .commit(group, "m1", None, joined.generation_id, commit(50))
        .await
        .unwrap();
    assert_eq!(
        successor.check_owner("some-other-group-elsewhere"),
        Err(ErrorCode::NotCoordinator)
    );
    successor.unload(p);
    assert_eq!(successor.check_owner(group), Err(ErrorCode::NotCoordinator));
    assert!(successor.committed(group, "orders", 2).is_none());
    cluster.shutdown().await;
}
