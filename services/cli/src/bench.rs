//! `runnel bench produce|consume|e2e|group-consume|rebalance|commit|metadata|protocols|transactions`:
//! throughput and latency against a cluster.
//!
//! Results are plain lines on stdout (records/s, MB/s, latency percentiles
//! from an HDR histogram); a progress bar goes to stderr when it is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use runnel_client::{
    Acks, Admin, ClientConfig, Cluster, Compression, Consumer, ConsumerConfig, NewTopic,
    OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use std::sync::Mutex;
use tokio::time::Instant;

use crate::output::OutputError;
use crate::produce::{parse_acks, parse_compression};
use crate::{errln, outln};

mod groups;
mod metadata;
mod protocols;
mod transactions;

/// `runnel bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Producer throughput and acknowledgement latency.
    Produce(Args),
    /// Consumer throughput (produces the records first if the topic has too few).
    Consume(Args),
    /// End-to-end latency (produce to consume) at a fixed rate.
    E2e(E2eArgs),
    /// Consumer-group consume against assigned-partition consume of the same records.
    GroupConsume(groups::GroupConsumeArgs),
    /// Rebalance time of a group: members join, one more joins, one leaves.
    Rebalance(groups::RebalanceArgs),
    /// Offset-commit throughput and latency.
    Commit(groups::CommitArgs),
    /// The Kafka listener against the gRPC API: the same batches produced
    /// and fetched through each, side by side.
    Protocols(protocols::ProtocolsArgs),
    /// Metadata writes (topic creations) per second and their latency;
    /// with --kill-active, the controller failover time.
    Metadata(metadata::MetadataArgs),
    /// Transactions: transactional against idempotent produce,
    /// read_committed against read_uncommitted consume over aborted
    /// transactions, and commit latency at a steady rate.
    Transactions(transactions::TransactionsArgs),
}

/// Options shared by the benchmarks.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Records to send or read.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Partitions of the benchmark topic (when it is created).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    acks: Acks,
    /// Concurrent producers.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Topic to use (created if missing).
    #[arg(long, default_value = "runnel-bench")]
    topic: String,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    compression: Compression,
    /// Producer batch.size in bytes.
    #[arg(long, default_value_t = 262_144)]
    batch_size: usize,
    /// Producer linger.ms [default: 5; 0 for e2e, which measures latency].
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Producer enable.idempotence (in effect with --acks all).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    enable_idempotence: bool,
}

impl Args {
    fn linger(&self, default_ms: u64) -> Duration {
        Duration::from_millis(self.linger_ms.unwrap_or(default_ms))
    }
}

/// End-to-end options.
#[derive(Debug, Clone, clap::Args)]
pub struct E2eArgs {
    #[command(flatten)]
    base: Args,
    /// Records per second to send.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
}

/// Runs a benchmark.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::GroupConsume(args) => {
            groups::run_group_consume(Cluster::new(client), args).await?
        }
        Command::Rebalance(args) => groups::run_rebalance(Cluster::new(client), args).await?,
        Command::Commit(args) => groups::run_commit(Cluster::new(client), args).await?,
        Command::Metadata(args) => metadata::run(client, args).await?,
        Command::Protocols(args) => protocols::run(Cluster::new(client), args).await?,
        Command::Transactions(args) => transactions::run(Cluster::new(client), args).await?,
        Command::Produce(args) => {
            let cluster = Cluster::new(client);
            let partitions = ensure_topic(&cluster, &args.topic, args.partitions).await?;
            let r = produce(&cluster, &args, true).await?;
            outln!(
                "produce: {} records ({} B) on {} ({} partitions), acks={}, {} producer(s), compression={}",
                r.records,
                args.record_size,
                args.topic,
                partitions,
                acks_name(args.acks),
                args.producers,
                args.compression
            )?;
            print_throughput(&r)?;
            print_latency("latency", &r.latency)?;
        }
        Command::Consume(args) => {
            let cluster = Cluster::new(client);
            let partitions = ensure_topic(&cluster, &args.topic, args.partitions).await?;
            let have = available(&cluster, &args.topic).await?;
            if have < args.records {
                errln!("preparing: producing {} records first", args.records - have);
                let fill = Args {
                    records: args.records - have,
                    ..args.clone()
                };
                produce(&cluster, &fill, false).await?;
            }
            let r = consume(&cluster, &args).await?;
            outln!(
                "consume: {} records ({} B) from {} ({} partitions)",
                r.records,
                args.record_size,
                args.topic,
                partitions
            )?;
            print_throughput(&r)?;
            print_latency("poll latency", &r.latency)?;
        }
        Command::E2e(args) => {
            let cluster = Cluster::new(client);
            let mut base = args.base.clone();
            if base.topic == "runnel-bench" {
                base.topic = "runnel-bench-e2e".into();
            }
            ensure_topic(&cluster, &base.topic, base.partitions).await?;
            let r = e2e(&cluster, &base, args.rate).await?;
            outln!(
                "e2e: {} records ({} B) at {} records/s, {} partitions, acks={}",
                r.records,
                base.record_size,
                args.rate,
                base.partitions,
                acks_name(base.acks)
            )?;
            print_latency("latency", &r.latency)?;
        }
    }
    Ok(())
}

struct Outcome {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// `prefix` made unique by the time (group ids, transactional ids, topics).
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{nanos}")
}

/// Creates the benchmark topic with `partitions` unless it exists; returns
/// how many partitions it has.
async fn ensure_topic(
    cluster: &Arc<Cluster>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<usize> {
    let admin = Admin::with_cluster(Arc::clone(cluster));
    if !admin.list_topics().await?.iter().any(|t| t == topic) {
        admin
            .create_topic(NewTopic::new(topic).partitions(partitions))
            .await
            .with_context(|| format!("cannot create benchmark topic {topic}"))?;
    }
    // Wait until the brokers serve it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let md = cluster.refresh(&[topic.to_owned()], false).await?;
        if let Some(t) = md.topics.get(topic) {
            return Ok(t.partitions.len());
        }
        if Instant::now() > deadline {
            bail!("topic {topic} was created but no broker serves it yet");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn available(cluster: &Arc<Cluster>, topic: &str) -> anyhow::Result<u64> {
    let admin = Admin::with_cluster(Arc::clone(cluster));
    let t = admin.describe_topic(topic).await?;
    Ok(t.partitions
        .iter()
        .map(|p| (p.log_end_offset - p.log_start_offset).max(0) as u64)
        .sum())
}

fn payloads(size: usize) -> Vec<Bytes> {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..64)
        .map(|_| Bytes::from((0..size).map(|_| rng.random::<u8>()).collect::<Vec<u8>>()))
        .collect()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn progress(total: u64, show: bool) -> indicatif::ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// About this many records get their acknowledgement latency measured
/// (each costs a task; measuring every record would cost more than sending it).
const LATENCY_SAMPLES: u64 = 100_000;

/// Measure one record in `sample_every(n)` of `n`.
fn sample_every(records: u64) -> u64 {
    (records / LATENCY_SAMPLES).max(1)
}

async fn produce(cluster: &Arc<Cluster>, args: &Args, show: bool) -> anyhow::Result<Outcome> {
    let bar = progress(args.records, show);
    let latency = Arc::new(Mutex::new(histogram()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let producers = args.producers.max(1) as u64;
    for k in 0..producers {
        let share = args.records / producers + u64::from(k < args.records % producers);
        let every = sample_every(share);
        let producer = Producer::with_cluster(
            Arc::clone(cluster),
            ProducerConfig {
                acks: args.acks,
                compression: args.compression,
                batch_size: args.batch_size,
                linger: args.linger(5),
                max_request_size: args.batch_size.max(1_048_576) * 4,
                enable_idempotence: args.enable_idempotence,
                ..ProducerConfig::default()
            },
        );
        let (topic, payloads, latency, bar) = (
            args.topic.clone(),
            payloads(args.record_size),
            Arc::clone(&latency),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for i in 0..share {
                let value = payloads[(i % payloads.len() as u64) as usize].clone();
                let sampled = i.is_multiple_of(every);
                let sent = sampled.then(Instant::now);
                let delivery = producer
                    .send(ProducerRecord::new(topic.as_str(), value))
                    .await?;
                if let Some(sent) = sent {
                    samples.push(tokio::spawn(async move {
                        delivery.await.map(|_| sent.elapsed())
                    }));
                }
                if i % 4096 == 0 {
                    bar.inc(4096.min(share - i));
                }
            }
            producer.flush().await?;
            let failed = producer.failed_records();
            producer.close().await?;
            let mut first_error = None;
            let mut h = histogram();
            for s in samples {
                match s.await {
                    Ok(Ok(d)) => {
                        let _ = h.record(d.as_micros().max(1) as u64);
                    }
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e.to_string());
                    }
                    Err(_) => {}
                }
            }
            if failed > 0 && first_error.is_none() {
                first_error = Some(format!("{failed} records failed"));
            }
            if let Ok(mut all) = latency.lock() {
                let _ = all.add(&h);
            }
            anyhow::Ok(first_error)
        }));
    }
    for t in tasks {
        if let Some(e) = t.await.context("a producer task failed")?? {
            bail!("records were not acknowledged: {e}");
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let latency = Arc::try_unwrap(latency)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_else(histogram);
    Ok(Outcome {
        records: args.records,
        bytes: args.records * args.record_size as u64,
        elapsed,
        latency,
    })
}

async fn consume(cluster: &Arc<Cluster>, args: &Args) -> anyhow::Result<Outcome> {
    let bar = progress(args.records, true);
    let mut consumer = Consumer::with_cluster(
        Arc::clone(cluster),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 100_000,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(consumer.partitions_of(&args.topic).await?)
        .await?;
    let mut latency = histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    while records < args.records {
        let t = Instant::now();
        let batch = consumer.poll(Duration::from_secs(5)).await?;
        if batch.is_empty() {
            bail!(
                "no records arrived for 5 s after {records} of {}",
                args.records
            );
        }
        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
        records += batch.len() as u64;
        bytes += batch
            .iter()
            .map(|r| r.value.as_ref().map_or(0, Bytes::len) as u64)
            .sum::<u64>();
        bar.set_position(records.min(args.records));
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(Outcome {
        records,
        bytes,
        elapsed,
        latency,
    })
}

async fn e2e(cluster: &Arc<Cluster>, args: &Args, rate: u64) -> anyhow::Result<Outcome> {
    let origin = Instant::now();
    let mut consumer = Consumer::with_cluster(
        Arc::clone(cluster),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Latest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(consumer.partitions_of(&args.topic).await?)
        .await?;
    // Resolve the starting positions before anything is sent: a position
    // resolved later ("latest") would skip what was sent in between.
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer
        .assignment()
        .iter()
        .any(|tp| consumer.position(tp).is_none())
    {
        if Instant::now() > deadline {
            bail!("the partitions of {} did not become readable", args.topic);
        }
        consumer.poll(Duration::from_millis(10)).await?;
    }
    let total = args.records;
    let reader = tokio::spawn(async move {
        let mut h = histogram();
        let mut seen = 0u64;
        while seen < total {
            // Long enough to sit through a leader failover (broker.session.timeout.ms).
            let batch = consumer.poll(Duration::from_secs(30)).await?;
            if batch.is_empty() {
                bail!("no records arrived for 30 s after {seen} of {total}");
            }
            let now = origin.elapsed().as_nanos() as u64;
            for r in batch {
                let sent = r
                    .value
                    .as_ref()
                    .and_then(|v| v.get(..8))
                    .map_or(now, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                let _ = h.record((now.saturating_sub(sent) / 1000).max(1));
                seen += 1;
            }
        }
        anyhow::Ok(h)
    });
    let producer = Producer::with_cluster(
        Arc::clone(cluster),
        ProducerConfig {
            acks: args.acks,
            compression: args.compression,
            batch_size: args.batch_size,
            linger: args.linger(0),
            enable_idempotence: args.enable_idempotence,
            ..ProducerConfig::default()
        },
    );
    let filler = payloads(args.record_size.max(8));
    let per_tick = (rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * per_tick / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let mut acks = Vec::new();
    let every = sample_every(total);
    let bar = progress(total, true);
    while sent < total {
        tick.tick().await;
        for _ in 0..per_tick.min(total - sent) {
            let mut value = filler[(sent % filler.len() as u64) as usize].to_vec();
            value[..8].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_le_bytes());
            let at = Instant::now();
            let delivery = producer
                .send(ProducerRecord::new(args.topic.as_str(), value))
                .await?;
            if sent.is_multiple_of(every) {
                acks.push(tokio::spawn(
                    async move { delivery.await.map(|_| at.elapsed()) },
                ));
            }
            sent += 1;
        }
        bar.set_position(sent);
    }
    producer.flush().await?;
    let failed = producer.failed_records();
    producer.close().await?;
    let mut ack = histogram();
    let mut first_error = None;
    for a in acks {
        match a.await {
            Ok(Ok(d)) => {
                let _ = ack.record(d.as_micros().max(1) as u64);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    if failed > 0 {
        match first_error {
            Some(e) => bail!("{failed} records were not acknowledged; the first: {e}"),
            None => bail!("{failed} records were not acknowledged"),
        }
    }
    let latency = reader.await.context("the consumer task failed")??;
    bar.finish_and_clear();
    print_latency("ack latency", &ack)?;
    Ok(Outcome {
        records: total,
        bytes: total * args.record_size as u64,
        elapsed: origin.elapsed(),
        latency,
    })
}

fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    }
}

fn print_throughput(r: &Outcome) -> Result<(), OutputError> {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    outln!(
        "throughput: {:.0} records/s, {:.1} MB/s in {:.2} s",
        r.records as f64 / secs,
        r.bytes as f64 / secs / 1e6,
        secs
    )
}

fn print_latency(what: &str, h: &Histogram<u64>) -> Result<(), OutputError> {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    outln!(
        "{what} ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  ({} samples)",
        ms(0.5),
        ms(0.95),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        h.len()
    )
}
