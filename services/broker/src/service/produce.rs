//! Produce: appending a request's batches to the partitions this broker
//! leads, then answering per `acks` (for acks=all once the ISR has them).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use runnel_common::shutdown::CancellationToken;
use runnel_log::LogError;
use runnel_proto::broker::v1 as pb;
use tokio::time::Instant;

use super::{Broker, Failure};
use crate::grpc::Failed;
use crate::partition::Partition;

impl Broker {
    /// Appends each partition's batches; answers when they are acknowledged per `acks`.
    pub async fn produce(&self, req: pb::ProduceRequest) -> pb::ProduceResponse {
        self.start_produce(req).await.await
    }

    /// Applies a produce: a transactional producer's batches are verified
    /// with its coordinator where need be (KIP-890, see `coordinators`),
    /// then every partition's batches are checked and queued
    /// for their log's I/O thread, in request order, before this returns.
    /// The future it returns answers once they are appended and
    /// acknowledged per `acks`; it does not hold the broker, so a
    /// connection's next Produce can be applied meanwhile.
    pub async fn start_produce(
        &self,
        req: pb::ProduceRequest,
    ) -> impl Future<Output = pb::ProduceResponse> + Send + 'static {
        let acks = req.acks();
        let timeout = Duration::from_millis(u64::from(req.timeout_ms).max(1));
        let mut refused = if req.transactional_id.is_empty() {
            Default::default()
        } else {
            self.verify_transactions(&req.transactional_id, &req.partitions)
                .await
        };
        let mut pending = Vec::with_capacity(req.partitions.len());
        for p in req.partitions {
            let future = match refused.remove(&(p.topic.clone(), p.partition)) {
                Some(failure) => {
                    let result = pb::ProducePartitionResult {
                        topic: p.topic,
                        partition: p.partition,
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: -1,
                        ..Default::default()
                    }
                    .failed(&failure);
                    futures::future::ready(result).boxed()
                }
                None => self.start_produce_partition(acks, timeout, p).await,
            };
            pending.push(future);
        }
        async move {
            let mut partitions = join_all(pending).await;
            if acks == pb::Acks::None {
                // The producer asked for no acknowledgement: it gets no offsets.
                for p in &mut partitions {
                    p.base_offset = -1;
                    p.batch_base_offsets.clear();
                }
            }
            pb::ProduceResponse { partitions }
        }
    }

    /// Checks one partition's part of a produce and queues its append; the
    /// future answers once it is appended and acknowledged.
    async fn start_produce_partition(
        &self,
        acks: pb::Acks,
        timeout: Duration,
        req: pb::ProducePartition,
    ) -> BoxFuture<'static, pb::ProducePartitionResult> {
        let result = pb::ProducePartitionResult {
            topic: req.topic.clone(),
            partition: req.partition,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            ..Default::default()
        };
        let answer = |r: pb::ProducePartitionResult| futures::future::ready(r).boxed();
        let p = match self.leader(&req.topic, req.partition) {
            Ok(p) => p,
            Err(failure) => return answer(result.failed(&failure)),
        };
        let state = p.state();
        if acks == pb::Acks::All && (state.isr.len() as i32) < state.config.min_insync_replicas {
            let failure = Failure::NotEnoughReplicas {
                topic: req.topic,
                partition: req.partition,
                isr: state.isr.len(),
                min_insync_replicas: state.config.min_insync_replicas,
            };
            return answer(result.failed(&failure));
        }
        let size = req.records.len();
        // The log patches offsets in place: take the buffer if we own it, else copy.
        let mut records: BytesMut = req
            .records
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
        let key = p.key();
        let epoch = state.leader_epoch;
        let target = Arc::clone(&p);
        // The disk write happens on an I/O thread; keep it in this request's trace.
        let span = tracing::info_span!("append", topic = %req.topic, partition = req.partition, bytes = size);
        let append = move || span.in_scope(|| target.append(&mut records, epoch));
        let appended = match self.logs.io().submit(&key, append).await {
            Ok(appended) => appended,
            Err(e) => return answer(result.failed(&Failure::from(e))),
        };
        let shutdown = self.shutdown.clone();
        async move {
            let info = match appended.await {
                Ok(Ok(info)) => info,
                Ok(Err(e)) => {
                    let failure = Failure::from(e);
                    let answer = result.failed(&failure);
                    let record_errors = match failure {
                        Failure::Log(LogError::RejectedRecords { errors, .. }) => errors
                            .into_iter()
                            .map(|r| pb::RecordError {
                                batch_index: r.batch_index,
                                message: r.message,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    return pb::ProducePartitionResult {
                        record_errors,
                        ..answer
                    };
                }
                Err(e) => return result.failed(&Failure::from(e)),
            };
            metrics::counter!("runnel_broker_bytes_in_total").increment(size as u64);
            metrics::counter!("runnel_broker_records_in_total").increment(info.record_count);
            if info.duplicate_batches > 0 {
                // An idempotent producer's retry of batches already stored.
                metrics::counter!("runnel_broker_duplicate_batches_total")
                    .increment(info.duplicate_batches as u64);
            }
            if acks == pb::Acks::All
                && let Err(failure) =
                    Self::await_replication(&p, epoch, info.last_offset, timeout, &shutdown).await
            {
                return result.failed(&failure);
            }
            pb::ProducePartitionResult {
                base_offset: info.first_offset,
                batch_base_offsets: info.batch_base_offsets,
                log_append_time_ms: info.log_append_time.unwrap_or(-1),
                log_start_offset: p.log_start_offset(),
                ..result
            }
        }
        .boxed()
    }

    /// acks=all: waits until the high watermark covers `last_offset`, i.e.
    /// every in-sync replica has it, while this broker still leads in `epoch`.
    pub(super) async fn await_replication(
        p: &Partition,
        epoch: i32,
        last_offset: i64,
        timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = p.data.notified();
            let state = p.state();
            if !state.is_leader || state.leader_epoch != epoch {
                return Err(Failure::LeadershipMoved {
                    topic: p.topic.clone(),
                    partition: p.index,
                    leader: state.leader,
                });
            }
            if p.high_watermark() > last_offset {
                if (state.isr.len() as i32) < state.config.min_insync_replicas {
                    return Err(Failure::NotEnoughReplicasAfterAppend {
                        topic: p.topic.clone(),
                        partition: p.index,
                        isr: state.isr.len(),
                        min_insync_replicas: state.config.min_insync_replicas,
                    });
                }
                return Ok(());
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Failure::ReplicationTimedOut {
                        topic: p.topic.clone(),
                        partition: p.index,
                        isr: state.isr,
                        timeout_ms: timeout.as_millis(),
                    });
                }
                () = shutdown.cancelled() => {
                    return Err(Failure::ShuttingDown);
                }
            }
        }
    }
}
