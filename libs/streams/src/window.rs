//! Time windows (Kafka Streams' `TimeWindows`): tumbling and hopping
//! windows with a grace period, and the windowed key an aggregation over
//! them produces.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::StreamsError;
use crate::serde::{Serde, SerdeError};
use crate::topology::{CHANGELOG_SUFFIX, Ctx};

/// Fixed-size windows aligned to the epoch: tumbling when they advance by
/// their size, hopping when by less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindows {
    /// Window length, ms.
    pub size_ms: i64,
    /// Distance between window starts, ms.
    pub advance_ms: i64,
    /// How long after its end a window still takes late records, ms.
    pub grace_ms: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size_ms` taking records up to `grace_ms` after
    /// their end (Kafka's `ofSizeAndGrace`).
    pub fn of_size_with_grace(size_ms: i64, grace_ms: i64) -> TimeWindows {
        TimeWindows {
            size_ms: size_ms.max(1),
            advance_ms: size_ms.max(1),
            grace_ms: grace_ms.max(0),
        }
    }

    /// Tumbling windows of `size_ms` that close at their end (Kafka's
    /// `ofSizeWithNoGrace`).
    pub fn of_size_no_grace(size_ms: i64) -> TimeWindows {
        TimeWindows::of_size_with_grace(size_ms, 0)
    }

    /// The same windows starting every `advance_ms` (hopping; at most the size).
    pub fn advance_by(self, advance_ms: i64) -> TimeWindows {
        TimeWindows {
            advance_ms: advance_ms.clamp(1, self.size_ms),
            ..self
        }
    }

    /// The starts of the windows holding `timestamp`, oldest first.
    pub fn starts_for(&self, timestamp: i64) -> Vec<i64> {
        if timestamp < 0 {
            return Vec::new();
        }
        let last = timestamp - timestamp % self.advance_ms;
        let mut starts = Vec::new();
        let mut start = last;
        while start >= 0 && start + self.size_ms > timestamp {
            starts.push(start);
            start -= self.advance_ms;
        }
        starts.reverse();
        starts
    }
}

/// A key within one window: what a windowed aggregation's table is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Windowed<K> {
    /// The record key.
    pub key: K,
    /// Window start, ms (inclusive).
    pub start: i64,
    /// Window end, ms (exclusive).
    pub end: i64,
}

/// A windowed key as Kafka's `TimeWindowedSerializer` writes it: the key's
/// bytes, then the window start as eight big-endian bytes; the end is the
/// start plus the window size, which the reader must know.
#[derive(Debug, Clone, Copy)]
pub struct WindowedSerde<S> {
    inner: S,
    size_ms: i64,
}

impl<S> WindowedSerde<S> {
    /// Windowed keys of windows `size_ms` long, keys through `inner`.
    pub fn new(inner: S, size_ms: i64) -> WindowedSerde<S> {
        WindowedSerde { inner, size_ms }
    }
}

impl<K, S: Serde<K>> Serde<Windowed<K>> for WindowedSerde<S> {
    fn name(&self) -> &'static str {
        "windowed"
    }
    fn serialize(&self, topic: &str, value: &Windowed<K>) -> Result<Bytes, SerdeError> {
        let key = self.inner.serialize(topic, &value.key)?;
        let mut out = BytesMut::with_capacity(key.len() + 8);
        out.put_slice(&key);
        out.put_i64(value.start);
        Ok(out.freeze())
    }
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<Windowed<K>, SerdeError> {
        let Some(split) = data.len().checked_sub(8) else {
            return Err(SerdeError {
                serde: self.name(),
                action: "deserialize",
                topic: topic.to_owned(),
                reason: format!("{} bytes, shorter than a window start", data.len()),
            });
        };
        let key = self.inner.deserialize(topic, &data[..split])?;
        let start = i64::from_be_bytes(data[split..].try_into().expect("8 bytes"));
        Ok(Windowed {
            key,
            start,
            end: start.saturating_add(self.size_ms),
        })
    }
}

/// A window-store key: the record key's bytes, a time (a window's start
/// or a record's timestamp, eight big-endian bytes) and a sequence number
/// (four), Kafka's window-store layout with duplicates kept.
pub(crate) fn window_store_key(key: &[u8], time: i64, seq: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(key.len() + 12);
    out.put_slice(key);
    out.put_i64(time);
    out.put_u32(seq);
    out.freeze()
}

/// A window-store key's (time, sequence number) if it is one of `key`,
/// not of a longer key that merely begins with `key`'s bytes (a range
/// scan from `key` finds those too).
pub(crate) fn window_store_time(store_key: &[u8], key: &[u8]) -> Option<(i64, u32)> {
    let rest = store_key.strip_prefix(key)?;
    let (time, seq) = (rest.get(..8)?, rest.get(8..)?);
    Some((
        i64::from_be_bytes(time.try_into().ok()?),
        u32::from_be_bytes(seq.try_into().ok()?),
    ))
}

/// Deletes the entries with times before `before` from the window stores
/// `stores` (logging each deletion), once per advance of `before` by
/// `every` ms of stream time: a scan of each store, whose keys are ordered
/// by key before time. `slot` keeps the `before` of the last purge.
pub(crate) fn purge_window_stores(
    ctx: &mut Ctx<'_>,
    slot: usize,
    stores: &[&str],
    before: i64,
    every: i64,
) -> Result<(), StreamsError> {
    let last = ctx
        .slots
        .get(&slot)
        .and_then(|s| s.downcast_ref::<i64>())
        .copied();
    if last.is_some_and(|last| before < last.saturating_add(every.max(1))) {
        return Ok(());
    }
    ctx.slots.insert(slot, Box::new(before));
    let now = ctx.stream_time;
    for store in stores {
        let changelog = ctx.topic(&format!("{store}{CHANGELOG_SUFFIX}"), true);
        for (store_key, _) in ctx.store(store)?.all()? {
            let time = store_key
                .len()
                .checked_sub(12)
                .and_then(|at| store_key.get(at..at + 8))
                .and_then(|b| b.try_into().ok())
                .map(i64::from_be_bytes);
            if time.is_some_and(|time| time < before) {
                ctx.log(store, &changelog, store_key, None, now)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde::StringSerde;

    #[test]
    fn a_timestamp_falls_in_every_window_that_covers_it() {
        let tumbling = TimeWindows::of_size_no_grace(60_000);
        assert_eq!(tumbling.starts_for(0), [0]);
        assert_eq!(tumbling.starts_for(59_999), [0]);
        assert_eq!(tumbling.starts_for(60_000), [60_000]);
        let hopping = TimeWindows::of_size_no_grace(10).advance_by(5);
        assert_eq!(hopping.starts_for(12), [5, 10]);
        assert_eq!(
            hopping.starts_for(3),
            [0],
            "no window starts before the epoch"
        );
        assert!(hopping.starts_for(-1).is_empty());
    }

    #[test]
    fn windowed_keys_are_the_key_then_the_start() {
        let serde = WindowedSerde::new(StringSerde, 60_000);
        let w = Windowed {
            key: "ann".to_owned(),
            start: 120_000,
            end: 180_000,
        };
        let bytes = serde.serialize("t", &w).unwrap();
        assert_eq!(&bytes[..3], b"ann");
        assert_eq!(&bytes[3..], &120_000i64.to_be_bytes());
        assert_eq!(serde.deserialize("t", &bytes).unwrap(), w);
        assert!(serde.deserialize("t", b"short").is_err());
    }
}
