//! `runnel verify produce|check`: Kafka's verifiable producer and consumer.
//!
//! `produce` sends records whose values are unique ids at a steady rate and
//! writes one line per acknowledged record, `PARTITION OFFSET ID`, to a file.
//! `check` reads every partition of the topic from its start to its end and
//! compares: an acknowledged record that is missing, or sits at another
//! offset than the one acknowledged, is lost data and fails the check;
//! duplicates (a retried send written twice) are counted, and fail it only
//! when asked. Fault tests run `produce` while they break the cluster, then
//! `check`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use runnel_client::{
    Acks, Admin, ClientConfig, ClientError, Cluster, Consumer, ConsumerConfig, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, RecordMetadata, TopicPartition,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::produce::parse_acks;
use crate::{errln, outln};

/// `runnel verify` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Send uniquely identified records at a steady rate; record each acknowledged one.
    Produce(ProduceArgs),
    /// Check that every acknowledged record is in the topic, at its offset.
    Check(CheckArgs),
}

/// `runnel verify produce` options.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to send to (created with the cluster's defaults if missing).
    #[arg(long)]
    topic: String,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// Records per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long to send (Ctrl-C or SIGTERM stops sooner; what was sent is
    /// still waited for and recorded).
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Stop after this many records, even before the duration is up.
    #[arg(long)]
    max_records: Option<u64>,
    /// File that gets one `PARTITION OFFSET ID` line per acknowledged record.
    #[arg(long)]
    acked_out: PathBuf,
    /// `delivery.timeout.ms`: how long a record may take to be acknowledged
    /// (retries included) before it counts as failed.
    #[arg(long, default_value_t = 120_000)]
    delivery_timeout_ms: u64,
    /// `linger.ms`.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Exit with an error when more records than this were not acknowledged.
    #[arg(long)]
    max_failed: Option<u64>,
}

/// `runnel verify check` options.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// The file `runnel verify produce --acked-out` wrote.
    #[arg(long)]
    acked: PathBuf,
    /// Also fail when a record is in the topic more than once.
    #[arg(long)]
    fail_on_duplicates: bool,
    /// Longest the whole read may take.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

/// Runs a verify subcommand.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Produce(args) => produce(client, args).await,
        Command::Check(args) => check(client, args).await,
    }
}

/// One acknowledged record: where the cluster said it put it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acked {
    partition: i32,
    offset: i64,
    id: String,
}

/// What `produce` counted.
#[derive(Debug, Default)]
struct Tally {
    acked: u64,
    failed: u64,
    first_error: Option<ClientError>,
}

async fn produce(client: ClientConfig, args: ProduceArgs) -> anyhow::Result<()> {
    if args.rate == 0 {
        bail!("--rate must be at least 1 record per second");
    }
    let file = std::fs::File::create(&args.acked_out)
        .with_context(|| format!("cannot create {}", args.acked_out.display()))?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: args.acks,
            linger: Duration::from_millis(args.linger_ms),
            delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
            ..ProducerConfig::default()
        },
    );
    // One writer owns the file; deliveries report to it as they complete.
    let (tx, rx) = mpsc::unbounded_channel::<(String, Result<RecordMetadata, ClientError>)>();
    let out = args.acked_out.clone();
    let writer = tokio::task::spawn_blocking(move || write_acked(file, &out, rx));

    // Ids are unique across runs, so records of an earlier run never count.
    let run_id = format!("{:08x}", rand::random::<u32>());
    let limit = args.max_records.unwrap_or(u64::MAX);
    let duration = Duration::from_secs(args.duration_secs);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stop = runnel_common::shutdown::on_signal();
    let (mut sent, mut send_failed) = (0u64, 0u64);
    let mut first_send_error = None;
    while sent < limit {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let elapsed = start.elapsed().min(duration);
        // Keep to the rate on average, however late a tick fires.
        let due = ((elapsed.as_secs_f64() * args.rate as f64) as u64).min(limit);
        while sent < due {
            let id = format!("{run_id}-{sent}");
            sent += 1;
            match producer
                .send(ProducerRecord::new(args.topic.as_str(), id.clone()))
                .await
            {
                Ok(delivery) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send((id, delivery.await));
                    });
                }
                Err(e) => {
                    send_failed += 1;
                    first_send_error.get_or_insert(e);
                }
            }
        }
        if elapsed >= duration {
            break;
        }
    }
    drop(tx);
    let closed = producer.close().await;
    let tally = writer
        .await
        .context("the acknowledgement writer failed")??;
    closed.context("flushing the producer")?;
    let failed = tally.failed + send_failed;
    outln!(
        "verify produce: sent {sent}, acknowledged {}, failed {failed} to {} in {:.1} s",
        tally.acked,
        args.topic,
        start.elapsed().as_secs_f64()
    )?;
    if let Some(e) = tally.first_error.or(first_send_error) {
        errln!("first failure: {e}");
    }
    if let Some(max) = args.max_failed
        && failed > max
    {
        bail!("{failed} records were not acknowledged (at most {max} allowed)");
    }
    Ok(())
}

/// Writes a line per acknowledged record until every delivery has reported.
fn write_acked(
    file: std::fs::File,
    path: &Path,
    mut rx: mpsc::UnboundedReceiver<(String, Result<RecordMetadata, ClientError>)>,
) -> anyhow::Result<Tally> {
    let mut out = std::io::BufWriter::new(file);
    let mut tally = Tally::default();
    let cannot_write = || format!("cannot write {}", path.display());
    while let Some((id, delivery)) = rx.blocking_recv() {
        match delivery {
            Ok(meta) => {
                tally.acked += 1;
                writeln!(out, "{} {} {id}", meta.partition, meta.offset)
                    .with_context(cannot_write)?;
            }
            Err(e) => {
                tally.failed += 1;
                tally.first_error.get_or_insert(e);
            }
        }
    }
    out.flush().with_context(cannot_write)?;
    Ok(tally)
}

/// Parses an acked file: `PARTITION OFFSET ID` lines; blank and `#` lines are skipped.
fn parse_acked(text: &str) -> Result<Vec<Acked>, String> {
    let mut acked = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {}: expected PARTITION OFFSET ID, got {line:?}", i + 1);
        let mut fields = line.split_whitespace();
        let (Some(partition), Some(offset), Some(id), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad());
        };
        acked.push(Acked {
            partition: partition.parse().map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
            id: id.to_owned(),
        });
    }
    Ok(acked)
}

/// The outcome of comparing acknowledged records with what the topic holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    /// Acknowledged records found at their acknowledged partition and offset.
    found: u64,
    /// Acknowledged records nowhere in the topic.
    missing: Vec<Acked>,
    /// Acknowledged records found, but only at other positions (partition, offset).
    moved: Vec<(Acked, Vec<(i32, i64)>)>,
    /// Ids in the topic more than once, with how many extra copies.
    duplicates: u64,
}

/// Compares `acked` with the topic's records, given as id → positions.
fn compare(acked: &[Acked], read: &HashMap<String, Vec<(i32, i64)>>) -> Report {
    let mut report = Report {
        duplicates: read
            .values()
            .map(|at| at.len().saturating_sub(1) as u64)
            .sum(),
        ..Report::default()
    };
    for a in acked {
        match read.get(&a.id) {
            Some(at) if at.contains(&(a.partition, a.offset)) => report.found += 1,
            Some(at) => report.moved.push((a.clone(), at.clone())),
            None => report.missing.push(a.clone()),
        }
    }
    report
}

async fn check(client: ClientConfig, args: CheckArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.acked)
        .with_context(|| format!("cannot read {}", args.acked.display()))?;
    let acked = parse_acked(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.acked.display()))?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let read = read_topic(Cluster::new(client), &args.topic, deadline).await?;
    let total: usize = read.values().map(Vec::len).sum();
    let report = compare(&acked, &read);
    outln!(
        "verify check: {} acknowledged, {} read back at their offsets, {} missing, {} at another offset, {} duplicates ({total} records in {})",
        acked.len(),
        report.found,
        report.missing.len(),
        report.moved.len(),
        report.duplicates,
        args.topic
    )?;
    const SHOWN: usize = 10;
    for a in report.missing.iter().take(SHOWN) {
        errln!(
            "missing: {} acknowledged at {}-{} offset {}",
            a.id,
            args.topic,
            a.partition,
            a.offset
        );
    }
    for (a, at) in report.moved.iter().take(SHOWN) {
        errln!(
            "moved: {} acknowledged at {}-{} offset {}, found at {at:?} (partition, offset)",
            a.id,
            args.topic,
            a.partition,
            a.offset
        );
    }
    let lost = report.missing.len() + report.moved.len();
    if lost > 0 {
        bail!("{lost} acknowledged records are not where they were acknowledged");
    }
    if args.fail_on_duplicates && report.duplicates > 0 {
        bail!("{} records were written more than once", report.duplicates);
    }
    Ok(())
}

/// Reads every partition of `topic` from its start to its end (the high
/// watermark when the read starts), retrying through leader changes until
/// `deadline`. Returns each value's positions.
async fn read_topic(
    cluster: Arc<Cluster>,
    topic: &str,
    deadline: Instant,
) -> anyhow::Result<HashMap<String, Vec<(i32, i64)>>> {
    let admin = Admin::with_cluster(Arc::clone(&cluster));
    let partitions = retry(deadline, "finding the partitions", || async {
        cluster.refresh(&[topic.to_owned()], false).await?;
        let description = admin.describe_topic(topic).await?;
        Ok(description
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>())
    })
    .await?;
    let mut ends = HashMap::new();
    for &p in &partitions {
        let (_, end) = retry(deadline, &format!("finding the end of {topic}-{p}"), || {
            let (admin, cluster) = (&admin, &cluster);
            async move {
                // A leader that moved is found on the next try.
                cluster.refresh(&[topic.to_owned()], false).await?;
                admin.offsets(topic, p).await
            }
        })
        .await?;
        ends.insert(p, end);
    }
    let mut consumer = Consumer::with_cluster(
        Arc::clone(&cluster),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(
            partitions
                .iter()
                .map(|&p| TopicPartition::new(topic, p))
                .collect(),
        )
        .await?;
    let mut read: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    let done = |consumer: &Consumer| {
        partitions.iter().all(|&p| {
            consumer
                .position(&TopicPartition::new(topic, p))
                .is_some_and(|at| at >= ends[&p])
        })
    };
    let mut last_error = None;
    while !done(&consumer) {
        let now = Instant::now();
        if now >= deadline {
            let behind: Vec<String> = partitions
                .iter()
                .map(|&p| {
                    let at = consumer.position(&TopicPartition::new(topic, p));
                    format!("{p}: at {at:?} of {}", ends[&p])
                })
                .collect();
            let why = last_error.map_or_else(String::new, |e: ClientError| format!(" ({e})"));
            bail!(
                "could not read {topic} to its end in time; partitions {}{why}",
                behind.join(", ")
            );
        }
        match consumer
            .poll(Duration::from_secs(1).min(deadline - now))
            .await
        {
            Ok(records) => {
                for r in records {
                    let id = r
                        .value
                        .as_deref()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default();
                    read.entry(id).or_default().push((r.partition, r.offset));
                }
            }
            Err(e) => {
                last_error = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(read)
}

/// Runs `attempt` until it succeeds or `deadline` passes.
async fn retry<T, F, Fut>(deadline: Instant, what: &str, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() + Duration::from_millis(200) < deadline => {
                tracing::debug!(error = %e, "{what}: retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| what.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(partition: i32, offset: i64, id: &str) -> Acked {
        Acked {
            partition,
            offset,
            id: id.into(),
        }
    }

    #[test]
    fn acked_files_parse_and_reject_malformed_lines() {
        let text = "# a comment\n0 0 a-0\n\n2 17 a-1\n";
        assert_eq!(
            parse_acked(text),
            Ok(vec![acked(0, 0, "a-0"), acked(2, 17, "a-1")])
        );
        assert!(parse_acked("0 x a-0\n").is_err_and(|e| e.contains("line 1")));
        assert!(parse_acked("0 0\n").is_err());
        assert!(parse_acked("0 0 a b\n").is_err());
    }

    #[test]
    fn compare_finds_missing_moved_and_duplicated_records() {
        let read: HashMap<String, Vec<(i32, i64)>> = [
            ("a-0".to_owned(), vec![(0, 0)]),
            ("a-1".to_owned(), vec![(0, 1), (0, 2)]),
            ("a-2".to_owned(), vec![(1, 5)]),
        ]
        .into_iter()
        .collect();
        let report = compare(
            &[
                acked(0, 0, "a-0"),
                acked(0, 2, "a-1"),
                acked(1, 4, "a-2"),
                acked(1, 6, "a-3"),
            ],
            &read,
        );
        assert_eq!(report.found, 2);
        assert_eq!(report.missing, vec![acked(1, 6, "a-3")]);
        assert_eq!(report.moved, vec![(acked(1, 4, "a-2"), vec![(1, 5)])]);
        assert_eq!(report.duplicates, 1);
    }
}
