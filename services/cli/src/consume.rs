//! `runnel consume TOPIC`: one record value per line on stdout.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use runnel_client::{ClientConfig, Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use tokio::time::Instant;

/// `runnel consume` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Topic to read.
    topic: String,
    /// Start at the oldest record (default: only new records).
    #[arg(long)]
    from_beginning: bool,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition")]
    offset: Option<i64>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit after this many milliseconds without a new record.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print the key before the value.
    #[arg(long)]
    print_key: bool,
    /// What separates key and value with --print-key.
    #[arg(long, default_value = "\t")]
    key_separator: String,
}

/// Prints records until --max-messages, --timeout-ms or Ctrl-C.
pub async fn run(client: ClientConfig, args: Args) -> anyhow::Result<()> {
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: if args.from_beginning {
                OffsetReset::Earliest
            } else {
                OffsetReset::Latest
            },
            ..ConsumerConfig::default()
        },
    );
    let partitions = match args.partition {
        Some(p) => vec![TopicPartition::new(&args.topic, p)],
        None => consumer
            .partitions_of(&args.topic)
            .await
            .with_context(|| format!("cannot read topic {}", args.topic))?,
    };
    consumer
        .assign(partitions.clone())
        .await
        .with_context(|| format!("cannot read topic {}", args.topic))?;
    if let Some(offset) = args.offset {
        consumer.seek(&partitions[0], offset);
    }
    let shutdown = runnel_common::shutdown::on_signal();
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.max_messages.is_some_and(|m| printed >= m) {
            return Ok(());
        }
        let wait = match idle_limit {
            Some(limit) => {
                let left = limit.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    return Ok(());
                }
                left.min(Duration::from_millis(500))
            }
            None => Duration::from_millis(500),
        };
        let records = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = consumer.poll(wait) => r.with_context(|| format!("cannot read topic {}", args.topic))?,
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        let mut out = stdout.lock();
        for r in records {
            if args.max_messages.is_some_and(|m| printed >= m) {
                break;
            }
            let mut line = Vec::new();
            if args.print_key {
                line.extend_from_slice(r.key.as_deref().unwrap_or(b"null"));
                line.extend_from_slice(args.key_separator.as_bytes());
            }
            line.extend_from_slice(r.value.as_deref().unwrap_or(b"null"));
            line.push(b'\n');
            if let Err(e) = out.write_all(&line) {
                // A closed pipe (`| head`) is the reader saying it has enough.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                bail!("cannot write to stdout: {e}");
            }
            printed += 1;
        }
        if let Err(e) = out.flush() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            bail!("cannot write to stdout: {e}");
        }
    }
}
