//! A broker's external listener: clients outside the brokers' network (the
//! host, for the compose stack) get every node's external address in
//! metadata, clients inside get the internal one, and produce and consume
//! work through the external addresses alone.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use runnel_client::{
    ClientConfig, Cluster, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use runnel_common::shutdown::CancellationToken;

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_on_the_external_listener_names_external_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let controller = runnel_controller::start(
        runnel_controller::Config {
            listen: any_port(),
            admin_listen: any_port(),
            data_dir: dir.path().join("controller"),
            external_advertised_host: Some("controller.example".into()),
            external_advertised_port: Some(19093),
            ..runnel_controller::Config::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let broker = runnel_broker::start(
        runnel_broker::Config {
            listen: any_port(),
            admin_listen: any_port(),
            // Only resolvable inside the (imaginary) cluster network: a
            // client that gets this name cannot reach the broker.
            advertised_host: Some("broker-1.invalid".into()),
            external_listen: Some(any_port()),
            kafka_listen: any_port(),
            data_dir: dir.path().join("broker-1"),
            controller: controller.grpc_addr.to_string(),
            heartbeat_interval_ms: 100,
            io_threads: 1,
            ..runnel_broker::Config::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !broker.readiness.is_ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let internal = broker.grpc_addr;
    let external = broker.external_grpc_addr.expect("an external listener");
    assert_ne!(internal, external);

    // Inside: the names brokers registered with (replication uses these).
    let inside = Cluster::new(ClientConfig::new(internal.to_string()));
    let md = inside.refresh(&[], false).await.unwrap();
    assert_eq!(
        md.brokers[&1].addr,
        format!("broker-1.invalid:{}", internal.port())
    );
    assert_eq!(
        md.controller.as_deref(),
        Some(controller.grpc_addr.to_string().as_str())
    );

    // Outside: the external addresses, under the name clients dial.
    let outside = Cluster::new(ClientConfig::new(external.to_string()));
    let md = outside.refresh(&[], false).await.unwrap();
    assert_eq!(md.brokers[&1].addr, external.to_string());
    assert_eq!(md.controller.as_deref(), Some("controller.example:19093"));

    // And a client outside produces and consumes through them.
    let mut client = ClientConfig::new(external.to_string());
    client.request_timeout = Duration::from_secs(5);
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let delivered = producer
        .send(ProducerRecord::new("outside", "hello from the host"))
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await.unwrap();
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(vec![TopicPartition::new("outside", delivered.partition)])
        .await
        .unwrap();
    let mut values = Vec::new();
    while values.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record was not read back"
        );
        for r in consumer.poll(Duration::from_secs(1)).await.unwrap() {
            values.push(r.value.unwrap());
        }
    }
    assert_eq!(values, vec![bytes::Bytes::from("hello from the host")]);

    broker.shutdown().await;
    controller.shutdown().await;
}
