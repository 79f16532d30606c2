//! Transactions written by hand over the brokers' gRPC API, as a
//! transactional producer and the transaction coordinator write them: the
//! partition-level half of transactions, tested apart from the coordinator.

use runnel_proto::broker::v1 as pb;
use runnel_proto::broker::v1::broker_client::BrokerClient;
use runnel_records::batch::{BatchBuilder, Compression};
use tonic::transport::Channel;

/// A batch of `values` (no keys) from producer `pid` at `epoch`, from
/// sequence `seq`, transactional or not.
pub fn batch(pid: i64, epoch: i16, seq: i32, transactional: bool, values: &[&str]) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None)
        .producer(pid, epoch, seq)
        .transactional(transactional);
    for v in values {
        b.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    b.build().expect("a small batch encodes")
}

/// A batch of `values` with no producer id.
pub fn plain(values: &[&str]) -> Vec<u8> {
    batch(-1, -1, -1, false, values)
}

/// Produces `records` to `topic-partition` with acks=all (10 s timeout).
pub async fn produce(
    client: &mut BrokerClient<Channel>,
    topic: &str,
    partition: i32,
    records: Vec<u8>,
) -> pb::ProducePartitionResult {
    client
        .produce(pb::ProduceRequest {
            acks: pb::Acks::All as i32,
            timeout_ms: 10_000,
            partitions: vec![pb::ProducePartition {
                topic: topic.into(),
                partition,
                records: records.into(),
            }],
            transactional_id: String::new(),
        })
        .await
        .expect("the broker answers Produce")
        .into_inner()
        .partitions
        .remove(0)
}

/// Ends producer `pid`'s transaction in `topic-partition` (commit or
/// abort), as the coordinator at `coordinator_epoch` does.
pub async fn end(
    client: &mut BrokerClient<Channel>,
    topic: &str,
    partition: i32,
    pid: i64,
    epoch: i16,
    committed: bool,
    coordinator_epoch: i32,
) -> pb::MarkerPartitionResult {
    client
        .write_txn_markers(pb::WriteTxnMarkersRequest {
            markers: vec![pb::TxnMarker {
                producer_id: pid,
                producer_epoch: i32::from(epoch),
                committed,
                coordinator_epoch,
                partitions: vec![pb::MarkerPartition {
                    topic: topic.into(),
                    partition,
                }],
            }],
            timeout_ms: 10_000,
        })
        .await
        .expect("the broker answers WriteTxnMarkers")
        .into_inner()
        .markers
        .remove(0)
        .partitions
        .remove(0)
}
