//! `runnel consume TOPIC`: one record value per line on stdout; with
//! `--group`, as a member of a consumer group that commits what it printed.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use std::collections::BTreeMap;

use runnel_client::{
    ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, GroupConsumer,
    GroupProtocol, IsolationLevel, OffsetReset, TopicPartition,
};
use tokio::time::Instant;

/// `runnel consume` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Topic to read.
    topic: String,
    /// Start at the oldest record (default: only new records).
    #[arg(long)]
    from_beginning: bool,
    /// Consume as a member of this consumer group: share the topic's
    /// partitions with the group's other members, start at the group's
    /// committed offsets, and commit what was printed.
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    group: Option<String>,
    /// With --group: the group protocol, classic or consumer (KIP-848:
    /// the coordinator assigns, and rebalances never stop the whole group).
    #[arg(long, default_value = "classic", value_parser = ["classic", "consumer"], requires = "group")]
    group_protocol: String,
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
    /// Kafka's `isolation.level`: read_committed reads only up to the last
    /// stable offset and skips aborted transactions' records.
    #[arg(long, default_value = "read_uncommitted", value_parser = ["read_uncommitted", "read_committed"])]
    isolation_level: String,
}

/// Where records come from: assigned partitions, or a group's share.
enum Source {
    Plain(Box<Consumer>),
    Group(Box<GroupConsumer>),
}

impl Source {
    async fn poll(&mut self, wait: Duration) -> runnel_client::Result<Vec<ConsumerRecord>> {
        match self {
            Source::Plain(c) => c.poll(wait).await,
            Source::Group(g) => g.poll(wait).await,
        }
    }

    /// Commits the offset after each record printed (group only).
    async fn commit(&mut self, printed: &mut BTreeMap<TopicPartition, i64>) -> anyhow::Result<()> {
        if let Source::Group(g) = self
            && !printed.is_empty()
        {
            let offsets = std::mem::take(printed).into_iter().collect();
            g.commit_offsets(offsets)
                .await
                .context("cannot commit the group's offsets")?;
        }
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        if let Source::Group(g) = self {
            g.close().await.context("cannot leave the group")?;
        }
        Ok(())
    }
}

/// Prints records until --max-messages, --timeout-ms or Ctrl-C, then (with
/// --group) commits what it printed and leaves the group.
pub async fn run(client: ClientConfig, args: Args) -> anyhow::Result<()> {
    let mut source = open(client, &args).await?;
    let mut to_commit = BTreeMap::new();
    let result = print(&mut source, &args, &mut to_commit).await;
    let committed = source.commit(&mut to_commit).await;
    let closed = source.close().await;
    result.and(committed).and(closed)
}

async fn open(client: ClientConfig, args: &Args) -> anyhow::Result<Source> {
    let reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let isolation_level: IsolationLevel =
        args.isolation_level.parse().map_err(anyhow::Error::msg)?;
    if let Some(group) = &args.group {
        let mut config = GroupConfig::new(group.clone());
        config.client_id = "runnel-consume".into();
        // Commits follow what was printed, not what was fetched.
        config.enable_auto_commit = false;
        config.consumer.auto_offset_reset = reset;
        config.consumer.isolation_level = isolation_level;
        if args.group_protocol == "consumer" {
            config.group_protocol = GroupProtocol::Consumer;
        }
        let mut consumer = GroupConsumer::new(client, config);
        consumer.subscribe(vec![args.topic.clone()]);
        return Ok(Source::Group(Box::new(consumer)));
    }
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: reset,
            isolation_level,
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
    Ok(Source::Plain(Box::new(consumer)))
}

async fn print(
    source: &mut Source,
    args: &Args,
    to_commit: &mut BTreeMap<TopicPartition, i64>,
) -> anyhow::Result<()> {
    let shutdown = runnel_common::shutdown::on_signal();
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    // A group member's idle time counts from when it got its partitions:
    // joining (group.initial.rebalance.delay.ms, a rebalance) is not idling.
    let mut assigned = 0;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        source.commit(to_commit).await?;
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
            r = source.poll(wait) => r.with_context(|| format!("cannot read topic {}", args.topic))?,
        };
        if let Source::Group(g) = source
            && g.assignment().len() != assigned
        {
            assigned = g.assignment().len();
            last_record = Instant::now();
        }
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
            to_commit.insert(TopicPartition::new(&*r.topic, r.partition), r.offset + 1);
        }
        if let Err(e) = out.flush() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            bail!("cannot write to stdout: {e}");
        }
    }
}
