//! Kafka's incremental fetch sessions (KIP-227).
//!
//! A consumer fetching many partitions sends the whole list once (epoch 0)
//! and gets a session id; later fetches (epoch 1, 2, ...) name only the
//! partitions whose fetch offset changed, plus those to forget, and the
//! answer carries only partitions with something new: records, an error, a
//! moved high watermark or log start. Sessions live in the broker, not the
//! connection; a client that reconnects keeps its session.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use runnel_kafka::kafka_protocol::messages::FetchRequest;
use runnel_proto::broker::v1 as pb;

/// A partition: topic name and index.
pub type Key = (String, i32);

/// Kafka's `max.incremental.fetch.session.cache.slots`.
pub const MAX_SESSIONS: usize = 1000;

/// Kafka's FETCH_SESSION_ID_NOT_FOUND.
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
/// Kafka's INVALID_FETCH_SESSION_EPOCH.
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

/// How a partition is to be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The next offset the client wants.
    pub fetch_offset: i64,
    /// `max.partition.fetch.bytes`.
    pub max_bytes: i32,
    /// The leader epoch the client knows, or -1.
    pub current_leader_epoch: i32,
}

/// What one fetch reads.
#[derive(Debug)]
pub struct FetchPlan {
    /// The session to answer with (0: none).
    pub session_id: i32,
    /// Every partition to read, in order.
    pub partitions: Vec<(Key, Wanted)>,
    /// Only changed partitions go into the answer.
    pub incremental: bool,
}

/// What the client was last told about a partition.
#[derive(Debug, Clone, Copy)]
struct Sent {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start: i64,
}

/// Not sent yet: differs from any real value.
const NEVER: Sent = Sent {
    high_watermark: i64::MIN,
    last_stable_offset: i64::MIN,
    log_start: i64::MIN,
};

#[derive(Debug)]
struct Session {
    next_epoch: i32,
    partitions: Vec<(Key, Wanted, Sent)>,
    last_used: Instant,
}

/// The broker's fetch sessions.
#[derive(Debug)]
pub struct FetchSessions {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    sessions: HashMap<i32, Session>,
    next_id: u32,
}

impl FetchSessions {
    /// At most `max` sessions; the least recently used goes when full.
    pub fn new(max: usize) -> FetchSessions {
        // A random start, so a client's session id from before a restart
        // is unlikely to name someone else's session now.
        let start = (uuid::Uuid::new_v4().as_u128() as u32) & 0x7fff_ffff;
        FetchSessions {
            max,
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                next_id: start,
            }),
        }
    }

    /// Works out what a fetch reads; `Err` is the top-level error code.
    pub fn plan(&self, r: &FetchRequest, version: i16) -> Result<FetchPlan, i16> {
        let asked: Vec<(Key, Wanted)> = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        (t.topic.to_string(), p.partition),
                        Wanted {
                            fetch_offset: p.fetch_offset,
                            max_bytes: p.partition_max_bytes,
                            current_leader_epoch: p.current_leader_epoch,
                        },
                    )
                })
            })
            .collect();
        let sessionless = |partitions| FetchPlan {
            session_id: 0,
            partitions,
            incremental: false,
        };
        if version < 7 {
            return Ok(sessionless(asked));
        }
        let mut inner = self.inner.lock();
        match (r.session_id, r.session_epoch) {
            (id, -1) => {
                // The final epoch: close the session, fetch without one.
                inner.sessions.remove(&id);
                Ok(sessionless(asked))
            }
            (id, 0) => {
                inner.sessions.remove(&id);
                if self.max == 0 {
                    return Ok(sessionless(asked));
                }
                if inner.sessions.len() >= self.max
                    && let Some(oldest) = inner
                        .sessions
                        .iter()
                        .min_by_key(|(_, s)| s.last_used)
                        .map(|(&id, _)| id)
                {
                    inner.sessions.remove(&oldest);
                }
                let id = inner.new_id();
                inner.sessions.insert(
                    id,
                    Session {
                        next_epoch: 1,
                        partitions: asked
                            .iter()
                            .map(|(k, w)| (k.clone(), w.clone(), NEVER))
                            .collect(),
                        last_used: Instant::now(),
                    },
                );
                Ok(FetchPlan {
                    session_id: id,
                    partitions: asked,
                    incremental: false,
                })
            }
            (id, epoch) => {
                let Some(s) = inner.sessions.get_mut(&id) else {
                    return Err(FETCH_SESSION_ID_NOT_FOUND);
                };
                if s.next_epoch != epoch {
                    return Err(INVALID_FETCH_SESSION_EPOCH);
                }
                s.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
                s.last_used = Instant::now();
                for t in &r.forgotten_topics_data {
                    s.partitions.retain(|((topic, p), _, _)| {
                        !(topic == t.topic.as_str() && t.partitions.contains(p))
                    });
                }
                for (key, wanted) in asked {
                    match s.partitions.iter_mut().find(|(k, _, _)| *k == key) {
                        Some(entry) => entry.1 = wanted,
                        None => s.partitions.push((key, wanted, NEVER)),
                    }
                }
                Ok(FetchPlan {
                    session_id: id,
                    partitions: s
                        .partitions
                        .iter()
                        .map(|(k, w, _)| (k.clone(), w.clone()))
                        .collect(),
                    incremental: true,
                })
            }
        }
    }

    /// Drops session `id` (a full fetch answered without it: Kafka keeps
    /// none for a throttled one).
    pub fn close(&self, id: i32) {
        self.inner.lock().sessions.remove(&id);
    }

    /// After reading: which of `results` (in plan order) go into the answer,
    /// remembering what the client is told.
    pub fn record(
        &self,
        session_id: i32,
        incremental: bool,
        results: &[pb::FetchPartitionResult],
    ) -> Vec<bool> {
        let mut inner = self.inner.lock();
        let Some(s) = (session_id != 0)
            .then(|| inner.sessions.get_mut(&session_id))
            .flatten()
        else {
            return vec![true; results.len()];
        };
        results
            .iter()
            .map(|r| {
                let Some(entry) = s
                    .partitions
                    .iter_mut()
                    .find(|((topic, p), _, _)| *topic == r.topic && *p == r.partition)
                else {
                    // Forgotten while this fetch ran.
                    return !incremental;
                };
                let changed = r.error_code != 0
                    || !r.records.is_empty()
                    || entry.2.high_watermark != r.high_watermark
                    || entry.2.last_stable_offset != r.last_stable_offset
                    || entry.2.log_start != r.log_start_offset;
                entry.2 = Sent {
                    high_watermark: r.high_watermark,
                    last_stable_offset: r.last_stable_offset,
                    log_start: r.log_start_offset,
                };
                changed || !incremental
            })
            .collect()
    }
}

impl Inner {
    fn new_id(&mut self) -> i32 {
        loop {
            self.next_id = (self.next_id % 0x7fff_ffff) + 1;
            let id = self.next_id as i32;
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use runnel_kafka::kafka_protocol::messages::TopicName;
    use runnel_kafka::kafka_protocol::messages::fetch_request::{
        FetchPartition, FetchTopic, ForgottenTopic,
    };
    use runnel_kafka::kafka_protocol::protocol::StrBytes;

    use super::*;

    fn request(id: i32, epoch: i32, partitions: &[(i32, i64)], forget: &[i32]) -> FetchRequest {
        let topic = TopicName(StrBytes::from_static_str("t"));
        FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(epoch)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic.clone())
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|&(p, o)| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(o)
                            })
                            .collect(),
                    ),
            ])
            .with_forgotten_topics_data(if forget.is_empty() {
                vec![]
            } else {
                vec![
                    ForgottenTopic::default()
                        .with_topic(topic)
                        .with_partitions(forget.to_vec()),
                ]
            })
    }

    fn result(p: i32, hw: i64, records: &'static [u8]) -> pb::FetchPartitionResult {
        pb::FetchPartitionResult {
            topic: "t".into(),
            partition: p,
            high_watermark: hw,
            records: bytes::Bytes::from_static(records),
            ..Default::default()
        }
    }

    #[test]
    fn incremental_fetches_carry_only_changes() {
        let sessions = FetchSessions::new(10);
        let full = sessions
            .plan(&request(0, 0, &[(0, 5), (1, 7)], &[]), 12)
            .unwrap();
        assert!(full.session_id > 0 && !full.incremental);
        let id = full.session_id;
        assert_eq!(
            sessions.record(id, false, &[result(0, 5, b""), result(1, 7, b"")]),
            [true, true]
        );
        // Epoch 1 names only partition 0 at a new offset; both are read.
        let next = sessions.plan(&request(id, 1, &[(0, 6)], &[]), 12).unwrap();
        assert!(next.incremental);
        assert_eq!(next.partitions.len(), 2);
        assert_eq!(next.partitions[0].1.fetch_offset, 6);
        // Only partition 1 got data; partition 0 is unchanged and left out.
        assert_eq!(
            sessions.record(id, true, &[result(0, 5, b""), result(1, 8, b"x")]),
            [false, true]
        );
        // Replaying an epoch is refused; so is an unknown session.
        assert_eq!(
            sessions.plan(&request(id, 1, &[], &[]), 12).unwrap_err(),
            INVALID_FETCH_SESSION_EPOCH
        );
        assert_eq!(
            sessions
                .plan(&request(id + 1, 1, &[], &[]), 12)
                .unwrap_err(),
            FETCH_SESSION_ID_NOT_FOUND
        );
        // Forgetting partition 1 leaves partition 0.
        let after = sessions.plan(&request(id, 2, &[], &[1]), 12).unwrap();
        assert_eq!(after.partitions.len(), 1);
        // The final epoch closes the session.
        let last = sessions.plan(&request(id, -1, &[(0, 6)], &[]), 12).unwrap();
        assert_eq!(last.session_id, 0);
        assert_eq!(
            sessions.plan(&request(id, 3, &[], &[]), 12).unwrap_err(),
            FETCH_SESSION_ID_NOT_FOUND
        );
    }

    #[test]
    fn a_full_cache_drops_the_least_recently_used() {
        let sessions = FetchSessions::new(1);
        let a = sessions
            .plan(&request(0, 0, &[(0, 0)], &[]), 12)
            .unwrap()
            .session_id;
        let b = sessions
            .plan(&request(0, 0, &[(0, 0)], &[]), 12)
            .unwrap()
            .session_id;
        assert_ne!(a, b);
        assert_eq!(
            sessions.plan(&request(a, 1, &[], &[]), 12).unwrap_err(),
            FETCH_SESSION_ID_NOT_FOUND
        );
        assert!(sessions.plan(&request(b, 1, &[], &[]), 12).is_ok());
    }
}
