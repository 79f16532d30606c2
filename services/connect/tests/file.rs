//! File → topic → file through a connect worker: the REST API and config
//! files, pause and resume, bad configs, and a worker killed mid-stream.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{append, eventually, lines, read_topic, rest, states, worker, worker_config};
use runnel_testkit::TestCluster;
use serde_json::json;

fn numbered(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("line {i:06}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_to_topic_to_file_with_rest_and_config_files() {
    let cluster = TestCluster::builder().coordinators(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let connectors = dir.path().join("connectors");
    std::fs::create_dir(&connectors).unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    append(&input, numbered(0, 1000));

    let w = worker(worker_config(&cluster, Some(&connectors))).await;

    // A bad config: 400 with every problem, and nothing is created.
    let (code, body) = rest(
        &w,
        "POST",
        "/connectors",
        Some(json!({"name": "bad", "config": {"connector.class": "FileStreamSource", "tasks.max": "0"}})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    for key in ["tasks.max", "file", "topic"] {
        assert!(message.contains(key), "{key} missing from {message}");
    }
    let (code, body) = rest(
        &w,
        "POST",
        "/connectors",
        Some(json!({"name": "x", "config": {"connector.class": "com.example.Nope"}})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("FileStreamSink"));
    assert_eq!(rest(&w, "GET", "/connectors", None).await.1, json!([]));

    // The source through the REST API, the sink from a TOML file.
    let (code, body) = rest(
        &w,
        "POST",
        "/connectors",
        Some(json!({"name": "lines-in", "config": {
            "connector.class": "FileStreamSource",
            "file": input.to_str().unwrap(),
            "topic": "lines",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
        }})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["type"], "source");
    assert_eq!(body["tasks"], json!([{"connector": "lines-in", "task": 0}]));
    let (code, _) = rest(&w, "POST", "/connectors", Some(json!({"name": "lines-in", "config": {"connector.class": "FileStreamSource", "file": "/x", "topic": "t"}}))).await;
    assert_eq!(code, 409);
    std::fs::write(
        connectors.join("lines-out.toml"),
        format!(
            "connector.class = \"FileStreamSink\"\ntopics = \"lines\"\nfile = \"{}\"\nvalue.converter = \"string\"\n",
            output.display()
        ),
    )
    .unwrap();
    // A broken file next to it is reported and skipped.
    std::fs::write(connectors.join("broken.json"), "{\"name\": ").unwrap();

    eventually(
        "the first 1000 lines copied",
        Duration::from_secs(60),
        || async { lines(&output).len() >= 1000 },
    )
    .await;
    assert_eq!(lines(&output), numbered(0, 1000));
    let (c, tasks) = states(&w, "lines-out").await;
    assert_eq!(c, "RUNNING");
    assert_eq!(tasks, vec![("RUNNING".to_owned(), w.worker_id.clone())]);
    let (_, listed) = rest(&w, "GET", "/connectors?expand=status", None).await;
    assert_eq!(listed.as_object().unwrap().len(), 2, "{listed}");

    // Pause the source: it says so; resume: new lines flow again.
    assert_eq!(
        rest(&w, "PUT", "/connectors/lines-in/pause", None).await.0,
        202
    );
    eventually("the source paused", Duration::from_secs(20), || async {
        states(&w, "lines-in")
            .await
            .1
            .first()
            .is_some_and(|t| t.0 == "PAUSED")
    })
    .await;
    append(&input, numbered(1000, 1500));
    assert_eq!(
        rest(&w, "PUT", "/connectors/lines-in/resume", None).await.0,
        202
    );
    eventually(
        "lines after the resume copied",
        Duration::from_secs(60),
        || async { lines(&output).len() >= 1500 },
    )
    .await;
    assert_eq!(lines(&output), numbered(0, 1500));

    // Config, plugins, validate.
    let (_, cfg) = rest(&w, "GET", "/connectors/lines-in/config", None).await;
    assert_eq!(cfg["topic"], "lines");
    let (_, plugins) = rest(&w, "GET", "/connector-plugins", None).await;
    assert!(
        plugins
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["class"] == "org.apache.kafka.connect.file.FileStreamSinkConnector")
    );
    let (code, v) = rest(
        &w,
        "PUT",
        "/connector-plugins/FileStreamSink/config/validate",
        Some(json!({"connector.class": "FileStreamSink", "name": "v", "topics": "t"})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(v["error_count"], 1, "{v}");
    assert_eq!(
        rest(&w, "GET", "/connectors/nope/status", None).await.0,
        404
    );

    // Removing the file deletes its connector; DELETE removes the other.
    std::fs::remove_file(connectors.join("lines-out.toml")).unwrap();
    eventually(
        "the file's connector deleted",
        Duration::from_secs(20),
        || async { rest(&w, "GET", "/connectors", None).await.1 == json!(["lines-in"]) },
    )
    .await;
    assert_eq!(
        rest(&w, "DELETE", "/connectors/lines-in", None).await.0,
        204
    );
    assert_eq!(rest(&w, "GET", "/connectors", None).await.1, json!([]));
    w.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_resumes_where_it_committed_and_loses_nothing() {
    let cluster = TestCluster::builder().coordinators(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    let total = 100_000;
    append(&input, numbered(0, total / 2));
    let config = worker_config(&cluster, None);
    let w = worker(config.clone()).await;
    for (name, body) in [
        (
            "in",
            json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "stream", "value.converter": "string"}),
        ),
        (
            "out",
            json!({"connector.class": "FileStreamSink", "file": output.to_str().unwrap(), "topics": "stream", "value.converter": "string"}),
        ),
    ] {
        let (code, b) = rest(&w, "PUT", &format!("/connectors/{name}/config"), Some(body)).await;
        assert_eq!(code, 201, "{b}");
    }
    eventually("some lines copied", Duration::from_secs(60), || async {
        lines(&output).len() >= 5_000
    })
    .await;
    // Kill mid-stream: nothing is committed on the way down.
    w.kill().await;
    let before: std::collections::BTreeSet<String> = lines(&output).into_iter().collect();
    append(&input, numbered(total / 2, total));
    let w = worker(config).await;
    eventually(
        "every line copied after the restart",
        Duration::from_secs(90),
        || async {
            let got = lines(&output);
            got.iter().collect::<std::collections::BTreeSet<_>>().len() >= total
        },
    )
    .await;
    let got = lines(&output);
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for l in &got {
        *counts.entry(l).or_default() += 1;
    }
    let expected = numbered(0, total);
    for l in &expected {
        assert!(counts.contains_key(l), "{l} was lost");
    }
    assert_eq!(counts.len(), total, "only input lines arrive");
    // The source resumed from its committed position: in the topic, only
    // lines the killed source had read can be there twice, and lines
    // appended after the kill are there exactly once. (The file is
    // at-least-once: the sink rewrites what it wrote since its last commit
    // after the kill, and again after any rebalance of its group.)
    let (_, end) = cluster.admin().offsets("stream", 0).await.unwrap();
    let produced = read_topic(&cluster, "stream", end as usize, Duration::from_secs(30)).await;
    assert_eq!(produced.len(), end as usize, "the whole topic is read back");
    let mut in_topic: BTreeMap<String, usize> = BTreeMap::new();
    for r in &produced {
        let line = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        *in_topic.entry(line).or_default() += 1;
    }
    let after_kill: std::collections::BTreeSet<String> =
        numbered(total / 2, total).into_iter().collect();
    for (l, n) in &in_topic {
        let limit = if after_kill.contains(l) { 1 } else { 2 };
        assert!(*n <= limit, "{l} is in the topic {n} times");
    }
    let duplicates = got.len() - total;
    println!(
        "kill and restart: {total} lines, {} written before the kill, {duplicates} extra copies in the file, {} in the topic (offset.flush.interval.ms=200)",
        before.len(),
        produced.len() - total
    );
    w.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_tasks_and_a_dead_workers_tasks_move() {
    let cluster = TestCluster::builder().coordinators(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = worker(worker_config(&cluster, None)).await;
    let b = worker(worker_config(&cluster, None)).await;
    let mut inputs = Vec::new();
    for i in 0..4 {
        let input = dir.path().join(format!("in{i}.txt"));
        append(&input, numbered(0, 10));
        let (code, body) = rest(
            &a,
            "PUT",
            &format!("/connectors/src{i}/config"),
            Some(json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": format!("t{i}"), "value.converter": "string"})),
        )
        .await;
        assert_eq!(code, 201, "{body}");
        inputs.push(input);
    }
    let both = [a.worker_id.clone(), b.worker_id.clone()];
    eventually(
        "every task running, on both workers",
        Duration::from_secs(60),
        || async {
            let mut on = std::collections::BTreeSet::new();
            for i in 0..4 {
                let (_, tasks) = states(&b, &format!("src{i}")).await;
                match tasks.first() {
                    Some((s, w)) if s == "RUNNING" => {
                        on.insert(w.clone());
                    }
                    _ => return false,
                }
            }
            on.len() == 2 && on.iter().all(|w| both.contains(w))
        },
    )
    .await;
    let session = Duration::from_millis(worker_config(&cluster, None).session_timeout_ms);
    let killed = std::time::Instant::now();
    b.kill().await;
    eventually(
        "every task running on the survivor",
        Duration::from_secs(30),
        || async {
            for i in 0..4 {
                let (_, tasks) = states(&a, &format!("src{i}")).await;
                if tasks
                    .first()
                    .is_none_or(|(s, w)| s != "RUNNING" || *w != a.worker_id)
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let moved = killed.elapsed();
    println!(
        "a dead worker's tasks ran on the survivor {} ms after the kill (session.timeout.ms {})",
        moved.as_millis(),
        session.as_millis()
    );
    // The session timeout, then a heartbeat interval and a rebalance.
    assert!(moved < session * 2, "took {moved:?}");
    a.shutdown().await;
    cluster.shutdown().await;
}

/// Every value of `topic` a read_committed consumer reads from the start,
/// once nothing new has come for two seconds.
async fn read_committed(cluster: &TestCluster, topic: &str) -> Vec<String> {
    let mut consumer = runnel_client::Consumer::with_cluster(
        cluster.client(),
        runnel_client::ConsumerConfig {
            auto_offset_reset: runnel_client::OffsetReset::Earliest,
            isolation_level: runnel_client::IsolationLevel::ReadCommitted,
            max_poll_records: 10_000,
            ..runnel_client::ConsumerConfig::default()
        },
    );
    let parts = consumer.partitions_of(topic).await.unwrap();
    consumer.assign(parts).await.unwrap();
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 8 {
        let records = consumer.poll(Duration::from_millis(250)).await.unwrap();
        if records.is_empty() {
            idle += 1;
        }
        for r in records {
            idle = 0;
            out.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_source_killed_mid_stream_writes_every_line_once() {
    let cluster = TestCluster::builder().coordinators(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let total = 60_000;
    append(&input, numbered(0, total / 2));
    let config = runnel_connect::Config {
        exactly_once_source_support: runnel_connect::ExactlyOnceSourceSupport::Enabled,
        ..worker_config(&cluster, None)
    };
    let w = worker(config.clone()).await;
    // A connector that cannot have what it asks for is refused up front.
    let (code, body) = rest(
        &w,
        "PUT",
        "/connectors/bad/config",
        Some(json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "eos", "transaction.boundary": "connector"})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.to_string()
            .contains("does not define its own transaction boundaries"),
        "{body}"
    );
    let (code, body) = rest(
        &w,
        "PUT",
        "/connectors/in/config",
        Some(json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "eos", "value.converter": "string", "exactly.once.support": "required"})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let admin = cluster.admin();
    eventually("some lines produced", Duration::from_secs(60), || async {
        admin
            .offsets("eos", 0)
            .await
            .is_ok_and(|(_, end)| end >= 5_000)
    })
    .await;
    // Killed mid-stream: whatever transaction was open is left open.
    w.kill().await;
    append(&input, numbered(total / 2, total));
    let w = worker(config).await;
    eventually(
        "every line committed after the restart",
        Duration::from_secs(120),
        || async {
            admin
                .offsets_at("eos", 0, runnel_client::IsolationLevel::ReadCommitted)
                .await
                .is_ok_and(|(_, lso)| lso >= total as i64)
        },
    )
    .await;
    let got = read_committed(&cluster, "eos").await;
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for l in &got {
        *counts.entry(l).or_default() += 1;
    }
    for l in &numbered(0, total) {
        assert_eq!(
            counts.get(l),
            Some(&1),
            "{l} is in the topic {:?} times",
            counts.get(l)
        );
    }
    assert_eq!(got.len(), total, "only input lines, each once");
    let (_, end) = admin.offsets("eos", 0).await.unwrap();
    println!(
        "exactly-once source: {total} lines once each (read_committed); the log holds {end} offsets with markers and the killed task's aborted records"
    );
    w.shutdown().await;
    cluster.shutdown().await;
}
