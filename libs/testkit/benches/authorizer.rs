//! The authorizer's cost on the produce path, side by side in one run: two
//! in-process clusters, both SASL_PLAINTEXT with the same user, one without
//! an authorizer and one with it and 1,000 ACL bindings (the bench user's
//! WRITE among them), take the same pipelined Produce requests through
//! their Kafka listeners in alternating rounds.
//!
//! ```sh
//! cargo bench -p runnel-testkit --bench authorizer [-- RECORDS ROUNDS]
//! ```
//!
//! Small requests make the per-request check weigh most: 6 partitions of
//! one topic per request, 100 records of 100 bytes per partition, 5
//! requests in flight on one connection, acks=1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ProduceRequest, SaslAuthenticateRequest, SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use runnel_client::{
    AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType, DEFAULT_ITERATIONS,
    NewTopic, ScramMechanism,
};
use runnel_records::batch::{BatchBuilder, Compression};
use runnel_testkit::TestCluster;
use runnel_testkit::kafka_wire::KafkaConn;

const TOPIC: &str = "bench-orders";
const PARTITIONS: i32 = 6;
const RECORDS_PER_BATCH: usize = 100;
const RECORD_SIZE: usize = 100;
const IN_FLIGHT: usize = 5;
const PRODUCE_VERSION: i16 = 9;

/// 1,000 bindings: the bench user's WRITE on its topic's prefix, and 999
/// others on other principals, topics (literal and prefixed) and groups.
fn acls() -> Vec<AclBinding> {
    let binding = |t, name: String, p, who: String, op| AclBinding {
        resource_type: t,
        name,
        pattern_type: p,
        principal: who,
        host: "*".into(),
        operation: op,
        permission: AclPermission::Allow,
    };
    let mut all = vec![binding(
        AclResourceType::Topic,
        "bench-".into(),
        AclPatternType::Prefixed,
        "User:bench".into(),
        AclOperation::Write,
    )];
    for i in 0..999 {
        all.push(match i % 3 {
            0 => binding(
                AclResourceType::Topic,
                format!("topic-{i}"),
                AclPatternType::Literal,
                format!("User:user-{i}"),
                AclOperation::Read,
            ),
            1 => binding(
                AclResourceType::Topic,
                format!("b{i}-"),
                AclPatternType::Prefixed,
                format!("User:user-{i}"),
                AclOperation::Write,
            ),
            _ => binding(
                AclResourceType::Group,
                format!("group-{i}"),
                AclPatternType::Literal,
                format!("User:user-{i}"),
                AclOperation::Read,
            ),
        });
    }
    all
}

async fn cluster(authorizer: bool) -> TestCluster {
    let mut builder = TestCluster::builder()
        .auto_create_topics(false)
        .kafka_security_protocol("SASL_PLAINTEXT");
    if authorizer {
        builder = builder.authorizer("User:admin");
    }
    let cluster = builder.start().await;
    let admin = cluster.admin();
    admin
        .upsert_scram_credential(
            "bench",
            ScramMechanism::ScramSha512,
            "bench-secret",
            DEFAULT_ITERATIONS,
        )
        .await
        .unwrap();
    admin
        .create_topic(NewTopic::new(TOPIC).partitions(PARTITIONS))
        .await
        .unwrap();
    if authorizer {
        admin.create_acls(&acls()).await.unwrap();
    }
    cluster
}

/// A connection authenticated as the bench user (SASL PLAIN).
async fn connect(cluster: &TestCluster) -> KafkaConn {
    let mut conn = KafkaConn::connect(&cluster.kafka_bootstrap()).await;
    let h = conn
        .call(
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .await;
    assert_eq!(h.error_code, 0);
    let a = conn
        .call(
            2,
            &SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from_static(b"\0bench\0bench-secret")),
        )
        .await;
    assert_eq!(a.error_code, 0, "authenticated");
    conn
}

/// Produces `requests` requests, `IN_FLIGHT` at a time; records per second.
async fn round(conn: &mut KafkaConn, request: &ProduceRequest, requests: usize) -> f64 {
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..requests {
        if pending.len() == IN_FLIGHT {
            let id = pending.pop_front().unwrap();
            check(conn.receive::<ProduceRequest>(PRODUCE_VERSION, id).await);
        }
        pending.push_back(conn.send(PRODUCE_VERSION, request).await);
    }
    while let Some(id) = pending.pop_front() {
        check(conn.receive::<ProduceRequest>(PRODUCE_VERSION, id).await);
    }
    let records = requests * PARTITIONS as usize * RECORDS_PER_BATCH;
    records as f64 / start.elapsed().as_secs_f64()
}

fn check(r: kafka_protocol::messages::ProduceResponse) {
    for t in r.responses {
        for p in t.partition_responses {
            assert_eq!(p.error_code, 0, "produce refused");
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let records: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(3_000_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let requests = records / (PARTITIONS as usize * RECORDS_PER_BATCH);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let open = cluster(false).await;
        let guarded = cluster(true).await;
        let mut builder = BatchBuilder::new(Compression::None);
        let value = vec![b'x'; RECORD_SIZE];
        for _ in 0..RECORDS_PER_BATCH {
            builder.append(1_700_000_000_000, None, Some(&value), &[]);
        }
        let batch = Bytes::from(builder.build().unwrap());
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_data(
                        (0..PARTITIONS)
                            .map(|p| {
                                PartitionProduceData::default()
                                    .with_index(p)
                                    .with_records(Some(batch.clone()))
                            })
                            .collect(),
                    ),
            ]);
        let mut conns = [connect(&open).await, connect(&guarded).await];
        // Warm both up (page cache, allocator) before measuring.
        for conn in &mut conns {
            round(conn, &request, requests / 10).await;
        }
        let (mut none, mut thousand) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            // Alternate which goes first, so neither always runs warmer.
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let rate = round(&mut conns[i], &request, requests).await;
                println!(
                    "round {r}: {} {:.0} records/s",
                    if i == 0 { "no authorizer   " } else { "1,000 ACLs      " },
                    rate
                );
                if i == 0 { none.push(rate) } else { thousand.push(rate) }
            }
        }
        let (none, thousand) = (median(none), median(thousand));
        println!(
            "produce through the Kafka listener, {records} records x {rounds} rounds: no authorizer {none:.0}/s, 1,000 ACLs {thousand:.0}/s, ratio {:.3}",
            thousand / none
        );
        open.shutdown().await;
        guarded.shutdown().await;
    });
}
