//! `runnel produce TOPIC`: one record per stdin line.

use std::collections::VecDeque;

use anyhow::{Context, anyhow, bail};
use runnel_client::{
    Acks, ClientConfig, ClientError, Compression, DeliveryFuture, Producer, ProducerConfig,
    ProducerRecord,
};
use tokio::io::AsyncBufReadExt;

/// `runnel produce` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Topic to send to.
    topic: String,
    /// Split each line into key and value at the first occurrence of this string.
    #[arg(long)]
    key_separator: Option<String>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    compression: Compression,
    /// Send every record to this partition (default: by key, or sticky for no key).
    #[arg(long)]
    partition: Option<i32>,
}

pub(crate) fn parse_acks(s: &str) -> Result<Acks, String> {
    Acks::parse(s).ok_or_else(|| format!("acks must be 0, 1 or all, not {s:?}"))
}

pub(crate) fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::from_name(s)
        .ok_or_else(|| format!("compression must be none, gzip, snappy, lz4 or zstd, not {s:?}"))
}

/// Deliveries waiting for acknowledgement before sending waits for the oldest.
const MAX_OUTSTANDING: usize = 50_000;

/// Sends stdin, line by line; fails if any record is not acknowledged.
pub async fn run(client: ClientConfig, args: Args) -> anyhow::Result<()> {
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: args.acks,
            compression: args.compression,
            ..ProducerConfig::default()
        },
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut outstanding: VecDeque<DeliveryFuture> = VecDeque::new();
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut first_error: Option<ClientError> = None;
    let mut note = |r: Result<runnel_client::RecordMetadata, ClientError>| {
        if let Err(e) = r {
            failed += 1;
            first_error.get_or_insert(e);
        }
    };
    let mut line_no = 0u64;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        line_no += 1;
        let mut record = match &args.key_separator {
            Some(sep) => {
                let Some((key, value)) = line.split_once(sep.as_str()) else {
                    bail!("line {line_no} has no key separator {sep:?}");
                };
                ProducerRecord::new(&args.topic, value.to_owned()).key(key.to_owned())
            }
            None => ProducerRecord::new(&args.topic, line),
        };
        record.partition = args.partition;
        let delivery = producer
            .send(record)
            .await
            .with_context(|| format!("cannot send to topic {}", args.topic))?;
        sent += 1;
        outstanding.push_back(delivery);
        if outstanding.len() >= MAX_OUTSTANDING
            && let Some(oldest) = outstanding.pop_front()
        {
            note(oldest.await);
        }
    }
    let closed = producer.close().await;
    for delivery in outstanding {
        note(delivery.await);
    }
    closed.context("flushing the producer")?;
    if failed > 0 {
        let e = first_error.map_or_else(|| "unknown error".to_owned(), |e| e.to_string());
        return Err(anyhow!(
            "{failed} of {sent} records were not acknowledged: {e}"
        ));
    }
    Ok(())
}
