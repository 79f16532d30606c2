//! Background upkeep of the hosted logs: retention, compaction and the
//! expiry of idle producers every `log.retention.check.interval.ms`, and the
//! `flush.ms` policy every second.

use std::sync::Arc;
use std::time::Duration;

use runnel_common::shutdown::CancellationToken;
use runnel_log::CleanerConfig;

use crate::log_manager::LogManager;
use crate::partition::Partition;

/// Kafka's `replica.high.watermark.checkpoint.interval.ms` default.
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

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

/// Runs retention, flushing and compaction until `shutdown`.
pub async fn run(logs: Arc<LogManager>, upkeep: Upkeep, shutdown: CancellationToken) {
    let Upkeep {
        retention_interval,
        cleaner,
        producer_id_expiration_ms,
    } = upkeep;
    let mut retention = tokio::time::interval(retention_interval.max(Duration::from_millis(10)));
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    let mut checkpoint = tokio::time::interval(HW_CHECKPOINT_INTERVAL);
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = retention.tick() => {
                for p in logs.all() {
                    retain_and_compact(&logs, p, &cleaner, producer_id_expiration_ms).await;
                }
            }
            _ = checkpoint.tick() => {
                let logs = Arc::clone(&logs);
                let written = tokio::task::spawn_blocking(move || logs.checkpoint_high_watermarks()).await;
                if let Ok(Err(e)) = written {
                    tracing::error!(error = %e, "writing the high-watermark checkpoint failed");
                }
            }
            _ = flush.tick() => {
                for p in logs.all() {
                    let key = p.key();
                    let target = Arc::clone(&p);
                    // Cheap when nothing is due: it only compares a counter and a time.
                    if let Ok(Err(e)) = logs.io().run(&key, move || target.flush_if_due()).await {
                        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
                    }
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
