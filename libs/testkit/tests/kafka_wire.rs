//! Kafka protocol semantics only exact bytes show: what a connection's
//! pipelined requests do, in which order, and the fields of the answers
//! that client libraries do not expose.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use runnel_client::{NewTopic, TopicPartition};
use runnel_log::batch::{BatchBuilder, Compression};
use runnel_testkit::TestCluster;
use runnel_testkit::kafka_wire::{KafkaConn, decode_response, read_frame, request_frame};
use tokio::io::AsyncWriteExt;

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.into()))
}

/// One batch holding one record whose value starts with `n` (big or small).
fn numbered_batch(n: usize, big: bool) -> Bytes {
    let mut value = format!("message {n:05}").into_bytes();
    if big {
        // Big requests take the broker longer to copy and append, which is
        // what let a later small request overtake them.
        value.resize(400 * 1024, b'.');
    }
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1_700_000_000_000 + n as i64, None, Some(&value), &[]);
    Bytes::from(b.build().unwrap())
}

fn produce(topic_name: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic(topic_name))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

/// Hundreds of Produce requests written back to back on one connection
/// are appended in the order they were sent (as Kafka processes a
/// connection's requests one at a time), and each answer names the offset
/// its own record got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_produce_requests_are_appended_in_arrival_order() {
    const REQUESTS: usize = 300;
    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .start()
        .await;
    cluster
        .create_topic(NewTopic::new("ordered").partitions(1).replication_factor(1))
        .await;
    let conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    let (mut read, mut write) = conn.into_split();
    // Written from another task, so the broker's answers never have to
    // wait for this side to stop writing.
    let writer = tokio::spawn(async move {
        for n in 0..REQUESTS {
            let frame = request_frame(
                9,
                n as i32,
                &produce("ordered", numbered_batch(n, n % 4 == 0)),
            );
            write.write_all(&frame).await.unwrap();
        }
        write
    });
    for n in 0..REQUESTS {
        let mut frame = read_frame(&mut read).await.expect("a produce answer");
        let answer = decode_response::<ProduceRequest>(&mut frame, 9, n as i32);
        let p = &answer.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "request {n}: {:?}", p.error_message);
        assert_eq!(
            p.base_offset, n as i64,
            "request {n} was appended out of order"
        );
    }
    drop(writer.await.unwrap());

    let mut consumer = cluster.earliest_consumer();
    consumer
        .assign(vec![TopicPartition::new("ordered", 0)])
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < REQUESTS {
        for r in consumer
            .poll(std::time::Duration::from_secs(5))
            .await
            .unwrap()
        {
            let value = r.value.expect("a value");
            seen.push((r.offset, String::from_utf8_lossy(&value[..13]).into_owned()));
        }
    }
    for (offset, value) in seen {
        assert_eq!(value, format!("message {offset:05}"), "stored out of order");
    }
    cluster.shutdown().await;
}

fn commit(group: &str, topic_name: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_retention_time_ms(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic(topic_name))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(-1),
                ]),
        ])
}

fn fetch_committed(group: &str, topic_name: &str) -> OffsetFetchRequest {
    OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(topic(topic_name))
                .with_partition_indexes(vec![0]),
        ]))
}

/// Offset commits pipelined on one connection take effect in the order
/// they were sent: an OffsetFetch sent after them sees the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_offset_commits_take_effect_in_arrival_order() {
    const COMMITS: i64 = 300;
    const FETCH_EVERY: i64 = 25;
    let cluster = TestCluster::builder()
        .coordinators(1)
        .auto_create_topics(false)
        .start()
        .await;
    cluster
        .create_topic(
            NewTopic::new("committed")
                .partitions(1)
                .replication_factor(1),
        )
        .await;
    let (mut read, mut write) = KafkaConn::connect(&cluster.kafka_bootstrap())
        .await
        .into_split();
    // Every request is written before any answer is read (the answers are
    // small enough for the socket buffers).
    let mut frames = BytesMut::new();
    let mut expected = Vec::new();
    let mut id = 0;
    for offset in 1..=COMMITS {
        frames.extend_from_slice(&request_frame(6, id, &commit("g", "committed", offset)));
        expected.push((id, None));
        id += 1;
        if offset % FETCH_EVERY == 0 {
            frames.extend_from_slice(&request_frame(6, id, &fetch_committed("g", "committed")));
            expected.push((id, Some(offset)));
            id += 1;
        }
    }
    write.write_all(&frames).await.unwrap();
    for (id, fetched) in expected {
        let mut frame = read_frame(&mut read).await.expect("an answer");
        match fetched {
            None => {
                let answer = decode_response::<OffsetCommitRequest>(&mut frame, 6, id);
                assert_eq!(answer.topics[0].partitions[0].error_code, 0);
            }
            Some(last) => {
                let answer = decode_response::<OffsetFetchRequest>(&mut frame, 6, id);
                let p = &answer.topics[0].partitions[0];
                assert_eq!(p.error_code, 0);
                assert_eq!(
                    p.committed_offset, last,
                    "an OffsetFetch after the commit of {last} sees {}",
                    p.committed_offset
                );
            }
        }
    }
    // And from a fresh connection: the last commit is the one kept.
    let mut fresh = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    let answer = fresh.call(6, &fetch_committed("g", "committed")).await;
    assert_eq!(answer.topics[0].partitions[0].committed_offset, COMMITS);
    cluster.shutdown().await;
}
