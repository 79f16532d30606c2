//! The partition side of transactions across three brokers: markers
//! written with WriteTxnMarkers settle transactions on every replica, a
//! read_committed consumer stops at the oldest open transaction and skips
//! aborted ones, through a leader's death; markers and transactional
//! batches that break the rules are refused and change nothing.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use runnel_client::{ConsumerConfig, IsolationLevel, NewTopic, OffsetReset, TopicPartition};
use runnel_proto::broker::v1 as pb;
use runnel_proto::broker::v1::broker_client::BrokerClient;
use runnel_proto::common::v1::ErrorCode;
use runnel_testkit::txn::{batch, end, plain, produce};
use runnel_testkit::{TestCluster, wait_for};
use tonic::transport::Channel;

const TOPIC: &str = "txn";

async fn broker(cluster: &TestCluster, id: i32) -> BrokerClient<Channel> {
    let addr = cluster.broker_addr((id - 1) as usize);
    BrokerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Every value a consumer at `level` reads from the start until it has
/// seen nothing new for a second.
async fn read(cluster: &TestCluster, level: IsolationLevel) -> Vec<String> {
    let mut consumer = runnel_client::Consumer::with_cluster(
        cluster.client(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation_level: level,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(vec![TopicPartition::new(TOPIC, 0)])
        .await
        .unwrap();
    let mut values = Vec::new();
    let mut idle = 0;
    while idle < 4 {
        let records = consumer.poll(Duration::from_millis(250)).await.unwrap();
        if records.is_empty() {
            idle += 1;
        }
        for r in records {
            idle = 0;
            values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    values
}

/// The LATEST offset at `level`, from the leader.
async fn latest(client: &mut BrokerClient<Channel>, level: pb::IsolationLevel) -> i64 {
    let r = client
        .list_offsets(pb::ListOffsetsRequest {
            partitions: vec![pb::ListOffsetsPartition {
                topic: TOPIC.into(),
                partition: 0,
                spec: pb::OffsetSpec::Latest as i32,
                timestamp_ms: 0,
            }],
            isolation_level: level as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
    r.offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_settle_transactions_on_every_replica_through_a_leader_change() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(
            NewTopic::new(TOPIC)
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
    let leader = cluster.controller_leader(TOPIC, 0).await;
    let mut c = broker(&cluster, leader).await;
    let (aborted, committed, open) = (1001, 1002, 1003);
    for (records, what) in [
        (plain(&["p0"]), "plain"),
        (batch(aborted, 0, 0, true, &["a0", "a1"]), "to abort"),
        (batch(committed, 0, 0, true, &["b0"]), "to commit"),
        (batch(open, 0, 0, true, &["c0"]), "left open"),
        (plain(&["p1"]), "plain after"),
    ] {
        let r = produce(&mut c, TOPIC, 0, records).await;
        assert_eq!(
            r.error_code(),
            ErrorCode::None,
            "{what}: {}",
            r.error_message
        );
    }
    let r = end(&mut c, TOPIC, 0, aborted, 0, false, 0).await;
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
    let r = end(&mut c, TOPIC, 0, committed, 0, true, 0).await;
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);

    // The open transaction's first record (offset 4) holds read_committed
    // readers back; read_uncommitted readers see everything.
    assert_eq!(latest(&mut c, pb::IsolationLevel::ReadCommitted).await, 4);
    assert_eq!(latest(&mut c, pb::IsolationLevel::ReadUncommitted).await, 8);
    assert_eq!(
        read(&cluster, IsolationLevel::ReadCommitted).await,
        ["p0", "b0"]
    );
    assert_eq!(
        read(&cluster, IsolationLevel::ReadUncommitted).await,
        ["p0", "a0", "a1", "b0", "c0", "p1"]
    );
    // The open one commits (marker at 8) and its producer opens another
    // (c1 at 9); then bad input, each refused with Kafka's error.
    let r = end(&mut c, TOPIC, 0, open, 0, true, 5).await;
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
    let r = produce(&mut c, TOPIC, 0, batch(open, 0, 1, true, &["c1"])).await;
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
    let stale_coordinator = end(&mut c, TOPIC, 0, open, 0, true, 4).await;
    assert_eq!(
        stale_coordinator.error_code(),
        ErrorCode::TransactionCoordinatorFenced,
        "{}",
        stale_coordinator.error_message
    );
    // A producer whose transaction ended may write outside one (x at 10).
    let after = produce(&mut c, TOPIC, 0, batch(aborted, 0, 2, false, &["x"])).await;
    assert_eq!(
        after.error_code(),
        ErrorCode::None,
        "{}",
        after.error_message
    );
    let plain_in_txn = produce(&mut c, TOPIC, 0, batch(open, 0, 2, false, &["x"])).await;
    assert_eq!(
        plain_in_txn.error_code(),
        ErrorCode::InvalidTxnState,
        "{}",
        plain_in_txn.error_message
    );
    let fenced = end(&mut c, TOPIC, 0, open, -1, true, 5).await;
    assert_eq!(
        fenced.error_code(),
        ErrorCode::InvalidRequest,
        "{}",
        fenced.error_message
    );
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let not_leader = end(
        &mut broker(&cluster, follower).await,
        TOPIC,
        0,
        open,
        0,
        true,
        5,
    )
    .await;
    assert_eq!(not_leader.error_code(), ErrorCode::NotLeaderOrFollower);
    assert_eq!(latest(&mut c, pb::IsolationLevel::ReadCommitted).await, 9);
    assert_eq!(
        latest(&mut c, pb::IsolationLevel::ReadUncommitted).await,
        11
    );

    // The leader dies: the new one has every marker (they were acks=all).
    cluster.kill_broker((leader - 1) as usize).await;
    let admin = cluster.admin();
    wait_for("a new leader", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            admin
                .describe_topic(TOPIC)
                .await
                .is_ok_and(|t| t.partitions[0].leader >= 0 && t.partitions[0].leader != leader)
        }
    })
    .await;
    let new_leader = cluster.controller_leader(TOPIC, 0).await;
    let mut c = broker(&cluster, new_leader).await;
    wait_for(
        "the new leader's high watermark",
        Duration::from_secs(30),
        || {
            let mut c = c.clone();
            async move { latest(&mut c, pb::IsolationLevel::ReadUncommitted).await >= 11 }
        },
    )
    .await;
    assert_eq!(latest(&mut c, pb::IsolationLevel::ReadCommitted).await, 9);
    assert_eq!(
        read(&cluster, IsolationLevel::ReadCommitted).await,
        ["p0", "b0", "c0", "p1"]
    );
    // The coordinator's abort reaches the new leader; c1 is skipped for good.
    let r = end(&mut c, TOPIC, 0, open, 0, false, 5).await;
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
    assert_eq!(
        read(&cluster, IsolationLevel::ReadCommitted).await,
        ["p0", "b0", "c0", "p1", "x"]
    );
    assert_eq!(
        latest(&mut c, pb::IsolationLevel::ReadCommitted).await,
        latest(&mut c, pb::IsolationLevel::ReadUncommitted).await
    );
    cluster.shutdown().await;
}
