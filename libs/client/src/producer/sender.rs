//! The sender: a task that closes lingering batches, fails expired ones and
//! sends each leader one Produce request with every ready partition's
//! batches (one request in flight per partition), retrying retriable
//! failures after `retry.backoff.ms`; after a batch fails for good an
//! idempotent producer bumps its epoch and renumbers what is left (a
//! transactional one leaves that to the abort the failure calls for). A
//! transactional producer's partitions join the transaction before their
//! first batch is sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use runnel_records::batch::{RecordBatchMut, add_sequence};
use tokio::time::Instant;

use super::Shared;
use super::accumulator::{Accumulator, Identity, ReadyBatch, TopicQueues, close_open};
use super::transaction::add_for_sender;
use crate::error::ClientError;

/// One partition's batches in a request.
struct InFlight {
    topic: Arc<str>,
    partition: i32,
    batches: Vec<ReadyBatch>,
}

pub(super) async fn run_sender(shared: Arc<Shared>) {
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let Collected {
            sends,
            to_add,
            next_wake,
            done,
        } = collect(&shared);
        if !to_add.is_empty() {
            requests.spawn(add_for_sender(Arc::clone(&shared), to_add));
        }
        for (addr, parts) in sends {
            // Traced under the span of whoever sent the oldest record in it.
            let parent = parts
                .first()
                .and_then(|p| p.batches.first())
                .map_or_else(tracing::Span::none, |b| b.span.clone());
            let span = tracing::info_span!(parent: &parent, "produce", broker = %addr, partitions = parts.len());
            requests.spawn(tracing::Instrument::instrument(
                send_request(Arc::clone(&shared), addr, parts),
                span,
            ));
        }
        if done && requests.is_empty() {
            return;
        }
        let deadline = next_wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            () = shared.wake.notified() => {}
            Some(_) = requests.join_next() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// What one look at the queues found.
struct Collected {
    /// Requests to send now, by leader address.
    sends: Vec<(String, Vec<InFlight>)>,
    /// Partitions to add to the transaction before their batches go.
    to_add: Vec<(Arc<str>, i32)>,
    /// When to look again.
    next_wake: Option<Instant>,
    /// The producer is closed and drained.
    done: bool,
}

/// Closes lingering batches, fails expired ones, and takes what can be sent
/// now, grouped by leader, with the partitions a transactional producer
/// must add to its transaction first.
fn collect(shared: &Shared) -> Collected {
    let config = &shared.config;
    let now = Instant::now();
    let mut guard = shared.acc.lock();
    let acc = &mut *guard;
    let flushing = acc.flushing || acc.closed;
    let identity = acc.identity;
    let transactional = acc.transactional;
    let mut to_add = Vec::new();
    let mut renumber = Vec::new();
    let mut by_leader: HashMap<String, Vec<InFlight>> = HashMap::new();
    let mut next_wake: Option<Instant> = None;
    let mut wake_at = |t: Instant| next_wake = Some(next_wake.map_or(t, |n| n.min(t)));
    let mut need_metadata = Vec::new();
    let mut freed = 0usize;
    let queues = acc.topics.iter_mut().flat_map(|(topic, t)| {
        t.partitions
            .iter_mut()
            .enumerate()
            .map(move |(p, q)| (topic, p as i32, q))
    });
    for (topic, partition, queue) in queues {
        if let Some(open) = &queue.open {
            if flushing || now >= open.created + config.linger {
                freed += close_open(queue, identity, transactional);
            } else {
                wake_at(open.created + config.linger);
            }
        }
        // Expired batches fail; they never reach a broker.
        while let Some(b) = queue.ready.front() {
            if now < b.created + config.delivery_timeout || queue.in_flight {
                break;
            }
            let b = queue.ready.pop_front().expect("front exists");
            let what = match &queue.last_error {
                Some(e) => format!("delivery to {topic}-{partition} (last error: {e})"),
                None => format!("delivery to {topic}-{partition}"),
            };
            let e = ClientError::Timeout {
                what,
                ms: config.delivery_timeout.as_millis() as u64,
            };
            freed += shared.fail_batch(b, &e);
            if transactional {
                acc.txn.failed_batch(e);
            } else if identity.is_some() {
                renumber.push((Arc::clone(topic), partition));
            }
        }
        if renumber
            .last()
            .is_some_and(|(t, p)| *p == partition && Arc::ptr_eq(t, topic))
        {
            // Its batches are renumbered below, under a new epoch; send them next round.
            wake_at(now);
            continue;
        }
        if queue.in_flight || queue.ready.is_empty() {
            continue;
        }
        if let Some(t) = queue.retry_at {
            if now < t {
                wake_at(t);
                continue;
            }
            queue.retry_at = None;
        }
        if transactional && !acc.txn.added.contains(&(Arc::clone(topic), partition)) {
            match acc.txn.error.clone() {
                // The transaction can only be aborted: nothing more joins it.
                Some(e) => {
                    for b in queue.ready.drain(..) {
                        freed += shared.fail_batch(b, &e);
                    }
                }
                None => to_add.push((Arc::clone(topic), partition)),
            }
            continue;
        }
        let Some((_, addr)) = shared.cluster.leader_addr(topic, partition) else {
            need_metadata.push(topic.to_string());
            queue.retry_at = Some(now + config.retry_backoff);
            wake_at(now + config.retry_backoff);
            continue;
        };
        let mut batches = Vec::new();
        let mut bytes = 0;
        while let Some(b) = queue.ready.front() {
            if !batches.is_empty() && bytes + b.bytes.len() > config.max_request_size {
                break;
            }
            bytes += b.bytes.len();
            batches.push(queue.ready.pop_front().expect("front exists"));
        }
        queue.in_flight = true;
        by_leader.entry(addr).or_default().push(InFlight {
            topic: Arc::clone(topic),
            partition,
            batches,
        });
    }
    renumber.dedup();
    for (topic, partition) in renumber {
        bump_epoch(acc, &topic, partition);
    }
    // One AddPartitionsToTxn at a time; the partitions wait until it answers.
    if acc.txn.adding {
        to_add.clear();
    } else if !to_add.is_empty() {
        acc.txn.adding = true;
    }
    acc.buffered = acc.buffered.saturating_sub(freed);
    let done = acc.closed && acc.idle() && !acc.txn.adding;
    drop(guard);
    if freed > 0 {
        shared.progress.notify_waiters();
    }
    if !need_metadata.is_empty() {
        need_metadata.sort();
        need_metadata.dedup();
        let cluster = Arc::clone(&shared.cluster);
        tokio::spawn(async move {
            let _ = cluster.refresh(&need_metadata, false).await;
        });
    }
    Collected {
        sends: by_leader.into_iter().collect(),
        to_add,
        next_wake,
        done,
    }
}

async fn send_request(shared: Arc<Shared>, addr: String, parts: Vec<InFlight>) {
    let config = &shared.config;
    let request = pb::ProduceRequest {
        acks: config.acks.wire() as i32,
        timeout_ms: config
            .delivery_timeout
            .as_millis()
            .min(u128::from(u32::MAX)) as u32,
        partitions: parts
            .iter()
            .map(|p| pb::ProducePartition {
                topic: p.topic.to_string(),
                partition: p.partition,
                records: concat(&p.batches),
            })
            .collect(),
        transactional_id: shared
            .txn
            .as_ref()
            .map(|t| t.id.clone())
            .unwrap_or_default(),
    };
    let response = match shared.cluster.broker_at(&addr) {
        Ok(mut client) => client
            .produce(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ClientError::from_status(&addr, s)),
        Err(e) => Err(e),
    };
    type Outcome = std::result::Result<(i64, Vec<i64>, i64), ClientError>;
    let mut results: HashMap<(String, i32), Outcome> = HashMap::new();
    match response {
        Ok(r) => {
            for p in r.partitions {
                let outcome = if p.error_code() == ErrorCode::None {
                    Ok((p.base_offset, p.batch_base_offsets, p.log_append_time_ms))
                } else {
                    Err(ClientError::server(p.error_code(), p.error_message))
                };
                results.insert((p.topic, p.partition), outcome);
            }
        }
        Err(e) => {
            for p in &parts {
                results.insert((p.topic.to_string(), p.partition), Err(e.clone()));
            }
        }
    }
    let mut refresh = Vec::new();
    let mut freed = 0;
    {
        let mut acc = shared.acc.lock();
        let now = Instant::now();
        for part in parts {
            let outcome = results
                .remove(&(part.topic.to_string(), part.partition))
                .unwrap_or_else(|| {
                    Err(ClientError::server(
                        ErrorCode::UnknownServerError,
                        "no result for the partition",
                    ))
                });
            let queue = acc
                .topics
                .entry_ref(&*part.topic)
                .or_insert_with(|| TopicQueues::new(&part.topic))
                .queue(part.partition);
            queue.in_flight = false;
            match outcome {
                Ok((base, batch_offsets, append_time)) => {
                    queue.last_error = None;
                    // Offsets are consecutive unless some batches were retries
                    // the leader already had (then each batch has its own).
                    let listed = batch_offsets.len() == part.batches.len();
                    let mut next = base;
                    for (i, b) in part.batches.into_iter().enumerate() {
                        freed += b.accounted;
                        let offset = match (base < 0, listed) {
                            (true, _) => -1,
                            (false, true) => batch_offsets[i],
                            (false, false) => next,
                        };
                        b.outcome.resolve(Ok((offset, append_time)));
                        next += b.records;
                    }
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(topic = %part.topic, partition = part.partition, error = %e, "produce will be retried");
                    queue.last_error = Some(e);
                    refresh.push(part.topic.to_string());
                    queue.retry_at = Some(now + config.retry_backoff);
                    // Back at the front, in order, ahead of newer batches.
                    for b in part.batches.into_iter().rev() {
                        queue.ready.push_front(b);
                    }
                }
                Err(e) => {
                    for b in part.batches {
                        freed += shared.fail_batch(b, &e);
                    }
                    if let Some(txn) = &shared.txn {
                        txn.fail_if_fatal(&e);
                        acc.txn.failed_batch(e);
                    } else if shared.idempotent {
                        bump_epoch(&mut acc, &part.topic, part.partition);
                    }
                }
            }
        }
        acc.buffered = acc.buffered.saturating_sub(freed);
    }
    if !refresh.is_empty() {
        refresh.sort();
        refresh.dedup();
        let _ = shared.cluster.refresh(&refresh, false).await;
    }
    shared.progress.notify_waiters();
    shared.wake.notify_one();
}

/// After a batch of `topic`-`partition` failed for good its successors
/// cannot follow its sequence numbers: the producer moves to a new epoch
/// (every partition's next batch starts again at 0) and renumbers this
/// partition's unsent batches under it (Kafka's epoch bump, KIP-360).
fn bump_epoch(acc: &mut Accumulator, topic: &str, partition: i32) {
    let Some(old) = acc.identity else {
        return;
    };
    let Some(epoch) = old.epoch.checked_add(1) else {
        tracing::warn!(
            producer_id = old.id,
            "producer epoch exhausted; sequences not reset"
        );
        return;
    };
    let identity = Identity { id: old.id, epoch };
    acc.identity = Some(identity);
    tracing::debug!(
        producer_id = old.id,
        epoch,
        topic,
        partition,
        "producer epoch bumped after a failed batch"
    );
    let Some(queue) = acc
        .topics
        .get_mut(topic)
        .and_then(|t| t.partitions.get_mut(partition as usize))
    else {
        return;
    };
    let mut seq = 0i32;
    for b in &mut queue.ready {
        let mut bytes = bytes::BytesMut::from(&b.bytes[..]);
        if let Ok((mut batch, _)) = RecordBatchMut::new(&mut bytes) {
            batch.set_producer(identity.id, identity.epoch, seq);
        }
        b.bytes = bytes.freeze();
        seq = add_sequence(seq, b.records as i32);
    }
    queue.sequence = Some((identity, seq));
}

fn concat(batches: &[ReadyBatch]) -> Bytes {
    if let [one] = batches {
        return one.bytes.clone();
    }
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.bytes.len()).sum());
    for b in batches {
        out.extend_from_slice(&b.bytes);
    }
    Bytes::from(out)
}
