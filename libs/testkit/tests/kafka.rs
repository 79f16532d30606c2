//! Real Kafka clients against the brokers' Kafka listener: confluent-kafka
//! (librdkafka), kafka-python and kcat, each run on a fresh cluster with a
//! group coordinator and no topic auto-creation. The scenarios themselves
//! (admin, produce and consume, codecs, groups, offsets, errors) live in
//! the Python scripts next to this file; this side starts the cluster,
//! runs them, and checks what needs Runnel's own view (the partitioner,
//! records read back with Runnel's client, a leader killed mid-produce).
//!
//! `scripts/test` sets up `.venv` with the pinned clients and installs kcat.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use runnel_client::NewTopic;
use runnel_testkit::clients::{python, run, script};
use runnel_testkit::{TestCluster, wait_for};

/// A cluster for one scenario: one broker, one coordinator, topics only
/// by request (so an unknown topic stays unknown).
async fn cluster(brokers: usize) -> TestCluster {
    TestCluster::builder()
        .brokers(brokers)
        .coordinators(1)
        .auto_create_topics(false)
        .start()
        .await
}

async fn confluent(scenario: &str) -> (TestCluster, String) {
    let cluster = cluster(1).await;
    let out = run(
        python(),
        vec![
            script("confluent_compat.py").display().to_string(),
            scenario.into(),
            cluster.kafka_bootstrap(),
        ],
    )
    .await;
    (cluster, String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn kafka_python(scenario: &str) {
    let cluster = cluster(1).await;
    run(
        python(),
        vec![
            script("kafka_python_compat.py").display().to_string(),
            scenario.into(),
            cluster.kafka_bootstrap(),
        ],
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_admin() {
    confluent("admin").await.0.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_produce_consume_keys_headers_timestamps() {
    confluent("produce_consume").await.0.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_every_compression_codec() {
    confluent("compression").await.0.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_idempotent_producer() {
    confluent("idempotent").await.0.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_consumer_group_two_members_rebalance_commit_resume() {
    confluent("groups").await.0.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_consumer_group_kip848_protocol() {
    confluent("groups_kip848").await.0.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_kip848_consumer_commits_without_joining() {
    confluent("kip848_commit_without_joining")
        .await
        .0
        .shutdown()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_offsets_for_times_delete_records_and_offset_reset() {
    confluent("offsets").await.0.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_unknown_topic_too_large_and_900kb_records() {
    confluent("errors").await.0.shutdown().await;
}

/// librdkafka's murmur2 partitioner and Runnel's client put every key on
/// the same partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_commit_to_a_missing_topic_is_refused_per_partition() {
    confluent("commit_unknown_topic").await.0.shutdown().await;
}

/// confluent-kafka's transactional producer: commit and abort across two
/// topics, what read_committed and read_uncommitted readers see, a reader
/// held at an open transaction, and fencing by a second producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_transactions_commit_abort_and_fencing() {
    confluent("transactions").await.0.shutdown().await;
}

/// confluent-kafka consume-transform-produce: a group's offsets committed
/// inside the producer's transaction count only when it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_send_offsets_to_transaction() {
    confluent("send_offsets").await.0.shutdown().await;
}

/// kafka-python's transactional producer: commit, abort and fencing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_transactions_commit_abort_and_fencing() {
    kafka_python("transactions").await;
}

/// Topic `txn` as transactional producers and their coordinator leave it
/// (written over gRPC): plain `p0`; `a0`, `a1` of an aborted transaction;
/// `b0` of a committed one; `c0` of one still open; plain `p1`; then the
/// abort and commit markers (offsets 6, 7). Returns a client of its leader.
async fn write_transactions(
    cluster: &TestCluster,
) -> runnel_proto::broker::v1::broker_client::BrokerClient<tonic::transport::Channel> {
    use runnel_testkit::txn::{batch, end, plain, produce};
    cluster
        .create_topic(NewTopic::new("txn").partitions(1).replication_factor(1))
        .await;
    let mut c = runnel_proto::broker::v1::broker_client::BrokerClient::connect(format!(
        "http://{}",
        cluster.broker_addr(0)
    ))
    .await
    .unwrap();
    for records in [
        plain(&["p0"]),
        batch(1001, 0, 0, true, &["a0", "a1"]),
        batch(1002, 0, 0, true, &["b0"]),
        batch(1003, 0, 0, true, &["c0"]),
        plain(&["p1"]),
    ] {
        let r = produce(&mut c, "txn", 0, records).await;
        assert_eq!(r.error_code, 0, "{}", r.error_message);
    }
    for (pid, commit) in [(1001, false), (1002, true)] {
        let r = end(&mut c, "txn", 0, pid, 0, commit, 0).await;
        assert_eq!(r.error_code, 0, "{}", r.error_message);
    }
    c
}

/// What a client's `read_committed` scenario printed: per isolation level,
/// the values read and the end offset reported.
async fn read_both_levels(cluster: &TestCluster, script_name: &str) -> serde_json::Value {
    let out = run(
        python(),
        vec![
            script(script_name).display().to_string(),
            "read_committed".into(),
            cluster.kafka_bootstrap(),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// confluent-kafka and kafka-python at read_committed stop at the open
/// transaction (the LSO is their end offset) and never see the aborted
/// one; at read_uncommitted they see everything; once the open one
/// commits, read_committed readers get it and what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_consumers_skip_aborted_and_stop_at_open_transactions() {
    let cluster = cluster(1).await;
    let mut leader = write_transactions(&cluster).await;
    for client in ["confluent_compat.py", "kafka_python_compat.py"] {
        let seen = read_both_levels(&cluster, client).await;
        assert_eq!(
            seen["read_committed"],
            serde_json::json!({"values": ["p0", "b0"], "end": 4}),
            "{client}"
        );
        assert_eq!(
            seen["read_uncommitted"],
            serde_json::json!({"values": ["p0", "a0", "a1", "b0", "c0", "p1"], "end": 8}),
            "{client}"
        );
    }
    let r = runnel_testkit::txn::end(&mut leader, "txn", 0, 1003, 0, true, 0).await;
    assert_eq!(r.error_code, 0, "{}", r.error_message);
    for client in ["confluent_compat.py", "kafka_python_compat.py"] {
        let seen = read_both_levels(&cluster, client).await;
        assert_eq!(
            seen["read_committed"],
            serde_json::json!({"values": ["p0", "b0", "c0", "p1"], "end": 9}),
            "{client}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn murmur2_partitioner_agrees_with_runnels_client() {
    let (cluster, out) = confluent("partitioner").await;
    let line = out.lines().last().unwrap();
    // {"user-0": 1, "user-1": 2, ...}
    let pairs: Vec<(String, i32)> = line
        .trim_matches(|c| c == '{' || c == '}')
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once(": ").unwrap();
            (k.trim_matches('"').to_owned(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(pairs.len(), 200);
    for (key, partition) in pairs {
        assert_eq!(
            runnel_client::partitioner::partition_for_key(key.as_bytes(), 6),
            partition,
            "key {key}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_admin_topics_and_configs() {
    kafka_python("admin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produce_consume_every_codec() {
    kafka_python("produce_consume").await;
}

/// kafka-python pinned to the versions Kafka 4.0 dropped: Produce v0–2 in
/// message formats v0/v1, Fetch v0–3, OffsetCommit v1, CreateTopics v0–1,
/// DescribeConfigs v0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_pinned_to_old_versions() {
    kafka_python("old_versions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_consumer_group() {
    kafka_python("groups").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_idempotent_producer_and_describe_producers() {
    kafka_python("idempotent").await;
}

/// kcat, librdkafka's command-line tool: metadata, produce with keys and
/// headers, consume them back, a consumer group, and librdkafka pinned to
/// Kafka 0.9's versions (Produce v1 and Fetch v1, message format v0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_consumes_and_lists() {
    let cluster = cluster(1).await;
    cluster
        .create_topic(NewTopic::new("kcat").partitions(2))
        .await;
    let bootstrap = cluster.kafka_bootstrap();
    let input = cluster.data_dir().join("kcat-input");
    let lines: String = (0..50).map(|i| format!("k{i}:v{i}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    run(
        "kcat".into(),
        [
            "-b",
            &bootstrap,
            "-P",
            "-t",
            "kcat",
            "-K:",
            "-z",
            "zstd",
            "-H",
            "source=kcat",
            "-l",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([input.display().to_string()])
        .collect(),
    )
    .await;
    let out = run(
        "kcat".into(),
        [
            "-b",
            &bootstrap,
            "-C",
            "-t",
            "kcat",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k=%s %h\\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("k{i}=v{i} source=kcat")).collect();
    want.sort();
    assert_eq!(got, want);

    let listed = run(
        "kcat".into(),
        ["-b", &bootstrap, "-L", "-t", "kcat"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
    .await;
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("topic \"kcat\" with 2 partitions"),
        "{listed}"
    );

    // A consumer group reads everything once and commits.
    let out = run(
        "kcat".into(),
        [
            "-b",
            &bootstrap,
            "-G",
            "kcat-group",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%s\\n",
            "kcat",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 50);

    // librdkafka told the broker is Kafka 0.9 (no ApiVersions): Produce v1
    // in message format v0 with gzip, Fetch v1 reading it back as magic 0.
    cluster
        .create_topic(NewTopic::new("kcat-old").partitions(1))
        .await;
    let old = [
        "-X",
        "api.version.request=false",
        "-X",
        "broker.version.fallback=0.9.0",
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        ["-b", &bootstrap]
            .iter()
            .chain(extra)
            .chain(&old)
            .map(|s| s.to_string())
            .collect()
    };
    let input = cluster.data_dir().join("kcat-old-input");
    let lines: String = (0..20).map(|i| format!("old-k{i}:old-v{i}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let input = input.display().to_string();
    run(
        "kcat".into(),
        args(&[
            "-P", "-t", "kcat-old", "-p", "0", "-K:", "-z", "gzip", "-l", &input,
        ]),
    )
    .await;
    let out = run(
        "kcat".into(),
        args(&[
            "-C",
            "-t",
            "kcat-old",
            "-p",
            "0",
            "-o",
            "0",
            "-e",
            "-q",
            "-f",
            "%o %k=%s\n",
        ]),
    )
    .await;
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("{i} old-k{i}=old-v{i}")).collect();
    assert_eq!(got, want);
    cluster.shutdown().await;
}

/// A confluent-kafka producer with acks=all writes while the partition's
/// leader is killed: every record it was told is written is read back by a
/// confluent-kafka consumer after the election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_records_survive_a_leader_kill() {
    let mut cluster = cluster(3).await;
    cluster
        .create_topic(
            NewTopic::new("durable")
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
    let bootstrap = cluster.kafka_bootstrap();
    let acked = cluster.data_dir().join("acked.txt");
    let producer = {
        let args = vec![
            script("leader_kill.py").display().to_string(),
            "produce".into(),
            bootstrap.clone(),
            acked.display().to_string(),
            "12".into(),
        ];
        tokio::spawn(run(python(), args))
    };
    // Kill the leader mid-stream, once it has acknowledged some writes (the
    // producer goes on for 12 s).
    let admin = cluster.admin();
    wait_for(
        "the producer's first records committed",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            async move {
                admin
                    .describe_topic("durable")
                    .await
                    .is_ok_and(|t| t.partitions[0].log_end_offset >= 200)
            }
        },
    )
    .await;
    let leader = cluster.controller_leader("durable", 0).await;
    assert!(leader > 0, "no leader");
    cluster.kill_broker(leader as usize - 1).await;
    let out = producer.await.unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("producer: {summary}");
    // Read back through a surviving broker.
    let bootstrap = cluster.kafka_bootstrap();
    let out = run(
        python(),
        vec![
            script("leader_kill.py").display().to_string(),
            "verify".into(),
            bootstrap,
            acked.display().to_string(),
            "0".into(),
        ],
    )
    .await;
    println!("consumer: {}", String::from_utf8_lossy(&out.stdout));
    cluster.shutdown().await;
}
