//! `runnel transactions ...`: transactional ids and hanging transactions, as
//! Kafka's `kafka-transactions.sh`.

use anyhow::{Context, bail};
use runnel_client::{Admin, ClientConfig, TopicPartition};

use crate::outln;

/// `runnel transactions` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List transactional ids with their producer id and state.
    List {
        /// Only ids in this state (Empty, Ongoing, PrepareCommit, ...); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
        /// Only ids of this producer id; repeatable.
        #[arg(long = "producer-id")]
        producer_ids: Vec<i64>,
    },
    /// Show a transactional id's state, producer, timeout and partitions.
    Describe {
        /// The transactional id.
        transactional_id: String,
    },
    /// Show the producers a partition's leader tracks, with their open transactions.
    DescribeProducers {
        /// TOPIC:PARTITION.
        partition: String,
    },
    /// List transactions open in partitions that nothing will end: unknown
    /// to their coordinator there, or silent past the longest timeout.
    FindHanging {
        /// Topic, or topic:partition,partition,...
        #[arg(long)]
        topic: String,
        /// `transaction.max.timeout.ms`, in minutes.
        #[arg(long, default_value_t = 15)]
        max_transaction_timeout: i64,
    },
    /// Abort a hanging transaction in one partition by writing its abort marker.
    Abort {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long)]
        partition: i32,
        /// The open transaction's first offset (as find-hanging shows it):
        /// its producer is looked up.
        #[arg(long, conflicts_with_all = ["producer_id", "producer_epoch", "coordinator_epoch"])]
        start_offset: Option<i64>,
        /// The producer id (with --producer-epoch and --coordinator-epoch).
        #[arg(long, requires_all = ["producer_epoch", "coordinator_epoch"])]
        producer_id: Option<i64>,
        /// The producer epoch.
        #[arg(long)]
        producer_epoch: Option<i32>,
        /// The coordinator epoch of the producer's last marker.
        #[arg(long)]
        coordinator_epoch: Option<i32>,
    },
}

/// `TOPIC:PARTITION` from the command line.
fn topic_partition(s: &str) -> anyhow::Result<TopicPartition> {
    let Some((topic, p)) = s.rsplit_once(':') else {
        bail!("expected TOPIC:PARTITION, got {s:?}");
    };
    let p: i32 = p
        .parse()
        .with_context(|| format!("{p:?} is not a partition number"))?;
    Ok(TopicPartition::new(topic, p))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs a transactions subcommand.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match cmd {
        Command::List {
            states,
            producer_ids,
        } => {
            let listed = admin
                .list_transactions(&states, &producer_ids)
                .await
                .context("cannot list transactions")?;
            outln!(
                "{:<40}  {:>11}  {:>12}  {:<16}",
                "TRANSACTIONAL_ID",
                "COORDINATOR",
                "PRODUCER_ID",
                "STATE"
            )?;
            for t in listed {
                outln!(
                    "{:<40}  {:>11}  {:>12}  {:<16}",
                    t.transactional_id,
                    t.coordinator_id,
                    t.producer_id,
                    t.state
                )?;
            }
        }
        Command::Describe { transactional_id } => {
            let t = admin
                .describe_transaction(&transactional_id)
                .await
                .with_context(|| format!("cannot describe transactional id {transactional_id}"))?;
            let open_ms = if t.start_ms >= 0 {
                (now_ms() - t.start_ms).max(0).to_string()
            } else {
                "-".into()
            };
            let partitions: Vec<String> = t
                .partitions
                .iter()
                .map(|p| format!("{}-{}", p.topic, p.partition))
                .collect();
            outln!("TransactionalId:    {}", t.transactional_id)?;
            outln!("Coordinator:        {}", t.coordinator_id)?;
            outln!("State:              {}", t.state)?;
            outln!("ProducerId:         {}", t.producer_id)?;
            outln!("ProducerEpoch:      {}", t.producer_epoch)?;
            outln!("TransactionTimeout: {} ms", t.timeout_ms)?;
            outln!("OpenFor:            {open_ms} ms")?;
            outln!("Partitions:         {}", partitions.join(","))?;
        }
        Command::DescribeProducers { partition } => {
            let tp = topic_partition(&partition)?;
            let producers = admin
                .describe_producers(&tp.topic, tp.partition)
                .await
                .with_context(|| format!("cannot describe the producers of {partition}"))?;
            outln!(
                "{:>12}  {:>5}  {:>13}  {:>15}  {:>17}  {:>24}",
                "PRODUCER_ID",
                "EPOCH",
                "LAST_SEQUENCE",
                "LAST_TIMESTAMP",
                "COORDINATOR_EPOCH",
                "CURRENT_TXN_START_OFFSET"
            )?;
            for p in producers {
                outln!(
                    "{:>12}  {:>5}  {:>13}  {:>15}  {:>17}  {:>24}",
                    p.producer_id,
                    p.producer_epoch,
                    p.last_sequence,
                    p.last_timestamp_ms,
                    p.coordinator_epoch,
                    p.current_txn_start_offset
                )?;
            }
        }
        Command::FindHanging {
            topic,
            max_transaction_timeout,
        } => {
            let partitions = match topic.split_once(':') {
                Some((t, ps)) => ps
                    .split(',')
                    .map(|p| topic_partition(&format!("{t}:{p}")))
                    .collect::<anyhow::Result<Vec<_>>>()?,
                None => {
                    let described = admin
                        .describe_topic(&topic)
                        .await
                        .with_context(|| format!("cannot describe topic {topic}"))?;
                    described
                        .partitions
                        .iter()
                        .map(|p| TopicPartition::new(&topic, p.partition))
                        .collect()
                }
            };
            let hanging = admin
                .find_hanging_transactions(
                    &partitions,
                    max_transaction_timeout.saturating_mul(60_000),
                    now_ms(),
                )
                .await
                .context("cannot look for hanging transactions")?;
            outln!(
                "{:<40}  {:>9}  {:>12}  {:>5}  {:>17}  {:>12}",
                "TOPIC",
                "PARTITION",
                "PRODUCER_ID",
                "EPOCH",
                "COORDINATOR_EPOCH",
                "START_OFFSET"
            )?;
            for h in hanging {
                outln!(
                    "{:<40}  {:>9}  {:>12}  {:>5}  {:>17}  {:>12}",
                    h.partition.topic,
                    h.partition.partition,
                    h.producer.producer_id,
                    h.producer.producer_epoch,
                    h.producer.coordinator_epoch,
                    h.producer.current_txn_start_offset
                )?;
            }
        }
        Command::Abort {
            topic,
            partition,
            start_offset,
            producer_id,
            producer_epoch,
            coordinator_epoch,
        } => {
            let (pid, epoch, coordinator_epoch) = match (
                start_offset,
                producer_id,
                producer_epoch,
                coordinator_epoch,
            ) {
                (Some(offset), ..) => {
                    let producers = admin
                        .describe_producers(&topic, partition)
                        .await
                        .with_context(|| {
                            format!("cannot describe the producers of {topic}:{partition}")
                        })?;
                    let Some(p) = producers
                        .into_iter()
                        .find(|p| p.current_txn_start_offset == offset)
                    else {
                        bail!(
                            "no transaction open in {topic}:{partition} starts at offset {offset}"
                        );
                    };
                    (p.producer_id, p.producer_epoch, p.coordinator_epoch.max(0))
                }
                (None, Some(pid), Some(epoch), Some(ce)) => (pid, epoch, ce),
                _ => bail!(
                    "name the transaction with --start-offset, or with --producer-id, --producer-epoch and --coordinator-epoch"
                ),
            };
            admin
                .abort_transaction(&topic, partition, pid, epoch, coordinator_epoch)
                .await
                .with_context(|| {
                    format!("cannot abort producer {pid}'s transaction in {topic}:{partition}")
                })?;
            outln!("aborted producer {pid}'s transaction in {topic}:{partition}")?;
        }
    }
    Ok(())
}
