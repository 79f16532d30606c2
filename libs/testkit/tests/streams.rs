//! Streams applications on a real cluster: word count run by several
//! instances while instances are added, closed and killed, with at least
//! once and exactly once; and a task's local state lost and restored from
//! its changelog. The results are checked against a straightforward count
//! of the input.
//!
//! `RUNNEL_STREAMS_SEED` repeats a run's schedule (a failure prints it).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use runnel_client::{
    ConsumerConfig, IsolationLevel, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use runnel_streams::{
    I64Serde, JoinWindows, Nullable, ProcessingGuarantee, Processor, ProcessorContext,
    PunctuationType, StreamJoined, StreamsApp, StreamsBuilder, StreamsConfig, StringSerde,
    TimeWindows, Topology,
};
use runnel_testkit::TestCluster;

const PARTITIONS: i32 = 4;
const WORDS: [&str; 12] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima",
];

fn word_count() -> Topology {
    let b = StreamsBuilder::new();
    b.stream("lines", Nullable(StringSerde), StringSerde)
        .flat_map_values(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .group_by(|_, w| w.clone(), StringSerde, StringSerde)
        .count("counts")
        .to_stream()
        .to("word-counts", StringSerde, Nullable(I64Serde));
    b.build().unwrap()
}

fn config(app: &str, state: &Path, guarantee: ProcessingGuarantee) -> StreamsConfig {
    let mut c = StreamsConfig::new(app);
    c.state_dir = state.to_owned();
    c.processing_guarantee = guarantee;
    c.commit_interval = Some(Duration::from_millis(200));
    c.session_timeout = Duration::from_secs(6);
    c.heartbeat_interval = Duration::from_millis(500);
    c
}

async fn start(cluster: &TestCluster, config: StreamsConfig) -> StreamsApp {
    StreamsApp::start(word_count(), config, cluster.client_config())
        .await
        .unwrap()
}

/// Lines of three words each, from `rng`; returns them with the count of
/// every word.
fn lines(rng: &mut impl Rng, n: usize) -> (Vec<String>, BTreeMap<String, i64>) {
    let mut counts = BTreeMap::new();
    let lines = (0..n)
        .map(|_| {
            let words: Vec<&str> = (0..3)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect();
            for w in &words {
                *counts.entry((*w).to_owned()).or_insert(0) += 1;
            }
            words.join(" ")
        })
        .collect();
    (lines, counts)
}

async fn produce(cluster: &TestCluster, lines: &[String]) {
    produce_through(cluster.client(), lines.to_vec()).await;
}

async fn produce_through(client: std::sync::Arc<runnel_client::Cluster>, lines: Vec<String>) {
    let producer = Producer::with_cluster(client, ProducerConfig::default());
    let mut pending = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let r = ProducerRecord::new("lines", l.clone().into_bytes())
            .key(format!("line-{i}").into_bytes());
        pending.push(producer.send(r).await.unwrap());
    }
    for p in pending {
        p.await.unwrap();
    }
}

/// A consumer of every partition of `topic`, reading with `isolation`
/// from `reset`.
async fn reader(
    cluster: &TestCluster,
    topic: &str,
    isolation: IsolationLevel,
    reset: OffsetReset,
) -> runnel_client::Consumer {
    let mut consumer = runnel_client::Consumer::with_cluster(
        cluster.client(),
        ConsumerConfig {
            auto_offset_reset: reset,
            isolation_level: isolation,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(
            (0..PARTITIONS)
                .map(|p| TopicPartition::new(topic, p))
                .collect(),
        )
        .await
        .unwrap();
    consumer
}

/// Every (word, count) `word-counts` holds, in order per word, read with
/// `isolation`, until nothing new comes for two seconds.
async fn read_counts(
    cluster: &TestCluster,
    isolation: IsolationLevel,
) -> BTreeMap<String, Vec<i64>> {
    let mut consumer = reader(cluster, "word-counts", isolation, OffsetReset::Earliest).await;
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut idle = 0;
    while idle < 8 {
        let records = consumer.poll(Duration::from_millis(250)).await.unwrap();
        idle = if records.is_empty() { idle + 1 } else { 0 };
        for r in records {
            let word = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let count = i64::from_be_bytes(r.value.unwrap().as_ref().try_into().unwrap());
            out.entry(word).or_default().push(count);
        }
    }
    out
}

/// What a stuck run looks like: each topic partition's log start, high
/// watermark and last stable offset, and the group's committed offsets.
async fn diagnose(cluster: &TestCluster, app: &str) {
    let admin = cluster.admin();
    for topic in [
        "lines".to_owned(),
        format!("{app}-counts-repartition"),
        format!("{app}-counts-changelog"),
        "word-counts".to_owned(),
    ] {
        for p in 0..PARTITIONS {
            let hw = admin.offsets(&topic, p).await;
            let lso = admin
                .offsets_at(&topic, p, IsolationLevel::ReadCommitted)
                .await;
            eprintln!("{topic}-{p}: (start, hw) {hw:?}, (start, lso) {lso:?}");
            if let (Ok((_, hw)), Ok((_, lso))) = (&hw, &lso)
                && lso < hw
            {
                eprintln!(
                    "  producers: {:?}",
                    admin.describe_producers(&topic, p).await
                );
            }
        }
    }
    eprintln!("committed: {:?}", admin.group_offsets(app).await);
    eprintln!(
        "transactions: {:?}",
        admin.list_transactions(&[], &[]).await
    );
    eprintln!("group: {:?}", admin.describe_group(app).await);
}

/// Waits until every word's latest count reaches what `expected` says.
async fn wait_for_counts(cluster: &TestCluster, expected: &BTreeMap<String, i64>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let got = read_counts(cluster, IsolationLevel::ReadCommitted).await;
        let reached = expected.iter().all(|(w, n)| {
            got.get(w)
                .and_then(|c| c.iter().max())
                .is_some_and(|m| m >= n)
        });
        if reached {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            for app in ["wc-alos", "wc-eos", "wc-restore"] {
                diagnose(cluster, app).await;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counts never reached the input's: expected {expected:?}, latest {:?}",
            got.iter()
                .map(|(w, c)| (w, c.last().copied()))
                .collect::<BTreeMap<_, _>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn cluster() -> TestCluster {
    let cluster = TestCluster::builder()
        .brokers(3)
        .coordinators(1)
        .auto_create_topics(false)
        .start()
        .await;
    cluster
        .create_topic(
            NewTopic::new("lines")
                .partitions(PARTITIONS)
                .replication_factor(3),
        )
        .await;
    cluster
        .create_topic(
            NewTopic::new("word-counts")
                .partitions(PARTITIONS)
                .replication_factor(3),
        )
        .await;
    cluster
}

/// The run's seed; also sets up logging (the cluster's warnings and the
/// application's lines, or RUST_LOG's choice, shown with a failure).
fn seed() -> u64 {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,runnel_streams=info".into()),
        )
        .with_test_writer()
        .try_init();
    let seed = std::env::var("RUNNEL_STREAMS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("RUNNEL_STREAMS_SEED={seed}");
    seed
}

/// With exactly once, each word's counts read read_committed are exactly
/// 1, 2, ..., n: every update once, none lost, none repeated.
fn assert_exact(got: &BTreeMap<String, Vec<i64>>, expected: &BTreeMap<String, i64>, seed: u64) {
    for (w, n) in expected {
        let want: Vec<i64> = (1..=*n).collect();
        assert_eq!(
            got.get(w),
            Some(&want),
            "word {w} (seed {seed}): every count exactly once"
        );
    }
    assert_eq!(got.len(), expected.len(), "no other words (seed {seed})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn word_count_on_three_instances_with_one_added_closed_and_killed_at_least_once() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = cluster().await;
    let state = tempfile::tempdir().unwrap();
    let cfg = |i: usize| {
        config(
            "wc-alos",
            &state.path().join(format!("i{i}")),
            ProcessingGuarantee::AtLeastOnce,
        )
    };
    let mut apps = Vec::new();
    for i in 0..3 {
        apps.push(start(&cluster, cfg(i)).await);
    }
    let mut expected = BTreeMap::new();
    let mut add = |rng: &mut rand::rngs::StdRng, n| {
        let (l, counts) = lines(rng, n);
        for (w, c) in counts {
            *expected.entry(w).or_insert(0) += c;
        }
        l
    };
    produce(&cluster, &add(&mut rng, 300)).await;
    // A fourth instance joins; then one closes cleanly; then one crashes.
    apps.push(start(&cluster, cfg(3)).await);
    produce(&cluster, &add(&mut rng, 300)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    apps.remove(0).close().await.unwrap();
    produce(&cluster, &add(&mut rng, 300)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    apps.remove(0).abort();
    produce(&cluster, &add(&mut rng, 300)).await;
    wait_for_counts(&cluster, &expected).await;
    let processed: u64 = apps
        .iter()
        .flat_map(|a| a.metrics())
        .map(|m| m.records_processed)
        .sum();
    assert!(processed > 0, "the remaining instances report their tasks");
    for app in apps {
        app.close().await.unwrap();
    }
    let got = read_counts(&cluster, IsolationLevel::ReadUncommitted).await;
    // At least once: a word's final count is at least its true count; the
    // crash may have counted some records twice.
    let mut over = 0;
    for (w, n) in &expected {
        let last = *got[w].last().unwrap();
        assert!(last >= *n, "word {w}: {last} < {n} (seed {seed})");
        if last > *n {
            over += 1;
        }
    }
    eprintln!(
        "at least once: {over} of {} words over-counted after one crash",
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_word_count_is_exact_through_instance_and_leader_kills() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = cluster().await;
    let state = tempfile::tempdir().unwrap();
    let cfg = |i: usize| {
        config(
            "wc-eos",
            &state.path().join(format!("i{i}")),
            ProcessingGuarantee::ExactlyOnceV2,
        )
    };
    let mut apps = Vec::new();
    let mut next = 0;
    for _ in 0..3 {
        apps.push(start(&cluster, cfg(next)).await);
        next += 1;
    }
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let rounds = std::env::var("RUNNEL_STREAMS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for round in 0..rounds {
        let (l, counts) = lines(&mut rng, 200);
        for (w, c) in counts {
            *expected.entry(w).or_insert(0) += c;
        }
        let load = tokio::spawn(produce_through(cluster.client(), l));
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        if rng.random_bool(0.5) {
            let victim = rng.random_range(0..apps.len());
            eprintln!("round {round}: killing instance {victim}, starting another");
            apps.remove(victim).abort();
            apps.push(start(&cluster, cfg(next)).await);
            next += 1;
        } else {
            let partition = rng.random_range(0..PARTITIONS);
            let leader = cluster.controller_leader("word-counts", partition).await;
            eprintln!("round {round}: killing broker {leader} (leads word-counts-{partition})");
            let i = (leader - 1) as usize;
            cluster.kill_broker(i).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.start_broker_again(i).await;
        }
        load.await.unwrap();
    }
    wait_for_counts(&cluster, &expected).await;
    for app in apps {
        app.close().await.unwrap();
    }
    let got = read_counts(&cluster, IsolationLevel::ReadCommitted).await;
    assert_exact(&got, &expected, seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_whose_local_state_is_lost_is_restored_from_its_changelog() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = cluster().await;
    let state = tempfile::tempdir().unwrap();
    let cfg = config(
        "wc-restore",
        state.path(),
        ProcessingGuarantee::ExactlyOnceV2,
    );
    let app = start(&cluster, cfg.clone()).await;
    let (first, mut expected) = lines(&mut rng, 400);
    produce(&cluster, &first).await;
    wait_for_counts(&cluster, &expected).await;
    app.close().await.unwrap();
    // The whole local state goes; the changelog has it all.
    std::fs::remove_dir_all(state.path().join("wc-restore")).unwrap();
    let app = start(&cluster, cfg).await;
    let (second, counts) = lines(&mut rng, 100);
    for (w, c) in counts {
        *expected.entry(w).or_insert(0) += c;
    }
    produce(&cluster, &second).await;
    wait_for_counts(&cluster, &expected).await;
    let restored: u64 = app.metrics().iter().map(|m| m.restored_records).sum();
    assert!(
        restored >= WORDS.len() as u64,
        "every word's count came back from the changelog: {restored} restored"
    );
    app.close().await.unwrap();
    let got = read_counts(&cluster, IsolationLevel::ReadCommitted).await;
    assert_exact(&got, &expected, seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interactive_queries_find_each_words_instance_and_read_its_count_there() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = cluster().await;
    let state = tempfile::tempdir().unwrap();
    let mut apps = Vec::new();
    for host in ["a.example:7001", "b.example:7002"] {
        let mut c = config(
            "wc-query",
            &state.path().join(host),
            ProcessingGuarantee::AtLeastOnce,
        );
        c.application_server = Some(host.to_owned());
        apps.push((host, start(&cluster, c).await));
    }
    let (l, expected) = lines(&mut rng, 300);
    produce(&cluster, &l).await;
    wait_for_counts(&cluster, &expected).await;
    let mut hosts = std::collections::BTreeSet::new();
    for (word, n) in &expected {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let meta = apps[0]
                .1
                .query_metadata_for_key("counts", word, &StringSerde)
                .await
                .unwrap();
            let Some(host) = meta.host.clone() else {
                assert!(tokio::time::Instant::now() < deadline, "{word}: no host");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let (_, owner) = apps.iter().find(|(h, _)| *h == host).unwrap();
            let (_, other) = apps.iter().find(|(h, _)| *h != host).unwrap();
            let got = owner.get("counts", word, &StringSerde, &I64Serde).unwrap();
            if got != Some(*n) {
                // The store commits after its outputs are out: a moment later.
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{word}: {got:?} on {host}, expected {n}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert!(
                matches!(
                    other.get("counts", word, &StringSerde, &I64Serde),
                    Err(runnel_streams::StreamsError::NotLocal { .. })
                ),
                "{word} is not on the other instance"
            );
            hosts.insert(host);
            break;
        }
    }
    assert_eq!(hosts.len(), 2, "both instances hold some words");
    let all: usize = apps
        .iter()
        .map(|(_, a)| a.all("counts").unwrap().len())
        .sum();
    assert_eq!(
        all,
        expected.len(),
        "every word is in exactly one instance's store"
    );
    for (_, app) in apps {
        app.close().await.unwrap();
    }
}

/// Every (key, value) of `topic` as text, read read_committed until
/// `n` records came.
async fn read_values(
    cluster: &TestCluster,
    topic: &str,
    n: usize,
) -> BTreeMap<String, Vec<String>> {
    let mut consumer = reader(
        cluster,
        topic,
        IsolationLevel::ReadCommitted,
        OffsetReset::Earliest,
    )
    .await;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.values().map(Vec::len).sum::<usize>() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} so far: {out:?}"
        );
        for r in consumer.poll(Duration::from_millis(250)).await.unwrap() {
            let text = |b: Option<bytes::Bytes>| String::from_utf8(b.unwrap().to_vec()).unwrap();
            out.entry(text(r.key)).or_default().push(text(r.value));
        }
    }
    out
}

/// Impressions joined with clicks within a minute, and clicks counted per
/// ad per minute, exactly once.
fn ad_clicks() -> Topology {
    let b = StreamsBuilder::new();
    let impressions = b.stream("impressions", StringSerde, StringSerde);
    let clicks = b.stream("clicks", StringSerde, StringSerde);
    impressions
        .join_stream(
            &clicks,
            |i: &String, c: &String| format!("{i}+{c}"),
            JoinWindows::of_time_difference_no_grace(MINUTE),
            StreamJoined::with("ad-join", StringSerde, StringSerde, StringSerde),
        )
        .to("ad-joins", StringSerde, StringSerde);
    clicks
        .group_by_key(StringSerde, StringSerde)
        .windowed_by(TimeWindows::of_size_no_grace(MINUTE))
        .count("clicks-per-minute");
    // Campaigns: a global table, on a topic of another partition count.
    let campaigns = b.global_table("campaigns", StringSerde, StringSerde, "campaigns");
    impressions
        .join_global(
            &campaigns,
            |ad: &String, _: &String| ad.clone(),
            |_: &String, campaign: &String| campaign.clone(),
        )
        .to("ad-campaigns", StringSerde, StringSerde);
    b.build().unwrap()
}

const MINUTE: i64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_windowed_join_and_window_store_queries_run_on_a_cluster_and_restore_from_changelogs() {
    let _ = seed();
    let cluster = cluster().await;
    for t in ["impressions", "clicks", "ad-joins", "ad-campaigns"] {
        cluster
            .create_topic(
                NewTopic::new(t)
                    .partitions(PARTITIONS)
                    .replication_factor(3),
            )
            .await;
    }
    cluster
        .create_topic(
            NewTopic::new("campaigns")
                .partitions(3)
                .replication_factor(3),
        )
        .await;
    // Ad i: a campaign; an impression at minute i, clicks 10 s and 70 s
    // after it (the second outside the window). All written before the
    // application starts: it takes each task's topics in time order, so
    // the backlog joins as it would have live.
    let producer = Producer::with_cluster(cluster.client(), ProducerConfig::default());
    let ads = 20i64;
    let mut pending = Vec::new();
    for i in 0..ads {
        let r = ProducerRecord::new("campaigns", format!("spring-{i}").into_bytes())
            .key(format!("ad-{i}").into_bytes());
        pending.push(producer.send(r).await.unwrap());
    }
    for i in 0..ads {
        let (key, t) = (format!("ad-{i}"), i * MINUTE);
        let events = [
            ("impressions", "imp", t),
            ("clicks", "c1", t + 10_000),
            ("clicks", "c2", t + 70_000),
        ];
        for (topic, value, ts) in events {
            let r = ProducerRecord::new(topic, value.as_bytes().to_vec())
                .key(key.clone().into_bytes())
                .timestamp(ts);
            pending.push(producer.send(r).await.unwrap());
        }
    }
    for p in pending {
        p.await.unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let cfg = config("ads", state.path(), ProcessingGuarantee::ExactlyOnceV2);
    let app = StreamsApp::start(ad_clicks(), cfg.clone(), cluster.client_config())
        .await
        .unwrap();
    // Every ad's impression joins its first click only, once.
    let mut consumer = reader(
        &cluster,
        "ad-joins",
        IsolationLevel::ReadCommitted,
        OffsetReset::Earliest,
    )
    .await;
    let mut joins: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while joins.values().map(Vec::len).sum::<usize>() < ads as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "joins so far: {joins:?}"
        );
        for r in consumer.poll(Duration::from_millis(250)).await.unwrap() {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            joins
                .entry(key)
                .or_default()
                .push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    for i in 0..ads {
        assert_eq!(joins[&format!("ad-{i}")], ["imp+c1"], "ad-{i}");
    }
    let campaigns = read_values(&cluster, "ad-campaigns", ads as usize).await;
    for i in 0..ads {
        assert_eq!(
            campaigns[&format!("ad-{i}")],
            [format!("spring-{i}")],
            "every impression found its campaign in the global table"
        );
    }
    // Each ad's clicks per minute, read from the window store.
    let per_minute = |app: &StreamsApp, i: i64| {
        app.fetch_window(
            "clicks-per-minute",
            &format!("ad-{i}"),
            &StringSerde,
            &I64Serde,
            0,
            ads * MINUTE + MINUTE,
        )
    };
    let expected = |i: i64| vec![(i * MINUTE, 1), ((i + 1) * MINUTE, 1)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for i in 0..ads {
        // The stores commit after the transaction: a moment after the output.
        while per_minute(&app, i).unwrap() != expected(i) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ad-{i}: {:?}",
                per_minute(&app, i)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A click for minute 0 of ad 0 after its task's stream time passed
    // 70 s: that window is closed, the click dropped and counted.
    let late = ProducerRecord::new("clicks", b"late".to_vec())
        .key(b"ad-0".to_vec())
        .timestamp(5_000);
    producer.send(late).await.unwrap().await.unwrap();
    let dropped = |app: &StreamsApp| {
        app.metrics()
            .iter()
            .map(|m| m.dropped_late_records)
            .sum::<u64>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dropped(&app) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late click was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(per_minute(&app, 0).unwrap(), expected(0));
    app.close().await.unwrap();
    // The local state lost: the stores come back from their changelogs,
    // the join's window stores with them (a late click still joins).
    std::fs::remove_dir_all(state.path().join("ads")).unwrap();
    let app = StreamsApp::start(ad_clicks(), cfg, cluster.client_config())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.metrics().len() < PARTITIONS as usize
        || (0..ads).any(|i| per_minute(&app, i).ok() != Some(expected(i)))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "restore did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The task's stream time came back with its committed offsets: a
    // click for ad 0's first minute is as late as it was before.
    let late = ProducerRecord::new("clicks", b"late".to_vec())
        .key(b"ad-0".to_vec())
        .timestamp(6_000);
    producer.send(late).await.unwrap().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dropped(&app) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after the restart the late click was not dropped: {:?}",
            per_minute(&app, 0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(per_minute(&app, 0).unwrap(), expected(0));
    let last = ads - 1;
    let r = ProducerRecord::new("clicks", b"c3".to_vec())
        .key(format!("ad-{last}").into_bytes())
        .timestamp(last * MINUTE + 20_000);
    producer.send(r).await.unwrap().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restored join did not join"
        );
        let joined = consumer.poll(Duration::from_millis(250)).await.unwrap();
        // The late click may still join ad 0's impression: the join keeps
        // records for two minutes of stream time, the window count for none.
        let mut values = joined
            .iter()
            .filter_map(|r| r.value.as_deref())
            .filter(|v| *v != b"imp+late");
        if let Some(v) = values.next() {
            assert_eq!(v, b"imp+c3");
            break;
        }
    }
    // A campaign changed while the application runs: the global table
    // follows its topic, so impressions soon join the new value.
    let key = format!("ad-{last}").into_bytes();
    let update = ProducerRecord::new("campaigns", b"summer".to_vec()).key(key.clone());
    producer.send(update).await.unwrap().await.unwrap();
    let mut campaigns = reader(
        &cluster,
        "ad-campaigns",
        IsolationLevel::ReadCommitted,
        OffsetReset::Latest,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'seen: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the update never joined"
        );
        let imp = ProducerRecord::new("impressions", b"imp".to_vec())
            .key(key.clone())
            .timestamp(last * MINUTE + 30_000);
        producer.send(imp).await.unwrap().await.unwrap();
        for _ in 0..8 {
            for r in campaigns.poll(Duration::from_millis(250)).await.unwrap() {
                if r.value.as_deref() == Some(&b"summer"[..]) {
                    break 'seen;
                }
            }
        }
    }
    app.close().await.unwrap();
}

/// Counts records in a store; every 100 ms of wall-clock time passes on
/// the count under `tick-<the instance's id>` (one instance per task).
struct Ticker(u64);

impl Processor<Option<String>, String, String, i64> for Ticker {
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, i64>,
    ) -> Result<(), runnel_streams::StreamsError> {
        ctx.schedule(100, PunctuationType::WallClockTime);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, i64>,
        _: &Option<String>,
        _: &String,
    ) -> Result<(), runnel_streams::StreamsError> {
        let n = count(ctx.get("ticks", b"n")?);
        ctx.put(
            "ticks",
            bytes::Bytes::from_static(b"n"),
            Some(bytes::Bytes::copy_from_slice(&(n + 1).to_be_bytes())),
        )
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, i64>,
        _: PunctuationType,
        _: i64,
    ) -> Result<(), runnel_streams::StreamsError> {
        let n = count(ctx.get("ticks", b"n")?);
        ctx.forward(format!("tick-{}", self.0), n);
        Ok(())
    }
}

fn count(stored: Option<bytes::Bytes>) -> i64 {
    stored.map_or(0, |b| i64::from_be_bytes(b.as_ref().try_into().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_processor_punctuates_by_wall_clock_time_with_no_input_exactly_once() {
    let _ = seed();
    let cluster = cluster().await;
    let b = StreamsBuilder::new();
    b.stream("lines", Nullable(StringSerde), StringSerde)
        .process(|| Ticker(rand::random()), &["ticks"])
        .to("word-counts", StringSerde, I64Serde);
    let state = tempfile::tempdir().unwrap();
    let cfg = config("ticker", state.path(), ProcessingGuarantee::ExactlyOnceV2);
    let app = StreamsApp::start(b.build().unwrap(), cfg, cluster.client_config())
        .await
        .unwrap();
    let lines: Vec<String> = (0..5).map(|i| format!("line {i}")).collect();
    produce(&cluster, &lines).await;
    // The ticks go on after the input stops: each task's latest tick
    // carries its partition's count, and they add up to the input.
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    let mut consumer = reader(
        &cluster,
        "word-counts",
        IsolationLevel::ReadCommitted,
        OffsetReset::Earliest,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while latest.values().sum::<i64>() != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ticks never added up to 5: {latest:?}"
        );
        for r in consumer.poll(Duration::from_millis(250)).await.unwrap() {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            assert!(key.starts_with("tick-"), "{key}");
            let n = i64::from_be_bytes(r.value.as_deref().unwrap().try_into().unwrap());
            latest.insert(key, n);
        }
    }
    app.close().await.unwrap();
}
