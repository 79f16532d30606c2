//! The idempotent producer across three brokers: a retried batch is never
//! stored twice, whoever leads when the retry arrives, and production
//! through a leader's death stores each record exactly once, in order.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use runnel_client::{NewTopic, Producer, ProducerConfig, ProducerRecord};
use runnel_proto::broker::v1 as pb;
use runnel_proto::broker::v1::broker_client::BrokerClient;
use runnel_proto::common::v1::ErrorCode;
use runnel_records::batch::{BatchBuilder, Compression};
use runnel_testkit::{TestCluster, wait_for};

async fn rf3_topic(cluster: &TestCluster, name: &str, partitions: i32) {
    cluster
        .create_topic(
            NewTopic::new(name)
                .partitions(partitions)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
}

async fn broker(cluster: &TestCluster, id: i32) -> BrokerClient<tonic::transport::Channel> {
    let addr = cluster.broker_addr((id - 1) as usize);
    BrokerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn batch(producer_id: i64, seq: i32, records: u32) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None).producer(producer_id, 0, seq);
    for i in 0..records {
        b.append(
            1_700_000_000_000,
            None,
            Some(format!("seq-{seq}-{i}").as_bytes()),
            &[],
        );
    }
    b.build().unwrap()
}

async fn produce(
    client: &mut BrokerClient<tonic::transport::Channel>,
    topic: &str,
    records: Vec<u8>,
) -> pb::ProducePartitionResult {
    runnel_testkit::txn::produce(client, topic, 0, records).await
}

/// Waits (bounded) until each partition's high watermark is at least
/// `more` past its entry in `from`; returns the high watermarks it saw.
async fn wait_committed(cluster: &TestCluster, topic: &str, from: &[i64], more: i64) -> Vec<i64> {
    let admin = cluster.admin();
    let seen = std::sync::Mutex::new(Vec::new());
    wait_for(
        &format!("{more} more records committed in every partition of {topic}"),
        Duration::from_secs(30),
        || {
            let (admin, seen) = (admin.clone(), &seen);
            async move {
                let Ok(t) = admin.describe_topic(topic).await else {
                    return false;
                };
                let hw: Vec<i64> = t.partitions.iter().map(|p| p.log_end_offset).collect();
                let reached = hw.len() == from.len()
                    && hw
                        .iter()
                        .zip(from)
                        .all(|(&now, &start)| now >= start + more);
                if reached {
                    *seen.lock().unwrap() = hw;
                }
                reached
            }
        },
    )
    .await;
    seen.into_inner().unwrap()
}

async fn new_leader(cluster: &TestCluster, topic: &str, old: i32) -> i32 {
    let admin = cluster.admin();
    wait_for("a new leader", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            admin
                .describe_topic(topic)
                .await
                .is_ok_and(|t| t.partitions[0].leader >= 0 && t.partitions[0].leader != old)
        }
    })
    .await;
    cluster.controller_leader(topic, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_reaching_a_new_leader_or_a_restarted_cluster_is_not_stored_twice() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    rf3_topic(&cluster, "retried", 1).await;
    let first = cluster.controller_leader("retried", 0).await;
    let mut client = broker(&cluster, first).await;

    // Producer ids come from the controller's blocks: distinct on every broker.
    let mut ids = Vec::new();
    for id in 1..=3 {
        let r = broker(&cluster, id)
            .await
            .init_producer_id(pb::InitProducerIdRequest {
                producer_id: -1,
                producer_epoch: -1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
        assert_eq!(r.producer_epoch, 0);
        ids.push(r.producer_id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let pid = ids[0];

    let a = produce(&mut client, "retried", batch(pid, 0, 5)).await;
    assert_eq!((a.error_code(), a.base_offset), (ErrorCode::None, 0));
    let b = produce(&mut client, "retried", batch(pid, 5, 5)).await;
    assert_eq!(b.base_offset, 5);
    // The same batch again: its original offset, nothing stored.
    let again = produce(&mut client, "retried", batch(pid, 5, 5)).await;
    assert_eq!(
        (
            again.error_code(),
            again.base_offset,
            again.batch_base_offsets
        ),
        (ErrorCode::None, 5, vec![5])
    );

    // The retry reaches a new leader, which learnt the producer from replication.
    cluster.kill_broker((first - 1) as usize).await;
    let second = new_leader(&cluster, "retried", first).await;
    let mut client = broker(&cluster, second).await;
    let retry = produce(&mut client, "retried", batch(pid, 5, 5)).await;
    assert_eq!(
        (retry.error_code(), retry.base_offset),
        (ErrorCode::None, 5)
    );
    // A gap is refused; the next batch in order is stored.
    let gap = produce(&mut client, "retried", batch(pid, 11, 1)).await;
    assert_eq!(gap.error_code(), ErrorCode::OutOfOrderSequenceNumber);
    let next = produce(&mut client, "retried", batch(pid, 10, 1)).await;
    assert_eq!((next.error_code(), next.base_offset), (ErrorCode::None, 10));

    // Every broker restarts: the state comes back from the logs.
    cluster.start_broker_again((first - 1) as usize).await;
    for i in 0..3 {
        cluster.restart_broker(i).await;
    }
    wait_for(
        "a leader after the restart",
        Duration::from_secs(60),
        || {
            let admin = cluster.admin();
            async move {
                admin
                    .describe_topic("retried")
                    .await
                    .is_ok_and(|t| t.partitions[0].leader >= 0 && t.partitions[0].isr.len() >= 2)
            }
        },
    )
    .await;
    let third = cluster.controller_leader("retried", 0).await;
    let mut client = broker(&cluster, third).await;
    let after = produce(&mut client, "retried", batch(pid, 10, 1)).await;
    assert_eq!(
        (after.error_code(), after.base_offset),
        (ErrorCode::None, 10)
    );
    let end = client
        .list_offsets(pb::ListOffsetsRequest {
            partitions: vec![pb::ListOffsetsPartition {
                topic: "retried".into(),
                partition: 0,
                spec: pb::OffsetSpec::Latest as i32,
                timestamp_ms: 0,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .partitions[0]
        .offset;
    assert_eq!(end, 11, "nothing was stored twice");
    cluster.shutdown().await;
}

/// Issue test 1: continuous acks=all idempotent production to RF=3 with
/// min.insync.replicas=2 while the leader dies; every acknowledged record
/// is read back exactly once, in order per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_through_a_leaders_death_stores_every_record_exactly_once_in_order() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    let partitions = 3;
    rf3_topic(&cluster, "exactly-once", partitions).await;
    let victim = cluster.controller_leader("exactly-once", 0).await;

    let producer = Arc::new(Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            linger: Duration::from_millis(2),
            ..ProducerConfig::default()
        },
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = {
        let (producer, stop) = (Arc::clone(&producer), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut deliveries = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let partition = (i % partitions as u64) as i32;
                let record =
                    ProducerRecord::new("exactly-once", format!("{i}")).partition(partition);
                deliveries.push((i, producer.send(record).await.unwrap()));
                i += 1;
                // Paces the producer so the kill lands amid a steady stream.
                if i.is_multiple_of(64) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            deliveries
        })
    };
    // The kill comes mid-stream, once every partition has taken records;
    // production stops once every partition took as many again after it,
    // through whichever leader it has then.
    let at_kill =
        wait_committed(&cluster, "exactly-once", &vec![0; partitions as usize], 200).await;
    cluster.kill_broker((victim - 1) as usize).await;
    new_leader(&cluster, "exactly-once", victim).await;
    wait_committed(&cluster, "exactly-once", &at_kill, 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let deliveries = sending.await.unwrap();
    producer.flush().await.unwrap();

    let mut acked: HashMap<u64, (i32, i64)> = HashMap::new();
    for (i, d) in deliveries {
        let m = d.await.unwrap_or_else(|e| panic!("record {i} failed: {e}"));
        acked.insert(i, (m.partition, m.offset));
    }
    let sent = acked.len();
    assert!(sent > 1000, "only {sent} records sent");

    let mut consumer = cluster.earliest_consumer();
    consumer
        .assign(consumer.partitions_of("exactly-once").await.unwrap())
        .await
        .unwrap();
    let mut stored: BTreeMap<i32, Vec<(i64, u64)>> = BTreeMap::new();
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while total < sent && tokio::time::Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let value: u64 = std::str::from_utf8(&r.value.unwrap())
                .unwrap()
                .parse()
                .unwrap();
            stored
                .entry(r.partition)
                .or_default()
                .push((r.offset, value));
            total += 1;
        }
    }
    // Nothing more arrives: the logs hold exactly what was sent.
    let late = consumer.poll(Duration::from_millis(1000)).await.unwrap();
    total += late.len();
    assert_eq!(total, sent, "stored {total} records for {sent} sent");
    let mut seen = HashMap::new();
    for (partition, records) in &stored {
        for pair in records.windows(2) {
            assert!(
                pair[0].1 < pair[1].1,
                "partition {partition} out of order: {pair:?}"
            );
        }
        for &(offset, value) in records {
            assert!(
                seen.insert(value, (*partition, offset)).is_none(),
                "{value} stored twice"
            );
        }
    }
    for (i, at) in &acked {
        assert_eq!(
            seen.get(i),
            Some(at),
            "record {i} not where it was acknowledged"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_expires_does_not_block_the_records_after_it() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(
            NewTopic::new("expiry")
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "3"),
        )
        .await;
    let producer = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            delivery_timeout: Duration::from_secs(2),
            ..ProducerConfig::default()
        },
    );
    let send =
        |value: &'static str| producer.send(ProducerRecord::new("expiry", value).partition(0));
    // The partition knows the producer: its next batch must follow on.
    assert_eq!(send("before").await.unwrap().await.unwrap().offset, 0);

    let leader_id = cluster.controller_leader("expiry", 0).await;
    let follower = (1..=3).find(|&b| b != leader_id).unwrap();
    cluster.kill_broker((follower - 1) as usize).await;
    let admin = cluster.admin();
    let isr_is = |n: usize| {
        let admin = admin.clone();
        move || {
            let admin = admin.clone();
            async move {
                admin
                    .describe_topic("expiry")
                    .await
                    .is_ok_and(|t| t.partitions[0].isr.len() == n)
            }
        }
    };
    wait_for("the ISR to shrink", Duration::from_secs(30), isr_is(2)).await;
    let logs = cluster.broker_logs((leader_id - 1) as usize);
    wait_for("the leader to see it", Duration::from_secs(30), || {
        let logs = Arc::clone(&logs);
        async move {
            logs.get("expiry", 0)
                .is_some_and(|p| p.state().isr.len() == 2)
        }
    })
    .await;
    // Refused before it is appended, until its delivery timeout: it fails for good.
    assert!(send("lost").await.unwrap().await.is_err());
    assert_eq!(producer.failed_records(), 1);

    cluster.start_broker_again((follower - 1) as usize).await;
    wait_for("the ISR to grow back", Duration::from_secs(30), isr_is(3)).await;
    // The producer moved to a new epoch: the next record is not a gap.
    let after = send("after").await.unwrap().await.unwrap();
    producer.close().await.unwrap();
    let mut consumer = cluster.earliest_consumer();
    consumer
        .assign(consumer.partitions_of("expiry").await.unwrap())
        .await
        .unwrap();
    let mut values = Vec::new();
    while values.len() <= after.offset as usize {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    values.retain(|v| v != "lost");
    assert_eq!(values, ["before", "after"]);
    cluster.shutdown().await;
}
