//! The consumer (without groups): assign partitions, seek, poll.
//!
//! ```no_run
//! # async fn demo() -> runnel_client::Result<()> {
//! use std::time::Duration;
//! use runnel_client::{ClientConfig, Consumer, ConsumerConfig, OffsetReset, TopicPartition};
//!
//! let mut consumer = Consumer::new(
//!     ClientConfig::new("127.0.0.1:9094"),
//!     ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..Default::default() },
//! );
//! consumer.assign(vec![TopicPartition::new("orders", 0)]).await?;
//! for record in consumer.poll(Duration::from_secs(1)).await? {
//!     println!("{} {:?}", record.offset, record.value);
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use runnel_records::batch::{Batches, ControlRecord, ControlType, Header};
use tokio::time::Instant;

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{ClientError, Result};

pub use runnel_records::TopicPartition;

/// Where to start when there is no position, or it is out of range (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start.
    Earliest,
    /// The end: only new records.
    Latest,
    /// Fail with `OFFSET_OUT_OF_RANGE`.
    None,
}

/// Which records a consumer reads (`isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Everything replicated, records of open and aborted transactions included (Kafka's default).
    #[default]
    ReadUncommitted,
    /// Only what is settled: reads stop at the last stable offset, and
    /// aborted transactions' records are skipped.
    ReadCommitted,
}

impl IsolationLevel {
    /// Kafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationLevel::ReadUncommitted => "read_uncommitted",
            IsolationLevel::ReadCommitted => "read_committed",
        }
    }

    pub(crate) fn to_proto(self) -> i32 {
        match self {
            IsolationLevel::ReadUncommitted => pb::IsolationLevel::ReadUncommitted as i32,
            IsolationLevel::ReadCommitted => pb::IsolationLevel::ReadCommitted as i32,
        }
    }
}

impl std::str::FromStr for IsolationLevel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "read_uncommitted" => Ok(IsolationLevel::ReadUncommitted),
            "read_committed" => Ok(IsolationLevel::ReadCommitted),
            other => Err(format!(
                "isolation.level must be read_uncommitted or read_committed, not {other:?}"
            )),
        }
    }
}

/// Consumer settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `auto.offset.reset` (default latest).
    pub auto_offset_reset: OffsetReset,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait: Duration,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: u32,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: u32,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: u32,
    /// `max.poll.records`.
    pub max_poll_records: usize,
    /// `isolation.level` (default read_uncommitted).
    pub isolation_level: IsolationLevel,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Latest,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            max_poll_records: 500,
            isolation_level: IsolationLevel::ReadUncommitted,
        }
    }
}

/// How long to wait before asking again for positions that could not be resolved.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic (shared by every record of the partition).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms.
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
}

/// A position to move to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Offset(i64),
    Earliest,
    Latest,
    Timestamp(i64),
}

/// What one fetch round brought back, per broker address.
type FetchResults = Vec<(String, Result<pb::FetchResponse>)>;

/// A fetch on its way: sent ahead while the caller works through the
/// buffered records, so the broker's transfer overlaps the caller's work.
#[derive(Debug)]
struct InFlightFetch {
    /// The offsets asked for: a result counts only where the position is still there.
    offsets: HashMap<TopicPartition, i64>,
    task: tokio::task::JoinHandle<FetchResults>,
}

/// Reads records from assigned partitions.
#[derive(Debug)]
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    assignment: Vec<TopicPartition>,
    positions: HashMap<TopicPartition, i64>,
    pending: HashMap<TopicPartition, Target>,
    buffered: VecDeque<ConsumerRecord>,
    fetch: Option<InFlightFetch>,
    /// Each partition's end as its last fetch reported it.
    ends: HashMap<TopicPartition, i64>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.cancel_fetch();
    }
}

impl Consumer {
    /// A consumer of the cluster at `client.bootstrap`.
    pub fn new(client: ClientConfig, config: ConsumerConfig) -> Consumer {
        Self::with_cluster(Cluster::new(client), config)
    }

    /// A consumer sharing connections with other clients of `cluster`.
    pub fn with_cluster(cluster: Arc<Cluster>, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster,
            config,
            assignment: Vec::new(),
            positions: HashMap::new(),
            pending: HashMap::new(),
            buffered: VecDeque::new(),
            fetch: None,
            ends: HashMap::new(),
        }
    }

    /// Reads exactly these partitions from now on (positions per `auto.offset.reset`).
    pub async fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        for tp in &partitions {
            let topic = self.cluster.topic(&tp.topic, false).await?;
            if tp.partition < 0 || tp.partition as usize >= topic.partitions.len() {
                return Err(ClientError::server(
                    ErrorCode::UnknownTopicOrPartition,
                    format!(
                        "topic {} has no partition {} (it has {})",
                        tp.topic,
                        tp.partition,
                        topic.partitions.len()
                    ),
                ));
            }
        }
        self.cancel_fetch();
        self.positions.retain(|tp, _| partitions.contains(tp));
        self.pending.retain(|tp, _| partitions.contains(tp));
        self.buffered.retain(|r| {
            partitions
                .iter()
                .any(|tp| *tp.topic == *r.topic && tp.partition == r.partition)
        });
        self.assignment = partitions;
        Ok(())
    }

    /// Every partition of `topic`.
    pub async fn partitions_of(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        let t = self.cluster.topic(topic, false).await?;
        Ok(t.partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition))
            .collect())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }

    fn set_target(&mut self, tp: &TopicPartition, target: Target) {
        self.cancel_fetch();
        self.positions.remove(tp);
        self.pending.insert(tp.clone(), target);
        self.buffered
            .retain(|r| !(*r.topic == *tp.topic && r.partition == tp.partition));
    }

    /// Drops the fetch in flight (its offsets are no longer the positions).
    fn cancel_fetch(&mut self) {
        if let Some(f) = self.fetch.take() {
            f.task.abort();
        }
    }

    /// Reads `tp` from `offset` next.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) {
        self.set_target(tp, Target::Offset(offset));
    }

    /// Reads `tp` from its log start next.
    pub fn seek_to_beginning(&mut self, tp: &TopicPartition) {
        self.set_target(tp, Target::Earliest);
    }

    /// Reads only records appended to `tp` from now on.
    pub fn seek_to_end(&mut self, tp: &TopicPartition) {
        self.set_target(tp, Target::Latest);
    }

    /// Reads `tp` from the first record at or after `timestamp_ms` next (the end if none).
    pub fn seek_to_timestamp(&mut self, tp: &TopicPartition, timestamp_ms: i64) {
        self.set_target(tp, Target::Timestamp(timestamp_ms));
    }

    /// `tp`'s end as its last fetch reported it: the high watermark, or
    /// at read_committed the last stable offset (what Kafka's consumer
    /// reckons a partition's lag from).
    pub fn fetched_end(&self, tp: &TopicPartition) -> Option<i64> {
        self.ends.get(tp).copied()
    }

    /// The offset of the next record to be returned for `tp`, if known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        let first_buffered = self
            .buffered
            .iter()
            .find(|r| *r.topic == *tp.topic && r.partition == tp.partition);
        first_buffered
            .map(|r| r.offset)
            .or_else(|| self.positions.get(tp).copied())
    }

    /// Resolves pending seeks and missing positions with ListOffsets.
    async fn resolve_positions(&mut self) -> Result<()> {
        let mut wanted: Vec<(TopicPartition, Target)> = Vec::new();
        for tp in &self.assignment {
            if self.positions.contains_key(tp) {
                continue;
            }
            let target = match self.pending.get(tp) {
                Some(t) => *t,
                None => match self.config.auto_offset_reset {
                    OffsetReset::Earliest => Target::Earliest,
                    OffsetReset::Latest => Target::Latest,
                    OffsetReset::None => {
                        return Err(ClientError::server(
                            ErrorCode::OffsetOutOfRange,
                            format!(
                                "no position for {}-{} and auto.offset.reset is none",
                                tp.topic, tp.partition
                            ),
                        ));
                    }
                },
            };
            wanted.push((tp.clone(), target));
        }
        let mut refresh = false;
        for (tp, target) in wanted {
            let offset = match self.offset_of(&tp, target).await {
                Ok(offset) => offset,
                // Leader moving or log still opening: try again on the next round.
                Err(e) if e.is_retriable() => {
                    refresh = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.pending.remove(&tp);
            self.positions.insert(tp, offset);
        }
        if refresh {
            let topics: Vec<String> = self.assignment.iter().map(|tp| tp.topic.clone()).collect();
            let _ = self.cluster.refresh(&topics, false).await;
        }
        Ok(())
    }

    async fn offset_of(&self, tp: &TopicPartition, target: Target) -> Result<i64> {
        Ok(match target {
            Target::Offset(o) => o,
            Target::Earliest => self.list_offset(tp, pb::OffsetSpec::Earliest, 0).await?,
            Target::Latest => self.list_offset(tp, pb::OffsetSpec::Latest, 0).await?,
            Target::Timestamp(ts) => {
                match self.list_offset(tp, pb::OffsetSpec::Timestamp, ts).await? {
                    -1 => self.list_offset(tp, pb::OffsetSpec::Latest, 0).await?,
                    o => o,
                }
            }
        })
    }

    async fn list_offset(
        &self,
        tp: &TopicPartition,
        spec: pb::OffsetSpec,
        timestamp_ms: i64,
    ) -> Result<i64> {
        let (_, addr) = self.leader(tp).await?;
        let mut client = self.cluster.broker_at(&addr)?;
        let response = client
            .list_offsets(pb::ListOffsetsRequest {
                partitions: vec![pb::ListOffsetsPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    spec: spec as i32,
                    timestamp_ms,
                }],
                isolation_level: self.config.isolation_level.to_proto(),
            })
            .await
            .map_err(|s| ClientError::from_status(&addr, s))?
            .into_inner();
        let r = response.partitions.into_iter().next().ok_or_else(|| {
            ClientError::server(ErrorCode::UnknownServerError, "empty ListOffsets response")
        })?;
        if r.error_code() != ErrorCode::None {
            return Err(ClientError::server(r.error_code(), r.error_message));
        }
        Ok(r.offset)
    }

    async fn leader(&self, tp: &TopicPartition) -> Result<(i32, String)> {
        if let Some(l) = self.cluster.leader_addr(&tp.topic, tp.partition) {
            return Ok(l);
        }
        self.cluster
            .refresh(std::slice::from_ref(&tp.topic), false)
            .await?;
        self.cluster
            .leader_addr(&tp.topic, tp.partition)
            .ok_or_else(|| {
                ClientError::server(
                    ErrorCode::LeaderNotAvailable,
                    format!("no leader for {}-{}", tp.topic, tp.partition),
                )
            })
    }

    /// Records from the assigned partitions, waiting up to `timeout` for some.
    ///
    /// Returns at most `max.poll.records`; an empty list means none arrived in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.buffered.is_empty() {
                let n = self.buffered.len().min(self.config.max_poll_records);
                let records: Vec<ConsumerRecord> = self.buffered.drain(..n).collect();
                if self.buffered.is_empty() && self.fetch.is_none() {
                    // Fetch the next records while the caller handles these.
                    self.start_fetch(self.config.fetch_max_wait).await?;
                }
                return Ok(records);
            }
            if self.assignment.is_empty() {
                // Nothing to read (a group member left idle): wait out the
                // timeout, as Kafka's poll does, rather than spin.
                tokio::time::sleep_until(deadline).await;
                return Ok(Vec::new());
            }
            self.resolve_positions().await?;
            if self.fetch.is_none() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                self.start_fetch(remaining.min(self.config.fetch_max_wait))
                    .await?;
            }
            let Some(fetch) = self.fetch.as_mut() else {
                // No partition has a position yet (its leader is not ready): wait a little.
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Vec::new());
                }
                tokio::time::sleep_until(deadline.min(now + RETRY_BACKOFF)).await;
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Ok(joined) = tokio::time::timeout(remaining, &mut fetch.task).await else {
                // Still waiting on the broker: it stays in flight for the next poll.
                return Ok(Vec::new());
            };
            let offsets = self.fetch.take().map(|f| f.offsets).unwrap_or_default();
            let results = joined.map_err(|_| ClientError::Closed)?;
            self.complete_fetch(&offsets, results).await?;
            if self.buffered.is_empty() && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Sends one fetch to each leader for every partition with a position.
    async fn start_fetch(&mut self, wait: Duration) -> Result<()> {
        let mut by_leader: HashMap<String, Vec<pb::FetchPartition>> = HashMap::new();
        let mut offsets = HashMap::new();
        for tp in &self.assignment {
            let Some(&offset) = self.positions.get(tp) else {
                continue;
            };
            let (_, addr) = self.leader(tp).await?;
            by_leader.entry(addr).or_default().push(pb::FetchPartition {
                topic: tp.topic.clone(),
                partition: tp.partition,
                fetch_offset: offset,
                partition_max_bytes: self.config.max_partition_fetch_bytes,
                current_leader_epoch: -1,
            });
            offsets.insert(tp.clone(), offset);
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let mut requests = Vec::new();
        for (addr, partitions) in by_leader {
            let request = pb::FetchRequest {
                replica: None,
                max_wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                partitions,
                isolation_level: self.config.isolation_level.to_proto(),
            };
            let client = self.cluster.broker_at(&addr);
            requests.push(async move {
                let result = match client {
                    Ok(mut c) => c
                        .fetch(request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| ClientError::from_status(&addr, s)),
                    Err(e) => Err(e),
                };
                (addr, result)
            });
        }
        self.fetch = Some(InFlightFetch {
            offsets,
            task: tokio::spawn(join_all(requests)),
        });
        Ok(())
    }

    /// Takes a fetch's records where the positions have not moved since it was sent.
    async fn complete_fetch(
        &mut self,
        offsets: &HashMap<TopicPartition, i64>,
        results: FetchResults,
    ) -> Result<()> {
        let mut refresh = false;
        for (_, result) in results {
            let response = match result {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    refresh = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for mut p in response.partitions {
                let tp = TopicPartition::new(std::mem::take(&mut p.topic), p.partition);
                if offsets.get(&tp).is_none() || offsets.get(&tp) != self.positions.get(&tp) {
                    continue;
                }
                match p.error_code() {
                    ErrorCode::None => {
                        let end = match self.config.isolation_level {
                            IsolationLevel::ReadCommitted => p.last_stable_offset,
                            IsolationLevel::ReadUncommitted => p.high_watermark,
                        };
                        self.decode(&tp, &p.records, &p.aborted_transactions)?;
                        self.ends.insert(tp, end);
                    }
                    ErrorCode::OffsetOutOfRange => match self.config.auto_offset_reset {
                        OffsetReset::Earliest => self.set_target(&tp, Target::Earliest),
                        OffsetReset::Latest => self.set_target(&tp, Target::Latest),
                        OffsetReset::None => {
                            return Err(ClientError::server(p.error_code(), p.error_message));
                        }
                    },
                    code if runnel_common::errors::is_retriable(code) => refresh = true,
                    code => return Err(ClientError::server(code, p.error_message)),
                }
            }
        }
        if refresh {
            let topics: Vec<String> = self.assignment.iter().map(|tp| tp.topic.clone()).collect();
            let _ = self.cluster.refresh(&topics, false).await;
        }
        Ok(())
    }

    /// Buffers the records of fetched batches from the position on. At
    /// read_committed, skips the batches of `aborted` transactions as
    /// Kafka's consumer does: a producer's transactional batches are
    /// skipped from its aborted transaction's first offset until its abort
    /// marker.
    fn decode(
        &mut self,
        tp: &TopicPartition,
        records: &Bytes,
        aborted: &[pb::AbortedTransaction],
    ) -> Result<()> {
        let Some(position) = self.positions.get(tp).copied() else {
            return Ok(());
        };
        let committed = self.config.isolation_level == IsolationLevel::ReadCommitted;
        let mut aborted = aborted.to_vec();
        aborted.sort_by_key(|a| a.first_offset);
        let mut pending = aborted.into_iter().peekable();
        let mut aborted_producers = HashSet::new();
        let mut next = position;
        let topic: Arc<str> = Arc::from(tp.topic.as_str());
        let corrupt = |e: &dyn std::fmt::Display| {
            ClientError::server(
                ErrorCode::CorruptMessage,
                format!("{}-{}: {e}", tp.topic, tp.partition),
            )
        };
        for batch in Batches::new(records) {
            let batch = batch.map_err(|e| corrupt(&e))?;
            let h = *batch.header();
            if committed && h.has_producer_id() {
                while let Some(a) = pending.next_if(|a| a.first_offset <= h.last_offset()) {
                    aborted_producers.insert(a.producer_id);
                }
                if h.is_control() {
                    let marker = ControlRecord::from_batch(&batch).map_err(|e| corrupt(&e))?;
                    if marker.end_txn().map(|m| m.control_type) == Some(ControlType::Abort) {
                        aborted_producers.remove(&h.producer_id);
                    }
                } else if h.is_transactional() && aborted_producers.contains(&h.producer_id) {
                    next = next.max(h.next_offset());
                    continue;
                }
            }
            if h.is_control() {
                next = next.max(h.next_offset());
                continue;
            }
            let decoded = batch.records().map_err(|e| {
                ClientError::server(
                    ErrorCode::CorruptMessage,
                    format!("{}-{}: {e}", tp.topic, tp.partition),
                )
            })?;
            for r in decoded {
                let r = r.map_err(|e| {
                    ClientError::server(
                        ErrorCode::CorruptMessage,
                        format!("{}-{}: {e}", tp.topic, tp.partition),
                    )
                })?;
                // A fetch returns whole batches: skip what precedes the position.
                if r.offset < position {
                    continue;
                }
                self.buffered.push_back(ConsumerRecord {
                    topic: Arc::clone(&topic),
                    partition: tp.partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
            }
            next = next.max(batch.header().next_offset());
        }
        self.positions.insert(tp.clone(), next);
        Ok(())
    }
}
