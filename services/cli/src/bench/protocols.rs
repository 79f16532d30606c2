//! `runnel bench protocols`: the Kafka listener against the gRPC API, side
//! by side in one run.
//!
//! Both sides send the same record batches (built once, with Runnel's batch
//! builder) in produce requests of one batch per partition, with the same
//! number of requests in flight on one connection (Kafka's
//! `max.in.flight.requests.per.connection`), then read everything back with
//! fetches of the same sizes, one at a time as a consumer does. What differs
//! is only the wire: HTTP/2 + protobuf against Kafka's framing, so the ratio
//! is the cost of the Kafka listener. Rounds alternate (gRPC, Kafka, gRPC,
//! ...) on fresh topics so neither side always runs on a warmer machine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use runnel_client::{Acks, Cluster};
use runnel_proto::broker::v1 as pb;
use runnel_records::batch::{BatchBuilder, Batches};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore, oneshot};
use tokio::time::Instant;

use super::{ensure_topic, payloads};
use crate::outln;
use crate::produce::parse_acks;

/// Produce and Fetch versions the Kafka side speaks (librdkafka 2.x's).
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
/// Kafka's `fetch.max.bytes` and `max.partition.fetch.bytes` defaults.
const FETCH_MAX_BYTES: i32 = 52_428_800;
const PARTITION_FETCH_BYTES: i32 = 1_048_576;

/// `runnel bench protocols` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ProtocolsArgs {
    /// Records per round and protocol.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Partitions of each benchmark topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Record batch size in bytes (Kafka's `batch.size`).
    #[arg(long, default_value_t = 262_144)]
    batch_size: usize,
    /// Acknowledgements: 1 or all.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    acks: Acks,
    /// Produce requests in flight on each connection.
    #[arg(long, default_value_t = 5)]
    in_flight: usize,
    /// Kafka connections the produce requests are spread over (round robin,
    /// each with `--in-flight` requests); the gRPC side keeps as many
    /// requests in flight on its one HTTP/2 connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    connections: u16,
    /// Rounds per protocol (they alternate).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The broker's Kafka listener.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka: String,
    /// Prefix of the topics created for the rounds.
    #[arg(long, default_value = "runnel-bench-protocols")]
    topic: String,
}

/// One round's outcome on one protocol.
struct Round {
    produce: Duration,
    fetch: Duration,
}

/// Runs the rounds and prints each, then the medians and their ratios.
pub async fn run(cluster: Arc<Cluster>, args: ProtocolsArgs) -> anyhow::Result<()> {
    let requests = build_requests(&args)?;
    let bytes: u64 = requests.iter().flatten().map(|b| b.len() as u64).sum();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut grpc = Vec::new();
    let mut kafka = Vec::new();
    outln!(
        "protocols: {} records ({} B values, {} B of batches) per round, {} partitions, batch.size {}, acks={}, {} in flight on each of {} connection(s)",
        args.records,
        args.record_size,
        bytes,
        args.partitions,
        args.batch_size,
        if args.acks == Acks::All { "all" } else { "1" },
        args.in_flight,
        args.connections
    )?;
    for round in 0..args.rounds {
        for kafka_side in [false, true] {
            let topic = format!(
                "{}-{stamp}-{round}-{}",
                args.topic,
                if kafka_side { "kafka" } else { "grpc" }
            );
            ensure_topic(&cluster, &topic, args.partitions).await?;
            wait_open(&cluster, &topic, args.partitions).await?;
            let r = if kafka_side {
                kafka_round(&args, &topic, &requests).await?
            } else {
                grpc_round(&cluster, &args, &topic, &requests).await?
            };
            outln!(
                "  round {round} {:5}  produce {:>9.0} records/s {:>7.1} MB/s   fetch {:>9.0} records/s {:>7.1} MB/s",
                if kafka_side { "kafka" } else { "grpc" },
                args.records as f64 / r.produce.as_secs_f64(),
                bytes as f64 / r.produce.as_secs_f64() / 1e6,
                args.records as f64 / r.fetch.as_secs_f64(),
                bytes as f64 / r.fetch.as_secs_f64() / 1e6,
            )?;
            if kafka_side {
                kafka.push(r);
            } else {
                grpc.push(r);
            }
        }
    }
    let median = |rounds: &[Round], pick: fn(&Round) -> Duration| {
        let mut d: Vec<Duration> = rounds.iter().map(pick).collect();
        d.sort();
        d[d.len() / 2]
    };
    let rate = |d: Duration| args.records as f64 / d.as_secs_f64();
    let (gp, kp) = (median(&grpc, |r| r.produce), median(&kafka, |r| r.produce));
    let (gf, kf) = (median(&grpc, |r| r.fetch), median(&kafka, |r| r.fetch));
    outln!(
        "median produce: grpc {:.0} records/s, kafka {:.0} records/s, kafka/grpc {:.2}",
        rate(gp),
        rate(kp),
        rate(kp) / rate(gp)
    )?;
    outln!(
        "median fetch:   grpc {:.0} records/s, kafka {:.0} records/s, kafka/grpc {:.2}",
        rate(gf),
        rate(kf),
        rate(kf) / rate(gf)
    )?;
    Ok(())
}

/// Waits until every partition of a new topic answers on its leader (its
/// log may still be opening just after the creation).
async fn wait_open(cluster: &Arc<Cluster>, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin = runnel_client::Admin::with_cluster(Arc::clone(cluster));
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in 0..partitions {
        while let Err(e) = admin.offsets(topic, p).await {
            if Instant::now() > deadline {
                bail!("{topic}-{p} did not open: {e}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The produce requests: each one batch per partition, `records` in all.
fn build_requests(args: &ProtocolsArgs) -> anyhow::Result<Vec<Vec<Bytes>>> {
    let values = payloads(args.record_size);
    let per_batch = (args.batch_size / (args.record_size + 20)).max(1) as u64;
    let per_request = per_batch * args.partitions.max(1) as u64;
    let mut requests = Vec::new();
    let mut made = 0u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    while made < args.records {
        let in_request = per_request.min(args.records - made);
        let mut batches = Vec::with_capacity(args.partitions as usize);
        let mut left = in_request;
        for _ in 0..args.partitions {
            let n = per_batch.min(left);
            if n == 0 {
                break;
            }
            let mut b = BatchBuilder::with_capacity(
                runnel_client::Compression::None,
                args.batch_size + 1024,
            );
            for i in 0..n {
                let v = &values[((made + i) % values.len() as u64) as usize];
                b.append(now, None, Some(v), &[]);
            }
            batches.push(Bytes::from(b.build().context("building a record batch")?));
            left -= n;
        }
        made += in_request;
        requests.push(batches);
    }
    Ok(requests)
}

async fn grpc_round(
    cluster: &Arc<Cluster>,
    args: &ProtocolsArgs,
    topic: &str,
    requests: &[Vec<Bytes>],
) -> anyhow::Result<Round> {
    cluster.topic(topic, false).await?;
    let Some((_, addr)) = cluster.leader_addr(topic, 0) else {
        bail!("{topic} has no leader");
    };
    let client = cluster.broker_at(&addr)?;
    let acks = if args.acks == Acks::All {
        pb::Acks::All
    } else {
        pb::Acks::Leader
    };
    let permits = Arc::new(Semaphore::new(
        args.in_flight.max(1) * usize::from(args.connections),
    ));
    let start = Instant::now();
    let mut sent = Vec::with_capacity(requests.len());
    for batches in requests {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let mut client = client.clone();
        let request = pb::ProduceRequest {
            acks: acks as i32,
            timeout_ms: 30_000,
            partitions: batches
                .iter()
                .enumerate()
                .map(|(p, records)| pb::ProducePartition {
                    topic: topic.to_owned(),
                    partition: p as i32,
                    records: records.clone(),
                })
                .collect(),
            transactional_id: String::new(),
        };
        sent.push(tokio::spawn(async move {
            let answer = client.produce(request).await;
            drop(permit);
            let answer = answer.context("gRPC produce")?.into_inner();
            match answer.partitions.iter().find(|p| p.error_code != 0) {
                Some(p) => bail!("gRPC produce refused: {}", p.error_message),
                None => Ok(()),
            }
        }));
    }
    for s in sent {
        s.await??;
    }
    let produce = start.elapsed();

    let start = Instant::now();
    let mut offsets = vec![0i64; args.partitions as usize];
    let mut read = 0u64;
    let mut client = client;
    while read < args.records {
        let answer = client
            .fetch(pb::FetchRequest {
                max_wait_ms: 500,
                min_bytes: 1,
                max_bytes: FETCH_MAX_BYTES as u32,
                partitions: offsets
                    .iter()
                    .enumerate()
                    .map(|(p, &offset)| pb::FetchPartition {
                        topic: topic.to_owned(),
                        partition: p as i32,
                        fetch_offset: offset,
                        partition_max_bytes: PARTITION_FETCH_BYTES as u32,
                        current_leader_epoch: -1,
                    })
                    .collect(),
                replica: None,
                isolation_level: pb::IsolationLevel::ReadUncommitted as i32,
            })
            .await
            .context("gRPC fetch")?
            .into_inner();
        for p in answer.partitions {
            if p.error_code != 0 {
                bail!("gRPC fetch refused: {}", p.error_message);
            }
            read += advance(&p.records, &mut offsets[p.partition as usize])?;
        }
    }
    Ok(Round {
        produce,
        fetch: start.elapsed(),
    })
}

async fn kafka_round(
    args: &ProtocolsArgs,
    topic: &str,
    requests: &[Vec<Bytes>],
) -> anyhow::Result<Round> {
    let mut conns = Vec::with_capacity(usize::from(args.connections));
    for _ in 0..args.connections {
        let conn = KafkaConnection::connect(&args.kafka)
            .await
            .with_context(|| format!("connecting to the Kafka listener {}", args.kafka))?;
        conns.push((
            Arc::new(conn),
            Arc::new(Semaphore::new(args.in_flight.max(1))),
        ));
    }
    let name = TopicName(StrBytes::from_string(topic.to_owned()));
    let start = Instant::now();
    let mut sent = Vec::with_capacity(requests.len());
    for (i, batches) in requests.iter().enumerate() {
        let (conn, permits) = &conns[i % conns.len()];
        let permit = Arc::clone(permits).acquire_owned().await?;
        let request = ProduceRequest::default()
            .with_acks(if args.acks == Acks::All { -1 } else { 1 })
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name.clone())
                    .with_partition_data(
                        batches
                            .iter()
                            .enumerate()
                            .map(|(p, records)| {
                                PartitionProduceData::default()
                                    .with_index(p as i32)
                                    .with_records(Some(records.clone()))
                            })
                            .collect(),
                    ),
            ]);
        let answer = conn
            .send(ApiKey::Produce, PRODUCE_VERSION, &request)
            .await?;
        sent.push(tokio::spawn(async move {
            let mut answer = answer.await.context("the Kafka connection closed")??;
            drop(permit);
            let r = ProduceResponse::decode(&mut answer, PRODUCE_VERSION)?;
            for t in r.responses {
                if let Some(p) = t.partition_responses.iter().find(|p| p.error_code != 0) {
                    bail!("Kafka produce refused: error {}", p.error_code);
                }
            }
            Ok(())
        }));
    }
    for s in sent {
        s.await??;
    }
    let produce = start.elapsed();

    let conn = &conns[0].0;
    let start = Instant::now();
    let mut offsets = vec![0i64; args.partitions as usize];
    let mut read = 0u64;
    while read < args.records {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(name.clone())
                    .with_partitions(
                        offsets
                            .iter()
                            .enumerate()
                            .map(|(p, &offset)| {
                                FetchPartition::default()
                                    .with_partition(p as i32)
                                    .with_fetch_offset(offset)
                                    .with_partition_max_bytes(PARTITION_FETCH_BYTES)
                            })
                            .collect(),
                    ),
            ]);
        let mut answer = conn
            .send(ApiKey::Fetch, FETCH_VERSION, &request)
            .await?
            .await
            .context("the Kafka connection closed")??;
        let r = FetchResponse::decode(&mut answer, FETCH_VERSION)?;
        for t in r.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    bail!("Kafka fetch refused: error {}", p.error_code);
                }
                let records = p.records.unwrap_or_default();
                read += advance(&records, &mut offsets[p.partition_index as usize])?;
            }
        }
    }
    Ok(Round {
        produce,
        fetch: start.elapsed(),
    })
}

/// Counts the records in fetched batches at or after `*offset` and moves
/// `*offset` past the last one.
fn advance(records: &[u8], offset: &mut i64) -> anyhow::Result<u64> {
    let mut n = 0u64;
    for batch in Batches::new(records) {
        let batch = match batch {
            Ok(b) => b,
            // A fetch may end in a partial batch.
            Err(_) => break,
        };
        let h = batch.header();
        if h.last_offset() < *offset {
            continue;
        }
        n += (h.last_offset() + 1 - (*offset).max(h.base_offset)) as u64;
        *offset = h.last_offset() + 1;
    }
    Ok(n)
}

/// Where an answer's body goes, past its header.
type Pending = oneshot::Sender<anyhow::Result<Bytes>>;

/// A Kafka connection with requests pipelined: answers come back in order.
struct KafkaConnection {
    writer: Mutex<(BufWriter<tokio::net::tcp::OwnedWriteHalf>, i32)>,
    pending: Arc<parking_lot::Mutex<VecDeque<(ApiKey, i16, Pending)>>>,
}

impl KafkaConnection {
    async fn connect(addr: &str) -> anyhow::Result<KafkaConnection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let pending: Arc<parking_lot::Mutex<VecDeque<(ApiKey, i16, Pending)>>> = Arc::default();
        let waiting = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut read = BufReader::with_capacity(1 << 20, read);
            while let Ok(size) = read.read_i32().await {
                let mut body = BytesMut::zeroed(size.max(0) as usize);
                if read.read_exact(&mut body).await.is_err() {
                    break;
                }
                let Some((api_key, version, tx)) = waiting.lock().pop_front() else {
                    break;
                };
                let mut body = body.freeze();
                let decoded =
                    ResponseHeader::decode(&mut body, api_key.response_header_version(version))
                        .map(|_| body)
                        .map_err(|e| anyhow::anyhow!("cannot decode a {api_key:?} answer: {e}"));
                let _ = tx.send(decoded);
            }
        });
        Ok(KafkaConnection {
            writer: Mutex::new((BufWriter::with_capacity(1 << 20, write), 0)),
            pending,
        })
    }

    /// Sends `request`; the receiver gets its answer's body.
    async fn send(
        &self,
        api_key: ApiKey,
        version: i16,
        request: &impl Encodable,
    ) -> anyhow::Result<oneshot::Receiver<anyhow::Result<Bytes>>> {
        let mut writer = self.writer.lock().await;
        writer.1 += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = api_key as i16;
        header.request_api_version = version;
        header.correlation_id = writer.1;
        header.client_id = Some(StrBytes::from_static_str("runnel-bench"));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header.encode(&mut frame, api_key.request_header_version(version))?;
        request.encode(&mut frame, version)?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let (tx, rx) = oneshot::channel();
        self.pending.lock().push_back((api_key, version, tx));
        writer.0.write_all(&frame).await?;
        writer.0.flush().await?;
        Ok(rx)
    }
}
