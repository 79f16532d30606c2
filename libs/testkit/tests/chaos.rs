//! A seeded random schedule of broker kills, restarts and isolations under
//! continuous acks=all idempotent production, with a checker: every
//! acknowledged record is at its acknowledged offset afterwards, and no
//! record is stored twice unless a batch failed for good (its delivery
//! timed out: then, as with Kafka, the producer renumbers what follows it).
//!
//! `RUNNEL_CHAOS_ROUNDS` (default 4) and `RUNNEL_CHAOS_SEED` (default: a
//! fresh one, printed) set the run; a failure prints the seed to repeat it.
//! A long run: `RUNNEL_CHAOS_ROUNDS=200 cargo test --release -p runnel-testkit --test chaos -- --nocapture`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use runnel_client::{
    Acks, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use runnel_testkit::{TestCluster, wait_for};

const PARTITIONS: i32 = 2;
const BROKERS: usize = 3;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Produces until `stop`, recording (partition, offset) → value for every
/// acknowledged record; also returns how many records failed for good.
async fn produce_until(
    bootstrap: String,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<(i32, i64), String>, u64) {
    let producer = Producer::new(
        ClientConfig::new(bootstrap),
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(2),
            delivery_timeout: Duration::from_secs(15),
            ..ProducerConfig::default()
        },
    );
    let mut pending = Vec::new();
    let mut acked = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let partition = (n % PARTITIONS as u64) as i32;
        let value = format!("v-{n}");
        match producer
            .send(ProducerRecord::new("chaos", value.clone()).partition(partition))
            .await
        {
            Ok(d) => pending.push((value, d)),
            // Refused outright (buffer full, no leader known): back off
            // rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        n += 1;
        if pending.len() >= 200 {
            for (value, d) in pending.drain(..) {
                if let Ok(m) = d.await {
                    acked.insert((m.partition, m.offset), value);
                }
            }
        }
        // Paces the producer so faults land amid a steady stream.
        if n.is_multiple_of(50) {
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

/// Every record of `partition` from offset 0 up to `end`.
async fn read_partition(cluster: &TestCluster, partition: i32, end: i64) -> BTreeMap<i64, String> {
    let mut consumer = cluster.earliest_consumer();
    consumer
        .assign(vec![TopicPartition::new("chaos", partition)])
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consumer
        .position(&TopicPartition::new("chaos", partition))
        .unwrap_or(0)
        < end
        && tokio::time::Instant::now() < deadline
    {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            out.insert(
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_random_schedule_of_failures() {
    let rounds = env_u64("RUNNEL_CHAOS_ROUNDS").unwrap_or(4);
    if std::env::var_os("RUNNEL_CHAOS_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,runnel_broker::metadata=warn")
            .try_init();
    }
    let seed = env_u64("RUNNEL_CHAOS_SEED").unwrap_or_else(|| rand::rng().random());
    println!("chaos: seed {seed}, {rounds} rounds (RUNNEL_CHAOS_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut cluster = TestCluster::builder().brokers(BROKERS).start().await;
    cluster
        .create_topic(
            NewTopic::new("chaos")
                .partitions(PARTITIONS)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(produce_until(cluster.bootstrap(), Arc::clone(&stop)));

    // The sleeps below are the schedule under test: when each fault comes
    // and how long it lasts are what the seed draws.
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
        let victim = rng.random_range(0..BROKERS);
        match rng.random_range(0..3) {
            0 => {
                println!(
                    "round {round}: kill -9 broker {} and restart it",
                    victim + 1
                );
                cluster.kill_broker(victim).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..2500))).await;
                cluster.start_broker_again(victim).await;
            }
            1 => {
                println!("round {round}: isolate broker {} and heal", victim + 1);
                cluster.isolate(victim);
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..3500))).await;
                cluster.heal();
            }
            _ => {
                println!("round {round}: clean restart of broker {}", victim + 1);
                cluster.restart_broker(victim).await;
            }
        }
    }
    // Production goes on a while after the last fault, so the checker also
    // covers writes made once the cluster recovered.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, failed) = producing.await.unwrap();

    // Let every replica catch up, then read each partition to its end.
    let admin = cluster.admin();
    wait_for(
        "every partition fully in sync",
        Duration::from_secs(60),
        || {
            let admin = admin.clone();
            async move {
                admin.describe_topic("chaos").await.is_ok_and(|t| {
                    t.partitions
                        .iter()
                        .all(|p| p.leader >= 0 && p.isr.len() == BROKERS)
                })
            }
        },
    )
    .await;
    let described = admin.describe_topic("chaos").await.unwrap();
    let mut checked = 0;
    let mut stored = std::collections::HashMap::new();
    let mut duplicates = 0;
    for p in &described.partitions {
        let log = read_partition(&cluster, p.partition, p.log_end_offset).await;
        for value in log.values() {
            if stored.insert(value.clone(), ()).is_some() {
                duplicates += 1;
            }
        }
        for ((partition, offset), value) in acked.range((p.partition, 0)..(p.partition + 1, 0)) {
            assert_eq!(
                log.get(offset),
                Some(value),
                "seed {seed}: acknowledged {value} at {partition}/{offset} is not there"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "seed {seed}: nothing was acknowledged");
    assert!(
        duplicates == 0 || failed > 0,
        "seed {seed}: {duplicates} records stored twice though no batch failed"
    );
    println!(
        "chaos: seed {seed}: {rounds} rounds ran clean, {checked} acknowledged records checked, \
         {failed} failed for good, {duplicates} stored twice"
    );
    cluster.shutdown().await;
}
