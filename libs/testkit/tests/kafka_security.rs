//! SASL on the Kafka listener: real clients (confluent-kafka, kafka-python,
//! kcat) over SASL_PLAINTEXT with SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN,
//! users managed through Kafka's own admin API; and Kafka's rules on the
//! wire: nothing but ApiVersions and SASL before authentication, unknown
//! mechanisms and wrong passwords refused and the connection closed,
//! sessions that run out (KIP-368) closed unless re-authenticated, and
//! ILLEGAL_SASL_STATE on a listener without SASL. Also TLS, ACLs and
//! client quotas as real clients and the wire see them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    MetadataRequest, MetadataResponse, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use runnel_client::{DEFAULT_ITERATIONS, NewTopic, ScramMechanism};
use runnel_testkit::TestCluster;
use runnel_testkit::clients::run_scenario;
use runnel_testkit::kafka_wire::KafkaConn;

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// A cluster whose Kafka listener speaks `protocol` (with `ssl.client.auth`
/// as given for the TLS ones, and the test certificates), with user alice
/// (`alice-secret`, both SCRAM mechanisms) created through the gRPC admin API.
async fn cluster_with_alice(protocol: &str, client_auth: &str, reauth_ms: u64) -> TestCluster {
    let cluster = TestCluster::builder()
        .coordinators(1)
        .auto_create_topics(false)
        .kafka_security_protocol(protocol)
        .kafka_client_auth(client_auth)
        .connections_max_reauth_ms(reauth_ms)
        .start()
        .await;
    let admin = cluster.admin();
    for m in ScramMechanism::ALL {
        admin
            .upsert_scram_credential("alice", m, "alice-secret", DEFAULT_ITERATIONS)
            .await
            .unwrap();
    }
    cluster
}

/// A SASL_PLAINTEXT cluster with alice.
async fn secure_cluster(reauth_ms: u64) -> TestCluster {
    cluster_with_alice("SASL_PLAINTEXT", "none", reauth_ms).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_over_sasl_with_users_from_the_admin_api() {
    let cluster = secure_cluster(0).await;
    run_scenario(
        "security_compat.py",
        "confluent",
        &cluster.kafka_bootstrap(),
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_from_kafkas_admin_api_are_enforced_on_a_real_client() {
    let cluster = TestCluster::builder()
        .coordinators(1)
        .auto_create_topics(false)
        .kafka_security_protocol("SASL_PLAINTEXT")
        .authorizer("User:admin")
        .start()
        .await;
    let admin = cluster.admin();
    for (user, mechanism, password) in [
        ("admin", ScramMechanism::ScramSha512, "admin-secret"),
        ("alice", ScramMechanism::ScramSha512, "alice-secret"),
        ("bob", ScramMechanism::ScramSha256, "bob-secret"),
    ] {
        admin
            .upsert_scram_credential(user, mechanism, password, DEFAULT_ITERATIONS)
            .await
            .unwrap();
    }
    run_scenario("security_compat.py", "acls", &cluster.kafka_bootstrap()).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_over_sasl() {
    let cluster = secure_cluster(0).await;
    for m in ["scram-sha-512", "scram-sha-256", "plain"] {
        cluster
            .create_topic(NewTopic::new(format!("sasl-{m}")))
            .await;
    }
    run_scenario(
        "security_compat.py",
        "kafka_python",
        &cluster.kafka_bootstrap(),
    )
    .await;
    cluster.shutdown().await;
}

/// kcat with PLAIN: Debian's kcat links librdkafka 2.0.2, whose SCRAM
/// client repeats its nonce in the final message (fixed in librdkafka
/// 2.6.1, confluentinc/librdkafka#4895); Runnel checks the nonce as RFC 5802
/// and Kafka 4 do, so that kcat's SCRAM is refused here as by Kafka 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_over_sasl() {
    let cluster = secure_cluster(0).await;
    cluster.create_topic(NewTopic::new("kcat")).await;
    let bootstrap = cluster.kafka_bootstrap();
    let sasl = |password: &str| {
        [
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=alice",
            "-X",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("sasl.password={password}")])
        .collect::<Vec<_>>()
    };
    let input = cluster.data_dir().join("kcat-input");
    std::fs::write(&input, "a\nb\nc\n").unwrap();
    let args = |extra: &[&str], password: &str| {
        ["-b", &bootstrap]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .chain(sasl(password))
            .collect::<Vec<_>>()
    };
    let mut produce = args(&["-P", "-t", "kcat", "-l"], "alice-secret");
    produce.push(input.display().to_string());
    runnel_testkit::clients::run("kcat".into(), produce).await;
    let out = runnel_testkit::clients::run(
        "kcat".into(),
        args(
            &["-C", "-t", "kcat", "-o", "beginning", "-e", "-q"],
            "alice-secret",
        ),
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nb\nc\n");
    // A wrong password: kcat cannot list the metadata and says why.
    let list = args(&["-L", "-m", "5"], "wrong");
    let shown = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .arg("60")
            .arg("kcat")
            .args(list)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!shown.status.success());
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(
        stderr.contains("Authentication failed") || stderr.contains("invalid credentials"),
        "{stderr}"
    );
    cluster.shutdown().await;
}

async fn handshake(conn: &mut KafkaConn, mechanism: &'static str) -> i16 {
    conn.call(
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
    )
    .await
    .error_code
}

/// PLAIN's one message: authzid, user and password separated by NULs.
async fn plain(conn: &mut KafkaConn, user: &str, password: &str) -> (i16, i64) {
    assert_eq!(handshake(conn, "PLAIN").await, 0);
    let token = format!("\0{user}\0{password}");
    let answer = conn
        .call(
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
        )
        .await;
    (answer.error_code, answer.session_lifetime_ms)
}

/// Whether a Metadata request is answered (false: the broker closed the connection).
async fn served(conn: &mut KafkaConn) -> bool {
    conn.try_call(12, &MetadataRequest::default())
        .await
        .is_some_and(|r: MetadataResponse| !r.brokers.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkas_sasl_rules_on_the_wire() {
    let cluster = secure_cluster(1_500).await;
    let addr = cluster.kafka_bootstrap();

    // Anything but ApiVersions and SASL before authenticating closes the connection.
    let mut conn = KafkaConn::connect(&addr).await;
    assert!(!served(&mut conn).await);

    // An unknown mechanism is refused with the enabled ones listed, then closed.
    let mut conn = KafkaConn::connect(&addr).await;
    let answer = conn
        .call(
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI")),
        )
        .await;
    assert_eq!(answer.error_code, UNSUPPORTED_SASL_MECHANISM);
    let enabled: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(enabled, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert!(!served(&mut conn).await);

    // A wrong password: SASL_AUTHENTICATION_FAILED, then closed.
    let mut conn = KafkaConn::connect(&addr).await;
    assert_eq!(
        plain(&mut conn, "alice", "nope").await.0,
        SASL_AUTHENTICATION_FAILED
    );
    assert!(!served(&mut conn).await);

    // The session lasts connections.max.reauth.ms; past it, the next request
    // closes the connection.
    let mut conn = KafkaConn::connect(&addr).await;
    assert_eq!(plain(&mut conn, "alice", "alice-secret").await, (0, 1_500));
    assert!(served(&mut conn).await);
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    assert!(!served(&mut conn).await);

    // Re-authenticating in time keeps it going.
    let mut conn = KafkaConn::connect(&addr).await;
    assert_eq!(plain(&mut conn, "alice", "alice-secret").await.0, 0);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(plain(&mut conn, "alice", "alice-secret").await.0, 0);
        assert!(served(&mut conn).await);
    }
    // ... but not as somebody else.
    cluster
        .admin()
        .upsert_scram_credential("eve", ScramMechanism::ScramSha512, "eve-secret", 4096)
        .await
        .unwrap();
    assert_eq!(
        plain(&mut conn, "eve", "eve-secret").await.0,
        SASL_AUTHENTICATION_FAILED
    );
    assert!(!served(&mut conn).await);

    // A deleted user's open connection ends at its next re-authentication.
    let admin = cluster.admin();
    admin
        .upsert_scram_credential("dave", ScramMechanism::ScramSha512, "dave-secret", 4096)
        .await
        .unwrap();
    let mut conn = KafkaConn::connect(&addr).await;
    assert_eq!(plain(&mut conn, "dave", "dave-secret").await.0, 0);
    admin
        .delete_scram_credential("dave", ScramMechanism::ScramSha512)
        .await
        .unwrap();
    // Once the broker has applied the deletion (a fresh login fails) ...
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut probe = KafkaConn::connect(&addr).await;
        if plain(&mut probe, "dave", "dave-secret").await.0 == SASL_AUTHENTICATION_FAILED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion never reached the broker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... the open connection still works until its session needs renewing,
    // and the renewal is refused.
    assert!(served(&mut conn).await);
    assert_eq!(
        plain(&mut conn, "dave", "dave-secret").await.0,
        SASL_AUTHENTICATION_FAILED
    );
    assert!(!served(&mut conn).await);
    cluster.shutdown().await;

    // A listener without SASL answers the SASL requests with ILLEGAL_SASL_STATE.
    let open = TestCluster::builder().start().await;
    let mut conn = KafkaConn::connect(&open.kafka_bootstrap()).await;
    assert_eq!(handshake(&mut conn, "PLAIN").await, ILLEGAL_SASL_STATE);
    assert!(served(&mut conn).await);
    open.shutdown().await;
}

/// A TLS cluster with alice.
async fn tls_cluster(protocol: &str, client_auth: &str) -> TestCluster {
    cluster_with_alice(protocol, client_auth, 0).await
}

async fn tls_scenario(cluster: &TestCluster, scenario: &str, extra: &[&str]) {
    let mut args = vec![
        runnel_testkit::clients::script("security_compat.py")
            .display()
            .to_string(),
        scenario.into(),
        cluster.kafka_bootstrap(),
        cluster.tls_dir().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    runnel_testkit::clients::run(runnel_testkit::clients::python(), args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_with_required_client_certificates() {
    let cluster = tls_cluster("SSL", "required").await;
    tls_scenario(&cluster, "ssl", &[]).await;
    cluster.create_topic(NewTopic::new("py-tls")).await;
    tls_scenario(&cluster, "kafka_python_tls", &["SSL"]).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_with_every_mechanism() {
    let cluster = tls_cluster("SASL_SSL", "none").await;
    tls_scenario(&cluster, "sasl_ssl", &[]).await;
    cluster.create_topic(NewTopic::new("py-tls")).await;
    tls_scenario(&cluster, "kafka_python_tls", &["SASL_SSL"]).await;
    // kcat (PLAIN: see kcat_over_sasl) over SASL_SSL.
    let ca = format!(
        "ssl.ca.location={}",
        cluster.tls_dir().join("ca.pem").display()
    );
    let out = runnel_testkit::clients::run(
        "kcat".into(),
        [
            "-b",
            &cluster.kafka_bootstrap(),
            "-L",
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            &ca,
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=alice",
            "-X",
            "sasl.password=alice-secret",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("py-tls"));
    cluster.shutdown().await;
}

/// Whether a TLS handshake with the broker succeeds when trusting `ca_pem`.
async fn handshake_trusting(addr: &str, ca_pem: &std::path::Path) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for ca in runnel_common::tls::load_certs(ca_pem).unwrap() {
        roots.add(ca).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        runnel_common::tls::provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_without_a_restart() {
    let cluster = tls_cluster("SSL", "none").await;
    let addr = cluster.kafka_bootstrap();
    let dir = cluster.tls_dir();
    assert!(handshake_trusting(&addr, &dir.join("ca.pem")).await);
    // A new CA and a broker certificate from it, written in place.
    let ca = runnel_common::certs::DevCa::new("rotated CA").unwrap();
    std::fs::write(dir.join("rotated-ca.pem"), ca.ca_pem()).unwrap();
    let keystore = ca.server_keystore(&["127.0.0.1"]).unwrap();
    std::fs::write(dir.join("broker.pem.new"), keystore).unwrap();
    std::fs::rename(dir.join("broker.pem.new"), dir.join("broker.pem")).unwrap();
    runnel_testkit::wait_for(
        "the rotated certificate is served",
        Duration::from_secs(10),
        || {
            let (addr, ca) = (addr.clone(), dir.join("rotated-ca.pem"));
            async move { handshake_trusting(&addr, &ca).await }
        },
    )
    .await;
    assert!(!handshake_trusting(&addr, &dir.join("ca.pem")).await);
    // A half-written file keeps the certificate being served.
    std::fs::write(dir.join("broker.pem"), "-----BEGIN CERTIFICATE-----\nAAAA").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(handshake_trusting(&addr, &dir.join("rotated-ca.pem")).await);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_stalled_handshakes_do_not_stop_the_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = tls_cluster("SASL_SSL", "none").await;
    let addr = cluster.kafka_bootstrap();
    let ca = cluster.tls_dir().join("ca.pem");
    // A connection that starts a handshake and stalls holds nothing up.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(b"\x16\x03\x01\x02\x00").await.unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let inputs: [&[u8]; 4] = [
        b"\x00\x00\x00\x0a\x00\x12\x00\x03\x00\x00\x00\x01\x00\x00", // a plaintext Kafka request
        b"\x16\x03\x01\x00\x05hello", // a record too short to be a ClientHello
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a truncated ClientHello
        &noise,
    ];
    for input in inputs {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(input).await.unwrap();
        conn.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), conn.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "the broker closes a connection that sent garbage"
        );
        assert!(
            handshake_trusting(&addr, &ca).await,
            "others are still served"
        );
    }
    // The stalled one is dropped after the handshake timeout.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stalled.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a stalled handshake times out");
    cluster.shutdown().await;
}

/// The error of topic `topic` in a Metadata answer on `conn`.
async fn topic_error(conn: &mut KafkaConn, topic: &str) -> i16 {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let answer: MetadataResponse = conn
        .call(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(
                    kafka_protocol::messages::TopicName(StrBytes::from_string(topic.to_owned())),
                )),
            ])),
        )
        .await;
    answer.topics.first().map_or(-1, |t| t.error_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_changes_reach_every_broker_through_the_metadata_log() {
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    let cluster = TestCluster::builder()
        .brokers(3)
        .auto_create_topics(false)
        .kafka_security_protocol("SASL_PLAINTEXT")
        .authorizer("User:admin")
        .start()
        .await;
    let admin = cluster.admin();
    admin
        .upsert_scram_credential(
            "alice",
            ScramMechanism::ScramSha512,
            "alice-secret",
            DEFAULT_ITERATIONS,
        )
        .await
        .unwrap();
    admin.create_topic(NewTopic::new("orders")).await.unwrap();
    let mut conns = Vec::new();
    for addr in cluster.kafka_bootstrap().split(',') {
        let mut conn = KafkaConn::connect(addr).await;
        assert_eq!(plain(&mut conn, "alice", "alice-secret").await.0, 0);
        // Hidden, and refused exactly as a topic that does not exist.
        assert_eq!(
            topic_error(&mut conn, "orders").await,
            TOPIC_AUTHORIZATION_FAILED
        );
        assert_eq!(
            topic_error(&mut conn, "no-such-topic").await,
            TOPIC_AUTHORIZATION_FAILED
        );
        conns.push(conn);
    }
    let binding = runnel_client::AclBinding {
        resource_type: runnel_client::AclResourceType::Topic,
        name: "orders".into(),
        pattern_type: runnel_client::AclPatternType::Literal,
        principal: "User:alice".into(),
        host: "*".into(),
        operation: runnel_client::AclOperation::Describe,
        permission: runnel_client::AclPermission::Allow,
    };
    for (change, want) in [("created", 0), ("deleted", TOPIC_AUTHORIZATION_FAILED)] {
        let start = std::time::Instant::now();
        if want == 0 {
            admin
                .create_acls(std::slice::from_ref(&binding))
                .await
                .unwrap();
        } else {
            let gone = admin
                .delete_acls(&runnel_client::AclFilter {
                    principal: Some("User:alice".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(gone, vec![binding.clone()]);
        }
        for (i, conn) in conns.iter_mut().enumerate() {
            // Milliseconds here; the bound leaves room for a loaded machine.
            while topic_error(conn, "orders").await != want {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "broker {i} did not enforce the ACL {change} within 5 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        println!(
            "ACL {change}: enforced by all 3 brokers after {:?}",
            start.elapsed()
        );
    }
    cluster.shutdown().await;
}

/// Client quotas with real clients: set and described through Kafka's own
/// API (kafka-python's encoding), a producer and a consumer throttled by
/// their byte rates without losing a record, CreateTopics refused once
/// `controller_mutation_rate` is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_quotas_throttle_real_clients_without_dropping_records() {
    let cluster = TestCluster::builder()
        .coordinators(1)
        .auto_create_topics(false)
        .kafka_security_protocol("SASL_PLAINTEXT")
        .start()
        .await;
    cluster
        .admin()
        .upsert_scram_credential(
            "alice",
            ScramMechanism::ScramSha512,
            "alice-secret",
            DEFAULT_ITERATIONS,
        )
        .await
        .unwrap();
    run_scenario("quotas_compat.py", "quotas", &cluster.kafka_bootstrap()).await;
    cluster.shutdown().await;
}

/// The quota APIs need DESCRIBE_CONFIGS (DescribeClientQuotas) and
/// ALTER_CONFIGS (AlterClientQuotas) on the cluster, as in Kafka: without
/// them CLUSTER_AUTHORIZATION_FAILED and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_apis_need_the_cluster_config_operations() {
    use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
    use runnel_testkit::kafka_wire::quota_entry;
    const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    let cluster = TestCluster::builder()
        .auto_create_topics(false)
        .kafka_security_protocol("SASL_PLAINTEXT")
        .authorizer("User:admin")
        .start()
        .await;
    let admin = cluster.admin();
    for user in ["admin", "alice"] {
        admin
            .upsert_scram_credential(
                user,
                ScramMechanism::ScramSha512,
                &format!("{user}-secret"),
                DEFAULT_ITERATIONS,
            )
            .await
            .unwrap();
    }
    let alter = AlterClientQuotasRequest::default().with_entries(vec![quota_entry(
        "user",
        "alice",
        "producer_byte_rate",
        1024.0,
    )]);
    let describe = DescribeClientQuotasRequest::default();
    let bootstrap = cluster.kafka_bootstrap();
    let mut alice = KafkaConn::connect(&bootstrap).await;
    assert_eq!(plain(&mut alice, "alice", "alice-secret").await.0, 0);
    let refused = alice.call(1, &alter).await;
    assert_eq!(
        refused.entries[0].error_code, CLUSTER_AUTHORIZATION_FAILED,
        "{refused:?}"
    );
    assert_eq!(
        alice.call(1, &describe).await.error_code,
        CLUSTER_AUTHORIZATION_FAILED
    );
    let mut root = KafkaConn::connect(&bootstrap).await;
    assert_eq!(plain(&mut root, "admin", "admin-secret").await.0, 0);
    let described = root.call(1, &describe).await;
    assert_eq!(described.error_code, 0);
    assert_eq!(
        described.entries.map(|e| e.len()),
        Some(0),
        "alice's refused change left nothing"
    );
    assert_eq!(root.call(1, &alter).await.entries[0].error_code, 0);
    let described = root.call(1, &describe).await;
    assert_eq!(described.entries.map(|e| e.len()), Some(1));
    cluster.shutdown().await;
}
