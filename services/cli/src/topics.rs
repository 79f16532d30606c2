//! `runnel topics ...`

use anyhow::{Context, bail};
use runnel_client::{Admin, ClientConfig, NewTopic};

use crate::outln;

/// `runnel topics` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partitions (default: the cluster's num.partitions).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (default: the cluster's default.replication.factor).
        #[arg(long)]
        replication_factor: Option<i32>,
        /// A topic config, key=value (repeatable).
        #[arg(long = "config", value_parser = parse_kv)]
        configs: Vec<(String, String)>,
    },
    /// List topic names.
    List,
    /// Show partitions (leader, replicas, ISR, offsets) and configs.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Add partitions.
    Alter {
        /// Topic name.
        name: String,
        /// The new total number of partitions.
        #[arg(long)]
        partitions: i32,
    },
    /// Set or remove topic configs.
    Config {
        /// Topic name.
        name: String,
        /// key=value to set (repeatable).
        #[arg(long = "set", value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// Key to reset to its default (repeatable).
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

/// Runs a topics subcommand.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match cmd {
        Command::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut topic = NewTopic::new(&name);
            topic.partitions = partitions;
            topic.replication_factor = replication_factor;
            topic.configs = configs.into_iter().collect();
            admin
                .create_topic(topic)
                .await
                .with_context(|| format!("cannot create topic {name}"))?;
            outln!("created topic {name}")?;
        }
        Command::List => {
            for name in admin.list_topics().await? {
                outln!("{name}")?;
            }
        }
        Command::Describe { name } => {
            let t = admin.describe_topic(&name).await?;
            let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
            outln!(
                "Topic: {}  TopicId: {}  Partitions: {}  ReplicationFactor: {rf}",
                t.name,
                t.topic_id,
                t.partitions.len()
            )?;
            let set: Vec<String> = t
                .configs
                .iter()
                .filter(|c| c.is_set)
                .map(|c| format!("{}={}", c.key, c.value))
                .collect();
            outln!(
                "Configs: {}",
                if set.is_empty() {
                    "(all defaults)".to_owned()
                } else {
                    set.join(",")
                }
            )?;
            outln!(
                "{:>9}  {:>6}  {:<12}  {:<12}  {:>12}  {:>12}",
                "Partition",
                "Leader",
                "Replicas",
                "Isr",
                "LogStart",
                "LogEnd"
            )?;
            let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            let (mut under, mut offline) = (0, 0);
            let mut replica_errors = Vec::new();
            for p in &t.partitions {
                if !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty() {
                    replica_errors.push(format!(
                        "partition {} is being reassigned: adding replicas {}, removing replicas {}",
                        p.partition,
                        ids(&p.adding_replicas),
                        ids(&p.removing_replicas)
                    ));
                }
                for (broker, error) in &p.offline_replicas {
                    replica_errors.push(format!(
                        "partition {} replica on broker {broker} is offline: {error}",
                        p.partition
                    ));
                }
                let flag = if p.leader < 0 {
                    offline += 1;
                    "  offline (no leader)"
                } else if p.under_replicated() {
                    under += 1;
                    "  under-replicated"
                } else {
                    ""
                };
                outln!(
                    "{:>9}  {:>6}  {:<12}  {:<12}  {:>12}  {:>12}{flag}",
                    p.partition,
                    p.leader,
                    ids(&p.replicas),
                    ids(&p.isr),
                    p.log_start_offset,
                    p.log_end_offset
                )?;
            }
            if under > 0 {
                outln!("{under} under-replicated partition(s)")?;
            }
            if offline > 0 {
                outln!("{offline} offline partition(s): no in-sync replica is serving")?;
            }
            for line in &replica_errors {
                outln!("{line}")?;
            }
        }
        Command::Alter { name, partitions } => {
            admin
                .create_partitions(&name, partitions)
                .await
                .with_context(|| format!("cannot change partitions of {name}"))?;
            outln!("topic {name} now has {partitions} partitions")?;
        }
        Command::Config { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                bail!("nothing to change: give --set key=value or --delete key");
            }
            admin
                .alter_configs(&name, &set, &delete)
                .await
                .with_context(|| format!("cannot change configs of {name}"))?;
            outln!("updated configs of {name}")?;
        }
        Command::Delete { name } => {
            admin
                .delete_topic(&name)
                .await
                .with_context(|| format!("cannot delete topic {name}"))?;
            outln!("deleted topic {name}")?;
        }
    }
    Ok(())
}
