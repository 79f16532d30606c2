//! Mutual TLS between services: every gRPC listener serves TLS, each service
//! presents its own certificate, replication, metadata and transaction
//! traffic flow over it, and a caller without a service certificate is
//! refused every internal RPC (replica fetches, transaction markers, broker
//! registration and heartbeats, the metadata stream, Raft) while the public
//! API keeps serving it.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use runnel_client::{Acks, NewTopic, Producer, ProducerConfig, ProducerRecord};
use runnel_common::errors::code_of;
use runnel_common::tls::ClientTls;
use runnel_proto::broker::v1 as broker_pb;
use runnel_proto::broker::v1::broker_client::BrokerClient;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as controller_pb;
use runnel_proto::controller::v1::controller_client::ControllerClient;
use runnel_proto::coordinator::v1 as coordinator_pb;
use runnel_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use runnel_testkit::TestCluster;
use tonic::transport::Channel;

/// A channel to `addr` over `tls`.
fn channel(addr: &str, tls: Arc<ClientTls>) -> Channel {
    runnel_common::transport::lazy_channel(addr, Duration::from_secs(2), Some(&tls)).unwrap()
}

/// TLS trusting the cluster's CA, with `identity` (one PEM holding a
/// certificate and its key) as the client certificate.
fn tls(cluster: &TestCluster, identity: Option<&str>) -> Arc<ClientTls> {
    let dir = cluster.tls_dir();
    ClientTls::client(Some(dir.join("ca.pem")), identity.map(|f| dir.join(f))).unwrap()
}

/// Writes `<name>-keystore.pem`: `<name>.pem`'s certificate and
/// `<name>.key`'s key in one PEM; returns its file name.
fn keystore(cluster: &TestCluster, name: &str) -> String {
    let dir = cluster.tls_dir();
    let cert = std::fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap();
    let key = std::fs::read_to_string(dir.join(format!("{name}.key"))).unwrap();
    let file = format!("{name}-keystore.pem");
    std::fs::write(dir.join(&file), format!("{cert}{key}")).unwrap();
    file
}

fn denied(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{what}: {status:?}"
    );
    assert_eq!(
        code_of(&status),
        ErrorCode::ClusterAuthorizationFailed,
        "{what}: {status:?}"
    );
}

fn replica_fetch() -> broker_pb::FetchRequest {
    broker_pb::FetchRequest {
        max_wait_ms: 0,
        max_bytes: 1024,
        replica: Some(broker_pb::FetchingReplica {
            broker_id: 2,
            broker_epoch: 0,
        }),
        partitions: vec![broker_pb::FetchPartition {
            topic: "orders".into(),
            partition: 0,
            fetch_offset: 0,
            partition_max_bytes: 1024,
            current_leader_epoch: -1,
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_replicate_and_serve_clients_over_mutual_tls() {
    let cluster = TestCluster::builder()
        .controllers(3)
        .brokers(3)
        .coordinators(1)
        .grpc_tls(true)
        .start()
        .await;
    cluster
        .create_topic(
            NewTopic::new("orders")
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "3"),
        )
        .await;
    let producer = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..200 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("orders", format!("order-{i}")).partition(0))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
    // min.insync.replicas=3 acknowledged: both followers fetched over TLS.
    let admin = cluster.admin();
    let isr = admin.describe_topic("orders").await.unwrap().partitions[0]
        .isr
        .len();
    assert_eq!(isr, 3);

    // The coordinator registered (an internal RPC) with its certificate
    // when the cluster started; the records read back over TLS too.
    let mut consumer = cluster.earliest_consumer();
    consumer
        .assign(consumer.partitions_of("orders").await.unwrap())
        .await
        .unwrap();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen < 200 && tokio::time::Instant::now() < deadline {
        seen += consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(seen, 200, "every record read back over TLS");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_rpcs_need_a_service_certificate() {
    let cluster = TestCluster::builder()
        .coordinators(1)
        .grpc_tls(true)
        .start()
        .await;
    cluster
        .create_topic(NewTopic::new("orders").partitions(1))
        .await;
    let broker = cluster.bootstrap();
    let controller = cluster.controller_addrs();
    let coordinator = cluster.coordinator(0).unwrap().grpc_addr.to_string();

    // A client with no certificate: the public API serves it ...
    let anonymous = tls(&cluster, None);
    let mut b = BrokerClient::new(channel(&broker, Arc::clone(&anonymous)));
    b.metadata(broker_pb::MetadataRequest::default())
        .await
        .unwrap();
    // ... and every internal RPC refuses it.
    denied(b.fetch(replica_fetch()).await, "a replica fetch");
    denied(
        b.write_txn_markers(broker_pb::WriteTxnMarkersRequest::default())
            .await,
        "transaction markers",
    );
    let mut c = ControllerClient::new(channel(&controller, Arc::clone(&anonymous)));
    denied(
        c.broker_heartbeat(controller_pb::BrokerHeartbeatRequest::default())
            .await,
        "a broker heartbeat",
    );
    denied(
        c.watch(controller_pb::WatchRequest::default()).await,
        "the metadata stream",
    );
    denied(
        c.register_broker(controller_pb::RegisterBrokerRequest::default())
            .await,
        "a broker registration",
    );
    let mut k = CoordinatorClient::new(channel(&coordinator, Arc::clone(&anonymous)));
    denied(
        k.complete_transaction(coordinator_pb::CompleteTransactionRequest::default())
            .await,
        "a transaction's completion",
    );

    // A certificate the cluster's CA signed, but no service's: still refused.
    let alice = tls(&cluster, Some(&keystore(&cluster, "alice")));
    let mut b = BrokerClient::new(channel(&broker, alice));
    b.metadata(broker_pb::MetadataRequest::default())
        .await
        .unwrap();
    denied(b.fetch(replica_fetch()).await, "alice's replica fetch");

    // A certificate from another CA does not get through the handshake.
    let dir = cluster.tls_dir();
    std::fs::write(
        dir.join("mallory-keystore.pem"),
        format!(
            "{}{}",
            std::fs::read_to_string(dir.join("mallory.pem")).unwrap(),
            std::fs::read_to_string(dir.join("mallory.key")).unwrap()
        ),
    )
    .unwrap();
    let mallory = tls(&cluster, Some("mallory-keystore.pem"));
    let mut b = BrokerClient::new(channel(&broker, mallory));
    assert!(
        b.metadata(broker_pb::MetadataRequest::default())
            .await
            .is_err(),
        "a certificate from another CA is refused"
    );

    // A plaintext client on the TLS port gets nowhere.
    let plain =
        runnel_common::transport::lazy_channel(&broker, Duration::from_secs(2), None).unwrap();
    let mut b = BrokerClient::new(plain);
    let err = b
        .metadata(broker_pb::MetadataRequest::default())
        .await
        .unwrap_err();
    let transport = std::error::Error::source(&err)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    assert!(transport, "a transport failure, not an answer: {err:?}");

    // The broker's own certificate is let through.
    let service = tls(&cluster, Some("broker-service.pem"));
    let mut b = BrokerClient::new(channel(&broker, service));
    b.write_txn_markers(broker_pb::WriteTxnMarkersRequest::default())
        .await
        .unwrap();
    cluster.shutdown().await;
}
