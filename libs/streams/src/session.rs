//! Session windows (Kafka Streams' `SessionWindows`): a key's records
//! closer together in time than an inactivity gap form one session, and a
//! record that bridges two sessions merges them.
//!
//! A session aggregation keeps each session in its store under the key's
//! bytes, the session's end and its start (eight big-endian bytes each,
//! Kafka's session-store layout), so the sessions a record may touch are
//! one range scan. When a record merges sessions, each old one is deleted
//! (a tombstone in the changelog and a deletion passed on) and the merged
//! one written.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::serde::{Serde, SerdeError};
use crate::topology::{
    ArcSerde, CHANGELOG_SUFFIX, KGroupedStream, KTable, Kept, ProcessFn, aggregate_step, cast,
    reduce_step, with,
};
use crate::window::Windowed;

/// Sessions of activity: a key's records less than `gap_ms` apart belong
/// to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    /// The inactivity gap that ends a session, ms.
    pub gap_ms: i64,
    /// How long after a session's end it still takes late records, ms.
    pub grace_ms: i64,
}

impl SessionWindows {
    /// Sessions ended by `gap_ms` of inactivity, taking records up to
    /// `grace_ms` late (Kafka's `ofInactivityGapAndGrace`).
    pub fn with_inactivity_gap_and_grace(gap_ms: i64, grace_ms: i64) -> SessionWindows {
        SessionWindows {
            gap_ms: gap_ms.max(1),
            grace_ms: grace_ms.max(0),
        }
    }

    /// Sessions ended by `gap_ms` of inactivity, closed at their end
    /// (Kafka's `ofInactivityGapWithNoGrace`).
    pub fn with_inactivity_gap_no_grace(gap_ms: i64) -> SessionWindows {
        SessionWindows::with_inactivity_gap_and_grace(gap_ms, 0)
    }
}

/// A session-windowed key as Kafka's `SessionWindowedSerializer` writes
/// it: the key's bytes, the session's end, then its start (eight
/// big-endian bytes each). A session's end is its last record's timestamp.
#[derive(Debug, Clone, Copy)]
pub struct SessionWindowedSerde<S>(pub S);

impl<K, S: Serde<K>> Serde<Windowed<K>> for SessionWindowedSerde<S> {
    fn name(&self) -> &'static str {
        "session-windowed"
    }
    fn serialize(&self, topic: &str, value: &Windowed<K>) -> Result<Bytes, SerdeError> {
        let key = self.0.serialize(topic, &value.key)?;
        Ok(session_key(&key, value.start, value.end))
    }
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<Windowed<K>, SerdeError> {
        let Some((key, start, end)) = split_session_key(data) else {
            return Err(SerdeError {
                serde: self.name(),
                action: "deserialize",
                topic: topic.to_owned(),
                reason: format!("{} bytes, shorter than a session's times", data.len()),
            });
        };
        Ok(Windowed {
            key: self.0.deserialize(topic, key)?,
            start,
            end,
        })
    }
}

/// The store key of `key`'s session from `start` to `end`.
fn session_key(key: &[u8], start: i64, end: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(key.len() + 16);
    out.put_slice(key);
    out.put_i64(end);
    out.put_i64(start);
    out.freeze()
}

/// A session store key's parts: (key, start, end).
fn split_session_key(data: &[u8]) -> Option<(&[u8], i64, i64)> {
    let split = data.len().checked_sub(16)?;
    let (key, times) = data.split_at(split);
    let (end, start) = times.split_at(8);
    Some((
        key,
        i64::from_be_bytes(start.try_into().ok()?),
        i64::from_be_bytes(end.try_into().ok()?),
    ))
}

impl<K, V> KGroupedStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The grouped records in sessions of activity, for a session
    /// aggregation (Kafka's `windowedBy(SessionWindows)`).
    pub fn windowed_by_session(&self, windows: SessionWindows) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream {
            grouped: self.copy(),
            windows,
        }
    }
}

/// A grouped stream cut into sessions (Kafka's `SessionWindowedKStream`).
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
}

impl<K, V> SessionWindowedKStream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// How many records each session of each key had.
    pub fn count(&self, store: &str) -> KTable<Windowed<K>, i64> {
        self.aggregate(
            store,
            || 0,
            |_, _, n| n + 1,
            |_, a, b| a + b,
            crate::serde::I64Serde,
        )
    }

    /// Each session's values combined with `combine` (also how two
    /// sessions' results combine when a record merges them).
    pub fn reduce(
        &self,
        store: &str,
        combine: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, V>
    where
        V: Clone,
    {
        let serde = ArcSerde(Arc::clone(&self.grouped.value_serde));
        let combine = Arc::new(combine);
        let merge = Arc::clone(&combine);
        self.fold_with(
            store,
            Arc::new(serde),
            reduce_step(move |a: &V, b: &V| combine(a, b)),
            move |_, a, b| merge(&a, &b),
        )
    }

    /// Each session's values folded into an aggregate that starts as
    /// `init()`; `merge` combines two sessions' aggregates when a record
    /// bridges them (Kafka's `aggregate(initializer, aggregator,
    /// sessionMerger)`). Aggregates are written with `serde`.
    pub fn aggregate<A>(
        &self,
        store: &str,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&K, &V, A) -> A + Send + Sync + 'static,
        merge: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
        serde: impl Serde<A>,
    ) -> KTable<Windowed<K>, A>
    where
        A: Send + Sync + 'static,
    {
        self.fold_with(store, Arc::new(serde), aggregate_step(init, add), merge)
    }

    /// The session aggregation node. For a record of key `k` at `t`: the
    /// key's sessions that end at or after `t - gap` and start at or
    /// before `t + gap` merge with it into one session; if that session
    /// ends before stream time minus the grace period, the record is
    /// late and dropped (counted). Otherwise the merged sessions' values
    /// are merged, the record added, each old session deleted and the new
    /// one written and passed on.
    fn fold_with<A, S>(
        &self,
        store: &str,
        serde: Arc<S>,
        step: impl Fn(&K, &V, Option<A>) -> A + Send + Sync + 'static,
        merge: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, A>
    where
        A: Send + Sync + 'static,
        S: Serde<A> + 'static,
    {
        let g = &self.grouped;
        let parents = g.aggregation_parents(store);
        let key_serde = Arc::clone(&g.key_serde);
        let windows = self.windows;
        let serde: Arc<dyn Serde<A>> = serde;
        let kept = Kept {
            store: store.to_owned(),
            key_serde: Arc::new(SessionWindowedSerde(ArcSerde(Arc::clone(&key_serde))))
                as Arc<dyn Serde<Windowed<K>>>,
            value_serde: Arc::clone(&serde),
        };
        let name = store.to_owned();
        let changelog = format!("{store}{CHANGELOG_SUFFIX}");
        let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
            let (k, v) = (cast::<K>(&rec.key)?, cast::<V>(&rec.value)?);
            let changelog = ctx.topic(&changelog, true);
            let Some(key) = key_serde.serialize_nullable(&changelog, k)? else {
                return Ok(());
            };
            let t = rec.timestamp;
            let from = session_key(&key, 0, t.saturating_sub(windows.gap_ms).max(0));
            let mut to = key.to_vec();
            to.extend_from_slice(&[0xff; 17]);
            let mut start = t;
            let mut end = t;
            let mut merged = Vec::new();
            for (store_key, bytes) in ctx.store(&name)?.range(&from, &to)? {
                // Keys that merely begin with this key's bytes fall in the
                // range too: only exact ones are this key's sessions.
                let Some((other, s, e)) = split_session_key(&store_key) else {
                    continue;
                };
                if other != key.as_ref() || s > t.saturating_add(windows.gap_ms) {
                    continue;
                }
                start = start.min(s);
                end = end.max(e);
                merged.push((store_key, s, e, bytes));
            }
            let close = ctx.stream_time.saturating_sub(windows.grace_ms);
            if end < close {
                *ctx.dropped_late += 1;
                return Ok(());
            }
            let mut agg: Option<A> = None;
            for (store_key, s, e, bytes) in merged {
                let value = serde.deserialize(&changelog, &bytes)?;
                agg = Some(match agg {
                    Some(agg) => merge(k, agg, value),
                    None => value,
                });
                if (s, e) != (start, end) {
                    ctx.log(&name, &changelog, store_key, None, t)?;
                    let old = Windowed {
                        key: k.clone(),
                        start: s,
                        end: e,
                    };
                    out.push((0, with(rec, Arc::new(old), Arc::new(None::<A>))));
                }
            }
            let new = step(k, v, agg);
            let bytes = serde.serialize(&changelog, &new)?;
            ctx.log(
                &name,
                &changelog,
                session_key(&key, start, end),
                Some(bytes),
                t,
            )?;
            let session = Windowed {
                key: k.clone(),
                start,
                end,
            };
            out.push((0, with(rec, Arc::new(session), Arc::new(Some(new)))));
            Ok(())
        });
        g.aggregation(kept, parents, Some(windows.grace_ms), None, process)
    }
}
