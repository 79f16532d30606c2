//! Consumer-group benchmarks: group consume against assigned consume,
//! rebalance time, and offset-commit throughput.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use runnel_client::{
    Admin, Cluster, ConsumerConfig, GroupConfig, GroupConsumer, GroupProtocol, NewTopic,
    OffsetReset, TopicPartition,
};
use tokio::time::Instant;

use super::{
    Args, Outcome, available, consume, ensure_topic, histogram, print_latency, produce, unique,
};
use crate::{errln, outln};

/// `runnel bench group-consume` options.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupConsumeArgs {
    #[command(flatten)]
    base: Args,
    /// Rounds of each (alternating assigned and group, so both see the same machine).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// `runnel bench rebalance` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RebalanceArgs {
    /// Group members.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Partitions of the topic they share.
    #[arg(long, default_value_t = 1000)]
    partitions: i32,
    /// The assignor: with the classic protocol range, roundrobin or
    /// cooperative-sticky (partition.assignment.strategy); with the consumer
    /// protocol uniform or range (group.remote.assignor).
    #[arg(long, default_value = "range")]
    assignor: String,
    /// group.protocol: classic or consumer (KIP-848).
    #[arg(long, default_value = "classic", value_parser = ["classic", "consumer"])]
    group_protocol: String,
    /// heartbeat.interval.ms: how soon members hear of a rebalance (classic
    /// protocol; the consumer protocol's comes from the coordinator).
    #[arg(long, default_value_t = 3000)]
    heartbeat_interval_ms: u64,
    /// Topic (created if missing).
    #[arg(long, default_value = "runnel-bench-rebalance")]
    topic: String,
}

/// `runnel bench commit` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CommitArgs {
    /// Commits in all.
    #[arg(long, default_value_t = 20_000)]
    commits: u64,
    /// Groups committing at once (one member each, each committing in turn).
    #[arg(long, default_value_t = 8)]
    groups: usize,
    /// Partitions each commit carries.
    #[arg(long, default_value_t = 1)]
    partitions_per_commit: i32,
    /// Topic (created if missing).
    #[arg(long, default_value = "runnel-bench")]
    topic: String,
}

/// Reads `args.records` as the only member of a new group.
async fn group_consume(cluster: &Arc<Cluster>, args: &Args) -> anyhow::Result<Outcome> {
    let mut config = GroupConfig::new(unique("runnel-bench"));
    config.consumer = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        max_poll_records: 100_000,
        ..ConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::with_cluster(Arc::clone(cluster), config);
    consumer.subscribe(vec![args.topic.clone()]);
    // Joining is not reading: the clock starts at the first record.
    let mut first = consumer.poll(Duration::from_secs(30)).await?;
    if first.is_empty() {
        bail!("the group member read nothing in 30 s");
    }
    let start = Instant::now();
    let mut latency = histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    loop {
        records += first.len() as u64;
        bytes += first
            .iter()
            .map(|r| r.value.as_ref().map_or(0, Bytes::len) as u64)
            .sum::<u64>();
        if records >= args.records {
            break;
        }
        let t = Instant::now();
        first = consumer.poll(Duration::from_secs(5)).await?;
        if first.is_empty() {
            bail!(
                "no records arrived for 5 s after {records} of {}",
                args.records
            );
        }
        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
    }
    let elapsed = start.elapsed();
    consumer.close().await?;
    Ok(Outcome {
        records,
        bytes,
        elapsed,
        latency,
    })
}

/// Group consume against assigned consume of the same records, alternating.
pub async fn run_group_consume(
    cluster: Arc<Cluster>,
    args: GroupConsumeArgs,
) -> anyhow::Result<()> {
    let base = &args.base;
    ensure_topic(&cluster, &base.topic, base.partitions).await?;
    let have = available(&cluster, &base.topic).await?;
    if have < base.records {
        errln!("preparing: producing {} records first", base.records - have);
        let fill = Args {
            records: base.records - have,
            ..base.clone()
        };
        produce(&cluster, &fill, false).await?;
    }
    let rate = |o: &Outcome| o.records as f64 / o.elapsed.as_secs_f64().max(1e-9);
    let (mut assigned, mut grouped) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let a = consume(&cluster, base).await?;
        let g = group_consume(&cluster, base).await?;
        outln!(
            "round {round}: assigned {:.0} records/s, group {:.0} records/s",
            rate(&a),
            rate(&g)
        )?;
        assigned.push(rate(&a));
        grouped.push(rate(&g));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, g) = (median(&mut assigned), median(&mut grouped));
    outln!(
        "group-consume: {} records ({} B) from {} ({} partitions), {} rounds",
        base.records,
        base.record_size,
        base.topic,
        base.partitions,
        args.rounds
    )?;
    outln!(
        "median: assigned {a:.0} records/s, group {g:.0} records/s, group/assigned {:.2}",
        g / a
    )?;
    Ok(())
}

/// What each member last saw: (generation, partitions owned).
type Views = Arc<parking_lot::Mutex<Vec<Option<(i32, usize)>>>>;

struct BenchMember {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start_member(
    cluster: &Arc<Cluster>,
    args: &RebalanceArgs,
    group: &str,
    index: usize,
    views: &Views,
) -> BenchMember {
    let mut config = GroupConfig::new(group);
    if args.group_protocol == "consumer" {
        config.group_protocol = GroupProtocol::Consumer;
        config.group_remote_assignor = Some(args.assignor.clone());
    } else {
        config.assignment_strategy = vec![args.assignor.clone()];
    }
    config.heartbeat_interval = Duration::from_millis(args.heartbeat_interval_ms);
    config.enable_auto_commit = false;
    config.consumer.fetch_max_wait = Duration::from_millis(100);
    let mut consumer = GroupConsumer::with_cluster(Arc::clone(cluster), config);
    consumer.subscribe(vec![args.topic.clone()]);
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let views = Arc::clone(views);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                r = consumer.poll(Duration::from_millis(100)) => { r?; }
            }
            let (_, generation) = consumer.member();
            views.lock()[index] = Some((generation, consumer.assignment().len()));
        }
        views.lock()[index] = None;
        consumer.close().await?;
        anyhow::Ok(())
    });
    BenchMember { stop, task }
}

/// Every running member in one generation (past `after`), all partitions owned.
fn settled(views: &Views, partitions: i32, after: i32) -> Option<i32> {
    let v = views.lock();
    let running: Vec<(i32, usize)> = v.iter().flatten().copied().collect();
    let generation = running.first()?.0;
    let all_same = running.iter().all(|(g, _)| *g == generation);
    let owned: usize = running.iter().map(|(_, n)| n).sum();
    (all_same && generation > after && owned == partitions as usize).then_some(generation)
}

async fn wait_settled(
    views: &Views,
    partitions: i32,
    after: i32,
    what: &str,
) -> anyhow::Result<(i32, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(g) = settled(views, partitions, after) {
            return Ok((g, start.elapsed()));
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("{what}: the group did not settle in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Rebalance time: all members join, one more joins, one leaves.
pub async fn run_rebalance(cluster: Arc<Cluster>, args: RebalanceArgs) -> anyhow::Result<()> {
    let admin = Admin::with_cluster(Arc::clone(&cluster));
    if !admin.list_topics().await?.contains(&args.topic) {
        admin
            .create_topic(NewTopic::new(&args.topic).partitions(args.partitions))
            .await
            .with_context(|| format!("cannot create topic {}", args.topic))?;
    }
    let partitions = admin.describe_topic(&args.topic).await?.partitions.len() as i32;
    let group = unique("runnel-bench-rebalance");
    let views: Views = Arc::new(parking_lot::Mutex::new(vec![None; args.members + 1]));
    let mut members: Vec<BenchMember> = (0..args.members)
        .map(|i| start_member(&cluster, &args, &group, i, &views))
        .collect();
    let (g1, join) = wait_settled(&views, partitions, 0, "initial join").await?;
    outln!(
        "rebalance: {} members, {partitions} partitions, group.protocol {}, assignor {}, heartbeat interval {}",
        args.members,
        args.group_protocol,
        args.assignor,
        if args.group_protocol == "consumer" {
            "set by the coordinator (group.consumer.heartbeat.interval.ms)".to_owned()
        } else {
            format!("{} ms", args.heartbeat_interval_ms)
        }
    )?;
    outln!(
        "initial join (includes group.initial.rebalance.delay.ms): {:.2} s, generation {g1}",
        join.as_secs_f64()
    )?;
    members.push(start_member(&cluster, &args, &group, args.members, &views));
    let (g2, joined) = wait_settled(&views, partitions, g1, "a member joining").await?;
    outln!(
        "one member joins: {:.2} s until every partition has its owner again (generation {g2})",
        joined.as_secs_f64()
    )?;
    let leaving = members.remove(0);
    let _ = leaving.stop.send(());
    leaving.task.await??;
    let (g3, left) = wait_settled(&views, partitions, g2, "a member leaving").await?;
    outln!(
        "one member leaves: {:.2} s until every partition has its owner again (generation {g3})",
        left.as_secs_f64()
    )?;
    for m in members {
        let _ = m.stop.send(());
        m.task.await??;
    }
    Ok(())
}

/// Offset-commit throughput: `groups` members commit in turn, concurrently.
pub async fn run_commit(cluster: Arc<Cluster>, args: CommitArgs) -> anyhow::Result<()> {
    let partitions = args.partitions_per_commit.max(1);
    ensure_topic(&cluster, &args.topic, partitions).await?;
    let per_group = args.commits / args.groups.max(1) as u64;
    let mut members = Vec::new();
    for i in 0..args.groups.max(1) {
        let mut config = GroupConfig::new(unique(&format!("runnel-bench-commit-{i}")));
        config.enable_auto_commit = false;
        let mut consumer = GroupConsumer::with_cluster(Arc::clone(&cluster), config);
        consumer.subscribe(vec![args.topic.clone()]);
        // Join before the clock starts.
        consumer.poll(Duration::from_millis(10)).await?;
        members.push(consumer);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for consumer in members {
        let topic = args.topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            for n in 0..per_group {
                let offsets = (0..partitions)
                    .map(|p| (TopicPartition::new(&topic, p), n as i64))
                    .collect();
                let t = Instant::now();
                consumer.commit_offsets(offsets).await?;
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
            }
            consumer.close().await?;
            anyhow::Ok(h)
        }));
    }
    let mut all = histogram();
    for t in tasks {
        let _ = all.add(&t.await??);
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let total = per_group * args.groups.max(1) as u64;
    outln!(
        "commit: {total} commits of {partitions} partition(s) from {} group(s)",
        args.groups
    )?;
    outln!(
        "throughput: {:.0} commits/s ({:.0} offsets/s) in {secs:.2} s",
        total as f64 / secs,
        (total * partitions as u64) as f64 / secs
    )?;
    print_latency("commit latency", &all)?;
    Ok(())
}
