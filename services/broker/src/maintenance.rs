//! Background upkeep of the hosted logs: retention, compaction and the
//! expiry of idle producers every `log.retention.check.interval.ms`, the
//! `flush.ms` policy and the open-file metrics every second, and another
//! try for offline partitions every ten.

use std::sync::Arc;
use std::time::Duration;

use runnel_common::shutdown::CancellationToken;
use runnel_log::CleanerConfig;

use futures::StreamExt;

use crate::log_manager::LogManager;
use crate::metadata::MetadataCache;
use crate::partition::Partition;

/// Kafka's `replica.high.watermark.checkpoint.interval.ms` default.
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// How often offline partitions are tried again.
const OFFLINE_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Partitions a sweep works on at once (each on its I/O thread).
const SWEEP_PARALLELISM: usize = 64;

/// What the periodic upkeep needs to know.
#[derive(Debug, Clone)]
pub struct Upkeep {
    /// `log.retention.check.interval.ms`.
    pub retention_interval: Duration,
    /// The compaction settings.
    pub cleaner: CleanerConfig,
    /// `producer.id.expiration.ms`: idempotent producers silent this long are forgotten.
    pub producer_id_expiration_ms: i64,
}

/// Runs retention, flushing and compaction, and retries offline
/// partitions, until `shutdown`.
pub async fn run(
    logs: Arc<LogManager>,
    metadata: Arc<MetadataCache>,
    upkeep: Upkeep,
    shutdown: CancellationToken,
) {
    let Upkeep {
        retention_interval,
        cleaner,
        producer_id_expiration_ms,
    } = upkeep;
    let mut retention = tokio::time::interval(retention_interval.max(Duration::from_millis(10)));
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    let mut checkpoint = tokio::time::interval(HW_CHECKPOINT_INTERVAL);
    let mut retry = tokio::time::interval(OFFLINE_RETRY_INTERVAL);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = retention.tick() => {
                futures::stream::iter(logs.all())
                    .for_each_concurrent(SWEEP_PARALLELISM, |p| {
                        retain_and_compact(&logs, p, &cleaner, producer_id_expiration_ms)
                    })
                    .await;
            }
            _ = checkpoint.tick() => {
                let logs = Arc::clone(&logs);
                let written = tokio::task::spawn_blocking(move || logs.checkpoint_high_watermarks()).await;
                if let Ok(Err(e)) = written {
                    tracing::error!(error = %e, "writing the high-watermark checkpoint failed");
                }
            }
            _ = flush.tick() => {
                let due = logs.all().into_iter().filter(|p| p.may_flush_by_time());
                futures::stream::iter(due)
                    .for_each_concurrent(SWEEP_PARALLELISM, |p| {
                        let logs = &logs;
                        async move {
                            let key = p.key();
                            let target = Arc::clone(&p);
                            if let Ok(Err(e)) = logs.io().run(&key, move || target.flush_if_due()).await {
                                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
                            }
                        }
                    })
                    .await;
                let files = logs.file_stats();
                metrics::gauge!("runnel_broker_log_open_files").set(files.open as f64);
                metrics::gauge!("runnel_broker_log_open_files_budget").set(files.budget as f64);
                metrics::counter!("runnel_broker_log_file_evictions_total").absolute(files.evicted);
                let (hosted, leading, under) = logs.counts();
                metrics::gauge!("runnel_broker_partitions").set(hosted as f64);
                metrics::gauge!("runnel_broker_leader_partitions").set(leading as f64);
                metrics::gauge!("runnel_broker_under_replicated_partitions").set(under as f64);
            }
            _ = retry.tick(), if logs.has_offline() => {
                // Offline partitions get another try with the metadata as it is now.
                if let Err(e) = logs.reconcile(&metadata.snapshot(), false).await {
                    tracing::error!(error = %e, "retrying offline partitions failed");
                }
            }
        }
    }
}

async fn retain_and_compact(
    logs: &LogManager,
    p: Arc<Partition>,
    cleaner: &CleanerConfig,
    producer_id_expiration_ms: i64,
) {
    let key = p.key();
    let target = Arc::clone(&p);
    let planned = logs
        .io()
        .run(&key, move || {
            target
                .retain_and_flush(producer_id_expiration_ms)
                .map(|()| target.plan_cleaning())
        })
        .await;
    let plan = match planned {
        Ok(Ok(Some(plan))) => plan,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(e)) => {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed");
            return;
        }
    };
    // The rewrite reads and writes whole segments: keep it off the I/O thread.
    let config = cleaner.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let cleaned = match tokio::task::spawn_blocking(move || plan.run(&config, now)).await {
        Ok(Ok(cleaned)) => cleaned,
        Ok(Err(e)) => {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "compaction failed");
            return;
        }
        Err(_) => return,
    };
    let target = Arc::clone(&p);
    if let Ok(Err(e)) = logs
        .io()
        .run(&key, move || target.install_cleaned(cleaned))
        .await
    {
        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "installing compacted segments failed");
    }
}
