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

/// What `runnel transactions` shows: a transactional id's state and
/// partitions, a partition's producers, and a hanging transaction (written
/// without its coordinator), found and aborted by hand so readers move on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_listed_described_and_hanging_ones_found_and_aborted() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    use runnel_testkit::kafka_wire::KafkaConn;

    let cluster = TestCluster::builder()
        .brokers(1)
        .coordinators(1)
        .start()
        .await;
    cluster
        .create_topic(NewTopic::new(TOPIC).partitions(2).replication_factor(1))
        .await;
    let bootstrap = cluster.kafka_bootstrap();
    let s = |v: &str| StrBytes::from_string(v.to_owned());
    // An open transaction through the coordinator, holding partition 0.
    let (pid, epoch) = {
        let found = std::sync::Mutex::new((0, 0));
        wait_for(
            "a transactional producer id",
            Duration::from_secs(30),
            || {
                let (bootstrap, found) = (bootstrap.clone(), &found);
                async move {
                    let mut c = KafkaConn::connect(&bootstrap).await;
                    let r = c
                        .call(
                            4,
                            &InitProducerIdRequest::default()
                                .with_transactional_id(Some(TransactionalId(s("app-1"))))
                                .with_transaction_timeout_ms(60_000)
                                .with_producer_id(ProducerId(-1))
                                .with_producer_epoch(-1),
                        )
                        .await;
                    *found.lock().unwrap() = (r.producer_id.0, r.producer_epoch);
                    r.error_code == 0
                }
            },
        )
        .await;
        found.into_inner().unwrap()
    };
    let mut c = KafkaConn::connect(&bootstrap).await;
    let r = c
        .call(
            3,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s("app-1")))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_partitions(vec![0]),
                ]),
        )
        .await;
    assert_eq!(
        r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );

    let admin = cluster.admin();
    let listed = admin.list_transactions(&[], &[]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].transactional_id.as_str(),
            listed[0].state.as_str()
        ),
        ("app-1", "Ongoing")
    );
    assert!(
        admin
            .list_transactions(&["Empty".into()], &[])
            .await
            .unwrap()
            .is_empty()
    );
    let described = admin.describe_transaction("app-1").await.unwrap();
    assert_eq!(described.producer_id, pid);
    assert_eq!(described.partitions, vec![TopicPartition::new(TOPIC, 0)]);
    assert!(described.start_ms > 0);

    // A batch written around the coordinator (over gRPC) opens a
    // transaction in partition 1 that nothing will end.
    let leader = cluster.controller_leader(TOPIC, 1).await;
    let mut b = broker(&cluster, leader).await;
    let r = produce(&mut b, TOPIC, 1, batch(4242, 3, 0, true, &["stuck"])).await;
    assert_eq!(r.error_code(), ErrorCode::None);
    let r = produce(&mut b, TOPIC, 1, plain(&["after"])).await;
    assert_eq!(r.error_code(), ErrorCode::None);
    let producers = admin.describe_producers(TOPIC, 1).await.unwrap();
    assert_eq!(producers.len(), 1);
    assert_eq!(
        (
            producers[0].producer_id,
            producers[0].current_txn_start_offset
        ),
        (4242, 0)
    );
    let partitions = [TopicPartition::new(TOPIC, 0), TopicPartition::new(TOPIC, 1)];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hanging = admin
        .find_hanging_transactions(&partitions, 900_000, now)
        .await
        .unwrap();
    assert_eq!(
        hanging.len(),
        1,
        "only the one its coordinator does not know: {hanging:?}"
    );
    assert_eq!(hanging[0].partition, TopicPartition::new(TOPIC, 1));
    admin.abort_transaction(TOPIC, 1, 4242, 3, 0).await.unwrap();
    assert!(
        admin
            .find_hanging_transactions(&partitions, 900_000, now)
            .await
            .unwrap()
            .is_empty()
    );
    let producers = admin.describe_producers(TOPIC, 1).await.unwrap();
    assert_eq!(producers[0].current_txn_start_offset, -1, "no longer open");
    cluster.shutdown().await;
}

/// A broker killed (nothing flushed or closed) mid-transaction comes back
/// with the same last stable offset, aborted-transaction index and open
/// transaction: read_committed readers see the same records, and the open
/// transaction still commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_keeps_its_transactions() {
    let mut cluster = TestCluster::builder().brokers(1).start().await;
    cluster
        .create_topic(NewTopic::new(TOPIC).partitions(1).replication_factor(1))
        .await;
    let mut c = broker(&cluster, 1).await;
    for records in [
        plain(&["p0"]),
        batch(11, 0, 0, true, &["a0"]),
        batch(12, 0, 0, true, &["c0"]),
        batch(13, 0, 0, true, &["o0"]),
        plain(&["p1"]),
    ] {
        assert_eq!(
            produce(&mut c, TOPIC, 0, records).await.error_code(),
            ErrorCode::None
        );
    }
    assert_eq!(
        end(&mut c, TOPIC, 0, 11, 0, false, 0).await.error_code(),
        ErrorCode::None
    );
    assert_eq!(
        end(&mut c, TOPIC, 0, 12, 0, true, 0).await.error_code(),
        ErrorCode::None
    );
    let lso = latest(&mut c, pb::IsolationLevel::ReadCommitted).await;
    assert_eq!(lso, 3, "held at the open transaction's first record");
    let before = read(&cluster, IsolationLevel::ReadCommitted).await;
    assert_eq!(before, ["p0", "c0"]);

    cluster.kill_broker(0).await;
    cluster.start_broker_again(0).await;
    cluster.wait_ready().await;
    let mut c = broker(&cluster, 1).await;
    wait_for("the restarted leader", Duration::from_secs(30), || {
        let mut c = c.clone();
        async move {
            c.list_offsets(pb::ListOffsetsRequest {
                partitions: vec![pb::ListOffsetsPartition {
                    topic: TOPIC.into(),
                    partition: 0,
                    spec: pb::OffsetSpec::Latest as i32,
                    timestamp_ms: 0,
                }],
                isolation_level: pb::IsolationLevel::ReadUncommitted as i32,
            })
            .await
            .is_ok_and(|r| r.into_inner().partitions[0].offset == 7)
        }
    })
    .await;
    assert_eq!(latest(&mut c, pb::IsolationLevel::ReadCommitted).await, lso);
    assert_eq!(read(&cluster, IsolationLevel::ReadCommitted).await, before);
    let producers = cluster.admin().describe_producers(TOPIC, 0).await.unwrap();
    let open: Vec<(i64, i64)> = producers
        .iter()
        .filter(|p| p.current_txn_start_offset >= 0)
        .map(|p| (p.producer_id, p.current_txn_start_offset))
        .collect();
    assert_eq!(open, [(13, 3)]);
    assert_eq!(
        end(&mut c, TOPIC, 0, 13, 0, true, 0).await.error_code(),
        ErrorCode::None
    );
    assert_eq!(
        read(&cluster, IsolationLevel::ReadCommitted).await,
        ["p0", "c0", "o0", "p1"]
    );
    cluster.shutdown().await;
}

/// A transaction aborted while its partition has no leader, so its marker
/// waits; meanwhile a broker crashes and comes back. Until that broker has
/// caught up with the metadata log it answers the coordinator's metadata
/// refresh (it is first in the bootstrap list) without the topic:
/// LEADER_NOT_AVAILABLE, not UNKNOWN_TOPIC_OR_PARTITION. The topic is not
/// gone: the marker waits for a leader rather than being skipped, or the
/// abort would complete while the partition keeps the transaction open,
/// and read_committed readers would stop at its first record forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_waits_for_a_leader_when_a_restarted_broker_does_not_know_the_topic_yet() {
    use runnel_client::ProducerRecord;
    use runnel_coordinator::transaction::TxnState;

    // Sessions long enough that the coordinator keeps its partitions
    // through the seconds its metadata refreshes find no controller.
    let mut cluster = TestCluster::builder()
        .brokers(3)
        .coordinators(1)
        .broker_heartbeats(100, 10_000)
        .start()
        .await;
    cluster.wait_coordinators().await;
    cluster
        .create_topic(NewTopic::new(TOPIC).assignments(vec![vec![2]]))
        .await;
    let producer = transaction_of_app_1(&cluster).await;
    producer
        .send(ProducerRecord::new(TOPIC, "a0").partition(0))
        .await
        .unwrap();
    producer.flush().await.unwrap();

    // The partition's only replica stops: the abort is stored, its marker waits.
    cluster.stop_broker(1).await;
    producer.abort_transaction().await.unwrap();

    // Broker 1 crashes and comes back cut off from the controller: it
    // serves clients from an empty metadata image, as every restarted
    // broker does until it has caught up (held here so the test does not
    // race the catch-up).
    cluster.isolate(0);
    cluster.kill_broker(0).await;
    cluster.start_broker_only(0).await;
    let restarted = broker(&cluster, 1).await;
    wait_for(
        "the restarted broker to answer metadata without the topic",
        Duration::from_secs(30),
        || {
            let mut restarted = restarted.clone();
            async move {
                restarted
                    .metadata(pb::MetadataRequest {
                        topics: vec![TOPIC.into()],
                        allow_auto_topic_creation: false,
                    })
                    .await
                    .is_ok_and(|r| {
                        r.into_inner().topics[0].error_code() == ErrorCode::LeaderNotAvailable
                    })
            }
        },
    )
    .await;
    // The marker is retried at least every 2 s; for 3 s, each retry asks
    // broker 1 first. Throughout, the abort waits for its marker.
    let transactions = std::sync::Arc::clone(&cluster.coordinator(0).unwrap().transactions);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let (_, described) = transactions.describe(&["app-1".into()]).remove(0);
        let m = described.unwrap();
        assert!(
            m.state == TxnState::PrepareAbort && m.pending.is_none(),
            "the abort went on without its marker: {:?} (pending {:?})",
            m.state,
            m.pending
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.heal();
    cluster.start_broker_again(1).await;
    let admin = cluster.admin();
    wait_complete_abort(&admin, "app-1").await;
    // The record (offset 0) and its abort marker (offset 1): nothing is
    // left open, so read_committed readers reach the high watermark.
    let mut c = broker(&cluster, 2).await;
    let hw = latest(&mut c, pb::IsolationLevel::ReadUncommitted).await;
    let lso = latest(&mut c, pb::IsolationLevel::ReadCommitted).await;
    assert_eq!((lso, hw), (2, 2), "(last stable offset, high watermark)");
    let producers = admin.describe_producers(TOPIC, 0).await.unwrap();
    assert_eq!(producers[0].current_txn_start_offset, -1, "no longer open");
    cluster.shutdown().await;
}

/// A transactional producer `app-1` with its transaction begun.
async fn transaction_of_app_1(cluster: &TestCluster) -> runnel_client::Producer {
    let producer = runnel_client::Producer::with_cluster(
        cluster.client(),
        runnel_client::ProducerConfig {
            transactional_id: Some("app-1".into()),
            linger: Duration::from_millis(1),
            ..runnel_client::ProducerConfig::default()
        },
    );
    producer.init_transactions().await.unwrap();
    producer.begin_transaction().unwrap();
    producer
}

/// Waits until the coordinator has finished aborting `transactional_id`'s
/// transaction (every marker written).
async fn wait_complete_abort(admin: &runnel_client::Admin, transactional_id: &str) {
    wait_for("the abort to complete", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            admin
                .describe_transaction(transactional_id)
                .await
                .is_ok_and(|t| t.state == "CompleteAbort")
        }
    })
    .await;
}

/// A partition whose topic was deleted while a transaction held it is
/// skipped when the transaction ends (as Kafka does): the brokers say the
/// topic is unknown, and the abort completes with its other partitions'
/// markers written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_for_a_deleted_topic_is_skipped() {
    use runnel_client::ProducerRecord;

    let cluster = TestCluster::builder()
        .brokers(1)
        .coordinators(1)
        .start()
        .await;
    cluster.wait_coordinators().await;
    for topic in [TOPIC, "doomed"] {
        cluster
            .create_topic(NewTopic::new(topic).partitions(1).replication_factor(1))
            .await;
    }
    let producer = transaction_of_app_1(&cluster).await;
    for topic in [TOPIC, "doomed"] {
        producer
            .send(ProducerRecord::new(topic, "a0").partition(0))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let admin = cluster.admin();
    admin.delete_topic("doomed").await.unwrap();
    wait_for("the topic to go", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move { admin.describe_topic("doomed").await.is_err() }
    })
    .await;
    producer.abort_transaction().await.unwrap();
    wait_complete_abort(&admin, "app-1").await;
    let mut c = broker(&cluster, 1).await;
    let hw = latest(&mut c, pb::IsolationLevel::ReadUncommitted).await;
    let lso = latest(&mut c, pb::IsolationLevel::ReadCommitted).await;
    assert_eq!((lso, hw), (2, 2), "(last stable offset, high watermark)");
    cluster.shutdown().await;
}
