//! Fetch, for consumers and following replicas: reading replicated batches
//! (read_committed: below the last stable offset, with the aborted
//! transactions to skip; followers: everything), long-polling for
//! `min_bytes`, and the follower checks; OffsetForLeaderEpoch, which followers and consumers use to find
//! where their log diverged from the leader's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use tokio::time::Instant;

use super::{Broker, Failure, check_leader_epoch};
use crate::grpc::Failed;
use crate::partition::{CommittedRead, Partition};
use crate::replication_quota::Side;

/// Kafka's default `fetch.max.bytes`.
const DEFAULT_FETCH_MAX_BYTES: usize = 52_428_800;
/// Kafka's default `max.partition.fetch.bytes`.
const DEFAULT_PARTITION_FETCH_BYTES: usize = 1_048_576;
/// Longest a fetch may wait for data.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

impl Broker {
    /// A fetching follower must be a registered, unfenced broker in the
    /// incarnation it names.
    fn check_replica(&self, r: &pb::FetchingReplica) -> Result<(), Failure> {
        self.metadata
            .with(|image| match image.brokers.get(&r.broker_id) {
                Some(b) if b.epoch == r.broker_epoch && !b.fenced => Ok(()),
                Some(b) => Err(Failure::StaleReplicaEpoch {
                    replica: r.broker_id,
                    epoch: r.broker_epoch,
                    registered: b.epoch,
                    fenced: b.fenced,
                }),
                None => Err(Failure::UnregisteredReplica {
                    replica: r.broker_id,
                }),
            })
    }

    /// Kafka's OffsetForLeaderEpoch: where each asked epoch ends in this leader's log.
    pub async fn offset_for_leader_epoch(
        &self,
        req: pb::OffsetForLeaderEpochRequest,
    ) -> pb::OffsetForLeaderEpochResponse {
        let partitions = req
            .partitions
            .into_iter()
            .map(|q| {
                let r = pb::EpochEndOffset {
                    topic: q.topic.clone(),
                    partition: q.partition,
                    leader_epoch: -1,
                    end_offset: -1,
                    ..Default::default()
                };
                let p = match self.leader(&q.topic, q.partition) {
                    Ok(p) => p,
                    Err(failure) => return r.failed(&failure),
                };
                if let Err(failure) = check_leader_epoch(q.current_leader_epoch, p.leader_epoch()) {
                    return r.failed(&failure);
                }
                match p.end_offset_for_epoch(q.leader_epoch) {
                    Some((leader_epoch, end_offset)) => pb::EpochEndOffset {
                        leader_epoch,
                        end_offset,
                        ..r
                    },
                    None => r,
                }
            })
            .collect();
        pb::OffsetForLeaderEpochResponse { partitions }
    }

    /// Reads committed batches, waiting up to `max_wait_ms` for `min_bytes`.
    pub async fn fetch(&self, req: pb::FetchRequest) -> pb::FetchResponse {
        let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_FETCH_WAIT);
        let deadline = Instant::now() + wait;
        let max_bytes = if req.max_bytes == 0 {
            DEFAULT_FETCH_MAX_BYTES
        } else {
            req.max_bytes as usize
        };
        let min_bytes = req.min_bytes as usize;
        let committed = req.isolation_level() == pb::IsolationLevel::ReadCommitted;
        let follower = match &req.replica {
            None => None,
            Some(r) => match self.check_replica(r) {
                Ok(()) => Some(r.broker_id),
                Err(failure) => {
                    let partitions = req
                        .partitions
                        .iter()
                        .map(|p| {
                            pb::FetchPartitionResult {
                                topic: p.topic.clone(),
                                partition: p.partition,
                                high_watermark: -1,
                                log_start_offset: -1,
                                ..Default::default()
                            }
                            .failed(&failure)
                        })
                        .collect();
                    return pb::FetchResponse { partitions };
                }
            },
        };
        loop {
            // Register for wake-ups before looking, so an append in between is not missed.
            let partitions: Vec<Option<Arc<Partition>>> = req
                .partitions
                .iter()
                .map(|p| self.logs.get(&p.topic, p.partition))
                .collect();
            let mut wakeups: Vec<_> = partitions
                .iter()
                .flatten()
                .map(|p| Box::pin(p.data.notified()))
                .collect();
            // Registered now, not at their first poll, so nothing in between is missed.
            for w in &mut wakeups {
                w.as_mut().enable();
            }
            let mut results = Vec::with_capacity(req.partitions.len());
            let mut total = 0usize;
            let mut errors = false;
            // A throttled replica held back: look again once the throttle allows.
            let mut held = false;
            for fp in &req.partitions {
                let r = self
                    .fetch_partition(
                        fp,
                        max_bytes.saturating_sub(total),
                        total == 0,
                        follower,
                        committed,
                        &mut held,
                    )
                    .await;
                total += r.records.len();
                errors |= r.error_code != ErrorCode::None as i32;
                results.push(r);
            }
            let done = total >= min_bytes.max(1)
                || errors
                || Instant::now() >= deadline
                || self.shutdown.is_cancelled();
            if done {
                metrics::counter!("runnel_broker_bytes_out_total").increment(total as u64);
                return pb::FetchResponse {
                    partitions: results,
                };
            }
            let any_data = async {
                if wakeups.is_empty() {
                    std::future::pending::<()>().await;
                }
                futures::future::select_all(wakeups).await;
            };
            let recheck = if held {
                let wait = self
                    .replication_quotas
                    .wait(Side::Leader, Duration::from_millis(500))
                    .max(Duration::from_millis(5));
                deadline.min(Instant::now() + wait)
            } else {
                deadline
            };
            tokio::select! {
                () = any_data => {}
                () = tokio::time::sleep_until(recheck) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
    }

    async fn fetch_partition(
        &self,
        req: &pb::FetchPartition,
        budget: usize,
        first: bool,
        follower: Option<i32>,
        committed: bool,
        held: &mut bool,
    ) -> pb::FetchPartitionResult {
        let mut result = pb::FetchPartitionResult {
            topic: req.topic.clone(),
            partition: req.partition,
            high_watermark: -1,
            log_start_offset: -1,
            last_stable_offset: -1,
            ..Default::default()
        };
        let p = match self.leader(&req.topic, req.partition) {
            Ok(p) => p,
            Err(failure) => return fail_fetch(result, &failure),
        };
        if let Err(failure) = check_leader_epoch(req.current_leader_epoch, p.leader_epoch()) {
            return fail_fetch(result, &failure);
        }
        if let Some(id) = follower
            && !p.has_replica(id)
        {
            let failure = Failure::NotAReplica {
                replica: id,
                topic: req.topic.clone(),
                partition: req.partition,
            };
            return fail_fetch(result, &failure);
        }
        let (start, end) = (p.log_start_offset(), p.log_end_offset());
        if let Some(id) = follower
            && (start..=end).contains(&req.fetch_offset)
        {
            p.follower_fetched(id, req.fetch_offset);
        }
        let hw = p.high_watermark();
        let lso = p.last_stable_offset();
        result.high_watermark = hw;
        result.last_stable_offset = lso;
        result.log_start_offset = start;
        if req.fetch_offset < start || req.fetch_offset > end {
            let failure = Failure::OffsetOutOfRange {
                offset: req.fetch_offset,
                topic: req.topic.clone(),
                partition: req.partition,
                log_start: start,
                log_end: end,
            };
            return fail_fetch(result, &failure);
        }
        // Consumers read what is replicated (read_committed: what is also
        // settled); followers read everything.
        let readable_end = match (follower, committed) {
            (Some(_), _) => end,
            (None, true) => lso,
            (None, false) => hw,
        };
        if req.fetch_offset >= readable_end || budget == 0 {
            return result;
        }
        // An out-of-sync follower of a throttled replica waits while the
        // leader's throttled bytes are over `leader.replication.throttled.rate`.
        let throttled = follower
            .is_some_and(|id| p.replication_throttled(Side::Leader, self.limits.broker_id, id));
        if throttled && self.replication_quotas.exceeded(Side::Leader) {
            *held = true;
            return result;
        }
        let limit = if req.partition_max_bytes == 0 {
            DEFAULT_PARTITION_FETCH_BYTES
        } else {
            req.partition_max_bytes as usize
        };
        let max = limit.min(budget);
        let Ok(_permit) = self.read_permits.acquire().await else {
            return result;
        };
        let offset = req.fetch_offset;
        let reader = Arc::clone(&p);
        let read = move || {
            if follower.is_some() {
                reader
                    .read_for_follower(offset, max)
                    .map(|records| CommittedRead {
                        records,
                        aborted: Vec::new(),
                    })
            } else if committed {
                reader.read_committed(offset, max, first, lso)
            } else {
                reader
                    .read(offset, max, first)
                    .map(|records| CommittedRead {
                        records,
                        aborted: Vec::new(),
                    })
            }
        };
        match tokio::task::spawn_blocking(read).await {
            Ok(Ok(read)) => {
                if throttled {
                    self.replication_quotas
                        .record(Side::Leader, read.records.len());
                }
                result.records = read.records;
                result.aborted_transactions = read
                    .aborted
                    .into_iter()
                    .map(|a| pb::AbortedTransaction {
                        producer_id: a.producer_id,
                        first_offset: a.first_offset,
                    })
                    .collect();
                result
            }
            Ok(Err(e)) => fail_fetch(result, &Failure::from(e)),
            Err(e) => fail_fetch(result, &Failure::ReadTask(e)),
        }
    }
}

/// A failed partition of a fetch: no records, whatever was read.
fn fail_fetch(r: pb::FetchPartitionResult, failure: &Failure) -> pb::FetchPartitionResult {
    pb::FetchPartitionResult {
        records: Bytes::new(),
        ..r.failed(failure)
    }
}
