//! Runnel's own transactional producer over gRPC, against brokers and a
//! transaction coordinator: commit and abort visibility across partitions
//! of two topics, consume-transform-produce offsets that count only once
//! committed, fencing by a newer producer with the same id, and the
//! broker's KIP-890 check refusing a transactional batch to a partition
//! the transaction never added.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_client::{
    ClientError, ConsumerConfig, ConsumerGroupMetadata, ErrorCode, IsolationLevel, NewTopic,
    OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use runnel_proto::broker::v1 as pb;
use runnel_proto::broker::v1::broker_client::BrokerClient;
use runnel_testkit::txn::batch;
use runnel_testkit::{TestCluster, wait_for};

async fn cluster() -> TestCluster {
    let cluster = TestCluster::builder()
        .brokers(1)
        .coordinators(1)
        .start()
        .await;
    for topic in ["orders", "audit"] {
        cluster
            .create_topic(NewTopic::new(topic).partitions(2).replication_factor(1))
            .await;
    }
    cluster
}

fn transactional(cluster: &TestCluster, id: &str) -> Producer {
    Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            transactional_id: Some(id.to_owned()),
            linger: Duration::from_millis(1),
            ..ProducerConfig::default()
        },
    )
}

/// Every value of `topic` a consumer at `level` reads from the start,
/// sorted, once nothing new has come for a second.
async fn read(cluster: &TestCluster, topic: &str, level: IsolationLevel) -> Vec<String> {
    let mut consumer = runnel_client::Consumer::with_cluster(
        cluster.client(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation_level: level,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(vec![
            TopicPartition::new(topic, 0),
            TopicPartition::new(topic, 1),
        ])
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
    values.sort();
    values
}

async fn send(p: &Producer, topic: &str, partition: i32, value: &str) {
    p.send(ProducerRecord::new(topic, value.to_owned()).partition(partition))
        .await
        .unwrap();
}

fn code(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_records_are_seen_together_and_aborted_ones_never() {
    let cluster = cluster().await;
    let p = transactional(&cluster, "orders-app");

    // Calls out of order are refused before anything reaches the cluster.
    let early = p
        .send(ProducerRecord::new("orders", "too early"))
        .await
        .unwrap_err();
    assert!(early.to_string().contains("init_transactions"), "{early}");
    p.init_transactions().await.unwrap();
    let not_begun = p
        .send(ProducerRecord::new("orders", "not begun"))
        .await
        .unwrap_err();
    assert!(
        not_begun.to_string().contains("begin_transaction"),
        "{not_begun}"
    );
    assert!(p.commit_transaction().await.is_err());

    p.begin_transaction().unwrap();
    for (topic, partition, value) in [("orders", 0, "o1"), ("orders", 1, "o2"), ("audit", 0, "a1")]
    {
        send(&p, topic, partition, value).await;
    }
    p.commit_transaction().await.unwrap();

    p.begin_transaction().unwrap();
    send(&p, "orders", 0, "x1").await;
    send(&p, "audit", 1, "x2").await;
    p.flush().await.unwrap();
    p.abort_transaction().await.unwrap();

    // A transaction that sends nothing ends without the coordinator.
    p.begin_transaction().unwrap();
    p.commit_transaction().await.unwrap();

    p.begin_transaction().unwrap();
    send(&p, "orders", 1, "o3").await;
    p.commit_transaction().await.unwrap();

    assert_eq!(
        read(&cluster, "orders", IsolationLevel::ReadCommitted).await,
        ["o1", "o2", "o3"]
    );
    assert_eq!(
        read(&cluster, "audit", IsolationLevel::ReadCommitted).await,
        ["a1"]
    );
    assert_eq!(
        read(&cluster, "orders", IsolationLevel::ReadUncommitted).await,
        ["o1", "o2", "o3", "x1"]
    );
    let described = cluster
        .admin()
        .describe_transaction("orders-app")
        .await
        .unwrap();
    assert_eq!(described.state, "CompleteCommit");
    p.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_count_only_when_it_commits() {
    let cluster = cluster().await;
    let admin = cluster.admin();
    let p = transactional(&cluster, "copier");
    p.init_transactions().await.unwrap();
    let group = ConsumerGroupMetadata::new("copiers");
    let tp = TopicPartition::new("orders", 0);

    p.begin_transaction().unwrap();
    send(&p, "audit", 0, "copied 0..5").await;
    p.send_offsets_to_transaction(&[(tp.clone(), 5)], &group)
        .await
        .unwrap();
    p.abort_transaction().await.unwrap();
    assert_eq!(
        admin.group_offsets("copiers").await.unwrap(),
        BTreeMap::new()
    );

    p.begin_transaction().unwrap();
    send(&p, "audit", 0, "copied 0..7").await;
    p.send_offsets_to_transaction(&[(tp.clone(), 7)], &group)
        .await
        .unwrap();
    p.commit_transaction().await.unwrap();
    wait_for(
        "the committed offset to count",
        Duration::from_secs(10),
        || {
            let admin = &admin;
            let tp = tp.clone();
            async move { admin.group_offsets("copiers").await.unwrap().get(&tp) == Some(&7) }
        },
    )
    .await;
    assert_eq!(
        read(&cluster, "audit", IsolationLevel::ReadCommitted).await,
        ["copied 0..7"]
    );
    p.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_producer_with_the_same_id_fences_the_older_one() {
    let cluster = cluster().await;
    let old = transactional(&cluster, "fenced-app");
    old.init_transactions().await.unwrap();
    old.begin_transaction().unwrap();
    send(&old, "orders", 0, "zombie").await;
    old.flush().await.unwrap();

    // The newer producer's init aborts the open transaction and fences the old one.
    let new = transactional(&cluster, "fenced-app");
    new.init_transactions().await.unwrap();
    // The zombie's next batch is refused by the leader, which has seen the
    // newer epoch, and that is fatal: commit fails with the same error.
    let refused = old
        .send(ProducerRecord::new("orders", "zombie again").partition(0))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(
        matches!(
            code(&refused),
            Some(ErrorCode::ProducerFenced | ErrorCode::InvalidProducerEpoch)
        ),
        "{refused}"
    );
    let fenced = old.commit_transaction().await.unwrap_err();
    assert!(
        matches!(
            code(&fenced),
            Some(ErrorCode::ProducerFenced | ErrorCode::InvalidProducerEpoch)
        ),
        "{fenced}"
    );
    // Fenced is for good.
    let after = old.begin_transaction().unwrap_err();
    assert_eq!(code(&after), code(&fenced), "{after}");

    new.begin_transaction().unwrap();
    send(&new, "orders", 0, "live").await;
    new.commit_transaction().await.unwrap();
    assert_eq!(
        read(&cluster, "orders", IsolationLevel::ReadCommitted).await,
        ["live"]
    );
    new.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_produce_refuses_a_transactional_batch_to_a_partition_never_added() {
    let cluster = cluster().await;
    let client = cluster.client();
    let (_, addr) = client
        .find_transaction_coordinator("verify-app")
        .await
        .unwrap();
    assert!(!addr.is_empty());
    let empty = client.find_transaction_coordinator("").await.unwrap_err();
    assert_eq!(code(&empty), Some(ErrorCode::InvalidRequest), "{empty}");

    // A producer id and epoch of the transactional id, through a broker.
    let mut broker = BrokerClient::connect(format!("http://{}", cluster.broker_addr(0)))
        .await
        .unwrap();
    let init = broker
        .init_producer_id(pb::InitProducerIdRequest {
            transactional_id: "verify-app".into(),
            transaction_timeout_ms: 60_000,
            producer_id: -1,
            producer_epoch: -1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(init.error_code(), ErrorCode::None, "{}", init.error_message);
    let epoch = i16::try_from(init.producer_epoch).unwrap();

    let refused = broker
        .produce(pb::ProduceRequest {
            acks: pb::Acks::All as i32,
            timeout_ms: 10_000,
            partitions: vec![pb::ProducePartition {
                topic: "orders".into(),
                partition: 0,
                records: batch(init.producer_id, epoch, 0, true, &["sneaky"]).into(),
            }],
            transactional_id: "verify-app".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(refused.error_code(), ErrorCode::InvalidTxnState);
    assert!(
        refused.error_message.contains("has not added orders-0"),
        "{}",
        refused.error_message
    );
    assert!(
        read(&cluster, "orders", IsolationLevel::ReadUncommitted)
            .await
            .is_empty()
    );
    let producers = cluster
        .admin()
        .describe_producers("orders", 0)
        .await
        .unwrap();
    assert!(producers.is_empty(), "{producers:?}");
}
