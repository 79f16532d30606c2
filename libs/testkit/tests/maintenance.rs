//! Retention and compaction observed end to end.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use runnel_client::{NewTopic, Producer, ProducerConfig, ProducerRecord};
use runnel_testkit::{TestCluster, wait_for};

async fn read_all(cluster: &TestCluster, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let mut consumer = cluster.earliest_consumer();
    consumer
        .assign(consumer.partitions_of(topic).await.unwrap())
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let batch = consumer.poll(Duration::from_millis(300)).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        for r in batch {
            let s = |b: Option<bytes::Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
            out.push((r.offset, s(r.key).unwrap_or_default(), s(r.value)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_segments() {
    let cluster = TestCluster::builder()
        .retention_check_interval_ms(100)
        .start()
        .await;
    let admin = cluster.admin();
    admin
        .create_topic(
            NewTopic::new("short")
                .config("segment.bytes", "2000")
                .config("retention.ms", "1000"),
        )
        .await
        .unwrap();
    let producer = Producer::with_cluster(cluster.client(), ProducerConfig::default());
    let old = chrono_now() - 60_000;
    for i in 0..200 {
        let record =
            ProducerRecord::new("short", format!("old-{i:04}-{}", "x".repeat(50))).timestamp(old);
        producer.send(record).await.unwrap().await.unwrap();
    }
    // A fresh record in a new segment keeps the log non-empty.
    producer
        .send(ProducerRecord::new("short", "fresh"))
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await.unwrap();
    wait_for(
        "retention to delete the old segments",
        Duration::from_secs(20),
        || {
            let admin = admin.clone();
            async move {
                admin.describe_topic("short").await.unwrap().partitions[0].log_start_offset > 150
            }
        },
    )
    .await;
    let left = read_all(&cluster, "short").await;
    assert!(left.len() < 50, "{} records left", left.len());
    assert_eq!(
        left.last().unwrap().2.as_deref(),
        Some("fresh"),
        "the newest record stays"
    );
    assert_eq!(left.last().unwrap().0, 200, "offsets are not reused");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_latest_value_per_key() {
    let cluster = TestCluster::builder()
        .retention_check_interval_ms(100)
        .start()
        .await;
    let admin = cluster.admin();
    admin
        .create_topic(
            NewTopic::new("profiles")
                .config("cleanup.policy", "compact")
                .config("segment.bytes", "4000")
                .config("min.cleanable.dirty.ratio", "0.01"),
        )
        .await
        .unwrap();
    let producer = Producer::with_cluster(cluster.client(), ProducerConfig::default());
    let mut latest: HashMap<String, String> = HashMap::new();
    for round in 0..40 {
        for k in 0..10 {
            let (key, value) = (format!("user-{k}"), format!("v{round}-{}", "y".repeat(40)));
            latest.insert(key.clone(), value.clone());
            producer
                .send(ProducerRecord::new("profiles", value).key(key))
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    producer.close().await.unwrap();
    wait_for(
        "the cleaner to compact the closed segments",
        Duration::from_secs(20),
        || {
            let cluster = &cluster;
            async move { read_all(cluster, "profiles").await.len() < 100 }
        },
    )
    .await;
    let records = read_all(&cluster, "profiles").await;
    // Every key's latest value survives (it may sit in the active segment too).
    let mut last_seen: HashMap<String, String> = HashMap::new();
    for (_, k, v) in &records {
        last_seen.insert(k.clone(), v.clone().unwrap());
    }
    assert_eq!(last_seen, latest);
    assert!(
        records.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets increase, with gaps"
    );
    cluster.shutdown().await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
