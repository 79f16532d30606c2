//! `runnel bench metadata`: metadata write throughput and latency (topic
//! creations through the controllers), and, with `--kill-active`, how long
//! the controller quorum takes to accept writes again after its active
//! controller is killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use runnel_client::{Admin, ClientConfig, NewTopic};
use tokio::time::Instant;

use crate::{out, outln};

/// Options of `runnel bench metadata`.
#[derive(Debug, Clone, clap::Args)]
pub struct MetadataArgs {
    /// Topics to create (each is one metadata write of a few records).
    #[arg(long, default_value_t = 500)]
    topics: usize,
    /// Concurrent creators.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Topic name prefix; the topics are deleted at the end.
    #[arg(long, default_value = "runnel-bench-meta")]
    prefix: String,
    /// After half the topics, run this shell command with `{id}` replaced
    /// by the active controller's id (e.g. `kill -9 $(cat c{id}.pid)`),
    /// then report the failover time: from the command's end to the next
    /// acknowledged creation, retried every 20 ms.
    #[arg(long)]
    kill_active: Option<String>,
}

/// Runs the benchmark.
pub async fn run(client: ClientConfig, args: MetadataArgs) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    let before = admin.describe_cluster().await?;
    let controllers = before.controllers.len().max(1);
    outln!(
        "metadata: {} topic creations ({} partition(s) each), {} creator(s), {} controller(s)",
        args.topics,
        args.partitions,
        args.concurrency,
        controllers
    )?;
    let half = args.topics / 2;
    let (first, second) = if args.kill_active.is_some() {
        (half, args.topics - half)
    } else {
        (args.topics, 0)
    };
    let (elapsed, latency) = create_all(&admin, &args, 0, first).await?;
    report(first, elapsed, &latency)?;
    if let Some(command) = &args.kill_active {
        let active = wait_quorum_caught_up(&admin).await?;
        let command = command.replace("{id}", &active.to_string());
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .status()
            .await
            .with_context(|| format!("running {command:?}"))?;
        if !status.success() {
            bail!("{command:?} failed: {status}");
        }
        let killed = Instant::now();
        // A short request timeout, so a call stuck on the dead controller
        // is given up and retried, not waited out.
        let quick = Admin::new(ClientConfig {
            request_timeout: Duration::from_millis(300),
            ..client.clone()
        });
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let name = format!("{}-failover-{attempts}", args.prefix);
            if create(&quick, &name, args.partitions).await.is_ok() {
                break;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("no metadata write was accepted within 60 s of killing controller {active}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failover = killed.elapsed();
        outln!(
            "failover: controller {active} killed; next metadata write acknowledged after {:.0} ms ({attempts} attempts)",
            failover.as_secs_f64() * 1000.0
        )?;
        let (elapsed, latency) = create_all(&admin, &args, first, second).await?;
        out!("after failover: ")?;
        report(second, elapsed, &latency)?;
    }
    // Clean up (best effort: the topics are the benchmark's own).
    for name in admin.list_topics().await? {
        if name.starts_with(&args.prefix) {
            let _ = admin.delete_topic(&name).await;
        }
    }
    Ok(())
}

async fn create(admin: &Admin, name: &str, partitions: i32) -> runnel_client::Result<()> {
    admin
        .create_topic(
            NewTopic::new(name)
                .partitions(partitions)
                .replication_factor(1),
        )
        .await
}

/// Creates topics `from..from + count` with the configured concurrency.
async fn create_all(
    admin: &Admin,
    args: &MetadataArgs,
    from: usize,
    count: usize,
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    let next = Arc::new(AtomicUsize::new(from));
    let end = from + count;
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (admin, next, prefix, partitions) = (
            admin.clone(),
            Arc::clone(&next),
            args.prefix.clone(),
            args.partitions,
        );
        workers.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(h);
                }
                let t = Instant::now();
                create(&admin, &format!("{prefix}-{i}"), partitions)
                    .await
                    .with_context(|| format!("creating {prefix}-{i}"))?;
                h.saturating_record(t.elapsed().as_micros().max(1) as u64);
            }
        });
    }
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    while let Some(r) = workers.join_next().await {
        latency.add(r??)?;
    }
    Ok((start.elapsed(), latency))
}

fn report(
    count: usize,
    elapsed: Duration,
    latency: &Histogram<u64>,
) -> Result<(), crate::output::OutputError> {
    outln!(
        "{count} creations in {:.2} s: {:.0} creations/s",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    )?;
    super::print_latency("creation latency", latency)
}

/// Waits until every controller holds the active controller's whole Raft
/// log (a controller restarted by an earlier round may still be catching
/// up: the failover measured is that of a healthy quorum) and returns the
/// active controller's id.
async fn wait_quorum_caught_up(admin: &Admin) -> anyhow::Result<i32> {
    let start = Instant::now();
    loop {
        let controllers = admin.describe_cluster().await?.controllers;
        let active = controllers.iter().find(|c| c.active);
        if let Some(active) = active
            && controllers
                .iter()
                .all(|c| c.matched_index >= 0 && c.matched_index == active.matched_index)
        {
            return Ok(active.id);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!(
                "the controllers did not catch up with the active one within 30 s: {controllers:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
