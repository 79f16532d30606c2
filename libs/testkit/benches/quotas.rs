//! Client quotas on the produce path, side by side in one run.
//!
//! ```sh
//! cargo bench -p runnel-testkit --bench quotas [-- RECORDS ROUNDS]
//! ```
//!
//! 1. What metering costs: two in-process clusters (SASL_PLAINTEXT, user
//!    `bench`), one without quotas, one with 1,000 quota entities and the
//!    bench user's own `producer_byte_rate` and `request_percentage` set far
//!    above what it sends, so every request is resolved, metered and timed
//!    but never throttled. They take the same pipelined Produce requests
//!    through their Kafka listeners in alternating rounds (6 partitions of
//!    100 records of 100 bytes a request, 5 in flight, acks=1).
//! 2. How close a throttled producer is held to its quota: user `capped`
//!    with `producer_byte_rate` of 4 MB/s produces flat out on one
//!    connection (the broker mutes it as KIP-219 says); once the quota
//!    windows' first burst is spent, the rate it gets against the quota.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod wire;

use std::time::{Duration, Instant};

use kafka_protocol::messages::AlterClientQuotasRequest;
use kafka_protocol::messages::alter_client_quotas_request::EntryData;
use runnel_client::{DEFAULT_ITERATIONS, NewTopic, ScramMechanism};
use runnel_testkit::TestCluster;
use runnel_testkit::kafka_wire::{KafkaConn, quota_entry};
use wire::{IN_FLIGHT, PARTITIONS, PRODUCE_VERSION, RECORDS_PER_BATCH, connect, produce_request};

const TOPIC: &str = "bench-quotas";
/// The throttled producer's quota, bytes a second.
const CAP: f64 = 4_000_000.0;

async fn set_quotas(conn: &mut KafkaConn, entries: Vec<EntryData>) {
    let answer = conn
        .call(
            1,
            &AlterClientQuotasRequest::default().with_entries(entries),
        )
        .await;
    assert!(
        answer.entries.iter().all(|e| e.error_code == 0),
        "{answer:?}"
    );
}

async fn cluster(quotas: bool) -> TestCluster {
    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .kafka_security_protocol("SASL_PLAINTEXT")
        .start()
        .await;
    let admin = cluster.admin();
    for user in ["bench", "capped"] {
        admin
            .upsert_scram_credential(
                user,
                ScramMechanism::ScramSha512,
                &format!("{user}-secret"),
                DEFAULT_ITERATIONS,
            )
            .await
            .unwrap();
    }
    admin
        .create_topic(NewTopic::new(TOPIC).partitions(PARTITIONS))
        .await
        .unwrap();
    if quotas {
        let mut conn = connect(&cluster, "bench", "bench-secret").await;
        let mut entries: Vec<EntryData> = (0..998)
            .map(|i| {
                quota_entry(
                    "user",
                    &format!("user-{i}"),
                    "producer_byte_rate",
                    1_000_000.0,
                )
            })
            .collect();
        entries.push(quota_entry("user", "bench", "producer_byte_rate", 1e12));
        entries.push(quota_entry("user", "bench", "request_percentage", 1e6));
        set_quotas(&mut conn, entries).await;
        set_quotas(
            &mut conn,
            vec![quota_entry("user", "capped", "producer_byte_rate", CAP)],
        )
        .await;
    }
    cluster
}

/// Produces flat out for `warm_up` and then `measure`, `IN_FLIGHT` at a
/// time: the bytes a second acknowledged during `measure`.
async fn flat_out(conn: &mut KafkaConn, warm_up: Duration, measure: Duration) -> f64 {
    let request = produce_request(TOPIC);
    let bytes: usize = request
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_ref().map(|r| r.len()))
        .sum();
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    let mut measured: Option<(Instant, usize)> = None;
    loop {
        if pending.len() == IN_FLIGHT {
            let id = pending.pop_front().unwrap();
            let _ = conn
                .receive::<kafka_protocol::messages::ProduceRequest>(PRODUCE_VERSION, id)
                .await;
            match &mut measured {
                Some((began, acked)) => {
                    *acked += bytes;
                    if began.elapsed() >= measure {
                        return *acked as f64 / began.elapsed().as_secs_f64();
                    }
                }
                None if start.elapsed() >= warm_up => measured = Some((Instant::now(), 0)),
                None => {}
            }
        }
        pending.push_back(conn.send(PRODUCE_VERSION, &request).await);
    }
}

fn main() {
    let (records, rounds) = wire::args(3_000_000, 3);
    let requests = records / (PARTITIONS as usize * RECORDS_PER_BATCH);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let open = cluster(false).await;
        let metered = cluster(true).await;
        let request = produce_request(TOPIC);
        let mut conns = [
            connect(&open, "bench", "bench-secret").await,
            connect(&metered, "bench", "bench-secret").await,
        ];
        let [none, with] = wire::side_by_side(
            &mut conns,
            ["no quotas", "1,000 quotas"],
            &request,
            requests,
            rounds,
        )
        .await;
        println!(
            "produce through the Kafka listener, {records} records x {rounds} rounds: no quotas {none:.0}/s, 1,000 quotas and the producer metered {with:.0}/s, ratio {:.3}",
            with / none
        );
        open.shutdown().await;

        // 11 windows of 1 s let a first burst through: past them, the rate
        // is what the quota allows.
        let mut capped = connect(&metered, "capped", "capped-secret").await;
        let got = flat_out(&mut capped, Duration::from_secs(15), Duration::from_secs(30)).await;
        println!(
            "producer_byte_rate {CAP:.0} B/s, produced flat out: {got:.0} B/s over 30 s after 15 s, ratio {:.3}",
            got / CAP
        );
        metered.shutdown().await;
    });
}
