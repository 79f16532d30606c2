//! What the connect tests share: a worker on ephemeral ports against a
//! test cluster, and calls to its REST API.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use runnel_common::http::HttpClient;
use runnel_common::shutdown::CancellationToken;
use runnel_connect::{Config, ConnectHandle};
use runnel_testkit::TestCluster;
use serde_json::Value;

/// A worker config for tests: short intervals, loopback ports.
pub fn worker_config(cluster: &TestCluster, connectors_dir: Option<&Path>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        bootstrap: cluster.bootstrap(),
        offset_flush_interval_ms: 200,
        session_timeout_ms: 3_000,
        heartbeat_interval_ms: 300,
        rebalance_timeout_ms: 10_000,
        consumer_session_timeout_ms: 3_000,
        consumer_heartbeat_interval_ms: 300,
        connectors_dir: connectors_dir.map(Path::to_path_buf),
        ..Config::default()
    }
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Starts a worker.
pub async fn worker(config: Config) -> ConnectHandle {
    logs();
    runnel_connect::start(config, CancellationToken::new())
        .await
        .expect("the worker starts")
}

/// A REST call: status and JSON body (Null when empty).
pub async fn rest(
    handle: &ConnectHandle,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", handle.rest_addr);
    let client = HttpClient::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .request(
                method,
                &url,
                body.as_ref().map(|b| Bytes::from(b.to_string())),
                &[],
                Duration::from_secs(10),
            )
            .await;
        match r {
            Ok(r) => {
                let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                return (r.status, v);
            }
            // The REST API comes up once the internal topics are read.
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }
}

/// Waits until `check` holds, or fails naming `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lines of a file (none if it does not exist).
pub fn lines(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Appends lines to a file.
pub fn append(path: &PathBuf, lines: impl IntoIterator<Item = String>) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    f.write_all(text.as_bytes()).unwrap();
}

/// The states of a connector and its tasks, from `GET .../status`.
pub async fn states(handle: &ConnectHandle, name: &str) -> (String, Vec<(String, String)>) {
    let (_, v) = rest(handle, "GET", &format!("/connectors/{name}/status"), None).await;
    let connector = v["connector"]["state"].as_str().unwrap_or("").to_owned();
    let tasks = v["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["state"].as_str().unwrap_or("").to_owned(),
                        t["worker_id"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (connector, tasks)
}

/// The test PostgreSQL server `scripts/test` starts (`RUNNEL_TEST_POSTGRES_URL`).
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("RUNNEL_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        eprintln!(
            "SKIPPED: no RUNNEL_TEST_POSTGRES_URL; scripts/test starts a PostgreSQL server and sets it"
        );
    }
    url
}

/// A TCP forwarder that can be switched off and on: the database (or any
/// server) behind it becomes unreachable and comes back.
#[derive(Clone)]
pub struct Switch {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Switch {
    /// Forwards a loopback port to `upstream` ("host:port"), starting off.
    pub async fn to(upstream: String) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let on = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = on.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Switch { addr, on }
    }

    /// Lets connections through (or not).
    pub fn set(&self, on: bool) {
        self.on.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Every record of a topic, read from the start until `n` have come or `limit` passes.
pub async fn read_topic(
    cluster: &TestCluster,
    topic: &str,
    n: usize,
    limit: Duration,
) -> Vec<runnel_client::ConsumerRecord> {
    let mut consumer = cluster.earliest_consumer();
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        if let Ok(parts) = consumer.partitions_of(topic).await {
            consumer.assign(parts).await.unwrap();
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "topic {topic} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while out.len() < n && tokio::time::Instant::now() < deadline {
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}
