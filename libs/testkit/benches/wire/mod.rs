//! What the Kafka-listener benches share: one pipelined Produce request
//! shape, a SASL PLAIN connection, rounds of requests and their medians.

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ProduceRequest, SaslAuthenticateRequest, SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use runnel_records::batch::{BatchBuilder, Compression};
use runnel_testkit::TestCluster;
use runnel_testkit::kafka_wire::KafkaConn;

pub const PARTITIONS: i32 = 6;
pub const RECORDS_PER_BATCH: usize = 100;
pub const RECORD_SIZE: usize = 100;
pub const IN_FLIGHT: usize = 5;
pub const PRODUCE_VERSION: i16 = 9;

/// A Produce (acks=1) of one batch of `RECORDS_PER_BATCH` records of
/// `RECORD_SIZE` bytes to each of `topic`'s `PARTITIONS` partitions.
pub fn produce_request(topic: &'static str) -> ProduceRequest {
    let mut builder = BatchBuilder::new(Compression::None);
    let value = vec![b'x'; RECORD_SIZE];
    for _ in 0..RECORDS_PER_BATCH {
        builder.append(1_700_000_000_000, None, Some(&value), &[]);
    }
    let batch = Bytes::from(builder.build().unwrap());
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(
                    (0..PARTITIONS)
                        .map(|p| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(batch.clone()))
                        })
                        .collect(),
                ),
        ])
}

/// A connection authenticated as `user` (SASL PLAIN).
pub async fn connect(cluster: &TestCluster, user: &str, password: &str) -> KafkaConn {
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
                .with_auth_bytes(Bytes::from(format!("\0{user}\0{password}"))),
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

/// Warms both connections up, then runs `rounds` alternating rounds of
/// `requests` on each (which goes first alternates, so neither always runs
/// warmer), printing each; the medians, in `labels`' order.
pub async fn side_by_side(
    conns: &mut [KafkaConn; 2],
    labels: [&str; 2],
    request: &ProduceRequest,
    requests: usize,
    rounds: usize,
) -> [f64; 2] {
    for conn in conns.iter_mut() {
        round(conn, request, requests / 10).await;
    }
    let mut rates = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let rate = round(&mut conns[i], request, requests).await;
            println!("round {r}: {:<16} {rate:.0} records/s", labels[i]);
            rates[i].push(rate);
        }
    }
    let [a, b] = rates;
    [median(a), median(b)]
}

/// The middle value.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The bench's arguments: records a round and rounds.
pub fn args(default_records: usize, default_rounds: usize) -> (usize, usize) {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let records = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(default_records);
    let rounds = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default_rounds);
    (records, rounds)
}
