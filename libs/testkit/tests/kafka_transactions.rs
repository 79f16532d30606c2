//! Bad input to the transaction APIs on the Kafka listener, spoken on the
//! wire: each is refused with Kafka's error (at the version that asked) and
//! changes nothing, and the transaction goes on normally afterwards.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest,
    GroupId, InitProducerIdRequest, ProduceRequest, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use runnel_client::NewTopic;
use runnel_records::batch::{BatchBuilder, Compression};
use runnel_testkit::kafka_wire::KafkaConn;
use runnel_testkit::{TestCluster, wait_for};

const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const PRODUCER_FENCED: i16 = 90;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn txn_id(v: &str) -> TransactionalId {
    TransactionalId(s(v))
}

fn init(id: &str, timeout_ms: i32) -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

fn add(id: &str, pid: i64, epoch: i16, partition: i32) -> AddPartitionsToTxnRequest {
    AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id(id))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![partition]),
        ])
}

fn end(id: &str, pid: i64, epoch: i16, committed: bool) -> EndTxnRequest {
    EndTxnRequest::default()
        .with_transactional_id(txn_id(id))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(committed)
}

fn produce(id: &str, pid: i64, epoch: i16, partition: i32, seq: i32) -> ProduceRequest {
    let mut b = BatchBuilder::new(Compression::None)
        .producer(pid, epoch, seq)
        .transactional(true);
    b.append(1_700_000_000_000, None, Some(b"v"), &[]);
    ProduceRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s("t")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(b.build().unwrap()))),
                ]),
        ])
}

fn add_partition_code(r: &kafka_protocol::messages::AddPartitionsToTxnResponse) -> i16 {
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

fn produce_code(r: &kafka_protocol::messages::ProduceResponse) -> i16 {
    r.responses[0].partition_responses[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transaction_requests_get_kafkas_errors_and_change_nothing() {
    let cluster = TestCluster::builder()
        .brokers(1)
        .coordinators(1)
        .auto_create_topics(false)
        .start()
        .await;
    cluster
        .create_topic(NewTopic::new("t").partitions(2).replication_factor(1))
        .await;
    let bootstrap = cluster.kafka_bootstrap();
    // The transaction coordinator serves once `__transaction_state` is loaded.
    wait_for(
        "the transaction coordinator",
        Duration::from_secs(30),
        || {
            let bootstrap = bootstrap.clone();
            async move {
                let mut c = KafkaConn::connect(&bootstrap).await;
                let r = c
                    .call(
                        3,
                        &FindCoordinatorRequest::default()
                            .with_key(s("tx"))
                            .with_key_type(1),
                    )
                    .await;
                if r.error_code != 0 {
                    return false;
                }
                // "nope" below lives in another partition of
                // `__transaction_state`, which may load later.
                const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
                c.call(4, &init("tx", 60_000)).await.error_code == 0
                    && add_partition_code(&c.call(3, &add("nope", 0, 0, 0)).await)
                        != COORDINATOR_LOAD_IN_PROGRESS
            }
        },
    )
    .await;
    let mut c = KafkaConn::connect(&bootstrap).await;

    // transaction.timeout.ms above transaction.max.timeout.ms (15 min).
    let r = c.call(4, &init("tx", 900_001)).await;
    assert_eq!(r.error_code, INVALID_TRANSACTION_TIMEOUT);
    let r = c.call(4, &init("tx", 60_000)).await;
    assert_eq!(r.error_code, 0);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);

    // An unknown transactional id, a stale epoch (KIP-588's error from v2,
    // INVALID_PRODUCER_EPOCH before), another producer id.
    let r = c.call(3, &add("nope", pid, epoch, 0)).await;
    assert_eq!(add_partition_code(&r), INVALID_PRODUCER_ID_MAPPING);
    let r = c.call(3, &add("tx", pid, epoch - 1, 0)).await;
    assert_eq!(add_partition_code(&r), PRODUCER_FENCED);
    let r = c.call(1, &add("tx", pid, epoch - 1, 0)).await;
    assert_eq!(add_partition_code(&r), INVALID_PRODUCER_EPOCH);
    let r = c.call(3, &add("tx", pid + 1, epoch, 0)).await;
    assert_eq!(add_partition_code(&r), INVALID_PRODUCER_ID_MAPPING);

    // Nothing to end yet; an older epoch is fenced.
    assert_eq!(
        c.call(3, &end("tx", pid, epoch, true)).await.error_code,
        INVALID_TXN_STATE
    );
    assert_eq!(
        c.call(3, &end("tx", pid, epoch - 1, true)).await.error_code,
        PRODUCER_FENCED
    );

    // A transactional produce to a partition never added (KIP-890): refused
    // before anything is written.
    let r = c.call(9, &produce("tx", pid, epoch, 1, 0)).await;
    assert_eq!(produce_code(&r), INVALID_TXN_STATE, "{r:?}");
    let (_, end_1) = cluster.admin().offsets("t", 1).await.unwrap();
    assert_eq!(end_1, 0, "nothing was written");

    // Offsets for a group the transaction did not add.
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id("tx"))
        .with_group_id(GroupId(s("g")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_member_id(s(""))
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5)
                        .with_committed_leader_epoch(-1),
                ]),
        ]);
    let r = c.call(3, &commit).await;
    assert_eq!(r.topics[0].partitions[0].error_code, INVALID_TXN_STATE);

    // The transaction still goes on normally: add, write, offsets, commit.
    let r = c.call(3, &add("tx", pid, epoch, 0)).await;
    assert_eq!(add_partition_code(&r), 0);
    let r = c.call(9, &produce("tx", pid, epoch, 0, 0)).await;
    assert_eq!(produce_code(&r), 0, "{r:?}");
    let r = c
        .call(
            3,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(txn_id("tx"))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_group_id(GroupId(s("g"))),
        )
        .await;
    assert_eq!(r.error_code, 0);
    let r = c.call(3, &commit).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(c.call(3, &end("tx", pid, epoch, true)).await.error_code, 0);
    // A retried commit succeeds; an abort of what committed is refused.
    wait_for("the commit to complete", Duration::from_secs(20), || {
        let bootstrap = bootstrap.clone();
        async move {
            let mut c = KafkaConn::connect(&bootstrap).await;
            c.call(3, &end("tx", pid, epoch, true)).await.error_code == 0
        }
    })
    .await;
    assert_eq!(
        c.call(3, &end("tx", pid, epoch, false)).await.error_code,
        INVALID_TXN_STATE
    );
    cluster.shutdown().await;
}
