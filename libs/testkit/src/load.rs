//! A producer running under a test's faults: acks=all and idempotent,
//! spread over a topic's partitions, recording what was acknowledged where,
//! and the check that every acknowledged record is stored at its offset
//! exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use runnel_client::{Acks, ClientConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition};

use crate::TestCluster;

/// What a load acknowledged: (partition, offset) → value.
type Acked = BTreeMap<(i32, i64), String>;

/// A producer writing `v-N` values round-robin over partitions `0..partitions`
/// of a topic until [`Load::finish_and_check`].
#[derive(Debug)]
pub struct Load {
    topic: String,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Acked, u64)>,
}

impl Load {
    /// Starts producing to `topic` through `cluster`'s bootstrap.
    pub fn start(cluster: &TestCluster, topic: &str, partitions: i32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(produce_until(
            cluster.client_config(),
            topic.to_owned(),
            partitions,
            Arc::clone(&stop),
        ));
        Load {
            topic: topic.to_owned(),
            stop,
            task,
        }
    }

    /// Stops producing; asserts that nothing failed for good, that every
    /// acknowledged record is at its offset, and that no record is stored
    /// twice. Returns how many records were acknowledged.
    pub async fn finish_and_check(self, cluster: &TestCluster) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (acked, failed) = self.task.await.expect("the load task");
        assert_eq!(failed, 0, "no record may fail for good");
        assert!(acked.len() > 100, "the load ran: {} records", acked.len());
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        for &(p, o) in acked.keys() {
            let end = ends.entry(p).or_default();
            *end = (*end).max(o + 1);
        }
        let mut stored: Acked = BTreeMap::new();
        for (&partition, &end) in &ends {
            let mut consumer = cluster.earliest_consumer();
            let tp = TopicPartition::new(self.topic.clone(), partition);
            consumer.assign(vec![tp.clone()]).await.expect("assign");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while consumer.position(&tp).unwrap_or(0) < end
                && tokio::time::Instant::now() < deadline
            {
                for r in consumer
                    .poll(Duration::from_millis(500))
                    .await
                    .expect("poll")
                {
                    let value = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
                    stored.insert((partition, r.offset), value.unwrap_or_default());
                }
            }
        }
        for (key, value) in &acked {
            assert_eq!(
                stored.get(key),
                Some(value),
                "acknowledged record at {key:?} lost or changed"
            );
        }
        let distinct: BTreeSet<&String> = stored.values().collect();
        assert_eq!(distinct.len(), stored.len(), "a record is stored twice");
        acked.len()
    }
}

async fn produce_until(
    config: ClientConfig,
    topic: String,
    partitions: i32,
    stop: Arc<AtomicBool>,
) -> (Acked, u64) {
    let producer = Producer::new(
        config,
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(2),
            delivery_timeout: Duration::from_secs(60),
            ..ProducerConfig::default()
        },
    );
    let mut pending = Vec::new();
    let mut acked = Acked::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let value = format!("v-{n}");
        let partition = (n % partitions.max(1) as u64) as i32;
        match producer
            .send(ProducerRecord::new(topic.clone(), value.clone()).partition(partition))
            .await
        {
            Ok(d) => pending.push((value, d)),
            // Refused outright (buffer full, no leader known): back off.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        n += 1;
        if pending.len() >= 100 {
            for (value, d) in pending.drain(..) {
                if let Ok(m) = d.await {
                    acked.insert((m.partition, m.offset), value);
                }
            }
        }
        // Paces the producer so the faults land amid a steady stream.
        if n.is_multiple_of(20) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for (value, d) in pending {
        if let Ok(m) = d.await {
            acked.insert((m.partition, m.offset), value);
        }
    }
    let failed = producer.failed_records();
    let _ = producer.close().await;
    (acked, failed)
}
