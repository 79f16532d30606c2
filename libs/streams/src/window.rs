//! Time windows (Kafka Streams' `TimeWindows`): tumbling and hopping
//! windows with a grace period, and the windowed key an aggregation over
//! them produces.

use bytes::{BufMut, Bytes, BytesMut};

use crate::serde::{Serde, SerdeError};

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
