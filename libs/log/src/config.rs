//! Per-log configuration with Kafka's topic config names, defaults and bounds.

use runnel_records::batch::{Compression, TimestampType};

use crate::error::LogError;

/// What happens to old segments (`cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CleanupPolicy {
    /// `delete`: whole segments are removed by `retention.ms` / `retention.bytes`.
    pub delete: bool,
    /// `compact`: the cleaner keeps the latest record per key.
    pub compact: bool,
}

impl CleanupPolicy {
    /// `delete`, Kafka's default.
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };
    /// `compact`.
    pub const COMPACT: CleanupPolicy = CleanupPolicy {
        delete: false,
        compact: true,
    };

    fn parse(value: &str) -> Option<CleanupPolicy> {
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for part in value.split(',').map(str::trim) {
            match part {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => return None,
            }
        }
        Some(policy)
    }
}

impl std::fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            (false, true) => "delete",
            (false, false) => "",
        })
    }
}

/// Configuration of one partition log. Field docs name the Kafka config key.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment at this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when its first record is this old.
    pub segment_ms: i64,
    /// `segment.jitter.ms`: random-free jitter subtracted from `segment.ms`.
    pub segment_jitter_ms: i64,
    /// `segment.index.bytes`: roll when the offset index reaches this size.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes of log between offset index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms`: delete closed segments older than this (-1: forever).
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest closed segments beyond this size (-1: unbounded).
    pub retention_bytes: i64,
    /// `max.message.bytes`: largest record batch accepted.
    pub max_message_bytes: u64,
    /// `flush.messages`: fsync after this many records (default: never, the page cache decides).
    pub flush_messages: i64,
    /// `flush.ms`: fsync when the oldest unflushed record is this old (default: never).
    pub flush_ms: i64,
    /// `cleanup.policy`: delete, compact, or both.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long compaction keeps tombstones.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a segment this old is cleaned regardless of the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean when this fraction of the log is dirty.
    pub min_cleanable_dirty_ratio: f64,
    /// `message.timestamp.type`: CreateTime or LogAppendTime.
    pub message_timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: how far in the past a record's
    /// create time may be (CreateTime logs).
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a record's
    /// create time may be (CreateTime logs).
    pub message_timestamp_after_max_ms: i64,
    /// `compression.type`: the codec batches are stored with; `None` keeps
    /// the producer's (`producer`, Kafka's default).
    pub compression_type: Option<Compression>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_jitter_ms: 0,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1024 * 1024 + 12,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            message_timestamp_type: TimestampType::CreateTime,
            message_timestamp_before_max_ms: i64::MAX,
            // Kafka 4.0's default: a record an hour ahead of the broker's clock is refused.
            message_timestamp_after_max_ms: 3_600_000,
            compression_type: None,
        }
    }
}

impl LogConfig {
    /// The Kafka config keys this struct owns.
    pub const KEYS: [&'static str; 19] = [
        "segment.bytes",
        "segment.ms",
        "segment.jitter.ms",
        "segment.index.bytes",
        "index.interval.bytes",
        "retention.ms",
        "retention.bytes",
        "max.message.bytes",
        "flush.messages",
        "flush.ms",
        "cleanup.policy",
        "delete.retention.ms",
        "min.compaction.lag.ms",
        "max.compaction.lag.ms",
        "min.cleanable.dirty.ratio",
        "message.timestamp.type",
        "message.timestamp.before.max.ms",
        "message.timestamp.after.max.ms",
        "compression.type",
    ];

    /// Defaults overridden by `pairs` (Kafka key, value); every pair is validated.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<LogConfig, LogError> {
        let mut config = LogConfig::default();
        for (key, value) in pairs {
            config.set(key, value)?;
        }
        Ok(config)
    }

    /// Sets one config by its Kafka key, refusing unknown keys and out-of-range values.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), LogError> {
        let invalid = |reason: &str| LogError::InvalidConfig {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let long = |min: i64, max: i64| -> Result<i64, LogError> {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("not an integer"))?;
            if v < min || v > max {
                return Err(invalid(&format!("must be between {min} and {max}")));
            }
            Ok(v)
        };
        let int_max = i64::from(i32::MAX);
        match key {
            "segment.bytes" => self.segment_bytes = long(14, int_max)? as u64,
            "segment.ms" => self.segment_ms = long(1, i64::MAX)?,
            "segment.jitter.ms" => self.segment_jitter_ms = long(0, i64::MAX)?,
            "segment.index.bytes" => self.segment_index_bytes = long(8, int_max)? as u64,
            "index.interval.bytes" => self.index_interval_bytes = long(0, int_max)? as u64,
            "retention.ms" => self.retention_ms = long(-1, i64::MAX)?,
            "retention.bytes" => self.retention_bytes = long(-1, i64::MAX)?,
            "max.message.bytes" => self.max_message_bytes = long(0, int_max)? as u64,
            "flush.messages" => self.flush_messages = long(1, i64::MAX)?,
            "flush.ms" => self.flush_ms = long(0, i64::MAX)?,
            "cleanup.policy" => {
                self.cleanup_policy = CleanupPolicy::parse(value)
                    .ok_or_else(|| invalid("must be a list of delete and compact"))?
            }
            "delete.retention.ms" => self.delete_retention_ms = long(0, i64::MAX)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = long(0, i64::MAX)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = long(1, i64::MAX)?,
            "min.cleanable.dirty.ratio" => {
                let v: f64 = value.trim().parse().map_err(|_| invalid("not a number"))?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(invalid("must be between 0 and 1"));
                }
                self.min_cleanable_dirty_ratio = v;
            }
            "message.timestamp.type" => {
                self.message_timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(invalid("must be CreateTime or LogAppendTime")),
                }
            }
            "message.timestamp.before.max.ms" => {
                self.message_timestamp_before_max_ms = long(0, i64::MAX)?
            }
            "message.timestamp.after.max.ms" => {
                self.message_timestamp_after_max_ms = long(0, i64::MAX)?
            }
            "compression.type" => self.compression_type = match value.trim() {
                "producer" => None,
                "uncompressed" => Some(Compression::None),
                name => Some(
                    Compression::from_name(name)
                        .filter(|c| *c != Compression::None)
                        .ok_or_else(|| {
                            invalid(
                                "must be one of uncompressed, zstd, lz4, snappy, gzip, producer",
                            )
                        })?,
                ),
            },
            _ => {
                return Err(LogError::UnknownConfig {
                    key: key.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Every config as (Kafka key, value), in [`Self::KEYS`] order.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        Self::KEYS
            .iter()
            .map(|&k| (k, self.get(k).expect("every key in KEYS has a value")))
            .collect()
    }

    /// The value of one config by its Kafka key.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "segment.jitter.ms" => self.segment_jitter_ms.to_string(),
            "segment.index.bytes" => self.segment_index_bytes.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "flush.messages" => self.flush_messages.to_string(),
            "flush.ms" => self.flush_ms.to_string(),
            "cleanup.policy" => self.cleanup_policy.to_string(),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
            "message.timestamp.type" => self.message_timestamp_type.to_string(),
            "message.timestamp.before.max.ms" => self.message_timestamp_before_max_ms.to_string(),
            "message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms.to_string(),
            "compression.type" => match self.compression_type {
                None => "producer".to_owned(),
                Some(Compression::None) => "uncompressed".to_owned(),
                Some(codec) => codec.name().to_owned(),
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes, 1_073_741_824);
        assert_eq!(c.max_message_bytes, 1_048_588);
        assert_eq!(c.retention_ms, 604_800_000);
        assert_eq!(c.delete_retention_ms, 86_400_000);
        assert_eq!(c.index_interval_bytes, 4096);
        assert_eq!(c.cleanup_policy, CleanupPolicy::DELETE);
    }

    #[test]
    fn set_and_get_round_trip_every_key() {
        let mut c = LogConfig::default();
        for (k, v) in LogConfig::default().entries() {
            c.set(k, &v).unwrap();
        }
        assert_eq!(c, LogConfig::default());
        c.set("cleanup.policy", "compact,delete").unwrap();
        assert!(c.cleanup_policy.compact && c.cleanup_policy.delete);
        assert_eq!(c.get("cleanup.policy").unwrap(), "compact,delete");
        for codec in ["uncompressed", "gzip", "snappy", "lz4", "zstd", "producer"] {
            c.set("compression.type", codec).unwrap();
            assert_eq!(c.get("compression.type").unwrap(), codec);
        }
    }

    #[test]
    fn bad_values_are_refused_and_change_nothing() {
        let mut c = LogConfig::default();
        for (k, v) in [
            ("segment.bytes", "13"),
            ("segment.bytes", "big"),
            ("retention.ms", "-2"),
            ("cleanup.policy", "remove"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("message.timestamp.type", "Now"),
            ("max.message.bytes", "-1"),
            ("compression.type", "none"),
            ("compression.type", "brotli"),
            ("message.timestamp.after.max.ms", "-1"),
        ] {
            let err = c.set(k, v).unwrap_err();
            assert!(
                matches!(err, LogError::InvalidConfig { .. }),
                "{k}={v}: {err}"
            );
        }
        assert_eq!(c, LogConfig::default());
        assert!(matches!(
            c.set("no.such.key", "1"),
            Err(LogError::UnknownConfig { .. })
        ));
    }
}
