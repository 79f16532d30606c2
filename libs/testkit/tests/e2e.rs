//! End to end through the client: produce, consume, restart, crash.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use runnel_client::partitioner::partition_for_key;
use runnel_client::{
    Compression, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use runnel_testkit::TestCluster;

const T0: i64 = 1_700_000_000_000;

async fn produce(
    cluster: &TestCluster,
    topic: &str,
    range: std::ops::Range<u64>,
    compression: Compression,
) -> Vec<(i32, i64)> {
    let producer = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            compression,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in range {
        let record = ProducerRecord::new(topic, format!("value-{i}"))
            .key(format!("key-{i}"))
            .header("seq", Some(i.to_string()))
            .header("null", None::<Bytes>)
            .timestamp(T0 + i as i64);
        deliveries.push(producer.send(record).await.unwrap());
    }
    let mut out = Vec::new();
    for d in deliveries {
        let m = d.await.unwrap();
        out.push((m.partition, m.offset));
    }
    producer.close().await.unwrap();
    out
}

async fn consume_all(cluster: &TestCluster, topic: &str, expected: usize) -> Vec<ConsumerRecord> {
    let mut consumer = cluster.earliest_consumer();
    let partitions = consumer.partitions_of(topic).await.unwrap();
    consumer.assign(partitions).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumed only {} of {expected}",
            out.len()
        );
        out.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    // Nothing beyond what was produced.
    assert!(
        consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
    out
}

/// Every record is intact, on the partition its key hashes to, in offset order per partition.
fn check(records: &[ConsumerRecord], n: u64, partitions: i32) {
    assert_eq!(records.len() as u64, n);
    let mut by_partition: HashMap<i32, Vec<&ConsumerRecord>> = HashMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut seen = vec![false; n as usize];
    for (p, rs) in &by_partition {
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(
                r.offset, i as i64,
                "partition {p} offsets are dense and ordered"
            );
            let key = std::str::from_utf8(r.key.as_ref().unwrap()).unwrap();
            let seq: u64 = key.strip_prefix("key-").unwrap().parse().unwrap();
            assert_eq!(partition_for_key(key.as_bytes(), partitions), *p, "{key}");
            assert_eq!(r.value.as_deref(), Some(format!("value-{seq}").as_bytes()));
            assert_eq!(r.timestamp, T0 + seq as i64);
            assert_eq!(r.headers.len(), 2);
            assert_eq!(
                r.headers[0].value.as_deref(),
                Some(seq.to_string().as_bytes())
            );
            assert_eq!(r.headers[1].value, None);
            assert!(!seen[seq as usize], "duplicate {seq}");
            seen[seq as usize] = true;
        }
        // Keys of one partition come back in the order they were sent.
        let seqs: Vec<u64> = rs
            .iter()
            .map(|r| {
                std::str::from_utf8(r.key.as_ref().unwrap()).unwrap()[4..]
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "partition {p} keeps send order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_survive_restarts_and_a_crash() {
    let mut cluster = TestCluster::builder().start().await;
    cluster
        .admin()
        .create_topic(NewTopic::new("orders").partitions(3))
        .await
        .unwrap();

    const N: u64 = 100_000;
    let acks = produce(&cluster, "orders", 0..N, Compression::Lz4).await;
    assert_eq!(acks.len() as u64, N);
    let records = consume_all(&cluster, "orders", N as usize).await;
    check(&records, N, 3);
    let by_key: HashMap<(i32, i64), &ConsumerRecord> = records
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    for (i, (p, o)) in acks.iter().enumerate() {
        let r = by_key[&(*p, *o)];
        assert_eq!(
            r.key.as_deref(),
            Some(format!("key-{i}").as_bytes()),
            "ack of record {i} names where it is"
        );
    }

    // A clean restart of everything keeps every record.
    cluster.restart_controller().await;
    cluster.restart_broker(0).await;
    check(&consume_all(&cluster, "orders", N as usize).await, N, 3);

    // A crash: acknowledged records are in the page cache and recovery keeps them.
    let more = produce(&cluster, "orders", N..N + 1000, Compression::None).await;
    cluster.kill_broker(0).await;
    cluster.start_broker_again(0).await;
    let records = consume_all(&cluster, "orders", (N + 1000) as usize).await;
    check(&records, N + 1000, 3);
    // Producing continues right after the last acknowledged offset.
    let ends: HashMap<i32, i64> = more.iter().fold(HashMap::new(), |mut m, (p, o)| {
        let e = m.entry(*p).or_insert(0);
        *e = (*e).max(*o + 1);
        m
    });
    let next = produce(&cluster, "orders", N + 1000..N + 1003, Compression::Zstd).await;
    for (p, o) in next {
        assert!(
            o >= ends[&p],
            "partition {p}: new offset {o} continues after {}",
            ends[&p]
        );
    }
    let admin = cluster.admin();
    let described = admin.describe_topic("orders").await.unwrap();
    let total: i64 = described.partitions.iter().map(|p| p.log_end_offset).sum();
    assert_eq!(total as u64, N + 1003);
    assert!(
        described
            .partitions
            .iter()
            .all(|p| p.leader == 1 && p.isr == vec![1] && p.log_start_offset == 0)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeks_and_offset_resets() {
    let cluster = TestCluster::builder().start().await;
    cluster
        .admin()
        .create_topic(NewTopic::new("events").partitions(1))
        .await
        .unwrap();
    produce(&cluster, "events", 0..100, Compression::Snappy).await;
    let tp = TopicPartition::new("events", 0);
    let mut consumer = Consumer::with_cluster(cluster.client(), ConsumerConfig::default());
    consumer.assign(vec![tp.clone()]).await.unwrap();
    // Latest (the default reset): nothing old.
    assert!(
        consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(consumer.position(&tp), Some(100));
    consumer.seek(&tp, 42);
    assert_eq!(
        consumer.poll(Duration::from_secs(2)).await.unwrap()[0].offset,
        42
    );
    consumer.seek_to_timestamp(&tp, T0 + 57);
    assert_eq!(
        consumer.poll(Duration::from_secs(2)).await.unwrap()[0].offset,
        57
    );
    consumer.seek_to_beginning(&tp);
    assert_eq!(
        consumer.poll(Duration::from_secs(2)).await.unwrap()[0].offset,
        0
    );
    consumer.seek_to_timestamp(&tp, T0 + 1_000_000);
    assert!(
        consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        consumer.position(&tp),
        Some(100),
        "a timestamp past every record goes to the end"
    );
    // Out of range with reset none: a clear error.
    let mut strict = Consumer::with_cluster(
        cluster.client(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::None,
            ..ConsumerConfig::default()
        },
    );
    strict.assign(vec![tp.clone()]).await.unwrap();
    strict.seek(&tp, 500);
    let err = strict.poll(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(runnel_client::ErrorCode::OffsetOutOfRange),
        "{err}"
    );
    assert!(
        err.to_string().contains("log start 0, log end 100"),
        "{err}"
    );
    // With earliest, an out-of-range position resets.
    let mut lenient = cluster.earliest_consumer();
    lenient.assign(vec![tp.clone()]).await.unwrap();
    lenient.seek(&tp, 500);
    assert_eq!(
        lenient.poll(Duration::from_secs(2)).await.unwrap()[0].offset,
        0
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_buffer_memory_makes_send_wait_and_still_delivers_everything() {
    let cluster = TestCluster::builder().start().await;
    cluster
        .admin()
        .create_topic(NewTopic::new("small-buffer").partitions(2))
        .await
        .unwrap();
    // Far more records than fit in the buffer: `send` waits for acknowledgements
    // to free space, and the space freed must be the space taken.
    let producer = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            buffer_memory: 64 * 1024,
            batch_size: 4096,
            acks: runnel_client::Acks::Leader,
            ..ProducerConfig::default()
        },
    );
    let sending = async {
        let mut deliveries = Vec::new();
        for i in 0..20_000u32 {
            let record = ProducerRecord::new("small-buffer", vec![b'x'; 100]).key(i.to_string());
            deliveries.push(producer.send(record).await.unwrap());
        }
        for d in deliveries {
            d.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), sending)
        .await
        .expect("send stalled: buffer.memory space was not given back");
    producer.close().await.unwrap();
    assert_eq!(
        consume_all(&cluster, "small-buffer", 20_000).await.len(),
        20_000
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_key_records_stick_to_a_partition_until_its_batch_is_done() {
    let cluster = TestCluster::builder().start().await;
    cluster
        .admin()
        .create_topic(NewTopic::new("sticky").partitions(3))
        .await
        .unwrap();
    // ~9 records of 100 bytes fill a 1 KiB batch.
    let producer = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            batch_size: 1024,
            linger: Duration::from_secs(1),
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for _ in 0..600 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("sticky", vec![b'v'; 100]))
                .await
                .unwrap(),
        );
    }
    let mut partitions = Vec::new();
    for d in deliveries {
        partitions.push(d.await.unwrap().partition);
    }
    producer.close().await.unwrap();
    let switches = partitions.windows(2).filter(|w| w[0] != w[1]).count();
    let used: std::collections::HashSet<_> = partitions.iter().collect();
    assert_eq!(
        used.len(),
        3,
        "every partition gets batches: {partitions:?}"
    );
    // One switch per full batch: roughly 600 / 9, never one per record.
    assert!(
        (40..=100).contains(&switches),
        "{switches} partition switches for 600 records"
    );
    cluster.shutdown().await;
}
