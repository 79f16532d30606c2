//! `runnel brokers decommission ID`: moves every replica off a broker so
//! it can be stopped without any partition losing redundancy, and `runnel
//! cluster rebalance`: evens out replicas and preferred leaders across
//! brokers and racks. Both plan with the same minimal-move, rack-aware
//! planner as `runnel partitions reassign --plan` and move within an
//! optional replication throttle.

use anyhow::{Context, bail};
use runnel_client::{Admin, Assignments, ClientConfig, plan_moves};

use crate::outln;
use crate::partitions::move_and_wait;

/// `runnel brokers` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Move every replica off broker ID (and its leaderships with them),
    /// wait until done; then the broker can be stopped.
    Decommission {
        /// The broker to empty.
        id: i32,
        /// Hold the copying to this many bytes a second per broker.
        #[arg(long, value_name = "BYTES_PER_SEC")]
        throttle: Option<u64>,
    },
}

/// `runnel cluster rebalance` options.
#[derive(Debug, clap::Args)]
pub struct RebalanceArgs {
    /// Hold the copying to this many bytes a second per broker.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    throttle: Option<u64>,
    /// Print the moves (Kafka's reassignment JSON) without making them.
    #[arg(long)]
    dry_run: bool,
}

/// Runs a `runnel brokers` command.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match cmd {
        Command::Decommission { id, throttle } => decommission(&admin, id, throttle).await,
    }
}

/// Serving brokers (id and rack), leaving out `except`.
pub async fn serving(admin: &Admin, except: Option<i32>) -> anyhow::Result<Vec<(i32, String)>> {
    let cluster = admin.describe_cluster().await?;
    if let Some(id) = except
        && !cluster.brokers.iter().any(|b| b.id == id)
    {
        bail!("broker {id} is not registered");
    }
    Ok(cluster
        .brokers
        .iter()
        .filter(|b| !b.fenced && Some(b.id) != except)
        .map(|b| (b.id, b.rack.clone()))
        .collect())
}

fn replicas_on(a: &Assignments, id: i32) -> usize {
    a.values()
        .flat_map(|ps| ps.values())
        .filter(|r| r.contains(&id))
        .count()
}

async fn decommission(admin: &Admin, id: i32, throttle: Option<u64>) -> anyhow::Result<()> {
    let brokers = serving(admin, Some(id)).await?;
    // A topic created meanwhile may land on the broker: plan again until none is left.
    for _ in 0..5 {
        let current = admin.assignments(&[]).await?;
        let held = replicas_on(&current, id);
        if held == 0 {
            outln!("Broker {id} holds no replicas: it can be stopped.")?;
            return Ok(());
        }
        outln!("Broker {id} holds {held} replica(s)")?;
        let plan = plan_moves(&current, &brokers, None, false)
            .with_context(|| format!("cannot decommission broker {id}"))?;
        move_and_wait(admin, &current, &plan, throttle).await?;
    }
    bail!("broker {id} keeps getting new replicas; stop creating topics on it and try again")
}

/// Runs `runnel cluster rebalance`.
pub async fn rebalance(client: ClientConfig, args: RebalanceArgs) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    let brokers = serving(&admin, None).await?;
    let current = admin.assignments(&[]).await?;
    let plan = plan_moves(&current, &brokers, None, true).context("cannot plan a rebalance")?;
    let per_broker = |a: &Assignments| {
        brokers
            .iter()
            .map(|(b, _)| format!("{b}:{}", replicas_on(a, *b)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    outln!("Replicas per broker now:     {}", per_broker(&current))?;
    outln!("Replicas per broker planned: {}", per_broker(&plan))?;
    if args.dry_run {
        let moves = crate::partitions::plan_json(&crate::partitions::changes(&current, &plan));
        outln!("Proposed partition reassignment configuration")?;
        outln!("{moves}")?;
        return Ok(());
    }
    let moved = move_and_wait(&admin, &current, &plan, args.throttle).await?;
    let elected = admin
        .elect_leaders(false, None)
        .await?
        .into_iter()
        .filter(|(_, r)| r.is_ok())
        .count();
    outln!("Rebalanced: {moved} partition(s) moved, {elected} preferred leader(s) elected")?;
    Ok(())
}
