//! The accumulator: records wait per partition in an open batch until it
//! reaches `batch.size` or lingers `linger.ms`, then queue as encoded
//! batches (numbered when idempotent) for the sender; what they hold counts
//! against `buffer.memory`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use runnel_records::batch::{BatchBuilder, add_sequence};
use tokio::time::Instant;

use super::{BatchOutcome, DeliveryFuture, Producer, ProducerRecord};
use crate::error::ClientError;
use crate::partitioner::{next_sticky, partition_for_key};

/// Most bytes a new batch allocates up front; larger batches grow as they fill.
const BATCH_PREALLOCATION: usize = 1 << 20;

pub(super) struct OpenBatch {
    pub(super) builder: BatchBuilder,
    /// What the batch's records count against `buffer.memory` (estimated at `send`).
    pub(super) accounted: usize,
    pub(super) created: Instant,
    pub(super) outcome: BatchOutcome,
    /// The caller's span when the batch opened: its requests are traced under it.
    pub(super) span: tracing::Span,
}

/// An idempotent producer's id and epoch (from InitProducerId, the epoch bumped by the producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) id: i64,
    pub(super) epoch: i16,
}

pub(super) struct ReadyBatch {
    pub(super) bytes: Bytes,
    pub(super) records: i64,
    pub(super) accounted: usize,
    pub(super) created: Instant,
    pub(super) outcome: BatchOutcome,
    pub(super) span: tracing::Span,
}

#[derive(Default)]
pub(super) struct PartitionQueue {
    pub(super) open: Option<OpenBatch>,
    pub(super) ready: VecDeque<ReadyBatch>,
    pub(super) in_flight: bool,
    pub(super) retry_at: Option<Instant>,
    /// Why the last attempt failed, for the error if the batch expires.
    pub(super) last_error: Option<ClientError>,
    /// Idempotence: the identity this partition's batches are numbered
    /// under and the sequence number of the next record.
    pub(super) sequence: Option<(Identity, i32)>,
}

/// One topic's partition queues (indexed by partition) and its sticky partition.
pub(super) struct TopicQueues {
    pub(super) name: Arc<str>,
    pub(super) partitions: Vec<PartitionQueue>,
    pub(super) sticky: Option<i32>,
    /// The partition count as of metadata `generation`.
    pub(super) partition_count: i32,
    pub(super) generation: u64,
}

impl TopicQueues {
    pub(super) fn new(name: &str) -> Self {
        TopicQueues {
            name: Arc::from(name),
            partitions: Vec::new(),
            sticky: None,
            partition_count: 0,
            generation: 0,
        }
    }

    pub(super) fn queue(&mut self, partition: i32) -> &mut PartitionQueue {
        queue_at(&mut self.partitions, partition)
    }
}

/// The queue of `partition`, made if missing.
fn queue_at(queues: &mut Vec<PartitionQueue>, partition: i32) -> &mut PartitionQueue {
    let i = partition as usize;
    if queues.len() <= i {
        queues.resize_with(i + 1, PartitionQueue::default);
    }
    &mut queues[i]
}

#[derive(Default)]
pub(super) struct Accumulator {
    /// By topic name (hashbrown for lookups by `&str` that hash once, with a fast hasher).
    pub(super) topics: hashbrown::HashMap<Arc<str>, TopicQueues>,
    /// Bytes accepted and not yet acknowledged.
    pub(super) buffered: usize,
    /// Close every open batch now (flush, close).
    pub(super) flushing: bool,
    pub(super) closed: bool,
    /// The idempotent producer's identity, once known (None when not idempotent).
    pub(super) identity: Option<Identity>,
    /// A transactional producer's batches are marked transactional.
    pub(super) transactional: bool,
    /// The open transaction's partitions and state (transactional producers).
    pub(super) txn: super::transaction::TxnPartitions,
}

impl Accumulator {
    fn queues(&self) -> impl Iterator<Item = &PartitionQueue> {
        self.topics.values().flat_map(|t| t.partitions.iter())
    }

    /// Nothing open, queued or in flight.
    pub(super) fn idle(&self) -> bool {
        self.queues()
            .all(|q| q.open.is_none() && q.ready.is_empty() && !q.in_flight)
    }
}

impl Producer {
    /// Adds the record to its partition's open batch. Returns its delivery
    /// future and whether the sender must look (a batch opened or closed).
    pub(super) fn append(
        &self,
        acc: &mut Accumulator,
        record: &ProducerRecord,
        (partitions, generation): (i32, u64),
        size: usize,
        timestamp: i64,
    ) -> (DeliveryFuture, bool) {
        let config = &self.shared.config;
        let identity = acc.identity;
        let transactional = acc.transactional;
        acc.buffered += size;
        let queues = acc
            .topics
            .entry_ref(record.topic.as_str())
            .or_insert_with(|| TopicQueues::new(&record.topic));
        queues.partition_count = partitions;
        queues.generation = generation;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => {
                // KIP-480: null-key records stick to one partition until its
                // batch is done; a record that would start a new batch moves on.
                let current = *queues
                    .sticky
                    .get_or_insert_with(|| next_sticky(None, partitions));
                let fits = queues
                    .partitions
                    .get(current as usize)
                    .and_then(|q| q.open.as_ref())
                    .is_some_and(|open| {
                        open.builder.uncompressed_size() + size <= config.batch_size
                            || open.builder.is_empty()
                    });
                if fits {
                    current
                } else {
                    let next = next_sticky(Some(current), partitions);
                    queues.sticky = Some(next);
                    next
                }
            }
        };
        let mut freed = 0;
        let mut wake = false;
        let name = &queues.name;
        let queue = queue_at(&mut queues.partitions, partition);
        if let Some(open) = &queue.open
            && open.builder.uncompressed_size() + size > config.batch_size
            && !open.builder.is_empty()
        {
            freed += close_open(queue, identity, transactional);
            wake = true;
        }
        let open = queue.open.get_or_insert_with(|| {
            wake = true;
            OpenBatch {
                outcome: BatchOutcome::new(Arc::clone(name), partition),
                builder: BatchBuilder::with_capacity(
                    config.compression,
                    config.batch_size.min(BATCH_PREALLOCATION),
                ),
                accounted: 0,
                created: Instant::now(),
                span: tracing::Span::current(),
            }
        });
        let index = open.builder.len() as i64;
        open.accounted += size;
        open.builder.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        let future = DeliveryFuture {
            batch: Arc::clone(&open.outcome.0),
            index,
            timestamp,
        };
        if open.builder.uncompressed_size() >= config.batch_size {
            freed += close_open(queue, identity, transactional);
            wake = true;
        }
        acc.buffered = acc.buffered.saturating_sub(freed);
        (future, wake)
    }
}

/// Moves a partition's open batch to its ready queue, encoding it (numbered
/// for an idempotent producer, marked for a transactional one). Returns the
/// `buffer.memory` bytes freed when the batch cannot be encoded and fails.
pub(super) fn close_open(
    queue: &mut PartitionQueue,
    identity: Option<Identity>,
    transactional: bool,
) -> usize {
    let Some(open) = queue.open.take() else {
        return 0;
    };
    let records = open.builder.len() as i64;
    let mut builder = open.builder;
    if let Some(identity) = identity {
        let seq = match queue.sequence {
            Some((numbered, next)) if numbered == identity => next,
            // A new identity (or epoch) numbers from zero.
            _ => 0,
        };
        builder = builder
            .producer(identity.id, identity.epoch, seq)
            .transactional(transactional);
        queue.sequence = Some((identity, add_sequence(seq, records as i32)));
    }
    match builder.build() {
        Ok(bytes) => {
            queue.ready.push_back(ReadyBatch {
                bytes: Bytes::from(bytes),
                records,
                accounted: open.accounted,
                created: open.created,
                outcome: open.outcome,
                span: open.span,
            });
            0
        }
        Err(e) => {
            open.outcome.resolve(Err(ClientError::Invalid(format!(
                "cannot encode the batch: {e}"
            ))));
            open.accounted
        }
    }
}
