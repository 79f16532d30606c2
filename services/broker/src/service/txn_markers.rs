//! WriteTxnMarkers: the transaction coordinator ends a transaction in the
//! partitions this broker leads, one commit or abort marker per partition,
//! answered once the in-sync replicas have it (as Kafka writes markers with
//! acks=all). A marker in `__consumer_offsets` also settles the producer's
//! transactional offset commits with that partition's coordinator.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use runnel_common::backoff::Backoff;
use runnel_common::metadata::OFFSETS_TOPIC;
use runnel_proto::broker::v1 as pb;
use runnel_proto::coordinator::v1::CompleteTransactionRequest;
use runnel_records::batch::{ControlType, EndTxnMarker};

use super::{Broker, Failure};
use crate::grpc::Failed;

/// How long a marker waits for the in-sync replicas when the request names no timeout.
const DEFAULT_MARKER_TIMEOUT: Duration = Duration::from_secs(30);

impl Broker {
    /// Writes each marker to each of its partitions (concurrently) and
    /// answers per partition.
    pub async fn write_txn_markers(
        &self,
        req: pb::WriteTxnMarkersRequest,
    ) -> pb::WriteTxnMarkersResponse {
        let timeout = match req.timeout_ms {
            0 => DEFAULT_MARKER_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let markers = req.markers.into_iter().map(|m| async move {
            let producer_id = m.producer_id;
            let marker = EndTxnMarker {
                control_type: if m.committed {
                    ControlType::Commit
                } else {
                    ControlType::Abort
                },
                coordinator_epoch: m.coordinator_epoch,
            };
            let epoch = i16::try_from(m.producer_epoch).ok().filter(|e| *e >= 0);
            let partitions = m.partitions.into_iter().map(|mp| async move {
                let result = pb::MarkerPartitionResult {
                    topic: mp.topic.clone(),
                    partition: mp.partition,
                    ..Default::default()
                };
                let Some(epoch) = epoch else {
                    let failure = Failure::InvalidMarkerEpoch {
                        producer_id,
                        epoch: m.producer_epoch,
                    };
                    return result.failed(&failure);
                };
                match self
                    .write_marker(&mp.topic, mp.partition, producer_id, epoch, marker, timeout)
                    .await
                {
                    Ok(()) => result,
                    Err(failure) => {
                        tracing::debug!(topic = %mp.topic, partition = mp.partition, producer_id, error = %failure, "transaction marker refused");
                        result.failed(&failure)
                    }
                }
            });
            pb::TxnMarkerResult {
                producer_id,
                partitions: join_all(partitions).await,
            }
        });
        pb::WriteTxnMarkersResponse {
            markers: join_all(markers).await,
        }
    }

    /// One marker in one partition: appended on the partition's I/O thread,
    /// then waited for until the high watermark covers it.
    async fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let p = self.leader(topic, partition)?;
        let leader_epoch = p.leader_epoch();
        let target = Arc::clone(&p);
        let append =
            move || target.append_end_txn_marker(producer_id, producer_epoch, marker, leader_epoch);
        let info = self.logs.io().run(&p.key(), append).await??;
        Self::await_replication(&p, leader_epoch, info.last_offset, timeout, &self.shutdown)
            .await?;
        if topic == OFFSETS_TOPIC {
            self.settle_offsets(partition, producer_id, marker).await;
        }
        Ok(())
    }

    /// A marker in a partition of `__consumer_offsets` settles the
    /// producer's transactional offset commits there: its owning
    /// coordinator is told (as Kafka's broker tells its group coordinator),
    /// a few times if need be. A coordinator that never hears it reads the
    /// marker when it next loads the partition.
    async fn settle_offsets(&self, partition: i32, producer_id: i64, marker: EndTxnMarker) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        for _ in 0..8 {
            let owner = self.metadata.with(|image| {
                image
                    .offsets_partition_owner(partition)
                    .and_then(|(_, c, _)| c.grpc_address())
            });
            let Some(addr) = owner else { return };
            let request = CompleteTransactionRequest {
                offsets_partition: partition,
                producer_id,
                committed: marker.control_type == ControlType::Commit,
            };
            let answered = match self.coordinator_client(&addr) {
                Ok(mut client) => client.complete_transaction(request).await.is_ok(),
                Err(_) => false,
            };
            if answered {
                return;
            }
            backoff.wait().await;
        }
        tracing::warn!(
            partition,
            producer_id,
            "could not tell the offsets partition's coordinator that a transaction ended; it settles when it reloads"
        );
    }
}
