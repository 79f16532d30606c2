//! Exactly once under faults: a consume-transform-produce application
//! (confluent-kafka, `kafka/eos_app.py`) runs on three brokers and two
//! coordinators while a seeded random schedule kills partition leaders, a
//! coordinator (the transaction coordinator of its id or not) or the
//! application itself; at the end the output, read read_committed, holds
//! every input record exactly once.
//!
//! `RUNNEL_EOS_ROUNDS` (default 4) sets the number of faults and
//! `RUNNEL_EOS_SEED` (default: a fresh one, printed) the schedule; a failure
//! prints the seed to repeat it. `scripts/test` provides the Python client.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use runnel_client::{
    ConsumerConfig, IsolationLevel, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use runnel_testkit::TestCluster;

/// Input records per fault, so that more faults still land mid-stream.
const RECORDS_PER_ROUND: usize = 150;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn app_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/eos_app.py")
}

/// How long the application runs at most (`eos_app.py` computes the same).
fn app_deadline(records: usize) -> Duration {
    Duration::from_secs(180 + records as u64 / 10)
}

/// Starts the application on `records` input records (its stdout is read at the end).
fn start_app(bootstrap: &str, records: usize) -> Child {
    let python = std::env::var("RUNNEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(python)
        .arg(app_script())
        .arg(bootstrap)
        .arg(records.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the Python client runs (scripts/test sets up .venv)")
}

/// Every value of `eos-out` a read_committed consumer reads, until nothing
/// new comes for two seconds.
async fn read_output(cluster: &TestCluster) -> Vec<String> {
    let mut consumer = runnel_client::Consumer::with_cluster(
        cluster.client(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation_level: IsolationLevel::ReadCommitted,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign((0..3).map(|p| TopicPartition::new("eos-out", p)).collect())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 8 {
        let records = consumer.poll(Duration::from_millis(250)).await.unwrap();
        idle = if records.is_empty() { idle + 1 } else { 0 };
        out.extend(
            records
                .into_iter()
                .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_is_exactly_once_through_kills() {
    // The cluster's warnings (or RUST_LOG's choice) are shown with a failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,runnel_coordinator=info".into()),
        )
        .with_test_writer()
        .try_init();
    let rounds = env_u64("RUNNEL_EOS_ROUNDS").unwrap_or(4);
    let seed = env_u64("RUNNEL_EOS_SEED").unwrap_or_else(|| rand::rng().random());
    println!("exactly once: seed {seed}, {rounds} rounds (RUNNEL_EOS_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let records = (rounds as usize * RECORDS_PER_ROUND).max(600);
    let mut cluster = TestCluster::builder()
        .brokers(3)
        .coordinators(2)
        .auto_create_topics(false)
        .start()
        .await;
    for topic in ["eos-in", "eos-out"] {
        cluster
            .create_topic(
                NewTopic::new(topic)
                    .partitions(3)
                    .replication_factor(3)
                    .config("min.insync.replicas", "2"),
            )
            .await;
    }
    let producer = Producer::with_cluster(cluster.client(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in 0..records {
        let record = ProducerRecord::new("eos-in", i.to_string()).key(i.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();

    let bootstrap = cluster.kafka_bootstrap();
    let mut app = start_app(&bootstrap, records);
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
        match rng.random_range(0..3) {
            0 => {
                let b = rng.random_range(0..3);
                println!("round {round}: kill broker {}", b + 1);
                cluster.kill_broker(b).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
                cluster.start_broker_again(b).await;
            }
            1 => {
                let c = rng.random_range(0..2);
                println!("round {round}: kill coordinator {}", c + 1);
                cluster.kill_coordinator(c).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
                cluster.start_coordinator_again(c).await;
            }
            _ => {
                println!("round {round}: kill the application");
                let _ = app.kill();
                let _ = app.wait();
                app = start_app(&bootstrap, records);
            }
        }
    }
    // The application gives up on its own after its deadline; this one is
    // the backstop so that a client stuck in a call fails the test instead
    // of hanging it.
    let deadline = tokio::time::Instant::now() + app_deadline(records) + Duration::from_secs(60);
    while app.try_wait().unwrap().is_none() {
        if tokio::time::Instant::now() > deadline {
            let _ = app.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let output = app.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("done"),
        "seed {seed}: the application did not finish ({}): {stdout}",
        output.status
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for v in read_output(&cluster).await {
        *seen.entry(v).or_default() += 1;
    }
    let missing: Vec<usize> = (0..records)
        .filter(|i| !seen.contains_key(&format!("out-{i}")))
        .collect();
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && seen.len() == records,
        "seed {seed}: {} missing (first {:?}), {} more than once (first {:?}), {} distinct",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        seen.len()
    );
    cluster.shutdown().await;
}
