//! Bad input gets a clear error and changes nothing.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use runnel_client::{
    Acks, ClientError, ErrorCode, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use runnel_proto::broker::v1 as pb;
use runnel_proto::broker::v1::broker_client::BrokerClient;
use runnel_records::batch::{BatchBuilder, Compression};
use runnel_testkit::TestCluster;

fn code(r: Result<(), ClientError>) -> ErrorCode {
    r.unwrap_err().code().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mistakes_are_refused() {
    let cluster = TestCluster::builder().start().await;
    let admin = cluster.admin();
    assert_eq!(
        code(admin.create_topic(NewTopic::new("bad/name")).await),
        ErrorCode::InvalidTopicException
    );
    assert_eq!(
        code(admin.create_topic(NewTopic::new("..")).await),
        ErrorCode::InvalidTopicException
    );
    let err = admin
        .create_topic(NewTopic::new("t").config("retention.ms", "forever"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidConfig));
    assert!(err.to_string().contains("retention.ms"), "{err}");
    assert_eq!(
        code(
            admin
                .create_topic(NewTopic::new("t").replication_factor(2))
                .await
        ),
        ErrorCode::InvalidReplicationFactor
    );
    admin
        .create_topic(NewTopic::new("t").partitions(3))
        .await
        .unwrap();
    let err = admin.create_partitions("t", 2).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidPartitions));
    assert!(err.to_string().contains("can only be added"), "{err}");
    assert_eq!(
        admin.describe_topic("t").await.unwrap().partitions.len(),
        3,
        "unchanged"
    );
    let err = admin
        .alter_configs("t", &[("cleanup.policy".into(), "shred".into())], &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidConfig));
    assert_eq!(
        code(admin.delete_topic("missing").await),
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(admin.list_topics().await.unwrap(), vec!["t".to_string()]);
    cluster.shutdown().await;
}

async fn broker(cluster: &TestCluster) -> BrokerClient<tonic::transport::Channel> {
    BrokerClient::connect(format!("http://{}", cluster.bootstrap()))
        .await
        .unwrap()
}

async fn end_offset(cluster: &TestCluster, topic: &str) -> i64 {
    cluster
        .admin()
        .describe_topic(topic)
        .await
        .unwrap()
        .partitions[0]
        .log_end_offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_produce_and_fetch_requests_are_refused() {
    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .start()
        .await;
    let admin = cluster.admin();
    cluster
        .create_topic(NewTopic::new("small").config("max.message.bytes", "2000"))
        .await;
    let mut b = broker(&cluster).await;
    let good = |n: usize| {
        let mut builder = BatchBuilder::new(Compression::None);
        for i in 0..n {
            builder.append(1, Some(format!("k{i}").as_bytes()), Some(&[b'x'; 100]), &[]);
        }
        builder.build().unwrap()
    };
    let produce = |topic: &str, records: Vec<u8>| pb::ProduceRequest {
        acks: pb::Acks::All as i32,
        timeout_ms: 1000,
        partitions: vec![pb::ProducePartition {
            topic: topic.into(),
            partition: 0,
            records: records.into(),
        }],
        transactional_id: String::new(),
    };
    let first = b
        .produce(produce("small", good(3)))
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(
        (first.error_code(), first.base_offset),
        (ErrorCode::None, 0)
    );

    // A corrupt batch (bad CRC): refused, nothing appended.
    let mut corrupt = good(2);
    *corrupt.last_mut().unwrap() ^= 0xff;
    let r = b
        .produce(produce("small", corrupt))
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(
        r.error_code(),
        ErrorCode::CorruptMessage,
        "{}",
        r.error_message
    );
    assert!(r.error_message.contains("crc"), "{}", r.error_message);
    // Larger than the topic's max.message.bytes.
    let r = b
        .produce(produce("small", good(30)))
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(
        r.error_code(),
        ErrorCode::MessageTooLarge,
        "{}",
        r.error_message
    );
    // Garbage that is not a batch at all.
    let r = b
        .produce(produce("small", vec![1, 2, 3]))
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(r.error_code(), ErrorCode::CorruptMessage);
    assert_eq!(
        end_offset(&cluster, "small").await,
        3,
        "nothing appended by refused requests"
    );

    // Unknown topic with auto-create off; unknown partition.
    let r = b
        .produce(produce("nope", good(1)))
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(r.error_code(), ErrorCode::UnknownTopicOrPartition);
    let mut req = produce("small", good(1));
    req.partitions[0].partition = 7;
    let r = b
        .produce(req)
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(r.error_code(), ErrorCode::UnknownTopicOrPartition);
    assert!(
        r.error_message.contains("has no partition 7"),
        "{}",
        r.error_message
    );
    assert!(
        admin.list_topics().await.unwrap() == vec!["small".to_string()],
        "no topic auto-created"
    );

    // Fetch out of range names the valid range.
    let fetch = pb::FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        partitions: vec![pb::FetchPartition {
            topic: "small".into(),
            partition: 0,
            fetch_offset: 99,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
        }],
        replica: None,
        ..Default::default()
    };
    let r = b
        .fetch(fetch)
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(r.error_code(), ErrorCode::OffsetOutOfRange);
    assert!(
        r.error_message.contains("log start 0, log end 3"),
        "{}",
        r.error_message
    );

    // Through the client: a record over max.request.size, and an unknown topic.
    let producer = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            acks: Acks::Leader,
            max_request_size: 10_000,
            ..ProducerConfig::default()
        },
    );
    let err = producer
        .send(ProducerRecord::new("small", vec![0u8; 20_000]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge), "{err}");
    let err = producer
        .send(ProducerRecord::new("missing", "x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
    // A record under the client limit but over the topic's: the broker says so.
    let delivery = producer
        .send(ProducerRecord::new("small", vec![0u8; 5_000]))
        .await
        .unwrap();
    let err = delivery.await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge), "{err}");
    producer.close().await.unwrap();
    assert_eq!(end_offset(&cluster, "small").await, 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_named() {
    let admin = runnel_client::Admin::new(runnel_client::ClientConfig {
        bootstrap: "127.0.0.1:1".into(),
        connect_timeout: Duration::from_millis(500),
        ..runnel_client::ClientConfig::default()
    });
    let err = admin.list_topics().await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}
