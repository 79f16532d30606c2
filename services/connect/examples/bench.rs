//! Connect throughput against plain single-process copies of the same data,
//! measured side by side in one run on one in-process cluster.
//!
//! - file → Runnel → file: a FileStreamSource and a FileStreamSink on one
//!   worker, from the connector's creation until the last line is in the
//!   output file; against (a) one process that produces the file's lines
//!   with the Runnel client and consumes them into a file (the bound of
//!   anything going through Runnel) and (b) a plain line-by-line file copy
//!   (the physical bound).
//! - topic → PostgreSQL: a PostgresSink draining a topic of JSON records into
//!   a table; against one process that reads the same records from a file
//!   and inserts them with the same batched statement (3000 rows per
//!   transaction), and against `COPY`.
//!
//! `cargo run --release -p runnel-connect --example bench -- [RECORDS] [PG_ROWS]`
//! (defaults 1000000 and 200000); the PostgreSQL part needs
//! `RUNNEL_TEST_POSTGRES_URL` (`scripts/postgres start` prints one).

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use runnel_client::{
    GroupConfig, GroupConsumer, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use runnel_common::http::HttpClient;
use runnel_common::shutdown::CancellationToken;
use runnel_testkit::TestCluster;
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool, Row};

fn line(i: usize) -> String {
    // About 100 bytes, like the other benchmarks' records.
    format!("{i:010} {}", "x".repeat(89))
}

async fn rest(addr: std::net::SocketAddr, method: &str, path: &str, body: serde_json::Value) {
    let r = HttpClient::new()
        .request(
            method,
            &format!("http://{addr}{path}"),
            Some(Bytes::from(body.to_string())),
            &[],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text());
}

async fn wait_len(path: &Path, len: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < len {
        assert!(
            Instant::now() < deadline,
            "{} never reached {len} bytes",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let records: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let pg_rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for i in 0..records {
            writeln!(w, "{}", line(i)).unwrap();
        }
    }
    let len = std::fs::metadata(&input).unwrap().len();
    println!("input: {records} lines, {} MB", len / 1_000_000);
    let cluster = TestCluster::builder().coordinators(1).start().await;

    // (b) the physical bound: a plain line-by-line copy, synced.
    let t = Instant::now();
    {
        let raw = dir.path().join("raw.txt");
        let r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&input).unwrap());
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&raw).unwrap());
        for l in r.lines() {
            w.write_all(l.unwrap().as_bytes()).unwrap();
            w.write_all(b"\n").unwrap();
        }
        w.into_inner().unwrap().sync_all().unwrap();
    }
    let raw_copy = t.elapsed();

    // (a) one process through Runnel with the plain client: produce the
    // lines (acks=all), consume them into a file.
    let t = Instant::now();
    {
        let producer = Producer::with_cluster(cluster.client(), ProducerConfig::default());
        let out = dir.path().join("client.txt");
        let mut config = GroupConfig::new("bench-client-copy");
        config.consumer.auto_offset_reset = OffsetReset::Earliest;
        config.consumer.max_poll_records = 10_000;
        let mut consumer = GroupConsumer::with_cluster(cluster.client(), config);
        consumer.subscribe(vec!["client-copy".into()]);
        let reader = tokio::spawn({
            let out = out.clone();
            async move {
                let mut w = std::io::BufWriter::with_capacity(
                    1 << 20,
                    std::fs::File::create(&out).unwrap(),
                );
                let mut n = 0;
                while n < records {
                    for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
                        w.write_all(r.value.as_deref().unwrap_or_default()).unwrap();
                        w.write_all(b"\n").unwrap();
                        n += 1;
                    }
                    w.flush().unwrap();
                }
                w.into_inner().unwrap().sync_all().unwrap();
                let _ = consumer.close().await;
            }
        });
        let r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&input).unwrap());
        let mut acks = Vec::new();
        for l in r.lines() {
            let d = producer
                .send(ProducerRecord::new("client-copy", Bytes::from(l.unwrap())))
                .await
                .unwrap();
            acks.push(d);
        }
        for a in acks {
            a.await.unwrap();
        }
        reader.await.unwrap();
    }
    let client_copy = t.elapsed();

    // The connectors.
    let worker = runnel_connect::start(
        runnel_connect::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            bootstrap: cluster.bootstrap(),
            storage_replication_factor: 1,
            ..runnel_connect::Config::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let out = dir.path().join("connect.txt");
    let t = Instant::now();
    rest(worker.rest_addr, "PUT", "/connectors/bench-in/config", json!({
        "connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "connect-copy",
        "value.converter": "string", "batch.size": "10000",
    })).await;
    rest(worker.rest_addr, "PUT", "/connectors/bench-out/config", json!({
        "connector.class": "FileStreamSink", "file": out.to_str().unwrap(), "topics": "connect-copy",
        "value.converter": "string",
    })).await;
    wait_len(&out, len, Duration::from_secs(600)).await;
    let connect_copy = t.elapsed();
    println!();
    println!("file -> Runnel -> file, {records} lines of ~100 B");
    println!(
        "  connect (FileStreamSource + FileStreamSink) {:>10.0} lines/s  {:>6.2} s",
        rate(records, connect_copy),
        connect_copy.as_secs_f64()
    );
    println!(
        "  plain client, one process (bound)           {:>10.0} lines/s  {:>6.2} s  connect/bound {:.2}",
        rate(records, client_copy),
        client_copy.as_secs_f64(),
        client_copy.as_secs_f64() / connect_copy.as_secs_f64()
    );
    println!(
        "  plain file copy (physical bound)            {:>10.0} lines/s  {:>6.2} s  connect/bound {:.3}",
        rate(records, raw_copy),
        raw_copy.as_secs_f64(),
        raw_copy.as_secs_f64() / connect_copy.as_secs_f64()
    );

    let Ok(url) = std::env::var("RUNNEL_TEST_POSTGRES_URL") else {
        println!(
            "\nPostgreSQL part skipped: set RUNNEL_TEST_POSTGRES_URL (scripts/postgres start)"
        );
        worker.shutdown().await;
        cluster.shutdown().await;
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    for sql in [
        "DROP SCHEMA IF EXISTS bench CASCADE",
        "CREATE SCHEMA bench",
        "CREATE TABLE bench.bound (id BIGINT PRIMARY KEY, item TEXT, qty BIGINT)",
        "CREATE TABLE bench.copy (id BIGINT PRIMARY KEY, item TEXT, qty BIGINT)",
        "CREATE TABLE bench.sink (id BIGINT PRIMARY KEY, item TEXT, qty BIGINT)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let docs: Vec<String> = (0..pg_rows)
        .map(|i| {
            json!({"id": i, "item": format!("item {i} {}", "y".repeat(40)), "qty": i % 100})
                .to_string()
        })
        .collect();
    // The records go to a topic first; the sink is timed draining it.
    let producer = Producer::with_cluster(cluster.client(), ProducerConfig::default());
    let mut acks = Vec::new();
    for d in &docs {
        acks.push(
            producer
                .send(ProducerRecord::new("pg-rows", Bytes::from(d.clone())))
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    // The bound: the same rows from memory, the same statement, 3000 per transaction.
    let t = Instant::now();
    for chunk in docs.chunks(3000) {
        let array = format!("[{}]", chunk.join(","));
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO bench.bound (id, item, qty) SELECT id, item, qty FROM jsonb_populate_recordset(NULL::bench.bound, $1::jsonb)")
            .bind(array)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let bound = t.elapsed();
    // COPY, the fastest way in.
    let t = Instant::now();
    {
        let mut conn = pool.acquire().await.unwrap();
        let mut copy = conn
            .copy_in_raw("COPY bench.copy (id, item, qty) FROM STDIN")
            .await
            .unwrap();
        let mut text = String::with_capacity(pg_rows * 64);
        for i in 0..pg_rows {
            text.push_str(&format!("{i}\titem {i} {}\t{}\n", "y".repeat(40), i % 100));
        }
        copy.send(text.into_bytes()).await.unwrap();
        copy.finish().await.unwrap();
    }
    let copy = t.elapsed();
    let t = Instant::now();
    rest(worker.rest_addr, "PUT", "/connectors/bench-pg/config", json!({
        "connector.class": "PostgresSink", "topics": "pg-rows", "connection.url": url,
        "table.name.format": "bench.sink", "value.converter": "json", "value.converter.schemas.enable": "false",
    })).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n: i64 = sqlx::query(AssertSqlSafe("SELECT count(*) FROM bench.sink".to_owned()))
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        if n as usize >= pg_rows {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink wrote {n} of {pg_rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sink = t.elapsed();
    println!();
    println!("topic -> PostgreSQL, {pg_rows} JSON records of ~80 B");
    println!(
        "  connect (PostgresSink)                       {:>10.0} rows/s  {:>6.2} s",
        rate(pg_rows, sink),
        sink.as_secs_f64()
    );
    println!(
        "  same batched INSERT, one process (bound)     {:>10.0} rows/s  {:>6.2} s  connect/bound {:.2}",
        rate(pg_rows, bound),
        bound.as_secs_f64(),
        bound.as_secs_f64() / sink.as_secs_f64()
    );
    println!(
        "  COPY (physical bound)                        {:>10.0} rows/s  {:>6.2} s  connect/bound {:.2}",
        rate(pg_rows, copy),
        copy.as_secs_f64(),
        copy.as_secs_f64() / sink.as_secs_f64()
    );
    worker.shutdown().await;
    cluster.shutdown().await;
}
