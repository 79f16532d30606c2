//! Offset lookups and log-start moves: ListOffsets and DeleteRecords.

use std::sync::Arc;

use runnel_proto::broker::v1 as pb;

use super::{Broker, Failure};
use crate::grpc::Failed;

impl Broker {
    /// Kafka's DeleteRecords: `topic-partition` starts at `offset` (-1:
    /// the high watermark) from now on. Returns the new log start.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, Failure> {
        let p = self.leader(topic, partition)?;
        let offset = if offset == -1 {
            p.high_watermark()
        } else {
            offset
        };
        if offset < 0 {
            return Err(Failure::NegativeDeleteOffset { offset });
        }
        let target = Arc::clone(&p);
        match self
            .logs
            .io()
            .run(&p.key(), move || target.delete_records_before(offset))
            .await
        {
            Ok(Ok(start)) => Ok(start),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Earliest, latest, or first-at-timestamp offsets (below the last
    /// stable offset for read_committed).
    pub async fn list_offsets(&self, req: pb::ListOffsetsRequest) -> pb::ListOffsetsResponse {
        let committed = req.isolation_level() == pb::IsolationLevel::ReadCommitted;
        let mut out = Vec::with_capacity(req.partitions.len());
        for q in req.partitions {
            let mut r = pb::ListOffsetsPartitionResult {
                topic: q.topic.clone(),
                partition: q.partition,
                offset: -1,
                timestamp_ms: -1,
                leader_epoch: -1,
                ..Default::default()
            };
            let p = match self.leader(&q.topic, q.partition) {
                Ok(p) => p,
                Err(failure) => {
                    out.push(r.failed(&failure));
                    continue;
                }
            };
            r.leader_epoch = p.state().leader_epoch;
            let lookup = match q.spec() {
                pb::OffsetSpec::Earliest => Ok(Some((p.log_start_offset(), -1))),
                pb::OffsetSpec::Latest if committed => Ok(Some((p.last_stable_offset(), -1))),
                pb::OffsetSpec::Latest => Ok(Some((p.high_watermark(), -1))),
                pb::OffsetSpec::Timestamp => {
                    let (reader, ts) = (Arc::clone(&p), q.timestamp_ms);
                    tokio::task::spawn_blocking(move || reader.offset_for_timestamp(ts, committed))
                        .await
                        .unwrap_or_else(|e| {
                            Err(runnel_log::LogError::Corrupt {
                                path: Default::default(),
                                reason: e.to_string(),
                            })
                        })
                }
                pb::OffsetSpec::MaxTimestamp => {
                    let reader = Arc::clone(&p);
                    tokio::task::spawn_blocking(move || reader.max_timestamp_offset(committed))
                        .await
                        .unwrap_or_else(|e| {
                            Err(runnel_log::LogError::Corrupt {
                                path: Default::default(),
                                reason: e.to_string(),
                            })
                        })
                }
            };
            out.push(match lookup {
                Ok(Some((offset, ts))) => pb::ListOffsetsPartitionResult {
                    offset,
                    timestamp_ms: ts,
                    ..r
                },
                Ok(None) => r,
                Err(e) => r.failed(&Failure::from(e)),
            });
        }
        pb::ListOffsetsResponse { partitions: out }
    }
}
