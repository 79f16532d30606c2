//! Moving a partition under a replication throttle, side by side in one run.
//!
//! ```sh
//! cargo bench -p runnel-testkit --bench reassignment [-- MEGABYTES THROTTLE_MB_S...]
//! ```
//!
//! Three in-process brokers. Topic `bulk` (one partition on broker 1)
//! holds MEGABYTES (default 384) of 100 KB records; topic `live` (three
//! replicas, acks=all, idempotent) takes a steady 1,000 records of 1 KB a
//! second throughout. For each throttle (default: none, 24 and 8 MB/s),
//! `bulk` moves from broker 1 to broker 2 (and back for the next round):
//!
//! - how fast the move copied against the throttle set: as Kafka's
//!   replication quotas, the rate is taken over at least ten one-second
//!   windows (of eleven), so the first ten seconds' worth of the throttle
//!   crosses at once and the next bytes wait until the average is back
//!   under it; what a throttle promises is at most `rate × (t + 10 s)`
//!   bytes by time `t`, and the bench reports the bytes moved against that;
//! - the `live` producer's p50/p99 acknowledgement latency during the move
//!   against the seconds before it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use runnel_client::{Acks, Admin, NewTopic, Producer, ProducerConfig, ProducerRecord};
use runnel_testkit::TestCluster;

const BULK_RECORD: usize = 100_000;
const LIVE_RATE: u32 = 1_000;

/// Latencies of the `live` producer's records sent during `span`, sorted.
async fn live_latencies(producer: &Producer, span: Duration) -> Vec<Duration> {
    let mut pending = Vec::new();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < span {
        let due = start + Duration::from_secs_f64(f64::from(n) / f64::from(LIVE_RATE));
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        let d = producer
            .send(ProducerRecord::new("live", vec![b'l'; 1000]))
            .await
            .unwrap();
        pending.push(tokio::spawn(async move {
            d.await.unwrap();
            sent.elapsed()
        }));
        n += 1;
    }
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        out.push(p.await.unwrap());
    }
    out.sort_unstable();
    out
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

async fn set_throttle(admin: &Admin, from: i32, to: i32, rate: Option<u64>) {
    let keys = [
        "leader.replication.throttled.rate".to_owned(),
        "follower.replication.throttled.rate".to_owned(),
    ];
    match rate {
        Some(rate) => {
            admin
                .alter_configs(
                    "bulk",
                    &[
                        (
                            "leader.replication.throttled.replicas".into(),
                            format!("0:{from}"),
                        ),
                        (
                            "follower.replication.throttled.replicas".into(),
                            format!("0:{to}"),
                        ),
                    ],
                    &[],
                )
                .await
                .unwrap();
            let set: Vec<(String, String)> =
                keys.iter().map(|k| (k.clone(), rate.to_string())).collect();
            for b in [from, to] {
                admin
                    .alter_broker_configs(Some(b), &set, &[])
                    .await
                    .unwrap();
            }
        }
        None => {
            for b in [from, to] {
                admin
                    .alter_broker_configs(Some(b), &[], &keys)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Moves `bulk` to broker `to`; the seconds it took and the new replica's
/// progress (seconds, records copied) every 100 ms.
async fn timed_move(cluster: &TestCluster, admin: &Admin, to: i32) -> (f64, Vec<(f64, i64)>) {
    let start = Instant::now();
    let results = admin
        .alter_partition_reassignments(vec![("bulk".into(), 0, Some(vec![to]))])
        .await
        .unwrap();
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let mut progress = Vec::new();
    while !admin
        .list_partition_reassignments(None)
        .await
        .unwrap()
        .is_empty()
    {
        let copied = cluster
            .broker_logs((to - 1) as usize)
            .get("bulk", 0)
            .map_or(0, |p| p.log_end_offset());
        progress.push((start.elapsed().as_secs_f64(), copied));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (start.elapsed().as_secs_f64(), progress)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let megabytes: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(384);
    let throttles: Vec<Option<u64>> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|a| {
                a.parse::<u64>()
                    .ok()
                    .filter(|&t| t > 0)
                    .map(|t| t * 1_000_000)
            })
            .collect()
    } else {
        vec![None, Some(24_000_000), Some(8_000_000)]
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let cluster = TestCluster::builder().brokers(3).start().await;
        cluster
            .create_topic(NewTopic::new("bulk").assignments(vec![vec![1]]))
            .await;
        cluster
            .create_topic(NewTopic::new("live").partitions(1).replication_factor(3))
            .await;
        let admin = cluster.admin();
        let bulk = Producer::with_cluster(
            cluster.client(),
            ProducerConfig {
                acks: Acks::Leader,
                ..ProducerConfig::default()
            },
        );
        let records = megabytes * 1_000_000 / BULK_RECORD;
        let mut deliveries = Vec::new();
        for _ in 0..records {
            deliveries.push(
                bulk.send(ProducerRecord::new("bulk", vec![b'b'; BULK_RECORD]).partition(0))
                    .await
                    .unwrap(),
            );
        }
        for d in deliveries {
            d.await.unwrap();
        }
        bulk.close().await.unwrap();
        let live = Producer::with_cluster(
            cluster.client(),
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(1),
                ..ProducerConfig::default()
            },
        );
        println!(
            "moving {megabytes} MB ({records} records of {BULK_RECORD} B) between brokers 1 and 2; \
             live producer: {LIVE_RATE} records/s of 1 KB, acks=all, RF=3"
        );
        let (mut from, mut to) = (1, 2);
        for throttle in throttles {
            let before = live_latencies(&live, Duration::from_secs(5)).await;
            set_throttle(&admin, from, to, throttle).await;
            let moving = timed_move(&cluster, &admin, to);
            tokio::pin!(moving);
            let mut during = Vec::new();
            let (secs, progress) = loop {
                tokio::select! {
                    done = &mut moving => break done,
                    l = live_latencies(&live, Duration::from_millis(500)) => during.extend(l),
                }
            };
            during.sort_unstable();
            set_throttle(&admin, from, to, None).await;
            let mb_s = megabytes as f64 / secs;
            let label = throttle.map_or("none".to_owned(), |t| format!("{} MB/s", t / 1_000_000));
            let ratio = throttle.map_or(String::new(), |t| {
                // The most the throttle lets through by the end, and the
                // worst moment: copied against rate × (t + 10 s) at each sample.
                let allowed = t as f64 * (secs + 10.0) / 1e6;
                let worst = progress
                    .iter()
                    .map(|(at, n)| *n as f64 * BULK_RECORD as f64 / (t as f64 * (at + 10.0)))
                    .fold(0.0, f64::max);
                format!(
                    " ({:.2} of the throttle's rate x (time + 10 s) at the end, {worst:.2} at most at any sample)",
                    megabytes as f64 / allowed
                )
            });
            println!(
                "throttle {label}: moved at {mb_s:.1} MB/s{ratio} in {secs:.1} s; live p50 {:.1} -> {:.1} ms, p99 {:.1} -> {:.1} ms (x{:.2})",
                pct(&before, 0.5),
                pct(&during, 0.5),
                pct(&before, 0.99),
                pct(&during, 0.99),
                pct(&during, 0.99) / pct(&before, 0.99).max(f64::MIN_POSITIVE),
            );
            std::mem::swap(&mut from, &mut to);
        }
        live.close().await.unwrap();
        cluster.shutdown().await;
    });
}
