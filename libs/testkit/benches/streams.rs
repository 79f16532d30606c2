//! Streams applications against the plain client doing the same work, side
//! by side in one run on one in-process broker.
//!
//! ```sh
//! cargo bench -p runnel-testkit --bench streams [-- RECORDS] [PART...]
//! ```
//!
//! PART picks what runs (all by default): `stateless`, `wordcount`,
//! `latency`, `restore`.
//!
//! - Stateless: `map_values` + `filter` + `to` at least once, against a
//!   group consumer whose loop does the same and produces with the same
//!   client (commits every 30 s, as the application's default): records/s
//!   and the ratio (goal ≥ 0.8).
//! - Word count (group by word through a repartition topic, count in a
//!   changelogged store): input lines/s at least once and exactly once.
//! - Latency: word count exactly once (commit interval 100 ms) fed 10,000
//!   lines/s for ten seconds; p50/p99 from a line's timestamp to its count
//!   read read_committed.
//! - Restore: a table of RECORDS distinct keys (100-byte values) restored
//!   into an empty state directory from its changelog, against a plain
//!   consumer reading the same changelog: MB/s and the ratio (goal ≥ 0.7);
//!   and the store engine alone loading the same records, with no
//!   cluster, which bounds what a restore can reach.
//!
//! RECORDS defaults to 1,000,000 (lines, and table keys). Throughputs
//! count from the first record processed to the last, leaving out the
//! group join and the tasks' opening on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use runnel_client::{
    Consumer, ConsumerConfig, GroupConfig, GroupConsumer, IsolationLevel, NewTopic, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use runnel_streams::{
    I64Serde, KeyValueStore, Nullable, ProcessingGuarantee, RedbStore, StreamsApp, StreamsBuilder,
    StreamsConfig, StringSerde, Topology,
};
use runnel_testkit::TestCluster;

const PARTITIONS: i32 = 4;
const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

fn line(i: usize) -> String {
    format!(
        "{} {} {}",
        WORDS[i % 16],
        WORDS[(i / 16) % 16],
        WORDS[(i / 256) % 16]
    )
}

/// Keeps a line unless its first word is `alpha` (1 in 16 dropped).
fn keep(value: &str) -> bool {
    !value.starts_with("alpha")
}

async fn create(cluster: &TestCluster, topic: &str) {
    cluster
        .create_topic(NewTopic::new(topic).partitions(PARTITIONS))
        .await;
}

/// Writes `n` records (keys `k<i>`, values from `value`) to `topic`.
async fn fill(cluster: &TestCluster, topic: &str, n: usize, value: impl Fn(usize) -> String) {
    let producer = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            linger: Duration::from_millis(10),
            batch_size: 256 * 1024,
            ..ProducerConfig::default()
        },
    );
    for i in 0..n {
        let r = ProducerRecord::new(topic, value(i).into_bytes()).key(format!("k{i}").into_bytes());
        drop(producer.send(r).await.unwrap());
    }
    producer.flush().await.unwrap();
    assert_eq!(producer.failed_records(), 0);
}

fn config(app: &str, state: &std::path::Path, guarantee: ProcessingGuarantee) -> StreamsConfig {
    let mut c = StreamsConfig::new(app);
    c.state_dir = state.to_owned();
    c.processing_guarantee = guarantee;
    c
}

/// Runs `topology` until its tasks have processed `records` records;
/// returns the seconds from the first record processed to the last (the
/// group join and the tasks' opening left out, as in the plain loop).
async fn run_until(
    cluster: &TestCluster,
    topology: Topology,
    config: StreamsConfig,
    records: u64,
) -> f64 {
    let app = StreamsApp::start(topology, config, cluster.client_config())
        .await
        .unwrap();
    let mut first = None;
    loop {
        let done: u64 = app.metrics().iter().map(|m| m.records_processed).sum();
        if done > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if done >= records {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    app.close().await.unwrap();
    secs
}

/// The plain loop: a group consumer, the same map and filter, the same
/// producer; commits every 30 s and at the end.
async fn plain_loop(cluster: &TestCluster, records: usize) -> f64 {
    let mut start = None;
    let mut config = GroupConfig::new("plain-loop");
    config.enable_auto_commit = false;
    config.consumer.auto_offset_reset = OffsetReset::Earliest;
    config.consumer.max_poll_records = 1000;
    let mut group = GroupConsumer::with_cluster(cluster.client(), config);
    group.subscribe(vec!["in".into()]);
    let producer = Producer::with_cluster(cluster.client(), ProducerConfig::default());
    let mut seen = 0;
    let mut last_commit = Instant::now();
    while seen < records {
        for r in group.poll(Duration::from_millis(100)).await.unwrap() {
            start.get_or_insert_with(Instant::now);
            seen += 1;
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            if !keep(&value) {
                continue;
            }
            let mut out = ProducerRecord::new("plain-out", value.to_uppercase().into_bytes())
                .timestamp(r.timestamp);
            out.key = r.key;
            drop(producer.send(out).await.unwrap());
        }
        if last_commit.elapsed() >= Duration::from_secs(30) {
            producer.flush().await.unwrap();
            group.commit_sync().await.unwrap();
            last_commit = Instant::now();
        }
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    producer.flush().await.unwrap();
    group.commit_sync().await.unwrap();
    group.close().await.unwrap();
    secs
}

fn stateless() -> Topology {
    let b = StreamsBuilder::new();
    b.stream("in", Nullable(StringSerde), StringSerde)
        .filter(|_, v: &String| keep(v))
        .map_values(|v: &String| v.to_uppercase())
        .to("streams-out", Nullable(StringSerde), StringSerde);
    b.build().unwrap()
}

fn word_count(output: &str) -> Topology {
    let b = StreamsBuilder::new();
    b.stream("in", Nullable(StringSerde), StringSerde)
        .flat_map_values(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .group_by(|_, w| w.clone(), StringSerde, StringSerde)
        .count("counts")
        .to_stream()
        .to(output, StringSerde, Nullable(I64Serde));
    b.build().unwrap()
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Word count exactly once fed 10,000 lines/s for ten seconds: latency
/// (ms) from each line's timestamp to a count carrying it, read
/// read_committed; returns (p50, p99, counts read).
async fn latency(cluster: &TestCluster, state: &std::path::Path) -> (f64, f64, usize) {
    create(cluster, "live").await;
    create(cluster, "live-counts").await;
    let b = StreamsBuilder::new();
    b.stream("live", Nullable(StringSerde), StringSerde)
        .flat_map_values(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .group_by(|_, w| w.clone(), StringSerde, StringSerde)
        .count("counts")
        .to_stream()
        .to("live-counts", StringSerde, Nullable(I64Serde));
    let mut cfg = config("bench-latency", state, ProcessingGuarantee::ExactlyOnceV2);
    cfg.commit_interval = Some(Duration::from_millis(100));
    let app = StreamsApp::start(b.build().unwrap(), cfg, cluster.client_config())
        .await
        .unwrap();
    // Until the tasks are open, latency is the rebalance's.
    while app.metrics().len() < PARTITIONS as usize {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reader = Consumer::with_cluster(
        cluster.client(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Latest,
            isolation_level: IsolationLevel::ReadCommitted,
            fetch_max_wait: Duration::from_millis(20),
            ..ConsumerConfig::default()
        },
    );
    reader
        .assign(
            (0..PARTITIONS)
                .map(|p| TopicPartition::new("live-counts", p))
                .collect(),
        )
        .await
        .unwrap();
    reader.poll(Duration::from_millis(100)).await.unwrap();
    let client = cluster.client();
    let feeder = tokio::spawn(async move {
        let producer = Producer::with_cluster(client, ProducerConfig::default());
        let start = Instant::now();
        for i in 0..100_000usize {
            let due = start + Duration::from_micros(i as u64 * 100);
            tokio::time::sleep_until(due.into()).await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let r = ProducerRecord::new("live", line(i).into_bytes()).timestamp(now);
            drop(producer.send(r).await.unwrap());
        }
        producer.flush().await.unwrap();
    });
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !(feeder.is_finished() && latencies.len() >= 300_000) && Instant::now() < deadline {
        for r in reader.poll(Duration::from_millis(100)).await.unwrap() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            latencies.push((now - r.timestamp) as f64);
        }
    }
    feeder.await.unwrap();
    app.close().await.unwrap();
    latencies.sort_by(f64::total_cmp);
    (pct(&latencies, 0.5), pct(&latencies, 0.99), latencies.len())
}

/// Restores a table of `keys` keys into an empty state directory; returns
/// (restore MB/s, plain consumer MB/s over the same changelog, the store
/// engine's MB/s loading the same records alone, MB).
async fn restore(
    cluster: &TestCluster,
    state: &std::path::Path,
    keys: usize,
) -> (f64, f64, f64, f64) {
    create(cluster, "users").await;
    fill(cluster, "users", keys, |i| format!("{i:0>100}")).await;
    let table = || {
        let b = StreamsBuilder::new();
        b.table("users", StringSerde, StringSerde, "users-store");
        b.build().unwrap()
    };
    let cfg = config("bench-restore", state, ProcessingGuarantee::AtLeastOnce);
    run_until(cluster, table(), cfg.clone(), keys as u64).await;
    std::fs::remove_dir_all(state.join("bench-restore")).unwrap();
    let app = StreamsApp::start(table(), cfg, cluster.client_config())
        .await
        .unwrap();
    let (restored, millis) = loop {
        let m = app.metrics();
        let restored: u64 = m.iter().map(|m| m.restored_records).sum();
        if m.len() == PARTITIONS as usize && restored >= keys as u64 {
            // The tasks opened together restore in one pass: each reports it.
            break (
                restored,
                m.iter().map(|m| m.restore_millis).max().unwrap_or(0),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    app.close().await.unwrap();
    // The plain consumer reads the same changelog, start to end.
    let start = Instant::now();
    let mut consumer = Consumer::with_cluster(
        cluster.client(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 10_000,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(
            (0..PARTITIONS)
                .map(|p| TopicPartition::new("bench-restore-users-store-changelog", p))
                .collect(),
        )
        .await
        .unwrap();
    let (mut read, mut bytes) = (0u64, 0usize);
    let mut kept: Vec<Changelog> = vec![Vec::new(); PARTITIONS as usize];
    while read < restored {
        for r in consumer.poll(Duration::from_millis(100)).await.unwrap() {
            read += 1;
            bytes +=
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
            if let Some(key) = r.key {
                kept[r.partition as usize].push((key, r.value));
            }
        }
    }
    let plain = start.elapsed().as_secs_f64();
    let engine = engine_bound(state, kept);
    let mb = bytes as f64 / 1e6;
    (mb / (millis as f64 / 1000.0), mb / plain, mb / engine, mb)
}

/// One changelog partition's records: (key, value).
type Changelog = Vec<(Bytes, Option<Bytes>)>;

/// Seconds for the store engine alone to load `records` (one partition's
/// changelog each) into fresh stores, as a restore does (the same batches,
/// the same threads, the same final sync), with no cluster: the bound on
/// what a restore can reach on this machine.
fn engine_bound(state: &std::path::Path, records: Vec<Changelog>) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = state.join("engine-bound");
    std::fs::create_dir_all(&dir).unwrap();
    let mut groups: Vec<Vec<(RedbStore, Changelog)>> = (0..threads).map(|_| Vec::new()).collect();
    for (p, records) in records.into_iter().enumerate() {
        let store = RedbStore::open(&dir.join(format!("{p}.redb"))).unwrap();
        groups[p % threads].push((store, records));
    }
    let start = Instant::now();
    std::thread::scope(|s| {
        for group in groups {
            s.spawn(move || {
                for (mut store, records) in group {
                    let mut at = 0;
                    for batch in records.chunks(100_000) {
                        at += batch.len() as i64;
                        store.load(batch.to_vec(), at).unwrap();
                    }
                    store.commit(Some(at)).unwrap();
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let records: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let parts: Vec<&str> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err())
        .map(String::as_str)
        .collect();
    let runs = |part: &str| parts.is_empty() || parts.contains(&part);
    let cluster = TestCluster::builder()
        .brokers(1)
        .coordinators(1)
        .auto_create_topics(false)
        .start()
        .await;
    let state = tempfile::tempdir().unwrap();
    for t in [
        "in",
        "plain-out",
        "streams-out",
        "alos-counts",
        "eos-counts",
    ] {
        create(&cluster, t).await;
    }
    if runs("stateless") || runs("wordcount") || runs("latency") {
        fill(&cluster, "in", records, line).await;
        println!(
            "{records} input lines of 3 words, {PARTITIONS} partitions, one broker in process"
        );
    }

    if runs("stateless") {
        stateless_vs_plain(&cluster, state.path(), records).await;
    }
    if runs("wordcount") {
        word_counts(&cluster, state.path(), records).await;
    }
    if runs("latency") {
        let (p50, p99, n) = latency(&cluster, state.path()).await;
        println!(
            "word count exactly once at 10,000 lines/s, commit 100 ms: p50 {p50:.0} ms, p99 {p99:.0} ms ({n} counts read)"
        );
    }
    if runs("restore") {
        let (restore_rate, plain_rate, engine_rate, mb) =
            restore(&cluster, state.path(), records).await;
        println!(
            "restore {mb:.1} MB of changelog: {restore_rate:.1} MB/s, plain consumer {plain_rate:.1} MB/s, ratio {:.2}; \
             the store engine alone loading the same records {engine_rate:.1} MB/s (restore at {:.2} of it)",
            restore_rate / plain_rate,
            restore_rate / engine_rate
        );
    }
}

/// The stateless topology against the plain loop.
async fn stateless_vs_plain(cluster: &TestCluster, state: &std::path::Path, records: usize) {
    let plain = plain_loop(cluster, records).await;
    let streams = run_until(
        cluster,
        stateless(),
        config("bench-stateless", state, ProcessingGuarantee::AtLeastOnce),
        records as u64,
    )
    .await;
    let (plain_rate, streams_rate) = (records as f64 / plain, records as f64 / streams);
    println!(
        "stateless map+filter: streams {streams_rate:.0} rec/s, plain loop {plain_rate:.0} rec/s, ratio {:.2}",
        streams_rate / plain_rate
    );
}

/// Word count at least once and exactly once.
async fn word_counts(cluster: &TestCluster, state: &std::path::Path, records: usize) {
    // Word count: every line is processed once, and each of its 3 words
    // once more from the repartition topic.
    for (guarantee, name, output) in [
        (
            ProcessingGuarantee::AtLeastOnce,
            "at least once",
            "alos-counts",
        ),
        (
            ProcessingGuarantee::ExactlyOnceV2,
            "exactly once",
            "eos-counts",
        ),
    ] {
        let app = format!("bench-wc-{output}");
        let secs = run_until(
            cluster,
            word_count(output),
            config(&app, state, guarantee),
            records as u64 * 4,
        )
        .await;
        println!(
            "word count {name}: {:.0} lines/s ({:.0} records/s through the topology)",
            records as f64 / secs,
            records as f64 * 4.0 / secs
        );
    }
}
