//! `runnel bench transactions`: what transactions cost, side by side in
//! one run — transactional produce (a commit every `--commit-interval-ms`)
//! against idempotent produce of the same records; read_committed against
//! read_uncommitted consume of the same log with a share of its
//! transactions aborted; and commit latency at a steady commit rate.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use runnel_client::{
    Acks, Cluster, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use tokio::time::Instant;

use super::{ensure_topic, histogram, payloads, print_latency, unique};
use crate::outln;

/// `runnel bench transactions` options.
#[derive(Debug, Clone, clap::Args)]
pub struct TransactionsArgs {
    /// Records each producer run sends.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Partitions of the benchmark topics (when created).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// How often the transactional producer commits.
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
    /// Rounds of the produce comparison (alternating, so both see the same machine).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Records in each transaction of the consume comparison's log.
    #[arg(long, default_value_t = 1000)]
    records_per_txn: u64,
    /// Share of that log's transactions that abort.
    #[arg(long, default_value_t = 0.1)]
    abort_ratio: f64,
    /// Commits per second of the latency run.
    #[arg(long, default_value_t = 100)]
    commit_rate: u64,
    /// Commits the latency run measures.
    #[arg(long, default_value_t = 2000)]
    commits: u64,
    /// Records each commit of the latency run carries.
    #[arg(long, default_value_t = 10)]
    records_per_commit: u64,
    /// Producer batch.size in bytes.
    #[arg(long, default_value_t = 262_144)]
    batch_size: usize,
    /// Topic prefix (each part uses its own new topic).
    #[arg(long, default_value = "runnel-bench-txn")]
    topic: String,
}

fn producer(cluster: &Arc<Cluster>, args: &TransactionsArgs, txn: Option<String>) -> Producer {
    Producer::with_cluster(
        Arc::clone(cluster),
        ProducerConfig {
            acks: Acks::All,
            batch_size: args.batch_size,
            linger: Duration::from_millis(5),
            max_request_size: args.batch_size.max(1_048_576) * 4,
            enable_idempotence: true,
            transactional_id: txn,
            ..ProducerConfig::default()
        },
    )
}

/// Sends `args.records` records to `topic`; transactional when `txn` is
/// set (committing every `args.commit_interval_ms`). Returns the time taken.
async fn produce_run(
    cluster: &Arc<Cluster>,
    args: &TransactionsArgs,
    topic: &str,
    txn: Option<String>,
) -> anyhow::Result<Duration> {
    let transactional = txn.is_some();
    let p = producer(cluster, args, txn);
    if transactional {
        p.init_transactions().await?;
        p.begin_transaction()?;
    }
    let values = payloads(args.record_size);
    let interval = Duration::from_millis(args.commit_interval_ms.max(1));
    let start = Instant::now();
    let mut next_commit = start + interval;
    for i in 0..args.records {
        let value = values[(i % values.len() as u64) as usize].clone();
        p.send(ProducerRecord::new(topic, value)).await?;
        if transactional && Instant::now() >= next_commit {
            p.commit_transaction().await?;
            p.begin_transaction()?;
            next_commit = Instant::now() + interval;
        }
    }
    if transactional {
        p.commit_transaction().await?;
    } else {
        p.flush().await?;
    }
    let elapsed = start.elapsed();
    let failed = p.failed_records();
    p.close().await?;
    if failed > 0 {
        bail!("{failed} records were not acknowledged");
    }
    Ok(elapsed)
}

/// Fills `topic` with transactions of `args.records_per_txn` records, of
/// which a share `args.abort_ratio` abort. Returns (records written,
/// records committed).
async fn fill_with_aborts(
    cluster: &Arc<Cluster>,
    args: &TransactionsArgs,
    topic: &str,
) -> anyhow::Result<(u64, u64)> {
    let p = producer(cluster, args, Some(unique("runnel-bench-fill")));
    p.init_transactions().await?;
    let values = payloads(args.record_size);
    let per_txn = args.records_per_txn.max(1);
    let txns = args.records.div_ceil(per_txn);
    // Every k-th transaction aborts: spread evenly through the log.
    let every = if args.abort_ratio > 0.0 {
        (1.0 / args.abort_ratio).round().max(1.0) as u64
    } else {
        u64::MAX
    };
    let (mut written, mut committed) = (0, 0);
    for t in 0..txns {
        p.begin_transaction()?;
        let n = per_txn.min(args.records - written);
        for i in 0..n {
            let value = values[(i % values.len() as u64) as usize].clone();
            p.send(ProducerRecord::new(topic, value)).await?;
        }
        written += n;
        if (t + 1) % every == 0 {
            p.flush().await?;
            p.abort_transaction().await?;
        } else {
            p.commit_transaction().await?;
            committed += n;
        }
    }
    p.close().await?;
    Ok((written, committed))
}

/// Reads `topic` from the start at `level` until `expected` records came.
async fn consume_run(
    cluster: &Arc<Cluster>,
    topic: &str,
    level: IsolationLevel,
    expected: u64,
) -> anyhow::Result<Duration> {
    let mut consumer = Consumer::with_cluster(
        Arc::clone(cluster),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 100_000,
            isolation_level: level,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(consumer.partitions_of(topic).await?)
        .await?;
    let start = Instant::now();
    let mut records = 0u64;
    while records < expected {
        let batch = consumer.poll(Duration::from_secs(5)).await?;
        if batch.is_empty() {
            bail!("no records arrived for 5 s after {records} of {expected}");
        }
        records += batch.len() as u64;
    }
    let elapsed = start.elapsed();
    if records != expected {
        bail!("read {records} records at {level:?}, expected {expected}");
    }
    Ok(elapsed)
}

/// Commits `args.commits` small transactions at `args.commit_rate` a
/// second; returns the commit latencies (µs).
async fn commit_latency(
    cluster: &Arc<Cluster>,
    args: &TransactionsArgs,
    topic: &str,
) -> anyhow::Result<Histogram<u64>> {
    let p = producer(cluster, args, Some(unique("runnel-bench-commit")));
    p.init_transactions().await?;
    let values = payloads(args.record_size);
    let period = Duration::from_secs_f64(1.0 / args.commit_rate.max(1) as f64);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut h = histogram();
    for c in 0..args.commits {
        ticks.tick().await;
        p.begin_transaction()?;
        for i in 0..args.records_per_commit {
            let value: Bytes = values[((c + i) % values.len() as u64) as usize].clone();
            p.send(ProducerRecord::new(topic, value)).await?;
        }
        let t = Instant::now();
        p.commit_transaction().await?;
        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
    }
    p.close().await?;
    Ok(h)
}

/// Runs the three comparisons and prints one line per result.
pub async fn run(cluster: Arc<Cluster>, args: TransactionsArgs) -> anyhow::Result<()> {
    let rate = |records: u64, d: Duration| records as f64 / d.as_secs_f64().max(1e-9);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };

    // 1. Transactional against idempotent produce.
    let topic = unique(&format!("{}-produce", args.topic));
    ensure_topic(&cluster, &topic, args.partitions).await?;
    let (mut idem, mut txn) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds.max(1) {
        let i = rate(
            args.records,
            produce_run(&cluster, &args, &topic, None).await?,
        );
        let t = rate(
            args.records,
            produce_run(&cluster, &args, &topic, Some(unique("runnel-bench-txn"))).await?,
        );
        outln!("round {round}: idempotent {i:.0} records/s, transactional {t:.0} records/s")?;
        idem.push(i);
        txn.push(t);
    }
    let (i, t) = (median(&mut idem), median(&mut txn));
    outln!(
        "produce: {} records ({} B) x {} rounds, {} partitions, acks=all, commit every {} ms",
        args.records,
        args.record_size,
        args.rounds.max(1),
        args.partitions,
        args.commit_interval_ms
    )?;
    outln!(
        "median: idempotent {i:.0} records/s, transactional {t:.0} records/s, transactional/idempotent {:.2}",
        t / i
    )?;

    // 2. read_committed against read_uncommitted over aborted transactions.
    let topic = unique(&format!("{}-consume", args.topic));
    ensure_topic(&cluster, &topic, args.partitions).await?;
    let (written, committed) = fill_with_aborts(&cluster, &args, &topic)
        .await
        .context("filling the consume benchmark's topic")?;
    let (mut unc, mut com) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds.max(1) {
        let u = consume_run(&cluster, &topic, IsolationLevel::ReadUncommitted, written).await?;
        let c = consume_run(&cluster, &topic, IsolationLevel::ReadCommitted, committed).await?;
        // Both read the same log to its end: compare log records scanned per second.
        let (u, c) = (rate(written, u), rate(written, c));
        outln!(
            "round {round}: read_uncommitted {u:.0} log records/s, read_committed {c:.0} log records/s"
        )?;
        unc.push(u);
        com.push(c);
    }
    let (u, c) = (median(&mut unc), median(&mut com));
    outln!(
        "consume: {written} records in transactions of {}, {committed} committed ({:.0}% aborted), {} partitions",
        args.records_per_txn,
        100.0 * (written - committed) as f64 / written.max(1) as f64,
        args.partitions
    )?;
    outln!(
        "median: read_uncommitted {u:.0} log records/s, read_committed {c:.0} log records/s, read_committed/read_uncommitted {:.2}",
        c / u
    )?;

    // 3. Commit latency at a steady rate.
    let topic = unique(&format!("{}-commit", args.topic));
    ensure_topic(&cluster, &topic, args.partitions).await?;
    let h = commit_latency(&cluster, &args, &topic).await?;
    outln!(
        "commit: {} commits at {} commits/s, {} records each",
        args.commits,
        args.commit_rate,
        args.records_per_commit
    )?;
    print_latency("commit latency", &h)?;
    Ok(())
}
