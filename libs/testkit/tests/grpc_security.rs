//! Mutual TLS between services: every gRPC listener serves TLS, each service
//! presents its own certificate, replication, metadata and transaction
//! traffic flow over it, and a caller without a service certificate is
//! refused every internal RPC (replica fetches, transaction markers, broker
//! registration and heartbeats, the metadata stream, Raft) while the public
//! API keeps serving it.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use runnel_client::{
    Acks, AclFilter, Admin, ClientError, DEFAULT_ITERATIONS, NewTopic, Producer, ProducerConfig,
    ProducerRecord, ScramMechanism,
};
use runnel_common::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use runnel_common::errors::code_of;
use runnel_common::tls::ClientTls;
use runnel_proto::broker::v1 as broker_pb;
use runnel_proto::broker::v1::broker_client::BrokerClient;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as controller_pb;
use runnel_proto::controller::v1::controller_client::ControllerClient;
use runnel_proto::coordinator::v1 as coordinator_pb;
use runnel_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use runnel_testkit::{TestCluster, wait_for};
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

    // The admin endpoints answer over HTTPS to clients that trust the CA.
    let readyz = format!("https://{}/readyz", cluster.broker_admin_addr(0));
    let https = runnel_common::http::HttpClient::with_tls(&tls(&cluster, None));
    let answer = https
        .request("GET", &readyz, None, &[], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let plain = readyz.replace("https://", "http://");
    let answer = runnel_common::http::HttpClient::new()
        .request("GET", &plain, None, &[], Duration::from_secs(5))
        .await;
    assert!(
        answer.is_err(),
        "no answer in clear on an HTTPS port: {answer:?}"
    );
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

/// A client of `cluster` trusting its CA, signed in as `user`.
fn signed_in(cluster: &TestCluster, user: &str, password: &str) -> runnel_client::ClientConfig {
    runnel_client::ClientConfig {
        tls: Some(tls(cluster, None)),
        credentials: Some(runnel_client::Credentials {
            user: user.into(),
            password: password.into(),
        }),
        ..runnel_client::ClientConfig::new(cluster.bootstrap())
    }
}

fn allow(operation: Operation, resource_type: ResourceType, name: &str) -> AclBinding {
    AclBinding {
        resource_type,
        name: name.into(),
        pattern_type: PatternType::Literal,
        principal: "User:alice".into(),
        host: "*".into(),
        operation,
        permission: Permission::Allow,
    }
}

async fn produce_one(config: &runnel_client::ClientConfig) -> Result<(), ClientError> {
    let producer = Producer::new(
        config.clone(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let sent = match producer
        .send(ProducerRecord::new("orders", "one").partition(0))
        .await
    {
        Ok(delivery) => delivery.await.map(|_| ()),
        Err(e) => Err(e),
    };
    let _ = producer.close().await;
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_api_signs_callers_in_and_authorizes_them() {
    let cluster = TestCluster::builder()
        .coordinators(1)
        .grpc_tls(true)
        .authorizer("User:admin")
        .auto_create_topics(false)
        .start()
        .await;
    // The test's own client presents CN=admin: a super user.
    let admin = cluster.admin();
    cluster.create_topic(NewTopic::new("orders")).await;
    cluster.create_topic(NewTopic::new("secret")).await;
    admin
        .upsert_scram_credential(
            "alice",
            ScramMechanism::ScramSha512,
            "alice-secret",
            DEFAULT_ITERATIONS,
        )
        .await
        .unwrap();
    let alice = signed_in(&cluster, "alice", "alice-secret");
    let alice_admin = Admin::new(alice.clone());

    // Signed in once the credential reached the controller and brokers;
    // without an ACL alice sees no topic and may write none.
    wait_for("alice can sign in", Duration::from_secs(10), || {
        let admin = alice_admin.clone();
        async move { admin.list_topics().await.is_ok() }
    })
    .await;
    assert!(alice_admin.list_topics().await.unwrap().is_empty());
    let err = produce_one(&alice).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::TopicAuthorizationFailed),
        "{err}"
    );
    let err = alice_admin
        .create_topic(NewTopic::new("mine"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::TopicAuthorizationFailed),
        "{err}"
    );
    let err = alice_admin.describe_group("g").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::GroupAuthorizationFailed),
        "{err}"
    );
    let err = alice_admin
        .upsert_scram_credential(
            "mallory",
            ScramMechanism::ScramSha256,
            "x",
            DEFAULT_ITERATIONS,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::ClusterAuthorizationFailed),
        "{err}"
    );

    // Granted, she writes, reads, and sees that topic alone.
    admin
        .create_acls(&[
            allow(Operation::Write, ResourceType::Topic, "orders"),
            allow(Operation::Read, ResourceType::Topic, "orders"),
            allow(Operation::Describe, ResourceType::Group, "g"),
        ])
        .await
        .unwrap();
    wait_for(
        "alice's grants reach every service",
        Duration::from_secs(10),
        || {
            let config = alice.clone();
            async move { produce_one(&config).await.is_ok() }
        },
    )
    .await;
    assert_eq!(alice_admin.list_topics().await.unwrap(), vec!["orders"]);
    let err = alice_admin.describe_topic("secret").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::TopicAuthorizationFailed),
        "{err}"
    );
    let err = alice_admin
        .describe_topic("no-such-topic")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::TopicAuthorizationFailed),
        "an unknown topic looks like a forbidden one: {err}"
    );
    wait_for(
        "the coordinator sees the group grant",
        Duration::from_secs(10),
        || {
            let admin = alice_admin.clone();
            async move {
                admin.describe_group("g").await.map_err(|e| e.code())
                    != Err(Some(ErrorCode::GroupAuthorizationFailed))
            }
        },
    )
    .await;

    // Revoked, she is refused at her next request.
    admin
        .delete_acls(&AclFilter {
            principal: Some("User:alice".into()),
            operation: Some(Operation::Write),
            ..Default::default()
        })
        .await
        .unwrap();
    // With WRITE on no topic, an idempotent producer is refused its
    // producer id (Kafka's IDEMPOTENT_WRITE rule) before it writes.
    wait_for(
        "the revocation reaches the broker",
        Duration::from_secs(10),
        || {
            let config = alice.clone();
            async move {
                produce_one(&config).await.err().and_then(|e| e.code())
                    == Some(ErrorCode::ClusterAuthorizationFailed)
            }
        },
    )
    .await;

    // Wrong or missing credentials: UNAUTHENTICATED, with one clear line.
    let wrong = Admin::new(signed_in(&cluster, "alice", "wrong"));
    let err = wrong.list_topics().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::SaslAuthenticationFailed),
        "{err}"
    );
    let nobody = Admin::new(runnel_client::ClientConfig {
        tls: Some(tls(&cluster, None)),
        ..runnel_client::ClientConfig::new(cluster.bootstrap())
    });
    let err = nobody.list_topics().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::SaslAuthenticationFailed),
        "{err}"
    );
    assert!(err.to_string().contains("--user"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_stalled_handshakes_do_not_stop_a_grpc_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = TestCluster::builder().grpc_tls(true).start().await;
    let broker = cluster.bootstrap();
    let mut served = BrokerClient::new(channel(&broker, tls(&cluster, None)));
    // Connections that start a handshake and stall hold nothing up.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut conn = tokio::net::TcpStream::connect(&broker).await.unwrap();
        conn.write_all(b"\x16\x03\x01\x02\x00").await.unwrap();
        stalled.push(conn);
    }
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let inputs: [&[u8]; 4] = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", // cleartext HTTP/2
        b"\x16\x03\x01\x00\x05hello",        // a record too short to be a ClientHello
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a truncated ClientHello
        &noise,
    ];
    for input in inputs {
        let mut conn = tokio::net::TcpStream::connect(&broker).await.unwrap();
        conn.write_all(input).await.unwrap();
        conn.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), conn.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "the broker closes a connection that sent {input:?}"
        );
        tokio::time::timeout(
            Duration::from_secs(5),
            served.metadata(broker_pb::MetadataRequest::default()),
        )
        .await
        .expect("others are served at once")
        .unwrap();
    }
    // The stalled ones are dropped after the handshake timeout.
    for mut conn in stalled {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), conn.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a stalled handshake times out");
    }
    cluster.shutdown().await;
}
