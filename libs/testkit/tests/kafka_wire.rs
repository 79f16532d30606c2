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
use runnel_records::batch::{BatchBuilder, Compression};
use runnel_testkit::kafka_wire::{KafkaConn, decode_response, read_frame, request_frame};
use runnel_testkit::{TestCluster, wait_for};
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

/// Now, as the broker's clock reads it.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A batch of `keys.len()` records (a `None` key is a keyless record).
fn keyed_batch(codec: Compression, keys: &[Option<String>], ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(codec);
    for key in keys {
        b.append(ts, key.as_deref().map(str::as_bytes), Some(b"v"), &[]);
    }
    Bytes::from(b.build().unwrap())
}

/// A Fetch of partition 0 of `topic_name` from `offset`, answered at once.
fn fetch_from(topic_name: &str, offset: i64) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    kafka_protocol::messages::FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic(topic_name))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// The one partition answer of a single-partition Produce.
async fn produce_answer(
    conn: &mut KafkaConn,
    version: i16,
    topic_name: &str,
    records: Bytes,
) -> kafka_protocol::messages::produce_response::PartitionProduceResponse {
    let answer = conn.call(version, &produce(topic_name, records)).await;
    answer.responses[0].partition_responses[0].clone()
}

/// Ten keyless records in a batch of 100 to a compacted topic: the batch
/// is refused with INVALID_RECORD and `record_errors` names exactly those
/// ten, as Kafka's log validation does; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_errors_name_each_keyless_record_on_a_compacted_topic() {
    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .start()
        .await;
    cluster
        .create_topic(
            NewTopic::new("compacted")
                .partitions(1)
                .replication_factor(1)
                .config("cleanup.policy", "compact"),
        )
        .await;
    let keys: Vec<Option<String>> = (0..100)
        .map(|i| (i % 10 != 3).then(|| format!("key-{i}")))
        .collect();
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    let p = produce_answer(
        &mut conn,
        10,
        "compacted",
        keyed_batch(Compression::Lz4, &keys, now_ms()),
    )
    .await;
    assert_eq!(p.error_code, 87, "INVALID_RECORD: {:?}", p.error_message);
    assert_eq!(p.base_offset, -1);
    let named: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(named, (0..10).map(|i| i * 10 + 3).collect::<Vec<_>>());
    let message = p.error_message.as_ref().unwrap().to_string();
    assert!(
        message.starts_with("One or more records have been rejected due to 10 record errors in total, and only showing the first three errors at most: ["),
        "{message}"
    );
    // Keyed records still go in, at offset 0: the refused batch left nothing.
    let keyed: Vec<Option<String>> = (0..5).map(|i| Some(format!("k{i}"))).collect();
    let p = produce_answer(
        &mut conn,
        10,
        "compacted",
        keyed_batch(Compression::None, &keyed, now_ms()),
    )
    .await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    cluster.shutdown().await;
}

/// What Kafka checks of a Produce before and while appending: one batch
/// per partition from v3, zstd only from v7 (and no zstd to a Fetch
/// below v10), create times at most an hour ahead, and the max timestamp
/// taken from the records whatever the header claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_is_validated_as_kafka_validates_it() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};
    use runnel_records::batch::{Batches, RecordBatchMut};

    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .start()
        .await;
    cluster
        .create_topic(NewTopic::new("checked").partitions(1).replication_factor(1))
        .await;
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    let now = now_ms();
    // Earlier than what the lookup by time below asks for.
    let earlier = now - 60_000;
    let key = |i: usize| Some(format!("k{i}"));
    let plain = |n: usize| {
        keyed_batch(
            Compression::None,
            &(0..n).map(key).collect::<Vec<_>>(),
            earlier,
        )
    };

    // Two batches in one partition's records.
    let mut two = BytesMut::from(&plain(1)[..]);
    two.extend_from_slice(&plain(1));
    let p = produce_answer(&mut conn, 9, "checked", two.freeze()).await;
    assert_eq!(p.error_code, 87, "{:?}", p.error_message);

    // zstd: refused below v7, taken from v7.
    let zstd = keyed_batch(Compression::Zstd, &[key(0)], earlier);
    let p = produce_answer(&mut conn, 6, "checked", zstd.clone()).await;
    assert_eq!(
        p.error_code, 76,
        "UNSUPPORTED_COMPRESSION_TYPE: {:?}",
        p.error_message
    );
    let p = produce_answer(&mut conn, 7, "checked", zstd).await;
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "{:?}",
        p.error_message
    );

    // A record two hours ahead of the broker's clock.
    let ahead = keyed_batch(Compression::None, &[key(0)], now + 2 * 3_600_000);
    let p = produce_answer(&mut conn, 9, "checked", ahead).await;
    assert_eq!(p.error_code, 32, "INVALID_TIMESTAMP: {:?}", p.error_message);
    assert_eq!(p.record_errors.len(), 1);
    assert_eq!(p.record_errors[0].batch_index, 0);

    // A header whose max timestamp is -1 (as some clients send it).
    let mut b = BatchBuilder::new(Compression::None);
    b.append(
        now - 5000,
        key(1).as_deref().map(str::as_bytes),
        Some(b"a"),
        &[],
    );
    b.append(
        now - 1000,
        key(2).as_deref().map(str::as_bytes),
        Some(b"b"),
        &[],
    );
    let mut bytes = b.build().unwrap();
    RecordBatchMut::new(&mut bytes)
        .unwrap()
        .0
        .set_max_timestamp(-1);
    let p = produce_answer(&mut conn, 9, "checked", Bytes::from(bytes)).await;
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 1),
        "{:?}",
        p.error_message
    );
    let by_time = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic("checked"))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(now - 3000),
                ]),
        ]);
    let answer = conn.call(7, &by_time).await;
    let found = &answer.topics[0].partitions[0];
    assert_eq!(found.error_code, 0);
    assert!(found.offset >= 1 && found.offset <= 2, "{found:?}");
    assert_eq!(found.timestamp, now - 1000, "{found:?}");

    // Fetch: the zstd batch at offset 0 only from v10.
    let fetch = fetch_from("checked", 0);
    let old = conn.call(9, &fetch).await;
    let p = &old.responses[0].partitions[0];
    assert_eq!(p.error_code, 76, "a Fetch v9 got zstd");
    assert!(p.records.as_ref().is_none_or(Bytes::is_empty));
    let new = conn.call(10, &fetch).await;
    let p = &new.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let stored = p.records.clone().unwrap_or_default();
    let maxes: Vec<i64> = Batches::new(&stored)
        .map(|b| b.unwrap().header().max_timestamp)
        .collect();
    assert_eq!(maxes, [earlier, now - 1000], "stored max timestamps");
    cluster.shutdown().await;
}

/// A topic's `compression.type` names the codec it stores: a producer's
/// uncompressed batch comes back zstd, with the same records, and a Fetch
/// below v10 is refused for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_compression_type_recompresses_what_producers_send() {
    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .start()
        .await;
    cluster
        .create_topic(
            NewTopic::new("squeezed")
                .partitions(1)
                .replication_factor(1)
                .config("compression.type", "zstd"),
        )
        .await;
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    // Kafka refuses a Fetch below v10 from a topic that stores zstd, even
    // before it holds anything.
    let early = conn.call(9, &fetch_from("squeezed", 0)).await;
    assert_eq!(early.responses[0].partitions[0].error_code, 76);
    let keys: Vec<Option<String>> = (0..20).map(|i| Some(format!("key-{i}"))).collect();
    let p = produce_answer(
        &mut conn,
        9,
        "squeezed",
        keyed_batch(Compression::None, &keys, now_ms()),
    )
    .await;
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "{:?}",
        p.error_message
    );
    let mut consumer = cluster.earliest_consumer();
    consumer
        .assign(vec![TopicPartition::new("squeezed", 0)])
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 20 {
        for r in consumer
            .poll(std::time::Duration::from_secs(5))
            .await
            .unwrap()
        {
            seen.push(String::from_utf8(r.key.unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(
        seen,
        (0..20).map(|i| format!("key-{i}")).collect::<Vec<_>>()
    );
    let fetched = conn.call(12, &fetch_from("squeezed", 0)).await;
    let stored = fetched.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    let codecs: Vec<Compression> = runnel_records::batch::Batches::new(&stored)
        .map(|b| b.unwrap().header().compression().unwrap())
        .collect();
    assert_eq!(codecs, [Compression::Zstd]);
    cluster.shutdown().await;
}

/// Versions and fields only exact bytes show: Metadata v0 (empty list:
/// every topic) and v13, the cluster features ApiVersions v3 reports,
/// authorized operations filled in only when asked for, ListOffsets'
/// tiered-storage specs, and DeleteTopics by topic id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_features_and_authorized_operations() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        ApiVersionsRequest, BrokerId, DeleteTopicsRequest, DescribeClusterRequest,
        ListOffsetsRequest, MetadataRequest,
    };

    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .start()
        .await;
    for name in ["listed", "doomed"] {
        cluster
            .create_topic(NewTopic::new(name).partitions(2).replication_factor(1))
            .await;
    }
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;

    let versions = conn
        .call(
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("wire-test"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        )
        .await;
    let range = |key: i16| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(range(3), Some((0, 13)), "Metadata");
    // Below Kafka 4's minimums, the old versions Kafka 3.9 still served.
    assert_eq!(range(0), Some((0, 13)), "Produce");
    assert_eq!(range(1), Some((0, 18)), "Fetch");
    assert_eq!(range(8), Some((0, 9)), "OffsetCommit");
    assert_eq!(range(19), Some((0, 7)), "CreateTopics");
    assert_eq!(range(32), Some((0, 4)), "DescribeConfigs");
    assert_eq!(
        range(2),
        Some((1, 10)),
        "ListOffsets: no v0, as from Kafka 4"
    );
    let finalized: Vec<(String, i16)> = versions
        .finalized_features
        .iter()
        .map(|f| (f.name.to_string(), f.max_version_level))
        .collect();
    assert!(
        finalized.contains(&("group.version".into(), 1)),
        "{finalized:?}"
    );
    assert!(
        finalized.iter().any(|(n, _)| n == "metadata.version"),
        "{finalized:?}"
    );
    assert!(versions.finalized_features_epoch >= 0);

    // Metadata v0: an empty topic list means every topic.
    let all = conn
        .call(0, &MetadataRequest::default().with_topics(Some(Vec::new())))
        .await;
    let mut names: Vec<String> = all
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    names.sort();
    assert_eq!(names, ["doomed", "listed"]);
    assert_eq!(all.brokers.len(), 1);

    // Authorized operations: every one a topic and the cluster have, only
    // when asked (no authorizer: everything is allowed).
    let ask = |include: bool| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic("listed"))),
            ]))
            .with_include_topic_authorized_operations(include)
    };
    let asked = conn.call(13, &ask(true)).await;
    assert_eq!(asked.error_code, 0);
    assert_eq!(asked.topics[0].topic_authorized_operations, 3576);
    let not_asked = conn.call(12, &ask(false)).await;
    assert_eq!(not_asked.topics[0].topic_authorized_operations, i32::MIN);
    let described = conn
        .call(
            1,
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
        )
        .await;
    assert_eq!(described.cluster_authorized_operations, 8096);

    // ListOffsets v10: EARLIEST_LOCAL is the log start, LATEST_TIERED has no offset.
    let specs = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_timeout_ms(5000)
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic("listed"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts),
                    ]),
            ])
    };
    let local = conn.call(10, &specs(-4)).await;
    let p = &local.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (0, 0));
    let tiered = conn.call(10, &specs(-5)).await;
    let p = &tiered.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (0, -1));

    // DeleteTopics v6 by id; an unknown id is UNKNOWN_TOPIC_ID.
    let id = conn
        .call(
            12,
            &ask(false).with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic("doomed"))),
            ])),
        )
        .await
        .topics[0]
        .topic_id;
    let deleted = conn
        .call(
            6,
            &DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    DeleteTopicState::default().with_topic_id(id),
                    DeleteTopicState::default().with_topic_id(uuid::Uuid::from_u128(7)),
                ]),
        )
        .await;
    let mut codes: Vec<i16> = deleted.responses.iter().map(|r| r.error_code).collect();
    codes.sort();
    assert_eq!(codes, [0, 100], "{:?}", deleted.responses);
    cluster.shutdown().await;
}

/// Produce v13 and Fetch v13+ name topics by id: records go in and come
/// back by id (Fetch through v18, with a fetch session), and an id no topic
/// has is UNKNOWN_TOPIC_ID for its partitions alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_by_topic_id() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{BrokerId, FetchRequest, MetadataRequest};

    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .start()
        .await;
    cluster
        .create_topic(NewTopic::new("by-id").partitions(1).replication_factor(1))
        .await;
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    let id = conn
        .call(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic("by-id"))),
            ])),
        )
        .await
        .topics[0]
        .topic_id;
    let stranger = uuid::Uuid::from_u128(42);
    let by_id = |id: uuid::Uuid, n: usize| {
        TopicProduceData::default()
            .with_topic_id(id)
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(numbered_batch(n, false))),
            ])
    };
    let produced = conn
        .call(
            13,
            &ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![by_id(id, 0), by_id(stranger, 1)]),
        )
        .await;
    let mut answers: Vec<(uuid::Uuid, i16, i64)> = produced
        .responses
        .iter()
        .map(|t| {
            let p = &t.partition_responses[0];
            (t.topic_id, p.error_code, p.base_offset)
        })
        .collect();
    answers.sort();
    let mut expected = vec![(id, 0, 0), (stranger, 100, -1)];
    expected.sort();
    assert_eq!(answers, expected);

    for version in [13, 15, 17, 18] {
        let fetch = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(0)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic_id(id)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20)
                            .with_high_watermark(-1),
                    ]),
                FetchTopic::default()
                    .with_topic_id(stranger)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1 << 20)
                            .with_high_watermark(-1),
                    ]),
            ]);
        let answer = conn.call(version, &fetch).await;
        assert_eq!(answer.error_code, 0, "v{version}");
        assert!(answer.session_id > 0, "v{version} opens a session");
        let mut seen: Vec<(uuid::Uuid, i16, bool)> = answer
            .responses
            .iter()
            .map(|t| {
                let p = &t.partitions[0];
                (
                    t.topic_id,
                    p.error_code,
                    p.records.as_ref().is_some_and(|r| !r.is_empty()),
                )
            })
            .collect();
        seen.sort();
        let mut expected = vec![(id, 0, true), (stranger, 100, false)];
        expected.sort();
        assert_eq!(seen, expected, "v{version}");
    }
    cluster.shutdown().await;
}

/// DescribeTopicPartitions (KIP-966, what Kafka's admin client describes
/// topics with): topics by name, paginated by `response_partition_limit`
/// with a cursor, unknown topics named with UNKNOWN_TOPIC_OR_PARTITION.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_topic_partitions_pages_with_a_cursor() {
    use kafka_protocol::messages::DescribeTopicPartitionsRequest;
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};

    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .start()
        .await;
    for (name, n) in [("dtp-a", 3), ("dtp-b", 2), ("dtp-c", 1)] {
        cluster
            .create_topic(NewTopic::new(name).partitions(n).replication_factor(1))
            .await;
    }
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    let ask = |names: &[&str], cursor: Option<Cursor>| {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                names
                    .iter()
                    .map(|n| TopicRequest::default().with_name(topic(n)))
                    .collect(),
            )
            .with_response_partition_limit(4)
            .with_cursor(cursor)
    };
    let shown = |r: &kafka_protocol::messages::DescribeTopicPartitionsResponse| -> Vec<(String, i16, Vec<i32>)> {
        r.topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                    t.error_code,
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect()
    };
    let first = conn.call(0, &ask(&["dtp-c", "dtp-b", "dtp-a"], None)).await;
    assert_eq!(
        shown(&first),
        [
            ("dtp-a".to_owned(), 0, vec![0, 1, 2]),
            ("dtp-b".to_owned(), 0, vec![0])
        ]
    );
    assert_eq!(first.topics[0].topic_authorized_operations, 3576);
    let cursor = first.next_cursor.clone().expect("a cursor to the rest");
    assert_eq!(
        (cursor.topic_name.to_string(), cursor.partition_index),
        ("dtp-b".to_owned(), 1)
    );
    let rest = conn
        .call(
            0,
            &ask(
                &["dtp-a", "dtp-b", "dtp-c"],
                Some(
                    Cursor::default()
                        .with_topic_name(cursor.topic_name.clone())
                        .with_partition_index(cursor.partition_index),
                ),
            ),
        )
        .await;
    assert_eq!(
        shown(&rest),
        [
            ("dtp-b".to_owned(), 0, vec![1]),
            ("dtp-c".to_owned(), 0, vec![0])
        ]
    );
    assert!(rest.next_cursor.is_none());
    let unknown = conn.call(0, &ask(&["dtp-missing"], None)).await;
    assert_eq!(shown(&unknown), [("dtp-missing".to_owned(), 3, vec![])]);
    cluster.shutdown().await;
}

/// Offset, magic, timestamp, key and value of an old-format message.
type OldMessage = (i64, i8, i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Each message of a message set of magic 0 or 1: its offset, magic,
/// timestamp (-1 for magic 0), key and value, read by hand as an old
/// client reads them (the CRC-32 checked).
fn old_messages(set: &[u8]) -> Vec<OldMessage> {
    fn bytes(buf: &[u8], at: &mut usize) -> Option<Vec<u8>> {
        let len = i32::from_be_bytes(buf[*at..*at + 4].try_into().unwrap());
        *at += 4;
        let len = usize::try_from(len).ok()?;
        *at += len;
        Some(buf[*at - len..*at].to_vec())
    }
    let mut out = Vec::new();
    let mut rest = set;
    while !rest.is_empty() {
        let offset = i64::from_be_bytes(rest[..8].try_into().unwrap());
        let size = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
        let body = &rest[12..12 + size];
        let crc = u32::from_be_bytes(body[..4].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&body[4..]), "message {offset}'s CRC");
        let magic = body[4] as i8;
        assert_eq!(
            body[5] & 0x07,
            0,
            "down-converted messages are uncompressed"
        );
        let mut at = 6;
        let timestamp = if magic == 1 {
            at += 8;
            i64::from_be_bytes(body[6..14].try_into().unwrap())
        } else {
            -1
        };
        let key = bytes(body, &mut at);
        let value = bytes(body, &mut at);
        assert_eq!(at, body.len());
        out.push((offset, magic, timestamp, key, value));
        rest = &rest[12 + size..];
    }
    out
}

/// Clients pinned to the versions Kafka 4.0 dropped still work, as they
/// did against Kafka 3.9: CreateTopics v0–1, Produce v0–2 with message
/// formats v0/v1 (plain and compressed) stored as v2 batches, Fetch v0–3
/// reading everything back in the format each version knows, OffsetCommit
/// v0–1 and DescribeConfigs v0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_and_message_formats_are_served_and_converted() {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{
        ApiKey, CreateTopicsRequest, DescribeConfigsRequest, RequestKind, ResponseKind,
    };
    use runnel_records::batch::Header;
    use runnel_records::batch::legacy::{MAGIC_V0, MAGIC_V1, write_compressed, write_message};

    let cluster = TestCluster::builder()
        .coordinators(1)
        .auto_create_topics(false)
        .start()
        .await;
    let admin = cluster.admin();
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;

    // CreateTopics v1 validate-only creates nothing; v0 creates; a second
    // create is refused, with a message from v1 on.
    let create = |validate_only: bool| {
        RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(topic("old"))
                        .with_num_partitions(1)
                        .with_replication_factor(1)
                        .with_configs(vec![
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_static_str("86400000"))),
                        ]),
                ])
                .with_timeout_ms(30_000)
                .with_validate_only(validate_only),
        )
    };
    let created = |answer: ResponseKind| match answer {
        ResponseKind::CreateTopics(r) => {
            (r.topics[0].error_code, r.topics[0].error_message.clone())
        }
        other => panic!("not a CreateTopics answer: {other:?}"),
    };
    let answer = conn.call_old(ApiKey::CreateTopics, 1, &create(true)).await;
    assert_eq!(created(answer).0, 0);
    assert!(
        !admin
            .list_topics()
            .await
            .unwrap()
            .contains(&"old".to_string()),
        "validate_only created the topic"
    );
    let answer = conn.call_old(ApiKey::CreateTopics, 0, &create(false)).await;
    assert_eq!(created(answer).0, 0);
    let (code, text) = created(conn.call_old(ApiKey::CreateTopics, 1, &create(false)).await);
    assert_eq!(code, 36, "TOPIC_ALREADY_EXISTS");
    assert!(text.is_some_and(|t| !t.is_empty()), "v1 says why");
    // Creation returns once the controller has the topic; wait for the log.
    wait_for(
        "the partitions of old to be served",
        std::time::Duration::from_secs(20),
        || {
            let admin = admin.clone();
            async move {
                admin.describe_topic("old").await.is_ok_and(|t| {
                    !t.partitions.is_empty() && t.partitions.iter().all(|p| p.log_end_offset >= 0)
                })
            }
        },
    )
    .await;

    let produced = |answer: ResponseKind| match answer {
        ResponseKind::Produce(r) => {
            let p = &r.responses[0].partition_responses[0];
            (p.error_code, p.base_offset, p.log_append_time_ms)
        }
        other => panic!("not a Produce answer: {other:?}"),
    };
    let request = |set: Vec<u8>| RequestKind::Produce(produce("old", Bytes::from(set)));
    let t = now_ms();

    // Produce v0, magic 0: plain messages, a null key and a tombstone.
    let mut set = Vec::new();
    write_message(&mut set, MAGIC_V0, 0, -1, false, Some(b"k0"), Some(b"v0"));
    write_message(&mut set, MAGIC_V0, 0, -1, false, None, None);
    let answer = conn.call_old(ApiKey::Produce, 0, &request(set)).await;
    assert_eq!(produced(answer), (0, 0, -1));
    // Produce v1, magic 0: a gzip wrapper of two, then lz4 with the frame
    // checksum magic 0 writers got wrong.
    for (codec, first) in [(Compression::Gzip, 2), (Compression::Lz4, 4)] {
        let mut inner = Vec::new();
        write_message(
            &mut inner,
            MAGIC_V0,
            0,
            -1,
            false,
            None,
            Some(format!("v{first}").as_bytes()),
        );
        let next = format!("v{}", first + 1);
        write_message(
            &mut inner,
            MAGIC_V0,
            1,
            -1,
            false,
            None,
            Some(next.as_bytes()),
        );
        let mut set = Vec::new();
        write_compressed(&mut set, MAGIC_V0, 1, -1, codec, &inner).unwrap();
        let answer = conn.call_old(ApiKey::Produce, 1, &request(set)).await;
        assert_eq!(produced(answer), (0, first, -1), "{codec}");
    }
    // Produce v2, magic 1: a plain message and a snappy wrapper, with
    // their create times.
    let mut set = Vec::new();
    write_message(&mut set, MAGIC_V1, 0, t, false, Some(b"k6"), Some(b"v6"));
    let mut inner = Vec::new();
    write_message(&mut inner, MAGIC_V1, 0, t + 1, false, None, Some(b"v7"));
    write_message(&mut inner, MAGIC_V1, 1, t + 2, false, None, Some(b"v8"));
    write_compressed(&mut set, MAGIC_V1, 1, t + 2, Compression::Snappy, &inner).unwrap();
    let answer = conn.call_old(ApiKey::Produce, 2, &request(set)).await;
    assert_eq!(produced(answer), (0, 6, -1));
    // A message whose CRC does not match is refused, and nothing is stored.
    let mut set = Vec::new();
    write_message(&mut set, MAGIC_V1, 0, t, false, None, Some(b"corrupt"));
    *set.last_mut().unwrap() ^= 0xff;
    let answer = conn.call_old(ApiKey::Produce, 2, &request(set)).await;
    assert_eq!(produced(answer).0, 2, "CORRUPT_MESSAGE");
    // zstd never came with the old formats: refused as for any Produce below v7.
    let mut inner = Vec::new();
    write_message(&mut inner, MAGIC_V1, 0, t, false, None, Some(b"zstd"));
    let mut set = Vec::new();
    write_compressed(&mut set, MAGIC_V1, 0, t, Compression::Zstd, &inner).unwrap();
    let answer = conn.call_old(ApiKey::Produce, 2, &request(set)).await;
    assert_eq!(produced(answer).0, 76, "UNSUPPORTED_COMPRESSION_TYPE");
    // From Produce v3 only v2 batches are taken, as in Kafka.
    let mut set = Vec::new();
    write_message(&mut set, MAGIC_V1, 0, t, false, None, Some(b"late"));
    let p = produce_answer(&mut conn, 3, "old", Bytes::from(set)).await;
    assert_eq!(p.error_code, 87, "INVALID_RECORD");
    // A current producer's v2 batches, one with a header the old formats drop.
    let mut batch = BatchBuilder::new(Compression::Lz4);
    batch.append(
        t + 3,
        Some(b"k9"),
        Some(b"v9"),
        &[Header::new(&b"h"[..], Some(&b"x"[..]))],
    );
    let p = produce_answer(&mut conn, 9, "old", Bytes::from(batch.build().unwrap())).await;
    assert_eq!((p.error_code, p.base_offset), (0, 9));
    let mut batch = BatchBuilder::new(Compression::Gzip);
    batch.append(t + 4, None, Some(b"v10"), &[]);
    let p = produce_answer(&mut conn, 9, "old", Bytes::from(batch.build().unwrap())).await;
    assert_eq!((p.error_code, p.base_offset), (0, 10));

    // Fetch v0–1 read magic 0, v2–3 magic 1: every record at its offset.
    let fetched = |answer: ResponseKind| match answer {
        ResponseKind::Fetch(r) => {
            let p = &r.responses[0].partitions[0];
            (
                p.error_code,
                p.high_watermark,
                p.records.clone().unwrap_or_default(),
            )
        }
        other => panic!("not a Fetch answer: {other:?}"),
    };
    let v = |s: &str| Some(s.as_bytes().to_vec());
    for version in 0..=3i16 {
        let magic = if version <= 1 { MAGIC_V0 } else { MAGIC_V1 };
        let ts = |ts: i64| if magic == MAGIC_V0 { -1 } else { ts };
        let request = RequestKind::Fetch(fetch_from("old", 0));
        let (code, hw, records) = fetched(conn.call_old(ApiKey::Fetch, version, &request).await);
        assert_eq!((code, hw), (0, 11), "Fetch v{version}");
        let expected = vec![
            (0, magic, -1, v("k0"), v("v0")),
            (1, magic, -1, None, None),
            (2, magic, -1, None, v("v2")),
            (3, magic, -1, None, v("v3")),
            (4, magic, -1, None, v("v4")),
            (5, magic, -1, None, v("v5")),
            (6, magic, ts(t), v("k6"), v("v6")),
            (7, magic, ts(t + 1), None, v("v7")),
            (8, magic, ts(t + 2), None, v("v8")),
            (9, magic, ts(t + 3), v("k9"), v("v9")),
            (10, magic, ts(t + 4), None, v("v10")),
        ];
        assert_eq!(old_messages(&records), expected, "Fetch v{version}");
        // From the middle of a batch: only what lies at or past the offset.
        let request = RequestKind::Fetch(fetch_from("old", 8));
        let (_, _, records) = fetched(conn.call_old(ApiKey::Fetch, version, &request).await);
        let offsets: Vec<i64> = old_messages(&records).iter().map(|m| m.0).collect();
        assert_eq!(offsets, [8, 9, 10], "Fetch v{version} from 8");
        // A byte limit smaller than a batch still gets its first one whole.
        let mut small = fetch_from("old", 0);
        small.topics[0].partitions[0].partition_max_bytes = 1;
        let request = RequestKind::Fetch(small);
        let (_, _, records) = fetched(conn.call_old(ApiKey::Fetch, version, &request).await);
        let offsets: Vec<i64> = old_messages(&records).iter().map(|m| m.0).collect();
        assert_eq!(offsets, [0, 1], "Fetch v{version} of one byte");
    }
    // A current consumer reads the same records from the v2 batches.
    let fetched_now = conn.call(12, &fetch_from("old", 0)).await;
    let records = fetched_now.responses[0].partitions[0]
        .records
        .clone()
        .unwrap();
    let mut count = 0;
    for batch in runnel_records::batch::Batches::new(&records) {
        count += batch.unwrap().header().records_count;
    }
    assert_eq!(count, 11);

    // OffsetCommit v0 and v1 (generation -1: a commit from outside any
    // generation), read back with a current OffsetFetch.
    for (version, offset) in [(0i16, 5i64), (1, 7)] {
        let request = RequestKind::OffsetCommit(commit("old-group", "old", offset));
        match conn.call_old(ApiKey::OffsetCommit, version, &request).await {
            ResponseKind::OffsetCommit(r) => {
                assert_eq!(
                    r.topics[0].partitions[0].error_code, 0,
                    "OffsetCommit v{version}"
                )
            }
            other => panic!("not an OffsetCommit answer: {other:?}"),
        }
        let answer = conn.call(6, &fetch_committed("old-group", "old")).await;
        assert_eq!(answer.topics[0].partitions[0].committed_offset, offset);
    }
    let request = RequestKind::OffsetCommit(commit("old-group", "missing", 1));
    match conn.call_old(ApiKey::OffsetCommit, 0, &request).await {
        ResponseKind::OffsetCommit(r) => assert_eq!(r.topics[0].partitions[0].error_code, 3),
        other => panic!("not an OffsetCommit answer: {other:?}"),
    }

    // DescribeConfigs v0: the value set at creation is not a default, an
    // unset one is.
    let request =
        RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("old"))
                .with_configuration_keys(Some(vec![
                    StrBytes::from_static_str("retention.ms"),
                    StrBytes::from_static_str("segment.bytes"),
                ])),
        ]));
    let ResponseKind::DescribeConfigs(answer) =
        conn.call_old(ApiKey::DescribeConfigs, 0, &request).await
    else {
        panic!("not a DescribeConfigs answer")
    };
    let result = &answer.results[0];
    assert_eq!(result.error_code, 0);
    let configs: Vec<(String, Option<String>, bool)> = result
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()),
                c.config_source == 5,
            )
        })
        .collect();
    assert_eq!(
        configs,
        [
            (
                "retention.ms".to_string(),
                Some("86400000".to_string()),
                false
            ),
            (
                "segment.bytes".to_string(),
                Some("1073741824".to_string()),
                true
            ),
        ]
    );
    cluster.shutdown().await;
}

/// Sets one quota of client id `runnel-testkit` (the id `KafkaConn` sends)
/// through Kafka's AlterClientQuotas.
async fn set_client_quota(conn: &mut KafkaConn, key: &'static str, value: f64) {
    use kafka_protocol::messages::AlterClientQuotasRequest;
    let entry = runnel_testkit::kafka_wire::quota_entry("client-id", "runnel-testkit", key, value);
    let answer = conn
        .call(
            1,
            &AlterClientQuotasRequest::default().with_entries(vec![entry]),
        )
        .await;
    assert_eq!(answer.entries[0].error_code, 0, "{answer:?}");
}

/// KIP-219: a client over its quota gets its answer at once with
/// `throttle_time_ms`, then the broker reads nothing more from that
/// connection until the time is up; a client too old to throttle itself
/// (Produce before v6) gets its answer that much later instead. Request
/// time (`request_percentage`) throttles any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_throttles_are_announced_then_waited_out_as_kip_219_says() {
    use kafka_protocol::messages::MetadataRequest;
    use std::time::{Duration, Instant};
    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .start()
        .await;
    cluster
        .create_topic(
            NewTopic::new("throttled")
                .partitions(1)
                .replication_factor(1),
        )
        .await;
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    // 10 KB a second; 120 KB at once is 12 KB a second over the 10 s the
    // quota windows span: about 2 s to wait.
    set_client_quota(&mut conn, "producer_byte_rate", 10_000.0).await;
    let mut value = vec![b'.'; 120 * 1024];
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1_700_000_000_000, None, Some(&value), &[]);
    let big = Bytes::from(b.build().unwrap());
    let answer = conn.call(9, &produce("throttled", big)).await;
    let partition = &answer.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0, "throttled, not refused");
    let throttle = Duration::from_millis(u64::try_from(answer.throttle_time_ms).unwrap());
    assert!(
        throttle > Duration::from_millis(500) && throttle <= Duration::from_secs(11),
        "{throttle:?}"
    );
    // The next request waits out the throttle before it is even read.
    let asked = Instant::now();
    let _: kafka_protocol::messages::MetadataResponse =
        conn.call(12, &MetadataRequest::default()).await;
    assert!(
        asked.elapsed() >= throttle / 2,
        "answered after {:?} of a {throttle:?} throttle",
        asked.elapsed()
    );

    // Produce v5 does not throttle itself: its answer comes late.
    let mut old = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    value.truncate(1024);
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1_700_000_000_001, None, Some(&value), &[]);
    let asked = Instant::now();
    let answer = old
        .call(5, &produce("throttled", Bytes::from(b.build().unwrap())))
        .await;
    let waited = asked.elapsed();
    let throttle = Duration::from_millis(u64::try_from(answer.throttle_time_ms).unwrap());
    assert!(throttle > Duration::ZERO, "{answer:?}");
    assert!(
        waited >= throttle,
        "answered after {waited:?}, throttle {throttle:?}"
    );
    assert_eq!(answer.responses[0].partition_responses[0].error_code, 0);

    // Request time: a quota no request can stay under throttles even a
    // Metadata request.
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    set_client_quota(&mut conn, "request_percentage", 0.0001).await;
    let answer: kafka_protocol::messages::MetadataResponse =
        conn.call(12, &MetadataRequest::default()).await;
    assert!(answer.throttle_time_ms > 0, "{answer:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassignments_and_manual_placement_over_the_kafka_protocol() {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic,
    };
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
        ListPartitionReassignmentsRequest,
    };

    let cluster = TestCluster::builder().brokers(3).start().await;
    let admin = cluster.admin();
    let first = cluster.kafka_bootstrap();
    let mut conn = KafkaConn::connect(first.split(',').next().unwrap()).await;
    let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();

    // Placed by hand: partition 0 on 1,2 and partition 1 on 2,3.
    let created = conn
        .call(
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(topic("placed"))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_assignments(vec![
                            CreatableReplicaAssignment::default()
                                .with_partition_index(0)
                                .with_broker_ids(ids(&[1, 2])),
                            CreatableReplicaAssignment::default()
                                .with_partition_index(1)
                                .with_broker_ids(ids(&[2, 3])),
                        ]),
                ])
                .with_timeout_ms(30_000),
        )
        .await;
    let t = &created.topics[0];
    assert_eq!(
        (t.error_code, t.num_partitions, t.replication_factor),
        (0, 2, 2)
    );
    let placed = admin.assignments(&["placed".to_owned()]).await.unwrap();
    assert_eq!(placed["placed"][&0], vec![1, 2]);
    assert_eq!(placed["placed"][&1], vec![2, 3]);

    // A third partition by hand; a count the assignments do not match is refused.
    let grow = |count: i32, assignments: Vec<Vec<i32>>| {
        CreatePartitionsRequest::default()
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(topic("placed"))
                    .with_count(count)
                    .with_assignments(Some(
                        assignments
                            .iter()
                            .map(|a| CreatePartitionsAssignment::default().with_broker_ids(ids(a)))
                            .collect(),
                    )),
            ])
            .with_timeout_ms(30_000)
    };
    let refused = conn.call(3, &grow(4, vec![vec![3, 1]])).await;
    assert_eq!(
        refused.results[0].error_code, 39,
        "INVALID_REPLICA_ASSIGNMENT"
    );
    let grown = conn.call(3, &grow(3, vec![vec![3, 1]])).await;
    assert_eq!(grown.results[0].error_code, 0);

    // Move partition 0 to 3,1; cancel partition 1 (no move: refused); an
    // unknown broker and a forbidden factor change are refused per partition.
    let reassign = |allow: bool, partitions: Vec<(i32, Option<Vec<i32>>)>| {
        AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_allow_replication_factor_change(allow)
            .with_topics(vec![
                ReassignableTopic::default()
                    .with_name(topic("placed"))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(p, r)| {
                                ReassignablePartition::default()
                                    .with_partition_index(p)
                                    .with_replicas(r.map(|r| ids(&r)))
                            })
                            .collect(),
                    ),
            ])
    };
    let answer = conn
        .call(
            1,
            &reassign(
                true,
                vec![(0, Some(vec![3, 1])), (1, None), (2, Some(vec![9]))],
            ),
        )
        .await;
    assert_eq!(answer.error_code, 0);
    let codes: Vec<(i32, i16)> = answer.responses[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![(0, 0), (1, 85), (2, 39)],
        "NO_REASSIGNMENT_IN_PROGRESS, INVALID_REPLICA_ASSIGNMENT"
    );
    let answer = conn
        .call(1, &reassign(false, vec![(2, Some(vec![3]))]))
        .await;
    assert_eq!(
        answer.responses[0].partitions[0].error_code, 38,
        "INVALID_REPLICATION_FACTOR"
    );
    assert!(!answer.allow_replication_factor_change);

    // Listed while it runs (it may already be done), then gone.
    let listed = conn
        .call(
            0,
            &ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000),
        )
        .await;
    assert_eq!(listed.error_code, 0);
    for t in &listed.topics {
        for p in &t.partitions {
            assert_eq!(
                (p.partition_index, p.adding_replicas.clone()),
                (0, ids(&[3]))
            );
        }
    }
    wait_for(
        "partition 0 on 3,1",
        std::time::Duration::from_secs(30),
        || {
            let admin = admin.clone();
            async move {
                admin
                    .list_partition_reassignments(None)
                    .await
                    .is_ok_and(|l| l.is_empty())
                    && admin
                        .assignments(&["placed".to_owned()])
                        .await
                        .is_ok_and(|a| a["placed"][&0] == vec![3, 1])
            }
        },
    )
    .await;
    let listed = conn
        .call(
            0,
            &ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000),
        )
        .await;
    assert!(listed.topics.is_empty());

    // Partition 0 kept leader 1 through the move; its preferred replica is
    // now 3: a preferred election moves it, a second is not needed.
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{DescribeLogDirsRequest, ElectLeadersRequest};
    let elect = |election_type: i8, partitions: Option<Vec<i32>>| {
        ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_timeout_ms(30_000)
            .with_topic_partitions(partitions.map(|p| {
                vec![
                    TopicPartitions::default()
                        .with_topic(topic("placed"))
                        .with_partitions(p),
                ]
            }))
    };
    let codes = |r: &kafka_protocol::messages::ElectLeadersResponse| -> Vec<(i32, i16)> {
        r.replica_election_results
            .iter()
            .flat_map(|t| {
                t.partition_result
                    .iter()
                    .map(|p| (p.partition_id, p.error_code))
            })
            .collect()
    };
    let before = admin.describe_topic("placed").await.unwrap().partitions[0].leader;
    let answer = conn.call(2, &elect(0, Some(vec![0, 7]))).await;
    let expected_first = if before == 3 { 84 } else { 0 };
    assert_eq!(
        codes(&answer),
        vec![(0, expected_first), (7, 3)],
        "elected; UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        admin.describe_topic("placed").await.unwrap().partitions[0].leader,
        3
    );
    let answer = conn.call(2, &elect(0, Some(vec![0]))).await;
    assert_eq!(codes(&answer), vec![(0, 84)], "ELECTION_NOT_NEEDED");
    let answer = conn.call(2, &elect(1, Some(vec![0]))).await;
    assert_eq!(
        codes(&answer),
        vec![(0, 84)],
        "an unclean election with a leader serving"
    );
    let answer = conn.call(2, &elect(0, None)).await;
    assert!(
        codes(&answer).iter().all(|(_, code)| *code != 84),
        "all partitions: those needing nothing are left out: {answer:?}"
    );

    // DescribeLogDirs: this broker's directory and the partitions it holds.
    let dirs = conn
        .call(4, &DescribeLogDirsRequest::default().with_topics(None))
        .await;
    assert_eq!((dirs.error_code, dirs.results.len()), (0, 1));
    let dir = &dirs.results[0];
    assert!(dir.total_bytes > 0 && dir.usable_bytes > 0 && !dir.log_dir.is_empty());
    let held: Vec<i32> = dir
        .topics
        .iter()
        .filter(|t| t.name.as_str() == "placed")
        .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
        .collect();
    let on_this_broker: Vec<i32> =
        admin.assignments(&["placed".to_owned()]).await.unwrap()["placed"]
            .iter()
            .filter(|(_, replicas)| replicas.contains(&1))
            .map(|(p, _)| *p)
            .collect();
    assert_eq!(
        held, on_this_broker,
        "broker 1 (the first bootstrap address) answers for its own"
    );
    cluster.shutdown().await;
}
