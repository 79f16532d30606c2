//! `runnel partitions reassign ...`: moving partitions' replicas between
//! brokers, in the spirit of Kafka's `kafka-reassign-partitions.sh`: the
//! same JSON files (`{"version":1,"partitions":[{"topic":..,"partition":..,
//! "replicas":[..]}]}`), the same steps (plan, execute, verify, cancel) and
//! the same lines of output, so scripts written for one work with the other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, bail};
use runnel_client::{Admin, Assignments, ClientConfig, plan_moves};
use runnel_common::metadata::{FOLLOWER_THROTTLED_RATE, LEADER_THROTTLED_RATE};
use runnel_log::{FOLLOWER_THROTTLED_REPLICAS, LEADER_THROTTLED_REPLICAS};
use serde_json::json;

use crate::outln;

/// `runnel partitions` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Plan, start, check or cancel moves of partitions' replicas.
    Reassign(ReassignArgs),
    /// Move leadership to preferred replicas, or elect leaders for
    /// partitions without one (Kafka's kafka-leader-election.sh).
    ElectLeaders(ElectArgs),
}

/// Which partitions `runnel partitions elect-leaders` elects for, and how.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["topic", "all_topic_partitions"])))]
pub struct ElectArgs {
    /// PREFERRED: the first replica takes over where it is in sync;
    /// UNCLEAN: partitions with no serving leader get one, even out of sync.
    #[arg(long, value_name = "PREFERRED|UNCLEAN", default_value = "PREFERRED", value_parser = ["PREFERRED", "UNCLEAN", "preferred", "unclean"])]
    election_type: String,
    /// The topic (with --partition: that partition only).
    #[arg(long)]
    topic: Option<String>,
    /// The partition of --topic.
    #[arg(long, requires = "topic")]
    partition: Option<i32>,
    /// Every partition of every topic.
    #[arg(long)]
    all_topic_partitions: bool,
}

/// What `runnel partitions reassign` does: exactly one of the four steps.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("step").required(true).args(["plan", "execute", "verify", "cancel"])))]
pub struct ReassignArgs {
    /// Print the current replicas of --topics and a plan that spreads them
    /// evenly over --brokers (and their racks) with as few moves as possible.
    #[arg(long, alias = "generate")]
    plan: bool,
    /// Start the moves of --reassignment-json-file.
    #[arg(long)]
    execute: bool,
    /// Report whether the moves of --reassignment-json-file are done.
    #[arg(long)]
    verify: bool,
    /// Cancel the moves of --reassignment-json-file still in progress: their
    /// partitions go back to their original replicas.
    #[arg(long)]
    cancel: bool,
    /// Topics to plan for, comma-separated (--plan).
    #[arg(long, value_name = "TOPIC,...", value_delimiter = ',')]
    topics: Vec<String>,
    /// Brokers to place replicas on, comma-separated (--plan; default: every
    /// broker the controller sees serving).
    #[arg(
        long,
        alias = "broker-list",
        value_name = "ID,...",
        value_delimiter = ','
    )]
    brokers: Vec<i32>,
    /// Replicas per partition in the plan (--plan; default: as now).
    #[arg(long, value_name = "N")]
    replication_factor: Option<usize>,
    /// The plan: Kafka's reassignment JSON (--execute, --verify, --cancel).
    #[arg(long, alias = "file", value_name = "FILE")]
    reassignment_json_file: Option<PathBuf>,
    /// Start the moves even though others are in progress (--execute).
    #[arg(long)]
    additional: bool,
    /// Hold the copying of moved replicas to this many bytes a second per
    /// broker (--execute; --verify clears it once every move is done).
    #[arg(long, value_name = "BYTES_PER_SEC")]
    throttle: Option<u64>,
    /// Leave the throttles in place (--verify).
    #[arg(long)]
    preserve_throttles: bool,
}

/// Runs a `runnel partitions` command.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match cmd {
        Command::Reassign(args) => reassign(&admin, args).await,
        Command::ElectLeaders(args) => elect_leaders(&admin, args).await,
    }
}

async fn elect_leaders(admin: &Admin, args: ElectArgs) -> anyhow::Result<()> {
    let unclean = args.election_type.eq_ignore_ascii_case("unclean");
    let kind = if unclean { "UNCLEAN" } else { "PREFERRED" };
    let asked: Option<Vec<(String, i32)>> = match (&args.topic, args.partition) {
        (Some(topic), Some(p)) => Some(vec![(topic.clone(), p)]),
        (Some(topic), None) => {
            let a = admin.assignments(std::slice::from_ref(topic)).await?;
            Some(
                a.get(topic)
                    .map(|ps| ps.keys().map(|p| (topic.clone(), *p)).collect())
                    .unwrap_or_default(),
            )
        }
        (None, _) => None,
    };
    let results = admin.elect_leaders(unclean, asked.as_deref()).await?;
    let (mut done, mut not_needed, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for ((topic, partition), result) in results {
        let name = format!("{topic}-{partition}");
        match result {
            Ok(()) => done.push(name),
            Err(e) if e.code() == Some(runnel_client::ErrorCode::ElectionNotNeeded) => {
                not_needed.push(name);
            }
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    if !done.is_empty() {
        outln!(
            "Successfully completed leader election ({kind}) for partitions {}",
            done.join(", ")
        )?;
    }
    if !not_needed.is_empty() {
        outln!(
            "Valid replica already elected for partitions {}",
            not_needed.join(", ")
        )?;
    }
    if done.is_empty() && not_needed.is_empty() && failed.is_empty() {
        outln!("No partition needed an election")?;
    }
    if !failed.is_empty() {
        for line in &failed {
            outln!("Error completing leader election ({kind}) for partition: {line}")?;
        }
        bail!("{} replica(s) could not be elected", failed.len());
    }
    Ok(())
}

async fn reassign(admin: &Admin, args: ReassignArgs) -> anyhow::Result<()> {
    if args.plan {
        return plan(admin, &args).await;
    }
    let Some(path) = &args.reassignment_json_file else {
        bail!("--reassignment-json-file is required with --execute, --verify and --cancel");
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let moves = parse_plan(&text)
        .with_context(|| format!("{} is not a reassignment plan", path.display()))?;
    if args.execute {
        execute(admin, &moves, args.additional, args.throttle).await
    } else if args.verify {
        verify(admin, &moves, args.preserve_throttles).await
    } else {
        cancel(admin, &moves).await
    }
}

async fn plan(admin: &Admin, args: &ReassignArgs) -> anyhow::Result<()> {
    if args.topics.is_empty() {
        bail!("--plan needs --topics");
    }
    let current = admin.assignments(&args.topics).await?;
    let brokers: Vec<(i32, String)> = if args.brokers.is_empty() {
        crate::brokers::serving(admin, None).await?
    } else {
        let cluster = admin.describe_cluster().await?;
        args.brokers
            .iter()
            .map(|&id| {
                let b = cluster
                    .brokers
                    .iter()
                    .find(|b| b.id == id)
                    .with_context(|| format!("broker {id} is not registered"))?;
                Ok((id, b.rack.clone()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let proposed = plan_moves(&current, &brokers, args.replication_factor, true)?;
    outln!("Current partition replica assignment")?;
    outln!("{}", plan_json(&current))?;
    outln!("")?;
    outln!("Proposed partition reassignment configuration")?;
    outln!("{}", plan_json(&proposed))?;
    Ok(())
}

async fn execute(
    admin: &Admin,
    moves: &Assignments,
    additional: bool,
    throttle: Option<u64>,
) -> anyhow::Result<()> {
    if !additional && !admin.list_partition_reassignments(None).await?.is_empty() {
        bail!(
            "Cannot execute because there is an existing partition assignment. Use --additional to override this and create a new partition assignment in addition to the existing one."
        );
    }
    let topics: Vec<String> = moves.keys().cloned().collect();
    let current = admin.assignments(&topics).await?;
    let mut rollback = Assignments::new();
    for (topic, partitions) in moves {
        for partition in partitions.keys() {
            let replicas = current
                .get(topic)
                .and_then(|t| t.get(partition))
                .with_context(|| format!("partition {topic}-{partition} does not exist"))?;
            rollback
                .entry(topic.clone())
                .or_default()
                .insert(*partition, replicas.clone());
        }
    }
    outln!("Current partition replica assignment")?;
    outln!("")?;
    outln!("{}", plan_json(&rollback))?;
    outln!("")?;
    outln!("Save this to use as the --reassignment-json-file option during rollback")?;
    if let Some(rate) = throttle {
        set_throttles(admin, moves, &rollback, rate).await?;
        outln!(
            "Warning: You must run --verify periodically, until the reassignment completes, to ensure the throttle is removed."
        )?;
        outln!("The inter-broker throttle limit was set to {rate} B/s")?;
    }
    let results = admin.alter_partition_reassignments(targets(moves)).await?;
    report(
        results,
        "Successfully started partition reassignments for ",
        "Error reassigning partition(s):",
    )
}

/// The partitions of `plan` whose replicas differ from `current`.
pub fn changes(current: &Assignments, plan: &Assignments) -> Assignments {
    let mut out = Assignments::new();
    for (topic, partitions) in plan {
        for (partition, target) in partitions {
            if current.get(topic).and_then(|t| t.get(partition)) != Some(target) {
                out.entry(topic.clone())
                    .or_default()
                    .insert(*partition, target.clone());
            }
        }
    }
    out
}

/// Moves every partition `plan` puts elsewhere than `current` (within
/// `throttle` B/s per broker, if given), waits until every move is done,
/// then lifts the throttles; returns how many partitions moved.
pub async fn move_and_wait(
    admin: &Admin,
    current: &Assignments,
    plan: &Assignments,
    throttle: Option<u64>,
) -> anyhow::Result<usize> {
    let moves = changes(current, plan);
    let asked = partitions_of(&moves);
    if asked.is_empty() {
        return Ok(0);
    }
    if let Some(rate) = throttle {
        set_throttles(admin, &moves, current, rate).await?;
    }
    let results = admin.alter_partition_reassignments(targets(&moves)).await?;
    let refused: Vec<String> = results
        .iter()
        .filter_map(|((t, p), r)| r.as_ref().err().map(|e| format!("{t}-{p}: {e}")))
        .collect();
    if !refused.is_empty() {
        bail!("Error reassigning partition(s):\n{}", refused.join("\n"));
    }
    outln!("Moving {} partition(s)", asked.len())?;
    let mut last = usize::MAX;
    loop {
        let left = admin
            .list_partition_reassignments(Some(&asked))
            .await?
            .len();
        if left == 0 {
            break;
        }
        if left != last {
            outln!(
                "{} of {} partition move(s) done",
                asked.len() - left,
                asked.len()
            )?;
            last = left;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    outln!("{} of {} partition move(s) done", asked.len(), asked.len())?;
    if throttle.is_some() {
        clear_throttles(admin, &moves).await?;
    }
    Ok(asked.len())
}

/// Kafka's throttles for `moves` from `current`: the leader side on every
/// current replica, the follower side on every new one, and `rate` on
/// every broker either way.
async fn set_throttles(
    admin: &Admin,
    moves: &Assignments,
    current: &Assignments,
    rate: u64,
) -> anyhow::Result<()> {
    let mut brokers = BTreeSet::new();
    for (topic, partitions) in moves {
        let (mut leader, mut follower) = (Vec::new(), Vec::new());
        for (partition, target) in partitions {
            let now = current
                .get(topic)
                .and_then(|t| t.get(partition))
                .map_or(&[][..], Vec::as_slice);
            leader.extend(now.iter().map(|b| format!("{partition}:{b}")));
            follower.extend(
                target
                    .iter()
                    .filter(|b| !now.contains(b))
                    .map(|b| format!("{partition}:{b}")),
            );
            brokers.extend(now.iter().chain(target).copied());
        }
        admin
            .alter_configs(
                topic,
                &[
                    (LEADER_THROTTLED_REPLICAS.to_owned(), leader.join(",")),
                    (FOLLOWER_THROTTLED_REPLICAS.to_owned(), follower.join(",")),
                ],
                &[],
            )
            .await
            .with_context(|| format!("cannot set the throttled replicas of {topic}"))?;
    }
    for broker in brokers {
        admin
            .alter_broker_configs(
                Some(broker),
                &[
                    (LEADER_THROTTLED_RATE.to_owned(), rate.to_string()),
                    (FOLLOWER_THROTTLED_RATE.to_owned(), rate.to_string()),
                ],
                &[],
            )
            .await
            .with_context(|| format!("cannot set the throttle of broker {broker}"))?;
    }
    Ok(())
}

/// Removes the throttles `set_throttles` sets: from every broker and from
/// the topics of `moves`.
async fn clear_throttles(admin: &Admin, moves: &Assignments) -> anyhow::Result<()> {
    let brokers: Vec<i32> = admin
        .describe_cluster()
        .await?
        .brokers
        .iter()
        .map(|b| b.id)
        .collect();
    outln!("")?;
    outln!(
        "Clearing broker-level throttles on brokers {}",
        ids(&brokers)
    )?;
    let rates = [
        LEADER_THROTTLED_RATE.to_owned(),
        FOLLOWER_THROTTLED_RATE.to_owned(),
    ];
    for broker in brokers {
        admin
            .alter_broker_configs(Some(broker), &[], &rates)
            .await?;
    }
    let replicas = [
        LEADER_THROTTLED_REPLICAS.to_owned(),
        FOLLOWER_THROTTLED_REPLICAS.to_owned(),
    ];
    for topic in moves.keys() {
        outln!("Clearing topic-level throttles on topic {topic}")?;
        admin.alter_configs(topic, &[], &replicas).await?;
    }
    Ok(())
}

async fn verify(
    admin: &Admin,
    moves: &Assignments,
    preserve_throttles: bool,
) -> anyhow::Result<()> {
    let topics: Vec<String> = moves.keys().cloned().collect();
    let asked = partitions_of(moves);
    let ongoing: BTreeSet<(String, i32)> = admin
        .list_partition_reassignments(Some(&asked))
        .await?
        .into_iter()
        .map(|r| (r.topic, r.partition))
        .collect();
    let current = admin.assignments(&topics).await?;
    outln!("Status of partition reassignment:")?;
    let mut mismatched = 0;
    for (topic, partitions) in moves {
        for (partition, target) in partitions {
            let key = (topic.clone(), *partition);
            if ongoing.contains(&key) {
                outln!("Reassignment of partition {topic}-{partition} is still in progress.")?;
                continue;
            }
            let now = current.get(topic).and_then(|t| t.get(partition));
            if now == Some(target) {
                outln!("Reassignment of partition {topic}-{partition} is completed.")?;
            } else {
                mismatched += 1;
                outln!(
                    "There is no active reassignment of partition {topic}-{partition}, but replica set is {} rather than {}.",
                    now.map_or_else(|| "unknown".to_owned(), |r| ids(r)),
                    ids(target)
                )?;
            }
        }
    }
    if mismatched > 0 {
        bail!("{mismatched} partition(s) are not where the plan puts them and are not moving");
    }
    if ongoing.is_empty() && !preserve_throttles {
        clear_throttles(admin, moves).await?;
    }
    Ok(())
}

async fn cancel(admin: &Admin, moves: &Assignments) -> anyhow::Result<()> {
    let asked = partitions_of(moves);
    let ongoing = admin.list_partition_reassignments(Some(&asked)).await?;
    if ongoing.is_empty() {
        outln!("None of the specified partition moves are active.")?;
        return Ok(());
    }
    let results = admin
        .alter_partition_reassignments(
            ongoing
                .into_iter()
                .map(|r| (r.topic, r.partition, None))
                .collect(),
        )
        .await?;
    report(
        results,
        "Successfully cancelled partition reassignments for: ",
        "Error cancelling partition reassignment(s):",
    )
}

/// Prints the partitions that were accepted after `ok`, and fails listing
/// the refused ones after `failed`.
fn report(
    results: Vec<((String, i32), runnel_client::Result<()>)>,
    ok: &str,
    failed: &str,
) -> anyhow::Result<()> {
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for ((topic, partition), result) in results {
        match result {
            Ok(()) => done.push(format!("{topic}-{partition}")),
            Err(e) => errors.push(format!("{topic}-{partition}: {e}")),
        }
    }
    if !done.is_empty() {
        outln!("{ok}{}", done.join(","))?;
    }
    if !errors.is_empty() {
        bail!("{failed}\n{}", errors.join("\n"));
    }
    Ok(())
}

/// Every partition of `moves` with its target replicas, as a request takes them.
fn targets(moves: &Assignments) -> Vec<(String, i32, Option<Vec<i32>>)> {
    moves
        .iter()
        .flat_map(|(topic, partitions)| {
            partitions
                .iter()
                .map(|(&p, replicas)| (topic.clone(), p, Some(replicas.clone())))
        })
        .collect()
}

/// Every partition of `moves`.
fn partitions_of(moves: &Assignments) -> Vec<(String, i32)> {
    moves
        .iter()
        .flat_map(|(t, ps)| ps.keys().map(|p| (t.clone(), *p)))
        .collect()
}

fn ids(replicas: &[i32]) -> String {
    replicas
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Kafka's reassignment JSON for `a`, its keys in Kafka's order (which
/// `serde_json` would sort).
pub fn plan_json(a: &Assignments) -> String {
    let partitions: Vec<String> = a
        .iter()
        .flat_map(|(topic, partitions)| {
            partitions.iter().map(move |(partition, replicas)| {
                format!(
                    r#"{{"topic":{},"partition":{partition},"replicas":{},"log_dirs":{}}}"#,
                    json!(topic),
                    json!(replicas),
                    json!(vec!["any"; replicas.len()])
                )
            })
        })
        .collect();
    format!(r#"{{"version":1,"partitions":[{}]}}"#, partitions.join(","))
}

/// The moves of a Kafka reassignment JSON document.
fn parse_plan(text: &str) -> anyhow::Result<Assignments> {
    let doc: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    match doc.get("version").and_then(serde_json::Value::as_i64) {
        Some(1) => {}
        Some(v) => bail!("version {v} is not supported (only 1)"),
        None => bail!("no \"version\""),
    }
    let entries = doc
        .get("partitions")
        .and_then(serde_json::Value::as_array)
        .context("no \"partitions\" list")?;
    if entries.is_empty() {
        bail!("Partition reassignment list cannot be empty");
    }
    let mut moves: Assignments = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let topic = e
            .get("topic")
            .and_then(serde_json::Value::as_str)
            .with_context(|| format!("entry {i} has no \"topic\""))?;
        let partition = e
            .get("partition")
            .and_then(serde_json::Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .with_context(|| format!("entry {i} has no \"partition\""))?;
        let replicas = e
            .get("replicas")
            .and_then(serde_json::Value::as_array)
            .with_context(|| format!("entry {i} has no \"replicas\" list"))?
            .iter()
            .map(|r| r.as_i64().and_then(|r| i32::try_from(r).ok()))
            .collect::<Option<Vec<i32>>>()
            .with_context(|| format!("entry {i}: replicas must be broker ids"))?;
        if moves
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, replicas)
            .is_some()
        {
            bail!("Duplicate reassignment partitions: {topic}-{partition}");
        }
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_and_bad_files_say_why() {
        let text = r#"{"version":1,"partitions":[{"topic":"t","partition":1,"replicas":[3,1],"log_dirs":["any","any"]}]}"#;
        let moves = parse_plan(text).unwrap();
        assert_eq!(moves["t"][&1], vec![3, 1]);
        assert_eq!(plan_json(&moves), text);
        let err = |t: &str| format!("{:#}", parse_plan(t).unwrap_err());
        assert_eq!(
            err("{"),
            "not JSON: EOF while parsing an object at line 1 column 1"
        );
        assert_eq!(
            err(r#"{"version":2}"#),
            "version 2 is not supported (only 1)"
        );
        assert_eq!(
            err(r#"{"version":1,"partitions":[]}"#),
            "Partition reassignment list cannot be empty"
        );
        assert_eq!(
            err(
                r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1]},{"topic":"t","partition":0,"replicas":[2]}]}"#
            ),
            "Duplicate reassignment partitions: t-0"
        );
        assert_eq!(
            err(r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":["a"]}]}"#),
            "entry 0: replicas must be broker ids"
        );
    }
}
