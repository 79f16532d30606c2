//! The HTTP sink against a local HTTP server: batches arrive as JSON
//! arrays, 5xx answers are retried, records the server refuses go to the
//! dead-letter topic.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::{append, eventually, read_topic, rest, states, worker, worker_config};
use parking_lot::Mutex;
use runnel_testkit::TestCluster;
use serde_json::{Value, json};

#[derive(Default)]
struct Received {
    values: Vec<Value>,
    requests: usize,
    failures_left: usize,
}

async fn receive(State(r): State<Arc<Mutex<Received>>>, body: String) -> StatusCode {
    let mut r = r.lock();
    r.requests += 1;
    if r.failures_left > 0 {
        r.failures_left -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(Value::Array(values)) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if values.iter().any(|v| v["bad"] == true) {
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    r.values.extend(values);
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_posted_retried_and_refused_records_dead_lettered() {
    let received = Arc::new(Mutex::new(Received {
        failures_left: 2,
        ..Received::default()
    }));
    let app = Router::new()
        .route("/events", post(receive))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cluster = TestCluster::builder().coordinators(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let mut lines: Vec<String> = (0..300).map(|i| json!({"n": i}).to_string()).collect();
    lines.insert(150, json!({"n": -1, "bad": true}).to_string());
    append(&input, lines);
    let w = worker(worker_config(&cluster, None)).await;
    rest(&w, "PUT", "/connectors/events-in/config", Some(json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "events", "value.converter": "string"}))).await;
    let (code, body) = rest(&w, "PUT", "/connectors/events-http/config", Some(json!({
        "connector.class": "HttpSink", "topics": "events", "http.api.url": format!("http://{addr}/events"),
        "batch.max.size": "50", "retry.backoff.ms": "50", "headers": "X-Source: runnel",
        "value.converter": "json", "value.converter.schemas.enable": "false",
        "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "events-dlq",
        "errors.deadletterqueue.topic.replication.factor": "1",
    }))).await;
    assert_eq!(code, 201, "{body}");
    eventually(
        "every good record posted",
        Duration::from_secs(60),
        || async { received.lock().values.len() >= 300 },
    )
    .await;
    let got: Vec<i64> = received
        .lock()
        .values
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique, (0..300).collect::<Vec<_>>());
    assert!(
        received.lock().requests >= 2 + 300 / 50,
        "5xx answers were retried"
    );
    let dlq = read_topic(&cluster, "events-dlq", 1, Duration::from_secs(30)).await;
    assert_eq!(dlq.len(), 1);
    let refused: Value = serde_json::from_slice(dlq[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(refused["bad"], true);
    assert_eq!(states(&w, "events-http").await.1[0].0, "RUNNING");

    // With nowhere to send them (errors.tolerance=none), a refused record fails the task.
    let (code, _) = rest(&w, "PUT", "/connectors/strict/config", Some(json!({
        "connector.class": "HttpSink", "topics": "events", "http.api.url": format!("http://{addr}/events"),
        "value.converter": "json", "value.converter.schemas.enable": "false",
    }))).await;
    assert_eq!(code, 201);
    eventually(
        "the strict sink failed",
        Duration::from_secs(60),
        || async {
            let (_, v) = rest(&w, "GET", "/connectors/strict/status", None).await;
            v["tasks"][0]["state"] == "FAILED"
                && v["tasks"][0]["trace"]
                    .as_str()
                    .is_some_and(|t| t.contains("422"))
        },
    )
    .await;
    w.shutdown().await;
    cluster.shutdown().await;
}
