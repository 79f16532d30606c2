//! Many partitions on one broker: every partition opens and is served
//! within a budget of open files far below the files on disk, through a
//! clean restart and a crash; a partition that cannot open is offline and
//! retried, and never stops the others.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use runnel_client::{NewTopic, Producer, ProducerConfig, ProducerRecord, TopicPartition};
use runnel_testkit::{TestCluster, wait_for};

/// Partitions of the big test, unless `RUNNEL_TEST_MANY_PARTITIONS` says
/// otherwise: 100,000 in an optimized build
/// (`cargo test --release -p runnel-testkit --test many_partitions`); in the
/// debug build `scripts/test` runs, 20,000, whose 60,000 files are still
/// three times this machine's open-file limit (a debug broker spends
/// minutes of CPU on 100,000).
fn partitions() -> i32 {
    let default = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    std::env::var("RUNNEL_TEST_MANY_PARTITIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Descriptors this process holds now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The process's soft limit on open files.
fn fd_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Waits until broker 1 hosts and leads `want` partitions.
async fn wait_led(cluster: &TestCluster, want: usize) {
    let logs = cluster.broker_logs(0);
    wait_for(
        "every partition open and led",
        // Generous: this asserts that all open, not how fast (see docs/benchmarks.md).
        Duration::from_secs(1800),
        || {
            let logs = std::sync::Arc::clone(&logs);
            async move { logs.count() >= want && logs.leader_count() >= want }
        },
    )
    .await;
    assert!(!logs.has_offline(), "offline: {:?}", logs.offline());
}

/// Checks the open-file budget: the cache within it, the process far below its limit.
fn assert_within_budget(cluster: &TestCluster, files_on_disk: usize) {
    let stats = cluster.broker_logs(0).file_stats();
    let limit = fd_limit();
    assert!(
        stats.open <= stats.budget && stats.budget <= limit / 2,
        "{stats:?}, limit {limit}"
    );
    let fds = open_fds();
    assert!(
        fds < limit && fds < files_on_disk,
        "{fds} descriptors open, limit {limit}, {files_on_disk} files"
    );
}

async fn produce_and_check(cluster: &TestCluster, topic: &str, sample: &[i32], round: &str) {
    let producer = Producer::with_cluster(cluster.client(), ProducerConfig::default());
    for &p in sample {
        producer
            .send(ProducerRecord::new(topic, format!("{round}-{p}")).partition(p))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
}

async fn read_partition(cluster: &TestCluster, topic: &str, p: i32) -> Vec<String> {
    let mut consumer = cluster.earliest_consumer();
    consumer
        .assign(vec![TopicPartition::new(topic, p)])
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let batch = consumer.poll(Duration::from_millis(300)).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        for r in batch {
            out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_partitions_open_and_serve_within_the_file_budget() {
    let n = partitions();
    let started = std::time::Instant::now();
    // Shown with a failure: which step it was, and when.
    let step = |what: &str| eprintln!("{:>7.1}s {what}", started.elapsed().as_secs_f64());
    let mut cluster = TestCluster::builder().start().await;
    cluster
        .admin()
        .create_topic(NewTopic::new("wide").partitions(n))
        .await
        .unwrap();
    wait_led(&cluster, n as usize).await;
    step("created and open");
    // Three files per partition on disk (log, offset index, time index).
    let files = 3 * n as usize;
    assert_within_budget(&cluster, files);

    let sample: Vec<i32> = (0..200).map(|i| (i * 7919) % n).collect();
    produce_and_check(&cluster, "wide", &sample, "first").await;
    step("produced");
    assert_eq!(
        read_partition(&cluster, "wide", sample[7]).await,
        [format!("first-{}", sample[7])]
    );

    // A clean restart opens every log without recovery.
    cluster.stop_broker(0).await;
    cluster.start_broker_only(0).await;
    wait_led(&cluster, n as usize).await;
    step("restarted cleanly");
    assert_eq!(
        cluster.broker_logs(0).recovered_logs(),
        0,
        "clean restart recovers nothing"
    );
    assert_within_budget(&cluster, files);
    produce_and_check(&cluster, "wide", &sample, "second").await;
    step("produced again");

    // After a crash every log recovers, and nothing acknowledged is lost.
    cluster.kill_broker(0).await;
    cluster.start_broker_only(0).await;
    wait_led(&cluster, n as usize).await;
    step("recovered after a crash");
    assert!(cluster.broker_logs(0).recovered_logs() >= sample.len());
    assert_within_budget(&cluster, files);
    for &p in sample.iter().step_by(40) {
        assert_eq!(
            read_partition(&cluster, "wide", p).await,
            [format!("first-{p}"), format!("second-{p}")]
        );
    }
    cluster.stop_broker(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_cannot_open_is_offline_retried_and_stops_nothing() {
    let cluster = TestCluster::builder().start().await;
    // A file where partition 1's directory must go: its log cannot open.
    let blocker = cluster.data_dir().join("broker-1").join("mixed-1");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a directory").unwrap();
    cluster
        .admin()
        .create_topic(NewTopic::new("mixed").partitions(4))
        .await
        .unwrap();
    let logs = cluster.broker_logs(0);
    wait_for(
        "the other partitions open, one offline",
        Duration::from_secs(20),
        || {
            let logs = std::sync::Arc::clone(&logs);
            async move { logs.count() >= 3 && logs.has_offline() }
        },
    )
    .await;
    let offline = logs.offline();
    let entry = &offline[&("mixed".to_owned(), 1)];
    assert!(entry.error.contains("mixed-1"), "{entry:?}");
    // The broker reports it; describing the topic shows it with the error.
    let admin = cluster.admin();
    let offline_in_describe = |admin: runnel_client::Admin| async move {
        let t = admin.describe_topic("mixed").await.unwrap();
        t.partitions
            .iter()
            .map(|p| (p.partition, p.offline_replicas.clone()))
            .filter(|(_, o)| !o.is_empty())
            .collect::<Vec<_>>()
    };
    wait_for(
        "the offline replica in describe",
        Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move {
                let shown = offline_in_describe(admin).await;
                shown.len() == 1
                    && shown[0].0 == 1
                    && shown[0].1[0].0 == 1
                    && shown[0].1[0].1.contains("mixed-1")
            }
        },
    )
    .await;

    // The rest of the metadata still applies: a later topic opens and serves.
    cluster
        .create_topic(NewTopic::new("after").partitions(2))
        .await;
    produce_and_check(&cluster, "after", &[0, 1], "ok").await;
    produce_and_check(&cluster, "mixed", &[0, 2, 3], "ok").await;

    // Once the cause is gone the retry brings it online.
    std::fs::remove_file(&blocker).unwrap();
    wait_for(
        "the offline partition back online",
        Duration::from_secs(30),
        || {
            let logs = std::sync::Arc::clone(&logs);
            async move { logs.count() == 6 && !logs.has_offline() }
        },
    )
    .await;
    produce_and_check(&cluster, "mixed", &[1], "back").await;
    wait_for(
        "no offline replica in describe",
        Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move { offline_in_describe(admin).await.is_empty() }
        },
    )
    .await;
    assert_eq!(read_partition(&cluster, "mixed", 1).await, ["back-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_open_its_replica_hands_the_partition_over() {
    let cluster = TestCluster::builder().brokers(3).start().await;
    // Broker 1 cannot open its replica of led-0, which it would lead.
    let blocker = cluster.data_dir().join("broker-1").join("led-0");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a directory").unwrap();
    cluster
        .create_topic(
            NewTopic::new("led")
                .assignments(vec![vec![1, 2, 3]])
                .config("min.insync.replicas", "2"),
        )
        .await;
    let admin = cluster.admin();
    let state = |admin: runnel_client::Admin| async move {
        let p = admin.describe_topic("led").await.unwrap().partitions[0].clone();
        let mut isr = p.isr.clone();
        isr.sort_unstable();
        (p.leader, isr)
    };
    wait_for(
        "leadership and the ISR place moved off the offline replica",
        Duration::from_secs(20),
        || {
            let admin = admin.clone();
            async move {
                let (leader, isr) = state(admin).await;
                leader > 1 && isr == [2, 3]
            }
        },
    )
    .await;
    produce_and_check(&cluster, "led", &[0], "moved").await;
    // Its replica opens once the cause is gone, catches up and rejoins;
    // a preferred election gives it its leadership back.
    std::fs::remove_file(&blocker).unwrap();
    wait_for(
        "the replica back in the ISR",
        Duration::from_secs(40),
        || {
            let admin = admin.clone();
            async move { state(admin).await.1 == [1, 2, 3] }
        },
    )
    .await;
    admin.elect_leaders(false, None).await.unwrap();
    assert_eq!(state(admin.clone()).await.0, 1);
    assert_eq!(read_partition(&cluster, "led", 0).await, ["moved-0"]);
}
