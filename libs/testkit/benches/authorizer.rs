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

mod wire;

use runnel_client::{
    AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType, DEFAULT_ITERATIONS,
    NewTopic, ScramMechanism,
};
use runnel_testkit::TestCluster;
use wire::{PARTITIONS, RECORDS_PER_BATCH, connect, produce_request};

const TOPIC: &str = "bench-orders";

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

fn main() {
    let (records, rounds) = wire::args(3_000_000, 3);
    let requests = records / (PARTITIONS as usize * RECORDS_PER_BATCH);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let open = cluster(false).await;
        let guarded = cluster(true).await;
        let request = produce_request(TOPIC);
        let mut conns = [
            connect(&open, "bench", "bench-secret").await,
            connect(&guarded, "bench", "bench-secret").await,
        ];
        let [none, thousand] = wire::side_by_side(
            &mut conns,
            ["no authorizer", "1,000 ACLs"],
            &request,
            requests,
            rounds,
        )
        .await;
        println!(
            "produce through the Kafka listener, {records} records x {rounds} rounds: no authorizer {none:.0}/s, 1,000 ACLs {thousand:.0}/s, ratio {:.3}",
            thousand / none
        );
        open.shutdown().await;
        guarded.shutdown().await;
    });
}
