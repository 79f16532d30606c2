//! The PostgreSQL connectors against a real server (`scripts/test` starts
//! one from Debian's package): file → topic → table with upserts, deletes
//! and a dead-letter topic; tables → topic in both modes; an unreachable
//! database failing the task until a REST restart once it is back.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Switch, append, eventually, postgres_url, read_topic, rest, states, worker, worker_config,
};
use runnel_testkit::TestCluster;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgPool, Row};

/// A fresh schema per test, so tests share the server without meeting.
async fn schema(url: &str, name: &str) -> (PgPool, String) {
    let pool = PgPool::connect(url).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {name} CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&pool)
        .await
        .unwrap();
    (pool, name.to_owned())
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_to_topic_to_postgres_with_upserts_deletes_and_a_dead_letter_topic() {
    let Some(url) = postgres_url() else { return };
    let (pool, s) = schema(&url, "sink_upsert").await;
    let cluster = TestCluster::builder().coordinators(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let mut lines: Vec<String> = (0..500)
        .map(|i| json!({"id": i, "item": format!("book {i}"), "qty": i % 7}).to_string())
        .collect();
    lines.push("this is not json".into());
    lines.extend(
        (0..100).map(|i| json!({"id": i, "item": format!("lamp {i}"), "qty": 1}).to_string()),
    );
    append(&input, lines);
    let w = worker(worker_config(&cluster, None)).await;
    let (code, body) = rest(&w, "PUT", "/connectors/orders-in/config", Some(json!({
        "connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "orders",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
    }))).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = rest(&w, "PUT", "/connectors/orders-db/config", Some(json!({
        "connector.class": "PostgresSink", "topics": "orders", "connection.url": url,
        "table.name.format": format!("{s}.${{topic}}"),
        "insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "id", "auto.create": "true",
        "value.converter": "json", "value.converter.schemas.enable": "false",
        "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "orders-dlq",
        "errors.deadletterqueue.context.headers.enable": "true", "errors.deadletterqueue.topic.replication.factor": "1",
    }))).await;
    assert_eq!(code, 201, "{body}");
    eventually(
        "500 rows, the first 100 updated",
        Duration::from_secs(60),
        || async {
            count(
                &pool,
                &format!("SELECT count(*) FROM {s}.orders WHERE item LIKE 'lamp%'"),
            )
            .await
                == 100
                && count(&pool, &format!("SELECT count(*) FROM {s}.orders")).await == 500
        },
    )
    .await;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT item, qty FROM {s}.orders WHERE id = 250"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "book 250");
    assert_eq!(row.get::<i64, _>(1), 250 % 7);
    // The line that is not JSON went to the dead-letter topic, with why.
    let dlq = read_topic(&cluster, "orders-dlq", 1, Duration::from_secs(30)).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].value.as_deref(), Some(&b"this is not json"[..]));
    let why = dlq[0]
        .headers
        .iter()
        .find(|h| &h.key[..] == b"__connect.errors.exception.message")
        .unwrap();
    assert!(String::from_utf8_lossy(why.value.as_deref().unwrap()).contains("not JSON"));
    assert_eq!(states(&w, "orders-db").await.1[0].0, "RUNNING");
    w.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_delete_rows_and_a_bad_record_fails_the_task_without_tolerance() {
    let Some(url) = postgres_url() else { return };
    let (pool, s) = schema(&url, "sink_keys").await;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {s}.users (id BIGINT PRIMARY KEY, name TEXT NOT NULL)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let cluster = TestCluster::builder().coordinators(1).start().await;
    let producer = runnel_client::Producer::with_cluster(
        cluster.client(),
        runnel_client::ProducerConfig::default(),
    );
    let send = |key: Value, value: Option<Value>| {
        let mut r = runnel_client::ProducerRecord::new("users", bytes::Bytes::new())
            .key(bytes::Bytes::from(key.to_string()));
        r.value = value.map(|v| bytes::Bytes::from(v.to_string()));
        r
    };
    for i in 0..20 {
        producer
            .send(send(
                json!({"id": i}),
                Some(json!({"name": format!("user {i}")})),
            ))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for i in 0..5 {
        producer
            .send(send(json!({"id": i}), None))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let w = worker(worker_config(&cluster, None)).await;
    let (code, body) = rest(&w, "PUT", "/connectors/users-db/config", Some(json!({
        "connector.class": "PostgresSink", "topics": "users", "connection.url": url,
        "table.name.format": format!("{s}.users"), "insert.mode": "upsert", "pk.mode": "record_key",
        "delete.enabled": "true", "key.converter": "json", "key.converter.schemas.enable": "false",
        "value.converter": "json", "value.converter.schemas.enable": "false",
    }))).await;
    assert_eq!(code, 201, "{body}");
    eventually(
        "15 users left after 5 deletes",
        Duration::from_secs(60),
        || async {
            count(&pool, &format!("SELECT count(*) FROM {s}.users")).await == 15
                && count(
                    &pool,
                    &format!("SELECT count(*) FROM {s}.users WHERE id < 5"),
                )
                .await
                    == 0
        },
    )
    .await;
    // A record the table refuses (no name: NOT NULL) with errors.tolerance=none fails the task.
    producer
        .send(send(json!({"id": 99}), Some(json!({"nickname": "x"}))))
        .await
        .unwrap()
        .await
        .unwrap();
    eventually(
        "the task failed with the database's reason",
        Duration::from_secs(60),
        || async {
            let (_, v) = rest(&w, "GET", "/connectors/users-db/status", None).await;
            v["tasks"][0]["state"] == "FAILED"
                && v["tasks"][0]["trace"]
                    .as_str()
                    .is_some_and(|t| t.contains("null value in column"))
        },
    )
    .await;
    w.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_to_topics_in_incrementing_and_timestamp_modes() {
    let Some(url) = postgres_url() else { return };
    let (pool, s) = schema(&url, "source_tables").await;
    for ddl in [
        format!(
            "CREATE TABLE {s}.events (id BIGSERIAL PRIMARY KEY, kind TEXT, amount NUMERIC(10,2), at DATE)"
        ),
        format!(
            "CREATE TABLE {s}.accounts (name TEXT PRIMARY KEY, balance BIGINT, updated TIMESTAMPTZ NOT NULL DEFAULT now())"
        ),
    ] {
        sqlx::query(AssertSqlSafe(ddl))
            .execute(&pool)
            .await
            .unwrap();
    }
    for i in 0..30 {
        sqlx::query(AssertSqlSafe(format!("INSERT INTO {s}.events (kind, amount, at) VALUES ('k{i}', {i}.5, DATE '2026-01-01' + {i})"))).execute(&pool).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("INSERT INTO {s}.accounts (name, balance, updated) VALUES ('a{i}', {i}, now() - interval '1 hour' + {i} * interval '1 second')"))).execute(&pool).await.unwrap();
    }
    let cluster = TestCluster::builder().coordinators(1).start().await;
    let w = worker(worker_config(&cluster, None)).await;
    let base = json!({"connector.class": "PostgresSource", "connection.url": url, "topic.prefix": "pg-", "poll.interval.ms": "200", "batch.max.rows": "7"});
    let mut inc = base.clone();
    inc["mode"] = json!("incrementing");
    inc["incrementing.column.name"] = json!("id");
    inc["table.whitelist"] = json!(format!("{s}.events"));
    let mut ts = base.clone();
    ts["mode"] = json!("timestamp");
    ts["timestamp.column.name"] = json!("updated");
    ts["table.whitelist"] = json!(format!("{s}.accounts"));
    for (name, cfg) in [("events-src", inc), ("accounts-src", ts)] {
        let (code, body) = rest(&w, "PUT", &format!("/connectors/{name}/config"), Some(cfg)).await;
        assert_eq!(code, 201, "{body}");
    }
    let events = read_topic(&cluster, "pg-events", 30, Duration::from_secs(60)).await;
    assert_eq!(events.len(), 30);
    let first: Value = serde_json::from_slice(events[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(first["payload"]["kind"], "k0");
    assert_eq!(first["payload"]["amount"], 0.5);
    assert_eq!(first["payload"]["at"], 20454, "days since the epoch");
    assert_eq!(first["schema"]["type"], "struct");
    // New rows follow, and nothing is read twice.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {s}.events (kind) VALUES ('late')"
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {s}.accounts SET balance = 1000, updated = now() WHERE name = 'a3'"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let events = read_topic(&cluster, "pg-events", 31, Duration::from_secs(60)).await;
    assert_eq!(events.len(), 31);
    let accounts = read_topic(&cluster, "pg-accounts", 31, Duration::from_secs(60)).await;
    assert_eq!(accounts.len(), 31, "30 rows and one update");
    let last: Value = serde_json::from_slice(accounts[30].value.as_deref().unwrap()).unwrap();
    assert_eq!(last["payload"]["name"], "a3");
    assert_eq!(last["payload"]["balance"], 1000);
    // A restart resumes after the committed offsets: no row again.
    w.shutdown().await;
    let w = worker(worker_config(&cluster, None)).await;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {s}.events (kind) VALUES ('after restart')"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let events = read_topic(&cluster, "pg-events", 33, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 32, "only the new row after the restart");
    w.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_the_task_and_a_restart_recovers_it() {
    let Some(url) = postgres_url() else { return };
    let (pool, s) = schema(&url, "sink_down").await;
    let upstream = url
        .split('@')
        .nth(1)
        .and_then(|h| h.split('/').next())
        .unwrap()
        .to_owned();
    let switch = Switch::to(upstream.clone()).await;
    let via_switch = url.replace(&upstream, &switch.addr.to_string());
    let cluster = TestCluster::builder().coordinators(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    append(&input, (0..50).map(|i| json!({"id": i}).to_string()));
    let w = worker(worker_config(&cluster, None)).await;
    rest(&w, "PUT", "/connectors/in/config", Some(json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "ids", "value.converter": "string"}))).await;
    let (code, body) = rest(
        &w,
        "PUT",
        "/connectors/ids-db/config",
        Some(json!({
            "connector.class": "PostgresSink", "topics": "ids", "connection.url": via_switch,
            "table.name.format": format!("{s}.ids"), "auto.create": "true",
            "connection.attempts": "2", "connection.backoff.ms": "100",
            "value.converter": "json", "value.converter.schemas.enable": "false",
        })),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    eventually(
        "the task FAILED with a trace",
        Duration::from_secs(60),
        || async {
            let (_, v) = rest(&w, "GET", "/connectors/ids-db/status", None).await;
            v["tasks"][0]["state"] == "FAILED"
                && v["tasks"][0]["trace"]
                    .as_str()
                    .is_some_and(|t| t.contains("cannot connect to PostgreSQL"))
        },
    )
    .await;
    switch.set(true);
    let (code, _) = rest(
        &w,
        "POST",
        "/connectors/ids-db/restart?includeTasks=true&onlyFailed=true",
        None,
    )
    .await;
    assert_eq!(code, 202);
    eventually(
        "every row written after the restart",
        Duration::from_secs(60),
        || async { count(&pool, &format!("SELECT count(*) FROM {s}.ids")).await == 50 },
    )
    .await;
    assert_eq!(states(&w, "ids-db").await.1[0].0, "RUNNING");
    w.shutdown().await;
    cluster.shutdown().await;
}
